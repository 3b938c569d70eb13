"""Frozen-feature probes on a separable toy set."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.evaluation.probe import ProbeSettings, compare_encoders, run_probe
from alos2fm.train.config import resolve_config
from tests.train.conftest import make_store

FEW = ProbeSettings(seeds=2, train_pixels=3000, eval_pixels=4000)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    """Three classes 7 dB apart with 1.5 dB noise: separable from the features of any
    encoder that keeps intensity, even a random one."""
    return make_store(tmp_path_factory.mktemp("toy"))


def _random_architecture():
    return resolve_config("finetune", "cpu-tiny-seg").model.encoder_kwargs()


def test_a_linear_probe_separates_the_toy_classes_on_random_frozen_features(toy):
    rows = run_probe(toy, ["random"], FEW, _random_architecture())
    assert {(r["seed"], r["split"]) for r in rows} == {
        (s, p) for s in (0, 1) for p in ("val", "test")
    }
    assert min(r["miou"] for r in rows) > 0.8


def test_shuffled_labels_give_chance_and_the_paired_comparison_says_so(toy, tmp_path):
    """The probe learns from the labels, not from leakage: same store, labels permuted."""
    import zarr

    shuffled = make_store(tmp_path / "shuffled")
    labels = zarr.open_array(str(shuffled / "labels"), mode="r+")
    rng = np.random.default_rng(0)
    for i in range(labels.shape[0]):
        patch = np.asarray(labels[i])
        valid = patch != 255
        patch[valid] = rng.permutation(patch[valid])
        labels[i] = patch
    rows = run_probe(shuffled, ["random"], FEW, _random_architecture())
    assert max(r["miou"] for r in rows) < 0.35  # chance for 3 balanced classes ~ 0.2

    fake = [
        {"encoder": name, "seed": s, "split": "test", "miou": base + 0.1 * (name == "b") + 0.01 * s}
        for name, base in (("a", 0.5), ("b", 0.5))
        for s in range(5)
    ]
    summary = compare_encoders(fake)
    assert summary[0]["encoder"] == "a" and summary[1]["diff_to_a"] == pytest.approx(0.1)
    assert summary[0]["miou_std"] == pytest.approx(np.std([0.5, 0.51, 0.52, 0.53, 0.54], ddof=1))


def test_cli_probe_writes_its_table(toy, tmp_path):
    result = CliRunner().invoke(
        app,
        ["probe", "--data", str(toy), "--out", str(tmp_path), "--encoder", "random",
         "--preset", "cpu-tiny-seg", "--seeds", "2", "--train-pixels", "2000",
         "--eval-pixels", "2000"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert (tmp_path / "probe.json").exists() and (tmp_path / "probe.csv").exists()
    assert "random" in result.output and "±" in result.output
