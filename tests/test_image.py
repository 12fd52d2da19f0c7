"""Tests for restorekit.image: files, PIL and numpy conversions, the 16-bit PNG codec, EXIF, atomic writes."""

from __future__ import annotations

import os
import struct
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile, ImageOps

from restorekit import image as rkimage
from restorekit import png16
from restorekit.errors import InputError, OutputExistsError
from restorekit.image import (
    IMAGE_EXTENSIONS,
    Planar,
    numpy_to_planar,
    pil_to_planar,
    planar_to_numpy,
    planar_to_pil,
    read_array,
    read_image,
    rgb_to_grey,
    rgb_to_ycbcr,
    write_image,
    ycbcr_to_rgb,
)

MODE_OF_CHANNELS = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}


def _random(shape: tuple[int, ...], dtype: type, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True, dtype=dtype)
    return rng.random(shape).astype(dtype)


def _assert_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    # numpy's comparison: torch.testing's first call costs about a second of imports.
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    np.testing.assert_allclose(actual.numpy(), expected.numpy(), rtol=1e-6, atol=1e-7)


def _write_and_read(path: Path, arr: np.ndarray) -> np.ndarray:
    write_image(path, numpy_to_planar(arr))
    return planar_to_numpy(read_image(path))


def _no_warnings() -> warnings.catch_warnings:
    ctx = warnings.catch_warnings()
    ctx.__enter__()
    warnings.simplefilter("error")
    return ctx


# --------------------------------------------------------------------------------------------------
# An independent reference PNG writer: byte-by-byte filters exactly as the PNG specification words them.


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def _paeth(a: int, b: int, c: int) -> int:
    p = a + b - c
    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
    if pa <= pb and pa <= pc:
        return a
    return b if pb <= pc else c


def _reference_png16(pixels: np.ndarray, row_filters: list[int], extra: bytes = b"") -> bytes:
    height, width, channels = pixels.shape
    bpp = 2 * channels
    rows = [list(pixels[y].astype(">u2").tobytes()) for y in range(height)]
    stream = bytearray()
    for y, row in enumerate(rows):
        kind = row_filters[y % len(row_filters)]
        stream.append(kind)
        for i, value in enumerate(row):
            a = row[i - bpp] if i >= bpp else 0
            b = rows[y - 1][i] if y else 0
            c = rows[y - 1][i - bpp] if y and i >= bpp else 0
            predictor = (0, a, b, (a + b) // 2, _paeth(a, b, c))[kind]
            stream.append((value - predictor) % 256)
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    header = struct.pack(">IIBBBBB", width, height, 16, color_type, 0, 0, 0)
    idat = zlib.compress(bytes(stream))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + extra + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")


def _insert_after_ihdr(png: bytes, chunk: bytes) -> bytes:
    return png[:33] + chunk + png[33:]  # signature (8) + IHDR (4 + 4 + 13 + 4)


# --------------------------------------------------------------------------------------------------
# Round trips through files


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_round_trip_is_exact(tmp_path: Path, channels: int, dtype: type) -> None:
    arr = _random((7, 9, channels), dtype, seed=channels)
    path = tmp_path / "x.png"
    image = read_image(write_image(path, numpy_to_planar(arr)))
    assert image.bit_depth == (8 if dtype == np.uint8 else 16)
    assert image.color.shape == (1 if channels < 3 else 3, 7, 9)
    assert (image.alpha is not None) == (channels in (2, 4))
    assert image.color.dtype == torch.float32
    np.testing.assert_array_equal(planar_to_numpy(image), arr)
    with Image.open(path) as pil:  # the file is a real PNG of the right kind
        pil.load()
        if dtype == np.uint8:
            assert pil.mode == MODE_OF_CHANNELS[channels]
            np.testing.assert_array_equal(np.asarray(pil).reshape(arr.shape), arr)
        elif channels == 1:
            assert pil.mode == "I;16"
            np.testing.assert_array_equal(np.asarray(pil).astype(np.uint16), arr[:, :, 0])
        elif channels in (3, 4):
            # Pillow keeps the high byte of 16-bit colour: proves our chunks, CRCs and filtering are valid.
            np.testing.assert_array_equal(np.asarray(pil), (arr >> 8).astype(np.uint8))


@pytest.mark.parametrize(
    ("suffix", "channels", "dtype"),
    [
        (".tif", 1, np.uint8),
        (".tiff", 2, np.uint8),
        (".tif", 3, np.uint8),
        (".tiff", 4, np.uint8),
        (".tif", 1, np.uint16),
        (".bmp", 1, np.uint8),
        (".bmp", 3, np.uint8),
    ],
)
def test_lossless_formats_round_trip(tmp_path: Path, suffix: str, channels: int, dtype: type) -> None:
    arr = _random((6, 5, channels), dtype, seed=3)
    out = _write_and_read(tmp_path / f"x{suffix}", arr)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".webp", ".JPG"])
def test_lossy_formats_are_close(tmp_path: Path, suffix: str) -> None:
    ramp = np.linspace(0, 1, 32, dtype=np.float32)
    arr = np.stack([np.add.outer(ramp, ramp) / 2, np.outer(ramp, 1 - ramp), np.tile(ramp, (32, 1))], axis=2)
    image = read_image(write_image(tmp_path / f"x{suffix}", numpy_to_planar(arr), quality=95))
    assert image.bit_depth == 8 and image.color.shape == (3, 32, 32)
    assert (image.color - numpy_to_planar(arr).color).abs().mean() < 0.02


def test_webp_keeps_alpha_and_grey_becomes_rgb(tmp_path: Path) -> None:
    arr = _random((8, 8, 2), np.uint8, seed=4)
    arr[:, :, 1] = np.where(np.arange(8) < 4, 0, 255)[None, :]
    image = read_image(write_image(tmp_path / "x.webp", numpy_to_planar(arr), quality=100))
    assert image.color.shape[0] == 3  # WebP has no grey mode
    np.testing.assert_array_equal(planar_to_numpy(image)[:, :, 3], arr[:, :, 1])


def test_palette_with_transparency(tmp_path: Path) -> None:
    pal = Image.new("P", (4, 3))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9))
    pal.putdata([0, 1, 2, 1] * 3)
    pal.info["transparency"] = 1
    src = tmp_path / "palette.png"
    pal.save(src)
    image = read_image(src)
    assert image.alpha is not None and image.bit_depth == 8 and image.color.shape == (3, 3, 4)
    rgba = planar_to_numpy(image)
    np.testing.assert_array_equal(rgba[:, :, 3], np.tile([255, 0, 255, 0], (3, 1)))
    np.testing.assert_array_equal(rgba[0, 0], [255, 0, 0, 255])
    np.testing.assert_array_equal(rgba[0, 2], [0, 0, 255, 255])
    np.testing.assert_array_equal(planar_to_numpy(read_image(write_image(tmp_path / "again.png", image))), rgba)


def test_grey_with_colour_key_gets_alpha(tmp_path: Path) -> None:
    grey = Image.fromarray(np.array([[5, 9], [9, 200]], dtype=np.uint8))
    grey.save(tmp_path / "key.png", transparency=9)
    image = read_image(tmp_path / "key.png")
    assert image.color.shape == (1, 2, 2) and image.alpha is not None
    np.testing.assert_array_equal(planar_to_numpy(image), [[[5, 255], [9, 0]], [[9, 0], [200, 255]]])


def test_palette_without_transparency_is_rgb(tmp_path: Path) -> None:
    pal = Image.new("RGB", (5, 4), (10, 200, 30)).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.save(tmp_path / "p.png")
    image = read_image(tmp_path / "p.png")
    assert image.alpha is None
    np.testing.assert_array_equal(planar_to_numpy(image)[0, 0], [10, 200, 30])


@pytest.mark.parametrize(
    ("mode", "suffix", "reference"),
    [
        ("1", ".png", "L"),
        ("L", ".png", "L"),
        ("LA", ".png", "LA"),
        ("PA", ".tif", "RGBA"),
        ("RGB", ".png", "RGB"),
        ("RGBA", ".png", "RGBA"),
        ("CMYK", ".tif", "RGB"),
        ("CMYK", ".jpg", "RGB"),
        ("YCbCr", ".tif", "RGB"),
        ("LAB", ".tif", "RGB"),
    ],
)
def test_pillow_modes_read_like_pillow_converts(tmp_path: Path, mode: str, suffix: str, reference: str) -> None:
    rgba = Image.fromarray(_random((6, 10, 4), np.uint8, seed=5))
    src = rgba.convert("P") if mode == "PA" else rgba
    img = src.convert(mode)
    if mode == "PA":
        img.putalpha(Image.fromarray(_random((6, 10), np.uint8, seed=6)))
    path = tmp_path / f"x{suffix}"
    img.save(path)
    with Image.open(path) as stored:
        assert stored.mode == mode
        expected = np.asarray(stored.convert(reference))
    image = read_image(path)
    assert image.bit_depth == 8
    np.testing.assert_array_equal(planar_to_numpy(image).reshape(expected.shape), expected)


def test_hsv_in_memory_becomes_rgb() -> None:
    img = Image.fromarray(_random((4, 5, 3), np.uint8, seed=7)).convert("HSV")
    np.testing.assert_array_equal(planar_to_numpy(pil_to_planar(img)), np.asarray(img.convert("RGB")))


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I;16L"])
def test_sixteen_bit_grey_pil_modes(mode: str) -> None:
    values = _random((3, 4), np.uint16, seed=8)
    byte_order = ">u2" if mode == "I;16B" else "<u2"
    img = Image.frombytes(mode, (4, 3), values.astype(byte_order).tobytes())
    assert img.mode == mode
    image = pil_to_planar(img)
    assert image.bit_depth == 16 and image.color.shape == (1, 3, 4)
    np.testing.assert_array_equal(planar_to_numpy(image)[:, :, 0], values)


def test_mode_i_within_sixteen_bits_is_read_and_beyond_is_refused(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32)).save(tmp_path / "ok.tif")
    image = read_image(tmp_path / "ok.tif")
    assert image.bit_depth == 16
    np.testing.assert_array_equal(planar_to_numpy(image)[:, :, 0], [[0, 1000, 65535]])
    # Clipping -5 and 70000 to 0..65535 would flatten the image without a word: refused, with the values found.
    Image.fromarray(np.array([[-5, 0, 1000, 70000]], dtype=np.int32)).save(tmp_path / "i.tif")
    with pytest.raises(InputError, match=r"i\.tif: 32-bit integer image \(mode 'I'\) with values -5\.\.70000"):
        read_image(tmp_path / "i.tif")


def test_float_tiff_gives_bit_depth_32_unclipped(tmp_path: Path) -> None:
    values = np.array([[0.0, 0.25, 1.5]], dtype=np.float32)
    Image.fromarray(values).save(tmp_path / "f.tif")
    image = read_image(tmp_path / "f.tif")
    assert image.bit_depth == 32
    _assert_close(image.color, torch.tensor([[[0.0, 0.25, 1.5]]]))


def test_sixteen_bit_grey_with_colour_key() -> None:
    img = Image.fromarray(np.array([[7, 300], [300, 9]], dtype=np.uint16))
    img.info["transparency"] = 300
    image = pil_to_planar(img)
    assert image.alpha is not None and image.bit_depth == 16
    np.testing.assert_array_equal(planar_to_numpy(image)[:, :, 1], [[65535, 0], [0, 65535]])


# --------------------------------------------------------------------------------------------------
# The 16-bit PNG codec


@pytest.mark.parametrize("kind", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("channels", [2, 3, 4])
def test_every_png_filter_decodes_exactly(tmp_path: Path, kind: int, channels: int) -> None:
    pixels = _random((5, 6, channels), np.uint16, seed=10 + kind)
    path = tmp_path / "f.png"
    path.write_bytes(_reference_png16(pixels, [kind]))
    image = read_image(path)
    assert image.bit_depth == 16
    np.testing.assert_array_equal(planar_to_numpy(image), pixels)
    # Our encoder's filtering agrees byte for byte with the reference.
    ours = png16.decode_png16(png16.encode_png16(pixels, filter_type=kind), "ours").pixels
    np.testing.assert_array_equal(ours, pixels)
    raw = pixels.astype(">u2").view(np.uint8).reshape(5, -1)
    reference_stream = zlib.decompress(_reference_png16(pixels, [kind])[41:-16])  # IDAT body
    assert png16.filter_scanlines(raw, 2 * channels, kind).tobytes() == reference_stream


@pytest.mark.parametrize("kind", [3, 4])
def test_predictor_ties_follow_the_spec(tmp_path: Path, kind: int) -> None:
    # Bytes drawn from 0..3 make Paeth ties (pb == pc < pa must pick the upper byte) and odd averages common.
    pixels = (np.random.default_rng(13).integers(0, 4, size=(12, 10, 3, 2)) * [256, 1]).sum(axis=3).astype(np.uint16)
    path = tmp_path / "ties.png"
    path.write_bytes(_reference_png16(pixels, [kind]))
    np.testing.assert_array_equal(planar_to_numpy(read_image(path)), pixels)
    raw = pixels.astype(">u2").view(np.uint8).reshape(12, -1)
    assert png16.filter_scanlines(raw, 6, kind).tobytes() == zlib.decompress(path.read_bytes()[41:-16])


def test_mixed_row_filters_and_smooth_image(tmp_path: Path) -> None:
    y, x = np.mgrid[0:23, 0:17]
    pixels = np.stack([y * 2800 + x * 7, x * 3800, (y * x * 97) % 65536], axis=2).astype(np.uint16)
    path = tmp_path / "mixed.png"
    path.write_bytes(_reference_png16(pixels, [4, 3, 0, 1, 2, 4, 4, 3]))
    np.testing.assert_array_equal(planar_to_numpy(read_image(path)), pixels)


def test_interlaced_sixteen_bit_png(tmp_path: Path) -> None:
    pixels = _random((13, 11, 3), np.uint16, seed=11)
    path = tmp_path / "adam7.png"
    path.write_bytes(png16.encode_png16(pixels, filter_type=4, interlace=True))
    np.testing.assert_array_equal(planar_to_numpy(read_image(path)), pixels)
    with Image.open(path) as pil:  # Pillow's Adam7 decoder puts the pixels in the same places
        assert pil.info.get("interlace") == 1
        np.testing.assert_array_equal(np.asarray(pil), (pixels >> 8).astype(np.uint8))


def test_pillow_made_sixteen_bit_grey_png(tmp_path: Path) -> None:
    y, x = np.mgrid[0:40, 0:50]
    values = ((y * 1601 + x * x * 13) % 65536).astype(np.uint16)
    path = tmp_path / "grey16.png"
    Image.fromarray(values).save(path)
    image = read_image(path)
    assert image.bit_depth == 16 and image.color.shape == (1, 40, 50)
    np.testing.assert_array_equal(planar_to_numpy(image)[:, :, 0], values)
    # Our decoder also reads Pillow's (adaptively filtered) stream.
    np.testing.assert_array_equal(png16.decode_png16(path.read_bytes(), "p").pixels[:, :, 0], values)


def test_rgb_colour_key_becomes_alpha(tmp_path: Path) -> None:
    pixels = _random((3, 4, 3), np.uint16, seed=12)
    pixels[1, 2] = (1, 2, 3)
    trns = _chunk(b"tRNS", struct.pack(">HHH", 1, 2, 3))
    path = tmp_path / "key.png"
    path.write_bytes(_reference_png16(pixels, [0], extra=trns))
    image = read_image(path)
    assert image.alpha is not None
    expected = np.ones((3, 4), dtype=np.float32)
    expected[1, 2] = 0
    np.testing.assert_array_equal(image.alpha[0].numpy(), expected)


# --------------------------------------------------------------------------------------------------
# EXIF orientation

UPRIGHT = {
    1: lambda a: a,
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: np.swapaxes(a, 0, 1),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: np.swapaxes(a[::-1, ::-1], 0, 1),
    8: lambda a: np.rot90(a, 1),
}


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_png_with_alpha(tmp_path: Path, orientation: int) -> None:
    stored = (np.arange(3 * 5 * 4).reshape(3, 5, 4) * 5).astype(np.uint8)
    path = tmp_path / "o.png"
    Image.fromarray(stored).save(path, exif=_exif(orientation))
    expected = UPRIGHT[orientation](stored)
    np.testing.assert_array_equal(planar_to_numpy(read_image(path)), expected)
    with Image.open(path) as pil:  # and Pillow agrees
        np.testing.assert_array_equal(np.asarray(ImageOps.exif_transpose(pil)), expected)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_jpeg(tmp_path: Path, orientation: int) -> None:
    stored = np.zeros((16, 24, 3), dtype=np.uint8)
    stored[:8, :8] = 250  # one bright corner block makes every transposition distinguishable
    path = tmp_path / "o.jpg"
    Image.fromarray(stored).save(path, exif=_exif(orientation), quality=100)
    with Image.open(path) as pil:
        decoded = np.asarray(pil.convert("RGB"))
    image = read_image(path)
    np.testing.assert_array_equal(planar_to_numpy(image), UPRIGHT[orientation](decoded))
    corner = planar_to_numpy(image).mean(axis=2) > 128
    assert corner.sum() == 64 and np.array_equal(corner, UPRIGHT[orientation](stored.mean(axis=2) > 128))


@pytest.mark.parametrize("orientation", [2, 5, 6, 7, 8])
def test_exif_orientation_sixteen_bit_png(tmp_path: Path, orientation: int) -> None:
    stored = _random((3, 5, 4), np.uint16, seed=orientation)
    exif_body = _exif(orientation).tobytes()
    exif_body = exif_body[6:] if exif_body.startswith(b"Exif\x00\x00") else exif_body
    path = tmp_path / "o16.png"
    path.write_bytes(_insert_after_ihdr(png16.encode_png16(stored), _chunk(b"eXIf", exif_body)))
    image = read_image(path)
    assert image.bit_depth == 16
    np.testing.assert_array_equal(planar_to_numpy(image), UPRIGHT[orientation](stored))


@pytest.mark.parametrize(
    "kind", ["rgb8", "rgba8_exif", "grey8", "grey16", "rgb16_exif", "rgba16", "palette_key", "float_tiff"]
)
def test_read_array_is_read_image_before_the_division(tmp_path: Path, kind: str) -> None:
    """The integers as stored, upright, writable: read_image is exactly this divided by 255 or 65535."""
    path = tmp_path / ("x.tif" if kind == "float_tiff" else "x.png")
    if kind.endswith("16_exif") or kind == "rgba16":
        stored = _random((3, 5, 3 if kind.startswith("rgb16") else 4), np.uint16, seed=1)
        data = png16.encode_png16(stored)
        if kind.endswith("exif"):
            body = _exif(6).tobytes()
            data = _insert_after_ihdr(data, _chunk(b"eXIf", body[6:] if body.startswith(b"Exif\x00\x00") else body))
        path.write_bytes(data)
        expected = UPRIGHT[6 if kind.endswith("exif") else 1](stored)
    elif kind == "grey16":
        expected = _random((3, 5), np.uint16, seed=2)[:, :, None]
        Image.fromarray(expected[:, :, 0]).save(path)
    elif kind == "palette_key":
        img = Image.new("P", (5, 3))
        img.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
        img.putpixel((1, 1), 1)
        img.save(path, transparency=1)
        expected = np.zeros((3, 5, 4), dtype=np.uint8)
        expected[:, :, 0], expected[:, :, 3] = 255, 255
        expected[1, 1] = (0, 255, 0, 0)
    elif kind == "float_tiff":
        expected = _random((3, 5), np.float32, seed=3)[:, :, None]
        Image.fromarray(expected[:, :, 0], mode="F").save(path)
    else:
        channels = {"rgb8": 3, "rgba8_exif": 4, "grey8": 1}[kind]
        stored = _random((3, 5, channels), np.uint8, seed=4)
        Image.fromarray(stored[:, :, 0] if channels == 1 else stored).save(path, exif=_exif(6 if "exif" in kind else 1))
        expected = UPRIGHT[6 if "exif" in kind else 1](stored)
    arr = read_array(path)
    assert arr.dtype == expected.dtype and arr.flags.writeable and arr.flags.c_contiguous
    np.testing.assert_array_equal(arr, expected)
    image = read_image(path)
    scale = {np.dtype(np.uint8): 255, np.dtype(np.uint16): 65535}.get(arr.dtype, 1)
    assert image.bit_depth == {255: 8, 65535: 16, 1: 32}[scale]
    stacked = torch.cat([image.color] + ([image.alpha] if image.alpha is not None else []))
    assert torch.equal(stacked, torch.from_numpy(arr.astype(np.float32).transpose(2, 0, 1) / np.float32(scale)))


def test_read_array_errors_are_read_image_errors(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    Image.fromarray(_random((16, 16, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(InputError, match="truncated") as from_array:
        read_array(path)
    with pytest.raises(InputError) as from_image:
        read_image(path)
    assert str(from_array.value) == str(from_image.value)


def test_pil_to_planar_does_not_apply_exif(tmp_path: Path) -> None:
    path = tmp_path / "o.png"
    Image.fromarray(_random((3, 5, 3), np.uint8)).save(path, exif=_exif(6))
    with Image.open(path) as pil:
        assert pil_to_planar(pil).color.shape == (3, 3, 5)
    assert read_image(path).color.shape == (3, 5, 3)


# --------------------------------------------------------------------------------------------------
# Bad input files


def _noise_png(path: Path) -> bytes:
    Image.fromarray(_random((64, 64, 3), np.uint8)).save(path)
    return path.read_bytes()


def _assert_input_error(path: Path, *words: str) -> None:
    with pytest.raises(InputError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message
    rest = message.replace(str(path), "")  # tmp_path holds the test's name: look for words elsewhere
    for word in words:
        assert word in rest
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_missing_file(tmp_path: Path) -> None:
    _assert_input_error(tmp_path / "nope.png", "not found")


def test_directory_is_not_an_image(tmp_path: Path) -> None:
    _assert_input_error(tmp_path, "directory")


def test_text_file_renamed_png(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n")
    _assert_input_error(path, "could not be decoded")


def test_truncated_png(tmp_path: Path) -> None:
    path = tmp_path / "cut.png"
    data = _noise_png(path)
    path.write_bytes(data[: len(data) // 2])
    _assert_input_error(path, "could not be decoded")


def test_truncated_jpeg(tmp_path: Path) -> None:
    path = tmp_path / "cut.jpg"
    Image.fromarray(_random((64, 64, 3), np.uint8)).save(path, quality=95)
    path.write_bytes(path.read_bytes()[:-600])
    _assert_input_error(path, "could not be decoded")


@pytest.mark.parametrize("keep", [0.5, 0.97])
def test_truncated_sixteen_bit_png(tmp_path: Path, keep: float) -> None:
    path = tmp_path / "cut16.png"
    data = png16.encode_png16(_random((32, 32, 3), np.uint16))
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_input_error(path, "truncated", "could not be decoded")


def test_bad_crc_sixteen_bit(tmp_path: Path) -> None:
    data = bytearray(png16.encode_png16(_random((8, 8, 4), np.uint16)))
    data[45] ^= 0x01  # a byte inside the IDAT data
    path = tmp_path / "crc.png"
    path.write_bytes(bytes(data))
    _assert_input_error(path, "CRC", "IDAT", "could not be decoded")


def test_bad_crc_eight_bit_header(tmp_path: Path) -> None:
    path = tmp_path / "crc8.png"
    data = bytearray(_noise_png(path))
    data[20] ^= 0x01  # inside IHDR
    path.write_bytes(bytes(data))
    _assert_input_error(path, "could not be decoded")


def test_truncated_zlib_stream_with_valid_chunks(tmp_path: Path) -> None:
    png = _reference_png16(_random((16, 16, 3), np.uint16), [0])
    idat = png[41:-16]
    path = tmp_path / "short.png"
    half = zlib.compress(zlib.decompress(idat)[: 16 * 97 // 2])  # a complete stream of half the rows
    path.write_bytes(png[:33] + _chunk(b"IDAT", half) + _chunk(b"IEND", b""))
    _assert_input_error(path, "shorter than", "could not be decoded")
    # All pixel bytes present, only the end of the zlib stream (its checksum) missing.
    path.write_bytes(png[:33] + _chunk(b"IDAT", idat[:-3]) + _chunk(b"IEND", b""))
    _assert_input_error(path, "image data is truncated")


def test_trailing_zlib_data_is_tolerated(tmp_path: Path) -> None:
    pixels = _random((4, 5, 3), np.uint16)
    png = _reference_png16(pixels, [0])
    longer = zlib.compress(zlib.decompress(png[41:-16]) + b"\x00" * 50)
    path = tmp_path / "long.png"
    path.write_bytes(png[:33] + _chunk(b"IDAT", longer) + _chunk(b"IEND", b""))
    np.testing.assert_array_equal(planar_to_numpy(read_image(path)), pixels)


def test_sixteen_bit_decompression_bomb_guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "big.png"
    path.write_bytes(png16.encode_png16(_random((10, 10, 3), np.uint16)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 40)
    _assert_input_error(path, "MAX_IMAGE_PIXELS")


def test_unknown_filter_type(tmp_path: Path) -> None:
    pixels = _random((2, 2, 3), np.uint16)
    png = bytearray(_reference_png16(pixels, [0]))
    stream = bytearray(zlib.decompress(bytes(png[41:-16])))
    stream[0] = 7
    idat = zlib.compress(bytes(stream))
    path = tmp_path / "filter.png"
    path.write_bytes(bytes(png[:33]) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    _assert_input_error(path, "filter")


# --------------------------------------------------------------------------------------------------
# Writing


def test_write_returns_path_and_creates_parents(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "out.png"
    result = write_image(str(target), numpy_to_planar(_random((2, 3), np.uint8)))
    assert result == target and isinstance(result, Path) and target.is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["out.png"]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permissions")
def test_written_file_has_normal_permissions(tmp_path: Path) -> None:
    target = write_image(tmp_path / "p.png", numpy_to_planar(_random((2, 3), np.uint8)))
    mask = os.umask(0o022)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask


def test_unknown_extension(tmp_path: Path) -> None:
    with pytest.raises(InputError) as info:
        write_image(tmp_path / "x.gif", numpy_to_planar(_random((2, 3), np.uint8)))
    assert ".png" in str(info.value) and ".webp" in str(info.value) and "x.gif" in str(info.value)
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("quality", [0, 101, 9.5])
def test_bad_quality(tmp_path: Path, quality: object) -> None:
    with pytest.raises(InputError):
        write_image(tmp_path / "x.jpg", numpy_to_planar(_random((2, 3), np.uint8)), quality=quality)  # type: ignore[arg-type]


def test_overwrite_false(tmp_path: Path) -> None:
    target = tmp_path / "x.png"
    target.write_bytes(b"precious")
    with pytest.raises(OutputExistsError) as info:
        write_image(target, numpy_to_planar(_random((2, 3), np.uint8)), overwrite=False)
    assert "overwrite" in str(info.value)
    assert target.read_bytes() == b"precious"
    fresh = tmp_path / "new.png"
    write_image(fresh, numpy_to_planar(_random((2, 3), np.uint8)), overwrite=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["new.png", "x.png"]
    write_image(target, numpy_to_planar(_random((2, 3), np.uint8)))  # overwrite=True replaces
    assert target.read_bytes().startswith(b"\x89PNG")


def test_overwrite_false_loses_a_race(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.png"
    real_save = rkimage._save

    def save_then_someone_else_writes(*args: object, **kwargs: object) -> None:
        real_save(*args, **kwargs)  # type: ignore[arg-type]
        target.write_bytes(b"theirs")

    monkeypatch.setattr(rkimage, "_save", save_then_someone_else_writes)
    with pytest.raises(OutputExistsError):
        write_image(target, numpy_to_planar(_random((2, 3), np.uint8)), overwrite=False)
    assert target.read_bytes() == b"theirs"
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


@pytest.mark.parametrize("existing", [True, False])
def test_failed_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool) -> None:
    target = tmp_path / "x.png"
    if existing:
        target.write_bytes(b"old contents")

    def half_a_file(f: object, *args: object) -> None:
        f.write(b"\x89PNG\r\n\x1a\n half")  # type: ignore[attr-defined]
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(rkimage, "_save", half_a_file)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_image(target, numpy_to_planar(_random((4, 4, 3), np.uint16)))
    assert [p.name for p in tmp_path.iterdir()] == (["x.png"] if existing else [])
    if existing:
        assert target.read_bytes() == b"old contents"


def test_failed_encoder_inside_real_save_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "x.png"
    target.write_bytes(b"old")

    def broken(*args: object, **kwargs: object) -> bytes:
        raise MemoryError

    monkeypatch.setattr(rkimage, "encode_png16", broken)
    with pytest.raises(MemoryError):
        write_image(target, numpy_to_planar(_random((4, 4, 3), np.uint16)))
    assert target.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["x.png"]


@pytest.mark.parametrize("suffix", [".jpg", ".bmp", ".webp"])
def test_sixteen_bit_to_eight_bit_format_warns_once(tmp_path: Path, suffix: str) -> None:
    values = np.array([[0, 128, 129, 32767, 65535]], dtype=np.uint16)
    with pytest.warns(UserWarning, match="8 bits") as record:
        write_image(tmp_path / f"x{suffix}", numpy_to_planar(values))
    assert len(record) == 1
    if suffix == ".bmp":
        expected = np.floor(values / 65535 * 255 + 0.5).astype(np.uint8)
        np.testing.assert_array_equal(planar_to_numpy(read_image(tmp_path / "x.bmp"))[:, :, 0], expected)


def test_sixteen_bit_colour_tiff_warns_and_writes_eight_bits(tmp_path: Path) -> None:
    values = _random((3, 4, 3), np.uint16)
    with pytest.warns(UserWarning, match="16-bit colour"):
        image = read_image(write_image(tmp_path / "x.tif", numpy_to_planar(values)))
    assert image.bit_depth == 8
    np.testing.assert_array_equal(planar_to_numpy(image), np.floor(values / 65535 * 255 + 0.5).astype(np.uint8))


@pytest.mark.parametrize("suffix", [".jpg", ".bmp"])
def test_alpha_dropped_with_warning(tmp_path: Path, suffix: str) -> None:
    with pytest.warns(UserWarning, match="alpha") as record:
        image = read_image(write_image(tmp_path / f"x{suffix}", numpy_to_planar(_random((8, 8, 4), np.uint8))))
    assert len(record) == 1 and image.alpha is None and image.color.shape[0] == 3


def test_eight_bit_jpeg_does_not_warn(tmp_path: Path) -> None:
    ctx = _no_warnings()
    try:
        write_image(tmp_path / "x.jpg", numpy_to_planar(_random((8, 8, 3), np.uint8)))
        write_image(tmp_path / "f.jpg", numpy_to_planar(_random((8, 8, 3), np.float32)))
    finally:
        ctx.__exit__(None, None, None)


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_float_is_written_as_sixteen_bit_png(tmp_path: Path, channels: int) -> None:
    values = _random((5, 6, channels), np.float32, seed=channels)
    image = read_image(write_image(tmp_path / "f.png", numpy_to_planar(values)))
    assert image.bit_depth == 16
    np.testing.assert_array_equal(planar_to_numpy(image), np.floor(values * 65535 + 0.5).astype(np.uint16))


def test_quantisation_clamps_rounds_and_zeroes_nan(tmp_path: Path) -> None:
    values = np.array([[-0.5, 0.0, 0.7 / 255, 0.3 / 255, 0.5, 1.0, 1.5, np.nan, np.inf]], dtype=np.float32)
    expected = np.array([[0, 0, 1, 0, 128, 255, 255, 0, 255]], dtype=np.uint8)
    path = tmp_path / "q.bmp"
    write_image(path, numpy_to_planar(values))
    np.testing.assert_array_equal(planar_to_numpy(read_image(path))[:, :, 0], expected)
    eight = Planar(numpy_to_planar(values).color, None, 8, "HW")
    np.testing.assert_array_equal(planar_to_numpy(eight), expected)


def test_write_accepts_non_contiguous_and_half_precision(tmp_path: Path) -> None:
    arr = _random((6, 7, 3), np.uint8)
    image = numpy_to_planar(arr)
    transposed = Planar(image.color.transpose(1, 2).half(), None, 8)
    out = planar_to_numpy(read_image(write_image(tmp_path / "t.png", transposed)))
    np.testing.assert_array_equal(out, arr.transpose(1, 0, 2))


# --------------------------------------------------------------------------------------------------
# numpy and PIL conversions


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float16, np.float32, np.float64, np.dtype(">u2")])
@pytest.mark.parametrize("shape", [(5, 6), (5, 6, 1), (5, 6, 2), (5, 6, 3), (5, 6, 4)])
def test_numpy_round_trip(dtype: np.dtype, shape: tuple[int, ...]) -> None:
    dtype = np.dtype(dtype)
    arr = _random(shape, dtype.newbyteorder("=").type, seed=len(shape)).astype(dtype)
    image = numpy_to_planar(arr)
    assert image.layout == ("HW" if len(shape) == 2 else "HWC")
    assert image.bit_depth == {"u1": 8, "u2": 16}.get(f"{dtype.kind}{dtype.itemsize}", 32)
    channels = 1 if len(shape) == 2 else shape[2]
    assert image.color.shape == (1 if channels < 3 else 3, 5, 6) and image.color.dtype == torch.float32
    assert (image.alpha is None) == (channels in (1, 3))
    back = planar_to_numpy(image)
    assert back.shape == arr.shape
    assert back.dtype == {8: np.uint8, 16: np.uint16, 32: np.float32}[image.bit_depth]
    np.testing.assert_array_equal(back, arr.astype(back.dtype))
    if image.bit_depth == 8:
        _assert_close(image.color[0], torch.from_numpy(arr.reshape(5, 6, -1)[:, :, 0] / 255).float())


def test_bool_array_is_an_eight_bit_mask() -> None:
    mask = np.array([[True, False], [False, True]])
    image = numpy_to_planar(mask)
    assert image.bit_depth == 8
    _assert_close(image.color, torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))
    np.testing.assert_array_equal(planar_to_numpy(image), [[255, 0], [0, 255]])


def test_numpy_float_is_not_clipped_on_input_but_clamped_on_output() -> None:
    arr = np.array([[-0.25, 0.5, 1.25]], dtype=np.float64)
    image = numpy_to_planar(arr)
    _assert_close(image.color, torch.tensor([[[-0.25, 0.5, 1.25]]]))
    np.testing.assert_array_equal(planar_to_numpy(image), np.array([[0.0, 0.5, 1.0]], dtype=np.float32))


def test_numpy_accepts_flipped_views() -> None:
    arr = _random((4, 5, 3), np.uint8)
    np.testing.assert_array_equal(planar_to_numpy(numpy_to_planar(arr[::-1, :, ::-1])), arr[::-1, :, ::-1])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((4, 4), dtype=np.int64),
        np.zeros((4, 4, 3), dtype=np.complex64),
        np.zeros((1, 4, 4, 3), dtype=np.uint8),
        np.zeros((0, 4, 3), dtype=np.uint8),
        np.zeros((4, 4, 5), dtype=np.uint8),
        np.zeros(4, dtype=np.uint8),
        [[0, 1], [1, 0]],
    ],
)
def test_numpy_rejects(bad: object) -> None:
    with pytest.raises(InputError) as info:
        numpy_to_planar(bad)  # type: ignore[arg-type]
    assert "uint8" in str(info.value) and "(H, W, C)" in str(info.value)


def test_planar_validates_shapes() -> None:
    with pytest.raises(InputError):
        Planar(torch.zeros(2, 3, 3), None, 8)
    with pytest.raises(InputError):
        Planar(torch.zeros(3, 3, 3), torch.zeros(1, 3, 4), 8)
    with pytest.raises(InputError):
        Planar(torch.zeros(3, 3, 3), None, 12)
    with pytest.raises(InputError):
        Planar(torch.zeros(3, 3, 3), None, 8, layout="CHW")


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
def test_planar_to_pil_eight_bit(channels: int) -> None:
    arr = _random((3, 4, channels), np.uint8)
    pil = planar_to_pil(numpy_to_planar(arr))
    assert pil.mode == MODE_OF_CHANNELS[channels]
    np.testing.assert_array_equal(np.asarray(pil).reshape(arr.shape), arr)
    np.testing.assert_array_equal(planar_to_numpy(pil_to_planar(pil)), arr)


def test_planar_to_pil_sixteen_bit_grey() -> None:
    values = _random((3, 4), np.uint16)
    pil = planar_to_pil(numpy_to_planar(values))
    assert pil.mode == "I;16"
    np.testing.assert_array_equal(np.asarray(pil), values)


def test_planar_to_pil_sixteen_bit_colour_warns() -> None:
    values = _random((3, 4, 3), np.uint16)
    with pytest.warns(UserWarning, match="8 bits"):
        pil = planar_to_pil(numpy_to_planar(values))
    assert pil.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(pil), np.floor(values / 65535 * 255 + 0.5).astype(np.uint8))


def test_planar_to_pil_float_is_eight_bit() -> None:
    ctx = _no_warnings()
    try:
        pil = planar_to_pil(numpy_to_planar(np.array([[0.0, 0.5, 1.0]], dtype=np.float32)))
    finally:
        ctx.__exit__(None, None, None)
    assert pil.mode == "L"
    np.testing.assert_array_equal(np.asarray(pil), [[0, 128, 255]])


def test_image_extensions(tmp_path: Path) -> None:
    assert set(IMAGE_EXTENSIONS) == {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
    # Suffixes are matched case-insensitively: every listed one, however a camera spells it, is written in its
    # format, read back, and found in a folder of inputs.
    from restorekit.batch import expand_inputs

    image = numpy_to_planar(_random((4, 5, 3), np.uint8))
    written = []
    for ext in IMAGE_EXTENSIONS:
        for spelled in (ext, ext.upper()):
            path = write_image(tmp_path / f"x{spelled}", image)
            assert read_image(path).color.shape == (3, 4, 5), path
            written.append(path.name)
    pairs, missing = expand_inputs([tmp_path])
    assert sorted(p.name for p, _ in pairs) == sorted(written) and not missing


# --------------------------------------------------------------------------------------------------
# Colour spaces


def _matlab_rgb2ycbcr(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb
    return np.stack(
        [
            (16 + 65.481 * r + 128.553 * g + 24.966 * b) / 255,
            (128 - 37.797 * r - 74.203 * g + 112.0 * b) / 255,
            (128 + 112.0 * r - 93.786 * g - 18.214 * b) / 255,
        ]
    )


def test_ycbcr_known_values() -> None:
    white, black = torch.ones(3, 1, 1, dtype=torch.float64), torch.zeros(3, 1, 1, dtype=torch.float64)
    _assert_close(rgb_to_ycbcr(white).flatten(), torch.tensor([235, 128, 128], dtype=torch.float64) / 255)
    _assert_close(rgb_to_ycbcr(black).flatten(), torch.tensor([16, 128, 128], dtype=torch.float64) / 255)
    red = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)[:, None, None]
    expected = torch.tensor([16 + 65.481, 128 - 37.797, 128 + 112.0], dtype=torch.float64) / 255
    _assert_close(rgb_to_ycbcr(red).flatten(), expected)


def test_ycbcr_matches_matlab_formula_batched() -> None:
    rgb = torch.rand(2, 4, 3, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ycc = rgb_to_ycbcr(rgb)
    assert ycc.shape == rgb.shape and ycc.dtype == torch.float64
    expected = np.stack([_matlab_rgb2ycbcr(rgb[i, j].numpy()) for i in range(2) for j in range(4)]).reshape(ycc.shape)
    np.testing.assert_allclose(ycc.numpy(), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ycbcr_inverse(dtype: torch.dtype) -> None:
    rgb = torch.rand(3, 3, 7, 8, generator=torch.Generator().manual_seed(1)).to(dtype)
    back = ycbcr_to_rgb(rgb_to_ycbcr(rgb))
    assert back.dtype == dtype and back.shape == rgb.shape
    assert (back - rgb).abs().max() < (1e-6 if dtype == torch.float32 else 1e-12)
    ycc = torch.rand(3, 4, 4, generator=torch.Generator().manual_seed(2)).to(dtype)
    assert (rgb_to_ycbcr(ycbcr_to_rgb(ycc)) - ycc).abs().max() < (1e-6 if dtype == torch.float32 else 1e-12)


def test_rgb_to_grey_matches_pillow() -> None:
    arr = _random((9, 11, 3), np.uint8)
    rgb = numpy_to_planar(arr).color.unsqueeze(0)
    grey = rgb_to_grey(rgb)
    assert grey.shape == (1, 1, 9, 11)
    pillow = np.asarray(Image.fromarray(arr).convert("L")).astype(np.float32) / 255
    assert np.abs(grey[0, 0].numpy() - pillow).max() <= 0.51 / 255
    red = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    _assert_close(rgb_to_grey(red).flatten(), torch.tensor([0.299]))


def test_colour_coefficients_are_what_the_conversions_use() -> None:
    from restorekit import color

    # The conversions live in restorekit.color and are the same objects here.
    assert (rgb_to_ycbcr, ycbcr_to_rgb, rgb_to_grey) == (color.rgb_to_ycbcr, color.ycbcr_to_rgb, color.rgb_to_grey)
    unit = torch.eye(3, dtype=torch.float64)[:, :, None, None]  # pure red, green, blue as three images
    ycc = rgb_to_ycbcr(unit)[..., 0, 0]  # (colour, Y/Cb/Cr)
    offset = torch.tensor(color.YCBCR_OFFSET, dtype=torch.float64)
    np.testing.assert_allclose((ycc - offset).T.numpy(), np.array(color.YCBCR_MATRIX), rtol=0, atol=1e-15)
    np.testing.assert_array_equal(rgb_to_ycbcr(torch.zeros(3, 1, 1, dtype=torch.float64)).flatten(), offset)
    assert color.YCBCR_MATRIX[0] == (65.481 / 255, 128.553 / 255, 24.966 / 255) and color.YCBCR_OFFSET[0] == 16 / 255
    np.testing.assert_array_equal(rgb_to_grey(unit).flatten().numpy(), np.array(color.GREY_WEIGHTS))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_tensors_stay_on_the_gpu_and_write(tmp_path: Path) -> None:
    x = torch.rand(2, 3, 4, 5, device="cuda")
    assert rgb_to_ycbcr(x).device == x.device and ycbcr_to_rgb(x).device == x.device
    assert rgb_to_grey(x.half()).device == x.device and rgb_to_grey(x.half()).dtype == torch.float16
    torch.testing.assert_close(ycbcr_to_rgb(rgb_to_ycbcr(x)).cpu(), x.cpu(), rtol=0, atol=1e-6)
    image = Planar(x[0], x[1, :1], 8)
    expected = planar_to_numpy(Planar(x[0].cpu(), x[1, :1].cpu(), 8))
    np.testing.assert_array_equal(planar_to_numpy(read_image(write_image(tmp_path / "g.png", image))), expected)


@pytest.mark.parametrize("fn", [rgb_to_ycbcr, ycbcr_to_rgb, rgb_to_grey])
def test_colour_functions_reject_wrong_input(fn: object) -> None:
    with pytest.raises(InputError):
        fn(torch.rand(1, 4, 4))  # type: ignore[operator]
    with pytest.raises(InputError):
        fn(torch.zeros(3, 4, 4, dtype=torch.uint8))  # type: ignore[operator]
