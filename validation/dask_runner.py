"""Scale-out on Dask (``dask.distributed``): run cases, or calibrate many images, on a cluster.

Dask is optional (extra ``scale``); nothing here imports it before it is needed, and asking for it
without it installed is a :class:`DaskUnavailable` error (one line, exit code 2 on the command line).

* ``scheduler=None``: a :class:`distributed.LocalCluster` of ``workers`` single-threaded worker processes,
  each limiting numba to ``max(1, cores // workers)`` threads so the machine is not oversubscribed.
* ``scheduler="tcp://host:8786"``: an existing cluster (its workers need midas-ref installed, and the
  reference folder at the same path for legacy/real cases).

Cases are independent and carry their own seeds, so results equal the serial run's: bit for bit on thread
workers, to ~1e-12 relative on process workers whose numba/BLAS thread counts differ from the serial
process (``tests/test_validation_dask.py`` checks both); only wall times and memory differ.
"""

from __future__ import annotations

import importlib.util
import os
from contextlib import contextmanager

from midas_ref.errors import MidasRefError

__all__ = ["DaskUnavailable", "dask_available", "dask_client", "map_cases", "calibrate_batch"]


class DaskUnavailable(MidasRefError):
    """Dask was asked for (``--scheduler``, ``--workers`` > 1) but ``dask.distributed`` is not installed."""


def dask_available() -> bool:
    """Whether ``dask.distributed`` can be imported."""
    return importlib.util.find_spec("dask") is not None and importlib.util.find_spec("distributed") is not None


def _limit_numba_threads(n: int) -> None:
    import numba

    numba.set_num_threads(max(1, min(n, numba.config.NUMBA_NUM_THREADS)))


@contextmanager
def dask_client(scheduler: str | None = None, workers: int = 2, *, processes: bool = True):
    """A ``distributed.Client`` on ``scheduler``, or on a local cluster of ``workers`` workers (closed after)."""
    if not dask_available():
        raise DaskUnavailable("dask.distributed is not installed (pip install 'midas-ref[scale]'); run without "
                              "--scheduler / --workers for the serial path")
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            client = Client(scheduler, timeout="20s")
        except OSError as exc:
            raise DaskUnavailable(f"cannot connect to the Dask scheduler {scheduler}: {exc}") from None
        try:
            yield client
        finally:
            client.close()
        return
    workers = max(1, int(workers))
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=processes, dashboard_address=None,
                           silence_logs=40)
    client = Client(cluster)
    try:
        if processes:
            client.run(_limit_numba_threads, max(1, (os.cpu_count() or 1) // workers))
        yield client
    finally:
        client.close()
        cluster.close()


def map_cases(cases, shared_dir, client, progress=None) -> list[dict]:
    """Run :func:`validation.runner.run_case` for every case on ``client``; records in the order of ``cases``."""
    from distributed import as_completed

    from .runner import run_case

    futures = [client.submit(run_case, case, None if shared_dir is None else str(shared_dir), pure=False,
                             key=f"case-{k}-{case.case_id}") for k, case in enumerate(cases)]
    index = {f.key: k for k, f in enumerate(futures)}
    records = [None] * len(cases)
    for future in as_completed(futures):
        k = index[future.key]
        records[k] = future.result()
        if progress is not None:
            progress(records[k])
    return records


def _calibrate_one(image: str, params: str, options: dict) -> dict:
    from .records import calibrate_file, geometry_values

    _, result, seconds = calibrate_file(image, params, **options)
    out = geometry_values(result.geometry)
    out.update(status=result.status, reason=result.reason, mean_strain=result.mean_strain, seconds=seconds)
    return out


def calibrate_batch(jobs, *, scheduler: str | None = None, workers: int = 2) -> list[dict]:
    """Calibrate many images on Dask; ``jobs`` = [(image, params[, options]), …].

    ``options`` are :func:`validation.records.calibrate_file` keyword arguments (the ``midas-ref calibrate``
    flags as Python values, e.g. ``{"lsd_guess_um": 1e6}``).

    Returns one dict per job (fitted geometry, status, reason, mean strain, seconds), in order.
    """
    jobs = [(str(image), str(params), dict(rest[0]) if rest else {}) for image, params, *rest in jobs]
    with dask_client(scheduler, workers) as client:
        futures = [client.submit(_calibrate_one, *job, pure=False) for job in jobs]
        return client.gather(futures)
