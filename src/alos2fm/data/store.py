"""The patch store: what ``alos2fm prepare`` writes and ``PatchDataset`` reads.

Layout of a dataset folder (all at its root)::

    images/          Zarr v3 array (N, C, P, P) float16, sigma0 (or gamma0) in dB, NaN = no data
    labels/          Zarr v3 array (N, P, P) uint8 class index, 255 = ignore (only with labels)
    index.parquet    one row per patch; row i describes images[i] and labels[i]
    stats.json       per-band dB mean/std, class pixel counts and class weights (train split)

Both arrays are sharded (``alos2fm.data.shards``): one file per ``SHARD_PATCHES`` (256)
consecutive patches, each patch an inner chunk read on its own (one byte-range read), so
a million patches are ~4000 files rather than a million. ``prepare`` stages each task's
patches in this same format (:class:`StagedPatches`) and makes a staged shard whose
patches are all kept a shard of the dataset as it is (:func:`link_shard`); the others are
copied, one writer task per shard. Image chunks are stored uncompressed (speckled dB
values only shrink to ~81 % with zstd, at twice the write cost); label chunks, mostly
uniform regions, are zstd-compressed. Stores of earlier releases (Zarr v2, one chunk
file per patch) still open and read the same.

Why float16 for dB values: the largest rounding error of float16 over [-50, 20] dB is
0.0156 dB (for |dB| >= 32; 0.0078 dB for 16 <= |dB| < 32, <= 0.004 dB closer to 0 dB),
measured on a 20-million-point grid. That is below the radiometric step of the uint16
DN themselves at the same levels (one DN is 0.06 dB at -40 dB and 0.19 dB at -50 dB for
CF = -83 dB), far below the 0.4 dB calibration uncertainty of ALOS-2 and the several dB
of single-look speckle. float16 halves disk use and read time compared with float32 and
still represents NaN, the no-data marker. Its range ends at +-65504: a value beyond it (a
fill value such as -3.4e38 that no nodata tag declared) would be stored as -inf, so
:func:`to_patch_dtype` and ``StagedPatches.append`` refuse any infinity, and
:func:`write_stats` refuses statistics that are not finite.

Class weights use median-frequency balancing (Eigen & Fergus, 2015):
``w_c = median_k(f_k) / f_c`` with ``f_c`` the share of labelled train pixels in class c,
the median taken over the classes present; an absent class gets weight 0.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from alos2fm.atomic import atomic_path
from alos2fm.data.classes import IGNORE_INDEX
from alos2fm.data.shards import ShardedArray, ShardWriter
from alos2fm.errors import DataError

PATCH_DTYPE = np.float16
# Patches per shard file: a million patches make ~4000 files, and a shard of one
# 256 px band is 32 MiB, small enough for one writer task to hold.
SHARD_PATCHES = 256
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
    """The two arrays of a store; ``labels`` is None for an unlabelled dataset.

    Sharded stores give :class:`alos2fm.data.shards.ShardedArray` objects; stores written
    before shards existed (one Zarr v2 chunk file per patch) give zarr arrays, read the
    same way (``images[i]``, ``shape``, ``attrs``).
    """

    images: Any  # (N, C, P, P) float16 dB
    labels: Any | None  # (N, P, P) uint8

    @property
    def bands(self) -> tuple[str, ...]:
        return tuple(self.images.attrs["bands"])

    @property
    def sharded(self) -> bool:
        return isinstance(self.images, ShardedArray)


def create_patch_arrays(
    root: str | Path,
    n_patches: int,
    bands: Sequence[str],
    patch_size: int,
    with_labels: bool,
    quantity: str = "sigma0",
    shard_patches: int = SHARD_PATCHES,
) -> PatchArrays:
    """Create empty sharded arrays (images read as NaN, labels as 255) under ``root``.

    Shards never written stay absent on disk; ``resize_patch_arrays`` trims the length.
    """
    root = Path(root)
    n_bands = len(bands)
    images = ShardedArray.create(
        root / IMAGES,
        (n_patches, n_bands, patch_size, patch_size),
        PATCH_DTYPE,
        np.nan,
        shard_patches,  # uncompressed: speckled dB hardly compresses (zstd: 81 %)
    )
    images.attrs.update({"bands": list(bands), "units": "dB", "quantity": quantity})
    labels = None
    if with_labels:
        labels = ShardedArray.create(
            root / LABELS,
            (n_patches, patch_size, patch_size),
            np.uint8,
            IGNORE_INDEX,
            shard_patches,
            compression="zstd",  # mostly large uniform regions: they shrink many times
        )
        labels.attrs.update({"ignore_index": IGNORE_INDEX})
    return PatchArrays(images=images, labels=labels)


def open_patch_arrays(root: str | Path) -> PatchArrays:
    """Open the arrays of an existing store, sharded or of the one-file-per-patch layout."""
    root = Path(root)
    if not (root / IMAGES).exists():
        _dataset_file(root, IMAGES)  # names a missing folder or a file
        raise DataError("no patch store here (images/ is missing)", root, "run alos2fm prepare")
    labels = root / LABELS
    if ShardedArray.is_sharded(root / IMAGES):
        return PatchArrays(
            images=ShardedArray.open(root / IMAGES),
            labels=ShardedArray.open(labels) if labels.exists() else None,
        )
    import zarr  # a store written before shards: one Zarr v2 chunk file per patch

    return PatchArrays(
        images=zarr.open_array(str(root / IMAGES), mode="r"),
        labels=zarr.open_array(str(labels), mode="r") if labels.exists() else None,
    )


def resize_patch_arrays(arrays: PatchArrays, n_patches: int) -> None:
    """Trim (or grow) both arrays to ``n_patches`` patches."""
    arrays.images.resize((n_patches, *arrays.images.shape[1:]))
    if arrays.labels is not None:
        arrays.labels.resize((n_patches, *arrays.labels.shape[1:]))


# --- staging: what one prepare task cut, before balancing chooses ---------------------------


class StagedPatches:
    """A task's candidate patches, staged as a store of their own (``images/`` and, for a
    labelled task, ``labels/`` under ``folder``) in exactly the final store's format and
    shard size, so that a staged shard whose patches are all kept can become a shard of
    the dataset unchanged (:func:`link_shard`) instead of being copied.

    Patches are streamed into the current shard file as they come (memory holds one
    batch, not a shard); :meth:`close` finishes the last shard and records the count.
    """

    def __init__(
        self,
        folder: str | Path,
        bands: Sequence[str],
        patch_size: int,
        with_labels: bool,
        checked: bool = False,
    ):
        self.folder = Path(folder)
        self.count = 0
        # The caller converted the images with to_patch_dtype (which checked them, or knew
        # them bounded): scanning them again for infinities would cost a pass over each.
        self.checked = checked
        # Created empty, grown to the final count at close() (the number kept is not known
        # before the windows are read).
        self._arrays = create_patch_arrays(self.folder, 0, bands, patch_size, with_labels)
        self._writers: list[ShardWriter] = []

    def append(self, images: np.ndarray, labels: np.ndarray | None = None) -> None:
        """Add ``images`` (n, C, P, P) dB and, for a labelled task, ``labels`` (n, P, P).

        ``DataError`` if a value is infinite once stored (see :func:`to_patch_dtype`),
        unless the patches were staged as ``checked``.
        """
        stored = to_patch_dtype(images, band_axis=1, where=self.folder, check=not self.checked)
        arrays = [a for a in (self._arrays.images, self._arrays.labels) if a is not None]
        values = [stored] + ([np.asarray(labels, dtype=np.uint8)] if len(arrays) > 1 else [])
        done = 0
        while done < len(stored):
            if not self._writers:
                shard = self.count // SHARD_PATCHES
                self._writers = [array.shard_writer(shard) for array in arrays]
            room = SHARD_PATCHES - self._writers[0].count
            part = slice(done, done + min(room, len(stored) - done))
            for writer, value in zip(self._writers, values, strict=True):
                writer.append(value[part])
            done = part.stop
            self.count += part.stop - part.start
            if self._writers[0].count == SHARD_PATCHES:
                self._finish_shard()

    def close(self) -> int:
        """Finish the last shard and set the arrays' length; the number of patches staged."""
        if self._writers:
            self._finish_shard()
        resize_patch_arrays(self._arrays, self.count)
        return self.count

    def _finish_shard(self) -> None:
        for writer in self._writers:
            writer.close()
        self._writers = []


def to_patch_dtype(
    image_db: np.ndarray,
    band_axis: int = 0,
    where: str | Path | None = None,
    check: bool = True,
) -> np.ndarray:
    """``image_db`` (bands on ``band_axis``) as the store's float16, refusing infinities.

    A finite dB value beyond float16's +-65504 would become +-inf, and an infinity already
    there is no backscatter either: both raise ``DataError`` naming the band (1-based),
    the count and the extreme value. NaN (no data) passes. ``where`` names the file or
    folder in the message. ``check=False`` skips that scan (a pass over every value,
    float16 having no fast test) for values bounded by construction.
    """
    with np.errstate(over="ignore"):  # no copy of values already float16 (staging's)
        stored = np.asarray(image_db).astype(PATCH_DTYPE, copy=False)
    if not check:
        return stored
    infinite = np.isinf(stored)
    if infinite.any():
        axes = tuple(i for i in range(stored.ndim) if i != band_axis % max(stored.ndim, 1))
        per_band = infinite.sum(axis=axes) if stored.ndim > 1 else np.array([infinite.sum()])
        band = int(np.flatnonzero(per_band)[0]) + 1
        source = np.asarray(image_db)[infinite]
        extreme = source[np.argmax(np.abs(source.astype(np.float64)))]
        raise DataError(
            f"{int(infinite.sum())} value(s) of band {band} (e.g. {float(extreme):.7g} dB) "
            f"are infinite in float16, the store's dtype (range +-65504)",
            where,
            "not backscatter: a fill value without a nodata tag? check the product with "
            "alos2fm.products.validate_product and declare it with --nodata",
        )
    return stored


def write_shard_from_staging(root: str | Path, shard: int, sources: Sequence[tuple[str, int]]):
    """Write shard ``shard`` of the store at ``root`` by copying patches: ``sources`` are its
    patches in order, as (folder of a store, position in it): a task's staged patches or
    the dataset of an earlier run.

    One task per shard: the parallel writers of a store never write the same file.
    """
    arrays = open_patch_arrays(root)
    opened = {folder: open_patch_arrays(folder) for folder, _ in sources}
    arrays.images.write_shard(shard, np.stack([opened[f].images.read(at) for f, at in sources]))
    if arrays.labels is not None:
        labels = [opened[f].labels.read(at) for f, at in sources]
        arrays.labels.write_shard(shard, np.stack(labels))


def shard_files(root: str | Path, shard: int) -> list[Path]:
    """The files of shard ``shard`` of the sharded store at ``root`` (images, then labels)."""
    root = Path(root)
    names = [IMAGES] + ([LABELS] if (root / LABELS).exists() else [])
    return [ShardedArray.open(root / name).shard_path(shard) for name in names]


def link_shard(source: str | Path, source_shard: int, root: str | Path, shard: int) -> None:
    """Make shard ``source_shard`` of the store at ``source`` shard ``shard`` of the store at
    ``root`` (same format and shard size; a full shard, or the store's last) without
    rewriting it: a hard link, so the source keeps its file until its owner removes it (a
    failed run loses nothing); a copy where the file system has no hard links."""
    import shutil

    for src, dst in zip(shard_files(source, source_shard), shard_files(root, shard), strict=True):
        dst.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, dst)
        except OSError:
            with atomic_path(dst, durable=False) as tmp:
                shutil.copyfile(src, tmp)


# --- index ---------------------------------------------------------------------------------


def write_index(root: str | Path, index: pd.DataFrame) -> Path:
    """Write ``index.parquet`` atomically; row i must describe patch i of the arrays."""
    missing = [c for c in INDEX_COLUMNS if c not in index.columns]
    if missing:
        raise ValueError(f"index is missing columns {missing}")
    path = Path(root) / INDEX
    with atomic_path(path) as tmp:
        index.reset_index(drop=True).to_parquet(tmp, index=False)
    return path


def read_index(root: str | Path) -> pd.DataFrame:
    path = _dataset_file(root, INDEX)
    try:
        return pd.read_parquet(path)
    except Exception as err:  # pyarrow's errors share no base class but Exception
        raise _damaged(path, err) from None


def _dataset_file(root: str | Path, name: str) -> Path:
    """``root/name`` of a dataset, or a one-line error saying what the folder is."""
    root = Path(root)
    if not root.is_dir():
        what = "no such folder" if not root.exists() else "a file, not a dataset folder"
        raise DataError(what, root, "give the folder alos2fm prepare wrote")
    if not (root / name).is_file():
        raise DataError(f"not an alos2fm dataset (no {name})", root, "run alos2fm prepare")
    return root / name


def _damaged(path: Path, err: Exception) -> DataError:
    detail = " ".join(str(err).split())[:120]
    return DataError(f"damaged or truncated ({detail})", path, "prepare the dataset again")


# --- statistics ----------------------------------------------------------------------------


class BandMoments:
    """Per band: count of valid pixels, sum and sum of squares of their dB values, for
    any region of one array, e.g. each patch of a strip of patches.

    ``image_db`` (C, H, W) with NaN for no data. Values are summed in float64, where
    float16 and float32 values, and the squares of float16 values, are exact; a region's
    sum of squares is one fused multiply-sum (``einsum``) rather than a squared copy and a
    sum, since this runs over every pixel that ``prepare`` stores. Each region is converted
    on its own into one reused buffer (a patch: 0.5 MiB), which stays in the CPU cache for
    the passes that follow, rather than the whole array at once.
    """

    def __init__(self, image_db: np.ndarray):
        self._image = np.asarray(image_db)
        self._buffer = np.empty(0)

    def of(
        self, rows: slice = slice(None), cols: slice = slice(None)
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(count, sum, sum of squares), each shape (C,), over ``[:, rows, cols]``."""
        values = self._float64(self._image[:, rows, cols])
        total = values.sum(axis=(1, 2))
        count = np.full(len(values), values[0].size)
        # Most patches have no no-data pixel: only a patch with a band whose sum is NaN (a
        # NaN value, or infinities of both signs, left as they are) pays for the mask.
        if np.isnan(total).any():
            missing = np.isnan(values)
            count -= np.count_nonzero(missing, axis=(1, 2))
            values[missing] = 0.0
            total = values.sum(axis=(1, 2))
        return count, total, np.einsum("chw,chw->c", values, values)

    def _float64(self, region: np.ndarray) -> np.ndarray:
        """``region`` in float64 in the reused buffer, laid out as in a C-contiguous copy of
        the image: contiguous where it spans whole rows, else with rows apart (a row stride
        longer than a row). einsum sums a row at a time where rows are apart and all at
        once otherwise, so the layout decides the last bits of a sum of squares: this one
        keeps them those of the region's view of the whole image in float64, so that the
        statistics of a dataset do not depend on the buffer."""
        bands, height, width = region.shape
        # Rows apart by 8 values (64 B) more than their length, keeping their alignment.
        stride = width if width == self._image.shape[2] else width + 8
        if self._buffer.size < bands * height * stride:
            self._buffer = np.empty(bands * height * stride)
        values = self._buffer[: bands * height * stride].reshape(bands, height, stride)
        values = values[:, :, :width]
        np.copyto(values, region)
        return values


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
    """Write ``stats.json`` atomically; ``DataError`` naming the key and band if a number
    is NaN or infinite (the file is then not written: JSON has no such numbers, and a
    NaN mean would normalise every patch to NaN)."""
    path = Path(root) / STATS
    _check_finite_stats(stats, path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(stats, indent=2, allow_nan=False) + "\n")
    return path


def _check_finite_stats(stats: dict[str, Any], path: Path) -> None:
    bands = list(stats.get("bands") or [])
    for key, value in stats.items():
        items = value if isinstance(value, (list, tuple)) else [value]
        for i, item in enumerate(items):
            if isinstance(item, bool) or not isinstance(item, (int, float, np.number)):
                continue
            if np.isfinite(item):
                continue
            per_band = isinstance(value, (list, tuple)) and len(value) == len(bands)
            where = f"band {bands[i]}" if per_band else (f"entry {i}" if items is value else "")
            raise DataError(
                f"{key} of {where or 'the dataset'} is {float(item)} in the statistics",
                path,
                "the dataset holds values that are not backscatter (a fill value without a "
                "nodata tag?): check the products and prepare again with --nodata",
            )


def read_stats(root: str | Path) -> dict[str, Any]:
    path = _dataset_file(root, STATS)
    try:
        stats = json.loads(path.read_text())
    except ValueError as err:
        raise _damaged(path, err) from None
    if not isinstance(stats, dict) or "bands" not in stats:
        raise _damaged(path, ValueError("no bands listed"))
    return stats


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
