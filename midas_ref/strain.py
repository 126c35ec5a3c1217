"""Pseudo-strain statistics shared by the calibration loops (:mod:`~midas_ref.autocal`,
:mod:`~midas_ref.panel_refine`) and the reports (:mod:`~midas_ref.outputs`).

The pseudo-strain of a point on ring k is ``ε = 1 − R/(Lsd·tan 2θ_k)`` (dimensionless; 1e-6 = 1 µε), see
:func:`midas_ref.refine.point_strain`. This module holds what is computed *from* strains: outlier clipping,
per-ring and per-panel statistics, the legacy MultFactor clipping, and the convergence rule of both loops
with its two sets of numbers. It also holds the progress-callback helper both loops share.
"""

from __future__ import annotations

import math

import numpy as np

from .panels import Panels, point_panel_ids

__all__ = ["clip_outliers", "ring_statistics", "legacy_strain_statistics", "panel_point_counts",
           "panel_mean_strain", "strain_change_tolerance", "emit_progress", "CLIP_MIN_HALF_WIDTH",
           "AUTOCAL_CONVERGED_STRAIN_CHANGE", "AUTOCAL_SEM_FRACTION", "PANEL_CONVERGED_STRAIN_CHANGE",
           "PANEL_SEM_FRACTION", "LEGACY_MEAN_CHANGE"]

#: Smallest half-width of the :func:`clip_outliers` window (strain; 1e-7 = 0.1 µε), so that points with a
#: MAD near 0 (noise-free images) are not clipped on differences far below any physical strain.
CLIP_MIN_HALF_WIDTH = 1e-7

#: Legacy MultFactor clipping stops when the mean |ε| changes by less than this (CalibrantPanelShiftsOMP).
LEGACY_MEAN_CHANGE = 1e-10

# Convergence of the two outer loops. Both compare the RMS over the points of the strain change between the
# geometries of successive iterations with ``max(floor, fraction · σ/√n)`` (:func:`strain_change_tolerance`),
# σ/√n being the statistical uncertainty of the mean |ε|. The numbers differ because stopping means different
# things in the two loops:
#
# * autocal (AutoCalibrate) *returns the last geometry* and a run that never meets the rule ends at the
#   iteration cap as FAILED. Real detectors have systematic residuals that make the extracted point set
#   flicker between nearly equal solutions, so the rule must be reachable: floor 1e-7 (0.1 µε, the
#   resolution of :func:`clip_outliers`) and half the uncertainty of the mean. (autocal's early-stage test
#   uses 100 × this floor.)
# * panel_refine (CalibrantPanelShiftsOMP) runs at most ``nIterations`` cycles and *keeps the best one*
#   whatever happens; stopping only saves time, so a strict rule costs nothing but cycles: floor 1e-8 and a
#   tenth of the uncertainty, so cycles still moving panel corrections measurably are not cut short.
#
# They are kept apart because merging them could change the number of iterations, and so the results, of
# one loop or the other.

#: autocal: floor of the strain-change tolerance (RMS strain change; 1e-7 = 0.1 µε).
AUTOCAL_CONVERGED_STRAIN_CHANGE = 1e-7
#: autocal: fraction of the uncertainty σ/√n of the mean |ε| that counts as no change.
AUTOCAL_SEM_FRACTION = 0.5
#: panel_refine: floor of the strain-change tolerance (RMS strain change; 1e-8 = 0.01 µε).
PANEL_CONVERGED_STRAIN_CHANGE = 1e-8
#: panel_refine: fraction of the uncertainty σ/√n of the mean |ε| that counts as no change.
PANEL_SEM_FRACTION = 0.1


def strain_change_tolerance(std_strain: float, n_points: int, *, floor: float, fraction: float) -> float:
    """RMS strain change between iterations below which a calibration loop has converged.

    Parameters
    ----------
    std_strain : float
        Population std of |ε| over the inlier points (dimensionless strain).
    n_points : int
        Number of inlier points (values below 1 count as 1).
    floor : float
        Smallest tolerance (strain), e.g. :data:`AUTOCAL_CONVERGED_STRAIN_CHANGE`.
    fraction : float
        Multiple of the standard error of the mean, e.g. :data:`AUTOCAL_SEM_FRACTION`.

    Returns
    -------
    float
        ``max(floor, fraction · std_strain / √max(n_points, 1))``; converged when the change is *below* it.

    Examples
    --------
    >>> f"{strain_change_tolerance(4e-5, 400, floor=1e-7, fraction=0.5):.3g}"  # 0.5 · 40 µε / 20
    '1e-06'
    >>> strain_change_tolerance(4e-5, 400, floor=1e-5, fraction=0.5)
    1e-05
    """
    return max(floor, fraction * std_strain / math.sqrt(max(n_points, 1)))


def clip_outliers(strain, n_sigma: float = 5.0, passes: int = 3) -> np.ndarray:
    """Inliers by iterated median/MAD clipping.

    Parameters
    ----------
    strain : ndarray of shape (N,)
        Signed pseudo-strain of every point (NaN allowed; never an inlier).
    n_sigma : float
        Half-width of the window in robust standard deviations ``σ = 1.4826·MAD``.
    passes : int
        At most this many passes (stops early when the inlier set no longer changes).

    Returns
    -------
    ndarray of bool, shape (N,)
        True for points with ``|ε − median| ≤ max(n_sigma·σ, CLIP_MIN_HALF_WIDTH)``, median and σ taken over
        the previous pass's inliers (the first pass over every finite point).

    Notes
    -----
    Every pass is re-evaluated over all finite points, so a point dropped early can come back.
    """
    keep = np.isfinite(strain)
    for _ in range(passes):
        med = np.median(strain[keep])
        sigma = 1.4826 * np.median(np.abs(strain[keep] - med))
        new = np.isfinite(strain) & (np.abs(strain - med) <= max(n_sigma * sigma, CLIP_MIN_HALF_WIDTH))
        if np.array_equal(new, keep):
            break
        keep = new
    return keep


def ring_statistics(ring_index, strain, n_rings: int):
    """Per-ring point count, mean signed strain, mean |strain| and standard error of the mean.

    Parameters
    ----------
    ring_index : ndarray of int, shape (N,)
        Ring of every point, 0 … n_rings − 1.
    strain : ndarray of shape (N,)
        Signed pseudo-strain of every point.
    n_rings : int

    Returns
    -------
    count : ndarray of shape (n_rings,), float
    mean : ndarray of shape (n_rings,)
        Mean signed strain (NaN for a ring without points).
    mean_abs : ndarray of shape (n_rings,)
        Mean |strain| (NaN for a ring without points).
    sem : ndarray of shape (n_rings,)
        ``√(var / max(count − 1, 1))`` with the population variance ``var`` of the signed strain.

    Examples
    --------
    >>> import numpy as np
    >>> count, mean, mean_abs, sem = ring_statistics(np.array([0, 0, 1]), np.array([1e-5, -3e-5, 2e-5]), 3)
    >>> count.tolist(), np.round(mean[:2] * 1e6, 9).tolist(), np.round(sem[:2] * 1e6, 9).tolist()  # µε
    ([2.0, 1.0, 0.0], [-10.0, 20.0], [20.0, 0.0])
    """
    count = np.bincount(ring_index, minlength=n_rings).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.bincount(ring_index, weights=strain, minlength=n_rings) / count
        mean_abs = np.bincount(ring_index, weights=np.abs(strain), minlength=n_rings) / count
        var = np.bincount(ring_index, weights=strain ** 2, minlength=n_rings) / count - mean ** 2
        sem = np.sqrt(np.maximum(var, 0) / np.maximum(count - 1, 1))
    return count, mean, mean_abs, sem


def legacy_strain_statistics(abs_strain, mult_factor: float, passes: int):
    """Inliers, mean and population std of |ε| after CalibrantPanelShiftsOMP's clipping (spec §3.8).

    Parameters
    ----------
    abs_strain : array_like of shape (N,)
        |pseudo-strain| of every point (NaN allowed; never an inlier).
    mult_factor : float
        ``MultFactor``; 0 = no clipping.
    passes : int
        ``OutlierIterations``.

    Returns
    -------
    keep : ndarray of bool, shape (N,)
    mean, std : float
        Mean and population std of |ε| over ``keep`` (NaN if no point is finite).

    Notes
    -----
    With ``mult_factor`` > 0: up to ``passes`` times, inliers = points with |ε| ≤ mult_factor × mean of the
    previous inliers (re-evaluated over all points, so points can come back); stops when the mean changes by
    less than :data:`LEGACY_MEAN_CHANGE`, or keeps the previous inliers if a pass would keep none. Without:
    every finite point.
    """
    s = np.asarray(abs_strain, dtype=np.float64)
    keep = np.isfinite(s)
    if not keep.any():
        return keep, math.nan, math.nan
    mean = float(s[keep].mean())
    if mult_factor > 0:
        for _ in range(passes):
            new = np.isfinite(s) & (s <= mult_factor * mean)
            if not new.any():
                break
            keep = new
            new_mean = float(s[keep].mean())
            done = abs(new_mean - mean) < LEGACY_MEAN_CHANGE
            mean = new_mean
            if done:
                break
    return keep, mean, float(s[keep].std())


def panel_point_counts(y_px, z_px, panels: Panels) -> np.ndarray:
    """Points per panel.

    Parameters
    ----------
    y_px, z_px : ndarray of shape (N,)
        Raw detector positions of the points, pixels.
    panels : Panels

    Returns
    -------
    ndarray of int, shape (n_panels,)
        Points in gaps or off the detector are not counted.
    """
    ids = point_panel_ids(y_px, z_px, panels)
    return np.bincount(ids[ids >= 0], minlength=panels.layout.n_panels)


def panel_mean_strain(y_px, z_px, abs_strain, panels: Panels) -> np.ndarray:
    """Mean |ε| per panel.

    Parameters
    ----------
    y_px, z_px : ndarray of shape (N,)
        Raw detector positions of the points, pixels.
    abs_strain : ndarray of shape (N,)
        |pseudo-strain| of every point.
    panels : Panels

    Returns
    -------
    ndarray of shape (n_panels,)
        NaN for a panel without points.
    """
    ids = point_panel_ids(y_px, z_px, panels)
    ok = ids >= 0
    n = panels.layout.n_panels
    count = np.bincount(ids[ok], minlength=n).astype(float)
    total = np.bincount(ids[ok], weights=np.asarray(abs_strain)[ok], minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def emit_progress(progress, event: str, **info) -> None:
    """Call the optional progress callback as ``progress(event, info)``; nothing when it is None.

    Library code never prints (style guide §3): the loops report ``"iteration"``, ``"rings_rejected"``,
    ``"background"``, ``"guess"`` events this way and the CLI draws them.
    """
    if progress is not None:
        progress(event, info)
