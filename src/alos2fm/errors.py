"""One exception type for problems a user can fix.

The CLI prints an ``Alos2fmError`` as a single line on stderr (file, problem, what to do)
and exits non-zero; anything else is a bug and keeps its traceback under ``--debug``.
"""

from __future__ import annotations

import errno
from pathlib import Path


class Alos2fmError(Exception):
    """A problem with the user's input or environment, explained in one line."""

    def __init__(self, problem: str, path: str | Path | None = None, hint: str | None = None):
        self.problem = problem
        self.path = Path(path) if path is not None else None
        self.hint = hint
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = f"{self.path}: {self.problem}" if self.path is not None else self.problem
        return f"{text} ({self.hint})" if self.hint else text


class ProductError(Alos2fmError):
    """A product file that cannot be read: unknown name, corrupt, truncated, not SAR."""


class DataError(Alos2fmError):
    """Input data that cannot make a dataset: no valid pixels, no overlap, bad labels."""


def validation_problems(error: Exception, whole: str = "settings") -> str:
    """A pydantic ``ValidationError`` as one line: ``key.path: message; ...`` (``whole``
    names problems of the object itself)."""
    return "; ".join(
        f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}"
        for e in error.errors()  # type: ignore[attr-defined]
    )


class CompatibilityError(Alos2fmError):
    """A model and an input that must not be combined: bands, classes, normalisation,
    architecture or preprocessing differ (see ``alos2fm.contract``)."""


# What the operating system refuses, said as what to do about it.
_SYSTEM_HINTS = {
    errno.ENOSPC: "free space on that disk, or choose another --out; run again to resume",
    errno.EDQUOT: "your disk quota is full: free space or choose another --out",
    errno.EFBIG: "the file system's file-size limit was reached: choose another --out",
    errno.EROFS: "the file system is read-only: choose another --out",
    errno.EACCES: "permission denied: fix the permissions or choose another path",
    errno.EPERM: "permission denied: fix the permissions or choose another path",
    errno.ENOENT: "check the path",
    errno.EIO: "the disk or network file system failed: check it and run again",
}


def system_error(error: OSError) -> Alos2fmError:
    """An ``OSError`` (disk full, read-only, permissions, ...) as a user-fixable error
    naming the file; outputs are written atomically, so nothing half-written is left."""
    problem = error.strerror or str(error)
    hint = _SYSTEM_HINTS.get(error.errno or -1, "check the file and the disk, and run again")
    return Alos2fmError(problem, error.filename, hint)
