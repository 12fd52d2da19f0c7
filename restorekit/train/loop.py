"""The training loop: one process or many (``torchrun`` + DistributedDataParallel), checkpoints that resume exactly.

Checkpoint format ``restorekit-train/1`` (``<out>/checkpoints/step_{N:08d}.pt`` and ``last.pt``): a ``torch.save``
dict that ``torch.load(weights_only=True)`` reads, with keys ``format``, ``step``, ``arch``, ``model_name``,
``config`` (network config for :func:`restorekit.weights.build_model`), ``model``, ``ema`` (or None),
``optimizer``, ``scheduler``, ``rng``, ``train_config`` (the resolved :class:`TrainConfig` plus
``data_description``) and ``metrics`` (the latest validation, ``{"dataset", "metric", "value", "convention"}``).
"""

from __future__ import annotations

import collections
import copy
import functools
import json
import math
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..allocator import retain_freed_memory
from ..errors import InputError
from .checkpoint import CHECKPOINT_FORMAT, TrainingError, checkpoint_path, load_checkpoint, save_checkpoint
from .config import TrainConfig, parse_duration

__all__ = ["Trainer", "fit", "lr_factor", "SCHEDULES", "OPTIMIZERS", "load_checkpoint"]


# ------------------------------------------------------------------------------------------------ tables

OPTIMIZERS: dict[str, Callable[[Any, TrainConfig], torch.optim.Optimizer]] = {
    "sgd": lambda p, c: torch.optim.SGD(p, lr=c.lr, momentum=c.momentum, weight_decay=c.weight_decay),
    "adam": lambda p, c: torch.optim.Adam(p, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay),
    "adamw": lambda p, c: torch.optim.AdamW(p, lr=c.lr, betas=tuple(c.betas), weight_decay=c.weight_decay),
}

SCHEDULES: dict[str, Callable[[int, TrainConfig], float]] = {
    "constant": lambda s, c: 1.0,
    "step": lambda s, c: c.gamma ** (s // c.decay_steps),
    "cosine": lambda s, c: (
        (m := c.min_lr / c.lr)
        + (1 - m) * 0.5 * (1 + math.cos(math.pi * min(1.0, (s - c.warmup_steps) / max(1, c.steps - c.warmup_steps))))
    ),
    "poly": lambda s, c: max(0.0, 1 - s / c.steps) ** c.power,
}


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """The learning-rate multiplier at ``step``: a linear warm-up over ``warmup_steps``, then the schedule."""
    if cfg.warmup_steps and step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    return SCHEDULES[cfg.schedule](step, cfg)


def _lr_lambda(step: int, *, cfg: dict[str, Any]) -> float:  # a partial of this pickles as plain data
    return lr_factor(step, TrainConfig.from_dict(cfg))


# ------------------------------------------------------------------------------------------------ helpers


class EMA:
    """An exponential moving average of a model's parameters (buffers copied), ``decay`` per step.

    The decay warms up as ``min(decay, (1 + t) / (10 + t))`` at update ``t`` (counted from 0), so an early
    export is not dominated by the initialisation (with a flat 0.999, step 1,000 still weighed it 37 %).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.module = copy.deepcopy(model).eval().requires_grad_(False)

    def decay_at(self, t: int) -> float:
        return min(self.decay, (1 + t) / (10 + t))

    @torch.no_grad()
    def update(self, model: nn.Module, t: int) -> None:
        """Fold in ``model`` as update number ``t`` (the step count before this step: resumes match)."""
        weight = 1 - self.decay_at(t)
        for e, p in zip(self.module.parameters(), model.parameters()):
            e.lerp_(p.detach(), weight)
        for e, b in zip(self.module.buffers(), model.buffers()):
            e.copy_(b)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=list))


def rng_state(consumed: int, per_rank: int) -> dict[str, Any]:
    """Every random state as tensors and ints (``weights_only``-safe), and the data stream position."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
        "numpy_pos": int(pos),
        "numpy_gauss": [int(has_gauss), float(gauss)],
        "python": torch.tensor(py_state, dtype=torch.int64),
        "python_version": int(version),
        "python_gauss": None if py_gauss is None else float(py_gauss),
        "samples_consumed": int(consumed),  # per rank; the sampler's (epoch, offset) follows from it
        "sampler_epoch": consumed // per_rank,
        "sampler_offset": consumed % per_rank,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(
        ("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], *state["numpy_gauss"])
    )
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]), state["python_gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _distributed() -> tuple[int, int, int]:
    """(rank, world size, local rank), initialising the process group when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group(backend)
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0"))
    return 0, 1, 0


def cpu_bf16_supported() -> bool:
    """Whether oneDNN runs bf16 natively on this CPU (AVX-512 BF16 or AMX); emulated bf16 is slower than fp32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def fast_modes(arch: str, device: torch.device) -> tuple[bool, bool]:
    """(bf16 autocast, channels_last) for training ``arch`` on ``device``: both on CUDA; on the CPU the measured
    policy of :data:`restorekit.train.config.CPU_POLICY`, bf16 only where the CPU has native bf16."""
    from .config import CPU_POLICY

    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(), True
    if device.type != "cpu":
        return False, False
    policy = CPU_POLICY.get(arch, {})
    return bool(policy.get("bf16")) and cpu_bf16_supported(), bool(policy.get("channels_last"))


_CHECKPOINT_EVERY_S = 600.0  # a checkpoint at least every ten minutes, whatever checkpoint_interval says


class TimeBudget:
    """Wall time for a whole run (resumes included): how many steps fit, measured as the run goes.

    The first step of each invocation is not timed (allocations, kernel choice, a native build); after it, the
    rate over a recent window (5 % of the budget, at least 30 s: a machine that gets busier or quieter moves the
    plan within minutes) gives the plan ``step + (time left - reserve) * rate``. The reserve keeps room for what
    comes after the last step: the final checkpoint, the export (which writes the weights again) and the exit,
    estimated as four times the slowest save seen plus half a second (at least one second), plus the slowest
    recent step, since a step begun just in time may run late on a busy machine.
    """

    def __init__(self, seconds: float, started: float, *, spent: float = 0.0) -> None:
        self.seconds = float(seconds)
        self.started = float(started)
        self.spent_before = float(spent)
        self.deadline = self.started + self.seconds - self.spent_before
        self._after = 1.0  # seconds kept for the last save, the export and the exit
        self._slowest_step = 0.0
        self.window = max(30.0, 0.05 * self.seconds)
        self._samples: collections.deque[tuple[int, float]] = collections.deque()
        self.planned: int | None = None

    def spent(self, now: float) -> float:
        return self.spent_before + (now - self.started)

    @property
    def reserve(self) -> float:
        return self._after + self._slowest_step

    def over(self, now: float) -> bool:
        return now >= self.deadline - self.reserve

    def saved(self, seconds: float) -> None:
        self._after = max(self._after, 4.0 * seconds + 0.5)

    def plan(self, step: int, now: float) -> tuple[int | None, bool]:
        """(planned total steps or None while unmeasured, whether the time is up) after ``step`` steps."""
        self._samples.append((step, now))
        while len(self._samples) > 2 and now - self._samples[1][1] >= self.window:
            self._samples.popleft()  # keep the newest sample at least `window` old
        if len(self._samples) > 1:
            pairs = zip(list(self._samples)[:-1], list(self._samples)[1:])
            self._slowest_step = max((t1 - t0) / max(1, n1 - n0) for (n0, t0), (n1, t1) in pairs)
        n0, t0 = self._samples[0]
        if step > n0 and now > t0:
            rate = (step - n0) / (now - t0)
            self.planned = step + max(0, int((self.deadline - self.reserve - now) * rate))
        return self.planned, self.over(now)

    def state(self, step: int) -> dict[str, Any]:
        return {"seconds": self.seconds, "spent_s": self.spent(time.monotonic()), "planned_steps": self.planned}


def _trim_log(path: Path, step: int) -> int:
    """Drop log lines after ``step`` (written after the checkpoint a resume starts from); returns how many."""
    if not path.is_file():
        return 0
    lines = path.read_text().splitlines()
    keep = []
    for line in lines:
        try:
            at = int(json.loads(line).get("step", 0))
        except (ValueError, AttributeError, TypeError):
            continue  # a line cut short by a kill
        if at <= step:
            keep.append(line)
    dropped = len(lines) - len(keep)
    if dropped:
        from ..image import atomic_write

        data = "".join(line + "\n" for line in keep).encode()
        atomic_write(path, lambda f: f.write(data), overwrite=True, sync=False)
    return dropped


def _leave_stop_signals_to_the_trainer(worker_id: int) -> None:
    """Loader workers ignore Ctrl-C and SIGTERM: a signal to the whole process group (a terminal, a scheduler
    stopping a job) then reaches the trainer, which finishes its step and saves, instead of killing a worker and
    failing the run mid-step."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def _note(msg: str) -> None:
    print(f"restorekit-train: {msg}", file=sys.stderr)


# ------------------------------------------------------------------------------------------------ trainer


class Trainer:
    """Model, optimiser, schedule, EMA, data and checkpoints of one run; :meth:`fit` runs the loop."""

    def __init__(self, cfg: TrainConfig, *, data: bool = True) -> None:
        from ..feeding import Feeding
        from ..losses import build_loss
        from ..registry import get_arch, get_record, list_models
        from ..restorer import pick_device
        from ..weights import build_model

        self.cfg = cfg
        self.rank, self.world, local = _distributed()
        rec = get_record(cfg.model)
        self.record, self.spec = rec, get_arch(cfg.arch or rec.arch)
        self.arch = self.spec.name
        self.scale = cfg.scale or rec.scale
        self.net_config = _plain({**rec.config, **cfg.model_config})
        # What the network is fed, as its architecture declares it for this config (see restorekit.feeding).
        self.feeding = Feeding.of(self.spec, self.net_config)
        declared = self.spec.condition_for(rec.config)
        if self.feeding.condition != declared:  # the Restorer and evaluation feed the record's condition
            fits = [
                n
                for n in list_models(arch=rec.arch)
                if self.spec.condition_for(get_record(n).config) == self.feeding.condition
            ]
            raise InputError(
                f"model_config makes the network take {self.feeding.condition or 'no mask'}, but {rec.name} takes "
                f"{declared or 'no mask'}; drop condition from model_config"
                + (f", or train {' or '.join(fits)}" if fits else "")
            )
        device = pick_device(cfg.device)
        if device.type == "cuda" and self.world > 1:
            device = torch.device("cuda", local)
        self.device = device
        if device.type == "cpu":
            retain_freed_memory()  # activations and gradients reused, not faulted in again (restorekit.allocator)
        self.out = Path(cfg.out)
        self.data_description: list[str] = []
        self.dataset = None
        if data:  # build (and validate) the data before the model: bad folders fail fast
            self._build_data()
        torch.manual_seed(cfg.seed)
        self.model = build_model(self.arch, self.net_config).to(device).train()
        if cfg.init_weights:  # fine-tune: start from published weights or a file (a resumed run overrides them)
            self._init_weights(cfg.init_weights)
        cuda = device.type == "cuda"
        bf16, channels_last = fast_modes(self.arch, device)
        self.set_modes(bf16=cfg.bf16 and bf16, channels_last=cfg.channels_last and channels_last)
        if self.rank == 0 and data and not cuda:
            _note(
                f"training on {device.type} in {'bf16 autocast' if self.bf16 else 'fp32'}"
                f"{' with channels_last' if self.channels_last else ''} (the measured CPU policy of {self.arch})"
            )
        self.ema = EMA(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.optimizer = OPTIMIZERS[cfg.optimizer](self.model.parameters(), cfg)
        # The schedule reads this dict on every step, so a time budget can re-plan `steps` as it measures speed.
        self.schedule = cfg.to_dict()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, functools.partial(_lr_lambda, cfg=self.schedule)
        )
        loss_args = dict(cfg.loss_args)
        if cfg.loss == "dsrir" and cfg.vgg_weights:
            loss_args.setdefault("vgg_weights", cfg.vgg_weights)
        self.criterion = build_loss(cfg.loss, **loss_args).to(device)
        self.ddp = None
        if self.world > 1:
            self.ddp = nn.parallel.DistributedDataParallel(self.model, device_ids=[device.index] if cuda else None)
        forward = self.ddp or self.model
        self.forward = torch.compile(forward) if cfg.compile else forward
        self.step = 0
        self.metrics: list[dict[str, Any]] = []
        self.budget: TimeBudget | None = None
        self._budget_state: dict[str, Any] = {}
        self._stop = False

    @property
    def mask_channels(self) -> int:
        """1 when the network takes a mask channel after the image's (inpainting, colourisation), else 0."""
        return self.feeding.mask_channels

    def set_modes(self, *, bf16: bool, channels_last: bool) -> None:
        """Use bf16 autocast and/or channels_last from now on (the benchmark measures each on its own)."""
        self.bf16, self.channels_last = bool(bf16), bool(channels_last)
        fmt = torch.channels_last if self.channels_last else torch.contiguous_format
        self.model = self.model.to(memory_format=fmt)

    def _init_weights(self, source: str) -> None:
        from ..weights import load_model

        if source == "pretrained":
            start = load_model(self.record.name, device="cpu")  # only its state dict is used
        else:
            start = load_model(self.record.name, weights=source, device="cpu")
        try:
            self.model.load_state_dict(start.state_dict())
        except RuntimeError as exc:
            raise TrainingError(
                f"init_weights {source} does not fit {self.record.name} with config {self.net_config}: {exc}. "
                "Drop --model-config so the network matches the weights."
            ) from None

    # -------------------------------------------------------------------- data
    def _build_data(self) -> None:
        from .data import EpochSampler, TrainDataset, find_items

        cfg = self.cfg
        items, self.data_description = find_items(cfg.data, cfg.data_kind, self.scale)
        self.dataset = TrainDataset(
            items,
            patch=cfg.patch_size,
            scale=self.scale,
            degradations=cfg.degradations,
            in_channels=self.record.in_channels,
            pre_upsample=self.record.pre_upsample,
            seed=cfg.seed,
            augment=cfg.augment,
            cache_bytes=cfg.cache_bytes,
        )
        self._sampler_type = EpochSampler

    def batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The batch stream from the current step on (the same samples whether resumed or not)."""
        from torch.utils.data import DataLoader

        assert self.dataset is not None
        sampler = self._sampler_type(
            len(self.dataset),
            seed=self.cfg.seed,
            rank=self.rank,
            world=self.world,
            start=self.step * self.cfg.batch_size,
        )
        self.per_rank = sampler.per_rank
        loader = DataLoader(
            self.dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=self.cfg.workers,
            pin_memory=self.device.type == "cuda",
            persistent_workers=False,
            worker_init_fn=_leave_stop_signals_to_the_trainer,
        )
        return iter(loader)

    # -------------------------------------------------------------------- one step
    def _inputs(self, inp: torch.Tensor, tgt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch of (packed input, target) in [0, 1] -> the network's input and the target at its value range (MSRN
        works in 0-255; a mask channel stays 0/1)."""
        inp = self.feeding.to_network(*self.feeding.split(inp.to(self.device, non_blocking=True)))
        tgt = self.feeding.to_range(tgt.to(self.device, non_blocking=True))
        if self.channels_last:
            inp = inp.contiguous(memory_format=torch.channels_last)
        return inp, tgt

    def loss(self, inp: torch.Tensor, tgt: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            out = self.forward(inp)
        out = _to_float(out)
        if getattr(self.criterion, "needs_input", False):
            return self.criterion(out, tgt, inputs=inp.float())
        return self.criterion(out, tgt)

    def train_step(self, inp: torch.Tensor, tgt: torch.Tensor) -> float:
        """One optimiser step on a batch in [0, 1]; returns the loss."""
        inp, tgt = self._inputs(inp, tgt)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.loss(inp, tgt)
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {float(loss)} at step {self.step}; lower --lr or set --grad-clip, then resume from "
                "an earlier checkpoint"
            )
        loss.backward()
        if self.cfg.grad_clip:
            limit = self.cfg.grad_clip
            if self.cfg.grad_clip_mode == "adjustable":  # MemNet/VDSR: the limit shrinks as the lr grows
                limit = limit / self.optimizer.param_groups[0]["lr"]
            nn.utils.clip_grad_norm_(self.model.parameters(), limit)
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model, self.step)
        self.step += 1
        return float(loss.detach())

    # -------------------------------------------------------------------- checkpoints
    def state(self) -> dict[str, Any]:
        cfg = {**self.cfg.to_dict(), "data_description": list(self.data_description)}
        per_rank = getattr(self, "per_rank", 1)
        return {
            "format": CHECKPOINT_FORMAT,
            "step": self.step,
            "arch": self.arch,
            "model_name": self.record.name,
            "config": self.net_config,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.module.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(self.step * self.cfg.batch_size, per_rank),
            "train_config": cfg,
            "metrics": list(self.metrics),
            "budget": self.budget.state(self.step) if self.budget is not None else dict(self._budget_state),
        }

    def save(self) -> Path | None:
        """Write ``step_{N:08d}.pt`` and ``last.pt`` (rank 0 only); returns the step file."""
        if self.rank != 0:
            return None
        return save_checkpoint(self.state(), self.out)

    def load(self, path: str | os.PathLike[str]) -> None:
        ckpt = load_checkpoint(path, self.device)
        if ckpt["arch"] != self.arch or ckpt["model_name"] != self.record.name or ckpt["config"] != self.net_config:
            raise TrainingError(
                f"{path} was trained for {ckpt['model_name']} ({ckpt['arch']}, {ckpt['config']}), not "
                f"{self.record.name} ({self.net_config}); pass another --out or delete the checkpoints"
            )
        self.model.load_state_dict(ckpt["model"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.module.load_state_dict(ckpt["ema"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        set_rng_state(ckpt["rng"])
        self.step = int(ckpt["step"])
        self.metrics = list(ckpt.get("metrics") or [])
        self._budget_state = dict(ckpt.get("budget") or {})

    # -------------------------------------------------------------------- validation
    def validate(self) -> list[dict[str, Any]]:
        """PSNR/SSIM of the (EMA) weights on ``val_data`` through :func:`restorekit.evaluate` and the Restorer."""
        from ..evaluate import evaluate
        from ..weightfile import save_weights
        from .data import DegradationSpec

        cfg = self.cfg
        spec = cfg.val_degradation or next((d for d in cfg.degradations if not DegradationSpec(d).ranges), None)
        module = self.ema.module if self.ema is not None else self.model
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "weights.safetensors"
            save_weights(path, module.state_dict(), arch=self.arch, config=self.net_config, name=self.record.name)
            was = module.training
            result = evaluate(
                self.record.name,
                cfg.val_data,
                degradation=spec if spec and not spec.startswith("bicubic") else None,
                weights=path,
                device=self.device,
                seed=cfg.seed,
                progress=False,
            )
            module.train(was)
        name = Path(cfg.val_data).name
        conv = result.convention.name
        self.metrics = [
            {"dataset": name, "metric": "psnr", "value": float(result.psnr), "convention": conv},
            {"dataset": name, "metric": "ssim", "value": float(result.ssim), "convention": conv},
        ]
        return self.metrics

    # -------------------------------------------------------------------- the loop
    def _log(self, record: dict[str, Any]) -> None:
        if self.rank == 0:
            with open(self.out / "log.jsonl", "a") as f:
                f.write(json.dumps(record) + "\n")

    def request_stop(self, *_: Any) -> None:
        self._stop = True

    def _should_stop(self) -> bool:
        if self.world == 1:
            return self._stop
        flag = torch.tensor([1.0 if self._stop else 0.0], device=self.device)
        dist.all_reduce(flag)  # every rank stops at the same step, or the others would wait forever
        return bool(flag.item())

    def fit(self, *, progress: bool = True, stop_at: int | None = None, started: float | None = None) -> dict[str, Any]:
        """Train to ``cfg.steps`` (or ``stop_at``, as an interruption would), checkpointing on the way.

        With ``cfg.time_budget`` the run instead ends when its budget (counted from ``started``, a
        ``time.monotonic()`` reading, default now, plus what earlier invocations spent) is up, with the schedule
        fitted to the measured speed, and exports its weights.
        """
        from tqdm.auto import tqdm

        started = time.monotonic() if started is None else started
        cfg = self.cfg
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(
                json.dumps({**cfg.to_dict(), "data_description": self.data_description}, indent=2) + "\n"
            )
        last = checkpoint_path(self.out)
        if cfg.resume and last.is_file():
            self.load(last)
            if self.rank == 0:
                dropped = _trim_log(self.out / "log.jsonl", self.step)
                extra = f"; {dropped} log lines after it were dropped (those steps run again)" if dropped else ""
                _note(f"resumed from {last} at step {self.step}{extra}")
        if cfg.time_budget and cfg.export_dir and self.rank == 0:
            taken = [p.name for p in Path(cfg.export_dir).glob("*")] if Path(cfg.export_dir).is_dir() else []
            if taken:
                raise InputError(
                    f"export folder {cfg.export_dir} is not empty ({', '.join(sorted(taken)[:4])}); a time-budgeted "
                    "run exports there when its time is up: name an empty or new folder"
                )
        if cfg.time_budget:
            self.budget = TimeBudget(
                parse_duration(cfg.time_budget), started, spent=float(self._budget_state.get("spent_s", 0.0))
            )
            self._apply_plan(self._budget_state.get("planned_steps"))
        handlers = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                handlers[sig] = signal.signal(sig, self.request_stop)
        end = min(cfg.steps, stop_at) if stop_at is not None else cfg.steps
        total = self.schedule["steps"] if self.budget else cfg.steps
        bar = tqdm(total=total, initial=self.step, disable=not progress or self.rank != 0, unit="step")
        losses: list[float] = []
        t0, done0 = time.perf_counter(), self.step
        last_save = time.monotonic()
        last_loss = float("nan")
        exported: str | None = None
        try:
            finished = self.budget is not None and self.budget.over(time.monotonic())
            batches = self.batches() if self.step < end and not finished else iter(())
            while self.step < end and not finished:
                try:
                    inp, tgt = next(batches)
                except Exception:
                    if self._stop:  # Ctrl-C also reached the loader's workers: stop cleanly all the same
                        _note(f"stopped at step {self.step}; run the same command to resume")
                        break
                    raise
                last_loss = self.train_step(inp, tgt)
                losses.append(last_loss)
                if self.budget is not None:
                    finished = self._replan(time.monotonic())
                    if bar.total != self.schedule["steps"]:
                        bar.total = self.schedule["steps"]
                if self.step % cfg.log_interval == 0 or self.step == end or finished:
                    rate = (self.step - done0) * cfg.batch_size * self.world / max(time.perf_counter() - t0, 1e-9)
                    lr = self.optimizer.param_groups[0]["lr"]
                    record = {"step": self.step, "loss": sum(losses) / len(losses), "lr": lr, "patches_per_s": rate}
                    if self.budget is not None:
                        record["planned_steps"] = self.schedule["steps"]
                    self._log(record)
                    bar.set_postfix(loss=f"{sum(losses) / len(losses):.4g}", patches_s=f"{rate:.1f}")
                    losses = []
                bar.update(1)
                if cfg.val_data and cfg.val_interval and self.step % cfg.val_interval == 0 and self.rank == 0:
                    self._log({"step": self.step, "val": {m["metric"]: m["value"] for m in self.validate()}})
                overdue = time.monotonic() - last_save > _CHECKPOINT_EVERY_S
                if (self.step % cfg.checkpoint_interval == 0 or overdue) and self.step < end and not finished:
                    self._timed_save()
                    last_save = time.monotonic()
                if self._should_stop():
                    _note(f"stopped at step {self.step}; run the same command to resume")
                    break
            reached = self.step == cfg.steps or (self.budget is not None and finished)
            if cfg.val_data and reached and self.rank == 0 and not cfg.val_interval:
                self._log({"step": self.step, "val": {m["metric"]: m["value"] for m in self.validate()}})
            self._timed_save()
            if self.budget is not None and finished and self.rank == 0:
                exported = self._export()
        finally:
            bar.close()
            for sig, old in handlers.items():
                signal.signal(sig, old)
        summary = {"step": self.step, "out": str(self.out), "loss": last_loss, "metrics": list(self.metrics)}
        if self.budget is not None:
            summary["time_spent_s"] = round(self.budget.spent(time.monotonic()), 2)
            summary["export"] = exported
        return summary

    # -------------------------------------------------------------------- time budget
    def _apply_plan(self, planned: int | None) -> None:
        """Fit the schedule (steps, warm-up) and the EMA horizon to ``planned`` steps (None: not measured yet)."""
        cfg = self.cfg
        if planned is None:  # the first steps run in the preset's warm-up, at a small learning rate
            self.schedule["steps"] = cfg.steps
            return
        planned = max(1, min(int(planned), cfg.steps))
        self.schedule["steps"] = planned
        self.schedule["warmup_steps"] = min(cfg.warmup_steps, planned // 20)  # at most 5 % of the run
        if self.ema is not None:  # an averaging horizon of at most a tenth of the run
            self.ema.decay = min(cfg.ema_decay, 1 - 10 / max(planned, 20))

    def _replan(self, now: float) -> bool:
        """Re-estimate the steps that fit in the budget (rank 0 decides for all); True when the time is up."""
        assert self.budget is not None
        planned, over = self.budget.plan(self.step, now)
        if self.world > 1:  # every rank must follow the same schedule and stop at the same step
            flag = torch.tensor([-1 if planned is None else planned, int(over)], device=self.device)
            dist.broadcast(flag, 0)
            planned, over = (None if int(flag[0]) < 0 else int(flag[0])), bool(flag[1])
        if planned is not None:
            self._apply_plan(planned)
        return over or (planned is not None and self.step >= self.schedule["steps"])

    def _timed_save(self) -> None:
        t = time.monotonic()
        self.save()
        if self.budget is not None:
            self.budget.saved(time.monotonic() - t)

    def _export(self) -> str:
        from .publish import export_run

        # The run's own export folder holds its latest export (a rerun after more training replaces it); a folder
        # the user named is checked before training starts (see fit) and never replaced.
        own = not self.cfg.export_dir
        folder = self.out / "export" if own else Path(self.cfg.export_dir)
        result = export_run(self.out, folder, overwrite=own)
        self._log({"step": self.step, "export": str(result.weights), "sha256": result.sha256})
        _note(f"time budget reached at step {self.step}; exported {result.weights}")
        return str(result.weights)

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            # Every rank waits for rank 0's last checkpoint before the group goes away: a rank that tore
            # down gloo while rank 0 was still writing aborted once ("terminate called without an active
            # exception", SIGABRT) in a loaded CI run.
            dist.barrier()
            dist.destroy_process_group()


def _to_float(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, (list, tuple)):
        converted = [_to_float(o) for o in out]
        if hasattr(out, "_fields"):  # a namedtuple (MemNet's output)
            return type(out)(*converted)
        return type(out)(converted)
    return out


def fit(
    cfg: TrainConfig, *, progress: bool = True, stop_at: int | None = None, started: float | None = None
) -> dict[str, Any]:
    """Train ``cfg`` (resuming from ``<out>/checkpoints/last.pt`` when there is one); returns a summary.

    A ``cfg.time_budget`` counts from ``started`` (a ``time.monotonic()`` reading; default: this call)."""
    started = time.monotonic() if started is None else started
    if not cfg.data:
        raise InputError("no training data: set data (--data FOLDER)")
    trainer = Trainer(cfg)
    try:
        return trainer.fit(progress=progress, stop_at=stop_at, started=started)
    finally:
        trainer.close()
