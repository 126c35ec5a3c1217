"""Image input/output: readers of every supported format and the writers the simulator uses.

Every writer goes through :mod:`midas_ref.atomic` (temporary file + rename), so a failure never leaves a
half-written file behind.

Readers return frame stacks ``(n_frames, NZ, NY)`` indexed ``[frame, row, col] = [frame, Z, Y]`` in the
file's own dtype; :func:`average_frames` and :func:`load_image` return float64 (never the legacy uint16
truncation). Every problem with an input file raises :class:`~midas_ref.errors.ImageReadError` naming
the file.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path

import numpy as np

from . import _formats, _zarrzip
from ._zarrzip import read_midas_zip, write_midas_zip
from .atomic import atomic_output, atomic_path
from .errors import ImageReadError
from .preprocess import apply_im_trans_opt, build_mask, check_mask, validate_im_trans_opt

__all__ = [
    "CONVERT_FILE_TYPES", "DATA_TYPES", "GE_HEADER_BYTES", "ImageSource", "LoadedImage", "average_frames", "infer_file_type", "load_image", "read_frames", "read_midas_zip",
    "write_ge", "write_hdf5", "write_midas_zip", "write_raw", "write_tiff",
]


# ----------------------------------------------------------------------------------------------- readers

#: ``-ConvertFile`` codes → file type; "raw" (headerless or fixed-header binary) has no code.
CONVERT_FILE_TYPES = {0: "zarr", 1: "hdf5", 2: "ge", 3: "tiff"}
_FILE_TYPES = ("zarr", "hdf5", "ge", "tiff", "raw")
#: MIDAS ``DataType`` codes for binary files (legacy_engine.md §2.1), all little-endian.
DATA_TYPES = {1: np.dtype("<u2"), 2: np.dtype("<f8"), 3: np.dtype("<f4"), 4: np.dtype("<u4"),
              5: np.dtype("<i4")}
#: ``DataType`` codes that name a container instead of a pixel type (the legacy TIFF/HDF5 readers).
_DATA_TYPE_CONTAINERS = {6: "tiff", 7: "tiff", 8: "hdf5", 9: "tiff"}
GE_HEADER_BYTES = 8192
_DEFAULT_PIXELS = 2048
_EXTENSIONS = {".tif": "tiff", ".tiff": "tiff", ".h5": "hdf5", ".hdf5": "hdf5", ".hdf": "hdf5",
               ".nxs": "hdf5", ".zip": "zarr", ".raw": "raw", ".bin": "raw"}
HDF5_COMMON_DATASETS = _formats.HDF5_COMMON_DATASETS


@dataclasses.dataclass(frozen=True)
class ImageSource:
    """Where and how to read one image file; the options of :func:`read_frames`.

    Parameters
    ----------
    path : str
        The file.
    file_type : {"zarr", "hdf5", "ge", "tiff", "raw"} or {0, 1, 2, 3} or None
        None = from the extension; integers are ``-ConvertFile`` codes (0 zarr, 1 hdf5, 2 ge, 3 tiff).
    n_pixels_y, n_pixels_z : int or None
        ``NrPixelsY`` (columns) and ``NrPixelsZ`` (rows). Needed for GE/raw (default 2048, one given = both);
        checked against the file for the other types.
    data_type : int or None
        MIDAS ``DataType`` code; pixel type of GE/raw files (1 uint16 [GE default], 2 float64, 3 float32,
        4 uint32, 5 int32). 6/7/9 (TIFF) and 8 (HDF5) only select the reader; ignored for TIFF/HDF5/zarr.
    head_size : int or None
        ``HeadSize`` in bytes for GE (default 8192) and raw (default 0) files.
    data_loc : str or None
        Dataset path inside HDF5/zarr files (``-dataLoc``). None = ``exchange/data``, then
        :data:`HDF5_COMMON_DATASETS`, then the only image-like dataset of the file.
    skip_frame : int
        ``SkipFrame``: leading frames dropped.
    """

    path: str
    file_type: str | int | None = None
    n_pixels_y: int | None = None
    n_pixels_z: int | None = None
    data_type: int | None = None
    head_size: int | None = None
    data_loc: str | None = None
    skip_frame: int = 0


def _not_a_directory(path: str) -> None:
    """Raise :class:`ImageReadError` if ``path`` is a directory, naming an image file inside it if any."""
    if not os.path.isdir(path):
        return
    try:
        names = sorted(n for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)) and (
            Path(n).suffix.lower() in _EXTENSIONS or re.fullmatch(r"\.ge\d?", Path(n).suffix.lower())))
    except OSError:
        names = []
    if any(os.path.exists(os.path.join(path, n)) for n in (".zgroup", ".zarray", "zarr.json")):
        raise ImageReadError(f"{path}: is a directory (an unzipped Zarr store?), not an image file; give the "
                             "MIDAS Zarr zip, or zip the directory's contents (not the directory) into one")
    hint = (f", e.g. {os.path.join(path, names[0])} ({len(names)} image file{'s' if len(names) > 1 else ''} "
            "in the directory)") if names else " (the directory holds no image files)"
    raise ImageReadError(f"{path}: is a directory, not an image file; give the image file itself{hint}")


def infer_file_type(path: str | os.PathLike, file_type: str | int | None = None,
                    data_type: int | None = None) -> str:
    """File type ("zarr", "hdf5", "ge", "tiff" or "raw") from the argument, the extension or DataType.

    ``.ge``, ``.ge1`` … ``.ge9`` (also as the last suffix, ``x.edf.ge1``) are GE; an unknown extension with
    a ``data_type`` of 1–5 is raw. Raises :class:`ImageReadError` when nothing decides, or when ``path``
    is a directory.
    """
    path = os.fspath(path)
    _not_a_directory(path)
    if file_type is not None:
        if isinstance(file_type, (int, np.integer)) and not isinstance(file_type, bool):
            if int(file_type) not in CONVERT_FILE_TYPES:
                raise ImageReadError(f"{path}: unknown ConvertFile code {file_type} (0 zarr, 1 hdf5, 2 ge, 3 tiff)")
            return CONVERT_FILE_TYPES[int(file_type)]
        name = str(file_type).lower()
        name = {"zip": "zarr", "h5": "hdf5", "tif": "tiff"}.get(name, name)
        if name not in _FILE_TYPES:
            raise ImageReadError(f"{path}: unknown file type {file_type!r}; use one of {', '.join(_FILE_TYPES)}")
        return name
    suffix = Path(path).suffix.lower()
    if re.fullmatch(r"\.ge\d?", suffix):
        return "ge"
    if suffix in _EXTENSIONS:
        return _EXTENSIONS[suffix]
    if data_type is not None:
        _check_data_type(path, data_type)
        return _DATA_TYPE_CONTAINERS.get(int(data_type), "raw")
    what = f"the extension {suffix!r}" if suffix else "a name without an extension"
    raise ImageReadError(f"{path}: cannot tell the file type from {what}; give it with -ConvertFile (0 Zarr zip, "
                         "1 HDF5, 2 GE, 3 TIFF) or rename the file (.zip, .h5/.hdf5/.hdf/.nxs, .ge/.ge1–.ge9, "
                         ".tif/.tiff; .raw/.bin with DataType 1–5)")


def _check_data_type(path: str, data_type) -> int:
    if isinstance(data_type, bool) or not isinstance(data_type, (int, np.integer)) or (
            int(data_type) not in DATA_TYPES and int(data_type) not in _DATA_TYPE_CONTAINERS):
        raise ImageReadError(f"{path}: unknown DataType {data_type!r} (1 uint16, 2 float64, 3 float32, "
                             "4 uint32, 5 int32, 6/7/9 TIFF, 8 HDF5)")
    return int(data_type)


def _frame_size(source: ImageSource) -> tuple[int, int]:
    ny, nz = source.n_pixels_y, source.n_pixels_z
    ny = nz if ny is None else ny
    nz = ny if nz is None else nz
    ny = _DEFAULT_PIXELS if ny is None else int(ny)
    nz = _DEFAULT_PIXELS if nz is None else int(nz)
    if ny <= 0 or nz <= 0:
        raise ImageReadError(f"{source.path}: NrPixelsY/Z must be positive, got {ny} x {nz}")
    return ny, nz


def _read_source(source: ImageSource) -> tuple[np.ndarray, str, str | None, str | None]:
    """Frames (after SkipFrame), file type, dataset path (HDF5/zarr) and a note on how it was found."""
    path = source.path
    _not_a_directory(path)
    if not os.path.isfile(path):
        raise ImageReadError(f"{path}: file not found")
    if source.skip_frame < 0:
        raise ImageReadError(f"{path}: SkipFrame must be >= 0, got {source.skip_frame}")
    kind = infer_file_type(path, source.file_type, source.data_type)
    loc = note = None
    if kind in ("ge", "raw"):
        code = 1 if source.data_type is None else _check_data_type(path, source.data_type)
        if code not in DATA_TYPES:
            raise ImageReadError(f"{path}: DataType {code} is not a binary pixel type (use 1-5 for {kind} files)")
        head = (GE_HEADER_BYTES if kind == "ge" else 0) if source.head_size is None else int(source.head_size)
        frames = _formats.read_binary(path, DATA_TYPES[code], *_frame_size(source), head, source.skip_frame)
    elif kind == "tiff":
        frames = _formats.read_tiff(path, source.skip_frame)
    elif kind == "hdf5":
        frames, loc, note = _formats.read_hdf5(path, source.data_loc, source.skip_frame)
    else:
        loc = (source.data_loc or _zarrzip.DATA_LOC).strip("/")
        frames = _zarrzip.read_array(path, loc, source.skip_frame)
        if frames.ndim == 2:
            frames = frames[np.newaxis][source.skip_frame:]
        if frames.ndim != 3:
            raise ImageReadError(f"{path}: zarr array '{loc}' has shape {frames.shape}; expected 2-D or 3-D")
    if frames.dtype.kind not in "biuf":
        raise ImageReadError(f"{path}: image dtype {frames.dtype} is not numeric")
    if kind not in ("ge", "raw"):
        ny, nz = source.n_pixels_y, source.n_pixels_z
        if (ny is not None and ny != frames.shape[2]) or (nz is not None and nz != frames.shape[1]):
            raise ImageReadError(f"{path}: image is {frames.shape[2]} x {frames.shape[1]} (NrPixelsY x NrPixelsZ)"
                                 f" but NrPixelsY={ny}, NrPixelsZ={nz} were given")
    if frames.shape[0] == 0:
        raise ImageReadError(f"{path}: no frames left after SkipFrame {source.skip_frame}")
    return frames, kind, loc, note


def read_frames(path: str | os.PathLike | ImageSource, *, file_type: str | int | None = None,
                n_pixels_y: int | None = None, n_pixels_z: int | None = None, data_type: int | None = None,
                head_size: int | None = None, data_loc: str | None = None, skip_frame: int = 0) -> np.ndarray:
    """Read an image file as a frame stack.

    Parameters
    ----------
    path : path-like or ImageSource
        The file (an :class:`ImageSource` carries all options; keyword arguments are then ignored).
    file_type, n_pixels_y, n_pixels_z, data_type, head_size, data_loc, skip_frame
        See :class:`ImageSource`.

    Returns
    -------
    ndarray of shape (n_frames, NZ, NY)
        Frames after dropping ``skip_frame`` leading ones, in the file's dtype (GE/raw: the DataType's).

    Raises
    ------
    ImageReadError
        Missing file; undecidable or unknown file type/DataType; GE/raw size not header + whole frames of
        NrPixelsY × NrPixelsZ; HDF5/zarr dataset not found (the message lists those present); non-numeric
        data; NrPixelsY/Z contradicting the file; no frames left after SkipFrame; corrupt or truncated file.

    Examples
    --------
    >>> frames = read_frames("CeO2_000001.ge3", n_pixels_y=1024, n_pixels_z=1024)  # doctest: +SKIP
    >>> frames.shape, frames.dtype  # doctest: +SKIP
    ((1, 1024, 1024), dtype('uint16'))
    """
    source = path if isinstance(path, ImageSource) else ImageSource(
        os.fspath(path), file_type, n_pixels_y, n_pixels_z, data_type, head_size, data_loc, skip_frame)
    return _read_source(source)[0]


def average_frames(frames: np.ndarray, skip_frame: int = 0) -> np.ndarray:
    """Mean of a frame stack in float64 (not the legacy sum, no uint16 cast).

    Parameters
    ----------
    frames : ndarray of shape (n_frames, NZ, NY) or (NZ, NY)
        Frames; a 2-D array is one frame.
    skip_frame : int
        Leading frames to drop first.

    Returns
    -------
    ndarray of float64, shape (NZ, NY)

    Raises
    ------
    ImageReadError
        No frame left after ``skip_frame``, or a frame that is entirely NaN (its mean would poison
        every pixel).
    """
    frames = np.asarray(frames)
    if frames.ndim == 2:
        frames = frames[np.newaxis]
    if frames.ndim != 3:
        raise ImageReadError(f"cannot average an array of shape {frames.shape}; expected (n_frames, NZ, NY)")
    used = frames[skip_frame:]
    if used.shape[0] == 0:
        raise ImageReadError(f"no frames left to average: {frames.shape[0]} frame(s), SkipFrame {skip_frame}")
    if used.dtype.kind in "fc":
        for index, frame in enumerate(used):
            if np.isnan(frame).all():
                raise ImageReadError(f"frame {index + skip_frame} is entirely NaN")
    return np.mean(used, axis=0, dtype=np.float64)


@dataclasses.dataclass(frozen=True)
class LoadedImage:
    """An averaged, dark-subtracted, ImTransOpt-transformed image and its mask, in the same frame.

    Attributes
    ----------
    image : ndarray of float64, shape (NZ, NY) after ImTransOpt
        mean(data frames) − mean(dark frames); masked pixels keep their (meaningless) values.
    mask : ndarray of bool, same shape
        True = masked (sentinels in the raw data or dark frames, non-finite pixels, mask file/array).
    path, file_type, dataset : str, str, str or None
        The data file, its resolved type, and the HDF5/zarr dataset read.
    raw_dtype : str
        dtype of the frames in the file.
    n_frames : int
        Data frames averaged (after SkipFrame).
    dark_path, dark_dataset : str or None
        Where the dark came from (None = no dark subtracted).
    n_dark_frames : int
        Dark frames averaged (0 without a dark).
    im_trans_opt : tuple of int
        Transformations applied, in order.
    notes : tuple of str
        How ambiguous inputs were resolved (fallback dataset, embedded dark).
    """

    image: np.ndarray
    mask: np.ndarray
    path: str
    file_type: str
    dataset: str | None
    raw_dtype: str
    n_frames: int
    dark_path: str | None
    dark_dataset: str | None
    n_dark_frames: int
    im_trans_opt: tuple[int, ...]
    notes: tuple[str, ...]


def _embedded_dataset(path: str, kind: str, loc: str) -> bool:
    return _zarrzip.has_array(path, loc) if kind == "zarr" else _formats.hdf5_has_dataset(path, loc)


def load_image(path: str | os.PathLike, *, dark_path: str | os.PathLike | None = None,
               dark_loc: str | None = None, dark_skip_frame: int | None = None, use_embedded_dark: bool = True,
               file_type: str | int | None = None, n_pixels_y: int | None = None,
               n_pixels_z: int | None = None, data_type: int | None = None, head_size: int | None = None,
               data_loc: str | None = None, skip_frame: int = 0, im_trans_opt=(),
               bad_px_intensity: float | None = None, gap_intensity: float | None = None,
               mask_file: str | os.PathLike | None = None, mask_array: np.ndarray | None = None) -> LoadedImage:
    """Read → average → subtract the averaged dark → mask → ImTransOpt, in one call.

    Parameters
    ----------
    path : path-like
        Data file; reader options as in :class:`ImageSource`.
    dark_path : path-like, optional
        Dark file, read with the same options (its own extension decides its type unless ``file_type``
        is given). Without it, an HDF5 or zarr data file's own dataset ``dark_loc`` (default
        ``exchange/dark``) is used when present and ``use_embedded_dark`` is true; otherwise no dark.
    dark_loc : str, optional
        Dataset of the dark inside an HDF5/zarr file (default: ``data_loc`` for a separate dark file,
        ``exchange/dark``, if present, for the data file itself; a ``dark_loc`` given must exist).
    dark_skip_frame : int, optional
        SkipFrame for the dark (default: ``skip_frame``, as AutoCalibrateZarr does).
    im_trans_opt : sequence of int
        ImTransOpt list, applied to image and mask after dark subtraction and masking.
    bad_px_intensity, gap_intensity, mask_file, mask_array
        See :func:`midas_ref.preprocess.build_mask`; sentinels are tested on the raw data and dark frames.

    Returns
    -------
    LoadedImage

    Raises
    ------
    ImageReadError
        Any reader error (see :func:`read_frames`), NaN-only frames, or a dark or mask whose shape
        differs from the data's.
    ImTransOptError
        Invalid ImTransOpt code.
    CalibrationError
        Every pixel masked.

    Notes
    -----
    Unlike AutoCalibrateZarr@00074b47 the result is not clamped to ≥ 1 nor cast to uint16, the mask comes
    from the data frames (not from a clamped dark), and the legacy engine's running sum over frames is a
    mean here (autocalibrate.md §2.3, §2.5; legacy_engine.md §2.1, §2.6).
    """
    options = validate_im_trans_opt(im_trans_opt)  # fail before reading anything
    source = ImageSource(os.fspath(path), file_type, n_pixels_y, n_pixels_z, data_type, head_size, data_loc,
                         skip_frame)
    frames, kind, dataset, note = _read_source(source)
    notes = [note] if note else []
    data_mean = average_frames(frames)
    dark_source = None
    if dark_path is not None:
        dark_source = dataclasses.replace(source, path=os.fspath(dark_path),
                                          data_loc=dark_loc if dark_loc is not None else data_loc)
    elif use_embedded_dark and kind in ("hdf5", "zarr"):
        loc = dark_loc or "exchange/dark"
        if dark_loc is not None or _embedded_dataset(source.path, kind, loc):  # an explicit one must exist
            dark_source = dataclasses.replace(source, data_loc=loc)
            notes.append(f"dark taken from dataset '{loc}' of the data file")
    dark_frames, dark_dataset = None, None
    image = data_mean
    if dark_source is not None:
        skip = skip_frame if dark_skip_frame is None else dark_skip_frame
        dark_source = dataclasses.replace(dark_source, skip_frame=skip)
        try:
            dark_frames, _, dark_dataset, _ = _read_source(dark_source)
        except ImageReadError as exc:
            if "no frames left" in str(exc):
                raise ImageReadError(f"{exc} (the dark: SkipFrame applies to the dark too; lower SkipFrame or use "
                                     "a dark with more frames)") from exc
            raise
        if dark_frames.shape[1:] != frames.shape[1:]:
            raise ImageReadError(f"{dark_source.path}: dark frame shape {dark_frames.shape[1:]} differs from "
                                 f"the data frame shape {frames.shape[1:]} of {source.path}")
        try:
            image = data_mean - average_frames(dark_frames)
        except ImageReadError as exc:
            raise ImageReadError(f"{dark_source.path}: {exc}") from exc
    mask = build_mask(frames, bad_px_intensity=bad_px_intensity, gap_intensity=gap_intensity,
                      mask_file=mask_file, mask_array=mask_array)
    if dark_frames is not None:
        mask |= build_mask(dark_frames, bad_px_intensity=bad_px_intensity, gap_intensity=gap_intensity)
    image = apply_im_trans_opt(image, options)
    mask = check_mask(apply_im_trans_opt(mask, options))
    return LoadedImage(image=image, mask=mask, path=source.path, file_type=kind, dataset=dataset,
                       raw_dtype=frames.dtype.name, n_frames=int(frames.shape[0]),
                       dark_path=None if dark_source is None else dark_source.path, dark_dataset=dark_dataset,
                       n_dark_frames=0 if dark_frames is None else int(dark_frames.shape[0]),
                       im_trans_opt=options, notes=tuple(notes))


# ----------------------------------------------------------------------------------------------- writers

# "axes" is a reserved tifffile metadata key (its shape code), so the convention goes under another name
_FORMAT_NOTE = {"midas_ref_format_version": 1,
                "axis_convention": "frames are (frame, row = Z, col = Y); pixel [0, 0] is the first stored pixel"}


def write_tiff(path: str | os.PathLike, image, dtype=None) -> None:
    """Write one image (or a stack as a multi-page TIFF), atomically.

    Parameters
    ----------
    path : path-like
        Destination.
    image : ndarray of shape (NZ, NY) or (n_frames, NZ, NY)
    dtype : dtype, optional
        Pixel type stored. Default: integer and boolean images keep an integer type (bool → uint8),
        float images are stored as float32. An integer ``dtype`` must hold every value exactly.
    """
    import tifffile

    data = np.asarray(image)
    if data.ndim not in (2, 3) or data.dtype.kind not in "biuf":
        raise ValueError(f"write_tiff: need a numeric 2-D or 3-D array, got {data.dtype} {data.shape}")
    target = np.dtype(dtype) if dtype is not None else (
        np.dtype(np.uint8) if data.dtype.kind == "b" else data.dtype if data.dtype.kind in "iu"
        else np.dtype(np.float32))
    if target.kind == "f":
        data = data.astype(target)
    else:
        data = _formats.exact_cast(data, target, f"write_tiff {os.fspath(path)}")
    with atomic_path(path) as tmp:
        # explicit photometric: tifffile would store a (3, NZ, NY) stack as one RGB image
        tifffile.imwrite(tmp, data, photometric="minisblack", metadata=dict(_FORMAT_NOTE))


def _write_binary(path, stack: np.ndarray, header_bytes: int) -> None:
    if header_bytes < 0:
        raise ValueError(f"header size must be >= 0, got {header_bytes}")
    with atomic_output(path, "wb") as handle:
        handle.write(bytes(header_bytes))
        handle.write(np.ascontiguousarray(stack).tobytes())


def write_ge(path: str | os.PathLike, frames, header_bytes: int = GE_HEADER_BYTES) -> None:
    """Write frames as a GE file: ``header_bytes`` zero bytes, then little-endian uint16 frames.

    Values must be integers in 0…65535 (ValueError otherwise). The header carries no metadata; readers
    need NrPixelsY/Z (:func:`read_frames`).
    """
    stack = _formats.exact_cast(_formats.as_stack(frames, "write_ge"), "<u2", f"write_ge {os.fspath(path)}")
    _write_binary(path, stack, header_bytes)


def write_raw(path: str | os.PathLike, frames, data_type: int, head_size: int = 0) -> None:
    """Write frames as a binary file of MIDAS ``DataType`` 1–5 (little-endian), after ``head_size`` zeros."""
    if data_type not in DATA_TYPES:
        raise ValueError(f"write_raw: DataType must be one of {sorted(DATA_TYPES)}, got {data_type!r}")
    stack = _formats.exact_cast(_formats.as_stack(frames, "write_raw"), DATA_TYPES[data_type],
                                f"write_raw {os.fspath(path)}")
    _write_binary(path, stack, head_size)


def write_hdf5(path: str | os.PathLike, frames, data_loc: str = "exchange/data", dark=None,
               dark_loc: str = "exchange/dark", attrs: dict | None = None) -> None:
    """Write frames (and optionally a dark) to an HDF5 file, atomically.

    Parameters
    ----------
    frames : ndarray of shape (NZ, NY) or (n_frames, NZ, NY)
        Stored 3-D at ``data_loc``, chunked one frame per chunk, native dtype.
    dark : ndarray, optional
        Stored 3-D at ``dark_loc``.
    attrs : dict, optional
        Attributes of the data dataset. The root carries the format version and axis convention.
    """
    import h5py

    stack = _formats.as_stack(frames, "write_hdf5")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        handle.attrs.update(_FORMAT_NOTE)
        dataset = handle.create_dataset(data_loc, data=stack, chunks=(1, *stack.shape[1:]))
        dataset.attrs.update(attrs or {})
        if dark is not None:
            dark_stack = _formats.as_stack(dark, "write_hdf5 dark")
            handle.create_dataset(dark_loc, data=dark_stack, chunks=(1, *dark_stack.shape[1:]))
