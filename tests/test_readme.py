"""Every code block of README.md runs as written, on synthetic data, in a temporary folder.

The blocks run top to bottom in one folder, as a reader following the README runs them:
later blocks read what earlier ones wrote (``work/dataset``, ``work/finetune``...).
``bash`` blocks run under ``bash -euo pipefail`` with this environment's ``alos2fm`` first
on PATH, ``console`` blocks their ``$ `` lines the same way; ``python`` blocks run in a
fresh interpreter; ``yaml`` blocks that hold a class table load as one.

Only sizes shrink (``SHRINK``: scene sides, epochs, steps), and every substitution must
find its text, so an edit of the README that removes one fails here instead of running
for an hour. A block that cannot run here is preceded in the README by
``<!-- readme-test: skip (REASON) -->``; the test prints each skipped block with its
reason. Blocks that use the output of a skipped one get a stand-in (``STAND_INS``).

Slow (a few minutes on one core): ``pytest -m slow tests/test_readme.py``; CI runs it
after ``make test`` (``.ci/run``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"

# (README text, what runs instead, why): sizes only; each must occur in a runnable block.
SHRINK = [
    (
        "alos2fm synth --out work/product ",
        "alos2fm synth --out work/product --size 1024 ",
        "a 1024 px scene instead of the default 2048",
    ),
    (
        "--weighting sar --out work/pretrain\n",
        "--weighting sar --out work/pretrain --epochs 1\n",
        "one pretraining epoch instead of the preset's 30",
    ),
    (
        "--out work/finetune\n",
        "--out work/finetune --max-steps 20 --set trainer.val_every_n_steps=10\n",
        "20 fine-tuning steps instead of the preset's 600",
    ),
    (
        "alos2fm synth --out work/own --own-labels",
        "alos2fm synth --out work/own --own-labels --size 1024",
        "a 1024 px scene instead of the default 2048",
    ),
    ("--epochs 10\n", "--epochs 1\n", "one fine-tuning epoch instead of 10"),
    ("--out work/pass1 --size 1024", "--out work/pass1 --size 512", "512 px passes"),
    ("--out work/pass2 --size 1024", "--out work/pass2 --size 512", "512 px passes"),
    (
        "--seeds 5 --steps 300 --workers 2",
        "--seeds 2 --steps 4 --rates 0.03 --workers 2",
        "2 seeds of 4 steps at one rate (no tuning runs) instead of 5 of 300 and a sweep",
    ),
]

# Outputs of skipped blocks that later blocks read: (stand-in, from, why).
STAND_INS = [
    (
        "work/alos2_fm",
        "work/pretrain",
        "the quick start's encoder stands in for the authors' imported one",
    ),
    (
        "work/finetune_fm",
        "work/finetune",
        "the quick start's fine-tuning stands in for the one from the authors' encoder",
    ),
]

_BLOCK = re.compile(
    r"(?:<!--\s*readme-test:\s*skip\s*\((?P<reason>[^)]*)\)\s*-->\s*\n)?"
    r"^```(?P<lang>[a-z]*)\n(?P<code>.*?)^```$",
    re.M | re.S,
)
RUNNABLE = ("bash", "console", "python", "yaml")


@dataclass(frozen=True)
class Block:
    line: int  # where the block starts in README.md, for messages
    lang: str
    code: str
    skip: str | None  # the reason given in the README, if it is not run


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of a README in the languages this test runs, in order."""
    return [
        Block(text.count("\n", 0, m.start("code")), m["lang"], m["code"], m["reason"])
        for m in _BLOCK.finditer(text)
        if m["lang"] in RUNNABLE
    ]


def shrink(code: str) -> str:
    for old, new, _ in SHRINK:
        code = code.replace(old, new)
    return code


def test_block_parsing_reads_languages_and_skip_reasons():
    text = (
        "intro\n<!-- readme-test: skip (needs a cluster) -->\n```bash\nsrun x\n```\n"
        "```python\nprint(1)\n```\n```\nDATASET/ layout\n```\n"
    )
    blocks = readme_blocks(text)
    assert [(b.lang, b.code, b.skip) for b in blocks] == [
        ("bash", "srun x\n", "needs a cluster"),
        ("python", "print(1)\n", None),
    ]


def test_every_shrink_applies_to_a_block_that_runs():
    runnable = "".join(b.code for b in readme_blocks(README.read_text()) if b.skip is None)
    missing = [old for old, _, _ in SHRINK if old not in runnable]
    assert not missing, f"README no longer says {missing}: update SHRINK in {__file__}"


def _run_shell(code: str, cwd: Path, env: dict[str, str], where: str) -> None:
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{where} failed:\n{code}\n{result.stdout}\n{result.stderr}"


# Appended to a python block: what it left in its namespace, for the checks below.
_PYTHON_EPILOGUE = """
import sys as _sys, torch as _torch
from safetensors.torch import save_file as _save
_tensors = {k: v for k, v in dict(globals()).items() if isinstance(v, _torch.Tensor)}
if isinstance(globals().get("maps"), (list, tuple)):
    _tensors |= {f"maps{i}": m for i, m in enumerate(maps)}
_imported = any(name.startswith("alos2fm") for name in _sys.modules)
_tensors["alos2fm_imported"] = _torch.tensor(_imported)
_save({k: v.detach().contiguous() for k, v in _tensors.items()}, _OUT)
"""


def _run_python(code: str, cwd: Path, env: dict[str, str], where: str, out: Path) -> None:
    program = f"_OUT = {str(out)!r}\n{code}\n{_PYTHON_EPILOGUE}"
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert result.returncode == 0, f"{where} failed:\n{code}\n{result.stderr}"


def _check_timm_block(namespace: Path, work: Path) -> None:
    """The README's timm lines compute alos2fm's own features of the exported encoder,
    exactly, in a process that never imported alos2fm."""
    from alos2fm.models.backbones import build_encoder, encoder_features

    got = load_file(namespace)
    assert not got["alos2fm_imported"].item()
    source = work / "work" / "alos2_fm"
    meta = json.loads((source / "encoder.json").read_text())
    encoder = build_encoder(meta["encoder"])
    encoder.load_state_dict(load_file(source / "encoder.safetensors"), strict=True)
    with torch.no_grad():
        expected = encoder_features(encoder.eval(), (got["db"] - got["mean"]) / got["std"])
    assert len(expected) == sum(key.startswith("maps") for key in got)
    for i, ours in enumerate(expected):
        assert torch.equal(got[f"maps{i}"], ours), f"stage {i} differs from alos2fm's features"


def _check_class_table(code: str, cwd: Path) -> None:
    from alos2fm.data.classes import load_class_table

    path = cwd / "readme_classes.yaml"
    path.write_text(code)
    assert load_class_table(path).classes


@pytest.mark.slow
def test_every_readme_block_runs(tmp_path: Path):
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "OMP_NUM_THREADS": "1",
    }
    blocks = readme_blocks(README.read_text())
    skipped, checked_timm = [], False
    for index, block in enumerate(blocks):
        where = f"README.md block at line {block.line} ({block.lang})"
        if block.skip is not None:
            skipped.append(f"line {block.line}: {block.skip}")
            continue
        for stand_in, source, _ in STAND_INS:
            if (tmp_path / source).is_dir() and not (tmp_path / stand_in).exists():
                shutil.copytree(tmp_path / source, tmp_path / stand_in)
        code = shrink(block.code)
        if block.lang == "bash":
            _run_shell(code, tmp_path, env, where)
        elif block.lang == "console":
            commands = [line[2:] for line in code.splitlines() if line.startswith("$ ")]
            _run_shell("\n".join(commands), tmp_path, env, where)
        elif block.lang == "python":
            namespace = tmp_path / f"readme_block_{index}.safetensors"
            _run_python(code, tmp_path, env, where, namespace)
            if "timm.create_model" in code:
                _check_timm_block(namespace, tmp_path)
                checked_timm = True
        elif block.lang == "yaml" and code.startswith("classes:"):
            _check_class_table(code, tmp_path)
    print("skipped README blocks:\n  " + "\n  ".join(skipped))
    assert checked_timm, "no README block loads an encoder in timm any more"
    for output in ("work/map.tif", "work/water_map.tif", "work/region/map.tif"):
        assert (tmp_path / output).is_file(), output
