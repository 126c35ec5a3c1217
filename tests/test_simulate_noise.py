"""Counting statistics, dark frames, sentinels, clipping and determinism of the stored frames.

Statistical checks use 5σ bounds of the estimator (false-alarm rate ~1e-6 per check) on 4 × 256² pixels.
The seeds are fixed (drawn once at random); the expected values do not depend on them.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest

from midas_ref.detector import Geometry, PanelLayout, PanelShift
from midas_ref.panels import Panels, panel_index_map
from simulate import (DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig, SimulationError,
                      render_expected, simulate)
from simulate.config import CEO2

SEED = 861_274  # any seed works; fixed so a failure reproduces
GEOM = Geometry(lsd_um=150_000.0, bc_y_px=128.4, bc_z_px=120.9, px_um=200.0, n_pixels_y=256, n_pixels_z=256)
N_FRAMES = 4


def config(peak_counts=0.0, **response):
    response.setdefault("n_frames", N_FRAMES)
    return SimulationConfig(GEOM, Material(wavelength_angstrom=0.172979, **CEO2),
                            peak=PeakShape(fwhm_px=2.5), intensity=RingIntensity(peak_counts=peak_counts),
                            response=DetectorResponse(**response), seed=SEED)


def five_sigma_mean(level, n):
    return 5.0 * math.sqrt(level / n)


@pytest.mark.parametrize("level", [2.5, 200.0, 20_000.0])
def test_background_pixels_are_poisson(level):
    frames = simulate(config(background_counts=level, dtype="uint32")).frames.astype(np.float64)
    n = frames.size
    mean = frames.mean()
    var = frames.var()
    assert abs(mean - level) < five_sigma_mean(level, n)
    # sd of the sample variance of a Poisson variable: √((λ + 2λ²)/N)
    assert abs(var - level) < 5.0 * math.sqrt((level + 2 * level ** 2) / n)
    # third central moment of a Poisson variable is λ (a Gaussian's is 0); sd ≈ √((6λ³ + ...)/N)
    third = np.mean((frames - mean) ** 3)
    assert abs(third - level) < 5.0 * math.sqrt((6 * level ** 3 + 9 * level ** 2 + level) / n)
    if level < 10:
        zeros = np.mean(frames == 0)
        p0 = math.exp(-level)
        assert abs(zeros - p0) < 5.0 * math.sqrt(p0 * (1 - p0) / n)


def test_read_noise_dark_and_pattern():
    level, read, dark, pattern = 200.0, 4.0, 100.0, 3.0
    result = simulate(config(background_counts=level, read_noise_counts=read, dark_counts=dark,
                             dark_noise_counts=pattern))
    frames = result.frames.astype(np.float64)
    dark_frame = result.dark[0].astype(np.float64)
    net = frames - dark_frame
    n = net.size
    # rounding to integers adds 1/12 to the variance of each rounded value
    assert abs(net.mean() - level) < five_sigma_mean(level + 2 * read ** 2, n)
    expected_var = level + 2 * read ** 2 + 2 / 12
    assert abs(net.var() - expected_var) < 5.0 * expected_var * math.sqrt(2.0 / n)  # ≈ Gaussian: sd 2σ⁴/N
    # the dark frame: dark level + fixed pattern + read noise
    assert abs(dark_frame.mean() - dark) < 5 * math.sqrt((pattern ** 2 + read ** 2) / dark_frame.size)
    dark_var = pattern ** 2 + read ** 2 + 1 / 12
    assert abs(dark_frame.var() - dark_var) < 5.0 * dark_var * math.sqrt(2.0 / dark_frame.size)
    # the pattern is common to frames and dark: frame-to-frame differences do not contain it
    diff = frames[0] - frames[1]
    diff_var = 2 * (level + read ** 2 + 1 / 12)
    assert abs(diff.var() - diff_var) < 5.0 * diff_var * math.sqrt(2.0 / diff.size)


def test_noise_free_frames_are_the_rounded_expectation():
    cfg = config(peak_counts=5000.0, background_counts=50.0, dark_counts=20.0, dark_noise_counts=2.0,
                 read_noise_counts=3.0, bad_pixel_fraction=0.01, dtype="int32").noise_free()
    result = simulate(cfg)
    expected = np.rint(render_expected(cfg) + 20.0)
    assert all(np.array_equal(f, expected) for f in result.frames)
    assert np.all(result.dark == 20) and result.bad_mask is None
    assert np.array_equal(simulate(replace(cfg, seed=1)).frames, result.frames)


def test_float32_frames_are_not_rounded():
    cfg = config(peak_counts=1000.0, background_counts=10.5, dtype="float32", n_frames=1).noise_free()
    frame = simulate(cfg).image
    assert frame.dtype == np.float32
    np.testing.assert_allclose(frame, render_expected(cfg).astype(np.float32), rtol=1e-7)
    assert np.any(frame != np.rint(frame))


def test_saturation_and_clipping():
    bright = config(peak_counts=80_000.0, background_counts=10.0, n_frames=1)
    assert simulate(bright).image.max() == 65535
    limited = simulate(replace(bright, response=replace(bright.response, saturation_counts=1000.0))).image
    assert limited.max() == 1000
    noisy_dark = simulate(config(background_counts=1.0, read_noise_counts=10.0, dtype="int32", n_frames=1)).image
    assert noisy_dark.min() == 0  # counts never go negative, so they cannot collide with sentinels
    with pytest.raises(SimulationError, match="exceeds the uint16 maximum"):
        DetectorResponse(saturation_counts=1e6)


def test_bad_pixels():
    fraction = 0.01
    layout = PanelLayout(2, 1, 120, 256, (16,), ())
    cfg = replace(config(background_counts=100.0, bad_pixel_fraction=fraction, dtype="int32", dark_counts=5.0),
                  panels=Panels.from_shifts(layout, [PanelShift(1, 0.2, 0.1)]))
    result = simulate(cfg)
    gaps = panel_index_map(layout, GEOM.shape) < 0
    n = GEOM.shape[0] * GEOM.shape[1]
    count = int(result.bad_mask.sum())
    on_panels = n * fraction * (1 - gaps.mean())
    assert abs(count - on_panels) < 5 * math.sqrt(n * fraction)
    for frame in (*result.frames, result.dark[0]):
        assert np.all(frame[result.bad_mask] == -2) and np.all(frame[gaps] == -1)
        assert np.all(frame[~result.bad_mask & ~gaps] >= 0)
    assert not np.any(result.bad_mask & gaps)
    custom = simulate(replace(cfg, response=replace(cfg.response, bad_pixel_value=-9.0)))
    assert np.all(custom.image[custom.bad_mask] == -9)


def test_same_seed_same_bytes_other_seed_other_bytes():
    cfg = config(peak_counts=2000.0, background_counts=100.0, read_noise_counts=2.0, dark_counts=10.0,
                 dark_noise_counts=1.0, bad_pixel_fraction=0.001, dtype="int32")
    a, b = simulate(cfg), simulate(cfg)
    assert a.frames.tobytes() == b.frames.tobytes() and a.dark.tobytes() == b.dark.tobytes()
    c = simulate(replace(cfg, seed=SEED + 1))
    assert a.frames.tobytes() != c.frames.tobytes()


def test_random_streams_are_independent():
    """Each random element has its own stream: changing one option leaves the other draws alone."""
    cfg = config(background_counts=100.0, bad_pixel_fraction=0.01, dtype="int32", n_frames=2)
    base = simulate(cfg)
    more_frames = simulate(replace(cfg, response=replace(cfg.response, n_frames=3)))
    assert np.array_equal(base.frames, more_frames.frames[:2])
    with_read_noise = simulate(replace(cfg, response=replace(cfg.response, read_noise_counts=3.0)))
    assert np.array_equal(base.bad_mask, with_read_noise.bad_mask)


def test_sentinel_values_must_not_look_like_counts():
    with pytest.raises(SimulationError, match="range of real counts"):
        config(bad_pixel_fraction=0.01, bad_pixel_value=7.0, dtype="int32")
    with pytest.raises(SimulationError, match="cannot be stored in uint16"):
        config(bad_pixel_fraction=0.01)
    with pytest.raises(SimulationError, match="needs a dark level"):
        config(dark_noise_counts=2.0)
