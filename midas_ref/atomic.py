"""Atomic file writing: every file midas-ref writes appears whole or not at all.

The content goes to a temporary file in the destination folder and is renamed into place only when
complete, so a failure never leaves a half-written output behind. This module imports nothing of
midas-ref, so the geometry model and the parameter files can write without loading image I/O.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

__all__ = ["atomic_output", "atomic_path", "write_text_atomic"]


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
