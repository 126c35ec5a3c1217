"""The one geometry forward model: detector pixel ↔ (R, η, 2θ), with tilts, distortion and panels.

Conventions (``docs/geometry.md`` writes them down with derivations): image arrays are ``[row, col] =
[Z, Y]``; pixel (y, z) has its centre at integer coordinates; ``R = Lsd·tan 2θ`` in µm after the distortion
correction; η in degrees, 0 along +Z (increasing row), +90° towards increasing column y; precisely
η = atan2(−y', z') of the tilted detector vector, which for an untilted detector is
``atan2(y − BC_y, z − BC_z)``.

Everything here is a thin wrapper: it validates, converts degrees to radians once, and calls the numba
kernels of :mod:`midas_ref.geometry_kernels`.
"""

from __future__ import annotations

import math

import numpy as np

from . import geometry_kernels as _k
from . import kernel_layout as _layout
from .detector import Geometry
from .errors import GeometryError
from .panels import Panels, kernel_tables

#: Point counts below this are mapped by the serial kernel (thread start-up dominates small calls).
SERIAL_BELOW = 20000

__all__ = ["tilt_matrix", "kernel_vector", "pixel_to_r_eta", "pixel_to_two_theta", "r_eta_to_pixel",
           "r_eta_maps", "two_theta_map", "two_theta_from_r"]


def tilt_matrix(tx_deg: float, ty_deg: float, tz_deg: float) -> np.ndarray:
    """Detector rotation ``T = Rx(tx)·Ry(ty)·Rz(tz)`` (right-handed rotations about lab X, Y, Z).

    Returns
    -------
    ndarray of shape (3, 3)
    """
    tx, ty, tz = (math.radians(a) for a in (tx_deg, ty_deg, tz_deg))
    rx = np.array([[1, 0, 0], [0, math.cos(tx), -math.sin(tx)], [0, math.sin(tx), math.cos(tx)]])
    ry = np.array([[math.cos(ty), 0, math.sin(ty)], [0, 1, 0], [-math.sin(ty), 0, math.cos(ty)]])
    rz = np.array([[math.cos(tz), -math.sin(tz), 0], [math.sin(tz), math.cos(tz), 0], [0, 0, 1]])
    return rx @ ry @ rz


def kernel_vector(geometry: Geometry) -> np.ndarray:
    """Pack ``geometry`` into the float64 vector the kernels take (layout ``geometry_kernels.G_LAYOUT``)."""
    g = np.empty(_layout.G_SIZE)
    g[_layout.G_LSD] = geometry.lsd_um
    g[_layout.G_BC_Y] = geometry.bc_y_px
    g[_layout.G_BC_Z] = geometry.bc_z_px
    g[_layout.G_PX] = geometry.px_um
    g[list(_layout.G_TILT)] = tilt_matrix(geometry.tx_deg, geometry.ty_deg, geometry.tz_deg).ravel()
    p3 = math.radians(geometry.p3_deg)
    g[_layout.G_P0] = geometry.p0
    g[_layout.G_P1] = geometry.p1
    g[_layout.G_P2] = geometry.p2
    g[_layout.G_P3] = p3
    g[_layout.G_P4] = geometry.p4
    g[_layout.G_P5] = geometry.p5
    g[_layout.G_RHO_D] = geometry.rho_d_um
    g[_layout.G_COS_P3] = math.cos(p3)
    g[_layout.G_SIN_P3] = math.sin(p3)
    return g


def _check(geometry: Geometry, panels: Panels | None):
    if not isinstance(geometry, Geometry):
        raise TypeError(f"expected a midas_ref.Geometry, got {type(geometry).__name__}")
    if panels is not None and not isinstance(panels, Panels):
        raise TypeError(f"expected midas_ref.panels.Panels or None, got {type(panels).__name__}")
    return (kernel_vector(geometry),) + kernel_tables(panels, geometry.shape)


def _flat_pair(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return a.shape, np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel()


def pixel_to_r_eta(y_px, z_px, geometry: Geometry, panels: Panels | None = None):
    """Ring radius and azimuth of detector positions.

    Parameters
    ----------
    y_px, z_px : array_like
        Column and row coordinates (pixel centres at integers), broadcast together.
    geometry : Geometry
    panels : Panels, optional
        Per-panel corrections; positions in gaps or outside the grid are not corrected.

    Returns
    -------
    r_um : ndarray
        ``Lsd·tan 2θ`` after tilt and distortion correction, µm (global Lsd even for panels with dLsd).
    eta_deg : ndarray
        Azimuth η in degrees, (−180, 180].
    """
    g, col_to_iy, row_to_iz, n_z, table = _check(geometry, panels)
    shape, ys, zs = _flat_pair(y_px, z_px)
    r = np.empty_like(ys)
    eta = np.empty_like(ys)
    kernel = _k.pixel_to_r_eta_points if ys.size > SERIAL_BELOW else _k.pixel_to_r_eta_points_serial
    kernel(ys, zs, g, col_to_iy, row_to_iz, n_z, table, r, eta)
    return r.reshape(shape), np.degrees(eta).reshape(shape)


def two_theta_from_r(r_um, geometry: Geometry):
    """Scattering angle 2θ (degrees) of ring radius ``r_um = Lsd·tan 2θ``."""
    return np.degrees(np.arctan2(np.asarray(r_um, dtype=np.float64), geometry.lsd_um))


def pixel_to_two_theta(y_px, z_px, geometry: Geometry, panels: Panels | None = None):
    """Scattering angle 2θ in degrees at detector positions (see :func:`pixel_to_r_eta`)."""
    r, _ = pixel_to_r_eta(y_px, z_px, geometry, panels)
    return two_theta_from_r(r, geometry)


def r_eta_to_pixel(r_um, eta_deg, geometry: Geometry, panels: Panels | None = None):
    """Detector position of ring radius ``r_um`` (``Lsd·tan 2θ``) at azimuth ``eta_deg``.

    Exact inverse of :func:`pixel_to_r_eta` (distortion is inverted by Newton iteration). Positions on a
    panel are returned in raw pixel coordinates of that panel; NaN where no position maps (e.g. a ray
    parallel to a strongly tilted detector, or a distortion that is not invertible there).
    """
    g, col_to_iy, row_to_iz, n_z, table = _check(geometry, panels)
    shape, rs, etas = _flat_pair(r_um, eta_deg)
    if np.any(rs < 0):
        raise GeometryError("ring radius must be >= 0")
    y = np.empty_like(rs)
    z = np.empty_like(rs)
    _k.r_eta_to_pixel_points(rs, np.radians(etas), g, col_to_iy, row_to_iz, n_z, table, y, z)
    return y.reshape(shape), z.reshape(shape)


def r_eta_maps(geometry: Geometry, panels: Panels | None = None):
    """``(r_um, eta_deg)`` at every pixel centre, each of shape ``geometry.shape = (rows, cols)``."""
    g, col_to_iy, row_to_iz, n_z, table = _check(geometry, panels)
    r = np.empty(geometry.shape)
    eta = np.empty(geometry.shape)
    _k.r_eta_map(g, col_to_iy, row_to_iz, n_z, table, r, eta)
    return r, np.degrees(eta, out=eta)


def two_theta_map(geometry: Geometry, panels: Panels | None = None) -> np.ndarray:
    """2θ in degrees at every pixel centre, shape ``(rows, cols)``."""
    r, _ = r_eta_maps(geometry, panels)
    return two_theta_from_r(r, geometry)
