"""How this project times code: one set of rules, so that every number in bench/ and tools/ means the same.

The development machine is a shared 2-core VM whose load drifts by tens of percent from one minute to the
next. An absolute time measured there says little; a ratio of two paths measured in the same minute says a
lot. Hence ``time_interleaved``: the compared functions take turns inside every repeat, so a load spike
hits all of them alike, and the median over repeats drops the spikes that remain. Calls that take
microseconds are timed as loops sized to about ``target_s`` so that the clock's resolution and the loop's
own overhead vanish; calls that take seconds are timed one at a time.

A GPU runs asynchronously to the host, so a host clock would time the kernel launches, not the work.
``gpu_time`` uses ``cupyx.profiler.benchmark``, which records CUDA events around each call and
synchronizes on them. CuPy is imported only there: nothing else in this module needs a GPU.

BLAS reads its thread count once, when NumPy loads it, and the right count for this project's small
products is usually one (bench/README.md, "BLAS threads"). ``set_blas_threads`` must therefore run before
anything imports NumPy, which is why this module imports NumPy only inside the functions that use it:
a script can import it first, set the threads, and only then import NumPy.

A result is only comparable to another when the machines are: ``environment`` records what decides the
speed (CPU, BLAS and its threads, library versions, load average) with every run.
"""
from __future__ import annotations

import os
import platform
import statistics
import sys
import time
import warnings
from typing import Callable, Mapping, MutableMapping

__all__ = ["set_blas_threads", "time_interleaved", "gpu_time", "environment", "keep_freed_memory",
           "stopwatch", "elapsed", "Timings", "GpuSeconds", "BLAS_THREAD_VARS"]

BLAS_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
_MAX_CALLS = 1 << 16  # calls per timed loop, at most


def stopwatch() -> tuple:
    """The start of a one-off measurement of a run seconds to minutes long (not a repeated timing): the wall
    clock and the process's CPU time, for ``elapsed``."""
    return time.perf_counter(), time.process_time()


def elapsed(start: tuple) -> tuple:
    """(wall seconds, CPU seconds) since ``stopwatch()``'s ``start``, each rounded to 0.01 s. On a busy shared
    machine the wall clock overstates the cost; the CPU seconds of one BLAS thread do not."""
    w, c = stopwatch()
    return round(w - start[0], 2), round(c - start[1], 2)


def set_blas_threads(n, environ: MutableMapping[str, str] = os.environ) -> dict:
    """Set OPENBLAS/OMP/MKL_NUM_THREADS to ``n`` in ``environ``; returns the three settings.

    Takes effect only if NumPy is imported afterwards (warns when it already is, for ``os.environ``).
    """
    try:
        count = int(n)
    except (TypeError, ValueError):
        count = None
    if count is None or count < 1 or isinstance(n, bool) or (isinstance(n, float) and n != count):
        raise ValueError(f"set_blas_threads: n={n!r}; expected a positive integer")
    if environ is os.environ and "numpy" in sys.modules:
        warnings.warn("set_blas_threads: NumPy is already imported; its BLAS keeps the thread count it "
                      "started with", RuntimeWarning, stacklevel=2)
    for var in BLAS_THREAD_VARS:
        environ[var] = str(count)
    return {var: environ[var] for var in BLAS_THREAD_VARS}


class Timings(dict):
    """``time_interleaved``'s result: {name: median seconds per call}.

    ``samples[name]`` holds the seconds per call of every repeat (in order), ``calls[name]`` the number of
    calls in each timed loop.
    """

    def __init__(self, medians: Mapping, samples: dict, calls: dict):
        super().__init__(medians)
        self.samples = samples
        self.calls = calls


def _loop(fn: Callable, number: int) -> float:
    """Seconds per call of ``number`` back-to-back calls."""
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _calls_per_loop(fn: Callable, target_s: float, warmup: int) -> int:
    """Run the warm-up calls and size a loop of calls that lasts about target_s.

    The warm-up calls (at least one) are timed only to give the first estimate, so a call that already
    takes longer than target_s costs nothing extra here.
    """
    per_call = 0.0
    for _ in range(max(warmup, 1)):
        per_call = _loop(fn, 1)
    number = 1
    while per_call * number < target_s and number < _MAX_CALLS:
        grow = min(10.0, 1.2 * target_s / max(per_call * number, 1e-9))
        number = min(_MAX_CALLS, max(number + 1, int(number * grow)))
        per_call = _loop(fn, number)
    return number


def time_interleaved(fns: Mapping[str, Callable], *, repeats: int = 7, target_s: float = 0.05,
                     warmup: int = 1) -> Timings:
    """Median seconds per call of each function in ``fns``, the functions taking turns in every repeat.

    Each function first runs ``warmup`` calls (at least one), then its calls per timed loop are chosen so
    that a loop lasts about ``target_s`` (one call if a call already does). Every repeat then times one loop
    of each function, in the order of ``fns``.
    """
    from .validate import check_int, check_real  # here: importing this module must not load NumPy

    fn = "time_interleaved"
    if not isinstance(fns, Mapping) or not fns or not all(callable(f) for f in fns.values()):
        raise TypeError(f"{fn}: fns={fns!r}; expected a non-empty dict of name -> callable")
    repeats = check_int(fn, "repeats", repeats, lo=1)
    warmup = check_int(fn, "warmup", warmup, lo=0)
    target_s = check_real(fn, "target_s", target_s, lo=0.0)
    calls = {name: _calls_per_loop(fn, target_s, warmup) for name, fn in fns.items()}
    samples = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            samples[name].append(_loop(fn, calls[name]))
    return Timings({name: statistics.median(ts) for name, ts in samples.items()}, samples, calls)


class GpuSeconds(float):
    """``gpu_time``'s result: median GPU seconds per call; ``host_s`` is the median host-side seconds per
    call (launch and synchronization included), ``samples`` the GPU seconds of every repeat."""

    def __new__(cls, seconds: float, host_s: float, samples: list):
        obj = super().__new__(cls, seconds)
        obj.host_s = host_s
        obj.samples = samples
        return obj


def gpu_time(fn: Callable, *, repeats: int = 20, warmup: int = 3) -> GpuSeconds:
    """Median GPU seconds per call of ``fn`` (CUDA events, ``cupyx.profiler.benchmark``, device 0).

    Raises ImportError when CuPy is not importable.
    """
    from .validate import check_int

    if not callable(fn):
        raise TypeError(f"gpu_time: fn={fn!r}; expected a callable")
    repeats = check_int("gpu_time", "repeats", repeats, lo=1)
    warmup = check_int("gpu_time", "warmup", warmup, lo=0)
    try:
        from cupyx.profiler import benchmark
    except ImportError as e:
        raise ImportError(f"gpu_time: CuPy is not importable ({type(e).__name__}: {e})") from e
    result = benchmark(fn, (), n_repeat=repeats, n_warmup=warmup)
    gpu = [float(t) for t in result.gpu_times[0]]  # gpu_times: (devices, repeats)
    return GpuSeconds(statistics.median(gpu), statistics.median(float(t) for t in result.cpu_times), gpu)


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas(np) -> str:
    try:
        b = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{b.get('name')} {b.get('version')}"
    except Exception:  # noqa: BLE001 -- old NumPy: the name is only informative
        return "unknown"


def _versions(np) -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for pkg in ("autograd", "scipy", "cupy", "cupy-cuda11x", "cupy-cuda12x", "cupy-cuda13x", "torch"):
        try:  # installed-package metadata: nothing is imported
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def environment() -> dict:
    """What decides the speed of a run, independent of backend and dtype.

    Keys: ``versions`` (python, numpy and, where installed, autograd, scipy, cupy, torch), ``cpu``,
    ``cpu_count``, ``blas`` (NumPy's BLAS library), ``blas_threads`` (the three thread variables),
    ``load_average`` (1, 5, 15 minutes), ``platform``. Imports neither CuPy nor torch.
    """
    import numpy as np

    return {
        "versions": _versions(np),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "blas": _blas(np),
        "blas_threads": {var: os.environ.get(var) for var in BLAS_THREAD_VARS},
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
    }


def keep_freed_memory() -> dict:
    """Tell glibc malloc to keep freed memory: no mmap per large array, no trimming of the heap top.

    NumPy frees and re-allocates the same multi-MB temporaries every training step; by default glibc
    hands them back to the kernel and every reuse page-faults them in again (1.3-1.7x slower reader steps,
    measured by ``python tools/compare_rev.py --alloc-ab``). Process-wide; a no-op without glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as e:
        return {"applied": False, "reason": f"no glibc: {e}"}
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    return {"applied": ok, "settings": "mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, 1 GiB)"}
