"""Tests of midas_ref.convert: MIDAS ↔ PONI ↔ Fit2D round trips, pyFAI's own Fit2D converter and PONI
reader as oracles, PONI / Fit2D files, the up-down flip, and the ``export`` CLI.

Tolerances (all far above float64 rounding, far below anything physical):

* ``BC_ATOL_PX = 1e-9`` px — the conversions take ~10 float64 operations on positions of at most a few
  metres, i.e. ~1e-15 m ≈ 1e-11 px at 50 µm pixels; 1e-9 px = 50 fm is still nothing physically.
* ``LSD_RTOL = 1e-9`` — 1 nm at 1 m.
* ``ANGLE_ATOL_DEG = 1e-9`` deg ≈ 2e-11 rad.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from midas_ref.convert import (Fit2DGeometry, PoniGeometry, fit2d_to_midas, flip_poni_ud, midas_to_fit2d, midas_to_poni,
                               poni_text, poni_to_midas, read_fit2d, read_poni, write_fit2d, write_poni)
from midas_ref.detector import Geometry
from midas_ref.errors import GeometryError, ParameterFileError

pyFAI = pytest.importorskip("pyFAI")
from pyFAI.detectors import Detector  # noqa: E402
from pyFAI.integrator.azimuthal import AzimuthalIntegrator  # noqa: E402

BC_ATOL_PX = 1e-9
LSD_RTOL = 1e-9
ANGLE_ATOL_DEG = 1e-9
#: pyFAI float64 2θ of the same pixel from two equivalent geometries: rounding only (~1e-15 rad).
TTH_ATOL_RAD = 1e-12
EPS = np.finfo(np.float64).eps


def _angle_diff_deg(a, b):
    """Difference of two angles in degrees, wrapped to [−180, 180)."""
    return (np.asarray(a) - np.asarray(b) + 180.0) % 360.0 - 180.0


def _ai(poni: PoniGeometry) -> AzimuthalIntegrator:
    detector = Detector(pixel1=poni.pixel1_m, pixel2=poni.pixel2_m, max_shape=poni.shape)
    return AzimuthalIntegrator(dist=poni.dist_m, poni1=poni.poni1_m, poni2=poni.poni2_m, rot1=poni.rot1_rad,
                               rot2=poni.rot2_rad, rot3=poni.rot3_rad, detector=detector,
                               wavelength=poni.wavelength_m)


@st.composite
def realistic_geometries(draw, max_tilt_deg=5.0, tx=True):
    """Flat detectors as at beamlines: Lsd 0.1–2 m, 50–400 µm pixels, BC anywhere incl. off-detector."""
    n_y = draw(st.integers(64, 4096))
    n_z = draw(st.integers(64, 4096))
    tilt = st.floats(-max_tilt_deg, max_tilt_deg, allow_nan=False)
    return Geometry(lsd_um=draw(st.floats(1e5, 2e6)), bc_y_px=draw(st.floats(-n_y, 2.0 * n_y)),
                    bc_z_px=draw(st.floats(-n_z, 2.0 * n_z)), px_um=draw(st.floats(50.0, 400.0)),
                    n_pixels_y=n_y, n_pixels_z=n_z, tx_deg=draw(tilt) if tx else 0.0, ty_deg=draw(tilt),
                    tz_deg=draw(tilt))


def extreme_geometries():
    """Tilts up to ±60° about each axis (tx: full turn), distances 1 cm–10 m."""
    return st.builds(Geometry, lsd_um=st.floats(1e4, 1e7), bc_y_px=st.floats(-1e4, 1e4),
                     bc_z_px=st.floats(-1e4, 1e4), px_um=st.floats(1.0, 1000.0), n_pixels_y=st.integers(2, 8192),
                     n_pixels_z=st.integers(2, 8192), tx_deg=st.floats(-180.0, 180.0),
                     ty_deg=st.floats(-60.0, 60.0), tz_deg=st.floats(-60.0, 60.0))


def assert_same_geometry(got: Geometry, want: Geometry, tx: bool = True):
    # The beam centre passes through poni = (BC + ½)·px − Lsd·(sin…): rounding of that metre-scale lever
    # arm costs ~EPS·Lsd/px px, 1e-13 px for real detectors but 2e-9 px at 10 m with 1 µm pixels
    # (extreme_geometries); allow 64 roundings of it on top of BC_ATOL_PX.
    bc_atol = BC_ATOL_PX + 64 * EPS * want.lsd_um / want.px_um
    assert got.lsd_um == pytest.approx(want.lsd_um, rel=LSD_RTOL)
    assert got.bc_y_px == pytest.approx(want.bc_y_px, abs=bc_atol)
    assert got.bc_z_px == pytest.approx(want.bc_z_px, abs=bc_atol)
    assert got.px_um == pytest.approx(want.px_um, rel=1e-12)  # one multiply and one divide by 1e-6
    assert got.shape == want.shape
    for name in ("tx_deg", "ty_deg", "tz_deg") if tx else ("ty_deg", "tz_deg"):
        assert abs(_angle_diff_deg(getattr(got, name), getattr(want, name))) <= ANGLE_ATOL_DEG, name


# ------------------------------------------------------------------------------------ round trips

UNTILTED = Geometry(1e6, 1023.5, 1023.5, 200.0, 2048, 2048)


@given(geometry=st.one_of(realistic_geometries(), extreme_geometries()))
@example(geometry=UNTILTED)
@example(geometry=Geometry(9e5, -300.0, 5000.0, 172.0, 981, 1043, tx_deg=1.2, ty_deg=-0.7, tz_deg=0.5))
@example(geometry=Geometry(9118907.0, 6236.75, 0.0, 1.0, 2, 2, ty_deg=1.0, tz_deg=-25.0))  # lever arm 1e7 px
def test_midas_poni_midas_round_trip(geometry):
    poni = midas_to_poni(geometry, wavelength_angstrom=0.3)
    assert poni.shape == geometry.shape
    assert poni.wavelength_m == pytest.approx(0.3e-10, rel=1e-15)
    assert_same_geometry(poni_to_midas(poni), geometry)


@given(geometry=st.one_of(realistic_geometries(tx=False), extreme_geometries().map(
    lambda g: Geometry(g.lsd_um, g.bc_y_px, g.bc_z_px, g.px_um, g.n_pixels_y, g.n_pixels_z, 0.0, g.ty_deg,
                       g.tz_deg))))
@example(geometry=UNTILTED)
def test_midas_fit2d_midas_round_trip(geometry):
    fit2d = midas_to_fit2d(geometry)
    back = fit2d_to_midas(fit2d, n_pixels_y=geometry.n_pixels_y, n_pixels_z=geometry.n_pixels_z)
    assert_same_geometry(back, geometry)


def test_poni_to_midas_takes_shape_and_rho_d():
    poni = midas_to_poni(UNTILTED)
    v1_like = PoniGeometry(**{**poni.__dict__, "shape": None})
    with pytest.raises(GeometryError, match="n_pixels_y"):
        poni_to_midas(v1_like)
    geometry = poni_to_midas(v1_like, n_pixels_y=2048, n_pixels_z=2048, rho_d_um=2e5)
    assert geometry.rho_d_um == 2e5
    assert_same_geometry(geometry, UNTILTED)


def test_non_square_pixels_are_refused():
    poni = PoniGeometry(1.0, 0.1, 0.1, 0.0, 0.0, 0.0, 1e-4, 1.5e-4, shape=(10, 10))
    with pytest.raises(GeometryError, match="not square"):
        poni_to_midas(poni)
    with pytest.raises(GeometryError, match="not square"):
        fit2d_to_midas(Fit2DGeometry(1000.0, 5.0, 5.0, 0.0, 0.0, 100.0, 150.0), n_pixels_y=10, n_pixels_z=10)


@pytest.mark.parametrize("name", ["p0", "p1", "p2", "p3_deg", "p4", "p5"])
def test_distortion_is_refused_unless_ignored(name):
    geometry = Geometry(1e6, 1000.0, 1000.0, 200.0, 2048, 2048, ty_deg=0.3, **{name: 1e-4})
    for convert in (midas_to_poni, midas_to_fit2d):
        with pytest.raises(GeometryError, match=name):
            convert(geometry)
    undistorted = Geometry(1e6, 1000.0, 1000.0, 200.0, 2048, 2048, ty_deg=0.3)
    assert midas_to_poni(geometry, ignore_distortion=True) == midas_to_poni(undistorted)
    assert midas_to_fit2d(geometry, ignore_distortion=True) == midas_to_fit2d(undistorted)


def test_fit2d_refuses_tx_unless_ignored():
    geometry = Geometry(1e6, 1000.0, 1000.0, 200.0, 2048, 2048, tx_deg=0.5, ty_deg=0.3)
    with pytest.raises(GeometryError, match="tx"):
        midas_to_fit2d(geometry)
    assert midas_to_fit2d(geometry, ignore_tx=True) == midas_to_fit2d(
        Geometry(1e6, 1000.0, 1000.0, 200.0, 2048, 2048, ty_deg=0.3))


# -------------------------------------------------------------------------- pyFAI's Fit2D converter

# pyFAI's getFit2D is less accurate than our converter for small tilts, and the tolerances follow its
# conditioning (EPS = float64 epsilon):
# * tilt = acos(cos rot1·cos rot2): error ≈ EPS/sin(tilt) rad;
# * sin(tilt) = √(1 − cos²tilt): relative error ≈ EPS/tilt², passed on to tan(tilt) and to the beam
#   centre offset dist·tan(tilt) → centre error ≈ EPS·dist/(tilt·pixel) px;
# * tpr = ±acos(cos tpr) with that cos: near tpr = 0°/180° its error is √(2·EPS)/tilt rad, so the tilt
#   vector sin(tilt)·(cos tpr, sin tpr) is good to ~√EPS ≈ 1.5e-8 whatever the tilt.
# Below 1e-5° pyFAI also drops the centreY tilt term on purpose. Each bound gets a ×4 safety factor.


@given(geometry=realistic_geometries(tx=False))
@example(geometry=Geometry(1e6, 1023.5, 1023.5, 200.0, 2048, 2048, ty_deg=0.4, tz_deg=-0.3))
@example(geometry=Geometry(1e6, 1023.5, 1023.5, 200.0, 2048, 2048, tz_deg=2.0))  # tpr = 0° exactly
@example(geometry=Geometry(1e6, 1023.5, 1023.5, 200.0, 2048, 2048, ty_deg=-2.0))  # tpr = −90°
@example(geometry=Geometry(1e5, 0.0, 0.0, 50.0, 64, 64, tz_deg=0.25))  # found by hypothesis: acos(≈1)
@example(geometry=Geometry(1e5, 0.0, 0.0, 244.5, 64, 64))  # found by hypothesis: 244.5e-6·1e6 ≠ 244.5
@example(geometry=Geometry(1e5, 0.0, 0.0, 50.0, 64, 64, ty_deg=1e-5))  # found by hypothesis: pyFAI's cut
def test_fit2d_matches_pyfai_getfit2d(geometry):
    ours = midas_to_fit2d(geometry, wavelength_angstrom=0.5)
    theirs = _ai(midas_to_poni(geometry, wavelength_angstrom=0.5)).getFit2D()
    assert ours.direct_dist_mm == pytest.approx(theirs["directDist"], rel=LSD_RTOL)
    assert ours.pixel_x_um == pytest.approx(theirs["pixelX"], rel=4 * EPS)  # pyFAI: pixel_m·1e6, one rounding
    assert ours.pixel_y_um == pytest.approx(theirs["pixelY"], rel=4 * EPS)
    assert ours.wavelength_angstrom == pytest.approx(theirs["wavelength"], rel=1e-15)

    def tilt_vector(tilt_deg, tpr_deg):
        tilt, tpr = math.radians(tilt_deg), math.radians(tpr_deg)
        return math.sin(tilt) * np.array([math.cos(tpr), math.sin(tpr)])

    np.testing.assert_allclose(tilt_vector(ours.tilt_deg, ours.tilt_plan_rotation_deg),
                               tilt_vector(theirs["tilt"], theirs["tiltPlanRotation"]), rtol=0,
                               atol=4 * math.sqrt(EPS))
    tilt_rad = math.radians(ours.tilt_deg)
    if tilt_rad > 0:
        assert math.radians(ours.tilt_deg - theirs["tilt"]) == pytest.approx(0, abs=1e-12 + 4 * EPS / tilt_rad)
    # pyFAI switches the tilt term of the centre off below a tilt of 1e-5°, judged on its own tilt, which
    # its acos() gives to ~EPS/sin(tilt) (0.7 % at 1e-5°): just above the cut either side is possible, so the
    # centres are compared from 1.1e-5° on (hypothesis found ty = 1e-5° exactly)
    if ours.tilt_deg >= 1.1e-5:
        centre_atol = BC_ATOL_PX + 4 * EPS * geometry.lsd_um / (tilt_rad * geometry.px_um)
        assert ours.center_x_px == pytest.approx(theirs["centerX"], abs=centre_atol)
        assert ours.center_y_px == pytest.approx(theirs["centerY"], abs=centre_atol)


@pytest.mark.parametrize("geometry", [Geometry(1e6, 1023.5, 1023.5, 200.0, 2048, 2048, ty_deg=0.4, tz_deg=-0.3),
                                      Geometry(1.5e6, -200.0, 3000.0, 75.0, 4096, 4096, ty_deg=-4.0, tz_deg=3.0)])
def test_fit2d_matches_pyfai_getfit2d_tightly_for_clear_tilts(geometry):
    """With tilts of 0.5° and more, pyFAI's acos() and √(1 − cos²) cost ≲ 1e-11: compare at our 1e-9."""
    ours = midas_to_fit2d(geometry)
    theirs = _ai(midas_to_poni(geometry)).getFit2D()
    assert ours.tilt_deg == pytest.approx(theirs["tilt"], abs=ANGLE_ATOL_DEG)
    assert ours.tilt_plan_rotation_deg == pytest.approx(theirs["tiltPlanRotation"], abs=ANGLE_ATOL_DEG)
    assert ours.center_x_px == pytest.approx(theirs["centerX"], abs=BC_ATOL_PX)
    assert ours.center_y_px == pytest.approx(theirs["centerY"], abs=BC_ATOL_PX)


@pytest.mark.parametrize("tilt_deg, tpr_deg", [(0.0, 0.0), (0.5, 30.0), (3.0, -120.0), (1.0, 90.0), (2.0, 180.0)])
def test_fit2d_to_midas_matches_pyfai_setfit2d(tilt_deg, tpr_deg):
    """Same 2θ everywhere as pyFAI's setFit2D. pyFAI also sets a non-zero rot3 there (χ only), and takes
    rot1 from acos() (error ~eps/rot1), so the comparison is on 2θ, plus dist / poni1 / poni2 / rot2."""
    fit2d = Fit2DGeometry(direct_dist_mm=850.0, center_x_px=1010.3, center_y_px=990.8, tilt_deg=tilt_deg,
                          tilt_plan_rotation_deg=tpr_deg, pixel_x_um=200.0, pixel_y_um=200.0)
    poni = midas_to_poni(fit2d_to_midas(fit2d, n_pixels_y=2048, n_pixels_z=2048))
    ai = AzimuthalIntegrator(detector=Detector(2e-4, 2e-4, max_shape=(2048, 2048)))
    ai.setFit2D(850.0, 1010.3, 990.8, tilt=tilt_deg, tiltPlanRotation=tpr_deg)
    assert poni.dist_m == pytest.approx(ai.dist, rel=LSD_RTOL)
    assert poni.poni1_m == pytest.approx(ai.poni1, abs=BC_ATOL_PX * 2e-4)
    assert poni.poni2_m == pytest.approx(ai.poni2, abs=BC_ATOL_PX * 2e-4)
    assert poni.rot2_rad == pytest.approx(ai.rot2, abs=1e-12)  # asin(), accurate
    rows, cols = np.meshgrid(np.linspace(-100, 2200, 24), np.linspace(-100, 2200, 24), indexing="ij")
    np.testing.assert_allclose(_ai(poni).tth(rows, cols), ai.tth(rows, cols), rtol=0, atol=1e-9)


# --------------------------------------------------------------------------------------- PONI files

def _poni_fields(ai) -> tuple:
    shape = ai.detector.max_shape
    return (ai.dist, ai.poni1, ai.poni2, ai.rot1, ai.rot2, ai.rot3, ai.detector.pixel1, ai.detector.pixel2,
            ai.wavelength, None if shape is None else tuple(shape))


@given(geometry=realistic_geometries())
@example(geometry=UNTILTED)
@settings(deadline=None, max_examples=30)  # file I/O per example
def test_written_poni_is_read_back_exactly_by_pyfai_and_us(geometry, tmp_path_factory):
    path = tmp_path_factory.mktemp("poni") / "out.poni"
    poni = midas_to_poni(geometry, wavelength_angstrom=0.1729)
    write_poni(path, poni)
    # repr() of a float round-trips exactly, so the numbers must be equal, not just close
    assert _poni_fields(pyFAI.load(str(path))) == (poni.dist_m, poni.poni1_m, poni.poni2_m, poni.rot1_rad,
                                                   poni.rot2_rad, poni.rot3_rad, poni.pixel1_m, poni.pixel2_m,
                                                   poni.wavelength_m, poni.shape)
    assert read_poni(path) == poni


def test_written_poni_layout(tmp_path):
    write_poni(tmp_path / "a.poni", midas_to_poni(UNTILTED))
    lines = (tmp_path / "a.poni").read_text().splitlines()
    assert lines[0] == "# Nota: C-Order, 1 refers to the Y axis, 2 to the X axis"
    assert lines[1].startswith("# midas-ref") and "version 2" in lines[1] and "rows" in lines[1]
    assert lines[2:5] == ["poni_version: 2", "Detector: Detector",
                          'Detector_config: {"pixel1": 0.0002, "pixel2": 0.0002, "max_shape": [2048, 2048]}']
    assert [line.split(":")[0] for line in lines[5:]] == ["Distance", "Poni1", "Poni2", "Rot1", "Rot2", "Rot3"]


@pytest.mark.parametrize("parts", [("pilatus1m_ceo2_cpf", "CeO2_cal_Dioptas.poni"),
                                   ("pilatus1m_ceo2_dioptas", "CeO2_Pilatus1M.poni")])
def test_read_real_v1_poni_files_like_pyfai(parts, shared_dir):
    path = shared_dir.joinpath("data", "real", *parts)
    if not path.exists():
        pytest.skip(f"reference file {path} not present")
    poni = read_poni(path)
    ai = pyFAI.load(str(path))
    assert poni.shape is None  # v1 files carry no detector shape
    assert (poni.dist_m, poni.poni1_m, poni.poni2_m, poni.rot1_rad, poni.rot2_rad, poni.rot3_rad,
            poni.pixel1_m, poni.pixel2_m, poni.wavelength_m) == _poni_fields(ai)[:-1]


def test_read_v2_named_detector_through_pyfai(tmp_path):
    path = tmp_path / "named.poni"
    path.write_text("poni_version: 2.1\nDetector: Pilatus1M\nDetector_config: {\"orientation\": 3}\n"
                    "Distance: 0.2\nPoni1: 0.09\nPoni2: 0.08\nRot1: 0.001\nRot2: -0.002\nRot3: 0.0\n")
    poni = read_poni(path)
    assert (poni.pixel1_m, poni.pixel2_m, poni.shape) == (172e-6, 172e-6, (1043, 981))
    assert poni.wavelength_m is None


@pytest.mark.parametrize("text, error, match", [
    ("Distance: 0.2\n", ParameterFileError, "pixel size"),
    ("PixelSize1: 1e-4\nPixelSize2: 1e-4\nPoni1: 0.1\n", ParameterFileError, "Distance"),
    ("PixelSize1: 1e-4\nPixelSize2: 1e-4\nDistance: abc\n", ParameterFileError, "not a number"),
    ("Detector_config: {\"pixel1\": 1e-4, \"pixel2\": 1e-4, \"orientation\": 2}\n", GeometryError, "orientation"),
    ("PixelSize1: 1e-4\nPixelSize2: 1e-4\nSplineFile: frelon.spline\n", GeometryError, "spline"),
    ("Detector_config: {not json}\n", ParameterFileError, "JSON"),
    ("Distance 0.2\n", ParameterFileError, "line 1"),
    ("Detector_config: {\"pixel1\": null, \"pixel2\": 1e-4}\n", ParameterFileError, "numbers"),
    ("Detector_config: {\"pixel1\": 1e-4, \"pixel2\": 1e-4, \"max_shape\": [0, 5]}\n", ParameterFileError,
     "positive"),
    ("Detector_config: [1, 2]\n", ParameterFileError, "JSON object"),
    ("Detector: NoSuchDetector\nDistance: 0.2\n", GeometryError, "NoSuchDetector"),
])
def test_read_poni_errors(tmp_path, text, error, match):
    path = tmp_path / "bad.poni"
    path.write_text(text)
    with pytest.raises(error, match=match):
        read_poni(path)


def test_read_poni_missing_file(tmp_path):
    with pytest.raises(ParameterFileError, match="cannot read"):
        read_poni(tmp_path / "absent.poni")


# -------------------------------------------------------------------------------------- Fit2D files

@given(geometry=realistic_geometries(tx=False))
@settings(deadline=None, max_examples=30)
def test_fit2d_file_round_trip(geometry, tmp_path_factory):
    path = tmp_path_factory.mktemp("fit2d") / "out.fit2d.txt"
    fit2d = midas_to_fit2d(geometry, wavelength_angstrom=0.2)
    write_fit2d(path, fit2d)
    assert read_fit2d(path) == fit2d  # repr() round-trips floats exactly
    assert path.read_text().startswith("# midas-ref Fit2D geometry, format version 1")


def test_fit2d_file_without_wavelength(tmp_path):
    fit2d = midas_to_fit2d(UNTILTED)
    write_fit2d(tmp_path / "f.txt", fit2d)
    assert "wavelength" not in (tmp_path / "f.txt").read_text().split("\n", 2)[2]
    assert read_fit2d(tmp_path / "f.txt") == fit2d


# ------------------------------------------------------------------------------- up-down image flip

@pytest.mark.parametrize("geometry", [
    Geometry(1e6, 300.0, 200.0, 200.0, 512, 512),
    Geometry(2.1e5, 480.2, 510.7, 172.0, 981, 1043, tx_deg=0.8, ty_deg=-1.3, tz_deg=2.1),
    Geometry(5e5, -40.0, 1200.0, 100.0, 640, 480, tx_deg=-30.0, ty_deg=4.0, tz_deg=-3.0),
], ids=["untilted", "pilatus-tilted", "off-detector"])
def test_flip_poni_ud_is_the_flipped_image_geometry(geometry):
    poni = midas_to_poni(geometry)
    flipped = flip_poni_ud(poni)
    twice = flip_poni_ud(flipped)
    assert twice.poni1_m == pytest.approx(poni.poni1_m, abs=1e-15) and twice.rot2_rad == poni.rot2_rad
    rows, cols = np.indices(poni.shape, dtype=np.float64)  # float64 indices: pyFAI's float64 path
    ai, ai_flipped = _ai(poni), _ai(flipped)
    tth, tth_flipped = ai.tth(rows, cols), ai_flipped.tth(rows, cols)
    np.testing.assert_allclose(tth_flipped, tth[::-1, :], rtol=0, atol=TTH_ATOL_RAD)
    # χ mirrors: χ' = −χ (skip the few pixels next to the beam spot, where χ is ill-defined)
    chi, chi_flipped = np.degrees(ai.chi(rows, cols)), np.degrees(ai_flipped.chi(rows, cols))
    away = tth[::-1, :] > 1e-3
    assert np.abs(_angle_diff_deg(chi_flipped, -chi[::-1, :]))[away].max() <= ANGLE_ATOL_DEG
    # and it is not the identity: the unflipped geometry does not fit the flipped image
    assert np.abs(tth_flipped - tth).max() > 1e-6


def test_flip_poni_ud_needs_shape():
    with pytest.raises(GeometryError, match="shape"):
        flip_poni_ud(PoniGeometry(1.0, 0.1, 0.1, 0.0, 0.0, 0.0, 1e-4, 1e-4))


# ------------------------------------------------------------------------------------ export CLI

PARAMS_TEXT = ("Lsd 1000000\nBC 1023.4 990.2\npx 200\nNrPixelsY 300\nNrPixelsZ 256\n"
               "tx 0.5\nty 0.3\ntz -0.2\nWavelength 0.1729\n")


def _export(*argv):
    from midas_ref.cli import main
    return main(["export", *map(str, argv)])


def test_export_cli_poni_loads_in_pyfai_with_our_two_theta(tmp_path, capsys):
    from midas_ref.geometry import two_theta_map
    from midas_ref.params import geometry_from_params, read_parameter_file

    (tmp_path / "p.txt").write_text(PARAMS_TEXT)
    assert _export("-paramFN", tmp_path / "p.txt", "--format", "poni", "-o", tmp_path / "out.poni") == 0
    assert capsys.readouterr().err.strip() == f"wrote {tmp_path / 'out.poni'}"
    geometry = geometry_from_params(read_parameter_file(tmp_path / "p.txt"))
    ai = pyFAI.load(str(tmp_path / "out.poni"))
    assert ai.detector.max_shape == (256, 300) and ai.wavelength == 0.1729 / 1e10
    # float64 indices: pyFAI's float64 path (twoThetaArray() would use float32 positions, ~1e-8 rad)
    rows, cols = np.indices(geometry.shape, dtype=np.float64)
    assert np.max(np.abs(ai.tth(rows, cols) - np.radians(two_theta_map(geometry)))) <= 1e-9


def test_export_cli_fit2d_default_output_and_stdout(tmp_path, capsys):
    from midas_ref.params import geometry_from_params, read_parameter_file

    (tmp_path / "p.txt").write_text(PARAMS_TEXT)
    geometry = geometry_from_params(read_parameter_file(tmp_path / "p.txt"))
    assert _export("--param-fn", tmp_path / "p.txt", "--format", "fit2d", "--ignore-tx") == 0
    assert read_fit2d(tmp_path / "p.fit2d.txt") == midas_to_fit2d(geometry, 0.1729, ignore_tx=True)
    capsys.readouterr()
    assert _export("-paramFN", tmp_path / "p.txt", "-o", "-") == 0  # poni is the default format
    assert capsys.readouterr().out == poni_text(midas_to_poni(geometry, 0.1729))
    assert not (tmp_path / "p.poni").exists()  # '-o -' writes nothing beside the parameter file


@pytest.mark.parametrize("extra_lines, argv, match", [
    ("p2 0.001\n", ["--format", "poni"], "--ignore-distortion"),
    ("", ["--format", "fit2d"], "--ignore-tx"),
    ("PanelShiftsFile shifts.txt\n", ["--format", "poni"], "--ignore-panels"),
])
def test_export_cli_refuses_what_the_format_cannot_hold(tmp_path, capsys, extra_lines, argv, match):
    (tmp_path / "p.txt").write_text(PARAMS_TEXT + extra_lines)
    assert _export("-paramFN", tmp_path / "p.txt", *argv, "-o", tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("midas-ref export: error:") and match in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_export_cli_missing_parameter_file(tmp_path, capsys):
    assert _export("-paramFN", tmp_path / "absent.txt") == 2
    assert "absent.txt" in capsys.readouterr().err


def test_export_cli_help_ends_with_an_example(capsys):
    with pytest.raises(SystemExit) as exc:
        _export("--help")
    assert exc.value.code == 0
    assert "midas-ref export -paramFN refined_params.txt --format poni -o refined.poni" in capsys.readouterr().out
