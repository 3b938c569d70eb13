"""The Random Forest reference's features: local mean, std and median per window."""

import numpy as np
import pytest

from alos2fm.models.forest import WINDOWS, local_statistics, random_forest


def test_a_constant_band_has_its_value_as_mean_and_median_and_no_spread():
    features = local_statistics(np.full((1, 9, 9), -12.5))
    assert features.shape == (9, 9, 3 * len(WINDOWS))
    assert np.allclose(features[..., 0::3], -12.5)
    assert np.allclose(features[..., 1::3], 0.0, atol=1e-3)
    assert np.allclose(features[..., 2::3], -12.5)


def test_a_3px_window_sees_its_neighbours():
    band = np.zeros((1, 5, 5))
    band[0, 2, 2] = 9.0  # one bright pixel: each 3x3 window around it has mean 1
    features = local_statistics(band)
    assert features[1, 1, 0] == pytest.approx(1.0)
    assert features[1, 1, 1] == pytest.approx(np.sqrt(81 / 9 - 1))  # sqrt(E[x²] - E[x]²)
    assert features[1, 1, 2] == 0.0  # median of eight zeros and one nine
    assert features[4, 4, 0] == pytest.approx(0.0)  # beyond its reach


def test_no_data_takes_the_band_mean_and_bands_stack():
    image = np.stack([np.full((4, 4), -10.0), np.full((4, 4), -20.0)])
    image[0, 0, 0] = np.nan
    features = local_statistics(image)
    assert features.shape == (4, 4, 24) and np.isfinite(features).all()
    assert np.allclose(features[..., 0], -10.0) and np.allclose(features[..., 12], -20.0)


def test_the_forest_is_seeded_and_balanced():
    x = np.random.default_rng(0).normal(size=(60, 3))
    y = (x[:, 0] > 1.2).astype(int)  # a rare class
    first, second = random_forest(3).fit(x, y), random_forest(3).fit(x, y)
    assert (first.predict_proba(x) == second.predict_proba(x)).all()
    assert first.class_weight == "balanced"
