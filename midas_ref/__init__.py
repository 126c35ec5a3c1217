"""midas-ref: reference implementation of MIDAS-style powder-calibrant detector calibration.

The public API is re-exported here. Importing this package does not import numba: the names below that live
in numba-backed modules are resolved on first access (PEP 562), and the kernels compile lazily on first use.
"""

from importlib import import_module

from .detector import Geometry, PanelLayout, PanelShift, default_rho_d_um
from .errors import (CalibrationError, GeometryError, ImageReadError, MidasRefError,
                     ParameterFileError, RingTableError)

__version__ = "0.1.0"

#: name → module of the lazily imported public API
_LAZY = {
    "read_parameter_file": "params", "write_refined_params": "params", "geometry_from_params": "params",
    "panel_layout_from_params": "params", "params_from_geometry": "params",
    "calibration_inputs": "inputs", "CalibrationInputs": "inputs", "panel_inputs": "inputs", "PanelInputs": "inputs",
    "ring_table": "rings",
    "load_image": "io",
    "pixel_to_r_eta": "geometry", "r_eta_to_pixel": "geometry", "two_theta_map": "geometry",
    "Panels": "panels", "read_panel_shifts": "panels", "write_panel_shifts": "panels",
    "extract_peaks": "profiles",
    "fit_geometry": "refine", "Tolerances": "refine", "PanelFreedom": "refine",
    "calibrate": "autocal", "CalibrationSettings": "autocal", "CalibrationResult": "autocal",
    "refine_panels": "panel_refine", "PanelSettings": "panel_refine", "PanelResult": "panel_refine",
}

__all__ = [
    "CalibrationError", "GeometryError", "ImageReadError", "MidasRefError", "ParameterFileError",
    "RingTableError", "Geometry", "PanelLayout", "PanelShift", "default_rho_d_um", "__version__", *_LAZY,
]


def __getattr__(name):
    if name in _LAZY:
        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
