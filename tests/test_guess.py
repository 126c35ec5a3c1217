"""Distance match and profile peaks of the initial guess (midas_ref.guess) on synthetic data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from midas_ref import Geometry
from midas_ref.guess import match_lsd, rank_lsd, ring_peaks, score_lsd
from midas_ref.rings import ring_table

LAMBDA = 0.172979
LAB6 = (4.1569162,) * 3 + (90.0,) * 3


def lab6_tan(d_min=0.2):
    return np.tan(np.radians([r.two_theta_deg for r in ring_table(221, LAB6, LAMBDA, d_min_angstrom=d_min)]))


def test_primitive_cubic_alias_is_rejected():
    """LaB6 peaks seen at 250 mm: every inner ring plus a random half of the crowded outer ones (blends hide
    the rest). At small angles Lsd/√2 explains every inner peak too (ring Q → 2Q, and 2Q is a ring of a
    primitive cubic lattice) and the crowded outer peaks match any comb; the score must still prefer the
    truth by a wide margin."""
    rng = np.random.default_rng(11)
    tan = lab6_tan()
    radii = 250_000.0 * tan
    radii = radii[radii < 290_000.0]
    inner = radii[radii < 60_000.0]
    outer = radii[radii >= 60_000.0]
    seen = np.sort(np.concatenate([inner, rng.choice(outer, outer.size // 2, replace=False)]))
    seen = seen + rng.normal(0.0, 60.0, seen.size)  # 0.3 px position noise at 200 µm pixels
    truth_score, ok, _ = score_lsd(250_000.0, seen, tan, abs_tol_um=200.0)
    assert ok.all()
    alias_score, alias_ok, _ = score_lsd(250_000.0 / math.sqrt(2.0), seen, tan, abs_tol_um=200.0)
    assert alias_ok.sum() > seen.size / 2 and alias_score < 0.6 * truth_score
    ranked = rank_lsd(seen, tan, 1e6, lsd_range=(0.05, 5.0), abs_tol_um=200.0)
    assert ranked[0][0] == pytest.approx(250_000.0, rel=2e-4)
    assert all(abs(h[0] / 250_000.0 - 1) > 0.01 for h in ranked[1:])
    lsd, n = match_lsd(seen, tan, 1e6, lsd_range=(0.05, 5.0), abs_tol_um=200.0)
    assert lsd == pytest.approx(250_000.0, rel=2e-4) and n == seen.size


def test_dense_region_carries_no_evidence():
    """Where the predicted rings are closer than twice the tolerance, matching or not says nothing."""
    tan = np.linspace(0.01, 0.02, 200)  # spacing 5e-5·Lsd: 10 µm at 200 mm, tolerance 200 µm
    score, _, _ = score_lsd(200_000.0, [2_500.0, 3_100.0, 3_700.0], tan, abs_tol_um=200.0)
    assert score == 0.0


def test_ring_peaks_finds_weak_inner_ring_beside_bright_dense_ones():
    """A weak isolated ring (peak 300 counts) inside a pattern of bright rings 3 px apart: a noise level from
    the spread of the whole profile would be set by the bright rings; the per-bin standard error is not."""
    n = 512
    geom = Geometry(1e6, 255.3, 256.8, 200.0, n, n)
    z, y = np.mgrid[0:n, 0:n]
    r = np.hypot(y - geom.bc_y_px, z - geom.bc_z_px)
    rng = np.random.default_rng(5)
    image = 200.0 + 300.0 * np.exp(-4 * math.log(2) * (r - 40.0) ** 2 / 2.0 ** 2)
    for rk in np.arange(120.0, 250.0, 3.0):
        image += 20_000.0 * np.exp(-4 * math.log(2) * (r - rk) ** 2 / 1.5 ** 2)
    image = rng.poisson(image).astype(float)
    radii, significance, fwhm = ring_peaks(image, None, geom)
    assert np.any(np.abs(radii / 200.0 - 40.0) < 0.3)
    assert 1.0 < fwhm < 3.0
    # nothing below the weak ring but noise: no peak found there
    assert not np.any(radii / 200.0 < 35.0)
