"""The layouts of the flat arrays handed to the numba kernels: the geometry vector and the per-panel table.

Plain integers, no numba: the kernels (``geometry_kernels``), the Python edges that fill the arrays
(``geometry.kernel_vector``, ``panels.kernel_tables``) and the fit (``refine``) share these names, and a
module that only needs the layout does not pay numba's import.
"""

from __future__ import annotations

__all__ = [
    'G_LAYOUT',
    'G_SIZE',
    'G_LSD',
    'G_BC_Y',
    'G_BC_Z',
    'G_PX',
    'G_T00',
    'G_T01',
    'G_T02',
    'G_T10',
    'G_T11',
    'G_T12',
    'G_T20',
    'G_T21',
    'G_T22',
    'G_P0',
    'G_P1',
    'G_P2',
    'G_P3',
    'G_P4',
    'G_P5',
    'G_RHO_D',
    'G_COS_P3',
    'G_SIN_P3',
    'G_TILT',
    'PANEL_TABLE_COLUMNS',
    'PT_SIZE',
    'PT_CENTER_Y',
    'PT_CENTER_Z',
    'PT_DY',
    'PT_DZ',
    'PT_COS',
    'PT_SIN',
    'PT_DLSD',
    'PT_DP2',
]

#: Index of each quantity in the geometry vector ``g`` (``t_ij`` = element (i, j) of the tilt matrix
#: ``geometry.tilt_matrix``; ``cos_p3``/``sin_p3`` are precomputed from ``p3_rad``).
G_LAYOUT = ("lsd_um", "bc_y_px", "bc_z_px", "px_um",
            "t00", "t01", "t02", "t10", "t11", "t12", "t20", "t21", "t22",
            "p0", "p1", "p2", "p3_rad", "p4", "p5", "rho_d_um", "cos_p3", "sin_p3")
G_SIZE = len(G_LAYOUT)

# Named indices into ``g``, derived from G_LAYOUT so the two cannot drift. Numba freezes module-level ints
# as compile-time constants: ``g[G_RHO_D]`` costs what ``g[19]`` did.
G_LSD = G_LAYOUT.index("lsd_um")
G_BC_Y = G_LAYOUT.index("bc_y_px")
G_BC_Z = G_LAYOUT.index("bc_z_px")
G_PX = G_LAYOUT.index("px_um")
G_T00 = G_LAYOUT.index("t00")
G_T01 = G_LAYOUT.index("t01")
G_T02 = G_LAYOUT.index("t02")
G_T10 = G_LAYOUT.index("t10")
G_T11 = G_LAYOUT.index("t11")
G_T12 = G_LAYOUT.index("t12")
G_T20 = G_LAYOUT.index("t20")
G_T21 = G_LAYOUT.index("t21")
G_T22 = G_LAYOUT.index("t22")
G_P0 = G_LAYOUT.index("p0")
G_P1 = G_LAYOUT.index("p1")
G_P2 = G_LAYOUT.index("p2")
G_P3 = G_LAYOUT.index("p3_rad")
G_P4 = G_LAYOUT.index("p4")
G_P5 = G_LAYOUT.index("p5")
G_RHO_D = G_LAYOUT.index("rho_d_um")
G_COS_P3 = G_LAYOUT.index("cos_p3")
G_SIN_P3 = G_LAYOUT.index("sin_p3")
#: Indices of the tilt matrix elements in row-major order (``g[list(G_TILT)] = T.ravel()``).
G_TILT = (G_T00, G_T01, G_T02, G_T10, G_T11, G_T12, G_T20, G_T21, G_T22)

#: Column order of the per-panel table (``panels.kernel_tables``): panel centre (px), shift (px), cos and
#: sin of the in-plane rotation dθ, distance offset dLsd (µm), p2 offset.
PANEL_TABLE_COLUMNS = ("center_y_px", "center_z_px", "dy_px", "dz_px", "cos_dtheta", "sin_dtheta",
                       "dlsd_um", "dp2")
PT_SIZE = len(PANEL_TABLE_COLUMNS)
PT_CENTER_Y = PANEL_TABLE_COLUMNS.index("center_y_px")
PT_CENTER_Z = PANEL_TABLE_COLUMNS.index("center_z_px")
PT_DY = PANEL_TABLE_COLUMNS.index("dy_px")
PT_DZ = PANEL_TABLE_COLUMNS.index("dz_px")
PT_COS = PANEL_TABLE_COLUMNS.index("cos_dtheta")
PT_SIN = PANEL_TABLE_COLUMNS.index("sin_dtheta")
PT_DLSD = PANEL_TABLE_COLUMNS.index("dlsd_um")
PT_DP2 = PANEL_TABLE_COLUMNS.index("dp2")
