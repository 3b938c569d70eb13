"""``report.md``: the comparison's answer first (the goals' verdicts), then the evidence.

Sections: goals, scores per arm and budget, paired differences (Holm-adjusted), the
rates chosen on the tuning seeds, convergence of the step budget, per-class IoU, and the
figures (test mIoU against the label budget, predicted maps of the same test patches for
every arm). Every number comes from ``results.csv`` / ``tuning.csv`` in the same folder.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from alos2fm import __version__
from alos2fm.atomic import atomic_path
from alos2fm.compare.analysis import (
    comparison_table,
    convergence_table,
    goal_table,
    score_table,
)
from alos2fm.compare.jobs import PREVIEW, job_folder
from alos2fm.compare.plan import NETWORKS, Arm, ComparePlan
from alos2fm.data.budget import LabelBudget

REPORT = "report.md"


def write_report(
    plan: ComparePlan,
    results: pd.DataFrame,
    tuning: pd.DataFrame,
    rates: pd.DataFrame,
    out: Path,
) -> Path:
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    lines = [
        "# Which model for these labels?",
        "",
        f"alos2fm {__version__} `compare`: {len(plan.arms)} arms, budgets "
        f"{', '.join(plan.budgets)}, {len(plan.seeds)} scored seeds "
        f"({_seeds(plan.seeds)}), tuning seeds {_seeds(plan.tuning_seeds)} (never scored), "
        f"{'step budget ' + str(plan.steps) if plan.steps else 'each preset’s step budget'}. "
        f"Data: `{plan.data}`. Scores: test mIoU on every labelled test pixel.",
        "",
        _arms_table(plan),
        "",
    ]
    goals = goal_table(results, plan)
    if len(goals):
        lines += [
            "## Goals",
            "",
            "A goal “A ≥ B + δ” **holds** when the one-sided 95 % lower bound of the paired "
            "difference is at least δ, is **excluded** when the one-sided 95 % upper bound "
            "is below δ, and is **inconclusive** otherwise. “No practical difference”: the "
            "95 % interval lies within ± the margin.",
            "",
            _markdown(
                goals.assign(difference=[_diff(r) for r in goals.itertuples()])[
                    ["goal", "claim", "budget", "n", "difference", "judged_on", "verdict"]
                ].rename(columns={"n": "pairs", "judged_on": "95 % bounds"})
            ),
            "",
        ]
    scores = score_table(results, plan)
    lines += [
        "## Test mIoU per arm and budget",
        "",
        "Mean ± standard deviation over seeds (seeds in brackets).",
        "",
        _markdown(_pivot(scores)),
        "",
        f"![test mIoU against the label budget](figures/{plot_budgets(results, plan, figures)})",
        "",
    ]
    lines += _labels_section(results, plan)
    comparisons = comparison_table(results, plan)
    lines += [
        "## Paired differences",
        "",
        "A − B on the same seeds; two-sided 95 % t interval; paired t-test p, and p "
        f"Holm-adjusted over the {comparisons['p'].notna().sum()} comparisons with a p.",
        "",
        _markdown(
            pd.DataFrame(
                {
                    "A − B": [f"{r.a} − {r.b}" for r in comparisons.itertuples()],
                    "budget": comparisons["budget"],
                    "pairs": comparisons["n"],
                    "difference": [_diff(r) for r in comparisons.itertuples()],
                    "95 % interval": [
                        f"[{r.low:+.3f}, {r.high:+.3f}]" for r in comparisons.itertuples()
                    ],
                    "p": comparisons["p"].map(_p),
                    "p (Holm)": comparisons["p_holm"].map(_p),
                }
            )
        ),
        "",
    ]
    lines += _tuning_section(plan, rates)
    convergence = convergence_table(pd.concat([results, tuning], ignore_index=True), plan)
    if len(convergence):
        rising = int(convergence["still_rising"].sum())
        lines += [
            "## Did the step budget converge?",
            "",
            "Validation mIoU the last 30 % of the steps added to the best before them "
            f"(tolerance {plan.plateau_tolerance:g}). "
            + (
                f"**{rising} runs were still rising**: their arm may be short-changed by "
                "the budget; give more steps (`steps`) before reading a difference."
                if rising
                else "Every run reached a plateau."
            ),
            "",
            _markdown(convergence.round(4)),
            "",
            *[
                f"![validation curves at {b}](figures/{name})"
                for b, name in plot_curves(plan, results, out, figures)
            ],
            "",
        ]
    lines += _per_class_section(results, plan)
    previews = plot_previews(plan, results, out, figures)
    if previews:
        lines += ["## Maps of the same test patches", ""]
        lines += [f"![{caption}](figures/{name})" for name, caption in previews]
        lines += [""]
    runs = pd.concat([results, tuning], ignore_index=True)
    # Results of older versions have no attempts: one each.
    runs["resumed"] = runs.get("attempts", pd.Series(1, index=runs.index)).fillna(1) > 1
    lines += [
        "## Time",
        "",
        "Seconds of every attempt of a run (a run stopped and resumed counts each; a "
        "process killed outright cannot say how long it ran).",
        "",
        _markdown(
            runs.groupby(["arm", "role"])
            .agg(
                runs=("seconds", "count"),
                minutes_each=("seconds", lambda s: round(s.mean() / 60, 2)),
                resumed=("resumed", "sum"),
            )
            .reset_index()
        ),
        "",
    ]
    path = out / REPORT
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def _arms_table(plan: ComparePlan) -> str:
    rows = []
    for name, arm in plan.arms.items():
        preset = plan.preset_of(arm) if arm.kind in NETWORKS else ""
        encoders = ", ".join(f"`{Path(e).parent.name}`" for e in arm.encoder) or "random init"
        if arm.kind in NETWORKS and (weights := _merlin_weights(plan, arm)) != "none":
            encoders = f"MERLIN `{Path(weights).name}`"
        if arm.kind == "rf":
            encoders = "local statistics"
        rows.append({"arm": name, "kind": arm.kind, "preset": preset, "initialisation": encoders})
    return _markdown(pd.DataFrame(rows))


def _merlin_weights(plan: ComparePlan, arm: Arm) -> str:
    """The MERLIN weights a network arm starts from ("none": random init or not MERLIN)."""
    from alos2fm.compare.run import arm_defaults

    return arm_defaults(plan, arm).merlin_weights


def _labels_section(results: pd.DataFrame, plan: ComparePlan) -> list[str]:
    """Labelled training pixels (and parcels) each budget left, per seed: the same for
    every arm of a seed, so one arm's record is read."""
    if "labelled_pixels" not in results or results["labelled_pixels"].isna().all():
        return []
    rows = []
    for budget in plan.budgets:
        cell = results[results["budget"] == budget].dropna(subset=["labelled_pixels"])
        per_seed = cell.groupby("seed").first()
        if per_seed.empty:
            continue
        pixels = per_seed["labelled_pixels"]
        row = {
            "budget": budget,
            "seeds": len(per_seed),
            "labelled px, mean over seeds": round(pixels.mean()),
            "min – max": f"{int(pixels.min())} – {int(pixels.max())}",
        }
        if per_seed["parcels"].notna().any():
            row["parcels, mean"] = round(per_seed["parcels"].mean(), 1)
        rows.append(row)
    if not rows:
        return []
    return [
        "Labelled training pixels each budget kept (per seed, the same for every arm):",
        "",
        _markdown(pd.DataFrame(rows)),
        "",
    ]


def _tuning_section(plan: ComparePlan, rates: pd.DataFrame) -> list[str]:
    if rates.empty:
        return []
    table = rates.assign(
        val_miou=rates["val_miou"].map(lambda v: "–" if pd.isna(v) else f"{v:.3f}"),
        chosen=rates["chosen"].map(lambda c: "**chosen**" if c else ""),
    )
    edges = []
    for (arm, budget), group in rates.groupby(["arm", "budget"], sort=False):
        chosen = group[group["chosen"]]["rate"]
        if (
            len(group) > 1
            and len(chosen)
            and chosen.iloc[0] in (group["rate"].min(), group["rate"].max())
        ):
            edges.append(f"{arm} at {budget}")
    warning = (
        [
            f"**The chosen rate is at the edge of the candidates for {', '.join(edges)}**: "
            "the best may lie beyond; widen `--rates` before reading a difference.",
            "",
        ]
        if edges
        else []
    )
    return [
        "## Learning rates (chosen on the tuning seeds)",
        "",
        "Each network arm's base rate, per budget: mean best validation mIoU over the "
        "tuning seeds; an arm given a single rate was not tuned.",
        "",
        *warning,
        _markdown(table.rename(columns={"val_miou": "mean val mIoU"})),
        "",
    ]


def _per_class_section(results: pd.DataFrame, plan: ComparePlan) -> list[str]:
    columns = [c for c in results.columns if c.startswith("iou[")]
    if not columns:
        return []
    lines = ["## IoU per class (mean over seeds)", ""]
    for budget in plan.budgets:
        cell = results[results["budget"] == budget]
        table = cell.groupby("arm", sort=False)[columns].mean().round(3)
        table.columns = [c[4:-1] for c in columns]
        lines += [f"Budget {budget}:", "", _markdown(table.reset_index()), ""]
    return lines


def plot_budgets(results: pd.DataFrame, plan: ComparePlan, figures: Path) -> str:
    """Test mIoU against the budget: each seed a dot, the mean ± std a bar; lines only
    between budgets where an arm has two seeds or more."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1.6 + 1.2 * len(plan.budgets), 4))
    x = np.arange(len(plan.budgets))
    width = 0.8 / len(plan.arms)
    for k, arm in enumerate(plan.arms):
        offset = x - 0.4 + width * (k + 0.5)
        means, stds, many = [], [], []
        for i, budget in enumerate(plan.budgets):
            cell = results[(results["arm"] == arm) & (results["budget"] == budget)]["test_miou"]
            ax.scatter(np.full(len(cell), offset[i]), cell, s=10, alpha=0.5, color=f"C{k}")
            means.append(cell.mean())
            stds.append(cell.std(ddof=1) if len(cell) > 1 else 0.0)
            many.append(len(cell) > 1)
        ax.errorbar(offset, means, yerr=stds, fmt="o", color=f"C{k}", capsize=3, label=arm)
        if all(many) and len(plan.budgets) > 1:
            ax.plot(offset, means, color=f"C{k}", alpha=0.6)
    ax.set_xticks(x, plan.budgets)
    ax.set_xlabel("label budget")
    ax.set_ylabel("test mIoU")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    name = "budgets.png"
    with atomic_path(figures / name) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return name


def plot_curves(
    plan: ComparePlan, results: pd.DataFrame, out: Path, figures: Path
) -> list[tuple[str, str]]:
    """Per budget: every scored network run's validation mIoU against the step, one colour
    per arm (a curve still rising at the end: the budget was short)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from alos2fm.compare.networks import RUN, validation_curve

    made = []
    for budget in plan.budgets:
        tag = LabelBudget.parse(budget).tag
        fig, ax = plt.subplots(figsize=(6, 3.5))
        drawn = False
        for k, (name, arm) in enumerate(plan.arms.items()):
            if arm.kind not in NETWORKS:
                continue
            mine = results[(results["arm"] == name) & (results["budget"] == budget)]
            for i, row in enumerate(mine.itertuples()):
                run = job_folder(out, "scored", name, budget, row.seed, row.rate) / RUN
                if not (run / "logs" / "metrics.csv").is_file():
                    continue
                steps, val = validation_curve(run)
                ax.plot(steps, val, color=f"C{k}", alpha=0.6, label=name if i == 0 else None)
                drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("optimiser step")
        ax.set_ylabel("validation mIoU")
        ax.set_title(f"budget {budget}: every scored run", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        name = f"curves_{tag}.png"
        with atomic_path(figures / name) as tmp:
            fig.savefig(tmp, dpi=120, format="png")
        plt.close(fig)
        made.append((budget, name))
    return made


def plot_previews(
    plan: ComparePlan, results: pd.DataFrame, out: Path, figures: Path
) -> list[tuple[str, str]]:
    """Per budget: the preview test patches (first band in dB, reference) and every arm's
    prediction on the first seed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    from alos2fm.data.store import open_patch_arrays, read_stats

    data = plan.dataset(plan.seeds[0])
    stats = read_stats(data)
    k = int(stats["num_classes"])
    colours = stats.get("class_colours") or [plt.get_cmap("tab20")(i % 20)[:3] for i in range(k)]
    colours = [np.asarray(c, float) / (255 if max(c) > 1 else 1) for c in colours]
    cmap = ListedColormap([*colours, (1.0, 1.0, 1.0)])  # the last: ignored pixels, white
    arrays = open_patch_arrays(data)
    made = []
    for budget in plan.budgets:
        tag = LabelBudget.parse(budget).tag
        found = {}
        first = results[(results["budget"] == budget) & (results["seed"] == plan.seeds[0])]
        for row in first.itertuples():
            path = job_folder(out, "scored", row.arm, budget, row.seed, row.rate) / PREVIEW
            if path.is_file():
                found[row.arm] = np.load(path)
        if not found:
            continue
        positions = next(iter(found.values()))["positions"]
        columns = 2 + len(found)
        fig, axes = plt.subplots(
            len(positions), columns, figsize=(2.2 * columns, 2.2 * len(positions)), squeeze=False
        )
        for row, position in enumerate(positions):
            image = np.asarray(arrays.images[int(position)], dtype=np.float32)[0]
            label = np.asarray(arrays.labels[int(position)]).astype(int)
            label = np.where(label >= k, k, label)
            shown = axes[row, 0].imshow(image, cmap="gray")
            fig.colorbar(shown, ax=axes[row, 0], fraction=0.046, label="dB")
            axes[row, 1].imshow(label, cmap=cmap, vmin=0, vmax=k, interpolation="nearest")
            for col, (arm, preview) in enumerate(found.items(), start=2):
                axes[row, col].imshow(
                    preview["predictions"][row], cmap=cmap, vmin=0, vmax=k, interpolation="nearest"
                )
                axes[0, col].set_title(arm, fontsize=9)
        names = stats.get("class_names") or [f"class {i}" for i in range(k)]
        fig.legend(
            handles=[Patch(color=colours[i], label=names[i]) for i in range(k)]
            + [Patch(facecolor="white", edgecolor="grey", label="no label")],
            loc="lower center",
            ncol=min(k + 1, 8),
            fontsize=8,
            frameon=False,
        )
        axes[0, 0].set_title(f"{stats['bands'][0]} (dB)", fontsize=9)
        axes[0, 1].set_title("reference", fontsize=9)
        for ax in axes.flat:
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout(rect=(0, 0.06, 1, 1))  # room for the class legend
        name = f"maps_{tag}.png"
        with atomic_path(figures / name) as tmp:
            fig.savefig(tmp, dpi=110, format="png")
        plt.close(fig)
        made.append((name, f"test patches at budget {budget}, seed {plan.seeds[0]}"))
    return made


def _pivot(scores: pd.DataFrame) -> pd.DataFrame:
    cells = scores.assign(
        cell=[
            "–"
            if r.seeds == 0
            else f"{r.miou_mean:.3f} ± {r.miou_std:.3f} ({r.seeds})"
            if r.seeds > 1
            else f"{r.miou_mean:.3f} (1)"
            for r in scores.itertuples()
        ]
    )
    table = cells.pivot(index="arm", columns="budget", values="cell")
    return table.reindex(
        index=scores["arm"].unique(), columns=scores["budget"].unique()
    ).reset_index()


def _diff(row) -> str:
    return "–" if not np.isfinite(row.mean) else f"{row.mean:+.3f}"


def _p(value: float) -> str:
    return "–" if not np.isfinite(value) else f"{value:.3g}"


def _seeds(seeds: list[int]) -> str:
    return ", ".join(str(s) for s in seeds)


def _markdown(table: pd.DataFrame) -> str:
    if table.empty:
        return "(none)"
    header = "| " + " | ".join(str(c) for c in table.columns) + " |"
    rule = "|" + "---|" * len(table.columns)
    body = [
        "| " + " | ".join(_cell(v) for v in row) + " |" for row in table.itertuples(index=False)
    ]
    return "\n".join([header, rule, *body])


def _cell(value) -> str:
    if isinstance(value, float):
        return "–" if not np.isfinite(value) else f"{value:.4g}"
    return str(value).replace("|", "\\|")  # a pipe would end the table's cell
