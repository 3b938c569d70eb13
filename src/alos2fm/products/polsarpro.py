"""PolSARpro T3 coherency-matrix folders (e.g. the AIRSAR L-band Flevoland scene).

A T3 folder holds one ENVI file per matrix element (``T11.bin`` + ``T11.bin.hdr``, ...),
float32 linear power. Under the Pauli basis the co- and cross-polarised intensities are

    HH = (T11 + T22 + 2·Re T12) / 2,   VV = (T11 + T22 − 2·Re T12) / 2,   HV = T33 / 2,

already calibrated linear power: no DN → σ0 factor applies. Values ≤ 0 (numerical noise
in the multi-looked matrix) are treated as no data rather than clipped, so they never
reach the model as an arbitrary floor.

The ENVI ``map info`` of PolSARpro exports is a placeholder (1 m pixels at 0, 0), so the
grid is a pixel grid without a CRS.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from alos2fm.errors import ProductError
from alos2fm.products.base import RasterGrid, Window
from alos2fm.products.calibration import power_to_db

# Which T3 elements each polarisation needs, and how to combine them (linear power).
_ELEMENTS = {"HH": ("T11", "T22", "T12_real"), "VV": ("T11", "T22", "T12_real"), "HV": ("T33",)}


def _intensity(pol: str, t: dict[str, np.ndarray]) -> np.ndarray:
    if pol == "HH":
        return (t["T11"] + t["T22"] + 2.0 * t["T12_real"]) / 2.0
    if pol == "VV":
        return (t["T11"] + t["T22"] - 2.0 * t["T12_real"]) / 2.0
    return t["T33"] / 2.0


def _read_envi_header(path: Path) -> dict[str, str]:
    text = path.read_text(errors="replace")
    if not text.lstrip().startswith("ENVI"):
        raise ProductError("not an ENVI header", path)
    return {k.strip().lower(): v.strip() for k, v in re.findall(r"^([^=\n]+)=(.*)$", text, re.M)}


def is_t3_folder(path: Path) -> bool:
    """True for a folder (or a file inside one) holding PolSARpro ``T11.bin``."""
    folder = path if path.is_dir() else path.parent
    return (folder / "T11.bin").exists() and (folder / "T11.bin.hdr").exists()


class T3Product:
    """Backscatter in dB from a PolSARpro T3 folder, one band per requested polarisation."""

    quantity = "sigma0"
    date: str | None = None

    def __init__(self, path: str | Path, bands: tuple[str, ...] = ("HH", "HV", "VV")):
        folder = Path(path)
        folder = folder if folder.is_dir() else folder.parent
        unknown = [b for b in bands if b not in _ELEMENTS]
        if unknown:
            raise ProductError(
                f"polarisation(s) {unknown} not derivable from T3", folder, "use HH, HV or VV"
            )
        self.path = folder
        self.bands = tuple(bands)
        header = _read_envi_header(folder / "T11.bin.hdr")
        height, width = int(header["lines"]), int(header["samples"])
        if header.get("data type") != "4" or header.get("byte order", "0") != "0":
            raise ProductError("expected float32 little-endian T3 elements", folder / "T11.bin")
        self.grid = RasterGrid(height=height, width=width, crs=None)
        self._elements: dict[str, np.memmap] = {}
        for name in sorted({e for b in self.bands for e in _ELEMENTS[b]}):
            file = folder / f"{name}.bin"
            if not file.exists():
                raise ProductError(f"missing T3 element {name}.bin", folder)
            if file.stat().st_size != height * width * 4:
                raise ProductError(
                    f"size {file.stat().st_size} B, expected {height * width * 4} B "
                    f"({height} x {width} float32): truncated or wrong file",
                    file,
                )
            self._elements[name] = np.memmap(file, "<f4", mode="r", shape=(height, width))

    def read_db(self, window: Window) -> np.ndarray:
        """float32 (bands, height, width) in dB; NaN where the intensity is ≤ 0 or not finite."""
        rows = slice(window.row, window.row + window.height)
        cols = slice(window.col, window.col + window.width)
        t = {k: np.asarray(v[rows, cols], dtype=np.float64) for k, v in self._elements.items()}
        out = np.empty((len(self.bands), window.height, window.width), np.float32)
        for i, pol in enumerate(self.bands):
            power = _intensity(pol, t)
            power[~(power > 0)] = np.nan
            out[i] = power_to_db(power)
        return out

    def describe(self) -> dict[str, Any]:
        return {
            "format": "PolSARpro T3 (linear power, already calibrated)",
            "path": str(self.path),
            "bands": list(self.bands),
            "size": f"{self.grid.width} x {self.grid.height} (pixels x lines)",
            "crs": "none (pixel grid)",
        }
