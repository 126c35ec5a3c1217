"""Peer comparison: pyFAI's scripted recalibration vs ours on the same synthetic image, same start, same run.

pyFAI is an optional extra (``pip install midas-ref[peers]``); without it the case is SKIPPED.

The scenario has no radial distortion (``*_nodist``), so both geometry models describe the image exactly.
Both start from the same geometry: the truth with Lsd × 1.02, BC + (5, −5) px, tilts 0 (the ``near``
start), converted to PONI with :func:`midas_ref.convert.midas_to_poni`. pyFAI runs its single-geometry
refinement as a script: ``SingleGeometry.extract_cp`` (control points by its peak-picker, Massif, on
every ring that reaches the detector, 1 point per degree) then ``GeometryRefinement.refine3`` with the
wavelength and rot3 fixed, repeated with fresh control points until the geometry stops moving (at most
:data:`MAX_ROUNDS` rounds; from the ``near`` start pyFAI converges slowly — its control points are picked
in 2θ windows of the current geometry — so the round count and whether it settled are recorded) — what ``pyFAI-recalib`` does without its GUI. Its result is converted back
with :func:`midas_ref.convert.poni_to_midas`. Ours is :func:`validation.runner.calibrate_file` with
``-LsdGuess``/``-BCGuess`` at the same start. Times are wall-clock in the same process, one after the
other; ratios are pyFAI / ours (> 1: ours is better or faster).
"""

from __future__ import annotations

import importlib.util
import logging
import time
import warnings
from pathlib import Path

import numpy as np

from .records import calibrate_file, geometry_errors, geometry_values, record_calibration
from .scenarios import start_guess, synthetic_config
from .synthetic import guess_options

__all__ = ["pyfai_available", "pyfai_recalibrate", "run_peer_case", "MAX_ROUNDS"]

#: Extract-and-refine rounds of the pyFAI script.
MAX_ROUNDS = 10


def pyfai_available() -> bool:
    """Whether pyFAI can be imported."""
    if importlib.util.find_spec("pyFAI") is None:
        return False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importlib.import_module("pyFAI.goniometer")
    except Exception:  # a broken install counts as absent
        return False
    return True


def pyfai_recalibrate(image: np.ndarray, start, wavelength_angstrom: float, d_spacings_angstrom, *,
                      max_rounds: int = MAX_ROUNDS):
    """Refine ``start`` (a MIDAS Geometry, no distortion) with pyFAI on ``image``.

    Returns
    -------
    (Geometry, int, int, bool)
        The refined geometry, the rounds run, the control points of the last round, and whether the last
        round moved the geometry by less than 1e-4 px.

    Raises
    ------
    RuntimeError
        pyFAI found fewer than 10 control points.
    """
    from midas_ref.convert import PoniGeometry, midas_to_poni, poni_to_midas

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pyFAI.calibrant import Calibrant
        from pyFAI.detectors import Detector
        from pyFAI.geometry import Geometry as FaiGeometry
        from pyFAI.goniometer import SingleGeometry
    logging.getLogger("pyFAI").setLevel(logging.ERROR)
    poni = midas_to_poni(start, wavelength_angstrom, ignore_distortion=True)
    rows, cols = start.shape
    detector = Detector(pixel1=poni.pixel1_m, pixel2=poni.pixel2_m, max_shape=(rows, cols))
    wavelength_m = wavelength_angstrom * 1e-10
    calibrant = Calibrant(dSpacing=list(d_spacings_angstrom), wavelength=wavelength_m)
    geo = FaiGeometry(dist=poni.dist_m, poni1=poni.poni1_m, poni2=poni.poni2_m, rot1=poni.rot1_rad,
                      rot2=poni.rot2_rad, rot3=poni.rot3_rad, detector=detector, wavelength=wavelength_m)
    current = start
    n_points = 0
    rounds = 0
    for rounds in range(1, max_rounds + 1):
        sg = SingleGeometry("peer", np.ascontiguousarray(image, dtype=np.float32), calibrant=calibrant,
                            detector=detector, geometry=geo)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            sg.extract_cp(max_rings=len(d_spacings_angstrom), pts_per_deg=1.0)
            n_points = len(sg.control_points.getList()) if sg.control_points is not None else 0
            if n_points < 10:
                raise RuntimeError(f"pyFAI found only {n_points} control points")
            sg.geometry_refinement.refine3(fix=["wavelength", "rot3"])
        gr = sg.geometry_refinement
        geo = FaiGeometry(dist=gr.dist, poni1=gr.poni1, poni2=gr.poni2, rot1=gr.rot1, rot2=gr.rot2, rot3=gr.rot3,
                          detector=detector, wavelength=wavelength_m)
        new = poni_to_midas(PoniGeometry(gr.dist, gr.poni1, gr.poni2, gr.rot1, gr.rot2, gr.rot3, poni.pixel1_m,
                                         poni.pixel2_m, wavelength_m, (rows, cols)), rho_d_um=start.rho_d_um)
        moved = max(abs(new.bc_y_px - current.bc_y_px), abs(new.bc_z_px - current.bc_z_px),
                    abs(new.lsd_um - current.lsd_um) / new.px_um)
        current = new
        if moved < 1e-4:
            break
    return current, rounds, n_points, moved < 1e-4


def run_peer_case(case, workdir: Path, record: dict) -> None:
    """Ours and pyFAI on one simulated image from the same start; errors vs truth and time, side by side."""
    from midas_ref.detector import Geometry
    from midas_ref.inputs import calibrant_rings
    from simulate import simulate, write_simulation

    cfg = synthetic_config(case.name, case.noise, case.seed)
    truth = cfg.geometry
    sim = simulate(cfg)
    files = write_simulation(sim, workdir, "tif")
    lsd_guess, bc_guess = start_guess(truth, case.start)
    inputs, result, seconds = calibrate_file(files.image, files.params, **guess_options(lsd_guess, bc_guess))
    record_calibration(record, result, seconds, truth, distortion=False)
    if not pyfai_available():
        record["metrics"]["pyFAI"] = {}
        record["info"]["pyFAI"] = "SKIPPED: pyFAI not installed (pip install midas-ref[peers])"
        return
    if lsd_guess is None:
        record["info"]["pyFAI"] = "SKIPPED: pyFAI needs a start geometry"
        return
    start = Geometry(lsd_um=lsd_guess, bc_y_px=bc_guess[0], bc_z_px=bc_guess[1], px_um=truth.px_um,
                     n_pixels_y=truth.n_pixels_y, n_pixels_z=truth.n_pixels_z, rho_d_um=truth.rho_d_um)
    wavelength = cfg.material.wavelength_angstrom
    # the rings within one detector diagonal of the beam at the true distance
    rings = calibrant_rings(cfg.material.space_group, cfg.material.lattice, wavelength, shape=truth.shape,
                            px_um=truth.px_um, lsd_um=truth.lsd_um, reach=(1.0, 1.0))
    image = inputs.image
    t0 = time.perf_counter()
    try:
        fitted, rounds, n_points, converged = pyfai_recalibrate(image, start, wavelength, [r.d_angstrom for r in rings])
    except Exception as exc:  # pyFAI's own failure is a result of the comparison, not a harness error
        record["info"]["pyFAI"] = f"FAILED: {type(exc).__name__}: {exc}"
        record["metrics"]["pyFAI"] = {"time_total_s": time.perf_counter() - t0}
        return
    t_fai = time.perf_counter() - t0
    fai = geometry_values(fitted)
    fai.update(geometry_errors(fitted, truth, distortion=False))
    fai.update(time_total_s=t_fai, iterations=float(rounds), n_points=float(n_points))
    record["metrics"]["pyFAI"] = fai
    ours = record["metrics"]["ours"]
    ratios = {}
    for metric in ("err_lsd_um", "err_bc_px", "err_tilt_deg"):
        if ours.get(metric):
            ratios[f"ratio_{metric}"] = abs(fai[metric]) / abs(ours[metric])
    ratios["ratio_time"] = t_fai / ours["time_calibrate_s"]
    record["metrics"]["pyFAI/ours"] = ratios
    import pyFAI

    record["info"]["pyFAI"] = (f"pyFAI {pyFAI.version}: {rounds} rounds, {n_points} control points, "
                               + ("converged" if converged else f"still moving after {rounds} rounds"))
