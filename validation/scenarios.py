"""The scenario matrix: which cases a suite runs.

A :class:`Case` is a small, hashable, picklable description (it travels to Dask workers); running it is
:func:`validation.runner.run_case`. Kinds:

``synthetic``
    A simulator preset (``simulate.SCENARIOS``) or one of :data:`EXTRA_SCENARIOS`, at a noise level of
    :data:`NOISE_LEVELS`, one seed, and a start of :data:`STARTS`; calibrated from the written files exactly
    as ``midas-ref calibrate`` does, compared with the simulator's truth.
``legacy``
    A folder of ``../shared/legacy/``: ours on the legacy input vs the legacy programs' outputs vs truth.
``real``
    A folder of ``../shared/data/real/`` with a shipped geometry: ours vs that geometry.
``crlb``
    The Cramér–Rao bound of a synthetic scenario's geometry under its Poisson model
    (:mod:`validation.crlb`), compared with the spread of the matching ``synthetic`` cases over seeds.
``peer``
    pyFAI's scripted recalibration and ours on the same synthetic image from the same start
    (:mod:`validation.peers`).
``adversarial``
    A small simulated image with one spoiled input, or without powder rings (:mod:`validation.adversarial`):
    must not end plain CONVERGED with a wrong geometry.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from midas_ref.detector import Geometry

__all__ = ["Case", "NOISE_LEVELS", "STARTS", "EXTRA_SCENARIOS", "SUITES", "synthetic_config", "start_guess",
           "suite_cases", "crlb_seed_cases", "coverage_seed_cases", "COVERAGE_SCENARIOS"]


@dataclass(frozen=True, order=True)
class Case:
    """One validation case.

    Parameters
    ----------
    kind : {"synthetic", "legacy", "real", "crlb", "peer", "coverage", "adversarial"}
    name : str
        Scenario name (synthetic, crlb, peer) or folder name (legacy, real).
    noise : str
        Noise level of :data:`NOISE_LEVELS` (synthetic, crlb, peer).
    seed : int
        Seed of every random draw of the simulation (synthetic, peer); first seed (crlb).
    start : str
        Start of :data:`STARTS` (synthetic, peer).
    n_seeds : int
        crlb: number of seeds whose synthetic cases are compared with the bound; coverage: number of seeds
        whose errors are compared with their reported standard errors.
    """

    kind: str
    name: str
    noise: str = ""
    seed: int = 0
    start: str = ""
    n_seeds: int = 0

    @property
    def case_id(self) -> str:
        """Stable identifier, the key of a case across runs (``synthetic/ge2048/poisson/s1/near``)."""
        if self.kind in ("synthetic", "peer"):
            return f"{self.kind}/{self.name}/{self.noise}/s{self.seed}/{self.start}"
        if self.kind == "adversarial":
            return f"adversarial/{self.name}/s{self.seed}"
        if self.kind in ("crlb", "coverage"):
            return f"{self.kind}/{self.name}/{self.noise}/s{self.seed}-{self.seed + self.n_seeds - 1}"
        return f"{self.kind}/{self.name}"

    def describe(self) -> dict:
        """The fields as a plain dict (stored with the results)."""
        return {"kind": self.kind, "name": self.name, "noise": self.noise, "seed": self.seed, "start": self.start,
                "n_seeds": self.n_seeds}


#: Noise level → factor on the preset's ring peak height (None: noise-free, the preset's ``_noisefree``
#: form). Background, read noise and everything else stay as in the preset.
NOISE_LEVELS = {"noisefree": None, "poisson": 1.0, "poisson_low": 0.1, "poisson_vlow": 0.025}

#: Start → (Lsd factor, ΔY px, ΔZ px) given as ``-LsdGuess`` / ``-BCGuess``; ``auto`` gives no guess (fully
#: automatic: beam centre from ring arcs, distance searched 0.05–5 m).
STARTS = {"near": (1.02, 5.0, -5.0), "far": (1.10, 30.0, -30.0), "auto": None}


def _small512(distortion: bool = True):
    """512² × 200 µm at 300 mm: 9 CeO2 rings with ge2048's material, peak shape, intensity and background.

    Small enough that its Cramér–Rao bound (26 noise-free renders) and several seeds run in seconds;
    pixels are float32 (no rounding), so the simulator's noise is exactly Poisson.
    """
    from simulate import scenario

    cfg = scenario("ge2048")
    geometry = Geometry(lsd_um=300_000.0, bc_y_px=251.7, bc_z_px=262.4, px_um=200.0, n_pixels_y=512,
                        n_pixels_z=512, ty_deg=0.6, tz_deg=-0.4,
                        **(dict(p0=3e-4, p1=-2e-4, p2=2e-4, p3_deg=20.0) if distortion else {}))
    return replace(cfg, geometry=geometry, response=replace(cfg.response, dtype="float32"),
                   name="small512" if distortion else "small512_nodist",
                   description="512² × 200 µm, CeO2 at 71.7 keV, Lsd 300 mm, tilts"
                               + (" and p0–p3 distortion" if distortion else ", no distortion") + ", float32")


def _ge2048_nodist():
    """ge2048 without radial distortion (p0–p3 = 0): the geometry pyFAI can represent exactly."""
    from simulate import scenario

    cfg = scenario("ge2048")
    return replace(cfg, geometry=replace(cfg.geometry, p0=0.0, p1=0.0, p2=0.0, p3_deg=0.0), name="ge2048_nodist",
                   description=cfg.description.replace(", p0–p3 distortion", "") + ", no distortion")


def _small_pilatus():
    """487 × 619 × 172 µm (a Pilatus 300K-like sensor) at 250 mm, beam off centre, larger tilts, no distortion.

    A second small geometry for the error-bar coverage: other pixel size and shape, rings cut by the edges on
    one side, narrower peaks with more Lorentzian tail.
    """
    from simulate import PeakShape, scenario

    cfg = scenario("ge2048")
    geometry = Geometry(lsd_um=250_000.0, bc_y_px=201.3, bc_z_px=288.6, px_um=172.0, n_pixels_y=487,
                        n_pixels_z=619, ty_deg=-1.1, tz_deg=0.8)
    return replace(cfg, geometry=geometry, peak=PeakShape(fwhm_px=2.0, lorentz_fraction=0.5),
                   response=replace(cfg.response, dtype="float32"), name="small_pilatus",
                   description="487 × 619 × 172 µm, CeO2 at 71.7 keV, Lsd 250 mm, beam off centre, tilts "
                               "−1.1°/0.8°, no distortion, float32")


#: Scenarios of the harness beside the simulator presets.
EXTRA_SCENARIOS = {"small512": _small512, "small512_nodist": lambda: _small512(False),
                   "ge2048_nodist": _ge2048_nodist, "small_pilatus": _small_pilatus}
#: (scenario, seeds) of the full suite's error-bar coverage: ≥ 200 Poisson images over several geometries.
COVERAGE_SCENARIOS = (("small512", 70), ("small512_nodist", 70), ("small_pilatus", 70))


def synthetic_config(name: str, noise: str, seed: int):
    """The :class:`simulate.SimulationConfig` of a synthetic case.

    Raises
    ------
    simulate.SimulationError
        Unknown scenario or noise level.
    """
    from simulate import SimulationError, scenario

    if noise not in NOISE_LEVELS:
        raise SimulationError(f"unknown noise level {noise!r}; valid: {', '.join(NOISE_LEVELS)}")
    cfg = EXTRA_SCENARIOS[name]() if name in EXTRA_SCENARIOS else scenario(name)
    factor = NOISE_LEVELS[noise]
    if factor is None:
        cfg = cfg.noise_free()
    elif factor != 1.0:
        cfg = replace(cfg, intensity=replace(cfg.intensity, peak_counts=cfg.intensity.peak_counts * factor))
    return replace(cfg, seed=int(seed))


def start_guess(truth: Geometry, start: str) -> tuple[float | None, tuple[float, float] | None]:
    """``(-LsdGuess µm, -BCGuess (Y, Z) px)`` of a start (None, None for ``auto``)."""
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; valid: {', '.join(STARTS)}")
    spec = STARTS[start]
    if spec is None:
        return None, None
    factor, dy, dz = spec
    return truth.lsd_um * factor, (truth.bc_y_px + dy, truth.bc_z_px + dz)


def coverage_seed_cases(coverage: Case) -> list[Case]:
    """The synthetic cases whose errors and reported σ a ``coverage`` case gathers (near start)."""
    return [Case("synthetic", coverage.name, coverage.noise, coverage.seed + k, "near") for k in range(coverage.n_seeds)]


def crlb_seed_cases(crlb: Case) -> list[Case]:
    """The synthetic cases whose errors a ``crlb`` case is compared with (same scenario and noise)."""
    return [Case("synthetic", crlb.name, crlb.noise, crlb.seed + k, "near") for k in range(crlb.n_seeds)]


#: The adversarial cases (built by :mod:`validation.adversarial`, which holds one entry per name) and the
#: few seconds' worth of them in the quick suite.
ADVERSARIAL_NAMES = ("lab6_as_ceo2", "ceo2_as_si", "energy_3pct_wide", "flipped_ud", "pixel_150_for_172",
                     "first_ring_nr_2", "first_ring_nr_3", "first_ring_nr_5", "spotty_texture",
                     "spotty_texture_guessed", "single_crystal", "dark_frame", "random_noise")
QUICK_ADVERSARIAL = ("ceo2_as_si", "energy_3pct_wide", "flipped_ud", "pixel_150_for_172")

#: Suite → description (the matrix itself is :func:`suite_cases`).
SUITES = {
    "quick": "ge2048 noise-free + Poisson from the near start (the calibration issue's gates), every legacy "
             "golden, real GE 41RT + Pilatus 1M (cpf), CRLB of small512 over 4 seeds, pyFAI on small512_nodist, "
             "4 adversarial cases (wrong calibrant, wavelength, pixel size, flipped image)",
    "full": "ge2048 × 4 noise levels × 3 seeds × 3 starts, varex2880/pilatus2m/dexela4/offset_bc × 2 noise "
            "levels, every legacy golden, every real data set with a geometry, CRLB of small512 (10 seeds) and "
            "ge2048 (3 seeds), pyFAI on small512_nodist and ge2048_nodist, error-bar coverage over 210 Poisson images "
            "(small512, small512_nodist, small_pilatus × 70 seeds), every adversarial case, pytest-benchmark suites",
}


def suite_cases(suite: str, seed: int = 1, shared_dir=None) -> list[Case]:
    """The cases of ``suite`` (``quick`` or ``full``); ``seed`` is the first seed of every synthetic case.

    Legacy cases are every folder of ``<shared_dir>/legacy`` with a ``truth.json`` (the known golden cases
    when the folder is absent); real cases are listed whatever is on disk. The runner records a case as
    SKIPPED when its folder is absent.
    """
    from .legacy import legacy_case_names
    from .real import REAL_DATASETS

    LEGACY_CASES = legacy_case_names(shared_dir)

    if suite == "quick":
        cases = [Case("synthetic", "ge2048", noise, seed, "near") for noise in ("noisefree", "poisson")]
        crlb = [Case("crlb", "small512", "poisson", seed, n_seeds=4)]
        cases += [Case("legacy", name) for name in LEGACY_CASES]
        cases += [Case("real", name) for name, spec in REAL_DATASETS.items() if spec.quick]
        cases += [Case("peer", "small512_nodist", "poisson", seed, "near")]
        cases += [Case("adversarial", name, seed=seed) for name in QUICK_ADVERSARIAL]
    elif suite == "full":
        cases = [Case("synthetic", "ge2048", noise, seed + k, start) for noise in NOISE_LEVELS
                 for k in range(3) for start in STARTS]
        cases += [Case("synthetic", name, noise, seed, "near") for name in ("varex2880", "pilatus2m", "dexela4",
                                                                            "offset_bc")
                  for noise in ("noisefree", "poisson")]
        crlb = [Case("crlb", "small512", "poisson", seed, n_seeds=10), Case("crlb", "ge2048", "poisson", seed,
                                                                            n_seeds=3)]
        cases += [Case("legacy", name) for name in LEGACY_CASES]
        cases += [Case("real", name) for name in REAL_DATASETS]
        cases += [Case("peer", name, noise, seed, "near") for name in ("small512_nodist", "ge2048_nodist")
                  for noise in ("noisefree", "poisson")]
        for name, n_seeds in COVERAGE_SCENARIOS:
            coverage = Case("coverage", name, "poisson", seed, n_seeds=n_seeds)
            cases.append(coverage)
            cases += [c for c in coverage_seed_cases(coverage) if c not in cases]
        cases += [Case("adversarial", name, seed=seed) for name in ADVERSARIAL_NAMES]
    else:
        raise ValueError(f"unknown suite {suite!r}; valid: {', '.join(SUITES)}")
    for c in crlb:
        cases.append(c)
        cases += [s for s in crlb_seed_cases(c) if s not in cases]
    return cases
