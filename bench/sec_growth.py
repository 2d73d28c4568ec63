"""Section 4, ``growth``: how the hand path's time grows with N and K (top-K) and with N, L, B (reader
train step), as a fitted log-log exponent.

A path that should be linear in a size and is not wastes work somewhere, and a single size cannot show
it. Each grid sweeps one axis with the others fixed; its sizes are timed interleaved, so load drift does
not bend the curve. Both the least-squares slope over the whole grid and the slope between the two
largest sizes (where fixed overheads fade) are reported.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from common import log, ms, reader_step, tag, topk_step
from mini_gumbel.gumbel import RELAXATIONS
from mini_gumbel.reader import ReaderConfig
from mini_gumbel.timing import time_interleaved

TARGETS = {"growth_exponent_N": 1.15}


def fit_exponent(xs, ts) -> dict:
    lx, lt = np.log(np.asarray(xs, float)), np.log(np.asarray(ts, float))
    slope = float(np.polyfit(lx, lt, 1)[0]) if len(xs) > 1 else float("nan")
    last = float((lt[-1] - lt[-2]) / (lx[-1] - lx[-2])) if len(xs) > 1 else float("nan")
    return {"exponent": slope, "exponent_last_two": last}


def _median_times(fns, repeats, target_s) -> list:
    """Median seconds per call of each fn of the list, timed interleaved; in the list's order."""
    t = time_interleaved({str(i): f for i, f in enumerate(fns)}, repeats=repeats, target_s=target_s)
    return [t[str(i)] for i in range(len(fns))]


def run(env, sz) -> dict:
    rows = []
    B, dtype = sz["growth_topk_B"], "float64"
    for relaxation in RELAXATIONS:
        for axis, grid, fixed in (("N", sz["growth_N"], {"K": sz["growth_K_fixed"]}),
                                  ("K", sz["growth_K"], {"N": sz["growth_N_fixed"]})):
            shapes = [dict(B=B, **fixed, **{axis: v}) for v in grid]
            ts = _median_times([topk_step(relaxation, s["B"], s["N"], s["K"], dtype) for s in shapes],
                               sz["repeats_growth"], sz["target_s"])
            rows.append(tag(env, op=f"topk/{relaxation}", axis=axis, dtype=dtype, fixed=dict(B=B, **fixed),
                            values=grid, shapes=shapes, median_s=ts, **fit_exponent(grid, ts)))
            log(f"growth topk/{relaxation} {axis}: exponent {rows[-1]['exponent']:.2f}")
    base = dict(sz["growth_reader_base"])
    cfg = ReaderConfig(**sz["growth_reader_cfg"])
    for axis in ("N", "L", "B"):
        grid = sz[f"growth_reader_{axis}"]
        shapes = [dict(base, **{axis: v}) for v in grid]
        ts = _median_times([reader_step(cfg, s["B"], s["N"], s["L"], s["T"], np.float64) for s in shapes],
                           sz["repeats_growth_reader"], sz["target_s"])
        rows.append(tag(env, op="reader/train_step", axis=axis, dtype="float64", fixed=base, values=grid,
                        shapes=shapes, config=dataclasses.asdict(cfg), median_s=ts, **fit_exponent(grid, ts)))
        log(f"growth reader {axis}: exponent {rows[-1]['exponent']:.2f}")
    return {"results": rows}


def targets(sec) -> list:
    gr = [r for r in sec["results"] if r["axis"] == "N"]
    if not gr:
        return []
    worst = max(gr, key=lambda r: r["exponent"])
    return [{"target": "growth_exponent_N", "threshold": TARGETS["growth_exponent_N"], "measured": worst["exponent"],
             "met": worst["exponent"] <= TARGETS["growth_exponent_N"],
             "detail": "; ".join(f"{r['op']}: {r['exponent']:.2f}" for r in gr)}]


def markdown(sec, env) -> list:
    L = ["## 4. Growth of the hand path (float64)", "",
         "exponent: least-squares slope of log time on log size over the whole grid; last two: the slope "
         "between the two largest sizes (fixed overheads fade there).", "",
         "| op | axis | fixed | sizes | median ms | exponent | last two |", "|---|---|---|---|---|---:|---:|"]
    for r in sec["results"]:
        fixed = ", ".join(f"{k}={v}" for k, v in r["fixed"].items() if k != r["axis"])
        L.append(f"| {r['op']} | {r['axis']} | {fixed} | {r['values']} | "
                 f"{', '.join(ms(t) for t in r['median_s'])} | {r['exponent']:.2f} | "
                 f"{r['exponent_last_two']:.2f} |")
    return L + [""]
