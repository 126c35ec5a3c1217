"""Numba kernels for ring-peak extraction: pixel → (cluster, η-bin) assignment and per-bin peak fits.

Peaks are fitted to the *scatter* of pixel intensities against their own radius ``r`` (computed with the
current geometry, at the pixel centre), not to a resampled profile: nothing is interpolated, binned or
area-weighted, so masked pixels simply drop out and there is no box-shape bias (the legacy chord-box
bias, spec legacy_engine.md §2.7 Q3, cannot arise). Radii inside the fit are in pixels relative to the
cluster's window centre, which keeps the normal equations well conditioned.

Model of one bin (``m`` peaks of one ring cluster, shared width and shape):

    I(x) = b0 + b1·x + b2·x² + Σ_j A_j·[μ·L(x − c_j) + (1 − μ)·G(x − c_j)]
    L(u) = 1 / (1 + 4u²/Γ²),   G(u) = exp(−4 ln2 · u²/Γ²)

parameters ``[b0, b1, b2, Γ, μ, A_1, c_1, …, A_m, c_m]``; fitted by Levenberg–Marquardt with bounds
enforced by projection. The quadratic background term absorbs the curvature of the Lorentzian tails of
rings outside the window (a straight line leaves biases of ~1e-5 strain next to bright neighbours).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba import PARALLEL, SERIAL
from .geometry_kernels import pixel_r_cs

FOUR_LN2 = 4.0 * math.log(2.0)

#: Status codes of a fitted peak.
OK, TOO_FEW_PIXELS, NOT_CONVERGED, AT_BOUND, WEAK, EDGE, SINGULAR = 0, 1, 2, 3, 4, 5, 6

_MAX_LM_ITER = 60
#: A window with more pixels is fitted on an evenly strided subset of this size: the cost of a fit grows
#: with pixels × peaks², and beyond a few thousand pixels the centre's precision no longer limits the
#: geometry (dense LaB6 patterns put ~4 windows on every pixel of a 2048² image).
MAX_FIT_PIXELS = 2000
#: Parameter layout: background b0, b1, b2, then Γ, μ, then (A, c) per peak.
I_GAMMA = 3
I_MU = 4
I_PEAKS = 5
#: Tied layout (crowded rings): b0, b1, b2, Γ, μ, one common shift δ, then A per peak.
I_SHIFT = 5
I_TIED_AMPS = 6
#: A ring is *crowded* when a neighbour's expected centre is closer than this many start FWHMs: the two
#: profiles then overlap so much that free centres trade off against each other and against the
#: amplitudes. Crowded rings are fitted in groups whose centres move together (see :func:`fit_group`).
TIE_SEPARATION_FWHM = 3.0
#: A tied group spans at most this many start FWHMs of ring centres (longer runs are split).
GROUP_SPAN_FWHM = 10.0
#: Pixels per tied-group fit: a group's shift is fitted from every ring in it at once, so fewer pixels give
#: the same precision as a lone ring's window, and dense patterns have ~10⁴ such windows per pass.
MAX_GROUP_PIXELS = 400
#: A tied fit has converged when its shift moves by less than this (px) in an accepted step while the cost
#: falls by less than :data:`TIED_REL_COST`: 1e-5 px is < 1e-8 of any ring radius, and polishing the
#: nuisance amplitudes further would cost most of the iterations.
TIED_SHIFT_TOL_PX = 1e-5
TIED_REL_COST = 1e-6
#: Clusters with more rings than this sort their pixels by radius (windows by binary search); fewer: scan.
SORT_MIN_RINGS = 8
#: Beyond |u| = 4 Γ the Gaussian part of a pseudo-Voigt is below exp(−44): skip its exponential.
GAUSS_CUT_Q = 16.0
#: Relative ridge on the normal matrix when it is inverted for the covariance: nearly coincident rings
#: (or a neighbour seen only by its tail) make the amplitudes almost collinear; the ridge keeps the
#: covariance of the well-determined parameters (the centre, the shift) finite and unchanged.
COV_RIDGE = 1e-10


@njit(**PARALLEL)
def assign_pixels(image, mask, g, col_to_iy, row_to_iz, n_panels_z, table, cluster_lo, cluster_hi,
                  n_eta, out_bin, out_r, out_eta):
    """Per pixel: bin id ``cluster·n_eta + eta_bin`` (−1 if masked or outside every window), r (µm), η (rad).

    ``r`` is the pixel's area-mean radius, ``r_centre + px²/(24·r_centre)``, the radius whose ring value the
    pixel records (without it, radii near the centre read low by up to 1e-5 of R).

    ``cluster_lo/hi`` (µm) are sorted, non-overlapping windows. η bins span (−π, π] in ``n_eta`` equal
    parts, bin 0 starting at −π.
    """
    rows, cols = image.shape
    n_clusters = cluster_lo.shape[0]
    deta = 2.0 * math.pi / n_eta
    px2_24 = g[3] * g[3] / 24.0
    for iz in prange(rows):
        for iy in range(cols):
            k = iz * cols + iy
            out_bin[k] = -1
            value = image[iz, iy]
            if mask[iz, iy] or not math.isfinite(value):
                continue
            r, c, s = pixel_r_cs(float(iy), float(iz), g, col_to_iy, row_to_iz, n_panels_z, table)
            # last window whose lower edge is <= r
            lo = 0
            hi = n_clusters
            while lo < hi:
                mid = (lo + hi) // 2
                if cluster_lo[mid] <= r:
                    lo = mid + 1
                else:
                    hi = mid
            cl = lo - 1
            if cl < 0 or r > cluster_hi[cl]:
                continue
            # a pixel averages the ring over its area: its mean radius exceeds the centre's by
            # E[δ⊥²]/(2r) = px²/(24 r) (δ⊥ the tangential offset, variance px²/12 for a square pixel)
            r += px2_24 / r if r > 0 else 0.0
            out_r[k] = r
            eta = math.atan2(s, c)
            e = int((eta + math.pi) / deta)
            if e >= n_eta:
                e = n_eta - 1
            elif e < 0:
                e = 0
            out_bin[k] = cl * n_eta + e
            out_eta[k] = eta


@njit(**SERIAL)
def counting_sort(bin_ids, n_bins):
    """CSR grouping of items by bin: returns ``(offsets (n_bins+1,), order)``; items with id < 0 dropped."""
    counts = np.zeros(n_bins + 1, dtype=np.int64)
    for b in bin_ids:
        if b >= 0:
            counts[b + 1] += 1
    offsets = np.cumsum(counts)
    fill = offsets[:-1].copy()
    order = np.empty(offsets[-1], dtype=np.int64)
    for k in range(bin_ids.shape[0]):
        b = bin_ids[k]
        if b >= 0:
            order[fill[b]] = k
            fill[b] += 1
    return offsets, order


@njit(**SERIAL)
def _value(xi, p, n_peaks):
    """Model value at ``xi`` (px)."""
    inv_g2 = 1.0 / (p[I_GAMMA] * p[I_GAMMA])
    mu = p[I_MU]
    val = p[0] + p[1] * xi + p[2] * xi * xi
    for j in range(n_peaks):
        u = xi - p[I_PEAKS + 1 + 2 * j]
        q = u * u * inv_g2
        val += p[I_PEAKS + 2 * j] * (mu / (1.0 + 4.0 * q) + (1.0 - mu) * math.exp(-FOUR_LN2 * q))
    return val


@njit(**SERIAL)
def _value_grad(xi, p, n_peaks, grad):
    """Model value at ``xi`` (px) and its gradient ∂model/∂p in ``grad``."""
    gamma = p[I_GAMMA]
    mu = p[I_MU]
    inv_g2 = 1.0 / (gamma * gamma)
    val = p[0] + p[1] * xi + p[2] * xi * xi
    grad[0] = 1.0
    grad[1] = xi
    grad[2] = xi * xi
    d_gamma = 0.0
    d_mu = 0.0
    for j in range(n_peaks):
        amp = p[I_PEAKS + 2 * j]
        u = xi - p[I_PEAKS + 1 + 2 * j]
        q = u * u * inv_g2
        lor = 1.0 / (1.0 + 4.0 * q)
        gau = math.exp(-FOUR_LN2 * q)
        val += amp * (mu * lor + (1.0 - mu) * gau)
        # d/du of the shape (d/dc = −d/du); q ∝ Γ⁻², so dq/dΓ = −2q/Γ
        dshape_du = -2.0 * u * inv_g2 * (4.0 * mu * lor * lor + FOUR_LN2 * (1.0 - mu) * gau)
        grad[I_PEAKS + 2 * j] = mu * lor + (1.0 - mu) * gau
        grad[I_PEAKS + 1 + 2 * j] = -amp * dshape_du
        d_gamma += amp * (2.0 * q / gamma) * (4.0 * mu * lor * lor + FOUR_LN2 * (1.0 - mu) * gau)
        d_mu += amp * (lor - gau)
    grad[I_GAMMA] = d_gamma
    grad[I_MU] = d_mu
    return val



@njit(**SERIAL)
def _value_tied(xi, p, centres):
    """Tied model value at ``xi`` (px): peak j at ``centres[j] + δ``."""
    inv_g2 = 1.0 / (p[I_GAMMA] * p[I_GAMMA])
    mu = p[I_MU]
    shift = p[I_SHIFT]
    val = p[0] + p[1] * xi + p[2] * xi * xi
    for j in range(centres.shape[0]):
        u = xi - centres[j] - shift
        q = u * u * inv_g2
        gau = math.exp(-FOUR_LN2 * q) if q < GAUSS_CUT_Q else 0.0
        val += p[I_TIED_AMPS + j] * (mu / (1.0 + 4.0 * q) + (1.0 - mu) * gau)
    return val


@njit(**SERIAL)
def _value_grad_tied(xi, p, centres, grad):
    """Tied model value at ``xi`` and its gradient in ``grad`` (layout of :data:`I_SHIFT`)."""
    gamma = p[I_GAMMA]
    mu = p[I_MU]
    shift = p[I_SHIFT]
    inv_g2 = 1.0 / (gamma * gamma)
    val = p[0] + p[1] * xi + p[2] * xi * xi
    grad[0] = 1.0
    grad[1] = xi
    grad[2] = xi * xi
    d_gamma = 0.0
    d_mu = 0.0
    d_shift = 0.0
    for j in range(centres.shape[0]):
        amp = p[I_TIED_AMPS + j]
        u = xi - centres[j] - shift
        q = u * u * inv_g2
        lor = 1.0 / (1.0 + 4.0 * q)
        gau = math.exp(-FOUR_LN2 * q) if q < GAUSS_CUT_Q else 0.0
        val += amp * (mu * lor + (1.0 - mu) * gau)
        core = 4.0 * mu * lor * lor + FOUR_LN2 * (1.0 - mu) * gau
        grad[I_TIED_AMPS + j] = mu * lor + (1.0 - mu) * gau
        d_shift += amp * 2.0 * u * inv_g2 * core
        d_gamma += amp * (2.0 * q / gamma) * core
        d_mu += amp * (lor - gau)
    grad[I_GAMMA] = d_gamma
    grad[I_MU] = d_mu
    grad[I_SHIFT] = d_shift
    return val


@njit(**SERIAL)
def _model(x, p, n_peaks, out, centres, tied):
    """Model values at every ``x`` (tied layout when ``tied``, peaks at ``centres + δ``)."""
    if tied:
        for i in range(x.shape[0]):
            out[i] = _value_tied(x[i], p, centres)
    else:
        for i in range(x.shape[0]):
            out[i] = _value(x[i], p, n_peaks)


@njit(**SERIAL)
def _weighted_cost(x, y, sqrt_w, p, n_peaks, centres, tied):
    # the layout test sits outside the pixel loop: the free-centre path stays as tight as it was
    cost = 0.0
    if tied:
        for i in range(x.shape[0]):
            r = sqrt_w[i] * (y[i] - _value_tied(x[i], p, centres))
            cost += r * r
    else:
        for i in range(x.shape[0]):
            r = sqrt_w[i] * (y[i] - _value(x[i], p, n_peaks))
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
            r = w * (y[i] - _value_grad_tied(x[i], p, centres, grad))
            cost += r * r
            _accumulate(w, r, grad, n_par, jtj, jtr)
    else:
        for i in range(x.shape[0]):
            w = sqrt_w[i]
            r = w * (y[i] - _value_grad(x[i], p, n_peaks, grad))
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
def fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w, max_iter=_MAX_LM_ITER):
    """Bounded Levenberg–Marquardt fit of the multi-peak model; ``p`` is updated in place.

    Minimises ``Σ w_i (y_i − f_i)²`` with ``sqrt_w = √w``. Returns ``(converged, chi2, covariance)`` with the
    covariance scaled by the reduced χ² (so a detector gain or an overall noise scale does not matter).
    """
    return _lm(x, y, p, lower, upper, n_peaks, sqrt_w, max_iter, np.empty(0), False)


@njit(**SERIAL)
def fit_peaks_tied(x, y, p, lower, upper, centres, sqrt_w, max_iter=_MAX_LM_ITER):
    """:func:`fit_peaks` for the tied model: peaks at ``centres + δ`` with one common shift δ (``p[I_SHIFT]``)."""
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
                    if abs(trial[k] - p[k]) > 1e-9 * (abs(p[k]) + 1e-6):
                        small_step = False
                if tied and rel < TIED_REL_COST and abs(trial[I_SHIFT] - p[I_SHIFT]) < TIED_SHIFT_TOL_PX:
                    small_step = True
                p[:] = trial
                cost = _normal_equations(x, y, sqrt_w, p, n_peaks, jtj, jtr, grad, centres, tied)
                lam = max(lam / 3.0, 1e-12)
                improved = True
                if rel < 1e-9 or small_step:
                    converged = True
                break
            lam *= 4.0
        if converged or not improved:
            converged = converged or (not improved and lam > 1e6)
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


@njit(**SERIAL)
def fit_window(x, y, eta, centres0, main, gamma0_px, half_window_px, weighted, out_row):
    """Fit one ring's window: the main peak ``centres0[main]`` plus its neighbours as nuisance peaks.

    ``x`` (px), ``y``, ``eta`` (rad) are the window's pixels; ``centres0`` the expected centres (px) of
    every peak in the model. Results of the main peak go to ``out_row`` (columns of :func:`fit_all_bins`).
    """
    n = x.shape[0]
    n_peaks = centres0.shape[0]
    n_par = I_PEAKS + 2 * n_peaks
    out_row[8] = n
    out_row[9] = TOO_FEW_PIXELS
    if n < 4 + n_par:
        return
    p = np.empty(n_par)
    lower = np.empty(n_par)
    upper = np.empty(n_par)
    # background start: median of the pixels farther than 1.5 Γ from every expected peak
    far = np.ones(n, dtype=np.bool_)
    for j in range(n_peaks):
        for k in range(n):
            if abs(x[k] - centres0[j]) < 1.5 * gamma0_px:
                far[k] = False
    bg0 = np.median(y[far]) if far.sum() >= 3 else np.min(y)
    y_span = max(np.max(y) - bg0, 1e-12)
    p[0] = bg0
    p[1] = 0.0
    p[2] = 0.0
    p[I_GAMMA] = gamma0_px
    p[I_MU] = 0.5
    for k in range(3):
        lower[k] = -np.inf
        upper[k] = np.inf
    lower[I_GAMMA] = 0.25
    upper[I_GAMMA] = max(4.0 * gamma0_px, 2.0)
    lower[I_MU] = 0.0
    upper[I_MU] = 1.0
    for j in range(n_peaks):
        c0 = centres0[j]
        # start at the brightest pixel within ±half a window of the expectation (main peak) or ±Γ
        reach = 0.5 * half_window_px if j == main else gamma0_px
        best = -np.inf
        c_best = c0
        for k in range(n):
            if abs(x[k] - c0) <= reach and y[k] > best:
                best = y[k]
                c_best = x[k]
        p[I_PEAKS + 2 * j] = max(best - bg0, 0.05 * y_span) if best > -np.inf else 0.05 * y_span
        p[I_PEAKS + 1 + 2 * j] = c_best
        lower[I_PEAKS + 2 * j] = 0.0
        upper[I_PEAKS + 2 * j] = 10.0 * y_span + 1.0
        bound = half_window_px if j == main else 0.5 * half_window_px
        # never let a peak reach half-way to another expected peak: that would swap their labels
        for jj in range(n_peaks):
            if jj != j:
                bound = min(bound, 0.5 * abs(centres0[jj] - c0))
        lower[I_PEAKS + 1 + 2 * j] = c0 - bound
        upper[I_PEAKS + 1 + 2 * j] = c0 + bound
    # pass 1 unweighted; pass 2 with Poisson-like weights 1/max(model, floor) from pass 1, which makes
    # the fit efficient and its covariance honest where the peak is much brighter than the background
    sqrt_w = np.ones(n)
    converged, cost, cov = fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w, 15 if weighted else _MAX_LM_ITER)
    model = np.empty(n)
    if weighted:
        _model(x, p, n_peaks, model, np.empty(0), False)
        floor = max(0.05 * np.max(model), 1e-12)
        for k in range(n):
            sqrt_w[k] = 1.0 / math.sqrt(max(model[k], floor))
        converged, cost, cov = fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w)
    # residual rms in counts (unweighted) for the SNR
    _model(x, p, n_peaks, model, np.empty(0), False)
    ss = 0.0
    for k in range(n):
        ss += (y[k] - model[k]) ** 2
    rms = math.sqrt(ss / max(n - n_par, 1))
    amp = p[I_PEAKS + 2 * main]
    c = p[I_PEAKS + 1 + 2 * main]
    status = OK
    if not converged:
        status = NOT_CONVERGED
    if c - lower[I_PEAKS + 1 + 2 * main] < 1e-6 or upper[I_PEAKS + 1 + 2 * main] - c < 1e-6 or p[I_GAMMA] >= upper[I_GAMMA] - 1e-9:
        status = AT_BOUND
    if c - 1.5 * p[I_GAMMA] < np.min(x) or c + 1.5 * p[I_GAMMA] > np.max(x):
        status = EDGE
    # peak-weighted mean η of the pixels under the main peak
    sw = 0.0
    sc = 0.0
    s_s = 0.0
    n_under = 0
    inv_g2 = 1.0 / (p[I_GAMMA] * p[I_GAMMA])
    for k in range(n):
        u = x[k] - c
        q = u * u * inv_g2
        if q < 1.0:
            w = p[I_MU] / (1.0 + 4.0 * q) + (1.0 - p[I_MU]) * math.exp(-FOUR_LN2 * q)
            sw += w
            sc += w * math.cos(eta[k])
            s_s += w * math.sin(eta[k])
            n_under += 1
    if n_under < 3:
        status = TOO_FEW_PIXELS
    var_c = cov[I_PEAKS + 1 + 2 * main, I_PEAKS + 1 + 2 * main]
    if not (var_c >= 0.0):
        status = SINGULAR
        var_c = np.nan
    out_row[0] = c
    out_row[1] = math.sqrt(var_c)
    out_row[2] = amp
    out_row[3] = p[I_GAMMA]
    out_row[4] = p[I_MU]
    out_row[5] = p[0] + p[1] * c + p[2] * c * c
    out_row[6] = amp / rms if rms > 0 else np.inf
    out_row[7] = math.atan2(s_s, sc) if sw > 0 else np.nan
    out_row[9] = status


@njit(**SERIAL)
def fit_group(x, y, eta, centres, first, last, gamma0_px, weighted, out_rows):
    """Fit a group of crowded rings with one common shift: rings ``first … last`` of ``centres`` are reported.

    ``centres`` (px, in the frame of ``x``) are the expected centres of every ring modelled in the window —
    the group and the neighbours whose profiles reach into it. Their relative positions come from the
    current geometry, which is exact to far better than a pixel across a window of a few FWHM (a 1 %
    error of the distance moves rings 3 px apart by 0.03 px relative to each other), so tying them leaves
    one well-determined centre parameter (δ) however strongly the profiles overlap, and the free
    amplitudes absorb any intensity ratio. ``out_rows[k]`` receives ring ``first + k`` (columns of
    :func:`fit_all_bins`; column 0 is the fitted centre ``centres[first + k] + δ`` in px).
    """
    n = x.shape[0]
    m = centres.shape[0]
    n_par = I_TIED_AMPS + m
    for k in range(last - first + 1):
        out_rows[k, 8] = n
        out_rows[k, 9] = TOO_FEW_PIXELS
    if n < 4 + n_par:
        return
    p = np.empty(n_par)
    lower = np.empty(n_par)
    upper = np.empty(n_par)
    # the shift may not reach half-way to the next ring: beyond that the comb would lock one ring off
    spacing = np.inf
    for j in range(1, m):
        spacing = min(spacing, centres[j] - centres[j - 1])
    bound = 0.5 * spacing if spacing < np.inf else gamma0_px
    far = np.ones(n, dtype=np.bool_)
    for k in range(n):
        for j in range(m):
            if abs(x[k] - centres[j]) < 1.5 * gamma0_px:
                far[k] = False
                break
    y_min = np.min(y)
    bg0 = np.median(y[far]) if far.sum() >= 3 else y_min
    bg0 = min(bg0, y_min + 0.5 * (np.max(y) - y_min))
    y_span = max(np.max(y) - bg0, 1e-12)
    p[0] = bg0
    p[1] = 0.0
    p[2] = 0.0
    p[I_GAMMA] = gamma0_px
    p[I_MU] = 0.5
    p[I_SHIFT] = 0.0
    for k in range(3):
        lower[k] = -np.inf
        upper[k] = np.inf
    lower[I_GAMMA] = 0.25
    upper[I_GAMMA] = max(4.0 * gamma0_px, 2.0)
    lower[I_MU] = 0.0
    upper[I_MU] = 1.0
    lower[I_SHIFT] = -bound
    upper[I_SHIFT] = bound
    for j in range(m):
        best = -np.inf
        for k in range(n):
            if abs(x[k] - centres[j]) <= 0.5 * gamma0_px and y[k] > best:
                best = y[k]
        # overlapping profiles add up: start each at a fraction of the local excess
        p[I_TIED_AMPS + j] = 0.5 * (best - bg0) if best > bg0 else 0.05 * y_span
        lower[I_TIED_AMPS + j] = 0.0
        upper[I_TIED_AMPS + j] = 10.0 * y_span + 1.0
    sqrt_w = np.ones(n)
    converged, cost, cov = fit_peaks_tied(x, y, p, lower, upper, centres, sqrt_w, 15 if weighted else _MAX_LM_ITER)
    model = np.empty(n)
    if weighted:
        _model(x, p, m, model, centres, True)
        floor = max(0.05 * np.max(model), 1e-12)
        for k in range(n):
            sqrt_w[k] = 1.0 / math.sqrt(max(model[k], floor))
        converged, cost, cov = fit_peaks_tied(x, y, p, lower, upper, centres, sqrt_w, _MAX_LM_ITER)
    _model(x, p, m, model, centres, True)
    ss = 0.0
    for k in range(n):
        ss += (y[k] - model[k]) ** 2
    rms = math.sqrt(ss / max(n - n_par, 1))
    shift = p[I_SHIFT]
    gamma = p[I_GAMMA]
    mu = p[I_MU]
    var_s = cov[I_SHIFT, I_SHIFT]
    x_min = np.min(x)
    x_max = np.max(x)
    inv_g2 = 1.0 / (gamma * gamma)
    for k in range(last - first + 1):
        j = first + k
        c = centres[j] + shift
        amp = p[I_TIED_AMPS + j]
        status = OK
        if not converged:
            status = NOT_CONVERGED
        if shift - lower[I_SHIFT] < 1e-6 or upper[I_SHIFT] - shift < 1e-6 or gamma >= upper[I_GAMMA] - 1e-9:
            status = AT_BOUND
        # the run's shift is pinned by all its rings, so a ring only needs its core inside the window
        if c - 0.5 * gamma < x_min or c + 0.5 * gamma > x_max:
            status = EDGE
        sw = 0.0
        sc = 0.0
        s_s = 0.0
        n_under = 0
        for i in range(n):
            u = x[i] - c
            q = u * u * inv_g2
            if q < 1.0:
                w = mu / (1.0 + 4.0 * q) + (1.0 - mu) * math.exp(-FOUR_LN2 * q)
                sw += w
                sc += w * math.cos(eta[i])
                s_s += w * math.sin(eta[i])
                n_under += 1
        if n_under < 3:
            status = TOO_FEW_PIXELS
        var_c = var_s
        if not (var_c >= 0.0):
            status = SINGULAR
            var_c = np.nan
        row = out_rows[k]
        row[0] = c
        row[1] = math.sqrt(var_c)
        row[2] = amp
        row[3] = gamma
        row[4] = mu
        row[5] = p[0] + p[1] * c + p[2] * c * c
        row[6] = amp / rms if rms > 0 else np.inf
        row[7] = math.atan2(s_s, sc) if sw > 0 else np.nan
        row[9] = status


@njit(**PARALLEL)
def fit_all_bins(offsets, order, r_all, i_all, eta_all, n_eta, cluster_center, peak_start, peak_r,
                 px_um, gamma0_px, half_window_px, min_pixels, weighted, tie_fwhm, skip_crowded, out):
    """Fit every ring of every (cluster, η-bin); results go to ``out[e, j, :]`` for ring j.

    A ring whose nearest neighbour is at least ``tie_fwhm`` × ``gamma0_px`` away is fitted in its own
    window ``±half_window_px`` around its expected radius, widened to contain the core of its nearest
    neighbour on each side when that lies within ``half_window + 3 Γ`` (but not past the midpoint to the
    ring beyond); every ring whose centre lies in the window is fitted with it as a nuisance peak, so
    neither a neighbour's tail nor a long chain of rings disturbs it.

    Crowded rings (a neighbour closer than that; ``tie_fwhm ≤ 0`` means none is) are fitted in runs of
    at most :data:`GROUP_SPAN_FWHM` FWHMs by :func:`fit_group` (one common shift, the neighbours whose
    profiles reach in modelled too), on at most :data:`MAX_GROUP_PIXELS` pixels; with ``skip_crowded``
    they get no result (while the geometry is still too rough to tell which crowded ring is which),
    though they stay in the model of their lone neighbours' windows.

    ``out`` columns: 0 r_fit (µm), 1 σ_r (µm), 2 amplitude, 3 FWHM (px), 4 μ, 5 background at peak,
    6 SNR (amplitude / residual rms), 7 η mean (rad, weighted by the fitted peak), 8 n pixels, 9 status.
    """
    n_bins = offsets.shape[0] - 1
    n_clusters = n_bins // n_eta
    for i in prange(n_bins):
        # η-major order: numba hands each thread a contiguous range of iterations, and clusters differ a
        # lot in cost (one dense cluster can hold most of the work), while the η bins of a cluster cost
        # about the same — so each thread gets its share of every cluster
        e = i // n_clusters
        cl = i - e * n_clusters
        b = cl * n_eta + e
        j0 = peak_start[cl]
        n_peaks = peak_start[cl + 1] - j0
        start = offsets[b]
        n = offsets[b + 1] - start
        centre = cluster_center[cl]
        x_raw = np.empty(n)
        for k in range(n):
            x_raw[k] = (r_all[order[start + k]] - centre) / px_um
        # many rings in the cluster: sort the pixels by radius once, so a window is a contiguous slice
        # (binary search) instead of a scan of the whole bin per ring; a few rings: scanning is cheaper
        is_sorted = n_peaks > SORT_MIN_RINGS
        if is_sorted:
            perm = np.argsort(x_raw)
            x_all = x_raw[perm]
        else:
            perm = np.arange(n)
            x_all = x_raw
        cpx = np.empty(n_peaks)
        for j in range(n_peaks):
            cpx[j] = (peak_r[j0 + j] - centre) / px_um
            row = out[e, j0 + j]
            row[8] = 0.0
            row[9] = TOO_FEW_PIXELS
        tie = tie_fwhm * gamma0_px
        crowded = np.zeros(n_peaks, dtype=np.bool_)
        if tie > 0:
            for j in range(n_peaks):
                if (j > 0 and cpx[j] - cpx[j - 1] < tie) or (j < n_peaks - 1 and cpx[j + 1] - cpx[j] < tie):
                    crowded[j] = True
        # widths change across a pattern (Γ ∝ 1/cos² 2θ for a fixed 2θ width): runs take their window and
        # start width from the last good fit at a smaller radius in this bin, not the global start
        gamma_run = gamma0_px
        j = 0
        while j < n_peaks:
            if crowded[j]:
                last = j
                while last + 1 < n_peaks and crowded[last + 1] and cpx[last + 1] - cpx[j] <= GROUP_SPAN_FWHM * gamma0_px:
                    last += 1
                if not skip_crowded:
                    _fit_crowded(x_all, is_sorted, perm, order, start, i_all, eta_all, cpx, j, last, gamma_run,
                                 half_window_px, min_pixels, weighted, out[e, j0 + j:j0 + last + 1])
                    for k in range(j, last + 1):
                        row = out[e, j0 + k]
                        if row[9] == OK and k == j:
                            gamma_run = min(max(row[3], 0.5 * gamma0_px), 4.0 * gamma0_px)
                        if row[9] != TOO_FEW_PIXELS:
                            row[0] = peak_r[j0 + k] + (row[0] - cpx[k]) * px_um
                            row[1] = row[1] * px_um
                j = last + 1
                continue
            _fit_lone(x_all, is_sorted, perm, order, start, i_all, eta_all, cpx, j, gamma0_px, half_window_px,
                      min_pixels, weighted, out[e, j0 + j])
            row = out[e, j0 + j]
            if row[9] == OK:
                gamma_run = min(max(row[3], 0.5 * gamma0_px), 4.0 * gamma0_px)
            if row[9] != TOO_FEW_PIXELS:
                row[0] = peak_r[j0 + j] + row[0] * px_um
                row[1] = row[1] * px_um
            j += 1


@njit(**SERIAL)
def _gather(x_all, is_sorted, perm, order, start, i_all, eta_all, lo, hi, max_pixels, origin):
    """Pixels of the bin with ``lo ≤ x ≤ hi`` (evenly strided down to ``max_pixels``), x relative to ``origin``.

    ``x_all[k]`` is the radius of pixel ``order[start + perm[k]]``; sorted ascending when ``is_sorted``.
    Returns ``(x, y, eta, m)`` with ``m`` the number of pixels in the window before striding.
    """
    if is_sorted:
        a = np.searchsorted(x_all, lo, side="left")
        b = np.searchsorted(x_all, hi, side="right")
        m = b - a
    else:
        a = 0
        b = x_all.shape[0]
        m = 0
        for k in range(b):
            if lo <= x_all[k] <= hi:
                m += 1
    stride = max(1, (m + max_pixels - 1) // max_pixels)
    m_fit = (m + stride - 1) // stride if m > 0 else 0
    x = np.empty(m_fit)
    y = np.empty(m_fit)
    eta = np.empty(m_fit)
    seen = 0
    i = 0
    for k in range(a, b):
        if i >= m_fit:
            break
        if not (lo <= x_all[k] <= hi):
            continue
        if seen % stride == 0:
            idx = order[start + perm[k]]
            x[i] = x_all[k] - origin
            y[i] = i_all[idx]
            eta[i] = eta_all[idx]
            i += 1
        seen += 1
    return x, y, eta, m


@njit(**SERIAL)
def _fit_lone(x_all, is_sorted, perm, order, start, i_all, eta_all, cpx, j, gamma0_px, half_window_px, min_pixels,
              weighted, row):
    """One ring in its own window with its neighbours as free nuisance peaks (see :func:`fit_all_bins`)."""
    n_peaks = cpx.shape[0]
    c_main = cpx[j]
    # the window is ±half_window around this ring, widened to hold the whole core (±2 Γ) of the
    # nearest neighbour on each side when its flank reaches in, but never past the midpoint to the
    # next ring beyond (dense tables would otherwise chain every ring into one huge fit)
    lo = c_main - half_window_px
    hi = c_main + half_window_px
    if j > 0:
        c_left = cpx[j - 1]
        if c_main - c_left <= half_window_px + 3.0 * gamma0_px:
            lo = min(lo, c_left - 2.0 * gamma0_px)
            if j > 1:
                lo = max(lo, 0.5 * (c_left + cpx[j - 2]))
    if j < n_peaks - 1:
        c_right = cpx[j + 1]
        if c_right - c_main <= half_window_px + 3.0 * gamma0_px:
            hi = max(hi, c_right + 2.0 * gamma0_px)
            if j < n_peaks - 2:
                hi = min(hi, 0.5 * (c_right + cpx[j + 2]))
    x, y, eta, m = _gather(x_all, is_sorted, perm, order, start, i_all, eta_all, lo, hi, MAX_FIT_PIXELS, c_main)
    if m < min_pixels:
        row[8] = m
        return
    n_near = 0
    main = 0
    for jj in range(n_peaks):
        if lo - 0.5 * gamma0_px <= cpx[jj] <= hi + 0.5 * gamma0_px:
            n_near += 1
    centres0 = np.empty(n_near)
    n_near = 0
    for jj in range(n_peaks):
        if lo - 0.5 * gamma0_px <= cpx[jj] <= hi + 0.5 * gamma0_px:
            if jj == j:
                main = n_near
            centres0[n_near] = cpx[jj] - c_main
            n_near += 1
    fit_window(x, y, eta, centres0, main, gamma0_px, half_window_px, weighted, row)


@njit(**SERIAL)
def _fit_crowded(x_all, is_sorted, perm, order, start, i_all, eta_all, cpx, first, last, gamma0_px, half_window_px,
                 min_pixels, weighted, rows):
    """Rings ``first … last`` (crowded) in one tied window; row k of ``rows`` gets ring ``first + k`` (px, raw)."""
    n_peaks = cpx.shape[0]
    # ±1.5 Γ about the run holds every ring's core; neighbours whose cores reach into it are modelled too
    h = min(half_window_px, max(1.5 * gamma0_px, 1.5))
    lo = cpx[first] - h
    hi = cpx[last] + h
    origin = 0.5 * (cpx[first] + cpx[last])
    x, y, eta, m = _gather(x_all, is_sorted, perm, order, start, i_all, eta_all, lo, hi, MAX_GROUP_PIXELS, origin)
    if m < min_pixels:
        for k in range(last - first + 1):
            rows[k, 8] = m
        return
    reach = 1.5 * gamma0_px
    a = first
    while a > 0 and cpx[a - 1] >= lo - reach:
        a -= 1
    b = last
    while b < n_peaks - 1 and cpx[b + 1] <= hi + reach:
        b += 1
    centres = np.empty(b - a + 1)
    for jj in range(a, b + 1):
        centres[jj - a] = cpx[jj] - origin
    fit_group(x, y, eta, centres, first - a, last - a, gamma0_px, weighted, rows)
    for k in range(last - first + 1):
        if rows[k, 9] != TOO_FEW_PIXELS:
            rows[k, 0] += origin
