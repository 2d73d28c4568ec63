"""Time the reader's training step and frozen-reader step: hand-written backward vs autograd of the same
forward code, float64 and float32, at the default ReaderConfig and a medium one.

    python bench/bench_reader.py [--out bench/out] [--quick] [--repeats 5]

Writes bench_reader.json (backend, dtype, shapes, config, versions, platform, every timing) and
bench_reader.md (a table of medians and ratios) to --out. Ratios are measured in the same run on the same
machine; absolute CPU times are only indicative.

* full step   -- reader_forward + reader_backward (every parameter gradient), mask=None
* frozen step -- reader_forward + reader_backward(param_grads=False) (the document-mask gradient only);
                 autograd differentiates with respect to the mask only
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import autograd  # noqa: E402
from autograd import grad  # noqa: E402

from mini_gumbel.reader import ReaderConfig, init_reader, reader_backward, reader_forward  # noqa: E402


def make_inputs(cfg, B, N, L, T, seed=0):
    rng = np.random.default_rng(seed)
    ctx = rng.integers(4, cfg.vocab_size, (B, N, L))
    ctx[:, :, 0] = 3
    ctx[:, :, L - L // 4:] = cfg.pad_id  # the last quarter of every sequence is padding
    ans_in = rng.integers(4, cfg.vocab_size, (B, T))
    ans_in[:, 0] = cfg.bos_id
    ans_out = rng.integers(4, cfg.vocab_size, (B, T))
    ans_out[:, -1] = cfg.eos_id
    mask = rng.uniform(0.0, 1.0, (B, N))
    return ctx, ans_in, ans_out, mask


def paired_times(fa, fb, repeats, warmup=1):
    """Median wall time of fa and of fb, run alternately so that load from other processes hits both."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(repeats):
        for f, ts in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return statistics.median(ta), statistics.median(tb), ta, tb


def bench_one(name, cfg, B, N, L, T, dtype, repeats):
    params = init_reader(cfg, 0, dtype=dtype)
    ctx, ai, ao, mask = make_inputs(cfg, B, N, L, T)
    mask = mask.astype(dtype)
    one = dtype(1.0)

    def hand_full():
        loss, c = reader_forward(params, cfg, ctx, ai, ao)
        return reader_backward(one, c)

    def auto_full():
        return grad(lambda P: reader_forward(P, cfg, ctx, ai, ao)[0])(params)

    def hand_frozen():
        loss, c = reader_forward(params, cfg, ctx, ai, ao, mask)
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
    for key, (fa, fb) in (("full", (hand_full, auto_full)), ("frozen", (hand_frozen, auto_frozen))):
        res[f"hand_{key}_s"], res[f"autograd_{key}_s"], res[f"hand_{key}_all_s"], res[f"autograd_{key}_all_s"] = \
            paired_times(fa, fb, repeats)
    res["forward_s"] = paired_times(forward_only, forward_only, repeats, warmup=0)[0]
    res["ratio_full"] = res["autograd_full_s"] / res["hand_full_s"]
    res["ratio_frozen"] = res["autograd_frozen_s"] / res["hand_frozen_s"]
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    ap.add_argument("--quick", action="store_true", help="tiny shapes, one repeat: a smoke run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--only", choices=["default", "medium"], help="run one setup only")
    args = ap.parse_args(argv)
    if args.quick:
        setups = [("quick", ReaderConfig(vocab_size=50, d_model=16, n_heads=2, d_ff=32, max_ctx_len=8,
                                         max_ans_len=4), 2, 3, 8, 4)]
        repeats = 1
    else:
        setups = [("default", ReaderConfig(vocab_size=300), 32, 10, 24, 4),
                  ("medium", ReaderConfig(vocab_size=300, d_model=256, d_ff=1024, max_ctx_len=64), 8, 10, 64, 4)]
        repeats = args.repeats
        if args.only:
            setups = [st for st in setups if st[0] == args.only]
    results = []
    for name, cfg, B, N, L, T in setups:
        for dtype in (np.float64, np.float32):
            r = bench_one(name, cfg, B, N, L, T, dtype, repeats)
            results.append(r)
            print(f"{name:8s} {r['dtype']:8s} full hand {r['hand_full_s'] * 1e3:8.1f} ms  autograd "
                  f"{r['autograd_full_s'] * 1e3:8.1f} ms  x{r['ratio_full']:.1f} | frozen hand "
                  f"{r['hand_frozen_s'] * 1e3:8.1f} ms  autograd {r['autograd_frozen_s'] * 1e3:8.1f} ms  "
                  f"x{r['ratio_frozen']:.1f}", flush=True)
    meta = {"backend": "numpy", "device": platform.processor() or platform.machine(),
            "platform": platform.platform(), "python": platform.python_version(), "numpy": np.__version__,
            "autograd": getattr(autograd, "__version__", "unknown"), "cpu_count": os.cpu_count(),
            "repeats": repeats, "timer": "time.perf_counter, median of hand/autograd runs interleaved",
            "blas_threads_env": {k: os.environ.get(k) for k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")},
            "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "bench_reader.json"), "w") as f:
        json.dump({"meta": meta, "results": results}, f, indent=2)
    lines = ["| setup | dtype | B×N×L, T | params | forward ms | full: hand ms | full: autograd ms | full ratio | "
             "frozen: hand ms | frozen: autograd ms | frozen ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        s = r["shapes"]
        lines.append(f"| {r['name']} (C={r['config']['d_model']}) | {r['dtype']} | {s['B']}×{s['N']}×{s['L']}, "
                     f"{s['T']} | {r['n_params']} | {r['forward_s'] * 1e3:.1f} | {r['hand_full_s'] * 1e3:.1f} | "
                     f"{r['autograd_full_s'] * 1e3:.1f} | {r['ratio_full']:.2f}x | {r['hand_frozen_s'] * 1e3:.1f} | "
                     f"{r['autograd_frozen_s'] * 1e3:.1f} | {r['ratio_frozen']:.2f}x |")
    table = "\n".join(lines)
    with open(os.path.join(args.out, "bench_reader.md"), "w") as f:
        f.write(f"# Reader step: hand-written backward vs autograd\n\n{meta['platform']}, numpy {meta['numpy']}, "
                f"autograd {meta['autograd']}, {meta['cpu_count']} CPUs, median of {repeats}.\n\n{table}\n")
    print(table)
    return results


if __name__ == "__main__":
    main()
