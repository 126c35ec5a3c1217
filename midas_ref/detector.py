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
