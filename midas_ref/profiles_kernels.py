"""Numba kernels for ring-peak extraction: pixel → (cluster, η-bin) assignment and per-bin peak fits.

Peaks are fitted to the *scatter* of pixel intensities against their own radius ``r`` (computed with the
current geometry, at the pixel centre), not to a resampled profile: nothing is interpolated, binned or
area-weighted, so masked pixels simply drop out and there is no box-shape bias (the legacy chord-box
bias, spec legacy_engine.md §2.7 Q3, cannot arise). Radii inside the fit are in pixels relative to the
cluster's window centre, which keeps the normal equations well conditioned.

Model of one bin (``m`` peaks of one ring cluster, shared width and shape):

    I(x) = b0 + b1·x + Σ_j A_j·[μ·L(x − c_j) + (1 − μ)·G(x − c_j)]
    L(u) = 1 / (1 + 4u²/Γ²),   G(u) = exp(−4 ln2 · u²/Γ²)

parameters ``[b0, b1, Γ, μ, A_1, c_1, …, A_m, c_m]``; fitted by Levenberg–Marquardt with bounds enforced
by projection.
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

_MAX_LM_ITER = 100


@njit(**PARALLEL)
def assign_pixels(image, mask, g, col_to_iy, row_to_iz, n_panels_z, table, cluster_lo, cluster_hi,
                  n_eta, out_bin, out_r, out_eta):
    """Per pixel: bin id ``cluster·n_eta + eta_bin`` (−1 if masked or outside every window), r (µm), η (rad).

    ``cluster_lo/hi`` (µm) are sorted, non-overlapping windows. η bins span (−π, π] in ``n_eta`` equal
    parts, bin 0 starting at −π.
    """
    rows, cols = image.shape
    n_clusters = cluster_lo.shape[0]
    deta = 2.0 * math.pi / n_eta
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
            eta = math.atan2(s, c)
            e = int((eta + math.pi) / deta)
            if e >= n_eta:
                e = n_eta - 1
            elif e < 0:
                e = 0
            out_bin[k] = cl * n_eta + e
            out_r[k] = r
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
def _model_and_jacobian(x, p, n_peaks, f, jac):
    """Model values ``f`` and Jacobian ``jac`` (n × len(p)) at abscissae ``x`` (px)."""
    gamma = p[2]
    mu = p[3]
    inv_g2 = 1.0 / (gamma * gamma)
    for i in range(x.shape[0]):
        xi = x[i]
        val = p[0] + p[1] * xi
        jac[i, 0] = 1.0
        jac[i, 1] = xi
        d_gamma = 0.0
        d_mu = 0.0
        for j in range(n_peaks):
            amp = p[4 + 2 * j]
            u = xi - p[5 + 2 * j]
            q = u * u * inv_g2
            lor = 1.0 / (1.0 + 4.0 * q)
            gau = math.exp(-FOUR_LN2 * q)
            shape = mu * lor + (1.0 - mu) * gau
            val += amp * shape
            # d/du of the shape; d/dc = −d/du
            dlor_du = -8.0 * u * inv_g2 * lor * lor
            dgau_du = -2.0 * FOUR_LN2 * u * inv_g2 * gau
            dshape_du = mu * dlor_du + (1.0 - mu) * dgau_du
            jac[i, 4 + 2 * j] = shape
            jac[i, 5 + 2 * j] = -amp * dshape_du
            # d/dΓ: q ∝ Γ⁻², so dq/dΓ = −2q/Γ
            dq = -2.0 * q / gamma
            d_gamma += amp * (mu * (-4.0 * lor * lor) * dq + (1.0 - mu) * (-FOUR_LN2 * gau) * dq)
            d_mu += amp * (lor - gau)
        jac[i, 2] = d_gamma
        jac[i, 3] = d_mu
        f[i] = val


@njit(**SERIAL)
def _project(p, lower, upper):
    for k in range(p.shape[0]):
        if p[k] < lower[k]:
            p[k] = lower[k]
        elif p[k] > upper[k]:
            p[k] = upper[k]


@njit(**SERIAL)
def _weighted_model(x, p, n_peaks, sqrt_w, f, jac):
    _model_and_jacobian(x, p, n_peaks, f, jac)
    for i in range(x.shape[0]):
        f[i] *= sqrt_w[i]
        for k in range(p.shape[0]):
            jac[i, k] *= sqrt_w[i]


@njit(**SERIAL)
def fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w):
    """Bounded Levenberg–Marquardt fit of the multi-peak model; ``p`` is updated in place.

    Minimises ``Σ w_i (y_i − f_i)²`` with ``sqrt_w = √w``. Returns ``(converged, chi2, covariance)`` with the
    covariance scaled by the reduced χ² (so a detector gain or an overall noise scale does not matter).
    """
    n = x.shape[0]
    n_par = p.shape[0]
    f = np.empty(n)
    jac = np.empty((n, n_par))
    yw = y * sqrt_w
    _weighted_model(x, p, n_peaks, sqrt_w, f, jac)
    resid = yw - f
    cost = np.dot(resid, resid)
    lam = 1e-3
    converged = False
    trial = np.empty(n_par)
    for _ in range(_MAX_LM_ITER):
        jtj = jac.T @ jac
        jtr = jac.T @ resid
        improved = False
        for _inner in range(12):
            a = jtj.copy()
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
            f_trial = np.empty(n)
            jac_trial = np.empty((n, n_par))
            _weighted_model(x, trial, n_peaks, sqrt_w, f_trial, jac_trial)
            r_trial = yw - f_trial
            c_trial = np.dot(r_trial, r_trial)
            if c_trial <= cost:
                rel = (cost - c_trial) / max(cost, 1e-300)
                small_step = True
                for k in range(n_par):
                    if abs(trial[k] - p[k]) > 1e-9 * (abs(p[k]) + 1e-6):
                        small_step = False
                p[:] = trial
                f[:] = f_trial
                jac[:, :] = jac_trial
                resid = r_trial
                cost = c_trial
                lam = max(lam / 3.0, 1e-12)
                improved = True
                if rel < 1e-10 or small_step:
                    converged = True
                break
            lam *= 4.0
        if converged or not improved:
            converged = converged or (not improved and lam > 1e6)
            break
    dof = max(n - n_par, 1)
    sigma2 = cost / dof
    jtj = jac.T @ jac
    cov = np.full((n_par, n_par), np.nan)
    try:
        cov = np.linalg.inv(jtj) * sigma2
    except Exception:  # noqa: BLE001
        pass
    return converged, cost, cov


@njit(**PARALLEL)
def fit_all_bins(offsets, order, r_all, i_all, eta_all, n_eta, cluster_center, peak_start, peak_r,
                 px_um, gamma0_px, half_window_px, min_pixels, out):
    """Fit every (cluster, η-bin); results go to ``out[e, j, :]`` for peak j of the bin's cluster.

    ``out`` columns: 0 r_fit (µm), 1 σ_r (µm), 2 amplitude, 3 FWHM (px), 4 μ, 5 background at peak,
    6 SNR (amplitude / residual rms), 7 η mean (rad, weighted by the fitted peak), 8 n pixels, 9 status.
    """
    n_bins = offsets.shape[0] - 1
    for b in prange(n_bins):
        cl = b // n_eta
        e = b - cl * n_eta
        j0 = peak_start[cl]
        n_peaks = peak_start[cl + 1] - j0
        for j in range(n_peaks):
            out[e, j0 + j, 9] = TOO_FEW_PIXELS
            out[e, j0 + j, 8] = 0.0
        start = offsets[b]
        stop = offsets[b + 1]
        n = stop - start
        if n < max(min_pixels, 4 + 2 * n_peaks + 4):
            continue
        x = np.empty(n)
        y = np.empty(n)
        eta = np.empty(n)
        centre = cluster_center[cl]
        for k in range(n):
            idx = order[start + k]
            x[k] = (r_all[idx] - centre) / px_um
            y[k] = i_all[idx]
            eta[k] = eta_all[idx]
        n_par = 4 + 2 * n_peaks
        p = np.empty(n_par)
        lower = np.empty(n_par)
        upper = np.empty(n_par)
        x_lo = x.min()
        x_hi = x.max()
        # background start: median of the pixels farther than 1.5 Γ from every expected peak
        far = np.ones(n, dtype=np.bool_)
        for j in range(n_peaks):
            c0 = (peak_r[j0 + j] - centre) / px_um
            for k in range(n):
                if abs(x[k] - c0) < 1.5 * gamma0_px:
                    far[k] = False
        if far.sum() >= 3:
            bg0 = np.median(y[far])
        else:
            bg0 = np.min(y)
        y_span = max(np.max(y) - bg0, 1e-12)
        p[0] = bg0
        p[1] = 0.0
        p[2] = gamma0_px
        p[3] = 0.5
        lower[0] = -np.inf
        upper[0] = np.inf
        lower[1] = -np.inf
        upper[1] = np.inf
        lower[2] = 0.25
        upper[2] = max(4.0 * gamma0_px, 2.0)
        lower[3] = 0.0
        upper[3] = 1.0
        for j in range(n_peaks):
            c0 = (peak_r[j0 + j] - centre) / px_um
            # start at the brightest pixel within ±half a window of the expectation
            best = -np.inf
            c_best = c0
            for k in range(n):
                if abs(x[k] - c0) <= 0.5 * half_window_px and y[k] > best:
                    best = y[k]
                    c_best = x[k]
            p[4 + 2 * j] = max(best - bg0, 0.05 * y_span)
            p[5 + 2 * j] = c_best
            lower[4 + 2 * j] = 0.0
            upper[4 + 2 * j] = 10.0 * y_span + 1.0
            lower[5 + 2 * j] = c0 - half_window_px
            upper[5 + 2 * j] = c0 + half_window_px
        # pass 1 unweighted; pass 2 with Poisson-like weights 1/max(model, floor) from pass 1, which makes
        # the fit efficient and its covariance honest where the peak is much brighter than the background
        sqrt_w = np.ones(n)
        converged, cost, cov = fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w)
        rms = math.sqrt(cost / max(n - n_par, 1))
        model = np.empty(n)
        scratch = np.empty((n, n_par))
        _model_and_jacobian(x, p, n_peaks, model, scratch)
        floor = max(0.05 * np.max(model), 1e-12)
        for k in range(n):
            sqrt_w[k] = 1.0 / math.sqrt(max(model[k], floor))
        converged, cost, cov = fit_peaks(x, y, p, lower, upper, n_peaks, sqrt_w)
        for j in range(n_peaks):
            jj = j0 + j
            amp = p[4 + 2 * j]
            c = p[5 + 2 * j]
            status = OK
            if not converged:
                status = NOT_CONVERGED
            if c - lower[5 + 2 * j] < 1e-6 or upper[5 + 2 * j] - c < 1e-6 or p[2] >= upper[2] - 1e-9:
                status = AT_BOUND
            if c - 1.5 * p[2] < x_lo or c + 1.5 * p[2] > x_hi:
                status = EDGE
            # weighted mean η of the pixels under this peak
            sw = 0.0
            sc = 0.0
            ss = 0.0
            n_under = 0
            inv_g2 = 1.0 / (p[2] * p[2])
            for k in range(n):
                u = x[k] - c
                q = u * u * inv_g2
                if q < 1.0:
                    w = p[3] / (1.0 + 4.0 * q) + (1.0 - p[3]) * math.exp(-FOUR_LN2 * q)
                    sw += w
                    sc += w * math.cos(eta[k])
                    ss += w * math.sin(eta[k])
                    n_under += 1
            if n_under < 3:
                status = TOO_FEW_PIXELS
            var_c = cov[5 + 2 * j, 5 + 2 * j]
            if not (var_c >= 0.0):
                status = SINGULAR
                var_c = np.nan
            snr = amp / rms if rms > 0 else np.inf
            out[e, jj, 0] = centre + c * px_um
            out[e, jj, 1] = math.sqrt(var_c) * px_um
            out[e, jj, 2] = amp
            out[e, jj, 3] = p[2]
            out[e, jj, 4] = p[3]
            out[e, jj, 5] = p[0] + p[1] * c
            out[e, jj, 6] = snr
            out[e, jj, 7] = math.atan2(ss, sc) if sw > 0 else np.nan
            out[e, jj, 8] = n
            out[e, jj, 9] = status
