"""Panel shifts in the rendered image: exact on the shifted panel, nothing elsewhere; gaps carry their value.

Expected displacements are computed from the manual §7 transform written out here (raw → corrected:
rotate about the panel centre by dTheta, then add (dY, dZ)), applied to ring points of the *unshifted*
geometry, independently of ``geometry_kernels``.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from ring_centroids import sector_centroids, usable_mask

from midas_ref.detector import Geometry, PanelLayout, PanelShift
from midas_ref.geometry import pixel_to_r_eta, r_eta_maps, r_eta_to_pixel
from midas_ref.panels import Panels, panel_bounds, panel_index_map
from simulate import (DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig, SimulationError,
                      render_expected, ring_set, simulate)
from simulate.config import CEO2

#: Issue #4 requirement for ring positions, px.
CENTROID_TOL_PX = 0.01
PEAK = 10_000.0
BG = 100.0
LAYOUT = PanelLayout(2, 2, 200, 200, (6,), (6,))  # 406 × 406 image, gaps: column 200-205, row 200-205
SHIFTS = (PanelShift(0),                                   # fixed panel
          PanelShift(1, dy_px=0.37, dz_px=-0.61),          # fractional translation
          PanelShift(2, dtheta_deg=0.05),                  # rotation only
          PanelShift(3, dy_px=2.0, dz_px=-1.0))            # whole-pixel translation
GEOM = Geometry(lsd_um=250_000.0, bc_y_px=203.2, bc_z_px=202.7, px_um=200.0, n_pixels_y=406, n_pixels_z=406,
                ty_deg=0.3, tz_deg=-0.2, p2=1e-4)


def config(panels, **response):
    return SimulationConfig(GEOM, Material(wavelength_angstrom=0.172979, **CEO2), panels=panels,
                            peak=PeakShape(fwhm_px=2.5, lorentz_fraction=0.4),
                            intensity=RingIntensity(peak_counts=PEAK),
                            response=DetectorResponse(background_counts=BG, dtype="int32", **response))


SHIFTED = Panels(LAYOUT, SHIFTS)
ZERO = Panels.from_shifts(LAYOUT)


@pytest.fixture(scope="module")
def images():
    return {name: render_expected(config(p)) for name, p in
            (("shifted", SHIFTED), ("zero", ZERO), ("none", None))}


@pytest.fixture(scope="module")
def ids():
    return panel_index_map(LAYOUT, GEOM.shape)


def test_fixed_panel_unchanged(images, ids):
    on0 = ids == 0
    np.testing.assert_allclose(images["shifted"][on0], images["none"][on0], rtol=1e-12, atol=0)
    np.testing.assert_allclose(images["zero"], images["none"], rtol=1e-12, atol=0)


def test_whole_pixel_shift_moves_the_image_exactly(images, ids):
    """Panel 3 (dY = 2, dZ = −1): raw pixel (y, z) shows what the unshifted detector has at (y + 2, z − 1)."""
    y_min, y_max, z_min, z_max = panel_bounds(LAYOUT)[3]
    rows = np.arange(z_min, z_max + 1)
    cols = np.arange(y_min, y_max + 1)
    keep_r = (rows - 1 >= 0) & (rows - 1 < GEOM.n_pixels_z)
    keep_c = (cols + 2 >= 0) & (cols + 2 < GEOM.n_pixels_y)
    rows, cols = rows[keep_r], cols[keep_c]
    shifted = images["shifted"][np.ix_(rows, cols)]
    reference = images["none"][np.ix_(rows - 1, cols + 2)]
    np.testing.assert_allclose(shifted, reference, rtol=1e-12, atol=0)


def corrected_position(y, z, shift: PanelShift, centre):
    """Manual §7: raw pixel position → corrected detector position (rotation about the centre, then shift)."""
    cy, cz = centre
    th = math.radians(shift.dtheta_deg)
    return (cy + (y - cy) * math.cos(th) - (z - cz) * math.sin(th) + shift.dy_px,
            cz + (y - cy) * math.sin(th) + (z - cz) * math.cos(th) + shift.dz_px)


def expected_offsets_px(radius_um, etas_deg, shift, centre):
    """Radii ρ − R (px) at which the shifted panel shows ring R along the unshifted radial lines η.

    Solves r(T(p(ρ, η))) = R for ρ, p(ρ, η) the raw position of radius ρ and azimuth η of the unshifted
    geometry and T the manual's transform (fixed point: dr/dρ ≈ 1 for these small shifts; 30 steps
    converge to < 1e-12 px).
    """
    rho = np.full(len(etas_deg), radius_um)
    for _ in range(30):
        y, z = r_eta_to_pixel(rho, etas_deg, GEOM)
        r_seen, _ = pixel_to_r_eta(*corrected_position(y, z, shift, centre), GEOM)
        rho -= r_seen - radius_um
    return (rho - radius_um) / GEOM.px_um


@pytest.fixture(scope="module")
def single_rings():
    """(radius, shifted render, unshifted render) of each ring with 40 px < R < 200 px, rendered alone."""
    rings = ring_set(config(SHIFTED))
    out = []
    for ring in range(len(rings)):
        if 40 * GEOM.px_um < rings.radius_um[ring] < 200 * GEOM.px_um:
            alone = rings.select([ring])
            out.append((alone.radius_um[0], render_expected(config(SHIFTED), alone) - BG,
                        render_expected(config(None), alone) - BG))
    return out


@pytest.mark.parametrize("panel", [1, 2, 3])
def test_rings_move_by_the_requested_amount(single_rings, ids, panel):
    """Sector centroids of a ring in the unshifted r-map move by the amount the manual's transform predicts."""
    r, eta = r_eta_maps(GEOM)
    usable = usable_mask(GEOM.shape, invalid=ids != panel)
    bounds = panel_bounds(LAYOUT)[panel]
    centre = ((bounds[0] + bounds[1]) / 2.0, (bounds[2] + bounds[3]) / 2.0)
    shift = SHIFTS[panel]
    etas = np.arange(-180.0, 180.0, 5.0)
    checked = 0
    for ring, (radius, moved, still) in enumerate(single_rings):
        off_moved, _ = sector_centroids(moved, r, eta, radius, 8 * GEOM.px_um, etas, 5.0, usable=usable)
        off_still, _ = sector_centroids(still, r, eta, radius, 8 * GEOM.px_um, etas, 5.0, usable=usable)
        expected = expected_offsets_px(radius, etas, shift, centre)
        for i in np.flatnonzero(~np.isnan(off_moved)):
            measured = (off_moved[i] - off_still[i]) / GEOM.px_um
            assert measured == pytest.approx(expected[i], abs=CENTROID_TOL_PX), (ring, etas[i])
            checked += 1
    assert checked >= 20


def test_gap_pixels_carry_the_gap_value(ids):
    result = simulate(config(SHIFTED, gap_value=-1.0, bad_pixel_fraction=0.0))
    image = result.image
    assert np.all(image[ids < 0] == -1)
    assert np.all(image[ids >= 0] >= 0)
    assert np.array_equal(result.gap_mask, ids < 0)
    other = simulate(config(SHIFTED, gap_value=-7.0)).image
    assert np.all(other[ids < 0] == -7)


def test_fixed_panel_must_be_unshifted():
    bad = Panels(LAYOUT, (PanelShift(0, dy_px=0.1),) + SHIFTS[1:])
    with pytest.raises(SimulationError, match="fixed panel 0"):
        config(bad)
    assert replace(config(bad.__class__(LAYOUT, SHIFTS)), fix_panel_id=0)  # the valid one builds


def test_unsigned_dtype_cannot_hold_negative_gap_value():
    with pytest.raises(SimulationError, match="cannot be stored in uint16"):
        replace(config(SHIFTED), response=DetectorResponse(dtype="uint16"))
