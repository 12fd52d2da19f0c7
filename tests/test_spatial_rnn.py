"""Spatial RNN (LRNN): parameter counts, the Caffe resize, conditioning inputs, backends, the Restorer's mask=."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from restorekit import ops
from restorekit.archs.spatial_rnn import SPEC, SpatialRNN, caffe_resize
from restorekit.errors import InputError
from restorekit.registry import get_record, list_models
from restorekit.restorer import Restorer
from restorekit.weights import build_model


def _count(**config) -> int:
    with torch.device("meta"):
        model = build_model("spatial_rnn", config)
    return sum(p.numel() for p in model.parameters())


def test_convolution_parameter_counts_match_the_prototxts():
    assert _count(variant="v1") == 147_677
    assert _count(variant="v2") == 148_023
    # A conditioned net adds 3 * 9 (conv0) + 16 * 25 (conv2) weights per extra input channel.
    assert _count(condition="mask") == 147_677 + 1 * (27 + 400)
    assert _count(condition="hints") == 147_677 + 4 * (27 + 400)


def test_layer_names_follow_the_authors_prototxt():
    names = {k.rsplit(".", 1)[0] for k in SpatialRNN().state_dict()}
    assert names == {f"conv{i}" for i in range(12)} | {"conv6s"}


def test_registry_entries():
    assert list_models(arch="spatial_rnn") == [
        "spatial_rnn.colorize",
        "spatial_rnn.denoise",
        "spatial_rnn.inpaint",
        "spatial_rnn.smooth_l0",
    ]
    assert get_record("spatial_rnn").name == "spatial_rnn.denoise"
    assert get_record("spatial_rnn", task="smooth").name == "spatial_rnn.smooth_l0"
    for name in list_models(arch="spatial_rnn"):
        rec = get_record(name)
        assert rec.published and rec.bundled.filename == f"spatial_rnn_{rec.tag}.safetensors"
        assert "restorekit-train" in rec.origin and rec.license == "MIT (restorekit)"
        assert rec.hub is None and rec.source == "bundled"  # nothing was pushed to the hub: no hub source


def test_caffe_resize_has_no_half_pixel_offset_and_drops_outside_neighbours():
    x = torch.tensor([[[[1.0, 3.0]]]])
    up = caffe_resize(x, (1, 4))  # samples at 0, 0.5, 1, 1.5: the last one's right neighbour is outside
    assert up.flatten().tolist() == [1.0, 2.0, 3.0, 1.5]
    col = caffe_resize(x.transpose(-1, -2), (4, 1))
    assert col.flatten().tolist() == [1.0, 2.0, 3.0, 1.5]
    down = caffe_resize(torch.arange(8.0).view(1, 1, 1, 8), (1, 3))  # samples at 0, 8/3, 16/3
    torch.testing.assert_close(down.flatten(), torch.tensor([0.0, 8 / 3, 16 / 3]))
    same = torch.rand(1, 2, 3, 5)
    assert caffe_resize(same, (3, 5)) is same


@pytest.mark.parametrize("size", [(1, 1), (5, 17), (16, 16), (33, 20)])
def test_any_size_and_output_range(size, tiny_model):
    torch.manual_seed(0)
    for variant in ("v1", "v2"):
        net = tiny_model("spatial_rnn", variant=variant).eval()
        with torch.no_grad():
            y = net(torch.rand(2, 3, *size))
        assert y.shape == (2, 3, *size)
        assert y.min() >= 0 and (variant == "v2" or y.max() <= 1)


@pytest.mark.slow  # builds the native scan
def test_native_and_reference_backends_agree_bitwise(monkeypatch, tiny_model):
    # The network's forward and every gradient are identical whichever backend runs the scans.
    if not ops.load_native():
        pytest.skip(f"native scan unavailable: {ops.backend_info()['reason']}")
    torch.manual_seed(0)
    net = tiny_model("spatial_rnn")
    x = torch.rand(1, 3, 19, 23)
    results = []
    for backend in ("native", "reference"):
        monkeypatch.setenv(ops.BACKEND_ENV, backend)
        net.zero_grad()
        xi = x.clone().requires_grad_()
        y = net(xi)
        (y * torch.linspace(0, 1, y.numel()).view_as(y)).sum().backward()
        results.append((y.detach(), xi.grad, [p.grad.clone() for p in net.parameters()]))
    (y1, gx1, gp1), (y2, gx2, gp2) = results
    assert torch.equal(y1, y2) and torch.equal(gx1, gx2)
    assert all(torch.equal(a, b) for a, b in zip(gp1, gp2))


def test_scans_see_the_image_not_the_padding(tiny_model, tiny_config):
    # The guidance and pooled branches run padded to a multiple of 16 and are cropped back before the
    # eight scans, which therefore run over exactly the image's rows and columns.
    torch.manual_seed(0)
    net = tiny_model("spatial_rnn").eval()
    seen = []
    real_scan = ops.scan

    def spy(x, g, horizontal=True, reverse=False):
        seen.append(tuple(x.shape))
        return real_scan(x, g, horizontal, reverse)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ops, "scan", spy)
        with torch.no_grad():
            net(torch.rand(1, 3, 21, 9))
    assert len(seen) == 8 and set(seen) == {(1, tiny_config("spatial_rnn")["channels"], 21, 9)}


def test_masked_inputs(tiny_model):
    torch.manual_seed(0)
    inpaint = tiny_model("spatial_rnn", condition="mask").eval()
    colorize = tiny_model("spatial_rnn", condition="hints").eval()
    assert inpaint.mask_channels == colorize.mask_channels == 1 and tiny_model("spatial_rnn").mask_channels == 0
    with pytest.raises(InputError, match="RGB plus a mask channel"):
        inpaint(torch.rand(1, 3, 8, 8))
    with pytest.raises(InputError, match=r"\(N, 3, H, W\)"):
        tiny_model("spatial_rnn")(torch.rand(1, 4, 8, 8))
    img = torch.rand(1, 3, 12, 10)
    mask = (torch.rand(1, 1, 12, 10) > 0.5).float()
    other = torch.where(mask.bool(), img, torch.rand_like(img))  # differs only where unknown
    with torch.no_grad():
        # inpainting ignores what lies under the holes
        assert torch.equal(inpaint(torch.cat([img, mask], 1)), inpaint(torch.cat([other, mask], 1)))
        assert not torch.equal(inpaint(torch.cat([img, mask], 1)), inpaint(torch.cat([img, 1 - mask], 1)))
        # colourisation uses only the luma where the colour is unknown
        luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
        grey = (img * luma).sum(1, keepdim=True).expand(-1, 3, -1, -1)
        grey_outside = torch.where(mask.bool(), img, grey)
        torch.testing.assert_close(colorize(torch.cat([img, mask], 1)), colorize(torch.cat([grey_outside, mask], 1)))


def test_restorer_mask_argument(tiny_record):
    from restorekit import registry

    inpaint, denoise = tiny_record("spatial_rnn.inpaint"), tiny_record("spatial_rnn.denoise")
    with registry.temporary(None, inpaint, denoise):
        torch.manual_seed(0)
        r = Restorer(inpaint.name, pretrained=False, device="cpu")
        img = np.random.default_rng(0).integers(0, 256, (9, 14, 3), dtype=np.uint8)
        mask = np.random.default_rng(1).random((9, 14)) > 0.3
        out = r.run(img, mask=mask)
        assert out.shape == img.shape and out.dtype == np.uint8
        holes = img.copy()
        holes[~mask] = 0
        assert np.array_equal(r.run(holes, mask=mask), out)  # pixels under the holes do not matter
        tensor_out = r.run(torch.from_numpy(img).permute(2, 0, 1) / 255.0, mask=torch.from_numpy(mask))
        assert tensor_out.shape == (3, 9, 14)
        assert len(r.run([img, holes], mask=mask)) == 2
        with pytest.raises(InputError, match="needs mask="):
            r.run(img)
        with pytest.raises(InputError, match="one size"):
            r.run(img, mask=mask[:, :-1])
        with pytest.raises(InputError, match="2 inputs but 3 masks"):
            r.run([img, img], mask=[mask, mask, mask])
        # tiled: the mask is cut into the same tiles as the image
        tiled = Restorer(inpaint.name, pretrained=False, device="cpu", tile=170)
        tiled.model.load_state_dict(r.model.state_dict())
        big = np.random.default_rng(2).integers(0, 256, (180, 250, 3), dtype=np.uint8)
        big_mask = np.random.default_rng(3).random((180, 250)) > 0.5
        big_holes = np.where(big_mask[..., None], big, 255).astype(np.uint8)
        out_tiled = tiled.run(big, mask=big_mask)
        assert tiled.last_tile == 170 and out_tiled.shape == big.shape
        assert np.array_equal(tiled.run(big_holes, mask=big_mask), out_tiled)
        plain = Restorer(denoise.name, pretrained=False, device="cpu")
        with pytest.raises(InputError, match="takes no mask"):
            plain.run(img, mask=mask)
        assert plain.run(img).shape == img.shape


def test_masked_outputs_keep_what_the_input_knows(tiny_record):
    from restorekit import registry
    from restorekit.image import rgb_to_ycbcr

    inpaint, colorize = tiny_record("spatial_rnn.inpaint"), tiny_record("spatial_rnn.colorize")
    gen = torch.Generator().manual_seed(0)
    img = torch.rand(1, 3, 20, 27, generator=gen) * 0.8 + 0.1  # away from 0/1, so no clamping
    mask = (torch.rand(1, 1, 20, 27, generator=gen) > 0.5).float()
    with registry.temporary(None, inpaint, colorize):
        torch.manual_seed(0)
        filled = Restorer(inpaint.name, pretrained=False, device="cpu").run(img, mask=mask)
        known = mask.bool().expand_as(img)
        assert torch.equal(filled[known], img[known])  # known pixels come back unchanged
        assert not torch.allclose(filled[~known], img[~known])  # the holes are the network's
        coloured = Restorer(colorize.name, pretrained=False, device="cpu").run(img, mask=mask)
        assert torch.allclose(coloured * mask, img * mask, atol=1e-6)  # the hints are kept
        # The luma is the input's everywhere (the input's colour off the hints does not matter).
        y_in, y_out = rgb_to_ycbcr(img)[:, :1], rgb_to_ycbcr(coloured)[:, :1]
        assert (y_in - y_out).abs().max() < 1e-5


def test_a_coldog2333_port_checkpoint_is_named_as_such(tmp_path, tiny_model, tiny_config):
    # Coldog2333/Spatial-RNN's module names (DCNN.conv1..9, LRNN_in_conv, LRNN_out_conv); another network.
    from restorekit.errors import ConversionError
    from restorekit.weights import convert, load_model

    shapes = {"DCNN.conv1": (16, 15, 5, 5), "DCNN.conv9": (64, 48, 3, 3), "LRNN_in_conv": (16, 15, 3, 3)}
    shapes["LRNN_out_conv"] = (3, 16, 3, 3)
    sd = {f"{k}.weight": torch.zeros(s) for k, s in shapes.items()} | {
        f"{k}.bias": torch.zeros(s[0]) for k, s in shapes.items()
    }
    src = tmp_path / "spatial_rnn.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, src)  # as nn.DataParallel saves it
    for attempt in (
        lambda: load_model("spatial_rnn.denoise", weights=src, device="cpu"),
        lambda: convert(src, tmp_path / "out.safetensors", model="spatial_rnn.denoise"),
    ):
        with pytest.raises(ConversionError) as info:
            attempt()
        message = str(info.value)
        assert "from Coldog2333/Spatial-RNN (keys such as DCNN.conv1.weight), a PyTorch port" in message, message
        assert "restorekit does not support" in message and "missing keys" not in message
    # Our own keys pass unchanged.
    ours = tiny_model("spatial_rnn").state_dict()
    config = {**SPEC.default_config, **tiny_config("spatial_rnn")}
    assert SPEC.filter_checkpoint(dict(ours), config).keys() == ours.keys()
