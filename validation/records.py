"""The toolbox of the validation cases: calibrate an image as the command does, and turn results into records.

Every case module (:mod:`validation.synthetic`, :mod:`validation.legacy`, :mod:`validation.real`,
:mod:`validation.peers`, :mod:`validation.crlb`) builds on these; :mod:`validation.runner` dispatches a
case to its module. Record layout (what :mod:`validation.store` writes):

``case_id``, ``kind``, ``name``, ``case`` (the :class:`~validation.scenarios.Case` fields), ``status``
(``CONVERGED``, ``FAILED``, ``ERROR``, ``SKIPPED``), ``reason``, ``seconds`` (wall time of the case),
``metrics`` (source → {metric: value}; source ``ours``, ``truth``/``reference``, a legacy program, ``pyFAI``,
``crlb``), ``rings`` (per-ring strain of ours), ``points`` (ours' final peak points for the residual map),
``gates`` (filled by :mod:`validation.gates`), ``info`` (free-form notes, e.g. the panel layout).
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np

__all__ = ["calibrate_file", "geometry_values", "geometry_errors", "result_metrics", "ring_rows", "point_columns",
           "new_record", "record_calibration", "GEOMETRY_FIELDS"]


def new_record(case) -> dict:
    """An empty record for ``case`` (a :class:`~validation.scenarios.Case`; status ERROR until the runner
    says otherwise)."""
    return {"case_id": case.case_id, "kind": case.kind, "name": case.name, "case": case.describe(),
            "status": "ERROR", "reason": "", "seconds": math.nan, "metrics": {}, "rings": [], "points": {},
            "gates": [], "info": {}}


#: Geometry fields recorded for every calibration (name in the record → Geometry attribute).
GEOMETRY_FIELDS = {"lsd_um": "lsd_um", "bc_y_px": "bc_y_px", "bc_z_px": "bc_z_px", "ty_deg": "ty_deg",
                   "tz_deg": "tz_deg", "p0": "p0", "p1": "p1", "p2": "p2", "p3_deg": "p3_deg", "p4": "p4"}


def calibrate_file(image: str | Path, params: str | Path, **options):
    """Calibrate an image file as ``midas-ref calibrate -dataFN image -paramFN params`` does, without its files.

    The set-up is the command's own (:func:`midas_ref.inputs.calibration_inputs`); ``options`` are its
    keyword arguments (``dark_path``, ``data_loc``, ``im_trans_opt``, ``lsd_guess_um``, ``bc_guess_px`` …),
    i.e. the command's flags as Python values.

    Returns
    -------
    (CalibrationInputs, CalibrationResult, float)
        The set-up, the result, and the wall time of set-up + calibration, s.
    """
    from midas_ref import autocal
    from midas_ref.inputs import calibration_inputs

    t0 = time.perf_counter()
    inputs = calibration_inputs(image, params, **options)
    result = autocal.calibrate(inputs.image, inputs.mask, inputs.base, inputs.rings, settings=inputs.settings)
    result.timings["load"] = inputs.seconds_load
    return inputs, result, time.perf_counter() - t0


def geometry_values(g) -> dict:
    """The recorded geometry fields of a :class:`~midas_ref.detector.Geometry`."""
    return {name: float(getattr(g, attr)) for name, attr in GEOMETRY_FIELDS.items()}


def _p1p3(g) -> complex:
    return g.p1 * np.exp(1j * np.radians(g.p3_deg))


def geometry_errors(g, truth, *, tilts: bool = True, distortion: bool = True) -> dict:
    """Signed errors ``g − truth`` (µm, px, deg, dimensionless) and their summaries.

    ``err_bc_px`` is the larger |component|, ``err_tilt_deg`` the larger of |Δty|, |Δtz|; ``err_p1p3`` is
    the distance of the Cartesian pairs p1·e^{i·p3} (the pair (p1, p3) ≡ (−p1, p3 ± 180°)).
    """
    e = {"err_lsd_um": g.lsd_um - truth.lsd_um, "err_lsd_rel": g.lsd_um / truth.lsd_um - 1,
         "err_bc_y_px": g.bc_y_px - truth.bc_y_px, "err_bc_z_px": g.bc_z_px - truth.bc_z_px}
    e["err_bc_px"] = max(abs(e["err_bc_y_px"]), abs(e["err_bc_z_px"]))
    if tilts:
        e.update(err_ty_deg=g.ty_deg - truth.ty_deg, err_tz_deg=g.tz_deg - truth.tz_deg)
        e["err_tilt_deg"] = max(abs(e["err_ty_deg"]), abs(e["err_tz_deg"]))
    if distortion:
        e.update(err_p0=g.p0 - truth.p0, err_p2=g.p2 - truth.p2, err_p1p3=float(abs(_p1p3(g) - _p1p3(truth))),
                 err_p4=g.p4 - truth.p4)
    return {k: float(v) for k, v in e.items()}


#: Fit label → the suffix of its ``sigma_*`` metric (the ``err_*`` metric has the same suffix).
SIGMA_LABELS = {"lsd_um": "lsd_um", "bc_y_px": "bc_y_px", "bc_z_px": "bc_z_px", "ty_deg": "ty_deg", "tz_deg": "tz_deg",
                "p0": "p0", "p2": "p2", "p4": "p4"}


def result_metrics(result, seconds: float) -> dict:
    """Fitted geometry, strain, counts and per-stage times of a :class:`~midas_ref.autocal.CalibrationResult`."""
    m = geometry_values(result.geometry)
    m.update(mean_strain=result.mean_strain, std_strain=result.std_strain,
             n_points=int((~result.outlier).sum()), n_rings=len(set(result.points.ring[~result.outlier].tolist())),
             iterations=len(result.iterations), n_excluded_rings=len(result.excluded_rings))
    for stage, value in result.timings.items():
        m[f"time_{stage}_s"] = float(value)
    # standard errors of the refined parameters (only the determined ones: a metric must be finite)
    for label, sigma in getattr(result, "std_errors", {}).items():
        if label in SIGMA_LABELS and math.isfinite(sigma):
            m[f"sigma_{SIGMA_LABELS[label]}"] = float(sigma)
    m["time_calibrate_s"] = float(seconds)
    return {k: float(v) for k, v in m.items()}


def ring_rows(result) -> list[dict]:
    """Per-ring strain of the final geometry (inlier points): ring number, 2θ, points, mean, mean |ε|, s.e.m."""
    from midas_ref.outputs import per_ring_table

    return [{"ring_nr": int(r["ring_nr"]), "two_theta_deg": float(r["two_theta_deg"]), "n_points": r["n_points"],
             "mean_strain": r["mean_strain"], "mean_abs_strain": r["mean_abs_strain"], "sem": r["sem"],
             "excluded": bool(r["excluded"])} for r in per_ring_table(result) if r["n_points"] > 0]


def point_columns(result) -> dict:
    """Final peak points as columns: y, z (px), η (deg), ring number, signed strain, outlier flag."""
    pts = result.points
    ring_nr = np.array([result.rings[k].ring_nr for k in pts.ring], dtype=int)
    return {"y_px": pts.y_px.tolist(), "z_px": pts.z_px.tolist(), "eta_deg": pts.eta_deg.tolist(),
            "ring_nr": ring_nr.tolist(), "strain": np.asarray(result.strain, float).tolist(),
            "outlier": np.asarray(result.outlier, bool).tolist()}


def record_calibration(record: dict, result, seconds: float, reference, *, tilts: bool = True,
                       distortion: bool = True, reference_source: str = "truth") -> None:
    """Fill ``record`` with ours (metrics, rings, points) and the errors against ``reference`` (a Geometry)."""
    ours = result_metrics(result, seconds)
    ours.update(geometry_errors(result.geometry, reference, tilts=tilts, distortion=distortion))
    record["metrics"]["ours"] = ours
    record["metrics"][reference_source] = geometry_values(reference)
    record["rings"] = ring_rows(result)
    record["points"] = point_columns(result)
    record["status"] = result.status
    record["reason"] = result.reason
    record["info"]["distortion_terms"] = list(result.distortion_terms)
    record["info"]["distortion_reason"] = result.distortion_reason
    if result.verdict is not None:
        record["info"]["verdict"] = {"status": result.verdict.status, "reasons": list(result.verdict.reasons),
                                     "checks": result.verdict.checks}
