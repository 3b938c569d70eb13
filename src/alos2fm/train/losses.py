"""Segmentation losses: cross-entropy, focal, Dice, and the paper's 0.5 Dice + 0.5 Focal.

All losses take logits ``(B, K, H, W)`` and integer targets ``(B, H, W)`` in which
``ignore_index`` (255 by default: no data, excluded classes, outside the label map) marks
pixels that contribute nothing, neither to the numerator nor to the normaliser.

Class weights (``K`` floats, e.g. inverse frequencies from ``stats.json``) act as the
per-class weight of cross-entropy and as the ``alpha`` of the focal loss. The paper
(Imamoglu et al. 2026, §3) trains with ``0.5 * Dice + 0.5 * Focal`` where the focal loss
has ``gamma = 2`` and ``alpha = 0.5 * class_weights``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from alos2fm.data.classes import IGNORE_INDEX

LossName = Literal["ce", "focal", "dice", "dice_focal"]
LOSS_NAMES: tuple[str, ...] = ("ce", "focal", "dice", "dice_focal")


def _as_weights(class_weights: Sequence[float] | torch.Tensor | None) -> torch.Tensor | None:
    if class_weights is None:
        return None
    return torch.as_tensor(class_weights, dtype=torch.float32).flatten()


def _zero_loss(logits: torch.Tensor) -> torch.Tensor:
    """Zero for a batch without a valid pixel, still connected to the graph so that DDP
    sees a gradient (of zero) for every parameter."""
    return logits.sum() * 0.0


class CrossEntropyLoss(nn.Module):
    """Cross-entropy averaged over valid pixels (weighted mean when class weights are given).

    The weighted mean is ``sum(w[y] * l) / sum(w[y])``; a batch whose valid pixels all
    have weight 0 (classes absent from the train split get weight 0) gives 0 with a zero
    gradient, where PyTorch's own mean would be 0/0 = NaN.
    """

    def __init__(
        self,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
    ):
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", _as_weights(class_weights))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        valid = target != self.ignore_index
        if not valid.any():
            return _zero_loss(logits)  # PyTorch's own would be 0/0 = NaN
        if self.class_weights is None:
            return F.cross_entropy(logits.float(), target, ignore_index=self.ignore_index)
        total = F.cross_entropy(
            logits.float(),
            target,
            weight=self.class_weights,
            ignore_index=self.ignore_index,
            reduction="sum",
        )
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        weight = (self.class_weights[safe_target] * valid).sum()
        # Weight 0 for every valid pixel: the sum is 0 too (and so is its gradient); dividing
        # by 1 keeps it 0 without a host sync, where PyTorch's mean gives 0/0 = NaN.
        return total / torch.where(weight > 0, weight, torch.ones_like(weight))


class FocalLoss(nn.Module):
    """Focal loss (Lin et al. 2017): ``-alpha[y] * (1 - p_y)^gamma * log p_y``.

    Averaged over valid pixels (a plain mean: alpha scales each pixel's term, it does not
    renormalise, so ``alpha = 0.5 * w`` halves the loss as in the paper). Without
    ``alpha`` every class has weight 1.
    """

    def __init__(
        self,
        alpha: Sequence[float] | torch.Tensor | None = None,
        gamma: float = 2.0,
        ignore_index: int = IGNORE_INDEX,
    ):
        super().__init__()
        self.gamma = gamma
        self.ignore_index = ignore_index
        self.register_buffer("alpha", _as_weights(alpha))

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        valid = target != self.ignore_index
        if not valid.any():
            return _zero_loss(logits)
        # Gather the true-class log-probability; ignored pixels read class 0 and are dropped.
        safe_target = torch.where(valid, target, torch.zeros_like(target))
        log_p = F.log_softmax(logits.float(), dim=1).gather(1, safe_target.unsqueeze(1))[:, 0]
        log_p, safe_target = log_p[valid], safe_target[valid]
        loss = -((1.0 - log_p.exp()) ** self.gamma) * log_p
        if self.alpha is not None:
            loss = loss * self.alpha[safe_target]
        return loss.mean()


class DiceLoss(nn.Module):
    """Soft Dice loss on softmax probabilities, ignored pixels excluded.

    Per class ``k``: ``dice_k = 2 sum(p_k g_k) / (sum(p_k) + sum(g_k))`` with sums over
    the batch and all valid pixels, ``g_k`` the one-hot target. The loss is
    ``1 - mean(dice_k)`` over the classes present in the batch's target: a class with no
    target pixel has no defined Dice, and including it would reward predicting nothing.
    ``smooth`` is added to numerator and denominator for numerical safety only.
    """

    def __init__(self, ignore_index: int = IGNORE_INDEX, smooth: float = 1e-6):
        super().__init__()
        self.ignore_index = ignore_index
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        num_classes = logits.shape[1]
        target = target.long()
        valid = (target != self.ignore_index).unsqueeze(1)  # (B, 1, H, W)
        probs = F.softmax(logits.float(), dim=1) * valid
        safe_target = torch.where(valid[:, 0], target, torch.zeros_like(target))
        one_hot = F.one_hot(safe_target, num_classes).permute(0, 3, 1, 2).float() * valid
        dims = (0, 2, 3)
        intersection = (probs * one_hot).sum(dims)
        cardinality = probs.sum(dims) + one_hot.sum(dims)
        dice = (2.0 * intersection + self.smooth) / (cardinality + self.smooth)
        present = one_hot.sum(dims) > 0
        if not present.any():
            return _zero_loss(logits)
        return 1.0 - dice[present].mean()


class DiceFocalLoss(nn.Module):
    """The paper's loss: ``0.5 * Dice + 0.5 * Focal(gamma=2, alpha=0.5 * class_weights)``."""

    def __init__(
        self,
        class_weights: Sequence[float] | torch.Tensor | None = None,
        ignore_index: int = IGNORE_INDEX,
        gamma: float = 2.0,
    ):
        super().__init__()
        weights = _as_weights(class_weights)
        self.dice = DiceLoss(ignore_index=ignore_index)
        self.focal = FocalLoss(
            alpha=None if weights is None else 0.5 * weights, gamma=gamma, ignore_index=ignore_index
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return 0.5 * self.dice(logits, target) + 0.5 * self.focal(logits, target)


def build_loss(
    name: LossName,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> nn.Module:
    """The loss called ``name`` ("ce", "focal", "dice" or "dice_focal" = the paper's).

    ``class_weights``: ``K`` floats or ``None``; unused by plain Dice. Returns a module
    mapping ``(logits (B, K, H, W), target (B, H, W))`` to a scalar.
    """
    if name == "ce":
        return CrossEntropyLoss(class_weights, ignore_index)
    if name == "focal":
        return FocalLoss(alpha=class_weights, ignore_index=ignore_index)
    if name == "dice":
        return DiceLoss(ignore_index=ignore_index)
    if name == "dice_focal":
        return DiceFocalLoss(class_weights, ignore_index=ignore_index)
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSS_NAMES)}")
