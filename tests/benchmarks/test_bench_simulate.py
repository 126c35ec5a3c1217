"""Simulator speed and memory on the ge2048 preset (issue #4: ≤ 1 s on 2 cores after JIT, ≤ 10× the image).

Run with ``python -m pytest tests/benchmarks/test_bench_simulate.py --benchmark-enable``; without the flag
each benchmark body runs once as a plain test. Inputs are built and the kernels compiled outside the timed
calls.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from simulate import render_expected, ring_set, scenario, simulate

#: Peak memory allowed during simulate(), in units of the stored image's size.
MEMORY_FACTOR = 10


@pytest.fixture(scope="module")
def ge2048():
    cfg = scenario("ge2048")
    rings = ring_set(cfg)
    render_expected(cfg, rings, rows=slice(0, 8))  # JIT warm-up (compile or load from cache)
    return cfg, rings


@pytest.mark.benchmark(group="simulate")
def test_render_expected_2048px(benchmark, ge2048):
    cfg, rings = ge2048
    image = benchmark.pedantic(render_expected, args=(cfg, rings), rounds=5, iterations=1, warmup_rounds=1)
    assert image.shape == (2048, 2048)
    assert image.max() > 0.9 * cfg.intensity.peak_counts and image.min() >= cfg.response.background_counts - 1e-9


@pytest.mark.benchmark(group="simulate")
def test_simulate_2048px(benchmark, ge2048):
    """Ring table + render + Poisson noise + cast to uint16: the whole in-memory simulation."""
    cfg, _ = ge2048
    result = benchmark.pedantic(simulate, args=(cfg,), rounds=3, iterations=1, warmup_rounds=1)
    assert result.frames.shape == (1, 2048, 2048) and result.frames.dtype == np.uint16


def test_simulate_peak_memory_2048px(benchmark, ge2048):
    cfg, _ = ge2048
    simulate(cfg)  # warm-up outside the measurement
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = simulate(cfg)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    image_bytes = result.frames.nbytes
    benchmark.extra_info["peak_bytes"] = peak
    benchmark.extra_info["image_bytes"] = image_bytes
    benchmark.extra_info["peak_over_image"] = peak / image_bytes
    assert peak <= MEMORY_FACTOR * image_bytes, f"peak {peak / 2**20:.1f} MiB = {peak / image_bytes:.1f}× image"
    benchmark.pedantic(lambda: None, rounds=1, iterations=1)
