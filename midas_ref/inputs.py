"""Set-up of a job: parameter file + image files → the typed inputs the library's computations take.

One set-up function per job, called alike by the command line (``midas-ref calibrate``, ``midas-ref
panels``) and by the validation harness, so that "validated exactly as the command runs" holds by
construction:

* :func:`calibration_inputs` → :class:`CalibrationInputs` for :func:`midas_ref.autocal.calibrate`;
* :func:`panel_inputs` → :class:`PanelInputs` for :func:`midas_ref.panel_refine.refine_panels`.

The rules both share live here once: :func:`tolerances_from_params` (the ``tol*`` keys),
:func:`calibrant_rings` (which rings can reach the detector), :func:`data_files` / :func:`load_series`
(the ``Folder/FileStem_<nr>Ext`` series of the File I/O keys). Bad input raises a
:class:`~midas_ref.errors.MidasRefError` subclass naming the key, flag or file; nothing here prints
(messages go to the optional ``say`` callback).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from .detector import Geometry, PanelLayout
from .errors import ImageReadError, ParameterFileError
from .params import (ParameterFile, geometry_from_params, panel_layout_from_params, params_from_zip,
                     parse_parameter_text, read_parameter_file)
from .rings import Ring, d_min_from_radius, ring_table

if TYPE_CHECKING:  # for the annotations only: importing these loads numba and the image readers
    from .autocal import CalibrationSettings
    from .io import LoadedImage
    from .panel_refine import PanelSettings
    from .panels import Panels

__all__ = ["CalibrationInputs", "calibration_inputs", "PanelInputs", "panel_inputs", "panel_settings_from_params",
           "check_panel_layout_fits", "panel_shifts_locations", "panel_layout_or_error", "CalibrationPanelJob",
           "calibration_panel_job",
           "tolerances_from_params", "calibrant_rings", "data_files", "load_series", "SeriesImage",
           "CALIBRATION_RING_REACH", "PANEL_RING_REACH", "DISTORTION_CHOICE_KEYS"]

#: Ring list of a calibration: rings out to this many detector diagonals at 0.15 × the distance hint, so
#: that the distance search (down to 0.05 m from a 1 m default) never runs out of rings to match.
CALIBRATION_RING_REACH = (2.0, 0.15)
#: Ring list of a panel refinement (the distance is known): 1.5 detector diagonals at the refined distance,
#: enough for a beam centre anywhere on the detector.
PANEL_RING_REACH = (1.5, 1.0)

#: Parameter-file keys that fix the distortion model of a calibration: when the file gives any of them, the terms
#: are fitted as its tolerances say (``CalibrationSettings.select_distortion`` False); otherwise the calibration
#: keeps only the terms the ring points support (:func:`midas_ref.model_select.select_distortion_terms`).
DISTORTION_CHOICE_KEYS = ("tolP", "tolP0", "tolP1", "tolP2", "tolP3", "tolP4", "DistortionOrder")

Say = Callable[[str], None]


def _quiet(message: str) -> None:
    pass


# ------------------------------------------------------------------------------------------ shared rules

def tolerances_from_params(pf: ParameterFile):
    """:class:`~midas_ref.refine.Tolerances` (search half-widths) from ``tolLsd``, ``tolBC``, ``tolTilts``,
    ``tolP``, ``tolP0``–``tolP4`` (absent or 0 → ``tolP``) and ``tolP3``.

    CalibrantPanelShiftsOMP let ``tolP3`` fall back to ``tolP`` too (quirk P5, which freezes p3 and so the
    p1 direction); we keep the CalibrantOMP default of 45° in both jobs.
    """
    from .refine import Tolerances

    for key in ("tolLsd", "tolBC", "tolTilts", "tolP", "tolP0", "tolP1", "tolP2", "tolP3", "tolP4"):
        if pf.has(key) and pf.get(key) < 0:
            raise ParameterFileError(f"a search half-width must be >= 0 (0 fixes the parameter), got {pf.get(key)!r}",
                                     pf.path, pf.line_of(key), key)
    return Tolerances(lsd_um=pf.get("tolLsd"), bc_px=pf.get("tolBC"), tilts_deg=pf.get("tolTilts"),
                      p0=pf.get("tolP0"), p1=pf.get("tolP1"), p2=pf.get("tolP2"), p3_deg=pf.get("tolP3"),
                      p4=pf.get("tolP4"))


def calibrant_rings(space_group: int, lattice, wavelength_angstrom: float, *, shape: tuple[int, int],
                    px_um: float, lsd_um: float, reach: tuple[float, float], rings_to_exclude=()) -> list[Ring]:
    """The calibrant rings that can fall on a detector: one rule for every job.

    A ring is listed when its radius at ``reach[1] × lsd_um`` is at most ``reach[0]`` detector diagonals
    (:func:`midas_ref.rings.d_min_from_radius`), whatever the beam centre.

    Parameters
    ----------
    space_group : int
    lattice : sequence of 6 float
        a, b, c (Å), α, β, γ (degrees).
    wavelength_angstrom : float
    shape : (int, int)
        Image ``(rows, cols)``.
    px_um : float
        Pixel size, µm.
    lsd_um : float
        Distance (or distance hint), µm.
    reach : (float, float)
        ``(diagonals, distance factor)``: :data:`CALIBRATION_RING_REACH` or :data:`PANEL_RING_REACH`.
    rings_to_exclude : iterable of int
        Ring numbers dropped from the list (numbering is kept).
    """
    diagonals, distance_factor = reach
    radius_um = math.hypot(*shape) * px_um * diagonals
    d_min = d_min_from_radius(wavelength_angstrom, distance_factor * lsd_um, radius_um)
    return ring_table(space_group, lattice, wavelength_angstrom, d_min_angstrom=d_min,
                      rings_to_exclude=rings_to_exclude)


def _beside(path_text: str | None, pf: ParameterFile) -> str | None:
    """A file named in the parameter file: absolute as given, relative to the parameter file's folder."""
    if not path_text or Path(path_text).is_absolute() or not pf.path:
        return path_text or None
    return str(Path(pf.path).parent / path_text)


def data_files(pf: ParameterFile) -> list[Path]:
    """``Folder/FileStem_<nr>Ext`` for nr = StartNr … EndNr, zero-padded to ``Padding`` digits.

    A relative ``Folder`` is relative to the parameter file's folder.

    Raises
    ------
    ParameterFileError
        A File I/O key is missing, or EndNr < StartNr.
    """
    pf.require("Folder", "FileStem", "Ext", "StartNr")
    start = int(pf.get("StartNr"))
    end = int(pf.get("EndNr")) if pf.has("EndNr") else start
    if end < start:
        raise ParameterFileError(f"EndNr {end} is below StartNr {start}", pf.path, key="EndNr")
    pad = int(pf.get("Padding", 6))
    folder = Path(_beside(pf.get("Folder"), pf))
    return [folder / f"{pf.get('FileStem')}_{nr:0{pad}d}{pf.get('Ext')}" for nr in range(start, end + 1)]


@dataclass(frozen=True)
class SeriesImage:
    """The average of a file series (:func:`load_series`).

    Attributes
    ----------
    image : ndarray of shape (NZ, NY), float64
        Mean of the dark-subtracted frames of every file, ImTransOpt applied.
    mask : ndarray of bool, same shape
        Union of the files' masks (True = masked).
    files : tuple of Path
    notes : tuple of str
        What the readers noticed (e.g. a Dark file that cannot be found).
    """

    image: np.ndarray
    mask: np.ndarray
    files: tuple[Path, ...]
    notes: tuple[str, ...]


def load_series(pf: ParameterFile) -> SeriesImage:
    """Read and average the :func:`data_files` of ``pf`` with its Dark, MaskFile, sentinels and ImTransOpt.

    A Dark file that does not exist means no dark, with a note (the legacy programs subtract nothing when
    the Dark cannot be read, and parameter files often name a placeholder). ``HeadSize`` absent means 0 for
    raw files (CalibrantPanelShiftsOMP) and 8192 bytes for GE files.

    Raises
    ------
    ImageReadError
        A data file is missing or unreadable (the first missing one is named, with the count of the rest).
    """
    from .io import infer_file_type, load_image

    files = data_files(pf)
    missing = [str(f) for f in files if not f.exists()]
    if missing:
        raise ImageReadError(f"data file not found: {missing[0]}" + (f" (and {len(missing) - 1} more)"
                                                                      if len(missing) > 1 else ""))
    dark = _beside(pf.get("Dark", None), pf)
    notes = []
    if dark and not Path(dark).exists():
        notes.append(f"Dark file {dark} not found: no dark subtracted")
        dark = None
    mask_file = _beside(pf.get("MaskFile", None), pf)
    data_type = pf.get("DataType", None)
    image_sum, mask = None, None
    for path in files:
        kind = infer_file_type(path, data_type=data_type)
        loaded = load_image(path, dark_path=dark, file_type=kind,
                            n_pixels_y=pf.get("NrPixelsY", None), n_pixels_z=pf.get("NrPixelsZ", None),
                            data_type=data_type if kind == "raw" else None,
                            head_size=pf.get("HeadSize") if pf.has("HeadSize") else None,
                            data_loc=pf.get("dataLoc", None) if pf.has("dataLoc") else None,
                            skip_frame=int(pf.get("SkipFrame", 0) or 0), im_trans_opt=pf.get("ImTransOpt") or [0],
                            bad_px_intensity=pf.get("BadPxIntensity", None),
                            gap_intensity=pf.get("GapIntensity", None), mask_file=mask_file)
        image_sum = loaded.image if image_sum is None else image_sum + loaded.image
        mask = loaded.mask if mask is None else mask | loaded.mask
        notes.extend(loaded.notes)
    return SeriesImage(image_sum / len(files), mask, tuple(files), tuple(notes))


# ------------------------------------------------------------------------------------------- calibration

@dataclass(frozen=True)
class CalibrationInputs:
    """Everything a calibration needs, set up from a parameter file and an image (:func:`calibration_inputs`).

    Attributes
    ----------
    data_path : Path
        The input image file.
    loaded : midas_ref.io.LoadedImage
        Image (dark-subtracted, ImTransOpt applied), mask, file type and the readers' notes.
    base : Geometry
        Detector description and start values: the parameter file's Lsd (default 1 m), tilts, distortion
        and RhoD, the detector size of the image, the beam centre at the image centre (the guesses come
        from ``settings``).
    rings : tuple of Ring
        Calibrant rings (:func:`calibrant_rings` with :data:`CALIBRATION_RING_REACH`).
    settings : midas_ref.autocal.CalibrationSettings
    params : ParameterFile
        The parameter file as used (a Zarr zip's own parameters filled in where the file is silent).
    wavelength_angstrom : float
    space_group : int
    lattice : tuple of 6 float
        a, b, c (Å), α, β, γ (degrees).
    skip_frame : int
        Frames skipped at the start of the file.
    bad_px_intensity, gap_intensity : float or None
        Sentinel pixel values in effect.
    seconds_load : float
        Wall time of reading the image, s.
    """

    data_path: Path
    loaded: LoadedImage
    base: Geometry
    rings: tuple[Ring, ...]
    settings: CalibrationSettings
    params: ParameterFile
    wavelength_angstrom: float
    space_group: int
    lattice: tuple[float, ...]
    skip_frame: int
    bad_px_intensity: float | None
    gap_intensity: float | None
    seconds_load: float

    @property
    def image(self) -> np.ndarray:
        """The image to calibrate, ``(rows, cols) = (Z, Y)``."""
        return self.loaded.image

    @property
    def mask(self) -> np.ndarray:
        """Masked pixels (True)."""
        return self.loaded.mask


def _given(value):
    """None for an absent option (None or NaN, the command line's "not given")."""
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else value


def _check_guesses(settings: dict) -> None:
    """The command-line guesses, in the flags' own words (before they reach any internal check)."""
    lsd = settings.get("lsd_guess_um")
    if lsd is not None and not (math.isfinite(lsd) and lsd > 0):
        raise ParameterFileError(f"-LsdGuess must be a distance > 0 µm, got {lsd!r}")
    bc = settings.get("bc_guess_px")
    if bc is not None and not all(math.isfinite(v) for v in bc):
        raise ParameterFileError(f"-BCGuess must be two finite pixel coordinates (Y Z), got {tuple(bc)!r}")


def calibration_inputs(data_path: str | os.PathLike, param_path: str | os.PathLike | None = None, *,
                       file_type: str | None = None, dark_path: str | os.PathLike | None = None,
                       data_loc: str | None = None, im_trans_opt=None, bad_px_intensity: float | None = None,
                       gap_intensity: float | None = None, say: Say = _quiet, **settings) -> CalibrationInputs:
    """Read the parameter file and the image; build the start geometry, ring table and settings.

    Parameters
    ----------
    data_path : path-like
        The calibrant image (``-dataFN``).
    param_path : path-like, optional
        The parameter file (``-paramFN``); may be omitted for a MIDAS Zarr zip, whose own parameters fill
        every key the file does not set.
    file_type : {"zarr", "hdf5", "ge", "tiff", "raw"}, optional
        Default: from the extension.
    dark_path, data_loc, im_trans_opt, bad_px_intensity, gap_intensity
        ``-darkFN``, ``-dataLoc``, ``-ImTransOpt``, ``-BadPxIntensity``, ``-GapIntensity``; None (or NaN)
        means the parameter file's value (ImTransOpt, BadPxIntensity, GapIntensity) or none.
    say : callable, optional
        Receives one line per step (the command prints them).
    **settings
        Fields of :class:`~midas_ref.autocal.CalibrationSettings` (``eta_bin_deg``, ``mult_factor``,
        ``stopping_strain``, ``first_ring_nr``, ``lsd_guess_um``, ``bc_guess_px``, ``threshold``,
        ``no_median``, ``max_iterations``, ``optimizer``); absent or None = the class default.
        ``lsd_guess_um`` falls back to the parameter file's Lsd, ``bc_guess_px`` to its BC; a beam-centre
        guess of (0, 0) means "detect" (AutoCalibrateZarr). Tolerances, DistortionOrder and
        RingsToExclude come from the parameter file; ``select_distortion`` defaults to True unless the file
        gives one of :data:`DISTORTION_CHOICE_KEYS` (then the distortion is fitted as given).

    Returns
    -------
    CalibrationInputs

    Raises
    ------
    ParameterFileError, ImageReadError, CalibrationError
        Bad input, named by key, flag or file.
    """
    from . import autocal
    from .io import infer_file_type, load_image

    data = Path(data_path)
    if not data.exists():
        raise ImageReadError(f"{data}: no such file")
    kind = infer_file_type(data, file_type)
    pf = read_parameter_file(param_path) if param_path else parse_parameter_text("", "<no -paramFN>")
    if kind == "zarr":
        from ._zarrzip import read_zip_parameters

        # the zip's own parameters fill what the file leaves out (its frames are read once, below)
        for key, value in params_from_zip(read_zip_parameters(data)).items():
            if not pf.has(key):
                pf = pf.set(key, value)
    elif not param_path:
        raise ParameterFileError("-paramFN is required for a non-Zarr input (SpaceGroup, LatticeParameter, "
                                 "Wavelength and px come from it)")
    pf.require("SpaceGroup", "LatticeConstant", "Wavelength", "px")
    pf.require_positive("Wavelength", "px")
    _check_guesses(settings)
    im_trans = im_trans_opt if im_trans_opt is not None else (pf.get("ImTransOpt") or [0])
    bad = _given(bad_px_intensity) if _given(bad_px_intensity) is not None else pf.get("BadPxIntensity", None)
    gap = _given(gap_intensity) if _given(gap_intensity) is not None else pf.get("GapIntensity", None)
    skip = int(pf.get("SkipFrame", 0) or 0)
    say(f"reading {data} ({kind})")
    t0 = time.perf_counter()
    loaded = load_image(data, dark_path=dark_path or None, file_type=kind,
                        n_pixels_y=pf.get("NrPixelsY", None), n_pixels_z=pf.get("NrPixelsZ", None),
                        data_type=pf.get("DataType", None) if kind == "raw" else None,
                        head_size=pf.get("HeadSize", None) if kind in ("raw", "ge") and pf.has("HeadSize") else None,
                        data_loc=data_loc or None, skip_frame=skip, im_trans_opt=im_trans,
                        bad_px_intensity=bad, gap_intensity=gap, mask_file=pf.get("MaskFile", None))
    seconds_load = time.perf_counter() - t0
    for note in loaded.notes:
        say(f"  note: {note}")
    rows, cols = loaded.image.shape
    wavelength = float(pf.get("Wavelength"))
    space_group = int(pf.get("SpaceGroup"))
    lattice = tuple(pf.get("LatticeConstant"))
    px = float(pf.get("px"))
    # the image decides the detector size and (until the guesses) the beam centre; Lsd 0 means "not given"
    geometry_pf = pf.set("Lsd", None) if pf.has("Lsd") and not pf.get("Lsd") else pf
    base = geometry_from_params(geometry_pf, defaults={"Lsd": 1e6},
                                overrides={"BC": (cols / 2, rows / 2), "NrPixelsY": cols, "NrPixelsZ": rows})
    options = {name: value for name, value in settings.items() if value is not None}
    if options.get("lsd_guess_um") is None and pf.has("Lsd"):
        options["lsd_guess_um"] = pf.get("Lsd") or None
    bc_guess = options.get("bc_guess_px")
    if bc_guess is not None and tuple(bc_guess)[0] == 0:
        bc_guess = None
    options["bc_guess_px"] = tuple(bc_guess) if bc_guess is not None else (
        tuple(pf.get("BC")) if pf.has("BC") else None)
    options.setdefault("select_distortion", not any(pf.has(key) for key in DISTORTION_CHOICE_KEYS))
    rings = calibrant_rings(space_group, lattice, wavelength, shape=(rows, cols), px_um=px,
                            lsd_um=options.get("lsd_guess_um") or 1e6, reach=CALIBRATION_RING_REACH)
    calibration_settings = autocal.CalibrationSettings(
        tolerances=tolerances_from_params(pf), distortion_order=int(pf.get("DistortionOrder", 4)),
        rings_to_exclude=tuple(pf.get("RingsToExclude") or ()), **options)
    say(f"image {cols} × {rows} px, {int(loaded.mask.sum())} masked; calibrant space group {space_group}, "
        f"a = {lattice[0]:g} Å, λ = {wavelength:g} Å")
    return CalibrationInputs(data, loaded, base, tuple(rings), calibration_settings, pf, wavelength, space_group,
                             lattice, skip, bad, gap, seconds_load)


# ----------------------------------------------------------------------------------------------- panels

def panel_settings_from_params(pf: ParameterFile, optimizer: str = "least-squares"):
    """:class:`~midas_ref.panel_refine.PanelSettings` from the manual §7 keys.

    ``nIterations`` absent means up to 5 cycles (its key-table default) instead of the legacy single pass,
    which re-used peaks extracted in the uncorrected frame; ``PanelGauge`` absent means ``mean`` (zero mean
    shift: the global geometry is the mean panel), or ``fixed`` (the legacy FixPanelID gauge, the same fit
    re-expressed) when the file names a ``FixPanelID`` or with the Nelder–Mead optimiser, which supports no other (docs/geometry.md §6.2; ``average``
    is a constraint that costs fit quality); ``Width`` (the legacy ring half-window,
    µm; the orchestrator writes 1000, far too wide for a fit) is capped at 12 px.
    """
    from .panel_refine import PanelSettings
    from .refine import PANEL_GAUGES, PanelFreedom

    px = float(pf.get("px"))
    given = pf.get("PanelGauge", None)
    # absent: the mean panel is the global geometry, unless the file names a FixPanelID (a legacy file asks for
    # the legacy gauge) or the Nelder–Mead optimiser runs (it supports only the fixed gauge)
    if given is not None:
        gauge = str(given).strip().lower()
    else:
        gauge = "fixed" if optimizer == "nelder-mead" or pf.has("FixPanelID") else "mean"
    if gauge not in PANEL_GAUGES:
        raise ParameterFileError(f"PanelGauge must be 'average' (the global geometry is the average detector), "
                                 f"'mean' (zero mean panel shift only) or 'fixed' (FixPanelID holds still), got {pf.get('PanelGauge')!r}", pf.path,
                                 key="PanelGauge")
    if gauge != "fixed" and optimizer == "nelder-mead":
        raise ParameterFileError(f"PanelGauge {gauge} needs the least-squares optimiser; the legacy Nelder–Mead "
                                 "keeps the fixed gauge (PanelGauge fixed, FixPanelID)", pf.path, key="PanelGauge")
    freedom = PanelFreedom(fix_panel_id=int(pf.get("FixPanelID")), shifts_px=float(pf.get("tolShifts")), gauge=gauge,
                           rotation_deg=float(pf.get("tolRotation")),
                           lsd_um=float(pf.get("tolLsdPanel")) if pf.get("PerPanelLsd") else 0.0,
                           p2=float(pf.get("tolP2Panel")) if pf.get("PerPanelDistortion") else 0.0,
                           min_points=int(pf.get("MinIndicesForFit")))
    width = pf.get("Width", None)
    return PanelSettings(
        n_iterations=int(pf.get("nIterations")),
        freedom=freedom, tolerances=tolerances_from_params(pf), distortion_order=int(pf.get("DistortionOrder")),
        eta_bin_deg=float(pf.get("EtaBinSize", None) or 5.0),
        half_window_px=min(float(width) / px, 12.0) if width else None,
        mult_factor=float(pf.get("MultFactor")), outlier_iterations=int(pf.get("OutlierIterations")),
        normalize_ring_weights=bool(pf.get("NormalizeRingWeights")), weight_by_radius=bool(pf.get("WeightByRadius")),
        doublet_separation_px=float(pf.get("DoubletSeparation")), optimizer=optimizer)


def check_panel_layout_fits(layout: PanelLayout, shape: tuple[int, int], source: str | None = None) -> None:
    """Refuse a panel grid that does not tile the image exactly (widths + gaps = image size, both axes).

    Raises
    ------
    ParameterFileError
        With the arithmetic, e.g. ``NPanelsY 3 × PanelSizeY 487 + PanelGapsY (7 + 7) = 1475 ≠ 1474 px``.
    """
    rows, cols = shape
    for axis, n, size, gaps, pixels in (("Y", layout.n_panels_y, layout.size_y_px, layout.gaps_y_px, cols),
                                        ("Z", layout.n_panels_z, layout.size_z_px, layout.gaps_z_px, rows)):
        total = n * size + sum(gaps)
        if total != pixels:
            gap_text = f" + PanelGaps{axis} ({' + '.join(map(str, gaps))})" if gaps else ""
            raise ParameterFileError(f"the panel layout does not fit the image: NPanels{axis} {n} × PanelSize{axis} "
                                     f"{size}{gap_text} = {total} px, but the image has {pixels} px along {axis} "
                                     f"(NrPixels{axis})", source, key=f"PanelSize{axis}")


def panel_layout_or_error(param_path, pf: ParameterFile | None = None) -> PanelLayout:
    """The panel layout ``calibrate --panels`` needs (read from the parameter file before the image)."""
    if not param_path:
        raise ParameterFileError("--panels needs -paramFN with the panel layout (NPanelsY/Z, PanelSizeY/Z, …)")
    pf = pf if pf is not None else read_parameter_file(param_path)
    layout = panel_layout_from_params(pf)
    if layout is None:
        raise ParameterFileError("--panels: the parameter file has no panel layout (NPanelsY, NPanelsZ > 0)",
                                 pf.path)
    return layout


@dataclass(frozen=True)
class CalibrationPanelJob:
    """The panel refinement of ``calibrate --panels`` (:func:`calibration_panel_job`).

    Attributes
    ----------
    params : ParameterFile
        The parameter file with EtaBinSize (the calibration's when absent) and Folder (the image's) set.
    layout : PanelLayout
    settings : midas_ref.panel_refine.PanelSettings
    shifts_path : Path
        ``PanelShiftsFile``'s name, relative to the output folder (the output set writes it there).
    start : midas_ref.panels.Panels
        Start corrections: the shifts file of an earlier run in the output folder, else zero.
    """

    params: ParameterFile
    layout: PanelLayout
    settings: PanelSettings
    shifts_path: Path
    start: Panels


def calibration_panel_job(inputs: CalibrationInputs, out_dir: str | os.PathLike,
                          optimizer: str = "least-squares") -> CalibrationPanelJob:
    """Set up ``calibrate --panels`` before the calibration runs: layout (it must tile the image), settings,
    start corrections and where the shifts go."""
    from .panels import Panels, read_panel_shifts

    pf = inputs.params
    layout = panel_layout_or_error(pf.path, pf)
    check_panel_layout_fits(layout, inputs.image.shape, pf.path)
    if not pf.has("EtaBinSize"):
        pf = pf.set("EtaBinSize", inputs.settings.eta_bin_deg)
    pf = pf.with_values(Folder=str(inputs.data_path.parent.resolve()))
    # the shifts go into the output set (a name relative to --out-dir: an out-dir given as a relative path
    # must not be joined twice); a file of that name already there is the start
    shifts_name = Path(Path(pf.get("PanelShiftsFile", None) or "panelshifts.txt").name)
    existing = Path(out_dir) / shifts_name
    start = read_panel_shifts(existing, layout) if existing.exists() else Panels.from_shifts(layout)
    return CalibrationPanelJob(pf, layout, panel_settings_from_params(pf, optimizer), shifts_name, start)


def panel_shifts_locations(pf: ParameterFile, out_dir: str | os.PathLike | None) -> tuple[Path, Path]:
    """Where a panel refinement writes ``PanelShiftsFile`` and where it looks for its start corrections.

    Returns
    -------
    (output, beside_params) : (Path, Path)
        An absolute PanelShiftsFile is both; a relative one (default ``panelshifts.txt``) is written under
        ``out_dir`` and also looked for beside the parameter file.
    """
    name = pf.get("PanelShiftsFile", None) or "panelshifts.txt"
    if Path(name).is_absolute():
        return Path(name), Path(name)
    out = Path(out_dir if out_dir is not None else ".") / name
    return out, (Path(pf.path).parent / name if pf.path else Path(name))


@dataclass(frozen=True)
class PanelInputs:
    """Everything a panel refinement needs (:func:`panel_inputs`).

    Attributes
    ----------
    params : ParameterFile
    geometry : Geometry
        Start global geometry (the file's Lsd, BC, tilts, distortion).
    layout : PanelLayout
    panels : midas_ref.panels.Panels
        Start per-panel corrections (``start_shifts_path``, else zero).
    start_shifts_path : Path or None
        The panel-shifts file the start corrections were read from.
    shifts_path : Path
        Where the refined corrections go (:func:`panel_shifts_locations`).
    series : SeriesImage
        The averaged image of the file series, its mask and files.
    rings : tuple of Ring
        Calibrant rings (:data:`PANEL_RING_REACH`; RingsToExclude dropped, MaxRingNumber applied).
    doublet_rings : tuple of Ring
        The same rings at ``DoubletWavelength`` (empty without one).
    settings : midas_ref.panel_refine.PanelSettings
    """

    params: ParameterFile
    geometry: Geometry
    layout: PanelLayout
    panels: Panels
    start_shifts_path: Path | None
    shifts_path: Path
    series: SeriesImage
    rings: tuple[Ring, ...]
    doublet_rings: tuple[Ring, ...]
    settings: PanelSettings


def panel_inputs(pf: ParameterFile, *, optimizer: str = "least-squares",
                 out_dir: str | os.PathLike | None = None, say: Say = _quiet) -> PanelInputs:
    """Set up a panel refinement from a parameter file (the CalibrantPanelShiftsOMP keys, manual §7).

    Parameters
    ----------
    pf : ParameterFile
        Geometry (Lsd, BC, tilts, p0–p4), File I/O keys (Folder, FileStem, Ext, StartNr, EndNr, Padding,
        Dark, DataType …), panel keys (NPanelsY/Z, PanelSizeY/Z, PanelGapsY/Z, tolShifts …).
    optimizer : {"least-squares", "nelder-mead"}
    out_dir : path-like, optional
        Output folder (decides where a relative PanelShiftsFile is read first and written).
    say : callable, optional

    Raises
    ------
    ParameterFileError, ImageReadError
        Missing keys, no panel layout, unreadable files, an image whose size is not NrPixelsY × NrPixelsZ.
    """
    from .panels import Panels, read_panel_shifts

    pf.require("SpaceGroup", "LatticeConstant", "Wavelength", "px", "NrPixelsY", "NrPixelsZ", "Lsd", "BC",
               "NPanelsY", "NPanelsZ", "PanelSizeY", "PanelSizeZ")
    pf.require_positive("Wavelength", "px", "Lsd")
    geometry = geometry_from_params(pf)
    layout = panel_layout_from_params(pf)
    if layout is None:
        raise ParameterFileError("NPanelsY and NPanelsZ must be > 0 for a panel refinement", pf.path)
    settings = panel_settings_from_params(pf, optimizer)
    shifts_path, beside = panel_shifts_locations(pf, out_dir)
    start_path = next((p for p in (shifts_path, beside) if p.exists()), None)
    if start_path is not None:
        panels = read_panel_shifts(start_path, layout)
        say(f"starting from the panel corrections in {start_path}")
    else:
        panels = Panels.from_shifts(layout)
    check_panel_layout_fits(layout, geometry.shape, pf.path)
    series = load_series(pf)
    if series.image.shape != geometry.shape:
        raise ImageReadError(f"image is {series.image.shape[1]} × {series.image.shape[0]} px but NrPixelsY × "
                             f"NrPixelsZ is {geometry.n_pixels_y} × {geometry.n_pixels_z}")
    for note in series.notes:
        say(f"  note: {note}")
    wavelength = float(pf.get("Wavelength"))
    space_group, lattice = int(pf.get("SpaceGroup")), tuple(pf.get("LatticeConstant"))
    max_nr = int(pf.get("MaxRingNumber") or 0)
    rings = [ring for ring in calibrant_rings(space_group, lattice, wavelength, shape=geometry.shape,
                                              px_um=geometry.px_um, lsd_um=geometry.lsd_um, reach=PANEL_RING_REACH,
                                              rings_to_exclude=tuple(pf.get("RingsToExclude") or ()))
             if not max_nr or ring.ring_nr <= max_nr]
    doublet_rings = []
    lam2 = float(pf.get("DoubletWavelength"))
    if lam2 > 0:
        numbers = {r.ring_nr for r in rings}
        # the same d range at λ2: the rings of the first wavelength, seen again at their λ2 angles
        doublet_rings = [ring for ring in calibrant_rings(space_group, lattice, lam2, shape=geometry.shape,
                                                          px_um=geometry.px_um, lsd_um=geometry.lsd_um,
                                                          reach=PANEL_RING_REACH)
                         if ring.ring_nr in numbers]
    say(f"{len(series.files)} file(s), image {series.image.shape[1]} × {series.image.shape[0]} px, "
        f"{int(series.mask.sum())} masked, {layout.n_panels} panels, {len(rings)} rings"
        + (f" + {len(doublet_rings)} at λ2" if doublet_rings else ""))
    return PanelInputs(pf, geometry, layout, panels, start_path, shifts_path, series, tuple(rings),
                       tuple(doublet_rings), settings)
