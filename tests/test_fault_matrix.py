"""The fault matrix: every command against a corpus of faults.

Each case runs the command as a user would (``alos2fm ...`` through the console entry
point, in this process) and asserts what alos2fm promises:

- exit code 2;
- one line on stderr naming the problem and the way out, no traceback;
- every file that existed before has the same bytes afterwards (hashed before and after);
- nothing outside ``--out`` is created or removed.

The faults: an input missing, of 0 bytes, truncated or of the wrong kind; an output
folder of the user's, ours from another command, read-only or equal to an input; a model
and data that do not match; a full disk and a ``kill -9`` mid-write (in a subprocess).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from alos2fm import cli
from alos2fm.data.synth import write_synthetic_scene
from tests.products.rasters import write_tif

# --- the world every case runs in ----------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A product, its dataset, a fine-tuned checkpoint, an encoder, and bad copies of each."""
    root = tmp_path_factory.mktemp("world")
    scene = write_synthetic_scene(root / "product", size=384, seed=2)
    w = {"root": root, "product": scene.product, "landcover": scene.landcover}
    w["dataset"] = root / "dataset"
    _ok(*_prepare_args(w, w["dataset"]))
    w["run"] = root / "run"
    _ok(
        "finetune",
        "--data",
        str(w["dataset"]),
        "--out",
        str(w["run"]),
        "--preset",
        "cpu-tiny-seg",
        "--max-steps",
        "2",
        "--batch-size",
        "2",
        "--set",
        "trainer.val_every_n_steps=1",
        "--set",
        "trainer.progress_bar=false",
    )
    w["checkpoint"] = w["run"] / "checkpoints" / "best.ckpt"
    pretrain = root / "pretrain"
    _ok(
        "pretrain",
        "--data",
        str(w["dataset"]),
        "--out",
        str(pretrain),
        "--preset",
        "cpu-tiny-simmim",
        "--max-steps",
        "1",
        "--batch-size",
        "2",
        "--set",
        "trainer.progress_bar=false",
    )
    w["encoder_file"] = pretrain / "encoder.safetensors"
    w["weights"] = _authors_weights(root / "authors_simmim.pth")
    w["map"] = root / "maps" / "map.tif"
    _ok("predict", str(scene.product), "--checkpoint", str(w["checkpoint"]), "--out",
        str(w["map"]), "--no-progress")  # fmt: skip
    # Bad inputs: empty, truncated, of the wrong kind.
    bad = root / "bad"
    bad.mkdir()
    (bad / "empty.tif").write_bytes(b"")
    (bad / "empty.ckpt").write_bytes(b"")
    (bad / "empty.pth").write_bytes(b"")
    (bad / "empty.safetensors").write_bytes(b"")
    data = scene.product.read_bytes()
    (bad / "truncated.tif").write_bytes(data[: len(data) // 3])
    ckpt = w["checkpoint"].read_bytes()
    (bad / "truncated.ckpt").write_bytes(ckpt[: len(ckpt) // 2])
    (bad / "truncated.pth").write_bytes(ckpt[: len(ckpt) // 2])
    (bad / "notes.tif").write_text("these are my notes, not a raster\n")
    (bad / "notes.ckpt").write_text("these are my notes, not a checkpoint\n")
    (bad / "notes.pth").write_text("these are my notes, not weights\n")
    (bad / "notes.safetensors").write_text("these are my notes, not weights\n")
    (bad / "empty_dataset").mkdir()
    (bad / "not_a_dataset").mkdir()
    shutil.copy(scene.product, bad / "not_a_dataset" / "scene.tif")
    truncated = bad / "truncated_dataset"
    shutil.copytree(w["dataset"], truncated)
    index = truncated / "index.parquet"
    index.write_bytes(index.read_bytes()[:100])
    w["bad"] = bad
    # A dataset of other classes and bands than the checkpoint's (model/data mismatch).
    other = root / "other_product"
    other.mkdir()
    db = np.random.default_rng(0).normal(-12, 2, (2, 128, 128)).astype(np.float32)
    w["other_product"] = write_tif(other / "two_bands.tif", db)
    return w


def _authors_weights(path: Path) -> Path:
    """A small stand-in of the authors' released SimMIM checkpoint."""
    from alos2fm.models.backbones import create_encoder
    from tests.interop.standins import save_simmim_checkpoint

    tiny = dict(arch="swin_tiny", embed_dim=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 2, 2])
    encoder = create_encoder(in_chans=1, img_size=64, window_size=4, ape=True, **tiny)
    return save_simmim_checkpoint(encoder, path)


def _ok(*args: str) -> None:
    code, err = _run(*args)
    assert code == 0, err


def _run(*args: str) -> tuple[int, str]:
    """``alos2fm ARGS`` through the console entry point; (exit code, stderr)."""
    import io

    argv, stderr = sys.argv, sys.stderr
    sys.argv, sys.stderr = ["alos2fm", *args], io.StringIO()
    try:
        cli.main()
        code = 0
    except SystemExit as exit_:
        code = int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    finally:
        err = sys.stderr.getvalue()
        sys.argv, sys.stderr = argv, stderr
    return code, err


def _snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with the SHA-256 of its bytes (folders as markers)."""
    files = {}
    for path in sorted(root.rglob("*")):
        key = str(path.relative_to(root))
        if path.is_file() and not path.is_symlink():
            files[key] = hashlib.sha256(path.read_bytes()).hexdigest()
        elif path.is_dir():
            files[key] = "dir"
    return files


def refused(world: dict[str, Path], args: list[str], out: Path | None, match: str) -> str:
    """Run ``args`` and assert the matrix's promises; returns the error line."""
    before = _snapshot(world["root"])
    code, err = _run(*args)
    after = _snapshot(world["root"])
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}: {err}"
    assert len(lines) == 1 and lines[0].startswith("alos2fm: error: "), err
    assert "Traceback" not in err
    assert _matches(match, lines[0]), f"{lines[0]!r} does not say {match!r}"
    changed = [k for k, v in before.items() if after.get(k) != v]
    assert not changed, f"files changed or removed: {changed[:5]}"
    inside = str(out.relative_to(world["root"])) if out is not None else None
    added = [k for k in after if k not in before and not (inside and k.startswith(inside))]
    assert not added, f"created outside --out: {added[:5]}"
    return lines[0]


def _matches(pattern: str, line: str) -> bool:
    import re

    return re.search(pattern, line, re.IGNORECASE) is not None


# --- commands, with a way to feed each one a bad input --------------------------------------

# Each command's argv for (main input, output folder or file); the other inputs are good.
Command = Callable[[dict[str, Path], Path, Path], list[str]]
COMMANDS: dict[str, tuple[str, Command]] = {
    "info": ("product", lambda w, src, out: ["info", str(src)]),
    "prepare": (
        "product",
        lambda w, src, out: [
            "prepare",
            str(src),
            "--labels",
            str(w["landcover"]),
            "--out",
            str(out),
            "--patch-size",
            "64",
            "--no-progress",
        ],
    ),
    "pretrain": (
        "dataset",
        lambda w, src, out: [
            "pretrain",
            "--data",
            str(src),
            "--out",
            str(out),
            "--preset",
            "cpu-tiny-simmim",
            "--max-steps",
            "1",
        ],
    ),
    "finetune": (
        "dataset",
        lambda w, src, out: [
            "finetune",
            "--data",
            str(src),
            "--out",
            str(out),
            "--preset",
            "cpu-tiny-seg",
            "--max-steps",
            "1",
            *("--set", "trainer.val_every_n_steps=1"),
        ],
    ),
    "finetune-encoder": (
        "encoder",
        lambda w, src, out: [
            "finetune",
            "--data",
            str(w["dataset"]),
            "--encoder",
            str(src),
            "--out",
            str(out),
            "--preset",
            "cpu-tiny-seg",
            "--max-steps",
            "1",
            *("--set", "trainer.val_every_n_steps=1"),
        ],
    ),
    "lr-sweep": (
        "dataset",
        lambda w, src, out: [
            "lr-sweep",
            "--data",
            str(src),
            "--out",
            str(out),
            "--rates",
            "1e-3",
            "--preset",
            "cpu-tiny-seg",
            "--max-steps",
            "1",
            *("--set", "trainer.val_every_n_steps=1"),
        ],
    ),
    "evaluate": (
        "checkpoint",
        lambda w, src, out: [
            "evaluate",
            "--checkpoint",
            str(src),
            "--data",
            str(w["dataset"]),
            "--out",
            str(out),
        ],
    ),
    "evaluate-data": (
        "dataset",
        lambda w, src, out: [
            "evaluate",
            "--checkpoint",
            str(w["checkpoint"]),
            "--data",
            str(src),
            "--out",
            str(out),
        ],
    ),
    "probe": (
        "dataset",
        lambda w, src, out: [
            "probe",
            "--data",
            str(src),
            "--out",
            str(out),
            "--encoder",
            "random",
            "--preset",
            "cpu-tiny-seg",
            "--seeds",
            "1",
        ],
    ),
    "predict": (
        "product",
        lambda w, src, out: [
            "predict",
            str(src),
            "--checkpoint",
            str(w["checkpoint"]),
            "--out",
            str(out / "map.tif") if out.suffix != ".tif" else str(out),
            "--no-progress",
        ],
    ),
    "assess": (
        "map",
        lambda w, src, out: [
            "assess",
            str(src),
            "--sample",
            "20",
            "--min-per-class",
            "1",
            "--out",
            str(out / "samples.gpkg"),
        ],
    ),
    "predict-checkpoint": (
        "checkpoint",
        lambda w, src, out: [
            "predict",
            str(w["product"]),
            "--checkpoint",
            str(src),
            "--out",
            str(out / "map.tif"),
            "--no-progress",
        ],
    ),
    "map": (
        "product",
        lambda w, src, out: [
            "map",
            str(src),
            "--checkpoint",
            str(w["checkpoint"]),
            "--out",
            str(out),
            "--no-progress",
        ],
    ),
    "map-checkpoint": (
        "checkpoint",
        lambda w, src, out: [
            "map",
            str(w["product"]),
            "--checkpoint",
            str(src),
            "--out",
            str(out),
            "--no-progress",
        ],
    ),
    "import-weights": (
        "weights",
        lambda w, src, out: ["import-weights", str(src), "--out", str(out)],
    ),
    "export": (
        "checkpoint",
        lambda w, src, out: ["export", "--checkpoint", str(src), "--out", str(out)],
    ),
}

# The bad inputs of each kind: (case, file under world/bad or None for missing).
BAD_INPUTS = {
    "product": {
        "missing": "missing.tif",
        "empty": "empty.tif",
        "truncated": "truncated.tif",
        "wrong kind": "notes.tif",
    },
    "dataset": {
        "missing": "missing_dataset",
        "empty": "empty_dataset",
        "truncated": "truncated_dataset",
        "wrong kind": "not_a_dataset",
    },
    "checkpoint": {
        "missing": "missing.ckpt",
        "empty": "empty.ckpt",
        "truncated": "truncated.ckpt",
        "wrong kind": "notes.ckpt",
    },
    "weights": {
        "missing": "missing.pth",
        "empty": "empty.pth",
        "truncated": "truncated.pth",
        "wrong kind": "notes.pth",
    },
    "map": {
        "missing": "missing.tif",
        "empty": "empty.tif",
        "truncated": "truncated.tif",
        "wrong kind": "notes.tif",
    },
    "encoder": {
        "missing": "missing.safetensors",
        "empty": "empty.safetensors",
        "truncated": "notes.safetensors",
        "wrong kind": "notes.safetensors",
    },
}

INPUT_CASES = [
    pytest.param(command, case, id=f"{command}-{case.replace(' ', '_')}")
    for command, (kind, _) in COMMANDS.items()
    for case in BAD_INPUTS[kind]
]


@pytest.mark.parametrize(("command", "case"), INPUT_CASES)
def test_a_bad_input_is_refused_in_one_line_and_nothing_is_touched(world, command, case):
    kind, argv = COMMANDS[command]
    source = world["bad"] / BAD_INPUTS[kind][case]
    out = world["root"] / f"out-{command}-{case.replace(' ', '_')}"
    line = refused(world, argv(world, source, out), out, r"\S")
    assert str(source.name) in line or "no such" in line.lower(), line


# --- outputs --------------------------------------------------------------------------------

FILE_COMMANDS = ("info", "predict", "predict-checkpoint", "assess")  # no folder of their own
FOLDER_COMMANDS = [c for c in COMMANDS if c not in FILE_COMMANDS]


def _good_source(world: dict[str, Path], command: str) -> Path:
    kind = COMMANDS[command][0]
    if kind == "encoder":
        return world["encoder_file"]
    return world[kind]


@pytest.mark.parametrize("command", FOLDER_COMMANDS)
def test_a_folder_of_the_users_is_refused_and_kept(world, command):
    out = world["root"] / f"users-{command}"
    out.mkdir(exist_ok=True)
    (out / "thesis.docx").write_bytes(b"years of work")
    for name in ("config.yaml", "metrics.json", "encoder.safetensors", "README.md"):
        (out / name).write_text("mine\n")
    _, argv = COMMANDS[command]
    refused(world, argv(world, _good_source(world, command), out), out, "not alos2fm|--overwrite")


@pytest.mark.parametrize("command", [c for c in FOLDER_COMMANDS if c not in ("prepare",)])
def test_R7_the_dataset_folder_is_never_an_output_folder(world, command):
    """R7: a run, evaluation, probe or export written into the dataset it reads."""
    _, argv = COMMANDS[command]
    out = world["dataset"]
    source = _good_source(world, command)
    refused(world, argv(world, source, out), out, "input|prepare output")


@pytest.mark.parametrize("command", ["import-weights", "export"])
def test_R4_overwrite_never_replaces_a_users_encoder_or_card(world, command):
    out = world["root"] / f"card-{command}"
    out.mkdir(exist_ok=True)
    for name in ("encoder.safetensors", "encoder.json", "README.md", "config.json"):
        (out / name).write_text(f"my own {name}\n")
    _, argv = COMMANDS[command]
    args = [*argv(world, _good_source(world, command), out), "--overwrite"]
    refused(world, args, out, "alos2fm did not write")


def test_R4_a_second_import_needs_overwrite_and_then_replaces_only_its_files(world):
    out = world["root"] / "imported"
    _, argv = COMMANDS["import-weights"]
    _ok(*argv(world, world["weights"], out))
    (out / "notes.txt").write_text("mine")
    refused(world, argv(world, world["weights"], out), out, "--overwrite")
    _ok(*argv(world, world["weights"], out), "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"


def test_prepare_into_a_run_folder_is_refused(world):
    _, argv = COMMANDS["prepare"]
    refused(world, argv(world, world["product"], world["run"]), world["run"], "finetune")


def test_R6_predict_over_its_own_product_is_refused(world):
    _, argv = COMMANDS["predict"]
    out = world["product"]
    refused(world, argv(world, world["product"], out), out, "over the input")


def test_predict_never_replaces_a_file_of_the_users(world):
    out = world["root"] / "users_maps"
    out.mkdir(exist_ok=True)
    (out / "map.tif").write_bytes(b"a map drawn by hand")
    _, argv = COMMANDS["predict"]
    refused(world, [*argv(world, world["product"], out), "--overwrite"], out, "did not write")


@contextlib.contextmanager
def read_only(folder: Path) -> Iterator[None]:
    """A folder no one can write into, root included (the immutable attribute)."""
    folder.mkdir(exist_ok=True)
    if os.geteuid() != 0:
        folder.chmod(0o555)
        try:
            yield
        finally:
            folder.chmod(0o755)
        return
    if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
        pytest.skip("cannot make a read-only folder here (chattr +i unsupported)")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(folder)], check=True)


@pytest.mark.parametrize("command", ["prepare", "finetune", "predict", "evaluate", "export", "map"])
def test_R15_a_read_only_output_is_refused_in_one_line(world, command):
    out = world["root"] / f"readonly-{command}"
    _, argv = COMMANDS[command]
    with read_only(out):
        refused(world, argv(world, _good_source(world, command), out), out, "not writable|permit")


# --- model and data that do not match -------------------------------------------------------


def test_predict_refuses_a_product_of_other_bands(world):
    _, argv = COMMANDS["predict"]
    out = world["root"] / "mismatch_map"
    refused(world, argv(world, world["other_product"], out), out, "band")


def test_finetune_refuses_an_encoder_of_another_model(world, tmp_path):
    pytest.importorskip("safetensors")
    _, argv = COMMANDS["finetune-encoder"]
    out = world["root"] / "mismatch_run"
    args = [*argv(world, world["encoder_file"], out), "--set", "model.embed_dim=48"]
    refused(world, args, out, "encoder|shape|channels|embed")


# --- a full disk and kill -9, in a subprocess ------------------------------------------------


def _alos2fm(args: list[str], **kwargs) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    return subprocess.Popen(
        [sys.executable, "-m", "alos2fm", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        **kwargs,
    )


def _prepare_args(world: dict[str, Path], out: Path) -> list[str]:
    """The world's dataset: a few dozen 64 px patches in all three splits, in a second."""
    return [
        "prepare",
        str(world["product"]),
        "--labels",
        str(world["landcover"]),
        "--out",
        str(out),
        *("--patch-size", "64", "--stride", "32", "--max-nodata", "0.2"),
        *("--block-size", "128", "--buffer", "0", "--split-fractions", "0.6,0.2,0.2"),
        *("--seed", "1", "--no-progress"),
    ]


@pytest.mark.parametrize("command", ["prepare", "predict"])
def test_R15_a_full_disk_is_one_line_and_leaves_no_half_file(world, command):
    """RLIMIT_FSIZE makes every write past 4 KiB fail as a full disk would (EFBIG)."""
    out = world["root"] / f"full-{command}"
    if command == "prepare":
        args = _prepare_args(world, out)
    else:
        out.mkdir(exist_ok=True)
        args = COMMANDS["predict"][1](world, world["product"], out)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

    before = _snapshot(world["root"])
    process = _alos2fm(args, preexec_fn=limit)
    _, err = process.communicate(timeout=120)
    lines = [line for line in err.splitlines() if line.strip()]
    assert process.returncode == 2, err
    assert len(lines) == 1 and "Traceback" not in err, err
    assert _matches("file.size limit|no space|too large", lines[0]), lines[0]
    after = _snapshot(world["root"])
    assert not [k for k, v in before.items() if after.get(k) != v]
    if command == "predict":
        assert not (out / "map.tif").exists()  # no half map under the map's name


def test_kill_9_mid_prepare_then_a_rerun_finishes_the_same_dataset(world):
    out = world["root"] / "killed"
    process = _alos2fm(_prepare_args(world, out))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (out / ".staging").exists():
        time.sleep(0.005)
    assert process.poll() is None, "prepare finished before it could be killed"
    process.kill()  # mid-run: scenes being staged, nothing assembled
    assert process.wait() == -signal.SIGKILL
    assert not (out / "index.parquet").exists()
    code, err = _run(*_prepare_args(world, out))
    assert code == 0, err
    import pandas as pd

    ours = pd.read_parquet(out / "index.parquet")
    reference = pd.read_parquet(world["dataset"] / "index.parquet")
    assert list(ours["patch_id"]) == list(reference["patch_id"])
    assert not (out / ".alos2fm.lock").exists()
