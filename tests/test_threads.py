"""The thread-count rule (alos2fm.threads) and the config key that carries it."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from alos2fm import threads
from alos2fm.threads import resolve_threads
from alos2fm.train.config import TrainerConfig, resolve_config
from alos2fm.train.engine import local_processes, resolve_run_threads

NO_ENV: dict[str, str] = {}


def test_auto_shares_the_affinity_mask_among_processes_and_workers(monkeypatch):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    assert threads.available_cores() == 8
    assert resolve_threads("auto", environ=NO_ENV) == 8
    assert resolve_threads("auto", processes=2, environ=NO_ENV) == 4
    assert resolve_threads("auto", processes=2, workers=2, environ=NO_ENV) == 2
    assert resolve_threads("auto", processes=16, workers=2, environ=NO_ENV) == 1  # never 0


def test_auto_takes_an_explicit_omp_num_threads_and_a_number_wins_over_both():
    assert resolve_threads("auto", cores=8, environ={"OMP_NUM_THREADS": "3"}) == 3
    assert resolve_threads("auto", cores=8, environ={"OMP_NUM_THREADS": ""}) == 8
    assert resolve_threads("auto", cores=8, environ={"OMP_NUM_THREADS": "x"}) == 8
    assert resolve_threads(5, processes=4, cores=2, environ={"OMP_NUM_THREADS": "1"}) == 5
    with pytest.raises(ValueError, match="positive"):
        resolve_threads(0)


def test_trainer_threads_is_a_positive_number_or_auto():
    assert TrainerConfig().threads == "auto"
    assert TrainerConfig(threads=2).threads == 2
    for bad in (0, "many"):
        with pytest.raises(ValidationError):
            TrainerConfig(threads=bad)
    assert resolve_config("finetune", "cpu-tiny-seg").trainer.threads == 1  # set deliberately


def test_local_processes_are_the_devices_or_torchruns_count(monkeypatch):
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    assert local_processes(TrainerConfig(accelerator="cpu", devices="auto")) == 1
    assert local_processes(TrainerConfig(accelerator="cpu", devices=2)) == 2
    assert local_processes(TrainerConfig(accelerator="gpu", devices="0,1,3")) == 3
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert local_processes(TrainerConfig(accelerator="cpu", devices=2)) == 4


def test_a_run_config_resolves_auto_for_its_processes_and_workers(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    cfg = resolve_config(
        "pretrain",
        overrides=["trainer.accelerator=cpu", "trainer.devices=2", "data.num_workers=1"],
    )
    assert resolve_run_threads(cfg).trainer.threads == 3  # 8 cores / 2 processes - 1 worker
    explicit = resolve_config("pretrain", overrides=["trainer.threads=6"])
    assert resolve_run_threads(explicit).trainer.threads == 6


def test_importing_alos2fm_bounds_openmp_spinning_unless_the_user_chose():
    """Set before torch loads libgomp (which reads it once), so that a thread waiting at a
    parallel region sleeps soon instead of holding a core another job needs."""
    import os
    import subprocess
    import sys

    code = "import alos2fm, os, sys; print(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules)"
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    ours = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert ours.stdout.split() == [threads.OPENMP_SPINCOUNT, "False"]
    env["GOMP_SPINCOUNT"] = "77"
    theirs = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert theirs.stdout.split() == ["77", "False"]
