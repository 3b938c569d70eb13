"""Fine-tuning throughput on CPU: the engine's segmentation step against the bare model;
prints JSON.

For the ``cpu-tiny-seg`` preset (or ``--preset``), at ``--batch-size``:

- ``train_images_per_s``: full training steps through the Lightning engine on a labelled
  patch store of ``--patch``-px patches: reading, a model-sized window cut per sample
  (``data.sampling``, centred on labelled pixels by the preset), the dihedral transform,
  normalisation, the segmenter's forward, class-weighted loss, backward, gradient
  clipping, AdamW and the LR schedule;
- ``stored_windows_images_per_s``: the same with patches already of the model's size (no
  window to cut): what the sampling costs is the difference;
- ``model_images_per_s``: the bare segmenter (encoder + decoder), forward and backward of
  cross-entropy on an in-memory batch of the same shape, same process;
- ``ratio`` = train / model (the step's overhead over the model itself), and
  ``sampling_ratio`` = train / stored_windows.

``--trainer-set KEY=VALUE`` adds trainer options to the engine side only (e.g.
``compile=true fused_attention=true``): the bare model stays eager.

Both sides run ``--rounds`` times, alternating (the machine may be shared); the best of
each is kept and every round reported.

Run: ``OMP_NUM_THREADS=2 python benchmarks/finetune_throughput.py``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_throughput import _autocast, _StepTimer, _synchronize  # noqa: E402

from alos2fm.data.store import StatsAccumulator, create_patch_arrays, write_index, write_stats
from alos2fm.models.segmenter import build_segmenter
from alos2fm.train.config import resolve_config
from alos2fm.train.data import PatchDataModule
from alos2fm.train.engine import build_trainer, seed_run
from alos2fm.train.finetune import FinetuneModule

CLASSES = 4


def make_labelled_store(root: Path, n: int, size: int) -> Path:
    """One band of gamma-speckled dB over blocky classes, sparse labels (1 px in 50)."""
    import pandas as pd

    rng = np.random.default_rng(0)
    arrays = create_patch_arrays(root, n, ["HH"], size, with_labels=True)
    stats = StatsAccumulator(["HH"], num_classes=CLASSES)
    for i in range(n):
        blocks = rng.integers(0, CLASSES, (size // 16, size // 16))
        classes = np.kron(blocks, np.ones((16, 16), dtype=np.int64))
        db = -20 + 4 * classes + 10 * np.log10(rng.gamma(4.0, 0.25, (size, size)))
        label = np.where(rng.random((size, size)) < 0.02, classes, 255).astype(np.uint8)
        arrays.images[i] = db[None].astype(np.float16)
        arrays.labels[i] = label
        stats.add(db[None].astype(np.float32), label)
    columns = {
        "patch_id": [f"bench_{i}" for i in range(n)], "scene": "bench", "date": "2022-11-19",
        "row": 0, "col": 0, "split": ["train"] * (n - 2) + ["val", "test"], "category": 0,
        "valid_fraction": 1.0, "crs": "", "transform": [[1.0, 0, 0, 0, -1.0, 0]] * n,
        "minx": 0.0, "miny": 0.0, "maxx": 1.0, "maxy": 1.0, "lon_min": 0.0, "lat_min": 0.0,
        "lon_max": 1.0, "lat_max": 1.0, "lon_center": 0.5, "lat_center": 0.5,
    }  # fmt: skip
    write_index(root, pd.DataFrame(columns))
    write_stats(root, stats.result() | {"class_names": [f"c{k}" for k in range(CLASSES)]})
    return root


def train_throughput(cfg, store: Path, run_dir: Path, warmup: int) -> float:
    dm = PatchDataModule(store, cfg.data, cfg.seed)
    seed_run(cfg.seed)
    module = FinetuneModule.from_config(cfg, dm.normalisation, dm.stats, dm.root)
    timer = _StepTimer(warmup)
    trainer = build_trainer(cfg.trainer, run_dir, 1, cfg.seed, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.timed * cfg.data.batch_size / (timer.end - timer.start)


def bare_segmenter(cfg, device: str = "cpu") -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    """The config's segmenter and an in-memory batch (images, labels) of its shape."""
    model = build_segmenter(
        {
            "encoder": cfg.model.encoder_kwargs(),
            "num_classes": CLASSES,
            "decoder_channels": cfg.decoder_channels,
            "decoder": cfg.decoder,
        }
    ).to(device)
    size, batch = cfg.model.img_size, cfg.data.batch_size
    x = torch.randn(batch, cfg.model.in_chans, size, size, device=device)
    y = torch.randint(0, CLASSES, (batch, size, size), device=device)
    return model, x, y


def model_throughput(cfg, steps: int, warmup: int, device: str = "cpu") -> float:
    """The bare segmenter's forward + backward, under the run's precision (bf16 autocast
    for ``bf16-mixed``, as Lightning runs it)."""
    model, x, y = bare_segmenter(cfg, device)
    batch = len(x)
    for i in range(warmup + steps):
        if i == warmup:
            _synchronize(device)
            start = time.perf_counter()
        with _autocast(cfg.trainer.precision, device):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
        model.zero_grad(set_to_none=True)
    _synchronize(device)
    return steps * batch / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="cpu-tiny-seg")
    parser.add_argument("--patch", type=int, default=256, help="stored patch side, px")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--precision", default="32-true", help="32-true or bf16-mixed (both sides)")
    parser.add_argument(
        "--trainer-set", nargs="*", default=[], help="engine side only, e.g. compile=true"
    )
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    batches = args.warmup + args.steps
    overrides = [
        f"data.batch_size={args.batch_size}",
        "data.num_workers=0",
        f"trainer.limit_train_batches={batches}",
        "trainer.limit_val_batches=0",
        "trainer.accelerator=cpu",
        "trainer.devices=1",  # the paper preset's 8 GPUs and DDP: one CPU process here
        "trainer.threads=auto",  # OMP_NUM_THREADS, as the bare model runs (not the preset's 1)
        "trainer.strategy=auto",
        "trainer.num_nodes=1",
        f"trainer.precision={args.precision}",
        "trainer.progress_bar=false",
        "trainer.checkpoint_every_n_epochs=1000",
        "trainer.val_every_n_steps=null",
        "schedule.max_steps=null",
        "schedule.epochs=1",
        "schedule.warmup_epochs=0",
    ]
    # the trainer options change only the engine side: the bare model reads model and precision
    overrides += [f"trainer.{item}" for item in args.trainer_set]
    cfg = resolve_config("finetune", args.preset, overrides)
    n = args.batch_size * batches + 2
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        large = make_labelled_store(tmp / "large", n, args.patch)
        small = make_labelled_store(tmp / "small", n, cfg.model.img_size)
        trains, stored, bare = [], [], []
        for round_ in range(args.rounds):
            trains.append(train_throughput(cfg, large, tmp / f"run{round_}", args.warmup))
            stored.append(train_throughput(cfg, small, tmp / f"small{round_}", args.warmup))
            bare.append(model_throughput(cfg, args.steps, args.warmup))
    train, windows, model = max(trains), max(stored), max(bare)
    print(
        json.dumps(
            {
                "preset": args.preset,
                "precision": args.precision,
                "patch": args.patch,
                "window": cfg.model.img_size,
                "batch": args.batch_size,
                "threads": torch.get_num_threads(),
                "trainer_set": args.trainer_set,
                "train_images_per_s": round(train, 3),
                "stored_windows_images_per_s": round(windows, 3),
                "model_images_per_s": round(model, 3),
                "ratio": round(train / model, 3),
                "sampling_ratio": round(train / windows, 3),
                "rounds": {
                    "train": [round(v, 3) for v in trains],
                    "stored_windows": [round(v, 3) for v in stored],
                    "model": [round(v, 3) for v in bare],
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
