"""Fully automatic calibration of real calibrant images against their shipped geometries.

Reference geometries are converted from each folder's own files (PROVENANCE.md says how): the pyFAI PONI
of the Continuous-Peak-Fit Pilatus 1M image (it describes the up-down flipped image, so we calibrate with
ImTransOpt 2), and the HEXRD geometry of the APS GE image (beam point and Lsd as derived in its
PROVENANCE.md). Bounds are those of the calibration issue.
"""

from __future__ import annotations

import pytest

from midas_ref.cli import main
from midas_ref.convert import poni_to_midas, read_poni
from midas_ref.params import read_parameter_file

from conftest import shared_file

pytestmark = pytest.mark.slow


def calibrate(tmp_path, capsys, image, params_text, *extra):
    params = tmp_path / "params.txt"
    params.write_text(params_text)
    code = main(["calibrate", "-dataFN", str(image), "-paramFN", str(params), "--out-dir", str(tmp_path / "cal"),
                 "--quiet", *extra])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return read_parameter_file(tmp_path / "cal" / "refined_MIDAS_params.txt")


def test_pilatus1m_cpf_against_dioptas_poni(tmp_path, capsys):
    folder = ("data", "real", "pilatus1m_ceo2_cpf")
    image = shared_file(*folder, "CeO2_Pil207_E30_2Nov2016_001.tif")
    ref = poni_to_midas(read_poni(shared_file(*folder, "CeO2_cal_Dioptas.poni")), n_pixels_y=981, n_pixels_z=1043)
    # the PONI has no distortion terms: compare like with like (tolP 0 fixes p0–p3 at 0)
    params = ("px 172\nWavelength 0.40663\nSpaceGroup 225\nLatticeParameter 5.411651 5.411651 5.411651 90 90 90\n"
              "BadPxIntensity -2\nGapIntensity -1\ntolP 0\n")
    refined = calibrate(tmp_path, capsys, image, params, "-ImTransOpt", "2")
    y, z = refined.get("BC")
    assert abs(y - ref.bc_y_px) < 0.15 and abs(z - ref.bc_z_px) < 0.15
    assert abs(refined.get("Lsd") / ref.lsd_um - 1) < 1.5e-4


def test_ge_aps1id_against_hexrd_geometry(tmp_path, capsys):
    image = shared_file("data", "real", "ge_ceo2_aps1id", "ge_wppf.h5")
    params = "px 200\nWavelength 0.153588\nSpaceGroup 225\nLatticeParameter 5.41153 5.41153 5.41153 90 90 90\n"
    refined = calibrate(tmp_path, capsys, image, params)
    # PROVENANCE.md: direct beam at row 1007.32, column 1030.77 (pixel centres); Lsd 1050.743 mm
    y, z = refined.get("BC")
    assert abs(y - 1030.77) < 0.15 and abs(z - 1007.32) < 0.15
    assert abs(refined.get("Lsd") / 1_050_743.0 - 1) < 5e-4
