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

>>> result = export_run("runs/denoise", "release/")            # doctest: +SKIP
>>> commit = push_folder("release/", "restorekit/spatial_rnn")  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .. import registry
from ..errors import OutputExistsError, RestorekitError, WeightsError
from ..options import DTYPES
from ..registry import BundledSource, HubSource, Metric, WeightRecord
from .checkpoint import CHECKPOINT_FORMAT

__all__ = [
    "CHECKPOINT_FORMAT",
    "ExportError",
    "PushError",
    "ExportResult",
    "export_run",
    "push_folder",
    "add_subcommands",
    "main",
]

_REQUIRED = ("format", "step", "arch", "model_name", "config", "model")
_RECORD_PY = "registry_record.py"
_RECORD_JSON = "registry_record.json"
_CARD = "README.md"
OWN_LICENSE = "MIT"  # restorekit's own weights are released under the project's license (LICENSE)

logger = logging.getLogger("restorekit")


class ExportError(WeightsError):
    """A run folder or checkpoint that cannot be exported (missing, foreign, corrupt, or not fitting its network)."""


class PushError(RestorekitError):
    """An upload to the hub failed (authentication, permissions, HTTP error, unreachable endpoint)."""


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_run` wrote, with the digests and metrics that went into the record."""

    folder: Path
    weights: Path
    card: Path
    record_py: Path
    record_json: Path
    model_name: str
    arch: str
    step: int
    source: str  # "ema" or "model": which weights of the checkpoint were exported
    dtype: str
    sha256: str
    size: int
    repo_id: str
    filename: str
    metrics: tuple[Metric, ...] = field(default_factory=tuple)
    record_text: str = ""


# --------------------------------------------------------------------------------------------------- reading a run


def _checkpoint_path(run: Path, checkpoint: str | int | os.PathLike[str]) -> Path:
    if not run.is_dir():
        raise ExportError(
            f"run folder {run} does not exist (or is not a folder); pass the folder `restorekit-train fit` wrote "
            "(it holds config.json, log.jsonl and checkpoints/)"
        )
    ckpts = run / "checkpoints"
    if isinstance(checkpoint, os.PathLike) or (isinstance(checkpoint, str) and checkpoint.endswith(".pt")):
        path = Path(checkpoint)
        path = path if path.is_absolute() or path.exists() else ckpts / path
    elif str(checkpoint) == "last":
        path = ckpts / "last.pt"
    elif str(checkpoint).isdigit():
        path = ckpts / f"step_{int(checkpoint):08d}.pt"
    else:
        raise ExportError(f"checkpoint must be 'last', a step number or a .pt path, not {checkpoint!r}")
    if not path.is_file():
        # not the hidden ".<name>.<random>.tmp.pt" of a save cut short
        have = sorted(p.name for p in ckpts.glob("[!.]*.pt")) if ckpts.is_dir() else []
        raise ExportError(
            f"checkpoint {path} does not exist; {run} has: {', '.join(have) or 'no checkpoints'} "
            "(pass --checkpoint last, a step number, or a file)"
        )
    return path


def _load_checkpoint(path: Path) -> dict[str, Any]:
    from .checkpoint import load_checkpoint

    ckpt = load_checkpoint(path, error=ExportError)
    missing = [k for k in _REQUIRED if k not in ckpt]
    if missing:
        raise ExportError(f"{path}: checkpoint lacks {', '.join(missing)}; it was not written by restorekit-train")
    return ckpt


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


def _read_log(run: Path) -> tuple[int | None, dict[str, Any] | None]:
    """(last logged step, last validation entry) from ``log.jsonl``; missing or broken lines are skipped."""
    last_step, last_val = None, None
    log = run / "log.jsonl"
    if not log.is_file():
        return None, None
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("step"), int):
            last_step = entry["step"]
            if isinstance(entry.get("val"), dict):
                last_val = entry
    return last_step, last_val


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
    path = _checkpoint_path(run, checkpoint)
    ckpt = _load_checkpoint(path)
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


# --------------------------------------------------------------------------------------------------- record


def _metric_py(m: Metric) -> str:
    return f"Metric({m.dataset!r}, {m.metric!r}, {m.value!r}, {m.convention!r}, {m.source!r})"


def record_text(result: ExportResult, record: WeightRecord, revision: str | None = None) -> str:
    """The entries to paste into ``restorekit/archs/{arch}.py``'s weight record for this model."""
    rev = f"{revision!r}," if revision else "None,  # the commit id `restorekit-train push` prints"
    metrics = "".join(f"        {_metric_py(m)},\n" for m in result.metrics)
    dtypes = record.dtypes  # validated inference dtypes: an fp16 file alone does not validate fp16 inference
    origin = f"restorekit's own training ({result.step} steps, {result.source} weights, stored as {result.dtype})"
    pin = "" if revision else " Fill in revision= first: a record refuses a hub source without its commit."
    return (
        f"# {result.model_name}: restorekit's own weights, step {result.step} ({result.source}), {result.dtype}.\n"
        f'# Paste into its row, WeightRecord.named("{result.model_name}", ...) in restorekit/archs/{result.arch}.py\n'
        f"# (grep -n '\"{result.model_name}\"' finds it).{pin}\n"
        "from restorekit.registry import BundledSource, HubSource, Metric\n\n"
        "RECORD = dict(\n"
        "    hub=HubSource(\n"
        f"        repo_id={result.repo_id!r},\n"
        f"        filename={result.filename!r},\n"
        f"        revision={rev}\n"
        f"        sha256={result.sha256!r},\n"
        f"        size={result.size},\n"
        "    ),\n"
        f"    license={OWN_LICENSE + ' (restorekit)'!r},\n"
        f"    origin={origin!r},\n"
        f"    dtypes={dtypes!r},\n"
        f"    metrics=(\n{metrics}    ),\n"
        ")\n\n"
        f"# To ship the file inside the package instead, copy it to restorekit/weights/{result.filename} and use:\n"
        "BUNDLED = BundledSource(\n"
        f"    filename={result.filename!r},\n"
        f"    sha256={result.sha256!r},\n"
        f"    size={result.size},\n"
        ")\n"
    )


def record_json(result: ExportResult, revision: str | None = None) -> dict[str, Any]:
    hub = HubSource(result.repo_id, result.filename, revision, result.sha256, result.size)
    return {
        "model": result.model_name,
        "arch": result.arch,
        "step": result.step,
        "weights": result.source,
        "dtype": result.dtype,
        "hub": asdict(hub),
        "bundled": asdict(BundledSource(result.filename, result.sha256, result.size)),
        "metrics": [asdict(m) for m in result.metrics],
    }


# --------------------------------------------------------------------------------------------------- model card


def _convention_line(name: str) -> str:
    from ..metrics import get_convention

    try:
        return get_convention(name).describe()
    except RestorekitError:
        return name


def _summary(train_config: Mapping[str, Any]) -> list[str]:
    """``key: value`` lines of the resolved training config, nested sections flattened one level."""
    lines = []
    for key, value in train_config.items():
        if isinstance(value, Mapping):
            inner = ", ".join(f"{k}={json.dumps(v, default=str)}" for k, v in value.items())
            lines.append(f"- **{key}**: {inner}")
        else:
            lines.append(f"- **{key}**: {json.dumps(value, default=str)}")
    return lines


def model_card(
    result: ExportResult,
    record: WeightRecord,
    ckpt: Mapping[str, Any],
    run: Path,
    metrics_origin: str,
    convention_note: str,
    *,
    checkpoint: Path,
) -> str:
    train_config = ckpt.get("train_config") if isinstance(ckpt.get("train_config"), Mapping) else {}
    data = train_config.get("data") if isinstance(train_config, Mapping) else None
    last_step, last_val = _read_log(run)
    lines = [
        "---",
        f"license: {OWN_LICENSE.lower()}",
        "library_name: restorekit",
        "tags:",
        "- image-restoration",
        f"- {record.task}",
        f"- {result.arch}",
        "---",
        "",
        f"# {result.model_name}",
        "",
        f"{record.description}. restorekit's own weights, trained with `restorekit-train`.",
        "",
        f"- **Architecture**: `{result.arch}` ({record.paper or registry.get_arch(result.arch).paper})",
        f"- **Task**: {record.task}" + (f", x{record.scale}" if record.scale > 1 else ""),
        f"- **Weights**: `{result.filename}`, {result.source} weights at step {result.step}, stored as "
        f"{result.dtype} ({result.size} bytes, sha256 `{result.sha256}`)",
        f"- **License of these weights**: {OWN_LICENSE} (restorekit's own training; see the project's LICENSE)",
        "",
        "## Training data",
        "",
    ]
    if isinstance(data, Mapping) and data:
        lines += _summary(data)
    elif data:
        lines.append(f"- {json.dumps(data, default=str)}")
    else:
        lines.append("- not recorded in the checkpoint")
    lines += ["", "## Training", ""]
    lines.append(f"- **Steps**: {result.step} (checkpoint `{checkpoint.name}`)")
    if last_step is not None and last_step != result.step:
        lines.append(f"- **Run log**: the run logged up to step {last_step}")
    other = {k: v for k, v in (train_config or {}).items() if k != "data"}
    lines += _summary(other)
    lines += ["", "## Metrics", "", f"Source: {metrics_origin}.", ""]
    if result.metrics:
        lines += ["| dataset | metric | value | convention |", "|---|---|---|---|"]
        lines += [f"| {m.dataset} | {m.metric} | {m.value:g} | `{m.convention}` |" for m in result.metrics]
        lines += ["", "Conventions:", ""]
        notes = {m.convention: _convention_line(m.convention) for m in result.metrics}
        if convention_note:
            notes[convention_note.split(":", 1)[0]] = convention_note
        lines += [f"- {note}" for note in notes.values()]
    elif last_val is not None:
        lines.append(f"Latest validation entry in log.jsonl (step {last_val['step']}): `{json.dumps(last_val['val'])}`")
    else:
        lines.append("No metrics were measured for this export.")
    lines += [
        "",
        "## Use it",
        "",
        "```python",
        "from restorekit import Restorer, load_model",
        "",
        f'restorer = Restorer("{result.model_name}", weights="{result.filename}")',
        'restorer.run("input.png", output="restored.png")',
        f'net = load_model("{result.filename}")  # the bare network, built from the file\'s header',
        "```",
        "",
        "Once the registry record points at this repository, "
        f'`Restorer("{result.model_name}")` downloads the file pinned to its commit and sha256.',
        "",
    ]
    return "\n".join(lines)


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


# --------------------------------------------------------------------------------------------------- CLI


def _export(args: argparse.Namespace) -> int:
    result = export_run(
        args.run,
        args.output,
        checkpoint=args.checkpoint,
        weights=args.weights,
        dtype=args.dtype,
        eval_data=args.eval_data,
        eval_degradation=args.eval_degrade,
        name=args.name,
        repo_id=args.repo_id,
        overwrite=args.overwrite,
    )
    print(f"wrote {result.weights} ({result.size} bytes, sha256 {result.sha256})")
    print(f"wrote {result.card}, {result.record_py}, {result.record_json}")
    print()
    print(result.record_text, end="")
    return 0


def _push(args: argparse.Namespace) -> int:
    commit = push_folder(
        args.folder,
        args.repo_id,
        revision=args.revision,
        token=args.token,
        private=args.private,
        commit_message=args.message,
    )
    print(f"pushed {args.folder} to {args.repo_id} at commit {commit}")
    record = Path(args.folder) / _RECORD_JSON
    if record.is_file():
        hub = json.loads(record.read_text()).get("hub", {})
        if hub.get("repo_id") == args.repo_id:
            print(
                f"record: hub=HubSource(repo_id={hub['repo_id']!r}, filename={hub['filename']!r}, "
                f"revision={commit!r}, sha256={hub['sha256']!r}, size={hub['size']})"
            )
    return 0


def add_subcommands(subparsers: Any) -> None:
    """Register ``export`` and ``push`` on a ``restorekit-train`` subparsers object."""
    p = subparsers.add_parser("export", help="write fp16 weights, a model card and the registry record of a run")
    p.add_argument("run", help="the run folder (config.json, log.jsonl, checkpoints/)")
    p.add_argument("-o", "--output", required=True, help="folder to write the release files into")
    p.add_argument("--checkpoint", default="last", help="'last' (default), a step number, or a .pt file")
    p.add_argument("--weights", choices=("ema", "model"), default="ema", help="EMA weights when present (default)")
    p.add_argument("--dtype", choices=registry.DTYPES, default="float16")
    p.add_argument("--eval-data", help="measure the exported file on this benchmark folder (restorekit eval)")
    p.add_argument("--eval-degrade", help="degradation for a folder of clean images, e.g. noise:25")
    p.add_argument("--name", help="registered model name (default: the one the run was trained for)")
    p.add_argument("--repo-id", help="hub repository for the record (default: the record's)")
    p.add_argument("--overwrite", action="store_true", help="replace release files already in the output folder")
    p.set_defaults(func=_export)

    p = subparsers.add_parser("push", help="upload a folder to a Hugging Face model repo (HF_ENDPOINT, HF_TOKEN)")
    p.add_argument("folder")
    p.add_argument("repo_id", help="namespace/name")
    p.add_argument("--revision", default="main", help="an existing branch (default main)")
    p.add_argument("--token", help="write token (default: HF_TOKEN, then the saved login)")
    p.add_argument("--private", action="store_true", help="create the repository private")
    p.add_argument("-m", "--message", default="Upload restorekit weights", help="commit message")
    p.set_defaults(func=_push)


def main(argv: Sequence[str] | None = None) -> int:
    """``export`` and ``push`` on their own (``restorekit-train`` registers the same subcommands)."""
    parser = argparse.ArgumentParser(prog="restorekit-train", description="Export and publish trained weights.")
    add_subcommands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except RestorekitError as exc:
        print(f"error: {exc}", file=__import__("sys").stderr)
        return 1
