"""Real calibrant images with a shipped geometry (``../shared/data/real/``): ours vs that geometry.

Each data set is calibrated fully automatically (no guesses) through ``midas-ref calibrate``'s set-up and
compared with its shipped geometry, converted as its PROVENANCE.md says:

* pyFAI PONI files made in Dioptas describe the up-down flipped image: we calibrate with ``-ImTransOpt 2``
  and convert the PONI with :func:`midas_ref.convert.poni_to_midas` (pixel-centre beam centre, distance
  along the beam). PONIs carry no distortion; ours runs with the default distortion model, which keeps only
  the terms the points support (:mod:`midas_ref.model_select`: none on the Pilatus 1M images, whose residuals
  are module systematics) — the run a user gets without any ``tolP`` key.
* HEXRD geometries (panel centre translation t, exponential-map tilt ω, beam along −Z): the direct beam
  meets the panel where ``R(ω)·[x, y, 0] + t = [0, 0, −L]``; x, y → pixel (row, column) with
  x = (j + ½)·p − cols·p/2, y = rows·p/2 − (i + ½)·p; MIDAS BC = (j, i), Lsd = L
  (:func:`hexrd_beam_point`). The GE_41RT distortion is centred on the panel centre, a few pixels from the
  beam, and changes the beam point by < 1e-4 px; it is not applied. The Dexela geometry is four tilted
  sub-panels and, per its PROVENANCE.md, approximate: the reference is the mean of the sub-panels' beam
  points and the case is not gated.

Tilts are not compared: HEXRD's and MIDAS's tilt parameterisations differ and the PONIs' rotations are
tied to their own distortion-free model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from midas_ref.detector import Geometry

from .records import calibrate_file, record_calibration

__all__ = ["RealDataset", "REAL_DATASETS", "HC_KEV_ANGSTROM", "rotation_from_exponential_map", "hexrd_beam_point",
           "reference_geometry", "run_real_case"]

#: h·c, keV·Å (CODATA 2018): λ = hc / E.
HC_KEV_ANGSTROM = 12.398419843320026


def rotation_from_exponential_map(omega) -> np.ndarray:
    """Rotation matrix of an exponential-map vector ω (axis ω/|ω|, angle |ω| rad), Rodrigues' formula."""
    omega = np.asarray(omega, dtype=np.float64)
    angle = float(np.linalg.norm(omega))
    if angle == 0:
        return np.eye(3)
    k = omega / angle
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + math.sin(angle) * kx + (1 - math.cos(angle)) * kx @ kx


def hexrd_beam_point(tilt, translation_mm, rows: int, cols: int, pixel_mm: float) -> tuple[float, float, float]:
    """Where the direct beam (along −Z from the sample at the origin) meets a HEXRD planar panel.

    Returns
    -------
    (row, column, distance_mm)
        0-based pixel-centre indices of the panel's array and the sample → intersection distance, mm.
    """
    r = rotation_from_exponential_map(tilt)
    a = np.column_stack([r[:, 0], r[:, 1], [0.0, 0.0, 1.0]])
    x, y, dist = np.linalg.solve(a, -np.asarray(translation_mm, dtype=np.float64))
    col = (x + cols * pixel_mm / 2) / pixel_mm - 0.5
    row = (rows * pixel_mm / 2 - y) / pixel_mm - 0.5
    return float(row), float(col), float(dist)


def _hexrd_h5(path: Path, detector: str) -> tuple[float, float, float, float]:
    """(row, col, Lsd µm, λ Å) of a HEXRD instrument stored in HDF5 (state file or ``.hexrd``)."""
    import h5py

    with h5py.File(path, "r") as f:
        d = f[f"instrument/detectors/{detector}"]
        row, col, dist = hexrd_beam_point(d["transform/tilt"][()], d["transform/translation"][()],
                                          int(np.ravel(d["pixels/rows"][()])[0]),
                                          int(np.ravel(d["pixels/columns"][()])[0]),
                                          float(np.ravel(d["pixels/size"][()])[0]))
        energy = float(np.ravel(f["instrument/beam/energy"][()])[0])
    return row, col, dist * 1000.0, HC_KEV_ANGSTROM / energy


def _dexela_reference(folder: Path) -> tuple[float, float, float, float]:
    """Mean beam point of the four ``ff1`` sub-panels of ``dexelas.yml`` in full-image pixels (approximate)."""
    import yaml

    spec = yaml.safe_load((folder / "dexelas.yml").read_text())
    points = []
    for name, det in spec["detectors"].items():
        if not name.startswith("ff1_"):
            continue
        px = det["pixels"]
        row, col, dist = hexrd_beam_point(det["transform"]["tilt"], det["transform"]["translation"], px["rows"],
                                          px["columns"], px["size"][0])
        points.append((row + px["roi"][0], col + px["roi"][1], dist))
    row, col, dist = np.mean(points, axis=0)
    return float(row), float(col), float(dist) * 1000.0, HC_KEV_ANGSTROM / float(spec["beam"]["energy"])


def _poni_reference(poni_name: str, rows: int, cols: int):
    def reference(folder: Path):
        from midas_ref.convert import poni_to_midas, read_poni

        poni = read_poni(folder / poni_name)
        g = poni_to_midas(poni, n_pixels_y=cols, n_pixels_z=rows)
        return g.bc_z_px, g.bc_y_px, g.lsd_um, poni.wavelength_m * 1e10
    return reference


@dataclass(frozen=True)
class RealDataset:
    """How to calibrate one real data set and where its reference geometry comes from.

    Attributes
    ----------
    image : str
        Image file in the folder.
    px_um : float
        Pixel size, µm.
    lattice_angstrom : float
        CeO2 lattice constant used by the shipped geometry's software, Å.
    reference : callable(folder) -> (row, column, Lsd µm, λ Å)
        The shipped geometry converted to MIDAS's beam centre (pixel centres of the *calibrated* frame, i.e.
        after ``ImTransOpt``) and distance, and its wavelength.
    source : str
        What the reference is (for the tables).
    extra_params : str
        Parameter-file lines beside px, Wavelength, SpaceGroup and LatticeParameter.
    options : tuple of (str, object)
        Extra :func:`midas_ref.inputs.calibration_inputs` options (the ``midas-ref calibrate`` flags as
        Python values), e.g. ``(("im_trans_opt", (2,)),)`` for ``-ImTransOpt 2``.
    quick : bool
        Part of the quick suite.
    approximate : bool
        The reference is approximate (not gated).
    """

    image: str
    px_um: float
    lattice_angstrom: float
    reference: Callable
    source: str
    extra_params: str = ""
    options: tuple = ()
    quick: bool = False
    approximate: bool = False
    needs: tuple = field(default=())


REAL_DATASETS = {
    "ge_ceo2_aps1id": RealDataset(
        "ge_wppf.h5", 200.0, 5.41153, lambda f: _hexrd_h5(f / "ge_wppf.h5", "ge3"),
        "HEXRD geometry (ge_wppf.h5 instrument/detectors/ge3)", quick=True),
    "pilatus1m_ceo2_cpf": RealDataset(
        "CeO2_Pil207_E30_2Nov2016_001.tif", 172.0, 5.411651, _poni_reference("CeO2_cal_Dioptas.poni", 1043, 981),
        "Dioptas PONI CeO2_cal_Dioptas.poni (flipped frame)", "BadPxIntensity -2\nGapIntensity -1\n",
        (("im_trans_opt", (2,)),), quick=True),
    "pilatus1m_ceo2_dioptas": RealDataset(
        "CeO2_Pilatus1M.tif", 172.0, 5.411651, _poni_reference("CeO2_Pilatus1M.poni", 1043, 981),
        "Dioptas PONI CeO2_Pilatus1M.poni (flipped frame)", "BadPxIntensity -2\nGapIntensity -1\n",
        (("im_trans_opt", (2,)),)),
    "pilatus2m_ceo2_aps1id": RealDataset(
        "ceria_50x30_740mm_000005_Pilatus2M.hdf5", 172.0, 5.41153,
        lambda f: _hexrd_h5(f / "Pilatus2M_CeO2_Yb_edge.hexrd", "Pilatus2M"),
        "HEXRD geometry (Pilatus2M_CeO2_Yb_edge.hexrd, one panel)", "BadPxIntensity -2\nGapIntensity -1\n",
        (("data_loc", "imageseries/images"),)),
    "dexela_ceo2_chess": RealDataset(
        "ceria_ff1.h5", 74.8, 5.412, _dexela_reference, "HEXRD dexelas.yml, mean of the 4 ff1 sub-panels "
        "(approximate)", "tolTilts 10\n", (("data_loc", "data"),), approximate=True, needs=("yaml",)),
}


def reference_geometry(name: str, folder: Path) -> dict:
    """``{bc_y_px, bc_z_px, lsd_um, wavelength_angstrom}`` of a data set's shipped geometry (MIDAS frame)."""
    row, col, lsd, wavelength = REAL_DATASETS[name].reference(folder)
    return {"bc_y_px": col, "bc_z_px": row, "lsd_um": lsd, "wavelength_angstrom": wavelength}


def run_real_case(case, shared_dir, workdir: Path, record: dict) -> None:
    """Calibrate a real image automatically and compare with its shipped geometry (BC, Lsd, per-ring strain)."""
    import importlib.util

    spec = REAL_DATASETS[case.name]
    folder = None if shared_dir is None else Path(shared_dir) / "data" / "real" / case.name
    if folder is None or not (folder / spec.image).is_file():
        record["status"], record["reason"] = "SKIPPED", f"real data folder {folder} not present"
        return
    missing = [m for m in spec.needs if importlib.util.find_spec(m) is None]
    if missing:
        record["status"], record["reason"] = "SKIPPED", f"needs {', '.join(missing)} to read the reference"
        return
    ref = reference_geometry(case.name, folder)
    params = workdir / "params.txt"
    a = spec.lattice_angstrom
    params.write_text(f"px {spec.px_um}\nWavelength {ref['wavelength_angstrom']!r}\nSpaceGroup 225\n"
                      f"LatticeParameter {a} {a} {a} 90 90 90\n{spec.extra_params}")
    inputs, result, seconds = calibrate_file(folder / spec.image, params, **dict(spec.options))
    rows, cols = inputs.image.shape
    reference = Geometry(lsd_um=ref["lsd_um"], bc_y_px=ref["bc_y_px"], bc_z_px=ref["bc_z_px"], px_um=spec.px_um,
                         n_pixels_y=cols, n_pixels_z=rows)
    record_calibration(record, result, seconds, reference, tilts=False, distortion=False,
                       reference_source="reference")
    record["metrics"]["reference"] = {"lsd_um": ref["lsd_um"], "bc_y_px": ref["bc_y_px"], "bc_z_px": ref["bc_z_px"],
                                      "wavelength_angstrom": ref["wavelength_angstrom"]}
    record["info"]["reference"] = spec.source
    record["info"]["approximate"] = spec.approximate
