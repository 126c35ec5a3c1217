"""midas-ref: reference implementation of MIDAS-style powder-calibrant detector calibration.

The public API is re-exported here. Importing this package does not import numba; the kernels are
compiled lazily on first use.
"""

from .errors import (CalibrationError, GeometryError, ImageReadError, MidasRefError,
                     ParameterFileError, RingTableError)
from .params import Geometry, PanelLayout, PanelShift, default_rho_d_um

__version__ = "0.1.0"

__all__ = [
    "CalibrationError", "GeometryError", "ImageReadError", "MidasRefError", "ParameterFileError",
    "RingTableError", "Geometry", "PanelLayout", "PanelShift", "default_rho_d_um", "__version__",
]
