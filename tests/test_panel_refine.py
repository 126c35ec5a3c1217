"""Panel refinement on simulated Pilatus 2M images (24 modules): accuracy against the simulator's truth.

Bounds are those of the panel issue (dY, dZ ≤ 0.02 px noise-free, 3× with Poisson noise; global geometry as
the calibration issue, i.e. the ge2048 gates of validation/gates.py). Two physical limits shape what is compared:

* panels that no ring crosses cannot be placed at all (they are reported as not refined);
* with rotations free, a panel turning about the beam axis only slides its arcs along themselves, so the
  tangential part of each panel's placement is not in the data; what the rings determine — every point's
  radius — is compared instead.

The simulator's truth is in the ``FixPanelID 0`` gauge. The fits run in ``PanelGauge mean`` (zero mean shift:
the exact gauge, so the fit is the fixed gauge's) and the truth is carried into it exactly (:func:`in_gauge`:
the mean shift goes to the beam centre), so the physics is what is compared; ``PanelGauge average`` (also
zero net dilation and rotation, not exact symmetries) is measured against the same truth in
``test_average_gauge_on_a_simulated_pilatus``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from midas_ref.geometry import pixel_to_r_eta
from midas_ref.panel_refine import PanelSettings, refine_panels
from midas_ref.panels import Panels
from midas_ref.refine import PanelFreedom, Tolerances
from midas_ref.rings import ring_table
from simulate import scenario, simulate
from validation.gates import SYNTHETIC_GATES

pytestmark = pytest.mark.slow


def render(noise_free=True, rotations=False, dlsd_um=0.0, p4=0.0, doublet=None, seed=3):
    cfg = scenario("pilatus2m_noisefree" if noise_free else "pilatus2m")
    rng = np.random.default_rng(seed)
    shifts = tuple(dataclasses.replace(s, dtheta_deg=s.dtheta_deg if rotations else 0.0,
                                       dlsd_um=rng.uniform(-dlsd_um, dlsd_um) if s.id else 0.0)
                   for s in cfg.panels.shifts)
    truth = Panels(cfg.panels.layout, shifts)
    geometry = dataclasses.replace(cfg.geometry, p4=p4)
    peak = cfg.peak if doublet is None else dataclasses.replace(
        cfg.peak, doublet_wavelength_angstrom=cfg.material.wavelength_angstrom * doublet, doublet_ratio=0.5)
    cfg = dataclasses.replace(cfg, panels=truth, geometry=geometry, peak=peak)
    sim = simulate(cfg)
    mask = sim.gap_mask.copy()
    if sim.bad_mask is not None:
        mask |= sim.bad_mask
    return cfg, sim.image.astype(np.float64), mask


def rings_of(cfg, wavelength=None):
    m = cfg.material
    return ring_table(m.space_group, m.lattice, wavelength or m.wavelength_angstrom, lsd_um=cfg.geometry.lsd_um,
                      rho_d_um=3.0e5)


def start_of(truth):
    # a global calibration's typical leftovers: Lsd 300 µm, BC a few tenths of a pixel, tilts unknown
    return dataclasses.replace(truth, lsd_um=truth.lsd_um + 300.0, bc_y_px=truth.bc_y_px + 0.3,
                               bc_z_px=truth.bc_z_px - 0.2, ty_deg=0.0, tz_deg=0.0, p4=0.0)


def in_gauge(geometry, panels, gauge_forms):
    """The truth ``(geometry, panels)`` in the gauge of a fit (its ``PanelResult.gauge_forms``): the
    combination of the gauge modes (common shift → BC; in ``average`` also a dilation about the beam → Lsd and
    a rotation about it → nothing) that zeroes the fit's forms on the truth is taken out of the panels. Exact
    for ``mean`` (``(BC, d) ≡ (BC − s, d − s)``); for ``average`` only to first order (the dilation and
    rotation are not symmetries of the data)."""
    from midas_ref.panels import panel_bounds

    ids = np.asarray(gauge_forms["panels"])
    forms = [f for name, f in gauge_forms["forms"].items() if name in
             ("mean_dy_px", "mean_dz_px", "dilation_px", "rotation_px")]
    b = panel_bounds(panels.layout).astype(float)[ids]
    v = np.c_[0.5 * (b[:, 0] + b[:, 1]) - geometry.bc_y_px, 0.5 * (b[:, 2] + b[:, 3]) - geometry.bc_z_px]
    modes = [np.tile([1.0, 0.0], (ids.size, 1)), np.tile([0.0, 1.0], (ids.size, 1)), v, np.c_[-v[:, 1], v[:, 0]]]
    modes = modes[:len(forms)]
    d = np.array([[panels.shifts[p].dy_px, panels.shifts[p].dz_px] for p in ids])

    def value(form, x):
        zero = np.zeros(ids.size)
        return form.get("dy_px", zero) @ x[:, 0] + form.get("dz_px", zero) @ x[:, 1]

    coef = np.linalg.solve([[value(f, m) for m in modes] for f in forms], [value(f, d) for f in forms])
    coef = np.concatenate([coef, np.zeros(4 - coef.size)])
    new = dict(zip(ids.tolist(), d - sum(k * m for k, m in zip(coef, modes))))
    shifts = tuple(dataclasses.replace(s, dy_px=float(new[s.id][0]), dz_px=float(new[s.id][1])) if s.id in new else s
                   for s in panels.shifts)
    g = dataclasses.replace(geometry, bc_y_px=geometry.bc_y_px - coef[0], bc_z_px=geometry.bc_z_px - coef[1],
                            lsd_um=geometry.lsd_um * (1 - coef[2]))
    return g, Panels(panels.layout, shifts)


MEAN = PanelFreedom(shifts_px=1.5, gauge="mean")


def refine(cfg, image, mask, *, freedom=MEAN, tolerances=Tolerances(p0=0, p1=0, p2=0),
           doublet_rings=(), order=4, iterations=4):
    settings = PanelSettings(n_iterations=iterations, freedom=freedom, tolerances=tolerances, distortion_order=order)
    return refine_panels(image, mask, start_of(cfg.geometry), Panels.from_shifts(cfg.panels.layout), rings_of(cfg),
                         settings=settings, doublet_rings=doublet_rings)


def determined(result):
    return [p for p in range(result.panels.layout.n_panels)
            if p not in result.unrefined and np.isfinite(result.std_errors.get(f"panel {p} dy_px", np.inf))]


def truth_of(result, cfg):
    """The simulator's truth in the gauge of ``result`` (its refined panels)."""
    if result.gauge == "fixed":
        return cfg.geometry, cfg.panels
    return in_gauge(cfg.geometry, cfg.panels, result.gauge_forms)


def shift_errors(result, truth):
    return np.array([[a.dy_px - b.dy_px, a.dz_px - b.dz_px, a.dlsd_um - b.dlsd_um]
                     for a, b in zip(result.panels.shifts, truth.shifts)])


def global_errors(result, truth):
    g = result.geometry
    return (abs(g.lsd_um - truth.lsd_um), max(abs(g.bc_y_px - truth.bc_y_px), abs(g.bc_z_px - truth.bc_z_px)),
            max(abs(g.ty_deg - truth.ty_deg), abs(g.tz_deg - truth.tz_deg)))


@pytest.mark.parametrize("noise_free, factor", [(True, 1.0), (False, 3.0)])
def test_panel_shifts_and_geometry_recovered(noise_free, factor):
    cfg, image, mask = render(noise_free=noise_free)
    result = refine(cfg, image, mask)
    geometry, panels = truth_of(result, cfg)
    err = shift_errors(result, panels)
    ok = determined(result)
    # the two modules around the beam stop carry no ring inside the detector's ring range
    assert len(ok) >= 20 and set(result.unrefined) <= {11, 12}
    assert np.abs(err[ok, :2]).max() <= 0.02 * factor
    d_lsd, d_bc, d_tilt = global_errors(result, geometry)
    gate = SYNTHETIC_GATES[("ge2048", "noisefree" if noise_free else "poisson")]
    assert d_lsd <= gate["err_lsd_um"] and d_bc <= gate["err_bc_px"] and d_tilt <= gate["err_tilt_deg"]
    assert result.mean_strain < (2e-6 if noise_free else 4e-6)
    # the gauge holds on the result; the truth needed the beam centre moved by its mean shift (0.06 px)
    values = result.gauge_forms["values_px"]
    assert len(values) == 2 and max(abs(v) for v in values.values()) < 1e-6
    assert not result.at_bound


def test_average_gauge_on_a_simulated_pilatus():
    """``PanelGauge average``: the constraints hold, Lsd and BC are the truth's average detector — and the
    price of holding the net dilation and rotation, which the rings do see across each panel."""
    cfg, image, mask = render()
    result = refine(cfg, image, mask, freedom=PanelFreedom(shifts_px=1.5, gauge="average"))
    assert result.gauge == "average" and set(result.unrefined) <= {11, 12}
    ids = [p for p in range(24) if p not in result.unrefined]
    values = result.gauge_forms["values_px"]
    assert len(values) == 4 and max(abs(v) for v in values.values()) < 1e-6, values
    geometry, panels = truth_of(result, cfg)
    # measured: Lsd 1.0 µm, BC 0.0025 px from the truth's average detector (first order: the truth's net
    # dilation is not a symmetry); shifts 0.080 px max (rms 0.037) off the truth carried into the gauge; mean
    # |ε| 38 µε against 0.07 µε in the mean gauge — the price of holding the dilation
    d_lsd, d_bc, _ = global_errors(result, geometry)
    assert d_lsd < 5.0 and d_bc < 0.01
    assert np.abs(shift_errors(result, panels)[ids, :2]).max() < 0.2
    assert 10e-6 < result.mean_strain < 60e-6
    assert not result.at_bound


def test_rotations_free_every_ring_point_lands_on_its_true_radius():
    cfg, image, mask = render(rotations=True)
    result = refine(cfg, image, mask, freedom=PanelFreedom(shifts_px=1.5, rotation_deg=0.2, gauge="mean"))
    pts = result.points
    r_fit, _ = pixel_to_r_eta(pts.y_px, pts.z_px, result.geometry, result.panels)
    r_true, _ = pixel_to_r_eta(pts.y_px, pts.z_px, cfg.geometry, cfg.panels)
    keep = ~result.outlier
    assert np.abs(r_fit - r_true)[keep].max() / cfg.geometry.px_um < 0.02
    # with rotations free the mean gauge holds the mean of the radial parts of the shifts (§6.2): the truth
    # carried there moves its BC by 0.13 px
    d_lsd, d_bc, d_tilt = global_errors(result, truth_of(result, cfg)[0])
    gate = SYNTHETIC_GATES[("ge2048", "noisefree")]
    assert d_lsd <= gate["err_lsd_um"] and d_bc <= gate["err_bc_px"] and d_tilt <= gate["err_tilt_deg"]
    assert not [label for label in result.at_bound if "dtheta" in label]
    # and the rotation null modes are reported, not hidden
    assert len(result.poorly_constrained) >= 10


def test_per_panel_lsd_recovered():
    cfg, image, mask = render(dlsd_um=50.0)
    # the truth's dLsd are in the FixPanelID 0 gauge: compare there
    result = refine(cfg, image, mask, freedom=PanelFreedom(shifts_px=1.5, lsd_um=100.0, gauge="fixed"))
    err = shift_errors(result, cfg.panels)
    ok = determined(result)
    assert np.abs(err[ok, 2]).max() <= 5.0
    assert np.abs(err[ok, :2]).max() <= 0.02


def test_distortion_order_6_recovers_p4():
    cfg, image, mask = render(p4=3e-4)
    result = refine(cfg, image, mask, tolerances=Tolerances(p0=0, p1=0, p2=2e-3, p4=2e-3), order=6)
    # p4·ρ⁶ at the ring edge ρ ≈ 0.9 moves the outer rings by ~50 px·1.6e-4; noise-free data pin it to 1 %
    assert result.geometry.p4 == pytest.approx(3e-4, rel=0.01)
    assert abs(result.geometry.p2) < 2e-6


def test_doublet_modelling_removes_the_single_peak_bias():
    """A second wavelength (0.6 % longer: satellites ~2 FWHM out) pulls single-peak fits outward; modelling
    its rings removes the bias."""
    cfg, image, mask = render(doublet=1.006)
    # in the truth's gauge: the biased single-peak fit's Lsd error depends on the gauge (measured 162 µm fixed,
    # 42 µm mean — not understood yet: the two gauges should give the same fit)
    fixed = PanelFreedom(shifts_px=1.5, gauge="fixed")
    single = refine(cfg, image, mask, freedom=fixed)
    lam2 = cfg.peak.doublet_wavelength_angstrom
    double = refine(cfg, image, mask, doublet_rings=rings_of(cfg, lam2), freedom=fixed)
    d_lsd_single, d_bc_single, _ = global_errors(single, truth_of(single, cfg)[0])
    d_lsd_double, d_bc_double, _ = global_errors(double, truth_of(double, cfg)[0])
    # measured: single +19 µm (+162 µm / 0.41 px before the weighted fit, the backfitting pass and the
    # pixel-averaged profile), doublet −2.2 µm / 0.005 px: modelling the satellite still removes a bias the
    # single-peak model keeps
    assert d_lsd_single > 10.0 and d_lsd_single > 3 * d_lsd_double and d_bc_single > 2 * d_bc_double
    assert d_lsd_double < 5.0 and d_bc_double < 0.01
    err = shift_errors(double, truth_of(double, cfg)[1])
    assert np.abs(err[determined(double), :2]).max() < 0.03
