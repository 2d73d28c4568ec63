"""Time the default reader training (``mini-gumbel train-reader``): data, training, evaluation.

    python tools/bench_train_reader.py [--seed 0] [--steps S] [--out bench_train_reader.json]

Prints a markdown table with wall-clock and process CPU seconds of each phase and the EM table, and with
--out writes the numbers as JSON (atomically), with the configs and the machine (mini_gumbel.timing's
environment record: library versions, CPU, BLAS threads, load average). Each phase runs once: a stopwatch
on a run minutes long, not a repeated timing. The issue's budget: the whole default training within 3
minutes on 2 CPU cores. On a busy shared machine the wall clock overstates the cost; the CPU seconds of
one BLAS thread do not (set OMP_NUM_THREADS=1: with several BLAS threads on 2 busy cores, the tiny matrix
products of this model spend most of their time waiting for each other).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from mini_gumbel.atomic import atomic_write_json
from mini_gumbel.data import DataConfig, make_dataset
from mini_gumbel.experiment.configs import TrainReaderConfig, default_reader_config
from mini_gumbel.experiment.evaluate import evaluate_reader, format_em_table
from mini_gumbel.experiment.train_reader import train_reader
from mini_gumbel.timing import elapsed, environment, stopwatch


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=None, help="override TrainReaderConfig.steps")
    ap.add_argument("--progress", action="store_true", help="show the training progress bar")
    ap.add_argument("--out", default=None, help="write the numbers here as JSON")
    args = ap.parse_args(argv)
    data_cfg = DataConfig()
    train_cfg = TrainReaderConfig()
    if args.steps is not None:
        train_cfg = dataclasses.replace(train_cfg, steps=args.steps)
    reader_cfg = default_reader_config(data_cfg)

    t_all = stopwatch()
    t = stopwatch()
    splits = make_dataset(data_cfg, args.seed)
    data_t = elapsed(t)
    t = stopwatch()
    params, report = train_reader(data_cfg, reader_cfg, train_cfg, seed=args.seed, progress=args.progress,
                                  splits=splits, evaluate=False)
    train_t = elapsed(t)
    t = stopwatch()
    ev = evaluate_reader(params, reader_cfg, splits.test, data_cfg.k, args.seed)
    eval_t = elapsed(t)
    total_t = elapsed(t_all)
    n_params = int(sum(p.size for p in params.values()))
    record = {
        "phases_seconds": {"data": data_t, "train": train_t, "evaluate": eval_t, "total": total_t},
        "phases_note": "(wall, process CPU) seconds",
        "steps": train_cfg.steps,
        "seconds_per_step_wall": round(train_t[0] / train_cfg.steps, 4),
        "n_params": n_params,
        "final_loss": report["final_loss"],
        "test": ev,
        "data_config": data_cfg.as_dict(),
        "reader_config": dataclasses.asdict(reader_cfg),
        "train_config": train_cfg.as_dict(),
        "seed": args.seed,
        "machine": dict(environment(), backend="numpy", dtype=train_cfg.dtype),
    }
    print(f"default reader training: {train_cfg.steps} steps, batch {train_cfg.batch_size}, {n_params} parameters, "
          f"{train_cfg.dtype}, seed {args.seed}\n")
    print("| phase | wall s | CPU s |\n|---|---:|---:|")
    for k, (w, c) in record["phases_seconds"].items():
        print(f"| {k} | {w:.1f} | {c:.1f} |")
    print(f"\nbudget: total wall {total_t[0]:.1f} s of 180 s; final loss {report['final_loss']}\n")
    print(format_em_table(ev))
    if args.out:
        atomic_write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
