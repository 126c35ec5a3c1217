"""Per-format frame readers and array helpers behind :mod:`midas_ref.io`.

Each reader returns a stack ``(n_frames, NZ, NY)`` with the first ``skip_frame`` frames dropped, in the
file's dtype, and raises :class:`~midas_ref.errors.ImageReadError` naming the file on any problem.
"""

from __future__ import annotations

import os

import numpy as np

from .errors import ImageReadError, MidasRefError

#: Tried in order when no HDF5 dataset path is given.
HDF5_COMMON_DATASETS = ("exchange/data", "entry/data/data", "entry/instrument/detector/data",
                        "imageseries/images", "entry1/data/data", "data", "images")
#: An HDF5 dataset is "image-like" for the fallback search if it is 2-D/3-D numeric with both image axes
#: at least this long (excludes the (n, 2) coordinate and (6, 6) tensor tables of HEXRD files).
_MIN_IMAGE_SIDE = 64


def read_binary(path: str, dtype: np.dtype, n_pixels_y: int, n_pixels_z: int, head_size: int,
                skip_frame: int) -> np.ndarray:
    """Frames of a GE or headerless/fixed-header binary file; the size must be header + whole frames."""
    frame_bytes = dtype.itemsize * n_pixels_y * n_pixels_z
    size = os.path.getsize(path)
    n_frames, extra = divmod(size - head_size, frame_bytes)
    if size < head_size or extra or n_frames == 0:
        frame = (f"a {n_pixels_y} x {n_pixels_z} (NrPixelsY x NrPixelsZ) {dtype.name} frame is "
                 f"{frame_bytes} bytes")
        if size < head_size:
            what = f"the file has {size} bytes, fewer than the HeadSize {head_size} header"
        elif n_frames == 0 and not extra:
            what = f"the file has {size} bytes: the HeadSize {head_size} header and no frame ({frame})"
        elif n_frames == 0:
            what = (f"the file has {size} bytes: the HeadSize {head_size} header + {extra} bytes, less than "
                    f"one frame ({frame})")
        else:
            what = (f"the file has {size} bytes = HeadSize {head_size} header + {n_frames} whole "
                    f"frame{'s' if n_frames > 1 else ''} + {extra} bytes ({frame}): the last frame is partial")
        raise ImageReadError(f"{path}: {what}; a truncated file, or wrong NrPixelsY/Z, HeadSize or DataType")
    count = max(n_frames - skip_frame, 0) * n_pixels_y * n_pixels_z
    data = np.fromfile(path, dtype=dtype, count=count, offset=head_size + skip_frame * frame_bytes)
    return data.reshape(-1, n_pixels_z, n_pixels_y)


def read_tiff(path: str, skip_frame: int) -> np.ndarray:
    """Frames of a single- or multi-page greyscale TIFF."""
    import tifffile

    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.series[0].pages[0]
            if page is not None and getattr(page, "samplesperpixel", 1) > 1:
                raise ImageReadError(f"{path}: colour TIFF ({page.samplesperpixel} samples per pixel); a "
                                     "detector image has one")
            data = np.asarray(tif.series[0].asarray())
    except MidasRefError:
        raise
    except Exception as exc:  # tifffile raises TiffFileError, ValueError, struct.error, ... for bad files
        raise ImageReadError(f"{path}: corrupt or truncated TIFF ({type(exc).__name__}: {exc})") from exc
    while data.ndim > 3 and data.shape[0] == 1:
        data = data[0]
    if data.ndim == 2:
        data = data[np.newaxis]
    if data.ndim != 3:
        raise ImageReadError(f"{path}: TIFF of shape {data.shape} is not one image or a frame stack")
    return data[skip_frame:]


def _hdf5_image_datasets(handle) -> list[str]:
    import h5py

    found = []

    def visit(name, obj):
        if (isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3) and obj.dtype.kind in "iuf"
                and min(obj.shape[-2:]) >= _MIN_IMAGE_SIDE):
            found.append(name)

    handle.visititems(visit)
    return found


def _hdf5_all_datasets(handle, limit: int = 30) -> str:
    import h5py

    datasets = []
    handle.visititems(lambda name, obj: datasets.append((obj.size, name, obj.shape, obj.dtype))
                      if isinstance(obj, h5py.Dataset) else None)
    datasets.sort(key=lambda item: (-item[0], item[1]))  # largest (the images) first
    names = [f"{name} {shape} {dtype}" for _, name, shape, dtype in datasets]
    if len(names) > limit:
        names = names[:limit] + [f"... ({len(names) - limit} more)"]
    return "; ".join(names) or "none"


def _hdf5_group_datasets(group, loc: str, limit: int = 5) -> str:
    """What to say about group ``loc``: the datasets inside it (largest first, with shapes) and a -dataLoc."""
    import h5py

    datasets = []
    group.visititems(lambda name, obj: datasets.append((obj.size, name, obj.shape))
                     if isinstance(obj, h5py.Dataset) else None)
    if not datasets:
        return "it holds no datasets"
    datasets.sort(key=lambda item: (-item[0], item[1]))  # largest (the images) first
    full = [(f"{loc}/{name}" if loc else name, shape) for _, name, shape in datasets]
    shown = ", ".join(f"{name} {shape}" for name, shape in full[:limit])
    more = f" and {len(full) - limit} more" if len(full) > limit else ""
    return f"datasets inside it: {shown}{more}; give one of them, e.g. -dataLoc {full[0][0]}"


def _resolve_hdf5_dataset(handle, path: str, data_loc: str | None) -> tuple[str, str | None]:
    import h5py

    if data_loc is not None:
        loc = data_loc.strip("/")
        node = handle.get(loc) if loc else handle
        if isinstance(node, h5py.Dataset):
            return loc, None
        if isinstance(node, h5py.Group):
            raise ImageReadError(f"{path}: '{loc or '/'}' (-dataLoc) is an HDF5 group, not a dataset; "
                                 + _hdf5_group_datasets(node, loc))
        raise ImageReadError(f"{path}: HDF5 dataset '{loc}' not found; datasets present: "
                             + _hdf5_all_datasets(handle))
    for loc in HDF5_COMMON_DATASETS:
        if isinstance(handle.get(loc), h5py.Dataset):
            return loc, (None if loc == "exchange/data" else f"no exchange/data; using dataset '{loc}'")
    candidates = _hdf5_image_datasets(handle)
    if len(candidates) == 1:
        return candidates[0], f"no exchange/data; using the only image dataset '{candidates[0]}'"
    what = (f"several image-like datasets ({', '.join(candidates)})" if candidates
            else "datasets present: " + _hdf5_all_datasets(handle))
    raise ImageReadError(f"{path}: no HDF5 dataset 'exchange/data' and no unique image dataset; {what}; "
                         "give it with -dataLoc (dataLoc in the parameter file)")


def read_hdf5(path: str, data_loc: str | None, skip_frame: int) -> tuple[np.ndarray, str, str | None]:
    """Frames of an HDF5 dataset, the dataset path used, and a note if it was found by fallback."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise ImageReadError(f"{path}: not a readable HDF5 file ({exc})") from exc
    with handle:
        loc, note = _resolve_hdf5_dataset(handle, path, data_loc)
        dataset = handle[loc]
        if dataset.dtype.kind not in "biuf":
            raise ImageReadError(f"{path}: dataset '{loc}' has non-numeric dtype {dataset.dtype}")
        if dataset.ndim not in (2, 3):
            raise ImageReadError(f"{path}: dataset '{loc}' has shape {dataset.shape}; expected (NZ, NY) "
                                 "or (n_frames, NZ, NY)")
        try:
            if dataset.ndim == 2:  # one frame
                data = dataset[...][np.newaxis][skip_frame:]
            else:
                data = dataset[skip_frame:]
        except (OSError, ValueError) as exc:
            raise ImageReadError(f"{path}: cannot read dataset '{loc}' ({exc}); corrupt file or missing "
                                 "compression filter?") from exc
    return data, loc, note


def hdf5_has_dataset(path: str, loc: str) -> bool:
    """True if the HDF5 file at ``path`` has a dataset at ``loc``."""
    import h5py

    try:
        with h5py.File(path, "r") as handle:
            return isinstance(handle.get(loc.strip("/")), h5py.Dataset)
    except OSError:
        return False


def as_stack(frames, what: str) -> np.ndarray:
    """``frames`` as a numeric 3-D stack (a 2-D image becomes one frame); ValueError otherwise."""
    stack = np.asarray(frames)
    if stack.ndim == 2:
        stack = stack[np.newaxis]
    if stack.ndim != 3 or 0 in stack.shape:
        raise ValueError(f"{what}: expected a 2-D image or a (n_frames, NZ, NY) stack, got shape {stack.shape}")
    if stack.dtype.kind not in "biuf":
        raise ValueError(f"{what}: dtype {stack.dtype} is not numeric")
    return stack


def exact_cast(array: np.ndarray, dtype, what: str) -> np.ndarray:
    """``array`` as ``dtype``; ValueError if any value would change (range, fraction, NaN → int)."""
    dtype = np.dtype(dtype)
    if array.dtype == dtype:
        return array
    with np.errstate(all="ignore"):
        cast = array.astype(dtype)
        same = cast.astype(array.dtype) == array
    if array.dtype.kind == "f" and dtype.kind == "f":
        same |= np.isnan(array) & np.isnan(cast)
    if not np.all(same):
        raise ValueError(f"{what}: {array.dtype} values are not exactly representable as {dtype.name} "
                         "(out of range, fractional or NaN)")
    return cast
