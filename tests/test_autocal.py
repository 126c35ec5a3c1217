"""End-to-end calibration on simulated images with known truth (the simulator never calls the calibrator).

Accuracy bounds are those of the calibration issue; they are far from the optimiser's own precision, so
a failure means a real bias. The 2048² cases are marked slow (each ~10 s).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from midas_ref import CalibrationError, Geometry
from midas_ref.autocal import CalibrationSettings, calibrate
from midas_ref.rings import ring_table
from simulate import scenario, simulate
from simulate.config import CEO2, DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig
from validation.gates import SYNTHETIC_GATES

LAMBDA = 0.172979


def small_config(noise: bool, seed: int = 7, **geometry_changes) -> SimulationConfig:
    """512² × 200 µm at 300 mm: 9 CeO2 rings, tilts and distortion, renders in well under a second."""
    geometry = Geometry(lsd_um=300_000.0, bc_y_px=251.7, bc_z_px=262.4, px_um=200.0, n_pixels_y=512,
                        n_pixels_z=512, ty_deg=0.6, tz_deg=-0.4, p0=3e-4, p1=-2e-4, p2=2e-4, p3_deg=20.0)
    geometry = dataclasses.replace(geometry, **geometry_changes)
    response = DetectorResponse(background_counts=200.0, dtype="float32", poisson=noise)
    return SimulationConfig(geometry, Material(wavelength_angstrom=LAMBDA, **CEO2),
                            peak=PeakShape(fwhm_px=2.5, lorentz_fraction=0.4),
                            intensity=RingIntensity(peak_counts=20000.0), response=response, seed=seed)


def rings_for(cfg: SimulationConfig):
    m = cfg.material
    return ring_table(m.space_group, m.lattice, m.wavelength_angstrom, d_min_angstrom=0.5)


def base_of(truth: Geometry) -> Geometry:
    return Geometry(1e6, truth.n_pixels_y / 2, truth.n_pixels_z / 2, truth.px_um, truth.n_pixels_y,
                    truth.n_pixels_z, rho_d_um=truth.rho_d_um)


def errors(g: Geometry, truth: Geometry) -> dict:
    return {"lsd_um": abs(g.lsd_um - truth.lsd_um), "bc_px": max(abs(g.bc_y_px - truth.bc_y_px),
                                                                 abs(g.bc_z_px - truth.bc_z_px)),
            "tilt_deg": max(abs(g.ty_deg - truth.ty_deg), abs(g.tz_deg - truth.tz_deg))}


@pytest.fixture(scope="module")
def small_noise_free():
    cfg = small_config(noise=False)
    return cfg, simulate(cfg).image.astype(np.float64)


def test_small_image_fully_automatic(small_noise_free):
    cfg, image = small_noise_free
    res = calibrate(image, None, base_of(cfg.geometry), rings_for(cfg))
    assert res.converged, res.reason
    err = errors(res.geometry, cfg.geometry)
    # noise-free: the bounds of the 2048² case scaled to a 300 mm distance
    assert err["lsd_um"] < 0.5 and err["bc_px"] < 0.003 and err["tilt_deg"] < 0.002, err
    # the fit models each pixel by the profile at its (area-mean) radius; for ring pairs 2 FWHM apart the
    # pixel-integrated shape differs enough to move centres by up to ~1e-3 px, i.e. 3–10 µε at R = 100–300 px
    assert res.mean_strain < 5e-6
    g = res.geometry
    pair = lambda geo: geo.p1 * np.exp(1j * np.radians(geo.p3_deg))  # noqa: E731  (p1, p3) ≡ (−p1, p3 ± 180°)
    assert abs(g.p0 - 3e-4) < 5e-6 and abs(g.p2 - 2e-4) < 5e-6 and abs(pair(g) - pair(cfg.geometry)) < 1e-5
    # the distortion the image has is kept, on both looks at the points (p4 is a candidate only with
    # DistortionOrder 6)
    assert res.distortion_terms == ("p0", "p1", "p2") and g.p4 == 0.0
    assert [sel.terms for sel in res.distortion_selections] == [("p0", "p1", "p2")] * 2
    assert "kept p0, p1, p2, dropped none" in res.distortion_reason


@pytest.fixture(scope="module")
def small_no_distortion():
    cfg = small_config(noise=True, seed=8, p0=0.0, p1=0.0, p2=0.0, p3_deg=0.0)
    return cfg, simulate(cfg).image.astype(np.float64)


def test_no_distortion_image_gets_no_terms(small_no_distortion):
    """Poisson image without distortion: the selection keeps no term (every F-test or the systematic-level
    comparison rejects), and the geometry is as good as the tolP 0 fit."""
    cfg, image = small_no_distortion
    res = calibrate(image, None, base_of(cfg.geometry), rings_for(cfg))
    assert res.converged, res.reason
    g = res.geometry
    assert res.distortion_terms == () and (g.p0, g.p1, g.p2, g.p4) == (0.0, 0.0, 0.0, 0.0)
    assert "kept none" in res.distortion_reason
    final = res.distortion_selections[-1]
    assert final.candidates == ("p0", "p1", "p2") and all(not t.passed for t in final.tests[-1:])
    err = errors(g, cfg.geometry)
    assert err["lsd_um"] < 2.0 and err["bc_px"] < 0.005 and err["tilt_deg"] < 0.003, err


def test_explicit_distortion_is_fitted_as_given(small_no_distortion):
    """select_distortion False (an explicit tolP/DistortionOrder in the parameter file): p0–p3 are fitted on
    the same image, whether or not the points support them."""
    cfg, image = small_no_distortion
    res = calibrate(image, None, base_of(cfg.geometry), rings_for(cfg),
                    settings=CalibrationSettings(select_distortion=False))
    assert res.converged, res.reason
    g = res.geometry
    assert res.distortion_terms == ("p0", "p1", "p2") and res.distortion_selections == ()
    assert "fitted as given" in res.distortion_reason
    assert g.p0 != 0.0 and g.p1 != 0.0 and g.p2 != 0.0 and g.p4 == 0.0  # fitted (to noise: |p| ≲ 1e-5)
    assert max(abs(g.p0), abs(g.p1), abs(g.p2)) < 2e-5


def test_nelder_mead_agrees_with_least_squares(small_noise_free):
    """The legacy-compatible optimiser converges to the same geometry, within the same accuracy bounds."""
    cfg, image = small_noise_free
    settings = CalibrationSettings(optimizer="nelder-mead")
    res = calibrate(image, None, base_of(cfg.geometry), rings_for(cfg), settings=settings)
    assert res.converged, res.reason
    err = errors(res.geometry, cfg.geometry)
    assert err["lsd_um"] < 2.0 and err["bc_px"] < 0.01 and err["tilt_deg"] < 0.005, err


def test_iteration_cap_gives_failed_status(small_noise_free):
    cfg, image = small_noise_free
    res = calibrate(image, None, base_of(cfg.geometry), rings_for(cfg),
                    settings=CalibrationSettings(max_iterations=2))
    assert res.status == "FAILED" and "no convergence within 2 iterations" in res.reason


def test_blank_image_is_no_rings_error():
    cfg = small_config(noise=False)
    image = np.full(cfg.geometry.shape, 100.0) + np.random.default_rng(1).normal(0, 1, cfg.geometry.shape)
    with pytest.raises(CalibrationError, match="no rings found"):
        calibrate(image, None, base_of(cfg.geometry), rings_for(cfg))


def test_all_masked_is_an_error(small_noise_free):
    cfg, image = small_noise_free
    with pytest.raises(CalibrationError, match="every pixel is masked"):
        calibrate(image, np.ones(image.shape, bool), base_of(cfg.geometry), rings_for(cfg))


def test_wrong_wavelength_fails_cleanly(small_noise_free):
    """With the distance known (-LsdGuess), a wavelength 0.3× the true one puts the rings where the image has
    none: a clear error. (A wrong λ alone cannot be detected in general: for small angles tan 2θ ∝ λ, so
    Lsd absorbs it, and a cubic calibrant's ring pattern repeats at λ×2, ×3 — docs/cli.md.)"""
    cfg, image = small_noise_free
    wrong = ring_table(225, CEO2["lattice"], 0.3 * LAMBDA, d_min_angstrom=1.0)
    with pytest.raises(CalibrationError, match="no rings found|do not match"):
        calibrate(image, None, base_of(cfg.geometry), wrong,
                  settings=CalibrationSettings(lsd_guess_um=300_000.0, bc_guess_px=(251.7, 262.4)))


@pytest.mark.parametrize("kwargs, message", [({"eta_bin_deg": 0}, "EtaBinSize"), ({"mult_factor": -1}, "MultFactor"),
                                             ({"optimizer": "bfgs"}, "optimizer"), ({"distortion_order": 5}, "DistortionOrder")])
def test_settings_validation(kwargs, message):
    with pytest.raises(CalibrationError, match=message):
        CalibrationSettings(**kwargs)


# ---- the accuracy targets of the calibration issue, on the ge2048 scenario ------------------------------

def ge2048(noise_free: bool):
    cfg = scenario("ge2048_noisefree" if noise_free else "ge2048", seed=11)
    return cfg, simulate(cfg).image.astype(np.float64)


def start_settings(truth: Geometry, lsd_factor: float, dy: float, dz: float) -> CalibrationSettings:
    return CalibrationSettings(lsd_guess_um=truth.lsd_um * lsd_factor,
                               bc_guess_px=(truth.bc_y_px + dy, truth.bc_z_px + dz))


def gate_bounds(noise: str) -> dict:
    """The validation gates of ge2048 (validation/gates.py, the one place the bounds live), by error name."""
    gate = SYNTHETIC_GATES[("ge2048", noise)]
    return {"lsd_um": gate["err_lsd_um"], "bc_px": gate["err_bc_px"], "tilt_deg": gate["err_tilt_deg"]}


@pytest.mark.slow
@pytest.mark.parametrize("noise_free, bounds", [(True, gate_bounds("noisefree")), (False, gate_bounds("poisson"))],
                         ids=["noise-free", "poisson"])
def test_ge2048_accuracy(noise_free, bounds):
    cfg, image = ge2048(noise_free)
    truth = cfg.geometry
    res = calibrate(image, None, base_of(truth), rings_for(cfg), settings=start_settings(truth, 1.02, 5.0, -5.0))
    assert res.converged, res.reason
    err = errors(res.geometry, truth)
    assert all(err[k] <= bounds[k] for k in bounds), err
    if noise_free:
        assert res.mean_strain <= SYNTHETIC_GATES[("ge2048", "noisefree")]["mean_strain"]
    g = res.geometry
    # distortion recovered: the radial correction it implies agrees with the truth's at the detector edge
    assert abs(g.p0 - truth.p0) < 5e-6 and abs(g.p2 - truth.p2) < 5e-6


@pytest.mark.slow
@pytest.mark.parametrize("lsd_factor, dy, dz", [(1.10, 30.0, -30.0), (0.90, -30.0, 25.0)])
def test_ge2048_robust_start(lsd_factor, dy, dz):
    cfg, image = ge2048(noise_free=False)
    truth = cfg.geometry
    res = calibrate(image, None, base_of(truth), rings_for(cfg),
                    settings=start_settings(truth, lsd_factor, dy, dz))
    assert res.converged, res.reason
    err = errors(res.geometry, truth)
    bounds = gate_bounds("poisson")  # the far start must reach the near start's bounds
    assert all(err[k] <= bounds[k] for k in bounds), err


# ---- dense rings: LaB6 at a short distance, fully automatic ---------------------------------------------

@pytest.mark.slow
def test_lab6_short_fully_automatic():
    """~340 rings 2–3 px apart at 2θ up to 49° (FWHM 1.5–3.5 px), tilts 0.5°/−0.3°, no guesses at all (the
    parameter file's Lsd default of 1 m, search 0.05–5 m). The primitive-cubic pattern has near-aliases
    (Lsd ×0.70, ×0.57 …) that the distance match must reject, and most rings overlap their neighbours.

    Bounds: the ge2048 Poisson bounds scaled to the 4× shorter distance for Lsd (3 µm → 1 µm ≈ 4 µε) and
    the beam centre / tilts at twice those bounds (the BC and tilt couple through the large 2θ); the
    mean strain is a per-point scatter (~3 µε measured) whose mean over > 10⁴ points may not exceed 10 µε."""
    cfg = scenario("lab6_short", seed=3)
    image = simulate(cfg).image.astype(np.float64)
    truth = cfg.geometry
    m = cfg.material
    rings = ring_table(m.space_group, m.lattice, m.wavelength_angstrom, d_min_angstrom=0.15)
    res = calibrate(image, None, base_of(truth), rings)
    assert res.converged, res.reason
    assert res.guess["lsd_match"][0] == pytest.approx(truth.lsd_um, rel=0.01)  # the alias is rejected
    err = errors(res.geometry, truth)
    assert err["lsd_um"] <= 1.0 and err["bc_px"] <= 0.01 and err["tilt_deg"] <= 0.003, err
    assert abs(res.geometry.p2 - truth.p2) < 5e-6
    assert res.mean_strain < 1e-5 and len(res.points) > 10_000
