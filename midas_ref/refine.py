"""Geometry refinement: fit Lsd, beam centre, tilts, distortion and panel corrections to ring points.

The pseudo-strain of point i on ring k is ``ε_i = 1 − R(y_i, z_i; x) / (Lsd·tan 2θ_k)`` with the one
forward model of :mod:`midas_ref.geometry`. Two optimisers:

* ``"least-squares"`` (default): ``scipy.optimize.least_squares`` (trust-region reflective, bounds) on
  ``√w_i·ε_i``. The p1/p3 pair is fitted as the Cartesian pair ``(p1·cos p3, p1·sin p3)``, which is linear
  in the model and has no degeneracy at p1 = 0; it is converted back at the end (p1 ≥ 0). The Jacobian is
  built by central differences that exploit its block structure: a point depends on the global
  parameters and on the corrections of *its own* panel only, so one perturbation of, say, every panel's
  dY at once yields the whole dY block. A Jacobian costs ``2·(n_global + n_kinds)`` model evaluations
  whatever the number of panels (CalibrantPanelShiftsOMP's Nelder–Mead needs thousands of evaluations for
  the 80+ parameters of a 24-module detector).
* ``"nelder-mead"``: NLopt ``LN_NELDERMEAD`` (``LN_SBPLX`` above 20 parameters, as the legacy panel
  program) on ``Σ w_i·|ε_i|`` (the legacy objective) with explicit stopping rules (the legacy build of
  CalibrantOMP had none, spec legacy_engine.md Q10).

Bounds are ``start ± tolerance`` as in the legacy programs; a zero tolerance fixes that parameter.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from threadpoolctl import threadpool_limits

from . import geometry_kernels as _gk
from .detector import Geometry
from .errors import CalibrationError
from .geometry import SERIAL_BELOW, kernel_vector, pixel_to_r_eta
from .kernel_layout import PT_COS, PT_DLSD, PT_DP2, PT_DY, PT_DZ, PT_SIN
from .panels import Panels, kernel_tables, point_panel_ids

__all__ = ["Tolerances", "PanelFreedom", "FitResult", "point_strain", "fit_geometry", "refined_parameters",
           "gauge_coefficients", "gauge_values", "FREE_DEFAULT", "PANEL_GAUGES"]

#: ``PanelGauge`` values (docs/geometry.md §6.2): ``average`` (the global geometry is the average detector: zero
#: mean shift, net dilation and net rotation of the panels), ``mean`` (only the exact gauge: zero mean shift —
#: the same fit as ``fixed``, re-expressed) or ``fixed`` (``FixPanelID`` holds still, the legacy gauge).
PANEL_GAUGES = ("average", "mean", "fixed")

#: Geometry fields refined by default (tx is fixed, as in the legacy programs).
FREE_DEFAULT = ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg", "p0", "p1", "p2", "p3_deg")


@dataclass(frozen=True)
class Tolerances:
    """Half-widths of the search box around the start geometry (legacy ``tol*`` keys).

    Defaults are the values AutoCalibrateZarr wrote (spec autocalibrate.md §2.13): tolTilts 3°, tolBC 20 px,
    tolLsd 15000 µm, tolP 2e-3, tolP3 45°.
    """

    lsd_um: float = 15000.0
    bc_px: float = 20.0
    tilts_deg: float = 3.0
    p0: float = 2e-3
    p1: float = 2e-3
    p2: float = 2e-3
    p3_deg: float = 45.0
    p4: float = 2e-3
    p5: float = 2e-3


@dataclass(frozen=True)
class PanelFreedom:
    """Which per-panel corrections are refined, and their search half-widths (manual §7 keys).

    Attributes
    ----------
    fix_panel_id : int
        ``FixPanelID``: in the ``fixed`` gauge the anchor panel, none of whose corrections are refined (a
        common shift of every panel is the beam centre; one panel holds still to break that degeneracy).
    gauge : {"mean", "fixed", "average"}
        ``PanelGauge`` (docs/geometry.md §6.2), default ``mean``. ``average`` (experimental): every panel with enough points is refined and the
        corrections are constrained to zero mean shift, zero net radial dilation and zero net rotation about
        the beam (tangential projection), and zero mean dθ when rotations are refined — the global Lsd, BC
        and tilts are those of the average detector. The dilation and the shift-only rotation are *not* exact
        symmetries of the data (the rings see them across each panel), so this costs strain. ``mean``: only
        the exact gauge (zero mean shift, mean dθ, mean dLsd, mean dP2): the fit of ``fixed``, re-expressed.
        ``fixed``: the legacy ``FixPanelID`` gauge.
    shifts_px : float
        ``tolShifts``, pixels, for dY and dZ; 0 = no shift variables.
    rotation_deg : float
        ``tolRotation``, degrees, for dTheta; 0 = no rotation variables (the legacy default).
    lsd_um : float
        ``tolLsdPanel`` when ``PerPanelLsd 1``, µm; 0 = off.
    p2 : float
        ``tolP2Panel`` when ``PerPanelDistortion 1``; 0 = off.
    min_points : int
        ``MinIndicesForFit``: a panel with fewer points keeps its start corrections.
    """

    fix_panel_id: int = 0
    shifts_px: float = 1.0
    rotation_deg: float = 0.0
    lsd_um: float = 0.0
    p2: float = 0.0
    min_points: int = 1
    gauge: str = "mean"

    def __post_init__(self):
        if self.gauge not in PANEL_GAUGES:
            raise CalibrationError(f"PanelGauge must be one of {', '.join(PANEL_GAUGES)}, got {self.gauge!r}")

    def kinds(self):
        """``(PanelShift field, half-width)`` of every refined correction kind, in legacy vector order."""
        candidates = (("dy_px", self.shifts_px), ("dz_px", self.shifts_px), ("dtheta_deg", self.rotation_deg),
                      ("dlsd_um", self.lsd_um), ("dp2", self.p2))
        return tuple((name, tol) for name, tol in candidates if tol > 0)


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_geometry`.

    Attributes
    ----------
    geometry : Geometry
        Refined geometry.
    panels : Panels or None
        Refined panel corrections (the input ones when panels were not refined).
    strain : ndarray
        Signed pseudo-strain ``1 − R/R_ideal`` of every point at the refined geometry.
    n_evaluations : int
    success : bool
    message : str
    at_bound : tuple of str
        Free parameters that ended on their box bound (a sign the tolerance was too tight); panel
        corrections as ``"panel 3 dy_px"``.
    std_errors : dict
        Standard error of every refined parameter (same labels and units; the Cartesian distortion pair as
        ``"p1 cos p3"``, ``"p1 sin p3"``) — ``inf`` for a parameter the data do not determine.
    covariance : ndarray
        Their covariance (order of ``labels``; NaN rows/columns for undetermined parameters): the sandwich
        of the points' error model when ``fit_geometry`` got one, else data-only (docs/validation.md).
    labels : tuple of str
        Names of the refined parameters (``covariance`` order).
    held : tuple of str
        Combinations of panel corrections the rings did not determine, held at their start values
        (``hold_undetermined``), each as the labels that make it up.
    gauge : dict
        Average/mean panel gauge only: ``"panels"`` (ids of the constrained panels), ``"forms"`` (the linear
        forms at the solution, :func:`gauge_coefficients`), ``"values_px"`` (their values, pixels: ≈ 0).
    """

    geometry: Geometry
    panels: Panels | None
    strain: np.ndarray
    n_evaluations: int
    success: bool
    message: str
    at_bound: tuple[str, ...]
    std_errors: dict = field(default_factory=dict)
    gauge: dict = field(default_factory=dict)
    covariance: np.ndarray | None = field(default=None, repr=False)
    labels: tuple[str, ...] = ()
    held: tuple[str, ...] = ()


def point_strain(y_px, z_px, tan_two_theta, geometry: Geometry, panels: Panels | None = None):
    """Signed pseudo-strain ``1 − R(y, z)/(Lsd·tan 2θ_k)`` of points with ideal ``tan 2θ_k``."""
    y = np.ascontiguousarray(y_px, dtype=np.float64)
    z = np.ascontiguousarray(z_px, dtype=np.float64)
    r, _ = pixel_to_r_eta(y, z, geometry, panels)
    return 1.0 - r / (geometry.lsd_um * np.asarray(tan_two_theta, dtype=np.float64))


def _tolerance(name: str, tol: Tolerances) -> float:
    return {"lsd_um": tol.lsd_um, "bc_y_px": tol.bc_px, "bc_z_px": tol.bc_px, "ty_deg": tol.tilts_deg,
            "tz_deg": tol.tilts_deg, "tx_deg": tol.tilts_deg, "p0": tol.p0, "p1": tol.p1, "p2": tol.p2,
            "p3_deg": tol.p3_deg, "p4": tol.p4, "p5": tol.p5}[name]


def refined_parameters(free, tolerances: Tolerances) -> tuple[str, ...]:
    """The geometry fields of ``free`` that :func:`fit_geometry` actually refines under ``tolerances``.

    A zero tolerance fixes its parameter (legacy ``tolP 0`` switches the distortion fit off), and p3 is only
    the phase of p1: it goes with it.
    """
    return tuple(name for name in free if _tolerance(name, tolerances) > 0
                 and not (name == "p3_deg" and tolerances.p1 <= 0))


#: Central-difference steps: ~1e-6 of the parameter's natural scale, far above rounding (strains are
#: ~1e-16 exact) and far below any curvature that matters.
_STEP = {"lsd_um": 1e-2, "bc_y_px": 1e-5, "bc_z_px": 1e-5, "tx_deg": 1e-6, "ty_deg": 1e-6, "tz_deg": 1e-6,
         "p0": 1e-8, "p1": 1e-8, "p2": 1e-8, "p3_deg": 1e-4, "p4": 1e-8, "p5": 1e-8,
         "dy_px": 1e-5, "dz_px": 1e-5, "dtheta_deg": 1e-6, "dlsd_um": 1e-2, "dp2": 1e-8}

#: Strain scale of the weak prior on panel corrections (see ``_Model``).
PANEL_PRIOR_STRAIN = 1e-6

#: Column of each correction kind in the kernel panel table (``kernel_layout.PANEL_TABLE_COLUMNS``);
#: dtheta_deg fills two columns, ``PT_COS`` and ``PT_SIN``.
_TABLE_COLUMN = {"dy_px": PT_DY, "dz_px": PT_DZ, "dlsd_um": PT_DLSD, "dp2": PT_DP2}


#: Weight of the average-gauge constraint rows: a violation of v px costs as much as every point being off
#: by ``GAUGE_WEIGHT``·v px (1e-4 px ↔ 1 px per point), far above any pull of the data (docs/geometry.md §6.2).
GAUGE_WEIGHT = 1e4

#: A combination of panel corrections whose standard error (from the rings) exceeds this fraction of its
#: search half-width is *undetermined*: it is held at its start value (the minimum-norm solution), never
#: left for noise or systematic residuals to drag to a bound. The typical case is a panel's rotation about
#: its centre traded against its tangential shift (docs/geometry.md §6.1).
UNDETERMINED_FRACTION = 0.25
#: Smallest scale of each correction kind in that test (units of the kind): a correction known to a quarter
#: of this is determined whatever its tolerance.
UNDETERMINED_SCALE = {"dy_px": 1.0, "dz_px": 1.0, "dtheta_deg": 0.1, "dlsd_um": 100.0, "dp2": 1e-4}
#: A parameter whose share in a held direction is at least this fraction of the direction's largest
#: component is reported undetermined (infinite standard error).
HELD_SHARE = 0.1


def gauge_coefficients(layout, refined, bc_y_px: float, bc_z_px: float, kinds=("dy_px", "dz_px"),
                       lsd_um: float = 1.0, gauge: str = "average", weights=None, info=None) -> dict:
    """Linear forms of the average gauge (docs/geometry.md §6.2) over the refined panels.

    Parameters
    ----------
    layout : PanelLayout
    refined : array_like of int
        Ids of the panels whose corrections are constrained (the refined ones).
    bc_y_px, bc_z_px : float
        Beam centre the panel-centre directions ``û`` (from the beam to the panel centre) are taken from, px.
    kinds : sequence of str
        Refined correction kinds (``PanelShift`` field names).
    lsd_um : float
        Global Lsd, µm (scales the mean dLsd to pixels).
    gauge : {"average", "mean"}
        ``mean`` leaves out ``dilation_px`` and ``rotation_px``.
    weights : array_like, optional
        Weight of each refined panel in the means and sums (the fits pass its number of ring points, so a
        panel a few points barely place does not carry its error into the beam centre); default 1.
    info : ndarray of shape (N, 2, 2), optional
        Per refined panel, the information the rings carry on its (dY, dZ) (``JᵀJ`` of its points, with its
        other corrections — dθ, dLsd, dP2 — profiled out by a Schur complement). When given, the shift forms
        are information-weighted: the mean shift is ``(Σ I_p)⁻¹ Σ I_p d_p`` and the dilation and rotation
        ``r_rms · Σ r_p eᵀ I_p d_p / Σ r_p² eᵀ I_p e`` (``e = û_p`` or ``ẑ × û_p``) — the least-squares
        amplitudes of those modes, to which a direction a panel's rings do not see (its tangential placement
        with rotations free, a panel crossed by one short arc) contributes nothing. This is what the fits use.

    Returns
    -------
    dict
        ``name → {kind: coefficients over refined}``; a form's value ``Σ_kind coef·value`` is in pixels (at the
        rms distance ``r_rms`` of the panel centres from the beam):

        * ``mean_dy_px``, ``mean_dz_px`` — the mean shift (shifts refined, rotations not); with rotations free
          each panel's tangential placement is a null mode (§6.1), so the mean of the **radial** parts
          ``Σ û ûᵀ d / N`` (``mean_radial_y_px``, ``mean_radial_z_px``) takes its place;
        * ``dilation_px`` — ``r_rms · Σ r (û·d) / Σ r²``, the least-squares scale factor of the shifts along
          ``û`` (a dilation of the assembly about the beam);
        * ``rotation_px`` — the same along ``ẑ × û`` (a rotation of the assembly about the beam);
        * ``mean_dtheta_px`` — mean dθ (radians) × r_rms (rotations refined);
        * ``mean_dlsd_px`` — mean dLsd / Lsd × r_rms; ``mean_dp2_px`` — mean dP2 × r_rms.
    """
    from .panels import panel_bounds

    refined = np.asarray(refined, dtype=np.int64)
    kinds = tuple(kinds)
    b = panel_bounds(layout)[refined].astype(np.float64)
    vy = 0.5 * (b[:, 0] + b[:, 1]) - bc_y_px
    vz = 0.5 * (b[:, 2] + b[:, 3]) - bc_z_px
    w = np.ones(refined.size) if weights is None else np.asarray(weights, dtype=np.float64)
    w = w / max(float(w.mean()), 1e-300) if refined.size else w
    n = max(refined.size, 1)
    r2 = vy ** 2 + vz ** 2
    r_rms = math.sqrt(float(np.mean(w * r2))) if refined.size else 0.0
    norm = r_rms / max(float(np.sum(w * r2)), 1e-300)
    r = np.sqrt(np.maximum(r2, 1e-300))
    uy, uz = vy / r, vz / r
    forms = {}
    if "dy_px" in kinds and info is not None:
        info = np.asarray(info, dtype=np.float64)
        m_inv = np.linalg.pinv(info.sum(axis=0))
        a = np.einsum("ij,pjk->pik", m_inv, info)  # (Σ I)⁻¹ I_p
        forms["mean_dy_px"] = {"dy_px": a[:, 0, 0], "dz_px": a[:, 0, 1]}
        forms["mean_dz_px"] = {"dy_px": a[:, 1, 0], "dz_px": a[:, 1, 1]}
        if gauge == "average":
            r_rms_geo = math.sqrt(float(np.mean(r2)))
            # with rotations free the rings carry no tangential information (§6.1): the assembly's rotation is
            # then held by the mean dθ alone
            modes = (("dilation_px", np.c_[uy, uz]),) + (() if "dtheta_deg" in kinds else
                                                           (("rotation_px", np.c_[-uz, uy]),))
            for name, e in modes:
                ie = np.einsum("pij,pj->pi", info, e)  # I_p e (I symmetric: eᵀ I_p = (I_p e)ᵀ)
                denom = max(float(np.sum(r2 * np.einsum("pi,pi->p", e, ie))), 1e-300)
                coef = r_rms_geo * r[:, None] * ie / denom
                forms[name] = {"dy_px": coef[:, 0], "dz_px": coef[:, 1]}
    elif "dy_px" in kinds:
        if "dtheta_deg" not in kinds:
            forms["mean_dy_px"] = {"dy_px": w / n}
            forms["mean_dz_px"] = {"dz_px": w / n}
        else:
            forms["mean_radial_y_px"] = {"dy_px": w * uy * uy / n, "dz_px": w * uy * uz / n}
            forms["mean_radial_z_px"] = {"dy_px": w * uz * uy / n, "dz_px": w * uz * uz / n}
        if gauge == "average":
            # r·û = (vy, vz); r·(ẑ × û) = (−vz, vy)
            forms["dilation_px"] = {"dy_px": w * vy * norm, "dz_px": w * vz * norm}
            forms["rotation_px"] = {"dy_px": -w * vz * norm, "dz_px": w * vy * norm}
    if "dtheta_deg" in kinds:
        forms["mean_dtheta_px"] = {"dtheta_deg": w * math.radians(r_rms) / n}
    if "dlsd_um" in kinds:
        forms["mean_dlsd_px"] = {"dlsd_um": w * r_rms / lsd_um / n}
    if "dp2" in kinds:
        forms["mean_dp2_px"] = {"dp2": w * r_rms / n}
    return forms


def gauge_values(panels: Panels, geometry: Geometry, refined=None, kinds=None, gauge: str = "average",
                 weights=None, info=None) -> dict:
    """Values of the average-gauge forms (:func:`gauge_coefficients`) of a result, pixels.

    ``refined`` defaults to every panel; ``kinds`` to dY, dZ plus every other kind some panel has non-zero;
    ``weights`` (per refined panel) to 1 — pass the panels' point counts to check a fit's own constraints.
    """
    refined = np.arange(panels.layout.n_panels) if refined is None else np.asarray(refined, dtype=np.int64)
    values = {kind: np.array([getattr(panels.shifts[p], kind) for p in refined])
              for kind in ("dy_px", "dz_px", "dtheta_deg", "dlsd_um", "dp2")}
    if kinds is None:
        kinds = ("dy_px", "dz_px") + tuple(k for k in ("dtheta_deg", "dlsd_um", "dp2") if np.any(values[k] != 0))
    forms = gauge_coefficients(panels.layout, refined, geometry.bc_y_px, geometry.bc_z_px, kinds, geometry.lsd_um,
                               gauge, weights, info)
    return {name: float(sum(coef @ values[kind] for kind, coef in form.items())) for name, form in forms.items()}


class _Model:
    """Parameter vector ↔ (geometry, panel table), and the weighted strain residuals of the points."""

    def __init__(self, y, z, tan_tth, sqrt_w, start, free, tolerances, panels, freedom, cartesian, anchor,
                 prior_strain=None):
        self.y, self.z, self.tan_tth, self.sqrt_w = y, z, tan_tth, sqrt_w
        self.start, self.free, self.panels = start, free, panels
        self.col_to_iy, self.row_to_iz, self.n_z, self.table0 = kernel_tables(panels, start.shape)
        self.kernel = _gk.pixel_to_r_eta_points if y.size > SERIAL_BELOW else _gk.pixel_to_r_eta_points_serial
        self.r = np.empty_like(y)
        self.eta = np.empty_like(y)
        self.n_eval = 0
        self.cartesian = cartesian
        n_g = len(free)
        x0 = np.array([getattr(start, name) for name in free], dtype=np.float64)
        span = np.array([_tolerance(name, tolerances) for name in free])
        self.i1 = free.index("p1") if cartesian else -1
        self.i3 = free.index("p3_deg") if cartesian else -1
        steps = [_STEP[name] for name in free]
        self.labels = list(free)
        if cartesian:
            p1, p3 = start.p1, math.radians(start.p3_deg)
            x0[self.i1], x0[self.i3] = p1 * math.cos(p3), p1 * math.sin(p3)
            span[self.i1] = span[self.i3] = tolerances.p1
            steps[self.i1] = steps[self.i3] = _STEP["p1"]
            self.labels[self.i1], self.labels[self.i3] = "p1 cos p3", "p1 sin p3"
        # panel variables: kinds × refined panels, kind-major (the legacy order is panel-major; the order
        # of a vector changes nothing in the fit)
        self.kinds = () if panels is None or freedom is None else freedom.kinds()
        self.point_panel = (point_panel_ids(y, z, panels) if panels is not None
                            else np.full(y.shape, -1, np.int64))
        if self.kinds:
            counts = np.bincount(self.point_panel[self.point_panel >= 0], minlength=panels.layout.n_panels)
            self.refined = np.array([p for p in range(panels.layout.n_panels)
                                     if (freedom.gauge != "fixed" or p != freedom.fix_panel_id)
                                     and counts[p] >= max(freedom.min_points, 1)],
                                    dtype=np.int64)
        else:
            self.refined = np.zeros(0, np.int64)
        x_parts, centre_parts, span_parts = [x0], [x0], [span]
        anchor = panels if anchor is None else anchor
        for kind, tol in self.kinds:
            x_parts.append(np.array([getattr(panels.shifts[p], kind) for p in self.refined], dtype=np.float64))
            centre_parts.append(np.array([getattr(anchor.shifts[p], kind) for p in self.refined], dtype=np.float64))
            span_parts.append(np.full(self.refined.size, tol))
            steps += [_STEP[kind]] * self.refined.size
            self.labels += [f"panel {p} {kind}" for p in self.refined]
        self.n_global = n_g
        centre = np.concatenate(centre_parts)
        self.lo = centre - np.concatenate(span_parts)
        self.hi = centre + np.concatenate(span_parts)
        self.x0 = np.clip(np.concatenate(x_parts), self.lo, self.hi)
        self.centre = centre
        self.steps = np.array(steps)
        # weak Gaussian prior on the panel corrections (σ = their tolerance, centred on the anchor): a panel
        # whose points cannot fix some combination of its corrections stays at the anchor instead of wandering
        # to a bound. Powder rings cannot see a panel turning about the beam axis at all (its arcs slide along
        # themselves; only tilt ellipticity and distortion break the symmetry), so with tolRotation > 0 every
        # movable panel has such a near-null mode. A full-tolerance move costs as much as one point off by
        # prior_strain — the points' noise level when known, else PANEL_PRIOR_STRAIN (1 µε) — far below what a
        # panel's points carry: determined corrections feel no pull, but systematic residuals of real data
        # cannot drag a null mode to its bound either.
        self.prior_scale = None
        if self.kinds and self.refined.size:
            strain = PANEL_PRIOR_STRAIN if prior_strain is None else max(prior_strain, PANEL_PRIOR_STRAIN)
            scale = strain * float(np.sqrt(np.mean(sqrt_w ** 2)))
            self.prior_scale = scale / (self.hi[n_g:] - self.centre[n_g:])
        # slot of each point's panel among the refined ones (−1: fixed panel, gap, no panels), to scatter one
        # grouped perturbation into the right columns
        slot = np.full(max(panels.layout.n_panels if panels is not None else 0, 1), -1, np.int64)
        slot[self.refined] = np.arange(self.refined.size)
        self.point_slot = np.where(self.point_panel >= 0, slot[np.maximum(self.point_panel, 0)], -1)
        # average gauge (docs/geometry.md §6.2): strong linear constraint rows on the panel corrections; their
        # panel-centre directions follow the current beam centre
        kind_names = [kind for kind, _ in self.kinds]
        self.gauge = self.prior_scale is not None and freedom.gauge != "fixed"
        self.n_gauge = 0
        self.n_hold = 0
        self.hold_matrix = np.zeros((0, self.x0.size))
        self.hold_scale = 0.0
        if self.gauge:
            self.kind_slot = {kind: k for k, kind in enumerate(kind_names)}
            self.gauge_name = freedom.gauge
            # each panel weighs by its points: a panel a few points barely place must not move the BC
            self.gauge_weights = np.bincount(self.point_panel[self.point_panel >= 0],
                                             minlength=panels.layout.n_panels)[self.refined].astype(np.float64)
            self.gauge_info = self._shift_information() if "dy_px" in self.kind_slot else None
            self.i_bc = tuple(free.index(name) if name in free else -1 for name in ("bc_y_px", "bc_z_px"))
            # global columns the gauge rows depend on (the directions û; Lsd scales the mean dLsd)
            self.i_gauge_global = {i for i in self.i_bc if i >= 0} | (
                {free.index("lsd_um")} if "lsd_um" in free and "dlsd_um" in kind_names else set())
            r_px = np.hypot(y - start.bc_y_px, z - start.bc_z_px)
            r_typ = max(float(np.median(r_px)), 1.0)
            # a violation of v px costs as much as every point off by GAUGE_WEIGHT·v px (strain v/r_typ)
            self.gauge_scale = GAUGE_WEIGHT * float(np.sqrt(np.sum(sqrt_w ** 2))) / r_typ
            self.n_gauge = len(self.gauge_forms(self.x0))

    # -- average gauge --------------------------------------------------------------------------------
    def _shift_information(self) -> np.ndarray:
        """Per refined panel, ``JᵀJ`` of its points on (dY, dZ), its other corrections profiled out (at x0)."""
        n_pts, nref = self.y.size, self.refined.size
        jac = self.jacobian(self.x0)[:n_pts]  # n_gauge is still 0: no gauge rows yet
        kinds = list(self.kind_slot)
        info = np.zeros((nref, 2, 2))
        for s_ in range(nref):
            rows = self.point_slot == s_
            cols = [self.n_global + self.kind_slot[k] * nref + s_ for k in kinds]
            jp = jac[rows][:, cols]
            full = jp.T @ jp
            d = [kinds.index("dy_px"), kinds.index("dz_px")]
            o = [k for k in range(len(kinds)) if k not in d]
            block = full[np.ix_(d, d)]
            if o:
                block = block - full[np.ix_(d, o)] @ np.linalg.pinv(full[np.ix_(o, o)]) @ full[np.ix_(o, d)]
            info[s_] = 0.5 * (block + block.T)
        return info

    def gauge_forms(self, x) -> dict:
        """The gauge forms at the beam centre of ``x`` restricted to the refined kinds."""
        bc = [x[i] if i >= 0 else getattr(self.start, name)
              for i, name in zip(self.i_bc, ("bc_y_px", "bc_z_px"))]
        lsd = x[self.free.index("lsd_um")] if "lsd_um" in self.free else self.start.lsd_um
        return gauge_coefficients(self.panels.layout, self.refined, bc[0], bc[1], tuple(self.kind_slot), lsd,
                                  self.gauge_name, self.gauge_weights, self.gauge_info)

    def gauge_matrix(self, x) -> np.ndarray:
        """Rows (forms × parameters) of the gauge forms in pixels."""
        forms = self.gauge_forms(x)
        n = self.refined.size
        mat = np.zeros((len(forms), x.size))
        for i, form in enumerate(forms.values()):
            for kind, coef in form.items():
                first = self.n_global + self.kind_slot[kind] * n
                mat[i, first:first + n] = coef
        return mat

    def gauge_residuals(self, x) -> np.ndarray:
        return self.gauge_matrix(x) @ x

    # -- vector → model -------------------------------------------------------------------------------
    def geometry_of(self, x) -> Geometry:
        values = dict(zip(self.free, x[:self.n_global]))
        if self.cartesian:
            a, b = x[self.i1], x[self.i3]
            values["p1"] = math.hypot(a, b)
            values["p3_deg"] = math.degrees(math.atan2(b, a)) if (a or b) else self.start.p3_deg
        return replace(self.start, **values)

    def table_of(self, x) -> np.ndarray:
        if not self.kinds:
            return self.table0
        table = self.table0.copy()
        n = self.refined.size
        for k, (kind, _) in enumerate(self.kinds):
            v = x[self.n_global + k * n:self.n_global + (k + 1) * n]
            if kind == "dtheta_deg":
                table[self.refined, PT_COS] = np.cos(np.radians(v))
                table[self.refined, PT_SIN] = np.sin(np.radians(v))
            else:
                table[self.refined, _TABLE_COLUMN[kind]] = v
        return table

    def panels_of(self, x) -> Panels | None:
        if not self.kinds:
            return self.panels
        shifts = list(self.panels.shifts)
        n = self.refined.size
        for k, (kind, _) in enumerate(self.kinds):
            v = x[self.n_global + k * n:self.n_global + (k + 1) * n]
            for p, value in zip(self.refined, v):
                shifts[p] = replace(shifts[p], **{kind: float(value)})
        return Panels(self.panels.layout, tuple(shifts))

    def strains(self, x) -> np.ndarray:
        self.n_eval += 1
        geom = self.geometry_of(x)
        self.kernel(self.y, self.z, kernel_vector(geom), self.col_to_iy, self.row_to_iz, self.n_z,
                    self.table_of(x), self.r, self.eta)
        return 1.0 - self.r / (geom.lsd_um * self.tan_tth)

    def residuals(self, x) -> np.ndarray:
        s = self.strains(x)
        res = np.where(np.isfinite(s), self.sqrt_w * s, 1.0)
        if self.prior_scale is None:
            return res
        parts = [res, self.prior_scale * (x[self.n_global:] - self.centre[self.n_global:])]
        if self.n_gauge:
            parts.append(self.gauge_scale * self.gauge_residuals(x))
        if self.n_hold:
            parts.append(self.hold_scale * (self.hold_matrix @ (x - self.x0)))
        return np.concatenate(parts)

    def jacobian(self, x) -> np.ndarray:
        """Central-difference Jacobian of :meth:`residuals`, one grouped perturbation per panel kind."""
        m = x.size
        n_rows = self.y.size + (m - self.n_global + self.n_gauge + self.n_hold if self.prior_scale is not None else 0)
        jac = np.zeros((n_rows, m))
        if self.prior_scale is not None:
            jac[self.y.size + np.arange(m - self.n_global), np.arange(self.n_global, m)] = self.prior_scale
        h0 = n_rows - self.n_hold
        g0 = h0 - self.n_gauge
        if self.n_gauge:
            # exact in the panel corrections; the beam-centre columns (the directions û) by the differences below
            jac[g0:h0] = self.gauge_scale * self.gauge_matrix(x)
            jac[g0:h0, :self.n_global] = 0.0

        def diff(delta):
            xp = np.clip(x + delta, self.lo, self.hi)
            xm = np.clip(x - delta, self.lo, self.hi)
            h = xp - xm
            return self.residuals(xp) - self.residuals(xm), h

        for j in range(self.n_global):
            delta = np.zeros(m)
            delta[j] = self.steps[j]
            d, h = diff(delta)
            jac[:self.y.size, j] = d[:self.y.size] / h[j] if h[j] > 0 else 0.0
            if self.n_gauge and j in self.i_gauge_global and h[j] > 0:
                jac[g0:h0, j] = d[g0:h0] / h[j]
        n = self.refined.size
        rows = np.flatnonzero(self.point_slot >= 0)
        for k in range(len(self.kinds)):
            first = self.n_global + k * n
            delta = np.zeros(m)
            delta[first:first + n] = self.steps[first:first + n]
            d, h = diff(delta)
            cols = first + self.point_slot[rows]
            hh = h[cols]
            jac[rows, cols] = np.where(hh > 0, d[rows] / np.where(hh > 0, hh, 1.0), 0.0)
        if self.n_hold:
            jac[h0:] = self.hold_scale * self.hold_matrix
        return jac

    # -- directions the data do not determine ---------------------------------------------------------
    def undetermined_directions(self, x, noise: float) -> np.ndarray:
        """Directions (rows, in parameter space) the point rows and gauge rows cannot fix to better than
        :data:`UNDETERMINED_FRACTION` of the parameters' tolerances, or of :data:`UNDETERMINED_SCALE` where
        that is larger (the noise ``noise`` per weighted residual).

        Directions are found in parameters scaled by their tolerances (so a direction's length is in units of
        the search box); the prior rows are left out, since they exist only to hold such directions.
        """
        n = self.y.size
        jac = self.jacobian(x)
        rows = [jac[:n]]
        if self.n_gauge:
            h0 = jac.shape[0] - self.n_hold
            rows.append(jac[h0 - self.n_gauge:h0])
        # the scale of each correction: its tolerance, but never below its natural size — a tight box is no
        # sign that the rings cannot see a correction (tolShifts 0.05 px must not hold every shift)
        floor = np.array([UNDETERMINED_SCALE.get(label.split()[-1], 0.0) for label in self.labels])
        span = np.maximum(np.maximum(self.hi - self.centre, floor), 1e-300)
        js = np.vstack(rows) * span
        lam, vec = np.linalg.eigh(js.T @ js)
        sigma = noise / np.sqrt(np.maximum(lam, 1e-300))
        weak = vec[:, sigma > UNDETERMINED_FRACTION]
        # only directions within the panel corrections: the global parameters have their own tolerances
        # and at_bound checks, and an undetermined global direction fails the fit
        weak = weak[:, np.sum(weak[:self.n_global] ** 2, axis=0) < 0.5]
        return (weak / span[:, None]).T

    def hold(self, directions: np.ndarray, noise: float) -> None:
        """Hold ``directions`` (rows of :meth:`undetermined_directions`: ``row·(x − x0)`` is in units of the
        search half-widths) at the start values from now on, by strong residual rows: a violation of 1e-4 of
        the half-width costs as much as one residual at the noise level ``noise``."""
        d = np.asarray(directions, dtype=np.float64).reshape(-1, self.x0.size)
        self.hold_matrix = d
        self.n_hold = d.shape[0]
        self.hold_scale = 1e4 * max(noise, 1e-300)


def fit_geometry(y_px, z_px, two_theta_deg, start: Geometry, *, weights=None, panels: Panels | None = None,
                 free=FREE_DEFAULT, tolerances: Tolerances = Tolerances(), panel_freedom: PanelFreedom | None = None,
                 panel_anchor: Panels | None = None, method: str = "least-squares", robust_scale: float = 0.0,
                 panel_prior_strain: float | None = None, max_evaluations: int = 20000,
                 error_model=None, hold_undetermined: bool = True) -> FitResult:
    """Refine the free geometry parameters (and panel corrections) so that every point lies on its ring.

    Parameters
    ----------
    y_px, z_px : array_like
        Detector positions of the points (raw pixel coordinates).
    two_theta_deg : array_like
        Ideal 2θ of each point's ring, degrees.
    start : Geometry
        Start geometry; fixed parameters are taken from it and bounds are centred on it.
    weights : array_like, optional
        Per-point weights (default: those of ``error_model`` when given, :func:`~midas_ref.uncertainty.point_weights`;
        else 1).
    panels : Panels, optional
        Panel corrections: held fixed unless ``panel_freedom`` is given, else the start of their fit.
    free : sequence of str
        Geometry field names to refine.
    tolerances : Tolerances
        Half-widths of the search box; a zero tolerance keeps that parameter fixed.
    panel_freedom : PanelFreedom, optional
        Refine per-panel corrections (requires ``panels``).
    panel_anchor : Panels, optional
        Centre of the panel bounds and of the weak prior (default: ``panels``). Iterated refinements pass the
        run's initial corrections, as CalibrantPanelShiftsOMP anchors its bounds at the initial values.
    method : {"least-squares", "nelder-mead"}
    panel_prior_strain : float, optional
        Strength of the weak prior on panel corrections: a full-tolerance move costs as much as one point off
        by this strain (default :data:`PANEL_PRIOR_STRAIN`; pass the points' noise level when known).
    robust_scale : float
        Least squares only: > 0 switches to the pseudo-Huber loss (``soft_l1``) with this strain scale, so
        points beyond it pull with a constant (L1-like) force instead of a growing one — outliers lose their
        grip without any point being dropped outright.
    max_evaluations : int
    hold_undetermined : bool
        Least squares with panel corrections: combinations of panel corrections the rings fix to no better
        than :data:`UNDETERMINED_FRACTION` of their tolerances are held at their start values (listed in
        ``FitResult.held``) and the fit repeated.
    error_model : (sigma_strain, group, systematic_var), optional
        The points' error model (:mod:`midas_ref.uncertainty`): peak-fit standard errors in strain, the
        ``PeakPoints.group`` ids and the systematic floor ``s²``. The covariance is then the sandwich of that
        model (whatever ``weights`` were used); without it, the data-only ``s²·(JᵀWJ)⁻¹``.

    Returns
    -------
    FitResult
    """
    y = np.ascontiguousarray(y_px, dtype=np.float64)
    z = np.ascontiguousarray(z_px, dtype=np.float64)
    tan_tth = np.tan(np.radians(np.asarray(two_theta_deg, dtype=np.float64)))
    if not (y.shape == z.shape == tan_tth.shape) or y.ndim != 1:
        raise CalibrationError("points and their ring angles must be 1-D arrays of one length")
    if panel_freedom is not None and panels is None:
        raise CalibrationError("panel corrections can only be refined with a panel layout (NPanelsY/Z)")
    if method not in ("least-squares", "nelder-mead"):
        raise CalibrationError(f"unknown optimiser {method!r}; use 'least-squares' or 'nelder-mead'")
    if method == "nelder-mead" and panel_freedom is not None and panel_freedom.gauge != "fixed":
        # an exact L1 penalty on the gauge forms makes valleys Subplex cannot follow (measured: shifts 0.95 px
        # off on exact points, against 0.08 px in the fixed gauge)
        raise CalibrationError("the legacy Nelder–Mead optimiser keeps the fixed panel gauge: use PanelGauge "
                               "fixed (FixPanelID) with it, or the least-squares optimiser")
    free = refined_parameters(free, tolerances)
    if weights is None and error_model is not None:
        from .uncertainty import point_weights

        weights = point_weights(*error_model)
    w = np.ones_like(y) if weights is None else np.asarray(weights, dtype=np.float64)
    cartesian = method == "least-squares" and "p1" in free and "p3_deg" in free
    model = _Model(y, z, tan_tth, np.sqrt(w), start, free, tolerances, panels, panel_freedom, cartesian,
                   panel_anchor, panel_prior_strain)
    n_par = model.x0.size
    if n_par == 0:
        raise CalibrationError("every geometry parameter has a zero tolerance: nothing to fit")
    if y.size < n_par + 1:
        raise CalibrationError(f"{y.size} ring points cannot determine {n_par} parameters")
    lo, hi, x0 = model.lo, model.hi, model.x0

    if method == "least-squares":
        from scipy.optimize import least_squares

        def solve(start):
            # the matrices here are small (points × parameters); a multi-threaded BLAS on a busy machine spends
            # 100× longer synchronising threads than computing (measured: SVD 580 × 78, 0.2 s vs 2.7 ms)
            with threadpool_limits(1, user_api="blas"):
                sol = least_squares(model.residuals, start, jac=model.jacobian, bounds=(lo, hi), method="trf",
                                    x_scale="jac", xtol=1e-14, ftol=1e-14, gtol=1e-14, max_nfev=max_evaluations,
                                    tr_solver="exact", loss="soft_l1" if robust_scale > 0 else "linear",
                                    f_scale=robust_scale if robust_scale > 0 else 1.0)
            return sol.x, bool(sol.success), str(sol.message)

        x_best, success, message = solve(x0)
        if model.prior_scale is not None and hold_undetermined:
            # directions of the panel corrections the rings do not fix are held at their start values (the
            # minimum-norm solution) and the fit is repeated, instead of letting the weak prior and any
            # systematic residual decide where in the search box they end
            noise = float(np.sqrt(np.mean(model.residuals(x_best)[:y.size] ** 2)))
            weak = model.undetermined_directions(x_best, noise)
            if weak.shape[0]:
                model.hold(weak, noise)
                x_best, success, message = solve(np.clip(model.x0, lo, hi))
    else:
        import nlopt

        best = [math.inf, x0.copy()]

        def objective(x, grad):
            s = model.strains(x)
            value = float(np.sum(np.where(np.isfinite(s), w * np.abs(s), 1.0)))
            if value < best[0]:
                best[0], best[1] = value, x.copy()
            return value

        algorithm = nlopt.LN_NELDERMEAD if n_par <= 20 else nlopt.LN_SBPLX
        opt = nlopt.opt(algorithm, n_par)
        opt.set_lower_bounds(lo)
        opt.set_upper_bounds(hi)
        opt.set_initial_step(np.maximum((hi - lo) / 20.0, 1e-12))
        opt.set_min_objective(objective)
        opt.set_xtol_abs(np.maximum((hi - lo) * 1e-12, 1e-15))
        opt.set_ftol_rel(1e-15)
        opt.set_maxeval(max_evaluations)
        try:
            opt.optimize(np.clip(x0, lo, hi))
            success = True
            message = f"nlopt result code {opt.last_optimize_result()}"
        except nlopt.RoundoffLimited:
            success, message = False, "nlopt stopped by round-off"
        x_best = best[1]
    span = hi - lo
    at_bound = tuple(label for k, label in enumerate(model.labels)
                     if not (cartesian and k in (model.i1, model.i3))
                     and min(x_best[k] - lo[k], hi[k] - x_best[k]) < 1e-6 * span[k])
    with threadpool_limits(1, user_api="blas"):
        covariance, std_errors = _covariance(model, x_best, error_model)
    gauge = {}
    if model.n_gauge:
        forms = model.gauge_forms(x_best)
        gauge = {"panels": tuple(int(p) for p in model.refined), "forms": forms,
                 "values_px": dict(zip(forms, (float(v) for v in model.gauge_residuals(x_best))))}
    held = tuple(_direction_text(row, model.labels) for row in model.hold_matrix)
    return FitResult(model.geometry_of(x_best), model.panels_of(x_best), model.strains(x_best), model.n_eval,
                     success, message, at_bound, std_errors, gauge, covariance, tuple(model.labels), held)


def _direction_text(row, labels) -> str:
    """A held direction as the labels that make it up, e.g. ``"panel 21 dy_px ↔ panel 21 dtheta_deg"``."""
    size = np.abs(np.asarray(row)) / max(float(np.abs(row).max()), 1e-300)
    return " ↔ ".join(labels[k] for k in np.argsort(-size) if size[k] >= 0.3)


def _covariance(model: _Model, x, error_model=None) -> tuple[np.ndarray, dict]:
    """Covariance of the refined parameters (model labels) and their standard errors.

    Without ``error_model``: from the data alone, ``s²·(JᵀWJ)⁻¹`` with the residual variance ``s²`` of the
    weighted point residuals. With ``error_model = (sigma_strain, group, systematic_var)`` (the points' error
    model, :mod:`midas_ref.uncertainty`): the sandwich ``A·B·A``, ``A = (JᵀWJ)⁻¹``, with the meat ``B`` of
    :func:`~midas_ref.uncertainty.covariance_meat` — the peak-fit errors, one error per crowded run, plus the
    systematic floor.

    The weak prior on panel corrections is left out (a direction the rings cannot see gets an infinite error
    instead of the prior's width). In the average gauge the covariance is that of the constrained problem:
    ``A = N (Nᵀ JᵀWJ N)⁻¹ Nᵀ`` with ``N`` a basis of the directions the gauge forms leave free (a common shift
    of the panels and the beam centre, undetermined together, is determined once the mean shift is held at
    zero). A parameter with any share in a direction the data do not determine gets an infinite variance."""
    n = model.y.size
    res = model.residuals(x)[:n]
    dof = n - x.size + model.n_gauge
    if dof <= 0:
        return np.full((x.size, x.size), np.nan), {}
    jac = model.jacobian(x)[:n]
    # scale columns to unit norm so the eigenvalue cut compares like with like
    norm = np.sqrt(np.sum(jac * jac, axis=0))
    norm[norm == 0] = 1.0
    basis = np.eye(x.size)
    # held directions are constraints of the fit, and undetermined by the data: the other directions' errors
    # are computed with them held, and every parameter with a share in them is reported undetermined below
    constraints = ([model.gauge_matrix(x)] if model.n_gauge else []) + ([model.hold_matrix] if model.n_hold else [])
    if constraints:
        a = np.vstack(constraints) / norm
        _, sv, vt = np.linalg.svd(a)
        rank = int(np.sum(sv > sv.max() * 1e-12))
        basis = vt[rank:].T
    js = (jac / norm) @ basis
    lam, vec = np.linalg.eigh(js.T @ js)
    null = lam <= max(lam.max(), 0.0) * 1e-12
    inv_lam = np.zeros_like(lam)
    np.divide(1.0, lam, out=inv_lam, where=~null)
    vec = basis @ vec
    bread = (vec * inv_lam) @ vec.T / np.outer(norm, norm)  # (JᵀWJ)⁻¹ on the determined directions
    if error_model is None:
        cov = bread * (float(res @ res) / dof)
    else:
        from .uncertainty import covariance_meat

        sigma, group, systematic_var = error_model
        sqrt_w = model.sqrt_w
        safe = np.where(sqrt_w > 0, sqrt_w, 1.0)
        jac_strain = jac / safe[:, None]
        meat = covariance_meat(jac_strain, sqrt_w ** 2, sigma, group, systematic_var)
        cov = bread @ meat @ bread
    var = np.diag(cov).copy()
    undetermined = (vec[:, null] ** 2).sum(axis=1) > 1e-12
    for row in model.hold_matrix:
        share = np.abs(row) / max(float(np.abs(row).max()), 1e-300)
        undetermined |= share >= HELD_SHARE
    var[undetermined] = np.inf
    cov[undetermined, :] = np.nan
    cov[:, undetermined] = np.nan
    np.fill_diagonal(cov, var)
    return cov, {label: float(math.sqrt(max(var[k], 0.0))) for k, label in enumerate(model.labels)}
