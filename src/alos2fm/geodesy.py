"""The equal-area plane that both the dataset split and a region's map use.

A module of its own, with nothing heavier than numpy, because ``alos2fm map`` needs the
plane before anything else and importing the split (pandas) cost it 0.4 s of CPU.
"""

from __future__ import annotations

import math

import numpy as np


def equal_area_plane(lon: np.ndarray, lat: np.ndarray) -> str:
    """The Lambert azimuthal equal-area plane centred on the points (whole degrees), as a
    PROJ string: the split's frame, and the default grid of a region's map."""
    lat0, lon0 = mean_direction(lon, lat)
    return f"+proj=laea +lat_0={lat0:g} +lon_0={lon0:g} +datum=WGS84 +units=m +no_defs"


def mean_direction(lon: np.ndarray, lat: np.ndarray) -> tuple[float, float]:
    """(lat, lon) of the mean unit vector of the points, rounded to whole degrees.

    A vector mean, not a mean of longitudes, so that data across the antimeridian are
    centred where they lie. Rounding makes the plane independent of the order in which
    the patches are summed, and easy to state in the log.
    """
    lon_r, lat_r = np.radians(lon), np.radians(lat)
    x = (np.cos(lat_r) * np.cos(lon_r)).sum()
    y = (np.cos(lat_r) * np.sin(lon_r)).sum()
    z = np.sin(lat_r).sum()
    lat0 = round(math.degrees(math.atan2(z, math.hypot(x, y))))
    lon0 = round(math.degrees(math.atan2(y, x)))
    return float(lat0), float(lon0)
