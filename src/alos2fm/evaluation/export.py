"""Deployment export of a fine-tuned segmenter: safetensors weights and an ONNX graph.

``export_segmenter(checkpoint, out_dir)`` writes, atomically:
- ``segmenter.safetensors``: the segmenter's tensors (no pickle), with the inference
  metadata (model description, bands, dB mean/std, classes, patch size) as JSON in the
  file's metadata under ``alos2fm``;
- ``segmenter.onnx``: input ``image`` float32 ``(N, C, T, T)`` = standardised
  backscatter ``(dB - mean) / std`` with no-data pixels set to 0, output ``logits``
  ``(N, K, T, T)``; the batch ``N`` is dynamic, ``T`` is the patch size;
- ``meta.json``: the same metadata, for tools that do not read safetensors.

The ONNX graph comes from the ``torch.export``-based exporter (``dynamo=True``, PyTorch
>= 2.5, with ``onnxscript``: the ``deploy`` extra).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from alos2fm.evaluation.predict import InferenceMeta, load_segmenter_for_inference
from alos2fm.models.segmenter import Segmenter

ONNX_OPSET = 18
METADATA_KEY = "alos2fm"


@dataclass(frozen=True)
class ExportResult:
    safetensors: Path
    onnx: Path
    meta: Path


def _partial(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def export_safetensors(model: Segmenter, meta: InferenceMeta, path: str | Path) -> Path:
    """The segmenter's tensors with ``meta`` as JSON metadata, written atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    save_file(tensors, str(_partial(path)), metadata={METADATA_KEY: json.dumps(meta.hparams())})
    os.replace(_partial(path), path)
    return path


def export_onnx(
    model: Segmenter, meta: InferenceMeta, path: str | Path, opset: int = ONNX_OPSET
) -> Path:
    """ONNX graph of ``model`` for ``(N, C, T, T)`` standardised tiles, ``N`` dynamic."""
    path = Path(path)
    size = meta.patch_size
    # Batch 2, not 1: torch.export specialises dimensions of size 1 to constants.
    example = torch.zeros(2, len(meta.bands), size, size)
    torch.onnx.export(
        model.eval().cpu(),
        (example,),
        str(_partial(path)),
        input_names=["image"],
        output_names=["logits"],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        opset_version=opset,
        dynamo=True,
        external_data=False,
        verbose=False,
    )
    os.replace(_partial(path), path)
    return path


def export_segmenter(checkpoint: str | Path, out_dir: str | Path) -> ExportResult:
    """``alos2fm export``: write safetensors, ONNX and meta.json for a checkpoint."""
    model, meta = load_segmenter_for_inference(checkpoint, "cpu")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    meta_path = out_dir / "meta.json"
    _partial(meta_path).write_text(json.dumps(meta.hparams(), indent=2) + "\n")
    os.replace(_partial(meta_path), meta_path)
    return ExportResult(
        safetensors=export_safetensors(model, meta, out_dir / "segmenter.safetensors"),
        onnx=export_onnx(model, meta, out_dir / "segmenter.onnx"),
        meta=meta_path,
    )
