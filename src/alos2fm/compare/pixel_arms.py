"""Per-pixel arms: the Random Forest on local statistics, and the frozen-encoder probe.

Both learn from the same budget-masked training labels the networks get (at most
``train_pixels`` of them, drawn uniformly, seeded) and are scored on every labelled pixel
of the validation and test patches, the pixels the networks' test scores count, through
one confusion matrix (``alos2fm.evaluation.metrics``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alos2fm.compare.jobs import Job, save_preview
from alos2fm.compare.networks import labels_kept, test_columns
from alos2fm.data.classes import IGNORE_INDEX

# (image dB (C, H, W) tensor, valid (H, W) tensor) -> features (H, W, F) array
Features = Callable[[torch.Tensor, torch.Tensor], np.ndarray]
# (features (N, F), labels (N,)) -> a fitted classifier with .predict
Fit = Callable[[np.ndarray, np.ndarray], Any]


def train_pixel_classifier(job: Job) -> dict[str, Any]:
    from alos2fm.data.budget import LabelBudget
    from alos2fm.data.dataset import PatchDataset

    features, fit = _arm(job)
    train = PatchDataset(
        job.data,
        "train",
        with_labels=True,
        label_budget=LabelBudget.parse(job.budget),
        budget_seed=job.seed,
        min_parcel_pixels=job.min_parcel_pixels,
    )
    x, y = _training_pixels(train, features, int(job.config["train_pixels"]), job.seed)
    model = fit(x, y)
    summary = train.budget.summary if train.budget is not None else None
    row: dict[str, Any] = {**labels_kept(summary), "train_pixels": len(y)}
    for split in ("val", "test"):
        scores, previews = score_split(job.data, split, features, model.predict, job.preview)
        if split == "val":
            row["val_miou"] = scores["miou"]
        else:
            row |= test_columns(scores)
            save_preview(job.folder, job.preview, previews)
    return row


def _arm(job: Job) -> tuple[Features, Fit]:
    """The arm's per-pixel features and how its classifier is fitted."""
    if job.kind == "rf":
        from alos2fm.models.forest import local_statistics, random_forest

        return (
            lambda image, valid: local_statistics(image.numpy()),
            lambda x, y: random_forest(job.seed).fit(x, y),
        )
    from alos2fm.evaluation.probe import (
        RANDOM,
        encoder_architecture,
        fit_classifier,
        load_frozen_encoder,
        probe_normalisation,
    )

    source: str | Path = job.encoder if job.encoder is not None else RANDOM
    spec = job.config["architecture"] if job.encoder is None else encoder_architecture(source)
    encoder = load_frozen_encoder(source, job.seed, spec)
    normalise = probe_normalisation(source, job.data)
    size = int(spec.get("img_size", 64))
    return (
        lambda image, valid: encoder_features(encoder, normalise, image, valid, size),
        lambda x, y: fit_classifier(x, y, "linear", job.seed),
    )


def encoder_features(
    encoder: Any, normalise: Any, image: torch.Tensor, valid: torch.Tensor, size: int
) -> np.ndarray:
    """(H, W, F) frozen features of a whole patch, tile by tile of the encoder's size."""
    from alos2fm.data.tiling import tile_origins
    from alos2fm.evaluation.probe import pixel_features

    height, width = image.shape[-2:]
    out: np.ndarray | None = None
    for top in tile_origins(height, size, 0):
        for left in tile_origins(width, size, 0):
            rows, cols = slice(top, top + size), slice(left, left + size)
            tile = normalise(image[None, :, rows, cols], valid[None, rows, cols])
            feats = pixel_features(encoder, tile)[0].permute(1, 2, 0).numpy()
            if out is None:
                out = np.empty((height, width, feats.shape[-1]), dtype=np.float32)
            out[rows, cols] = feats
    assert out is not None
    return out


def _training_pixels(
    dataset: Any, features: Features, most: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``most`` labelled training pixels, uniformly over all of them (seeded)."""
    counts = np.array(
        [int((dataset[i]["label"] != IGNORE_INDEX).sum()) for i in range(len(dataset))]
    )
    rng = np.random.default_rng([seed, 3])
    # A uniform draw without replacement over all labelled pixels, counted per patch.
    drawn = rng.choice(int(counts.sum()), size=min(most, int(counts.sum())), replace=False)
    take = np.bincount(
        np.searchsorted(np.cumsum(counts), drawn, side="right"), minlength=len(counts)
    )
    xs, ys = [], []
    for i in np.flatnonzero(take):
        item = dataset[int(i)]
        label = item["label"].numpy()
        rows, cols = np.nonzero(label != IGNORE_INDEX)
        chosen = rng.choice(len(rows), size=int(take[i]), replace=False)
        xs.append(features(item["image"], item["valid"])[rows[chosen], cols[chosen]])
        ys.append(label[rows[chosen], cols[chosen]])
    return np.concatenate(xs), np.concatenate(ys)


def score_split(
    data: Path,
    split: str,
    features: Features,
    predict: Callable[[np.ndarray], np.ndarray],
    preview: tuple[int, ...] = (),
) -> tuple[dict[str, Any], list[np.ndarray]]:
    """Scores on every labelled pixel of ``split``, and the predicted classes of the
    ``preview`` patches (positions in the dataset's index)."""
    from alos2fm.contract import dataset_class_names
    from alos2fm.data.dataset import PatchDataset
    from alos2fm.evaluation.metrics import segmentation_scores

    dataset = PatchDataset(data, split, with_labels=True)
    names = list(dataset_class_names(dataset.stats))
    matrix = np.zeros((len(names), len(names)), dtype=np.int64)
    previews: dict[int, np.ndarray] = {}
    wanted = set(preview)
    for i in range(len(dataset)):
        item = dataset[i]
        label = item["label"].numpy()
        labelled = label != IGNORE_INDEX
        position = int(dataset.positions[i])
        if not labelled.any() and position not in wanted:
            continue
        feats = features(item["image"], item["valid"])
        if position in wanted:
            flat = predict(feats.reshape(-1, feats.shape[-1]))
            predicted = flat.reshape(label.shape)
            previews[position] = predicted
            np.add.at(matrix, (label[labelled], predicted[labelled]), 1)
        else:
            np.add.at(matrix, (label[labelled], predict(feats[labelled])), 1)
    return segmentation_scores(matrix, names), [previews[p] for p in preview if p in previews]
