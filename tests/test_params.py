"""Tests of the MIDAS parameter-file reader/writer and builders in ``midas_ref.params``."""

from __future__ import annotations

import math
import re

import pytest
from conftest import REPO, shared_file

from midas_ref.detector import Geometry, default_rho_d_um
from midas_ref.errors import ParameterFileError
from midas_ref.params import (FORMAT_HEADER, KEY_TABLE, Entry, ParameterFile, geometry_from_params, key_spec,
                              key_table_markdown, panel_layout_from_params, params_from_geometry, parse_parameter_text,
                              read_parameter_file, write_parameter_file, write_refined_params)

LEGACY_CASES = ["ceo2_1024_ge_dark", "ceo2_1024_panels16", "ceo2_2048_tilt_dist"]

GEOMETRY_TEXT = """\
Lsd 1002000.0
BC 516.8 508.1
px 200.0
NrPixelsY 1024
NrPixelsZ 1024
ty 0.45
tz -0.35
"""


def typed_values(pf: ParameterFile) -> dict:
    return {key: pf.get(key) for key in pf.keys()}


# ---- the three legacy parameter files

@pytest.mark.parametrize("case", LEGACY_CASES)
def test_legacy_parameter_file_typed_values(case):
    pf = read_parameter_file(shared_file("legacy", case, "params_calibrant.txt"))
    assert pf.get("tolP") == 0.002 and isinstance(pf.get("tolP"), float)  # written "2E-3"
    assert pf.get("tolLsd") == 15000.0 and pf.get("tolTilts") == 3.0 and pf.get("tolBC") == 20.0
    assert pf.get("LatticeConstant") == (5.411651, 5.411651, 5.411651, 90.0, 90.0, 90.0)
    assert all(isinstance(v, float) for v in pf.get("LatticeConstant"))
    assert pf.get("SpaceGroup") == 225 and isinstance(pf.get("SpaceGroup"), int)
    assert pf.get("Wavelength") == 0.172979
    assert pf.get("ImTransOpt") == [0]
    assert pf.get("RingsToExclude") == []
    assert pf.get("ty") == 0.44999999999999996 and pf.get("tz") == -0.35
    assert pf.get("FileStem") == "CeO2" and pf.get("Folder") == "<case dir>"
    assert pf.get("EtaBinSize") == 5.0 and pf.get("Width") == 1000.0
    n = pf.get("NrPixelsY")
    assert n in (1024, 2048) and pf.get("NrPixelsZ") == n
    geometry = geometry_from_params(pf)
    assert (geometry.bc_y_px, geometry.bc_z_px) == pf.get("BC")
    assert geometry.rho_d_um == pf.get("RhoD") and geometry.lsd_um == 1002000.0
    assert geometry.shape == (n, n)


@pytest.mark.parametrize("case", LEGACY_CASES)
def test_legacy_parameter_file_round_trips(case, tmp_path):
    pf = read_parameter_file(shared_file("legacy", case, "params_calibrant.txt"))
    write_parameter_file(pf, tmp_path / "p.txt")
    again = read_parameter_file(tmp_path / "p.txt")
    assert typed_values(again) == typed_values(pf)
    assert [e.key for e in again.entries if e.key] == [e.key for e in pf.entries if e.key]


def test_legacy_ge_file_header_and_dark():
    pf = read_parameter_file(shared_file("legacy", "ceo2_1024_ge_dark", "params_calibrant.txt"))
    assert pf.get("HeadSize") == 8192 and pf.get("Ext") == ".ge3"
    assert pf.get("Dark") == "<case dir>/dark_000001.ge3"
    assert panel_layout_from_params(pf) is None


def test_legacy_panel_file():
    pf = read_parameter_file(shared_file("legacy", "ceo2_1024_panels16", "params_calibrant.txt"))
    assert pf.get("PanelGapsY") == (8, 8, 8) and pf.get("PanelGapsZ") == (8, 8, 8)
    assert pf.get("tolShifts") == 3.0 and pf.get("HeadSize") == 0
    assert pf.get("MaskFile") == "<case dir>/gapmask.tif"
    layout = panel_layout_from_params(pf)
    assert (layout.n_panels_y, layout.n_panels_z, layout.size_y_px, layout.size_z_px) == (4, 4, 250, 250)
    assert layout.gaps_y_px == (8, 8, 8) and layout.n_panels == 16


# ---- the key table against the manual and the spec

def _manual_table_keys(text: str, start: str, stop: str) -> dict[str, str]:
    """Key → Default cell of a manual table; ranges such as `p0` – `p3` are expanded."""
    section = text[text.index(start):]
    section = section[:section.index(stop)]
    keys = {}
    for row in section.splitlines():
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        names = re.findall(r"`([A-Za-z][A-Za-z0-9]*)`", cells[0]) if row.lstrip().startswith("|") else []
        if len(names) == 2 and "–" in cells[0]:
            stem = names[0].rstrip("0123456789")
            names = [f"{stem}{i}" for i in range(int(names[0][len(stem):]), int(names[1][len(stem):]) + 1)]
        for name in names:
            keys[name] = cells[2] if len(cells) > 3 else "—"
    return keys


def test_key_table_covers_every_manual_key():
    text = shared_file("seed", "AutoCalibrateZarr_manual.txt").read_text(encoding="utf-8")
    reference = _manual_table_keys(text, "### Complete Parameter Reference", "### Advanced")
    param_fn = _manual_table_keys(text, "### Input Parameter File", "### Output")
    assert len(reference) > 50 and {"SpaceGroup", "LatticeParameter", "SkipFrame"} <= set(param_fn)
    missing = [k for k in {**reference, **param_fn} if key_spec(k) is None]
    assert missing == []
    # Deliberate deviations, documented in the table: sentinels are absent by default (the C engine's 0
    # would mask real zero-valued pixels), ImTransOpt is a list (absent = no transform), nIterations is up
    # to 5 cycles that stop once converged (the legacy single pass used peaks of the uncorrected frame).
    deviations = {"BadPxIntensity", "GapIntensity", "ImTransOpt", "nIterations"}
    for key, cell in reference.items():
        if re.fullmatch(r"[0-9.]+", cell) and key not in deviations:
            assert key_spec(key).default == float(cell), key


def test_key_table_covers_orchestrator_keys():
    written = ("RingsToExclude Folder FileStem Ext ImTransOpt Width tolTilts tolBC tolLsd tolP tx ty tz Wedge p0 p1 "
               "p2 p3 EtaBinSize HeadSize BadPxIntensity GapIntensity Dark StartNr EndNr Padding NrPixelsY NrPixelsZ "
               "px Wavelength SpaceGroup Lsd RhoD MultFactor BC LatticeConstant DataType NPanelsY NPanelsZ PanelSizeY "
               "PanelSizeZ PanelGapsY PanelGapsZ PanelShiftsFile tolShifts RMin RMax RBinSize EtaMin EtaMax "
               "DoSmoothing DoPeakFit skipFrame MultiplePeaks p4 MaxRingRad dataLoc darkLoc StoppingStrain "
               "MaxRingNumber tolP3 tolP4 NrPixels RingsToReject Distance RBinDivisions").split()
    assert [k for k in written if key_spec(k) is None] == []


def test_key_table_is_consistent():
    names = [s.name for s in KEY_TABLE]
    assert len(names) == len(set(names))
    for spec in KEY_TABLE:
        assert spec.type in (int, float, str) and spec.description
        assert spec.count in (1, 2, 6, None)
        if spec.repeatable:
            assert spec.default == ()
        elif spec.default is not None and spec.type is not str:
            assert isinstance(spec.default, spec.type) and spec.count == 1, spec.name


def test_docs_params_md_contains_the_generated_key_table():
    text = (REPO / "docs" / "params.md").read_text(encoding="utf-8")
    begin, end = "<!-- BEGIN KEY TABLE", "<!-- END KEY TABLE -->"
    block = text[text.index(begin):text.index(end)]
    block = block[block.index("-->") + len("-->"):].strip("\n")
    assert block + "\n" == key_table_markdown()


# ---- parsing rules

def test_aliases_resolve_to_canonical_names():
    pf = parse_parameter_text("Distance 5e5\nMaxRingRad 2e5\nLatticeParameter 4.1569 4.1569 4.1569 90 90 90\n"
                              "skipFrame 2\nRingsToReject 3\nRingsToExclude 7\nMaskFN m.tif\n")
    assert pf.get("Lsd") == 500000.0 and pf.get("Distance") == 500000.0
    assert pf.get("RhoD") == 200000.0
    assert pf.get("LatticeConstant")[0] == 4.1569
    assert pf.get("SkipFrame") == 2
    assert pf.get("RingsToExclude") == [3, 7]
    assert pf.get("MaskFile") == "m.tif"
    assert pf.keys() == ["Lsd", "RhoD", "LatticeConstant", "SkipFrame", "RingsToExclude", "MaskFile"]
    assert pf.has("Distance") and pf.has("Lsd") and not pf.has("px")


def test_last_occurrence_wins_and_repeatable_keys_accumulate():
    pf = parse_parameter_text("Lsd 1\nRingsToExclude 2\nImTransOpt 1\nLsd 2\nRingsToExclude 5 6\nImTransOpt 3\n"
                              "Distance 3\n")
    assert pf.get("Lsd") == 3.0
    assert pf.get("RingsToExclude") == [2, 5, 6]
    assert pf.get("ImTransOpt") == [1, 3]


@pytest.mark.parametrize("text, y, z", [
    ("NrPixels 2048\n", 2048, 2048),
    ("NrPixels 2048\nNrPixelsY 1475\n", 1475, 2048),
    ("NrPixelsY 1475\nNrPixels 2048\n", 2048, 2048),  # later lines override earlier ones
    ("NrPixelsY 1475\nNrPixelsZ 1679\n", 1475, 1679),
])
def test_nr_pixels_sets_both_axes_later_lines_win(text, y, z):
    pf = parse_parameter_text(text)
    assert (pf.get("NrPixelsY"), pf.get("NrPixelsZ")) == (y, z)


def test_comments_blank_lines_tabs_and_line_ends():
    text = ("# a whole-line comment\r\n\r\n  Lsd\t1000.5   # trailing comment\r\nBC 1 2#no space\r\n"
            "\tpx 200\rFolder /data/my run  # path with a space\n")
    pf = parse_parameter_text(text)
    assert pf.get("Lsd") == 1000.5 and pf.get("BC") == (1.0, 2.0) and pf.get("px") == 200.0
    assert pf.get("Folder") == "/data/my run"
    assert pf.keys() == ["Lsd", "BC", "px", "Folder"]
    assert pf.entries[2].comment == " trailing comment" and pf.entries[2].line == 3
    assert parse_parameter_text(pf.to_text()).entries == pf.entries


def test_our_header_line_is_skipped_by_the_reader():
    pf = parse_parameter_text(FORMAT_HEADER + "\nLsd 1\n")
    assert pf.keys() == ["Lsd"]


@pytest.mark.parametrize("token, value", [("2E-3", 0.002), ("1e+06", 1e6), (".5", 0.5), ("5.", 5.0),
                                          ("-3", -3.0), ("+1.25E2", 125.0)])
def test_numbers_in_scientific_and_short_notation(token, value):
    assert parse_parameter_text(f"tolP {token}").get("tolP") == value


def test_integer_keys_accept_integral_decimals_only():
    assert parse_parameter_text("StartNr 2.0\nEndNr 1E1\n").get("EndNr") == 10
    with pytest.raises(ParameterFileError, match="not an integer"):
        parse_parameter_text("RBinDivisions 4.5")


def test_unknown_keys_are_kept_verbatim_in_order():
    text = "OmegaRange -180 180\nLsd 1\nBoxSize -1000000 1000000 -1000000 1000000\nOmegaRange 0 1\n"
    pf = parse_parameter_text(text)
    assert pf.get("OmegaRange") == "0 1" and pf.get("BoxSize") == "-1000000 1000000 -1000000 1000000"
    assert pf.to_text() == text
    assert pf.keys() == ["OmegaRange", "Lsd", "BoxSize"]


# ---- errors

@pytest.mark.parametrize("line, key, message", [
    ("Lsd abc", "Lsd", "not a number"),
    ("Lsd nan", "Lsd", "not a number"),
    ("Lsd inf", "Lsd", "not a number"),
    ("Lsd 1e999", "Lsd", "not a finite number"),
    ("BC 1024", "BC", "expected 2 values, got 1"),
    ("Lsd 1 2", "Lsd", "expected 1 value, got 2"),
    ("LatticeParameter 5.4 5.4 5.4 90 90", "LatticeParameter", "expected 6 values, got 5"),
    ("SpaceGroup 225a", "SpaceGroup", "not an integer"),
    ("PanelGapsY 1 x", "PanelGapsY", "not an integer"),
    ("RingsToExclude", "RingsToExclude", "at least one value"),
    ("Folder", "Folder", "expected a value"),
    ("px １００", "px", "not a number"),  # full-width digits are not numbers here
])
def test_malformed_value_names_file_line_and_key(tmp_path, line, key, message):
    path = tmp_path / "bad_params.txt"
    path.write_text(f"# header\nWavelength 0.17\n{line}  # comment\n", encoding="utf-8")
    with pytest.raises(ParameterFileError, match=re.escape(message)) as info:
        read_parameter_file(path)
    error = info.value
    assert (error.path, error.line, error.key) == (str(path), 3, key)
    assert str(path) in str(error) and "line 3" in str(error) and repr(key) in str(error)


def test_unreadable_files_name_the_file(tmp_path):
    cases = {"missing.txt": None, "latin1.txt": "Folder /d\u00e9j\u00e0\n".encode("latin-1"),
             "binary.bin": b"Lsd 1\x00\x01\x02\xff"}
    for name, data in cases.items():
        path = tmp_path / name
        if data is not None:
            path.write_bytes(data)
        with pytest.raises(ParameterFileError, match=re.escape(str(path))):
            read_parameter_file(path)
    with pytest.raises(ParameterFileError, match="cannot read"):
        read_parameter_file(tmp_path)  # a directory


def test_utf8_with_bom_is_accepted(tmp_path):
    path = tmp_path / "bom.txt"
    path.write_bytes("\ufeffLsd 5\nFolder /données\n".encode("utf-8"))
    pf = read_parameter_file(path)
    assert pf.get("Lsd") == 5.0 and pf.get("Folder") == "/données"


# ---- typed access

def test_get_defaults_fallbacks_and_missing_keys():
    pf = parse_parameter_text("tolP 1e-3\ntolP1 0\ntolP2 5e-4\nUnknownKey some text\n", source="x.txt")
    assert pf.get("Padding") == 6 and pf.get("HeadSize") == 8192 and pf.get("tolShifts") == 1.0
    assert pf.get("tolP2Panel") == 1e-4 and pf.get("DistortionOrder") == 4 and pf.get("tolTilts") == 3.0
    assert pf.get("tolP0") == 1e-3  # absent -> tolP
    assert pf.get("tolP1") == 1e-3  # 0 -> tolP
    assert pf.get("tolP2") == 5e-4
    assert pf.get("tolP3") == 45.0  # CalibrantOMP's 45 degrees, not CPS's tolP (quirk P5)
    assert parse_parameter_text("tolP3 0.5").get("tolP3") == 0.5
    assert parse_parameter_text("").get("tolP0") == 2e-3  # tolP's own default
    assert pf.get("UnknownKey") == "some text"
    assert pf.get("Lsd", None) is None and pf.get("Padding", 4) == 6
    with pytest.raises(ParameterFileError, match="missing required key") as info:
        pf.get("Lsd")
    assert info.value.key == "Lsd" and "x.txt" in str(info.value)
    with pytest.raises(ParameterFileError, match="missing required key"):
        pf.get("NotAKey")


def test_require_lists_every_missing_key():
    pf = parse_parameter_text("Lsd 1\nNrPixels 10\n")
    pf.require("Lsd", "NrPixelsY", "Padding")
    with pytest.raises(ParameterFileError, match="missing required keys: BC, px, Wavelength"):
        pf.require("Lsd", "BC", "px", "Wavelength")


# ---- modified copies

def test_set_replaces_in_place_and_keeps_the_rest():
    pf = parse_parameter_text("# top\nFoo 1 2\nDistance 5  # seed\nBar x\nLsd 6\nBaz\n")
    new = pf.set("Lsd", 7.25)
    assert pf.get("Lsd") == 6.0  # the original is unchanged
    assert new.to_text() == "# top\nFoo 1 2\nBar x\nLsd 7.25\nBaz\n"
    assert new.set("Lsd", None).has("Lsd") is False
    added = pf.with_values(px=172.0, BC=(1.5, 2), NewKey="abc")
    assert added.keys()[-3:] == ["px", "BC", "NewKey"] and added.get("BC") == (1.5, 2.0)
    assert parse_parameter_text("Distance 5 # seed\n").set("Lsd", 1).to_text() == "Lsd 1 # seed\n"


def test_set_repeatable_keys_and_nr_pixels():
    pf = parse_parameter_text("RingsToExclude 1\nLsd 5\nRingsToReject 2\n")
    new = pf.set("RingsToExclude", [4, 5])
    assert new.to_text() == "RingsToExclude 4\nRingsToExclude 5\nLsd 5\n"
    assert new.get("RingsToExclude") == [4, 5] and pf.set("ImTransOpt", 2).get("ImTransOpt") == [2]
    square = parse_parameter_text("NrPixelsY 100\nNrPixels 2048\n")
    assert square.set("NrPixelsY", 1475).get("NrPixelsY") == 1475
    assert square.set("NrPixelsY", 1475).get("NrPixelsZ") == 2048
    assert square.set("NrPixels", 512).to_text() == "NrPixels 512\n"


@pytest.mark.parametrize("key, value", [("BC", (1, 2, 3)), ("Lsd", math.nan), ("Lsd", "far"), ("Folder", "a#b"),
                                        ("Folder", "a\nb"), ("SpaceGroup", 2.5), ("Folder", " ")])
def test_set_rejects_values_that_cannot_be_written(key, value):
    with pytest.raises(ParameterFileError):
        ParameterFile().set(key, value)


def test_entries_that_cannot_be_written_are_rejected():
    for entry in (Entry("a b", "1"), Entry("Lsd", "1 # x"), Entry("", "x"), Entry("Foo", "1", "a\nb")):
        with pytest.raises(ParameterFileError):
            ParameterFile((entry,))


# ---- builders

def test_geometry_round_trip_through_params():
    geometry = Geometry(lsd_um=657436.895687981, bc_y_px=685.485459654125, bc_z_px=921.034377043941, px_um=172.0,
                        n_pixels_y=1475, n_pixels_z=1679, tx_deg=0.1, ty_deg=0.200888234849,
                        tz_deg=0.44690237631, p0=2.30535992e-4, p1=1.72564332e-4, p2=-5.42224078e-4,
                        p3_deg=-13.773706892191, p4=1.909017437e-3, p5=-2e-4, rho_d_um=219964.42411013643)
    base = parse_parameter_text("Wavelength 0.172973\nNrPixels 2048\nLsd 1\nMyKey 3\n")
    pf = params_from_geometry(geometry, base)
    assert pf.get("Wavelength") == 0.172973 and pf.get("MyKey") == "3"
    assert geometry_from_params(parse_parameter_text(pf.to_text())) == geometry  # floats exact
    assert geometry_from_params(params_from_geometry(geometry)) == geometry


def test_geometry_without_rho_d_uses_the_farthest_corner():
    geometry = geometry_from_params(parse_parameter_text(GEOMETRY_TEXT))
    assert geometry.rho_d_um == default_rho_d_um(516.8, 508.1, 1024, 1024, 200.0)
    assert (geometry.ty_deg, geometry.tz_deg, geometry.p3_deg) == (0.45, -0.35, 0.0)


def test_geometry_missing_and_invalid_values():
    with pytest.raises(ParameterFileError, match="missing required keys: BC, px, NrPixelsY, NrPixelsZ"):
        geometry_from_params(parse_parameter_text("Lsd 1e6\n"))
    n_lines = GEOMETRY_TEXT.count("\n")
    with pytest.raises(ParameterFileError, match=re.escape(
            f"line {n_lines + 1}, key 'Lsd': sample → detector distance must be > 0 µm, got -5.0")):
        geometry_from_params(parse_parameter_text(GEOMETRY_TEXT + "Lsd -5\n"))
    with pytest.raises(ParameterFileError, match=re.escape(
            f"line {n_lines + 1}, key 'Distance': sample → detector distance must be > 0 µm, got 0.0")):
        geometry_from_params(parse_parameter_text(GEOMETRY_TEXT + "Distance 0\n"))  # the file's spelling
    with pytest.raises(ParameterFileError, match=re.escape("key 'RhoD': distortion radius must be > 0 µm, got 0.0 "
                                                           "(not in the file: the distance from BC")):
        geometry_from_params(parse_parameter_text("Lsd 1e6\nBC 0 0\npx 200\nNrPixels 1\n"))


def test_panel_layout_from_params():
    assert panel_layout_from_params(parse_parameter_text("NPanelsY 0\nNPanelsZ 8\n")) is None
    layout = panel_layout_from_params(parse_parameter_text("NPanelsY 2\nNPanelsZ 3\nPanelSizeY 195\n"
                                                           "PanelSizeZ 487\nPanelGapsZ 17 17\n"))
    assert layout.gaps_y_px == (0,) and layout.gaps_z_px == (17, 17) and layout.size_z_px == 487
    with pytest.raises(ParameterFileError, match=re.escape(
            "line 5, key 'PanelGapsY': panel gaps along Y need 3 values (one per gap between 4 panels), got 2")):
        panel_layout_from_params(parse_parameter_text("NPanelsY 4\nNPanelsZ 1\nPanelSizeY 9\nPanelSizeZ 9\n"
                                                      "PanelGapsY 1 2\n"))


# ---- writing

def test_write_parameter_file_adds_one_header_and_round_trips(tmp_path):
    pf = parse_parameter_text("Lsd 1e6\n# note\nFoo bar\nRingsToExclude 3\n")
    path = tmp_path / "sub" / "p.txt"
    write_parameter_file(pf, path)
    write_parameter_file(read_parameter_file(path), path)  # the header is not duplicated
    text = path.read_text(encoding="utf-8")
    assert text.splitlines()[0] == FORMAT_HEADER and text.count("midas-ref parameter file") == 1
    assert "format 1" in FORMAT_HEADER and "[Z, Y]" in FORMAT_HEADER
    assert text == FORMAT_HEADER + "\n" + pf.to_text()
    assert typed_values(read_parameter_file(path)) == typed_values(pf)
    assert [p.name for p in path.parent.iterdir()] == ["p.txt"]  # no temporary file left


REFINED_ORDER = ["Lsd", "BC", "tx", "ty", "tz", "p0", "p1", "p2", "p3", "RhoD", "Wavelength", "px", "RMin", "RMax",
                 "RBinSize", "EtaMin", "EtaMax", "NrPixelsY", "NrPixelsZ", "EtaBinSize", "DoSmoothing", "DoPeakFit",
                 "skipFrame", "MultiplePeaks"]


def test_write_refined_params_key_order_and_values(tmp_path):
    geometry = geometry_from_params(parse_parameter_text(GEOMETRY_TEXT + "p2 1.5e-4\nRhoD 145522.7514858072\n"))
    path = tmp_path / "refined_MIDAS_params.txt"
    write_refined_params(path, geometry, wavelength_angstrom=0.172979, space_group=225,
                         lattice=(5.411651,) * 3 + (90,) * 3, eta_bin_size_deg=2.0, skip_frame=0,
                         im_trans_opt=(1, 3), bad_px_intensity=-2, gap_intensity=-1)
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == FORMAT_HEADER
    keys = [line.split()[0] for line in lines[1:]]
    assert keys == REFINED_ORDER + ["ImTransOpt", "ImTransOpt", "BadPxIntensity", "GapIntensity", "SpaceGroup",
                                    "LatticeConstant"]
    assert lines[1:3] == ["Lsd 1002000.000000000000", "BC 516.800000000000 508.100000000000"]
    assert "p2 0.000150000000" in lines and "RhoD 145522.7514858072" in lines
    assert "EtaBinSize 2.0" in lines  # the real value, not the legacy constant 5
    for fixed in ("RMin 10", "RMax 1000", "RBinSize 1", "EtaMin -180", "EtaMax 180", "DoSmoothing 1",
                  "DoPeakFit 1", "skipFrame 0", "MultiplePeaks 1", "BadPxIntensity -2.0", "GapIntensity -1.0"):
        assert fixed in lines
    pf = read_parameter_file(path)
    assert pf.get("ImTransOpt") == [1, 3] and pf.get("LatticeConstant")[3:] == (90.0, 90.0, 90.0)
    again = geometry_from_params(pf)
    assert again.lsd_um == geometry.lsd_um and again.p2 == 1.5e-4 and again.rho_d_um == geometry.rho_d_um
    assert abs(again.ty_deg - geometry.ty_deg) <= 5e-13  # %0.12f: half a unit in the 12th decimal


def test_write_refined_params_optional_p4_and_extra(tmp_path):
    geometry = geometry_from_params(parse_parameter_text(GEOMETRY_TEXT + "p4 1.9e-3\n"))
    path = tmp_path / "r.txt"
    pf = write_refined_params(path, geometry, wavelength_angstrom=0.17, space_group=225, lattice=[5.4] * 3 + [90] * 3,
                              eta_bin_size_deg=5, im_trans_opt=(), extra={"DataType": 1, "RingsToExclude": [2, 9]})
    keys = [e.key for e in read_parameter_file(path).entries if e.key]
    assert keys[len(REFINED_ORDER):] == ["p4", "SpaceGroup", "LatticeConstant", "DataType", "RingsToExclude",
                                         "RingsToExclude"]
    assert pf.get("RingsToExclude") == [2, 9] and pf.get("p4") == 1.9e-3
    with pytest.raises(ValueError, match="Lsd"):
        write_refined_params(path, geometry, wavelength_angstrom=0.17, space_group=225, lattice=[5.4] * 6,
                             eta_bin_size_deg=5, extra={"Lsd": 1})
    with pytest.raises(ParameterFileError, match="expected 6 values"):
        write_refined_params(tmp_path / "bad.txt", geometry, wavelength_angstrom=0.17, space_group=225,
                             lattice=[5.4], eta_bin_size_deg=5)
    assert not (tmp_path / "bad.txt").exists()
