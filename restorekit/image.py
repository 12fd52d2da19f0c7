"""Images in and out: files, PIL images and numpy arrays to and from planar float tensors.

Everything meets in :class:`Planar`: colour as a float32 ``(C, H, W)`` tensor in ``[0, 1]`` (C = 1 grey
or 3 RGB), alpha kept apart, and the bit depth the pixels came with so that they can leave the same way.

* :func:`read_image` decodes the whole file up front, so a truncated or corrupt file fails here with an
  :class:`~restorekit.errors.InputError` rather than half-way through a model. EXIF orientation is applied
  (pixels come back upright). Files are recognised by content, not by suffix.
* Pillow holds 16-bit colour in no mode, and silently drops 16-bit RGB/RGBA PNGs to 8 bits, so PNGs with
  16-bit colour or grey+alpha go through the small zlib + numpy codec below instead, in both directions.
* :func:`write_image` picks the format from the suffix and writes atomically (temporary file in the same
  folder, then :func:`os.replace`): a failed write never leaves a half-written target behind.

Quantisation to integers is round-half-up after clamping to ``[0, 1]``: ``floor(x * 255 + 0.5)``
(65535 for 16 bits); NaN becomes 0. Float (``bit_depth == 32``) images are written with 16 bits where the
format can hold them (PNG always, TIFF for grey without alpha) and 8 bits elsewhere, without a warning;
16-bit images that have to lose bits, and alpha that has to be dropped (JPEG, BMP), warn once per call.
16-bit colour TIFF is written as 8-bit with a warning (Pillow cannot hold it; use PNG to keep 16 bits).
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image

from .errors import InputError, OutputError, OutputExistsError

__all__ = [
    "IMAGE_EXTENSIONS",
    "Planar",
    "read_image",
    "write_image",
    "pil_to_planar",
    "planar_to_pil",
    "numpy_to_planar",
    "planar_to_numpy",
    "rgb_to_ycbcr",
    "ycbcr_to_rgb",
    "rgb_to_grey",
    "output_clashes",
]

IMAGE_EXTENSIONS: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")

_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".bmp": "BMP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".webp": "WEBP",
}
_ORIENTATION_TAG = 0x0112
_BIT_DEPTHS = (8, 16, 32)


@dataclass
class Planar:
    """An image as planar float tensors plus the bit depth it came with."""

    color: torch.Tensor  # float32 (C, H, W), C = 1 (grey) or 3 (RGB), values in [0, 1]
    alpha: torch.Tensor | None  # float32 (1, H, W) in [0, 1], or None
    bit_depth: int  # 8, 16, or 32 (= float input)
    layout: str = "HWC"  # numpy inputs: "HW" (2-D grey array) or "HWC"; informational otherwise

    def __post_init__(self) -> None:
        _check_planar(self)

    @property
    def height(self) -> int:
        return int(self.color.shape[-2])

    @property
    def width(self) -> int:
        return int(self.color.shape[-1])


def _check_planar(image: Planar) -> None:
    color, alpha = image.color, image.alpha
    if not isinstance(color, torch.Tensor) or color.ndim != 3 or color.shape[0] not in (1, 3):
        shape = tuple(color.shape) if isinstance(color, torch.Tensor) else type(color).__name__
        raise InputError(f"Planar.color must be a (C, H, W) tensor with C = 1 or 3, got {shape}")
    if alpha is not None and (not isinstance(alpha, torch.Tensor) or tuple(alpha.shape) != (1, *color.shape[1:])):
        shape = tuple(alpha.shape) if isinstance(alpha, torch.Tensor) else type(alpha).__name__
        expected = (1, *color.shape[1:])
        raise InputError(f"Planar.alpha must be None or a tensor of shape {expected} (matching color), got {shape}")
    if image.bit_depth not in _BIT_DEPTHS:
        raise InputError(f"Planar.bit_depth must be one of {_BIT_DEPTHS}, got {image.bit_depth!r}")
    if image.layout not in ("HW", "HWC"):
        raise InputError(f"Planar.layout must be 'HW' or 'HWC', got {image.layout!r}")


# --------------------------------------------------------------------------------------------------
# Conversions between arrays and tensors


def _planar_from_hwc(arr: np.ndarray, scale: float | None, bit_depth: int, layout: str = "HWC") -> Planar:
    """(H, W, C) array with C in 1..4 -> Planar; integer arrays are divided by ``scale``."""
    # np.array copies into a fresh, writable float32 buffer (PIL arrays are read-only).
    chw = torch.from_numpy(np.array(arr.transpose(2, 0, 1), dtype=np.float32, order="C"))
    if scale is not None:
        chw.div_(scale)
    channels = chw.shape[0]
    has_alpha = channels in (2, 4)
    color = chw[: channels - 1] if has_alpha else chw
    alpha = chw[channels - 1 :] if has_alpha else None
    return Planar(color.contiguous(), None if alpha is None else alpha.contiguous(), bit_depth, layout)


def _stacked(image: Planar, alpha: bool = True) -> torch.Tensor:
    """Colour (and alpha) as one float32 CPU tensor (C, H, W); never aliases the caller's tensors."""
    parts = [image.color] + ([image.alpha] if alpha and image.alpha is not None else [])
    return torch.cat([p.detach().to("cpu", torch.float32) for p in parts], dim=0)


def _quantise(chw: torch.Tensor, bits: int) -> np.ndarray:
    """Float (C, H, W) -> integer (H, W, C), round-half-up after clamping to [0, 1]; NaN -> 0."""
    maxval, dtype = (255, np.uint8) if bits == 8 else (65535, np.uint16)
    x = torch.nan_to_num(chw, nan=0.0).clamp_(0.0, 1.0).mul_(maxval).add_(0.5).floor_()
    return np.ascontiguousarray(x.numpy().transpose(1, 2, 0)).astype(dtype)


def numpy_to_planar(arr: np.ndarray) -> Planar:
    """(H, W) or (H, W, C) array -> Planar; C = 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA.

    uint8 and bool give bit_depth 8, uint16 gives 16, float16/32/64 gives 32. Float values are taken as
    ``[0, 1]`` and are not clipped: checking them is the caller's business.
    """
    accepted = (
        "pass an (H, W) grey array or an (H, W, C) array with C = 1 (grey), 2 (grey+alpha), 3 (RGB) or "
        "4 (RGBA), of dtype uint8 (0-255), uint16 (0-65535), float16/32/64 (0-1) or bool"
    )
    if not isinstance(arr, np.ndarray):
        raise InputError(f"expected a numpy array, got {type(arr).__name__}; {accepted}")
    if arr.ndim == 2:
        layout, hwc = "HW", arr[:, :, None]
    elif arr.ndim == 3 and arr.shape[2] in (1, 2, 3, 4):
        layout, hwc = "HWC", arr
    else:
        raise InputError(f"array of shape {arr.shape} is not an image; {accepted}")
    if arr.size == 0:
        raise InputError(f"array of shape {arr.shape} is empty; {accepted}")
    kind, size = arr.dtype.kind, arr.dtype.itemsize
    if kind == "b":
        # A mask: 0/255 in 8 bits is exact, like Pillow's mode "1".
        return _planar_from_hwc(hwc.astype(np.uint8) * np.uint8(255), 255.0, 8, layout)
    if kind == "u" and size == 1:
        return _planar_from_hwc(hwc, 255.0, 8, layout)
    if kind == "u" and size == 2:
        return _planar_from_hwc(hwc.astype(np.uint16), 65535.0, 16, layout)  # astype: native byte order
    if kind == "f":
        return _planar_from_hwc(hwc.astype(np.float32), None, 32, layout)
    raise InputError(f"array dtype {arr.dtype} is not supported; {accepted}")


def planar_to_numpy(image: Planar) -> np.ndarray:
    """Inverse of :func:`numpy_to_planar`: uint8, uint16 or float32 (clamped to [0, 1]) by bit depth.

    Alpha comes back as the last channel; ``layout == "HW"`` with one channel and no alpha gives a 2-D array.
    """
    _check_planar(image)
    chw = _stacked(image)
    if image.bit_depth == 32:
        arr = np.ascontiguousarray(chw.clamp_(0.0, 1.0).numpy().transpose(1, 2, 0))
    else:
        arr = _quantise(chw, image.bit_depth)
    if image.layout == "HW" and arr.shape[2] == 1:
        return arr[:, :, 0]
    return arr


# --------------------------------------------------------------------------------------------------
# PIL images


def _has_transparency(img: Image.Image) -> bool:
    if "transparency" in img.info:
        return True
    return img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA"


def pil_to_planar(img: Image.Image) -> Planar:
    """PIL image -> Planar, taken as-is: EXIF orientation is applied only by :func:`read_image`.

    Grey modes stay one channel, everything else becomes RGB; alpha (including palette or colour-key
    transparency) is separated. "I;16*" and "I" give bit_depth 16 ("I" is clipped to 0..65535), "F" gives 32.
    """
    mode = img.mode
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(img)
        if mode == "I" and arr.size and (int(arr.min()) < 0 or int(arr.max()) > 65535):
            # Clipping would silently flatten everything beyond 16 bits; the caller has to choose a scaling.
            raise InputError(
                f"32-bit integer image (mode 'I') with values {int(arr.min())}..{int(arr.max())}, beyond 16 bits "
                "(0..65535); rescale it to 0..65535 or to float in [0, 1] first"
            )
        grey = arr.astype(np.uint16)
        key = img.info.get("transparency")
        if isinstance(key, int):
            # 16-bit grey with a tRNS colour key: pixels equal to the key are fully transparent.
            alpha = np.where(grey == key, 0, 65535).astype(np.uint16)
            return _planar_from_hwc(np.stack([grey, alpha], axis=2), 65535.0, 16)
        return _planar_from_hwc(grey[:, :, None], 65535.0, 16)
    if mode == "F":
        return _planar_from_hwc(np.asarray(img, dtype=np.float32)[:, :, None], None, 32)
    if mode in ("1", "L"):
        target = "LA" if mode == "L" and _has_transparency(img) else "L"
    elif mode in ("LA", "La"):
        target = "LA"
    elif mode in ("RGBA", "RGBa", "PA"):
        target = "RGBA"
    else:  # P, RGB, RGBX, CMYK, YCbCr, LAB, HSV, ...
        target = "RGBA" if mode in ("P", "RGB") and _has_transparency(img) else "RGB"
    try:
        converted = img if img.mode == target else img.convert(target)
    except (ValueError, OSError) as e:
        raise InputError(f"PIL image mode {mode!r} cannot be converted to {target}: {e}; convert it first") from e
    arr = np.asarray(converted)
    return _planar_from_hwc(arr if arr.ndim == 3 else arr[:, :, None], 255.0, 8)


def planar_to_pil(image: Planar) -> Image.Image:
    """Planar -> PIL image: 8-bit L/LA/RGB/RGBA, or "I;16" for 16-bit grey without alpha.

    16-bit colour or grey+alpha has no PIL mode and is reduced to 8 bits with a warning; float images
    (bit_depth 32) always become 8-bit, without a warning.
    """
    _check_planar(image)
    if image.bit_depth == 16 and image.color.shape[0] == 1 and image.alpha is None:
        return Image.fromarray(_quantise(_stacked(image), 16)[:, :, 0])
    if image.bit_depth == 16:
        warnings.warn(
            "PIL has no 16-bit colour or grey+alpha mode: the image was reduced to 8 bits "
            "(use write_image with a .png path to keep 16 bits)",
            UserWarning,
            stacklevel=2,
        )
    arr = _quantise(_stacked(image), 8)
    return Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr)


# --------------------------------------------------------------------------------------------------
# 16-bit PNG codec (Pillow keeps 16-bit grey only)

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel
_PNG_COLOR_TYPE = {c: t for t, c in _PNG_CHANNELS.items()}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_NO_INTERLACE = ((0, 0, 1, 1),)
_IDAT_SIZE = 1 << 20


@dataclass
class _Png16:
    pixels: np.ndarray  # uint16 (H, W, C), native byte order
    exif: bytes | None  # body of the eXIf chunk
    has_text: bool  # text chunks may hold EXIF/XMP orientation that only Pillow parses


def _pass_sizes(width: int, height: int, interlace: bool) -> Iterable[tuple[int, int, int, int, int, int]]:
    """(x0, y0, dx, dy, pass width, pass height) of every non-empty pass."""
    for x0, y0, dx, dy in _ADAM7 if interlace else _NO_INTERLACE:
        pw, ph = max(0, -(-(width - x0) // dx)), max(0, -(-(height - y0) // dy))
        if pw and ph:
            yield x0, y0, dx, dy, pw, ph


def _png_chunks(data: bytes, name: str) -> list[tuple[bytes, memoryview]]:
    """Every chunk up to IEND, CRCs verified."""
    view = memoryview(data)
    chunks: list[tuple[bytes, memoryview]] = []
    pos = len(_PNG_SIGNATURE)
    truncated = f"{name}: the PNG file is truncated and could not be decoded; re-export or re-download it"
    while True:
        if pos + 12 > len(data):
            raise InputError(truncated)
        length, ctype = struct.unpack_from(">I4s", data, pos)
        end = pos + 12 + length
        if end > len(data):
            raise InputError(truncated)
        body = view[pos + 8 : end - 4]
        (crc,) = struct.unpack_from(">I", data, end - 4)
        if zlib.crc32(body, zlib.crc32(ctype)) != crc:
            raise InputError(
                f"{name}: PNG chunk {ctype.decode('latin-1')!r} fails its CRC check, so the file is corrupt and "
                "could not be decoded; re-export or re-download it"
            )
        chunks.append((ctype, body))
        pos = end
        if ctype == b"IEND":
            return chunks


def _decode_png16(data: bytes, name: str) -> _Png16:
    """Decode a 16-bit grey, grey+alpha, RGB or RGBA PNG (Adam7 included) to uint16 (H, W, C)."""
    if not data.startswith(_PNG_SIGNATURE):
        raise InputError(f"{name}: not a PNG file (bad signature); it could not be decoded")
    chunks = _png_chunks(data, name)
    if chunks[0][0] != b"IHDR" or len(chunks[0][1]) != 13:
        raise InputError(f"{name}: PNG without a valid IHDR chunk could not be decoded; the file is corrupt")
    width, height, depth, ctype, compression, filtering, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    if depth != 16 or ctype not in _PNG_CHANNELS or compression or filtering or interlace > 1 or not width * height:
        raise InputError(
            f"{name}: PNG header (bit depth {depth}, colour type {ctype}, {width}x{height}, "
            f"interlace {interlace}) is not a valid 16-bit image; it could not be decoded"
        )
    limit = Image.MAX_IMAGE_PIXELS
    if limit and width * height > 2 * limit:  # the same guard Pillow applies to every other file
        raise InputError(
            f"{name}: {width}x{height} pixels exceeds the decompression-bomb limit; "
            "raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file"
        )
    channels = _PNG_CHANNELS[ctype]
    bpp = 2 * channels
    passes = list(_pass_sizes(width, height, bool(interlace)))
    needed = sum(ph * (pw * bpp + 1) for *_, pw, ph in passes)
    inflater = zlib.decompressobj()
    try:
        # One byte more than the pixels need: tells trailing junk (tolerated, as libpng does) from an
        # input that ran out, and keeps a hostile stream from inflating beyond the image's size.
        raw = inflater.decompress(b"".join(body for kind, body in chunks if kind == b"IDAT"), needed + 1)
    except zlib.error as e:
        raise InputError(f"{name}: PNG image data is corrupt ({e}) and could not be decoded") from e
    if len(raw) <= needed and not inflater.eof:
        raise InputError(f"{name}: PNG image data is truncated and could not be decoded; re-export it")
    if len(raw) < needed:
        raise InputError(f"{name}: PNG image data is shorter than its header says; the file could not be decoded")
    pixels = np.empty((height, width, channels), dtype=np.uint16)
    pos = 0
    for x0, y0, dx, dy, pw, ph in passes:
        stride = pw * bpp
        size = ph * (stride + 1)
        lines = np.frombuffer(raw, dtype=np.uint8, count=size, offset=pos).reshape(ph, stride + 1)
        pos += size
        filters = lines[:, 0]
        if filters.max() > 4:
            raise InputError(f"{name}: PNG uses an unknown scanline filter ({filters.max()}); the file is corrupt")
        unfiltered = _unfilter(lines[:, 1:], filters, bpp)
        pixels[y0::dy, x0::dx] = unfiltered.view(">u2").reshape(ph, pw, channels)
    kinds = {kind for kind, _ in chunks}
    key = next((body for kind, body in chunks if kind == b"tRNS"), None)
    if ctype == 2 and key is not None and len(key) == 6:
        # RGB colour key: that exact colour is transparent, everything else opaque.
        opaque = np.any(pixels != np.frombuffer(key, dtype=">u2"), axis=2)
        pixels = np.concatenate([pixels, np.where(opaque, 65535, 0).astype(np.uint16)[:, :, None]], axis=2)
    exif = next((bytes(body) for kind, body in chunks if kind == b"eXIf"), None)
    return _Png16(pixels, exif, bool(kinds & {b"tEXt", b"zTXt", b"iTXt"}))


def _unfilter(lines: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Undo PNG scanline filters: (rows, stride) filtered bytes -> raw bytes."""
    if not np.isin(filters, (3, 4)).any():
        # None / Sub / Up only: each row is one vector operation.
        out = np.empty_like(lines)
        prev = np.zeros(lines.shape[1], dtype=np.uint8)
        for y, kind in enumerate(filters.tolist()):
            line = lines[y]
            if kind == 1:  # running sum per byte lane; uint8 arithmetic wraps mod 256 as PNG requires
                line = np.cumsum(line.reshape(-1, bpp), axis=0, dtype=np.uint8).reshape(-1)
            elif kind == 2:
                line = line + prev
            out[y] = line
            prev = out[y]
        return out
    return _unfilter_wavefront(lines, filters, bpp)


def _unfilter_wavefront(lines: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
    """Average/Paeth need the left, upper and upper-left pixels already decoded: sweep anti-diagonals.

    All pixels on one anti-diagonal (x + y = t) depend only on the two previous diagonals, so each step
    is a handful of vector operations and the loop runs width + height times instead of once per pixel.
    """
    rows, stride = lines.shape
    width = stride // bpp
    # One zero pixel left of every row and one zero row on top make every neighbour exist (PNG defines
    # out-of-image neighbours as 0). Flattened, pixel (y, x) sits at (y + 1) * (width + 1) + x + 1, so
    # the pixels of one diagonal are a strided slice with step ``width``.
    src = np.zeros((rows + 1, width + 1, bpp), dtype=np.int16)
    src[1:, 1:] = lines.reshape(rows, width, bpp)
    src = src.reshape(-1, bpp)
    out = np.zeros_like(src)
    kinds = filters.astype(np.intp)
    up = width + 1
    for t in range(width + rows - 1):
        y0, y1 = max(0, t - width + 1), min(rows - 1, t)
        p0 = (y0 + 1) * up + (t - y0) + 1
        p1 = (y1 + 1) * up + (t - y1) + 1
        a = out[p0 - 1 : p1 : width]  # left
        b = out[p0 - up : p1 - up + 1 : width]  # up
        c = out[p0 - up - 1 : p1 - up : width]  # up-left
        pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
        paeth = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
        predictor = np.choose(kinds[y0 : y1 + 1, None], (np.zeros_like(a), a, b, (a + b) >> 1, paeth))
        out[p0 : p1 + 1 : width] = (src[p0 : p1 + 1 : width] + predictor) & 0xFF
    return out.reshape(rows + 1, width + 1, bpp)[1:, 1:].astype(np.uint8).reshape(rows, stride)


def _filter(raw: np.ndarray, bpp: int, kind: int | None) -> np.ndarray:
    """Filter (rows, stride) raw bytes; returns (rows, stride + 1) with the filter byte first.

    ``kind`` None chooses None or Up per row (smaller sum of absolute signed residuals); both keep
    decoding on the fast path of :func:`_unfilter`. 0-4 force one filter for every row.
    """
    x = raw.astype(np.int16)
    a = np.zeros_like(x)
    a[:, bpp:] = x[:, :-bpp]
    b = np.zeros_like(x)
    b[1:] = x[:-1]
    if kind is None:
        up = (x - b).astype(np.uint8)
        cost_none = np.abs(raw.view(np.int8).astype(np.int32)).sum(axis=1)
        cost_up = np.abs(up.view(np.int8).astype(np.int32)).sum(axis=1)
        use_up = cost_up < cost_none
        kinds = np.where(use_up, 2, 0).astype(np.uint8)
        body = np.where(use_up[:, None], up, raw)
    else:
        if kind == 0:
            predictor = np.zeros_like(x)
        elif kind == 1:
            predictor = a
        elif kind == 2:
            predictor = b
        else:
            c = np.zeros_like(x)
            c[1:, bpp:] = x[:-1, :-bpp]
            if kind == 3:
                predictor = (a + b) >> 1
            elif kind == 4:
                pa, pb, pc = np.abs(b - c), np.abs(a - c), np.abs(a + b - 2 * c)
                predictor = np.where((pa <= pb) & (pa <= pc), a, np.where(pb <= pc, b, c))
            else:
                raise ValueError(f"PNG filter type must be 0-4 or None, got {kind!r}")
        kinds = np.full(len(raw), kind, dtype=np.uint8)
        body = ((x - predictor) & 0xFF).astype(np.uint8)
    return np.concatenate([kinds[:, None], body], axis=1)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(body, zlib.crc32(kind)))


def _encode_png16(pixels: np.ndarray, *, filter_type: int | None = None, interlace: bool = False) -> bytes:
    """uint16 (H, W, C) with C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) -> 16-bit PNG bytes."""
    height, width, channels = pixels.shape
    big_endian = np.ascontiguousarray(pixels, dtype=">u2")
    parts = []
    for x0, y0, dx, dy, pw, ph in _pass_sizes(width, height, interlace):
        sub = np.ascontiguousarray(big_endian[y0::dy, x0::dx])
        parts.append(_filter(sub.view(np.uint8).reshape(ph, pw * channels * 2), 2 * channels, filter_type).tobytes())
    compressed = zlib.compress(b"".join(parts), 6)
    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOR_TYPE[channels], 0, 0, int(interlace))
    idat = [_png_chunk(b"IDAT", compressed[i : i + _IDAT_SIZE]) for i in range(0, len(compressed), _IDAT_SIZE)]
    return b"".join([_PNG_SIGNATURE, _png_chunk(b"IHDR", header), *idat, _png_chunk(b"IEND", b"")])


# --------------------------------------------------------------------------------------------------
# Reading


def _orientation(img: Image.Image) -> int:
    """EXIF orientation (1-8) of an opened image; 1 when absent or unreadable."""
    try:
        value = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # malformed EXIF must not make an otherwise good image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _orient(t: torch.Tensor, orientation: int) -> torch.Tensor:
    """Make (C, H, W) pixels stored with EXIF ``orientation`` upright."""
    if orientation == 2:
        t = t.flip(-1)
    elif orientation == 3:
        t = t.flip(-2, -1)
    elif orientation == 4:
        t = t.flip(-2)
    elif orientation == 5:
        t = t.transpose(-2, -1)
    elif orientation == 6:
        t = torch.rot90(t, -1, dims=(-2, -1))  # 90 degrees clockwise
    elif orientation == 7:
        t = t.transpose(-2, -1).flip(-2, -1)
    elif orientation == 8:
        t = torch.rot90(t, 1, dims=(-2, -1))  # 90 degrees counter-clockwise
    return t.contiguous()


def _apply_orientation(image: Planar, orientation: int) -> Planar:
    if orientation == 1:
        return image
    alpha = None if image.alpha is None else _orient(image.alpha, orientation)
    return Planar(_orient(image.color, orientation), alpha, image.bit_depth, image.layout)


def _read_png16(data: bytes, path: Path) -> Planar:
    png = _decode_png16(data, str(path))
    orientation = 1
    if png.exif is not None:
        exif = Image.Exif()
        try:
            exif.load(png.exif)
            orientation = int(exif.get(_ORIENTATION_TAG, 1))
        except Exception:  # malformed EXIF: keep the pixels as stored
            orientation = 1
    elif png.has_text:
        # Orientation may hide in a "Raw profile type exif" or XMP text chunk, which Pillow knows how to read.
        try:
            with Image.open(io.BytesIO(data)) as img:
                orientation = _orientation(img)
        except Exception:
            orientation = 1
    image = _planar_from_hwc(png.pixels, 65535.0, 16)
    return _apply_orientation(image, orientation if 1 <= orientation <= 8 else 1)


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def read_bytes(path: str | os.PathLike, what: str = "image") -> bytes:
    """The bytes of a regular file, read once. Named pipes, devices and sockets are refused without being opened:
    opening a pipe blocks until something writes to it, and reading a device may never end."""
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"{p}: file not found; check the path (relative paths start at {os.getcwd()})") from None
    except OSError as e:
        raise InputError(f"{p}: could not be read ({e}); check the path and its permissions") from e
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{p} is a directory, not an {what} file; pass an {what} file")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(
            f"{p} is {_file_kind(st.st_mode)}, not a regular file; restorekit reads {what}s from files: save the "
            f"{what} to a file first"
        )
    try:
        with open(p, "rb") as f:
            return f.read()
    except PermissionError as e:
        raise InputError(f"{p}: could not be read ({e}); check the file's permissions") from e
    except OSError as e:
        raise InputError(f"{p}: could not be read ({e}); check that the file is readable") from e


def read_image(path: str | os.PathLike) -> Planar:
    """Decode an image file completely and return it upright (EXIF orientation applied).

    The format is recognised from the content, not the suffix. The file is opened once and must be a regular
    file. Raises InputError for a missing, unreadable, truncated, corrupt or animated (multi-frame) file.
    """
    p = Path(path)
    data = read_bytes(p)
    if not data:
        raise InputError(f"{p}: the file is empty (0 bytes), so it holds no image; re-export or re-download it")
    head = data[:29]
    if (
        len(head) == 29
        and head[:8] == _PNG_SIGNATURE
        and head[12:16] == b"IHDR"
        and head[24:26]
        in (
            b"\x10\x02",
            b"\x10\x04",
            b"\x10\x06",
        )
    ):  # 16-bit colour or grey+alpha: Pillow would truncate it to 8 bits
        return _read_png16(data, p)
    try:
        with Image.open(io.BytesIO(data)) as img:
            frames = int(getattr(img, "n_frames", 1) or 1)
            # An MPO (a camera JPEG with extra pictures) is a photo first: its first frame is the photo itself.
            if frames > 1 and img.format != "MPO":
                raise InputError(
                    f"{p}: a {img.format} file with {frames} frames (an animation or a multi-page file); restorekit "
                    "restores single images and would keep only the first frame. Extract the frames (e.g. with "
                    "PIL.ImageSequence) and restore each, or pass the one frame you want as a PIL image"
                )
            img.load()  # Pillow decodes lazily; a truncated file must fail here, not later
            orientation = _orientation(img)
            image = pil_to_planar(img)
    except InputError as e:
        if str(e).startswith(str(p)):
            raise
        raise InputError(f"{p}: {e}") from e
    except Image.DecompressionBombError as e:
        raise InputError(f"{p}: {e}; raise PIL.Image.MAX_IMAGE_PIXELS if you trust this file") from e
    except MemoryError:
        raise
    except Exception as e:  # Pillow signals corrupt data with many exception types
        raise InputError(
            f"{p}: could not be decoded as an image ({type(e).__name__}: {e}); the file is truncated, "
            "corrupt or not an image: re-export or re-download it"
        ) from e
    return _apply_orientation(image, orientation)


# --------------------------------------------------------------------------------------------------
# Writing


@functools.lru_cache(maxsize=1)
def _new_file_mode() -> int:
    # mkstemp creates 0600 files; give the result the permissions a plain open() would. Reading the
    # umask means setting it, so do it once.
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def _save(f: BinaryIO, image: Planar, fmt: str, quality: int, name: str) -> None:
    """Encode ``image`` as ``fmt`` into the open file ``f``, warning about whatever the format loses."""
    has_alpha = image.alpha is not None
    grey = image.color.shape[0] == 1
    if has_alpha and fmt in ("JPEG", "BMP"):
        warnings.warn(f"{name}: {fmt} cannot store alpha; the alpha channel was dropped", UserWarning, stacklevel=3)
        has_alpha = False
    bits = 8
    if image.bit_depth in (16, 32):
        if fmt == "PNG" or (fmt == "TIFF" and grey and not has_alpha):
            bits = 16
        elif image.bit_depth == 16:
            what = "16-bit colour" if fmt == "TIFF" else "16 bits per sample"
            warnings.warn(
                f"{name}: {fmt} cannot store {what}; the image was quantised to 8 bits (write .png to keep 16 bits)",
                UserWarning,
                stacklevel=3,
            )
    pixels = _quantise(_stacked(image, alpha=has_alpha), bits)
    if bits == 16 and not (grey and not has_alpha):
        f.write(_encode_png16(pixels))  # Pillow would truncate these to 8 bits
        return
    pil = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    options: dict[str, object] = {}
    if fmt == "JPEG":
        options = {"quality": quality, "subsampling": 0}  # 4:4:4: restored detail is not thrown away in chroma
    elif fmt == "WEBP":
        options = {"quality": quality}
    elif fmt == "PNG":
        options = {"compress_level": 6}
    elif fmt == "TIFF":
        options = {"compression": "tiff_lzw"}
    try:
        pil.save(f, format=fmt, **options)
    except (OSError, ValueError) as e:  # e.g. WEBP's 16383-pixel limit
        raise InputError(f"{name}: could not be encoded as {fmt} ({e})") from e


def write_image(path: str | os.PathLike, image: Planar, *, overwrite: bool = True, quality: int = 95) -> Path:
    """Write ``image`` atomically in the format named by the suffix; returns the path written.

    16-bit images stay 16-bit in PNG (and grey TIFF); ``quality`` (1-100) applies to JPEG and WEBP.
    """
    target = Path(path)
    suffix = target.suffix.lower()
    fmt = _FORMATS.get(suffix)
    if fmt is None:
        raise InputError(
            f"{target}: unknown image extension {suffix or '(none)'!r}; use one of {', '.join(IMAGE_EXTENSIONS)}"
        )
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not 1 <= quality <= 100:
        raise InputError(f"{target}: quality must be an integer from 1 to 100, got {quality!r}")
    _check_planar(image)
    if target.is_dir():
        raise InputError(f"{target} is a directory; pass a file path ending in one of {', '.join(IMAGE_EXTENSIONS)}")
    if not overwrite and target.exists():
        raise _exists_error(target)
    try:
        mode = target.stat().st_mode & 0o7777  # replacing a file keeps its permissions
    except OSError:
        mode = _new_file_mode()

    def write(f: BinaryIO) -> None:
        _save(f, image, fmt, int(quality), str(target))

    atomic_write(target, write, overwrite=overwrite, mode=mode)
    return target


def atomic_write(
    target: Path, write: Callable[[BinaryIO], object], *, overwrite: bool, mode: int | None = None, sync: bool = True
) -> None:
    """Create ``target`` through a temporary file beside it (``.<name>.<random>.tmp<suffix>``), flushed to disk and
    then renamed: whatever happens, the target is either untouched or complete. ``write(f)`` fills the open file.
    The one writer of every file restorekit produces (images, weights, tables, records, checkpoints, logs).

    Without ``overwrite`` an existing target is never replaced, even one that appears while writing. ``mode``:
    the file's permissions (default: what a plain ``open()`` would give). ``sync=False`` skips the fsync before
    the rename, for files that are rewritten often and cheap to lose on a power cut (the rename stays atomic). A
    full disk, a read-only folder or missing permissions raise :class:`~restorekit.errors.OutputError` naming
    the target."""
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        prefix, suffix = "." + target.name + ".", ".tmp" + target.suffix
        fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=target.parent)
        tmp = Path(tmp_name)
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        try:
            os.chmod(tmp, _new_file_mode() if mode is None else mode)
        except OSError:
            pass  # permissions are cosmetic; the data is what matters
        if overwrite:
            os.replace(tmp, target)
        else:
            _place_new(tmp, target)
        tmp = None
    except OutputExistsError:
        raise
    except OSError as e:
        raise OutputError(_write_failure(target, e)) from e
    finally:
        if tmp is not None:
            try:
                tmp.unlink()
            except OSError:
                pass


def _write_failure(target: Path, err: OSError) -> str:
    import errno

    advice = {
        errno.ENOSPC: "the disk is full: free some space or write elsewhere",
        errno.EDQUOT: "the disk quota is used up: free some space or write elsewhere",
        errno.EFBIG: "the file is larger than this system or its limits allow: write elsewhere",
        errno.EROFS: "the file system is read-only: choose an output folder on a writable disk",
        errno.EACCES: "permission denied: choose a folder you can write to, or fix its permissions",
        errno.EPERM: "permission denied: choose a folder you can write to, or fix its permissions",
    }.get(err.errno, "check the folder exists, is writable and has free space")
    return f"could not write {target} ({err.strerror or err}); {advice}. Nothing was written there"


def output_clashes(
    plan: Iterable[tuple[str, str | os.PathLike]], inputs: Iterable[str | os.PathLike] = ()
) -> dict[int, str]:
    """Which planned writes would lose data. ``plan`` lists ``(source, target)``; the result maps the position of
    each bad entry to the reason: its target is an input's own file, or an earlier source already writes there
    (only the last would survive). One check for every runner that writes many outputs (the API and
    ``restorekit run``)."""
    protected = {Path(p).resolve() for p in inputs}
    first: dict[Path, str] = {}
    clashes: dict[int, str] = {}
    for i, (source, target) in enumerate(plan):
        resolved = Path(target).resolve()
        if resolved in protected:
            clashes[i] = f"output {target} would overwrite an input; choose another output folder"
        elif resolved in first:
            clashes[i] = f"output {target} is also the output of {first[resolved]}; rename one"
        else:
            first[resolved] = source
    return clashes


def _exists_error(target: Path) -> OutputExistsError:
    return OutputExistsError(f"{target} already exists; pass overwrite=True (--overwrite) to replace it")


def _place_new(tmp: Path, target: Path) -> None:
    """Move ``tmp`` to ``target`` unless ``target`` appeared meanwhile (a hard link never overwrites)."""
    try:
        os.link(tmp, target)
    except FileExistsError as e:
        raise _exists_error(target) from e
    except OSError:  # no hard links on this file system: check, then rename
        if target.exists():
            raise _exists_error(target) from None
        os.replace(tmp, target)
        return
    tmp.unlink()


# --------------------------------------------------------------------------------------------------
# Colour spaces

# ITU-R BT.601 studio swing, as MATLAB's rgb2ycbcr on double images: rows give Y, Cb, Cr (x 255).
_YCC_MATRIX = (
    torch.tensor([[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=torch.float64)
    / 255.0
)
_YCC_OFFSET = torch.tensor([16.0, 128.0, 128.0], dtype=torch.float64) / 255.0
_YCC_INVERSE = torch.linalg.inv(_YCC_MATRIX)  # float64 once, so the inverse is exact to float rounding
_GREY_WEIGHTS = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)


def _check_three_channels(x: torch.Tensor, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.ndim < 3 or x.shape[-3] != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{what} needs a floating-point tensor of shape (..., 3, H, W), got {shape}")


def _mix(matrix: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", matrix.to(x.device, x.dtype), x)


def rgb_to_ycbcr(x: torch.Tensor) -> torch.Tensor:
    """RGB (..., 3, H, W) in [0, 1] -> BT.601 studio-swing Y, Cb, Cr in [0, 1] units (MATLAB ``rgb2ycbcr``)."""
    _check_three_channels(x, "rgb_to_ycbcr")
    return _mix(_YCC_MATRIX, x) + _YCC_OFFSET.to(x.device, x.dtype)[:, None, None]


def ycbcr_to_rgb(x: torch.Tensor) -> torch.Tensor:
    """Exact inverse of :func:`rgb_to_ycbcr` (no rounding, no clamping)."""
    _check_three_channels(x, "ycbcr_to_rgb")
    return _mix(_YCC_INVERSE, x - _YCC_OFFSET.to(x.device, x.dtype)[:, None, None])


def rgb_to_grey(x: torch.Tensor) -> torch.Tensor:
    """RGB (..., 3, H, W) -> luma (..., 1, H, W) with BT.601 weights 0.299/0.587/0.114, as Pillow's "L"."""
    _check_three_channels(x, "rgb_to_grey")
    return torch.einsum("j,...jhw->...hw", _GREY_WEIGHTS.to(x.device, x.dtype), x).unsqueeze(-3)
