"""Ring positions measured in an image, independently of the calibrator.

A ring's radial position in an azimuthal sector is the windowed centroid of the background-subtracted
pixel values over the pixel-centre radius r (from the true geometry):

    δ = Σ w_i·(r_i − R) / Σ w_i,   w_i = I_i · W((r_i − R − δ)/h) · V((η_i − η_c)/Δη) / J_i

with Hann windows W, V (zero value and slope at their ends, so pixels entering or leaving the window
carry no weight) and J_i = r_i, the area element of the (r, η) map (pixel density per dr·dη ∝ r).
iterated so that the radial window is centred on the estimate. For a profile symmetric about R + δ this
is unbiased: the windows are symmetric about it, and dividing by the area element removes the
r-weighting of the pixel count. It uses only the geometry model and the image.
"""

from __future__ import annotations

import numpy as np


def hann(x):
    """cos²(πx/2) for |x| < 1, 0 outside."""
    x = np.asarray(x, dtype=np.float64)
    return np.where(np.abs(x) < 1.0, np.cos(0.5 * np.pi * x) ** 2, 0.0)


def usable_mask(shape, invalid=None):
    """Pixels a sector may contain: not on the image border and not next to an ``invalid`` pixel."""
    bad = np.zeros(shape, dtype=bool)
    bad[0, :] = bad[-1, :] = bad[:, 0] = bad[:, -1] = True
    if invalid is not None:
        grown = invalid.copy()
        grown[1:, :] |= invalid[:-1, :]
        grown[:-1, :] |= invalid[1:, :]
        grown[:, 1:] |= invalid[:, :-1]
        grown[:, :-1] |= invalid[:, 1:]
        bad |= grown
    return ~bad


def sector_centroids(net, r_um, eta_deg, radius_um, half_window_um, eta_centres_deg, eta_half_width_deg,
                     usable=None, min_pixels=20, iterations=8):
    """Windowed radial centroid offsets δ (µm) of one ring in several azimuthal sectors.

    Parameters
    ----------
    net : ndarray (NZ, NY)
        Background-subtracted image (float).
    r_um, eta_deg : ndarray (NZ, NY)
        Pixel-centre radius and azimuth from the true geometry.
    radius_um : float
        True ring radius R.
    half_window_um : float
        Half-width h of the radial window.
    eta_centres_deg : sequence of float
        Sector centres.
    eta_half_width_deg : float
        Half-width Δη of each sector's window.
    usable : ndarray of bool (NZ, NY), optional
        :func:`usable_mask`; a sector whose window holds any other pixel is skipped (NaN): the ring
        leaves the image or crosses a gap there, and the window would be cut asymmetrically.
    min_pixels : int
        Sectors with fewer pixels inside both windows are skipped (NaN).
    iterations : int
        The radial window is re-centred on the previous estimate this many times: a symmetric window is
        unbiased only when centred on the peak (a displaced peak is pulled towards the window centre).

    Returns
    -------
    offsets_um : ndarray, one per sector (NaN where skipped)
    counts : ndarray of int, pixels used per sector
    """
    if usable is None:
        usable = usable_mask(net.shape)
    near = np.abs(r_um - radius_um) < 2 * half_window_um
    r = r_um[near]
    eta = eta_deg[near]
    value = net[near]
    ok = usable[near]
    offsets = np.full(len(eta_centres_deg), np.nan)
    counts = np.zeros(len(eta_centres_deg), dtype=int)
    for i, centre in enumerate(eta_centres_deg):
        d_eta = (eta - centre + 180.0) % 360.0 - 180.0
        w_eta = hann(d_eta / eta_half_width_deg)
        sector = w_eta > 0
        x = r[sector] - radius_um
        base = w_eta[sector] * value[sector] / r[sector]
        usable_here = ok[sector]
        delta = 0.0
        for _ in range(iterations + 1):
            inside = np.abs(x - delta) < half_window_um
            counts[i] = int(inside.sum())
            if counts[i] < min_pixels or not usable_here[inside].all():
                delta = np.nan
                break
            w = hann((x[inside] - delta) / half_window_um) * base[inside]
            delta = np.sum(w * x[inside]) / np.sum(w)
        offsets[i] = delta
    return offsets, counts
