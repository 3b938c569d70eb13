"""Segmentation scores from one confusion matrix, exact under any number of processes.

Every score comes from a single ``K x K`` confusion matrix of pixel counts (rows = true
class, columns = predicted class) over *valid* pixels, i.e. target != ignore index. In
distributed evaluation each process accumulates its own matrix and the matrices are
**summed** (``ConfusionMatrix`` is a torchmetrics ``Metric`` with ``dist_reduce_fx="sum"``),
so the result equals one process seeing all the data — provided no sample is seen twice.
PyTorch's ``DistributedSampler`` pads the last round by repeating samples so every rank
gets the same count; those duplicates would be scored twice (a flaw of the published
code). Evaluation loaders must therefore use ``UnpaddedDistributedSampler`` (and a
Lightning ``Trainer(use_distributed_sampler=False)`` so it is not replaced).

Conventions of the scores (from the matrix alone):
- IoU_k = TP / (TP + FP + FN); a class absent from both target and prediction has no
  IoU (NaN) and is **excluded from mIoU**; a class present in only one of them scores 0.
- Accuracy_k (recall) = TP / (TP + FN), undefined (NaN, excluded from the mean) for a
  class with no target pixel. F1_k = 2 TP / (2 TP + FP + FN), same exclusion as IoU.
- Overall accuracy = trace / total; Cohen's kappa = (p_o - p_e) / (1 - p_e).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence, Sized
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import Sampler
from torchmetrics import Metric

from alos2fm.data.classes import IGNORE_INDEX


class ConfusionMatrix(Metric):
    """Pixel confusion matrix over valid pixels, summed across processes.

    ``update(preds, target)``: ``preds`` are class indices ``(B, H, W)`` or logits
    ``(B, K, H, W)`` (argmax taken); ``target`` ``(B, H, W)`` with ``ignore_index`` for
    pixels not scored. ``compute()`` returns the int64 ``(K, K)`` matrix, rows = truth.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, num_classes: int, ignore_index: int = IGNORE_INDEX, **kwargs: Any):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.add_state(
            "matrix",
            default=torch.zeros(num_classes, num_classes, dtype=torch.long),
            dist_reduce_fx="sum",
        )

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.ndim == target.ndim + 1:
            preds = preds.argmax(dim=1)
        if preds.shape != target.shape:
            raise ValueError(f"preds {tuple(preds.shape)} and target {tuple(target.shape)} differ")
        target = target.long().flatten()
        preds = preds.long().flatten()
        valid = target != self.ignore_index
        target, preds = target[valid], preds[valid]
        k = self.num_classes
        if target.numel() and (int(target.max()) >= k or int(target.min()) < 0):
            raise ValueError(
                f"target holds a class outside 0..{k - 1} (and not {self.ignore_index})"
            )
        counts = torch.bincount(target * k + preds, minlength=k * k)
        # Not in place: under ddp_spawn on CPU the initial state tensor reaches every worker
        # through shared memory (Lightning un-shares parameters and buffers, not metric
        # states), and an in-place sum would add all ranks' counts into one tensor.
        self.matrix = self.matrix + counts.reshape(k, k)

    def compute(self) -> torch.Tensor:
        return self.matrix


def _safe_ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, NaN where the denominator is 0 (score undefined)."""
    out = np.full(numerator.shape, np.nan, dtype=np.float64)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _counts(matrix: np.ndarray | torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    m = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix, dtype=np.float64)
    tp = np.diag(m)
    return tp, m.sum(axis=0) - tp, m.sum(axis=1) - tp  # TP, FP, FN per class


def per_class_iou(matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    """IoU per class, NaN for a class absent from both target and prediction."""
    tp, fp, fn = _counts(matrix)
    return _safe_ratio(tp, tp + fp + fn)


def per_class_accuracy(matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    """Recall per class (TP / true pixels), NaN for a class with no true pixel."""
    tp, _, fn = _counts(matrix)
    return _safe_ratio(tp, tp + fn)


def per_class_f1(matrix: np.ndarray | torch.Tensor) -> np.ndarray:
    """F1 (= Dice) per class, NaN for a class absent from both target and prediction."""
    tp, fp, fn = _counts(matrix)
    return _safe_ratio(2 * tp, 2 * tp + fp + fn)


def _nanmean(values: np.ndarray) -> float:
    values = values[~np.isnan(values)]
    return float(values.mean()) if values.size else float("nan")


def mean_iou(matrix: np.ndarray | torch.Tensor) -> float:
    """Mean IoU over classes present in target or prediction."""
    return _nanmean(per_class_iou(matrix))


def mean_class_accuracy(matrix: np.ndarray | torch.Tensor) -> float:
    """Mean recall over classes present in the target."""
    return _nanmean(per_class_accuracy(matrix))


def overall_accuracy(matrix: np.ndarray | torch.Tensor) -> float:
    """Fraction of valid pixels classified correctly."""
    tp, fp, _ = _counts(matrix)
    total = tp.sum() + fp.sum()
    return float(tp.sum() / total) if total else float("nan")


def cohen_kappa(matrix: np.ndarray | torch.Tensor) -> float:
    """Agreement beyond chance: (p_o - p_e) / (1 - p_e), p_e from the row and column sums."""
    tp, fp, fn = _counts(matrix)
    total = tp.sum() + fp.sum()
    if not total:
        return float("nan")
    observed = tp.sum() / total
    expected = float(np.sum((tp + fn) * (tp + fp))) / total**2
    return float((observed - expected) / (1 - expected)) if expected < 1 else float("nan")


def segmentation_scores(
    matrix: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None
) -> dict[str, Any]:
    """All scores as a JSON-ready dict (NaN written as ``None``).

    Keys: ``miou``, ``mean_accuracy``, ``overall_accuracy``, ``kappa``, ``pixels`` and
    ``per_class``: ``{name: {iou, accuracy, f1, pixels}}`` (pixels = true pixels).
    """
    m = np.asarray(matrix.cpu() if isinstance(matrix, torch.Tensor) else matrix)
    names = list(class_names) if class_names is not None else [str(k) for k in range(len(m))]
    if len(names) != len(m):
        raise ValueError(f"{len(names)} class names for a {len(m)}-class confusion matrix")

    def _json(value: float) -> float | None:
        return None if math.isnan(value) else float(value)

    iou, acc, f1 = per_class_iou(m), per_class_accuracy(m), per_class_f1(m)
    return {
        "miou": _json(mean_iou(m)),
        "mean_accuracy": _json(mean_class_accuracy(m)),
        "overall_accuracy": _json(overall_accuracy(m)),
        "kappa": _json(cohen_kappa(m)),
        "pixels": int(m.sum()),
        "per_class": {
            name: {
                "iou": _json(iou[k]),
                "accuracy": _json(acc[k]),
                "f1": _json(f1[k]),
                "pixels": int(m[k].sum()),
            }
            for k, name in enumerate(names)
        },
    }


class UnpaddedDistributedSampler(Sampler[int]):
    """Each rank gets every ``world_size``-th index, with no padding and no repeats.

    Ranks may receive different counts (at most one apart); the union over ranks is
    exactly the dataset, so summed metrics count every sample once. For evaluation only:
    in training, unequal counts would make DDP ranks wait on each other's gradients.
    Rank and world size default to the initialised process group (1 process otherwise).
    """

    def __init__(self, dataset: Sized, num_replicas: int | None = None, rank: int | None = None):
        distributed = dist.is_available() and dist.is_initialized()
        self.num_replicas = num_replicas or (dist.get_world_size() if distributed else 1)
        self.rank = rank if rank is not None else (dist.get_rank() if distributed else 0)
        if not 0 <= self.rank < self.num_replicas:
            raise ValueError(f"rank {self.rank} outside 0..{self.num_replicas - 1}")
        self.dataset_size = len(dataset)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.dataset_size, self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, self.dataset_size, self.num_replicas))
