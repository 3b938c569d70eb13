"""``alos2fm compare``: every arm on the same labels, the same budget, the same seeds.

1. Check the plan against the data before anything runs: datasets, bands, encoders, and
   the window sampling (a sampling that cannot act is said now, as ``finetune`` says it).
2. Tuning: each network arm fine-tunes with each candidate rate on the tuning seeds;
   the rate with the best mean validation mIoU is its rate at that budget. Tuning seeds
   are never scored.
3. Scoring: every arm, budget and seed, budget by budget and seed by seed, so that an
   interrupted comparison holds complete, paired cells.
4. ``results.csv`` (scored runs), ``tuning.csv``, ``rates.csv``, ``goals.csv`` (each goal's
   verdict) and ``report.md`` with its figures.

Runs are independent processes (``workers``) on this machine, or tasks on a Dask cluster;
each process computes with its share of the cores.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from alos2fm.atomic import atomic_path
from alos2fm.compare.jobs import Job, job_folder, run_job
from alos2fm.compare.plan import NETWORKS, Arm, ComparePlan, default_rates, plan_record
from alos2fm.errors import DataError
from alos2fm.train.config import ConfigError

log = logging.getLogger(__name__)

OUTPUTS = (
    "plan.yaml",
    "results.csv",
    "tuning.csv",
    "rates.csv",
    "goals.csv",
    "report.md",
    "figures",
    "runs",
    "tuning",
)


@dataclass(frozen=True)
class CompareResult:
    results: pd.DataFrame
    tuning: pd.DataFrame
    report: Path


def run_compare(
    plan: ComparePlan,
    out: Path,
    dask_scheduler: str | None = None,
    on_result: Callable[[dict[str, Any], int, int], None] | None = None,
) -> CompareResult:
    """Run (or resume) the comparison ``plan`` into ``out``."""
    from alos2fm.compare.analysis import goal_table
    from alos2fm.compare.report import write_report
    from alos2fm.outputs import claim_folder

    datasets = {seed: plan.dataset(seed) for seed in [*plan.seeds, *plan.tuning_seeds]}
    check_inputs(plan, datasets)
    encoders = [path for arm in plan.arms.values() for path in arm.encoder]
    with claim_folder(
        out,
        "compare",
        outputs=OUTPUTS,
        inputs=[*datasets.values(), *encoders],
        rerun="replace",  # its runs are reused or refused one by one, by identity
    ) as folder:
        _write_yaml(folder.path("plan.yaml"), plan_record(plan))
        threads = _threads_per_run(plan.workers)
        tuning_jobs = tuning_plan(plan, folder.root, threads)
        tuning = _run_all(plan, tuning_jobs, plan.workers, dask_scheduler, on_result)
        _write_csv(folder.path("tuning.csv"), tuning)
        rates = choose_rates(plan, tuning)
        _write_csv(folder.path("rates.csv"), rates)
        scored_jobs = scoring_plan(plan, folder.root, rates, threads)
        results = _run_all(plan, scored_jobs, plan.workers, dask_scheduler, on_result)
        _write_csv(folder.path("results.csv"), results)
        _write_csv(folder.path("goals.csv"), goal_table(results, plan))
        report = write_report(plan, results, tuning, rates, out)
        return CompareResult(results, tuning, report)


def check_inputs(plan: ComparePlan, datasets: dict[int, Path]) -> None:
    """Refuse a plan the data cannot serve, before any folder is made."""
    from alos2fm.data.store import open_patch_arrays, read_stats
    from alos2fm.train.augment import sampling_cannot_act

    for seed, path in datasets.items():
        stats = read_stats(path)  # a clear DataError for a missing or unfinished dataset
        if not stats.get("num_classes"):
            raise DataError(f"the dataset of seed {seed} has no labels to compare on", path)
    for name, arm in plan.arms.items():
        for encoder in arm.encoder:
            if not Path(encoder).is_file():
                raise ConfigError(f"arm {name}: encoder not found", encoder)
    first = datasets[plan.seeds[0]]
    patch = int(open_patch_arrays(first).images.shape[-1])
    for name, arm in plan.arms.items():
        if arm.kind in NETWORKS:
            cfg = network_config(plan, arm, first, plan.budgets[0], plan.seeds[0], None)
            note = sampling_cannot_act(cfg.data.sampling, patch, cfg.model.img_size)
            if note is not None:
                log.warning("arm %s: %s", name, note)


def network_config(
    plan: ComparePlan, arm: Arm, data: Path, budget: str, seed: int, rate: float | None
) -> Any:
    """The fine-tuning config of one network run: the arm's preset, the plan's and the
    arm's overrides, then what the comparison fixes (bands, steps, budget, seed, rate)."""
    from alos2fm.data.store import read_stats
    from alos2fm.train.config import resolve_config

    preset = plan.preset_of(arm)
    fixed: dict[str, Any] = {
        "model.in_chans": len(read_stats(data)["bands"]),
        "data.label_budget": budget,
        "data.min_parcel_pixels": plan.min_parcel_pixels,
        "seed": seed,
        "trainer.progress_bar": False,
    }
    if plan.steps is not None:
        # Ten validations per run, whatever the preset says: every arm's curve has the
        # same points, and the plateau check has a last 30 % to look at.
        fixed["schedule.max_steps"] = plan.steps
        fixed["trainer.val_every_n_steps"] = max(1, plan.steps // 10)
    if rate is not None:
        fixed["optim.base_lr"] = rate
    if arm.encoder:  # each encoder is fed as it was pretrained (its own statistics)
        fixed["data.normalisation"] = "encoder"
    overrides = {**plan.set, **arm.set, **fixed}
    return resolve_config("finetune", preset, [f"{k}={_text(v)}" for k, v in overrides.items()])


def _text(value: Any) -> str:
    return (
        "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
    )


def _job(
    plan: ComparePlan,
    name: str,
    budget: str,
    seed: int,
    index: int,
    role: str,
    folder: Path,
    rate: float | None,
    threads: int,
) -> Job:
    arm = plan.arms[name]
    data = plan.dataset(seed)
    encoder = arm.encoder_for(index)
    if arm.kind in NETWORKS:
        config = network_config(plan, arm, data, budget, seed, rate).model_dump(mode="json")
        config["trainer"]["threads"] = threads  # its share of the cores, not all of them
    elif arm.kind == "rf":
        config = {"train_pixels": plan.rf_train_pixels}
    else:
        config = {
            "train_pixels": plan.probe_train_pixels,
            "architecture": _probe_architecture(plan, data),
        }
    return Job(
        arm=name,
        kind=arm.kind,
        budget=budget,
        seed=seed,
        role=role,  # type: ignore[arg-type]
        data=data,
        folder=folder,
        encoder=encoder,
        rate=rate,
        config=config,
        min_parcel_pixels=plan.min_parcel_pixels,
        threads=threads,
    )


def _probe_architecture(plan: ComparePlan, data: Path) -> dict[str, Any]:
    """A random probe's encoder: the Swin of ``swin_preset``, taking the dataset's bands."""
    from alos2fm.data.store import read_stats
    from alos2fm.train.config import resolve_config

    bands = len(read_stats(data)["bands"])
    return resolve_config(
        "finetune", plan.swin_preset, [f"model.in_chans={bands}"]
    ).model.encoder_kwargs()


def tuning_plan(plan: ComparePlan, out: Path, threads: int) -> list[Job]:
    """A run per network arm, budget, tuning seed and candidate rate (an arm given one
    rate has nothing to tune)."""
    jobs = []
    for name, arm in plan.arms.items():
        if arm.kind not in NETWORKS:
            continue
        rates = default_rates(arm, _preset_rate(plan, arm))
        if len(rates) < 2:
            continue
        for budget in plan.budgets:
            for index, seed in enumerate(plan.tuning_seeds):
                for rate in rates:
                    folder = job_folder(out, "tuning", name, budget, seed, rate)
                    jobs.append(
                        _job(plan, name, budget, seed, index, "tuning", folder, rate, threads)
                    )
    return jobs


def arm_defaults(plan: ComparePlan, arm: Arm) -> Any:
    """A network arm's preset with the plan's and the arm's overrides: its settings before
    what each run fixes (bands, budget, seed, rate)."""
    from alos2fm.train.config import resolve_config

    overrides = {**plan.set, **arm.set}
    return resolve_config(
        "finetune", plan.preset_of(arm), [f"{k}={_text(v)}" for k, v in overrides.items()]
    )


def _preset_rate(plan: ComparePlan, arm: Arm) -> float:
    return float(arm_defaults(plan, arm).optim.base_lr)


def choose_rates(plan: ComparePlan, tuning: pd.DataFrame) -> pd.DataFrame:
    """Per network arm and budget: each candidate's mean validation mIoU over the tuning
    seeds, and the one chosen (``chosen``)."""
    rows = []
    for name, arm in plan.arms.items():
        if arm.kind not in NETWORKS:
            continue
        candidates = default_rates(arm, _preset_rate(plan, arm))
        for budget in plan.budgets:
            if len(candidates) < 2:
                rows.append(
                    {
                        "arm": name,
                        "budget": budget,
                        "rate": candidates[0],
                        "val_miou": np.nan,
                        "seeds": 0,
                        "chosen": True,
                    }
                )
                continue
            mine = tuning[(tuning["arm"] == name) & (tuning["budget"] == budget)]
            means = mine.groupby("rate")["val_miou"].agg(["mean", "count"])
            best = means["mean"].idxmax() if means["mean"].notna().any() else candidates[1]
            for rate in candidates:
                mean, count = means.loc[rate] if rate in means.index else (np.nan, 0)
                rows.append(
                    {
                        "arm": name,
                        "budget": budget,
                        "rate": rate,
                        "val_miou": mean,
                        "seeds": int(count),
                        "chosen": bool(np.isclose(rate, best)),
                    }
                )
    return pd.DataFrame(rows, columns=["arm", "budget", "rate", "val_miou", "seeds", "chosen"])


def scoring_plan(plan: ComparePlan, out: Path, rates: pd.DataFrame, threads: int) -> list[Job]:
    """Every arm at every budget and seed, cell by cell; the first seed's runs also save
    the report's preview patches."""
    chosen = {(r.arm, r.budget): r.rate for r in rates[rates["chosen"]].itertuples()}
    preview = preview_positions(plan.dataset(plan.seeds[0]))
    jobs = []
    for budget in plan.budgets:
        for index, seed in enumerate(plan.seeds):
            for name in plan.arms:
                rate = chosen.get((name, budget))
                folder = job_folder(out, "scored", name, budget, seed, rate)
                job = _job(plan, name, budget, seed, index, "scored", folder, rate, threads)
                jobs.append(replace(job, preview=preview) if index == 0 else job)
    return jobs


def preview_positions(data: Path, count: int = 3) -> tuple[int, ...]:
    """The test patches the report shows: those holding most classes (then most labels)."""
    from alos2fm.data.classes import IGNORE_INDEX
    from alos2fm.data.store import open_patch_arrays, read_index

    index = read_index(data)
    labels = open_patch_arrays(data).labels
    scored = []
    for position in np.flatnonzero(index["split"].to_numpy() == "test"):
        label = np.asarray(labels[int(position)])
        present = np.unique(label[label != IGNORE_INDEX])
        scored.append((-len(present), -int((label != IGNORE_INDEX).sum()), int(position)))
    return tuple(position for _, _, position in sorted(scored)[:count])


def _run_all(
    plan: ComparePlan,
    jobs: list[Job],
    workers: int,
    dask_scheduler: str | None,
    on_result: Callable[[dict[str, Any], int, int], None] | None,
) -> pd.DataFrame:
    from alos2fm.parallel import execute

    rows = []
    for done, row in enumerate(execute(run_job, jobs, workers, dask_scheduler), start=1):
        rows.append(row)
        if on_result is not None:
            on_result(row, done, len(jobs))
    return _ordered(pd.DataFrame(rows), plan)


def _ordered(table: pd.DataFrame, plan: ComparePlan) -> pd.DataFrame:
    """Rows in the plan's order: budget, seed, arm, rate."""
    if table.empty:
        return table
    rank = {
        "budget": {b: i for i, b in enumerate(plan.budgets)},
        "arm": {a: i for i, a in enumerate(plan.arms)},
    }
    return table.sort_values(
        ["budget", "seed", "arm", "rate"],
        key=lambda column: column.map(rank[column.name]) if column.name in rank else column,
        na_position="first",
    ).reset_index(drop=True)


def _threads_per_run(workers: int) -> int:
    """Each run's share of this machine's cores (``alos2fm.threads``: OMP_NUM_THREADS wins)."""
    from alos2fm.threads import resolve_threads

    return resolve_threads("auto", processes=workers)


def _write_csv(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False)


def _write_yaml(path: Path, record: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(record, sort_keys=False))
