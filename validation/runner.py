"""Run one validation case and return its record (a plain, JSON-serialisable dict; layout in
:mod:`validation.records`).

Every calibration goes through :func:`validation.records.calibrate_file`, i.e. the set-up of ``midas-ref
calibrate`` (:func:`midas_ref.inputs.calibration_inputs`: parameter file, image reader, mask, ring table,
settings) and :func:`midas_ref.autocal.calibrate` — the command a user runs, without its output files.
This module only dispatches a case to the module of its kind.
"""

from __future__ import annotations

import tempfile
import time
import traceback
from pathlib import Path

from midas_ref.errors import MidasRefError

from .coverage import run_coverage_case
from .adversarial import run_adversarial_case
from .crlb import run_crlb_case
from .environment import PeakMemory
from .legacy import run_legacy_case
from .peers import run_peer_case
from .real import run_real_case
from .records import new_record
from .scenarios import Case
from .synthetic import run_synthetic

__all__ = ["run_case"]

#: Case kind → ``run(case, shared_dir, workdir, record)``.
_RUNNERS = {
    "synthetic": lambda case, shared, tmp, record: run_synthetic(case, tmp, record),
    "legacy": run_legacy_case,
    "real": run_real_case,
    "crlb": lambda case, shared, tmp, record: run_crlb_case(case, record),
    "peer": lambda case, shared, tmp, record: run_peer_case(case, tmp, record),
    "coverage": lambda case, shared, tmp, record: run_coverage_case(case, record),
    "adversarial": run_adversarial_case,
}


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
            if case.kind not in _RUNNERS:
                raise ValueError(f"unknown case kind {case.kind!r}")
            _RUNNERS[case.kind](case, shared_dir, tmp, record)
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
