"""What a pretrained encoder brings to fine-tuning besides its weights: ``encoder.json``.

``alos2fm pretrain`` and ``alos2fm import-weights`` write ``encoder.json`` beside
``encoder.safetensors``: the architecture, the bands in order and the dB mean/std the
encoder was trained with. Fine-tuning must feed it the same bands in the same order (an
HH encoder on HV, or VH/VV swapped, would load and train without a word), standardised
as in pretraining (``data.normalisation=encoder``, the default), and build the encoder
with the same shifted-window and APE kinds, which change the function without changing
a single weight name. What ``encoder.json`` holds is read through ``alos2fm.contract``,
which evaluation and probes share.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alos2fm.contract import encoder_bands, encoder_statistics, read_encoder_meta
from alos2fm.errors import DataError
from alos2fm.train.config import FinetuneConfig
from alos2fm.train.data import Normalisation

__all__ = ["check_encoder_fits", "finetune_normalisation", "read_encoder_meta"]

# Encoder settings that change what the weights compute but not their names or shapes.
_FUNCTION_KEYS = ("shift", "ape")


def check_encoder_fits(
    meta: dict[str, Any], cfg: FinetuneConfig, bands: tuple[str, ...], path: Path
):
    """The dataset's bands and the fine-tuning encoder's kind must be the pretrained one's."""
    trained = encoder_bands(meta)
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
    (``dataset`` already holds what ``stats`` or ``paper`` ask for). Pretrained MERLIN
    weights have theirs too: its scale of ln-amplitude, centred on the dataset's mean
    (``alos2fm.models.merlin``); its random-init control arm, like any random network,
    takes the dataset's."""
    if cfg.data.normalisation == "encoder" and cfg.merlin_weights != "none":
        from alos2fm.models.merlin import merlin_db_standardisation

        if len(dataset.bands) != 1:
            raise DataError(
                f"MERLIN takes one band; this dataset has {list(dataset.bands)}",
                hint="prepare a single-band dataset (e.g. --bands HH)",
            )
        mean_db, std_db = merlin_db_standardisation(cfg.merlin_weights, dataset.mean_db[0])
        return Normalisation(dataset.bands, (mean_db,), (std_db,))
    own = encoder_statistics(meta)
    if cfg.data.normalisation != "encoder" or own is None:
        return dataset
    return Normalisation(own.bands, own.mean_db, own.std_db)
