"""The validation harness's pieces: reference conversions, legacy parsers, SQLite history, gates, HTML, CRLB.

The end-to-end quick suite (the CI gate) is tests/test_validate_quick.py; Dask is tests/test_validation_dask.py.
"""

from __future__ import annotations

import copy
import math
import sqlite3
from dataclasses import replace
from html.parser import HTMLParser

import numpy as np
import pytest
from conftest import shared_file

from midas_ref.cli import main
from midas_ref.detector import Geometry
from validation.crlb import crlb_sigmas, fisher_information
from validation.gates import SYNTHETIC_GATES, evaluate_gates
from validation.legacy import legacy_programs, legacy_truth
from validation.real import hexrd_beam_point, reference_geometry, rotation_from_exponential_map
from validation.runner import new_record, run_case
from validation.scenarios import Case, suite_cases, synthetic_config
from validation.shared import elapsed_seconds, mean_values_block
from validation.store import StoreError, compare_runs, load_run, write_run
from validation.suite import run_validation
from validation.tables import build_tables, html_table

# ---- reference geometries of the real data -------------------------------------------------------------

def test_exponential_map_is_rodrigues():
    from scipy.spatial.transform import Rotation

    omega = np.array([0.3, -0.2, 0.7])
    assert np.allclose(rotation_from_exponential_map(omega), Rotation.from_rotvec(omega).as_matrix(), atol=1e-14)


def test_hexrd_beam_point_untilted_panel():
    # panel centre 2 mm right of and 1 mm above the beam: the beam hits 10 px left and 5 px below the centre
    row, col, dist = hexrd_beam_point([0, 0, 0], [2.0, 1.0, -500.0], rows=100, cols=200, pixel_mm=0.2)
    assert (row, col, dist) == pytest.approx((49.5 + 5, 99.5 - 10, 500.0), abs=1e-12)


@pytest.mark.parametrize("name, row, col, lsd_mm", [("ge_ceo2_aps1id", 1007.32, 1030.77, 1050.743),
                                                    ("pilatus2m_ceo2_aps1id", 807.08, 774.83, 739.783)])
def test_hexrd_reference_matches_provenance(name, row, col, lsd_mm):
    """The conversion reproduces the beam point and distance derived in each folder's PROVENANCE.md."""
    folder = shared_file("data", "real", name)
    ref = reference_geometry(name, folder)
    assert ref["bc_z_px"] == pytest.approx(row, abs=0.005) and ref["bc_y_px"] == pytest.approx(col, abs=0.005)
    assert ref["lsd_um"] / 1000 == pytest.approx(lsd_mm, abs=5e-4)


def test_poni_reference_is_the_flipped_frame():
    """PROVENANCE.md: beam at column 469.48, row 514.44 (pixel edges) of the flipped image."""
    ref = reference_geometry("pilatus1m_ceo2_cpf", shared_file("data", "real", "pilatus1m_ceo2_cpf"))
    assert ref["bc_y_px"] == pytest.approx(469.479 - 0.5, abs=1e-3)
    assert ref["bc_z_px"] == pytest.approx(514.439 - 0.5, abs=1e-3)


# ---- legacy outputs ----------------------------------------------------------------------------------------

def test_legacy_outputs_parse():
    folder = shared_file("legacy", "ceo2_2048_tilt_dist")
    block = mean_values_block((folder / "out_CalibrantOMP.txt").read_text())
    assert block["Lsd"] == [1000638.728870199178] and block["BC"] == [1027.298790975648, 1021.299945242068]
    assert elapsed_seconds((folder / "time_CalibrantOMP.txt").read_text()) == pytest.approx(10.83)
    programs = legacy_programs(folder, legacy_truth(folder))
    # legacy/README.md: +638.7 µm one call, +636.5 µm for the loop (6 calls, 33.3 s), CPS +3.5 µm, 297 µε
    assert programs["CalibrantOMP@00074b47"]["err_lsd_um"] == pytest.approx(638.73, abs=0.01)
    loop = programs["AutoCalibrate@00074b47"]
    assert loop["err_lsd_um"] == pytest.approx(636.46, abs=0.01) and loop["iterations"] == 6
    assert loop["time_total_s"] == pytest.approx(33.3)
    cps = programs["CalibrantPanelShiftsOMP"]
    assert cps["err_lsd_um"] == pytest.approx(3.46, abs=0.01) and cps["mean_strain"] == pytest.approx(2.968e-4, rel=1e-3)
    assert cps["time_total_s"] == pytest.approx(48.47)


# ---- records, gates, SQLite --------------------------------------------------------------------------------

def fake_record(case: Case, err_lsd=0.5, err_bc=0.001, err_tilt=2e-4, strain=1e-6, t=4.0) -> dict:
    r = new_record(case)
    r.update(status="CONVERGED", seconds=t + 1)
    r["metrics"] = {"ours": {"err_lsd_um": err_lsd, "err_bc_px": err_bc, "err_tilt_deg": err_tilt,
                             "mean_strain": strain, "time_calibrate_s": t, "iterations": 5.0, "peak_rss_mib": 300.0},
                    "truth": {"lsd_um": 1e6, "peak_counts": math.inf}}
    r["rings"] = [{"ring_nr": 1, "two_theta_deg": 3.1, "n_points": 70, "mean_strain": 1e-7, "mean_abs_strain": 2e-7,
                   "sem": 1e-8, "excluded": False}]
    r["points"] = {"y_px": [1.0, 2.0], "z_px": [3.0, 4.0], "eta_deg": [10.0, 20.0], "ring_nr": [1, 1],
                   "strain": [1e-7, -1e-7], "outlier": [False, True]}
    r["gates"] = evaluate_gates(r)
    return r


def run_meta(**changes):
    meta = {"started": "2026-01-01T00:00:00", "finished": "2026-01-01T00:01:00", "suite": "quick", "seed": 1,
            "code": {"describe": "v0-1-gabc", "commit": "abc", "package": "0.1.0"}, "machine": {"cpu_count": 2},
            "options": {}, "wall_s": 60.0}
    meta.update(changes)
    return meta


def test_gates_use_the_issue_bounds():
    ok = fake_record(Case("synthetic", "ge2048", "noisefree", 1, "near"), err_lsd=1.4, err_bc=0.0029,
                     err_tilt=0.00099, strain=1.9e-6)
    assert [g["passed"] for g in ok["gates"]] == [True] * 4
    bad = fake_record(Case("synthetic", "ge2048", "noisefree", 1, "near"), err_lsd=-1.6)
    assert [g["quantity"] for g in bad["gates"] if not g["passed"]] == ["err_lsd_um"]
    poisson = fake_record(Case("synthetic", "ge2048", "poisson", 1, "far"), err_lsd=2.9, err_bc=0.0061)
    assert [g["quantity"] for g in poisson["gates"] if not g["passed"]] == ["err_bc_px"]
    failed_run = fake_record(Case("synthetic", "ge2048", "poisson", 1, "near"))
    failed_run["status"] = "FAILED"
    assert not any(g["passed"] for g in evaluate_gates(failed_run))
    assert fake_record(Case("synthetic", "varex2880", "poisson", 1, "near"))["gates"] == []


def test_store_round_trip_and_compare(tmp_path):
    db = tmp_path / "r.sqlite"
    cases = [Case("synthetic", "ge2048", "noisefree", 1, "near"), Case("synthetic", "ge2048", "poisson", 1, "near")]
    old = [fake_record(cases[0]), fake_record(cases[1], err_lsd=1.0, t=4.0)]
    first = write_run(db, run_meta(), old, [{"name": "b", "group": "g", "mean_s": 1.0, "min_s": 0.9, "max_s": 1.1,
                                             "stddev_s": 0.1, "rounds": 3, "source": "x.json"}])
    loaded = load_run(db, first)
    assert [r["case_id"] for r in loaded["records"]] == [c.case_id for c in cases]
    a, b = old[0], loaded["records"][0]
    assert b["metrics"] == a["metrics"] and b["rings"] == a["rings"] and b["points"] == a["points"]
    assert b["gates"] == a["gates"] and loaded["benchmarks"][0]["mean_s"] == 1.0
    # second run: case 0 got worse beyond the thresholds (and fails its gate), case 1 faster and more accurate
    new = [fake_record(cases[0], err_lsd=2.0), fake_record(cases[1], err_lsd=0.2, t=1.0)]
    second = write_run(db, run_meta(), new)
    assert second == first + 1
    changes = compare_runs(db, db, second)  # "old" = latest of db = second → nothing changes
    assert changes == []
    old_db = tmp_path / "old.sqlite"
    write_run(old_db, run_meta(), old)
    changes = {(c["case_id"], c["what"]): c["verdict"] for c in compare_runs(old_db, db, second)}
    assert changes[(cases[0].case_id, "err_lsd_um")] == "worse"
    assert changes[(cases[0].case_id, "gate err_lsd_um")] == "worse"
    assert changes[(cases[1].case_id, "err_lsd_um")] == "better"
    assert changes[(cases[1].case_id, "time_calibrate_s")] == "better"
    assert (cases[0].case_id, "err_bc_px") not in changes  # unchanged


def test_store_refuses_foreign_files(tmp_path):
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as conn:
        conn.execute("CREATE TABLE x (a)")
    with pytest.raises(StoreError, match="not a midas-ref results database"):
        load_run(other)
    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(StoreError):
        load_run(junk)


def test_table_cells_carry_their_source():
    r = fake_record(Case("synthetic", "ge2048", "poisson", 1, "near"), err_lsd=-1.23456)
    table = build_tables([r])[0]
    cell = next(c for c in table.rows[0] if c.metric == "err_lsd_um")
    assert cell.text == "1.235" and cell.value == -1.23456 and cell.source == "ours"
    assert 'data-metric="err_lsd_um" data-value="-1.23456">1.235<' in html_table(table)


def test_suites():
    quick = suite_cases("quick", 3)
    assert Case("synthetic", "ge2048", "noisefree", 3, "near") in quick
    assert sum(c.kind == "crlb" for c in quick) == 1
    crlb = next(c for c in quick if c.kind == "crlb")
    assert all(Case("synthetic", crlb.name, crlb.noise, crlb.seed + k, "near") in quick for k in range(crlb.n_seeds))
    full = suite_cases("full", 1)
    assert len(full) > 3 * len(quick) and len({c.case_id for c in full}) == len(full)


# ---- CRLB -------------------------------------------------------------------------------------------------

def tiny_config():
    cfg = synthetic_config("small512", "poisson", 1)
    g = Geometry(lsd_um=150_000.0, bc_y_px=60.3, bc_z_px=63.8, px_um=200.0, n_pixels_y=128, n_pixels_z=128,
                 ty_deg=0.4, tz_deg=-0.3)
    return replace(cfg, geometry=g)


def test_fisher_information_of_the_background_is_exact():
    """∂μ/∂b = 1 exactly, so I_bb = Σ 1/μ: checks the finite differences and the Poisson weighting."""
    from simulate import render_expected

    cfg = tiny_config()
    info, names = fisher_information(cfg, ["background_counts"])
    mu = render_expected(cfg, adaptive=False)
    assert names == ["background_counts"]
    assert info[0, 0] == pytest.approx(np.sum(1.0 / mu), rel=1e-9)


def test_crlb_does_not_depend_on_the_step():
    cfg = tiny_config()
    params = ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg", "peak_counts", "fwhm_px", "background_counts")
    a = crlb_sigmas(cfg, params)
    b = crlb_sigmas(cfg, params, steps={"lsd_um": 5.0, "bc_y_px": 0.005, "bc_z_px": 0.005, "ty_deg": 0.005,
                                         "tz_deg": 0.005, "fwhm_px": 0.005})
    for name in params:
        assert b[name] == pytest.approx(a[name], rel=1e-3), name
    # more counts, smaller bound: σ ∝ 1/√(counts) when background and rings scale together
    brighter = replace(cfg, intensity=replace(cfg.intensity, peak_counts=4 * cfg.intensity.peak_counts),
                       response=replace(cfg.response, background_counts=4 * cfg.response.background_counts))
    c = crlb_sigmas(brighter, params)
    assert c["lsd_um"] == pytest.approx(a["lsd_um"] / 2, rel=1e-6)


def test_crlb_matches_the_scatter_of_a_simple_estimator():
    """Monte Carlo on the tiny case: the ML estimate of the background level alone (known rings) is the mean
    of (x − rings)… weighted; its scatter over 200 Poisson draws must match σ_CRLB of that 1-parameter model."""
    from simulate import render_expected

    cfg = tiny_config()
    info, _ = fisher_information(cfg, ["background_counts"])
    sigma = 1 / math.sqrt(info[0, 0])
    mu = render_expected(cfg, adaptive=False)
    rings = mu - cfg.response.background_counts
    rng = np.random.default_rng(5)
    estimates = []
    for _ in range(200):
        x = rng.poisson(mu)
        b = cfg.response.background_counts
        for _ in range(20):  # Newton on the Poisson log-likelihood in b
            lam = rings + b
            b -= -np.sum(x / lam - 1) / np.sum(x / lam ** 2)
        estimates.append(b)
    assert np.std(estimates) == pytest.approx(sigma, rel=0.15)


# ---- the command on a tiny matrix: SQLite, HTML, compare ----------------------------------------------------

class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images, self.cells, self._cell = [], [], None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        if tag == "td" and "data-metric" in attrs:
            self._cell = [attrs, ""]

    def handle_data(self, data):
        if self._cell is not None:
            self._cell[1] += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self.cells.append(tuple(self._cell))
            self._cell = None


def check_report(out, db):
    """Every image the page references exists and decodes as a PNG; every number equals the SQLite value."""
    from matplotlib.image import imread

    page = _Page()
    page.feed((out / "report.html").read_text())
    assert page.images and page.cells
    for src in page.images:
        image = imread(out / src)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0
    with sqlite3.connect(db) as conn:
        run_id = conn.execute("SELECT max(run_id) FROM runs").fetchone()[0]
        stored = {(c, s, m): v for c, s, m, v in conn.execute(
            "SELECT case_id, source, metric, value FROM metrics WHERE run_id = ?", (run_id,))}
    checked = 0
    for attrs, text in page.cells:
        key = (attrs["data-case"], attrs["data-source"], attrs["data-metric"])
        if attrs["data-value"] == "":
            assert key not in stored or stored[key] is None
            continue
        assert float(attrs["data-value"]) == stored[key], key
        checked += 1
    assert checked >= 10
    return page, checked


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("validate")
    cases = [Case("synthetic", "small512", "noisefree", 1, "near"), Case("synthetic", "small512", "poisson", 1, "near"),
             Case("legacy", "ceo2_1024_ge_dark")]
    outcome = run_validation("quick", out, cases=cases)
    return out, outcome


def test_tiny_run_writes_sqlite_and_html(tiny_run):
    out, outcome = tiny_run
    assert outcome.exit_code == 0 and outcome.run_id == 1
    db = out / "results.sqlite"
    page, checked = check_report(out, db)
    assert any("residuals" in src for src in page.images) and "figures/error_vs_noise.png" in page.images
    stored = load_run(db)
    noise_free = next(r for r in stored["records"] if r["case_id"] == "synthetic/small512/noisefree/s1/near")
    assert noise_free["status"] == "CONVERGED"
    ours = noise_free["metrics"]["ours"]
    assert abs(ours["err_lsd_um"]) < 0.5 and ours["err_bc_px"] < 0.003 and ours["time_calibrate_s"] > 0
    assert ours["peak_rss_mib"] > 50 and len(noise_free["points"]["y_px"]) > 300 and len(noise_free["rings"]) >= 6
    assert stored["run"]["code_commit"] != "" and stored["run"]["machine"]["cpu_count"] >= 1


def test_command_line_compare(tiny_run, tmp_path, capsys):
    """``midas-ref validate --only … --compare OLD``: the run, its table, and what got better than OLD."""
    out, _ = tiny_run
    record = copy.deepcopy(next(r for r in load_run(out / "results.sqlite")["records"]
                                if r["case_id"] == "synthetic/small512/poisson/s1/near"))
    record["metrics"]["ours"]["err_lsd_um"] = 10.0  # an "older" run that was 10 µm off
    # …whose times are left out: they move with the machine's load (compared only when both runs have them)
    record["metrics"]["ours"] = {k: v for k, v in record["metrics"]["ours"].items() if not k.startswith("time_")}
    old = tmp_path / "old.sqlite"
    write_run(old, run_meta(), [record])
    code = main(["validate", "--suite", "quick", "--only", "synthetic/small512/poisson/s1/", "--out",
                 str(tmp_path / "v"), "--compare", str(old), "--quiet"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "synthetic/small512/poisson/s1/near | CONVERGED" in captured.out
    assert "BETTER (1)" in captured.out and "err_lsd_um: 10 →" in captured.out, captured.out[-3000:]
    assert (tmp_path / "v" / "compare.txt").read_text().startswith("compared with")
    check_report(tmp_path / "v", tmp_path / "v" / "results.sqlite")


@pytest.mark.parametrize("args, needle", [
    (["--compare", "no-such.sqlite"], "no such results database"),
    (["--workers", "0"], "--workers"),
    (["--only", "no-such-case"], "no case of the quick suite matches"),
])
def test_bad_input_is_one_line(args, needle, tmp_path, capsys):
    code = main(["validate", "--out", str(tmp_path / "v"), "--quiet", *args])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and needle in err and "Traceback" not in err


def test_scheduler_without_dask_is_one_line(tmp_path, capsys, monkeypatch):
    import validation.dask_runner as dr

    monkeypatch.setattr(dr, "dask_available", lambda: False)
    code = main(["validate", "--out", str(tmp_path / "v"), "--quiet", "--only", "synthetic/ge2048/noisefree",
                 "--scheduler", "tcp://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code == 2 and "dask.distributed is not installed" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("name, terms", [("small512", ["p0", "p1", "p2"]), ("small512_nodist", [])])
def test_synthetic_distortion_is_chosen_from_the_image(name, terms):
    """A synthetic case, calibrated from its files as the command does (no tolP key): the image's distortion
    is recovered, and none is fitted where the image has none."""
    record = run_case(Case("synthetic", name, "poisson", 1, "near"))
    assert record["status"] == "CONVERGED", record["reason"]
    assert record["info"]["distortion_terms"] == terms
    ours = record["metrics"]["ours"]
    if terms:
        assert abs(ours["err_p0"]) < 5e-6 and abs(ours["err_p2"]) < 5e-6 and ours["err_p1p3"] < 1e-5
    else:
        assert ours["p0"] == ours["p1"] == ours["p2"] == ours["p4"] == 0.0
    assert abs(ours["err_lsd_um"]) < 1.0 and ours["err_bc_px"] < 0.003


@pytest.mark.slow
@pytest.mark.parametrize("name, terms", [("ge2048", ["p0", "p1", "p2"]), ("ge2048_nodist", [])])
def test_ge2048_distortion_is_chosen_from_the_image(name, terms):
    record = run_case(Case("synthetic", name, "poisson", 1, "near"))
    assert record["status"] == "CONVERGED", record["reason"]
    assert record["info"]["distortion_terms"] == terms
    ours = record["metrics"]["ours"]
    if terms:
        assert abs(ours["err_p0"]) < 1e-6 and abs(ours["err_p2"]) < 1e-6 and ours["err_p1p3"] < 1e-6
    else:
        assert ours["p0"] == ours["p1"] == ours["p2"] == ours["p4"] == 0.0
    gate = SYNTHETIC_GATES[("ge2048", "poisson")]
    assert abs(ours["err_lsd_um"]) <= gate["err_lsd_um"] and ours["err_bc_px"] <= gate["err_bc_px"]
