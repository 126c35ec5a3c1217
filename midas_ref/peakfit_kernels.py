"""Numba kernels of the ring-peak model: pseudo-Voigt peaks on a quadratic background, fitted by bounded LM.

Model of one window (``m`` peaks of one ring cluster, one width and one shape for all):

    I(x) = b0 + b1·x + b2·x² + Σ_j A_j·[μ·L(x − c_j) + (1 − μ)·G(x − c_j)]
    L(u) = 1 / (1 + 4u²/Γ²),   G(u) = exp(−4 ln2 · u²/Γ²)

``x`` is in pixels relative to the window's centre (small numbers keep the normal equations well
conditioned); ``Γ`` is the FWHM in pixels, ``μ`` the Lorentzian fraction. Two parameter layouts:

* free (``[b0, b1, b2, Γ, μ, A_1, c_1, …, A_m, c_m]``): every centre is fitted;
* tied (``[b0, b1, b2, Γ, μ, δ, A_1, …, A_m]``): peak j sits at ``centres[j] + δ``, the expected centres
  moved by one common shift δ (crowded rings, see ``profiles_kernels.fit_group``).

The unit-height profile and its derivatives are written once, in :func:`pseudo_voigt`; the two layouts
only differ in how they sum it. The quadratic background absorbs the curvature of the Lorentzian tails of
rings outside the window (a straight line leaves biases of ~1e-5 strain next to bright neighbours).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from ._numba import SERIAL

FOUR_LN2 = 4.0 * math.log(2.0)

#: Parameter layout shared by both models: background ``b0 + b1·x + b2·x²`` (counts, counts/px,
#: counts/px²), then the FWHM Γ (px) and the Lorentzian fraction μ.
I_B0 = 0
I_B1 = 1
I_B2 = 2
I_GAMMA = 3
I_MU = 4
#: Free layout: peak j has its amplitude at ``I_PEAKS + PEAK_STRIDE·j + PEAK_AMP`` and its centre (px) at
#: ``I_PEAKS + PEAK_STRIDE·j + PEAK_CENTRE``.
I_PEAKS = 5
PEAK_STRIDE = 2
PEAK_AMP = 0
PEAK_CENTRE = 1
#: Tied layout: the common shift δ (px), then one amplitude per peak.
I_SHIFT = 5
I_TIED_AMPS = 6

#: Iteration cap of :func:`fit_peaks`: a converging fit of a few peaks needs 5–20 accepted steps.
MAX_LM_ITER = 60
#: Beyond |u| = 4 Γ (q = u²/Γ² = 16) the Gaussian part of a pseudo-Voigt is exp(−44) ≈ 5e-20 of the
#: peak height: below float64 resolution of any model value that has a Lorentzian part or a background,
#: so its exponential is skipped (most pixels of a window with neighbours lie that far from some peak).
GAUSS_CUT_Q = 16.0
#: A fit whose weighted cost is below this fraction of Σ(w·y²) has residuals at round-off (exact data): when
#: no step lowers it further, it has converged (residuals of 1e-10 of the counts, far below any noise).
ROUNDOFF_COST = 1e-20
#: A fit stops when an accepted step lowers the cost by less than this fraction, or moves every
#: parameter by less than :data:`STEP_REL_TOL` of its size (+1e-6 so zero-valued parameters can stop).
COST_REL_TOL = 1e-9
STEP_REL_TOL = 1e-9
#: A tied fit has converged when its shift moves by less than this (px) in an accepted step while the cost
#: falls by less than :data:`TIED_REL_COST`: 1e-5 px is < 1e-8 of any ring radius, and polishing the
#: nuisance amplitudes further would cost most of the iterations.
TIED_SHIFT_TOL_PX = 1e-5
TIED_REL_COST = 1e-6
#: Relative ridge on the normal matrix when it is inverted for the covariance: nearly coincident rings
#: (or a neighbour seen only by its tail) make the amplitudes almost collinear; the ridge keeps the
#: covariance of the well-determined parameters (the centre, the shift) finite and unchanged.
COV_RIDGE = 1e-10


# inlined at numba-IR level: as a separate LLVM function returning a tuple it is not inlined, Γ⁻² is
# recomputed per pixel and per peak and the fits run ~25 % slower
@njit(inline="always", **SERIAL)
def pseudo_voigt(u, gamma, mu):
    """Unit-height pseudo-Voigt ``μ·L(u) + (1 − μ)·G(u)`` averaged over a pixel, and its partial derivatives.

    A pixel records the mean of the profile over its area, not its value at the centre: to second order the
    mean over a 1-px footprint is ``f + f″/24`` (the radial footprint of a square pixel has variance 1/12 px²
    at every azimuth). Left out, the fitted tails are ~5 % low at FWHM 2.5 px, which moved the centres of
    ring pairs 8–13 px apart by up to 6e-6 of R (docs/validation.md).

    Parameters
    ----------
    u : float
        Offset from the peak centre, px.
    gamma : float
        FWHM Γ of the underlying profile, px (> 0).
    mu : float
        Lorentzian fraction, in [0, 1].

    Returns
    -------
    shape : float
        Pixel-averaged profile value (``1 + f″(0)/24`` at ``u = 0``), dimensionless.
    d_du : float
        ∂shape/∂u, 1/px (the derivative with respect to the centre is ``−d_du``).
    d_dgamma : float
        ∂shape/∂Γ, 1/px.
    d_dmu : float
        ∂shape/∂μ.

    Notes
    -----
    With ``s = 1/Γ²``, ``q = u²s``, ``L = 1/(1 + 4q)``, ``G = exp(−aq)``, ``a = 4 ln2``:
    ``L′ = −8suL²``, ``L″ = 8sL³(12q − 1)``, ``L‴ = 384s²uL³(1 − 8qL)``;
    ``G′ = −2asuG``, ``G″ = 2asG(2aq − 1)``, ``G‴ = 4a²s²uG(3 − 2aq)``;
    ``∂L/∂s = −4u²L²``, ``∂L″/∂s = −8L² + 320qL³ − 1536q²L⁴``, ``∂G/∂s = −au²G``,
    ``∂G″/∂s = G(−2a + 10a²q − 4a³q²)``, and ``∂/∂Γ = −(2s/Γ)·∂/∂s``. ``G`` is taken as 0 beyond
    ``q =`` :data:`GAUSS_CUT_Q`.
    """
    s = 1.0 / (gamma * gamma)
    q = u * u * s
    lor = 1.0 / (1.0 + 4.0 * q)
    gau = math.exp(-FOUR_LN2 * q) if q < GAUSS_CUT_Q else 0.0
    a = FOUR_LN2
    l2 = lor * lor
    l3 = l2 * lor
    lor2 = 8.0 * s * l3 * (12.0 * q - 1.0)
    gau2 = 2.0 * a * s * gau * (2.0 * a * q - 1.0)
    d_lor = -8.0 * s * u * l2 + 384.0 * s * s * u * l3 * (1.0 - 8.0 * q * lor) / 24.0
    d_gau = -2.0 * a * s * u * gau + 4.0 * a * a * s * s * u * gau * (3.0 - 2.0 * a * q) / 24.0
    ds_lor = -4.0 * u * u * l2 + (-8.0 * l2 + 320.0 * q * l3 - 1536.0 * q * q * l2 * l2) / 24.0
    ds_gau = -a * u * u * gau + gau * (-2.0 * a + 10.0 * a * a * q - 4.0 * a * a * a * q * q) / 24.0
    lor_px = lor + lor2 / 24.0
    gau_px = gau + gau2 / 24.0
    shape = mu * lor_px + (1.0 - mu) * gau_px
    d_du = mu * d_lor + (1.0 - mu) * d_gau
    d_dgamma = -(2.0 * s / gamma) * (mu * ds_lor + (1.0 - mu) * ds_gau)
    return shape, d_du, d_dgamma, lor_px - gau_px


@njit(inline="always", **SERIAL)
def background_value(xi, p):
    """The window's quadratic background ``b0 + b1·ξ + b2·ξ²`` at radius ``xi`` (px from the window centre),
    counts; the same three parameters lead both layouts."""
    return p[I_B0] + p[I_B1] * xi + p[I_B2] * xi * xi


@njit(inline="always", **SERIAL)
def background_value_grad(xi, p, grad):
    """:func:`background_value`, writing its gradient into ``grad[I_B0:I_B2 + 1]``."""
    grad[I_B0] = 1.0
    grad[I_B1] = xi
    grad[I_B2] = xi * xi
    return background_value(xi, p)


@njit(**SERIAL)
def multi_peak_value(xi, p, n_peaks):
    """Free-layout model value at one radius.

    Parameters
    ----------
    xi : float
        Radius relative to the window centre, px.
    p : ndarray of shape (I_PEAKS + 2·n_peaks,)
        Free-layout parameters (see the module docstring).
    n_peaks : int

    Returns
    -------
    float
        Model intensity, counts.
    """
    gamma = p[I_GAMMA]
    mu = p[I_MU]
    val = background_value(xi, p)
    for j in range(n_peaks):
        k = I_PEAKS + PEAK_STRIDE * j
        val += p[k + PEAK_AMP] * pseudo_voigt(xi - p[k + PEAK_CENTRE], gamma, mu)[0]
    return val


@njit(**SERIAL)
def multi_peak_value_grad(xi, p, n_peaks, grad):
    """Free-layout model value at one radius and its gradient with respect to ``p``.

    Parameters
    ----------
    xi : float
        Radius relative to the window centre, px.
    p : ndarray of shape (I_PEAKS + 2·n_peaks,)
        Free-layout parameters.
    n_peaks : int
    grad : ndarray of shape p.shape
        Output: ∂model/∂p_k (counts per unit of p_k).

    Returns
    -------
    float
        Model intensity, counts.
    """
    gamma = p[I_GAMMA]
    mu = p[I_MU]
    val = background_value_grad(xi, p, grad)
    d_gamma = 0.0
    d_mu = 0.0
    for j in range(n_peaks):
        k = I_PEAKS + PEAK_STRIDE * j
        amp = p[k + PEAK_AMP]
        shape, d_du, d_dgamma, d_dmu = pseudo_voigt(xi - p[k + PEAK_CENTRE], gamma, mu)
        val += amp * shape
        grad[k + PEAK_AMP] = shape
        grad[k + PEAK_CENTRE] = -amp * d_du
        d_gamma += amp * d_dgamma
        d_mu += amp * d_dmu
    grad[I_GAMMA] = d_gamma
    grad[I_MU] = d_mu
    return val


@njit(**SERIAL)
def tied_value(xi, p, centres):
    """Tied-layout model value at one radius: peak j at ``centres[j] + δ``.

    Parameters
    ----------
    xi : float
        Radius relative to the window centre, px.
    p : ndarray of shape (I_TIED_AMPS + m,)
        Tied-layout parameters (see the module docstring).
    centres : ndarray of shape (m,)
        Expected peak centres, px, same frame as ``xi``.

    Returns
    -------
    float
        Model intensity, counts.
    """
    gamma = p[I_GAMMA]
    mu = p[I_MU]
    shift = p[I_SHIFT]
    val = background_value(xi, p)
    for j in range(centres.shape[0]):
        val += p[I_TIED_AMPS + j] * pseudo_voigt(xi - centres[j] - shift, gamma, mu)[0]
    return val


@njit(**SERIAL)
def tied_value_grad(xi, p, centres, grad):
    """Tied-layout model value at one radius and its gradient with respect to ``p``.

    Parameters
    ----------
    xi : float
        Radius relative to the window centre, px.
    p : ndarray of shape (I_TIED_AMPS + m,)
        Tied-layout parameters.
    centres : ndarray of shape (m,)
        Expected peak centres, px.
    grad : ndarray of shape p.shape
        Output: ∂model/∂p_k (counts per unit of p_k).

    Returns
    -------
    float
        Model intensity, counts.
    """
    gamma = p[I_GAMMA]
    mu = p[I_MU]
    shift = p[I_SHIFT]
    val = background_value_grad(xi, p, grad)
    d_gamma = 0.0
    d_mu = 0.0
    d_shift = 0.0
    for j in range(centres.shape[0]):
        amp = p[I_TIED_AMPS + j]
        shape, d_du, d_dgamma, d_dmu = pseudo_voigt(xi - centres[j] - shift, gamma, mu)
        val += amp * shape
        grad[I_TIED_AMPS + j] = shape
        d_shift -= amp * d_du
        d_gamma += amp * d_dgamma
        d_mu += amp * d_dmu
    grad[I_GAMMA] = d_gamma
    grad[I_MU] = d_mu
    grad[I_SHIFT] = d_shift
    return val


@njit(**SERIAL)
def model_values(x, p, n_peaks, out, centres, tied):
    """Model intensity at every radius.

    Parameters
    ----------
    x : ndarray of shape (n,)
        Radii relative to the window centre, px.
    p : ndarray
        Parameters, tied layout when ``tied`` else free layout.
    n_peaks : int
        Peaks of the free layout (ignored when ``tied``).
    out : ndarray of shape (n,)
        Output: model intensity, counts.
    centres : ndarray of shape (m,)
        Expected centres of the tied layout, px (ignored unless ``tied``; pass ``np.empty(0)``).
    tied : bool
    """
    if tied:
        for i in range(x.shape[0]):
            out[i] = tied_value(x[i], p, centres)
    else:
        for i in range(x.shape[0]):
            out[i] = multi_peak_value(x[i], p, n_peaks)


@njit(**SERIAL)
def _weighted_cost(x, y, sqrt_w, p, n_peaks, centres, tied):
    # the layout test sits outside the pixel loop: the free-centre path stays as tight as it was
    cost = 0.0
    if tied:
        for i in range(x.shape[0]):
            r = sqrt_w[i] * (y[i] - tied_value(x[i], p, centres))
            cost += r * r
    else:
        for i in range(x.shape[0]):
            r = sqrt_w[i] * (y[i] - multi_peak_value(x[i], p, n_peaks))
            cost += r * r
    return cost


@njit(**SERIAL)
def _accumulate(w, r, grad, n_par, jtj, jtr):
    for a in range(n_par):
        grad[a] *= w
    for a in range(n_par):
        ga = grad[a]
        jtr[a] += ga * r
        for b in range(a + 1):
            jtj[a, b] += ga * grad[b]


@njit(**SERIAL)
def _normal_equations(x, y, sqrt_w, p, n_peaks, jtj, jtr, grad, centres, tied):
    """Accumulate JᵀJ and Jᵀr of the weighted residuals (no n × p Jacobian is stored); returns the cost."""
    n_par = p.shape[0]
    jtj[:, :] = 0.0
    jtr[:] = 0.0
    cost = 0.0
    if tied:
        for i in range(x.shape[0]):
            w = sqrt_w[i]
            r = w * (y[i] - tied_value_grad(x[i], p, centres, grad))
            cost += r * r
            _accumulate(w, r, grad, n_par, jtj, jtr)
    else:
        for i in range(x.shape[0]):
            w = sqrt_w[i]
            r = w * (y[i] - multi_peak_value_grad(x[i], p, n_peaks, grad))
            cost += r * r
            _accumulate(w, r, grad, n_par, jtj, jtr)
    for a in range(n_par):
        for b in range(a):
            jtj[b, a] = jtj[a, b]
    return cost


@njit(**SERIAL)
def _project(p, lower, upper):
    for k in range(p.shape[0]):
        if p[k] < lower[k]:
            p[k] = lower[k]
        elif p[k] > upper[k]:
            p[k] = upper[k]


@njit(**SERIAL)
def fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w, max_iter=MAX_LM_ITER):
    """Bounded Levenberg–Marquardt fit of the free-layout model; ``p`` is updated in place.

    Parameters
    ----------
    x : ndarray of shape (n,)
        Radii relative to the window centre, px.
    y : ndarray of shape (n,)
        Intensities, counts.
    p : ndarray of shape (I_PEAKS + 2·n_peaks,)
        Start parameters (free layout), inside ``[lower, upper]``; overwritten with the fit.
    lower, upper : ndarray of shape p.shape
        Bounds (``±inf`` for none); steps are projected onto them.
    n_peaks : int
    sqrt_w : ndarray of shape (n,)
        Square roots of the weights, 1/counts^½ for Poisson weights.
    max_iter : int
        Iteration cap (accepted or rejected outer steps).

    Returns
    -------
    converged : bool
    cost : float
        ``Σ w_i (y_i − f_i)²`` at the fit.
    cov : ndarray of shape (p.size, p.size)
        Covariance of ``p`` scaled by the reduced χ² (a detector gain or an overall noise scale does not
        matter); NaN if the normal matrix is singular.
    """
    return _lm(x, y, p, lower, upper, n_peaks, sqrt_w, max_iter, np.empty(0), False)


@njit(**SERIAL)
def fit_peaks_tied(x, y, p, lower, upper, centres, sqrt_w, max_iter=MAX_LM_ITER):
    """:func:`fit_peaks` for the tied layout: peaks at ``centres + δ`` with one common shift δ.

    Parameters
    ----------
    x, y, lower, upper, sqrt_w, max_iter
        As in :func:`fit_peaks`.
    p : ndarray of shape (I_TIED_AMPS + m,)
        Start parameters (tied layout); overwritten with the fit. ``p[I_SHIFT]`` is δ, px.
    centres : ndarray of shape (m,)
        Expected peak centres, px, same frame as ``x``.

    Returns
    -------
    converged, cost, cov
        As in :func:`fit_peaks`. A relative ridge (:data:`COV_RIDGE`) is added to the normal matrix before
        it is inverted, so nearly collinear amplitudes leave ``cov[I_SHIFT, I_SHIFT]`` finite.

    Notes
    -----
    Stops early once δ moves by less than :data:`TIED_SHIFT_TOL_PX` in a step that lowers the cost by less
    than :data:`TIED_REL_COST`: δ is the only parameter a tied fit reports a position from.
    """
    return _lm(x, y, p, lower, upper, centres.shape[0], sqrt_w, max_iter, centres, True)


@njit(**SERIAL)
def _lm(x, y, p, lower, upper, n_peaks, sqrt_w, max_iter, centres, tied):
    n = x.shape[0]
    n_par = p.shape[0]
    jtj = np.empty((n_par, n_par))
    jtr = np.empty(n_par)
    grad = np.empty(n_par)
    trial = np.empty(n_par)
    a = np.empty((n_par, n_par))
    cost = _normal_equations(x, y, sqrt_w, p, n_peaks, jtj, jtr, grad, centres, tied)
    data_scale = 0.0
    for k in range(n):
        data_scale += (sqrt_w[k] * y[k]) ** 2
    lam = 1e-3
    converged = False
    for _ in range(max_iter):
        improved = False
        for _inner in range(12):
            a[:, :] = jtj
            for k in range(n_par):
                a[k, k] += lam * (jtj[k, k] + 1e-12)
            try:
                step = np.linalg.solve(a, jtr)
            except Exception:  # noqa: BLE001 - numba raises a generic error for singular systems
                lam *= 10.0
                continue
            for k in range(n_par):
                trial[k] = p[k] + step[k]
            _project(trial, lower, upper)
            c_trial = _weighted_cost(x, y, sqrt_w, trial, n_peaks, centres, tied)
            if c_trial <= cost:
                rel = (cost - c_trial) / max(cost, 1e-300)
                small_step = True
                for k in range(n_par):
                    if abs(trial[k] - p[k]) > STEP_REL_TOL * (abs(p[k]) + 1e-6):
                        small_step = False
                if tied and rel < TIED_REL_COST and abs(trial[I_SHIFT] - p[I_SHIFT]) < TIED_SHIFT_TOL_PX:
                    small_step = True
                p[:] = trial
                cost = _normal_equations(x, y, sqrt_w, p, n_peaks, jtj, jtr, grad, centres, tied)
                lam = max(lam / 3.0, 1e-12)
                improved = True
                if rel < COST_REL_TOL or small_step:
                    converged = True
                break
            lam *= 4.0
        if converged or not improved:
            # no step lowers the cost even with a steepest-descent-sized λ: p is at a minimum; or the residuals
            # are at round-off (exact data): no step can lower the cost any more
            converged = converged or (not improved and (lam > 1e6 or cost <= ROUNDOFF_COST * data_scale))
            break
    dof = max(n - n_par, 1)
    sigma2 = cost / dof
    cov = np.full((n_par, n_par), np.nan)
    if tied:
        for k in range(n_par):
            jtj[k, k] += COV_RIDGE * jtj[k, k] + 1e-300
    try:
        cov = np.linalg.inv(jtj) * sigma2
    except Exception:  # noqa: BLE001
        pass
    return converged, cost, cov
