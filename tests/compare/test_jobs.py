"""Where a comparison's runs live, and what makes two runs the same run."""

import json
import time
from pathlib import Path

import pytest

from alos2fm.compare import jobs
from alos2fm.compare.jobs import Job, job_folder, run_job


def test_a_run_folder_names_its_budget_seed_and_rate():
    out = Path("cmp")
    assert job_folder(out, "scored", "swin", "k1", 3, 0.018) == out / "runs/swin/k1/seed3_lr0.018"
    assert (
        job_folder(out, "tuning", "unet", "0.1%", 100, 2e-3)
        == out / "tuning/unet/0.1pct/seed100_lr0.002"
    )
    # arms without a rate (the forest, probes): the seed alone
    assert job_folder(out, "scored", "rf", "100%", 0, None) == out / "runs/rf/100pct/seed0"
    # a rate chosen anew after a wider sweep is another run, beside the first
    assert job_folder(out, "scored", "swin", "k1", 3, 0.054) != job_folder(
        out, "scored", "swin", "k1", 3, 0.018
    )


class Stopped(Exception):
    """As a run stopped by SIGTERM: saved, to be resumed."""


def test_a_resumed_run_counts_the_seconds_of_every_attempt(tmp_path, monkeypatch):
    from alos2fm.compare import pixel_arms

    attempts = []

    def train(job):
        attempts.append(job)
        time.sleep(0.3)
        if len(attempts) == 1:
            raise Stopped
        return {"test_miou": 0.5}

    monkeypatch.setattr(pixel_arms, "train_pixel_classifier", train)
    monkeypatch.setattr(Job, "identity", lambda self: {"arm": self.arm})
    job = Job("rf", "rf", "k1", 0, "scored", tmp_path / "data", tmp_path / "run")
    with pytest.raises(Stopped):
        run_job(job)
    assert json.loads((tmp_path / "run" / jobs.ATTEMPTS).read_text())[0] >= 0.3
    row = run_job(job)
    assert row["attempts"] == 2 and 0.6 <= row["seconds"] < 5
    assert row["test_miou"] == 0.5
