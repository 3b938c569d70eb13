"""Training samples: window positions, the dihedral group, gain jitter and speckle."""

from __future__ import annotations

import math

import pytest
import torch

from alos2fm.train.augment import (
    augment,
    dihedral,
    gain_jitter,
    random_dihedral,
    sample_windows,
    speckle_noise,
    window_origins,
)
from alos2fm.train.config import DataConfig


def _batch(b: int = 4, size: int = 32) -> dict[str, torch.Tensor]:
    """Images whose value encodes the pixel position (row * size + col), labels likewise."""
    grid = torch.arange(size * size, dtype=torch.float32).view(size, size)
    return {
        "image": grid.expand(b, 1, size, size).clone(),
        "valid": torch.ones(b, size, size, dtype=torch.bool),
        "label": grid.long().expand(b, size, size).clone() % 7,
    }


def test_windows_are_cut_where_the_origins_say_in_image_valid_and_label():
    torch.manual_seed(0)
    batch = _batch()
    out = sample_windows(batch, 8)
    assert out["image"].shape == (4, 1, 8, 8) and out["label"].shape == (4, 8, 8)
    for image, label in zip(out["image"], out["label"], strict=True):
        top, left = divmod(int(image[0, 0, 0]), 32)  # the value is the source position
        expected = torch.arange(32 * 32).view(32, 32)[top : top + 8, left : left + 8]
        assert torch.equal(image[0].long(), expected)
        assert torch.equal(label, expected % 7)
    # Patches of the window's size pass through untouched.
    assert sample_windows(batch, 32) is batch


def test_uniform_windows_cover_every_position_and_differ_between_samples():
    torch.manual_seed(1)
    tops, lefts = window_origins(None, 4000, (32, 32), 8, "uniform")
    assert tops.min() == 0 and tops.max() == 24 and lefts.min() == 0 and lefts.max() == 24
    assert len(set(zip(tops.tolist(), lefts.tolist(), strict=True))) > 500  # of 625


def test_labelled_windows_always_hold_a_label_and_balanced_ones_see_rare_classes():
    size = 64
    label = torch.full((1, size, size), 255)
    label[0, 50, 60] = 3  # one rare pixel, near the corner
    label[0, :10, :10] = 1  # a common class
    torch.manual_seed(2)
    hits = {"labelled": 0, "balanced": 0}
    for sampling in hits:
        for _ in range(200):
            (top,), (left,) = window_origins(label, 1, (size, size), 16, sampling)
            window = label[0, top : top + 16, left : left + 16]
            assert (window != 255).any()  # never a window without labels
            hits[sampling] += int((window == 3).any())
    assert hits["labelled"] < 10  # 1 of 101 labelled pixels
    assert 70 < hits["balanced"] < 130  # half of the draws pick class 3


def test_dihedral_elements_are_the_eight_distinct_symmetries_of_the_square():
    square = torch.arange(9).view(3, 3)
    images = [dihedral(square, k) for k in range(8)]
    assert len({tuple(im.flatten().tolist()) for im in images}) == 8
    assert torch.equal(images[1], torch.tensor([[2, 5, 8], [1, 4, 7], [0, 3, 6]]))  # 90° ccw
    assert torch.equal(images[4], torch.tensor([[2, 1, 0], [5, 4, 3], [8, 7, 6]]))  # mirror
    torch.manual_seed(3)
    batch = _batch(b=64, size=4)
    out = random_dihedral(batch)
    # Image and label move together; all 8 transforms are drawn.
    assert torch.equal(out["image"][:, 0].long() % 7, out["label"])
    seen = {tuple(im[0].flatten().long().tolist()) for im in out["image"]}
    assert len(seen) == 8


def test_gain_jitter_is_one_offset_per_sample_with_the_given_spread():
    torch.manual_seed(4)
    image = torch.zeros(4000, 2, 4, 4)
    out = gain_jitter({"image": image}, sigma_db=1.5)["image"]
    per_sample = out[:, 0, 0, 0]
    assert torch.equal(out, per_sample.view(-1, 1, 1, 1).expand_as(out))  # same for all bands
    assert per_sample.std().item() == pytest.approx(1.5, rel=0.05)


def test_speckle_of_l_looks_has_the_gamma_moments_in_linear_power_and_spares_no_data():
    torch.manual_seed(5)
    image = torch.full((1, 1, 200, 200), -10.0)
    valid = torch.ones(1, 200, 200, dtype=torch.bool)
    valid[0, :10] = False
    out = speckle_noise({"image": image, "valid": valid}, looks=4.0)["image"]
    power = 10 ** (out[0, 0, 10:] / 10) / 10 ** (-10 / 10)
    assert power.mean().item() == pytest.approx(1.0, abs=0.02)
    assert power.var().item() == pytest.approx(1 / 4, rel=0.1)  # Gamma(L, 1/L): var 1/L
    assert torch.equal(out[0, 0, :10], image[0, 0, :10])


def test_augment_follows_the_config():
    torch.manual_seed(6)
    cfg = DataConfig(sampling="uniform", dihedral=True, gain_jitter_db=0.5)
    out = augment(_batch(b=2, size=16), cfg, 8)
    assert out["image"].shape == (2, 1, 8, 8)
    plain = augment(_batch(b=2, size=8), DataConfig(hflip=False, vflip=False), 8)
    assert torch.equal(plain["image"], _batch(b=2, size=8)["image"])
    assert math.isclose(DataConfig().gain_jitter_db, 0.0)
