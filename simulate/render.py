"""Noise-free rendering: the ring list of a configuration and the image of expected counts.

The only geometry used is :mod:`midas_ref.geometry` / :mod:`midas_ref.geometry_kernels`; ring positions
come from :func:`midas_ref.rings.ring_table`. See ``docs/simulate.md`` for the model and its accuracy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from midas_ref import geometry as _geometry
from midas_ref.errors import RingTableError
from midas_ref.panels import kernel_tables
from midas_ref.rings import d_min_from_radius, ring_table

from .config import (MID_ZONE_FWHM, MID_ZONE_PX, NEAR_ZONE_FWHM, NEAR_ZONE_PX, TAIL_CUTOFF_REL, SimulationConfig,
                     SimulationError)

__all__ = ["RingSet", "ring_set", "detector_r_range", "profile_cutoff_um", "pseudo_voigt", "pixel_rule",
           "r_gradient_bound", "render_expected"]

#: Rows per call of the numpy reference engine (bounds its memory to ~rows·cols·n² samples).
_NUMPY_BLOCK_ROWS = 16


@dataclass(frozen=True, eq=False)
class RingSet:
    """The rings a configuration renders, ascending in radius (one row per line of each ring).

    Attributes
    ----------
    ring_nr : ndarray of int64
        GetHKLList ring number.
    hkl : ndarray of int64, shape (n, 3)
        Representative reflection.
    multiplicity : ndarray of int64
    d_angstrom, two_theta_deg : ndarray
    radius_um : ndarray
        Ring radius R = Lsd·tan 2θ, µm; ascending.
    line : ndarray of int64
        0 for the main wavelength, 1 for the doublet's second line.
    amplitude_counts : ndarray
        Peak height A_k, counts.
    fwhm_um : ndarray
        Γ_k, µm of r.
    cutoff_um : ndarray
        Half-width beyond which ring k is not evaluated, µm (:func:`profile_cutoff_um`).
    on_detector : ndarray of bool
        R_k lies within the range of r covered by the image.
    """

    ring_nr: np.ndarray
    hkl: np.ndarray
    multiplicity: np.ndarray
    d_angstrom: np.ndarray
    two_theta_deg: np.ndarray
    radius_um: np.ndarray
    line: np.ndarray
    amplitude_counts: np.ndarray
    fwhm_um: np.ndarray
    cutoff_um: np.ndarray
    on_detector: np.ndarray

    def __len__(self) -> int:
        return len(self.radius_um)

    def select(self, keep) -> "RingSet":
        """Subset (boolean mask or index array), keeping the order."""
        return RingSet(**{name: getattr(self, name)[keep] for name in self.__dataclass_fields__})


def profile_cutoff_um(fwhm_um, lorentz_fraction: float, rel: float = TAIL_CUTOFF_REL):
    """Half-width |x| beyond which both pseudo-Voigt parts are below ``rel`` of the peak height.

    Lorentzian part μ/(1 + 4x²/Γ²) < rel for |x| > (Γ/2)·√(μ/rel − 1); Gaussian part
    (1 − μ)·exp(−4 ln2 x²/Γ²) < rel for |x| > Γ·√(ln((1 − μ)/rel)/(4 ln 2)). The cut-off is the larger.
    """
    fwhm = np.asarray(fwhm_um, dtype=np.float64)
    mu = float(lorentz_fraction)
    lorentz = 0.5 * fwhm * math.sqrt(mu / rel - 1.0) if mu > rel else 0.0 * fwhm
    gauss = fwhm * math.sqrt(math.log((1.0 - mu) / rel) / (4.0 * math.log(2.0))) if 1.0 - mu > rel else 0.0 * fwhm
    return np.maximum(lorentz, gauss)


def detector_r_range(config: SimulationConfig) -> tuple[float, float]:
    """Smallest and largest r = Lsd·tan 2θ (µm) over the image area (pixel edges included).

    r is largest on the image border; the smallest is 0 when the beam centre is on the image, otherwise
    taken on the border as well.
    """
    geom = config.geometry
    rows, cols = geom.shape
    ys = np.arange(-0.5, cols - 0.5 + 1e-9, 0.25)
    zs = np.arange(-0.5, rows - 0.5 + 1e-9, 0.25)
    y = np.concatenate([ys, ys, np.full_like(zs, -0.5), np.full_like(zs, cols - 0.5)])
    z = np.concatenate([np.full_like(ys, -0.5), np.full_like(ys, rows - 0.5), zs, zs])
    r, _ = _geometry.pixel_to_r_eta(y, z, geom, config.panels)
    r_max = float(np.nanmax(r))
    inside = -0.5 <= geom.bc_y_px <= cols - 0.5 and -0.5 <= geom.bc_z_px <= rows - 0.5
    r_min = 0.0 if inside else float(np.nanmin(r))
    return r_min, r_max


def _fwhm_um(config: SimulationConfig, two_theta_deg: np.ndarray) -> np.ndarray:
    peak = config.peak
    geom = config.geometry
    if peak.fwhm_px is not None:
        return np.full(len(two_theta_deg), peak.fwhm_px * geom.px_um)
    cos2 = np.cos(np.radians(two_theta_deg)) ** 2
    return geom.lsd_um * math.radians(peak.fwhm_two_theta_deg) / cos2


def ring_set(config: SimulationConfig) -> RingSet:
    """The rings :func:`render_expected` draws: every ring whose profile reaches the image.

    Radii are R = Lsd·tan 2θ from :func:`midas_ref.rings.ring_table` (GetHKLList numbering); a doublet adds
    the same rings at the second wavelength. Empty when ``intensity.peak_counts`` is 0.

    Raises
    ------
    RingTableError
        The material gives no ring within reach of the detector (or a bad space group / lattice).
    SimulationError
        ``intensity.ring_numbers`` names no ring on the detector.
    """
    geom = config.geometry
    empty_i = np.zeros(0, dtype=np.int64)
    empty_f = np.zeros(0)
    if config.intensity.peak_counts == 0:
        return RingSet(empty_i, np.zeros((0, 3), np.int64), empty_i, empty_f, empty_f, empty_f, empty_i,
                       empty_f, empty_f, empty_f, np.zeros(0, bool))
    r_min, r_max = detector_r_range(config)
    two_theta_max = math.degrees(math.atan(r_max / geom.lsd_um))
    if two_theta_max >= 89.0:
        raise SimulationError(f"the image reaches 2θ = {two_theta_max:.1f}°; the model needs 2θ < 89°")
    fwhm_max = float(_fwhm_um(config, np.array([min(two_theta_max * 1.05, 89.0)]))[0])
    cut_est = float(profile_cutoff_um(fwhm_max, config.peak.lorentz_fraction)) * 1.05
    r_limit = r_max + cut_est
    wavelengths = [config.material.wavelength_angstrom]
    if config.peak.doublet_wavelength_angstrom is not None and config.peak.doublet_ratio > 0:
        wavelengths.append(config.peak.doublet_wavelength_angstrom)
    parts = []
    mat = config.material
    for line, wavelength in enumerate(wavelengths):
        try:
            rings = ring_table(mat.space_group, mat.lattice, wavelength, lsd_um=geom.lsd_um,
                               d_min_angstrom=d_min_from_radius(wavelength, geom.lsd_um, r_limit))
        except RingTableError as exc:
            if line == 0 and str(exc).startswith("no ring"):
                raise RingTableError(
                    f"no ring of {mat.name} reaches the image: it covers 2θ ≤ {two_theta_max:.3f}° "
                    f"(r ≤ {r_max / geom.px_um:.1f} px) at λ = {wavelength:g} Å, Lsd = {geom.lsd_um:g} µm ({exc})"
                ) from None
            raise
        parts.extend((line, ring) for ring in rings if math.isfinite(ring.radius_um))
    if config.intensity.ring_numbers is not None:
        wanted = set(config.intensity.ring_numbers)
        parts = [(line, ring) for line, ring in parts if ring.ring_nr in wanted]
    line = np.array([p[0] for p in parts], dtype=np.int64)
    rings = [p[1] for p in parts]
    two_theta = np.array([r.two_theta_deg for r in rings], dtype=np.float64)
    fwhm = _fwhm_um(config, two_theta)
    cutoff = profile_cutoff_um(fwhm, config.peak.lorentz_fraction)
    radius = np.array([r.radius_um for r in rings], dtype=np.float64)
    reach = (radius + cutoff >= r_min) & (radius - cutoff <= r_max)
    multiplicity = np.array([r.multiplicity for r in rings], dtype=np.int64)
    if config.intensity.weighting == "multiplicity" and len(rings):
        weight = multiplicity / multiplicity[reach & (line == 0)].max(initial=1)
    else:
        weight = np.ones(len(rings))
    amplitude = config.intensity.peak_counts * weight * np.where(line == 0, 1.0, config.peak.doublet_ratio)
    result = RingSet(np.array([r.ring_nr for r in rings], dtype=np.int64),
                     np.array([r.hkl for r in rings], dtype=np.int64).reshape(-1, 3), multiplicity,
                     np.array([r.d_angstrom for r in rings], dtype=np.float64), two_theta, radius, line,
                     amplitude, fwhm, cutoff, (radius >= r_min) & (radius <= r_max))
    result = result.select(np.flatnonzero(reach))
    if config.intensity.ring_numbers is not None and not len(result):
        raise SimulationError(f"none of the rings {list(config.intensity.ring_numbers)} reaches the image")
    return result.select(np.argsort(result.radius_um, kind="stable"))


def _arcs_rad(config: SimulationConfig) -> np.ndarray:
    arcs = np.zeros((len(config.intensity.missing_arcs_deg), 2))
    for i, (start, end) in enumerate(config.intensity.missing_arcs_deg):
        arcs[i] = (math.radians(start) % (2 * math.pi), math.radians(end - start) % (2 * math.pi))
    return arcs


def pixel_rule(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Nodes (pixel units, on [−½, ½]) and weights (sum 1) of the n-point Gauss–Legendre rule."""
    nodes, weights = np.polynomial.legendre.leggauss(int(n))
    return 0.5 * nodes, 0.5 * weights


def render_expected(config: SimulationConfig, rings: RingSet | None = None, *, engine: str = "numba",
                    rows: slice | None = None, adaptive: bool = True) -> np.ndarray:
    """Expected counts per pixel of one frame, without noise, dark, gaps or bad pixels.

    Parameters
    ----------
    config : SimulationConfig
    rings : RingSet, optional
        Rings to draw (default :func:`ring_set` of ``config``).
    engine : {"numba", "numpy"}
        ``"numba"``: the parallel kernel ``render_kernels.render_rows``; ``"numpy"``: a slow vectorised
        reference path through :func:`midas_ref.geometry.pixel_to_r_eta` (small images, tests).
    rows : slice, optional
        Render only these image rows (step 1).
    adaptive : bool
        numba engine: integrate pixels away from every ring core with the 2 × 2 or the 1-point rule
        (default; zones in :mod:`simulate.config`); False = the full n × n rule everywhere (the numpy engine
        always uses the full rule).

    Returns
    -------
    ndarray of float64, shape (n_rows, NY)
        Mean over the pixel's area of ``Σ_k A_k·pV_k(r − R_k)·f(η) + b0 + b1·r/px`` by an n × n
        Gauss–Legendre rule (n = ``config.supersample``).

    Notes
    -----
    The ring profile and azimuthal factor are those of :class:`~simulate.config.PeakShape` and
    :class:`~simulate.config.RingIntensity`; docs/simulate.md gives the equations and the measured accuracy.
    """
    rings = ring_set(config) if rings is None else rings
    geom = config.geometry
    n_rows, n_cols = geom.shape
    start, stop, step = (rows or slice(None)).indices(n_rows)
    if step != 1:
        raise ValueError("rows must be a contiguous slice")
    out = np.empty((max(stop - start, 0), n_cols))
    if engine == "numba":
        _render_numba(config, rings, start, out, adaptive)
    elif engine == "numpy":
        _render_numpy(config, rings, start, out)
    else:
        raise ValueError(f"engine must be 'numba' or 'numpy', got {engine!r}")
    return out


def pseudo_voigt(x_um, fwhm_um, lorentz_fraction: float):
    """Peak-height-normalised pseudo-Voigt μ/(1 + 4x²/Γ²) + (1 − μ)·exp(−4 ln2·x²/Γ²) (no truncation)."""
    u = 4.0 * np.square(np.asarray(x_um, dtype=np.float64) / fwhm_um)
    mu = float(lorentz_fraction)
    return mu / (1.0 + u) + (1.0 - mu) * np.exp(-math.log(2.0) * np.minimum(u, 1e4))


def r_gradient_bound(config: SimulationConfig) -> float:
    """Upper bound of |∇r| over the image, µm of r per pixel (5 % above the largest sampled value).

    Sampled by central differences (±¼ px, inside one pixel and hence one panel) on a 65 × 65 grid
    covering the image; r varies on the scale of the detector, so the margin covers the unsampled pixels.
    """
    geom = config.geometry
    rows, cols = geom.shape
    y, z = np.meshgrid(np.linspace(0, cols - 1, 65), np.linspace(0, rows - 1, 65))
    y, z = y.ravel(), z.ravel()
    d = 0.25
    r, _ = _geometry.pixel_to_r_eta(np.concatenate([y + d, y - d, y, y]), np.concatenate([z, z, z + d, z - d]),
                                    geom, config.panels)
    n = len(y)
    grad = np.hypot(r[:n] - r[n:2 * n], r[2 * n:3 * n] - r[3 * n:]) / (2 * d)
    return 1.05 * float(np.nanmax(grad))


def _ring_args(config: SimulationConfig, rings: RingSet, grad_um: float):
    """Kernel arrays: radius, scale A/(1 − p_cut), floor p_cut, 4/Γ², cut-off, near and middle zone."""
    fwhm = np.asarray(rings.fwhm_um, dtype=np.float64)
    floor = pseudo_voigt(rings.cutoff_um, fwhm, config.peak.lorentz_fraction)
    return tuple(np.ascontiguousarray(a, dtype=np.float64) for a in (
        rings.radius_um, rings.amplitude_counts / (1.0 - floor), floor, 4.0 / fwhm ** 2, rings.cutoff_um,
        NEAR_ZONE_FWHM * fwhm + NEAR_ZONE_PX * grad_um,
        MID_ZONE_FWHM * fwhm + MID_ZONE_PX * grad_um))


def _eta_args(config: SimulationConfig):
    inten = config.intensity
    use_eta = bool(inten.texture_amplitude != 0 or inten.missing_arcs_deg)
    return (use_eta, float(inten.texture_amplitude), float(inten.texture_order),
            math.radians(inten.texture_phase_deg), _arcs_rad(config))


def _render_numba(config: SimulationConfig, rings: RingSet, row0: int, out: np.ndarray, adaptive: bool) -> None:
    from .render_kernels import render_rows

    g = _geometry.kernel_vector(config.geometry)
    col_to_iy, row_to_iz, n_z, table = kernel_tables(config.panels, config.geometry.shape)
    grad = r_gradient_bound(config) if adaptive else config.geometry.px_um
    ring_r, ring_scale, ring_floor, ring_k, ring_cut, ring_near, ring_mid = _ring_args(config, rings, grad)
    cut_max = float(ring_cut.max()) if len(ring_cut) else 0.0
    nodes, weights = pixel_rule(config.supersample)
    mid_nodes, mid_weights = pixel_rule(min(2, config.supersample))
    bg_slope_per_um = config.response.background_slope_per_px / config.geometry.px_um
    render_rows(g, col_to_iy, row_to_iz, n_z, table, ring_r, ring_scale, ring_floor, ring_k, ring_cut, ring_near,
                ring_mid, cut_max, grad * math.sqrt(0.5), float(config.peak.lorentz_fraction), nodes, weights,
                mid_nodes, mid_weights, bool(adaptive), float(config.response.background_counts),
                float(bg_slope_per_um), *_eta_args(config), row0, out)


def _render_numpy(config: SimulationConfig, rings: RingSet, row0: int, out: np.ndarray) -> None:
    ring_r, ring_scale, ring_floor, _, ring_cut, _, _ = _ring_args(config, rings, config.geometry.px_um)
    use_eta, tex_amp, tex_order, tex_phase, arcs = _eta_args(config)
    mu = config.peak.lorentz_fraction
    bg0 = config.response.background_counts
    bg_slope = config.response.background_slope_per_px / config.geometry.px_um
    nodes, weights = pixel_rule(config.supersample)
    w2 = weights[None, :, None, None] * weights[None, None, None, :]
    n_rows, n_cols = out.shape
    for block in range(0, n_rows, _NUMPY_BLOCK_ROWS):
        iz = np.arange(row0 + block, row0 + min(block + _NUMPY_BLOCK_ROWS, n_rows), dtype=np.float64)
        iy = np.arange(n_cols, dtype=np.float64)
        # sample grid (rows, node_z, cols, node_y)
        shape = (len(iz), len(nodes), n_cols, len(nodes))
        z = np.broadcast_to(iz[:, None, None, None] + nodes[None, :, None, None], shape)
        y = np.broadcast_to(iy[None, None, :, None] + nodes[None, None, None, :], shape)
        r, eta_deg = _geometry.pixel_to_r_eta(y, z, config.geometry, config.panels)
        value = np.zeros_like(r)
        for k in range(len(ring_r)):
            x = r - ring_r[k]
            profile = pseudo_voigt(x, rings.fwhm_um[k], mu) - ring_floor[k]
            value += np.where(np.abs(x) < ring_cut[k], ring_scale[k] * profile, 0.0)
        if use_eta:
            eta = np.radians(eta_deg)
            factor = 1.0 + tex_amp * np.cos(tex_order * (eta - tex_phase))
            for start, width in arcs:
                factor = np.where(np.mod(eta - start, 2 * np.pi) <= width, 0.0, factor)
            value *= factor
        bg = np.maximum(bg0 + bg_slope * (w2 * r).sum(axis=(1, 3)), 0.0)
        out[block:block + len(iz)] = (w2 * value).sum(axis=(1, 3)) + bg
