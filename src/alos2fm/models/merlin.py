"""MERLIN's U-Net as a segmenter: a CNN pretrained self-supervised on real SAR.

MERLIN (Dalsasso, Denis & Tupin 2021) trains a small 1-channel U-Net to despeckle SAR
from single-look complex images alone (one of the real/imaginary parts predicts the
other). The ``deepdespeckling`` wheel (PyPI, MIT) ships its released weights for
TerraSAR-X stripmap and spotlight and Sentinel-1 TOPS. This module is our own code with
MERLIN's layer names and shapes, so that a released state dict loads key by key; MERLIN's
last 32 -> 1 convolution (which predicted the speckle ``n`` of ``x - n``) is replaced by a
32 -> K segmentation head at random initialisation, and the output is class logits, not a
residual. With no weights loaded, the same layers at random init are the control arm:
"does SAR pretraining of a CNN help" with capacity held fixed.

Input normalisation. MERLIN feeds each real (and imaginary) part ``a`` of an SLC as
``(ln(a^2 + 1e-3) - 2m) / (2 (M - m))`` = ``(ln|a| - m) / (M - m)`` (the ``1e-3`` only
guards ``ln 0`` on digital numbers of thousands), i.e. ln-amplitude min-max scaled by the
global ``M``, ``m`` of its training images (``deepdespeckling/utils/constants.py``;
``merlin/merlin_denoiser.py`` picks the Sentinel-TOPS pair for those weights). Our
datasets hold sigma0 in dB: amplitude ``= sqrt(10^(dB/10))``, so ``ln amplitude = dB *
ln(10) / 20``, and MERLIN's scale becomes ``std_db = 20 (M - m) / ln 10`` dB per unit of
input: contrast (speckle, texture, edges) reaches the layers at the size they learned it.
The offset is another matter: ``M`` and ``m`` were measured on TerraSAR-X (or Sentinel-1)
digital numbers, whose calibration constant has nothing to do with ALOS-2 sigma0 (taken
literally, -25..0 dB would land at about -0.12..0.12, where MERLIN's inputs spanned 0..1).
So the dataset's mean dB goes to the middle of MERLIN's range, 0.5
(:func:`merlin_db_standardisation`). Both are ``(dB - mean_db) / std_db``, what
``alos2fm.train.data.Normalisation`` already computes; so checkpoints, evaluation and
prediction feed the arm exactly as training did, with no special case. MERLIN saw
single-look parts, not multilooked amplitudes: the arm is "these layers pretrained on real
SAR vs the same layers at random init", not a tuned transfer.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from alos2fm.models.segmenter import WeightsError

# The released weights inside the deepdespeckling 0.8 wheel (relative to its package).
RELEASED_WEIGHTS = {
    "stripmap": "merlin/saved_model/stripmap.pth",
    "spotlight": "merlin/saved_model/spotlight.pth",
    "sentinel_tops": "merlin/saved_models/sentinel_tops.pth",
}

# (M, m): global max and min of ln-amplitude over MERLIN's training images, as shipped in
# deepdespeckling 0.8 (utils/constants.py): M, m for TerraSAR-X (stripmap, spotlight,
# and MERLIN's training code), M_s, m_s for Sentinel-1 TOPS. m_s is shipped as
# -np.log(0.001) = +6.91, positive; we use it as the denoiser does, without "fixing" it.
TERRASAR_X_RANGE = (10.089038980848645, -1.429329123112601)
SENTINEL_TOPS_RANGE = (12.385, -math.log(0.001))

# Where the dataset's mean goes on MERLIN's input scale, whose training images spanned 0..1.
MERLIN_INPUT_CENTRE = 0.5

# The one key of the released file our model replaces (the despeckler's 32 -> 1 output).
_REPLACED = ("dec1.weight", "dec1.bias")


def merlin_ln_amplitude_range(weights: str) -> tuple[float, float]:
    """(M, m) the named weights were trained with; a ``.pth`` of one's own is taken to
    come from MERLIN's training code, which normalises with the TerraSAR-X pair."""
    return SENTINEL_TOPS_RANGE if weights == "sentinel_tops" else TERRASAR_X_RANGE


def merlin_db_standardisation(weights: str, dataset_mean_db: float) -> tuple[float, float]:
    """(mean_db, std_db) such that ``(dB - mean_db) / std_db`` has MERLIN's scale,
    ``ln amplitude / (M - m)`` with ``ln amplitude = dB ln(10) / 20``, and puts
    ``dataset_mean_db`` at the middle of its input range (the module's docstring: why)."""
    top, bottom = merlin_ln_amplitude_range(weights)
    db_per_neper = 20.0 / math.log(10.0)  # dB of amplitude per unit of ln-amplitude
    std_db = (top - bottom) * db_per_neper
    return dataset_mean_db - MERLIN_INPUT_CENTRE * std_db, std_db


class MerlinUnet(nn.Module):
    """Normalised one-band image ``(B, 1, H, W)`` -> logits ``(B, K, H, W)``.

    MERLIN's layers: seven 48-channel 3x3 convolutions (max-pool 2 after enc1..enc5), a
    decoder of 96-channel pairs, each after a nearest x2 upsampling and concatenation
    with the encoder map of that scale, then dec1a (96 + the input itself -> 64) and dec1b
    (64 -> 32); LeakyReLU 0.1 throughout, zero padding. Then our head: 3x3, 32 -> K (3x3
    as MERLIN's own last layer). Sides that are multiples of 32 compute exactly MERLIN's
    function; other sizes work too (each upsampling goes to its skip's size).
    """

    def __init__(self, num_classes: int, in_chans: int = 1):
        super().__init__()
        if in_chans != 1:
            raise WeightsError(
                f"MERLIN takes one band; this model was asked for {in_chans}",
                hint="prepare a single-band dataset (e.g. --bands HH)",
            )
        self.enc0 = _conv(1, 48)
        for name in ("enc1", "enc2", "enc3", "enc4", "enc5", "enc6"):
            setattr(self, name, _conv(48, 48))
        self.dec5, self.dec5b = _conv(96, 96), _conv(96, 96)
        self.dec4, self.dec4b = _conv(144, 96), _conv(96, 96)
        self.dec3, self.dec3b = _conv(144, 96), _conv(96, 96)
        self.dec2, self.dec2b = _conv(144, 96), _conv(96, 96)
        self.dec1a, self.dec1b = _conv(97, 64), _conv(64, 32)
        self.head = _conv(32, num_classes)
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        act = F.leaky_relu
        skips = [x]  # the input itself is the last skip (dec1a's 97th channel)
        n = act(self.enc0(x), 0.1)
        for conv in (self.enc1, self.enc2, self.enc3, self.enc4):
            n = F.max_pool2d(act(conv(n), 0.1), 2)
            skips.append(n)
        n = F.max_pool2d(act(self.enc5(n), 0.1), 2)
        n = act(self.enc6(n), 0.1)
        for first, second in (
            (self.dec5, self.dec5b),
            (self.dec4, self.dec4b),
            (self.dec3, self.dec3b),
            (self.dec2, self.dec2b),
            (self.dec1a, self.dec1b),
        ):
            skip = skips.pop()
            n = torch.cat([F.interpolate(n, size=skip.shape[-2:], mode="nearest"), skip], dim=1)
            n = act(second(act(first(n), 0.1)), 0.1)
        return self.head(n)


def _conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, padding=1)


# --- the released weights -----------------------------------------------------------------


def released_weights_path(name: str) -> Path:
    """The file of released weights ``name`` inside an installed ``deepdespeckling``.

    Found through the import system's spec, without importing the package (its
    ``__init__`` imports OpenCV, which we do not need to read a state dict)."""
    if name not in RELEASED_WEIGHTS:
        raise WeightsError(
            f"unknown MERLIN weights {name!r}",
            hint=f"use one of {sorted(RELEASED_WEIGHTS)}, none, or a .pth path",
        )
    spec = importlib.util.find_spec("deepdespeckling")
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "the MERLIN weights come with the deepdespeckling package, which is not installed",
            hint="pip install 'alos2fm[merlin]' (or give a .pth path)",
        )
    path = Path(next(iter(spec.submodule_search_locations))) / RELEASED_WEIGHTS[name]
    if not path.is_file():
        raise WeightsError(
            f"deepdespeckling is installed but has no {RELEASED_WEIGHTS[name]}",
            path,
            "install the pinned version: pip install 'alos2fm[merlin]'",
        )
    return path


@dataclass(frozen=True)
class MerlinLoadReport:
    path: Path
    loaded: int

    def summary(self) -> str:
        return (
            f"{self.path}: loaded {self.loaded} MERLIN tensors; its dec1 (the despeckling "
            "output) replaced by the segmentation head, at random initialisation"
        )


def load_merlin_weights(model: MerlinUnet, weights: str | Path) -> MerlinLoadReport:
    """Initialise every layer of ``model`` but its head from released MERLIN weights
    (a name of :data:`RELEASED_WEIGHTS`) or a ``.pth`` state dict with MERLIN's keys.

    Strict, key by key: every tensor of ours but the head must be in the file with its
    shape, and the file may hold nothing else than MERLIN's replaced ``dec1``.

    Raises:
        WeightsError: unreadable file, a missing, unexpected or differently shaped key.
    """
    path = Path(weights) if str(weights).endswith(".pth") else released_weights_path(weights)
    try:
        source = torch.load(path, weights_only=True, map_location="cpu")
    except (OSError, RuntimeError) as err:  # RuntimeError: not a torch file, or not weights
        raise WeightsError(f"cannot read MERLIN weights: {err}", path) from None
    if not isinstance(source, dict):
        raise WeightsError("not a state dict (a mapping of names to tensors)", path)
    hint = "this is not a deepdespeckling MERLIN state dict"
    target = {k: v for k, v in model.state_dict().items() if not k.startswith("head.")}
    for key, want in target.items():
        if key not in source:
            raise WeightsError(f"{key} is missing from the file", path, hint)
        if tuple(source[key].shape) != tuple(want.shape):
            raise WeightsError(
                f"{key} has shape {tuple(source[key].shape)} in the file but "
                f"{tuple(want.shape)} in the model",
                path,
                hint,
            )
    unexpected = sorted(set(source) - set(target) - set(_REPLACED))
    if unexpected:
        raise WeightsError(f"unexpected keys in the file: {', '.join(unexpected)}", path, hint)
    model.load_state_dict({key: source[key] for key in target}, strict=False)
    return MerlinLoadReport(path, len(target))
