"""Long runs that survive preemption: ``last.ckpt`` on an interval, signals, exact resume.

On a cluster an epoch of a national dataset takes hours and jobs are preempted or killed.
Three pieces make any interruption cost at most one interval:

- :class:`LastCheckpoint` rewrites ``RUN/checkpoints/last.ckpt`` every
  ``last_checkpoint_every_n_minutes`` (wall clock) and/or ``last_checkpoint_every_n_steps``
  optimiser steps, independently of the kept ``epochNNNN.ckpt`` files. On SIGTERM or
  SIGUSR1 (what SLURM sends before preemption or the time limit, ``--signal=USR1@120``)
  it saves at the end of the current step and stops with :class:`Preempted`, which the
  CLI reports in one line with exit code 128 + the signal number; running the same
  command with ``--resume`` continues.
- :class:`AtomicCheckpointIO` writes every checkpoint atomically, so that a SIGKILL during
  a save leaves the previous ``last.ckpt`` intact.
- :class:`ResumableLoader` is checkpointed with the loops (Lightning saves any loader with
  ``state_dict``): resuming mid-epoch continues that epoch's order where it stopped,
  instead of starting the epoch over. With the per-step seeding of
  :class:`alos2fm.train.engine.StepSeeder`, a resumed run ends with the same weights as
  an uninterrupted one.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from torch.utils.data import DataLoader, DistributedSampler

from alos2fm.atomic import atomic_path
from alos2fm.errors import Alos2fmError

PREEMPTION_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(Alos2fmError):
    """Training stopped on a signal after saving ``last.ckpt``; ``--resume`` continues it."""

    def __init__(self, signum: int, step: int, checkpoint: Path):
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} after step {step}; the run is saved",
            checkpoint,
            "run the same command with --resume to continue",
        )
        self.exit_code = 128 + signum  # what a shell reports for a signal: not a success


class AtomicCheckpointIO(TorchCheckpointIO):
    """``torch.save`` to a temporary sibling, then rename: never a half-written checkpoint.

    (Lightning's own writer stages the file in the system temporary folder, from which the
    final move is a copy when that folder is on another file system.)
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if storage_options is not None:
            raise TypeError("storage_options are not supported")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


class LastCheckpoint(Callback):
    """Refresh ``path`` on a time and/or step interval, and save and stop on a signal.

    Checks run after each optimiser step (not inside gradient accumulation, whose partial
    sums a checkpoint does not hold). Under several processes the decision is combined
    across them (any process due or signalled), so that all save and stop together.
    """

    def __init__(self, path: Path, every_n_steps: int | None, every_n_minutes: float | None):
        self.path = Path(path)
        self.every_n_steps = every_n_steps
        self.every_s = every_n_minutes * 60 if every_n_minutes is not None else None
        self._received: int | None = None
        self._saved_at = time.monotonic()
        self._saved_step = -1
        self._previous: dict[int, Any] = {}

    # --- signals ---------------------------------------------------------------------------

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._saved_at = time.monotonic()
        self._saved_step = trainer.global_step
        self._received = None
        # Lightning's own SIGTERM handler kills the other processes at once, and its
        # SLURM SIGUSR1 handler requeues without stopping: both are replaced while
        # training (Lightning restores the handlers of before the fit when it tears down).
        # Handlers can only be set from the main thread.
        if threading.current_thread() is threading.main_thread():
            for signum in PREEMPTION_SIGNALS:
                self._previous[signum] = signal.signal(signum, self._on_signal)

    def _on_signal(self, signum: int, frame: Any) -> None:
        self._received = signum  # acted on at the end of the current step

    def _restore_handlers(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def on_exception(
        self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException
    ) -> None:
        self._restore_handlers()

    # --- saving ----------------------------------------------------------------------------

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, idx: int
    ) -> None:
        if (idx + 1) % trainer.accumulate_grad_batches and not trainer.is_last_batch:
            return  # inside gradient accumulation
        due, stop = self._due(trainer.global_step), self._received is not None
        if trainer.world_size > 1:
            flags = torch.tensor([due, stop], dtype=torch.int32, device=pl_module.device)
            due, stop = (bool(v) for v in trainer.strategy.reduce(flags, reduce_op="sum"))
        if due or stop:
            self._save(trainer)
        if stop:
            for logger in trainer.loggers:
                logger.save()
            signum = self._received if self._received is not None else signal.SIGTERM
            raise Preempted(signum, trainer.global_step, self.path)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._restore_handlers()
        if trainer.global_step != self._saved_step:  # the finished run, for --resume
            self._save(trainer)

    def _due(self, step: int) -> bool:
        if step == self._saved_step:
            return False
        if self.every_n_steps is not None and step % self.every_n_steps == 0:
            return True
        return self.every_s is not None and time.monotonic() - self._saved_at >= self.every_s

    def _save(self, trainer: L.Trainer) -> None:
        trainer.save_checkpoint(self.path)
        self._saved_at = time.monotonic()
        self._saved_step = trainer.global_step


# --- resuming mid-epoch -----------------------------------------------------------------------


class ResumableSampler(DistributedSampler):
    """``DistributedSampler`` that can begin an epoch ``start`` indices in (after a resume)."""

    start: int = 0

    def __iter__(self) -> Iterator[int]:
        indices = super().__iter__()
        for _ in range(self.start):
            next(indices, None)
        return indices


class ResumableLoader(DataLoader):
    """A training loader whose position Lightning checkpoints: batches taken this epoch.

    ``load_state_dict`` (a mid-epoch checkpoint) makes the next pass over the same epoch
    skip the batches already trained on, without reading them. The underlying iterator
    is created on the first ``next``: Lightning calls ``iter`` on a resumed run before it
    sets the sampler's epoch, which with worker processes would draw the wrong order.
    """

    sampler: ResumableSampler

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, ResumableSampler):
            raise TypeError("ResumableLoader needs a ResumableSampler")
        self._taken = 0
        self._resume: dict[str, int] | None = None

    def __iter__(self) -> Iterator[Any]:
        return self._batches()

    def _batches(self) -> Iterator[Any]:
        resume, self._resume = self._resume, None
        skip = resume["batches"] if resume and resume["epoch"] == self.sampler.epoch else 0
        self.sampler.start = skip * self.batch_size
        self._taken = skip
        for batch in super().__iter__():
            self._taken += 1
            yield batch

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": self._taken}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self._resume = dict(state)


class RestoreLoaderPosition(Callback):
    """Give a checkpoint's training-loader position to the :class:`ResumableLoader`.

    Lightning hands it over only to a loader built after the checkpoint is read; ours is
    built before, when the LR schedule asks for the steps per epoch
    (``estimated_stepping_batches``). This is done on train start, before the first batch.
    """

    def __init__(self) -> None:
        self._states: list[dict[str, int]] = []

    def on_load_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        fit_loop = checkpoint.get("loops", {}).get("fit_loop", {})
        self._states = list(fit_loop.get("state_dict", {}).get("combined_loader", []))

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loader = trainer.train_dataloader
        if self._states and isinstance(loader, ResumableLoader):
            loader.load_state_dict(self._states[0])
        self._states = []
