"""RESULTS.md for the Flevoland study, from a study folder written by ``run.py``.

    python experiments/flevoland/report.py --study DIR [--out experiments/flevoland]

Writes ``RESULTS.md`` and ``figures/`` under ``--out``: the study's goals checked from
the runs, the test-mIoU table (methods x label budgets, mean ± std over split seeds, per
input setting), overall accuracy, the paired differences by split seed with a paired
t-test and a bootstrap interval, the fine-tuning seed spread, validation curves (did the
step budget reach a plateau?), the frozen probes, per-class IoU, label-efficiency curves,
predicted maps beside the ground truth, the split layout, and the pretraining
reconstructions. Every number comes from the runs' ``results.json`` and the probes'
``probe.json``; the discussion is ``discussion.md``, written by a person from these.
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

from run import METHOD_LABELS, StudyConfig, budget_label, collect, slug  # noqa: E402
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


def budget_order(results: pd.DataFrame) -> list[str]:
    """The budgets of ``results``, scarcest first (by mean labelled training pixels)."""
    return list(results.groupby("budget")["train_pixels"].mean().sort_values().index)


def score_table(results: pd.DataFrame, metric: str, labels: dict[str, str]) -> pd.DataFrame:
    """Methods (rows) x budgets (columns) of ``metric``, mean ± std over split seeds."""
    rows = []
    budgets = budget_order(results)
    for method in _ordered(results["method"], labels):
        row = {"method": labels[method]}
        groups = dict(list(results[results["method"] == method].groupby("budget")))
        for budget in budgets:
            if budget in groups:
                row[budget_label(budget)] = _mean_std(groups[budget][metric])
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


CELL = ["split_seed", "budget", "finetune_seed"]


def paired_differences(
    results: pd.DataFrame, method: str, reference: str, metric: str = "test_miou"
) -> pd.Series:
    """``method`` minus ``reference`` on the same cells (split seed, budget, fine-tuning
    seed), indexed by cell; cells one of them lacks drop out."""
    mine = results[results["method"] == method].set_index(CELL)[metric]
    ref = results[results["method"] == reference].set_index(CELL)[metric]
    return (mine - ref).dropna()


def paired_table(
    results: pd.DataFrame, labels: dict[str, str], base: str | dict[str, str] = "random"
) -> pd.DataFrame:
    """Test mIoU of each method minus ``base``'s (one method, or one per method), on the
    same cells: the mean, then the per-seed differences."""
    rows = []
    budgets = budget_order(results)
    for method in _ordered(results["method"], labels):
        reference = base if isinstance(base, str) else base.get(method)
        if reference in (None, method):
            continue
        diff = paired_differences(results, method, reference)
        row = {"method": f"{labels[method]} − {labels[reference]}"}
        groups = dict(list(diff.groupby(level="budget")))
        for budget in budgets:
            if budget in groups:
                per_seed = ", ".join(f"{v:+.3f}" for v in groups[budget])
                row[budget_label(budget)] = f"{groups[budget].mean():+.3f} ({per_seed})"
        rows.append(row)
    return pd.DataFrame(rows).fillna("–")


def significance(diff: np.ndarray, seed: int = 0, resamples: int = 10000) -> dict[str, float]:
    """Mean paired difference, its 95 % bootstrap interval (pairs resampled) and the
    two-sided paired t-test p-value (NaN below 2 pairs or with no spread)."""
    from scipy.stats import ttest_1samp

    diff = np.asarray(diff, dtype=float)
    out = {"n": len(diff), "mean": float(diff.mean()) if len(diff) else np.nan}
    if len(diff) < 2:
        return out | {"low": np.nan, "high": np.nan, "p": np.nan}
    draws = np.random.default_rng(seed).choice(diff, size=(resamples, len(diff)))
    low, high = np.percentile(draws.mean(axis=1), [2.5, 97.5])
    p = float(ttest_1samp(diff, 0.0).pvalue) if diff.std() > 0 else np.nan
    return out | {"low": float(low), "high": float(high), "p": p}


def _verdict(stats: dict[str, float]) -> str:
    if stats["n"] < 2:
        return "one pair: no test"
    if np.isfinite(stats["p"]) and stats["p"] < 0.05:
        return "significant (p < 0.05)"
    return "not significant"


def significance_table(
    results: pd.DataFrame, labels: dict[str, str], pairs: list[tuple[str, str]]
) -> pd.DataFrame:
    """Each (method, reference) pair at each budget: pairs, mean difference, bootstrap
    interval, paired t-test p and a plain verdict."""
    rows = []
    for method, reference in pairs:
        if not {method, reference} <= set(results["method"]):
            continue
        diff = paired_differences(results, method, reference)
        for budget, group in diff.groupby(level="budget"):
            stats = significance(group.to_numpy())
            rows.append(
                {
                    "comparison": f"{labels[method]} − {labels[reference]}",
                    "budget": budget_label(budget),
                    "pairs": stats["n"],
                    "mean": f"{stats['mean']:+.3f}",
                    "95 % bootstrap": f"[{stats['low']:+.3f}, {stats['high']:+.3f}]"
                    if stats["n"] > 1
                    else "–",
                    "paired t p": f"{stats['p']:.3f}" if np.isfinite(stats["p"]) else "–",
                    "verdict": _verdict(stats),
                }
            )
    return pd.DataFrame(rows)


def seed_spread_table(results: pd.DataFrame, labels: dict[str, str]) -> pd.DataFrame:
    """Cells fine-tuned with a second seed: both seeds' test mIoU and their difference
    (the fine-tuning noise that paired differences between methods must beat)."""
    repeats = results[results["finetune_seed"] != results["split_seed"]]
    rows = []
    for row in repeats.itertuples(index=False):
        first = results[
            (results["method"] == row.method)
            & (results["budget"] == row.budget)
            & (results["split_seed"] == row.split_seed)
            & (results["finetune_seed"] == row.split_seed)
        ]
        if first.empty:
            continue
        a, b = first["test_miou"].iloc[0], row.test_miou
        rows.append(
            {
                "method": labels.get(row.method, row.method),
                "budget": budget_label(row.budget),
                "split seed": row.split_seed,
                f"fine-tuning seed {row.split_seed}": f"{a:.3f}",
                "second seed": f"{b:.3f} (seed {row.finetune_seed})",
                "difference": f"{b - a:+.3f}",
            }
        )
    return pd.DataFrame(rows)


def per_class_table(results: pd.DataFrame, budget: str, labels: dict[str, str]) -> pd.DataFrame:
    """Per-class test IoU at one budget, mean over split seeds; classes as rows."""
    subset = results[results["budget"] == budget]
    columns = [c for c in results.columns if c.startswith("iou_")]
    table = {"class": [c.removeprefix("iou_") for c in columns]}
    for method in _ordered(subset["method"], labels):
        means = subset[subset["method"] == method][columns].mean()
        table[labels[method]] = [f"{v:.3f}" for v in means]
    return pd.DataFrame(table)


def _pixels_per_budget(results: pd.DataFrame) -> str:
    pixels = results.groupby("budget")["train_pixels"].agg(["mean", "min", "max"])
    parts = [
        f"{budget_label(b)}: {pixels.loc[b, 'mean']:,.0f} px "
        f"({pixels.loc[b, 'min']:,.0f}–{pixels.loc[b, 'max']:,.0f})"
        for b in budget_order(results)
    ]
    return "; ".join(parts) + ", mean (range) over split seeds"


def pixel_count_table(splits) -> pd.DataFrame:
    """Labelled pixels per class and split, the split seeds side by side ("a / b / c")."""
    tables = [split.pixel_counts(CLASS_NAMES) for split in splits]
    table = tables[0][["class", "scored"]].copy()
    for name in SPLITS:
        table[name] = [" / ".join(str(t[name].iloc[i]) for t in tables) for i in range(len(table))]
    return table


def plot_curves(results: pd.DataFrame, path: Path, labels: dict[str, str]) -> str:
    """Test mIoU against the labelled training pixels of each budget (mean over seeds)."""
    settings = list(dict.fromkeys(results["setting"]))
    fig = Figure(figsize=(5.2 * len(settings), 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(settings), sharey=True))
    for ax, setting in zip(axes, settings, strict=True):
        subset = results[results["setting"] == setting]
        pixels = subset.groupby("budget")["train_pixels"].mean()
        for method in _ordered(subset["method"], labels):
            stats = subset[subset["method"] == method].groupby("budget")["test_miou"]
            mean, std = stats.mean(), stats.std(ddof=1).fillna(0.0)
            order = pixels[mean.index].sort_values().index
            style = "--" if method == "rf" else "-"
            colour = _colour(method, labels)
            ax.errorbar(
                pixels[order], mean[order], yerr=std[order], fmt=style + "o", capsize=3,
                color=colour, label=labels[method],
            )  # fmt: skip
        ax.set_xscale("log")
        ticks = pixels.sort_values()
        # Parcel budgets and all labels sit close together on a log axis: slanted labels.
        names = [f"{budget_label(b)} ({n:,.0f} px)" for b, n in ticks.items()]
        ax.set_xticks(ticks, names, rotation=50, ha="right", rotation_mode="anchor")
        ax.minorticks_off()  # the budgets' own ticks only
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("label budget (mean labelled training pixels)")
        ax.set_title(setting)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test mIoU (mean ± std over split seeds)")
    axes[-1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _save(fig, path)


def _curves(study: Path, setting: str) -> dict[tuple[str, str, int, int], np.ndarray]:
    """Validation curves ((step, mIoU) rows) of the setting's fine-tuning runs, by cell."""
    curves = {}
    for path in sorted((study / slug(setting) / "runs").glob("*/*/results.json")):
        result = json.loads(path.read_text())
        if result.get("val_curve"):
            key = (result["method"], result["budget"], result["split_seed"],
                   result["finetune_seed"])  # fmt: skip
            curves[key] = np.asarray(result["val_curve"], dtype=float)
    return curves


def plot_validation_curves(
    curves: dict, setting: str, labels: dict[str, str], path: Path
) -> str | None:
    """Validation mIoU against the optimiser step (``_curves``), one panel per budget, one
    line per run (the same colour per method): the evidence for (or against) a converged
    budget."""
    if not curves:
        return None
    budgets = list(dict.fromkeys(b for _, b, _, _ in curves))
    fig = Figure(figsize=(4.6 * len(budgets), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(budgets), sharey=True))
    handles = {}  # one legend entry per method, whichever panel it is in
    for ax, budget in zip(axes, budgets, strict=True):
        for (method, b, _, _), curve in curves.items():
            if b == budget:
                (line,) = ax.plot(curve[:, 0] + 1, curve[:, 1], color=_colour(method, labels),
                                  alpha=0.7)  # fmt: skip
                handles.setdefault(labels.get(method, method), line)
        ax.set_title(f"{setting}, {budget_label(budget)}")
        ax.set_xlabel("optimiser step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation mIoU (validation map)")
    fig.legend(handles.values(), handles.keys(), fontsize=7, loc="upper left",
               bbox_to_anchor=(1.0, 0.95))  # fmt: skip
    return _save(fig, path)


def _rank(method: str) -> int:
    """A method's place in the tables (the order of METHOD_LABELS; levers after)."""
    order = list(METHOD_LABELS)
    return order.index(method) if method in order else len(order)


def plateau_table(curves: dict, labels: dict[str, str]) -> pd.DataFrame:
    """Per method and budget, mean over runs: the best validation mIoU, and how much the
    last 30 % of the step budget added to the best before it (near 0: a plateau)."""
    rows = {}
    for (method, budget, _, _), curve in sorted(curves.items(), key=lambda kv: _rank(kv[0][0])):
        late = curve[:, 0] + 1 > 0.7 * (curve[-1, 0] + 1)
        if late.all() or not late.any():
            continue
        gain = curve[late, 1].max() - curve[~late, 1].max()
        rows.setdefault((method, budget), []).append((curve[:, 1].max(), gain))
    table = [
        {
            "method": labels.get(method, method),
            "budget": budget_label(budget),
            "runs": len(values),
            "best val mIoU": f"{np.mean([v for v, _ in values]):.3f}",
            "gain in the last 30 % of steps": f"{np.mean([g for _, g in values]):+.3f}",
        }
        for (method, budget), values in sorted(
            rows.items(), key=lambda kv: list(labels).index(kv[0][0]) if kv[0][0] in labels else 99
        )
    ]
    return pd.DataFrame(table)


def probe_section(study: Path, cfg: StudyConfig) -> list[str]:
    """The frozen probes' tables: mean ± std over seeds, the paired difference to the
    first encoder and its paired t-test, on test and validation pixels."""
    labels = cfg.labels()
    lines = []
    variants = [
        f"- {lever.label} (`{name}`): {labels[lever.base]} with {_changes(lever)}"
        for name, lever in cfg.levers.items()
        if lever.budgets == []
    ]
    if variants:
        lines += ["Pretext variants (pretrained like their base, probed only):", "", *variants, ""]
    for path in sorted(study.glob("*/probes/*/probe.json")):
        probe = json.loads(path.read_text())
        plan = probe["plan"]
        reference = labels.get(plan["encoders"][0], plan["encoders"][0])
        lines += [
            f"### {plan['setting']}: frozen-feature probes, split seed {plan['split_seed']}, "
            f"{budget_label(path.parent.name.split('_', 1)[1])}",
            "",
            f"A linear classifier per pixel on the frozen encoder's multi-scale features "
            f"({plan['train_pixels']:,} training pixels drawn per seed, {plan['seeds']} seeds; "
            "a random encoder is drawn anew per seed). Each pretrained encoder is one "
            "pretraining run, so the spread is the probe's, not pretraining's. Paired "
            f"differences to {reference}, paired t-test over seeds:",
            "",
        ]
        table = []
        for entry in probe["test"]:
            name = entry["encoder"]
            val = next(e for e in probe["val"] if e["encoder"] == name)
            diff = next((k for k in entry if k.startswith("diff_to_")), None)
            table.append(
                {
                    "encoder": labels.get(name, name),
                    "test mIoU": f"{entry['miou_mean']:.3f} ± {entry['miou_std']:.3f}",
                    "val mIoU": f"{val['miou_mean']:.3f} ± {val['miou_std']:.3f}",
                    "test diff": f"{entry[diff]:+.3f}" if diff else "–",
                    "test p": f"{entry['p_value']:.2g}" if diff else "–",
                    "val diff": f"{val[diff]:+.3f}" if diff else "–",
                    "val p": f"{val['p_value']:.2g}" if diff else "–",
                }
            )
        lines += [_markdown(pd.DataFrame(table)), ""]
    return lines


def scarcest_budgets(results: pd.DataFrame) -> list[str]:
    """The scarcest budget of each kind: fewest parcels, fewest pixels (when run)."""
    budgets = budget_order(results)
    parcels = [b for b in budgets if b.startswith("k")]
    pixels = [b for b in budgets if not b.startswith("k") and b != "100pct"]
    return [group[0] for group in (parcels, pixels) if group]


def goals_section(results: pd.DataFrame, labels: dict[str, str]) -> list[str]:
    """The study's two goals, checked from the runs: the best network ≥ the Random Forest
    with all labels; a pretrained network ≥ random init + 0.05 mIoU at the scarcest
    budgets (in parcels and in pixels)."""
    lines = ["## Goals", ""]
    networks = [m for m in labels if m != "rf"]
    pretrained = [m for m in networks if m not in ("random", "unet")]
    for setting in dict.fromkeys(results["setting"]):
        subset = results[results["setting"] == setting]
        means = subset.groupby(["budget", "method"])["test_miou"].mean()
        for budget in ["100pct", *scarcest_budgets(subset)]:
            reference, target = ("rf", 0.0) if budget == "100pct" else ("random", 0.05)
            arms = networks if budget == "100pct" else pretrained
            # the best arm by its paired difference to the reference (same cells)
            diffs = {
                arm: paired_differences(subset, arm, reference).xs(budget, level="budget")
                for arm in arms
                if arm in set(subset[subset["budget"] == budget]["method"])
            }
            diffs = {arm: d for arm, d in diffs.items() if len(d)}
            if not diffs:
                continue
            best = max(diffs, key=lambda arm: diffs[arm].mean())
            stats = significance(diffs[best].to_numpy())
            short = target - stats["mean"]
            met = "met" if short <= 0 else f"missed by {short:.3f}"
            goal = "≥ RF" if reference == "rf" else "≥ random + 0.05"
            what = "network" if reference == "rf" else "pretrained"
            lines.append(
                f"- **{setting}, {budget_label(budget)}**: best {what} {labels[best]} "
                f"{means[budget][best]:.3f} vs {labels[reference]} "
                f"{means[budget][reference]:.3f} test mIoU (means over their runs); paired "
                f"difference {stats['mean']:+.3f} over {stats['n']} cells "
                f"({_verdict(stats)}) — goal {goal} **{met}**."
            )
    return [*lines, ""]


def _legend(fig: Figure, names: list[str], colours: list) -> None:
    handles = [
        Patch(facecolor=np.asarray(c) / 255, label=n) for n, c in zip(names, colours, strict=True)
    ]
    fig.legend(handles=handles, loc="lower center", ncol=8, fontsize=8, frameon=False)


def plot_maps(
    study: Path, setting: str, split, budget: str, labels: dict[str, str], path: Path
) -> str:
    """Ground truth (all labels, test labels) beside the predicted map of each method in
    ``labels``."""
    colours = [class_colours()[c] for c in split.scored]
    names = [CLASS_NAMES[c] for c in split.scored]
    tag = f"seed{split.seed}_{budget}"
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
    fig.suptitle(f"{setting}, split seed {split.seed}, label budget {budget_label(budget)}")
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
    levers = {name: lever for name, lever in cfg.levers.items() if lever.budgets != []}
    if not levers:  # none, or only the probes' pretext variants
        return []
    labels = cfg.labels()
    bases = {name: lever.base for name, lever in levers.items()}
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
        f"| {lever.label} | {labels[lever.base]} | {_changes(lever)} |" for lever in levers.values()
    ]
    for setting in cfg.settings:
        ran = results[(results["setting"] == setting) & results["method"].isin(levers)]
        if ran.empty:
            continue
        keep = {"random", *bases.values(), *ran["method"]}
        grid = set(zip(ran["split_seed"], ran["budget"], strict=True))
        cells = zip(results["split_seed"], results["budget"], strict=True)
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
            budget = budget_order(subset)[-1]
            shown = {m: labels[m] for m in _ordered(subset["method"], labels)}
            name = f"maps_{slug(setting)}_levers_{budget}.png"
            link = plot_maps(study, setting, split, budget, shown, figures / name)
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
    labels = {m: name for m, name in METHOD_LABELS.items() if m in set(results["method"])}
    # The grid and its extra cells, one fine-tuning seed per cell (the split seed); the
    # second fine-tuning seeds are shown apart, as the noise a difference must beat.
    ran = results[results["method"].isin(labels)]
    main = ran[ran["finetune_seed"] == ran["split_seed"]]
    steps = f"{cfg.finetune_steps} optimiser steps" if cfg.finetune_steps else (
        f"{cfg.finetune_epochs} epochs")  # fmt: skip
    lines = [
        "# Flevoland label-efficiency study: does SAR-W pretraining help?",
        "",
        f"Generated by `experiments/flevoland/report.py` from the study folder `{study}` "
        f"({len(results)} runs). Plan: split seeds {cfg.split_seeds}, label budgets "
        f"{[budget_label(b) for b in budget_order(results)]}, pretraining "
        f"{cfg.pretrain_epochs} epochs, fine-tuning {steps} (`configs/{cfg.finetune_recipe}`"
        f"{', the U-Net `configs/finetune_unet.yaml`' if 'unet' in labels else ''}). "
        "Cells not listed in a table were not run (see the plan in the study's config.yaml).",
        "",
        *goals_section(main, labels),
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
        "- Label budgets: `k` parcels per class (a parcel: a 4-connected region of one "
        "class in the training labels, drawn in a seeded order) or a uniform sample of "
        "the training pixels; nested within each kind (k1 ⊂ k3; 0.1 % ⊂ 1 % ⊂ 100 %), "
        "seeded by the split seed; every method trains on exactly these pixels "
        f"({_pixels_per_budget(results)}).",
        "- **Transductive**: pretraining uses the imagery of the whole scene (no labels), "
        "and fine-tuning patches may show val/test imagery as unlabelled context; labels "
        "never cross splits. This is the setting of mapping one scene from partial ground "
        "truth, not of transferring to unseen scenes.",
        "- Scores: the whole scene is predicted with the package's sliding-window predictor "
        f"(64-px tiles, {cfg.predict_overlap}-px overlap) and the test pixels are scored from "
        "one confusion matrix (`alos2fm.evaluation.metrics`); the model is the best "
        "checkpoint on the validation map, predicted exactly as the test map, every "
        "100 steps. mean ± std over split seeds; comparisons paired by cell; significance "
        "from a two-sided paired t-test and a 95 % bootstrap interval of the mean "
        "difference (10,000 resamples of the pairs).",
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
    pretrained = [m for m in labels if m not in ("random", "unet", "rf")]
    for setting in cfg.settings:
        subset = main[main["setting"] == setting]
        if subset.empty:
            continue
        pairs = [("unet", "rf"), ("random", "rf"), *((m, "random") for m in pretrained)]
        pairs += [(m, WEIGHTING_PAIRS[m]) for m in pretrained if m in WEIGHTING_PAIRS]
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
            "Significance of the key paired differences in test mIoU:",
            "",
            _markdown(significance_table(subset, labels, pairs)),
            "",
        ]
        spread = seed_spread_table(ran[ran["setting"] == setting], labels)
        if not spread.empty:
            lines += [
                "A second fine-tuning seed on the same labels (the noise of one run):",
                "",
                _markdown(spread),
                "",
            ]
        runs = _curves(study, setting)  # read once for the figure and the table
        curves = plot_validation_curves(
            runs, setting, labels, figures / f"validation_{slug(setting)}.png"
        )
        if curves:
            lines += [
                "Validation curves (did the step budget reach a plateau?):",
                "",
                f"![validation curves]({curves})",
                "",
                _markdown(plateau_table(runs, labels)),
                "",
            ]
        budgets = budget_order(subset)
        for budget in dict.fromkeys((budgets[0], budgets[-1])):
            lines += [
                f"Per-class test IoU at {budget_label(budget)} (mean over split seeds):",
                "",
                _markdown(per_class_table(subset, budget, labels)),
                "",
            ]
            name = f"maps_{slug(setting)}_{budget}.png"
            link = plot_maps(study, setting, first, budget, labels, figures / name)
            lines += [f"![predicted maps]({link})", ""]
    probes = probe_section(study, cfg)
    if probes:
        lines += ["## Frozen probes", "", *probes]
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
