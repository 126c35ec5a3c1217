"""One call from a configuration to frames: render, add noise, mark gaps and bad pixels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from midas_ref.panels import panel_index_map

from .config import SimulationConfig
from .noise import bad_pixel_mask, make_dark, make_frames, streams
from .render import RingSet, render_expected, ring_set

__all__ = ["SimulationResult", "simulate", "gap_mask"]


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
        Inconsistent options (see :class:`SimulationConfig`).

    Examples
    --------
    >>> from simulate import scenario
    >>> from midas_ref.detector import Geometry
    >>> small = scenario("ge2048", geometry=Geometry(2e5, 60.2, 70.7, 200.0, 128, 128))
    >>> result = simulate(small)
    >>> result.frames.shape, result.frames.dtype.name
    ((1, 128, 128), 'uint16')
    """
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
