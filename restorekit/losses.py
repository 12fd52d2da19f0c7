"""Training losses, as the papers define them, for ``restorekit-train`` and for anyone training a restorekit network.

Each loss takes what the network's ``forward`` returns (a tensor, or a multi-output structure) and the
target image, and returns a scalar tensor.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["euclidean_loss", "MultiSupervisedLoss", "CRITERIA"]


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
