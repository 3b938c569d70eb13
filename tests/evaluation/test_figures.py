"""Figures: exact colour tables, PNGs that contain what they should, atomic writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from matplotlib.image import imread

from alos2fm.evaluation import figures

NAMES = ["water", "urban", "rice"]
COLOURS = [(0, 0, 255), (255, 0, 0), (0, 200, 0)]


def _pixels(png: Path) -> set[tuple[int, int, int]]:
    rgb = np.round(imread(png)[..., :3] * 255).astype(int)
    return set(map(tuple, rgb.reshape(-1, 3)))


def _no_leftovers(folder: Path) -> None:
    assert not [p for p in folder.iterdir() if p.name.endswith(".partial")]


def test_prediction_vs_truth_with_input(tmp_path: Path) -> None:
    truth = np.zeros((16, 16), dtype=np.uint8)
    truth[:, 8:] = 1
    prediction = truth.copy()
    prediction[:4] = 2
    image = torch.randn(1, 16, 16) * 3 - 10
    out = figures.plot_prediction(prediction, truth, NAMES, COLOURS, tmp_path / "p.png", image)
    assert set(COLOURS) <= _pixels(out)


def test_confusion_matrix_and_iou_bars(tmp_path: Path) -> None:
    matrix = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 0]])  # last row empty: drawn blank
    out = figures.plot_confusion_matrix(torch.as_tensor(matrix), NAMES, tmp_path / "cm.png")
    assert imread(out).shape[0] > 100
    out = figures.plot_per_class_iou(
        [0.6, None, float("nan")], NAMES, tmp_path / "iou.png", colours=COLOURS
    )
    assert {COLOURS[0]} <= _pixels(out)  # the one defined bar, in its class colour
    _no_leftovers(tmp_path)


def test_reconstruction_grid(tmp_path: Path) -> None:
    image = torch.randn(3, 1, 32, 32)
    mask = torch.rand(3, 32, 32) > 0.5
    out = figures.plot_reconstructions(
        image,
        mask,
        image * 0.9,
        tmp_path / "rec.png",
        weight=torch.rand(3, 1, 32, 32) + 1,
        max_images=2,
    )
    height, width = imread(out).shape[:2]
    assert width > height  # two rows of four panels


def test_reconstruction_grid_marks_hidden_pixels_and_takes_other_units(tmp_path: Path) -> None:
    image = torch.randn(2, 1, 32, 32) * 3 - 12  # dB
    mask = torch.zeros(2, 1, 32, 32)
    mask[..., :16] = 1
    out = figures.plot_reconstructions(
        image,
        mask,
        torch.rand(2, 1, 32, 32),  # a HOG target's energy: its own scale
        tmp_path / "rec.png",
        reconstruction_units="HOG energy",
        row_labels=["training patch 3", "training patch 9"],
    )
    hidden = tuple(round(255 * c) for c in figures.HIDDEN_COLOUR)
    assert hidden in _pixels(out)


def test_loss_curves_from_a_lightning_csv(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text(
        "epoch,step,lr-AdamW,train_loss,val_loss,val_miou\n"
        "0,9,0.001,1.2,,\n0,19,0.001,1.0,,\n0,19,,,0.9,0.31\n"
        "1,29,0.0005,0.8,,\n1,39,0.0005,0.7,,\n1,39,,,0.75,0.42\n"
    )
    out = figures.plot_loss_curves(csv, tmp_path / "curves.png")
    assert imread(out).shape[1] > imread(out).shape[0]  # two panels side by side
    losses, scores = figures.loss_curves_figure(csv).axes
    assert losses.get_shared_x_axes().joined(losses, scores)  # one x axis
    assert "step" in losses.get_xlabel() and "step" in scores.get_xlabel()
    assert scores.get_ylabel() and scores.get_title()  # the right panel says what it shows
    assert [line.get_label() for line in scores.get_lines()] == ["val_miou"]
    assert list(scores.get_lines()[0].get_xdata()) == [19, 39]  # at their steps, not epochs


def test_failed_write_keeps_the_previous_figure(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "cm.png"
    out.write_bytes(b"previous")

    def broken(self, fname, **kwargs):
        Path(fname).write_bytes(b"half a png")
        raise OSError("disk full")

    monkeypatch.setattr(figures.Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk full"):
        figures.plot_confusion_matrix(np.eye(3), NAMES, out)
    assert out.read_bytes() == b"previous"
    _no_leftovers(tmp_path)
