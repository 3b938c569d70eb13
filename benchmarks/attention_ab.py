"""Fused vs eager Swin window attention: bare encoder forward + backward; prints JSON.

For the ``cpu-tiny-simmim`` and ``paper-simmim`` encoders, the same weights with timm's
eager window attention and with ``trainer.fused_attention`` (PyTorch's
``scaled_dot_product_attention``) are timed alternately in one process, so that the
shared machine's load falls on both alike; the fastest of ``--repeats`` is kept.
``fused_speedup`` = eager seconds / fused seconds (> 1: fused pays).

Run: ``OMP_NUM_THREADS=2 python benchmarks/attention_ab.py``.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from alos2fm.models.backbones import create_encoder
from alos2fm.models.speed import enable_fused_attention
from alos2fm.train.config import resolve_config


def step_seconds(encoder: torch.nn.Module, x: torch.Tensor) -> float:
    started = time.perf_counter()
    encoder.forward_features(x).float().mean().backward()
    encoder.zero_grad(set_to_none=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-batch", type=int, default=16)
    parser.add_argument("--paper-batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    report: dict = {"threads": torch.get_num_threads()}
    for preset, batch in (("cpu-tiny-simmim", args.tiny_batch), ("paper-simmim", args.paper_batch)):
        cfg = resolve_config("pretrain", preset)
        encoders = {}
        for name in ("eager", "fused"):
            torch.manual_seed(0)
            encoders[name] = create_encoder(**cfg.model.encoder_kwargs())
        enable_fused_attention(encoders["fused"])
        x = torch.randn(batch, cfg.model.in_chans, cfg.model.img_size, cfg.model.img_size)
        times: dict[str, list[float]] = {"eager": [], "fused": []}
        for repeat in range(args.repeats + 1):  # the first round warms up
            for name, encoder in encoders.items():
                seconds = step_seconds(encoder, x)
                if repeat:
                    times[name].append(seconds)
        best = {name: min(values) for name, values in times.items()}
        report[preset] = {
            "batch": batch,
            "eager_s": round(best["eager"], 4),
            "fused_s": round(best["fused"], 4),
            "fused_speedup": round(best["eager"] / best["fused"], 3),
        }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
