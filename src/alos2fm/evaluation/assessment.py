"""Accuracy and area of a class map, estimated from a reference sample.

The estimators are those of Olofsson, Foody, Herold, Stehman, Woodcock & Wulder (2014),
"Good practices for estimating area and assessing accuracy of land change", Remote
Sensing of Environment 148, 42-57 (section 4.2 and the worked example of section 5),
for stratified random sampling with the map classes as strata:

- ``W_i`` = mapped area proportion of map class i; ``n_ij`` = sample count, map class i,
  reference class j; ``n_i.`` = sample size of stratum i.
- Error matrix in estimated area proportions: ``p_ij = W_i n_ij / n_i.``.
- Overall accuracy ``O = sum_j p_jj``, ``V(O) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)``.
- User's accuracy ``U_i = p_ii / p_i.``, ``V(U_i) = U_i (1 - U_i) / (n_i. - 1)``.
- Producer's accuracy ``P_j = p_jj / p_.j`` with the variance of their eq. 7 (from
  Olofsson et al. 2013), written with ``W`` in place of pixel counts (the scale cancels).
- Area proportion ``p_.k = sum_i W_i n_ik / n_i.``, standard error
  ``sqrt(sum_i W_i^2 (n_ik / n_i.)(1 - n_ik / n_i.) / (n_i. - 1))``; area = ``p_.k``
  times the mapped area; 95 % confidence intervals are +-1.96 standard errors.

A stratum with one sample has no variance estimate (NaN, with a note); a mapped stratum
with no sample leaves every estimate it enters undefined (NaN, with a note). Nothing here
reads files: :func:`assess_counts` takes the count matrix and the mapped pixels, and
:func:`run_assess` (the ``alos2fm assess`` command) reads them through
:mod:`alos2fm.evaluation.reference` and writes ``assessment.json``, ``assessment.md`` and
``areas.png``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

Z95 = 1.96
CITATION = (
    "Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A. "
    "(2014). Good practices for estimating area and assessing accuracy of land change. "
    "Remote Sensing of Environment 148, 42-57. doi:10.1016/j.rse.2014.02.015"
)
ASSESS_FILES = ("assessment.json", "assessment.md", "areas.png")


@dataclass(frozen=True)
class Estimate:
    """An estimate and its standard error (NaN where undefined)."""

    value: float
    se: float

    @property
    def ci95(self) -> float:
        """Half-width of the 95 % confidence interval."""
        return Z95 * self.se

    def to_json(self) -> dict[str, float | None]:
        return {"estimate": _num(self.value), "se": _num(self.se), "ci95": _num(self.ci95)}


@dataclass(frozen=True)
class Assessment:
    """Stratified estimates of accuracy and area (see the module docstring)."""

    class_names: list[str]
    counts: np.ndarray  # (k, k) sample counts, rows = map class, columns = reference class
    mapped_pixels: np.ndarray  # (k,)
    pixel_area_m2: float
    proportions: np.ndarray  # (k, k) error matrix in estimated area proportions p_ij
    overall: Estimate
    users: list[Estimate]
    producers: list[Estimate]
    area_proportion: list[Estimate]
    area_ha: list[Estimate]
    notes: list[str] = field(default_factory=list)

    @property
    def sample_sizes(self) -> np.ndarray:
        return self.counts.sum(axis=1)

    @property
    def mapped_ha(self) -> np.ndarray:
        return self.mapped_pixels * self.pixel_area_m2 / 1e4

    def to_json(self) -> dict[str, Any]:
        weights = self.mapped_pixels / self.mapped_pixels.sum()
        return {
            "kind": "stratified estimates (map classes as strata, Olofsson et al. 2014)",
            "classes": self.class_names,
            "pixel_area_m2": self.pixel_area_m2,
            "mapped_area_ha": float(self.mapped_ha.sum()),
            "samples": int(self.counts.sum()),
            "overall_accuracy": self.overall.to_json(),
            "per_class": {
                name: {
                    "mapped_pixels": int(self.mapped_pixels[k]),
                    "mapped_area_ha": float(self.mapped_ha[k]),
                    "map_proportion": float(weights[k]),
                    "samples": int(self.sample_sizes[k]),
                    "users_accuracy": self.users[k].to_json(),
                    "producers_accuracy": self.producers[k].to_json(),
                    "area_proportion": self.area_proportion[k].to_json(),
                    "area_ha": self.area_ha[k].to_json(),
                }
                for k, name in enumerate(self.class_names)
            },
            "error_matrix_counts": self.counts.astype(int).tolist(),
            "error_matrix_area_proportions": [[_num(v) for v in row] for row in self.proportions],
            "matrix_layout": "rows = map class, columns = reference class",
            "notes": list(self.notes),
        }

    def summary_markdown(self) -> str:
        """A short table: mapped vs estimated area, user's and producer's accuracy."""
        lines = [
            f"Overall accuracy: {_pm(self.overall)}  ",
            f"Samples: {int(self.counts.sum())}; pixel area {self.pixel_area_m2:g} m²; "
            f"mapped area {_ha(self.mapped_ha.sum())} ha",
            "",
            "| class | samples | mapped (ha) | estimated (ha) ± 95 % CI | user's acc. | "
            "producer's acc. |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for k, name in enumerate(self.class_names):
            area = self.area_ha[k]
            lines.append(
                f"| {name} | {int(self.sample_sizes[k])} | {_ha(self.mapped_ha[k])} | "
                f"{_ha(area.value)} ± {_ha(area.ci95)} | "
                f"{_pm(self.users[k])} | {_pm(self.producers[k])} |"
            )
        if self.notes:
            lines += ["", *(f"- {note}" for note in self.notes)]
        return "\n".join(lines) + "\n"


def assess_counts(
    counts: np.ndarray,
    mapped_pixels: Sequence[float] | np.ndarray,
    pixel_area_m2: float,
    class_names: Sequence[str] | None = None,
) -> Assessment:
    """Stratified estimates from ``counts`` (k x k, rows = map class, columns = reference
    class) and the map's pixels per class; areas in hectares."""
    n = np.asarray(counts, dtype=np.float64)
    mapped = np.asarray(mapped_pixels, dtype=np.float64)
    k = len(mapped)
    if n.shape != (k, k):
        raise ValueError(f"counts {n.shape} do not match {k} mapped classes")
    if (n < 0).any() or (mapped < 0).any() or mapped.sum() <= 0:
        raise ValueError("counts and mapped pixels must be non-negative, some pixels mapped")
    names = list(class_names) if class_names is not None else [str(i) for i in range(k)]
    weights = mapped / mapped.sum()
    n_i = n.sum(axis=1)
    notes = _stratum_notes(names, weights, n_i)

    # q_ij = n_ij / n_i. (NaN for an unsampled stratum); strata of zero weight add nothing.
    q = np.full_like(n, np.nan)
    np.divide(n, n_i[:, None], out=q, where=n_i[:, None] > 0)
    q[weights == 0] = 0.0
    p = weights[:, None] * q
    # 1 / (n_i. - 1): infinite for a single sample, so that its variance terms are NaN.
    inv_dof = np.full(k, np.nan)
    np.divide(1.0, n_i - 1, out=inv_dof, where=n_i > 1)
    inv_dof[weights == 0] = 0.0

    row, col, diag = p.sum(axis=1), p.sum(axis=0), np.diag(p)
    users_acc = _ratio(diag, row)
    producers_acc = _ratio(diag, col)
    overall = float(diag.sum())
    overall_terms = np.where(weights > 0, weights**2 * users_acc * (1 - users_acc), 0.0)
    overall_var = float(np.sum(overall_terms * inv_dof))
    cell_var = weights[:, None] ** 2 * q * (1 - q) * inv_dof[:, None]  # per stratum and class
    area_se = np.sqrt(cell_var.sum(axis=0))
    users_se = np.sqrt(users_acc * (1 - users_acc) * inv_dof)
    producers_se = np.sqrt(_producers_variance(weights, q, users_acc, producers_acc, inv_dof))

    total_ha = mapped.sum() * pixel_area_m2 / 1e4
    return Assessment(
        class_names=names,
        counts=n.astype(np.int64),
        mapped_pixels=mapped,
        pixel_area_m2=float(pixel_area_m2),
        proportions=p,
        overall=Estimate(overall, math.sqrt(overall_var)),
        users=[Estimate(float(u), float(s)) for u, s in zip(users_acc, users_se, strict=True)],
        producers=[
            Estimate(float(v), float(s)) for v, s in zip(producers_acc, producers_se, strict=True)
        ],
        area_proportion=[Estimate(float(v), float(s)) for v, s in zip(col, area_se, strict=True)],
        area_ha=[
            Estimate(float(v * total_ha), float(s * total_ha))
            for v, s in zip(col, area_se, strict=True)
        ],
        notes=notes,
    )


def _producers_variance(
    weights: np.ndarray,
    q: np.ndarray,
    users_acc: np.ndarray,
    producers_acc: np.ndarray,
    inv_dof: np.ndarray,
) -> np.ndarray:
    """Olofsson et al. (2014) eq. 7, with ``W_i`` for ``N_i.`` (``N_.j`` becomes ``p_.j``):
    V(P_j) = [W_j^2 (1 - P_j)^2 U_j (1 - U_j) / (n_j. - 1)
              + P_j^2 sum_{i != j} W_i^2 q_ij (1 - q_ij) / (n_i. - 1)] / p_.j^2."""
    k = len(weights)
    col = (weights[:, None] * q).sum(axis=0)
    out = np.full(k, np.nan)
    for j in range(k):
        if not col[j] > 0:
            continue
        own = weights[j] ** 2 * (1 - producers_acc[j]) ** 2
        own = own * users_acc[j] * (1 - users_acc[j]) * inv_dof[j] if own > 0 else 0.0
        others = [
            weights[i] ** 2 * q[i, j] * (1 - q[i, j]) * inv_dof[i]
            for i in range(k)
            if i != j and weights[i] > 0
        ]
        out[j] = (own + producers_acc[j] ** 2 * sum(others)) / col[j] ** 2
    return out


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    out = np.full(numerator.shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator > 0)
    return out


def _stratum_notes(names: list[str], weights: np.ndarray, n_i: np.ndarray) -> list[str]:
    notes = []
    for k, name in enumerate(names):
        if weights[k] > 0 and n_i[k] == 0:
            notes.append(
                f"map class {name!r} has mapped area but no sample: the estimates it enters "
                "(overall accuracy, areas, producer's accuracies) are undefined; sample it"
            )
        elif weights[k] > 0 and n_i[k] == 1:
            notes.append(
                f"map class {name!r} has one sample: its variances cannot be estimated "
                "(NaN); sample at least 2, better 50 or more"
            )
        elif weights[k] == 0 and n_i[k] > 0:
            notes.append(
                f"{int(n_i[k])} samples fall in map class {name!r}, which has no mapped "
                "area: they carry no weight"
            )
    return notes


def _num(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


def _fmt(value: float, spec: str) -> str:
    return format(value, spec) if math.isfinite(value) else "n/a"


def _ha(value: float) -> str:
    return _fmt(value, ",.0f" if abs(value) >= 100 else ".2f")


def _pm(estimate: Estimate) -> str:
    return f"{_fmt(estimate.value, '.3f')} ± {_fmt(estimate.ci95, '.3f')}"


# --- the command: alos2fm assess -------------------------------------------------------------


@dataclass(frozen=True)
class AssessResult:
    """What ``run_assess`` computed and where it wrote it."""

    assessment: Assessment
    record: dict[str, Any]
    paths: list[Path]


def run_assess(
    map_path: str | Path,
    reference: str | Path,
    out: str | Path,
    *,
    label_field: str | None = None,
    classes: str | Path | None = None,
    overwrite: bool = False,
) -> AssessResult:
    """Assess ``map_path`` against ``reference`` (points, polygons or a class raster) and
    write ``assessment.json``, ``assessment.md`` and ``areas.png`` into the folder ``out``,
    claimed for ``assess`` first."""
    from alos2fm.atomic import atomic_path
    from alos2fm.evaluation.reference import count_reference, mapped_pixels, open_class_map
    from alos2fm.outputs import claim_folder

    map_path, reference, out = Path(map_path), Path(reference), Path(out)
    with claim_folder(
        out, "assess", outputs=ASSESS_FILES, inputs=[map_path, reference], overwrite=overwrite
    ):
        cmap = open_class_map(map_path, classes)
        mapped = mapped_pixels(cmap)
        ref = count_reference(cmap, reference, label_field, classes)
        assessment = assess_counts(ref.counts, mapped, cmap.pixel_area_m2, cmap.class_names)
        record: dict[str, Any] = {
            "map": str(map_path),
            "reference": str(reference),
            "label_field": label_field,
            "reference_kind": ref.kind,
            "sample_unit": ref.unit,
            "samples": ref.samples,
            "dropped": ref.dropped,
            "notes": ref.notes,
            "method": "stratified estimation with the map classes as strata: every figure "
            "under 'stratified_estimates' (accuracies, areas, their 95 % confidence intervals "
            "= 1.96 standard errors) is an estimate for the whole map",
            "citation": CITATION,
            "stratified_estimates": assessment.to_json(),
        }
        if ref.kind == "raster":
            record["pixel_counts"] = _pixel_count_metrics(ref.counts, cmap.class_names)
        paths = [out / name for name in ASSESS_FILES]
        with atomic_path(paths[0]) as tmp:
            tmp.write_text(json.dumps(record, indent=2) + "\n")
        with atomic_path(paths[1]) as tmp:
            tmp.write_text(_report_markdown(record, assessment))
        areas_figure(assessment, cmap.colors, paths[2])
    return AssessResult(assessment, record, paths)


def _pixel_count_metrics(counts: np.ndarray, names: list[str]) -> dict[str, Any]:
    """Plain pixel-count scores of a wall-to-wall reference (no weighting, no estimate)."""
    from alos2fm.evaluation.metrics import segmentation_scores

    scores = segmentation_scores(counts.T, names)  # metrics.py: rows = reference (truth)
    return {
        "kind": "pixel counts over the map pixels the reference raster covers (not "
        "estimates: no sampling weights, no confidence intervals)",
        "confusion_matrix": counts.T.astype(int).tolist(),
        "matrix_layout": "rows = reference class, columns = map class",
        **scores,
    }


def _report_markdown(record: dict[str, Any], assessment: Assessment) -> str:
    dropped = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in record["dropped"].items())
    lines = [
        f"# Accuracy and area of {Path(record['map']).name}",
        "",
        f"Reference: {Path(record['reference']).name} ({record['reference_kind']}, "
        f"{record['samples']} sample {record['sample_unit']}s; dropped: {dropped}).",
        "",
        "## Stratified estimates (map classes as strata; ± = 95 % confidence interval)",
        "",
        assessment.summary_markdown(),
    ]
    lines += [f"- {note}" for note in record["notes"]]
    if "pixel_counts" in record:
        pc = record["pixel_counts"]
        lines += [
            "## Pixel counts (the reference raster's pixels, not estimates)",
            "",
            f"Overall accuracy {_fmt(pc['overall_accuracy'] or math.nan, '.3f')}, "
            f"mIoU {_fmt(pc['miou'] or math.nan, '.3f')}, over {pc['pixels']} pixels.",
            "",
            "| class | IoU | reference pixels |",
            "|---|---:|---:|",
            *(
                f"| {name} | {_fmt(v['iou'] if v['iou'] is not None else math.nan, '.3f')} "
                f"| {v['pixels']} |"
                for name, v in pc["per_class"].items()
            ),
            "",
        ]
    lines += ["", f"Method: {CITATION}", ""]
    return "\n".join(lines)


def areas_figure(
    assessment: Assessment, colors: Sequence[tuple[int, int, int]], out_png: Path
) -> Path:
    """Mapped area (hatched) beside the estimated area with its 95 % interval, per class."""
    from matplotlib.figure import Figure

    from alos2fm.atomic import atomic_path

    k = len(assessment.class_names)
    x = np.arange(k)
    rgb = [tuple(c / 255 for c in color) for color in colors]
    estimated = np.array([a.value for a in assessment.area_ha])
    ci = np.nan_to_num(np.array([a.ci95 for a in assessment.area_ha]))
    fig = Figure(figsize=(max(5.0, 1.1 * k + 2), 4))
    ax = fig.subplots()
    ax.bar(
        x - 0.2,
        assessment.mapped_ha,
        0.4,
        color=rgb,
        alpha=0.45,
        hatch="//",
        edgecolor="black",
        label="mapped",
    )
    ax.bar(
        x + 0.2,
        np.nan_to_num(estimated),
        0.4,
        yerr=ci,
        capsize=4,
        color=rgb,
        edgecolor="black",
        label="estimated ± 95 % CI",
    )
    ax.set_xticks(x, assessment.class_names, rotation=30, ha="right")
    ax.set_ylabel("area (ha)")
    ax.set_title("Mapped and estimated area per class")
    ax.legend()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    return out_png


def run_sample(
    map_path: str | Path,
    out: str | Path,
    total: int,
    *,
    design: str = "stratified",
    allocation: str = "proportional",
    min_per_class: int = 50,
    seed: int = 0,
    classes: str | Path | None = None,
    overwrite: bool = False,
) -> tuple[Path, np.ndarray]:
    """Draw a stratified random sample of the map and write it to the GeoPackage ``out``
    (claimed first); returns the path and the samples per class."""
    from alos2fm.errors import DataError
    from alos2fm.evaluation.reference import draw_sample, open_class_map, write_sample
    from alos2fm.outputs import claim_files

    map_path, out = Path(map_path), Path(out)
    if design != "stratified":
        raise DataError(f"--design {design!r}", hint="only stratified is implemented")
    if out.suffix.lower() != ".gpkg":
        raise DataError("the sample is written as a GeoPackage", out, hint="name it *.gpkg")
    if total < 1:
        raise DataError(f"--sample {total}", hint="draw at least one sample")
    cmap = open_class_map(map_path, classes)
    claim_files([out], "assess", inputs=[map_path], overwrite=overwrite)
    sample = draw_sample(cmap, total, min_per_class, allocation, seed)
    write_sample(cmap, sample, out)
    return out, sample.allocation
