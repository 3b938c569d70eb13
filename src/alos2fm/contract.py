"""The one compatibility contract between a model and what it is fed.

A model is a fine-tuned checkpoint (``RUN/checkpoints/best.ckpt``) or a pretrained encoder
(``encoder.safetensors`` with its ``encoder.json``). Fine-tuning (``--encoder``),
``evaluate``, ``probe``, ``predict`` and ``export`` ask this module, and only this module,
whether a dataset or a product may be given to it:

- **bands**, by name: a model's bands map to the source's indices, in the model's order.
  Generic names (``DB1``, ``B2``, ``BAND3``: a dB GeoTIFF's) say nothing about
  polarisation, so on either side they match by position when the counts agree, with a
  warning; anything else is refused naming both band lists.
- **classes**: a checkpoint scores only a dataset of its own class table (count and names).
- **normalisation**: an encoder brings its own dB mean/std (``encoder.json``); whoever
  feeds it uses them, not the dataset's.
- **architecture**: every encoder tensor of the model comes from the file and every tensor
  of the file is used (position tables may be interpolated); a partial load is refused
  unless the user asked for it (``--allow-partial-encoder``).
- **preprocessing**: the multilook and speckle filter of the checkpoint's training data
  (``alos2fm.data.recipe``) are those of the dataset it is evaluated on.
- **checkpoint files**: :func:`open_checkpoint` is the one way a ``.ckpt`` is read.

Every refusal is an :class:`~alos2fm.errors.Alos2fmError` with a one-line message.
"""

from __future__ import annotations

import json
import logging
import pickle
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alos2fm.errors import CompatibilityError

if TYPE_CHECKING:
    from alos2fm.models.segmenter import EncoderLoadReport

log = logging.getLogger(__name__)

GENERIC_BAND = re.compile(r"(DB|B|BAND)\d+", re.IGNORECASE)
ENCODER_META = "encoder.json"
# File tensors that pretraining keeps beside the encoder and fine-tuning never uses.
PRETRAINING_ONLY = frozenset({"mask_token"})
SHOWN_KEYS = 3  # keys named in a refusal


# --- bands --------------------------------------------------------------------------------


def is_generic(bands: Sequence[str]) -> bool:
    """Band names that say nothing about polarisation (a dB GeoTIFF's "DB1", "DB2", ...)."""
    return bool(bands) and all(GENERIC_BAND.fullmatch(band) for band in bands)


def bands_to_open(model_bands: Sequence[str]) -> tuple[str, ...] | None:
    """The ``bands=`` to open a product with: the model's polarisations, or None (open the
    product whole) when the model's names are generic and no reader could look them up."""
    return None if is_generic(model_bands) else tuple(model_bands)


def band_indices(
    model_bands: Sequence[str],
    source_bands: Sequence[str],
    source: str | Path | None = None,
    kind: str = "product",
) -> list[int]:
    """Indices of ``source_bands`` that feed the model, in the model's order: by name;
    by position where one side's names are generic and the counts agree (with a warning)."""
    model_bands, source_bands = list(model_bands), list(source_bands)
    if all(band in source_bands for band in model_bands):
        return [source_bands.index(band) for band in model_bands]
    generic = is_generic(source_bands) or is_generic(model_bands)
    if generic and len(source_bands) == len(model_bands):
        log.warning(
            "%s: bands %s fed by position as the model's %s (generic names cannot be checked)",
            source,
            source_bands,
            model_bands,
        )
        return list(range(len(model_bands)))
    raise CompatibilityError(
        f"the model needs bands {model_bands}, the {kind} has {source_bands}",
        source,
        f"use a model trained on this {kind}'s bands, or a {kind} with the model's",
    )


def check_dataset_bands(
    model_bands: Sequence[str], dataset_bands: Sequence[str], root: str | Path
) -> None:
    """A dataset feeds its bands in its own order: they must be the model's, in order."""
    if band_indices(model_bands, dataset_bands, root, "dataset") != list(range(len(model_bands))):
        raise CompatibilityError(
            f"the model needs bands {list(model_bands)} in this order, the dataset has "
            f"{list(dataset_bands)}",
            root,
            f"prepare the dataset with --bands {','.join(model_bands)}",
        )


# --- classes ------------------------------------------------------------------------------


def dataset_class_names(stats: Mapping[str, Any]) -> tuple[str, ...]:
    """A labelled dataset's class names from its ``stats.json`` (``class_<i>`` if unnamed)."""
    count = int(stats.get("num_classes", 0))
    return tuple(stats.get("class_names") or (f"class_{i}" for i in range(count)))


def check_classes(
    model_names: Sequence[str], dataset_names: Sequence[str], root: str | Path
) -> None:
    """A checkpoint is scored only on a dataset of the same classes, in the same order."""
    if tuple(model_names) != tuple(dataset_names):
        raise CompatibilityError(
            f"the checkpoint predicts {len(model_names)} classes {list(model_names)}, the "
            f"dataset has {len(dataset_names)} {list(dataset_names)}",
            root,
            "evaluate on a dataset prepared with the checkpoint's class table",
        )


# --- normalisation ------------------------------------------------------------------------


@dataclass(frozen=True)
class BandStatistics:
    """The dB mean and standard deviation per band that standardise a model's input."""

    bands: tuple[str, ...]
    mean_db: tuple[float, ...]
    std_db: tuple[float, ...]


def read_encoder_meta(weights: str | Path) -> dict[str, Any] | None:
    """``encoder.json`` beside ``weights``, or None (weights from elsewhere)."""
    path = Path(weights).with_name(ENCODER_META)
    if not path.is_file():
        return None
    try:
        meta = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CompatibilityError(f"cannot read the encoder's metadata: {err}", path) from None
    if not isinstance(meta, dict):
        raise CompatibilityError("the encoder's metadata is not a JSON object", path)
    return meta


def encoder_bands(meta: Mapping[str, Any] | None) -> tuple[str, ...]:
    """The bands an encoder was pretrained on, in order (empty if not recorded)."""
    return tuple((meta or {}).get("data", {}).get("bands", ()))


def encoder_statistics(meta: Mapping[str, Any] | None) -> BandStatistics | None:
    """The normalisation an encoder brings (``encoder.json``'s data), or None if it has
    none: then, and only then, the dataset's statistics feed it."""
    data = (meta or {}).get("data", {})
    if "mean" not in data or "std" not in data:
        return None
    return BandStatistics(
        tuple(data["bands"]),
        tuple(float(v) for v in data["mean"]),
        tuple(float(v) for v in data["std"]),
    )


# --- architecture -------------------------------------------------------------------------


def check_encoder_load(report: EncoderLoadReport, allow_partial: bool = False) -> None:
    """Refuse an encoder file that initialised only part of the model's encoder, or whose
    tensors the model does not use (interpolated position tables are a full load)."""
    unused = [key for key in report.unexpected if key not in PRETRAINING_ONLY]
    problems = [
        f"{len(keys)} {what} (e.g. {', '.join(keys[:SHOWN_KEYS])})"
        for keys, what in (
            (report.missing, "encoder tensors left at random initialisation"),
            (unused, "file tensors unused"),
        )
        if keys
    ]
    if not problems:
        return
    if allow_partial:
        log.warning("%s: partial encoder load: %s", report.path, "; ".join(problems))
        return
    raise CompatibilityError(
        "the encoder does not fit the model: " + "; ".join(problems),
        report.path,
        "fine-tune with the encoder's own architecture (encoder.json), or pass "
        "--allow-partial-encoder",
    )


# --- preprocessing ------------------------------------------------------------------------


def check_preprocessing(
    recorded: Mapping[str, Any] | None, dataset_root: str | Path, checkpoint: str | Path
) -> None:
    """The checkpoint's training data and the dataset were cut with the same multilook
    and speckle filter (a checkpoint that records none is trusted, with a warning)."""
    from alos2fm.data.recipe import Preprocessing

    dataset = Preprocessing.of_dataset(dataset_root)
    if recorded is None:
        log.warning("%s does not record its training data's preprocessing", checkpoint)
        return
    model = Preprocessing.from_dict(recorded)
    if model != dataset:
        raise CompatibilityError(
            f"the checkpoint was trained on data preprocessed as {model.as_dict()}, the "
            f"dataset as {dataset.as_dict()}",
            dataset_root,
            "evaluate on a dataset prepared with the checkpoint's multilook and speckle filter",
        )


# --- checkpoint files ---------------------------------------------------------------------


def refused_unpickling(error: Exception) -> str:
    """One line for torch's refusal to unpickle an object: the blocked global, parsed from
    its page-long message (whose advice to retry with full unpickling is never repeated)."""
    text = str(error)
    found = re.search(r"GLOBAL\s+([\w.]+)", text) or re.search(r"global:?\s+`?([\w.]+)", text)
    name = found.group(1) if found else "an object that is not a tensor or container"
    return (
        f"refused to unpickle {name}: the file is refused because loading it would run code "
        "(only tensors and plain containers are read)"
    )


def open_checkpoint(path: str | Path) -> dict[str, Any]:
    """The content of a fine-tuned ``.ckpt`` (tensors and containers only unpickled), with
    its ``state_dict`` and ``hyper_parameters``; a one-line ``WeightsError`` for a missing,
    empty, truncated or foreign file."""
    import torch

    from alos2fm.models.segmenter import WeightsError

    path = Path(path)
    use = "give the best.ckpt or last.ckpt that 'alos2fm finetune' wrote"
    if not path.is_file():
        raise WeightsError("checkpoint not found", path, use)
    if path.stat().st_size == 0:
        raise WeightsError("checkpoint is empty (0 bytes)", path, use)
    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise WeightsError(refused_unpickling(err), path, use) from None
    except Exception as err:  # torch raises several types for a corrupt or foreign file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise WeightsError(
            f"cannot read checkpoint (truncated or not a PyTorch checkpoint: {first})", path, use
        ) from None
    if not isinstance(content, dict) or not isinstance(content.get("state_dict"), Mapping):
        raise WeightsError("not a model checkpoint (no state_dict)", path, use)
    if not isinstance(content.get("hyper_parameters"), Mapping):
        raise WeightsError("not a model checkpoint (no hyper_parameters)", path, use)
    return content
