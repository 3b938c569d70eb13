"""The ``alos2fm`` command line: one sub-command per pipeline stage.

Each command only parses options and hands them to its stage's entry point, imported
lazily so that ``alos2fm --help`` stays fast and a stage's heavy dependencies (torch,
rasterio) load only when that stage runs.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated

import typer

from alos2fm.errors import Alos2fmError, system_error

app = typer.Typer(
    name="alos2fm",
    help="ALOS-2 PALSAR-2 SAR to land-cover maps: prepare, pretrain, finetune, evaluate, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


def _print_version(value: bool) -> None:
    if value:
        from alos2fm import __version__

        print(f"alos2fm {__version__}")
        raise typer.Exit()


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            help="Print alos2fm's version and exit.",
            callback=_print_version,
            is_eager=True,
        ),
    ] = False,
) -> None:
    _state["debug"] = debug
    if not debug:
        # GDAL reports a failed read or write through rasterio's log as well as the error
        # it raises; the error reaches the user as our one line, the log would repeat it.
        logging.getLogger("rasterio").setLevel(logging.CRITICAL)
        os.environ.setdefault("CPL_LOG", os.devnull)  # GDAL's own printer, where it is used


# --- stage 0: products ------------------------------------------------------------------


_Kind = Annotated[
    str | None,
    typer.Option(
        "--kind", help="Reader to use instead of detection: ceos, dn, mosaic, t3, db, power."
    ),
]
_Nodata = Annotated[
    float | None,
    typer.Option(
        "--nodata",
        help="Value that marks no data in a dB or linear-power raster without a nodata tag, "
        "e.g. -9999 (read as NaN).",
    ),
]
_Tile = Annotated[
    int | None, typer.Option("--tile", help="Tile side, px (default: the model's patch size).")
]
_Overlap = Annotated[
    int | None, typer.Option("--overlap", help="Overlap of tiles, px (default: tile / 4).")
]
_TileBatch = Annotated[int, typer.Option("--batch-size", help="Tiles per forward pass.")]
_Threads = Annotated[
    str,
    typer.Option(
        "--threads",
        help="Threads torch computes with: N, or auto (OMP_NUM_THREADS if set, else the "
        "cores this process may use, shared among its processes).",
    ),
]


def _threads(text: str) -> int | str:
    """``--threads``: a positive number or ``auto``."""
    if text == "auto":
        return text
    if text.isdigit() and int(text) >= 1:
        return int(text)
    raise Alos2fmError(f"--threads {text!r} is not a positive number or auto", hint="e.g. 1")


def _presets(stage: str) -> str:
    """The shipped presets of a stage, for --help (their file names say the stage)."""
    from alos2fm.train.config import available_presets  # light: pydantic and yaml only

    pretraining = ("simmim", "mixmae")
    names = available_presets()
    if stage == "pretrain":
        return ", ".join(n for n in names if n.endswith(pretraining))
    return ", ".join(n for n in names if not n.endswith(pretraining))


_MOST_VALUES = 60  # rows of value counts info prints

_LabelNodata = Annotated[
    str | None,
    typer.Option(
        "--label-nodata",
        help="The label files' no-data value instead of their nodata tag, or 'none' when "
        "the tag is wrong (the value is then read through the class table).",
    ),
]


def _label_nodata(text: str | None) -> float | str:
    """``--label-nodata``: a number, ``none``, or (not given) the file's own tag."""
    if text is None:
        return "file"
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise Alos2fmError(f"--label-nodata {text!r}", hint="give a number or none") from None


@app.command()
def info(
    source: Annotated[
        Path,
        typer.Argument(
            help="Product (file, CEOS VOL- file or folder) or label source (class raster, "
            "label image, polygon layer)."
        ),
    ],
    kind: Annotated[
        str | None,
        typer.Option(
            help="Reader to use instead of detection: ceos, dn, mosaic, t3, db, power, labels."
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option("--classes", help="Class table naming a label source's values."),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option("--label-field", help="Class attribute of a polygon layer."),
    ] = None,
    label_nodata: _LabelNodata = None,
    nodata: _Nodata = None,
) -> None:
    """Print what was parsed from a product (mode, level, date, size, CRS, CF, ...) or a
    label source (kind, CRS, size or features, values with counts and class names)."""
    from rich.console import Console
    from rich.table import Table

    from alos2fm.data.labels import describe_labels, is_label_source
    from alos2fm.products import describe_product

    console = Console(width=120)
    if kind == "labels" or (kind is None and is_label_source(source)):
        nodata = _label_nodata(label_nodata)
        nodata = None if nodata == "none" else nodata
        fields, values = describe_labels(source, classes, field=label_field, nodata=nodata)
    else:
        fields, values = describe_product(source, kind=kind, nodata=nodata), []
    table = Table(title=str(source), show_header=False, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    for field, value in fields.items():
        if isinstance(value, (tuple, list)):
            value = ", ".join(f"{v:.12g}" if isinstance(v, float) else str(v) for v in value)
        table.add_row(field.replace("_", " "), str(value))
    console.print(table)
    if values:
        counts = Table(title="values", title_justify="left")
        columns = list(dict.fromkeys(key for row in values for key in row))
        for column in columns:
            counts.add_column(column, justify="right" if column in ("px", "features") else "left")
        for row in values[:_MOST_VALUES]:
            counts.add_row(*(str(row.get(column, "")) for column in columns))
        console.print(counts)
        if len(values) > _MOST_VALUES:
            print(f"... and {len(values) - _MOST_VALUES} more values (not a class raster?)")


# --- stage 1: dataset preparation ---------------------------------------------------------


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for the synthetic product.")],
    size: Annotated[int, typer.Option("--size", help="Scene width and height in pixels.")] = 2048,
    seed: Annotated[int, typer.Option("--seed", help="Random seed.")] = 0,
    looks: Annotated[float, typer.Option("--looks", help="Looks L of the speckle.")] = 1.0,
    own_labels: Annotated[
        bool,
        typer.Option(
            "--own-labels",
            help="Also write the scene as a dB GeoTIFF and an int16 water mask (0, 1, -1).",
        ),
    ] = False,
) -> None:
    """Write a synthetic ALOS-2-like L2.1 product and its land-cover map (for demos, tests)."""
    from alos2fm.data.synth import write_own_labels_example, write_synthetic_scene

    scene = write_synthetic_scene(out, size=size, seed=seed, looks=looks)
    print(f"SYNTHETIC product: {scene.product}")
    print(f"SYNTHETIC land cover: {scene.landcover}")
    if own_labels:
        example = write_own_labels_example(scene)
        print(f"SYNTHETIC dB image: {example.image}")
        print(f"SYNTHETIC water mask: {example.mask}")


_ListOpt = list[str] | None


@app.command()
def prepare(
    products: Annotated[
        list[Path] | None, typer.Argument(help="Products to turn into patches.")
    ] = None,
    bands: Annotated[
        str | None,
        typer.Option("--bands", help="Bands to keep, e.g. HH or HH,HV (default all)."),
    ] = None,
    multilook: Annotated[
        str | None,
        typer.Option("--multilook", help="Average ROWSxCOLS pixels in linear power, e.g. 2x2."),
    ] = None,
    speckle: Annotated[
        str | None, typer.Option("--speckle", help="Speckle filter: boxcar or lee (default none).")
    ] = None,
    filter_size: Annotated[
        int | None, typer.Option("--filter-size", help="Speckle filter window, px (default 5).")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Dataset folder.")] = None,
    labels: Annotated[
        list[Path] | None,
        typer.Option(
            "--labels",
            "--landcover",
            help="Label source(s): class raster tiles (any CRS), one pixel-grid label image "
            "per product (with --labels-grid pixel), or a polygon layer; repeatable.",
        ),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            "--remap",
            help="Class table: shipped name (hrlulc_v23.12_to_9, worldcover, water_mask, "
            "flevoland, ...) or YAML file (default hrlulc_v23.12_to_9).",
        ),
    ] = None,
    label_field: Annotated[
        str | None, typer.Option("--label-field", help="Class attribute of a polygon layer.")
    ] = None,
    label_nodata: _LabelNodata = None,
    labels_grid: Annotated[
        str | None,
        typer.Option(
            "--labels-grid",
            help="map (labels carry a CRS, default) or pixel (on the product's own grid).",
        ),
    ] = None,
    unknown_values: Annotated[
        str | None,
        typer.Option(
            "--unknown-values", help="Label values absent from the class table: error or ignore."
        ),
    ] = None,
    split_map: Annotated[
        list[Path] | None,
        typer.Option(
            "--split-map",
            help="Your own split instead of the block split: raster(s) of 1 train, 2 val, "
            "3 test, 0 none, on the labels' grid (one per product with --labels-grid pixel).",
        ),
    ] = None,
    cover_edges: Annotated[
        bool,
        typer.Option(
            "--cover-edges", help="Add a last row and column of patches ending on the scene's edge."
        ),
    ] = False,
    overwrite: Annotated[
        bool,
        typer.Option(
            "--overwrite",
            help="Write into a non-empty folder that is not a dataset (its files are kept).",
        ),
    ] = False,
    patch_size: Annotated[
        int | None, typer.Option("--patch-size", help="Patch side, px (default 256).")
    ] = None,
    stride: Annotated[
        int | None, typer.Option("--stride", help="Patch grid step, px (default 256).")
    ] = None,
    max_nodata: Annotated[
        float | None,
        typer.Option("--max-nodata", help="Drop patches with more no data (0-1) (default 0.1)."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", help="Processes cutting scenes in parallel (default 1)."),
    ] = None,
    dask_scheduler: Annotated[
        str | None,
        typer.Option("--dask-scheduler", help="Run scene tasks on this Dask cluster (address)."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", help="Balancing and split seed (default 0).")
    ] = None,
    balance: Annotated[
        str | None,
        typer.Option(
            "--balance",
            help="Balance preset (no_forest, forest_capped) or YAML file (default keep all).",
        ),
    ] = None,
    cap: Annotated[
        _ListOpt,
        typer.Option("--cap", help="N or median (all classes), or CLASS=N; repeatable."),
    ] = None,
    exclude_class: Annotated[
        _ListOpt, typer.Option("--exclude-class", help="Class id or name to leave out.")
    ] = None,
    block_size: Annotated[
        float | None, typer.Option("--block-size", help="Split block side, px (default 4096).")
    ] = None,
    buffer: Annotated[
        float | None,
        typer.Option("--buffer", help="Minimum gap between splits, px (default 256)."),
    ] = None,
    split_fractions: Annotated[
        str | None, typer.Option("--split-fractions", help="train,val,test (default 0.8,0.1,0.1).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="YAML config; options given here override it.")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bars.")
    ] = True,
    kind: _Kind = None,
    nodata: _Nodata = None,
) -> None:
    """Calibrate, tile, balance and split products into a patch dataset."""
    from alos2fm.data.prepare import prepare_config, run_prepare

    cfg = prepare_config(
        config,
        products=products or None,
        out=out,
        labels=labels or None,
        classes=classes,
        label_field=label_field,
        label_nodata=_label_nodata(label_nodata) if label_nodata is not None else None,
        labels_grid=labels_grid,
        unknown_values=unknown_values,
        overwrite=overwrite or None,
        split_map=split_map or None,
        cover_edges=cover_edges or None,
        patch_size=patch_size,
        stride=stride,
        max_nodata=max_nodata,
        workers=workers,
        dask_scheduler=dask_scheduler,
        seed=seed,
        bands=bands.split(",") if bands else None,
        multilook=_looks(multilook) if multilook else None,
        speckle=speckle,
        filter_size=filter_size,
        balance_preset=balance,
        caps=cap,
        exclude=exclude_class,
        block_size=block_size,
        buffer=buffer,
        split_fractions=split_fractions,
        progress=progress,
        kind=kind,
        nodata=nodata,
    )
    result = run_prepare(cfg)
    if result.class_pixels is not None:
        _print_class_pixels(result.class_pixels)
    for warning in _split_warnings(result):
        print(f"warning: {warning}", file=sys.stderr)
    splits = ", ".join(f"{name} {n}" for name, n in result.splits.items())
    print(
        f"{result.patches} patches ({splits}) of {result.candidates} candidates "
        f"written to {result.out}"
    )


def _split_warnings(result) -> list[str]:
    """One line per split that lacks something: no patch at all (what fine-tuning and
    evaluation need), or classes without a labelled pixel."""
    lines = []
    for split in ("train", "val", "test"):
        if result.splits.get(split, 0) == 0:
            lines.append(
                f"the {split} split has no patch (fine-tuning needs train and val, evaluation "
                f"test): use a smaller --block-size, add scenes, or give --split-map"
            )
            continue
        empty = [name for name, where in result.empty_classes() if where == split]
        if empty:
            lines.append(f"no labelled pixel in {split} for {', '.join(map(repr, empty))}")
    return lines


def _print_class_pixels(table) -> None:
    """The labelled pixels of each class in each split, as prepare wrote them."""
    from rich.console import Console
    from rich.table import Table

    shown = Table(title="labelled pixels per class and split", title_justify="left")
    shown.add_column("class")
    for split in table.columns:
        shown.add_column(split, justify="right")
    for name, row in table.iterrows():
        shown.add_row(str(name), *(f"{int(v):,}" if v else "[red]0[/red]" for v in row))
    Console(width=120).print(shown)


def _looks(text: str) -> tuple[int, int]:
    """``"2x2"`` or ``"2"`` -> (rows, cols)."""
    from alos2fm.errors import Alos2fmError

    parts = text.lower().split("x")
    try:
        looks = tuple(int(p) for p in parts) * (2 if len(parts) == 1 else 1)
    except ValueError:
        looks = ()
    if len(looks) != 2 or min(looks) < 1:
        raise Alos2fmError(f"--multilook {text!r} is not ROWSxCOLS", hint="e.g. 2x2 or 4x1")
    return looks


# --- stages 2-3: pretraining, fine-tuning, evaluation --------------------------------------

_Data = Annotated[Path, typer.Option("--data", help="Prepared dataset folder (alos2fm prepare).")]
_AllowPartialEncoder = Annotated[
    bool,
    typer.Option(
        "--allow-partial-encoder",
        help="Fine-tune even if the encoder file leaves tensors at random init.",
    ),
]
_Overwrite = Annotated[
    bool,
    typer.Option(
        "--overwrite",
        help="Replace outputs an earlier alos2fm run wrote here (files of others never).",
    ),
]
_Out = Annotated[Path, typer.Option("--out", help="Run folder (config, checkpoints, figures).")]
_Resume = Annotated[
    bool, typer.Option("--resume", help="Continue the run in --out from checkpoints/last.ckpt.")
]
_Devices = Annotated[str | None, typer.Option("--devices", help="Devices per node (N or auto).")]
_NumNodes = Annotated[int | None, typer.Option("--num-nodes", help="Nodes (torchrun/SLURM).")]
_Accelerator = Annotated[str | None, typer.Option("--accelerator", help="cpu, gpu or auto.")]
_Strategy = Annotated[
    str | None, typer.Option("--strategy", help="auto, ddp, ddp_spawn, fsdp, ...")
]
_Precision = Annotated[
    str | None, typer.Option("--precision", help="32-true, bf16-mixed or 16-mixed.")
]
_Epochs = Annotated[int | None, typer.Option("--epochs", help="Schedule length in epochs.")]
_MaxSteps = Annotated[
    int | None, typer.Option("--max-steps", help="Budget in optimiser steps (instead of epochs).")
]
_BatchSize = Annotated[int | None, typer.Option("--batch-size", help="Patches per process.")]
_Set = Annotated[
    list[str] | None,
    typer.Option("--set", help="Config override key=value (repeatable), e.g. optim.base_lr=2e-4."),
]


def _run_flags(
    devices, num_nodes, accelerator, strategy, precision, epochs, batch_size, max_steps=None
) -> dict:
    """Config keys of the options that pretrain and finetune share. ``--epochs`` alone
    turns a preset's step budget off, and its step-interval validation with it (the run is
    as long as it says and validates every epoch)."""
    by_epochs = epochs is not None and max_steps is None
    return {
        "schedule.max_steps": "null" if by_epochs else max_steps,
        "trainer.devices": devices,
        "trainer.num_nodes": num_nodes,
        "trainer.accelerator": accelerator,
        "trainer.strategy": strategy,
        "trainer.precision": precision,
        "schedule.epochs": epochs,
        "data.batch_size": batch_size,
    } | ({"trainer.val_every_n_steps": "null"} if by_epochs else {})


def _training_config(
    stage: str, preset: str | None, out: Path, resume: bool, flags: dict, sets: list[str] | None
):
    """Defaults <- preset (on --resume: the run's config.yaml) <- flags <- --set."""
    from alos2fm.train.config import resolve_config

    overrides = [f"{key}={value}" for key, value in flags.items() if value is not None]
    overrides += sets or []
    if resume and (out / "config.yaml").is_file():
        preset = str(out / "config.yaml")
    return resolve_config(stage, preset, overrides)


@app.command()
def pretrain(
    data: _Data,
    out: _Out,
    method: Annotated[
        str | None, typer.Option("--method", help="simmim or mixmae (default: the preset's).")
    ] = None,
    weighting: Annotated[
        str | None, typer.Option("--weighting", help="none or sar (SAR-W loss weights).")
    ] = None,
    preset: Annotated[
        str | None, typer.Option("--preset", help=f"Preset ({_presets('pretrain')}) or YAML file.")
    ] = None,
    resume: _Resume = False,
    devices: _Devices = None,
    num_nodes: _NumNodes = None,
    accelerator: _Accelerator = None,
    strategy: _Strategy = None,
    precision: _Precision = None,
    epochs: _Epochs = None,
    max_steps: _MaxSteps = None,
    batch_size: _BatchSize = None,
    set_: _Set = None,
) -> None:
    """Self-supervised pretraining (SimMIM or MixMAE, optionally SAR-W weighted)."""
    flags = {"method": method, "weighting.kind": weighting} | _run_flags(
        devices, num_nodes, accelerator, strategy, precision, epochs, batch_size, max_steps
    )
    cfg = _training_config("pretrain", preset, out, resume, flags, set_)
    from alos2fm.train.pretrain import run_pretrain  # torch loads here, after the config is checked

    encoder = run_pretrain(cfg, data, out, resume=resume)
    print(f"encoder written to {encoder}")


@app.command()
def finetune(
    data: _Data,
    out: _Out,
    preset: Annotated[
        str | None, typer.Option("--preset", help=f"Preset ({_presets('finetune')}) or YAML file.")
    ] = None,
    encoder: Annotated[
        Path | None,
        typer.Option("--encoder", help="Pretrained encoder.safetensors (default: random init)."),
    ] = None,
    allow_partial_encoder: _AllowPartialEncoder = False,
    label_fraction: Annotated[
        float | None,
        typer.Option("--label-fraction", help="Train on this seeded fraction of the patches."),
    ] = None,
    label_budget: Annotated[
        str | None,
        typer.Option(
            "--label-budget",
            help="Train on a seeded, nested subset of the training labels: a fraction of "
            "the labelled pixels ('1%', 0.01) or k parcels per class ('k1').",
        ),
    ] = None,
    resume: _Resume = False,
    devices: _Devices = None,
    num_nodes: _NumNodes = None,
    accelerator: _Accelerator = None,
    strategy: _Strategy = None,
    precision: _Precision = None,
    epochs: _Epochs = None,
    max_steps: _MaxSteps = None,
    batch_size: _BatchSize = None,
    set_: _Set = None,
) -> None:
    """Fine-tune encoder + UPerNet for segmentation; score the test split with the best epoch."""
    flags = {"data.label_fraction": label_fraction, "data.label_budget": label_budget} | _run_flags(
        devices, num_nodes, accelerator, strategy, precision, epochs, batch_size, max_steps
    )
    cfg = _training_config("finetune", preset, out, resume, flags, set_)
    from alos2fm.train.finetune import run_finetune  # torch loads here, after the config is checked

    best = run_finetune(
        cfg, data, out, encoder=encoder, resume=resume, allow_partial_encoder=allow_partial_encoder
    )
    print(f"best checkpoint {best}; test scores in {out / 'test' / 'metrics.json'}")


@app.command("lr-sweep")
def lr_sweep(
    data: _Data,
    out: _Out,
    rates: Annotated[
        str,
        typer.Option("--rates", help="Candidate base LRs, comma-separated, e.g. 3e-3,1e-2,3e-2."),
    ],
    preset: Annotated[
        str | None, typer.Option("--preset", help=f"Preset ({_presets('finetune')}) or YAML file.")
    ] = None,
    encoder: Annotated[
        Path | None,
        typer.Option("--encoder", help="The encoder the rate is for (default: random init)."),
    ] = None,
    allow_partial_encoder: _AllowPartialEncoder = False,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", help="Budget of each run (use the real run's).")
    ] = None,
    set_: _Set = None,
) -> None:
    """Choose the fine-tuning LR on validation mIoU, for one initialisation."""
    from alos2fm.errors import Alos2fmError

    try:
        candidates = [float(r) for r in rates.split(",")]
    except ValueError:
        raise Alos2fmError(
            f"--rates {rates!r} is not a list of numbers", hint="e.g. 3e-3,1e-2"
        ) from None
    flags = {"schedule.max_steps": max_steps}
    cfg = _training_config("finetune", preset, out, False, flags, set_)
    from alos2fm.train.sweep import run_lr_sweep  # torch loads here, after the config is checked

    result = run_lr_sweep(
        cfg, data, out, candidates, encoder=encoder, allow_partial_encoder=allow_partial_encoder
    )
    for rate, score in zip(result.rates, result.best_val_miou, strict=True):
        print(f"base_lr {rate:g}: best validation mIoU {score:.4f}")
    print(f"best base_lr {result.best_rate:g}; summary in {result.summary}")


@app.command()
def evaluate(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Fine-tuned .ckpt file.")],
    data: _Data,
    out: Annotated[Path, typer.Option("--out", help="Folder for metrics.json and figures.")],
    split: Annotated[str, typer.Option("--split", help="train, val or test.")] = "test",
    overwrite: _Overwrite = False,
    threads: _Threads = "auto",
) -> None:
    """Score a fine-tuned checkpoint: metrics.json, confusion matrix and per-class IoU PNGs."""
    from alos2fm.train.finetune import run_evaluate

    metrics = run_evaluate(checkpoint, data, split, out, overwrite, _threads(threads))
    print(f"metrics written to {metrics}")


@app.command()
def probe(
    data: _Data,
    out: Annotated[Path, typer.Option("--out", help="Folder for probe.json and probe.csv.")],
    encoder: Annotated[
        list[str],
        typer.Option(
            "--encoder",
            help="encoder.safetensors to probe, or 'random'; repeatable (first = reference).",
        ),
    ],
    preset: Annotated[
        str | None,
        typer.Option(
            "--preset", help="Model of 'random' when no file is given (a finetune preset)."
        ),
    ] = None,
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per encoder.")] = 10,
    classifier: Annotated[str, typer.Option("--classifier", help="linear or rf.")] = "linear",
    train_pixels: Annotated[
        int, typer.Option("--train-pixels", help="Labelled training pixels drawn per seed.")
    ] = 20000,
    eval_pixels: Annotated[
        int, typer.Option("--eval-pixels", help="Labelled pixels scored per split and seed.")
    ] = 200000,
    overwrite: _Overwrite = False,
) -> None:
    """Per-pixel classifier on frozen encoder features: compare encoders over many seeds."""
    from rich.console import Console
    from rich.table import Table

    from alos2fm.evaluation.probe import ProbeSettings, probe_into
    from alos2fm.threads import apply_threads

    apply_threads("auto")  # OMP_NUM_THREADS, else this machine's cores

    architecture = None
    if preset is not None:
        from alos2fm.train.config import resolve_config

        architecture = resolve_config("finetune", preset).model.encoder_kwargs()
    settings = ProbeSettings(
        seeds=seeds, classifier=classifier, train_pixels=train_pixels, eval_pixels=eval_pixels
    )
    _, summary = probe_into(out, data, encoder, settings, architecture, overwrite)
    table = Table(title=f"frozen-feature probe ({classifier}), test mIoU over {seeds} seeds")
    for column in ("encoder", "mIoU mean ± std", "paired diff", "p"):
        table.add_column(column)
    for entry in summary:
        diff = next((v for k, v in entry.items() if k.startswith("diff_to_")), None)
        table.add_row(
            entry["encoder"],
            f"{entry['miou_mean']:.3f} ± {entry['miou_std']:.3f}",
            "" if diff is None else f"{diff:+.3f}",
            "" if diff is None else f"{entry['p_value']:.3g}",
        )
    Console(width=120).print(table)
    print(f"probe results written to {out / 'probe.json'}")


@app.command()
def compare(
    out: Annotated[Path, typer.Option("--out", help="Folder for results and report.md.")],
    plan_file: Annotated[
        Path | None,
        typer.Option("--plan", help="A YAML plan (options given here override its fields)."),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option("--data", help="Prepared dataset; '{seed}' in it: one dataset per seed."),
    ] = None,
    arms: Annotated[
        str | None,
        typer.Option(
            "--arms",
            help="Comma list of rf, unet, swin, swin=ENCODER, probe[=ENCODER]; "
            "name one with name:kind=…; the first is the reference.",
        ),
    ] = None,
    budgets: Annotated[
        str | None,
        typer.Option("--budgets", help="Label budgets, e.g. k1,k3,1%,100% (k = parcels/class)."),
    ] = None,
    seeds: Annotated[int | None, typer.Option("--seeds", help="Scored seeds (0..N-1).")] = None,
    tuning_seeds: Annotated[
        str | None,
        typer.Option("--tuning-seeds", help="Seeds that choose the rates, never scored."),
    ] = None,
    steps: Annotated[
        int | None, typer.Option("--steps", help="One step budget for every network arm.")
    ] = None,
    rates: Annotated[
        str | None,
        typer.Option(
            "--rates",
            help="Candidate base LRs of every network arm (default: its preset's ×1/3, 1, 3).",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Runs at once (local processes).")
    ] = None,
    dask_scheduler: Annotated[
        str | None, typer.Option("--dask-scheduler", help="Run on this Dask cluster.")
    ] = None,
) -> None:
    """Which model for these labels? Every arm on the same seeded label budgets, rates
    tuned per arm on separate seeds, compared seed by seed: results.csv and report.md."""
    from alos2fm.compare.plan import build_plan, parse_arms, read_plan, with_rates

    given = {
        "data": data,
        "budgets": budgets.split(",") if budgets else None,
        "seeds": list(range(seeds)) if seeds is not None else None,
        "tuning_seeds": [int(s) for s in tuning_seeds.split(",")] if tuning_seeds else None,
        "steps": steps,
        "workers": workers,
    }
    given = {key: value for key, value in given.items() if value is not None}
    if arms:
        given["arms"] = parse_arms(arms)
    if plan_file is not None:
        plan = read_plan(plan_file, given)
        if rates:
            plan = with_rates(plan, rates)
    else:
        missing = [o for o in ("data", "arms", "budgets", "seeds") if o not in given]
        if missing:
            raise Alos2fmError(
                f"compare needs --{', --'.join(missing)} (or --plan FILE)",
                hint="e.g. alos2fm compare --data ds --arms rf,unet,swin --budgets k1,100% "
                "--seeds 5 --out cmp",
            )
        plan = build_plan(given)
        if rates:
            plan = with_rates(plan, rates)
    from alos2fm.compare.run import run_compare  # torch loads here, after the plan is checked

    def finished(row: dict, done: int, total: int) -> None:
        score = row.get("test_miou") if row["role"] == "scored" else row.get("val_miou")
        what = "test" if row["role"] == "scored" else "val"
        rate = f" lr {row['rate']:g}" if row.get("rate") else ""
        print(
            f"[{done}/{total}] {row['role']} {row['arm']} {row['budget']} seed {row['seed']}"
            f"{rate}: {what} mIoU {score:.3f} ({row['seconds']:.0f} s)",
            flush=True,
        )

    result = run_compare(plan, out, dask_scheduler, finished)
    print(f"report written to {result.report}")


# --- stage 4: full-scene prediction and deployment ----------------------------------------


@app.command()
def predict(
    product: Annotated[Path, typer.Argument(help="Product to map (any that prepare reads).")],
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="Fine-tuned .ckpt file.")],
    out: Annotated[Path, typer.Option("--out", help="Map GeoTIFF to write, e.g. map.tif.")],
    tile: _Tile = None,
    overlap: _Overlap = None,
    batch_size: _TileBatch = 8,
    confidence: Annotated[
        bool, typer.Option("--confidence", help="Also write <out>_confidence.tif (percent).")
    ] = False,
    quicklook: Annotated[
        bool, typer.Option("--quicklook/--no-quicklook", help="Write a PNG next to the map.")
    ] = True,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:1, mps, ...")] = "cpu",
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar.")
    ] = True,
    compile: Annotated[
        bool, typer.Option("--compile", help="torch.compile the model (pays on large scenes).")
    ] = False,
    fused_attention: Annotated[
        bool, typer.Option("--fused-attention", help="timm's fused attention kernels.")
    ] = False,
    kind: _Kind = None,
    nodata: _Nodata = None,
    overwrite: _Overwrite = False,
    threads: _Threads = "auto",
) -> None:
    """Map a whole scene: sliding window with blending, streamed to a georeferenced GeoTIFF."""
    from alos2fm.evaluation.predict import PredictOptions, predict_scene

    options = PredictOptions(
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        confidence=confidence,
        quicklook=quicklook,
        progress=progress,
        compile=compile,
        fused_attention=fused_attention,
        overwrite=overwrite,
        threads=_threads(threads),
    )
    result = predict_scene(
        product, checkpoint, out, options, device=device, kind=kind, nodata=nodata
    )
    print(
        f"map written to {result.map_path} ({result.tiles} tiles with data of "
        f"{result.tiles_total}, {result.seconds:.1f} s, {result.threads} threads)"
    )
    for extra in (result.confidence_path, result.quicklook_path):
        if extra is not None:
            print(f"also {extra}")


@app.command("map")
def map_region(
    products: Annotated[
        list[Path] | None, typer.Argument(help="Products to map (any that prepare reads).")
    ] = None,
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Fine-tuned .ckpt file.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Folder for the region's map.")] = None,
    products_from: Annotated[
        Path | None,
        typer.Option("--products-from", help="A text file of product paths, one per line."),
    ] = None,
    crs: Annotated[
        str | None,
        typer.Option("--crs", help="Map CRS, e.g. EPSG:6691 (default: equal-area, centred)."),
    ] = None,
    resolution: Annotated[
        float | None,
        typer.Option("--resolution", help="Pixel size in CRS units (default: finest scene's)."),
    ] = None,
    tile: _Tile = None,
    overlap: _Overlap = None,
    batch_size: _TileBatch = 8,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, ... (per worker)")] = "cpu",
    kind: _Kind = None,
    nodata: _Nodata = None,
    edge: Annotated[
        int | None,
        typer.Option(
            "--edge", help="Scene pixels over which a scene's weight rises from its edge."
        ),
    ] = None,
    file_side: Annotated[
        int | None,
        typer.Option(
            "--file-side",
            help="Largest map file side, px (a multiple of 1024); beyond it: tiles + VRT.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Local processes mapping scenes (default 1).")
    ] = None,
    dask_scheduler: Annotated[
        str | None,
        typer.Option("--dask-scheduler", help="Map scenes on this Dask cluster (address)."),
    ] = None,
    overwrite: _Overwrite = False,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Progress bar.")
    ] = True,
    threads: Annotated[
        str,
        typer.Option(
            "--threads",
            help="Threads per worker: N, or auto (OMP_NUM_THREADS if set, else this "
            "machine's cores shared among --workers).",
        ),
    ] = "auto",
) -> None:
    """Map a region: every scene as predict maps it, fused onto one grid (weighted mean of
    the class probabilities across overlaps) into one map, its confidence and scenes.csv."""
    from alos2fm.evaluation.region import map_config, run_map

    listed = list(products or [])
    if products_from is not None:
        try:
            lines = products_from.read_text().splitlines()
        except OSError as err:
            raise Alos2fmError(f"cannot read: {err.strerror}", products_from) from None
        listed += [
            Path(line.strip()) for line in lines if line.strip() and not line.startswith("#")
        ]
    if not listed or checkpoint is None or out is None:
        raise Alos2fmError(
            "map needs products, --checkpoint and --out", hint="see alos2fm map --help"
        )
    cfg = map_config(
        products=listed,
        checkpoint=checkpoint,
        out=out,
        crs=crs,
        resolution=resolution,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        device=device,
        kind=kind,
        nodata=nodata,
        edge_px=edge,
        file_side=file_side,
        workers=workers,
        dask_scheduler=dask_scheduler,
        overwrite=overwrite,
        progress=progress,
        threads=_threads(threads),
    )
    result = run_map(cfg)
    mapped = sum(r.status == "mapped" for r in result.scenes)
    print(
        f"map of {len(result.scenes)} scenes ({mapped} mapped, "
        f"{len(result.scenes) - mapped} reused) written to {result.map_path} "
        f"({result.grid.width} x {result.grid.height} px of {result.grid.resolution:g}, "
        f"{result.seconds:.1f} s); also {result.confidence_path}, {out / 'scenes.csv'}"
    )


@app.command()
def assess(
    map_path: Annotated[Path, typer.Argument(help="Class map GeoTIFF (alos2fm predict).")],
    out: Annotated[
        Path,
        typer.Option(
            "--out", help="Folder for the assessment, or the sample's .gpkg with --sample."
        ),
    ],
    reference: Annotated[
        Path | None,
        typer.Option(
            "--reference",
            help="Reference: points or polygons (GeoPackage, Shapefile, GeoJSON) or a class "
            "raster on any grid.",
        ),
    ] = None,
    label_field: Annotated[
        str | None,
        typer.Option("--label-field", help="Attribute holding the reference class (vectors)."),
    ] = None,
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes",
            help="Class table reading the reference values (default: the map's classes, "
            "named by id or name).",
        ),
    ] = None,
    sample: Annotated[
        int | None,
        typer.Option("--sample", help="Draw N sample points to label instead of assessing."),
    ] = None,
    design: Annotated[str, typer.Option("--design", help="Sampling design.")] = "stratified",
    allocation: Annotated[
        str, typer.Option("--allocation", help="proportional (to mapped area) or equal.")
    ] = "proportional",
    min_per_class: Annotated[
        int, typer.Option("--min-per-class", help="Samples at least per mapped class.")
    ] = 50,
    seed: Annotated[int, typer.Option("--seed", help="Random seed of the sample.")] = 0,
    overwrite: _Overwrite = False,
) -> None:
    """Accuracy and area of a map from a reference sample (Olofsson et al. 2014), or draw a
    stratified random sample to label (--sample N)."""
    from alos2fm.evaluation.assessment import run_assess, run_sample

    if (reference is None) == (sample is None):
        raise Alos2fmError("give one of --reference and --sample", hint="see assess --help")
    if sample is not None:
        path, per_class = run_sample(
            map_path,
            out,
            sample,
            design=design,
            allocation=allocation,
            min_per_class=min_per_class,
            seed=seed,
            classes=classes,
            overwrite=overwrite,
        )
        print(
            f"{int(per_class.sum())} samples written to {path} (per class: "
            f"{', '.join(map(str, per_class.tolist()))}); fill in 'reference', then run "
            f"alos2fm assess {map_path} --reference {path} --label-field reference --out DIR"
        )
        return
    assert reference is not None
    result = run_assess(
        map_path, reference, out, label_field=label_field, classes=classes, overwrite=overwrite
    )
    overall = result.assessment.overall
    print(
        f"overall accuracy {overall.value:.3f} ± {overall.ci95:.3f} from "
        f"{result.record['samples']} samples; wrote {', '.join(str(p) for p in result.paths)}"
    )


@app.command("import-weights")
def import_weights(
    weights: Annotated[Path, typer.Argument(help="A released .pth file of the method's authors.")],
    out: Annotated[Path, typer.Option("--out", help="Folder for the converted files.")],
    format_: Annotated[
        str,
        typer.Option(
            "--format", help="auto, simmim (encoder), mixmae (encoder) or simmim-upernet."
        ),
    ] = "auto",
    classes: Annotated[
        str | None,
        typer.Option(
            "--classes", help="Class table naming the segmenter's classes in index order."
        ),
    ] = None,
    adapt_channels: Annotated[
        str | None,
        typer.Option(
            "--adapt-channels",
            help="sum: feed one band (HH) to a multi-channel encoder by summing its patch "
            "kernel over the channels. A heuristic, never the default.",
        ),
    ] = None,
    statistics: Annotated[
        str | None,
        typer.Option("--statistics", help="MixMAE: benv1 or benv2 (default: from the name)."),
    ] = None,
    overwrite: _Overwrite = False,
) -> None:
    """Convert the authors' released weights: encoder.safetensors + encoder.json for
    finetune --encoder, or segmenter.ckpt for predict, evaluate and export."""
    from alos2fm.interop.authors import FORMATS
    from alos2fm.interop.importer import import_weights as run_import

    if format_ not in ("auto", *FORMATS):
        raise Alos2fmError(f"--format {format_!r}", hint=f"use auto or one of {FORMATS}")
    if adapt_channels not in (None, "sum"):
        raise Alos2fmError(f"--adapt-channels {adapt_channels!r}", hint="use sum")
    result = run_import(weights, out, format_, classes, adapt_channels, statistics, overwrite)
    print(result.report, end="")
    for path in result.files:
        print(f"wrote {path}")


@app.command()
def export(
    out: Annotated[Path, typer.Option("--out", help="Folder for the exported files.")],
    checkpoint: Annotated[
        Path | None, typer.Option("--checkpoint", help="Fine-tuned .ckpt file.")
    ] = None,
    encoder: Annotated[
        Path | None,
        typer.Option("--encoder", help="Pretrained encoder.safetensors (encoder.json beside it)."),
    ] = None,
    overwrite: _Overwrite = False,
) -> None:
    """Export a fine-tuned segmenter (segmenter.safetensors, segmenter.onnx, meta.json) or a
    pretrained encoder; both also as a timm / Hugging Face hub folder with a model card."""
    from alos2fm.evaluation.export import export_pretrained_encoder, export_segmenter

    if (checkpoint is None) == (encoder is None):
        raise Alos2fmError("give one of --checkpoint and --encoder", hint="see export --help")
    if checkpoint is not None:
        result = export_segmenter(checkpoint, out, overwrite)
        files = [result.safetensors, result.onnx, result.meta, *result.timm]
    else:
        files = export_pretrained_encoder(encoder, out, overwrite)
    for path in files:
        print(f"wrote {path}")


def main() -> None:
    """Console entry point: user errors, and what the system refuses (a full disk, a
    read-only folder), become one line on stderr and exit code 2."""
    try:
        app()
    except (Alos2fmError, OSError) as err:
        if _state["debug"]:
            raise
        error = err if isinstance(err, Alos2fmError) else system_error(err)
        print(f"alos2fm: error: {error.message}", file=sys.stderr)
        sys.exit(getattr(error, "exit_code", 2))  # a preempted run exits 128 + signal


if __name__ == "__main__":
    main()
