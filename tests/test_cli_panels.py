"""``midas-ref panels`` and ``midas-ref calibrate --panels``: outputs, formats, re-runs, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import tifffile

from midas_ref.cli import main
from midas_ref.panels import read_panel_shifts
from midas_ref.params import geometry_from_params, panel_layout_from_params, read_parameter_file
from simulate import scenario, simulate, write_simulation

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("p2m")
    cfg = scenario("pilatus2m_noisefree")
    # shifts only (rotations are not observable, see test_panel_refine.py)
    cfg = dataclasses.replace(cfg, panels=dataclasses.replace(
        cfg.panels, shifts=tuple(dataclasses.replace(s, dtheta_deg=0.0) for s in cfg.panels.shifts)))
    write_simulation(simulate(cfg), out, "tif", perturb=True)
    params = out / "params.txt"
    # the start of a panel run is a calibrated geometry: use the truth's, nudged
    truth = read_parameter_file(out / "truth_params.txt")
    g = geometry_from_params(truth)
    # the simulator's truth is in the FixPanelID 0 gauge: these runs compare shifts and BC with it there
    # (the mean gauge: test_mean_gauge_leaves_no_common_shift)
    pf = read_parameter_file(params).with_values(Lsd=g.lsd_um + 200, BC=(g.bc_y_px + 0.2, g.bc_z_px - 0.1),
                                                 ty=g.ty_deg, tz=g.tz_deg, nIterations=3, tolShifts=1.5, tolP=0,
                                                 PanelGauge="fixed")
    params.write_text(pf.to_text())
    return out


def run(command, args, capsys):
    code = main([command, *map(str, args)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_outputs_formats_and_rerun(sim_dir, tmp_path, capsys):
    params = tmp_path / "params.txt"
    text = (sim_dir / "params.txt").read_text().replace(f"PanelShiftsFile {sim_dir}/panelshifts.txt",
                                                        "PanelShiftsFile shifts.txt")
    params.write_text(text)
    code, out, err = run("panels", [params, 2, "--out-dir", tmp_path], capsys)
    assert code == 0, err
    # boxed summary of the parsed keys, progress per iteration, the legacy closing blocks
    assert "│ FixPanelID" in err and "Iter  1/3  MeanStrain" in err
    assert "Indices per Panel" in out and "*******************Mean Values*******************" in out
    assert out.rstrip().splitlines()[-1].startswith("NPoints")
    lines = (tmp_path / "shifts.txt").read_text().splitlines()
    assert lines[0] == "# ID dY dZ dTheta dLsd dP2" and len(lines) == 25
    layout = panel_layout_from_params(read_parameter_file(params))
    fitted = read_panel_shifts(tmp_path / "shifts.txt", layout)
    truth = read_panel_shifts(sim_dir / "panelshifts_truth.txt", layout)
    err_px = [max(abs(a.dy_px - b.dy_px), abs(a.dz_px - b.dz_px)) for a, b in zip(fitted.shifts, truth.shifts)
              if a.id not in (0, 11, 12)]  # 0 fixed; 11, 12 carry no ring
    assert max(err_px) < 0.02
    shifts_img = tifffile.imread(tmp_path / "shifts.txt.shifts.tif")
    assert shifts_img.dtype == np.float32 and shifts_img.shape == (1679, 1475)
    assert shifts_img[200, 100] == -1.0  # row 200 is in the first 17-px gap
    s1 = fitted.shifts[1]
    assert shifts_img[300, 100] == pytest.approx(np.hypot(s1.dy_px, s1.dz_px), abs=1e-6)
    strain_img = tifffile.imread(tmp_path / "shifts.txt.strain.tif")
    assert strain_img.shape == (1679, 1475) and strain_img[200, 100] == -1.0 and 0 <= strain_img[300, 100] < 5
    refined = read_parameter_file(tmp_path / "refined_panel_params.txt")
    g = geometry_from_params(refined)
    g_true = geometry_from_params(read_parameter_file(sim_dir / "truth_params.txt"))
    assert abs(g.lsd_um - g_true.lsd_um) < 1.5 and abs(g.bc_y_px - g_true.bc_y_px) < 0.003
    assert refined.get("FileStem") == "CeO2" and refined.get("NPanelsY") == 3  # re-runs as is
    history = (tmp_path / "CeO2_convergence_history.csv").read_text().splitlines()
    assert history[0].startswith("Iter,MeanStrain_ue,StdStrain_ue,Lsd") and len(history) == 4
    corr = (tmp_path / "CeO2.corr.csv").read_text().splitlines()
    assert corr[0].startswith("%Eta Strain RadFit") and len(corr[1].split()) == 16
    # a second run starts from the shifts file it wrote
    code, out, err = run("panels", [params, "--out-dir", tmp_path], capsys)
    assert code == 0 and "starting from the panel corrections in" in err


def test_calibrate_with_panels(sim_dir, tmp_path, capsys, monkeypatch):
    data = sim_dir / "CeO2_000001.tif"
    # --out-dir as a relative path (as typed): the shifts file lands in it, not in out/out/
    monkeypatch.chdir(tmp_path)
    code, out, err = run("calibrate", ["-dataFN", data, "-paramFN", sim_dir / "params.txt", "--panels",
                                       "--out-dir", "out", "--quiet"], capsys)
    assert code == 0, err
    tmp_path = tmp_path / "out"
    assert (tmp_path / "refined_MIDAS_params.txt").exists() and (tmp_path / "panelshifts.txt").exists()
    assert not (tmp_path / "out").exists()
    assert "Indices per Panel" in out
    g = geometry_from_params(read_parameter_file(tmp_path / "refined_panel_params.txt"))
    g_true = geometry_from_params(read_parameter_file(sim_dir / "truth_params.txt"))
    assert abs(g.bc_y_px - g_true.bc_y_px) < 0.003 and abs(g.bc_z_px - g_true.bc_z_px) < 0.003


def test_mean_gauge_leaves_no_common_shift(sim_dir, tmp_path, capsys):
    params = _edit(sim_dir, tmp_path, drop=("PanelGauge", "PanelShiftsFile"),
                   add="PanelShiftsFile shifts.txt\nPanelGauge mean\n")
    code, out, err = run("panels", [params, "--out-dir", tmp_path / "out"], capsys)
    assert code == 0, err
    assert "PanelGauge mean" in out
    layout = panel_layout_from_params(read_parameter_file(params))
    fitted = read_panel_shifts(tmp_path / "out" / "shifts.txt", layout)
    movable = [s for s in fitted.shifts if s.id not in (11, 12)]  # 11, 12 carry no ring
    # no panel is held still, and the corrections have no common shift left (the zero is the fit's
    # information-weighted mean; the plain mean differs from it by about the standard error of a mean of
    # the modules' shifts, std/√n ≈ 0.1 px here, against 0.45 px per module)
    assert all(abs(s.dy_px) + abs(s.dz_px) > 0 for s in movable)
    for values in ([s.dy_px for s in movable], [s.dz_px for s in movable]):
        assert abs(np.mean(values)) < np.std(values) / np.sqrt(len(values))


def test_corrections_at_their_bounds_are_warned_one_line_each(sim_dir, tmp_path, capsys):
    # the truth's modules sit up to 0.8 px off: a 0.05 px box holds most of them at a bound
    params = _edit(sim_dir, tmp_path, drop=("tolShifts", "nIterations", "PanelShiftsFile"),
                   add="tolShifts 0.05\nnIterations 1\nPanelShiftsFile shifts.txt\n")
    code, out, err = run("panels", [params, "--out-dir", tmp_path / "out"], capsys)
    assert code == 0, err
    warned = [ln for ln in out.splitlines() if ln.startswith("WARNING: panel ") and "search bound" in ln]
    assert len(warned) >= 10 and any("dy_px" in ln for ln in warned) and any("dz_px" in ln for ln in warned)


def test_bad_panel_gauge_is_one_clear_line(sim_dir, tmp_path, capsys):
    params = _edit(sim_dir, tmp_path, drop=("PanelGauge",), add="PanelGauge median\n")
    code, out, err = run("panels", [params, "--out-dir", tmp_path / "out"], capsys)
    assert code == 2 and "PanelGauge" in err.strip().splitlines()[-1]
    params = _edit(sim_dir, tmp_path, drop=("PanelGauge",), add="PanelGauge average\n")
    code, out, err = run("panels", [params, "--out-dir", tmp_path / "out2", "--optimizer", "nelder-mead"], capsys)
    assert code == 2 and "Nelder" in err.strip().splitlines()[-1]


def _edit(sim_dir, tmp_path, drop=(), add=""):
    lines = [ln for ln in (sim_dir / "params.txt").read_text().splitlines()
             if not any(ln.startswith(k + " ") for k in drop)]
    path = tmp_path / "bad.txt"
    path.write_text("\n".join(lines) + "\n" + add)
    return path


@pytest.mark.parametrize("case, needle", [
    ("no_layout", "NPanelsY"),
    ("missing_file", "not found"),
    ("fix_panel", "FixPanelID"),
    ("wrong_size", "NrPixelsY"),
])
def test_bad_input_is_one_clear_line(case, needle, sim_dir, tmp_path, capsys):
    if case == "no_layout":
        params = _edit(sim_dir, tmp_path, drop=("NPanelsY",))
    elif case == "missing_file":
        params = _edit(sim_dir, tmp_path, drop=("StartNr", "EndNr"), add="StartNr 7\nEndNr 7\n")
    elif case == "fix_panel":
        params = _edit(sim_dir, tmp_path, drop=("FixPanelID",), add="FixPanelID 99\n")
    else:
        params = _edit(sim_dir, tmp_path, drop=("NrPixelsY",), add="NrPixelsY 1400\n")
    out_dir = tmp_path / "out"
    code, out, err = run("panels", [params, "--out-dir", out_dir], capsys)
    assert code == 2
    last = err.strip().splitlines()[-1]
    assert last.startswith("midas-ref panels: error:") and needle in last and "Traceback" not in err
    assert not out_dir.exists() or not any(out_dir.iterdir())


def test_a_legacy_file_with_fix_panel_id_keeps_the_fixed_gauge():
    from midas_ref.inputs import panel_settings_from_params
    from midas_ref.params import parse_parameter_text

    settings = panel_settings_from_params(parse_parameter_text("px 172\nFixPanelID 3\n"))
    assert settings.freedom.gauge == "fixed" and settings.freedom.fix_panel_id == 3
    assert panel_settings_from_params(parse_parameter_text("px 172\nPanelGauge mean\n")).freedom.gauge == "mean"
