"""Slow, obviously-correct reference versions of the kernels (STUMPY's ``naive.py`` idea).

Written from the legacy specification (spec/legacy_engine.md §2.4) independently of
``midas_ref.geometry_kernels``: explicit rotation matrices, the legacy ``acos`` form of η, degrees inside
the trigonometric calls, no algebraic shortcuts.
"""

from __future__ import annotations

import numpy as np


def rotation_matrix(tx_deg, ty_deg, tz_deg):
    tx, ty, tz = np.radians([tx_deg, ty_deg, tz_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(tx), -np.sin(tx)], [0, np.sin(tx), np.cos(tx)]])
    ry = np.array([[np.cos(ty), 0, np.sin(ty)], [0, 1, 0], [-np.sin(ty), 0, np.cos(ty)]])
    rz = np.array([[np.cos(tz), -np.sin(tz), 0], [np.sin(tz), np.cos(tz), 0], [0, 0, 1]])
    return rx @ ry @ rz


def legacy_eta_deg(a, b):
    """η(a, b) = acos(b/√(a²+b²)) in degrees, negated when a > 0 (legacy CalcEtaAngle)."""
    eta = np.degrees(np.arccos(b / np.hypot(a, b)))
    return np.where(a > 0, -eta, eta)


def pixel_to_r_eta(y, z, geometry, panel=None):
    """Reference forward model for one panel correction ``panel = (cy, cz, dy, dz, dtheta_deg, dlsd, dp2)``."""
    y = np.asarray(y, dtype=float)
    z = np.asarray(z, dtype=float)
    lsd = geometry.lsd_um
    p2 = geometry.p2
    if panel is not None:
        cy, cz, dy, dz, dtheta, dlsd, dp2 = panel
        th = np.radians(dtheta)
        y, z = (cy + (y - cy) * np.cos(th) - (z - cz) * np.sin(th) + dy,
                cz + (y - cy) * np.sin(th) + (z - cz) * np.cos(th) + dz)
        lsd = lsd + dlsd
        p2 = p2 + dp2
    yc = (geometry.bc_y_px - y) * geometry.px_um
    zc = (z - geometry.bc_z_px) * geometry.px_um
    t = rotation_matrix(geometry.tx_deg, geometry.ty_deg, geometry.tz_deg)
    v = np.einsum("ij,j...->i...", t, np.stack([np.zeros_like(yc), yc, zc]))
    rad = lsd / (lsd + v[0]) * np.sqrt(v[1] ** 2 + v[2] ** 2)
    eta = legacy_eta_deg(v[1], v[2])
    rho = rad / geometry.rho_d_um
    eta_t = 90.0 - eta
    d = (1.0 + geometry.p0 * rho ** 2 * np.cos(np.radians(2 * eta_t))
         + geometry.p1 * rho ** 4 * np.cos(np.radians(4 * eta_t + geometry.p3_deg))
         + p2 * rho ** 2 + geometry.p4 * rho ** 6 + geometry.p5 * rho ** 4)
    r = rad * d
    return r * geometry.lsd_um / lsd, eta
