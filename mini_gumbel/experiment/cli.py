"""The ``mini-gumbel`` command line: argument parsing only; the work is done by the modules it calls.

    mini-gumbel demo           Gumbel Reranking against its baselines, one table     (experiment.demo)
    mini-gumbel train-reader   train the reader on the built-in multi-hop data, into the shared cache
    mini-gumbel sweep          choose a method's free values on the dev split         (experiment.sweep)
    mini-gumbel gradient-study each gradient estimator against the exact gradient  (experiment.gradient_study)

Every flag is checked before any work starts: a bad value ends in one argparse-style line naming the flag
(exit status 2). Ctrl-C ends in one line saying what was saved; rerunning the same command resumes. An error
the user can act on (a full disk, a file in the way) is one line too; ``--debug`` shows the traceback.
"""
from __future__ import annotations

import os

# The models here are small: their matrix products are faster on one BLAS thread than on several competing
# for few cores (bench/README.md, "BLAS threads"). Set before NumPy is imported; an explicit setting wins.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

from .. import __version__  # noqa: E402
from ..checkpoint import CheckpointError  # noqa: E402
from ..data import make_dataset  # noqa: E402
from ..timing import keep_freed_memory  # noqa: E402
from . import gradient_study  # noqa: E402
from .cache import default_cache_dir, load_or_train_reader, reader_folder  # noqa: E402
from .configs import (DEMO_METHODS, MAX_OBJECTIVE_KAPPA, METHODS, READERS, RerankConfig, TrainReaderConfig,  # noqa: E402
                      default_configs, quick_configs)
from .demo import default_demo_out, run_demo  # noqa: E402
from .evaluate import check_kappa_grid, format_em_table  # noqa: E402
from .flags import directory  # noqa: E402
from .rankers import RERANKERS  # noqa: E402
from .train_reranker import untrained_score_std  # noqa: E402
from .sweep import (KAPPA_STDS, OBJECTIVE_KAPPA_STDS, OBJECTIVE_KAPPA_STDS_LISTWISE, SAMPLES, SWEPT, TAUS,  # noqa: E402
                    run_sweep)

__all__ = ["main", "build_parser"]

EXTRA_HINT = 'pip install -e ".[demo]"'


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults in the help, except where they say nothing: on/off switches and unset (None) values."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None:
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------------------- flag types
class Parser(argparse.ArgumentParser):
    """argparse, but a misuse prints one line naming the flag (and where to look), not the whole usage."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n(`{self.prog} --help` lists every flag)\n")


def _number(parse, expected: str, ok):
    """An argparse ``type=``: parse the text, then check it; a failure names what was expected."""
    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}") from None
        if not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    convert.__name__ = expected  # what argparse prints if it ever names the type
    return convert


positive_int = _number(int, "an integer >= 1", lambda v: v >= 1)
seed_int = _number(int, "a non-negative integer seed", lambda v: v >= 0)
positive_float = _number(float, "a finite number > 0", lambda v: math.isfinite(v) and v > 0)


def _check_out(parser: argparse.ArgumentParser, flag: str, path: Path) -> None:
    """--out must be (or become) a writable directory: say so now, not after minutes of training."""
    if path.exists() and not path.is_dir():
        parser.error(f"argument {flag}: {str(path)!r} is an existing file; expected a directory")
    probe = path
    while not probe.exists():  # the nearest existing ancestor is where the directory would be created
        probe = probe.parent
    if not probe.is_dir():
        parser.error(f"argument {flag}: {str(path)!r} cannot be created: {str(probe)!r} is a file")
    if not os.access(probe, os.W_OK | os.X_OK):
        parser.error(f"argument {flag}: {str(path)!r} cannot be written (no write permission in {str(probe)!r})")


def _flag_error(parser: argparse.ArgumentParser, e: Exception, flags: dict) -> None:
    """A config's or a check's error ``fn: name=value; expected ...`` as the error of the flag that set
    ``name`` (``flags``: name -> flag); an error of any other name is raised as it is."""
    name = str(e).split(": ", 1)[-1].split("=", 1)[0]
    if name not in flags:
        raise e
    parser.error(f"argument {flags[name]}: {str(e).split(': ', 1)[1]}")


def _progress(args) -> bool:
    """Progress bars when asked for and tqdm (the `demo` extra) is installed; else say why there are none."""
    if not getattr(args, "progress", True):
        return False
    try:
        import tqdm  # noqa: F401
    except ImportError:
        print(f"note: tqdm is not installed, so there are no progress bars ({EXTRA_HINT} adds them)", file=sys.stderr)
        return False
    return True


def _configs(args):
    """The experiment configs (data, reader, reader training, reranker training) for --reader and --quick."""
    return quick_configs(args.reader) if args.quick else default_configs(args.reader)


# ----------------------------------------------------------------------------------------- train-reader
def train_reader_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=seed_int, default=0,
                        help="seed of the data set, the initialisation and the batch/mask order")
    parser.add_argument("--steps", type=positive_int, default=argparse.SUPPRESS,
                        help=f"training steps (default: {TrainReaderConfig.steps} for two_pass, "
                             f"{default_configs('fid').reader_train.steps} for fid; "
                             f"{quick_configs().reader_train.steps} with --quick)")
    parser.add_argument("--out", type=directory, default=None,
                        help="also copy reader.npz and reader_report.json here (the reader itself is trained in, "
                             "and read from, the shared cache that the demo, the sweep and the notebooks use)")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="reuse the cached reader, or continue its interrupted training; --no-resume trains "
                             "it again from step 0")
    parser.add_argument("--reader", choices=READERS, default="two_pass",
                        help="two_pass (default): decompose, then read twice; fid: the one-pass control")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test size: a small data set and reader, a few seconds; its numbers mean nothing")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def train_reader_run(args, parser) -> int:
    data_cfg, reader_cfg, train_cfg, _ = _configs(args)
    if getattr(args, "steps", None) is not None:
        train_cfg = dataclasses.replace(train_cfg, steps=args.steps,
                                        warmup=min(train_cfg.warmup, max(args.steps // 10, 0)))
    if args.out is not None:
        _check_out(parser, "--out", args.out)
    folder = reader_folder(data_cfg, reader_cfg, train_cfg, args.seed)
    args._saved = f"the reader's training state is saved in {folder}"
    progress = _progress(args)
    if args.quick:
        print("--quick: a smoke test at toy size; its numbers mean nothing")
    t0 = time.perf_counter()
    params, reader_cfg, report = load_or_train_reader(data_cfg, reader_cfg, train_cfg, seed=args.seed,
                                                      progress=progress, resume=args.resume)
    ev = report["test"]
    print(f"reader: {report['steps_done']} steps ({report['train_seconds']:.1f} s of training; final loss "
          f"{report['final_loss']}); exact match in percent on the test split, K={ev['k']}, chance "
          f"{100 * report['chance_em']:.1f}")
    print(format_em_table(ev))
    print(f"random K sets holding every gold document: {100 * ev['random_k_has_all_gold']:.1f}%")
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        for name in ("reader.npz", "reader_report.json"):
            shutil.copyfile(folder / name, args.out / name)
        print(f"copied reader.npz and reader_report.json to {args.out}")
    print(f"({time.perf_counter() - t0:.0f} s)")
    return 0


# ----------------------------------------------------------------------------------------- demo
def demo_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=directory, default=None,
                   help="directory for results.json, results.md, curves.png and the per-run files that make the "
                   "demo resumable (default: runs/demo, or runs/demo-<what differs> for --quick, --reader fid "
                   "and the Gumbel overrides, so that an ablation never overwrites the main table)")
    p.add_argument("--seeds", type=seed_int, nargs="+", default=[0], metavar="SEED",
                   help="reranker training seeds (init, batch order, noise); several give mean ± std")
    p.add_argument("--methods", nargs="+", default=list(DEMO_METHODS), choices=METHODS, metavar="METHOD",
                   help=f"methods to train, from {', '.join(METHODS)} (default: all but exact, whose subset-loss "
                   "table takes a few minutes to build once; it is then cached)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test (CI): every code path in seconds at toy size; its numbers mean nothing")
    p.add_argument("--data-seed", type=seed_int, default=0, help="seed of the data set and of the reader")
    d = RerankConfig()
    p.add_argument("--steps", type=positive_int, default=argparse.SUPPRESS,
                   help=f"reranker training steps, every method (default: {d.steps}; --quick: 20)")
    p.add_argument("--tau", type=positive_float, default=argparse.SUPPRESS,
                   help=f"Gumbel Reranking's temperature τ (default: {d.tau}, chosen by `mini-gumbel sweep`)")
    p.add_argument("--kappa", type=positive_float, default=argparse.SUPPRESS,
                   help=f"Gumbel Reranking's score scale κ (default: {d.kappa}, chosen by `mini-gumbel sweep`)")
    p.add_argument("--relaxation", choices=("max", "iterative", "st"), default=argparse.SUPPRESS,
                   help="relaxed top-K operator for Gumbel Reranking (default: the paper's 'max')")
    p.add_argument("--no-noise", action="store_true", help="Gumbel Reranking without Gumbel noise (ablation)")
    p.add_argument("--exact-kappa", type=positive_float, default=argparse.SUPPRESS,
                   help=f"exact: κ of the hard-set sampler softmax(κ w) (default: {d.exact_kappa}, chosen by "
                   "`mini-gumbel sweep --method exact`)")
    p.add_argument("--rloo-kappa", type=positive_float, default=argparse.SUPPRESS,
                   help=f"rloo: κ of the hard-set sampler softmax(κ w) (default: {d.rloo_kappa}, chosen by "
                   "`mini-gumbel sweep --method rloo`)")
    p.add_argument("--samples", type=positive_int, default=argparse.SUPPRESS,
                   help=f"rloo: hard sets sampled per example and step, at least 2 (default: {d.samples})")
    p.add_argument("--reader", choices=READERS, default="two_pass",
                   help="two_pass: the reader that reads the bridge and answer documents together; fid: the "
                   "one-pass control that cannot use the bridge")
    p.add_argument("--reranker", choices=RERANKERS, default=argparse.SUPPRESS,
                   help="the model every method trains: bilinear (default; each document scored alone, the paper's "
                   "kind) or listwise (one interaction round with the other candidates, its own tuned values)")
    p.add_argument("--no-tuned", dest="tuned", action="store_false",
                   help="the baselines at Atlas's defaults only, not at the values `mini-gumbel sweep --method` chose")
    p.add_argument("--atlas-defaults", action="store_true",
                   help="also a row per baseline at Atlas's defaults (τ_s = τ_g = 0.01), beside its tuned row")
    p.add_argument("--no-resume", action="store_true", help="ignore finished runs saved under --out/runs")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def demo_run(args, parser) -> int:
    over = {name: getattr(args, name) for name in ("steps", "tau", "kappa", "relaxation", "exact_kappa", "rloo_kappa",
                                                "samples", "reranker")
            if hasattr(args, name)}
    if args.no_noise:
        over["noise"] = False
    data_cfg, reader_cfg, train_cfg, rerank_cfg = _configs(args)
    try:  # each value was checked by its flag's type; the config checks them together (e.g. tau with kappa)
        rerank_cfg.replace(**over)
    except (TypeError, ValueError) as e:
        _flag_error(parser, e, {"steps": "--steps", "tau": "--tau", "kappa": "--kappa", "relaxation": "--relaxation",
                                "exact_kappa": "--exact-kappa", "rloo_kappa": "--rloo-kappa", "samples": "--samples"})
    twice = sorted({s for s in args.seeds if args.seeds.count(s) > 1})
    if twice:
        parser.error(f"argument --seeds: {twice[0]} is given {args.seeds.count(twice[0])} times; expected "
                     "distinct seeds (each one trains its own reranker)")
    out = args.out if args.out is not None else default_demo_out(quick=args.quick, reader=args.reader, overrides=over)
    _check_out(parser, "--out", out)
    if args.quick and _holds_full_results(out):
        parser.error(f"argument --out: {str(out)!r} holds the results of a full run (results.json); expected "
                     "another folder for --quick, whose numbers mean nothing")
    folder = reader_folder(data_cfg, reader_cfg, train_cfg, args.data_seed)
    args._saved = (f"finished runs are saved in {out / 'runs'}, the reader's training state in {folder}")
    run_demo(out=out, seeds=tuple(args.seeds), methods=tuple(args.methods), quick=args.quick,
             data_seed=args.data_seed, resume=not args.no_resume, rerank_overrides=over, reader=args.reader,
             tuned=args.tuned, atlas_defaults=args.atlas_defaults, progress=_progress(args))
    return 0


def _holds_full_results(out: Path) -> bool:
    """Whether ``out`` has a results.json of a run without --quick (unreadable files count as not)."""
    try:
        return json.loads((out / "results.json").read_text(encoding="utf-8")).get("quick") is False
    except (OSError, ValueError, AttributeError):
        return False


# ----------------------------------------------------------------------------------------- sweep
def sweep_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", type=directory, default=Path("runs/sweep"),
                   help="directory for sweep-<method>.json and sweep-<method>.md")
    p.add_argument("--method", choices=SWEPT, default="gumbel",
                   help="the method whose free values are swept (the grids: `mini_gumbel.experiment.sweep.grid`)")
    p.add_argument("--relaxation", choices=("max", "iterative", "st"), default="max",
                   help="gumbel: the relaxed top-K operator its 12 points train with (default: the paper's max)")
    p.add_argument("--reader", choices=READERS, default="two_pass", help="the reader the reranker trains against")
    p.add_argument("--quick", action="store_true", help="smoke-sized sweep; its numbers mean nothing")
    p.add_argument("--seed", type=seed_int, default=0, help="reranker training seed")
    p.add_argument("--data-seed", type=seed_int, default=0, help="seed of the data set and of the reader")
    p.add_argument("--taus", type=positive_float, nargs="+", default=list(TAUS),
                   help="Gumbel Reranking's temperatures τ to try")
    p.add_argument("--kappa-stds", type=positive_float, nargs="+", default=list(KAPPA_STDS),
                   help="Gumbel Reranking's targets for κ·std(w); κ is derived from the untrained scores' spread")
    p.add_argument("--objective-kappa-stds", type=positive_float, nargs="+", default=None,
                   help=f"exact and rloo: the targets for κ·std(w) of the hard-set sampler (default: "
                   f"{' '.join(f'{x:g}' for x in OBJECTIVE_KAPPA_STDS)}; listwise reranker: "
                   f"{' '.join(f'{x:g}' for x in OBJECTIVE_KAPPA_STDS_LISTWISE)})")
    p.add_argument("--reranker", choices=RERANKERS, default="bilinear",
                   help="the model that trains: bilinear (each document scored alone, the paper's kind) or listwise "
                   "(one interaction round with the other candidates)")
    p.add_argument("--samples", type=positive_int, nargs="+", default=list(SAMPLES),
                   help="rloo: the numbers of hard sets sampled per example to try (each at least 2)")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")


def sweep_run(args, parser) -> int:
    _check_out(parser, "--out", args.out)
    data_cfg, reader_cfg, train_cfg, rerank_cfg = _configs(args)
    bad = [m for m in args.samples if m < 2]
    if bad:
        parser.error(f"argument --samples: {bad[0]}; expected numbers of sampled sets of at least 2 (the leave-one-out "
                     "baseline needs another set)")
    w_std = None
    if args.method in ("gumbel", "exact", "rloo"):  # the grid's κ against the data's std(w): no reader needed
        w_std = untrained_score_std(make_dataset(data_cfg, seed=args.data_seed),
                                    rerank_cfg.replace(reranker=args.reranker), args.seed)
    big = [c for c in (args.objective_kappa_stds or ()) if w_std is not None and c / w_std > MAX_OBJECTIVE_KAPPA]
    if big:
        parser.error(f"argument --objective-kappa-stds: {big[0]:g}; expected values <= {MAX_OBJECTIVE_KAPPA * w_std:g} "
                     f"(κ = κ·std(w) / std(w), std(w) = {w_std:.4f}, at most {MAX_OBJECTIVE_KAPPA:g})")
    if args.method == "gumbel":  # every (tau, kappa) of the grid
        try:
            check_kappa_grid("sweep", args.taus, args.kappa_stds, w_std)
        except ValueError as e:
            _flag_error(parser, e, {"taus": "--taus", "kappa_stds": "--kappa-stds"})
    args._saved = (f"the reader's training state is saved in {reader_folder(data_cfg, reader_cfg, train_cfg, args.data_seed)}; "
                   f"sweep points are not saved until the sweep ends")
    run_sweep(out=args.out, method=args.method, quick=args.quick, seed=args.seed, data_seed=args.data_seed,
              taus=tuple(args.taus), kappa_stds=tuple(args.kappa_stds),
              objective_kappa_stds=None if args.objective_kappa_stds is None else tuple(args.objective_kappa_stds),
              samples=tuple(args.samples), relaxation=args.relaxation, reranker=args.reranker, reader=args.reader,
              progress=_progress(args))
    return 0


# ----------------------------------------------------------------------------------------- gradient-study
def gradient_study_run(args, parser) -> int:
    _check_out(parser, "--out", args.out)
    args.progress = _progress(args)
    args._saved = "the reader's training state is saved in the reader cache; the study is written when it ends"
    return gradient_study.run_from_args(args, parser)


# ----------------------------------------------------------------------------------------- wiring
# subcommand -> (add_arguments, run, one-line help)
SUBCOMMANDS = {
    "demo": (demo_arguments, demo_run, "train the reranker with Gumbel Reranking, the objective it relaxes and every "
             "baseline, print the table"),
    "train-reader": (train_reader_arguments, train_reader_run,
                     "train the reader on the built-in data set (into the shared cache) and report its EM"),
    "sweep": (sweep_arguments, sweep_run, "choose a method's free values (Gumbel Reranking's tau and kappa, the "
              "objective's kappa) on the dev split"),
    "gradient-study": (gradient_study.add_arguments, gradient_study_run,
                       "the exact gradient of the expected loss, and how biased and noisy each estimator is"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="mini-gumbel",
        description="Gumbel Reranking (Huang et al., ACL 2025) in NumPy: label-free reranker training "
        "through a relaxed top-K mask inside a frozen reader.",
        epilog=f"Each command's own flags: mini-gumbel COMMAND --help (e.g. mini-gumbel demo --help). The trained "
        f"reader is cached in $MINI_GUMBEL_CACHE (now: {default_cache_dir()}), shared by every command and the "
        "notebooks. The method: docs/method.md.",
    )
    parser.add_argument("--version", action="version", version=f"mini-gumbel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    common = Parser(add_help=False)
    common.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    for name, (add_arguments, run, help_) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_, parents=[common],
                           formatter_class=HelpFormatter)
        p.set_defaults(_run=run, _parser=p)
        add_arguments(p)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if args.command is None:
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        parser.print_help()
        return 2
    if extra:  # the subcommand's parser says it, and points at the help that lists its flags
        args._parser.error(f"unrecognized arguments: {' '.join(extra)}")
    keep_freed_memory()
    prog = f"mini-gumbel {args.command}"
    try:
        return int(args._run(args, args._parser) or 0)
    except KeyboardInterrupt:
        if args.debug:
            raise
        saved = getattr(args, "_saved", "nothing was saved yet")
        print(f"\n{prog}: interrupted; {saved}. Run the same command again to resume.", file=sys.stderr)
        return 130
    except (OSError, CheckpointError) as e:  # a disk, a permission, a file in the way: not a bug
        if args.debug:
            raise
        print(f"{prog}: error: {e} (--debug shows the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
