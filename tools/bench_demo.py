"""Wall-clock time of `mini-gumbel demo` (default and --quick) on this machine, reader training included.

    python tools/bench_demo.py [--quick-only] [--out bench/out]

Runs the demo twice per size: first with an empty reader cache (the time a newcomer waits on a fresh
machine), then again with the cached reader and --no-resume (the reranker part alone). Writes
demo_time.json (with mini_gumbel.timing's environment record) and prints a table. Targets (issue):
default at most 5 minutes, --quick at most 1 minute, on 2 cores. Each is one run minutes long, timed by
a stopwatch: absolute times on a shared machine, indicative, not exact.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mini_gumbel.atomic import atomic_write_json
from mini_gumbel.timing import environment


def time_demo(extra, cache, out) -> float:
    env = dict(os.environ, MINI_GUMBEL_CACHE=str(cache))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mini_gumbel", "demo", "--no-progress", "--out", str(out), *extra],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("bench/out"))
    ap.add_argument("--quick-only", action="store_true", help="time only the --quick demo")
    args = ap.parse_args(argv)
    rows = []
    sizes = [("quick", ["--quick"])] + ([] if args.quick_only else [("default", [])])
    for name, extra in sizes:
        with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as out:
            cold = time_demo(extra, cache, out)  # trains the reader
            warm = time_demo(extra + ["--no-resume"], cache, out)  # reader from the cache
        rows.append({"size": name, "cold_seconds": cold, "cached_reader_seconds": warm})
        print(f"{name:8s} cold (reader trained) {cold:6.1f}s   reader cached {warm:6.1f}s", flush=True)
    result = {"rows": rows, "environment": environment()}
    atomic_write_json(args.out / "demo_time.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
