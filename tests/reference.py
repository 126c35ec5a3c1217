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


# ---- pseudo-Voigt peak model and its fit (midas_ref.peakfit_kernels) ---------------------------------------
# Written from the model in the peakfit_kernels docstring: whole-array numpy, no Gaussian-tail cut, and the
# fit by scipy's bounded trust-region least squares with a finite-difference Jacobian (so neither the
# kernel's analytic gradient nor its Levenberg–Marquardt loop is reused).

def pseudo_voigt_sum(x, background, fwhm_px, mu, amplitudes, centres_px):
    """``b0 + b1·x + b2·x² + Σ_j A_j [f(u) + f″(u)/24]``, ``f = μ/(1 + 4u²/Γ²) + (1 − μ) exp(−4 ln2 u²/Γ²)``,
    ``u = x − c_j`` (px): the profile averaged over a 1-px footprint to second order, with the second
    derivatives in their closed forms ``L″ = (8/Γ²)(12u²/Γ² − 1) L³`` and ``G″ = (4a²u²/Γ⁴ − 2a/Γ²) G``."""
    x = np.asarray(x, dtype=float)
    b0, b1, b2 = background
    total = b0 + b1 * x + b2 * x ** 2
    a = 4 * np.log(2)
    g2 = fwhm_px ** 2
    for amp, centre in zip(amplitudes, centres_px):
        u2 = (x - centre) ** 2
        lor = 1 / (1 + 4 * u2 / g2)
        gau = np.exp(-a * u2 / g2)
        lor2 = (8 / g2) * (12 * u2 / g2 - 1) * lor ** 3
        gau2 = (4 * a * a * u2 / g2 ** 2 - 2 * a / g2) * gau
        total = total + amp * (mu * (lor + lor2 / 24) + (1 - mu) * (gau + gau2 / 24))
    return total


def pixel_average_exact(u, fwhm_px, mu):
    """The pseudo-Voigt averaged over ``[u − ½, u + ½]`` exactly (atan and erf): what a pixel of a rendered
    ring records along the radius."""
    from scipy.special import erf

    u = np.asarray(u, dtype=float)
    lo, hi = u - 0.5, u + 0.5
    lor = 0.5 * fwhm_px * (np.arctan(2 * hi / fwhm_px) - np.arctan(2 * lo / fwhm_px))
    k = np.sqrt(4 * np.log(2)) / fwhm_px
    gau = np.sqrt(np.pi) / (2 * k) * (erf(k * hi) - erf(k * lo))
    return mu * lor + (1 - mu) * gau


def free_layout_model(x, p):
    """Model of the free layout ``[b0, b1, b2, Γ, μ, A_1, c_1, …, A_m, c_m]``."""
    p = np.asarray(p, dtype=float)
    return pseudo_voigt_sum(x, p[:3], p[3], p[4], p[5::2], p[6::2])


def tied_layout_model(x, p, centres_px):
    """Model of the tied layout ``[b0, b1, b2, Γ, μ, δ, A_1, …, A_m]``: peak j at ``centres_px[j] + δ``."""
    p = np.asarray(p, dtype=float)
    return pseudo_voigt_sum(x, p[:3], p[3], p[4], p[6:], np.asarray(centres_px, dtype=float) + p[5])


def fit_pseudo_voigt(x, y, p0, lower, upper, sqrt_w, centres_px=None):
    """Weighted bounded least-squares fit of the free layout (or of the tied one when ``centres_px`` is given).

    Returns ``(p, cost, cov)``: ``cost = Σ w (y − f)²`` and ``cov = (JᵀJ)⁻¹ · cost / (n − n_par)``, the
    covariance scaled by the reduced χ², as the kernels define them.
    """
    from scipy.optimize import least_squares

    x = np.asarray(x, dtype=float)
    y = np.asarray(y, dtype=float)
    sqrt_w = np.asarray(sqrt_w, dtype=float)
    if centres_px is None:
        def residuals(p):
            return sqrt_w * (y - free_layout_model(x, p))
    else:
        def residuals(p):
            return sqrt_w * (y - tied_layout_model(x, p, centres_px))
    # start strictly inside the bounds (scipy's trust-region reflective method needs it)
    lower = np.asarray(lower, dtype=float)
    upper = np.asarray(upper, dtype=float)
    p0 = np.clip(np.asarray(p0, dtype=float), lower, upper)
    res = least_squares(residuals, p0, bounds=(lower, upper), jac="3-point", method="trf",
                        x_scale="jac", ftol=1e-14, xtol=1e-14, gtol=1e-14, max_nfev=10_000)
    cost = float(np.sum(res.fun ** 2))
    jac = res.jac
    cov = np.linalg.inv(jac.T @ jac) * cost / max(x.size - p0.size, 1)
    return res.x, cost, cov
