"""Static HTML dashboard of one run (``report.html`` + ``figures/*.png``), read back from the SQLite file.

Everything shown comes from the database (so the page shows exactly what was stored); numeric table cells
carry ``data-case/-source/-metric/-value`` attributes (see :mod:`validation.tables`). Figures are made with
matplotlib's object API (no pyplot, no GUI backend) and written atomically:

``error_vs_noise.png``   |ΔLsd|, |ΔBC|, |Δtilt|, mean strain of the synthetic cases vs ring peak height
``error_over_crlb.png``  each seed's error / σ_CRLB and the RMS ratio per parameter
``strain_vs_2theta.png`` mean strain per ring (± s.e.m.) vs 2θ, legacy/real/synthetic cases
``residuals_<n>.png``    residual strain of the final peak points over the detector, panel outlines
``speed_stages.png``     wall time per stage per case; ``speed_history.png`` calibrate time over runs
``legacy.png``           ours vs the legacy programs (|ΔLsd|, |ΔBC|, wall time)
``peers.png``            ours vs pyFAI (errors and time)
``benchmarks.png``       pytest-benchmark means of this run (and their history when several runs have them)
"""

from __future__ import annotations

import datetime as _dt
import html
import json
import math
import re
from contextlib import closing
from pathlib import Path

import numpy as np

from midas_ref.atomic import atomic_path, write_text_atomic

from .scenarios import NOISE_LEVELS
from .store import compare_text, connect, load_run, metric_history
from .tables import build_tables, html_table

__all__ = ["write_dashboard"]

_STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1300px;color:#222}
table{border-collapse:collapse;margin:0.6em 0 1.4em;font-size:0.86em}
td,th{border:1px solid #ccc;padding:2px 7px}th{background:#f2f2f2}td.num{text-align:right;font-family:monospace}
td.fail{color:#b00;font-weight:bold}.ok{color:#070;font-weight:bold}.bad{color:#b00;font-weight:bold}
img{max-width:100%;border:1px solid #ddd;margin:0.4em 0}.meta td{font-size:0.95em}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(380px,1fr));gap:8px}"""


def _save(fig, path: Path) -> str:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return f"figures/{path.name}"


def _figure(w=9, h=5):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _legend(ax, **kwargs) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(**kwargs)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _fig_error_vs_noise(records, figdir):
    synth = [r for r in records if r["kind"] == "synthetic" and r["status"] == "CONVERGED"]
    if not synth:
        return None
    levels = list(NOISE_LEVELS)
    panels = (("err_lsd_um", "|ΔLsd| (µm)", 1), ("err_bc_px", "|ΔBC| (px)", 1), ("err_tilt_deg", "|Δtilt| (°)", 1),
              ("mean_strain", "mean strain (µε)", 1e6))
    fig = _figure(12, 7)
    axes = fig.subplots(2, 2).ravel()
    groups = sorted({(r["name"], r["case"]["start"]) for r in synth})
    for ax, (metric, label, scale) in zip(axes, panels):
        for name, start in groups:
            pts = [(levels.index(r["case"]["noise"]), abs(r["metrics"]["ours"].get(metric, math.nan)) * scale)
                   for r in synth if (r["name"], r["case"]["start"]) == (name, start) and r["case"]["noise"] in levels]
            if pts:
                x, y = np.array(pts).T
                ax.plot(x + 0.04 * (groups.index((name, start)) % 5 - 2), np.maximum(y, 1e-9), "o", label=f"{name}/{start}")
        ax.set_yscale("log")
        ax.set_xticks(range(len(levels)), levels)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    _legend(axes[0], fontsize=7)
    fig.suptitle("Error vs noise level (peak height: noise-free, ×1, ×0.1, ×0.025 of 20000 counts)")
    return _save(fig, figdir / "error_vs_noise.png")


def _fig_crlb(records, figdir):
    crlbs = [r for r in records if r["kind"] == "crlb" and r["status"] == "DONE"]
    if not crlbs:
        return None
    by_id = {r["case_id"]: r for r in records}
    names = ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg", "p0", "p2")
    fig = _figure(10, 4.5)
    ax = fig.add_subplot()
    for k, r in enumerate(crlbs):
        c = r["metrics"]["crlb"]
        xs = [i + 0.25 * k for i, n in enumerate(names) if f"ratio_{n}" in c]
        ax.bar(xs, [c[f"ratio_{n}"] for n in names if f"ratio_{n}" in c], width=0.22, alpha=0.6,
               label=f"{r['name']}: RMS / σ over {int(c.get('n_seeds', 0))} seeds")
        for seed_id in r["info"].get("seed_cases", []):
            s = by_id.get(seed_id)
            if s is None:
                continue
            ys = [(i + 0.25 * k, abs(s["metrics"]["ours"].get(f"err_over_crlb_{n}", math.nan)))
                  for i, n in enumerate(names)]
            ax.plot(*zip(*ys), "k.", ms=4)
    ax.axhline(1.0, color="tab:red", lw=1, label="Cramér–Rao bound")
    ax.set_xticks(range(len(names)), names)
    ax.set_ylabel("|error| / σ_CRLB")
    _legend(ax, fontsize=8)
    ax.set_title("Error as a multiple of the CRLB σ (dots: single seeds)")
    return _save(fig, figdir / "error_over_crlb.png")


def _fig_strain(records, figdir):
    chosen = [r for r in records if r["rings"] and r["kind"] in ("legacy", "real", "synthetic", "peer")
              and not (r["kind"] == "synthetic" and r["name"].startswith("small512"))]
    if not chosen:
        return None
    fig = _figure(11, 5.5)
    ax = fig.add_subplot()
    for r in chosen:
        rows = [x for x in r["rings"] if x["n_points"] and x["mean_strain"] is not None]
        tth = [x["two_theta_deg"] for x in rows]
        ax.errorbar(tth, [x["mean_strain"] * 1e6 for x in rows], yerr=[(x["sem"] or 0) * 1e6 for x in rows],
                    fmt="o-", ms=3, lw=0.8, capsize=2, label=r["case_id"])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("2θ (°)")
    ax.set_ylabel("mean strain per ring (µε)")
    ax.set_yscale("symlog", linthresh=1.0)
    _legend(ax, fontsize=7, ncol=2)
    ax.set_title("Strain vs 2θ per ring (final geometry, inlier points; ± standard error)")
    return _save(fig, figdir / "strain_vs_2theta.png")


def _fig_residuals(record, figdir, k):
    p = record["points"]
    if not p or not p.get("y_px"):
        return None
    y, z, s = (np.asarray(p[c], float) for c in ("y_px", "z_px", "strain"))
    keep = ~np.asarray(p["outlier"], bool)
    fig = _figure(5.2, 4.6)
    ax = fig.add_subplot()
    lim = max(float(np.percentile(np.abs(s[keep]), 99)) * 1e6, 1e-3) if keep.any() else 1.0
    sc = ax.scatter(y[keep], z[keep], c=s[keep] * 1e6, s=4, cmap="coolwarm", vmin=-lim, vmax=lim)
    from matplotlib.patches import Rectangle

    for y0, y1, z0, z1 in record["info"].get("panel_bounds", []):
        ax.add_patch(Rectangle((y0 - 0.5, z0 - 0.5), y1 - y0 + 1, z1 - z0 + 1, fill=False, lw=0.5, ec="gray"))
    ax.invert_yaxis()
    ax.set_aspect("equal")
    ax.set_xlabel("Y (px)")
    ax.set_ylabel("Z (px)")
    fig.colorbar(sc, ax=ax, label="strain (µε)", shrink=0.8)
    ax.set_title(record["case_id"], fontsize=8)
    return _save(fig, figdir / f"residuals_{k:02d}_{_slug(record['case_id'])}.png")


def _fig_stages(records, figdir):
    from .tables import STAGES

    rows = [r for r in records if r["kind"] in ("synthetic", "legacy", "real") and r["status"] != "SKIPPED"]
    if not rows:
        return None
    fig = _figure(10, 0.35 * len(rows) + 1.5)
    ax = fig.add_subplot()
    left = np.zeros(len(rows))
    for stage in STAGES:
        v = np.array([r["metrics"].get("ours", {}).get(f"time_{stage}_s", 0.0) or 0.0 for r in rows])
        v = np.nan_to_num(v)
        ax.barh(range(len(rows)), v, left=left, label=stage)
        left += v
    ax.set_yticks(range(len(rows)), [r["case_id"] for r in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("wall time (s)")
    _legend(ax, fontsize=8)
    ax.set_title("Wall time per stage")
    return _save(fig, figdir / "speed_stages.png")


def _fig_history(db, figdir):
    hist = metric_history(db, "time_calibrate_s")
    if not hist:
        return None
    fig = _figure(10, 4.5)
    ax = fig.add_subplot()
    cases = sorted({h["case_id"] for h in hist if not h["case_id"].startswith(("crlb", "synthetic/small512"))})
    for case_id in cases:
        pts = [(h["run_id"], h["value"]) for h in hist if h["case_id"] == case_id]
        ax.plot(*zip(*pts), "o-", ms=3, label=case_id)
    ax.set_xlabel("run id")
    ax.set_ylabel("calibrate wall time (s)")
    _legend(ax, fontsize=7, ncol=2)
    ax.set_title("Speed history (every run in this database)")
    return _save(fig, figdir / "speed_history.png")


def _fig_legacy(records, figdir):
    cases = [r for r in records if r["kind"] == "legacy" and r["status"] != "SKIPPED"]
    if not cases:
        return None
    fig = _figure(12, 4.5)
    axes = fig.subplots(1, 3)
    programs = []
    for r in cases:
        programs += [p for p in ["ours", *r["info"].get("programs", [])] if p not in programs]
    for ax, (metric, label) in zip(axes, (("err_lsd_um", "|ΔLsd| (µm)"), ("err_bc_px", "|ΔBC| (px)"),
                                          ("time_total_s", "wall time (s)"))):
        labelled = set()
        for i, r in enumerate(cases):
            sources = ["ours", *r["info"].get("programs", [])]
            for j, source in enumerate(sources):
                v = abs(r["metrics"].get(source, {}).get(metric, math.nan))
                if not math.isfinite(v):
                    continue
                k = programs.index(source)
                ax.bar(i + 0.15 * j, max(v, 1e-9), width=0.14, color=f"C{k}",
                       label=None if source in labelled else source)
                labelled.add(source)
        ax.set_xticks(range(len(cases)), [r["name"] for r in cases], fontsize=7, rotation=10)
        ax.set_yscale("log")
        ax.set_title(label)
    _legend(axes[0], fontsize=7)
    return _save(fig, figdir / "legacy.png")


def _fig_peers(records, figdir):
    cases = [r for r in records if r["kind"] == "peer" and r["metrics"].get("pyFAI")]
    if not cases:
        return None
    fig = _figure(12, 4)
    axes = fig.subplots(1, 4)
    for ax, (metric, label) in zip(axes, (("err_lsd_um", "|ΔLsd| (µm)"), ("err_bc_px", "|ΔBC| (px)"),
                                          ("err_tilt_deg", "|Δtilt| (°)"), ("time_total_s", "time (s)"))):
        for i, r in enumerate(cases):
            ours_metric = "time_calibrate_s" if metric == "time_total_s" else metric
            for j, (source, m) in enumerate((("ours", ours_metric), ("pyFAI", metric))):
                v = abs(r["metrics"][source].get(m, math.nan))
                ax.bar(i + 0.4 * j, max(v, 1e-9), width=0.38, color=f"C{j}", label=source if i == 0 else None)
        ax.set_xticks(range(len(cases)), [r["case_id"].split("/", 1)[1] for r in cases], fontsize=6)
        ax.set_yscale("log")
        ax.set_title(label)
    _legend(axes[0], fontsize=8)
    return _save(fig, figdir / "peers.png")


def _fig_benchmarks(bench, figdir):
    if not bench:
        return None
    fig = _figure(10, 0.35 * len(bench) + 1.5)
    ax = fig.add_subplot()
    ax.barh(range(len(bench)), [b["mean_s"] for b in bench],
            xerr=[b["stddev_s"] or 0 for b in bench], color="C2")
    ax.set_yticks(range(len(bench)), [b["name"].split("::")[-1] for b in bench], fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("mean time (s)")
    ax.set_title("pytest-benchmark (this run)")
    return _save(fig, figdir / "benchmarks.png")


def _benchmark_history(db) -> list:
    with closing(connect(db, create=False)) as conn:
        return conn.execute("SELECT b.run_id, b.name, b.mean_s FROM benchmarks b ORDER BY b.run_id").fetchall()


def write_dashboard(db: str | Path, out_dir: str | Path, *, run_id: int | None = None, compare=None) -> Path:
    """Write ``<out_dir>/report.html`` and ``<out_dir>/figures/*.png`` for run ``run_id`` (default latest)."""
    out_dir = Path(out_dir)
    figdir = out_dir / "figures"
    figdir.mkdir(parents=True, exist_ok=True)
    data = load_run(db, run_id)
    run, records, bench = data["run"], data["records"], data["benchmarks"]
    bench = [dict(b, group=b.pop("grp", "")) for b in bench]
    figures = []
    for title, fn in (("Error vs noise level", lambda: _fig_error_vs_noise(records, figdir)),
                      ("Error / CRLB", lambda: _fig_crlb(records, figdir)),
                      ("Strain vs 2θ per ring", lambda: _fig_strain(records, figdir)),
                      ("Speed per stage", lambda: _fig_stages(records, figdir)),
                      ("Speed history", lambda: _fig_history(db, figdir)),
                      ("Legacy side by side", lambda: _fig_legacy(records, figdir)),
                      ("pyFAI side by side", lambda: _fig_peers(records, figdir)),
                      ("Benchmarks", lambda: _fig_benchmarks(bench, figdir))):
        src = fn()
        if src:
            figures.append((title, src))
    residuals = []
    for k, r in enumerate(r for r in records if r["points"]):
        src = _fig_residuals(r, figdir, k)
        if src:
            residuals.append(src)
    tables = build_tables(records)
    n_gates = sum(len(r["gates"]) for r in records)
    failed = [(r["case_id"], g) for r in records for g in r["gates"] if not g["passed"]]
    errors = [r for r in records if r["status"] == "ERROR"]
    e = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>midas-ref validation — run {run['run_id']}</title><style>{_STYLE}</style></head><body>",
             f"<h1>midas-ref validation: suite <code>{e(run['suite'])}</code>, run {run['run_id']}</h1>",
             "<table class='meta'>",
             f"<tr><td>code</td><td><code>{e(run['code_describe'])}</code> ({e(run['code_commit'])}), "
             f"midas-ref {e(run['package_version'])}</td></tr>",
             f"<tr><td>started / finished</td><td>{e(run['started'])} / {e(run['finished'])}</td></tr>",
             f"<tr><td>wall time</td><td id='wall'>{run['wall_s']:.1f} s for {run['n_cases']} cases</td></tr>",
             f"<tr><td>machine</td><td>{e(json.dumps(run['machine']))}</td></tr>",
             f"<tr><td>options</td><td>{e(json.dumps(run['options']))}</td></tr></table>"]
    verdict = ("<span class='ok'>all gates pass</span>" if not failed and not errors else
               f"<span class='bad'>{len(failed)} of {n_gates} gates FAIL, {len(errors)} case errors</span>")
    parts.append(f"<p id='verdict'>{n_gates} gates: {verdict}</p>")
    for case_id, g in failed:
        parts.append(f"<p class='bad'>FAIL {e(case_id)}: {e(g['quantity'])} = {g['value']:.4g} &gt; {g['bound']:.4g}</p>")
    for r in errors:
        parts.append(f"<p class='bad'>ERROR {e(r['case_id'])}: {e(r['reason'])}</p>")
    if compare is not None:
        parts.append(f"<h2>Compared with an older run</h2><pre>{e(compare_text(compare, 'the older database'))}</pre>")
    for t in tables:
        if t.rows:
            parts.append(f"<h2>{e(t.title)}</h2>" + (f"<p>{e(t.note)}</p>" if t.note else "") + html_table(t))
    if bench:
        parts.append("<h2>Benchmarks (pytest-benchmark JSON found in the output folder)</h2><table id='table-bench'>"
                     "<tr><th>benchmark</th><th>group</th><th>mean s</th><th>min s</th><th>rounds</th><th>file</th></tr>")
        for b in bench:
            parts.append(f"<tr><td>{e(b['name'])}</td><td>{e(b['group'] or '')}</td><td class='num'>{b['mean_s']:.4g}"
                         f"</td><td class='num'>{(b['min_s'] or math.nan):.4g}</td><td>{b['rounds']}</td>"
                         f"<td>{e(b['source'])}</td></tr>")
        parts.append("</table>")
        hist = _benchmark_history(db)
        if len({h[0] for h in hist}) > 1:
            parts.append("<p>Benchmark history (mean s per run): " + e("; ".join(
                f"run {h[0]} {h[1].split('::')[-1]} {h[2]:.3g}" for h in hist)) + "</p>")
    for title, src in figures:
        parts.append(f"<h2>{e(title)}</h2><img src='{src}' alt='{e(title)}'>")
    if residuals:
        parts.append("<h2>Residual maps over the detector (panel outlines where the detector has panels)</h2>"
                     "<div class='grid'>" + "".join(f"<img src='{s}' alt='residual map'>" for s in residuals) + "</div>")
    parts.append(f"<p><small>written {_dt.datetime.now().isoformat(timespec='seconds')} from {e(str(db))}</small></p>"
                 "</body></html>\n")
    path = out_dir / "report.html"
    write_text_atomic(path, "\n".join(parts))
    return path
