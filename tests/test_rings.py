"""Tests of :mod:`midas_ref.rings` (the GetHKLList replacement) and of ``midas-ref rings``.

Oracles: pyFAI's calibrant d-spacing tables (``shared/data/real/calibrants_pyfai/*.D``), the legacy
GetHKLList output ``hkls.csv`` of two golden cases (00074b47 ``%f`` and HEAD ``%.17g``), the truth rings of
a golden case, gemmi's own d-spacing, and a brute-force systematic-absence loop over the symmetry operations.
"""

from __future__ import annotations

import json
import math
import re

import gemmi
import numpy as np
import pytest
from conftest import shared_file
from hypothesis import given, settings
from hypothesis import strategies as st

from midas_ref.cli import main
from midas_ref.errors import RingTableError
from midas_ref.rings import (RING_MERGE_TOL_ANGSTROM, Ring, d_min_from_radius, read_hkls_csv, reflection_list,
                             ring_table, write_hkls_csv)

CEO2 = (5.411651,) * 3 + (90.0,) * 3
WAVELENGTH = 0.172979  # Å, the legacy golden cases

#: Ring match asked for against pyFAI (Å).
D_TOL_ANGSTROM = 1e-5
#: pyFAI prints d with 8 decimals (±5e-9 Å); the cubic cell we derive from the first row carries the same
#: rounding, so two roundings: 1.5e-8 Å.
PYFAI_D_PRECISION_ANGSTROM = 1.5e-8
#: GetHKLList@00074b47 prints %f: ±5e-7 in every float column (Å, Å⁻¹, degrees, µm).
LEGACY_F_PRECISION = 1e-6
#: GetHKLList@HEAD prints %.17g; it uses rounded deg↔rad constants (1e-15 relative): 1e-12 relative.
LEGACY_HEAD_RTOL = 1e-12

#: GetHKLList.c: ``double Epsilon = 0.0001`` — a new ring when d differs from the ring's first d by ≥ this (Å).
GHL_EPSILON_ANGSTROM = 1e-4

PYFAI_DIR = ("data", "real", "calibrants_pyfai")
CALIBRANTS = [("CeO2.D", 225), ("LaB6.D", 221), ("LaB6_SRM660c.D", 221), ("Si.D", 227),
              ("Si_SRM640e.D", 227), ("alpha_Al2O3.D", 167), ("alpha_Al2O3_SRM676a_2015.D", 167)]


# --- helpers -----------------------------------------------------------------------------------------------

def _read_pyfai(name):
    """Header cell, relative rounding of the printed a, and the rows (d, (h k l), multiplicity) of a .D file."""
    text = shared_file(*PYFAI_DIR, name).read_text(encoding="utf-8")
    cell_line = next(line for line in text.splitlines() if line.startswith("# Cell:"))
    lengths = [re.search(rf"\b{x}=([0-9.]+)", cell_line).group(1) for x in "abc"]
    angles = [re.search(rf"(?:{g}|{n})=([0-9.]+)", cell_line).group(1)
              for g, n in (("α", "alpha"), ("β", "beta"), ("γ", "gamma"))]
    decimals = len(lengths[0].partition(".")[2])
    rows = [re.match(r"\s*([0-9.]+)\s*#\s*\(([-\d ]+)\)\s+(\d+)", line)
            for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    d = np.array([float(m.group(1)) for m in rows])
    hkl = [tuple(int(i) for i in m.group(2).split()) for m in rows]
    mult = np.array([int(m.group(3)) for m in rows])
    assert np.all(np.diff(d) < 0), "pyFAI table not sorted by decreasing d"
    return dict(lattice=tuple(float(x) for x in lengths + angles),
                a_rounding=0.5 * 10.0 ** -decimals, d=d, hkl=hkl, mult=mult)


def _ghl_groups(d):
    """(start, end) of each ring of d (sorted decreasing) by GetHKLList's rule, written independently."""
    groups, start = [], 0
    for i in range(1, len(d) + 1):
        if i == len(d) or d[start] - d[i] >= GHL_EPSILON_ANGSTROM:
            groups.append((start, i))
            start = i
    return groups


def _diamond_site_absent(hkl):
    """Extra absences of the diamond structure (Si on 8a of Fd-3m): h, k, l all even with h+k+l ≡ 2 (mod 4)."""
    hkl = np.asarray(hkl)
    return np.all(hkl % 2 == 0, axis=1) & (hkl.sum(axis=1) % 4 == 2)


def _our_groups(space_group, lattice, d_min, drop_diamond_site_absences=False):
    """Our reflections ≥ d_min, optionally without the diamond-site absences, grouped by the GHL rule."""
    refl = reflection_list(space_group, lattice, WAVELENGTH, d_min_angstrom=d_min)
    if not drop_diamond_site_absences:  # our own ring numbering
        rings = refl.rings()
        return (np.array([r.d_angstrom for r in rings]), np.array([r.multiplicity for r in rings]),
                [set(map(tuple, hkl)) for hkl in np.split(refl.hkl, np.flatnonzero(np.diff(refl.ring_nr)) + 1)])
    keep = ~_diamond_site_absent(refl.hkl)
    d, hkl = refl.d_angstrom[keep], refl.hkl[keep]
    groups = _ghl_groups(d)
    return (np.array([d[s] for s, _ in groups]), np.array([e - s for s, e in groups]),
            [{tuple(h) for h in hkl[s:e]} for s, e in groups])


def _pyfai_groups(table):
    groups = _ghl_groups(table["d"])
    return (np.array([table["d"][s] for s, _ in groups]), np.array([table["mult"][s:e].sum() for s, e in groups]),
            [table["hkl"][s:e] for s, e in groups])


def _table_lattice(table, space_group):
    """Cell the table was computed with: cubic a = d·√(h²+k²+l²) of the first row (headers round a)."""
    if space_group == 167:
        return table["lattice"]
    h = np.array(table["hkl"][0])
    a = table["d"][0] * math.sqrt(h @ h)
    return (a, a, a, 90.0, 90.0, 90.0)


def _legacy_params(case):
    """Key → value text of a golden case's params_calibrant.txt (first value only)."""
    text = shared_file("legacy", case, "params_calibrant.txt").read_text()
    return {line.split()[0]: line.split()[1:] for line in text.splitlines() if line.strip()}


def _lattice_for(space_group):
    """A cell obeying the metric symmetry of the space group's default setting."""
    system = gemmi.find_spacegroup_by_number(space_group).crystal_system_str()
    return {"triclinic": (5.1, 6.2, 7.3, 81.0, 95.0, 103.0), "monoclinic": (5.1, 6.2, 7.3, 90.0, 103.0, 90.0),
            "orthorhombic": (5.1, 6.2, 7.3, 90.0, 90.0, 90.0), "tetragonal": (5.1, 5.1, 7.3, 90.0, 90.0, 90.0),
            "trigonal": (5.1, 5.1, 7.3, 90.0, 90.0, 120.0), "hexagonal": (5.1, 5.1, 7.3, 90.0, 90.0, 120.0),
            "cubic": (5.1, 5.1, 5.1, 90.0, 90.0, 90.0)}[system]


# --- pyFAI calibrant tables --------------------------------------------------------------------------------
# pyFAI lists distinct d's as separate lines even when they are closer than 1e-4 Å (CeO2.D has 376 such
# neighbours below 0.2 Å); GetHKLList's rule merges them into one ring. We therefore group pyFAI's lines with
# the same rule and compare group by group: first d of each group, and the multiplicities summed over the group.
# pyFAI's Si tables come from the diamond structure factor, which also removes all-even h+k+l ≡ 2 (mod 4)
# ((2 2 2), (4 4 2), ...): these are site absences, not space-group absences, and GetHKLList (hence we) lists
# them. For Si we drop them from our list before grouping; test_si_extra_rings_are_the_diamond_site_absences
# checks that they are exactly the difference.

@pytest.mark.parametrize("name, space_group", CALIBRANTS)
def test_pyfai_rings_match_with_the_header_cell(name, space_group):
    table = _read_pyfai(name)
    # The headers print a rounded to 4 decimals (LaB6: 4.1568 for the table's 4.156826, 2.6e-5 Å at d = 4.16):
    # allow that rounding, relative, on top of the 1e-5 Å asked for.
    rel = table["a_rounding"] / table["lattice"][0]
    ours_d, ours_mult, _ = _our_groups(space_group, table["lattice"], table["d"][-1] * (1 - 2 * rel) - 1e-8,
                                       drop_diamond_site_absences=space_group == 227)
    file_d, _, _ = _pyfai_groups(table)
    assert len(ours_d) == len(file_d)
    assert np.all(np.abs(ours_d - file_d) <= D_TOL_ANGSTROM + rel * file_d)


@pytest.mark.parametrize("name, space_group", CALIBRANTS)
def test_pyfai_rings_and_multiplicities_match_to_file_precision(name, space_group):
    table = _read_pyfai(name)
    lattice = _table_lattice(table, space_group)
    header_a = table["lattice"][0]
    assert abs(lattice[0] - header_a) <= table["a_rounding"] + 1e-7  # the header is this cell, rounded
    ours_d, ours_mult, ours_hkl = _our_groups(space_group, lattice, table["d"][-1] - 1e-7,
                                              drop_diamond_site_absences=space_group == 227)
    file_d, file_mult, file_hkl = _pyfai_groups(table)
    assert len(ours_d) == len(file_d)  # no ring missing on either side
    assert np.max(np.abs(ours_d - file_d)) <= PYFAI_D_PRECISION_ANGSTROM
    if name == "alpha_Al2O3.D":
        # pyFAI's older corundum table labels and counts reflections in the hexagonal Laue class 6/mmm, ignoring
        # the rhombohedral centring: (1 0 2) is absent in R-3c:H (−h+k+l ≠ 3n), and its multiplicities are
        # the 6/mmm orbit sizes, twice ours for 20 of the 31 rings. SRM676a's table agrees with ours.
        p6mmm = gemmi.find_spacegroup_by_number(191).operations().sym_ops
        orbit = [len({tuple(op.apply_to_hkl(list(h))) for op in p6mmm} | {tuple(-np.array(op.apply_to_hkl(list(h))))
                                                                           for op in p6mmm}) for h in table["hkl"]]
        assert list(table["mult"]) == orbit
        assert np.all((file_mult == ours_mult) | (file_mult == 2 * ours_mult))
        assert (1, 0, 2) not in set().union(*ours_hkl) and (0, 1, 2) in ours_hkl[0]
        return
    np.testing.assert_array_equal(ours_mult, file_mult)
    for labels, ours in zip(file_hkl, ours_hkl):  # pyFAI's label of each line is one of our ring's reflections
        assert set(labels) <= ours


def test_si_extra_rings_are_the_diamond_site_absences():
    table = _read_pyfai("Si.D")
    lattice = _table_lattice(table, 227)
    refl = reflection_list(227, lattice, WAVELENGTH, d_min_angstrom=table["d"][-1] - 1e-7)
    site_absent = _diamond_site_absent(refl.hkl)
    extra = [ring for ring in refl.rings() if site_absent[refl.ring_nr == ring.ring_nr].all()]
    assert [ring.hkl for ring in extra[:3]] == [(2, 2, 2), (4, 4, 2), (6, 2, 2)]
    for ring in extra:  # none of their reflections is a line of pyFAI's table
        ring_d = refl.d_angstrom[refl.ring_nr == ring.ring_nr]
        assert np.min(np.abs(table["d"][:, None] - ring_d[None, :])) > PYFAI_D_PRECISION_ANGSTROM


# --- legacy GetHKLList hkls.csv -----------------------------------------------------------------------------

@pytest.mark.parametrize("case, head_format", [("ceo2_1024_ge_dark", False), ("ceo2_2048_tilt_dist", True)])
def test_legacy_hkls_csv_is_reproduced(case, head_format):
    legacy = read_hkls_csv(shared_file("legacy", case, "hkls.csv"))
    params = _legacy_params(case)
    # GetHKLList ran on this parameter file: Radius is Lsd·tan 2θ with its Lsd (1 002 000 µm, the start value),
    # not the truth Lsd (1e6 µm) of truth.json.
    lsd, rho_d = float(params["Lsd"][0]), float(params["RhoD"][0])
    ours = reflection_list(int(params["SpaceGroup"][0]), [float(x) for x in params["LatticeConstant"]],
                           float(params["Wavelength"][0]), lsd_um=lsd, rho_d_um=rho_d)
    assert len(ours) == len(legacy)
    order_ours, order_legacy = np.lexsort(ours.hkl.T), np.lexsort(legacy.hkl.T)  # GHL's qsort order is arbitrary
    np.testing.assert_array_equal(ours.hkl[order_ours], legacy.hkl[order_legacy])
    np.testing.assert_array_equal(ours.ring_nr[order_ours], legacy.ring_nr[order_legacy])
    for name in ("d_angstrom", "two_theta_deg", "radius_um", "g_per_angstrom"):
        mine, theirs = getattr(ours, name)[order_ours], getattr(legacy, name)[order_legacy]
        if head_format:
            np.testing.assert_allclose(mine, theirs, rtol=LEGACY_HEAD_RTOL, atol=1e-15, err_msg=name)
        else:
            np.testing.assert_allclose(mine, theirs, rtol=0, atol=LEGACY_F_PRECISION, err_msg=name)
    assert [(r.ring_nr, r.multiplicity) for r in ours.rings()] == \
        [(r.ring_nr, r.multiplicity) for r in legacy.rings()]


def test_truth_rings_of_golden_case():
    truth = json.loads(shared_file("legacy", "ceo2_2048_tilt_dist", "truth.json").read_text())
    rings = ring_table(225, CEO2, truth["wavelength"], lsd_um=truth["lsd"], rho_d_um=truth["rhod"])
    assert len(rings) == len(truth["rings"])
    for ring, expected in zip(rings, truth["rings"]):
        assert ring.hkl == tuple(expected["hkl"]) and ring.multiplicity == expected["mult"]
        assert ring.d_angstrom == pytest.approx(expected["d"], rel=1e-14)
        assert ring.two_theta_deg == pytest.approx(expected["two_theta"], rel=1e-12)
        assert ring.radius_um == pytest.approx(expected["R"], rel=1e-12)


def test_hkls_csv_round_trip(tmp_path):
    ours = reflection_list(167, (4.7570, 4.7570, 12.9877, 90, 90, 120), WAVELENGTH, lsd_um=9e5, rho_d_um=2e5)
    write_hkls_csv(tmp_path / "hkls.csv", ours)
    back = read_hkls_csv(tmp_path / "hkls.csv")
    for name in ("hkl", "ring_nr", "d_angstrom", "two_theta_deg", "radius_um", "g_per_angstrom"):
        np.testing.assert_array_equal(getattr(back, name), getattr(ours, name), err_msg=name)  # %.17g is exact
    assert back.rings() == ours.rings()
    write_hkls_csv(tmp_path / "old.csv", ours, float_format="%f")
    old = read_hkls_csv(tmp_path / "old.csv")
    np.testing.assert_allclose(old.d_angstrom, ours.d_angstrom, atol=5e-7, rtol=0)
    first = (tmp_path / "hkls.csv").read_text().splitlines()[:2]
    assert first[0] == "h k l D-spacing RingNr g1 g2 g3 Theta 2Theta Radius"
    assert re.fullmatch(r"-?\d+ -?\d+ -?\d+ \S+ 1( \S+){6}", first[1])


def test_read_hkls_csv_errors(tmp_path):
    with pytest.raises(RingTableError, match="cannot read"):
        read_hkls_csv(tmp_path / "absent.csv")
    (tmp_path / "bad.csv").write_text("h k l\n1 1 1\n")
    with pytest.raises(RingTableError, match="not an hkls.csv"):
        read_hkls_csv(tmp_path / "bad.csv")
    (tmp_path / "short.csv").write_text("h k l D-spacing RingNr g1 g2 g3 Theta 2Theta Radius\n1 1 1 3.1 1\n")
    with pytest.raises(RingTableError, match="columns"):
        read_hkls_csv(tmp_path / "short.csv")


# --- enumeration, absences, numbering ------------------------------------------------------------------------

@pytest.mark.parametrize("space_group", range(1, 231))
def test_reflections_match_brute_force_over_symmetry_operations(space_group):
    """Our list = every hkl ≠ 0 with gemmi's d ≥ d_min that no operation (W, t) with hW = h, h·t ∉ ℤ extinguishes."""
    lattice, d_min = _lattice_for(space_group), 1.3
    refl = reflection_list(space_group, lattice, WAVELENGTH, d_min_angstrom=d_min)
    box = np.array(np.meshgrid(*[np.arange(-6, 7)] * 3, indexing="ij")).reshape(3, -1).T
    box = box[np.any(box != 0, axis=1)]
    d_gemmi = gemmi.UnitCell(*lattice).calculate_d_array(box.astype(np.int32))
    box, d_gemmi = box[d_gemmi >= d_min], d_gemmi[d_gemmi >= d_min]
    absent = np.zeros(len(box), bool)
    for op in gemmi.find_spacegroup_by_number(space_group).operations():
        rot, tran = np.array(op.rot) // gemmi.Op.DEN, np.array(op.tran) / gemmi.Op.DEN
        phase = box @ tran
        absent |= np.all(box @ rot == box, axis=1) & (np.abs(phase - np.rint(phase)) > 1e-9)
    expected = {tuple(h): d for h, d in zip(box[~absent], d_gemmi[~absent])}
    assert set(map(tuple, refl.hkl)) == set(expected)
    np.testing.assert_allclose(refl.d_angstrom, [expected[tuple(h)] for h in refl.hkl], rtol=1e-13)
    # the first ring diffracts up to λ = 2·d_max and not beyond
    d_max = refl.d_angstrom[0]
    assert ring_table(space_group, lattice, 2 * d_max * (1 - 1e-9))[0].d_angstrom == d_max
    with pytest.raises(RingTableError, match="2·d_max"):
        ring_table(space_group, lattice, 2 * d_max * (1 + 1e-9))


def _hkls(space_group, lattice):
    return set(map(tuple, reflection_list(space_group, lattice, WAVELENGTH, d_min_angstrom=0.8).hkl))


def test_systematic_absences_ceo2():
    hkls = _hkls(225, CEO2)
    assert not {(1, 0, 0), (1, 1, 0), (2, 1, 0), (0, 1, 0), (-2, 1, 0)} & hkls
    assert {(1, 1, 1), (2, 0, 0), (2, 2, 0), (-3, 1, 1)} <= hkls


def test_systematic_absences_si():
    hkls = _hkls(227, (5.4312,) * 3 + (90.0,) * 3)
    assert not {(2, 0, 0), (0, 0, 2), (4, 2, 0), (1, 1, 0)} & hkls  # d-glide / F centring
    # (2 2 2) is NOT a space-group absence of Fd-3m (hhl: h+l = 2n): it vanishes only because Si sits on 8a.
    # GetHKLList lists it as Si ring 4, and so do we, to keep GetHKLList's ring numbers.
    assert {(1, 1, 1), (2, 2, 0), (4, 0, 0), (2, 2, 2)} <= hkls
    assert ring_table(227, (5.4312,) * 3 + (90.0,) * 3, WAVELENGTH, d_min_angstrom=1.5)[3].hkl == (2, 2, 2)


def test_ring_numbering_follows_the_ghl_rule():
    assert RING_MERGE_TOL_ANGSTROM == GHL_EPSILON_ANGSTROM
    # CeO2 down to 0.1 Å: hundreds of distinct d's closer than 1e-4 Å that the rule merges (chains included).
    refl = reflection_list(225, CEO2, WAVELENGTH, d_min_angstrom=0.1)
    expected = np.concatenate([np.full(e - s, n) for n, (s, e) in enumerate(_ghl_groups(refl.d_angstrom), 1)])
    np.testing.assert_array_equal(refl.ring_nr, expected)
    assert len(np.unique(refl.d_angstrom.round(12))) > refl.ring_nr[-1]  # merging did happen


@settings(max_examples=40, deadline=None)
@given(a=st.floats(3.0, 8.0), c_over_a=st.floats(0.5, 3.0), space_group=st.sampled_from([139, 167, 191, 194]))
def test_ring_invariants_for_realistic_cells(a, c_over_a, space_group):
    system = gemmi.find_spacegroup_by_number(space_group).crystal_system_str()
    lattice = (a, a, a * c_over_a, 90.0, 90.0, 120.0 if system in ("trigonal", "hexagonal") else 90.0)
    refl = reflection_list(space_group, lattice, WAVELENGTH, d_min_angstrom=a / 6)
    d, nr = refl.d_angstrom, refl.ring_nr
    assert nr[0] == 1 and set(np.diff(nr)) <= {0, 1} and np.all(np.diff(d) <= 0)
    rings = refl.rings()
    firsts = np.array([r.d_angstrom for r in rings])
    assert np.all(-np.diff(firsts) >= RING_MERGE_TOL_ANGSTROM)
    assert np.all(firsts[nr - 1] - d < RING_MERGE_TOL_ANGSTROM)
    hkls = set(map(tuple, refl.hkl))
    assert {(-h, -k, -l) for h, k, l in hkls} == hkls  # Friedel mates included
    assert sum(r.multiplicity for r in rings) == len(refl)


def test_two_theta_and_radius():
    lsd = 1.5e6
    rings = ring_table(225, CEO2, WAVELENGTH, lsd_um=lsd, rho_d_um=3e5)
    d = np.array([r.d_angstrom for r in rings])
    two_theta = np.array([r.two_theta_deg for r in rings])
    np.testing.assert_allclose(2 * d * np.sin(np.radians(two_theta / 2)), WAVELENGTH, rtol=1e-14)  # Bragg
    np.testing.assert_allclose([r.radius_um for r in rings], lsd * np.tan(np.radians(two_theta)), rtol=1e-14)
    assert math.isnan(ring_table(225, CEO2, WAVELENGTH, d_min_angstrom=2.0)[0].radius_um)  # no Lsd


def test_d_min_cut_from_rho_d():
    lsd, rho_d = 1.002e6, 145522.7514858072  # the 1024 golden case: 8 rings
    rings = ring_table(225, CEO2, WAVELENGTH, lsd_um=lsd, rho_d_um=rho_d)
    everything = ring_table(225, CEO2, WAVELENGTH, lsd_um=lsd, d_min_angstrom=0.5)
    assert len(rings) == 8 and rings == everything[:8]
    assert rings[-1].radius_um <= rho_d < everything[8].radius_um
    d_min = d_min_from_radius(WAVELENGTH, lsd, rho_d)
    assert lsd * math.tan(2 * math.asin(WAVELENGTH / (2 * d_min))) == pytest.approx(rho_d, rel=1e-12)
    # d ≥ d_min is inclusive: a cut exactly at a ring's d keeps that ring (index bounds a/d_min included).
    # (The cut is per reflection, as GetHKLList's: members of a merged ring 1 ulp below its first d go.)
    for ring in ring_table(225, CEO2, WAVELENGTH, d_min_angstrom=0.6):
        cut = ring_table(225, CEO2, WAVELENGTH, d_min_angstrom=ring.d_angstrom)
        assert [r.ring_nr for r in cut] == list(range(1, ring.ring_nr + 1))
        assert cut[-1].d_angstrom == ring.d_angstrom
    # with both cuts the stricter wins
    assert ring_table(225, CEO2, WAVELENGTH, lsd_um=lsd, rho_d_um=rho_d, d_min_angstrom=1.6) == rings[:4]


def test_exclusion_keeps_ring_numbers():
    full = ring_table(225, CEO2, WAVELENGTH, d_min_angstrom=1.0)
    kept = ring_table(225, CEO2, WAVELENGTH, d_min_angstrom=1.0, rings_to_exclude=[2, 5, 99])
    assert [r.ring_nr for r in kept] == [1, 3, 4, 6, 7, 8, 9, 10]
    assert kept == [r for r in full if r.ring_nr not in (2, 5)]
    assert ring_table(225, CEO2, WAVELENGTH, d_min_angstrom=1.0, rings_to_exclude=[1], max_rings=2) == full[1:3]
    assert ring_table(225, CEO2, WAVELENGTH, d_min_angstrom=1.0, rings_to_exclude=range(1, 11)) == []


def test_ring_is_frozen():
    ring = ring_table(225, CEO2, WAVELENGTH, d_min_angstrom=3.0)[0]
    assert ring == Ring(1, (1, 1, 1), 8, ring.d_angstrom, ring.two_theta_deg, ring.radius_um)
    with pytest.raises(AttributeError):
        ring.d_angstrom = 1.0


@pytest.mark.parametrize("args, kwargs, message", [
    ((0, CEO2, 0.2), {}, "unknown space group"),
    ((231, CEO2, 0.2), {}, "unknown space group"),
    (("Fm-3m", CEO2, 0.2), {}, "unknown space group"),
    ((225, CEO2[:5], 0.2), {}, "6 finite positive"),
    ((225, (5.4, 5.4, float("nan"), 90, 90, 90), 0.2), {}, "6 finite positive"),
    ((225, (5.4, 5.4, -5.4, 90, 90, 90), 0.2), {}, "6 finite positive"),
    ((2, (5.0, 6.0, 7.0, 10.0, 10.0, 170.0), 0.2), {}, "do not form a unit cell"),
    ((2, (5.0, 6.0, 7.0, 90.0, 90.0, 180.0), 0.2), {}, "do not form a unit cell"),
    ((225, (5.41, 5.42, 5.41, 90, 90, 90), 0.2), {}, "symmetry of space group 225"),
    ((123, (4.0, 4.0, 6.0, 90, 90, 91), 0.2), {}, "symmetry of space group 123"),
    ((167, (4.757, 4.757, 12.99, 90, 90, 90), 0.2), {}, "symmetry of space group 167"),
    ((167, (5.1, 5.1, 5.1, 55.3, 55.3, 55.3), 0.2), {}, "symmetry of space group 167"),  # rhombohedral axes
    ((14, (5.0, 6.0, 7.0, 90, 100, 95), 0.2), {}, "symmetry of space group 14"),
    ((225, CEO2, 0.0), {}, "wavelength must be finite and > 0 Å"),
    ((225, CEO2, float("nan")), {}, "wavelength must be finite and > 0 Å"),
    ((225, CEO2, 7.0), {}, r"2·d_max = 6.24884"),
    ((225, CEO2, 0.2), dict(lsd_um=1e6, rho_d_um=1e3), "no ring within RhoD"),
    ((225, CEO2, 0.2), dict(d_min_angstrom=3.2), "no ring with d ≥ d_min = 3.2 Å"),
    ((225, CEO2, 0.2), dict(rho_d_um=1e5), "RhoD.* needs the sample → detector distance"),
    ((225, CEO2, 0.2), dict(lsd_um=-1.0), "distance must be finite and > 0 µm"),
    ((225, CEO2, 0.01), {}, "more than 5000000 reflections"),
    ((225, CEO2, 0.2), dict(max_rings=-1), "max_rings"),
])
def test_bad_input_raises_ring_table_error(args, kwargs, message):
    with pytest.raises(RingTableError, match=message):
        ring_table(*args, **kwargs)


# --- midas-ref rings ------------------------------------------------------------------------------------------

def _param_file(tmp_path, drop=(), extra=""):
    text = shared_file("legacy", "ceo2_1024_ge_dark", "params_calibrant.txt").read_text()
    lines = [line for line in text.splitlines() if line.split()[0] not in drop]
    path = tmp_path / "params.txt"
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def test_cli_table(tmp_path, capsys):
    path = _param_file(tmp_path, extra="RingsToExclude 2\nRingsToExclude 5\n")
    assert main(["rings", "-paramFN", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:1] == ["RingNr"])
    assert lines[header].split() == ["RingNr", "h", "k", "l", "mult", "d", "[Å]", "2θ", "[deg]", "R", "[µm]",
                                     "R", "[px]", "excluded"]
    rows = [line.split() for line in lines[header + 1:]]
    assert [row[0] for row in rows] == [str(n) for n in range(1, 9)]  # RhoD 145 523 µm: 8 rings
    assert rows[0][:8] == ["1", "1", "1", "1", "8", "3.124418", "3.172505", "55538.17"]
    assert float(rows[0][8]) == pytest.approx(55538.17 / 200.0, abs=1e-3)  # px = 200 µm
    assert [row[-1] for row in rows] == ["no", "yes", "no", "no", "yes", "no", "no", "no"]
    assert len({len(line) for line in lines[header:]}) == 1  # aligned


def test_cli_csv_alias_and_hkls_csv(tmp_path, capsys):
    path = _param_file(tmp_path)
    out_csv = tmp_path / "out" / "hkls.csv"
    assert main(["rings", "--param-fn", str(path), "--format", "csv", "--hkls-csv", str(out_csv)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[:6] == ["ring_nr", "h", "k", "l", "multiplicity", "d_angstrom"]
    assert len(lines) == 9 and lines[2].startswith("2,2,0,0,6,2.705826,")
    written = read_hkls_csv(out_csv)
    legacy = read_hkls_csv(shared_file("legacy", "ceo2_1024_ge_dark", "hkls.csv"))
    assert len(written) == len(legacy) == 112
    assert [r.multiplicity for r in written.rings()] == [r.multiplicity for r in legacy.rings()]


def test_cli_without_rho_d_uses_farthest_corner(tmp_path, capsys):
    path = _param_file(tmp_path, drop=("RhoD",), extra="MaxRingNumber 3\n")
    assert main(["rings", "-paramFN", str(path)]) == 0
    out = capsys.readouterr().out
    # BC (516.8, 508.1), 1024² px of 200 µm: farthest corner (1023, 1023) → 145 904.66 µm
    assert "farthest detector corner = 145904.66 µm" in out
    assert [line.split()[0] for line in out.splitlines() if line[:1] == " "] == ["1", "2", "3"]


@pytest.mark.parametrize("drop, extra, message", [
    (("SpaceGroup",), "", "SpaceGroup"),
    (("LatticeConstant",), "LatticeConstant 5.41 5.42 5.41 90 90 90\n", "symmetry of space group 225"),
    (("RhoD",), "RhoD 10\n", "no ring within RhoD"),
])
def test_cli_bad_parameter_file(tmp_path, capsys, drop, extra, message):
    path = _param_file(tmp_path, drop=drop, extra=extra)
    assert main(["rings", "-paramFN", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith("midas-ref rings: error:") and message in err and "Traceback" not in err


def test_cli_missing_file(tmp_path, capsys):
    assert main(["rings", "-paramFN", str(tmp_path / "nope.txt")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and "nope.txt" in err
