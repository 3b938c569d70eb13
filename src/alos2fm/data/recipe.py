"""The preprocessing a dataset was cut with, so that a model's users can repeat it.

``alos2fm prepare`` writes its resolved ``config.yaml`` into the dataset; fine-tuning
copies the part that changes pixels (multilook, speckle filter) into the checkpoint, and
``alos2fm predict`` applies it to the product before tiling. A model trained on 2 x 2
multilooked, Lee-filtered patches then sees a scene as it saw its training data, not
single-look pixels of half the size. (The bands travel separately, by name.)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from alos2fm.products.base import Product

DATASET_CONFIG = "config.yaml"


@dataclass(frozen=True)
class Preprocessing:
    """Multilook looks (rows, cols) and speckle filter (None, boxcar or lee; window px)."""

    multilook: tuple[int, int] = (1, 1)
    speckle: str | None = None
    filter_size: int = 5

    @classmethod
    def of_dataset(cls, root: str | Path) -> Preprocessing:
        """What ``prepare`` recorded in ``root/config.yaml`` (as read, if it recorded nothing)."""
        path = Path(root) / DATASET_CONFIG
        tree = yaml.safe_load(path.read_text()) if path.is_file() else None
        return cls.from_dict(tree if isinstance(tree, Mapping) else {})

    @classmethod
    def from_dict(cls, tree: Mapping[str, Any]) -> Preprocessing:
        return cls(
            multilook=tuple(int(v) for v in tree.get("multilook") or (1, 1)),
            speckle=tree.get("speckle"),
            filter_size=int(tree.get("filter_size") or 5),
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "multilook": list(self.multilook),
            "speckle": self.speckle,
            "filter_size": self.filter_size,
        }

    def apply(self, product: Product) -> Product:
        """``product`` multilooked and speckle-filtered as the training data was."""
        from alos2fm.products.processing import process

        return process(
            product, looks=self.multilook, speckle=self.speckle, filter_size=self.filter_size
        )
