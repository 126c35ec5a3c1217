"""``midas-ref calibrate``: the AutoCalibrateZarr command line (every legacy flag, verbatim).

Legacy single-dash flags (``-dataFN``) and ``--kebab-case`` spellings share one destination. Exit codes:
0 converged, 1 the calibration FAILED (reason on stderr and in autocal.log; no refined parameter file is
written), 2 bad input.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ImageReadError, ParameterFileError

#: (legacy flag, kebab flag, argparse keyword arguments)
FLAGS = (
    ("-dataFN", "--data-fn", dict(dest="data_fn", required=True, help="input image: .zip (MIDAS Zarr), "
                                  ".h5/.hdf5, .ge*/.raw, .tif")),
    ("-ConvertFile", "--convert-file", dict(dest="convert_file", type=int, default=None, choices=(0, 1, 2, 3),
                                            help="input type: 0 Zarr zip, 1 HDF5, 2 GE binary, 3 TIFF "
                                                 "(default: from the extension)")),
    ("-paramFN", "--param-fn", dict(dest="param_fn", default="", help="MIDAS parameter file (SpaceGroup, "
                                    "LatticeParameter, Wavelength, px, …); required unless the input is a zip")),
    ("-darkFN", "--dark-fn", dict(dest="dark_fn", default="", help="dark image file")),
    ("-dataLoc", "--data-loc", dict(dest="data_loc", default="", help="HDF5 dataset of the frames "
                                    "(default exchange/data, or the file's only image dataset)")),
    ("-ImTransOpt", "--im-trans-opt", dict(dest="im_trans_opt", type=int, nargs="+", default=None,
                                           help="image transforms in order: 0 none, 1 flip LR, 2 flip UD, "
                                                "3 transpose (default [0])")),
    ("-BadPxIntensity", "--bad-px-intensity", dict(dest="bad_px", type=float, default=math.nan,
                                                   help="bad-pixel value (default NaN = none)")),
    ("-GapIntensity", "--gap-intensity", dict(dest="gap_px", type=float, default=math.nan,
                                              help="gap-pixel value (default NaN = none)")),
    ("-StoppingStrain", "--stopping-strain", dict(dest="stopping_strain", type=float, default=0.00004,
                                                  help="the run FAILS if the final mean strain is above this")),
    ("-MultFactor", "--mult-factor", dict(dest="mult_factor", type=float, default=2.5,
                                          help="ring rejected if its mean strain > MultFactor × median")),
    ("-FirstRingNr", "--first-ring-nr", dict(dest="first_ring_nr", type=int, default=1,
                                             help="first ring (1-based) allowed for the innermost detected ring")),
    ("-LsdGuess", "--lsd-guess", dict(dest="lsd_guess", type=float, default=None,
                                      help="distance guess, µm (default 1000000 with a wide search)")),
    ("-BCGuess", "--bc-guess", dict(dest="bc_guess", type=float, nargs=2, default=None, metavar=("Y", "Z"),
                                    help="beam-centre guess, px (default: detected; 0 0 = detect)")),
    ("-EtaBinSize", "--eta-bin-size", dict(dest="eta_bin_size", type=float, default=5.0, help="η bin, deg")),
    ("-Threshold", "--threshold", dict(dest="threshold", type=float, default=0.0,
                                       help="ring threshold on the background-subtracted image (0 = auto)")),
    ("-NoMedian", "--no-median", dict(dest="no_median", type=int, default=0, choices=(0, 1),
                                      help="1 = skip the median background")),
    ("-MakePlots", "--make-plots", dict(dest="make_plots", type=int, default=0, choices=(0, 1),
                                        help="1 = write PNG figures to the output folder")),
    ("-SavePlotsHDF", "--save-plots-hdf", dict(dest="save_plots_hdf", default="",
                                               help="HDF5 file receiving all intermediate arrays")),
)

EPILOG = """example:
  midas-ref simulate --scenario ge2048 --out demo
  midas-ref calibrate -dataFN demo/ge2048.tif -paramFN demo/params.txt --out-dir demo/cal
"""


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="calibrate the detector geometry from a calibrant image (AutoCalibrateZarr)",
        description="Automatic calibrant calibration: Lsd, beam centre, tilts and distortion p0–p3.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    for legacy, kebab, kwargs in FLAGS:
        parser.add_argument(legacy, kebab, **kwargs)
    parser.add_argument("--out-dir", default=".", help="folder for every output (default: current folder)")
    parser.add_argument("--nthreads", type=int, default=0, help="CPU threads (default: all)")
    parser.add_argument("--max-iterations", type=int, default=40, help="cap on refinement iterations")
    parser.add_argument("--optimizer", choices=("least-squares", "nelder-mead"), default="least-squares",
                        help="geometry optimiser (nelder-mead = legacy NLopt simplex on the L1 objective)")
    parser.add_argument("--panels", action="store_true",
                        help="after a converged calibration, refine per-panel shifts (midas-ref panels) when the "
                             "parameter file has a panel layout (NPanelsY/Z, PanelSizeY/Z, PanelGapsY/Z)")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the final status")
    parser.set_defaults(func=run)


def _zip_parameters(path):
    """Parameter-file entries carried by a MIDAS Zarr zip (renamed back to the parameter-file keys)."""
    from ..io import read_midas_zip

    _, _, zp = read_midas_zip(path)
    names = {"PixelSize": "px", "LatticeParameter": "LatticeConstant"}
    values = {}
    for key, value in zp.items():
        key = names.get(key, key)
        arr = np.asarray(value)
        if key in ("px", "Wavelength", "tx", "SpaceGroup", "SkipFrame", "Lsd", "RhoD"):
            values[key] = arr.ravel()[0].item()
        elif key == "LatticeConstant":
            values[key] = tuple(float(v) for v in arr.ravel()[:6])
        elif key == "ImTransOpt":
            opts = [int(v) for v in arr.ravel() if int(v) >= 0]
            if opts:
                values[key] = opts
    if "YCen" in zp and "ZCen" in zp:
        values["BC"] = (float(np.ravel(zp["YCen"])[0]), float(np.ravel(zp["ZCen"])[0]))
    return values


def _opt(value):
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


@dataclass
class Prepared:
    """Everything ``midas-ref calibrate`` sets up before the calibration itself (see :func:`prepare`).

    Attributes
    ----------
    data : Path
        The input image file.
    loaded : midas_ref.io.LoadedImage
        Image (dark-subtracted, ImTransOpt applied), mask and notes.
    base : Geometry
        Detector description and start values from the parameter file.
    rings : tuple of Ring
        Calibrant rings out to the farthest corner at the largest distance tried.
    settings : CalibrationSettings
    wavelength, space_group, lattice, skip, bad, gap
        Parameter-file values used for the outputs (Å, number, Å/deg, frames, sentinels).
    seconds_load : float
        Wall time of reading the image, s.
    """

    data: Path
    loaded: object
    base: object
    rings: tuple
    settings: object
    wavelength: float
    space_group: int
    lattice: tuple
    skip: int
    bad: float | None
    gap: float | None
    seconds_load: float


def prepare(args, say=lambda message: None) -> Prepared:
    """Read the parameter file and the image of parsed ``calibrate`` arguments; build rings and settings.

    The validation harness (``validation.runner``) calls this so that its cases run exactly the command's
    set-up. Raises :class:`~midas_ref.errors.MidasRefError` subclasses for bad input.
    """
    from .. import autocal
    from ..io import infer_file_type, load_image
    from ..params import Geometry, parse_parameter_text, read_parameter_file
    from ..refine import Tolerances
    from ..rings import ring_table

    data = Path(args.data_fn)
    if not data.exists():
        raise ImageReadError(f"{data}: no such file")
    kind = infer_file_type(data, {0: "zarr", 1: "hdf5", 2: "ge", 3: "tiff", None: None}[args.convert_file])
    pf = read_parameter_file(args.param_fn) if args.param_fn else parse_parameter_text("", "<no -paramFN>")
    if kind == "zarr":
        for key, value in _zip_parameters(data).items():
            if not pf.has(key):
                pf = pf.set(key, value)
    elif not args.param_fn:
        raise ParameterFileError("-paramFN is required for a non-Zarr input (SpaceGroup, LatticeParameter, "
                                 "Wavelength and px come from it)")
    pf.require("SpaceGroup", "LatticeConstant", "Wavelength", "px")
    im_trans = args.im_trans_opt if args.im_trans_opt is not None else (pf.get("ImTransOpt") or [0])
    bad = _opt(args.bad_px) if _opt(args.bad_px) is not None else pf.get("BadPxIntensity", None)
    gap = _opt(args.gap_px) if _opt(args.gap_px) is not None else pf.get("GapIntensity", None)
    skip = int(pf.get("SkipFrame", 0) or 0)
    say(f"reading {data} ({kind})")
    t0 = time.perf_counter()
    loaded = load_image(data, dark_path=args.dark_fn or None, file_type=kind,
                        n_pixels_y=pf.get("NrPixelsY", None), n_pixels_z=pf.get("NrPixelsZ", None),
                        data_type=pf.get("DataType", None) if kind == "raw" else None,
                        head_size=pf.get("HeadSize", None) if kind in ("raw", "ge") and pf.has("HeadSize") else None,
                        data_loc=args.data_loc or None, skip_frame=skip, im_trans_opt=im_trans,
                        bad_px_intensity=bad, gap_intensity=gap, mask_file=pf.get("MaskFile", None))
    t_load = time.perf_counter() - t0
    for note in loaded.notes:
        say(f"  note: {note}")
    image, mask = loaded.image, loaded.mask
    rows, cols = image.shape
    wavelength = float(pf.get("Wavelength"))
    space_group = int(pf.get("SpaceGroup"))
    lattice = tuple(pf.get("LatticeConstant"))
    px = float(pf.get("px"))
    rho_d = pf.get("RhoD", None)
    base = Geometry(lsd_um=float(pf.get("Lsd", 1e6) or 1e6), bc_y_px=cols / 2, bc_z_px=rows / 2, px_um=px,
                    n_pixels_y=cols, n_pixels_z=rows, tx_deg=float(pf.get("tx", 0.0) or 0.0),
                    ty_deg=float(pf.get("ty", 0.0) or 0.0), tz_deg=float(pf.get("tz", 0.0) or 0.0),
                    p0=pf.get("p0", 0.0), p1=pf.get("p1", 0.0), p2=pf.get("p2", 0.0), p3_deg=pf.get("p3", 0.0),
                    rho_d_um=rho_d)
    # the ring list reaches the farthest corner of the detector at the largest distance we may try
    lsd_hint = args.lsd_guess or (pf.get("Lsd") if pf.has("Lsd") else None)
    bc_hint = tuple(args.bc_guess) if args.bc_guess and args.bc_guess[0] != 0 else (
        tuple(pf.get("BC")) if pf.has("BC") else None)
    diag_um = math.hypot(rows, cols) * px * 2
    rings = ring_table(space_group, lattice, wavelength, lsd_um=1.0, rho_d_um=None,
                       d_min_angstrom=wavelength / (2 * math.sin(0.5 * math.atan(diag_um / (0.15 * (lsd_hint or 1e6))))))
    tol = Tolerances(lsd_um=pf.get("tolLsd"), bc_px=pf.get("tolBC"), tilts_deg=pf.get("tolTilts"),
                     p0=pf.get("tolP0"), p1=pf.get("tolP1"), p2=pf.get("tolP2"), p3_deg=pf.get("tolP3"),
                     p4=pf.get("tolP4") or pf.get("tolP"))
    settings = autocal.CalibrationSettings(
        eta_bin_deg=args.eta_bin_size, mult_factor=args.mult_factor, stopping_strain=args.stopping_strain,
        first_ring_nr=args.first_ring_nr, lsd_guess_um=lsd_hint, bc_guess_px=bc_hint, threshold=args.threshold,
        no_median=bool(args.no_median), max_iterations=args.max_iterations, optimizer=args.optimizer,
        tolerances=tol, distortion_order=int(pf.get("DistortionOrder", 4)),
        rings_to_exclude=tuple(pf.get("RingsToExclude") or ()))
    say(f"image {cols} × {rows} px, {int(mask.sum())} masked; calibrant space group {space_group}, "
        f"a = {lattice[0]:g} Å, λ = {wavelength:g} Å")
    return Prepared(data, loaded, base, tuple(rings), settings, wavelength, space_group, lattice, skip, bad, gap,
                    t_load)


def run(args) -> int:
    from .. import autocal, outputs
    from ..params import write_refined_params

    if args.nthreads:
        import numba

        numba.set_num_threads(max(1, min(args.nthreads, numba.config.NUMBA_NUM_THREADS)))
    say = (lambda *a: None) if args.quiet else (lambda msg: print(msg, file=sys.stderr, flush=True))
    t_start = time.perf_counter()
    prep = prepare(args, say)
    data, loaded, base, rings, settings = prep.data, prep.loaded, prep.base, prep.rings, prep.settings
    image, mask = loaded.image, loaded.mask
    wavelength, space_group, lattice = prep.wavelength, prep.space_group, prep.lattice
    skip, bad, gap, t_load = prep.skip, prep.bad, prep.gap, prep.seconds_load

    def progress(event, info):
        if event == "iteration":
            rec = info["record"]
            g = rec.geometry
            say(f"  iter {rec.iteration:2d} stage {rec.stage}: Lsd {g.lsd_um:.2f} BC {g.bc_y_px:.3f} {g.bc_z_px:.3f} "
                f"ty {g.ty_deg:.4f} tz {g.tz_deg:.4f} mean strain {rec.mean_strain * 1e6:.2f} µε "
                f"({rec.n_points} points, {rec.n_rings} rings, {rec.seconds:.2f} s)")
        elif event == "rings_rejected":
            say(f"  rejected rings {' '.join(map(str, info['rings']))}")
        else:
            say(f"  {event}…")

    result = autocal.calibrate(image, mask, base, rings, settings=settings, progress=progress)
    result.timings["load"] = t_load
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stem = data.name
    elapsed = time.perf_counter() - t_start
    start_geom = result.iterations[0].geometry if result.iterations else result.geometry
    n_eta = max(1, int(round(360 / args.eta_bin_size)))
    outputs.write_corr_csv(out / f"{stem}.corr.csv", result, start_geom)
    outputs.write_screen_out(out / "calibrant_screen_out.csv", result, n_eta_bins=n_eta, seconds=elapsed)
    if args.save_plots_hdf:
        outputs.save_plots_hdf(out / args.save_plots_hdf if not Path(args.save_plots_hdf).is_absolute()
                               else args.save_plots_hdf, result, image, input_name=str(data),
                               wavelength=wavelength, space_group=space_group)
    if args.make_plots:
        for path in outputs.make_plots(out, result, image, stem=stem):
            say(f"  wrote {path}")
    header = {"input": str(data), "file type": loaded.file_type, "dark": loaded.dark_path,
              "ImTransOpt": list(loaded.im_trans_opt), "masked pixels": int(mask.sum()),
              "parameter file": args.param_fn or "(none)", "settings": settings}
    outputs.write_autocal_log(out / "autocal.log", result, header=header)
    if result.converged:
        write_refined_params(out / "refined_MIDAS_params.txt", result.geometry, wavelength_angstrom=wavelength,
                             space_group=space_group, lattice=lattice, eta_bin_size_deg=args.eta_bin_size,
                             skip_frame=skip, im_trans_opt=list(loaded.im_trans_opt), bad_px_intensity=bad,
                             gap_intensity=gap)
    print(outputs.summary_text(result), end="", file=sys.stdout if result.converged else sys.stderr)
    if not result.converged:
        print(f"midas-ref calibrate: FAILED: {result.reason}", file=sys.stderr)
        return 1
    say(f"wrote {out / 'refined_MIDAS_params.txt'}")
    if args.panels:
        return _refine_panels(args, prep, result, out, say)
    return 0


def _refine_panels(args, prep, result, out: Path, say) -> int:
    """``--panels``: the panel refinement of ``midas-ref panels`` from the calibrated geometry."""
    from .. import outputs
    from ..panel_refine import refine_panels
    from ..panels import Panels, read_panel_shifts
    from ..params import panel_layout_from_params, read_parameter_file
    from .panels import settings_from_params

    if not args.param_fn:
        raise ParameterFileError("--panels needs -paramFN with the panel layout (NPanelsY/Z, PanelSizeY/Z, …)")
    pf = read_parameter_file(args.param_fn)
    layout = panel_layout_from_params(pf)
    if layout is None:
        raise ParameterFileError("--panels: the parameter file has no panel layout (NPanelsY, NPanelsZ > 0)",
                                 pf.path)
    if not pf.has("EtaBinSize"):
        pf = pf.set("EtaBinSize", args.eta_bin_size)
    settings = settings_from_params(pf, args.optimizer)
    name = pf.get("PanelShiftsFile", None) or "panelshifts.txt"
    shifts_path = out / Path(name).name
    start = read_panel_shifts(shifts_path, layout) if shifts_path.exists() else Panels.from_shifts(layout)
    say(f"panel refinement: {layout.n_panels} panels, {settings.n_iterations} iterations")

    def progress(event, info):
        rec = info["record"]
        say(f"  panels iter {rec.iteration}: mean strain {rec.mean_strain * 1e6:.3f} µε ({rec.n_points} points)")

    res = refine_panels(prep.loaded.image, prep.loaded.mask, result.geometry, start, prep.rings,
                        settings=settings, progress=progress)
    stem = prep.data.name
    for path in outputs.write_panel_outputs(out, shifts_path, res, pf.with_values(
            Folder=str(prep.data.parent.resolve())), stem=stem, start=result.geometry):
        say(f"wrote {path}")
    print(outputs.panel_report_text(res, settings=settings), end="")
    return 0
