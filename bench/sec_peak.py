"""Section 3, ``peak``: this machine's matmul FLOP/s, and the hand train step's achieved fraction of it.

A time says little across machines; a fraction of the machine's own peak does. The peak is the best
median over square (n, n) @ (n, n) products, float64 and float32, measured in the same run with the same
BLAS threads; the train step's FLOPs are the matrix products counted by bench/flops.py, so the fraction
is a lower bound on how well the step uses the machine's arithmetic.
"""
from __future__ import annotations

import numpy as np

import flops
from common import log, ms, tag
from mini_gumbel.timing import time_interleaved

TARGETS = {"medium_peak_fraction": 0.30}


def matmul_peak_numpy(sizes, repeats, target_s) -> dict:
    """Best median FLOP/s of square (n, n) @ (n, n) products over ``sizes``, per dtype."""
    out = {}
    rng = np.random.default_rng(0)
    for dtype in ("float64", "float32"):
        fns = {}
        for n in sizes:
            a = rng.standard_normal((n, n)).astype(dtype)
            b = rng.standard_normal((n, n)).astype(dtype)
            c = np.empty((n, n), dtype)
            fns[str(n)] = lambda a=a, b=b, c=c: np.matmul(a, b, out=c)
        t = time_interleaved(fns, repeats=repeats, target_s=target_s)
        per = {n: flops.mm(n, n, n) / t[str(n)] for n in sizes}
        best = max(per, key=per.get)
        out[dtype] = {"flop_per_s": per[best], "n": best, "by_n": {str(k): v for k, v in per.items()}}
    return out


def run(env, sz, reader_sec) -> dict:
    """``reader_sec`` is section 2's result: its rows carry the train step's FLOPs and time."""
    peak = matmul_peak_numpy(sz["peak_n"], sz["repeats_peak"], sz["target_s"])
    rows = []
    for r in (reader_sec or {}).get("results", []):
        p = peak[r["dtype"]]["flop_per_s"]
        frac = r["hand_full_flop_per_s"] / p
        rows.append({"name": r["name"], "dtype": r["dtype"], "shapes": r["shapes"], "d_model": r["config"]["d_model"],
                     "train_step_flops": r["flops"]["train_step"], "hand_full_s": r["hand_full_s"],
                     "achieved_flop_per_s": r["hand_full_flop_per_s"], "peak_flop_per_s": p,
                     "fraction_of_peak": frac, "backend": env["backend"], "device": env["device"]})
        log(f"peak {r['name']} {r['dtype']}: {r['hand_full_flop_per_s'] / 1e9:.1f} GFLOP/s = {100 * frac:.0f}% of "
            f"{p / 1e9:.1f}")
    return tag(env, peak=peak, results=rows,
               note="peak measured in this run with the same BLAS thread count; FLOPs counted by bench/flops.py "
                    "(matrix products only)")


def targets(sec) -> list:
    pk = sec["results"]
    med = [r for r in pk if r["name"] == "medium"] or pk
    if not med:
        return []
    worst = min(med, key=lambda r: r["fraction_of_peak"])
    return [{"target": "medium_peak_fraction", "threshold": TARGETS["medium_peak_fraction"],
             "measured": worst["fraction_of_peak"],
             "met": worst["fraction_of_peak"] >= TARGETS["medium_peak_fraction"],
             "detail": "; ".join(f"{r['name']} {r['dtype']}: {100 * r['fraction_of_peak']:.0f}%" for r in med)}]


def markdown(sec, env) -> list:
    pk = sec["peak"]
    L = ["## 3. Achieved FLOP/s of the hand train step vs the measured matmul peak", "",
         "Peak: best median of square matmuls, " + ", ".join(
             f"{d} {v['flop_per_s'] / 1e9:.1f} GFLOP/s (n={v['n']})" for d, v in pk.items())
         + ". FLOPs: matrix products only, bench/flops.py.", "",
         "| setup | dtype | train-step GFLOP | hand step ms | achieved GFLOP/s | peak GFLOP/s | fraction |",
         "|---|---|---:|---:|---:|---:|---:|"]
    for r in sec["results"]:
        L.append(f"| {r['name']} (C={r['d_model']}) | {r['dtype']} | {r['train_step_flops'] / 1e9:.2f} | "
                 f"{ms(r['hand_full_s'])} | {r['achieved_flop_per_s'] / 1e9:.1f} | "
                 f"{r['peak_flop_per_s'] / 1e9:.1f} | {100 * r['fraction_of_peak']:.0f}% |")
    return L + [""]
