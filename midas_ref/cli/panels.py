"""``midas-ref panels PARAMFILE [nCPUs]``: multi-panel refinement (the CalibrantPanelShiftsOMP command).

Reads the parameter file (refined global geometry, File I/O keys, panel keys), prints a boxed summary of
the parsed values, sets up (:func:`midas_ref.inputs.panel_inputs`), refines the global geometry together with per-panel corrections, and writes
``PanelShiftsFile`` (+ ``.shifts.tif``, ``.strain.tif``), ``refined_panel_params.txt`` (the input file with
the refined geometry), ``<FileStem>_convergence_history.csv`` and the corr.csv of the best iteration.
Exit codes: 0 done, 2 bad input.
"""

from __future__ import annotations

import argparse
import time

from . import job_console

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
    from ..atomic import OutputSet, check_output_dir, check_output_file
    from ..inputs import panel_inputs, panel_shifts_locations
    from ..panel_refine import refine_panels
    from ..params import read_parameter_file

    say = job_console(args.ncpus, args.quiet)
    t_start = time.perf_counter()
    out = check_output_dir(args.out_dir, "--out-dir")
    pf = read_parameter_file(args.param_file)
    check_output_file(panel_shifts_locations(pf, out)[0], "PanelShiftsFile")
    inputs = panel_inputs(pf, optimizer=args.optimizer, out_dir=out, say=say)
    say(boxed("midas-ref panels: parsed parameters", [(key, _value_text(pf.get(key))) for key in pf.keys()])
        .rstrip("\n"))
    settings = inputs.settings

    def progress(event, info):
        rec = info["record"]
        say(f"Iter {rec.iteration:2d}/{settings.n_iterations}  MeanStrain {rec.mean_strain * 1e6:8.3f}  "
            f"StdStrain {rec.std_strain * 1e6:8.3f}  ({rec.n_points} points, {rec.seconds:.1f} s)")

    result = refine_panels(inputs.series.image, inputs.series.mask, inputs.geometry, inputs.panels, inputs.rings,
                           settings=settings, doublet_rings=list(inputs.doublet_rings), progress=progress)
    elapsed = time.perf_counter() - t_start
    stem = str(pf.get("FileStem"))
    with OutputSet(out, "midas-ref-panels") as outset:
        outputs.write_panel_outputs(outset, inputs.shifts_path, result, pf, stem=stem, start=inputs.geometry)
        written = outset.commit()
    print(outputs.panel_report_text(result, settings=settings, seconds=elapsed), end="")
    for path in written:
        say(f"wrote {path}")
    return 0
