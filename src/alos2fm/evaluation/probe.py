"""Frozen-feature probes: how much land cover an encoder's features hold, without training it.

Fine-tuning comparisons of encoders are noisy (every run re-trains a decoder and the
encoder); a probe keeps the encoder frozen and fits only a per-pixel classifier on its
multi-scale features, so many seeds are cheap and differences between encoders (random,
SimMIM, SAR-W-SimMIM, MixMAE, imported weights) have a small spread.

Per encoder and seed: the four feature maps of every training patch (cut into tiles of
the encoder's input size) are upsampled to pixels (bilinear) and concatenated;
``train_pixels`` labelled pixels are drawn (seeded) and a classifier is fitted —
``linear`` (multinomial logistic regression on standardised features, balanced class
weights) or ``rf`` (a Random Forest); it is scored on up to ``eval_pixels`` labelled
pixels of each evaluation split from one confusion matrix (``alos2fm.evaluation.metrics``).
A random encoder is drawn anew per seed. Each encoder is fed as it was pretrained
(``alos2fm.contract``): the dataset's bands must be its bands, standardised with its own
dB statistics from ``encoder.json`` (a random encoder takes the dataset's), and its file
must initialise every tensor of the encoder. ``compare_encoders`` adds paired differences
to the first encoder over seeds (paired t, ``alos2fm.evaluation.statistics``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from alos2fm.data.classes import IGNORE_INDEX
from alos2fm.errors import Alos2fmError

Classifier = Literal["linear", "rf"]
RANDOM = "random"


class ProbeError(Alos2fmError):
    """Inputs a probe cannot run on."""


@dataclass(frozen=True)
class ProbeSettings:
    seeds: int = 10
    train_pixels: int = 20000
    eval_pixels: int = 200000
    classifier: Classifier = "linear"
    splits: tuple[str, ...] = ("val", "test")
    batch_size: int = 16


def load_frozen_encoder(source: str | Path, seed: int, architecture: dict[str, Any]) -> Any:
    """An encoder of ``architecture``: random (seeded) for ``source="random"``, else with the
    weights of ``source`` (an ``encoder.safetensors``; see ``encoder_architecture``)."""
    from alos2fm.contract import check_encoder_load
    from alos2fm.models.backbones import build_encoder
    from alos2fm.models.segmenter import Segmenter, load_encoder_weights

    torch.manual_seed(seed)
    encoder = build_encoder(architecture)
    if str(source) != RANDOM:
        segmenter = Segmenter(encoder, num_classes=2, decoder_channels=8)
        check_encoder_load(load_encoder_weights(segmenter, source))
    return encoder.eval().requires_grad_(False)


def probe_normalisation(source: str | Path, data: Path) -> Any:
    """How ``source`` is fed ``data``: the encoder's bands checked against the dataset's and
    its own statistics (``encoder.json``); a random encoder, or one without statistics,
    takes the dataset's."""
    from alos2fm.contract import (
        check_dataset_bands,
        encoder_bands,
        encoder_statistics,
        read_encoder_meta,
    )
    from alos2fm.train.data import Normalisation, dataset_normalisation

    dataset = dataset_normalisation(data)
    if str(source) == RANDOM:
        return dataset
    meta = read_encoder_meta(source)
    if trained := encoder_bands(meta):
        check_dataset_bands(trained, dataset.bands, data)
    own = encoder_statistics(meta)
    return dataset if own is None else Normalisation(own.bands, own.mean_db, own.std_db)


def encoder_architecture(path: str | Path) -> dict[str, Any]:
    """The ``encoder`` entry of the ``encoder.json`` beside an ``encoder.safetensors``."""
    meta = Path(path).with_name("encoder.json")
    try:
        return dict(json.loads(meta.read_text())["encoder"])
    except (OSError, ValueError, KeyError) as err:
        raise ProbeError(
            f"cannot read the encoder's architecture ({err})", meta, "keep encoder.json beside it"
        ) from None


@torch.inference_mode()
def pixel_features(encoder: Any, images: torch.Tensor) -> torch.Tensor:
    """(B, F, H, W): the encoder's four maps, each layer-normalised over its channels and
    upsampled to the input's pixels, concatenated."""
    from alos2fm.models.backbones import encoder_features

    size = images.shape[-2:]
    maps = []
    for feature in encoder_features(encoder, images):
        feature = torch.nn.functional.layer_norm(
            feature.permute(0, 2, 3, 1), feature.shape[1:2]
        ).permute(0, 3, 1, 2)
        maps.append(torch.nn.functional.interpolate(feature, size, mode="bilinear"))
    return torch.cat(maps, dim=1)


def _tiles(item: dict[str, torch.Tensor], size: int):
    """(image, valid, label) of the non-overlapping ``size`` tiles covering a patch (the
    last ones moved inside)."""
    from alos2fm.data.tiling import tile_origins

    image = item["image"]
    for top in tile_origins(image.shape[-2], size, 0):
        for left in tile_origins(image.shape[-1], size, 0):
            rows, cols = slice(top, top + size), slice(left, left + size)
            yield image[..., rows, cols], item["valid"][rows, cols], item["label"][rows, cols]


def labelled_counts(dataset: Any) -> np.ndarray:
    """Labelled pixels of each patch of ``dataset``, from its label array alone (the
    weights that spread a pixel draw over patches; the same for every seed)."""
    from alos2fm.data.store import open_patch_arrays

    labels = open_patch_arrays(dataset.root).labels
    return np.array([int((labels[int(p)] != IGNORE_INDEX).sum()) for p in dataset.positions])


def sample_features(
    encoder: Any,
    dataset: Any,
    counts: np.ndarray,
    normalise: Any,
    size: int,
    pixels: int,
    rng: np.random.Generator,
    batch_size: int = 16,
) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F), labels (N,)) of ``pixels`` labelled pixels drawn uniformly among
    all labelled pixels of ``dataset``: per patch in proportion to its labelled ``counts``,
    then uniformly inside it."""
    if counts.sum() == 0:
        raise ProbeError("no labelled pixel in this split", dataset.root)
    take = rng.multinomial(min(pixels, int(counts.sum())), counts / counts.sum())
    features, labels = [], []
    for i in np.flatnonzero(take):
        item = dataset[int(i)]
        tiles = list(_tiles(item, size))
        feats, labs = [], []
        for b in range(0, len(tiles), batch_size):
            chunk = tiles[b : b + batch_size]
            images = normalise(
                torch.stack([t[0] for t in chunk]), torch.stack([t[1] for t in chunk])
            )
            f = pixel_features(encoder, images)
            feats.append(f.permute(0, 2, 3, 1).reshape(-1, f.shape[1]))
            labs.append(torch.stack([t[2] for t in chunk]).reshape(-1))
        feats, labs = torch.cat(feats), torch.cat(labs)
        labelled = torch.nonzero(labs != IGNORE_INDEX).squeeze(1).numpy()
        chosen = rng.choice(labelled, size=min(int(take[i]), len(labelled)), replace=False)
        features.append(feats[chosen].numpy())
        labels.append(labs[chosen].numpy())
    return np.concatenate(features), np.concatenate(labels)


def fit_classifier(features: np.ndarray, labels: np.ndarray, kind: Classifier, seed: int) -> Any:
    try:
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
    except ImportError:
        raise ProbeError("probes need scikit-learn", hint="pip install 'alos2fm[study]'") from None
    if kind == "linear":
        model = make_pipeline(
            StandardScaler(),
            LogisticRegression(max_iter=500, class_weight="balanced", random_state=seed),
        )
    elif kind == "rf":
        model = RandomForestClassifier(
            n_estimators=100, min_samples_leaf=2, class_weight="balanced", random_state=seed
        )
    else:
        raise ProbeError(f"unknown probe classifier {kind!r}", hint="linear or rf")
    return model.fit(features, labels)


def run_probe(
    data: str | Path,
    encoders: Sequence[str | Path],
    settings: ProbeSettings = ProbeSettings(),
    architecture: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per (encoder, seed, split): mIoU, OA and per-class IoU of the probe."""
    from alos2fm.contract import dataset_class_names
    from alos2fm.data.dataset import PatchDataset
    from alos2fm.data.store import read_stats
    from alos2fm.evaluation.metrics import segmentation_scores

    data = Path(data)
    stats = read_stats(data)
    names = list(dataset_class_names(stats))
    architecture = architecture or _first_architecture(encoders)
    train = PatchDataset(data, "train", with_labels=True)
    evaluated = {s: PatchDataset(data, s, with_labels=True) for s in settings.splits}
    counts = {s: labelled_counts(d) for s, d in [("train", train), *evaluated.items()]}
    rows = []
    for source in encoders:
        spec = architecture if str(source) == RANDOM else encoder_architecture(source)
        normalise = probe_normalisation(source, data)
        size = int(spec.get("img_size", 256))
        for seed in range(settings.seeds):
            encoder = load_frozen_encoder(source, seed, spec)
            rng = np.random.default_rng(seed)
            x, y = sample_features(
                encoder, train, counts["train"], normalise, size, settings.train_pixels, rng
            )
            model = fit_classifier(x, y, settings.classifier, seed)
            for split, dataset in evaluated.items():
                xs, ys = sample_features(
                    encoder, dataset, counts[split], normalise, size, settings.eval_pixels, rng
                )
                matrix = np.zeros((len(names), len(names)), dtype=np.int64)
                np.add.at(matrix, (ys, model.predict(xs)), 1)
                scores = segmentation_scores(torch.from_numpy(matrix), names)
                rows.append(
                    {
                        "encoder": _name(source),
                        "seed": seed,
                        "split": split,
                        "miou": scores["miou"],
                        "overall_accuracy": scores["overall_accuracy"],
                        "per_class_iou": {n: scores["per_class"][n]["iou"] for n in names},
                    }
                )
    return rows


def compare_encoders(rows: list[dict[str, Any]], split: str = "test") -> list[dict[str, Any]]:
    """Mean ± std of mIoU per encoder over seeds, and the paired difference to the first
    encoder over shared seeds (``alos2fm.evaluation.statistics.paired_difference``): its
    mean, two-sided 95 % t interval (``diff_low``, ``diff_high``) and paired t-test p."""
    from alos2fm.evaluation.statistics import paired_difference

    by_encoder: dict[str, dict[int, float]] = {}
    for row in rows:
        if row["split"] == split:
            by_encoder.setdefault(row["encoder"], {})[row["seed"]] = row["miou"]
    reference_name, reference = next(iter(by_encoder.items()))
    summary = []
    for name, scores in by_encoder.items():
        values = np.array([scores[s] for s in sorted(scores)])
        entry = {
            "encoder": name,
            "seeds": len(values),
            "miou_mean": float(values.mean()),
            "miou_std": float(values.std(ddof=1)) if len(values) > 1 else math.nan,
        }
        if name != reference_name:
            seeds = sorted(set(scores) & set(reference))
            diff = paired_difference([scores[s] for s in seeds], [reference[s] for s in seeds])
            entry["diff_to_" + reference_name] = diff.mean
            entry["p_value"] = diff.p
            entry["diff_low"], entry["diff_high"] = diff.low, diff.high
        summary.append(entry)
    return summary


def _name(source: str | Path) -> str:
    if str(source) == RANDOM:
        return RANDOM
    path = Path(source)
    return path.parent.name or path.stem


def _first_architecture(encoders: Sequence[str | Path]) -> dict[str, Any]:
    for source in encoders:
        if str(source) != RANDOM:
            return encoder_architecture(source)
    raise ProbeError(
        "a random encoder alone has no architecture", hint="pass --preset NAME for its model"
    )


PROBE_FILES = ("probe.json", "probe.csv")


def probe_into(
    out: Path,
    data: Path,
    encoders: Sequence[str],
    settings: ProbeSettings,
    architecture: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``alos2fm probe``: claim ``out`` (``alos2fm.outputs``), probe every encoder, write
    ``probe.json`` (runs, test summary, identity) and ``probe.csv``; returns both."""
    import pandas as pd

    from alos2fm.atomic import atomic_path
    from alos2fm.identity import content_digest, dataset_identity
    from alos2fm.outputs import claim_folder

    files = [Path(e) for e in encoders if e != "random"]
    identity = {
        "dataset": dataset_identity(data),
        "encoders": {str(e): content_digest(Path(e)) if e != "random" else e for e in encoders},
        "settings": settings.__dict__,
        "architecture": architecture,
    }
    inputs = [data, *files]
    with claim_folder(
        out, "probe", outputs=PROBE_FILES, inputs=inputs, overwrite=overwrite, identity=identity
    ):
        rows = run_probe(data, list(encoders), settings, architecture)
        summary = compare_encoders(rows)
        with atomic_path(out / "probe.json") as tmp:
            record = {"runs": rows, "test": summary, "identity": identity}
            tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
        table = pd.DataFrame([{k: v for k, v in r.items() if k != "per_class_iou"} for r in rows])
        with atomic_path(out / "probe.csv") as tmp:
            table.to_csv(tmp, index=False)
        return rows, summary
