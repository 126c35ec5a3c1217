"""Multi-panel refinement: the global geometry and per-panel corrections together (CalibrantPanelShiftsOMP).

Manual §7 and spec legacy_engine.md §3. Each iteration

1. extracts the ring peaks **in the frame of the current geometry and panel corrections** (so a point never
   mixes two panels' offsets and the answer does not depend on the start — the legacy ``ReFitPeaks 0``
   default re-used the first iteration's peaks);
2. fits the global geometry (Lsd, BC, ty, tz, p0–p3, p4 with ``DistortionOrder 6``) and, for every panel
   (``PanelGauge average``, the default: corrections constrained to the average detector, docs/geometry.md
   §6.2) or every panel except ``FixPanelID`` (``PanelGauge fixed``, the legacy gauge), dY, dZ (``tolShifts``), dTheta (``tolRotation`` > 0), dLsd (``PerPanelLsd``) and
   dP2 (``PerPanelDistortion``) — least squares with a block-structured Jacobian
   (:func:`midas_ref.refine.fit_geometry`) or the legacy Nelder–Mead/Subplex on Σ|ε|;
3. clips outlier points (robust 5σ) and refits, then reports the strain statistics with the legacy
   ``MultFactor``/``OutlierIterations`` mean-multiple clipping.

The iteration with the lowest mean strain is kept (``nIterations``, best-iteration tracking). Doublets: rings
closer than ``DoubletSeparation`` pixels are always fitted jointly (dual pseudo-Voigt, shared width, shape
and background — :func:`midas_ref.profiles.extract_peaks` fits overlapping windows together); a second
wavelength (``DoubletWavelength``, a midas-ref key, e.g. Kα2) adds its rings to the peak model, each with its
own 2θ, so the satellite neither biases the main peak nor goes unused.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields, replace

import numpy as np

from .detector import Geometry, default_rho_d_um
from .errors import CalibrationError
from .panels import Panels, panel_index_map, point_panel_ids
from .profiles import PeakPoints, extract_peaks
from .refine import FREE_DEFAULT, PanelFreedom, Tolerances, fit_geometry, point_strain
from .rings import Ring
from .uncertainty import point_sigma_strain, point_weights, systematic_variance
from .strain import (PANEL_CONVERGED_STRAIN_CHANGE, PANEL_SEM_FRACTION, clip_outliers, emit_progress,
                     legacy_strain_statistics, strain_change_tolerance)

__all__ = ["PanelSettings", "PanelIteration", "PanelResult", "refine_panels", "extract_panel_peaks"]


@dataclass(frozen=True)
class PanelSettings:
    """Options of :func:`refine_panels` (parameter-file keys of manual §7; legacy defaults).

    Attributes
    ----------
    n_iterations : int
        ``nIterations``: at most this many extraction + fit cycles (fewer once the model stops moving the
        points); the one with the lowest mean strain among those that kept ≥ 90 % of the points is kept.
    freedom : PanelFreedom
        Which panel corrections are refined (``FixPanelID``, ``tolShifts``, ``tolRotation``, ``PerPanelLsd``
        / ``tolLsdPanel``, ``PerPanelDistortion`` / ``tolP2Panel``, ``MinIndicesForFit``).
    tolerances : Tolerances
        Global search half-widths (``tolLsd``, ``tolBC``, ``tolTilts``, ``tolP*``).
    distortion_order : {4, 6}
        ``DistortionOrder``: 6 also refines p4 (ρ⁶), within ``tolerances.p4``.
    eta_bin_deg : float
        ``EtaBinSize``, degrees.
    half_window_px : float or None
        Half-width of each ring's radial window, pixels (``Width``/px); None = max(5, 2.5 × FWHM).
    fwhm_px : float
        Starting peak FWHM, pixels (updated from the fitted peaks after every iteration).
    min_snr : float
        Peaks below ``min_snr`` × residual rms are dropped.
    mult_factor : float
        ``MultFactor``: reported statistics drop points with |ε| > MultFactor × mean |ε|; 0 = no clipping.
    outlier_iterations : int
        ``OutlierIterations``: passes of that clipping, the mean recomputed each pass.
    normalize_ring_weights : bool
        ``NormalizeRingWeights``: each ring weighs the same in the objective.
    weight_by_radius : bool
        ``WeightByRadius``: points weighted by R/R_max.
    doublet_separation_px : float
        ``DoubletSeparation``: rings closer than this (pixels) are fitted jointly; 0 = only when windows overlap.
    optimizer : {"least-squares", "nelder-mead"}
    """

    n_iterations: int = 1
    freedom: PanelFreedom = PanelFreedom()
    tolerances: Tolerances = Tolerances()
    distortion_order: int = 4
    eta_bin_deg: float = 5.0
    half_window_px: float | None = None
    fwhm_px: float = 2.5
    min_snr: float = 3.0
    mult_factor: float = 0.0
    outlier_iterations: int = 1
    normalize_ring_weights: bool = False
    weight_by_radius: bool = False
    doublet_separation_px: float = 0.0
    optimizer: str = "least-squares"

    def __post_init__(self):
        if self.n_iterations < 1:
            raise CalibrationError(f"nIterations must be >= 1, got {self.n_iterations}")
        if self.distortion_order not in (4, 6):
            raise CalibrationError(f"DistortionOrder must be 4 or 6, got {self.distortion_order}")
        if not self.eta_bin_deg > 0:
            raise CalibrationError(f"EtaBinSize must be > 0, got {self.eta_bin_deg}")
        if self.outlier_iterations < 1:
            raise CalibrationError(f"OutlierIterations must be >= 1, got {self.outlier_iterations}")
        if self.optimizer == "nelder-mead" and self.freedom.gauge != "fixed":
            raise CalibrationError("the legacy Nelder–Mead optimiser keeps the fixed panel gauge: use PanelGauge "
                                   "fixed (FixPanelID) with it, or the least-squares optimiser")

    @property
    def free(self) -> tuple[str, ...]:
        """Global parameters refined."""
        return FREE_DEFAULT + (("p4",) if self.distortion_order == 6 else ())


@dataclass(frozen=True)
class PanelIteration:
    """One extraction + fit cycle of :func:`refine_panels`."""

    iteration: int
    n_points: int
    mean_strain: float
    std_strain: float
    geometry: Geometry
    panels: Panels
    n_evaluations: int
    seconds: float


@dataclass(frozen=True)
class PanelResult:
    """Outcome of :func:`refine_panels` (the best iteration).

    Attributes
    ----------
    geometry : Geometry
    panels : Panels
    points : PeakPoints
        Peaks of the best iteration (``points.ring`` indexes ``rings``).
    two_theta_deg : ndarray
        Ideal 2θ of every point's ring (at its own wavelength for doublet rings).
    strain : ndarray
        Signed pseudo-strain at the refined geometry and panels.
    outlier : ndarray of bool
        Points out of the reported statistics (MultFactor clipping, or the fit's robust clipping).
    rings : tuple of Ring
        Rings of the peak model: the calibrant's, then the second wavelength's (``doublet_rings``).
    n_main_rings : int
        How many of ``rings`` belong to the main wavelength.
    mean_strain, std_strain : float
        Mean and population std of |ε| over the inliers.
    best_iteration : int
    iterations : tuple of PanelIteration
    std_errors : dict
        Standard error of every refined parameter (least squares only), same units as the parameter.
    poorly_constrained : tuple of int
        Panels whose shift standard error exceeds :data:`POORLY_CONSTRAINED_PX` (their corrections rest
        mostly on the weak prior toward the start; do not trust them).
    unrefined : tuple of int
        Movable panels left at their start corrections: fewer than ``MinIndicesForFit`` points (e.g. no ring
        crosses them).
    at_bound : tuple of str
        Refined parameters that ended on their search bound (``"panel 3 dtheta_deg"``, ``"lsd_um"``…): the
        tolerance was too tight, or the parameter ran along a direction the rings cannot see. Reported by
        :func:`midas_ref.outputs.panel_report_text` as one WARNING line each.
    gauge : str
        ``PanelGauge`` of the run (``average``, ``mean`` or ``fixed``).
    gauge_forms : dict
        ``average``/``mean``: the constrained panels, the gauge's linear forms and their values at the
        result (:attr:`midas_ref.refine.FitResult.gauge`).
    held : tuple of str
        Combinations of panel corrections the rings do not determine (e.g. a panel's rotation about its
        centre against its tangential shift), held at their start values (:attr:`midas_ref.refine.FitResult.held`).
    timings : dict
        Seconds: extraction, fit.
    """

    geometry: Geometry
    panels: Panels
    points: PeakPoints
    two_theta_deg: np.ndarray
    strain: np.ndarray
    outlier: np.ndarray
    rings: tuple[Ring, ...]
    n_main_rings: int
    mean_strain: float
    std_strain: float
    best_iteration: int
    iterations: tuple[PanelIteration, ...]
    std_errors: dict = field(default_factory=dict)
    poorly_constrained: tuple[int, ...] = ()
    unrefined: tuple[int, ...] = ()
    timings: dict = field(default_factory=dict)
    at_bound: tuple[str, ...] = ()
    gauge: str = "fixed"
    gauge_forms: dict = field(default_factory=dict)
    held: tuple[str, ...] = ()


#: A panel whose dY or dZ standard error is above this (pixels) is reported as poorly constrained.
POORLY_CONSTRAINED_PX = 0.05


def extract_panel_peaks(image, mask, geometry: Geometry, panels: Panels, ring_r_um, **options) -> PeakPoints:
    """:func:`~midas_ref.profiles.extract_peaks` panel by panel: every point comes from the pixels of one panel.

    An η bin that straddles two panels would otherwise hold two copies of the ring, offset by the panels'
    relative misplacement as long as the model has not caught up with it: the fitted peak then lies between
    them and is wrong in *any* frame, so iterating cannot remove the bias. Within one panel the ring is only
    displaced, and the fitted peak mapped back with the same frame lands on the real ring. Points whose
    position falls outside their panel (a peak at the very edge) are dropped.
    """
    ids = panel_index_map(panels.layout, image.shape)
    base = np.zeros(image.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    parts = []
    for p in range(panels.layout.n_panels):
        own = ids == p
        if not (own & ~base).any():
            continue
        pts = extract_peaks(image, base | ~own, geometry, ring_r_um, panels=panels, precise=True, **options)
        parts.append(pts.select(point_panel_ids(pts.y_px, pts.z_px, panels) == p))
    if not parts:
        return extract_peaks(image, base, geometry, ring_r_um, panels=panels, precise=True, **options)
    # fits of different panels never share an error: their group ids must not collide
    offset = np.cumsum([0] + [int(pt.group.max()) + 1 if len(pt) else 0 for pt in parts[:-1]])
    parts = [replace(pt, group=pt.group + off) for pt, off in zip(parts, offset)]
    return PeakPoints(**{f.name: np.concatenate([getattr(pt, f.name) for pt in parts]) for f in fields(PeakPoints)})


def _normalised(w: np.ndarray) -> np.ndarray:
    """Weights scaled to mean 1 (the robust loss scale and the panel prior are in strain units)."""
    return w / w.mean()


def _weights(ring_index, r_um, settings: PanelSettings) -> np.ndarray:
    w = np.ones(ring_index.size)
    if settings.normalize_ring_weights:
        w /= np.bincount(ring_index)[ring_index]
    if settings.weight_by_radius:
        w *= r_um / r_um.max()
    return w / w.mean()


def refine_panels(image: np.ndarray, mask: np.ndarray | None, geometry: Geometry, panels: Panels, rings, *,
                  settings: PanelSettings = PanelSettings(), doublet_rings=(), progress=None) -> PanelResult:
    """Refine the global geometry together with per-panel corrections.

    Parameters
    ----------
    image : ndarray (rows, cols)
        Dark-subtracted, ImTransOpt-applied image.
    mask : ndarray of bool or None
        True = ignore (gaps, bad pixels).
    geometry : Geometry
        Start geometry (e.g. from ``midas-ref calibrate``).
    panels : Panels
        Panel layout and start corrections (zeros, or a previous ``PanelShiftsFile``).
    rings : sequence of Ring
        Calibrant rings (RingsToExclude removed).
    settings : PanelSettings
    doublet_rings : sequence of Ring
        Rings of a second wavelength present in the image (Kα2): modelled and fitted with their own 2θ.
    progress : callable(event, info), optional
        ``("iteration", {"record": PanelIteration})`` after every cycle.

    Returns
    -------
    PanelResult
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape != geometry.shape:
        raise CalibrationError(f"image shape {image.shape} differs from NrPixelsZ × NrPixelsY = {geometry.shape}")
    if not isinstance(panels, Panels):
        raise CalibrationError("panel refinement needs a panel layout (NPanelsY, NPanelsZ, PanelSizeY/Z)")
    if not 0 <= settings.freedom.fix_panel_id < panels.layout.n_panels:
        raise CalibrationError(f"FixPanelID {settings.freedom.fix_panel_id} is not a panel id "
                               f"(0…{panels.layout.n_panels - 1})")
    if mask is not None and mask.all():
        raise CalibrationError("every pixel is masked")
    all_rings = tuple(rings) + tuple(doublet_rings)
    if not rings:
        raise CalibrationError("the ring table is empty (all rings excluded?)")
    tth_all = np.radians([ring.two_theta_deg for ring in all_rings])
    geom, pan = geometry, panels
    fwhm = settings.fwhm_px
    # one window for every cycle (from the starting FWHM), so the cycles fit the same peaks and their mean
    # strains compare; a panel may sit up to tolShifts off its modelled place: its peaks must still fall
    # well inside
    half_window = settings.half_window_px or max(5.0, 2.5 * fwhm)
    half_window = max(half_window, settings.freedom.shifts_px + 2.5 * fwhm)
    if settings.doublet_separation_px > 0:
        # overlapping windows are fitted jointly: make every pair closer than the separation overlap
        half_window = max(half_window, 0.5 * settings.doublet_separation_px + fwhm)
    timings = {"extraction": 0.0, "fit": 0.0}
    records, candidates, prev, noise, systematic_var = [], [], None, None, None
    for iteration in range(1, settings.n_iterations + 1):
        t_it = time.perf_counter()
        max_r = default_rho_d_um(geom.bc_y_px, geom.bc_z_px, geom.n_pixels_y, geom.n_pixels_z, geom.px_um)
        on = np.flatnonzero((geom.lsd_um * np.tan(tth_all) < max_r) & (tth_all > 0))
        if on.size < 2:
            raise CalibrationError(f"fewer than two rings fall on the detector at Lsd {geom.lsd_um:.0f} µm "
                                   "(wrong wavelength, lattice or distance?)")
        t0 = time.perf_counter()
        points = extract_panel_peaks(image, mask, geom, pan, geom.lsd_um * np.tan(tth_all[on]),
                                     eta_bin_deg=settings.eta_bin_deg, half_window_px=half_window, fwhm_px=fwhm,
                                     min_snr=settings.min_snr)
        points = replace(points, ring=on[points.ring])
        timings["extraction"] += time.perf_counter() - t0
        if len(points) < 20:
            raise CalibrationError(f"no rings found: only {len(points)} ring peaks could be fitted "
                                   f"at iteration {iteration}")
        tt = np.degrees(tth_all[points.ring])
        legacy_w = _weights(points.ring, points.r_um, settings)
        sigma = point_sigma_strain(points)
        # first fit: the error model's weights with the previous cycle's systematic floor (equal weights in the
        # first cycle, when the floor is not known yet and the residuals are dominated by the panels' offsets)
        w = legacy_w if systematic_var is None else _normalised(legacy_w * point_weights(sigma, points.group,
                                                                                          systematic_var))
        t0 = time.perf_counter()
        fit_args = dict(panels=pan, free=settings.free, tolerances=settings.tolerances,
                        panel_freedom=settings.freedom, panel_anchor=panels, method=settings.optimizer,
                        max_evaluations=50000 if settings.optimizer == "nelder-mead" else 2000)
        # the weak prior on panel corrections is worth one point at the residual noise level (of the previous
        # cycle, then of this cycle's first fit): real data's systematic residuals must not drag a null mode
        fit = fit_geometry(points.y_px, points.z_px, tt, geom, weights=w, panel_prior_strain=noise, **fit_args)
        # robust refit instead of dropping points: with free panel shifts the global parameters rest on the
        # fixed panel's few points, which a hard clip after a poor first fit can remove wholesale
        keep = clip_outliers(fit.strain)
        res_sigma = 1.4826 * float(np.median(np.abs(fit.strain[keep] - np.median(fit.strain[keep]))))
        noise = res_sigma
        n_params = len(fit.labels)
        systematic_var = systematic_variance(fit.strain[keep], sigma[keep], points.group[keep], n_params)
        w = _normalised(legacy_w * point_weights(sigma, points.group, systematic_var))
        if settings.optimizer == "least-squares":
            fit = fit_geometry(points.y_px, points.z_px, tt, fit.geometry, weights=w,
                               robust_scale=max(3.0 * res_sigma, 1e-8), panel_prior_strain=res_sigma,
                               error_model=(sigma, points.group, systematic_var), **dict(fit_args, panels=fit.panels))
            keep = clip_outliers(fit.strain)
        else:
            fit = fit_geometry(points.y_px[keep], points.z_px[keep], tt[keep], fit.geometry, weights=w[keep],
                               panel_prior_strain=res_sigma, error_model=(sigma[keep], points.group[keep],
                                                                          systematic_var),
                               **dict(fit_args, panels=fit.panels))
        timings["fit"] += time.perf_counter() - t0
        geom, pan = fit.geometry, fit.panels
        strain = point_strain(points.y_px, points.z_px, np.tan(np.radians(tt)), geom, pan)
        if settings.mult_factor > 0:
            inl, mean, std = legacy_strain_statistics(np.abs(strain), settings.mult_factor,
                                                      settings.outlier_iterations)
        else:
            inl = keep & np.isfinite(strain)
            mean, std = float(np.abs(strain[inl]).mean()), float(np.abs(strain[inl]).std())
        fwhm = float(np.median(points.fwhm_px)) if len(points) else fwhm
        rec = PanelIteration(iteration, int(inl.sum()), mean, std, geom, pan, fit.n_evaluations,
                             time.perf_counter() - t_it)
        records.append(rec)
        emit_progress(progress, "iteration", record=rec)
        candidates.append((rec, points, tt, strain, ~inl, fit))
        if prev is not None:
            # converged when the new model moves the points by less than a fraction of their noise
            moved = strain - point_strain(points.y_px, points.z_px, np.tan(np.radians(tt)), *prev)
            moved = moved[inl & np.isfinite(moved)]
            change = float(np.sqrt(np.mean(moved ** 2))) if moved.size else 0.0
            if change < strain_change_tolerance(std, int(inl.sum()), floor=PANEL_CONVERGED_STRAIN_CHANGE,
                                                fraction=PANEL_SEM_FRACTION):
                break
        prev = (geom, pan)
    # best = lowest mean strain (nIterations), among iterations that kept most of the points: a mean over a
    # few easy peaks (an early pass with windows still off the rings) is not better, only smaller
    n_max = max(c[0].n_points for c in candidates)
    rec, points, tt, strain, outlier, fit = min((c for c in candidates if c[0].n_points >= 0.9 * n_max),
                                                key=lambda c: c[0].mean_strain)
    std_errors = dict(fit.std_errors)
    poorly = sorted({int(label.split()[1]) for label, sigma in std_errors.items()
                     if label.startswith("panel ") and label.endswith(("dy_px", "dz_px"))
                     and sigma > POORLY_CONSTRAINED_PX})
    kinds = settings.freedom.kinds()
    fixed = settings.freedom.fix_panel_id if settings.freedom.gauge == "fixed" else -1
    unrefined = tuple(p for p in range(panels.layout.n_panels) if kinds and p != fixed
                      and f"panel {p} {kinds[0][0]}" not in std_errors)
    return PanelResult(rec.geometry, rec.panels, points, tt, strain, outlier, all_rings, len(tuple(rings)),
                       rec.mean_strain, rec.std_strain, rec.iteration, tuple(records), std_errors,
                       tuple(poorly), unrefined, timings, tuple(fit.at_bound), settings.freedom.gauge,
                       dict(fit.gauge), tuple(fit.held))
