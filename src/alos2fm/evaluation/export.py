"""Export of a fine-tuned segmenter (safetensors, ONNX) and of encoders for timm users.

``export_segmenter(checkpoint, out_dir)`` writes, atomically:
- ``segmenter.safetensors``: the segmenter's tensors (no pickle), with the inference
  metadata (model description, bands, dB mean/std, classes, patch size) as JSON in the
  file's metadata under ``alos2fm``;
- ``segmenter.onnx``: input ``image`` float32 ``(N, C, T, T)`` = standardised
  backscatter ``(dB - mean) / std`` with no-data pixels set to 0, output ``logits``
  ``(N, K, T, T)``; the batch ``N`` is dynamic, ``T`` is the patch size;
- ``meta.json``: the same metadata, for tools that do not read safetensors;
- the encoder in the timm / Hugging Face hub layout with a model card (``config.json``,
  ``model.safetensors``, ``absolute_pos_embed.safetensors`` for an APE, ``README.md``:
  see :mod:`alos2fm.interop.timm_export`); not for CNN (U-Net) segmenters.

``export_pretrained_encoder(weights, out_dir)`` writes the hub layout and card of a
pretrained ``encoder.safetensors`` (with its ``encoder.json``).

The ONNX graph comes from the ``torch.export``-based exporter (``dynamo=True``, PyTorch
>= 2.5, with ``onnxscript``: the ``deploy`` extra).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from alos2fm.atomic import atomic_path
from alos2fm.evaluation.predict import InferenceMeta, load_segmenter_for_inference
from alos2fm.interop.timm_export import (
    ENCODER_FOLDER_FILES,
    checkpoint_card_facts,
    encoder_card_facts,
    export_encoder_folder,
)
from alos2fm.models.segmenter import Segmenter, WeightsError
from alos2fm.outputs import claim_folder

log = logging.getLogger(__name__)

ONNX_OPSET = 18
METADATA_KEY = "alos2fm"
SEGMENTER_FILES = ("segmenter.safetensors", "segmenter.onnx", "meta.json")


@dataclass(frozen=True)
class ExportResult:
    safetensors: Path
    onnx: Path
    meta: Path
    timm: tuple[Path, ...]  # the encoder's hub layout and card; empty for a CNN encoder


def export_safetensors(model: Segmenter, meta: InferenceMeta, path: str | Path) -> Path:
    """The segmenter's tensors with ``meta`` as JSON metadata, written atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {key: value.detach().contiguous() for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={METADATA_KEY: json.dumps(meta.hparams())})
    return path


def export_onnx(
    model: Segmenter, meta: InferenceMeta, path: str | Path, opset: int = ONNX_OPSET
) -> Path:
    """ONNX graph of ``model`` for ``(N, C, T, T)`` standardised tiles, ``N`` dynamic."""
    path = Path(path)
    size = meta.patch_size
    # Batch 2, not 1: torch.export specialises dimensions of size 1 to constants.
    example = torch.zeros(2, len(meta.bands), size, size)
    with atomic_path(path) as tmp:
        torch.onnx.export(
            model.eval().cpu(),
            (example,),
            str(tmp),
            input_names=["image"],
            output_names=["logits"],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
            opset_version=opset,
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    return path


def _run_name(path: Path) -> str:
    """RUN for RUN/checkpoints/best.ckpt, RUN/encoder.safetensors or DIR/segmenter.ckpt."""
    folder = path.parent.parent if path.parent.name == "checkpoints" else path.parent
    return folder.resolve().name


def export_checkpoint_encoder(
    model: Segmenter, meta: InferenceMeta, checkpoint: Path, out_dir: Path
) -> tuple[Path, ...]:
    """The segmenter's encoder in the hub layout, with the card of the whole export."""
    # A timm features_only CNN (unet) or MERLIN's U-Net (merlin): no timm hub model.
    if meta.model.get("decoder") in ("unet", "merlin"):
        log.warning(
            "%s: a CNN encoder has no timm hub export; ONNX and safetensors only", checkpoint
        )
        return ()
    facts = checkpoint_card_facts(checkpoint, f"{_run_name(checkpoint)} (alos2fm segmenter)")
    facts.extra_files = ["segmenter.safetensors", "segmenter.onnx", "meta.json"]
    return tuple(export_encoder_folder(model.encoder, meta.model["encoder"], facts, out_dir))


def export_segmenter(
    checkpoint: str | Path, out_dir: str | Path, overwrite: bool = False
) -> ExportResult:
    """``alos2fm export --checkpoint``: safetensors, ONNX, meta.json and the timm folder."""
    checkpoint = Path(checkpoint)
    model, meta = load_segmenter_for_inference(checkpoint, "cpu")
    out_dir = Path(out_dir)
    outputs = [*SEGMENTER_FILES, *ENCODER_FOLDER_FILES]
    with claim_folder(out_dir, "export", outputs=outputs, inputs=[checkpoint], overwrite=overwrite):
        timm_files = export_checkpoint_encoder(model, meta, checkpoint, out_dir)
        meta_path = out_dir / "meta.json"
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta.hparams(), indent=2) + "\n")
        return ExportResult(
            safetensors=export_safetensors(model, meta, out_dir / "segmenter.safetensors"),
            onnx=export_onnx(model, meta, out_dir / "segmenter.onnx"),
            meta=meta_path,
            timm=timm_files,
        )


def export_pretrained_encoder(
    weights: str | Path, out_dir: str | Path, overwrite: bool = False
) -> list[Path]:
    """``alos2fm export --encoder``: an ``encoder.safetensors`` (and the ``encoder.json``
    beside it) as a timm hub folder with its model card."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from alos2fm.contract import read_encoder_meta
    from alos2fm.models.backbones import build_encoder

    weights = Path(weights)
    meta = read_encoder_meta(weights)
    if meta is None:
        raise WeightsError(
            "no encoder.json beside the encoder weights",
            weights,
            "export the encoder.safetensors of a pretrain run or an import-weights folder",
        )
    encoder = build_encoder(meta["encoder"])
    try:
        state = load_file(weights)
    except (OSError, SafetensorError) as err:
        raise WeightsError(f"cannot read encoder weights: {err}", weights) from None
    try:  # strict: an export must hold exactly the weights that were trained
        encoder.load_state_dict(state, strict=True)
    except RuntimeError as err:  # torch lists every missing, unexpected or mis-shaped key
        detail = " ".join(str(err).split())[:300]
        raise WeightsError(
            f"the weights do not fit the encoder encoder.json describes: {detail}",
            weights,
            "keep the encoder.json written with these weights beside them",
        ) from None
    facts = encoder_card_facts(meta, f"{_run_name(weights)} (alos2fm encoder)")
    inputs = [Path(weights), Path(weights).with_name("encoder.json")]
    with claim_folder(
        Path(out_dir), "export", outputs=ENCODER_FOLDER_FILES, inputs=inputs, overwrite=overwrite
    ):
        return export_encoder_folder(encoder, meta["encoder"], facts, out_dir)
