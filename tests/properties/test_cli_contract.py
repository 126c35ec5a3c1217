"""The bad-input contract of the command line, driven with generated bad parameter files and output locations.

Whatever is wrong — a malformed or missing key, a value that makes no geometry, a file in the way of the
output, a name too long for the file system — the command exits ≠ 0 with exactly one error line (its last
line on stderr, ``midas-ref <command>: error: …``), no traceback, and the output folder is untouched.
Every example carries at least one defect, so no example runs a whole calibration.
"""

from __future__ import annotations

import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from midas_ref.cli import main
from simulate import simulate, write_simulation
from validation.scenarios import synthetic_config

#: Tokens no numeric key accepts (NaN and infinities are refused too; 1e999 overflows to inf).
BAD_TOKENS = ("abc", "nan", "inf", "-inf", "1e999", "0x10", "½", "1,5", "--", "1e", ".")
#: Keys each command needs, and keys whose value must be > 0 for it.
REQUIRED = {"calibrate": ("SpaceGroup", "LatticeConstant", "Wavelength", "px"),
            "export": ("Lsd", "BC", "px", "Wavelength"),
            "rings": ("SpaceGroup", "LatticeConstant", "Wavelength")}
POSITIVE = {"calibrate": ("Wavelength", "px"), "export": ("Wavelength", "px", "Lsd"), "rings": ("Wavelength",)}
NUMERIC = ("Lsd", "BC", "px", "Wavelength", "SpaceGroup", "LatticeConstant", "NrPixelsY", "tolBC", "RhoD",
           "ty", "p0", "MaxRingNumber", "ImTransOpt")


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    out = tmp_path_factory.mktemp("sim")
    return write_simulation(simulate(synthetic_config("small512", "noisefree", 2)), out, "tif")


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@st.composite
def parameter_defects(draw, command: str):
    """(kind, key, replacement): what to do to one line of a valid parameter file, or None (no defect)."""
    kind = draw(st.sampled_from(["none", "malformed", "missing", "not positive", "wrong count", "binary"]))
    if kind == "none":
        return None
    if kind == "malformed":
        return kind, draw(st.sampled_from(NUMERIC)), draw(st.sampled_from(BAD_TOKENS))
    if kind == "missing":
        return kind, draw(st.sampled_from(REQUIRED[command])), None
    if kind == "not positive":
        return kind, draw(st.sampled_from(POSITIVE[command])), draw(st.sampled_from(["0", "-1", "-0.0", "-2e-3"]))
    if kind == "wrong count":
        return kind, draw(st.sampled_from(["BC", "LatticeConstant"])), "1 2 3"
    return kind, None, None


def _defective_text(text: str, defect) -> bytes:
    if defect is None:
        return text.encode()
    kind, key, value = defect
    if kind == "binary":
        return text.encode() + b"\x00\x01\x02garbage\n"
    out = []
    present = False
    for line in text.splitlines():
        tokens = line.split()
        if tokens[:1] == [key]:
            present = True
            if kind != "missing":
                out.append(f"{key} {value}")
            continue
        out.append(line)
    if not present and kind != "missing":
        out.append(f"{key} {value}")
    return ("\n".join(out) + "\n").encode()


LOCATIONS = ("new folder", "existing file", "under a file", "name too long")


def _location(tmp, kind: str):
    blocker = tmp / "blocker"
    blocker.write_text("not a folder\n")
    return {"new folder": tmp / "out" / "deeper", "existing file": blocker, "under a file": blocker / "out",
            "name too long": tmp / ("x" * 256)}[kind]


def _state(tmp):
    return sorted((str(p.relative_to(tmp)), p.read_bytes() if p.is_file() else b"")
                  for p in tmp.rglob("*") if p.name != "params.txt")


def _check(command, argv, tmp, capsys):
    before = _state(tmp)
    code = main([command, *map(str, argv)])
    err = capsys.readouterr().err
    lines = _lines(err)
    assert code != 0, err
    assert "Traceback" not in err
    errors = [line for line in lines if line.startswith("midas-ref ") and ": error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert _state(tmp) == before  # nothing written, nothing created


SETTINGS = settings(max_examples=40, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


def _contract(command, sim, tmp_path_factory, capsys, defect, location, fallback, argv):
    """Run ``command`` on a defective copy of its parameter file with an output at ``location``.

    ``fallback`` is the defect used when the example drew none and a writable location (so that no example
    runs the whole job); ``argv(params, out)`` builds the command's arguments."""
    if defect is None and location == "new folder":
        defect = fallback
    tmp = tmp_path_factory.mktemp("case")
    params = tmp / "params.txt"
    base = sim.params if command == "calibrate" else sim.truth_params
    params.write_bytes(_defective_text(base.read_text(), defect))
    _check(command, argv(params, _location(tmp, location)), tmp, capsys)
    shutil.rmtree(tmp)


@SETTINGS
@given(defect=parameter_defects("calibrate"), location=st.sampled_from(LOCATIONS))
def test_calibrate_bad_input_contract(sim, tmp_path_factory, capsys, defect, location):
    _contract("calibrate", sim, tmp_path_factory, capsys, defect, location, ("missing", "Wavelength", None),
              lambda params, out: ["-dataFN", sim.image, "-paramFN", params, "--out-dir", out, "--quiet"])


@SETTINGS
@given(defect=parameter_defects("export"), location=st.sampled_from(LOCATIONS))
def test_export_bad_input_contract(sim, tmp_path_factory, capsys, defect, location):
    _contract("export", sim, tmp_path_factory, capsys, defect, location, ("not positive", "Lsd", "0"),
              lambda params, out: ["-paramFN", params, "-o", out / "geometry.poni"])


@SETTINGS
@given(defect=parameter_defects("rings"), location=st.sampled_from(LOCATIONS))
def test_rings_bad_input_contract(sim, tmp_path_factory, capsys, defect, location):
    _contract("rings", sim, tmp_path_factory, capsys, defect, location, ("malformed", "SpaceGroup", "abc"),
              lambda params, out: ["-paramFN", params, "--hkls-csv", out / "hkls.csv"])
