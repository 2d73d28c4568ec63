"""Section 1, ``topk``: the relaxed top-K masks, hand-written backward vs PyTorch eager and vs autograd.

For each relaxation ("max", "iterative", "st"), dtype and size (B, N, K) it times, interleaved in one process
with one thread each, on identical scores, noise and probe R:

    hand      relaxed_topk_forward + relaxed_topk_backward(R)
    torch     the same relaxation in torch eager ops + torch.autograd.grad (bench/torch_topk.py), what a
              user would otherwise write; skipped, with a line that says so, where torch is not installed
    autograd  autograd.value_and_grad(lambda w: sum(relaxed_topk_forward(w, ...)[0] * R))(w)
    forward   relaxed_topk_forward alone

The hand path contains the forward, so autograd / hand can never exceed autograd / forward: that bound is
reported next to every ratio. Every path must give the same gradient before its time means anything.
Targets: at B=64, N=100, K=5, >= 1.5x torch and >= 3x autograd for every relaxation and dtype; >= 1.0x
torch on every case of the sweep.
"""
from __future__ import annotations

import statistics

import numpy as np

from common import KAPPA, TAU, log, ms, tag, topk_inputs
from mini_gumbel.gumbel import RELAXATIONS, relaxed_topk_backward, relaxed_topk_forward
from mini_gumbel.timing import time_interleaved

TARGETS = {"topk_vs_torch": 1.5, "topk_vs_torch_sweep": 1.0, "topk_vs_autograd": 3.0}
MAIN = {"B": 64, "N": 100, "K": 5}  # the shape the first and last targets are stated at
TORCH_MISSING = "skipped: torch is not installed (pip install torch --index-url https://download.pytorch.org/whl/cpu)"
TORCH_TOL = {"float64": 1e-10, "float32": 1e-3}  # max |dscores difference| / max |dscores|, ours vs torch


def torch_topk_or_none():
    """bench/torch_topk.py, or None when torch is not importable."""
    try:
        import torch  # noqa: F401
    except ImportError:
        return None
    import torch_topk
    return torch_topk


def bench_case(relaxation, B, N, K, dtype, *, repeats, target_s, seed=0, tt=None, threads=1) -> dict:
    """One (relaxation, B, N, K, dtype): medians of hand, autograd, forward and (with ``tt``, the torch_topk
    module) torch, timed interleaved."""
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
    fns = {"hand": hand, "autograd": lambda: value_and_grad(w), "forward": lambda: forward(w)}
    extra = {}
    if tt is not None:
        torch_step, torch_grad = tt.step(relaxation, w, noise, R, K, TAU, KAPPA, threads=threads)
        g_torch = torch_grad()
        extra["torch_grad_max_rel_diff"] = float(np.max(np.abs(g_hand.astype(np.float64) - g_torch))) / scale
        if not extra["torch_grad_max_rel_diff"] < TORCH_TOL[np.dtype(dtype).name]:
            raise AssertionError(f"topk {relaxation} {np.dtype(dtype).name} B={B} N={N} K={K}: torch's dscores differ "
                                 f"from ours by {extra['torch_grad_max_rel_diff']:.2g} (relative to max |dscores|)")
        fns["torch"] = torch_step
    t = time_interleaved(fns, repeats=repeats, target_s=target_s)
    if tt is not None:
        extra.update(torch_median_s=t["torch"], torch_times_s=t.samples["torch"], torch_calls_per_repeat=t.calls["torch"],
                     ratio_torch_over_hand=t["torch"] / t["hand"])
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
        "calls_per_repeat": {key: t.calls[key] for key in ("hand", "autograd", "forward")},
        "grad_max_rel_diff": max_rel_diff,
        **extra,
    }


def run(env, sz) -> dict:
    tt = torch_topk_or_none()
    threads = int(env["threads"]["OMP_NUM_THREADS"])  # torch gets the BLAS thread count of our side
    if tt is None:
        log(f"topk: {TORCH_MISSING}")
    rows = []
    for dtype in sz["topk_dtypes"]:
        for N in sz["topk_N"]:
            for K in sz["topk_K"]:
                if K > N:
                    continue
                for relaxation in RELAXATIONS:
                    r = bench_case(relaxation, sz["topk_B"], N, K, np.dtype(dtype), repeats=sz["repeats_topk"],
                                   target_s=sz["target_s"], tt=tt, threads=threads)
                    rows.append(tag(env, dtype=dtype, shapes={"B": sz["topk_B"], "N": N, "K": K}, **r))
                    vs_torch = f", torch x{r['ratio_torch_over_hand']:.2f}" if tt is not None else ""
                    log(f"topk {relaxation:9s} {dtype} {rows[-1]['shapes']}: autograd "
                        f"x{r['ratio_autograd_over_hand']:.2f}{vs_torch}")
    return {"results": rows, "torch_skipped": None if tt is not None else TORCH_MISSING,
            "torch_version": tt.version() if tt is not None else None}


def _case(r) -> str:
    s = r["shapes"]
    return f"{r['method']} {r['dtype']} B={s['B']} N={s['N']} K={s['K']}"


def _target(name, rows, key, what, skipped=None) -> dict:
    """The worst ``key`` over ``rows`` against TARGETS[name]; measured and met are None when there is nothing
    to measure (``skipped`` says why)."""
    if skipped or not rows:
        return {"target": name, "threshold": TARGETS[name], "measured": None, "met": None,
                "detail": skipped or f"{what}: no such case at this size"}
    worst = min(rows, key=lambda r: r[key])
    detail = (f"{what}: min over {len(rows)} cases at {_case(worst)}; median x"
              f"{statistics.median(r[key] for r in rows):.2f}; below x{TARGETS[name]:g}: "
              f"{sum(r[key] < TARGETS[name] for r in rows)}")
    return {"target": name, "threshold": TARGETS[name], "measured": worst[key],
            "met": worst[key] >= TARGETS[name], "detail": detail}


def targets(sec) -> list:
    tk = sec["results"]
    if not tk:
        return []
    main = [r for r in tk if r["shapes"] == MAIN]
    at = f"B={MAIN['B']}, N={MAIN['N']}, K={MAIN['K']}"
    auto = _target("topk_vs_autograd", main, "ratio_autograd_over_hand", f"autograd / hand at {at}")
    worst = min(tk, key=lambda r: r["ratio_autograd_over_hand"])
    auto["detail"] += (f"; whole sweep: min x{worst['ratio_autograd_over_hand']:.2f} at {_case(worst)} (bound "
                       f"autograd/forward x{worst['bound_autograd_over_forward']:.2f})")
    return [_target("topk_vs_torch", main, "ratio_torch_over_hand", f"torch / hand at {at}", sec["torch_skipped"]),
            _target("topk_vs_torch_sweep", tk, "ratio_torch_over_hand", "torch / hand, every case",
                    sec["torch_skipped"]),
            auto]


def markdown(sec, env) -> list:
    torch = sec["torch_skipped"] is None
    L = ["## 1. Relaxed top-K, forward + backward: hand vs PyTorch eager and vs autograd", "",
         f"tau={TAU}, kappa={KAPPA}; loss = sum(M * R) for a fixed probe R; one thread each, interleaved. torch: "
         "the same relaxation in torch eager ops + torch.autograd.grad (bench/torch_topk.py"
         + (f", torch {sec['torch_version']}" if torch else "") + "). bound = autograd / forward: the hand path "
         "includes the forward, so its speedup over autograd cannot exceed it.", ""]
    if not torch:
        L += [f"torch: {sec['torch_skipped']}", ""]
    L += ["| method | dtype | B | N | K | forward ms | hand ms | " + ("torch ms | torch / hand | " if torch else "")
          + "autograd ms | autograd / hand | bound | max rel. grad diff |",
          "|---|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if torch else "") + "---:|---:|---:|---:|"]
    for r in sec["results"]:
        s = r["shapes"]
        tcols = f"{ms(r['torch_median_s'])} | {r['ratio_torch_over_hand']:.2f}x | " if torch else ""
        L.append(f"| {r['method']} | {r['dtype']} | {s['B']} | {s['N']} | {s['K']} | {ms(r['forward_median_s'])} | "
                 f"{ms(r['hand_median_s'])} | {tcols}{ms(r['autograd_median_s'])} | "
                 f"{r['ratio_autograd_over_hand']:.2f}x | {r['bound_autograd_over_forward']:.2f}x | "
                 f"{r['grad_max_rel_diff']:.1e} |")
    return L + [""]
