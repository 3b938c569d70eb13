"""The Random Forest reference: a per-pixel classifier on multi-scale local statistics.

The baseline a remote-sensing user would build without deep learning: per band and per
window of 3, 7, 15 and 31 px, the local mean, standard deviation and median of sigma0 in
dB (12 features per band), and a Random Forest with balanced class weights (standing in
for the networks' class-weighted loss). No-data pixels are filled with the band's mean
before filtering, as the patch dataset fills them for the networks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

WINDOWS = (3, 7, 15, 31)


def local_statistics(image_db: np.ndarray) -> np.ndarray:
    """(bands, H, W) dB -> float32 (H, W, bands x 12): mean, std and median per window."""
    from scipy.ndimage import median_filter, uniform_filter

    features = []
    for band in np.asarray(image_db, dtype=np.float64):
        band = np.where(np.isnan(band), np.nanmean(band), band)
        for size in WINDOWS:
            mean = uniform_filter(band, size, mode="reflect")
            square = uniform_filter(band * band, size, mode="reflect")
            std = np.sqrt(np.maximum(square - mean * mean, 0.0))
            features += [mean, std, median_filter(band, size, mode="reflect")]
    return np.stack(features, axis=-1).astype(np.float32)


def random_forest(seed: int, n_jobs: int = 1) -> Any:
    """An unfitted forest: 100 trees, balanced class weights, seeded."""
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(
        n_estimators=100, class_weight="balanced", n_jobs=n_jobs, random_state=seed
    )
