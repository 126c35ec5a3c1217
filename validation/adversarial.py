"""Adversarial cases: an image and a parameter file that do not belong together, or an image with no powder.

Each case renders a small simulated image (512², seconds per case), writes it with the files ``midas-ref
simulate`` writes, spoils one input the way a user does (the wrong calibrant, a wrong wavelength or pixel
size, an image flipped against its parameter file, a wrong ``-FirstRingNr``), or replaces the image by one
without a powder pattern (spots, a dark frame, noise), and calibrates it as ``midas-ref calibrate`` does.

A case passes when the calibration does **not** end plain CONVERGED: it FAILED, ended SUSPECT (the
verdict of :mod:`midas_ref.verdict` names the likely cause), or the set-up refused the input (the command's
exit 2, e.g. "no rings found"; recorded as FAILED with ``info["outcome"] = "refused"``). The record keeps
the geometry error against the truth of the image, so a SUSPECT run shows how wrong the answer was.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np

from midas_ref.detector import Geometry
from midas_ref.errors import MidasRefError

from .records import calibrate_file, record_calibration

__all__ = ["AdversarialCase", "ADVERSARIAL_CASES", "build_case", "run_adversarial_case"]

#: Lattice constants of the wrong calibrants given in the parameter files, Å.
SI_LATTICE = 5.431020
#: λ of the 25 keV wide-angle case, Å (the pilatus2m preset's).
WIDE_WAVELENGTH = 0.4959


@dataclass(frozen=True)
class AdversarialCase:
    """One adversarial case.

    Attributes
    ----------
    name : str
    description : str
        What is wrong, one line (for the tables and docs/validation.md).
    cause : str
        A word the verdict's reason should contain when it names the cause (informational; the gate
        only checks that the run did not end CONVERGED).
    config : callable() -> simulate.SimulationConfig
        The image as rendered (its truth).
    params : dict
        Parameter-file values written over the simulator's (the spoiled input).
    options : tuple of (str, object)
        Extra :func:`midas_ref.inputs.calibration_inputs` options (the command's flags).
    image : callable(frames, rng) -> frames, optional
        Replaces the rendered frames (flips, spot patterns, noise).
    start_truth : bool
        Write the true geometry as the parameter file's start (Lsd, BC, tilts, distortion), as a file from
        an earlier calibration would hold it.
    guesses : bool
        Give ``-LsdGuess`` (truth + 1 %) and ``-BCGuess`` (truth + (2, −2) px): the user knows the set-up,
        so the calibration gets as far as it can on an image that has no powder rings.
    """

    name: str
    description: str
    cause: str
    config: Callable
    params: dict
    options: tuple = ()
    image: Callable | None = None
    start_truth: bool = False
    guesses: bool = False


def _small(**changes):
    """The harness's ``small512`` scenario (512² × 200 µm, CeO2 at 71.7 keV, 300 mm, tilts, distortion)."""
    from .scenarios import EXTRA_SCENARIOS

    cfg = EXTRA_SCENARIOS["small512"]()
    return replace(cfg, **changes) if changes else cfg


def _lab6():
    from simulate import Material
    from simulate.config import LAB6

    cfg = _small()
    return replace(cfg, material=Material(wavelength_angstrom=cfg.material.wavelength_angstrom, **LAB6),
                   intensity=replace(cfg.intensity, weighting="multiplicity"))


def _wide():
    """512² × 200 µm at 120 mm, 25 keV: 2θ up to 23° at the edges, 31° in the corners."""
    cfg = _small()
    g = replace(cfg.geometry, lsd_um=120_000.0)
    return replace(cfg, geometry=g, material=replace(cfg.material, wavelength_angstrom=WIDE_WAVELENGTH))


def _pilatus_like():
    """512² × 172 µm at 300 mm (the pixel of a Pilatus)."""
    cfg = _small()
    return replace(cfg, geometry=replace(cfg.geometry, px_um=172.0))


def _blank():
    """No rings: the background (200 counts, Poisson) only."""
    cfg = _small()
    return replace(cfg, intensity=replace(cfg.intensity, peak_counts=0.0))


def _flip_ud(frames, rng):
    return frames[:, ::-1, :].copy()


def _noise(frames, rng):
    """Random noise: exponential counts (mean 500), no structure."""
    return rng.exponential(500.0, size=frames.shape).astype(frames.dtype)


ADVERSARIAL_CASES = {
    c.name: c for c in (
        AdversarialCase("lab6_as_ceo2", "LaB6 image calibrated as CeO2 (SpaceGroup 225, a = 5.4117 Å)", "calibrant",
                        _lab6, {"SpaceGroup": 225, "LatticeConstant": [5.411651] * 3 + [90.0] * 3, "Lsd": 300_000.0}),
        AdversarialCase("ceo2_as_si", "CeO2 image calibrated as Si (SpaceGroup 227, a = 5.4310 Å)", "calibrant",
                        _small, {"SpaceGroup": 227, "LatticeConstant": [SI_LATTICE] * 3 + [90.0] * 3}),
        AdversarialCase("energy_3pct_wide", "Wavelength 3 % long on an image reaching 2θ = 23° (31° in the "
                        "corners)", "wavelength", _wide, {"Wavelength": WIDE_WAVELENGTH * 1.03}),
        AdversarialCase("flipped_ud", "image flipped up-down (a Dioptas frame) against a parameter file holding "
                        "the geometry of the original, no ImTransOpt", "flip", _small, {}, image=_flip_ud,
                        start_truth=True),
        AdversarialCase("pixel_150_for_172", "px 150 given for a 172 µm detector, the distance (Lsd) given",
                        "pixel", _pilatus_like, {"px": 150.0, "Lsd": 300_000.0}),
        AdversarialCase("first_ring_nr_2", "-FirstRingNr 2 while ring 1 is on the image", "FirstRingNr", _small, {},
                        options=(("first_ring_nr", 2),)),
        AdversarialCase("first_ring_nr_3", "-FirstRingNr 3 while rings 1 and 2 are on the image", "FirstRingNr",
                        _small, {}, options=(("first_ring_nr", 3),)),
        AdversarialCase("first_ring_nr_5", "-FirstRingNr 5 while rings 1-4 are on the image", "FirstRingNr",
                        _small, {}, options=(("first_ring_nr", 5),)),
        AdversarialCase("spotty_texture", "coarse-grained powder: every ring is 30 grains' spots 2° wide", "spot",
                        _small, {}),
        AdversarialCase("spotty_texture_guessed", "the same with -LsdGuess and -BCGuess near the truth", "spot",
                        _small, {}, guesses=True),
        AdversarialCase("single_crystal", "single-crystal spots at random positions, no powder ring", "spot",
                        _blank, {}, guesses=True),
        AdversarialCase("dark_frame", "a dark frame: background 200 counts (Poisson), no rings", "ring", _blank, {},
                        guesses=True),
        AdversarialCase("random_noise", "random noise: exponential counts, mean 500", "ring", _blank, {},
                        image=_noise, guesses=True),
    )
}


def _spot_image(cfg, rng, frames, *, spots_per_ring=30, width_deg=2.0, single_crystal=False):
    """Frames of a spotty powder (``single_crystal`` False) or of isolated spots (True), Poisson noise."""
    from simulate import render_expected, ring_set

    g = cfg.geometry
    bg = cfg.response.background_counts
    rows, cols = g.shape
    if single_crystal:
        expected = np.full(g.shape, bg, dtype=np.float64)
        zz, yy = np.mgrid[0:rows, 0:cols]
        for _ in range(60):
            y0, z0 = rng.uniform(0, cols), rng.uniform(0, rows)
            sigma = rng.uniform(1.0, 2.0)
            expected += rng.uniform(2e3, 2e4) * np.exp(-((yy - y0) ** 2 + (zz - z0) ** 2) / (2 * sigma ** 2))
    else:
        rings = ring_set(cfg)
        powder = render_expected(cfg.noise_free(), rings) - bg
        from midas_ref.geometry import r_eta_maps

        r_um, eta = r_eta_maps(g)
        radius = np.sort(np.asarray(rings.radius_um, dtype=np.float64))
        nearest = np.clip(np.searchsorted(radius, r_um), 1, radius.size - 1)
        nearest = np.where(np.abs(radius[nearest - 1] - r_um) < np.abs(radius[nearest] - r_um), nearest - 1, nearest)
        comb = np.zeros(g.shape)
        sigma = width_deg / 2.355
        for k in range(radius.size):  # each ring its own grains
            on = nearest == k
            for centre in rng.uniform(-180, 180, size=spots_per_ring):
                d = (eta[on] - centre + 180.0) % 360.0 - 180.0
                comb[on] += np.exp(-0.5 * (d / sigma) ** 2)
        expected = bg + powder * np.minimum(comb, 1.0)
    return rng.poisson(expected)[None].astype(frames.dtype)


def build_case(case: AdversarialCase, seed: int, workdir: Path):
    """Render and write ``case``: returns (image path, parameter file path, options dict, truth Geometry)."""
    from simulate import simulate, write_simulation
    from midas_ref.params import read_parameter_file, write_parameter_file

    cfg = replace(case.config(), seed=int(seed))
    sim = simulate(cfg)
    rng = np.random.default_rng(seed)
    frames = sim.frames
    if case.name.startswith("spotty_texture"):
        frames = _spot_image(cfg, rng, frames)
    elif case.name == "single_crystal":
        frames = _spot_image(cfg, rng, frames, single_crystal=True)
    elif case.image is not None:
        frames = case.image(frames, rng)
    sim = replace(sim, frames=frames)
    files = write_simulation(sim, workdir, "tif")
    pf = read_parameter_file(files.truth_params if case.start_truth else files.params)
    pf = pf.with_values(**case.params) if case.params else pf
    write_parameter_file(pf, files.params)
    options = dict(case.options)
    if case.guesses:
        g = cfg.geometry
        options.update(lsd_guess_um=g.lsd_um * 1.01, bc_guess_px=(g.bc_y_px + 2.0, g.bc_z_px - 2.0))
    return files.image, files.params, options, cfg.geometry


def run_adversarial_case(case, shared_dir, workdir: Path, record: dict) -> None:
    """Build and calibrate an adversarial case; a refusal (bad input) is recorded as FAILED, outcome refused."""
    spec = ADVERSARIAL_CASES[case.name]
    image, params, options, truth = build_case(spec, case.seed, workdir)
    record["info"]["description"] = spec.description
    record["info"]["expected_cause"] = spec.cause
    try:
        _, result, seconds = calibrate_file(image, params, **options)
    except MidasRefError as exc:
        record["status"], record["reason"] = "FAILED", f"refused as bad input (exit 2): {exc}"
        record["info"]["outcome"] = "refused"
        record["metrics"]["ours"] = {}
        return
    record_calibration(record, result, seconds, truth)
    record["info"]["outcome"] = result.status.lower()
