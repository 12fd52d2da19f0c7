"""The training configuration: one dataclass, per-model presets that follow each paper, TOML/JSON files.

Precedence, lowest first: the preset of the model being trained, then a config file, then flags
(:func:`resolve`). Every value is plain data so a resolved config goes into checkpoints and
``config.json`` as is.

Presets map each paper's recipe (``../shared/docs/architectures.md``) onto optimiser *steps*; where a
paper counts epochs the step counts below assume its data set and batch size (noted per row).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["TrainConfig", "PRESETS", "ARCH_RECIPES", "CPU_POLICY", "preset", "load_file", "resolve", "parse_duration"]


@dataclass
class TrainConfig:
    """Everything one training run needs. ``model`` is a registered name (``spatial_rnn.denoise``)."""

    model: str = ""  # the registry name the weights are trained for
    arch: str = ""  # filled from the registry when empty
    model_config: dict[str, Any] = field(default_factory=dict)  # network config; overrides the record's
    task: str = ""  # filled from the registry when empty
    scale: int = 0  # 0: the record's scale
    degradations: list[str] = field(default_factory=list)  # applied to clean images; several = mixed tasks
    data: list[str] = field(default_factory=list)  # folders or CSV lists
    data_kind: str = "auto"  # auto | clean | paired | csv
    val_data: str = ""  # a benchmark folder for restorekit.evaluate ("" = no validation)
    val_degradation: str = ""  # restorekit.degrade spec for a clean val folder (default: the first fixed one)
    val_interval: int = 0  # steps between validations (0 = only at the end when val_data is set)
    patch_size: int = 64  # the network-input patch (the LR patch for SR)
    batch_size: int = 16  # per process
    steps: int = 1000
    optimizer: str = "adam"  # sgd | adam | adamw
    lr: float = 1e-4
    weight_decay: float = 0.0
    momentum: float = 0.9  # SGD
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # Adam/AdamW
    schedule: str = "constant"  # constant | step | cosine | poly
    warmup_steps: int = 0
    decay_steps: int = 0  # step schedule: multiply by gamma every decay_steps
    gamma: float = 0.5
    min_lr: float = 0.0  # cosine floor
    power: float = 1.0  # poly
    loss: str = "l1"  # a name in restorekit.losses.LOSSES
    loss_args: dict[str, Any] = field(default_factory=dict)
    grad_clip: float = 0.0  # 0 = off
    grad_clip_mode: str = "norm"  # norm (global L2 norm) | adjustable (norm limited to grad_clip / lr, MemNet/VDSR)
    ema_decay: float = 0.0  # 0 = no EMA
    bf16: bool = True  # autocast on CUDA; on the CPU where CPU_POLICY says it pays
    channels_last: bool = True  # on CUDA; on the CPU where CPU_POLICY says it pays
    compile: bool = False
    checkpoint_interval: int = 1000
    log_interval: int = 10
    seed: int = 0
    workers: int = 2
    device: str = "auto"
    cache_bytes: int = 2 << 30  # decoded images kept in memory up to this many bytes
    augment: bool = True  # random flips and 90-degree rotations
    init_weights: str = ""  # fine-tuning: "pretrained" (the model's published weights) or a weights file
    vgg_weights: str = ""  # DSRIR's contrastive term: a local VGG19 state dict (term skipped when empty)
    out: str = "runs/train"
    resume: bool = True  # continue from <out>/checkpoints/last.pt when it exists
    time_budget: str = ""  # wall time for the whole run, resumes included ("8m", "1.5h", "90s"): fits the
    # schedule to it instead of `steps` (which becomes an upper bound), then exports ("" = train to `steps`)
    export_dir: str = ""  # where a time-budgeted run exports its weights ("" = <out>/export)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k != "data_description"}  # written beside the config
        unknown = sorted(set(values) - names)
        if unknown:
            raise InputError(f"unknown training option(s) {', '.join(unknown)}; valid ones: {', '.join(sorted(names))}")
        return cls(**dict(values))

    @classmethod
    def from_preset(cls, model: str, **overrides: Any) -> TrainConfig:
        return resolve(model, overrides=overrides)


# Each architecture's recipe from its paper / the authors' training code, as TrainConfig values.
ARCH_RECIPES: dict[str, dict[str, Any]] = {
    # MSRN: L1, Adam 1e-4 halved every 200 epochs (1000 epochs), batch 16, LR patch 48, DIV2K 800 images.
    # EDSR-style code runs 1000 iterations per "epoch" (batch 16 x 1000 = test_every), so 200 epochs = 200k steps.
    "msrn": dict(
        loss="l1",
        optimizer="adam",
        lr=1e-4,
        betas=[0.9, 0.999],
        schedule="step",
        decay_steps=200_000,
        gamma=0.5,
        steps=1_000_000,
        patch_size=48,
        batch_size=16,
    ),
    # MemNet: multi-supervised Euclidean loss, SGD lr 0.1 momentum 0.9 wd 1e-4, x0.1 every 200k iterations,
    # batch 32, 31-px patches, the authors' adjustable gradient clipping (clip_gradients 0.01 / lr).
    "memnet": dict(
        loss="multi_supervised",
        optimizer="sgd",
        lr=0.1,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="step",
        decay_steps=200_000,
        gamma=0.1,
        steps=600_000,
        patch_size=31,
        batch_size=32,
        grad_clip=0.01,
        grad_clip_mode="adjustable",
    ),
    # MPRNet: Charbonnier(1e-3) + 0.05 edge loss over all stage outputs, Adam 2e-4 cosine to 1e-6 after a
    # 3-epoch warm-up, batch 16, patch 256 (deblur/derain; 128 denoise, Charbonnier only on clamped outputs).
    # Steps: deblurring's 3000 epochs of GoPro (2103 pairs / batch 16 = 132 steps) is ~400k; the 3-epoch
    # warm-up is rounded to 3k steps. Both are estimates: set --steps/--warmup-steps for your data.
    "mprnet": dict(
        loss="charbonnier_edge",
        loss_args={"edge_weight": 0.05},
        optimizer="adam",
        lr=2e-4,
        betas=[0.9, 0.999],
        schedule="cosine",
        warmup_steps=3_000,
        min_lr=1e-6,
        steps=400_000,
        patch_size=256,
        batch_size=16,
    ),
    # DSRIR: uncertainty + PSNR losses (+0.2 contrastive with user VGG19 weights), AdamW 2e-4 wd 1e-4,
    # 3-epoch warm-up + cosine to 1e-6, first progressive stage: patch 128 batch 16 (the later 160/192/256
    # stages are not scheduled automatically). Steps and warm-up are estimates, as for MPRNet.
    "dsrir": dict(
        loss="dsrir",
        optimizer="adamw",
        lr=2e-4,
        weight_decay=1e-4,
        betas=[0.9, 0.999],
        schedule="cosine",
        warmup_steps=3_000,
        min_lr=1e-6,
        steps=300_000,
        patch_size=128,
        batch_size=16,
    ),
    # LRNN v1: L2 (0.5 sum / batch), SGD 1e-4 momentum 0.9 wd 1e-4, poly power 2, 20k iterations, clip 50,
    # patch 64, batch 20 (the authors' Caffe solver). Adam at ~1e-3 converges faster when fine-tuning.
    "spatial_rnn": dict(
        loss="euclidean",
        optimizer="sgd",
        lr=1e-4,
        momentum=0.9,
        weight_decay=1e-4,
        schedule="poly",
        power=2.0,
        steps=20_000,
        grad_clip=50.0,
        patch_size=64,
        batch_size=20,
    ),
}

# CPU training policy per architecture, from `tests/benchmarks/bench_train.py --modes all` (docs/training.md,
# "Throughput"): bf16 autocast and channels_last are used on the CPU only where they measured faster than fp32
# (bf16 also needs native CPU support, AVX-512 BF16 or AMX; without it bf16 is emulated and slower). On CUDA both
# are always on. ``--no-bf16`` / ``--no-channels-last`` turn either off anywhere.
# Measured on an AVX-512 BF16 CPU, 1 thread, patch 48 (bf16+channels_last vs fp32): dsrir 1.68x, memnet 1.93x,
# mprnet 1.96x, msrn 2.08x; spatial_rnn 0.90x (its scan runs in fp32; channels_last alone 0.62x), so fp32.
CPU_POLICY: dict[str, dict[str, bool]] = {
    "dsrir": dict(bf16=True, channels_last=True),
    "memnet": dict(bf16=True, channels_last=True),
    "mprnet": dict(bf16=True, channels_last=True),
    "msrn": dict(bf16=True, channels_last=True),
    "spatial_rnn": dict(bf16=False, channels_last=False),
}

# Per (arch, task) refinements of the recipe.
TASK_RECIPES: dict[tuple[str, str], dict[str, Any]] = {
    ("mprnet", "denoise"): dict(patch_size=128, loss_args={"edge_weight": 0.0, "clamp": True}),
}

# Default training degradations per task (clean-image folders); {scale} is the record's scale.
TASK_DEGRADATIONS: dict[str, list[str]] = {
    "sr": ["bicubic:{scale}"],
    "denoise": ["noise:0-55"],
    "jpeg": ["jpeg:10-40"],
    "deblur": ["motion_blur"],
    "derain": ["rain"],
    "dehaze": ["haze"],
    "inpaint": ["mask:0.5"],
    "colorize": ["hints:0.03"],
    "smooth": [],  # needs filtered targets: a paired folder
    "all_in_one": ["noise:0-55", "rain", "haze"],
}

# Models whose weights were made for one fixed degradation.
MODEL_DEGRADATIONS: dict[str, list[str]] = {
    "memnet.denoise_s30": ["noise:30"],
    "memnet.denoise_s50": ["noise:50"],
    "memnet.denoise_s70": ["noise:70"],
    "memnet.jpeg_q10": ["jpeg:10"],
    "memnet.jpeg_q20": ["jpeg:20"],
    "memnet.denoise_blind": ["noise:10-70"],
}


_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(text: str | float) -> float:
    """Seconds in ``"90"``, ``"90s"``, ``"8m"``, ``"1.5h"`` (or a number of seconds).

    >>> parse_duration("8m"), parse_duration("1.5h"), parse_duration(30)
    (480.0, 5400.0, 30.0)
    """
    if isinstance(text, (int, float)):
        value, unit = float(text), ""
    else:
        match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([a-z]*)\s*", str(text).lower())
        if not match or match.group(2) not in _UNITS:
            raise InputError(f"time budget {text!r}: write a duration such as 90s, 8m or 1.5h")
        value, unit = float(match.group(1)), match.group(2)
    seconds = value * _UNITS[unit]
    if seconds <= 0:
        raise InputError(f"time budget {text!r} must be longer than zero")
    return seconds


def preset(model: str) -> dict[str, Any]:
    """The paper recipe for a registered model, as TrainConfig values."""
    from ..registry import get_arch, get_record

    rec = get_record(model)
    get_arch(rec.arch)
    values: dict[str, Any] = {"model": rec.name, "arch": rec.arch, "task": rec.task, "scale": rec.scale}
    values.update(ARCH_RECIPES.get(rec.arch, {}))
    values.update(TASK_RECIPES.get((rec.arch, rec.task), {}))
    degs = MODEL_DEGRADATIONS.get(rec.name, TASK_DEGRADATIONS.get(rec.task, []))
    values["degradations"] = [d.format(scale=rec.scale) for d in degs]
    return values


class _Presets(Mapping[str, dict[str, Any]]):
    """Read-only view: ``PRESETS["msrn.sr_x4"]`` is that model's recipe (computed from the tables above)."""

    def __getitem__(self, name: str) -> dict[str, Any]:
        return preset(name)

    def __iter__(self):  # type: ignore[no-untyped-def]
        from ..registry import list_models

        return iter(list_models())

    def __len__(self) -> int:
        from ..registry import list_models

        return len(list_models())


PRESETS = _Presets()


def load_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Values from a ``.toml`` or ``.json`` file (a ``[train]`` table in TOML is accepted too)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"config file {p} does not exist; pass a .toml or .json file")
    if p.suffix.lower() == ".json":
        try:
            values = json.loads(p.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"{p} is not valid JSON: {exc}") from None
    elif p.suffix.lower() == ".toml":
        try:
            import tomllib
        except ImportError:  # Python 3.10
            raise InputError(f"reading {p} needs Python 3.11+ (tomllib); on 3.10 write the config as JSON") from None
        try:
            values = tomllib.loads(p.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{p} is not valid TOML: {exc}") from None
    else:
        raise InputError(f"config file {p}: use a .toml or .json file")
    if not isinstance(values, dict):
        raise InputError(f"{p} must hold a table of options")
    if set(values) == {"train"} and isinstance(values["train"], dict):
        values = values["train"]
    return values


def resolve(
    model: str | None = None, *, file: str | os.PathLike[str] | None = None, overrides: Mapping[str, Any] | None = None
) -> TrainConfig:
    """The preset of ``model`` (or the file's/overrides' ``model``), then the file, then ``overrides``."""
    from_file = load_file(file) if file else {}
    overrides = {k: v for k, v in (overrides or {}).items() if v is not None}
    name = overrides.get("model") or model or from_file.get("model")
    if not name:
        raise InputError("say which model to train: --preset NAME (e.g. spatial_rnn.denoise; `restorekit list`)")
    values: dict[str, Any] = preset(name)
    values.update(from_file)
    values.update(overrides)
    values["model"] = name
    cfg = TrainConfig.from_dict(values)
    _validate(cfg)
    return cfg


_CHOICES = {
    "optimizer": ("sgd", "adam", "adamw"),
    "schedule": ("constant", "step", "cosine", "poly"),
    "grad_clip_mode": ("norm", "adjustable"),
    "data_kind": ("auto", "clean", "paired", "csv"),
}


def _validate(cfg: TrainConfig) -> None:
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices:
            raise InputError(f"{name} must be one of {', '.join(choices)}, not {getattr(cfg, name)!r}")
    for name in ("patch_size", "batch_size", "steps"):
        if int(getattr(cfg, name)) < 1:
            raise InputError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.schedule == "step" and cfg.decay_steps < 1:
        raise InputError("the step schedule needs decay_steps >= 1")
    if cfg.time_budget:
        parse_duration(cfg.time_budget)
    if not 0 <= cfg.ema_decay < 1:
        raise InputError(f"ema_decay must be in [0, 1), got {cfg.ema_decay}")
    from ..degrade import parse, parse_ranged

    specs = [cfg.degradations] if isinstance(cfg.degradations, str) else cfg.degradations
    for spec in specs:  # the shared spec grammar (restorekit.specs): a bad spec fails before any data is read
        parse_ranged(spec)
    if cfg.val_degradation:
        parse(cfg.val_degradation)  # measured by restorekit.evaluate: one fixed value, no range
    from ..losses import LOSSES

    if cfg.loss not in LOSSES:
        raise InputError(f"unknown loss {cfg.loss!r}; choose one of {', '.join(LOSSES)}")
