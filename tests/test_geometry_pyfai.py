"""pyFAI as an independent oracle for midas_ref.geometry (no distortion).

The MIDAS geometry is converted to a PONI (``midas_ref.convert.midas_to_poni``, conventions.md §1.3) and
pyFAI computes 2θ and χ of the same pixels. pyFAI's arithmetic is float64 when it is *given* float64
pixel indices: ``Geometry.tth(d1, d2)`` (its default Cython path, and the numpy ``path="tan"``) and
``Geometry.chi(d1, d2)`` agree with a float64 numpy transcription of the MIDAS model to ~2e-16 rad.
``twoThetaArray()`` instead builds its indices with ``numpy.fromfunction(..., dtype=float32)``; the pixel
positions ``pixel·(i + ½) − poni`` are then float32 (numpy keeps float32 when a Python float multiplies a
float32 array), so its 2θ is only good to ~1e-7 rad. ``center_array(unit="2th_rad")`` is float64, but
shares its cache key with ``twoThetaArray()``: after a ``twoThetaArray()`` call it returns the float32
result.

Tolerances:

* ``TTH_ATOL_RAD = 1e-9`` rad — both sides are float64; rounding of positions of a few metres gives
  ~1e-15 rad. 1e-9 rad is 1 nm on a 1 m ring radius, below anything a calibration resolves.
* ``CHI_ATOL_RAD = 1e-9`` rad, only ≥ 1 px from the beam spot: the azimuth's rounding error is
  ~eps·(distance to the sample)/(distance to the beam spot) ≤ 2e-16·3 m / 50 µm ≈ 1e-11 rad there.
* ``FLOAT32_TTH_ATOL_RAD = 5e-7`` rad for ``twoThetaArray()``: positions rounded to float32 (relative
  2^-24 ≈ 6e-8 of |pixel·(i+½)| and of |poni|, both ≲ dist here) move 2θ by ≲ 2·6e-8 rad; 5e-7 leaves ×4.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings, target
from hypothesis import strategies as st

from midas_ref.convert import midas_to_poni
from midas_ref.detector import Geometry

pyFAI = pytest.importorskip("pyFAI")
from pyFAI.detectors import Detector  # noqa: E402
from pyFAI.integrator.azimuthal import AzimuthalIntegrator  # noqa: E402

geometry_module = pytest.importorskip("midas_ref.geometry")

TTH_ATOL_RAD = 1e-9
CHI_ATOL_RAD = 1e-9
FLOAT32_TTH_ATOL_RAD = 5e-7
#: Number of random pixel positions per drawn geometry (plus the four detector corners).
N_POINTS = 256


def _ai(geometry: Geometry) -> AzimuthalIntegrator:
    poni = midas_to_poni(geometry)
    return AzimuthalIntegrator(dist=poni.dist_m, poni1=poni.poni1_m, poni2=poni.poni2_m, rot1=poni.rot1_rad,
                               rot2=poni.rot2_rad, rot3=poni.rot3_rad,
                               detector=Detector(poni.pixel1_m, poni.pixel2_m, max_shape=poni.shape))


@st.composite
def small_detector_geometries(draw):
    """Lsd 0.1–2 m, 50–400 µm pixels, 64–512 px per side (small for speed), beam centre anywhere from one
    detector width before to one after the detector, tilts up to ±5° about each axis, no distortion."""
    n_y = draw(st.integers(64, 512))
    n_z = draw(st.integers(64, 512))
    tilt = st.floats(-5.0, 5.0, allow_nan=False)
    return Geometry(lsd_um=draw(st.floats(1e5, 2e6)), bc_y_px=draw(st.floats(-n_y, 2.0 * n_y)),
                    bc_z_px=draw(st.floats(-n_z, 2.0 * n_z)), px_um=draw(st.floats(50.0, 400.0)),
                    n_pixels_y=n_y, n_pixels_z=n_z, tx_deg=draw(tilt), ty_deg=draw(tilt), tz_deg=draw(tilt))


def _points(geometry: Geometry, seed: int):
    """Random sub-pixel positions over the detector (pixel edges included) and its four corner pixels."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([rng.uniform(-0.5, geometry.n_pixels_y - 0.5, N_POINTS),
                        [0.0, 0.0, geometry.n_pixels_y - 1.0, geometry.n_pixels_y - 1.0]])
    z = np.concatenate([rng.uniform(-0.5, geometry.n_pixels_z - 0.5, N_POINTS),
                        [0.0, geometry.n_pixels_z - 1.0, 0.0, geometry.n_pixels_z - 1.0]])
    return y, z


UNTILTED = Geometry(1e6, 255.5, 255.5, 200.0, 512, 512)
TX_ONLY = Geometry(1e6, 200.3, 300.7, 200.0, 512, 512, tx_deg=3.0)
WORST_CASE = Geometry(1e5, -512.0, 1024.0, 400.0, 512, 512, tx_deg=-5.0, ty_deg=5.0, tz_deg=-5.0)


@given(geometry=small_detector_geometries(), seed=st.integers(0, 2**32 - 1))
@example(geometry=UNTILTED, seed=1)
@example(geometry=TX_ONLY, seed=2)
@example(geometry=Geometry(1e6, 255.5, 255.5, 200.0, 512, 512, ty_deg=5.0), seed=3)  # ty only
@example(geometry=Geometry(1e6, 255.5, 255.5, 200.0, 512, 512, tz_deg=-5.0), seed=4)  # tz only
@example(geometry=WORST_CASE, seed=5)  # short distance, far off-detector centre, all tilts at the limit
@settings(deadline=None, max_examples=200)
def test_two_theta_and_azimuth_match_pyfai(geometry, seed):
    y, z = _points(geometry, seed)
    ai = _ai(geometry)
    ours = np.radians(geometry_module.pixel_to_two_theta(y, z, geometry))
    theirs = ai.tth(z, y)  # float64 indices → pyFAI's float64 path (d1 = row = z, d2 = column = y)
    error = float(np.max(np.abs(ours - theirs)))
    target(error, label="max |Δ2θ| (rad)")
    assert error <= TTH_ATOL_RAD

    _, eta_deg = geometry_module.pixel_to_r_eta(y, z, geometry)
    chi_deg = np.degrees(ai.chi(z, y))
    away = np.hypot(y - geometry.bc_y_px, z - geometry.bc_z_px) >= 1.0
    chi_error = np.abs((chi_deg - (90.0 - eta_deg) + 180.0) % 360.0 - 180.0)[away]
    chi_error = float(np.radians(chi_error.max())) if chi_error.size else 0.0
    target(chi_error, label="max |Δχ| (rad)")
    assert chi_error <= CHI_ATOL_RAD


@pytest.mark.parametrize("geometry", [UNTILTED, TX_ONLY, WORST_CASE,
                                      Geometry(9e5, 60.2, 70.9, 200.0, 128, 128, 1.2, -0.7, 0.5)],
                         ids=["untilted", "tx-only", "worst-case", "tilted"])
def test_two_theta_map_matches_pyfai_float64_indices(geometry):
    """Whole map, float64 path: pyFAI ``tth`` on ``np.indices(shape, dtype=float64)``."""
    rows, cols = np.indices(geometry.shape, dtype=np.float64)
    theirs = _ai(geometry).tth(rows, cols)
    ours = np.radians(geometry_module.two_theta_map(geometry))
    assert ours.shape == theirs.shape == geometry.shape
    assert np.max(np.abs(ours - theirs)) <= TTH_ATOL_RAD


@pytest.mark.parametrize("geometry", [Geometry(9e5, 60.2, 70.9, 200.0, 128, 128, 1.2, -0.7, 0.5),
                                      Geometry(2e5, -100.0, 300.0, 400.0, 128, 128, 0.0, 5.0, -5.0)],
                         ids=["tilted", "off-detector"])
def test_two_theta_map_matches_pyfai_two_theta_array_float32(geometry):
    """pyFAI's ``twoThetaArray()`` (float32 pixel positions) on a full 128² map."""
    theirs = _ai(geometry).twoThetaArray()
    ours = np.radians(geometry_module.two_theta_map(geometry))
    error = np.max(np.abs(ours - theirs))
    assert error <= FLOAT32_TTH_ATOL_RAD
