"""Resumed and reused runs were computed from the same inputs and settings (R5, R7)."""

from __future__ import annotations

import hashlib

import pytest

from alos2fm.identity import IdentityError
from alos2fm.outputs import OutputError
from alos2fm.train.config import resolve_config
from alos2fm.train.finetune import run_finetune
from alos2fm.train.sweep import run_lr_sweep
from tests.train.conftest import make_store

SHORT = [
    "schedule.max_steps=2",
    "data.batch_size=4",
    "trainer.val_every_n_steps=2",
    "trainer.accelerator=cpu",
    "trainer.progress_bar=false",
]


def _cfg(*extra: str):
    return resolve_config("finetune", "cpu-tiny-seg", [*SHORT, *extra])


@pytest.fixture(scope="module")
def finished_run(tiny_store, tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    run_finetune(_cfg(), tiny_store, run)
    return run


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_R5_resume_on_another_dataset_is_refused_naming_it(finished_run, tmp_path):
    other = make_store(tmp_path / "other", n_train=20)
    config = _digest(finished_run / "config.yaml")
    with pytest.raises(IdentityError, match=r"dataset\.fingerprint"):
        run_finetune(_cfg(), other, finished_run, resume=True)
    assert _digest(finished_run / "config.yaml") == config  # not rewritten


def test_R5_resume_with_other_settings_is_refused_naming_the_first(finished_run, tiny_store):
    with pytest.raises(IdentityError, match=r"config\.optim\.base_lr: was 0\.03, now 0\.01"):
        run_finetune(_cfg("optim.base_lr=0.01"), tiny_store, finished_run, resume=True)


def test_R5_resume_on_other_hardware_is_the_same_run(finished_run, tiny_store):
    """Devices, strategy and checkpoint intervals say how a run is executed, not what it
    computes: a run preempted on one machine resumes on another."""
    cfg = _cfg("trainer.last_checkpoint_every_n_minutes=5", "trainer.devices=1")
    run_finetune(cfg, tiny_store, finished_run, resume=True)  # nothing left: ends at once


def test_R5_a_new_run_in_a_run_folder_needs_resume(finished_run, tiny_store):
    with pytest.raises(OutputError, match="already holds a finetune run.*--resume"):
        run_finetune(_cfg(), tiny_store, finished_run)


def test_R7_a_run_into_its_dataset_folder_is_refused(tiny_store):
    before = _digest(tiny_store / "stats.json")
    with pytest.raises(OutputError, match="into the input"):
        run_finetune(_cfg(), tiny_store, tiny_store)
    assert _digest(tiny_store / "stats.json") == before
    assert not (tiny_store / "config.yaml").exists()


def test_R5_lr_sweep_reuses_a_run_only_if_it_was_made_from_the_same_inputs(tiny_store, tmp_path):
    sweep = tmp_path / "sweep"
    first = run_lr_sweep(_cfg(), tiny_store, sweep, [3e-2])
    again = run_lr_sweep(_cfg(), tiny_store, sweep, [3e-2])  # reused, same score
    assert again.best_val_miou == first.best_val_miou
    with pytest.raises(IdentityError, match=r"finished run lr_0\.03.*loss\.name"):
        run_lr_sweep(_cfg("loss.name=focal"), tiny_store, sweep, [3e-2])
    other = make_store(tmp_path / "other", n_train=20)
    with pytest.raises(IdentityError, match=r"dataset\."):
        run_lr_sweep(_cfg(), other, sweep, [3e-2])


def test_a_window_sampling_that_cannot_act_is_said(tiny_store, tmp_path, caplog):
    """cpu-tiny-seg samples labelled 64 px windows; the tiny store's patches are 64 px: the
    sampling would change nothing, and the run says so instead of claiming it."""
    import logging

    with caplog.at_level(logging.WARNING, logger="alos2fm"):
        run_finetune(_cfg(), tiny_store, tmp_path / "run")
    notes = [r.getMessage() for r in caplog.records if "cannot act" in r.getMessage()]
    assert notes and "data.sampling=labelled" in notes[0] and "--patch-size 128" in notes[0]
    from alos2fm.train.augment import sampling_cannot_act

    assert sampling_cannot_act("labelled", 128, 64) is None
    assert sampling_cannot_act("uniform", 64, 64) is None
