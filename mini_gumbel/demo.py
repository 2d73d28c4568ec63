"""``mini-gumbel demo``: the paper's comparison, end to end, on the built-in multi-hop data set.

1. build the data (deterministic from --data-seed);
2. train the FiD reader, or reuse the checkpoint cached under its config;
3. train the same bilinear reranker with Gumbel Reranking and every baseline (same steps, same seeds);
4. evaluate hard top-K on the test split: ranking metrics overall and on indirectly relevant documents,
   and the reader's EM/F1 from the top-K documents;
5. print one table (a row per method, plus the untrained reranker and an oracle given the gold documents),
   and write results.json, results.md and curves.png into --out.

Every finished (method, seed) run is saved atomically under --out/runs/ with a hash of its configuration,
so an interrupted demo resumes where it stopped (pass --no-resume to start over).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from .atomic import atomic_write_json, atomic_write_text
from .rerank import METHODS, RerankConfig, compute_teachers, evaluate_ranker, train_reranker

__all__ = ["add_arguments", "run", "run_demo", "format_table", "TABLE_METRICS"]

# (key in the metrics dict, column title); the key's @k suffix is filled in with K.
TABLE_METRICS = (
    ("recall@{k}", "Recall@{k}"),
    ("all_gold@{k}", "all-gold@{k}"),
    ("mrr", "MRR"),
    ("ndcg@{k}", "NDCG@{k}"),
    ("indirect_recall@{k}", "indirect Recall@{k}"),
    ("em", "EM"),
    ("f1", "F1"),
)


def _progress():
    """tqdm if installed (the `demo` extra), else no progress bars."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - the demo extra installs tqdm
        return None
    return lambda it, **kw: tqdm(it, file=sys.stderr, dynamic_ncols=True, **kw)


def _config_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def quick_configs():
    """Smoke-sized configs for CI (--quick): every code path in well under a minute."""
    from .readertrain import default_reader_config
    from .readertrain import quick_configs as reader_quick

    data_cfg, train_cfg, reader_over = reader_quick()
    rerank_cfg = RerankConfig(steps=20, batch_size=16, eval_every=10, n_train=128, dim=32)
    return data_cfg, default_reader_config(data_cfg, **reader_over), train_cfg, rerank_cfg


def default_configs():
    """The demo's configuration: the data set's and the reader's defaults, and RerankConfig()."""
    from .data import DataConfig
    from .readertrain import TrainReaderConfig, default_reader_config

    data_cfg = DataConfig()
    return data_cfg, default_reader_config(data_cfg), TrainReaderConfig(), RerankConfig()


def run_demo(*, out: Path, seeds=(0,), methods=METHODS, quick=False, data_seed=0, resume=True,
             rerank_overrides: dict | None = None, progress=True, log=print) -> dict:
    """Run the comparison and write the results; returns the results dict (also written to results.json)."""
    from .data import make_dataset
    from .readertrain import load_or_train_reader

    t0 = time.perf_counter()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    bar = _progress() if progress else None
    data_cfg, reader_cfg, train_cfg, rerank_cfg = quick_configs() if quick else default_configs()
    if rerank_overrides:
        rerank_cfg = rerank_cfg.replace(**rerank_overrides)
    k = rerank_cfg.k

    splits = make_dataset(data_cfg, seed=data_seed)
    log(f"data: {len(splits.train)} train / {len(splits.dev)} dev / {len(splits.test)} test questions, "
        f"N={splits.train.docs.shape[1]} candidates, K={k}")
    reader_params, reader_cfg, reader_report = load_or_train_reader(data_cfg, reader_cfg, train_cfg, seed=data_seed,
                                                                    splits=splits, progress=progress)
    reader_info = _reader_summary(reader_report)
    if "test" in reader_info:
        from .readertrain import format_em_table

        log("reader (test split EM, what the reranker has to win back):\n" + format_em_table(reader_info["test"]))
    vocab_size = len(splits.vocab)

    base = {"data": repr(data_cfg), "reader": repr(reader_cfg), "reader_train": repr(train_cfg),
            "rerank": repr(rerank_cfg), "data_seed": data_seed}
    runs = {}  # (method, seed) -> record
    teachers = {}
    for method in methods:
        for seed in seeds:
            key = _config_hash({**base, "method": method, "seed": seed})
            path = out / "runs" / f"{method}-seed{seed}.json"
            if resume and path.exists():
                rec = json.loads(path.read_text())
                if rec.get("config_hash") == key:
                    runs[(method, seed)] = rec
                    log(f"{method} seed {seed}: resumed from {path}")
                    continue
            if method not in teachers:  # the teacher depends on the reader and data only, not the seed
                n = min(rerank_cfg.n_train, len(splits.train))
                teachers[method] = compute_teachers(method, reader_params, reader_cfg, splits.train.batch(np.arange(n)),
                                                    rerank_cfg, progress=bar)
            t = time.perf_counter()
            run = train_reranker(method, reader_params, reader_cfg, splits.train, splits.dev, rerank_cfg, seed=seed,
                                 vocab_size=vocab_size, teachers=teachers[method], progress=bar)
            test = evaluate_ranker(run.params, splits.test, k, reader_params=reader_params, reader_cfg=reader_cfg)
            untrained = evaluate_ranker(run.init_params, splits.test, k, reader_params=reader_params,
                                        reader_cfg=reader_cfg)
            rec = {"method": method, "seed": seed, "config_hash": key, "test": test, "untrained_test": untrained,
                   "history": run.history, "seconds": time.perf_counter() - t}
            atomic_write_json(path, rec)
            runs[(method, seed)] = rec
            log(f"{method} seed {seed}: Recall@{k} {test[f'recall@{k}']:.3f}  "
                f"indirect {test[f'indirect_recall@{k}']:.3f}  EM {test['em']:.3f}  ({rec['seconds']:.0f}s)")

    # the untrained reranker (same init for every method at a given seed) and the gold-document oracle
    rows = {"untrained": [runs[(methods[0], s)]["untrained_test"] for s in seeds]}
    for method in methods:
        rows[method] = [runs[(method, s)]["test"] for s in seeds]
    # the oracle ranks the gold documents first and hands the reader exactly the gold documents
    oracle_scores = splits.test.gold.astype(np.float64)
    rows["oracle (gold docs)"] = [evaluate_ranker(None, splits.test, k, reader_params=reader_params,
                                                  reader_cfg=reader_cfg, scores=oracle_scores,
                                                  reader_mask=splits.test.gold)]
    summary = {name: _mean_std(recs) for name, recs in rows.items()}
    results = {
        "k": k, "seeds": list(seeds), "data_seed": data_seed, "quick": quick,
        "configs": {"data": repr(data_cfg), "reader": repr(reader_cfg), "reader_train": repr(train_cfg),
                    "rerank": repr(rerank_cfg)},
        "reader": reader_info,
        "table": summary,
        "curves": {m: [runs[(m, s)]["history"] for s in seeds] for m in methods},
        "seconds": time.perf_counter() - t0,
    }
    table = format_table(summary, k, seeds)
    atomic_write_json(out / "results.json", results)
    atomic_write_text(out / "results.md", table + "\n")
    plot_curves(results["curves"], k, out / "curves.png")
    log("")
    log(table)
    log(f"\nwrote {out / 'results.json'}, {out / 'results.md'}, {out / 'curves.png'}  "
        f"({results['seconds']:.0f}s)")
    return results


def _reader_summary(report) -> dict:
    """The reader's EM table from its training report (what the reranker has to win back)."""
    if not isinstance(report, dict):
        return {}
    return {k: report[k] for k in ("test", "steps_done", "train_seconds", "final_loss", "chance_em") if k in report}


def _mean_std(recs: list) -> dict:
    keys = [k for k in recs[0] if isinstance(recs[0][k], (int, float)) and not isinstance(recs[0][k], bool)]
    out = {}
    for key in keys:
        vals = np.array([r[key] for r in recs], dtype=np.float64)
        out[key] = {"mean": float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan"),
                    "std": float(np.nanstd(vals)) if len(vals) > 1 else 0.0, "n": len(vals)}
    return out


def format_table(summary: dict, k: int, seeds) -> str:
    """A markdown table: a row per method, a column per metric, mean ± std over the seeds (in %)."""
    cols = [(key.format(k=k), title.format(k=k)) for key, title in TABLE_METRICS]
    lines = ["| method | " + " | ".join(t for _, t in cols) + " |", "|---|" + "---:|" * len(cols)]
    for name, m in summary.items():
        cells = []
        for key, _ in cols:
            if key not in m:
                cells.append("")
                continue
            mean, std, n = m[key]["mean"], m[key]["std"], m[key]["n"]
            cells.append(f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Test split, hard top-{k} of the reranker scores; mean ± std over seeds {list(seeds)} "
                 f"(the oracle is deterministic).")
    return "\n".join(lines)


def plot_curves(curves: dict, k: int, path: Path) -> None:
    """Dev Recall@K and indirect Recall@K against training step, one line per method (mean over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), constrained_layout=True)
    for ax, key, title in ((axes[0], f"recall@{k}", f"dev Recall@{k}"),
                           (axes[1], f"indirect_recall@{k}", f"dev indirect Recall@{k}")):
        for method, hists in curves.items():
            steps = [h["step"] for h in hists[0]]
            vals = np.mean([[h["dev"][key] for h in hist] for hist in hists], axis=0)
            ax.plot(steps, vals, marker="o", ms=3, label=method)
        ax.set_xlabel("training step")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


def add_arguments(p: argparse.ArgumentParser) -> None:
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
    p.add_argument("--no-resume", action="store_true", help="ignore finished runs saved under --out/runs")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def run(args) -> int:
    over = {}
    for name in ("steps", "tau", "kappa", "relaxation"):
        if getattr(args, name, None) is not None:
            over[name] = getattr(args, name)
    if args.no_noise:
        over["noise"] = False
    run_demo(out=args.out, seeds=tuple(args.seeds), methods=tuple(args.methods), quick=args.quick,
             data_seed=args.data_seed, resume=not args.no_resume, rerank_overrides=over,
             progress=not args.no_progress)
    return 0
