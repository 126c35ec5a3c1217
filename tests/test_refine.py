"""Geometry refinement on exact ring points: both optimisers must recover the truth."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from midas_ref import CalibrationError, Geometry
from midas_ref.geometry import r_eta_to_pixel
from midas_ref.refine import Tolerances, fit_geometry, point_strain

TRUTH = Geometry(1_000_000.0, 1027.3, 1021.3, 200.0, 2048, 2048, 0.0, 0.35, -0.25, 2e-4, -1e-4, 1.5e-4, 30.0,
                 rho_d_um=290338.13)
TWO_THETA = np.array([3.1725, 3.6634, 5.1818, 6.0770, 6.3474, 7.3306, 7.9894, 8.1973, 9.0210, 9.5685])


def exact_points(geometry, n_eta=72):
    """Points lying exactly on the rings of ``geometry`` (inverse model), inside the detector."""
    eta = np.linspace(-180, 180, n_eta, endpoint=False) + 1.3
    tth = np.repeat(TWO_THETA, eta.size)
    r = geometry.lsd_um * np.tan(np.radians(tth))
    y, z = r_eta_to_pixel(r, np.tile(eta, TWO_THETA.size), geometry)
    inside = (y > 0) & (y < 2047) & (z > 0) & (z < 2047)
    return y[inside], z[inside], tth[inside]


def start_from(truth):
    return dataclasses.replace(truth, lsd_um=truth.lsd_um * 1.003, bc_y_px=truth.bc_y_px + 1.5,
                               bc_z_px=truth.bc_z_px - 1.0, ty_deg=0.0, tz_deg=0.0, p0=0.0, p1=0.0, p2=0.0,
                               p3_deg=0.0)


def test_points_of_truth_have_zero_strain():
    y, z, tth = exact_points(TRUTH)
    strain = point_strain(y, z, np.tan(np.radians(tth)), TRUTH)
    assert np.max(np.abs(strain)) < 1e-13


def test_least_squares_recovers_truth_exactly():
    y, z, tth = exact_points(TRUTH)
    fit = fit_geometry(y, z, tth, start_from(TRUTH))
    g = fit.geometry
    # exact data: only float64 round-off and the optimiser's tolerances remain
    assert abs(g.lsd_um - TRUTH.lsd_um) < 1e-4
    assert abs(g.bc_y_px - TRUTH.bc_y_px) < 1e-7 and abs(g.bc_z_px - TRUTH.bc_z_px) < 1e-7
    assert abs(g.ty_deg - TRUTH.ty_deg) < 1e-8 and abs(g.tz_deg - TRUTH.tz_deg) < 1e-8
    # p1 < 0 at 30° is the same distortion as p1 > 0 at −150°: compare the Cartesian pair
    pair = lambda geo: geo.p1 * np.exp(1j * np.radians(geo.p3_deg))  # noqa: E731
    assert abs(pair(g) - pair(TRUTH)) < 1e-10
    assert abs(g.p0 - TRUTH.p0) < 1e-10 and abs(g.p2 - TRUTH.p2) < 1e-10
    assert np.max(np.abs(fit.strain)) < 1e-11
    assert fit.success and fit.at_bound == ()


def test_nelder_mead_reaches_the_same_geometry():
    """The legacy-compatible simplex on the L1 objective lands on the same answer (more slowly)."""
    y, z, tth = exact_points(TRUTH)
    start = start_from(TRUTH)
    free = ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg")
    truth_no_dist = dataclasses.replace(TRUTH, p0=0, p1=0, p2=0, p3_deg=0)
    y, z, tth = exact_points(truth_no_dist)
    ls = fit_geometry(y, z, tth, start, free=free)
    nm = fit_geometry(y, z, tth, start, free=free, method="nelder-mead")
    for name, tol in (("lsd_um", 0.05), ("bc_y_px", 1e-4), ("bc_z_px", 1e-4), ("ty_deg", 1e-5), ("tz_deg", 1e-5)):
        assert abs(getattr(nm.geometry, name) - getattr(truth_no_dist, name)) < tol, name
        assert abs(getattr(ls.geometry, name) - getattr(truth_no_dist, name)) < tol / 100, name
    assert nm.n_evaluations > ls.n_evaluations


def test_bound_reported_when_tolerance_too_tight():
    y, z, tth = exact_points(TRUTH)
    start = dataclasses.replace(start_from(TRUTH), lsd_um=TRUTH.lsd_um + 3000.0)
    fit = fit_geometry(y, z, tth, start, tolerances=Tolerances(lsd_um=1000.0))
    assert "lsd_um" in fit.at_bound
    assert abs(fit.geometry.lsd_um - (start.lsd_um - 1000.0)) < 1e-6


def test_too_few_points_is_an_error():
    with pytest.raises(CalibrationError, match="cannot determine"):
        fit_geometry([1.0, 2.0], [3.0, 4.0], [5.0, 5.0], TRUTH)


def test_zero_tolerance_fixes_the_parameter():
    """tolP 0 (legacy way to switch distortion off) keeps p0–p3 at their start values."""
    truth = dataclasses.replace(TRUTH, p0=0, p1=0, p2=0, p3_deg=0)
    y, z, tth = exact_points(truth)
    start = dataclasses.replace(start_from(truth), p2=1e-5, p3_deg=12.0)
    fit = fit_geometry(y, z, tth, start, tolerances=Tolerances(p0=0, p1=0, p2=0))
    assert (fit.geometry.p0, fit.geometry.p1, fit.geometry.p2, fit.geometry.p3_deg) == (0.0, 0.0, 1e-5, 12.0)
    assert abs(fit.geometry.bc_y_px - truth.bc_y_px) < 0.05  # the fixed wrong p2 costs some accuracy
