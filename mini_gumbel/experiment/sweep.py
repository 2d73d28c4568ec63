"""``mini-gumbel sweep``: choose each label-free method's free values on the dev split, by one rule.

Gumbel Reranking: τ ∈ {0.03, 0.1, 0.3, 1.0} × κ with κ·std(w) ∈ {1, 2, 5}, w the untrained reranker's
scores on training questions (docs/method.md §7.5; τ decides whether DMA can drop a document at all,
§6.7). The baselines get the same kind of budget (docs/method.md §8.4): τ_s × τ_g ∈ {0.01, 0.1, 1}² for
PDist, LOOP and ADist, τ_s × {per token, per sequence} for EMDR. Every point trains the reranker with the
demo's seed and steps; the choice is the best dev Recall@K (ties: the higher dev indirect Recall@K), fixed
before the sweep runs. The test split is never looked at.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..data import make_dataset
from ..validate import fail
from .cache import load_or_train_reader
from .configs import default_configs, quick_configs
from .demo import progress_bar
from .evaluate import check_kappa_grid, untrained_score_std
from .train_reranker import compute_teachers, train_reranker

__all__ = ["run_sweep", "grid", "TAUS", "KAPPA_STDS", "TEACHER_TAUS"]

TAUS = (0.03, 0.1, 0.3, 1.0)
KAPPA_STDS = (1.0, 2.0, 5.0)  # κ·std(w) targets
TEACHER_TAUS = (0.01, 0.1, 1.0)  # τ_s and τ_g of the distillation baselines, 0.01 being Atlas's default


def grid(method: str, w_std: float, taus=TAUS, kappa_stds=KAPPA_STDS) -> list:
    """The search space of ``method``: a list of RerankConfig overrides. The same budget for everyone: 12
    points for Gumbel Reranking (τ × κ·std(w)), 9 for PDist/LOOP/ADist (τ_s × τ_g), 6 for EMDR (τ_s × per
    token / per sequence)."""
    if method == "gumbel":
        return [dict(tau=t, kappa=c / w_std) for t in taus for c in kappa_stds]
    if method in ("pdist", "loop", "adist"):
        return [dict(tau_s=a, tau_g=b) for a in TEACHER_TAUS for b in TEACHER_TAUS]
    if method == "emdr":
        return [dict(tau_s=a, emdr_per=per) for a in TEACHER_TAUS for per in ("token", "sequence")]
    fail("grid", "method", method, "one of gumbel, pdist, loop, adist, emdr (supervised is not swept)")


def run_sweep(*, out: Path, method: str = "gumbel", quick=False, seed=0, data_seed=0, taus=TAUS,
              kappa_stds=KAPPA_STDS, reader: str = "two_pass", progress=True, log=print) -> dict:
    """Train ``method`` at every point of grid(method) with the demo's seed and steps; choose the best dev
    Recall@K (ties: the higher dev indirect Recall@K), a rule fixed before anything runs. The test split
    is never looked at."""
    t0 = time.perf_counter()
    data_cfg, reader_cfg, train_cfg, rerank_cfg = quick_configs(reader) if quick else default_configs(reader)
    splits = make_dataset(data_cfg, seed=data_seed)
    w_std = untrained_score_std(splits, rerank_cfg)  # the scale of the untrained scores: κ = κ·std(w) / std(w)
    if method == "gumbel":  # every point usable, checked before the reader loads
        check_kappa_grid("run_sweep", taus, kappa_stds, w_std)
    reader_params, reader_cfg, _ = load_or_train_reader(data_cfg, reader_cfg, train_cfg, seed=data_seed,
                                                        splits=splits, progress=progress)
    k = rerank_cfg.k
    n = min(rerank_cfg.n_train, len(splits.train))
    bar = progress_bar() if progress else None
    teachers = compute_teachers(method, reader_params, reader_cfg, splits.train.batch(np.arange(n)), rerank_cfg,
                                progress=bar)  # one teacher for every point: it depends on no swept value
    rows = []
    for over in grid(method, w_std, taus, kappa_stds):
        cfg = rerank_cfg.replace(**over)
        runr = train_reranker(method, reader_params, reader_cfg, splits.train, splits.dev, cfg, seed=seed,
                              vocab_size=len(splits.vocab), teachers=teachers, progress=bar)
        dev = runr.history[-1]["dev"]
        row = {**over, f"dev_recall@{k}": dev[f"recall@{k}"], f"dev_indirect_recall@{k}": dev[f"indirect_recall@{k}"]}
        if method == "gumbel":
            row["kappa_std"] = round(over["kappa"] * w_std, 6)
        rows.append(row)
        log(f"{method} {_point(row)}: dev Recall@{k} {dev[f'recall@{k}']:.3f}  "
            f"indirect {dev[f'indirect_recall@{k}']:.3f}")
    best = max(rows, key=lambda r: (r[f"dev_recall@{k}"], r[f"dev_indirect_recall@{k}"]))
    result = {"method": method, "reader_kind": reader, "k": k, "seed": seed, "data_seed": data_seed,
              "std_untrained_scores": w_std, "rows": rows, "best": best, "seconds": time.perf_counter() - t0}
    md = [f"| {method}: point | dev Recall@{k} | dev indirect Recall@{k} |", "|---|---:|---:|"]
    for r in rows:
        mark = " **(chosen)**" if r is best else ""
        md.append(f"| {_point(r)} | {100 * r[f'dev_recall@{k}']:.1f}{mark} | {100 * r[f'dev_indirect_recall@{k}']:.1f} |")
    md.append(f"\nDev split, percent; chosen by dev Recall@{k} (ties: dev indirect Recall@{k}); reranker seed "
              f"{seed}, data seed {data_seed}, {reader} reader; std of the untrained scores within a question "
              f"{w_std:.4f}.")
    out = Path(out)
    atomic_write_json(out / f"sweep-{method}.json", result)
    atomic_write_text(out / f"sweep-{method}.md", "\n".join(md) + "\n")
    log("\n" + "\n".join(md))
    log(f"\nwrote {out / f'sweep-{method}.json'} and {out / f'sweep-{method}.md'} ({result['seconds']:.0f}s)")
    return result


def _point(row: dict) -> str:
    if "kappa" in row:
        return f"τ={row['tau']:g} κ={row['kappa']:.3f} (κ·std(w)={row['kappa_std']:g})"
    return " ".join(f"{key}={row[key]}" for key in ("tau_s", "tau_g", "emdr_per") if key in row)
