"""One call from a configuration to frames: render, add noise, mark gaps and bad pixels."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from midas_ref.panels import panel_index_map

from .config import SimulationConfig, SimulationError
from .noise import BLOCK_ROWS, bad_pixel_mask, make_dark, make_frames, streams
from .render import _NUMPY_BLOCK_ROWS, RingSet, render_expected, ring_set

__all__ = ["SimulationResult", "available_memory_bytes", "gap_mask", "peak_memory_bytes", "simulate"]

_GIB = 1024 ** 3
#: Temporary float64 arrays per pixel of a noise block (Poisson draw, its float64 copy, dark, read noise, …).
_NOISE_BLOCK_ARRAYS = 5
#: Temporary float64 arrays per sample of a numpy-engine block (r, η, value, x, profile, the where() result…).
_NUMPY_BLOCK_ARRAYS = 8
#: Bytes per pixel that panel_index_map holds while the gap mask is built (int64 ids, bool tests, int64 result).
_GAP_MAP_BYTES = 19


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """A simulated acquisition.

    Attributes
    ----------
    config : SimulationConfig
        What was simulated (the truth).
    frames : ndarray of shape (n_frames, NZ, NY)
        Stored frames in ``config.response.dtype``.
    dark : ndarray of shape (1, NZ, NY) or None
        Dark frame (when ``response.dark_counts`` is set).
    rings : RingSet
        The rings drawn.
    gap_mask, bad_mask : ndarray of bool, shape (NZ, NY), or None
        Pixels holding the gap / bad-pixel value.
    expected : ndarray of float64, shape (NZ, NY), or None
        Noise-free expected counts of one frame without dark (kept only on request).
    """

    config: SimulationConfig
    frames: np.ndarray
    dark: np.ndarray | None
    rings: RingSet
    gap_mask: np.ndarray | None
    bad_mask: np.ndarray | None
    expected: np.ndarray | None = None

    @property
    def image(self) -> np.ndarray:
        """The first frame, shape (NZ, NY)."""
        return self.frames[0]


def gap_mask(config: SimulationConfig) -> np.ndarray | None:
    """Gap pixels of the configuration's panel grid (True = no panel), or None without gaps."""
    if not config.has_gaps:
        return None
    return panel_index_map(config.panels.layout, config.geometry.shape) < 0


def peak_memory_bytes(config: SimulationConfig, engine: str = "numba") -> int:
    """Estimated peak memory of :func:`simulate` for ``config``, bytes.

    The float64 expected image (8 bytes per pixel) lives throughout; on top of it, at different times, the
    gap map being built, or the gap and bad-pixel masks with the stored frames, the dark and a noise block
    (:data:`simulate.noise.BLOCK_ROWS` rows). The numba renderer writes straight into the expected image
    (its n × n supersampling is per pixel, in registers); the numpy engine holds a block of
    16 rows × n² samples. For ge2048 (one uint16 frame) this gives 45 MiB; the measured peak is 43 MiB
    (docs/simulate.md, "Performance").
    """
    rows, cols = config.geometry.shape
    n = rows * cols
    r = config.response
    itemsize = np.dtype(r.dtype).itemsize
    expected = 8 * n
    if engine == "numpy":
        render = 8 * _NUMPY_BLOCK_ARRAYS * _NUMPY_BLOCK_ROWS * cols * config.supersample ** 2
    else:
        render = 0
    gaps_building = _GAP_MAP_BYTES * n if config.has_gaps else 0
    masks = (n if config.has_gaps else 0) + (int(n * (1 + 16 * r.bad_pixel_fraction))
                                             if r.bad_pixel_fraction > 0 else 0)
    stored = itemsize * n * (r.n_frames + (r.dark_counts is not None))
    noise_block = 8 * _NOISE_BLOCK_ARRAYS * min(BLOCK_ROWS, rows) * cols
    return expected + max(render, gaps_building, masks + stored + noise_block)


def _meminfo_available() -> int | None:
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None


def _cgroup_available() -> int | None:
    """Memory left under a cgroup limit (containers, batch jobs), if one is set."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file, encoding="ascii") as handle:
                limit = handle.read().strip()
            with open(usage_file, encoding="ascii") as handle:
                usage = int(handle.read().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:  # "max" or a huge number = no limit
            return max(int(limit) - usage, 0)
    return None


def available_memory_bytes() -> int | None:
    """Memory this process can still allocate without swapping, bytes, or None if the system does not say.

    The smaller of ``MemAvailable`` (/proc/meminfo; elsewhere the free physical pages) and what is left
    under a cgroup memory limit.
    """
    known = [m for m in (_meminfo_available(), _cgroup_available()) if m is not None]
    return min(known) if known else None


def _check_memory(config: SimulationConfig, engine: str) -> None:
    needed = peak_memory_bytes(config, engine)
    available = available_memory_bytes()
    if available is None or needed <= available:
        return
    rows, cols = config.geometry.shape
    r = config.response
    frames = f"{r.n_frames} {r.dtype} frame{'s' if r.n_frames > 1 else ''}"
    raise SimulationError(
        f"a {cols} × {rows} detector (NrPixelsY × NrPixelsZ, {frames}) needs about {needed / _GIB:.1f} GiB "
        f"to simulate; this machine has {available / _GIB:.1f} GiB available; simulate a smaller detector or "
        "fewer frames")


def simulate(config: SimulationConfig, *, keep_expected: bool = False, engine: str = "numba") -> SimulationResult:
    """Render ``config`` and turn the expected counts into stored frames (and a dark frame).

    Parameters
    ----------
    config : SimulationConfig
    keep_expected : bool
        Keep the float64 expected image in the result (costs 8 bytes per pixel).
    engine : {"numba", "numpy"}
        Renderer (see :func:`simulate.render.render_expected`).

    Returns
    -------
    SimulationResult

    Raises
    ------
    RingTableError
        No ring of the material reaches the detector.
    SimulationError
        Inconsistent options (see :class:`SimulationConfig`), or an image too large for the memory
        available (:func:`peak_memory_bytes` against :func:`available_memory_bytes`), checked before
        anything large is allocated.

    Examples
    --------
    >>> from simulate import scenario
    >>> from midas_ref.detector import Geometry
    >>> small = scenario("ge2048", geometry=Geometry(2e5, 60.2, 70.7, 200.0, 128, 128))
    >>> result = simulate(small)
    >>> result.frames.shape, result.frames.dtype.name
    ((1, 128, 128), 'uint16')
    """
    _check_memory(config, engine)
    rings = ring_set(config)
    expected = render_expected(config, rings, engine=engine)
    seeds = streams(config.seed)
    gaps = gap_mask(config)
    bad = bad_pixel_mask(config.geometry.shape, config.response.bad_pixel_fraction, seeds["bad_pixels"])
    if bad is not None and gaps is not None:
        bad &= ~gaps
    frames = make_frames(expected, config.response, seeds, gaps, bad)
    dark = make_dark(config.geometry.shape, config.response, seeds, gaps, bad)
    return SimulationResult(config, frames, dark, rings, gaps, bad, expected if keep_expected else None)
