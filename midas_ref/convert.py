"""Paired converters MIDAS ↔ pyFAI PONI ↔ Fit2D, and PONI / Fit2D text files.

The formulas are those of ``/work/shared/spec/conventions.md`` §1.3 (derived and verified against pyFAI).
Image convention used throughout: array index ``(row, col)``; MIDAS ``Z`` = row, ``Y`` = column; pyFAI
``dim1`` = rows (``poni1``, ``pixel1``), ``dim2`` = columns (``poni2``, ``pixel2``); Fit2D ``centerX`` is
along columns, ``centerY`` along rows, as pyFAI's ``getFit2D``/``setFit2D`` define them on the *same*
image array (real Fit2D may flip images on reading; see pyFAI's ``setFit2D`` docstring).

Axis map: pyFAI axis 1 = +Z_MIDAS, axis 2 = −Y_MIDAS, axis 3 = +X_MIDAS (beam). Then

* ``rot1 = −tz``, ``rot2 = ty``, ``rot3 = tx``;
* ``dist = Lsd·cos ty·cos tz``;
* ``poni1 = (BC_Z + ½)·px − Lsd·sin ty``, ``poni2 = (BC_Y + ½)·px − Lsd·cos ty·sin tz``;
* Fit2D: ``directDist = Lsd``, ``centerX = BC_Y + ½``, ``centerY = BC_Z + ½``,
  ``cos tilt = cos ty·cos tz``, ``tiltPlanRotation = atan2(sin ty, cos ty·sin tz)``.

Neither PONI nor Fit2D can express the MIDAS radial distortion (p0..p5); Fit2D has no rotation about the
beam (tx, which changes η only, never 2θ).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, replace

from .atomic import write_text_atomic
from .detector import Geometry
from .errors import GeometryError, ParameterFileError

__all__ = ["PoniGeometry", "Fit2DGeometry", "midas_to_poni", "poni_to_midas", "midas_to_fit2d",
           "fit2d_to_midas", "flip_poni_ud", "write_poni", "read_poni", "write_fit2d", "read_fit2d",
           "poni_text", "fit2d_text"]

#: µm per m. Convert by dividing or multiplying by it (200 / 1e6 == 0.0002, but 200 * 1e-6 is not).
_UM_PER_M = 1e6
#: Relative pixel-size mismatch above which pixels count as non-square (MIDAS has one pixel size).
_SQUARE_PIXEL_RTOL = 1e-9


@dataclass(frozen=True)
class PoniGeometry:
    """A pyFAI PONI geometry with a flat, undistorted detector of regular pixels.

    Parameters
    ----------
    dist_m : float
        Sample → detector-plane distance along the plane normal, m.
    poni1_m, poni2_m : float
        Foot of that normal on the detector along rows (dim1) and columns (dim2), m, from the outer corner
        of pixel (0, 0).
    rot1_rad, rot2_rad, rot3_rad : float
        pyFAI rotations, rad.
    pixel1_m, pixel2_m : float
        Pixel size along rows and columns, m.
    wavelength_m : float or None
        X-ray wavelength, m.
    shape : tuple of int (rows, cols) or None
        Detector shape (pyFAI ``max_shape``); unknown for PONI v1 files.
    """

    dist_m: float
    poni1_m: float
    poni2_m: float
    rot1_rad: float
    rot2_rad: float
    rot3_rad: float
    pixel1_m: float
    pixel2_m: float
    wavelength_m: float | None = None
    shape: tuple[int, int] | None = None


@dataclass(frozen=True)
class Fit2DGeometry:
    """A Fit2D geometry, as pyFAI's ``getFit2D``/``setFit2D`` define it on the same image array.

    Parameters
    ----------
    direct_dist_mm : float
        Sample → detector distance along the beam, mm.
    center_x_px, center_y_px : float
        Beam centre along columns (X) and rows (Y), pixels, origin at the outer corner of pixel (0, 0).
    tilt_deg : float
        Detector tilt, degrees (≥ 0).
    tilt_plan_rotation_deg : float
        Azimuth of the tilt plane, degrees (undefined when ``tilt_deg == 0``).
    pixel_x_um, pixel_y_um : float
        Pixel size along columns and rows, µm.
    wavelength_angstrom : float or None
        X-ray wavelength, Å.
    """

    direct_dist_mm: float
    center_x_px: float
    center_y_px: float
    tilt_deg: float
    tilt_plan_rotation_deg: float
    pixel_x_um: float
    pixel_y_um: float
    wavelength_angstrom: float | None = None


def _check_no_distortion(geometry: Geometry, target: str, ignore_distortion: bool) -> None:
    if not ignore_distortion and any(p != 0 for p in geometry.distortion):
        names = ("p0", "p1", "p2", "p3_deg", "p4", "p5")
        nonzero = ", ".join(f"{n} = {v!r}" for n, v in zip(names, geometry.distortion) if v != 0)
        raise GeometryError(f"the MIDAS distortion ({nonzero}) cannot be expressed in {target}; "
                            "set it to zero or ignore it explicitly (ignore_distortion=True)")


def _square_pixel_um(size1_um: float, size2_um: float) -> float:
    if not math.isclose(size1_um, size2_um, rel_tol=_SQUARE_PIXEL_RTOL):
        raise GeometryError(f"pixels are not square ({size1_um!r} µm × {size2_um!r} µm); "
                            "MIDAS has one pixel size")
    return size1_um


def midas_to_poni(geometry: Geometry, wavelength_angstrom: float | None = None, *,
                  ignore_distortion: bool = False) -> PoniGeometry:
    """Convert a MIDAS geometry to pyFAI PONI (same 2θ at every pixel; χ = 90° − η).

    Parameters
    ----------
    geometry : Geometry
        MIDAS geometry.
    wavelength_angstrom : float, optional
        X-ray wavelength, Å; stored as ``wavelength_m``.
    ignore_distortion : bool
        Drop p0..p5 instead of raising.

    Returns
    -------
    PoniGeometry

    Raises
    ------
    GeometryError
        Non-zero distortion and ``ignore_distortion`` is False.

    Notes
    -----
    ``rot1 = −tz``, ``rot2 = ty``, ``rot3 = tx``, ``dist = Lsd·cos ty·cos tz``,
    ``poni1 = (BC_Z + ½)·px − Lsd·sin ty``, ``poni2 = (BC_Y + ½)·px − Lsd·cos ty·sin tz``
    (conventions.md §1.3).

    Examples
    --------
    >>> from midas_ref.detector import Geometry
    >>> poni = midas_to_poni(Geometry(1e6, 1023.5, 1023.5, 200.0, 2048, 2048), 0.2)
    >>> round(poni.dist_m, 9), round(poni.poni1_m, 9), poni.shape
    (1.0, 0.2048, (2048, 2048))
    """
    _check_no_distortion(geometry, "a PONI geometry", ignore_distortion)
    tx, ty, tz = (math.radians(a) for a in (geometry.tx_deg, geometry.ty_deg, geometry.tz_deg))
    lsd_m = geometry.lsd_um / _UM_PER_M
    px_m = geometry.px_um / _UM_PER_M
    return PoniGeometry(
        dist_m=lsd_m * math.cos(ty) * math.cos(tz),
        poni1_m=(geometry.bc_z_px + 0.5) * px_m - lsd_m * math.sin(ty),
        poni2_m=(geometry.bc_y_px + 0.5) * px_m - lsd_m * math.cos(ty) * math.sin(tz),
        rot1_rad=-tz, rot2_rad=ty, rot3_rad=tx,
        pixel1_m=px_m, pixel2_m=px_m,
        wavelength_m=None if wavelength_angstrom is None else wavelength_angstrom / 1e10,
        shape=geometry.shape,
    )


def poni_to_midas(poni: PoniGeometry, *, n_pixels_y: int | None = None, n_pixels_z: int | None = None,
                  rho_d_um: float | None = None) -> Geometry:
    """Convert a pyFAI PONI geometry to MIDAS (no distortion).

    Parameters
    ----------
    poni : PoniGeometry
        Square pixels, flat detector.
    n_pixels_y, n_pixels_z : int, optional
        Image columns and rows; default ``poni.shape`` (required when it is None, e.g. PONI v1).
    rho_d_um : float, optional
        Distortion normaliser ``RhoD``, µm; default as :class:`~midas_ref.detector.Geometry`.

    Returns
    -------
    Geometry

    Raises
    ------
    GeometryError
        Non-square pixels, unknown detector size, or a tilt of 90° or more.

    Notes
    -----
    ``Lsd = dist/(cos rot1·cos rot2)``, ``BC_Z = (poni1 + Lsd·sin rot2)/px − ½``,
    ``BC_Y = (poni2 − Lsd·cos rot2·sin rot1)/px − ½``, ``tx = rot3``, ``ty = rot2``, ``tz = −rot1``.
    """
    px_um = _square_pixel_um(poni.pixel1_m * _UM_PER_M, poni.pixel2_m * _UM_PER_M)
    shape = poni.shape if poni.shape is not None else (None, None)
    rows = shape[0] if n_pixels_z is None else n_pixels_z
    cols = shape[1] if n_pixels_y is None else n_pixels_y
    if rows is None or cols is None:
        raise GeometryError("the detector size is unknown (PONI without max_shape): "
                            "give n_pixels_y and n_pixels_z")
    cos_tilt = math.cos(poni.rot1_rad) * math.cos(poni.rot2_rad)
    if cos_tilt <= 0:
        raise GeometryError(f"tilt of 90° or more (rot1 = {poni.rot1_rad!r}, rot2 = {poni.rot2_rad!r} rad) "
                            "has no MIDAS beam centre")
    lsd_m = poni.dist_m / cos_tilt
    return Geometry(
        lsd_um=lsd_m * _UM_PER_M,
        bc_y_px=(poni.poni2_m - lsd_m * math.cos(poni.rot2_rad) * math.sin(poni.rot1_rad)) / poni.pixel2_m - 0.5,
        bc_z_px=(poni.poni1_m + lsd_m * math.sin(poni.rot2_rad)) / poni.pixel1_m - 0.5,
        px_um=px_um, n_pixels_y=int(cols), n_pixels_z=int(rows),
        tx_deg=math.degrees(poni.rot3_rad), ty_deg=math.degrees(poni.rot2_rad),
        tz_deg=-math.degrees(poni.rot1_rad),
        rho_d_um=rho_d_um,
    )


def midas_to_fit2d(geometry: Geometry, wavelength_angstrom: float | None = None, *,
                   ignore_distortion: bool = False, ignore_tx: bool = False) -> Fit2DGeometry:
    """Convert a MIDAS geometry to Fit2D (pyFAI's definition on the same image array).

    Parameters
    ----------
    geometry : Geometry
    wavelength_angstrom : float, optional
        X-ray wavelength, Å.
    ignore_distortion : bool
        Drop p0..p5 instead of raising.
    ignore_tx : bool
        Drop tx (rotation about the beam: changes η, never 2θ) instead of raising.

    Returns
    -------
    Fit2DGeometry

    Raises
    ------
    GeometryError
        Non-zero distortion or tx that was not explicitly ignored.

    Notes
    -----
    ``directDist = Lsd``, ``centerX = BC_Y + ½``, ``centerY = BC_Z + ½``,
    ``tilt = atan2(√(sin²ty + cos²ty·sin²tz), cos ty·cos tz)`` (= ``acos(cos ty·cos tz)``, but accurate
    for small tilts), ``tiltPlanRotation = atan2(sin ty, cos ty·sin tz)``.
    """
    _check_no_distortion(geometry, "Fit2D", ignore_distortion)
    if geometry.tx_deg != 0 and not ignore_tx:
        raise GeometryError(f"the tilt about the beam tx_deg = {geometry.tx_deg!r}° has no Fit2D counterpart; "
                            "it changes η only, not 2θ: ignore it explicitly (ignore_tx=True)")
    ty, tz = math.radians(geometry.ty_deg), math.radians(geometry.tz_deg)
    sin_ty, cos_ty_sin_tz = math.sin(ty), math.cos(ty) * math.sin(tz)
    return Fit2DGeometry(
        direct_dist_mm=geometry.lsd_um / 1e3,
        center_x_px=geometry.bc_y_px + 0.5,
        center_y_px=geometry.bc_z_px + 0.5,
        tilt_deg=math.degrees(math.atan2(math.hypot(sin_ty, cos_ty_sin_tz), math.cos(ty) * math.cos(tz))),
        tilt_plan_rotation_deg=math.degrees(math.atan2(sin_ty, cos_ty_sin_tz)),
        pixel_x_um=geometry.px_um, pixel_y_um=geometry.px_um,
        wavelength_angstrom=wavelength_angstrom,
    )


def fit2d_to_midas(fit2d: Fit2DGeometry, *, n_pixels_y: int, n_pixels_z: int, tx_deg: float = 0.0,
                   rho_d_um: float | None = None) -> Geometry:
    """Convert a Fit2D geometry to MIDAS (no distortion).

    Parameters
    ----------
    fit2d : Fit2DGeometry
        Square pixels.
    n_pixels_y, n_pixels_z : int
        Image columns and rows.
    tx_deg : float
        Rotation about the beam, degrees (Fit2D has none).
    rho_d_um : float, optional
        Distortion normaliser ``RhoD``, µm.

    Returns
    -------
    Geometry

    Raises
    ------
    GeometryError
        Non-square pixels.

    Notes
    -----
    ``sin ty = sin tilt·sin tpr``, ``tan tz = sin tilt·cos tpr / cos tilt``.
    """
    px_um = _square_pixel_um(fit2d.pixel_y_um, fit2d.pixel_x_um)
    tilt, tpr = math.radians(fit2d.tilt_deg), math.radians(fit2d.tilt_plan_rotation_deg)
    return Geometry(
        lsd_um=fit2d.direct_dist_mm * 1e3,
        bc_y_px=fit2d.center_x_px - 0.5,
        bc_z_px=fit2d.center_y_px - 0.5,
        px_um=px_um, n_pixels_y=n_pixels_y, n_pixels_z=n_pixels_z,
        tx_deg=tx_deg,
        ty_deg=math.degrees(math.asin(math.sin(tilt) * math.sin(tpr))),
        tz_deg=math.degrees(math.atan2(math.sin(tilt) * math.cos(tpr), math.cos(tilt))),
        rho_d_um=rho_d_um,
    )


def flip_poni_ud(poni: PoniGeometry) -> PoniGeometry:
    """PONI geometry of the up-down flipped image ``image[::-1, :]`` (e.g. Dioptas ↔ pyFAI).

    2θ is preserved pixel for pixel: ``tth'[i, j] = tth[rows − 1 − i, j]``; the azimuth is mirrored:
    ``χ'[i, j] = −χ[rows − 1 − i, j]``. Applying it twice gives the original geometry.

    Parameters
    ----------
    poni : PoniGeometry
        Must know its ``shape``.

    Returns
    -------
    PoniGeometry

    Raises
    ------
    GeometryError
        ``poni.shape`` is None.

    Notes
    -----
    Flipping rows reverses detector axis 1 (``p1' = rows·pixel1 − p1``). Conjugating pyFAI's
    ``R3(rot3)·R2(−rot2)·R1(−rot1)`` by the mirror ``diag(−1, 1, 1)`` (applied in the lab too, which
    keeps 2θ and negates χ) gives ``rot1' = rot1``, ``rot2' = −rot2``, ``rot3' = −rot3``,
    ``poni1' = rows·pixel1 − poni1``.
    """
    if poni.shape is None:
        raise GeometryError("flipping a PONI geometry needs the detector shape (max_shape)")
    return replace(poni, poni1_m=poni.shape[0] * poni.pixel1_m - poni.poni1_m,
                   rot2_rad=-poni.rot2_rad, rot3_rad=-poni.rot3_rad)


# ---------------------------------------------------------------------------------------------- files

_PONI_HEADER = ("# midas-ref PONI export: pyFAI PONI format version 2; axes: dim1 = image rows = MIDAS Z, "
                "dim2 = image columns = MIDAS -Y, origin at the outer corner of pixel (0, 0); m and rad")


def poni_text(poni: PoniGeometry) -> str:
    """The PONI v2 file text of ``poni`` (pyFAI's own layout, plus one midas-ref header comment)."""
    config = {"pixel1": float(poni.pixel1_m), "pixel2": float(poni.pixel2_m)}
    if poni.shape is not None:
        config["max_shape"] = [int(poni.shape[0]), int(poni.shape[1])]
    lines = ["# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis",
             _PONI_HEADER,
             "poni_version: 2",
             "Detector: Detector",
             f"Detector_config: {json.dumps(config)}",
             f"Distance: {float(poni.dist_m)!r}",
             f"Poni1: {float(poni.poni1_m)!r}",
             f"Poni2: {float(poni.poni2_m)!r}",
             f"Rot1: {float(poni.rot1_rad)!r}",
             f"Rot2: {float(poni.rot2_rad)!r}",
             f"Rot3: {float(poni.rot3_rad)!r}"]
    if poni.wavelength_m is not None:
        lines.append(f"Wavelength: {float(poni.wavelength_m)!r}")
    return "\n".join(lines) + "\n"


def write_poni(path: str | os.PathLike, poni: PoniGeometry) -> None:
    """Write ``poni`` as a pyFAI PONI v2 file (atomically); ``pyFAI.load(path)`` reads it."""
    write_text_atomic(path, poni_text(poni))


def _read_key_values(path: str | os.PathLike, separator: str) -> dict[str, tuple[str, int]]:
    """``{lower-case key: (value, line number)}``; comments ``#`` skipped; the last entry of a key wins."""
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ParameterFileError(f"cannot read: {exc}", path=str(path)) from exc
    entries = {}
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if separator not in stripped:
            raise ParameterFileError(f"expected 'key {separator} value', got {stripped!r}", path=str(path),
                                     line=number)
        key, value = stripped.split(separator, 1)
        entries[key.strip().lower()] = (value.strip(), number)
    return entries


def _float_entry(entries, name: str, path, required: bool = True) -> float | None:
    """The number under key ``name`` (matched case-insensitively); None if absent and not required."""
    if name.lower() not in entries:
        if required:
            raise ParameterFileError("missing", path=str(path), key=name)
        return None
    value, line = entries[name.lower()]
    if value.lower() == "none":
        if required:
            raise ParameterFileError("is None", path=str(path), line=line, key=name)
        return None
    try:
        number = float(value)
    except ValueError:
        raise ParameterFileError(f"not a number: {value!r}", path=str(path), line=line, key=name) from None
    if not math.isfinite(number):
        raise ParameterFileError(f"not finite: {value!r}", path=str(path), line=line, key=name)
    return number


def _named_detector(name: str, config: dict, path) -> dict:
    """Pixel sizes and shape of a pyFAI named detector (needs pyFAI installed)."""
    try:
        from pyFAI.detectors import detector_factory
    except ImportError:
        raise GeometryError(f"{path}: detector {name!r} has no pixel1/pixel2 in Detector_config and pyFAI "
                            "is not installed to look it up") from None
    try:
        detector = detector_factory(name, config or None)
    except Exception as exc:  # pyFAI raises assorted errors for unknown names
        raise GeometryError(f"{path}: pyFAI does not know detector {name!r}: {exc}") from exc
    if detector.splinefile or not detector.IS_FLAT or not detector.IS_CONTIGUOUS:
        raise GeometryError(f"{path}: detector {name!r} is not a flat, regular, undistorted pixel grid")
    resolved = {"pixel1": detector.pixel1, "pixel2": detector.pixel2}
    if detector.max_shape is not None:
        resolved["max_shape"] = list(detector.max_shape)
    return resolved


def read_poni(path: str | os.PathLike) -> PoniGeometry:
    """Read a pyFAI PONI file, version 1 (``PixelSize1/2``) or 2 / 2.1 / 3 (``Detector_config``).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    PoniGeometry
        ``shape`` is None when the file gives no ``max_shape`` (always for version 1).

    Raises
    ------
    ParameterFileError
        Unreadable file, missing or malformed key.
    GeometryError
        A geometry midas-ref cannot represent: spline distortion, detector orientation other than pyFAI's
        native 3, parallax correction, an unknown named detector.
    """
    entries = _read_key_values(path, ":")
    config: dict = {}
    if "detector_config" in entries:
        value, line = entries["detector_config"]
        try:
            config = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ParameterFileError(f"not JSON: {exc}", path=str(path), line=line,
                                     key="Detector_config") from None
        if not isinstance(config, dict):
            raise ParameterFileError("not a JSON object", path=str(path), line=line, key="Detector_config")
    name = entries.get("detector", ("Detector", 0))[0]
    spline = entries.get("splinefile", (None, 0))[0] or config.get("splinefile")
    if spline is not None and str(spline).lower() != "none":
        raise GeometryError(f"{path}: spline distortion ({spline}) cannot be converted")
    if str(config.get("orientation", 3)) != "3":
        raise GeometryError(f"{path}: detector orientation {config['orientation']} is not supported "
                            "(only pyFAI's native orientation 3)")
    if entries.get("parallax", ("false", 0))[0].lower() == "true":
        raise GeometryError(f"{path}: parallax correction cannot be converted")
    if "pixelsize1" in entries and "pixelsize2" in entries and "pixel1" not in config:
        config = {**config, "pixel1": _float_entry(entries, "PixelSize1", path),
                  "pixel2": _float_entry(entries, "PixelSize2", path)}
    if "pixel1" not in config and name.lower() != "detector":
        config = _named_detector(name, config, path)
    try:
        pixel1, pixel2 = float(config["pixel1"]), float(config["pixel2"])
        shape = config.get("max_shape")
        shape = None if shape is None else (int(shape[0]), int(shape[1]))
    except KeyError:
        raise ParameterFileError("no pixel size (Detector_config pixel1/pixel2 or PixelSize1/2)",
                                 path=str(path)) from None
    except (TypeError, ValueError, IndexError):
        raise ParameterFileError("pixel1/pixel2 must be numbers and max_shape [rows, cols]", path=str(path),
                                 key="Detector_config") from None
    if not (pixel1 > 0 and pixel2 > 0 and math.isfinite(pixel1 * pixel2)) or (shape and min(shape) <= 0):
        raise ParameterFileError(f"pixel sizes {pixel1!r}, {pixel2!r} m and shape {shape} must be positive",
                                 path=str(path))
    dist_key = "Dist" if "dist" in entries and "distance" not in entries else "Distance"
    return PoniGeometry(
        dist_m=_float_entry(entries, dist_key, path),
        poni1_m=_float_entry(entries, "Poni1", path),
        poni2_m=_float_entry(entries, "Poni2", path),
        rot1_rad=_float_entry(entries, "Rot1", path),
        rot2_rad=_float_entry(entries, "Rot2", path),
        rot3_rad=_float_entry(entries, "Rot3", path),
        pixel1_m=pixel1, pixel2_m=pixel2,
        wavelength_m=_float_entry(entries, "Wavelength", path, required=False),
        shape=shape,
    )


#: Fit2D file keys (pyFAI ``getFit2D`` spelling) → Fit2DGeometry fields.
_FIT2D_KEYS = (("directDist", "direct_dist_mm"), ("centerX", "center_x_px"), ("centerY", "center_y_px"),
               ("tilt", "tilt_deg"), ("tiltPlanRotation", "tilt_plan_rotation_deg"),
               ("pixelX", "pixel_x_um"), ("pixelY", "pixel_y_um"), ("wavelength", "wavelength_angstrom"))
_FIT2D_HEADER = ("# midas-ref Fit2D geometry, format version 1 (key = value; pyFAI getFit2D names)\n"
                 "# axes: X = image columns, Y = image rows, origin at the outer corner of pixel (0, 0); "
                 "directDist mm, centres px, angles deg, pixels um, wavelength Angstrom\n")


def fit2d_text(fit2d: Fit2DGeometry) -> str:
    """The Fit2D ``key = value`` text of ``fit2d``."""
    lines = [f"{key} = {float(getattr(fit2d, field))!r}" for key, field in _FIT2D_KEYS
             if getattr(fit2d, field) is not None]
    return _FIT2D_HEADER + "\n".join(lines) + "\n"


def write_fit2d(path: str | os.PathLike, fit2d: Fit2DGeometry) -> None:
    """Write ``fit2d`` as ``key = value`` lines (atomically); :func:`read_fit2d` reads it back."""
    write_text_atomic(path, fit2d_text(fit2d))


def read_fit2d(path: str | os.PathLike) -> Fit2DGeometry:
    """Read a file written by :func:`write_fit2d` (keys case-insensitive; ``wavelength`` optional).

    Raises
    ------
    ParameterFileError
        Unreadable file, missing or malformed key.
    """
    entries = _read_key_values(path, "=")
    values = {field: _float_entry(entries, key, path, required=(field != "wavelength_angstrom"))
              for key, field in _FIT2D_KEYS}
    return Fit2DGeometry(**values)
