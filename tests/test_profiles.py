"""Peak fitting kernels on one-dimensional pseudo-Voigt data."""

from __future__ import annotations

import math

import numpy as np
import pytest

from midas_ref import peakfit_kernels as pf
from midas_ref import profiles_kernels as pk
from midas_ref.profiles import ring_clusters

#: Index of the first (here the only) peak's centre in the free parameter layout.
CENTRE = pf.I_PEAKS + pf.PEAK_CENTRE


def pseudo_voigt(x, amp, centre, fwhm, mu):
    q = (x - centre) ** 2 / fwhm ** 2
    return amp * (mu / (1 + 4 * q) + (1 - mu) * np.exp(-4 * math.log(2) * q))


def fit(x, y, centres, fwhm0=2.0, half=6.0, weights=None):
    n_peaks = len(centres)
    # layout [b0, b1, b2, Γ, μ, (A, c) per peak]
    p = np.array([np.median(y), 0.0, 0.0, fwhm0, 0.5] + [v for c in centres for v in (y.max(), c)])
    lower = np.array([-np.inf, -np.inf, -np.inf, 0.25, 0.0] + [v for c in centres for v in (0.0, c - half)])
    upper = np.array([np.inf, np.inf, np.inf, 10.0, 1.0] + [v for c in centres for v in (1e9, c + half)])
    sqrt_w = np.ones_like(x) if weights is None else np.sqrt(weights)
    converged, cost, cov = pf.fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w)
    return converged, p, cov


def test_noise_free_single_peak_is_exact():
    x = np.sort(np.random.default_rng(1).uniform(-8, 8, 400))
    y = 150 + 3 * x - 0.2 * x ** 2 + pseudo_voigt(x, 2000, 0.37, 2.5, 0.4)
    ok, p, _ = fit(x, y, [0.0])
    assert ok
    np.testing.assert_allclose(p, [150, 3, -0.2, 2.5, 0.4, 2000, 0.37], rtol=1e-8, atol=1e-8)


def test_two_overlapping_peaks_resolved():
    """A doublet 3 px apart (≈ 1.2 FWHM) is fitted without pulling either centre."""
    x = np.sort(np.random.default_rng(2).uniform(-10, 12, 800))
    y = 80 + pseudo_voigt(x, 1000, 0.2, 2.5, 0.3) + pseudo_voigt(x, 600, 3.2, 2.5, 0.3)
    ok, p, _ = fit(x, y, [0.0, 3.0])
    assert ok
    first, second = pf.I_PEAKS + pf.PEAK_CENTRE, pf.I_PEAKS + pf.PEAK_STRIDE + pf.PEAK_CENTRE
    assert p[first] == pytest.approx(0.2, abs=1e-8) and p[second] == pytest.approx(3.2, abs=1e-8)


def test_centre_error_matches_poisson_scatter():
    """With Poisson weights, the reported σ of the centre matches the observed scatter (±20 %) over many
    noisy fits, and the centre is unbiased."""
    rng = np.random.default_rng(20261125)
    x = np.linspace(-8, 8, 300)
    expect = 200 + pseudo_voigt(x, 2000, 0.1, 2.5, 0.4)
    centres, sigmas = [], []
    for _ in range(300):
        ok, p, cov = fit(x, rng.poisson(expect).astype(float), [0.0], weights=1.0 / expect)
        assert ok
        centres.append(p[CENTRE])
        sigmas.append(math.sqrt(cov[CENTRE, CENTRE]))
    centres = np.asarray(centres)
    # unbiased: mean within 4 standard errors of the truth
    assert abs(centres.mean() - 0.1) < 4 * centres.std() / math.sqrt(centres.size)
    assert np.median(sigmas) == pytest.approx(centres.std(), rel=0.2)


def test_ring_clusters_merge_overlapping_windows():
    lo, hi, centre, start = ring_clusters([100.0, 110.0, 130.0, 200.0], 6.0)
    assert start.tolist() == [0, 2, 3, 4]  # 100/110 overlap (±6), 130 and 200 alone
    np.testing.assert_allclose(lo, [94.0, 124.0, 194.0])
    np.testing.assert_allclose(hi, [116.0, 136.0, 206.0])
    np.testing.assert_allclose(centre, (lo + hi) / 2)


def test_tied_run_of_overlapping_peaks():
    """Five peaks 0.8 FWHM apart (one blended hump): with their spacing known, the common shift is exact on
    noise-free data whatever the amplitudes, and its σ is finite."""
    x = np.sort(np.random.default_rng(3).uniform(-9, 9, 900))
    centres = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    amps = [300.0, 1500.0, 200.0, 900.0, 50.0]
    shift = 0.137
    y = 120 + 2 * x + sum(pseudo_voigt(x, a, c + shift, 2.5, 0.5) for a, c in zip(amps, centres))
    rows = np.full((3, pk.ROW_WIDTH), np.nan)
    pk.fit_group(x, y, np.zeros_like(x), centres, 1, 3, 2.5, False, rows)
    assert np.all(rows[:, pk.ROW_STATUS] == pk.OK)
    # fit_group reports centres in px of its window (fit_all_bins turns them into µm)
    np.testing.assert_allclose(rows[:, pk.ROW_R_UM], centres[1:4] + shift, atol=1e-6)
    np.testing.assert_allclose(rows[:, pk.ROW_AMPLITUDE], amps[1:4], rtol=1e-4)
    assert np.all(np.isfinite(rows[:, pk.ROW_SIGMA_UM]))


def test_tied_shift_is_bounded_to_half_the_spacing():
    """A comb cannot slide by a whole ring spacing (it would relabel every ring): shifts past half the
    spacing end at the bound and are flagged, never reported as OK."""
    x = np.linspace(-8, 8, 600)
    centres = np.array([-3.0, 0.0, 3.0])
    y = 100 + sum(pseudo_voigt(x, 1000, c + 2.0, 1.5, 0.3) for c in centres)
    rows = np.full((1, pk.ROW_WIDTH), np.nan)
    pk.fit_group(x, y, np.zeros_like(x), centres, 1, 1, 1.5, False, rows)
    assert rows[0, pk.ROW_STATUS] != pk.OK
