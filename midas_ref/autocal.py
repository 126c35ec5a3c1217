"""The AutoCalibrate pipeline: guesses → iterative peak extraction and geometry fit → ring rejection.

``calibrate`` is the library form of ``midas-ref calibrate`` (AutoCalibrateZarr + CalibrantOMP). Steps:

1. background (block-median, :func:`~midas_ref.preprocess.median_background`) unless ``no_median``;
   threshold → binary ring image;
2. beam centre: from ring arcs (no guess) and/or the sharpness search around the guess
   (:mod:`midas_ref.guess`); Lsd from the detected ring radii matched to the ring table;
3. refinement loop: every iteration re-extracts the ring peaks **in the frame of the latest geometry**
   (so the answer does not depend on the start), fits the geometry with outlier points clipped, and
   frees parameters in stages (Lsd + BC → + tilts → + distortion) so a poor start cannot send the
   distortion terms astray. Unless told otherwise (``select_distortion``), the first distortion fit starts
   from every term of the order (p0, p1/p3, p2; p4 with DistortionOrder 6) and keeps those the points support
   (:func:`midas_ref.model_select.select_distortion_terms`: an F-test *and* a comparison with the systematic
   residual level); the choice is checked again on the converged points, and revised once if they disagree;
4. ring rejection (MultFactor): a ring is dropped from the geometry fit when its mean |strain| exceeds
   ``MultFactor`` × the median ring's, exceeds ``StoppingStrain`` (a ring already within the target is
   fine), *and* its mean offset is significant (> 4 standard errors) — the legacy rule alone kept dropping
   good rings from a tight distribution (legacy/README.md). Rejected rings stay in the peak model, so
   their intensity never leaks into a neighbour's fit;
5. stop when the geometry no longer moves the points (RMS strain change) by more than the larger of
   1e-7 and half the statistical uncertainty of the mean strain (``strain.AUTOCAL_*``; ``midas_ref.strain``
   says why panel_refine's rule is stricter) — real detectors have systematic residuals that make the point
   set flicker between nearly identical solutions — or at the iteration cap, with an explicit status. A
   converged run whose mean strain stays above ``StoppingStrain`` is reported with a warning (the geometry
   is still the best the model can do); runs that do not converge, end on a search bound or lose their rings
   FAIL and produce no refined parameters.

Library code never prints: progress goes through the optional ``progress(event, info)`` callback.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np

from . import guess as _guess
from .detector import Geometry, default_rho_d_um
from .errors import CalibrationError
from .model_select import DISTORTION_TERMS, DistortionSelection, select_distortion_terms, terms_text
from .panels import Panels
from .preprocess import median_background, threshold_image
from .profiles import PeakPoints, extract_peaks
from .refine import FREE_DEFAULT, Tolerances, fit_geometry, point_strain, refined_parameters
from .rings import Ring
from .uncertainty import point_sigma_strain, point_weights, systematic_variance
from .verdict import Verdict
from .strain import (AUTOCAL_CONVERGED_STRAIN_CHANGE, AUTOCAL_SEM_FRACTION, clip_outliers, emit_progress,
                     ring_statistics, strain_change_tolerance)

__all__ = ["CalibrationSettings", "IterationRecord", "CalibrationResult", "calibrate"]

#: A -BCGuess is refused when the centre found around it lies farther than this (px) from where the image's
#: ring arcs point, and at least :data:`GUESS_CHECK_MIN_ARCS` arcs agree on that: the search around the guess
#: reaches ~47 px and the first fits move BC by at most tolBC (20 px) each, so such a start ends on the
#: wrong rings; a generous margin, since a correct guess lands within a few px of the arcs' centre.
GUESS_MISMATCH_PX = 100.0
GUESS_CHECK_MIN_ARCS = 3
#: Stages of freed parameters; the last one gains p4 when DistortionOrder is 6.
STAGES = (("lsd_um", "bc_y_px", "bc_z_px"),
          ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg"),
          FREE_DEFAULT)


@dataclass(frozen=True)
class CalibrationSettings:
    """Options of :func:`calibrate` (the ``midas-ref calibrate`` flags, legacy defaults).

    Attributes
    ----------
    eta_bin_deg : float
        Azimuthal bin (``-EtaBinSize``), degrees.
    mult_factor : float
        Ring rejection factor (``-MultFactor``).
    stopping_strain : float
        ``-StoppingStrain``: a converged calibration whose final mean |strain| is above this is reported with
        a warning (the geometry is still the best the model can do); rings are rejected only while above it.
    first_ring_nr : int
        Lowest ring number allowed as a match for the innermost detected ring (``-FirstRingNr``).
    lsd_guess_um : float or None
        ``-LsdGuess``; the distance search is centred on it (within ×0.7–1.43). None: 1 m, search 0.05–5 m.
    bc_guess_px : (float, float) or None
        ``-BCGuess Y Z``; None → from ring arcs.
    threshold : float
        ``-Threshold`` (0 = automatic).
    no_median : bool
        ``-NoMedian 1``: no background subtraction before thresholding.
    max_iterations : int
        Cap on extraction + fit iterations (the legacy loop had none).
    optimizer : {"least-squares", "nelder-mead"}
    half_window_px : float or None
        Radial half-window per ring; None → ``max(5, 2.5·FWHM)`` px from the detected peak width (neighbours
        reaching into it widen it, see profiles_kernels).
    tolerances : Tolerances
    distortion_order : {4, 6}
        With ``select_distortion`` False: 6 adds p4 (ρ⁶) to the fit.
    fit_distortion : bool
        False keeps p0–p4 at their start values.
    select_distortion : bool
        True (default): the distortion stage starts from every term of ``distortion_order`` whose tolerance is
        non-zero (p0, p1 with p3, p2; p4 only with order 6) and keeps only those the ring points support
        (:func:`midas_ref.model_select.select_distortion_terms`); dropped terms keep their start values.
        False: p0–p3 (and p4 with ``distortion_order`` 6) are fitted as the tolerances say. ``midas-ref
        calibrate`` sets it False when the parameter file gives ``tolP``, ``tolP0``–``tolP4`` or
        ``DistortionOrder`` (:func:`midas_ref.inputs.calibration_inputs`).
    min_snr : float
        Peaks below this height / noise ratio are ignored.
    rings_to_exclude : tuple of int
        ``RingsToExclude``: ring numbers kept out of the geometry fit (still modelled in the peak fits).
    """

    eta_bin_deg: float = 5.0
    mult_factor: float = 2.5
    stopping_strain: float = 4e-5
    first_ring_nr: int = 1
    lsd_guess_um: float | None = None
    bc_guess_px: tuple[float, float] | None = None
    threshold: float = 0.0
    no_median: bool = False
    max_iterations: int = 40
    optimizer: str = "least-squares"
    half_window_px: float | None = None
    tolerances: Tolerances = Tolerances()
    distortion_order: int = 4
    fit_distortion: bool = True
    select_distortion: bool = True
    min_snr: float = 3.0
    rings_to_exclude: tuple[int, ...] = ()

    def __post_init__(self):
        checks = [(self.eta_bin_deg > 0 and self.eta_bin_deg <= 90, "EtaBinSize must be in (0, 90] degrees",
                   self.eta_bin_deg),
                  (self.mult_factor > 0, "MultFactor must be > 0", self.mult_factor),
                  (self.stopping_strain > 0, "StoppingStrain must be > 0", self.stopping_strain),
                  (self.first_ring_nr >= 1, "FirstRingNr must be >= 1", self.first_ring_nr),
                  (self.max_iterations >= 1, "the iteration cap (--max-iterations) must be >= 1", self.max_iterations),
                  (self.optimizer in ("least-squares", "nelder-mead"), "optimizer must be least-squares or nelder-mead",
                   self.optimizer),
                  (self.distortion_order in (4, 6), "DistortionOrder must be 4 or 6", self.distortion_order),
                  (self.lsd_guess_um is None or self.lsd_guess_um > 0, "-LsdGuess must be > 0 µm", self.lsd_guess_um)]
        for ok, message, value in checks:
            if not ok:
                raise CalibrationError(f"{message}, got {value!r}")


@dataclass(frozen=True)
class IterationRecord:
    """One extraction + fit iteration."""

    iteration: int
    stage: int
    n_points: int
    n_rings: int
    mean_strain: float
    std_strain: float
    geometry: Geometry
    excluded_rings: tuple[int, ...]
    seconds: float


@dataclass(frozen=True)
class CalibrationResult:
    """Everything a calibration produced.

    Attributes
    ----------
    status : {"CONVERGED", "FAILED"}
    reason : str
        Why it failed (empty when converged).
    geometry : Geometry
    points : PeakPoints
        Final peak points (extracted with the final geometry's predecessor).
    strain : ndarray
        Signed pseudo-strain ``1 − R/R_ideal`` of every point at the final geometry.
    outlier : ndarray of bool
        Points left out of the final fit.
    rings : tuple of Ring
        Rings considered (after RingsToExclude, within the detector).
    excluded_rings : tuple of int
        Ring numbers left out of the geometry fit: ``RingsToExclude`` first, then those rejected by the
        MultFactor rule.
    mean_strain, std_strain : float
        Mean and population std of |strain| over the inlier points.
    iterations : tuple of IterationRecord
    timings : dict
        Seconds per stage: background, guess, extraction, fit (the geometry fits of the loop), selection (the
        fits of the distortion-term selection).
    guess : dict
        How the start was found (centre, distance, peaks…).
    background, binary : ndarray or None
        For plots / the HDF5 dump.
    threshold : float
    warnings : tuple of str
        Things the user should know about a converged result (e.g. strain above StoppingStrain).
    parameter_labels : tuple of str
        The refined parameters of the final fit (``FitResult.labels``: the distortion pair p1/p3 as
        ``"p1 cos p3"``, ``"p1 sin p3"``).
    covariance : ndarray or None
        Their covariance (order of ``parameter_labels``; units of the Geometry fields), from the points'
        error model (:mod:`midas_ref.uncertainty`): peak-fit errors, one error per crowded run, the
        systematic floor. None when the run produced no final fit.
    std_errors : dict
        ``label → standard error`` (``inf``: not determined by the data).
    systematic_strain : float
        The systematic floor ``s`` (strain) the final misfit implies beyond the peak-fit errors (0: none).
    distortion_terms : tuple of str
        Distortion terms refined in the final geometry (``"p0"``, ``"p1"`` — with its phase p3 —, ``"p2"``,
        ``"p4"``); the others kept their start values.
    distortion_reason : str
        Why those terms, one line starting with "distortion" or "no distortion": the selection's verdict and
        test, or "fitted as given".
    distortion_selections : tuple of DistortionSelection
        Every selection made (the first distortion fit, the check on the converged points), with its tests.
    """

    status: str
    reason: str
    geometry: Geometry
    points: PeakPoints
    strain: np.ndarray
    outlier: np.ndarray
    rings: tuple[Ring, ...]
    excluded_rings: tuple[int, ...]
    mean_strain: float
    std_strain: float
    iterations: tuple[IterationRecord, ...]
    timings: dict
    guess: dict
    background: np.ndarray | None = field(default=None, repr=False)
    binary: np.ndarray | None = field(default=None, repr=False)
    threshold: float = math.nan
    warnings: tuple[str, ...] = ()
    parameter_labels: tuple[str, ...] = ()
    covariance: np.ndarray | None = field(default=None, repr=False)
    std_errors: dict = field(default_factory=dict)
    systematic_strain: float = math.nan
    distortion_terms: tuple[str, ...] = ()
    distortion_reason: str = ""
    distortion_selections: tuple[DistortionSelection, ...] = ()
    verdict: Verdict | None = None

    @property
    def converged(self) -> bool:
        """True for CONVERGED only (a SUSPECT run is not a converged answer)."""
        return self.status == "CONVERGED"


def initial_geometry(image, mask, base: Geometry, rings, settings: CalibrationSettings, progress=None):
    """Background, threshold, beam centre and distance guesses. Returns (geometry, details, bg, binary, T)."""
    t0 = time.perf_counter()
    if settings.no_median:
        background = np.zeros_like(image)
    else:
        emit_progress(progress, "background")
        background = median_background(image, mask)
    corrected = image - background
    binary, thr = threshold_image(corrected, mask, settings.threshold)
    t_bg = time.perf_counter() - t0
    if binary.sum() < 20:
        raise CalibrationError(f"no rings found: only {int(binary.sum())} pixels above the threshold {thr:.4g}")
    details = {"threshold": thr, "seconds_background": t_bg}
    emit_progress(progress, "guess")
    guess_yz = None
    if settings.bc_guess_px is not None:
        start_yz = guess_yz = tuple(map(float, settings.bc_guess_px))
        search = 40.0
        details["bc_source"] = "BCGuess"
    else:
        arcs = _guess.beam_center_from_arcs(binary)
        if arcs is None:
            raise CalibrationError(_no_arc_message(corrected, mask, base, binary, thr))
        start_yz = arcs[:2]
        search = 10.0
        details["bc_source"] = f"ring arcs ({arcs[2]} arcs)"
        details["bc_arcs"] = arcs[:2]
    cy, cz = _guess.center_by_sharpness(binary, np.where(binary, corrected, 0.0), start_yz, search_px=search)
    details["bc_sharpness"] = (cy, cz)
    if guess_yz is not None:
        arcs = _guess.beam_center_from_arcs(binary)  # only to check the guess
        if (arcs is not None and arcs[2] >= GUESS_CHECK_MIN_ARCS
                and math.hypot(cy - arcs[0], cz - arcs[1]) > GUESS_MISMATCH_PX):
            raise CalibrationError(f"no rings found {_around_guess(guess_yz, arcs)}")
    geom = _centred(base, cy, cz, settings.lsd_guess_um or 1_000_000.0)
    lsd0 = geom.lsd_um
    peaks_r, prominence, fwhm = _guess.ring_peaks(corrected, mask, geom)
    details["n_profile_peaks"] = int(peaks_r.size)
    details["fwhm_px"] = fwhm
    tan_tth = np.tan(np.radians([ring.two_theta_deg for ring in rings]))
    lsd_range = (0.7, 1.43) if settings.lsd_guess_um else (0.05, 5.0)
    # a profile peak about a not yet exact centre is within about a pixel of its ring
    match = _guess.match_lsd(peaks_r, tan_tth, lsd0, lsd_range=lsd_range, abs_tol_um=base.px_um,
                             first_ring=settings.first_ring_nr)
    if match is None and peaks_r.size == 0 and guess_yz is not None:
        raise CalibrationError(f"no rings found {_around_guess(guess_yz, arcs)}")
    if match is None and peaks_r.size < 2:
        where = f"({cy:.1f}, {cz:.1f})" + (f" searched from the beam-centre guess ({guess_yz[0]:g}, {guess_yz[1]:g})"
                                           if guess_yz is not None else "")
        raise CalibrationError(f"found {_rings_text(peaks_r, base.px_um)} in the radial profile about the centre "
                               f"{where}; at least two rings are needed to fix the distance and beam centre: use an "
                               "image with more rings (a shorter distance or a larger detector)"
                               + (", or check -BCGuess (or BC in the parameter file)" if guess_yz is not None else ""))
    if match is None:
        raise CalibrationError(f"no rings found: {peaks_r.size} peaks in the radial profile do not match the "
                               f"calibrant's ring table for a distance within {lsd_range[0]:g}–{lsd_range[1]:g} × "
                               f"{lsd0:.0f} µm (check Wavelength, LatticeConstant, SpaceGroup, -LsdGuess"
                               + (f", -BCGuess ({guess_yz[0]:g}, {guess_yz[1]:g})" if guess_yz is not None else "")
                               + ")")
    details["lsd_match"] = match
    geom = replace(geom, lsd_um=match[0])
    details["seconds_guess"] = time.perf_counter() - t0 - t_bg
    return geom, details, background, binary, thr


def _centred(base: Geometry, bc_y_px: float, bc_z_px: float, lsd_um: float) -> Geometry:
    """``base`` about the beam centre (y, z) at ``lsd_um`` (RhoD: the base's, else the farthest corner)."""
    rho_d = base.rho_d_um if base.rho_d_um else default_rho_d_um(bc_y_px, bc_z_px, base.n_pixels_y,
                                                                 base.n_pixels_z, base.px_um)
    return replace(base, lsd_um=lsd_um, bc_y_px=bc_y_px, bc_z_px=bc_z_px, rho_d_um=rho_d)


def _rings_text(peaks_r_um, px_um: float) -> str:
    """"no ring" / "1 ring (radius ≈ 84 px)" / "3 rings (radii ≈ 84, 97, 137 px)"."""
    radii = ", ".join(f"{r / px_um:.0f}" for r in peaks_r_um)
    if len(peaks_r_um) == 0:
        return "no ring"
    if len(peaks_r_um) == 1:
        return f"1 ring (radius ≈ {radii} px)"
    return f"{len(peaks_r_um)} rings (radii ≈ {radii} px)"


def _around_guess(guess_yz, arcs) -> str:
    """"around the beam-centre guess (Y, Z) …", with where the image's ring arcs point when that is known.

    The guess is ``CalibrationSettings.bc_guess_px``: ``midas-ref calibrate`` fills it from -BCGuess, else
    from the parameter file's BC.
    """
    text = f"around the beam-centre guess ({guess_yz[0]:g}, {guess_yz[1]:g}) (-BCGuess, or BC in the parameter file)"
    if arcs is None:
        return f"{text} — check the guess or leave it out"
    return (f"{text}; the image's ring arcs point to a centre near ({arcs[0]:.0f}, {arcs[1]:.0f}) — check the "
            "guess or leave it out")


def _one_ring_note(ring_of_point) -> str:
    """For a failed run whose peaks (nearly) all lie on one ring: why that cannot work (else "")."""
    if ring_of_point.size == 0:
        return ""
    on_one = int(np.bincount(ring_of_point).max())
    if on_one < 0.9 * ring_of_point.size:
        return ""
    return (f"; {on_one} of the {ring_of_point.size} ring peaks lie on one ring, and at least two rings are needed "
            "to fix the distance and beam centre")


def _no_arc_message(corrected, mask, base: Geometry, binary, thr: float) -> str:
    """Why :func:`~midas_ref.guess.beam_center_from_arcs` found no arc, from what the image does show.

    Thresholded regions that go round a centre but are too wide for arcs are either one ring (two are needed)
    or rings merged / thresholded far into their tails (a -BCGuess at their centre gets past this step). The
    rings are counted in the radial profile about that centre: peaks at least a tenth as significant as the
    strongest (a diagnostic only; weaker ones are the tails' and background's ripples).
    """
    regions = _guess.center_of_round_regions(binary)
    if regions is None:
        return (f"no rings found: no thresholded region looks like a ring arc ({int(binary.sum())} pixels above "
                f"the threshold {thr:.4g}); give -BCGuess or check -Threshold")
    cy, cz, _, rms = regions
    peaks_r, significance, _ = _guess.ring_peaks(corrected, mask, _centred(base, cy, cz, 1_000_000.0))
    peaks_r = peaks_r[significance >= 0.1 * significance.max()] if peaks_r.size else peaks_r
    if peaks_r.size == 1:
        return (f"found {_rings_text(peaks_r, base.px_um)} centred near ({cy:.0f}, {cz:.0f}); at least two rings "
                "are needed to fix the distance and beam centre: use an image with more rings (a shorter distance "
                "or a larger detector)")
    return (f"no rings found: the thresholded rings are too wide to be taken for arcs ({rms:.1f} px rms about "
            f"their circles: neighbouring rings merge, or the threshold {thr:.4g} cuts far into their tails); "
            f"give -BCGuess {cy:.0f} {cz:.0f} (their centre) or raise -Threshold")


def calibrate(image: np.ndarray, mask: np.ndarray | None, base: Geometry, rings, *,
              settings: CalibrationSettings = CalibrationSettings(), panels: Panels | None = None,
              start: Geometry | None = None, progress=None) -> CalibrationResult:
    """Calibrate the detector geometry from one calibrant image.

    Parameters
    ----------
    image : ndarray (rows, cols), float
        Dark-subtracted, ImTransOpt-applied image.
    mask : ndarray of bool or None
        True = ignore.
    base : Geometry
        Detector description (pixel size, size, tx, RhoD if known); Lsd/BC/tilts are guessed unless
        ``start`` is given.
    rings : sequence of Ring
        Calibrant rings (RingsToExclude already removed).
    settings : CalibrationSettings
    panels : Panels, optional
        Fixed panel corrections.
    start : Geometry, optional
        Skip the guesses and start from this geometry.
    progress : callable(event, info), optional

    Returns
    -------
    CalibrationResult
        ``status`` says whether it converged; a failure carries the reason and the last geometry.
    """
    image = np.asarray(image, dtype=np.float64)
    if image.shape != base.shape:
        raise CalibrationError(f"image shape {image.shape} differs from NrPixelsZ × NrPixelsY = {base.shape}")
    if mask is not None and mask.all():
        raise CalibrationError("every pixel is masked")
    if not np.isfinite(image if mask is None else image[~mask]).any():
        raise CalibrationError("the image has no finite unmasked pixel (NaN frame?)")
    rings = tuple(rings)
    if not rings:
        raise CalibrationError("the ring table is empty (all rings excluded?)")
    timings = {"background": 0.0, "guess": 0.0, "extraction": 0.0, "fit": 0.0, "selection": 0.0}
    background = binary = None
    thr = math.nan
    if start is None:
        geom, guess_info, background, binary, thr = initial_geometry(image, mask, base, rings, settings, progress)
        emit_progress(progress, "guessed", guess=guess_info, geometry=geom)
        timings["background"] = guess_info["seconds_background"]
        timings["guess"] = guess_info["seconds_guess"]
        fwhm = guess_info["fwhm_px"]
    else:
        geom, guess_info, fwhm = start, {"bc_source": "start geometry"}, math.nan
    if not math.isfinite(fwhm) or fwhm <= 0:
        fwhm = 3.0
    half_window = settings.half_window_px or max(5.0, 2.5 * fwhm)
    anchor = geom
    base_free = STAGES[1]
    if not settings.fit_distortion:
        candidates, selecting = (), False
    else:
        # the order bounds the candidates (p4, ρ⁶, only with DistortionOrder 6: a free ρ⁶ term also takes up
        # the 2θ pattern a wrong wavelength leaves, which the verdict looks for); the selection then keeps
        # those the points support
        given = FREE_DEFAULT + (("p4",) if settings.distortion_order == 6 else ())
        candidates = tuple(t for t in DISTORTION_TERMS if refined_parameters(DISTORTION_TERMS[t], settings.tolerances)
                           and set(DISTORTION_TERMS[t]) <= set(given))
        selecting = settings.select_distortion and bool(candidates)
    terms = candidates  # the final stage's terms: every candidate until a selection says otherwise

    def final_free(kept) -> tuple[str, ...]:
        names = {name for t in kept for name in DISTORTION_TERMS[t]}
        return base_free + tuple(name for name in FREE_DEFAULT + ("p4",) if name in names and name not in base_free)

    stages = [STAGES[0], STAGES[1], final_free(terms)]
    selections: list[DistortionSelection] = []
    rechecked = False
    model_start = 0  # first record of the final stage's current set of terms

    def select(iteration, y, z, tt_deg, eta, ring_nr, start_geometry):
        t_select = time.perf_counter()
        selection = select_distortion_terms(y, z, tt_deg, eta, ring_nr, start_geometry, base_free=base_free,
                                            candidates=candidates, held=anchor, tolerances=settings.tolerances,
                                            panels=panels, eta_bin_deg=settings.eta_bin_deg)
        selection = replace(selection, iteration=iteration)
        selections.append(selection)
        timings["selection"] += time.perf_counter() - t_select
        return selection
    max_r = default_rho_d_um(geom.bc_y_px, geom.bc_z_px, base.n_pixels_y, base.n_pixels_z, base.px_um)
    tth_all = np.radians([ring.two_theta_deg for ring in rings])
    excluded: list[int] = [int(n) for n in settings.rings_to_exclude]
    records = []
    stage = 0
    status, reason = "FAILED", f"no convergence within {settings.max_iterations} iterations"
    points = fit = keep = None
    systematic_var = 0.0
    for iteration in range(1, settings.max_iterations + 1):
        t_it = time.perf_counter()
        # every ring on the detector is modelled in the peak fits (an excluded ring still shines on its
        # neighbours); exclusion only keeps its points out of the geometry fit
        on = (geom.lsd_um * np.tan(tth_all) < max_r) & (np.tan(tth_all) > 0)
        fit_ring = on & np.array([ring.ring_nr not in excluded for ring in rings])
        if fit_ring.sum() < 2:
            reason = "fewer than two usable rings remain on the detector"
            break
        idx = np.flatnonzero(on)
        t0 = time.perf_counter()
        points = extract_peaks(image, mask, geom, geom.lsd_um * np.tan(tth_all[idx]), panels=panels,
                               eta_bin_deg=settings.eta_bin_deg, half_window_px=half_window, fwhm_px=fwhm,
                               min_snr=settings.min_snr, precise=stage == len(stages) - 1,
                               # crowded rings (dense patterns) only once tilts are known: before that their
                               # positions are off by more than their spacing at large 2θ
                               skip_crowded=stage < len(stages) - 1)
        points = points.select(fit_ring[idx[points.ring]])
        ring_of_point = idx[points.ring]
        timings["extraction"] += time.perf_counter() - t0
        free = stages[stage]
        if len(points) < 3 * len(free):
            reason = (f"no rings found: only {len(points)} ring peaks could be fitted at iteration {iteration} "
                      f"(need {3 * len(free)})")
            keep = np.ones(len(points), dtype=bool)  # the result describes these points, not the previous set
            break
        tt = np.degrees(tth_all[ring_of_point])
        t0, t_selection = time.perf_counter(), timings["selection"]
        # weights from the peak errors, one error per crowded run, and the systematic floor of the last fit
        sigma = point_sigma_strain(points)
        fit = fit_geometry(points.y_px, points.z_px, tt, replace(anchor, **{k: getattr(geom, k) for k in free}),
                           weights=point_weights(sigma, points.group, systematic_var), panels=panels, free=free,
                           tolerances=settings.tolerances, method=settings.optimizer)
        keep = clip_outliers(fit.strain)
        second_start = fit.geometry
        selected_now = None
        if selecting and stage == len(stages) - 1 and not selections:
            # the first distortion fit: which terms do these points support?
            selected_now = select(iteration, points.y_px[keep], points.z_px[keep], tt[keep], points.eta_deg[keep],
                                  ring_of_point[keep], fit.geometry)
            terms = selected_now.terms
            free = stages[-1] = final_free(terms)
            second_start = selected_now.fit.geometry
        error_model = (sigma[keep], points.group[keep], systematic_var)
        fit = fit_geometry(points.y_px[keep], points.z_px[keep], tt[keep], second_start, panels=panels, free=free,
                           tolerances=settings.tolerances, method=settings.optimizer, error_model=error_model)
        systematic_var = systematic_variance(fit.strain, sigma[keep], points.group[keep], len(fit.labels))
        timings["fit"] += time.perf_counter() - t0 - (timings["selection"] - t_selection)
        new = fit.geometry
        tan_tt = np.tan(np.radians(tt))
        s_new = point_strain(points.y_px, points.z_px, tan_tt, new, panels)

        def moved(other):
            """RMS over the points of the strain change between ``other`` and the new geometry."""
            d = s_new - point_strain(points.y_px, points.z_px, tan_tt, other, panels)
            d = d[np.isfinite(d)]
            return float(np.sqrt(np.mean(d * d))) if d.size else 0.0

        change = moved(geom)
        # a short cycle (the point set flickering between nearly equal solutions) counts as settled
        cycle = min((moved(records[k].geometry) for k in range(max(len(records) - 4, model_start), len(records) - 1)
                     if records[k].stage == stage), default=math.inf)
        geom = new
        s_all = point_strain(points.y_px, points.z_px, np.tan(np.radians(tt)), geom, panels)
        inl = np.abs(s_all[keep])
        records.append(IterationRecord(iteration, stage, int(keep.sum()), int(np.unique(ring_of_point).size),
                                       float(inl.mean()), float(inl.std()), geom, tuple(excluded),
                                       time.perf_counter() - t_it))
        emit_progress(progress, "iteration", record=records[-1], change=change)
        if selected_now is not None:
            emit_progress(progress, "distortion", selection=selected_now)
        if stage < len(stages) - 1:
            # early stages only bring the windows onto the rings: one pass each
            stage += 1
            continue
        tolerance = strain_change_tolerance(float(inl.std()), inl.size, floor=AUTOCAL_CONVERGED_STRAIN_CHANGE,
                                            fraction=AUTOCAL_SEM_FRACTION)
        if min(change, cycle) >= tolerance:
            continue
        # converged in the final stage: ring rejection (MultFactor), then done when nothing new is rejected
        count, mean, mean_abs, sem = ring_statistics(ring_of_point[keep], s_all[keep], len(rings))
        present = count > 0
        median = float(np.median(mean_abs[present]))
        bad = present & (mean_abs > settings.mult_factor * median) & (mean_abs > settings.stopping_strain) & (
            np.abs(mean) > 4 * sem)
        new_bad = [rings[k].ring_nr for k in np.flatnonzero(bad) if rings[k].ring_nr not in excluded]
        if new_bad:
            excluded.extend(new_bad)
            emit_progress(progress, "rings_rejected", rings=tuple(new_bad))
            continue
        if selecting and not rechecked:
            # the choice made on the first distortion fit's points, checked on the converged ones (once: a
            # revision is final)
            rechecked = True
            check = select(iteration, points.y_px[keep], points.z_px[keep], tt[keep], points.eta_deg[keep],
                           ring_of_point[keep], geom)
            emit_progress(progress, "distortion", selection=check)
            if set(check.terms) != set(terms):
                terms = check.terms
                stages[-1] = final_free(terms)
                geom = replace(anchor, **{k: getattr(check.fit.geometry, k) for k in stages[-1]})
                model_start = len(records)
                continue
        status, reason = "CONVERGED", ""
        break
    if points is None or fit is None:
        message = reason if reason else "calibration produced no ring points"
        if guess_info.get("bc_source") == "BCGuess":
            arcs = _guess.beam_center_from_arcs(binary) if binary is not None else None
            message += f", starting {_around_guess(settings.bc_guess_px, arcs)}"
        raise CalibrationError(message)
    tt = np.degrees(tth_all[idx[points.ring]])
    at_bound = fit.at_bound
    if status == "CONVERGED":
        # the covariance with the floor this fit's own residuals imply (each iteration's lags one behind)
        error_model = (point_sigma_strain(points)[keep], points.group[keep], systematic_var)
        fit = fit_geometry(points.y_px[keep], points.z_px[keep], tt[keep], geom, panels=panels, free=free,
                           tolerances=settings.tolerances, method=settings.optimizer, error_model=error_model)
        geom = fit.geometry
    strain = point_strain(points.y_px, points.z_px, np.tan(np.radians(tt)), geom, panels)
    inl = np.abs(strain[keep])
    mean_strain, std_strain = float(inl.mean()), float(inl.std())
    warnings = []
    if status == "CONVERGED" and mean_strain > settings.stopping_strain:
        warnings.append(f"mean strain {mean_strain:.3g} is above StoppingStrain {settings.stopping_strain:.3g}: "
                        "the geometry converged, but the detector shows effects the model lacks (panels, "
                        "parallax, mask) or the calibrant/wavelength is off")
    if status == "CONVERGED" and at_bound:
        status, reason = "FAILED", ("parameters ended on their search bounds: " + ", ".join(at_bound)
                                    + " (start too far off, or tolerances too tight)")
    if status == "CONVERGED" and _one_ring_note(idx[points.ring][keep]):
        # one ring fixes R = Lsd·tan 2θ but not which ring it is (the distance), and its ellipse trades the
        # tilts against p0; with p0–p3 always free that degeneracy used to end on a search bound
        status, reason = "FAILED", "the geometry rests on a single ring"
    if status == "FAILED":
        reason += _one_ring_note(idx[points.ring][keep])
    # report only the rings that fall on the detector at the final distance
    on_detector = np.union1d(np.flatnonzero(geom.lsd_um * np.tan(tth_all) < max_r), idx)
    renumber = np.full(len(rings), -1)
    renumber[on_detector] = np.arange(on_detector.size)
    points = replace(points, ring=renumber[idx[points.ring]])
    rings = tuple(rings[k] for k in on_detector)
    result = CalibrationResult(status, reason, geom, points, strain, ~keep, rings, tuple(excluded),
                               mean_strain, std_strain, tuple(records), timings, guess_info, background,
                               binary, thr, tuple(warnings), fit.labels, fit.covariance, dict(fit.std_errors),
                               math.sqrt(systematic_var), terms if stage == len(stages) - 1 else (),
                               _distortion_reason(settings, candidates, terms, selections, stage == len(stages) - 1),
                               tuple(selections))
    return _with_verdict(result, image, mask, base, settings) if status == "CONVERGED" else result


def _distortion_reason(settings: CalibrationSettings, candidates, terms, selections, final_stage: bool) -> str:
    """Why the final geometry refines ``terms`` (:attr:`CalibrationResult.distortion_reason`)."""
    if not settings.fit_distortion:
        return "no distortion fitted (fit_distortion off)"
    if not candidates:
        return "no distortion fitted: every distortion tolerance (tolP, tolP0–tolP4) is 0"
    if not settings.select_distortion:
        return (f"distortion fitted as given: {terms_text(terms)} (no selection: the parameter file sets tolP, "
                "tolP0–tolP4 or DistortionOrder)")
    if not final_stage or not selections:
        return "distortion: the distortion stage was not reached"
    text = selections[-1].summary()
    if len(selections) > 1 and set(selections[0].terms) != set(selections[-1].terms):
        text += (f"; revised on the converged points of iteration {selections[-1].iteration} (the first "
                 f"distortion fit, iteration {selections[0].iteration}, kept {terms_text(selections[0].terms)})")
    return text


def _with_verdict(result: CalibrationResult, image, mask, base: Geometry, settings) -> CalibrationResult:
    """``result`` with the checks of :mod:`midas_ref.verdict` on the answer: SUSPECT (reasons) when one fails."""
    from .verdict import assess

    t0 = time.perf_counter()
    start = None
    if settings.bc_guess_px is not None:
        start = replace(base, bc_y_px=float(settings.bc_guess_px[0]), bc_z_px=float(settings.bc_guess_px[1]))
    fwhm = float(np.median(result.points.fwhm_px)) if len(result.points) else 3.0
    verdict = assess(corrected=None if result.background is None else image - result.background, mask=mask,
                     geometry=result.geometry, rings=result.rings, points_ring=result.points.ring,
                     inlier=~result.outlier, strain=result.strain, eta_bin_deg=settings.eta_bin_deg, fwhm_px=fwhm,
                     given_lsd_um=settings.lsd_guess_um, start=start,
                     fit_distortion="p2" in result.distortion_terms)
    result.timings["verdict"] = time.perf_counter() - t0
    return replace(result, status=verdict.status, reason=verdict.reason, verdict=verdict)
