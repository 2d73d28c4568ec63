"""Section 5, ``cupy``: NumPy against CuPy on the same hand-written code, at sizes large enough for a GPU.

The package dispatches on its inputs (``get_xp``), so the very functions of sections 1-3 run on CuPy
arrays unchanged; this section times them both ways: the top-K hand path, the reader's train and frozen
steps, and the matmul peak on each side. The NumPy side is timed as everywhere else
(``timing.time_interleaved``), the GPU side with CUDA events (``timing.gpu_time``), and the GPU train
step's FLOP/s is reported as a fraction of the GPU's own measured matmul peak.

Without CuPy or a CUDA device the section is skipped, and says why.
"""
from __future__ import annotations

import numpy as np

import flops
from common import log, ms, reader_step, topk_step
from mini_gumbel.gumbel import RELAXATIONS
from mini_gumbel.reader import ReaderConfig
from mini_gumbel.timing import gpu_time, time_interleaved

TARGETS = {"cupy_speedup": 20.0}


def cupy_or_reason():
    """(cupy, None) when CuPy imports and sees a CUDA device, else (None, why not)."""
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


def run(env, sz) -> dict:
    cp, reason = cupy_or_reason()
    if cp is None:
        msg = f"skipped: {reason}"
        log(f"cupy {msg}")
        return {"skipped": True, "reason": msg}
    props = cp.cuda.runtime.getDeviceProperties(0)
    name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
    gpu = (f"GPU {name} (CUDA runtime {cp.cuda.runtime.runtimeGetVersion()}, driver "
           f"{cp.cuda.runtime.driverGetVersion()})")
    both = {"backend": "numpy vs cupy", "device": gpu, "numpy_device": env["device"], "cupy_device": gpu,
            "versions": env["versions"]}
    rows = []

    def record(item, dtype, shapes, np_fn, cp_fn, flop=None):
        t_np = time_interleaved({"numpy": np_fn}, repeats=sz["cupy_np_repeat"], target_s=sz["target_s"])["numpy"]
        t_gpu = gpu_time(cp_fn, repeats=sz["cupy_repeat"], warmup=3)
        row = {"item": item, "dtype": dtype, "shapes": shapes, "numpy_s": t_np, "cupy_gpu_s": float(t_gpu),
               "cupy_host_s": t_gpu.host_s, "speedup": t_np / t_gpu, **both}
        if flop is not None:
            row.update(flops=flop, numpy_flop_per_s=flop / t_np, cupy_flop_per_s=flop / t_gpu)
        rows.append(row)
        log(f"cupy {item} {dtype} {shapes}: x{row['speedup']:.1f}")

    for dtype in ("float32", "float64"):
        n_np, n_cp = sz["cupy_peak_n"]  # the matmul peak of each side, each at its own size
        a, b = (np.random.default_rng(0).standard_normal((n_np, n_np)).astype(dtype) for _ in range(2))
        ga, gb = (cp.random.standard_normal((n_cp, n_cp), dtype=np.float64).astype(dtype) for _ in range(2))
        np_peak = flops.mm(n_np, n_np, n_np) / time_interleaved({"numpy": lambda: a @ b}, repeats=3,
                                                                 target_s=sz["target_s"])["numpy"]
        cp_peak = flops.mm(n_cp, n_cp, n_cp) / gpu_time(lambda: ga @ gb, repeats=sz["cupy_repeat"], warmup=3)
        rows.append({"item": "matmul_peak", "dtype": dtype, "shapes": {"numpy_n": n_np, "cupy_n": n_cp},
                     "numpy_flop_per_s": np_peak, "cupy_flop_per_s": cp_peak, "speedup": cp_peak / np_peak, **both})
        B, N, K = sz["cupy_topk"]
        for relaxation in RELAXATIONS:
            record(f"topk/{relaxation}", dtype, {"B": B, "N": N, "K": K}, topk_step(relaxation, B, N, K, dtype),
                   topk_step(relaxation, B, N, K, dtype, xp=cp))
        cfg_kw, B, N, L, T = sz["cupy_reader"]
        cfg = ReaderConfig(**cfg_kw)
        fl = flops.reader_step_flops(cfg, B, N, L, T)["train_step"]
        for frozen in (False, True):
            record("reader/" + ("frozen_step" if frozen else "train_step"), dtype,
                   {"B": B, "N": N, "L": L, "T": T, "d_model": cfg.d_model},
                   reader_step(cfg, B, N, L, T, dtype, frozen=frozen),
                   reader_step(cfg, B, N, L, T, dtype, frozen=frozen, xp=cp), None if frozen else fl)
    for r in rows:
        if r["item"] == "reader/train_step":
            pk = next(p for p in rows if p["item"] == "matmul_peak" and p["dtype"] == r["dtype"])
            r["cupy_fraction_of_peak"] = r["cupy_flop_per_s"] / pk["cupy_flop_per_s"]
    return {"skipped": False, "device": gpu, "timer": "cupyx.profiler.benchmark, median of gpu_times",
            "results": rows}


def targets(sec) -> list:
    if sec.get("skipped"):
        return [{"target": "cupy_speedup", "threshold": TARGETS["cupy_speedup"], "measured": None, "met": None,
                 "detail": sec["reason"]}]
    big = [r for r in sec["results"] if r["item"] != "matmul_peak"]
    worst = min(big, key=lambda r: r["speedup"])
    return [{"target": "cupy_speedup", "threshold": TARGETS["cupy_speedup"], "measured": worst["speedup"],
             "met": worst["speedup"] >= TARGETS["cupy_speedup"],
             "detail": "; ".join(f"{r['item']} {r['dtype']}: x{r['speedup']:.1f}" for r in big)}]


def markdown(sec, env) -> list:
    L = ["## 5. NumPy vs CuPy", ""]
    if sec.get("skipped"):
        return L + [sec["reason"], ""]
    L += [f"{sec['device']}; {sec['timer']}. NumPy on {env['device']}.", "",
          "| item | dtype | shapes | numpy ms | cupy ms | speedup | notes |", "|---|---|---|---:|---:|---:|---|"]
    for r in sec["results"]:
        if r["item"] == "matmul_peak":
            L.append(f"| matmul peak | {r['dtype']} | {r['shapes']} | | | {r['speedup']:.1f}x | numpy "
                     f"{r['numpy_flop_per_s'] / 1e9:.1f} GFLOP/s, cupy {r['cupy_flop_per_s'] / 1e12:.2f} TFLOP/s |")
            continue
        note = (f"cupy {r['cupy_flop_per_s'] / 1e12:.2f} TFLOP/s = {100 * r['cupy_fraction_of_peak']:.1f}% of peak"
                if "cupy_fraction_of_peak" in r else "")
        L.append(f"| {r['item']} | {r['dtype']} | {r['shapes']} | {ms(r['numpy_s'])} | {ms(r['cupy_gpu_s'])} | "
                 f"{r['speedup']:.1f}x | {note} |")
    return L + [""]
