"""Section 1, ``topk``: the relaxed top-K masks, hand-written backward vs autograd of the very same forward.

For each relaxation ("max", "iterative", "st"), dtype and size (B, N, K) it times, on identical scores,
noise and probe R:

    hand      relaxed_topk_forward + relaxed_topk_backward(R)
    autograd  autograd.value_and_grad(lambda w: sum(relaxed_topk_forward(w, ...)[0] * R))(w)
    forward   relaxed_topk_forward alone

The hand path contains the forward, so autograd / hand can never exceed autograd / forward: that bound is
reported next to every ratio. Both paths must give the same gradient before their times mean anything.
"""
from __future__ import annotations

import statistics

import numpy as np

from common import KAPPA, TAU, log, ms, tag, topk_inputs
from mini_gumbel.gumbel import RELAXATIONS, relaxed_topk_backward, relaxed_topk_forward
from mini_gumbel.timing import time_interleaved

TARGETS = {"topk_speedup": 3.0}


def bench_case(relaxation, B, N, K, dtype, *, repeats, target_s, seed=0) -> dict:
    """One (relaxation, B, N, K, dtype): medians of hand, autograd and forward, timed interleaved."""
    import autograd
    import autograd.numpy as anp

    w, noise, R = topk_inputs(relaxation, B, N, K, dtype, seed=seed)

    def forward(x):
        return relaxed_topk_forward(x, noise, K, tau=TAU, kappa=KAPPA, relaxation=relaxation)

    def hand():
        return relaxed_topk_backward(R, forward(w)[1])

    value_and_grad = autograd.value_and_grad(lambda x: anp.sum(forward(x)[0] * R))

    # the two paths must compute the same gradient, or the timing means nothing
    g_hand, (_, g_auto) = hand(), value_and_grad(w)
    scale = max(float(np.max(np.abs(g_auto))), float(np.finfo(dtype).tiny))
    max_rel_diff = float(np.max(np.abs(g_hand.astype(np.float64) - g_auto.astype(np.float64)))) / scale
    t = time_interleaved({"hand": hand, "autograd": lambda: value_and_grad(w), "forward": lambda: forward(w)},
                         repeats=repeats, target_s=target_s)
    return {
        "method": relaxation,  # the field keeps its name: readers of results.json look it up
        "tau": TAU,
        "kappa": KAPPA,
        "hand_median_s": t["hand"],
        "autograd_median_s": t["autograd"],
        "forward_median_s": t["forward"],
        "ratio_autograd_over_hand": t["autograd"] / t["hand"],
        # hand = forward + backward, so autograd / hand can never exceed autograd / forward
        "bound_autograd_over_forward": t["autograd"] / t["forward"],
        "hand_times_s": t.samples["hand"],
        "autograd_times_s": t.samples["autograd"],
        "calls_per_repeat": t.calls,
        "grad_max_rel_diff": max_rel_diff,
    }


def run(env, sz) -> dict:
    rows = []
    for dtype in sz["topk_dtypes"]:
        for N in sz["topk_N"]:
            for K in sz["topk_K"]:
                if K > N:
                    continue
                for relaxation in RELAXATIONS:
                    r = bench_case(relaxation, sz["topk_B"], N, K, np.dtype(dtype), repeats=sz["repeats_topk"],
                                   target_s=sz["target_s"])
                    rows.append(tag(env, dtype=dtype, shapes={"B": sz["topk_B"], "N": N, "K": K}, **r))
                    log(f"topk {relaxation:9s} {dtype} {rows[-1]['shapes']}: x{r['ratio_autograd_over_hand']:.2f}")
    return {"results": rows}


def targets(sec) -> list:
    tk = sec["results"]
    if not tk:
        return []
    worst = min(tk, key=lambda r: r["ratio_autograd_over_hand"])
    detail = (f"min over {len(tk)} cases: {worst['method']} {worst['dtype']} {worst['shapes']} (bound "
              f"autograd/forward x{worst['bound_autograd_over_forward']:.2f}); median x"
              f"{statistics.median(r['ratio_autograd_over_hand'] for r in tk):.2f}; cases below 3x: "
              f"{sum(r['ratio_autograd_over_hand'] < 3 for r in tk)}")
    return [{"target": "topk_speedup", "threshold": TARGETS["topk_speedup"],
             "measured": worst["ratio_autograd_over_hand"],
             "met": worst["ratio_autograd_over_hand"] >= TARGETS["topk_speedup"], "detail": detail}]


def markdown(sec, env) -> list:
    L = ["## 1. Relaxed top-K, forward + backward: hand vs autograd", "",
         f"tau={TAU}, kappa={KAPPA}; loss = sum(M * R) for a fixed probe R. bound = autograd / forward: "
         "the hand path includes the forward, so its speedup cannot exceed it.", "",
         "| method | dtype | B | N | K | forward ms | hand ms | autograd ms | autograd / hand | bound | "
         "max rel. grad diff |",
         "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sec["results"]:
        s = r["shapes"]
        L.append(f"| {r['method']} | {r['dtype']} | {s['B']} | {s['N']} | {s['K']} | {ms(r['forward_median_s'])} | "
                 f"{ms(r['hand_median_s'])} | {ms(r['autograd_median_s'])} | {r['ratio_autograd_over_hand']:.2f}x | "
                 f"{r['bound_autograd_over_forward']:.2f}x | {r['grad_max_rel_diff']:.1e} |")
    return L + [""]
