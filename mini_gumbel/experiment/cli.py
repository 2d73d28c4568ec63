"""The ``mini-gumbel`` command line: argument parsing only; the work is done by the modules it calls.

    mini-gumbel train-reader   train the FiD reader on the built-in multi-hop data    (experiment.train_reader)
    mini-gumbel demo           Gumbel Reranking against its baselines, one table     (experiment.demo)
    mini-gumbel sweep          choose Gumbel Reranking's tau and kappa on the dev split (experiment.sweep)
"""
from __future__ import annotations

import os

# The models here are small: their matrix products are faster on one BLAS thread than on several competing
# for few cores (bench/README.md, "BLAS threads"). Set before NumPy is imported; an explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from .. import __version__  # noqa: E402
from ..atomic import atomic_write_json  # noqa: E402
from ..timing import keep_freed_memory  # noqa: E402
from .cache import save_reader  # noqa: E402
from .configs import METHODS, READERS, RerankConfig, TrainReaderConfig, default_configs, quick_configs  # noqa: E402
from .demo import run_demo  # noqa: E402
from .evaluate import format_em_table  # noqa: E402
from .sweep import KAPPA_STDS, TAUS, run_sweep  # noqa: E402
from .train_reader import train_reader  # noqa: E402

__all__ = ["main", "build_parser"]


# ----------------------------------------------------------------------------------------- train-reader
def train_reader_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data set, the initialisation and the batch/mask order")
    parser.add_argument("--steps", type=int, default=argparse.SUPPRESS,
                        help=f"training steps (default: {TrainReaderConfig.steps} for two_pass, "
                             f"{default_configs('fid').reader_train.steps} for fid; "
                             f"{quick_configs().reader_train.steps} with --quick)")
    parser.add_argument("--out", default="runs/reader",
                        help="folder for reader.npz, reader_report.json and the resumable train_state.npz")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from <out>/train_state.npz when it exists (it must match the "
                             "configuration); --no-resume starts over")
    parser.add_argument("--reader", choices=READERS, default="two_pass",
                        help="two_pass (default): decompose, then read twice; fid: the one-pass control")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test size: a small data set and reader, a few seconds; far from the EM targets")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="no progress bar")


def train_reader_run(args) -> int:
    data_cfg, reader_cfg, train_cfg, _ = quick_configs(args.reader) if args.quick else default_configs(args.reader)
    if getattr(args, "steps", None) is not None:
        if args.steps < 1:
            raise SystemExit(f"train-reader: --steps={args.steps}; expected >= 1")
        train_cfg = dataclasses.replace(train_cfg, steps=args.steps,
                                        warmup=min(train_cfg.warmup, max(args.steps // 10, 0)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    params, report = train_reader(data_cfg, reader_cfg, train_cfg, seed=args.seed, out_dir=out,
                                  resume=args.resume, progress=getattr(args, "progress", True))
    report["total_seconds_this_call"] = round(time.perf_counter() - t0, 2)
    save_reader(out / "reader.npz", params, reader_cfg, report)
    atomic_write_json(out / "reader_report.json", report)
    ev = report["test"]
    print(f"reader trained for {report['steps_done']} steps in {report['train_seconds']:.1f} s "
          f"(final loss {report['final_loss']}); test split, K={ev['k']}, chance EM ~{report['chance_em']:.3f}")
    print(format_em_table(ev))
    print(f"random K sets holding every gold document: {ev['random_k_has_all_gold']:.3f}")
    print(f"wrote {out / 'reader.npz'} and {out / 'reader_report.json'}")
    return 0


# ----------------------------------------------------------------------------------------- demo
def demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="directory for results.json, results.md, "
                   "curves.png and the per-run files that make the demo resumable")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], metavar="SEED",
                   help="reranker training seeds (init, batch order, noise); several give mean ± std")
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD",
                   help=f"methods to train, from {', '.join(METHODS)}")
    p.add_argument("--quick", action="store_true", help="smoke-sized run (CI): every code path in seconds")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data set and of the reader")
    d = RerankConfig()
    p.add_argument("--steps", type=int, default=argparse.SUPPRESS,
                   help=f"reranker training steps, every method (default: {d.steps}; --quick: 20)")
    p.add_argument("--tau", type=float, default=argparse.SUPPRESS,
                   help=f"Gumbel Reranking's temperature τ (default: {d.tau}, chosen by `mini-gumbel sweep`)")
    p.add_argument("--kappa", type=float, default=argparse.SUPPRESS,
                   help=f"Gumbel Reranking's score scale κ (default: {d.kappa}, chosen by `mini-gumbel sweep`)")
    p.add_argument("--relaxation", choices=("max", "iterative", "st"), default=argparse.SUPPRESS,
                   help="relaxed top-K operator for Gumbel Reranking (default: the paper's 'max')")
    p.add_argument("--no-noise", action="store_true", help="Gumbel Reranking without Gumbel noise (ablation)")
    p.add_argument("--reader", choices=READERS, default="two_pass",
                   help="two_pass: the reader that reads the bridge and answer documents together; fid: the "
                   "one-pass control that cannot use the bridge")
    p.add_argument("--no-tuned", dest="tuned", action="store_false",
                   help="skip the baselines' tuned rows (their values chosen by `mini-gumbel sweep --method`)")
    p.add_argument("--no-resume", action="store_true", help="ignore finished runs saved under --out/runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def demo_run(args) -> int:
    over = {}
    for name in ("steps", "tau", "kappa", "relaxation"):
        if getattr(args, name, None) is not None:
            over[name] = getattr(args, name)
    if args.no_noise:
        over["noise"] = False
    run_demo(out=args.out, seeds=tuple(args.seeds), methods=tuple(args.methods), quick=args.quick,
             data_seed=args.data_seed, resume=not args.no_resume, rerank_overrides=over, reader=args.reader,
             tuned=args.tuned, progress=not args.no_progress)
    return 0


# ----------------------------------------------------------------------------------------- sweep
def sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=Path, default=Path("runs/sweep"),
                   help="directory for sweep-<method>.json and sweep-<method>.md")
    p.add_argument("--method", choices=("gumbel", "pdist", "emdr", "loop", "adist"), default="gumbel",
                   help="the method whose free values are swept (the grids: `mini_gumbel.experiment.sweep.grid`)")
    p.add_argument("--reader", choices=READERS, default="two_pass", help="the reader the reranker trains against")
    p.add_argument("--quick", action="store_true", help="smoke-sized sweep")
    p.add_argument("--seed", type=int, default=0, help="reranker training seed")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the data set and of the reader")
    p.add_argument("--taus", type=float, nargs="+", default=list(TAUS), help="temperatures τ to try")
    p.add_argument("--kappa-stds", type=float, nargs="+", default=list(KAPPA_STDS),
                   help="targets for κ·std(w); κ is derived from the untrained scores' spread")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def sweep_run(args) -> int:
    run_sweep(out=args.out, method=args.method, quick=args.quick, seed=args.seed, data_seed=args.data_seed,
              taus=tuple(args.taus), kappa_stds=tuple(args.kappa_stds), reader=args.reader,
              progress=not args.no_progress)
    return 0


# ----------------------------------------------------------------------------------------- wiring
# subcommand -> (add_arguments, run, one-line help)
SUBCOMMANDS = {
    "train-reader": (train_reader_arguments, train_reader_run,
                     "train the FiD reader on the built-in data set and report its EM"),
    "demo": (demo_arguments, demo_run, "train the reranker with Gumbel Reranking and every baseline, print the table"),
    "sweep": (sweep_arguments, sweep_run, "choose Gumbel Reranking's tau and kappa on the dev split"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mini-gumbel",
        description="Gumbel Reranking (Huang et al., ACL 2025) in NumPy: label-free reranker training "
        "through a relaxed top-K mask inside a frozen Fusion-in-Decoder reader.",
    )
    parser.add_argument("--version", action="version", version=f"mini-gumbel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_arguments, run, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
        p.set_defaults(_run=run)
        add_arguments(p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    keep_freed_memory()
    return int(args._run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
