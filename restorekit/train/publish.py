"""Export a training run to a publishable folder, and push a folder to a Hugging Face model repo.

``export`` turns a run's checkpoint into what a release needs, in one folder:

* ``{arch}_{tag}.safetensors``: the weights (EMA when the run kept them) in restorekit's format, fp16 by
  default, with the ``restorekit`` header (architecture and full config) so the file alone builds its network;
* ``README.md``: the model card (data, steps, training settings, metrics with their conventions, license,
  how to load it);
* ``registry_record.py`` / ``registry_record.json``: the ``HubSource`` (or ``BundledSource``) and ``Metric``
  entries to paste into the architecture's weight table, with the file's real sha256 and size.

``push`` uploads such a folder with ``huggingface_hub`` (``create_repo`` + ``upload_folder``) to the endpoint
in ``HF_ENDPOINT`` (huggingface_hub's default otherwise) with ``HF_TOKEN`` or ``--token``, and prints the
commit id that pins the record's ``revision``.

The card and record text come from :mod:`restorekit.train.card`, the checkpoint from
:mod:`restorekit.train.checkpoint`, and the ``export``/``push`` subcommands live in :mod:`restorekit.train.cli`.

>>> result = export_run("runs/denoise", "release/")            # doctest: +SKIP
>>> commit = push_folder("release/", "restorekit/spatial_rnn")  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import registry
from ..errors import OutputExistsError, RestorekitError, WeightsError
from ..options import DTYPES
from ..registry import Metric, WeightRecord
from .card import CARD_NAME as _CARD
from .card import OWN_LICENSE, ExportResult, model_card, record_json, record_text
from .card import RECORD_JSON_NAME as _RECORD_JSON
from .card import RECORD_PY_NAME as _RECORD_PY
from .checkpoint import CHECKPOINT_FORMAT, find_checkpoint, load_checkpoint

__all__ = [
    "CHECKPOINT_FORMAT",
    "ExportError",
    "PushError",
    "ExportResult",
    "export_run",
    "push_folder",
    "record_text",
    "record_json",
    "model_card",
    "OWN_LICENSE",
]


logger = logging.getLogger("restorekit")


class ExportError(WeightsError):
    """A run folder or checkpoint that cannot be exported (missing, foreign, corrupt, or not fitting its network)."""


class PushError(RestorekitError):
    """An upload to the hub failed (authentication, permissions, HTTP error, unreachable endpoint)."""


# --------------------------------------------------------------------------------------------------- reading a run


def _clean_state(state: Any, path: Path, which: str) -> dict[str, torch.Tensor]:
    from ..weightfile import strip_module_prefix

    if not isinstance(state, Mapping):
        raise ExportError(f"{path}: the checkpoint's {which!r} entry is a {type(state).__name__}, not a state dict")
    out = {}
    for key, value in state.items():
        if key == "n_averaged":  # torch.optim.swa_utils.AveragedModel's counter, not a weight
            continue
        if not isinstance(value, torch.Tensor):
            raise ExportError(f"{path}: {which}[{key!r}] is a {type(value).__name__}, not a tensor")
        out[key] = value
    return strip_module_prefix(out)  # DDP / AveragedModel wrappers


# --------------------------------------------------------------------------------------------------- export


def _cast(state: dict[str, torch.Tensor], dtype: str, path: Path) -> dict[str, torch.Tensor]:
    if dtype not in registry.DTYPES:
        raise ExportError(f"dtype must be one of {', '.join(registry.DTYPES)}, not {dtype!r}")
    target = DTYPES[dtype]
    out = {}
    for key, value in state.items():
        if value.is_floating_point():
            cast = value.detach().to(target)
            if not torch.isfinite(cast).all():
                raise ExportError(
                    f"{path}: {key} is not finite in {dtype} (largest magnitude {value.abs().max().item():.4g}); "
                    "export with --dtype float32"
                )
            value = cast
        out[key] = value
    return out


def _record_for(name: str) -> WeightRecord:
    try:
        return registry.get_record(name)
    except KeyError as exc:
        raise ExportError(
            f"the run was trained for {name!r}, which is not a registered model ({exc}); pass --name arch.tag "
            "to export it as one"
        ) from None


def _measure(
    name: str, weights: Path, data: str | os.PathLike[str], degradation: str | None
) -> tuple[tuple[Metric, ...], str]:
    from ..evaluate import evaluate

    result = evaluate(name, data, weights=weights, degradation=degradation, device="cpu", tile=None, progress=False)
    return result.as_metrics(Path(data).name), result.convention.describe()


def _checkpoint_metrics(ckpt: dict[str, Any]) -> tuple[Metric, ...]:
    out = []
    for m in ckpt.get("metrics") or []:
        if isinstance(m, Mapping) and {"dataset", "metric", "value", "convention"} <= set(m):
            out.append(Metric(str(m["dataset"]), str(m["metric"]), float(m["value"]), str(m["convention"])))
    return tuple(out)


def export_run(
    run: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    checkpoint: str | int | os.PathLike[str] = "last",
    weights: str = "ema",
    dtype: str = "float16",
    eval_data: str | os.PathLike[str] | None = None,
    eval_degradation: str | None = None,
    name: str | None = None,
    repo_id: str | None = None,
    filename: str | None = None,
    overwrite: bool = False,
) -> ExportResult:
    """Write the weights, model card and registry record of a training run into ``out_dir``.

    Files already in ``out_dir`` are replaced only with ``overwrite=True`` (checked before anything is written);
    each file is written atomically.

    ``weights="ema"`` exports the EMA copy when the checkpoint has one (else the raw weights, with a warning);
    ``"model"`` the raw weights. With ``eval_data`` the exported file itself is measured with
    :func:`restorekit.evaluate.evaluate` (``eval_degradation`` for a folder of clean images); otherwise the
    checkpoint's validation metrics are carried over. ``repo_id``/``filename`` default to the record's hub entry.
    """
    from ..weightfile import save_weights
    from ..weights import check_state_dict

    run = Path(run)
    if weights not in ("ema", "model"):
        raise ExportError(f"weights must be 'ema' or 'model', not {weights!r}")
    path = find_checkpoint(run, checkpoint, error=ExportError)
    ckpt = load_checkpoint(path, error=ExportError)
    source = "ema" if weights == "ema" and ckpt.get("ema") is not None else "model"
    if weights == "ema" and source == "model":
        logger.warning("%s has no EMA weights; exporting the raw model weights", path)
    state = _clean_state(ckpt[source], path, source)

    model_name = name or str(ckpt["model_name"])
    record = _record_for(model_name)
    arch = str(ckpt["arch"])
    if arch != record.arch:
        raise ExportError(f"{path} holds a {arch!r} network, but {model_name} is a {record.arch!r} model")
    spec = registry.get_arch(arch)
    if not isinstance(ckpt["config"], Mapping):
        raise ExportError(f"{path}: the checkpoint's 'config' is not a mapping")
    config = {**spec.default_config, **ckpt["config"]}
    if spec.config_for_scale is not None:
        wrong = {k: config.get(k) for k, v in spec.config_for_scale(record.scale).items() if config.get(k) != v}
        if wrong:
            raise ExportError(f"{path} was trained with {wrong}, but {model_name} is a x{record.scale} model")
    check_state_dict(state, arch, config, source=str(path), error=ExportError)  # fits, before writing anything
    state = _cast(state, dtype, path)

    hub = record.hub
    repo_id = repo_id or (hub.repo_id if hub else f"restorekit/{arch}")
    filename = filename or (hub.filename if hub else f"{model_name.replace('.', '_')}.safetensors")
    out = Path(out_dir)
    weights_path = out / filename
    existing = [p for p in (weights_path, out / _CARD, out / _RECORD_PY, out / _RECORD_JSON) if p.exists()]
    if existing and not overwrite:
        raise OutputExistsError(
            f"{', '.join(str(p) for p in existing)} already exist{'s' * (len(existing) == 1)}; pass overwrite=True "
            "(--overwrite) to replace the release files, or export into another folder"
        )
    out.mkdir(parents=True, exist_ok=True)
    digest = save_weights(weights_path, state, arch=arch, config=config, name=model_name)
    size = weights_path.stat().st_size

    if eval_data is not None:
        metrics, convention_note = _measure(model_name, weights_path, eval_data, eval_degradation)
        metrics_origin = f"measured on the exported {dtype} file with `restorekit eval` on {Path(eval_data).name}"
    else:
        metrics = _checkpoint_metrics(ckpt)
        convention_note = ""
        metrics_origin = (
            f"the checkpoint's validation metrics, measured by restorekit-train during training at step "
            f"{int(ckpt['step'])} (before the {dtype} export; pass --eval-data to measure the exported file)"
        )

    result = ExportResult(
        folder=out,
        weights=weights_path,
        card=out / _CARD,
        record_py=out / _RECORD_PY,
        record_json=out / _RECORD_JSON,
        model_name=model_name,
        arch=arch,
        step=int(ckpt["step"]),
        source=source,
        dtype=dtype,
        sha256=digest,
        size=size,
        repo_id=repo_id,
        filename=filename,
        metrics=metrics,
    )
    text = record_text(result, record)
    result = _replace(result, record_text=text)
    _write_text(result.record_py, text)
    _write_text(result.record_json, json.dumps(record_json(result), indent=2) + "\n")
    card = model_card(result, record, ckpt, run, metrics_origin, convention_note, checkpoint=path)
    _write_text(result.card, card)
    return result


def _write_text(path: Path, text: str) -> None:
    from ..image import atomic_write

    data = text.encode()
    atomic_write(path, lambda f: f.write(data), overwrite=True)  # existence was checked before the export began


def _replace(result: ExportResult, **changes: Any) -> ExportResult:
    from dataclasses import replace

    return replace(result, **changes)


# --------------------------------------------------------------------------------------------------- push


def _hf_error(exc: Exception, repo_id: str, endpoint: str) -> PushError:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    detail = " ".join(str(exc).split())[:400]
    if status in (401, 403):
        return PushError(
            f"the hub at {endpoint} refused the upload to {repo_id} (HTTP {status}): {detail}. Set HF_TOKEN (or pass "
            "--token) to a token with write access to that namespace"
        )
    if status is not None:
        return PushError(f"upload to {repo_id} at {endpoint} failed with HTTP {status}: {detail}")
    hint = ""
    if "xet" in detail.lower():  # hf_xet's own client error: the endpoint may not offer Xet storage at all
        hint = (
            ". The Xet storage upload failed; if this endpoint has no Xet storage, set HF_HUB_DISABLE_XET=1 in the "
            "environment to upload through git-LFS instead"
        )
    return PushError(f"upload to {repo_id} at {endpoint} failed: {type(exc).__name__}: {detail}{hint}")


def push_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    revision: str = "main",
    token: str | None = None,
    private: bool = False,
    commit_message: str = "Upload restorekit weights",
) -> str:
    """Upload ``folder`` to the Hugging Face model repo ``repo_id`` (created if needed); returns the commit id.

    The endpoint is ``HF_ENDPOINT`` (huggingface_hub's default when unset) and the token ``token``, else
    ``HF_TOKEN``, else the one saved by ``hf auth login``. ``revision`` must be an existing branch.
    """
    from huggingface_hub import HfApi

    from .._version import __version__
    from ..env import hf_endpoint, hf_token

    folder = Path(folder)
    if not folder.is_dir() or not any(p.is_file() for p in folder.rglob("*")):
        raise PushError(f"{folder} is not a folder with files to upload; run `restorekit-train export` first")
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise PushError(f"repo id must look like 'namespace/name', not {repo_id!r}")
    endpoint = hf_endpoint()
    token = token or hf_token(saved_login=False)  # else HfApi finds the saved login itself
    api = HfApi(endpoint=endpoint, token=token, library_name="restorekit", library_version=__version__)
    where = api.endpoint
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            repo_type="model",
            revision=revision,
            commit_message=commit_message,
        )
    except Exception as exc:  # HfHubHTTPError, the HTTP client's connection errors, a refused payload
        raise _hf_error(exc, repo_id, where) from exc
    return str(info.oid)
