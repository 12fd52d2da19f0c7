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
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConversionError
from ..registry import ArchSpec, HubSource, Metric, WeightRecord, register_arch, register_weights


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

    def __init__(self, channels: int, recursions: int, n_memory: int) -> None:
        super().__init__()
        self.conv_a = _conv(channels, channels, 3)
        self.conv_b = _conv(channels, channels, 3)
        self.bn_a = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(recursions))
        self.bn_b = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(recursions))
        gate_in = (n_memory + recursions) * channels
        self.gate_bn = nn.BatchNorm2d(gate_in)
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

    >>> out = MemNet(channels=4, blocks=2, recursions=2)(torch.rand(1, 1, 8, 8))
    >>> out.output.shape, len(out.block_outputs)
    (torch.Size([1, 1, 8, 8]), 2)
    """

    def __init__(self, *, blocks: int = 6, recursions: int = 6, channels: int = 64, in_channels: int = 1) -> None:
        super().__init__()
        self.blocks, self.recursions, self.channels, self.in_channels = blocks, recursions, channels, in_channels
        self.bn_in = nn.BatchNorm2d(in_channels)  # pre-activation on the raw input, as the authors do
        self.conv_in = _conv(in_channels, channels, 3)
        self.memory = nn.ModuleList(MemoryBlock(channels, recursions, m + 1) for m in range(blocks))
        self.recon_bn = nn.ModuleList(nn.BatchNorm2d(channels) for _ in range(blocks))
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
    """Map a MemNet ``.caffemodel`` (as read by :func:`restorekit.convert.caffe.read_caffemodel`) to our keys."""
    if state_dict and all(isinstance(k, str) and "/" not in k for k in state_dict):
        return dict(state_dict)  # already restorekit's own keys (a torch or safetensors file of this network)
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


# --------------------------------------------------------------------------------------------- registration

# Peak activation bytes per input pixel, fp32, M6R6 (tests/benchmarks/footprint.py memnet.denoise_blind --size 256,
# CPU); other sizes scale with the channels and with M + R (the states kept for the last gate dominate).
_FOOTPRINT = 7_000.0

# Receptive-field radius of the weighted sum: conv_in 1 + blocks x recursions x 2 (two 3x3 per recursion)
# + the 3x3 reconstruction 1; the 1x1 gates add nothing. M6R6: 74 (M10R10: 202, see docs/memnet.md on tiling).
_M6R6 = {"blocks": 6, "recursions": 6, "channels": 64, "in_channels": 1}
SPEC = register_arch(
    ArchSpec(
        name="memnet",
        build=_build,
        default_config=_M6R6,
        tiny_config={"channels": 4, "blocks": 2, "recursions": 2},
        paper="Tai et al., MemNet: A Persistent Memory Network for Image Restoration, ICCV 2017",
        receptive_field=2 + 2 * _M6R6["blocks"] * _M6R6["recursions"],
        footprint=lambda cfg: (
            _FOOTPRINT * cfg.get("channels", 64) / 64 * (cfg.get("blocks", 6) + cfg.get("recursions", 6)) / 12
        ),
        select_output=select_output,
        filter_checkpoint=_filter_checkpoint,
    )
)

_PAPER = "Tai, Yang, Liu, Xu. MemNet: A Persistent Memory Network for Image Restoration. ICCV 2017"
_PARAMS = 695_497  # M6R6: 678,209 convolution weights and biases + 17,288 BatchNorm γ/β and block output weights
_NOT_YET = (
    "weights not published yet: restorekit's own come from the training issues (the authors' Caffe models are "
    "not at a pinned, fetchable URL). Meanwhile use pretrained=False, or weights= an authors' M6R6 .caffemodel "
    "or its conversion (restorekit convert FILE.caffemodel OUT.safetensors --model {name} --from caffe)."
)
# The authors' SR results for M6R6 (Y channel, shave = scale), reported in the paper: not yet measured here.
_REPORTED_SR = {
    2: (("Set5", 37.78, 0.9597), ("Set14", 33.28, 0.9142), ("B100", 32.08, 0.8978), ("Urban100", 31.31, 0.9195)),
    3: (("Set5", 34.09, 0.9248), ("Set14", 30.00, 0.8350), ("B100", 28.96, 0.8001), ("Urban100", 27.56, 0.8376)),
    4: (("Set5", 31.74, 0.8893), ("Set14", 28.26, 0.7723), ("B100", 27.40, 0.7281), ("Urban100", 25.50, 0.7630)),
}


def _record(tag: str, task: str, description: str, *, scale: int = 1, default: bool = False) -> WeightRecord:
    metrics = tuple(
        m
        for ds, psnr, ssim in (_REPORTED_SR[scale] if task == "sr" else ())
        for m in (
            Metric(ds, "psnr", psnr, "y_shave_scale", "reported"),
            Metric(ds, "ssim", ssim, "y_shave_scale", "reported"),
        )
    )
    return WeightRecord(
        arch="memnet",
        tag=tag,
        task=task,
        description=description,
        config=_M6R6,
        scale=scale,
        in_channels=1,
        out_channels=1,
        size_multiple=1,
        dtypes=("float32",),
        params=_PARAMS,
        # One SR network for x2/x3/x4: the three records share its file.
        hub=HubSource(repo_id="restorekit/memnet", filename=f"memnet_{'sr' if task == 'sr' else tag}.safetensors"),
        license="MIT (restorekit's own weights, once trained)",
        origin="restorekit retraining (training issues); the network mirrors tyshiwo/MemNet's Caffe deploy net",
        paper=_PAPER,
        metrics=metrics,
        default=default,
        notes=_NOT_YET.format(name=f"memnet.{tag}")
        + (" One network serves x2, x3 and x4 (trained on mixed scales, as the authors did)." if task == "sr" else ""),
        pre_upsample=task == "sr",
    )


register_weights(
    *(_record(f"denoise_s{s}", "denoise", f"MemNet M6R6 grey Gaussian denoising, sigma {s}") for s in (30, 50, 70)),
    _record("denoise_blind", "denoise", "MemNet M6R6 grey Gaussian denoising, one model for any sigma", default=True),
    *(
        _record(f"sr_x{s}", "sr", f"MemNet M6R6 x{s} super-resolution on the bicubic-upsampled Y", scale=s)
        for s in (2, 3, 4)
    ),
    *(_record(f"jpeg_q{q}", "jpeg", f"MemNet M6R6 JPEG deblocking (Y), quality {q}") for q in (10, 20)),
)
