"""Calibrant ring tables: hkl list, d-spacings, 2θ and ring radii (replaces the legacy ``GetHKLList``).

Reflections are every integer (h, k, l) ≠ 0 of the space group's default setting (gemmi's
``find_spacegroup_by_number``; e.g. 167 → ``R -3 c:H``, hexagonal axes) that is not a space-group
systematic absence, Friedel mates included, with d ≥ d_min. They are sorted by decreasing d and numbered
into rings by the GetHKLList rule (spec legacy_engine.md §2.2): a new ring starts when d differs from the
*first* d of the current ring by ≥ :data:`RING_MERGE_TOL_ANGSTROM`. Unlike GetHKLList the sort is exact
(no 1e-3 Å comparator, quirk Q15) and indices are not limited to ±10.

Only space-group absences are applied, as GetHKLList does: reflections that vanish because of the atoms'
special positions (e.g. Si (2 2 2), diamond structure) are listed, with GetHKLList's ring numbers.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import gemmi
import numpy as np

from .errors import RingTableError

__all__ = ["RING_MERGE_TOL_ANGSTROM", "Reflections", "Ring", "d_min_from_radius", "read_hkls_csv",
           "reflection_list", "ring_table", "write_hkls_csv"]

#: Reflections whose d differs from the first d of the current ring by less than this join the ring (GHL).
RING_MERGE_TOL_ANGSTROM = 1e-4
#: Lattice vs space group: largest allowed change of the metric tensor under a symmetry operation,
#: relative to its largest element (1e-6 ≈ 0.5 ppm in a length, 6e-5° in an angle).
METRIC_SYMMETRY_RTOL = 1e-6
#: Refuse tables larger than this (the reflection count grows as 1/d_min³).
MAX_REFLECTIONS = 5_000_000

HKLS_CSV_HEADER = "h k l D-spacing RingNr g1 g2 g3 Theta 2Theta Radius"


@dataclass(frozen=True)
class Ring:
    """One diffraction ring: all reflections merged by the GetHKLList rule.

    Attributes
    ----------
    ring_nr : int
        1-based GetHKLList ring number, counting every ring from the largest d (before exclusions).
    hkl : tuple of int
        Representative reflection: the one with the most non-negative indices, ties broken by the
        lexicographically largest (h, k, l); for cubic groups h ≥ k ≥ l ≥ 0, e.g. (3 1 1), (6 0 0).
    multiplicity : int
        Number of reflections in the ring (symmetry equivalents and Friedel mates of every merged family);
        the ring's intensity weight for multiplicity-weighted rendering.
    d_angstrom : float
        First (largest) d of the ring, Å.
    two_theta_deg : float
        2θ = 2·asin(λ / 2d) of that d, degrees.
    radius_um : float
        Lsd·tan 2θ, µm; NaN without Lsd or when 2θ ≥ 90°.
    """

    ring_nr: int
    hkl: tuple[int, int, int]
    multiplicity: int
    d_angstrom: float
    two_theta_deg: float
    radius_um: float


@dataclass(frozen=True, eq=False)
class Reflections:
    """Every reflection of a ring table, one row per hkl, in ``hkls.csv`` order (decreasing d).

    Attributes
    ----------
    hkl : ndarray of int64, shape (N, 3)
    g_per_angstrom : ndarray of shape (N, 3)
        Reciprocal vector B·hkl (Busing–Levy B, a* along x, as GetHKLList), Å⁻¹.
    d_angstrom, two_theta_deg, radius_um : ndarray of shape (N,)
        d (Å), 2θ (degrees), Lsd·tan 2θ (µm; NaN without Lsd or when 2θ ≥ 90°).
    ring_nr : ndarray of int64, shape (N,)
        GetHKLList ring number of each row; non-decreasing.
    """

    hkl: np.ndarray
    g_per_angstrom: np.ndarray
    d_angstrom: np.ndarray
    ring_nr: np.ndarray
    two_theta_deg: np.ndarray
    radius_um: np.ndarray

    def __post_init__(self):
        n = len(self.d_angstrom)
        for name in ("hkl", "g_per_angstrom", "d_angstrom", "ring_nr", "two_theta_deg", "radius_um"):
            dtype = np.int64 if name in ("hkl", "ring_nr") else np.float64
            arr = np.array(getattr(self, name), dtype=dtype)  # private, read-only copy
            want = (n, 3) if name in ("hkl", "g_per_angstrom") else (n,)
            if arr.shape != want:
                raise ValueError(f"Reflections.{name} has shape {arr.shape}, expected {want}")
            arr.flags.writeable = False
            object.__setattr__(self, name, arr)

    def __len__(self) -> int:
        return len(self.d_angstrom)

    def rings(self) -> list[Ring]:
        """Group the rows by ring number into :class:`Ring` objects (d, 2θ, R of each ring's first row)."""
        starts = np.flatnonzero(np.diff(self.ring_nr, prepend=-1) != 0)
        ends = np.append(starts[1:], len(self))
        rings = []
        for start, end in zip(starts, ends):
            hkl = self.hkl[start:end]
            nonneg = (hkl >= 0).sum(axis=1)
            cand = hkl[nonneg == nonneg.max()]
            best = cand[np.lexsort(cand.T[::-1])[-1]]
            radius = float(self.radius_um[start])
            rings.append(Ring(int(self.ring_nr[start]), tuple(int(i) for i in best), int(end - start),
                              float(self.d_angstrom[start]), float(self.two_theta_deg[start]),
                              math.nan if math.isnan(radius) else radius))  # one NaN object: rings compare equal
        return rings


def d_min_from_radius(wavelength_angstrom: float, lsd_um: float, rho_d_um: float) -> float:
    """Smallest d whose ring radius is ≤ ``rho_d_um``: λ / (2 sin(½·atan(RhoD/Lsd))), Å (GetHKLList cut)."""
    return wavelength_angstrom / (2.0 * math.sin(0.5 * math.atan(rho_d_um / lsd_um)))


def reflection_list(space_group: int, lattice, wavelength_angstrom: float, *, lsd_um: float | None = None,
                    rho_d_um: float | None = None, d_min_angstrom: float | None = None) -> Reflections:
    """List every reflection with d ≥ d_min, numbered into GetHKLList rings.

    Parameters
    ----------
    space_group : int
        Space-group number 1–230 (gemmi's default setting; trigonal R groups on hexagonal axes).
    lattice : sequence of 6 float
        a, b, c (Å), α, β, γ (degrees); must obey the space group's metric symmetry.
    wavelength_angstrom : float
        X-ray wavelength, Å.
    lsd_um : float, optional
        Sample-to-detector distance, µm; gives the radii (NaN without it).
    rho_d_um : float, optional
        Largest ring radius, µm (legacy ``RhoD``/``MaxRingRad``); needs ``lsd_um``. Cut at
        :func:`d_min_from_radius`.
    d_min_angstrom : float, optional
        Explicit cut. With several cuts the largest d_min wins; d ≥ λ/2 always.

    Returns
    -------
    Reflections
        One row per hkl, decreasing d (ties by decreasing h, k, l).

    Raises
    ------
    RingTableError
        Unknown space group; lattice not 6 finite positive numbers, impossible angles, or not obeying the
        space group's symmetry; bad wavelength, Lsd, RhoD or d_min; λ > 2·d_max (no reflection at all);
        no reflection with d ≥ d_min ("no ring within RhoD"); table too large.

    Examples
    --------
    >>> refl = reflection_list(225, (5.411651,) * 3 + (90.0,) * 3, 0.172979, d_min_angstrom=1.5)
    >>> [(r.ring_nr, r.hkl, r.multiplicity) for r in refl.rings()]
    [(1, (1, 1, 1), 8), (2, (2, 0, 0), 6), (3, (2, 2, 0), 12), (4, (3, 1, 1), 24), (5, (2, 2, 2), 8)]
    """
    ops = _space_group_ops(space_group)
    cell = _validate_lattice(lattice)
    _check_metric_symmetry(ops, cell, space_group)
    wavelength = _positive("wavelength", "Å", wavelength_angstrom)
    lsd = None if lsd_um is None else _positive("sample → detector distance", "µm", lsd_um)
    cuts = {"λ/2": wavelength / 2.0}
    if rho_d_um is not None:
        if lsd is None:
            raise RingTableError("a largest ring radius (RhoD) needs the sample → detector distance (Lsd) to "
                                 "give a d-spacing cut")
        cuts["RhoD"] = d_min_from_radius(wavelength, lsd, _positive("largest ring radius", "µm", rho_d_um))
    if d_min_angstrom is not None:
        cuts["d_min"] = _positive("smallest d-spacing d_min", "Å", d_min_angstrom)
    cut_name, d_min = max(cuts.items(), key=lambda item: item[1])

    b_matrix = _b_matrix(cell)
    hkl, g, d = _enumerate(ops, b_matrix, cell[:3], d_min)
    if len(d) == 0:
        d_max = _largest_d(ops, b_matrix, cell[:3])
        if wavelength > 2.0 * d_max:
            raise RingTableError(f"wavelength {wavelength:g} Å > 2·d_max = {2 * d_max:g} Å: no reflection "
                                 f"of space group {space_group} with this lattice can diffract")
        what = (f"within RhoD = {rho_d_um:g} µm at Lsd = {lsd:g} µm" if cut_name == "RhoD"
                else f"with d ≥ d_min = {d_min:g} Å")
        raise RingTableError(f"no ring {what} (cut d ≥ {d_min:.6g} Å; largest d is {d_max:.6g} Å)")
    order = np.lexsort((-hkl[:, 2], -hkl[:, 1], -hkl[:, 0], -d))
    hkl, g, d = hkl[order], g[order], d[order]
    two_theta = 2.0 * np.degrees(np.arcsin(wavelength / (2.0 * d)))
    if lsd is None:
        radius = np.full_like(d, np.nan)
    else:
        radius = np.where(two_theta < 90.0, lsd * np.tan(np.radians(two_theta)), np.nan)
    return Reflections(hkl, g, d, _number_rings(d), two_theta, radius)


def ring_table(space_group: int, lattice, wavelength_angstrom: float, *, lsd_um: float | None = None,
               rho_d_um: float | None = None, d_min_angstrom: float | None = None,
               rings_to_exclude=(), max_rings: int | None = None) -> list[Ring]:
    """Rings of a calibrant, largest d first, with GetHKLList ring numbers.

    Parameters are those of :func:`reflection_list`, plus:

    Parameters
    ----------
    rings_to_exclude : iterable of int
        Ring numbers to drop. Removed *after* numbering, so the remaining rings keep their numbers;
        numbers matching no ring are ignored (as the legacy programs do).
    max_rings : int, optional
        Return at most this many rings (counted after the exclusions).

    Returns
    -------
    list of Ring
        Possibly empty when every ring is excluded.

    Raises
    ------
    RingTableError
        As :func:`reflection_list`; also a negative ``max_rings``.

    Examples
    --------
    >>> rings = ring_table(225, (5.411651,) * 3 + (90.0,) * 3, 0.172979, lsd_um=1e6, rho_d_um=1e5,
    ...                    rings_to_exclude=[2])
    >>> [(r.ring_nr, r.hkl, round(r.radius_um, 1)) for r in rings]
    [(1, (1, 1, 1), 55427.3), (3, (2, 2, 0), 90686.6)]
    """
    rings = reflection_list(space_group, lattice, wavelength_angstrom, lsd_um=lsd_um, rho_d_um=rho_d_um,
                            d_min_angstrom=d_min_angstrom).rings()
    excluded = {int(n) for n in rings_to_exclude}
    rings = [ring for ring in rings if ring.ring_nr not in excluded]
    if max_rings is not None:
        if int(max_rings) < 0:
            raise RingTableError(f"the number of rings max_rings must be ≥ 0, got {max_rings}")
        rings = rings[:int(max_rings)]
    return rings


def write_hkls_csv(path: str | os.PathLike, reflections: Reflections, *, float_format: str = "%.17g") -> None:
    """Write the legacy ``hkls.csv`` atomically, one row per reflection.

    Header ``h k l D-spacing RingNr g1 g2 g3 Theta 2Theta Radius``; indices and RingNr as ``%.0f``, floats
    as ``float_format`` (``"%.17g"`` = GetHKLList@HEAD, ``"%f"`` = GetHKLList@00074b47). Theta = 2θ/2 in
    degrees, Radius in µm (``nan`` without Lsd).
    """
    from .atomic import atomic_output

    row = " ".join(["%.0f"] * 3 + [float_format, "%.0f"] + [float_format] * 6) + "\n"
    columns = np.column_stack([reflections.hkl, reflections.d_angstrom, reflections.ring_nr,
                               reflections.g_per_angstrom, reflections.two_theta_deg / 2.0,
                               reflections.two_theta_deg, reflections.radius_um])
    with atomic_output(path, "w", newline="\n") as handle:
        handle.write(HKLS_CSV_HEADER + "\n")
        handle.writelines(row % tuple(values) for values in columns.tolist())


def read_hkls_csv(path: str | os.PathLike) -> Reflections:
    """Read a legacy ``hkls.csv`` (``%f`` of GetHKLList@00074b47 or ``%.17g`` of HEAD, or ours).

    Raises
    ------
    RingTableError
        Missing file, wrong header, or rows that are not 11 numbers.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            header = handle.readline().split()
            if header != HKLS_CSV_HEADER.split():
                raise RingTableError(f"{path}: not an hkls.csv file (header {' '.join(header)!r})")
            table = np.loadtxt(handle, dtype=np.float64, ndmin=2)
    except OSError as exc:
        raise RingTableError(f"{path}: cannot read hkls.csv ({exc.strerror or exc})") from exc
    except ValueError as exc:
        raise RingTableError(f"{path}: malformed hkls.csv row ({exc})") from exc
    if table.size == 0:
        table = table.reshape(0, 11)
    if table.shape[1] != 11:
        raise RingTableError(f"{path}: hkls.csv rows have {table.shape[1]} columns, expected 11")
    return Reflections(np.rint(table[:, 0:3]), table[:, 5:8], table[:, 3], np.rint(table[:, 4]),
                       table[:, 9], table[:, 10])


# --- private helpers -------------------------------------------------------------------------------------

def _positive(quantity: str, unit: str, value) -> float:
    """``value`` as a float; a :class:`RingTableError` naming the quantity in words unless finite and > 0."""
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise RingTableError(f"{quantity} must be a number ({unit}), got {value!r}") from None
    if not (math.isfinite(x) and x > 0):
        raise RingTableError(f"{quantity} must be finite and > 0 {unit}, got {value!r}")
    return x


def _space_group_ops(space_group) -> gemmi.GroupOps:
    number = int(space_group) if isinstance(space_group, (int, np.integer)) else None
    if number is None or not 1 <= number <= 230:
        raise RingTableError(f"unknown space group {space_group!r}: give a number from 1 to 230")
    return gemmi.find_spacegroup_by_number(number).operations()


def _validate_lattice(lattice) -> tuple[float, ...]:
    try:
        cell = tuple(float(x) for x in lattice)
    except (TypeError, ValueError):
        raise RingTableError(f"lattice must be 6 numbers a b c α β γ, got {lattice!r}") from None
    if len(cell) != 6 or not all(math.isfinite(x) and x > 0 for x in cell):
        raise RingTableError(f"lattice must be 6 finite positive numbers a b c α β γ, got {lattice!r}")
    cos = [math.cos(math.radians(x)) for x in cell[3:]]
    volume2 = 1 - cos[0] ** 2 - cos[1] ** 2 - cos[2] ** 2 + 2 * cos[0] * cos[1] * cos[2]
    if max(cell[3:]) >= 180 or volume2 <= 1e-12:
        raise RingTableError(f"lattice angles {cell[3:]} (degrees) do not form a unit cell")
    return cell


def _check_metric_symmetry(ops: gemmi.GroupOps, cell, space_group: int) -> None:
    """Every rotation W of the group must keep the metric: Wᵀ G W = G (cubic ⇒ a = b = c, ...)."""
    b_matrix = _b_matrix(cell)
    metric = np.linalg.inv(b_matrix.T @ b_matrix)  # direct-space metric tensor, Å²
    for op in ops.sym_ops:
        rot = np.array(op.rot, dtype=np.float64) / gemmi.Op.DEN
        if np.max(np.abs(rot.T @ metric @ rot - metric)) > METRIC_SYMMETRY_RTOL * np.max(np.abs(metric)):
            sg = gemmi.find_spacegroup_by_number(space_group)
            raise RingTableError(f"lattice {cell} does not have the symmetry of space group {space_group} "
                                 f"({sg.xhm()}, {sg.crystal_system_str()})")


def _b_matrix(cell) -> np.ndarray:
    """Busing–Levy B (GetHKLList ``CorrectHKLsLatC``): g = B·hkl in Å⁻¹, a* along x, c along z."""
    a, b, c = cell[:3]
    al, be, ga = (math.radians(x) for x in cell[3:])
    volume = a * b * c * math.sqrt(1 - math.cos(al) ** 2 - math.cos(be) ** 2 - math.cos(ga) ** 2
                                   + 2 * math.cos(al) * math.cos(be) * math.cos(ga))
    a_r, b_r, c_r = b * c * math.sin(al) / volume, c * a * math.sin(be) / volume, a * b * math.sin(ga) / volume
    cos_be_r = (math.cos(ga) * math.cos(al) - math.cos(be)) / (math.sin(ga) * math.sin(al))
    cos_ga_r = (math.cos(al) * math.cos(be) - math.cos(ga)) / (math.sin(al) * math.sin(be))
    sin_be_r, sin_ga_r = math.sqrt(1 - cos_be_r ** 2), math.sqrt(1 - cos_ga_r ** 2)
    return np.array([[a_r, b_r * cos_ga_r, c_r * cos_be_r],
                     [0.0, b_r * sin_ga_r, -c_r * sin_be_r * math.cos(al)],
                     [0.0, 0.0, c_r * sin_be_r * math.sin(al)]])


def _enumerate(ops: gemmi.GroupOps, b_matrix: np.ndarray, lengths, d_min: float):
    """All non-absent hkl ≠ 0 with d ≥ d_min; |h| ≤ a/d_min since h = a·g. Returns (hkl, g, d)."""
    h_max, k_max, l_max = (int(x / d_min) + 1 for x in lengths)  # + 1: safe against rounding
    volume = abs(np.linalg.det(b_matrix)) ** -1
    if 4.0 / 3.0 * math.pi * volume / d_min ** 3 > MAX_REFLECTIONS:
        raise RingTableError(f"the d-spacing cut d ≥ {d_min:g} Å gives more than {MAX_REFLECTIONS} reflections; "
                             "give the distance and the largest ring radius (Lsd and RhoD) or a larger cut")
    k, l = np.meshgrid(np.arange(-k_max, k_max + 1), np.arange(-l_max, l_max + 1), indexing="ij")
    kl = np.column_stack([k.ravel(), l.ravel()])
    parts = []
    for h in range(-h_max, h_max + 1):
        hkl = np.column_stack([np.full(len(kl), h), kl])
        g = hkl @ b_matrix.T
        with np.errstate(divide="ignore"):
            d = 1.0 / np.sqrt(np.einsum("ni,ni->n", g, g))
        keep = (d >= d_min) & np.isfinite(d)  # hkl = 0 has d = inf
        keep[keep] = ~ops.systematic_absences(hkl[keep].astype(np.int32))
        parts.append((hkl[keep], g[keep], d[keep]))
    hkl, g, d = (np.concatenate(p) for p in zip(*parts))
    return hkl.astype(np.int64), g, d


def _largest_d(ops: gemmi.GroupOps, b_matrix: np.ndarray, lengths) -> float:
    """Largest d of any allowed reflection ((12 0 0) is allowed in every space group)."""
    _, _, d = _enumerate(ops, b_matrix, lengths, 0.9 / (12.0 * np.linalg.norm(b_matrix[:, 0])))
    _, _, d = _enumerate(ops, b_matrix, lengths, d.max())
    return float(d.max())


def _number_rings(d: np.ndarray) -> np.ndarray:
    """GetHKLList ring numbers of d sorted decreasing: new ring when d_first − d ≥ the merge tolerance."""
    ring_nr, neg_d = np.empty(len(d), dtype=np.int64), -d
    start, nr = 0, 1
    while start < len(d):
        stop = int(np.searchsorted(neg_d, 2 * RING_MERGE_TOL_ANGSTROM - d[start], side="right"))  # past it
        end = start + int(np.count_nonzero(d[start] - d[start:stop] < RING_MERGE_TOL_ANGSTROM))  # exact rule
        ring_nr[start:end] = nr
        start, nr = end, nr + 1
    return ring_nr
