"""Images in and out: files, PIL images and numpy arrays to and from planar float tensors.

Everything meets in :class:`Planar`: colour as a float32 ``(C, H, W)`` tensor in ``[0, 1]`` (C = 1 grey
or 3 RGB), alpha kept apart, and the bit depth the pixels came with so that they can leave the same way.

* :func:`read_image` decodes the whole file up front, so a truncated or corrupt file fails here with an
  :class:`~restorekit.errors.InputError` rather than half-way through a model. EXIF orientation is applied
  (pixels come back upright). Files are recognised by content, not by suffix. :func:`read_array` is the
  same decoder without the conversion to float: the integer pixels as stored, upright (training reads
  its images with it, so it sees what evaluation sees).
* Pillow holds 16-bit colour in no mode, and silently drops 16-bit RGB/RGBA PNGs to 8 bits, so PNGs with
  16-bit colour or grey+alpha go through :mod:`restorekit.png16` instead, in both directions.
* :func:`write_image` picks the format from the suffix and writes atomically (temporary file in the same
  folder, then :func:`os.replace`): a failed write never leaves a half-written target behind.
* The colour conversions live in :mod:`restorekit.color`; :func:`rgb_to_ycbcr`, :func:`ycbcr_to_rgb` and
  :func:`rgb_to_grey` can be imported from here too.

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
import tempfile
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from .color import rgb_to_grey, rgb_to_ycbcr, ycbcr_to_rgb
from .errors import InputError, OutputError, OutputExistsError
from .png16 import decode_png16, encode_png16, needs_png16

__all__ = [
    "IMAGE_EXTENSIONS",
    "Planar",
    "read_image",
    "read_array",
    "write_image",
    "pil_to_planar",
    "planar_to_pil",
    "numpy_to_planar",
    "planar_to_numpy",
    "finish_in_memory",
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


def _planar_from_array(arr: np.ndarray) -> Planar:
    """(H, W, C) uint8, uint16 or float32 array, as :func:`read_array` gives -> Planar of bit depth 8, 16 or 32."""
    if arr.dtype == np.uint8:
        return _planar_from_hwc(arr, 255.0, 8)
    if arr.dtype == np.uint16:
        return _planar_from_hwc(arr, 65535.0, 16)
    return _planar_from_hwc(arr, None, 32)


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


def finish_in_memory(
    result: Planar,
    from_planar: Callable[[Planar], Any],
    output: str | os.PathLike | None,
    overwrite: bool,
    value_range: tuple[float, float] | None,
) -> Any:
    """A restored in-memory image (a numpy array's or PIL image's) as ``run`` returns it: written to ``output``
    when given, converted back by ``from_planar``, float arrays mapped back to ``value_range``."""
    if output is not None:
        write_image(output, result, overwrite=overwrite)
    out = from_planar(result)
    if value_range is not None and isinstance(out, np.ndarray) and out.dtype.kind == "f":
        lo, hi = value_range
        out = out * np.float32(hi - lo) + np.float32(lo)
    return out


def _has_transparency(img: Image.Image) -> bool:
    if "transparency" in img.info:
        return True
    return img.mode == "P" and img.palette is not None and img.palette.mode == "RGBA"


def _pil_array(img: Image.Image) -> np.ndarray:
    """PIL image -> (H, W, C) array of :func:`pil_to_planar`: uint8, uint16 ("I;16*", "I") or float32 ("F")."""
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
            return np.stack([grey, alpha], axis=2)
        return grey[:, :, None]
    if mode == "F":
        return np.asarray(img, dtype=np.float32)[:, :, None]
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
    return arr if arr.ndim == 3 else arr[:, :, None]


def pil_to_planar(img: Image.Image) -> Planar:
    """PIL image -> Planar, taken as-is: EXIF orientation is applied only by :func:`read_image`.

    Grey modes stay one channel, everything else becomes RGB; alpha (including palette or colour-key
    transparency) is separated. "I;16*" and "I" give bit_depth 16 ("I" is clipped to 0..65535), "F" gives 32.
    """
    return _planar_from_array(_pil_array(img))


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
# Reading


def _orientation(img: Image.Image) -> int:
    """EXIF orientation (1-8) of an opened image; 1 when absent or unreadable."""
    try:
        value = int(img.getexif().get(_ORIENTATION_TAG, 1))
    except Exception:  # malformed EXIF must not make an otherwise good image unreadable
        return 1
    return value if 1 <= value <= 8 else 1


def _upright(arr: np.ndarray, orientation: int) -> np.ndarray:
    """Make (H, W, C) pixels stored with EXIF ``orientation`` upright."""
    if orientation == 2:
        arr = arr[:, ::-1]
    elif orientation == 3:
        arr = arr[::-1, ::-1]
    elif orientation == 4:
        arr = arr[::-1]
    elif orientation == 5:
        arr = arr.transpose(1, 0, 2)
    elif orientation == 6:
        arr = np.rot90(arr, -1, axes=(0, 1))  # 90 degrees clockwise
    elif orientation == 7:
        arr = arr.transpose(1, 0, 2)[::-1, ::-1]
    elif orientation == 8:
        arr = np.rot90(arr, 1, axes=(0, 1))  # 90 degrees counter-clockwise
    return np.ascontiguousarray(arr)


def _read_png16(data: bytes, path: Path) -> np.ndarray:
    png = decode_png16(data, str(path))
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
    return _upright(png.pixels, orientation if 1 <= orientation <= 8 else 1)


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


def _decode_file(path: str | os.PathLike) -> np.ndarray:
    """:func:`read_array` without its copy of Pillow's read-only buffer (what :func:`read_image` needs)."""
    p = Path(path)
    data = read_bytes(p)
    if not data:
        raise InputError(f"{p}: the file is empty (0 bytes), so it holds no image; re-export or re-download it")
    if needs_png16(data):  # 16-bit colour or grey+alpha: Pillow would truncate it to 8 bits
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
            arr = _pil_array(img)
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
    return _upright(arr, orientation)


def read_array(path: str | os.PathLike) -> np.ndarray:
    """Decode an image file completely and return its pixels upright, as the integers they are stored as.

    A writable, contiguous (H, W, C) array: C = 1 (grey), 2 (grey+alpha), 3 (RGB) or 4 (RGBA), alpha last; uint8
    for 8-bit files, uint16 for 16-bit ones, float32 for floating-point TIFF. The decoder of :func:`read_image`,
    which is this array divided by 255 or 65535 (split into colour and alpha), with the same checks and errors.

    >>> arr = read_array("photo.jpg")  # doctest: +SKIP
    >>> arr.shape, arr.dtype  # doctest: +SKIP
    ((480, 640, 3), dtype('uint8'))
    """
    arr = _decode_file(path)
    return arr if arr.flags.writeable else arr.copy()


def read_image(path: str | os.PathLike) -> Planar:
    """Decode an image file completely and return it upright (EXIF orientation applied).

    The format is recognised from the content, not the suffix. The file is opened once and must be a regular
    file. Raises InputError for a missing, unreadable, truncated, corrupt or animated (multi-frame) file.
    """
    return _planar_from_array(_decode_file(path))


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
        f.write(encode_png16(pixels))  # Pillow would truncate these to 8 bits
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
