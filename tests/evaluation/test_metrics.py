"""Scores from hand-computed confusion matrices, and exactness across processes."""

from __future__ import annotations

import socket
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from alos2fm.evaluation.metrics import (
    ConfusionMatrix,
    UnpaddedDistributedSampler,
    cohen_kappa,
    mean_class_accuracy,
    mean_iou,
    overall_accuracy,
    per_class_accuracy,
    per_class_f1,
    per_class_iou,
    segmentation_scores,
)

# Rows = truth, columns = prediction. Class 2 is predicted once but never true;
# class 3 appears nowhere. TP = (5, 3, 0, 0), FP = (2, 1, 1, 0), FN = (1, 3, 0, 0).
MATRIX = np.array([[5, 1, 0, 0], [2, 3, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])


def test_per_class_iou_accuracy_f1_by_hand() -> None:
    np.testing.assert_allclose(per_class_iou(MATRIX)[:3], [5 / 8, 3 / 7, 0.0])
    np.testing.assert_allclose(per_class_accuracy(MATRIX)[:2], [5 / 6, 3 / 6])
    np.testing.assert_allclose(per_class_f1(MATRIX)[:3], [10 / 13, 6 / 10, 0.0])
    # Undefined scores are NaN: class 3 has neither truth nor prediction, class 2 no truth.
    assert np.isnan(per_class_iou(MATRIX)[3]) and np.isnan(per_class_f1(MATRIX)[3])
    assert np.isnan(per_class_accuracy(MATRIX)[2:]).all()


def test_means_exclude_undefined_classes() -> None:
    # Class 2 (predicted, never true) counts as IoU 0; class 3 (absent) is left out.
    assert mean_iou(MATRIX) == pytest.approx((5 / 8 + 3 / 7 + 0) / 3)
    assert mean_class_accuracy(MATRIX) == pytest.approx((5 / 6 + 1 / 2) / 2)
    assert overall_accuracy(MATRIX) == pytest.approx(8 / 12)


def test_kappa_by_hand() -> None:
    # p_o = 8/12; p_e = (6*7 + 6*4 + 0*1 + 0*0) / 12^2 = 11/24 -> (16/24 - 11/24) / (13/24).
    assert cohen_kappa(MATRIX) == pytest.approx(5 / 13)


def test_kappa_agrees_with_scikit_learn_on_random_labels() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    truth, pred = rng.integers(0, 5, 500), rng.integers(0, 5, 500)
    pred[:200] = truth[:200]  # some agreement beyond chance
    matrix = metrics.confusion_matrix(truth, pred, labels=range(5))
    assert cohen_kappa(matrix) == pytest.approx(metrics.cohen_kappa_score(truth, pred))


def test_scores_dict_is_json_ready() -> None:
    scores = segmentation_scores(MATRIX, ["water", "urban", "rice", "forest"])
    assert scores["pixels"] == 12
    assert scores["per_class"]["urban"] == {"iou": 3 / 7, "accuracy": 0.5, "f1": 0.6, "pixels": 6}
    assert scores["per_class"]["forest"]["iou"] is None
    with pytest.raises(ValueError, match="3 class names"):
        segmentation_scores(MATRIX, ["a", "b", "c"])


def test_update_counts_valid_pixels_only_from_labels_or_logits() -> None:
    target = torch.tensor([[[0, 1, 255], [1, 2, 0]]])
    preds = torch.tensor([[[0, 2, 1], [1, 2, 1]]])
    expected = torch.tensor([[1, 1, 0], [0, 1, 1], [0, 0, 1]])  # the ignored pixel is dropped
    metric = ConfusionMatrix(num_classes=3)
    metric.update(preds, target)
    assert torch.equal(metric.compute(), expected)

    logits = torch.nn.functional.one_hot(preds, 3).permute(0, 3, 1, 2).float()
    metric = ConfusionMatrix(num_classes=3)
    metric.update(logits, target)
    assert torch.equal(metric.compute(), expected)


def test_update_rejects_out_of_range_target() -> None:
    with pytest.raises(ValueError, match=r"outside 0\.\.2"):
        ConfusionMatrix(num_classes=3).update(torch.zeros(1, 2, 2), torch.full((1, 2, 2), 3))


# --- distributed exactness -------------------------------------------------------------

NUM_SAMPLES, NUM_CLASSES = 7, 4  # 7 samples on 2 ranks: an uneven split (4 + 3)


def _sample(index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Prediction and target of one 'image', different for every index, with ignored pixels."""
    gen = torch.Generator().manual_seed(index)
    target = torch.randint(0, NUM_CLASSES, (1, 8, 8), generator=gen)
    target[torch.rand(1, 8, 8, generator=gen) < 0.2] = 255
    return torch.randint(0, NUM_CLASSES, (1, 8, 8), generator=gen), target


def _matrix_over(indices) -> torch.Tensor:
    metric = ConfusionMatrix(NUM_CLASSES)
    for i in indices:
        metric.update(*_sample(i))
    return metric.compute()


def _rank_main(rank: int, world_size: int, port: int, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size
    )
    try:
        sampler = UnpaddedDistributedSampler(range(NUM_SAMPLES))  # rank/world from the group
        metric = ConfusionMatrix(NUM_CLASSES)
        for i in sampler:
            metric.update(*_sample(i))
        matrix = metric.compute()  # torchmetrics sums the ranks' matrices here
        torch.save({"matrix": matrix, "count": len(sampler)}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow  # ~13 s: two fresh interpreters import torch and torchmetrics
def test_two_processes_with_uneven_shards_equal_one_process(tmp_path: Path) -> None:
    mp.spawn(_rank_main, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    single = _matrix_over(range(NUM_SAMPLES))
    results = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert [r["count"] for r in results] == [4, 3]
    for r in results:  # every rank ends with the global matrix
        assert torch.equal(r["matrix"], single)


def test_unpadded_sampler_covers_each_index_once_where_distributed_sampler_repeats() -> None:
    shards = [list(UnpaddedDistributedSampler(range(7), num_replicas=3, rank=r)) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]
    padded = [list(DistributedSampler(range(7), 3, r, shuffle=False)) for r in range(3)]
    assert sum(len(s) for s in padded) == 9  # two padding duplicates: why eval must not use it
    # ...and those duplicates would change the summed matrix.
    summed = sum(
        _matrix_over(s)
        for s in [list(DistributedSampler(range(7), 2, r, shuffle=False)) for r in range(2)]
    )
    assert int(summed.sum()) > int(_matrix_over(range(7)).sum())


class _ScoringModule(L.LightningModule):
    """Scores fixed predictions: the matrix depends only on which samples each rank sees."""

    def __init__(self, out: Path):
        super().__init__()
        self.unused = torch.nn.Linear(1, 1)
        self.matrix = ConfusionMatrix(3, ignore_index=255)
        self.out = out

    def test_step(self, batch, batch_idx):
        target, preds = batch
        self.matrix.update(preds, target)

    def on_test_epoch_end(self):
        counts = self.matrix.compute()
        if self.global_rank == 0:
            torch.save(counts, self.out)


class _ScoringData(L.LightningDataModule):
    def test_dataloader(self):
        rng = torch.Generator().manual_seed(0)
        target = torch.randint(0, 3, (7, 4, 4), generator=rng)
        target[0, 0] = 255
        preds = torch.randint(0, 3, (7, 4, 4), generator=rng)
        data = TensorDataset(target, preds)
        trainer = self.trainer
        sampler = UnpaddedDistributedSampler(data, trainer.world_size, trainer.global_rank)
        return DataLoader(data, batch_size=2, sampler=sampler)


def _lightning_matrix(tmp_path: Path, devices: int) -> torch.Tensor:
    out = tmp_path / f"matrix{devices}.pt"
    trainer = L.Trainer(
        accelerator="cpu",
        devices=devices,
        strategy="ddp_spawn" if devices > 1 else "auto",
        logger=False,
        use_distributed_sampler=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.test(_ScoringModule(out), datamodule=_ScoringData())
    return torch.load(out)


@pytest.mark.slow  # ~10 s: Lightning spawns two workers
def test_lightning_ddp_spawn_counts_every_pixel_once(tmp_path: Path) -> None:
    # Under ddp_spawn on CPU a metric state reaches the workers through shared memory; an
    # in-place update then summed every rank's counts into one tensor (twice the pixels).
    one = _lightning_matrix(tmp_path, devices=1)
    two = _lightning_matrix(tmp_path, devices=2)
    assert int(one.sum()) == 7 * 16 - 4
    assert torch.equal(one, two)
