"""The Flevoland study, third edition: the scene's preparation; the rest is ``alos2fm compare``.

    python experiments/flevoland/third.py [--data FOLDER] [--bands HH] [--root DIR]
    alos2fm compare --plan experiments/flevoland/configs/third.yaml \\
        --out experiments/flevoland/runs/third/compare

This script makes what the plan (``configs/third.yaml``) reads, under ``--root``
(default ``experiments/flevoland/runs/third``), each step skipped when already done:

- ``stores/seed<S>/``: one fine-tuning dataset per split seed (the 10 scored seeds and
  the tuning seeds): the seed's spatial block split of the ground truth (``splits.py``)
  as the split map, every label of every split (``compare`` draws the label budget),
  128-px patches at stride 64, so that a 64-px training window, centred on a labelled
  pixel of a class drawn per step, really varies;
- ``pretrain_store/``: every 64-px window of the scene (stride 16), unlabelled;
- ``pretrain/<method>_p<K>/``: three pretraining runs (seeds 0, 1, 2) of SAR-W-SimMIM
  and of SimMIM (``configs/pretrain_simmim.yaml``, 30 epochs), so that a pretrained
  arm's result does not rest on one pretraining draw.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # the study's sibling modules, when run as a script

from scene import (  # noqa: E402
    CLASS_NAMES,
    missing_scene,
    prepare_finetuning,
    prepare_pretraining,
    read_ground_truth,
)
from splits import SplitRule, make_split  # noqa: E402

SCORED_SEEDS = range(10)
TUNING_SEEDS = (100, 101)
PRETRAINING = {"sarw_simmim": "sar", "simmim": "none"}  # method -> weighting kind
PRETRAIN_SEEDS = (0, 1, 2)
PRETRAIN_EPOCHS = 30
PATCH, STRIDE = 128, 64


def prepare_stores(root: Path, data: Path, bands: list[str]) -> None:
    gt = read_ground_truth(data)
    for seed in [*SCORED_SEEDS, *TUNING_SEEDS]:
        store = root / "stores" / f"seed{seed}"
        if (store / "index.parquet").exists():
            continue
        split = make_split(gt, seed, SplitRule())
        print(f"split seed {seed}:\n{split.pixel_counts(CLASS_NAMES).to_string(index=False)}")
        prepare_finetuning(
            store, data, bands, split.labels, split.block_split, split.scored, PATCH, STRIDE
        )


def pretrain_encoders(root: Path, data: Path, bands: list[str]) -> None:
    from alos2fm.train.config import resolve_config
    from alos2fm.train.engine import last_checkpoint
    from alos2fm.train.pretrain import ENCODER_WEIGHTS, run_pretrain

    store = root / "pretrain_store"
    if not (store / "index.parquet").exists():
        prepare_pretraining(store, data, bands, 64, 16)
    for method, weighting in PRETRAINING.items():
        for seed in PRETRAIN_SEEDS:
            run = root / "pretrain" / f"{method}_p{seed}"
            if (run / ENCODER_WEIGHTS).exists():
                continue
            cfg = resolve_config(
                "pretrain",
                str(HERE / "configs" / "pretrain_simmim.yaml"),
                {
                    "seed": seed,
                    "model": {"in_chans": len(bands)},
                    "weighting": {"kind": weighting, "mode": "per_channel"},
                    "schedule": {"epochs": PRETRAIN_EPOCHS},
                    "trainer": {"progress_bar": False},
                },
            )
            print(f"pretraining {method}, seed {seed}", flush=True)
            run_pretrain(cfg, store, run, resume=last_checkpoint(run) is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("ALOS2FM_SHARED_DATA", HERE.parents[2] / "shared" / "data"))
        / "flevoland_airsar_lband_t3",
    )
    parser.add_argument("--bands", default="HH", help="comma-separated, e.g. HH,HV,VV")
    parser.add_argument("--root", type=Path, default=HERE / "runs" / "third")
    parser.add_argument("--skip-pretraining", action="store_true")
    args = parser.parse_args()
    bands = args.bands.split(",")
    if (problem := missing_scene(args.data, bands)) is not None:
        raise SystemExit(problem)
    prepare_stores(args.root, args.data, bands)
    if not args.skip_pretraining:
        pretrain_encoders(args.root, args.data, bands)
    print(
        f"ready: alos2fm compare --plan {HERE / 'configs' / 'third.yaml'} "
        f"--out {args.root / 'compare'}"
    )


if __name__ == "__main__":
    main()
