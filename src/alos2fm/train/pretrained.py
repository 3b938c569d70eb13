"""What a pretrained encoder brings to fine-tuning besides its weights: ``encoder.json``.

``alos2fm pretrain`` and ``alos2fm import-weights`` write ``encoder.json`` beside
``encoder.safetensors``: the architecture, the bands in order and the dB mean/std the
encoder was trained with. Fine-tuning must feed it the same bands in the same order (an
HH encoder on HV, or VH/VV swapped, would load and train without a word), standardised
as in pretraining (``data.normalisation=encoder``, the default), and build the encoder
with the same shifted-window and APE kinds, which change the function without changing
a single weight name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alos2fm.errors import DataError
from alos2fm.train.config import FinetuneConfig
from alos2fm.train.data import Normalisation

ENCODER_META = "encoder.json"
# Encoder settings that change what the weights compute but not their names or shapes.
_FUNCTION_KEYS = ("shift", "ape")


def read_encoder_meta(weights: Path) -> dict[str, Any] | None:
    """``encoder.json`` beside ``weights``, or None (weights from elsewhere)."""
    path = Path(weights).with_name(ENCODER_META)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read the encoder's metadata: {err}", path) from None


def check_encoder_fits(
    meta: dict[str, Any], cfg: FinetuneConfig, bands: tuple[str, ...], path: Path
):
    """The dataset's bands and the fine-tuning encoder's kind must be the pretrained one's."""
    trained = tuple(meta.get("data", {}).get("bands", ()))
    if trained and trained != bands:
        raise DataError(
            f"the encoder was pretrained on bands {list(trained)}, the dataset has {list(bands)}",
            path,
            f"prepare the dataset with --bands {','.join(trained)} (same order)",
        )
    encoder = meta.get("encoder", {})
    model = cfg.model.encoder_kwargs()
    differ = [key for key in _FUNCTION_KEYS if key in encoder and encoder[key] != model.get(key)]
    if differ:
        sets = " ".join(f"--set model.{k}={str(encoder[k]).lower()}" for k in differ)
        raise DataError(
            "the fine-tuning encoder differs from the pretrained one in "
            + ", ".join(f"{k} ({model.get(k)} vs {encoder[k]})" for k in differ),
            path,
            f"fine-tune with {sets}",
        )


def finetune_normalisation(
    cfg: FinetuneConfig, dataset: Normalisation, meta: dict[str, Any] | None
) -> Normalisation:
    """``encoder``: the pretrained encoder's statistics when it has them, else the dataset's
    (``dataset`` already holds what ``stats`` or ``paper`` ask for)."""
    data = (meta or {}).get("data", {})
    if cfg.data.normalisation != "encoder" or "mean" not in data:
        return dataset
    return Normalisation(tuple(data["bands"]), tuple(data["mean"]), tuple(data["std"]))
