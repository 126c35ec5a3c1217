"""Panel grid of tiled detectors and per-panel corrections (manual §7, spec legacy_engine.md §3.3).

A :class:`Panels` value bundles the grid (:class:`~midas_ref.params.PanelLayout`) with one
:class:`~midas_ref.params.PanelShift` per panel; :func:`kernel_tables` turns it into the flat arrays the
geometry kernels use. The transform itself lives in ``geometry_kernels`` (one place for the model).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_text_atomic
from .detector import PanelLayout, PanelShift
from .errors import GeometryError, ParameterFileError
from .kernel_layout import (PANEL_TABLE_COLUMNS, PT_CENTER_Y, PT_CENTER_Z, PT_COS, PT_DLSD, PT_DP2, PT_DY, PT_DZ,
                            PT_SIN, PT_SIZE)

__all__ = ["Panels", "panel_bounds", "panel_index_map", "read_panel_shifts", "write_panel_shifts",
           "shift_magnitude_map", "kernel_tables", "point_panel_ids", "panel_displacement", "PANEL_TABLE_COLUMNS"]

# PANEL_TABLE_COLUMNS (column order of the per-panel table handed to the kernels) and its PT_* indices are
# defined in kernel_layout, beside the geometry vector's layout; re-exported here.


def _starts(n: int, size: int, gaps: tuple[int, ...]) -> list[int]:
    starts = [0]
    for i in range(n - 1):
        starts.append(starts[-1] + size + gaps[i])
    return starts


def panel_bounds(layout: PanelLayout) -> np.ndarray:
    """Inclusive pixel bounds of every panel.

    Returns
    -------
    ndarray of shape (n_panels, 4), int
        ``(y_min, y_max, z_min, z_max)`` per panel id (``id = iy·n_panels_z + iz``).
    """
    y0 = _starts(layout.n_panels_y, layout.size_y_px, layout.gaps_y_px)
    z0 = _starts(layout.n_panels_z, layout.size_z_px, layout.gaps_z_px)
    rows = []
    for iy in range(layout.n_panels_y):
        for iz in range(layout.n_panels_z):
            rows.append((y0[iy], y0[iy] + layout.size_y_px - 1, z0[iz], z0[iz] + layout.size_z_px - 1))
    return np.asarray(rows, dtype=np.int64)


def _axis_lookup(n_pixels: int, n: int, size: int, gaps: tuple[int, ...]) -> np.ndarray:
    """Per-pixel panel index along one axis (−1 in gaps and beyond the grid)."""
    lookup = np.full(n_pixels, -1, dtype=np.int64)
    for i, start in enumerate(_starts(n, size, gaps)):
        lookup[max(start, 0):min(start + size, n_pixels)] = i
    return lookup


def panel_index_map(layout: PanelLayout, shape: tuple[int, int]) -> np.ndarray:
    """Panel id of every pixel of an image of ``shape = (rows, cols)``; −1 for gap pixels."""
    iy = _axis_lookup(shape[1], layout.n_panels_y, layout.size_y_px, layout.gaps_y_px)
    iz = _axis_lookup(shape[0], layout.n_panels_z, layout.size_z_px, layout.gaps_z_px)
    ids = iy[None, :] * layout.n_panels_z + iz[:, None]
    return np.where((iy[None, :] >= 0) & (iz[:, None] >= 0), ids, -1)


@dataclass(frozen=True)
class Panels:
    """A panel grid with one correction per panel.

    Parameters
    ----------
    layout : PanelLayout
        The grid.
    shifts : tuple of PanelShift
        One per panel, ordered by id; missing panels get zero corrections (see :meth:`from_shifts`).
    """

    layout: PanelLayout
    shifts: tuple[PanelShift, ...]

    def __post_init__(self):
        if len(self.shifts) != self.layout.n_panels:
            raise GeometryError(f"{len(self.shifts)} panel shifts for {self.layout.n_panels} panels")
        for i, s in enumerate(self.shifts):
            if s.id != i:
                raise GeometryError(f"panel shifts must be ordered by id; position {i} holds id {s.id}")
            values = (s.dy_px, s.dz_px, s.dtheta_deg, s.dlsd_um, s.dp2)
            if not all(math.isfinite(v) for v in values):
                raise GeometryError(f"panel {s.id} has a non-finite correction {values}")

    @classmethod
    def from_shifts(cls, layout: PanelLayout, shifts=()) -> "Panels":
        """Build from any subset of shifts; panels not listed get zero corrections."""
        by_id = {}
        for s in shifts:
            if not 0 <= s.id < layout.n_panels:
                raise GeometryError(f"panel id {s.id} outside 0..{layout.n_panels - 1}")
            by_id[s.id] = s
        return cls(layout, tuple(by_id.get(i, PanelShift(i)) for i in range(layout.n_panels)))


def kernel_tables(panels: Panels | None, shape: tuple[int, int]):
    """Flat arrays describing ``panels`` for the geometry kernels.

    Returns
    -------
    col_to_iy : ndarray of shape (cols,), int64
    row_to_iz : ndarray of shape (rows,), int64
        Panel grid index of every column / row (−1 in gaps).
    n_panels_z : int
    table : ndarray of shape (n_panels, 8), float64
        Columns :data:`PANEL_TABLE_COLUMNS` (indices ``kernel_layout.PT_*``).

    With ``panels=None`` the lookups are all −1 and the table is empty: no correction anywhere.
    """
    rows, cols = shape
    if panels is None:
        return (np.full(cols, -1, np.int64), np.full(rows, -1, np.int64), 1, np.zeros((0, PT_SIZE)))
    lay = panels.layout
    bounds = panel_bounds(lay)
    table = np.empty((lay.n_panels, PT_SIZE))
    for i, s in enumerate(panels.shifts):
        y_min, y_max, z_min, z_max = bounds[i]
        theta = math.radians(s.dtheta_deg)
        row = table[i]
        row[PT_CENTER_Y] = (y_min + y_max) / 2.0
        row[PT_CENTER_Z] = (z_min + z_max) / 2.0
        row[PT_DY] = s.dy_px
        row[PT_DZ] = s.dz_px
        row[PT_COS] = math.cos(theta)
        row[PT_SIN] = math.sin(theta)
        row[PT_DLSD] = s.dlsd_um
        row[PT_DP2] = s.dp2
    return (_axis_lookup(cols, lay.n_panels_y, lay.size_y_px, lay.gaps_y_px),
            _axis_lookup(rows, lay.n_panels_z, lay.size_z_px, lay.gaps_z_px), lay.n_panels_z, table)


_FLOAT = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"


def read_panel_shifts(path: str | Path, layout: PanelLayout) -> Panels:
    """Read a ``panelshifts.txt`` file (``ID dY dZ [dTheta [dLsd [dP2]]]`` per line, ``#`` comments).

    Panels not listed get zeros. Unlike the legacy reader, which skips ids outside the layout and keeps
    the last of repeated ids, both are refused: either means the file belongs to another detector layout
    or was edited by mistake.

    Raises
    ------
    ParameterFileError
        Missing file, a malformed line, a panel id outside the layout or a repeated id (named by line
        number).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterFileError(f"cannot read panel shifts file: {exc}", str(path)) from None
    shifts = []
    first_line: dict[int, int] = {}
    for lineno, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        tokens = line.split()
        if not re.fullmatch(r"\d+", tokens[0]) or not 3 <= len(tokens) <= 6 or not all(
                re.fullmatch(_FLOAT, t) for t in tokens[1:]):
            raise ParameterFileError(f"expected 'ID dY dZ [dTheta [dLsd [dP2]]]', got {line!r}", str(path),
                                     lineno)
        values = [float(t) for t in tokens[1:]] + [0.0] * (6 - len(tokens))
        pid = int(tokens[0])
        if pid >= layout.n_panels:
            raise ParameterFileError(
                f"panel id {pid} does not exist: the layout (NPanelsY {layout.n_panels_y} x NPanelsZ "
                f"{layout.n_panels_z}) has ids 0..{layout.n_panels - 1}; is this file for another detector?",
                str(path), lineno)
        if pid in first_line:
            raise ParameterFileError(f"panel id {pid} is listed twice (first on line {first_line[pid]}); "
                                     "keep one line per panel", str(path), lineno)
        first_line[pid] = lineno
        shifts.append(PanelShift(pid, *values))
    try:
        return Panels.from_shifts(layout, shifts)
    except GeometryError as exc:
        raise ParameterFileError(str(exc), str(path)) from None


def write_panel_shifts(path: str | Path, panels: Panels) -> None:
    """Write ``panelshifts.txt`` in the legacy format (header ``# ID dY dZ dTheta dLsd dP2``), atomically."""
    lines = ["# ID dY dZ dTheta dLsd dP2"]
    for s in panels.shifts:
        lines.append(f"{s.id} {s.dy_px:.10f} {s.dz_px:.10f} {s.dtheta_deg:.10f} {s.dlsd_um:.10f} "
                     f"{s.dp2:.10f}")
    write_text_atomic(path, "\n".join(lines) + "\n")


def panel_displacement(y_px, z_px, ids, table):
    """Displacement ``(ΔY, ΔZ)`` px that the panel transform (rotation about the panel centre, then shift)
    applies to positions ``(y, z)`` on panels ``ids`` (kernel ``table`` rows; −1 ids get garbage — mask them).
    The numpy twin of the transform in ``geometry_kernels.pixel_r_cs``, for outputs."""
    t = table[np.clip(ids, 0, None)]
    cos, sin = t[..., PT_COS], t[..., PT_SIN]
    dy_rel, dz_rel = y_px - t[..., PT_CENTER_Y], z_px - t[..., PT_CENTER_Z]
    return (dy_rel * cos - dz_rel * sin - dy_rel + t[..., PT_DY],
            dy_rel * sin + dz_rel * cos - dz_rel + t[..., PT_DZ])


def shift_magnitude_map(panels: Panels, shape: tuple[int, int]) -> np.ndarray:
    """Per-pixel total panel displacement ``√((dY+rotDY)² + (dZ+rotDZ)²)`` in pixels, −1 on gaps.

    ``rotDY, rotDZ`` is the displacement of the pixel by its panel's rotation about the panel centre
    (the ``<PanelShiftsFile>.shifts.tif`` image of manual §7).
    """
    col_to_iy, row_to_iz, n_z, table = kernel_tables(panels, shape)
    ids = np.where((col_to_iy[None, :] >= 0) & (row_to_iz[:, None] >= 0),
                   col_to_iy[None, :] * n_z + row_to_iz[:, None], -1)
    z, y = np.indices(shape, dtype=np.float64)
    d_y, d_z = panel_displacement(y, z, ids, table)
    return np.where(ids >= 0, np.hypot(d_y, d_z), -1.0).astype(np.float32)


def point_panel_ids(y_px, z_px, panels: Panels | None) -> np.ndarray:
    """Panel id of each point (the panel of its nearest pixel centre, as the geometry kernels use); −1 in gaps,
    off the detector, or everywhere when ``panels`` is None."""
    y = np.asarray(y_px, dtype=np.float64)
    z = np.asarray(z_px, dtype=np.float64)
    if panels is None:
        return np.full(y.shape, -1, np.int64)
    lay = panels.layout
    col = np.floor(y + 0.5)
    row = np.floor(z + 0.5)
    n_cols = lay.n_panels_y * lay.size_y_px + sum(lay.gaps_y_px)
    n_rows = lay.n_panels_z * lay.size_z_px + sum(lay.gaps_z_px)
    iy_lut = _axis_lookup(n_cols, lay.n_panels_y, lay.size_y_px, lay.gaps_y_px)
    iz_lut = _axis_lookup(n_rows, lay.n_panels_z, lay.size_z_px, lay.gaps_z_px)
    ok = np.isfinite(col) & np.isfinite(row) & (col >= 0) & (row >= 0) & (col < n_cols) & (row < n_rows)
    iy = np.where(ok, iy_lut[np.where(ok, col, 0).astype(np.int64)], -1)
    iz = np.where(ok, iz_lut[np.where(ok, row, 0).astype(np.int64)], -1)
    return np.where((iy >= 0) & (iz >= 0), iy * lay.n_panels_z + iz, -1)
