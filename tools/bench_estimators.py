"""The exact gradient of V = E_S[c_S]: the batched subset DP against the per-example orderings enumeration.

    python tools/bench_estimators.py [--repeats 7] [--batch 32] [--threads 1] [--json bench_estimators.json]

Times, in one run and interleaved (mini_gumbel.timing), ``estimators.expected_value_and_grad`` on a (B, N) batch
against the per-example path it replaces: a loop over the B rows, each through the sum over the K! orderings of
every subset (``estimators._expected_value_and_grad_by_orderings``), and against the same DP called row by row.
The two exact paths must agree within 1e-12 (values and gradients) or the script exits 1. Reports the best of
the repeats (and the median) as a markdown table, the orderings / batched ratio at N = 10, K = 5 (target >= 50x)
and the batched DP at N = 20, K = 5, where the enumeration (C(20, 5)·5! = 1.9M orderings per row) is not run.
One BLAS thread by default, set before NumPy loads; glibc keeps freed memory as in the CLI (timing.keep_freed_memory).
"""
from __future__ import annotations

import argparse
import math
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # the package, also uninstalled

from mini_gumbel.timing import environment, keep_freed_memory, set_blas_threads, time_interleaved  # noqa: E402

TOL = 1e-12
TARGET = 50.0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=7, help="timed repeats per path (default 7; the best is reported)")
    ap.add_argument("--batch", type=int, default=32, help="rows B (default 32)")
    ap.add_argument("--threads", default="1", help="BLAS threads (default 1; set before NumPy loads)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the timings and the machine record here (atomically)")
    return ap


def problem(np, rng, B, N, K):
    return rng.standard_normal((B, N)), rng.standard_normal((B, math.comb(N, K)))  # (B, N), (B, S)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    set_blas_threads(args.threads)  # BLAS reads it once, when NumPy loads: nothing above has loaded it
    import numpy as np

    from mini_gumbel import estimators as E
    from mini_gumbel.atomic import atomic_write_json

    malloc = keep_freed_memory()
    rng = np.random.default_rng(args.seed)
    B, kappa, rows, ok = args.batch, 1.0, [], True

    # N = 10, K = 5: the three paths, checked against each other first
    N, K = 10, 5
    W, V = problem(np, rng, B, N, K)

    def batched():
        return E.expected_value_and_grad(W, V, K, kappa=kappa)

    def per_example():
        out = [E._expected_value_and_grad_by_orderings(W[b], V[b], K, kappa=kappa) for b in range(B)]
        return np.array([o[0] for o in out]), np.stack([o[1] for o in out])  # (B,), (B, N)

    def dp_rows():
        out = [E.expected_value_and_grad(W[b], V[b], K, kappa=kappa) for b in range(B)]
        return np.array([o[0] for o in out]), np.stack([o[1] for o in out])

    (v0, g0), (v1, g1), (v2, g2) = batched(), per_example(), dp_rows()
    diff = max(float(np.max(np.abs(v0 - v1))), float(np.max(np.abs(g0 - g1))),
               float(np.max(np.abs(v0 - v2))), float(np.max(np.abs(g0 - g2))))
    ok &= diff <= TOL
    t = time_interleaved({"batched": batched, "dp_rows": dp_rows, "per_example": per_example},
                         repeats=args.repeats, target_s=0.05)
    best = {k: min(s) for k, s in t.samples.items()}
    ratio = best["per_example"] / best["batched"]
    transitions = sum(math.comb(N, j) * (N - j) for j in range(K))
    for name, label in (("per_example", "orderings, row by row (the per-example path)"),
                        ("dp_rows", "DP, row by row"), ("batched", "DP, batched")):
        rows.append({"path": label, "N": N, "K": K, "B": B, "best_ms": 1e3 * best[name], "median_ms": 1e3 * t[name],
                     "vs_batched": best[name] / best["batched"]})

    # N = 20, K = 5: the batched DP only (and row by row)
    N20 = 20
    W20, V20 = problem(np, rng, B, N20, K)

    def batched20():
        return E.expected_value_and_grad(W20, V20, K, kappa=kappa)

    def dp_rows20():
        return [E.expected_value_and_grad(W20[b], V20[b], K, kappa=kappa) for b in range(B)]

    v20, g20 = batched20()
    ok &= bool(np.all(np.isfinite(g20)))
    t20 = time_interleaved({"batched": batched20, "dp_rows": dp_rows20}, repeats=max(3, args.repeats // 2),
                           target_s=0.05)
    best20 = {k: min(s) for k, s in t20.samples.items()}
    for name, label in (("dp_rows", "DP, row by row"), ("batched", "DP, batched")):
        rows.append({"path": label, "N": N20, "K": K, "B": B, "best_ms": 1e3 * best20[name],
                     "median_ms": 1e3 * t20[name], "vs_batched": best20[name] / best20["batched"]})

    e = environment()
    print(f"# exact ∂V/∂w, float64; BLAS threads {e['blas_threads']['OPENBLAS_NUM_THREADS']}; numpy "
          f"{e['versions']['numpy']}; {e['cpu']} ({e['cpu_count']} cores, load {e['load_average'][0]:.1f}); "
          f"best of {args.repeats} repeats")
    print("| path | N | K | B | best ms | median ms | time / batched |\n|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['N']} | {r['K']} | {r['B']} | {r['best_ms']:.2f} | {r['median_ms']:.2f} | "
              f"{r['vs_batched']:.1f}x |")
    print(f"\nN=10, K=5: orderings / batched = {ratio:.0f}x (target >= {TARGET:.0f}x: "
          f"{'met' if ratio >= TARGET else 'NOT met'}); max |difference| of values and gradients, the three paths: "
          f"{diff:.1e} (tolerance {TOL:g}); the DP has {transitions} transitions per row against "
          f"{math.comb(N, K) * math.factorial(K)} orderings")
    if args.json:
        atomic_write_json(args.json, {"rows": rows, "ratio_orderings_over_batched": ratio, "target": TARGET,
                                      "max_abs_difference": diff, "tolerance": TOL, "malloc": malloc,
                                      "repeats": args.repeats, "environment": e})
    if not ok:
        print("FAILED: the paths disagree (or N=20 gave a non-finite gradient)", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
