"""Figures for reports: confusion matrix, per-class IoU, predictions, reconstructions, losses.

Every function writes one PNG atomically (a sibling temporary file renamed into place, so
a reader never sees half a figure) and returns the path. Figures are built as
``matplotlib.figure.Figure`` objects, not through pyplot: they render with the Agg canvas
whatever backend the caller's process uses, and leave no global figure state behind.
Class colours are RGB 0-255 triples, as in the label tables; the ignore / no-data value
255 is drawn black.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from alos2fm.atomic import atomic_path
from alos2fm.evaluation.quicklook import Colour, colourise


def _save(fig: Figure, out_png: str | Path) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return out_png


def _subplots(*args, **kwargs):
    """``(figure, axes)`` like ``pyplot.subplots``, without pyplot."""
    fig = Figure(figsize=kwargs.pop("figsize", None), layout=kwargs.pop("layout", None))
    return fig, fig.subplots(*args, **kwargs)


def _as_array(x) -> np.ndarray:
    """numpy view of an array or (CPU/GPU, grad or not) tensor."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x)


def _legend(ax, names: Sequence[str], colours: Sequence[Colour]) -> None:
    handles = [
        Patch(facecolor=np.asarray(c) / 255, edgecolor="0.3", label=n)
        for n, c in zip(names, colours, strict=True)
    ]
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.02, 1), fontsize=8, frameon=False
    )


def plot_confusion_matrix(
    matrix, class_names: Sequence[str], out_png: str | Path, title: str | None = None
) -> Path:
    """Row-normalised confusion matrix (rows = truth, each row sums to 1; empty rows blank)."""
    m = _as_array(matrix).astype(np.float64)
    rows = m.sum(axis=1, keepdims=True)
    norm = np.divide(m, rows, out=np.full_like(m, np.nan), where=rows > 0)
    k = len(class_names)
    fig, ax = _subplots(figsize=(1.0 + 0.6 * k, 0.8 + 0.6 * k))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    if k <= 20:
        for i in range(k):
            for j in range(k):
                if not np.isnan(norm[i, j]):
                    colour = "white" if norm[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        f"{norm[i, j]:.2f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "Confusion matrix (row-normalised)")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    return _save(fig, out_png)


def plot_per_class_iou(
    iou: Sequence[float],
    class_names: Sequence[str],
    out_png: str | Path,
    colours: Sequence[Colour] | None = None,
    title: str | None = None,
) -> Path:
    """Bar per class (IoU in 0-1); classes without an IoU (NaN / None) are marked n/a."""
    values = np.array([np.nan if v is None else v for v in iou], dtype=np.float64)
    k = len(class_names)
    fig, ax = _subplots(figsize=(1.5 + 0.55 * k, 3.5))
    bar_colours = [np.asarray(c) / 255 for c in colours] if colours is not None else "tab:blue"
    ax.bar(range(k), np.nan_to_num(values), color=bar_colours, edgecolor="0.3")
    for i, v in enumerate(values):
        ax.text(
            i,
            (0 if np.isnan(v) else v) + 0.01,
            "n/a" if np.isnan(v) else f"{v:.2f}",
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_ylim(0, 1.08)
    ax.set_ylabel("IoU")
    mean = np.nanmean(values) if np.isfinite(values).any() else float("nan")
    ax.set_title(title or f"Per-class IoU (mIoU {mean:.3f})")
    return _save(fig, out_png)


def plot_prediction(
    prediction: np.ndarray,
    truth: np.ndarray,
    class_names: Sequence[str],
    colours: Sequence[Colour],
    out_png: str | Path,
    image_db: np.ndarray | None = None,
    title: str | None = None,
) -> Path:
    """Predicted map next to the ground truth (both (H, W) class ids), optionally after the
    first band of the input image in dB (shown with a 2-98 % stretch)."""
    panels: list[tuple[str, np.ndarray, dict]] = []
    if image_db is not None:
        band = _as_array(image_db)
        band = band[0] if band.ndim == 3 else band
        low, high = np.nanpercentile(band, [2, 98]) if np.isfinite(band).any() else (0, 1)
        panels.append(("input (dB)", band, {"cmap": "gray", "vmin": low, "vmax": high}))
    panels.append(("prediction", colourise(_as_array(prediction), colours), {}))
    panels.append(("ground truth", colourise(_as_array(truth), colours), {}))
    fig, axes = _subplots(1, len(panels), figsize=(3.3 * len(panels) + 2.0, 3.6))
    for ax, (name, data, style) in zip(axes, panels, strict=True):
        ax.imshow(data, interpolation="nearest", **style)
        ax.set_title(name)
        ax.set_axis_off()
    _legend(axes[-1], class_names, colours)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)


HIDDEN_COLOUR = (0.0, 0.75, 0.85)  # the pixels a masked-image model hides from its encoder


def plot_reconstructions(
    image,
    mask,
    reconstruction,
    out_png: str | Path,
    weight=None,
    max_images: int = 4,
    title: str | None = None,
    *,
    units: str = "dB",
    reconstruction_units: str | None = None,
    row_labels: Sequence[str] | None = None,
) -> Path:
    """Masked-image-modelling results, one row per image (first channel shown): the
    input, what the encoder saw (hidden pixels in one colour, explained in a legend), the
    reconstruction and (when given) the SAR-W weight map, with a caption.

    Input and reconstruction share one colour scale (2-98 % of all inputs shown) and its
    colour bar, so that figures of the same patches at successive epochs compare directly.

    Args:
        image: (N, C, H, W) input in ``units`` (backscatter in dB as pretraining draws
            it); array or tensor.
        mask: (N, H, W) or (N, 1, H, W), 1/True where pixels were hidden from the encoder.
        reconstruction: (N, C, H, W), in ``units`` unless ``reconstruction_units`` names
            others (a HOG target's energy): then it has its own scale and colour bar.
        weight: (N, C, H, W) or (N, 1, H, W) per-pixel loss weights (SAR-W, in [1, e]), or None.
        max_images: rows drawn at most.
        row_labels: one label per row (e.g. which training patch), or None.
    """
    image, recon = _as_array(image)[:, 0], _as_array(reconstruction)[:, 0]
    mask = _as_array(mask).reshape(len(image), *image.shape[-2:]).astype(bool)
    rows = min(len(image), max_images)
    image, recon, mask = image[:rows], recon[:rows], mask[:rows]
    own_scale = reconstruction_units is not None and reconstruction_units != units
    columns = ["input", "encoder input", "reconstruction"]
    if weight is not None:
        weight = _as_array(weight)[:rows, 0]
        columns.append("SAR-W weight")
    fig, axes = _subplots(
        rows,
        len(columns),
        figsize=(2.4 * len(columns), 2.4 * rows + 1.6),
        squeeze=False,
        layout="constrained",
    )
    limits = _stretch(image)
    recon_limits = _stretch(recon) if own_scale else limits
    gray = {"cmap": "gray", "interpolation": "nearest"}
    for r in range(rows):
        shown = {
            "input": axes[r, 0].imshow(image[r], vmin=limits[0], vmax=limits[1], **gray),
            "reconstruction": axes[r, 2].imshow(
                recon[r], vmin=recon_limits[0], vmax=recon_limits[1], **gray
            ),
        }
        axes[r, 1].imshow(image[r], vmin=limits[0], vmax=limits[1], **gray)
        hidden = np.zeros((*mask[r].shape, 4))
        hidden[mask[r]] = (*HIDDEN_COLOUR, 1.0)
        axes[r, 1].imshow(hidden, interpolation="nearest")
        if weight is not None:
            shown["SAR-W weight"] = axes[r, 3].imshow(
                weight[r], cmap="magma", interpolation="nearest"
            )
        for c, name in enumerate(columns):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(name)
        if row_labels is not None:
            axes[r, 0].set_ylabel(row_labels[r], fontsize=8)
        if r == rows - 1:  # colour bars under the columns they explain
            bars = {
                0: ("input", f"backscatter ({units})"),
                2: ("reconstruction", f"reconstruction ({reconstruction_units or units})"),
            }
            if weight is not None:
                bars[3] = ("SAR-W weight", "loss weight")
            for c, (name, label) in bars.items():
                bar = fig.colorbar(shown[name], ax=axes[:, c], location="bottom", shrink=0.9)
                bar.set_label(label, fontsize=8)
    hidden = Patch(facecolor=HIDDEN_COLOUR, edgecolor="0.3", label="hidden from\nthe encoder")
    axes[-1, 1].legend(
        handles=[hidden], loc="upper center", bbox_to_anchor=(0.5, -0.04), fontsize=8
    )
    caption = (
        "The encoder sees the input without the hidden pixels and the model reconstructs "
        "them; the loss is computed on hidden pixels only (elsewhere the reconstruction "
        "is untrained). Input and reconstruction share one scale."
    )
    if weight is not None:
        caption += " SAR-W weights each hidden pixel's error: from 1 (brightest) to e (darkest)."
    fig.supxlabel(textwrap.fill(caption, 30 * len(columns)), fontsize=8)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)


def _stretch(values: np.ndarray) -> tuple[float, float]:
    """2-98 % of the finite values (0, 1 when there are none)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return 0.0, 1.0
    low, high = np.percentile(finite, [2, 98])
    return float(low), float(high if high > low else low + 1e-6)


def loss_curves_figure(csv_path: str | Path, title: str | None = None) -> Figure:
    """The figure :func:`plot_loss_curves` writes (for callers that inspect it)."""
    import pandas as pd

    table = pd.read_csv(csv_path)
    x_step = "step" if "step" in table else table.columns[0]
    skip = {"epoch", "step"}
    losses = [c for c in table.columns if "loss" in c and c not in skip]
    scores = [
        c for c in table.columns if c not in skip and "loss" not in c and not c.startswith("lr")
    ]
    panels = 2 if scores else 1
    fig, axes = _subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False, sharex=True)
    loss_ax = axes[0, 0]
    for column in losses:
        rows = table[[x_step, column]].dropna()
        loss_ax.plot(
            rows[x_step], rows[column], label=column, marker="." if len(rows) < 30 else None
        )
    loss_ax.set_xlabel("optimiser step")
    loss_ax.set_ylabel("loss")
    loss_ax.set_title("losses")
    if losses:
        loss_ax.legend(fontsize=8)
    if scores:
        score_ax = axes[0, 1]
        for column in scores:
            rows = table[[x_step, column]].dropna()
            score_ax.plot(rows[x_step], rows[column], label=column, marker=".")
        score_ax.set_xlabel("optimiser step")
        score_ax.set_ylabel("score (0-1)")
        score_ax.set_title("evaluation scores")
        score_ax.legend(fontsize=8)
    fig.suptitle(title or Path(csv_path).parent.name)
    return fig


def plot_loss_curves(csv_path: str | Path, out_png: str | Path, title: str | None = None) -> Path:
    """Curves from a Lightning ``CSVLogger`` ``metrics.csv``, both panels against the
    optimiser step (one x axis, shared).

    Left: every column whose name contains ``loss`` (training steps are logged more often
    than validation: each curve keeps its own non-empty rows). Right, labelled: the other
    logged scores (e.g. ``val/miou``, validated every N steps or at each epoch's last
    step), if any. ``epoch``, ``step`` and learning-rate columns (``lr*``) are not plotted.
    """
    return _save(loss_curves_figure(csv_path, title), out_png)
