"""Random Forest baseline of the first two editions, on the whole scene: the package's
forest (``alos2fm.models.forest``: multi-scale local statistics of the dB image, 100
trees, balanced class weights), trained on exactly the labelled training pixels a
segmentation run gets and predicting every pixel, so that it is scored and mapped like
the networks. The third edition runs the same forest through ``alos2fm compare``.
"""

from __future__ import annotations

import numpy as np

from alos2fm.models.forest import local_statistics, random_forest

__all__ = ["fit_predict", "local_statistics"]
IGNORE = 255


def fit_predict(
    features: np.ndarray, train_labels: np.ndarray, seed: int, n_jobs: int = 1
) -> np.ndarray:
    """Train on pixels of ``train_labels`` != 255 and predict every pixel: (H, W) uint8."""
    labelled = train_labels != IGNORE
    forest = random_forest(seed, n_jobs)
    forest.fit(features[labelled], train_labels[labelled])
    flat = features.reshape(-1, features.shape[-1])
    return forest.predict(flat).reshape(train_labels.shape).astype(np.uint8)
