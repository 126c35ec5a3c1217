"""The detector description: small frozen dataclasses of geometry and panel layout, in unit-suffixed fields.

These are what the computational modules take (``docs/geometry.md`` defines every frame and sign). The
legacy parameter-file spellings (``Lsd``, ``BC``, ``RhoD`` …) and the mapping between them and these fields
live in :mod:`midas_ref.params`; this module imports nothing else of midas-ref but the error types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import GeometryError

__all__ = ["Geometry", "PanelLayout", "PanelShift", "default_rho_d_um"]

#: Field → (what it is, unit) for error messages; the unit is "" for dimensionless values.
_QUANTITY = {
    "lsd_um": ("sample → detector distance", "µm"), "bc_y_px": ("beam centre Y (column)", "px"),
    "bc_z_px": ("beam centre Z (row)", "px"), "px_um": ("pixel size", "µm"),
    "n_pixels_y": ("detector width (columns)", "px"), "n_pixels_z": ("detector height (rows)", "px"),
    "tx_deg": ("tilt about the beam (X)", "°"), "ty_deg": ("tilt about Y", "°"), "tz_deg": ("tilt about Z", "°"),
    **{name: ("distortion coefficient", "") for name in ("p0", "p1", "p2", "p4", "p5")},
    "p3_deg": ("distortion phase", "°"),
    "rho_d_um": ("distortion radius", "µm"),
    "n_panels_y": ("number of panels along Y", ""), "n_panels_z": ("number of panels along Z", ""),
    "size_y_px": ("panel width", "px"), "size_z_px": ("panel height", "px"),
    "gaps_y_px": ("panel gaps along Y", "px"), "gaps_z_px": ("panel gaps along Z", "px"),
}


def _field_error(field: str, detail: str) -> GeometryError:
    """A :class:`GeometryError` about one field, which an edge that knows the user's name for it can restate.

    The error carries ``field`` (e.g. ``"px_um"``), ``quantity`` (``"pixel size"``) and ``detail`` (``"must
    be > 0 µm, got -5.0"``); its message is "<quantity> <field> <detail>".
    :func:`midas_ref.params.geometry_from_params` turns it into "<file>, line <n>, key 'px': <quantity>
    <detail>".
    """
    quantity = _QUANTITY[field][0]
    error = GeometryError(f"{quantity} {field} {detail}")
    error.field, error.quantity, error.detail = field, quantity, detail
    return error


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
        Non-finite values, non-positive distance, pixel size, detector size or RhoD. The error names the
        field in its message and carries it as ``field`` (with ``quantity``, the field in words, and
        ``detail``, what is wrong), so that callers can restate it in their own terms.
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
                raise _field_error(name, f"must be a finite number, got {value!r}")
        for name in ("lsd_um", "px_um", "rho_d_um"):
            if getattr(self, name) <= 0:
                raise _field_error(name, f"must be > 0 {_QUANTITY[name][1]}, got {getattr(self, name)!r}")
        for name in ("n_pixels_y", "n_pixels_z"):
            if int(getattr(self, name)) != getattr(self, name) or getattr(self, name) <= 0:
                raise _field_error(name, f"must be a positive whole number of pixels, got {getattr(self, name)!r}")

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
                raise _field_error(name, f"must be > 0, got {getattr(self, name)!r}")
        for axis, gaps, n_panels in (("Y", self.gaps_y_px, self.n_panels_y), ("Z", self.gaps_z_px, self.n_panels_z)):
            field = f"gaps_{axis.lower()}_px"
            if len(gaps) != n_panels - 1:
                raise _field_error(field, f"need {n_panels - 1} values (one per gap between {n_panels} panels), "
                                          f"got {len(gaps)}")
            if any(g < 0 for g in gaps):
                raise _field_error(field, f"must be >= 0 px, got {gaps}")

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
