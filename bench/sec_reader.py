"""Section 2, ``reader``: the reader's train step and frozen step, hand-written backward vs PyTorch eager (the
same model in torch, bench/torch_reader.py) and vs autograd of the same ``reader_forward``, at each
configured setup and dtype.

* full step   -- reader_forward + reader_backward (every parameter gradient), mask=None
* frozen step -- reader_forward + reader_backward(param_grads=False) (the document-mask gradient only);
                 torch and autograd differentiate with respect to the mask only
* forward     -- reader_forward alone: the hand step contains it, so autograd / forward bounds that ratio

Everything is timed interleaved, one thread each, after checking that the paths agree: hand vs autograd
gradients, and our loss against torch's (~1e-10 in float64) with its gradients. The targets are against
torch (>= 1.0x on every case). Without torch installed the torch columns are skipped with a line that says
so. The FLOP count of each setup (bench/flops.py) is stored with it for section 3.
"""
from __future__ import annotations

import dataclasses

import numpy as np

import flops
from common import log, ms, reader_inputs, tag
from mini_gumbel.reader import ReaderConfig, init_reader, reader_backward, reader_forward
from mini_gumbel.timing import time_interleaved

TARGETS = {"reader_train_vs_torch": 1.0, "reader_frozen_vs_torch": 1.0}
TORCH_MISSING = "skipped: torch is not installed (pip install torch --index-url https://download.pytorch.org/whl/cpu)"


def torch_or_none():
    """torch_reader with torch set to one thread, or None when torch is not importable."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    import torch_reader
    return torch_reader


def torch_steps(tr, params, cfg, ctx, ai, ao, mask):
    """(full, frozen) closures of the torch reader on the same parameters and inputs, and their outputs."""
    import torch

    P = tr.tensors(params)
    c, i, o, m = (torch.from_numpy(a) for a in (ctx, ai, ao, mask))
    Pg = tr.tensors(params, requires_grad=True)
    names = list(Pg)

    def full():
        loss = tr.reader_loss(Pg, cfg, c, i, o)
        return loss, dict(zip(names, torch.autograd.grad(loss, [Pg[k] for k in names])))

    def frozen():
        mg = m.detach().requires_grad_(True)
        loss = tr.reader_loss(P, cfg, c, i, o, mg)
        return loss, torch.autograd.grad(loss, mg)[0]

    return full, frozen


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
    fns = {"hand_full": hand_full, "autograd_full": auto_full, "hand_frozen": hand_frozen,
           "autograd_frozen": auto_frozen, "forward": forward_only}
    tr = torch_or_none()
    if tr is not None:
        # torch on the same parameters and inputs: the same loss and gradients, or its times mean nothing
        t_full, t_frozen = torch_steps(tr, params, cfg, ctx, ai, ao, mask)
        (lt, gt), (lft, mt) = t_full(), t_frozen()
        l_h = float(reader_forward(params, cfg, ctx, ai, ao)[0])
        l_hf = float(reader_forward(params, cfg, ctx, ai, ao, mask)[0])
        res["torch_loss_rel_diff"] = max(abs(float(lt.detach()) - l_h) / abs(l_h), abs(float(lft.detach()) - l_hf) / abs(l_hf))
        res["torch_max_rel_diff_params"] = max(float(np.linalg.norm(g_h[k] - gt[k].numpy())
                                                     / max(np.linalg.norm(g_h[k]), 1e-30)) for k in params)
        res["torch_rel_diff_mask"] = float(np.linalg.norm(m_h - mt.numpy()) / max(np.linalg.norm(m_h), 1e-30))
        if dtype == np.float64 and not res["torch_loss_rel_diff"] < 1e-10:
            raise AssertionError(f"reader {name}: torch loss differs from ours by {res['torch_loss_rel_diff']:.2g}")
        fns.update({"torch_full": t_full, "torch_frozen": t_frozen})
    t = time_interleaved(fns, repeats=repeats, target_s=target_s)
    if tr is not None:
        for key in ("full", "frozen"):
            res[f"torch_{key}_s"], res[f"torch_{key}_all_s"] = t[f"torch_{key}"], t.samples[f"torch_{key}"]
            res[f"vs_torch_{key}"] = t[f"torch_{key}"] / t[f"hand_{key}"]
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
            vt = (f"; vs torch: full x{r['vs_torch_full']:.2f}, frozen x{r['vs_torch_frozen']:.2f}"
                  if "vs_torch_full" in r else "")
            log(f"reader {name} {r['dtype']}: vs autograd: full x{r['ratio_full']:.2f} (bound x{r['bound_full']:.2f}), "
                f"frozen x{r['ratio_frozen']:.2f} (bound x{r['bound_frozen']:.2f}){vt}")
    return {"results": rows, "torch": None if torch_or_none() is None else _torch_version(),
            "torch_skipped": None if torch_or_none() is not None else TORCH_MISSING}


def _torch_version():
    import torch
    return torch.__version__


def targets(sec) -> list:
    rd = sec["results"]
    if not rd:
        return []
    out = []
    for key, target in (("full", "reader_train_vs_torch"), ("frozen", "reader_frozen_vs_torch")):
        if sec.get("torch_skipped"):
            out.append({"target": target, "threshold": TARGETS[target], "measured": None, "met": None,
                        "detail": sec["torch_skipped"]})
            continue
        worst = min(rd, key=lambda r: r[f"vs_torch_{key}"])
        detail = "torch eager time / ours, min over cases; " + "; ".join(
            f"{r['name']} {r['dtype']}: x{r[f'vs_torch_{key}']:.2f}" for r in rd)
        out.append({"target": target, "threshold": TARGETS[target], "measured": worst[f"vs_torch_{key}"],
                    "met": worst[f"vs_torch_{key}"] >= TARGETS[target], "detail": detail})
    return out


def markdown(sec, env) -> list:
    L = ["## 2. Reader steps: hand vs PyTorch eager and vs autograd", "",
         "full = forward + every parameter gradient (mask=None); frozen = forward + mask gradient only. "
         "vs torch = torch eager time / ours (same model, parameters and inputs, bench/torch_reader.py; one "
         "thread each). bound = autograd / forward: the hand step includes the forward, so its speedup over "
         "autograd cannot exceed it.", ""]
    if sec.get("torch_skipped"):
        L += [sec["torch_skipped"], ""]
    else:
        L += [f"torch {sec['torch']}; our loss against torch's: max rel. diff "
              f"{max(r['torch_loss_rel_diff'] for r in sec['results']):.1e} (float64 rows < 1e-10 checked).", ""]
    L += ["| setup | dtype | B×N×L, T | forward ms | full: hand ms | full: torch ms | full vs torch | "
          "full: autograd ms | full vs autograd | full bound | frozen: hand ms | frozen: torch ms | frozen vs torch | "
          "frozen: autograd ms | frozen vs autograd | frozen bound |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sec["results"]:
        s = r["shapes"]
        tf = (ms(r["torch_full_s"]), f"{r['vs_torch_full']:.2f}x") if "torch_full_s" in r else ("-", "-")
        tz = (ms(r["torch_frozen_s"]), f"{r['vs_torch_frozen']:.2f}x") if "torch_frozen_s" in r else ("-", "-")
        L.append(f"| {r['name']} (C={r['config']['d_model']}) | {r['dtype']} | {s['B']}×{s['N']}×{s['L']}, {s['T']} | "
                 f"{ms(r['forward_s'])} | {ms(r['hand_full_s'])} | {tf[0]} | {tf[1]} | {ms(r['autograd_full_s'])} | "
                 f"{r['ratio_full']:.2f}x | {r['bound_full']:.2f}x | {ms(r['hand_frozen_s'])} | {tz[0]} | {tz[1]} | "
                 f"{ms(r['autograd_frozen_s'])} | {r['ratio_frozen']:.2f}x | {r['bound_frozen']:.2f}x |")
    return L + [""]
