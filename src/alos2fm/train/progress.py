"""The training progress bar under a budget in optimiser steps.

Lightning's bar counts epochs against ``max_epochs``; a step budget runs with
``max_epochs=-1``, so its bar read "Epoch 99/-2" and restarted every (short) epoch. Here
the bar spans the whole budget and reads "step 120/1000"; an epoch budget keeps
Lightning's bar as it is.
"""

from __future__ import annotations

from typing import Any

import lightning.pytorch as L
from lightning.pytorch.callbacks import Callback, RichProgressBar
from lightning.pytorch.callbacks.progress.rich_progress import _RICH_AVAILABLE


def step_budget(trainer: L.Trainer) -> int | None:
    """The run's budget in optimiser steps, or None when it runs for a number of epochs."""
    steps = trainer.max_steps
    return steps if trainer.max_epochs == -1 and steps is not None and steps > 0 else None


def step_description(trainer: L.Trainer) -> str | None:
    """What the bar says under a step budget ("step 120/1000"); None under epochs."""
    budget = step_budget(trainer)
    return None if budget is None else f"step {trainer.global_step}/{budget}"


class StepBudgetBar(RichProgressBar):
    """Lightning's rich bar, counting optimiser steps over the whole budget when the run
    has one (see the module docstring)."""

    @property
    def total_train_batches(self) -> int | float:
        return step_budget(self.trainer) or super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        description = step_description(self.trainer)
        if description is None:
            return super()._get_train_description(current_epoch)
        return f"{description:{len(self.validation_description)}}"  # as wide as validation's

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # One bar for the whole budget: an epoch boundary does not reset it to zero.
        if step_budget(trainer) is None or self.train_progress_bar_id is None:
            super().on_train_epoch_start(trainer, pl_module)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, i: int
    ) -> None:
        if step_budget(trainer) is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, i)
            return
        if not self.is_disabled and self.train_progress_bar_id is None:
            self._initialize_train_progress_bar_id()  # resumed mid-epoch
        if self.progress is not None and self.train_progress_bar_id is not None:
            description = self._get_train_description(trainer.current_epoch)
            if self.theme.description:
                description = f"[{self.theme.description}]{description}"
            self.progress.update(
                self.train_progress_bar_id,
                completed=trainer.global_step,
                description=description,
            )
        self._update_metrics(trainer, pl_module)
        self.refresh()


def progress_bars() -> list[Callback]:
    """The bar for ``Trainer(callbacks=...)``: ours where rich is installed (Lightning would
    pick its rich bar there); otherwise none, and Lightning's tqdm bar ("Epoch N") stays."""
    return [StepBudgetBar()] if _RICH_AVAILABLE else []
