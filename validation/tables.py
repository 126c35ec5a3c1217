"""The result tables, built once from the records and rendered as text (console, docs) or HTML (dashboard).

Each numeric cell keeps the record it came from — ``(case_id, source, metric, raw value)`` — so the HTML
carries ``data-case``/``data-source``/``data-metric``/``data-value`` attributes that a test compares with the
SQLite file. Displayed numbers are ``Column.fmt(Column.scale · |value|)`` (or signed, per column).
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

__all__ = ["Column", "Table", "Cell", "build_tables", "format_value", "text_table", "html_table"]


@dataclass(frozen=True)
class Column:
    """A numeric column: ``metric`` of ``source`` (None = the row's source), shown as ``fmt % (scale·v)``."""

    header: str
    metric: str
    fmt: str = "%.3g"
    scale: float = 1.0
    absolute: bool = True
    source: str | None = None


@dataclass(frozen=True)
class Cell:
    """One table cell: its text, and for numbers where it came from."""

    text: str
    case_id: str | None = None
    source: str | None = None
    metric: str | None = None
    value: float | None = None


@dataclass
class Table:
    """A titled table: header strings and rows of cells."""

    key: str
    title: str
    headers: list
    rows: list
    note: str = ""


def format_value(column: Column, value) -> str:
    """The displayed text of a raw value in ``column`` ("—" for missing/NaN)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    v = column.scale * (abs(value) if column.absolute else value)
    if math.isinf(v):
        return "∞" if v > 0 else "−∞"
    return column.fmt % v


def _cells(record: dict, source: str, columns) -> list:
    out = []
    for col in columns:
        src = col.source or source
        value = record["metrics"].get(src, {}).get(col.metric)
        out.append(Cell(format_value(col, value), record["case_id"], src, col.metric,
                        None if value is None else float(value)))
    return out


ERRORS = (Column("|ΔLsd| µm", "err_lsd_um", "%.3f"), Column("|ΔBC| px", "err_bc_px", "%.5f"),
          Column("|Δtilt| °", "err_tilt_deg", "%.5f"))
STRAIN = Column("mean ε µε", "mean_strain", "%.2f", 1e6)
MAIN = ERRORS + (STRAIN, Column("iter", "iterations", "%.0f"), Column("calibrate s", "time_calibrate_s", "%.2f"),
                 Column("peak RSS MiB", "peak_rss_mib", "%.0f"))
STAGES = ("simulate", "load", "background", "guess", "extraction", "fit", "selection")
LEGACY = ERRORS + (STRAIN, Column("panel shift RMS px", "err_panel_shift_rms_px", "%.3f"),
                   Column("wall s", "time_total_s", "%.1f"), Column("peak RSS MiB", "peak_rss_mib", "%.0f"))
REAL = (Column("ΔBC Y px", "err_bc_y_px", "%+.3f", absolute=False),
        Column("ΔBC Z px", "err_bc_z_px", "%+.3f", absolute=False),
        Column("ΔLsd ppm", "err_lsd_rel", "%+.0f", 1e6, absolute=False), STRAIN,
        Column("rings", "n_rings", "%.0f"), Column("calibrate s", "time_calibrate_s", "%.1f"))
PEERS = ERRORS + (Column("time s", "time_total_s", "%.2f"),)
PEER_RATIOS = (Column("ΔLsd ratio", "ratio_err_lsd_um", "%.3g", source="pyFAI/ours"),
               Column("ΔBC ratio", "ratio_err_bc_px", "%.3g", source="pyFAI/ours"),
               Column("time ratio", "ratio_time", "%.2f", source="pyFAI/ours"))


def _status(record: dict) -> str:
    gates = record["gates"]
    if not gates:
        return ""
    failed = [g for g in gates if not g["passed"]]
    return f"{len(gates) - len(failed)}/{len(gates)} pass" + ("" if not failed else " FAIL")


def build_tables(records: list[dict]) -> list[Table]:
    """Every table of the report, in order: cases, gates, legacy, real, CRLB, peers, stage times."""
    tables = []
    rows = []
    for r in records:
        if r["kind"] == "crlb":
            continue
        rows.append([Cell(r["case_id"]), Cell(r["status"]), *_cells(r, "ours", MAIN), Cell(_status(r))])
    tables.append(Table("cases", "Every case (ours)", ["case", "status", *(c.header for c in MAIN), "gates"], rows))

    gate_rows = []
    for r in records:
        for g in r["gates"]:
            gate_rows.append([Cell(r["case_id"]), Cell(g["quantity"]), Cell("%.4g" % g["value"]),
                              Cell("%.4g" % g["bound"]), Cell("pass" if g["passed"] else "FAIL")])
    tables.append(Table("gates", "Accuracy gates", ["case", "quantity", "|value|", "bound", "result"], gate_rows))

    legacy_rows = []
    for r in records:
        if r["kind"] != "legacy" or r["status"] == "SKIPPED":
            continue
        for source in ["ours", *r["info"].get("programs", [])]:
            legacy_rows.append([Cell(r["name"]), Cell(source), *_cells(r, source, LEGACY)])
    tables.append(Table("legacy", "Legacy goldens: ours vs the legacy programs vs truth",
                        ["case", "program", *(c.header for c in LEGACY)], legacy_rows,
                        "Errors against truth.json; the legacy rows are parsed from the stored outputs "
                        "(wall times of the legacy runs as recorded there)."))

    real_rows = []
    for r in records:
        if r["kind"] != "real" or r["status"] == "SKIPPED":
            continue
        real_rows.append([Cell(r["name"]), Cell(r["info"].get("reference", "")), Cell(r["status"]),
                          *_cells(r, "ours", REAL)])
    tables.append(Table("real", "Real data: ours vs the shipped geometry",
                        ["data set", "reference", "status", *(c.header for c in REAL)], real_rows))

    crlb_rows = []
    for r in records:
        if r["kind"] != "crlb" or r["status"] != "DONE":
            continue
        c = r["metrics"].get("crlb", {})
        for name in ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg", "p0", "p2"):
            if f"sigma_{name}" not in c:
                continue
            cols = (Column("σ_CRLB", f"sigma_{name}", "%.3g"), Column("RMS error", f"rms_err_{name}", "%.3g"),
                    Column("RMS / σ", f"ratio_{name}", "%.2f"), Column("seeds", "n_seeds", "%.0f"))
            crlb_rows.append([Cell(r["name"]), Cell(name), *_cells(r, "crlb", cols)])
    tables.append(Table("crlb", "Cramér–Rao bound: our error over seeds vs σ_CRLB",
                        ["scenario", "parameter", "σ_CRLB", "RMS error", "RMS / σ", "seeds"], crlb_rows,
                        "σ from the Fisher information of the simulator's Poisson model (geometry + peak height, "
                        "FWHM, Lorentz fraction, background); units of the parameter (µm, px, °)."))

    peer_rows = []
    for r in records:
        if r["kind"] != "peer":
            continue
        peer_rows.append([Cell(r["case_id"]), Cell("ours"), *_cells(r, "ours", PEERS[:3]),
                          *_cells(r, "ours", (Column("time s", "time_calibrate_s", "%.2f"),)),
                          Cell(""), Cell(""), Cell("")])
        if r["metrics"].get("pyFAI"):
            peer_rows.append([Cell(r["case_id"]), Cell("pyFAI"), *_cells(r, "pyFAI", PEERS), *_cells(r, "", PEER_RATIOS)])
        else:
            peer_rows.append([Cell(r["case_id"]), Cell(r["info"].get("pyFAI", "pyFAI: no result"))] +
                             [Cell("")] * 7)
    tables.append(Table("peers", "pyFAI vs ours (same image, same start, same run)",
                        ["case", "program", *(c.header for c in PEERS), *(c.header for c in PEER_RATIOS)],
                        peer_rows, "Ratios are pyFAI / ours: above 1 means ours is more accurate or faster."))

    adv_rows = [[Cell(r["case_id"]), Cell(r["status"]), Cell(r["info"].get("outcome", "")),
                 *_cells(r, "ours", (Column("|ΔLsd| µm", "err_lsd_um", "%.1f"), Column("|ΔBC| px", "err_bc_px", "%.3f"))),
                 Cell(r["reason"][:160])] for r in records if r["kind"] == "adversarial"]
    tables.append(Table("adversarial", "Adversarial cases: a spoiled input must not end plain CONVERGED",
                        ["case", "status", "outcome", "|ΔLsd| µm", "|ΔBC| px", "reason"], adv_rows,
                        "Errors are against the truth of the image; refused = the set-up's bad-input error (exit 2)."))

    stage_cols = tuple(Column(s, f"time_{s}_s", "%.2f") for s in STAGES) + (Column("total", "time_total_s", "%.2f"),)
    stage_rows = [[Cell(r["case_id"]), *_cells(r, "ours", stage_cols)] for r in records
                  if r["kind"] in ("synthetic", "legacy", "real") and r["status"] != "SKIPPED"]
    tables.append(Table("stages", "Wall time per stage (s)", ["case", *(c.header for c in stage_cols)], stage_rows))
    return tables


def text_table(table: Table) -> str:
    """Fixed-width text rendering (markdown pipe table)."""
    rows = [table.headers] + [[c.text for c in row] for row in table.rows]
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(table.headers))]
    lines = [f"{table.title}"]
    for k, row in enumerate(rows):
        lines.append("| " + " | ".join(str(v).ljust(w) for v, w in zip(row, widths)) + " |")
        if k == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"


def html_table(table: Table) -> str:
    """HTML rendering; numeric cells carry their provenance as data- attributes."""
    out = [f'<table id="table-{table.key}"><thead><tr>']
    out += [f"<th>{html.escape(h)}</th>" for h in table.headers]
    out.append("</tr></thead><tbody>")
    for row in table.rows:
        out.append("<tr>")
        for cell in row:
            if cell.metric is not None:
                value = "" if cell.value is None else repr(cell.value)
                attrs = (f' data-case="{html.escape(cell.case_id)}" data-source="{html.escape(cell.source)}" '
                         f'data-metric="{html.escape(cell.metric)}" data-value="{value}"')
                out.append(f'<td class="num"{attrs}>{html.escape(cell.text)}</td>')
            else:
                cls = ' class="fail"' if "FAIL" in cell.text else ""
                out.append(f"<td{cls}>{html.escape(cell.text)}</td>")
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)
