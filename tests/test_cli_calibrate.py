"""``midas-ref calibrate`` end to end: outputs and their legacy formats, and every kind of bad input.

Bad input must give exit code 2, exactly one line on stderr, no traceback and no output file.
"""

from __future__ import annotations

import math

import h5py
import numpy as np
import pytest
import tifffile
from conftest import shared_file

from midas_ref import Geometry
from midas_ref.cli import main
from midas_ref.params import read_parameter_file
from simulate import simulate, write_simulation
from simulate.config import CEO2, DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig

TRUTH = Geometry(lsd_um=300_000.0, bc_y_px=251.7, bc_z_px=262.4, px_um=200.0, n_pixels_y=512, n_pixels_z=512,
                 ty_deg=0.6, tz_deg=-0.4, p0=3e-4, p1=-2e-4, p2=2e-4, p3_deg=20.0)


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    cfg = SimulationConfig(TRUTH, Material(wavelength_angstrom=0.172979, **CEO2),
                           peak=PeakShape(fwhm_px=2.5, lorentz_fraction=0.4),
                           intensity=RingIntensity(peak_counts=20000.0),
                           response=DetectorResponse(background_counts=200.0, dtype="uint16"), seed=3)
    out = tmp_path_factory.mktemp("sim")
    write_simulation(simulate(cfg), out, "tif")
    return out


def run(args, capsys):
    code = main(["calibrate", *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_outputs_and_their_formats(sim_dir, tmp_path, capsys):
    out = tmp_path / "cal"
    code, stdout, stderr = run(["-dataFN", sim_dir / "CeO2_000001.tif", "-paramFN", sim_dir / "params.txt",
                                "--out-dir", out, "-SavePlotsHDF", "dump.h5", "-MakePlots", "1",
                                "-EtaBinSize", "6"], capsys)
    assert code == 0, stderr
    assert "Calibration CONVERGED" in stdout
    refined = read_parameter_file(out / "refined_MIDAS_params.txt")
    assert abs(refined.get("Lsd") - TRUTH.lsd_um) < 2.0  # Poisson noise at 300 mm: µm level
    y, z = refined.get("BC")
    assert math.hypot(y - TRUTH.bc_y_px, z - TRUTH.bc_z_px) < 0.01
    assert refined.get("EtaBinSize") == 6.0  # the value used, not the legacy constant 5
    keys = [line.split()[0] for line in (out / "refined_MIDAS_params.txt").read_text().splitlines()
            if line and not line.startswith("#")]
    assert keys[:12] == ["Lsd", "BC", "tx", "ty", "tz", "p0", "p1", "p2", "p3", "RhoD", "Wavelength", "px"]
    # the legacy orchestrator's parser: everything after "Mean Values", keys by substring, token 1
    text = (out / "calibrant_screen_out.csv").read_text().splitlines()
    block = text[next(i for i, line in enumerate(text) if "Mean Values" in line):]
    values = {}
    for line in block:
        for key in ("Lsd ", "BC ", "ty ", "tz ", "p0 ", "p1 ", "p2 ", "p3 ", "MeanStrain ", "StdStrain "):
            if line.startswith(key):
                values[key.strip()] = line.split()[1]
    assert float(values["Lsd"]) == pytest.approx(refined.get("Lsd"), abs=1e-6)
    assert float(values["MeanStrain"]) < 4e-5
    assert "StdStrain  " in "\n".join(block)  # two spaces, as CalibrantOMP prints it
    corr = np.loadtxt(out / "CeO2_000001.tif.corr.csv", skiprows=1)
    assert corr.shape[1] == 7 and corr.shape[0] > 300
    assert (out / "CeO2_000001.tif.corr.csv").read_text().startswith("%Eta Strain RadFit EtaCalc DiffCalc")
    with h5py.File(out / "dump.h5") as h5:
        for group in ("metadata", "raw_image_data", "background_data", "threshold_data", "ring_overlay_data",
                      "final_strain_data", "results_data", "parameters", "strain_tth_data_iter1"):
            assert group in h5, group
        assert h5["raw_image_data/raw_image"].shape == (512, 512)
    for name in ("rings", "strain", "residuals"):
        assert (out / f"CeO2_000001.tif_{name}.png").stat().st_size > 10_000
    log = (out / "autocal.log").read_text()
    assert "iteration 1" in log and "status CONVERGED" in log
    # the distortion choice (no tolP key in the simulator's file): verdict, test statistics and thresholds
    assert log.count("distortion terms selected from the data: kept p0, p1, p2, dropped none") == 3  # 2 checks + summary
    assert "model p0+p1+p2 without p2: F = " in log and "vs α = 0.001" in log and "vs ≥ 1 → p2 " in log
    assert "lower bound (used)" in log
    assert "  distortion terms selected from the data: kept p0, p1, p2, dropped none" in stdout


@pytest.mark.parametrize("extra, selected", [("", True), ("tolP 0.002\n", False), ("tolP2 1e-4\n", False),
                                             ("tolP3 10\n", False), ("DistortionOrder 4\n", False),
                                             ("tolLsd 5000\n", True)])
def test_explicit_distortion_keys_switch_the_selection_off(sim_dir, tmp_path, extra, selected):
    """Any of tolP, tolP0–tolP4, DistortionOrder in the parameter file: the distortion is fitted as given."""
    from midas_ref.inputs import calibration_inputs

    params = tmp_path / "params.txt"
    params.write_text((sim_dir / "params.txt").read_text() + "\n" + extra)
    inputs = calibration_inputs(sim_dir / "CeO2_000001.tif", params)
    assert inputs.settings.select_distortion is selected


def test_failed_run_writes_no_refined_parameters(sim_dir, tmp_path, capsys):
    out = tmp_path / "cal"
    code, stdout, stderr = run(["-dataFN", sim_dir / "CeO2_000001.tif", "-paramFN", sim_dir / "params.txt",
                                "--out-dir", out, "--max-iterations", "2"], capsys)
    assert code == 1
    assert "FAILED" in stderr and "no convergence within 2 iterations" in stderr
    assert not (out / "refined_MIDAS_params.txt").exists()
    assert "status FAILED" in (out / "autocal.log").read_text()


def bad_input_cases(sim_dir, tmp_path):
    params = (sim_dir / "params.txt").read_text()
    image = sim_dir / "CeO2_000001.tif"
    cases = {}

    no_sg = tmp_path / "no_sg.txt"
    no_sg.write_text("\n".join(line for line in params.splitlines() if not line.startswith("SpaceGroup")))
    cases["missing key"] = (["-dataFN", image, "-paramFN", no_sg], "SpaceGroup")

    garbled = tmp_path / "garbled.txt"
    garbled.write_text(params + "\npx twohundred\n")
    cases["garbled value"] = (["-dataFN", image, "-paramFN", garbled], "px")

    cases["missing image"] = (["-dataFN", tmp_path / "nope.tif", "-paramFN", sim_dir / "params.txt"], "nope.tif")

    corrupt = tmp_path / "corrupt.tif"
    corrupt.write_bytes(b"II*\x00garbage" * 10)
    cases["corrupt tiff"] = (["-dataFN", corrupt, "-paramFN", sim_dir / "params.txt"], "corrupt.tif")

    blank = tmp_path / "blank.tif"
    tifffile.imwrite(blank, np.random.default_rng(0).poisson(100, (512, 512)).astype(np.uint16))
    cases["no rings"] = (["-dataFN", blank, "-paramFN", sim_dir / "params.txt"], "no rings found")

    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((512, 512), np.nan, np.float32))
    cases["NaN frame"] = (["-dataFN", nan, "-paramFN", sim_dir / "params.txt"], "NaN")

    masked = tmp_path / "masked.tif"
    tifffile.imwrite(masked, np.full((512, 512), -2, np.int32))
    cases["all masked"] = (["-dataFN", masked, "-paramFN", sim_dir / "params.txt", "-BadPxIntensity", "-2"],
                           "masked")

    h5 = tmp_path / "data.h5"
    with h5py.File(h5, "w") as f:
        f["entry/images"] = tifffile.imread(image)[None]
    cases["wrong dataLoc"] = (["-dataFN", h5, "-paramFN", sim_dir / "params.txt", "-dataLoc", "/no/such"],
                              "no/such")

    cases["bad ImTransOpt"] = (["-dataFN", image, "-paramFN", sim_dir / "params.txt", "-ImTransOpt", "7"],
                               "ImTransOpt")
    cases["bad EtaBinSize"] = (["-dataFN", image, "-paramFN", sim_dir / "params.txt", "-EtaBinSize", "0"],
                               "EtaBinSize")
    return cases


@pytest.mark.parametrize("case", ["missing key", "garbled value", "missing image", "corrupt tiff", "no rings",
                                  "NaN frame", "all masked", "wrong dataLoc", "bad ImTransOpt",
                                  "bad EtaBinSize"])
def test_bad_input_is_one_clear_line(case, sim_dir, tmp_path, capsys):
    args, needle = bad_input_cases(sim_dir, tmp_path)[case]
    out = tmp_path / "out"
    code, stdout, stderr = run([*args, "--out-dir", out, "--quiet"], capsys)
    assert code == 2, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert "error" in lines[0] and needle in lines[0]
    assert "Traceback" not in stderr
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.slow
def test_legacy_golden_ceo2_2048_beats_the_legacy_binary(tmp_path, capsys):
    """The legacy golden image: ours vs truth must beat CalibrantOMP's +635 ppm chord-box Lsd bias."""
    folder = ("legacy", "ceo2_2048_tilt_dist")
    raw = shared_file(*folder, "CeO2_000001.raw")
    params = tmp_path / "params.txt"
    text = shared_file(*folder, "params_calibrant.txt").read_text().replace("<case dir>", str(raw.parent))
    params.write_text(text)
    code, stdout, stderr = run(["-dataFN", raw, "-paramFN", params, "--out-dir", tmp_path / "cal", "--quiet"],
                               capsys)
    assert code == 0, stderr
    refined = read_parameter_file(tmp_path / "cal" / "refined_MIDAS_params.txt")
    # truth Lsd 1 000 000 µm; the legacy loop gave 1 000 636.5 and BC within 0.0004 px
    assert abs(refined.get("Lsd") - 1_000_000.0) < 5.0
    y, z = refined.get("BC")
    assert abs(y - 1027.3) < 0.004 and abs(z - 1021.3) < 0.004
