"""Restore many files: expand inputs, plan outputs, skip what is done, keep going past bad files.

This is the logic behind ``restorekit run``; the CLI only parses arguments and calls
:func:`run_batch`.
"""

from __future__ import annotations

import glob
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .errors import RestorekitError
from .image import IMAGE_EXTENSIONS

__all__ = ["BatchReport", "expand_inputs", "run_batch"]


@dataclass
class BatchReport:
    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, reason)

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary(self) -> str:
        return f"{len(self.written)} written, {len(self.skipped)} skipped (already there), {len(self.failed)} failed"


def _is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def expand_inputs(specs: Sequence[str | os.PathLike]) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Files, folders (searched recursively for images) and globs -> [(input, output path relative to -o)].

    Returns the pairs in a stable order and the specs that matched nothing, with the reason.
    """
    pairs: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and _is_image(p) and not p.name.startswith("."))
            if not found:
                missing.append((str(spec), f"folder has no images ({', '.join(IMAGE_EXTENSIONS)})"))
            pairs += [(p, p.relative_to(path)) for p in found]
        elif path.is_file():
            pairs.append((path, Path(path.name)))
        elif glob.has_magic(str(spec)):
            found = sorted(Path(p) for p in glob.glob(str(spec), recursive=True) if Path(p).is_file())
            if not found:
                missing.append((str(spec), "pattern matched no file"))
            pairs += [(p, Path(p.name)) for p in found]
        else:
            missing.append((str(spec), "no such file or folder"))
    return pairs, missing


def _stale_temporaries(target: Path) -> list[Path]:
    # write_image writes ".<name>.<random>.tmp<suffix>" beside the target, then renames it; a killed
    # run can leave one behind, which the next run removes before redoing that file.
    if not target.parent.is_dir():
        return []
    return list(target.parent.glob(f".{glob.escape(target.name)}.*.tmp*"))


def run_batch(
    restorer,
    specs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool = True,
) -> BatchReport:
    """Restore every input into ``out_dir``; never overwrite an input; report instead of stopping on a bad file."""
    from tqdm.auto import tqdm

    out = Path(out_dir)
    report = BatchReport()
    pairs, missing = expand_inputs(specs)
    report.failed += missing
    inputs = {p.resolve() for p, _ in pairs}
    seen: dict[Path, Path] = {}
    bar = tqdm(pairs, desc=restorer.record.name, unit="img", disable=not progress, file=sys.stderr)
    for src, rel in bar:
        target = out / rel
        resolved = target.resolve()
        if resolved in inputs:
            report.failed.append((str(src), f"output {target} would overwrite an input; choose another -o"))
            continue
        if resolved in seen:
            report.failed.append((str(src), f"output {target} is also the output of {seen[resolved]}; rename one"))
            continue
        seen[resolved] = src
        if target.exists() and not overwrite:
            report.skipped.append(target)
            continue
        for tmp in _stale_temporaries(target):
            tmp.unlink(missing_ok=True)
        try:
            restorer.run(src, target, overwrite=True)
        except (RestorekitError, OSError, ValueError) as err:
            report.failed.append((str(src), str(err)))  # the caller reports these; the library prints nothing
            bar.set_postfix(failed=len(report.failed))
            continue
        report.written.append(target)
    bar.close()
    return report
