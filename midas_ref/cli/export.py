"""``midas-ref export``: write a MIDAS parameter file's geometry as a pyFAI PONI or a Fit2D file."""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..errors import GeometryError

EPILOG = """\
output: by default <stem>.poni (or <stem>.fit2d.txt) beside the parameter file; '-o -' writes to stdout.
The PONI file is pyFAI's version 2 (pyFAI.load reads it): dim1 = image rows = MIDAS Z,
dim2 = image columns; 2θ is identical at every pixel, pyFAI χ = 90° − MIDAS η. Fit2D values follow
pyFAI's getFit2D on the same image array. Neither format holds the distortion p0..p5 or per-panel
shifts, and Fit2D has no tx: these are refused unless --ignore-distortion / --ignore-panels /
--ignore-tx.

example:
  midas-ref export -paramFN refined_params.txt --format poni -o refined.poni
  python -c "import pyFAI; print(pyFAI.load('refined.poni'))"
"""

_SUFFIX = {"poni": ".poni", "fit2d": ".fit2d.txt"}
#: The converters' keyword arguments → this command's flags (in their refusals).
_FLAGS = {"ignore_distortion=True": "--ignore-distortion", "ignore_tx=True": "--ignore-tx"}


def register(subparsers) -> None:
    """Add the ``export`` parser to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "export", help="write the geometry of a parameter file as pyFAI PONI or Fit2D",
        description="Convert the geometry of a MIDAS parameter file to pyFAI PONI (v2) or Fit2D.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("-paramFN", "--param-fn", dest="param_fn", required=True, metavar="FILE",
                        help="MIDAS parameter file (Lsd, BC, tx/ty/tz, px, NrPixels..., Wavelength)")
    parser.add_argument("--format", choices=sorted(_SUFFIX), default="poni", help="output format (default poni)")
    parser.add_argument("-o", "--output", metavar="OUT",
                        help="output file, or '-' for stdout (default: <stem>.poni / <stem>.fit2d.txt "
                             "beside the parameter file)")
    parser.add_argument("--ignore-distortion", action="store_true",
                        help="drop non-zero p0..p5 instead of refusing")
    parser.add_argument("--ignore-tx", action="store_true",
                        help="fit2d only: drop a non-zero tx (η only) instead of refusing")
    parser.add_argument("--ignore-panels", action="store_true",
                        help="export the global geometry even though a PanelShiftsFile is set")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Read the parameter file, convert, write; returns the exit code."""
    from .. import convert
    from ..atomic import check_output_file, write_text_atomic
    from ..params import geometry_from_params, read_parameter_file

    pf = read_parameter_file(args.param_fn)
    param_path = Path(args.param_fn)
    out = None
    if args.output != "-":
        out = Path(args.output) if args.output else param_path.with_name(param_path.stem + _SUFFIX[args.format])
        check_output_file(out, "-o" if args.output else "output file")
    geometry = geometry_from_params(pf)
    pf.require("Wavelength")
    pf.require_positive("Wavelength")  # as calibrate validates what it reads
    wavelength = pf.get("Wavelength")
    if pf.get("PanelShiftsFile", None) and not args.ignore_panels:
        raise GeometryError(f"{args.param_fn}: per-panel shifts (PanelShiftsFile) cannot be expressed in "
                            f"{args.format}; pass --ignore-panels to export the global geometry only")
    try:
        if args.format == "poni":
            text = convert.poni_text(convert.midas_to_poni(
                geometry, wavelength, ignore_distortion=args.ignore_distortion))
        else:
            text = convert.fit2d_text(convert.midas_to_fit2d(
                geometry, wavelength, ignore_distortion=args.ignore_distortion, ignore_tx=args.ignore_tx))
    except GeometryError as exc:
        raise GeometryError(f"{args.param_fn}: {_in_user_words(str(exc))}") from exc
    if out is None:
        sys.stdout.write(text)
        return 0
    write_text_atomic(out, text)
    print(f"wrote {out}", file=sys.stderr)
    return 0


def _in_user_words(message: str) -> str:
    """A converter's refusal with its keyword arguments as flags and geometry fields as parameter-file keys."""
    from ..params import GEOMETRY_KEYS

    for name, flag in _FLAGS.items():
        message = message.replace(name, flag)
    for key, field_ in GEOMETRY_KEYS:
        for name in (field_ if isinstance(field_, tuple) else (field_,)):
            message = re.sub(rf"\b{re.escape(name)}\b", key, message)
    return message
