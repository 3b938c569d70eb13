"""A comparison plan: which arms, label budgets and seeds, and what the user wants to know.

A plan is a YAML file (``alos2fm compare --plan plan.yaml``) or the same fields from the
command line. It is validated before anything runs, so that a typo in an arm, a budget or
a goal fails in a second, not hours into a grid. Every arm is named; comparisons and
goals refer to arms by name.

Arms (``kind``):
- ``rf``: a Random Forest on multi-scale local statistics of the dB image;
- ``unet``: a CNN with a U-Net decoder (the ``unet_preset``, or the arm's own ``preset``:
  e.g. MERLIN's U-Net at random init or from its released SAR weights);
- ``swin``: the Swin + UPerNet of ``swin_preset``, from random init, or from ``encoder``
  (one ``encoder.safetensors``, or several, assigned round robin to the seeds: one
  pretraining run per seed rather than one encoder for all);
- ``probe``: a per-pixel linear classifier on the frozen features of ``encoder`` (or of
  a random Swin of ``swin_preset`` when no encoder is given).

Seeds: every scored seed draws its own label budget (nested over budgets) and trains with
that seed; ``tuning_seeds`` draw their own budgets, choose each network arm's learning
rate on validation, and are never scored. ``data`` may hold ``{seed}``: one dataset per
seed (one split per seed, as the Flevoland study prepares them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from alos2fm.data.budget import LabelBudget
from alos2fm.train.config import ConfigError, read_preset

ArmKind = Literal["rf", "unet", "swin", "probe"]
NETWORKS = ("unet", "swin")
# Candidate rates around a preset's own, when an arm names none: a factor of 3 apart.
RATE_FACTORS = (1 / 3, 1.0, 3.0)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Arm(_Frozen):
    """One way of building a land-cover model from the labels."""

    kind: ArmKind
    encoder: list[Path] = []
    rates: list[float] = Field(default=[], description="candidate base LRs (networks)")
    set: dict[str, str | int | float | bool | None] = Field(
        default={}, description="finetune config overrides for this arm only"
    )
    preset: str | None = Field(
        default=None, description="this network arm's finetune preset (default: the plan's)"
    )

    @model_validator(mode="after")
    def _fits_kind(self) -> Arm:
        if self.encoder and self.kind not in ("swin", "probe"):
            raise ValueError(f"a {self.kind} arm takes no encoder")
        if self.preset is not None:
            if self.kind not in NETWORKS:
                raise ValueError(f"a {self.kind} arm has no fine-tuning preset")
            try:  # a name of a shipped preset or a YAML file: refused now, not mid-grid
                read_preset(self.preset)
            except ConfigError as err:
                raise ValueError(f"preset {self.preset!r}: {err.problem}") from None
        if self.rates and self.kind not in NETWORKS:
            raise ValueError(f"a {self.kind} arm has no learning rate to sweep")
        if any(rate <= 0 for rate in self.rates):
            raise ValueError("learning rates must be positive")
        return self

    def encoder_for(self, index: int) -> Path | None:
        """The encoder of the ``index``-th seed (round robin), or None (random init)."""
        return self.encoder[index % len(self.encoder)] if self.encoder else None


class Goal(_Frozen):
    """A claim of the form "``a`` >= ``b`` + ``delta``" at ``budget``, judged with a
    one-sided 95 % bound: holds, excluded or inconclusive. Stated before the runs."""

    name: str
    a: str
    b: str
    budget: str
    delta: float = 0.0


class Equivalence(_Frozen):
    """ "``a`` and ``b`` do not differ in practice": the 95 % interval of the paired
    difference inside ±``margin``."""

    name: str
    a: str
    b: str
    budget: str
    margin: float = Field(0.01, gt=0.0)


class ComparePlan(_Frozen):
    data: str = Field(description="prepared dataset; may hold {seed} for one per seed")
    arms: dict[str, Arm] = Field(min_length=1)
    budgets: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)
    tuning_seeds: list[int] = Field(default=[1000, 1001])
    steps: int | None = Field(
        default=None, ge=1, description="one step budget for every network arm"
    )
    swin_preset: str = "cpu-tiny-seg"
    unet_preset: str = "cpu-tiny-unet"
    set: dict[str, str | int | float | bool | None] = Field(
        default={}, description="finetune config overrides for every network arm"
    )
    min_parcel_pixels: int = Field(200, ge=1)
    comparisons: list[tuple[str, str]] = Field(
        default=[], description="(a, b) pairs; default: every arm against the first"
    )
    goals: list[Goal] = []
    equivalences: list[Equivalence] = []
    plateau_tolerance: float = Field(
        0.01, ge=0.0, description="validation mIoU the last 30 % of steps may still add"
    )
    rf_train_pixels: int = Field(100_000, ge=100)
    probe_train_pixels: int = Field(20_000, ge=100)
    workers: int = Field(1, ge=1, description="runs at once (processes on this machine)")

    @model_validator(mode="after")
    def _consistent(self) -> ComparePlan:
        for budget in self.budgets:
            LabelBudget.parse(budget)
        if set(self.seeds) & set(self.tuning_seeds):
            raise ValueError(
                f"seeds {sorted(set(self.seeds) & set(self.tuning_seeds))} are both scored "
                "and tuning seeds: a rate chosen on a seed must not be scored on it"
            )
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError("seeds repeat")
        tuned = any(arm.kind in NETWORKS for arm in self.arms.values())
        if tuned and not self.tuning_seeds:
            raise ValueError("network arms need tuning_seeds for their learning-rate sweep")
        for claim in [*self.goals, *self.equivalences]:
            self._known(claim.a, claim.b, claim.name)
            if claim.budget not in self.budgets:
                raise ValueError(f"{claim.name}: budget {claim.budget!r} is not in budgets")
        for a, b in self.comparisons:
            self._known(a, b, f"comparison {a} vs {b}")
        return self

    def preset_of(self, arm: Arm) -> str:
        """The fine-tuning preset a network arm starts from: its own, else the plan's."""
        return arm.preset or (self.swin_preset if arm.kind == "swin" else self.unet_preset)

    def _known(self, a: str, b: str, what: str) -> None:
        unknown = [arm for arm in (a, b) if arm not in self.arms]
        if unknown:
            raise ValueError(f"{what}: unknown arms {unknown} (arms: {list(self.arms)})")
        if a == b:
            raise ValueError(f"{what}: an arm against itself")

    def pairs(self) -> list[tuple[str, str]]:
        """The comparisons made (and Holm-adjusted together, with the goals' pairs)."""
        if self.comparisons:
            pairs = list(self.comparisons)
        else:
            first, *others = list(self.arms)
            pairs = [(other, first) for other in others]
        for claim in [*self.goals, *self.equivalences]:
            if (claim.a, claim.b) not in pairs:
                pairs.append((claim.a, claim.b))
        return pairs

    def dataset(self, seed: int) -> Path:
        return Path(self.data.format(seed=seed))


def read_plan(path: Path, overrides: dict | None = None) -> ComparePlan:
    """The plan in ``path`` (YAML), with ``overrides`` (command-line fields) on top.
    Relative paths in the file are relative to the file."""
    try:
        tree = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"cannot read the plan ({err})", path) from None
    base = path.resolve().parent
    if "data" in tree and not Path(str(tree["data"])).is_absolute():
        tree["data"] = str(base / str(tree["data"]))
    for key in ("swin_preset", "unet_preset"):  # a preset file beside the plan
        if key in tree and (base / str(tree[key])).is_file():
            tree[key] = str(base / str(tree[key]))
    for arm in (tree.get("arms") or {}).values():
        if isinstance(arm, dict) and arm.get("preset") and (base / str(arm["preset"])).is_file():
            arm["preset"] = str(base / str(arm["preset"]))
        if isinstance(arm, dict) and arm.get("encoder"):
            encoders = arm["encoder"] if isinstance(arm["encoder"], list) else [arm["encoder"]]
            arm["encoder"] = [str(base / e) if not Path(e).is_absolute() else e for e in encoders]
    return build_plan(tree | (overrides or {}), path)


def build_plan(tree: dict, source: Path | None = None) -> ComparePlan:
    try:
        return ComparePlan.model_validate(tree)
    except ValidationError as err:
        from alos2fm.train.config import validation_problems

        raise ConfigError(
            f"invalid comparison plan: {validation_problems(err)}",
            source,
            "see 'alos2fm compare --help' and the README's 'Which model for my labels?'",
        ) from None


def parse_arms(text: str) -> dict[str, Arm]:
    """``--arms rf,unet,swin,swin=enc.safetensors,probe=enc.safetensors``: an arm per item,
    named by its kind, or ``kind-<encoder folder>`` when it has an encoder; an explicit
    name: ``name:kind[=encoder]``."""
    arms: dict[str, Arm] = {}
    for item in (part.strip() for part in text.split(",") if part.strip()):
        name, _, spec = item.rpartition(":")
        kind, _, encoder = spec.partition("=")
        if not name:
            name = kind if not encoder else f"{kind}-{Path(encoder).resolve().parent.name}"
        if name in arms:
            raise ConfigError(f"--arms: two arms named {name!r}", hint="name them: name:kind=…")
        try:
            arms[name] = Arm(kind=kind, encoder=[Path(encoder)] if encoder else [])
        except ValidationError as err:
            raise ConfigError(
                f"--arms: {item!r}: {err.errors()[0]['msg']}",
                hint="kinds: rf, unet, swin, probe; e.g. rf,unet,swin,swin=run/encoder.safetensors",
            ) from None
    return arms


def with_rates(plan: ComparePlan, text: str) -> ComparePlan:
    """``plan`` with the candidate rates ``text`` ("1e-2,3e-2") for every network arm."""
    try:
        rates = [float(rate) for rate in text.split(",") if rate.strip()]
    except ValueError:
        raise ConfigError(
            f"--rates {text!r} is not a list of numbers", hint="e.g. 1e-2,3e-2"
        ) from None
    tree = plan.model_dump(mode="json")
    for arm in tree["arms"].values():
        if arm["kind"] in NETWORKS:
            arm["rates"] = rates
    return build_plan(tree)


def default_rates(arm: Arm, preset_rate: float) -> list[float]:
    """The arm's candidate rates: its own, or the preset's times 1/3, 1 and 3 (rounded to
    three significant digits, so that folder names and tables read well)."""
    return list(arm.rates) or [float(f"{preset_rate * f:.3g}") for f in RATE_FACTORS]


def plan_record(plan: ComparePlan) -> dict:
    """The resolved plan as written next to the results (plan.yaml)."""
    return plan.model_dump(mode="json")
