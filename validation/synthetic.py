"""Synthetic cases: simulate a preset, write the files ``midas-ref simulate`` writes, calibrate them as the
command does, compare with the simulator's truth."""

from __future__ import annotations

import math
import time
from pathlib import Path

from .records import calibrate_file, record_calibration
from .scenarios import Case, start_guess, synthetic_config

__all__ = ["run_synthetic", "guess_options"]


def guess_options(lsd_guess, bc_guess) -> dict:
    """The ``-LsdGuess`` / ``-BCGuess`` of a start as :func:`~validation.records.calibrate_file` options."""
    return {} if lsd_guess is None else {"lsd_guess_um": lsd_guess, "bc_guess_px": tuple(bc_guess)}


def run_synthetic(case: Case, workdir: Path, record: dict) -> None:
    """Simulate, write the files ``midas-ref simulate`` writes, calibrate them, compare with the truth."""
    from simulate import simulate, write_simulation

    cfg = synthetic_config(case.name, case.noise, case.seed)
    t0 = time.perf_counter()
    sim = simulate(cfg)
    files = write_simulation(sim, workdir, "tif")
    t_sim = time.perf_counter() - t0
    truth = cfg.geometry
    lsd_guess, bc_guess = start_guess(truth, case.start)
    _, result, seconds = calibrate_file(files.image, files.params, dark_path=files.dark,
                                        **guess_options(lsd_guess, bc_guess))
    record_calibration(record, result, seconds, truth)
    record["metrics"]["ours"]["time_simulate_s"] = t_sim
    record["metrics"]["truth"]["peak_counts"] = float(cfg.intensity.peak_counts) if not cfg.is_noise_free else math.inf
    record["info"]["description"] = cfg.description
    record["info"]["start_guess"] = {"lsd_um": lsd_guess, "bc_px": bc_guess}
    if cfg.panels is not None:
        from midas_ref.panels import panel_bounds

        record["info"]["panel_bounds"] = panel_bounds(cfg.panels.layout).tolist()
