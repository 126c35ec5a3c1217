"""One validation run: cases (serial or on Dask) → gates → SQLite → comparison → HTML → console table.

:func:`run_validation` is what ``midas-ref validate`` calls; it returns a :class:`ValidationOutcome`.
"""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path

from .coverage import attach_coverage
from .crlb import attach_crlb
from .environment import code_version, machine_info
from .gates import evaluate_gates
from .runner import run_case
from .scenarios import suite_cases
from .shared import resolve_shared_dir
from .store import compare_runs, compare_text, write_run
from .tables import build_tables, text_table

__all__ = ["ValidationOutcome", "run_validation", "case_line"]


@dataclass
class ValidationOutcome:
    """What a run produced: records, run id, files, failed gates, and the exit code (0 ok, 1 gate failed)."""

    records: list
    run_id: int
    db: Path
    html: Path | None
    tables_text: str
    failed_gates: list = field(default_factory=list)
    errors: list = field(default_factory=list)
    compare: list | None = None
    wall_s: float = 0.0

    @property
    def exit_code(self) -> int:
        return 1 if self.failed_gates or self.errors else 0


def case_line(k: int, n: int, record: dict) -> str:
    """One progress line: index, case, status, main errors, time."""
    ours = record["metrics"].get("ours", {})
    bits = [f"[{k}/{n}] {record['case_id']}: {record['status']}"]
    if "err_lsd_um" in ours:
        bits.append(f"ΔLsd {ours['err_lsd_um']:+.3f} µm, ΔBC {ours.get('err_bc_px', float('nan')):.5f} px")
    if record["gates"]:
        failed = sum(not g["passed"] for g in record["gates"])
        bits.append(f"gates {len(record['gates']) - failed}/{len(record['gates'])}")
    bits.append(f"{record['seconds']:.1f} s")
    if record["reason"] and record["status"] != "CONVERGED":
        bits.append(record["reason"])
    return ", ".join(bits)


def run_validation(suite: str = "quick", out_dir: str | Path = "validation-out", *, db: str | Path | None = None,
                   compare: str | Path | None = None, scheduler: str | None = None, workers: int = 1, seed: int = 1,
                   html: bool = True, shared: str | Path | None = None, cases=None, benchmarks: bool | None = None,
                   progress=None) -> ValidationOutcome:
    """Run a validation suite and write its results.

    Parameters
    ----------
    suite : {"quick", "full"}
    out_dir : path-like
        Receives ``report.html``, ``figures/``, ``tables.txt`` and (default) ``results.sqlite``.
    db : path-like, optional
        Results database (default ``<out_dir>/results.sqlite``); runs are appended.
    compare : path-like, optional
        An older results database: report what got better or worse (``<out_dir>/compare.txt``).
    scheduler : str, optional
        Address of a Dask scheduler; with ``workers`` > 1 and no scheduler a local Dask cluster is used.
    workers : int
        1 = serial in this process.
    seed : int
        First seed of the synthetic cases.
    html : bool
        Write the dashboard.
    shared : path-like, optional
        The reference folder (default ``$MIDAS_REF_SHARED`` or ``../shared`` beside the repository).
    cases : list of Case, optional
        Run these instead of the suite's matrix (tests).
    benchmarks : bool, optional
        Run the pytest-benchmark suites (default: only in the full suite).
    progress : callable(str), optional
        Receives one line per finished case.
    """
    from midas_ref.atomic import write_text_atomic

    say = progress or (lambda line: None)
    if compare is not None:
        from .store import StoreError, connect

        try:  # fail early on a bad file, before any case runs
            connect(compare, create=False).close()
        except StoreError as exc:
            raise StoreError(f"--compare {exc}") from None
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    db = Path(db) if db else out_dir / "results.sqlite"
    shared_dir = resolve_shared_dir(shared)
    cases = list(cases) if cases is not None else suite_cases(suite, seed, shared_dir)
    started = _dt.datetime.now().isoformat(timespec="seconds")
    t0 = time.perf_counter()
    n = len(cases)
    say(f"midas-ref validate: suite {suite}, {n} cases, "
        + (f"Dask scheduler {scheduler}" if scheduler else f"Dask local cluster of {workers} workers" if workers > 1
           else "serial") + f"; reference folder {shared_dir or 'absent'}")
    done = [0]

    def report(record):
        done[0] += 1
        say(case_line(done[0], n, record))

    if scheduler or workers > 1:
        from .dask_runner import dask_client, map_cases

        with dask_client(scheduler, workers) as client:
            records = map_cases(cases, shared_dir, client, report)
    else:
        records = []
        for case in cases:
            records.append(run_case(case, shared_dir))
            report(records[-1])
    by_id = {r["case_id"]: r for r in records}
    for r in records:
        if r["kind"] == "crlb" and r["status"] == "DONE":
            attach_crlb(r, by_id)
        if r["kind"] == "coverage" and r["status"] == "DONE":
            attach_coverage(r, by_id)
    for r in records:
        r["gates"] = evaluate_gates(r)
    bench = []
    if benchmarks if benchmarks is not None else suite == "full":
        from .benchmarks import run_benchmarks

        say("running the pytest-benchmark suites (tests/benchmarks) …")
        run_benchmarks(out_dir / "benchmarks")
    from .benchmarks import read_benchmarks

    bench = read_benchmarks(out_dir)
    wall = time.perf_counter() - t0
    run = {"started": started, "finished": _dt.datetime.now().isoformat(timespec="seconds"), "suite": suite,
           "seed": seed, "code": code_version(), "machine": machine_info(),
           "options": {"scheduler": scheduler, "workers": workers, "shared": str(shared_dir) if shared_dir else None,
                       "db": str(db)}, "wall_s": wall}
    run_id = write_run(db, run, records, bench)
    tables = build_tables(records)
    text = "".join(text_table(t) + "\n" for t in tables if t.rows)
    write_text_atomic(out_dir / "tables.txt", text)
    changes = None
    if compare is not None:
        changes = compare_runs(compare, db, run_id)
        write_text_atomic(out_dir / "compare.txt", compare_text(changes, compare))
    html_path = None
    if html:
        from .dashboard import write_dashboard

        html_path = write_dashboard(db, out_dir, run_id=run_id, compare=changes)
    failed = [(r["case_id"], g) for r in records for g in r["gates"] if not g["passed"]]
    errors = [(r["case_id"], r["reason"]) for r in records if r["status"] == "ERROR"]
    return ValidationOutcome(records, run_id, db, html_path, text, failed, errors, changes, wall)
