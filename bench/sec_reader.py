"""Section 2, ``reader``: the reader's train step and frozen step, hand-written backward vs autograd of the
same ``reader_forward``, at each configured setup and dtype.

* full step   -- reader_forward + reader_backward (every parameter gradient), mask=None
* frozen step -- reader_forward + reader_backward(param_grads=False) (the document-mask gradient only);
                 autograd differentiates with respect to the mask only
* forward     -- reader_forward alone: the hand step contains it, so autograd / forward bounds the ratio

The five are timed interleaved, after checking that hand and autograd give the same gradients. The FLOP
count of each setup (bench/flops.py) is stored with it for section 3.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import flops
from common import log, ms, reader_inputs, tag
from mini_gumbel.reader import ReaderConfig, init_reader, reader_backward, reader_forward
from mini_gumbel.timing import time_interleaved

TARGETS = {"reader_train_speedup": 5.0}


def bench_one(name, cfg, B, N, L, T, dtype, repeats, target_s) -> dict:
    from autograd import grad

    params = init_reader(cfg, 0, dtype=dtype)
    ctx, ai, ao, mask = reader_inputs(cfg, B, N, L, T)
    mask = mask.astype(dtype)
    one = dtype(1.0)

    def hand_full():
        _, c = reader_forward(params, cfg, ctx, ai, ao)
        return reader_backward(one, c)

    def auto_full():
        return grad(lambda P: reader_forward(P, cfg, ctx, ai, ao)[0])(params)

    def hand_frozen():
        _, c = reader_forward(params, cfg, ctx, ai, ao, mask)
        return reader_backward(one, c, param_grads=False)

    def auto_frozen():
        return grad(lambda M: reader_forward(params, cfg, ctx, ai, ao, M)[0])(mask)

    def forward_only():
        return reader_forward(params, cfg, ctx, ai, ao, mask)

    # the two implementations agree (a bench of a wrong backward is worthless)
    g_h, g_a = hand_full()[0], auto_full()
    rel = max(float(np.linalg.norm(g_h[k] - g_a[k]) / max(np.linalg.norm(g_a[k]), 1e-30)) for k in params)
    m_h, m_a = hand_frozen()[1], auto_frozen()
    rel_m = float(np.linalg.norm(m_h - m_a) / max(np.linalg.norm(m_a), 1e-30))
    res = {"name": name, "dtype": np.dtype(dtype).name, "shapes": {"B": B, "N": N, "L": L, "T": T},
           "config": dataclasses.asdict(cfg), "n_params": int(sum(p.size for p in params.values())),
           "max_rel_diff_params": rel, "rel_diff_mask": rel_m}
    t = time_interleaved({"hand_full": hand_full, "autograd_full": auto_full, "hand_frozen": hand_frozen,
                          "autograd_frozen": auto_frozen, "forward": forward_only},
                         repeats=repeats, target_s=target_s)
    for key in ("full", "frozen"):
        res[f"hand_{key}_s"], res[f"autograd_{key}_s"] = t[f"hand_{key}"], t[f"autograd_{key}"]
        res[f"hand_{key}_all_s"], res[f"autograd_{key}_all_s"] = t.samples[f"hand_{key}"], t.samples[f"autograd_{key}"]
    res["forward_s"] = t["forward"]
    res["ratio_full"] = res["autograd_full_s"] / res["hand_full_s"]
    res["ratio_frozen"] = res["autograd_frozen_s"] / res["hand_frozen_s"]
    return res


def run(env, sz) -> dict:
    rows = []
    for name, cfg_kw, B, N, L, T in sz["reader_setups"]:
        cfg = ReaderConfig(**cfg_kw)
        for dtype in sz["reader_dtypes"]:
            r = bench_one(name, cfg, B, N, L, T, np.dtype(dtype).type, sz["repeats_reader"], sz["target_s"])
            fl = flops.reader_step_flops(cfg, B, N, L, T)
            r["flops"] = fl
            r["hand_full_flop_per_s"] = fl["train_step"] / r["hand_full_s"]
            # hand step >= forward, so autograd / hand <= autograd / forward: the most hand code could give
            r["bound_full"] = r["autograd_full_s"] / r["forward_s"]
            r["bound_frozen"] = r["autograd_frozen_s"] / r["forward_s"]
            rows.append(tag(env, **r))
            log(f"reader {name} {r['dtype']}: full x{r['ratio_full']:.2f} (bound x{r['bound_full']:.2f}), "
                f"frozen x{r['ratio_frozen']:.2f} (bound x{r['bound_frozen']:.2f})")
    return {"results": rows}


def targets(sec) -> list:
    rd = sec["results"]
    if not rd:
        return []
    worst = min(rd, key=lambda r: r["ratio_full"])
    detail = "; ".join(f"{r['name']} {r['dtype']}: x{r['ratio_full']:.2f} (bound autograd/forward "
                       f"x{r['bound_full']:.2f})" for r in rd)
    return [{"target": "reader_train_speedup", "threshold": TARGETS["reader_train_speedup"],
             "measured": worst["ratio_full"], "met": worst["ratio_full"] >= TARGETS["reader_train_speedup"],
             "detail": detail}]


def markdown(sec, env) -> list:
    L = ["## 2. Reader steps: hand vs autograd on the same forward", "",
         "full = forward + every parameter gradient (mask=None); frozen = forward + mask gradient only. "
         "bound = autograd / forward: the hand step includes the forward, so its speedup cannot exceed it.", "",
         "| setup | dtype | B×N×L, T | forward ms | full: hand ms | full: autograd ms | full ratio | full bound | "
         "frozen: hand ms | frozen: autograd ms | frozen ratio | frozen bound |",
         "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sec["results"]:
        s = r["shapes"]
        L.append(f"| {r['name']} (C={r['config']['d_model']}) | {r['dtype']} | {s['B']}×{s['N']}×{s['L']}, {s['T']} | "
                 f"{ms(r['forward_s'])} | {ms(r['hand_full_s'])} | {ms(r['autograd_full_s'])} | "
                 f"{r['ratio_full']:.2f}x | {r['bound_full']:.2f}x | {ms(r['hand_frozen_s'])} | "
                 f"{ms(r['autograd_frozen_s'])} | {r['ratio_frozen']:.2f}x | {r['bound_frozen']:.2f}x |")
    return L + [""]
