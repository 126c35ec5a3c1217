"""Property tests of the geometry model: inverse∘forward and agreement with the slow reference."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import reference
from hypothesis import example, given, settings, target
from hypothesis import strategies as st

from midas_ref import Geometry
from midas_ref import geometry as G


@st.composite
def realistic_geometries(draw):
    """Detectors 100–3000 px, 50–400 µm pixels, 0.1–2 m, tilts up to ±5°, MIDAS-sized distortion."""
    n_y = draw(st.integers(100, 3000))
    n_z = draw(st.integers(100, 3000))
    return Geometry(
        lsd_um=draw(st.floats(1e5, 2e6)), px_um=draw(st.floats(50, 400)),
        bc_y_px=draw(st.floats(-0.5 * n_y, 1.5 * n_y)), bc_z_px=draw(st.floats(-0.5 * n_z, 1.5 * n_z)),
        n_pixels_y=n_y, n_pixels_z=n_z,
        tx_deg=draw(st.floats(-5, 5)), ty_deg=draw(st.floats(-5, 5)), tz_deg=draw(st.floats(-5, 5)),
        p0=draw(st.floats(-1e-3, 1e-3)), p1=draw(st.floats(-1e-3, 1e-3)), p2=draw(st.floats(-1e-3, 1e-3)),
        p3_deg=draw(st.floats(-180, 180)), p4=draw(st.floats(-1e-3, 1e-3)), p5=draw(st.floats(-1e-3, 1e-3)))


def pixels_of(geom, seed, n=200):
    rng = np.random.default_rng(seed)
    return rng.uniform(0, geom.n_pixels_y - 1, n), rng.uniform(0, geom.n_pixels_z - 1, n)


@settings(max_examples=150, deadline=None)
@given(realistic_geometries(), st.integers(0, 2**32 - 1))
@example(Geometry(1e6, 1024.0, 1024.0, 200.0, 2048, 2048), 0)
@example(Geometry(1e6, 1024.0, 1024.0, 200.0, 2048, 2048, tx_deg=5.0), 1)
def test_inverse_of_forward_is_identity(geom, seed):
    y, z = pixels_of(geom, seed)
    r, eta = G.pixel_to_r_eta(y, z, geom)
    # η is undefined at the beam centre; keep pixels at least 1 px away
    keep = r > geom.px_um
    y2, z2 = G.r_eta_to_pixel(r[keep], eta[keep], geom)
    err = float(np.max(np.hypot(y2 - y[keep], z2 - z[keep]), initial=0.0))
    target(err, label="max round-trip error (px)")
    assert err <= 1e-8


@settings(max_examples=150, deadline=None)
@given(realistic_geometries(), st.integers(0, 2**32 - 1))
# found by hypothesis: a 5° tilt puts pixels at 2θ near 90°, where p5·ρ⁴ cancels 1 + … to D = 0.002
@example(Geometry(lsd_um=100000.0, bc_y_px=0.0, bc_z_px=0.0, px_um=400.0, n_pixels_y=2409, n_pixels_z=100,
                  tz_deg=-5.0, p5=-0.0007239775944878497, rho_d_um=964013.69284881), 0)
def test_forward_matches_reference(geom, seed):
    y, z = pixels_of(geom, seed)
    r, eta = G.pixel_to_r_eta(y, z, geom)
    r_ref, eta_ref = reference.pixel_to_r_eta(y, z, geom)
    # R = rad·D with D = 1 + Σ terms: where the terms cancel the 1 (far outside any real detector: ρ of
    # several RhoD at 2θ near 90°) the relative error of D grows by its condition number (1 + Σ|terms|)/|D|,
    # |cos| ≤ 1 bounding each term; 1e-12 (a few thousand eps for the kernels' fastmath reassociation) times it
    rad = reference.pixel_to_r_eta(y, z, replace(geom, p0=0.0, p1=0.0, p2=0.0, p4=0.0, p5=0.0))[0]
    rho = rad / geom.rho_d_um
    terms = (abs(geom.p0) + abs(geom.p2)) * rho ** 2 + (abs(geom.p1) + abs(geom.p5)) * rho ** 4 + abs(geom.p4) * rho ** 6
    condition = (1.0 + terms) / np.maximum(np.abs(r_ref / np.maximum(rad, 1e-300)), 1e-300)
    rel = np.abs(r - r_ref) / np.maximum(r_ref, 1.0)
    target(float(np.max(rel / condition)), label="relative radius error / condition number")
    assert np.all(rel <= 1e-12 * np.maximum(condition, 1.0))
    d_eta = (eta - eta_ref + 180.0) % 360.0 - 180.0
    # acos-based η loses precision near 0/180°; 1e-6° there is still 2e-8 rad
    assert np.max(np.abs(d_eta[r > 10 * geom.px_um]), initial=0.0) <= 1e-6
