"""SAR-W weights on hand-computed cases, and the weighted masked reduction."""

from __future__ import annotations

import math

import pytest
import torch

from alos2fm.models.sarw import sar_weights, weighted_masked_mean, weights_from_source

E = math.e


def _image(*channels: list[float]) -> torch.Tensor:
    """(1, C, 1, W) dB image from one list of values per channel."""
    return torch.tensor([channels], dtype=torch.float32).unsqueeze(2)


def test_hand_case_one_channel():
    # linear powers 0.01, 0.1, 1, 10: x = (lin - 0.01) / (9.99 + 1e-6)
    weights = sar_weights(_image([-20.0, -10.0, 0.0, 10.0]))[0, 0, 0]
    expected = [math.exp(1 - (lin - 0.01) / (9.99 + 1e-6)) for lin in (0.01, 0.1, 1.0, 10.0)]
    assert weights.tolist() == pytest.approx(expected, rel=1e-5)
    assert weights[0].item() == pytest.approx(E)  # darkest pixel
    assert weights[3].item() == pytest.approx(1.0, abs=1e-5)  # brightest pixel


def test_range_and_scale_on_random_images():
    db = torch.randn(3, 2, 16, 16) * 6 - 10
    for scale in (1.0, 2.0):
        weights = sar_weights(db, scale=scale)
        assert weights.shape == db.shape
        assert weights.min().item() >= 1.0 - 1e-6
        assert weights.max().item() <= math.exp(scale) + 1e-5
        # every image and channel reaches the top (its darkest pixel) and ~1 (its brightest)
        flat = weights.flatten(2)
        assert torch.allclose(flat.amax(dim=2), torch.full((3, 2), math.exp(scale)))
        assert torch.allclose(flat.amin(dim=2), torch.ones(3, 2), atol=1e-4)


def test_per_channel_and_shared_avg_differ_as_defined():
    # channel 0 linear 0.01, 1, 0.1; channel 1 linear 10, 0.01, 0.01
    db = _image([-20.0, 0.0, -10.0], [10.0, -20.0, -20.0])
    per_channel = sar_weights(db, mode="per_channel")[0, :, 0]
    assert per_channel[0].tolist() == pytest.approx([E, 1.0, math.exp(1 - 0.09 / 0.99)], rel=1e-5)
    assert per_channel[1].tolist() == pytest.approx([1.0, E, E], rel=1e-5)

    shared = sar_weights(db, mode="shared_avg")[0, :, 0]
    averages = [5.005, 0.505, 0.055]  # mean linear power of each pixel over channels
    expected = [math.exp(1 - (a - 0.055) / (4.95 + 1e-6)) for a in averages]
    assert shared[0].tolist() == pytest.approx(expected, rel=1e-5)
    assert torch.equal(shared[0], shared[1])  # one map shared by both channels


def test_invalid_pixels_excluded_from_min_max_and_weighted_zero():
    db = _image([-50.0, -20.0, 0.0, 10.0])
    valid = torch.tensor([[[[False, True, True, True]]]])
    weights = sar_weights(db, valid=valid)[0, 0, 0]
    assert weights[0].item() == 0.0
    assert weights[1].item() == pytest.approx(E)  # darkest *valid* pixel
    assert weights[3].item() == pytest.approx(1.0, abs=1e-5)
    # an image without a valid pixel gets weight 0 everywhere instead of NaN
    none_valid = sar_weights(db, valid=torch.zeros(1, 1, 4, dtype=torch.bool))
    assert torch.equal(none_valid, torch.zeros_like(db))


def test_source_db_versus_normalized():
    db = _image([-20.0, -10.0, 0.0])
    normalized = (db + 10.4327) / 5.8041  # the paper's HH standardisation
    from_db = weights_from_source(db, normalized, source="db")[0, 0, 0]
    from_norm = weights_from_source(db, normalized, source="normalized")[0, 0, 0]

    assert from_db[1].item() == pytest.approx(math.exp(1 - 0.09 / (0.99 + 1e-6)), rel=1e-5)
    lin = [10 ** (v / 10) for v in normalized[0, 0, 0].tolist()]
    x_middle = (lin[1] - lin[0]) / (lin[2] - lin[0] + 1e-6)
    assert from_norm[1].item() == pytest.approx(math.exp(1 - x_middle), rel=1e-5)
    # the authors' source compresses the weights: the middle pixel weighs less
    assert from_norm[1] < from_db[1] - 0.5
    for weights in (from_db, from_norm):
        assert weights[0].item() == pytest.approx(E)
        assert weights[2].item() == pytest.approx(1.0, abs=1e-5)


def test_bad_mode_and_source_raise():
    db = _image([0.0, 1.0])
    with pytest.raises(ValueError, match="mode"):
        sar_weights(db, mode="max")
    with pytest.raises(ValueError, match="source"):
        weights_from_source(db, db, source="linear")


def test_weighted_masked_mean_hand_case():
    error = torch.tensor([[[[1.0, 3.0]], [[5.0, 7.0]]]])  # (1, 2, 1, 2)
    mask = torch.tensor([[[[1.0, 0.0]]]])
    weight = torch.tensor([[[[2.0, 1.0]], [[1.0, 1.0]]]])
    # masked pixel 0: channels 1 and 5, weights 2 and 1; one masked pixel x two channels
    assert weighted_masked_mean(error, mask, weight).item() == pytest.approx((2 + 5) / 2)
    assert weighted_masked_mean(error, mask).item() == pytest.approx((1 + 5) / 2)


def _two_levels_and_a_speckle_peak() -> torch.Tensor:
    """Left half -20 dB, right half -10 dB, one pixel at +10 dB (a speckle peak)."""
    db = torch.full((1, 1, 32, 32), -20.0)
    db[..., 16:] = -10.0
    db[0, 0, 8, 24] = 10.0
    return db


def test_a_speckle_peak_flattens_min_max_weights_but_not_the_robust_variants():
    db = _two_levels_and_a_speckle_peak()
    dark, bright = (0, 0, 4, 4), (0, 0, 28, 28)
    plain = sar_weights(db)
    # The peak (1000x the bright level in power) takes the whole range: both levels ~ e.
    assert plain[dark] == pytest.approx(math.e, rel=1e-3)
    assert plain[bright] == pytest.approx(math.e, rel=1e-2)  # x = 0.09 / 9.99
    robust = sar_weights(db, range_rule="percentile", percentiles=(1.0, 99.0))
    assert robust[dark] == pytest.approx(math.e, rel=1e-3)  # the p1 is the dark level
    assert robust[bright] == pytest.approx(1.0, rel=1e-3)  # the p99 is the bright level
    smooth = sar_weights(db, range_rule="boxcar", boxcar=5)
    assert smooth[dark] == pytest.approx(math.e, rel=1e-3)
    # The averaged peak (1000 + 24 x 10) / 25 x -> still the max, but the bright level now
    # sits at x = (0.1 - 0.01) / (49.6 - 0.01) instead of 0.1 / 10, and a window holding
    # the peak is lighter than both: the weights keep the scene's order.
    assert smooth[bright] < smooth[dark] and smooth[0, 0, 8, 24] < smooth[bright]


def test_percentile_weights_match_a_hand_computed_mapping():
    # Powers 1..100 (row-major) in one 10 x 10 image: torch's linear-interpolated
    # p10 = 10.9 and p90 = 90.1; x = (p - 10.9) / (90.1 - 10.9), clipped to [0, 1].
    power = torch.arange(1, 101, dtype=torch.float32).view(1, 1, 10, 10)
    db = 10 * torch.log10(power)
    w = sar_weights(db, range_rule="percentile", percentiles=(10.0, 90.0))
    x = ((power - 10.9) / (90.1 - 10.9 + 1e-6)).clamp(0, 1)
    assert torch.allclose(w, torch.exp(1 - x), atol=1e-4)
    with pytest.raises(ValueError, match="percentiles"):
        sar_weights(db, range_rule="percentile", percentiles=(50.0, 20.0))
