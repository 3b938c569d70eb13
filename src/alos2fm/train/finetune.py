"""Segmentation fine-tuning: Swin (or ViT) + UPerNet, from random init or a pretrained encoder.

Model selection follows the paper: validation every epoch with one confusion matrix summed
across processes, ``best.ckpt`` at the highest validation mIoU, and the test split scored
with that checkpoint. Every checkpoint's ``hyper_parameters`` hold what prediction needs
to rebuild and feed the model without the dataset::

    model:   {encoder: <create_encoder arguments>, num_classes, decoder_channels}
    data:    {bands, mean, std, patch_size, units: "dB"}
    classes: {names, colours}
    config:  the resolved fine-tuning config
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import Tensor

from alos2fm.atomic import atomic_path
from alos2fm.data.recipe import Preprocessing
from alos2fm.data.store import IGNORE_INDEX
from alos2fm.errors import DataError
from alos2fm.evaluation.metrics import ConfusionMatrix, segmentation_scores
from alos2fm.outputs import claim_folder
from alos2fm.threads import Threads, apply_threads
from alos2fm.train.augment import augment, sampling_cannot_act
from alos2fm.train.config import ConfigError, FinetuneConfig, save_config
from alos2fm.train.data import Normalisation, PatchDataModule, dataset_record
from alos2fm.train.engine import (
    CHECKPOINTS,
    build_trainer,
    quiet_third_party,
    resolve_run_threads,
    seed_run,
)
from alos2fm.train.optim import configure_adamw, layer_decay_groups, weight_decay_groups
from alos2fm.train.pretrain import check_data_fits_model
from alos2fm.train.run_folder import claim_run_folder

log = logging.getLogger(__name__)

BEST = "best.ckpt"
MONITOR = "val/miou"


def dataset_classes(stats: dict[str, Any], root: Path) -> dict[str, list]:
    """Class names and RGB colours of a labelled dataset, from its stats.json."""
    if "num_classes" not in stats:
        raise DataError(
            "this dataset has no labels (stats.json lacks num_classes)",
            root,
            "prepare it with a land-cover map to fine-tune",
        )
    k = int(stats["num_classes"])
    names = stats.get("class_names") or [f"class_{i}" for i in range(k)]
    colours = stats.get("class_colours")
    if not colours:
        import matplotlib

        palette = matplotlib.colormaps["tab20"].colors
        colours = [[round(255 * c) for c in palette[i % len(palette)]] for i in range(k)]
    return {"names": list(names), "colours": [list(c) for c in colours]}


class FinetuneModule(L.LightningModule):
    """LightningModule for segmentation with the paper's loss, LLRD and exact metrics."""

    def __init__(
        self,
        config: dict[str, Any],
        model: dict[str, Any],
        data: dict[str, Any],
        classes: dict[str, list],
        class_weights: list[float] | None = None,
        pretrained: bool = False,
    ):
        from alos2fm.models.segmenter import build_segmenter
        from alos2fm.train.losses import build_loss

        super().__init__()
        self.save_hyperparameters()
        self.cfg = FinetuneConfig.model_validate(config)
        self.normalise = Normalisation(
            tuple(data["bands"]), tuple(data["mean"]), tuple(data["std"])
        )
        self.segmenter = build_segmenter(model)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.criterion = build_loss(self.cfg.loss.name, weights, IGNORE_INDEX)
        k = model["num_classes"]
        self.val_matrix = ConfusionMatrix(k, IGNORE_INDEX)
        self.test_matrix = ConfusionMatrix(k, IGNORE_INDEX)
        self.test_scores: dict[str, Any] | None = None
        # (folder, checkpoint) for the test report, written by rank 0 inside the test loop:
        # with ddp_spawn the scores exist only in the worker processes.
        self.test_report: tuple[Path, Path] | None = None

    @classmethod
    def from_config(
        cls,
        cfg: FinetuneConfig,
        normalisation: Normalisation,
        stats: dict,
        root: Path,
        pretrained: bool = False,
    ) -> FinetuneModule:
        classes = dataset_classes(stats, root)
        weights = cfg.loss.class_weights
        if weights == "stats":
            weights = stats.get("class_weights")
        elif weights == "none":
            weights = None
        return cls(
            config=cfg.model_dump(mode="json"),
            model={
                "encoder": cfg.model.encoder_kwargs(),
                "num_classes": len(classes["names"]),
                "decoder_channels": cfg.decoder_channels,
                "decoder": cfg.decoder,
            },
            data=normalisation.as_dict()
            | {
                "patch_size": cfg.model.img_size,
                "units": "dB",
                # What prepare did to the products (multilook, speckle filter): predict repeats it.
                "preprocessing": Preprocessing.of_dataset(root).as_dict(),
                "dataset": dataset_record(root),
            },
            classes=classes,
            class_weights=list(weights) if weights is not None else None,
            pretrained=pretrained,
        )

    def forward(self, image_db: Tensor, valid: Tensor | None = None) -> Tensor:
        """(B, C, H, W) dB -> (B, K, H, W) logits; no-data pixels (``valid`` False) fed as 0."""
        return self.segmenter(self.normalise(image_db, valid))

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        batch = augment(batch, self.cfg.data, self.cfg.model.img_size)
        loss = self.criterion(self(batch["image"], batch.get("valid")), batch["label"])
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, sync_dist=True)
        return loss

    def evaluation_logits(self, image_db: Tensor, valid: Tensor | None = None) -> Tensor:
        """Logits of whole patches as the scene map is predicted: one forward pass for
        patches of the model's size, else overlapping tiles blended as ``alos2fm predict``
        blends them (returned as log-probabilities, which every loss takes as logits)."""
        size = self.cfg.model.img_size
        if image_db.shape[-2:] == (size, size):
            return self(image_db, valid)
        from alos2fm.evaluation.predict import predict_patches

        probs = predict_patches(self.segmenter, self.normalise(image_db, valid), size, size // 4)
        return torch.log(probs.clamp_min(1e-12))

    def _evaluate(self, batch: dict[str, Tensor], matrix: ConfusionMatrix, prefix: str) -> None:
        logits = self.evaluation_logits(batch["image"], batch.get("valid"))
        loss = self.criterion(logits, batch["label"])
        matrix.update(logits.argmax(dim=1), batch["label"])
        self.log(f"{prefix}/loss", loss, on_epoch=True, sync_dist=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_matrix, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_matrix, "test")

    def _log_scores(self, matrix: ConfusionMatrix, prefix: str) -> dict[str, Any]:
        counts = matrix.compute()
        scores = segmentation_scores(counts, self.hparams.classes["names"])
        scores["confusion_matrix"] = counts.cpu().tolist()  # rows = truth, columns = prediction
        matrix.reset()
        for key in ("miou", "mean_accuracy", "overall_accuracy", "kappa"):
            value = scores[key]
            # Already summed across processes: log without another reduction.
            self.log(f"{prefix}/{key}", float("nan") if value is None else value)
        return scores

    def on_validation_epoch_end(self) -> None:
        self._log_scores(self.val_matrix, "val")

    def on_test_epoch_end(self) -> None:
        self.test_scores = self._log_scores(self.test_matrix, "test")
        if self.test_report is not None and self.trainer.is_global_zero:
            write_test_report(self, *self.test_report)

    def configure_optimizers(self) -> dict[str, Any]:

        optim = self.cfg.optim
        pretrained = self.hparams.get("pretrained", False)
        if optim.layer_decay is None or not (pretrained or optim.layer_decay_on_random_init):
            groups = weight_decay_groups(self.segmenter, optim.weight_decay)
        else:
            # lr here only fills the groups' "lr"; configure_adamw rescales from lr_scale.
            groups = layer_decay_groups(
                self.segmenter, optim.base_lr, optim.weight_decay, decay=optim.layer_decay
            )
        return configure_adamw(
            self.trainer, groups, optim, self.cfg.schedule, self.cfg.data.batch_size
        )


def write_test_report(module: FinetuneModule, out_dir: Path, checkpoint: Path | str) -> Path:
    """metrics.json, a confusion-matrix PNG and a per-class IoU bar chart from a test run."""
    import numpy as np

    from alos2fm.evaluation.figures import plot_confusion_matrix, plot_per_class_iou

    scores = dict(module.test_scores or {})
    scores["checkpoint"] = str(checkpoint)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "metrics.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(scores, indent=2) + "\n")
    names = module.hparams.classes["names"]
    plot_confusion_matrix(
        np.asarray(scores["confusion_matrix"]), names, out_dir / "confusion_matrix.png"
    )
    iou = [scores["per_class"][n]["iou"] for n in names]
    plot_per_class_iou(
        [np.nan if v is None else v for v in iou],
        names,
        out_dir / "per_class_iou.png",
        colours=module.hparams.classes["colours"],
    )
    return path


def run_finetune(
    cfg: FinetuneConfig,
    data: Path,
    out: Path,
    encoder: Path | None = None,
    resume: bool = False,
    *,
    allow_partial_encoder: bool = False,
) -> Path:
    """Fine-tune on ``data``, then score the test split with the best checkpoint.

    Returns the path of ``best.ckpt``; ``RUN/test/`` holds metrics.json and figures. An
    ``encoder`` file that leaves any encoder tensor at random initialisation (or holds
    tensors the model does not use) is refused unless ``allow_partial_encoder``.
    """
    folder, last = claim_run_folder(out, "finetune", cfg, data, resume, encoder)
    with folder:
        return _finetune(cfg, data, out, encoder, last, allow_partial_encoder)


def _finetune(
    cfg: FinetuneConfig,
    data: Path,
    out: Path,
    encoder: Path | None,
    last: Path | None,
    allow_partial_encoder: bool,
) -> Path:
    from alos2fm.contract import check_encoder_load
    from alos2fm.models.segmenter import load_encoder_weights
    from alos2fm.train.pretrained import (
        check_encoder_fits,
        finetune_normalisation,
        read_encoder_meta,
    )

    cfg = resolve_run_threads(cfg)  # the number config.yaml records
    apply_threads(cfg.trainer.threads)
    dm = PatchDataModule(data, cfg.data, cfg.seed, with_labels=True, run_dir=out)
    patch = check_data_fits_model(dm, cfg.model.in_chans, cfg.model.img_size)
    if (note := sampling_cannot_act(cfg.data.sampling, patch, cfg.model.img_size)) is not None:
        log.warning(note)
    if last is None:  # a resumed run keeps the config it was started with
        save_config(cfg, out / "config.yaml")
    seed_run(cfg.seed)
    meta = read_encoder_meta(encoder) if encoder is not None else None
    if meta is not None:
        check_encoder_fits(meta, cfg, dm.normalisation.bands, encoder)
    normalisation = finetune_normalisation(cfg, dm.normalisation, meta)
    merlin = cfg.merlin_weights != "none"
    if merlin and encoder is not None:
        raise ConfigError(
            "an encoder.safetensors and merlin_weights both initialise the model",
            encoder,
            "give one: MERLIN's weights come from merlin_weights",
        )
    module = FinetuneModule.from_config(
        cfg, normalisation, dm.stats, dm.root, pretrained=encoder is not None or merlin
    )
    if merlin and last is None:  # a resumed run's weights come from its checkpoint
        from alos2fm.models.merlin import load_merlin_weights

        merlin_report = load_merlin_weights(module.segmenter, cfg.merlin_weights)
        log.info(merlin_report.summary())
        (out / "encoder_load.txt").write_text(merlin_report.summary() + "\n")
    if encoder is not None and last is None:
        report = load_encoder_weights(module.segmenter, encoder)
        (out / "encoder_load.txt").write_text(report.summary() + "\n")
        check_encoder_load(report, allow_partial_encoder)
    trainer = build_trainer(
        cfg.trainer,
        out,
        cfg.schedule.train_epochs,
        cfg.seed,
        monitor=MONITOR,
        max_steps=cfg.schedule.max_steps,
    )
    trainer.fit(module, datamodule=dm, ckpt_path=last)
    best = out / CHECKPOINTS / BEST
    module.test_report = (out / "test", best)
    # The score table is console output a quiet run (progress bar off) does without.
    trainer.test(module, datamodule=dm, ckpt_path=best, verbose=cfg.trainer.progress_bar)
    if trainer.is_global_zero:
        _plot_training_curves(out)
    return best


def _plot_training_curves(run: Path) -> None:
    """``figures/training_curves.png``: losses and evaluation scores by optimiser step."""
    from alos2fm.evaluation.figures import plot_loss_curves

    metrics = run / "logs" / "metrics.csv"
    if metrics.is_file():
        out = run / "figures" / "training_curves.png"
        out.parent.mkdir(exist_ok=True)
        plot_loss_curves(metrics, out, title=f"fine-tuning: {run.name}")


def load_finetuned(checkpoint: Path) -> FinetuneModule:
    """The fine-tuned module a checkpoint holds (read through ``contract.open_checkpoint``)."""
    from alos2fm.contract import open_checkpoint

    content = open_checkpoint(checkpoint)
    module = FinetuneModule(**content["hyper_parameters"])
    module.load_state_dict(content["state_dict"])
    return module


# What write_test_report writes.
EVALUATION_FILES = ("metrics.json", "confusion_matrix.png", "per_class_iou.png")


def run_evaluate(
    checkpoint: Path,
    data: Path,
    split: str,
    out: Path,
    overwrite: bool = False,
    threads: Threads = "auto",
) -> Path:
    """Score a fine-tuned checkpoint on ``split`` of ``data``: metrics.json and figures in
    ``out``. Runs on the checkpoint's hardware settings (``--set``-free: one process by
    default on CPU; under torchrun/SLURM Lightning joins the processes) with ``threads``
    (``alos2fm.threads``; not the number training recorded: this machine may differ).

    The checkpoint must fit the dataset (``alos2fm.contract``): same bands in order, same
    class table, same preprocessing."""
    from alos2fm.contract import (
        check_classes,
        check_dataset_bands,
        check_preprocessing,
        dataset_class_names,
    )

    module = load_finetuned(checkpoint)
    cfg = module.cfg
    dm = PatchDataModule(data, cfg.data, cfg.seed, splits=(split,), test_split=split)
    check_dataset_bands(module.normalise.bands, dm.normalisation.bands, data)
    check_classes(module.hparams.classes["names"], dataset_class_names(dm.stats), data)
    check_preprocessing(module.hparams.data.get("preprocessing"), data, checkpoint)
    check_data_fits_model(dm, cfg.model.in_chans, cfg.model.img_size)
    apply_threads(threads, workers=cfg.data.num_workers)
    quiet_third_party()
    trainer = L.Trainer(
        accelerator="auto",
        devices=1,
        precision=cfg.trainer.precision,
        logger=False,
        use_distributed_sampler=False,
        enable_model_summary=False,
    )
    with claim_folder(
        out, "evaluate", outputs=EVALUATION_FILES, inputs=[checkpoint, data], overwrite=overwrite
    ):
        # The model normalises with its own stored statistics, not the new dataset's.
        module.test_report = (out, checkpoint)
        trainer.test(module, datamodule=dm)
        return out / "metrics.json"
