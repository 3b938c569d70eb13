"""Export: ONNX Runtime agrees with PyTorch on tiles; safetensors rebuild the same model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from typer.testing import CliRunner

from alos2fm.cli import app
from alos2fm.evaluation.export import export_safetensors
from alos2fm.evaluation.predict import (
    InferenceMeta,
    load_segmenter_for_inference,
    save_inference_checkpoint,
)
from alos2fm.models.segmenter import build_segmenter
from tests.tiny_models import TINY_SEGMENTER

META = InferenceMeta(
    model=TINY_SEGMENTER,
    bands=("HH",),
    mean_db=(-10.4327,),
    std_db=(5.8041,),
    class_names=("water", "urban", "rice"),
    class_colours=((0, 0, 255), (255, 0, 0), (0, 200, 0)),
    patch_size=32,
)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = build_segmenter(TINY_SEGMENTER).eval()
    path = tmp_path_factory.mktemp("export") / "best.ckpt"
    return model, save_inference_checkpoint(model, META, path)


@pytest.mark.slow  # ~15 s on one core: torch.export tracing and ONNX translation
def test_onnx_runtime_agrees_with_pytorch_for_any_batch(checkpoint, tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    model, path = checkpoint
    folder = tmp_path / "out"
    result = CliRunner().invoke(app, ["export", "--checkpoint", str(path), "--out", str(folder)])
    assert result.exit_code == 0, result.output
    session = ort.InferenceSession(
        str(folder / "segmenter.onnx"), providers=["CPUExecutionProvider"]
    )
    assert [i.name for i in session.get_inputs()] == ["image"]
    for batch in (1, 3):  # neither is the batch of 2 used to trace the graph
        tiles = torch.randn(batch, 1, 32, 32)
        (onnx_logits,) = session.run(["logits"], {"image": tiles.numpy()})
        with torch.no_grad():
            torch_logits = model(tiles).numpy()
        assert onnx_logits.shape == (batch, 3, 32, 32)
        np.testing.assert_allclose(onnx_logits, torch_logits, rtol=1e-4, atol=1e-4)
    stored = json.loads((folder / "meta.json").read_text())
    assert InferenceMeta.from_hparams(stored) == META
    assert sorted(p.name for p in folder.iterdir()) == [
        "README.md",  # the model card, and the encoder in the timm hub layout
        "absolute_pos_embed.safetensors",
        "config.json",
        "meta.json",
        "model.safetensors",
        "segmenter.onnx",
        "segmenter.safetensors",
    ]


def test_safetensors_hold_the_weights_and_the_metadata(checkpoint, tmp_path: Path) -> None:
    model, path = checkpoint
    loaded, meta = load_segmenter_for_inference(path)
    folder = tmp_path
    export_safetensors(loaded, meta, folder / "segmenter.safetensors")
    _rebuilds(TINY_SEGMENTER, folder / "segmenter.safetensors", model)
    with safe_open(folder / "segmenter.safetensors", "pt") as f:
        stored = json.loads(f.metadata()["alos2fm"])
    assert InferenceMeta.from_hparams(stored) == META
    assert sorted(p.name for p in folder.iterdir()) == ["segmenter.safetensors"]  # no partials


def test_a_cnn_segmenter_exports_without_a_timm_encoder_folder(tmp_path: Path) -> None:
    """MERLIN's U-Net has no timm encoder to put in the hub layout: the export says so and
    writes the segmenter's files only (it used to fail looking for ``model.encoder``)."""
    from alos2fm.evaluation.export import export_checkpoint_encoder

    config = {"encoder": {"arch": "merlin", "in_chans": 1}, "num_classes": 3, "decoder": "merlin"}
    model = build_segmenter(config).eval()
    meta = InferenceMeta(**{**META.__dict__, "model": config})
    path = save_inference_checkpoint(model, meta, tmp_path / "best.ckpt")
    loaded, loaded_meta = load_segmenter_for_inference(path)
    assert export_checkpoint_encoder(loaded, loaded_meta, path, tmp_path / "out") == ()
    export_safetensors(loaded, loaded_meta, tmp_path / "segmenter.safetensors")
    _rebuilds(config, tmp_path / "segmenter.safetensors", model)


def _rebuilds(config: dict, weights: Path, model: torch.nn.Module) -> None:
    """A segmenter built from ``config`` with the exported ``weights`` computes ``model``."""
    rebuilt = build_segmenter(config)
    rebuilt.load_state_dict(load_file(weights))
    tiles = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(tiles), model(tiles))
