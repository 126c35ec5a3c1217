"""``midas-ref rings``: the calibrant's ring table (the legacy ``GetHKLList``) from a parameter file."""

from __future__ import annotations

import argparse
import math
import sys

EPILOG = """\
keys read: SpaceGroup, LatticeConstant (or LatticeParameter), Wavelength; optional Lsd, RhoD (or
MaxRingRad), RingsToExclude, MaxRingNumber, px, BC, NrPixelsY/NrPixelsZ (or NrPixels).
Rings are cut at d_min = λ / (2 sin(½·atan(RhoD/Lsd))); without RhoD it is the distance from BC to the
farthest detector corner when BC, px and the detector size are given, otherwise there is no radius cut.
Without Lsd (the params.txt of `midas-ref simulate`) there are no radii ("-") and no radius cut.
Ring numbers are GetHKLList's: excluded rings keep their numbers and are marked, not removed.
--hkls-csv writes every reflection (all equivalents, excluded rings included) in the legacy hkls.csv format.

example:
  midas-ref rings -paramFN params_calibrant.txt
  midas-ref rings -paramFN params_calibrant.txt --format csv --hkls-csv hkls.csv > rings.csv
"""


def register(subparsers) -> None:
    """Add the ``rings`` parser to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "rings", help="list the calibrant rings (hkl, d, 2θ, radius) of a parameter file",
        description="Ring table of a calibrant: space group, lattice and wavelength from a MIDAS parameter "
                    "file; radii from Lsd, cut at RhoD (GetHKLList replacement).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False)
    parser.add_argument("-paramFN", "--param-fn", dest="param_fn", required=True, metavar="FILE",
                        help="MIDAS parameter file")
    parser.add_argument("--format", choices=("table", "csv"), default="table",
                        help="stdout format: aligned table (default) or CSV")
    parser.add_argument("--hkls-csv", metavar="OUT", help="also write the legacy hkls.csv to OUT")
    parser.set_defaults(func=run)


def _detector_rho_d_um(pf) -> float | None:
    """Beam centre → farthest corner (µm) when BC, px and the detector size are all given."""
    from ..detector import default_rho_d_um

    bc, px = pf.get("BC", None), pf.get("px", None)
    n_y, n_z = pf.get("NrPixelsY", None), pf.get("NrPixelsZ", None)
    if None in (bc, px, n_y, n_z):
        return None
    return default_rho_d_um(bc[0], bc[1], n_y, n_z, px)


def run(args: argparse.Namespace) -> int:
    """Read the parameter file, build the ring table, print it; returns the exit code."""
    from ..params import read_parameter_file
    from ..rings import d_min_from_radius, reflection_list, write_hkls_csv

    if args.hkls_csv:
        from ..atomic import check_output_file

        check_output_file(args.hkls_csv, "--hkls-csv")
    pf = read_parameter_file(args.param_fn)
    pf.require("SpaceGroup", "LatticeConstant", "Wavelength")
    pf.require_positive("Wavelength", "px", "Lsd", "RhoD")
    space_group, lattice = pf.get("SpaceGroup"), pf.get("LatticeConstant")
    wavelength = pf.get("Wavelength")
    lsd, rho_d = pf.get("Lsd", None), pf.get("RhoD", None)
    rho_d_source = "RhoD"
    if rho_d is None and lsd is not None:
        rho_d, rho_d_source = _detector_rho_d_um(pf), "farthest detector corner"
    # RhoD is a radius: without Lsd it gives no d-spacing cut (and no ring has a radius). The params.txt of
    # `midas-ref simulate` is like that (the geometry is what calibrate finds), and calibrate accepts it.
    unused_rho_d = rho_d if lsd is None else None
    if lsd is None:
        rho_d = None
    excluded = {int(n) for n in pf.get("RingsToExclude")}
    max_ring_nr = pf.get("MaxRingNumber", 0)
    px = pf.get("px", None)

    reflections = reflection_list(space_group, lattice, wavelength, lsd_um=lsd, rho_d_um=rho_d)
    rings = [r for r in reflections.rings() if not max_ring_nr or r.ring_nr <= max_ring_nr]
    if args.hkls_csv:
        write_hkls_csv(args.hkls_csv, reflections)

    columns = ["RingNr", "h", "k", "l", "mult", "d [Å]", "2θ [deg]", "R [µm]"]
    columns += ["R [px]"] if px else []
    columns += ["excluded"]
    rows = []
    for ring in rings:
        row = [str(ring.ring_nr), *(str(i) for i in ring.hkl), str(ring.multiplicity),
               f"{ring.d_angstrom:.6f}", f"{ring.two_theta_deg:.6f}", _num(ring.radius_um, 2)]
        row += [_num(ring.radius_um / px, 3)] if px else []
        row += ["yes" if ring.ring_nr in excluded else "no"]
        rows.append(row)

    if args.format == "csv":
        names = ["ring_nr", "h", "k", "l", "multiplicity", "d_angstrom", "two_theta_deg", "radius_um"]
        names += ["radius_px"] if px else []
        print(",".join(names + ["excluded"]))
        for row in rows:
            print(",".join("" if cell == "-" else cell for cell in row))
        return 0

    import gemmi

    if rho_d is not None:
        cut = (f"{rho_d_source} = {rho_d:.2f} µm at Lsd = {lsd:.2f} µm: d ≥ "
               f"{d_min_from_radius(wavelength, lsd, rho_d):.6f} Å")
    elif unused_rho_d is not None:
        cut = (f"no radius cut (d ≥ λ/2) and no radii: RhoD = {unused_rho_d:.2f} µm is given but no Lsd, "
               "and a radius needs the distance")
    elif lsd is None:
        cut = "no radius cut (d ≥ λ/2) and no radii: no Lsd"
    else:
        cut = "no radius cut (d ≥ λ/2): no RhoD, and BC, px, NrPixelsY/Z do not all give the detector edge"
    print(f"# space group {space_group} ({gemmi.find_spacegroup_by_number(space_group).xhm()}), "
          f"lattice {' '.join(f'{x:.10g}' for x in lattice)}, λ = {wavelength:g} Å")
    print(f"# {cut}; {len(rings)} rings, {sum(r.ring_nr in excluded for r in rings)} excluded"
          + (f"; rings above {max_ring_nr} dropped (MaxRingNumber)" if max_ring_nr else ""))
    if args.hkls_csv:
        print(f"# wrote {len(reflections)} reflections to {args.hkls_csv}")
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    print("  ".join(c.rjust(w) for c, w in zip(columns, widths)))
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths)))
    return 0


def _num(value: float, decimals: int) -> str:
    return "-" if math.isnan(value) else f"{value:.{decimals}f}"


if __name__ == "__main__":  # pragma: no cover
    from . import main

    sys.exit(main(["rings", *sys.argv[1:]]))
