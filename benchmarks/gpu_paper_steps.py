"""The paper presets' training steps on one GPU, eager and compiled; writes JSON.

One short run (minutes) for a lent GPU machine. For each paper preset (``paper-simmim``
and ``paper-mixmae`` with the SAR-W loss, ``paper-seg`` fine-tuning Swin-B + UPerNet), at
``--batch`` per GPU (64 by default; the presets' own per-GPU batches are 256, 128 and 16)
and 256 px, in ``--precision`` (bf16-mixed):

- ``train_images_per_s``: full steps through the real engine (Lightning, one GPU) over a
  Zarr patch store, data loaded by ``--workers`` processes with pinned memory, for each
  arm of ``--arms``: ``eager``; ``fused`` (fused attention); ``compile`` (fused attention
  and ``torch.compile`` of the model; its compilation runs in the untimed warm-up steps);
- ``bare_images_per_s``: the bare eager model of the same preset, forward + backward on
  an in-memory batch on the GPU (the encoder for pretraining, encoder + UPerNet for
  fine-tuning), and ``ratio`` = train / bare (the CPU benchmarks' form);
- ``tflops``: achieved FLOP/s of the training step (FLOPs of one forward + backward of the
  full model from ``torch.utils.flop_counter`` x images/s), ``peak_fraction`` over the
  GPU's dense bf16 peak (vendor figure, ``DENSE_BF16_TFLOPS``; null for an unknown GPU)
  and ``matmul_fraction`` over a large bf16 matmul measured in the same run.

The GPU model, torch and CUDA versions go into the JSON. The file (``--out``) is
rewritten atomically after every measurement, so a run cut short keeps what it measured;
eager arms run before compiled ones for that reason.

Run on the GPU machine: ``python benchmarks/gpu_paper_steps.py --out $OUT/gpu.json``.
``--device cpu --smoke`` runs the same code on the tiny CPU presets at batch 2, to check
the script here before spending GPU time.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from finetune_throughput import bare_segmenter, make_labelled_store, model_throughput  # noqa: E402
from finetune_throughput import train_throughput as finetune_train_throughput  # noqa: E402
from pretrain_throughput import (  # noqa: E402
    _autocast,
    _synchronize,
    backbone_throughput,
    make_store,
    training_flops_per_image,
)
from pretrain_throughput import train_throughput as pretrain_train_throughput  # noqa: E402

from alos2fm.atomic import atomic_path
from alos2fm.train.config import resolve_config

# Vendor dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, by a substring of
# torch.cuda.get_device_name(); the first match wins (longer names first).
DENSE_BF16_TFLOPS = {
    "H200": 989.4,
    "H100 PCIe": 756.0,
    "H100": 989.4,
    "GH200": 989.4,
    "A100": 312.0,
    "L40S": 362.1,
    "L40": 181.0,
    "L4": 121.0,
    "A10G": 70.0,
    "A10": 125.0,
    "RTX 4090": 165.2,
}

ARMS = {
    "eager": [],
    "fused": ["trainer.fused_attention=true"],
    "compile": ["trainer.fused_attention=true", "trainer.compile=true"],
}


def vendor_peak_tflops(name: str) -> float | None:
    for key, tflops in DENSE_BF16_TFLOPS.items():
        if key in name:
            return tflops
    return None


def matmul_tflops(device: str, n: int, repeats: int = 20) -> float:
    """A large square bf16 matmul: the practical peak of this device in this run."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    a @ b
    _synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    _synchronize(device)
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e12


def segmenter_flops_per_image(cfg, device: str) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    model, x, y = bare_segmenter(cfg, device)
    with FlopCounterMode(display=False) as counter:
        with _autocast(cfg.trainer.precision, device):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        loss.backward()
    return counter.get_total_flops() / len(x)


def overrides(args: argparse.Namespace, kind: str) -> list[str]:
    accelerator = "gpu" if args.device.startswith("cuda") else "cpu"
    common = [
        f"data.batch_size={args.batch}",
        f"data.num_workers={args.workers}",
        f"trainer.accelerator={accelerator}",
        "trainer.devices=1",  # the presets ask for 8 GPUs under DDP: one GPU here
        "trainer.strategy=auto",
        "trainer.num_nodes=1",
        f"trainer.precision={args.precision}",
        "trainer.progress_bar=false",
        "trainer.log_every_n_steps=50",
        "trainer.checkpoint_every_n_epochs=1000",
        "trainer.last_checkpoint_every_n_minutes=null",
    ]
    if kind == "pretrain":
        return [*common, "weighting.kind=sar", "figure_every_n_epochs=1000"]
    return [
        *common,
        f"trainer.limit_train_batches={args.warmup + args.steps}",
        "trainer.limit_val_batches=0",
        "trainer.val_every_n_steps=null",
        "schedule.max_steps=null",
        "schedule.epochs=1",
        "schedule.warmup_epochs=0",
    ]


def presets(args: argparse.Namespace) -> list[tuple[str, str]]:
    if args.smoke:
        return [("pretrain", "cpu-tiny-simmim"), ("pretrain", "cpu-tiny-mixmae"),
                ("finetune", "cpu-tiny-seg")]  # fmt: skip
    return [("pretrain", "paper-simmim"), ("pretrain", "paper-mixmae"), ("finetune", "paper-seg")]


def run(args: argparse.Namespace, write) -> dict:
    device = args.device
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else "cpu"
    peak = vendor_peak_tflops(name)
    results: dict = {
        "device": name,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "batch": args.batch,
        "precision": args.precision,
        "steps": args.steps,
        "warmup": args.warmup,
        "workers": args.workers,
        "vendor_dense_bf16_tflops": peak,
        "matmul_bf16_tflops": round(matmul_tflops(device, 1024 if args.smoke else 8192), 2),
        "runs": [],
    }
    write(results)
    n = args.batch * (args.steps + args.warmup)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size = 64 if args.smoke else 256
        stores = {
            "pretrain": make_store(tmp / "unlabelled", n, size),
            "finetune": make_labelled_store(tmp / "labelled", n + 2, size),
        }
        configs = {
            preset: resolve_config(kind, preset, overrides(args, kind))
            for kind, preset in presets(args)
        }
        bare, flops = {}, {}
        for kind, preset in presets(args):  # eager bare models and FLOPs first: cheap
            cfg = configs[preset]
            if kind == "pretrain":
                bare[preset] = backbone_throughput(
                    cfg, args.precision, args.steps, args.warmup, device
                )
                flops[preset] = training_flops_per_image(cfg, args.precision, device)
            else:
                bare[preset] = model_throughput(cfg, args.steps, args.warmup, device)
                flops[preset] = segmenter_flops_per_image(cfg, device)
            if device.startswith("cuda"):
                torch.cuda.empty_cache()
        for arm in args.arms:
            for kind, preset in presets(args):
                cfg = resolve_config(kind, preset, overrides(args, kind) + ARMS[arm])
                run_dir = tmp / f"{preset}-{arm}"
                measure = pretrain_train_throughput if kind == "pretrain" else (
                    finetune_train_throughput
                )  # fmt: skip
                train = measure(cfg, stores[kind], run_dir, args.warmup)
                tflops = train * flops[preset] / 1e12
                results["runs"].append({
                    "preset": preset,
                    "arm": arm,
                    "train_images_per_s": round(train, 2),
                    "bare_images_per_s": round(bare[preset], 2),
                    "ratio": round(train / bare[preset], 3),
                    "flops_per_image": flops[preset],
                    "tflops": round(tflops, 2),
                    "peak_fraction": None if peak is None else round(tflops / peak, 3),
                    "matmul_fraction": round(tflops / results["matmul_bf16_tflops"], 3),
                })  # fmt: skip
                write(results)
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="JSON file to write")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (compilation)")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--arms", nargs="+", default=["eager", "compile"], choices=list(ARMS))
    parser.add_argument("--smoke", action="store_true", help="tiny CPU presets, batch 2")
    args = parser.parse_args()
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error("no CUDA device here; this benchmark is for a GPU machine (--smoke: CPU)")
    if args.smoke:
        args.batch, args.steps, args.warmup, args.workers = 2, 2, 1, 0

    def write(results: dict) -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(args.out) as tmp:
            tmp.write_text(json.dumps(results, indent=2))

    print(json.dumps(run(args, write), indent=2))


if __name__ == "__main__":
    main()
