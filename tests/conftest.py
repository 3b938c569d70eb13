"""Shared test fixtures.

Real data lives beside the checkout in ``../shared/data`` (CI has it there too); tests
that need it skip with a clear reason when it is absent. ``ALOS2FM_SHARED_DATA`` points
elsewhere if needed.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ALOS2FM_SHARED_DATA", REPO.parent / "shared" / "data"))

# Tests run on one thread: fast, and deterministic across machines.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"real data {name!r} not found under {SHARED_DATA} (set ALOS2FM_SHARED_DATA)")
    return path


@pytest.fixture(scope="session")
def ceos_l15_dir() -> Path:
    """Real ALOS-2 L1.5 CEOS header set (no image lines)."""
    return _shared("alos2_palsar2_l15_ceos_pyrosar")


@pytest.fixture(scope="session")
def hrlulc_crop() -> Path:
    """Real JAXA HRLULC v23.12 crop, 250 m, EPSG:4326."""
    return _shared("jaxa_hrlulc_japan_v23.12_250m_crop") / (
        "JAXA_HRLULC_Japan_v23.12_250m_N34-37_E138-141.tif"
    )


@pytest.fixture(scope="session")
def flevoland_dir() -> Path:
    """Real AIRSAR L-band Flevoland T3 scene with 15-class labels."""
    return _shared("flevoland_airsar_lband_t3")


@pytest.fixture(autouse=True, scope="session")
def _one_thread() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
