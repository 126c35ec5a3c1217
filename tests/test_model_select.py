"""Which distortion terms the ring points support (``midas_ref.model_select``), on exact point sets.

Points are placed on the rings of a known geometry by the inverse model (no image, no peak fit), then
perturbed by white radial noise and, where a test says so, by *module systematics*: the detector cut into
blocks, each block displaced by a random sub-pixel shift — the residual pattern of a real Pilatus, which a
naive F-test takes for distortion.
"""

from __future__ import annotations

import numpy as np
import pytest

from midas_ref import Geometry
from midas_ref.geometry import r_eta_to_pixel
from midas_ref.model_select import SELECTION_ALPHA, select_distortion_terms, white_strain_variance
from midas_ref.rings import ring_table

BASE_FREE = ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg")
TRUTH = Geometry(lsd_um=400_000.0, bc_y_px=1030.4, bc_z_px=1015.7, px_um=200.0, n_pixels_y=2048, n_pixels_z=2048,
                 ty_deg=0.35, tz_deg=-0.25)
#: ge2048's distortion (simulate preset)
DISTORTION = dict(p0=2e-4, p1=-1e-4, p2=1.5e-4, p3_deg=30.0)


def ring_points(truth: Geometry, *, white: float, module_px: float = 0.0, seed: int, eta_bin_deg: float = 5.0):
    """Points every ``eta_bin_deg`` on each CeO2 ring on the detector: ``(y, z, 2θ, η, ring)``.

    ``white``: rms of an independent radial strain per point; ``module_px``: rms of the random (dy, dz) shift
    of each 256 × 512 px block (8 × 4 blocks).
    """
    rng = np.random.default_rng(seed)
    # λ = 0.4 Å: 19 rings out to the detector edge (2θ ≈ 27°), so the ρ⁴ term is seen
    rings = ring_table(225, (5.4116,) * 3 + (90.0,) * 3, 0.4, d_min_angstrom=0.85)
    eta = np.arange(-180.0 + eta_bin_deg / 2, 180.0, eta_bin_deg)
    shifts = rng.normal(0.0, module_px, (8, 4, 2)) if module_px else np.zeros((8, 4, 2))
    out = []
    for k, ring in enumerate(rings):
        r = truth.lsd_um * np.tan(np.radians(ring.two_theta_deg)) * (1.0 + rng.normal(0.0, white, eta.size))
        y, z = r_eta_to_pixel(r, eta, truth)
        ok = np.isfinite(y) & (y >= 0) & (y <= 2047) & (z >= 0) & (z <= 2047)
        y, z, e = y[ok], z[ok], eta[ok]
        block = shifts[(y // 256).astype(int), (z // 512).astype(int)]
        y, z = y + block[:, 0], z + block[:, 1]
        out.append((y, z, np.full(y.size, ring.two_theta_deg), e, np.full(y.size, k)))
    return tuple(np.concatenate(c) for c in zip(*out))


def start_of(truth: Geometry) -> Geometry:
    """The truth moved a little and without distortion: where the selection starts."""
    return Geometry(lsd_um=truth.lsd_um + 150.0, bc_y_px=truth.bc_y_px + 0.3, bc_z_px=truth.bc_z_px - 0.2,
                    px_um=truth.px_um, n_pixels_y=truth.n_pixels_y, n_pixels_z=truth.n_pixels_z)


def select(truth, **noise):
    y, z, tth, eta, ring = ring_points(truth, **noise)
    return select_distortion_terms(y, z, tth, eta, ring, start_of(truth), base_free=BASE_FREE)


def test_white_noise_keeps_no_term():
    sel = select(TRUTH, white=5e-6, seed=1)
    assert sel.terms == () and sel.dropped == ("p0", "p1", "p2", "p4")
    g = sel.fit.geometry
    assert (g.p0, g.p1, g.p2, g.p4) == (0.0, 0.0, 0.0, 0.0)
    assert abs(g.lsd_um - TRUTH.lsd_um) < 2.0 and abs(g.bc_y_px - TRUTH.bc_y_px) < 0.005
    # pure noise: the F-tests themselves reject (no term explains more than noise)
    assert all(t.p_value > SELECTION_ALPHA or t.ratio < 1 for t in sel.tests)
    assert sel.white_estimate == pytest.approx(5e-6, rel=0.1)


def test_distortion_is_kept_and_recovered():
    truth = Geometry(**{**TRUTH.__dict__, **DISTORTION})
    sel = select(truth, white=5e-6, seed=2)
    assert sel.terms == ("p0", "p1", "p2")  # p4 (ρ⁶) is not in the truth and goes
    g = sel.fit.geometry
    pair = lambda geo: geo.p1 * np.exp(1j * np.radians(geo.p3_deg))  # noqa: E731
    assert abs(g.p0 - 2e-4) < 3e-6 and abs(g.p2 - 1.5e-4) < 3e-6 and abs(pair(g) - pair(truth)) < 3e-6
    assert abs(g.lsd_um - truth.lsd_um) < 2.0
    # every kept term explains far more than the noise-level misfit beside it
    assert min(t.ratio for t in sel.tests if t.model == sel.terms) > 10


def test_module_systematics_do_not_pass_for_distortion():
    """Blocks displaced by ~0.1 px: the F-test (n = every point) calls terms significant, the comparison with
    the systematic residual level drops them all."""
    sel = select(TRUTH, white=5e-6, module_px=0.1, seed=3)
    assert sel.terms == ()
    assert sel.full_rms_strain > 2 * sel.white_strain  # mostly systematic (module edges add to the white part)
    naive = [t for t in sel.tests if t.p_value < SELECTION_ALPHA]
    assert naive and all(t.ratio < 1 for t in naive)


def test_distortion_larger_than_the_systematics_is_kept():
    """A GE-sized isotropic distortion (p2 = −1e-3, ~1 px at the edge) among 0.03 px module shifts."""
    truth = Geometry(**{**TRUTH.__dict__, "p2": -1e-3})
    sel = select(truth, white=5e-6, module_px=0.03, seed=4)
    assert "p2" in sel.terms
    # the module pattern biases it (by 13 % for this seed), the fit without it would be 1000 µε off at the edge
    assert abs(sel.fit.geometry.p2 + 1e-3) < 2e-4


def test_white_variance_ignores_smooth_structure():
    """3 µε of noise under 200 µε of cos 2η + cos 4η structure on 12 rings: the estimate is the noise."""
    rng = np.random.default_rng(5)
    eta = np.tile(np.arange(-179.5, 180.0, 1.0), 12)
    ring = np.repeat(np.arange(12), 360)
    structure = 2e-4 * np.cos(np.radians(2 * eta)) + 1e-4 * np.cos(np.radians(4 * eta + 10 * ring))
    var, n = white_strain_variance(structure + rng.normal(0, 3e-6, eta.size), ring, eta, 1.0)
    assert n == 12 * 358
    assert np.sqrt(var) == pytest.approx(3e-6, rel=0.05)


def test_a_zero_tolerance_leaves_a_term_out():
    from midas_ref.refine import Tolerances

    truth = Geometry(**{**TRUTH.__dict__, **DISTORTION})
    y, z, tth, eta, ring = ring_points(truth, white=5e-6, seed=6)
    sel = select_distortion_terms(y, z, tth, eta, ring, start_of(truth), base_free=BASE_FREE,
                                  tolerances=Tolerances(p1=0.0))
    assert sel.candidates == ("p0", "p2", "p4") and "p1" not in sel.terms and sel.fit.geometry.p1 == 0.0
