"""Masked-image-modelling pretraining (SimMIM or MixMAE, optionally SAR-W weighted).

A step: flip the batch, standardise the dB image, compute the per-pixel weight (SAR-W
from dB, or just the valid mask), run the model, log the loss. The run folder receives::

    RUN/config.yaml                     the resolved configuration (threads as a number)
    RUN/checkpoints/, logs/, tensorboard/   (see alos2fm.train.engine)
    RUN/figures/reconstruction_e0010.png    input, encoder input, reconstruction (dB),
                                            weight map; the same patches every epoch
    RUN/figures/loss_curve.png
    RUN/encoder.safetensors + encoder.json  the encoder and how to rebuild it

``encoder.json`` holds what fine-tuning needs: the ``create_encoder`` arguments, the bands
and their normalisation, the method and weighting, epochs and steps trained, and the
SHA-256 of the weights file.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import Tensor, nn

from alos2fm.atomic import atomic_path
from alos2fm.models import build_pretrain_model
from alos2fm.models.sarw import weights_from_source
from alos2fm.threads import apply_threads
from alos2fm.train.augment import augment, sample_windows
from alos2fm.train.config import PretrainConfig, save_config
from alos2fm.train.data import Normalisation, PatchDataModule, dataset_record
from alos2fm.train.engine import build_trainer, resolve_run_threads, seed_run
from alos2fm.train.optim import configure_adamw, weight_decay_groups
from alos2fm.train.run_folder import RunFolderError, claim_run_folder

log = logging.getLogger(__name__)

ENCODER_WEIGHTS = "encoder.safetensors"
ENCODER_META = "encoder.json"
FIGURES = "figures"


def pretrain_model_for(cfg: PretrainConfig) -> nn.Module:
    """The SimMIM or MixMAE model that ``cfg.method`` names, on ``cfg.model``'s encoder."""
    method_fields = getattr(cfg, cfg.method).model_dump()
    return build_pretrain_model(
        {"method": cfg.method, "encoder": cfg.model.encoder_kwargs(), **method_fields}
    )


class PretrainModule(L.LightningModule):
    """LightningModule around a SimMIM/MixMAE model (``model`` overrides the config's)."""

    def __init__(
        self, cfg: PretrainConfig, normalisation: Normalisation, model: nn.Module | None = None
    ):
        super().__init__()
        self.cfg = cfg
        self.normalise = normalisation
        self.save_hyperparameters(
            {"config": cfg.model_dump(mode="json"), "normalisation": normalisation.as_dict()}
        )
        self.model = model if model is not None else pretrain_model_for(cfg)

    def pixel_weights(self, image_db: Tensor, normalised: Tensor, valid: Tensor) -> Tensor:
        """(B, C, H, W) loss weight per pixel: SAR-W or 1, and 0 on no-data pixels."""
        w = self.cfg.weighting
        if w.kind == "sar":
            return weights_from_source(
                image_db,
                normalised,
                source=w.source,
                scale=w.scale,
                mode=w.mode,
                valid=valid,
                range_rule=w.range_rule,
                boxcar=w.boxcar,
                percentiles=w.percentiles,
            )
        return valid.unsqueeze(1).expand_as(image_db).to(image_db.dtype)

    def _step_inputs(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        image_db = batch["image"]
        normalised = self.normalise(image_db, batch["valid"])
        return normalised, self.pixel_weights(image_db, normalised, batch["valid"])

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        batch = augment(batch, self.cfg.data, self.cfg.model.img_size)
        out = self.model(*self._step_inputs(batch))
        self.log("train/loss", out.loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return out.loss

    def configure_optimizers(self) -> dict[str, Any]:
        groups = weight_decay_groups(self.model, self.cfg.optim.weight_decay)
        return configure_adamw(
            self.trainer, groups, self.cfg.optim, self.cfg.schedule, self.cfg.data.batch_size
        )

    # --- outputs ---------------------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        return Path(self.trainer.default_root_dir)

    def on_train_epoch_end(self) -> None:
        epoch = self.current_epoch + 1
        if epoch % self.cfg.figure_every_n_epochs == 0 or epoch == self.trainer.max_epochs:
            self.save_reconstruction_figure(
                self.run_dir / FIGURES / f"reconstruction_e{epoch:04d}.png"
            )

    @rank_zero_only
    def save_reconstruction_figure(self, path: Path) -> None:
        """Input, encoder input, reconstruction (in dB) and weight map of the training
        patches :func:`figure_patches` picks: the same patches, windows and mask at every
        epoch, so that the figures show what the model learnt in between."""
        from alos2fm.evaluation.figures import plot_reconstructions

        dataset = self.trainer.datamodule.datasets["train"]
        indices = figure_patches(len(dataset), self.cfg.figure_images, self.cfg.seed)
        items = [dataset[i] for i in indices]
        batch = {
            k: torch.stack([it[k] for it in items]).to(self.device) for k in ("image", "valid")
        }
        was_training = self.model.training
        self.model.eval()
        # Own RNG scope: the figure's random mask must not shift the training stream.
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.seed)
            batch = sample_windows(batch, self.cfg.model.img_size)
            normalised, weight = self._step_inputs(batch)
            out = self.model(normalised, weight)
        self.model.train(was_training)
        hog = self.cfg.method == "simmim" and self.cfg.simmim.target == "hog"
        image_db = torch.where(batch["valid"][:, None], batch["image"], torch.nan)
        plot_reconstructions(
            image_db.float().cpu(),
            out.mask.float().cpu(),
            (out.pred if hog else self.normalise.to_db(out.pred)).float().cpu(),
            path,
            weight=weight.float().cpu(),
            max_images=self.cfg.figure_images,
            title=f"{self.cfg.method} ({self.cfg.weighting.kind} weighting), epoch "
            f"{self.current_epoch + 1}",
            reconstruction_units="HOG energy" if hog else "dB",
            row_labels=[f"training patch {i}" for i in indices],
        )

    def on_fit_end(self) -> None:
        self.export_encoder()
        self.save_loss_curve()

    @rank_zero_only
    def save_loss_curve(self) -> None:
        from alos2fm.evaluation.figures import plot_loss_curves

        metrics = self.run_dir / "logs" / "metrics.csv"
        if metrics.is_file():
            title = f"{self.cfg.method} ({self.cfg.weighting.kind} weighting): {self.run_dir.name}"
            plot_loss_curves(metrics, self.run_dir / FIGURES / "loss_curve.png", title=title)

    @rank_zero_only
    def export_encoder(self) -> Path:
        """Write ``encoder.safetensors`` and ``encoder.json`` into the run folder, atomically."""
        return export_encoder(
            self.model,
            self.cfg,
            self.normalise,
            self.run_dir,
            epochs=self.current_epoch,
            steps=self.global_step,
            dataset=dataset_record(self.trainer.datamodule.root),
        )


def export_encoder(
    model: nn.Module,
    cfg: PretrainConfig,
    normalisation: Normalisation,
    out_dir: Path,
    epochs: int,
    steps: int,
    dataset: dict[str, str] | None = None,
) -> Path:
    """Save the encoder weights and the metadata that rebuilds the encoder."""
    from safetensors.torch import save_file

    out_dir.mkdir(parents=True, exist_ok=True)
    weights = out_dir / ENCODER_WEIGHTS
    state = {k: v.contiguous().cpu() for k, v in model.encoder_state_dict().items()}
    with atomic_path(weights) as tmp:
        save_file(state, tmp, metadata={"format": "pt", "producer": "alos2fm pretrain"})
    meta = {
        "encoder": model.encoder_config(),
        "data": normalisation.as_dict() | {"units": "dB"},
        "method": cfg.method,
        "weighting": cfg.weighting.model_dump(mode="json"),
        "epochs": epochs,
        "global_step": steps,
        "dataset": dataset,
        "sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
    }
    meta_path = out_dir / ENCODER_META
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
    return weights


def figure_patches(count: int, shown: int, seed: int) -> list[int]:
    """Indices of the ``shown`` training patches (of ``count``) that every reconstruction
    figure of a run draws: spread over the split, a function of the seed alone."""
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(count, size=min(shown, count), replace=False).tolist())


# --- entry point -------------------------------------------------------------------------


def check_data_fits_model(dm: PatchDataModule, in_chans: int, img_size: int) -> int:
    """The encoder's channels must match the dataset's bands, and its input fit in a patch:
    larger patches give a random window every step (and are evaluated tile by tile).
    Returns the patch size."""
    from alos2fm.data.store import open_patch_arrays

    patch = open_patch_arrays(dm.root).images.shape[-1]
    bands = dm.normalisation.bands
    if len(bands) != in_chans or patch < img_size:
        raise RunFolderError(
            f"dataset has {len(bands)} band(s) {list(bands)} of {patch} px; the model expects "
            f"{in_chans} channel(s) and windows of {img_size} px (at most the patch size)",
            dm.root,
            f"--set model.in_chans={len(bands)} --set model.img_size={patch}, or another preset",
        )
    return patch


def run_pretrain(cfg: PretrainConfig, data: Path, out: Path, resume: bool = False) -> Path:
    """Pretrain on the training split of the patch store ``data``; returns the encoder path."""
    folder, last = claim_run_folder(out, "pretrain", cfg, data, resume)
    with folder:
        return _pretrain(cfg, data, out, last)


def _pretrain(cfg: PretrainConfig, data: Path, out: Path, last: Path | None) -> Path:
    cfg = resolve_run_threads(cfg)  # the number config.yaml records
    apply_threads(cfg.trainer.threads)
    dm = PatchDataModule(data, cfg.data, cfg.seed, with_labels=False, splits=("train",))
    check_data_fits_model(dm, cfg.model.in_chans, cfg.model.img_size)
    if last is None:  # a resumed run keeps the config it was started with
        save_config(cfg, out / "config.yaml")
    seed_run(cfg.seed)
    module = PretrainModule(cfg, dm.normalisation)
    trainer = build_trainer(
        cfg.trainer, out, cfg.schedule.train_epochs, cfg.seed, max_steps=cfg.schedule.max_steps
    )
    trainer.fit(module, datamodule=dm, ckpt_path=last)
    return out / ENCODER_WEIGHTS
