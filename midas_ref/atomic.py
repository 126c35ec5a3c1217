"""Safe output: every file midas-ref writes appears whole or not at all, every output set as one unit.

* :func:`atomic_output`, :func:`atomic_path`, :func:`write_text_atomic`: one file, written to a temporary
  file in the destination folder and renamed into place only when complete.
* :func:`check_output_dir`, :func:`check_output_file`: prove an output location can be written *before*
  the work starts, without creating anything (one :class:`~midas_ref.errors.OutputLocationError` naming
  the flag).
* :class:`OutputSet`: the files of one run, staged in a hidden folder and moved into place together; the
  set replaces the previous set of the same kind (files of the old set the new run does not write, such as
  a stale ``refined_MIDAS_params.txt`` after a FAILED run, are removed) or, when the run is interrupted or
  fails, leaves the folder as it was.

This module imports nothing of midas-ref but its errors, so the geometry model and the parameter files can
write without loading image I/O.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import tempfile
from pathlib import Path

from .errors import OutputLocationError

__all__ = ["atomic_output", "atomic_path", "write_text_atomic", "check_output_dir", "check_output_file",
           "OutputSet", "MAX_NAME_BYTES", "note_signal", "clear_signals", "signal_received"]

#: Longest file or folder name most file systems accept (ext4, XFS, APFS, NTFS in UTF-16 units aside).
MAX_NAME_BYTES = 255

#: Signals received by the process (the command line's handlers record them here), so that a library that
#: swallows KeyboardInterrupt during a write (h5py does in callbacks) cannot make an interrupted run commit.
_SIGNALS: list[int] = []


def note_signal(signum: int) -> None:
    """Record that ``signum`` (SIGINT, SIGTERM) arrived; :meth:`OutputSet.commit` then refuses to commit."""
    _SIGNALS.append(int(signum))


def clear_signals() -> None:
    """Forget recorded signals (a new command run in the same process starts clean)."""
    _SIGNALS.clear()


def signal_received() -> int | None:
    """The first signal recorded by :func:`note_signal` in this process, or None."""
    return _SIGNALS[0] if _SIGNALS else None


def _umask_mode() -> int:
    """Permissions a plain ``open(path, "w")`` would give: 0o666 less the process umask."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike, mode: str = "w", **open_kwargs):
    """Open a temporary file beside ``path``; rename it to ``path`` when the block exits cleanly.

    Parameters
    ----------
    path : path-like
        Final destination.
    mode : {"w", "wb"}
        Text or binary mode.
    **open_kwargs
        Passed to :func:`open` (e.g. ``encoding``, ``newline``).

    Yields
    ------
    file object
        Write to it. If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        if "b" not in mode:
            open_kwargs.setdefault("encoding", "utf-8")
        with open(tmp, mode, **open_kwargs) as handle:
            yield handle
        os.chmod(tmp, _umask_mode())  # mkstemp creates 0600; outputs should look like ordinary files
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path beside ``path`` for libraries that want a file name (h5py, tifffile, zarr).

    The temporary file is renamed to ``path`` when the block exits cleanly and removed otherwise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    os.unlink(tmp)  # libraries such as zarr's ZipStore and h5py want to create the file themselves
    try:
        yield Path(tmp)
        os.chmod(tmp, _umask_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_output(path, "w") as handle:
        handle.write(text)


def _check_names(path: Path, what: str) -> None:
    for part in path.parts:
        if len(os.fsencode(part)) > MAX_NAME_BYTES:
            raise OutputLocationError(f"{what} {path}: the name {part[:40]}… is {len(os.fsencode(part))} bytes "
                                      f"long; file systems take at most {MAX_NAME_BYTES}")


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest existing ancestor; a regular file on the way is an error of the caller."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """Check that ``path`` is, or can be created as, a writable folder; create nothing.

    Parameters
    ----------
    path : path-like
    what : str
        How the user named it (``--out-dir``), for the message.

    Raises
    ------
    OutputLocationError
        ``path`` (or a folder on the way to it) is a file, a name is longer than :data:`MAX_NAME_BYTES`,
        or the first existing folder on the way is not writable.
    """
    path = Path(path)
    _check_names(path.absolute(), what)
    existing = _first_existing(path.absolute())
    if not existing.is_dir():
        where = "is a file, not a folder" if existing == path.absolute() else f"lies under {existing}, a file"
        raise OutputLocationError(f"{what} {path} {where}")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise OutputLocationError(f"{what} {path}: folder {existing} is not writable")
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """Check that ``path`` can be written as a file (its folder as :func:`check_output_dir`); create nothing.

    Raises
    ------
    OutputLocationError
        ``path`` is a folder, or its folder cannot be written.
    """
    path = Path(path)
    _check_names(path.absolute(), what)
    check_output_dir(path.parent if str(path.parent) else Path("."), f"{what} {path}: folder")
    if path.is_dir():
        raise OutputLocationError(f"{what} {path} is a folder; name a file")
    if path.exists() and not os.access(path, os.W_OK):
        # replacing needs only the folder's permission, but a read-only file is a clear sign of intent
        raise OutputLocationError(f"{what} {path} exists and is read-only")
    return path


class OutputSet:
    """The output files of one run, moved into ``out_dir`` together by :meth:`commit`.

    Use as a context manager: files are written to the paths :meth:`path` hands out (a hidden staging
    folder inside ``out_dir``, or a hidden temporary file beside a destination outside it); :meth:`commit`
    renames them into place with SIGINT/SIGTERM held back, removes the files of the previous set of this
    ``kind`` that the new set does not contain, and records the set in ``out_dir/<kind>.manifest.json``.
    Leaving the block without a commit (an error, an interrupt) deletes everything staged and leaves
    ``out_dir`` as it was.

    Parameters
    ----------
    out_dir : path-like
        Created (with its parents) on entry.
    kind : str
        Names the manifest, e.g. ``"midas-ref-calibrate"``.
    replaces : iterable of str
        File names in ``out_dir`` that belong to this kind of set even when no manifest lists them (sets
        written before manifests existed); removed at commit when the new set lacks them.
    """

    def __init__(self, out_dir: str | os.PathLike, kind: str, replaces=()):
        self.out_dir = Path(out_dir)
        self.kind = kind
        self.replaces = tuple(replaces)
        self.manifest = self.out_dir / f"{kind}.manifest.json"
        self._staging: Path | None = None
        self._files: dict[Path, Path] = {}  # destination → staged path
        self.written: list[Path] = []

    def __enter__(self) -> "OutputSet":
        missing = []
        probe = self.out_dir.absolute()
        while not probe.exists() and probe != probe.parent:
            missing.append(probe)
            probe = probe.parent
        self._created = missing  # innermost first: removed again unless the set is committed
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._staging = Path(tempfile.mkdtemp(prefix=f".{self.kind}-run-", dir=self.out_dir))
        return self

    def path(self, destination: str | os.PathLike) -> Path:
        """Where to write ``destination`` (relative names are relative to ``out_dir``) until the commit."""
        if self._staging is None:
            raise RuntimeError("OutputSet.path outside its with-block")
        dest = Path(destination)
        dest = dest if dest.is_absolute() else self.out_dir / dest
        if dest not in self._files:
            if dest.parent.resolve() == self.out_dir.resolve():
                staged = self._staging / dest.name
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".staged", dir=dest.parent)
                os.close(fd)
                os.unlink(tmp)
                staged = Path(tmp)
            self._files[dest] = staged
        return self._files[dest]

    def commit(self) -> list[Path]:
        """Move every staged file into place and drop the previous set's leftovers; returns the files."""
        received = signal_received()
        if received is not None:  # interrupted while writing (and the writer swallowed it): do not commit
            raise KeyboardInterrupt if received == signal.SIGINT else SystemExit(128 + received)
        old = set(self.replaces)
        with contextlib.suppress(OSError, ValueError, TypeError):
            old |= set(json.loads(self.manifest.read_text(encoding="utf-8"))["files"])
        blocked = {signal.SIGINT, signal.SIGTERM}
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, blocked)
        try:
            for dest, staged in self._files.items():
                if staged.exists():
                    os.chmod(staged, _umask_mode())
                    os.replace(staged, dest)
                    self.written.append(dest)
            names = sorted(str(p.relative_to(self.out_dir)) if p.is_relative_to(self.out_dir) else str(p)
                           for p in self.written)
            for name in old - set(names):
                stale = Path(name) if Path(name).is_absolute() else self.out_dir / name
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    stale.unlink()
            write_text_atomic(self.manifest, json.dumps({"format": "midas-ref output set", "format_version": 1,
                                                         "kind": self.kind, "files": names}, indent=1) + "\n")
        finally:
            self._discard()
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)
        self._created = []
        return list(self.written)

    def _discard(self) -> None:
        for staged in self._files.values():
            if staged.parent != self._staging:
                with contextlib.suppress(FileNotFoundError):
                    staged.unlink()
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    def __exit__(self, exc_type, exc, tb) -> None:
        committed = self._staging is None
        self._discard()
        if not committed:
            for folder in getattr(self, "_created", ()):
                with contextlib.suppress(OSError):  # not empty (someone else wrote there): keep it
                    folder.rmdir()
