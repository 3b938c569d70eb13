"""Long runs survive preemption: last.ckpt on an interval, signals, exact mid-epoch resume.

The interrupted runs are real processes (``interrupted_run.py`` signals itself after a
chosen step); the uninterrupted reference runs in this process with the same thread
count, so that the two compute bit-identical weights.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback
from safetensors.torch import load_file
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.train.config import resolve_config
from alos2fm.train.data import PatchDataModule
from alos2fm.train.engine import build_trainer, seed_run
from alos2fm.train.pretrain import PretrainModule

HERE = Path(__file__).parent
EVERY = 3  # last.ckpt every 3 optimiser steps; 16 patches / batch 4 = 4 steps an epoch
RUN = ["--preset", "cpu-tiny-simmim", "--weighting", "sar", "--epochs", "2", "--batch-size", "4"]
RUN += ["--set", "trainer.accelerator=cpu"]
RUN += ["--set", f"trainer.last_checkpoint_every_n_steps={EVERY}"]


def _pretrain_args(store: Path, out: Path, *extra: str) -> list[str]:
    return ["pretrain", "--data", str(store), "--out", str(out), *RUN, *extra]


def _interrupted(store: Path, out: Path, signum: signal.Signals, step: int, *extra: str):
    env = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    command = [sys.executable, str(HERE / "interrupted_run.py"), signum.name, str(step)]
    return subprocess.run(
        command + _pretrain_args(store, out, *extra), capture_output=True, text=True, env=env
    )


def _state(run: Path) -> tuple[int, dict[str, torch.Tensor]]:
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    return ckpt["global_step"], ckpt["state_dict"]


@pytest.fixture(scope="module")
def uninterrupted(tiny_store, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("uninterrupted") / "run"
    result = CliRunner().invoke(app, _pretrain_args(tiny_store, run))
    assert result.exit_code == 0, result.output
    return run


def _assert_same_weights(run: Path, reference: Path) -> None:
    step, state = _state(run)
    reference_step, reference_state = _state(reference)
    assert step == reference_step == 8
    assert state.keys() == reference_state.keys()
    for name, value in state.items():
        assert torch.equal(value, reference_state[name]), name
    encoder = load_file(run / "encoder.safetensors")
    reference_encoder = load_file(reference / "encoder.safetensors")
    assert encoder.keys() == reference_encoder.keys()
    assert all(torch.equal(value, reference_encoder[name]) for name, value in encoder.items())


def test_killed_run_resumes_from_the_last_interval_to_the_same_weights(
    tiny_store, tmp_path, uninterrupted
):
    run = tmp_path / "run"
    killed = _interrupted(tiny_store, run, signal.SIGKILL, 5)  # mid-epoch 2 (steps 5-8)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    step, _ = _state(run)
    assert step == 3  # the last multiple of EVERY: two steps lost, at most one interval
    assert not (run / "encoder.safetensors").exists()  # the run did not finish
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["last.ckpt"]  # no debris

    resumed = CliRunner().invoke(app, _pretrain_args(tiny_store, run, "--resume"))
    assert resumed.exit_code == 0, resumed.output
    _assert_same_weights(run, uninterrupted)


@pytest.mark.parametrize(
    "signum, workers", [(signal.SIGTERM, 1), (signal.SIGUSR1, 0)], ids=["SIGTERM", "SIGUSR1"]
)
def test_preemption_signal_saves_the_step_and_exits_for_resume(
    tiny_store, tmp_path, uninterrupted, signum, workers
):
    run = tmp_path / "run"
    # Worker processes read ahead of the step; the resumed epoch must still start right.
    extra = ("--set", f"data.num_workers={workers}")
    stopped = _interrupted(tiny_store, run, signum, 6, *extra)
    assert stopped.returncode == 128 + signum, stopped.stderr
    # Acted on at the end of the step after the signal: nothing is lost.
    assert f"stopped by {signum.name} after step 7" in stopped.stderr
    assert "--resume" in stopped.stderr.splitlines()[-1]
    assert _state(run)[0] == 7
    assert not (run / "encoder.safetensors").exists()

    resumed = CliRunner().invoke(app, _pretrain_args(tiny_store, run, "--resume", *extra))
    assert resumed.exit_code == 0, resumed.output
    _assert_same_weights(run, uninterrupted)


class _LastStepOnDisk(Callback):
    """The step stored in last.ckpt after each batch (the engine's saver runs first)."""

    def __init__(self, path: Path):
        self.path, self.steps = path, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        saved = torch.load(self.path, weights_only=False) if self.path.exists() else None
        self.steps.append(saved["global_step"] if saved else None)


@pytest.mark.parametrize("minutes, expected", [(1e-6, [1, 2, 3, 4]), (15.0, [None] * 4)])
def test_time_interval_refreshes_last_ckpt_within_the_epoch(
    tiny_store, tmp_path, minutes, expected
):
    overrides = ["data.batch_size=4", "trainer.accelerator=cpu"]
    overrides += [f"trainer.last_checkpoint_every_n_minutes={minutes}"]
    cfg = resolve_config("pretrain", "cpu-tiny-simmim", overrides)
    dm = PatchDataModule(tiny_store, cfg.data, cfg.seed, with_labels=False, splits=("train",))
    seed_run(cfg.seed)
    probe = _LastStepOnDisk(tmp_path / "checkpoints" / "last.ckpt")
    trainer = build_trainer(cfg.trainer, tmp_path, 1, cfg.seed, callbacks=[probe])
    trainer.fit(PretrainModule(cfg, dm.normalisation), datamodule=dm)
    assert probe.steps == expected
    assert _state(tmp_path)[0] == 4  # and always at the end of the run
