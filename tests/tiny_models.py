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


def fit_block_labels(model: torch.nn.Module, lr: float, steps: int) -> tuple[float, float, float]:
    """(first loss, last loss, accuracy) of a segmenter trained with Adam on one batch of
    4 noisy 32 px images whose labels are 8 px blocks of 2 classes, drawn from torch's
    random state as it is (seed it, then build the model, then call this)."""
    blocks = torch.randint(0, 2, (4, 4, 4))
    label = blocks.repeat_interleave(8, 1).repeat_interleave(8, 2)
    image = (2.0 * label - 1.0).unsqueeze(1) + 0.5 * torch.randn(4, 1, 32, 32)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(model(image), label)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    model.eval()
    with torch.no_grad():
        accuracy = (model(image).argmax(1) == label).float().mean().item()
    return losses[0], losses[-1], accuracy
