"""Ownership of outputs: what alos2fm may write, replace or remove, and who writes now.

Every command that writes goes through this module, so that a new command gets the same
guarantees for free:

- A folder is ours only if our manifest (``.alos2fm.json``) says so. The manifest has a
  format version, the command that owns the folder, the run id and the run's identity
  (what it was computed from), and lists every name we wrote at the folder's root. An
  entry that would leave the folder is an error, never followed.
- Nothing we did not write is removed or replaced. A non-empty foreign folder, or an
  existing output file, needs ``--overwrite``, and even then only our own files are
  replaced: a name of the user's that we would write is refused.
- An output equal to an input, or inside an input dataset or product, is refused.
- One writer at a time: a lock (``flock``, released by the kernel if the process dies)
  names the process that holds it.
- Writes stay atomic (``alos2fm.atomic``).

Two ways to claim: :func:`claim_folder` for a folder that a command fills (a dataset, a
run, an import) and :func:`claim_files` for files written into a folder of the user's (a
map written beside other files). Under torchrun, SLURM or Lightning's launcher every
process runs the command; only the first claims, the others write nothing here.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alos2fm.atomic import atomic_path
from alos2fm.errors import Alos2fmError

MANIFEST = ".alos2fm.json"
LOCK = ".alos2fm.lock"
FORMAT = 1
# Written by prepare before this module existed: read (checked the same way), then replaced.
LEGACY_DATASET_MANIFEST = ".alos2fm-dataset.json"
_BOOKKEEPING = {MANIFEST, LOCK, LEGACY_DATASET_MANIFEST}


class OutputError(Alos2fmError):
    """An output that cannot be written without losing or mixing someone's files."""


@dataclass
class Manifest:
    """What ``.alos2fm.json`` says about a folder.

    ``command`` owns the folder as a whole (None: a folder of the user's that we only
    wrote some files into); ``outputs`` maps each name we wrote at its root to the run
    that wrote it; ``identity`` is what the folder's run was computed from.
    """

    command: str | None
    run_id: str
    outputs: dict[str, str] = field(default_factory=dict)
    identity: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "written_by": "alos2fm",
            "command": self.command,
            "run_id": self.run_id,
            "identity": self.identity,
            "outputs": dict(sorted(self.outputs.items())),
        }


# --- reading and checking a manifest -----------------------------------------------------


def read_manifest(folder: Path) -> Manifest | None:
    """The folder's manifest, None if it has none; an unreadable one, or one with an entry
    that leaves the folder, is an error (never guessed around, never followed)."""
    path = folder / MANIFEST
    if path.exists():
        return _parse(folder, path, _load(path))
    legacy = folder / LEGACY_DATASET_MANIFEST
    if legacy.exists():
        raw = _load(legacy)
        entries = raw.get("outputs") if isinstance(raw, dict) else None
        if not isinstance(entries, list):
            raise _unreadable(legacy)
        names = {_entry(folder, legacy, name): "legacy" for name in entries}
        return Manifest(command="prepare", run_id=f"legacy-{uuid.uuid4().hex[:8]}", outputs=names)
    return None


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise _unreadable(path) from None


def _unreadable(path: Path) -> OutputError:
    return OutputError(
        "alos2fm's manifest of this folder is unreadable",
        path,
        hint="restore it, or choose another --out (nothing in the folder was changed)",
    )


def _parse(folder: Path, path: Path, raw: Any) -> Manifest:
    if not isinstance(raw, dict) or not isinstance(raw.get("outputs"), dict):
        raise _unreadable(path)
    if raw.get("format") != FORMAT:
        raise OutputError(
            f"manifest format {raw.get('format')!r} is not {FORMAT}",
            path,
            hint="written by another alos2fm version: use that version, or another --out",
        )
    outputs = {_entry(folder, path, name): str(run) for name, run in raw["outputs"].items()}
    return Manifest(
        command=raw.get("command"),
        run_id=str(raw.get("run_id") or uuid.uuid4().hex),
        outputs=outputs,
        identity=raw.get("identity"),
    )


def _entry(folder: Path, manifest: Path, name: Any) -> str:
    """A manifest entry: one plain name at the folder's root, nothing else."""
    text = str(name)
    plain = isinstance(name, str) and text not in ("", ".", "..") and "/" not in text
    plain = plain and "\\" not in text and text not in _BOOKKEEPING
    if not plain or (folder / text).resolve().parent != folder.resolve():
        raise OutputError(
            f"manifest entry {text!r} leaves the folder",
            manifest,
            hint="the manifest was edited or is not alos2fm's: fix it or choose another --out",
        )
    return text


# --- inputs ------------------------------------------------------------------------------


def check_not_an_input(output: Path, inputs: Iterable[Path | None]) -> None:
    """Refuse an output that is an input, holds one of the input's files, or lies inside an
    input folder (a dataset, a CEOS or PolSARpro product)."""
    from alos2fm.identity import reader_files

    target = _resolved(output)
    for given in inputs:
        if given is None or not Path(given).exists():
            continue
        source = _resolved(Path(given))
        files = {_resolved(p) for p in reader_files(Path(given))}
        inside = source.is_dir() and target.is_relative_to(source)
        if target == source or target in files or inside:
            raise OutputError(
                f"the output would be written {'into' if inside else 'over'} the input {given}",
                output,
                hint="choose an --out outside the inputs",
            )


def _resolved(path: Path) -> Path:
    return Path(os.path.abspath(path)).resolve()


# --- one writer at a time ----------------------------------------------------------------


def secondary_process() -> bool:
    """True in every process of a multi-process launch but the first: those run the same
    command and write nothing of their own to the output folder."""
    for variable in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        value = os.environ.get(variable, "0")
        if value.strip() not in ("", "0"):
            return True
    return False


class _Lock:
    """An exclusive ``flock`` on ``folder/.alos2fm.lock``; the file names its holder."""

    def __init__(self, folder: Path, command: str, wait_s: float = 0.0):
        import fcntl

        self.path = folder / LOCK
        deadline = time.monotonic() + wait_s
        while True:
            self.file = open(self.path, "a+")  # noqa: SIM115 - held until release()
            try:
                fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = self._holder()
                self.file.close()
                if time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                raise OutputError(
                    f"another alos2fm process is writing here ({holder})",
                    folder,
                    hint="wait for it to finish, or choose another --out",
                ) from None
            # The holder before us may have removed the file after we opened it.
            if (
                self.path.exists()
                and os.stat(self.path).st_ino == os.fstat(self.file.fileno()).st_ino
            ):
                break
            self.file.close()
        self.file.seek(0)
        self.file.truncate()
        self.file.write(
            f"pid {os.getpid()} on {socket.gethostname()}, alos2fm {command}, "
            f"since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
        )
        self.file.flush()

    def _holder(self) -> str:
        try:
            self.file.seek(0)
            return self.file.read().strip() or "unknown process"
        except OSError:
            return "unknown process"

    def release(self) -> None:
        if self.file.closed:
            return
        self.path.unlink(missing_ok=True)  # still ours: removed before the lock goes
        self.file.close()


# --- claiming a folder -------------------------------------------------------------------


class OutputFolder:
    """A folder claimed by one command: the lock is held and the manifest kept current
    until :meth:`release`. Use it as a context manager."""

    def __init__(
        self,
        root: Path,
        command: str,
        manifest: Manifest,
        lock: _Lock | None,
        created: bool,
    ):
        self.root = root
        self.command = command
        self.manifest = manifest
        self._lock = lock
        self.created = created  # the folder did not exist before this claim

    @property
    def run_id(self) -> str:
        return self.manifest.run_id

    def owns(self, name: str) -> bool:
        return name in self.manifest.outputs

    def path(self, name: str) -> Path:
        """The path of output ``name`` (one name at the root), recorded before it is
        written, so that the manifest always lists every output present."""
        name = _entry(self.root, self.root / MANIFEST, name)
        if not self.owns(name):
            if (self.root / name).exists():
                raise _foreign([name], self.root)
            self.manifest.outputs[name] = self.run_id
            self._save()
        return self.root / name

    def remove(self, name: str) -> None:
        """Remove output ``name``, only if we wrote it."""
        if not self.owns(name):
            raise OutputError(f"{name} was not written by alos2fm; it is kept", self.root)
        _remove(self.root / name)
        del self.manifest.outputs[name]
        self._save()

    def commit(self, partial: Path, last: str | None = None, keep: Iterable[str] = ()) -> None:
        """Move everything in ``partial`` (a folder of ours inside the root) to the root,
        ``last`` at the end; our outputs of an earlier run that this one did not make are
        removed, except ``keep``. The entry ``last`` of an earlier run goes first, so that
        a crash in between never pairs it with older files (``index.parquet``)."""
        new = sorted((item.name for item in partial.iterdir()), key=lambda n: n == last)
        foreign = [n for n in new if not self.owns(n) and (self.root / n).exists()]
        if foreign:  # appeared during the run
            raise _foreign(foreign, self.root, during=True)
        if last is not None and self.owns(last):
            (self.root / last).unlink(missing_ok=True)
        self.manifest.outputs.update({name: self.run_id for name in new})
        self._save()
        kept = {*new, *keep, partial.name}
        for stale in [name for name in self.manifest.outputs if name not in kept]:
            _remove(self.root / stale)  # e.g. labels/ of an earlier labelled run
            del self.manifest.outputs[stale]
        for name in new:
            _remove(self.root / name)
            os.replace(partial / name, self.root / name)
        self._save()
        partial.rmdir()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        """Release; a folder this claim created is removed again if the run failed
        before writing anything in it but our bookkeeping."""
        if kind is not None and self.created and self._lock is not None:
            left = {p.name for p in self.root.iterdir()} - _BOOKKEEPING
            if not left:
                (self.root / MANIFEST).unlink(missing_ok=True)
                self.release()
                self.root.rmdir()
                return
        self.release()

    def _save(self) -> None:
        if self._lock is None:  # a secondary process: the first one keeps the manifest
            return
        legacy = self.root / LEGACY_DATASET_MANIFEST
        with atomic_path(self.root / MANIFEST) as tmp:
            tmp.write_text(json.dumps(self.manifest.to_json(), indent=2) + "\n")
        legacy.unlink(missing_ok=True)


def claim_folder(
    root: Path,
    command: str,
    *,
    outputs: Iterable[str] = (),
    inputs: Sequence[Path | None] = (),
    overwrite: bool | None = None,
    rerun: str = "overwrite",
    identity: Mapping[str, Any] | None = None,
) -> OutputFolder:
    """Claim ``root`` for ``command``, before anything is written.

    ``outputs`` names what the command writes at the root (recorded now; a foreign file of
    one of those names is refused, even with ``overwrite``; None: the command has no
    ``--overwrite``). ``rerun`` says what an earlier
    run of the same command in this folder means: ``"replace"`` (rebuilt in place, as
    prepare does), ``"overwrite"`` (needs ``overwrite``), ``"resume"`` (continued: its
    identity must equal ``identity``) or ``"refuse"`` (a new run needs a new folder).
    """
    check_not_an_input(root, inputs)
    created = not root.exists()
    if root.exists() and not root.is_dir():
        raise OutputError("is a file, not a folder", root, hint="choose a folder for --out")
    if secondary_process():
        manifest = read_manifest(root) if root.is_dir() else None
        return OutputFolder(
            root, command, manifest or Manifest(command, "secondary"), None, created
        )
    _make_writable_folder(root)
    lock = _Lock(root, command)
    try:
        manifest = _claim(root, command, set(outputs), overwrite, rerun, identity)
        folder = OutputFolder(root, command, manifest, lock, created)
        folder._save()
        return folder
    except BaseException:
        lock.release()
        if created and root.exists() and not any(root.iterdir()):
            root.rmdir()
        raise


def _claim(
    root: Path,
    command: str,
    outputs: set[str],
    overwrite: bool | None,
    rerun: str,
    identity: Mapping[str, Any] | None,
) -> Manifest:
    manifest = read_manifest(root)
    present = {p.name for p in root.iterdir() if p.name not in _BOOKKEEPING}
    present = {name for name in present if not _is_stray_temporary(name)}
    if manifest is not None and manifest.command not in (None, command):
        raise OutputError(
            f"holds alos2fm {manifest.command} output, not a {command} run",
            root,
            hint=f"give {command} a folder of its own (--out)",
        )
    owned = set(manifest.outputs) if manifest is not None else set()
    foreign = sorted(present - owned)
    ours_here = manifest is not None and manifest.command == command
    if foreign and not ours_here and not overwrite:
        raise OutputError(
            f"output folder is not empty and is not alos2fm {command} output ({_names(foreign)})",
            root,
            hint="choose a new or empty --out"
            + (
                ""
                if overwrite is None  # the command has no --overwrite
                else ", or pass --overwrite to write beside its files (none of them is "
                "removed or replaced)"
            ),
        )
    clashes = sorted(set(foreign) & outputs)
    if clashes:
        raise _foreign(clashes, root)
    earlier = ours_here and bool(present & owned)
    if earlier:
        _check_rerun(root, command, manifest, rerun, overwrite, identity)
    if manifest is None or manifest.command is None:  # ours from now on, for this command
        previous = dict(manifest.outputs) if manifest is not None else {}
        manifest = Manifest(command, uuid.uuid4().hex, previous)
    elif not (earlier and rerun == "resume"):
        manifest.run_id = uuid.uuid4().hex
    manifest.identity = dict(identity) if identity is not None else manifest.identity
    for name in outputs:
        manifest.outputs.setdefault(name, manifest.run_id)
    return manifest


def _check_rerun(
    root: Path,
    command: str,
    manifest: Manifest,
    rerun: str,
    overwrite: bool,
    identity: Mapping[str, Any] | None,
) -> None:
    from alos2fm.identity import check_same

    if rerun == "replace" or (rerun == "overwrite" and overwrite):
        return
    if rerun == "overwrite":
        raise OutputError(
            f"already holds the output of an earlier {command} run",
            root,
            hint="pass --overwrite to replace it (only alos2fm's files are replaced), "
            "or choose another --out",
        )
    if rerun == "resume":
        if identity is not None:
            check_same(manifest.identity, identity, f"the {command} run in this folder", root)
        return
    raise OutputError(
        f"this folder already holds a {command} run",
        root,
        hint="add --resume to continue it, or choose another --out",
    )


def _make_writable_folder(root: Path) -> None:
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".alos2fm-write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise OutputError(
            f"output folder is not writable ({err.strerror or err})",
            root,
            hint="choose another --out, or fix its permissions",
        ) from None


def _is_stray_temporary(name: str) -> bool:
    """Names our atomic writes use for a moment (left over only by a killed process)."""
    return name.startswith(".alos2fm-write-test-") or (
        name.startswith(".") and name.endswith((".tmp", ".partial"))
    )


def _foreign(names: Sequence[str], root: Path, during: bool = False) -> OutputError:
    when = " appeared during the run and" if during else ""
    return OutputError(
        f"{_names(names)}{when} would be replaced, but alos2fm did not write "
        f"{'it' if len(names) == 1 else 'them'}",
        root,
        hint="move them away, or choose another --out",
    )


def _names(names: Sequence[str], most: int = 4) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


# --- files in a folder of the user's ------------------------------------------------------


def claim_files(
    paths: Sequence[Path],
    command: str,
    *,
    inputs: Sequence[Path | None] = (),
    overwrite: bool = False,
) -> None:
    """Claim output files, all in one folder of the user's, before they are written.

    A file that exists is replaced only with ``overwrite`` and only if alos2fm wrote it;
    the folder's manifest records the files (the rest of the folder stays the user's).
    The files themselves must be written atomically (``alos2fm.atomic``).
    """
    if not paths:
        return
    folder = paths[0].parent
    for path in paths:
        check_not_an_input(path, inputs)
    if secondary_process():
        return
    _make_writable_folder(folder)
    lock = _Lock(folder, command, wait_s=30.0)  # held only while the manifest changes
    try:
        manifest = read_manifest(folder) or Manifest(None, uuid.uuid4().hex)
        if manifest.command not in (None, command):
            raise OutputError(
                f"holds alos2fm {manifest.command} output",
                folder,
                hint="write the files somewhere else",
            )
        names = [p.name for p in paths]
        existing = [n for n in names if (folder / n).exists()]
        foreign = [n for n in existing if n not in manifest.outputs]
        if foreign:
            raise _foreign(foreign, folder)
        if existing and not overwrite:
            raise OutputError(
                f"{_names(existing)} already exist{'s' if len(existing) == 1 else ''}",
                folder,
                hint="pass --overwrite to replace them, or choose another --out",
            )
        run = uuid.uuid4().hex
        manifest.outputs.update({name: run for name in names})
        with atomic_path(folder / MANIFEST) as tmp:
            tmp.write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    finally:
        lock.release()
