"""Reconstruction targets for SimMIM that speckle cannot dominate.

Reconstructing single-look pixels asks the encoder to predict speckle, which is noise by
construction; two targets keep the structure and drop the noise:

- ``local_mean``: the (standardised) dB image averaged over ``size`` x ``size`` pixels, a
  despeckled image the decoder still predicts pixel by pixel;
- ``hog``: histograms of oriented gradients (Dalal & Triggs 2005), as FG-MAE (Wang et al.
  2023) uses for SAR: per ``cell`` x ``cell`` cell and channel, ``bins`` unsigned
  orientations (0..pi) of the central-difference gradient, weighted by its magnitude and
  split linearly between the two nearest bins, each cell's histogram L2-normalised.

Both work on the standardised input the model sees.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def local_mean(x: Tensor, size: int) -> Tensor:
    """(B, C, H, W) mean over ``size`` x ``size`` windows (edges: mean of the part inside)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"local-mean size must be odd and >= 1, got {size}")
    return F.avg_pool2d(x, size, stride=1, padding=size // 2, count_include_pad=False)


def hog(x: Tensor, cell: int = 8, bins: int = 9, eps: float = 1e-6) -> Tensor:
    """(B, C * bins, H / cell, W / cell) HOG of (B, C, H, W); channel c's bins are the
    channels c * bins .. c * bins + bins - 1."""
    batch, channels, height, width = x.shape
    if height % cell or width % cell:
        raise ValueError(f"image {height} x {width} is not a whole number of {cell}-px cells")
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    magnitude = torch.sqrt(gx.square() + gy.square())
    angle = torch.atan2(gy, gx) % math.pi  # unsigned orientation in [0, pi)
    position = angle / math.pi * bins - 0.5  # bin centres at (k + 0.5) pi / bins
    lower = torch.floor(position)
    upper_share = position - lower
    histogram = x.new_zeros(batch, channels, bins, height, width)
    for index, share in ((lower, 1.0 - upper_share), (lower + 1, upper_share)):
        histogram.scatter_add_(
            2, (index.long() % bins).unsqueeze(2), (magnitude * share).unsqueeze(2)
        )
    cells = F.avg_pool2d(histogram.flatten(1, 2), cell) * cell * cell  # sums per cell
    cells = cells.view(batch, channels, bins, height // cell, width // cell)
    cells = cells / (cells.norm(dim=2, keepdim=True) + eps)
    return cells.flatten(1, 2)
