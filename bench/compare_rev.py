"""Before/after in one run: the reader steps of the working tree against the package at a git revision.

    python bench/compare_rev.py REV [--repeats 7] [--dtypes float64 float32] [--setups default medium]
    python bench/compare_rev.py --alloc-ab     # working tree only: glibc malloc defaults vs "keep" (run.py's)

Extracts ``mini_gumbel/`` at REV (git archive) into a temporary folder as the package ``mini_gumbel_rev`` and
times, interleaved in every repeat, forward / full train step / frozen step of both on identical params and
inputs; prints medians and the ratio rev / now. BLAS threads as in run.py (default 1, --threads).
--alloc-ab instead alternates glibc's static malloc defaults (mmap above 128 KiB, trim above 128 KiB) and
run.py's "keep" setting in every repeat, and counts minor page faults per step.
"""
from __future__ import annotations

import os
import sys

if __name__ == "__main__":
    _t = next((sys.argv[i + 1] for i, a in enumerate(sys.argv[:-1]) if a == "--threads"), "1")
    for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_k] = _t

import argparse  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
_ROOT = os.path.dirname(_HERE)
sys.path.insert(0, _HERE)
sys.path.insert(0, _ROOT)

import numpy as np  # noqa: E402

import bench_reader  # noqa: E402
import run as suite  # noqa: E402
from mini_gumbel import reader as now_reader  # noqa: E402


def load_rev(rev: str, tmp: str):
    blob = subprocess.run(["git", "-C", _ROOT, "archive", rev, "mini_gumbel"], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tf:
        tf.extractall(tmp, filter="data")
    os.rename(os.path.join(tmp, "mini_gumbel"), os.path.join(tmp, "mini_gumbel_rev"))
    sys.path.insert(0, tmp)
    return importlib.import_module("mini_gumbel_rev.reader")


def steps(mod, cfg_kw, B, N, L, T, dtype):
    cfg = mod.ReaderConfig(**cfg_kw)
    params = mod.init_reader(cfg, 0, dtype=dtype)
    ctx, ai, ao, mask = bench_reader.make_inputs(cfg, B, N, L, T)
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
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("rev", nargs="?", default="HEAD")
    ap.add_argument("--alloc-ab", action="store_true", help="malloc defaults vs keep, working tree only")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"])
    ap.add_argument("--setups", nargs="+", default=["default", "medium"])
    ap.add_argument("--threads", default="1")
    ap.add_argument("--malloc", choices=["keep", "default"], default="keep")
    args = ap.parse_args(argv)
    malloc = suite._mallopt_keep() if args.malloc == "keep" else {"applied": False}
    setups = {s[0]: s for s in suite.sizes("full")["reader_setups"]}
    if args.alloc_ab:
        return alloc_ab(args, setups)
    print(f"# {args.rev} vs working tree; threads {os.environ['OPENBLAS_NUM_THREADS']}; malloc {malloc}; "
          f"load {os.getloadavg()}")
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
                    ts = {"rev": [], "now": []}
                    for _ in range(args.repeats):
                        for who, fns in (("rev", a), ("now", b)):
                            t0 = time.perf_counter()
                            fns[step]()
                            ts[who].append(time.perf_counter() - t0)
                    mr, mn = statistics.median(ts["rev"]), statistics.median(ts["now"])
                    print(f"| {name} | {dtype} | {step} | {1e3 * mr:.1f} | {1e3 * mn:.1f} | {mr / mn:.2f}x |",
                          flush=True)
                print(f"|  | {dtype} | max rel. grad diff rev vs now | {diff:.1e} | | |", flush=True)


def _mallopt(mode):
    import ctypes

    libc = ctypes.CDLL("libc.so.6")
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -3, -4
    if mode == "keep":
        libc.mallopt(M_MMAP_MAX, 0)
        libc.mallopt(M_TRIM_THRESHOLD, 1 << 30)
    else:  # glibc's documented static defaults
        libc.mallopt(M_MMAP_MAX, 65536)
        libc.mallopt(M_MMAP_THRESHOLD, 128 * 1024)
        libc.mallopt(M_TRIM_THRESHOLD, 128 * 1024)


def alloc_ab(args, setups):
    import resource

    print(f"# malloc defaults vs keep, working tree; threads {os.environ['OPENBLAS_NUM_THREADS']}; "
          f"load {os.getloadavg()}")
    print("| setup | dtype | step | defaults ms | keep ms | defaults / keep | faults/step defaults | keep |\n"
          "|---|---|---|---:|---:|---:|---:|---:|")
    for name in args.setups:
        _, cfg_kw, B, N, L, T = setups[name]
        for dtype in args.dtypes:
            fns = steps(now_reader, cfg_kw, B, N, L, T, dtype)
            for step in ("forward", "full", "frozen"):
                ts = {"default": [], "keep": []}
                flt = {"default": 0, "keep": 0}
                for _ in range(args.repeats):
                    for mode in ("default", "keep"):
                        _mallopt(mode)
                        fns[step]()  # settle the heap under this mode
                        r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                        t0 = time.perf_counter()
                        fns[step]()
                        ts[mode].append(time.perf_counter() - t0)
                        flt[mode] += resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0
                md, mk = statistics.median(ts["default"]), statistics.median(ts["keep"])
                print(f"| {name} | {dtype} | {step} | {1e3 * md:.1f} | {1e3 * mk:.1f} | {md / mk:.2f}x | "
                      f"{flt['default'] // args.repeats} | {flt['keep'] // args.repeats} |", flush=True)


if __name__ == "__main__":
    main()
