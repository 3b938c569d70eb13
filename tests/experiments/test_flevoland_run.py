"""The study without its scene stops before writing anything, naming the files it needs and
where they come from (experiments/flevoland/run.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "experiments" / "flevoland"))

from run import main  # noqa: E402
from scene import GT_FILE, missing_scene, scene_files  # noqa: E402


def _run(monkeypatch, *args: str) -> str:
    monkeypatch.setattr(sys, "argv", ["run.py", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    return str(stop.value.code)


def test_quick_without_the_scene_names_its_files_and_writes_nothing(tmp_path, monkeypatch):
    data, out = tmp_path / "nowhere", tmp_path / "runs" / "flevoland_quick"
    message = _run(monkeypatch, "--quick", "--data", str(data), "--out", str(out))
    # quick.yaml runs HH only: the three T3 elements HH needs, their headers, the labels
    for name in ("T3/T11.bin", "T3/T22.bin.hdr", "T3/T12_real.bin", GT_FILE):
        assert name in message
    assert "T33" not in message  # HV's element, which HH does not read
    assert "AIRSAR" in message and "CV-ASDF2Net" in message and "--data" in message
    assert not (tmp_path / "runs").exists()


def test_only_the_missing_files_are_named(tmp_path):
    bands = ["HH", "HV", "VV"]
    files = scene_files(tmp_path, bands)
    assert len(files) == 4 * 2 + 1  # T11, T12_real, T22, T33 (+ .hdr), ground truth
    for path in files[1:]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch()
    problem = missing_scene(tmp_path, bands)
    assert problem is not None and "missing T3/T11.bin." in problem
    files[0].touch()
    assert missing_scene(tmp_path, bands) is None
