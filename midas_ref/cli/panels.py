"""``midas-ref panels PARAMFILE [nCPUs]``: multi-panel refinement (the CalibrantPanelShiftsOMP command).

Reads the parameter file (refined global geometry, File I/O keys, panel keys), prints a boxed summary of
the parsed values, refines the global geometry together with per-panel corrections, and writes
``PanelShiftsFile`` (+ ``.shifts.tif``, ``.strain.tif``), ``refined_panel_params.txt`` (the input file with
the refined geometry), ``<FileStem>_convergence_history.csv`` and the corr.csv of the best iteration.
Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from ..errors import ImageReadError, ParameterFileError

EPILOG = """example:
  midas-ref simulate --scenario pilatus2m --out p2m
  midas-ref panels p2m/params.txt 2 --out-dir p2m/panels
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "panels", help="refine per-panel shifts/rotations of a tiled detector (CalibrantPanelShiftsOMP)",
        description="Refine the global geometry together with per-panel dY, dZ, dTheta, dLsd, dP2 (manual §7).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("param_file", help="parameter file: geometry, File I/O keys (Folder, FileStem, Ext, "
                        "StartNr, EndNr, …) and panel keys (NPanelsY/Z, PanelSizeY/Z, PanelGapsY/Z, …)")
    parser.add_argument("ncpus", nargs="?", type=int, default=0, help="CPU threads (default: all)")
    parser.add_argument("--out-dir", default=".", help="folder for every output except PanelShiftsFile when "
                        "that is an absolute path (default: current folder)")
    parser.add_argument("--optimizer", choices=("least-squares", "nelder-mead"), default="least-squares",
                        help="least-squares (default; block-structured Jacobian) or the legacy NLopt "
                             "Nelder–Mead/Subplex on the L1 objective")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the final summary")
    parser.set_defaults(func=run)


#: Extraction + fit cycles when the parameter file has no nIterations (they stop early once converged).
DEFAULT_CYCLES = 5


def data_files(pf) -> list[Path]:
    """``Folder/FileStem_<nr>Ext`` for nr = StartNr … EndNr, zero-padded to ``Padding`` digits."""
    pf.require("Folder", "FileStem", "Ext", "StartNr")
    start = int(pf.get("StartNr"))
    end = int(pf.get("EndNr")) if pf.has("EndNr") else start
    if end < start:
        raise ParameterFileError(f"EndNr {end} is below StartNr {start}", pf.path)
    pad = int(pf.get("Padding", 6))
    folder = Path(pf.get("Folder"))
    if not folder.is_absolute() and pf.path:
        folder = Path(pf.path).parent / folder
    return [folder / f"{pf.get('FileStem')}_{nr:0{pad}d}{pf.get('Ext')}" for nr in range(start, end + 1)]


def load_panel_image(pf):
    """Average of the data files (dark-subtracted, masked, ImTransOpt applied) → (image, mask, notes)."""
    from ..io import infer_file_type, load_image

    files = data_files(pf)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise ImageReadError(f"data file not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                      if len(missing) > 1 else ""))
    dark = pf.get("Dark", None)
    if dark and not Path(dark).is_absolute() and pf.path:
        dark = str(Path(pf.path).parent / dark)
    notes = []
    if dark and not Path(dark).exists():
        # the legacy programs subtract nothing when the Dark file cannot be read (parameter files often name
        # a placeholder); say so instead of failing
        notes.append(f"Dark file {dark} not found: no dark subtracted")
        dark = None
    mask_file = pf.get("MaskFile", None)
    if mask_file and not Path(mask_file).is_absolute() and pf.path:
        mask_file = str(Path(pf.path).parent / mask_file)
    data_type = pf.get("DataType", None)
    image_sum, mask = None, None
    for path in files:
        kind = infer_file_type(path, data_type=data_type)
        loaded = load_image(path, dark_path=dark or None, file_type=kind,
                            n_pixels_y=pf.get("NrPixelsY", None), n_pixels_z=pf.get("NrPixelsZ", None),
                            data_type=data_type if kind == "raw" else None,
                            # CalibrantPanelShiftsOMP's HeadSize default is 0 (raw); GE keeps its 8192
                            head_size=pf.get("HeadSize") if pf.has("HeadSize") else None,
                            data_loc=pf.get("dataLoc", None) if pf.has("dataLoc") else None,
                            skip_frame=int(pf.get("SkipFrame", 0) or 0), im_trans_opt=pf.get("ImTransOpt") or [0],
                            bad_px_intensity=pf.get("BadPxIntensity", None),
                            gap_intensity=pf.get("GapIntensity", None), mask_file=mask_file)
        image_sum = loaded.image if image_sum is None else image_sum + loaded.image
        mask = loaded.mask if mask is None else mask | loaded.mask
        notes.extend(loaded.notes)
    return image_sum / len(files), mask, files, notes


def settings_from_params(pf, optimizer: str):
    """:class:`~midas_ref.panel_refine.PanelSettings` from the manual §7 keys."""
    from ..panel_refine import PanelSettings
    from ..refine import PanelFreedom, Tolerances

    px = float(pf.get("px"))
    # CalibrantPanelShiftsOMP: tolP0–P5 fall back to tolP (p3 too, quirk P5, which we do not inherit: p3 keeps
    # its own 45° default so a free p1 can turn)
    tol = Tolerances(lsd_um=pf.get("tolLsd"), bc_px=pf.get("tolBC"), tilts_deg=pf.get("tolTilts"),
                     p0=pf.get("tolP0"), p1=pf.get("tolP1"), p2=pf.get("tolP2"), p3_deg=pf.get("tolP3"),
                     p4=pf.get("tolP4") or pf.get("tolP"))
    freedom = PanelFreedom(fix_panel_id=int(pf.get("FixPanelID")), shifts_px=float(pf.get("tolShifts")),
                           rotation_deg=float(pf.get("tolRotation")),
                           lsd_um=float(pf.get("tolLsdPanel")) if pf.get("PerPanelLsd") else 0.0,
                           p2=float(pf.get("tolP2Panel")) if pf.get("PerPanelDistortion") else 0.0,
                           min_points=int(pf.get("MinIndicesForFit")))
    width = pf.get("Width", None)
    return PanelSettings(
        # absent nIterations: up to DEFAULT_CYCLES (stopping once converged) instead of the legacy single pass,
        # which re-used peaks extracted in the uncorrected frame
        n_iterations=int(pf.get("nIterations")) if pf.has("nIterations") else DEFAULT_CYCLES, freedom=freedom, tolerances=tol,
        distortion_order=int(pf.get("DistortionOrder")), eta_bin_deg=float(pf.get("EtaBinSize", None) or 5.0),
        # Width is the legacy ring half-window in µm (the orchestrator writes 1000 = far too wide for a fit)
        half_window_px=min(float(width) / px, 12.0) if width else None,
        mult_factor=float(pf.get("MultFactor")), outlier_iterations=int(pf.get("OutlierIterations")),
        normalize_ring_weights=bool(pf.get("NormalizeRingWeights")), weight_by_radius=bool(pf.get("WeightByRadius")),
        doublet_separation_px=float(pf.get("DoubletSeparation")), optimizer=optimizer)


def boxed(title: str, rows) -> str:
    """A box of ``key  value`` rows, as the legacy program prints its parsed parameters."""
    lines = [f"{k:<22s} {v}" for k, v in rows]
    width = max([len(title)] + [len(line) for line in lines]) + 2
    out = ["┌" + "─" * width + "┐", "│ " + title.ljust(width - 1) + "│", "├" + "─" * width + "┤"]
    out += ["│ " + line.ljust(width - 1) + "│" for line in lines]
    out.append("└" + "─" * width + "┘")
    return "\n".join(out) + "\n"


def _value_text(value) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(_value_text(v) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def run(args) -> int:
    from .. import outputs
    from ..panel_refine import refine_panels
    from ..panels import Panels, read_panel_shifts
    from ..params import geometry_from_params, panel_layout_from_params, read_parameter_file
    from ..rings import ring_table

    if args.ncpus:
        import numba

        numba.set_num_threads(max(1, min(args.ncpus, numba.config.NUMBA_NUM_THREADS)))
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    pf = read_parameter_file(args.param_file)
    pf.require("SpaceGroup", "LatticeConstant", "Wavelength", "px", "NrPixelsY", "NrPixelsZ", "Lsd", "BC",
               "NPanelsY", "NPanelsZ", "PanelSizeY", "PanelSizeZ")
    geometry = geometry_from_params(pf)
    layout = panel_layout_from_params(pf)
    if layout is None:
        raise ParameterFileError("NPanelsY and NPanelsZ must be > 0 for a panel refinement", pf.path)
    settings = settings_from_params(pf, args.optimizer)
    out = Path(args.out_dir)
    shifts_name = pf.get("PanelShiftsFile", None) or "panelshifts.txt"
    shifts_path = Path(shifts_name) if Path(shifts_name).is_absolute() else out / shifts_name
    start_shifts_path = Path(shifts_name) if Path(shifts_name).is_absolute() else (
        Path(pf.path).parent / shifts_name if pf.path else Path(shifts_name))
    for candidate in (shifts_path, start_shifts_path):
        if candidate.exists():
            panels = read_panel_shifts(candidate, layout)
            say(f"starting from the panel corrections in {candidate}")
            break
    else:
        panels = Panels.from_shifts(layout)
    print(boxed("midas-ref panels: parsed parameters",
                [(key, _value_text(pf.get(key))) for key in pf.keys()]), end="", file=sys.stderr)
    image, mask, files, notes = load_panel_image(pf)
    if image.shape != geometry.shape:
        raise ImageReadError(f"image is {image.shape[1]} × {image.shape[0]} px but NrPixelsY × NrPixelsZ is "
                             f"{geometry.n_pixels_y} × {geometry.n_pixels_z}")
    for note in notes:
        say(f"  note: {note}")
    wavelength = float(pf.get("Wavelength"))
    max_nr = int(pf.get("MaxRingNumber") or 0)
    diag_um = math.hypot(*image.shape) * geometry.px_um * 1.5
    d_min = wavelength / (2 * math.sin(0.5 * math.atan(diag_um / geometry.lsd_um)))
    rings = ring_table(int(pf.get("SpaceGroup")), tuple(pf.get("LatticeConstant")), wavelength,
                       d_min_angstrom=d_min, rings_to_exclude=tuple(pf.get("RingsToExclude") or ()))
    if max_nr:
        rings = [ring for ring in rings if ring.ring_nr <= max_nr]
    doublet_rings = []
    if pf.has("DoubletWavelength") and float(pf.get("DoubletWavelength")) > 0:
        lam2 = float(pf.get("DoubletWavelength"))
        doublet_rings = [ring for ring in ring_table(int(pf.get("SpaceGroup")), tuple(pf.get("LatticeConstant")),
                                                     lam2, d_min_angstrom=lam2 * d_min / wavelength)
                         if ring.ring_nr in {r.ring_nr for r in rings}]
    say(f"{len(files)} file(s), image {image.shape[1]} × {image.shape[0]} px, {int(mask.sum())} masked, "
        f"{layout.n_panels} panels, {len(rings)} rings" + (f" + {len(doublet_rings)} at λ2" if doublet_rings else ""))

    def progress(event, info):
        rec = info["record"]
        say(f"Iter {rec.iteration:2d}/{settings.n_iterations}  MeanStrain {rec.mean_strain * 1e6:8.3f}  "
            f"StdStrain {rec.std_strain * 1e6:8.3f}  ({rec.n_points} points, {rec.seconds:.1f} s)")

    result = refine_panels(image, mask, geometry, panels, rings, settings=settings, doublet_rings=doublet_rings,
                           progress=progress)
    elapsed = time.perf_counter() - t_start
    out.mkdir(parents=True, exist_ok=True)
    stem = str(pf.get("FileStem"))
    written = outputs.write_panel_outputs(out, shifts_path, result, pf, stem=stem, start=geometry)
    print(outputs.panel_report_text(result, settings=settings, seconds=elapsed), end="")
    for path in written:
        say(f"wrote {path}")
    return 0
