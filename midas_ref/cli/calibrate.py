"""``midas-ref calibrate``: the AutoCalibrateZarr command line (every legacy flag, verbatim).

Parse → set up (:func:`midas_ref.inputs.calibration_inputs`) → calibrate (:func:`midas_ref.autocal.calibrate`)
→ write (:func:`midas_ref.outputs.write_calibration_outputs`). Legacy single-dash flags (``-dataFN``) and
``--kebab-case`` spellings share one destination; an option left out takes the library's default. Exit
codes: 0 converged, 1 the calibration FAILED (reason on stderr and in autocal.log; no refined parameter file
is written), 2 bad input, 3 SUSPECT (converged, but a check of the answer failed: the reasons on stderr and in
autocal.log; the refined parameter file is written).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

from . import job_console

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
    ("-StoppingStrain", "--stopping-strain", dict(dest="stopping_strain", type=float, default=None,
                                                  help="target mean strain (default 4e-5): a converged run above it ends with a "
                                                       "warning")),
    ("-MultFactor", "--mult-factor", dict(dest="mult_factor", type=float, default=None,
                                          help="ring rejected if its mean strain > MultFactor × median (default 2.5)")),
    ("-FirstRingNr", "--first-ring-nr", dict(dest="first_ring_nr", type=int, default=None,
                                             help="first ring (1-based) allowed for the innermost detected ring "
                                                  "(default 1)")),
    ("-LsdGuess", "--lsd-guess", dict(dest="lsd_guess", type=float, default=None,
                                      help="distance guess, µm (default 1000000 with a wide search)")),
    ("-BCGuess", "--bc-guess", dict(dest="bc_guess", type=float, nargs=2, default=None, metavar=("Y", "Z"),
                                    help="beam-centre guess, px (default: detected; 0 0 = detect)")),
    ("-EtaBinSize", "--eta-bin-size", dict(dest="eta_bin_size", type=float, default=None, help="η bin, deg (default 5)")),
    ("-Threshold", "--threshold", dict(dest="threshold", type=float, default=None,
                                       help="ring threshold on the background-subtracted image (default 0 = auto)")),
    ("-NoMedian", "--no-median", dict(dest="no_median", type=int, default=None, choices=(0, 1),
                                      help="1 = skip the median background")),
    ("-MakePlots", "--make-plots", dict(dest="make_plots", type=int, default=0, choices=(0, 1),
                                        help="1 = write PNG figures to the output folder")),
    ("-SavePlotsHDF", "--save-plots-hdf", dict(dest="save_plots_hdf", default="",
                                               help="HDF5 file receiving all intermediate arrays")),
)

EPILOG = """exit codes:
  0 CONVERGED   1 FAILED (no refined parameters written)   2 bad input
  3 SUSPECT: converged, but a check of the answer failed (wrong calibrant, wavelength, pixel size, image
    flip, spots instead of rings …); refined_MIDAS_params.txt is written, the reasons go to stderr
  130 / 143 interrupted (SIGINT / SIGTERM)

example:
  midas-ref simulate --scenario ge2048 --out demo --seed 1
  midas-ref calibrate -dataFN demo/CeO2_000001.tif -paramFN demo/params.txt --out-dir demo/cal
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
    parser.add_argument("--max-iterations", type=int, default=None, help="cap on refinement iterations (default 40)")
    parser.add_argument("--optimizer", choices=("least-squares", "nelder-mead"), default="least-squares",
                        help="geometry optimiser (nelder-mead = legacy NLopt simplex on the L1 objective)")
    parser.add_argument("--panels", action="store_true",
                        help="after a converged calibration, refine per-panel shifts (midas-ref panels) when the "
                             "parameter file has a panel layout (NPanelsY/Z, PanelSizeY/Z, PanelGapsY/Z)")
    parser.add_argument("--quiet", action="store_true", help="print only errors and the final status")
    parser.set_defaults(func=run)


def inputs_from_args(args, say=lambda message: None):
    """The set-up of parsed ``calibrate`` arguments: :func:`midas_ref.inputs.calibration_inputs`."""
    from ..inputs import calibration_inputs
    from ..io import CONVERT_FILE_TYPES

    return calibration_inputs(
        args.data_fn, args.param_fn or None, file_type=CONVERT_FILE_TYPES.get(args.convert_file),
        dark_path=args.dark_fn or None, data_loc=args.data_loc or None, im_trans_opt=args.im_trans_opt,
        bad_px_intensity=args.bad_px, gap_intensity=args.gap_px, say=say, eta_bin_deg=args.eta_bin_size,
        mult_factor=args.mult_factor, stopping_strain=args.stopping_strain, first_ring_nr=args.first_ring_nr,
        lsd_guess_um=args.lsd_guess, bc_guess_px=args.bc_guess, threshold=args.threshold,
        no_median=None if args.no_median is None else bool(args.no_median), max_iterations=args.max_iterations,
        optimizer=args.optimizer)


def run(args) -> int:
    from .. import autocal, outputs
    from ..atomic import OutputSet, check_output_dir, check_output_file
    from ..inputs import calibration_panel_job, panel_layout_or_error

    say = job_console(args.nthreads, args.quiet)
    t_start = time.perf_counter()
    # every input and output location is checked before the work starts
    out = check_output_dir(args.out_dir, "--out-dir")
    if args.save_plots_hdf:
        hdf = Path(args.save_plots_hdf)
        check_output_file(hdf if hdf.is_absolute() else out / hdf, "-SavePlotsHDF")
    if args.panels:
        panel_layout_or_error(args.param_fn)
    inputs = inputs_from_args(args, say)
    panel_job = calibration_panel_job(inputs, out, args.optimizer) if args.panels else None
    stem = inputs.data_path.name
    replaces = (*outputs.CALIBRATION_SET_NAMES, f"{stem}.corr.csv")
    with OutputSet(out, "midas-ref-calibrate", replaces=replaces) as outset, \
            outputs.AutocalLog(outset.path("autocal.log")) as log:
        log.header(outputs.calibration_log_header(inputs, param_name=args.param_fn or "(none)"))

        def progress(event, info):
            if event == "iteration":
                rec = info["record"]
                log.iteration(rec)
                g = rec.geometry
                say(f"  iter {rec.iteration:2d} stage {rec.stage}: Lsd {g.lsd_um:.2f} BC {g.bc_y_px:.3f} "
                    f"{g.bc_z_px:.3f} ty {g.ty_deg:.4f} tz {g.tz_deg:.4f} mean strain {rec.mean_strain * 1e6:.2f} µε "
                    f"({rec.n_points} points, {rec.n_rings} rings, {rec.seconds:.2f} s)")
            elif event == "guessed":
                log.guess(info["guess"])
            elif event == "distortion":
                log.distortion(info["selection"])
                say(f"  distortion: kept {', '.join(info['selection'].terms) or 'none'} "
                    f"(dropped {', '.join(info['selection'].dropped) or 'none'}; tests in autocal.log)")
            elif event == "rings_rejected":
                log.line(f"rejected rings {' '.join(map(str, info['rings']))}")
                say(f"  rejected rings {' '.join(map(str, info['rings']))}")
            else:
                say(f"  {event}…")

        result = autocal.calibrate(inputs.image, inputs.mask, inputs.base, inputs.rings, settings=inputs.settings,
                                   progress=progress)
        result.timings["load"] = inputs.seconds_load
        log.finish(result)
        outputs.write_calibration_outputs(
            outset, inputs, result, param_name=args.param_fn or "(none)", seconds=time.perf_counter() - t_start,
            plots_hdf=args.save_plots_hdf or None, make_figures=bool(args.make_plots), log=False)
        panel_report = None
        if result.converged and panel_job is not None:
            panel_report = _refine_panels(panel_job, inputs, result, outset, say)
        log.close()
        written = outset.commit()
    for path in written:
        say(f"  wrote {path}")
    print(outputs.summary_text(result), end="", file=sys.stdout if result.converged else sys.stderr)
    if result.status == "SUSPECT":
        print(f"midas-ref calibrate: SUSPECT: {result.reason}", file=sys.stderr)
        return 3
    if not result.converged:
        print(f"midas-ref calibrate: FAILED: {result.reason}", file=sys.stderr)
        return 1
    if panel_report is not None:
        print(panel_report, end="")
    return 0


def _refine_panels(job, inputs, result, outset, say) -> str:
    """The panel refinement of ``midas-ref panels`` from the calibrated geometry, into the same output set."""
    from .. import outputs
    from ..panel_refine import refine_panels

    say(f"panel refinement: {job.layout.n_panels} panels, {job.settings.n_iterations} iterations")

    def progress(event, info):
        rec = info["record"]
        say(f"  panels iter {rec.iteration}: mean strain {rec.mean_strain * 1e6:.3f} µε ({rec.n_points} points)")

    res = refine_panels(inputs.image, inputs.mask, result.geometry, job.start, inputs.rings, settings=job.settings,
                        progress=progress)
    outputs.write_panel_outputs(outset, job.shifts_path, res, job.params, stem=inputs.data_path.name,
                                start=result.geometry)
    return outputs.panel_report_text(res, settings=job.settings)
