"""The MIDAS parameter-file format: the one key table, typed reading and writing, and the key ↔ field mapping.

Legacy key spellings (``Lsd``, ``BC``, ``RhoD`` …) appear only here: in :data:`KEY_TABLE` and in the
mapping between keys and the unit-suffixed fields of :mod:`midas_ref.detector`
(:func:`geometry_from_params` / :func:`params_from_geometry`, :func:`panel_layout_from_params` /
:func:`params_from_panel_layout`, and the MIDAS Zarr zip names :data:`ZIP_NAMES`).
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .detector import Geometry, PanelLayout
from .errors import GeometryError, ParameterFileError

__all__ = ["KeySpec", "KEY_TABLE", "key_spec", "key_table_markdown", "Entry", "ParameterFile", "FORMAT_HEADER",
           "parse_parameter_text", "read_parameter_file", "write_parameter_file", "GEOMETRY_KEYS", "DETECTOR_KEYS",
           "DISTORTION_KEYS", "PANEL_LAYOUT_KEYS", "ZIP_NAMES", "key_values_from_geometry", "geometry_from_params",
           "params_from_geometry", "panel_layout_from_params", "key_values_from_panel_layout", "params_from_zip",
           "write_refined_params"]


# ------------------------------------------------------------------------------------------------------
# The MIDAS text parameter file
# ------------------------------------------------------------------------------------------------------

#: First line of every parameter file midas-ref writes (style.md §3: format version and axis convention).
FORMAT_HEADER = ("# midas-ref parameter file, format 1. Axes: image[row, col] = [Z, Y]; BC = Y Z (column, "
                 "row) in pixels, integer = pixel centre; Lsd, px, RhoD, Width in um; tilts, p3 in degrees; "
                 "Wavelength in Angstrom.")
_HEADER_PREFIX = "# midas-ref parameter file"


@dataclass(frozen=True)
class KeySpec:
    """One key of the MIDAS parameter file.

    Parameters
    ----------
    name : str
        Canonical spelling (what we write).
    type : {int, float, str}
        Type of each value. ``int`` keys also accept integral decimals such as ``2.0`` or ``1E3``.
    count : int or None
        Values per line; ``None`` = any number (``PanelGapsY``, repeatable keys).
    default : object or None
        Value :meth:`ParameterFile.get` returns when the key is absent; ``None`` = no default (required).
    description : str
        Meaning, with unit.
    aliases : tuple of str
        Other spellings accepted on reading.
    repeatable : bool
        Every line adds its values (``RingsToExclude``, ``ImTransOpt``); read as a list.
    fallback : str or None
        Key whose value is used when this one is absent **or given as 0** (``tolP0`` ← ``tolP``).
    """

    name: str
    type: type
    count: int | None = 1
    default: object = None
    description: str = ""
    aliases: tuple[str, ...] = ()
    repeatable: bool = False
    fallback: str | None = None


def _k(name, type_, count=1, default=None, description="", **kw):
    return KeySpec(name, type_, count, default, description, **kw)


_REP = dict(count=None, default=(), repeatable=True)

#: Every key we know, grouped as in the manual (§4 -paramFN keys, §7 "Complete Parameter Reference"),
#: plus the keys the legacy orchestrator writes (spec autocalibrate.md §2.13, §3.1) and the CalibrantOMP /
#: CalibrantPanelShiftsOMP extras (spec legacy_engine.md §1, §3.1).
KEY_TABLE: tuple[KeySpec, ...] = (
    # --- file input
    _k("Folder", str, description="Data directory"),
    _k("FileStem", str, description="File name stem; data file = Folder/FileStem_<number>Ext"),
    _k("Ext", str, description="File extension, including the dot"),
    _k("Dark", str, description="Dark file path (an unreadable dark means dark = 0)"),
    _k("StartNr", int, description="First file number (inclusive)"),
    _k("EndNr", int, description="Last file number (inclusive)"),
    _k("Padding", int, 1, 6, "Zero-padding width of the file number, digits"),
    _k("DataType", int, 1, 1, "Pixel format: 1 uint16, 2 float64, 3 float32, 4 uint32, 5 int32, 6 TIFF "
       "uint32, 7 TIFF uint8, 8 HDF5, 9 TIFF uint16, 10 CBF"),
    _k("HeadSize", int, 1, 8192, "Header skipped in binary files, bytes (CalibrantPanelShiftsOMP: 0)"),
    _k("SkipFrame", int, 1, 0, "Frames skipped at the start before averaging", aliases=("skipFrame",)),
    _k("dataLoc", str, 1, "exchange/data", "HDF5 dataset holding the frames"),
    _k("darkLoc", str, 1, "exchange/dark", "HDF5 dataset holding the dark frames"),
    _k("dataDataset", str, description="Old CalibrantOMP spelling of dataLoc (parsed, unused)"),
    _k("darkDataset", str, description="Old CalibrantOMP spelling of darkLoc (parsed, unused)"),
    # --- detector geometry
    _k("NrPixels", int, description="Square detector: sets NrPixelsY and NrPixelsZ, pixels"),
    _k("NrPixelsY", int, description="Image width (columns, Y), pixels"),
    _k("NrPixelsZ", int, description="Image height (rows, Z), pixels"),
    _k("px", float, description="Pixel size, µm"),
    _k("Lsd", float, description="Sample → detector distance along the beam, µm", aliases=("Distance",)),
    _k("BC", float, 2, description="Beam centre Y Z (column, row), pixels"),
    _k("tx", float, 1, 0.0, "Detector tilt about the beam (X), degrees; never refined"),
    _k("ty", float, 1, 0.0, "Detector tilt about Y, degrees"),
    _k("tz", float, 1, 0.0, "Detector tilt about Z, degrees"),
    _k("p0", float, 1, 0.0, "Distortion coefficient of ρ²·cos 2η′, η′ = 90° − η (dimensionless)"),
    _k("p1", float, 1, 0.0, "Distortion coefficient of ρ⁴·cos(4η′ + p3), η′ = 90° − η (dimensionless)"),
    _k("p2", float, 1, 0.0, "Distortion coefficient of ρ² (dimensionless)"),
    _k("p3", float, 1, 0.0, "Phase of the p1 term, degrees"),
    _k("p4", float, 1, 0.0, "Distortion coefficient of ρ⁶ (dimensionless)"),
    _k("p5", float, 1, 0.0, "Distortion coefficient of ρ⁴ (dimensionless)"),
    _k("RhoD", float, description="Distortion normalisation radius and largest ring radius, µm (absent: beam "
       "centre → farthest corner)", aliases=("MaxRingRad",)),
    _k("ImTransOpt", int, **_REP, description="Image transform, in order: 0 none, 1 flip Y (left-right), "
       "2 flip Z (up-down), 3 transpose"),
    _k("Wedge", float, 1, 0.0, "Wedge angle, degrees (written by the legacy orchestrator; unused)"),
    # --- crystallography
    _k("SpaceGroup", int, description="Space group number of the calibrant (CeO2: 225)"),
    _k("LatticeConstant", float, 6, description="Lattice a b c (Å) α β γ (degrees)",
       aliases=("LatticeParameter",)),
    _k("Wavelength", float, description="X-ray wavelength, Å"),
    _k("MaxRingNumber", int, 1, 0, "Drop rings numbered above this; 0 = no limit"),
    # --- masking
    _k("BadPxIntensity", float, description="Pixel value marking bad pixels (legacy C: integer)"),
    _k("GapIntensity", float, description="Pixel value marking detector gaps (legacy C: integer)"),
    _k("MaskFile", str, description="uint8 TIFF mask, 1 = masked", aliases=("MaskFN",)),
    _k("GapFile", str, description="TIFF of gap pixels (old CalibrantOMP)"),
    _k("BadPxFile", str, description="TIFF of bad pixels (old CalibrantOMP)"),
    # --- optimisation tolerances (half-widths of the box bounds)
    _k("tolTilts", float, 1, 3.0, "Search half-width for ty, tz, degrees"),
    _k("tolBC", float, 1, 20.0, "Search half-width for BC, pixels"),
    _k("tolLsd", float, 1, 15000.0, "Search half-width for Lsd, µm"),
    _k("tolP", float, 1, 2e-3, "Search half-width for p0–p2 (dimensionless); in calibrate, giving it (or any "
       "tolP0–tolP4, DistortionOrder) fits the distortion as given instead of choosing the terms from the data"),
    _k("tolP0", float, fallback="tolP", description="Search half-width for p0; absent or 0 → tolP"),
    _k("tolP1", float, fallback="tolP", description="Search half-width for p1; absent or 0 → tolP"),
    _k("tolP2", float, fallback="tolP", description="Search half-width for p2; absent or 0 → tolP"),
    _k("tolP3", float, 1, 45.0, "Search half-width for p3, degrees; absent → 45 as CalibrantOMP "
       "(CalibrantPanelShiftsOMP quirk P5: tolP, which freezes p3)"),
    # the manual's default 0 stands for "use tolP", as CalibrantPanelShiftsOMP reads it
    _k("tolP4", float, 1, 0.0, "Search half-width for p4 (refined with DistortionOrder 6, or when calibrate "
       "chooses the terms from the data); absent or 0 → tolP", fallback="tolP"),
    _k("tolP5", float, 1, 0.0, "Parsed and ignored: p5 is modelled but never refined"),
    _k("tolShifts", float, 1, 1.0, "Search half-width for panel dY, dZ, pixels"),
    _k("tolRotation", float, 1, 0.0, "Search half-width for panel dTheta, degrees; 0 = not refined"),
    _k("tolLsdPanel", float, 1, 100.0, "Search half-width for per-panel dLsd, µm"),
    _k("tolP2Panel", float, 1, 1e-4, "Search half-width for per-panel dP2 (dimensionless)"),
    # --- calibration control
    _k("Width", float, description="Ring half-window seed, µm (the orchestrator writes 1000)"),
    _k("EtaBinSize", float, description="Azimuthal bin width, degrees"),
    _k("RingsToExclude", int, **_REP, aliases=("RingsToReject",), description="1-based ring numbers to drop"),
    _k("MultFactor", float, 1, 0.0, "Outlier factor × mean (engine) or × median (orchestrator) strain; 0 = off"),
    _k("StoppingStrain", float, 1, 4e-5, "Target mean pseudo-strain (dimensionless): a converged calibration "
       "above it is reported with a warning"),
    _k("MinIndicesForFit", int, 1, 1, "Minimum points per ring (per panel) to use it"),
    _k("RBinDivisions", int, 1, 4, "Radial sub-bins per pixel in the profiles"),
    _k("FitOrWeightedMean", int, 1, 0, "1 = peak position by intensity-weighted mean instead of a fit"),
    _k("nIterations", int, 1, 5, "Panel refinement: at most this many extraction + fit cycles, stopping once "
       "the model no longer moves the points; the best is kept (legacy default: 1 pass)"),
    _k("DoubletSeparation", float, 1, 0.0, "Rings closer than this are fitted jointly, pixels; 0 = off"),
    _k("DoubletWavelength", float, 1, 0.0, "Second wavelength in the beam (e.g. Kα2), Å: its rings are modelled "
       "and fitted too (midas-ref extension); 0 = none"),
    _k("NormalizeRingWeights", int, 1, 0, "1 = each ring weighs the same in the objective"),
    _k("WeightByRadius", int, 1, 0, "1 = weight points by R/Rmax"),
    _k("OutlierIterations", int, 1, 1, "Sigma-clipping passes"),
    _k("DistortionOrder", int, 1, 4, "4 = p0–p3; 6 adds p4 (CalibrantPanelShiftsOMP ignores it); in calibrate, "
       "giving it fits the distortion as given instead of choosing the terms from the data"),
    # --- multi-panel detectors
    _k("NPanelsY", int, 1, 0, "Panels along Y; 0 = monolithic detector"),
    _k("NPanelsZ", int, 1, 0, "Panels along Z; 0 = monolithic detector"),
    _k("PanelSizeY", int, 1, 0, "Panel width, pixels"),
    _k("PanelSizeZ", int, 1, 0, "Panel height, pixels"),
    _k("PanelGapsY", int, None, description="NPanelsY − 1 gaps between panels along Y, pixels (absent: 0)"),
    _k("PanelGapsZ", int, None, description="NPanelsZ − 1 gaps between panels along Z, pixels (absent: 0)"),
    _k("PanelShiftsFile", str, description="Per-panel corrections file (ID dY dZ dTheta dLsd dP2)"),
    _k("FixPanelID", int, 1, 0, "Panel held fixed (PanelGauge fixed)"),
    _k("PanelGauge", str, 1, None, "Gauge of the panel corrections: mean = zero mean shift and rotation, the "
       "global geometry is the mean panel (the default); fixed = FixPanelID holds still (legacy; the same fit "
       "expressed with another BC; the default when the file gives FixPanelID or with --optimizer nelder-mead); "
       "average = also zero net dilation (a constraint, not a gauge: it costs fit quality, docs/geometry.md §6.2)"),
    _k("PerPanelLsd", int, 1, 0, "1 = refine a per-panel Lsd offset"),
    _k("PerPanelDistortion", int, 1, 0, "1 = refine a per-panel p2 offset"),
    # --- integration keys of refined_MIDAS_params.txt (read by downstream integrators)
    _k("RMin", float, 1, 10.0, "Smallest radius integrated, pixels"),
    _k("RMax", float, 1, 0.0, "Largest radius integrated, pixels; 0 = automatic"),
    _k("RBinSize", float, 1, 0.25, "Radial bin width, pixels"),
    _k("EtaMin", float, 1, -180.0, "Smallest azimuth integrated, degrees"),
    _k("EtaMax", float, 1, 180.0, "Largest azimuth integrated, degrees"),
    _k("DoSmoothing", int, description="Integrator: 1 = smooth the profiles"),
    _k("DoPeakFit", int, description="Integrator: 1 = fit peaks"),
    _k("MultiplePeaks", int, description="Integrator: 1 = several peaks per profile"),
)

_SPECS = {spec.name: spec for spec in KEY_TABLE}
_ALIASES = {alias: spec.name for spec in KEY_TABLE for alias in spec.aliases}
assert len(_SPECS) == len(KEY_TABLE) and not set(_ALIASES) & set(_SPECS)


def key_spec(key: str) -> KeySpec | None:
    """The :class:`KeySpec` of ``key`` (canonical or alias spelling), or ``None`` for an unknown key."""
    return _SPECS.get(_ALIASES.get(key, key))


def key_table_markdown() -> str:
    """The key table as a Markdown table (included verbatim in ``docs/params.md``)."""
    rows = ["| Key | Type | Values | Default | Aliases | Description |", "|---|---|---|---|---|---|"]
    for s in KEY_TABLE:
        count = "1 or more, repeatable" if s.repeatable else ("any" if s.count is None else str(s.count))
        if s.fallback:
            default = f"= `{s.fallback}`"
        elif s.repeatable:
            default = "none"
        else:
            default = "—" if s.default is None else f"`{s.default}`"
        aliases = ", ".join(f"`{a}`" for a in s.aliases)
        rows.append(f"| `{s.name}` | {s.type.__name__} | {count} | {default} | {aliases} | {s.description} |")
    return "\n".join(rows) + "\n"


# ---- entries and values

_FORBIDDEN = re.compile(r"[\n\r\x00]")
_LINE = re.compile(r"([^ \t]+)[ \t]*(.*)\Z", re.DOTALL)
_INT = re.compile(r"[+-]?[0-9]+\Z")
_FLOAT = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?\Z")
_MISSING = object()


@dataclass(frozen=True)
class Entry:
    """One line of a parameter file.

    Parameters
    ----------
    key : str
        Key as written; ``""`` for a blank or comment-only line.
    value : str
        Everything after the key up to the comment, stripped of surrounding blanks.
    comment : str or None
        Text after ``#`` (without the ``#``), or ``None`` when the line has no comment.
    line : int or None
        1-based line number in the source, ``None`` for entries added by :meth:`ParameterFile.set`.
    """

    key: str
    value: str = ""
    comment: str | None = None
    line: int | None = None

    @property
    def tokens(self) -> list[str]:
        """The value split at blanks (spaces and tabs)."""
        return [t for t in re.split(r"[ \t]+", self.value) if t]

    def text(self) -> str:
        """The line as written by :meth:`ParameterFile.to_text`."""
        body = f"{self.key} {self.value}".strip(" ") if self.key else ""
        if self.comment is None:
            return body
        return f"{body} #{self.comment}" if body else f"#{self.comment}"


def _canonical(key: str) -> str:
    return _ALIASES.get(key, key)


def _number(token, kind, fail):
    if kind is int and _INT.match(token):
        try:
            return int(token)
        except ValueError:  # more than sys.get_int_max_str_digits() digits
            fail(f"integer {token[:20]}… is too long")
    if not _FLOAT.match(token):
        fail(f"{token!r} is not {'an integer' if kind is int else 'a number'}")
    value = float(token)
    if not math.isfinite(value):
        fail(f"{token!r} is not a finite number")
    if kind is int:
        if not value.is_integer():
            fail(f"{token!r} is not an integer")
        return int(value)
    return value


def _convert(spec: KeySpec, entry: Entry, path):
    """Typed value of one entry of a known key: scalar, tuple (multi-value) or tuple (repeatable line)."""
    def fail(message):
        raise ParameterFileError(message, path, entry.line, entry.key)

    if spec.type is str:
        if not entry.value:
            fail("expected a value")
        return entry.value
    tokens = entry.tokens
    if spec.repeatable and not tokens:
        fail("expected at least one value")
    if spec.count is not None and len(tokens) != spec.count:
        fail(f"expected {spec.count} value{'s' if spec.count > 1 else ''}, got {len(tokens)}")
    values = tuple(_number(token, spec.type, fail) for token in tokens)
    return values[0] if spec.count == 1 else values


def _format(value) -> str:
    """Text of a value for the file: ints as integers, floats with ``repr`` (shortest exact form)."""
    if isinstance(value, (str, os.PathLike)):
        return os.fspath(value).strip(" \t")
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        return repr(float(value))
    if isinstance(value, Iterable):
        return " ".join(_format(v) for v in value)
    raise ParameterFileError(f"cannot write a value of type {type(value).__name__}")


# ---- the file

@dataclass(frozen=True)
class ParameterFile:
    """An ordered MIDAS parameter file: every line is kept (unknown keys, comments) in order.

    Construct it with :func:`read_parameter_file` or :func:`parse_parameter_text`; read typed values with
    :meth:`get`; derive modified copies with :meth:`set` / :meth:`with_values`.

    Parameters
    ----------
    entries : tuple of Entry
        The lines, in file order.
    path : str or None
        Where the text came from (used in error messages).

    Raises
    ------
    ParameterFileError
        A value of a known key is malformed, or an entry cannot be written back as one line.
    """

    entries: tuple[Entry, ...] = ()
    path: str | None = None

    def __post_init__(self):
        object.__setattr__(self, "entries", tuple(self.entries))
        for e in self.entries:
            where = dict(path=self.path, line=e.line, key=e.key or None)
            if re.search(r"[ \t#]", e.key) or _FORBIDDEN.search(e.key):
                raise ParameterFileError("a key cannot contain blanks, '#', line breaks or NUL", **where)
            if "#" in e.value or _FORBIDDEN.search(e.value) or e.value != e.value.strip(" \t"):
                raise ParameterFileError(f"value {e.value!r} cannot be written on one line", **where)
            if e.comment is not None and _FORBIDDEN.search(e.comment):
                raise ParameterFileError("a comment cannot contain line breaks or NUL", **where)
            if not e.key and e.value:
                raise ParameterFileError("a value needs a key", **where)
            spec = key_spec(e.key)
            if spec is not None:
                _convert(spec, e, self.path)

    # -- reading
    def _sources(self, name: str) -> list[Entry]:
        names = {name, "NrPixels"} if name in ("NrPixelsY", "NrPixelsZ") else {name}
        return [e for e in self.entries if e.key and _canonical(e.key) in names]

    def has(self, key: str) -> bool:
        """Whether the file sets ``key`` (any spelling; ``NrPixels`` sets ``NrPixelsY`` and ``NrPixelsZ``)."""
        return bool(self._sources(_canonical(key)))

    def keys(self) -> list[str]:
        """Keys present, in order of first appearance; known keys under their canonical name."""
        return list(dict.fromkeys(_canonical(e.key) for e in self.entries if e.key))

    def get(self, key: str, default=_MISSING):
        """Typed value of ``key``.

        Resolution order: the last line setting the key (repeatable keys: all lines, as a list); for
        ``tolP0``–``tolP2`` a value of 0 counts as absent and falls back to ``tolP``; then the key-table
        default; then ``default``. Unknown keys return their raw value text.

        Parameters
        ----------
        key : str
            Canonical name or alias.
        default : object, optional
            Returned when neither the file nor the key table gives a value.

        Returns
        -------
        int, float, str, tuple or list
            Scalar for single-value keys, tuple for ``BC``, ``LatticeConstant``, ``PanelGapsY/Z``, list for
            ``RingsToExclude`` and ``ImTransOpt``.

        Raises
        ------
        ParameterFileError
            The key is absent, has no table default and no ``default`` was given.
        """
        name = _canonical(key)
        spec = _SPECS.get(name)
        sources = self._sources(name)
        if spec is None:
            if sources:
                return sources[-1].value
        elif spec.repeatable:
            return [v for e in sources for v in _convert(spec, e, self.path)] if sources else list(spec.default)
        else:
            value = _convert(spec, sources[-1], self.path) if sources else None
            if spec.fallback and not value:
                return self.get(spec.fallback, default)
            if value is None:
                value = spec.default
            if value is not None:
                return value
        if default is _MISSING:
            raise ParameterFileError("missing required key", self.path, key=key)
        return default

    def line_of(self, key: str) -> int | None:
        """Line number of the line that sets ``key`` (the last one; any spelling), or None."""
        sources = self._sources(_canonical(key))
        return sources[-1].line if sources else None

    def require_positive(self, *keys: str) -> None:
        """Raise a :class:`ParameterFileError` (file, line, key) for the first of ``keys`` whose value is ≤ 0."""
        for key in keys:
            value = self.get(key, None)
            if value is not None and not value > 0:
                raise ParameterFileError(f"must be > 0, got {value!r}", self.path, self.line_of(key), key)

    def require(self, *keys: str) -> None:
        """Raise one :class:`ParameterFileError` naming every key of ``keys`` that :meth:`get` cannot resolve."""
        absent = object()
        missing = [k for k in keys if self.get(k, absent) is absent]
        if missing:
            raise ParameterFileError(f"missing required key{'s' if len(missing) > 1 else ''}: "
                                     + ", ".join(missing), self.path, key=", ".join(missing))

    # -- modifying (copies)
    def set(self, key: str, value) -> ParameterFile:
        """Copy with ``key`` set to ``value`` (``None`` removes the key).

        The last line determining the key is replaced in place (keeping its comment) and earlier lines for
        it are dropped; a new key is appended. Repeatable keys take a sequence and get one line per value,
        at the place of their first line. Known keys are written under their canonical name. Setting
        ``NrPixels`` also drops ``NrPixelsY/Z``; setting ``NrPixelsY/Z`` goes after a later ``NrPixels``.
        """
        name = _canonical(key)
        spec = _SPECS.get(name)
        repeatable = spec is not None and spec.repeatable
        if value is None:
            new = []
        elif repeatable and not isinstance(value, (str, numbers.Number)):
            new = [Entry(name, _format(v)) for v in value]
        else:
            new = [Entry(name, _format(value))]
        own = {name, "NrPixelsY", "NrPixelsZ"} if name == "NrPixels" else {name}
        is_own = [bool(e.key) and _canonical(e.key) in own for e in self.entries]
        sources = [i for i, e in enumerate(self.entries)
                   if is_own[i] or (e.key == "NrPixels" and name in ("NrPixelsY", "NrPixelsZ"))]
        if not sources:
            return replace(self, entries=self.entries + tuple(new))
        anchor = sources[0] if repeatable else sources[-1]
        if is_own[anchor] and new:
            new[0] = replace(new[0], comment=self.entries[anchor].comment)
        out = []
        for i, e in enumerate(self.entries):
            if i == anchor:
                out.extend(new if is_own[i] else [e, *new])
            elif not is_own[i]:
                out.append(e)
        return replace(self, entries=tuple(out))

    def with_values(self, **values) -> ParameterFile:
        """Copy with several keys set (see :meth:`set`), e.g. ``pf.with_values(Lsd=1e6, BC=(1024, 1024))``."""
        result = self
        for key, value in values.items():
            result = result.set(key, value)
        return result

    # -- writing
    def to_text(self) -> str:
        """The file as text, one entry per line (a parsed file comes back with normalised blanks only)."""
        return "".join(e.text() + "\n" for e in self.entries)


def parse_parameter_text(text: str, source: str = "<string>") -> ParameterFile:
    """Parse MIDAS parameter text.

    One ``Key value …`` per line, separated by spaces or tabs (leading blanks allowed); ``#`` starts a
    comment; blank lines are kept. Aliases are resolved on access; for a non-repeatable key the last line
    wins (``NrPixels`` counts as a line for both ``NrPixelsY`` and ``NrPixelsZ``); repeatable keys
    accumulate. Numbers may use scientific notation (``2E-3``); NaN and infinities are rejected.

    Parameters
    ----------
    text : str
        File content (``\\n``, ``\\r\\n`` or ``\\r`` line ends).
    source : str
        Name used in error messages.

    Raises
    ------
    ParameterFileError
        NUL characters, or a malformed value of a known key (message names source, line and key).
    """
    if "\x00" in text:
        raise ParameterFileError("contains NUL characters (binary file?)", source)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    if lines[-1] == "":
        lines.pop()
    entries = []
    for number, raw in enumerate(lines, 1):
        body, hash_, comment = raw.partition("#")
        body = body.strip(" \t")
        comment = comment if hash_ else None
        if not body:
            entries.append(Entry("", "", comment, number))
            continue
        key, value = _LINE.match(body).groups()
        entries.append(Entry(key, value, comment, number))
    return ParameterFile(tuple(entries), source)


#: Byte-order marks of the wide Unicode encodings, UTF-32 first (its LE mark starts with UTF-16's).
_WIDE_BOMS = ((b"\xff\xfe\x00\x00", "UTF-32", "little-endian"), (b"\x00\x00\xfe\xff", "UTF-32", "big-endian"),
              (b"\xff\xfe", "UTF-16", "little-endian"), (b"\xfe\xff", "UTF-16", "big-endian"))


def _wide_text_encoding(data: bytes) -> str | None:
    """"UTF-16 text (…)" / "UTF-32 text (…)" if ``data`` looks like it (BOM or NUL pattern), else None.

    Without a byte-order mark, mostly-ASCII UTF-16 has a NUL in every other byte (UTF-32: three in four) and
    none in the others; binary files have NULs scattered.
    """
    for bom, name, order in _WIDE_BOMS:
        if data.startswith(bom):
            return f"{name} text ({order}, with a byte-order mark)"
    for width, name in ((4, "UTF-32"), (2, "UTF-16")):
        n = len(data) - len(data) % width
        if n < 2 * width:
            continue
        # share of NUL bytes at each byte position of a code unit
        nul_share = [data[i:n:width].count(0) / (n // width) for i in range(width)]
        for order, text_byte in (("little-endian", 0), ("big-endian", width - 1)):
            others = [i for i in range(width) if i != text_byte]
            if nul_share[text_byte] < 0.05 and all(nul_share[i] > 0.9 for i in others):
                return f"{name} text ({order}, without a byte-order mark)"
    return None


def read_parameter_file(path: str | os.PathLike) -> ParameterFile:
    """Read a MIDAS parameter file (UTF-8 text; see :func:`parse_parameter_text` for the rules).

    Raises
    ------
    ParameterFileError
        The file is missing, unreadable, not UTF-8 text (UTF-16/UTF-32 text is named as such), or has a
        malformed value.
    """
    name = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ParameterFileError(f"cannot read: {exc.strerror or exc}", name) from exc
    if b"\x00" in data or data[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = _wide_text_encoding(data)
        if encoding is not None:
            raise ParameterFileError(f"file is {encoding}, not UTF-8; save it as UTF-8 (or ASCII)", name)
        raise ParameterFileError("binary file, not a text parameter file", name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParameterFileError(f"not UTF-8 text (byte {exc.start})", name) from exc
    return parse_parameter_text(text, name)


def write_parameter_file(pf: ParameterFile, path: str | os.PathLike) -> None:
    """Write ``pf`` atomically, with :data:`FORMAT_HEADER` as the first line (an older one is replaced)."""
    from .atomic import write_text_atomic

    body = [e for e in pf.entries if e.key or not f"#{e.comment}".startswith(_HEADER_PREFIX)]
    write_text_atomic(path, ParameterFile((Entry("", "", FORMAT_HEADER[1:]), *body), pf.path).to_text())


# ---- the key <-> field mapping (the one place legacy keys meet the detector dataclasses)

#: Legacy key → :class:`~midas_ref.detector.Geometry` field, in the order the keys are written; ``BC`` is
#: the pair ``(bc_y_px, bc_z_px)``.
GEOMETRY_KEYS: tuple[tuple[str, str | tuple[str, str]], ...] = (
    ("Lsd", "lsd_um"), ("BC", ("bc_y_px", "bc_z_px")), ("tx", "tx_deg"), ("ty", "ty_deg"), ("tz", "tz_deg"),
    ("p0", "p0"), ("p1", "p1"), ("p2", "p2"), ("p3", "p3_deg"), ("p4", "p4"), ("p5", "p5"), ("RhoD", "rho_d_um"),
    ("px", "px_um"), ("NrPixelsY", "n_pixels_y"), ("NrPixelsZ", "n_pixels_z"))
#: Keys that describe the detector itself rather than its pose or distortion.
DETECTOR_KEYS = ("px", "NrPixelsY", "NrPixelsZ")
#: Distortion keys (p5 is modelled but never refined).
DISTORTION_KEYS = ("p0", "p1", "p2", "p3", "p4", "p5")
#: Legacy panel-grid key → :class:`~midas_ref.detector.PanelLayout` field.
PANEL_LAYOUT_KEYS = (("NPanelsY", "n_panels_y"), ("NPanelsZ", "n_panels_z"), ("PanelSizeY", "size_y_px"),
                     ("PanelSizeZ", "size_z_px"), ("PanelGapsY", "gaps_y_px"), ("PanelGapsZ", "gaps_z_px"))
#: Legacy key → its name among a MIDAS Zarr zip's ``analysis_parameters`` (FGZ's renames; ``BC`` is stored
#: as ``YCen``/``ZCen``, see :func:`params_from_zip`).
ZIP_NAMES = {
    "px": "PixelSize", "LatticeConstant": "LatticeParameter", "resultFolder": "ResultFolder",
    "OmegaRange": "OmegaRanges", "BoxSize": "BoxSizes", "Completeness": "MinMatchesToAcceptFrac",
    "OverAllRingToIndex": "OverallRingToIndex",
}
#: The zip parameters a calibration takes when the parameter file does not set them.
_ZIP_CALIBRATION_KEYS = ("px", "Wavelength", "tx", "SpaceGroup", "SkipFrame", "Lsd", "RhoD", "LatticeConstant",
                         "ImTransOpt", "BC")


def key_values_from_geometry(geometry: Geometry) -> dict[str, object]:
    """Legacy key → value of every key in :data:`GEOMETRY_KEYS` (``BC`` as a ``(Y, Z)`` tuple), in that order."""
    return {key: (tuple(getattr(geometry, f) for f in field_) if isinstance(field_, tuple)
                  else getattr(geometry, field_)) for key, field_ in GEOMETRY_KEYS}


def geometry_from_params(pf: ParameterFile, *, defaults: Mapping[str, object] | None = None,
                         overrides: Mapping[str, object] | None = None) -> Geometry:
    """Build a :class:`Geometry` from Lsd, BC, px, NrPixelsY/Z, tx–tz, p0–p5 and RhoD.

    Parameters
    ----------
    pf : ParameterFile
    defaults : mapping, optional
        Legacy key → value used when ``pf`` does not set the key (e.g. ``{"Lsd": 1e6}``).
    overrides : mapping, optional
        Legacy key → value used whatever ``pf`` says (e.g. the detector size read off the image).
        Absent tilts and distortion are 0, absent RhoD the beam centre → farthest corner distance.

    Raises
    ------
    ParameterFileError
        Required keys missing (all named in one error) or values that make no valid geometry.
    """
    given = dict(defaults or {})
    given.update({key: pf.get(key) for key, _ in GEOMETRY_KEYS if pf.has(key)})
    given.update(overrides or {})
    missing = [key for key in ("Lsd", "BC", "px", "NrPixelsY", "NrPixelsZ") if key not in given]
    if missing:
        pf.require(*missing)
    fields = {}
    for key, field_ in GEOMETRY_KEYS:
        if key in given:
            if isinstance(field_, tuple):
                fields.update(zip(field_, given[key]))
            else:
                fields[field_] = given[key]
    try:
        return Geometry(**fields)
    except GeometryError as exc:
        raise _in_keys(exc, pf, GEOMETRY_KEYS, "invalid geometry", not_from_file=overrides or {},
                       computed={"RhoD": "the distance from BC to the farthest detector corner"}) from exc


def params_from_geometry(geometry: Geometry, base: ParameterFile | None = None) -> ParameterFile:
    """``base`` (or an empty file) with every key of :data:`GEOMETRY_KEYS` set from ``geometry``."""
    pf = base if base is not None else ParameterFile()
    return pf.with_values(**key_values_from_geometry(geometry))


def panel_layout_from_params(pf: ParameterFile) -> PanelLayout | None:
    """The panel grid of NPanelsY/Z, PanelSizeY/Z, PanelGapsY/Z; ``None`` when NPanelsY/Z are absent or 0.

    Absent PanelGapsY/Z mean gaps of 0 (legacy behaviour).

    Raises
    ------
    ParameterFileError
        Inconsistent values (e.g. the number of gaps is not NPanels − 1).
    """
    ny, nz = pf.get("NPanelsY"), pf.get("NPanelsZ")
    if not ny or not nz:
        return None
    fields = {field_: pf.get(key, None) for key, field_ in PANEL_LAYOUT_KEYS}
    if fields["gaps_y_px"] is None:
        fields["gaps_y_px"] = (0,) * (ny - 1)
    if fields["gaps_z_px"] is None:
        fields["gaps_z_px"] = (0,) * (nz - 1)
    try:
        return PanelLayout(**fields)
    except GeometryError as exc:
        raise _in_keys(exc, pf, PANEL_LAYOUT_KEYS, "invalid panel layout") from exc


def _in_keys(exc: GeometryError, pf: ParameterFile, keys, what: str, *, not_from_file=(),
             computed: Mapping[str, str] | None = None) -> ParameterFileError:
    """``exc`` (a field of :mod:`midas_ref.detector` is invalid) restated under its legacy key in ``keys``.

    ``"<file>, line <n>, key 'px': pixel size must be > 0 µm, got -5.0"``: the key as the file spells it
    (``Distance`` for ``Lsd`` …) and its line when the value is the file's (not for the keys of
    ``not_from_file``, whose value the caller replaced); a key the file does not set says how its value was
    made (``computed``). Errors that name no field keep their message after ``what``.
    """
    field_ = getattr(exc, "field", None)
    key = next((k for k, f in keys if field_ == f or (isinstance(f, tuple) and field_ in f)), None)
    if key is None:
        return ParameterFileError(f"{what}: {exc}", pf.path)
    line = pf.line_of(key) if pf.has(key) and key not in not_from_file else None
    spelled = next((e.key for e in pf.entries if e.key and e.line == line), key) if line is not None else key
    message = f"{exc.quantity} {exc.detail}"
    if not pf.has(key) and key in (computed or {}):
        message += f" (not in the file: {computed[key]}; set {key} explicitly)"
    return ParameterFileError(message, pf.path, line, spelled)


def key_values_from_panel_layout(layout: PanelLayout) -> dict[str, object]:
    """Legacy key → value of the panel grid (gap keys only when there is more than one panel along the axis)."""
    values = {key: getattr(layout, field_) for key, field_ in PANEL_LAYOUT_KEYS}
    return {key: (list(v) if isinstance(v, tuple) else v) for key, v in values.items()
            if not (isinstance(v, tuple) and not v)}


def params_from_zip(parameters: Mapping[str, object]) -> dict[str, object]:
    """Parameter-file values carried by a MIDAS Zarr zip's ``analysis_parameters``, under their legacy keys.

    Only the keys a calibration reads (:data:`_ZIP_CALIBRATION_KEYS`): the zip names of :data:`ZIP_NAMES`
    renamed back, ``YCen``/``ZCen`` joined into ``BC``, FGZ's ``ImTransOpt [-1]`` placeholder dropped.
    """
    import numpy as np  # only this converter handles arrays; params stays importable without numpy

    back = {name: key for key, name in ZIP_NAMES.items()}
    values: dict[str, object] = {}
    for name, value in parameters.items():
        key = back.get(name, name)
        if key not in _ZIP_CALIBRATION_KEYS:
            continue
        arr = np.asarray(value).ravel()
        if key == "LatticeConstant":
            values[key] = tuple(float(v) for v in arr[:6])
        elif key == "ImTransOpt":
            options = [int(v) for v in arr if int(v) >= 0]
            if options:
                values[key] = options
        elif arr.size:
            values[key] = arr[0].item()
    if "YCen" in parameters and "ZCen" in parameters:
        values["BC"] = (float(np.ravel(parameters["YCen"])[0]), float(np.ravel(parameters["ZCen"])[0]))
    return values


def write_refined_params(path: str | os.PathLike, geometry: Geometry, *, wavelength_angstrom: float,
                         space_group: int, lattice: Iterable[float], eta_bin_size_deg: float,
                         skip_frame: int = 0, im_trans_opt: Iterable[int] = (0,),
                         bad_px_intensity: float | None = None, gap_intensity: float | None = None,
                         extra: Mapping[str, object] | None = None, comments: Iterable[str] = ()) -> ParameterFile:
    """Write ``refined_MIDAS_params.txt`` in the legacy key order (spec autocalibrate.md §3.1).

    Order: ``Lsd, BC, tx, ty, tz, p0–p3, RhoD, Wavelength, px, RMin 10, RMax 1000, RBinSize 1, EtaMin -180,
    EtaMax 180, NrPixelsY, NrPixelsZ, EtaBinSize, DoSmoothing 1, DoPeakFit 1, skipFrame, MultiplePeaks 1,
    ImTransOpt…, [BadPxIntensity], [GapIntensity], [p4], [p5], SpaceGroup, LatticeConstant``, then ``extra``.
    The first line is :data:`FORMAT_HEADER`.

    Parameters
    ----------
    path : path-like
        Output file (written atomically).
    geometry : Geometry
        Refined geometry; Lsd, BC, tilts and p0–p5 are written ``%0.12f`` as the legacy program does,
        RhoD, px and Wavelength with ``repr``.
    wavelength_angstrom : float
        X-ray wavelength, Å.
    space_group : int
        Calibrant space group number.
    lattice : sequence of 6 float
        a, b, c (Å), α, β, γ (degrees).
    eta_bin_size_deg : float
        Azimuthal bin width actually used, degrees (legacy wrote the constant 5).
    skip_frame : int
        Frames skipped (written as the legacy lower-case ``skipFrame``).
    im_trans_opt : sequence of int
        Image transforms, one line each.
    bad_px_intensity, gap_intensity : float, optional
        Sentinel pixel values; written only when given.
    extra : mapping, optional
        More keys appended at the end (e.g. ``DataType``, panel keys), as :meth:`ParameterFile.set` does.
    comments : sequence of str
        ``#`` lines written after the keys (parsers skip them), e.g. the standard errors.

    Returns
    -------
    ParameterFile
        What was written.

    Raises
    ------
    ValueError
        ``extra`` repeats a key written above.
    ParameterFileError
        A malformed value (e.g. ``lattice`` without 6 values).
    """
    g = geometry
    f12 = "{:0.12f}".format
    rows = [("Lsd", f12(g.lsd_um)), ("BC", f"{f12(g.bc_y_px)} {f12(g.bc_z_px)}"), ("tx", f12(g.tx_deg)),
            ("ty", f12(g.ty_deg)), ("tz", f12(g.tz_deg)), ("p0", f12(g.p0)), ("p1", f12(g.p1)),
            ("p2", f12(g.p2)), ("p3", f12(g.p3_deg)), ("RhoD", _format(g.rho_d_um)),
            ("Wavelength", _format(float(wavelength_angstrom))), ("px", _format(g.px_um)),
            ("RMin", "10"), ("RMax", "1000"), ("RBinSize", "1"), ("EtaMin", "-180"), ("EtaMax", "180"),
            ("NrPixelsY", str(g.n_pixels_y)), ("NrPixelsZ", str(g.n_pixels_z)),
            ("EtaBinSize", _format(float(eta_bin_size_deg))), ("DoSmoothing", "1"), ("DoPeakFit", "1"),
            ("skipFrame", _format(skip_frame)), ("MultiplePeaks", "1")]
    rows += [("ImTransOpt", _format(k)) for k in im_trans_opt]
    rows += [(key, _format(float(v))) for key, v in (("BadPxIntensity", bad_px_intensity),
                                                      ("GapIntensity", gap_intensity)) if v is not None]
    rows += [(key, f12(v)) for key, v in (("p4", g.p4), ("p5", g.p5)) if v != 0]
    rows += [("SpaceGroup", _format(space_group)), ("LatticeConstant", _format(lattice))]
    pf = ParameterFile(tuple(Entry(key, text) for key, text in rows), os.fspath(path))
    for key, value in (extra or {}).items():
        if pf.has(key):
            raise ValueError(f"extra key {key!r} is already written by write_refined_params")
        pf = pf.set(key, value)
    pf = ParameterFile((*pf.entries, *(Entry("", "", f" {line}") for line in comments)), pf.path)
    write_parameter_file(pf, path)
    return pf
