"""Untilted, undistorted single-panel render against pyFAI: ring positions from pyFAI alone.

pyFAI gives both the 2θ of every pixel (``Geometry.tth`` with float64 pixel indices; see
``test_geometry_pyfai.py`` for why not ``twoThetaArray``) and the 2θ of every CeO2 ring (its calibrant
table). The rendered rings are located in pyFAI's radial coordinate ρ = Lsd·tan 2θ with the windowed
centroid of ``ring_centroids``; neither our geometry kernels nor our ring table enter the measurement.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from ring_centroids import sector_centroids

from midas_ref.detector import Geometry
from simulate import DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig, render_expected
from simulate.config import CEO2

pyFAI = pytest.importorskip("pyFAI")
from pyFAI.calibrant import get_calibrant  # noqa: E402
from pyFAI.geometry import Geometry as PyFAIGeometry  # noqa: E402

#: Issue #4 requirement for ring positions, px.
CENTROID_TOL_PX = 0.01
WAVELENGTH_ANGSTROM = 0.172979
FWHM_PX = 2.0
GEOM = Geometry(lsd_um=250_000.0, bc_y_px=255.3, bc_z_px=250.7, px_um=200.0, n_pixels_y=512, n_pixels_z=512)


@pytest.fixture(scope="module")
def rendered():
    cfg = SimulationConfig(GEOM, Material(wavelength_angstrom=WAVELENGTH_ANGSTROM, **CEO2),
                           peak=PeakShape(fwhm_px=FWHM_PX, lorentz_fraction=0.0),
                           intensity=RingIntensity(peak_counts=10_000.0),
                           response=DetectorResponse(background_counts=100.0))
    return render_expected(cfg) - 100.0


@pytest.fixture(scope="module")
def pyfai_geometry():
    """pyFAI geometry from a PONI built by hand (not with midas_ref.convert).

    pyFAI puts pixel i's centre at (i + ½)·pixel from the detector origin, so the PONI (the beam spot for an
    untilted detector) of MIDAS BC (y, z) is poni1 = (z + ½)·px along rows, poni2 = (y + ½)·px along columns.
    """
    px_m = GEOM.px_um * 1e-6
    return PyFAIGeometry(dist=GEOM.lsd_um * 1e-6, poni1=(GEOM.bc_z_px + 0.5) * px_m,
                         poni2=(GEOM.bc_y_px + 0.5) * px_m, pixel1=px_m, pixel2=px_m,
                         wavelength=WAVELENGTH_ANGSTROM * 1e-10)


@pytest.fixture(scope="module")
def pyfai_maps(pyfai_geometry):
    """pyFAI's ρ = Lsd·tan 2θ (µm) and χ (degrees) at every pixel centre."""
    geo = pyfai_geometry
    d1, d2 = np.indices(GEOM.shape, dtype=np.float64)
    tth = geo.tth(d1, d2)
    chi = np.degrees(geo.chi(d1, d2))
    return GEOM.lsd_um * np.tan(tth), chi


def pyfai_ring_radii_px():
    calibrant = get_calibrant("CeO2")
    calibrant.wavelength = WAVELENGTH_ANGSTROM * 1e-10
    two_theta = np.unique(np.round(np.asarray(calibrant.get_2th(), dtype=np.float64), 12))
    return GEOM.lsd_um * np.tan(two_theta) / GEOM.px_um


def test_rings_sit_where_pyfai_puts_them(rendered, pyfai_maps):
    rho, chi = pyfai_maps
    radii = pyfai_ring_radii_px()
    half_window = 2.0 * FWHM_PX
    isolated = []
    for k, radius in enumerate(radii):
        gaps = np.abs(np.delete(radii, k) - radius)
        # inside the image with its window, neighbours ≥ window + 3 FWHM away (their tails < 2e-11)
        if 20 < radius < 240 and gaps.min() >= half_window + 3 * FWHM_PX:
            isolated.append(radius)
    assert len(isolated) >= 5
    for radius in isolated:
        offsets, _ = sector_centroids(rendered, rho, chi, radius * GEOM.px_um, half_window * GEOM.px_um,
                                      np.arange(-180.0, 180.0, 10.0), 10.0)
        measured = offsets[~np.isnan(offsets)] / GEOM.px_um
        assert len(measured) >= 30, radius
        assert np.max(np.abs(measured)) <= CENTROID_TOL_PX, (radius, measured)


def test_peak_fits_along_a_row_match_pyfai(rendered, pyfai_geometry):
    """Profile along one image row: a pixel-averaged Gaussian in pyFAI's ρ fitted to each isolated peak."""
    from scipy.optimize import least_squares

    row = int(round(GEOM.bc_z_px))
    profile = rendered[row]
    sub = (np.arange(8) + 0.5) / 8 - 0.5  # 8 sub-positions per pixel for the box average
    fitted = 0
    for radius in pyfai_ring_radii_px():
        if not 20 < radius < 240:
            continue
        for sign in (-1, 1):
            col = int(round(GEOM.bc_y_px + sign * radius))
            cols = np.arange(col - 4, col + 5)
            d2 = (cols[:, None] + sub[None, :]).ravel()
            rho = GEOM.lsd_um * np.tan(pyfai_geometry.tth(np.full_like(d2, row), d2)) / GEOM.px_um
            rho = rho.reshape(len(cols), len(sub))

            def residual(p):
                centre, height, fwhm = p
                model = height * np.exp(-4 * math.log(2) * ((rho - centre) / fwhm) ** 2).mean(axis=1)
                return model - profile[cols]

            fit = least_squares(residual, [radius + 0.3, profile[col], 2.5], x_scale=[1.0, 1e3, 1.0])
            others = np.abs(pyfai_ring_radii_px() - radius)
            if np.sort(others)[1] < 8.0:  # a neighbour inside the fitted columns
                continue
            assert abs(fit.x[0] - radius) <= CENTROID_TOL_PX, (radius, sign, fit.x)
            assert fit.x[2] == pytest.approx(FWHM_PX, rel=1e-3)
            fitted += 1
    assert fitted >= 10
