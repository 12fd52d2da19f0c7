"""MemNet: the authors' weight sharing, parameter counts, BatchNorm, outputs, and the Restorer on every task."""

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from restorekit import registry
from restorekit.archs.memnet import MemNet, MemNetOutput, select_output
from restorekit.registry import get_arch, get_record, list_models
from restorekit.restorer import Restorer


def _conv_params(net: nn.Module) -> int:
    return sum(p.numel() for m in net.modules() if isinstance(m, nn.Conv2d) for p in m.parameters())


def _conv_calls(net: nn.Module, x: torch.Tensor) -> Counter:
    calls: Counter = Counter()
    names = {m: n for n, m in net.named_modules()}
    hooks = [
        m.register_forward_hook(lambda mod, i, o: calls.update([names[mod]]))
        for m in net.modules()
        if isinstance(m, nn.Conv2d)
    ]
    net(x)
    for h in hooks:
        h.remove()
    return calls


@pytest.mark.parametrize(
    "config, conv_only, total, conv_layers",
    [({}, 678_209, 695_497, 80), ({"blocks": 10, "recursions": 10}, 1_375_297, 1_422_029, 212)],
    ids=["M6R6", "M10R10"],
)
def test_parameter_counts_and_depth_match_the_paper(config, conv_only, total, conv_layers):
    with torch.device("meta"):
        net = MemNet(**config)
        calls = _conv_calls(net, torch.zeros(1, 1, 8, 8))
    assert _conv_params(net) == conv_only  # C1 in architectures.md §2
    assert sum(p.numel() for p in net.parameters()) == total  # C1 + BN/Scale γ/β + one weight per block
    # "80C64" / "212C64": the convolution layers the data goes through, the shared reconstruction counted once
    # (the deploy prototxt has M copies of it, conv_end_01 …, one per block output).
    assert sum(calls.values()) - calls["recon_conv"] + 1 == conv_layers
    # BatchNorm statistics are buffers, not parameters.
    assert all(not n.endswith(("running_mean", "running_var")) for n, _ in net.named_parameters())


def test_recursions_share_convolutions_and_keep_their_own_batchnorm(m2r3, tiny_model):
    torch.manual_seed(0)
    net = tiny_model("memnet", **m2r3)
    m, r = m2r3["blocks"], m2r3["recursions"]
    convs = {id(mod.weight) for mod in net.modules() if isinstance(mod, nn.Conv2d)}
    assert len(convs) == 1 + 3 * m + 1  # conv_in, (conv_a, conv_b, gate) per block, one reconstruction
    calls = _conv_calls(net, torch.rand(2, 1, 8, 8))
    for b in range(m):
        assert calls[f"memory.{b}.conv_a"] == r and calls[f"memory.{b}.conv_b"] == r
        assert calls[f"memory.{b}.gate_conv"] == 1
    assert calls["recon_conv"] == m and calls["conv_in"] == 1
    bns = [bn for block in net.memory for bn in (*block.bn_a, *block.bn_b)]
    assert len(bns) == 2 * m * r and len({id(bn) for bn in bns}) == len(bns)
    # In training each recursion's BatchNorm tracks the statistics of its own input.
    means = [bn.running_mean.clone() for bn in net.memory[0].bn_a]
    assert all(not torch.equal(means[i], means[j]) for i in range(r) for j in range(i + 1, r))


def _bnr(x: torch.Tensor, bn: nn.BatchNorm2d) -> torch.Tensor:
    y = (x - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + 1e-5)
    return F.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None])


def _reference(net: MemNet, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The equations of architectures.md §2, written out plainly (eval-mode BatchNorm)."""

    def conv(t, c):
        return F.conv2d(t, c.weight, c.bias, padding=c.kernel_size[0] // 2)

    b = [conv(_bnr(x, net.bn_in), net.conv_in)]
    outs = []
    for mb, block in enumerate(net.memory):
        h, hs = b[-1], []
        for r in range(net.recursions):
            h = h + conv(_bnr(conv(_bnr(h, block.bn_a[r]), block.conv_a), block.bn_b[r]), block.conv_b)
            hs.append(h)
        b.append(conv(_bnr(torch.cat(b + hs, 1), block.gate_bn), block.gate_conv))
        outs.append(conv(_bnr(b[-1], net.recon_bn[mb]), net.recon_conv) + x)
    return sum(w * o for w, o in zip(net.output_weights, outs)), outs


def test_forward_follows_the_equations_and_the_gate_order(m2r3, tiny_model):
    torch.manual_seed(0)
    net = tiny_model("memnet", **m2r3)
    for mod in net.modules():  # non-trivial eval statistics and affine terms
        if isinstance(mod, nn.BatchNorm2d):
            mod.running_mean.uniform_(-0.2, 0.2)
            mod.running_var.uniform_(0.5, 2)
            mod.weight.data.uniform_(0.5, 1.5)
            mod.bias.data.uniform_(-0.1, 0.1)
    net.output_weights.data = torch.tensor([0.3, 0.8])
    net.eval()
    x = torch.rand(2, 1, 9, 7)
    with torch.no_grad():
        out = net(x)
        ref, ref_outs = _reference(net, x)
    assert isinstance(out, MemNetOutput) and len(out.block_outputs) == m2r3["blocks"]
    assert torch.allclose(out.output, ref, atol=1e-5)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(out.block_outputs, ref_outs))
    assert select_output(out) is out.output
    # The gate of block 2 sees [B0, B1, H1..HR]: the first 4 channels are the feature extractor's output.
    # Inference builds the gate as a sum over the concatenated pieces: the same as BN -> ReLU -> 1x1 conv on the concat.
    block = net.memory[1]
    pieces = [torch.randn(2, 4, 5, 6) for _ in range(2 + m2r3["recursions"])]
    with torch.no_grad():
        plain = block.gate_conv(F.relu(block.gate_bn(torch.cat(pieces, 1))))
        assert torch.allclose(block.gate(pieces), plain, atol=1e-5)
    # Training concatenates: the gate of block 2 sees [B0, B1, H1..HR], the feature extractor's output first.
    seen = {}
    # (hooks must return None, or they replace the module's output)
    block.gate_bn.register_forward_hook(lambda mod, i, o: seen.update(gate=i[0]))
    net.conv_in.register_forward_hook(lambda mod, i, o: seen.update(b0=o))
    with torch.no_grad():
        net.train()(x)
    assert seen["gate"].shape[1] == (2 + m2r3["recursions"]) * m2r3["channels"]
    assert torch.equal(seen["gate"][:, :4], seen["b0"])


def test_eval_batchnorm_uses_running_statistics(m2r3, tiny_model):
    torch.manual_seed(0)
    net = tiny_model("memnet", **m2r3)
    x = torch.rand(3, 1, 8, 8)
    net.train()
    with torch.no_grad():
        net(x)  # updates the running statistics
        train_out = net(x).output
    stats = net.memory[0].bn_a[1].running_mean.clone()
    net.eval()
    with torch.no_grad():
        whole = net(x).output
        single = net(x[1:2]).output
    assert torch.allclose(whole[1:2], single, atol=1e-6)  # eval: each image independent of the batch
    assert not torch.allclose(whole, train_out, atol=1e-4)  # train: batch statistics
    assert torch.equal(stats, net.memory[0].bn_a[1].running_mean)  # eval leaves the statistics alone


def _load_bench():
    path = Path(__file__).parent / "benchmarks" / "bench_memnet.py"
    spec = importlib.util.spec_from_file_location("bench_memnet", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unshared_baseline_is_the_same_function_with_2_89m_convolution_parameters(m2r3, tiny_model):
    bench = _load_bench()
    with torch.device("meta"):
        unshared = bench.UnsharedMemNet()
    assert _conv_params(unshared) == 2_893_889  # "C1 if unshared" 2.89M (architectures.md §2)
    torch.manual_seed(0)
    ours = tiny_model("memnet", **m2r3).eval()
    base = bench.UnsharedMemNet(**m2r3).eval()
    bench.copy_shared_into_unshared(ours, base)
    x = torch.rand(1, 1, 10, 10)
    with torch.no_grad():
        assert torch.allclose(ours(x).output, base(x), atol=1e-5)


# ------------------------------------------------------------------------------------------------ Restorer


def _identity(net: MemNet) -> MemNet:
    """Reconstruction zeroed, first block weighted 1, the rest 0: the network returns its input exactly."""
    with torch.no_grad():
        net.recon_conv.weight.zero_()
        net.recon_conv.bias.zero_()
        net.output_weights.zero_()
        net.output_weights[0] = 1
    return net


def _smooth(h: int, w: int, colour: bool) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    chans = [0.5 + 0.35 * np.sin(3 * xx + 2 * yy + k) for k in range(3 if colour else 1)]
    img = np.stack(chans, -1) if colour else chans[0]
    return (img * 255 + 0.5).astype(np.uint8)


MEMNET = list_models(arch="memnet")


def test_registered_tasks():
    assert MEMNET == [
        "memnet.denoise_blind",
        "memnet.denoise_s30",
        "memnet.denoise_s50",
        "memnet.denoise_s70",
        "memnet.jpeg_q10",
        "memnet.jpeg_q20",
        "memnet.sr_m10r10_x2",
        "memnet.sr_m10r10_x3",
        "memnet.sr_m10r10_x4",
        "memnet.sr_x2",
        "memnet.sr_x3",
        "memnet.sr_x4",
    ]
    # The architecture's name alone gives a model that runs: the authors' denoiser.
    assert get_record("memnet").name == "memnet.denoise_s50" and get_record("memnet").published
    for name in MEMNET:
        rec = get_record(name)
        assert rec.in_channels == rec.out_channels == 1 and rec.size_multiple == 1
        assert rec.pre_upsample == (rec.task == "sr") and rec.net_scale == 1
        assert rec.grey_on_color == ("rgb" if rec.task == "denoise" else "y")
        # Only restorekit's own blind denoiser has no weights yet; every other record has the authors' files.
        assert rec.published == (name != "memnet.denoise_blind")
        assert (rec.upstream is None) == (name == "memnet.denoise_blind") and rec.hub is None
        assert rec.source == ("none (random init only)" if name == "memnet.denoise_blind" else "authors' (pinned URL)")
    # The paper's SR table is M6R6's: the M10R10 records carry no figure of another network.
    assert all(not get_record(f"memnet.sr_m10r10_x{s}").metrics for s in (2, 3, 4))
    assert [m.value for m in get_record("memnet.sr_x4").metrics[:2]] == [31.74, 0.8893]
    sr = [get_record(f"memnet.sr_x{s}") for s in (2, 3, 4)]
    assert len({r.upstream for r in sr}) == 1 and all(r.config == sr[0].config for r in sr)
    spec = get_arch("memnet")
    assert spec.receptive_field_for(get_record("memnet.sr_x2").config) == 74
    assert spec.receptive_field_for(get_record("memnet.sr_m10r10_x2").config) == 202


@pytest.mark.parametrize("name", MEMNET)
def test_restorer_on_grey_and_colour(name, m2r3, tiny_record):
    rec = get_record(name)
    tiny = tiny_record(name, "_tinytest", **m2r3)
    with registry.temporary(None, tiny):
        r = Restorer(tiny.name, pretrained=False, device="cpu")
        _identity(r.model)
        sizes = []
        r.model.register_forward_pre_hook(lambda mod, args: sizes.append(tuple(args[0].shape)))
        s = rec.scale
        grey, colour = _smooth(11, 14, False), _smooth(11, 14, True)
        out_g, out_c = r.run(grey), r.run(colour)
        assert out_g.shape == (11 * s, 14 * s) and out_g.dtype == np.uint8
        assert out_c.shape == (11 * s, 14 * s, 3) and out_c.dtype == np.uint8
        # The network sees one channel, already at the output size, with mirrored surroundings on every side (16 px,
        # or the tiny network's smaller receptive field): once for grey; for colour, on the Y once, or (a denoiser)
        # on each of R, G and B.
        c = r.context
        assert c == min(16, get_arch("memnet").receptive_field_for(tiny.config))
        assert sizes == [(1, 1, 11 * s + 2 * c, 14 * s + 2 * c)] * (1 + (3 if rec.grey_on_color == "rgb" else 1))
        if s == 1:
            assert np.array_equal(out_g, grey)  # grey in, the identity network, grey out: exact
            assert np.abs(out_c.astype(int) - colour).max() <= 1  # Y restored, CbCr carried: RGB round trip
        else:
            # Pre-upsampled by the Restorer (its bicubic); compare loosely with PIL's bicubic upsampling.
            from PIL import Image

            ref = np.asarray(Image.fromarray(colour).resize((14 * s, 11 * s), Image.BICUBIC))
            assert np.abs(out_c.astype(int) - ref).mean() < 3
        # A random (non-identity) tiny network changes the image; the size contract holds the same.
        torch.manual_seed(0)
        r2 = Restorer(tiny.name, pretrained=False, device="cpu")
        out = r2.run(torch.rand(3, 5, 6))
        assert out.shape == (3, 5 * s, 6 * s) and float(out.min()) >= 0 and float(out.max()) <= 1


# ---------------------------------------------------------------------------------------------------- loss


def test_multi_supervised_loss_has_one_euclidean_term_per_output(m2r3, tiny_model):
    from restorekit.losses import MultiSupervisedLoss, euclidean_loss

    torch.manual_seed(0)
    net = tiny_model("memnet", **m2r3)
    x, y = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    out = net(x)
    loss = MultiSupervisedLoss()
    terms = loss.terms(out, y)
    assert len(terms) == m2r3["blocks"] + 1
    by_hand = sum(((o - y) ** 2).sum() / 4 for o in (*out.block_outputs, out.output))  # Caffe: / (2 x batch)
    assert torch.allclose(loss(out, y), by_hand)
    assert torch.allclose(euclidean_loss(out.output, y), ((out.output - y) ** 2).sum() / 4)
    # The block terms do not depend on the output weights; the final term does.
    MultiSupervisedLoss(final_weight=0)(net(x), y).backward()
    assert float(net.output_weights.grad.abs().sum()) == 0 and net.recon_bn[0].weight.grad.abs().sum() > 0
    net.zero_grad()
    MultiSupervisedLoss(block_weight=0, criterion="mse")(net(x), y).backward()
    assert net.output_weights.grad.abs().min() > 0
    with pytest.raises(TypeError, match="block_outputs"):
        loss(out.output, y)
    with pytest.raises(ValueError, match="unknown criterion"):
        MultiSupervisedLoss("ssim")


def test_a_few_training_steps_reduce_the_multi_supervised_loss(m2r3, tiny_model):
    from restorekit.losses import MultiSupervisedLoss

    torch.manual_seed(0)
    net = tiny_model("memnet", **m2r3).train()
    clean = torch.rand(4, 1, 12, 12)
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    loss_fn = MultiSupervisedLoss()
    # Output weights start at 1 each (Caffe's Scale default), so the sum begins near M x the input.
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = loss_fn(net(noisy), clean)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.5 * losses[0]


# ------------------------------------------------------------------------------------------------ PyTorch ports


def test_an_unshared_ports_checkpoint_is_named_as_such(tmp_path, m2r3, tiny_model):
    # One convolution pair per recursion (the benchmark's unshared baseline has that layout): not mappable.
    from restorekit.errors import ConversionError
    from restorekit.weights import convert

    base = _load_bench().UnsharedMemNet(**m2r3)
    src = tmp_path / "unshared.pth"
    torch.save(base.state_dict(), src)
    with pytest.raises(ConversionError) as info:
        convert(src, tmp_path / "out.safetensors", arch="memnet", config=m2r3)
    message = str(info.value)
    assert "from a PyTorch port of MemNet that restorekit does not support" in message, message
    assert "12 3x3 4->4 convolutions, one pair per recursion" in message and "shares one pair across the 3" in message
    assert "missing keys" not in message and not (tmp_path / "out.safetensors").exists()


def test_a_vandermode_style_checkpoint_is_named_as_such(tmp_path, m2r3, tiny_model):
    # The module names of Vandermode/pytorch-MemNet (architectures.md §2), wrapped as DataParallel saves them.
    from restorekit.errors import ConversionError
    from restorekit.weights import load_model

    keys = ["feature_extractor.bn.weight", "feature_extractor.conv.weight"]
    keys += [f"dense_memory.0.recursive_unit.{r}.relu_conv{i}.conv.weight" for r in range(6) for i in (1, 2)]
    keys += ["dense_memory.0.gate_unit.conv.weight", "reconstructor.conv.weight"]
    src = tmp_path / "port.pth"
    torch.save({"state_dict": {f"module.{k}": torch.zeros(2, 2, 3, 3) for k in keys}}, src)
    with pytest.raises(ConversionError) as info:
        load_model("memnet.denoise_s50", weights=src, device="cpu")
    message = str(info.value)
    assert "from a PyTorch port of MemNet that restorekit does not support" in message, message
    assert "its keys are a port's, e.g. feature_extractor.bn.weight" in message
    # Our own keys are still ours: a tiny network's state dict goes through unchanged.
    ours = tiny_model("memnet", **m2r3).state_dict()
    filtered = get_arch("memnet").filter_checkpoint(dict(ours), {**get_arch("memnet").default_config, **m2r3})
    assert filtered.keys() == ours.keys()
