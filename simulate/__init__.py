"""Calibrant image simulator: renders powder rings through the shared geometry model of ``midas_ref``.

Typical use::

    from simulate import scenario, simulate, write_simulation
    result = simulate(scenario("ge2048", seed=3))
    write_simulation(result, "out/ge2048", "tif", perturb=True)

The command line is ``midas-ref simulate`` (``midas_ref/cli/simulate.py``); ``docs/simulate.md`` describes
the model, its measured accuracy and the output folder. Importing this package does not compile numba
kernels; the renderer compiles on first use.
"""

from .config import (DEFAULT_SUPERSAMPLE, DTYPES, TAIL_CUTOFF_REL, DetectorResponse, Material, PeakShape, RingIntensity,
                     SimulationConfig, SimulationError)
from .from_params import config_from_params
from .noise import bad_pixel_mask, make_dark, make_frames, streams
from .output import FORMATS, SimulationFiles, perturbed_geometry, truth_dict, write_simulation
from .render import RingSet, detector_r_range, pixel_rule, pseudo_voigt, render_expected, ring_set
from .scenarios import NOISE_FREE_SUFFIX, SCENARIOS, list_scenarios, scenario, scenario_names
from .simulation import SimulationResult, gap_mask, simulate

__all__ = [
    "DEFAULT_SUPERSAMPLE", "DTYPES", "TAIL_CUTOFF_REL", "DetectorResponse", "Material", "PeakShape",
    "RingIntensity", "SimulationConfig", "SimulationError", "config_from_params", "bad_pixel_mask", "make_dark",
    "make_frames", "streams", "FORMATS", "SimulationFiles", "perturbed_geometry", "truth_dict",
    "write_simulation", "RingSet", "detector_r_range", "pixel_rule", "pseudo_voigt", "render_expected",
    "ring_set", "NOISE_FREE_SUFFIX", "SCENARIOS", "list_scenarios", "scenario", "scenario_names",
    "SimulationResult", "gap_mask", "simulate",
]
