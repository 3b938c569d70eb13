"""The runs of a comparison: one per (arm, budget, seed) and, for networks, per candidate
rate on the tuning seeds.

A job is a plain, picklable record, so that jobs run here, in local processes or on a
Dask cluster alike (``alos2fm.parallel``). Each job owns one folder under the comparison's
``runs/`` or ``tuning/``: ``result.json`` is written last and atomically, with the job's
identity (what it was computed from). A job whose ``result.json`` matches is reused; one
that does not is refused, naming the first difference; an interrupted network run is
resumed from its last checkpoint (the fine-tuning run folder checks its own identity).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from alos2fm.atomic import atomic_path

RESULT = "result.json"
# Seconds of each earlier attempt of a run that was stopped (SIGTERM, an error) and is
# resumed: its result counts them all. A process killed outright cannot say how long it ran.
ATTEMPTS = "attempts.json"
PREVIEW = "preview.npz"
Role = Literal["tuning", "scored"]


@dataclass(frozen=True)
class Job:
    arm: str
    kind: str
    budget: str
    seed: int
    role: Role
    data: Path
    folder: Path
    encoder: Path | None = None
    rate: float | None = None
    # The resolved fine-tuning config (networks) or the pixel classifier's settings.
    config: dict[str, Any] = field(default_factory=dict)
    min_parcel_pixels: int = 200
    preview: tuple[int, ...] = ()
    threads: int = 1

    def identity(self) -> dict[str, Any]:
        """What the result is computed from (never where it is written)."""
        from alos2fm.identity import content_digest, dataset_identity

        record = asdict(self)
        for key in ("folder", "data", "encoder", "threads", "preview"):
            record.pop(key)
        record["dataset"] = dataset_identity(self.data)
        record["encoder"] = content_digest(self.encoder) if self.encoder else "random"
        record["config"] = _without_execution(self.config)
        return json.loads(json.dumps(record, default=str))


def job_folder(out: Path, role: Role, arm: str, budget: str, seed: int, rate: float | None) -> Path:
    """Where a run lives: ``OUT/{runs,tuning}/ARM/BUDGET/seedS[_lrR]``. The rate is in the
    name, so that a rate chosen anew (after a wider sweep) is a new run beside the old one,
    not a finished run refused for its other settings."""
    from alos2fm.data.budget import LabelBudget

    name = f"seed{seed}" + (f"_lr{rate:g}" if rate is not None and rate == rate else "")
    area = "tuning" if role == "tuning" else "runs"
    return out / area / arm / LabelBudget.parse(budget).tag / name


def _without_execution(config: dict[str, Any]) -> dict[str, Any]:
    """The config less how it is executed (threads, devices: free to differ on resume)."""
    trainer = {
        k: v
        for k, v in config.get("trainer", {}).items()
        if k not in {"devices", "accelerator", "num_nodes", "strategy", "progress_bar", "threads"}
    }
    return config | ({"trainer": trainer} if "trainer" in config else {})


def run_job(job: Job) -> dict[str, Any]:
    """Run ``job`` (or reuse its finished result) and return its result row."""
    from alos2fm.identity import check_same

    result_path = job.folder / RESULT
    identity = job.identity()
    if result_path.is_file():
        stored = json.loads(result_path.read_text())
        check_same(stored.get("identity"), identity, f"the finished run {job.folder}", job.folder)
        return stored["row"]
    from alos2fm.threads import apply_threads

    apply_threads(job.threads)  # runs side by side: each takes its share of the cores
    job.folder.mkdir(parents=True, exist_ok=True)
    earlier = _earlier_attempts(job.folder)
    start = time.perf_counter()
    try:
        with _said_once():
            if job.kind in ("unet", "swin"):
                from alos2fm.compare.networks import train_network

                row = train_network(job)
            else:
                from alos2fm.compare.pixel_arms import train_pixel_classifier

                row = train_pixel_classifier(job)
    except BaseException:
        with atomic_path(job.folder / ATTEMPTS) as tmp:
            tmp.write_text(json.dumps([*earlier, round(time.perf_counter() - start, 1)]))
        raise
    row = {
        "arm": job.arm,
        "kind": job.kind,
        "budget": job.budget,
        "seed": job.seed,
        "role": job.role,
        "rate": job.rate,
        "encoder": job.encoder.parent.name if job.encoder else "",
        "seconds": round(sum(earlier) + time.perf_counter() - start, 1),
        "attempts": len(earlier) + 1,
    } | row
    with atomic_path(result_path) as tmp:
        tmp.write_text(json.dumps({"identity": identity, "row": row}, indent=2) + "\n")
    return row


def _earlier_attempts(folder: Path) -> list[float]:
    try:
        return [float(s) for s in json.loads((folder / ATTEMPTS).read_text())]
    except (OSError, ValueError, TypeError):
        return []


class _Once(logging.Filter):
    """Lets each distinct message through once: the same warning from every run of a
    comparison (a sampling that cannot act, a tiny budget) is said once, not 40 times."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


_ONCE = _Once()


@contextmanager
def _said_once() -> Iterator[None]:
    """While a comparison's run runs, what it would repeat is said once per process."""
    loggers = [
        logging.getLogger(name)
        for name in ("alos2fm.train.finetune", "alos2fm.train.data", "alos2fm.data.budget")
    ]
    for logger in loggers:
        logger.addFilter(_ONCE)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(_ONCE)


def save_preview(folder: Path, positions: tuple[int, ...], predictions: list[np.ndarray]) -> None:
    """The predicted classes of the report's preview patches (the same for every arm)."""
    if not positions:
        return
    with atomic_path(folder / PREVIEW) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(
            handle,
            positions=np.asarray(positions),
            predictions=np.stack(predictions).astype(np.uint8),
        )
