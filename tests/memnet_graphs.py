"""A small interpreter of the MXNet graphs of the authors' MemNet models, and parameters in their layout.

Test-only. It evaluates a ``*-symbol.json`` the way MXNet's operators are defined (Convolution, BatchNorm in
inference mode, Activation, broadcast_add, Concat, _mul_scalar, add_n), in float64, straight from the JSON
and without restorekit's network, so that the two can be compared. Parameters are made as the authors'
files hold them: every node the graph names gets an array, and the copies Caffe shared (a block's recursion
convolutions once per recursion, the reconstruction once per block) get equal values.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

OFFICIAL = ("MemNet_M6R6_80C64_SR", "MemNet_M6R6_80C64_GD", "MemNet_M6R6_80C64_JD", "MemNet_M10R10_212C64_SR")
_SHARED = (
    (re.compile(r"^conv(\d\d)_\d\d_([ab])_(weight|bias)$"), r"conv\1_\2_\3"),  # one pair per block, R copies
    (re.compile(r"^conv_end_\d\d_(weight|bias)$"), r"conv_end_\1"),  # one reconstruction, M copies
)


def load_graph(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def _tuple(text: str | None, default: tuple[int, ...]) -> tuple[int, ...]:
    if not text or text.strip() in ("()", ""):
        return default
    return tuple(int(v) for v in text.strip("() ").split(",") if v.strip())


def run_graph(
    graph: dict[str, Any], data: torch.Tensor, param: Callable[[str, tuple[int, ...]], torch.Tensor]
) -> torch.Tensor:
    """Evaluate ``graph`` on ``data`` (N, C, H, W); ``param(name, shape)`` gives each parameter node's array."""
    nodes = graph["nodes"]
    values: dict[int, torch.Tensor] = {}

    def arg(i: int, shape: tuple[int, ...]) -> torch.Tensor:
        node = nodes[i]
        assert node["op"] == "null", f"{node['name']} is not a parameter"
        return param(node["name"], shape)

    for i, node in enumerate(nodes):
        op, attrs, ins = node["op"], node.get("attrs", {}), [src[0] for src in node["inputs"]]
        if op == "null":
            if node["name"] == "data":
                values[i] = data
            continue
        if op == "Convolution":
            x = values[ins[0]]
            k = _tuple(attrs.get("kernel"), ())
            cout = int(attrs["num_filter"])
            w = arg(ins[1], (cout, x.shape[1], *k))
            b = None if attrs.get("no_bias") == "True" else arg(ins[2], (cout,))
            y = F.conv2d(
                x,
                w,
                b,
                stride=_tuple(attrs.get("stride"), (1, 1)),
                padding=_tuple(attrs.get("pad"), (0, 0)),
                dilation=_tuple(attrs.get("dilate"), (1, 1)),
                groups=int(attrs.get("num_group", 1)),
            )
        elif op == "BatchNorm":
            # Inference: moving statistics; fix_gamma (MXNet's default True) means gamma is taken as 1.
            x = values[ins[0]]
            c = (x.shape[1],)
            gamma, beta, mean, var = (arg(j, c) for j in ins[1:5])
            if attrs.get("fix_gamma", "True") == "True":
                gamma = torch.ones_like(gamma)
            eps = float(attrs.get("eps", 1e-3))
            shape = (1, -1, 1, 1)
            y = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + eps) * gamma.view(shape) + beta.view(shape)
        elif op == "Activation":
            assert attrs["act_type"] == "relu"
            y = torch.relu(values[ins[0]])
        elif op == "broadcast_add":
            y = values[ins[0]] + values[ins[1]]
        elif op == "Concat":
            y = torch.cat([values[j] for j in ins], int(attrs.get("dim", 1)))
        elif op == "_mul_scalar":
            y = values[ins[0]] * float(attrs["scalar"])
        elif op == "add_n":
            y = torch.stack([values[j] for j in ins]).sum(0)
        else:
            raise AssertionError(f"op {op} is not in the MemNet graphs")
        values[i] = y
    return values[graph["heads"][0][0]]


def _group(name: str) -> str:
    for pattern, group in _SHARED:
        if pattern.match(name):
            return pattern.sub(group, name)
    return name


def _values(name: str, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Seeded by the sharing group, so every copy of a shared convolution gets the same values."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(_group(name).encode()))
    n = 1
    for d in shape:
        n *= d
    u = torch.rand(n, generator=g, dtype=torch.float64).view(shape)
    if name.endswith("_weight"):
        fan_in = n // shape[0]
        # Small enough that 200 residual steps stay of order one; large enough that every layer counts.
        return torch.randn(shape, generator=g, dtype=torch.float64) * (0.6 / fan_in**0.5)
    if name.endswith("_moving_var"):
        return 0.5 + 1.5 * u
    if name.endswith("_gamma"):
        return 0.5 + u
    if name.endswith("_moving_mean"):
        return 0.4 * u - 0.2
    return 0.1 * u - 0.05  # biases, betas


def official_params(graph: dict[str, Any], seed: int = 0, size: int = 8) -> dict[str, torch.Tensor]:
    """Every parameter the graph names, float32, as the authors' ``.params`` holds them (``arg:``/``aux:``)."""
    made: dict[str, torch.Tensor] = {}

    def param(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in made:
            made[name] = _values(name, shape, seed).float()
        assert tuple(made[name].shape) == shape, name
        return made[name].double()

    run_graph(graph, torch.zeros(1, 1, size, size, dtype=torch.float64), param)
    return {("aux:" if k.endswith(("_moving_mean", "_moving_var")) else "arg:") + k: v for k, v in made.items()}


def graph_output(graph: dict[str, Any], params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """The graph's output on ``x`` with the parameters of a ``.params`` file (float64)."""

    def param(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        value = params.get(f"arg:{name}", params.get(f"aux:{name}"))
        assert value is not None and tuple(value.shape) == shape, name
        return value.double()

    return run_graph(graph, x.double(), param)
