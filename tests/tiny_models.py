"""Tiny model descriptions shared by tests (fast on one CPU thread)."""

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
