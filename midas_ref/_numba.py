"""Shared numba options: one place for every JIT flag used by the ``*_kernels.py`` modules."""

from __future__ import annotations

#: ``fastmath`` flag set: contraction and reassociation are fine, but *no* ``nnan``/``ninf`` because masked
#: pixels are carried as NaN and must stay NaN.
FASTMATH = {"contract", "arcp", "reassoc", "nsz"}

#: Options for element-wise parallel kernels.
PARALLEL = dict(parallel=True, cache=True, nogil=True, fastmath=FASTMATH)

#: Options for small serial helpers inlined into kernels.
SERIAL = dict(cache=True, nogil=True, fastmath=FASTMATH)
