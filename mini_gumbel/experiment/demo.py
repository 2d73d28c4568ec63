"""``mini-gumbel demo``: the paper's comparison, end to end, on the built-in multi-hop data set.

1. build the data (deterministic from --data-seed);
2. train the FiD reader, or reuse the checkpoint cached under its config;
3. train the same bilinear reranker with Gumbel Reranking and every baseline (same steps, same seeds);
4. evaluate hard top-K on the test split: ranking metrics overall and on indirectly relevant documents,
   and the reader's EM/F1 from the top-K documents;
5. print one table (a row per method, plus the untrained reranker and an oracle given the gold documents),
   and write results.json, results.md and curves.png into --out.

Every finished (method, seed) run is saved atomically under --out/runs/ with a hash of its configuration (configs.config_hash),
so an interrupted demo resumes where it stopped (pass --no-resume to start over).
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_open, atomic_write_json, atomic_write_text
from ..data import make_dataset
from .cache import load_or_train_reader
from .configs import METHODS, TUNED, config_hash, default_configs, quick_configs
from .evaluate import evaluate_ranker, format_em_table, format_table, mean_std
from .train_reranker import compute_teachers, train_reranker

__all__ = ["run_demo", "plot_curves", "progress_bar"]


def progress_bar():
    """tqdm if installed (the `demo` extra), else no progress bars."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - the demo extra installs tqdm
        return None
    return lambda it, **kw: tqdm(it, file=sys.stderr, dynamic_ncols=True, **kw)


def run_demo(*, out: Path, seeds=(0,), methods=METHODS, quick=False, data_seed=0, resume=True,
             rerank_overrides: dict | None = None, reader: str = "two_pass", tuned: bool = True, progress=True,
             log=print) -> dict:
    """Run the comparison and write the results; returns the results dict (also written to results.json).

    Every method trains with the shared RerankConfig (the baselines at Atlas's defaults); with ``tuned`` each
    baseline in TUNED also gets a row "<method> (tuned)" with the values `mini-gumbel sweep --method` chose
    on the dev split under the same budget and rule as Gumbel Reranking's.
    """
    t0 = time.perf_counter()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    bar = progress_bar() if progress else None
    data_cfg, reader_cfg, train_cfg, rerank_cfg = quick_configs(reader) if quick else default_configs(reader)
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
        log("reader (test split EM, what the reranker has to win back):\n" + format_em_table(reader_info["test"]))
    vocab_size = len(splits.vocab)

    base = {"data": repr(data_cfg), "reader": repr(reader_cfg), "reader_train": repr(train_cfg),
            "rerank": repr(rerank_cfg), "data_seed": data_seed}
    variants = [(m, m, rerank_cfg) for m in methods]  # (row label, method, config)
    if tuned:
        variants += [(f"{m} (tuned)", m, rerank_cfg.replace(**TUNED[m])) for m in methods if m in TUNED]
    runs = {}  # (label, seed) -> record
    teachers = {}
    for label, method, cfg in variants:
        for seed in seeds:
            key = config_hash({**base, "rerank": repr(cfg), "method": method, "seed": seed})
            path = out / "runs" / f"{label.replace(' (tuned)', '-tuned')}-seed{seed}-{key[:8]}.json"
            if resume and path.exists():
                rec = json.loads(path.read_text())
                if rec.get("config_hash") == key:
                    runs[(label, seed)] = rec
                    log(f"{label} seed {seed}: reused the finished run in {path}")
                    continue
            if method not in teachers:  # the teacher depends on the reader and data only, not the seed
                n = min(rerank_cfg.n_train, len(splits.train))
                teachers[method] = compute_teachers(method, reader_params, reader_cfg, splits.train.batch(np.arange(n)),
                                                    rerank_cfg, progress=bar)
            t = time.perf_counter()
            run = train_reranker(method, reader_params, reader_cfg, splits.train, splits.dev, cfg, seed=seed,
                                 vocab_size=vocab_size, teachers=teachers[method], progress=bar)
            test = evaluate_ranker(run.params, splits.test, k, reader_params=reader_params, reader_cfg=reader_cfg)
            untrained = evaluate_ranker(run.init_params, splits.test, k, reader_params=reader_params,
                                        reader_cfg=reader_cfg)
            rec = {"method": method, "label": label, "seed": seed, "config_hash": key, "rerank": repr(cfg),
                   "test": test, "untrained_test": untrained, "history": run.history,
                   "seconds": time.perf_counter() - t}
            atomic_write_json(path, rec)
            runs[(label, seed)] = rec
            log(f"{label} seed {seed}: Recall@{k} {test[f'recall@{k}']:.3f}  "
                f"indirect {test[f'indirect_recall@{k}']:.3f}  EM {test['em']:.3f}  ({rec['seconds']:.0f}s)")

    # the untrained reranker (same init for every method at a given seed) and the gold-document oracle
    rows = {"untrained": [runs[(variants[0][0], s)]["untrained_test"] for s in seeds]}
    for label, _, _ in variants:
        rows[label] = [runs[(label, s)]["test"] for s in seeds]
    # the oracle ranks the gold documents first and hands the reader exactly the gold documents
    oracle_scores = splits.test.gold.astype(np.float64)
    rows["oracle (gold docs)"] = [evaluate_ranker(None, splits.test, k, reader_params=reader_params,
                                                  reader_cfg=reader_cfg, scores=oracle_scores,
                                                  reader_mask=splits.test.gold)]
    summary = {name: mean_std(recs) for name, recs in rows.items()}
    results = {
        "k": k, "seeds": list(seeds), "data_seed": data_seed, "quick": quick, "reader_kind": reader,
        "tuned": {label: repr(cfg) for label, _, cfg in variants if label.endswith("(tuned)")},
        "configs": {"data": repr(data_cfg), "reader": repr(reader_cfg), "reader_train": repr(train_cfg),
                    "rerank": repr(rerank_cfg)},
        "reader": reader_info,
        "table": summary,
        "curves": {label: [runs[(label, s)]["history"] for s in seeds] for label, _, _ in variants},
        "seconds": time.perf_counter() - t0,
    }
    table = format_table(summary, k, seeds, reader=reader, quick=quick)
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
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)
