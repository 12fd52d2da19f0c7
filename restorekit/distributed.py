"""Restore many images with Ray Data: a pool of actors, one model each (and one GPU each where there are GPUs),
on one machine or on a cluster. Needs ``pip install "restorekit[ray]"``; see docs/scale.md.

>>> from restorekit.distributed import run_ray
>>> run_ray("spatial_rnn.denoise", ["photos/"], "out/").summary()  # doctest: +SKIP
'12 written, 0 skipped (already there), 0 failed'

:func:`run_ray` is ``restorekit run --engine ray``. The driver plans the run with the same
:func:`~restorekit.batch.plan_run` that :func:`restorekit.batch.run_batch` uses (the same inputs, output names,
refusals, masks, and skips of finished outputs) and removes the temporary files a killed run left; Ray Data
then hands the remaining files to the actors, each of which builds
the model once and restores file after file exactly as ``restorekit run`` does (the same call, so the same bytes,
written atomically). A file that fails is reported in the :class:`~restorekit.batch.BatchReport`, never raised.
The paths travel as text: inputs, masks, ``weights=`` and the output folder must be reachable under the same
paths on the driver and on every node (a shared file system).

:func:`restore_dataset` maps a Ray Dataset of images (``ray.data.read_images``) to their restored arrays, for
pipelines of your own.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .batch import BatchReport, PlannedFile, _stale_temporaries, plan_run
from .errors import PER_IMAGE_ERRORS, InputError, RestorekitError

__all__ = ["INSTALL_HINT", "PlannedFile", "plan_run", "restore_dataset", "run_ray"]

INSTALL_HINT = 'pip install "restorekit[ray]"'
_MIN_RAY = (2, 10)  # ray.data.from_items(override_num_blocks=) and map_batches(compute=ActorPoolStrategy(...))
_MAX_BLOCKS = 4096  # one block per file up to this many files (fine-grained balancing), then files share blocks
_WRITTEN, _FAILED, _FATAL = "written", "failed", "fatal"


# ------------------------------------------------------------------------------------------ Ray itself


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError as err:
        raise RestorekitError(f"the Ray engine needs Ray Data, which is not installed here: {INSTALL_HINT}") from err
    parts = (ray.__version__.split(".") + ["0"])[:2]
    version = tuple(int(p) if p.isdigit() else 0 for p in parts)
    if version < _MIN_RAY:
        raise RestorekitError(
            f"Ray {ray.__version__} is too old for the Ray engine (it needs {'.'.join(map(str, _MIN_RAY))} or "
            f'newer): pip install -U "ray[data]>={".".join(map(str, _MIN_RAY))}"'
        )
    return ray


def _connect(ray: Any, address: str | None) -> bool:
    """Use the Ray this process already joined, else join ``address`` (``"auto"``, ``"ray://HOST:10001"``), else
    ``$RAY_ADDRESS``, else start a local Ray. True when this call connected (and so should disconnect)."""
    if ray.is_initialized():
        return False
    quiet = logging.WARNING  # restorekit reports the run itself; Ray's start-up lines are not news
    try:
        if address is None and not os.environ.get("RAY_ADDRESS"):
            ray.init(include_dashboard=False, logging_level=quiet)
        else:
            ray.init(address=address, logging_level=quiet)
    except ConnectionError as err:
        where = address or os.environ.get("RAY_ADDRESS")
        raise RestorekitError(
            f"could not join the Ray cluster at {where}: {err}. Start one with `ray start --head` (then "
            "--ray-address auto on its nodes), or leave --ray-address out for a local Ray"
        ) from None
    return True


@dataclass(frozen=True)
class _Layout:
    """How many actors, what each reserves, the device each builds its model on, and its torch threads (0: as
    Ray sets them)."""

    min_size: int
    max_size: int
    num_cpus: float
    num_gpus: float
    device: str
    threads: int


def _layout(
    ray: Any,
    device: str,
    actors: int | None,
    gpus_per_actor: float | None,
    cpus_per_actor: float | None,
    n_rows: int | None,
) -> _Layout:
    """One actor per GPU; on CPUs, actors as wide as this process's torch threads (what ``restorekit run`` uses
    here, so the bytes are the same: CPU convolutions sum in an order that depends on the thread count), as many
    as the cluster holds, or ``actors`` sharing the CPUs."""
    import torch

    if actors is not None and (isinstance(actors, bool) or not isinstance(actors, int) or actors < 1):
        raise InputError(f"actors must be a whole number of at least 1, not {actors!r}")
    for name, value in (("gpus_per_actor", gpus_per_actor), ("cpus_per_actor", cpus_per_actor)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0):
            raise InputError(f"{name} must be a number of at least 0, not {value!r}")
    resources = ray.cluster_resources()
    gpus, cpus = float(resources.get("GPU", 0)), float(resources.get("CPU", 0))
    node_cpus = max((float(n["Resources"].get("CPU", 0)) for n in ray.nodes() if n.get("Alive")), default=cpus)
    wants_cuda = device.startswith("cuda")
    on_gpu = (wants_cuda or device == "auto") and gpus > 0 and gpus_per_actor != 0
    if wants_cuda and not on_gpu:
        raise InputError(
            f"device {device!r}, but the Ray cluster has no GPUs to give the actors"
            + (" (gpus_per_actor=0)" if gpus > 0 else "")
            + "; use device 'auto' or 'cpu'"
        )
    if cpus_per_actor is not None:
        per_cpu = float(cpus_per_actor)
    elif on_gpu:
        per_cpu = 1.0
    else:
        wide = min(torch.get_num_threads(), node_cpus)
        per_cpu = float(max(1, int(wide if actors is None else min(wide, cpus // actors))))
    per_gpu = (1.0 if gpus_per_actor is None else float(gpus_per_actor)) if on_gpu else 0.0
    # Ray gives each GPU actor its own GPU (CUDA_VISIBLE_DEVICES): inside the actor it is device cuda.
    actor_device = "cuda" if on_gpu and wants_cuda else device
    if per_gpu:
        fits = int(gpus // per_gpu)
    else:
        fits = int(cpus // per_cpu) if per_cpu else int(cpus)
    fits = max(1, fits)
    size = actors if actors is not None else fits
    if n_rows is not None:
        size = max(1, min(size, n_rows))
    threads = 0 if on_gpu else max(1, int(per_cpu))
    # Start with what the cluster holds now; an autoscaling cluster may add the rest.
    return _Layout(min(size, fits), size, per_cpu, per_gpu, actor_device, threads)


@contextlib.contextmanager
def _quiet_ray_data(ray: Any) -> Iterator[None]:
    """Ray Data's own progress bars off (restorekit shows its bar, honouring ``progress=``) and its per-run INFO
    lines down to warnings, for the run only."""
    ctx = ray.data.DataContext.get_current()
    bars = ctx.enable_progress_bars
    loggers = [logging.getLogger(n) for n in ("ray.data._internal.execution", "ray.data._internal.progress")]
    levels = [lg.level for lg in loggers]
    ctx.enable_progress_bars = False
    loggers[0].setLevel(logging.WARNING)
    loggers[1].setLevel(logging.ERROR)  # it only says that the bars are off
    try:
        yield
    finally:
        ctx.enable_progress_bars = bars
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _compute(ray: Any, layout: _Layout) -> Any:
    from ray.data import ActorPoolStrategy

    if layout.min_size == layout.max_size:
        return ActorPoolStrategy(size=layout.max_size)
    return ActorPoolStrategy(min_size=layout.min_size, max_size=layout.max_size)


# ------------------------------------------------------------------------------------------ the model's facts


@dataclass(frozen=True)
class _Name:
    name: str


@dataclass(frozen=True)
class _Facts:
    """What the driver needs to plan (``record.name``, ``condition``) without loading a network."""

    record: _Name
    condition: str | None


def _facts(model: str, task: str | None, scale: int | None, options: dict[str, Any]) -> _Facts:
    """The name and condition ``methods.runner`` would give, for a catalogue method (built on the CPU: cheap, and
    every refusal of an option comes now) or a registered network (its record; weights load on the actors)."""
    from .errors import UnknownModelError
    from .methods import is_method, runner, unknown_name

    if is_method(model):
        built = runner(model, task, scale=scale, **{**options, "device": "cpu"})
        return _Facts(_Name(built.record.name), built.condition)
    from .feeding import Feeding
    from .registry import get_arch, get_record

    try:
        record = get_record(model, task, scale=scale)
    except UnknownModelError as err:
        raise unknown_name(err, model) from None
    return _Facts(_Name(record.name), Feeding.of(get_arch(record.arch), record.config).condition)


# ------------------------------------------------------------------------------------------ the actors


class _FileWorker:
    """One actor of :func:`run_ray`: builds the runner once, then restores each row's file as ``run_batch`` does.

    Subclassed per run with the class attributes ``options`` (``methods.runner``'s keywords) and ``input_range``,
    so that Ray ships the options with the class and the actors take no constructor arguments."""

    options: dict[str, Any] = {}
    input_range: tuple[float, float] | None = None
    threads = 0

    def __init__(self) -> None:
        from .methods import runner

        _set_threads(self.threads)
        self.runner: Any = None
        self.error: BaseException | None = None
        try:
            self.runner = runner(**self.options)
        except Exception as err:  # noqa: BLE001 - sent back to the driver, which raises it there and stops
            self.error = err

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        if self.error is None and getattr(self.runner, "batch", 1) > 1 and not any(batch["mask"]):
            try:
                return self._batched(batch)
            except Exception as err:  # noqa: BLE001 - what run_batch would raise: the driver raises it (below)
                self.error = err
        status: list[str] = []
        reason: list[str] = []
        error: list[bytes] = []
        for src, target, mask in zip(batch["src"], batch["target"], batch["mask"]):
            if self.error is None:
                options: dict[str, Any] = {} if not mask else {"mask": str(mask)}
                if self.input_range is not None:
                    options["input_range"] = self.input_range
                try:
                    self.runner.run(str(src), str(target), overwrite=True, **options)
                except PER_IMAGE_ERRORS as err:
                    status.append(_FAILED)
                    reason.append(str(err))
                    error.append(b"")
                    continue
                except Exception as err:  # noqa: BLE001 - what run_batch would raise: the driver raises it
                    self.error = err
                else:
                    status.append(_WRITTEN)
                    reason.append("")
                    error.append(b"")
                    continue
            status.append(_FATAL)
            reason.append(f"{type(self.error).__name__}: {self.error}")
            error.append(_pickled(self.error))
        return {"index": batch["index"], "status": status, "reason": reason, "error": error}

    def _batched(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The call's files with a Restorer that batches, through ``run_batch``'s own pipeline (decoding ahead,
        those of one size restored together, writing behind); a file's own failure is its row's."""
        from pathlib import Path

        from tqdm.auto import tqdm

        from .batch import BatchReport, _Pipeline, default_workers

        files = [(Path(str(src)), Path(str(target))) for src, target in zip(batch["src"], batch["target"])]
        report, bar = BatchReport(), tqdm(disable=True)
        pipeline = _Pipeline(self.runner, report, default_workers(self.runner), self.input_range, bar)
        try:
            for src, target in files:
                pipeline.add(src, target)
            pipeline.finish()
        finally:
            pipeline.close()
            bar.close()
        written, reasons = set(report.written), dict(report.failed)
        status = [_WRITTEN if target in written else _FAILED for _, target in files]
        reason = ["" if target in written else reasons.get(str(src), "") for src, target in files]
        return {"index": batch["index"], "status": status, "reason": reason, "error": [b""] * len(status)}


def _batch_size(batch_size: int | None, batch: int | str) -> int:
    """Rows per call to an actor: ``batch_size``, or by default the network batch (so that a call can fill it)."""
    if batch_size is None:
        return batch if isinstance(batch, int) and not isinstance(batch, bool) and batch > 1 else 1
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a whole number of at least 1, not {batch_size!r}")
    return batch_size


def _set_threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _pickled(err: BaseException) -> bytes:
    try:
        return pickle.dumps(err)
    except Exception:  # noqa: BLE001 - an exception that cannot travel: its text does
        return b""


def _fatal(reason: str, payload: bytes) -> BaseException:
    if payload:
        try:
            err = pickle.loads(payload)
            if isinstance(err, BaseException):
                return err
        except Exception:  # noqa: BLE001
            pass
    return RestorekitError(reason)


def _worker_class(options: dict[str, Any], input_range: tuple[float, float] | None, threads: int) -> type:
    return type("RestoreFiles", (_FileWorker,), {"options": options, "input_range": input_range, "threads": threads})


# ------------------------------------------------------------------------------------------ run_ray


def run_ray(
    model: str,
    inputs: Sequence[str | os.PathLike] | str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    task: str | None = None,
    scale: int | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str = "auto",
    tile: int | str | None = "auto",
    allow_unpinned: bool | None = None,
    lam: float | None = None,
    overwrite: bool = False,
    masks: str | os.PathLike | None = None,
    input_range: tuple[float, float] | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float | None = None,
    batch_size: int | None = None,
    address: str | None = None,
    progress: bool | None = None,
    batch: int | str = "auto",
) -> BatchReport:
    """Restore every input into ``out_dir`` on Ray: ``restorekit run MODEL INPUTS -o OUT --engine ray``.

    The model and its options (``task`` ... ``lam``) mean what they mean for ``restorekit run``
    (:func:`restorekit.methods.runner`); ``inputs``, ``overwrite``, ``masks`` and ``input_range`` what they mean
    for :func:`restorekit.batch.run_batch`, and the result is the same report with the same outputs, byte for
    byte. Finished outputs are skipped unless ``overwrite``, so a killed run started again does only the rest.

    ``actors``: how many models run at once. Default: one per GPU of the cluster when it has GPUs and ``device``
    is ``"auto"`` or ``"cuda"`` (``gpus_per_actor`` each, default 1; 0.5 puts two models on a GPU; 0 runs on
    CPUs); on CPUs, as many as fit actors of ``cpus_per_actor`` CPUs, by default as many as the torch threads of
    this process (what ``restorekit run`` uses here: the same thread count gives the same bytes, as CPU
    convolutions sum in an order that depends on it). Never more actors than files. A CPU actor's model uses
    as many threads as it has CPUs; ``actors`` without ``cpus_per_actor`` shares the cluster's CPUs among them
    (thinner actors may differ from a wider run by a level in a pixel). ``batch``: the Restorer's (images of
    one size per network call; ``"auto"``: the measured default, 1 on CPUs). ``batch_size``: files per call to an
    actor (None: ``batch`` when it is a number, else 1); an actor batches the files of one call.
    ``address``: the Ray cluster to join (``"auto"`` on a node of it, ``"ray://HOST:10001"``); None: a Ray
    this process already joined, else ``$RAY_ADDRESS``, else a local Ray that is shut down afterwards (a Ray
    the caller joined is left as it was). ``progress``: restorekit's bar over the files (None: when stderr is a
    terminal); Ray Data's own bars are off during the run.
    """
    from tqdm.auto import tqdm

    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    batch_size = _batch_size(batch_size, batch)
    ray = _import_ray()
    options: dict[str, Any] = {
        "weights": None if weights is None else str(weights),
        "dtype": dtype,
        "tile": tile,
        "allow_unpinned": allow_unpinned,
        "lam": lam,
        "batch": batch,
    }
    facts = _facts(model, task, scale, {**options, "device": device})
    plan, missing = plan_run(facts, list(inputs), out_dir, overwrite=overwrite, masks=masks)
    rows = [
        {"index": i, "src": str(p.src), "target": str(p.target), "mask": "" if p.mask is None else str(p.mask)}
        for i, p in enumerate(plan)
        if p.todo
    ]
    for i in (row["index"] for row in rows):  # what a killed run left half-written is redone from scratch
        for tmp in _stale_temporaries(plan[i].target):
            tmp.unlink(missing_ok=True)
    results: dict[int, tuple[str, str]] = {}
    if rows:
        connected = _connect(ray, address)
        try:
            layout = _layout(ray, str(device), actors, gpus_per_actor, cpus_per_actor, len(rows))
            worker = _worker_class(
                {"model": model, "task": task, "scale": scale, **options, "device": layout.device, "progress": False},
                input_range,
                layout.threads,
            )
            bar = tqdm(
                total=len(rows),
                desc=facts.record.name,
                unit="img",
                disable=None if progress is None else not progress,
                file=sys.stderr,
            )
            with _quiet_ray_data(ray), contextlib.closing(bar):
                ds = ray.data.from_items(rows, override_num_blocks=min(len(rows), _MAX_BLOCKS))
                done = ds.map_batches(
                    worker,
                    batch_size=batch_size,
                    batch_format="numpy",
                    compute=_compute(ray, layout),
                    num_cpus=layout.num_cpus,
                    num_gpus=layout.num_gpus,
                )
                for row in done.iter_rows():
                    if row["status"] == _FATAL:
                        raise _fatal(str(row["reason"]), bytes(row["error"]))
                    results[int(row["index"])] = (str(row["status"]), str(row["reason"]))
                    bar.update(1)
                    if row["status"] == _FAILED:
                        bar.set_postfix(failed=len(missing) + sum(s == _FAILED for s, _ in results.values()))
        finally:
            if connected:
                ray.shutdown()
    report = BatchReport(failed=list(missing))
    for i, p in enumerate(plan):
        if p.failure is not None:
            report.failed.append((str(p.src), p.failure))
        elif p.skip:
            report.skipped.append(p.target)
        else:
            status, reason = results.get(i, (_FAILED, "the Ray job ended without restoring it; run again to resume"))
            if status == _WRITTEN:
                report.written.append(p.target)
            else:
                report.failed.append((str(p.src), reason))
    return report


# ------------------------------------------------------------------------------------------ restore_dataset


class _ArrayWorker:
    """One actor of :func:`restore_dataset`: a Restorer built once, applied to each row's image array."""

    options: dict[str, Any] = {}
    column = "image"
    output_column = "image"
    mask_column: str | None = None
    input_range: tuple[float, float] | None = None
    threads = 0

    def __init__(self) -> None:
        from .methods import runner

        _set_threads(self.threads)
        self.runner = runner(**self.options)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        masks = list(batch[self.mask_column]) if self.mask_column is not None else None
        # Restorer.run on the list: images of one size go through the network together when its batch allows.
        restored = self.runner.run(list(batch[self.column]), mask=masks, input_range=self.input_range)
        return {**batch, self.output_column: restored}


def restore_dataset(
    ds: Any,
    model: str,
    task: str | None = None,
    *,
    scale: int | None = None,
    weights: str | os.PathLike | None = None,
    device: str = "auto",
    dtype: str = "auto",
    tile: int | str | None = "auto",
    allow_unpinned: bool | None = None,
    column: str = "image",
    output_column: str | None = None,
    mask_column: str | None = None,
    input_range: tuple[float, float] | None = None,
    actors: int | None = None,
    gpus_per_actor: float | None = None,
    cpus_per_actor: float | None = None,
    batch_size: int | None = None,
    batch: int | str = "auto",
) -> Any:
    """The Ray Dataset ``ds`` with each image in ``column`` restored by ``model``, one model per actor.

    ``ds[column]`` holds images as ``ray.data.read_images`` gives them (HWC or HW arrays, uint8, uint16 or float
    in [0, 1], sizes may differ from row to row); each comes back as :meth:`Restorer.run` returns it for that
    array (same kind and dtype; an SR model's is larger), in ``output_column`` (default: ``column`` itself).
    The other columns pass through. ``mask_column``: each row's mask, for inpainting and colourisation models.
    The model options, ``actors``, ``gpus_per_actor``, ``cpus_per_actor``, ``batch`` and ``batch_size`` are
    :func:`run_ray`'s. The result is lazy, as Ray Datasets are; an image that cannot be restored fails the
    dataset when it runs (Ray Data's ``max_errored_blocks`` lets it go on).

    >>> ds = restore_dataset(ray.data.read_images("photos/"), "spatial_rnn.denoise")  # doctest: +SKIP
    >>> ds.write_images("out/", column="image")  # doctest: +SKIP
    """
    from .methods import is_method

    ray = _import_ray()
    if not isinstance(ds, ray.data.Dataset):
        raise InputError(f"restore_dataset takes a ray.data.Dataset (e.g. ray.data.read_images(...)), not {ds!r}")
    if is_method(model):
        raise InputError(f"restore_dataset runs networks on arrays; {model} is a method on files: use run_ray")
    batch_size = _batch_size(batch_size, batch)
    facts = _facts(model, task, scale, {})
    if (mask_column is None) != (facts.condition is None):
        need = "takes no mask: drop mask_column" if facts.condition is None else "needs mask_column= (a mask per row)"
        raise InputError(f"{facts.record.name} {need}")
    _connect(ray, None)  # the dataset runs later, on the Ray it was made for; it must know its GPUs now
    # One CPU per CPU actor unless told otherwise: the reads that feed the actors need CPUs too.
    layout = _layout(ray, str(device), actors, gpus_per_actor, 1 if cpus_per_actor is None else cpus_per_actor, None)
    options = {
        "model": model,
        "task": task,
        "scale": scale,
        "weights": None if weights is None else str(weights),
        "device": layout.device,
        "dtype": dtype,
        "tile": tile,
        "allow_unpinned": allow_unpinned,
        "progress": False,
        "batch": batch,
    }
    worker = type(
        "RestoreArrays",
        (_ArrayWorker,),
        {
            "options": options,
            "column": column,
            "output_column": output_column or column,
            "mask_column": mask_column,
            "input_range": input_range,
            "threads": layout.threads,
        },
    )
    if actors is None:  # leave room for the reads that feed the actors
        layout = dataclasses.replace(layout, min_size=1)
    return ds.map_batches(
        worker,
        batch_size=batch_size,
        batch_format="numpy",
        compute=_compute(ray, layout),
        num_cpus=layout.num_cpus,
        num_gpus=layout.num_gpus,
    )
