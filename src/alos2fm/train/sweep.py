"""``alos2fm lr-sweep``: choose the fine-tuning learning rate on validation, per
initialisation.

A rate that suits a random encoder rewrites a pretrained one, and a sweep run at a
starved budget picks the rate that learns fastest, not the one that ends best. So the
sweep runs each candidate ``base_lr`` with the encoder it is for, at the step budget of
the real run, and keeps the one with the best validation mIoU (the checkpoint selection
the real run makes). Every candidate is an ordinary fine-tuning run folder, resumable
and inspectable; ``sweep.json`` and ``sweep.png`` summarise them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from alos2fm.train.config import FinetuneConfig, merge_trees
from alos2fm.train.finetune import run_finetune


@dataclass(frozen=True)
class SweepResult:
    rates: list[float]
    best_val_miou: list[float]
    best_rate: float
    summary: Path


def best_validation_miou(run: Path) -> float:
    """The highest ``val/miou`` a run logged (what its best.ckpt holds)."""
    metrics = pd.read_csv(run / "logs" / "metrics.csv")
    if "val/miou" not in metrics:
        return float("nan")
    return float(metrics["val/miou"].max())


def run_lr_sweep(
    cfg: FinetuneConfig,
    data: Path,
    out: Path,
    rates: Sequence[float],
    encoder: Path | None = None,
) -> SweepResult:
    """Fine-tune once per ``base_lr`` in ``rates`` (otherwise ``cfg``) into ``out/lr_<r>``."""
    scores = []
    for rate in rates:
        run = out / f"lr_{rate:g}"
        candidate = FinetuneConfig.model_validate(
            merge_trees(cfg.model_dump(mode="json"), {"optim": {"base_lr": rate}})
        )
        if not (run / "test" / "metrics.json").exists():
            resume = (run / "checkpoints" / "last.ckpt").exists()
            run_finetune(candidate, data, run, encoder=encoder, resume=resume)
        scores.append(best_validation_miou(run))
    scored = [(score, rate) for rate, score in zip(rates, scores, strict=True) if score == score]
    best = max(scored)[1] if scored else float("nan")  # NaN: a run that never validated
    summary = out / "sweep.json"
    summary.write_text(
        json.dumps(
            {
                "encoder": str(encoder) if encoder else "random",
                "rates": list(rates),
                "best_val_miou": scores,
                "best_rate": best,
            },
            indent=2,
        )
        + "\n"
    )
    label = "random init" if encoder is None else Path(encoder).parent.name
    _plot(list(rates), scores, best, out / "sweep.png", label)
    return SweepResult(list(rates), scores, best, summary)


def _plot(rates: list[float], scores: list[float], best: float, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(rates, scores, "o-", label=label)
    ax.axvline(best, color="grey", linestyle=":", label=f"best {best:g}")
    ax.set_xscale("log")
    ax.set_xlabel("base learning rate")
    ax.set_ylabel("best validation mIoU")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
