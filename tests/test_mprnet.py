"""MPRNet: the authors' key layout, the shared PReLU, the patch hierarchy, checkpoints, any input size."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

from restorekit import registry
from restorekit.archs.mprnet import CAB, MPRNet, SharedAct
from restorekit.errors import ConversionError, InputError
from restorekit.registry import get_arch, get_record
from restorekit.weights import convert, load_model, read_checkpoint, read_weights, save_weights


@pytest.fixture
def tiny(tiny_model):
    """``tiny(seed=0)``: a randomly initialised tiny MPRNet in eval mode."""

    def make(seed: int = 0) -> MPRNet:
        torch.manual_seed(seed)
        net = tiny_model("mprnet")
        with torch.no_grad():
            net.act.weight.fill_(0.1 + seed / 100)  # not the default 0.25, so a lost PReLU would show
        return net.eval()

    return make


def authors_state_dict(net: MPRNet, suffix: str = "weight") -> dict[str, torch.Tensor]:
    """Our state dict in the authors' layout: the shared PReLU repeated under every CAB's ``body.1``."""
    sd = {k: v.clone() for k, v in net.state_dict().items() if k != "act.weight"}
    for name, module in net.named_modules():
        if isinstance(module, CAB):
            sd[f"{name}.body.1.{suffix}"] = net.act.weight.detach().clone()
    return sd


def test_state_dict_keys_match_the_facts():
    with torch.device("meta"):
        net = MPRNet()
    ours = net.state_dict()
    assert len(ours) == 262 and "act.weight" in ours  # 262 unique tensors in the authors' file
    assert not any(k.endswith(".bias") for k in ours)
    assert not any(".body.1.weight" in k for k in ours), "the shared PReLU must be stored once"
    authors = authors_state_dict(net)
    assert len(authors) == 316  # 316 keys in the authors' file, 55 of them the same PReLU
    for key in (
        "shallow_feat1.1.body.1.weight",
        "stage3_orsnet.orb1.body.8.weight",
        "stage3_orsnet.up_enc2.0.up.1.weight",
        "stage1_decoder.skip_attn1.CA.conv_du.0.weight",
        "stage2_encoder.csff_dec3.weight",
        "sam23.conv3.weight",
        "concat23.weight",
        "tail.weight",
    ):
        assert key in authors
    assert sum(k.endswith(".body.1.weight") for k in authors) == 55
    assert {k.split(".")[0] for k in authors} == {
        *(f"shallow_feat{i}" for i in (1, 2, 3)),
        *(f"stage{i}_{p}" for i in (1, 2) for p in ("encoder", "decoder")),
        "stage3_orsnet",
        "sam12",
        "sam23",
        "concat12",
        "concat23",
        "tail",
    }
    assert tuple(ours["sam12.conv1.weight"].shape) == (96, 96, 1, 1)  # SAM with kernel_size 1
    assert tuple(ours["concat23.weight"].shape) == (128, 192, 3, 3)


def test_one_prelu_shared_by_every_cab(tiny):
    net = tiny()
    shared = [m for m in net.modules() if isinstance(m, SharedAct)]
    assert len(shared) == sum(isinstance(m, CAB) for m in net.modules()) == 34  # 55 at num_cab=8
    assert all(m.act is net.act for m in shared)
    assert sum(isinstance(m, torch.nn.PReLU) for m in net.modules()) == 1
    assert [n for n, _ in net.named_parameters() if "act" in n.split(".")] == ["act.weight"]
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        before = net(x)[0]
        net.act.weight.fill_(0.9)
        after = net(x)[0]
    assert not torch.allclose(before, after), "the PReLU held at the top must be the one the CABs call"
    # The copy the Restorer makes for half precision keeps the sharing (deepcopy's memo).
    import copy

    clone = copy.deepcopy(net)
    assert all(m.act is clone.act for m in clone.modules() if isinstance(m, SharedAct))


def _reference_forward(net: MPRNet, x: torch.Tensor) -> list[torch.Tensor]:
    """The authors' forward, patch by patch as written in the paper's code (no batching of patches)."""
    h, w = x.shape[-2:]
    top, bot = x[:, :, : h // 2], x[:, :, h // 2 :]
    patches = [top[..., : w // 2], top[..., w // 2 :], bot[..., : w // 2], bot[..., w // 2 :]]
    feats = [net.stage1_encoder(net.shallow_feat1(p)) for p in patches]
    f_top = [torch.cat(kv, 3) for kv in zip(feats[0], feats[1])]
    f_bot = [torch.cat(kv, 3) for kv in zip(feats[2], feats[3])]
    r_top, r_bot = net.stage1_decoder(f_top), net.stage1_decoder(f_bot)
    s_top, img_top = net.sam12(r_top[0], top)
    s_bot, img_bot = net.sam12(r_bot[0], bot)
    stage1 = torch.cat([img_top, img_bot], 2)
    e_top = net.stage2_encoder(net.concat12(torch.cat([net.shallow_feat2(top), s_top], 1)), f_top, r_top)
    e_bot = net.stage2_encoder(net.concat12(torch.cat([net.shallow_feat2(bot), s_bot], 1)), f_bot, r_bot)
    feat2 = [torch.cat(kv, 2) for kv in zip(e_top, e_bot)]
    res2 = net.stage2_decoder(feat2)
    s3, stage2 = net.sam23(res2[0], x)
    x3 = net.stage3_orsnet(net.concat23(torch.cat([net.shallow_feat3(x), s3], 1)), feat2, res2)
    return [net.tail(x3) + x, stage2, stage1]


def test_patch_hierarchy_matches_the_authors_forward(tiny):
    net = tiny(seed=3)
    x = torch.rand(2, 3, 24, 40)
    with torch.inference_mode():
        ours, ref = net(x), _reference_forward(net, x)
    assert len(ours) == 3
    for a, b in zip(ours, ref):
        assert a.shape == x.shape
        assert torch.allclose(a, b, atol=1e-5), float((a - b).abs().max())
    # The three outputs differ (final, stage 2, stage 1), and the split is visible: perturbing the
    # top-left quarter changes stage 1's output only in the top half.
    assert not torch.allclose(ours[0], ours[2])
    y = x.clone()
    y[:, :, :4, :4] += 0.5
    with torch.inference_mode():
        changed = (net(y)[2] - ours[2]).abs().sum(dim=(0, 1))
    assert changed[:12].sum() > 0 and changed[12:].sum() == 0


def test_sizes_must_divide_by_8_for_the_bare_network(tiny):
    with pytest.raises(InputError, match="divisible by 8"):
        tiny()(torch.rand(1, 3, 20, 16))


def test_authors_torch_checkpoint_with_aliases_loads(tmp_path, tiny, tiny_config):
    net = tiny(seed=1)
    path = tmp_path / "model_deblurring.pth"
    sd = {"module." + k: v for k, v in authors_state_dict(net).items()}  # saved under DataParallel
    torch.save({"epoch": 3000, "state_dict": sd, "optimizer": {"state": {}, "param_groups": [{"lr": 1e-6}]}}, path)
    spec = get_arch("mprnet")
    ours = read_checkpoint(path, spec, tiny_config("mprnet"))
    assert set(ours) == set(net.state_dict())
    assert torch.equal(ours["act.weight"], net.act.weight.detach())
    out = tmp_path / "mprnet.safetensors"
    convert(path, out, arch="mprnet", config=tiny_config("mprnet"))
    again = load_model(out)
    x = torch.rand(1, 3, 16, 24)
    with torch.inference_mode():
        assert torch.equal(again(x)[0], net(x)[0])


def test_disagreeing_prelu_aliases_are_refused(tmp_path, tiny, tiny_config):
    net = tiny()
    sd = authors_state_dict(net)
    sd["stage3_orsnet.orb2.body.0.body.1.weight"] = torch.tensor([0.7])
    path = tmp_path / "edited.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(ConversionError, match="shared PReLU disagree") as info:
        read_checkpoint(path, get_arch("mprnet"), tiny_config("mprnet"))
    assert "stage3_orsnet.orb2.body.0.body.1.weight" in str(info.value)


def test_our_own_layout_passes_through(tmp_path, tiny, tiny_config):
    net = tiny(seed=2)
    path = tmp_path / "ours.safetensors"
    save_weights(path, net.state_dict(), arch="mprnet", config=tiny_config("mprnet"))
    sd, _ = read_weights(path)
    assert set(get_arch("mprnet").filter_checkpoint(dict(sd), tiny_config("mprnet"))) == set(sd)


@pytest.mark.parametrize(("h", "w"), [(37, 53), (9, 1024), (1, 1)])
def test_restorer_keeps_odd_and_wide_sizes(h, w, tiny_config):
    import dataclasses

    from restorekit.restorer import Restorer

    base = get_record("mprnet.deblur")
    rec = dataclasses.replace(base, tag="tiny_sizes", default=False, config=tiny_config("mprnet"))
    with registry.temporary(None, rec):
        r = Restorer(rec.name, pretrained=False, device="cpu", tile=None)
        img = np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = r.run(img)
    assert out.shape == (h, w, 3) and out.dtype == np.uint8


def test_records():
    for tag, params, n in (("deblur", 20_127_073, 96), ("denoise", 15_741_025, 80), ("derain", 3_637_249, 40)):
        rec = get_record(f"mprnet.{tag}")
        assert rec.task == tag and rec.params == params and rec.config["n_feat"] == n
        assert rec.size_multiple == 8 and "non-commercial" in rec.license
        assert rec.hub is None and rec.source == "authors' (unpinned, opt in)"
        # The authors' scripts measure deblurring and denoising on RGB, deraining on Y (evaluate_PSNR_SSIM.m).
        want = "y_full" if tag == "derain" else "full_image"
        assert rec.metrics and {m.convention for m in rec.metrics} == {want}
    assert get_record("mprnet").name == "mprnet.deblur"
    spec = get_arch("mprnet")
    assert spec.receptive_field is None and spec.select_output is not None
    assert spec.select_output(["final", "s2", "s1"]) == "final"


def test_checkpoint_buffer_round_trip_is_bytes_stable(tmp_path, tiny, tiny_config):
    # Same network -> same bytes, whichever layout the weights came from.
    net = tiny(seed=4)
    buf = io.BytesIO()
    torch.save(authors_state_dict(net), buf)
    (tmp_path / "a.pth").write_bytes(buf.getvalue())
    sd = read_checkpoint(tmp_path / "a.pth", get_arch("mprnet"), tiny_config("mprnet"))
    one = save_weights(tmp_path / "1.safetensors", sd, arch="mprnet", config=tiny_config("mprnet"))
    two = save_weights(tmp_path / "2.safetensors", net.state_dict(), arch="mprnet", config=tiny_config("mprnet"))
    assert one == two


def test_tiled_run_keeps_size_and_stays_close_to_whole(tiny_config):
    import dataclasses

    from restorekit.restorer import Restorer

    rec = dataclasses.replace(
        get_record("mprnet.derain"), tag="tiny_tiles", default=False, config=tiny_config("mprnet")
    )
    x = torch.rand(3, 157, 251, generator=torch.Generator().manual_seed(0))
    with registry.temporary(None, rec):
        torch.manual_seed(0)
        tiled = Restorer(rec.name, pretrained=False, device="cpu", tile=168)
        out = tiled.run(x)
        assert tiled.last_tile is not None and tiled.last_tile % 8 == 0
        whole = Restorer(rec.name, pretrained=False, device="cpu", tile=None)
        whole.model.load_state_dict(tiled.model.state_dict())
        ref = whole.run(x)
    assert out.shape == ref.shape == x.shape
    # Global receptive field (channel attention): blended tiles are close to, not equal to, the whole image.
    assert float((out - ref).abs().mean()) < 0.05
