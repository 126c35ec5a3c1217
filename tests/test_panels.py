"""Panel layout, panel-shift files and the shift-magnitude image against the legacy goldens."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tifffile
from conftest import shared_file

from midas_ref import GeometryError, PanelLayout, PanelShift, ParameterFileError
from midas_ref.panels import (Panels, panel_bounds, panel_index_map, read_panel_shifts, shift_magnitude_map,
                              write_panel_shifts)

LEGACY16 = PanelLayout(4, 4, 250, 250, (8, 8, 8), (8, 8, 8))


def test_bounds_match_legacy_truth():
    truth = json.loads(shared_file("legacy", "ceo2_1024_panels16", "truth.json").read_text())
    bounds = panel_bounds(LEGACY16)
    assert len(truth["panels"]) == 16
    for panel in truth["panels"]:
        assert tuple(bounds[panel["id"]]) == (panel["yMin"], panel["yMax"], panel["zMin"], panel["zMax"])


def test_index_map_gaps_match_legacy_gap_mask():
    gap_mask = tifffile.imread(shared_file("legacy", "ceo2_1024_panels16", "gapmask.tif"))
    ids = panel_index_map(LEGACY16, (1024, 1024))
    np.testing.assert_array_equal(ids < 0, gap_mask == 1)
    assert ids.max() == 15 and np.bincount(ids[ids >= 0]).tolist() == [250 * 250] * 16


def test_shift_magnitude_matches_legacy_tif():
    folder = ("legacy", "ceo2_1024_panels16")
    panels = read_panel_shifts(shared_file(*folder, "panelshifts.txt"), LEGACY16)
    legacy = tifffile.imread(shared_file(*folder, "panelshifts.txt.shifts.tif"))
    ours = shift_magnitude_map(panels, (1024, 1024))
    assert ours.dtype == np.float32 and legacy.dtype == np.float32
    np.testing.assert_array_equal(ours, legacy)  # bit for bit, as docs/validation.md says


def test_shift_magnitude_of_rotation_is_analytic():
    layout = PanelLayout(1, 1, 101, 51)
    panels = Panels.from_shifts(layout, [PanelShift(0, dy_px=0.3, dz_px=-0.2, dtheta_deg=0.5)])
    mag = shift_magnitude_map(panels, (51, 101))
    th = math.radians(0.5)
    a, b = 100 - 50.0, 50 - 25.0  # corner pixel (y=100, z=50) relative to the centre (50, 25)
    expect = math.hypot(0.3 + a * (math.cos(th) - 1) - b * math.sin(th),
                        -0.2 + a * math.sin(th) + b * (math.cos(th) - 1))
    assert mag[50, 100] == pytest.approx(expect, rel=1e-6)
    assert mag[25, 50] == pytest.approx(math.hypot(0.3, 0.2), rel=1e-6)


def test_panel_shift_file_round_trip(tmp_path):
    rng = np.random.default_rng(42)
    panels = Panels(LEGACY16, tuple(PanelShift(i, *rng.uniform(-1, 1, 3), rng.uniform(-50, 50),
                                               rng.uniform(-1e-4, 1e-4)) for i in range(16)))
    path = tmp_path / "panelshifts.txt"
    write_panel_shifts(path, panels)
    assert path.read_text().splitlines()[0] == "# ID dY dZ dTheta dLsd dP2"
    back = read_panel_shifts(path, LEGACY16)
    for a, b in zip(panels.shifts, back.shifts):
        assert a.id == b.id
        np.testing.assert_allclose([b.dy_px, b.dz_px, b.dtheta_deg, b.dlsd_um, b.dp2],
                                   [a.dy_px, a.dz_px, a.dtheta_deg, a.dlsd_um, a.dp2], atol=5e-11)


def test_short_rows(tmp_path):
    # ids outside the layout are refused (tests/test_input_errors.py), no longer skipped
    path = tmp_path / "shifts.txt"
    path.write_text("# comment\n\n3 0.5 -0.25\n")
    panels = read_panel_shifts(path, LEGACY16)
    assert panels.shifts[3] == PanelShift(3, 0.5, -0.25)
    assert panels.shifts[0] == PanelShift(0)


@pytest.mark.parametrize("text", ["1 0.5\n", "x 1 2\n", "1 1 2 abc\n"])
def test_malformed_shift_file_names_line(tmp_path, text):
    path = tmp_path / "bad.txt"
    path.write_text("# header\n" + text)
    with pytest.raises(ParameterFileError, match="line 2"):
        read_panel_shifts(path, LEGACY16)


def test_layout_validation():
    with pytest.raises(GeometryError, match="gaps_y_px need 2 values"):
        PanelLayout(3, 2, 10, 10, gaps_y_px=(1,), gaps_z_px=(1,))
    with pytest.raises(GeometryError, match="ordered by id"):
        Panels(PanelLayout(1, 2, 5, 5, (), (0,)), (PanelShift(1), PanelShift(0)))
