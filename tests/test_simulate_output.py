"""The output folder: every format readable by our reader and by the usual tools; params and truth files."""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest
import tifffile

from midas_ref.detector import Geometry, PanelLayout, PanelShift
from midas_ref.io import load_image, read_frames
from midas_ref.panels import Panels, read_panel_shifts
from midas_ref.params import geometry_from_params, read_parameter_file
from simulate import (DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig, SimulationError,
                      config_from_params, simulate, write_simulation)
from simulate.config import CEO2
from simulate.output import PERTURB_BC_PX, PERTURB_LSD_REL

SEED = 40_213
GEOM = Geometry(lsd_um=150_000.0, bc_y_px=96.3, bc_z_px=88.8, px_um=200.0, n_pixels_y=190, n_pixels_z=176,
                ty_deg=0.4, tz_deg=-0.3, p0=1e-4, p2=2e-4, p3_deg=12.0)
LAYOUT = PanelLayout(2, 2, 92, 85, (6,), (6,))
PANELS = Panels(LAYOUT, (PanelShift(0), PanelShift(1, 0.3, -0.2, 0.05), PanelShift(2, -0.4, 0.1),
                         PanelShift(3, 0.1, 0.5, -0.03, 12.0, 1e-5)))
#: The keys issue #4 requires in truth.json.
TRUTH_KEYS = ("Lsd", "BC", "tx", "ty", "tz", "p0", "p1", "p2", "p3", "p4", "px", "Wavelength", "RhoD",
              "NrPixelsY", "NrPixelsZ", "SpaceGroup", "LatticeConstant", "panels")
GEOMETRY_KEYS = ("Lsd", "BC", "tx", "ty", "tz", "p0", "p1", "p2", "p3", "p4", "p5")


def config(panels=PANELS, dtype="int32", **response):
    return SimulationConfig(GEOM, Material(wavelength_angstrom=0.172979, **CEO2), panels=panels,
                            peak=PeakShape(fwhm_px=2.5), intensity=RingIntensity(peak_counts=5000.0),
                            response=DetectorResponse(background_counts=100.0, dtype=dtype, n_frames=2,
                                                      read_noise_counts=2.0, dark_counts=30.0, **response),
                            seed=SEED, name="small")


def read_with_params(path: Path, params: Path):
    pf = read_parameter_file(params)
    return read_frames(path, n_pixels_y=pf.get("NrPixelsY"), n_pixels_z=pf.get("NrPixelsZ"),
                       data_type=pf.get("DataType", None), head_size=pf.get("HeadSize", None),
                       data_loc=pf.get("dataLoc", None))


CASES = [(fmt, dtype) for fmt in ("tif", "ge", "h5", "zarr") for dtype in ("uint16", "int32")]


@pytest.mark.parametrize("fmt,dtype", CASES, ids=[f"{f}-{d}" for f, d in CASES])
def test_every_format_round_trips(tmp_path, fmt, dtype):
    cfg = config(panels=None if dtype == "uint16" else PANELS, dtype=dtype,
                 bad_pixel_fraction=0.0 if dtype == "uint16" else 0.002)
    result = simulate(cfg)
    files = write_simulation(result, tmp_path, fmt)
    # our reader, told only what params.txt says
    np.testing.assert_array_equal(read_with_params(files.image, files.params), result.frames)
    # the usual tools
    if fmt == "tif":
        np.testing.assert_array_equal(tifffile.imread(files.image), result.frames)
        np.testing.assert_array_equal(tifffile.imread(files.dark), result.dark[0])
    elif fmt == "ge":
        raw = np.fromfile(files.image, dtype=result.frames.dtype, offset=8192)
        np.testing.assert_array_equal(raw.reshape(result.frames.shape), result.frames)
    elif fmt == "h5":
        with h5py.File(files.image, "r") as handle:
            np.testing.assert_array_equal(handle["exchange/data"][...], result.frames)
            np.testing.assert_array_equal(handle["exchange/dark"][...], result.dark)
    else:
        import zarr
        from zarr.storage import ZipStore

        store = ZipStore(files.image, mode="r")
        try:
            root = zarr.open_group(store=store, mode="r", zarr_format=2)
            np.testing.assert_array_equal(root["exchange/data"][...], result.frames)
            np.testing.assert_array_equal(root["exchange/dark"][...], result.dark)
        finally:
            store.close()
    # dark subtraction through the calibrator's loader: the mean frame minus the dark
    pf = read_parameter_file(files.params)
    loaded = load_image(files.image, dark_path=pf.get("Dark", None), n_pixels_y=GEOM.n_pixels_y,
                        n_pixels_z=GEOM.n_pixels_z, data_type=pf.get("DataType", None),
                        head_size=pf.get("HeadSize", None), gap_intensity=pf.get("GapIntensity", None),
                        bad_px_intensity=pf.get("BadPxIntensity", None))
    expected = result.frames.astype(np.float64).mean(axis=0) - result.dark[0]
    valid = ~loaded.mask
    np.testing.assert_allclose(loaded.image[valid], expected[valid])
    if result.gap_mask is not None:
        assert np.all(loaded.mask[result.gap_mask])


def _digest(path: Path) -> str:
    if path.suffix == ".zip":  # zip members carry write times; compare the members' contents
        with zipfile.ZipFile(path) as archive:
            return hashlib.sha256(b"".join(archive.read(name) for name in sorted(archive.namelist()))).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("fmt", ["tif", "ge", "h5", "zarr"])
def test_same_seed_writes_identical_bytes(tmp_path, fmt):
    cfg = config(bad_pixel_fraction=0.002)
    first = write_simulation(simulate(cfg), tmp_path / "a", fmt)
    second = write_simulation(simulate(cfg), tmp_path / "b", fmt)
    assert _digest(first.image) == _digest(second.image)
    other = write_simulation(simulate(replace(cfg, seed=SEED + 1)), tmp_path / "c", fmt)
    assert _digest(first.image) != _digest(other.image)


def test_params_file_without_perturb_has_no_geometry(tmp_path):
    result = simulate(config(bad_pixel_fraction=0.002))
    files = write_simulation(result, tmp_path, "tif")
    pf = read_parameter_file(files.params)
    assert not any(pf.has(k) for k in GEOMETRY_KEYS)
    assert pf.get("NrPixelsY") == 190 and pf.get("NrPixelsZ") == 176 and pf.get("px") == 200.0
    assert pf.get("Wavelength") == 0.172979 and pf.get("SpaceGroup") == 225
    assert pf.get("LatticeConstant") == CEO2["lattice"]
    assert pf.get("RhoD") == GEOM.rho_d_um  # the distortion normalisation of the truth
    assert (pf.get("NPanelsY"), pf.get("NPanelsZ"), pf.get("PanelSizeY"), pf.get("PanelSizeZ")) == (2, 2, 92, 85)
    assert pf.get("PanelGapsY") == (6,) and pf.get("PanelGapsZ") == (6,) and pf.get("FixPanelID") == 0
    assert pf.get("GapIntensity") == -1.0 and pf.get("BadPxIntensity") == -2.0
    # the calibrator's start for panel shifts must not be the truth
    assert Path(pf.get("PanelShiftsFile")).name == "panelshifts.txt"
    assert not (tmp_path / "panelshifts.txt").exists()
    image = Path(pf.get("Folder")) / f"{pf.get('FileStem')}_{1:0{pf.get('Padding')}d}{pf.get('Ext')}"
    assert image == files.image and Path(pf.get("Dark")) == files.dark
    # nothing else in the folder (atomic writes leave no temporary files)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["CeO2_000001.tif", "dark_000001.tif", "params.txt", "truth.json", "truth_params.txt",
         "panelshifts_truth.txt"])


def test_perturbed_start_geometry(tmp_path):
    cfg = config()
    for seed in range(5):
        files = write_simulation(simulate(replace(cfg, seed=seed)), tmp_path / str(seed), "tif", perturb=True)
        start = geometry_from_params(read_parameter_file(files.params))
        rel = abs(start.lsd_um / GEOM.lsd_um - 1)
        assert PERTURB_LSD_REL[0] <= rel <= PERTURB_LSD_REL[1]
        for got, true in ((start.bc_y_px, GEOM.bc_y_px), (start.bc_z_px, GEOM.bc_z_px)):
            assert PERTURB_BC_PX[0] <= abs(got - true) <= PERTURB_BC_PX[1]
        assert (start.ty_deg, start.tz_deg, start.p0, start.p1, start.p2, start.p3_deg) == (0,) * 6
        assert start.rho_d_um == GEOM.rho_d_um and start.tx_deg == GEOM.tx_deg
        truth = json.loads(files.truth.read_text())
        assert truth["start"]["Lsd"] == start.lsd_um and truth["Lsd"] == GEOM.lsd_um


def test_truth_json(tmp_path):
    cfg = config(bad_pixel_fraction=0.002)
    result = simulate(cfg)
    files = write_simulation(result, tmp_path, "h5")
    truth = json.loads(files.truth.read_text())
    assert all(key in truth for key in TRUTH_KEYS)
    assert truth["Lsd"] == GEOM.lsd_um and truth["BC"] == [GEOM.bc_y_px, GEOM.bc_z_px]
    assert (truth["ty"], truth["tz"], truth["p0"], truth["p2"], truth["p3"]) == (0.4, -0.3, 1e-4, 2e-4, 12.0)
    assert truth["NrPixelsY"] == 190 and truth["NrPixelsZ"] == 176 and truth["RhoD"] == GEOM.rho_d_um
    assert truth["LatticeConstant"] == list(CEO2["lattice"]) and truth["SpaceGroup"] == 225
    assert [p["id"] for p in truth["panels"]] == [0, 1, 2, 3]
    p3 = truth["panels"][3]
    assert (p3["dY"], p3["dZ"], p3["dTheta"], p3["dLsd"], p3["dP2"]) == (0.1, 0.5, -0.03, 12.0, 1e-5)
    assert truth["n_bad_pixels"] == int(result.bad_mask.sum()) and truth["n_gap_pixels"] == int(result.gap_mask.sum())
    on = [ring for ring in truth["rings"] if ring["on_detector"]]
    assert on and all(abs(r["radius_um"] - GEOM.px_um * r["radius_px"]) < 1e-6 for r in on)
    assert truth["files"]["image"] == "CeO2_000001.h5" and truth["files"]["dark"] is None
    assert truth["format_version"] == 1 and "axes" in truth


def test_truth_files_rebuild_the_same_simulation(tmp_path):
    """truth_params.txt + panelshifts_truth.txt → config_from_params → the same frames."""
    cfg = config(bad_pixel_fraction=0.002)
    result = simulate(cfg)
    files = write_simulation(result, tmp_path, "tif")
    assert read_panel_shifts(files.panel_shifts, LAYOUT) == PANELS
    rebuilt = config_from_params(read_parameter_file(files.truth_params), cfg)
    assert rebuilt.geometry == GEOM and rebuilt.panels == PANELS and rebuilt.fix_panel_id == 0
    assert np.array_equal(simulate(rebuilt).frames, result.frames)


def test_config_from_params_alone(tmp_path):
    text = ("NrPixelsY 120\nNrPixelsZ 100\npx 200\nLsd 150000\nBC 60.5 50.2\nty 0.2\np2 1e-4\n"
            "Wavelength 0.172979\nSpaceGroup 225\nLatticeConstant 5.411651 5.411651 5.411651 90 90 90\n"
            "NPanelsY 2\nNPanelsZ 1\nPanelSizeY 57\nPanelSizeZ 100\nPanelGapsY 6\nPanelShiftsFile shifts.txt\n"
            "GapIntensity -5\n")
    (tmp_path / "p.txt").write_text(text)
    (tmp_path / "shifts.txt").write_text("# ID dY dZ\n1 0.25 -0.5\n")
    cfg = config_from_params(read_parameter_file(tmp_path / "p.txt"),
                             response_changes={"dtype": "int32"})
    assert cfg.geometry.n_pixels_y == 120 and cfg.geometry.ty_deg == 0.2 and cfg.material.name == "CeO2"
    assert cfg.panels.shifts[1] == PanelShift(1, 0.25, -0.5) and cfg.response.gap_value == -5.0
    assert np.all(simulate(cfg).image[:, 57:63] == -5)


def test_unwritable_output_is_an_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = simulate(config(panels=None, dtype="uint16"))
    with pytest.raises(SimulationError, match="not a folder"):
        write_simulation(result, blocker, "tif")
    with pytest.raises(SimulationError, match="cannot create output folder"):
        write_simulation(result, blocker / "sub", "tif")
    with pytest.raises(SimulationError, match="unknown format"):
        write_simulation(result, tmp_path / "x", "png")
