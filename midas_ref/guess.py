"""Initial guesses: beam centre from ring arcs, centre refinement, ring radii, Lsd from the ring table.

All functions return result objects that say whether they succeeded and why not (style.md §3); they raise
only for bad input. The fine refinement (:mod:`midas_ref.refine`) needs the centre within a few pixels and
Lsd within a fraction of a percent; these steps get there from far worse starts:

* :func:`beam_center_from_arcs` — label thresholded ring pixels, fit a circle to each large region
  (algebraic Kåsa fit, then a robust median of the centres), no guess needed.
* :func:`center_by_sharpness` — the centre about which the bright (ring) pixels' radii are most
  concentrated: a coarse-to-fine grid search of the histogram's inverse participation ratio, robust to
  any start within its search box (no correlation aliasing between neighbouring rings).
* :func:`ring_peaks` + :func:`match_lsd` — peaks of the azimuthally averaged profile (significance against
  the profile's own local noise) matched to the ring table by a hypothesis search over (detected peak,
  ring) pairs, each hypothesis scored by a log-likelihood ratio against chance coincidence
  (:func:`score_lsd`), so dense ring tables and near-aliases cannot win by coincidences.
"""

from __future__ import annotations

import math

import numpy as np

from .detector import Geometry
from .errors import CalibrationError
from .geometry import r_eta_maps

__all__ = ["beam_center_from_arcs", "center_of_round_regions", "center_by_sharpness", "azimuthal_profiles",
           "ring_peaks", "score_lsd", "rank_lsd", "match_lsd"]


# ---- beam centre from arcs ------------------------------------------------------------------------------

def _kasa_circle(rows, cols):
    """Algebraic circle fit; returns (centre_row, centre_col, radius, rms residual) or None."""
    x = cols.astype(np.float64)
    y = rows.astype(np.float64)
    xm, ym = x.mean(), y.mean()
    u, v = x - xm, y - ym
    a = np.array([[np.dot(u, u), np.dot(u, v)], [np.dot(u, v), np.dot(v, v)]])
    b = 0.5 * np.array([np.dot(u, u * u) + np.dot(u, v * v), np.dot(v, v * v) + np.dot(v, u * u)])
    try:
        uc, vc = np.linalg.solve(a, b)
    except np.linalg.LinAlgError:
        return None
    radius = math.sqrt(uc * uc + vc * vc + (np.dot(u, u) + np.dot(v, v)) / x.size)
    rms = float(np.sqrt(np.mean((np.hypot(x - xm - uc, y - ym - vc) - radius) ** 2)))
    return vc + ym, uc + xm, radius, rms


def beam_center_from_arcs(binary: np.ndarray, *, min_area: int = 300, max_rms_px: float = 3.0,
                          min_arc_deg: float = 20.0) -> tuple[float, float, int] | None:
    """Beam centre (y, z) px from the connected regions of a thresholded ring image.

    Each region with at least ``min_area`` pixels (8-connectivity) gets a circle fit; regions that are not
    arcs (rms distance from the circle > ``max_rms_px``) or span less than ``min_arc_deg`` of azimuth are
    dropped; the centre is the median of the remaining centres, weighted towards long arcs by repeating
    nothing — a plain per-coordinate median, which is robust to a minority of bad regions.

    Returns
    -------
    (bc_y_px, bc_z_px, n_arcs) or None when no region qualifies.
    """
    centres = [(yc, zc) for yc, zc, radius, rms, span in _region_circles(binary, min_area)
               if rms <= max_rms_px and radius > 5.0 and span() >= min_arc_deg]
    if not centres:
        return None
    c = np.asarray(centres)
    return float(np.median(c[:, 0])), float(np.median(c[:, 1])), len(centres)


def center_of_round_regions(binary: np.ndarray, *, min_area: int = 300,
                            min_arc_deg: float = 20.0) -> tuple[float, float, int, float] | None:
    """Centre (y, z) px of the thresholded regions that go round a centre, however wide they are.

    A diagnostic for when :func:`beam_center_from_arcs` finds no thin arc: a ring thresholded far into its
    tails, or neighbouring rings merged into one band, is a region whose circle fit has a large rms (about
    its width / √12). Regions of at least ``min_area`` pixels spanning at least ``min_arc_deg`` of azimuth
    about their circle's centre count.

    Returns
    -------
    (bc_y_px, bc_z_px, n_regions, rms_px) or None when no region qualifies
        Median centre, number of regions, and the median rms distance of their pixels from their circles.
    """
    fits = [(yc, zc, rms) for yc, zc, radius, rms, span in _region_circles(binary, min_area)
            if radius > 5.0 and span() >= min_arc_deg]
    if not fits:
        return None
    c = np.asarray(fits)
    return float(np.median(c[:, 0])), float(np.median(c[:, 1])), len(fits), float(np.median(c[:, 2]))


def _region_circles(binary, min_area):
    """(y_c, z_c, radius, rms, span) of the circle fit of every 8-connected region of ``min_area`` pixels or
    more; ``span()`` computes the region's azimuthal extent about the centre, degrees, when called."""
    from skimage.measure import label, regionprops

    for region in regionprops(label(binary, connectivity=2)):
        if region.area < min_area:
            continue
        coords = region.coords
        fit = _kasa_circle(coords[:, 0], coords[:, 1])
        if fit is None:
            continue
        zc, yc, radius, rms = fit
        yield yc, zc, radius, rms, (lambda coords=coords, yc=yc, zc=zc: _angular_span_deg(
            np.arctan2(coords[:, 1] - yc, coords[:, 0] - zc)))


def _angular_span_deg(angles):
    """Angular extent of a set of angles (rad), accounting for wrap-around."""
    a = np.sort(np.mod(angles, 2 * np.pi))
    gaps = np.diff(np.concatenate([a, a[:1] + 2 * np.pi]))
    return math.degrees(2 * np.pi - gaps.max())


# ---- centre by sharpness of the radius histogram ---------------------------------------------------------

def _sharpness(y, z, w, cy, cz, bin_px):
    r = np.hypot(y - cy, z - cz)
    h = np.bincount((r / bin_px).astype(np.int64), weights=w)
    return float(np.dot(h, h))


def center_by_sharpness(binary, weights, start_yz, *, search_px: float = 40.0, max_pixels: int = 20000,
                        seed: int = 0) -> tuple[float, float]:
    """Centre (y, z) px that makes the weighted radius histogram of the ring pixels sharpest.

    Parameters
    ----------
    binary : ndarray of bool
        Ring pixels (e.g. from :func:`midas_ref.preprocess.threshold_image`).
    weights : ndarray
        Pixel weights (background-subtracted intensity).
    start_yz : (float, float)
        Centre of the search box.
    search_px : float
        Half-width of the search box, pixels.
    max_pixels : int
        At most this many ring pixels are used (a seeded random subset), which bounds the cost.
    seed : int
        Seed of that subset.

    Notes
    -----
    Σ h² over the histogram (bins of 2, 1, ½ px in three passes with grids of steps 4, 1, ¼ px) is
    largest when all pixels of a ring fall in one bin, i.e. at the ring centre. Tilted detectors have
    elliptical rings whose centres move away from the beam with 2θ; pixels are weighted by 1/r² so the
    inner rings decide, which keeps the start within ~1 px of the beam — all the next steps need.
    """
    z, y = np.nonzero(binary)
    if y.size == 0:
        raise CalibrationError("no ring pixel above the threshold: cannot locate the beam centre")
    cy, cz = map(float, start_yz)
    # Inner rings are the least displaced by a detector tilt (an ellipse's centre moves ∝ tan²2θ) and
    # outer rings hold more pixels: weighting by 1/r² (r from the start, +50 px against the singularity)
    # lets the inner rings decide.
    w = np.asarray(weights, dtype=np.float64)[z, y] / (np.hypot(y - cy, z - cz) + 50.0) ** 2
    if y.size > max_pixels:
        pick = np.random.default_rng(seed).choice(y.size, max_pixels, replace=False)
        y, z, w = y[pick], z[pick], w[pick]
    y = y.astype(np.float64)
    z = z.astype(np.float64)
    for half, step, bin_px in ((search_px, 4.0, 2.0), (5.0, 1.0, 1.0), (1.5, 0.25, 0.5)):
        offsets = np.arange(-half, half + 1e-9, step)
        best = (-1.0, cy, cz)
        for dy in offsets:
            for dz in offsets:
                score = _sharpness(y, z, w, cy + dy, cz + dz, bin_px)
                if score > best[0]:
                    best = (score, cy + dy, cz + dz)
        _, cy, cz = best
    return cy, cz


# ---- η-resolved profiles and centre refinement ---------------------------------------------------------

def azimuthal_profiles(image, mask, geometry: Geometry, *, n_eta: int = 36, bin_px: float = 0.5,
                       r_max_um: float | None = None, with_sem: bool = False, maps=None):
    """Mean intensity per (η bin, radius bin) about the current geometry.

    Returns
    -------
    r_px : ndarray of shape (n_r,)
        Radius bin centres in pixels (``r_um/px``).
    eta_deg : ndarray of shape (n_eta,)
        η bin centres.
    profiles : ndarray of shape (n_eta, n_r)
        Mean intensity (NaN where a bin has no pixel).
    sem : ndarray of shape (n_eta, n_r)
        Only with ``with_sem``: standard error of each mean from the scatter of its pixels (NaN with fewer
        than two pixels) — the profile's own noise, whatever the detector gain.

    ``maps``, optional: ``(r_um, eta_deg)`` of :func:`~midas_ref.geometry.r_eta_maps` for ``geometry``, when
    the caller already has them.
    """
    r_um, eta_deg = r_eta_maps(geometry) if maps is None else maps
    r_px = r_um / geometry.px_um
    valid = np.isfinite(image) & np.isfinite(r_px)
    if mask is not None:
        valid &= ~mask
    if r_max_um is not None:
        valid &= r_um <= r_max_um
    if not valid.any():
        raise CalibrationError("no unmasked pixel left to build radial profiles")
    n_r = int(math.ceil(r_px[valid].max() / bin_px)) + 1
    rb = np.minimum((r_px[valid] / bin_px).astype(np.int64), n_r - 1)
    eb = np.minimum(((eta_deg[valid] + 180.0) / (360.0 / n_eta)).astype(np.int64), n_eta - 1)
    idx = eb * n_r + rb
    values = image[valid].astype(np.float64)
    sums = np.bincount(idx, weights=values, minlength=n_eta * n_r)
    counts = np.bincount(idx, minlength=n_eta * n_r)
    with np.errstate(invalid="ignore", divide="ignore"):
        prof = (sums / counts).reshape(n_eta, n_r)
    r_c = (np.arange(n_r) + 0.5) * bin_px
    eta_c = (np.arange(n_eta) + 0.5) * (360.0 / n_eta) - 180.0
    if not with_sem:
        return r_c, eta_c, prof
    # second moment about the bin mean (not Σv²/n − mean², which cancels catastrophically on bright rings)
    dev = values - prof.ravel()[idx]
    ss = np.bincount(idx, weights=dev * dev, minlength=n_eta * n_r)
    with np.errstate(invalid="ignore", divide="ignore"):
        sem = np.sqrt(ss / (counts - 1.0) / counts)
    sem[counts < 2] = np.nan
    return r_c, eta_c, prof, sem.reshape(n_eta, n_r)


def _highpass(profile, width_bins):
    """Profile minus a running median (removes background, keeps ring peaks); NaN-aware."""
    from scipy.ndimage import median_filter

    filled = np.where(np.isfinite(profile), profile, np.nanmedian(profile) if np.isfinite(profile).any() else 0)
    return filled - median_filter(filled, size=width_bins, mode="nearest")


# ---- ring radii and Lsd -----------------------------------------------------------------------------------

def ring_peaks(image, mask, geometry: Geometry, *, min_prominence_sigma: float = 8.0, bin_px: float = 0.5,
               noise_window_px: float = 40.0, min_width_px: float = 1.0, maps=None):
    """Radii (µm) and significances of the peaks of the azimuthally averaged profile about the current geometry.

    A peak counts when its prominence exceeds ``min_prominence_sigma`` times the profile's local noise: the
    running median (over ``noise_window_px``) of the standard error of each radial bin's mean. A single
    global noise level (e.g. a MAD of the profile) fails on dense patterns, where almost every bin is a
    ring and the "noise" becomes the ring contrast itself, hiding the weak, sparse inner rings that carry
    the distance. Peaks narrower than ``min_width_px`` (FWHM) are dropped: a ring averaged over the
    azimuth is never narrower than about a pixel, noise spikes are. Radii are refined below the bin size
    by a parabola through the three bins about the maximum.

    Returns
    -------
    r_um : ndarray, ascending
    significance : ndarray
        Prominence / local noise of each peak.
    fwhm_px : float
        A start for the fine peak fits: the lower quartile of the peak widths (blends of unresolved
        neighbours and the smearing of a not yet exact centre only ever widen a peak), NaN if none.
    """
    from scipy.ndimage import median_filter
    from scipy.signal import find_peaks

    r_px, _, prof, sem = azimuthal_profiles(image, mask, geometry, n_eta=1, bin_px=bin_px, with_sem=True, maps=maps)
    p = prof[0]
    hp = _highpass(p, int(40 / bin_px) | 1)
    hp = np.where(np.isfinite(p), hp, 0.0)
    s = sem[0]
    fallback = np.nanmedian(s) if np.isfinite(s).any() else 1.0
    s = np.where(np.isfinite(s) & (s > 0), s, fallback if fallback > 0 else 1.0)
    noise = median_filter(s, size=int(noise_window_px / bin_px) | 1, mode="nearest")
    peaks, props = find_peaks(hp, prominence=0.0, distance=max(1, int(1.5 / bin_px)), width=min_width_px / bin_px)
    # the bin's own error too: near the centre a bin holds a handful of pixels, noisier than the running median
    significance = props["prominences"] / np.maximum(noise[peaks], s[peaks])
    keep = significance >= min_prominence_sigma
    peaks, significance = peaks[keep], significance[keep]
    if peaks.size == 0:
        return np.empty(0), np.empty(0), math.nan
    # sub-bin position: vertex of the parabola through the maximum bin and its two neighbours
    left = hp[np.maximum(peaks - 1, 0)]
    mid = hp[peaks]
    right = hp[np.minimum(peaks + 1, hp.size - 1)]
    curv = left - 2 * mid + right
    with np.errstate(invalid="ignore", divide="ignore"):
        shift = np.where(curv < 0, 0.5 * (left - right) / curv, 0.0)
    r = (r_px[peaks] + np.clip(shift, -0.5, 0.5) * bin_px) * geometry.px_um
    return r, significance, float(np.percentile(props["widths"][keep], 25)) * bin_px


def _match(r, pred, tol):
    """Nearest predicted ring of every detected radius; (index, matched within ``tol``)."""
    k = np.clip(np.searchsorted(pred, r), 1, pred.size - 1)
    near = np.where(np.abs(pred[k - 1] - r) < np.abs(pred[k] - r), k - 1, k)
    return near, np.abs(pred[near] - r) < tol


def score_lsd(lsd_um, peak_r_um, ring_tan_two_theta, *, rel_tol: float = 0.004, abs_tol_um: float = 0.0):
    """Evidence that peaks at ``peak_r_um`` are the rings ``lsd·tan 2θ`` of the table (larger is better).

    Each detected peak i is either explained (a predicted ring within ``δ_i = max(rel_tol·r_i, abs_tol_um)``)
    or not. How much that says depends on how crowded the predicted rings are there: a random radius
    falls within δ_i of some ring with probability ``p_i = min(1, 2δ_i/s_i)``, ``s_i`` the local ring
    spacing. The score is ``Σ ±log(1/p_i)`` (+ explained, − unexplained), a log-likelihood ratio against
    chance. So peaks where the predicted rings are dense count for nothing either way — a too short
    distance (whose dense comb explains everything) or the near-aliases of a primitive cubic pattern
    (ring ratios repeat under √2, √3 … scalings) gain nothing from coincidences — while every sparse,
    well-resolved peak that a hypothesis fails to explain counts fully against it.

    Returns
    -------
    (score, matched, ring_index)
        ``matched`` (bool per peak) and ``ring_index`` (nearest predicted ring per peak).
    """
    score, ok, near, _ = _score(lsd_um, peak_r_um, ring_tan_two_theta, rel_tol, abs_tol_um)
    return score, ok, near


def _score(lsd_um, peak_r_um, ring_tan_two_theta, rel_tol, abs_tol_um):
    """:func:`score_lsd` plus the evidence ``log(1/p_i)`` of each peak."""
    r = np.asarray(peak_r_um, dtype=np.float64)
    pred = lsd_um * np.asarray(ring_tan_two_theta, dtype=np.float64)
    tol = np.maximum(rel_tol * r, abs_tol_um)
    near, ok = _match(r, pred, tol)
    # local spacing: mean gap of the nearest predicted ring to its two neighbours (one-sided at the ends)
    gaps = np.diff(pred)
    left = np.concatenate([[np.inf], gaps])[near]
    right = np.concatenate([gaps, [np.inf]])[near]
    spacing = np.where(np.isfinite(left) & np.isfinite(right), 0.5 * (left + right), np.minimum(left, right))
    p = np.minimum(1.0, 2.0 * tol / np.maximum(spacing, 1e-300))
    info = -np.log(np.maximum(p, 1e-12))
    return float(np.sum(np.where(ok, info, -info))), ok, near, info


def rank_lsd(peak_r_um, ring_tan_two_theta, lsd_guess_um: float, *, lsd_range=(0.5, 2.0), rel_tol: float = 0.004,
             abs_tol_um: float = 0.0, first_ring: int = 1, max_peaks: int = 12, n_best: int = 5):
    """Distance hypotheses ranked by :func:`score_lsd`, best first.

    Every pair (one of the innermost ``max_peaks`` detected peaks, ring j ≥ ``first_ring``) proposes
    ``Lsd = r_i / tan 2θ_j`` (within ``lsd_range`` × guess); each is refined by least squares over the pairs
    it explains unambiguously (twice, so an anchor's own position error does not decide), then scored. Hypotheses that
    refine to the same distance (within ``rel_tol``) are merged.

    Returns
    -------
    list of (lsd_um, score, n_matched), at most ``n_best`` entries with at least two matched peaks.
    """
    r = np.sort(np.asarray(peak_r_um, dtype=np.float64))
    t = np.sort(np.asarray(ring_tan_two_theta, dtype=np.float64))
    t = t[t > 0][max(first_ring, 1) - 1:]
    if r.size < 2 or t.size < 2:
        return []
    found = []
    for ri in r[:max_peaks]:
        for tj in t:
            lsd = ri / tj
            if not lsd_range[0] * lsd_guess_um <= lsd <= lsd_range[1] * lsd_guess_um:
                continue
            for _ in range(2):
                _, ok, near, info = _score(lsd, r, t, rel_tol, abs_tol_um)
                # only unambiguous pairs (less than an even chance of a coincidence) set the scale: in a
                # crowded stretch the nearest ring is as likely a neighbour of the right one
                use = ok & (info > math.log(2.0))
                if use.sum() < 2:
                    break
                tt = t[near[use]]
                lsd = float(np.dot(r[use], tt) / np.dot(tt, tt))
            score, ok, _, _ = _score(lsd, r, t, rel_tol, abs_tol_um)
            if ok.sum() >= 2:
                found.append((lsd, score, int(ok.sum())))
    found.sort(key=lambda h: (-h[1], -h[2]))
    ranked = []
    for h in found:
        if all(abs(h[0] / g[0] - 1) > rel_tol for g in ranked):
            ranked.append(h)
        if len(ranked) == n_best:
            break
    return ranked


def match_lsd(peak_r_um, ring_tan_two_theta, lsd_guess_um: float, *, weights=None, lsd_range=(0.5, 2.0),
              rel_tol: float = 0.004, abs_tol_um: float = 0.0, first_ring: int = 1,
              max_peaks: int = 12) -> tuple[float, int] | None:
    """Distance that maps the detected peaks onto rings of the table: the best of :func:`rank_lsd`.

    ``weights`` is accepted for backward compatibility and ignored: how much a peak says about the distance
    depends on how crowded the predicted rings are at its radius (:func:`score_lsd`), not on its height.

    Returns
    -------
    (lsd_um, n_matched) or None when no hypothesis matches at least two peaks.
    """
    del weights
    ranked = rank_lsd(peak_r_um, ring_tan_two_theta, lsd_guess_um, lsd_range=lsd_range, rel_tol=rel_tol,
                      abs_tol_um=abs_tol_um, first_ring=first_ring, max_peaks=max_peaks, n_best=1)
    if not ranked:
        return None
    return ranked[0][0], ranked[0][2]
