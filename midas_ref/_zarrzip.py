"""MIDAS Zarr zip (``*.MIDAS.zip``): zarr **format 2** inside a zip, as ffGenerateZipRefactor writes it.

Layout (autocalibrate.md §2.2)::

    /exchange/data        (n_frames, NZ, NY), chunks (1, NZ, NY), Blosc zstd clevel 3 bit-shuffle
    /exchange/dark        dark stack (zeros (1, NZ, NY) when none is given)
    /exchange/bright      bright stack (= dark when none is given)
    /exchange/mask        optional (1, NZ, NY)
    /measurement/process/scan_parameters/{datatype, start, step}
    /analysis/process/analysis_parameters/<Key>

Written with the zarr-python 3 API (``zarr_format=2``, :class:`zarr.storage.ZipStore`); the result is
plain zarr v2 (``.zgroup``/``.zarray`` JSON and ``0.0.0`` chunk members), readable by zarr-python 2.x.
"""

from __future__ import annotations

import os
import zipfile

import numpy as np

from ._formats import as_stack
from .atomic import atomic_path
from .errors import ImageReadError, MidasRefError
from .params import ZIP_NAMES

FORMAT_VERSION = 1
AXES_NOTE = "exchange/* arrays are (frame, row = Z, col = Y); BC is YCen (col), ZCen (row) in pixels"

DATA_LOC = "exchange/data"
DARK_LOC = "exchange/dark"
BRIGHT_LOC = "exchange/bright"
MASK_LOC = "exchange/mask"
SCAN_GROUP = "measurement/process/scan_parameters"
ANALYSIS_GROUP = "analysis/process/analysis_parameters"

#: Stored as float64 arrays (FGZ's forced-double list plus the distortion and panel tolerances).
DOUBLE_KEYS = frozenset({
    "RMin", "RMax", "PixelSize", "MinMatchesToAcceptFrac", "OverArea", "IntensityThresh", "MinS_N",
    "YPixelSize", "ZPixelSize", "BeamStopY", "BeamStopZ", "DetDist", "MaxDev", "OmegaStart",
    "OmegaFirstFile", "BadPxIntensity", "GapIntensity", "FitWeightMean", "PixelSplittingRBin", "tolTilts",
    "tolBC", "tolLsd", "DiscArea", "OverlapLength", "ReferenceRingCurrent", "zDiffThresh", "GlobalPosition",
    "tolPanelFit", "tolP", "tolP0", "tolP1", "tolP2", "tolP3", "StepSizePos", "tInt", "tGap",
    "StepSizeOrient", "MarginRadius", "MarginRadial", "MarginEta", "MarginOme", "MargABG", "MargABC",
    "OmeBinSize", "EtaBinSize", "RBinSize", "EtaMin", "MinEta", "EtaMax", "X", "Y", "Z", "U", "V", "W",
    "SHpL", "Polariz", "BeamThickness", "Wedge", "Rsample", "Hbeam", "Vsample", "RhoD", "MaxRingRad",
    "Lsd", "Wavelength", "Width", "WidthTthPx", "UpperBoundThreshold", "tx", "ty", "tz", "YCen", "ZCen",
    "tolShifts", "tolRotation", "StoppingStrain", "MultFactor", "Parallax",
    *(f"p{i}" for i in range(15)),
})
#: Stored as int32 arrays.
INT32_KEYS = frozenset({
    "Twins", "MaxNFrames", "DoFit", "DiscModel", "UseMaximaPositions", "MaxNrPx", "MinNrPx", "MaxNPeaks",
    "PhaseNr", "NumPhases", "MinNrSpots", "UseFriedelPairs", "OverallRingToIndex", "SpaceGroup", "LayerNr",
    "DoFullImage", "SkipFrame", "SumImages", "Normalize", "SaveIndividualFrames", "OmegaSumFrames",
    "Padding", "NPanelsY", "NPanelsZ", "PanelSizeY", "PanelSizeZ", "PanelGapsY", "PanelGapsZ", "NrPixels",
    "NrPixelsY", "NrPixelsZ", "DataType", "HeadSize", "StartNr", "EndNr", "FixPanelID",
    "MaxOmeSpotIDsToIndex", "MinOmeSpotIDsToIndex",
})
#: Stored as 1-element bytes arrays even when the value looks numeric.
STRING_KEYS = frozenset({"GapFile", "BadPxFile", "ResultFolder", "FileStem", "Ext", "Folder", "Dark",
                         "MaskFile", "PanelShiftsFile", "RawFolder"})
#: Stored as 2-D float64 (one row per entry; a flat list becomes one row, as FGZ does).
TWO_D_KEYS = frozenset({"RingThresh", "RingsToExclude", "OmegaRanges", "BoxSizes"})
#: Written when absent (FGZ defaults). ``ImTransOpt [-1]`` is FGZ's "not given" placeholder.
DEFAULTS = {
    "RingThresh": np.zeros((1, 2)), "RingsToExclude": np.zeros((1, 2)),
    "OmegaRanges": np.array([[-10000.0, 0.0]]), "BoxSizes": np.array([[-10000.0, 0.0, 0.0, 0.0]]),
    "ImTransOpt": np.array([-1], dtype=np.int32), "SkipFrame": np.array([0], dtype=np.int32),
}
#: numpy name of the data dtype → ``scan_parameters/datatype`` (FGZ knows only these four).
_FGZ_DATATYPES = ("uint16", "uint32", "float32", "float64")


def _blosc():
    from numcodecs import Blosc

    return Blosc(cname="zstd", clevel=3, shuffle=Blosc.BITSHUFFLE)


def _bytes_array(value) -> np.ndarray:
    if isinstance(value, (list, tuple)):
        return np.array([str(v).encode("utf-8") for v in value])
    if isinstance(value, bytes):
        return np.array([value])
    return np.array([str(value).encode("utf-8")])


def _typed_parameter(key: str, value) -> np.ndarray:
    """The array FGZ would store for ``key`` (already renamed) holding ``value``."""
    try:
        if key in STRING_KEYS:
            return _bytes_array(value)
        if key == "LatticeParameter":
            values = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
            if values.size > 6:
                raise ValueError(f"{values.size} values, at most 6 expected")
            padded = np.zeros(6)
            padded[:values.size] = values
            return padded
        if key in TWO_D_KEYS:
            return np.atleast_2d(np.asarray(value, dtype=np.float64))
        if key == "ImTransOpt":
            return np.atleast_1d(np.asarray(value, dtype=np.int32)).ravel()
        if key in DOUBLE_KEYS:
            return np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
        if key in INT32_KEYS:
            values = np.atleast_1d(np.asarray(value))
            if values.dtype.kind == "f" and not np.all(values == np.round(values)):
                raise ValueError(f"{value!r} is not integral")
            return values.astype(np.int32).ravel()
        if isinstance(value, (str, bytes)) or (isinstance(value, (list, tuple)) and value
                                               and all(isinstance(v, (str, bytes)) for v in value)):
            return _bytes_array(value)
        arr = np.asarray(value)
        if arr.dtype.kind == "U":
            return _bytes_array(arr.tolist())
        if arr.dtype.kind not in "biuf":
            raise ValueError(f"unsupported value type {arr.dtype}")
        return np.atleast_1d(arr)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"parameter {key!r}: cannot store {value!r} ({exc})") from exc


def analysis_arrays(parameters: dict) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Typed arrays for ``analysis_parameters`` and ``scan_parameters`` (without ``datatype``)."""
    analysis: dict[str, np.ndarray] = {}
    for key, value in parameters.items():
        if key == "BC":
            bc = np.atleast_1d(np.asarray(value, dtype=np.float64)).ravel()
            if bc.size != 2:
                raise ValueError(f"parameter 'BC': expected 2 values (Y Z), got {value!r}")
            analysis["YCen"], analysis["ZCen"] = bc[:1].copy(), bc[1:].copy()
            continue
        if key == "OmegaStep":
            continue
        name = ZIP_NAMES.get(key, key)
        analysis[name] = _typed_parameter(name, value)
    for name, default in DEFAULTS.items():
        analysis.setdefault(name, default.copy())
    omega_step = float(np.asarray(parameters.get("OmegaStep", 0.0), dtype=np.float64).ravel()[0])
    omega_start = float(np.asarray(parameters.get("OmegaStart", parameters.get("OmegaFirstFile", 0.0)),
                                   dtype=np.float64).ravel()[0])
    skip = int(analysis["SkipFrame"][0])
    scan = {"start": np.array([omega_start - skip * omega_step]), "step": np.array([omega_step])}
    return analysis, scan


def write_zip(tmp_path: os.PathLike, frames: np.ndarray, dark: np.ndarray, bright: np.ndarray,
              mask: np.ndarray | None, parameters: dict) -> None:
    """Write the zip to ``tmp_path`` (the caller renames it into place). Arrays are 3-D already."""
    import zarr
    from zarr.storage import ZipStore

    analysis, scan = analysis_arrays(parameters)
    store = ZipStore(os.fspath(tmp_path), mode="w")
    try:
        # Attributes must be given here: updating them later rewrites .zgroup, and a zip cannot replace a
        # member (zipfile warns "Duplicate name" and the archive then holds two copies).
        root = zarr.open_group(store=store, mode="w", zarr_format=2,
                               attributes={"midas_ref_format_version": FORMAT_VERSION, "axes": AXES_NOTE})
        for loc, stack in ((DATA_LOC, frames), (DARK_LOC, dark), (BRIGHT_LOC, bright), (MASK_LOC, mask)):
            if stack is None:
                continue
            # Every chunk is stored, even an all-zero one (zarr-python 3 skips those by default; FGZ's
            # zarr 2 does not), so that a missing chunk always means a damaged file (see _check_chunks).
            array = root.create_array(loc, shape=stack.shape, dtype=stack.dtype,
                                      chunks=(1, *stack.shape[1:]), compressors=_blosc(), fill_value=0,
                                      config={"write_empty_chunks": True})
            for i in range(stack.shape[0]):
                array[i] = stack[i]
        # FGZ knows only _FGZ_DATATYPES and writes "unknown" for others; we write the numpy name.
        root.create_array(f"{SCAN_GROUP}/datatype", data=_bytes_array(frames.dtype.name))
        for key, value in scan.items():
            root.create_array(f"{SCAN_GROUP}/{key}", data=value)
        for key, value in analysis.items():
            root.create_array(f"{ANALYSIS_GROUP}/{key}", data=value)
    finally:
        store.close()


def _decode(value: np.ndarray):
    if value.dtype.kind in "SU":
        items = [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in value.ravel().tolist()]
        return items[0] if len(items) == 1 else items
    return value


class _OpenZip:
    """Context manager: the root group of a MIDAS zip, read-only, with readable errors."""

    def __init__(self, path: os.PathLike | str):
        self.path = os.fspath(path)
        self.store = None

    def __enter__(self):
        import zarr
        from zarr.storage import ZipStore

        if os.path.isdir(self.path):
            raise ImageReadError(f"{self.path}: is a directory, not a MIDAS Zarr zip file")
        if not os.path.isfile(self.path):
            raise ImageReadError(f"{self.path}: file not found")
        if not zipfile.is_zipfile(self.path):
            raise ImageReadError(f"{self.path}: not a zip archive (corrupt or truncated MIDAS Zarr zip?)")
        try:
            self.store = ZipStore(self.path, mode="r")
            return zarr.open_group(store=self.store, mode="r")
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            self.__exit__(None, None, None)
            raise ImageReadError(f"{self.path}: unreadable Zarr zip ({type(exc).__name__}: {exc})") from exc

    def __exit__(self, *exc_info):
        if self.store is not None:
            self.store.close()
            self.store = None
        return False


def _array_names(root) -> list[str]:
    import zarr

    return sorted(p for p, obj in root.members(max_depth=None) if isinstance(obj, zarr.Array))


def _get_array(root, path: str, loc: str):
    import zarr

    loc = loc.strip("/")
    try:
        node = root[loc]
    except (KeyError, ValueError, OSError):
        node = None
    if not isinstance(node, zarr.Array):
        raise ImageReadError(f"{path}: no array '{loc}' in the Zarr zip; arrays present: "
                             + (", ".join(_array_names(root)) or "none"))
    return node


def _check_chunks(path: str, array, loc: str) -> None:
    """Raise if chunks of ``array`` are absent from the zip (zarr would silently read them as fill value).

    A data array (``exchange/data``) must hold every chunk its shape and chunk shape imply. Other arrays
    may hold none at all (zarr-python 3 leaves an all-fill-value array, such as a zero dark, unwritten),
    but not only some.
    """
    import itertools

    grid = [range(-(-n // c)) if n else range(0) for n, c in zip(array.shape, array.chunks)]
    prefix = f"{array.path}/" if array.path else ""
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
    expected = list(itertools.product(*grid))
    missing = [c for c in expected if prefix + array.metadata.encode_chunk_key(c) not in names]
    if not missing or (len(missing) == len(expected) and loc != DATA_LOC):
        return
    detail = ""
    if array.ndim == 3 and array.chunks[0] == 1 and all(len(g) == 1 for g in grid[1:]):  # chunk = frame
        frames = [c[0] for c in missing]
        shown = ", ".join(str(f) for f in frames[:10]) + (", …" if len(frames) > 10 else "")
        detail = f" (frame{'s' if len(frames) > 1 else ''} {shown})"
    verb = "is" if len(missing) == 1 else "are"
    raise ImageReadError(f"{path}: the file is incomplete: {len(missing)} of {len(expected)} chunks of array "
                         f"'{loc}'{detail} {verb} missing from the zip (zarr would read them as zeros); the "
                         "zip was truncated or damaged: write or copy it again")


def has_array(path: os.PathLike | str, loc: str) -> bool:
    """True if the zip at ``path`` holds an array at ``loc``."""
    with _OpenZip(path) as root:
        try:
            _get_array(root, os.fspath(path), loc)
        except ImageReadError:
            return False
        return True


def read_array(path: os.PathLike | str, loc: str = DATA_LOC, skip_frame: int = 0) -> np.ndarray:
    """Read ``loc`` from the zip, dropping the first ``skip_frame`` frames of a 3-D array."""
    path = os.fspath(path)
    with _OpenZip(path) as root:
        array = _get_array(root, path, loc)
        try:
            _check_chunks(path, array, loc.strip("/"))
            if array.ndim == 3:
                return np.asarray(array[skip_frame:])
            return np.asarray(array[...])
        except MidasRefError:
            raise
        except (OSError, ValueError, KeyError, RuntimeError, EOFError, zipfile.BadZipFile) as exc:
            raise ImageReadError(f"{path}: cannot read '{loc}' ({type(exc).__name__}: {exc}); "
                                 "corrupt zip?") from exc


def _parameters(root) -> dict:
    parameters = {}
    for group in (SCAN_GROUP, ANALYSIS_GROUP):
        prefix = group + "/"
        for name in _array_names(root):
            if name.startswith(prefix) and "/" not in name[len(prefix):]:
                parameters[name[len(prefix):]] = _decode(np.asarray(root[name][...]))
    return parameters


def read_zip_parameters(path: os.PathLike | str) -> dict:
    """The analysis + scan parameters of a MIDAS zip, without decoding its frames.

    The data array is checked for missing chunks here too (the zip's member list only), so an incomplete
    file is reported before any frame is read.
    """
    path = os.fspath(path)
    with _OpenZip(path) as root:
        _check_chunks(path, _get_array(root, path, DATA_LOC), DATA_LOC)
        return _parameters(root)


def read_zip(path: os.PathLike | str) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Frames, dark (or None) and parameters (analysis + scan parameters) of a MIDAS zip."""
    path = os.fspath(path)
    frames = read_array(path, DATA_LOC)
    with _OpenZip(path) as root:
        dark = np.asarray(root[DARK_LOC][...]) if DARK_LOC in _array_names(root) else None
        parameters = _parameters(root)
    return frames, dark, parameters


def write_midas_zip(path: str | os.PathLike, frames, *, dark=None, bright=None, mask=None,
                    parameters: dict | None = None) -> None:
    """Write a MIDAS Zarr zip (zarr v2 format in a zip; layout of autocalibrate.md §2.2), atomically.

    Parameters
    ----------
    frames : ndarray of shape (NZ, NY) or (n_frames, NZ, NY)
        ``/exchange/data``, native dtype, chunks (1, NZ, NY), Blosc zstd clevel 3 bit-shuffle.
    dark, bright : ndarray, optional
        ``/exchange/dark`` (default zeros (1, NZ, NY) of the data dtype, as FGZ's old flow) and
        ``/exchange/bright`` (default = dark).
    mask : ndarray of shape (NZ, NY), optional
        ``/exchange/mask`` (1, NZ, NY) in the data dtype (as FGZ), nonzero = masked.
    parameters : dict, optional
        Legacy keys and values (``px``, ``LatticeConstant``, ``BC`` …), renamed and typed as FGZ does:
        ``px`` → ``PixelSize``, ``LatticeConstant`` → ``LatticeParameter`` (6 doubles, zero-padded),
        ``BC`` → ``YCen``/``ZCen``, geometry keys float64, ``SpaceGroup``/``SkipFrame``/… int32, strings
        1-element bytes arrays, ``RingsToExclude``/``RingThresh``/``OmegaRanges``/``BoxSizes`` 2-D float64,
        ``ImTransOpt`` 1-D int32; FGZ's defaults are added for absent keys (``ImTransOpt [-1]``, …).
        ``OmegaStep``/``OmegaStart`` give ``scan_parameters/step`` and ``start``.

    Raises
    ------
    ValueError
        Bad array shapes or a parameter value that cannot take its type.
    """
    stack = as_stack(frames, "write_midas_zip")
    frame_shape = stack.shape[1:]
    dark_stack = np.zeros((1, *frame_shape), stack.dtype) if dark is None else as_stack(dark, "dark")
    bright_stack = dark_stack if bright is None else as_stack(bright, "bright")
    mask_stack = None if mask is None else as_stack(mask, "mask").astype(stack.dtype)
    for name, extra in (("dark", dark_stack), ("bright", bright_stack), ("mask", mask_stack)):
        if extra is not None and extra.shape[1:] != frame_shape:
            raise ValueError(f"write_midas_zip: {name} frame shape {extra.shape[1:]} != data {frame_shape}")
    with atomic_path(path) as tmp:
        write_zip(tmp, stack, dark_stack, bright_stack, mask_stack, dict(parameters or {}))


def read_midas_zip(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Read a MIDAS Zarr zip.

    Returns
    -------
    frames : ndarray of shape (n_frames, NZ, NY)
        ``/exchange/data`` in its stored dtype.
    dark : ndarray or None
        ``/exchange/dark``.
    parameters : dict
        Every array of ``analysis_parameters`` and ``scan_parameters`` (``datatype``, ``start``, ``step``)
        by name, as stored (numpy arrays), except bytes arrays which become ``str`` (one element) or a
        list of ``str``. Note ``ImTransOpt [-1]`` is FGZ's "not given" placeholder.

    Raises
    ------
    ImageReadError
        Missing file, not a zip, no ``/exchange/data`` (lists the arrays present), corrupt or missing
        chunks.
    """
    return read_zip(path)
