"""Which radial distortion terms the ring points support (the default of ``midas-ref calibrate``).

Distortion p0–p4 (docs/geometry.md §4) is four terms: ``p0`` (ρ²·cos 2η), ``p1`` with its phase ``p3``
(ρ⁴·cos(4η − p3)), ``p2`` (ρ², isotropic) and ``p4`` (ρ⁶, isotropic). Fitting a term the detector does not
have is not harmless: on a real detector the residuals are dominated by systematic effects the model lacks
(module misplacements, parallax, peak-shape errors), every extra freedom absorbs part of them, and the
isotropic terms trade against the distance. :func:`select_distortion_terms` keeps a term only when it is

1. **statistically significant** against the point-to-point noise: the usual F-test of the nested models,
   ``F = (ΔRSS/q) / (RSS/(n − p))`` at level :data:`SELECTION_ALPHA` (``q`` the term's parameters, ``p`` the
   model's); this is the whole test when the residuals are noise (synthetic images, good detectors);
2. **larger than the systematic residual**: the strain variance it explains, ``ΔRSS/n``, is at least
   :data:`SYSTEMATIC_RATIO` × the structured residual variance the model leaves, ``σ_sys² = RSS/(n − p) −
   σ_w²``, with ``σ_w²`` the white (point-to-point) variance from neighbouring points along each ring
   (:func:`white_strain_variance`, its lower 95 % confidence bound).

Why the second test: the F-test counts every point as an independent unit, but systematic residuals are
correlated over whole modules and rings. On the real Pilatus 1M (~300 µε rms of module pattern over ~420
points) p0, p1 and p2 each pass the F-test at p < 1e-4 while explaining a tenth of the systematic variance or
less; fitted, they move Lsd from +96 to +218 ppm of the shipped PONI's. A term that explains less than the structured residual
left beside it cannot be told apart from (and may be a projection of) the effects the model is known to miss;
one that explains more is the dominant structure of the misfit. Cross-validation does not solve this: the
module pattern repeats on every ring (leave-one-ring-out keeps every term on the Pilatus 1M), and a
radial peak-position bias of a noise-free synthetic image is predicted by p2 on held-out rings and sectors
too (measured, docs/validation.md).

The terms are removed by backward elimination from the full model: terms needed together (p0, p1 and p2
of the ``small512`` scenario each explain less than half the misfit alone) are judged with the others in
place. Each round tests every kept term against the model without it and drops the weakest failing one
(smallest F), until every kept term passes. Cost: one fit per candidate model visited (at most 1 + 4 + 3 +
2 + 1 for four candidates), on the points already extracted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from .detector import Geometry
from .errors import CalibrationError
from .panels import Panels
from .refine import FitResult, Tolerances, fit_geometry, refined_parameters

__all__ = ["DISTORTION_TERMS", "SELECTION_ALPHA", "SYSTEMATIC_RATIO", "NEIGHBOUR_BINS", "WHITE_CONFIDENCE", "TermTest",
           "DistortionSelection", "white_strain_variance", "select_distortion_terms", "terms_text"]

#: Distortion terms decided on, and the :class:`~midas_ref.detector.Geometry` fields each one frees (p1 with its
#: phase p3).
DISTORTION_TERMS = {"p0": ("p0",), "p1": ("p1", "p3_deg"), "p2": ("p2",), "p4": ("p4",)}

#: Significance level of each F-test. Backward elimination over four candidates makes at most 4 + 3 + 2 + 1 = 10
#: tests; 1e-3 holds the chance of keeping any term on pure noise at ≤ 1 % (Bonferroni).
SELECTION_ALPHA = 1e-3

#: A term is kept only when the strain variance it explains is at least this multiple of the systematic
#: residual variance of the model that contains it: 1 = the term is at least as large as the structure the
#: model is known to miss beside it (module docstring).
SYSTEMATIC_RATIO = 1.0

#: The white variance credited to the noise is the lower bound of its one-sided confidence interval at this
#: level (χ² with the effective degrees of freedom of the second differences, 18/35 per difference: neighbouring
#: differences overlap), so that a few neighbours cannot make systematic residuals pass for noise.
WHITE_CONFIDENCE = 0.95

#: Points of one ring at most this many η bins apart count as neighbours in :func:`white_strain_variance`
#: (1 = adjacent bins; 1.5 tolerates the jitter of the peak-weighted azimuths).
NEIGHBOUR_BINS = 1.5


def terms_text(terms) -> str:
    """``"p1, p2"`` or ``"none"``."""
    return ", ".join(terms) if terms else "none"


@dataclass(frozen=True)
class TermTest:
    """One test of :func:`select_distortion_terms`: does ``model`` need ``term``?

    Attributes
    ----------
    model : tuple of str
        Terms of the model tested (``term`` among them).
    term : str
    n_parameters : int
        Parameters the term adds (p1: 2, with its phase).
    f_statistic, p_value : float
        F-test of the model against the model without ``term``; ``p_value`` from F(q, n − p).
    explained_strain : float
        ``√(ΔRSS/n)``: RMS strain the term explains (dimensionless).
    systematic_strain : float
        ``σ_sys`` of the model: RMS of its residual beyond the white noise.
    ratio : float
        ``(ΔRSS/n) / σ_sys²`` (inf when no systematic residual is left).
    alpha, ratio_threshold : float
        The two thresholds (:data:`SELECTION_ALPHA`, :data:`SYSTEMATIC_RATIO`).
    """

    model: tuple[str, ...]
    term: str
    n_parameters: int
    f_statistic: float
    p_value: float
    explained_strain: float
    systematic_strain: float
    ratio: float
    alpha: float
    ratio_threshold: float

    @property
    def significant(self) -> bool:
        """Passes the F-test."""
        return self.p_value < self.alpha

    @property
    def above_systematic(self) -> bool:
        """Explains at least ``ratio_threshold`` × the systematic residual variance."""
        return self.ratio >= self.ratio_threshold

    @property
    def passed(self) -> bool:
        return self.significant and self.above_systematic

    def text(self) -> str:
        """One line: the statistics, the thresholds and the verdict."""
        verdict = "keeps" if self.passed else ("fails the F-test" if not self.significant else
                                               "below the systematic residual")
        return (f"model {'+'.join(self.model)} without {self.term}: F = {self.f_statistic:.4g} (q = {self.n_parameters}, "
                f"p = {self.p_value:.2g} vs α = {self.alpha:g}); explains {self.explained_strain * 1e6:.3g} µε rms "
                f"against a systematic residual of {self.systematic_strain * 1e6:.3g} µε, variance ratio "
                f"{self.ratio:.3g} vs ≥ {self.ratio_threshold:g} → {self.term} {verdict}")


@dataclass(frozen=True)
class DistortionSelection:
    """The outcome of :func:`select_distortion_terms`.

    Attributes
    ----------
    candidates : tuple of str
        Terms considered (``DISTORTION_TERMS`` keys).
    terms : tuple of str
        Terms kept, in candidate order.
    tests : tuple of TermTest
        Every test made, in order (the elimination rounds one after the other).
    n_points : int
    full_rms_strain : float
        RMS strain of the full model (every candidate).
    white_estimate : float
        RMS of the white part of the full model's residuals (:func:`white_strain_variance`).
    white_strain : float
        ``σ_w`` used in the tests: the lower confidence bound of ``white_estimate`` (:data:`WHITE_CONFIDENCE`).
    n_triples : int
        Second differences ``white_estimate`` comes from.
    fit : FitResult
        The fit of the kept model on the points.
    iteration : int
        The calibration iteration whose points were used (set by :func:`midas_ref.autocal.calibrate`).
    """

    candidates: tuple[str, ...]
    terms: tuple[str, ...]
    tests: tuple[TermTest, ...]
    n_points: int
    full_rms_strain: float
    white_estimate: float
    white_strain: float
    n_triples: int
    fit: FitResult
    iteration: int = 0

    @property
    def dropped(self) -> tuple[str, ...]:
        return tuple(t for t in self.candidates if t not in self.terms)

    def summary(self) -> str:
        """One line: what was kept, and the test."""
        return (f"distortion terms selected from the data: kept {terms_text(self.terms)}, dropped "
                f"{terms_text(self.dropped)} (backward elimination over {terms_text(self.candidates)} on "
                f"{self.n_points} points; a term stays when its F-test has p < {SELECTION_ALPHA:g} and it explains "
                f"at least {SYSTEMATIC_RATIO:g} × the systematic residual variance)")

    def report_lines(self) -> list[str]:
        """The summary, the noise split and every test, one line each (for ``autocal.log``)."""
        lines = [self.summary(),
                 f"  residual of the full model {self.full_rms_strain * 1e6:.3g} µε rms; white part "
                 f"{self.white_estimate * 1e6:.3g} µε (second differences of {self.n_triples} neighbour triples along "
                 f"the rings), {self.white_strain * 1e6:.3g} µε at its {WHITE_CONFIDENCE:.0%} lower bound (used)"]
        lines += ["  " + t.text() for t in self.tests]
        return lines


def white_strain_variance(strain, ring, eta_deg, eta_bin_deg: float) -> tuple[float, int]:
    """Variance of the point-to-point (white) part of strain residuals, from neighbours along each ring.

    For three points of one ring in consecutive η bins, the second difference ``d = ε_1 − 2ε_2 + ε_3`` has
    ``E[d²] = σ_1² + 4σ_2² + σ_3² + (s_1 − 2s_2 + s_3)²`` with ``σ`` the independent (peak-fit) noise and ``s`` the
    structured residual. A structure smooth over a few bins (tilt- and distortion-like harmonics, a module's
    offset) cancels to second order in the bin width, so ``Σ d² / (6·triples)`` is the mean white variance
    whatever structure the residuals have, also for heteroscedastic noise (weak and strong rings) — the
    difference-based estimator of Gasser, Sroka & Jennen-Steinmetz (1986, Biometrika 73, 625). Only module
    edges between neighbours add to it.

    Parameters
    ----------
    strain : ndarray of shape (N,)
        Residual pseudo-strain of each point.
    ring : ndarray of int, shape (N,)
        Ring of each point.
    eta_deg : ndarray of shape (N,)
        Azimuth of each point, degrees.
    eta_bin_deg : float
        Azimuthal bin of the extraction; points at most :data:`NEIGHBOUR_BINS` bins apart are neighbours.

    Returns
    -------
    variance : float
        ``Σ d² / (6·triples)``; 0.0 when no three neighbours exist.
    n_triples : int
        Number of second differences.

    Examples
    --------
    >>> import numpy as np
    >>> eta = np.arange(0.0, 360.0, 1.0)
    >>> noise = np.random.default_rng(0).normal(0, 1e-6, eta.size)
    >>> var, n = white_strain_variance(5e-5 * np.cos(np.radians(2 * eta)) + noise, np.zeros(eta.size, int), eta, 1.0)
    >>> n, round(float(np.sqrt(var)) * 1e6, 2)  # the 50 µε cos 2η structure drops out: ≈ 1 µε
    (358, 1.01)
    """
    strain = np.asarray(strain, dtype=np.float64)
    ring = np.asarray(ring)
    eta = np.asarray(eta_deg, dtype=np.float64)
    total, triples = 0.0, 0
    for r in np.unique(ring):
        idx = np.flatnonzero(ring == r)
        idx = idx[np.argsort(eta[idx], kind="stable")]
        near = np.diff(eta[idx]) <= NEIGHBOUR_BINS * eta_bin_deg
        e = strain[idx]
        d = (e[:-2] - 2.0 * e[1:-1] + e[2:])[near[:-1] & near[1:]]
        total += float(d @ d)
        triples += int(d.size)
    return (total / (6 * triples) if triples else 0.0), triples


def _free(base_free, terms) -> tuple[str, ...]:
    return tuple(base_free) + tuple(name for t in terms for name in DISTORTION_TERMS[t])


def select_distortion_terms(y_px, z_px, two_theta_deg, eta_deg, ring, start: Geometry, *, base_free,
                            candidates=tuple(DISTORTION_TERMS), held: Geometry | None = None,
                            tolerances: Tolerances = Tolerances(), panels: Panels | None = None,
                            eta_bin_deg: float = 5.0, alpha: float = SELECTION_ALPHA,
                            ratio_threshold: float = SYSTEMATIC_RATIO) -> DistortionSelection:
    """Keep the distortion terms the points support: backward elimination with an F-test and a systematic-level test.

    Parameters
    ----------
    y_px, z_px : array_like of shape (N,)
        Ring points (inliers), raw pixel coordinates.
    two_theta_deg : array_like of shape (N,)
        Ideal 2θ of each point's ring, degrees.
    eta_deg : array_like of shape (N,)
        Azimuth of each point (only to find neighbours for :func:`white_strain_variance`), degrees.
    ring : array_like of int, shape (N,)
        Ring of each point.
    start : Geometry
        Start of the fits (e.g. the current geometry); its values of the candidate terms start the full fit.
    base_free : sequence of str
        Geometry fields refined in every model (Lsd, BC, tilts).
    candidates : sequence of str
        Keys of :data:`DISTORTION_TERMS` to decide on (a term whose tolerance is 0 is left out).
    held : Geometry, optional
        The values a dropped term is held at (e.g. the run's start geometry); default 0 for every term.
    tolerances : Tolerances
        Search half-widths of the fits (:func:`~midas_ref.refine.fit_geometry`).
    panels : Panels, optional
        Fixed panel corrections.
    eta_bin_deg : float
        Azimuthal bin of the extraction.
    alpha : float
        Significance level of each F-test (default :data:`SELECTION_ALPHA`).
    ratio_threshold : float
        Smallest ``explained variance / systematic residual variance`` of a kept term (default
        :data:`SYSTEMATIC_RATIO`).

    Returns
    -------
    DistortionSelection
        The kept terms, every test with its statistics, and the fit of the kept model.

    Notes
    -----
    For a model M with ``p`` refined parameters and residual sum of squares ``RSS_M`` over the ``n`` points,
    the term t (``q`` parameters) is tested against ``M − t``::

        F      = ((RSS_{M−t} − RSS_M) / q) / (RSS_M / (n − p))           kept only if P(F_{q, n−p} > F) < alpha
        ratio  = ((RSS_{M−t} − RSS_M) / n) / σ_sys²,  σ_sys² = RSS_M/(n − p) − σ_w²     and ratio ≥ ratio_threshold

    ``σ_w²`` is estimated once, from the full model's residuals (the lower bound of its confidence interval at
    :data:`WHITE_CONFIDENCE`; the second differences of :func:`white_strain_variance` overlap, and for Gaussian
    noise their squares carry 18/35 of a degree of freedom each). Every fit is least squares (the statistics are
    those of sums of squares), started from the fit of the model one term larger.
    """
    from scipy.stats import chi2
    from scipy.stats import f as f_dist

    y = np.asarray(y_px, dtype=np.float64)
    z = np.asarray(z_px, dtype=np.float64)
    tth = np.asarray(two_theta_deg, dtype=np.float64)
    n = y.size
    base_free = tuple(base_free)
    unknown = [t for t in candidates if t not in DISTORTION_TERMS]
    if unknown:
        raise CalibrationError(f"unknown distortion term(s) {', '.join(unknown)}; valid: {', '.join(DISTORTION_TERMS)}")
    candidates = tuple(t for t in DISTORTION_TERMS if t in candidates
                       and refined_parameters(DISTORTION_TERMS[t], tolerances))
    zero = {name: (0.0 if held is None else getattr(held, name)) for t in candidates
            for name in DISTORTION_TERMS[t] if name != "p3_deg"}
    fits: dict[tuple[str, ...], FitResult] = {}

    def fit(terms, geometry):
        if terms not in fits:
            dropped = {name: value for name, value in zero.items()
                       if not any(name in DISTORTION_TERMS[t] for t in terms)}
            fits[terms] = fit_geometry(y, z, tth, replace(geometry, **dropped), panels=panels,
                                       free=_free(base_free, terms), tolerances=tolerances)
        return fits[terms]

    def rss(terms) -> float:
        s = fits[terms].strain
        s = s[np.isfinite(s)]
        return float(s @ s)

    def n_par(terms) -> int:
        return len(refined_parameters(_free(base_free, terms), tolerances))

    full = fit(candidates, start)
    white_estimate, triples = white_strain_variance(full.strain, ring, eta_deg, eta_bin_deg)
    dof_white = triples * 18.0 / 35.0
    white = white_estimate * dof_white / float(chi2.ppf(WHITE_CONFIDENCE, dof_white)) if triples else 0.0
    kept = candidates
    tests: list[TermTest] = []
    while kept:
        p = n_par(kept)
        dof = n - p
        if dof <= 0:
            raise CalibrationError(f"{n} ring points cannot test {p} parameters")
        rss_m = rss(kept)
        s2 = rss_m / dof
        sys2 = max(s2 - white, 0.0)
        round_tests = []
        for term in kept:
            smaller = tuple(t for t in kept if t != term)
            fit(smaller, fits[kept].geometry)
            delta = max(rss(smaller) - rss_m, 0.0)
            q = p - n_par(smaller)
            f_stat = (delta / q) / s2 if s2 > 0 else math.inf
            p_value = float(f_dist.sf(f_stat, q, dof)) if math.isfinite(f_stat) else 0.0
            ratio = (delta / n) / sys2 if sys2 > 0 else math.inf
            round_tests.append(TermTest(kept, term, q, float(f_stat), p_value, math.sqrt(delta / n), math.sqrt(sys2),
                                        float(ratio), alpha, ratio_threshold))
        tests += round_tests
        failing = [t for t in round_tests if not t.passed]
        if not failing:
            break
        weakest = min(failing, key=lambda t: t.f_statistic)
        kept = tuple(t for t in kept if t != weakest.term)
    full_rms = math.sqrt(rss(candidates) / n) if n else math.nan
    return DistortionSelection(candidates, kept, tuple(tests), n, full_rms, math.sqrt(white_estimate), math.sqrt(white),
                               triples, fits[kept])
