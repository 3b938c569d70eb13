"""The Lightning Trainer shared by pretraining and fine-tuning.

One function, :func:`build_trainer`, turns a :class:`TrainerConfig` into a Trainer with
the run folder's conventions::

    RUN/config.yaml                  resolved configuration (written by the stage)
    RUN/checkpoints/epoch0010.ckpt   every ``checkpoint_every_n_epochs`` epochs
    RUN/checkpoints/last.ckpt        the latest: every few minutes/steps, at checkpoint epochs,
                                     on SIGTERM/SIGUSR1 and at the end; ``--resume`` continues it
    RUN/checkpoints/best.ckpt        fine-tuning: best validation mIoU
    RUN/logs/metrics.csv             CSV log (appended to on resume)
    RUN/tensorboard/                 TensorBoard events

Hardware: ``accelerator`` (cpu, gpu, auto), ``devices``, ``num_nodes``, ``strategy``
(``auto``, ``ddp``, ``ddp_spawn``, ``fsdp`` for models too large to replicate) and
``precision`` (``32-true``, ``bf16-mixed``, ``16-mixed``) go to Lightning unchanged.
Lightning detects the launcher from the environment, so the same command runs::

    # one machine, 8 GPUs (Lightning starts the processes itself)
    alos2fm pretrain ... --devices 8 --strategy ddp
    # torchrun, 2 nodes x 8 GPUs (run on every node)
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
        -m alos2fm pretrain ... --devices 8 --num-nodes 2 --strategy ddp
    # SLURM: #SBATCH --nodes=2 --ntasks-per-node=8 --gpus-per-node=8, then
    srun alos2fm pretrain ... --devices 8 --num-nodes 2 --strategy ddp
    # two CPU processes (gloo), e.g. to check a multi-process run without GPUs
    alos2fm pretrain ... --accelerator cpu --devices 2 --strategy ddp_spawn

Exact resume: Lightning's ``ckpt_path="last"`` restores weights, optimiser, LR scheduler
and loop counters. The remaining randomness is made a function of the position in
training instead of hidden state: the data order is seeded by (seed, epoch) (see
``alos2fm.train.data``), and :class:`StepSeeder` reseeds Python, NumPy and torch before
every training batch from (seed, epoch, batch index, rank), which covers masks, flips
and drop path. A resumed run therefore draws the same numbers as an uninterrupted one,
also from a checkpoint taken mid-epoch (the training loader's position is checkpointed:
see ``alos2fm.train.checkpointing``, which also handles preemption signals).

Threads: ``trainer.threads`` (a number, or ``auto``: see ``alos2fm.threads``) is resolved
once for this node by :func:`resolve_run_threads`, recorded in ``config.yaml`` and set in
every training process (:class:`ThreadCount`; ``ddp_spawn`` starts fresh ones).

A training loss that is NaN or infinite stops the run (:class:`NonFiniteLoss`) before
its backward pass, with an ``Alos2fmError`` (one line, exit 2 in the CLI): a run that
trained on NaN would otherwise finish, exit 0 and report meaningless scores.
"""

from __future__ import annotations

import csv
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

import lightning as L
import numpy as np
import torch
from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from alos2fm.errors import Alos2fmError
from alos2fm.models.speed import SpeedOptions
from alos2fm.threads import apply_threads, resolve_threads
from alos2fm.train.checkpointing import (
    AtomicCheckpointIO,
    LastCheckpoint,
    RestoreLoaderPosition,
)
from alos2fm.train.config import FinetuneConfig, PretrainConfig, TrainerConfig
from alos2fm.train.progress import progress_bars

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"


def step_seed(seed: int, epoch: int, batch_idx: int, rank: int) -> int:
    """A 63-bit seed that depends only on the run seed and the position in training."""
    state = np.random.SeedSequence([seed, epoch, batch_idx, rank]).generate_state(2, np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


class StepSeeder(Callback):
    """Reseed every RNG before each training batch, so that resuming replays exactly."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer: L.Trainer, pl_module, batch, batch_idx: int) -> None:
        value = step_seed(self.seed, trainer.current_epoch, batch_idx, trainer.global_rank)
        random.seed(value)
        np.random.seed(value % 2**32)
        torch.manual_seed(value)


class NonFiniteLoss(Callback):
    """Stop training with an ``Alos2fmError`` when the training loss is NaN or infinite.

    Checked before the backward pass, so the weights (and the checkpoints written from
    them) never take a NaN gradient step. Under DDP the decision is shared (any rank's bad
    loss stops all ranks together, none waits forever in a collective).
    """

    def __init__(self, run_dir: str | Path | None = None):
        self.run_dir = Path(run_dir) if run_dir is not None else None

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        bad = not bool(torch.isfinite(loss.detach()).all())
        if trainer.world_size > 1:
            bad = trainer.strategy.reduce_boolean_decision(bad, all=False)
        if not bad:
            return
        value = float(loss.detach().float().flatten()[0]) if loss.numel() else float("nan")
        raise Alos2fmError(
            f"training stopped: the loss is {value} at step {trainer.global_step} "
            f"(epoch {trainer.current_epoch})",
            self.run_dir,
            "the patches or stats.json hold values that are not backscatter (check the "
            "products with --nodata), or training diverged (lower the learning rate, use "
            "--precision 32)",
        )


def local_processes(cfg: TrainerConfig) -> int:
    """Training processes on this node: torchrun's ``LOCAL_WORLD_SIZE``, else the devices
    Lightning starts here (``auto``: every GPU on a GPU machine, one process on CPU)."""
    launched = os.environ.get("LOCAL_WORLD_SIZE", "")
    if launched.isdigit():
        return max(1, int(launched))
    devices = str(cfg.devices).strip()
    if devices.isdigit():
        return max(1, int(devices))
    if "," in devices:  # a list of device ids
        return max(1, len([d for d in devices.split(",") if d.strip()]))
    if devices in ("auto", "-1") and cfg.accelerator != "cpu":
        return max(1, torch.cuda.device_count())
    return 1


StageConfig = TypeVar("StageConfig", PretrainConfig, FinetuneConfig)


def resolve_run_threads(cfg: StageConfig) -> StageConfig:
    """``cfg`` with ``trainer.threads`` resolved to a number for this node: the cores
    shared among its training processes, one core left to each DataLoader worker."""
    threads = resolve_threads(
        cfg.trainer.threads, local_processes(cfg.trainer), cfg.data.num_workers
    )
    trainer = cfg.trainer.model_copy(update={"threads": threads})
    return cfg.model_copy(update={"trainer": trainer})


class ThreadCount(Callback):
    """Set torch's thread count in every training process at setup (``ddp_spawn`` starts
    processes that do not inherit the count of the one that launched them)."""

    def __init__(self, threads: int):
        self.threads = threads

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        apply_threads(self.threads)


def seed_run(seed: int) -> None:
    """Seed every RNG before the model is built, so that its initial weights are the seed's."""
    L.seed_everything(seed, workers=True, verbose=False)


def last_checkpoint(run_dir: str | Path) -> Path | None:
    """``RUN/checkpoints/last.ckpt`` if a previous run left one."""
    path = Path(run_dir) / CHECKPOINTS / LAST
    return path if path.is_file() else None


# Lightning's own chatter: hardware summary, tips for its paid services, deprecation
# notices of its internals, checkpoint-folder notices that --resume makes expected.
_THIRD_PARTY_NOISE = (
    r".*isinstance\(treespec, LeafSpec\).*",
    r".*`weights_only` was not set.*",
    r".*Checkpoint directory .* exists and is not empty.*",
    r".*You passed in a `val_dataloader` but have no `validation_step`.*",
    r".*does not have many workers which may be a bottleneck.*",
    # Logging counts optimiser steps across epochs; with step budgets on a small dataset
    # an epoch is shorter than the interval and Lightning's advice does not apply.
    r".*is smaller than the logging interval.*",
)


def quiet_third_party() -> None:
    """Keep the console ours: Lightning's info messages and the warnings above are not
    shown (its own warnings and errors still are)."""
    import warnings

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for message in _THIRD_PARTY_NOISE:
        warnings.filterwarnings("ignore", message=message)


def build_trainer(
    cfg: TrainerConfig,
    run_dir: str | Path,
    max_epochs: int,
    seed: int,
    monitor: str | None = None,
    callbacks: Sequence[Callback] = (),
    max_steps: int | None = None,
) -> L.Trainer:
    """A Trainer writing checkpoints and logs into ``run_dir``; ``seed`` keys the per-step RNG.

    ``monitor`` (e.g. ``"val/miou"``) adds ``best.ckpt`` for the highest value of that
    logged metric. ``use_distributed_sampler`` is off: the data module brings samplers that
    are exact under DDP (see ``alos2fm.train.data``). ``max_steps`` makes the budget a
    number of optimiser steps (``max_epochs`` is then ignored); ``cfg.val_every_n_steps``
    validates on a step interval, across epoch boundaries.
    """
    quiet_third_party()
    run_dir = Path(run_dir)
    checkpoint_dir = run_dir / CHECKPOINTS
    all_callbacks: list[Callback] = [
        ModelCheckpoint(
            dirpath=checkpoint_dir,
            filename="epoch{epoch:04d}",
            auto_insert_metric_name=False,
            every_n_epochs=cfg.checkpoint_every_n_epochs,
            save_top_k=-1,
            save_last=True,
        ),
        LearningRateMonitor(logging_interval="step"),
        StepSeeder(seed),
        LastCheckpoint(
            checkpoint_dir / LAST,
            every_n_steps=cfg.last_checkpoint_every_n_steps,
            every_n_minutes=cfg.last_checkpoint_every_n_minutes,
        ),
        RestoreLoaderPosition(),
        SpeedOptions(cfg.fused_attention, cfg.compile),
        ThreadCount(resolve_threads(cfg.threads, local_processes(cfg))),
        NonFiniteLoss(run_dir),
        *(progress_bars() if cfg.progress_bar else []),
        *callbacks,
    ]
    if monitor is not None:
        all_callbacks.append(
            ModelCheckpoint(
                dirpath=checkpoint_dir, filename="best", monitor=monitor, mode="max", save_top_k=1
            )
        )
    loggers = [
        _AppendingCSVLogger(run_dir, name="logs", version=""),
        TensorBoardLogger(run_dir, name="tensorboard", version="", default_hp_metric=False),
    ]
    precision = "32-true" if cfg.precision == "32" else cfg.precision
    return L.Trainer(
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=precision,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        gradient_clip_val=cfg.gradient_clip_val,
        max_epochs=-1 if max_steps is not None else max_epochs,
        max_steps=max_steps if max_steps is not None else -1,
        val_check_interval=cfg.val_every_n_steps,
        check_val_every_n_epoch=None if cfg.val_every_n_steps else 1,
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches,
        log_every_n_steps=cfg.log_every_n_steps,
        deterministic=cfg.deterministic,
        callbacks=all_callbacks,
        logger=loggers,
        default_root_dir=run_dir,
        use_distributed_sampler=False,
        enable_model_summary=False,
        enable_progress_bar=cfg.progress_bar,
        plugins=[AtomicCheckpointIO()],
    )


def effective_batch(trainer: L.Trainer, batch_size: int) -> int:
    """Images per optimiser step over all processes: batch x world size x accumulation."""
    return batch_size * trainer.world_size * trainer.accumulate_grad_batches


def steps_per_epoch(trainer: L.Trainer) -> int:
    """Optimiser steps in one epoch, as Lightning will run them (limits and accumulation);
    0 for a step budget (its schedule does not need it)."""
    if trainer.max_epochs is None or trainer.max_epochs < 1:
        return 0
    return max(1, int(trainer.estimated_stepping_batches) // max(1, trainer.max_epochs))


class _AppendingWriter(ExperimentWriter):
    """Lightning's CSV writer deletes an existing metrics.csv; a resumed run appends to it.

    The existing header is adopted so that new rows line up with the old columns.
    """

    def _check_log_dir_exists(self) -> None:
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = next(csv.reader(file), [])


class _AppendingCSVLogger(CSVLogger):
    """``CSVLogger`` whose log covers the whole run across ``--resume`` (and so its curves)."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = _AppendingWriter(log_dir=self.log_dir)
        return self._experiment
