"""Section ``step``: the whole Gumbel Reranking training step, with and without the reader's memory, vs torch.

One step of mini_gumbel.gumbel_reranking.gumbel_reranking_step at the demo's reader (default_reader_config,
C=64) and batch (RerankConfig().batch_size, N=10), for the two-pass reader (the default) and the one-pass
FiD control, float32 (the demo's reader dtype) and float64:

    reuse      the frozen reader's mask-independent states (reader_memory_of: read 1's / the whole encoder's
               keys and values per decoder layer) computed once; every step takes its batch's rows
    no reuse   the whole reader every step (what every step did before)
    torch      the same step in PyTorch eager (bench/torch_reader.py: reranker, relaxed top-K "max", reader,
               torch.autograd into the reranker), with and without the same reuse

All four are timed interleaved, one thread each, on the same parameters, batch and noise, after checking that
reuse and no reuse give bit-identical losses and gradients and that torch's loss matches ours (~1e-10 in
float64). Target: reuse >= 1.5x faster than no reuse. The memory's size per example is recorded.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from common import log, ms, tag
from mini_gumbel.data import DataConfig, make_dataset
from mini_gumbel.experiment.configs import RerankConfig, default_reader_config
from mini_gumbel.experiment.readers import reader_inputs
from mini_gumbel.gumbel import gumbel_noise
from mini_gumbel.gumbel_reranking import gumbel_reranking_step, reader_memory_of
from mini_gumbel.reader import init_reader
from mini_gumbel.reranker import init_reranker
from mini_gumbel.timing import time_interleaved
from sec_reader import TORCH_MISSING, torch_or_none

TARGETS = {"step_reuse_speedup": 1.5}


def _bow(ids, V, pad_id, dtype):
    keep = ids != pad_id
    counts = ((ids[..., None] == np.arange(V)) & keep[..., None]).sum(-2).astype(dtype)
    return counts / np.maximum(keep.sum(-1, keepdims=True), 1).astype(dtype)


def bench_one(reader, B, dtype, data_overrides, reader_overrides, repeats, target_s) -> dict:
    data = DataConfig(**{**dict(n_train=max(2 * B, 64), n_dev=5, n_test=5), **data_overrides})
    splits = make_dataset(data, 0)
    rcfg = default_reader_config(data, reader, **reader_overrides)
    rr = RerankConfig()
    P = init_reader(rcfg, 0, dtype=dtype)
    # the step sees rows of a memory computed for more examples than the batch, as in training
    pool = splits.train.batch(np.arange(2 * B))
    memory_all = reader_memory_of(P, rcfg, reader_inputs(pool, rcfg))
    idx = np.arange(1, 2 * B, 2)  # every other example: a gather, like a shuffled batch
    b = pool.batch(idx)
    x = reader_inputs(b, rcfg)
    V = len(splits.vocab)
    R = init_reranker(V, rr.dim, 0, dtype=np.float64, init=rr.init)
    N = b.docs.shape[1]
    k, tau, kappa = min(rr.k, N), rr.tau, rr.kappa
    kw = dict(k=k, tau=tau, kappa=kappa, relaxation="max")

    def ours(reuse):
        def run():
            rng = np.random.default_rng(0)  # the same noise every call
            mem = memory_all.take(idx) if reuse else None
            return gumbel_reranking_step(R, b.question, b.docs, P, rcfg, x, rng, memory=mem, **kw)
        return run

    fns = {"reuse": ours(True), "no_reuse": ours(False)}
    (l_r, g_r), (l_n, g_n) = fns["reuse"](), fns["no_reuse"]()
    identical = bool(l_r == l_n and all(np.array_equal(g_r[k_], g_n[k_]) for k_ in g_r))
    if not identical:
        raise AssertionError(f"step {reader} {np.dtype(dtype).name}: reuse and no reuse differ")
    res = {"reader": reader, "dtype": np.dtype(dtype).name, "shapes": {"B": B, "N": N, "L": int(x[0].shape[2])
                                                                       if reader == "two_pass" else int(b.ctx.shape[2]),
                                                                       "K": k},
           "config": dataclasses.asdict(rcfg), "tau": tau, "kappa": kappa, "bit_identical": identical,
           "memory_bytes_per_example": memory_all.nbytes / memory_all.shape[0]}
    tr = torch_or_none()
    if tr is not None:
        import torch

        TP = tr.tensors(P)
        TR = tr.tensors(R)
        bq = torch.from_numpy(_bow(b.question, V, rcfg.pad_id, np.float64))
        bd = torch.from_numpy(_bow(b.docs, V, rcfg.pad_id, np.float64))
        G = torch.from_numpy(gumbel_noise((B, k, N), np.random.default_rng(0), dtype=np.float64))
        if reader == "two_pass":
            tb = {f: torch.from_numpy(np.asarray(v)) for f, v in x._asdict().items()}
            tb["flags1"] = tb["flags1"].to(TP["tok_emb"].dtype)
            all_x = reader_inputs(pool, rcfg)
            with torch.no_grad():
                kv_all = tr.memory(TP, rcfg, torch.from_numpy(all_x.ctx1),
                                   torch.from_numpy(all_x.flags1).to(TP["tok_emb"].dtype))
        else:
            tb = {"ctx": torch.from_numpy(b.ctx), "ans_in": torch.from_numpy(b.ans_in),
                  "ans_out": torch.from_numpy(b.ans_out)}
            with torch.no_grad():
                kv_all = tr.memory(TP, rcfg, torch.from_numpy(pool.ctx))
        tidx = torch.from_numpy(idx)

        def theirs(reuse):
            def run():
                kvs = [(k_[tidx], v_[tidx]) for k_, v_ in kv_all] if reuse else None
                return tr.gumbel_step(TR, TP, rcfg, bq, bd, G, tb, tau=tau, kappa=kappa,
                                      two_pass=reader == "two_pass", kvs=kvs)
            return run

        fns.update({"torch_reuse": theirs(True), "torch_no_reuse": theirs(False)})
        lt, gt = fns["torch_no_reuse"]()
        lt2 = fns["torch_reuse"]()[0]
        res["torch_loss_rel_diff"] = max(abs(float(lt.detach()) - float(l_n)), abs(float(lt2.detach()) - float(l_n))) / abs(float(l_n))
        res["torch_grad_rel_diff"] = max(float(np.linalg.norm(g_n[n] - gt[n].numpy()) / np.linalg.norm(g_n[n]))
                                         for n in g_n)
        if dtype == np.float64 and not res["torch_loss_rel_diff"] < 1e-10:
            raise AssertionError(f"step {reader}: torch loss differs from ours by {res['torch_loss_rel_diff']:.2g}")
    t = time_interleaved(fns, repeats=repeats, target_s=target_s)
    for name in fns:
        res[f"{name}_s"], res[f"{name}_all_s"] = t[name], t.samples[name]
    res["reuse_speedup"] = t["no_reuse"] / t["reuse"]
    if tr is not None:
        res["vs_torch_reuse"] = t["torch_reuse"] / t["reuse"]
        res["vs_torch_no_reuse"] = t["torch_no_reuse"] / t["no_reuse"]
        res["torch_reuse_speedup"] = t["torch_no_reuse"] / t["torch_reuse"]
    return res


def run(env, sz) -> dict:
    rows = []
    for reader, B in sz["step_setups"]:
        for dtype in sz["step_dtypes"]:
            r = bench_one(reader, B, np.dtype(dtype).type, sz["step_data"], sz["step_reader"], sz["repeats_step"],
                          sz["target_s"])
            rows.append(tag(env, **r))
            vt = (f"; vs torch x{r['vs_torch_reuse']:.2f} (reuse), x{r['vs_torch_no_reuse']:.2f} (no reuse)"
                  if "vs_torch_reuse" in r else "")
            log(f"step {reader} {r['dtype']}: reuse x{r['reuse_speedup']:.2f} faster than no reuse{vt}")
    tr = torch_or_none()
    return {"results": rows, "torch_skipped": None if tr is not None else TORCH_MISSING}


def targets(sec) -> list:
    rows = sec["results"]
    if not rows:
        return []
    worst = min(rows, key=lambda r: r["reuse_speedup"])
    detail = "no-reuse time / reuse time, one run; " + "; ".join(
        f"{r['reader']} {r['dtype']}: x{r['reuse_speedup']:.2f}" for r in rows)
    return [{"target": "step_reuse_speedup", "threshold": TARGETS["step_reuse_speedup"],
             "measured": worst["reuse_speedup"], "met": worst["reuse_speedup"] >= TARGETS["step_reuse_speedup"],
             "detail": detail}]


def markdown(sec, env) -> list:
    L = ["## 6. The whole Gumbel training step: reader memory reused or not, and PyTorch eager", "",
         "gumbel_reranking_step (reranker, relaxed top-K `max`, frozen reader, back into the reranker) at the demo's "
         "reader and batch. reuse = the reader's mask-independent keys/values computed once (rows gathered per step); "
         "no reuse = the whole reader every step; bit-identical results (checked). vs torch = torch eager time / "
         "ours, same choice of reuse.", ""]
    if sec.get("torch_skipped"):
        L += [sec["torch_skipped"], ""]
    L += ["| reader | dtype | B×N×L | memory KB / example | reuse ms | no reuse ms | reuse speedup | "
          "torch reuse ms | torch no reuse ms | vs torch (reuse) | vs torch (no reuse) |",
          "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in sec["results"]:
        s = r["shapes"]
        t = ((ms(r["torch_reuse_s"]), ms(r["torch_no_reuse_s"]), f"{r['vs_torch_reuse']:.2f}x",
              f"{r['vs_torch_no_reuse']:.2f}x") if "torch_reuse_s" in r else ("-",) * 4)
        L.append(f"| {r['reader']} | {r['dtype']} | {s['B']}×{s['N']}×{s['L']} | "
                 f"{r['memory_bytes_per_example'] / 1e3:.1f} | {ms(r['reuse_s'])} | {ms(r['no_reuse_s'])} | "
                 f"{r['reuse_speedup']:.2f}x | " + " | ".join(t) + " |")
    return L + [""]
