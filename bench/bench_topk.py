"""Time the relaxed top-K masks: hand-written backward vs autograd of the very same forward.

For each method ("max", "iterative", "st"), dtype and size (B, N, K) it times

    hand      relaxed_topk_forward + relaxed_topk_backward(R)
    autograd  autograd.value_and_grad(lambda w: sum(relaxed_topk_forward(w, ...)[0] * R))(w)

on identical scores, noise and probe R, with time.perf_counter: each repeat times a loop of calls (sized
to last ~20 ms), hand and autograd interleaved so that machine load drifts hit both alike; the table
reports medians over repeats and the ratio autograd / hand measured in the same run.

    python bench/bench_topk.py                 # B=64, N=100, K=5, float64 and float32
    python bench/bench_topk.py --sizes         # sweep N in {10, 100, 1000} x K in {1, 5, 20} (K <= N)
    python bench/bench_topk.py --quick         # tiny smoke run
Writes bench_topk.json and bench_topk.md to --out (default bench/out/) and prints the table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

from mini_gumbel.gumbel import METHODS, gumbel_noise, relaxed_topk_backward, relaxed_topk_forward

TAU, KAPPA = 0.5, 1.0


def _time_loop(fn, number: int) -> float:
    t0 = time.perf_counter()
    for _ in range(number):
        fn()
    return (time.perf_counter() - t0) / number


def _calibrate(fn, target_s: float) -> int:
    """Calls per timed loop so that one loop lasts about target_s."""
    fn()  # warm-up (allocator, autograd's first trace)
    number = 1
    while True:
        t = _time_loop(fn, number)
        if t * number >= target_s or number >= 1 << 16:
            return number
        number = max(number + 1, int(number * min(10.0, 1.2 * target_s / max(t * number, 1e-9))))


def bench_case(method: str, B: int, N: int, K: int, dtype, *, repeats: int, target_s: float, seed: int = 0) -> dict:
    import autograd
    import autograd.numpy as anp

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((B, N)).astype(dtype)  # (B, N)
    noise = gumbel_noise((B, K, N) if method == "max" else (B, N), rng, dtype=dtype)  # (B, K, N) or (B, N)
    R = rng.standard_normal((B, N)).astype(dtype)  # (B, N) probe: loss = sum(M * R)

    def hand():
        _, cache = relaxed_topk_forward(w, noise, K, tau=TAU, kappa=KAPPA, method=method)
        return relaxed_topk_backward(R, cache)

    def loss(x):
        M, _ = relaxed_topk_forward(x, noise, K, tau=TAU, kappa=KAPPA, method=method)
        return anp.sum(M * R)

    value_and_grad = autograd.value_and_grad(loss)

    def fwd():
        return relaxed_topk_forward(w, noise, K, tau=TAU, kappa=KAPPA, method=method)

    def auto():
        return value_and_grad(w)

    # the two paths must compute the same gradient, or the timing means nothing
    g_hand, (_, g_auto) = hand(), auto()
    scale = max(float(np.max(np.abs(g_auto))), float(np.finfo(dtype).tiny))
    max_rel_diff = float(np.max(np.abs(g_hand.astype(np.float64) - g_auto.astype(np.float64)))) / scale
    n_hand, n_auto, n_fwd = _calibrate(hand, target_s), _calibrate(auto, target_s), _calibrate(fwd, target_s)
    t_hand, t_auto, t_fwd = [], [], []
    for _ in range(repeats):
        t_hand.append(_time_loop(hand, n_hand))
        t_auto.append(_time_loop(auto, n_auto))
        t_fwd.append(_time_loop(fwd, n_fwd))
    med_hand, med_auto, med_fwd = statistics.median(t_hand), statistics.median(t_auto), statistics.median(t_fwd)
    return {
        "method": method,
        "dtype": np.dtype(dtype).name,
        "B": B,
        "N": N,
        "K": K,
        "tau": TAU,
        "kappa": KAPPA,
        "hand_median_s": med_hand,
        "autograd_median_s": med_auto,
        "forward_median_s": med_fwd,
        "ratio_autograd_over_hand": med_auto / med_hand,
        # hand = forward + backward, so autograd / hand can never exceed autograd / forward
        "bound_autograd_over_forward": med_auto / med_fwd,
        "hand_times_s": t_hand,
        "autograd_times_s": t_auto,
        "calls_per_repeat": {"hand": n_hand, "autograd": n_auto, "forward": n_fwd},
        "grad_max_rel_diff": max_rel_diff,
    }


def _environment() -> dict:
    import autograd

    try:
        from importlib.metadata import version

        autograd_version = version("autograd")
    except Exception:  # noqa: BLE001 -- metadata missing in some installs
        autograd_version = getattr(autograd, "__version__", "unknown")
    return {
        "backend": "numpy",
        "device": f"CPU {platform.processor() or platform.machine()} ({os.cpu_count()} logical cores)",
        "numpy": np.__version__,
        "autograd": autograd_version,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "timer": "time.perf_counter, median over repeats, hand and autograd interleaved",
    }


def markdown_table(results: list[dict], env: dict) -> str:
    lines = [
        f"relaxed top-K, forward + backward: hand-written vs autograd of the same forward "
        f"(backend {env['backend']}, numpy {env['numpy']}, autograd {env['autograd']}, {env['device']}; "
        f"tau={TAU}, kappa={KAPPA}; times are medians)",
        "",
        "| method | dtype | B | N | K | hand (ms) | autograd (ms) | autograd / hand |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['method']} | {r['dtype']} | {r['B']} | {r['N']} | {r['K']} | {1e3 * r['hand_median_s']:.3f} | "
            f"{1e3 * r['autograd_median_s']:.3f} | {r['ratio_autograd_over_hand']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def _write_atomic(path: str, text: str) -> None:
    d = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".tmp_", suffix=os.path.basename(path))
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--B", type=int, default=64, help="batch size (default 64)")
    ap.add_argument("--N", type=int, default=100, help="candidates (default 100)")
    ap.add_argument("--K", type=int, default=5, help="kept documents (default 5)")
    ap.add_argument("--sizes", action="store_true", help="sweep N in {10, 100, 1000} x K in {1, 5, 20}, K <= N")
    ap.add_argument("--quick", action="store_true", help="tiny smoke run (B=4, N=10, K=3, few repeats)")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--dtypes", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    ap.add_argument("--repeats", type=int, default=15, help="timed loops per path and case (default 15)")
    ap.add_argument("--target-ms", type=float, default=20.0, help="length of one timed loop (default 20 ms)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    args = ap.parse_args(argv)

    if args.quick:
        sizes, repeats, target_s = [(4, 10, 3)], 3, 0.002
    elif args.sizes:
        sizes = [(args.B, n, k) for n in (10, 100, 1000) for k in (1, 5, 20) if k <= n]
        repeats, target_s = args.repeats, args.target_ms / 1e3
    else:
        sizes, repeats, target_s = [(args.B, args.N, args.K)], args.repeats, args.target_ms / 1e3

    env = _environment()
    results = []
    for dtype in args.dtypes:
        for B, N, K in sizes:
            for method in args.methods:
                r = bench_case(method, B, N, K, np.dtype(dtype), repeats=repeats, target_s=target_s)
                results.append(r)
                print(
                    f"{method:9s} {dtype} B={B} N={N} K={K}: hand {1e3 * r['hand_median_s']:.3f} ms, "
                    f"autograd {1e3 * r['autograd_median_s']:.3f} ms, ratio {r['ratio_autograd_over_hand']:.2f}x",
                    file=sys.stderr,
                )
    table = markdown_table(results, env)
    os.makedirs(args.out, exist_ok=True)
    _write_atomic(os.path.join(args.out, "bench_topk.json"), json.dumps({"environment": env, "results": results}, indent=1))
    _write_atomic(os.path.join(args.out, "bench_topk.md"), table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
