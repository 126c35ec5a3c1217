"""Geometry refinement: fit Lsd, beam centre, tilts and distortion to extracted ring points.

The pseudo-strain of point i on ring k is ``ε_i = 1 − R(y_i, z_i; x) / (Lsd·tan 2θ_k)`` with the one
forward model of :mod:`midas_ref.geometry`. Two optimisers:

* ``"least-squares"`` (default): ``scipy.optimize.least_squares`` (trust-region reflective, bounds) on
  ``√w_i·ε_i``. The p1/p3 pair is fitted as the Cartesian pair ``(p1·cos p3, p1·sin p3)``, which is linear
  in the model and has no degeneracy at p1 = 0; it is converted back at the end (p1 ≥ 0).
* ``"nelder-mead"``: NLopt ``LN_NELDERMEAD`` on ``Σ w_i·|ε_i|`` (the legacy CalibrantOMP objective) with
  explicit stopping rules (the legacy build had none, spec legacy_engine.md Q10).

Bounds are ``start ± tolerance`` as in the legacy programs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from . import geometry_kernels as _gk
from .errors import CalibrationError
from .geometry import SERIAL_BELOW, kernel_vector, pixel_to_r_eta
from .panels import Panels, kernel_tables
from .params import Geometry

__all__ = ["Tolerances", "FitResult", "point_strain", "fit_geometry", "FREE_DEFAULT"]

#: Geometry fields refined by default (tx is fixed, as in the legacy programs).
FREE_DEFAULT = ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg", "p0", "p1", "p2", "p3_deg")


@dataclass(frozen=True)
class Tolerances:
    """Half-widths of the search box around the start geometry (legacy ``tol*`` keys).

    Defaults are the values AutoCalibrateZarr wrote (spec autocalibrate.md §2.13): tolTilts 3°, tolBC 20 px,
    tolLsd 15000 µm, tolP 2e-3, tolP3 45°.
    """

    lsd_um: float = 15000.0
    bc_px: float = 20.0
    tilts_deg: float = 3.0
    p0: float = 2e-3
    p1: float = 2e-3
    p2: float = 2e-3
    p3_deg: float = 45.0
    p4: float = 2e-3
    p5: float = 2e-3


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_geometry`.

    Attributes
    ----------
    geometry : Geometry
        Refined geometry.
    strain : ndarray
        Signed pseudo-strain ``1 − R/R_ideal`` of every point at the refined geometry.
    n_evaluations : int
    success : bool
    message : str
    at_bound : tuple of str
        Free parameters that ended on their box bound (a sign the tolerance was too tight).
    """

    geometry: Geometry
    strain: np.ndarray
    n_evaluations: int
    success: bool
    message: str
    at_bound: tuple[str, ...]


def point_strain(y_px, z_px, tan_two_theta, geometry: Geometry, panels: Panels | None = None):
    """Signed pseudo-strain ``1 − R(y, z)/(Lsd·tan 2θ_k)`` of points with ideal ``tan 2θ_k``."""
    y = np.ascontiguousarray(y_px, dtype=np.float64)
    z = np.ascontiguousarray(z_px, dtype=np.float64)
    r, _ = pixel_to_r_eta(y, z, geometry, panels)
    return 1.0 - r / (geometry.lsd_um * np.asarray(tan_two_theta, dtype=np.float64))


def _tolerance(name: str, tol: Tolerances) -> float:
    return {"lsd_um": tol.lsd_um, "bc_y_px": tol.bc_px, "bc_z_px": tol.bc_px, "ty_deg": tol.tilts_deg,
            "tz_deg": tol.tilts_deg, "tx_deg": tol.tilts_deg, "p0": tol.p0, "p1": tol.p1, "p2": tol.p2,
            "p3_deg": tol.p3_deg, "p4": tol.p4, "p5": tol.p5}[name]


def _bounds(start: Geometry, free, tol: Tolerances):
    t = np.array([_tolerance(name, tol) for name in free])
    x = np.array([getattr(start, name) for name in free], dtype=np.float64)
    return x - t, x + t


def fit_geometry(y_px, z_px, two_theta_deg, start: Geometry, *, weights=None, panels: Panels | None = None,
                 free=FREE_DEFAULT, tolerances: Tolerances = Tolerances(), method: str = "least-squares",
                 max_evaluations: int = 20000) -> FitResult:
    """Refine the free geometry parameters so that every point lies on its ring.

    Parameters
    ----------
    y_px, z_px : array_like
        Detector positions of the points (raw pixel coordinates).
    two_theta_deg : array_like
        Ideal 2θ of each point's ring, degrees.
    start : Geometry
        Start geometry; fixed parameters are taken from it and bounds are centred on it.
    weights : array_like, optional
        Per-point weights (default 1).
    panels : Panels, optional
        Panel corrections (held fixed here).
    free : sequence of str
        Geometry field names to refine.
    tolerances : Tolerances
        Half-widths of the search box; a zero tolerance keeps that parameter fixed.
    method : {"least-squares", "nelder-mead"}
    max_evaluations : int

    Returns
    -------
    FitResult
    """
    y = np.ascontiguousarray(y_px, dtype=np.float64)
    z = np.ascontiguousarray(z_px, dtype=np.float64)
    tan_tth = np.tan(np.radians(np.asarray(two_theta_deg, dtype=np.float64)))
    if not (y.shape == z.shape == tan_tth.shape) or y.ndim != 1:
        raise CalibrationError("points and their ring angles must be 1-D arrays of one length")
    # a zero tolerance fixes the parameter (legacy "tolP 0" switches the distortion fit off); p3 is only a
    # phase of p1 and goes with it
    free = tuple(name for name in free if _tolerance(name, tolerances) > 0
                 and not (name == "p3_deg" and tolerances.p1 <= 0))
    if not free:
        raise CalibrationError("every geometry parameter has a zero tolerance: nothing to fit")
    if y.size < len(free) + 1:
        raise CalibrationError(f"{y.size} ring points cannot determine {len(free)} geometry parameters")
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    sqrt_w = np.sqrt(w)
    lo, hi = _bounds(start, free, tolerances)
    x0 = np.array([getattr(start, name) for name in free], dtype=np.float64)
    cartesian = method == "least-squares" and "p1" in free and "p3_deg" in free
    i1 = free.index("p1") if cartesian else -1
    i3 = free.index("p3_deg") if cartesian else -1
    col_to_iy, row_to_iz, n_z, table = kernel_tables(panels, start.shape)
    r = np.empty_like(y)
    eta = np.empty_like(y)
    kernel = _gk.pixel_to_r_eta_points if y.size > SERIAL_BELOW else _gk.pixel_to_r_eta_points_serial
    n_eval = [0]

    def geometry_of(x):
        values = dict(zip(free, x))
        if cartesian:
            a, b = x[i1], x[i3]
            values["p1"] = math.hypot(a, b)
            values["p3_deg"] = math.degrees(math.atan2(b, a)) if (a or b) else start.p3_deg
        return replace(start, **values)

    def strains(x):
        n_eval[0] += 1
        geom = geometry_of(x)
        kernel(y, z, kernel_vector(geom), col_to_iy, row_to_iz, n_z, table, r, eta)
        return 1.0 - r / (geom.lsd_um * tan_tth)

    if cartesian:
        p1, p3 = start.p1, math.radians(start.p3_deg)
        x0[i1], x0[i3] = p1 * math.cos(p3), p1 * math.sin(p3)
        lo[i1], hi[i1] = x0[i1] - tolerances.p1, x0[i1] + tolerances.p1
        lo[i3], hi[i3] = x0[i3] - tolerances.p1, x0[i3] + tolerances.p1

    if method == "least-squares":
        from scipy.optimize import least_squares

        def residuals(x):
            s = strains(x)
            return np.where(np.isfinite(s), sqrt_w * s, 1.0)

        sol = least_squares(residuals, x0, bounds=(lo, hi), method="trf", x_scale="jac", xtol=1e-14,
                            ftol=1e-14, gtol=1e-14, max_nfev=max_evaluations)
        x_best, success, message = sol.x, bool(sol.success), str(sol.message)
    elif method == "nelder-mead":
        import nlopt

        def objective(x, grad):
            s = strains(x)
            return float(np.sum(np.where(np.isfinite(s), w * np.abs(s), 1.0)))

        opt = nlopt.opt(nlopt.LN_NELDERMEAD, len(free))
        opt.set_lower_bounds(lo)
        opt.set_upper_bounds(hi)
        opt.set_initial_step(np.maximum((hi - lo) / 20.0, 1e-12))
        opt.set_min_objective(objective)
        opt.set_xtol_abs(np.maximum((hi - lo) * 1e-12, 1e-15))
        opt.set_ftol_rel(1e-15)
        opt.set_maxeval(max_evaluations)
        x_start = np.clip(x0, lo, hi)
        try:
            x_best = opt.optimize(x_start)
            success = True
        except nlopt.RoundoffLimited:
            x_best = x_start if opt.last_optimum_value() is None else opt.last_optimize_result() and x_start
            success = False
        message = f"nlopt result code {opt.last_optimize_result()}"
    else:
        raise CalibrationError(f"unknown optimiser {method!r}; use 'least-squares' or 'nelder-mead'")
    geom = geometry_of(x_best)
    span = hi - lo
    at_bound = tuple(name for k, name in enumerate(free)
                     if not (cartesian and k in (i1, i3))
                     and min(x_best[k] - lo[k], hi[k] - x_best[k]) < 1e-6 * span[k])
    return FitResult(geom, strains(x_best), n_eval[0], success, message, at_bound)
