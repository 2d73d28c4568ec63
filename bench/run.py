"""mini_gumbel benchmark suite: hand-written backward vs autograd, FLOP/s vs the matmul peak, growth, NumPy vs CuPy.

    python bench/run.py                      # the full suite (about 10-15 minutes on 2 CPU cores)
    python bench/run.py --quick              # smaller sweeps, fewer repeats (a couple of minutes)
    python bench/run.py --tiny               # seconds: the CI smoke size (numbers mean nothing)
    python bench/run.py --only topk reader   # some sections: topk reader peak growth cupy

Sections (bench/README.md explains each):
  topk    relaxed top-K forward + backward, every method, hand vs autograd, B=64, N in {10,100,1000}, K in {1,5,20}
  reader  reader full train step and frozen (mask-gradient-only) step, hand vs autograd, default + medium config
  peak    float32 / float64 matmul FLOP/s of this machine, and the reader train step's achieved fraction of it
  growth  hand-path time against N, K, L and batch size, with fitted log-log exponents
  cupy    NumPy vs CuPy for topk, reader steps and the matmul peak at large sizes (cupyx.profiler.benchmark);
          skipped, with the reason, when CuPy or a CUDA device is missing

Writes results.json and results.md to --out (default bench/out/). Every result records backend, dtype,
shapes, device and library versions. CPU timings are medians of interleaved repeats (time.perf_counter);
on a shared machine read the ratios, not the absolute times. BLAS runs on --threads threads (default 1,
exported as OPENBLAS_NUM_THREADS / OMP_NUM_THREADS / MKL_NUM_THREADS before NumPy is imported), and glibc
malloc is told to keep freed memory (--malloc keep, the default; see README) -- both are recorded.
"""
from __future__ import annotations

import os
import sys


def _early_threads(argv) -> str:
    """--threads must take effect before NumPy (and its BLAS) is imported."""
    for i, a in enumerate(argv):
        if a == "--threads" and i + 1 < len(argv):
            return argv[i + 1]
        if a.startswith("--threads="):
            return a.split("=", 1)[1]
    return "1"


if __name__ == "__main__":
    _T = _early_threads(sys.argv[1:])
    for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_k] = _T

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import platform  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.dirname(_HERE))

import numpy as np  # noqa: E402

import bench_reader  # noqa: E402
import bench_topk  # noqa: E402
import flops  # noqa: E402
from mini_gumbel.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from mini_gumbel.gumbel import METHODS, gumbel_noise, relaxed_topk_backward, relaxed_topk_forward  # noqa: E402
from mini_gumbel.reader import ReaderConfig, init_reader, reader_backward, reader_forward  # noqa: E402

SECTIONS = ("topk", "reader", "peak", "growth", "cupy")
TAU, KAPPA = bench_topk.TAU, bench_topk.KAPPA

TARGETS = {
    "reader_train_speedup": 5.0,
    "topk_speedup": 3.0,
    "medium_peak_fraction": 0.30,
    "growth_exponent_N": 1.15,
    "cupy_speedup": 20.0,
}


# ---------------------------------------------------------------------------------------------------------
# environment


def _mallopt_keep() -> dict:
    """glibc keeps freed memory (no page faults on reuse): the same setting the CLI applies."""
    from mini_gumbel.cli import keep_freed_memory

    return keep_freed_memory()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version(), "numpy": np.__version__}
    for pkg in ("autograd", "cupy", "cupy-cuda12x", "cupy-cuda11x", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        b = cfg["Build Dependencies"]["blas"]
        return f"{b.get('name')} {b.get('version')}"
    except Exception:  # noqa: BLE001 -- old NumPy: the name is only informative
        return "unknown"


def environment(args, malloc) -> dict:
    return {
        "backend": "numpy",
        "device": f"CPU {_cpu_name()} ({os.cpu_count()} logical cores)",
        "versions": _versions(),
        "blas": _blas(),
        "threads": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")},
        "malloc": malloc,
        "platform": platform.platform(),
        "load_average_at_start": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "size": args.size,
        "command": " ".join(["python bench/run.py"] + sys.argv[1:]),
        "timer": "time.perf_counter; medians over repeats, compared paths interleaved (CPU); "
                 "cupyx.profiler.benchmark gpu_times (GPU)",
    }


def _tag(env, **kw) -> dict:
    """The fields every result carries."""
    out = {"backend": env["backend"], "device": env["device"], "versions": env["versions"]}
    out.update(kw)
    return out


# ---------------------------------------------------------------------------------------------------------
# 1. relaxed top-K: hand vs autograd


def section_topk(env, sz) -> dict:
    rows = []
    for dtype in sz["topk_dtypes"]:
        for N in sz["topk_N"]:
            for K in sz["topk_K"]:
                if K > N:
                    continue
                for method in METHODS:
                    r = bench_topk.bench_case(method, sz["topk_B"], N, K, np.dtype(dtype), repeats=sz["repeats_topk"],
                                              target_s=sz["target_s"])
                    r = _tag(env, dtype=r.pop("dtype"), shapes={"B": r.pop("B"), "N": r.pop("N"), "K": r.pop("K")},
                             **r)
                    rows.append(r)
                    _log(f"topk {method:9s} {dtype} {r['shapes']}: x{r['ratio_autograd_over_hand']:.2f}")
    return {"results": rows}


# ---------------------------------------------------------------------------------------------------------
# 2. reader: full train step and frozen step, hand vs autograd (+ the forward, the ratio's bound)


def _reader_setups(sz):
    return [(name, ReaderConfig(**cfg), B, N, L, T) for name, cfg, B, N, L, T in sz["reader_setups"]]


def section_reader(env, sz) -> dict:
    rows = []
    for name, cfg, B, N, L, T in _reader_setups(sz):
        for dtype in sz["reader_dtypes"]:
            r = bench_reader.bench_one(name, cfg, B, N, L, T, np.dtype(dtype).type, sz["repeats_reader"])
            fl = flops.reader_step_flops(cfg, B, N, L, T)
            r["flops"] = fl
            r["hand_full_flop_per_s"] = fl["train_step"] / r["hand_full_s"]
            # hand step >= forward, so autograd / hand <= autograd / forward: the most hand code could give
            r["bound_full"] = r["autograd_full_s"] / r["forward_s"]
            r["bound_frozen"] = r["autograd_frozen_s"] / r["forward_s"]
            r = _tag(env, **r)
            rows.append(r)
            _log(f"reader {name} {r['dtype']}: full x{r['ratio_full']:.2f} (bound x{r['bound_full']:.2f}), "
                 f"frozen x{r['ratio_frozen']:.2f} (bound x{r['bound_frozen']:.2f})")
    return {"results": rows}


# ---------------------------------------------------------------------------------------------------------
# 3. matmul peak of this machine, and the medium train step's fraction of it


def _median_time(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def matmul_peak_numpy(sizes, repeats) -> dict:
    """Best median FLOP/s of square (n, n) @ (n, n) products over ``sizes``, per dtype."""
    out = {}
    rng = np.random.default_rng(0)
    for dtype in ("float64", "float32"):
        per = {}
        for n in sizes:
            a = rng.standard_normal((n, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            c = np.empty((n, n), dtype)
            t = _median_time(lambda: np.matmul(a, b, out=c), repeats)
            per[n] = flops.mm(n, n, n) / t
        best = max(per, key=per.get)
        out[dtype] = {"flop_per_s": per[best], "n": best, "by_n": {str(k): v for k, v in per.items()}}
    return out


def section_peak(env, sz, reader_sec) -> dict:
    peak = matmul_peak_numpy(sz["peak_n"], sz["repeats_peak"])
    rows = []
    for r in (reader_sec or {}).get("results", []):
        frac = r["hand_full_flop_per_s"] / peak[r["dtype"]]["flop_per_s"]
        rows.append({"name": r["name"], "dtype": r["dtype"], "shapes": r["shapes"], "d_model": r["config"]["d_model"],
                     "train_step_flops": r["flops"]["train_step"], "hand_full_s": r["hand_full_s"],
                     "achieved_flop_per_s": r["hand_full_flop_per_s"], "peak_flop_per_s": peak[r["dtype"]]["flop_per_s"],
                     "fraction_of_peak": frac, "backend": env["backend"], "device": env["device"]})
        _log(f"peak {r['name']} {r['dtype']}: {r['hand_full_flop_per_s'] / 1e9:.1f} GFLOP/s = {100 * frac:.0f}% of "
             f"{peak[r['dtype']]['flop_per_s'] / 1e9:.1f}")
    return _tag(env, peak=peak, results=rows,
                note="peak measured in this run with the same BLAS thread count; FLOPs counted by bench/flops.py "
                     "(matrix products only)")


# ---------------------------------------------------------------------------------------------------------
# 4. growth: time of the hand path against N, K, L, B; log-log fitted exponents


def _fit_exponent(xs, ts) -> dict:
    lx, lt = np.log(np.asarray(xs, float)), np.log(np.asarray(ts, float))
    slope = float(np.polyfit(lx, lt, 1)[0]) if len(xs) > 1 else float("nan")
    last = float((lt[-1] - lt[-2]) / (lx[-1] - lx[-2])) if len(xs) > 1 else float("nan")
    return {"exponent": slope, "exponent_last_two": last}


def _interleaved(fns, repeats, target_s):
    """Median seconds per call of each fn, round-robin over fns in every repeat (load drift hits all)."""
    numbers = [bench_topk._calibrate(f, target_s) for f in fns]
    times = [[] for _ in fns]
    for _ in range(repeats):
        for f, n, ts in zip(fns, numbers, times):
            ts.append(bench_topk._time_loop(f, n))
    return [statistics.median(ts) for ts in times]


def _topk_hand(method, B, N, K, dtype, seed=0, xp=np):
    rng = np.random.default_rng(seed)
    w = xp.asarray(rng.standard_normal((B, N)).astype(dtype))  # (B, N)
    noise = gumbel_noise((B, K, N) if method == "max" else (B, N), rng, dtype=dtype, xp=None if xp is np else xp)
    R = xp.asarray(rng.standard_normal((B, N)).astype(dtype))  # (B, N)

    def run():
        _, cache = relaxed_topk_forward(w, noise, K, tau=TAU, kappa=KAPPA, method=method)
        return relaxed_topk_backward(R, cache)

    return run


def _reader_step(cfg, B, N, L, T, dtype, *, frozen=False, xp=np):
    params = init_reader(cfg, 0, dtype=dtype)
    ctx, ai, ao, mask = bench_reader.make_inputs(cfg, B, N, L, T)
    mask = mask.astype(dtype)
    if xp is not np:
        params = {k: xp.asarray(v) for k, v in params.items()}
        ctx, ai, ao, mask = (xp.asarray(a) for a in (ctx, ai, ao, mask))
    one = np.dtype(dtype).type(1.0)

    def run():
        _, c = reader_forward(params, cfg, ctx, ai, ao, mask if frozen else None)
        return reader_backward(one, c, param_grads=not frozen)

    return run


def section_growth(env, sz) -> dict:
    rows = []
    B, dtype = sz["growth_topk_B"], "float64"
    for method in METHODS:
        for axis, grid, fixed in (("N", sz["growth_N"], {"K": sz["growth_K_fixed"]}),
                                  ("K", sz["growth_K"], {"N": sz["growth_N_fixed"]})):
            shapes = [dict(B=B, **fixed, **{axis: v}) for v in grid]
            ts = _interleaved([_topk_hand(method, s["B"], s["N"], s["K"], dtype) for s in shapes],
                              sz["repeats_growth"], sz["target_s"])
            rows.append(_tag(env, op=f"topk/{method}", axis=axis, dtype=dtype, fixed=dict(B=B, **fixed), values=grid,
                             shapes=shapes, median_s=ts, **_fit_exponent(grid, ts)))
            _log(f"growth topk/{method} {axis}: exponent {rows[-1]['exponent']:.2f}")
    base = dict(sz["growth_reader_base"])
    cfg = ReaderConfig(**sz["growth_reader_cfg"])
    for axis in ("N", "L", "B"):
        grid = sz[f"growth_reader_{axis}"]
        shapes = [dict(base, **{axis: v}) for v in grid]
        fns = [_reader_step(cfg, s["B"], s["N"], s["L"], s["T"], np.float64) for s in shapes]
        ts = _interleaved(fns, sz["repeats_growth_reader"], sz["target_s"])
        rows.append(_tag(env, op="reader/train_step", axis=axis, dtype="float64", fixed=base, values=grid,
                         shapes=shapes, config=dataclasses.asdict(cfg), median_s=ts, **_fit_exponent(grid, ts)))
        _log(f"growth reader {axis}: exponent {rows[-1]['exponent']:.2f}")
    return {"results": rows}


# ---------------------------------------------------------------------------------------------------------
# 5. NumPy vs CuPy at large sizes


def _cupy_or_reason():
    try:
        import cupy as cp
        import cupyx.profiler  # noqa: F401
    except Exception as e:  # noqa: BLE001 -- ImportError, or a CUDA library that fails to load
        return None, f"CuPy is not importable ({type(e).__name__}: {e})"
    try:
        n = cp.cuda.runtime.getDeviceCount()
    except Exception as e:  # noqa: BLE001 -- no driver
        return None, f"CuPy imported but no CUDA device is usable ({type(e).__name__}: {e})"
    if n < 1:
        return None, "CuPy imported but no CUDA device found"
    return cp, None


def section_cupy(env, sz) -> dict:
    cp, reason = _cupy_or_reason()
    if cp is None:
        msg = f"skipped: {reason}"
        _log(f"cupy {msg}")
        return {"skipped": True, "reason": msg}
    from cupyx.profiler import benchmark

    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    gpu = f"GPU {name} (CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, driver "\
          f"{cp.cuda.runtime.driverGetVersion()})"
    n_rep, n_warm = sz["cupy_repeat"], 3

    def gpu_time(fn):
        r = benchmark(fn, (), n_repeat=n_rep, n_warmup=n_warm)
        return float(np.median(r.gpu_times[0])), float(np.median(r.cpu_times))

    rows = []

    def record(item, dtype, shapes, np_fn, cp_fn, flop=None):
        t_np = _median_time(np_fn, sz["cupy_np_repeat"])
        t_gpu, t_cpu_side = gpu_time(cp_fn)
        row = {"item": item, "dtype": dtype, "shapes": shapes, "numpy_s": t_np, "cupy_gpu_s": t_gpu,
               "cupy_host_s": t_cpu_side, "speedup": t_np / t_gpu, "numpy_device": env["device"],
               "cupy_device": gpu, "backend": "numpy vs cupy", "device": gpu, "versions": env["versions"]}
        if flop is not None:
            row.update(flops=flop, numpy_flop_per_s=flop / t_np, cupy_flop_per_s=flop / t_gpu)
        rows.append(row)
        _log(f"cupy {item} {dtype} {shapes}: x{row['speedup']:.1f}")

    for dtype in ("float32", "float64"):
        # matmul peak on both
        n_np, n_cp = sz["cupy_peak_n"]
        a, b = (np.random.default_rng(0).standard_normal((n_np, n_np)).astype(dtype) for _ in range(2))
        ga, gb = (cp.random.standard_normal((n_cp, n_cp), dtype=np.float64).astype(dtype) for _ in range(2))
        t_np = _median_time(lambda: a @ b, 3)
        t_gpu, _ = gpu_time(lambda: ga @ gb)
        rows.append({"item": "matmul_peak", "dtype": dtype, "shapes": {"numpy_n": n_np, "cupy_n": n_cp},
                     "numpy_flop_per_s": flops.mm(n_np, n_np, n_np) / t_np,
                     "cupy_flop_per_s": flops.mm(n_cp, n_cp, n_cp) / t_gpu,
                     "speedup": (flops.mm(n_cp, n_cp, n_cp) / t_gpu) / (flops.mm(n_np, n_np, n_np) / t_np),
                     "backend": "numpy vs cupy", "device": gpu, "numpy_device": env["device"], "cupy_device": gpu,
                     "versions": env["versions"]})
        for method in METHODS:
            B, N, K = sz["cupy_topk"]
            record(f"topk/{method}", dtype, {"B": B, "N": N, "K": K}, _topk_hand(method, B, N, K, dtype),
                   _topk_hand(method, B, N, K, dtype, xp=cp))
        cfgd, B, N, L, T = sz["cupy_reader"]
        cfg = ReaderConfig(**cfgd)
        fl = flops.reader_step_flops(cfg, B, N, L, T)["train_step"]
        for frozen in (False, True):
            record("reader/" + ("frozen_step" if frozen else "train_step"), dtype,
                   {"B": B, "N": N, "L": L, "T": T, "d_model": cfg.d_model},
                   _reader_step(cfg, B, N, L, T, dtype, frozen=frozen),
                   _reader_step(cfg, B, N, L, T, dtype, frozen=frozen, xp=cp), None if frozen else fl)
    for r in rows:
        if r["item"] == "reader/train_step":
            pk = next(p for p in rows if p["item"] == "matmul_peak" and p["dtype"] == r["dtype"])
            r["cupy_fraction_of_peak"] = r["cupy_flop_per_s"] / pk["cupy_flop_per_s"]
    return {"skipped": False, "device": gpu, "timer": "cupyx.profiler.benchmark, median of gpu_times",
            "results": rows}


# ---------------------------------------------------------------------------------------------------------
# sizes


def sizes(name: str) -> dict:
    default_cfg = dict(vocab_size=300)
    medium_cfg = dict(vocab_size=300, d_model=256, d_ff=1024, max_ctx_len=64)
    full = {
        "topk_B": 64, "topk_N": [10, 100, 1000], "topk_K": [1, 5, 20], "topk_dtypes": ["float64", "float32"],
        "repeats_topk": 9, "target_s": 0.02,
        "reader_setups": [("default", default_cfg, 32, 10, 24, 4), ("medium", medium_cfg, 8, 10, 64, 4)],
        "reader_dtypes": ["float64", "float32"], "repeats_reader": 5,
        "peak_n": [1024, 2048], "repeats_peak": 3,
        "growth_topk_B": 64, "growth_N": [100, 300, 1000, 3000, 10000], "growth_K_fixed": 5,
        "growth_K": [1, 2, 5, 10, 20, 50], "growth_N_fixed": 1000, "repeats_growth": 7,
        "growth_reader_cfg": default_cfg, "growth_reader_base": {"B": 8, "N": 10, "L": 24, "T": 4},
        "growth_reader_N": [5, 10, 20, 40], "growth_reader_L": [8, 16, 24, 32], "growth_reader_B": [4, 8, 16, 32],
        "repeats_growth_reader": 5,
        "cupy_topk": (256, 10000, 20), "cupy_reader": (medium_cfg, 32, 10, 64, 4), "cupy_peak_n": (2048, 8192),
        "cupy_repeat": 20, "cupy_np_repeat": 3,
    }
    if name == "full":
        return full
    if name == "quick":
        return dict(full, topk_dtypes=["float64"], repeats_topk=5, target_s=0.01, reader_dtypes=["float64", "float32"],
                    repeats_reader=3, peak_n=[1024], growth_N=[100, 1000, 10000], growth_K=[1, 5, 20],
                    repeats_growth=5, growth_reader_N=[5, 10, 20], growth_reader_L=[8, 16, 32],
                    growth_reader_B=[4, 8, 16], repeats_growth_reader=3, cupy_reader=(medium_cfg, 16, 10, 64, 4))
    tiny_cfg = dict(vocab_size=50, d_model=16, n_heads=2, d_ff=32, max_ctx_len=8, max_ans_len=4)
    return dict(full, topk_B=4, topk_N=[10], topk_K=[1, 3], topk_dtypes=["float64"], repeats_topk=2, target_s=0.001,
                reader_setups=[("tiny", tiny_cfg, 2, 3, 8, 4)], reader_dtypes=["float64"], repeats_reader=1,
                peak_n=[64, 128], repeats_peak=2, growth_topk_B=4, growth_N=[10, 20, 40], growth_K_fixed=2,
                growth_K=[1, 2, 4], growth_N_fixed=40, repeats_growth=2, growth_reader_cfg=tiny_cfg,
                growth_reader_base={"B": 2, "N": 2, "L": 4, "T": 2}, growth_reader_N=[2, 4],
                growth_reader_L=[4, 8], growth_reader_B=[1, 2], repeats_growth_reader=2,
                cupy_topk=(4, 50, 3), cupy_reader=(tiny_cfg, 2, 3, 8, 4), cupy_peak_n=(64, 128),
                cupy_repeat=3, cupy_np_repeat=1)


# ---------------------------------------------------------------------------------------------------------
# targets and tables


def targets(res) -> list:
    out = []

    def add(name, value, ok, detail):
        out.append({"target": name, "threshold": TARGETS[name], "measured": value, "met": ok, "detail": detail})

    rd = res.get("reader", {}).get("results", [])
    if rd:
        worst = min(rd, key=lambda r: r["ratio_full"])
        add("reader_train_speedup", worst["ratio_full"], worst["ratio_full"] >= TARGETS["reader_train_speedup"],
            "; ".join(f"{r['name']} {r['dtype']}: x{r['ratio_full']:.2f} (bound autograd/forward "
                      f"x{r['bound_full']:.2f})" for r in rd))
    tk = res.get("topk", {}).get("results", [])
    if tk:
        worst = min(tk, key=lambda r: r["ratio_autograd_over_hand"])
        add("topk_speedup", worst["ratio_autograd_over_hand"],
            worst["ratio_autograd_over_hand"] >= TARGETS["topk_speedup"],
            f"min over {len(tk)} cases: {worst['method']} {worst['dtype']} {worst['shapes']} (bound autograd/forward "
            f"x{worst['bound_autograd_over_forward']:.2f}); median x"
            f"{statistics.median(r['ratio_autograd_over_hand'] for r in tk):.2f}; cases below 3x: "
            f"{sum(r['ratio_autograd_over_hand'] < 3 for r in tk)}")
    pk = res.get("peak", {}).get("results", [])
    med = [r for r in pk if r["name"] == "medium"] or pk
    if med:
        worst = min(med, key=lambda r: r["fraction_of_peak"])
        add("medium_peak_fraction", worst["fraction_of_peak"],
            worst["fraction_of_peak"] >= TARGETS["medium_peak_fraction"],
            "; ".join(f"{r['name']} {r['dtype']}: {100 * r['fraction_of_peak']:.0f}%" for r in med))
    gr = [r for r in res.get("growth", {}).get("results", []) if r["axis"] == "N"]
    if gr:
        worst = max(gr, key=lambda r: r["exponent"])
        add("growth_exponent_N", worst["exponent"], worst["exponent"] <= TARGETS["growth_exponent_N"],
            "; ".join(f"{r['op']}: {r['exponent']:.2f}" for r in gr))
    cu = res.get("cupy")
    if cu is not None:
        if cu.get("skipped"):
            out.append({"target": "cupy_speedup", "threshold": TARGETS["cupy_speedup"], "measured": None,
                        "met": None, "detail": cu["reason"]})
        else:
            big = [r for r in cu["results"] if r["item"] != "matmul_peak"]
            worst = min(big, key=lambda r: r["speedup"])
            add("cupy_speedup", worst["speedup"], worst["speedup"] >= TARGETS["cupy_speedup"],
                "; ".join(f"{r['item']} {r['dtype']}: x{r['speedup']:.1f}" for r in big))
    return out


def _ms(s):
    return f"{1e3 * s:.3f}" if s < 0.01 else f"{1e3 * s:.1f}"


def markdown(env, res, tg) -> str:
    L = [f"# mini_gumbel benchmarks ({env['size']})", "",
         f"`{env['command']}` -- {env['device']}; numpy {env['versions']['numpy']} ({env['blas']}), autograd "
         f"{env['versions'].get('autograd')}, python {env['versions']['python']}; BLAS threads "
         f"{env['threads']['OPENBLAS_NUM_THREADS']}; malloc {'keep' if env['malloc'].get('applied') else 'default'}; "
         f"load average at start {env['load_average_at_start']}. CPU times are medians of interleaved repeats "
         "on a shared machine: read the ratios.", ""]
    if tg:
        L += ["## Targets", "", "| target | threshold | measured | met | detail |", "|---|---:|---:|---|---|"]
        for t in tg:
            m = "n/a" if t["measured"] is None else f"{t['measured']:.3g}"
            met = "skipped" if t["met"] is None else ("yes" if t["met"] else "**no**")
            L.append(f"| {t['target']} | {t['threshold']} | {m} | {met} | {t['detail']} |")
        L.append("")
    if "topk" in res:
        L += ["## 1. Relaxed top-K, forward + backward: hand vs autograd", "",
              f"tau={TAU}, kappa={KAPPA}; loss = sum(M * R) for a fixed probe R. bound = autograd / forward: "
              "the hand path includes the forward, so its speedup cannot exceed it.", "",
              "| method | dtype | B | N | K | forward ms | hand ms | autograd ms | autograd / hand | bound | "
              "max rel. grad diff |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["topk"]["results"]:
            s = r["shapes"]
            L.append(f"| {r['method']} | {r['dtype']} | {s['B']} | {s['N']} | {s['K']} | {_ms(r['forward_median_s'])} | "
                     f"{_ms(r['hand_median_s'])} | {_ms(r['autograd_median_s'])} | {r['ratio_autograd_over_hand']:.2f}x | "
                     f"{r['bound_autograd_over_forward']:.2f}x | "
                     f"{r['grad_max_rel_diff']:.1e} |")
        L.append("")
    if "reader" in res:
        L += ["## 2. Reader steps: hand vs autograd on the same forward", "",
              "full = forward + every parameter gradient (mask=None); frozen = forward + mask gradient only. "
              "bound = autograd / forward: the hand step includes the forward, so its speedup cannot exceed it.", "",
              "| setup | dtype | B×N×L, T | forward ms | full: hand ms | full: autograd ms | full ratio | full bound | "
              "frozen: hand ms | frozen: autograd ms | frozen ratio | frozen bound |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in res["reader"]["results"]:
            s = r["shapes"]
            L.append(f"| {r['name']} (C={r['config']['d_model']}) | {r['dtype']} | {s['B']}×{s['N']}×{s['L']}, {s['T']} | "
                     f"{_ms(r['forward_s'])} | {_ms(r['hand_full_s'])} | {_ms(r['autograd_full_s'])} | "
                     f"{r['ratio_full']:.2f}x | {r['bound_full']:.2f}x | {_ms(r['hand_frozen_s'])} | "
                     f"{_ms(r['autograd_frozen_s'])} | {r['ratio_frozen']:.2f}x | {r['bound_frozen']:.2f}x |")
        L.append("")
    if "peak" in res:
        pk = res["peak"]["peak"]
        L += ["## 3. Achieved FLOP/s of the hand train step vs the measured matmul peak", "",
              "Peak: best median of square matmuls, " + ", ".join(
                  f"{d} {v['flop_per_s'] / 1e9:.1f} GFLOP/s (n={v['n']})" for d, v in pk.items())
              + ". FLOPs: matrix products only, bench/flops.py.", "",
              "| setup | dtype | train-step GFLOP | hand step ms | achieved GFLOP/s | peak GFLOP/s | fraction |",
              "|---|---|---:|---:|---:|---:|---:|"]
        for r in res["peak"]["results"]:
            L.append(f"| {r['name']} (C={r['d_model']}) | {r['dtype']} | {r['train_step_flops'] / 1e9:.2f} | "
                     f"{_ms(r['hand_full_s'])} | {r['achieved_flop_per_s'] / 1e9:.1f} | "
                     f"{r['peak_flop_per_s'] / 1e9:.1f} | {100 * r['fraction_of_peak']:.0f}% |")
        L.append("")
    if "growth" in res:
        L += ["## 4. Growth of the hand path (float64)", "",
              "exponent: least-squares slope of log time on log size over the whole grid; last two: the slope "
              "between the two largest sizes (fixed overheads fade there).", "",
              "| op | axis | fixed | sizes | median ms | exponent | last two |", "|---|---|---|---|---|---:|---:|"]
        for r in res["growth"]["results"]:
            fixed = ", ".join(f"{k}={v}" for k, v in r["fixed"].items() if k != r["axis"])
            L.append(f"| {r['op']} | {r['axis']} | {fixed} | {r['values']} | "
                     f"{', '.join(_ms(t) for t in r['median_s'])} | {r['exponent']:.2f} | "
                     f"{r['exponent_last_two']:.2f} |")
        L.append("")
    if "cupy" in res:
        cu = res["cupy"]
        L += ["## 5. NumPy vs CuPy", ""]
        if cu.get("skipped"):
            L += [cu["reason"], ""]
        else:
            L += [f"{cu['device']}; {cu['timer']}. NumPy on {env['device']}.", "",
                  "| item | dtype | shapes | numpy ms | cupy ms | speedup | notes |", "|---|---|---|---:|---:|---:|---|"]
            for r in cu["results"]:
                if r["item"] == "matmul_peak":
                    L.append(f"| matmul peak | {r['dtype']} | {r['shapes']} | | | {r['speedup']:.1f}x | numpy "
                             f"{r['numpy_flop_per_s'] / 1e9:.1f} GFLOP/s, cupy {r['cupy_flop_per_s'] / 1e12:.2f} "
                             "TFLOP/s |")
                    continue
                note = (f"cupy {r['cupy_flop_per_s'] / 1e12:.2f} TFLOP/s = {100 * r['cupy_fraction_of_peak']:.1f}% of "
                        "peak" if "cupy_fraction_of_peak" in r else "")
                L.append(f"| {r['item']} | {r['dtype']} | {r['shapes']} | {_ms(r['numpy_s'])} | "
                         f"{_ms(r['cupy_gpu_s'])} | {r['speedup']:.1f}x | {note} |")
            L.append("")
    return "\n".join(L)


def _log(msg):
    print(msg, file=sys.stderr, flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", const="quick", dest="size", help="smaller sweeps, fewer repeats")
    g.add_argument("--tiny", action="store_const", const="tiny", dest="size", help="CI smoke size (seconds)")
    ap.set_defaults(size="full")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    ap.add_argument("--out", default=os.path.join(_HERE, "out"), help="output folder (default bench/out/)")
    ap.add_argument("--threads", default="1", help="BLAS threads (default 1; set before NumPy loads)")
    ap.add_argument("--malloc", choices=["keep", "default"], default="keep",
                    help="keep: glibc keeps freed memory (no page faults on reuse); default: leave malloc alone")
    args = ap.parse_args(argv)
    malloc = _mallopt_keep() if args.malloc == "keep" else {"applied": False, "settings": "glibc defaults"}
    env = environment(args, malloc)
    sz = sizes(args.size)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = {}
    if "topk" in args.only:
        res["topk"] = section_topk(env, sz)
    if "reader" in args.only or "peak" in args.only:
        rd = section_reader(env, sz)
        if "reader" in args.only:
            res["reader"] = rd
        if "peak" in args.only:
            res["peak"] = section_peak(env, sz, rd)
    if "growth" in args.only:
        res["growth"] = section_growth(env, sz)
    if "cupy" in args.only:
        res["cupy"] = section_cupy(env, sz)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    env["wall_s"] = time.perf_counter() - t0
    env["minor_page_faults"] = r1.ru_minflt - r0.ru_minflt
    env["load_average_at_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    tg = targets(res)
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "results.json"), {"environment": env, "sizes": sz, "targets": tg,
                                                               "sections": res})
    md = markdown(env, res, tg)
    atomic_write_text(os.path.join(args.out, "results.md"), md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
