"""MemNet: persistent memory network for image restoration (denoising, super-resolution, JPEG deblocking).

Tai, Yang, Liu, Xu, "MemNet: A Persistent Memory Network for Image Restoration", ICCV 2017.
Faithful to the authors' Caffe model (tyshiwo/MemNet, ``caffe_files/MemNet_M6R6_80C64`` and
``test/*/…_deploy.prototxt``), not to the PyTorch ports, which unshare the recursions and reverse
the gate's concatenation:

- every unit is pre-activation BatchNorm (+ Caffe's Scale = the affine γ/β) → ReLU → Conv (bias);
- a memory block's recursive unit applies the SAME two 3x3 convolutions R times
  (H_r = H_{r-1} + conv_b(BNR(conv_a(BNR(H_{r-1}))))), each recursion with its OWN BatchNorms;
- the gate unit is a 1x1 convolution over [B_0, B_1 … B_{m-1}, H_1 … H_R] (long-term memory first);
- ONE 3x3 reconstruction convolution (64 → 1) is shared by all blocks, each block with its own
  BatchNorm before it; every block's reconstruction plus the input is an output (multi-supervision),
  and the inference output is their sum weighted by one learned scalar per block.

The network is single-channel (Y or grey) in [0, 1] and keeps the size (SR runs on the
bicubic-upsampled image: ``pre_upsample`` in the weight records).

The registered models are the authors' own (M6R6 denoising, SR and JPEG deblocking, M10R10 SR), downloaded
as MXNet files with their graphs at a pinned commit; below are the network, the mappings of the authors'
Caffe and MXNet files onto it, and the weight records.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConversionError
from ..policy import ArchPolicy, InferencePolicy
from ..registry import ArchSpec, UrlSource, WeightRecord, psnr_ssim, register_arch, register_weights


class MemNetOutput(NamedTuple):
    """What :class:`MemNet` returns: the weighted sum (inference) and every block's output (training)."""

    output: torch.Tensor
    block_outputs: tuple[torch.Tensor, ...]


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


class MemoryBlock(nn.Module):
    """Recursive unit (two convolutions shared by the R recursions, per-recursion BatchNorm) + gate unit.

    ``forward(x, memory)``: ``x`` is the previous block's output, ``memory`` the outputs of the feature
    extractor and of every earlier block (long-term memory, oldest first).
    """

    def __init__(self, channels: int, recursions: int, n_memory: int, bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv_a = _conv(channels, channels, 3)
        self.conv_b = _conv(channels, channels, 3)
        self.bn_a = nn.ModuleList(nn.BatchNorm2d(channels, eps=bn_eps) for _ in range(recursions))
        self.bn_b = nn.ModuleList(nn.BatchNorm2d(channels, eps=bn_eps) for _ in range(recursions))
        gate_in = (n_memory + recursions) * channels
        self.gate_bn = nn.BatchNorm2d(gate_in, eps=bn_eps)
        self.gate_conv = _conv(gate_in, channels, 1)

    def forward(self, x: torch.Tensor, memory: list[torch.Tensor]) -> torch.Tensor:
        short: list[torch.Tensor] = []
        h = x
        for bn_a, bn_b in zip(self.bn_a, self.bn_b):
            t = self.conv_a(F.relu(bn_a(h), inplace=True))
            h = h + self.conv_b(F.relu(bn_b(t), inplace=True))
            short.append(h)
        # The authors' concat order: long-term memory (B_0 … B_{m-1}) first, then this block's H_1 … H_R.
        return self.gate([*memory, *short])

    def gate(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """The gate unit, BN → ReLU → 1x1 conv, over the channel concatenation of ``pieces``."""
        if self.training:
            return self.gate_conv(F.relu(self.gate_bn(torch.cat(pieces, 1)), inplace=True))
        # Inference: BatchNorm (running statistics) acts per channel and the 1x1 convolution is linear, so
        # the gate is a sum over the pieces; the (m + R) x C-channel concatenation and its normalised copy,
        # the largest tensors of the network, are never built (docs/memnet.md: peak memory).
        bn, conv = self.gate_bn, self.gate_conv
        out: torch.Tensor | None = None
        start = 0
        for piece in pieces:
            sl = slice(start, start + piece.shape[1])
            start = sl.stop
            z = F.batch_norm(piece, bn.running_mean[sl], bn.running_var[sl], bn.weight[sl], bn.bias[sl], eps=bn.eps)
            y = F.conv2d(F.relu(z, inplace=True), conv.weight[:, sl], conv.bias if out is None else None)
            out = y if out is None else out.add_(y)
        assert out is not None and start == conv.in_channels, "the gate's inputs do not add up to its channels"
        return out


class MemNet(nn.Module):
    """MemNet M``blocks``R``recursions``; input and output (N, ``in_channels``, H, W) in [0, 1].

    ``forward`` returns :class:`MemNetOutput`: ``output`` (the weighted sum of the block outputs, what
    the authors' deploy net outputs) and ``block_outputs`` (one per block, for multi-supervised training).
    ``bn_eps`` is every BatchNorm's epsilon: Caffe's 1e-5 by default; the MXNet conversions of the
    authors' models use 1e-4 (their graphs say so), and their records set it.

    >>> out = MemNet(channels=4, blocks=2, recursions=2)(torch.rand(1, 1, 8, 8))
    >>> out.output.shape, len(out.block_outputs)
    (torch.Size([1, 1, 8, 8]), 2)
    """

    def __init__(
        self, *, blocks: int = 6, recursions: int = 6, channels: int = 64, in_channels: int = 1, bn_eps: float = 1e-5
    ) -> None:
        super().__init__()
        self.blocks, self.recursions, self.channels, self.in_channels = blocks, recursions, channels, in_channels
        self.bn_eps = bn_eps
        self.bn_in = nn.BatchNorm2d(in_channels, eps=bn_eps)  # pre-activation on the raw input, as the authors do
        self.conv_in = _conv(in_channels, channels, 3)
        self.memory = nn.ModuleList(MemoryBlock(channels, recursions, m + 1, bn_eps) for m in range(blocks))
        self.recon_bn = nn.ModuleList(nn.BatchNorm2d(channels, eps=bn_eps) for _ in range(blocks))
        self.recon_conv = _conv(channels, in_channels, 3)  # shared by every block (Recon_w / Recon_b)
        # Caffe's Scale layer without a filler starts at 1: every block output initially has weight 1.
        self.output_weights = nn.Parameter(torch.ones(blocks))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Caffe's initialisation in the authors' prototxt: MSRA (He, fan-in) weights, zero biases."""
        for mod in self.modules():
            if isinstance(mod, nn.Conv2d):
                nn.init.kaiming_normal_(mod.weight, mode="fan_in", nonlinearity="relu")
                nn.init.zeros_(mod.bias)

    def forward(self, x: torch.Tensor) -> MemNetOutput:
        b0 = self.conv_in(F.relu(self.bn_in(x)))
        memory = [b0]
        h = b0
        outs = []
        for m, block in enumerate(self.memory):
            h = block(h, memory)
            memory.append(h)
            outs.append(self.recon_conv(F.relu(self.recon_bn[m](h), inplace=True)) + x)
        w = self.output_weights.to(x.dtype)
        y = outs[0] * w[0]
        for m in range(1, len(outs)):
            y = y + outs[m] * w[m]
        return MemNetOutput(y, tuple(outs))


def select_output(out: MemNetOutput | tuple[torch.Tensor, Any]) -> torch.Tensor:
    """The inference output (the weighted sum) from what :meth:`MemNet.forward` returns."""
    return out[0]


def _build(**config: Any) -> MemNet:
    return MemNet(**config)


# ------------------------------------------------------------------------------- authors' Caffe checkpoints
#
# restorekit.convert.caffe.read_caffemodel gives "<caffe layer name>/<blob index>" keys. The layer names are
# those of the authors' deploy prototxt (test/MemNet_M6R6_80C64/MemNet_M6R6_80C64_deploy.prototxt, read for
# M6R6; the M10R10 names follow the same two-digit pattern):
#   bn_conv1 / scale_conv1 / conv1                                feature extractor
#   bn_conv{m}_{r}_{a,b} / scale_conv{m}_{r}_{a,b} / conv{m}_{r}_{a,b}   recursion r of block m (01-based)
#   bn_conv_transition_{m} / scale_conv_transition_{m} / conv_transition_{m}   gate unit of block m
#   bn_conv_end_{m} / scale_conv_end_{m} / conv_end_{m}           reconstruction of block m
#   weight_output_end_{m}                                         the block's output weight (Scale, no bias)
# Caffe stores a shared parameter under every layer that uses it (conv{m}_{r}_a for every r; conv_end_{m} for
# every m): all copies are read and must agree. BatchNorm has three blobs, mean·s, var·s and s (a moving-average
# scale factor): mean = blob0 / s, var = blob1 / s (0 when s == 0, as Caffe does); eps is Caffe's 1e-5.

_CAFFE_NAME = re.compile(r"^(?P<layer>.+)/(?P<blob>\d+)$")
_CAFFE_EPS = 1e-5  # BatchNormParameter's default; the authors' prototxts set no batch_norm_param


def _caffe_layers(state_dict: Mapping[str, Any]) -> dict[str, dict[int, torch.Tensor]]:
    layers: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state_dict.items():
        match = _CAFFE_NAME.match(key) if isinstance(key, str) else None
        if match is None or not isinstance(value, torch.Tensor):
            raise ConversionError(
                f"MemNet expects a Caffe checkpoint read by restorekit's caffe reader ('<layer>/<blob>' keys), "
                f"got key {key!r}; convert the .caffemodel with `restorekit convert FILE.caffemodel OUT "
                "--model memnet.NAME --from caffe`"
            )
        layers.setdefault(match["layer"], {})[int(match["blob"])] = value
    return layers


def _fit(layer: str, index: int, blob: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """The blob as ``shape``: equal, or equal once the leading 1s of a legacy 4-D (num, channels, h, w) blob go."""
    have = tuple(blob.shape)
    squeezed = have
    while len(squeezed) > len(shape) and squeezed[0] == 1:
        squeezed = squeezed[1:]
    if squeezed != shape:
        raise ConversionError(
            f"Caffe layer {layer!r} blob {index} has shape {have}, the network expects {shape}; is the file "
            "for another MemNet variant (set config blocks/recursions/channels to match it)?"
        )
    return blob.reshape(shape).float().clone()


def _filter_checkpoint(state_dict: dict[str, Any], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Map the authors' MemNet files to our keys: a ``.caffemodel`` (as read by
    :func:`restorekit.convert.caffe.read_caffemodel`) or an MXNet ``.params`` with its graph (as read by
    :func:`restorekit.convert.mxnet.read_params`). A PyTorch port's checkpoint is refused with the reason."""
    if any(isinstance(k, str) and k.startswith(_MX_PREFIXES) for k in state_dict):
        return _filter_mxnet(state_dict, config)
    if state_dict and all(isinstance(k, str) and "/" not in k for k in state_dict):
        port = _unsupported_port(state_dict, config)
        if port is not None:
            raise ConversionError(port)
        return dict(state_dict)  # already restorekit's own keys (a torch or safetensors file of this network)
    return _filter_caffe(state_dict, config)


# Module names of PyTorch re-implementations of MemNet (Vandermode/pytorch-MemNet and the ports built on it:
# feature_extractor, dense_memory.{m}.recursive_unit.{r}.relu_conv{1,2}, gate_unit, reconstructor).
_PORT_KEY = re.compile(r"(?:^|\.)(?:recursive_unit|dense_memory|feature_extractor|gate_unit|reconstructor)\.")


def _unsupported_port(state_dict: Mapping[str, Any], config: Mapping[str, Any]) -> str | None:
    """Why ``state_dict`` is a PyTorch port's MemNet, which no mapping can turn into the authors' network; None
    when it is not one (ours, or something the key check will report on).

    The ports give every recursion its own pair of 3x3 convolutions (2 * blocks * recursions of them), where the
    authors' network shares one pair across the recursions of a block (2 * blocks): per-recursion weights
    trained apart have no shared equivalent. Recognised by the ports' module names or by that count."""
    keys = [k for k in state_dict if isinstance(k, str)]
    if "memory.0.conv_a.weight" in state_dict or not keys:
        return None
    blocks, recursions, channels = int(config["blocks"]), int(config["recursions"]), int(config["channels"])
    square = sum(
        1 for v in state_dict.values() if isinstance(v, torch.Tensor) and tuple(v.shape) == (channels, channels, 3, 3)
    )
    named = [k for k in keys if _PORT_KEY.search(k)]
    unshared = recursions > 1 and square == 2 * blocks * recursions
    if not (named or unshared):
        return None
    evidence = f"its keys are a port's, e.g. {named[0]}" if named else f"its keys (e.g. {keys[0]}) are not restorekit's"
    count = (
        f"it holds {square} 3x3 {channels}->{channels} convolutions, one pair per recursion"
        if unshared
        else "such ports give every recursion its own pair of convolutions"
    )
    return (
        f"this checkpoint is from a PyTorch port of MemNet that restorekit does not support ({evidence}): {count}, "
        f"while the authors' network, which restorekit implements, shares one pair across the {recursions} "
        f"recursions of a block ({2 * blocks} for {blocks} blocks), so its weights cannot be mapped onto it. "
        "restorekit reads the authors' own models: `load_model('memnet')` fetches them (see `restorekit list --arch "
        "memnet`), and `restorekit convert` reads their .caffemodel and MXNet .params files."
    )


def _filter_caffe(state_dict: dict[str, Any], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    eps = float(config.get("bn_eps", _CAFFE_EPS))
    if not math.isclose(eps, _CAFFE_EPS, rel_tol=1e-6):
        raise ConversionError(
            f"a caffemodel's BatchNorms use Caffe's eps {_CAFFE_EPS:g} (the authors' deploy prototxts set none), but "
            f"the config says {eps:g} (the records of the authors' MXNet files take their graphs' eps): pass the "
            f'config {{"bn_eps": {_CAFFE_EPS:g}}} (restorekit convert ... --config \'{{"bn_eps": {_CAFFE_EPS:g}}}\')'
        )
    layers = _caffe_layers(state_dict)
    blocks, recursions = int(config["blocks"]), int(config["recursions"])
    channels, cin = int(config["channels"]), int(config.get("in_channels", 1))
    out: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing: list[str] = []

    def blobs(layer: str, count: int) -> dict[int, torch.Tensor] | None:
        got = layers.get(layer)
        if got is None:
            missing.append(layer)
            return None
        used.add(layer)
        if sorted(got) != list(range(count)):
            raise ConversionError(f"Caffe layer {layer!r} has blobs {sorted(got)}, a MemNet layer has {count}")
        return got

    def batchnorm(caffe: str, ours: str, c: int) -> None:
        bn, sc = blobs(f"bn_{caffe}", 3), blobs(f"scale_{caffe}", 2)
        if bn is None or sc is None:
            return
        factor = _fit(f"bn_{caffe}", 2, bn[2], (1,))[0]
        inv = 0.0 if float(factor) == 0 else 1.0 / float(factor)
        out[f"{ours}.running_mean"] = _fit(f"bn_{caffe}", 0, bn[0], (c,)) * inv
        out[f"{ours}.running_var"] = _fit(f"bn_{caffe}", 1, bn[1], (c,)) * inv
        out[f"{ours}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        out[f"{ours}.weight"] = _fit(f"scale_{caffe}", 0, sc[0], (c,))
        out[f"{ours}.bias"] = _fit(f"scale_{caffe}", 1, sc[1], (c,))

    def conv(caffe_copies: list[str], ours: str, cout: int, cin_: int, k: int) -> None:
        first: tuple[torch.Tensor, torch.Tensor] | None = None
        for name in caffe_copies:
            got = blobs(name, 2)
            if got is None:
                continue
            w = _fit(name, 0, got[0], (cout, cin_, k, k))
            b = _fit(name, 1, got[1], (cout,))
            if first is None:
                first = (w, b)
            elif not (torch.equal(w, first[0]) and torch.equal(b, first[1])):
                raise ConversionError(
                    f"Caffe layers {caffe_copies[0]!r} and {name!r} share one convolution in MemNet, but their "
                    "weights differ: this caffemodel was not trained with the authors' weight sharing"
                )
        if first is not None:
            out[f"{ours}.weight"], out[f"{ours}.bias"] = first

    batchnorm("conv1", "bn_in", cin)
    conv(["conv1"], "conv_in", channels, cin, 3)
    for m in range(1, blocks + 1):
        mm, ours = f"{m:02d}", f"memory.{m - 1}"
        for part in "ab":
            for r in range(1, recursions + 1):
                batchnorm(f"conv{mm}_{r:02d}_{part}", f"{ours}.bn_{part}.{r - 1}", channels)
            copies = [f"conv{mm}_{r:02d}_{part}" for r in range(1, recursions + 1)]
            conv(copies, f"{ours}.conv_{part}", channels, channels, 3)
        gate_in = (m + recursions) * channels
        batchnorm(f"conv_transition_{mm}", f"{ours}.gate_bn", gate_in)
        conv([f"conv_transition_{mm}"], f"{ours}.gate_conv", channels, gate_in, 1)
        batchnorm(f"conv_end_{mm}", f"recon_bn.{m - 1}", channels)
    conv([f"conv_end_{m:02d}" for m in range(1, blocks + 1)], "recon_conv", cin, channels, 3)
    weights = []
    for m in range(1, blocks + 1):
        got = blobs(f"weight_output_end_{m:02d}", 1)
        if got is not None:
            weights.append(_fit(f"weight_output_end_{m:02d}", 0, got[0], (1,)))
    if missing:
        raise ConversionError(
            f"the caffemodel lacks {len(missing)} MemNet layer(s): {', '.join(missing[:5])}"
            + (" …" if len(missing) > 5 else "")
            + f" (expected M{blocks}R{recursions}{_variant_hint(layers)})"
        )
    extra = sorted(set(layers) - used)
    if extra:
        raise ConversionError(
            f"the caffemodel has layers with weights that M{blocks}R{recursions} MemNet does not: "
            f"{', '.join(extra[:5])}" + (" …" if len(extra) > 5 else "") + _variant_hint(layers)
        )
    out["output_weights"] = torch.cat(weights)
    return out


def _variant_hint(layers: Mapping[str, Any]) -> str:
    found = [re.match(r"^conv(\d+)_(\d+)_a$", name) for name in layers]
    pairs = [(int(f[1]), int(f[2])) for f in found if f]
    if not pairs:
        return "; the file holds no MemNet recursion layers (conv01_01_a …): is it a MemNet caffemodel?"
    m, r = max(p[0] for p in pairs), max(p[1] for p in pairs)
    return f'; the file looks like M{m}R{r}: pass the config {{"blocks": {m}, "recursions": {r}}}'


# ------------------------------------------------------------------------ authors' models converted to MXNet
#
# WolframRhodium/Super-Resolution-Zoo holds MXNet conversions of the authors' Caffe models (MemNet/official/):
# NAME-0000.params (read by restorekit.convert.mxnet.read_params) and the graph NAME-symbol.json beside it. The
# graph keeps Caffe's layer names: conv1 / bn_conv1 (BatchNorm and Caffe's Scale merged: _gamma, _beta,
# _moving_mean, _moving_var), conv{m}_{r}_{a,b}, conv_transition_{m}, conv_end_{m}; parameters are
# "arg:<name>_weight" / "_bias" / "_gamma" / "_beta" and "aux:<name>_moving_mean" / "_moving_var". Like the
# caffemodel it repeats what Caffe shared (each block's two recursion convolutions once per recursion,
# the reconstruction once per block): every copy is read and must agree. Two things are not in the .params:
# each block's output weight is a _mul_scalar node's "scalar" and every BatchNorm's eps an attribute (1e-4
# in the authors' graphs, not Caffe's 1e-5). So the graph is required, and it is checked node by node
# against the MemNet the config describes, so that what is built computes what the graph computes.

_MX_PREFIXES = ("arg:", "aux:", "mxnet:")
_MX_OPS = ("null", "Convolution", "BatchNorm", "Activation", "broadcast_add", "Concat", "_mul_scalar", "add_n")
_MX_DEFAULT_EPS = 1e-3  # MXNet BatchNorm's own defaults, for attributes a graph leaves out
_MX_DEFAULT_FIX_GAMMA = True


def _mx_tuple(value: Any, default: tuple[int, ...]) -> tuple[int, ...]:
    if value in (None, "", "()", "[]"):
        return default
    return tuple(int(v) for v in str(value).strip("()[] ").split(",") if v.strip())


def _mx_bool(value: Any, default: bool) -> bool:
    return default if value is None else str(value).strip().lower() in ("true", "1")


class _Wiring:
    """Structures interned by content: two nodes get one id exactly when they compute the same thing from the
    same named parameters (commutative sums sorted), so a graph matches the expected MemNet iff its output does."""

    def __init__(self) -> None:
        self.ids: dict[tuple[Any, ...], int] = {}

    def node(self, op: str, attrs: tuple[Any, ...], inputs: tuple[tuple[int, int], ...]) -> int:
        if op in ("broadcast_add", "add_n"):
            inputs = tuple(sorted(inputs))
        return self.ids.setdefault((op, attrs, inputs), len(self.ids))

    def var(self, name: str) -> int:
        return self.ids.setdefault(("null", name), len(self.ids))


def _conv_attrs(k: int, cout: int) -> tuple[Any, ...]:
    # (kernel, pad, stride, dilate, groups, no_bias, num_filter): MemNet's convolutions keep the size.
    return ((k, k), (k // 2, k // 2), (1, 1), (1, 1), 1, False, cout)


def _expected_wiring(w: _Wiring, blocks: int, recursions: int, channels: int, cin: int) -> tuple[int, list[int]]:
    """The graph MemNet M{blocks}R{recursions} is, with the authors' names: (output id, HR_recovery ids)."""
    data = w.var("data")

    def bnr(x: int, name: str) -> int:
        params = tuple((w.var(f"{name}_{p}"), 0) for p in ("gamma", "beta", "moving_mean", "moving_var"))
        bn = w.node("BatchNorm", (), ((x, 0), *params))
        return w.node("Activation", ("relu",), ((bn, 0),))

    def conv(x: int, name: str, k: int, cout: int) -> int:
        params = ((w.var(f"{name}_weight"), 0), (w.var(f"{name}_bias"), 0))
        return w.node("Convolution", _conv_attrs(k, cout), ((x, 0), *params))

    memory = [conv(bnr(data, "bn_conv1"), "conv1", 3, channels)]
    h, recoveries = memory[0], []
    for m in range(1, blocks + 1):
        mm, short = f"{m:02d}", []
        for r in range(1, recursions + 1):
            name = f"conv{mm}_{r:02d}"
            t = conv(bnr(h, f"bn_{name}_a"), f"{name}_a", 3, channels)
            h = w.node("broadcast_add", (), ((h, 0), (conv(bnr(t, f"bn_{name}_b"), f"{name}_b", 3, channels), 0)))
            short.append(h)
        gate = w.node("Concat", (1,), tuple((p, 0) for p in [*memory, *short]))
        h = conv(bnr(gate, f"bn_conv_transition_{mm}"), f"conv_transition_{mm}", 1, channels)
        memory.append(h)
        recon = conv(bnr(h, f"bn_conv_end_{mm}"), f"conv_end_{mm}", 3, cin)
        recoveries.append(w.node("broadcast_add", (), ((data, 0), (recon, 0))))
    scaled = tuple((w.node("_mul_scalar", (), ((rec, 0),)), 0) for rec in recoveries)
    return w.node("add_n", (), scaled), recoveries


class _MXGraph(NamedTuple):
    eps: dict[str, float]  # BatchNorm node name -> eps
    fixed_gamma: set[str]  # BatchNorm nodes whose gamma MXNet ignores (fix_gamma: gamma is 1)
    output_weights: list[float]  # the _mul_scalar of each block's HR_recovery, block order


def _read_mx_graph(graph: Mapping[str, Any], config: Mapping[str, Any]) -> _MXGraph:
    blocks, recursions = int(config["blocks"]), int(config["recursions"])
    variant = f"M{blocks}R{recursions}"
    nodes = graph.get("nodes")
    heads = graph.get("heads")
    if not isinstance(nodes, list) or not isinstance(heads, list) or len(heads) != 1:
        raise ConversionError("the MXNet graph needs a 'nodes' list and one output in 'heads'")
    w = _Wiring()
    head, recoveries = _expected_wiring(w, blocks, recursions, int(config["channels"]), int(config["in_channels"]))
    expected = set(w.ids.values())
    ids: list[int] = []
    eps: dict[str, float] = {}
    fixed: set[str] = set()
    scalars: dict[int, float] = {}  # id of the scaled HR_recovery -> scalar
    counts = {"Concat": 0, "broadcast_add": 0}
    for node in nodes:
        op, name = node.get("op"), node.get("name")
        if op not in _MX_OPS:
            raise ConversionError(
                f"the MXNet graph has a {op!r} node ({name!r}), which MemNet does not use: is it a MemNet graph?"
            )
        if op == "null":
            ids.append(w.var(str(name)))
            continue
        attrs = node.get("attrs", node.get("attr", node.get("param"))) or {}
        try:
            inputs = tuple((ids[src[0]], int(src[1])) for src in node.get("inputs", []))
        except (IndexError, TypeError, ValueError):
            raise ConversionError(f"the MXNet graph's node {name!r} has malformed inputs") from None
        key: tuple[Any, ...] = ()
        if op == "Convolution":
            k = _mx_tuple(attrs.get("kernel"), ())
            key = (
                k,
                _mx_tuple(attrs.get("pad"), (0,) * len(k)),
                _mx_tuple(attrs.get("stride"), (1,) * len(k)),
                _mx_tuple(attrs.get("dilate"), (1,) * len(k)),
                int(attrs.get("num_group", 1)),
                _mx_bool(attrs.get("no_bias"), False),
                int(attrs.get("num_filter", -1)),
            )
        elif op == "BatchNorm":
            if int(attrs.get("axis", 1)) != 1:
                raise ConversionError(
                    f"BatchNorm {name!r} normalises axis {attrs['axis']}, MemNet's normalise channels"
                )
            eps[str(name)] = float(attrs.get("eps", _MX_DEFAULT_EPS))
            if _mx_bool(attrs.get("fix_gamma"), _MX_DEFAULT_FIX_GAMMA):
                fixed.add(str(name))
        elif op == "Activation":
            key = (str(attrs.get("act_type")),)
        elif op == "Concat":
            key = (int(attrs.get("dim", 1)),)
        if op in counts:
            counts[op] += 1
        ids.append(w.node(op, key, inputs))
        if op == "_mul_scalar":
            scalars[inputs[0][0]] = float(attrs.get("scalar", 0))
    out = int(heads[0][0])
    if not (0 <= out < len(ids) and ids[out] == head):
        raise ConversionError(
            f"the MXNet graph does not compute MemNet {variant} as the authors built it"
            + _graph_hint(nodes, ids, expected, counts, variant)
        )
    return _MXGraph(eps, fixed, [scalars[r] for r in recoveries])


def _graph_hint(nodes: list[Any], ids: list[int], expected: set[int], counts: Mapping[str, int], variant: str) -> str:
    """Where a graph leaves MemNet: its first node that has no place in the expected graph, and the variant its
    block count suggests (Concats = blocks; broadcast_adds = blocks x (recursions + 1))."""
    stray = next((nodes[i] for i, n in enumerate(ids) if n not in expected), None)
    where = f"; its node {stray.get('name')!r} ({stray.get('op')}) has no place there" if stray else ""
    m = counts["Concat"]
    r = counts["broadcast_add"] // m - 1 if m else 0
    if m and f"M{m}R{r}" != variant:
        where += f' (the graph looks like M{m}R{r}: pass the config {{"blocks": {m}, "recursions": {r}}})'
    return where


def _filter_mxnet(state_dict: dict[str, Any], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    from ..convert.mxnet import SYMBOL_KEY, symbol_of

    blocks, recursions = int(config["blocks"]), int(config["recursions"])
    channels, cin = int(config["channels"]), int(config.get("in_channels", 1))
    graph = symbol_of(state_dict)
    if graph is None:
        raise ConversionError(
            "MemNet's block output weights and BatchNorm eps are in the MXNet graph, not in the .params file: put "
            "the graph MXNet saved with it (PREFIX-symbol.json beside PREFIX-0000.params, the same PREFIX) next to "
            "the .params file and convert again"
        )
    try:
        facts = _read_mx_graph(graph, {**config, "in_channels": cin})
    except (ValueError, TypeError, KeyError, AttributeError, IndexError) as exc:  # attributes that do not parse
        raise ConversionError(
            f"the MXNet graph beside the .params file is malformed ({type(exc).__name__}: {exc})"
        ) from exc
    want_eps = float(config.get("bn_eps", 1e-5))
    wrong = sorted({e for e in facts.eps.values() if not math.isclose(e, want_eps, rel_tol=1e-6)})
    if wrong:
        raise ConversionError(
            f"the graph's BatchNorms use eps {', '.join(f'{e:g}' for e in wrong)}, the network's is {want_eps:g}: "
            f'pass the config {{"bn_eps": {wrong[0]:g}}}' + ("" if len(wrong) == 1 else " (and use one eps throughout)")
        )
    arrays = {k: v for k, v in state_dict.items() if k != SYMBOL_KEY}
    used: set[str] = set()
    missing: list[str] = []

    def get(key: str, shape: tuple[int, ...]) -> torch.Tensor | None:
        value = arrays.get(key)
        if value is None:
            missing.append(key)
            return None
        used.add(key)
        return _fit(key, 0, value, shape)

    out: dict[str, torch.Tensor] = {}

    def batchnorm(mx: str, ours: str, c: int) -> None:
        gamma, beta = get(f"arg:{mx}_gamma", (c,)), get(f"arg:{mx}_beta", (c,))
        mean, var = get(f"aux:{mx}_moving_mean", (c,)), get(f"aux:{mx}_moving_var", (c,))
        if gamma is None or beta is None or mean is None or var is None:
            return
        # fix_gamma: MXNet uses gamma = 1 whatever the file holds.
        out[f"{ours}.weight"] = torch.ones(c) if mx in facts.fixed_gamma else gamma
        out[f"{ours}.bias"], out[f"{ours}.running_mean"], out[f"{ours}.running_var"] = beta, mean, var
        out[f"{ours}.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)

    def conv(copies: list[str], ours: str, cout: int, cin_: int, k: int) -> None:
        first: tuple[str, torch.Tensor, torch.Tensor] | None = None
        for name in copies:
            w, b = get(f"arg:{name}_weight", (cout, cin_, k, k)), get(f"arg:{name}_bias", (cout,))
            if w is None or b is None:
                continue
            if first is None:
                first = (name, w, b)
            elif not (torch.equal(w, first[1]) and torch.equal(b, first[2])):
                diff = max(float((w - first[1]).abs().max()), float((b - first[2]).abs().max()))
                raise ConversionError(
                    f"{first[0]!r} and {name!r} are copies of one convolution that the authors' MemNet shares, but "
                    f"they differ (by up to {diff:.3g}): this file was not trained with the authors' weight sharing, "
                    "so restorekit's MemNet cannot hold it"
                )
        if first is not None:
            out[f"{ours}.weight"], out[f"{ours}.bias"] = first[1], first[2]

    batchnorm("bn_conv1", "bn_in", cin)
    conv(["conv1"], "conv_in", channels, cin, 3)
    for m in range(1, blocks + 1):
        mm, ours = f"{m:02d}", f"memory.{m - 1}"
        for part in "ab":
            for r in range(1, recursions + 1):
                batchnorm(f"bn_conv{mm}_{r:02d}_{part}", f"{ours}.bn_{part}.{r - 1}", channels)
            conv(
                [f"conv{mm}_{r:02d}_{part}" for r in range(1, recursions + 1)],
                f"{ours}.conv_{part}",
                channels,
                channels,
                3,
            )
        gate_in = (m + recursions) * channels
        batchnorm(f"bn_conv_transition_{mm}", f"{ours}.gate_bn", gate_in)
        conv([f"conv_transition_{mm}"], f"{ours}.gate_conv", channels, gate_in, 1)
        batchnorm(f"bn_conv_end_{mm}", f"recon_bn.{m - 1}", channels)
    conv([f"conv_end_{m:02d}" for m in range(1, blocks + 1)], "recon_conv", cin, channels, 3)
    if missing:
        raise ConversionError(
            f"the .params file lacks {len(missing)} array(s) that its graph uses: {', '.join(missing[:5])}"
            + (" …" if len(missing) > 5 else "")
            + "; is it the .params file of this graph (the same PREFIX)?"
        )
    extra = sorted(set(arrays) - used)
    if extra:
        raise ConversionError(
            f"the .params file has arrays that MemNet M{blocks}R{recursions} does not use: {', '.join(extra[:5])}"
            + (" …" if len(extra) > 5 else "")
        )
    out["output_weights"] = torch.tensor(facts.output_weights, dtype=torch.float32)
    return out


# --------------------------------------------------------------------------------------------- registration

# Peak activation bytes per input pixel, fp32, M6R6 (tests/benchmarks/footprint.py memnet.denoise_blind --size 256,
# CPU); other sizes scale with the channels and with M + R (the states kept for the last gate dominate).
_FOOTPRINT = 7_000.0

# Receptive-field radius of the weighted sum: conv_in 1 + blocks x recursions x 2 (two 3x3 per recursion)
# + the 3x3 reconstruction 1; the 1x1 gates add nothing. M6R6: 74, M10R10: 202.
_M6R6 = {"blocks": 6, "recursions": 6, "channels": 64, "in_channels": 1, "bn_eps": 1e-5}
SPEC = register_arch(
    ArchSpec(
        name="memnet",
        # channels_last on the CPU: 0.91 at 128 px, 0.93 at 256 px of contiguous time, same results
        # (python tests/benchmarks/bench_policy.py --size 256 --repeats 4 --no-compile; docs/performance.md).
        policy=ArchPolicy(cpu=InferencePolicy(memory_format="channels_last")),
        build=_build,
        default_config=_M6R6,
        tiny_config={"channels": 4, "blocks": 2, "recursions": 2},
        paper="Tai et al., MemNet: A Persistent Memory Network for Image Restoration, ICCV 2017",
        receptive_field=lambda cfg: 2 + 2 * int(cfg["blocks"]) * int(cfg["recursions"]),
        footprint=lambda cfg: (
            _FOOTPRINT * cfg.get("channels", 64) / 64 * (cfg.get("blocks", 6) + cfg.get("recursions", 6)) / 12
        ),
        select_output=select_output,
        filter_checkpoint=_filter_checkpoint,
    )
)

_PAPER = "Tai, Yang, Liu, Xu. MemNet: A Persistent Memory Network for Image Restoration. ICCV 2017"
# Parameter counts of the full network (conv + BN γ/β, and the block output weights):
_M6R6_PARAMS = 695_497  # 678,209 + 17,288
_M10R10_PARAMS = 1_422_029  # 1,375,297 + 46,732

# The authors' models, as MXNet files at a pinned commit of WolframRhodium/Super-Resolution-Zoo (MemNet/official/,
# converted from tyshiwo/MemNet at d37a6abd): NAME-0000.params and its graph NAME-symbol.json, each pinned by
# its git blob SHA-1 (plain git blobs: the repository has no LFS).
_ZOO = (
    "https://raw.githubusercontent.com/WolframRhodium/Super-Resolution-Zoo/"
    "041842f177ab4aa59287f8561ec9b3446bd4826c/MemNet/official/"
)
_GD, _SR, _JD, _SR_M10R10 = (
    "MemNet_M6R6_80C64_GD",  # grey Gaussian denoising, one network for sigma 30/50/70
    "MemNet_M6R6_80C64_SR",  # super-resolution, one network for x2/x3/x4
    "MemNet_M6R6_80C64_JD",  # JPEG deblocking, one network for quality 10/20
    "MemNet_M10R10_212C64_SR",
)
_OFFICIAL = {  # file prefix -> (git blob of -0000.params, git blob of -symbol.json)
    _SR: ("fbff564ceea2902f495468c5fedbc399a372f879", "9bd81b2bd25821132104a02bf5fffe497a9f4857"),
    _GD: ("e9f7fa331c7a0ac5dde44c47787adcd9f79bb6ea", "7e4d3f74b67fe61642ab9170b4da1c58a15b4533"),
    _JD: ("1385c00b208ff27f1469f1118a58f56afe7823aa", "a2712afea21bce1371f4f52bb9a8c30a5af00338"),
    _SR_M10R10: ("451d3cceb3a66b62a888802bb9a9b17fe10c1f37", "ee323412f623b2970a94d9055d84b8ac8c9052af"),
}
# Their graphs set every BatchNorm's eps to 1e-4 (read from the graph at conversion, which checks this).
_M6R6_MX = {**_M6R6, "bn_eps": 1e-4}
_M10R10_MX = {**_M6R6, "blocks": 10, "recursions": 10, "bn_eps": 1e-4}
# The authors' weights are never re-uploaded or bundled: their rows have an upstream source only.
_AUTHORS = dict(
    license=(
        "none stated: tyshiwo/MemNet and WolframRhodium/Super-Resolution-Zoo have no LICENSE file; the MemNet "
        "authors' weights, for research use. restorekit downloads them from the pinned URL when you ask and never "
        "bundles or re-uploads them"
    ),
    license_notice=(
        "the MemNet authors publish these weights without a license (research use); restorekit fetches them from "
        "their pinned upstream URL for you and does not redistribute them"
    ),
    paper=_PAPER,
)


def _official(prefix: str) -> UrlSource:
    params, symbol = _OFFICIAL[prefix]
    graph = UrlSource(url=f"{_ZOO}{prefix}-symbol.json", format="mxnet", git_blob_sha1=symbol)
    return UrlSource(url=f"{_ZOO}{prefix}-0000.params", format="mxnet", git_blob_sha1=params, companions=(graph,))


def _origin(prefix: str) -> str:
    return (
        f"the MemNet authors' Caffe model {prefix} (tyshiwo/MemNet), as converted to MXNet in "
        "WolframRhodium/Super-Resolution-Zoo; converted to safetensors on first use"
    )


_GD_NOTE = "The authors' one grey Gaussian denoiser for sigma 30, 50 and 70: the three records share its file."
_SR_NOTE = "The authors' one network for x2, x3 and x4 (trained on mixed scales): the three records share its file."
_SR_M10R10_NOTE = (
    "The authors' one M10R10 network for x2, x3 and x4 (trained on mixed scales): the three records share its file."
)
_JD_NOTE = "The authors' one grey JPEG deblocker for quality 10 and 20: the two records share its file."

# Reported figures: the paper's SR table for M6R6 (architectures.md §2; Y, shave = scale), and the grey JPEG q10
# PSNR on the Y/grey image (second-hand, the paperswithcode table). No SSIM or q20 figure was found in a source that
# could be checked, nor denoising or M10R10 figures: those records carry none.
register_weights(
    WeightRecord.named(
        "memnet.denoise_s30",
        task="denoise",
        description="MemNet M6R6 grey Gaussian denoising, sigma 30: the authors' model",
        config=_M6R6_MX,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        upstream=_official(_GD),
        origin=_origin(_GD),
        notes=_GD_NOTE,
        grey_on_color="rgb",
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.denoise_s50",
        task="denoise",
        description="MemNet M6R6 grey Gaussian denoising, sigma 50: the authors' model",
        config=_M6R6_MX,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        upstream=_official(_GD),
        origin=_origin(_GD),
        default=True,  # the middle of the range the one network was trained for
        notes=_GD_NOTE,
        grey_on_color="rgb",
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.denoise_s70",
        task="denoise",
        description="MemNet M6R6 grey Gaussian denoising, sigma 70: the authors' model",
        config=_M6R6_MX,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        upstream=_official(_GD),
        origin=_origin(_GD),
        notes=_GD_NOTE,
        grey_on_color="rgb",
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.denoise_blind",
        task="denoise",
        description="MemNet M6R6 grey Gaussian denoising, one model for any sigma (restorekit's own, not trained yet)",
        config=_M6R6,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        license="MIT (restorekit's own weights, once trained)",
        origin="restorekit retraining (not yet run); the network mirrors tyshiwo/MemNet's Caffe deploy net",
        paper=_PAPER,
        notes="weights not published yet: restorekit's own blind denoiser comes from a training run. Meanwhile use "
        "memnet.denoise_s30/_s50/_s70 (the authors' model), pretrained=False, or weights= a file of your own.",
        grey_on_color="rgb",
    ),
    WeightRecord.named(
        "memnet.sr_x2",
        task="sr",
        scale=2,
        description="MemNet M6R6 x2 super-resolution on the bicubic-upsampled Y: the authors' model",
        config=_M6R6_MX,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        upstream=_official(_SR),
        origin=_origin(_SR),
        metrics=psnr_ssim(
            "y_shave_scale",
            ("Set5", 37.78, 0.9597),
            ("Set14", 33.28, 0.9142),
            ("B100", 32.08, 0.8978),
            ("Urban100", 31.31, 0.9195),
        ),
        notes=_SR_NOTE,
        pre_upsample=True,
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.sr_x3",
        task="sr",
        scale=3,
        description="MemNet M6R6 x3 super-resolution on the bicubic-upsampled Y: the authors' model",
        config=_M6R6_MX,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        upstream=_official(_SR),
        origin=_origin(_SR),
        metrics=psnr_ssim(
            "y_shave_scale",
            ("Set5", 34.09, 0.9248),
            ("Set14", 30.00, 0.8350),
            ("B100", 28.96, 0.8001),
            ("Urban100", 27.56, 0.8376),
        ),
        notes=_SR_NOTE,
        pre_upsample=True,
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.sr_x4",
        task="sr",
        scale=4,
        description="MemNet M6R6 x4 super-resolution on the bicubic-upsampled Y: the authors' model",
        config=_M6R6_MX,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        upstream=_official(_SR),
        origin=_origin(_SR),
        metrics=psnr_ssim(
            "y_shave_scale",
            ("Set5", 31.74, 0.8893),
            ("Set14", 28.26, 0.7723),
            ("B100", 27.40, 0.7281),
            ("Urban100", 25.50, 0.7630),
        ),
        notes=_SR_NOTE,
        pre_upsample=True,
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.sr_m10r10_x2",
        task="sr",
        scale=2,
        description="MemNet M10R10 (212 layers) x2 super-resolution on the bicubic-upsampled Y: the authors' model",
        config=_M10R10_MX,
        in_channels=1,
        out_channels=1,
        params=_M10R10_PARAMS,
        upstream=_official(_SR_M10R10),
        origin=_origin(_SR_M10R10),
        notes=_SR_M10R10_NOTE,
        pre_upsample=True,
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.sr_m10r10_x3",
        task="sr",
        scale=3,
        description="MemNet M10R10 (212 layers) x3 super-resolution on the bicubic-upsampled Y: the authors' model",
        config=_M10R10_MX,
        in_channels=1,
        out_channels=1,
        params=_M10R10_PARAMS,
        upstream=_official(_SR_M10R10),
        origin=_origin(_SR_M10R10),
        notes=_SR_M10R10_NOTE,
        pre_upsample=True,
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.sr_m10r10_x4",
        task="sr",
        scale=4,
        description="MemNet M10R10 (212 layers) x4 super-resolution on the bicubic-upsampled Y: the authors' model",
        config=_M10R10_MX,
        in_channels=1,
        out_channels=1,
        params=_M10R10_PARAMS,
        upstream=_official(_SR_M10R10),
        origin=_origin(_SR_M10R10),
        notes=_SR_M10R10_NOTE,
        pre_upsample=True,
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.jpeg_q10",
        task="jpeg",
        description="MemNet M6R6 JPEG deblocking (Y), quality 10: the authors' model",
        config=_M6R6_MX,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        upstream=_official(_JD),
        origin=_origin(_JD),
        metrics=psnr_ssim("y_full", ("Classic5", 29.69), ("LIVE1", 29.45)),
        notes=_JD_NOTE,
        **_AUTHORS,
    ),
    WeightRecord.named(
        "memnet.jpeg_q20",
        task="jpeg",
        description="MemNet M6R6 JPEG deblocking (Y), quality 20: the authors' model",
        config=_M6R6_MX,
        in_channels=1,
        out_channels=1,
        params=_M6R6_PARAMS,
        upstream=_official(_JD),
        origin=_origin(_JD),
        notes=_JD_NOTE,
        **_AUTHORS,
    ),
)
