"""The 16-bit PNG codec: grey, grey+alpha, RGB and RGBA at 16 bits per sample, Adam7 included.

Pillow holds 16-bit colour in no mode and silently drops 16-bit RGB/RGBA PNGs to 8 bits, so
:mod:`restorekit.image` reads and writes those files with this small zlib + numpy codec instead.
:func:`decode_png16` checks every chunk's CRC, refuses truncated or over-long image data and applies the
same decompression-bomb limit as Pillow; :func:`encode_png16` writes plain, valid files (filter None or Up
per row by default, optionally one fixed filter and Adam7 interlacing). Both work on uint16 ``(H, W, C)``
arrays in native byte order.

>>> pixels = np.arange(24, dtype=np.uint16).reshape(2, 4, 3) * 2000
>>> bool((decode_png16(encode_png16(pixels), "x.png").pixels == pixels).all())
True
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from .errors import InputError

__all__ = [
    "PNG_SIGNATURE",
    "Png16",
    "needs_png16",
    "decode_png16",
    "encode_png16",
    "filter_scanlines",
    "unfilter_scanlines",
]

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}  # colour type -> samples per pixel
_PNG_COLOR_TYPE = {c: t for t, c in _PNG_CHANNELS.items()}
# Adam7 passes: first column, first row, column step, row step.
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))
_NO_INTERLACE = ((0, 0, 1, 1),)
_IDAT_SIZE = 1 << 20


@dataclass
class Png16:
    """What :func:`decode_png16` found: the pixels, and where an EXIF orientation may be."""

    pixels: np.ndarray  # uint16 (H, W, C), native byte order
    exif: bytes | None  # body of the eXIf chunk
    has_text: bool  # text chunks may hold EXIF/XMP orientation that only Pillow parses


def needs_png16(data: bytes) -> bool:
    """Whether ``data`` starts a PNG with 16-bit colour or grey+alpha, which Pillow would reduce to 8 bits.

    16-bit grey without alpha is not among them: Pillow keeps it (mode "I;16")."""
    head = data[:29]
    return (
        len(head) == 29
        and head[:8] == PNG_SIGNATURE
        and head[12:16] == b"IHDR"
        and head[24:26] in (b"\x10\x02", b"\x10\x04", b"\x10\x06")  # bit depth 16; RGB, grey+alpha, RGBA
    )


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
    pos = len(PNG_SIGNATURE)
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


def decode_png16(data: bytes, name: str) -> Png16:
    """Decode a 16-bit grey, grey+alpha, RGB or RGBA PNG (Adam7 included) to uint16 (H, W, C)."""
    if not data.startswith(PNG_SIGNATURE):
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
        unfiltered = unfilter_scanlines(lines[:, 1:], filters, bpp)
        pixels[y0::dy, x0::dx] = unfiltered.view(">u2").reshape(ph, pw, channels)
    kinds = {kind for kind, _ in chunks}
    key = next((body for kind, body in chunks if kind == b"tRNS"), None)
    if ctype == 2 and key is not None and len(key) == 6:
        # RGB colour key: that exact colour is transparent, everything else opaque.
        opaque = np.any(pixels != np.frombuffer(key, dtype=">u2"), axis=2)
        pixels = np.concatenate([pixels, np.where(opaque, 65535, 0).astype(np.uint16)[:, :, None]], axis=2)
    exif = next((bytes(body) for kind, body in chunks if kind == b"eXIf"), None)
    return Png16(pixels, exif, bool(kinds & {b"tEXt", b"zTXt", b"iTXt"}))


def unfilter_scanlines(lines: np.ndarray, filters: np.ndarray, bpp: int) -> np.ndarray:
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


def filter_scanlines(raw: np.ndarray, bpp: int, kind: int | None) -> np.ndarray:
    """Filter (rows, stride) raw bytes; returns (rows, stride + 1) with the filter byte first.

    ``kind`` None chooses None or Up per row (smaller sum of absolute signed residuals); both keep
    decoding on the fast path of :func:`unfilter_scanlines`. 0-4 force one filter for every row.
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


def encode_png16(pixels: np.ndarray, *, filter_type: int | None = None, interlace: bool = False) -> bytes:
    """uint16 (H, W, C) with C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA) -> 16-bit PNG bytes."""
    height, width, channels = pixels.shape
    big_endian = np.ascontiguousarray(pixels, dtype=">u2")
    parts = []
    for x0, y0, dx, dy, pw, ph in _pass_sizes(width, height, interlace):
        sub = np.ascontiguousarray(big_endian[y0::dy, x0::dx])
        parts.append(
            filter_scanlines(sub.view(np.uint8).reshape(ph, pw * channels * 2), 2 * channels, filter_type).tobytes()
        )
    compressed = zlib.compress(b"".join(parts), 6)
    header = struct.pack(">IIBBBBB", width, height, 16, _PNG_COLOR_TYPE[channels], 0, 0, int(interlace))
    idat = [_png_chunk(b"IDAT", compressed[i : i + _IDAT_SIZE]) for i in range(0, len(compressed), _IDAT_SIZE)]
    return b"".join([PNG_SIGNATURE, _png_chunk(b"IHDR", header), *idat, _png_chunk(b"IEND", b"")])


# --------------------------------------------------------------------------------------------------
