"""Tiny model descriptions and checks shared by tests (fast on one CPU thread)."""

import torch

# A Swin segmenter for 32 px tiles: what checkpoints, prediction and export tests build.
TINY_SEGMENTER = {
    "encoder": {
        "arch": "swin_tiny",
        "in_chans": 1,
        "img_size": 32,
        "window_size": 2,
        "ape": True,
        "embed_dim": 8,
        "depths": [1, 1, 1, 1],
        "num_heads": [1, 1, 2, 2],
    },
    "num_classes": 3,
    "decoder_channels": 8,
}


def overfit_one_batch(model: torch.nn.Module, x: torch.Tensor, steps: int) -> list[float]:
    """Losses of ``steps`` AdamW steps on one fixed batch (and one fixed mask)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    losses = []
    for _ in range(steps):
        torch.manual_seed(1)  # the same mask every step: one fixed batch to memorise
        loss = model(x).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses
