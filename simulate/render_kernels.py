"""Numba kernel of the noise-free renderer; radians, µm and float64 only.

The geometry is *not* re-implemented here: every sample position goes through
:func:`midas_ref.geometry_kernels.pixel_r_cs`, the one forward model (tilts, distortion, panel shifts).

Pixel integration (docs/simulate.md, "Pixel integration"): the pixel mean of the intensity is an n × n
tensor Gauss–Legendre rule over the pixel square near ring centres. Where every ring is far enough that
the profile is smooth over the pixel, a 2 × 2 rule and, farther still, the 1-point (pixel-centre) rule give
the same mean to better than 1e-5 of the peak height (zones in ``render.py``; checked in the tests against
the full rule everywhere). The zone of a pixel follows from its centre radius and a Lipschitz bound on r
over the pixel (``half_extent_um``).
"""

from __future__ import annotations

import math

from numba import njit, prange

from midas_ref._numba import PARALLEL, SERIAL
from midas_ref.geometry_kernels import pixel_r_cs

#: exp(−50) ≈ 2e-22: the Gaussian part is not evaluated beyond this exponent.
_MAX_EXPONENT = 50.0
_LN2 = math.log(2.0)
_TWO_PI = 2.0 * math.pi


@njit(**SERIAL)
def first_at_least(sorted_values, value):
    """Index of the first element of ascending ``sorted_values`` that is ≥ ``value`` (len if none)."""
    lo = 0
    hi = sorted_values.shape[0]
    while lo < hi:
        mid = (lo + hi) >> 1
        if sorted_values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(**SERIAL)
def ring_sum(r_um, k0, k1, ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um, mu):
    """Sum over rings ``k0 … k1−1`` of their truncated pseudo-Voigt at radius ``r_um`` (counts).

    Ring k contributes ``s_k·(μ/(1 + u) + (1 − μ)·exp(−ln2·u) − p_k)`` with ``u = x²·ring_k[k]``,
    ``ring_k = 4/Γ_k²``, x = r − R_k, where |x| < ``ring_cut_um[k]`` (0 beyond); ``p_k = ring_floor[k]`` is
    the profile's value at the cut-off (so the ring falls continuously to 0 there) and
    ``s_k = ring_scale[k] = A_k/(1 − p_k)`` keeps the peak height at A_k.
    """
    total = 0.0
    for k in range(k0, k1):
        x = r_um - ring_r_um[k]
        if abs(x) < ring_cut_um[k]:
            u = x * x * ring_k[k]
            value = mu / (1.0 + u) - ring_floor[k]
            exponent = _LN2 * u
            if exponent < _MAX_EXPONENT:
                value += (1.0 - mu) * math.exp(-exponent)
            total += ring_scale[k] * value
    return total


@njit(**SERIAL)
def azimuthal_factor(cos_eta, sin_eta, tex_amp, tex_order, tex_phase_rad, arcs):
    """Ring-intensity factor at azimuth η: ``1 + a·cos(n(η − φ))``, 0 inside a missing arc.

    ``arcs`` rows are ``(start_rad, width_rad)`` with both in [0, 2π): η is inside when
    ``(η − start) mod 2π ≤ width``.
    """
    eta = math.atan2(sin_eta, cos_eta)
    for i in range(arcs.shape[0]):
        d = (eta - arcs[i, 0]) % _TWO_PI
        if d <= arcs[i, 1]:
            return 0.0
    if tex_amp == 0.0:
        return 1.0
    return 1.0 + tex_amp * math.cos(tex_order * (eta - tex_phase_rad))


@njit(**SERIAL)
def near_arc_edge(cos_eta, sin_eta, half_angle, arcs):
    """Whether an edge of a missing arc lies within ``half_angle`` (radians) of azimuth η."""
    eta = math.atan2(sin_eta, cos_eta)
    for i in range(arcs.shape[0]):
        for edge in (arcs[i, 0], arcs[i, 0] + arcs[i, 1]):
            d = (eta - edge) % _TWO_PI
            if d < half_angle or _TWO_PI - d < half_angle:
                return True
    return False


@njit(**SERIAL)
def _rule_sum(iy, iz, nodes, weights, g, col_to_iy, row_to_iz, n_panels_z, table, k0, k1, ring_r_um, ring_scale,
              ring_floor, ring_k, ring_cut_um, mu, use_eta, tex_amp, tex_order, tex_phase_rad, arcs):
    """(Σ w·rings·f(η), Σ w·r) of the tensor rule ``nodes × nodes`` on pixel (iy, iz)."""
    rings = 0.0
    r_mean = 0.0
    n = nodes.shape[0]
    for a in range(n):
        z = iz + nodes[a]
        for b in range(n):
            w = weights[a] * weights[b]
            r, c, s = pixel_r_cs(iy + nodes[b], z, g, col_to_iy, row_to_iz, n_panels_z, table)
            r_mean += w * r
            if k1 > k0:
                value = ring_sum(r, k0, k1, ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um, mu)
                if use_eta and value != 0.0:
                    value *= azimuthal_factor(c, s, tex_amp, tex_order, tex_phase_rad, arcs)
                rings += w * value
    return rings, r_mean


@njit(**PARALLEL)
def render_rows(g, col_to_iy, row_to_iz, n_panels_z, table, ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um,
                ring_near_um, ring_mid_um, cut_max_um, half_extent_um, mu, nodes, weights, mid_nodes, mid_weights,
                adaptive, bg_counts, bg_slope_per_um, use_eta, tex_amp, tex_order, tex_phase_rad, arcs, row0, out):
    """Expected counts of image rows ``row0 … row0 + out.shape[0] − 1`` (noise-free), in place.

    Pixel (iz, iy) = mean over the pixel square of ``rings(r)·f(η) + bg_counts + bg_slope_per_um·r``, with
    (r, η) from ``pixel_r_cs`` at the nodes of a tensor Gauss–Legendre rule; the background part is
    clipped at 0. With ``adaptive``, ring k at distance d_k = |r_centre − R_k| − ``half_extent_um`` is
    evaluated at the pixel centre alone if d_k ≥ ``ring_mid_um[k]``; the other rings (and the background's r)
    with the full ``nodes`` rule if some d_k < ``ring_near_um[k]``, else with the ``mid_nodes`` rule. Pixels
    within 4 half-extents of the beam centre (where r is a cone, not smooth) and pixels crossed by the edge
    of a missing arc use the full rule for every ring and for the background.

    Parameters
    ----------
    g, col_to_iy, row_to_iz, n_panels_z, table
        Geometry vector and panel tables (``geometry.kernel_vector``, ``panels.kernel_tables``).
    ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um : ndarray of shape (n_rings,)
        Ring radii (ascending, µm), height scales and floors (:func:`ring_sum`), 4/Γ² (1/µm²) and cut-off
        half-widths (µm).
    ring_near_um, ring_mid_um : ndarray of shape (n_rings,)
        Zone half-widths (µm) for the full and the middle rule.
    cut_max_um : float
        Largest cut-off.
    half_extent_um : float
        Upper bound of |r − r_centre| over any pixel (Lipschitz bound of r × half the pixel diagonal).
    mu : float
        Lorentzian fraction.
    nodes, weights : ndarray of shape (n,)
        Full rule: Gauss–Legendre nodes on [−½, ½] (pixel units) and weights summing to 1.
    mid_nodes, mid_weights : ndarray of shape (m,)
        Middle rule (2 × 2).
    adaptive : bool
        Choose the rule per pixel; otherwise the full rule everywhere.
    bg_counts, bg_slope_per_um : float
        Background constant (counts) and radial slope (counts per µm of r).
    use_eta : bool
        Evaluate :func:`azimuthal_factor` (texture or missing arcs present).
    tex_amp, tex_order, tex_phase_rad, arcs
        See :func:`azimuthal_factor`.
    row0 : int
        Image row of ``out[0]``.
    out : ndarray of shape (n_rows, n_cols), float64
    """
    rows, cols = out.shape
    n_rings = ring_r_um.shape[0]
    for i in prange(rows):
        iz = row0 + i
        for iy in range(cols):
            if not adaptive:
                rings, r_mean = _rule_sum(iy, iz, nodes, weights, g, col_to_iy, row_to_iz, n_panels_z, table, 0,
                                          n_rings, ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um, mu,
                                          use_eta, tex_amp, tex_order, tex_phase_rad, arcs)
                out[i, iy] = rings + max(bg_counts + bg_slope_per_um * r_mean, 0.0)
                continue
            r, c, s = pixel_r_cs(float(iy), float(iz), g, col_to_iy, row_to_iz, n_panels_z, table)
            # rings that can reach the pixel [k0, k1); those needing more than the centre value [m0, m1)
            k0 = first_at_least(ring_r_um, r - half_extent_um - cut_max_um)
            k1 = k0
            m0 = -1
            m1 = -1
            near = False
            while k1 < n_rings and ring_r_um[k1] <= r + half_extent_um + cut_max_um:
                dist = abs(r - ring_r_um[k1]) - half_extent_um
                if dist < ring_mid_um[k1]:
                    if m0 < 0:
                        m0 = k1
                    m1 = k1 + 1
                    if dist < ring_near_um[k1]:
                        near = True
                k1 += 1
            if m0 < 0:
                m0 = k1
                m1 = k1
            # full rule for every ring where r is not smooth (the beam-centre cone, within a few pixels)
            # or a missing arc's edge crosses the pixel (f(η) is a step there)
            if r <= 4.0 * half_extent_um or (arcs.shape[0] > 0 and k1 > k0 and near_arc_edge(
                    c, s, 2.0 * half_extent_um / r, arcs)):
                m0 = k0
                m1 = k1
                near = True
            # rings beyond their middle zone: centre value (1-point rule)
            rings = 0.0
            if m0 > k0:
                rings += ring_sum(r, k0, m0, ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um, mu)
            if k1 > m1:
                rings += ring_sum(r, m1, k1, ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um, mu)
            if use_eta and rings != 0.0:
                rings *= azimuthal_factor(c, s, tex_amp, tex_order, tex_phase_rad, arcs)
            # the others: full rule if one core is near, else the middle rule
            if m1 > m0 or near:
                if near:
                    part, r_mean = _rule_sum(iy, iz, nodes, weights, g, col_to_iy, row_to_iz, n_panels_z, table,
                                             m0, m1, ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um, mu,
                                             use_eta, tex_amp, tex_order, tex_phase_rad, arcs)
                else:
                    part, r_mean = _rule_sum(iy, iz, mid_nodes, mid_weights, g, col_to_iy, row_to_iz, n_panels_z,
                                             table, m0, m1, ring_r_um, ring_scale, ring_floor, ring_k, ring_cut_um,
                                             mu, use_eta, tex_amp, tex_order, tex_phase_rad, arcs)
                rings += part
            else:
                r_mean = r
            out[i, iy] = rings + max(bg_counts + bg_slope_per_um * r_mean, 0.0)
