"""Calibration outputs: legacy-compatible text files, the HDF5 dump, PNG figures, the console summary.

Every file is written atomically (temporary file + rename). Formats follow the legacy programs so old
parsers keep working: ``calibrant_screen_out.csv`` carries CalibrantOMP's ``Mean Values`` block
(spec legacy_engine.md §2.10), the corr.csv its 7 columns, ``-SavePlotsHDF`` the group layout of
AutoCalibrateZarr (spec autocalibrate.md §3.3).
"""

from __future__ import annotations

import datetime as _dt
import io as _io
import math
import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from .atomic import atomic_output, atomic_path, write_text_atomic
from .autocal import CalibrationResult
from .detector import Geometry
from .errors import OutputLocationError
from .geometry import pixel_to_r_eta
from .strain import panel_mean_strain, panel_point_counts, ring_statistics

__all__ = ["geometry_block", "write_screen_out", "write_corr_csv", "AutocalLog", "write_autocal_log", "save_plots_hdf",
           "make_plots", "summary_text", "per_ring_table", "panel_report_text", "indices_per_panel",
           "write_panel_corr_csv", "write_panel_outputs", "write_calibration_outputs", "calibration_log_header",
           "refined_params_comments", "write_calibration_json",
           "CALIBRATION_SET_NAMES"]


def geometry_block(geometry: Geometry, mean_strain: float, std_strain: float, *, two_spaces: bool = True) -> str:
    """The legacy ``Lsd … StdStrain`` lines (``%0.12f``), as CalibrantOMP prints them."""
    lines = [f"Lsd {geometry.lsd_um:0.12f}", f"BC {geometry.bc_y_px:0.12f} {geometry.bc_z_px:0.12f}",
             f"ty {geometry.ty_deg:0.12f}", f"tz {geometry.tz_deg:0.12f}", f"p0 {geometry.p0:0.12f}",
             f"p1 {geometry.p1:0.12f}", f"p2 {geometry.p2:0.12f}", f"p3 {geometry.p3_deg:0.12f}"]
    if geometry.p4:
        lines.append(f"p4 {geometry.p4:0.12f}")
    lines += [f"MeanStrain {mean_strain:0.12f}", f"StdStrain{'  ' if two_spaces else ' '}{std_strain:0.12f}"]
    return "\n".join(lines) + "\n"


def write_screen_out(path, result: CalibrationResult, *, n_eta_bins: int, seconds: float) -> None:
    """``calibrant_screen_out.csv``: CalibrantOMP's stdout of the last iteration, Mean Values included."""
    g = result.geometry
    n_slices = len(result.rings) * n_eta_bins
    text = (f"# midas-ref calibrant output v1 (CalibrantOMP stdout layout); BC = (Y column, Z row) px\n"
            f"Number of planes being considered: {len(result.rings) - len(result.excluded_rings)}.\n"
            f"The following rings will be excluded: {' '.join(map(str, result.excluded_rings))}\n"
            f"Number of eta bins: {n_eta_bins}.\n"
            f"Out of {n_slices} slices, {len(result.points)} were in the detector\n"
            + geometry_block(g, result.mean_strain, result.std_strain, two_spaces=False)
            + f"Time elapsed for this file:\t{seconds:f} s.\n"
            f"Total time elapsed:\t{seconds:f} s.\n"
            "*******************Mean Values*******************\n"
            + geometry_block(g, result.mean_strain, result.std_strain)
            + "*******************Copy to par*******************\n"
            f"Status {result.status}{(': ' + result.reason) if result.reason else ''}\n")
    write_text_atomic(path, text)


def write_corr_csv(path, result: CalibrationResult, start: Geometry) -> None:
    """The 7-column corr.csv: ``%Eta Strain RadFit EtaCalc DiffCalc RadCalc Ideal2Theta``.

    Columns as CalibrantOMP (spec legacy_engine.md §2.10): η and |strain| and R (µm) at the refined
    geometry, the same at ``start``, and the ring's ideal 2θ; one row per fitted peak, outliers included.
    """
    pts = result.points
    tth = np.array([result.rings[k].two_theta_deg for k in pts.ring])
    ideal = np.tan(np.radians(tth))
    r_fit, eta_fit = pixel_to_r_eta(pts.y_px, pts.z_px, result.geometry)
    r_start, eta_start = pixel_to_r_eta(pts.y_px, pts.z_px, start)
    strain_fit = np.abs(1 - r_fit / (result.geometry.lsd_um * ideal))
    strain_start = np.abs(1 - r_start / (start.lsd_um * ideal))
    order = np.lexsort((eta_fit, pts.ring))
    with atomic_output(path) as fh:
        fh.write("%Eta Strain RadFit EtaCalc DiffCalc RadCalc Ideal2Theta\n")
        for i in order:
            fh.write(f"{eta_fit[i]:f} {strain_fit[i]:10.8f} {r_fit[i]:10.8f} {eta_start[i]:f} "
                     f"{strain_start[i]:10.8f} {r_start[i]:10.8f} {tth[i]:f}\n")


def per_ring_table(result: CalibrationResult) -> list[dict]:
    """Per-ring statistics at the final geometry (inlier points): ring number, 2θ, points, strains."""
    keep = ~result.outlier
    count, mean, mean_abs, sem = ring_statistics(result.points.ring[keep], result.strain[keep], len(result.rings))
    rows = []
    for k, ring in enumerate(result.rings):
        rows.append({"ring_nr": ring.ring_nr, "hkl": ring.hkl, "two_theta_deg": ring.two_theta_deg,
                     "n_points": int(count[k]), "mean_strain": float(mean[k]), "mean_abs_strain": float(mean_abs[k]),
                     "sem": float(sem[k]), "excluded": ring.ring_nr in result.excluded_rings})
    return rows


def _pm(row, fmt: str) -> str:
    """``value ± σ`` of a :func:`~midas_ref.record.parameter_rows` row (``(fixed)`` / ``± n.d.``)."""
    text = f"{row['value']:{fmt}}"
    if row["sigma"] is None:
        return text + " (fixed)"
    return text + (f" ± {row['sigma']:.2g}" if math.isfinite(row["sigma"]) else " ± n.d.")


def summary_text(result: CalibrationResult) -> str:
    """The final console summary: the geometry with standard errors (1σ), strain, warnings, timings."""
    from .record import parameter_rows

    g = result.geometry
    rows = {r["name"]: r for r in parameter_rows(result)}
    out = _io.StringIO()
    out.write(f"Calibration {result.status}" + (f": {result.reason}" if result.reason else "") + "\n")
    out.write(f"  Lsd        {_pm(rows['Lsd'], '.3f')} µm\n"
              f"  BC         {_pm(rows['BC_Y'], '.4f')}, {_pm(rows['BC_Z'], '.4f')} px (Y, Z)\n")
    out.write(f"  tx ty tz   {_pm(rows['tx'], '.5f')}, {_pm(rows['ty'], '.5f')}, {_pm(rows['tz'], '.5f')} deg\n")
    out.write(f"  p0 p1 p2   {_pm(rows['p0'], '.4e')}, {_pm(rows['p1'], '.4e')}, {_pm(rows['p2'], '.4e')}\n"
              f"  p3         {_pm(rows['p3'], '.3f')} deg\n")
    if g.p4 or rows["p4"]["refined"]:
        out.write(f"  p4         {_pm(rows['p4'], '.4e')}\n")
    out.write(f"  RhoD       {g.rho_d_um:.1f} µm\n")
    if result.covariance is not None:
        out.write("  (± = standard error, 1σ, from the peak-fit errors"
                  + (f" and a systematic floor of {result.systematic_strain * 1e6:.2g} µε per point"
                     if result.systematic_strain > 0 else "") + "; n.d. = not determined by the data)\n")
    out.write(f"  strain     mean {result.mean_strain * 1e6:.2f} µε, std {result.std_strain * 1e6:.2f} µε over "
              f"{int((~result.outlier).sum())} points on {len(set(result.points.ring[~result.outlier].tolist()))} rings\n")
    if result.distortion_reason:
        out.write(f"  {result.distortion_reason}\n")
    if result.excluded_rings:
        out.write(f"  rejected rings: {' '.join(map(str, result.excluded_rings))}\n")
    for warning in result.warnings:
        out.write(f"  WARNING: {warning}\n")
    if result.status == "SUSPECT":
        for text in result.verdict.reasons:
            out.write(f"  SUSPECT: {text}\n")
    out.write(f"  iterations {len(result.iterations)}; time " + ", ".join(
        f"{k} {v:.2f} s" for k, v in result.timings.items()) + "\n")
    return out.getvalue()


def refined_params_comments(result: CalibrationResult) -> list[str]:
    """The ``#`` lines of ``refined_MIDAS_params.txt`` after the keys: σ of every refined parameter, what was
    not determined and why (old parsers skip comments)."""
    from .record import not_determined, parameter_rows

    lines = ["standard errors (1 sigma; the covariance is in calibration.json): "
             + ("none (no final fit)" if result.covariance is None else
                f"systematic floor {result.systematic_strain * 1e6:.3g} microstrain per point beyond the peak fits")]
    for row in parameter_rows(result):
        if row["refined"]:
            sigma = f"{row['sigma']:.6g}" if math.isfinite(row["sigma"]) else "not-determined"
            lines.append(f"sigma {row['name']} {sigma} {row['unit']}".rstrip())
    for item in not_determined(result):
        lines.append(f"not determined: {item['parameter']}: {item['reason']}")
    return lines


def write_calibration_json(path, result: CalibrationResult, *, inputs=None, extra: dict | None = None) -> None:
    """``calibration.json``: :func:`midas_ref.record.calibration_record`, written atomically."""
    import json

    from .record import calibration_record

    write_text_atomic(path, json.dumps(calibration_record(result, inputs=inputs, extra=extra), indent=1,
                                       allow_nan=False) + "\n")


class AutocalLog:
    """``autocal.log``, written line by line while the run goes (each line with its own time, flushed).

    The command line streams it (``header`` at the start, ``guess`` once the first geometry is known,
    ``iteration`` after every fit, ``distortion`` after each choice of distortion terms, ``finish`` with the
    outcome), so a run that is killed still shows how far
    it got; :func:`write_autocal_log` writes the same lines from a finished result.

    Parameters
    ----------
    path : path-like
        Opened for writing (line-buffered, UTF-8).
    """

    def __init__(self, path):
        self._fh = open(path, "w", encoding="utf-8", buffering=1)
        self._fh.write(f"# midas-ref autocal log v1, {self._now()}; BC = (Y column, Z row) px, lengths µm, "
                       "angles deg\n")

    @staticmethod
    def _now() -> str:
        return _dt.datetime.now().isoformat(timespec="seconds")

    def line(self, text: str, level: str = "INFO") -> None:
        """One log line."""
        self._fh.write(f"{self._now()} - midas_ref.calibrate - {level} - {text}\n")

    def header(self, header: dict) -> None:
        """The inputs of the run, one ``key: value`` line each."""
        for key, value in header.items():
            self.line(f"{key}: {value}")

    def guess(self, guess: dict) -> None:
        """The guesses (beam centre source, distance match …)."""
        for key, value in guess.items():
            self.line(f"guess {key}: {value}")

    def iteration(self, rec) -> None:
        """One extraction + fit iteration (:class:`~midas_ref.autocal.IterationRecord`)."""
        g = rec.geometry
        self.line(f"iteration {rec.iteration} stage {rec.stage}: "
                  f"Lsd {g.lsd_um:.6f} BC {g.bc_y_px:.6f} {g.bc_z_px:.6f} ty {g.ty_deg:.8f} tz {g.tz_deg:.8f} "
                  f"p0 {g.p0:.6e} p1 {g.p1:.6e} p2 {g.p2:.6e} p3 {g.p3_deg:.6f} p4 {g.p4:.6e} "
                  f"MeanStrain {rec.mean_strain:.6e} StdStrain {rec.std_strain:.6e} points {rec.n_points} "
                  f"rings {rec.n_rings} excluded [{' '.join(map(str, rec.excluded_rings))}] ({rec.seconds:.2f} s)")

    def distortion(self, selection) -> None:
        """A distortion-term selection (:class:`~midas_ref.model_select.DistortionSelection`): the verdict, the
        noise split and every test with its statistic and threshold."""
        first, *rest = selection.report_lines()
        self.line(f"iteration {selection.iteration} {first}")
        for text in rest:
            self.line(text)

    def finish(self, result: CalibrationResult) -> None:
        """The outcome and the summary of :func:`summary_text`."""
        level = {"CONVERGED": "INFO", "SUSPECT": "WARNING"}.get(result.status, "ERROR")
        self.line(f"status {result.status}" + (f": {result.reason}" if result.reason else ""), level)
        for text in summary_text(result).splitlines():
            self.line(text, level)

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> "AutocalLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_autocal_log(path, result: CalibrationResult, *, header: dict) -> None:
    """``autocal.log`` of a finished result: inputs, the guesses, every iteration's geometry and strain, the
    outcome (the lines :class:`AutocalLog` streams), written atomically."""
    with atomic_path(path) as tmp, AutocalLog(tmp) as log:
        log.header(header)
        log.guess(result.guess)
        for rec in result.iterations:
            log.iteration(rec)
            for selection in result.distortion_selections:
                if selection.iteration == rec.iteration:
                    log.distortion(selection)
        log.finish(result)


def save_plots_hdf(path, result: CalibrationResult, image: np.ndarray, *, input_name: str, wavelength: float,
                   space_group: int) -> None:
    """The ``-SavePlotsHDF`` file with AutoCalibrateZarr's groups (spec autocalibrate.md §3.3, old layout)."""
    import h5py

    g = result.geometry
    keep = ~result.outlier
    tth = np.array([result.rings[k].two_theta_deg for k in result.points.ring])
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        meta = h5.create_group("metadata")
        meta.attrs["file_name"] = Path(input_name).name
        meta.attrs["date_created"] = _dt.datetime.now().isoformat()
        meta.attrs["format"] = "midas-ref SavePlotsHDF v1; images [row, col] = [Z, Y]"
        h5.create_group("raw_image_data").create_dataset("raw_image", data=image, compression="gzip", compression_opts=4)
        h5["raw_image_data"].attrs["description"] = "averaged, dark-subtracted frame after ImTransOpt"
        if result.background is not None:
            h5.create_group("background_data").create_dataset("background", data=result.background, compression="gzip", compression_opts=4)
            h5["background_data"].attrs["description"] = "block-median background"
        if result.binary is not None:
            thr = (result.binary * 255).astype(np.uint8)
            h5.create_group("threshold_data").create_dataset("threshold", data=thr, compression="gzip", compression_opts=4)
            h5["threshold_data"].attrs["description"] = f"pixels above threshold {result.threshold:g}"
            ov = h5.create_group("ring_overlay_data")
            ov.create_dataset("threshold", data=thr, compression="gzip", compression_opts=4)
            ov.create_dataset("beam_center", data=[g.bc_z_px, g.bc_y_px])
            ov.create_dataset("ring_radii", data=[g.lsd_um * math.tan(math.radians(r.two_theta_deg)) / g.px_um
                                                  for r in result.rings])
            ov.attrs["description"] = "ring radii in px at the refined distance; beam_center = [row, col]"
            ov.attrs["beam_center_x"] = g.bc_y_px
            ov.attrs["beam_center_y"] = g.bc_z_px
        rows = per_ring_table(result)
        for rec in result.iterations:
            grp = h5.create_group(f"strain_tth_data_iter{rec.iteration}")
            grp.attrs["iteration"] = rec.iteration
            grp.create_dataset("geometry", data=[rec.geometry.lsd_um, rec.geometry.bc_y_px, rec.geometry.bc_z_px,
                                                 rec.geometry.ty_deg, rec.geometry.tz_deg])
            grp.create_dataset("mean_strain", data=rec.mean_strain)
        fin = h5.create_group("final_strain_data")
        fin.create_dataset("results_tth", data=tth[keep])
        fin.create_dataset("results_strain", data=result.strain[keep])
        present = [r for r in rows if r["n_points"] > 0]
        fin.create_dataset("unique_tth", data=[r["two_theta_deg"] for r in present])
        fin.create_dataset("mean_strain_per_ring", data=[r["mean_abs_strain"] for r in present])
        fin.attrs["description"] = "signed strain 1 − R/R_ideal of the inlier points at the final geometry"
        res = h5.create_group("results_data")
        r_fit, eta_fit = pixel_to_r_eta(result.points.y_px, result.points.z_px, g)
        for name, data in (("%Eta", eta_fit), ("Strain", np.abs(result.strain)), ("RadFit", r_fit),
                           ("Ideal2Theta", tth), ("Outlier", result.outlier.astype(np.int8)),
                           ("YRawCorr", result.points.y_px), ("ZRawCorr", result.points.z_px)):
            res.create_dataset(name, data=data)
        par = h5.create_group("parameters")
        for key, value in (("lsd", g.lsd_um), ("beam_center", f"{g.bc_y_px} {g.bc_z_px}"), ("ty", g.ty_deg),
                           ("tz", g.tz_deg), ("p0", g.p0), ("p1", g.p1), ("p2", g.p2), ("p3", g.p3_deg),
                           ("p4", g.p4), ("mean_strain", result.mean_strain), ("std_strain", result.std_strain),
                           ("wavelength", wavelength), ("pixel_size", g.px_um), ("space_group", space_group),
                           ("rings_excluded", ",".join(map(str, result.excluded_rings))),
                           ("status", result.status)):
            par.attrs[key] = value


def make_plots(out_dir, result: CalibrationResult, image: np.ndarray, *, stem: str = "calibration") -> list[Path]:
    """PNG figures (headless): rings over the image, strain vs 2θ per iteration, residual map."""
    from matplotlib.figure import Figure  # figures are made directly: no pyplot, no GUI backend
    out_dir = Path(out_dir)
    g = result.geometry
    written = []
    keep = ~result.outlier
    pts = result.points

    fig = Figure(figsize=(8, 8), dpi=110)
    ax = fig.add_subplot()
    finite = image[np.isfinite(image)]
    lo, hi = np.percentile(finite, [1, 99.7]) if finite.size else (0, 1)
    ax.imshow(image, cmap="gray", vmin=lo, vmax=hi, origin="upper", interpolation="nearest")
    from .geometry import r_eta_to_pixel
    eta = np.linspace(-180, 180, 721)
    for ring in result.rings:
        r = g.lsd_um * math.tan(math.radians(ring.two_theta_deg))
        y, z = r_eta_to_pixel(np.full_like(eta, r), eta, g)
        color = "tab:red" if ring.ring_nr in result.excluded_rings else "tab:cyan"
        ax.plot(y, z, lw=0.6, color=color)
    ax.plot([g.bc_y_px], [g.bc_z_px], "+", color="yellow", ms=12)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_xlabel("Y (column, px)")
    ax.set_ylabel("Z (row, px)")
    ax.set_title(f"Refined rings ({result.status}); red = rejected")
    written.append(_save(fig, out_dir / f"{stem}_rings.png"))

    fig = Figure(figsize=(9, 5), dpi=110)
    ax = fig.add_subplot()
    tth = np.array([result.rings[k].two_theta_deg for k in pts.ring])
    ax.plot(tth[keep], result.strain[keep] * 1e6, ".", ms=2, alpha=0.5, label="points (final)")
    for rec in result.iterations:
        ax.axhline(rec.mean_strain * 1e6, lw=0.3, color="gray")
    rows = [r for r in per_ring_table(result) if r["n_points"]]
    ax.plot([r["two_theta_deg"] for r in rows], [r["mean_strain"] * 1e6 for r in rows], "o-", color="tab:red",
            label="ring mean")
    ax.set_xlabel("2θ (deg)")
    ax.set_ylabel("strain 1 − R/R_ideal (µε)")
    ax.set_title("Pseudo-strain vs 2θ; grey lines: mean |strain| of each iteration")
    ax.legend()
    written.append(_save(fig, out_dir / f"{stem}_strain.png"))

    fig = Figure(figsize=(8, 7), dpi=110)
    ax = fig.add_subplot()
    lim = max(np.percentile(np.abs(result.strain[keep]), 99) * 1e6, 1e-3) if keep.any() else 1.0
    sc = ax.scatter(pts.y_px[keep], pts.z_px[keep], c=result.strain[keep] * 1e6, s=6, cmap="coolwarm",
                    vmin=-lim, vmax=lim)
    ax.set_xlim(-0.5, image.shape[1] - 0.5)
    ax.set_ylim(image.shape[0] - 0.5, -0.5)
    ax.set_aspect("equal")
    fig.colorbar(sc, ax=ax, label="strain (µε)")
    ax.set_title("Residual strain over the detector")
    written.append(_save(fig, out_dir / f"{stem}_residuals.png"))
    return written


def _save(fig, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# ------------------------------------------------------------------------------------------ panel refinement

def _mean_values_block(geometry: Geometry, abs_strain_inliers: np.ndarray) -> str:
    """CalibrantPanelShiftsOMP's closing ``Mean Values`` block (spec legacy_engine.md §3.10): µε statistics,
    median/quartiles as ``sorted[n/2]``, ``sorted[n/4]``, ``sorted[3n/4]``."""
    g = geometry
    s = np.sort(np.asarray(abs_strain_inliers, dtype=np.float64)) * 1e6
    n = s.size
    rows = [("Lsd", f"{g.lsd_um:0.12f}"), ("BC", f"{g.bc_y_px:0.12f} {g.bc_z_px:0.12f}"),
            ("ty", f"{g.ty_deg:0.12f}"), ("tz", f"{g.tz_deg:0.12f}"), ("p0", f"{g.p0:0.12f}"), ("p1", f"{g.p1:0.12f}"),
            ("p2", f"{g.p2:0.12f}"), ("p3", f"{g.p3_deg:0.12f}"), ("p4", f"{g.p4:0.12f}"), ("p5", f"{g.p5:0.12f}")]
    text = "*******************Mean Values*******************\n"
    text += "".join(f"{k:<10s} {v}\n" for k, v in rows)
    text += "           *** microstrain ***\n"
    if n:
        stats = [("MeanStrain", s.mean()), ("StdStrain", s.std()), ("MedianStr", s[n // 2]), ("Q25", s[n // 4]),
                 ("Q75", s[3 * n // 4]), ("MinStrain", s[0]), ("MaxStrain", s[-1])]
        text += "".join(f"{k:<10s} {v:0.6f}\n" for k, v in stats)
    text += f"{'NPoints':<10s} {n}\n"
    return text


def indices_per_panel(result) -> str:
    """The "Indices per Panel" coverage map: points per panel laid out as on the detector (rows = Z)."""
    lay = result.panels.layout
    counts = panel_point_counts(result.points.y_px[~result.outlier], result.points.z_px[~result.outlier],
                                result.panels)
    lines = ["Indices per Panel (rows: panel Z index, columns: panel Y index; ids = iy·NPanelsZ + iz)"]
    for iz in range(lay.n_panels_z):
        lines.append(f"  Z{iz:<3d}" + "".join(f"{counts[iy * lay.n_panels_z + iz]:6d}" for iy in range(lay.n_panels_y)))
    return "\n".join(lines) + "\n"


def panel_report_text(result, *, settings=None, seconds: float = math.nan) -> str:
    """Console report of a panel refinement: geometry, per-ring and per-panel tables, coverage, Mean Values."""
    g = result.geometry
    keep = ~result.outlier
    out = _io.StringIO()
    out.write(f"Panel refinement: best iteration {result.best_iteration} of {len(result.iterations)}"
              + (f", {seconds:.1f} s" if math.isfinite(seconds) else "") + "\n")
    se = result.std_errors
    out.write(f"  Lsd   {g.lsd_um:.3f} ± {se.get('lsd_um', math.nan):.3f} µm\n")
    out.write(f"  BC    {g.bc_y_px:.4f} {g.bc_z_px:.4f} ± {se.get('bc_y_px', math.nan):.4f} "
              f"{se.get('bc_z_px', math.nan):.4f} px (Y, Z)\n")
    out.write(f"  ty tz {g.ty_deg:.5f} {g.tz_deg:.5f} deg;  p0..p4 {g.p0:.3e} {g.p1:.3e} {g.p2:.3e} "
              f"{g.p3_deg:.3f} {g.p4:.3e}\n")
    # per ring: deviation of the mean radius from the ideal one
    count, mean, mean_abs, sem = ring_statistics(result.points.ring[keep], result.strain[keep], len(result.rings))
    out.write("\nRing deviations (inlier points)\n  RingNr  lambda  hkl           2theta(deg)  npts   mean strain(µε)"
              "  mean |strain|(µε)  dR(µm)\n")
    for k, ring in enumerate(result.rings):
        if count[k] == 0:
            continue
        ideal_r = g.lsd_um * math.tan(math.radians(ring.two_theta_deg))
        label = "1" if k < result.n_main_rings else "2"
        out.write(f"  {ring.ring_nr:6d}  {label:>6s}  {str(tuple(ring.hkl)):<12s}  {ring.two_theta_deg:11.5f}  "
                  f"{int(count[k]):4d}   {mean[k] * 1e6:15.3f}  {mean_abs[k] * 1e6:17.3f}  {-mean[k] * ideal_r:7.3f}\n")
    counts = panel_point_counts(result.points.y_px[keep], result.points.z_px[keep], result.panels)
    strain = panel_mean_strain(result.points.y_px[keep], result.points.z_px[keep], np.abs(result.strain[keep]),
                               result.panels)
    gauge = getattr(result, "gauge", "average")
    fixed = settings.freedom.fix_panel_id if settings is not None and gauge == "fixed" else -1
    out.write(f"\nPanelGauge {gauge}: " + {
        "average": "the global geometry is the average detector (panel corrections with zero mean shift, net "
                   "dilation and net rotation)\n",
        "mean": "panel corrections with zero mean shift (the global BC is that of the average panel)\n"}.get(
            gauge, f"panel {fixed} holds still (FixPanelID)\n"))
    out.write("\nPanels  (σ: standard error from the data; inf = not determined by the rings)\n"
              "    ID  npts  mean|ε|(µε)        dY ± σ (px)          dZ ± σ (px)       dTheta ± σ (deg)"
              "    dLsd (µm)      dP2\n")

    def pm(label, value, fmt):
        sigma = se.get(label)
        return f"{value:{fmt}} ± {sigma:<7.4f}" if sigma is not None else f"{value:{fmt}}" + " " * 10

    for s in result.panels.shifts:
        tag = (" fixed" if s.id == fixed else " not refined (no points)" if s.id in result.unrefined
               else " poorly constrained" if s.id in result.poorly_constrained else "")
        out.write(f"  {s.id:4d}  {counts[s.id]:4d}  {strain[s.id] * 1e6:10.3f}   "
                  f"{pm(f'panel {s.id} dy_px', s.dy_px, '9.4f')}  {pm(f'panel {s.id} dz_px', s.dz_px, '9.4f')}  "
                  f"{pm(f'panel {s.id} dtheta_deg', s.dtheta_deg, '9.5f')}  {s.dlsd_um:9.3f}  {s.dp2:10.3e}{tag}\n")
    out.write("\n" + indices_per_panel(result))
    if result.poorly_constrained:
        out.write(f"WARNING: panels {' '.join(map(str, result.poorly_constrained))} have shift errors above "
                  "0.05 px: the rings on them cannot fix their position (too few points, or tolRotation > 0 —"
                  " a panel turning about the beam axis only slides its arcs along themselves)\n")
    for label in getattr(result, "at_bound", ()):
        out.write(f"WARNING: {label} ended at its search bound (start ± tolerance): widen the tolerance, or the "
                  "rings do not determine it\n")
    held = getattr(result, "held", ())
    if held:
        panels = sorted({int(part.split()[1]) for direction in held for part in direction.split(" ↔ ")
                         if part.startswith("panel ")})
        out.write(f"NOT DETERMINED: {len(held)} combinations of the corrections of panels "
                  f"{' '.join(map(str, panels))} (a panel's rotation about its centre against its tangential "
                  "shift, geometry.md §6.1): the rings fix each to no better than a quarter of its tolerance, so "
                  "each is held at its start value; σ = inf above where a correction has a share in one\n")
    out.write("*******************Copy to par*******************\n")
    out.write(f"Lsd {g.lsd_um:0.12f}\nBC {g.bc_y_px:0.12f} {g.bc_z_px:0.12f}\nty {g.ty_deg:0.12f}\n"
              f"tz {g.tz_deg:0.12f}\np0 {g.p0:0.12f}\np1 {g.p1:0.12f}\np2 {g.p2:0.12f}\np3 {g.p3_deg:0.12f}\n"
              f"p4 {g.p4:0.12f}\n")
    out.write(_mean_values_block(g, np.abs(result.strain[keep & np.isfinite(result.strain)])))
    return out.getvalue()


def write_panel_corr_csv(path, result, start: Geometry) -> None:
    """CalibrantPanelShiftsOMP's 16-column corr.csv (spec legacy_engine.md §3.10) of the best iteration."""
    from .panels import kernel_tables, panel_displacement, point_panel_ids

    pts = result.points
    g = result.geometry
    tth = result.two_theta_deg
    ideal_tan = np.tan(np.radians(tth))
    r_fit, eta_fit = pixel_to_r_eta(pts.y_px, pts.z_px, g, result.panels)
    r_start, eta_start = pixel_to_r_eta(pts.y_px, pts.z_px, start, result.panels)
    strain_fit = np.abs(1 - r_fit / (g.lsd_um * ideal_tan))
    strain_start = np.abs(1 - r_start / (start.lsd_um * ideal_tan))
    # position after the panel transform (the corrected detector position)
    ids = point_panel_ids(pts.y_px, pts.z_px, result.panels)
    _, _, _, table = kernel_tables(result.panels, g.shape)
    d_y, d_z = panel_displacement(pts.y_px, pts.z_px, ids, table)
    y_corr, z_corr = pts.y_px + d_y, pts.z_px + d_z
    ideal_r = g.lsd_um * ideal_tan
    fit_tth = np.degrees(np.arctan(r_fit / g.lsd_um))
    order = np.lexsort((eta_fit, pts.ring))
    with atomic_output(path) as fh:
        fh.write("%Eta Strain RadFit EtaCalc DiffCalc RadCalc Ideal2Theta Outlier YRawCorr ZRawCorr RingNr "
                 "RadGlobal IdealR Fit2Theta IdealA FitA\n")
        for i in order:
            ring = result.rings[pts.ring[i]]
            ideal_a = ring.d_angstrom * math.sqrt(sum(h * h for h in ring.hkl))
            fit_a = ideal_a * math.sin(math.radians(tth[i] / 2)) / math.sin(math.radians(fit_tth[i] / 2))
            fh.write(f"{eta_fit[i]:f} {strain_fit[i]:10.8f} {r_fit[i]:10.8f} {eta_start[i]:f} {strain_start[i]:10.8f} "
                     f"{r_start[i]:10.8f} {tth[i]:f} {int(result.outlier[i])} {y_corr[i]:f} {z_corr[i]:f} "
                     f"{ring.ring_nr} {r_fit[i]:10.8f} {ideal_r[i]:10.8f} {fit_tth[i]:f} {ideal_a:10.8f} {fit_a:10.8f}\n")


def write_panel_outputs(outset, shifts_path, result, pf, *, stem: str, start: Geometry) -> list[Path]:
    """Every file of ``midas-ref panels`` into an :class:`~midas_ref.atomic.OutputSet`: PanelShiftsFile
    (+ .shifts.tif, .strain.tif), ``refined_panel_params.txt`` (the input parameter file with the refined
    geometry; it re-runs as is), ``<stem>_convergence_history.csv`` and ``<stem>.corr.csv``.

    Returns the destinations (in place after ``outset.commit()``)."""
    from .io import write_tiff
    from .panels import panel_index_map, point_panel_ids, shift_magnitude_map, write_panel_shifts
    from .params import params_from_geometry

    shifts_path = Path(shifts_path)
    shape = result.geometry.shape
    tifs = (Path(f"{shifts_path}.shifts.tif"), Path(f"{shifts_path}.strain.tif"))
    names = [shifts_path, *tifs, Path("refined_panel_params.txt"), Path(f"{stem}_convergence_history.csv"),
             Path(f"{stem}.corr.csv")]
    write_panel_shifts(outset.path(shifts_path), result.panels)
    write_tiff(outset.path(tifs[0]), shift_magnitude_map(result.panels, shape).astype(np.float32))
    keep = ~result.outlier & np.isfinite(result.strain)
    per_panel = panel_mean_strain(result.points.y_px[keep], result.points.z_px[keep], np.abs(result.strain[keep]),
                                  result.panels) * 1e6
    ids = panel_index_map(result.panels.layout, shape)
    strain_map = np.where(ids >= 0, per_panel[np.maximum(ids, 0)], -1.0)
    write_tiff(outset.path(tifs[1]), np.nan_to_num(strain_map, nan=-1.0).astype(np.float32))
    final_shifts = shifts_path if shifts_path.is_absolute() else outset.out_dir / shifts_path
    refined = params_from_geometry(result.geometry, pf).set("PanelShiftsFile", str(final_shifts.resolve()))
    write_text_atomic(outset.path("refined_panel_params.txt"), refined.to_text())
    with atomic_output(outset.path(f"{stem}_convergence_history.csv")) as fh:
        fh.write("Iter,MeanStrain_ue,StdStrain_ue,Lsd,BC_Y,BC_Z,ty,tz,p0,p1,p2,p3,p4,p5\n")
        for rec in result.iterations:
            g = rec.geometry
            fh.write(f"{rec.iteration},{rec.mean_strain * 1e6:.6f},{rec.std_strain * 1e6:.6f},{g.lsd_um:.6f},"
                     f"{g.bc_y_px:.6f},{g.bc_z_px:.6f},{g.ty_deg:.8f},{g.tz_deg:.8f},{g.p0:.10g},{g.p1:.10g},"
                     f"{g.p2:.10g},{g.p3_deg:.8f},{g.p4:.10g},{g.p5:.10g}\n")
    in_panel = point_panel_ids(result.points.y_px, result.points.z_px, result.panels) >= 0
    sub = replace(result, points=result.points.select(in_panel), strain=result.strain[in_panel],
                  outlier=result.outlier[in_panel], two_theta_deg=result.two_theta_deg[in_panel])
    write_panel_corr_csv(outset.path(f"{stem}.corr.csv"), sub, start)
    return [p if p.is_absolute() else outset.out_dir / p for p in names]


def calibration_log_header(inputs, *, param_name: str) -> dict:
    """The inputs of a calibration as ``autocal.log`` lists them."""
    loaded = inputs.loaded
    return {"input": str(inputs.data_path), "file type": loaded.file_type, "dark": loaded.dark_path,
            "ImTransOpt": list(loaded.im_trans_opt), "masked pixels": int(inputs.mask.sum()),
            "parameter file": param_name, "settings": inputs.settings}


#: Files of a calibrate output set besides ``<image>.corr.csv`` and the figures (replaced as one unit).
CALIBRATION_SET_NAMES = ("calibrant_screen_out.csv", "autocal.log", "refined_MIDAS_params.txt", "calibration.json")


def write_calibration_outputs(outset, inputs, result: CalibrationResult, *, param_name: str, seconds: float,
                              plots_hdf: str | os.PathLike | None = None, make_figures: bool = False,
                              log: bool = True) -> None:
    """The output set of ``midas-ref calibrate`` (docs/cli.md, "Outputs") into an :class:`~midas_ref.atomic.OutputSet`.

    ``<image>.corr.csv``, ``calibrant_screen_out.csv``, the ``-SavePlotsHDF`` file (relative to the set's
    folder unless absolute), the ``-MakePlots`` figures, ``autocal.log`` (unless ``log`` is False: the
    command streams it) and, for a CONVERGED or SUSPECT result, ``refined_MIDAS_params.txt``. Nothing is in place
    before ``outset.commit()``.

    Parameters
    ----------
    outset : midas_ref.atomic.OutputSet
    inputs : midas_ref.inputs.CalibrationInputs
        The set-up of the run (input names, wavelength, calibrant, skip/ImTransOpt/sentinels to write back).
    result : CalibrationResult
    param_name : str
        The parameter file as the user named it (for the log).
    seconds : float
        Wall time of the run so far, s (for the screen output).
    plots_hdf : path-like, optional
    make_figures : bool
    log : bool
    """
    from .params import write_refined_params

    stem = inputs.data_path.name
    settings = inputs.settings
    start = result.iterations[0].geometry if result.iterations else result.geometry
    write_corr_csv(outset.path(f"{stem}.corr.csv"), result, start)
    write_screen_out(outset.path("calibrant_screen_out.csv"), result,
                     n_eta_bins=max(1, int(round(360 / settings.eta_bin_deg))), seconds=seconds)
    if plots_hdf:
        try:
            save_plots_hdf(outset.path(plots_hdf), result, inputs.image, input_name=str(inputs.data_path),
                           wavelength=inputs.wavelength_angstrom, space_group=inputs.space_group)
        except OSError as exc:  # h5py reports disk and permission trouble as OSError: the user's location
            raise OutputLocationError(f"-SavePlotsHDF {plots_hdf}: cannot write: {exc}") from None
    if make_figures:
        with tempfile.TemporaryDirectory() as tmp:
            for figure in make_plots(tmp, result, inputs.image, stem=stem):
                shutil.move(figure, outset.path(Path(figure).name))  # /tmp may be another file system
    if log:
        write_autocal_log(outset.path("autocal.log"), result,
                          header=calibration_log_header(inputs, param_name=param_name))
    write_calibration_json(outset.path("calibration.json"), result, inputs=inputs)
    if result.status in ("CONVERGED", "SUSPECT"):  # a SUSPECT geometry is written too (docs/cli.md)
        loaded = inputs.loaded
        write_refined_params(outset.path("refined_MIDAS_params.txt"), result.geometry,
                             wavelength_angstrom=inputs.wavelength_angstrom, space_group=inputs.space_group,
                             lattice=inputs.lattice, eta_bin_size_deg=settings.eta_bin_deg,
                             skip_frame=inputs.skip_frame, im_trans_opt=list(loaded.im_trans_opt),
                             bad_px_intensity=inputs.bad_px_intensity, gap_intensity=inputs.gap_intensity,
                             comments=refined_params_comments(result))
