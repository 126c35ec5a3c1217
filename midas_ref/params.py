"""Parameter groups (small frozen dataclasses) and the MIDAS parameter-file format.

The dataclasses here are what the computational modules take. Legacy key spellings (``Lsd``, ``BC``,
``RhoD`` ...) appear only in the key table of this module; everything else uses the unit-suffixed field
names below.
"""

from __future__ import annotations

import math
import numbers
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import GeometryError, ParameterFileError

__all__ = ["Geometry", "PanelLayout", "PanelShift", "default_rho_d_um",
           "KeySpec", "KEY_TABLE", "key_spec", "key_table_markdown", "Entry", "ParameterFile", "FORMAT_HEADER",
           "parse_parameter_text", "read_parameter_file", "write_parameter_file", "geometry_from_params",
           "params_from_geometry", "panel_layout_from_params", "write_refined_params"]


def default_rho_d_um(bc_y_px: float, bc_z_px: float, n_pixels_y: int, n_pixels_z: int,
                     px_um: float) -> float:
    """Distance from the beam centre to the farthest detector corner, in µm.

    This is the legacy ``RhoD`` choice (spec autocalibrate.md §2.12) *without* its Y/Z swap: corners are
    taken at pixel-centre coordinates (0 or N−1) in each axis.
    """
    corners_y = (0.0, n_pixels_y - 1.0)
    corners_z = (0.0, n_pixels_z - 1.0)
    far = max(math.hypot(cy - bc_y_px, cz - bc_z_px) for cy in corners_y for cz in corners_z)
    return far * px_um


@dataclass(frozen=True)
class Geometry:
    """Geometry of one flat detector in the MIDAS convention (``docs/geometry.md``).

    Parameters
    ----------
    lsd_um : float
        Sample → detector distance along the beam (to the beam/detector intersection), µm.
    bc_y_px, bc_z_px : float
        Beam centre: column (Y) and row (Z) of the image, pixels; integer values are pixel centres.
    px_um : float
        Pixel size, µm (square pixels).
    n_pixels_y, n_pixels_z : int
        Image width (columns, Y) and height (rows, Z) after ``ImTransOpt``.
    tx_deg, ty_deg, tz_deg : float
        Detector tilts about lab X (beam), Y and Z, degrees; ``T = Rx(tx)·Ry(ty)·Rz(tz)``, pivot at the
        beam centre.
    p0, p1, p2, p4, p5 : float
        Radial distortion coefficients (dimensionless):
        ``D = 1 + p0·ρ²·cos 2η' + p1·ρ⁴·cos(4η' + p3) + p2·ρ² + p4·ρ⁶ + p5·ρ⁴``, ρ = R/RhoD,
        η' = 90° − η.
    p3_deg : float
        Phase of the p1 term, degrees.
    rho_d_um : float, optional
        Distortion normalisation radius ``RhoD``, µm. Defaults to the beam-centre → farthest-corner
        distance (:func:`default_rho_d_um`).

    Raises
    ------
    GeometryError
        Non-finite values, non-positive distance, pixel size, detector size or RhoD.
    """

    lsd_um: float
    bc_y_px: float
    bc_z_px: float
    px_um: float
    n_pixels_y: int
    n_pixels_z: int
    tx_deg: float = 0.0
    ty_deg: float = 0.0
    tz_deg: float = 0.0
    p0: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    p3_deg: float = 0.0
    p4: float = 0.0
    p5: float = 0.0
    rho_d_um: float | None = None

    def __post_init__(self):
        if self.rho_d_um is None:
            object.__setattr__(self, "rho_d_um", default_rho_d_um(
                self.bc_y_px, self.bc_z_px, self.n_pixels_y, self.n_pixels_z, self.px_um))
        for name in ("lsd_um", "bc_y_px", "bc_z_px", "px_um", "tx_deg", "ty_deg", "tz_deg", "p0", "p1",
                     "p2", "p3_deg", "p4", "p5", "rho_d_um"):
            value = getattr(self, name)
            if not math.isfinite(value):
                raise GeometryError(f"geometry value {name} = {value!r} is not a finite number")
        for name in ("lsd_um", "px_um", "rho_d_um"):
            if getattr(self, name) <= 0:
                raise GeometryError(f"geometry value {name} = {getattr(self, name)!r} must be > 0")
        for name in ("n_pixels_y", "n_pixels_z"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) <= 0:
                raise GeometryError(f"detector size {name} = {getattr(self, name)!r} must be a positive integer")

    @property
    def shape(self) -> tuple[int, int]:
        """Image shape ``(rows, cols) = (n_pixels_z, n_pixels_y)``."""
        return (int(self.n_pixels_z), int(self.n_pixels_y))

    @property
    def distortion(self) -> tuple[float, float, float, float, float, float]:
        """``(p0, p1, p2, p3_deg, p4, p5)``."""
        return (self.p0, self.p1, self.p2, self.p3_deg, self.p4, self.p5)


@dataclass(frozen=True)
class PanelLayout:
    """Grid of identical rectangular panels (manual §7; spec legacy_engine.md §3.3).

    Panel ``id = iy·n_panels_z + iz`` (Y-major, as the legacy code). Panel ``(iy, iz)`` covers columns
    ``Y0(iy) … Y0(iy)+size_y_px−1`` and rows ``Z0(iz) … Z0(iz)+size_z_px−1`` with ``Y0(0) = 0`` and
    ``Y0(i+1) = Y0(i) + size_y_px + gaps_y_px[i]`` (same for Z).
    """

    n_panels_y: int
    n_panels_z: int
    size_y_px: int
    size_z_px: int
    gaps_y_px: tuple[int, ...] = ()
    gaps_z_px: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "gaps_y_px", tuple(int(g) for g in self.gaps_y_px))
        object.__setattr__(self, "gaps_z_px", tuple(int(g) for g in self.gaps_z_px))
        for name in ("n_panels_y", "n_panels_z", "size_y_px", "size_z_px"):
            if getattr(self, name) <= 0:
                raise GeometryError(f"panel layout {name} = {getattr(self, name)!r} must be > 0")
        if len(self.gaps_y_px) != self.n_panels_y - 1:
            raise GeometryError(f"PanelGapsY needs {self.n_panels_y - 1} values (NPanelsY − 1), "
                                f"got {len(self.gaps_y_px)}")
        if len(self.gaps_z_px) != self.n_panels_z - 1:
            raise GeometryError(f"PanelGapsZ needs {self.n_panels_z - 1} values (NPanelsZ − 1), "
                                f"got {len(self.gaps_z_px)}")
        if any(g < 0 for g in self.gaps_y_px + self.gaps_z_px):
            raise GeometryError("panel gaps must be >= 0")

    @property
    def n_panels(self) -> int:
        return self.n_panels_y * self.n_panels_z


@dataclass(frozen=True)
class PanelShift:
    """Per-panel correction (``panelshifts.txt`` row ``ID dY dZ dTheta dLsd dP2``).

    Parameters
    ----------
    id : int
        Panel id (see :class:`PanelLayout`).
    dy_px, dz_px : float
        Translation of the panel, pixels.
    dtheta_deg : float
        In-plane rotation about the panel centre, degrees, counter-clockwise in (y, z).
    dlsd_um : float
        Per-panel distance offset, µm.
    dp2 : float
        Per-panel offset of the p2 distortion coefficient.
    """

    id: int
    dy_px: float = 0.0
    dz_px: float = 0.0
    dtheta_deg: float = 0.0
    dlsd_um: float = 0.0
    dp2: float = 0.0


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
    _k("p0", float, 1, 0.0, "Distortion coefficient of ρ²·cos 2η (dimensionless)"),
    _k("p1", float, 1, 0.0, "Distortion coefficient of ρ⁴·cos(4η + p3) (dimensionless)"),
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
    _k("tolP", float, 1, 2e-3, "Search half-width for p0–p2 (dimensionless)"),
    _k("tolP0", float, fallback="tolP", description="Search half-width for p0; absent or 0 → tolP"),
    _k("tolP1", float, fallback="tolP", description="Search half-width for p1; absent or 0 → tolP"),
    _k("tolP2", float, fallback="tolP", description="Search half-width for p2; absent or 0 → tolP"),
    _k("tolP3", float, 1, 45.0, "Search half-width for p3, degrees; absent → 45 as CalibrantOMP "
       "(CalibrantPanelShiftsOMP quirk P5: tolP, which freezes p3)"),
    _k("tolP4", float, 1, 0.0, "Search half-width for p4; 0 = fixed (CalibrantPanelShiftsOMP: tolP)"),
    _k("tolP5", float, 1, 0.0, "Search half-width for p5; 0 = fixed (CalibrantPanelShiftsOMP: tolP)"),
    _k("tolShifts", float, 1, 1.0, "Search half-width for panel dY, dZ, pixels"),
    _k("tolRotation", float, 1, 0.0, "Search half-width for panel dTheta, degrees; 0 = not refined"),
    _k("tolLsdPanel", float, 1, 100.0, "Search half-width for per-panel dLsd, µm"),
    _k("tolP2Panel", float, 1, 1e-4, "Search half-width for per-panel dP2 (dimensionless)"),
    # --- calibration control
    _k("Width", float, description="Ring half-window seed, µm (the orchestrator writes 1000)"),
    _k("EtaBinSize", float, description="Azimuthal bin width, degrees"),
    _k("RingsToExclude", int, **_REP, aliases=("RingsToReject",), description="1-based ring numbers to drop"),
    _k("MultFactor", float, 1, 0.0, "Outlier factor × mean (engine) or × median (orchestrator) strain; 0 = off"),
    _k("StoppingStrain", float, 1, 4e-5, "Orchestrator convergence: mean pseudo-strain (dimensionless)"),
    _k("MinIndicesForFit", int, 1, 1, "Minimum points per ring (per panel) to use it"),
    _k("RBinDivisions", int, 1, 4, "Radial sub-bins per pixel in the profiles"),
    _k("FitOrWeightedMean", int, 1, 0, "1 = peak position by intensity-weighted mean instead of a fit"),
    _k("nIterations", int, 1, 1, "Refinement iterations (best result kept)"),
    _k("DoubletSeparation", float, 1, 0.0, "Rings closer than this are fitted jointly, pixels; 0 = off"),
    _k("DoubletWavelength", float, 1, 0.0, "Second wavelength in the beam (e.g. Kα2), Å: its rings are modelled "
       "and fitted too (midas-ref extension); 0 = none"),
    _k("NormalizeRingWeights", int, 1, 0, "1 = each ring weighs the same in the objective"),
    _k("WeightByRadius", int, 1, 0, "1 = weight points by R/Rmax"),
    _k("OutlierIterations", int, 1, 1, "Sigma-clipping passes"),
    _k("DistortionOrder", int, 1, 4, "4 = p0–p3; 6 adds p4 (CalibrantPanelShiftsOMP ignores it)"),
    # --- multi-panel detectors
    _k("NPanelsY", int, 1, 0, "Panels along Y; 0 = monolithic detector"),
    _k("NPanelsZ", int, 1, 0, "Panels along Z; 0 = monolithic detector"),
    _k("PanelSizeY", int, 1, 0, "Panel width, pixels"),
    _k("PanelSizeZ", int, 1, 0, "Panel height, pixels"),
    _k("PanelGapsY", int, None, description="NPanelsY − 1 gaps between panels along Y, pixels (absent: 0)"),
    _k("PanelGapsZ", int, None, description="NPanelsZ − 1 gaps between panels along Z, pixels (absent: 0)"),
    _k("PanelShiftsFile", str, description="Per-panel corrections file (ID dY dZ dTheta dLsd dP2)"),
    _k("FixPanelID", int, 1, 0, "Panel held fixed"),
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


def read_parameter_file(path: str | os.PathLike) -> ParameterFile:
    """Read a MIDAS parameter file (UTF-8 text; see :func:`parse_parameter_text` for the rules).

    Raises
    ------
    ParameterFileError
        The file is missing, unreadable, not UTF-8 text, or has a malformed value.
    """
    name = os.fspath(path)
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ParameterFileError(f"cannot read: {exc.strerror or exc}", name) from exc
    if b"\x00" in data:
        raise ParameterFileError("binary file, not a text parameter file", name)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ParameterFileError(f"not UTF-8 text (byte {exc.start})", name) from exc
    return parse_parameter_text(text, name)


def write_parameter_file(pf: ParameterFile, path: str | os.PathLike) -> None:
    """Write ``pf`` atomically, with :data:`FORMAT_HEADER` as the first line (an older one is replaced)."""
    from .io import write_text_atomic  # deferred: io pulls in the image libraries

    body = [e for e in pf.entries if e.key or not f"#{e.comment}".startswith(_HEADER_PREFIX)]
    write_text_atomic(path, ParameterFile((Entry("", "", FORMAT_HEADER[1:]), *body), pf.path).to_text())


# ---- builders

#: Legacy key → :class:`Geometry` field (``BC`` maps to ``bc_y_px``, ``bc_z_px``).
_GEOMETRY_KEYS = (("Lsd", "lsd_um"), ("px", "px_um"), ("NrPixelsY", "n_pixels_y"), ("NrPixelsZ", "n_pixels_z"),
                  ("tx", "tx_deg"), ("ty", "ty_deg"), ("tz", "tz_deg"), ("p0", "p0"), ("p1", "p1"),
                  ("p2", "p2"), ("p3", "p3_deg"), ("p4", "p4"), ("p5", "p5"), ("RhoD", "rho_d_um"))


def geometry_from_params(pf: ParameterFile) -> Geometry:
    """Build a :class:`Geometry` from Lsd, BC, px, NrPixelsY/Z, tx–tz, p0–p5 and RhoD (absent: default).

    Raises
    ------
    ParameterFileError
        Required keys missing (all named in one error) or values that make no valid geometry.
    """
    pf.require("Lsd", "BC", "px", "NrPixelsY", "NrPixelsZ")
    fields = {field_: pf.get(key, None) for key, field_ in _GEOMETRY_KEYS}
    fields["bc_y_px"], fields["bc_z_px"] = pf.get("BC")
    try:
        return Geometry(**fields)
    except GeometryError as exc:
        raise ParameterFileError(f"invalid geometry: {exc}", pf.path) from exc


def params_from_geometry(geometry: Geometry, base: ParameterFile | None = None) -> ParameterFile:
    """``base`` (or an empty file) with the keys of :func:`geometry_from_params` set from ``geometry``."""
    pf = base if base is not None else ParameterFile()
    values = {key: getattr(geometry, field_) for key, field_ in _GEOMETRY_KEYS}
    return pf.with_values(**values, BC=(geometry.bc_y_px, geometry.bc_z_px))


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
    gaps_y = pf.get("PanelGapsY", None)
    gaps_z = pf.get("PanelGapsZ", None)
    try:
        return PanelLayout(ny, nz, pf.get("PanelSizeY"), pf.get("PanelSizeZ"),
                           (0,) * (ny - 1) if gaps_y is None else gaps_y,
                           (0,) * (nz - 1) if gaps_z is None else gaps_z)
    except GeometryError as exc:
        raise ParameterFileError(f"invalid panel layout: {exc}", pf.path) from exc


def write_refined_params(path: str | os.PathLike, geometry: Geometry, *, wavelength_angstrom: float,
                         space_group: int, lattice: Iterable[float], eta_bin_size_deg: float,
                         skip_frame: int = 0, im_trans_opt: Iterable[int] = (0,),
                         bad_px_intensity: float | None = None, gap_intensity: float | None = None,
                         extra: Mapping[str, object] | None = None) -> ParameterFile:
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
    write_parameter_file(pf, path)
    return pf
