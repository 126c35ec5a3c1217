"""The pseudo-Voigt peak model and its bounded LM (``midas_ref.peakfit_kernels``) against the plain
numpy/scipy reference in ``tests/reference.py``: model values, analytic gradients, and fits of seeded
synthetic windows (one peak, a doublet, a tied comb)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference as ref

from midas_ref import peakfit_kernels as pf

EPS = np.finfo(float).eps
#: Centre of free-layout peak j in the parameter vector.
CENTRE = [pf.I_PEAKS + pf.PEAK_STRIDE * j + pf.PEAK_CENTRE for j in range(3)]


def free_params(rng, n_peaks):
    """Realistic free-layout parameters: Γ 1–5 px, any μ, centres within a ±6 px window, counts to 10⁴."""
    p = [rng.uniform(0, 500), rng.uniform(-5, 5), rng.uniform(-0.3, 0.3), rng.uniform(1.0, 5.0), rng.uniform(0, 1)]
    for _ in range(n_peaks):
        p += [rng.uniform(10, 1e4), rng.uniform(-6, 6)]
    return np.array(p)


def tied_params(rng, n_peaks):
    p = [rng.uniform(0, 500), rng.uniform(-5, 5), rng.uniform(-0.3, 0.3), rng.uniform(1.0, 5.0), rng.uniform(0, 1),
         rng.uniform(-1, 1)]
    return np.array(p + [rng.uniform(10, 1e4) for _ in range(n_peaks)])


def magnitude(p, xi, amplitudes):
    """Size of the terms summed into the model at ``xi``: the scale its rounding errors are relative to."""
    return abs(p[pf.I_B0]) + abs(p[pf.I_B1] * xi) + abs(p[pf.I_B2] * xi * xi) + np.sum(np.abs(amplitudes))


# ---- model and gradient -------------------------------------------------------------------------------

@pytest.mark.parametrize("n_peaks", [1, 2, 3])
def test_free_model_matches_reference(n_peaks):
    """Kernel and numpy model agree to rounding: the kernel's Gaussian-tail cut (beyond 4 Γ) drops at most
    exp(−44) ≈ 5e-20 of a peak, far below the 1e-13 relative bound (a few hundred eps of summed terms)."""
    rng = np.random.default_rng(83_529 + n_peaks)
    for _ in range(20):
        p = free_params(rng, n_peaks)
        x = rng.uniform(-30, 30, 50)  # reaches well past the cut
        kernel = np.array([pf.multi_peak_value(xi, p, n_peaks) for xi in x])
        scale = np.array([magnitude(p, xi, p[5::2]) for xi in x])
        assert np.max(np.abs(kernel - ref.free_layout_model(x, p)) / scale) < 1e-13


def test_tied_model_matches_reference():
    rng = np.random.default_rng(61_077)
    for n_peaks in (1, 3, 5):
        centres = np.sort(rng.uniform(-8, 8, n_peaks))
        p = tied_params(rng, n_peaks)
        x = rng.uniform(-30, 30, 50)
        kernel = np.array([pf.tied_value(xi, p, centres) for xi in x])
        scale = np.array([magnitude(p, xi, p[6:]) for xi in x])
        assert np.max(np.abs(kernel - ref.tied_layout_model(x, p, centres)) / scale) < 1e-13


def central_differences(value, p):
    """∂value/∂p_k by central differences with h_k = eps^⅓ · max(|p_k|, 1), the step that balances
    truncation (h²) and rounding (eps/h) errors: both are then ~eps^⅔ ≈ 4e-11 of magnitude / h-scale."""
    grad = np.empty(p.size)
    for k in range(p.size):
        h = EPS ** (1 / 3) * max(abs(p[k]), 1.0)
        up = p.copy()
        down = p.copy()
        up[k] += h
        down[k] -= h
        grad[k] = (value(up) - value(down)) / (up[k] - down[k])
    return grad


def assert_gradient(grad, numeric, p, scale):
    # per parameter, the numeric error is ~eps^⅔·scale/max(|p_k|, 1) times the profile's third-derivative
    # factor (≤ (max(|p_k|, 1)/Γ)³ ≲ 200 for Γ ≥ 1 px and |c| ≤ 6 px): ≲ 1e-8, so 1e-6 has a wide margin,
    # while a wrong or missing term is O(scale/Γ)
    tol = 1e-6 * scale / np.maximum(np.abs(p), 1.0)
    worst = np.max(np.abs(grad - numeric) / tol)
    assert worst < 1.0, f"gradient off by {worst:.3g} tolerances"


@pytest.mark.parametrize("n_peaks", [1, 2, 3])
def test_free_gradient_matches_central_differences(n_peaks):
    rng = np.random.default_rng(40_913 + n_peaks)
    for _ in range(25):
        p = free_params(rng, n_peaks)
        for xi in rng.uniform(-10, 10, 8):
            grad = np.empty(p.size)
            value = pf.multi_peak_value_grad(xi, p, n_peaks, grad)
            assert value == pytest.approx(pf.multi_peak_value(xi, p, n_peaks), rel=1e-14)
            numeric = central_differences(lambda q, xi=xi: pf.multi_peak_value(xi, q, n_peaks), p)
            assert_gradient(grad, numeric, p, magnitude(p, xi, p[5::2]))


def test_tied_gradient_matches_central_differences():
    rng = np.random.default_rng(17_354)
    for n_peaks in (1, 2, 5):
        for _ in range(15):
            centres = np.sort(rng.uniform(-6, 6, n_peaks))
            p = tied_params(rng, n_peaks)
            for xi in rng.uniform(-10, 10, 8):
                grad = np.empty(p.size)
                value = pf.tied_value_grad(xi, p, centres, grad)
                assert value == pytest.approx(pf.tied_value(xi, p, centres), rel=1e-14)
                numeric = central_differences(lambda q, xi=xi, c=centres: pf.tied_value(xi, q, c), p)
                assert_gradient(grad, numeric, p, magnitude(p, xi, p[6:]))


def test_pseudo_voigt_profile_values_and_derivatives():
    """The pixel-averaged profile: 1 + f″(0)/24 at the centre (f″(0) = −8μ/Γ² − 2a(1 − μ)/Γ²), symmetric,
    ∂/∂μ = the difference of the averaged Lorentzian and Gaussian, and every derivative matches central
    differences inside and beyond the Gaussian-tail cut."""
    a = 4 * np.log(2)
    for gamma, mu in ((2.5, 0.3), (1.0, 1.0), (4.0, 0.0)):
        shape, d_du, d_dgamma, d_dmu = pf.pseudo_voigt(0.0, gamma, mu)
        assert shape == pytest.approx(1 + (-8 * mu - 2 * a * (1 - mu)) / gamma ** 2 / 24, rel=1e-14)
        assert d_du == 0.0
        assert pf.pseudo_voigt(1.3, gamma, mu)[0] == pf.pseudo_voigt(-1.3, gamma, mu)[0]
    rng = np.random.default_rng(9_268)
    for u, gamma, mu in zip(rng.uniform(-15, 15, 200), rng.uniform(1, 5, 200), rng.uniform(0, 1, 200)):
        _, d_du, d_dgamma, d_dmu = pf.pseudo_voigt(u, gamma, mu)
        p = np.array([u, gamma, mu])
        numeric = central_differences(lambda q: pf.pseudo_voigt(q[0], q[1], q[2])[0], p)
        # unit-height profile: scale 1
        assert_gradient(np.array([d_du, d_dgamma, d_dmu]), numeric, p, 1.0)


def test_pixel_average_is_the_box_mean_of_the_profile():
    """f + f″/24 against the exact mean over [u − ½, u + ½] (atan, erf): the error left (the next term,
    f⁗/1920, largest for a pure Lorentzian at Γ = 2 px: 1.1 % of the peak height) is at least 6 times
    smaller than the point-sampled profile's (2–7 %) for every Γ ≥ 2 px and μ — the bias the average removes."""
    u = np.linspace(-12, 12, 961)
    for gamma in (2.0, 2.5, 4.0):
        for mu in (0.0, 0.4, 1.0):
            exact = ref.pixel_average_exact(u, gamma, mu)
            ours = np.array([pf.pseudo_voigt(v, gamma, mu)[0] for v in u])
            point = mu / (1 + 4 * u ** 2 / gamma ** 2) + (1 - mu) * np.exp(-4 * np.log(2) * u ** 2 / gamma ** 2)
            assert np.abs(ours - exact).max() < np.abs(point - exact).max() / 6, (gamma, mu)
            assert np.abs(ours - exact).max() < 0.3 / gamma ** 4 * (1 + 1.3 * mu), (gamma, mu)


# ---- fits against the reference -----------------------------------------------------------------------

def free_start(y, centres, half_px):
    """Start and bounds of the free layout, as the window driver sets them: background at the median,
    amplitudes at the excess of the maximum, centres at their expectation ± ``half_px``."""
    bg = np.median(y)
    p = [bg, 0.0, 0.0, 2.0, 0.5]
    lower = [-np.inf, -np.inf, -np.inf, 0.25, 0.0]
    upper = [np.inf, np.inf, np.inf, 10.0, 1.0]
    for c in centres:
        p += [y.max() - bg, c]
        lower += [0.0, c - half_px]
        upper += [1e6, c + half_px]
    return np.array(p), np.array(lower), np.array(upper)


def tied_start(y, n_peaks, bound_px):
    bg = np.median(y)
    p = np.array([bg, 0.0, 0.0, 2.0, 0.5, 0.0] + [0.3 * (y.max() - bg)] * n_peaks)
    lower = np.array([-np.inf] * 3 + [0.25, 0.0, -bound_px] + [0.0] * n_peaks)
    upper = np.array([np.inf] * 3 + [10.0, 1.0, bound_px] + [1e6] * n_peaks)
    return p, lower, upper


def assert_same_minimum(p, cost, cov, p_ref, cost_ref, cov_ref, n_pixels, rel_cost_tol, key):
    """Kernel and reference stopped at the same minimum, to within the kernel's stopping rule.

    The kernel stops once a step lowers the cost C by less than ``rel_cost_tol``·C, so its cost excess over
    the minimum is ΔC ≲ rel_cost_tol·C. Near the minimum ΔC = δᵀHδ with H = JᵀJ, and cov = H⁻¹·C/dof, so
    every parameter sits within |δ_k| ≤ √(ΔC·(H⁻¹)_kk) = √(rel_cost_tol·dof)·σ_k of it (7.7e-4 σ for the
    free fit's 1e-9 and 600 pixels, 3 % σ for the tied fit's 1e-6). The covariances, both (JᵀJ)⁻¹·C/dof at
    points that close, agree to far better than 1e-4 (J moves by ~δ/Γ).
    """
    dof = n_pixels - p.size
    assert abs(cost / cost_ref - 1.0) <= rel_cost_tol
    sigma_ref = np.sqrt(np.diag(cov_ref))
    assert np.all(np.abs(p - p_ref) <= math.sqrt(rel_cost_tol * dof) * sigma_ref)
    assert math.sqrt(cov[key, key]) == pytest.approx(sigma_ref[key], rel=1e-4)


@pytest.mark.parametrize("seed", [4_113, 28_871, 60_502])
def test_single_peak_fit_matches_reference(seed):
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-8, 8, 600))
    truth = np.array([200.0, 2.0, -0.1, 2.5, 0.4, 3000.0, 0.31])
    expect = ref.free_layout_model(x, truth)
    y = rng.poisson(expect).astype(float)
    sqrt_w = 1.0 / np.sqrt(expect)
    p0, lower, upper = free_start(y, [0.0], 4.0)
    p = p0.copy()
    converged, cost, cov = pf.fit_peaks(x, y, p, lower, upper, 1, sqrt_w)
    assert converged
    p_ref, cost_ref, cov_ref = ref.fit_pseudo_voigt(x, y, p0, lower, upper, sqrt_w)
    assert_same_minimum(p, cost, cov, p_ref, cost_ref, cov_ref, x.size, pf.COST_REL_TOL, CENTRE[0])
    # the centre itself: within 4 σ of the truth (pulls of these seeds: −1.9, 0.1, −1.5), σ ≈ 2.6e-3 px
    sigma = math.sqrt(cov[CENTRE[0], CENTRE[0]])
    assert abs(p[CENTRE[0]] - 0.31) < 4 * sigma
    assert 2e-3 < sigma < 3.5e-3


@pytest.mark.parametrize("seed", [7_306, 51_840])
def test_doublet_fit_matches_reference(seed):
    """Two peaks 3.1 px apart (1.2 FWHM), the second 60 % as bright: both centres free."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-8, 11, 800))
    truth = np.array([100.0, 0.0, 0.0, 2.5, 0.3, 2000.0, 0.2, 1200.0, 3.3])
    expect = ref.free_layout_model(x, truth)
    y = rng.poisson(expect).astype(float)
    sqrt_w = 1.0 / np.sqrt(expect)
    p0, lower, upper = free_start(y, [0.0, 3.0], 1.5)
    p = p0.copy()
    converged, cost, cov = pf.fit_peaks(x, y, p, lower, upper, 2, sqrt_w)
    assert converged
    p_ref, cost_ref, cov_ref = ref.fit_pseudo_voigt(x, y, p0, lower, upper, sqrt_w)
    assert_same_minimum(p, cost, cov, p_ref, cost_ref, cov_ref, x.size, pf.COST_REL_TOL, CENTRE[1])
    for j, true_centre in ((0, 0.2), (1, 3.3)):
        assert abs(p[CENTRE[j]] - true_centre) < 4 * math.sqrt(cov[CENTRE[j], CENTRE[j]])


@pytest.mark.parametrize("seed", [12_977, 33_405, 88_016])
def test_tied_fit_matches_reference(seed):
    """Five peaks 0.8 FWHM apart (one blended hump) moved by one shift δ = 0.137 px."""
    rng = np.random.default_rng(seed)
    x = np.sort(rng.uniform(-9, 9, 900))
    centres = np.array([-4.0, -2.0, 0.0, 2.0, 4.0])
    truth = np.array([120.0, 2.0, 0.0, 2.5, 0.5, 0.137, 300.0, 1500.0, 200.0, 900.0, 50.0])
    expect = ref.tied_layout_model(x, truth, centres)
    y = rng.poisson(expect).astype(float)
    sqrt_w = 1.0 / np.sqrt(expect)
    p0, lower, upper = tied_start(y, centres.size, 1.0)
    p = p0.copy()
    converged, cost, cov = pf.fit_peaks_tied(x, y, p, lower, upper, centres, sqrt_w)
    assert converged
    p_ref, cost_ref, cov_ref = ref.fit_pseudo_voigt(x, y, p0, lower, upper, sqrt_w, centres)
    assert_same_minimum(p, cost, cov, p_ref, cost_ref, cov_ref, x.size, pf.TIED_REL_COST, pf.I_SHIFT)
    # the shift is what a tied fit reports: within 4 σ (≈ 5.8e-3 px) of the truth
    assert abs(p[pf.I_SHIFT] - 0.137) < 4 * math.sqrt(cov[pf.I_SHIFT, pf.I_SHIFT])


def test_noise_free_fits_recover_truth():
    """On exact data the minimum is the truth: kernel and reference both reach it, to 1e-8 px (1e-11 of a
    1000 px ring radius; a model or gradient error would leave a bias of the order of its size)."""
    rng = np.random.default_rng(70_251)
    x = np.sort(rng.uniform(-8, 11, 700))
    truth = np.array([100.0, 1.0, -0.05, 2.5, 0.3, 2000.0, 0.2, 1200.0, 3.3])
    y = ref.free_layout_model(x, truth)
    ones = np.ones_like(x)
    p0, lower, upper = free_start(y, [0.0, 3.0], 1.5)
    p = p0.copy()
    assert pf.fit_peaks(x, y, p, lower, upper, 2, ones)[0]
    p_ref = ref.fit_pseudo_voigt(x, y, p0, lower, upper, ones)[0]
    for j in (0, 1):
        assert p[CENTRE[j]] == pytest.approx(truth[CENTRE[j]], abs=1e-8)
        assert p_ref[CENTRE[j]] == pytest.approx(truth[CENTRE[j]], abs=1e-8)

    centres = np.array([-3.0, -1.0, 1.0, 3.0])
    truth = np.array([50.0, 0.0, 0.0, 2.0, 0.6, -0.21, 800.0, 300.0, 1000.0, 500.0])
    y = ref.tied_layout_model(x, truth, centres)
    p0, lower, upper = tied_start(y, centres.size, 1.0)
    p = p0.copy()
    assert pf.fit_peaks_tied(x, y, p, lower, upper, centres, ones)[0]
    p_ref = ref.fit_pseudo_voigt(x, y, p0, lower, upper, ones, centres)[0]
    # the tied fit stops once δ moves by < TIED_SHIFT_TOL_PX (1e-5 px) in a step
    assert p[pf.I_SHIFT] == pytest.approx(-0.21, abs=pf.TIED_SHIFT_TOL_PX)
    assert p_ref[pf.I_SHIFT] == pytest.approx(-0.21, abs=1e-8)
