"""A :class:`SimulationConfig` from a MIDAS parameter file (the keys the calibrator reads).

Keys used: ``NrPixels`` or ``NrPixelsY/Z``, ``px``, ``Lsd``, ``BC``, ``tx``, ``ty``, ``tz``, ``p0``–``p5``,
``RhoD``, ``Wavelength``, ``SpaceGroup``, ``LatticeConstant``, the panel grid ``NPanelsY/Z``,
``PanelSizeY/Z``, ``PanelGapsY/Z``, ``FixPanelID``, ``PanelShiftsFile`` (``panelshifts.txt`` format,
manual §7), and the sentinels ``GapIntensity`` / ``BadPxIntensity``. Every other key is ignored.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from midas_ref.errors import GeometryError, ParameterFileError
from midas_ref.panels import Panels, read_panel_shifts
from midas_ref.params import (GEOMETRY_KEYS, PANEL_LAYOUT_KEYS, ParameterFile, geometry_from_params,
                              panel_layout_from_params, params_from_geometry)

from .config import CEO2, LAB6, DetectorResponse, Material, SimulationConfig

__all__ = ["config_from_params"]

#: Material names (file stems) of the usual calibrants, by space group.
_NAMES = {CEO2["space_group"]: CEO2["name"], LAB6["space_group"]: LAB6["name"]}


def _resolve(path_text: str, pf: ParameterFile) -> Path:
    """A file named in the parameter file: as given (cwd-relative), else relative to the parameter file."""
    path = Path(path_text)
    if path.is_absolute() or path.exists() or pf.path is None:
        return path
    beside = Path(pf.path).parent / path
    return beside if beside.exists() else path


def _geometry(pf: ParameterFile, base: SimulationConfig | None):
    if not any(pf.has(key) for key, _ in GEOMETRY_KEYS):
        if base is None:
            pf.require("NrPixelsY", "NrPixelsZ", "px", "Lsd", "BC")
        return base.geometry
    merged = pf
    if base is not None:
        # base geometry first, the file's lines after it (later lines win); RhoD is recomputed unless given
        base_pf = params_from_geometry(base.geometry).set("RhoD", None)
        merged = ParameterFile(base_pf.entries + pf.entries, pf.path)
    return geometry_from_params(merged)


def _material(pf: ParameterFile, base: SimulationConfig | None) -> Material:
    keys = ("SpaceGroup", "LatticeConstant", "Wavelength")
    if base is None:
        pf.require(*keys)
    if not any(pf.has(k) for k in keys):
        return base.material
    space_group = pf.get("SpaceGroup") if pf.has("SpaceGroup") else base.material.space_group
    lattice = pf.get("LatticeConstant") if pf.has("LatticeConstant") else base.material.lattice
    wavelength = pf.get("Wavelength") if pf.has("Wavelength") else base.material.wavelength_angstrom
    name = _NAMES.get(space_group, "sim") if pf.has("SpaceGroup") else base.material.name
    return Material(space_group, tuple(lattice), wavelength, name)


def _panels(pf: ParameterFile, base: SimulationConfig | None, shifts_path, shape) -> Panels | None:
    if any(pf.has(key) for key, _ in PANEL_LAYOUT_KEYS):
        layout = panel_layout_from_params(pf)
    else:
        layout = None if base is None or base.panels is None else base.panels.layout
    if layout is None:
        return None
    if shifts_path is None and pf.has("PanelShiftsFile"):
        shifts_path = _resolve(pf.get("PanelShiftsFile"), pf)
    if shifts_path is not None:
        return read_panel_shifts(shifts_path, layout)
    if base is not None and base.panels is not None and base.panels.layout == layout:
        return base.panels
    return Panels.from_shifts(layout)


def config_from_params(pf: ParameterFile, base: SimulationConfig | None = None, *,
                       panel_shifts_path: str | os.PathLike | None = None, response_changes: dict | None = None,
                       **changes) -> SimulationConfig:
    """Configuration from the keys of ``pf``, on top of ``base`` (a scenario) when given.

    Without ``base`` the detector (NrPixels or NrPixelsY/Z, px), geometry (Lsd, BC) and material
    (SpaceGroup, LatticeConstant, Wavelength) keys are required; with a base, keys present in ``pf`` replace
    the base's values. Peak shape, intensities and noise come from ``base`` or the defaults. Precedence:
    base < parameter file < ``response_changes`` / ``changes``; the configuration is validated once, at the end.

    Parameters
    ----------
    pf : ParameterFile
    base : SimulationConfig, optional
    panel_shifts_path : path-like, optional
        Per-panel corrections (``ID dY dZ [dTheta [dLsd [dP2]]]``); default the file's ``PanelShiftsFile``
        (relative to the working directory, else to the parameter file), else zero shifts.
    response_changes : dict, optional
        Fields of :class:`DetectorResponse` to replace after the file's sentinels.
    **changes
        Other :class:`SimulationConfig` fields to replace (``peak``, ``intensity``, ``seed`` ...).

    Raises
    ------
    ParameterFileError
        Missing or malformed keys, unreadable panel shifts file.
    SimulationError
        Values that make no valid simulation (e.g. the fixed panel has a shift).
    """
    geometry = _geometry(pf, base)
    material = _material(pf, base)
    panels = _panels(pf, base, panel_shifts_path, geometry.shape)
    response = base.response if base is not None else DetectorResponse()
    sentinels = {}
    if pf.has("GapIntensity"):
        sentinels["gap_value"] = pf.get("GapIntensity")
    if pf.has("BadPxIntensity"):
        sentinels["bad_pixel_value"] = pf.get("BadPxIntensity")
    # a flag given on the command line wins over the file's sentinel of the same field
    response = replace(response, **{**sentinels, **(response_changes or {})})
    fields = dict(geometry=geometry, material=material, panels=panels, response=response)
    if pf.has("FixPanelID"):
        fields["fix_panel_id"] = pf.get("FixPanelID")
    if base is None:
        fields["name"] = Path(pf.path or "params").stem
    fields.update(changes)
    try:
        if base is None:
            return SimulationConfig(**fields)
        return replace(base, **fields)
    except GeometryError as exc:
        raise ParameterFileError(str(exc), pf.path) from None
