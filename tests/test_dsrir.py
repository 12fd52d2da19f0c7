"""DSRIR: the authors' keys and counts, patch attention, outputs, model_best.pth, any input size."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from restorekit import registry
from restorekit.archs.dsrir import DSRIR, PatchAttention
from restorekit.errors import InputError
from restorekit.registry import get_arch, get_record
from restorekit.weights import convert, load_model, read_checkpoint


@pytest.fixture
def tiny(tiny_model):
    """``tiny(seed=0)``: a randomly initialised tiny DSRIR in eval mode."""

    def make(seed: int = 0) -> DSRIR:
        torch.manual_seed(seed)
        return tiny_model("dsrir").eval()

    return make


def test_keys_and_parameter_counts_match_the_facts():
    with torch.device("meta"):
        net = DSRIR()
    sd = net.state_dict()
    assert len(sd) == 316
    assert sum(p.numel() for p in net.parameters()) == 3_516_837
    sub = {name: sum(p.numel() for p in getattr(net, name).parameters()) for name in ("SN1", "SN2", "SN3")}
    assert sub == {"SN1": 1_157_324, "SN2": 815_246, "SN3": 1_344_640}  # 1.157M / 0.815M / 1.345M
    assert {k.split(".")[0] for k in sd} == {
        "ebd",
        *(f"SN{i}" for i in (1, 2, 3)),
        *(f"PRU{i}" for i in (1, 2, 3)),
        *(f"usau_{i}" for i in (1, 2, 3)),
        "channel_comp1",
        "channel_comp2",
    }
    assert tuple(sd["ebd.weight"].shape) == (144, 3, 3, 3) and "ebd.bias" not in sd
    assert tuple(sd["channel_comp1.weight"].shape) == (48, 80, 1, 1)
    assert tuple(sd["channel_comp2.weight"].shape) == (64, 112, 1, 1)
    assert tuple(sd["SN1.encoder3.1.PA.conv_du.0.weight"].shape) == (12, 96, 1, 1)  # 96 ch, reduction 8
    assert "SN1.encoder3.1.PA.conv_du.0.bias" in sd and "SN1.encoder3.1.conv1.bias" not in sd
    assert tuple(sd["SN2.encoder2.3.conv2.weight"].shape) == (64, 64, 3, 3)  # 4 PABs at level 2
    assert tuple(sd["SN3.PAG4.body.4.weight"].shape) == (64, 64, 3, 3)
    assert tuple(sd["PRU3.fr.0.weight"].shape) == (8, 64, 3, 3) and "PRU3.fr.2.bias" in sd
    assert tuple(sd["usau_2.var_map.0.weight"].shape) == (3, 48, 3, 3) and "usau_2.var_map.0.bias" in sd
    assert [pa.grid for pa in net.SN3.PAG1.modules() if isinstance(pa, PatchAttention)] == [8, 4, 2, 1]


def test_patch_attention_weights_each_block_of_its_grid():
    torch.manual_seed(0)
    pa = PatchAttention(4, 2, grid=4).eval()
    x = torch.rand(2, 4, 16, 24)
    with torch.no_grad():
        y = pa(x)
        # Naive: block (i, j) of the 4x4 grid is 4x6 pixels, scaled by the gate of its own mean.
        ref = torch.empty_like(x)
        for i in range(4):
            for j in range(4):
                block = x[:, :, 4 * i : 4 * i + 4, 6 * j : 6 * j + 6]
                gate = pa.conv_du(block.mean(dim=(2, 3), keepdim=True))
                ref[:, :, 4 * i : 4 * i + 4, 6 * j : 6 * j + 6] = block * gate
    assert torch.allclose(y, ref, atol=1e-6)
    with pytest.raises(InputError, match="divisible by its 4x4 grid"):
        pa(torch.rand(1, 4, 16, 18))


def test_outputs_are_images_and_uncertainty_maps_per_stage(tiny):
    net = tiny()
    x = torch.rand(2, 3, 16, 24)
    with torch.inference_mode():
        imgs, variances = net(x)
    assert len(imgs) == len(variances) == 3
    assert all(t.shape == x.shape for t in imgs + variances)
    assert not torch.allclose(imgs[0], imgs[2])
    assert get_arch("dsrir").select_output((imgs, variances)) is imgs[0]
    # The uncertainty maps come through LeakyReLU(0.1): negative values are scaled, not cut.
    assert all(torch.isfinite(v).all() for v in variances)


def test_model_best_checkpoint_loads(tmp_path, tiny, tiny_config):
    # The authors' training script saves {'epoch', 'state_dict', 'optimizer'}, with module. on >1 GPU.
    net = tiny(seed=5)
    opt = torch.optim.AdamW(net.parameters(), lr=2e-4, weight_decay=1e-4)
    net.train()
    imgs, _ = net(torch.rand(1, 3, 16, 16))
    imgs[0].mean().backward()
    opt.step()  # the optimizer entry then holds real state tensors, as in a real model_best.pth
    net.eval()
    path = tmp_path / "model_best.pth"
    sd = {"module." + k: v for k, v in net.state_dict().items()}
    torch.save({"epoch": 347, "state_dict": sd, "optimizer": opt.state_dict()}, path)
    ours = read_checkpoint(path, get_arch("dsrir"), tiny_config("dsrir"))
    assert set(ours) == set(net.state_dict())
    out = convert(path, tmp_path / "dsrir.safetensors", arch="dsrir", config=tiny_config("dsrir"))
    again = load_model(out)
    x = torch.rand(1, 3, 16, 24)
    with torch.inference_mode():
        assert torch.equal(again(x)[0][0], net(x)[0][0])


@pytest.mark.parametrize(("h", "w"), [(37, 53), (5, 1024)])
def test_restorer_keeps_odd_and_wide_sizes(h, w, tiny_config):
    from restorekit.restorer import Restorer

    rec = dataclasses.replace(
        get_record("dsrir.all_in_one"), tag="tiny_sizes", default=False, config=tiny_config("dsrir")
    )
    with registry.temporary(None, rec):
        r = Restorer(rec.name, pretrained=False, device="cpu", tile=None)
        out = r.run(np.random.default_rng(1).random((h, w, 3), dtype=np.float32))
    assert out.shape == (h, w, 3)


def test_every_record_runs_the_bundled_all_in_one_file(tmp_path, monkeypatch):
    names = registry.list_models(arch="dsrir")
    assert names == ["dsrir.all_in_one", "dsrir.dehaze", "dsrir.denoise", "dsrir.derain"]
    assert get_record("dsrir").name == "dsrir.all_in_one"
    records = [get_record(n) for n in names]
    assert {r.bundled for r in records} == {records[0].bundled} and records[0].bundled is not None
    for rec in records:
        assert rec.params == 3_516_837 and rec.size_multiple == 8 and rec.published and rec.source == "bundled"
        assert "issue" not in (rec.origin + rec.notes + rec.description).lower()
        # Our measurements and the paper's figures are told apart, and each record keeps its own task's rows.
        measured = [m for m in rec.metrics if m.source == "measured"]
        reported = [m for m in rec.metrics if m.source == "reported"]
        assert measured and reported and all("(paper, all-in-one)" in m.dataset for m in reported)
        # Rain is measured on Y (the paper's Rain100L too), everything else on the channels as given.
        assert all(m.convention == ("y_full" if "rain" in m.dataset.lower() else "full_image") for m in rec.metrics)
        assert rec.hub is None  # nothing was pushed to the hub
    assert all("sigma" in m.dataset for m in get_record("dsrir.denoise").metrics)
    assert all("rain" in m.dataset.lower() for m in get_record("dsrir.derain").metrics)
    assert all("haze" in m.dataset or "SOTS" in m.dataset for m in get_record("dsrir.dehaze").metrics)
    assert {m.dataset.split()[0] for m in get_record("dsrir.all_in_one").metrics} >= {"CBSD68", "BSD68", "Rain100L"}
    # Offline, with an empty cache: the task records load the very same weights from the package.
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    a, b = load_model("dsrir"), load_model("dsrir.derain")
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not list((tmp_path / "cache").rglob("*.safetensors"))


def test_tiled_run_respects_the_grids(tiny_config):
    from restorekit.restorer import Restorer

    rec = dataclasses.replace(
        get_record("dsrir.all_in_one"), tag="tiny_tiles", default=False, config=tiny_config("dsrir")
    )
    x = torch.rand(3, 157, 203, generator=torch.Generator().manual_seed(0))
    with registry.temporary(None, rec):
        r = Restorer(rec.name, pretrained=False, device="cpu", tile=168)
        out = r.run(x)
    assert r.last_tile is not None and r.last_tile % 8 == 0
    assert out.shape == x.shape and bool(torch.isfinite(out).all())
