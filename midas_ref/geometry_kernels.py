"""Numba kernels of the geometry model (``docs/geometry.md``); radians and float64 only.

Geometry is passed as one float64 vector ``g`` (layout :data:`G_LAYOUT`, built by
``geometry.kernel_vector``) and panels as the lookup tables of ``panels.kernel_tables``. The scalar
functions (``pixel_r_cs``, ``panel_of``, ...) are meant to be called from other kernels too (simulator
rendering, profile extraction), so the model exists once.
"""

from __future__ import annotations

import math

from numba import njit, prange

from ._numba import PARALLEL, SERIAL

#: Index of each quantity in the geometry vector ``g``.
G_LAYOUT = ("lsd_um", "bc_y_px", "bc_z_px", "px_um",
            "t00", "t01", "t02", "t10", "t11", "t12", "t20", "t21", "t22",
            "p0", "p1", "p2", "p3_rad", "p4", "p5", "rho_d_um", "cos_p3", "sin_p3")
G_SIZE = len(G_LAYOUT)

_NEWTON_MAX_ITER = 60
_NEWTON_TOL_UM = 1e-9


@njit(**SERIAL)
def distortion_factor(rad_um, cos_eta, sin_eta, g, p2):
    """Radial distortion factor D and dD/dRad (1/µm) at undistorted radius ``rad_um`` and azimuth η.

    With η' = 90° − η: cos 2η' = −cos 2η and cos(4η' + p3) = cos(4η − p3), so the harmonics follow from
    cos η, sin η by double-angle identities (no trigonometric calls in the hot loop).
    """
    rho = rad_um / g[19]
    rho2 = rho * rho
    rho4 = rho2 * rho2
    cos2 = cos_eta * cos_eta - sin_eta * sin_eta
    sin2 = 2.0 * sin_eta * cos_eta
    c2 = -cos2
    c4 = (cos2 * cos2 - sin2 * sin2) * g[20] + 2.0 * sin2 * cos2 * g[21]
    d = 1.0 + g[13] * rho2 * c2 + g[14] * rho4 * c4 + p2 * rho2 + g[17] * rho4 * rho2 + g[18] * rho4
    dd_drho = (2.0 * g[13] * rho * c2 + 4.0 * g[14] * rho2 * rho * c4 + 2.0 * p2 * rho
               + 6.0 * g[17] * rho4 * rho + 4.0 * g[18] * rho2 * rho)
    return d, dd_drho / g[19]


@njit(**SERIAL)
def detector_r_cs(y, z, g, lsd, p2):
    """Distortion-corrected radius (µm, frame of distance ``lsd``), cos η and sin η of position (y, z).

    ``y``/``z`` are detector positions in pixels *after* any panel correction; ``lsd``/``p2`` are the
    (possibly per-panel) distance and p2 coefficient. η = atan2(−y', z') of the tilted vector.
    """
    yc = (g[1] - y) * g[3]
    zc = (z - g[2]) * g[3]
    xp = g[5] * yc + g[6] * zc
    yp = g[8] * yc + g[9] * zc
    zp = g[11] * yc + g[12] * zc
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
    lsd = g[0]
    if pid < 0:
        return detector_r_cs(y, z, g, lsd, g[15])
    row = table[pid]
    dy = y - row[0]
    dz = z - row[1]
    yy = row[0] + dy * row[4] - dz * row[5] + row[2]
    zz = row[1] + dy * row[5] + dz * row[4] + row[3]
    lsd_p = lsd + row[6]
    r, cos_eta, sin_eta = detector_r_cs(yy, zz, g, lsd_p, g[15] + row[7])
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
    n_dot_d = g[4] * d0 + g[7] * d1 + g[10] * d2
    s = lsd * g[4] / n_dot_d
    v0 = s * d0 - lsd
    v1 = s * d1
    v2 = s * d2
    # (0, Yc, Zc) = Tᵀ·(P − L)
    yc = g[5] * v0 + g[8] * v1 + g[11] * v2
    zc = g[6] * v0 + g[9] * v1 + g[12] * v2
    return g[1] - yc / g[3], g[2] + zc / g[3]


@njit(**SERIAL)
def r_eta_pixel(r_um, eta_rad, g, col_to_iy, row_to_iz, n_panels_z, table):
    """Raw pixel position (y, z) of (r_um, η): inverse of :func:`pixel_r_cs`, NaN where nothing maps."""
    lsd = g[0]
    for pid in range(table.shape[0]):
        row = table[pid]
        lsd_p = lsd + row[6]
        yy, zz = detector_position(r_um * lsd_p / lsd, eta_rad, g, lsd_p, g[15] + row[7])
        dy = yy - row[2] - row[0]
        dz = zz - row[3] - row[1]
        y = row[0] + dy * row[4] + dz * row[5]
        z = row[1] - dy * row[5] + dz * row[4]
        if panel_of(y, z, col_to_iy, row_to_iz, n_panels_z) == pid:
            return y, z
    y, z = detector_position(r_um, eta_rad, g, lsd, g[15])
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
