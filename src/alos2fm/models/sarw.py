"""SAR-W: per-pixel intensity weights for the masked-image-modelling losses.

SAR-W-MixMAE (arXiv 2503.01181) and the ALOS-2 tutorial (arXiv 2603.15119) weight the
reconstruction error of each pixel by how dark it is in linear power:

    linear = 10^(dB / 10)
    x      = (linear - min) / (max - min + 1e-6)      per image (and channel)
    w      = exp(s * (1 - x))                          in [1, e^s]

so low-backscatter pixels (water, smooth surfaces) weigh up to e^s times more than the
brightest pixel, and speckle peaks and bright outliers weigh least. The weight multiplies
the per-pixel error before the reduction (``weighted_masked_mean``).

The authors' code computed the weight from the *standardised* input instead of dB, which
compresses its range; ``weights_from_source`` keeps both so that the difference can be
ablated, with the documented method (``"db"``) as the default.

Single-look speckle puts a few pixels of every patch far above the rest, so the plain
min-max (``range_rule="minmax"``, the documented one) is set by speckle peaks and x is
near 0 almost everywhere: on 64-px windows the weights are nearly flat. Two variants make
the range follow the scene instead: ``"boxcar"`` takes x (range and value) from the power
averaged over ``boxcar`` x ``boxcar`` pixels (despeckled), ``"percentile"`` maps the
``percentiles`` (p1, p99 by default) of the power to 0 and 1 and clips outside.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

WeightMode = Literal["per_channel", "shared_avg"]
WeightSource = Literal["db", "normalized"]
RangeRule = Literal["minmax", "boxcar", "percentile"]

# Added to (max - min) so that a flat image gives x = 0 everywhere instead of 0 / 0.
_RANGE_EPS = 1e-6


def sar_weights(
    db: Tensor,
    scale: float = 1.0,
    mode: WeightMode = "per_channel",
    valid: Tensor | None = None,
    range_rule: RangeRule = "minmax",
    boxcar: int = 5,
    percentiles: tuple[float, float] = (1.0, 99.0),
) -> Tensor:
    """SAR-W weight of every pixel, from backscatter in dB.

    Args:
        db: backscatter in dB, shape (B, C, H, W).
        scale: the exponent scale s; weights span [1, e^s] (s = 1 gives [1, e]).
        mode: ``"per_channel"``: each channel (polarisation) gets its own min-max and weight;
            ``"shared_avg"``: the linear powers are averaged over channels first, and the one
            resulting weight map is shared by every channel.
        valid: optional bool mask, (B, H, W) or broadcastable to (B, C, H, W); False marks
            no-data pixels. They are left out of the min and max and get weight 0, so that
            they drop out of a weighted loss.
        range_rule, boxcar, percentiles: how the power is mapped to x in [0, 1] (see the
            module docstring); ``"minmax"`` is the published method.

    Returns:
        Weights, float32, shape (B, C, H, W), unitless: e^s at the darkest valid pixel of each
        image (and channel), about 1 at the brightest.
    """
    if db.ndim != 4:
        raise ValueError(f"sar_weights expects (B, C, H, W) dB, got shape {tuple(db.shape)}")
    linear = torch.pow(10.0, db.float() / 10.0)
    if mode == "shared_avg":
        linear = linear.mean(dim=1, keepdim=True)
    elif mode != "per_channel":
        raise ValueError(f"unknown SAR-W mode {mode!r}: use 'per_channel' or 'shared_avg'")

    if valid is None:
        valid = torch.ones_like(db, dtype=torch.bool)
    if valid.ndim == 3:
        valid = valid.unsqueeze(1)
    # Broadcast to (B, C, H, W) first so both modes reduce the same channels of `valid`.
    valid = valid.to(torch.bool).expand_as(db)
    if mode == "shared_avg":
        valid = valid.all(dim=1, keepdim=True)

    if range_rule == "boxcar":
        linear = _valid_boxcar(linear, valid, boxcar)
    if range_rule == "percentile":
        lowest, highest = _valid_percentiles(linear, valid, percentiles)
    elif range_rule in ("minmax", "boxcar"):
        lowest = torch.where(valid, linear, torch.inf).amin(dim=(-2, -1), keepdim=True)
        highest = torch.where(valid, linear, -torch.inf).amax(dim=(-2, -1), keepdim=True)
    else:
        raise ValueError(f"unknown SAR-W range rule {range_rule!r}: minmax, boxcar, percentile")
    # An image (channel) with no valid pixel has lowest=inf: give it an empty range, weight 0.
    lowest = torch.where(torch.isfinite(lowest), lowest, 0.0)
    highest = torch.where(torch.isfinite(highest), highest, 0.0)
    x = ((linear - lowest) / (highest - lowest + _RANGE_EPS)).clamp(0.0, 1.0)
    weights = torch.exp(scale * (1.0 - x)) * valid
    return weights.expand_as(db).contiguous()


def _valid_boxcar(linear: Tensor, valid: Tensor, size: int) -> Tensor:
    """Mean of the valid pixels in each ``size`` x ``size`` window (same shape)."""
    if size < 1 or size % 2 == 0:
        raise ValueError(f"SAR-W boxcar size must be odd and >= 1, got {size}")
    weight = valid.to(linear.dtype)
    pool = torch.nn.functional.avg_pool2d
    total = pool(linear * weight, size, stride=1, padding=size // 2, count_include_pad=True)
    count = pool(weight, size, stride=1, padding=size // 2, count_include_pad=True)
    return torch.where(count > 0, total / count.clamp_min(1e-12), linear)


def _valid_percentiles(
    linear: Tensor, valid: Tensor, percentiles: tuple[float, float]
) -> tuple[Tensor, Tensor]:
    """(low, high) percentiles of the valid pixels of each image and channel, (B, C, 1, 1)."""
    low, high = percentiles
    if not 0.0 <= low < high <= 100.0:
        raise ValueError(
            f"SAR-W percentiles must satisfy 0 <= low < high <= 100, got {percentiles}"
        )
    values = torch.where(valid, linear, torch.nan).flatten(-2)
    q = torch.tensor([low / 100.0, high / 100.0], dtype=values.dtype, device=values.device)
    bounds = torch.nanquantile(values, q, dim=-1)  # (2, B, C)
    return bounds[0][..., None, None], bounds[1][..., None, None]


def weights_from_source(
    db: Tensor,
    normalized: Tensor,
    source: WeightSource = "db",
    scale: float = 1.0,
    mode: WeightMode = "per_channel",
    valid: Tensor | None = None,
    **range_options: Any,
) -> Tensor:
    """SAR-W weights from the chosen source, both (B, C, H, W).

    ``source="db"`` (the documented method) uses the calibrated backscatter in dB;
    ``source="normalized"`` reproduces the authors' code, which fed the standardised input
    ``(dB - mean) / std`` to the same formula as if it were dB. Other arguments (and
    ``range_rule``, ``boxcar``, ``percentiles``) as in ``sar_weights``.
    """
    if source == "db":
        return sar_weights(db, scale=scale, mode=mode, valid=valid, **range_options)
    if source == "normalized":
        return sar_weights(normalized, scale=scale, mode=mode, valid=valid, **range_options)
    raise ValueError(f"unknown SAR-W source {source!r}: use 'db' or 'normalized'")


def weighted_masked_mean(error: Tensor, mask: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean per-pixel error over the masked pixels, each pixel scaled by its weight.

    Computes ``sum(weight * error * mask) / (sum(mask) * C)``: the denominator counts masked
    pixels times channels and does not include the weights, so a SAR-W loss is the plain
    masked mean of ``weight * error`` (values up to e times the unweighted loss), as in the
    published method. No-data pixels (weight 0) add no error but stay in the count: the
    count then depends only on the mask, the same on every process, so the gradient
    averaged over DDP processes equals the one-process gradient exactly.

    Args:
        error: per-pixel error (e.g. |pred - target| or its square), shape (B, C, H, W).
        mask: 1 where the pixel counts (masked), 0 elsewhere, shape (B, 1, H, W).
        weight: optional per-pixel weights, shape (B, C, H, W) (SAR-W; 0 drops a pixel).

    Returns:
        A scalar tensor.
    """
    channels = error.shape[1]
    weighted = error if weight is None else error * weight
    denominator = mask.sum().clamp_min(1.0) * channels
    return (weighted * mask).sum() / denominator
