"""RESULTS.md for the Flevoland study, from a study folder written by ``run.py``.

    python experiments/flevoland/report.py --study DIR [--out experiments/flevoland]

Writes ``RESULTS.md`` and ``figures/`` under ``--out``: the test-mIoU table (methods x
label fractions, mean ± std over split seeds, per input setting), overall accuracy, the
paired differences to random initialisation by split seed, per-class IoU, label-efficiency
curves, predicted maps beside the ground truth, the split layout, and the pretraining
reconstructions. Every number comes from the runs' ``results.json``; the discussion is
left as marked placeholders for a person to write from these numbers.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from matplotlib.figure import Figure
from matplotlib.patches import Patch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from run import METHOD_LABELS, StudyConfig, collect, fraction_tag, slug  # noqa: E402
from scene import CLASS_NAMES, class_colours, read_ground_truth  # noqa: E402
from splits import SPLITS, make_split  # noqa: E402

from alos2fm.evaluation.figures import colourise  # noqa: E402

# Written by a person from the numbers, in discussion.md beside RESULTS.md (caveats too).
DISCUSSION = "<!-- DISCUSSION: write discussion.md beside RESULTS.md from the numbers above. -->"


def _save(fig: Figure, path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return f"figures/{path.name}"


# Each SAR-W method and the method it differs from by the weighting alone.
WEIGHTING_PAIRS = {
    "sarw_simmim": "simmim",
    "sarw_mixmae": "mixmae",
    "sarw_simmim_shared": "sarw_simmim",
}


def _ordered(methods, labels: dict[str, str]) -> list[str]:
    """``methods`` in the order of ``labels`` (the display names, table order)."""
    return [m for m in labels if m in set(methods)]


def _colour(method: str, labels: dict[str, str]) -> str | None:
    """A method's line colour, from its place in ``labels``: the same in every panel."""
    return f"C{list(labels).index(method) % 10}" if method in labels else None


def _mean_std(values: pd.Series) -> str:
    if len(values) == 1:
        return f"{values.iloc[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "_(no runs to compare yet)_"
    header = "| " + " | ".join(map(str, table.columns)) + " |"
    rule = "|" + "---|" * len(table.columns)
    rows = ["| " + " | ".join(map(str, row)) + " |" for row in table.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def score_table(results: pd.DataFrame, metric: str, labels: dict[str, str]) -> pd.DataFrame:
    """Methods (rows) x fractions (columns) of ``metric``, mean ± std over split seeds."""
    rows = []
    for method in _ordered(results["method"], labels):
        row = {"method": labels[method]}
        for fraction, group in results[results["method"] == method].groupby("fraction"):
            row[f"{fraction:.0%}"] = _mean_std(group[metric])
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


def paired_table(
    results: pd.DataFrame, labels: dict[str, str], base: str | dict[str, str] = "random"
) -> pd.DataFrame:
    """Test mIoU of each method minus ``base``'s (one method, or one per method), on the
    same split seed and fraction: the mean, then the per-seed differences."""
    rows = []
    for method in _ordered(results["method"], labels):
        reference = base if isinstance(base, str) else base.get(method)
        if reference in (None, method):
            continue
        ref = results[results["method"] == reference].set_index(["split_seed", "fraction"])
        mine = results[results["method"] == method].set_index(["split_seed", "fraction"])
        diff = (mine["test_miou"] - ref["test_miou"]).dropna()
        row = {"method": f"{labels[method]} − {labels[reference]}"}
        for fraction, group in diff.groupby(level="fraction"):
            per_seed = ", ".join(f"{v:+.3f}" for v in group)
            row[f"{fraction:.0%}"] = f"{group.mean():+.3f} ({per_seed})"
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


def per_class_table(results: pd.DataFrame, fraction: float, labels: dict[str, str]) -> pd.DataFrame:
    """Per-class test IoU at one fraction, mean over split seeds; classes as rows."""
    subset = results[results["fraction"] == fraction]
    columns = [c for c in results.columns if c.startswith("iou_")]
    table = {"class": [c.removeprefix("iou_") for c in columns]}
    for method in _ordered(subset["method"], labels):
        means = subset[subset["method"] == method][columns].mean()
        table[labels[method]] = [f"{v:.3f}" for v in means]
    return pd.DataFrame(table)


def _pixels_per_fraction(results: pd.DataFrame) -> str:
    pixels = results.groupby("fraction")["train_pixels"].mean()
    return "; ".join(f"{f:.0%}: {n:,.0f} px" for f, n in pixels.items()) + ", mean over seeds"


def pixel_count_table(splits) -> pd.DataFrame:
    """Labelled pixels per class and split, the split seeds side by side ("a / b / c")."""
    tables = [split.pixel_counts(CLASS_NAMES) for split in splits]
    table = tables[0][["class", "scored"]].copy()
    for name in SPLITS:
        table[name] = [" / ".join(str(t[name].iloc[i]) for t in tables) for i in range(len(table))]
    return table


def plot_curves(results: pd.DataFrame, path: Path, labels: dict[str, str]) -> str:
    settings = list(dict.fromkeys(results["setting"]))
    fig = Figure(figsize=(5.2 * len(settings), 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(settings), sharey=True))
    for ax, setting in zip(axes, settings, strict=True):
        subset = results[results["setting"] == setting]
        for method in _ordered(subset["method"], labels):
            stats = subset[subset["method"] == method].groupby("fraction")["test_miou"]
            mean, std = stats.mean(), stats.std(ddof=1).fillna(0.0)
            style = "--" if method == "rf" else "-"
            colour = _colour(method, labels)
            ax.errorbar(
                mean.index * 100, mean, yerr=std, fmt=style + "o", capsize=3,
                color=colour, label=labels[method],
            )  # fmt: skip
        ax.set_xscale("log")
        fractions = sorted(set(subset["fraction"]))
        ax.set_xticks([f * 100 for f in fractions], [f"{f:.0%}" for f in fractions])
        ax.set_xlabel("labelled training pixels (%)")
        ax.set_title(setting)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mIoU (mean ± std over split seeds)")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(fig, path)


def _legend(fig: Figure, names: list[str], colours: list) -> None:
    handles = [
        Patch(facecolor=np.asarray(c) / 255, label=n) for n, c in zip(names, colours, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=8, frameon=False)


def plot_maps(
    study: Path, setting: str, split, fraction: float, labels: dict[str, str], path: Path
) -> str:
    """Ground truth (all labels, test labels) beside the predicted map of each method in
    ``labels``."""
    colours = [class_colours()[c] for c in split.scored]
    names = [CLASS_NAMES[c] for c in split.scored]
    tag = f"seed{split.seed}_{fraction_tag(fraction)}"
    all_labels = np.full(split.block_split.shape, 255, dtype=np.uint8)
    for name in SPLITS:
        all_labels = np.where(split.labels[name] != 255, split.labels[name], all_labels)
    panels = [("ground truth (scored classes)", all_labels), ("test pixels", split.labels["test"])]
    for method, label in labels.items():
        file = study / slug(setting) / "runs" / method / tag / "prediction.npz"
        if file.exists():
            panels.append((label, np.load(file)["prediction"]))
    cols = min(4, len(panels))
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(4.2 * cols, 3.3 * rows + 0.8))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.set_axis_off()
    for ax, (title, classes) in zip(axes, panels, strict=False):
        ax.imshow(colourise(classes, colours), interpolation="nearest")
        ax.set_title(title, fontsize=9)
    _legend(fig, names, colours)
    fig.suptitle(f"{setting}, split seed {split.seed}, {fraction:.0%} of training labels")
    return _save(fig, path)


def plot_split(split, path: Path) -> str:
    fig = Figure(figsize=(6.5, 5))
    ax = fig.subplots()
    layout = np.array([[0.55, 0.8, 0.55], [0.95, 0.75, 0.3], [0.85, 0.4, 0.4]])
    image = layout[split.block_split]
    labelled = np.zeros(split.block_split.shape, dtype=bool)
    for name in SPLITS:
        labelled |= split.labels[name] != 255
    image[labelled] *= 0.6  # labelled pixels darker
    ax.imshow(image, interpolation="nearest")
    ax.set_axis_off()
    ax.set_title(
        f"split seed {split.seed}: train (green), val (orange), test (red); darker = used labels"
    )
    return _save(fig, path)


def copy_reconstructions(study: Path, figures: Path) -> list[tuple[str, str]]:
    """The last reconstruction figure of every pretraining run, copied beside RESULTS.md."""
    out = []
    for run in sorted(study.glob("*/pretrain/*")):
        images = sorted((run / "figures").glob("reconstruction_e*.png"))
        if images:
            target = figures / f"reconstruction_{run.parents[1].name}_{run.name}.png"
            figures.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(images[-1], target)
            out.append((f"{run.parents[1].name} / {run.name}", f"figures/{target.name}"))
    return out


def plot_pretraining_losses(study: Path, cfg: StudyConfig, path: Path) -> str | None:
    """Training loss per epoch of every pretraining run, one panel per input setting.

    Each curve is divided by its first epoch's value: SAR-W scales the loss by weights of
    1 to e and MixMAE's loss is on normalised pixels, so only the shapes compare."""
    runs = {
        s: sorted((study / slug(s) / "pretrain").glob("*/logs/metrics.csv")) for s in cfg.settings
    }
    runs = {s: found for s, found in runs.items() if found}
    if not runs:
        return None
    labels = cfg.labels()
    fig = Figure(figsize=(5.2 * len(runs), 3.8))
    axes = np.atleast_1d(fig.subplots(1, len(runs), sharey=True))
    for ax, (setting, files) in zip(axes, runs.items(), strict=True):
        for file in files:
            loss = pd.read_csv(file).groupby("epoch")["train/loss_epoch"].mean().dropna()
            if len(loss):
                method = file.parents[1].name
                colour = _colour(method, labels)
                label = labels.get(method, method)
                ax.plot(loss.index + 1, loss / loss.iloc[0], color=colour, label=label)
        ax.set_title(setting)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("training loss / first epoch's")
    return _save(fig, path)


def _changes(lever) -> str:
    changes = [f"pretraining `{json.dumps(lever.pretrain)}`"] if lever.pretrain else []
    if lever.finetune_epochs:
        changes.append(f"{lever.finetune_epochs} fine-tuning epochs")
    return ", ".join(changes)


def lever_section(
    cfg: StudyConfig, results: pd.DataFrame, study: Path, split, figures: Path
) -> list[str]:
    """Each lever beside its base method and random init, on the grid part it ran on."""
    if not cfg.levers:
        return []
    labels = cfg.labels()
    bases = {name: lever.base for name, lever in cfg.levers.items()}
    lines = [
        "## Levers",
        "",
        "Variants of a method, each with one thing changed in its pretraining or "
        "fine-tuning, trained on the same pixels as the methods:",
        "",
        "| lever | base | changed |",
        "|---|---|---|",
    ]
    lines += [
        f"| {lever.label} | {labels[lever.base]} | {_changes(lever)} |"
        for lever in cfg.levers.values()
    ]
    for setting in cfg.settings:
        ran = results[(results["setting"] == setting) & results["method"].isin(cfg.levers)]
        if ran.empty:
            continue
        keep = {"random", *bases.values(), *ran["method"]}
        grid = set(zip(ran["split_seed"], ran["fraction"], strict=True))
        cells = zip(results["split_seed"], results["fraction"], strict=True)
        in_grid = np.array([cell in grid for cell in cells], dtype=bool)
        subset = results[(results["setting"] == setting) & results["method"].isin(keep) & in_grid]
        lines += [
            "",
            f"### {setting}: levers",
            "",
            f"Test mIoU on split seeds {sorted({s for s, _ in grid})}:",
            "",
            _markdown(score_table(subset, "test_miou", labels)),
            "",
            "Paired difference to the lever's base method:",
            "",
            _markdown(paired_table(subset, labels, base=bases)),
            "",
            "Paired difference to random initialisation fine-tuned for as many epochs:",
            "",
            _markdown(paired_table(subset, labels, base=_random_references(cfg))),
            "",
        ]
        if split.seed in set(subset["split_seed"]):
            fraction = max(subset["fraction"])
            shown = {m: labels[m] for m in _ordered(subset["method"], labels)}
            name = f"maps_{slug(setting)}_levers_{fraction_tag(fraction)}.png"
            link = plot_maps(study, setting, split, fraction, shown, figures / name)
            lines += [f"![predicted maps, levers]({link})", ""]
    return lines


def _random_references(cfg: StudyConfig) -> dict[str, str]:
    """Each pretrained lever's random-init reference: the random-init lever with the same
    fine-tuning length if there is one, else random init."""
    randoms = {v.finetune_epochs: n for n, v in cfg.levers.items() if v.base == "random"}
    return {
        name: randoms.get(lever.finetune_epochs, "random") if lever.finetune_epochs else "random"
        for name, lever in cfg.levers.items()
        if lever.base != "random"
    }


def write_report(study: Path, out: Path) -> Path:
    cfg = StudyConfig.model_validate(yaml.safe_load((study / "config.yaml").read_text()))
    results = collect(study)
    figures = out / "figures"
    data = Path(json.loads((study / "data.json").read_text())["data"])
    gt = read_ground_truth(data)
    splits = [make_split(gt, seed, cfg.split) for seed in cfg.split_seeds]
    first = splits[0]
    rule = cfg.split
    labels = {m: name for m, name in METHOD_LABELS.items() if m in cfg.methods}
    main = results[results["method"].isin(cfg.methods)]
    lines = [
        "# Flevoland label-efficiency study: does SAR-W pretraining help?",
        "",
        f"Generated by `experiments/flevoland/report.py` from the study folder `{study}` "
        f"({len(results)} runs). Plan: split seeds {cfg.split_seeds}, label fractions "
        f"{[f'{f:.0%}' for f in cfg.fractions]}, pretraining {cfg.pretrain_epochs} epochs, "
        f"fine-tuning {cfg.finetune_epochs} epochs.",
        "",
        "## Setting",
        "",
        "- Data: AIRSAR L-band Flevoland (1989), PolSARpro T3, 750 × 1024 px; σ0 in dB from "
        "the T3 elements through `alos2fm.products.polsarpro.T3Product`; 15-class ground "
        "truth, 0 = unlabelled.",
        f"- Splits: {rule.block_size}-px blocks dealt to train/val/test "
        f"({'/'.join(f'{f:.0%}' for f in rule.fractions)} of each class's pixels) by seeded "
        f"iterative stratification; a draw is kept only if every scored class has at least "
        f"{rule.min_split_pixels} px in every split. Classes with fewer than "
        f"{rule.min_class_pixels} labelled px in the scene are not scored (ignored in training "
        f"and scoring): {', '.join(CLASS_NAMES[c] for c in first.excluded) or 'none'}. "
        f"Training labels within {rule.buffer} px of a val/test block are not used.",
        "- Label fractions: a uniform, nested sample of the training pixels (1 % ⊂ 5 % ⊂ 10 % "
        "⊂ 100 %), seeded by the split seed; every method trains on exactly these pixels "
        f"({_pixels_per_fraction(results)}).",
        "- **Transductive**: pretraining uses the imagery of the whole scene (no labels), "
        "and fine-tuning patches may show val/test imagery as unlabelled context; labels "
        "never cross splits. This is the setting of mapping one scene from partial ground "
        "truth, not of transferring to unseen scenes.",
        "- Scores: the whole scene is predicted with the package's sliding-window predictor "
        f"(64-px tiles, {cfg.predict_overlap}-px overlap) and the test pixels are scored from "
        "one confusion matrix (`alos2fm.evaluation.metrics`); the model is the best "
        "validation-mIoU checkpoint. mean ± std over split seeds; comparisons paired by seed.",
        "",
        f"![split layout]({plot_split(first, figures / 'split_layout.png')})",
        "",
        "Labelled pixels per class and split (split seeds "
        f"{' / '.join(str(s.seed) for s in splits)}; the layout above is seed {first.seed}):",
        "",
        _markdown(pixel_count_table(splits)),
        "",
        "## Results",
        "",
        f"![label-efficiency curves]({plot_curves(main, figures / 'curves.png', labels)})",
        "",
    ]
    for setting in cfg.settings:
        subset = main[main["setting"] == setting]
        if subset.empty:
            continue
        lines += [
            f"### {setting}",
            "",
            "Test mIoU:",
            "",
            _markdown(score_table(subset, "test_miou", labels)),
            "",
            "Overall accuracy:",
            "",
            _markdown(score_table(subset, "test_oa", labels)),
            "",
            "Paired difference in test mIoU to random initialisation (mean, then per split seed):",
            "",
            _markdown(paired_table(subset, labels)),
            "",
            "Paired difference in test mIoU made by the weighting (SAR-W − the same method "
            "unweighted; shared_avg − per_channel):",
            "",
            _markdown(paired_table(subset, labels, base=WEIGHTING_PAIRS)),
            "",
        ]
        for fraction in (min(cfg.fractions), max(cfg.fractions)):
            lines += [
                f"Per-class test IoU at {fraction:.0%} of the labels (mean over split seeds):",
                "",
                _markdown(per_class_table(subset, fraction, labels)),
                "",
            ]
            name = f"maps_{slug(setting)}_{fraction_tag(fraction)}.png"
            link = plot_maps(study, setting, first, fraction, labels, figures / name)
            lines += [f"![predicted maps]({link})", ""]
    lines += lever_section(cfg, results, study, first, figures)
    lines += ["### Pretraining", ""]
    losses = plot_pretraining_losses(study, cfg, figures / "pretraining_losses.png")
    if losses:
        lines += [f"![pretraining losses]({losses})", ""]
    for title, link in copy_reconstructions(study, figures):
        lines += [f"{title}: ![reconstruction]({link})", ""]
    discussion = out / "discussion.md"
    lines += [
        "## Discussion",
        "",
        discussion.read_text().strip() if discussion.exists() else DISCUSSION,
        "",
    ]
    path = out / "RESULTS.md"
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", type=Path, required=True, help="folder written by run.py")
    parser.add_argument("--out", type=Path, default=HERE, help="where RESULTS.md goes")
    args = parser.parse_args()
    print(write_report(args.study, args.out))


if __name__ == "__main__":
    main()
