"""Pretraining throughput on CPU for SimMIM and MixMAE; prints JSON.

For each method (``cpu-tiny-simmim``, ``cpu-tiny-mixmae`` presets, or ``--preset-suffix``)
and each precision (``32-true``, ``bf16-mixed``):

- ``train_images_per_s``: full training steps through the Lightning engine: reading
  patches from a Zarr patch store, flips, normalisation, SAR-W weights, the method's
  forward (masking, mixing, decoder, loss), backward, gradient clipping, AdamW and the
  LR schedule (``--steps`` timed after ``--warmup`` untimed steps).
- ``backbone_images_per_s``: the bare timm encoder of the same config, forward and
  backward of ``features.mean()`` on an in-memory tensor of the same shape, same
  precision, same process.
- ``ratio`` = train / backbone (target >= 0.87: data and method add <= 15 %). The train
  side includes everything a step does; the backbone side only the encoder's forward and
  backward (no data, weights, masking, decoder, loss, clipping or optimiser). MixMAE and
  SimMIM run a decoder the bare backbone does not, so ``flop_rate_ratio`` also credits
  that work: (train images/s x training FLOPs per image) / (backbone images/s x backbone
  FLOPs per image), i.e. achieved FLOP/s of the whole step over that of the bare encoder.
- Both sides are measured ``--rounds`` times, alternating (the machine may be shared);
  the best of each is kept and every round is reported.
- ``flops_per_image`` of one full training forward+backward (``torch.utils.flop_counter``)
  and ``mfu``: achieved FLOP/s over the FLOP/s of a large matmul measured in the same run
  at the same precision (the CPU's practical peak; no vendor figure is assumed).

``--paper`` adds, for the paper presets (Swin-B at 256 px): parameter counts of the
SimMIM and MixMAE models, their encoder, and the Swin-B + UPerNet segmenter (9 classes),
and the time of one CPU training step at batch ``--paper-batch`` (the second step; the
first allocates). ``--methods`` with no name measures only these.

``--paper-throughput`` measures the paper presets (Swin-B, 256 px, SimMIM and MixMAE) the
same way as the tiny ones: full steps through the real engine over a patch store against
the bare eager encoder's forward + backward, batch ``--paper-batch``, each precision
(goal: ratio >= 1.2, which only a faster step than eager timm can reach).
``--trainer-set KEY=VALUE`` adds trainer options to the engine side only, e.g.
``fused_attention=true`` or ``compile=true``: the bare side stays eager.

Run: ``OMP_NUM_THREADS=2 python benchmarks/pretrain_throughput.py --paper``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from alos2fm.data.store import StatsAccumulator, create_patch_arrays, write_index, write_stats
from alos2fm.models.backbones import create_encoder
from alos2fm.train.config import resolve_config
from alos2fm.train.data import PatchDataModule
from alos2fm.train.engine import build_trainer, seed_run
from alos2fm.train.pretrain import PretrainModule, pretrain_model_for


def make_store(root: Path, n: int, size: int) -> Path:
    """A one-band unlabelled patch store of gamma-speckled dB patches."""
    import pandas as pd

    rng = np.random.default_rng(0)
    arrays = create_patch_arrays(root, n, ["HH"], size, with_labels=False)
    stats = StatsAccumulator(["HH"])
    for i in range(n):
        db = -12 + 10 * np.log10(rng.gamma(4.0, 0.25, (1, size, size)))
        arrays.images[i] = db.astype(np.float16)
        stats.add(db.astype(np.float32))
    columns = {
        "patch_id": [f"bench_{i}" for i in range(n)], "scene": "bench", "date": "2022-11-19",
        "row": 0, "col": 0, "split": "train", "category": 0, "valid_fraction": 1.0,
        "crs": "", "transform": [[1.0, 0, 0, 0, -1.0, 0]] * n, "minx": 0.0, "miny": 0.0,
        "maxx": 1.0, "maxy": 1.0, "lon_min": 0.0, "lat_min": 0.0, "lon_max": 1.0,
        "lat_max": 1.0, "lon_center": 0.5, "lat_center": 0.5,
    }  # fmt: skip
    write_index(root, pd.DataFrame(columns))
    write_stats(root, stats.result())
    return root


def _autocast(precision: str, device: str = "cpu"):
    if precision == "bf16-mixed":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    return nullcontext()


def _synchronize(device: str) -> None:
    """Wait for queued GPU work, so that a wall-clock time covers it (no-op on CPU)."""
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


class _StepTimer(Callback):
    def __init__(self, warmup: int):
        self.warmup = warmup
        self.start = self.end = 0.0
        self.timed = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            _synchronize(pl_module.device)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            # Waiting for the GPU after every step would stop the host queueing the next
            # one: only the last timed step waits, so the time covers all queued work.
            if batch_idx == trainer.num_training_batches - 1:
                _synchronize(pl_module.device)
            self.end = time.perf_counter()
            self.timed += 1


def train_throughput(cfg, store: Path, run_dir: Path, warmup: int) -> float:
    dm = PatchDataModule(store, cfg.data, cfg.seed, with_labels=False, splits=("train",))
    seed_run(cfg.seed)
    module = PretrainModule(cfg, dm.normalisation)
    timer = _StepTimer(warmup)
    trainer = build_trainer(cfg.trainer, run_dir, 1, cfg.seed, callbacks=[timer])
    trainer.fit(module, datamodule=dm)
    return timer.timed * cfg.data.batch_size / (timer.end - timer.start)


def backbone_throughput(cfg, precision: str, steps: int, warmup: int, device: str = "cpu") -> float:
    encoder = create_encoder(**cfg.model.encoder_kwargs()).to(device)
    shape = (cfg.data.batch_size, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size)
    x = torch.randn(shape, device=device)
    for i in range(warmup + steps):
        if i == warmup:
            _synchronize(device)
            start = time.perf_counter()
        with _autocast(precision, device):
            loss = encoder.forward_features(x).float().mean()
        loss.backward()
        encoder.zero_grad(set_to_none=True)
    _synchronize(device)
    return steps * cfg.data.batch_size / (time.perf_counter() - start)


def backbone_flops_per_image(cfg, precision: str) -> float:
    """FLOPs of one forward+backward of the bare encoder (as timed above), per image."""
    from torch.utils.flop_counter import FlopCounterMode

    encoder = create_encoder(**cfg.model.encoder_kwargs())
    b = cfg.data.batch_size
    x = torch.randn(b, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size)
    with FlopCounterMode(display=False) as counter:
        with _autocast(precision):
            loss = encoder.forward_features(x).float().mean()
        loss.backward()
    return counter.get_total_flops() / b


def training_flops_per_image(cfg, precision: str, device: str = "cpu") -> float:
    """FLOPs of one forward+backward of the full pretraining model, per image."""
    from torch.utils.flop_counter import FlopCounterMode

    model = pretrain_model_for(cfg).to(device)
    b = cfg.data.batch_size
    x = torch.randn(b, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size, device=device)
    with FlopCounterMode(display=False) as counter:
        with _autocast(precision, device):
            loss = model(x, torch.ones_like(x)).loss
        loss.backward()
    return counter.get_total_flops() / b


def matmul_peak_flops(precision: str, n: int = 1024, repeats: int = 10) -> float:
    dtype = torch.bfloat16 if precision == "bf16-mixed" else torch.float32
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start)


def _second_step_s(loss_fn, optimizer: torch.optim.Optimizer) -> float:
    """Seconds of one training step (forward, backward, AdamW), timed on the second step:
    the first one also allocates the optimiser state and warms the allocator."""
    for _ in range(2):
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_fn().backward()
        optimizer.step()
    return round(time.perf_counter() - start, 2)


def paper_figures(batch: int) -> dict:
    from alos2fm.models.segmenter import Segmenter

    def count(module: torch.nn.Module) -> int:
        return sum(p.numel() for p in module.parameters())

    out = {}
    for preset in ("paper-simmim", "paper-mixmae"):
        cfg = resolve_config("pretrain", preset, [f"data.batch_size={batch}"])
        model = pretrain_model_for(cfg)
        x = torch.randn(batch, 1, 256, 256)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        out[preset] = {
            "parameters": count(model),
            "encoder_parameters": count(model.encoder),
            "cpu_step_s": _second_step_s(
                lambda m=model, x=x: m(x, torch.ones_like(x)).loss, optimizer
            ),
            "batch": batch,
        }
    cfg = resolve_config("finetune", "paper-seg")
    segmenter = Segmenter(create_encoder(**cfg.model.encoder_kwargs()), num_classes=9)
    x = torch.randn(batch, 1, 256, 256)
    optimizer = torch.optim.AdamW(segmenter.parameters(), lr=1e-4)
    out["paper-seg"] = {
        "parameters": count(segmenter),
        "encoder_parameters": count(segmenter.encoder),
        "cpu_step_s": _second_step_s(lambda: segmenter(x).logsumexp(1).mean(), optimizer),
        "batch": batch,
    }
    return out


def measure(cfg, store: Path, run_dir: Path, args, precision: str) -> dict:
    """Engine and bare-encoder throughput of one config, alternating ``--rounds`` times."""
    trains, bares = [], []
    for round_ in range(args.rounds):
        trains.append(train_throughput(cfg, store, run_dir / f"round{round_}", args.warmup))
        bares.append(backbone_throughput(cfg, precision, args.steps, args.warmup))
    train, bare = max(trains), max(bares)
    return {
        "train_images_per_s": round(train, 3),
        "backbone_images_per_s": round(bare, 3),
        "ratio": round(train / bare, 3),
        "train_rounds": [round(t, 3) for t in trains],
        "backbone_rounds": [round(b, 3) for b in bares],
    }


def paper_throughput(tmp: Path, args) -> list[dict]:
    """The paper presets through the engine (see the module docstring)."""
    n = args.paper_batch * (args.steps + args.warmup)
    store = make_store(tmp / "paper-store", n, size=256)
    runs = []
    for method in ("simmim", "mixmae"):
        for precision in args.precisions:
            overrides = [
                f"data.batch_size={args.paper_batch}",
                "data.num_workers=0",
                "weighting.kind=sar",
                "trainer.accelerator=cpu",
                "trainer.devices=1",  # the presets ask for 8 GPUs under DDP
                "trainer.strategy=auto",
                f"trainer.precision={precision}",
                "trainer.log_every_n_steps=50",
                "trainer.progress_bar=false",
                "figure_every_n_epochs=100",
                *[f"trainer.{item}" for item in args.trainer_set],
            ]
            cfg = resolve_config("pretrain", f"paper-{method}", overrides)
            run = measure(cfg, store, tmp / f"paper-{method}-{precision}", args, precision)
            runs.append({"preset": f"paper-{method}", "precision": precision, **run})
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2, help="alternating train/backbone runs")
    parser.add_argument("--precisions", nargs="+", default=["32-true", "bf16-mixed"])
    parser.add_argument(
        "--methods", nargs="*", default=["simmim", "mixmae"], help="none: only --paper"
    )
    parser.add_argument("--img-size", type=int, default=64, help="patch side (preset: 64)")
    parser.add_argument("--embed-dim", type=int, default=None, help="Swin width (preset: 24)")
    parser.add_argument("--paper", action="store_true", help="also measure the paper presets")
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument(
        "--paper-throughput", action="store_true", help="paper presets through the engine"
    )
    parser.add_argument("--trainer-set", nargs="*", default=[], help="e.g. fused_attention=true")
    args = parser.parse_args()

    results: dict = {"threads": torch.get_num_threads(), "batch": args.batch, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        n = args.batch * (args.steps + args.warmup)
        store = make_store(tmp / "store", n, size=args.img_size)
        for method in args.methods:
            for precision in args.precisions:
                overrides = [
                    f"data.batch_size={args.batch}",
                    "weighting.kind=sar",
                    f"trainer.precision={precision}",
                    "trainer.log_every_n_steps=50",
                    "trainer.progress_bar=false",
                    "trainer.checkpoint_every_n_epochs=100",
                    "trainer.threads=auto",  # OMP_NUM_THREADS, not the preset's 1
                    "figure_every_n_epochs=100",
                    f"model.img_size={args.img_size}",
                    *[f"trainer.{item}" for item in args.trainer_set],
                ]
                if args.embed_dim is not None:
                    overrides.append(f"model.embed_dim={args.embed_dim}")
                cfg = resolve_config("pretrain", f"cpu-tiny-{method}", overrides)
                run = measure(cfg, store, tmp / f"{method}-{precision}", args, precision)
                train, bare = run["train_images_per_s"], run["backbone_images_per_s"]
                flops = training_flops_per_image(cfg, precision)
                bare_flops = backbone_flops_per_image(cfg, precision)
                peak = matmul_peak_flops(precision)
                results["runs"].append({
                    "method": method,
                    "precision": precision,
                    "img_size": cfg.model.img_size,
                    "embed_dim": cfg.model.embed_dim,
                    **run,
                    "flops_per_image": flops,
                    "backbone_flops_per_image": bare_flops,
                    "flop_rate_ratio": round(train * flops / (bare * bare_flops), 3),
                    "matmul_peak_gflops": round(peak / 1e9, 2),
                    "mfu": round(train * flops / peak, 4),
                })  # fmt: skip
        if args.paper_throughput:
            results["paper_throughput"] = paper_throughput(tmp, args)
    results["trainer_set"] = args.trainer_set
    if args.paper:
        results["paper"] = paper_figures(args.paper_batch)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
