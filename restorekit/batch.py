"""Restore many files: expand inputs, plan outputs, skip what is done, keep going past bad files.

This is the logic behind ``restorekit run``; the CLI only parses arguments and calls
:func:`run_batch`. What it drives is anything of the :class:`ImageToImage` shape: a
:class:`~restorekit.restorer.Restorer`, or the L0 filter :class:`~restorekit.filters.L0Smooth`.
"""

from __future__ import annotations

import glob
import os
import sys
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from .errors import PER_IMAGE_ERRORS, InputError
from .folders import image_files, is_inside
from .image import IMAGE_EXTENSIONS, output_clashes, read_image, write_image

__all__ = [
    "BatchReport",
    "ImageToImage",
    "PlannedFile",
    "default_workers",
    "expand_inputs",
    "find_mask",
    "plan_run",
    "run_batch",
]


class _Named(Protocol):
    @property
    def name(self) -> str: ...


@runtime_checkable
class ImageToImage(Protocol):
    """What :func:`run_batch` drives: an image-to-image method that restores a file into another.

    ``record.name`` labels its progress and errors; ``condition`` says what it takes besides the image
    (``"mask"``, ``"hints"``: ``run`` then needs ``mask=``; None: it takes none, see
    :class:`restorekit.feeding.Feeding`); ``run(src, output, overwrite=, mask=, input_range=)`` writes ``output``.
    """

    @property
    def record(self) -> _Named: ...

    @property
    def condition(self) -> str | None: ...

    def run(
        self,
        x: Any,
        output: str | os.PathLike | None = None,
        *,
        overwrite: bool = True,
        mask: Any = None,
        input_range: tuple[float, float] | None = None,
    ) -> Any: ...


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


def expand_inputs(
    specs: Sequence[str | os.PathLike], exclude: str | os.PathLike | None = None
) -> tuple[list[tuple[Path, Path]], list[tuple[str, str]]]:
    """Files, folders (searched recursively for images) and globs -> [(input, output path relative to -o)].

    Anything inside the folder ``exclude`` (the output folder) is left out of folders and globs: when the output
    folder lies inside an input folder, restorekit's own results must not become its next run's inputs.
    Returns the pairs in a stable order and the specs that matched nothing, with the reason.
    """
    pairs: list[tuple[Path, Path]] = []
    missing: list[tuple[str, str]] = []
    skip = Path(exclude).resolve() if exclude is not None else None
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = image_files(path, recursive=True, exclude=skip)
            if not found:
                missing.append((str(spec), f"folder has no images ({', '.join(IMAGE_EXTENSIONS)})"))
            pairs += [(p, p.relative_to(path)) for p in found]
        elif path.is_file():
            pairs.append((path, Path(path.name)))
        elif path.exists():  # a named pipe, a device, a socket: never opened (a pipe would block the run)
            missing.append((str(spec), "not a regular file (a named pipe, device or socket); pass image files"))
        elif glob.has_magic(str(spec)):
            found = sorted(
                Path(p)
                for p in glob.glob(str(spec), recursive=True)
                if Path(p).is_file() and not is_inside(Path(p).resolve(), skip)
            )
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


def find_mask(masks: Path, rel: Path) -> Path | None:
    """The mask in the folder ``masks`` for the input whose output path is ``rel``: ``masks/rel`` (same relative
    name), else the same stem with ``.png`` (``photo.jpg`` -> ``photo.png``); None when neither exists."""
    for candidate in (masks / rel, (masks / rel).with_suffix(".png")):
        if candidate.is_file():
            return candidate
    return None


def _check_masks(restorer: ImageToImage, masks: Path | None, n_inputs: int) -> None:
    """Say before any work whether --mask fits the model and the inputs."""
    name = restorer.record.name
    if masks is None:
        if restorer.condition is not None:
            raise InputError(
                f"{name} needs a mask per input: pass --mask M (masks=), a mask file for one input or a folder of "
                "masks named as the inputs; white/1 where the pixel (colorize: its colour) is known, black/0 to fill"
            )
        return
    if restorer.condition is None:
        raise InputError(
            f"{name} takes no mask; --mask is for inpainting/colourisation models (spatial_rnn.inpaint, "
            "spatial_rnn.colorize). Drop --mask for this model."
        )
    if masks.is_file():
        if n_inputs > 1:
            raise InputError(
                f"--mask {masks} is one file but there are {n_inputs} inputs; give a folder of masks named as the "
                "inputs (same name, or the same stem with .png)"
            )
    elif not masks.is_dir():
        raise InputError(f"--mask {masks}: no such file or folder")


@dataclass(frozen=True)
class PlannedFile:
    """One input of a folder run, as the driver decides it before any work: restore ``src`` into ``target`` (with
    ``mask``), or ``skip`` it (``target`` is there and overwriting is off), or report it failed with ``failure``."""

    src: Path
    target: Path
    mask: Path | None = None
    skip: bool = False
    failure: str | None = None

    @property
    def todo(self) -> bool:
        return not self.skip and self.failure is None


def plan_run(
    method: Any,
    specs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    masks: str | os.PathLike | None = None,
) -> tuple[list[PlannedFile], list[tuple[str, str]]]:
    """What :func:`run_batch` (and ``restorekit.distributed.run_ray``) decides before restoring anything: one
    :class:`PlannedFile` per input in input order, and the specs that matched nothing (with the reason).

    ``method`` needs only ``record.name`` and ``condition`` (what :class:`ImageToImage` has).
    Refusals (an output folder that is a file or an input folder itself, masks that do
    not fit the model) are an :class:`InputError`; nothing is written or removed.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"-o {out} is a file; the output must be a folder (it is created if missing)")
    for spec in specs:
        if Path(spec).is_dir() and Path(spec).resolve() == out.resolve():
            raise InputError(
                f"-o {out} is the input folder {spec} itself: every result would replace its input. Choose another "
                f"output folder (a subfolder such as {Path(spec) / 'restored'} is fine: it is never read as input)"
            )
    pairs, missing = expand_inputs(specs, exclude=out)
    mask_path = Path(masks) if masks is not None else None
    _check_masks(method, mask_path, len(pairs))
    clashes = output_clashes([(str(src), out / rel) for src, rel in pairs], [p for p, _ in pairs])
    plan: list[PlannedFile] = []
    for i, (src, rel) in enumerate(pairs):
        target = out / rel
        if i in clashes:
            plan.append(PlannedFile(src, target, failure=clashes[i]))
            continue
        mask = None
        if mask_path is not None:
            mask = mask_path if mask_path.is_file() else find_mask(mask_path, rel)
            if mask is None:
                tried = f"{mask_path / rel}" + (
                    "" if rel.suffix == ".png" else f" or {(mask_path / rel).with_suffix('.png')}"
                )
                plan.append(PlannedFile(src, target, failure=f"no mask for it: looked for {tried}"))
                continue
        plan.append(PlannedFile(src, target, mask, skip=target.exists() and not overwrite))
    return plan, missing


def run_batch(
    restorer: ImageToImage,
    specs: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    overwrite: bool = False,
    progress: bool | None = None,
    masks: str | os.PathLike | None = None,
    input_range: tuple[float, float] | None = None,
    workers: int | None = None,
) -> BatchReport:
    """Restore every input into ``out_dir``; never overwrite an input; report instead of stopping on a bad file.

    ``masks`` (inpainting/colourisation models, which need one): a mask file for a single input, or a folder
    where each input's mask has the input's relative output name (``sub/a.jpg`` -> ``masks/sub/a.jpg``) or the
    same stem with ``.png`` (``masks/sub/a.png``). An input without a mask is reported failed; a model that
    takes no mask given ``masks``, or a mask model given none, is an :class:`InputError` before any work.
    ``input_range`` (float images not in [0, 1]) is passed on to :meth:`Restorer.run`. ``progress``: a bar per
    image on stderr (None: when stderr is a terminal), as everywhere (:mod:`restorekit.options`).

    ``workers``: threads that decode the next inputs and write finished outputs while the network runs (see
    :class:`_Pipeline`; the outputs are byte-identical to one at a time); 0 does everything in this thread; None
    (the default) is :func:`default_workers`: 2 where they have a core to run on, else 0. Only
    a :class:`~restorekit.restorer.Restorer` without masks is pipelined; other methods go one file at a time.
    A Restorer whose ``batch`` is above 1 (``Restorer(..., batch=8)``, ``--batch 8``) gets images of one size
    restored together, up to ``batch`` per network call (equal to one at a time to float rounding); it needs
    ``workers`` above 0.

    The output folder may lie inside an input folder: what is in it is never read as input. It may not be an
    input folder itself (every result would replace its input).
    """
    from tqdm.auto import tqdm

    if workers is None:
        workers = default_workers(restorer)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
        raise InputError(f"workers must be a whole number >= 0, not {workers!r}")
    if workers == 0 and getattr(restorer, "batch", 1) > 1:
        raise InputError(
            f"a batch of {restorer.batch} images is gathered by the decoding workers; give workers >= 1 "  # type: ignore[attr-defined]
            "(CLI: --workers 1 or more), or batch=1"
        )
    plan, missing = plan_run(restorer, specs, out_dir, overwrite=overwrite, masks=masks)
    report = BatchReport(failed=list(missing))
    bar = tqdm(
        plan,
        desc=restorer.record.name,
        unit="img",
        disable=None if progress is None else not progress,
        file=sys.stderr,
    )
    pipelined = workers > 0 and masks is None and _pipelinable(restorer)
    pipeline = _Pipeline(restorer, report, workers, input_range, bar) if pipelined else None
    try:
        for item in bar:
            if item.failure is not None:
                report.failed.append((str(item.src), item.failure))
                bar.set_postfix(failed=len(report.failed))
                continue
            if item.skip:
                report.skipped.append(item.target)
                continue
            for tmp in _stale_temporaries(item.target):
                tmp.unlink(missing_ok=True)
            if pipeline is not None:
                pipeline.add(item.src, item.target)
                continue
            options: dict[str, Any] = {} if item.mask is None else {"mask": item.mask}
            if input_range is not None:
                options["input_range"] = input_range
            try:
                restorer.run(item.src, item.target, overwrite=True, **options)
            except PER_IMAGE_ERRORS as err:
                report.failed.append((str(item.src), str(err)))  # the caller reports these; the library prints nothing
                bar.set_postfix(failed=len(report.failed))
                continue
            report.written.append(item.target)
        if pipeline is not None:
            pipeline.finish()
    finally:
        if pipeline is not None:
            pipeline.close()
        bar.close()
    return report


def default_workers(restorer: Any) -> int:
    """The decode/encode threads :func:`run_batch` uses by default: 2 when the network leaves a core to run them
    on (it runs on an accelerator, or torch uses fewer threads than the machine has cores), else 0; at least 1
    for a Restorer that batches (its workers gather the batch).

    Measured (docs/performance.md, "Folders of small images"): with torch on every core, 2 workers run at
    0.90-1.06x one at a time; with a core free, 1.26x."""
    import torch

    device = getattr(restorer, "device", None)
    on_cpu = device is None or getattr(device, "type", "cpu") == "cpu"
    free_core = (os.cpu_count() or 1) > torch.get_num_threads()
    workers = 2 if not on_cpu or free_core else 0
    return max(workers, 1 if getattr(restorer, "batch", 1) > 1 else 0)


class _Pipeline:
    """Overlap decoding and encoding with the network, and group images of one size into batches: while the
    caller's thread runs the network, a small thread pool decodes the next images and writes the finished ones
    (PNG/JPEG coding and zlib release the GIL). The images go through ``restore_planars``, which with the
    restorer's ``batch`` 1 (the default on the CPU) is one ``restore_planar`` call each, as ``Restorer.run``
    makes, so the files are byte-identical to one at a time; with a larger batch, queued images of the head's
    size go through the network together (equal to float rounding).

    Work is queued by :meth:`add` and done in order, at most ``2 * workers + batch`` decodes ahead and
    ``max(workers, batch)`` writes behind, so memory stays bounded on a folder of any length. ``written`` keeps
    the input order; a decode or write failure lands in ``failed`` as one at a time reports it, but some files
    later than a failure ``run_batch`` finds itself (a clash)."""

    def __init__(self, restorer: Any, report: BatchReport, workers: int, input_range: Any, bar: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.restorer, self.report, self.input_range, self.bar = restorer, report, input_range, bar
        self.workers = workers
        self.batch: int = restorer.batch  # a plain Restorer (_pipelinable)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="restorekit-io")
        self.reads: deque = deque()  # (src, target, future of the decoded image)
        self.writes: deque = deque()  # (src, target, future of the written path)
        self.order: dict[Path, int] = {}  # target -> input position, to report the written files in input order

    def add(self, src: Path, target: Path) -> None:
        self.order[target] = len(self.order)
        self.reads.append((src, target, self.pool.submit(read_image, src)))
        while len(self.reads) > 2 * self.workers + self.batch:
            self._compute_next()

    def _fail(self, src: Path, err: BaseException) -> None:
        self.report.failed.append((str(src), str(err)))
        self.bar.set_postfix(failed=len(self.report.failed))

    def _next_group(self) -> list[tuple[Path, Path, Any]]:
        """The first queued image and, up to ``batch`` in all, the later queued ones of its size (decoded),
        taken out of the queue; a head that failed to decode is reported and gives an empty group."""
        src, target, decoded = self.reads.popleft()
        try:
            head = decoded.result()
        except PER_IMAGE_ERRORS as err:
            self._fail(src, err)
            return []
        group = [(src, target, head)]
        if self.batch == 1:
            return group
        rest: deque = deque()
        for entry in self.reads:
            if len(group) < self.batch and entry[2].exception() is None:
                planar = entry[2].result()
                if planar.color.shape == head.color.shape:
                    group.append((entry[0], entry[1], planar))
                    continue
            rest.append(entry)
        self.reads = rest
        return group

    def _compute_next(self) -> None:
        group = self._next_group()
        if not group:
            return
        results = self.restorer.restore_planars([p for _, _, p in group], self.input_range, errors="return")
        for (src, target, _), result in zip(group, results):
            if isinstance(result, BaseException):
                self._fail(src, result)
                continue
            self.writes.append((src, target, self.pool.submit(write_image, target, result, overwrite=True)))
        while len(self.writes) > max(self.workers, self.batch):
            self._collect_one()

    def _collect_one(self) -> None:
        src, target, written = self.writes.popleft()
        try:
            written.result()
        except PER_IMAGE_ERRORS as err:
            self._fail(src, err)
            return
        self.report.written.append(target)

    def finish(self) -> None:
        """Restore what is still queued and wait for every write."""
        while self.reads:
            self._compute_next()
        while self.writes:
            self._collect_one()
        self.report.written.sort(key=lambda target: self.order.get(target, -1))

    def close(self) -> None:
        """Drop queued work (an interrupted run) and wait for the writes already started: each one is atomic, so
        a file is either complete or absent, and the next run redoes what is absent."""
        self.pool.shutdown(wait=True, cancel_futures=True)


def _pipelinable(restorer: Any) -> bool:
    # Only a plain Restorer, whose run(file) is exactly read_image -> restore_planar -> write_image; a subclass
    # that decides per file (Restorer("auto") copies a clean file unchanged) goes through its own run.
    from .restorer import Restorer

    return isinstance(restorer, Restorer) and type(restorer).run is Restorer.run
