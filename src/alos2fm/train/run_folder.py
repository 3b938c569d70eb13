"""A training run's folder: claimed through ``alos2fm.outputs``, identified through
``alos2fm.identity``.

A run records what it is computed from (the resolved config, the dataset's id and
fingerprint, the encoder's SHA-256). ``--resume`` continues a run only if that identity is
the same now, naming the first difference otherwise; without ``--resume`` a folder that
holds a checkpointed run is refused. How the run is executed (devices, nodes, strategy,
progress bars, checkpoint intervals) may change between a run and its resumption.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from alos2fm.errors import Alos2fmError
from alos2fm.identity import content_digest, dataset_identity
from alos2fm.outputs import OutputFolder, claim_folder
from alos2fm.train.engine import last_checkpoint

# Everything a training run may write at its folder's root.
RUN_OUTPUTS = (
    "config.yaml",
    "checkpoints",
    "logs",
    "tensorboard",
    "test",
    "figures",
    "encoder.safetensors",
    "encoder.json",
    "encoder_load.txt",
    "budget.csv",  # the labels a label budget kept (alos2fm.train.data.BUDGET_CSV)
)
# How a run is executed, not what it computes: free to change on --resume (a resumed run
# keeps the thread count its config.yaml records unless --set trainer.threads=... changes it).
_EXECUTION = {
    "accelerator",
    "devices",
    "num_nodes",
    "strategy",
    "checkpoint_every_n_epochs",
    "last_checkpoint_every_n_minutes",
    "last_checkpoint_every_n_steps",
    "fused_attention",
    "compile",
    "threads",
    "log_every_n_steps",
    "progress_bar",
}


class RunFolderError(Alos2fmError):
    """A run folder that does not fit the request (existing run without --resume, ...)."""


def run_identity(
    command: str, cfg: BaseModel, data: Path, encoder: Path | None = None
) -> dict[str, Any]:
    """What a training run is computed from."""
    config = cfg.model_dump(mode="json")
    config["trainer"] = {k: v for k, v in config["trainer"].items() if k not in _EXECUTION}
    return {
        "command": command,
        "config": config,
        "dataset": dataset_identity(data),
        "encoder": content_digest(encoder) if encoder is not None else None,
    }


def claim_run_folder(
    out: Path,
    command: str,
    cfg: BaseModel,
    data: Path,
    resume: bool,
    encoder: Path | None = None,
    extra_inputs: Sequence[Path] = (),
) -> tuple[OutputFolder, Path | None]:
    """Claim ``out`` for a run of ``command``; returns the folder and the checkpoint to
    resume from (None for a new run)."""
    last = last_checkpoint(out)
    if resume and last is None:
        raise RunFolderError(
            "nothing to resume (no checkpoints/last.ckpt)", out, "drop --resume to start a new run"
        )
    # A folder whose run never reached its first checkpoint is started again.
    rerun = "resume" if resume else ("refuse" if last is not None else "replace")
    folder = claim_folder(
        out,
        command,
        outputs=RUN_OUTPUTS,
        inputs=[data, encoder, *extra_inputs],
        rerun=rerun,
        identity=run_identity(command, cfg, data, encoder),
    )
    return folder, last
