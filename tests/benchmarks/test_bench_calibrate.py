"""Calibration speed on the ge2048 preset (issue #5: whole calibrate of a 2048² image ≤ 5 s on 2 cores, warm JIT).

Run with ``python -m pytest tests/benchmarks/test_bench_calibrate.py --benchmark-enable``; without the
flag each body runs once as a plain test. The image is simulated and the kernels warmed up outside the
timed calls; every benchmark asserts its result, so a fast wrong answer fails.
"""

from __future__ import annotations

import numpy as np
import pytest

from midas_ref import Geometry
from midas_ref.autocal import calibrate
from midas_ref.io import load_image, write_tiff
from midas_ref.profiles import extract_peaks
from midas_ref.rings import ring_table
from simulate import scenario, simulate


@pytest.fixture(scope="module")
def ge2048(tmp_path_factory):
    cfg = scenario("ge2048", seed=5)
    image = simulate(cfg).image
    path = tmp_path_factory.mktemp("bench") / "ge2048.tif"
    write_tiff(path, image)
    truth = cfg.geometry
    base = Geometry(1e6, 1024.0, 1024.0, truth.px_um, 2048, 2048, rho_d_um=truth.rho_d_um)
    rings = ring_table(225, cfg.material.lattice, cfg.material.wavelength_angstrom, d_min_angstrom=0.5)
    calibrate(image.astype(float), None, base, rings)  # JIT warm-up
    return path, truth, base, rings


def full_calibration(path, base, rings):
    loaded = load_image(path)
    return calibrate(loaded.image, loaded.mask, base, rings)


@pytest.mark.benchmark(group="calibrate")
def test_calibrate_2048px(benchmark, ge2048):
    """Load + background + guesses + every extraction/fit iteration, fully automatic."""
    path, truth, base, rings = ge2048
    result = benchmark.pedantic(full_calibration, args=(path, base, rings), rounds=3, iterations=1)
    assert result.converged
    assert abs(result.geometry.lsd_um - truth.lsd_um) < 3.0
    assert abs(result.geometry.bc_y_px - truth.bc_y_px) < 0.006


@pytest.mark.benchmark(group="calibrate")
def test_extract_peaks_2048px(benchmark, ge2048):
    """One peak-extraction pass (pixel assignment + ~1300 weighted multi-peak fits) at the true geometry."""
    path, truth, base, rings = ge2048
    image = load_image(path).image
    radii = truth.lsd_um * np.tan(np.radians([r.two_theta_deg for r in rings]))
    radii = radii[radii < truth.rho_d_um]
    points = benchmark.pedantic(extract_peaks, args=(image, None, truth, radii), kwargs={"half_window_px": 6.6},
                                rounds=3, iterations=1, warmup_rounds=1)
    strain = 1 - points.r_um / radii[points.ring]
    assert len(points) > 1000 and abs(np.mean(strain)) < 2e-6
