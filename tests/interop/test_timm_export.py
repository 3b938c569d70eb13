"""The timm / hub export: plain timm (in a process that never imports alos2fm) loads every
tensor strictly and, with the card's own lines, computes our encoder's features."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.evaluation.export import export_checkpoint_encoder, export_pretrained_encoder
from alos2fm.evaluation.predict import (
    InferenceMeta,
    load_segmenter_for_inference,
    save_inference_checkpoint,
)
from alos2fm.interop.timm_export import APE_KEY, APE_WEIGHTS, CARD_FOLDER, timm_layout
from alos2fm.models.backbones import build_encoder
from alos2fm.models.segmenter import WeightsError, build_segmenter
from tests.tiny_models import TINY_SEGMENTER

# Two blocks a stage, so that timm shifts the second one wherever the grid exceeds the window.
SWIN = {
    "arch": "swin_tiny",
    "in_chans": 2,
    "img_size": 64,
    "window_size": [4, 4, 2, 2],  # per stage: timm's own argument takes it
    "embed_dim": 8,
    "depths": [2, 2, 2, 1],
    "num_heads": [1, 1, 2, 2],
}
ENCODERS: dict[str, dict[str, Any]] = {
    "timm_swin": SWIN | {"ape": False, "shift": True},
    "mixmae": SWIN | {"ape": "sincos", "shift": False},  # MixMAE as published
    "learned_ape": SWIN | {"ape": True, "shift": True},  # the paper's SimMIM Swin-B
    "vit": {"arch": "vit_small", "in_chans": 2, "img_size": 32, "patch_size": 8}
    | {"embed_dim": 16, "depth": 2, "num_heads": 2},
}
DATA = {"bands": ["VH", "VV"], "mean": [-19.2, -12.6], "std": [3.2, 3.0], "units": "dB"}
COLOURS = ((0, 0, 255), (0, 200, 0))
IMPORTED = {
    "source": {"file": "benv1_pretrain_checkpoint_64.pth", "sha256": "b4f385f9ab0700"},
    "licence": "MIT",
    "attribution": "Model: SAR-W-MixMAE, arXiv 2503.01181.",
}

# Runs with only timm, torch and safetensors: what a user of another tool has.
PLAIN_TIMM = textwrap.dedent(
    """
    import json, re, sys
    import timm, torch
    from safetensors.torch import load_file

    def features(model, x):
        return [*model.forward_intermediates(x, intermediates_only=True), model.forward_features(x)]

    def max_diff(model, expected):
        with torch.no_grad():
            got = features(model.eval(), expected["x"])
        return max((g - expected[f"f{i}"]).abs().max().item() for i, g in enumerate(got))

    placeholder, *folders = sys.argv[1:]
    report = {}
    for folder in folders:
        cfg = json.load(open(f"{folder}/config.json"))
        expected = load_file(f"{folder}/../expected.safetensors")
        plain = timm.create_model(cfg["architecture"], **cfg["model_args"])
        plain.load_state_dict(load_file(f"{folder}/model.safetensors"), strict=True)
        card = open(f"{folder}/README.md").read()
        code = re.search(r"```python\\n(.*?)```", card, re.S).group(1)
        scope = {}
        exec(code.replace(placeholder, folder), scope)  # the card as is, local-dir loading too
        report[folder] = {
            "plain": max_diff(plain, expected),
            "card": max_diff(scope["model"], expected),
            "alos2fm_imported": any(name.startswith("alos2fm") for name in sys.modules),
        }
    print(json.dumps(report))
    """
)


def _write_run(run: Path, encoder: torch.nn.Module, config: dict, meta: dict) -> Path:
    run.mkdir(parents=True)
    save_file(encoder.state_dict(), run / "encoder.safetensors")
    (run / "encoder.json").write_text(json.dumps({"encoder": config} | meta))
    return run / "encoder.safetensors"


def _write_expected(folder: Path, encoder: torch.nn.Module, channels: int, size: int) -> None:
    """Our encoder's maps (for Swin, ``encoder_features`` is this call) and final tokens."""
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        encoder.eval()
        maps = [*encoder.forward_intermediates(x, intermediates_only=True)]
        maps.append(encoder.forward_features(x))
    save_file({"x": x} | {f"f{i}": m.contiguous() for i, m in enumerate(maps)}, folder)


@pytest.fixture(scope="module")
def exports(tmp_path_factory) -> dict[str, Path]:
    """One export folder per encoder kind (and a fine-tuned checkpoint's), each with our
    features beside it; the last one exported through the command line."""
    root = tmp_path_factory.mktemp("timm")
    folders = {}
    for name, config in ENCODERS.items():
        torch.manual_seed(0)
        encoder = build_encoder(config)
        meta = {"data": DATA, "method": "mixmae", "epochs": 3, "global_step": 120}
        weights = _write_run(root / name / "run", encoder, config, meta | IMPORTED)
        export_pretrained_encoder(weights, root / name / "export")
        _write_expected(root / name / "expected.safetensors", encoder, 2, config["img_size"])
        folders[name] = root / name / "export"
    torch.manual_seed(0)
    model = build_segmenter(TINY_SEGMENTER)
    meta = InferenceMeta(TINY_SEGMENTER, ("HH",), (-10.4,), (5.8,), ("water", "rice"), COLOURS, 32)
    checkpoint = root / "segmenter" / "run" / "checkpoints" / "best.ckpt"
    model, meta = load_segmenter_for_inference(save_inference_checkpoint(model, meta, checkpoint))
    export_checkpoint_encoder(model, meta, checkpoint, root / "segmenter" / "export")
    _write_expected(root / "segmenter" / "expected.safetensors", model.encoder, 1, 32)
    folders["segmenter"] = root / "segmenter" / "export"
    return folders


@pytest.fixture(scope="module")
def plain_timm(exports) -> dict[str, dict[str, Any]]:
    """What plain timm computes from each folder, in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", PLAIN_TIMM, CARD_FOLDER, *map(str, exports.values())],
        capture_output=True,
        text=True,
        timeout=300,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.splitlines()[-1])
    return {name: report[str(folder)] for name, folder in exports.items()}


def _config(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "config.json").read_text())


@pytest.mark.parametrize("name", ["timm_swin", "vit"])
def test_timm_s_own_architectures_load_strictly_and_compute_our_features(exports, plain_timm, name):
    assert not plain_timm[name]["alos2fm_imported"]
    assert plain_timm[name]["plain"] < 1e-5  # no restoring lines needed
    assert plain_timm[name]["card"] < 1e-5  # local-dir:FOLDER with pretrained=True
    assert not (exports[name] / APE_WEIGHTS).exists()
    config = _config(exports[name])
    assert "window_shift" not in config and "absolute_pos_embed" not in config


def test_per_stage_windows_are_timm_s_own_window_size_argument(exports):
    config = _config(exports["timm_swin"])
    assert config["architecture"] == "swin_tiny_patch4_window7_224"
    args = config["model_args"]
    assert args["window_size"] == [4, 4, 2, 2] and args["depths"] == [2, 2, 2, 1]
    assert args["in_chans"] == 2 and args["img_size"] == 64 and args["num_classes"] == 0


@pytest.mark.parametrize("name", ["learned_ape", "mixmae", "segmenter"])
def test_what_timm_cannot_express_comes_back_with_the_card_s_lines(exports, plain_timm, name):
    # The weights load strictly into plain timm, yet compute another function until the
    # card's lines add the APE (and, for MixMAE, turn the window shift off).
    assert plain_timm[name]["plain"] > 1e-3
    assert plain_timm[name]["card"] < 1e-5
    assert APE_KEY not in load_file(exports[name] / "model.safetensors")
    ape = load_file(exports[name] / APE_WEIGHTS)["absolute_pos_embed"]
    config = _config(exports[name])
    assert list(ape.shape) == config["absolute_pos_embed"]["shape"]


def test_unshifted_windows_are_declared_only_where_timm_would_shift(exports):
    assert _config(exports["mixmae"])["window_shift"] is False
    assert _config(exports["mixmae"])["absolute_pos_embed"]["kind"] == "fixed 2-D sin-cos"
    card = (exports["mixmae"] / "README.md").read_text()
    assert "never shifts its windows" in card and "block.attn_mask = None" in card
    # One block a stage never shifts in timm either: nothing to declare or restore.
    encoder = build_encoder(TINY_SEGMENTER["encoder"] | {"shift": False})
    assert not timm_layout(encoder, TINY_SEGMENTER["encoder"] | {"shift": False}).unshifted
    assert "window_shift" not in _config(exports["segmenter"])


def test_pretrained_cfg_holds_the_db_normalisation_and_timm_accepts_it(exports):
    config = _config(exports["mixmae"])
    cfg = config["pretrained_cfg"]
    assert cfg["mean"] == DATA["mean"] and cfg["std"] == DATA["std"]
    assert cfg["input_size"] == [2, 64, 64] and cfg["license"] == "MIT"
    assert config["bands"] == ["VH", "VV"] and "dB" in config["input_units"]
    # timm's own loader builds its PretrainedCfg from this dict, which rejects unknown keys.
    from timm.models._pretrained import PretrainedCfg

    assert PretrainedCfg(**cfg).mean == DATA["mean"]


def test_the_card_states_data_recipe_licence_and_attribution(exports):
    card = (exports["mixmae"] / "README.md").read_text()
    assert "license: mit" in card.split("---")[1]
    for text in (
        "| bands | VH, VV |",
        "| VH | -19.2 | 3.2 |",
        "| method | mixmae |",
        "| epochs | 3 |",
        "| optimiser steps | 120 |",
        "benv1_pretrain_checkpoint_64.pth` (sha256 b4f385f9ab0700)",
        "Licence: MIT.",
        "Attribution: Model: SAR-W-MixMAE, arXiv 2503.01181.",
    ):
        assert text in card, text


def test_a_checkpoint_card_names_classes_and_reports_its_own_test_metrics(exports, tmp_path):
    card = (exports["segmenter"] / "README.md").read_text()
    assert "| classes | 0 water, 1 rice |" in card and "segmenter.onnx" in card
    assert "no test metrics.json next to the run" in card
    run = tmp_path / "run"
    torch.manual_seed(0)
    model = build_segmenter(TINY_SEGMENTER)
    meta = InferenceMeta(TINY_SEGMENTER, ("HH",), (-10.4,), (5.8,), ("water", "rice"), COLOURS, 32)
    for name in ("best.ckpt", "last.ckpt"):
        save_inference_checkpoint(model, meta, run / "checkpoints" / name)
    (run / "test").mkdir()
    scores = {"miou": 0.625, "kappa": 0.5, "checkpoint": str(run / "checkpoints" / "best.ckpt")}
    (run / "test" / "metrics.json").write_text(json.dumps(scores))
    for name, expected in (
        ("best.ckpt", "| miou | 0.625 |"),
        ("last.ckpt", "scores best.ckpt, not this checkpoint: not reported"),
    ):
        checkpoint = run / "checkpoints" / name
        export_checkpoint_encoder(*load_segmenter_for_inference(checkpoint), checkpoint, tmp_path)
        assert expected in (tmp_path / "README.md").read_text(), name


def test_cli_export_encoder_writes_the_hub_folder(exports, tmp_path):
    weights = exports["timm_swin"].parent / "run" / "encoder.safetensors"
    result = CliRunner().invoke(app, ["export", "--encoder", str(weights), "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        ".alos2fm.json",  # what alos2fm wrote here (alos2fm.outputs)
        "README.md",
        "config.json",
        "model.safetensors",
    ]  # nothing half-written left behind
    assert _config(tmp_path) == _config(exports["timm_swin"])


def test_cli_export_needs_exactly_one_source_and_an_encoder_json(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["export", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "give one of --checkpoint and --encoder" in str(
        result.exception
    )
    torch.manual_seed(0)
    encoder = build_encoder(ENCODERS["vit"])
    save_file(encoder.state_dict(), tmp_path / "encoder.safetensors")
    with pytest.raises(WeightsError, match="no encoder.json beside"):
        export_pretrained_encoder(tmp_path / "encoder.safetensors", tmp_path / "out")
    (tmp_path / "encoder.json").write_text(json.dumps({"encoder": SWIN, "data": DATA}))
    with pytest.raises(WeightsError, match="do not fit the encoder encoder.json describes"):
        export_pretrained_encoder(tmp_path / "encoder.safetensors", tmp_path / "out")


def test_a_cnn_encoder_is_refused_with_a_reason():
    with pytest.raises(WeightsError, match="covers Swin and ViT encoders, not 'resnet18'"):
        timm_layout(torch.nn.Identity(), {"arch": "resnet18", "in_chans": 1, "img_size": 64})
