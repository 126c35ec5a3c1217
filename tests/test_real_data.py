"""Fully automatic calibration of real calibrant images against their shipped geometries.

Reference geometries are converted from each folder's own files by ``validation.real`` (PROVENANCE.md says
how): the pyFAI PONI of the Continuous-Peak-Fit Pilatus 1M image (it describes the up-down flipped image, so
the case calibrates with ImTransOpt 2 and tolP 0, like the PONI), and the HEXRD geometry of the APS GE
image (beam point and Lsd from its instrument group). Bounds are those of the calibration issue; the
same cases are gates of ``midas-ref validate --suite quick``.
"""

from __future__ import annotations

import pytest
from conftest import shared_file

from validation.gates import REAL_GATES
from validation.runner import run_case
from validation.scenarios import Case

pytestmark = pytest.mark.slow


def calibrated(name: str) -> dict:
    folder = shared_file("data", "real", name)
    record = run_case(Case("real", name), folder.parents[2])
    assert record["status"] == "CONVERGED", record["reason"]
    return record["metrics"]["ours"]


def test_pilatus1m_cpf_against_dioptas_poni():
    ours = calibrated("pilatus1m_ceo2_cpf")
    bc_bound = REAL_GATES["pilatus1m_ceo2_cpf"]["err_bc_px"]
    assert abs(ours["err_bc_y_px"]) <= bc_bound and abs(ours["err_bc_z_px"]) <= bc_bound
    # beyond the gates (which bound only the beam centre of this case): the distance as well
    assert abs(ours["err_lsd_rel"]) < 1.5e-4


def test_ge_aps1id_against_hexrd_geometry():
    ours = calibrated("ge_ceo2_aps1id")
    gate = REAL_GATES["ge_ceo2_aps1id"]
    assert abs(ours["err_bc_y_px"]) <= gate["err_bc_px"] and abs(ours["err_bc_z_px"]) <= gate["err_bc_px"]
    assert abs(ours["err_lsd_rel"]) <= gate["err_lsd_rel"]
