"""Strain statistics shared by the calibration loops (midas_ref.strain)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from midas_ref import PanelLayout
from midas_ref.panels import Panels
from midas_ref.strain import (
    AUTOCAL_CONVERGED_STRAIN_CHANGE,
    AUTOCAL_SEM_FRACTION,
    CLIP_MIN_HALF_WIDTH,
    PANEL_CONVERGED_STRAIN_CHANGE,
    PANEL_SEM_FRACTION,
    clip_outliers,
    emit_progress,
    legacy_strain_statistics,
    panel_mean_strain,
    panel_point_counts,
    ring_statistics,
    strain_change_tolerance,
)


def test_clip_outliers_drops_exactly_the_planted_outliers():
    rng = np.random.default_rng(836_214)
    strain = rng.normal(2e-5, 1e-5, 2000)
    planted = rng.choice(strain.size, 15, replace=False)
    strain[planted] += rng.choice([-1.0, 1.0], planted.size) * rng.uniform(1e-4, 1e-3, planted.size)
    strain[7] = math.nan
    keep = clip_outliers(strain)
    # a 5σ window over 2000 normal points: no genuine point is expected outside it (p ≈ 1e-3 for this seed's
    # sample; the set below was checked for it)
    assert set(np.flatnonzero(~keep)) == set(planted) | {7}


def test_clip_outliers_window_never_narrower_than_the_floor():
    # identical strains have MAD 0: the window is CLIP_MIN_HALF_WIDTH (0.1 µε) about the median
    strain = np.array([3e-6] * 9 + [3e-6 + 0.9 * CLIP_MIN_HALF_WIDTH, 3e-6 - 1.1 * CLIP_MIN_HALF_WIDTH])
    assert clip_outliers(strain).tolist() == [True] * 10 + [False]


def test_clip_outliers_median_and_mad_on_a_hand_case():
    # n_sigma = 1 so each pass visibly narrows the window
    strain = np.array([0.0, 1e-5, -1e-5, 2e-5, -2e-5, 1e-4, 0.0])
    # pass 1: median 0, MAD = median(0, 1, 1, 2, 2, 10, 0) e-5 = 1e-5 → σ = 1.4826e-5, window ±1.4826e-5
    # keeps 0, ±1e-5; pass 2 over those (0, 0, ±1e-5): MAD 0.5e-5 → window ±0.7413e-5 keeps the zeros only
    keep = clip_outliers(strain, n_sigma=1.0, passes=1)
    assert keep.tolist() == [True, True, True, False, False, False, True]
    keep = clip_outliers(strain, n_sigma=1.0, passes=2)
    assert keep.tolist() == [True, False, False, False, False, False, True]


def test_ring_statistics_hand_computed():
    ring = np.array([0, 0, 0, 2, 2])
    strain = np.array([1e-5, 2e-5, -3e-5, 4e-5, 4e-5])
    count, mean, mean_abs, sem = ring_statistics(ring, strain, 4)
    assert count.tolist() == [3.0, 0.0, 2.0, 0.0]
    # ring 0: mean 0, mean |ε| 2e-5, population variance (1 + 4 + 9)/3 e-10, sem = √(var / (3 − 1))
    assert mean[0] == pytest.approx(0.0, abs=1e-20)
    assert mean_abs[0] == pytest.approx(2e-5, rel=1e-14)
    assert sem[0] == pytest.approx(math.sqrt(14e-10 / 3 / 2), rel=1e-12)
    # ring 2: two equal points → sem 0; E[ε²] − mean² is 0 only to round-off (eps·ε² ≈ 4e-26, √ ≈ 2e-13), and
    # a negative round-off is clipped, never NaN
    assert mean[2] == pytest.approx(4e-5, rel=1e-14) and 0.0 <= sem[2] < 1e-12
    # empty rings: NaN statistics, no warning
    assert np.isnan(mean[[1, 3]]).all() and np.isnan(mean_abs[[1, 3]]).all()


def _legacy_rule(s, mult, passes):
    """CalibrantPanelShiftsOMP's mean-multiple clipping, written out with plain numpy."""
    finite = np.isfinite(s)
    keep = finite.copy()
    mean = np.mean(s[keep])
    for _ in range(passes):
        new = finite & (s <= mult * mean)
        if not new.any():
            break
        keep = new
        previous, mean = mean, np.mean(s[keep])
        if abs(mean - previous) < 1e-10:
            break
    return keep, mean, np.std(s[keep])


@pytest.mark.parametrize("mult, passes", [(2.0, 1), (2.0, 5), (1.2, 3), (3.5, 10)])
def test_legacy_strain_statistics_matches_the_rule(mult, passes):
    rng = np.random.default_rng(519_077)
    s = np.abs(rng.standard_t(2.0, 500)) * 1e-5  # heavy tail: several passes each change the inliers
    s[[3, 40]] = math.nan
    keep, mean, std = legacy_strain_statistics(s, mult, passes)
    want_keep, want_mean, want_std = _legacy_rule(s, mult, passes)
    np.testing.assert_array_equal(keep, want_keep)
    assert mean == pytest.approx(want_mean, rel=1e-12) and std == pytest.approx(want_std, rel=1e-12)
    assert not keep[[3, 40]].any() and keep.sum() < 498


def test_legacy_strain_statistics_without_clipping_and_without_points():
    s = np.array([1e-5, 3e-5, math.nan])
    keep, mean, std = legacy_strain_statistics(s, 0.0, 3)
    assert keep.tolist() == [True, True, False] and mean == pytest.approx(2e-5) and std == pytest.approx(1e-5)
    keep, mean, std = legacy_strain_statistics(np.array([math.nan]), 2.0, 1)
    assert not keep.any() and math.isnan(mean) and math.isnan(std)


def test_convergence_rules_keep_their_numbers():
    # the two loops' rules (see the comment block in midas_ref.strain for why they differ)
    assert (AUTOCAL_CONVERGED_STRAIN_CHANGE, AUTOCAL_SEM_FRACTION) == (1e-7, 0.5)
    assert (PANEL_CONVERGED_STRAIN_CHANGE, PANEL_SEM_FRACTION) == (1e-8, 0.1)
    # 50 µε spread over 2500 points: σ/√n = 1 µε
    assert strain_change_tolerance(5e-5, 2500, floor=1e-7, fraction=0.5) == pytest.approx(5e-7, rel=1e-15)
    assert strain_change_tolerance(5e-5, 2500, floor=1e-8, fraction=0.1) == pytest.approx(1e-7, rel=1e-15)
    # tight data: the floor holds; no points counts as one
    assert strain_change_tolerance(1e-7, 2500, floor=1e-7, fraction=0.5) == 1e-7
    assert strain_change_tolerance(4e-6, 0, floor=1e-8, fraction=0.1) == pytest.approx(4e-7, rel=1e-15)


def test_panel_counts_and_mean_strain():
    # 2 × 2 panels of 10 px with a 2 px gap: ids = iy·2 + iz
    panels = Panels.from_shifts(PanelLayout(2, 2, 10, 10, (2,), (2,)))
    y = np.array([1.0, 2.0, 15.0, 3.0, 10.7, 11.0])  # last two: gap columns 10 and 11
    z = np.array([1.0, 15.0, 15.0, 4.0, 1.0, 1.0])
    s = np.array([1e-5, 2e-5, 4e-5, 3e-5, 9.0, 9.0])
    assert panel_point_counts(y, z, panels).tolist() == [2, 1, 0, 1]
    mean = panel_mean_strain(y, z, s, panels)
    assert mean[0] == pytest.approx(2e-5) and mean[1] == pytest.approx(2e-5) and math.isnan(mean[2])
    assert mean[3] == pytest.approx(4e-5)


def test_emit_progress():
    seen = []
    emit_progress(lambda event, info: seen.append((event, info)), "iteration", change=1e-6)
    emit_progress(None, "iteration", change=1e-6)
    assert seen == [("iteration", {"change": 1e-6})]
