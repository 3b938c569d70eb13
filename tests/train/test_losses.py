"""Losses on a three-pixel image whose values are worked out by hand.

Pixel A: logits (0, ln 3) -> p = (1/4, 3/4), target 1.
Pixel B: logits (0, 0)    -> p = (1/2, 1/2), target 0.
Pixel C: logits (50, -50), target 255 (ignored): any contribution would be huge.
"""

from __future__ import annotations

import math

import pytest
import torch

from alos2fm.train.losses import build_loss

LN2, LN43 = math.log(2.0), math.log(4.0 / 3.0)


def _case(num_classes: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    logits = torch.zeros(1, num_classes, 1, 3)
    logits[0, 1, 0, 0] = math.log(3.0)
    logits[0, 0, 0, 2], logits[0, 1, 0, 2] = 50.0, -50.0
    if num_classes == 3:
        logits[0, 2] = -100.0  # class 2 never predicted, never present
    target = torch.tensor([[[1, 0, 255]]])
    return logits, target


def test_cross_entropy_mean_over_valid_pixels() -> None:
    logits, target = _case()
    assert build_loss("ce")(logits, target).item() == pytest.approx((LN43 + LN2) / 2)


def test_cross_entropy_class_weights_give_weighted_mean() -> None:
    logits, target = _case()
    loss = build_loss("ce", class_weights=[1.0, 3.0])(logits, target)
    assert loss.item() == pytest.approx((3 * LN43 + 1 * LN2) / 4)


def test_focal_gamma_two_down_weights_easy_pixels() -> None:
    logits, target = _case()
    # (1 - 3/4)^2 ln(4/3) and (1 - 1/2)^2 ln 2, averaged over the two valid pixels.
    expected = (LN43 / 16 + LN2 / 4) / 2
    assert build_loss("focal")(logits, target).item() == pytest.approx(expected)


def test_focal_alpha_scales_each_pixel_by_its_class_weight() -> None:
    logits, target = _case()
    expected = (3 * LN43 / 16 + 1 * LN2 / 4) / 2
    loss = build_loss("focal", class_weights=[1.0, 3.0])(logits, target)
    assert loss.item() == pytest.approx(expected)


def test_dice_on_softmax_probabilities() -> None:
    logits, target = _case()
    # class 0: 2*(1/2) / (3/4 + 1) = 4/7; class 1: 2*(3/4) / (5/4 + 1) = 2/3.
    expected = 1 - (4 / 7 + 2 / 3) / 2
    assert expected == pytest.approx(8 / 21)
    assert build_loss("dice")(logits, target).item() == pytest.approx(expected, abs=1e-5)


def test_dice_excludes_classes_absent_from_target() -> None:
    logits, target = _case(num_classes=3)
    # Class 2 has no target pixel: averaging its (undefined) Dice in would change the value.
    assert build_loss("dice")(logits, target).item() == pytest.approx(8 / 21, abs=1e-5)


def test_paper_combination_half_dice_half_focal_with_half_alpha() -> None:
    logits, target = _case()
    focal = (1.5 * LN43 / 16 + 0.5 * LN2 / 4) / 2  # alpha = 0.5 * (1, 3)
    expected = 0.5 * (8 / 21) + 0.5 * focal
    loss = build_loss("dice_focal", class_weights=[1.0, 3.0])(logits, target)
    assert loss.item() == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("name", ["ce", "focal", "dice", "dice_focal"])
def test_all_ignored_batch_gives_zero_with_a_gradient(name: str) -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss = build_loss(name)(logits, target)
    assert loss.item() == 0.0
    loss.backward()
    assert logits.grad is not None


def test_class_weights_are_buffers_that_move_with_the_module() -> None:
    loss = build_loss("dice_focal", class_weights=[1.0, 2.0]).to(torch.float64)
    assert [name for name, _ in loss.named_buffers()] == ["focal.alpha"]
    assert loss.focal.alpha.dtype == torch.float64
    assert loss.focal.alpha.tolist() == [0.5, 1.0]


def test_unknown_loss_name() -> None:
    with pytest.raises(ValueError, match="dice_focal"):
        build_loss("tversky")  # type: ignore[arg-type]


# --- D12: class weights that are zero for every valid pixel ---------------------------------


@pytest.mark.parametrize("name", ["ce", "focal", "dice_focal"])
def test_D12_zero_weight_for_every_valid_pixel_gives_zero_loss_not_nan(name: str) -> None:
    logits, target = _case(3)
    logits.requires_grad_(True)
    loss = build_loss(name, class_weights=[0.0, 0.0, 1.0])(logits, target)  # targets 0, 1
    if name == "ce":
        assert loss.item() == 0.0
    assert torch.isfinite(loss)
    loss.backward()
    assert torch.isfinite(logits.grad).all()
    if name == "ce":
        assert (logits.grad == 0).all()


# --- R10: a non-finite loss stops training ---------------------------------------------------


def test_R10_non_finite_training_loss_stops_the_run(tmp_path) -> None:
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from alos2fm.errors import Alos2fmError
    from alos2fm.train.config import TrainerConfig
    from alos2fm.train.engine import NonFiniteLoss, build_trainer

    class Toy(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.layer = torch.nn.Linear(2, 1)
            self.steps = 0

        def training_step(self, batch, batch_idx):
            self.steps += 1
            loss = self.layer(batch[0]).mean()
            return loss * float("nan") if batch_idx == 2 else loss

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    cfg = TrainerConfig(accelerator="cpu", devices=1, progress_bar=False)
    trainer = build_trainer(cfg, tmp_path, max_epochs=1, seed=0)
    assert any(isinstance(c, NonFiniteLoss) for c in trainer.callbacks)
    module = Toy()
    loader = DataLoader(TensorDataset(torch.ones(8, 2)), batch_size=1)
    with pytest.raises(Alos2fmError, match=r"loss is nan at step 2"):
        trainer.fit(module, train_dataloaders=loader)
    assert module.steps == 3
    assert torch.isfinite(module.layer.weight).all()  # stopped before the NaN reached weights
