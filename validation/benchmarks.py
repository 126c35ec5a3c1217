"""pytest-benchmark results: run the suites (full validation only) and read every JSON file found.

``run_benchmarks`` runs ``python -m pytest tests/benchmarks --benchmark-enable --benchmark-json=<file>`` in
the repository (a clone: the benchmark tests are not installed with the package); ``read_benchmarks``
collects ``<out>/*.json`` and ``<out>/benchmarks/*.json`` written by pytest-benchmark (``--benchmark-json``)
into rows for the SQLite history and the dashboard.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import sys
from pathlib import Path

from .shared import repository_dir

__all__ = ["run_benchmarks", "read_benchmarks"]


def run_benchmarks(folder: str | Path, *, timeout_s: float = 3600) -> Path | None:
    """Run tests/benchmarks with timing on; returns the JSON path (None when the tests are not here)."""
    repo = repository_dir()
    tests = repo / "tests" / "benchmarks"
    if not tests.is_dir():
        return None
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"benchmarks-{_dt.datetime.now().strftime('%Y%m%dT%H%M%S')}.json"
    subprocess.run([sys.executable, "-m", "pytest", "-q", str(tests), "--benchmark-enable",
                    f"--benchmark-json={path}", "-p", "no:cacheprovider"], cwd=repo, timeout=timeout_s,
                   check=False, capture_output=True)
    return path if path.is_file() else None


def read_benchmarks(out_dir: str | Path) -> list[dict]:
    """Rows ``{name, group, mean_s, min_s, max_s, stddev_s, rounds, source}`` of every benchmark JSON file."""
    out_dir = Path(out_dir)
    rows = []
    for path in sorted(list(out_dir.glob("*.json")) + list(out_dir.glob("benchmarks/*.json"))):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "benchmarks" not in data:
            continue
        for b in data["benchmarks"]:
            s = b.get("stats", {})
            if "mean" not in s:
                continue
            rows.append({"name": b.get("fullname", b.get("name")), "group": b.get("group") or "",
                         "mean_s": s["mean"], "min_s": s.get("min"), "max_s": s.get("max"),
                         "stddev_s": s.get("stddev"), "rounds": int(s.get("rounds", 0)), "source": path.name})
    return rows
