"""Validated, frozen configurations for pretraining and fine-tuning.

Configuration flows one way: the defaults below -> a YAML preset that only overrides them
(``src/alos2fm/configs/presets/<name>.yaml``) -> ``--set key=value`` overrides from the
command line -> one frozen pydantic object that the components read. Unknown keys are
errors, so a typo in a preset or an override cannot silently fall back to a default.

Presets are named by facets (``paper-simmim``, ``cpu-tiny-seg``) and carry a ``stage`` key
(``pretrain`` or ``finetune``) so that a fine-tuning preset cannot start a pretraining run.

The absolute learning rate is *not* stored here: the config holds the base rate and its
reference batch, and :func:`alos2fm.train.optim.scaled_lr` derives the rate from the
effective batch once the number of processes is known.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from alos2fm.atomic import atomic_path
from alos2fm.errors import Alos2fmError, validation_problems


class ConfigError(Alos2fmError):
    """A preset, override or config file that does not make a valid configuration."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# --- pieces shared by both stages -------------------------------------------------------


class EncoderConfig(_Frozen):
    """Arguments of :func:`alos2fm.models.backbones.create_encoder`.

    ``embed_dim``, ``depths`` and ``num_heads`` default (None) to those of the timm model
    that ``arch`` names (swin_base: 128, 2-2-18-2, 4-8-16-32); set them for other sizes.
    """

    arch: str = "swin_base"
    in_chans: int = Field(1, ge=1)
    img_size: int = Field(256, ge=16)
    # One window for all stages, or one per stage (MixMAE as published: [8, 8, 8, 4]).
    window_size: int | tuple[int, ...] | None = 8
    ape: bool | Literal["sincos"] = True  # sincos: MixMAE's fixed 2-D sin-cos, never trained
    shift: bool = True  # False: no shifted windows (MixMAE's encoder)
    drop_path_rate: float = Field(0.0, ge=0.0, lt=1.0)
    embed_dim: int | None = Field(None, ge=1)
    depths: tuple[int, ...] | None = None
    num_heads: tuple[int, ...] | None = None

    def encoder_kwargs(self) -> dict[str, Any]:
        """The keyword arguments for ``create_encoder`` (unset size overrides left out)."""
        return self.model_dump(mode="json", exclude_none=True) | {"window_size": self.window_size}


class DataConfig(_Frozen):
    """How patches are fed: per-process batch, workers, augmentation and normalisation.

    Training windows of the model's size are cut at random positions inside the stored
    patches every step (``sampling``): ``uniform`` anywhere; ``labelled`` centred on a
    random labelled pixel; ``balanced`` centred on a pixel of a class drawn uniformly
    among the classes the patch holds (fine-tuning). Then the flips (or all 8 dihedral
    transforms), a per-sample dB gain offset and multiplicative speckle, in that order.
    """

    batch_size: int = Field(8, ge=1, description="patches per process and step")
    num_workers: int = Field(2, ge=0)
    sampling: Literal["uniform", "labelled", "balanced"] = "uniform"
    hflip: bool = True
    vflip: bool = True
    dihedral: bool = Field(False, description="the 8 rotations/flips instead of hflip/vflip")
    gain_jitter_db: float = Field(0.0, ge=0.0, description="std of a per-sample dB offset")
    speckle_looks: float | None = Field(
        None, gt=0.0, description="multiply power by Gamma(L, 1/L) speckle of L looks"
    )
    normalisation: Literal["stats", "paper", "encoder"] = Field(
        "stats",
        description="stats: per-band dB mean/std of stats.json; paper: HH constants; encoder: "
        "those the pretrained encoder was trained with (its encoder.json; fine-tuning only)",
    )
    label_fraction: float = Field(
        1.0, gt=0.0, le=1.0, description="seeded fraction of training patches (fine-tuning)"
    )
    label_budget: str | None = Field(
        None,
        description="training labels kept: a fraction ('1%', 0.01) or k parcels per class "
        "('k1'), seeded by the run's seed, nested",
    )
    min_parcel_pixels: int = Field(200, ge=1)

    @field_validator("label_budget", mode="before")
    @classmethod
    def _budget_parses(cls, value: Any) -> Any:
        # Parsed here so that a typo fails with the config, before torch loads; kept as
        # written (a number as its text) so that config.yaml says what the user gave.
        if value is None:
            return None
        from alos2fm.data.budget import LabelBudget

        LabelBudget.parse(value)
        return value if isinstance(value, str) else str(value)

    @model_validator(mode="after")
    def _one_label_subset(self) -> DataConfig:
        if self.label_budget is not None and self.label_fraction != 1.0:
            raise ValueError(
                "data.label_fraction (a share of patches) and data.label_budget (a share of "
                "labels) exclude each other: set one"
            )
        return self


class OptimConfig(_Frozen):
    """AdamW; the absolute LR is base_lr x effective_batch / reference_batch."""

    base_lr: float = Field(1e-4, gt=0.0)
    reference_batch: int = Field(512, ge=1)
    weight_decay: float = Field(0.05, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0.0)
    layer_decay: float | None = Field(
        None, gt=0.0, le=1.0, description="layer-wise LR decay (fine-tuning); None = off"
    )
    layer_decay_on_random_init: bool = Field(
        False, description="also decay a random encoder's layers (the paper's baseline does)"
    )


class ScheduleConfig(_Frozen):
    """Per-step LR multiplier: linear warm-up, then cosine or multistep (epochs in epochs).

    With ``max_steps`` the budget is in optimiser steps whatever the dataset's size:
    training stops after ``max_steps``, warm-up lasts ``warmup_fraction`` of them and the
    cosine ends at the last step (``epochs``, ``warmup_epochs`` and milestones then do not
    apply). Small datasets need this: an epoch of a few hundred patches is a few steps.
    """

    max_steps: int | None = Field(None, ge=1, description="budget in optimiser steps")
    warmup_fraction: float = Field(0.05, ge=0.0, lt=1.0, description="with max_steps")
    epochs: int = Field(800, ge=1, description="length of the LR schedule")
    stop_epoch: int | None = Field(
        None, ge=1, description="stop training here, before the schedule ends (MixMAE's best)"
    )
    warmup_epochs: float = Field(40, ge=0)
    kind: Literal["cosine", "multistep"] = "multistep"
    milestones: tuple[int, ...] = (700,)
    gamma: float = Field(0.1, gt=0.0)
    warmup_start_ratio: float = Field(0.0, ge=0.0, le=1.0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0, description="cosine floor / peak LR")

    @model_validator(mode="after")
    def _fits(self) -> ScheduleConfig:
        if self.warmup_epochs > self.epochs:
            raise ValueError(f"warmup_epochs {self.warmup_epochs} > epochs {self.epochs}")
        if self.stop_epoch is not None and self.stop_epoch > self.epochs:
            raise ValueError(f"stop_epoch {self.stop_epoch} > epochs {self.epochs}")
        if list(self.milestones) != sorted(self.milestones):
            raise ValueError(f"milestones must increase: {self.milestones}")
        if self.max_steps is not None and self.kind != "cosine":
            raise ValueError("a step budget (max_steps) runs a cosine schedule: set kind=cosine")
        return self

    @property
    def train_epochs(self) -> int:
        """Epochs actually trained: the schedule's length unless stopped early."""
        return self.stop_epoch or self.epochs


class TrainerConfig(_Frozen):
    """Lightning Trainer settings: hardware, precision, checkpoints and logging."""

    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: Literal["32", "32-true", "bf16-mixed", "16-mixed"] = "32-true"
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip_val: float | None = Field(None, gt=0.0)
    checkpoint_every_n_epochs: int = Field(10, ge=1)
    # last.ckpt (what --resume continues) is refreshed on its own interval, so that a
    # preempted or killed run of hours-long epochs loses at most that much work.
    last_checkpoint_every_n_minutes: float | None = Field(
        15.0, gt=0.0, description="refresh checkpoints/last.ckpt this often; None = off"
    )
    last_checkpoint_every_n_steps: int | None = Field(
        None, ge=1, description="also refresh checkpoints/last.ckpt every N optimiser steps"
    )
    # Threads each process computes with (alos2fm.threads): a number, or auto = the cores
    # this process may use shared among this node's processes, one core per DataLoader
    # worker; config.yaml records the number it resolved to.
    threads: Annotated[int, Field(ge=1)] | Literal["auto"] = "auto"
    # Speed only (alos2fm.models.speed): the same computation up to floating-point rounding.
    fused_attention: bool = Field(False, description="timm's fused Swin window attention")
    compile: bool = Field(False, description="torch.compile of the model's forward")
    val_every_n_steps: int | None = Field(
        None, ge=1, description="validate (and select the best model) every N steps, not epochs"
    )
    log_every_n_steps: int = Field(10, ge=1)
    progress_bar: bool = Field(True, description="Lightning's progress bar (benchmarks: off)")
    limit_train_batches: int | float | None = None
    limit_val_batches: int | float | None = None
    deterministic: bool = False


# --- pretraining ------------------------------------------------------------------------


class SimMIMConfig(_Frozen):
    mask_unit: int = Field(16, ge=1, description="pixels per side of a mask unit")
    mask_ratio: float = Field(0.6, gt=0.0, lt=1.0)
    loss: Literal["l1", "mse", "huber"] = "l1"
    # What is reconstructed: the input (the paper), its local mean or its HOG (speckle-
    # robust targets, see alos2fm.models.targets).
    target: Literal["pixels", "local_mean", "hog"] = "pixels"
    target_size: int = Field(5, ge=1, description="local-mean window, px (odd)")
    hog_cell: int = Field(8, ge=1)
    hog_bins: int = Field(9, ge=2)


class MixMAEConfig(_Frozen):
    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0)
    decoder_depth: int = Field(8, ge=1)
    decoder_dim: int = Field(512, ge=8)
    decoder_heads: int = Field(16, ge=1)
    norm_pix_loss: bool = True


class WeightingConfig(_Frozen):
    """SAR-W: w = exp(scale * (1 - minmax(linear power))), computed from the dB image."""

    kind: Literal["none", "sar"] = "none"
    scale: float = 1.0
    mode: Literal["per_channel", "shared_avg"] = "per_channel"
    source: Literal["db", "normalized"] = "db"
    # How power maps to [0, 1]: the published min-max, or on boxcar-despeckled power, or
    # between percentiles (speckle peaks no longer set the range); see alos2fm.models.sarw.
    range_rule: Literal["minmax", "boxcar", "percentile"] = "minmax"
    boxcar: int = Field(5, ge=1)
    percentiles: tuple[float, float] = (1.0, 99.0)


class PretrainConfig(_Frozen):
    """One masked-image-modelling run (SimMIM or MixMAE), paper recipe as defaults."""

    stage: Literal["pretrain"] = "pretrain"
    seed: int = 0
    method: Literal["simmim", "mixmae"] = "simmim"
    model: EncoderConfig = EncoderConfig()
    simmim: SimMIMConfig = SimMIMConfig()
    mixmae: MixMAEConfig = MixMAEConfig()
    weighting: WeightingConfig = WeightingConfig()
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    trainer: TrainerConfig = TrainerConfig(gradient_clip_val=5.0)
    figure_every_n_epochs: int = Field(10, ge=1)
    figure_images: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _consistent(self) -> PretrainConfig:
        if self.data.label_fraction != 1.0:
            raise ValueError("data.label_fraction applies to fine-tuning only")
        if self.data.label_budget is not None:
            raise ValueError("data.label_budget applies to fine-tuning only")
        if self.data.normalisation == "encoder":
            raise ValueError("data.normalisation=encoder applies to fine-tuning only")
        if self.method == "simmim" and self.model.img_size % self.simmim.mask_unit:
            raise ValueError(
                f"model.img_size {self.model.img_size} is not a multiple of "
                f"simmim.mask_unit {self.simmim.mask_unit}"
            )
        return self


# --- fine-tuning ------------------------------------------------------------------------


class LossConfig(_Frozen):
    """Class-weighted cross-entropy by default: with sparse labels (a few labelled pixels a
    patch) Dice is estimated from a handful of pixels per class and patch and is noisy;
    the paper preset keeps its 0.5 Dice + 0.5 Focal."""

    name: Literal["ce", "focal", "dice", "dice_focal"] = "ce"
    class_weights: Literal["stats", "none"] | tuple[float, ...] = "stats"


# The MERLIN weights deepdespeckling ships (their files: alos2fm.models.merlin, which
# imports torch; named here so that a typo fails with the config).
MERLIN_RELEASES = ("stripmap", "spotlight", "sentinel_tops")


class FinetuneConfig(_Frozen):
    """Segmentation with UPerNet on the (pretrained) encoder, paper recipe as defaults."""

    stage: Literal["finetune"] = "finetune"
    seed: int = 0
    model: EncoderConfig = EncoderConfig(drop_path_rate=0.1)
    # authors_upernet: the released ALOS-2 segmenter's head; unet: with a CNN encoder
    # (model.arch resnet18, resnet34, convnext_atto, ...), the supervised reference.
    # merlin: MERLIN's despeckling U-Net with a segmentation head (model.arch merlin, one
    # band), at random init or from released weights (merlin_weights).
    decoder: Literal["upernet", "authors_upernet", "unet", "merlin"] = "upernet"
    merlin_weights: str = Field(
        "none",
        description="decoder=merlin: stripmap, spotlight, sentinel_tops (deepdespeckling's "
        "released weights), a .pth state dict, or none (the same layers at random init)",
    )
    decoder_channels: int = Field(256, ge=8)  # UPerNet fusion width (the paper's: 256)
    loss: LossConfig = LossConfig()
    # A pretrained encoder expects inputs standardised as in pretraining (without one: stats).
    data: DataConfig = DataConfig(normalisation="encoder")
    # Layer decay applies to pretrained encoders only (a random encoder has nothing to keep).
    optim: OptimConfig = OptimConfig(base_lr=1.25e-4, layer_decay=0.8)
    schedule: ScheduleConfig = ScheduleConfig(
        epochs=100, warmup_epochs=20, kind="cosine", milestones=()
    )
    # Clipping by default: fine-tuning starts from a random decoder whose first gradients
    # can be large enough to wreck a pretrained encoder.
    trainer: TrainerConfig = TrainerConfig(gradient_clip_val=1.0)

    @model_validator(mode="after")
    def _merlin_fits(self) -> FinetuneConfig:
        merlin = self.decoder == "merlin"
        if merlin != (self.model.arch == "merlin"):
            raise ValueError("model.arch merlin and decoder merlin go together: set both")
        if not merlin:
            if self.merlin_weights != "none":
                raise ValueError("merlin_weights applies to decoder=merlin only")
            return self
        names = [*MERLIN_RELEASES, "none"]
        if self.merlin_weights not in names and not self.merlin_weights.endswith(".pth"):
            raise ValueError(
                f"merlin_weights {self.merlin_weights!r} is none of {names} nor a .pth path"
            )
        if self.model.in_chans != 1:
            raise ValueError(
                f"MERLIN takes one band (it was trained on single-channel SAR); the model has "
                f"model.in_chans={self.model.in_chans}: prepare a single-band dataset "
                "(e.g. --bands HH)"
            )
        if self.optim.layer_decay is not None:
            # Layer ids are numbered for Swin/ViT blocks; MERLIN has none to number.
            raise ValueError(
                "decoder merlin has no layer-wise LR decay: set optim.layer_decay=null"
            )
        return self

    @model_validator(mode="after")
    def _validates_within_the_budget(self) -> FinetuneConfig:
        steps, every = self.schedule.max_steps, self.trainer.val_every_n_steps
        if steps is not None and every is not None and every > steps:
            raise ValueError(
                f"trainer.val_every_n_steps {every} > schedule.max_steps {steps}: the run "
                "would never validate, so no best checkpoint"
            )
        return self


_STAGES: dict[str, type[BaseModel]] = {"pretrain": PretrainConfig, "finetune": FinetuneConfig}


# --- resolution: defaults <- preset <- overrides ------------------------------------------


def _presets_folder():
    # configs/ is package data, not a package: address it from the alos2fm package.
    return resources.files("alos2fm") / "configs" / "presets"


def available_presets() -> list[str]:
    """Names of the YAML presets shipped with the package."""
    folder = _presets_folder()
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    """The override tree of a shipped preset, or of a YAML file when ``name`` is a path."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    else:
        resource = _presets_folder() / f"{name}.yaml"
        if not resource.is_file():
            raise ConfigError(
                f"unknown preset {name!r}",
                hint=f"choose one of {', '.join(available_presets())} or give a .yaml path",
            )
        text = resource.read_text()
    tree = yaml.safe_load(text) or {}
    if not isinstance(tree, dict):
        raise ConfigError("a preset must be a mapping of keys to values", path=name)
    return tree


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """``["optim.base_lr=2e-4", "data.hflip=false"]`` -> nested dict (values read as YAML)."""
    tree: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {pair!r} is not key=value", hint="e.g. optim.base_lr=2e-4")
        node = tree
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {pair!r} conflicts with an earlier override")
        node[leaf] = _parse_value(raw)
    return tree


def _parse_value(raw: str) -> Any:
    value = yaml.safe_load(raw)
    if isinstance(value, str):
        # YAML 1.1 reads "2e-4" (no dot) as a string; a number is what was meant.
        try:
            return float(value)
        except ValueError:
            return value
    return value


def merge_trees(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` laid over it, nested mappings merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = merge_trees(merged[key], value)
        else:
            merged[key] = value
    return merged


def resolve_config(
    stage: Literal["pretrain", "finetune"],
    preset: str | None = None,
    overrides: list[str] | dict[str, Any] | None = None,
) -> PretrainConfig | FinetuneConfig:
    """Defaults of ``stage``, overridden by ``preset`` then by ``overrides``; validated, frozen."""
    cls = _STAGES[stage]
    tree = cls().model_dump(mode="json")
    if preset is not None:
        preset_tree = read_preset(preset)
        preset_stage = preset_tree.get("stage", stage)
        if preset_stage != stage:
            raise ConfigError(
                f"preset {preset!r} is a {preset_stage} preset",
                hint=f"use it with 'alos2fm {preset_stage}', or pick a {stage} preset",
            )
        tree = merge_trees(tree, preset_tree)
    if overrides:
        extra = overrides if isinstance(overrides, dict) else parse_overrides(overrides)
        tree = merge_trees(tree, extra)
    try:
        return cls.model_validate(tree)
    except ValidationError as err:
        problems = validation_problems(err)
        raise ConfigError(
            f"invalid {stage} configuration: {problems}",
            path=preset,
            hint="fix the preset or --set",
        ) from None


def load_config(path: str | Path) -> PretrainConfig | FinetuneConfig:
    """Read a resolved ``config.yaml`` written by :func:`save_config` (e.g. in a run folder)."""
    path = Path(path)
    try:
        tree = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read config: {err}", path=path) from None
    stage = tree.get("stage") if isinstance(tree, dict) else None
    if stage not in _STAGES:
        raise ConfigError("not a run config (no 'stage: pretrain|finetune')", path=path)
    return resolve_config(stage, overrides=tree)


def save_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML, atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
