"""Panel refinement speed on the pilatus2m preset (issue #6: 24 modules, shifts + rotations ≤ 30 s on 2 cores).

Run with ``python -m pytest tests/benchmarks/test_bench_panel_refine.py --benchmark-enable``. The image is the
preset itself (Poisson noise, shifts ≤ 0.8 px, rotations ≤ 0.08°); the start is the true geometry nudged as
a global calibration leaves it. The timed call is the whole refinement (3 extraction + fit cycles); the
least-squares and legacy Nelder–Mead/Subplex optimisers are timed on the same ring points.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from midas_ref.panel_refine import PanelSettings, extract_panel_peaks, refine_panels
from midas_ref.panels import Panels
from midas_ref.refine import PanelFreedom, Tolerances, fit_geometry
from midas_ref.rings import ring_table
from simulate import scenario, simulate


@pytest.fixture(scope="module")
def pilatus2m():
    cfg = scenario("pilatus2m", seed=11)
    sim = simulate(cfg)
    mask = sim.gap_mask | sim.bad_mask
    rings = ring_table(225, cfg.material.lattice, cfg.material.wavelength_angstrom, lsd_um=cfg.geometry.lsd_um,
                       rho_d_um=3e5)
    g = cfg.geometry
    start = dataclasses.replace(g, lsd_um=g.lsd_um + 300, bc_y_px=g.bc_y_px + 0.3, bc_z_px=g.bc_z_px - 0.2,
                                ty_deg=0.0, tz_deg=0.0)
    # the truth's gauge (FixPanelID 0): the BC and Lsd below compare with it
    settings = PanelSettings(n_iterations=3, freedom=PanelFreedom(shifts_px=1.5, rotation_deg=0.2, gauge="fixed"),
                             tolerances=Tolerances(p0=0, p1=0, p2=0))
    image = sim.image.astype(np.float64)
    refine_panels(image, mask, start, Panels.from_shifts(cfg.panels.layout), rings,
                  settings=dataclasses.replace(settings, n_iterations=1))  # JIT warm-up
    return cfg, image, mask, rings, start, settings


@pytest.mark.benchmark(group="panels")
def test_panel_refinement_pilatus2m(benchmark, pilatus2m):
    cfg, image, mask, rings, start, settings = pilatus2m
    result = benchmark.pedantic(refine_panels, args=(image, mask, start, Panels.from_shifts(cfg.panels.layout),
                                                     rings), kwargs={"settings": settings}, rounds=2, iterations=1)
    g = result.geometry
    assert abs(g.bc_y_px - cfg.geometry.bc_y_px) < 0.01 and abs(g.lsd_um - cfg.geometry.lsd_um) < 5.0
    assert result.mean_strain < 5e-6


@pytest.fixture(scope="module")
def panel_points(pilatus2m):
    cfg, image, mask, rings, start, settings = pilatus2m
    tth = np.array([r.two_theta_deg for r in rings])
    r = cfg.geometry.lsd_um * np.tan(np.radians(tth))
    pts = extract_panel_peaks(image, mask, cfg.geometry, cfg.panels, r[r < 2.0e5], eta_bin_deg=5.0,
                              half_window_px=6.0, fwhm_px=2.0, min_snr=3.0)
    return pts, tth[pts.ring], start, Panels.from_shifts(cfg.panels.layout), cfg


@pytest.mark.benchmark(group="panel-fit")
@pytest.mark.parametrize("method", ["least-squares", "nelder-mead"])
def test_panel_fit_optimisers(benchmark, panel_points, method):
    """One global + 23 × (dY, dZ) fit on the same points: least squares vs the legacy simplex."""
    pts, tth, start, panels, cfg = panel_points
    fit = benchmark.pedantic(fit_geometry, args=(pts.y_px, pts.z_px, tth, start),
                             kwargs=dict(panels=panels, free=("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg"),
                                         panel_freedom=PanelFreedom(shifts_px=1.5, gauge="fixed"), method=method,
                                         max_evaluations=50000 if method == "nelder-mead" else 2000),
                             rounds=1, iterations=1)
    bound = 0.01 if method == "least-squares" else 0.3
    assert abs(fit.geometry.bc_y_px - cfg.geometry.bc_y_px) < bound
