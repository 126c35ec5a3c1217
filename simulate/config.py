"""What to simulate: small frozen parameter groups and the :class:`SimulationConfig` that bundles them.

Every number carries its unit in its name (µm, px, degrees, Å, counts). Validation happens here, at the
public edge; the render kernels trust their inputs. Bad values raise :class:`SimulationError`, a
:class:`~midas_ref.errors.MidasRefError`, so the CLI reports them in one line with exit code 2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np

from midas_ref.detector import Geometry
from midas_ref.errors import MidasRefError
from midas_ref.panels import Panels

__all__ = ["SimulationError", "Material", "PeakShape", "RingIntensity", "DetectorResponse", "SimulationConfig",
           "DEFAULT_SUPERSAMPLE", "TAIL_CUTOFF_REL", "NEAR_ZONE_FWHM", "NEAR_ZONE_PX", "MID_ZONE_FWHM", "MID_ZONE_PX",
           "DTYPES", "CEO2", "LAB6"]

#: Pixel integration: n × n Gauss–Legendre nodes per pixel (docs/simulate.md, "Pixel integration").
DEFAULT_SUPERSAMPLE = 4
#: Zones of the adaptive pixel rule (render_kernels). With Γ the FWHM and d the distance from a ring centre
#: to the nearest point of a pixel (both in pixels of r): d < NEAR_ZONE_FWHM·Γ + NEAR_ZONE_PX needs the full
#: n × n rule; d < MID_ZONE_FWHM·Γ + MID_ZONE_PX the 2 × 2 rule; farther, the pixel-centre value is enough.
#: Derived from the 1-D quadrature error of a pseudo-Voigt (worst Lorentzian fraction): each rule stays
#: within 1e-5 of the peak height of the exact pixel mean for FWHM ≥ 0.7 px, and the centre rule within
#: ~1e-6 so that the tails of many overlapping rings add up to < 1e-5 (docs/simulate.md); the tests compare
#: against the full rule everywhere.
NEAR_ZONE_FWHM = 1.2
NEAR_ZONE_PX = 1.2
MID_ZONE_FWHM = 4.0
MID_ZONE_PX = 6.0
#: Each pseudo-Voigt component (Lorentzian, Gaussian) is evaluated only where its value exceeds this
#: fraction of the peak height; beyond that the ring contributes nothing. 1e-4 × 20 000 counts = 2 counts.
TAIL_CUTOFF_REL = 1e-4
#: Pixel types an image can be written in; integer types are rounded, and every type is clipped to ≥ 0.
DTYPES = ("uint16", "uint32", "int32", "float32")


class SimulationError(MidasRefError, ValueError):
    """A simulation request that cannot be honoured (bad option value, unknown scenario, unwritable output).

    Parameters
    ----------
    message : str
    fields : tuple of str
        The options the message names, spelled as in it: ``"PeakShape.fwhm_px"`` (class.field). A front end
        that knows what its user typed for them (``midas-ref simulate``: ``--fwhm-px``) replaces them.
    """

    def __init__(self, message: str, fields: tuple[str, ...] = ()):
        super().__init__(message)
        self.fields = tuple(fields)


def _error(message: str, *fields: str) -> SimulationError:
    return SimulationError(message, fields)


def _finite(owner: str, name: str, value, *, positive=False, non_negative=False) -> float:
    option = f"{owner}.{name}"
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise _error(f"{option} must be a number, got {value!r}", option) from None
    if not math.isfinite(x):
        raise _error(f"{option} must be finite, got {value!r}", option)
    if positive and x <= 0:
        raise _error(f"{option} must be > 0, got {value!r}", option)
    if non_negative and x < 0:
        raise _error(f"{option} must be >= 0, got {value!r}", option)
    return x


@dataclass(frozen=True)
class Material:
    """The calibrant: space group, lattice and X-ray wavelength.

    Parameters
    ----------
    space_group : int
        Space-group number (CeO2 225, LaB6 221).
    lattice : tuple of 6 float
        a, b, c (Å), α, β, γ (degrees).
    wavelength_angstrom : float
        X-ray wavelength, Å (the Kα1-like line when a doublet is rendered).
    name : str
        Label used for file names (``<name>_000001.tif``).
    """

    space_group: int
    lattice: tuple[float, ...]
    wavelength_angstrom: float
    name: str = "CeO2"

    def __post_init__(self):
        object.__setattr__(self, "lattice", tuple(float(x) for x in self.lattice))
        if len(self.lattice) != 6:
            raise _error(f"Material.lattice needs 6 values a b c α β γ, got {self.lattice}", "Material.lattice")
        _finite("Material", "wavelength_angstrom", self.wavelength_angstrom, positive=True)
        if not self.name or any(c in self.name for c in "/\\ \t\n"):
            raise SimulationError(f"Material.name {self.name!r} cannot be used in a file name")


#: NIST SRM 674b CeO2 (Fm-3m) and SRM 660c LaB6 (Pm-3m) lattices, Å.
CEO2 = dict(space_group=225, lattice=(5.411651,) * 3 + (90.0,) * 3, name="CeO2")
LAB6 = dict(space_group=221, lattice=(4.1569162,) * 3 + (90.0,) * 3, name="LaB6")


@dataclass(frozen=True)
class PeakShape:
    """Radial ring profile: a pseudo-Voigt in r = Lsd·tan 2θ (µm), normalised to its peak height.

    ``I(x) = A·(μ·L + (1 − μ)·G)``, ``L = 1/(1 + 4x²/Γ²)``, ``G = exp(−4 ln2·x²/Γ²)``, x = r − R_k.

    Parameters
    ----------
    fwhm_px : float, optional
        FWHM Γ in pixels of r (Γ = fwhm_px·px_um, the same for every ring). Default 2.5 when neither width
        is given.
    fwhm_two_theta_deg : float, optional
        FWHM in 2θ instead; ring k then has Γ_k = Lsd·Δ2θ/cos²2θ_k (µm). Exclusive with ``fwhm_px``.
    lorentz_fraction : float
        μ in [0, 1].
    doublet_wavelength_angstrom : float, optional
        Second (Kα2-like) wavelength: every ring is drawn again at the 2θ of this wavelength.
    doublet_ratio : float
        Peak height of the second line relative to the first (Kα2/Kα1 ≈ 0.5).
    """

    fwhm_px: float | None = None
    fwhm_two_theta_deg: float | None = None
    lorentz_fraction: float = 0.4
    doublet_wavelength_angstrom: float | None = None
    doublet_ratio: float = 0.5

    def __post_init__(self):
        if self.fwhm_px is not None and self.fwhm_two_theta_deg is not None:
            raise _error("give the peak FWHM either in pixels (PeakShape.fwhm_px) or in 2θ "
                         "(PeakShape.fwhm_two_theta_deg), not both", "PeakShape.fwhm_px",
                         "PeakShape.fwhm_two_theta_deg")
        if self.fwhm_px is None and self.fwhm_two_theta_deg is None:
            object.__setattr__(self, "fwhm_px", 2.5)
        if self.fwhm_px is not None:
            _finite("PeakShape", "fwhm_px", self.fwhm_px, positive=True)
        else:
            fwhm = _finite("PeakShape", "fwhm_two_theta_deg", self.fwhm_two_theta_deg, positive=True)
            if fwhm >= 10:
                raise _error(f"PeakShape.fwhm_two_theta_deg must be < 10° for a diffraction peak, got {fwhm}",
                             "PeakShape.fwhm_two_theta_deg")
        mu = _finite("PeakShape", "lorentz_fraction", self.lorentz_fraction)
        if not 0 <= mu <= 1:
            raise _error(f"PeakShape.lorentz_fraction must be in [0, 1], got {mu}", "PeakShape.lorentz_fraction")
        if self.doublet_wavelength_angstrom is not None:
            _finite("PeakShape", "doublet_wavelength_angstrom", self.doublet_wavelength_angstrom, positive=True)
        _finite("PeakShape", "doublet_ratio", self.doublet_ratio, non_negative=True)


@dataclass(frozen=True)
class RingIntensity:
    """How bright each ring is, and where along η.

    Parameters
    ----------
    peak_counts : float
        Peak height A (counts per pixel, above background) of the brightest ring; 0 = background only.
        A is the value of the continuous profile at its centre: a pixel on the ring averages the profile
        over its area and reads a little less (~7 % less for FWHM 2.5 px).
    weighting : {"uniform", "multiplicity"}
        Every ring A, or A·m_k/max(m) with m_k the ring's multiplicity (hkl count).
    texture_amplitude : float
        Smooth azimuthal modulation ``1 + a·cos(n·(η − φ))`` of the ring intensity, a in [0, 1].
    texture_order : int
        n ≥ 1.
    texture_phase_deg : float
        φ, degrees.
    missing_arcs_deg : tuple of (float, float)
        η ranges (start, end) in degrees, counter-clockwise from start to end (may wrap through ±180°),
        where the rings are absent (background only).
    ring_numbers : tuple of int, optional
        Render only these ring numbers (GetHKLList numbering); default every ring on the detector.
    """

    peak_counts: float = 20000.0
    weighting: str = "uniform"
    texture_amplitude: float = 0.0
    texture_order: int = 2
    texture_phase_deg: float = 0.0
    missing_arcs_deg: tuple[tuple[float, float], ...] = ()
    ring_numbers: tuple[int, ...] | None = None

    def __post_init__(self):
        _finite("RingIntensity", "peak_counts", self.peak_counts, non_negative=True)
        if self.weighting not in ("uniform", "multiplicity"):
            raise _error(f"RingIntensity.weighting must be 'uniform' or 'multiplicity', got {self.weighting!r}",
                         "RingIntensity.weighting")
        amp = _finite("RingIntensity", "texture_amplitude", self.texture_amplitude)
        if not 0 <= amp <= 1:
            raise _error(f"RingIntensity.texture_amplitude must be in [0, 1], got {amp}",
                         "RingIntensity.texture_amplitude")
        if int(self.texture_order) != self.texture_order or self.texture_order < 1:
            raise _error(f"RingIntensity.texture_order must be an integer >= 1, got {self.texture_order}",
                         "RingIntensity.texture_order")
        _finite("RingIntensity", "texture_phase_deg", self.texture_phase_deg)
        arcs = []
        for arc in self.missing_arcs_deg:
            if len(arc) != 2:
                raise _error(f"RingIntensity.missing_arcs_deg: a missing arc is (η start, η end) in degrees, "
                             f"got {arc!r}", "RingIntensity.missing_arcs_deg")
            arcs.append(tuple(_finite("RingIntensity", "missing_arcs_deg", v) for v in arc))
        object.__setattr__(self, "missing_arcs_deg", tuple(arcs))
        if self.ring_numbers is not None:
            object.__setattr__(self, "ring_numbers", tuple(int(n) for n in self.ring_numbers))


@dataclass(frozen=True)
class DetectorResponse:
    """Background, noise, dark, frames, sentinels and pixel type.

    Parameters
    ----------
    background_counts : float
        Constant background, counts per pixel per frame.
    background_slope_per_px : float
        Radial slope: background = c + s·r/px (counts per pixel of radius r = Lsd·tan 2θ). Clipped at 0.
    poisson : bool
        Draw Poisson counts from the expected image (background + rings).
    read_noise_counts : float
        Gaussian read noise σ, counts, added to every frame and dark frame.
    dark_counts : float, optional
        Dark offset; when given, every frame carries it and a dark file is written.
    dark_noise_counts : float
        σ of a fixed per-pixel dark pattern (drawn once; identical in frames and dark).
    n_frames : int
        Frames in the image file (independent noise, same expectation).
    bad_pixel_fraction : float
        Probability that a pixel is bad (its value is ``bad_pixel_value`` in frames and dark).
    bad_pixel_value, gap_value : float
        Sentinels (MIDAS ``BadPxIntensity``, ``GapIntensity``).
    dtype : {"uint16", "uint32", "int32", "float32"}
        Pixel type; counts are rounded for integer types and clipped to [0, saturation].
    saturation_counts : float, optional
        Largest value a pixel can hold (default: the dtype's maximum, float32: none).
    """

    background_counts: float = 200.0
    background_slope_per_px: float = 0.0
    poisson: bool = True
    read_noise_counts: float = 0.0
    dark_counts: float | None = None
    dark_noise_counts: float = 0.0
    n_frames: int = 1
    bad_pixel_fraction: float = 0.0
    bad_pixel_value: float = -2.0
    gap_value: float = -1.0
    dtype: str = "uint16"
    saturation_counts: float | None = None

    def __post_init__(self):
        _finite("DetectorResponse", "background_counts", self.background_counts, non_negative=True)
        _finite("DetectorResponse", "background_slope_per_px", self.background_slope_per_px)
        _finite("DetectorResponse", "read_noise_counts", self.read_noise_counts, non_negative=True)
        if self.dark_counts is not None:
            _finite("DetectorResponse", "dark_counts", self.dark_counts, non_negative=True)
        _finite("DetectorResponse", "dark_noise_counts", self.dark_noise_counts, non_negative=True)
        if self.dark_noise_counts > 0 and self.dark_counts is None:
            raise _error("a dark pattern (DetectorResponse.dark_noise_counts) needs a dark level "
                         "(DetectorResponse.dark_counts)", "DetectorResponse.dark_noise_counts",
                         "DetectorResponse.dark_counts")
        if int(self.n_frames) != self.n_frames or self.n_frames < 1:
            raise _error(f"DetectorResponse.n_frames must be an integer >= 1, got {self.n_frames}",
                         "DetectorResponse.n_frames")
        frac = _finite("DetectorResponse", "bad_pixel_fraction", self.bad_pixel_fraction)
        if not 0 <= frac < 1:
            raise _error(f"DetectorResponse.bad_pixel_fraction must be in [0, 1), got {frac}",
                         "DetectorResponse.bad_pixel_fraction")
        _finite("DetectorResponse", "bad_pixel_value", self.bad_pixel_value)
        _finite("DetectorResponse", "gap_value", self.gap_value)
        if self.dtype not in DTYPES:
            raise _error(f"DetectorResponse.dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}",
                         "DetectorResponse.dtype")
        if self.saturation_counts is not None:
            sat = _finite("DetectorResponse", "saturation_counts", self.saturation_counts, positive=True)
            if sat > self.dtype_max:
                raise _error(f"DetectorResponse.saturation_counts {sat:g} exceeds the {self.dtype} maximum "
                             f"{self.dtype_max:g} (DetectorResponse.dtype)", "DetectorResponse.saturation_counts",
                             "DetectorResponse.dtype")

    @property
    def dtype_max(self) -> float:
        """Largest value of :attr:`dtype` (float32: its largest finite value)."""
        dt = np.dtype(self.dtype)
        return float(np.finfo(dt).max if dt.kind == "f" else np.iinfo(dt).max)

    @property
    def clip_max(self) -> float:
        """Upper clipping level: the saturation, or the dtype maximum."""
        return self.dtype_max if self.saturation_counts is None else float(self.saturation_counts)


@dataclass(frozen=True)
class SimulationConfig:
    """Everything that determines a simulated calibrant image.

    Parameters
    ----------
    geometry : Geometry
        The true detector geometry (rendering goes through :mod:`midas_ref.geometry_kernels` only).
    material : Material
    panels : Panels, optional
        Panel grid with the true per-panel shifts; gap pixels carry ``response.gap_value``.
    fix_panel_id : int
        Panel whose shift is zero (written as ``FixPanelID`` for the calibrator).
    peak, intensity, response : PeakShape, RingIntensity, DetectorResponse
    supersample : int
        n: each pixel is the mean of the intensity over its area by an n × n Gauss–Legendre rule (the
        2 × 2 rule away from ring cores; docs/simulate.md, "Pixel integration").
    seed : int
        Seed of every random draw (noise, bad pixels, perturbed start geometry).
    name : str
        Scenario name recorded in ``truth.json``.
    description : str
        One line for ``midas-ref simulate --list``.
    """

    geometry: Geometry
    material: Material
    panels: Panels | None = None
    fix_panel_id: int = 0
    peak: PeakShape = field(default_factory=PeakShape)
    intensity: RingIntensity = field(default_factory=RingIntensity)
    response: DetectorResponse = field(default_factory=DetectorResponse)
    supersample: int = DEFAULT_SUPERSAMPLE
    seed: int = 0
    name: str = "custom"
    description: str = ""

    def __post_init__(self):
        if not isinstance(self.geometry, Geometry):
            raise TypeError(f"geometry must be a midas_ref.Geometry, got {type(self.geometry).__name__}")
        if self.panels is not None and not isinstance(self.panels, Panels):
            raise TypeError(f"panels must be midas_ref.panels.Panels or None, got {type(self.panels).__name__}")
        if int(self.supersample) != self.supersample or not 1 <= self.supersample <= 64:
            raise _error(f"SimulationConfig.supersample must be an integer in 1..64, got {self.supersample}",
                         "SimulationConfig.supersample")
        if int(self.seed) != self.seed or self.seed < 0:
            raise _error(f"SimulationConfig.seed must be an integer >= 0, got {self.seed}", "SimulationConfig.seed")
        if self.panels is not None:
            if not 0 <= self.fix_panel_id < self.panels.layout.n_panels:
                raise _error(f"SimulationConfig.fix_panel_id {self.fix_panel_id} is outside the panel ids "
                             f"0..{self.panels.layout.n_panels - 1}", "SimulationConfig.fix_panel_id")
            s = self.panels.shifts[self.fix_panel_id]
            if (s.dy_px, s.dz_px, s.dtheta_deg) != (0.0, 0.0, 0.0):
                raise SimulationError(f"the fixed panel {self.fix_panel_id} must have dY = dZ = dTheta = 0 "
                                      "(it anchors the calibrator's panel fit)")
        self._check_sentinels()

    def _check_sentinels(self):
        r = self.response
        dt = np.dtype(r.dtype)
        used = []
        if r.bad_pixel_fraction > 0:
            used.append(("bad pixel value", "DetectorResponse.bad_pixel_value", r.bad_pixel_value))
        if self.has_gaps:
            used.append(("gap value", "DetectorResponse.gap_value", r.gap_value))
        for what, option, value in used:
            if dt.kind in "iu" and (value != round(value) or not np.iinfo(dt).min <= value <= np.iinfo(dt).max):
                raise _error(f"the {what} ({option}) {value:g} cannot be stored in {r.dtype} "
                             "(DetectorResponse.dtype); choose a signed type (int32) or another value", option,
                             "DetectorResponse.dtype")
            if 0 < value <= r.clip_max:
                raise _error(f"the {what} ({option}) {value:g} lies in the range of real counts "
                             f"(0, {r.clip_max:g}]; use a negative value, 0, or one above the saturation", option)

    @property
    def has_gaps(self) -> bool:
        """Whether the panel grid leaves gap pixels on the image."""
        if self.panels is None:
            return False
        lay = self.panels.layout
        rows, cols = self.geometry.shape
        covered_y = lay.n_panels_y * lay.size_y_px
        covered_z = lay.n_panels_z * lay.size_z_px
        return any(lay.gaps_y_px) or any(lay.gaps_z_px) or covered_y < cols or covered_z < rows

    def noise_free(self) -> "SimulationConfig":
        """Copy without any random element: no Poisson, read or dark-pattern noise, no bad pixels."""
        return replace(self, response=replace(self.response, poisson=False, read_noise_counts=0.0,
                                              dark_noise_counts=0.0, bad_pixel_fraction=0.0))

    @property
    def is_noise_free(self) -> bool:
        r = self.response
        return not r.poisson and r.read_noise_counts == 0 and r.dark_noise_counts == 0 and r.bad_pixel_fraction == 0
