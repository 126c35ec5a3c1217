"""HEXRD multi-panel (composite) geometries as per-module in-plane motions in a MIDAS frame.

A HEXRD planar detector (``instrument/detectors/<name>`` of a ``.hexrd`` HDF5 file) has pixel (row i, col j)
at panel coordinates x = (j + ½)·p − cols·p/2, y = rows·p/2 − (i + ½)·p and lab position
``R(tilt)·[x, y, 0] + translation`` (mm; exponential-map tilt; lab X horizontal, Y up, Z towards the source,
beam along −Z, sample at the origin — ``PROVENANCE.md`` of ``pilatus2m_ceo2_aps1id``).

MIDAS's lab (``docs/geometry.md`` §2) has X along the beam, a pixel at ``Y' = (BC_Y − column)·px`` and
``Z' = (row − BC_Z)·px`` for an untilted detector. With the same image array both describe, the map is

    X_MIDAS = −Z_HEXRD,   Y_MIDAS = −X_HEXRD,   Z_MIDAS = −Y_HEXRD       (:data:`HEXRD_TO_MIDAS`)

(an improper map: MIDAS views the image mirrored; 2θ is unchanged and η is MIDAS's own).

A module of the composite geometry is turned into the in-plane rigid motion that MIDAS panel corrections
describe (``docs/geometry.md`` §6: ``p' = c + R(dθ)(p − c) + (dY, dZ)`` about the panel centre c) by mapping
every module pixel centre to the lab and then into a *reference frame* — either the pixel coordinates of
another HEXRD panel (the one-panel geometry: the ray from the sample through the pixel meets its plane,
:func:`plane_frame`) or the detector position a MIDAS :class:`~midas_ref.detector.Geometry` gives the same
(2θ, η) (:func:`midas_frame`) — and fitting a rigid motion to (nominal position → mapped position) by least
squares (:func:`fit_rigid`). Out-of-plane parts of the module's placement (its own tilt, distance) leave a
residual, reported with the fit; the ring comparison (:func:`compare_panel_result`) therefore maps every ring
point exactly (:func:`point_displacements`) and compares radial components, the only part rings observe.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midas_ref.detector import Geometry, PanelLayout
from midas_ref.geometry import r_eta_to_pixel
from midas_ref.panels import panel_bounds

from .real import rotation_from_exponential_map

__all__ = ["HEXRD_TO_MIDAS", "HexrdPanel", "read_hexrd_panels", "RigidMotion", "fit_rigid", "plane_frame",
           "midas_frame", "module_motions", "point_displacements", "radial_component", "radial_translation",
           "ModuleComparison", "compare_panel_result"]

#: MIDAS lab vector = HEXRD_TO_MIDAS @ HEXRD lab vector (same image array; see the module docstring).
HEXRD_TO_MIDAS = np.array([[0.0, 0.0, -1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


@dataclass(frozen=True)
class HexrdPanel:
    """One planar HEXRD detector (mm, rad)."""

    name: str
    tilt: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    rows: int
    cols: int
    pixel_mm: float

    @property
    def rotation(self) -> np.ndarray:
        return rotation_from_exponential_map(self.tilt)

    def lab_mm(self, row, col) -> np.ndarray:
        """HEXRD lab positions (…, 3), mm, of the panel's pixel-centre coordinates ``(row, col)`` (0-based)."""
        row, col = np.broadcast_arrays(np.asarray(row, float), np.asarray(col, float))
        x = (col + 0.5) * self.pixel_mm - self.cols * self.pixel_mm / 2
        y = self.rows * self.pixel_mm / 2 - (row + 0.5) * self.pixel_mm
        local = np.stack([x, y, np.zeros_like(x)], axis=-1)
        return local @ self.rotation.T + np.asarray(self.translation_mm, float)

    def ray_to_pixel(self, direction) -> tuple[np.ndarray, np.ndarray]:
        """(row, col) where rays from the sample (origin) along ``direction`` (…, 3, HEXRD lab) meet the panel."""
        r = self.rotation
        normal = r[:, 2]
        t = np.asarray(self.translation_mm, float)
        d = np.asarray(direction, float)
        s = (t @ normal) / (d @ normal)
        local = (d * s[..., None] - t) @ r  # = Rᵀ(P − t)
        col = (local[..., 0] + self.cols * self.pixel_mm / 2) / self.pixel_mm - 0.5
        row = (self.rows * self.pixel_mm / 2 - local[..., 1]) / self.pixel_mm - 0.5
        return row, col


def read_hexrd_panels(path: str | Path) -> dict[str, HexrdPanel]:
    """Every detector of a HEXRD instrument HDF5 file (``.hexrd``), by name. Distortion is not supported."""
    import h5py

    out = {}
    with h5py.File(path, "r") as f:
        if np.any(np.ravel(f["instrument/oscillation_stage/translation"][()]) != 0):
            raise ValueError(f"{path}: sample not at the origin (oscillation_stage/translation)")
        for name, d in f["instrument/detectors"].items():
            if "distortion" in d and len(d["distortion"]):
                raise ValueError(f"{path}: detector {name} has a distortion model (not supported)")
            out[name] = HexrdPanel(name, tuple(np.ravel(d["transform/tilt"][()]).astype(float)),
                                   tuple(np.ravel(d["transform/translation"][()]).astype(float)),
                                   int(np.ravel(d["pixels/rows"][()])[0]), int(np.ravel(d["pixels/columns"][()])[0]),
                                   float(np.ravel(d["pixels/size"][()])[0]))
    return out


@dataclass(frozen=True)
class RigidMotion:
    """``p' = c + R(dθ)(p − c) + (dY, dZ)`` in image pixels (Y = column, Z = row), c = (cy, cz)."""

    dy_px: float
    dz_px: float
    dtheta_deg: float
    cy: float
    cz: float
    rms_residual_px: float = 0.0
    max_residual_px: float = 0.0

    def displacement(self, y, z) -> tuple[np.ndarray, np.ndarray]:
        """``p' − p`` at positions (y, z)."""
        a = math.radians(self.dtheta_deg)
        u, v = np.asarray(y, float) - self.cy, np.asarray(z, float) - self.cz
        return (u * math.cos(a) - v * math.sin(a) - u + self.dy_px,
                u * math.sin(a) + v * math.cos(a) - v + self.dz_px)


def fit_rigid(y, z, y_to, z_to, cy: float, cz: float) -> RigidMotion:
    """Least-squares rigid motion (2-D Procrustes) taking (y, z) to (y_to, z_to), about the centre (cy, cz)."""
    y, z, y_to, z_to = (np.ravel(np.asarray(a, float)) for a in (y, z, y_to, z_to))
    u, v = y - y.mean(), z - z.mean()
    u2, v2 = y_to - y_to.mean(), z_to - z_to.mean()
    a = math.atan2(np.sum(u * v2 - v * u2), np.sum(u * u2 + v * v2))
    c, s = math.cos(a), math.sin(a)
    # p' = c + R(p − c) + d  ⇒  d = mean(p') − c − R(mean(p) − c)
    my, mz = y.mean() - cy, z.mean() - cz
    dy = y_to.mean() - cy - (c * my - s * mz)
    dz = z_to.mean() - cz - (s * my + c * mz)
    motion = RigidMotion(float(dy), float(dz), math.degrees(a), float(cy), float(cz))
    ey, ez = motion.displacement(y, z)
    res = np.hypot(y + ey - y_to, z + ez - z_to)
    return RigidMotion(motion.dy_px, motion.dz_px, motion.dtheta_deg, motion.cy, motion.cz,
                       float(np.sqrt(np.mean(res ** 2))), float(res.max()))


def plane_frame(panel: HexrdPanel):
    """Reference frame = pixel coordinates (y = column, z = row) of a HEXRD panel (e.g. the one-panel geometry)."""
    def to_frame(lab_hexrd):
        row, col = panel.ray_to_pixel(lab_hexrd)
        return col, row
    return to_frame


def midas_frame(geometry: Geometry):
    """Reference frame = the position a MIDAS geometry (without panel corrections) gives each lab direction."""
    def to_frame(lab_hexrd):
        v = np.asarray(lab_hexrd, float) @ HEXRD_TO_MIDAS.T
        two_theta = np.arctan2(np.hypot(v[..., 1], v[..., 2]), v[..., 0])
        eta = np.degrees(np.arctan2(-v[..., 1], v[..., 2]))
        return r_eta_to_pixel(geometry.lsd_um * np.tan(two_theta), eta, geometry)
    return to_frame


def _modules(panels: dict[str, HexrdPanel], layout: PanelLayout, prefix: str) -> dict[int, tuple]:
    """``{MIDAS panel id: (module, y_min, y_max, z_min, z_max)}`` of the composite modules ``<prefix>_<i>_<j>``.

    Module (i, j) (i = module row, j = module column) is MIDAS panel ``id = j·NPanelsZ + i`` and its pixel
    (r, c) is full-image pixel ``(Z0(i) + r, Y0(j) + c)``.
    """
    bounds = panel_bounds(layout)
    out = {}
    for name, panel in panels.items():
        m = re.fullmatch(re.escape(prefix) + r"_(\d+)_(\d+)", name)
        if m is None:
            continue
        i, j = int(m.group(1)), int(m.group(2))
        if not (i < layout.n_panels_z and j < layout.n_panels_y):
            raise ValueError(f"module {name} outside the {layout.n_panels_z} × {layout.n_panels_y} layout")
        if (panel.rows, panel.cols) != (layout.size_z_px, layout.size_y_px):
            raise ValueError(f"module {name} is {panel.rows} × {panel.cols} px, layout {layout.size_z_px} × "
                             f"{layout.size_y_px}")
        pid = j * layout.n_panels_z + i
        out[pid] = (panel, *(float(b) for b in bounds[pid]))
    return out


def module_motions(panels: dict[str, HexrdPanel], layout: PanelLayout, to_frame, *, prefix: str,
                   step: int = 1) -> dict[int, RigidMotion]:
    """Rigid motion of every composite module in a reference frame, by MIDAS panel id.

    The module's pixel centres (every ``step``-th) are mapped through its geometry to the lab and by
    ``to_frame`` into the frame; the rigid motion nominal → mapped is fitted about the MIDAS panel centre.
    """
    out = {}
    for pid, (panel, y_min, y_max, z_min, z_max) in _modules(panels, layout, prefix).items():
        rr, cc = np.mgrid[0:panel.rows:step, 0:panel.cols:step]
        y_to, z_to = to_frame(panel.lab_mm(rr, cc))
        out[pid] = fit_rigid(cc + y_min, rr + z_min, y_to, z_to, 0.5 * (y_min + y_max), 0.5 * (z_min + z_max))
    return out


def point_displacements(panels: dict[str, HexrdPanel], layout: PanelLayout, to_frame, y, z, panel_id, *,
                        prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Exact displacement (mapped − nominal, pixels) of full-image positions (y, z) on MIDAS panel ``panel_id``.

    Each position is mapped through its own module's geometry (no rigid approximation); NaN for positions on
    panels the composite geometry does not have.
    """
    y, z = np.asarray(y, float), np.asarray(z, float)
    pid = np.asarray(panel_id)
    dy, dz = np.full(y.shape, np.nan), np.full(y.shape, np.nan)
    for p, (panel, y_min, _, z_min, _) in _modules(panels, layout, prefix).items():
        s = pid == p
        if s.any():
            y_to, z_to = to_frame(panel.lab_mm(z[s] - z_min, y[s] - y_min))
            dy[s], dz[s] = y_to - y[s], z_to - z[s]
    return dy, dz


def radial_component(y, z, dy, dz, bc_y: float, bc_z: float) -> np.ndarray:
    """Component of the displacement (dy, dz) along the direction from the beam centre to (y, z), pixels."""
    u, v = np.asarray(y, float) - bc_y, np.asarray(z, float) - bc_z
    return (u * np.asarray(dy) + v * np.asarray(dz)) / np.hypot(u, v)


def radial_translation(y, z, radial, bc_y: float, bc_z: float) -> tuple[float, float, float]:
    """Least-squares translation (dY, dZ) whose radial component best matches ``radial`` at (y, z).

    This is how panel shifts are seen by rings: it is the part of a displacement field a shift-only panel
    model can express from those points. Returns (dY, dZ, rms of the part it cannot express).
    """
    u, v = np.asarray(y, float) - bc_y, np.asarray(z, float) - bc_z
    r = np.hypot(u, v)
    a = np.column_stack([u / r, v / r])
    t, *_ = np.linalg.lstsq(a, np.asarray(radial, float), rcond=None)
    return float(t[0]), float(t[1]), float(np.sqrt(np.mean((radial - a @ t) ** 2)))


@dataclass(frozen=True)
class ModuleComparison:
    """One panel of :func:`compare_panel_result` (pixels; radial = away from the beam centre).

    Attributes
    ----------
    panel, n_points : int
        MIDAS panel id and the inlier ring points on it.
    ours_dy, ours_dz, ours_sigma_dy, ours_sigma_dz : float
        Our refined shift and its standard error (0 for the fixed panel).
    hexrd : RigidMotion
        The HEXRD module as a rigid motion over all its pixels, in our frame, gauge-fixed.
    hexrd_dy, hexrd_dz : float
        The HEXRD module as our shift-only model sees it from the same points (:func:`radial_translation`).
    radial_mean, radial_rms : float
        Mean and rms over the points of the radial component of (our displacement − HEXRD's exact one).
    sigma_radial : float
        Statistical error of one module's mean radial offset: rms point radial residual / √n.
    mismatch : float
        rms of the part of HEXRD's radial field at the points that a shift cannot express.
    """

    panel: int
    n_points: int
    ours_dy: float
    ours_dz: float
    ours_sigma_dy: float
    ours_sigma_dz: float
    hexrd: RigidMotion
    hexrd_dy: float
    hexrd_dz: float
    radial_mean: float
    radial_rms: float
    sigma_radial: float
    mismatch: float


def compare_panel_result(result, composite: dict[str, HexrdPanel], fixed: int, *, prefix: str,
                         step: int = 2) -> tuple[list[ModuleComparison], tuple[float, float]]:
    """Our panel refinement (:class:`~midas_ref.panel_refine.PanelResult`, shifts) against a HEXRD composite.

    The frame is *our* refined global geometry (:func:`midas_frame`): the HEXRD module positions become the
    panel corrections our model would need to match them. Lsd, BC and tilts are a gauge of a panel
    refinement (a common motion of all panels), fixed on our side by panel ``fixed``; on HEXRD's side the
    same gauge is fixed by removing, from every module, the translation (a BC shift) that the fixed module's
    ring points see (:func:`radial_translation` of its exact displacements). Rotations about the beam are not
    seen by rings, so no rotation gauge is applied and only the radial components are compared.

    Returns
    -------
    (list of ModuleComparison, (gauge dY, gauge dZ))
    """
    from midas_ref.panels import point_panel_ids

    g = result.geometry
    layout = result.panels.layout
    frame = midas_frame(g)
    keep = ~np.asarray(result.outlier, dtype=bool)
    y, z = result.points.y_px[keep], result.points.z_px[keep]
    ids = point_panel_ids(y, z, result.panels)
    hy, hz = point_displacements(composite, layout, frame, y, z, ids, prefix=prefix)
    s = ids == fixed
    gy, gz, _ = radial_translation(y[s], z[s], radial_component(y[s], z[s], hy[s], hz[s], g.bc_y_px, g.bc_z_px),
                                   g.bc_y_px, g.bc_z_px)
    hy, hz = hy - gy, hz - gz
    rigid = module_motions(composite, layout, frame, prefix=prefix, step=step)
    r_px = np.abs(result.strain[keep]) * np.hypot(y - g.bc_y_px, z - g.bc_z_px)
    out = []
    for p in sorted(rigid):
        s = ids == p
        if not s.any():
            continue
        sh = result.panels.shifts[p]
        h_rad = radial_component(y[s], z[s], hy[s], hz[s], g.bc_y_px, g.bc_z_px)
        ours_rad = radial_component(y[s], z[s], *RigidMotion(sh.dy_px, sh.dz_px, sh.dtheta_deg, rigid[p].cy,
                                                              rigid[p].cz).displacement(y[s], z[s]),
                                    g.bc_y_px, g.bc_z_px)
        diff = ours_rad - h_rad
        ty, tz, mismatch = radial_translation(y[s], z[s], h_rad, g.bc_y_px, g.bc_z_px)
        m = rigid[p]
        out.append(ModuleComparison(
            p, int(s.sum()), sh.dy_px, sh.dz_px, result.std_errors.get(f"panel {p} dy_px", 0.0),
            result.std_errors.get(f"panel {p} dz_px", 0.0),
            RigidMotion(m.dy_px - gy, m.dz_px - gz, m.dtheta_deg, m.cy, m.cz, m.rms_residual_px, m.max_residual_px),
            ty, tz, float(diff.mean()), float(np.sqrt(np.mean(diff ** 2))),
            float(np.sqrt(np.mean(r_px[s] ** 2) / s.sum())), mismatch))
    return out, (gy, gz)
