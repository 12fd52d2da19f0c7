import os
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import registry, tiling
from restorekit.errors import InputError, RestorekitError
from restorekit.image import read_image
from restorekit.registry import ArchSpec, WeightRecord
from restorekit.resize import imresize
from restorekit.restorer import Restorer, pick_device

from . import nets


@pytest.fixture(scope="module", autouse=True)
def test_models(tiny_config):
    tiny_x2 = WeightRecord(
        arch="msrn",
        tag="tiny_x2",
        task="sr",
        description="tiny MSRN for tests",
        scale=2,
        config={**registry.get_arch("msrn").default_config, **tiny_config("msrn", scale=2)},
    )
    with registry.temporary(None, tiny_x2), nets.registered():
        yield


@pytest.fixture(scope="module")
def sr():
    torch.manual_seed(0)
    return Restorer("msrn.tiny_x2", pretrained=False, device="cpu")


def _rgb(h=20, w=28, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_defaults_on_this_machine(sr):
    assert pick_device("auto").type in ("cuda", "mps", "cpu")
    assert sr.device.type == "cpu" and sr.dtype == torch.float32
    assert "msrn.tiny_x2" in repr(sr)


def test_numpy_kinds_round_trip(sr):
    a8 = _rgb()
    out8 = sr.run(a8)
    assert out8.dtype == np.uint8 and out8.shape == (40, 56, 3)
    out16 = sr.run(a8.astype(np.uint16) * 257)
    assert out16.dtype == np.uint16 and out16.shape == (40, 56, 3)
    # 16-bit keeps its precision: the 8-bit result is the 16-bit one quantised
    assert np.abs(out16 / 65535.0 - out8 / 255.0).max() < 1.5 / 255
    outf = sr.run(a8.astype(np.float32) / 255)
    assert outf.dtype == np.float32 and outf.min() >= 0 and outf.max() <= 1
    grey = sr.run(a8[..., 0])
    assert grey.shape == (40, 56), "a 2-D grey array comes back 2-D"


def test_tensor_inputs(sr):
    x = torch.rand(2, 3, 12, 10)
    batch = sr.run(x)
    assert batch.shape == (2, 3, 24, 20) and batch.dtype == torch.float32
    single = sr.run(x[1])
    assert single.shape == (3, 24, 20)
    assert torch.allclose(batch[1], single, atol=1e-6)
    with pytest.raises(InputError, match="float"):
        sr.run(torch.zeros(3, 4, 4, dtype=torch.uint8))
    with pytest.raises(InputError, match="CHW or NCHW"):
        sr.run(torch.zeros(5, 4, 4))


def test_pil_with_alpha_is_resized_and_kept(sr):
    rgba = np.dstack([_rgb(), np.full((20, 28), 128, np.uint8)])
    rgba[:10, :, 3] = 255
    out = sr.run(Image.fromarray(rgba, "RGBA"))
    assert isinstance(out, Image.Image) and out.mode == "RGBA" and out.size == (56, 40)
    alpha = np.asarray(out)[..., 3]
    assert alpha[:16].min() >= 250 and abs(int(alpha[30:].mean()) - 128) <= 1


def test_colour_model_on_grey_image_gives_grey(sr, tmp_path):
    Image.fromarray(_rgb()[..., 0]).save(tmp_path / "g.png")
    out = sr.run(tmp_path / "g.png", output=tmp_path / "o.png")
    assert Image.open(out).mode == "L" and Image.open(out).size == (56, 40)


def test_grey_model_runs_on_luma_and_carries_chroma():
    r = Restorer("greynet.denoise", pretrained=False, device="cpu")
    with torch.no_grad():
        for p in r.model.parameters():
            p.zero_()  # the net becomes the identity: any colour change would come from the Y/CbCr path
    img = _rgb(15, 17).astype(np.float32) / 255
    out = r.run(img)
    assert out.shape == img.shape and np.abs(out - img).max() < 1e-5
    r2 = Restorer("greynet.sr_x2", pretrained=False, device="cpu")
    out2 = r2.run(_rgb(15, 17))
    assert out2.shape == (30, 34, 3)
    grey = r2.run(_rgb(15, 17)[..., 1])
    assert grey.shape == (30, 34)


def test_pre_upsampled_sr_runs_a_scale_one_net_on_the_bicubic_image():
    r = Restorer("greynet.sr_x3_pre", pretrained=False, device="cpu")
    assert r.record.net_scale == 1 and r.record.scale == 3
    with torch.no_grad():
        for p in r.model.parameters():
            p.zero_()  # identity net: the result is exactly the Restorer's own bicubic upsampling
    x = torch.rand(1, 11, 7)
    out = r.run(x)
    assert out.shape == (1, 33, 21)
    expected = imresize(x[None], 3).clamp(0, 1)[0]  # MATLAB-compatible bicubic, as the SR literature makes inputs
    assert float((out - expected).abs().max()) < 1e-6
    colour = r.run(_rgb(5, 9))
    assert colour.shape == (15, 27, 3)
    tiled = Restorer("greynet.sr_x3_pre", pretrained=False, device="cpu", tile=60)
    tiled.model.load_state_dict(r.model.state_dict())
    big = torch.rand(1, 30, 50)
    assert float((tiled.run(big) - r.run(big)).abs().max()) < 1e-5 and tiled.last_tile == 60


def test_sixteen_bit_file_in_sixteen_bit_out(sr, tmp_path):
    arr = np.random.default_rng(1).integers(0, 65536, (9, 11), dtype=np.uint16)
    Image.fromarray(arr).save(tmp_path / "in16.png")
    out = sr.run(tmp_path / "in16.png", output=tmp_path / "out16.png")
    back = read_image(out)
    assert back.bit_depth == 16 and back.color.shape == (1, 18, 22)


def test_exif_rotated_file_is_restored_upright(sr, tmp_path):
    arr = _rgb(10, 30)
    img = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW to display
    img.save(tmp_path / "rot.jpg", exif=exif, quality=95)
    out = sr.run(tmp_path / "rot.jpg")
    assert out.shape == (60, 20, 3), "EXIF orientation 6 makes a 30x10 landscape a 10x30 portrait"


def test_tiny_images_and_size_multiple(sr):
    assert sr.run(np.zeros((1, 1, 3), np.uint8)).shape == (2, 2, 3)
    m8 = Restorer("m8net", pretrained=False, device="cpu")
    for h, w in [(1, 1), (3, 5), (13, 21), (16, 16)]:
        out = m8.run(np.random.default_rng(0).random((h, w, 3), dtype=np.float32))
        assert out.shape == (h, w, 3)


def test_bad_inputs(sr, tmp_path):
    (tmp_path / "notes.png").write_text("this is not an image")
    with pytest.raises(InputError, match="notes.png"):
        sr.run(tmp_path / "notes.png")
    Image.fromarray(_rgb(64, 64)).save(tmp_path / "full.png")
    data = (tmp_path / "full.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="cut.png"):
        sr.run(tmp_path / "cut.png")
    nan = np.full((4, 4, 3), np.nan, np.float32)
    with pytest.raises(InputError, match="NaN"):
        sr.run(nan)
    with pytest.raises(InputError, match="Cannot restore"):
        sr.run({"not": "an image"})
    with pytest.raises(InputError, match="overwrite the input"):
        sr.run(tmp_path / "full.png", output=tmp_path / "full.png")


def test_list_input_and_output_folder(sr, tmp_path):
    Image.fromarray(_rgb()).save(tmp_path / "a.png")
    outs = sr.run([tmp_path / "a.png", _rgb(5, 6)], output=tmp_path / "out")
    assert outs[0] == tmp_path / "out" / "a.png" and outs[0].exists()
    assert (tmp_path / "out" / "0001.png").exists() and outs[1].shape == (10, 12, 3)


def test_tiled_restorer_equals_whole_image():
    torch.manual_seed(0)
    whole = Restorer("msrn.tiny_x2", pretrained=False, device="cpu", tile=None)
    tiled = Restorer("msrn.tiny_x2", pretrained=False, device="cpu", tile=180)
    tiled.model.load_state_dict(whole.model.state_dict())
    x = torch.rand(3, 300, 410)
    a, b = whole.run(x), tiled.run(x)
    assert whole.last_tile is None and tiled.last_tile == 180
    assert float((a - b).abs().max()) < 1e-5


def test_auto_tile_uses_free_memory(monkeypatch):
    r = Restorer("msrn.tiny_x2", pretrained=False, device="cpu")
    x = torch.rand(3, 400, 400)
    r.run(x)
    assert r.last_tile is None, "plenty of memory: one pass"
    monkeypatch.setattr("restorekit.restorer.free_memory", lambda device: 400 * 400 * 200)
    r.run(x)
    assert r.last_tile is not None and r.last_tile < 400


class OOMNet(torch.nn.Module):
    calls: list = []

    def forward(self, x):
        OOMNet.calls.append(x.shape[-1])
        if max(x.shape[-2:]) > 100:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return x


def test_out_of_memory_retries_with_smaller_tiles():
    spec = ArchSpec(
        name="oomnet",
        build=lambda **c: OOMNet(),
        default_config={},
        tiny_config={},
        paper="test",
        receptive_field=0,
        footprint=1.0,
    )
    rec = WeightRecord(arch="oomnet", tag="x", task="denoise", description="oom", default=True)
    with registry.temporary(spec, rec):
        r = Restorer("oomnet", pretrained=False, device="cpu", tile=None)
        x = torch.rand(3, 300, 300)
        with pytest.warns(RuntimeWarning, match="retrying with"):
            y = r.run(x)
        assert torch.allclose(y, x, atol=1e-6) and r.last_tile is not None and r.last_tile <= 100
        small = Restorer("oomnet", pretrained=False, device="cpu", tile=None)
        small.overlap, small.margin, small.min_tile = 100, 40, 201  # the smallest tile is already too big
        with pytest.raises(RestorekitError, match="out of memory"), pytest.warns(RuntimeWarning):
            small.run(x)


def test_half_precision_policy_and_fp32_fallback(sr):
    with pytest.raises(InputError, match="validated only for float32"):
        Restorer("msrn.tiny_x2", pretrained=False, device="cpu", dtype="float16")
    hot = Restorer("hotnet", pretrained=False, device="cpu", dtype="float16")
    assert hot.dtype == torch.float16
    x = torch.rand(3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        y = hot.run(x)
    assert torch.isfinite(y).all() and torch.allclose(y, x, atol=1e-6), "non-finite fp16 tile redone in fp32"
    assert Restorer("hotnet", pretrained=False, device="cpu").dtype == torch.float32, "auto: no half on CPU"


def test_tiling_free_memory_reads_the_available_ram():
    # The tile size is planned from this number, so it must be the machine's, not the 4 GiB guess for an
    # unknown platform: within 5% of the total RAM of what the kernel reports as available a moment later.
    free = tiling.free_memory(torch.device("cpu"))
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    if sys.platform.startswith("linux"):
        with open("/proc/meminfo") as fh:
            available = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("MemAvailable:"))
    else:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    assert 0 < free <= total and abs(free - available) < total / 20, (free, available, total)


@pytest.mark.parametrize("h, w", [(1, 1), (2, 3), (5, 4), (17, 9)])
def test_mirror_pad_is_numpy_reflect_for_any_amount(h, w):
    from restorekit.restorer import mirror_pad

    x = torch.rand(2, 3, h, w, generator=torch.Generator().manual_seed(h * w))
    for pads in [(0, 0, 0, 0), (1, 2, 3, 0), (16, 19, 16, 23), (40, 1, 0, 40)]:
        t, b, left, r = pads
        want = np.pad(x.numpy(), ((0, 0), (0, 0), (t, b), (left, r)), mode="reflect")
        assert np.array_equal(mirror_pad(x, *pads).numpy(), want), pads
