"""The verdict on a calibration: checks of the answer itself, beyond "the loop stopped moving".

A calibration loop converges when the refined geometry no longer moves the peak points; that says nothing
about whether the points are the calibrant's rings, whether the ring table is the image's, or whether the
inputs that fix the scale (wavelength, pixel size) are right. A wrong input often still converges, to a
self-consistent but wrong geometry. The checks here look at the answer against the image and against what
the user gave, and turn a converged run into **SUSPECT** when one of them fails, with a reason that names
the likely cause:

``unexplained_peaks``
    The azimuthally averaged profile of the background-subtracted image about the final geometry has
    significant peaks where the calibrant has no ring (LaB6 or CeO2 calibrated as Si: the wrong
    calibrant's rings fit a subset of the image's rings perfectly, the rest are left over).
``rings_found`` / ``arc_coverage``
    Too few of the rings the calibrant predicts on the detector carry peak points (a ring table that
    matches only by chance), or the rings found cover only a small part of the azimuth they could cover
    (spots, not powder rings: a coarse-grained or single-crystal sample).
``wavelength``
    The isotropic radial distortion p2 plus the radial trend left in the per-ring strains, expressed as
    the wavelength error that would produce it. A wrong wavelength shifts the rings by
    ``δλ/(cos²θ·cos 2θ)`` in relative radius: the constant part goes into Lsd, the part growing with 2θ
    (≈ ¾·δλ·(R/Lsd)² for small angles) into p2. On a narrow-angle image the second part drowns in the
    noise and the error is undetectable (docs/cli.md gives the numbers).
``given_distance``
    The refined Lsd is far from the distance the user gave (``-LsdGuess`` or ``Lsd``): a wrong pixel size
    (or wavelength) scales the distance by the same factor and fits perfectly otherwise.
``flip``
    The user's start geometry (BC from ``-BCGuess`` or the parameter file, its tilts) matches the answer
    only after flipping or transposing the image: the image is in another frame than the parameter file
    (a Dioptas frame without ``-ImTransOpt``).

Every function is plain numpy on arrays (no I/O); :func:`assess` runs them all and returns a
:class:`Verdict`. :func:`midas_ref.autocal.calibrate` calls it at the end of a converged run.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from .detector import Geometry

__all__ = ["Verdict", "assess", "unexplained_peaks", "possible_bins", "ring_coverage", "lit_fraction",
           "wavelength_signature",
           "given_distance_check", "flip_check", "image_transforms",
           "UNEXPLAINED_MIN_SIGMA", "UNEXPLAINED_REL_SIGNIFICANCE", "MIN_RINGS_FOUND_FRACTION", "MIN_LIT_FRACTION",
           "WAVELENGTH_SUSPECT", "GIVEN_DISTANCE_SUSPECT", "FLIP_MIN_DISTANCE", "FLIP_RATIO"]

# ---- thresholds ---------------------------------------------------------------------------------------------

#: A profile peak counts as a ring of the image when its prominence is this many times the profile's local
#: noise (the rule of :func:`midas_ref.guess.ring_peaks`, whose 8σ gives < 1e-10 false peaks per bin under
#: Gaussian noise); an *unexplained* peak must in addition be this strong (20σ) so that ripples of the
#: background subtraction and tails of bright rings never count.
UNEXPLAINED_MIN_SIGMA = 20.0
#: ... and at least this fraction of the median significance of the peaks the ring table explains: a
#: leftover ring of a wrong calibrant is as strong as the ones that fit (CeO2 as Si: 1.3–1.6 × the median,
#: LaB6 as CeO2: up to 2 ×); rings of an impurity or a sample holder are weaker (the two extra rings of the
#: real ``pilatus1m_ceo2_cpf`` image: 0.56 × the median).
UNEXPLAINED_REL_SIGNIFICANCE = 0.75
#: A peak is explained when it lies within this many FWHM (and at least :data:`EXPLAINED_MIN_PX`) of a ring
#: of the table: the profile is averaged over η about the final geometry, so a right geometry puts every
#: ring of the image within a fraction of a FWHM of its predicted radius.
EXPLAINED_FWHM = 1.5
EXPLAINED_MIN_PX = 2.0
#: Fewer than this fraction of the rings predicted well on the detector carry points: the ring table does
#: not describe the image (an honest run finds nearly all of them; rings whose arc on the detector is
#: shorter than :data:`MIN_POSSIBLE_ARC` of the circle are not counted).
MIN_RINGS_FOUND_FRACTION = 0.5
MIN_POSSIBLE_ARC = 0.25
#: On the rings found, fewer than this fraction of the η bins (on the detector, unmasked) show the ring
#: (the median over the rings): the image shows spots, not powder rings. A powder ring, even a grainy or
#: textured one, lights every 5° bin (every real data set and simulated preset: 1.0, the grainy
#: ``pilatus1m_ceo2_dioptas`` included); 30 grains' spots of 2° per ring light ~ 0.6.
MIN_LIT_FRACTION = 0.8
#: A bin shows the ring when the profile at the ring exceeds the lowest value within ±:data:`LIT_WINDOW_FWHM`
#: FWHM by this many standard errors of the bin mean (the minimum of ~10 noisy bins lies ~1.5σ low, so 5σ
#: keeps the false-lit rate of an empty bin below 1e-3).
LIT_SIGMA = 5.0
LIT_WINDOW_FWHM = 3.0
#: Wavelength check: the per-ring mean strains are regressed on the part of the wavelength signature that
#: Lsd (and p2, when fitted) cannot absorb. SUSPECT when that regression gives a wavelength error larger than
#: this (relative) *and* :data:`WAVELENGTH_MIN_SIGNIFICANCE` standard errors (scaled by the reduced χ² of
#: the rings, so the systematic ring offsets of real detectors count as noise). A detector's own radial
#: distortion (p2 alone) is not enough: the real GE 41RT's p2 = −1.0e-3 is what a −1.8 % wavelength error
#: would give, with no trace of the signature's shape.
WAVELENGTH_SUSPECT = 0.01
WAVELENGTH_MIN_SIGNIFICANCE = 4.0
#: Without p2 in the fit, the pattern left in the strains must also be large enough to be told from a
#: detector's own smooth systematics (rms over the rings, strain units).
WAVELENGTH_MIN_AMPLITUDE = 10e-6
#: The refined Lsd differs from the distance the user gave by more than this, as |ln(Lsd / given)| (a
#: factor 1.127 either way): the honest starts the tests use are up to 10 % off (``far`` +10 %, the robust
#: start test ×0.9: |ln| ≤ 0.105), and a wrong pixel size scales the distance by px_given/px_true (150 for
#: 172 µm: |ln 0.872| = 0.137).
GIVEN_DISTANCE_SUSPECT = 0.12
#: Flip check: distances between geometries in units of 1 px of beam centre and 0.02° of tilt (what a start
#: from an earlier calibration of the same set-up is typically good to). A transformed start must be
#: at least :data:`FLIP_RATIO` times closer to the answer than the start itself, which must be at least
#: :data:`FLIP_MIN_DISTANCE` units away.
FLIP_BC_UNIT_PX = 1.0
FLIP_TILT_UNIT_DEG = 0.02
FLIP_MIN_DISTANCE = 5.0
FLIP_RATIO = 4.0


@dataclass(frozen=True)
class Verdict:
    """Outcome of the answer checks.

    Attributes
    ----------
    status : {"CONVERGED", "SUSPECT"}
        SUSPECT when any check failed.
    reasons : tuple of str
        One sentence per failed check, naming the likely cause.
    checks : dict
        Check name → dict of the numbers it measured (and ``passed``), for logs and ``calibration.json``.
    """

    status: str
    reasons: tuple[str, ...] = ()
    checks: dict = field(default_factory=dict)

    @property
    def suspect(self) -> bool:
        return self.status == "SUSPECT"

    @property
    def reason(self) -> str:
        """The reasons joined into one line."""
        return "; ".join(self.reasons)


# ---- checks -------------------------------------------------------------------------------------------------

def unexplained_peaks(corrected: np.ndarray, mask, geometry: Geometry, ring_radius_um, ring_nr, *,
                      fwhm_px: float, maps=None) -> dict:
    """Peaks of the azimuthal average about ``geometry`` that no ring of the table explains.

    Parameters
    ----------
    corrected : ndarray (rows, cols)
        Background-subtracted image.
    mask : ndarray of bool or None
    geometry : Geometry
        The final geometry.
    ring_radius_um : array_like
        Radius of every ring of the table at ``geometry`` (``Lsd·tan 2θ``), ascending.
    ring_nr : array_like of int
        Their ring numbers; a gap in the numbering (RingsToExclude) makes the radii between its two
        neighbours unknown, and peaks there are not counted.
    fwhm_px : float
        Typical ring FWHM, px.
    maps : (ndarray, ndarray), optional
        ``(r_um, eta_deg)`` of :func:`midas_ref.geometry.r_eta_maps` for ``geometry`` (computed if absent).

    Returns
    -------
    dict
        ``n_peaks``, ``n_unexplained``, ``unexplained_two_theta_deg`` (list), ``unexplained_sigma`` (list),
        ``explained_median_sigma``, ``passed``.
    """
    from .guess import ring_peaks

    r, sig, _ = ring_peaks(corrected, mask, geometry, maps=maps)
    radius = np.asarray(ring_radius_um, dtype=np.float64)
    nr = np.asarray(ring_nr, dtype=np.int64)
    order = np.argsort(radius)
    radius, nr = radius[order], nr[order]
    tol = max(EXPLAINED_FWHM * fwhm_px, EXPLAINED_MIN_PX) * geometry.px_um
    if radius.size:
        dist = np.min(np.abs(r[:, None] - radius[None, :]), axis=1) if r.size else np.empty(0)
    else:
        dist = np.full(r.size, np.inf)
    explained = dist <= tol
    unknown = np.zeros(r.size, dtype=bool)
    if radius.size:
        if nr[0] > 1:
            unknown |= r < radius[0] - tol
        for k in np.flatnonzero(np.diff(nr) > 1):
            unknown |= (r > radius[k]) & (r < radius[k + 1])
    median_sig = float(np.median(sig[explained])) if explained.any() else math.nan
    floor = max(UNEXPLAINED_MIN_SIGMA, UNEXPLAINED_REL_SIGNIFICANCE * (median_sig if math.isfinite(median_sig)
                                                                      else 0.0))
    bad = ~explained & ~unknown & (sig >= floor)
    tth = np.degrees(np.arctan(r[bad] / geometry.lsd_um))
    return {"n_peaks": int(r.size), "n_explained": int(explained.sum()), "n_unexplained": int(bad.sum()),
            "unexplained_two_theta_deg": [round(float(t), 3) for t in tth],
            "unexplained_sigma": [round(float(s), 1) for s in sig[bad]],
            "explained_median_sigma": median_sig, "sigma_floor": floor, "passed": bool(not bad.any())}


def possible_bins(geometry: Geometry, mask, ring_radius_um, eta_bin_deg: float) -> np.ndarray:
    """Per ring: how many η bins have their bin centre on an unmasked pixel of the detector (NaN radius: 0)."""
    from .geometry import r_eta_to_pixel

    rows, cols = geometry.shape
    n_bins = max(1, int(round(360.0 / eta_bin_deg)))
    eta = (np.arange(n_bins) + 0.5) * (360.0 / n_bins) - 180.0
    radius = np.asarray(ring_radius_um, dtype=np.float64)
    good = np.isfinite(radius)
    out = np.zeros(radius.size, dtype=np.int64)
    if not good.any():
        return out
    rr = np.repeat(radius[good], n_bins)
    y, z = r_eta_to_pixel(rr, np.tile(eta, int(good.sum())), geometry)
    y, z = np.asarray(y, dtype=np.float64), np.asarray(z, dtype=np.float64)
    ok = np.isfinite(y) & np.isfinite(z)
    iy = np.rint(np.where(ok, y, -1)).astype(np.int64)
    iz = np.rint(np.where(ok, z, -1)).astype(np.int64)
    ok &= (iy >= 0) & (iy < cols) & (iz >= 0) & (iz < rows)
    if mask is not None:
        ok[ok] &= ~mask[iz[ok], iy[ok]]
    out[good] = ok.reshape(-1, n_bins).sum(axis=1)
    return out


def ring_coverage(points_per_ring, possible_per_ring, n_bins: int) -> dict:
    """Rings found among those well on the detector, and the azimuthal coverage of their peak points.

    Parameters
    ----------
    points_per_ring : array_like of int
        Fitted peak points of every ring of the table.
    possible_per_ring : array_like of int
        η bins of every ring whose centre lies on an unmasked pixel (:func:`possible_bins`).
    n_bins : int
        η bins around the full circle.

    Returns
    -------
    dict
        ``n_predicted`` (rings with ≥ :data:`MIN_POSSIBLE_ARC` of their circle on the detector),
        ``n_found``, ``found_fraction``, ``point_coverage`` (median over the found rings of points / possible
        bins; informational: a weak or grainy ring loses bins to the peak fit's SNR cut), ``passed``.
    """
    pts = np.asarray(points_per_ring, dtype=np.float64)
    pos = np.asarray(possible_per_ring, dtype=np.float64)
    predicted = pos >= MIN_POSSIBLE_ARC * n_bins
    found = predicted & (pts > 0)
    n_pred, n_found = int(predicted.sum()), int(found.sum())
    fraction = n_found / n_pred if n_pred else math.nan
    cov = np.minimum(pts[found] / pos[found], 1.0) if n_found else np.empty(0)
    return {"n_predicted": n_pred, "n_found": n_found, "found_fraction": fraction,
            "point_coverage": float(np.median(cov)) if cov.size else math.nan,
            "passed": bool(not (n_pred >= 2 and fraction < MIN_RINGS_FOUND_FRACTION))}


def lit_fraction(corrected: np.ndarray, mask, geometry: Geometry, ring_radius_um, *, fwhm_px: float,
                 eta_bin_deg: float, maps=None) -> dict:
    """How much of each ring's azimuth shows the ring in the image (powder rings vs spots).

    The background-subtracted image is averaged in (η, radius) bins about ``geometry`` (η bins of
    ``eta_bin_deg``, radius bins of ½ px); in every η bin the profile's maximum within ±½ FWHM of the ring
    is compared with its minimum within ±:data:`LIT_WINDOW_FWHM` FWHM, in units of the standard error of a
    bin mean there. A bin is lit above :data:`LIT_SIGMA`.

    Parameters
    ----------
    corrected : ndarray
    mask : ndarray of bool or None
    geometry : Geometry
    ring_radius_um : array_like
        Radii of the rings to test (the rings found).
    fwhm_px, eta_bin_deg : float
    maps : (ndarray, ndarray), optional
        ``(r_um, eta_deg)`` for ``geometry`` (computed if absent).

    Returns
    -------
    dict
        ``lit_fraction`` (median over rings), ``per_ring`` (list), ``passed``.
    """
    from .guess import azimuthal_profiles

    radius_px = np.asarray(ring_radius_um, dtype=np.float64) / geometry.px_um
    if radius_px.size == 0:
        return {"lit_fraction": math.nan, "per_ring": [], "passed": True}
    n_eta = max(1, int(round(360.0 / eta_bin_deg)))
    bin_px = 0.5
    r_max = (radius_px.max() + LIT_WINDOW_FWHM * fwhm_px + 2) * geometry.px_um
    if maps is None:
        from .geometry import r_eta_maps

        maps = r_eta_maps(geometry)
    # only the pixels within the rings' windows count (the rest would only cost time)
    r_px_map = maps[0] / geometry.px_um
    k = np.clip(np.searchsorted(np.sort(radius_px), r_px_map), 0, radius_px.size - 1)
    srt = np.sort(radius_px)
    near = np.minimum(np.abs(r_px_map - srt[k]), np.abs(r_px_map - srt[np.maximum(k - 1, 0)]))
    far = near > LIT_WINDOW_FWHM * fwhm_px + 1.0
    far_mask = far if mask is None else (far | mask)
    r_c, _, prof, sem = azimuthal_profiles(corrected, far_mask, geometry, n_eta=n_eta, bin_px=bin_px, r_max_um=r_max,
                                           with_sem=True, maps=maps)
    fractions = []
    for rk in radius_px:
        core = np.abs(r_c - rk) <= max(0.5 * fwhm_px, bin_px)
        window = np.abs(r_c - rk) <= LIT_WINDOW_FWHM * fwhm_px
        if not core.any():
            continue
        with np.errstate(all="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # η bins without pixels (gaps, off the detector)
            peak = np.nanmax(prof[:, core], axis=1)
            low = np.nanmin(prof[:, window], axis=1)
            noise = np.nanmedian(sem[:, window], axis=1)
        ok = np.isfinite(peak) & np.isfinite(low) & np.isfinite(noise) & (noise > 0)
        if ok.sum() < 3:
            continue
        fractions.append(float(np.mean(peak[ok] - low[ok] > LIT_SIGMA * noise[ok])))
    value = float(np.median(fractions)) if fractions else math.nan
    return {"lit_fraction": value, "per_ring": [round(f, 3) for f in fractions],
            "passed": bool(not (math.isfinite(value) and value < MIN_LIT_FRACTION))}


def wavelength_signature(two_theta_deg, ring_mean_strain, ring_sem, ring_weight, geometry: Geometry, *,
                         p2_fitted: bool = True) -> dict:
    """Does the pattern of per-ring strains carry the signature of a wrong wavelength?

    A wavelength λ(1 + δ) instead of λ changes every ring's ``ln tan 2θ`` by ``δ·f(θ)``,
    ``f = 1/(cos²θ·cos 2θ)`` to first order. Over the rings present, ``f`` is split by weighted least squares
    into the part Lsd absorbs (a constant), the part p2 absorbs (``b·ρ²``, ρ = R/RhoD: the distortion
    multiplies the radius by 1 + p2·ρ²) when p2 is fitted, and the rest ``g``, which stays in the strains:
    ``ε = 1 − R/R_ideal ≈ δ·g``. The rings' mean strains are regressed on ``g``.

    Parameters
    ----------
    two_theta_deg, ring_mean_strain, ring_sem, ring_weight : array_like
        Per ring with points: 2θ (deg), mean signed strain, its standard error, number of points.
    geometry : Geometry
        Final geometry (Lsd, RhoD, p2).
    p2_fitted : bool
        Whether p2 was refined (then it absorbs the ρ² part).

    Returns
    -------
    dict
        ``delta_lambda`` (from the strain pattern) and ``delta_lambda_se``, ``delta_lambda_p2`` (the δ that
        the fitted p2 alone would mean: ``p2 / b``; informational), ``signature_rms`` (µε of ``g`` per 1 %
        of δ: how visible a wavelength error is on this image), ``passed``.
    """
    tth = np.radians(np.asarray(two_theta_deg, dtype=np.float64))
    eps = np.asarray(ring_mean_strain, dtype=np.float64)
    sem = np.asarray(ring_sem, dtype=np.float64)
    w = np.asarray(ring_weight, dtype=np.float64)
    out = {"delta_lambda": math.nan, "delta_lambda_se": math.nan, "delta_lambda_p2": math.nan,
           "signature_rms": math.nan, "n_rings": int(tth.size), "passed": True}
    n_absorbed = 2 if p2_fitted else 1
    if tth.size < n_absorbed + 2 or not geometry.rho_d_um:
        return out
    theta = tth / 2
    f = 1.0 / (np.cos(theta) ** 2 * np.cos(tth))
    rho2 = (geometry.lsd_um * np.tan(tth) / geometry.rho_d_um) ** 2
    absorbed = np.column_stack([np.ones_like(rho2), rho2][:n_absorbed])
    sw = np.sqrt(w)
    coef, *_ = np.linalg.lstsq(absorbed * sw[:, None], f * sw, rcond=None)
    g = f - absorbed @ coef
    if p2_fitted and coef[1] > 0:
        out["delta_lambda_p2"] = float(geometry.p2 / coef[1])
    out["signature_rms"] = float(np.sqrt(np.average(g * g, weights=w)) * 0.01)
    # the strains left by the fit are orthogonal to what it absorbed: regress them on g alone, each ring
    # weighted by its standard error (floor 0.1 µε), the error scaled by the reduced χ² (systematic offsets)
    finite = sem[np.isfinite(sem) & (sem > 0)]
    sig = np.where(np.isfinite(sem) & (sem > 0), sem, finite.max() if finite.size else 1e-6)
    sig = np.maximum(sig, 1e-7)
    a = g / sig
    denom = float(a @ a)
    if denom <= 0:
        return out
    delta = float(a @ (eps / sig)) / denom
    resid = (eps - delta * g) / sig
    dof = max(1, tth.size - n_absorbed - 1)
    chi2 = max(1.0, float(resid @ resid) / dof)
    se = math.sqrt(chi2 / denom)
    # A wrong wavelength shows in both places at once: the pattern must be significant in the strains, and
    # when p2 was fitted, p2 must have taken up the same error with the same sign and at least half its size
    # (the strains keep less than p2 takes: tilts and p0 absorb some of the rest). On a narrow-angle image
    # g is so small that a detector's smooth systematic ring offsets project onto it as an absurd δ (the
    # real GE 41RT: +18 % in the strains against −1.8 % in p2) — that combination is not a wavelength error.
    significant = abs(delta) > WAVELENGTH_MIN_SIGNIFICANCE * se
    amplitude = abs(delta) * out["signature_rms"] / 0.01
    if p2_fitted:
        dp2 = out["delta_lambda_p2"]
        consistent = math.isfinite(dp2) and 0 < delta / dp2 <= 2.0 if dp2 else False
        size = abs(dp2) if consistent else 0.0
    else:
        consistent = amplitude >= WAVELENGTH_MIN_AMPLITUDE
        size = abs(delta) if consistent else 0.0
    out.update(delta_lambda=delta, delta_lambda_se=se, pattern_amplitude=float(amplitude),
               consistent=bool(consistent), passed=bool(not (significant and consistent and size > WAVELENGTH_SUSPECT)))
    return out


def given_distance_check(lsd_um: float, given_lsd_um: float | None) -> dict:
    """The refined distance against the one the user gave (``-LsdGuess`` or the parameter file's ``Lsd``)."""
    if not given_lsd_um:
        return {"given_lsd_um": None, "relative_change": math.nan, "passed": True}
    rel = lsd_um / given_lsd_um - 1.0
    return {"given_lsd_um": float(given_lsd_um), "relative_change": float(rel),
            "log_ratio": float(math.log(lsd_um / given_lsd_um)),
            "passed": bool(abs(math.log(lsd_um / given_lsd_um)) <= GIVEN_DISTANCE_SUSPECT)}


def image_transforms(g: Geometry) -> dict:
    """The geometry ``g`` re-expressed for the image flipped up-down, left-right, both, and transposed.

    Flipping the rows (z → rows − 1 − z) mirrors η → 180° − η: BC_Z mirrors, ty changes sign; flipping the
    columns mirrors BC_Y and tz; the transpose swaps (Y, Z) and (tz, ty). The anisotropic distortion phase is
    not used by the flip check.
    """
    rows, cols = g.shape
    ud = (g.bc_y_px, rows - 1 - g.bc_z_px, -g.ty_deg, g.tz_deg)
    lr = (cols - 1 - g.bc_y_px, g.bc_z_px, g.ty_deg, -g.tz_deg)
    both = (cols - 1 - g.bc_y_px, rows - 1 - g.bc_z_px, -g.ty_deg, -g.tz_deg)
    tr = (g.bc_z_px, g.bc_y_px, g.tz_deg, g.ty_deg)
    return {"flipped up-down (ImTransOpt 2)": ud, "flipped left-right (ImTransOpt 1)": lr,
            "rotated 180° (ImTransOpt 1 2)": both, "transposed (ImTransOpt 3)": tr}


def _distance(a, b) -> float:
    return math.hypot(math.hypot(a[0] - b[0], a[1] - b[1]) / FLIP_BC_UNIT_PX,
                      math.hypot(a[2] - b[2], a[3] - b[3]) / FLIP_TILT_UNIT_DEG)


def flip_check(geometry: Geometry, start: Geometry | None) -> dict:
    """Does the answer match the user's start only in another image frame?

    Parameters
    ----------
    geometry : Geometry
        The answer.
    start : Geometry or None
        The geometry the user gave (BC, tilts); None or no tilt and no BC given → nothing to compare.

    Returns
    -------
    dict
        ``distance_start`` and per transform its distance (units of :data:`FLIP_BC_UNIT_PX` /
        :data:`FLIP_TILT_UNIT_DEG`), ``best`` (the transform that fits, or None), ``passed``.
    """
    if start is None:
        return {"distance_start": math.nan, "best": None, "passed": True}
    answer = (geometry.bc_y_px, geometry.bc_z_px, geometry.ty_deg, geometry.tz_deg)
    own = (start.bc_y_px, start.bc_z_px, start.ty_deg, start.tz_deg)
    d0 = _distance(answer, own)
    dists = {name: _distance(answer, t) for name, t in image_transforms(start).items()}
    name = min(dists, key=dists.get)
    suspect = d0 >= FLIP_MIN_DISTANCE and dists[name] * FLIP_RATIO <= d0
    return {"distance_start": d0, "distances": dists, "best": name if suspect else None, "passed": bool(not suspect)}


# ---- all checks ---------------------------------------------------------------------------------------------

def assess(*, corrected: np.ndarray | None, mask, geometry: Geometry, rings, points_ring, inlier, strain,
           eta_bin_deg: float, fwhm_px: float, given_lsd_um: float | None = None, start: Geometry | None = None,
           fit_distortion: bool = True) -> Verdict:
    """Run every check on a converged calibration.

    Parameters
    ----------
    corrected : ndarray or None
        Background-subtracted image (None skips the profile check).
    mask : ndarray of bool or None
    geometry : Geometry
        The final geometry.
    rings : sequence of Ring
        The ring table used (RingsToExclude removed).
    points_ring : ndarray of int
        Index into ``rings`` of every final peak point.
    inlier : ndarray of bool
        Points kept in the final fit.
    strain : ndarray
        Signed pseudo-strain of every point at ``geometry``.
    eta_bin_deg : float
    fwhm_px : float
        Typical ring FWHM (px).
    given_lsd_um : float, optional
        The distance the user gave.
    start : Geometry, optional
        The user's start (BC / tilts given); enables the flip check.
    fit_distortion : bool
        Whether p2 was fitted (the wavelength signature then includes it).

    Returns
    -------
    Verdict
    """
    from .strain import ring_statistics

    tth_all = np.radians([ring.two_theta_deg for ring in rings])
    radius = geometry.lsd_um * np.tan(tth_all)
    n_bins = max(1, int(round(360.0 / eta_bin_deg)))
    checks: dict = {}
    reasons: list[str] = []
    on = np.isfinite(radius) & (tth_all > 0)

    maps = None
    if corrected is not None:
        from .geometry import r_eta_maps

        maps = r_eta_maps(geometry)  # once for both profile checks
        u = unexplained_peaks(corrected, mask, geometry, radius[on], [r.ring_nr for r, o in zip(rings, on) if o],
                              fwhm_px=fwhm_px, maps=maps)
        checks["unexplained_peaks"] = u
        if not u["passed"]:
            where = ", ".join(f"{t:.2f}°" for t in u["unexplained_two_theta_deg"][:6])
            reasons.append(f"wrong calibrant? {u['n_unexplained']} of the {u['n_peaks']} rings of the image have "
                           f"no ring of the calibrant's table (2θ = {where}; up to "
                           f"{max(u['unexplained_sigma']):.0f}σ, the table's rings median "
                           f"{u['explained_median_sigma']:.0f}σ): check SpaceGroup, LatticeConstant, Wavelength")

    counts = np.bincount(points_ring, minlength=len(rings))
    possible = possible_bins(geometry, mask, np.where(on, radius, np.nan), eta_bin_deg)
    cov = ring_coverage(counts, possible, n_bins)
    checks["rings"] = cov
    if not cov["passed"]:
        reasons.append(f"only {cov['n_found']} of the {cov['n_predicted']} rings the calibrant predicts on the "
                       "detector were found: the ring table does not describe the image (calibrant, Wavelength, "
                       "px, -FirstRingNr?)")
    if corrected is not None:
        lit = lit_fraction(corrected, mask, geometry, radius[counts > 0], fwhm_px=fwhm_px, eta_bin_deg=eta_bin_deg,
                           maps=maps)
        checks["spots"] = lit
        if not lit["passed"]:
            reasons.append(f"the rings show in only {lit['lit_fraction']:.0%} of the azimuth they cross (median "
                           "over the rings found): the image shows spots, not powder rings (coarse grains or a "
                           "single crystal); the geometry rests on a few spots")

    n, mean, _, sem = ring_statistics(points_ring[inlier], strain[inlier], len(rings))
    present = n >= 3
    wl = wavelength_signature(np.degrees(tth_all[present]), mean[present], sem[present], n[present], geometry,
                              p2_fitted=fit_distortion)
    checks["wavelength"] = wl
    if not wl["passed"]:
        p2_part = (f"; the radial distortion p2 = {geometry.p2:.3g} took up what {wl['delta_lambda_p2']:+.1%} gives"
                   if fit_distortion else "")
        reasons.append(f"wrong wavelength? the ring strains keep the 2θ pattern of a wavelength error "
                       f"({wl['delta_lambda']:+.1%} ± {wl['delta_lambda_se']:.1%} left in the strains{p2_part}): "
                       "check Wavelength (energy)")

    gd = given_distance_check(geometry.lsd_um, given_lsd_um)
    checks["given_distance"] = gd
    if not gd["passed"]:
        reasons.append(f"the refined distance {geometry.lsd_um:.0f} µm is {gd['relative_change']:+.1%} from the "
                       f"given {gd['given_lsd_um']:.0f} µm (-LsdGuess / Lsd): a wrong px (pixel size) or "
                       "Wavelength scales the distance by the same factor; check them, or the distance given")

    fl = flip_check(geometry, start)
    checks["flip"] = fl
    if not fl["passed"]:
        reasons.append(f"the image looks {fl['best']} relative to the parameter file: its beam centre and tilts "
                       "match the answer only in that frame; check ImTransOpt")
    return Verdict("SUSPECT" if reasons else "CONVERGED", tuple(reasons), checks)
