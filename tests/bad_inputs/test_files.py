"""Bad and unusual image files: each is refused with the reason and what to do, or read exactly right.

Every file is made here, for real, with Pillow or by hand (truncations, lying headers, named pipes).
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from restorekit.errors import InputError
from restorekit.image import planar_to_numpy, read_image, write_image

from .deadline import finishes

RNG = np.random.default_rng(15)


def _rgb(h: int = 12, w: int = 16) -> np.ndarray:
    return RNG.integers(0, 256, (h, w, 3), dtype=np.uint8)


def _png_bytes(arr: np.ndarray, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG", **kw)
    return buf.getvalue()


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _lying_png(width: int, height: int, depth: int = 8, colour: int = 2) -> bytes:
    """A valid PNG header that claims a huge image, followed by almost no data (a decompression bomb's shape)."""
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + _chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------ refused, with the reason


@pytest.mark.parametrize(
    "name, make, words",
    [
        ("empty.png", lambda: b"", "the file is empty (0 bytes)"),
        ("cut.png", lambda: _png_bytes(_rgb(40, 40))[:300], "could not be decoded as an image"),
        ("cut.jpg", lambda: _jpeg(_rgb(40, 40))[:400], "truncated, corrupt or not an image"),
        ("text.png", lambda: b"these are not the pixels you are looking for\n", "could not be decoded as an image"),
        ("zeros.png", lambda: bytes(4096), "could not be decoded as an image"),
        ("bad_crc.png", lambda: _bad_crc_png(), "could not be decoded"),
        ("bomb.png", lambda: _lying_png(100_000, 100_000), "could be decompression bomb"),
        (
            "bomb16.png",
            lambda: _lying_png(100_000, 100_000, depth=16, colour=2),
            "exceeds the decompression-bomb limit",
        ),
        ("zero_size.png", lambda: _lying_png(0, 0), "could not be decoded"),
    ],
)
def test_broken_files_are_refused_by_name(tmp_path, name, make, words):
    path = tmp_path / name
    path.write_bytes(make())
    with pytest.raises(InputError) as info:
        finishes(lambda: read_image(path))
    message = str(info.value)
    assert words in message and str(path) in message, message


def _jpeg(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _bad_crc_png() -> bytes:
    data = bytearray(_png_bytes(_rgb()))
    data[40] ^= 0xFF  # inside the IDAT body: zlib or Pillow's CRC check fails
    return bytes(data)


@pytest.mark.parametrize(
    "fmt, frames, save",
    [
        ("GIF", 3, {"save_all": True, "duration": 50, "loop": 0}),
        ("PNG", 2, {"save_all": True, "duration": 50}),  # APNG
        ("TIFF", 4, {"save_all": True}),  # multi-page
        ("WEBP", 2, {"save_all": True, "duration": 50, "lossless": True}),
    ],
)
def test_animations_and_multi_page_files_are_refused_not_cut_to_one_frame(tmp_path, fmt, frames, save):
    images = [Image.fromarray(np.full((8, 8, 3), 40 * i, np.uint8)) for i in range(frames)]
    path = tmp_path / f"anim.{fmt.lower()}"
    images[0].save(path, format=fmt, append_images=images[1:], **save)
    with pytest.raises(InputError, match=rf"a {fmt} file with {frames} frames .* would keep only the first frame"):
        read_image(path)


def test_a_single_frame_gif_is_read(tmp_path):
    Image.fromarray(np.full((5, 7), 9, np.uint8), "L").convert("P").save(tmp_path / "one.gif")
    assert planar_to_numpy(read_image(tmp_path / "one.gif")).shape == (5, 7, 3)


def test_a_named_pipe_is_refused_at_once_instead_of_hanging(tmp_path):
    fifo = tmp_path / "photo.png"
    os.mkfifo(fifo)  # nobody ever writes to it: opening it would block forever
    with pytest.raises(InputError, match=r"photo\.png is a named pipe \(FIFO\), not a regular file"):
        finishes(lambda: read_image(fifo), seconds=5)


def test_a_device_is_refused(tmp_path):
    with pytest.raises(InputError, match="/dev/zero is a character device, not a regular file"):
        finishes(lambda: read_image("/dev/zero"), seconds=5)


def test_a_folder_and_a_missing_file_say_so(tmp_path):
    with pytest.raises(InputError, match="is a directory, not an image file"):
        read_image(tmp_path)
    with pytest.raises(InputError, match=r"nope\.png: file not found; check the path"):
        read_image(tmp_path / "nope.png")
    (tmp_path / "dangling.png").symlink_to(tmp_path / "gone.png")
    with pytest.raises(InputError, match="file not found"):
        read_image(tmp_path / "dangling.png")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_says_permissions(tmp_path):
    path = tmp_path / "secret.png"
    path.write_bytes(_png_bytes(_rgb()))
    path.chmod(0)
    with pytest.raises(InputError, match="permission"):
        read_image(path)


def test_a_32_bit_integer_tiff_beyond_16_bits_is_refused_not_clipped(tmp_path):
    Image.fromarray(np.array([[0, 70_000]], np.int32)).save(tmp_path / "deep.tif")
    with pytest.raises(InputError, match=r"values 0\.\.70000, beyond 16 bits"):
        read_image(tmp_path / "deep.tif")


# ------------------------------------------------------------------ read exactly right


def test_the_content_decides_not_the_suffix(tmp_path):
    arr = _rgb()
    (tmp_path / "really_a_png.jpg").write_bytes(_png_bytes(arr))
    (tmp_path / "no_suffix").write_bytes(_png_bytes(arr))
    for p in ("really_a_png.jpg", "no_suffix"):
        assert np.array_equal(planar_to_numpy(read_image(tmp_path / p)), arr)


def test_cmyk_jpeg_comes_back_as_the_same_rgb_pillow_sees(tmp_path):
    cmyk = Image.fromarray(_rgb(10, 10)).convert("CMYK")
    cmyk.save(tmp_path / "print.jpg", quality=100)
    want = np.asarray(Image.open(tmp_path / "print.jpg").convert("RGB"))
    assert np.array_equal(planar_to_numpy(read_image(tmp_path / "print.jpg")), want)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_16_bit_pngs_keep_all_16_bits(tmp_path, channels):
    arr = RNG.integers(0, 65536, (6, 9, channels), dtype=np.uint16)
    planar = read_image(_write16(tmp_path / "deep.png", arr))
    assert planar.bit_depth == 16
    assert np.array_equal(planar_to_numpy(planar).reshape(arr.shape), arr)
    out = write_image(tmp_path / "again.png", planar)
    assert np.array_equal(planar_to_numpy(read_image(out)).reshape(arr.shape), arr)


def _write16(path: Path, arr: np.ndarray) -> Path:
    if arr.shape[2] == 1:
        Image.fromarray(arr[:, :, 0]).save(path)  # I;16
        return path
    from restorekit.png16 import encode_png16

    path.write_bytes(encode_png16(arr))
    return path


def test_palette_with_transparency_gives_colour_and_alpha(tmp_path):
    img = Image.new("P", (4, 3))
    img.putpalette([255, 0, 0, 0, 255, 0] + [0, 0, 0] * 254)
    img.putdata([0, 1, 0, 1] * 3)
    img.info["transparency"] = 1
    img.save(tmp_path / "pal.png", transparency=1)
    planar = read_image(tmp_path / "pal.png")
    rgba = planar_to_numpy(planar)
    assert rgba.shape == (3, 4, 4)
    assert rgba[0, 0].tolist() == [255, 0, 0, 255] and rgba[0, 1, 3] == 0  # index 1 is the transparent one


def test_alpha_survives_a_restore_and_a_write(tmp_path, tiny_sr):
    rgba = np.dstack([_rgb(8, 10), np.full((8, 10), 77, np.uint8)])
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = tiny_sr.run(tmp_path / "a.png", output=tmp_path / "o.png")
    back = np.asarray(Image.open(out))
    assert back.shape == (16, 20, 4) and np.all(np.abs(back[..., 3].astype(int) - 77) <= 1)


@pytest.mark.parametrize("orientation, turn", [(3, 2), (6, -1), (8, 1)])
def test_exif_orientation_is_applied(tmp_path, orientation, turn):
    arr = _rgb(4, 6)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(arr).save(tmp_path / "cam.png", exif=exif.tobytes())
    assert np.array_equal(planar_to_numpy(read_image(tmp_path / "cam.png")), np.rot90(arr, turn))


def test_a_garbled_exif_block_does_not_lose_the_picture(tmp_path):
    arr = _rgb(4, 6)
    Image.fromarray(arr).save(tmp_path / "odd.png", exif=b"Exif\0\0garbage-not-a-tiff-header")
    assert np.array_equal(planar_to_numpy(read_image(tmp_path / "odd.png")), arr)


@pytest.mark.parametrize("h, w", [(1, 1), (1, 500), (500, 1), (3, 2)])
def test_odd_sizes_restore_to_exactly_twice_their_size(tmp_path, tiny_sr, h, w):
    Image.fromarray(_rgb(h, w)).save(tmp_path / "odd.png")
    out = tiny_sr.run(tmp_path / "odd.png", output=tmp_path / "out.png")
    assert Image.open(out).size == (2 * w, 2 * h)
