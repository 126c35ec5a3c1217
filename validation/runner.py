"""Run one validation case and return its record (a plain, JSON-serialisable dict).

Every calibration goes through :func:`calibrate_file`, i.e. the set-up of ``midas-ref calibrate``
(:func:`midas_ref.cli.calibrate.prepare`: parameter file, image reader, mask, ring table, settings) and
:func:`midas_ref.autocal.calibrate` — the command a user runs, without its output files.

Record layout (what :mod:`validation.store` writes):

``case_id``, ``kind``, ``name``, ``case`` (the :class:`~validation.scenarios.Case` fields), ``status``
(``CONVERGED``, ``FAILED``, ``ERROR``, ``SKIPPED``), ``reason``, ``seconds`` (wall time of the case),
``metrics`` (source → {metric: value}; source ``ours``, ``truth``/``reference``, a legacy program, ``pyFAI``,
``crlb``), ``rings`` (per-ring strain of ours), ``points`` (ours' final peak points for the residual map),
``gates`` (filled by :mod:`validation.gates`), ``info`` (free-form notes, e.g. the panel layout).
"""

from __future__ import annotations

import math
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

from midas_ref.errors import MidasRefError

from .environment import PeakMemory
from .scenarios import Case, start_guess, synthetic_config

__all__ = ["run_case", "calibrate_file", "geometry_values", "geometry_errors", "result_metrics", "ring_rows",
           "point_columns", "new_record", "GEOMETRY_FIELDS"]

#: Geometry fields recorded for every calibration (name in the record → Geometry attribute).
GEOMETRY_FIELDS = {"lsd_um": "lsd_um", "bc_y_px": "bc_y_px", "bc_z_px": "bc_z_px", "ty_deg": "ty_deg",
                   "tz_deg": "tz_deg", "p0": "p0", "p1": "p1", "p2": "p2", "p3_deg": "p3_deg", "p4": "p4"}


def new_record(case: Case) -> dict:
    """An empty record for ``case`` (status ERROR until the runner says otherwise)."""
    return {"case_id": case.case_id, "kind": case.kind, "name": case.name, "case": case.describe(),
            "status": "ERROR", "reason": "", "seconds": math.nan, "metrics": {}, "rings": [], "points": {},
            "gates": [], "info": {}}


def calibrate_file(image: str | Path, params: str | Path, *extra: str):
    """Calibrate an image file exactly as ``midas-ref calibrate -dataFN image -paramFN params *extra``.

    Returns
    -------
    (Prepared, CalibrationResult, float)
        The command's set-up, the result, and the wall time of set-up + calibration, s.
    """
    from midas_ref import autocal
    from midas_ref.cli import build_parser
    from midas_ref.cli.calibrate import prepare

    args = build_parser().parse_args(["calibrate", "-dataFN", str(image), "-paramFN", str(params), *map(str, extra)])
    t0 = time.perf_counter()
    prep = prepare(args)
    result = autocal.calibrate(prep.loaded.image, prep.loaded.mask, prep.base, prep.rings, settings=prep.settings)
    result.timings["load"] = prep.seconds_load
    return prep, result, time.perf_counter() - t0


def geometry_values(g) -> dict:
    """The recorded geometry fields of a :class:`~midas_ref.params.Geometry`."""
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


def result_metrics(result, seconds: float) -> dict:
    """Fitted geometry, strain, counts and per-stage times of a :class:`~midas_ref.autocal.CalibrationResult`."""
    m = geometry_values(result.geometry)
    m.update(mean_strain=result.mean_strain, std_strain=result.std_strain,
             n_points=int((~result.outlier).sum()), n_rings=len(set(result.points.ring[~result.outlier].tolist())),
             iterations=len(result.iterations), n_excluded_rings=len(result.excluded_rings))
    for stage, value in result.timings.items():
        m[f"time_{stage}_s"] = float(value)
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
    extra = []
    if files.dark is not None:
        extra += ["-darkFN", str(files.dark)]
    if lsd_guess is not None:
        extra += ["-LsdGuess", repr(lsd_guess), "-BCGuess", repr(bc_guess[0]), repr(bc_guess[1])]
    _, result, seconds = calibrate_file(files.image, files.params, *extra)
    record_calibration(record, result, seconds, truth)
    record["metrics"]["ours"]["time_simulate_s"] = t_sim
    record["metrics"]["truth"]["peak_counts"] = float(cfg.intensity.peak_counts) if not cfg.is_noise_free else math.inf
    record["info"]["description"] = cfg.description
    record["info"]["start_guess"] = {"lsd_um": lsd_guess, "bc_px": bc_guess}
    if cfg.panels is not None:
        from midas_ref.panels import panel_bounds

        record["info"]["panel_bounds"] = panel_bounds(cfg.panels.layout).tolist()


def run_case(case: Case, shared_dir: str | Path | None = None, workdir: str | Path | None = None) -> dict:
    """Run ``case`` and return its record; never raises for a failing case (status ERROR + reason).

    Parameters
    ----------
    case : Case
    shared_dir : path-like, optional
        The reference folder (``../shared``); legacy and real cases are SKIPPED without it.
    workdir : path-like, optional
        Scratch folder for simulated files (default: a temporary folder removed afterwards).
    """
    record = new_record(case)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="midas-ref-validate-", dir=workdir) as tmp, PeakMemory() as memory:
        tmp = Path(tmp)
        try:
            if case.kind == "synthetic":
                run_synthetic(case, tmp, record)
            elif case.kind == "legacy":
                from .legacy import run_legacy_case

                run_legacy_case(case, shared_dir, tmp, record)
            elif case.kind == "real":
                from .real import run_real_case

                run_real_case(case, shared_dir, tmp, record)
            elif case.kind == "crlb":
                from .crlb import run_crlb_case

                run_crlb_case(case, record)
            elif case.kind == "peer":
                from .peers import run_peer_case

                run_peer_case(case, tmp, record)
            else:
                raise ValueError(f"unknown case kind {case.kind!r}")
        except MidasRefError as exc:
            record["status"], record["reason"] = "ERROR", f"{type(exc).__name__}: {exc}"
        except Exception as exc:  # a bug: keep the traceback in the record, carry on with the other cases
            record["status"] = "ERROR"
            record["reason"] = f"{type(exc).__name__}: {exc}"
            record["info"]["traceback"] = traceback.format_exc()
    record["seconds"] = time.perf_counter() - t0
    ours = record["metrics"].setdefault("ours", {}) if record["status"] not in ("SKIPPED",) else None
    if ours is not None:
        ours["time_total_s"] = record["seconds"]
        ours["peak_rss_mib"] = memory.peak_mib
        ours["rss_increase_mib"] = memory.increase_mib
    return record
