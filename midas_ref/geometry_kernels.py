"""Numba kernels of the geometry model (``docs/geometry.md``); radians and float64 only.

Geometry is passed as one float64 vector ``g`` (layout :data:`G_LAYOUT`, indexed by the ``G_*`` constants,
built by ``geometry.kernel_vector``) and panels as the lookup tables of ``panels.kernel_tables`` (table
columns :data:`PANEL_TABLE_COLUMNS`, indexed by the ``PT_*`` constants). The scalar
functions (``pixel_r_cs``, ``panel_of``, ...) are meant to be called from other kernels too (simulator
rendering, profile extraction), so the model exists once.
"""

from __future__ import annotations

import math

from numba import njit, prange

from ._numba import PARALLEL, SERIAL
from .kernel_layout import (G_LSD, G_BC_Y, G_BC_Z, G_PX, G_T00, G_T01, G_T02, G_T10, G_T11, G_T12, G_T20,
                            G_T21, G_T22, G_P0, G_P1, G_P2, G_P4, G_P5, G_RHO_D, G_COS_P3, G_SIN_P3,
                            PT_CENTER_Y, PT_CENTER_Z, PT_DY, PT_DZ, PT_COS, PT_SIN, PT_DLSD,
                            PT_DP2)

_NEWTON_MAX_ITER = 60
_NEWTON_TOL_UM = 1e-9


@njit(**SERIAL)
def distortion_factor(rad_um, cos_eta, sin_eta, g, p2):
    """Radial distortion factor D and dD/dRad (1/µm) at undistorted radius ``rad_um`` and azimuth η.

    With η' = 90° − η: cos 2η' = −cos 2η and cos(4η' + p3) = cos(4η − p3), so the harmonics follow from
    cos η, sin η by double-angle identities (no trigonometric calls in the hot loop).
    """
    rho = rad_um / g[G_RHO_D]
    rho2 = rho * rho
    rho4 = rho2 * rho2
    cos2 = cos_eta * cos_eta - sin_eta * sin_eta
    sin2 = 2.0 * sin_eta * cos_eta
    c2 = -cos2
    c4 = (cos2 * cos2 - sin2 * sin2) * g[G_COS_P3] + 2.0 * sin2 * cos2 * g[G_SIN_P3]
    d = 1.0 + g[G_P0] * rho2 * c2 + g[G_P1] * rho4 * c4 + p2 * rho2 + g[G_P4] * rho4 * rho2 + g[G_P5] * rho4
    dd_drho = (2.0 * g[G_P0] * rho * c2 + 4.0 * g[G_P1] * rho2 * rho * c4 + 2.0 * p2 * rho
               + 6.0 * g[G_P4] * rho4 * rho + 4.0 * g[G_P5] * rho2 * rho)
    return d, dd_drho / g[G_RHO_D]


@njit(**SERIAL)
def detector_r_cs(y, z, g, lsd, p2):
    """Distortion-corrected radius (µm, frame of distance ``lsd``), cos η and sin η of position (y, z).

    ``y``/``z`` are detector positions in pixels *after* any panel correction; ``lsd``/``p2`` are the
    (possibly per-panel) distance and p2 coefficient. η = atan2(−y', z') of the tilted vector.
    """
    yc = (g[G_BC_Y] - y) * g[G_PX]
    zc = (z - g[G_BC_Z]) * g[G_PX]
    xp = g[G_T01] * yc + g[G_T02] * zc
    yp = g[G_T11] * yc + g[G_T12] * zc
    zp = g[G_T21] * yc + g[G_T22] * zc
    norm = math.sqrt(yp * yp + zp * zp)
    rad = lsd / (lsd + xp) * norm
    if norm > 0.0:
        cos_eta = zp / norm
        sin_eta = -yp / norm
    else:
        cos_eta = 1.0
        sin_eta = 0.0
    d, _ = distortion_factor(rad, cos_eta, sin_eta, g, p2)
    return rad * d, cos_eta, sin_eta


@njit(**SERIAL)
def panel_of(y, z, col_to_iy, row_to_iz, n_panels_z):
    """Panel id of the pixel containing position (y, z) (nearest pixel centre); −1 outside any panel."""
    iy_px = int(math.floor(y + 0.5))
    iz_px = int(math.floor(z + 0.5))
    if iy_px < 0 or iz_px < 0 or iy_px >= col_to_iy.shape[0] or iz_px >= row_to_iz.shape[0]:
        return -1
    iy = col_to_iy[iy_px]
    iz = row_to_iz[iz_px]
    if iy < 0 or iz < 0:
        return -1
    return iy * n_panels_z + iz


@njit(**SERIAL)
def pixel_r_cs(y, z, g, col_to_iy, row_to_iz, n_panels_z, table):
    """(r_um, cos η, sin η) of raw pixel position (y, z): panel transform, tilt, distortion.

    ``r_um`` is expressed as ``Lsd·tan 2θ`` with the *global* Lsd, whatever the panel's dLsd.
    """
    pid = panel_of(y, z, col_to_iy, row_to_iz, n_panels_z)
    lsd = g[G_LSD]
    if pid < 0:
        return detector_r_cs(y, z, g, lsd, g[G_P2])
    row = table[pid]
    dy = y - row[PT_CENTER_Y]
    dz = z - row[PT_CENTER_Z]
    yy = row[PT_CENTER_Y] + dy * row[PT_COS] - dz * row[PT_SIN] + row[PT_DY]
    zz = row[PT_CENTER_Z] + dy * row[PT_SIN] + dz * row[PT_COS] + row[PT_DZ]
    lsd_p = lsd + row[PT_DLSD]
    r, cos_eta, sin_eta = detector_r_cs(yy, zz, g, lsd_p, g[G_P2] + row[PT_DP2])
    return r * lsd / lsd_p, cos_eta, sin_eta


@njit(**PARALLEL)
def pixel_to_r_eta_points(ys, zs, g, col_to_iy, row_to_iz, n_panels_z, table, out_r, out_eta):
    """(r_um, eta_rad) of :func:`pixel_r_cs` over flat arrays of positions."""
    for i in prange(ys.shape[0]):
        r, c, s = pixel_r_cs(ys[i], zs[i], g, col_to_iy, row_to_iz, n_panels_z, table)
        out_r[i] = r
        out_eta[i] = math.atan2(s, c)


@njit(**SERIAL)
def pixel_to_r_eta_points_serial(ys, zs, g, col_to_iy, row_to_iz, n_panels_z, table, out_r, out_eta):
    """Serial twin of :func:`pixel_to_r_eta_points` for the few thousand points of an objective evaluation,
    where waking the thread pool costs more than the work."""
    for i in range(ys.shape[0]):
        r, c, s = pixel_r_cs(ys[i], zs[i], g, col_to_iy, row_to_iz, n_panels_z, table)
        out_r[i] = r
        out_eta[i] = math.atan2(s, c)


@njit(**PARALLEL)
def r_eta_map(g, col_to_iy, row_to_iz, n_panels_z, table, out_r, out_eta):
    """(r_um, eta_rad) at every pixel centre of an image of shape ``out_r.shape = (rows, cols)``."""
    rows, cols = out_r.shape
    for iz in prange(rows):
        for iy in range(cols):
            r, c, s = pixel_r_cs(float(iy), float(iz), g, col_to_iy, row_to_iz, n_panels_z, table)
            out_r[iz, iy] = r
            out_eta[iz, iy] = math.atan2(s, c)


@njit(**SERIAL)
def undistort_radius(r_corr_um, cos_eta, sin_eta, g, p2):
    """Undistorted radius ``Rad`` with ``Rad·D(Rad, η) = r_corr_um`` (Newton; NaN if it fails)."""
    rad = r_corr_um
    for _ in range(_NEWTON_MAX_ITER):
        d, dd = distortion_factor(rad, cos_eta, sin_eta, g, p2)
        f = rad * d - r_corr_um
        df = d + rad * dd
        if df <= 0.0:
            return math.nan
        step = f / df
        rad -= step
        if abs(step) < _NEWTON_TOL_UM:
            return rad
    return math.nan


@njit(**SERIAL)
def detector_position(r_corr_um, eta_rad, g, lsd, p2):
    """Inverse of :func:`detector_r_cs`: detector position (y, z) px of (r_corr, η) at distance ``lsd``."""
    cos_eta = math.cos(eta_rad)
    sin_eta = math.sin(eta_rad)
    rad = undistort_radius(r_corr_um, cos_eta, sin_eta, g, p2)
    t = rad / lsd
    # Ray direction d = (1, −t·sin η, t·cos η); detector plane n·(P − (lsd,0,0)) = 0 with n = T·e_x.
    d0 = 1.0
    d1 = -t * sin_eta
    d2 = t * cos_eta
    n_dot_d = g[G_T00] * d0 + g[G_T10] * d1 + g[G_T20] * d2
    s = lsd * g[G_T00] / n_dot_d
    v0 = s * d0 - lsd
    v1 = s * d1
    v2 = s * d2
    # (0, Yc, Zc) = Tᵀ·(P − L)
    yc = g[G_T01] * v0 + g[G_T11] * v1 + g[G_T21] * v2
    zc = g[G_T02] * v0 + g[G_T12] * v1 + g[G_T22] * v2
    return g[G_BC_Y] - yc / g[G_PX], g[G_BC_Z] + zc / g[G_PX]


@njit(**SERIAL)
def r_eta_pixel(r_um, eta_rad, g, col_to_iy, row_to_iz, n_panels_z, table):
    """Raw pixel position (y, z) of (r_um, η): inverse of :func:`pixel_r_cs`, NaN where nothing maps."""
    lsd = g[G_LSD]
    for pid in range(table.shape[0]):
        row = table[pid]
        lsd_p = lsd + row[PT_DLSD]
        yy, zz = detector_position(r_um * lsd_p / lsd, eta_rad, g, lsd_p, g[G_P2] + row[PT_DP2])
        dy = yy - row[PT_DY] - row[PT_CENTER_Y]
        dz = zz - row[PT_DZ] - row[PT_CENTER_Z]
        y = row[PT_CENTER_Y] + dy * row[PT_COS] + dz * row[PT_SIN]
        z = row[PT_CENTER_Z] - dy * row[PT_SIN] + dz * row[PT_COS]
        if panel_of(y, z, col_to_iy, row_to_iz, n_panels_z) == pid:
            return y, z
    y, z = detector_position(r_um, eta_rad, g, lsd, g[G_P2])
    if table.shape[0] > 0 and panel_of(y, z, col_to_iy, row_to_iz, n_panels_z) >= 0:
        return math.nan, math.nan  # lands on a panel whose correction does not send it there
    return y, z


@njit(**PARALLEL)
def r_eta_to_pixel_points(rs, etas, g, col_to_iy, row_to_iz, n_panels_z, table, out_y, out_z):
    """Vectorised :func:`r_eta_pixel`."""
    for i in prange(rs.shape[0]):
        y, z = r_eta_pixel(rs[i], etas[i], g, col_to_iy, row_to_iz, n_panels_z, table)
        out_y[i] = y
        out_z[i] = z
