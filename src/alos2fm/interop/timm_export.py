"""An encoder for other tools: a folder in the timm / Hugging Face hub layout, with a card.

``export_encoder_folder(encoder, config, facts, out)`` writes, atomically:

- ``config.json``: ``architecture`` (a timm entry point), ``model_args`` (everything
  ``timm.create_model(architecture, **model_args)`` needs: sizes, channels, per-stage
  windows, widths, depths, heads) and ``pretrained_cfg`` (input size, the dB mean/std),
  so ``timm.create_model("local-dir:FOLDER", pretrained=True)`` loads it too; ``bands``
  and ``input_units`` sit at the top level because timm's ``PretrainedCfg`` rejects keys
  it does not know (a ``bands`` entry there would break timm's own loading);
- ``model.safetensors``: the encoder under timm's key names, every tensor of plain timm's
  model and nothing else (checked by loading it strictly into one before writing);
- ``absolute_pos_embed.safetensors``: the APE, for Swin encoders that have one (timm's Swin
  has none, so strict loading would refuse the key);
- ``README.md``: the model card (data, bands, normalisation, recipe, metrics, licence and
  attribution) with the lines that load the folder in timm and restore what plain timm
  cannot express (``restore_lines``).

What timm's arguments express: per-stage window sizes (``window_size`` takes one per
stage). What they cannot: an APE (saved apart, added back by a forward hook) and blocks that
never shift their windows (MixMAE): timm shifts every second block wherever the grid exceeds
the window, with the same weights, so the card and ``config.json`` say so and show the
three lines that turn the shift off. CNN encoders (U-Net segmenters) are refused.

``encoder_card_facts`` and ``checkpoint_card_facts`` gather what the card says from an
``encoder.json`` or a fine-tuned checkpoint and the run folder around it.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
from torch import Tensor, nn

from alos2fm.atomic import atomic_path
from alos2fm.models.backbones import ARCHITECTURES, resolve_encoder_config
from alos2fm.models.segmenter import WeightsError

TIMM_CONFIG = "config.json"
TIMM_WEIGHTS = "model.safetensors"
APE_WEIGHTS = "absolute_pos_embed.safetensors"
APE_KEY = "patch_embed.absolute_pos_embed"
CARD = "README.md"
# Everything export_encoder_folder may write.
ENCODER_FOLDER_FILES = (TIMM_CONFIG, TIMM_WEIGHTS, APE_WEIGHTS, CARD)
# Where the card's code reads the folder from: a user replaces it with the folder's path.
CARD_FOLDER = "path/to/this/folder"
INPUT_UNITS = (
    "sigma0 in dB, bands in the order of 'bands'; standardise each band as "
    "(dB - mean) / std with pretrained_cfg's mean and std (dB, not [0, 1] pixel values); "
    "no-data pixels are 0 after standardising"
)
# Our create_encoder arguments that are not timm's (handled by the export itself).
_OURS = ("arch", "ape", "shift", "window_size")


@dataclass(frozen=True)
class TimmLayout:
    """An encoder as plain timm builds it, plus what timm's arguments cannot express."""

    architecture: str
    model_args: dict[str, Any]
    state: dict[str, Tensor]  # loads with strict=True into timm.create_model(...)
    ape: Tensor | None  # (1, H/p, W/p, D), added to the patch embedding's output
    ape_trainable: bool  # learned (True) or a fixed sin-cos table (False)
    unshifted: bool  # our blocks never shift where timm's would


@dataclass
class CardFacts:
    """What a model card states, gathered from encoder.json or a checkpoint."""

    title: str
    kind: str  # "pretrained encoder" or "fine-tuned segmenter"
    bands: list[str]
    mean: list[float]
    std: list[float]
    dataset: Mapping[str, str] | None = None
    recipe: list[tuple[str, str]] = field(default_factory=list)
    classes: list[str] | None = None
    preprocessing: Mapping[str, Any] | None = None
    metrics: Mapping[str, Any] | None = None
    metrics_note: str = "no test metrics.json next to the run"
    licence: str | None = None
    attribution: str | None = None
    source: Mapping[str, Any] | None = None
    extra_files: list[str] = field(default_factory=list)  # e.g. the segmenter's ONNX


def _timm_windows(windows: list[int]) -> int | list[Any]:
    """timm's ``window_size``: one int, or one per stage. timm reads a list of two ints as
    (h, w) for every stage, so two stages need explicit (h, w) pairs."""
    if len(set(windows)) == 1:
        return windows[0]
    return [[w, w] for w in windows] if len(windows) == 2 else windows


def timm_layout(encoder: nn.Module, config: Mapping[str, Any]) -> TimmLayout:
    """The encoder's tensors under timm's names and the arguments that rebuild it in timm.

    Raises:
        WeightsError: a CNN encoder, or (a bug) tensors that plain timm would not load.
    """
    config = resolve_encoder_config(config)
    arch = config["arch"]
    if arch not in ARCHITECTURES:
        raise WeightsError(
            f"the timm hub layout covers Swin and ViT encoders, not {arch!r}",
            hint="export the segmenter's ONNX and safetensors only (alos2fm export --checkpoint)",
        )
    architecture = ARCHITECTURES[arch]
    model_args = {k: v for k, v in config.items() if k not in _OURS} | {"num_classes": 0}
    swin = arch.startswith("swin")
    if swin:
        stages = len(encoder.layers)
        windows = config["window_size"]
        windows = [windows] * stages if isinstance(windows, int) else list(windows)
        model_args["window_size"] = _timm_windows(windows)
    state = {k: v.detach().cpu().contiguous() for k, v in encoder.state_dict().items()}
    ape = state.pop(APE_KEY, None)
    reference = timm.create_model(architecture, pretrained=False, **model_args)
    expected = reference.state_dict()
    wrong = sorted(set(state) ^ set(expected)) or [
        k for k in state if state[k].shape != expected[k].shape
    ]
    if wrong:
        raise WeightsError(
            f"{len(wrong)} encoder tensors do not fit plain timm {architecture} (e.g. {wrong[0]})",
            hint="report this: the export's model_args do not rebuild the encoder",
        )
    reference.load_state_dict(state, strict=True)
    unshifted = swin and not config["shift"] and _shifts(reference)
    trainable = ape is not None and config["ape"] is True
    return TimmLayout(architecture, model_args, state, ape, trainable, unshifted)


def _shifts(model: nn.Module) -> bool:
    """Whether any block of a timm Swin shifts its windows (none does where grid <= window)."""
    return any(any(block.shift_size) for stage in model.layers for block in stage.blocks)


def timm_config(layout: TimmLayout, facts: CardFacts) -> dict[str, Any]:
    """``config.json`` as timm's hub loader reads it (see the module docstring)."""
    args = layout.model_args
    size = args["img_size"]
    pretrained_cfg: dict[str, Any] = {
        "input_size": [args["in_chans"], size, size],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "mean": list(facts.mean),
        "std": list(facts.std),
        "num_classes": 0,
        "first_conv": "patch_embed.proj",
        "classifier": "head.fc" if layout.architecture.startswith("swin") else "head",
        "description": f"alos2fm {facts.kind} ({facts.title}): sigma0 dB input, see input_units",
    }
    if facts.licence:
        pretrained_cfg["license"] = facts.licence
    config: dict[str, Any] = {
        "architecture": layout.architecture,
        "num_classes": 0,
        "model_args": args,
        "pretrained_cfg": pretrained_cfg,
        "bands": list(facts.bands),
        "input_units": INPUT_UNITS,
    }
    if layout.ape is not None:
        config["absolute_pos_embed"] = {
            "file": APE_WEIGHTS,
            "key": "absolute_pos_embed",
            "shape": list(layout.ape.shape),
            "kind": "learned" if layout.ape_trainable else "fixed 2-D sin-cos",
            "added_to": "the output of patch_embed, (B, H/patch, W/patch, embed_dim)",
        }
    if layout.unshifted:
        config["window_shift"] = False  # timm's Swin shifts every second block: see README.md
    return config


def restore_lines(layout: TimmLayout) -> list[str]:
    """Python lines, run after ``model = timm.create_model(...)`` with ``folder`` set, that
    give plain timm's model what its arguments cannot (the APE, unshifted windows)."""
    lines = []
    if layout.ape is not None:
        lines += [
            "# timm's Swin has no absolute position embedding: add it after the patch embedding.",
            f'ape = load_file(f"{{folder}}/{APE_WEIGHTS}")["absolute_pos_embed"]',
            "model.patch_embed.absolute_pos_embed = torch.nn.Parameter("
            f"ape, requires_grad={layout.ape_trainable})",
            "model.patch_embed.register_forward_hook("
            "lambda module, args, out: out + module.absolute_pos_embed)",
        ]
    if layout.unshifted:
        lines += [
            "# This encoder never shifts its windows (MixMAE); timm shifts every second block.",
            "for block in (block for stage in model.layers for block in stage.blocks):",
            "    block.shift_size = block.target_shift_size = (0, 0)",
            "    block.attn_mask = None",
        ]
    return lines


def usage_code(layout: TimmLayout) -> str:
    """The card's Python block: load the folder in timm, restore, extract features."""
    channels, size = layout.model_args["in_chans"], layout.model_args["img_size"]
    lines = [
        "import timm",
        "import torch",
        "from safetensors.torch import load_file",
        "",
        f'folder = "{CARD_FOLDER}"',
        'model = timm.create_model(f"local-dir:{folder}", pretrained=True).eval()',
        *restore_lines(layout),
        "",
        f"db = torch.full((1, {channels}, {size}, {size}), -10.0)  # sigma0 dB, in 'bands' order",
        "cfg = model.pretrained_cfg",
        'mean, std = (torch.tensor(cfg[k]).view(-1, 1, 1) for k in ("mean", "std"))',
        "x = (db - mean) / std  # mean and std are in dB",
        "maps = model.forward_intermediates(x, intermediates_only=True)  # NCHW, per stage/block",
    ]
    return "\n".join(lines)


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]


def model_card(layout: TimmLayout, facts: CardFacts) -> str:
    """The export folder's README.md (Hugging Face model card, front matter for the hub)."""
    front = ["---", "library_name: timm", "tags: [sar, alos-2, image-feature-extraction]"]
    if (facts.licence or "").lower() == "mit":
        front.append("license: mit")
    lines = [*front, "---", "", f"# {facts.title}", ""]
    lines += [
        f"An alos2fm {facts.kind}: its encoder as timm's `{layout.architecture}` with the "
        "arguments in `config.json` (`model_args`)."
        + (
            f" Also here: {', '.join(f'`{f}`' for f in facts.extra_files)}."
            if facts.extra_files
            else ""
        ),
        "",
        "## Data",
        "",
    ]
    # The dataset's folder name only: the card goes to the Hub, the local path stays here.
    named = facts.dataset and (facts.dataset.get("name") or Path(facts.dataset["path"]).name)
    dataset = f"`{named}`" if named else "not recorded"
    rows = [("dataset", dataset), ("bands", ", ".join(facts.bands))]
    if facts.source:
        rows.append(
            ("source file", f"`{facts.source.get('file')}` (sha256 {facts.source.get('sha256')})")
        )
    if facts.classes:
        rows.append(("classes", ", ".join(f"{i} {n}" for i, n in enumerate(facts.classes))))
    if facts.preprocessing:
        rows.append(("preprocessing", json.dumps(dict(facts.preprocessing))))
    lines += [*_table(rows), "", "## Normalisation", ""]
    lines += [
        "Input: σ0 backscatter in **dB**, one channel per band in this order, standardised "
        "per band as `(dB - mean) / std` (mean and std in dB, as in `config.json`'s "
        "`pretrained_cfg`; timm's image transforms for [0, 1] pixels do not apply). No-data "
        "pixels enter as 0 after standardising.",
        "",
        "| band | mean (dB) | std (dB) |",
        "|---|---|---|",
        *(
            f"| {b} | {m} | {s} |"
            for b, m, s in zip(facts.bands, facts.mean, facts.std, strict=True)
        ),
        "",
        "## Recipe",
        "",
        *(_table(facts.recipe) if facts.recipe else ["not recorded"]),
        "",
        "## Metrics",
        "",
    ]
    if facts.metrics:
        rows = [
            (name, str(facts.metrics[name]))
            for name in ("miou", "overall_accuracy", "mean_accuracy", "kappa")
            if name in facts.metrics
        ]
        lines += [facts.metrics_note, "", *_table(rows)]
    else:
        lines.append(facts.metrics_note)
    lines += ["", "## Use with timm", "", "```python", usage_code(layout), "```", ""]
    if layout.ape is not None or layout.unshifted:
        lines += [
            "Plain `timm.create_model(architecture, **model_args)` loads `model.safetensors` "
            "strictly, but computes this encoder only with the restoring lines above: "
            + "; ".join(
                part
                for part, present in (
                    (
                        f"the absolute position embedding is in `{APE_WEIGHTS}`",
                        layout.ape is not None,
                    ),
                    ("the windows never shift (`window_shift: false`)", layout.unshifted),
                )
                if present
            )
            + ".",
            "",
        ]
    lines += ["## Licence and attribution", ""]
    lines.append(
        f"Licence: {facts.licence}."
        if facts.licence
        else "Licence: not recorded by alos2fm; the owner of the training data and of any "
        "weights it was fine-tuned from (their encoder.json) decides it."
    )
    if facts.attribution:
        lines += ["", f"Attribution: {facts.attribution}"]
    return "\n".join(lines) + "\n"


def export_encoder_folder(
    encoder: nn.Module, config: Mapping[str, Any], facts: CardFacts, out: str | Path
) -> list[Path]:
    """Write config.json, model.safetensors, the APE file if any and README.md into ``out``."""
    from safetensors.torch import save_file

    layout = timm_layout(encoder, config)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tensors = [(TIMM_WEIGHTS, layout.state)]
    if layout.ape is not None:
        tensors.append((APE_WEIGHTS, {"absolute_pos_embed": layout.ape.contiguous()}))
    for name, state in tensors:
        with atomic_path(out / name) as tmp:
            save_file(state, str(tmp), metadata={"format": "pt", "producer": "alos2fm export"})
        written.append(out / name)
    for name, text in (
        (TIMM_CONFIG, json.dumps(timm_config(layout, facts), indent=2) + "\n"),
        (CARD, model_card(layout, facts)),
    ):
        with atomic_path(out / name) as tmp:
            tmp.write_text(text)
        written.append(out / name)
    return written


# --- what the card says ------------------------------------------------------------------


def _provenance(meta: Mapping[str, Any]) -> dict[str, Any]:
    """Licence, attribution and source file that import-weights records."""
    return {
        "licence": meta.get("licence"),
        "attribution": meta.get("attribution"),
        "source": meta.get("source"),
    }


def encoder_card_facts(meta: Mapping[str, Any], title: str) -> CardFacts:
    """Card facts of a pretrained (or imported) encoder from its ``encoder.json``."""
    data = meta["data"]
    weighting = meta.get("weighting") or {}
    recipe = [("method", str(meta.get("method", "not recorded")))]
    if weighting:
        recipe.append(("weighting", ", ".join(f"{k}={v}" for k, v in weighting.items())))
    for name, key in (("epochs", "epochs"), ("optimiser steps", "global_step")):
        if key in meta:
            recipe.append((name, str(meta[key])))
    if "channel_adaptation" in meta:
        recipe.append(("channel adaptation", json.dumps(meta["channel_adaptation"])))
    if meta.get("source"):
        recipe.append(("trained by", "the method's authors (imported with alos2fm import-weights)"))
    return CardFacts(
        title=title,
        kind="pretrained encoder",
        bands=list(data["bands"]),
        mean=[float(v) for v in data["mean"]],
        std=[float(v) for v in data["std"]],
        dataset=meta.get("dataset"),
        recipe=recipe,
        metrics_note="no evaluation recorded for a pretrained encoder (fine-tune it, then "
        "export the checkpoint)",
        **_provenance(meta),
    )


def _test_metrics(checkpoint: Path) -> tuple[dict[str, Any] | None, str]:
    """RUN/test/metrics.json for RUN/checkpoints/X.ckpt (or beside X.ckpt), if it scores X."""
    for folder in (checkpoint.parent, checkpoint.parent.parent):
        path = folder / "test" / "metrics.json"
        if not path.is_file():
            continue
        scores = json.loads(path.read_text())
        scored = Path(str(scores.get("checkpoint", ""))).name
        if scored != checkpoint.name:  # the scores of another checkpoint of the run
            note = f"the run's `test/metrics.json` scores {scored}, not this checkpoint"
            return None, f"{note}: not reported"
        return scores, "Test split, from the run's `test/metrics.json`:"
    return None, "no test metrics.json next to the run"


def checkpoint_card_facts(checkpoint: str | Path, title: str) -> CardFacts:
    """Card facts of a fine-tuned checkpoint: its hyper-parameters and the run around it."""
    checkpoint = Path(checkpoint)
    from alos2fm.contract import open_checkpoint

    content = open_checkpoint(checkpoint)
    hparams = content["hyper_parameters"]
    data, config = hparams.get("data", {}), hparams.get("config", {})
    recipe = [("decoder", str(hparams.get("model", {}).get("decoder", "upernet")))]
    if "provenance" in content:
        recipe.append(("trained by", "the method's authors (imported with alos2fm import-weights)"))
    elif config:  # written by alos2fm finetune (not by save_inference_checkpoint alone)
        loss, optim, schedule = (config.get(k, {}) for k in ("loss", "optim", "schedule"))
        recipe += [
            ("encoder initialisation", "pretrained" if hparams.get("pretrained") else "random"),
            ("loss", f"{loss.get('name')} (class weights {hparams.get('class_weights')})"),
            (
                "optimiser",
                f"AdamW, base_lr {optim.get('base_lr')}, layer_decay {optim.get('layer_decay')}",
            ),
            (
                "schedule",
                f"{schedule.get('kind')}, {schedule.get('epochs')} epochs, "
                f"max_steps {schedule.get('max_steps')}",
            ),
            (
                "trained",
                f"epoch {content.get('epoch')}, optimiser step {content.get('global_step')}",
            ),
        ]
    metrics, note = _test_metrics(checkpoint)
    return CardFacts(
        title=title,
        kind="fine-tuned segmenter",
        bands=list(data["bands"]),
        mean=[float(v) for v in data["mean"]],
        std=[float(v) for v in data["std"]],
        dataset=data.get("dataset"),
        recipe=recipe,
        classes=list(hparams.get("classes", {}).get("names", [])) or None,
        preprocessing=data.get("preprocessing"),
        metrics=metrics,
        metrics_note=note,
        **_provenance(content.get("provenance", {})),
    )
