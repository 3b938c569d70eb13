"""The ``alos2fm`` command line: one sub-command per pipeline stage.

Each command only parses options and hands them to its stage's entry point, imported
lazily so that ``alos2fm --help`` stays fast and a stage's heavy dependencies (torch,
rasterio) load only when that stage runs.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from alos2fm.errors import Alos2fmError

app = typer.Typer(
    name="alos2fm",
    help="ALOS-2 PALSAR-2 SAR to land-cover maps: prepare, pretrain, finetune, evaluate, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_state = {"debug": False}


@app.callback()
def _global(
    debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False,
) -> None:
    _state["debug"] = debug


# --- stage 0: products ------------------------------------------------------------------


@app.command()
def info(
    product: Annotated[Path, typer.Argument(help="Product file, CEOS VOL- file or folder.")],
) -> None:
    """Print what was parsed from a product: mode, level, date, size, CRS, CF, ..."""
    raise NotImplementedError("info")


# --- stage 1: dataset preparation ---------------------------------------------------------


@app.command()
def synth(
    out: Annotated[Path, typer.Option("--out", help="Folder for the synthetic product.")],
) -> None:
    """Write a synthetic ALOS-2-like L2.1 product and its land-cover map (for demos, tests)."""
    raise NotImplementedError("synth")


@app.command()
def prepare(
    products: Annotated[list[Path], typer.Argument(help="Products to turn into patches.")],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder.")],
) -> None:
    """Calibrate, tile, balance and split products into a patch dataset."""
    raise NotImplementedError("prepare")


def main() -> None:
    """Console entry point: user errors become one line on stderr and exit code 2."""
    try:
        app()
    except Alos2fmError as err:
        if _state["debug"]:
            raise
        print(f"alos2fm: error: {err.message}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
