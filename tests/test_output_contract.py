"""The output contract (docs/cli.md, "Output contract"): a run leaves one complete output set or none.

Bad output locations are refused before any work (exit 2, one line naming the flag); a FAILED re-run
replaces an earlier converged set (no stale refined parameters); an interrupt or an error while writing
leaves the folder exactly as it was (exit 130 / 143 for SIGINT / SIGTERM); ``autocal.log`` is streamed.
Regression tests of the reliability issue (#12).
"""

from __future__ import annotations

import os
import signal

import pytest

from midas_ref import atomic, outputs
from midas_ref.atomic import MAX_NAME_BYTES, OutputSet, check_output_dir, check_output_file
from midas_ref.cli import main
from midas_ref.errors import OutputLocationError
from simulate import simulate, write_simulation
from validation.scenarios import synthetic_config


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """A small noise-free image that calibrates in a few seconds (512², 9 rings)."""
    out = tmp_path_factory.mktemp("sim")
    files = write_simulation(simulate(synthetic_config("small512", "noisefree", 5)), out, "tif")
    return files


@pytest.fixture(scope="module")
def converged(sim, tmp_path_factory):
    """A folder holding a converged calibration (copied per test with :func:`snapshot`)."""
    out = tmp_path_factory.mktemp("converged") / "cal"
    assert main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir", str(out),
                 "--quiet"]) == 0
    return out


def snapshot(folder):
    """Every file below ``folder`` (hidden ones too) → its bytes."""
    if not folder.exists():
        return None
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_of(folder, tmp_path):
    import shutil

    target = tmp_path / "cal"
    shutil.copytree(folder, target)
    return target


def one_error_line(capsys, command: str, *needles: str) -> str:
    """The run's stderr ends in exactly one error line (progress lines may come before it), no traceback."""
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if "error" in line.lower() or "Traceback" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert errors[0].startswith(f"midas-ref {command}: error:"), err
    for needle in needles:
        assert needle in errors[0], (needle, errors[0])
    return errors[0]


# ---- 1. bad output locations, refused before the work -----------------------------------------------

def bad_locations(tmp_path):
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    return {"is a file": a_file, "under a file": a_file / "sub", "name too long": tmp_path / ("n" * 300)}


@pytest.mark.parametrize("kind", ["is a file", "under a file", "name too long"])
def test_calibrate_out_dir_refused_before_the_work(sim, tmp_path, capsys, kind):
    out = bad_locations(tmp_path)[kind]
    code = main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir", str(out)])
    assert code == 2
    line = one_error_line(capsys, "calibrate", "--out-dir")
    assert ("255" in line) if kind == "name too long" else ("file" in line)


def test_save_plots_hdf_naming_a_folder(sim, tmp_path, capsys):
    (tmp_path / "cal" / "dump.h5").mkdir(parents=True)
    code = main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir",
                 str(tmp_path / "cal"), "-SavePlotsHDF", "dump.h5"])
    assert code == 2
    one_error_line(capsys, "calibrate", "-SavePlotsHDF", "is a folder")
    assert sorted(p.name for p in (tmp_path / "cal").iterdir()) == ["dump.h5"]


@pytest.mark.parametrize("kind", ["is a file", "under a file"])
def test_panels_out_dir_refused(sim, tmp_path, capsys, kind):
    out = bad_locations(tmp_path)[kind]
    assert main(["panels", str(sim.truth_params), "--out-dir", str(out)]) == 2
    one_error_line(capsys, "panels", "--out-dir")


@pytest.mark.parametrize("target", ["folder", "under a file"])
def test_export_output_refused(sim, tmp_path, capsys, target):
    out = tmp_path if target == "folder" else bad_locations(tmp_path)["under a file"] / "x.poni"
    assert main(["export", "-paramFN", str(sim.truth_params), "-o", str(out)]) == 2
    one_error_line(capsys, "export", "-o")


def test_validate_out_and_db_checked_before_any_case(tmp_path, capsys):
    bad_db = tmp_path / "history.sqlite"
    bad_db.write_text("not a database\n")
    assert main(["validate", "--only", "synthetic/small512/poisson/s1/", "--out", str(tmp_path / "v"),
                 "--db", str(bad_db)]) == 2
    one_error_line(capsys, "validate", "--db", "not an SQLite database")
    assert not (tmp_path / "v").exists()  # nothing ran, nothing was written
    assert main(["validate", "--out", str(bad_locations(tmp_path)["is a file"])]) == 2
    one_error_line(capsys, "validate", "--out")


def test_location_checks_create_nothing(tmp_path):
    deep = tmp_path / "a" / "b" / "c"
    assert check_output_dir(deep, "--out-dir") == deep and not (tmp_path / "a").exists()
    assert check_output_file(deep / "x.txt", "-o") == deep / "x.txt" and not (tmp_path / "a").exists()
    with pytest.raises(OutputLocationError, match=str(MAX_NAME_BYTES)):
        check_output_file(tmp_path / ("é" * 130 + ".txt"), "-o")  # 260 bytes in UTF-8, 134 characters


# ---- 2. a FAILED re-run replaces the converged set ----------------------------------------------------

def test_failed_rerun_removes_the_stale_refined_parameters(sim, converged, tmp_path, capsys):
    out = copy_of(converged, tmp_path)
    assert (out / "refined_MIDAS_params.txt").exists()
    code = main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir", str(out),
                 "--max-iterations", "1", "--quiet"])
    assert code == 1
    assert "FAILED" in capsys.readouterr().err
    names = sorted(p.name for p in out.iterdir())
    assert "refined_MIDAS_params.txt" not in names
    assert {"autocal.log", "calibrant_screen_out.csv", f"{sim.image.name}.corr.csv",
            "midas-ref-calibrate.manifest.json"} <= set(names)
    assert "status FAILED" in (out / "autocal.log").read_text()
    assert not [n for n in names if n.startswith(".")]  # no staging left behind


# ---- 3. interrupts and errors while writing leave the folder as it was --------------------------------

def _interrupt_in(monkeypatch, name, action):
    real = getattr(outputs, name)

    def wrapped(*args, **kwargs):
        real(*args, **kwargs)
        action()

    monkeypatch.setattr(outputs, name, wrapped)


@pytest.mark.parametrize("how, code", [("sigint", 130), ("sigterm", 143), ("error", 2)])
def test_interrupt_or_error_while_writing_leaves_the_previous_set(sim, converged, tmp_path, capsys, monkeypatch,
                                                                  how, code):
    out = copy_of(converged, tmp_path)
    before = snapshot(out)

    def action():
        if how == "sigint":
            raise KeyboardInterrupt
        if how == "sigterm":
            os.kill(os.getpid(), signal.SIGTERM)  # the command's handler raises where the process is
        raise OSError(28, "No space left on device")

    if how == "error":
        monkeypatch.setattr(outputs, "save_plots_hdf", lambda *a, **k: action())
    else:
        _interrupt_in(monkeypatch, "write_screen_out", action)
    got = main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir", str(out),
                "-SavePlotsHDF", "dump.h5", "--quiet"])
    assert got == code
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert snapshot(out) == before  # byte for byte, and no hidden staging files


def test_interrupt_swallowed_by_a_writer_still_does_not_commit(sim, tmp_path, capsys, monkeypatch):
    """h5py may swallow KeyboardInterrupt inside its callbacks: the recorded signal still stops the commit."""
    def swallowing_writer(*args, **kwargs):
        atomic.note_signal(signal.SIGINT)  # what the command's handler records before raising

    monkeypatch.setattr(outputs, "save_plots_hdf", swallowing_writer)
    out = tmp_path / "new" / "cal"
    got = main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir", str(out),
                "-SavePlotsHDF", "dump.h5", "--quiet"])
    assert got == 130
    assert not (tmp_path / "new").exists()  # the folders the run created are gone again
    capsys.readouterr()


def test_output_set_replaces_as_a_unit(tmp_path):
    out = tmp_path / "set"
    with OutputSet(out, "demo", replaces=("old.txt",)) as outset:
        outset.path("a.txt").write_text("1")
        outset.path("b.txt").write_text("1")
        outset.commit()
    (out / "old.txt").write_text("from a run before manifests")
    with OutputSet(out, "demo") as outset:
        outset.path("a.txt").write_text("2")
        assert not (out / "a.txt").read_text() == "2"  # nothing is in place before the commit
        outset.commit()
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "demo.manifest.json", "old.txt"]
    assert (out / "a.txt").read_text() == "2"
    with pytest.raises(ZeroDivisionError), OutputSet(out, "demo") as outset:
        outset.path("a.txt").write_text("3")
        1 / 0
    assert (out / "a.txt").read_text() == "2" and sorted(p.name for p in out.iterdir())[0] == "a.txt"


# ---- 4, 5, 13: inputs that would give a wrong result are refused first ---------------------------------

def test_panel_layout_that_does_not_tile_the_image(sim, tmp_path, capsys):
    params = tmp_path / "panels.txt"
    params.write_text(sim.truth_params.read_text() + "NPanelsY 2\nNPanelsZ 2\nPanelSizeY 250\nPanelSizeZ 256\n"
                      "PanelGapsY 10\nPanelGapsZ 0\n")
    assert main(["panels", str(params), "--out-dir", str(tmp_path / "out")]) == 2
    one_error_line(capsys, "panels", "PanelSizeY", "2 × PanelSizeY 250 + PanelGapsY (10) = 510 px", "512")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("value", ["0", "-0.17"])
def test_export_refuses_a_wavelength_that_is_no_wavelength(sim, tmp_path, capsys, value):
    params = tmp_path / "p.txt"
    params.write_text(sim.truth_params.read_text() + f"Wavelength {value}\n")
    assert main(["export", "-paramFN", str(params), "-o", str(tmp_path / "x.poni")]) == 2
    one_error_line(capsys, "export", "Wavelength", "> 0", "line")
    assert not (tmp_path / "x.poni").exists()


def test_calibrate_panels_without_layout_refused_before_the_work(sim, tmp_path, capsys):
    out = tmp_path / "cal"
    assert main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--panels",
                 "--out-dir", str(out)]) == 2
    one_error_line(capsys, "calibrate", "no panel layout")
    assert not out.exists()


# ---- 15, 16 -----------------------------------------------------------------------------------------------

def test_autocal_log_is_streamed(sim, tmp_path, monkeypatch, capsys):
    """At the first iteration the log of the running calibration already holds the header and the guesses."""
    from midas_ref import autocal

    seen = {}
    real = autocal.calibrate

    def spying(*args, progress=None, **kwargs):
        def spy(event, info):
            if event == "iteration" and not seen:
                progress(event, info)
                staged = [p for p in (tmp_path / "cal").glob(".midas-ref-calibrate-run-*/autocal.log")]
                seen["text"] = staged[0].read_text()
                return
            progress(event, info)
        return real(*args, progress=spy, **kwargs)

    monkeypatch.setattr(autocal, "calibrate", spying)
    assert main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir",
                 str(tmp_path / "cal"), "--quiet"]) == 0
    assert "INFO - input:" in seen["text"] and "INFO - guess " in seen["text"] and "iteration 1" in seen["text"]
    final = (tmp_path / "cal" / "autocal.log").read_text()
    assert final.startswith(seen["text"]) and "status CONVERGED" in final
    capsys.readouterr()


def test_negative_number_in_scientific_notation_is_a_value(sim, tmp_path, capsys):
    assert main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir",
                 str(tmp_path / "cal"), "-StoppingStrain", "-1e-4"]) == 2
    one_error_line(capsys, "calibrate", "StoppingStrain must be > 0")


def test_negative_lsd_guess_speaks_the_flag(sim, tmp_path, capsys):
    assert main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(sim.params), "--out-dir",
                 str(tmp_path / "cal"), "-LsdGuess", "-5"]) == 2
    line = one_error_line(capsys, "calibrate", "-LsdGuess")
    assert "d_min" not in line and "angstrom" not in line


def test_panels_quiet_prints_no_parameter_box(sim, tmp_path, capsys):
    params = tmp_path / "panels.txt"
    params.write_text(sim.truth_params.read_text() + "NPanelsY 2\nNPanelsZ 1\nPanelSizeY 256\nPanelSizeZ 512\n"
                      "PanelGapsY 0\nnIterations 1\n")
    assert main(["panels", str(params), "--out-dir", str(tmp_path / "out"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "┌" not in captured.err and "Indices per Panel" in captured.out


def test_validate_compare_naming_a_folder(tmp_path, capsys):
    (tmp_path / "old").mkdir()
    assert main(["validate", "--only", "synthetic/small512/poisson/s1/", "--out", str(tmp_path / "v"),
                 "--compare", str(tmp_path / "old")]) == 2
    one_error_line(capsys, "validate", "--compare", "is a folder")


def test_rings_hkls_csv_naming_a_folder(sim, tmp_path, capsys):
    assert main(["rings", "-paramFN", str(sim.truth_params), "--hkls-csv", str(tmp_path)]) == 2
    one_error_line(capsys, "rings", "--hkls-csv", "is a folder")


def test_closed_pipe_is_not_a_traceback(sim, tmp_path):
    """``midas-ref rings … | head -1``: the reader leaving early ends the command quietly. The table must
    outgrow the pipe buffer (64 KiB) for the write to fail: a 9 Å cubic cell without Lsd lists ~100 kB."""
    import subprocess
    import sys

    params = tmp_path / "big.txt"
    params.write_text("".join(line + "\n" for line in sim.truth_params.read_text().splitlines()
                              if line.split()[:1] not in (["Lsd"], ["LatticeConstant"]))
                      + "LatticeConstant 9 9 9 90 90 90\n")
    proc = subprocess.run(f"{sys.executable} -m midas_ref rings -paramFN {params} | head -1",
                          shell=True, capture_output=True, text=True, check=False)
    assert proc.stdout.startswith("# space group 225") and "Traceback" not in proc.stderr, proc.stderr


def test_negative_tolerance_is_refused(sim, tmp_path, capsys):
    params = tmp_path / "p.txt"
    params.write_text(sim.params.read_text() + "tolBC -1\n")
    assert main(["calibrate", "-dataFN", str(sim.image), "-paramFN", str(params), "--out-dir",
                 str(tmp_path / "cal")]) == 2
    one_error_line(capsys, "calibrate", "tolBC", "line", ">= 0")
    assert not (tmp_path / "cal").exists()
