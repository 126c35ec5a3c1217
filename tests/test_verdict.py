"""The verdict (midas_ref.verdict): checks of the answer itself, on arrays and on adversarial images.

Unit tests feed the check functions numbers with a known answer; the adversarial tests calibrate small
(512²) simulated images with one spoiled input (validation/adversarial.py, the cases of ``midas-ref validate``)
and check the run does not end plain CONVERGED with a wrong geometry, that the reason names the cause, and
that the honest image stays CONVERGED. The CLI test checks exit code 3 and the output contract of a SUSPECT run.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from midas_ref.detector import Geometry
from midas_ref.rings import ring_table
from midas_ref.verdict import (GIVEN_DISTANCE_SUSPECT, Verdict, flip_check, given_distance_check, image_transforms,
                               ring_coverage, wavelength_signature)
from validation.adversarial import ADVERSARIAL_CASES, build_case
from validation.gates import ADVERSARIAL_RIGHT, evaluate_gates
from validation.records import calibrate_file, geometry_errors

G = Geometry(lsd_um=120_000.0, bc_y_px=251.7, bc_z_px=262.4, px_um=200.0, n_pixels_y=512, n_pixels_z=512,
             ty_deg=0.6, tz_deg=-0.4, rho_d_um=72_400.0)


def _ring_strains(delta: float, geometry: Geometry, wavelength: float = 0.4959):
    """Per-ring strains a wavelength error δ leaves after Lsd and p2 took their parts (least squares)."""
    rings = ring_table(225, (5.411651,) * 3 + (90.0,) * 3, wavelength, d_min_angstrom=0.3)
    tth = np.radians([r.two_theta_deg for r in rings])
    tth = tth[(tth < np.pi / 2) & (geometry.lsd_um * np.tan(tth) < geometry.rho_d_um)]
    exact = np.log(np.tan(2 * np.arcsin(np.sin(tth / 2) * (1 + delta))) / np.tan(tth))
    rho2 = (geometry.lsd_um * np.tan(tth) / geometry.rho_d_um) ** 2
    a = np.column_stack([np.ones_like(rho2), rho2])
    coef, *_ = np.linalg.lstsq(a, exact, rcond=None)
    return np.degrees(tth), exact - a @ coef, coef[1]


def test_wavelength_signature_recovers_a_three_percent_error():
    """A +3 % wavelength on a 2θ ≤ 30° image: p2 takes up ≈ ¾·δ·(RhoD/Lsd)², the strains keep the rest;
    the check measures δ from both and fails; the same pattern at +0.5 % passes (below the 1 % bound)."""
    tth, eps, p2 = _ring_strains(0.03, G)
    geometry = Geometry(**{**G.__dict__, "p2": p2})
    sem = np.full(tth.size, 0.5e-6)
    out = wavelength_signature(tth, eps, sem, np.full(tth.size, 50), geometry)
    assert out["delta_lambda_p2"] == pytest.approx(0.03, rel=0.05)
    assert out["delta_lambda"] == pytest.approx(0.03, rel=0.1)
    assert not out["passed"]
    tth, eps, p2 = _ring_strains(0.005, G)
    assert wavelength_signature(tth, eps, sem, np.full(tth.size, 50),
                                Geometry(**{**G.__dict__, "p2": p2}))["passed"]


def test_wavelength_signature_ignores_a_large_distortion_without_the_pattern():
    """A real detector's radial distortion (p2 = −1e-3, what a −1.8 % error would give on a narrow image)
    with strains that carry noise only: no alarm."""
    narrow = Geometry(lsd_um=1_050_000.0, bc_y_px=1024, bc_z_px=1024, px_um=200.0, n_pixels_y=2048,
                      n_pixels_z=2048, rho_d_um=290_000.0, p2=-1e-3)
    tth, _, _ = _ring_strains(0.0, narrow, wavelength=0.172979)
    rng = np.random.default_rng(5)
    eps = rng.normal(0, 5e-6, tth.size)
    out = wavelength_signature(tth, eps, np.full(tth.size, 5e-6), np.full(tth.size, 50), narrow)
    assert out["delta_lambda_p2"] < -0.01
    assert out["passed"]


def test_given_distance_check_names_a_scale_error():
    """px 150 given for 172 µm scales Lsd by 150/172 (−12.8 %): fails; the `far` start (+10 %) passes."""
    assert not given_distance_check(300_000 * 150 / 172, 300_000)["passed"]
    assert given_distance_check(1_000_000 / 1.10, 1_000_000)["passed"]
    assert given_distance_check(1_000_000, 900_000)["passed"]  # test_ge2048_robust_start's ×0.9 guess
    assert given_distance_check(123.0, None)["passed"]
    assert GIVEN_DISTANCE_SUSPECT < -math.log(150 / 172)


def test_flip_check_finds_the_frame_of_the_start():
    """The answer is the start flipped up-down (BC Z mirrored, ty sign changed): the check names ImTransOpt 2;
    a start 5 px off in the right frame passes."""
    start = G
    flipped = image_transforms(start)["flipped up-down (ImTransOpt 2)"]
    answer = Geometry(**{**G.__dict__, "bc_y_px": flipped[0], "bc_z_px": flipped[1], "ty_deg": flipped[2],
                         "tz_deg": flipped[3]})
    out = flip_check(answer, start)
    assert not out["passed"] and out["best"] == "flipped up-down (ImTransOpt 2)"
    near = Geometry(**{**G.__dict__, "bc_y_px": G.bc_y_px + 5, "bc_z_px": G.bc_z_px - 5})
    assert flip_check(near, start)["passed"]
    assert flip_check(answer, None)["passed"]


def test_ring_coverage_counts_rings_well_on_the_detector():
    """Rings with < 25 % of their circle on the detector are not predicted; 1 of 4 found fails."""
    out = ring_coverage([30, 0, 0, 0, 5], [72, 70, 60, 50, 10], 72)
    assert out["n_predicted"] == 4 and out["n_found"] == 1 and not out["passed"]
    assert ring_coverage([30, 20, 0, 10], [72, 70, 60, 50], 72)["passed"]


def test_verdict_reason_joins_the_reasons():
    v = Verdict("SUSPECT", ("a", "b"), {})
    assert v.suspect and v.reason == "a; b"


# ---- adversarial images (validation/adversarial.py) ---------------------------------------------------------

def _calibrate(name, tmp_path, seed=1):
    image, params, options, truth = build_case(ADVERSARIAL_CASES[name], seed, tmp_path)
    try:
        _, result, _ = calibrate_file(image, params, **options)
    except Exception as exc:  # noqa: BLE001 - the refusal itself is what some cases check
        return None, exc, truth
    return result, None, truth


def _right(result, truth) -> bool:
    e = geometry_errors(result.geometry, truth)
    return all(abs(e[k]) <= bound for k, bound in ADVERSARIAL_RIGHT.items())


@pytest.mark.parametrize("name, cause", [
    ("ceo2_as_si", "wrong calibrant"),
    ("energy_3pct_wide", "wrong wavelength"),
    ("flipped_ud", "ImTransOpt"),
    ("pixel_150_for_172", "px"),
])
def test_adversarial_case_is_suspect_with_its_cause(name, cause, tmp_path):
    """Each of these converges to a wrong geometry without the verdict; with it: SUSPECT naming the cause."""
    result, exc, truth = _calibrate(name, tmp_path)
    assert exc is None
    assert not _right(result, truth)  # the answer really is wrong
    assert result.status == "SUSPECT"
    assert cause in result.reason
    assert result.verdict is not None and result.verdict.suspect


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lab6_as_ceo2", "spotty_texture_guessed", "spotty_texture", "single_crystal",
                                  "dark_frame", "random_noise", "first_ring_nr_2", "first_ring_nr_5"])
def test_adversarial_case_never_converges_wrong(name, tmp_path):
    """Not plain CONVERGED with a wrong geometry: FAILED, SUSPECT, refused (bad input), or right."""
    result, exc, truth = _calibrate(name, tmp_path)
    if exc is not None:
        assert "no rings found" in str(exc) or "ring" in str(exc)
        return
    assert result.status in ("FAILED", "SUSPECT") or _right(result, truth)


def test_honest_small_image_stays_converged(tmp_path):
    """The honest small512 image (same builder, no spoiled input): CONVERGED, every check passed."""
    from dataclasses import replace

    honest = replace(ADVERSARIAL_CASES["flipped_ud"], image=None, start_truth=False)
    image, params, options, truth = build_case(honest, 2, tmp_path)
    _, result, _ = calibrate_file(image, params, **options)
    assert result.status == "CONVERGED", result.reason
    assert all(c.get("passed", True) for c in result.verdict.checks.values())
    assert _right(result, truth)


def test_adversarial_case_table_matches_the_suite_matrix():
    from validation.scenarios import ADVERSARIAL_NAMES, QUICK_ADVERSARIAL

    assert tuple(ADVERSARIAL_CASES) == ADVERSARIAL_NAMES and set(QUICK_ADVERSARIAL) <= set(ADVERSARIAL_NAMES)


def test_adversarial_gates():
    """The gates: an adversarial case passes when not CONVERGED, or CONVERGED and right; an honest SUSPECT fails."""
    base = {"kind": "adversarial", "case": {"name": "x"}, "metrics": {"ours": {"err_lsd_rel": 0.1, "err_bc_px": 0,
                                                                              "err_tilt_deg": 0}}, "info": {}}
    assert all(g["passed"] for g in evaluate_gates({**base, "status": "SUSPECT"}))
    assert not all(g["passed"] for g in evaluate_gates({**base, "status": "CONVERGED"}))
    honest = {"kind": "synthetic", "case": {"name": "small512", "noise": "poisson", "start": "near"},
              "metrics": {"ours": {}}, "info": {}, "status": "SUSPECT"}
    assert not all(g["passed"] for g in evaluate_gates(honest))


def test_cli_suspect_exit_code_and_outputs(tmp_path, capsys):
    """``midas-ref calibrate`` on a SUSPECT run: exit 3, the reason on stderr (one SUSPECT line), the refined
    parameter file written, autocal.log says SUSPECT."""
    from midas_ref.cli import main

    image, params, options, _ = build_case(ADVERSARIAL_CASES["pixel_150_for_172"], 1, tmp_path / "sim")
    out = tmp_path / "cal"
    code = main(["calibrate", "-dataFN", str(image), "-paramFN", str(params), "--out-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 3
    assert "midas-ref calibrate: SUSPECT:" in err and "px" in err
    assert (out / "refined_MIDAS_params.txt").is_file()
    log = (out / "autocal.log").read_text()
    assert "status SUSPECT" in log and "WARNING" in log
    from midas_ref.params import read_parameter_file

    assert read_parameter_file(out / "refined_MIDAS_params.txt").get("Lsd") == pytest.approx(300_000 * 150 / 172,
                                                                                             rel=1e-3)
