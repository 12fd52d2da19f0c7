"""restorekit.analyze: JPEG quality from files and decoded pixels, noise sigma, haze, input kinds, the CLI."""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from restorekit import degrade
from restorekit.analysis import KINDS, Analysis, analyze, ijg_table, quality_from_tables
from restorekit.errors import InputError
from tests.shared_data import require


def _photo(h: int = 96, w: int = 128) -> np.ndarray:
    """A smooth seeded colour image with edges (uint8, HWC): textured enough to code, never compressed."""
    yy, xx = np.mgrid[0:h, 0:w] / 16.0
    base = np.stack([np.sin(xx) * 60 + 120, np.cos(yy) * 50 + 110, (xx + yy) * 6 + 40], axis=-1)
    base[h // 3 : h // 2, w // 4 : w // 2] += 50
    return np.clip(base, 0, 255).astype(np.uint8)


def _jpeg_bytes(img: Image.Image, **kw) -> Image.Image:
    buf = io.BytesIO()
    img.save(buf, "JPEG", **kw)
    buf.seek(0)
    return Image.open(buf)


def _cbsd(n: int) -> list[torch.Tensor]:
    folder = require("denoise", "CBSD68")
    out = []
    for p in sorted(folder.glob("*.png"))[:n]:
        arr = np.asarray(Image.open(p).convert("RGB")).astype(np.float64) / 255.0
        out.append(torch.from_numpy(arr).permute(2, 0, 1)[None])
    return out


def test_exact_quality_every_q_colour_grey_subsampling_progressive():
    rgb = Image.fromarray(_photo(32, 32))
    grey = rgb.convert("L")
    for q in range(1, 101):
        for img, kw in ((rgb, {"subsampling": 2}), (grey, {})):
            f = analyze(_jpeg_bytes(img, quality=q, **kw)).get("jpeg")
            assert f.present and f.value == q and f.confidence == 1.0, (q, kw, f)
    for sub, name in ((0, "4:4:4"), (1, "4:2:2"), (2, "4:2:0")):
        f = analyze(_jpeg_bytes(rgb, quality=33, subsampling=sub, progressive=True)).get("jpeg")
        assert f.value == 33 and f.detail["subsampling"] == name and f.detail["progressive"]
    assert analyze(_jpeg_bytes(grey, quality=60)).get("jpeg").detail["subsampling"] == "grey"


def test_file_path_and_custom_tables(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(_photo()).save(path, quality=42)
    a = analyze(path)
    assert a.jpeg_quality == 42 and a.source == str(path)
    custom = [list(np.clip(ijg_table(50) + 3, 1, 255)), list(np.clip(ijg_table(50, chroma=True) + 3, 1, 255))]
    f = analyze(_jpeg_bytes(Image.fromarray(_photo()), qtables=custom)).get("jpeg")
    assert f.present and 40 <= f.value <= 50 and f.confidence < 1.0 and "nearest" in f.method
    assert "not libjpeg" in f.detail["note"]
    assert quality_from_tables([ijg_table(77), ijg_table(77, chroma=True)])[:2] == (77, True)


def test_decoded_arrays_blocking_estimate_and_never_compressed():
    x = _cbsd(1)[0]
    assert analyze(x[0].float()).get("jpeg").present is False
    for q in (10, 30, 50, 75):
        f = analyze(degrade.jpeg(x, q)[0].float()).get("jpeg")
        assert f.present and abs(f.value - q) <= max(3, 0.15 * q), (q, f)


def test_sigma_accuracy_on_cbsd68():
    # Tolerance: |sigma_hat - sigma| <= max(2.5, 0.1 sigma) on 8-bit (clipped, rounded) noisy images; at low
    # sigma a photograph's own fine texture adds up to ~2 (measured: 16.9 for sigma 15 on 101085).
    for i, x in enumerate(_cbsd(3)):
        for sigma in (15, 25, 50, 70):
            noisy = degrade.gaussian_noise(x, sigma, seed=i, quantize=True)[0].float()
            a = analyze(noisy)
            assert a.get("noise").present and abs(a.noise_sigma - sigma) <= max(2.5, 0.1 * sigma), (i, sigma, a)
            assert len(a.get("noise").detail["per_channel"]) == 3


def test_clean_cbsd68_and_classic5_measure_clean():
    for x in _cbsd(6):
        a = analyze(x[0].float())
        assert a.clean and a.get("noise").present is not True and a.get("jpeg").present is not True, a
    folder = require("jpeg", "Classic5")
    for p in sorted(folder.glob("*.*"))[:5]:
        if p.suffix.lower() in (".png", ".bmp"):
            assert analyze(p).clean, p


def test_jpeg_and_noise_together():
    x = _cbsd(1)[0]
    noisy = degrade.gaussian_noise(x, 25, seed=0, quantize=True)
    a = analyze(degrade.jpeg(noisy, 50)[0].float())
    assert a.get("jpeg").present and a.get("noise").present


def _jpeg_file(tmp_path, x: torch.Tensor, sigma: float, quality: int, seed: int, name: str):
    """``x`` with seeded noise of ``sigma`` (8-bit, as a saved photo), written by Pillow at ``quality``."""
    noisy = degrade.gaussian_noise(x, sigma, seed=seed, quantize=True) if sigma else x
    pixels = (noisy[0].clamp(0, 1) * 255 + 0.5).floor().to(torch.uint8).permute(1, 2, 0).numpy()
    path = tmp_path / f"{name}_s{sigma}_q{quality}.jpg"
    Image.fromarray(pixels).save(path, quality=quality, subsampling="4:2:0")
    return path


def test_noise_under_jpeg_compression_read_from_the_coefficients(tmp_path):
    # Quantisation hides the noise from the pixel estimate (sigma 25 at quality 30 reads about 1 there); the
    # file's DCT coefficients still show it. Tolerances from the 68-image run in docs/auto.md: a sigma found
    # this way lies within 9 of the truth at quality 30-40, and clean files stay below the floor.
    images = _cbsd(8)
    found = {}
    for sigma, quality in ((25, 30), (15, 40)):
        for i, x in enumerate(images):
            f = analyze(_jpeg_file(tmp_path, x, sigma, quality, i, f"im{i}")).get("noise")
            if f.present:
                assert abs(f.value - sigma) <= 9, (sigma, quality, i, f)
                assert "visible_sigma" not in f.detail or f.detail["visible_sigma"] < 6
            found[sigma, quality] = found.get((sigma, quality), 0) + bool(f.present)
    assert found[25, 30] >= 5 and found[15, 40] >= 4, found  # 6/8, 5/8 here; 59/68 and 53/68 over all CBSD68
    clean = [analyze(_jpeg_file(tmp_path, x, 0, 30, 0, f"c{i}")).get("noise") for i, x in enumerate(images)]
    assert sum(bool(f.present) for f in clean) <= 1, [f.detail for f in clean]  # 4/68 over all of CBSD68
    for f in clean:
        assert "under_jpeg" in f.detail and f.detail["under_jpeg"]["noisy_from"] == pytest.approx(15.7)


def test_noise_under_jpeg_synthetic_grey_rotated_and_pil(tmp_path):
    # Needs no benchmark data: a smooth card with sigma 20 noise saved at quality 40, as a file, the same file
    # with an EXIF rotation (the block grid then starts at the far edge and the table is transposed), a PIL
    # image decoded from it, and a grey JPEG (no colour factor).
    x = torch.from_numpy(_photo(200, 264).astype(np.float64) / 255).permute(2, 0, 1)[None]
    path = _jpeg_file(tmp_path, x, 20, 40, 0, "card")
    f = analyze(path).get("noise")
    assert f.present and abs(f.value - 20) <= 5 and f.detail["visible_sigma"] < 6, f
    with Image.open(path) as im:
        assert analyze(im).get("noise").value == f.value
        exif = Image.Exif()
        exif[0x0112] = 6  # rotate 90 degrees on display
        rotated = tmp_path / "rotated.jpg"
        im.save(rotated, quality=40, exif=exif, subsampling="4:2:0")
    g = analyze(rotated).get("noise")
    assert g.present and abs(g.value - 20) <= 5, g
    grey = tmp_path / "grey.jpg"
    noisy = degrade.gaussian_noise(x[:, :1], 20, seed=1, quantize=True)
    Image.fromarray((noisy[0, 0] * 255 + 0.5).floor().to(torch.uint8).numpy()).save(grey, quality=40)
    h = analyze(grey).get("noise")
    assert h.present and abs(h.value - 20) <= 5, h
    assert not analyze(_jpeg_file(tmp_path, x, 0, 40, 0, "clean")).get("noise").present


def test_haze_detection():
    x = _cbsd(4)
    hazy = [analyze(degrade.haze(t, seed=0, beta=2.5, airlight=0.95)[0].float()).get("haze") for t in x]
    assert all(h.present for h in hazy), hazy
    assert all(analyze(t[0].float()).get("haze").present is not True for t in x)


def test_every_input_kind_and_bad_inputs(tmp_path):
    arr = _photo(48, 64)
    kinds = [
        arr,
        arr[..., 0],
        arr.astype(np.uint16) * 257,
        arr.astype(np.float32) / 255,
        Image.fromarray(arr),
        torch.from_numpy(arr).permute(2, 0, 1).float() / 255,
        torch.from_numpy(arr).permute(2, 0, 1)[None].float() / 255,
    ]
    for k in kinds:
        a = analyze(k)
        assert isinstance(a, Analysis) and a.size == (48, 64) and [f.kind for f in a.findings] == list(KINDS)
        json.dumps(a.to_dict())
    for bad in (torch.zeros(2, 3, 16, 16), torch.zeros(3, 16, 16, dtype=torch.uint8), np.zeros((4, 4)), 5):
        with pytest.raises(InputError):
            analyze(bad)
    with pytest.raises(InputError):
        analyze(np.full((16, 16), np.nan, np.float32))


def test_cli_table_json_and_unreadable(cli, tmp_path):
    Image.fromarray(_photo()).save(tmp_path / "a.jpg", quality=30)
    Image.fromarray(_photo()).save(tmp_path / "b.png")
    r = cli("analyze", str(tmp_path), check=0)
    assert "jpeg" in r.stdout and "30" in r.stdout and "METHOD" in r.stdout
    r = cli("analyze", str(tmp_path / "a.jpg"), "--json", check=0)
    data = json.loads(r.stdout)
    assert data[0]["findings"][0]["value"] == 30 and data[0]["findings"][0]["present"] is True
    (tmp_path / "c.png").write_bytes(b"not an image")
    r = cli("analyze", str(tmp_path / "c.png"), str(tmp_path / "a.jpg"))
    assert r.returncode == 1 and "c.png" in r.stderr
