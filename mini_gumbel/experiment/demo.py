"""``mini-gumbel demo``: the paper's comparison, end to end, on the built-in multi-hop data set.

1. build the data (deterministic from --data-seed);
2. train the FiD reader, or reuse the checkpoint cached under its config;
3. train the same bilinear reranker with Gumbel Reranking, the objective it relaxes (rloo; exact on request)
   and every baseline (same steps, same seeds);
4. evaluate hard top-K on the test split: ranking metrics overall and on indirectly relevant documents,
   and the reader's EM/F1 from the top-K documents;
5. print one table (a row per method, plus the untrained reranker and an oracle given the gold documents),
   and write results.json, results.md, curves.png (dev learning curves) and methods.png (the table as bars)
   into --out.

Every finished (method, seed) run is saved atomically under --out/runs/ with a hash of its configuration (configs.config_hash),
so an interrupted demo resumes where it stopped (pass --no-resume to start over). Each run is trained under a lock
on its file (atomic.file_lock), so a second demo on the same --out waits for a run the first is training and
reuses it.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_open, atomic_write_json, atomic_write_text, file_lock
from ..data import make_dataset
from .cache import load_or_train_reader
from .configs import (DEMO_METHODS, GUMBEL_ITERATIVE, OWN_FIELDS, RERANKER_DEFAULTS, TUNED_BY_RERANKER, config_hash,
                      default_configs, quick_configs)
from .evaluate import evaluate_ranker, format_em_table, format_table, mean_std
from .train_reranker import compute_teachers, train_reranker

__all__ = ["run_demo", "demo_variants", "plot_curves", "plot_methods", "progress_bar"]


def progress_bar():
    """tqdm if installed (the `demo` extra), else no progress bars."""
    try:
        from tqdm.auto import tqdm
    except ImportError:  # the core install: the command line says so once
        return None
    return lambda it, **kw: tqdm(it, file=sys.stderr, dynamic_ncols=True, **kw)


def default_demo_out(*, quick: bool = False, reader: str = "two_pass", overrides: dict | None = None) -> Path:
    """runs/demo for the default configuration, else runs/demo-<what differs> (e.g. runs/demo-relaxation-st),
    so that a smoke test or an ablation never overwrites the main table."""
    parts = (["quick"] if quick else []) + ([reader.replace("_", "-")] if reader != "two_pass" else [])
    parts += [_override_tag(name, value) for name, value in sorted((overrides or {}).items())]
    return Path("runs") / "-".join(["demo", *parts])


def _override_tag(name: str, value) -> str:
    if name == "noise" and value is False:
        return "no-noise"
    return f"{name}-{value:g}" if isinstance(value, float) else f"{name}-{value}"


def run_label(method: str, overrides: dict | None) -> str:
    """A method's row label: the method, plus the overrides of its own fields (configs.OWN_FIELDS: they change
    only its training), e.g. "gumbel (relaxation=st)" or "rloo (samples=4)"; the shared --steps is in every
    row's configuration, not its label."""
    own = {k: v for k, v in (overrides or {}).items() if k in OWN_FIELDS.get(method, ())}
    if not own:
        return method
    return f"{method} (" + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                     for k, v in sorted(own.items())) + ")"


def demo_variants(methods, rerank_cfg, overrides: dict | None = None, *, tuned: bool = True,
                  atlas_defaults: bool = False) -> list:
    """The table's rows as (label, method, RerankConfig), in table order.

    Every method trains with the shared RerankConfig (the baselines at Atlas's defaults). With ``tuned`` each
    baseline in TUNED gets the row "<method> (tuned)" with the values `mini-gumbel sweep --method` chose on the
    dev split under the same budget and rule as everyone's, and its Atlas-default row only with
    ``atlas_defaults``. Gumbel Reranking, unless its own fields are overridden, also gets the row
    "gumbel (relaxation=iterative)" at the values its own sweep chose (configs.GUMBEL_ITERATIVE; the bilinear
    reranker only). The tuned values are those of the config's reranker (configs.TUNED_BY_RERANKER)."""
    overrides = overrides or {}
    tuned_values = TUNED_BY_RERANKER[rerank_cfg.reranker]
    out = []
    for m in methods:
        tuned_row = tuned and m in tuned_values
        if atlas_defaults or not tuned_row:
            out.append((run_label(m, overrides), m, rerank_cfg))
        if tuned_row:
            out.append((f"{m} (tuned)", m, rerank_cfg.replace(**tuned_values[m])))
        if (m == "gumbel" and rerank_cfg.reranker == "bilinear"
                and not any(name in OWN_FIELDS["gumbel"] for name in overrides)):
            out.append(("gumbel (relaxation=iterative)", m, rerank_cfg.replace(**GUMBEL_ITERATIVE)))
    return out


def run_demo(*, out: Path, seeds=(0,), methods=DEMO_METHODS, quick=False, data_seed=0, resume=True,
             rerank_overrides: dict | None = None, reader: str = "two_pass", tuned: bool = True,
             atlas_defaults: bool = False, progress=True, log=print) -> dict:
    """Run the comparison and write the results; returns the results dict (also written to results.json).

    The rows: demo_variants(methods, ...). A finished (row, seed) run is reused from --out/runs when its
    configuration hash matches; an unreadable run file is recomputed.
    """
    t0 = time.perf_counter()
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    bar = progress_bar() if progress else None
    data_cfg, reader_cfg, train_cfg, rerank_cfg = quick_configs(reader) if quick else default_configs(reader)
    if rerank_overrides:  # a reranker's own defaults (configs.RERANKER_DEFAULTS) first, then the overrides
        kind = rerank_overrides.get("reranker", rerank_cfg.reranker)
        rerank_cfg = rerank_cfg.replace(**{**RERANKER_DEFAULTS[kind], **rerank_overrides})
    k = rerank_cfg.k
    if quick:
        log("--quick: a smoke test of every code path at toy size; its numbers mean nothing")

    splits = make_dataset(data_cfg, seed=data_seed)
    n_train = min(rerank_cfg.n_train, len(splits.train))
    log(f"data: {len(splits.train)} train questions (the reader trains on all, the reranker on the first "
        f"{n_train}) / {len(splits.dev)} dev / {len(splits.test)} test; N={splits.train.docs.shape[1]} candidates, "
        f"K={k}")
    reader_params, reader_cfg, reader_report = load_or_train_reader(data_cfg, reader_cfg, train_cfg, seed=data_seed,
                                                                    splits=splits, progress=progress, log=log)
    reader_info = _reader_summary(reader_report)
    if "test" in reader_info:
        log("reader exact match, in percent on the test split, for fixed document sets (a good reranker brings "
            "the top K close to the 'gold + random' row):\n" + format_em_table(reader_info["test"]))
    vocab_size = len(splits.vocab)

    base = {"data": repr(data_cfg), "reader": repr(reader_cfg), "reader_train": repr(train_cfg),
            "rerank": repr(rerank_cfg), "data_seed": data_seed}
    # (row label, method, config); a method's own overrides are in its label
    variants = demo_variants(methods, rerank_cfg, rerank_overrides, tuned=tuned, atlas_defaults=atlas_defaults)
    runs = {}  # (label, seed) -> record
    untrained_at = {}  # (seed, dim, init) -> the untrained reranker's test metrics, computed once
    teachers = {}  # method -> its teacher (for gumbel: the reader memory), dropped after the method's last row
    last_row = {method: i for i, (_, method, _) in enumerate(variants)}
    for i, (label, method, cfg) in enumerate(variants):
        if i > 0 and last_row[variants[i - 1][1]] == i - 1:
            teachers.pop(variants[i - 1][1], None)  # frees e.g. the 246 MB reader memory of the Gumbel steps
        for seed in seeds:
            key = config_hash({**base, "rerank": repr(cfg), "method": method, "seed": seed})
            tag = "-tuned" if label.endswith("(tuned)") else ("-iterative" if "iterative" in label else "")
            path = out / "runs" / f"{method}{tag}-seed{seed}-{key[:8]}.json"
            # one demo at a time per run file: a second demo on the same --out waits, then reuses the run
            with file_lock(path.with_suffix(".lock"), waiting=lambda: log(f"{label} seed {seed}: waiting for "
                           f"another demo that is training this run into {path}")):
                rec = _read_run(path, key, log) if resume else None
                if rec is not None:
                    runs[(label, seed)] = rec
                    log(f"{label} seed {seed}: reused the finished run in {path}")
                    continue
                if method not in teachers:  # the teacher depends on the reader and data only, not the seed
                    teachers[method] = compute_teachers(method, reader_params, reader_cfg,
                                                        splits.train.batch(np.arange(n_train)), rerank_cfg,
                                                        progress=bar)
                t = time.perf_counter()
                run = train_reranker(method, reader_params, reader_cfg, splits.train, splits.dev, cfg, seed=seed,
                                     vocab_size=vocab_size, teachers=teachers[method], progress=bar)
                test = evaluate_ranker(run.params, splits.test, k, reader_params=reader_params,
                                       reader_cfg=reader_cfg)
                init_key = (seed, cfg.dim, cfg.init)  # every method starts from the same reranker at a given seed
                if init_key not in untrained_at:
                    untrained_at[init_key] = evaluate_ranker(run.init_params, splits.test, k,
                                                             reader_params=reader_params, reader_cfg=reader_cfg)
                untrained = untrained_at[init_key]
                rec = {"method": method, "label": label, "seed": seed, "config_hash": key, "rerank": repr(cfg),
                       "test": test, "untrained_test": untrained, "history": run.history,
                       "seconds": time.perf_counter() - t}
                atomic_write_json(path, rec)
            runs[(label, seed)] = rec
            log(f"{label} seed {seed}: test Recall@{k} {100 * test[f'recall@{k}']:.1f}%  "
                f"indirect Recall@{k} {100 * test[f'indirect_recall@{k}']:.1f}%  EM {100 * test['em']:.1f}%  "
                f"({rec['seconds']:.0f} s)")

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
    log("")
    log(table)
    written = [out / "results.json", out / "results.md"]
    try:
        plot_curves(results["curves"], k, out / "curves.png", seeds=seeds, quick=quick)
        plot_methods(summary, k, out / "methods.png", seeds=seeds, reader=reader, quick=quick)
        written += [out / "curves.png", out / "methods.png"]
    except ImportError:
        log('\nnote: matplotlib is not installed, so there is no curves.png or methods.png (pip install -e ".[demo]" '
            'adds it)')
    log(f"\nwrote {', '.join(map(str, written))}  ({results['seconds']:.0f} s)")
    return results


def _reader_summary(report) -> dict:
    """The reader's part of its training report: its EM for fixed document sets, steps and time."""
    if not isinstance(report, dict):
        return {}
    return {k: report[k] for k in ("test", "steps_done", "train_seconds", "final_loss", "chance_em") if k in report}


def plot_curves(curves: dict, k: int, path: Path, *, seeds=(0,), quick: bool = False) -> None:
    """Dev Recall@K and dev indirect Recall@K (percent) against training step, one line per method, mean over
    the reranker seeds; the legend sits below both panels so it covers no curve. ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.6), constrained_layout=True)
    for ax, key, title in ((axes[0], f"recall@{k}", f"Recall@{k}"),
                           (axes[1], f"indirect_recall@{k}", f"indirect Recall@{k} (bridge documents)")):
        for method, hists in curves.items():
            steps = [h["step"] for h in hists[0]]
            vals = 100 * np.mean([[h["dev"][key] for h in hist] for hist in hists], axis=0)
            ax.plot(steps, vals, marker="o", ms=3, label=method)
        ax.set_xlabel("reranker training step")
        ax.set_ylabel(f"dev {title}, %")
        ax.set_title(f"dev {title}")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(len(labels), 6), fontsize=8)
    fig.suptitle(f"Dev split, {_spread(seeds, 'mean')}; hard top-{k} of the reranker's scores"
                 + ("; --quick smoke test: the numbers mean nothing" if quick else ""), fontsize=9)
    _save_png(fig, path)


def _spread(seeds, what: str) -> str:
    """How a plot's numbers pool the reranker seeds."""
    return f"{what} over reranker seeds {list(seeds)}" if len(seeds) > 1 else f"reranker seed {seeds[0]}"


def _save_png(fig, path: Path) -> None:
    """The figure as a PNG, written atomically; then closed."""
    import matplotlib.pyplot as plt

    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


PLOTTED = (("recall@{k}", "Recall@{k}"), ("all_gold@{k}", "all-gold@{k}"), ("indirect_recall@{k}", "indirect Recall@{k}"),
           ("em_two_hop", "two-hop EM"))


def plot_methods(summary: dict, k: int, path: Path, *, seeds=(0,), reader: str = "two_pass",
                 quick: bool = False) -> None:
    """The table as one picture: a group of bars per row (untrained, each method, the oracle), one bar per metric
    of PLOTTED (test split, %), with the spread over seeds as error bars. ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = list(summary)
    fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(rows) + 2), 4.2), constrained_layout=True)
    width = 0.8 / len(PLOTTED)
    for j, (key, title) in enumerate(PLOTTED):
        key = key.format(k=k)
        mean = [100 * (summary[r][key]["mean"] or 0.0) for r in rows]
        std = [100 * (summary[r][key]["std"] or 0.0) for r in rows]
        ax.bar(np.arange(len(rows)) + (j - (len(PLOTTED) - 1) / 2) * width, mean, width,
               yerr=std if len(seeds) > 1 else None, capsize=2, label=title.format(k=k))
    ax.set_xticks(np.arange(len(rows)))
    ax.set_xticklabels([r.replace(" (", "\n(") for r in rows], fontsize=7.5)
    ax.set_ylabel("test split, %")
    ax.set_ylim(0, 105)
    ax.grid(axis="y", alpha=0.3)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=len(PLOTTED), fontsize=8)
    ax.set_title(f"hard top-{k} of each reranker, the {reader.replace('_', '-')} reader; {_spread(seeds, 'mean ± std')}"
                 + ("; --quick: the numbers mean nothing" if quick else ""), fontsize=9)
    _save_png(fig, path)


def _read_run(path: Path, key: str, log) -> dict | None:
    """A finished run's record, or None to recompute it: missing, for another configuration, or unreadable
    (truncated, empty, not a run record), the last with a warning."""
    if not path.exists():
        return None
    try:
        rec = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(rec, dict) or not {"test", "untrained_test", "history", "config_hash"} <= rec.keys():
            raise ValueError("not a run record")
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        log(f"warning: ignoring the unreadable run file {path} ({type(e).__name__}: {e}); recomputing it")
        return None
    return rec if rec["config_hash"] == key else None
