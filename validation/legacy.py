"""Legacy golden cases (``../shared/legacy/<case>/``): ours vs the legacy programs vs the truth.

For each case folder (``truth.json`` + ``params_calibrant.txt`` + the image), ours runs on the same image
with the same parameter file (``<case dir>`` replaced by the folder), i.e. from the same start geometry
the legacy programs were given. The legacy programs' results are parsed from their stored outputs:

=================================  =====================================================================
program (source name)              files
=================================  =====================================================================
``CalibrantOMP@00074b47``          ``out_CalibrantOMP.txt`` (Mean Values block), ``time_CalibrantOMP.txt``
``CalibrantOMP@HEAD``              ``out_CalibrantOMP_head.txt``, ``time_CalibrantOMP_head.txt``
``CalibrantPanelShiftsOMP``        ``out_CPS.txt`` (strain in µε), ``time_CPS.txt``, ``panelshifts.txt``
``AutoCalibrate@00074b47``         ``loop_CalibrantOMP_orchestrated.jsonl`` (last call; wall = sum of calls)
=================================  =====================================================================

Panel cases run ours twice: the AutoCalibrate path (monolithic geometry, gaps masked; source ``ours``) and
the panel refinement of ``midas-ref panels`` on the same parameter file (its set-up
:func:`midas_ref.inputs.panel_inputs`, then :func:`midas_ref.panel_refine.refine_panels`; source
``ours-panels``, with the panel-shift errors against ``panelshifts_truth.txt``).
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np

from midas_ref.detector import Geometry
from midas_ref.inputs import data_files
from midas_ref.params import GEOMETRY_KEYS, ParameterFile, geometry_from_params, read_parameter_file

from .records import calibrate_file, geometry_errors, geometry_values, record_calibration
from .shared import elapsed_seconds, max_rss_kib, mean_values_block

__all__ = ["LEGACY_CASES", "legacy_case_names", "legacy_truth", "legacy_programs", "run_legacy_case",
           "read_shift_table"]

#: The golden cases shipped in ``../shared/legacy/`` (used when the folder cannot be listed).
LEGACY_CASES = ("ceo2_2048_tilt_dist", "ceo2_1024_ge_dark", "ceo2_1024_panels16")

#: Source name → (stdout file, /usr/bin/time -v file).
_PROGRAM_FILES = {"CalibrantOMP@00074b47": ("out_CalibrantOMP.txt", "time_CalibrantOMP.txt"),
                  "CalibrantOMP@HEAD": ("out_CalibrantOMP_head.txt", "time_CalibrantOMP_head.txt"),
                  "CalibrantPanelShiftsOMP": ("out_CPS.txt", "time_CPS.txt")}
LOOP_SOURCE = "AutoCalibrate@00074b47"


def legacy_case_names(shared_dir: str | Path | None) -> list[str]:
    """Every folder of ``<shared>/legacy`` holding a ``truth.json`` (sorted), or :data:`LEGACY_CASES`."""
    if shared_dir is None or not (Path(shared_dir) / "legacy").is_dir():
        return list(LEGACY_CASES)
    return sorted(p.parent.name for p in (Path(shared_dir) / "legacy").glob("*/truth.json"))


def legacy_truth(folder: Path) -> Geometry:
    """The true geometry of a golden case from its ``truth.json``."""
    t = json.loads((folder / "truth.json").read_text())
    return Geometry(lsd_um=t["lsd"], bc_y_px=t["bc"][0], bc_z_px=t["bc"][1], px_um=t["px"], n_pixels_y=t["size"],
                    n_pixels_z=t["size"], tx_deg=t["tx"], ty_deg=t["ty"], tz_deg=t["tz"], p0=t["p0"], p1=t["p1"],
                    p2=t["p2"], p3_deg=t["p3"], rho_d_um=t["rhod"])


def read_shift_table(path: Path) -> dict[int, tuple[float, float]]:
    """Panel id → (dY, dZ) px of a ``panelshifts.txt``-style table (``# ID dY dZ …`` header)."""
    shifts = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts and not line.lstrip().startswith("#"):
            shifts[int(parts[0])] = (float(parts[1]), float(parts[2]))
    return shifts


def _geometry_from(values: dict, truth: Geometry) -> Geometry:
    """A program's fitted geometry (legacy key → value or values) on the true detector, tx and RhoD.

    The legacy programs neither refine tx nor change px, the detector size or RhoD, so those come from the
    truth; every other geometry key they print (Lsd, BC, ty, tz, p0–p5) is taken.
    """
    fitted = {key: values[key] for key, _ in GEOMETRY_KEYS if key in values and key not in _FROM_TRUTH}
    pf = ParameterFile().with_values(**fitted)
    return geometry_from_params(pf, overrides={key: value for key, value in
                                               _key_values(truth).items() if key in _FROM_TRUTH})


#: Geometry keys a legacy program's result takes from the truth (never refined, or the detector itself).
_FROM_TRUTH = ("tx", "px", "NrPixelsY", "NrPixelsZ", "RhoD")


def _key_values(geometry: Geometry) -> dict:
    from midas_ref.params import key_values_from_geometry

    return key_values_from_geometry(geometry)


def legacy_programs(folder: Path, truth: Geometry) -> dict[str, dict]:
    """Source name → metrics (fitted values, errors vs truth, mean strain, wall time, peak memory)."""
    programs = {}
    for source, (out_name, time_name) in _PROGRAM_FILES.items():
        out = folder / out_name
        if not out.is_file():
            continue
        text = out.read_text(errors="replace")
        values = mean_values_block(text)
        if "Lsd" not in values:
            continue
        g = _geometry_from(values, truth)
        m = geometry_values(g)
        m.update(geometry_errors(g, truth))
        strain = values.get("MeanStrain", [math.nan])[0]
        m["mean_strain"] = strain * 1e-6 if "microstrain" in text else strain
        std = values.get("StdStrain", [math.nan])[0]
        m["std_strain"] = std * 1e-6 if "microstrain" in text else std
        timing = folder / time_name
        total = [line for line in text.splitlines() if line.startswith("Total time elapsed:")]
        if total:  # the program's own clock; /usr/bin/time below wins when present
            m["time_total_s"] = float(total[-1].split(":")[1].split()[0])
        if timing.is_file():
            tv = timing.read_text()
            m["time_total_s"] = elapsed_seconds(tv) or math.nan
            rss = max_rss_kib(tv)
            m["peak_rss_mib"] = rss / 1024 if rss else math.nan
        if source == "CalibrantPanelShiftsOMP" and (folder / "panelshifts.txt").is_file() and \
                (folder / "panelshifts_truth.txt").is_file():
            m.update(panel_shift_errors(read_shift_table(folder / "panelshifts.txt"),
                                        read_shift_table(folder / "panelshifts_truth.txt")))
        programs[source] = {k: float(v) for k, v in m.items()}
    loop = folder / "loop_CalibrantOMP_orchestrated.jsonl"
    if loop.is_file():
        lines = [json.loads(line) for line in loop.read_text().splitlines() if line.strip()]
        calls = [c for c in lines if "call" in c]
        summary = next((c for c in lines if "final" in c), None)
        final = summary["final"] if summary else (calls[-1] if calls else None)
        if final is not None:
            g = _geometry_from(final, truth)
            m = geometry_values(g)
            m.update(geometry_errors(g, truth))
            if calls:
                m["mean_strain"] = float(calls[-1]["MeanStrain"])
            m["time_total_s"] = float(summary["total_wall"] if summary else sum(c["wall"] for c in calls))
            m["iterations"] = float(summary["calls"] if summary else len(calls))
            programs[LOOP_SOURCE] = m
    return programs


def panel_shift_errors(fitted: dict, truth: dict) -> dict:
    """RMS and max of |(dY, dZ) fitted − truth| over the panels both tables hold, px."""
    ids = sorted(set(fitted) & set(truth))
    d = np.array([np.hypot(fitted[i][0] - truth[i][0], fitted[i][1] - truth[i][1]) for i in ids])
    return {"err_panel_shift_rms_px": float(np.sqrt(np.mean(d ** 2))), "err_panel_shift_max_px": float(d.max())}


def _our_panels(record: dict, params: Path, truth: Geometry, folder: Path, workdir: Path) -> None:
    """Ours with panel refinement on the same parameter file → source ``ours-panels``.

    Set up exactly as ``midas-ref panels`` does (:func:`midas_ref.inputs.panel_inputs`), starting from zero
    panel corrections (PanelShiftsFile pointed at the scratch folder, where no file exists); the refined
    geometry and shifts of the result are compared with the truth. The truth (``panelshifts_truth.txt``,
    ``truth.json``) and CalibrantPanelShiftsOMP are in the ``FixPanelID`` gauge, so ours runs with
    ``PanelGauge fixed`` unless the file chooses a gauge: shifts, BC and Lsd then compare in one gauge.
    """
    from midas_ref.inputs import panel_inputs
    from midas_ref.panel_refine import refine_panels

    pf = read_parameter_file(params)
    if not pf.has("NPanelsY"):
        return
    pf = pf.set("PanelShiftsFile", str(workdir / "panels" / "panelshifts.txt"))
    if not pf.has("PanelGauge"):
        pf = pf.set("PanelGauge", "fixed")
    t0 = time.perf_counter()
    inputs = panel_inputs(pf, out_dir=workdir / "panels")
    result = refine_panels(inputs.series.image, inputs.series.mask, inputs.geometry, inputs.panels, inputs.rings,
                           settings=inputs.settings, doublet_rings=list(inputs.doublet_rings))
    seconds = time.perf_counter() - t0
    m = geometry_values(result.geometry)
    m.update(geometry_errors(result.geometry, truth))
    m["time_total_s"] = seconds
    if (folder / "panelshifts_truth.txt").is_file():
        fitted = {s.id: (s.dy_px, s.dz_px) for s in result.panels.shifts}
        m.update(panel_shift_errors(fitted, read_shift_table(folder / "panelshifts_truth.txt")))
    record["metrics"]["ours-panels"] = m
    record["info"]["panels"] = "midas-ref panels (midas_ref.inputs.panel_inputs + refine_panels) on the same " \
                               "parameter file"


def run_legacy_case(case, shared_dir, workdir: Path, record: dict) -> None:
    """Run ours on a golden case's input and record ours, every legacy program and the truth."""
    folder = None if shared_dir is None else Path(shared_dir) / "legacy" / case.name
    if folder is None or not (folder / "truth.json").is_file():
        record["status"], record["reason"] = "SKIPPED", f"legacy case folder {folder} not present"
        return
    truth = legacy_truth(folder)
    params = workdir / "params_calibrant.txt"
    params.write_text((folder / "params_calibrant.txt").read_text().replace("<case dir>", str(folder)))
    pf = read_parameter_file(params)
    image = data_files(pf)[0]
    dark = pf.get("Dark", None)
    _, result, seconds = calibrate_file(image, params, dark_path=dark if dark and Path(dark).is_file() else None)
    record_calibration(record, result, seconds, truth)
    _our_panels(record, params, truth, folder, workdir)
    programs = legacy_programs(folder, truth)
    record["metrics"].update(programs)
    record["info"]["programs"] = (["ours-panels"] if "ours-panels" in record["metrics"] else []) + list(programs)
    gate = LOOP_SOURCE if LOOP_SOURCE in programs else "CalibrantOMP@00074b47" if "CalibrantOMP@00074b47" in \
        programs else None
    if pf.has("NPanelsY"):
        gate = None  # monolithic fit of a panel image: no legacy monolithic run to compare; panels gated in gates.py
    record["info"]["gate_program"] = gate
    if pf.has("NPanelsY"):
        from midas_ref.panels import panel_bounds
        from midas_ref.params import panel_layout_from_params

        record["info"]["panel_bounds"] = panel_bounds(panel_layout_from_params(pf)).tolist()
