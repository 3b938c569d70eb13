"""The Flevoland label-efficiency study in one command.

    python experiments/flevoland/run.py --out DIR [--quick] [--setting NAME] [--data FOLDER]

Does SAR-W pretraining help land-cover segmentation on real L-band SAR, above all with few
labels? For each input setting (HH; HH+HV+VV), split seed and label fraction, every method
is trained on the same labelled pixels and scored on the same test pixels:

- ``random``: UPerNet + tiny Swin from random initialisation;
- ``simmim``, ``sarw_simmim``, ``mixmae``, ``sarw_mixmae``: the same, from an encoder
  pretrained on the whole scene's imagery (unlabelled; transductive) by that method,
  SAR-W with ``per_channel`` weights; ``sarw_simmim_shared`` uses ``shared_avg`` weights
  (multi-band settings only);
- ``rf``: a Random Forest on multi-scale local statistics (``baseline_rf.py``);
- the plan's **levers**: a pretrained method with one thing changed in its pretraining
  recipe (epochs, mask ratio, mask unit), run after the methods on a part of the grid.

Networks go through the package's pipeline as a user's data does: datasets made by
``alos2fm prepare`` from the T3 folder, pixel-grid label images, the study's split as a
split map and the ``flevoland`` class table (``scene.py``), ``run_pretrain`` /
``run_finetune`` with the YAML recipes in ``configs/``,
model selection on validation mIoU, then the whole scene is predicted with the package's
sliding-window predictor and the **test pixels of the map** are scored from one confusion
matrix (``alos2fm.evaluation.metrics``). The Random Forest's map is scored the same way.

Outputs under ``--out`` (every run writes ``results.json`` last and atomically; a run whose
``results.json`` exists is skipped, so an interrupted study resumes where it stopped)::

    config.yaml, data.json                   the resolved study configuration, the scene used
    splits/seed<S>_pixel_counts.csv          labelled pixels per class and split
    <setting>/pretrain_store/                whole-scene dataset (unlabelled, alos2fm prepare)
    <setting>/pretrain/<method>/             pretraining run folders (encoder, figures)
    <setting>/stores/seed<S>_<F>pct/         fine-tuning datasets (alos2fm prepare), with
    <setting>/stores/seed<S>_<F>pct_inputs/  their label image, split map and class table
    <setting>/runs/<method>/seed<S>_<F>pct/  results.json, prediction.npz, the run folder
                                             (its checkpoints deleted once scored)
    results.csv, results.json                every run's scores in one table

``--quick`` runs ``configs/quick.yaml`` (one split seed, HH only, random vs SAR-W-SimMIM
vs RF at 5 % and 100 %); the default runs ``configs/full.yaml``; ``--config`` another plan.
Then ``report.py`` writes RESULTS.md from the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))  # the study's sibling modules, when run as a script

from baseline_rf import fit_predict, local_statistics  # noqa: E402
from scene import (  # noqa: E402
    CLASS_NAMES,
    missing_scene,
    open_scene,
    prepare_finetuning,
    prepare_pretraining,
    read_ground_truth,
    read_scene_db,
)
from splits import (  # noqa: E402
    IGNORE,
    SplitRule,
    make_split,
    sample_label_fraction,
    sample_parcels,
)

PretrainedMethod = Literal["simmim", "sarw_simmim", "sarw_simmim_shared", "mixmae", "sarw_mixmae"]
Method = Literal["random", "unet", "rf"] | PretrainedMethod
# Fine-tuning recipe of each supervised architecture (configs/); Swin runs use the plan's.
CNN_RECIPES = {"unet": "finetune_unet.yaml"}
# Pretrained methods: (recipe in configs/, weighting kind, weighting mode).
PRETRAINING = {
    "simmim": ("pretrain_simmim.yaml", "none", "per_channel"),
    "sarw_simmim": ("pretrain_simmim.yaml", "sar", "per_channel"),
    "sarw_simmim_shared": ("pretrain_simmim.yaml", "sar", "shared_avg"),
    "mixmae": ("pretrain_mixmae.yaml", "none", "per_channel"),
    "sarw_mixmae": ("pretrain_mixmae.yaml", "sar", "per_channel"),
}


def parse_budget(budget: str | float) -> tuple[Literal["fraction", "parcels"], float]:
    """A label budget: ``"k3"`` (3 labelled parcels per class), ``"0.1%"`` or a fraction
    (``0.001``) of the training pixels."""
    text = str(budget).strip()
    problem = f"label budget {budget!r}: a fraction in (0, 1], 'P%' or 'kN' (N >= 1)"
    if text.startswith("k"):
        if not text[1:].isdigit() or int(text[1:]) < 1:
            raise ValueError(problem)
        return "parcels", int(text[1:])
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise ValueError(problem) from None
    if not 0.0 < value <= 1.0:
        raise ValueError(problem)
    return "fraction", value


def budget_tag(budget: str | float) -> str:
    """The budget's name in folders and tables: ``k3``, ``0.1pct``, ``100pct``."""
    kind, value = parse_budget(budget)
    return f"k{value}" if kind == "parcels" else fraction_tag(value)


def sample_budget(labels: np.ndarray, budget: str | float, seed: int) -> np.ndarray:
    """The training labels of ``budget`` (nested within each kind for one seed)."""
    kind, value = parse_budget(budget)
    if kind == "parcels":
        return sample_parcels(labels, int(value), seed)
    return sample_label_fraction(labels, value, seed)


class Lever(BaseModel):
    """A variant of ``base``: its pretraining recipe with ``pretrain`` config overrides
    (more epochs, another mask ratio, ...) and/or ``finetune_epochs`` fine-tuning epochs,
    scored like the plan's methods on a part of the grid (``settings``, ``split_seeds``,
    ``budgets``; each ``None``: the plan's own list; ``budgets: []`` for a lever that only
    the probes use). Levers run after the methods; one that changes only fine-tuning
    reuses its base's encoder."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base: Literal["random"] | PretrainedMethod
    label: str
    pretrain: dict[str, Any] = {}
    finetune_epochs: int | None = Field(default=None, ge=1)
    settings: list[str] | None = None
    split_seeds: list[int] | None = None
    budgets: list[str] | None = None

    @model_validator(mode="after")
    def _changes_something(self) -> Lever:
        if self.base == "random" and self.pretrain:
            raise ValueError("a lever on random init has no pretraining to change")
        if not self.pretrain and self.finetune_epochs is None:
            raise ValueError("a lever must change pretrain or finetune_epochs")
        return self


class Cells(BaseModel):
    """Runs beyond the plan's grid, after it and in the order listed: ``methods`` x
    ``budgets`` x ``split_seeds``, fine-tuned with ``finetune_seed`` (a second seed on key
    cells) or, when it is ``None``, with the split seed (a part of the grid for some
    methods only: the compute spent where the questions are)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    methods: list[str] = Field(min_length=1)
    budgets: list[str] = Field(min_length=1)
    split_seeds: list[int] = Field(min_length=1)
    finetune_seed: int | None = None


class ProbePlan(BaseModel):
    """Frozen-feature probes (``alos2fm.evaluation.probe``) of ``encoders`` (``random``, a
    pretrained method or a lever) on the fine-tuning dataset of one cell, ``seeds`` seeds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    setting: str
    split_seed: int
    budget: str
    encoders: list[str] = Field(min_length=2)
    seeds: int = Field(10, ge=2)
    train_pixels: int = Field(20000, ge=100)
    eval_pixels: int = Field(200000, ge=100)


class StudyConfig(BaseModel):
    """The study plan (``configs/*.yaml``); sizes in pixels. ``budgets`` are label budgets
    (``parse_budget``: ``k1``, ``0.1%``, ``100%``), run in the order given."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    settings: dict[str, list[str]]  # name -> bands, e.g. {"HH": ["HH"]}
    split_seeds: list[int] = Field(min_length=1)
    budgets: list[str] = Field(min_length=1)
    methods: list[Method] = Field(min_length=1)
    levers: dict[str, Lever] = {}
    cells: list[Cells] = []
    probes: list[ProbePlan] = []
    pretrain_epochs: int = Field(ge=1)
    finetune_epochs: int = Field(ge=1)
    # The Swin fine-tuning recipe (configs/), and a budget in optimiser steps that replaces
    # finetune_epochs when set (the package's recipe: windows sampled every step).
    finetune_recipe: str = "finetune.yaml"
    finetune_steps: int | None = Field(default=None, ge=1)
    patch: int = 64
    pretrain_stride: int = 16
    train_stride: int = 32
    predict_overlap: int = 32
    split: SplitRule = SplitRule()

    @model_validator(mode="after")
    def _levers_fit_the_plan(self) -> StudyConfig:
        # every budget the plan names, so that a typo fails at load, not hours in
        lists = [self.budgets, *(c.budgets for c in self.cells)]
        lists += [lever.budgets or [] for lever in self.levers.values()]
        lists += [[probe.budget] for probe in self.probes]
        for budget in (b for budgets in lists for b in budgets):
            parse_budget(budget)
        for name, lever in self.levers.items():
            if name in PRETRAINING or name in ("random", "rf"):
                raise ValueError(f"lever {name!r} has the name of a method")
            unknown = set(lever.settings or []) - set(self.settings)
            if unknown:
                raise ValueError(f"lever {name!r}: settings {sorted(unknown)} not in the plan")
        for cells in self.cells:
            known = {"random", "rf", *CNN_RECIPES, *PRETRAINING, *self.levers}
            unknown = set(cells.methods) - known
            if unknown:
                raise ValueError(f"cells: unknown methods {sorted(unknown)}")
        for probe in self.probes:
            unknown = set(probe.encoders) - {"random", *PRETRAINING, *self.levers}
            if probe.setting not in self.settings or unknown:
                raise ValueError(f"probe of {probe.setting}: unknown encoders {sorted(unknown)}")
        return self

    def jobs(self, setting: str, bands: list[str]) -> list[tuple[int, str, str, int]]:
        """(split seed, budget, method or lever, fine-tuning seed) in run order: budget by
        budget, seed by seed, every method (an interrupted study has every method for the
        cells it finished: paired), then the extra cells, then the levers on their part."""

        def runs_here(method: str) -> bool:  # shared_avg = per_channel with one band
            return method != "sarw_simmim_shared" or len(bands) > 1

        methods = [m for m in self.methods if runs_here(m)]
        jobs = [(s, b, m, s) for b in self.budgets for s in self.split_seeds for m in methods]
        for cells in self.cells:
            jobs += [
                (s, b, m, s if cells.finetune_seed is None else cells.finetune_seed)
                for b in cells.budgets
                for s in cells.split_seeds
                for m in cells.methods
                if runs_here(m)
            ]
        levers = {n: v for n, v in self.levers.items() if setting in (v.settings or self.settings)}

        def lever_budgets(lever: Lever) -> set[str]:
            budgets = self.budgets if lever.budgets is None else lever.budgets
            return {budget_tag(b) for b in budgets}

        for budget in self.budgets:
            for seed in self.split_seeds:
                jobs += [
                    (seed, budget, name, seed)
                    for name, lever in levers.items()
                    if seed in (lever.split_seeds or self.split_seeds)
                    and budget_tag(budget) in lever_budgets(lever)
                ]
        return list(dict.fromkeys(jobs))  # a cell listed twice runs once

    def recipe(self, method: str) -> tuple[str, int]:
        """(whose encoder: ``random``, ``unet`` or a pretraining run's name, fine-tuning
        epochs)."""
        lever = self.levers.get(method)
        if lever is None:
            return method, self.finetune_epochs
        encoder = method if lever.pretrain else lever.base
        return encoder, lever.finetune_epochs or self.finetune_epochs

    def labels(self) -> dict[str, str]:
        """Display name of every method and lever, in table order."""
        return METHOD_LABELS | {name: lever.label for name, lever in self.levers.items()}


METHOD_LABELS = {
    "random": "Random init",
    "unet": "U-Net (ResNet-18, random init)",
    "simmim": "SimMIM",
    "sarw_simmim": "SAR-W-SimMIM",
    "sarw_simmim_shared": "SAR-W-SimMIM (shared_avg)",
    "mixmae": "MixMAE",
    "sarw_mixmae": "SAR-W-MixMAE",
    "rf": "Random Forest",
}


def slug(text: str) -> str:
    return text.lower().replace("+", "_")


def fraction_tag(fraction: float) -> str:
    return f"{fraction * 100:g}pct"


def budget_label(tag: str) -> str:
    """A budget's tag (``budget_tag``) as tables show it: ``1 parcel/class``, ``0.1 %``."""
    if tag.startswith("k"):
        return f"{tag[1:]} parcel{'s' if tag != 'k1' else ''}/class"
    return tag.removesuffix("pct") + " %"


def write_text(path: Path, text: str) -> None:
    """Write atomically; the temporary name is per process, as ``--setting`` processes share
    the study folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, content: object) -> None:
    write_text(path, json.dumps(content, indent=2) + "\n")


def save_prediction(path: Path, prediction: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.savez_compressed(handle, prediction=prediction)
    os.replace(tmp, path)


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- scoring ------------------------------------------------------------------------------


def score_map(prediction: np.ndarray, labels: np.ndarray, names: list[str]) -> dict:
    """Scores of a class map on the labelled pixels of ``labels`` (255 = not scored).

    Pixels the map marks as no data (255: an input band had none) are left out, for every
    method alike; they are counted in ``pixels_without_data``.
    """
    import torch

    from alos2fm.evaluation.metrics import ConfusionMatrix, segmentation_scores

    no_data = prediction == IGNORE
    target = np.where(no_data, IGNORE, labels)
    matrix = ConfusionMatrix(len(names), IGNORE)
    matrix.update(
        torch.from_numpy(np.where(no_data, 0, prediction).astype(np.int64)),
        torch.from_numpy(target.astype(np.int64)),
    )
    counts = matrix.compute()
    scores = segmentation_scores(counts, names)
    scores["confusion_matrix"] = counts.tolist()
    scores["pixels_without_data"] = int((no_data & (labels != IGNORE)).sum())
    return scores


# --- networks -----------------------------------------------------------------------------


def pretrain(cfg: StudyConfig, method: str, store: Path, run_dir: Path, bands: list[str]) -> Path:
    """The encoder of ``method`` (or lever) pretrained on ``store`` (resumed or reused)."""
    from alos2fm.train.config import merge_trees, resolve_config
    from alos2fm.train.engine import last_checkpoint
    from alos2fm.train.pretrain import ENCODER_WEIGHTS, run_pretrain

    encoder = run_dir / ENCODER_WEIGHTS
    if encoder.exists():
        return encoder
    lever = cfg.levers.get(method)
    recipe, kind, mode = PRETRAINING[lever.base if lever else method]
    overrides = {
        "model": {"in_chans": len(bands)},
        "weighting": {"kind": kind, "mode": mode},
        "schedule": {"epochs": cfg.pretrain_epochs},
    }
    if lever:
        overrides = merge_trees(overrides, lever.pretrain)
    config = resolve_config("pretrain", preset=str(HERE / "configs" / recipe), overrides=overrides)
    last = last_checkpoint(run_dir)
    if last is None and run_dir.exists():  # interrupted before its first checkpoint
        shutil.rmtree(run_dir)
    log(f"pretraining {method} on {store}")
    return run_pretrain(config, store, run_dir, resume=last is not None)


def finetune_and_predict(
    cfg: StudyConfig,
    store: Path,
    run_dir: Path,
    encoder: Path | None,
    seed: int,
    epochs: int,
    n_bands: int,
    product,
    architecture: str = "swin",
) -> np.ndarray:
    """Fine-tune on ``store`` (resuming an interrupted run) and predict the whole scene."""
    from alos2fm.evaluation.predict import load_segmenter_for_inference, predict_strips
    from alos2fm.train.config import resolve_config
    from alos2fm.train.engine import CHECKPOINTS, last_checkpoint
    from alos2fm.train.finetune import BEST, run_finetune

    best = run_dir / CHECKPOINTS / BEST
    if not (run_dir / "test" / "metrics.json").exists():
        schedule = {"epochs": epochs, "max_steps": cfg.finetune_steps}
        recipe = CNN_RECIPES.get(architecture, cfg.finetune_recipe)
        config = resolve_config(
            "finetune",
            preset=str(HERE / "configs" / recipe),
            overrides={"seed": seed, "model": {"in_chans": n_bands}, "schedule": schedule},
        )
        last = last_checkpoint(run_dir)
        if last is None and run_dir.exists():
            shutil.rmtree(run_dir)
        run_finetune(config, store, run_dir, encoder=encoder, resume=last is not None)
    model, meta = load_segmenter_for_inference(best)
    strips = predict_strips(product, model, meta, cfg.patch, cfg.predict_overlap, batch_size=32)
    return np.concatenate([classes for classes, _, _ in strips])


# --- the study ----------------------------------------------------------------------------


@dataclass
class SettingInputs:
    """What the runs of one input setting share, made when first needed: the training
    labels of each (split seed, budget), their fine-tuning datasets, pretrained encoders."""

    cfg: StudyConfig
    data: Path
    root: Path
    bands: list[str]
    splits: dict[int, Any]
    encoders: dict[str, Path] = field(default_factory=dict)
    labels: dict[tuple[int, str], np.ndarray] = field(default_factory=dict)

    def train_labels(self, seed: int, budget: str) -> np.ndarray:
        key = (seed, budget_tag(budget))
        if key not in self.labels:  # parcels: connected components per class, once
            self.labels[key] = sample_budget(self.splits[seed].labels["train"], budget, seed)
        return self.labels[key]

    def store(self, seed: int, budget: str) -> Path:
        store = self.root / "stores" / f"seed{seed}_{budget_tag(budget)}"
        if not (store / "index.parquet").exists():
            split = self.splits[seed]
            labels = {**split.labels, "train": self.train_labels(seed, budget)}
            prepare_finetuning(
                store, self.data, self.bands, labels, split.block_split, split.scored,
                self.cfg.patch, self.cfg.train_stride,
            )  # fmt: skip
        return store

    def encoder(self, name: str) -> Path:
        if name not in self.encoders:
            store = self.root / "pretrain_store"
            if not (store / "index.parquet").exists():
                prepare_pretraining(
                    store, self.data, self.bands, self.cfg.patch, self.cfg.pretrain_stride
                )
            run_dir = self.root / "pretrain" / name
            self.encoders[name] = pretrain(self.cfg, name, store, run_dir, self.bands)
        return self.encoders[name]


def run_study(
    cfg: StudyConfig, data: Path, out: Path, only: list[str] | None = None
) -> pd.DataFrame:
    """Run the plan (or only the settings named in ``only``) into ``out``; the results table."""
    unknown = set(only or []) - set(cfg.settings)
    if unknown:
        raise SystemExit(f"--setting {sorted(unknown)}: the plan has {list(cfg.settings)}")
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "config.yaml", yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))
    write_json(out / "data.json", {"data": str(data.resolve())})
    gt = read_ground_truth(data)
    splits = {seed: make_split(gt, seed, cfg.split) for seed in cfg.split_seeds}
    for seed, split in splits.items():
        table = split.pixel_counts(CLASS_NAMES)
        write_text(out / "splits" / f"seed{seed}_pixel_counts.csv", table.to_csv(index=False))
        log(f"split seed {seed} (attempt {split.attempt}):\n{table.to_string(index=False)}")

    for setting, bands in cfg.settings.items():
        if only and setting not in only:
            continue
        root = out / slug(setting)
        product = open_scene(data, bands)
        image_db = read_scene_db(product)
        inputs = SettingInputs(cfg, data, root, bands, splits)
        # The probes first: cheap, many seeds, and they decide between pretext variants.
        for plan in (p for p in cfg.probes if p.setting == setting):
            store = inputs.store(plan.split_seed, plan.budget)
            weights = {e: inputs.encoder(e) for e in plan.encoders if e != "random"}
            run_probes(plan, store, root / "probes", weights)

        features = None  # the Random Forest's, computed when first needed
        for seed, budget, method, finetune_seed in cfg.jobs(setting, bands):
            tag = f"seed{seed}_{budget_tag(budget)}"
            if finetune_seed != seed:
                tag += f"_ft{finetune_seed}"
            run_dir = root / "runs" / method / tag
            if (run_dir / "results.json").exists():
                continue
            split = splits[seed]
            train = inputs.train_labels(seed, budget)
            log(f"{setting} | {method} | {tag}")
            started = time.perf_counter()
            if method == "rf":
                if features is None:
                    features = _cached_features(root / "features.npy", image_db)
                prediction = fit_predict(features, train, seed=finetune_seed, n_jobs=-1)
                prediction[~np.isfinite(image_db).all(axis=0)] = IGNORE
            else:
                encoder, epochs = cfg.recipe(method)
                weights = None if encoder in ("random", *CNN_RECIPES) else inputs.encoder(encoder)
                prediction = finetune_and_predict(
                    cfg, inputs.store(seed, budget), run_dir, weights, finetune_seed,
                    epochs, len(bands), product,
                    architecture=method if method in CNN_RECIPES else "swin",
                )  # fmt: skip
            run_dir.mkdir(parents=True, exist_ok=True)
            save_prediction(run_dir / "prediction.npz", prediction)
            names = [CLASS_NAMES[c] for c in split.scored]
            kind, value = parse_budget(budget)
            result = {
                "setting": setting,
                "bands": bands,
                "method": method,
                "split_seed": seed,
                "finetune_seed": finetune_seed,
                "budget": budget_tag(budget),
                "fraction": value if kind == "fraction" else None,
                "parcels_per_class": int(value) if kind == "parcels" else None,
                "train_pixels": int((train != IGNORE).sum()),
                "seconds": round(time.perf_counter() - started, 1),
                "test": score_map(prediction, split.labels["test"], names),
                "val": score_map(prediction, split.labels["val"], names),
                "val_curve": validation_curve(run_dir),
            }
            write_json(run_dir / "results.json", result)
            # Scored and mapped: the checkpoints are not needed any more.
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            log(f"  test mIoU {result['test']['miou']:.4f}  OA "
                f"{result['test']['overall_accuracy']:.4f}")  # fmt: skip
    return collect(out)


def validation_curve(run_dir: Path) -> list[list[float]]:
    """(step, validation mIoU) of a fine-tuning run from its CSV log ([] for the RF): the
    evidence that its budget reached a plateau."""
    path = run_dir / "logs" / "metrics.csv"
    if not path.exists():
        return []
    log_table = pd.read_csv(path)
    if "val/miou" not in log_table:
        return []
    curve = log_table.dropna(subset=["val/miou"]).drop_duplicates("step", keep="last")
    return curve[["step", "val/miou"]].astype(float).values.tolist()


def run_probes(plan: ProbePlan, store: Path, folder: Path, weights: dict[str, Path]) -> None:
    """The probes of ``plan`` on ``store`` into ``folder/seed<S>_<budget>/probe.json``
    (skipped when it exists): every encoder's rows and the paired comparison with the
    first encoder."""
    from alos2fm.evaluation.probe import ProbeSettings, compare_encoders, run_probe

    path = folder / f"seed{plan.split_seed}_{budget_tag(plan.budget)}" / "probe.json"
    if path.exists():
        return
    log(f"probes {plan.encoders} on {store.name} ({plan.seeds} seeds)")
    # Rows are named by the encoder's folder: pretrain/<method or lever>, or ``random``
    # (the architecture of the first pretrained encoder, drawn anew per seed).
    sources = [weights.get(name, "random") for name in plan.encoders]
    settings = ProbeSettings(
        seeds=plan.seeds, train_pixels=plan.train_pixels, eval_pixels=plan.eval_pixels
    )
    rows = run_probe(store, sources, settings)
    summary = {split: compare_encoders(rows, split) for split in settings.splits}
    write_json(path, {"plan": plan.model_dump(), "runs": rows, **summary})


def _cached_features(path: Path, image_db: np.ndarray) -> np.ndarray:
    if path.exists():
        return np.load(path)
    features = local_statistics(image_db)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        np.save(handle, features)
    os.replace(tmp, path)
    return features


def collect(out: Path) -> pd.DataFrame:
    """Every run's ``results.json`` as one row; written to results.csv and results.json."""
    rows = []
    for path in sorted(out.glob("*/runs/*/*/results.json")):
        result = json.loads(path.read_text())
        row = {k: result[k] for k in ("setting", "method", "split_seed", "fraction")}
        # First-edition runs (fractions only, fine-tuning seed = split seed).
        row["budget"] = result.get("budget") or fraction_tag(result["fraction"])
        row["finetune_seed"] = result.get("finetune_seed", result["split_seed"])
        row |= {"train_pixels": result["train_pixels"], "seconds": result["seconds"]}
        for split in ("test", "val"):
            scores = result[split]
            row |= {
                f"{split}_miou": scores["miou"],
                f"{split}_oa": scores["overall_accuracy"],
                f"{split}_macc": scores["mean_accuracy"],
            }
        row |= {f"iou_{n}": v["iou"] for n, v in result["test"]["per_class"].items()}
        rows.append(row)
    table = pd.DataFrame(rows)
    write_text(out / "results.csv", table.to_csv(index=False))
    write_json(out / "results.json", rows)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="study folder (resumable)")
    parser.add_argument("--quick", action="store_true", help="run configs/quick.yaml")
    parser.add_argument("--config", type=Path, help="another study plan (YAML) to run")
    shared = Path(os.environ.get("ALOS2FM_SHARED_DATA", REPO.parent / "shared" / "data"))
    parser.add_argument(
        "--setting",
        action="append",
        help="run only this input setting of the plan (repeatable); one process per setting "
        "shares the work between cores or machines, into the same --out",
    )
    parser.add_argument(
        "--data", type=Path, default=shared / "flevoland_airsar_lband_t3", help="scene folder"
    )
    args = parser.parse_args()
    plan = args.config or HERE / "configs" / ("quick.yaml" if args.quick else "full.yaml")
    cfg = StudyConfig.model_validate(yaml.safe_load(plan.read_text()))
    # The scene is checked before anything is written: a user without it gets the files it
    # needs and where they come from, and no empty study folder.
    settings = args.setting or list(cfg.settings)
    bands = sorted({band for name in settings for band in cfg.settings.get(name, [])})
    problem = missing_scene(args.data, bands)
    if problem:
        raise SystemExit(f"run.py: {problem}")
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    started = time.perf_counter()
    from alos2fm.train.checkpointing import Preempted

    try:
        table = run_study(cfg, args.data, args.out, args.setting)
    except Preempted as stop:  # SIGTERM/SIGUSR1: the run in progress is saved
        # its own hint names --resume, a finetune flag: the study's resume is a re-run
        log(f"{stop.path}: {stop.problem}; run the same command again to resume the study")
        raise SystemExit(stop.exit_code) from None
    log(f"{len(table)} runs in {args.out} ({(time.perf_counter() - started) / 60:.1f} min)")


if __name__ == "__main__":
    main()
