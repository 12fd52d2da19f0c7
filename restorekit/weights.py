"""Pretrained models: build a network, load a registered model or a weight file into it, convert checkpoints.

The pieces underneath have their own modules, and their public names are importable from here as well:

- :mod:`restorekit.env`: where the caches are, the offline and trust flags, the hub endpoint and token;
- :mod:`restorekit.weightfile`: restorekit's safetensors format (``save_weights``, ``read_weights``), reading any
  checkpoint as a state dict (``read_checkpoint``), digests;
- :mod:`restorekit.fetch`: ``resolve``, a record to a verified local file (bundled, Hugging Face cache, hub,
  converted, upstream), over :mod:`restorekit.download`'s one download policy.

:func:`check_state_dict` says whether a state dict fits a network exactly, with the same errors loading gives.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from . import registry
from .env import cache_dir, hf_cache_dir, hf_endpoint, hf_token, is_offline
from .errors import ConversionError, UnknownModelError, WeightsError
from .fetch import BUNDLED_DIR as BUNDLED_DIR
from .fetch import converted_path, resolve
from .options import RunOptions, run_options
from .registry import ArchSpec, WeightRecord
from .weightfile import (
    FORMAT_VERSION,
    check_weights_path,
    git_blob_sha1_file,
    looks_like_safetensors,
    read_checkpoint,
    read_weights,
    safetensors_metadata,
    save_weights,
    sha256_file,
    strip_module_prefix,
)
from .weightfile import HEADER_KEY as HEADER_KEY

__all__ = [
    "FORMAT_VERSION",
    "cache_dir",
    "hf_cache_dir",
    "is_offline",
    "sha256_file",
    "git_blob_sha1_file",
    "save_weights",
    "read_weights",
    "read_checkpoint",
    "resolve",
    "load_model",
    "build_model",
    "check_state_dict",
    "convert",
]

# Also importable from here under the names they had when this module held them.
_hf_endpoint, _hf_token, _converted_path = hf_endpoint, hf_token, converted_path
_strip_module_prefix = strip_module_prefix

# --------------------------------------------------------------------------------------------------- models


def build_model(arch: str, config: Mapping[str, Any] | None = None) -> torch.nn.Module:
    """Build an untrained network: ``spec.build(**{**spec.default_config, **config})``."""
    spec = registry.get_arch(arch)
    return spec.build(**{**spec.default_config, **(config or {})})


def _few(keys: list[str], n: int = 5) -> str:
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "")


def _load_state(
    model: torch.nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    source: str,
    error: type[WeightsError] = WeightsError,
) -> None:
    """Load ``state_dict`` into ``model`` exactly; ``error`` naming the missing and unexpected keys and the shape
    mismatches when it does not fit."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    shapes = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys: {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {_few(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches (file vs network): {_few(shapes)}")
        raise error(f"weights from {source} do not fit the {type(model).__name__} network: " + "; ".join(parts))
    try:
        model.load_state_dict(state_dict, strict=True)
    except RuntimeError as exc:
        raise error(f"weights from {source} could not be loaded: {exc}") from exc


def check_state_dict(
    state_dict: Mapping[str, torch.Tensor],
    arch: str,
    config: Mapping[str, Any] | None = None,
    *,
    source: str = "the state dict",
    error: type[WeightsError] = WeightsError,
) -> None:
    """Check that ``state_dict`` fits ``build_model(arch, config)`` exactly, as loading it would; otherwise raise
    ``error`` (a :class:`~restorekit.errors.WeightsError`, or a subclass the caller names) listing the missing and
    unexpected keys and the shape mismatches, ``source`` saying where the weights came from.

    >>> net = build_model("msrn", {"n_feats": 4, "n_blocks": 2})
    >>> check_state_dict(net.state_dict(), "msrn", {"n_feats": 4, "n_blocks": 2})
    >>> check_state_dict(net.state_dict(), "msrn", {"n_feats": 8, "n_blocks": 2})
    Traceback (most recent call last):
    restorekit.errors.WeightsError: weights from the state dict do not fit the MSRN network: shape mismatches ...
    """
    _load_state(build_model(arch, config), state_dict, source, error)


def _read_user_weights(
    path: Path, record: WeightRecord, spec: ArchSpec
) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """A local file passed as ``weights=``: ``(state_dict, header)``, header None for a foreign checkpoint."""
    check_weights_path(path, "weights file")
    if path.suffix.lower() == ".safetensors" or looks_like_safetensors(path):
        try:
            metadata = safetensors_metadata(path)
        except Exception as exc:
            raise WeightsError(f"{path} is not a readable safetensors file ({exc})") from exc
        if metadata and HEADER_KEY in metadata:
            state_dict, header = read_weights(path)
            if header["arch"] != record.arch:
                raise WeightsError(
                    f"{path} holds weights for architecture {header['arch']!r}, but {record.name} is "
                    f"a {record.arch!r} model; use restorekit.load_model({str(path)!r}) to build "
                    "the network the file describes"
                )
            # The file's config builds the network (a smaller or fine-tuned variant is fine), but it must not
            # contradict what callers rely on from the record: its scale.
            if spec.config_for_scale is not None:
                full = {**spec.default_config, **header["config"]}
                wrong = {k: full.get(k) for k, v in spec.config_for_scale(record.scale).items() if full.get(k) != v}
                if wrong:
                    raise WeightsError(
                        f"{path} was saved for {wrong}, but {record.name} is a x{record.scale} model; "
                        f"pick the matching model or use restorekit.load_model({str(path)!r})"
                    )
            # Nor what the record feeds it (restorekit.feeding follows the record): a colouriser's file under an
            # inpainting record takes the same channel count, and would be fed a mask for hints.
            feeds, wants = spec.condition_for(header["config"]), spec.condition_for(record.config)
            if feeds != wants:
                raise WeightsError(
                    f"{path} was saved for a network conditioned on {feeds or 'the image alone'}, but {record.name} "
                    f"feeds {wants or 'the image alone'}; pick the matching model or use "
                    f"restorekit.load_model({str(path)!r})"
                )
            return state_dict, header
    return read_checkpoint(path, spec, record.config), None


def _load_file_model(path: Path, options: RunOptions) -> torch.nn.Module:
    state_dict, header = read_weights(path)
    model = build_model(header["arch"], header["config"])
    _load_state(model, state_dict, str(path))
    record = None
    if header.get("name"):  # a file of a registered model: its record says which dtypes are validated
        try:
            record = registry.get_record(header["name"])
        except UnknownModelError:
            record = None
    return model.to(options.device, options.dtype_for(record)).eval()


_NOTICED: set[str] = set()


def _notice_license(record: WeightRecord) -> None:
    """Warn once per process about license terms a user must not miss (``WeightRecord.license_notice``)."""
    if record.license_notice and record.name not in _NOTICED:
        _NOTICED.add(record.name)
        warnings.warn(f"{record.name}: {record.license_notice}", UserWarning, stacklevel=3)


def load_model(
    name: str | os.PathLike[str],
    task: str | None = None,
    *,
    scale: int | None = None,
    weights: str | os.PathLike[str] | None = None,
    pretrained: bool = True,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype = "auto",
    allow_unpinned: bool | None = None,
    progress: bool | None = None,
) -> torch.nn.Module:
    """Build a registered model (or the one a restorekit ``.safetensors`` file describes) in eval mode.

    ``weights=PATH`` loads a local file instead of the published weights (ours or a foreign checkpoint);
    ``pretrained=False`` leaves the network randomly initialised. ``device``, ``dtype``, ``allow_unpinned`` and
    ``progress`` mean what they mean for :class:`~restorekit.Restorer` (:mod:`restorekit.options`):
    ``device="auto"`` is cuda, then mps, then cpu; ``dtype="auto"`` float32 unless the record validates a half
    precision on an accelerator; ``allow_unpinned`` (None: ``$RESTOREKIT_ALLOW_UNPINNED``) permits weights
    whose upstream publishes no checksum; ``progress`` shows the download's progress bar (None: when stderr
    is a terminal).

    The bare network does none of the :class:`~restorekit.Restorer`'s work (padding, tiling, colour
    conversion, clamping). It takes and returns (N, C, H, W) tensors in its architecture's value range,
    ``restorekit.registry.get_arch(arch).value_range`` (also ``model_info(name)["value_range"]``):

    - ``msrn``: RGB in **0..255** (the authors' convention; the mean shift is inside the network), output
      ``scale`` times larger;
    - ``memnet``: one channel (grey or the Y of YCbCr) in 0..1; returns a ``MemNetOutput`` whose ``.output``
      is the image (``.block_outputs`` the per-block estimates); SR models expect the bicubic-upsampled image;
    - ``mprnet``: RGB in 0..1, sides a multiple of 8; returns ``[final, stage 2, stage 1]`` images;
    - ``dsrir``: RGB in 0..1, sides a multiple of 8; returns ``([img3, img2, img1], [var3, var2, var1])``,
      ``img3`` the restoration and ``var*`` per-stage uncertainty (log-scale) maps;
    - ``spatial_rnn``: RGB in 0..1 (plus a mask channel for inpainting and colourisation), output in 0..1.

    ``restorekit.registry.get_arch(arch).select_output`` picks the image out of a multi-output network's result.

    >>> net = load_model("msrn.sr_x2", pretrained=False, device="cpu")
    >>> net(torch.rand(1, 3, 8, 8) * 255).shape
    torch.Size([1, 3, 16, 16])
    """
    options = run_options(device, dtype, allow_unpinned, progress)
    if isinstance(name, os.PathLike) or str(name).lower().endswith(".safetensors"):
        if weights is not None:
            raise ValueError("pass a weights file either as the model name or as weights=, not both")
        path = Path(name)
        check_weights_path(path, "weights file")
        return _load_file_model(path, options)
    if weights is not None and not pretrained:
        raise ValueError("weights= and pretrained=False contradict each other; pass one of them")
    record = registry.get_record(name, task, scale=scale)
    want = options.dtype_for(record)
    spec = registry.get_arch(record.arch)
    config: Mapping[str, Any] = record.config
    state_dict: dict[str, torch.Tensor] | None = None
    if weights is not None:
        source = str(weights)
        state_dict, header = _read_user_weights(Path(weights), record, spec)
        if header is not None:
            config = header["config"]
    elif pretrained:
        path = resolve(record, allow_unpinned=options.allow_unpinned, progress=options.progress)
        source = f"{record.name} ({path})"
        _notice_license(record)
        state_dict, header = read_weights(path)
        if header["arch"] != record.arch:
            raise WeightsError(f"{path} holds weights for {header['arch']!r}, not {record.arch!r} ({record.name})")
    model = build_model(record.arch, config)
    if state_dict is not None:
        _load_state(model, state_dict, source)
    return model.to(options.device, want).eval()


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    model: str | None = None,
    arch: str | None = None,
    config: Mapping[str, Any] | None = None,
    format: str = "auto",
    overwrite: bool = False,
) -> Path:
    """Convert a local authors' checkpoint to a restorekit safetensors file; returns the written path.

    With ``model=`` the architecture and config come from that record (``config`` overrides keys);
    otherwise pass ``arch=`` and, if it differs from the defaults, ``config=``. ``format`` names the
    file's format (``auto``: from its suffix; see :data:`restorekit.convert.FORMATS`). ``dst`` is a
    ``.safetensors`` path or an existing folder; an existing file is replaced only with ``overwrite=True``,
    and the file is written atomically (a failure leaves no half-written file).
    """
    from .errors import InputError, OutputExistsError

    name: str | None = None
    if model is not None:
        record = registry.get_record(model)
        if arch is not None and arch != record.arch:
            raise ValueError(f"{model} is a {record.arch!r} model, not {arch!r}")
        arch, name = record.arch, record.name
        cfg = {**record.config, **(config or {})}
    elif arch is not None:
        cfg = dict(config or {})
    else:
        raise ValueError("pass model='arch.tag' or arch='name' to say what the checkpoint is")
    out = Path(dst)
    if out.is_dir():
        out = out / f"{name or arch}.safetensors"
    # Checked before any work: the output is restorekit's own format, and nothing is replaced unasked.
    if out.suffix.lower() != ".safetensors":
        raise InputError(
            f"{out}: converted weights are safetensors; name the output with a .safetensors suffix (or give a folder)"
        )
    if out.exists() and Path(src).exists() and out.resolve() == Path(src).resolve():
        raise InputError(f"{out} is the checkpoint being converted; choose another output path")
    if out.exists() and not overwrite:
        raise OutputExistsError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    spec = registry.get_arch(arch)
    full = {**spec.default_config, **cfg}
    state_dict = read_checkpoint(src, spec, full, format=format)
    # Fail now, not at the first load: the converted weights must fit the network exactly.
    check_state_dict(state_dict, arch, full, source=str(src), error=ConversionError)
    save_weights(out, state_dict, arch=arch, config=full, name=name, overwrite=overwrite)
    return out
