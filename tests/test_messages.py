"""Error messages speak the user's words: the parameter-file key or the command-line flag, never a field name.

Regression tests of the reliability issue (#12), items 9–11: every bad value below ends the command with exit
2 and one error line ``midas-ref <command>: error: …`` that names the key (with file and line) or the flag
and contains none of the library's internal names (``px_um``, ``PeakShape.fwhm_px``, ``ignore_distortion=True``
…); an image with a single ring says that two rings are needed; a beam-centre guess far from the rings is
named, with where the image's ring arcs point.
"""

from __future__ import annotations

import pytest

from midas_ref import Geometry
from midas_ref.cli import main
from simulate import simulate, write_simulation
from simulate.config import CEO2, DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig

#: Names of fields, arguments and classes that must not reach a user of the command line.
INTERNAL_NAMES = ("px_um", "lsd_um", "bc_y_px", "bc_z_px", "n_pixels_y", "n_pixels_z", "tx_deg", "ty_deg", "tz_deg",
                  "p3_deg", "rho_d_um", "wavelength_angstrom", "d_min_angstrom", "size_y_px", "size_z_px",
                  "gaps_y_px", "gaps_z_px", "fwhm_px", "fwhm_two_theta_deg", "PeakShape", "RingIntensity",
                  "DetectorResponse", "SimulationConfig", "Material.", "file_type", "ignore_distortion",
                  "ignore_tx", "dark_skip_frame", "_counts", "invalid geometry", "geometry value")

DETECTOR = ("NrPixelsY 256\nNrPixelsZ 256\npx 200\nLsd 150000\nBC 128.3 130.1\nWavelength 0.172979\n"
            "SpaceGroup 225\nLatticeConstant 5.411651 5.411651 5.411651 90 90 90\n")
PANELS = "NPanelsY 2\nNPanelsZ 1\nPanelSizeY 126\nPanelSizeZ 256\nPanelGapsY 4\n"


def error_line(capsys, command: str, *wanted: str) -> str:
    """The last stderr line: the command's one error line, with every ``wanted`` text and no internal name."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"midas-ref {command}: error:"), err
    for text in wanted:
        assert text in last, (text, last)
    leaked = [name for name in INTERNAL_NAMES if name in last]
    assert not leaked, (leaked, last)
    return last


def param_file(tmp_path, extra: str, base: str = DETECTOR):
    """``base`` + ``extra`` as a parameter file, and the 1-based line of the first line of ``extra``."""
    path = tmp_path / "params.txt"
    path.write_text(base + extra)
    return path, base.count("\n") + 1


# ---- item 9: parameter-file keys ------------------------------------------------------------------------

@pytest.mark.parametrize("extra, key, words", [
    ("px -5\n", "px", "pixel size must be > 0 µm, got -5.0"),
    ("RhoD -1\n", "RhoD", "distortion radius must be > 0 µm, got -1.0"),
    ("MaxRingRad -1\n", "MaxRingRad", "distortion radius must be > 0 µm"),  # the file's own spelling of RhoD
    ("Lsd 0\n", "Lsd", "sample → detector distance must be > 0 µm, got 0.0"),
    ("Distance -2\n", "Distance", "sample → detector distance must be > 0 µm, got -2.0"),
    ("NrPixelsY 0\n", "NrPixelsY", "detector width (columns) must be a positive whole number of pixels, got 0"),
    ("NrPixels 0\n", "NrPixels", "detector width (columns) must be a positive whole number of pixels"),
])
@pytest.mark.parametrize("command", ["export", "simulate"])
def test_geometry_key_named_with_file_and_line(tmp_path, capsys, command, extra, key, words):
    path, line = param_file(tmp_path, extra)
    argv = ["export", "-paramFN", str(path), "-o", "-"] if command == "export" else [
        "simulate", "-paramFN", str(path), "--out", str(tmp_path / "out")]
    assert main(argv) == 2
    error_line(capsys, command, f"{path}, line {line}, key '{key}': {words}")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("extra, key, words", [
    ("RhoD -1\n" + PANELS, "RhoD", "distortion radius must be > 0 µm"),
    (PANELS.replace("PanelSizeY 126", "PanelSizeY 0"), "PanelSizeY", "panel width must be > 0, got 0"),
    (PANELS.replace("PanelGapsY 4", "PanelGapsY 4 4"), "PanelGapsY",
     "panel gaps along Y need 1 values (one per gap between 2 panels), got 2"),
])
def test_panel_and_geometry_keys_in_panels(tmp_path, capsys, extra, key, words):
    path, _ = param_file(tmp_path, extra)
    assert main(["panels", str(path), "--out-dir", str(tmp_path / "out")]) == 2
    last = error_line(capsys, "panels", f"key '{key}': {words}")
    assert f"{path}, line " in last


@pytest.mark.parametrize("extra, key", [("Wavelength 0\n", "Wavelength"), ("RhoD -1\n", "RhoD"), ("px -5\n", "px")])
def test_rings_names_the_key(tmp_path, capsys, extra, key):
    path, line = param_file(tmp_path, extra)
    assert main(["rings", "-paramFN", str(path)]) == 2
    error_line(capsys, "rings", f"line {line}, key '{key}'", "> 0")


def test_simulate_wavelength_from_the_file(tmp_path, capsys):
    path, line = param_file(tmp_path, "Wavelength 0\n")
    assert main(["simulate", "-paramFN", str(path), "--out", str(tmp_path / "out")]) == 2
    error_line(capsys, "simulate", f"line {line}, key 'Wavelength': must be > 0, got 0.0")


# ---- item 9: command-line flags -------------------------------------------------------------------------

@pytest.mark.parametrize("flags, wanted", [
    (["--fwhm-px", "-1"], "--fwhm-px must be > 0, got -1.0"),
    (["--fwhm-2theta-deg", "20"], "--fwhm-2theta-deg must be < 10° for a diffraction peak, got 20.0"),
    (["--lorentz-fraction", "2"], "--lorentz-fraction must be in [0, 1], got 2.0"),
    (["--doublet-wavelength", "-1"], "--doublet-wavelength must be > 0, got -1.0"),
    (["--peak-counts", "-1"], "--peak-counts must be >= 0"),
    (["--texture", "2", "1", "0"], "--texture AMP must be in [0, 1], got 2.0"),
    (["--texture", "0.5", "0", "0"], "--texture ORDER must be an integer >= 1, got 0"),
    (["--background", "-1"], "--background must be >= 0"),
    (["--read-noise", "-1"], "--read-noise must be >= 0"),
    (["--dark-noise", "3"], "a dark pattern (--dark-noise) needs a dark level (--dark)"),
    (["--saturation", "1e9"], "--saturation 1e+09 exceeds the uint16 maximum 65535 (--dtype)"),
    (["--bad-fraction", "2"], "--bad-fraction must be in [0, 1), got 2.0"),
    (["--bad-fraction", "0.1"], "(--bad-value) -2 cannot be stored in uint16 (--dtype)"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--supersample", "100"], "--supersample must be an integer in 1..64, got 100"),
])
def test_simulate_flag_named(tmp_path, capsys, flags, wanted):
    out = tmp_path / "out"
    assert main(["simulate", "--scenario", "ge2048", "--out", str(out), *flags]) == 2
    error_line(capsys, "simulate", wanted)
    assert not out.exists()  # refused before any rendering


def test_simulate_sentinel_from_the_file_names_its_key(tmp_path, capsys):
    path, line = param_file(tmp_path, "BadPxIntensity 7\n")
    assert main(["simulate", "-paramFN", str(path), "--out", str(tmp_path / "out"), "--bad-fraction", "0.01"]) == 2
    error_line(capsys, "simulate", f"the bad pixel value (BadPxIntensity on line {line} of {path}) 7 lies in the "
                                   "range of real counts")


@pytest.mark.parametrize("extra, argv, wanted", [
    ("p2 0.001\np3 10\n", [], ["(p2 = 0.001, p3 = 10.0) cannot be expressed in a PONI geometry",
                              "(--ignore-distortion)"]),
    ("p1 0.001\n", ["--format", "fit2d"], ["(p1 = 0.001) cannot be expressed in Fit2D", "(--ignore-distortion)"]),
    ("tx 0.5\n", ["--format", "fit2d", "--ignore-distortion"], ["the tilt about the beam tx = 0.5°", "(--ignore-tx)"]),
])
def test_export_refusals_name_keys_and_flags(tmp_path, capsys, extra, argv, wanted):
    path, _ = param_file(tmp_path, extra)
    assert main(["export", "-paramFN", str(path), "-o", "-", *argv]) == 2
    error_line(capsys, "export", f"{path}: ", *wanted)


@pytest.mark.parametrize("name, what", [("image.dat", "the extension '.dat'"), ("image", "a name without an extension")])
def test_unknown_image_extension_names_convert_file(tmp_path, capsys, name, what):
    (tmp_path / name).write_bytes(bytes(256 * 256 * 2))
    path, _ = param_file(tmp_path, "")
    assert main(["calibrate", "-dataFN", str(tmp_path / name), "-paramFN", str(path),
                 "--out-dir", str(tmp_path / "out"), "--quiet"]) == 2
    error_line(capsys, "calibrate", f"cannot tell the file type from {what}", "-ConvertFile (0 Zarr zip, 1 HDF5")


def test_calibrate_setting_names_its_flag(tmp_path, capsys):
    files = _simulated(tmp_path, None)
    assert main(["calibrate", "-dataFN", str(files.image), "-paramFN", str(files.params),
                 "--out-dir", str(tmp_path / "out"), "--quiet", "--max-iterations", "0"]) == 2
    error_line(capsys, "calibrate", "--max-iterations", "got 0")


# ---- items 10 and 11: one ring; a beam-centre guess away from the rings -------------------------------------

def _simulated(tmp_path, ring_numbers):
    """256² × 200 µm at 150 mm (CeO2 rings 1–9 at radii 40–113 px), Poisson noise, as a TIFF + params.txt."""
    geometry = Geometry(lsd_um=150_000.0, bc_y_px=128.3, bc_z_px=130.1, px_um=200.0, n_pixels_y=256,
                        n_pixels_z=256, ty_deg=0.3)
    config = SimulationConfig(geometry, Material(wavelength_angstrom=0.172979, **CEO2), peak=PeakShape(fwhm_px=2.0),
                              intensity=RingIntensity(peak_counts=20000.0, ring_numbers=ring_numbers),
                              response=DetectorResponse(background_counts=200.0), seed=3)
    return write_simulation(simulate(config), tmp_path / "sim", "tif")


@pytest.mark.parametrize("ring, radius", [(1, 42), (3, 68)])
@pytest.mark.parametrize("threshold", [[], ["-Threshold", "3000"]], ids=["auto-threshold", "high-threshold"])
def test_one_ring_says_two_are_needed(tmp_path, capsys, ring, radius, threshold):
    """Auto threshold: the one ring is thresholded too wide for an arc; a high one: it is an arc. Either way
    the image shows one ring, and the message says so (it used to say "no … region looks like a ring arc")."""
    files = _simulated(tmp_path, (ring,))
    assert main(["calibrate", "-dataFN", str(files.image), "-paramFN", str(files.params),
                 "--out-dir", str(tmp_path / "out"), "--quiet", *threshold]) == 2
    error_line(capsys, "calibrate", f"found 1 ring (radius ≈ {radius} px)",
               "at least two rings are needed to fix the distance and beam centre")


def test_one_ring_with_a_spurious_peak_fails_saying_two_are_needed(tmp_path, capsys):
    """Ring 4 alone: a weak profile peak at the image corner lets the distance match, and the fit fails on its
    bounds; the failure says that its peaks lie on one ring."""
    files = _simulated(tmp_path, (4,))
    code = main(["calibrate", "-dataFN", str(files.image), "-paramFN", str(files.params),
                 "--out-dir", str(tmp_path / "out"), "--quiet"])
    err = capsys.readouterr().err
    assert code in (1, 2) and "Traceback" not in err
    assert "at least two rings are needed to fix the distance and beam centre" in err, err


def test_one_ring_with_a_good_centre_guess(tmp_path, capsys):
    files = _simulated(tmp_path, (2,))
    assert main(["calibrate", "-dataFN", str(files.image), "-paramFN", str(files.params),
                 "--out-dir", str(tmp_path / "out"), "--quiet", "-BCGuess", "128.3", "130.1"]) == 2
    error_line(capsys, "calibrate", "found 1 ring", "searched from the beam-centre guess (128.3, 130.1)",
               "at least two rings are needed")


@pytest.mark.parametrize("guess", [("5000", "5000"), ("-300", "130"), ("328", "130")])
def test_far_centre_guess_is_named(tmp_path, capsys, guess):
    files = _simulated(tmp_path, None)
    assert main(["calibrate", "-dataFN", str(files.image), "-paramFN", str(files.params),
                 "--out-dir", str(tmp_path / "out"), "--quiet", "-BCGuess", *guess]) == 2
    last = error_line(capsys, "calibrate", f"no rings found around the beam-centre guess ({guess[0]}, {guess[1]}) "
                                           "(-BCGuess", "the image's ring arcs point to a centre near (128, 130)",
                      "check the guess or leave it out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir()), last
