"""Feeding a patch store to Lightning: normalisation, label fractions, samplers.

Randomness is keyed, not stateful, so that ``--resume`` replays exactly what an
uninterrupted run would have done:

- the training order is a ``DistributedSampler`` permutation seeded by (seed, epoch), the
  same for any number of processes (rank r takes every world-th index of it);
- windows and transforms are drawn in the training step (``alos2fm.train.augment``)
  from the global RNG, which :class:`alos2fm.train.engine.StepSeeder` reseeds from
  (seed, epoch, batch, rank) before every step.

Evaluation loaders use ``UnpaddedDistributedSampler`` so that no patch is scored twice
under DDP; the Trainer is built with ``use_distributed_sampler=False`` so that Lightning
does not replace these samplers.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pandas as pd
import torch
from torch import Tensor
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from alos2fm.atomic import atomic_path
from alos2fm.data.budget import LabelBudget
from alos2fm.data.store import read_stats
from alos2fm.errors import DataError
from alos2fm.train.checkpointing import ResumableLoader, ResumableSampler
from alos2fm.train.config import DataConfig

# The paper's normalisation of ALOS-2 HH sigma0 in dB (SPEC.md section 1).
PAPER_HH_MEAN_DB = -10.4327
PAPER_HH_STD_DB = 5.8041

# What a run with a label budget writes at its root: the labels kept, per class.
BUDGET_CSV = "budget.csv"

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Normalisation:
    """Per-band standardisation of dB backscatter: ``(dB - mean) / std``."""

    bands: tuple[str, ...]
    mean_db: tuple[float, ...]
    std_db: tuple[float, ...]

    def __call__(self, image_db: Tensor, valid: Tensor | None = None) -> Tensor:
        """(B, C, H, W) dB -> (B, C, H, W) standardised (unitless).

        Pixels where ``valid`` (B, H, W) is False become 0, the band mean: the one no-data
        rule of training, evaluation and ``alos2fm predict`` whatever the normalisation
        (the dataset's own fill, its stats mean in dB, is not 0 under another's statistics).
        """
        mean = image_db.new_tensor(self.mean_db).view(1, -1, 1, 1)
        std = image_db.new_tensor(self.std_db).view(1, -1, 1, 1)
        standardised = (image_db - mean) / std
        return standardised if valid is None else standardised.masked_fill(~valid[:, None], 0.0)

    def to_db(self, standardised: Tensor) -> Tensor:
        """(B, C, H, W) standardised -> dB: the inverse of the standardisation."""
        mean = standardised.new_tensor(self.mean_db).view(1, -1, 1, 1)
        std = standardised.new_tensor(self.std_db).view(1, -1, 1, 1)
        return standardised * std + mean

    def as_dict(self) -> dict[str, Any]:
        return {"bands": list(self.bands), "mean": list(self.mean_db), "std": list(self.std_db)}


def dataset_record(root: str | Path) -> dict[str, str]:
    """Which patch store a model was trained on (its folder's name, id and fingerprint;
    ``alos2fm.identity``), for checkpoints and model cards. Never a local path: cards
    are published."""
    from alos2fm.identity import dataset_identity

    return dataset_identity(root)


def dataset_normalisation(root: str | Path, kind: str = "stats") -> Normalisation:
    """The dataset's band statistics (``stats``) or the paper's HH constants (``paper``)."""
    stats = read_stats(root)
    bands = tuple(stats["bands"])
    if kind in ("stats", "encoder"):  # "encoder": fine-tuning swaps in the encoder's own
        return Normalisation(bands, tuple(stats["mean_db"]), tuple(stats["std_db"]))
    if len(bands) != 1:
        raise DataError(
            f"the paper's normalisation is for one HH band; this dataset has {list(bands)}",
            Path(root),
            "use data.normalisation=stats",
        )
    return Normalisation(bands, (PAPER_HH_MEAN_DB,), (PAPER_HH_STD_DB,))


class PatchDataModule(L.LightningDataModule):
    """Train/val/test loaders over a patch store (``alos2fm.data.dataset.PatchDataset``).

    ``splits`` limits the splits read (pretraining needs only ``train``); ``with_labels``
    False skips reading label arrays; ``test_split`` is the split that ``trainer.test``
    scores (``alos2fm evaluate --split val`` scores the validation split).

    With ``cfg.label_budget`` the training split keeps only the budget's labels
    (``alos2fm.data.budget``, drawn with ``seed``); its per-class summary is logged once
    and, given a ``run_dir``, written there as ``budget.csv``.
    """

    def __init__(
        self,
        root: str | Path,
        cfg: DataConfig,
        seed: int = 0,
        with_labels: bool = True,
        splits: tuple[str, ...] = ("train", "val", "test"),
        test_split: str = "test",
        run_dir: str | Path | None = None,
    ):
        super().__init__()
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.splits = splits
        self.test_split = test_split
        self.root = Path(root)
        self.cfg = cfg
        self.seed = seed
        self.with_labels = with_labels
        self.normalisation = dataset_normalisation(self.root, cfg.normalisation)
        self.stats = read_stats(self.root)
        self.datasets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        from alos2fm.data.dataset import PatchDataset

        wanted = {"fit": ("train", "val"), "validate": ("val",), "test": (self.test_split,)}
        for split in wanted.get(stage or "fit", self.splits):
            if split in self.datasets or split not in self.splits:
                continue
            fraction = self.cfg.label_fraction if split == "train" else None
            text = self.cfg.label_budget if split == "train" else None
            budget = LabelBudget.parse(text) if text is not None else None
            dataset = PatchDataset(
                self.root,
                split=split,
                with_labels=self.with_labels,
                label_fraction=fraction if fraction != 1.0 else None,
                seed=self.seed,
                label_budget=budget,
                budget_seed=self.seed,
                min_parcel_pixels=self.cfg.min_parcel_pixels,
            )
            if len(dataset) == 0:
                raise DataError(f"the {split} split has no patches", self.root)
            if dataset.budget is not None and self._world()[1] == 0:
                self._report_budget(budget, dataset.budget.summary, len(dataset))
            self.datasets[split] = dataset

    def _report_budget(self, budget: LabelBudget, summary: pd.DataFrame, patches: int) -> None:
        """Log what the label budget kept; write it as ``run_dir/budget.csv`` if given."""
        kept = summary[summary["pixels_kept"] > 0]
        log.info(
            "label budget %s (seed %d): %d training patches keep labels; %s",
            budget.tag,
            self.seed,
            patches,
            "; ".join(
                f"{row.name}: {_parcels(row.parcels_kept)}{row.pixels_kept} of "
                f"{row.pixels_available} px"
                for row in kept.itertuples()
            ),
        )
        if self.run_dir is not None:
            with atomic_path(self.run_dir / BUDGET_CSV) as tmp:
                summary.to_csv(tmp, index=False)

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def _loader(self, dataset: Dataset, sampler: Any, drop_last: bool) -> DataLoader:
        # The training loader's position is checkpointed, for an exact mid-epoch resume.
        loader = ResumableLoader if isinstance(sampler, ResumableSampler) else DataLoader
        return loader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            drop_last=drop_last,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        dataset = self.datasets["train"]
        world, rank = self._world()
        batch = self.cfg.batch_size * world
        if len(dataset) < batch:
            # A window is drawn from each patch every step, so a patch can serve several
            # samples of one batch: a tiny dataset trains (a smoke test, not a model).
            times = -(-batch // len(dataset))
            log.warning(
                "%s: only %d training patches for a global batch of %d; each epoch goes "
                "over them %d times (prepare more patches for a model worth keeping)",
                self.root,
                len(dataset),
                batch,
                times,
            )
            dataset = ConcatDataset([dataset] * times)
        # Same permutation for any world size (seeded by seed + epoch; Lightning calls
        # set_epoch); dropping the last partial batch keeps every step's batch full.
        sampler = ResumableSampler(
            dataset, num_replicas=world, rank=rank, shuffle=True, seed=self.seed, drop_last=True
        )
        return self._loader(dataset, sampler, drop_last=True)

    def _eval_loader(self, split: str) -> DataLoader:
        from alos2fm.evaluation.metrics import UnpaddedDistributedSampler

        world, rank = self._world()
        sampler = UnpaddedDistributedSampler(self.datasets[split], num_replicas=world, rank=rank)
        return self._loader(self.datasets[split], sampler, drop_last=False)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader(self.test_split)


def _parcels(count: Any) -> str:
    """``"2 parcels, "`` for a parcel budget; nothing for a fraction (<NA>)."""
    return "" if pd.isna(count) else f"{count} parcel{'s' if count != 1 else ''}, "
