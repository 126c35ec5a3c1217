"""The error model of the ring points: weights, the systematic floor the misfit implies, the covariance.

A point's radius comes from a peak fit with a standard error ``σ_i`` (in strain, ``σ_R / R``). Two facts of
the measurement shape the error model (docs/validation.md, "Error bars"):

* Points of one **crowded run** (rings fitted in one window with one common shift, ``PeakPoints.group``)
  carry *one* error: their radial errors are the same number. Counted as independent they would claim m
  times the information of the one shift they measure (measured on small512: the parameter scatter was then
  ~20 % above the claimed σ). Each member therefore weighs ``1/(m·σ² + s²)``: the group as a whole carries
  the information of one shift, the systematic part below stays independent per point.
* Real detectors have residuals the model lacks (module misplacements, parallax, a mask edge): the
  **systematic floor** ``s`` (strain) is the per-point error, independent between points, that makes the
  weighted misfit equal its degrees of freedom (Paule–Mandel: ``Σ w_i e_i² = Σ w_i (σ_i² + s²) − p``);
  ``s = 0`` when the misfit is already within the peak-fit errors, so the errors are inflated by the
  misfit and never deflated. With a large floor the weights become nearly equal (the legacy unweighted
  fit); with none they are the inverse variances of the peak fits.

The covariance of the weighted least-squares estimate is the sandwich ``A·B·A`` with ``A = (JᵀWJ)⁻¹`` and
``B = Σ_g (Σ_{i∈g} w_i σ_i J_i)(…)ᵀ + s² Σ_i w_i² J_i J_iᵀ`` — exact for this error model whatever weights
were used (an iteration's weights lag one floor estimate behind).
"""

from __future__ import annotations

import numpy as np

__all__ = ["point_sigma_strain", "group_sizes", "point_weights", "systematic_variance", "covariance_meat"]

#: Smallest point error used in a weight, strain: a noise-free image's peak fits report errors near round-off,
#: and a weight must stay finite (their misfit then sets the systematic floor instead).
MIN_SIGMA_STRAIN = 1e-12


def point_sigma_strain(points) -> np.ndarray:
    """Peak-fit standard error of each point in strain, ``σ_R / R`` (``PeakPoints.sigma_r_um / r_um``)."""
    return np.maximum(np.asarray(points.sigma_r_um, dtype=np.float64) / np.asarray(points.r_um, dtype=np.float64),
                      MIN_SIGMA_STRAIN)


def group_sizes(group) -> np.ndarray:
    """Number of points sharing each point's ``group`` id (1 for a lone ring's point)."""
    group = np.asarray(group)
    _, inverse, counts = np.unique(group, return_inverse=True, return_counts=True)
    return counts[inverse].astype(np.float64)


def point_weights(sigma_strain, group, systematic_var: float = 0.0) -> np.ndarray:
    """Fit weights ``1/(m_i·σ_i² + s²)`` (strain⁻²).

    Parameters
    ----------
    sigma_strain : array_like
        Peak-fit standard error of each point, strain (``σ_R / R``).
    group : array_like of int
        ``PeakPoints.group``; ``m_i`` is the size of point i's group.
    systematic_var : float
        ``s²``, the systematic floor (strain²), see :func:`systematic_variance`.
    """
    sigma = np.asarray(sigma_strain, dtype=np.float64)
    return 1.0 / (group_sizes(group) * sigma * sigma + systematic_var)


def systematic_variance(strain, sigma_strain, group, n_params: int) -> float:
    """The systematic floor ``s²`` (strain²) that makes the weighted misfit equal its degrees of freedom.

    Solves ``Σ w_i(s²) e_i² = Σ w_i(s²)(σ_i² + s²) − p`` for ``s² ≥ 0`` by bisection (the left side over the
    right falls monotonically as ``s²`` grows); 0 when the misfit at ``s² = 0`` is already within the
    peak-fit errors. ``Σ w_i(σ_i² + s²)`` counts the independent observations: one per group when the peak
    errors dominate, one per point when the floor does.

    Parameters
    ----------
    strain : array_like
        Residual pseudo-strain of each point at the fitted geometry.
    sigma_strain, group
        As in :func:`point_weights`.
    n_params : int
        Fitted parameters ``p``.

    Returns
    -------
    float
        ``s²``; 0 when there are no degrees of freedom left.
    """
    e2 = np.asarray(strain, dtype=np.float64) ** 2
    sigma2 = np.asarray(sigma_strain, dtype=np.float64) ** 2
    m = group_sizes(group)
    ok = np.isfinite(e2) & np.isfinite(sigma2) & (sigma2 > 0)
    e2, sigma2, m = e2[ok], sigma2[ok], m[ok]

    def excess(s2: float) -> float:
        w = 1.0 / (m * sigma2 + s2)
        dof = float(np.sum(w * (sigma2 + s2))) - n_params
        return float(np.sum(w * e2)) / dof - 1.0 if dof > 0 else -1.0

    if e2.size == 0 or excess(0.0) <= 0.0:
        return 0.0
    lo, hi = 0.0, max(float(np.mean(e2)), 1e-300)
    while excess(hi) > 0.0 and hi < 1e6:  # hi = mean e² already gives a ratio ≤ 1 unless dof are tiny
        hi *= 4.0
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        if excess(mid) > 0.0:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-6 * hi:
            break
    return 0.5 * (lo + hi)


def covariance_meat(jac_strain, weights, sigma_strain, group, systematic_var: float) -> np.ndarray:
    """``B = Σ_g (Σ_{i∈g} w_i σ_i J_i)(…)ᵀ + s² Σ_i w_i² J_i J_iᵀ`` of the sandwich covariance ``A·B·A``.

    Parameters
    ----------
    jac_strain : ndarray of shape (N, P)
        ``∂ε_i/∂x_j`` of the point strains (unweighted).
    weights : ndarray of shape (N,)
        The weights of the fit.
    sigma_strain, group, systematic_var
        The error model (see the module docstring).
    """
    jac = np.asarray(jac_strain, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    sigma = np.asarray(sigma_strain, dtype=np.float64)
    _, inverse = np.unique(np.asarray(group), return_inverse=True)
    summed = np.zeros((int(inverse.max()) + 1 if inverse.size else 0, jac.shape[1]))
    np.add.at(summed, inverse, jac * (w * sigma)[:, None])
    wj = jac * w[:, None]
    return summed.T @ summed + systematic_var * (wj.T @ wj)
