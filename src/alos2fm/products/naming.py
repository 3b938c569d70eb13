"""What ALOS-2 file names say: scene, orbit, frame, date, beam mode, level, polarisation.

JAXA names every file of a product from the same two parts (``ALOS2_FACTS.md`` §2)::

    IMG-HH-ALOS2015976960-140909-FBDR1.5GUA[-F1][.tif]
    │   │  └ scene id ──────────┘ └ product id ┘ │   └ GeoTIFF products
    │   └ polarisation (IMG and BRS files only)  └ ScanSAR L1.1 sub-swath
    └ file kind: VOL, LED, IMG, TRL (CEOS), BRS (browse), or none for a folder

* scene id = ``ALOS2`` + 5-digit orbit + 4-digit frame + ``-YYMMDD`` (acquisition date);
* product id = beam mode (3 letters) + look side (R/L) + level (``1.5``) + processing
  option (G geocoded, R georeferenced, ``_`` none) + map projection (U UTM, P polar
  stereographic, ``_`` none) + orbit direction (A/D).

Product folders are named ``ALOS2015976960-140909`` or ``ALOS2015976960-140909_FBDR1.5GUA``.
The meaning of each letter is inferred from JAXA examples, not from the format document.

The PALSAR/PALSAR-2 25 m mosaic tiles follow another scheme, parsed by
:func:`parse_mosaic_name`: ``N32E119_2022_sl_HH_F02DAR.tif`` (tile, year, layer, version).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alos2fm.errors import DataError, ProductError

_SCENE = r"ALOS2(?P<orbit>\d{5})(?P<frame>\d{4})-(?P<yymmdd>\d{6})"
_PRODUCT = (
    r"(?P<mode>[A-Z]{3})(?P<look>[RL])(?P<level>\d\.\d)"
    r"(?P<option>[GR_])(?P<projection>[UPLM_])(?P<direction>[AD])"
)
_FILE_NAME = re.compile(
    rf"^(?P<kind>VOL|LED|IMG|TRL|BRS)-(?:(?P<pol>HH|HV|VH|VV)-)?"
    rf"(?P<scene>{_SCENE})-(?P<product>{_PRODUCT})"
    rf"(?:-(?P<subswath>F\d))?(?P<ext>\.tiff?|\.jpg)?$",
)
_FOLDER_NAME = re.compile(rf"^(?P<scene>{_SCENE})(?:_(?P<product>{_PRODUCT}))?$")

_LOOK_SIDE = {"R": "right", "L": "left"}
_DIRECTION = {"A": "ascending", "D": "descending"}
_OPTION = {"G": "geocoded", "R": "georeferenced", "_": None}
# U and P are seen in JAXA product ids; L and M are JAXA's other L1.5 projection choices.
_PROJECTION = {"U": "UTM", "P": "polar stereographic", "L": "Lambert", "M": "Mercator", "_": None}
# First letter of the beam mode: the acquisition mode; last letter: how many polarisations.
_MODE_FAMILY = {
    "S": "Spotlight",
    "U": "Stripmap Ultra-fine",
    "H": "Stripmap High-sensitive",
    "F": "Stripmap Fine",
    "W": "ScanSAR nominal",
    "V": "ScanSAR wide",
}
_POLARISATIONS = {"S": "single", "D": "dual", "Q": "quad"}


@dataclass(frozen=True)
class ProductName:
    """The fields of an ALOS-2 file or folder name (``None`` where the name has no such part).

    ``date`` is ISO (``2014-09-09``); ``level`` is text (``"1.5"``) because JAXA levels are
    labels, not numbers.
    """

    scene_id: str
    orbit: int
    frame: int
    date: str
    file_kind: str | None = None  # VOL, LED, IMG, TRL, BRS; None for a folder name
    polarisation: str | None = None
    product_id: str | None = None
    mode: str | None = None  # beam mode code, e.g. FBD
    look_side: str | None = None  # "right" / "left"
    level: str | None = None
    processing_option: str | None = None  # "geocoded" / "georeferenced" / None
    projection: str | None = None  # "UTM", "polar stereographic", ... / None
    orbit_direction: str | None = None  # "ascending" / "descending"
    subswath: str | None = None  # ScanSAR L1.1 IMG files: F1..F5
    extension: str = ""

    @property
    def mode_description(self) -> str | None:
        """Beam mode in words, e.g. ``Stripmap Fine, dual polarisation`` (inferred from codes)."""
        if self.mode is None:
            return None
        family = _MODE_FAMILY.get(self.mode[0], f"mode {self.mode}")
        pols = _POLARISATIONS.get(self.mode[-1])
        return f"{family}, {pols} polarisation" if pols else family

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


def parse_product_name(name: str | Path) -> ProductName:
    """Parse an ALOS-2 file name (``IMG-HH-ALOS2…-FBDR1.5GUA``) or product folder name.

    Only the base name counts, so a full path is fine. Raises ``ProductError`` when the
    name does not follow JAXA's scheme.
    """
    base = Path(name).name
    match = _FILE_NAME.match(base) or _FOLDER_NAME.match(base)
    if match is None:
        raise ProductError(
            "not an ALOS-2 product name",
            name,
            "expected e.g. IMG-HH-ALOS2015976960-140909-FBDR1.5GUA[.tif], "
            "VOL-ALOS2015976960-140909-FBDR1.5GUA or a folder ALOS2015976960-140909[_FBDR1.5GUA]",
        )
    fields = match.groupdict()
    yymmdd = fields["yymmdd"]
    # ALOS-2 launched in 2014, so every two-digit year is 20YY.
    date = f"20{yymmdd[:2]}-{yymmdd[2:4]}-{yymmdd[4:]}"
    _check_date(date, name)
    product = fields.get("product")
    return ProductName(
        scene_id=fields["scene"],
        orbit=int(fields["orbit"]),
        frame=int(fields["frame"]),
        date=date,
        file_kind=fields.get("kind"),
        polarisation=fields.get("pol"),
        product_id=product,
        mode=fields["mode"],
        look_side=_LOOK_SIDE.get(fields["look"]) if product else None,
        level=fields["level"],
        processing_option=_OPTION[fields["option"]] if product else None,
        projection=_PROJECTION[fields["projection"]] if product else None,
        orbit_direction=_DIRECTION.get(fields["direction"]) if product else None,
        subswath=fields.get("subswath"),
        extension=fields.get("ext") or "",
    )


def is_product_name(name: str | Path) -> bool:
    """True when :func:`parse_product_name` accepts ``name``."""
    try:
        parse_product_name(name)
    except ProductError:
        return False
    return True


_MOSAIC_NAME = re.compile(
    r"^(?P<tile>(?P<ns>[NS])(?P<lat>\d{2})(?P<ew>[EW])(?P<lon>\d{3}))_(?P<year>\d{2}|\d{4})_"
    r"(?P<layer>sl_(?P<pol>HH|HV|VV|VH)|mask|linci|date)"
    r"(?:_(?P<version>F\d{2}[A-Z]{3}))?(?P<ext>\.tiff?)?$"
)


@dataclass(frozen=True)
class MosaicTileName:
    """The fields of a PALSAR/PALSAR-2 25 m mosaic tile name.

    ``layer`` is ``sl_HH``/``sl_HV`` (backscatter DN), ``mask``, ``linci`` (local incidence
    angle) or ``date``; ``latitude``/``longitude`` are the signed degrees of the tile name.
    """

    tile: str
    latitude: int
    longitude: int
    year: int
    year_label: str  # the year as written in the name: "2022" or "15"
    layer: str
    polarisation: str | None
    version: str | None
    extension: str

    def sibling(self, layer: str) -> str:
        """The file name of another layer of the same tile and release (e.g. ``mask``)."""
        version = f"_{self.version}" if self.version else ""
        return f"{self.tile}_{self.year_label}_{layer}{version}{self.extension}"

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, "")}


def parse_mosaic_name(name: str | Path) -> MosaicTileName:
    """Parse a mosaic tile name: ``N32E119_2022_sl_HH_F02DAR.tif``, ``N35E139_15_mask_F02DAR``,
    or the ALOS-1 ``N35E139_10_sl_HH`` (no version). Raises ``ProductError`` otherwise."""
    base = Path(name).name
    match = _MOSAIC_NAME.match(base)
    if match is None:
        raise ProductError(
            "not a PALSAR mosaic tile name",
            name,
            "expected e.g. N32E119_2022_sl_HH_F02DAR.tif or N35E139_10_sl_HH",
        )
    f = match.groupdict()
    # Two-digit years: ALOS-1 mosaics are 2007-2010, PALSAR-2 ones 2015 onwards.
    year = int(f["year"]) if len(f["year"]) == 4 else 2000 + int(f["year"])
    return MosaicTileName(
        tile=f["tile"],
        latitude=int(f["lat"]) * (1 if f["ns"] == "N" else -1),
        longitude=int(f["lon"]) * (1 if f["ew"] == "E" else -1),
        year=year,
        year_label=f["year"],
        layer=f["layer"],
        polarisation=f["pol"],
        version=f["version"],
        extension=f["ext"] or "",
    )


def is_mosaic_name(name: str | Path) -> bool:
    """True when :func:`parse_mosaic_name` accepts ``name``."""
    return _MOSAIC_NAME.match(Path(name).name) is not None


def _check_date(iso: str, name: str | Path) -> None:
    from datetime import date

    try:
        date.fromisoformat(iso)
    except ValueError as err:
        raise ProductError(f"date {iso} in the name is not a calendar date", name) from err


def scene_names(products: Sequence[Path]) -> list[str]:
    """A name for each product's scene, as prepare's patch ids and map's scene folders
    use it: the file name without ``.tif``; products of one name in different folders
    (``a/T3``, ``b/T3``) told apart by their folder's name, then a number. The same product
    given twice is refused."""
    names: list[str] = []
    seen: set[Path] = set()
    for product in map(Path, products):
        if product.resolve() in seen:
            raise DataError("product given twice", product, hint="give each product once")
        seen.add(product.resolve())
        name = product.name
        for suffix in (".tif", ".tiff", ".TIF", ".TIFF"):
            name = name.removesuffix(suffix)
        candidates = [name, f"{product.resolve().parent.name}-{name}"]
        candidates += [f"{candidates[1]}-{n}" for n in range(2, len(names) + 3)]
        names.append(next(c for c in candidates if c not in names))
    return names
