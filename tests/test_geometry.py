"""The geometry model against analytic cases, the slow reference, and its own inverse."""

from __future__ import annotations

import math

import numpy as np
import pytest
import reference

from midas_ref import Geometry, GeometryError, PanelLayout, PanelShift
from midas_ref import geometry as G
from midas_ref.panels import Panels, panel_index_map

# 1e-9 µm on radii of ~1e5 µm is ~1e-14 relative: float64 round-off of a dozen operations.
R_ATOL_UM = 1e-7
ETA_ATOL_DEG = 1e-9


def tilted_geometry(**kw):
    base = dict(lsd_um=1_000_000.0, bc_y_px=1027.3, bc_z_px=1021.3, px_um=200.0, n_pixels_y=2048,
                n_pixels_z=2048, ty_deg=0.35, tz_deg=-0.25, p0=2e-4, p1=-1e-4, p2=1.5e-4, p3_deg=30.0,
                rho_d_um=290338.13)
    base.update(kw)
    return Geometry(**base)


def test_untilted_undistorted_is_plain_polar():
    geom = Geometry(500_000.0, 100.25, 80.5, 100.0, 256, 200)
    rng = np.random.default_rng(20261125)
    y = rng.uniform(-50, 300, 500)
    z = rng.uniform(-50, 300, 500)
    r, eta = G.pixel_to_r_eta(y, z, geom)
    np.testing.assert_allclose(r, 100.0 * np.hypot(y - 100.25, z - 80.5), rtol=0, atol=R_ATOL_UM)
    np.testing.assert_allclose(eta, np.degrees(np.arctan2(y - 100.25, z - 80.5)), rtol=0, atol=ETA_ATOL_DEG)
    two_theta = G.pixel_to_two_theta(y, z, geom)
    np.testing.assert_allclose(two_theta, np.degrees(np.arctan(r / 500_000.0)), rtol=1e-14)


def test_eta_directions():
    geom = Geometry(1e6, 100.0, 100.0, 200.0, 201, 201)
    _, eta = G.pixel_to_r_eta([100, 110, 100, 90], [110, 100, 90, 100], geom)
    # +Z is η = 0, +Y is η = +90°, −Z is ±180°, −Y is −90°.
    np.testing.assert_allclose(np.abs(eta), [0, 90, 180, 90], atol=1e-12)
    assert eta[1] > 0 and eta[3] < 0


def test_pure_p2_distortion_scales_radius():
    geom = Geometry(1e6, 0.0, 0.0, 100.0, 64, 64, p2=3e-3, rho_d_um=5000.0)
    r, _ = G.pixel_to_r_eta([30.0], [40.0], geom)
    rad = 5000.0
    assert r[0] == pytest.approx(rad * (1 + 3e-3 * (rad / 5000.0) ** 2), abs=1e-9)


def test_matches_reference_with_tilts_and_distortion():
    geom = tilted_geometry(tx_deg=1.3, p4=2e-4, p5=-3e-4)
    rng = np.random.default_rng(7)
    y = rng.uniform(0, 2047, 2000)
    z = rng.uniform(0, 2047, 2000)
    r, eta = G.pixel_to_r_eta(y, z, geom)
    r_ref, eta_ref = reference.pixel_to_r_eta(y, z, geom)
    np.testing.assert_allclose(r, r_ref, rtol=1e-13, atol=R_ATOL_UM)
    np.testing.assert_allclose(eta, eta_ref, rtol=0, atol=1e-9)


def test_tx_only_rotates_azimuth():
    flat = tilted_geometry(ty_deg=0, tz_deg=0, p0=0, p1=0, p2=0)
    rolled = tilted_geometry(ty_deg=0, tz_deg=0, p0=0, p1=0, p2=0, tx_deg=7.0)
    y, z = np.meshgrid(np.arange(0, 2048, 97.0), np.arange(0, 2048, 89.0))
    r0, e0 = G.pixel_to_r_eta(y, z, flat)
    r1, e1 = G.pixel_to_r_eta(y, z, rolled)
    np.testing.assert_allclose(r1, r0, rtol=1e-14, atol=R_ATOL_UM)
    shift = (e1 - e0 + 180.0) % 360.0 - 180.0
    far = r0 > 1000.0
    # Rx(tx) turns (y', z') by tx, and η = atan2(−y', z') follows it: η → η + tx.
    np.testing.assert_allclose(shift[far], 7.0, atol=1e-9)


def test_maps_equal_pointwise():
    geom = tilted_geometry(n_pixels_y=300, n_pixels_z=200, bc_y_px=140.2, bc_z_px=95.7)
    r_map, eta_map = G.r_eta_maps(geom)
    assert r_map.shape == (200, 300)
    z, y = np.indices((200, 300))
    r, eta = G.pixel_to_r_eta(y, z, geom)
    np.testing.assert_array_equal(r_map, r)
    np.testing.assert_array_equal(eta_map, eta)
    np.testing.assert_allclose(G.two_theta_map(geom), np.degrees(np.arctan(r / geom.lsd_um)), rtol=1e-14)


def test_inverse_of_forward():
    geom = tilted_geometry(tx_deg=-2.0, p4=1e-4)
    rng = np.random.default_rng(11)
    y = rng.uniform(0, 2047, 5000)
    z = rng.uniform(0, 2047, 5000)
    r, eta = G.pixel_to_r_eta(y, z, geom)
    y2, z2 = G.r_eta_to_pixel(r, eta, geom)
    np.testing.assert_allclose(y2, y, rtol=0, atol=1e-8)
    np.testing.assert_allclose(z2, z, rtol=0, atol=1e-8)


def test_ring_radius_of_truth_geometry_round_trip():
    """A ring drawn with r_eta_to_pixel has constant r all round (what the simulator relies on)."""
    geom = tilted_geometry()
    eta = np.linspace(-180, 180, 721)
    y, z = G.r_eta_to_pixel(np.full_like(eta, 150_000.0), eta, geom)
    r, eta_back = G.pixel_to_r_eta(y, z, geom)
    np.testing.assert_allclose(r, 150_000.0, rtol=1e-14)
    np.testing.assert_allclose(np.cos(np.radians(eta_back - eta)), 1.0, atol=1e-14)


@pytest.mark.parametrize("field, value", [("lsd_um", -1.0), ("px_um", 0.0), ("lsd_um", math.nan),
                                          ("ty_deg", math.inf), ("rho_d_um", -5.0)])
def test_invalid_geometry_rejected(field, value):
    with pytest.raises(GeometryError, match=field):
        tilted_geometry(**{field: value})


def test_default_rho_d_is_farthest_corner():
    geom = Geometry(1e6, 10.0, 20.0, 100.0, 300, 100)
    # farthest corner from (10, 20) is (299, 99) (columns, rows)
    assert geom.rho_d_um == pytest.approx(100.0 * math.hypot(289.0, 79.0))


# ---- panels ---------------------------------------------------------------------------------------------

LAYOUT = PanelLayout(2, 3, 100, 60, gaps_y_px=(7,), gaps_z_px=(5, 9))


def panel_geometry():
    return tilted_geometry(n_pixels_y=207, n_pixels_z=199, bc_y_px=103.0, bc_z_px=98.0, lsd_um=300_000.0,
                           rho_d_um=30_000.0)


def test_panel_shift_equals_moved_pixel():
    geom = panel_geometry()
    panels = Panels.from_shifts(LAYOUT, [PanelShift(4, dy_px=0.7, dz_px=-0.3)])
    # panel 4 = (iy 1, iz 1): columns 107..206, rows 65..124
    y = np.array([120.0, 150.2, 206.0])
    z = np.array([65.0, 100.0, 124.4])
    r, eta = G.pixel_to_r_eta(y, z, geom, panels)
    r0, eta0 = G.pixel_to_r_eta(y + 0.7, z - 0.3, geom)
    np.testing.assert_allclose(r, r0, rtol=1e-15)
    np.testing.assert_allclose(eta, eta0, atol=1e-12)
    # panel 0 and a gap pixel are untouched
    y_other = np.array([10.0, 103.0])
    z_other = np.array([10.0, 62.0])
    np.testing.assert_array_equal(G.pixel_to_r_eta(y_other, z_other, geom, panels)[0],
                                  G.pixel_to_r_eta(y_other, z_other, geom)[0])


def test_panel_rotation_lsd_and_p2_match_reference():
    geom = panel_geometry()
    shift = PanelShift(3, dy_px=0.2, dz_px=0.4, dtheta_deg=0.08, dlsd_um=45.0, dp2=3e-5)
    panels = Panels.from_shifts(LAYOUT, [shift])
    # panel 3 = (iy 1, iz 0): columns 107..206, rows 0..59, centre (156.5, 29.5)
    rng = np.random.default_rng(3)
    y = rng.uniform(106.6, 206.4, 300)
    z = rng.uniform(-0.4, 59.4, 300)
    r, eta = G.pixel_to_r_eta(y, z, geom, panels)
    r_ref, eta_ref = reference.pixel_to_r_eta(y, z, geom, panel=(156.5, 29.5, 0.2, 0.4, 0.08, 45.0, 3e-5))
    np.testing.assert_allclose(r, r_ref, rtol=1e-13)
    np.testing.assert_allclose(eta, eta_ref, atol=1e-9)
    # the panel centre does not move under rotation alone
    rot_only = Panels.from_shifts(LAYOUT, [PanelShift(3, dtheta_deg=0.5)])
    assert G.pixel_to_r_eta(156.5, 29.5, geom, rot_only)[0] == G.pixel_to_r_eta(156.5, 29.5, geom)[0]


def test_panel_inverse_of_forward():
    geom = panel_geometry()
    rng = np.random.default_rng(5)
    shifts = [PanelShift(i, *rng.uniform(-1, 1, 2), rng.uniform(-0.1, 0.1), rng.uniform(-50, 50),
                         rng.uniform(-1e-4, 1e-4)) for i in range(6)]
    panels = Panels(LAYOUT, tuple(shifts))
    z, y = np.indices((199, 207))
    y = y.ravel().astype(float)
    z = z.ravel().astype(float)
    r, eta = G.pixel_to_r_eta(y, z, geom, panels)
    # Gap pixels are not corrected, so a shifted panel edge can land on a gap pixel's (R, η): the map is
    # not injective there and the inverse prefers the panel. η is ill-conditioned right at the centre.
    on_panel = panel_index_map(LAYOUT, (199, 207)).ravel() >= 0
    keep = (r > 2000.0) & on_panel
    y2, z2 = G.r_eta_to_pixel(r[keep], eta[keep], geom, panels)
    np.testing.assert_allclose(y2, y[keep], atol=1e-8)
    np.testing.assert_allclose(z2, z[keep], atol=1e-8)
