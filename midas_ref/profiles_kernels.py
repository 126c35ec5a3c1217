"""Numba kernels for ring-peak extraction: pixel → (cluster, η-bin) assignment and the per-bin fit drivers.

Peaks are fitted to the *scatter* of pixel intensities against their own radius ``r`` (computed with the
current geometry, at the pixel centre), not to a resampled profile: nothing is interpolated, binned or
area-weighted, so masked pixels simply drop out and there is no box-shape bias (the legacy chord-box
bias, spec legacy_engine.md §2.7 Q3, cannot arise). Radii inside the fit are in pixels relative to the
cluster's window centre, which keeps the normal equations well conditioned.

The model (pseudo-Voigt peaks on a quadratic background) and its bounded Levenberg–Marquardt live in
``peakfit_kernels``; this module chooses the windows, the start values and bounds, and writes one result
row per ring (columns ``ROW_*``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from ._numba import PARALLEL, SERIAL
from .geometry_kernels import pixel_r_cs
from .kernel_layout import G_PX
from .peakfit_kernels import (I_B0, I_B1, I_B2, I_GAMMA, I_MU, I_PEAKS, I_SHIFT, I_TIED_AMPS, MAX_LM_ITER,
                              PEAK_AMP, PEAK_CENTRE, PEAK_STRIDE, fit_peaks, fit_peaks_tied, model_values,
                              pseudo_voigt)

#: Status codes of a fitted peak.
OK, TOO_FEW_PIXELS, NOT_CONVERGED, AT_BOUND, WEAK, EDGE, SINGULAR = 0, 1, 2, 3, 4, 5, 6

#: Columns of a result row (``out[e, j, :]`` of :func:`fit_all_bins`). :func:`fit_window` and
#: :func:`fit_group` write the centre and its σ in px of their window's frame; :func:`fit_all_bins` turns
#: them into the radius and its σ in µm.
ROW_R_UM = 0
ROW_SIGMA_UM = 1
ROW_AMPLITUDE = 2
ROW_FWHM_PX = 3
ROW_MU = 4
ROW_BACKGROUND = 5
ROW_SNR = 6
ROW_ETA_RAD = 7
ROW_N_PIXELS = 8
ROW_STATUS = 9
#: Index (in the sorted ring list) of the first ring of the fit that produced the row: a lone ring's own, a
#: crowded run's first ring. Rows of one run share one fitted shift, so their errors are one error.
ROW_GROUP = 10
ROW_WIDTH = 11

#: With Poisson weighting the first (unweighted) pass only has to seed the weights, so it gets a short cap;
#: the weighted pass then runs to convergence.
SEED_PASS_ITER = 15
#: A window with more pixels is fitted on an evenly strided subset of this size: the cost of a fit grows
#: with pixels × peaks², and beyond a few thousand pixels the centre's precision no longer limits the
#: geometry (dense LaB6 patterns put ~4 windows on every pixel of a 2048² image).
MAX_FIT_PIXELS = 2000
#: A ring is *crowded* when a neighbour's expected centre is closer than this many start FWHMs: the two
#: profiles then overlap so much that free centres trade off against each other and against the
#: amplitudes. Crowded rings are fitted in groups whose centres move together (see :func:`fit_group`).
TIE_SEPARATION_FWHM = 3.0
#: A tied group spans at most this many start FWHMs of ring centres (longer runs are split).
GROUP_SPAN_FWHM = 10.0
#: Pixels per tied-group fit: a group's shift is fitted from every ring in it at once, so fewer pixels give
#: the same precision as a lone ring's window, and dense patterns have ~10⁴ such windows per pass.
MAX_GROUP_PIXELS = 400
#: Clusters with more rings than this sort their pixels by radius (windows by binary search); fewer: scan.
SORT_MIN_RINGS = 8
#: Neighbour subtraction (the second, "backfitting" pass of :func:`fit_all_bins`): the pass-1 profile of
#: every ring of the η bin that a window does not model is subtracted from the window's pixels when its
#: centre lies within this many of its FWHMs of the window. A Lorentzian tail that far off is so smooth
#: that the quadratic background absorbs it (a pair 16 FWHM apart leaves < 0.1 µε; measured in
#: docs/validation.md, "Error bars").
NEIGHBOUR_REACH_FWHM = 25.0
#: A neighbour fitted at the window edge (status EDGE) is subtracted only if its FWHM is below this many
#: start FWHMs of the window (a fit of half a peak can run wide).
EDGE_GAMMA_MAX = 2.0
#: LM iterations of pass 2 from pass 1's solution: the subtracted tails change the linear parameters
#: (background, amplitudes) and move the centre by ~1e-3 px, so the first (nearly Gauss–Newton) step lands
#: on the new minimum to second order in that change; the second only confirms it.
WARM_ITER = 2
#: Width of a saved window solution (``state`` of :func:`fit_all_bins`): column 0 holds the number of
#: parameters, then the parameters; windows with more parameters are refitted from a cold start.
STATE_WIDTH = 40


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
    px2_24 = g[G_PX] * g[G_PX] / 24.0
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
def _background_seed(x, y, centres, gamma0_px):
    """Start value of the background b0 (counts): median of the pixels farther than 1.5 Γ from every peak.

    With fewer than 3 such pixels, the lowest pixel. The seed is capped at the middle of the intensity
    range: the "far" pixels of a window of overlapping rings still sit on flanks, and a background start
    above half the peak would start every amplitude at its floor. Both drivers use this one seed: the cap
    used to be in the tied start-up only, and on lone windows it changed no fitted centre of the simulated
    scenarios (ge2048, lab6_short, the small CeO2 image; noisy and noise-free; true and offset geometry).
    """
    n = x.shape[0]
    far = np.ones(n, dtype=np.bool_)
    for k in range(n):
        for j in range(centres.shape[0]):
            if abs(x[k] - centres[j]) < 1.5 * gamma0_px:
                far[k] = False
                break
    y_min = np.min(y)
    bg0 = np.median(y[far]) if far.sum() >= 3 else y_min
    return min(bg0, y_min + 0.5 * (np.max(y) - y_min))


@njit(**SERIAL)
def _poisson_weights(x, p, n_peaks, centres, tied, model, sqrt_w, extra):
    """``sqrt_w = 1/√max(model + extra, floor)`` from the pass-1 model: efficient weights, honest covariance
    where the peak is much brighter than the background; the floor (5 % of the peak model) keeps pixels
    whose model is near zero or negative (a poor pass 1) from dominating. ``extra`` (empty, or one value per
    pixel) is the subtracted neighbours' profile: their counts are in the pixels' variance too."""
    model_values(x, p, n_peaks, model, centres, tied)
    if extra.shape[0] == x.shape[0]:
        for k in range(x.shape[0]):
            model[k] += extra[k]
    floor = max(0.05 * np.max(model), 1e-12)
    for k in range(x.shape[0]):
        sqrt_w[k] = 1.0 / math.sqrt(max(model[k], floor))


@njit(**SERIAL)
def _residual_rms(x, y, p, n_peaks, centres, tied, model):
    """Unweighted residual rms (counts), the noise the SNR is measured against."""
    model_values(x, p, n_peaks, model, centres, tied)
    ss = 0.0
    for k in range(x.shape[0]):
        ss += (y[k] - model[k]) ** 2
    return math.sqrt(ss / max(x.shape[0] - p.shape[0], 1))


@njit(**SERIAL)
def _write_row(row, x, eta, p, c, amp, var_c, rms, status):
    """Fill a result row for the peak at ``c`` (px) of amplitude ``amp``; the η reported is the peak-weighted
    mean of the pixels within ±Γ of ``c`` (the fitted radius belongs to them, not to the bin's middle)."""
    gamma = p[I_GAMMA]
    mu = p[I_MU]
    sw = 0.0
    sc = 0.0
    s_s = 0.0
    n_under = 0
    for k in range(x.shape[0]):
        u = x[k] - c
        if u * u < gamma * gamma:
            w = pseudo_voigt(u, gamma, mu)[0]
            sw += w
            sc += w * math.cos(eta[k])
            s_s += w * math.sin(eta[k])
            n_under += 1
    if n_under < 3:
        status = TOO_FEW_PIXELS
    if not (var_c >= 0.0):
        status = SINGULAR
        var_c = np.nan
    row[ROW_R_UM] = c
    row[ROW_SIGMA_UM] = math.sqrt(var_c)
    row[ROW_AMPLITUDE] = amp
    row[ROW_FWHM_PX] = gamma
    row[ROW_MU] = mu
    row[ROW_BACKGROUND] = p[I_B0] + p[I_B1] * c + p[I_B2] * c * c
    row[ROW_SNR] = amp / rms if rms > 0 else np.inf
    row[ROW_ETA_RAD] = math.atan2(s_s, sc) if sw > 0 else np.nan
    row[ROW_STATUS] = status


@njit(**SERIAL)
def _shape_bounds(p, lower, upper, gamma0_px):
    """Start values and bounds of the background slope/curvature, Γ (px) and μ, shared by both layouts."""
    p[I_B1] = 0.0
    p[I_B2] = 0.0
    p[I_GAMMA] = gamma0_px
    p[I_MU] = 0.5
    for k in (I_B0, I_B1, I_B2):
        lower[k] = -np.inf
        upper[k] = np.inf
    lower[I_GAMMA] = 0.25
    upper[I_GAMMA] = max(4.0 * gamma0_px, 2.0)
    lower[I_MU] = 0.0
    upper[I_MU] = 1.0


@njit(**SERIAL)
def fit_window(x, y, eta, centres0, main, gamma0_px, half_window_px, weighted, out_row):
    """Fit one ring's window: the main peak ``centres0[main]`` plus its neighbours as nuisance peaks.

    ``x`` (px), ``y``, ``eta`` (rad) are the window's pixels; ``centres0`` the expected centres (px) of
    every peak in the model. Results of the main peak go to ``out_row`` (columns ``ROW_*``; the centre and
    its σ in px of the frame of ``x``).
    """
    _fit_window(x, y, eta, centres0, main, gamma0_px, half_window_px, weighted, out_row, np.empty(0),
                np.empty(0))


@njit(**SERIAL)
def _fit_window(x, y, eta, centres0, main, gamma0_px, half_window_px, weighted, out_row, extra, state):
    """:func:`fit_window` with the neighbour subtraction of :func:`fit_all_bins`.

    ``extra`` is empty (pass 1) or holds, per pixel, the pass-1 profiles of the rings this window does not
    model (pass 2): they are subtracted from ``y`` and counted in the Poisson weights. ``state`` (empty, or
    :data:`STATE_WIDTH` long) saves the final parameters of a converged pass 1; pass 2 starts from them with
    pass 1's weights and takes :data:`WARM_ITER` LM steps instead of a second full fit (its centres agree with
    fully converged refits to < 0.06 σ on Poisson images of ``small512``).
    """
    n = x.shape[0]
    n_peaks = centres0.shape[0]
    n_par = I_PEAKS + PEAK_STRIDE * n_peaks
    out_row[ROW_N_PIXELS] = n
    out_row[ROW_STATUS] = TOO_FEW_PIXELS
    if n < 4 + n_par:
        return
    subtract = extra.shape[0] == n
    if subtract:
        y = y - extra
    p = np.empty(n_par)
    lower = np.empty(n_par)
    upper = np.empty(n_par)
    bg0 = _background_seed(x, y, centres0, gamma0_px)
    y_span = max(np.max(y) - bg0, 1e-12)
    p[I_B0] = bg0
    _shape_bounds(p, lower, upper, gamma0_px)
    for j in range(n_peaks):
        ia = I_PEAKS + PEAK_STRIDE * j + PEAK_AMP
        ic = I_PEAKS + PEAK_STRIDE * j + PEAK_CENTRE
        c0 = centres0[j]
        # start at the brightest pixel within ±half a window of the expectation (main peak) or ±Γ
        reach = 0.5 * half_window_px if j == main else gamma0_px
        best = -np.inf
        c_best = c0
        for k in range(n):
            if abs(x[k] - c0) <= reach and y[k] > best:
                best = y[k]
                c_best = x[k]
        p[ia] = max(best - bg0, 0.05 * y_span) if best > -np.inf else 0.05 * y_span
        p[ic] = c_best
        lower[ia] = 0.0
        upper[ia] = 10.0 * y_span + 1.0
        bound = half_window_px if j == main else 0.5 * half_window_px
        # never let a peak reach half-way to another expected peak: that would swap their labels
        for jj in range(n_peaks):
            if jj != j:
                bound = min(bound, 0.5 * abs(centres0[jj] - c0))
        lower[ic] = c0 - bound
        upper[ic] = c0 + bound
    no_centres = np.empty(0)
    sqrt_w = np.ones(n)
    model = np.empty(n)
    if subtract and weighted and _load_state(state, p, lower, upper):
        # pass 2 from pass 1's solution, weighted by pass 1's model (which held the neighbours' tails in
        # its background: the pixels' counts)
        _poisson_weights(x, p, n_peaks, no_centres, False, model, sqrt_w, no_centres)
        converged, cost, cov = fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w, WARM_ITER)
        converged = True
    else:
        # pass 1 unweighted; pass 2 with Poisson-like weights from pass 1
        converged, cost, cov = fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w,
                                         SEED_PASS_ITER if weighted else MAX_LM_ITER)
        if weighted:
            _poisson_weights(x, p, n_peaks, no_centres, False, model, sqrt_w, extra)
            converged, cost, cov = fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w)
    if not subtract and converged:
        _save_state(state, p)
    rms = _residual_rms(x, y, p, n_peaks, no_centres, False, model)
    ia = I_PEAKS + PEAK_STRIDE * main + PEAK_AMP
    ic = I_PEAKS + PEAK_STRIDE * main + PEAK_CENTRE
    c = p[ic]
    status = OK
    if not converged:
        status = NOT_CONVERGED
    if c - lower[ic] < 1e-6 or upper[ic] - c < 1e-6 or p[I_GAMMA] >= upper[I_GAMMA] - 1e-9:
        status = AT_BOUND
    if c - 1.5 * p[I_GAMMA] < np.min(x) or c + 1.5 * p[I_GAMMA] > np.max(x):
        status = EDGE
    _write_row(out_row, x, eta, p, c, p[ia], cov[ic, ic], rms, status)
    if subtract:
        # the background under the peak keeps its meaning: everything in the pixels but this ring
        out_row[ROW_BACKGROUND] += _extra_at(x, extra, c)


@njit(**SERIAL)
def _save_state(state, p):
    """Save a converged ``p`` into ``state`` (column 0 = its length) when it fits; nothing when ``state`` is
    empty."""
    n_par = p.shape[0]
    if state.shape[0] >= n_par + 1:
        state[0] = n_par
        state[1:n_par + 1] = p


@njit(**SERIAL)
def _load_state(state, p, lower, upper):
    """Overwrite ``p`` with the saved solution (projected onto the bounds); False when none was saved."""
    n_par = p.shape[0]
    if state.shape[0] < n_par + 1 or state[0] != n_par:
        return False
    for k in range(n_par):
        v = state[k + 1]
        if not math.isfinite(v):
            return False
    for k in range(n_par):
        p[k] = min(max(state[k + 1], lower[k]), upper[k])
    return True


@njit(**SERIAL)
def _extra_at(x, extra, c):
    """The subtracted neighbours' profile at radius ``c`` (px), linear between the nearest pixels on either
    side (the pixels are not sorted)."""
    below = -np.inf
    above = np.inf
    v_below = 0.0
    v_above = 0.0
    for k in range(x.shape[0]):
        if below < x[k] <= c:
            below = x[k]
            v_below = extra[k]
        elif c < x[k] < above:
            above = x[k]
            v_above = extra[k]
    if below == -np.inf:
        return v_above
    if above == np.inf or above == below:
        return v_below
    return v_below + (v_above - v_below) * (c - below) / (above - below)


@njit(**SERIAL)
def neighbour_profiles(x, origin_um, px_um, prior_rows, skip_lo, skip_hi, reach_fwhm, gamma_max, extra):
    """Sum of the pass-1 profiles of the rings a window does not model, at its pixels; returns their count.

    Parameters
    ----------
    x : ndarray of shape (n,)
        The window's pixel radii, px relative to ``origin_um``.
    origin_um, px_um : float
        Radius of ``x = 0`` (µm) and the pixel size (µm).
    prior_rows : ndarray of shape (n_rings, ROW_WIDTH)
        Pass-1 result rows of this η bin (every ring, radius in µm).
    skip_lo, skip_hi : int
        Rings ``skip_lo … skip_hi`` are peaks of the window's own model and are left out.
    reach_fwhm : float
        Rings whose centre is farther than ``reach_fwhm`` of their FWHMs from every pixel are left out.
    gamma_max : float
        Fits flagged EDGE (the ring's core at the window's edge, mostly a ring cut by the detector edge)
        are used when their FWHM is at most this (px); fits with any other status than OK never.
    extra : ndarray of shape (n,)
        Output: ``Σ_g A_g·pV(x − c_g; Γ_g, μ_g)`` over the rings g with a usable pass-1 fit.
    """
    n = x.shape[0]
    extra[:] = 0.0
    if n == 0:
        return 0
    x_lo = np.min(x)
    x_hi = np.max(x)
    used = 0
    for g in range(prior_rows.shape[0]):
        if skip_lo <= g <= skip_hi:
            continue
        row = prior_rows[g]
        status = row[ROW_STATUS]
        if status != OK and status != EDGE:
            continue
        amp = row[ROW_AMPLITUDE]
        gamma = row[ROW_FWHM_PX]
        mu = row[ROW_MU]
        if not (math.isfinite(amp) and math.isfinite(gamma) and math.isfinite(mu)
                and math.isfinite(row[ROW_R_UM])) or amp <= 0.0 or gamma <= 0.0:
            continue
        # a ring cut by the detector edge (status EDGE) still shines on its neighbours' windows in full;
        # its fit is used unless its width ran away (the EDGE flag hides AT_BOUND)
        if status == EDGE and gamma > gamma_max:
            continue
        c = (row[ROW_R_UM] - origin_um) / px_um
        if max(x_lo - c, c - x_hi) > reach_fwhm * gamma:
            continue
        for k in range(n):
            extra[k] += amp * pseudo_voigt(x[k] - c, gamma, mu)[0]
        used += 1
    return used


@njit(**SERIAL)
def fit_group(x, y, eta, centres, first, last, gamma0_px, weighted, out_rows):
    """Fit a group of crowded rings with one common shift: rings ``first … last`` of ``centres`` are reported.

    ``centres`` (px, in the frame of ``x``) are the expected centres of every ring modelled in the window —
    the group and the neighbours whose profiles reach into it. Their relative positions come from the
    current geometry, which is exact to far better than a pixel across a window of a few FWHM (a 1 %
    error of the distance moves rings 3 px apart by 0.03 px relative to each other), so tying them leaves
    one well-determined centre parameter (δ) however strongly the profiles overlap, and the free
    amplitudes absorb any intensity ratio. ``out_rows[k]`` receives ring ``first + k`` (columns ``ROW_*``;
    the centre ``centres[first + k] + δ`` and σ(δ) in px).
    """
    _fit_group(x, y, eta, centres, first, last, gamma0_px, weighted, out_rows, np.empty(0), np.empty(0))


@njit(**SERIAL)
def _fit_group(x, y, eta, centres, first, last, gamma0_px, weighted, out_rows, extra, state):
    """:func:`fit_group` with the neighbour subtraction (``extra``, ``state`` as in :func:`_fit_window`)."""
    n = x.shape[0]
    m = centres.shape[0]
    n_par = I_TIED_AMPS + m
    for k in range(last - first + 1):
        out_rows[k, ROW_N_PIXELS] = n
        out_rows[k, ROW_STATUS] = TOO_FEW_PIXELS
    if n < 4 + n_par:
        return
    subtract = extra.shape[0] == n
    if subtract:
        y = y - extra
    p = np.empty(n_par)
    lower = np.empty(n_par)
    upper = np.empty(n_par)
    # the shift may not reach half-way to the next ring: beyond that the comb would lock one ring off
    spacing = np.inf
    for j in range(1, m):
        spacing = min(spacing, centres[j] - centres[j - 1])
    bound = 0.5 * spacing if spacing < np.inf else gamma0_px
    bg0 = _background_seed(x, y, centres, gamma0_px)
    y_span = max(np.max(y) - bg0, 1e-12)
    p[I_B0] = bg0
    _shape_bounds(p, lower, upper, gamma0_px)
    p[I_SHIFT] = 0.0
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
    model = np.empty(n)
    no_extra = np.empty(0)
    if subtract and weighted and _load_state(state, p, lower, upper):
        _poisson_weights(x, p, m, centres, True, model, sqrt_w, no_extra)
        converged, cost, cov = fit_peaks_tied(x, y, p, lower, upper, centres, sqrt_w, WARM_ITER)
        converged = True
    else:
        converged, cost, cov = fit_peaks_tied(x, y, p, lower, upper, centres, sqrt_w,
                                              SEED_PASS_ITER if weighted else MAX_LM_ITER)
        if weighted:
            _poisson_weights(x, p, m, centres, True, model, sqrt_w, extra)
            converged, cost, cov = fit_peaks_tied(x, y, p, lower, upper, centres, sqrt_w, MAX_LM_ITER)
    if not subtract and converged:
        _save_state(state, p)
    rms = _residual_rms(x, y, p, m, centres, True, model)
    shift = p[I_SHIFT]
    gamma = p[I_GAMMA]
    x_min = np.min(x)
    x_max = np.max(x)
    for k in range(last - first + 1):
        j = first + k
        c = centres[j] + shift
        status = OK
        if not converged:
            status = NOT_CONVERGED
        if shift - lower[I_SHIFT] < 1e-6 or upper[I_SHIFT] - shift < 1e-6 or gamma >= upper[I_GAMMA] - 1e-9:
            status = AT_BOUND
        # the run's shift is pinned by all its rings, so a ring only needs its core inside the window
        if c - 0.5 * gamma < x_min or c + 0.5 * gamma > x_max:
            status = EDGE
        _write_row(out_rows[k], x, eta, p, c, p[I_TIED_AMPS + j], cov[I_SHIFT, I_SHIFT], rms, status)
        if subtract:
            out_rows[k, ROW_BACKGROUND] += _extra_at(x, extra, c)


@njit(**PARALLEL)
def fit_all_bins(offsets, order, r_all, i_all, eta_all, n_eta, cluster_center, peak_start, peak_r,
                 px_um, gamma0_px, half_window_px, min_pixels, weighted, tie_fwhm, skip_crowded, out, prior, state):
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

    ``out`` has shape ``(n_eta, n_rings, ROW_WIDTH)``; columns: :data:`ROW_R_UM` fitted radius (µm),
    :data:`ROW_SIGMA_UM` its σ (µm), :data:`ROW_AMPLITUDE`, :data:`ROW_FWHM_PX` (px), :data:`ROW_MU`,
    :data:`ROW_BACKGROUND` (background at the peak), :data:`ROW_SNR` (amplitude / residual rms),
    :data:`ROW_ETA_RAD` (η mean, rad, weighted by the fitted peak), :data:`ROW_N_PIXELS`, :data:`ROW_STATUS`,
    :data:`ROW_GROUP` (first ring of the fit: rows with the same value in one η bin share their error).

    Neighbour subtraction (backfitting): a window models only the rings whose centres lie in it, and the
    Lorentzian tails of the others (rings of other clusters 13–15 px away carry ~70 counts of tail into a
    window) were left to the quadratic background, which cannot follow their 1/d² shape: the centres of
    such pairs were pushed apart by up to 2e-5 of R. So a second call (pass 2) gets the rows of the first
    as ``prior`` (same shape as ``out``; pass 1: ``prior.shape[0] == 0``): each window then subtracts the
    pass-1 profiles of the rings of its η bin it does not model (:func:`neighbour_profiles`) and refits.
    ``state`` (``(n_eta, n_rings, STATE_WIDTH)``, or ``shape[0] == 0`` for none) carries each window's
    pass-1 solution to pass 2, which then only polishes it with pass 1's weights (weighted fits only;
    unweighted ones are refitted from the start). Pass 2 takes its run widths from ``prior``, so it fits
    the same windows as pass 1.
    """
    second_pass = prior.shape[0] > 0
    with_state = state.shape[0] > 0
    no_prior = np.empty((0, ROW_WIDTH))
    no_state = np.empty(0)
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
            row[ROW_N_PIXELS] = 0.0
            row[ROW_STATUS] = TOO_FEW_PIXELS
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
                    final = _fit_crowded(x_all, is_sorted, perm, order, start, i_all, eta_all, cpx, j, last,
                                         gamma_run, half_window_px, min_pixels, weighted,
                                         out[e, j0 + j:j0 + last + 1], prior[e] if second_pass else no_prior, j0,
                                         centre, px_um, state[e, j0 + j] if with_state else no_state)
                    for k in range(j, last + 1):
                        row = out[e, j0 + k]
                        row[ROW_GROUP] = j0 + j
                        run_row = prior[e, j0 + k] if second_pass else row
                        if run_row[ROW_STATUS] == OK and k == j:
                            gamma_run = min(max(run_row[ROW_FWHM_PX], 0.5 * gamma0_px), 4.0 * gamma0_px)
                        if row[ROW_STATUS] != TOO_FEW_PIXELS and not final:
                            row[ROW_R_UM] = peak_r[j0 + k] + (row[ROW_R_UM] - cpx[k]) * px_um
                            row[ROW_SIGMA_UM] = row[ROW_SIGMA_UM] * px_um
                j = last + 1
                continue
            final = _fit_lone(x_all, is_sorted, perm, order, start, i_all, eta_all, cpx, j, gamma0_px,
                              half_window_px, min_pixels, weighted, out[e, j0 + j],
                              prior[e] if second_pass else no_prior, j0, centre, px_um,
                              state[e, j0 + j] if with_state else no_state)
            row = out[e, j0 + j]
            row[ROW_GROUP] = j0 + j
            run_row = prior[e, j0 + j] if second_pass else row
            if run_row[ROW_STATUS] == OK:
                gamma_run = min(max(run_row[ROW_FWHM_PX], 0.5 * gamma0_px), 4.0 * gamma0_px)
            if row[ROW_STATUS] != TOO_FEW_PIXELS and not final:
                row[ROW_R_UM] = peak_r[j0 + j] + row[ROW_R_UM] * px_um
                row[ROW_SIGMA_UM] = row[ROW_SIGMA_UM] * px_um
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
              weighted, row, prior_rows, j0, centre_um, px_um, state):
    """One ring in its own window with its neighbours as free nuisance peaks (see :func:`fit_all_bins`).

    ``prior_rows`` (pass 2: the η bin's pass-1 rows; pass 1: empty), ``j0`` (the cluster's first ring),
    ``centre_um`` (the cluster's centre, the origin of ``cpx``) and ``state`` as in :func:`fit_all_bins`.
    Returns True when ``row`` is final (pass 2 with no neighbour to subtract: pass 1's row, radius in µm),
    False when it holds a fit in px of the window (or no fit)."""
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
        row[ROW_N_PIXELS] = m
        return False
    n_near = 0
    main = 0
    for jj in range(n_peaks):
        if lo - 0.5 * gamma0_px <= cpx[jj] <= hi + 0.5 * gamma0_px:
            n_near += 1
    centres0 = np.empty(n_near)
    n_near = 0
    first_near = -1
    for jj in range(n_peaks):
        if lo - 0.5 * gamma0_px <= cpx[jj] <= hi + 0.5 * gamma0_px:
            if jj == j:
                main = n_near
            if first_near < 0:
                first_near = jj
            centres0[n_near] = cpx[jj] - c_main
            n_near += 1
    extra = np.empty(0)
    if prior_rows.shape[0] > 0:
        extra = np.empty(x.shape[0])
        if neighbour_profiles(x, centre_um + c_main * px_um, px_um, prior_rows, j0 + first_near,
                              j0 + first_near + n_near - 1, NEIGHBOUR_REACH_FWHM, EDGE_GAMMA_MAX * gamma0_px,
                              extra) == 0:
            # nothing to subtract: pass 2 would refit the same pixels
            row[:] = prior_rows[j0 + j]
            return True
    _fit_window(x, y, eta, centres0, main, gamma0_px, half_window_px, weighted, row, extra, state)
    return False


@njit(**SERIAL)
def _fit_crowded(x_all, is_sorted, perm, order, start, i_all, eta_all, cpx, first, last, gamma0_px, half_window_px,
                 min_pixels, weighted, rows, prior_rows, j0, centre_um, px_um, state):
    """Rings ``first … last`` (crowded) in one tied window; row k of ``rows`` gets ring ``first + k`` (px, raw).

    ``prior_rows``, ``j0``, ``centre_um``, ``px_um``, ``state`` and the return value as in :func:`_fit_lone`."""
    n_peaks = cpx.shape[0]
    # ±1.5 Γ about the run holds every ring's core; neighbours whose cores reach into it are modelled too
    h = min(half_window_px, max(1.5 * gamma0_px, 1.5))
    lo = cpx[first] - h
    hi = cpx[last] + h
    origin = 0.5 * (cpx[first] + cpx[last])
    x, y, eta, m = _gather(x_all, is_sorted, perm, order, start, i_all, eta_all, lo, hi, MAX_GROUP_PIXELS, origin)
    if m < min_pixels:
        for k in range(last - first + 1):
            rows[k, ROW_N_PIXELS] = m
        return False
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
    extra = np.empty(0)
    if prior_rows.shape[0] > 0:
        extra = np.empty(x.shape[0])
        if neighbour_profiles(x, centre_um + origin * px_um, px_um, prior_rows, j0 + a, j0 + b,
                              NEIGHBOUR_REACH_FWHM, EDGE_GAMMA_MAX * gamma0_px, extra) == 0:
            for k in range(last - first + 1):
                rows[k, :] = prior_rows[j0 + first + k]
            return True
    _fit_group(x, y, eta, centres, first - a, last - a, gamma0_px, weighted, rows, extra, state)
    for k in range(last - first + 1):
        if rows[k, ROW_STATUS] != TOO_FEW_PIXELS:
            rows[k, ROW_R_UM] += origin
    return False
