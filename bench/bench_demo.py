"""Wall-clock time of `mini-gumbel demo` (default and --quick) on this machine, reader training included.

    python bench/bench_demo.py [--quick-only] [--out bench/out]

Runs the demo twice per size: first with an empty reader cache (the time a newcomer waits on a fresh
machine), then again with the cached reader and --no-resume (the reranker part alone). Writes
demo_time.json and prints a table. Targets (issue): default at most 5 minutes, --quick at most 1 minute,
on 2 cores. These are absolute CPU times on a shared machine: treat them as indicative, not exact.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def time_demo(extra, cache, out) -> float:
    env = dict(os.environ, MINI_GUMBEL_CACHE=str(cache))
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "mini_gumbel.cli", "demo", "--no-progress", "--out", str(out), *extra],
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
    result = {"rows": rows, "cpu_count": os.cpu_count(), "platform": platform.platform(),
              "python": platform.python_version(), "numpy": np.__version__}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demo_time.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
