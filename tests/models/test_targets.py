"""Speckle-robust SimMIM targets: local mean and HOG, and SimMIM trained on each."""

from __future__ import annotations

import pytest
import torch

from alos2fm.models.simmim import SimMIM
from alos2fm.models.targets import hog, local_mean
from tests.models.test_simmim import TINY_SWIN
from tests.tiny_models import overfit_one_batch


def test_local_mean_of_a_step_edge_and_of_a_constant():
    x = torch.zeros(1, 1, 8, 8)
    x[..., 4:] = 9.0
    m = local_mean(x, 3)
    assert m[0, 0, 2, 3] == pytest.approx(3.0)  # one of three columns is 9
    assert m[0, 0, 2, 4] == pytest.approx(6.0)
    assert m[0, 0, 0, 0] == pytest.approx(0.0) and m[0, 0, 0, 7] == pytest.approx(9.0)
    with pytest.raises(ValueError, match="odd"):
        local_mean(x, 4)


@pytest.mark.parametrize(
    ("gx", "gy", "shares"),
    [
        (1.0, 0.0, {8: 0.5, 0: 0.5}),  # 0 deg: halfway between the centres 170 and 10 deg
        (0.0, 2.0, {4: 1.0}),  # 90 deg: the centre of bin 4 (80-100 deg)
        (1.0, 1.0, {1: 0.25, 2: 0.75}),  # 45 deg: 3/4 of the way from 30 to 50 deg
    ],
)
def test_hog_of_a_ramp_splits_its_gradient_between_the_two_nearest_bins(gx, gy, shares):
    """A linear ramp has one gradient at every interior pixel: the centre cell's
    normalised histogram is the two bins' linear shares, normalised."""
    rows, cols = torch.meshgrid(torch.arange(24.0), torch.arange(24.0), indexing="ij")
    x = (gx * cols + gy * rows).view(1, 1, 24, 24)
    histogram = hog(x, cell=8, bins=9)[0, :, 1, 1]
    expected = torch.zeros(9)
    for index, share in shares.items():
        expected[index] = share
    assert torch.allclose(histogram, expected / expected.norm(), atol=1e-5)


def test_hog_of_a_flat_image_is_zero_and_sizes_must_tile():
    assert torch.all(hog(torch.ones(2, 3, 16, 16)) == 0)
    with pytest.raises(ValueError, match="cells"):
        hog(torch.zeros(1, 1, 12, 12), cell=8)


@pytest.mark.parametrize("target", ["local_mean", "hog"])
def test_simmim_learns_each_robust_target(target):
    torch.manual_seed(0)
    model = SimMIM(TINY_SWIN, mask_unit=16, mask_ratio=0.5, target=target, hog_cell=8)
    x = torch.randn(2, 1, 64, 64)
    out = model(x)
    assert out.pred.shape == (2, 1, 64, 64) and out.mask.shape == (2, 1, 64, 64)
    losses = overfit_one_batch(model, x, steps=25)
    assert losses[-1] < 0.7 * losses[0], losses
