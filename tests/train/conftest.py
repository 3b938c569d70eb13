"""A tiny labelled patch store for the training tests, written with the store's own API."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from alos2fm.data.store import (
    StatsAccumulator,
    create_patch_arrays,
    write_index,
    write_stats,
)

CLASS_DB = (-20.0, -12.0, -5.0)  # three classes, well apart in dB: learnable in a few steps


def make_store(root: Path, n_train: int = 16, n_val: int = 4, n_test: int = 4, size: int = 64):
    """Patches of three blocky classes with speckle-like noise; some no-data pixels."""
    rng = np.random.default_rng(0)
    n = n_train + n_val + n_test
    arrays = create_patch_arrays(root, n, ["HH"], size, with_labels=True)
    splits = ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    stats = StatsAccumulator(["HH"], num_classes=len(CLASS_DB))
    for i in range(n):
        blocks = rng.integers(0, len(CLASS_DB), size=(size // 16, size // 16))
        label = np.kron(blocks, np.ones((16, 16), dtype=np.int64)).astype(np.uint8)
        image = np.asarray(CLASS_DB, dtype=np.float32)[label] + rng.normal(0, 1.5, label.shape)
        image = image[None].astype(np.float32)
        if i % 5 == 0:  # a no-data corner
            image[:, :6, :6] = np.nan
            label[:6, :6] = 255
        arrays.images[i] = image.astype(np.float16)
        arrays.labels[i] = label
        if splits[i] == "train":
            stats.add(image, label)
    index = pd.DataFrame(
        {
            "patch_id": [f"tiny_{i * size}_0" for i in range(n)],
            "scene": "tiny",
            "date": "2022-11-19",
            "row": [i * size for i in range(n)],
            "col": 0,
            "split": splits,
            "category": 0,
            "valid_fraction": 1.0,
            "crs": "EPSG:32654",
            "transform": [[3.0, 0.0, 0.0, 0.0, -3.0, float(-i * size * 3)] for i in range(n)],
            "minx": 0.0,
            "miny": 0.0,
            "maxx": 1.0,
            "maxy": 1.0,
            "lon_min": 139.0,
            "lat_min": 35.0,
            "lon_max": 139.1,
            "lat_max": 35.1,
            "lon_center": 139.05,
            "lat_center": 35.05,
        }
    )
    write_index(root, index)
    result = stats.result()
    result["class_names"] = ["water", "field", "urban"]
    write_stats(root, result)
    return root


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory) -> Path:
    return make_store(tmp_path_factory.mktemp("tiny_store"))
