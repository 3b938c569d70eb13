"""Messages that C libraries print straight to the process's stderr (libtiff's "File too
large" as GDAL writes a GeoTIFF) bypass Python and repeat, in their own words, a failure
that reaches the user as alos2fm's one-line error. :func:`held_native_stderr` holds them
back while a block runs: on success they are passed on unchanged, on failure dropped.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from typing import Any


class Held:
    """What native code wrote so far in the block (for an error message to quote)."""

    def __init__(self, file: Any = None):
        self._file = file

    def text(self) -> str:
        if self._file is None:
            return ""
        self._file.seek(0)
        return self._file.read().decode(errors="replace").strip()


@contextlib.contextmanager
def held_native_stderr() -> Iterator[Held]:
    """Hold what native code writes to file descriptor 2 during the block; Python's own
    ``sys.stderr`` (progress bars, warnings) still reaches the terminal meanwhile."""
    try:
        fd = sys.__stderr__.fileno() if sys.__stderr__ is not None else 2
        saved = os.dup(fd)
    except (OSError, ValueError, AttributeError):  # no real stderr (embedded, tests)
        yield Held()
        return
    python_stderr = sys.stderr
    with tempfile.TemporaryFile() as held:
        sys.stderr.flush()
        os.dup2(held.fileno(), fd)
        if python_stderr is sys.__stderr__:
            sys.stderr = open(saved, "w", closefd=False)  # noqa: SIM115 - closed below
        failed = True
        try:
            yield Held(held)
            failed = False
        finally:
            if sys.stderr is not python_stderr:
                sys.stderr.flush()
                sys.stderr.close()
                sys.stderr = python_stderr
            os.dup2(saved, fd)
            os.close(saved)
            if not failed:
                held.seek(0)
                os.write(fd, held.read())
