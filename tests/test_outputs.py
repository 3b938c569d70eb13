"""The ownership layer on its own: manifests, claims, locks, files in a user's folder."""

from __future__ import annotations

import json

import pytest

from alos2fm.identity import IdentityError, first_difference, reader_files
from alos2fm.outputs import MANIFEST, OutputError, claim_files, claim_folder, read_manifest


def test_a_claim_records_the_command_run_and_declared_outputs(tmp_path):
    out = tmp_path / "run"
    with claim_folder(out, "evaluate", outputs=["metrics.json"]) as folder:
        (folder.path("metrics.json")).write_text("{}")
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["format"] == 1 and manifest["command"] == "evaluate"
    assert manifest["outputs"] == {"metrics.json": folder.run_id}
    assert not (out / ".alos2fm.lock").exists()


def test_R15_a_second_writer_is_refused_naming_the_first(tmp_path):
    import os

    out = tmp_path / "ds"
    with (
        claim_folder(out, "prepare"),
        pytest.raises(
            OutputError, match=f"another alos2fm process is writing here .pid {os.getpid()}"
        ),
    ):
        claim_folder(out, "prepare")
    with claim_folder(out, "prepare", rerun="replace"):  # free again once released
        pass


def test_a_manifest_of_another_format_is_refused_not_guessed(tmp_path):
    (tmp_path / MANIFEST).write_text(json.dumps({"format": 99, "outputs": {}}))
    with pytest.raises(OutputError, match="format 99"):
        read_manifest(tmp_path)


def test_an_earlier_run_needs_overwrite_and_a_users_file_is_kept_even_then(tmp_path):
    out = tmp_path / "export"
    with claim_folder(out, "export", outputs=["README.md"]) as folder:
        folder.path("README.md").write_text("card 1")
    (out / "mine.txt").write_text("mine")
    with pytest.raises(OutputError, match="earlier export run.*--overwrite"):
        claim_folder(out, "export", outputs=["README.md"])
    with claim_folder(out, "export", outputs=["README.md"], overwrite=True) as folder:
        folder.path("README.md").write_text("card 2")
        with pytest.raises(OutputError, match="did not write"):
            folder.path("mine.txt")
        with pytest.raises(OutputError, match="was not written by alos2fm"):
            folder.remove("mine.txt")
    assert (out / "mine.txt").read_text() == "mine"


def test_resume_checks_the_recorded_identity(tmp_path):
    out = tmp_path / "run"
    with claim_folder(out, "finetune", outputs=["config.yaml"], identity={"lr": 1}) as f:
        f.path("config.yaml").write_text("lr: 1\n")
    with pytest.raises(IdentityError, match="lr: was 1, now 2"):
        claim_folder(out, "finetune", rerun="resume", identity={"lr": 2})
    claim_folder(out, "finetune", rerun="resume", identity={"lr": 1}).release()


def test_files_in_a_users_folder_are_claimed_one_by_one(tmp_path):
    (tmp_path / "holiday.jpg").write_bytes(b"jpeg")
    claim_files([tmp_path / "map.tif"], "predict")
    (tmp_path / "map.tif").write_bytes(b"map 1")
    with pytest.raises(OutputError, match="already exists.*--overwrite"):
        claim_files([tmp_path / "map.tif"], "predict")
    claim_files([tmp_path / "map.tif"], "predict", overwrite=True)
    with pytest.raises(OutputError, match="did not write"):
        claim_files([tmp_path / "holiday.jpg"], "predict", overwrite=True)
    with pytest.raises(OutputError, match="not alos2fm prepare output"):
        claim_folder(tmp_path, "prepare")  # the folder itself stays the user's


def test_secondary_processes_of_a_launch_write_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    folder = claim_folder(tmp_path / "run", "finetune", outputs=["config.yaml"])
    folder.path("config.yaml")
    folder.release()
    assert not (tmp_path / "run" / MANIFEST).exists()


def test_first_difference_names_the_key_path():
    assert first_difference({"a": {"b": [1, 2]}}, {"a": {"b": [1, 3]}}) == "a.b[1]: was 2, now 3"
    assert first_difference({"a": 1}, {"a": 1}) is None


def test_reader_files_include_sidecars(tmp_path):
    shp = tmp_path / "fields.shp"
    for suffix in (".shp", ".shx", ".dbf", ".prj"):
        shp.with_suffix(suffix).write_bytes(b"x")
    assert {p.suffix for p in reader_files(shp)} == {".shp", ".shx", ".dbf", ".prj"}
