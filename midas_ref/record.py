"""The reported result of a calibration: parameters with standard errors and covariance, what was not determined.

One place turns a :class:`~midas_ref.autocal.CalibrationResult` into what the outputs show — the console
summary, ``autocal.log``, the σ comments of ``refined_MIDAS_params.txt`` and ``calibration.json``
(docs/cli.md, "Outputs") — so they never disagree. Parameters are named by their parameter-file keys
(``BC`` split into ``BC_Y``, ``BC_Z``), in the units of the file (µm, px, degrees).

The fit refines the distortion pair p1/p3 as the Cartesian pair ``(p1·cos p3, p1·sin p3)``; its covariance
is carried to (p1, p3) to first order here (p3 is undetermined when p1 = 0).
"""

from __future__ import annotations

import math

import numpy as np

from .detector import Geometry

__all__ = ["PARAMETERS", "parameter_rows", "calibration_record", "FORMAT"]

FORMAT = "midas-ref calibration record v1"

#: Reported name → (Geometry field, unit), in parameter-file order.
PARAMETERS = (("Lsd", "lsd_um", "um"), ("BC_Y", "bc_y_px", "px"), ("BC_Z", "bc_z_px", "px"),
              ("tx", "tx_deg", "deg"), ("ty", "ty_deg", "deg"), ("tz", "tz_deg", "deg"), ("p0", "p0", ""),
              ("p1", "p1", ""), ("p2", "p2", ""), ("p3", "p3_deg", "deg"), ("p4", "p4", ""), ("p5", "p5", ""))

#: Why a parameter that is not refined by default stays at its value.
_FIXED_REASON = {"tx": "rotation about the beam: powder rings are (nearly) invariant under it, fixed as in the "
                       "legacy programs",
                 "p4": "not refined (DistortionOrder 6 refines it)",
                 "p5": "modelled but never refined"}
_WAVELENGTH_REASON = ("not refined: on one image the wavelength trades against Lsd (tan 2θ ∝ λ at small "
                      "angles); it is an input (docs/cli.md)")


def _natural_covariance(result) -> tuple[list[str], np.ndarray]:
    """The fit's covariance carried from its labels (Cartesian p1/p3 pair) to Geometry field names."""
    labels = list(result.parameter_labels)
    cov = np.asarray(result.covariance, dtype=np.float64)
    if "p1 cos p3" not in labels:
        return labels, cov
    i, j = labels.index("p1 cos p3"), labels.index("p1 sin p3")
    g = result.geometry
    a, b = g.p1 * math.cos(math.radians(g.p3_deg)), g.p1 * math.sin(math.radians(g.p3_deg))
    t = np.eye(len(labels))
    r = math.hypot(a, b)
    if r > 0:
        t[i, i], t[i, j] = a / r, b / r                                   # ∂p1/∂(a, b)
        t[j, i], t[j, j] = -math.degrees(b / r ** 2), math.degrees(a / r ** 2)  # ∂p3/∂(a, b), degrees
        out = t @ np.nan_to_num(cov, nan=0.0) @ t.T
        bad = ~np.isfinite(np.diag(cov))
        if bad[i] or bad[j]:
            bad[[i, j]] = True
        out[bad, :] = np.nan
        out[:, bad] = np.nan
        out[bad, bad] = np.inf
    else:
        out = cov.copy()
        out[j, :] = np.nan
        out[:, j] = np.nan
        out[j, j] = np.inf
    labels[i], labels[j] = "p1", "p3_deg"
    return labels, out


def parameter_rows(result) -> list[dict]:
    """Every geometry parameter with its value, unit, whether it was refined and its standard error.

    Returns
    -------
    list of dict
        ``name`` (parameter-file key, BC split), ``field`` (Geometry field), ``value``, ``unit``,
        ``refined`` (bool), ``sigma`` (standard error; ``math.inf`` when refined but not determined by the
        data, None when not refined), ``note`` (why it was not refined or not determined; "" otherwise).
    """
    g: Geometry = result.geometry
    have_cov = result.covariance is not None and len(result.parameter_labels) > 0
    labels, cov = _natural_covariance(result) if have_cov else ([], None)
    rows = []
    for name, fld, unit in PARAMETERS:
        value = float(getattr(g, fld))
        if fld in labels:
            var = float(cov[labels.index(fld), labels.index(fld)])
            sigma = math.sqrt(var) if math.isfinite(var) and var >= 0 else math.inf
            note = "" if math.isfinite(sigma) else "not determined by the rings (a direction the data do not see)"
            if fld == "p3_deg" and not math.isfinite(sigma) and g.p1 == 0:
                note = "undetermined: p1 = 0 (p3 is the phase of p1)"
            rows.append(dict(name=name, field=fld, value=value, unit=unit, refined=True, sigma=sigma, note=note))
        else:
            note = _FIXED_REASON.get(name, "not refined (zero tolerance, a fixed stage or the fit did not run)")
            rows.append(dict(name=name, field=fld, value=value, unit=unit, refined=False, sigma=None, note=note))
    return rows


def not_determined(result) -> list[dict]:
    """Parameters the run reports no error for, each with why: fixed ones, undetermined ones, the wavelength."""
    out = [{"parameter": r["name"], "reason": r["note"]} for r in parameter_rows(result)
           if r["sigma"] is None or not math.isfinite(r["sigma"])]
    out.append({"parameter": "Wavelength", "reason": _WAVELENGTH_REASON})
    return out


def _finite(value):
    """JSON has no inf/NaN: None instead."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def calibration_record(result, *, inputs=None, extra: dict | None = None) -> dict:
    """The content of ``calibration.json``: values, σ, covariance with units, status, flags (JSON-ready).

    Parameters
    ----------
    result : CalibrationResult
    inputs : CalibrationInputs, optional
        Adds the input file names, wavelength and calibrant.
    extra : dict, optional
        More top-level entries (e.g. the panel refinement).
    """
    rows = parameter_rows(result)
    record = {"format": FORMAT, "status": result.status, "reason": result.reason,
              "warnings": list(result.warnings)}
    verdict = getattr(result, "verdict", None)
    if verdict is not None:
        record["verdict"] = {"status": verdict.status, "reasons": list(verdict.reasons)}
    converged = result.status != "FAILED"
    params = {r["name"]: {"value": r["value"], "unit": r["unit"], "refined": r["refined"],
                          "sigma": _finite(r["sigma"]) if r["refined"] else None,
                          "determined": bool(r["refined"] and r["sigma"] is not None and math.isfinite(r["sigma"])),
                          **({"note": r["note"]} if r["note"] else {})} for r in rows}
    record["parameters" if converged else "last_geometry"] = params
    if converged and result.covariance is not None and len(result.parameter_labels):
        labels, cov = _natural_covariance(result)
        by_field = {fld: (name, unit) for name, fld, unit in PARAMETERS}
        record["covariance"] = {
            "parameters": [by_field[f][0] for f in labels], "units": [by_field[f][1] for f in labels],
            "matrix": [[_finite(v) for v in row] for row in cov],
            "note": "first-order covariance of the refined parameters (units of 'units', row × column); null = "
                    "not determined. From the ring points' error model: peak-fit errors (one error per crowded "
                    "run), plus the systematic floor the misfit implies (docs/validation.md)."}
    record["not_determined"] = not_determined(result) if converged else []
    keep = ~result.outlier
    record["error_model"] = {
        "systematic_strain": _finite(result.systematic_strain),
        "points": int(keep.sum()),
        "independent_fits": int(np.unique(result.points.group[keep]).size) if len(result.points) else 0,
        "note": "points of one crowded-run fit share one error; systematic_strain is the per-point error beyond "
                "the peak fits that makes the weighted misfit equal its degrees of freedom (0 = none needed)"}
    record["strain"] = {"mean_abs": _finite(result.mean_strain), "std_abs": _finite(result.std_strain)}
    record["excluded_rings"] = [int(n) for n in result.excluded_rings]
    record["iterations"] = len(result.iterations)
    record["timings_s"] = {k: _finite(v) for k, v in result.timings.items()}
    if inputs is not None:
        record["input"] = {"image": str(inputs.data_path), "dark": inputs.loaded.dark_path,
                           "wavelength_angstrom": float(inputs.wavelength_angstrom),
                           "space_group": int(inputs.space_group), "lattice": [float(v) for v in inputs.lattice]}
    if extra:
        record.update(extra)
    return record
