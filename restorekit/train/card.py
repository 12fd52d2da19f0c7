"""What ``restorekit-train export`` writes beside the weights: the model card (``README.md``) and the registry
record (``registry_record.py`` to paste into ``restorekit/archs/{arch}.py``, ``registry_record.json``).

Rendering only: :func:`restorekit.train.publish.export_run` gathers the facts (an :class:`ExportResult`, the
model's :class:`WeightRecord`, the checkpoint) and writes what these functions return. ``ExportResult`` is defined
here, so rendering imports nothing of export.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .. import registry
from ..errors import RestorekitError
from ..registry import BundledSource, HubSource, Metric, WeightRecord

__all__ = [
    "ExportResult",
    "OWN_LICENSE",
    "CARD_NAME",
    "RECORD_PY_NAME",
    "RECORD_JSON_NAME",
    "record_text",
    "record_json",
    "model_card",
    "pinned_hub_line",
]

OWN_LICENSE = "MIT"  # restorekit's own weights are released under the project's license (LICENSE)
CARD_NAME = "README.md"
RECORD_PY_NAME = "registry_record.py"
RECORD_JSON_NAME = "registry_record.json"


# --------------------------------------------------------------------------------------------------- run log


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


# --------------------------------------------------------------------------------------------------- record


def _metric_py(m: Metric) -> str:
    return f"Metric({m.dataset!r}, {m.metric!r}, {m.value!r}, {m.convention!r}, {m.source!r})"


def record_text(result: ExportResult, record: WeightRecord, revision: str | None = None) -> str:
    """The entries to paste into ``restorekit/archs/{arch}.py``'s weight record for this model."""
    rev = f"{revision!r}," if revision else "None,  # the commit id `restorekit-train push` prints"
    pin = "" if revision else " Fill in revision= first: a record refuses a hub source without its commit."
    metrics = "".join(f"        {_metric_py(m)},\n" for m in result.metrics)
    dtypes = record.dtypes  # validated inference dtypes: an fp16 file alone does not validate fp16 inference
    origin = f"restorekit's own training ({result.step} steps, {result.source} weights, stored as {result.dtype})"
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
    """The same record as plain data (``registry_record.json``): hub and bundled sources, metrics."""
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
    """The model card (``README.md``): data, steps, training settings, metrics with their conventions, license,
    how to load the file. ``run``'s ``log.jsonl`` adds how far the run logged and its latest validation."""
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


def pinned_hub_line(folder: str | Path, repo_id: str, commit: str) -> str | None:
    """``hub=HubSource(...)`` of ``folder``'s ``registry_record.json`` with ``revision`` set to ``commit`` (what a
    push to ``repo_id`` made), or None when the folder holds no record for that repository."""
    record = Path(folder) / RECORD_JSON_NAME
    if not record.is_file():
        return None
    hub = json.loads(record.read_text()).get("hub", {})
    if hub.get("repo_id") != repo_id:
        return None
    return (
        f"hub=HubSource(repo_id={hub['repo_id']!r}, filename={hub['filename']!r}, "
        f"revision={commit!r}, sha256={hub['sha256']!r}, size={hub['size']})"
    )
