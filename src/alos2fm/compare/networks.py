"""A network arm's run: ``alos2fm finetune`` on the job's label budget, as a user runs it.

The job's config is a resolved fine-tuning config (preset, the plan's overrides, the
step budget, the candidate or chosen rate, the label budget, the seed). The run folder is
an ordinary fine-tuning run (``run/``): resumable, with its checkpoints, curves and test
report. The row adds what the comparison needs: the best validation mIoU (model
selection), the test scores of that checkpoint, and the plateau gain of its validation
curve (did the step budget converge?).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alos2fm.compare.jobs import Job, save_preview
from alos2fm.evaluation.statistics import plateau_gain

RUN = "run"


def train_network(job: Job) -> dict[str, Any]:
    from alos2fm.train.config import FinetuneConfig
    from alos2fm.train.finetune import run_finetune

    cfg = FinetuneConfig.model_validate(job.config)
    run = job.folder / RUN
    resume = (run / "checkpoints" / "last.ckpt").is_file()
    best = run_finetune(cfg, job.data, run, job.encoder, resume)
    steps, val = validation_curve(run)
    test = json.loads((run / "test" / "metrics.json").read_text())
    if job.preview:
        save_preview(job.folder, job.preview, _predict_patches(best, job.data, job.preview))
    return {
        **labels_kept(run / "budget.csv"),
        "val_miou": float(np.nanmax(val)) if len(val) else float("nan"),
        "plateau_gain": plateau_gain(steps, val),
        "steps": int(steps[-1]) if len(steps) else 0,
    } | test_columns(test)


def labels_kept(summary: Path | pd.DataFrame | None) -> dict[str, float]:
    """Labelled training pixels and parcels a budget kept, from its per-class summary
    (``alos2fm.data.budget``; NaN without one: every label was kept)."""
    if isinstance(summary, Path):
        summary = pd.read_csv(summary) if summary.is_file() else None
    if summary is None:
        return {"labelled_pixels": float("nan"), "parcels": float("nan")}
    parcels = pd.to_numeric(summary["parcels_kept"], errors="coerce")
    return {
        "labelled_pixels": float(summary["pixels_kept"].sum()),
        "parcels": float(parcels.sum()) if parcels.notna().any() else float("nan"),
    }


def validation_curve(run: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, validation mIoU) of a fine-tuning run, from its metrics log."""
    metrics = pd.read_csv(run / "logs" / "metrics.csv")
    if "val/miou" not in metrics:
        return np.array([]), np.array([])
    curve = metrics.dropna(subset=["val/miou"])
    return curve["step"].to_numpy(dtype=float), curve["val/miou"].to_numpy(dtype=float)


def test_columns(scores: dict[str, Any]) -> dict[str, Any]:
    """A result row's test columns: mIoU, overall accuracy and the IoU of each class."""
    row = {"test_miou": scores["miou"], "test_oa": scores["overall_accuracy"]}
    for name, values in scores["per_class"].items():
        row[f"iou[{name}]"] = values["iou"]
    return row


def _predict_patches(checkpoint: Path, data: Path, positions: tuple[int, ...]) -> list[np.ndarray]:
    import torch

    from alos2fm.data.dataset import PatchDataset
    from alos2fm.train.finetune import load_finetuned

    module = load_finetuned(checkpoint).eval()
    dataset = PatchDataset(data, split=None, with_labels=False)
    out = []
    with torch.inference_mode():
        for position in positions:
            item = dataset[int(position)]
            logits = module.evaluation_logits(item["image"][None], item["valid"][None])
            out.append(logits.argmax(dim=1)[0].numpy())
    return out
