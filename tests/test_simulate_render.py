"""Noise-free rendering checked against the true geometry, without the calibrator.

Ring positions are measured with the windowed, area-weighted radial centroid of ``ring_centroids`` on
pixel-centre radii from ``midas_ref.geometry.r_eta_maps`` of the true geometry.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from ring_centroids import sector_centroids, usable_mask

from midas_ref import RingTableError
from midas_ref.detector import Geometry, PanelLayout, PanelShift
from midas_ref.geometry import r_eta_maps
from midas_ref.panels import Panels
from simulate import (DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig, SimulationError,
                      pixel_rule, pseudo_voigt, render_expected, ring_set)
from simulate.config import CEO2, TAIL_CUTOFF_REL
from simulate.render import profile_cutoff_um, r_gradient_bound

#: Requirement of issue #4: ring centroids at the true radius to ≤ 0.01 px.
CENTROID_TOL_PX = 0.01
#: Supersampling convergence: a finer rule moves centroids by < 0.002 px.
CONVERGENCE_TOL_PX = 0.002
#: The adaptive pixel rule stays within 1e-5 of the peak height of the full rule (render_kernels).
ADAPTIVE_TOL_REL = 1e-5
PEAK = 10_000.0
BG = 100.0
BG_SLOPE = 0.2  # counts per px of r

#: Tilted, distorted 512² detector at 250 mm: CeO2 rings 1-11 are complete circles on the image.
GEOM = Geometry(lsd_um=250_000.0, bc_y_px=255.3, bc_z_px=250.7, px_um=200.0, n_pixels_y=512, n_pixels_z=512,
                ty_deg=0.8, tz_deg=-0.5, p0=3e-4, p1=-2e-4, p2=2e-4, p3_deg=25.0)
CEO2_APS = Material(wavelength_angstrom=0.172979, **CEO2)
ETA_CENTRES = np.arange(-180.0, 180.0, 5.0)  # 72 azimuths
ETA_HALF_WIDTH = 5.0


def config(geometry=GEOM, peak=None, rings=None, supersample=4, **intensity):
    return SimulationConfig(
        geometry, CEO2_APS, peak=peak or PeakShape(fwhm_px=2.5, lorentz_fraction=0.5),
        intensity=RingIntensity(peak_counts=PEAK, ring_numbers=rings, **intensity),
        response=DetectorResponse(background_counts=BG, background_slope_per_px=BG_SLOPE),
        supersample=supersample)


@pytest.fixture(scope="module")
def maps():
    return r_eta_maps(GEOM)


def ring_offsets_px(cfg, ring_nr, maps, half_window_px):
    """Sector centroid offsets (px) of ring ``ring_nr`` rendered alone, background subtracted."""
    r, eta = maps
    alone = replace(cfg, intensity=replace(cfg.intensity, ring_numbers=(ring_nr,)))
    rings = ring_set(alone)
    net = render_expected(alone, rings) - (BG + BG_SLOPE * r / GEOM.px_um)
    offsets, _ = sector_centroids(net, r, eta, rings.radius_um[0], half_window_px * GEOM.px_um, ETA_CENTRES,
                                  ETA_HALF_WIDTH)
    return offsets / GEOM.px_um, rings.radius_um[0] / GEOM.px_um


PEAKS = {
    "pseudo-voigt 2.5 px": PeakShape(fwhm_px=2.5, lorentz_fraction=0.5),
    "lorentzian 0.1° 2θ": PeakShape(fwhm_two_theta_deg=0.1, lorentz_fraction=1.0),
    "gaussian 1.2 px": PeakShape(fwhm_px=1.2, lorentz_fraction=0.0),
}


@pytest.mark.parametrize("peak", PEAKS.values(), ids=PEAKS.keys())
def test_every_ring_centroid_at_true_radius(peak, maps):
    cfg = config(peak=peak)
    rings = ring_set(cfg)
    full_circles = 0
    worst = 0.0
    for ring_nr in rings.ring_nr[rings.on_detector]:
        fwhm_px = float(rings.fwhm_um[rings.ring_nr == ring_nr][0]) / GEOM.px_um
        offsets, radius_px = ring_offsets_px(cfg, int(ring_nr), maps, max(5.0 * fwhm_px, 6.0))
        measured = offsets[~np.isnan(offsets)]
        if radius_px < 225:  # the whole circle and its window lie on the image
            assert len(measured) == len(ETA_CENTRES), ring_nr
            full_circles += 1
        if len(measured):
            worst = max(worst, float(np.max(np.abs(measured))))
            assert np.max(np.abs(measured)) <= CENTROID_TOL_PX, (ring_nr, measured)
    assert full_circles >= 10
    assert worst > 0  # the measurement ran


def test_supersampling_convergence(maps):
    """4 × 4 vs 8 × 8 nodes: centroids agree to < 0.002 px (the rule is also good at 1 × 1 and 2 × 2)."""
    narrow = PeakShape(fwhm_px=1.5, lorentz_fraction=0.3)
    for ring_nr in (1, 3, 6, 10):
        fine, _ = ring_offsets_px(config(peak=narrow, supersample=8), ring_nr, maps, 7.5)
        default, _ = ring_offsets_px(config(peak=narrow, supersample=4), ring_nr, maps, 7.5)
        assert np.nanmax(np.abs(default - fine)) < CONVERGENCE_TOL_PX
        coarse, _ = ring_offsets_px(config(peak=narrow, supersample=2), ring_nr, maps, 7.5)
        assert np.nanmax(np.abs(coarse - fine)) < CONVERGENCE_TOL_PX


def test_pixel_rule_is_gauss_legendre():
    nodes, weights = pixel_rule(4)
    assert weights.sum() == pytest.approx(1.0, abs=1e-15)
    assert np.allclose(nodes, -nodes[::-1]) and np.all(np.abs(nodes) < 0.5)
    # exact for polynomials of degree ≤ 2n − 1 over the pixel [−½, ½]
    for degree in range(8):
        exact = 0.0 if degree % 2 else 0.5 ** degree / (degree + 1)
        assert np.sum(weights * nodes ** degree) == pytest.approx(exact, abs=1e-15)


@pytest.mark.parametrize("fwhm_px", [0.8, 2.5, 6.0])
def test_adaptive_rule_matches_full_rule(fwhm_px):
    cfg = config(peak=PeakShape(fwhm_px=fwhm_px, lorentz_fraction=0.5))
    rings = ring_set(cfg)
    adaptive = render_expected(cfg, rings)
    full = render_expected(cfg, rings, adaptive=False)
    assert np.max(np.abs(adaptive - full)) <= ADAPTIVE_TOL_REL * PEAK


def test_numba_kernel_matches_numpy_reference():
    """Both engines, every code path: panels with shift and rotation, texture, missing arc, doublet."""
    layout = PanelLayout(2, 1, 40, 64, (4,), ())
    panels = Panels(layout, (PanelShift(0), PanelShift(1, 0.3, -0.7, 0.4, 20.0, 1e-4)))
    geom = Geometry(lsd_um=250_000.0, bc_y_px=-60.2, bc_z_px=30.4, px_um=200.0, n_pixels_y=84, n_pixels_z=64,
                    ty_deg=0.5, tz_deg=0.3, p0=1e-3, p2=-5e-4, p3_deg=10.0)
    cfg = config(geometry=geom, peak=PeakShape(fwhm_px=2.0, lorentz_fraction=0.3, doublet_wavelength_angstrom=0.18,
                                               doublet_ratio=0.5),
                 texture_amplitude=0.4, texture_order=3, texture_phase_deg=20.0, missing_arcs_deg=((60.0, 75.0),))
    cfg = replace(cfg, panels=panels, response=replace(cfg.response, dtype="int32"))
    rings = ring_set(cfg)
    assert set(rings.line) == {0, 1}
    fast = render_expected(cfg, rings, adaptive=False)
    slow = render_expected(cfg, rings, engine="numpy")
    # rounding only: 1e-12 of the peak height
    np.testing.assert_allclose(fast, slow, rtol=0, atol=1e-12 * PEAK)
    np.testing.assert_allclose(render_expected(cfg, rings), slow, rtol=0, atol=ADAPTIVE_TOL_REL * PEAK)


def test_rings_add_linearly():
    cfg = config()
    rings = ring_set(cfg)
    band = slice(180, 212)  # 32 rows through the beam centre cross every ring
    background = render_expected(replace(cfg, intensity=replace(cfg.intensity, peak_counts=0.0)), rows=band,
                                 adaptive=False)
    total = render_expected(cfg, rings, rows=band, adaptive=False) - background
    parts = sum(render_expected(cfg, rings.select([k]), rows=band, adaptive=False) - background
                for k in range(len(rings)))
    np.testing.assert_allclose(total, parts, rtol=0, atol=1e-9 * PEAK)


def test_background_is_linear_in_r(maps):
    r, _ = maps
    cfg = config()
    image = render_expected(replace(cfg, intensity=replace(cfg.intensity, peak_counts=0.0)))
    # the pixel mean of r differs from the centre value by the curvature of r: < 1e-3 px away from the beam
    far = r > 20 * GEOM.px_um
    np.testing.assert_allclose(image[far], BG + BG_SLOPE * r[far] / GEOM.px_um, rtol=0, atol=BG_SLOPE * 1e-3)


def _radial_moments(cfg, ring_nr, maps, half_window_px):
    """(second moment σ² in px², peak value) of one rendered ring, area-weighted, no window taper."""
    r, _ = maps
    alone = replace(cfg, intensity=replace(cfg.intensity, ring_numbers=(ring_nr,)))
    rings = ring_set(alone)
    net = render_expected(alone, rings) - (BG + BG_SLOPE * r / GEOM.px_um)
    x = (r - rings.radius_um[0]) / GEOM.px_um
    use = (np.abs(x) < half_window_px) & usable_mask(r.shape)
    w = net[use] / r[use]
    return float(np.sum(w * x[use] ** 2) / np.sum(w)), rings


def test_fwhm_in_pixels_and_in_two_theta(maps):
    # Gaussian: σ² = Γ²/(8 ln 2) plus the pixel's own r-spread |∇r|²/12 ≈ 1/12 px²
    gamma = 3.0
    var, _ = _radial_moments(config(peak=PeakShape(fwhm_px=gamma, lorentz_fraction=0.0)), 2, maps, 4 * gamma)
    assert var == pytest.approx(gamma ** 2 / (8 * math.log(2)) + 1 / 12, rel=0.01)
    # constant FWHM in 2θ: Γ_R = Lsd·Δ2θ / cos² 2θ grows with the ring's angle
    peak = PeakShape(fwhm_two_theta_deg=0.1, lorentz_fraction=0.0)
    for ring_nr in (1, 11):
        var, rings = _radial_moments(config(peak=peak), ring_nr, maps, 12.0)
        two_theta = math.radians(rings.two_theta_deg[0])
        gamma_px = GEOM.lsd_um * math.radians(0.1) / math.cos(two_theta) ** 2 / GEOM.px_um
        assert rings.fwhm_um[0] / GEOM.px_um == pytest.approx(gamma_px, rel=1e-12)
        assert var == pytest.approx(gamma_px ** 2 / (8 * math.log(2)) + 1 / 12, rel=0.01)


def test_doublet_lines_at_second_wavelength_with_ratio(maps):
    r, _ = maps
    peak = PeakShape(fwhm_px=1.5, lorentz_fraction=0.0, doublet_wavelength_angstrom=0.172979 * 1.03,
                     doublet_ratio=0.4)
    cfg = config(peak=peak, rings=(3,))
    rings = ring_set(cfg)
    assert list(rings.line) == [0, 1]
    d = rings.d_angstrom[0]
    expect = GEOM.lsd_um * math.tan(2 * math.asin(0.172979 * 1.03 / (2 * d)))
    assert rings.radius_um[1] == pytest.approx(expect, rel=1e-12)
    net = render_expected(cfg, rings) - (BG + BG_SLOPE * r / GEOM.px_um)
    heights = []
    for radius in rings.radius_um:
        heights.append(net[np.abs(r - radius) < 0.1 * GEOM.px_um].mean())
    assert heights[1] / heights[0] == pytest.approx(0.4, rel=0.02)


def test_texture_and_missing_arcs(maps):
    r, eta = maps
    cfg = config(rings=(4,), texture_amplitude=0.5, texture_order=2, texture_phase_deg=30.0,
                 missing_arcs_deg=((150.0, -150.0),))  # through ±180°
    rings = ring_set(cfg)
    background = render_expected(replace(cfg, intensity=replace(cfg.intensity, peak_counts=0.0)), adaptive=False)
    net = render_expected(cfg, rings, adaptive=False) - background
    on_ring = np.abs(r - rings.radius_um[0]) < 3 * GEOM.px_um
    # inside the arc (1° margin for the pixel's own η-spread): background only
    inside = on_ring & (np.abs(eta) > 151.0)
    assert inside.sum() > 50 and np.max(np.abs(net[inside])) == 0.0
    # elsewhere each ring pixel is the untextured ring × (1 + 0.5·cos(2(η − 30°))) at its η (the factor
    # varies by < 0.5 % across one pixel at this radius)
    plain = render_expected(replace(cfg, intensity=replace(cfg.intensity, texture_amplitude=0.0,
                                                           missing_arcs_deg=())), rings, adaptive=False) - background
    outside = on_ring & (np.abs(eta) < 149.0)
    model = 1 + 0.5 * np.cos(np.radians(2 * (eta[outside] - 30.0)))
    np.testing.assert_allclose(net[outside] / plain[outside], model, rtol=0.005)


def test_multiplicity_weighting():
    cfg = config(weighting="multiplicity")
    rings = ring_set(cfg)
    on = rings.on_detector
    assert rings.amplitude_counts[on].max() == PEAK
    np.testing.assert_allclose(rings.amplitude_counts / PEAK,
                               rings.multiplicity / rings.multiplicity[on & (rings.line == 0)].max())
    assert list(rings.multiplicity[:4]) == [8, 6, 12, 24]  # CeO2 (111) (200) (220) (311)


def test_ring_set_covers_the_detector():
    rings = ring_set(config())
    corner = max(math.hypot(y - GEOM.bc_y_px, z - GEOM.bc_z_px) for y in (-0.5, 511.5) for z in (-0.5, 511.5))
    on = rings.radius_um[rings.on_detector] / GEOM.px_um
    assert on.max() < corner * 1.02 and np.all(np.diff(rings.radius_um) > 0)
    # every CeO2 ring up to the corner is there (ring numbers 1..k without holes)
    assert list(rings.ring_nr[rings.on_detector]) == list(range(1, len(on) + 1))
    # the first ring beyond the corner is listed only if its tail reaches the image
    beyond = rings.radius_um[~rings.on_detector] / GEOM.px_um
    assert np.all(beyond - rings.cutoff_um[~rings.on_detector] / GEOM.px_um < corner * 1.02)


def test_truncated_profile_is_continuous_and_keeps_peak_height():
    fwhm, mu = 500.0, 0.4
    cut = float(profile_cutoff_um(fwhm, mu))
    assert pseudo_voigt(cut, fwhm, mu) == pytest.approx(TAIL_CUTOFF_REL, rel=0.01)
    cfg = config(peak=PeakShape(fwhm_px=2.5, lorentz_fraction=mu), rings=(2,))
    rings = ring_set(cfg)
    # the rendered ring falls to the background at its cut-off (no step): pixels just inside ≈ 0
    r, _ = r_eta_maps(GEOM)
    net = render_expected(cfg, rings) - (BG + BG_SLOPE * r / GEOM.px_um)
    x = np.abs(r - rings.radius_um[0])
    edge = (x > rings.cutoff_um[0] - 2 * GEOM.px_um) & (x < rings.cutoff_um[0] + 2 * GEOM.px_um)
    assert np.max(np.abs(net[edge])) < 1e-5 * PEAK  # slope of the profile at the cut-off × 2 px


def test_gradient_bound_holds(maps):
    r, _ = maps
    bound = r_gradient_bound(config())
    assert np.max(np.abs(np.diff(r, axis=0))) < bound and np.max(np.abs(np.diff(r, axis=1))) < bound


def test_no_ring_on_the_detector_is_a_clear_error():
    far = replace(GEOM, lsd_um=5e7, rho_d_um=None)
    with pytest.raises(RingTableError, match="no ring of CeO2 reaches the image"):
        ring_set(config(geometry=far))


def test_bad_options_raise():
    with pytest.raises(SimulationError, match="fwhm_px must be > 0"):
        PeakShape(fwhm_px=0.0)
    with pytest.raises(SimulationError, match="not both"):
        PeakShape(fwhm_px=1.0, fwhm_two_theta_deg=0.1)
    with pytest.raises(SimulationError, match="lorentz_fraction"):
        PeakShape(lorentz_fraction=1.5)
    with pytest.raises(SimulationError, match="none of the rings"):
        ring_set(config(rings=(999,)))
    with pytest.raises(SimulationError, match="supersample"):
        config(supersample=0)
