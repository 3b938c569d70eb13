"""What GIS tools read beside a class map: class names and colours they show.

A GeoTIFF has no place of its own for the names of a class raster's values, so tags such
as ``CLASS_0`` are ignored by QGIS and ArcGIS. GDAL keeps category names in the map's
PAM sidecar (``map.tif.aux.xml``, read by every GDAL-based tool: ``gdalinfo`` lists them,
QGIS labels the paletted legend with them), and QGIS applies a style file of the same
name (``map.qml``) when the layer is loaded. Both are written here, for ``predict`` and
``map`` alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

from alos2fm.atomic import atomic_path


def sidecar_paths(map_path: Path) -> list[Path]:
    """The class-name sidecars of ``map_path``: GDAL's ``.aux.xml`` and QGIS's ``.qml``."""
    return [map_path.with_name(map_path.name + ".aux.xml"), map_path.with_suffix(".qml")]


def write_class_sidecars(
    map_path: Path, names: Sequence[str], colours: Sequence[Sequence[int]]
) -> list[Path]:
    """Write the category names (GDAL PAM) and a paletted QGIS style for a class map whose
    values are ``0..len(names)-1`` (and the map's nodata, left transparent)."""
    aux, qml = sidecar_paths(map_path)
    categories = "".join(f"<Category>{escape(name)}</Category>" for name in names)
    with atomic_path(aux) as tmp:
        tmp.write_text(
            "<PAMDataset>\n"
            '  <PAMRasterBand band="1">\n'
            f"    <CategoryNames>{categories}</CategoryNames>\n"
            "  </PAMRasterBand>\n"
            "</PAMDataset>\n"
        )
    entries = "\n".join(
        f'        <paletteEntry value="{value}" color="{_hex(colour)}" alpha="255" '
        f"label={quoteattr(name)}/>"
        for value, (name, colour) in enumerate(zip(names, colours, strict=True))
    )
    with atomic_path(qml) as tmp:
        tmp.write_text(
            "<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>\n"
            '<qgis version="3.28" styleCategories="Symbology">\n'
            "  <pipe>\n"
            '    <rasterrenderer type="paletted" band="1" opacity="1" alphaBand="-1">\n'
            "      <colorPalette>\n"
            f"{entries}\n"
            "      </colorPalette>\n"
            "    </rasterrenderer>\n"
            '    <rasternodata><noDataList bandNo="1" useSrcNoData="1"/></rasternodata>\n'
            "  </pipe>\n"
            "</qgis>\n"
        )
    return [aux, qml]


def _hex(colour: Sequence[int]) -> str:
    return "#" + "".join(f"{int(c):02x}" for c in colour[:3])
