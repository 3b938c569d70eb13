"""Random Forest baseline on multi-scale local statistics of the dB image.

Per band and per window of 3, 7, 15 and 31 px: the local mean, standard deviation and
median of σ0 dB (12 features per band), computed once for the whole scene. The forest
is trained on exactly the labelled training pixels a segmentation run gets (same split,
same label fraction) and predicts every pixel, so it is scored and mapped like the
networks. No-data pixels are filled with the band's mean before filtering, as the patch
dataset does for the networks.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import median_filter, uniform_filter

WINDOWS = (3, 7, 15, 31)
IGNORE = 255


def local_statistics(image_db: np.ndarray) -> np.ndarray:
    """(bands, H, W) dB -> float32 (H, W, bands x 12) features: mean, std, median per window."""
    features = []
    for band in image_db.astype(np.float64):
        band = np.where(np.isnan(band), np.nanmean(band), band)
        for size in WINDOWS:
            mean = uniform_filter(band, size, mode="reflect")
            square = uniform_filter(band * band, size, mode="reflect")
            std = np.sqrt(np.maximum(square - mean * mean, 0.0))
            features += [mean, std, median_filter(band, size, mode="reflect")]
    return np.stack(features, axis=-1).astype(np.float32)


def fit_predict(
    features: np.ndarray, train_labels: np.ndarray, seed: int, n_jobs: int = 1
) -> np.ndarray:
    """Train on pixels of ``train_labels`` != 255 and predict every pixel: (H, W) uint8.

    Balanced class weights stand in for the median-frequency weights of the networks' loss.
    """
    from sklearn.ensemble import RandomForestClassifier

    labelled = train_labels != IGNORE
    forest = RandomForestClassifier(
        n_estimators=100, class_weight="balanced", n_jobs=n_jobs, random_state=seed
    )
    forest.fit(features[labelled], train_labels[labelled])
    flat = features.reshape(-1, features.shape[-1])
    return forest.predict(flat).reshape(train_labels.shape).astype(np.uint8)
