"""``alos2fm import-weights``: a released checkpoint of the method's authors -> our formats.

- an encoder (SAR-W-SimMIM ALOS-2 HH, SAR-W-MixMAE Sentinel-1) -> ``encoder.safetensors``
  + ``encoder.json``, the same pair that ``alos2fm pretrain`` writes, so ``finetune
  --encoder`` takes it; ``encoder.json`` adds the source file, its SHA-256, the licence
  and the attribution the authors ask for;
- the fine-tuned ALOS-2 segmenter -> ``segmenter.ckpt``, a checkpoint in the fine-tuning
  engine's layout that ``predict``, ``evaluate`` and ``export`` accept as is.

Every import writes ``import_report.txt``: what was converted, and each dropped entry
with why it was dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from alos2fm.atomic import atomic_path
from alos2fm.interop.authors import Conversion, Format, convert
from alos2fm.interop.safe_load import load_checkpoint_safely
from alos2fm.models.segmenter import WeightsError
from alos2fm.outputs import claim_folder

log = logging.getLogger(__name__)

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_META = "encoder.json"
SEGMENTER_CHECKPOINT = "segmenter.ckpt"
REPORT = "import_report.txt"
IMPORT_FILES = (ENCODER_WEIGHTS, ENCODER_META, SEGMENTER_CHECKPOINT, REPORT)

# The paper's standardisation of ALOS-2 HH sigma0 in dB (SPEC.md section 1).
ALOS2_HH = {"bands": ["HH"], "mean": [-10.4327], "std": [5.8041]}
# SAR-W-MixMAE's Sentinel-1 statistics (VH, VV), per BigEarthNet version.
SENTINEL1_STATISTICS = {
    "benv1": {"bands": ["VH", "VV"], "mean": [-19.2309, -12.5951], "std": [3.1672, 2.9644]},
    "benv2": {"bands": ["VH", "VV"], "mean": [-19.1966, -12.5144], "std": [5.4501, 5.0019]},
}
# Published checksums (first and last hex digits) of the SAR-W-MixMAE pretraining files.
KNOWN_SHA256 = {
    "benv1_pretrain_checkpoint_64.pth": ("b4f385f9", "0700"),
    "benv2_pretrain_checkpoint_64.pth": ("13ab3855", "0b93"),
}
ALOS2_ATTRIBUTION = (
    "Source data: ALOS-2, (c) JAXA, provided under the JAXA-AIST agreement. Model: "
    "Imamoglu, Caglayan, Kouyama (AIST), 'A Tutorial on ALOS2 SAR Utilization', "
    "arXiv 2603.15119 (Hugging Face gsvrg/ALOS-2_FM)."
)
MIXMAE_ATTRIBUTION = (
    "Model: SAR-W-MixMAE, arXiv 2503.01181 (github.com/acaglayan/SAR-W-MixMAE), pretrained "
    "on Sentinel-1 BigEarthNet."
)
# Class weights of the authors' fine-tuning code, index order (WEIGHTS_INTEROP.md).
AUTHORS_CLASS_WEIGHTS = (0.1135, 0.1077, 0.1068, 0.1132, 0.0675, 0.1218, 0.1246, 0.1206, 0.1242)

ChannelAdaptation = Literal["sum"]


@dataclass(frozen=True)
class ImportResult:
    format: Format
    files: tuple[Path, ...]
    report: str


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_known_hash(path: Path, digest: str) -> None:
    known = KNOWN_SHA256.get(path.name)
    if known is not None and not (digest.startswith(known[0]) and digest.endswith(known[1])):
        log.warning(
            "%s: SHA-256 %s differs from the published %s...%s: not the released file",
            path,
            digest,
            *known,
        )


def _input_statistics(
    fmt: Format, path: Path, statistics: str | None, adaptation: ChannelAdaptation | None
) -> dict[str, Any]:
    """Bands and dB mean/std the encoder was pretrained with (or, adapted, is fed)."""
    if fmt != "mixmae":
        return dict(ALOS2_HH)
    if adaptation is not None:  # the ALOS-2 HH standardisation for the summed kernel
        return dict(ALOS2_HH)
    name = statistics or next((k for k in SENTINEL1_STATISTICS if k in path.name), None)
    if name not in SENTINEL1_STATISTICS:
        raise WeightsError(
            "cannot tell which BigEarthNet statistics this MixMAE file was pretrained with",
            path,
            f"give --statistics {' or '.join(SENTINEL1_STATISTICS)}",
        )
    return dict(SENTINEL1_STATISTICS[name])


def adapt_channels(
    conversion: Conversion, adaptation: ChannelAdaptation, path: Path
) -> dict[str, str]:
    """A heuristic: the patch embedding's kernel summed over its input channels, so that a
    multi-channel encoder (MixMAE's VH, VV) takes one band (ALOS-2 HH). Returns its record."""
    weight = conversion.encoder_state["patch_embed.proj.weight"]
    if weight.shape[1] == 1:
        raise WeightsError("the encoder already takes one channel", path, "drop --adapt-channels")
    conversion.encoder_state["patch_embed.proj.weight"] = weight.sum(dim=1, keepdim=True)
    conversion.encoder_config["in_chans"] = 1
    return {
        "method": adaptation,
        "from_channels": str(weight.shape[1]),
        "note": "heuristic: one band fed where the encoder saw several; fine-tune before use",
    }


def _write_atomically(path: Path, write) -> Path:
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def _write_encoder(
    conversion: Conversion, out: Path, source: dict[str, Any], data: dict[str, Any]
) -> list[Path]:
    from safetensors.torch import save_file

    weights = out / ENCODER_WEIGHTS
    tensors = {k: v.contiguous() for k, v in conversion.encoder_state.items()}
    _write_atomically(
        weights,
        lambda p: save_file(tensors, str(p), metadata={"producer": "alos2fm import-weights"}),
    )
    method = "mixmae" if conversion.format == "mixmae" else "simmim"
    meta = {
        "encoder": conversion.encoder_config,
        "data": data | {"units": "dB"},
        "method": method,
        # The authors computed SAR-W after standardising the input (SPEC.md section 2).
        "weighting": {"kind": "sar", "scale": 1.0, "mode": "per_channel", "source": "normalized"},
        "sha256": sha256(weights),
        **source,
    }
    meta_path = out / ENCODER_META
    _write_atomically(meta_path, lambda p: p.write_text(json.dumps(meta, indent=2) + "\n"))
    return [weights, meta_path]


def _class_names(classes: str | Path | None, count: int, path: Path) -> dict[str, list]:
    """Names and colours of the segmenter's classes from a user's class table, or generic."""
    if classes is None:
        log.warning(
            "%s: the authors did not publish their %d class names; the map will say "
            "class_0..class_%d (name them with --classes TABLE.yaml)",
            path,
            count,
            count - 1,
        )
        import matplotlib

        palette = matplotlib.colormaps["tab10"].colors
        colours = [[round(255 * c) for c in palette[i % len(palette)]] for i in range(count)]
        return {"names": [f"class_{i}" for i in range(count)], "colours": colours}
    from alos2fm.data.classes import load_class_table

    table = load_class_table(classes)
    if table.num_classes != count:
        raise WeightsError(
            f"the class table {table.name!r} has {table.num_classes} classes, the segmenter "
            f"{count}",
            Path(str(classes)),
            f"give a table of {count} classes in the model's index order",
        )
    return {
        "names": [table.names[i] for i in range(count)],
        "colours": [list(table.colors[i]) for i in range(count)],
    }


def _write_segmenter(
    conversion: Conversion, out: Path, source: dict[str, Any], classes: dict[str, list]
) -> list[Path]:
    """A checkpoint that ``FinetuneModule.load_from_checkpoint`` and the inference loader
    both read: the fine-tuning module itself, built from its hyper-parameters, holding the
    converted weights (so its layout is the engine's, whatever else the module keeps)."""
    import lightning

    from alos2fm.data.recipe import Preprocessing
    from alos2fm.train.config import resolve_config
    from alos2fm.train.finetune import FinetuneModule

    classifier = conversion.decoder_state["decoder.prog_head.cls_seg.weight"]
    width = int(conversion.decoder_state["decoder.decoder.conv_x1.weight"].shape[0])
    config = resolve_config(
        "finetune",
        overrides={
            "model": conversion.encoder_config,
            "decoder": "authors_upernet",
            "decoder_channels": width,
            "data": {"normalisation": "paper"},
        },
    )
    module = FinetuneModule(
        config=config.model_dump(mode="json"),
        model={
            "encoder": conversion.encoder_config,
            "num_classes": int(classifier.shape[0]),
            "decoder_channels": width,
            "decoder": "authors_upernet",
        },
        data=ALOS2_HH
        | {
            "patch_size": conversion.encoder_config["img_size"],
            "units": "dB",
            # The authors' patches are L2.1 pixels as read: no multilook, no speckle filter.
            "preprocessing": Preprocessing().as_dict(),
        },
        classes=classes,
        class_weights=list(AUTHORS_CLASS_WEIGHTS) if classifier.shape[0] == 9 else None,
    )
    state = {f"encoder.{k}": v for k, v in conversion.encoder_state.items()}
    module.segmenter.load_state_dict(state | conversion.decoder_state, strict=True)
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
        "provenance": source,  # beside the hyper-parameters: the module takes no such argument
    }
    path = out / SEGMENTER_CHECKPOINT
    return [_write_atomically(path, lambda p: torch.save(checkpoint, p))]


def import_weights(
    path: str | Path,
    out: str | Path,
    fmt: Format | Literal["auto"] = "auto",
    classes: str | Path | None = None,
    adapt: ChannelAdaptation | None = None,
    statistics: str | None = None,
    overwrite: bool = False,
) -> ImportResult:
    """Convert a released file into ``out``; see the module docstring for what is written.

    Args:
        path: the released ``.pth`` (read without arbitrary unpickling).
        fmt: ``auto`` (detected), ``simmim``, ``mixmae`` or ``simmim-upernet``.
        classes: class table naming the fine-tuned segmenter's classes in index order.
        adapt: ``sum``: feed one band to a multi-channel encoder (a heuristic).
        statistics: MixMAE only: ``benv1`` or ``benv2`` (default: from the file name).
    """
    path, out = Path(path), Path(out)
    digest = sha256(path) if path.is_file() else ""
    content = load_checkpoint_safely(path)
    _check_known_hash(path, digest)
    conversion = convert(content, path, fmt)
    source: dict[str, Any] = {
        "source": {"file": path.name, "sha256": digest, "format": conversion.format},
        "licence": "MIT" if conversion.format != "mixmae" else "not stated by the authors",
        "attribution": ALOS2_ATTRIBUTION if conversion.format != "mixmae" else MIXMAE_ATTRIBUTION,
    }
    if adapt is not None:
        source["channel_adaptation"] = adapt_channels(conversion, adapt, path)
    data = _input_statistics(conversion.format, path, statistics, adapt)
    if len(data["bands"]) != conversion.encoder_config["in_chans"]:
        raise WeightsError(
            f"the encoder takes {conversion.encoder_config['in_chans']} channel(s), its "
            f"statistics name bands {data['bands']}",
            path,
            "check --format",
        )
    with claim_folder(
        out,
        "import-weights",
        outputs=IMPORT_FILES,
        inputs=[path, Path(classes) if classes and Path(classes).is_file() else None],
        overwrite=overwrite,
        identity={"source": source["source"], "adaptation": adapt, "statistics": statistics},
    ):
        if conversion.format == "simmim-upernet":
            count = conversion.decoder_state["decoder.prog_head.cls_seg.weight"].shape[0]
            names = _class_names(classes, count, path)
            files = _write_segmenter(conversion, out, source, names)
        else:
            files = _write_encoder(conversion, out, source, data)
        report = f"{path} ({conversion.format}, sha256 {digest})\n{conversion.report()}\n"
        files.append(_write_atomically(out / REPORT, lambda p: p.write_text(report)))
        return ImportResult(conversion.format, tuple(files), report)
