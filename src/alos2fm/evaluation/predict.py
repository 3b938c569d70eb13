"""Full-scene prediction: a sliding window over any product, streamed to a GeoTIFF map.

The scene is covered by tiles of the model's patch size that overlap by ``overlap``
pixels; the last tile of a row or column is shifted back to end exactly on the scene's
edge (so edges are reached without padding), and a scene smaller than one tile is padded
to it. Each tile's softmax probabilities are multiplied by a separable weight that ramps
up over the overlap (raised cosine, never zero) and accumulated with that weight; the
class is the argmax of the weighted mean, so tiles blend smoothly and no seam appears.

Memory stays flat as the scene grows: tiles are processed one row-strip at a time, the
accumulator holds one strip (``K x tile x width`` floats), and rows are written as soon
as no later strip can touch them, through windowed writes aligned to the GeoTIFF blocks.

Outputs (each written to a temporary sibling and renamed when complete):
- ``map.tif``: uint8 class ids, tiled and deflate-compressed, the input's CRS and
  transform, a colour table, 255 = no data (pixels where any input band has none);
- ``map_confidence.tif`` (optional): uint8 percent probability of the chosen class;
- ``map.png``: a quicklook with the class legend.

Checkpoints: :func:`load_segmenter_for_inference` reads the fine-tuning engine's Lightning
checkpoint ``{"state_dict": {"segmenter.<key>": tensor, ...}, "hyper_parameters": {...}}``
(the LightningModule keeps the model at ``.segmenter``) whose hyper-parameters hold (see
:class:`InferenceMeta`; other entries are ignored)::

    model:   {encoder: <create_encoder kwargs>, num_classes: K, decoder_channels: 256}
    data:    {bands: [...], mean: [dB per band], std: [dB per band], patch_size: 256}
    classes: {names: [K names], colours: [K x [r, g, b]]}
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from alos2fm.atomic import atomic_path
from alos2fm.contract import band_indices, bands_to_open, open_checkpoint
from alos2fm.data.tiling import tile_origins
from alos2fm.errors import Alos2fmError
from alos2fm.evaluation.gis import write_class_sidecars
from alos2fm.evaluation.quicklook import write_map_quicklook
from alos2fm.models.segmenter import Segmenter, WeightsError, build_segmenter
from alos2fm.native_stderr import held_native_stderr
from alos2fm.products.base import Product, Window
from alos2fm.threads import Threads, apply_threads

NODATA = 255
BLOCK = 256  # GeoTIFF block side; writes are aligned to it
STATE_PREFIX = "segmenter."  # where FinetuneModule keeps the model in its state_dict

log = logging.getLogger(__name__)


class PredictionError(Alos2fmError):
    """A product and a model that cannot be combined (bands, sizes, options)."""


# --- what a checkpoint must carry ---------------------------------------------------------


@dataclass(frozen=True)
class InferenceMeta:
    """Everything needed besides the weights to run a segmenter on a new scene."""

    model: Mapping[str, Any]  # build_segmenter spec
    bands: tuple[str, ...]
    mean_db: tuple[float, ...]
    std_db: tuple[float, ...]
    class_names: tuple[str, ...]
    class_colours: tuple[tuple[int, int, int], ...]
    patch_size: int
    # Multilook and speckle filter of the training data (``Preprocessing.as_dict``); None in
    # checkpoints written before the dataset's preprocessing was recorded.
    preprocessing: Mapping[str, Any] | None = None

    def hparams(self) -> dict[str, Any]:
        """The checkpoint ``hyper_parameters`` entries (plain lists and dicts)."""
        recorded = {} if self.preprocessing is None else {"preprocessing": dict(self.preprocessing)}
        return {
            "model": dict(self.model),
            "data": {
                "bands": list(self.bands),
                "mean": list(self.mean_db),
                "std": list(self.std_db),
                "patch_size": self.patch_size,
            }
            | recorded,
            "classes": {
                "names": list(self.class_names),
                "colours": [list(c) for c in self.class_colours],
            },
        }

    @classmethod
    def from_hparams(cls, hparams: Mapping[str, Any], path: str | Path | None = None):
        try:
            data, classes = hparams["data"], hparams["classes"]
            return cls(
                model=dict(hparams["model"]),
                bands=tuple(data["bands"]),
                mean_db=tuple(float(v) for v in data["mean"]),
                std_db=tuple(float(v) for v in data["std"]),
                class_names=tuple(classes["names"]),
                class_colours=tuple(tuple(int(v) for v in c) for c in classes["colours"]),
                patch_size=int(data["patch_size"]),
                preprocessing=data.get("preprocessing"),
            )
        except (KeyError, TypeError) as err:
            raise WeightsError(
                f"checkpoint hyper-parameters lack {err} (need model, data.bands/mean/std/"
                "patch_size, classes.names/colours)",
                path,
                "use a checkpoint written by 'alos2fm finetune'",
            ) from None


def save_inference_checkpoint(model: Segmenter, meta: InferenceMeta, path: str | Path) -> Path:
    """Write ``model`` and ``meta`` in the checkpoint layout the loader reads (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {f"{STATE_PREFIX}{key}": value for key, value in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state, "hyper_parameters": meta.hparams()}, tmp)
    return path


def load_segmenter_for_inference(
    checkpoint: str | Path, device: str | torch.device = "cpu"
) -> tuple[Segmenter, InferenceMeta]:
    """The segmenter (eval mode, on ``device``) and its metadata from a checkpoint.

    Only plain tensors and containers are unpickled (``weights_only=True``).
    """
    checkpoint = Path(checkpoint)
    content = open_checkpoint(checkpoint)
    meta = InferenceMeta.from_hparams(content.get("hyper_parameters", {}), checkpoint)
    model = build_segmenter(meta.model)
    state = {
        key.removeprefix(STATE_PREFIX): value
        for key, value in content["state_dict"].items()
        if key.startswith(STATE_PREFIX)
    }
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise WeightsError(
            f"checkpoint lacks {len(result.missing_keys)} segmenter tensors "
            f"(e.g. {result.missing_keys[0]})",
            checkpoint,
            "the checkpoint's model description does not match its weights",
        )
    return model.to(device).eval(), meta


# --- tiling and blending ------------------------------------------------------------------


def blend_ramp(tile: int, overlap: int) -> np.ndarray:
    """1-D tile weight: raised cosine over ``overlap`` pixels at each end, 1 inside.

    Sampled at pixel centres, so it is never 0: every pixel keeps a usable weight even
    where only one tile covers it (the scene's edges).
    """
    ramp = np.ones(tile, dtype=np.float32)
    if overlap > 0:
        x = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        rise = 0.5 - 0.5 * np.cos(np.pi * x)
        ramp[:overlap] = rise
        ramp[tile - overlap :] = np.minimum(ramp[tile - overlap :], rise[::-1])
    return ramp


def predict_patches(
    model: torch.nn.Module, images: torch.Tensor, tile: int, overlap: int
) -> torch.Tensor:
    """Class probabilities (B, K, H, W) of patches larger than the model's tile, blended
    from overlapping tiles exactly as a scene is (softmax x ``blend_ramp`` weights);
    ``images`` (B, C, H, W) are the model's (standardised) input."""
    height, width = images.shape[-2:]
    ramp = torch.from_numpy(blend_ramp(tile, overlap)).to(images.device)
    weight = ramp[:, None] * ramp[None, :]
    probs = weights = None
    for top in tile_origins(height, tile, overlap):
        for left in tile_origins(width, tile, overlap):
            logits = model(images[..., top : top + tile, left : left + tile])
            if probs is None:
                probs = images.new_zeros(logits.shape[:2] + (height, width), dtype=torch.float32)
                weights = images.new_zeros((height, width), dtype=torch.float32)
            probs[..., top : top + tile, left : left + tile] += (
                torch.softmax(logits.float(), 1) * weight
            )
            weights[top : top + tile, left : left + tile] += weight
    return probs / weights


# --- the streaming loop -------------------------------------------------------------------


@dataclass(frozen=True)
class PredictOptions:
    """``tile``: window side (default: the checkpoint's patch size); ``overlap`` pixels
    between neighbours (default: a quarter tile, 64 for 256); ``batch_size`` tiles per
    forward pass; ``confidence`` writes the second GeoTIFF; ``quicklook`` the PNG;
    ``progress`` shows a bar; ``compile`` and ``fused_attention`` speed the forward up
    without changing what it computes (``alos2fm.models.speed``; compiling pays off on
    large scenes, its first batches pay the compilation); ``threads`` torch computes with
    (a number or ``auto``, see ``alos2fm.threads``)."""

    tile: int | None = None
    overlap: int | None = None
    batch_size: int = 8
    confidence: bool = False
    quicklook: bool = True
    progress: bool = True
    compile: bool = False
    fused_attention: bool = False
    overwrite: bool = False  # replace maps an earlier alos2fm run wrote (never others)
    threads: Threads = "auto"


def output_paths(out: Path, options: PredictOptions) -> list[Path]:
    """The files a prediction writes: the map, its class names for GIS tools, its
    confidence, its quicklook."""
    from alos2fm.evaluation.gis import sidecar_paths

    paths = [out, *sidecar_paths(out)]
    if options.confidence:
        paths.append(out.with_name(f"{out.stem}_confidence.tif"))
    if options.quicklook:
        paths.append(out.with_suffix(".png"))
    return paths


@dataclass(frozen=True)
class PredictionResult:
    map_path: Path
    confidence_path: Path | None
    quicklook_path: Path | None
    tiles: int  # tiles run (those holding data), what the progress bar counts
    tiles_total: int  # tiles covering the scene, no-data ones (skipped) included
    pixels: int
    seconds: float
    threads: int  # torch's thread count while predicting


def _band_indices(product: Product, meta: InferenceMeta) -> list[int]:
    """Which product bands feed the model, in the model's order (``alos2fm.contract``)."""
    return band_indices(meta.bands, product.bands, product.path)


def _check_options(
    options: PredictOptions, meta: InferenceMeta, product: Product
) -> tuple[int, int]:
    """(tile, overlap) after defaults, or a ``PredictionError``."""
    if options.batch_size < 1:
        raise PredictionError(f"batch size {options.batch_size} < 1", product.path)
    return resolve_tiling(options.tile, options.overlap, meta, product)


def resolve_tiling(
    tile: int | None, overlap: int | None, meta: InferenceMeta, product: Product
) -> tuple[int, int]:
    """(tile, overlap): the model's patch size and a quarter of it by default; a tile of
    another size, or an overlap beyond half the tile, is a ``PredictionError``."""
    tile = tile or meta.patch_size
    overlap = tile // 4 if overlap is None else overlap
    if tile != meta.patch_size:
        raise PredictionError(
            f"tile {tile} differs from the model's input size {meta.patch_size}",
            product.path,
            f"use --tile {meta.patch_size}",
        )
    if not 0 <= overlap <= tile // 2:
        raise PredictionError(
            f"overlap {overlap} must lie between 0 and half the tile ({tile // 2})",
            product.path,
        )
    return tile, overlap


def _tiff_profile(product: Product, height: int, width: int) -> dict[str, Any]:
    grid = product.grid
    profile = {
        "driver": "GTiff",
        "dtype": "uint8",
        "count": 1,
        "height": height,
        "width": width,
        "transform": grid.transform,
        "nodata": NODATA,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "BIGTIFF": "IF_SAFER",
    }
    if grid.crs is not None:
        profile["crs"] = grid.crs
    return profile


def _batched(items: Sequence[int], size: int) -> Iterator[Sequence[int]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _StripWriter:
    """Writes finished rows in runs of whole blocks, so no compressed block is written twice."""

    def __init__(self, datasets: Sequence[Any], width: int):
        self.datasets = datasets
        self.width = width
        self.pending: list[list[np.ndarray]] = [[] for _ in datasets]
        self.pending_rows = 0
        self.written = 0

    def add(self, rows: Sequence[np.ndarray]) -> None:
        for buffer, block in zip(self.pending, rows, strict=True):
            buffer.append(block)
        self.pending_rows += rows[0].shape[0]
        if self.pending_rows >= BLOCK:
            self._flush((self.pending_rows // BLOCK) * BLOCK)

    def close(self) -> None:
        if self.pending_rows:
            self._flush(self.pending_rows)

    def _flush(self, count: int) -> None:
        window = Window(self.written, 0, count, self.width)
        for i, dataset in enumerate(self.datasets):
            rows = np.concatenate(self.pending[i], axis=0)
            dataset.write(rows[:count], 1, window=_rio_window(window))
            self.pending[i] = [rows[count:]] if count < len(rows) else []
        self.pending_rows -= count
        self.written += count


def _rio_window(window: Window):
    from rasterio.windows import Window as RioWindow

    return RioWindow(window.col, window.row, window.width, window.height)


@torch.inference_mode()
def predict_strips(
    product: Product,
    model: Segmenter,
    meta: InferenceMeta,
    tile: int,
    overlap: int,
    batch_size: int,
    progress: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Blend tile predictions strip by strip; yield finished rows top to bottom as
    ``(classes uint8 (rows, W), confidence float32 (rows, W), tiles run)``.

    ``classes`` holds 255 where any model band has no data. Tiles without any data are
    skipped. The model runs on its parameters' device, in eval mode.
    """
    strips = probability_strips(product, model, meta, tile, overlap, batch_size, progress)
    for probs, valid, tiles_run in strips:
        confidence, classes = probs.max(axis=0), probs.argmax(axis=0).astype(np.uint8)
        classes[~valid] = NODATA
        yield classes, confidence, tiles_run


def probability_strips(
    product: Product,
    model: Segmenter,
    meta: InferenceMeta,
    tile: int,
    overlap: int,
    batch_size: int,
    progress: bool = False,
) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """The sliding window over a whole product, strip by strip: tiles overlap by
    ``overlap`` and are blended with a ramp; yields finished rows top to bottom as
    ``(class probabilities float32 (C, rows, W), valid bool (rows, W), tiles run)``.
    ``predict`` turns them into classes; ``map`` fuses them across scenes."""
    from tqdm import tqdm

    bands = _band_indices(product, meta)
    height, width = product.grid.height, product.grid.width
    rows, cols = tile_origins(height, tile, overlap), tile_origins(width, tile, overlap)
    padded_width = max(width, tile)
    device = next(model.parameters()).device
    model.eval()

    ramp = torch.from_numpy(blend_ramp(tile, overlap)).to(device)
    tile_weight = ramp[:, None] * ramp[None, :]  # (tile, tile)
    mean = torch.tensor(meta.mean_db, device=device).view(-1, 1, 1)
    std = torch.tensor(meta.std_db, device=device).view(-1, 1, 1)
    # Accumulators for the rows of the current strip (row 0 = the strip's first row).
    probs = torch.zeros(len(meta.class_names), tile, padded_width, device=device)
    weights = torch.zeros(tile, padded_width, device=device)

    # The bar's total is known before the first read: every tile covering the scene, as the
    # summary's "of N". Tiles without data are skipped at once, so they advance it too; the
    # tiles run ("with data", the summary's other count) follow it.
    bar = tqdm(total=len(rows) * len(cols), unit="tile", disable=not progress)
    tiles_run = 0
    for index, top in enumerate(rows):
        strip_height = min(tile, height - top)
        strip = torch.full((len(bands), tile, padded_width), float("nan"))
        read = product.read_db(Window(top, 0, strip_height, width))[bands]
        strip[:, :strip_height, :width] = torch.from_numpy(np.ascontiguousarray(read))
        valid = ~torch.isnan(strip).any(dim=0)
        # No data -> band mean, i.e. 0 after standardisation (as the dataset does).
        image = torch.nan_to_num((strip.to(device) - mean) / std, nan=0.0)
        with_data = [c for c in cols if valid[:, c : c + tile].any()]
        tiles_run += len(with_data)
        bar.set_postfix_str(f"{tiles_run} with data", refresh=False)
        bar.update(len(cols) - len(with_data))
        for batch in _batched(with_data, batch_size):
            with torch.inference_mode():
                logits = model(torch.stack([image[:, :, c : c + tile] for c in batch]))
            if logits.shape[1] != probs.shape[0]:
                raise PredictionError(
                    f"the model gives {logits.shape[1]} classes, its metadata names "
                    f"{probs.shape[0]}",
                    product.path,
                    "the checkpoint's classes do not match its model",
                )
            tile_probs = torch.softmax(logits.float(), dim=1) * tile_weight
            for c, p in zip(batch, tile_probs, strict=True):
                probs[:, :, c : c + tile] += p
                weights[:, c : c + tile] += tile_weight
            bar.update(len(batch))

        # Rows above the next strip's top are final: hand them out, then shift them out.
        done = (rows[index + 1] if index + 1 < len(rows) else height) - top
        mean_probs = probs[:, :done, :width] / weights[:done, :width].clamp_min(1e-12)
        yield mean_probs.cpu().numpy(), valid[:done, :width].numpy(), len(with_data)
        probs = torch.roll(probs, -done, dims=1)
        weights = torch.roll(weights, -done, dims=0)
        probs[:, tile - done :] = 0
        weights[tile - done :] = 0
    bar.close()


def predict_product(
    product: Product,
    model: Segmenter,
    meta: InferenceMeta,
    out: str | Path,
    options: PredictOptions = PredictOptions(),
) -> PredictionResult:
    """Predict the whole of ``product`` with ``model`` and write the map to ``out`` (.tif).

    Returns the written paths and counts; raises ``PredictionError`` for bands or options
    that do not fit the model.
    """
    import rasterio

    started = time.perf_counter()
    tile, overlap = _check_options(options, meta, product)
    height, width = product.grid.height, product.grid.width
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    targets = [p for p in output_paths(out, options) if p.suffix == ".tif"]
    partials = [t.with_name(f".{t.name}.partial") for t in targets]
    profile = _tiff_profile(product, height, width)
    colours = {k: (*c, 255) for k, c in enumerate(meta.class_colours)} | {NODATA: (0, 0, 0, 0)}
    tiles = 0
    with held_native_stderr() as native:  # GDAL's words for a failed write: ours follow
        try:
            with ExitStack() as stack:
                datasets = [stack.enter_context(rasterio.open(p, "w", **profile)) for p in partials]
                datasets[0].write_colormap(1, colours)
                datasets[0].update_tags(**{f"CLASS_{k}": n for k, n in enumerate(meta.class_names)})
                datasets[0].set_band_description(1, "land-cover class")
                if options.confidence:
                    datasets[1].set_band_description(1, "probability of the class, percent")
                writer = _StripWriter(datasets, width)
                strips = predict_strips(
                    product, model, meta, tile, overlap, options.batch_size, options.progress
                )
                for classes, confidence, tiles_run in strips:
                    tiles += tiles_run
                    finished = [classes]
                    if options.confidence:
                        percent = np.round(confidence * 100).astype(np.uint8)
                        percent = np.where(classes == NODATA, NODATA, percent)
                        finished.append(percent.astype(np.uint8))
                    writer.add(finished)
                writer.close()
            for partial, target in zip(partials, targets, strict=True):
                cog = target.with_name(f".{target.name}.cog.partial")
                write_cog(partial, cog)
                os.replace(cog, target)
        except _gdal_errors() as err:  # GDAL reports a failed write (disk full) on its own terms
            detail = " ".join((native.text() or str(err)).split())[:160]
            raise PredictionError(
                f"writing the map failed ({detail})",
                out,
                hint="check the free space and permissions of its folder, then run again",
            ) from None
        finally:
            for partial, target in zip(partials, targets, strict=True):
                partial.unlink(missing_ok=True)
                target.with_name(f".{target.name}.cog.partial").unlink(missing_ok=True)

    write_class_sidecars(out, meta.class_names, meta.class_colours)
    quicklook = (
        write_map_quicklook(out, meta.class_names, meta.class_colours)
        if options.quicklook
        else None
    )
    return PredictionResult(
        map_path=out,
        confidence_path=targets[1] if options.confidence else None,
        quicklook_path=quicklook,
        tiles=tiles,
        tiles_total=len(tile_origins(height, tile, overlap))
        * len(tile_origins(width, tile, overlap)),
        pixels=height * width,
        seconds=time.perf_counter() - started,
        threads=torch.get_num_threads(),
    )


def _gdal_errors() -> tuple[type[Exception], ...]:
    """The exceptions rasterio raises for GDAL's I/O failures."""
    from rasterio._err import CPLE_BaseError
    from rasterio.errors import RasterioError

    return (RasterioError, CPLE_BaseError)


def write_cog(tiled: Path, out: Path) -> None:
    """A Cloud-Optimized GeoTIFF of the streamed map: internal overviews (nearest class,
    so a national map opens at any zoom without resampling classes into new ones), the
    colour table and class-name tags copied; GDAL's COG driver reads the map block by block."""
    from rasterio.shutil import copy as copy_raster

    copy_raster(
        tiled,
        out,
        driver="COG",
        COMPRESS="DEFLATE",
        # libdeflate's level 6 (the default) takes twice as long as 5 for 3-6 % smaller
        # class and confidence maps.
        LEVEL=5,
        BLOCKSIZE=BLOCK,
        OVERVIEW_RESAMPLING="NEAREST",
        BIGTIFF="IF_SAFER",
    )


def predict_scene(
    product_path: str | Path,
    checkpoint: str | Path,
    out: str | Path,
    options: PredictOptions = PredictOptions(),
    device: str = "cpu",
    *,
    kind: str | None = None,
    nodata: float | None = None,
) -> PredictionResult:
    """``alos2fm predict``: open any product that preparation reads (``kind`` and
    ``nodata`` as in prepare), check it is valid backscatter, load the checkpoint, claim
    the output files (``alos2fm.outputs``), predict and write the map (see
    :func:`predict_product`)."""
    from alos2fm.outputs import claim_files

    apply_threads(options.threads)
    model, meta = load_segmenter_for_inference(checkpoint, device)
    if options.compile or options.fused_attention:
        from alos2fm.models.speed import apply_speed_options

        apply_speed_options(model, options.fused_attention, options.compile)
    product, source = open_for_model(product_path, meta, checkpoint, kind=kind, nodata=nodata)
    out = Path(out)
    inputs = [Path(product_path), Path(checkpoint)]
    try:
        outputs = output_paths(out, options)
        claim_files(outputs, "predict", inputs=inputs, overwrite=options.overwrite)
        return predict_product(product, model, meta, out, options)
    finally:
        if callable(close := getattr(source, "close", None)):  # GeoTIFF readers hold a file
            close()


def open_for_model(
    product_path: str | Path,
    meta: InferenceMeta,
    checkpoint: str | Path,
    *,
    kind: str | None = None,
    nodata: float | None = None,
    validate: bool = True,
) -> tuple[Product, Product]:
    """The product as the model was trained on it: the model's bands (generic names such
    as a dB raster's DB1 open the product whole and are taken by position), checked as
    valid backscatter (``validate``: the bands and a whole read of the scene; off where
    the caller has checked them already), with the training data's multilook and speckle
    filter repeated.
    Returns (what to predict on, the reader to close)."""
    from alos2fm.data.recipe import Preprocessing
    from alos2fm.products import open_product, validate_product

    bands = bands_to_open(meta.bands)
    source = open_product(product_path, kind=kind, bands=bands, nodata=nodata)
    if validate:  # before any output: bands the model cannot take, invalid backscatter
        _band_indices(source, meta)
        validate_product(source)
    if meta.preprocessing is None:
        log.warning(
            "%s does not record the training data's preprocessing: the product is used as "
            "read (no multilook, no speckle filter)",
            checkpoint,
        )
        return source, source
    return Preprocessing.from_dict(meta.preprocessing).apply(source), source
