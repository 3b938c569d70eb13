"""A training run sets the thread count it resolved and records it in its config.yaml."""

from __future__ import annotations

import pytest
import torch
import yaml

from alos2fm import threads
from alos2fm.train.config import load_config, resolve_config
from alos2fm.train.pretrain import run_pretrain


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_a_tiny_run_records_the_resolved_thread_count(
    tiny_store, tmp_path, monkeypatch, restore_threads
):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    overrides = ["schedule.epochs=1", "data.batch_size=8", "trainer.threads=auto"]
    overrides += ["trainer.progress_bar=false", "figure_every_n_epochs=5"]
    cfg = resolve_config("pretrain", "cpu-tiny-simmim", overrides)
    assert cfg.trainer.threads == "auto"
    run_pretrain(cfg, tiny_store, tmp_path / "run")
    recorded = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert recorded["trainer"]["threads"] == 2  # two cores, one process, no workers
    assert torch.get_num_threads() == 2
    assert load_config(tmp_path / "run" / "config.yaml").trainer.threads == 2
