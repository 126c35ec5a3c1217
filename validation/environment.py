"""What a validation run records about where it ran: code version, machine, and peak memory of a case."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
import threading
import time

from .shared import repository_dir

__all__ = ["code_version", "machine_info", "PeakMemory"]


def code_version() -> dict:
    """``git describe --always --dirty --tags`` and the commit of the repository, plus the package version.

    Outside a git checkout (an installed wheel) the git fields are ``"unknown"``.
    """
    from midas_ref import __version__

    def git(*args):
        try:
            out = subprocess.run(["git", "-C", str(repository_dir()), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return out.stdout.strip() if out.returncode == 0 and out.stdout.strip() else "unknown"

    return {"describe": git("describe", "--always", "--dirty", "--tags"), "commit": git("rev-parse", "HEAD"),
            "package": __version__}


def machine_info() -> dict:
    """Host, CPU, core count, memory, OS and the versions of the numerical stack."""
    import numba
    import numpy
    import scipy

    info = {"hostname": platform.node(), "platform": platform.platform(), "machine": platform.machine(),
            "python": sys.version.split()[0], "numpy": numpy.__version__, "scipy": scipy.__version__,
            "numba": numba.__version__, "cpu_count": os.cpu_count(),
            "numba_threads": numba.config.NUMBA_NUM_THREADS}
    try:
        affinity = len(os.sched_getaffinity(0))
        info["cpus_usable"] = affinity
    except (AttributeError, OSError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu"] = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal"):
                    info["memory_gib"] = round(int(line.split()[1]) / 2**20, 2)
                    break
    except OSError:
        info.setdefault("cpu", platform.processor() or "unknown")
    return info


def _rss_bytes() -> int | None:
    """Current resident set size of this process, bytes (Linux ``/proc/self/statm``), or None."""
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


class PeakMemory:
    """Context manager sampling the process's resident memory every ``interval_s`` on a daemon thread.

    Attributes (after exit)
    -----------------------
    peak_mib : float
        Largest resident set size seen, MiB (on systems without ``/proc``: the process high-water mark
        ``ru_maxrss``, which never decreases).
    increase_mib : float
        ``peak_mib`` minus the resident size at entry, MiB: what the case itself needed (cases running
        concurrently in one process share this number).
    """

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.peak_mib = float("nan")
        self.increase_mib = float("nan")
        self._stop = threading.Event()
        self._peak = 0
        self._start = 0

    def _poll(self):
        while not self._stop.is_set():
            rss = _rss_bytes()
            if rss is not None and rss > self._peak:
                self._peak = rss
            self._stop.wait(self.interval_s)

    def __enter__(self):
        rss = _rss_bytes()
        if rss is None:
            self._thread = None
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            self._start = self._peak = rss
            self._thread = threading.Thread(target=self._poll, daemon=True)
            self._thread.start()
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self._thread is None:
            self._peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        else:
            self._stop.set()
            self._thread.join()
            rss = _rss_bytes()
            if rss is not None:
                self._peak = max(self._peak, rss)
        self.peak_mib = self._peak / 2**20
        self.increase_mib = max(self._peak - self._start, 0) / 2**20
        return False
