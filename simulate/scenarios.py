"""Named scenario presets with realistic detector, geometry and material numbers.

Every preset also exists noise-free as ``<name>_noisefree`` (no Poisson, read or dark-pattern noise, no bad
pixels; background, dark level, gaps and saturation stay). Panel shifts of the tiled presets are fixed
numbers (drawn once from a hard-coded seed), so a scenario's truth does not depend on ``--seed``.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from midas_ref.detector import Geometry, PanelLayout, PanelShift
from midas_ref.panels import Panels

from .config import CEO2, LAB6, DetectorResponse, Material, PeakShape, RingIntensity, SimulationConfig, SimulationError

__all__ = ["SCENARIOS", "NOISE_FREE_SUFFIX", "scenario", "scenario_names", "list_scenarios"]

NOISE_FREE_SUFFIX = "_noisefree"
#: λ of the APS 1-ID / 11-ID calibrations (71.676 keV), Å.
_LAMBDA_APS = 0.172979


def _panel_shifts(layout: PanelLayout, fixed: int, shift_px: float, rotation_deg: float, seed: int) -> Panels:
    """Uniform shifts in ±shift_px and rotations in ±rotation_deg, panel ``fixed`` at zero."""
    rng = np.random.default_rng(seed)
    shifts = []
    for pid in range(layout.n_panels):
        dy, dz = rng.uniform(-shift_px, shift_px, 2)
        dtheta = rng.uniform(-rotation_deg, rotation_deg)
        shifts.append(PanelShift(pid) if pid == fixed else
                      PanelShift(pid, round(float(dy), 4), round(float(dz), 4), round(float(dtheta), 5)))
    return Panels(layout, tuple(shifts))


def _ge2048() -> SimulationConfig:
    geometry = Geometry(lsd_um=1_000_000.0, bc_y_px=1027.3, bc_z_px=1021.3, px_um=200.0, n_pixels_y=2048,
                        n_pixels_z=2048, ty_deg=0.35, tz_deg=-0.25, p0=2e-4, p1=-1e-4, p2=1.5e-4, p3_deg=30.0)
    return SimulationConfig(
        geometry, Material(wavelength_angstrom=_LAMBDA_APS, **CEO2),
        peak=PeakShape(fwhm_px=2.5, lorentz_fraction=0.4), intensity=RingIntensity(peak_counts=20000.0),
        response=DetectorResponse(background_counts=200.0, dtype="uint16"), name="ge2048",
        description="GE 41RT 2048² × 200 µm, CeO2 at 71.7 keV, Lsd 1 m, ty/tz 0.35°/−0.25°, p0–p3 distortion")


def _varex2880() -> SimulationConfig:
    geometry = Geometry(lsd_um=900_000.0, bc_y_px=1441.7, bc_z_px=1436.2, px_um=150.0, n_pixels_y=2880,
                        n_pixels_z=2880, ty_deg=-0.21, tz_deg=0.43, p0=-1.2e-4, p1=5e-5, p2=8e-5, p3_deg=-40.0)
    return SimulationConfig(
        geometry, Material(wavelength_angstrom=_LAMBDA_APS, **CEO2),
        peak=PeakShape(fwhm_px=2.0, lorentz_fraction=0.5), intensity=RingIntensity(peak_counts=20000.0),
        response=DetectorResponse(background_counts=200.0, read_noise_counts=3.0, dtype="uint16"),
        name="varex2880",
        description="Varex 4343CT 2880² × 150 µm, CeO2 at 71.7 keV, Lsd 900 mm, small tilts and distortion")


def _pilatus2m() -> SimulationConfig:
    layout = PanelLayout(3, 8, 487, 195, (7, 7), (17,) * 7)
    geometry = Geometry(lsd_um=350_000.0, bc_y_px=740.2, bc_z_px=851.6, px_um=172.0, n_pixels_y=1475,
                        n_pixels_z=1679, ty_deg=0.12, tz_deg=-0.08)
    return SimulationConfig(
        geometry, Material(wavelength_angstrom=0.4959, **CEO2),
        panels=_panel_shifts(layout, fixed=0, shift_px=0.8, rotation_deg=0.08, seed=172_487),
        peak=PeakShape(fwhm_px=2.0, lorentz_fraction=0.5), intensity=RingIntensity(peak_counts=20000.0),
        response=DetectorResponse(background_counts=200.0, bad_pixel_fraction=1e-4, dtype="int32",
                                  saturation_counts=1_048_575.0),
        name="pilatus2m",
        description="Pilatus 2M 1475 × 1679 × 172 µm, 3 × 8 modules (gaps 7/17 px, shifts ≤ 0.8 px, "
                    "rotations ≤ 0.08°), CeO2 at 25 keV, Lsd 350 mm, int32")


def _dexela4() -> SimulationConfig:
    layout = PanelLayout(2, 2, 972, 768, (0,), (0,))
    geometry = Geometry(lsd_um=750_000.0, bc_y_px=980.4, bc_z_px=760.9, px_um=149.6, n_pixels_y=1944,
                        n_pixels_z=1536, ty_deg=0.2, tz_deg=-0.15, p0=5e-5, p2=-6e-5)
    return SimulationConfig(
        geometry, Material(wavelength_angstrom=_LAMBDA_APS, **CEO2),
        panels=_panel_shifts(layout, fixed=0, shift_px=0.5, rotation_deg=0.05, seed=2923),
        peak=PeakShape(fwhm_px=2.5, lorentz_fraction=0.4), intensity=RingIntensity(peak_counts=20000.0),
        response=DetectorResponse(background_counts=200.0, read_noise_counts=5.0, dark_counts=100.0,
                                  dark_noise_counts=3.0, dtype="uint16"),
        name="dexela4",
        description="Dexela 2923 (2 × 2 binned) 1944 × 1536 × 149.6 µm, 2 × 2 sub-panels with shifts, dark "
                    "frame, CeO2, Lsd 750 mm")


def _offset_bc() -> SimulationConfig:
    geometry = Geometry(lsd_um=1_000_000.0, bc_y_px=-310.4, bc_z_px=1100.7, px_um=200.0, n_pixels_y=2048,
                        n_pixels_z=2048, ty_deg=-0.3, tz_deg=0.2, p2=1e-4)
    return SimulationConfig(
        geometry, Material(wavelength_angstrom=_LAMBDA_APS, **CEO2),
        peak=PeakShape(fwhm_px=2.5, lorentz_fraction=0.4), intensity=RingIntensity(peak_counts=20000.0),
        response=DetectorResponse(background_counts=200.0, dtype="uint16"), name="offset_bc",
        description="2048² × 200 µm with the beam centre 310 px off the left edge: only ring arcs, CeO2, Lsd 1 m")


def _lab6_short() -> SimulationConfig:
    geometry = Geometry(lsd_um=250_000.0, bc_y_px=1019.6, bc_z_px=1030.2, px_um=200.0, n_pixels_y=2048,
                        n_pixels_z=2048, ty_deg=0.5, tz_deg=-0.3, p2=-1e-4)
    return SimulationConfig(
        geometry, Material(wavelength_angstrom=_LAMBDA_APS, **LAB6),
        peak=PeakShape(fwhm_two_theta_deg=0.07, lorentz_fraction=0.5),
        intensity=RingIntensity(peak_counts=20000.0, weighting="multiplicity"),
        response=DetectorResponse(background_counts=200.0, dtype="uint16"), name="lab6_short",
        description="LaB6 at Lsd 250 mm on 2048² × 200 µm: 2θ up to 49°, hundreds of rings, FWHM 0.07° in 2θ, "
                    "multiplicity-weighted")


#: Preset name → builder.
SCENARIOS = {"ge2048": _ge2048, "varex2880": _varex2880, "pilatus2m": _pilatus2m, "dexela4": _dexela4,
             "offset_bc": _offset_bc, "lab6_short": _lab6_short}


def scenario_names() -> list[str]:
    """Every valid scenario name: the presets, then their noise-free forms."""
    return list(SCENARIOS) + [name + NOISE_FREE_SUFFIX for name in SCENARIOS]


def scenario(name: str, **changes) -> SimulationConfig:
    """The preset ``name`` (``<preset>_noisefree`` for the noise-free form), with fields replaced by ``changes``.

    Raises
    ------
    SimulationError
        Unknown name (the message lists the valid ones).

    Examples
    --------
    >>> cfg = scenario("ge2048_noisefree", seed=7)
    >>> cfg.geometry.n_pixels_y, cfg.response.poisson, cfg.seed
    (2048, False, 7)
    """
    base, noise_free = (name[:-len(NOISE_FREE_SUFFIX)], True) if name.endswith(NOISE_FREE_SUFFIX) else (name, False)
    if base not in SCENARIOS:
        raise SimulationError(f"unknown scenario {name!r}; valid: {', '.join(scenario_names())}")
    config = SCENARIOS[base]()
    if noise_free:
        config = replace(config.noise_free(), name=name, description=config.description + " (noise-free)")
    return replace(config, **changes) if changes else config


def list_scenarios() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every preset (noise-free forms not repeated)."""
    return [(name, builder().description) for name, builder in SCENARIOS.items()]
