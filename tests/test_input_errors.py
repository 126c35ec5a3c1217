"""Bad input gives one clear line: the file, key or flag, what is wrong and the likely fix; exit code 2.

Items of the reliability issue: a MIDAS zip with a missing chunk (6), panel-shift ids outside the layout
or repeated (7), ``rings`` on the params.txt that ``simulate`` writes (8), a UTF-16 parameter file, a
directory as the image and an HDF5 group as ``-dataLoc`` (12), a detector too large for the memory (14),
a GE file with a partial frame and a folder as the results database (16).
"""

from __future__ import annotations

import zipfile

import h5py
import numpy as np
import pytest

from midas_ref import io
from midas_ref.cli import main
from midas_ref.errors import ImageReadError, ParameterFileError
from midas_ref.panels import PanelLayout, read_panel_shifts

#: Calibrant keys of the params.txt that ``midas-ref simulate`` writes: no geometry (RhoD but no Lsd).
SIMULATE_PARAMS = """\
NrPixelsY 64
NrPixelsZ 64
px 200.0
Wavelength 0.172979
SpaceGroup 225
LatticeConstant 5.411651 5.411651 5.411651 90.0 90.0 90.0
RhoD 290338.13252826437
"""

LAYOUT16 = PanelLayout(4, 4, 256, 256, (0, 0, 0), (0, 0, 0))


def error_line(argv, capsys, command=None):
    """Run the CLI; check exit code 2 and exactly one ``midas-ref <command>: error:`` line; return it."""
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    command = command or argv[0]
    assert code == 2, captured.err
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"midas-ref {command}: error: ")
    assert "Traceback" not in captured.err
    return lines[0]


def stack(n_frames=3, n_rows=5, n_cols=7, seed=48213):
    rng = np.random.default_rng(seed)
    return rng.integers(1, 60000, size=(n_frames, n_rows, n_cols)).astype(np.uint16)


def copy_zip_without(source, target, member):
    with zipfile.ZipFile(source) as old, zipfile.ZipFile(target, "w") as new:
        assert member in old.namelist()
        for info in old.infolist():
            if info.filename != member:
                new.writestr(info, old.read(info))


@pytest.fixture
def simulate_params(tmp_path):
    path = tmp_path / "params.txt"
    path.write_text(SIMULATE_PARAMS)
    return path


# ------------------------------------------------------------------ 6: MIDAS zip with a missing chunk

def test_zip_missing_data_chunk_is_incomplete(tmp_path, simulate_params, capsys):
    io.write_midas_zip(tmp_path / "ok.MIDAS.zip", stack())
    bad = tmp_path / "bad.MIDAS.zip"
    copy_zip_without(tmp_path / "ok.MIDAS.zip", bad, "exchange/data/1.0.0")
    with pytest.raises(ImageReadError, match=r"bad.MIDAS.zip: the file is incomplete: 1 of 3 chunks of array "
                                             r"'exchange/data' \(frame 1\) is missing"):
        io.read_frames(bad)
    line = error_line(["calibrate", "-dataFN", bad, "-paramFN", simulate_params, "--out-dir", tmp_path / "cal"],
                      capsys)
    assert "bad.MIDAS.zip: the file is incomplete" in line and "truncated or damaged" in line
    assert not (tmp_path / "cal").exists()


def test_zip_all_zero_frames_are_stored_and_an_unwritten_dark_is_zero(tmp_path):
    frames = stack()
    frames[1] = 0  # zarr-python 3 would skip this chunk unless told to write empty chunks
    io.write_midas_zip(tmp_path / "z.zip", frames)
    with zipfile.ZipFile(tmp_path / "z.zip") as archive:
        assert {"exchange/data/1.0.0", "exchange/dark/0.0.0"} <= set(archive.namelist())
    assert np.array_equal(io.read_frames(tmp_path / "z.zip"), frames)
    # an older zip whose all-zero dark was never written (no chunk at all) still reads as zeros
    copy_zip_without(tmp_path / "z.zip", tmp_path / "old.zip", "exchange/dark/0.0.0")
    loaded = io.load_image(tmp_path / "old.zip")
    assert loaded.dark_dataset == "exchange/dark" and np.array_equal(loaded.image, frames.mean(axis=0))


# ------------------------------------------------------------------- 7: panel shifts of unknown panels

def test_panel_shift_id_outside_layout(tmp_path, capsys):
    path = tmp_path / "shifts.txt"
    path.write_text("# ID dY dZ\n3 0.5 -0.25\n16 1 1\n")
    with pytest.raises(ParameterFileError, match=r"shifts.txt, line 3: panel id 16 does not exist: the layout "
                                                 r"\(NPanelsY 4 x NPanelsZ 4\) has ids 0..15"):
        read_panel_shifts(path, LAYOUT16)
    # through the CLI: a scenario with a 2 x 2 panel grid (ids 0..3)
    path.write_text("0 0 0\n7 0.1 0.1\n")
    line = error_line(["simulate", "--scenario", "dexela4", "--panel-shifts", path, "--out", tmp_path / "o"],
                      capsys)
    assert "shifts.txt, line 2: panel id 7 does not exist" in line and "ids 0..3" in line
    assert not (tmp_path / "o").exists()


def test_panel_shift_id_repeated(tmp_path):
    path = tmp_path / "shifts.txt"
    path.write_text("# ID dY dZ\n3 0.5 -0.25\n4 0 0\n3 0.7 0.1\n")
    with pytest.raises(ParameterFileError, match=r"shifts.txt, line 4: panel id 3 is listed twice \(first on "
                                                 r"line 2\)"):
        read_panel_shifts(path, LAYOUT16)


# ------------------------------------------------------------- 8: rings on simulate's params.txt (no Lsd)

def test_rings_without_lsd_prints_d_and_two_theta(simulate_params, capsys):
    assert main(["rings", "-paramFN", str(simulate_params)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "no radius cut" in out[1] and "RhoD = 290338.13 µm is given but no Lsd" in out[1]
    first = out[3].split()
    assert first[:5] == ["1", "1", "1", "1", "8"]  # CeO2 (111)
    assert abs(float(first[5]) - 5.411651 / 3 ** 0.5) < 1e-6  # d = a/√3, Å (6 decimals printed)
    assert first[7:9] == ["-", "-"]  # R [µm], R [px]


def test_rings_accepts_the_params_txt_simulate_writes(tmp_path, capsys):
    geometry = tmp_path / "small.txt"
    geometry.write_text("NrPixels 96\npx 200\nLsd 200000\nBC 45.2 50.7\nWavelength 0.172979\nSpaceGroup 225\n"
                        "LatticeConstant 5.411651 5.411651 5.411651 90 90 90\n")
    assert main(["simulate", "-paramFN", str(geometry), "--out", str(tmp_path / "sim")]) == 0
    written = (tmp_path / "sim" / "params.txt").read_text()
    assert "\nRhoD " in written and "\nLsd " not in written  # the case of the issue
    capsys.readouterr()
    assert main(["rings", "-paramFN", str(tmp_path / "sim" / "params.txt"), "--format", "csv"]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0].endswith("radius_um,radius_px,excluded") and rows[1].endswith(",,,no")


# ------------------------------------------------- 12: UTF-16 parameter file, directory, HDF5 group

@pytest.mark.parametrize("encoding, name", [
    ("utf-16", "UTF-16 text (little-endian, with a byte-order mark)"),
    ("utf-16-le", "UTF-16 text (little-endian, without a byte-order mark)"),
    ("utf-16-be", "UTF-16 text (big-endian, without a byte-order mark)"),
    ("utf-32", "UTF-32 text (little-endian, with a byte-order mark)"),
])
def test_utf16_parameter_file(tmp_path, capsys, encoding, name):
    path = tmp_path / "params.txt"
    path.write_bytes(SIMULATE_PARAMS.encode(encoding))
    line = error_line(["rings", "-paramFN", path], capsys)
    assert line.endswith(f"params.txt: file is {name}, not UTF-8; save it as UTF-8 (or ASCII)")


def test_binary_parameter_file_is_still_binary(tmp_path, capsys):
    path = tmp_path / "params.txt"
    path.write_bytes(bytes(range(256)) * 4)
    assert error_line(["rings", "-paramFN", path], capsys).endswith("binary file, not a text parameter file")


def test_directory_as_image(tmp_path, simulate_params, capsys):
    folder = tmp_path / "images"
    folder.mkdir()
    line = error_line(["calibrate", "-dataFN", folder, "-paramFN", simulate_params], capsys)
    assert line.endswith("images: is a directory, not an image file; give the image file itself (the directory "
                         "holds no image files)")
    io.write_tiff(folder / "CeO2_000001.tif", stack(1))
    line = error_line(["calibrate", "-dataFN", folder, "-paramFN", simulate_params], capsys)
    assert f"give the image file itself, e.g. {folder / 'CeO2_000001.tif'} (1 image file" in line


def test_hdf5_group_as_data_loc(tmp_path, simulate_params, capsys):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as handle:
        handle["entry/data/data"] = np.ones((2, 64, 64), np.uint16)
        handle["entry/data/dark"] = np.zeros((1, 64, 64), np.uint16)
        handle["entry/data/energy"] = np.array([80.0])
    # --quiet: without it calibrate's progress line "reading scan.h5 (hdf5)" comes first on stderr
    line = error_line(["calibrate", "-dataFN", path, "-dataLoc", "entry/data", "-paramFN", simulate_params,
                       "--quiet"], capsys)
    assert line.endswith("scan.h5: 'entry/data' (-dataLoc) is an HDF5 group, not a dataset; datasets inside it: "
                         "entry/data/data (2, 64, 64), entry/data/dark (1, 64, 64), entry/data/energy (1,); "
                         "give one of them, e.g. -dataLoc entry/data/data")


# --------------------------------------------------------------------- 14: detector too large for memory

def test_simulate_refuses_a_detector_larger_than_memory(tmp_path, capsys, monkeypatch):
    from simulate import simulation

    monkeypatch.setattr(simulation, "available_memory_bytes", lambda: 16 * 1024 ** 3)
    path = tmp_path / "huge.txt"
    path.write_text("NrPixels 100000\npx 200\nLsd 1000000\nBC 50000 50000\nWavelength 0.172979\n"
                    "SpaceGroup 225\nLatticeConstant 5.411651 5.411651 5.411651 90 90 90\n")
    line = error_line(["simulate", "-paramFN", path, "--out", tmp_path / "o"], capsys)
    # 1e10 px × (8 bytes float64 expected + 2 bytes uint16 frame) = 93.1 GiB, + one noise block
    assert line.endswith("a 100000 × 100000 detector (NrPixelsY × NrPixelsZ, 1 uint16 frame) needs about 93.4 GiB "
                         "to simulate; this machine has 16.0 GiB available; simulate a smaller detector or "
                         "fewer frames")
    assert not (tmp_path / "o").exists()


def test_peak_memory_estimate_matches_the_documented_peak():
    from simulate import scenario
    from simulate.simulation import available_memory_bytes, peak_memory_bytes

    image_bytes = 2048 * 2048 * 2
    # docs/simulate.md: measured peak 43 MiB = 5.4× the uint16 image; the estimate may be a little above
    assert 5.2 <= peak_memory_bytes(scenario("ge2048")) / image_bytes <= 5.8
    assert available_memory_bytes() is None or available_memory_bytes() > 0


# ------------------------------------------------------------ 16: partial GE frame, folder as database

def test_ge_partial_last_frame(tmp_path, simulate_params, capsys):
    path = tmp_path / "CeO2_000001.ge3"
    io.write_ge(path, stack(2, 64, 64))
    path.write_bytes(path.read_bytes()[:-100])
    line = error_line(["calibrate", "-dataFN", path, "-paramFN", simulate_params, "--quiet"], capsys)
    # 8192 header + 2 frames of 64 × 64 × 2 bytes − 100 = 8192 + 8192 + 8092
    assert line.endswith("CeO2_000001.ge3: the file has 24476 bytes = HeadSize 8192 header + 1 whole frame + "
                         "8092 bytes (a 64 x 64 (NrPixelsY x NrPixelsZ) uint16 frame is 8192 bytes): the last "
                         "frame is partial; a truncated file, or wrong NrPixelsY/Z, HeadSize or DataType")


def test_results_database_given_as_folder(tmp_path):
    from validation.store import StoreError, connect, write_run  # noqa: F401  (write_run: the usual writer)

    folder = tmp_path / "validation-out"
    folder.mkdir()
    with pytest.raises(StoreError, match=r"validation-out: is a folder, not a results database \(and there is no "
                                         r"results.sqlite in it\)"):
        connect(folder, create=False)
    connect(folder / "results.sqlite").close()  # an (empty) database of a run
    with pytest.raises(StoreError, match=r"validation-out: is a folder, not a results database; did you mean "
                                         r".*validation-out/results.sqlite \(the results database in it\)\?"):
        connect(folder, create=False)
