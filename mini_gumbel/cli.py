"""The ``mini-gumbel`` command line.

    mini-gumbel train-reader   train the FiD reader on the built-in multi-hop data (cached by config)
    mini-gumbel demo           the paper's comparison: Gumbel Reranking against its baselines
    mini-gumbel sweep          choose Gumbel Reranking's tau and kappa on the dev split

Each subcommand lives in the module that does the work (it provides ``add_arguments`` and ``run``); this
file only wires them together.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys

# The models here are small: their matrix products are faster on one BLAS thread than on several competing
# for few cores (bench/README.md, "BLAS threads"). Set before NumPy is imported; an explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

# subcommand -> (module, one-line help). The module provides add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "train-reader": ("mini_gumbel.readertrain", "train the FiD reader on the built-in data set and report its EM"),
    "demo": ("mini_gumbel.demo", "train the reranker with Gumbel Reranking and every baseline, print the table"),
    "sweep": ("mini_gumbel.sweep", "choose Gumbel Reranking's tau and kappa on the dev split"),
}


def keep_freed_memory() -> dict:
    """Tell glibc malloc to keep freed memory: no mmap per large array, no trimming of the heap top.

    NumPy frees and re-allocates the same multi-MB temporaries every training step; by default glibc
    hands them back to the kernel and every reuse page-faults them in again (1.3-1.7x slower reader steps,
    measured by ``python bench/compare_rev.py --alloc-ab``). Process-wide; a no-op without glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as e:
        return {"applied": False, "reason": f"no glibc: {e}"}
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    return {"applied": ok, "settings": "mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, 1 GiB)"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mini-gumbel",
        description="Gumbel Reranking (Huang et al., ACL 2025) in NumPy: label-free reranker training "
        "through a relaxed top-K mask inside a frozen Fusion-in-Decoder reader.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_module=module)
        importlib.import_module(module).add_arguments(p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    keep_freed_memory()
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
