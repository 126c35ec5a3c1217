"""Scenario presets: realistic numbers, noise-free forms, and that each one renders."""

from __future__ import annotations

import math

import numpy as np
import pytest

from midas_ref.panels import panel_index_map
from simulate import SCENARIOS, SimulationError, detector_r_range, list_scenarios, ring_set, scenario, simulate
from simulate.scenarios import NOISE_FREE_SUFFIX, scenario_names

PRESETS = ("ge2048", "varex2880", "pilatus2m", "dexela4", "offset_bc", "lab6_short")


def test_names_and_noise_free_forms():
    assert tuple(SCENARIOS) == PRESETS
    assert scenario_names() == list(PRESETS) + [p + NOISE_FREE_SUFFIX for p in PRESETS]
    assert [name for name, _ in list_scenarios()] == list(PRESETS)
    for name in PRESETS:
        noisy, clean = scenario(name), scenario(name + NOISE_FREE_SUFFIX)
        assert not noisy.is_noise_free and clean.is_noise_free
        assert clean.geometry == noisy.geometry and clean.panels == noisy.panels
        assert clean.response.background_counts == noisy.response.background_counts
    with pytest.raises(SimulationError, match="valid: ge2048, varex2880"):
        scenario("ge4096")


def test_ge2048():
    cfg = scenario("ge2048")
    g = cfg.geometry
    assert g.shape == (2048, 2048) and g.px_um == 200.0 and g.lsd_um == pytest.approx(1e6)
    assert cfg.material.name == "CeO2" and cfg.material.wavelength_angstrom == 0.172979
    assert 0.1 <= abs(g.ty_deg) <= 1 and 0.1 <= abs(g.tz_deg) <= 1 and 0 < abs(g.p0) < 1e-3
    assert cfg.response.dtype == "uint16"
    assert cfg.intensity.peak_counts == 20000 and cfg.response.background_counts == 200
    assert int(ring_set(cfg).on_detector.sum()) == 27  # as the legacy golden ceo2_2048_tilt_dist


def test_varex2880_and_dexela4():
    varex = scenario("varex2880").geometry
    assert varex.shape == (2880, 2880) and varex.px_um == 150.0 and 850e3 <= varex.lsd_um <= 950e3
    dex = scenario("dexela4")
    lay = dex.panels.layout
    assert (lay.n_panels_y, lay.n_panels_z) == (2, 2)
    assert lay.n_panels_y * lay.size_y_px == dex.geometry.n_pixels_y
    assert lay.n_panels_z * lay.size_z_px == dex.geometry.n_pixels_z
    assert dex.response.dark_counts is not None


def test_pilatus2m_modules():
    cfg = scenario("pilatus2m")
    g, lay = cfg.geometry, cfg.panels.layout
    assert (g.n_pixels_y, g.n_pixels_z, g.px_um) == (1475, 1679, 172.0)
    assert (lay.n_panels_y, lay.n_panels_z, lay.size_y_px, lay.size_z_px) == (3, 8, 487, 195)
    assert set(lay.gaps_y_px) == {7} and set(lay.gaps_z_px) == {17}
    assert 3 * 487 + 2 * 7 == 1475 and 8 * 195 + 7 * 17 == 1679
    shifts = cfg.panels.shifts
    assert all(abs(s.dy_px) <= 1 and abs(s.dz_px) <= 1 and abs(s.dtheta_deg) <= 0.1 for s in shifts)
    assert shifts[cfg.fix_panel_id] == type(shifts[0])(cfg.fix_panel_id)
    assert sum(s.dy_px != 0 for s in shifts) >= 20  # the other modules really are shifted
    assert cfg.response.dtype == "int32" and cfg.response.gap_value == -1 and cfg.response.bad_pixel_value == -2


def test_pilatus2m_renders_with_gaps_and_bad_pixels():
    result = simulate(scenario("pilatus2m"))
    image = result.image
    gaps = panel_index_map(result.config.panels.layout, (1679, 1475)) < 0
    assert image.dtype == np.int32 and image.shape == (1679, 1475)
    assert np.all(image[gaps] == -1) and np.all(image[~gaps] != -1)
    n_bad = int(np.sum(image == -2))
    expected = 1e-4 * (~gaps).sum()
    assert abs(n_bad - expected) < 5 * math.sqrt(expected)
    assert int(result.rings.on_detector.sum()) >= 8


def test_offset_bc_sees_only_arcs():
    cfg = scenario("offset_bc")
    g = cfg.geometry
    assert not (0 <= g.bc_y_px < g.n_pixels_y and 0 <= g.bc_z_px < g.n_pixels_z)
    r_min, r_max = detector_r_range(cfg)
    assert r_min > 300 * g.px_um
    rings = ring_set(cfg)
    assert np.all(rings.radius_um[rings.on_detector] >= r_min)
    assert rings.ring_nr[rings.on_detector].min() > 1  # the inner rings miss the detector


def test_lab6_short_many_rings():
    cfg = scenario("lab6_short")
    rings = ring_set(cfg)
    assert cfg.material.name == "LaB6" and cfg.material.space_group == 221
    assert cfg.geometry.lsd_um <= 300e3 and rings.on_detector.sum() >= 100
    assert rings.two_theta_deg[rings.on_detector].max() > 40
    assert cfg.peak.fwhm_two_theta_deg is not None and cfg.intensity.weighting == "multiplicity"


@pytest.mark.slow
@pytest.mark.parametrize("name", scenario_names())
def test_every_preset_simulates(name):
    result = simulate(scenario(name))
    cfg = result.config
    frames = result.frames
    assert frames.shape == (cfg.response.n_frames, *cfg.geometry.shape)
    assert frames.dtype.name == cfg.response.dtype
    valid = frames[0][frames[0] >= 0]
    assert valid.max() > 0.5 * cfg.intensity.peak_counts + cfg.response.background_counts
