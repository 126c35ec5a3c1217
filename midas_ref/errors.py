"""Exception hierarchy of midas-ref.

Every error a user can cause (bad parameter file, unreadable image, no rings found, ...) is raised as a
subclass of :class:`MidasRefError`. The CLI turns these into one line on stderr and a non-zero exit code;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class MidasRefError(Exception):
    """Base class for every error caused by the user's input or data."""


class ParameterFileError(MidasRefError):
    """A MIDAS parameter file is missing, unreadable, or has a malformed / missing key.

    Parameters
    ----------
    message : str
        What is wrong.
    path : str, optional
        The parameter file.
    line : int, optional
        1-based line number in that file.
    key : str, optional
        The offending key.
    """

    def __init__(self, message: str, path: str | None = None, line: int | None = None,
                 key: str | None = None):
        self.path = path
        self.line = line
        self.key = key
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        if key is not None:
            where.append(f"key {key!r}")
        prefix = ", ".join(where)
        super().__init__(f"{prefix}: {message}" if prefix else message)


class ImageReadError(MidasRefError):
    """An image, dark or mask file cannot be read as requested (missing, wrong size, bad dtype, ...)."""


class GeometryError(MidasRefError):
    """A geometry is unusable (non-finite values, non-positive distance or pixel size, ...)."""


class RingTableError(MidasRefError):
    """The calibrant description gives no usable rings (bad space group, lattice, wavelength, RhoD)."""


class CalibrationError(MidasRefError):
    """A calibration step failed (no rings found, all pixels masked, no convergence, ...)."""


class OutputLocationError(MidasRefError):
    """An output file or folder cannot be written where the user asked (a file in the way, no permission,
    a name too long, …); raised before any work starts."""
