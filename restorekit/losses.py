"""Training losses, as the papers define them, for ``restorekit-train`` and for anyone training a restorekit network.

Each loss takes what the network's ``forward`` returns (a tensor, or a multi-output structure) and the
target image, and returns a scalar tensor.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "euclidean_loss",
    "MultiSupervisedLoss",
    "CRITERIA",
    "L1Loss",
    "EuclideanLoss",
    "charbonnier",
    "EdgeLoss",
    "CharbonnierEdgeLoss",
    "uncertainty_loss",
    "psnr_loss",
    "VGG19Features",
    "ContrastiveLoss",
    "DSRIRLoss",
    "LOSSES",
    "build_loss",
]


def euclidean_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Caffe's ``EuclideanLoss``: ``sum((pred - target)²) / (2 · batch size)``.

    >>> float(euclidean_loss(torch.ones(2, 1, 2, 2), torch.zeros(2, 1, 2, 2)))
    2.0
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    return (pred - target).pow(2).sum() / (2 * pred.shape[0])


# Per-output criteria by name (a callable works too).
CRITERIA: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "euclidean": euclidean_loss,
    "mse": F.mse_loss,
    "l1": F.l1_loss,
}


class MultiSupervisedLoss(nn.Module):
    """MemNet's multi-supervision: one term per block output plus one for the weighted-sum output.

    The authors' train prototxt puts a ``EuclideanLoss`` with loss weight 1 on each of the M block
    outputs (``HR_recovery_0m``) and on their weighted sum (``HR_recovery``): M + 1 terms, summed.
    ``outputs`` is what :class:`restorekit.archs.memnet.MemNet` returns (``MemNetOutput``, or any
    ``(final, block_outputs)`` pair).

    >>> from restorekit.archs.memnet import MemNet
    >>> net, loss = MemNet(channels=4, blocks=2, recursions=2), MultiSupervisedLoss()
    >>> x = torch.rand(2, 1, 8, 8)
    >>> loss(net(x), x).backward()
    """

    def __init__(
        self,
        criterion: str | Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = "euclidean",
        *,
        block_weight: float = 1.0,
        final_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if isinstance(criterion, str):
            if criterion not in CRITERIA:
                names = ", ".join(CRITERIA)
                raise ValueError(f"unknown criterion {criterion!r}; choose one of {names} or pass a callable")
            criterion = CRITERIA[criterion]
        self.criterion = criterion
        self.block_weight = float(block_weight)
        self.final_weight = float(final_weight)

    @staticmethod
    def _split(outputs: Any) -> tuple[torch.Tensor, Sequence[torch.Tensor]]:
        if isinstance(outputs, torch.Tensor) or not isinstance(outputs, Sequence) or len(outputs) != 2:
            raise TypeError(
                "MultiSupervisedLoss needs the network's (output, block_outputs), e.g. MemNet's forward result, "
                f"not a {type(outputs).__name__}"
            )
        final, blocks = outputs
        return final, tuple(blocks)

    def terms(self, outputs: Any, target: torch.Tensor) -> list[torch.Tensor]:
        """The unweighted terms: one per block output, then the final output's (for logging)."""
        final, blocks = self._split(outputs)
        return [self.criterion(out, target) for out in blocks] + [self.criterion(final, target)]

    def forward(self, outputs: Any, target: torch.Tensor) -> torch.Tensor:
        *blocks, final = self.terms(outputs, target)
        total = self.final_weight * final
        for term in blocks:
            total = total + self.block_weight * term
        return total


# ------------------------------------------------------------------------------------------------ helpers


def _final(outputs: Any) -> torch.Tensor:
    """The restored image of a single- or multi-output network (first of a stage list, MemNet's ``final``)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    first = outputs[0]
    return first if isinstance(first, torch.Tensor) else first[0]


def _stage_list(outputs: Any) -> list[torch.Tensor]:
    """Every stage output, final first: a tensor, a list of tensors, or ``(images, extras)``."""
    if isinstance(outputs, torch.Tensor):
        return [outputs]
    if len(outputs) and not isinstance(outputs[0], torch.Tensor):  # ([img3, img2, img1], [var3, ...])
        return list(outputs[0])
    return list(outputs)


# ------------------------------------------------------------------------------------------------ L1 / L2


class L1Loss(nn.Module):
    """MSRN's loss: the mean absolute error, in whatever range the network works in (0-255 for MSRN).

    >>> float(L1Loss()(torch.full((1, 1, 2, 2), 3.0), torch.ones(1, 1, 2, 2)))
    2.0
    """

    def forward(self, outputs: Any, target: torch.Tensor) -> torch.Tensor:
        return F.l1_loss(_final(outputs), target)


class EuclideanLoss(nn.Module):
    """The spatial RNN's L2 loss, the authors' ``0.5 * sum((out - gt)^2) / batch`` (:func:`euclidean_loss`)."""

    def forward(self, outputs: Any, target: torch.Tensor) -> torch.Tensor:
        return euclidean_loss(_final(outputs), target)


# ------------------------------------------------------------------------------------------------ MPRNet


def charbonnier(pred: torch.Tensor, target: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """``mean(sqrt((pred - target)^2 + eps^2))`` (MPRNet's ``CharbonnierLoss``, eps 1e-3)."""
    diff = pred - target
    return torch.mean(torch.sqrt(diff * diff + eps * eps))


class EdgeLoss(nn.Module):
    """MPRNet's edge loss: Charbonnier between the Laplacian (one Gaussian-pyramid level) of both images.

    The Laplacian is ``x - G(up(down(G(x))))`` with the 5-tap binomial kernel [.05 .25 .4 .25 .05] (separable),
    replicate padding, decimation by 2 and zero-insertion upsampling times 4, as the authors' ``losses.py``.
    """

    def __init__(self, eps: float = 1e-3) -> None:
        super().__init__()
        k = torch.tensor([[0.05, 0.25, 0.4, 0.25, 0.05]])
        self.register_buffer("kernel", (k.t() @ k)[None, None], persistent=False)
        self.eps = eps

    def _gauss(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        kernel = self.kernel.to(x.dtype).expand(c, 1, 5, 5)
        return F.conv2d(F.pad(x, (2, 2, 2, 2), mode="replicate"), kernel, groups=c)

    def laplacian(self, x: torch.Tensor) -> torch.Tensor:
        filtered = self._gauss(x)
        up = torch.zeros_like(filtered)
        up[..., ::2, ::2] = filtered[..., ::2, ::2] * 4
        return x - self._gauss(up)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return charbonnier(self.laplacian(pred), self.laplacian(target), self.eps)


class CharbonnierEdgeLoss(nn.Module):
    """MPRNet: ``sum over stages of Charbonnier(out_s, gt) + edge_weight * sum of EdgeLoss(out_s, gt)``.

    ``clamp`` clamps each stage output to [0, 1] first (the authors' denoising recipe, edge weight 0).
    """

    def __init__(self, edge_weight: float = 0.05, eps: float = 1e-3, clamp: bool = False) -> None:
        super().__init__()
        self.edge_weight, self.eps, self.clamp = float(edge_weight), float(eps), bool(clamp)
        self.edge = EdgeLoss(eps)

    def forward(self, outputs: Any, target: torch.Tensor) -> torch.Tensor:
        stages = [o.clamp(0, 1) if self.clamp else o for o in _stage_list(outputs)]
        total = sum(charbonnier(o, target, self.eps) for o in stages)
        if self.edge_weight:
            total = total + self.edge_weight * sum(self.edge(o, target) for o in stages)
        return total  # type: ignore[return-value]


# ------------------------------------------------------------------------------------------------ DSRIR


def uncertainty_loss(
    outputs: Sequence[torch.Tensor], logvars: Sequence[torch.Tensor], target: torch.Tensor
) -> torch.Tensor:
    """DSRIR's uncertainty loss, averaged over stages: ``L1(out * e^-s, gt * e^-s) + 2 * mean(s)``."""
    if len(outputs) != len(logvars) or not outputs:
        raise ValueError("uncertainty_loss needs one variance map per stage output")
    terms = []
    for out, s in zip(outputs, logvars):
        w = torch.exp(-s)
        terms.append(F.l1_loss(out * w, target * w) + 2 * s.mean())
    return sum(terms) / len(terms)  # type: ignore[return-value]


def psnr_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(10 / ln 10) * log(MSE + 1e-8)``: minus the PSNR (peak 1) up to the 1e-8; DSRIR's ``PSNRLoss``."""
    return (10.0 / math.log(10.0)) * torch.log(F.mse_loss(pred, target) + 1e-8)


# VGG19's 16 convolutions ("M" = 2x2 max pool), as torchvision's ``vgg19().features`` numbers its layers.
_VGG19 = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512)
_SLICES = (2, 7, 12, 21, 30)  # relu1_1, relu2_1, relu3_1, relu4_1, relu5_1 (the contrastive-loss slices)


class VGG19Features(nn.Module):
    """VGG19's convolutional trunk up to relu5_1, returning the five slice outputs; frozen.

    Keys are ``features.{i}.weight/bias`` as in the common VGG19 state dicts, so a local file of one loads with
    :meth:`from_file` (``classifier.*`` keys are ignored). No weights ship with restorekit.
    """

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG19:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c = int(v)
        self.features = nn.Sequential(*layers[: _SLICES[-1]])
        self.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str) -> VGG19Features:
        from .errors import InputError

        net = cls()
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise InputError(f"cannot read VGG19 weights {path}: {exc}; give a torch state dict file") from None
        state = state.get("state_dict", state) if isinstance(state, dict) else state
        state = {k: v for k, v in state.items() if k.startswith("features.") and int(k.split(".")[1]) < _SLICES[-1]}
        missing = set(net.state_dict()) - set(state)
        if missing:
            raise InputError(f"{path} is not a VGG19 state dict: missing {', '.join(sorted(missing)[:4])}")
        net.load_state_dict(state)
        return net.eval()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out, start = [], 0
        for end in _SLICES:
            for layer in self.features[start:end]:
                x = layer(x)
            out.append(x)
            start = end
        return out


class ContrastiveLoss(nn.Module):
    """DSRIR's positive contrastive term over 5 VGG19 slices weighted 1/32, 1/16, 1/8, 1/4, 1:
    ``[d(a, gt) + 0.25 d(a, img2) + 0.125 d(a, img1)] / d(a, input)`` with d = L1 and a = the final output."""

    weights = (1 / 32, 1 / 16, 1 / 8, 1 / 4, 1.0)
    positives = (1.0, 0.25, 0.125)

    def __init__(self, vgg: VGG19Features) -> None:
        super().__init__()
        self.vgg = vgg

    def forward(self, stages: Sequence[torch.Tensor], target: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
        feats = [self.vgg(t) for t in (stages[0], target, *stages[1:3])]
        neg = self.vgg(inputs)
        total = stages[0].new_zeros(())
        for i, w in enumerate(self.weights):
            a = feats[0][i]
            pos = sum(pw * F.l1_loss(a, f[i]) for pw, f in zip(self.positives, feats[1:]))
            total = total + w * pos / (F.l1_loss(a, neg[i].detach()) + 1e-7)
        return total


class DSRIRLoss(nn.Module):
    """DSRIR: ``uncertainty + PSNR (1.0 final, 0.25 each earlier stage) + 0.2 * contrastive`` (the last only
    with a VGG19). ``outputs`` = ``([img_final, img2, img1], [var_final, var2, var1])``."""

    needs_input = True

    def __init__(self, vgg_weights: str = "", contrastive_weight: float = 0.2, earlier_weight: float = 0.25) -> None:
        super().__init__()
        self.contrastive = ContrastiveLoss(VGG19Features.from_file(vgg_weights)) if vgg_weights else None
        self.contrastive_weight, self.earlier_weight = float(contrastive_weight), float(earlier_weight)

    def forward(self, outputs: Any, target: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        images, logvars = list(outputs[0]), list(outputs[1])
        total = uncertainty_loss(images, logvars, target)
        for i, img in enumerate(images):
            total = total + (1.0 if i == 0 else self.earlier_weight) * psnr_loss(img, target)
        if self.contrastive is not None:
            if inputs is None:
                raise ValueError("the contrastive term needs the degraded input")
            total = total + self.contrastive_weight * self.contrastive(images, target, inputs[:, :3])
        return total


# Training losses by name (``restorekit-train --loss``): constructors taking keyword arguments.
LOSSES: dict[str, Callable[..., nn.Module]] = {
    "l1": L1Loss,
    "euclidean": EuclideanLoss,
    "multi_supervised": MultiSupervisedLoss,
    "charbonnier_edge": CharbonnierEdgeLoss,
    "dsrir": DSRIRLoss,
}


def build_loss(name: str, **kwargs: Any) -> nn.Module:
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
    return LOSSES[name](**kwargs)
