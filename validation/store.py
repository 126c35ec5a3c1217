"""Results history in SQLite: one file, one row set per run, so accuracy and speed can be tracked over commits.

Schema (``PRAGMA user_version`` = :data:`SCHEMA_VERSION`):

``runs``        run_id, started, finished (ISO times), suite, seed, code_describe, code_commit, package_version,
                machine (JSON), options (JSON), wall_s, n_cases, n_gates, n_gates_failed
``cases``       run_id, case_id, kind, name, noise, seed, start, status, reason, seconds, info (JSON)
``metrics``     run_id, case_id, source, metric, value — source ``ours``, ``truth``/``reference``, a legacy
                program, ``pyFAI``, ``crlb``; metric names carry their unit (``err_lsd_um``, ``time_fit_s``)
``rings``       run_id, case_id, ring_nr, two_theta_deg, n_points, mean_strain, mean_abs_strain, sem, excluded
``points``      run_id, case_id, y_px, z_px, eta_deg, ring_nr, strain, outlier
``gates``       run_id, case_id, quantity, value, bound, passed
``benchmarks``  run_id, name, grp, mean_s, min_s, max_s, stddev_s, rounds, source

A run is written in one transaction (all or nothing). NaN is stored as NULL, ±inf as SQLite's ±Inf.
"""

from __future__ import annotations

import json
import math
import sqlite3
from contextlib import closing
from pathlib import Path

from midas_ref.errors import MidasRefError

__all__ = ["SCHEMA_VERSION", "StoreError", "connect", "write_run", "load_run", "metric_history",
           "compare_runs", "compare_text", "Change"]

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    run_id INTEGER PRIMARY KEY AUTOINCREMENT, started TEXT, finished TEXT, suite TEXT, seed INTEGER,
    code_describe TEXT, code_commit TEXT, package_version TEXT, machine TEXT, options TEXT, wall_s REAL,
    n_cases INTEGER, n_gates INTEGER, n_gates_failed INTEGER);
CREATE TABLE IF NOT EXISTS cases (
    run_id INTEGER NOT NULL REFERENCES runs(run_id), case_id TEXT NOT NULL, kind TEXT, name TEXT, noise TEXT,
    seed INTEGER, start TEXT, status TEXT, reason TEXT, seconds REAL, info TEXT, PRIMARY KEY (run_id, case_id));
CREATE TABLE IF NOT EXISTS metrics (
    run_id INTEGER NOT NULL, case_id TEXT NOT NULL, source TEXT NOT NULL, metric TEXT NOT NULL, value REAL,
    PRIMARY KEY (run_id, case_id, source, metric));
CREATE TABLE IF NOT EXISTS rings (
    run_id INTEGER NOT NULL, case_id TEXT NOT NULL, ring_nr INTEGER, two_theta_deg REAL, n_points INTEGER,
    mean_strain REAL, mean_abs_strain REAL, sem REAL, excluded INTEGER);
CREATE TABLE IF NOT EXISTS points (
    run_id INTEGER NOT NULL, case_id TEXT NOT NULL, y_px REAL, z_px REAL, eta_deg REAL, ring_nr INTEGER,
    strain REAL, outlier INTEGER);
CREATE TABLE IF NOT EXISTS gates (
    run_id INTEGER NOT NULL, case_id TEXT NOT NULL, quantity TEXT, value REAL, bound REAL, passed INTEGER);
CREATE TABLE IF NOT EXISTS benchmarks (
    run_id INTEGER NOT NULL, name TEXT, grp TEXT, mean_s REAL, min_s REAL, max_s REAL, stddev_s REAL,
    rounds INTEGER, source TEXT);
CREATE INDEX IF NOT EXISTS metrics_by_name ON metrics (metric, case_id);
CREATE INDEX IF NOT EXISTS points_by_case ON points (run_id, case_id);
"""


class StoreError(MidasRefError):
    """The results database cannot be opened, is not a midas-ref results file, or holds no run."""


def connect(path: str | Path, *, create: bool = True) -> sqlite3.Connection:
    """Open (and create, unless ``create`` is False) a results database; checks the schema version."""
    path = Path(path)
    if path.is_dir():
        inside = path / "results.sqlite"
        if inside.is_file():
            hint = f"; did you mean {inside} (the results database in it)?"
        elif create:
            hint = f"; give a file name, e.g. {inside}"
        else:
            hint = " (and there is no results.sqlite in it); give the .sqlite file of an earlier run"
        raise StoreError(f"{path}: is a folder, not a results database{hint}")
    if not create and not path.is_file():
        raise StoreError(f"{path}: no such results database")
    if create:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        conn = sqlite3.connect(str(path))
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"{path}: not an SQLite results database ({exc})") from None
    if tables and "runs" not in tables:
        conn.close()
        raise StoreError(f"{path}: an SQLite file without a 'runs' table (not a midas-ref results database)")
    if version not in (0, SCHEMA_VERSION):
        conn.close()
        raise StoreError(f"{path}: schema version {version}, this midas-ref reads version {SCHEMA_VERSION}")
    if create:
        conn.executescript(_SCHEMA)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.commit()
    elif not tables:
        conn.close()
        raise StoreError(f"{path}: empty database (no run recorded)")
    return conn


def _num(value):
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def write_run(path: str | Path, run: dict, records: list[dict], benchmarks: list[dict] = ()) -> int:
    """Append one run (metadata, case records, benchmark results) in a single transaction; returns run_id.

    Parameters
    ----------
    run : dict
        ``started``, ``finished``, ``suite``, ``seed``, ``code`` ({describe, commit, package}), ``machine``,
        ``options``, ``wall_s``.
    records : list of dict
        Case records (:mod:`validation.runner`), gates included.
    benchmarks : list of dict
        ``{name, group, mean_s, min_s, max_s, stddev_s, rounds, source}``.
    """
    n_gates = sum(len(r["gates"]) for r in records)
    n_failed = sum(not g["passed"] for r in records for g in r["gates"])
    with closing(connect(path)) as conn, conn:
        cur = conn.execute(
            "INSERT INTO runs (started, finished, suite, seed, code_describe, code_commit, package_version, machine,"
            " options, wall_s, n_cases, n_gates, n_gates_failed) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (run["started"], run["finished"], run["suite"], run["seed"], run["code"]["describe"],
             run["code"]["commit"], run["code"]["package"], json.dumps(run["machine"]),
             json.dumps(run.get("options", {})), _num(run["wall_s"]), len(records), n_gates, n_failed))
        run_id = cur.lastrowid
        for r in records:
            c = r["case"]
            conn.execute("INSERT INTO cases VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                         (run_id, r["case_id"], r["kind"], r["name"], c["noise"], c["seed"], c["start"], r["status"],
                          r["reason"], _num(r["seconds"]), json.dumps(r["info"], default=str)))
            conn.executemany("INSERT INTO metrics VALUES (?,?,?,?,?)",
                             [(run_id, r["case_id"], source, metric, _num(value))
                              for source, values in r["metrics"].items() for metric, value in values.items()])
            conn.executemany("INSERT INTO rings VALUES (?,?,?,?,?,?,?,?,?)",
                             [(run_id, r["case_id"], row["ring_nr"], row["two_theta_deg"], row["n_points"],
                               _num(row["mean_strain"]), _num(row["mean_abs_strain"]), _num(row["sem"]),
                               int(row["excluded"])) for row in r["rings"]])
            p = r["points"]
            if p:
                conn.executemany("INSERT INTO points VALUES (?,?,?,?,?,?,?,?)",
                                 [(run_id, r["case_id"], *row[:5], int(row[5])) for row in
                                  zip(p["y_px"], p["z_px"], p["eta_deg"], p["ring_nr"], p["strain"], p["outlier"])])
            conn.executemany("INSERT INTO gates VALUES (?,?,?,?,?,?)",
                             [(run_id, r["case_id"], g["quantity"], _num(g["value"]), _num(g["bound"]),
                               int(g["passed"])) for g in r["gates"]])
        conn.executemany("INSERT INTO benchmarks VALUES (?,?,?,?,?,?,?,?,?)",
                         [(run_id, b["name"], b["group"], _num(b["mean_s"]), _num(b["min_s"]), _num(b["max_s"]),
                           _num(b["stddev_s"]), b["rounds"], b["source"]) for b in benchmarks])
    return run_id


def load_run(path: str | Path, run_id: int | None = None, *, points: bool = True) -> dict:
    """One run (default: the latest) as ``{"run": {...}, "records": [...], "benchmarks": [...]}``.

    Records have the layout of :mod:`validation.runner` (NULL metrics come back as NaN).
    """
    with closing(connect(path, create=False)) as conn:
        conn.row_factory = sqlite3.Row
        row = (conn.execute("SELECT * FROM runs ORDER BY run_id DESC LIMIT 1").fetchone() if run_id is None else
               conn.execute("SELECT * FROM runs WHERE run_id = ?", (run_id,)).fetchone())
        if row is None:
            raise StoreError(f"{path}: no run {'recorded' if run_id is None else run_id}")
        run = dict(row)
        run["machine"] = json.loads(run["machine"] or "{}")
        run["options"] = json.loads(run["options"] or "{}")
        rid = run["run_id"]
        records = {}
        for c in conn.execute("SELECT * FROM cases WHERE run_id = ? ORDER BY rowid", (rid,)):
            records[c["case_id"]] = {
                "case_id": c["case_id"], "kind": c["kind"], "name": c["name"],
                "case": {"kind": c["kind"], "name": c["name"], "noise": c["noise"], "seed": c["seed"],
                         "start": c["start"]},
                "status": c["status"], "reason": c["reason"],
                "seconds": math.nan if c["seconds"] is None else c["seconds"], "metrics": {}, "rings": [],
                "points": {}, "gates": [], "info": json.loads(c["info"] or "{}")}
        for m in conn.execute("SELECT case_id, source, metric, value FROM metrics WHERE run_id = ?", (rid,)):
            records[m[0]]["metrics"].setdefault(m[1], {})[m[2]] = math.nan if m[3] is None else m[3]
        for g in conn.execute("SELECT * FROM gates WHERE run_id = ? ORDER BY rowid", (rid,)):
            records[g["case_id"]]["gates"].append({"quantity": g["quantity"], "value": g["value"],
                                                   "bound": g["bound"], "passed": bool(g["passed"])})
        for ring in conn.execute("SELECT * FROM rings WHERE run_id = ? ORDER BY rowid", (rid,)):
            d = dict(ring)
            d.pop("run_id")
            d["excluded"] = bool(d["excluded"])
            records[d.pop("case_id")]["rings"].append(d)
        if points:
            cols = ("y_px", "z_px", "eta_deg", "ring_nr", "strain", "outlier")
            for p in conn.execute("SELECT case_id, y_px, z_px, eta_deg, ring_nr, strain, outlier FROM points "
                                  "WHERE run_id = ? ORDER BY rowid", (rid,)):
                target = records[p[0]]["points"]
                for name, value in zip(cols, p[1:]):
                    target.setdefault(name, []).append(bool(value) if name == "outlier" else value)
        benchmarks = [dict(b) for b in conn.execute("SELECT name, grp, mean_s, min_s, max_s, stddev_s, rounds, "
                                                    "source FROM benchmarks WHERE run_id = ?", (rid,))]
    return {"run": run, "records": list(records.values()), "benchmarks": benchmarks}


def metric_history(path: str | Path, metric: str, *, source: str = "ours", case_id: str | None = None) -> list[dict]:
    """Every run's value of ``metric`` (per case, or only ``case_id``): run_id, started, code, case_id, value."""
    query = ("SELECT r.run_id, r.started, r.code_describe, m.case_id, m.value FROM metrics m JOIN runs r "
             "ON r.run_id = m.run_id WHERE m.metric = ? AND m.source = ?")
    args = [metric, source]
    if case_id is not None:
        query += " AND m.case_id = ?"
        args.append(case_id)
    with closing(connect(path, create=False)) as conn:
        rows = conn.execute(query + " ORDER BY r.run_id", args).fetchall()
    return [{"run_id": r[0], "started": r[1], "code": r[2], "case_id": r[3],
             "value": math.nan if r[4] is None else r[4]} for r in rows]


#: Metric name prefixes (of source ``ours``) that are scored: smaller |value| is better. Each has a floor
#: below which a change is noise: (relative threshold, absolute floor).
_SCORED = {"err_lsd_um": (0.2, 0.02), "err_lsd_rel": (0.2, 2e-8), "err_bc": (0.2, 2e-5), "err_ty": (0.2, 2e-6),
           "err_tz": (0.2, 2e-6), "err_tilt": (0.2, 2e-6), "err_p": (0.2, 1e-7), "mean_strain": (0.2, 1e-7),
           "std_strain": (0.2, 1e-7), "time_": (0.25, 0.3), "peak_rss_mib": (0.25, 20.0)}


class Change(dict):
    """One compared quantity: ``case_id``, ``what``, ``old``, ``new``, ``verdict`` (better/worse/same)."""


def _verdict(metric: str, old: float, new: float) -> str | None:
    for prefix, (rel, floor) in _SCORED.items():
        if metric.startswith(prefix):
            a, b = abs(old), abs(new)
            if not (math.isfinite(a) and math.isfinite(b)):
                return None
            if abs(b - a) <= max(floor, rel * min(a, b)):
                return "same"
            return "better" if b < a else "worse"
    return None


def compare_runs(old_path: str | Path, new_path: str | Path, new_run_id: int | None = None) -> list[Change]:
    """What got better or worse between the latest run of ``old_path`` and run ``new_run_id`` of ``new_path``.

    Compares, for every case present in both: the status, each gate (pass → fail is worse), and every
    scored metric of ours (errors, strain, times, memory: smaller |value| is better; a change counts when it
    exceeds both a relative threshold and an absolute noise floor, see ``_SCORED``). Returns only the
    changes that are ``better`` or ``worse``, plus cases added or removed.
    """
    old = load_run(old_path, points=False)
    new = load_run(new_path, new_run_id, points=False)
    old_records = {r["case_id"]: r for r in old["records"]}
    new_records = {r["case_id"]: r for r in new["records"]}
    changes = []
    for case_id in sorted(set(old_records) | set(new_records)):
        if case_id not in old_records or case_id not in new_records:
            changes.append(Change(case_id=case_id, what="case", old="absent" if case_id not in old_records else
                                  old_records[case_id]["status"], new="absent" if case_id not in new_records else
                                  new_records[case_id]["status"], verdict="added" if case_id not in old_records
                                  else "removed"))
            continue
        o, n = old_records[case_id], new_records[case_id]
        if o["status"] != n["status"]:
            verdict = "better" if n["status"] == "CONVERGED" else "worse" if o["status"] == "CONVERGED" else "changed"
            changes.append(Change(case_id=case_id, what="status", old=o["status"], new=n["status"], verdict=verdict))
        old_gates = {g["quantity"]: g["passed"] for g in o["gates"]}
        for g in n["gates"]:
            if g["quantity"] in old_gates and old_gates[g["quantity"]] != g["passed"]:
                changes.append(Change(case_id=case_id, what=f"gate {g['quantity']}",
                                      old="pass" if old_gates[g["quantity"]] else "FAIL",
                                      new="pass" if g["passed"] else "FAIL",
                                      verdict="better" if g["passed"] else "worse"))
        om, nm = o["metrics"].get("ours", {}), n["metrics"].get("ours", {})
        for metric in sorted(set(om) & set(nm)):
            verdict = _verdict(metric, om[metric], nm[metric])
            if verdict in ("better", "worse"):
                changes.append(Change(case_id=case_id, what=metric, old=om[metric], new=nm[metric], verdict=verdict))
    return changes


def compare_text(changes: list, old_path) -> str:
    """Text report of :func:`validation.store.compare_runs`."""
    if not changes:
        return f"compared with {old_path}: nothing got better or worse beyond the noise thresholds\n"
    lines = [f"compared with {old_path}:"]
    for verdict in ("worse", "better", "changed", "added", "removed"):
        chosen = [c for c in changes if c["verdict"] == verdict]
        if chosen:
            lines.append(f"  {verdict.upper()} ({len(chosen)}):")
            for c in chosen:
                old, new = c["old"], c["new"]
                fmt = (lambda v: f"{v:.4g}") if isinstance(old, float) else str
                lines.append(f"    {c['case_id']}  {c['what']}: {fmt(old)} → {fmt(new) if isinstance(new, float) else new}")
    return "\n".join(lines) + "\n"
