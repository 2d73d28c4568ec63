"""Time the gradient study's default run (``mini-gumbel gradient-study``) with the reader already cached.

    python tools/bench_gradient_study.py [--out DIR] [--json bench_gradient_study.json]

Loads (or, the first time, trains) the default two-pass reader, then runs
``mini_gumbel.experiment.gradient_study.run_gradient_study()`` at its default size once and prints the wall-clock
and process CPU seconds of the study itself (the reader's loading separately). The budget: the default study
within 2 minutes on 2 CPU cores. On a busy shared machine the wall clock overstates the cost; the CPU seconds of
one BLAS thread do not (set OMP_NUM_THREADS=1). With --out the study's files are written there (that is how
docs/results/gradient_study.* are made); with --json the timings and the machine record (mini_gumbel.timing's
environment) are written as JSON, atomically.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

from mini_gumbel.atomic import atomic_write_json  # noqa: E402
from mini_gumbel.data import make_dataset  # noqa: E402
from mini_gumbel.experiment.cache import load_or_train_reader  # noqa: E402
from mini_gumbel.experiment.configs import default_configs  # noqa: E402
from mini_gumbel.experiment.gradient_study import GradientStudyConfig, run_gradient_study  # noqa: E402
from mini_gumbel.timing import environment  # noqa: E402

BUDGET_S = 120.0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=None, help="write the study's files here")
    ap.add_argument("--json", type=Path, default=None, help="write the timings here")
    args = ap.parse_args(argv)
    c = default_configs()
    load_or_train_reader(c.data, c.reader, c.reader_train, seed=0, splits=make_dataset(c.data, seed=0),
                         progress=False)  # the study's own load then reads the cache, as in every later run
    w0, c0 = time.perf_counter(), time.process_time()
    res = run_gradient_study(GradientStudyConfig(), out=args.out, progress=False, log=print)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    cfg = res["config"]
    print("| run | questions | draws (relaxed / REINFORCE) | grid τ x κ·std | wall s | CPU s | budget s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    print(f"| gradient study, default | {cfg['n_single']} + {cfg['n_two_hop']} | {cfg['draws']} / "
          f"{cfg['reinforce_draws']} | {len(cfg['taus'])} x {len(cfg['kappa_stds'])} | {wall:.1f} | {cpu:.1f} | "
          f"{BUDGET_S:.0f} |")
    print(f"reader load (cached) {res['seconds']['reader_load']:.1f} s of it; BLAS threads "
          f"OPENBLAS={os.environ.get('OPENBLAS_NUM_THREADS')}; os.cpu_count()={os.cpu_count()}; "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.json is not None:
        atomic_write_json(args.json, {"wall_s": wall, "cpu_s": cpu, "budget_s": BUDGET_S, "config": cfg,
                                      "reader_load_s": res["seconds"]["reader_load"], "environment": environment()})
    return 0 if wall <= BUDGET_S else 1


if __name__ == "__main__":
    sys.exit(main())
