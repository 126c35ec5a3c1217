"""Tests of midas_ref.io: readers, frame averaging, load_image, writers and the MIDAS Zarr zip."""

from __future__ import annotations

import json
import zipfile

import h5py
import numpy as np
import pytest
import tifffile
import zarr
from conftest import shared_file
from zarr.storage import ZipStore

from midas_ref import io
from midas_ref.errors import CalibrationError, ImageReadError
from midas_ref.preprocess import ImTransOptError

PIL1M = ("data", "real", "pilatus1m_ceo2_cpf", "CeO2_Pil207_E30_2Nov2016_001.tif")
PIL2M = ("data", "real", "pilatus2m_ceo2_aps1id", "ceria_50x30_740mm_000005_Pilatus2M.hdf5")
GE_WPPF = ("data", "real", "ge_ceo2_aps1id", "ge_wppf.h5")
GE_DARK_CASE = ("legacy", "ceo2_1024_ge_dark")
RAW_2048 = ("legacy", "ceo2_2048_tilt_dist", "CeO2_000001.raw")
PANELS16 = ("legacy", "ceo2_1024_panels16")


def stack(n_frames=3, n_rows=5, n_cols=7, dtype=np.uint16, seed=20917):
    """Distinct-looking small frames; non-square so that a swapped NrPixelsY/Z shows."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 60000, size=(n_frames, n_rows, n_cols)).astype(dtype)


# --------------------------------------------------------------------------------------- real data

def test_pilatus1m_tiff_gap_and_bad_pixel_counts():
    path = shared_file(*PIL1M)
    raw = tifffile.imread(path)  # independent read
    n_gap, n_bad = int(np.sum(raw == -1)), int(np.sum(raw == -2))
    loaded = io.load_image(path, gap_intensity=-1, bad_px_intensity=-2)
    assert loaded.raw_dtype == "int32" and loaded.image.shape == (1043, 981)
    assert int(loaded.mask.sum()) == n_gap + n_bad
    assert int(loaded.mask.sum()) > 70000
    # values kept as they are: no halving or uint16 cast (legacy TIFF path), so image == raw exactly
    assert loaded.image.dtype == np.float64 and np.array_equal(loaded.image, raw.astype(np.float64))
    only_gaps = io.load_image(path, gap_intensity=-1, bad_px_intensity=float("nan"))
    assert int(only_gaps.mask.sum()) == n_gap


def test_pilatus2m_hdf5_gaps_match_provenance():
    path = shared_file(*PIL2M)
    loaded = io.load_image(path, gap_intensity=-1)
    assert loaded.dataset == "imageseries/images"  # found without data_loc
    assert loaded.image.shape == (1679, 1475)
    assert int(loaded.mask.sum()) == 202_021  # PROVENANCE.md: module gaps −1
    assert int(io.load_image(path, bad_px_intensity=-2).mask.sum()) == 1_265  # excluded pixels −2


def test_ge_wppf_hdf5_dataset_explicit_and_found():
    path = shared_file(*GE_WPPF)
    frames = io.read_frames(path, data_loc="images/ge3/images")
    assert frames.shape == (1, 2048, 2048) and frames.dtype == np.uint16
    assert int(frames.max()) == 12305
    loaded = io.load_image(path)  # the only image-like dataset of the file
    assert loaded.dataset == "images/ge3/images" and loaded.notes
    assert loaded.image.max() == 12305.0


def test_ge_wppf_wrong_dataset_lists_present_ones():
    path = shared_file(*GE_WPPF)
    with pytest.raises(ImageReadError, match=r"'exchange/data' not found.*images/ge3/images \(1, 2048, 2048\)"):
        io.read_frames(path, data_loc="exchange/data")


def test_ge_with_dark_file():
    case = shared_file(*GE_DARK_CASE)
    truth = json.loads((case / "truth.json").read_text())
    kwargs = dict(n_pixels_y=1024, n_pixels_z=1024)
    dark = io.read_frames(case / "dark_000001.ge3", **kwargs)
    assert dark.shape == (1, 1024, 1024) and np.all(dark == truth["dark_level"])  # constant 100 counts
    raw = io.read_frames(case / "CeO2_000001.ge3", **kwargs)
    loaded = io.load_image(case / "CeO2_000001.ge3", dark_path=case / "dark_000001.ge3", **kwargs)
    assert loaded.n_dark_frames == 1 and loaded.file_type == "ge"
    assert np.array_equal(loaded.image, raw[0].astype(np.float64) - truth["dark_level"])
    # background of the simulation is 300 counts; the median pixel is background (+ noise, ring tails)
    assert abs(np.median(loaded.image) - truth["bg"]) < 0.05 * truth["bg"]


def test_ge_wrong_header_or_size_is_reported():
    path = shared_file(*GE_DARK_CASE, "CeO2_000001.ge3")
    with pytest.raises(ImageReadError, match=r"HeadSize 0 header \+ 1 whole frame \+ 8192 bytes .*1024 x 1024"):
        io.read_frames(path, n_pixels_y=1024, n_pixels_z=1024, head_size=0)
    with pytest.raises(ImageReadError, match=r"less than one frame \(a 2048 x 2048 .* 8388608 bytes\)"):  # default detector size
        io.read_frames(path)


def test_headerless_raw_2048():
    path = shared_file(*RAW_2048)
    frames = io.read_frames(path, n_pixels_y=2048, n_pixels_z=2048, data_type=1, head_size=0)
    expected = np.fromfile(path, dtype="<u2").reshape(1, 2048, 2048)
    assert frames.dtype == np.uint16 and np.array_equal(frames, expected)
    with pytest.raises(ImageReadError, match="float64"):
        io.read_frames(path, n_pixels_y=2048, n_pixels_z=2048, data_type=2)  # 0.5 frame of doubles


def test_panel_gapmask_tif_as_mask_file():
    case = shared_file(*PANELS16)
    gapmask = tifffile.imread(case / "gapmask.tif") != 0
    kwargs = dict(n_pixels_y=1024, n_pixels_z=1024, data_type=1, head_size=0)
    loaded = io.load_image(case / "CeO2_000001.raw", mask_file=case / "gapmask.tif", **kwargs)
    assert int(loaded.mask.sum()) == int(gapmask.sum()) == 48_576
    # the simulated gaps are 0 in the image, so GapIntensity 0 gives the same mask
    by_value = io.load_image(case / "CeO2_000001.raw", gap_intensity=0, **kwargs)
    assert np.array_equal(by_value.mask, loaded.mask)
    flipped = io.load_image(case / "CeO2_000001.raw", mask_file=case / "gapmask.tif", im_trans_opt=[1, 3],
                            **kwargs)
    assert np.array_equal(flipped.mask, np.fliplr(gapmask).T)


# ---------------------------------------------------------------------------------------- file types

@pytest.mark.parametrize("name, expected", [
    ("a.tif", "tiff"), ("a.TIFF", "tiff"), ("a.ge", "ge"), ("a.ge3", "ge"), ("x_000007.edf.ge1", "ge"),
    ("a.h5", "hdf5"), ("a.hdf", "hdf5"), ("a.nxs", "hdf5"), ("a.MIDAS.zip", "zarr"), ("a.raw", "raw"),
    ("a.bin", "raw"),
])
def test_infer_file_type_from_extension(name, expected):
    assert io.infer_file_type(name) == expected


def test_infer_file_type_from_code_and_data_type():
    assert [io.infer_file_type("x.dat", code) for code in range(4)] == ["zarr", "hdf5", "ge", "tiff"]
    assert io.infer_file_type("x.dat", data_type=5) == "raw"
    assert io.infer_file_type("x.dat", data_type=8) == "hdf5"
    with pytest.raises(ImageReadError, match="cannot tell the file type"):
        io.infer_file_type("x.dat")
    with pytest.raises(ImageReadError, match="unknown DataType 12"):
        io.infer_file_type("x.dat", data_type=12)
    with pytest.raises(ImageReadError, match="ConvertFile code 7"):
        io.infer_file_type("x.dat", 7)


# ---------------------------------------------------------------------------------------- averaging

def test_average_is_mean_not_sum_and_float64():
    frames = np.array([[[1, 65535]], [[2, 65535]]], dtype=np.uint16)
    mean = io.average_frames(frames)
    assert mean.dtype == np.float64
    assert np.array_equal(mean, [[1.5, 65535.0]])  # no sum (legacy C), no uint16 truncation/wrap (ACZ)
    assert np.array_equal(io.average_frames(frames, skip_frame=1), [[2.0, 65535.0]])


def test_average_errors():
    with pytest.raises(ImageReadError, match="no frames left.*2 frame\\(s\\), SkipFrame 2"):
        io.average_frames(np.zeros((2, 3, 3)), skip_frame=2)
    frames = np.ones((3, 2, 2))
    frames[1] = np.nan
    with pytest.raises(ImageReadError, match="frame 1 is entirely NaN"):
        io.average_frames(frames)


# ---------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("dtype", [np.uint16, np.int32, np.uint32, np.float32])
def test_tiff_round_trip(tmp_path, dtype):
    frames = stack(dtype=dtype)
    io.write_tiff(tmp_path / "a.tif", frames[0])
    back = io.read_frames(tmp_path / "a.tif")
    assert back.dtype == dtype and np.array_equal(back, frames[:1])
    io.write_tiff(tmp_path / "s.tiff", frames)
    assert np.array_equal(io.read_frames(tmp_path / "s.tiff", skip_frame=1), frames[1:])


def test_tiff_float64_stored_as_float32_and_bad_integer_cast(tmp_path):
    image = np.array([[0.1, 2.5], [np.nan, -3.0]])
    io.write_tiff(tmp_path / "f.tif", image)
    back = io.read_frames(tmp_path / "f.tif")
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back[0], image.astype(np.float32))
    with pytest.raises(ValueError, match="not exactly representable as uint16"):
        io.write_tiff(tmp_path / "bad.tif", np.array([[70000]]), dtype=np.uint16)


def test_ge_round_trip_bytes_and_values(tmp_path):
    frames = stack()
    path = tmp_path / "scan_000001.edf.ge2"
    io.write_ge(path, frames)
    raw = path.read_bytes()
    assert len(raw) == 8192 + 3 * 5 * 7 * 2 and raw[:8192] == bytes(8192)
    assert raw[8192:] == frames.astype("<u2").tobytes()
    back = io.read_frames(path, n_pixels_y=7, n_pixels_z=5)
    assert back.dtype == np.uint16 and np.array_equal(back, frames)
    assert np.array_equal(io.read_frames(path, n_pixels_y=7, n_pixels_z=5, skip_frame=2), frames[2:])
    # NrPixelsY/Z swapped: same 35 px per frame, so no size error, but rows of 5 pixels instead of 7
    swapped = io.read_frames(path, n_pixels_y=5, n_pixels_z=7)
    assert swapped.shape == (3, 7, 5) and swapped[0, 1, 0] == frames[0, 0, 5]


def test_ge_values_out_of_range(tmp_path):
    with pytest.raises(ValueError, match="uint16"):
        io.write_ge(tmp_path / "x.ge3", np.array([[1, 70000]]))
    with pytest.raises(ValueError, match="uint16"):
        io.write_ge(tmp_path / "x.ge3", np.array([[1.5, 2.0]]))
    assert not (tmp_path / "x.ge3").exists()


@pytest.mark.parametrize("data_type, dtype", [(1, "<u2"), (2, "<f8"), (3, "<f4"), (4, "<u4"), (5, "<i4")])
def test_raw_round_trip_every_data_type(tmp_path, data_type, dtype):
    frames = stack(dtype=np.dtype(dtype)) - (100 if data_type == 5 else 0)
    path = tmp_path / "frames.dat"
    io.write_raw(path, frames, data_type, head_size=16)
    assert path.stat().st_size == 16 + frames.size * np.dtype(dtype).itemsize
    back = io.read_frames(path, data_type=data_type, head_size=16, n_pixels_y=7, n_pixels_z=5)
    assert back.dtype == np.dtype(dtype) and np.array_equal(back, frames)


def test_hdf5_round_trip_and_embedded_dark(tmp_path):
    frames = stack(dtype=np.int32)
    dark = np.full((2, 5, 7), 10, dtype=np.int32)
    dark[1] = 30
    path = tmp_path / "scan.h5"
    io.write_hdf5(path, frames, dark=dark, attrs={"energy_keV": 71.676})
    back = io.read_frames(path)
    assert back.dtype == np.int32 and np.array_equal(back, frames)
    with h5py.File(path) as handle:
        assert handle["exchange/data"].attrs["energy_keV"] == 71.676
        assert handle.attrs["midas_ref_format_version"] == 1
    loaded = io.load_image(path)
    assert loaded.dark_dataset == "exchange/dark" and loaded.n_dark_frames == 2
    expected = frames.astype(np.float64).mean(axis=0) - 20.0  # dark mean of 10 and 30
    np.testing.assert_allclose(loaded.image, expected, rtol=0, atol=1e-9)  # float64 sum of 3 ints
    no_dark = io.load_image(path, use_embedded_dark=False)
    assert no_dark.dark_path is None and no_dark.n_dark_frames == 0
    with pytest.raises(ImageReadError, match=r"'exchange/dark2' not found.*exchange/dark \(2, 5, 7\)"):
        io.load_image(path, dark_loc="exchange/dark2")


def test_hdf5_custom_location_2d_dataset(tmp_path):
    path = tmp_path / "one.hdf5"
    io.write_hdf5(path, stack(1)[0], data_loc="entry/data/data")
    assert io.read_frames(path).shape == (1, 5, 7)  # found through the common-path list
    assert io.read_frames(path, data_loc="/entry/data/data").shape == (1, 5, 7)


PARAMS = {
    "px": 172.0, "Wavelength": 0.172979, "Lsd": 1_000_000, "LatticeConstant": [5.411651, 5.411651, 5.411651],
    "BC": [1027.3, 1021.3], "SpaceGroup": 225, "SkipFrame": 1, "tx": 0, "RhoD": "2.9e5",
    "RingsToExclude": [[3, 0], [5, 0]], "ImTransOpt": [1, 3], "FileStem": "CeO2", "Padding": 6,
    "OmegaStep": 0.25, "OmegaStart": 10.0, "NrPixelsY": 7, "Dark": "dark_000001.ge3", "Comment": ["a", "b"],
}


def test_midas_zip_round_trip(tmp_path):
    frames, dark = stack(), np.full((2, 5, 7), 3, dtype=np.uint16)
    path = tmp_path / "x.analysis.MIDAS.zip"
    io.write_midas_zip(path, frames, dark=dark, parameters=PARAMS)
    back, back_dark, params = io.read_midas_zip(path)
    assert back.dtype == np.uint16 and np.array_equal(back, frames) and np.array_equal(back_dark, dark)
    assert params["PixelSize"].dtype == np.float64 and params["PixelSize"].tolist() == [172.0]
    assert params["LatticeParameter"].tolist() == [5.411651] * 3 + [0.0] * 3
    assert params["YCen"].tolist() == [1027.3] and params["ZCen"].tolist() == [1021.3]
    assert params["SpaceGroup"].dtype == np.int32 and params["SpaceGroup"].tolist() == [225]
    assert params["SkipFrame"].dtype == np.int32 and params["Padding"].dtype == np.int32
    assert params["Lsd"].dtype == np.float64 and params["tx"].dtype == np.float64
    assert params["RhoD"].tolist() == [290000.0]  # "2.9e5" (FGZ would keep a string) stored as a double
    assert params["RingsToExclude"].dtype == np.float64 and params["RingsToExclude"].shape == (2, 2)
    assert params["ImTransOpt"].dtype == np.int32 and params["ImTransOpt"].tolist() == [1, 3]
    assert params["FileStem"] == "CeO2" and params["Dark"] == "dark_000001.ge3"
    assert params["Comment"] == ["a", "b"]
    assert params["datatype"] == "uint16"
    assert params["step"].tolist() == [0.25] and params["start"].tolist() == [10.0 - 1 * 0.25]
    assert params["RingThresh"].shape == (1, 2) and params["OmegaRanges"].tolist() == [[-10000.0, 0.0]]
    assert "px" not in params and "LatticeConstant" not in params and "BC" not in params


def test_midas_zip_is_plain_zarr_v2(tmp_path):
    frames = stack(dtype=np.uint32)
    path = tmp_path / "x.zip"
    io.write_midas_zip(path, frames, parameters={"px": 200.0, "SpaceGroup": 225, "Ext": ".ge3"})
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        assert {".zgroup", "exchange/.zgroup", "exchange/data/.zarray", "exchange/data/0.0.0",
                "exchange/data/2.0.0", "exchange/dark/.zarray", "exchange/bright/.zarray",
                "measurement/process/scan_parameters/datatype/.zarray",
                "analysis/process/analysis_parameters/PixelSize/.zarray"} <= names
        meta = json.loads(archive.read("exchange/data/.zarray"))
        assert len(names) == len(archive.namelist())  # no duplicate members
    assert meta["zarr_format"] == 2 and meta["shape"] == [3, 5, 7] and meta["chunks"] == [1, 5, 7]
    assert meta["dtype"] == "<u4"
    assert meta["compressor"] == {"id": "blosc", "cname": "zstd", "clevel": 3, "shuffle": 2, "blocksize": 0}
    store = ZipStore(path, mode="r")
    try:
        root = zarr.open_group(store=store, mode="r")
        assert root.metadata.zarr_format == 2
        assert np.array_equal(root["exchange/data"][:], frames)
        assert np.array_equal(root["exchange/dark"][:], np.zeros((1, 5, 7)))  # default zero dark
        ext = root["analysis/process/analysis_parameters/Ext"][:]
        assert ext.dtype.kind == "S" and ext.shape == (1,) and ext[0] == b".ge3"
        assert root["measurement/process/scan_parameters/datatype"][0] == b"uint32"
    finally:
        store.close()


def test_midas_zip_read_frames_and_load_image(tmp_path):
    frames = stack()
    dark = np.full((1, 5, 7), 7, dtype=np.uint16)
    path = tmp_path / "x.zip"
    io.write_midas_zip(path, frames, dark=dark, bright=dark + 1)
    assert np.array_equal(io.read_frames(path, skip_frame=1), frames[1:])
    assert np.array_equal(io.read_frames(path, data_loc="exchange/bright"), dark + 1)
    loaded = io.load_image(path, skip_frame=1, dark_skip_frame=0, im_trans_opt=[2])
    expected = np.flipud(frames[1:].astype(np.float64).mean(axis=0) - 7.0)
    np.testing.assert_allclose(loaded.image, expected, rtol=0, atol=1e-9)
    assert loaded.dark_dataset == "exchange/dark" and loaded.file_type == "zarr"
    assert io.load_image(path, im_trans_opt=None).im_trans_opt == ()


# ------------------------------------------------------------------------ load_image: masks and frames

def test_mask_from_raw_data_not_from_dark_subtracted_values(tmp_path):
    frames = np.full((1, 4, 6), 50, dtype=np.int32)
    frames[0, 1, 4] = -1   # gap
    frames[0, 3, 0] = -2   # bad
    frames[0, 2, 2] = 49   # becomes -1 after subtracting the dark of 50: must NOT be masked
    io.write_tiff(tmp_path / "d.tif", frames[0])
    io.write_tiff(tmp_path / "dark.tif", np.full((4, 6), 50, dtype=np.int32))
    loaded = io.load_image(tmp_path / "d.tif", dark_path=tmp_path / "dark.tif", gap_intensity=-1,
                           bad_px_intensity=-2, im_trans_opt=[3, 1])
    assert loaded.image.shape == loaded.mask.shape == (6, 4)
    assert int(loaded.mask.sum()) == 2
    raw_mask = np.zeros((4, 6), dtype=bool)
    raw_mask[1, 4] = raw_mask[3, 0] = True
    assert np.array_equal(loaded.mask, np.fliplr(raw_mask.T))
    assert loaded.image[np.fliplr(raw_mask.T)].tolist() == [-52.0, -51.0]  # raw value − dark, kept
    assert loaded.im_trans_opt == (3, 1)


def test_dark_sentinels_are_masked_too(tmp_path):
    io.write_tiff(tmp_path / "d.tif", np.full((3, 3), 10, dtype=np.int32))
    dark = np.zeros((3, 3), dtype=np.int32)
    dark[0, 0] = -1
    io.write_tiff(tmp_path / "dark.tif", dark)
    loaded = io.load_image(tmp_path / "d.tif", dark_path=tmp_path / "dark.tif", gap_intensity=-1)
    assert loaded.mask.tolist() == [[True, False, False], [False] * 3, [False] * 3]


# ---------------------------------------------------------------------------------------------- errors

def test_missing_file(tmp_path):
    with pytest.raises(ImageReadError, match="nope.tif: file not found"):
        io.read_frames(tmp_path / "nope.tif")


def test_wrong_size_raw(tmp_path):
    io.write_raw(tmp_path / "x.raw", stack(1, 10, 10), 1)
    with pytest.raises(ImageReadError, match=r"has 200 bytes: .* 16 x 10 .*wrong NrPixelsY/Z"):
        io.read_frames(tmp_path / "x.raw", n_pixels_y=16, n_pixels_z=10)


def test_truncated_ge(tmp_path):
    io.write_ge(tmp_path / "t.ge5", stack(2))
    path = tmp_path / "t.ge5"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ImageReadError, match=r"1 whole frame \+ 67 bytes .*70 bytes\): the last frame is partial; a truncated"):
        io.read_frames(path, n_pixels_y=7, n_pixels_z=5)


def test_zero_frames_after_skip(tmp_path):
    io.write_ge(tmp_path / "t.ge2", stack(2))
    with pytest.raises(ImageReadError, match="no frames left after SkipFrame 2"):
        io.read_frames(tmp_path / "t.ge2", n_pixels_y=7, n_pixels_z=5, skip_frame=2)


def test_dark_skip_frame_hint(tmp_path):
    io.write_ge(tmp_path / "d.ge2", stack(3))
    io.write_ge(tmp_path / "dark.ge2", stack(1))
    with pytest.raises(ImageReadError, match="SkipFrame applies to the dark too"):
        io.load_image(tmp_path / "d.ge2", dark_path=tmp_path / "dark.ge2", n_pixels_y=7, n_pixels_z=5,
                      skip_frame=1)
    loaded = io.load_image(tmp_path / "d.ge2", dark_path=tmp_path / "dark.ge2", n_pixels_y=7,
                           n_pixels_z=5, skip_frame=1, dark_skip_frame=0)
    assert loaded.n_frames == 2 and loaded.n_dark_frames == 1


def test_unknown_data_type(tmp_path):
    io.write_raw(tmp_path / "x.raw", stack(1), 1)
    with pytest.raises(ImageReadError, match="unknown DataType 11"):
        io.read_frames(tmp_path / "x.raw", data_type=11, n_pixels_y=7, n_pixels_z=5)
    with pytest.raises(ImageReadError, match="DataType 8 is not a binary pixel type"):
        io.read_frames(tmp_path / "x.raw", data_type=8, n_pixels_y=7, n_pixels_z=5)


def test_hdf5_errors(tmp_path):
    path = tmp_path / "x.h5"
    with h5py.File(path, "w") as handle:
        handle["exchange/data"] = np.array([[b"a", b"b"], [b"c", b"d"]])
        handle["detector/frames"] = np.zeros((2, 80, 90), dtype=np.uint16)
        handle["detector/flat"] = np.zeros((80, 90), dtype=np.float32)
    with pytest.raises(ImageReadError, match="'exchange/data' has non-numeric dtype"):
        io.read_frames(path)
    with pytest.raises(ImageReadError, match=r"'detector/dark' not found.*detector/frames \(2, 80, 90\)"):
        io.read_frames(path, data_loc="detector/dark")
    path2 = tmp_path / "y.h5"
    with h5py.File(path2, "w") as handle:
        handle["detector/frames"] = np.zeros((2, 80, 90), dtype=np.uint16)
        handle["detector/flat"] = np.zeros((80, 90), dtype=np.float32)
    with pytest.raises(ImageReadError, match="several image-like datasets.*give it with -dataLoc"):
        io.read_frames(path2)
    (tmp_path / "bad.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(ImageReadError, match="bad.h5: not a readable HDF5 file"):
        io.read_frames(tmp_path / "bad.h5")


def test_nan_only_frame(tmp_path):
    frames = np.ones((2, 3, 3), dtype=np.float32)
    frames[0] = np.nan
    io.write_tiff(tmp_path / "n.tif", frames)
    with pytest.raises(ImageReadError, match="frame 0 is entirely NaN"):
        io.load_image(tmp_path / "n.tif")
    assert io.load_image(tmp_path / "n.tif", skip_frame=1).image.tolist() == [[1.0] * 3] * 3


def test_corrupt_tiff(tmp_path):
    io.write_tiff(tmp_path / "c.tif", stack(1, 64, 64)[0])
    data = (tmp_path / "c.tif").read_bytes()
    (tmp_path / "c.tif").write_bytes(data[:100])
    with pytest.raises(ImageReadError, match="c.tif: corrupt or truncated TIFF"):
        io.read_frames(tmp_path / "c.tif")


def test_tiff_size_mismatch_with_given_pixels(tmp_path):
    io.write_tiff(tmp_path / "a.tif", stack(1)[0])
    with pytest.raises(ImageReadError, match=r"image is 7 x 5 .*NrPixelsY=5, NrPixelsZ=7"):
        io.read_frames(tmp_path / "a.tif", n_pixels_y=5, n_pixels_z=7)


def test_unreadable_zip(tmp_path):
    (tmp_path / "z.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ImageReadError, match="z.zip: not a zip archive"):
        io.read_frames(tmp_path / "z.zip")
    io.write_midas_zip(tmp_path / "ok.zip", stack())
    with pytest.raises(ImageReadError, match=r"no array 'exchange/nothing'.*exchange/data"):
        io.read_frames(tmp_path / "ok.zip", data_loc="exchange/nothing")


def test_corrupt_zarr_chunk(tmp_path):
    io.write_midas_zip(tmp_path / "ok.zip", stack(), mask=np.eye(5, 7))
    assert int(io.read_frames(tmp_path / "ok.zip", data_loc="exchange/mask").sum()) == 5
    with zipfile.ZipFile(tmp_path / "ok.zip") as source, zipfile.ZipFile(tmp_path / "bad.zip", "w") as out:
        for name in source.namelist():
            out.writestr(name, b"\x02\x01garbage" if name == "exchange/data/1.0.0" else source.read(name))
    with pytest.raises(ImageReadError, match="bad.zip: cannot read 'exchange/data'.*blosc"):
        io.read_frames(tmp_path / "bad.zip")


def test_dark_shape_mismatch(tmp_path):
    io.write_tiff(tmp_path / "d.tif", stack(1)[0])
    io.write_tiff(tmp_path / "dark.tif", stack(1, 7, 5)[0])
    with pytest.raises(ImageReadError, match=r"dark.tif: dark frame shape \(7, 5\) differs .*\(5, 7\)"):
        io.load_image(tmp_path / "d.tif", dark_path=tmp_path / "dark.tif")


def test_load_image_bad_im_trans_opt_and_all_masked(tmp_path):
    io.write_tiff(tmp_path / "d.tif", np.full((3, 3), -1, dtype=np.int32))
    with pytest.raises(ImTransOptError, match="invalid ImTransOpt value 4"):
        io.load_image(tmp_path / "d.tif", im_trans_opt=[1, 4])
    with pytest.raises(CalibrationError, match="all 9 pixels are masked"):
        io.load_image(tmp_path / "d.tif", gap_intensity=-1)


def test_mask_file_shape_mismatch_via_load_image(tmp_path):
    io.write_tiff(tmp_path / "d.tif", stack(1)[0])
    io.write_tiff(tmp_path / "m.tif", np.zeros((7, 5), dtype=np.uint8))
    with pytest.raises(ImageReadError, match=r"m.tif: mask shape \(7, 5\).*\(5, 7\)"):
        io.load_image(tmp_path / "d.tif", mask_file=tmp_path / "m.tif")


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(ValueError, match="parameter 'SpaceGroup'"):
        io.write_midas_zip(tmp_path / "p.zip", stack(), parameters={"SpaceGroup": "Fm-3m"})
    assert list(tmp_path.iterdir()) == []
