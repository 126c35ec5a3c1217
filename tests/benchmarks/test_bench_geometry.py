"""Speed of the geometry maps, profile extraction and single-window peak fits (warm JIT).

Run with ``python -m pytest tests/benchmarks --benchmark-enable``; without the flag every body runs once as
a test. ``midas-ref validate --suite full`` runs this folder with ``--benchmark-json`` and shows the results
in its dashboard. Each benchmark asserts its result, so a fast wrong answer fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from midas_ref import profiles_kernels as pk
from midas_ref.geometry import pixel_to_r_eta, r_eta_maps
from midas_ref.profiles import extract_peaks
from simulate import pseudo_voigt, scenario, simulate


@pytest.fixture(scope="module")
def ge2048():
    cfg = scenario("ge2048_noisefree", seed=2)
    r_eta_maps(cfg.geometry)  # JIT warm-up
    return cfg


@pytest.mark.benchmark(group="geometry")
def test_r_eta_maps_2048px(benchmark, ge2048):
    """R and η of every pixel centre of a 2048² detector with tilts and distortion."""
    g = ge2048.geometry
    r, eta = benchmark.pedantic(r_eta_maps, args=(g,), rounds=5, iterations=1, warmup_rounds=1)
    assert r.shape == (2048, 2048)
    # spot check against the point-wise path
    rr, ee = pixel_to_r_eta(np.array([0.0, 1500.0]), np.array([0.0, 700.0]), g)
    assert np.allclose(r[[0, 700], [0, 1500]], rr, rtol=1e-12) and np.allclose(eta[[0, 700], [0, 1500]], ee, atol=1e-9)


@pytest.mark.benchmark(group="profiles")
def test_extract_peaks_noisefree_2048px(benchmark, ge2048):
    """Pixel assignment + one weighted pseudo-Voigt fit per (ring, 5° bin) at the true geometry."""
    g = ge2048.geometry
    image = simulate(ge2048).image.astype(np.float64)
    rings = [r for r in simulate(ge2048).rings.radius_um if r < g.rho_d_um]
    radii = np.array(sorted(set(rings)))
    extract_peaks(image, None, g, radii, half_window_px=6.6)
    points = benchmark.pedantic(extract_peaks, args=(image, None, g, radii), kwargs={"half_window_px": 6.6},
                                rounds=3, iterations=1)
    strain = 1 - points.r_um / radii[points.ring]
    assert len(points) > 1000 and abs(np.mean(strain)) < 2e-6


def _window(rng, n=600, centre=12.3, gamma=2.5, mu=0.4, amp=2e4, bg=200.0):
    x = rng.uniform(0, 25, n)
    y = rng.poisson(bg + amp * pseudo_voigt(x - centre, gamma, mu)).astype(np.float64)
    return x, y, rng.uniform(-0.04, 0.04, n)


@pytest.mark.benchmark(group="peak fit")
def test_fit_window_500_windows(benchmark):
    """500 single-peak windows (600 pixels each, Poisson counts): the kernel the extraction runs per bin."""
    rng = np.random.default_rng(4)
    windows = [_window(rng) for _ in range(500)]
    out = np.zeros((len(windows), 10))
    centres = np.array([12.3])

    def fit_all():
        for k, (x, y, eta) in enumerate(windows):
            pk.fit_window(x, y, eta, centres, 0, 2.5, 12.0, True, out[k])
        return out

    fit_all()  # JIT warm-up
    result = benchmark.pedantic(fit_all, rounds=3, iterations=1)
    assert np.all(result[:, 9] == pk.OK)
    # unbiased, and its error bars the right size within a factor: the scatter of the pulls measured 1.32
    # here (the single-window σ is ~30 % optimistic on these point-sampled windows; see docs/validation.md)
    pull = (result[:, 0] - 12.3) / result[:, 1]
    assert abs(np.mean(result[:, 0]) - 12.3) < 3 * np.std(result[:, 0]) / math.sqrt(len(windows))
    assert 0.8 < np.std(pull) < 1.6
