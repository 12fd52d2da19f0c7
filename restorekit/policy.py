"""How each architecture runs inference fastest without changing its results: the memory format of its weights
and inputs, and whether ``torch.compile`` pays, per device type, as measured.

Each architecture declares an :class:`ArchPolicy` on its :class:`~restorekit.registry.ArchSpec`
(``policy=``), with a comment citing the measured ratio and ``tests/benchmarks/bench_policy.py``'s command
(figures in docs/performance.md, "Inference policy"). The :class:`~restorekit.Restorer` applies the policy of
its device: :func:`prepare_model` lays out the network's weights, :func:`prepare_input` each input. A policy
changes the speed only: the outputs are equal to float rounding (``tests/test_policy.py`` checks every
architecture to 1e-5).

``batch`` is how many images of one size one network call takes by default (``Restorer(batch="auto")``): 1
everywhere so far, since every batch measured slower on the CPU (docs/performance.md, "Batching").

``torch.compile`` is never applied by default (compiling takes tens of seconds per input shape family): it
is the user's opt-in, ``Restorer(..., compile=True)`` / ``--compile``, honoured on every architecture;
``compile_pays`` records where the measurement found it faster. Half precision is not part of the policy:
it is the record's validated dtype on an accelerator (:meth:`restorekit.options.RunOptions.dtype_for`),
and the half copy of the network gets the same memory format and compilation.

Nothing here imports torch at module level (the registry, which imports this module, stays torch-free).
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import InputError, RestorekitError

if TYPE_CHECKING:
    import torch

__all__ = [
    "MEMORY_FORMATS",
    "TODAY",
    "ArchPolicy",
    "InferencePolicy",
    "check_batch",
    "check_compile",
    "compile_model",
    "compile_problem",
    "prepare_input",
    "prepare_model",
]

MEMORY_FORMATS = ("contiguous", "channels_last")


@dataclass(frozen=True)
class InferencePolicy:
    """What one architecture runs with on one device type.

    ``memory_format``: ``"contiguous"`` (NCHW, PyTorch's default) or ``"channels_last"`` (NHWC strides for the
    convolution weights and every input). ``compile_pays``: the benchmark measured ``torch.compile`` faster
    for this architecture (compilation itself stays the user's opt-in, ``compile=True``). ``batch``: the most
    same-size images one network call takes by default (``Restorer(batch="auto")``), 1 until a measurement
    (``tests/benchmarks/bench_pipeline.py --batch``) finds a larger batch faster than one image at a time.
    """

    memory_format: str = "contiguous"
    compile_pays: bool = False
    batch: int = 1

    def __post_init__(self) -> None:
        if self.memory_format not in MEMORY_FORMATS:
            raise ValueError(f"memory_format must be one of {MEMORY_FORMATS}, not {self.memory_format!r}")
        if not isinstance(self.compile_pays, bool):
            raise ValueError(f"compile_pays must be True or False, not {self.compile_pays!r}")
        if isinstance(self.batch, bool) or not isinstance(self.batch, int) or self.batch < 1:
            raise ValueError(f"batch must be a whole number >= 1, not {self.batch!r}")

    @property
    def channels_last(self) -> bool:
        return self.memory_format == "channels_last"

    def describe(self) -> str:
        return (
            self.memory_format
            + (", compile pays" if self.compile_pays else "")
            + (f", batches of up to {self.batch}" if self.batch > 1 else "")
        )


TODAY = InferencePolicy()  # the behaviour before policies: contiguous tensors, eager, one image per call


@dataclass(frozen=True)
class ArchPolicy:
    """An architecture's measured policy per device type. ``cpu`` and ``cuda`` are declared (default: today's
    behaviour); every other device (mps, xpu, ...) runs today's behaviour until it is measured."""

    cpu: InferencePolicy = TODAY
    cuda: InferencePolicy = TODAY

    def for_device(self, device: str | torch.device) -> InferencePolicy:
        kind = device if isinstance(device, str) else device.type
        kind = kind.split(":")[0]
        return self.cpu if kind == "cpu" else self.cuda if kind == "cuda" else TODAY


def prepare_model(model: torch.nn.Module, policy: InferencePolicy) -> torch.nn.Module:
    """``model`` with its 4-D weights in the policy's memory format (in place, as ``Module.to`` does); returns it."""
    import torch

    if policy.channels_last:
        model.to(memory_format=torch.channels_last)
    return model


def prepare_input(x: torch.Tensor, policy: InferencePolicy) -> torch.Tensor:
    """``x`` (N, C, H, W) laid out as the policy's network expects it (a copy only when the layout differs)."""
    import torch

    if policy.channels_last and x.ndim == 4:
        return x.contiguous(memory_format=torch.channels_last)
    return x


def check_batch(value: Any) -> int | str:
    """``batch=`` must be ``"auto"`` (the policy's :attr:`InferencePolicy.batch`) or a whole number >= 1."""
    if not (value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1)):
        raise InputError(
            f"batch must be 'auto' (the measured default for the device) or a whole number >= 1, not {value!r}"
        )
    return value


def check_compile(value: Any) -> bool:
    """``compile=`` must be True or False (a string such as ``"false"`` would be truthy and compile)."""
    if not isinstance(value, bool):
        raise InputError(f"compile must be True or False, not {value!r} (CLI: --compile to turn it on)")
    return value


def compile_problem(device: str | torch.device) -> str | None:
    """Why ``torch.compile`` (the inductor backend) cannot compile for ``device`` here, or None when it can.

    Inductor writes C++ for the CPU (a C++ compiler on PATH, or ``$CXX``) and Triton kernels for CUDA (the
    ``triton`` package). Other devices are not supported by restorekit's ``compile=True``.
    """
    import torch

    kind = torch.device(device).type
    if kind == "cpu":
        compiler = os.environ.get("CXX") or ("cl" if sys.platform == "win32" else "c++")
        if shutil.which(compiler) is None:
            return f"inductor needs a C++ compiler for the CPU and {compiler!r} is not on PATH (install g++ or clang)"
        return None
    if kind == "cuda":
        import importlib.util

        if importlib.util.find_spec("triton") is None:
            return "inductor needs the triton package for CUDA (pip install triton)"
        return None
    return f"restorekit compiles for cpu and cuda only, not {kind}"


def compile_model(model: torch.nn.Module, device: str | torch.device, label: str) -> Callable[..., Any]:
    """``torch.compile(model)`` behind a call that turns a compilation failure into a :class:`RestorekitError`
    saying what to do. Refuses at once (also a RestorekitError) where :func:`compile_problem` finds no way to
    compile; compilation itself happens on the first call with each new input shape.

    ``dynamic=None``: the first shape compiles for that shape; a second shape (another tile or image size)
    recompiles once with symbolic sizes, which then serve every later size without recompiling.
    """
    import torch

    problem = compile_problem(device)
    if problem is not None:
        raise RestorekitError(f"compile=True: cannot compile {label} on {device}: {problem}; or run without compile")
    compiled = torch.compile(model, dynamic=None)

    def run(*args: Any) -> Any:
        try:
            return compiled(*args)
        except Exception as err:
            if not _is_compile_error(err):
                raise
            first = (str(err).strip().splitlines() or [type(err).__name__])[0][:500]
            raise RestorekitError(
                f"torch.compile failed for {label} on {device} ({type(err).__name__}: {first}); run without "
                "compile=True (CLI: drop --compile), which gives the same results"
            ) from err

    run.compiled = compiled  # type: ignore[attr-defined]
    return run


def _is_compile_error(err: BaseException) -> bool:
    """An error of dynamo or inductor (tracing, lowering, the C++/Triton build), not of the network's own
    computation (an out-of-memory error, a shape error, which pass through for the Restorer to handle)."""
    dynamo = sys.modules.get("torch._dynamo.exc")
    if dynamo is not None and isinstance(err, dynamo.TorchDynamoException):
        return True
    return type(err).__module__.startswith(("torch._dynamo", "torch._inductor"))
