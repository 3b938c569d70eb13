"""Training samples cut and augmented on the batch: random windows, dihedral transforms,
dB gain jitter and speckle.

Everything here draws from torch's global RNG, which
:class:`alos2fm.train.engine.StepSeeder` reseeds before every training step from (seed,
epoch, batch, rank): a resumed run cuts the same windows and draws the same transforms as
an uninterrupted one. Batches are dicts of ``image`` (B, C, H, W) dB, ``valid`` (B, H, W)
and, for fine-tuning, ``label`` (B, H, W) with ``ignore_index`` for unlabelled pixels.

Windows: a stored patch larger than the model's input gives a new window every step, so a
64-px model trains on a 256-px dataset and a small dataset yields many distinct samples.
``labelled`` centres the window on a random labelled pixel (sparse labels: no window
without a label); ``balanced`` first draws a class uniformly among those the patch holds,
then a pixel of it, so rare classes are seen as often as common ones.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from alos2fm.data.classes import IGNORE_INDEX
from alos2fm.train.config import DataConfig

KEYS = ("image", "valid", "label")  # spatial entries, transformed together


def augment(batch: dict[str, Tensor], cfg: DataConfig, size: int) -> dict[str, Tensor]:
    """The training sample of ``cfg``: a ``size``-px window, transforms, gain, speckle."""
    batch = sample_windows(batch, size, cfg.sampling)
    batch = random_dihedral(batch) if cfg.dihedral else random_flips(batch, cfg.hflip, cfg.vflip)
    if cfg.gain_jitter_db > 0:
        batch = gain_jitter(batch, cfg.gain_jitter_db)
    if cfg.speckle_looks is not None:
        batch = speckle_noise(batch, cfg.speckle_looks)
    return batch


def sample_windows(
    batch: dict[str, Tensor], size: int, sampling: str = "uniform"
) -> dict[str, Tensor]:
    """One ``size`` x ``size`` window per sample (the batch itself if patches are that size)."""
    height, width = batch["image"].shape[-2:]
    if (height, width) == (size, size):
        return batch
    if height < size or width < size:
        raise ValueError(f"patches of {height} x {width} px are smaller than {size} px windows")
    count = batch["image"].shape[0]
    tops, lefts = window_origins(batch.get("label"), count, (height, width), size, sampling)
    out = dict(batch)
    for key in KEYS:
        if key in batch:
            value = batch[key]
            out[key] = torch.stack(
                [
                    v[..., t : t + size, c : c + size]
                    for v, t, c in zip(value, tops.tolist(), lefts.tolist(), strict=True)
                ]
            )
    return out


def sampling_cannot_act(sampling: str, patch: int, window: int) -> str | None:
    """Why a chosen window sampling would change nothing (patches as small as the window:
    every step sees the stored patches as they are), or None."""
    if sampling == "uniform" or patch > window:
        return None
    return (
        f"data.sampling={sampling} cannot act: the dataset's {patch} px patches are the "
        f"model's {window} px windows, so every step sees the same fixed windows (prepare "
        f"larger patches, e.g. --patch-size {2 * window} --stride {window}, or set "
        f"data.sampling=uniform to say so)"
    )


def window_origins(
    label: Tensor | None, count: int, shape: tuple[int, int], size: int, sampling: str
) -> tuple[Tensor, Tensor]:
    """Top-left corners (count,), (count,) of the windows; centred ones clamped inside."""
    height, width = shape
    if sampling == "uniform" or label is None:
        tops = torch.randint(0, height - size + 1, (count,))
        lefts = torch.randint(0, width - size + 1, (count,))
        return tops, lefts
    if sampling not in ("labelled", "balanced"):
        raise ValueError(f"unknown sampling {sampling!r}")
    tops, lefts = [], []
    for sample in label:
        rows, cols = _centre(sample, sampling)
        tops.append(min(max(rows - size // 2, 0), height - size))
        lefts.append(min(max(cols - size // 2, 0), width - size))
    return torch.tensor(tops), torch.tensor(lefts)


def _centre(label: Tensor, sampling: str) -> tuple[int, int]:
    """A random labelled pixel of one (H, W) label map (its centre if none is labelled)."""
    labelled = label != IGNORE_INDEX
    if not labelled.any():
        return label.shape[0] // 2, label.shape[1] // 2
    if sampling == "balanced":
        classes = torch.unique(label[labelled])
        chosen = classes[torch.randint(0, len(classes), (1,))]
        labelled = label == chosen
    positions = labelled.flatten().nonzero().squeeze(1)
    flat = int(positions[torch.randint(0, len(positions), (1,))])
    return divmod(flat, label.shape[1])


def random_flips(batch: dict[str, Tensor], hflip: bool, vflip: bool) -> dict[str, Tensor]:
    """Flip each sample left-right and/or up-down with probability 1/2."""
    out = dict(batch)
    size = batch["image"].shape[0]
    device = batch["image"].device
    for enabled, dim in ((hflip, -1), (vflip, -2)):
        if not enabled:
            continue
        chosen = torch.rand(size).lt(0.5).to(device)
        for key in KEYS:
            if key in out:
                value = out[key]
                flag = chosen.view(-1, *([1] * (value.ndim - 1)))
                out[key] = torch.where(flag, value.flip(dim), value)
    return out


def dihedral(value: Tensor, k: int) -> Tensor:
    """Element ``k`` (0-7) of the dihedral group on the last two axes: ``k % 4`` quarter
    turns, then a left-right flip when ``k >= 4``."""
    value = torch.rot90(value, k % 4, dims=(-2, -1))
    return value.flip(-1) if k >= 4 else value


def random_dihedral(batch: dict[str, Tensor]) -> dict[str, Tensor]:
    """One of the 8 rotations/flips per sample, drawn uniformly (square samples)."""
    image = batch["image"]
    if image.shape[-1] != image.shape[-2]:
        raise ValueError("dihedral transforms need square samples")
    draws = torch.randint(0, 8, (image.shape[0],)).tolist()
    out = dict(batch)
    for key in KEYS:
        if key in batch:
            out[key] = torch.stack([dihedral(v, k) for v, k in zip(batch[key], draws, strict=True)])
    return out


def gain_jitter(batch: dict[str, Tensor], sigma_db: float) -> dict[str, Tensor]:
    """Add one N(0, sigma) dB offset per sample to all its bands (a calibration error)."""
    image = batch["image"]
    offset = torch.randn(image.shape[0], 1, 1, 1, device=image.device) * sigma_db
    return dict(batch) | {"image": image + offset.to(image.dtype)}


def speckle_noise(batch: dict[str, Tensor], looks: float) -> dict[str, Tensor]:
    """Multiply linear power by Gamma(L, 1/L) speckle (mean 1): in dB, add 10·log10(G)."""
    image = batch["image"]
    gamma = torch.distributions.Gamma(torch.tensor(float(looks)), torch.tensor(float(looks)))
    factor = gamma.sample(image.shape).to(image.device).clamp_min(1e-6)
    noisy = image + (10.0 / math.log(10.0)) * torch.log(factor).to(image.dtype)
    # No-data pixels keep their fill value (the band mean): noise there would be invented.
    keep = batch["valid"].unsqueeze(1) if "valid" in batch else torch.ones_like(image, dtype=bool)
    return dict(batch) | {"image": torch.where(keep, noisy, image)}
