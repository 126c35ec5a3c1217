"""The output folder of a simulation: image (+ dark), calibrator parameter file, truth.

Layout (docs/simulate.md, "Output folder")::

    <Stem>_000001.<ext>     frames (tif: .tif, ge: .ge3, h5: .h5, zarr: .MIDAS.zip)
    dark_000001.<ext>       dark frame (tif/ge only; h5 and zarr hold it at exchange/dark)
    params.txt              parameter file for ``midas-ref calibrate -paramFN``: detector, material, panel
                            grid, sentinels, file keys; the geometry only as a perturbed start (--perturb)
    truth.json              the true geometry under MIDAS key names, panels, rings, options
    truth_params.txt        params.txt with the true geometry (and the true panel shifts file)
    panelshifts_truth.txt   true per-panel corrections, ``panelshifts.txt`` format (tiled detectors)

Every file is written atomically (temporary file + rename).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from midas_ref import __version__
from midas_ref.atomic import write_text_atomic
from midas_ref.detector import Geometry
from midas_ref.io import write_ge, write_hdf5, write_raw, write_tiff
from midas_ref.panels import panel_bounds, write_panel_shifts
from midas_ref.params import (DETECTOR_KEYS, Entry, ParameterFile, key_values_from_geometry,
                              key_values_from_panel_layout, write_parameter_file)

from .config import SimulationConfig, SimulationError
from .noise import streams
from .simulation import SimulationResult

__all__ = ["FORMATS", "TRUTH_FORMAT_VERSION", "SimulationFiles", "perturbed_geometry", "truth_dict",
           "calibrator_parameters", "write_simulation"]

#: --format → (extension of the data file, extension of a separate dark file or None).
FORMATS = {"tif": (".tif", ".tif"), "ge": (".ge3", ".ge3"), "h5": (".h5", None), "zarr": (".MIDAS.zip", None)}
TRUTH_FORMAT_VERSION = 1
_AXES = ("image[row, col] = [Z, Y]; BC = [Y, Z] = (column, row) in pixels, integer = pixel centre; Lsd, px, "
         "RhoD, dLsd in um; tilts, p3, dTheta in degrees; dY, dZ in pixels; Wavelength in Angstrom")
#: MIDAS DataType of a GE/raw file per dtype, and of a TIFF (legacy TIFF readers) where one exists.
_RAW_DATA_TYPE = {"uint16": 1, "float32": 3, "uint32": 4, "int32": 5}
_TIFF_DATA_TYPE = {"uint16": 9, "uint32": 6}
_HDF5_DATA_TYPE = 8
_GE_HEAD_SIZE = 8192
_PADDING = 6
#: Start geometry of --perturb: |δLsd|/Lsd and |δBC| (px) drawn uniformly in these ranges, random signs.
PERTURB_LSD_REL = (1e-3, 3e-3)
PERTURB_BC_PX = (0.5, 2.0)


@dataclass(frozen=True)
class SimulationFiles:
    """Paths written by :func:`write_simulation` (None where not written)."""

    out_dir: Path
    image: Path
    dark: Path | None
    params: Path
    truth: Path
    truth_params: Path
    panel_shifts: Path | None


def perturbed_geometry(config: SimulationConfig) -> Geometry:
    """Start geometry for the calibrator: Lsd·(1 ± δ), BC ± Δ, ty = tz = 0, p0–p5 = 0; tx and RhoD true.

    δ ∈ :data:`PERTURB_LSD_REL`, Δ ∈ :data:`PERTURB_BC_PX` (each BC component), uniform with random signs,
    drawn from the seed's ``perturb`` stream. tx is kept because the calibrator never refines it.
    """
    rng = np.random.default_rng(streams(config.seed)["perturb"])
    signs = rng.choice([-1.0, 1.0], size=3)
    delta = rng.uniform(*PERTURB_LSD_REL)
    dy, dz = rng.uniform(*PERTURB_BC_PX, size=2)
    g = config.geometry
    return Geometry(lsd_um=g.lsd_um * (1.0 + signs[0] * delta), bc_y_px=g.bc_y_px + signs[1] * dy,
                    bc_z_px=g.bc_z_px + signs[2] * dz, px_um=g.px_um, n_pixels_y=g.n_pixels_y,
                    n_pixels_z=g.n_pixels_z, tx_deg=g.tx_deg, rho_d_um=g.rho_d_um)


def _geometry_keys(g: Geometry) -> dict:
    """Pose and distortion keys of ``g`` (Lsd, BC, tx–tz, p0–p5): what a start or a truth geometry adds."""
    return {key: value for key, value in key_values_from_geometry(g).items() if key not in (*DETECTOR_KEYS, "RhoD")}


def _panel_keys(config: SimulationConfig) -> dict:
    if config.panels is None:
        return {}
    keys = key_values_from_panel_layout(config.panels.layout)
    keys["FixPanelID"] = config.fix_panel_id
    return keys


def _sentinel_keys(result: SimulationResult) -> dict:
    keys = {}
    if result.bad_mask is not None and result.bad_mask.any():
        keys["BadPxIntensity"] = result.config.response.bad_pixel_value
    if result.gap_mask is not None:
        keys["GapIntensity"] = result.config.response.gap_value
    return keys


def truth_dict(result: SimulationResult, *, start: Geometry | None = None, files: dict | None = None) -> dict:
    """The content of ``truth.json``: MIDAS parameter names for the geometry, plus panels, rings and options.

    Keys: ``Lsd``, ``BC`` [Y, Z], ``tx``, ``ty``, ``tz``, ``p0``…``p5``, ``px``, ``Wavelength``, ``RhoD``,
    ``NrPixelsY``, ``NrPixelsZ``, ``SpaceGroup``, ``LatticeConstant``, ``panels`` (list of ``{id, dY, dZ,
    dTheta, dLsd, dP2, yMin, yMax, zMin, zMax}``, empty for a monolithic detector), then the panel grid keys,
    sentinels, ``rings``, ``peak``, ``intensity``, ``response``, ``start`` (the --perturb start geometry or
    null), ``files`` and provenance.
    """
    cfg = result.config
    g = cfg.geometry
    truth = {"format": "midas-ref simulate truth", "format_version": TRUTH_FORMAT_VERSION, "axes": _AXES}
    truth.update(_geometry_keys(g))
    truth.update({"px": g.px_um, "Wavelength": cfg.material.wavelength_angstrom, "RhoD": g.rho_d_um,
                  "NrPixelsY": g.n_pixels_y, "NrPixelsZ": g.n_pixels_z, "SpaceGroup": cfg.material.space_group,
                  "LatticeConstant": list(cfg.material.lattice)})
    panels = []
    if cfg.panels is not None:
        bounds = panel_bounds(cfg.panels.layout)
        for s in cfg.panels.shifts:
            y_min, y_max, z_min, z_max = (int(v) for v in bounds[s.id])
            panels.append({"id": s.id, "dY": s.dy_px, "dZ": s.dz_px, "dTheta": s.dtheta_deg, "dLsd": s.dlsd_um,
                           "dP2": s.dp2, "yMin": y_min, "yMax": y_max, "zMin": z_min, "zMax": z_max})
    truth["panels"] = panels
    truth.update(_panel_keys(cfg))
    truth.update(_sentinel_keys(result))
    rings = result.rings
    truth["rings"] = [
        {"ring_nr": int(rings.ring_nr[i]), "hkl": [int(v) for v in rings.hkl[i]],
         "multiplicity": int(rings.multiplicity[i]), "line": int(rings.line[i]),
         "d_angstrom": float(rings.d_angstrom[i]), "two_theta_deg": float(rings.two_theta_deg[i]),
         "radius_um": float(rings.radius_um[i]), "radius_px": float(rings.radius_um[i] / g.px_um),
         "amplitude_counts": float(rings.amplitude_counts[i]), "fwhm_um": float(rings.fwhm_um[i]),
         "on_detector": bool(rings.on_detector[i])}
        for i in range(len(rings))]
    truth["material"] = cfg.material.name
    truth["peak"] = {"fwhm_px": cfg.peak.fwhm_px, "fwhm_two_theta_deg": cfg.peak.fwhm_two_theta_deg,
                     "lorentz_fraction": cfg.peak.lorentz_fraction,
                     "doublet_wavelength_angstrom": cfg.peak.doublet_wavelength_angstrom,
                     "doublet_ratio": cfg.peak.doublet_ratio, "supersample": cfg.supersample}
    inten = cfg.intensity
    truth["intensity"] = {"peak_counts": inten.peak_counts, "weighting": inten.weighting,
                          "texture_amplitude": inten.texture_amplitude, "texture_order": inten.texture_order,
                          "texture_phase_deg": inten.texture_phase_deg,
                          "missing_arcs_deg": [list(a) for a in inten.missing_arcs_deg],
                          "ring_numbers": None if inten.ring_numbers is None else list(inten.ring_numbers)}
    resp = cfg.response
    truth["response"] = {name: getattr(resp, name) for name in resp.__dataclass_fields__}
    truth["n_bad_pixels"] = 0 if result.bad_mask is None else int(result.bad_mask.sum())
    truth["n_gap_pixels"] = 0 if result.gap_mask is None else int(result.gap_mask.sum())
    truth["start"] = None if start is None else _geometry_keys(start)
    truth["scenario"] = cfg.name
    truth["seed"] = cfg.seed
    truth["noise_free"] = cfg.is_noise_free
    truth["files"] = files or {}
    truth["software"] = f"midas-ref {__version__}"
    return truth


def calibrator_parameters(result: SimulationResult, *, image: Path, dark: Path | None, fmt: str,
                          start: Geometry | None = None, panel_shifts_file: Path | None = None,
                          note: str = "") -> ParameterFile:
    """Parameter file for ``midas-ref calibrate -paramFN``.

    Holds the file keys (Folder, FileStem, Ext, StartNr/EndNr, Padding, DataType, HeadSize, Dark, dataLoc),
    detector and material keys (NrPixelsY/Z, px, Wavelength, SpaceGroup, LatticeConstant), the true RhoD
    (the distortion normalisation, so refined p-coefficients compare with the truth), the panel grid and
    FixPanelID, sentinels, and — only when ``start`` is given — a start geometry (Lsd, BC, tx–tz, p0–p3).
    """
    cfg = result.config
    g = cfg.geometry
    name = image.name
    stem, ext = name[:name.index("_")], name[name.index("_") + 1 + _PADDING:]
    values: dict = {"Folder": str(image.parent), "FileStem": stem, "Ext": ext, "StartNr": 1, "EndNr": 1,
                    "Padding": _PADDING}
    dtype = cfg.response.dtype
    if fmt == "ge":
        values.update(DataType=_RAW_DATA_TYPE[dtype], HeadSize=_GE_HEAD_SIZE)
    elif fmt == "tif" and dtype in _TIFF_DATA_TYPE:
        values.update(DataType=_TIFF_DATA_TYPE[dtype], HeadSize=0)
    elif fmt == "h5":
        values.update(DataType=_HDF5_DATA_TYPE, HeadSize=0)
    if fmt in ("h5", "zarr"):
        values.update(dataLoc="exchange/data")
        if result.dark is not None:
            values.update(darkLoc="exchange/dark")
    if dark is not None:
        values["Dark"] = str(dark)
    values.update(NrPixelsY=g.n_pixels_y, NrPixelsZ=g.n_pixels_z, px=g.px_um,
                  Wavelength=cfg.material.wavelength_angstrom, SpaceGroup=cfg.material.space_group,
                  LatticeConstant=list(cfg.material.lattice), RhoD=g.rho_d_um)
    if start is not None:
        values.update({key: value for key, value in _geometry_keys(start).items()
                       if key not in ("p4", "p5") or start.p4 or start.p5})
    values.update(_panel_keys(cfg))
    if panel_shifts_file is not None:
        values["PanelShiftsFile"] = str(panel_shifts_file)
    values.update(_sentinel_keys(result))
    comment = Entry("", "", f" simulated by midas-ref simulate: scenario {cfg.name}, seed {cfg.seed}{note}")
    return ParameterFile((comment,)).with_values(**values)


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise SimulationError(f"output {out_dir} exists and is not a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SimulationError(f"cannot create output folder {out_dir}: {exc.strerror or exc}") from None
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise SimulationError(f"output folder {out_dir} is not writable")


def _write_frames(path: Path, frames: np.ndarray, fmt: str, dtype: str, dark: np.ndarray | None,
                  parameters: dict) -> None:
    if fmt == "tif":
        write_tiff(path, frames if frames.shape[0] > 1 else frames[0])
    elif fmt == "ge":
        if dtype == "uint16":
            write_ge(path, frames)
        else:  # GE layout (8192-byte header) with the dtype's MIDAS DataType
            write_raw(path, frames, _RAW_DATA_TYPE[dtype], _GE_HEAD_SIZE)
    elif fmt == "h5":
        write_hdf5(path, frames, "exchange/data", dark=dark,
                   attrs={"midas_ref_simulate": "expected counts + noise, see truth.json"})
    else:
        from midas_ref.io import write_midas_zip

        write_midas_zip(path, frames, dark=dark, parameters=parameters)


def _zip_parameters(pf: ParameterFile) -> dict:
    """Analysis parameters stored in a MIDAS zip: the calibrator keys except the file-location ones."""
    skip = {"Folder", "FileStem", "Ext", "StartNr", "EndNr", "Padding", "Dark", "dataLoc", "darkLoc", "DataType",
            "HeadSize", "PanelShiftsFile"}
    return {key: pf.get(key) for key in pf.keys() if key not in skip}


def write_simulation(result: SimulationResult, out_dir: str | os.PathLike, fmt: str = "tif", *,
                     perturb: bool = False) -> SimulationFiles:
    """Write the output folder of ``result`` (see the module docstring).

    Parameters
    ----------
    result : SimulationResult
    out_dir : path-like
        Created if missing; existing files of the same names are replaced.
    fmt : {"tif", "ge", "h5", "zarr"}
        Image format; all are read back by :func:`midas_ref.io.read_frames`.
    perturb : bool
        Put a perturbed start geometry (:func:`perturbed_geometry`) into ``params.txt``; otherwise it holds
        no Lsd, BC, tilts or distortion.

    Returns
    -------
    SimulationFiles

    Raises
    ------
    SimulationError
        Unknown format, or the folder cannot be created or written.
    """
    if fmt not in FORMATS:
        raise SimulationError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    out_dir = Path(out_dir).resolve()
    _check_out_dir(out_dir)
    cfg = result.config
    ext, dark_ext = FORMATS[fmt]
    number = f"{1:0{_PADDING}d}"
    image = out_dir / f"{cfg.material.name}_{number}{ext}"
    dark = out_dir / f"dark_{number}{dark_ext}" if result.dark is not None and dark_ext else None
    shifts_truth = out_dir / "panelshifts_truth.txt" if cfg.panels is not None else None
    shifts_fit = out_dir / "panelshifts.txt" if cfg.panels is not None else None
    start = perturbed_geometry(cfg) if perturb else None
    note = "; start geometry perturbed from the truth" if perturb else "; no geometry (see truth.json)"
    params = calibrator_parameters(result, image=image, dark=dark, fmt=fmt, start=start,
                                   panel_shifts_file=shifts_fit, note=note)
    truth_params = calibrator_parameters(result, image=image, dark=dark, fmt=fmt, start=cfg.geometry,
                                         panel_shifts_file=shifts_truth, note="; TRUE geometry")
    truth_params = truth_params.with_values(p4=cfg.geometry.p4, p5=cfg.geometry.p5)
    try:
        _write_frames(image, result.frames, fmt, cfg.response.dtype, result.dark, _zip_parameters(params))
        if dark is not None:
            _write_frames(dark, result.dark, fmt, cfg.response.dtype, None, {})
        if shifts_truth is not None:
            write_panel_shifts(shifts_truth, cfg.panels)
        write_parameter_file(params, out_dir / "params.txt")
        write_parameter_file(truth_params, out_dir / "truth_params.txt")
        files = {"image": image.name, "dark": None if dark is None else dark.name, "params": "params.txt",
                 "truth_params": "truth_params.txt",
                 "panel_shifts": None if shifts_truth is None else shifts_truth.name}
        truth = truth_dict(result, start=start, files=files)
        write_text_atomic(out_dir / "truth.json", json.dumps(truth, indent=1, allow_nan=False) + "\n")
    except PermissionError as exc:
        raise SimulationError(f"cannot write into {out_dir}: {exc.strerror or exc}") from None
    return SimulationFiles(out_dir, image, dark, out_dir / "params.txt", out_dir / "truth.json",
                           out_dir / "truth_params.txt", shifts_truth)
