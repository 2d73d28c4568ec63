"""Time the table of hard-subset losses three ways, at the demo's sizes: masked all-N, with and without memory.

    python tools/bench_hard_subsets.py [--reader both] [--examples 32] [--repeats 3] [--json bench_hard_subsets.json]

The exact objective and RLOO (docs/method.md §12) need the frozen reader's answer NLL c[b, r] of example b
reading only the hard set S_br of K documents. For every C(N, K) set of each of ``--examples`` test questions
(N = 10, K = 5: 252 sets) this times, interleaved in one run (mini_gumbel.timing.time_interleaved):

    masked              every example-set row reads all N documents under the 0/1 mask of its set, the
                        encoder run per row (what gradient_study.subset_losses did before hard_subsets)
    masked + memory     the same, the mask-independent states (reader_memory_of) computed once per example
    read-only-S         hard_subsets.subset_nll: each row reads its K documents only, from that memory

all three in chunks of ``--chunk`` rows per reader call, and checks that they agree. It prints the median
seconds of each, the ratios, and the time a full table over ``--table-examples`` examples would take on this
machine with read-only-S. The reader: the cached trained one of default_configs(reader) when it is in the cache
(never trained here), else random parameters (init_reader) of the same configuration; float32 either way, as
the reader trains. One BLAS thread. With --json the timings and the machine record are written atomically.
"""
from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import itertools  # noqa: E402
from pathlib import Path  # noqa: E402
from types import SimpleNamespace  # noqa: E402

import numpy as np  # noqa: E402

from mini_gumbel.atomic import atomic_write_json  # noqa: E402
from mini_gumbel.data import make_dataset  # noqa: E402
from mini_gumbel.experiment.cache import load_reader, reader_folder  # noqa: E402
from mini_gumbel.experiment.configs import default_configs  # noqa: E402
from mini_gumbel.experiment.readers import answer_nll, reader_inputs  # noqa: E402
from mini_gumbel.gumbel_reranking import reader_memory_of  # noqa: E402
from mini_gumbel.hard_subsets import subset_nll  # noqa: E402
from mini_gumbel.reader import init_reader  # noqa: E402
from mini_gumbel.timing import environment, time_interleaved  # noqa: E402
from mini_gumbel.two_pass_reader import TwoPassBatch  # noqa: E402


def _reader(kind: str):
    """(params float32, cfg, where from): the cached trained reader of default_configs(kind), else random."""
    c = default_configs(kind)
    path = reader_folder(c.data, c.reader, c.reader_train, 0) / "reader.npz"
    if path.exists():
        params, cfg, _ = load_reader(path, expect_config=c.reader)
        source = f"trained, {path}"
    else:
        params, cfg, source = init_reader(c.reader, 0), c.reader, "random (init_reader; no cached reader)"
    return {k: v.astype(np.float32) for k, v in params.items()}, cfg, c, source


def _rows(inputs, idx):
    """Rows ``idx`` of the reader's inputs (a TwoPassBatch, or FiD's ctx, ans_in, ans_out)."""
    if isinstance(inputs, TwoPassBatch):
        return TwoPassBatch(*(a[idx] for a in inputs))
    return SimpleNamespace(ctx=inputs.ctx[idx], ans_in=inputs.ans_in[idx], ans_out=inputs.ans_out[idx])


def masked_table(params, cfg, inputs, subsets, *, chunk, use_memory):
    """c (B, R): every example-set row reading all N documents under its set's 0/1 mask."""
    B, R, K = subsets.shape
    N = (inputs.ctx1 if isinstance(inputs, TwoPassBatch) else inputs.ctx).shape[1]
    memory = reader_memory_of(params, cfg, inputs) if use_memory else None
    flat = subsets.reshape(B * R, K)  # (B·R, K)
    out = []
    for s in range(0, B * R, chunk):
        ex = np.arange(s, min(s + chunk, B * R)) // R  # (rows,)
        masks = (flat[s:s + chunk, :, None] == np.arange(N)).any(axis=1).astype(params["tok_emb"].dtype)  # (rows, N)
        _, cache = answer_nll(params, cfg, _rows(inputs, ex), masks,
                              memory=None if memory is None else memory.take(ex))
        out.append(cache.nll)
    return np.concatenate(out).reshape(B, R).astype(np.float64)  # (B, R)


def bench(kind: str, *, examples: int, repeats: int, chunk: int, table_examples: int) -> dict:
    params, cfg, c, source = _reader(kind)
    data_cfg = c.data
    N, K = data_cfg.n_candidates, data_cfg.k
    test = make_dataset(data_cfg, seed=0).test
    if examples > len(test):
        raise SystemExit(f"bench_hard_subsets: --examples={examples}; expected at most {len(test)} test questions")
    inputs = reader_inputs(test.batch(np.arange(examples)), cfg)
    combos = np.array(list(itertools.combinations(range(N), K)))  # (R, K)
    subsets = np.ascontiguousarray(np.broadcast_to(combos, (examples,) + combos.shape))  # (B, R, K)
    R = len(combos)
    fns = {
        "masked": lambda: masked_table(params, cfg, inputs, subsets, chunk=chunk, use_memory=False),
        "masked + memory": lambda: masked_table(params, cfg, inputs, subsets, chunk=chunk, use_memory=True),
        "read-only-S": lambda: subset_nll(params, cfg, inputs, subsets, chunk=chunk),
    }
    values = {name: fn() for name, fn in fns.items()}
    gap = max(float(np.abs(v - values["masked"]).max()) for v in values.values())
    t = time_interleaved(fns, repeats=repeats, target_s=0.0, warmup=0)
    fast = t["read-only-S"]
    return {"reader": kind, "source": source, "dtype": "float32", "examples": examples, "N": N, "K": K,
           "subsets_per_example": R, "chunk": chunk, "L": int(cfg.max_ctx_len),
           "seconds": dict(t), "ratio_to_read_only_S": {n: t[n] / fast for n in t},
           "max_abs_difference": gap, "full_table_examples": table_examples,
           "full_table_seconds": {n: t[n] / examples * table_examples for n in t}}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reader", choices=("two_pass", "fid", "both"), default="both")
    ap.add_argument("--examples", type=int, default=32, help="test questions (each with all C(N, K) sets)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repeats (median reported)")
    ap.add_argument("--chunk", type=int, default=512, help="example-set rows per reader call")
    ap.add_argument("--table-examples", type=int, default=4000, help="size of the full table to estimate")
    ap.add_argument("--json", type=Path, default=None, help="write the results here")
    args = ap.parse_args(argv)
    for name in ("examples", "repeats", "chunk", "table_examples"):
        if getattr(args, name) < 1:
            ap.error(f"argument --{name.replace('_', '-')}: expected an integer >= 1, got {getattr(args, name)}")
    kinds = ("two_pass", "fid") if args.reader == "both" else (args.reader,)
    results = []
    print("| reader | examples x sets | masked s | masked + memory s | read-only-S s | masked / read-only-S | "
          f"masked + memory / read-only-S | full table ({args.table_examples} ex.), read-only-S | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for kind in kinds:
        r = bench(kind, examples=args.examples, repeats=args.repeats, chunk=args.chunk,
                  table_examples=args.table_examples)
        results.append(r)
        s, q = r["seconds"], r["ratio_to_read_only_S"]
        print(f"| {kind} ({r['source'].split(',')[0]}) | {r['examples']} x {r['subsets_per_example']} | "
              f"{s['masked']:.2f} | {s['masked + memory']:.2f} | {s['read-only-S']:.2f} | {q['masked']:.1f}x | "
              f"{q['masked + memory']:.1f}x | {r['full_table_seconds']['read-only-S']:.0f} s | "
              f"{r['max_abs_difference']:.1e} |")
    print(f"BLAS threads OPENBLAS={os.environ.get('OPENBLAS_NUM_THREADS')}; os.cpu_count()={os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}; ratios from one interleaved run, medians of {args.repeats}")
    if args.json is not None:
        atomic_write_json(args.json, {"results": results, "repeats": args.repeats, "environment": environment()})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
