"""``Restorer("auto")``: measure what is wrong with an image, then pick the model and its strength.

>>> from restorekit import Restorer
>>> r = Restorer("auto")                                   # doctest: +SKIP
>>> r.run("photo.png", output="restored.png")              # doctest: +SKIP
>>> print(r.plan.explain())                                # doctest: +SKIP
photo.png:
  1. noise σ≈24.6 (confidence 0.90) -> spatial_rnn.denoise: the bundled denoiser is the better one below σ 43 ...

Each image is measured by :func:`restorekit.analyze`; :func:`plan` turns the measurements into a :class:`Plan`:
the models to run, in order (deblock, then denoise, then derain, then dehaze: the reverse of how the
degradations pile up on a photo), each with the reason in words. Only models whose weights are usable without a
download count (bundled, already in the cache, or converted earlier: :func:`restorekit.fetch.available_locally`),
unless ``download=True``. ``task=`` narrows the choice to one kind of degradation (``task="denoise"``: only the
noise measurement acts). An image that measures clean comes back unchanged (arrays bit-identical; a file given
``output=`` is copied byte for byte when the suffix is the input's, else decoded and written losslessly where the
format allows), and the plan says so.

The candidates, in order of preference (docs/auto.md, "Choosing the model", has the measurements):

- noise: the authors' MemNet (``memnet.denoise_s30/_s50/_s70``, one network; the record nearest σ̂) for σ̂ ≥ 30
  when its weights are there; else ``spatial_rnn.denoise`` below σ̂ :data:`DENOISE_CROSSOVER` and
  ``dsrir.denoise`` from it on (measured on CBSD68);
- JPEG: MemNet's deblocker (``memnet.jpeg_q10``/``_q20`` by the quality read from the file) for quality ≤
  :data:`JPEG_DEBLOCK_MAX`, when its weights are there; else the blind ``spatial_rnn.denoise`` up to quality
  :data:`JPEG_DENOISER_MAX` (a small measured gain), and nothing above it;
- rain: ``dsrir.derain``; haze: ``dsrir.dehaze``, only with ``task="dehaze"`` (the haze score also marks clear
  photos of bright, low-contrast scenes; otherwise the plan notes the haze and how to remove it). DSRIR is one
  all-in-one network: noise, rain and haze found together take one pass of it.

A finding whose ``present`` is None (the measurement could not decide) acts only when ``task=`` asks for its kind
(rain, which has no detector, with ``task="derain"``); a kind no model answers never acts. Noise read from a
JPEG file's coefficients (``detail["visible_sigma"]``) takes ``spatial_rnn.denoise`` whatever its σ.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from . import image as rkimage
from .analysis import Analysis, Finding, analyze
from .errors import InputError, OutputExistsError, WeightsNotAvailableError
from .fetch import available_locally
from .options import run_options
from .registry import get_record

__all__ = [
    "CANDIDATES",
    "DENOISE_CROSSOVER",
    "JPEG_DEBLOCK_MAX",
    "JPEG_DENOISER_MAX",
    "TASKS",
    "AutoRun",
    "Plan",
    "Step",
    "available_models",
    "plan",
]

log = logging.getLogger("restorekit")

# The undo order: a photo gets haze and rain in the scene, noise in the sensor, JPEG last; they are undone in
# the reverse order (deblock first, so the denoiser sees noise, not block edges).
ORDER = ("jpeg", "noise", "rain", "haze")
# task= -> the finding it acts on (the registry's task names, and the kinds themselves).
TASKS = {"jpeg": "jpeg", "denoise": "noise", "derain": "rain", "dehaze": "haze"}
_KIND_TASK = {kind: task for task, kind in TASKS.items()}
_WORDS = {"jpeg": "JPEG deblocker", "noise": "denoiser", "rain": "deraining model", "haze": "dehazing model"}

# σ (0..255) from which dsrir.denoise beats spatial_rnn.denoise on CBSD68 (tests/benchmarks/eval_auto.py).
DENOISE_CROSSOVER = 43.0
# The authors' MemNet denoiser is one network trained for σ 30, 50 and 70: used from σ̂ 30 on.
MEMNET_DENOISE = {30: "memnet.denoise_s30", 50: "memnet.denoise_s50", 70: "memnet.denoise_s70"}
MEMNET_DENOISE_FROM = 30.0
# The authors' deblocker is one network for quality 10 and 20; above this quality the blocking is mild.
MEMNET_JPEG = {10: "memnet.jpeg_q10", 20: "memnet.jpeg_q20"}
JPEG_DEBLOCK_MAX = 30
# Without a deblocker, the blind spatial RNN denoiser still gains a little on CBSD68 JPEGs up to this quality
# (first 20 images: +0.31 dB at 10, +0.24 at 20, +0.14 at 30) and next to nothing above it (+0.05 at 40, within
# the spread: -0.16 on the first 3): tests/benchmarks/eval_auto.py --only jpeg --limit 20, docs/auto.md.
JPEG_DENOISER_MAX = 30
BUNDLED_DENOISERS = ("spatial_rnn.denoise", "dsrir.denoise")
# Kinds acted on only when task= names them: the dark-channel haze score also marks clear photos of bright,
# low-contrast scenes (3 of the first 20 clean CBSD68 images), and a clean image must come back unchanged.
ASK_FIRST = frozenset({"haze"})

# Every model auto may choose, per kind.
CANDIDATES: dict[str, tuple[str, ...]] = {
    "jpeg": tuple(MEMNET_JPEG.values()),
    "noise": (*MEMNET_DENOISE.values(), *BUNDLED_DENOISERS),
    "rain": ("dsrir.derain",),
    "haze": ("dsrir.dehaze",),
}


@dataclass(frozen=True)
class Step:
    """One model to run: its registry name, the findings it answers and why it was chosen."""

    model: str
    kinds: tuple[str, ...]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model, "kinds": list(self.kinds), "reason": self.reason}


@dataclass(frozen=True)
class Plan:
    """What auto does to one image: the :class:`Step` s in order (none: the image comes back unchanged), and a
    note for every finding that does not act (unknown, no model available, outside ``task=``)."""

    analysis: Analysis
    steps: tuple[Step, ...]
    notes: tuple[str, ...] = ()
    task: str | None = None

    @property
    def unchanged(self) -> bool:
        """True when no model runs: the image is returned as it came."""
        return not self.steps

    @property
    def models(self) -> list[str]:
        return [s.model for s in self.steps]

    @property
    def reason(self) -> str:
        """The plan in one paragraph."""
        parts = [s.reason for s in self.steps] or ["returned unchanged"]
        return "; ".join(parts + list(self.notes))

    def explain(self) -> str:
        """The plan in lines: the source, each step with its reason, then the notes."""
        head = f"{self.analysis.source or 'image'}" + (f" (task={self.task})" if self.task else "") + ":"
        lines = [f"  {i}. {s.reason}" for i, s in enumerate(self.steps, 1)]
        if not self.steps:
            lines.append("  unchanged: nothing to restore")
        lines += [f"  - {note}" for note in self.notes]
        return "\n".join([head, *lines])

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.analysis.source,
            "task": self.task,
            "unchanged": self.unchanged,
            "steps": [s.to_dict() for s in self.steps],
            "notes": list(self.notes),
            "analysis": self.analysis.to_dict(),
        }


# ------------------------------------------------------------------------------------------- availability


def available_models(*, download: bool = False) -> frozenset[str]:
    """The candidates (:data:`CANDIDATES`) whose weights are usable now without a download; with
    ``download=True``, every candidate whose weights can be fetched (published and pinned)."""
    out = set()
    for names in CANDIDATES.values():
        for name in names:
            record = get_record(name)
            if download:
                ok = record.published and (record.upstream is None or record.upstream.pinned or bool(record.bundled))
            else:
                ok = available_locally(record) is not None
            if ok:
                out.add(name)
    return frozenset(out)


def _task_kind(task: str | None) -> str | None:
    if task is None:
        return None
    kind = TASKS.get(task, task if task in _KIND_TASK else None)
    if kind is None:
        choices = ", ".join(TASKS)
        raise InputError(f"auto: task={task!r} is not one it chooses a model for; use one of {choices} (or none)")
    return kind


def _missing(kind: str) -> str:
    """What to do when no model for ``kind`` is available."""
    names = CANDIDATES[kind]
    example = names[len(names) // 2] if kind == "noise" else names[0]
    return (
        f"no {_WORDS[kind]} is available without a download; on a machine with network run "
        f"`restorekit download {example}` (and copy the cache folder here), or pass download=True"
    )


def require(kind: str, available: Iterable[str]) -> None:
    """An :class:`InputError` naming what to make available when no candidate for ``kind`` is in ``available``."""
    if not set(CANDIDATES[kind]) & set(available):
        raise InputError(f"auto, task={_KIND_TASK[kind]}: {_missing(kind)}")


# ---------------------------------------------------------------------------------------------- the choice


def describe(f: Finding) -> str:
    """A finding in a few words: ``noise σ≈24.6 (confidence 0.90)``."""
    conf = f"confidence {f.confidence:.2f}"
    if f.kind == "noise":
        value = "σ unmeasured" if f.value is None else f"σ≈{f.value:.1f}"
        return f"noise {value} ({conf})"
    if f.kind == "jpeg":
        value = "quality unknown" if f.value is None else f"quality {int(round(f.value))}"
        how = f"{f.method}, " if f.method else ""
        return f"JPEG {value} ({how}{conf})"
    score = "" if f.value is None else f"score {f.value:.2f}, "
    return f"{f.kind} ({score}{conf})"


def _nearest(table: dict[int, str], value: float, available: set[str]) -> str | None:
    usable = [(abs(k - value), k) for k, name in table.items() if name in available]
    return table[min(usable)[1]] if usable else None


def _choose_noise(f: Finding, available: set[str]) -> tuple[str | None, str]:
    sigma = f.value
    if "visible_sigma" in f.detail:
        # Noise read from a JPEG's coefficients: what the pixels show is weaker and blocky, not the Gaussian
        # noise of sigma the MemNet records expect; DSRIR loses 6-10 dB on JPEG files (docs/auto.md).
        srnn = BUNDLED_DENOISERS[0]
        if srnn in available:
            return srnn, "noise under JPEG compression: the bundled spatial RNN denoiser (it gains on such files)"
        return None, _missing("noise")
    if sigma is not None and sigma >= MEMNET_DENOISE_FROM:
        name = _nearest(MEMNET_DENOISE, sigma, available)
        if name is not None:
            return name, f"the authors' MemNet denoiser (one network for σ 30-70), its record nearest σ {sigma:.0f}"
    srnn, dsrir = BUNDLED_DENOISERS
    if sigma is None:
        first, why = srnn, "σ not measured: the blind bundled denoiser (trained on σ 0-50)"
    elif sigma < DENOISE_CROSSOVER:
        first, why = srnn, f"the bundled denoiser that is the better one below σ {DENOISE_CROSSOVER:g} on CBSD68"
    else:
        first, why = dsrir, f"the bundled denoiser that is the better one from σ {DENOISE_CROSSOVER:g} up on CBSD68"
    if first in available:
        return first, why
    other = dsrir if first == srnn else srnn
    if other in available:
        return other, f"the one denoiser available ({first} is not)"
    return None, _missing("noise")


def _choose_jpeg(f: Finding, available: set[str]) -> tuple[str | None, str]:
    quality = None if f.value is None else int(round(f.value))
    if quality is not None and quality > JPEG_DEBLOCK_MAX:
        return None, (
            f"quality {quality} leaves mild artefacts, left as they are (the deblocker is trained for quality 10 and "
            f"20, and used up to {JPEG_DEBLOCK_MAX})"
        )
    name = _nearest(MEMNET_JPEG, 10 if quality is None else quality, available)
    if name is not None:
        return name, "the authors' MemNet deblocker (one network for quality 10 and 20), its nearest record"
    srnn = BUNDLED_DENOISERS[0]
    if (quality is None or quality <= JPEG_DENOISER_MAX) and srnn in available:
        return srnn, (
            f"{_missing('jpeg')}; the bundled blind denoiser helps a little at quality up to {JPEG_DENOISER_MAX} "
            "(measured on CBSD68, docs/auto.md)"
        )
    return None, _missing("jpeg") + (
        f" (the bundled denoiser makes quality {quality} files slightly worse: measured, docs/auto.md)"
        if quality is not None and quality > JPEG_DENOISER_MAX
        else ""
    )


def _choose_one(f: Finding, available: set[str]) -> tuple[str | None, str]:
    name = CANDIDATES[f.kind][0]
    if name in available:
        return name, f"the bundled all-in-one network's {_WORDS[f.kind]}"
    return None, _missing(f.kind)


_CHOOSERS: dict[str, Callable[[Finding, set[str]], tuple[str | None, str]]] = {
    "jpeg": _choose_jpeg,
    "noise": _choose_noise,
    "rain": _choose_one,
    "haze": _choose_one,
}


def _weights_key(name: str) -> tuple[Any, ...]:
    """Records that load the same network (DSRIR's four, MemNet's three denoisers) share one key."""
    record = get_record(name)
    source: Any = name
    if record.bundled is not None:
        source = record.bundled.sha256
    elif record.hub is not None and record.hub.published:
        source = record.hub.sha256
    elif record.upstream is not None:
        source = record.upstream.sha256 or record.upstream.git_blob_sha1 or record.upstream.url
    return record.arch, repr(sorted(record.config.items())), source


def plan(analysis: Analysis, available: Iterable[str] | None = None, task: str | None = None) -> Plan:
    """The :class:`Plan` for an image measured as ``analysis``.

    ``available``: the model names that may be chosen (default: :func:`available_models`, the candidates usable
    without a download). ``task``: act only on that kind of degradation (``"denoise"``, ``"jpeg"``, ``"derain"``,
    ``"dehaze"``, or the kinds ``"noise"``, ``"rain"``, ``"haze"``); a task no available model answers is an
    :class:`InputError` saying how to make one available.
    """
    kind_wanted = _task_kind(task)
    usable = set(available_models() if available is None else available)
    if kind_wanted is not None:
        require(kind_wanted, usable)
    steps: list[Step] = []
    notes: list[str] = []
    findings = sorted(analysis.findings, key=lambda f: ORDER.index(f.kind) if f.kind in ORDER else len(ORDER))
    for f in findings:
        if f.kind not in _CHOOSERS:
            if f.present:
                notes.append(f"{describe(f)}: auto has no model for {f.kind}; left as it is")
            continue
        if kind_wanted is not None and f.kind != kind_wanted:
            if f.present:
                notes.append(f"{describe(f)}: not acted on (task={task})")
            continue
        if f.present is None and kind_wanted is None:
            notes.append(f"{f.kind}: could not be measured ({f.method or 'unknown'}); nothing done for it")
            continue
        if f.present is False:
            if kind_wanted is not None:
                notes.append(f"task={task}: no {f.kind} found ({describe(f)}); nothing to do")
            continue
        if f.kind in ASK_FIRST and kind_wanted is None:
            notes.append(
                f"{describe(f)}: not removed unasked (the detector also fires on clear photos of bright, "
                f"low-contrast scenes); pass task={_KIND_TASK[f.kind]!r} to remove it"
            )
            continue
        model, why = _CHOOSERS[f.kind](f, usable)
        if f.present is None:  # task= asks for this kind: the user's word stands in for the measurement
            why = f"could not be measured ({f.method or 'unknown'}), done because task={task} asks for it; {why}"
        if model is None:
            notes.append(f"{describe(f)}: {why}")
        else:
            steps.append(Step(model, (f.kind,), f"{describe(f)} -> {model}: {why}"))
    # Consecutive steps that load the same network (DSRIR for noise, then rain) run it once.
    merged: list[Step] = []
    for step in steps:
        if merged and _weights_key(merged[-1].model) == _weights_key(step.model):
            last = merged.pop()
            found = step.reason.split(" -> ")[0]
            reason = f"{last.reason}; {found}: the same network, in the same pass"
            step = Step(last.model, last.kinds + step.kinds, reason)
        merged.append(step)
    if not merged and not notes:
        notes.append("clean: no degradation found, returned unchanged")
    return Plan(analysis, tuple(merged), tuple(notes), task)


# ------------------------------------------------------------------------------------------- the runner


@dataclass(frozen=True)
class _AutoRecord:
    """The little of a :class:`~restorekit.registry.WeightRecord` that batch runs and messages read."""

    name: str = "auto"
    task: str = "auto"
    scale: int = 1


class AutoRun:
    """The automatic choice behind ``Restorer("auto")`` (:class:`restorekit.restorer.AutoRestorer`, which binds it
    to the Restorer's input checks and models): :meth:`run` takes every input kind ``Restorer.run`` takes, measures
    each image, and runs what :func:`plan` chose. ``plan`` is the last image's :class:`Plan`; ``plans`` one per
    image of the last call (a list, or a batch tensor). ``on_plan``: called with each plan as it is made.

    ``download=True`` lets auto choose models whose weights still have to be fetched (and fetches them on first
    use); ``available=`` (model names) fixes the set to choose from instead. Models are built on first use, once
    per network, with this object's ``device``, ``dtype``, ``tile``, ``allow_unpinned`` and ``progress``.
    """

    condition = None  # auto chooses among models that take only the image
    mask_channels = 0

    def __init__(
        self,
        name: str = "auto",
        task: str | None = None,
        *,
        scale: int | None = None,
        weights: str | os.PathLike | None = None,
        device: str | torch.device = "auto",
        dtype: str | torch.dtype = "auto",
        tile: int | str | None = "auto",
        pretrained: bool = True,
        allow_unpinned: bool | None = None,
        progress: bool | None = None,
        download: bool = False,
        available: Iterable[str] | None = None,
        on_plan: Callable[[Plan], None] | None = None,
        compile: bool = False,  # noqa: A002 - Restorer's keyword, passed on to each chosen model
        batch: int | str = "auto",
    ) -> None:
        from .policy import check_batch, check_compile

        self.compile = check_compile(compile)
        if check_batch(batch) not in ("auto", 1):
            raise InputError(
                f"auto chooses a model for each image, so it restores one image at a time; drop batch={batch!r} "
                "(CLI: --batch), or name a model to batch images of one size"
            )
        self.batch = 1
        if name != "auto":
            raise InputError(f"AutoRun is Restorer('auto'), not {name!r}")
        if scale not in (None, 1):
            raise InputError("auto restores at the input's size; for super-resolution name a model, e.g. msrn.sr_x4")
        if weights is not None:
            raise InputError("auto chooses among registered models; weights= needs a model name, e.g. Restorer(NAME)")
        if not pretrained:
            raise InputError("auto runs pretrained models only; pretrained=False needs a model name")
        if not (tile in ("auto", None) or (isinstance(tile, int) and not isinstance(tile, bool) and tile >= 0)):
            raise InputError(f"tile must be 'auto', None/0 (whole image) or a positive size in pixels, not {tile!r}")
        self.options = run_options(device, dtype, allow_unpinned, progress)
        self.device = self.options.device
        self.dtype = self.options.dtype
        self.tile = tile
        self.progress = self.options.progress
        self.task = task
        self.kind = _task_kind(task)
        self.download = bool(download)
        self.record = _AutoRecord(task=task or "auto")
        self.available = frozenset(available) if available is not None else available_models(download=self.download)
        if self.kind is not None:
            require(self.kind, self.available)
        self.models: dict[tuple[Any, ...], Any] = {}
        self.plan: Plan | None = None
        self.plans: list[Plan] = []
        self.on_plan = on_plan
        self.last_tile: int | None = None

    def __repr__(self) -> str:
        task = f", task={self.task!r}" if self.task else ""
        return f"Restorer('auto'{task}, device={str(self.device)!r})"

    # ------------------------------------------------------------ hooks (restorekit.restorer.AutoRestorer)
    def _model(self, name: str, **options: Any) -> Any:  # pragma: no cover - bound by AutoRestorer
        raise NotImplementedError

    def _unit(self, x: torch.Tensor, value_range: Any, what: str) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def _check_tensor(self, x: torch.Tensor) -> None:  # pragma: no cover
        raise NotImplementedError

    # ------------------------------------------------------------ planning
    def plan_for(self, x: Any, *, input_range: tuple[float, float] | None = None) -> Plan:
        """Measure ``x`` (a path, PIL image, array or CHW tensor) and return its plan, without running it."""
        return self._plan(self._source_for_analysis(x, input_range))

    def _plan(self, source: Any, label: str | None = None) -> Plan:
        analysis = analyze(source)
        if label is not None and analysis.source is None:
            analysis = dataclasses.replace(analysis, source=label)
        p = plan(analysis, self.available, self.task)
        log.info("auto: %s", p.explain())
        if self.on_plan is not None:
            self.on_plan(p)
        return p

    def _source_for_analysis(self, x: Any, input_range: Any) -> Any:
        if input_range is None or isinstance(x, (str, os.PathLike, Image.Image)):
            return x
        if isinstance(x, torch.Tensor):
            return self._unit(x.detach().to("cpu", torch.float32), input_range, "the input")
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            planar = rkimage.numpy_to_planar(x)
            return self._unit(planar.color, input_range, "the input").permute(1, 2, 0).numpy()
        return x

    # ------------------------------------------------------------ running
    def _get(self, name: str) -> Any:
        key = _weights_key(name)
        if key not in self.models:
            self.models[key] = self._model(
                name,
                device=self.device,
                dtype=self.options.dtype,
                tile=self.tile,
                allow_unpinned=self.options.allow_unpinned,
                progress=self.options.progress,
                compile=self.compile,
            )
        return self.models[key]

    def _apply(self, p: Plan, planar: rkimage.Planar) -> rkimage.Planar:
        """Run the plan's steps on a planar image whose pixels are in [0, 1]."""
        for step in p.steps:
            try:
                model = self._get(step.model)
            except WeightsNotAvailableError as err:
                raise WeightsNotAvailableError(f"auto chose {step.model} ({step.reason}), but: {err}") from None
            planar = model.restore_planar(planar)
            self.last_tile = model.last_tile
        return planar

    def run(
        self,
        x: Any,
        output: str | os.PathLike | None = None,
        *,
        overwrite: bool = True,
        mask: Any = None,
        input_range: tuple[float, float] | None = None,
    ) -> Any:
        """Measure and restore ``x`` as :meth:`restorekit.Restorer.run` does (same inputs, outputs and
        ``output=``/``overwrite``/``input_range``); ``mask`` is refused (auto chooses no masked model)."""
        if mask is not None:
            raise InputError(
                "auto takes no mask: it chooses among models that take only the image; for inpainting or "
                "colourisation name the model (spatial_rnn.inpaint, spatial_rnn.colorize)"
            )
        if isinstance(x, (list, tuple)):
            return self._run_list(list(x), output, overwrite, input_range)
        self.plans = []
        if isinstance(x, (str, os.PathLike)):
            return self._run_file(Path(x), output, overwrite, input_range)
        if isinstance(x, torch.Tensor):
            return self._run_tensor(x, output, overwrite, input_range)
        if isinstance(x, np.ndarray):
            to_planar, from_planar = rkimage.numpy_to_planar, rkimage.planar_to_numpy
        elif isinstance(x, Image.Image):
            to_planar, from_planar = rkimage.pil_to_planar, rkimage.planar_to_pil
        else:
            raise InputError(
                f"Cannot restore an object of type {type(x).__name__}: pass a path, a PIL image, a numpy "
                "array (HW/HWC), a torch tensor (CHW/NCHW float in [0, 1]) or a list of them."
            )
        planar = to_planar(x)
        unit = self._unit_planar(planar, input_range)
        p = self._remember(self._plan(x if input_range is None else self._hwc(unit)))
        if p.unchanged:
            if output is not None:
                rkimage.write_image(output, planar, overwrite=overwrite)
            return x.copy()  # the caller's pixels, bit for bit, in a new object (as a restored result is)
        return rkimage.finish_in_memory(self._apply(p, unit), from_planar, output, overwrite, input_range)

    __call__ = run

    def restore_planar(
        self, planar: rkimage.Planar, mask: Any = None, input_range: tuple[float, float] | None = None
    ) -> rkimage.Planar:
        """Measure and restore one decoded image (what evaluation calls); unchanged when it measures clean."""
        if mask is not None:
            raise InputError("auto takes no mask")
        unit = self._unit_planar(planar, input_range)
        p = self._remember(self._plan(self._hwc(unit)), reset=True)
        return planar if p.unchanged else self._apply(p, unit)

    def _remember(self, p: Plan, reset: bool = False) -> Plan:
        if reset:
            self.plans = []
        self.plan = p
        self.plans.append(p)
        return p

    @staticmethod
    def _hwc(planar: rkimage.Planar) -> np.ndarray:
        return planar.color.permute(1, 2, 0).numpy()

    def _unit_planar(self, planar: rkimage.Planar, input_range: Any) -> rkimage.Planar:
        if planar.bit_depth != 32 and input_range is not None:
            raise InputError(
                f"input_range= applies to float images, but this one is {planar.bit_depth}-bit, which is read as "
                f"0-{2**planar.bit_depth - 1} already; drop input_range"
            )
        if planar.bit_depth != 32:
            return planar
        alpha = None if planar.alpha is None else self._unit(planar.alpha, input_range, "its alpha channel")
        return dataclasses.replace(planar, color=self._unit(planar.color, input_range, "the input"), alpha=alpha)

    def _run_file(self, src: Path, output: Any, overwrite: bool, input_range: Any) -> Any:
        if output is not None and Path(output).resolve() == src.resolve():
            raise InputError(f"Refusing to overwrite the input {src} with its own result; choose another output.")
        planar = rkimage.read_image(src)
        unit = self._unit_planar(planar, input_range)
        source = src if input_range is None else self._hwc(unit)
        p = self._remember(self._plan(source, label=str(src)))
        if p.unchanged:
            if output is None:
                return rkimage.planar_to_numpy(planar)
            return self._copy_file(src, Path(output), planar, overwrite)
        result = self._apply(p, unit)
        if output is None:
            return rkimage.planar_to_numpy(result)
        return rkimage.write_image(output, result, overwrite=overwrite)

    @staticmethod
    def _copy_file(src: Path, target: Path, planar: rkimage.Planar, overwrite: bool) -> Path:
        """A clean file: the same bytes when the format is the same (a JPEG is not compressed again, metadata is
        kept), else its decoded pixels written in the target's format (lossless for PNG and TIFF)."""
        same = {".jpg": ".jpeg", ".tif": ".tiff"}
        if same.get(src.suffix.lower(), src.suffix.lower()) == same.get(target.suffix.lower(), target.suffix.lower()):
            if not overwrite and target.exists():
                raise OutputExistsError(f"{target} already exists; pass overwrite=True to replace it")
            with open(src, "rb") as f:
                rkimage.atomic_write(target, lambda out: shutil.copyfileobj(f, out), overwrite=overwrite)
            return target
        return rkimage.write_image(target, planar, overwrite=overwrite)

    def _run_tensor(self, x: torch.Tensor, output: Any, overwrite: bool, input_range: Any) -> torch.Tensor:
        self._check_tensor(x)
        batch = x if x.ndim == 4 else x.unsqueeze(0)
        if output is not None and batch.shape[0] != 1:
            raise InputError("output= with a batch of several images: pass a list of tensors with an output directory")
        outs = []
        for item in batch:
            unit = self._unit(item.detach().to("cpu", torch.float32), input_range, "the input")
            p = self._remember(self._plan(unit))
            if p.unchanged:
                outs.append(item.clone())
                continue
            planar = self._apply(p, rkimage.Planar(color=unit, alpha=None, bit_depth=32))
            y = planar.color
            if input_range is not None:
                lo, hi = input_range
                y = y * (hi - lo) + lo
            outs.append(y.to(device=x.device, dtype=x.dtype))
        result = torch.stack(outs)
        if output is not None:
            lo, hi = input_range or (0.0, 1.0)
            color = ((result[0].detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
            rkimage.write_image(output, rkimage.Planar(color=color, alpha=None, bit_depth=32), overwrite=overwrite)
        return result if x.ndim == 4 else result[0]

    def _run_list(self, items: list[Any], output: Any, overwrite: bool, input_range: Any) -> list[Any]:
        targets: list[Path | None] = [None] * len(items)
        if output is not None:
            out_dir = Path(output)
            if out_dir.is_file():
                raise InputError(f"output={out_dir} is a file; for a list of inputs pass a folder")
            paths = [Path(item) if isinstance(item, (str, os.PathLike)) else None for item in items]
            targets = [out_dir / (p.name if p else f"{i:04d}.png") for i, p in enumerate(paths)]
            labels = [str(p) if p else f"input {i}" for i, p in enumerate(paths)]
            clashes = rkimage.output_clashes(list(zip(labels, targets)), [p for p in paths if p is not None])
            if clashes:
                listed = "; ".join(f"{labels[i]}: {why}" for i, why in list(clashes.items())[:5])
                more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
                raise InputError(
                    f"refusing to start: {listed}{more}. Rename the inputs, or restore them into separate folders."
                )
        results, plans = [], []
        for item, target in zip(items, targets):
            results.append(self.run(item, target, overwrite=overwrite, input_range=input_range))
            plans += self.plans
        self.plans = plans
        return results
