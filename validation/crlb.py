"""Cramér–Rao lower bound of the geometry under the simulator's Poisson model.

A noise-free render gives the expected counts μ(pixel; θ) of every pixel; the simulator draws each pixel
as Poisson(μ). For independent Poisson pixels the Fisher information is

    I_ij = Σ_pixels (∂μ/∂θ_i)(∂μ/∂θ_j) / μ,

and no unbiased estimator of θ_i has a standard deviation below σ_i = √((I⁻¹)_ii). θ holds the geometry
the calibrator refines (Lsd, BC, ty, tz, p0–p3) **and** the nuisance parameters of the ring model that it
must also estimate (peak height, FWHM, Lorentzian fraction, background level) — leaving them out would
pretend they are known and make the bound optimistic. (Our calibrator fits even more nuisance parameters,
one peak per ring and η bin, so its spread may exceed σ by a modest factor; it cannot be below it beyond
the sampling scatter of a few seeds.)

∂μ/∂θ is a central difference of two noise-free renders (:func:`simulate.render_expected`) with the full
n × n pixel rule everywhere (``adaptive=False``: the adaptive rule switches quadrature at zone edges,
which would make μ(θ) step-wise). Steps (:data:`STEPS`) move the rings by ~0.002–0.01 px: small enough
for a 1 % derivative, large against float64 rounding (δμ ≫ 1e-12·μ). Parameters without any effect (p3
when p1 = 0) are dropped. Renders go in row blocks, so memory stays ~(2·n_params + 1) blocks.

The quick suite uses the ``small512`` scenario (512², 9 rings, float32 pixels so the noise is exactly
Poisson): 27 renders take about a second. The full suite adds ``ge2048`` (uint16 rounding adds a variance
of 1/12 count², negligible against μ ≥ 200).
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from .scenarios import crlb_seed_cases, synthetic_config

__all__ = ["GEOMETRY_PARAMETERS", "NUISANCE_PARAMETERS", "STEPS", "perturb", "fisher_information", "crlb_sigmas",
           "run_crlb_case", "attach_crlb", "ERROR_METRIC"]

GEOMETRY_PARAMETERS = ("lsd_um", "bc_y_px", "bc_z_px", "ty_deg", "tz_deg", "p0", "p1", "p2", "p3_deg")
NUISANCE_PARAMETERS = ("peak_counts", "fwhm_px", "lorentz_fraction", "background_counts")
#: Central-difference half-steps (units of the parameter; ``peak_counts`` relative).
STEPS = {"lsd_um": 10.0, "bc_y_px": 0.01, "bc_z_px": 0.01, "ty_deg": 0.01, "tz_deg": 0.01, "p0": 3e-5, "p1": 3e-5,
         "p2": 3e-5, "p3_deg": 2.0, "peak_counts": 1e-3, "fwhm_px": 0.01, "lorentz_fraction": 0.005,
         "background_counts": 0.5}
#: CRLB parameter → the error metric of ours compared with it.
ERROR_METRIC = {"lsd_um": "err_lsd_um", "bc_y_px": "err_bc_y_px", "bc_z_px": "err_bc_z_px", "ty_deg": "err_ty_deg",
                "tz_deg": "err_tz_deg", "p0": "err_p0", "p2": "err_p2"}


def perturb(cfg, name: str, delta: float):
    """``cfg`` with parameter ``name`` moved by ``delta`` (relative for ``peak_counts``)."""
    if name in GEOMETRY_PARAMETERS:
        return replace(cfg, geometry=replace(cfg.geometry, **{name: getattr(cfg.geometry, name) + delta}))
    if name == "peak_counts":
        return replace(cfg, intensity=replace(cfg.intensity, peak_counts=cfg.intensity.peak_counts * (1 + delta)))
    if name == "fwhm_px":
        if cfg.peak.fwhm_px is None:
            raise ValueError("the FWHM is given in 2θ; use a scenario with fwhm_px")
        return replace(cfg, peak=replace(cfg.peak, fwhm_px=cfg.peak.fwhm_px + delta))
    if name == "lorentz_fraction":
        return replace(cfg, peak=replace(cfg.peak, lorentz_fraction=cfg.peak.lorentz_fraction + delta))
    if name == "background_counts":
        return replace(cfg, response=replace(cfg.response, background_counts=cfg.response.background_counts + delta))
    raise ValueError(f"unknown CRLB parameter {name!r}")


def _derivative_scale(cfg, name: str) -> float:
    """Parameter units per step unit (``peak_counts`` steps are relative)."""
    return cfg.intensity.peak_counts if name == "peak_counts" else 1.0


def fisher_information(cfg, parameters=GEOMETRY_PARAMETERS + NUISANCE_PARAMETERS, *, steps=None,
                       block_rows: int | None = None, mask: np.ndarray | None = None):
    """Fisher information matrix of ``parameters`` for the Poisson model of ``cfg``.

    Parameters
    ----------
    cfg : simulate.SimulationConfig
        The truth (its noise settings are ignored: the model is Poisson on the expected counts).
    parameters : sequence of str
        Names from :data:`GEOMETRY_PARAMETERS` and :data:`NUISANCE_PARAMETERS`.
    steps : dict, optional
        Half-steps overriding :data:`STEPS`.
    block_rows : int, optional
        Image rows rendered at a time (default: about 2²⁰ pixels per block).
    mask : ndarray of bool, optional
        Pixels to leave out (True), e.g. gaps; by default the gaps of ``cfg``'s panel grid.

    Returns
    -------
    (ndarray (n, n), list of str)
        The information matrix (units 1/(parameter_i · parameter_j)) and the parameters kept (those with a
        non-zero derivative somewhere).
    """
    from simulate import gap_mask, render_expected, ring_set

    steps = {**STEPS, **(steps or {})}
    cfg = replace(cfg, geometry=replace(cfg.geometry, rho_d_um=cfg.geometry.rho_d_um))  # RhoD fixed, not from BC
    mask = gap_mask(cfg) if mask is None else mask
    rows, cols = cfg.geometry.shape
    block_rows = block_rows or max(1, 2**20 // cols)
    names = list(parameters)
    plus = [perturb(cfg, n, steps[n]) for n in names]
    minus = [perturb(cfg, n, -steps[n]) for n in names]
    ring_sets = [(ring_set(p), ring_set(m)) for p, m in zip(plus, minus)]
    base_rings = ring_set(cfg)
    info = np.zeros((len(names), len(names)))
    for start in range(0, rows, block_rows):
        block = slice(start, min(start + block_rows, rows))
        mu = render_expected(cfg, base_rings, rows=block, adaptive=False)
        jac = np.empty((len(names),) + mu.shape)
        for k, name in enumerate(names):
            hi = render_expected(plus[k], ring_sets[k][0], rows=block, adaptive=False)
            lo = render_expected(minus[k], ring_sets[k][1], rows=block, adaptive=False)
            jac[k] = (hi - lo) / (2 * steps[name] * _derivative_scale(cfg, name))
        keep = mu > 0
        if mask is not None:
            keep &= ~mask[block]
        j = jac[:, keep]
        info += (j / mu[keep]) @ j.T
    used = [k for k in range(len(names)) if info[k, k] > 0]
    return info[np.ix_(used, used)], [names[k] for k in used]


def crlb_sigmas(cfg, parameters=GEOMETRY_PARAMETERS + NUISANCE_PARAMETERS, **kwargs) -> dict:
    """σ_i = √((I⁻¹)_ii) of every parameter with an effect, in its own unit (``peak_counts`` in counts)."""
    info, names = fisher_information(cfg, parameters, **kwargs)
    # scale to unit diagonal before inverting (the parameters span ~12 orders of magnitude)
    d = np.sqrt(np.diag(info))
    cov = np.linalg.inv(info / np.outer(d, d)) / np.outer(d, d)
    return {name: float(math.sqrt(cov[k, k])) for k, name in enumerate(names)}


def run_crlb_case(case, record: dict) -> None:
    """σ_CRLB of the case's scenario; :func:`attach_crlb` later relates the seeds' errors to it."""
    import time

    cfg = synthetic_config(case.name, case.noise, case.seed)
    t0 = time.perf_counter()
    sigmas = crlb_sigmas(cfg)
    record["metrics"]["crlb"] = {f"sigma_{name}": value for name, value in sigmas.items()}
    record["metrics"]["ours"] = {"time_crlb_s": time.perf_counter() - t0}
    record["info"]["seed_cases"] = [c.case_id for c in crlb_seed_cases(case)]
    record["info"]["description"] = cfg.description
    record["status"] = "DONE"


def attach_crlb(crlb_record: dict, records_by_id: dict) -> None:
    """Errors of the seed cases as multiples of σ_CRLB, and their RMS over seeds / σ (the efficiency ratio).

    Adds ``err_over_crlb_<parameter>`` to each converged seed case (source ``ours``) and
    ``rms_err_<parameter>``, ``ratio_<parameter>`` (RMS error / σ) and ``n_seeds`` to the crlb case
    (source ``crlb``). The ratio is ≥ 1 for an unbiased estimator up to the sampling scatter of the RMS of n
    seeds (relative s.d. ≈ 1/√(2n)).
    """
    crlb = crlb_record["metrics"].get("crlb", {})
    seeds = [records_by_id[c] for c in crlb_record["info"].get("seed_cases", []) if c in records_by_id]
    seeds = [r for r in seeds if r["status"] == "CONVERGED"]
    crlb["n_seeds"] = float(len(seeds))
    for name, metric in ERROR_METRIC.items():
        sigma = crlb.get(f"sigma_{name}")
        if not sigma:
            continue
        errors = [r["metrics"]["ours"][metric] for r in seeds if metric in r["metrics"]["ours"]]
        for r in seeds:
            if metric in r["metrics"]["ours"]:
                r["metrics"]["ours"][f"err_over_crlb_{name}"] = r["metrics"]["ours"][metric] / sigma
        if errors:
            rms = float(np.sqrt(np.mean(np.square(errors))))
            crlb[f"rms_err_{name}"] = rms
            crlb[f"ratio_{name}"] = rms / sigma
    crlb_record["metrics"]["crlb"] = crlb
