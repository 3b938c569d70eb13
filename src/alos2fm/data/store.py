"""The patch store: what ``alos2fm prepare`` writes and ``PatchDataset`` reads.

Layout of a dataset folder (all at its root)::

    images/          Zarr array (N, C, P, P) float16, sigma0 (or gamma0) in dB, NaN = no data
    labels/          Zarr array (N, P, P) uint8 class index, 255 = ignore (only with labels)
    index.parquet    one row per patch; row i describes images[i] and labels[i]
    stats.json       per-band dB mean/std, class pixel counts and class weights (train split)

Both arrays are chunked one patch per chunk, so a random patch costs one small file read.
They are written in Zarr format 2 through ``zarr.open_array`` on a plain directory,
which zarr 2.18 and zarr 3.x both read and write. Image chunks are stored uncompressed
(speckled dB values only shrink to ~81 % with zstd, at twice the write cost); label
chunks, mostly uniform regions, are zstd-compressed.

Why float16 for dB values: the largest rounding error of float16 over [-50, 20] dB is
0.0156 dB (for |dB| >= 32; 0.0078 dB for 16 <= |dB| < 32, <= 0.004 dB closer to 0 dB),
measured on a 20-million-point grid. That is below the radiometric step of the uint16
DN themselves at the same levels (one DN is 0.06 dB at -40 dB and 0.19 dB at -50 dB for
CF = -83 dB), far below the 0.4 dB calibration uncertainty of ALOS-2 and the several dB
of single-look speckle. float16 halves disk use and read time compared with float32 and
still represents NaN, the no-data marker.

Class weights use median-frequency balancing (Eigen & Fergus, 2015):
``w_c = median_k(f_k) / f_c`` with ``f_c`` the share of labelled train pixels in class c,
the median taken over the classes present; an absent class gets weight 0.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alos2fm.data.classes import IGNORE_INDEX
from alos2fm.errors import DataError

PATCH_DTYPE = np.float16
IMAGES = "images"
LABELS = "labels"
INDEX = "index.parquet"
STATS = "stats.json"

# Columns every index.parquet holds (more are allowed). ``transform`` is the patch's affine
# transform (a, b, c, d, e, f) in the scene CRS; ``row``/``col`` its pixel offset in the scene.
INDEX_COLUMNS = (
    "patch_id",
    "scene",
    "date",
    "row",
    "col",
    "split",
    "category",
    "valid_fraction",
    "crs",
    "transform",
    "minx",
    "miny",
    "maxx",
    "maxy",
    "lon_min",
    "lat_min",
    "lon_max",
    "lat_max",
    "lon_center",
    "lat_center",
)


@dataclass
class PatchArrays:
    """The two arrays of a store; ``labels`` is None for an unlabelled dataset."""

    images: Any  # zarr array (N, C, P, P) float16 dB
    labels: Any | None  # zarr array (N, P, P) uint8

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.images.attrs["bands"])


def create_patch_arrays(
    root: str | Path,
    n_patches: int,
    bands: Sequence[str],
    patch_size: int,
    with_labels: bool,
    quantity: str = "sigma0",
) -> PatchArrays:
    """Create empty arrays (images filled with NaN, labels with 255) under ``root``.

    Chunks never written stay absent on disk, so an upper bound for ``n_patches`` costs
    nothing; ``resize_patch_arrays`` trims it afterwards.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    n_bands = len(bands)
    images = _open_zarr(
        root / IMAGES,
        "w",
        shape=(n_patches, n_bands, patch_size, patch_size),
        chunks=(1, n_bands, patch_size, patch_size),
        dtype=PATCH_DTYPE,
        fill_value=np.nan,
        compressor=None,  # speckled dB hardly compresses (zstd: 81 %) and costs 2x the write
    )
    images.attrs.update({"bands": list(bands), "units": "dB", "quantity": quantity})
    labels = None
    if with_labels:
        labels = _open_zarr(
            root / LABELS,
            "w",
            shape=(n_patches, patch_size, patch_size),
            chunks=(1, patch_size, patch_size),
            dtype=np.uint8,
            fill_value=IGNORE_INDEX,
            compressor=_label_compressor(),
        )
        labels.attrs.update({"ignore_index": IGNORE_INDEX})
    return PatchArrays(images=images, labels=labels)


def open_patch_arrays(root: str | Path, mode: str = "r") -> PatchArrays:
    """Open the arrays of an existing store (``mode`` "r" or "r+")."""
    root = Path(root)
    if not (root / IMAGES).exists():
        raise DataError("no patch store here (images/ is missing)", root, "run alos2fm prepare")
    images = _open_zarr(root / IMAGES, mode)
    labels = _open_zarr(root / LABELS, mode) if (root / LABELS).exists() else None
    return PatchArrays(images=images, labels=labels)


def resize_patch_arrays(arrays: PatchArrays, n_patches: int) -> None:
    """Trim (or grow) both arrays to ``n_patches`` patches."""
    arrays.images.resize((n_patches, *arrays.images.shape[1:]))
    if arrays.labels is not None:
        arrays.labels.resize((n_patches, *arrays.labels.shape[1:]))


def write_image_chunks(root: str | Path, start: int, images: np.ndarray) -> None:
    """Write ``images`` (n, C, P, P) dB as patches ``start`` .. ``start + n - 1`` of the
    images array that ``create_patch_arrays`` made under ``root``.

    That array's chunks are single uncompressed patches without filters, so in Zarr
    format 2 a chunk file holds exactly the patch's bytes in C order as ``<f2``; they are
    written straight to ``"<i>.0.0.0"``. This skips zarr's per-chunk machinery (event
    loop, thread hand-off, a temporary file and a rename per chunk), which costs as much
    CPU as the write itself. The files are not written atomically: use it for staging,
    whose completeness a task's ``done.json`` marks, not to update a published store.
    """
    folder = Path(root) / IMAGES
    patches = np.asarray(images, dtype=np.dtype(PATCH_DTYPE).newbyteorder("<"))
    for offset, patch in enumerate(patches):
        with open(folder / f"{start + offset}.0.0.0", "wb") as chunk:
            chunk.write(np.ascontiguousarray(patch).data)


def link_patch(source: str | Path, source_at: int, dest: str | Path, dest_at: int) -> None:
    """Make patch ``dest_at`` of store ``dest`` a copy of patch ``source_at`` of ``source``.

    Both stores must come from ``create_patch_arrays`` with the same bands and patch size,
    so that their chunks are encoded alike: a patch is then one chunk file per array
    (Zarr format 2 key ``"<i>.0.0[.0]"``), which is hard-linked (copied where links are
    not possible) instead of decoded and re-encoded. A chunk absent from ``source``
    (never written, or equal to the fill value) stays absent, which reads the same.
    """
    for name in (IMAGES, LABELS):
        dest_dir = Path(dest) / name
        if not dest_dir.exists():
            continue
        rest = ".0" * (3 if name == IMAGES else 2)
        chunk = Path(source) / name / f"{source_at}{rest}"
        target = dest_dir / f"{dest_at}{rest}"
        # Try the link first and deal with the rare cases after: a store holds thousands
        # of patches, and checking first would cost extra system calls for each.
        try:
            os.link(chunk, target)
        except FileNotFoundError:  # never written in the source
            continue
        except OSError:  # the target exists already, or links are not possible here
            target.unlink(missing_ok=True)  # it may be a link: never write through it
            shutil.copyfile(chunk, target)


def _label_compressor() -> Any:
    """Zstandard: label patches are mostly large uniform regions and shrink many times."""
    from numcodecs import Zstd

    return Zstd(level=1)


def _open_zarr(path: Path, mode: str, **create: Any) -> Any:
    import zarr

    if create:
        # Format 2 with "." keys (``link_patch`` relies on them): zarr 2.18 reads it too.
        # Every chunk is written, no-data patches included: checking whether a chunk
        # equals the fill value first costs more than the write.
        create["dimension_separator"] = "."
        if int(zarr.__version__.split(".")[0]) >= 3:
            create["zarr_format"] = 2
            create["config"] = {"write_empty_chunks": True}
        else:
            create["write_empty_chunks"] = True
    return zarr.open_array(str(path), mode=mode, **create)


# --- index ---------------------------------------------------------------------------------


def write_index(root: str | Path, index: pd.DataFrame) -> Path:
    """Write ``index.parquet`` atomically; row i must describe patch i of the arrays."""
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"index is missing columns {missing}")
    path = Path(root) / INDEX
    tmp = path.with_name(f".{path.name}.tmp")
    index.reset_index(drop=True).to_parquet(tmp, index=False)
    os.replace(tmp, path)
    return path


def read_index(root: str | Path) -> pd.DataFrame:
    path = Path(root) / INDEX
    if not path.exists():
        raise DataError("no index.parquet here", Path(root), "run alos2fm prepare")
    return pd.read_parquet(path)


# --- statistics ----------------------------------------------------------------------------


class BandMoments:
    """Per band: count of valid pixels, sum and sum of squares of their dB values, for
    any region of one array, e.g. each patch of a strip of patches.

    ``image_db`` (C, H, W) with NaN for no data. Values are held in float64, where float16
    and float32 values, and the squares of float16 values, are exact; a region's sum of
    squares is one fused multiply-sum (``einsum``) rather than a squared copy and a sum,
    since this runs over every pixel that ``prepare`` stores.
    """

    def __init__(self, image_db: np.ndarray):
        values = np.array(image_db, dtype=np.float64)  # a copy: NaN is zeroed below
        self._missing = np.isnan(values)
        np.copyto(values, 0.0, where=self._missing)
        self._values = values

    def of(
        self, rows: slice = slice(None), cols: slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, sum, sum of squares), each shape (C,), over ``[:, rows, cols]``."""
        region = (slice(None), rows, cols)
        values = self._values[region]
        missing = self._missing[region]
        count = np.array([band.size - np.count_nonzero(band) for band in missing])
        return count, values.sum(axis=(1, 2)), np.einsum("chw,chw->c", values, values)


def band_moments(image_db: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(count, sum, sum of squares) per band of a whole (C, H, W) dB array; see BandMoments."""
    return BandMoments(image_db).of()


def class_pixel_counts(label: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixels per class 0..num_classes-1 in a uint8 label patch (255 = ignore not counted)."""
    return np.bincount(label[label < num_classes], minlength=num_classes)[:num_classes]


class StatsAccumulator:
    """Running per-band dB mean/std over valid pixels and class pixel counts.

    Sums are kept in float64, where sum and sum of squares of dB values stay exact enough
    for billions of pixels (values of order 10, squares of order 100). Patches are added
    as arrays (``add``) or as their precomputed moments (``add_moments``).
    """

    def __init__(self, bands: Sequence[str], num_classes: int | None = None):
        self.bands = tuple(bands)
        self.num_classes = num_classes
        self._count = np.zeros(len(bands), dtype=np.int64)
        self._sum = np.zeros(len(bands), dtype=np.float64)
        self._sumsq = np.zeros(len(bands), dtype=np.float64)
        self._class_count = np.zeros(num_classes or 0, dtype=np.int64)

    def add(self, image_db: np.ndarray, label: np.ndarray | None = None) -> None:
        """Add one patch: ``image_db`` (C, H, W) dB with NaN no data; ``label`` (H, W) uint8."""
        counts = None
        if label is not None and self.num_classes is not None:
            counts = class_pixel_counts(label, self.num_classes)
        self.add_moments(*band_moments(image_db), counts)

    def add_moments(
        self,
        count: Sequence[int],
        total: Sequence[float],
        total_sq: Sequence[float],
        class_counts: Sequence[int] | None = None,
    ) -> None:
        """Add one patch from ``band_moments`` and ``class_pixel_counts`` results."""
        self._count += np.asarray(count, dtype=np.int64)
        self._sum += np.asarray(total, dtype=np.float64)
        self._sumsq += np.asarray(total_sq, dtype=np.float64)
        if class_counts is not None:
            self._class_count += np.asarray(class_counts, dtype=np.int64)

    def result(self) -> dict[str, Any]:
        count = np.maximum(self._count, 1)
        mean = self._sum / count
        std = np.sqrt(np.maximum(self._sumsq / count - mean * mean, 0.0))
        stats: dict[str, Any] = {
            "bands": list(self.bands),
            "units": "dB",
            "mean_db": [float(m) for m in mean],
            "std_db": [float(s) for s in std],
            "valid_pixels": [int(c) for c in self._count],
        }
        if self.num_classes is not None:
            stats["num_classes"] = self.num_classes
            stats["class_pixel_counts"] = [int(c) for c in self._class_count]
            weights = median_frequency_weights(self._class_count)
            stats["class_weights"] = [float(w) for w in weights]
            stats["class_weight_formula"] = "median frequency: w_c = median(f) / f_c"
        return stats


def median_frequency_weights(counts: np.ndarray) -> np.ndarray:
    """``w_c = median(f) / f_c`` over classes with pixels; 0 for absent classes."""
    counts = np.asarray(counts, dtype=np.float64)
    weights = np.zeros_like(counts)
    present = counts > 0
    if present.any():
        freq = counts[present] / counts[present].sum()
        weights[present] = np.median(freq) / freq
    return weights


def write_stats(root: str | Path, stats: dict[str, Any]) -> Path:
    path = Path(root) / STATS
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(stats, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_stats(root: str | Path) -> dict[str, Any]:
    path = Path(root) / STATS
    if not path.exists():
        raise DataError("no stats.json here", Path(root), "run alos2fm prepare")
    return json.loads(path.read_text())


# --- export --------------------------------------------------------------------------------


def export_patch_geotiff(
    root: str | Path, patch_id: str, path: str | Path, label_path: str | Path | None = None
) -> Path:
    """Write one patch as a float32 dB GeoTIFF (NaN no data) with its CRS and transform.

    With ``label_path`` the patch's labels are written there too (uint8, nodata 255).
    """
    import rasterio
    from affine import Affine

    index = read_index(root)
    hits = np.flatnonzero(index["patch_id"].to_numpy() == patch_id)
    if len(hits) == 0:
        raise DataError(f"no patch named {patch_id!r} in the index", Path(root) / INDEX)
    position = int(hits[0])
    entry = index.iloc[position]
    arrays = open_patch_arrays(root)
    image = np.asarray(arrays.images[position], dtype=np.float32)
    profile = {
        "driver": "GTiff",
        "height": image.shape[1],
        "width": image.shape[2],
        "crs": entry["crs"] or None,
        "transform": Affine(*entry["transform"]),
    }
    path = Path(path)
    with rasterio.open(
        path, "w", count=image.shape[0], dtype="float32", nodata=np.nan, **profile
    ) as dst:
        dst.write(image)
        for band, name in enumerate(arrays.bands, start=1):
            dst.set_band_description(band, f"{name} [dB]")
        dst.update_tags(PATCH_ID=patch_id, SCENE=str(entry["scene"]), DATE=str(entry["date"]))
    if label_path is not None:
        if arrays.labels is None:
            raise DataError("this dataset has no labels to export", Path(root))
        label = np.asarray(arrays.labels[position], dtype=np.uint8)
        with rasterio.open(
            label_path, "w", count=1, dtype="uint8", nodata=IGNORE_INDEX, **profile
        ) as dst:
            dst.write(label, 1)
    return path
