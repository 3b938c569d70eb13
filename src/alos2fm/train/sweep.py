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

from alos2fm.atomic import atomic_path
from alos2fm.identity import check_same
from alos2fm.outputs import claim_folder, read_manifest
from alos2fm.train.config import FinetuneConfig, merge_trees
from alos2fm.train.finetune import run_finetune
from alos2fm.train.run_folder import run_identity

SUMMARY = "sweep.json"
FIGURE = "sweep.png"


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
    allow_partial_encoder: bool = False,
) -> SweepResult:
    """Fine-tune once per ``base_lr`` in ``rates`` (otherwise ``cfg``) into ``out/lr_<r>``.

    A finished run is reused only if it was made from the same dataset, encoder and
    settings (its recorded identity); an interrupted one is resumed under the same check.
    """
    with claim_folder(
        out,
        "lr-sweep",
        outputs=[SUMMARY, FIGURE, *(_run_name(rate) for rate in rates)],
        inputs=[data, encoder],
        rerun="replace",  # its runs are reused or refused one by one, by identity
    ) as folder:
        scores = []
        for rate in rates:
            run = folder.path(_run_name(rate))
            candidate = FinetuneConfig.model_validate(
                merge_trees(cfg.model_dump(mode="json"), {"optim": {"base_lr": rate}})
            )
            if (run / "test" / "metrics.json").exists():
                identity = run_identity("finetune", candidate, data, encoder)
                manifest = read_manifest(run)
                recorded = manifest.identity if manifest is not None else None
                check_same(recorded, identity, f"the finished run {run.name}", run)
            else:
                resume = (run / "checkpoints" / "last.ckpt").exists()
                partial = allow_partial_encoder
                run_finetune(candidate, data, run, encoder, resume, allow_partial_encoder=partial)
            scores.append(best_validation_miou(run))
        scored = [(s, r) for r, s in zip(rates, scores, strict=True) if s == s]
        best = max(scored)[1] if scored else float("nan")  # NaN: a run that never validated
        summary = out / SUMMARY
        record = {
            "encoder": str(encoder) if encoder else "random",
            "rates": list(rates),
            "best_val_miou": scores,
            "best_rate": best,
        }
        with atomic_path(summary) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
        label = "random init" if encoder is None else Path(encoder).parent.name
        _plot(list(rates), scores, best, out / FIGURE, label)
        return SweepResult(list(rates), scores, best, summary)


def _run_name(rate: float) -> str:
    return f"lr_{rate:g}"


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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
