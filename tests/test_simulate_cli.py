"""``midas-ref simulate``: listing, runs from a scenario and from a parameter file, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from midas_ref.cli import main
from midas_ref.io import read_frames
from midas_ref.params import read_parameter_file
from simulate import scenario_names

SMALL = ("NrPixelsY 200\nNrPixelsZ 180\npx 172\nLsd 150000\nBC 100.3 90.2\nty 0.1\n"
         "NPanelsY 2\nNPanelsZ 2\nPanelSizeY 97\nPanelSizeZ 87\nPanelGapsY 6\nPanelGapsZ 6\n")


def test_list(capsys):
    assert main(["simulate", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ("ge2048", "varex2880", "pilatus2m", "dexela4", "offset_bc", "lab6_short", "_noisefree"):
        assert name in out


def test_scenario_with_small_detector_from_a_parameter_file(tmp_path, capsys):
    """pilatus2m settings (int32, gaps −1, bad −2) on a 200 × 180 detector given by -paramFN."""
    (tmp_path / "small.txt").write_text(SMALL)
    out = tmp_path / "out"
    code = main(["simulate", "--scenario", "pilatus2m", "-paramFN", str(tmp_path / "small.txt"), "--out", str(out),
                 "--seed", "5", "--frames", "2", "--format", "h5", "--perturb", "--bad-fraction", "0.01"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "2 x 180 x 200 int32" in printed and "wrote" in printed
    truth = json.loads((out / "truth.json").read_text())
    assert truth["Lsd"] == 150000.0 and truth["NrPixelsY"] == 200 and len(truth["panels"]) == 4
    assert truth["seed"] == 5 and truth["scenario"] == "pilatus2m" and truth["start"] is not None
    frames = read_frames(out / "CeO2_000001.h5")
    assert frames.shape == (2, 180, 200) and frames.dtype == np.int32
    assert np.all(frames[:, :, 97:103] == -1) and np.any(frames == -2)
    pf = read_parameter_file(out / "params.txt")
    assert pf.has("Lsd") and pf.get("GapIntensity") == -1.0


def test_parameter_file_alone_with_options(tmp_path):
    text = SMALL + "Wavelength 0.172979\nSpaceGroup 225\nLatticeConstant 5.411651 5.411651 5.411651 90 90 90\n"
    (tmp_path / "p.txt").write_text(text)
    out = tmp_path / "out"
    code = main(["simulate", "-paramFN", str(tmp_path / "p.txt"), "--out", str(out), "--dtype", "int32",
                 "--fwhm-2theta-deg", "0.05", "--lorentz-fraction", "0.7", "--dark", "40", "--read-noise", "2",
                 "--texture", "0.3", "2", "45", "--missing-arc", "-20", "20", "--noise-free", "--format", "ge"])
    assert code == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["peak"]["fwhm_two_theta_deg"] == 0.05 and truth["peak"]["lorentz_fraction"] == 0.7
    assert truth["intensity"]["missing_arcs_deg"] == [[-20.0, 20.0]] and truth["noise_free"]
    pf = read_parameter_file(out / "params.txt")
    assert pf.get("DataType") == 5 and pf.get("HeadSize") == 8192
    dark = read_frames(out / "dark_000001.ge3", n_pixels_y=200, n_pixels_z=180, data_type=5)
    assert np.all(dark[dark >= 0] == 40)


@pytest.mark.parametrize("argv, message", [
    (["--scenario", "nope", "--out", "x"], "unknown scenario 'nope'; valid: ge2048"),
    (["--scenario", "ge2048", "--out", "x", "--fwhm-px", "0"], "--fwhm-px must be > 0, got 0.0"),
    (["--scenario", "ge2048", "--out", "x", "--fwhm-px", "-1.5"], "--fwhm-px must be > 0, got -1.5"),
    (["--scenario", "ge2048"], "--out DIR is required"),
    (["--out", "x"], "give --scenario NAME or -paramFN FILE"),
    (["--scenario", "ge2048", "--out", "x", "--bad-fraction", "0.1"], "cannot be stored in uint16"),
    (["-paramFN", "/nonexistent/params.txt", "--out", "x"], "cannot read"),
])
def test_bad_input_is_one_line_exit_2(capsys, argv, message):
    assert main(["simulate", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("midas-ref simulate: error:")


def test_unwritable_out_dir(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    (tmp_path / "p.txt").write_text(SMALL + "Wavelength 0.172979\nSpaceGroup 225\n"
                                    "LatticeConstant 5.411651 5.411651 5.411651 90 90 90\n")
    code = main(["simulate", "-paramFN", str(tmp_path / "p.txt"), "--dtype", "int32", "--out",
                 str(blocker / "sub")])
    assert code == 2 and "cannot create output folder" in capsys.readouterr().err


def test_every_scenario_name_is_accepted():
    from simulate import scenario

    for name in scenario_names():
        assert scenario(name).name == name


def test_installed_script_lists_scenarios():
    done = subprocess.run([sys.executable, "-m", "midas_ref", "simulate", "--list"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "pilatus2m" in done.stdout and done.stderr == ""
