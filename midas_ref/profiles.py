"""Ring-peak extraction: one fitted radius per (ring, η-bin), as detector points for the geometry fit.

For each η bin of ``eta_bin_deg`` and each ring window, the pixels whose radius (under the current
geometry) falls in the window are fitted with a pseudo-Voigt per ring on a quadratic background
(``profiles_kernels``). Rings whose windows overlap are fitted together (shared width and shape), so a
neighbour's tail never biases a peak. Rings closer to a neighbour than ~2 FWHM (dense patterns: LaB6 at
short distance) are fitted in short runs with their relative positions fixed by the current geometry and
one common shift, which is fast and well conditioned where free centres would trade off against each other. Each accepted peak becomes a point: its fitted radius at the
peak-weighted η of its pixels, mapped back to a detector position with the same geometry — a point on the
real ring, whatever errors the geometry still has.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numba
import numpy as np

from . import profiles_kernels as _k
from .detector import Geometry
from .errors import CalibrationError
from .geometry import kernel_vector, r_eta_to_pixel
from .panels import Panels, kernel_tables
from .profiles_kernels import (ROW_AMPLITUDE, ROW_BACKGROUND, ROW_ETA_RAD, ROW_FWHM_PX, ROW_MU, ROW_N_PIXELS,
                               ROW_GROUP, ROW_R_UM, ROW_SIGMA_UM, ROW_SNR, ROW_STATUS, ROW_WIDTH)

__all__ = ["PeakPoints", "ring_clusters", "extract_peaks", "STATUS_NAMES"]

STATUS_NAMES = {_k.OK: "ok", _k.TOO_FEW_PIXELS: "too few pixels", _k.NOT_CONVERGED: "not converged",
                _k.AT_BOUND: "at bound", _k.WEAK: "weak", _k.EDGE: "window edge", _k.SINGULAR: "singular"}


@dataclass(frozen=True)
class PeakPoints:
    """Fitted ring peaks, one entry per accepted (ring, η-bin).

    Attributes
    ----------
    ring : ndarray of int
        Index into the ring list given to :func:`extract_peaks`.
    r_um, sigma_r_um : ndarray
        Fitted radius (``Lsd·tan 2θ`` under the extraction geometry) and its standard error, µm.
    eta_deg : ndarray
        Peak-weighted azimuth of the pixels under the peak, degrees.
    y_px, z_px : ndarray
        Detector position of (r, η) under the extraction geometry (raw pixel coordinates).
    amplitude, fwhm_px, mu, background, snr : ndarray
        Peak height, width (px), Lorentzian fraction, background under the peak, height / residual rms.
    n_pixels : ndarray of int
        Pixels in the fitted bin.
    group : ndarray of int
        Points with the same value come from one fit (a crowded run: one common shift in one η bin), so
        their radial errors are one error, not independent ones; a lone ring's point has a value of its own.
    """

    ring: np.ndarray
    r_um: np.ndarray
    sigma_r_um: np.ndarray
    eta_deg: np.ndarray
    y_px: np.ndarray
    z_px: np.ndarray
    amplitude: np.ndarray
    fwhm_px: np.ndarray
    mu: np.ndarray
    background: np.ndarray
    snr: np.ndarray
    n_pixels: np.ndarray
    group: np.ndarray

    def __len__(self) -> int:
        return int(self.ring.shape[0])

    def select(self, keep) -> "PeakPoints":
        """The subset of points where boolean array ``keep`` is True."""
        return PeakPoints(**{f.name: getattr(self, f.name)[keep] for f in fields(self)})


def ring_clusters(ring_r_um, half_window_um: float):
    """Group rings whose ±``half_window_um`` windows overlap.

    Parameters
    ----------
    ring_r_um : array_like, sorted ascending
        Expected ring radii, µm.
    half_window_um : float

    Returns
    -------
    lo, hi, centre : ndarray of shape (n_clusters,)
        Window edges and centres, µm.
    peak_start : ndarray of shape (n_clusters + 1,), int
        Rings ``peak_start[c] … peak_start[c+1]−1`` belong to cluster c.
    """
    r = np.asarray(ring_r_um, dtype=np.float64)
    if r.ndim != 1 or r.size == 0 or np.any(np.diff(r) < 0):
        raise ValueError("ring radii must be a non-empty ascending 1-D array")
    starts = [0]
    for k in range(1, r.size):
        if r[k] - half_window_um <= r[k - 1] + half_window_um:
            continue
        starts.append(k)
    starts.append(r.size)
    peak_start = np.asarray(starts, dtype=np.int64)
    lo = r[peak_start[:-1]] - half_window_um
    hi = r[peak_start[1:] - 1] + half_window_um
    return lo, hi, 0.5 * (lo + hi), peak_start


def extract_peaks(image: np.ndarray, mask: np.ndarray | None, geometry: Geometry, ring_r_um, *,
                  panels: Panels | None = None, eta_bin_deg: float = 5.0, half_window_px: float = 8.0,
                  fwhm_px: float = 2.5, min_pixels: int = 12, min_snr: float = 5.0,
                  max_sigma_px: float = 0.5, precise: bool = True,
                  tie_fwhm: float = _k.TIE_SEPARATION_FWHM, skip_crowded: bool = False,
                  subtract_neighbours: bool = True) -> PeakPoints:
    """Fit ring peaks in every η bin of every ring window.

    Parameters
    ----------
    image : ndarray of shape geometry.shape
        Background may be left in (a linear background is fitted per bin).
    mask : ndarray of bool or None
        True = pixel ignored.
    geometry : Geometry
        Current geometry; windows are placed at ``ring_r_um`` in its frame.
    ring_r_um : array_like
        Expected radii ``Lsd·tan 2θ_k`` (µm), ascending.
    panels : Panels, optional
    eta_bin_deg : float
        Azimuthal bin width, degrees; 360 is divided into ``round(360/eta_bin_deg)`` equal bins.
    half_window_px : float
        Half-width of each ring's radial window, pixels.
    fwhm_px : float
        Starting peak FWHM, pixels.
    min_pixels : int
        Fewer pixels in a bin → no fit.
    min_snr : float
        Peaks whose height is below ``min_snr`` × residual rms are dropped.
    max_sigma_px : float
        Peaks whose radius standard error exceeds this are dropped.
    precise : bool
        Add the Poisson-weighted second fit pass (about half the cost; coarse iterations may skip it).
    tie_fwhm : float
        Rings with a neighbour closer than ``tie_fwhm × fwhm_px`` are *crowded*: they are fitted in short
        runs whose centres keep the spacing of the current geometry and move together (one shift per run),
        which stays well determined however much their profiles overlap; ≤ 0 fits every ring freely.
    skip_crowded : bool
        Return no point for crowded rings (they are still modelled beside their lone neighbours): while the
        geometry is off by more than half their spacing, a run would lock onto the wrong rings.
    subtract_neighbours : bool
        With ``precise``: refit every window after subtracting the first pass's profiles of the rings it
        does not model (their Lorentzian tails otherwise bias its centre; :func:`_fit_bins`).

    Returns
    -------
    PeakPoints
        Accepted peaks only (status ok, SNR and σ cuts passed).
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape != geometry.shape:
        raise CalibrationError(f"image shape {image.shape} does not match the geometry's "
                               f"(NrPixelsZ, NrPixelsY) = {geometry.shape}")
    if mask is None:
        mask = np.zeros(image.shape, dtype=bool)
    elif mask.shape != image.shape:
        raise CalibrationError(f"mask shape {mask.shape} does not match image shape {image.shape}")
    if not eta_bin_deg > 0 or eta_bin_deg > 360:
        raise CalibrationError(f"EtaBinSize must be in (0, 360] degrees, got {eta_bin_deg}")
    ring_r = np.asarray(ring_r_um, dtype=np.float64)
    order = np.argsort(ring_r)
    px = geometry.px_um
    lo, hi, centre, peak_start = ring_clusters(ring_r[order], half_window_px * px)
    n_eta = max(1, int(round(360.0 / eta_bin_deg)))
    g = kernel_vector(geometry)
    col_to_iy, row_to_iz, n_z, table = kernel_tables(panels, geometry.shape)
    n_pix = image.size
    bins = np.empty(n_pix, dtype=np.int64)
    r_all = np.empty(n_pix)
    eta_all = np.empty(n_pix)
    _k.assign_pixels(np.ascontiguousarray(image), np.ascontiguousarray(mask, dtype=np.bool_), g, col_to_iy,
                     row_to_iz, n_z, table, lo, hi, n_eta, bins, r_all, eta_all)
    offsets, pix_order = _k.counting_sort(bins, lo.size * n_eta)
    fit_args = (offsets, pix_order, r_all, image.ravel(), eta_all, n_eta, centre, peak_start, ring_r[order], px,
                fwhm_px, half_window_px, min_pixels, precise, float(tie_fwhm), bool(skip_crowded))
    out = _fit_bins(fit_args, (n_eta, ring_r.size), precise and subtract_neighbours)
    res = out.reshape(-1, ROW_WIDTH)
    ring_sorted = np.tile(np.arange(ring_r.size), n_eta)
    eta_bin = np.repeat(np.arange(n_eta), ring_r.size)
    keep = ((res[:, ROW_STATUS] == _k.OK) & (res[:, ROW_SNR] >= min_snr)
            & (res[:, ROW_SIGMA_UM] <= max_sigma_px * px) & np.isfinite(res[:, ROW_R_UM])
            & np.isfinite(res[:, ROW_ETA_RAD]))
    res = res[keep]
    eta_deg = np.degrees(res[:, ROW_ETA_RAD])
    y, z = r_eta_to_pixel(res[:, ROW_R_UM], eta_deg, geometry, panels)
    return PeakPoints(ring=order[ring_sorted[keep]], r_um=res[:, ROW_R_UM], sigma_r_um=res[:, ROW_SIGMA_UM],
                      eta_deg=eta_deg, y_px=y, z_px=z, amplitude=res[:, ROW_AMPLITUDE],
                      fwhm_px=res[:, ROW_FWHM_PX], mu=res[:, ROW_MU], background=res[:, ROW_BACKGROUND],
                      snr=res[:, ROW_SNR], n_pixels=res[:, ROW_N_PIXELS].astype(np.int64),
                      group=eta_bin[keep] * ring_r.size + res[:, ROW_GROUP].astype(np.int64))


def _fit_bins(fit_args, shape, subtract_neighbours: bool) -> np.ndarray:
    """Rows ``(n_eta, n_rings, ROW_WIDTH)`` of :func:`profiles_kernels.fit_all_bins` on ``fit_args``.

    With ``subtract_neighbours`` the bins are fitted twice (backfitting): pass 2 subtracts from each window
    the pass-1 profiles of the rings of its η bin that it does not model, starting from pass 1's solution.
    A neighbour's Lorentzian tail is no shape a quadratic background can follow: on ``small512`` (rings
    13–15 px apart, FWHM 2.5 px, μ = 0.4) it pushed such pairs apart by up to 2e-5 of R.
    """
    no_prior = np.empty((0, 0, ROW_WIDTH))
    state = np.zeros(shape + (_k.STATE_WIDTH,)) if subtract_neighbours else np.empty((0, 0, _k.STATE_WIDTH))
    # bins differ a lot in cost (outer rings hold more pixels): hand them to the threads one at a time
    chunk = numba.get_parallel_chunksize()
    numba.set_parallel_chunksize(1)
    try:
        out = np.full(shape + (ROW_WIDTH,), np.nan)
        _k.fit_all_bins(*fit_args, out, no_prior, state)
        if subtract_neighbours:
            prior, out = out, np.full(shape + (ROW_WIDTH,), np.nan)
            _k.fit_all_bins(*fit_args, out, prior, state)
    finally:
        numba.set_parallel_chunksize(chunk)
    return out
