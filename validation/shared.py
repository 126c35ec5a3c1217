"""Where the reference folder ``../shared`` is, and small readers for what it holds.

The folder (specifications, real calibrant images, legacy goldens) sits beside the repository; a user's
clone may not have it, so every caller gets ``None`` / a skip reason instead of an exception.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["REPO_DIR", "SHARED_ENV", "repository_dir", "default_shared_dir", "resolve_shared_dir",
           "elapsed_seconds", "max_rss_kib", "mean_values_block"]

#: The repository (parent of this package) when running from a clone or an editable install.
REPO_DIR = Path(__file__).resolve().parents[1]
#: Environment variable that overrides the location of the reference folder.
SHARED_ENV = "MIDAS_REF_SHARED"


def repository_dir() -> Path:
    """The repository: the parent of this package in a clone or editable install, else the current folder
    when it looks like the repository (``pip install .`` puts the package into site-packages)."""
    if (REPO_DIR / "pyproject.toml").is_file():
        return REPO_DIR
    return Path.cwd()


def default_shared_dir() -> Path:
    """``$MIDAS_REF_SHARED`` if set, else ``<repository>/../shared`` (whether or not it exists)."""
    env = os.environ.get(SHARED_ENV)
    return Path(env).expanduser().resolve() if env else repository_dir().parent / "shared"


def resolve_shared_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The reference folder to use, or None when it is absent.

    Parameters
    ----------
    explicit : path-like, optional
        A folder given on the command line (``--shared``); wins over the default.
    """
    path = Path(explicit).expanduser().resolve() if explicit else default_shared_dir()
    return path if path.is_dir() else None


def elapsed_seconds(time_v_text: str) -> float | None:
    """Wall time of a ``/usr/bin/time -v`` report (``Elapsed (wall clock) time (h:mm:ss or m:ss): 0:10.83``), s."""
    for line in time_v_text.splitlines():
        if "Elapsed (wall clock)" in line:
            value = line.rsplit(": ", 1)[1].strip()
            seconds = 0.0
            for part in value.split(":"):
                seconds = seconds * 60 + float(part)
            return seconds
    return None


def max_rss_kib(time_v_text: str) -> float | None:
    """``Maximum resident set size (kbytes)`` of a ``/usr/bin/time -v`` report, KiB."""
    for line in time_v_text.splitlines():
        if "Maximum resident set size" in line:
            return float(line.rsplit(":", 1)[1])
    return None


def mean_values_block(stdout_text: str) -> dict[str, list[float]]:
    """Key → numbers of the ``Mean Values`` block of CalibrantOMP / CalibrantPanelShiftsOMP stdout.

    Lines are ``key value [value …]`` (any spacing); lines that do not parse as numbers are skipped.
    Returns an empty dict when the block is absent.
    """
    lines = stdout_text.splitlines()
    start = next((i for i, line in enumerate(lines) if "Mean Values" in line), None)
    if start is None:
        return {}
    values: dict[str, list[float]] = {}
    for line in lines[start + 1:]:
        if line.startswith("****") and "Copy to par" in line:
            break
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            values[parts[0]] = [float(p) for p in parts[1:]]
        except ValueError:
            continue
    return values
