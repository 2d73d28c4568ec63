"""Before/after in one run: the reader steps of the working tree against the package at a git revision.

    python tools/compare_rev.py REV [--repeats 7] [--dtypes float64 float32] [--setups default medium]
    python tools/compare_rev.py --alloc-ab     # working tree only: glibc malloc defaults vs "keep" (the suite's)

Extracts ``mini_gumbel/`` at REV (git archive) into a temporary folder as the package ``mini_gumbel_rev`` and
times forward / full train step / frozen step of both on identical params and inputs, the two packages
interleaved in every repeat (mini_gumbel.timing); prints medians and the ratio rev / now. The setups are
the benchmark suite's (bench/sizes.py); BLAS threads as in bench/run.py (default 1, --threads).
--alloc-ab instead alternates glibc's static malloc defaults (mmap above 128 KiB, trim above 128 KiB) and
the suite's "keep" setting in every repeat, and counts minor page faults per step.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import statistics
import subprocess
import sys
import tarfile
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [ROOT, os.path.join(ROOT, "bench")]  # the package (also uninstalled) and the suite's modules

from mini_gumbel.timing import environment, keep_freed_memory, set_blas_threads, time_interleaved  # noqa: E402
from sizes import FULL  # noqa: E402 -- the suite's setups; loads no NumPy


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", nargs="?", default="HEAD")
    ap.add_argument("--alloc-ab", action="store_true", help="malloc defaults vs keep, working tree only")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--setups", nargs="+", default=["default", "medium"], choices=[s[0] for s in FULL["reader_setups"]])
    ap.add_argument("--threads", default="1", help="BLAS threads (default 1; set before NumPy loads)")
    ap.add_argument("--malloc", choices=["keep", "default"], default="keep")
    return ap


def load_rev(rev: str, tmp: str):
    import importlib

    blob = subprocess.run(["git", "-C", ROOT, "archive", rev, "mini_gumbel"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        tf.extractall(tmp, filter="data")
    os.rename(os.path.join(tmp, "mini_gumbel"), os.path.join(tmp, "mini_gumbel_rev"))
    sys.path.insert(0, tmp)
    return importlib.import_module("mini_gumbel_rev.reader")


def steps(mod, cfg_kw, B, N, L, T, dtype) -> dict:
    """forward / full / frozen closures of the reader module ``mod`` on the suite's inputs."""
    import numpy as np

    from common import reader_inputs

    cfg = mod.ReaderConfig(**cfg_kw)
    params = mod.init_reader(cfg, 0, dtype=dtype)
    ctx, ai, ao, mask = reader_inputs(cfg, B, N, L, T)
    mask = mask.astype(dtype)
    one = np.dtype(dtype).type(1.0)

    def fwd():
        return mod.reader_forward(params, cfg, ctx, ai, ao, mask)

    def full():
        _, c = mod.reader_forward(params, cfg, ctx, ai, ao)
        return mod.reader_backward(one, c)

    def frozen():
        _, c = mod.reader_forward(params, cfg, ctx, ai, ao, mask)
        return mod.reader_backward(one, c, param_grads=False)

    return {"forward": fwd, "full": full, "frozen": frozen}


def main(argv=None):
    args = build_parser().parse_args(argv)
    set_blas_threads(args.threads)  # BLAS reads it once, when NumPy loads: nothing above has loaded it
    import numpy as np

    from mini_gumbel import reader as now_reader

    malloc = keep_freed_memory() if args.malloc == "keep" else {"applied": False}
    setups = {s[0]: s for s in FULL["reader_setups"]}
    e = environment()
    if args.alloc_ab:
        return alloc_ab(args, setups, now_reader, e)
    print(f"# {args.rev} vs working tree; threads {e['blas_threads']['OPENBLAS_NUM_THREADS']}; malloc {malloc}; "
          f"load {e['load_average']}")
    print("| setup | dtype | step | rev ms | now ms | rev / now |\n|---|---|---|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        rev_reader = load_rev(args.rev, tmp)
        for name in args.setups:
            _, cfg_kw, B, N, L, T = setups[name]
            for dtype in args.dtypes:
                a = steps(rev_reader, cfg_kw, B, N, L, T, dtype)
                b = steps(now_reader, cfg_kw, B, N, L, T, dtype)
                # same numbers from both, or the comparison means nothing
                ga, gb = a["full"]()[0], b["full"]()[0]
                diff = max(float(np.max(np.abs(ga[k] - gb[k])) / (np.max(np.abs(ga[k])) + 1e-30)) for k in ga)
                for step in ("forward", "full", "frozen"):
                    t = time_interleaved({"rev": a[step], "now": b[step]}, repeats=args.repeats)
                    print(f"| {name} | {dtype} | {step} | {1e3 * t['rev']:.1f} | {1e3 * t['now']:.1f} | "
                          f"{t['rev'] / t['now']:.2f}x |", flush=True)
                print(f"|  | {dtype} | max rel. grad diff rev vs now | {diff:.1e} | | |", flush=True)


def _malloc_mode(mode):
    """Set glibc malloc to the suite's "keep" (keep_freed_memory) or to glibc's documented static defaults."""
    if mode == "keep":
        return keep_freed_memory()
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
    libc.mallopt(M_MMAP_MAX, 65536)
    libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
    libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)


def alloc_ab(args, setups, now_reader, e):
    print(f"# malloc defaults vs keep, working tree; threads {e['blas_threads']['OPENBLAS_NUM_THREADS']}; "
          f"load {e['load_average']}")
    print("| setup | dtype | step | defaults ms | keep ms | defaults / keep | faults/step defaults | keep |\n"
          "|---|---|---|---:|---:|---:|---:|---:|")
    for name in args.setups:
        _, cfg_kw, B, N, L, T = setups[name]
        for dtype in args.dtypes:
            fns = steps(now_reader, cfg_kw, B, N, L, T, dtype)
            for step in ("forward", "full", "frozen"):
                ts = {"default": [], "keep": []}
                flt = {"default": 0, "keep": 0}
                faults = [0]

                def counted(fn=fns[step]):
                    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    fn()
                    faults[0] = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0

                # The setting is process-wide, so it cannot switch inside one time_interleaved call: each
                # repeat switches it, and the warm-up call settles the heap under it before the timed call.
                for _ in range(args.repeats):
                    for mode in ("default", "keep"):
                        _malloc_mode(mode)
                        ts[mode].append(time_interleaved({mode: counted}, repeats=1, target_s=0.0, warmup=1)[mode])
                        flt[mode] += faults[0]  # of the timed call, the last one
                md, mk = statistics.median(ts["default"]), statistics.median(ts["keep"])
                print(f"| {name} | {dtype} | {step} | {1e3 * md:.1f} | {1e3 * mk:.1f} | {md / mk:.2f}x | "
                      f"{flt['default'] // args.repeats} | {flt['keep'] // args.repeats} |", flush=True)


if __name__ == "__main__":
    main()
