"""Identity of results: what a staged, resumed or reused result was computed from.

Everything that is resumed or reused (prepare's staged scenes, ``--resume``, lr-sweep
runs, probe results, imports) records an identity: the resolved settings, the dataset's
id and fingerprint, and the fingerprints of its input files. Before reuse the recorded
identity is compared with the current one; a mismatch is refused, naming the first
difference. Fingerprints cover every file a reader opens, not only the path given:
a CEOS set's VOL/LED/IMG/TRL files, a GeoPackage's ``-wal``/``-shm`` (edits made in QGIS
live there until a checkpoint), a VRT's sources, a shapefile's sidecars.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from alos2fm.errors import Alos2fmError


class IdentityError(Alos2fmError):
    """A result to resume or reuse that was computed from other inputs or settings."""


# --- which files a reader opens ------------------------------------------------------------

_SHAPEFILE_SIDECARS = (".shx", ".dbf", ".prj", ".cpg", ".qix", ".sbn", ".sbx", ".shp.xml")
_SQLITE_SIDECARS = ("-wal", "-shm", "-journal")


def reader_files(path: Path) -> list[Path]:
    """Every file that reading ``path`` opens: a product's own files (``product_files``),
    SQLite sidecars of a GeoPackage, a shapefile's sidecars, a VRT's sources (recursively),
    GDAL's ``.aux.xml`` and ENVI ``.hdr`` files. Missing sidecars are left out."""
    path = Path(path)
    files = product_files(path)
    extra: list[Path] = []
    for file in files:
        suffix = file.suffix.lower()
        if suffix in (".gpkg", ".sqlite", ".db"):
            extra += [file.with_name(file.name + s) for s in _SQLITE_SIDECARS]
        elif suffix == ".shp":
            extra += [file.with_suffix(s) for s in _SHAPEFILE_SIDECARS]
        elif suffix == ".vrt":
            extra += [p for source in vrt_sources(file) for p in reader_files(source)]
        extra += [file.with_name(file.name + ".aux.xml"), file.with_suffix(".hdr")]
    seen = dict.fromkeys([*files, *(p for p in extra if p.is_file())])
    return list(seen)


def product_files(path: Path) -> list[Path]:
    """The files a product reader opens for ``path``: a folder's files; for a file named
    like an ALOS-2 product, every file of that product beside it (VOL/LED/IMG/TRL, the
    other polarisations); else the file itself."""
    from alos2fm.products.naming import is_product_name, parse_product_name

    path = Path(path)
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
    if path.suffix.lower() == ".bin":  # one band of a PolSARpro folder: the folder is read
        return product_files(path.parent)
    if not is_product_name(path):
        return [path]
    wanted = parse_product_name(path)
    same = []
    for p in path.parent.iterdir():
        if not (p.is_file() and is_product_name(p)):
            continue
        name = parse_product_name(p)
        same_product = (name.scene_id, name.product_id) == (wanted.scene_id, wanted.product_id)
        if same_product and name.file_kind != "BRS":  # quicklooks are not read
            same.append(p)
    return sorted(same)


_VRT_SOURCE = re.compile(
    r"<SourceFilename(?P<attrs>[^>]*)>(?P<name>[^<]+)</SourceFilename>", re.IGNORECASE
)


def vrt_sources(vrt: Path) -> list[Path]:
    """The source files a VRT names (relative ones resolved as GDAL does)."""
    try:
        text = vrt.read_text(errors="replace")
    except OSError:
        return []
    sources = []
    for match in _VRT_SOURCE.finditer(text):
        name = match.group("name").strip()
        if name.startswith("/vsi"):
            continue
        relative = 'relativetovrt="1"' in match.group("attrs").replace(" ", "").lower()
        source = vrt.parent / name if relative or not Path(name).is_absolute() else Path(name)
        if source.exists():
            sources.append(source)
    return sources


def file_stamp(path: Path | str) -> tuple[int, int, int]:
    """(inode, size, modification time) of a file: what changes when it is edited or
    replaced, for a process's in-memory cache of what it read from it."""
    stat = os.stat(path)
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def files_fingerprint(paths: Iterable[Path]) -> list[list[Any]]:
    """(absolute path, size, modification time) of each file: a file edited or replaced in
    place changes its size or time. Cheap: no file is read."""
    rows = []
    for path in paths:
        stat = Path(path).stat()
        rows.append([str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns])
    return rows


def inputs_fingerprint(paths: Iterable[Path | None]) -> list[list[Any]]:
    """The fingerprint of every file that reading each of ``paths`` opens."""
    return files_fingerprint(p for path in paths if path is not None for p in reader_files(path))


def content_digest(path: Path, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (for weights and small records, not for whole scenes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while block := file.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def digest(value: Any) -> str:
    """SHA-256 of a JSON-able value, independent of key order."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


# --- datasets ------------------------------------------------------------------------------


def dataset_identity(root: Path) -> dict[str, str]:
    """A dataset's id (the run id of the prepare run that wrote it), its folder's name and
    a fingerprint of its index, statistics and settings. Never an absolute path: these
    travel into checkpoints and model cards."""
    from alos2fm.outputs import read_manifest

    root = Path(root)
    manifest = read_manifest(root) if root.is_dir() else None
    parts = [root / name for name in ("index.parquet", "stats.json", "config.yaml")]
    return {
        "id": manifest.run_id if manifest is not None else "unknown",
        "name": root.resolve().name,
        "fingerprint": digest([content_digest(p) for p in parts if p.is_file()])[:16],
    }


# --- comparing identities ------------------------------------------------------------------


def first_difference(recorded: Any, current: Any, where: str = "") -> str | None:
    """The first place where two JSON-like values differ, as ``key: was X, now Y``."""
    if isinstance(recorded, Mapping) and isinstance(current, Mapping):
        for key in sorted(set(recorded) | set(current), key=str):
            here = f"{where}.{key}" if where else str(key)
            if key not in recorded:
                return f"{here}: not recorded, now {_short(current[key])}"
            if key not in current:
                return f"{here}: was {_short(recorded[key])}, now absent"
            found = first_difference(recorded[key], current[key], here)
            if found:
                return found
        return None
    sequences = isinstance(recorded, list | tuple) and isinstance(current, list | tuple)
    if sequences and len(recorded) == len(current):
        for i, (a, b) in enumerate(zip(recorded, current, strict=True)):
            found = first_difference(a, b, f"{where}[{i}]")
            if found:
                return found
        return None
    if recorded == current:
        return None
    return f"{where or 'value'}: was {_short(recorded)}, now {_short(current)}"


def _short(value: Any, most: int = 80) -> str:
    text = json.dumps(value, default=str) if not isinstance(value, str) else repr(value)
    return text if len(text) <= most else text[: most - 3] + "..."


def check_same(
    recorded: Mapping[str, Any] | None,
    current: Mapping[str, Any],
    what: str,
    path: Path,
    hint: str = "use the same inputs and settings, or choose another --out",
) -> None:
    """Refuse to resume or reuse ``what`` when its recorded identity differs from the
    current one; JSON round-trips both so that tuples and lists compare equal."""
    current = json.loads(json.dumps(current, default=str))
    if recorded is None:
        raise IdentityError(f"{what} records no identity (made by an older alos2fm?)", path, hint)
    difference = first_difference(recorded, current)
    if difference:
        raise IdentityError(
            f"{what} was made from other inputs or settings: {difference}", path, hint
        )
