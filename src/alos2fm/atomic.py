"""Atomic file writes: a reader sees the old file or the new one, never half of one.

A file is written under a hidden temporary name in the same folder (a rename across file
systems would be a copy), flushed to disk, then renamed over the target. A crash or a
SIGKILL in between leaves the old file intact and, at worst, a stray ``.NAME.tmp``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | Path, durable: bool = True) -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; on success it replaces ``path``.

    If the block raises, the temporary file is removed and ``path`` is left as it was.
    ``durable=False`` skips the flush to disk, for files committed later as a folder.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        if durable:  # the rename must not outrun the data to disk
            with open(tmp, "rb") as written:
                os.fsync(written.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
