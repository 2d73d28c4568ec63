"""``mini-gumbel sweep``: choose each label-free method's free values on the dev split, by one rule.

Gumbel Reranking: τ ∈ {0.03, 0.1, 0.3, 1.0} × κ with κ·std(w) ∈ {1, 2, 5}, w the scores of the reranker
training starts from on training questions (docs/method.md §7.5; τ decides whether DMA can drop a document at
all, §6.7), for its ``max`` relaxation (the paper's) and, with ``relaxation="iterative"``, the same 12 points for
the relaxation that draws without replacement. The paper's objective V = E_S[L(1_S)] has one free value, the
sampler's κ: κ·std(w) ∈ {0.5, 1, 2, 5} for ``exact``, and the same κ × m ∈ {4, 16} sampled sets for ``rloo``.
The baselines get the same kind of budget (docs/method.md §8.4): τ_s × τ_g ∈ {0.01, 0.1, 1}² for
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
from ..gumbel import RELAXATIONS
from ..validate import check_choice, fail
from .cache import load_or_train_reader
from .configs import default_configs, quick_configs
from .rankers import RERANKERS
from .demo import progress_bar
from .evaluate import check_kappa_grid
from .train_reranker import compute_teachers, train_reranker, untrained_score_std

__all__ = ["run_sweep", "grid", "SWEPT", "TAUS", "KAPPA_STDS", "OBJECTIVE_KAPPA_STDS", "SAMPLES", "TEACHER_TAUS"]

TAUS = (0.03, 0.1, 0.3, 1.0)
KAPPA_STDS = (1.0, 2.0, 5.0)  # κ·std(w) targets of Gumbel Reranking
OBJECTIVE_KAPPA_STDS = (0.5, 1.0, 2.0, 5.0)  # κ·std(w) targets of the exact objective and RLOO
OBJECTIVE_KAPPA_STDS_LISTWISE = (0.5, 1.0, 2.0)  # the same for the listwise reranker (5 hurt the bilinear one)
SAMPLES = (4, 16)  # RLOO's sampled sets per example
TEACHER_TAUS = (0.01, 0.1, 1.0)  # τ_s and τ_g of the distillation baselines, 0.01 being Atlas's default
SWEPT = ("gumbel", "exact", "rloo", "pdist", "emdr", "loop", "adist")  # supervised has nothing to choose


def grid(method: str, w_std: float, taus=TAUS, kappa_stds=KAPPA_STDS, objective_kappa_stds=OBJECTIVE_KAPPA_STDS,
         samples=SAMPLES) -> list:
    """The search space of ``method``: a list of RerankConfig overrides. About the same budget for everyone: 12
    points for Gumbel Reranking (τ × κ·std(w), each relaxation), 4 for the exact objective (κ·std(w)) and 8 for
    RLOO (κ·std(w) × m), 9 for PDist/LOOP/ADist (τ_s × τ_g), 6 for EMDR (τ_s × per token / per sequence)."""
    if method == "gumbel":
        return [dict(tau=t, kappa=c / w_std) for t in taus for c in kappa_stds]
    if method == "exact":
        return [dict(exact_kappa=c / w_std) for c in objective_kappa_stds]
    if method == "rloo":
        return [dict(rloo_kappa=c / w_std, samples=m) for c in objective_kappa_stds for m in samples]
    if method in ("pdist", "loop", "adist"):
        return [dict(tau_s=a, tau_g=b) for a in TEACHER_TAUS for b in TEACHER_TAUS]
    if method == "emdr":
        return [dict(tau_s=a, emdr_per=per) for a in TEACHER_TAUS for per in ("token", "sequence")]
    fail("grid", "method", method, f"one of {', '.join(SWEPT)} (supervised is not swept)")


def sweep_name(method: str, relaxation: str = "max", reranker: str = "bilinear") -> str:
    """The sweep's file stem: sweep-gumbel (the paper's max), sweep-gumbel-iterative, sweep-rloo, sweep-rloo-listwise..."""
    return (f"sweep-{method}" + (f"-{relaxation}" if method == "gumbel" and relaxation != "max" else "")
            + (f"-{reranker}" if reranker != "bilinear" else ""))


def run_sweep(*, out: Path, method: str = "gumbel", quick=False, seed=0, data_seed=0, taus=TAUS,
              kappa_stds=KAPPA_STDS, objective_kappa_stds=None, samples=SAMPLES, relaxation: str = "max",
              reranker: str = "bilinear", reader: str = "two_pass", progress=True, log=print) -> dict:
    """Train ``method`` at every point of grid(method) with the demo's seed and steps; choose the best dev
    Recall@K (ties: the higher dev indirect Recall@K), a rule fixed before anything runs. The test split
    is never looked at. ``relaxation`` (gumbel only): the relaxed top-K operator the 12 points train with.
    ``reranker``: the model that trains (experiment.rankers); objective_kappa_stds=None is OBJECTIVE_KAPPA_STDS for
    the bilinear reranker and OBJECTIVE_KAPPA_STDS_LISTWISE for the listwise one."""
    t0 = time.perf_counter()
    check_choice("run_sweep", "method", method, SWEPT)
    check_choice("run_sweep", "relaxation", relaxation, RELAXATIONS)
    data_cfg, reader_cfg, train_cfg, rerank_cfg = quick_configs(reader) if quick else default_configs(reader)
    check_choice("run_sweep", "reranker", reranker, RERANKERS)
    rerank_cfg = rerank_cfg.replace(reranker=reranker)
    if objective_kappa_stds is None:
        objective_kappa_stds = OBJECTIVE_KAPPA_STDS_LISTWISE if reranker == "listwise" else OBJECTIVE_KAPPA_STDS
    if method == "gumbel":
        rerank_cfg = rerank_cfg.replace(relaxation=relaxation)
    splits = make_dataset(data_cfg, seed=data_seed)
    # the scale of the scores training starts from (train_reranker's own initial reranker at this seed),
    # measured on the questions the reranker trains on: κ = κ·std(w) / std(w)
    w_std = untrained_score_std(splits, rerank_cfg, seed)
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
    for over in grid(method, w_std, taus, kappa_stds, objective_kappa_stds, samples):
        cfg = rerank_cfg.replace(**over)
        t = time.perf_counter()
        runr = train_reranker(method, reader_params, reader_cfg, splits.train, splits.dev, cfg, seed=seed,
                              vocab_size=len(splits.vocab), teachers=teachers, progress=bar)
        dev = runr.history[-1]["dev"]
        row = {**over, f"dev_recall@{k}": dev[f"recall@{k}"], f"dev_indirect_recall@{k}": dev[f"indirect_recall@{k}"]}
        if method == "gumbel":
            row["kappa_std"] = round(over["kappa"] * w_std, 6)
        for name in ("exact_kappa", "rloo_kappa"):
            if name in over:
                row["kappa_std"] = round(over[name] * w_std, 6)
        row["seconds"] = round(time.perf_counter() - t, 1)
        rows.append(row)
        log(f"{method} {_point(row)}: dev Recall@{k} {dev[f'recall@{k}']:.3f}  "
            f"indirect {dev[f'indirect_recall@{k}']:.3f}")
    best = max(rows, key=lambda r: (r[f"dev_recall@{k}"], r[f"dev_indirect_recall@{k}"]))
    result = {"method": method, "relaxation": rerank_cfg.relaxation if method == "gumbel" else None,
              "reranker": reranker,
              "reader_kind": reader, "k": k, "seed": seed, "data_seed": data_seed,
              "std_untrained_scores": w_std, "rows": rows, "best": best, "seconds": time.perf_counter() - t0}
    title = method + (f" (relaxation={relaxation})" if method == "gumbel" and relaxation != "max" else "") + (
        f", {reranker} reranker" if reranker != "bilinear" else "")
    md = [f"| {title}: point | dev Recall@{k} | dev indirect Recall@{k} | training s |", "|---|---:|---:|---:|"]
    for r in rows:
        mark = " **(chosen)**" if r is best else ""
        md.append(f"| {_point(r)} | {100 * r[f'dev_recall@{k}']:.1f}{mark} | {100 * r[f'dev_indirect_recall@{k}']:.1f} "
                  f"| {r['seconds']:.0f} |")
    md.append(f"\nDev split, percent; chosen by dev Recall@{k} (ties: dev indirect Recall@{k}); reranker seed "
              f"{seed}, data seed {data_seed}, {reader} reader; std of the untrained scores within a question "
              f"{w_std:.4f}.")
    out = Path(out)
    stem = sweep_name(method, relaxation, reranker)
    atomic_write_json(out / f"{stem}.json", result)
    atomic_write_text(out / f"{stem}.md", "\n".join(md) + "\n")
    log("\n" + "\n".join(md))
    log(f"\nwrote {out / f'{stem}.json'} and {out / f'{stem}.md'} ({result['seconds']:.0f}s)")
    return result


def _point(row: dict) -> str:
    if "kappa" in row:
        return f"τ={row['tau']:g} κ={row['kappa']:.3f} (κ·std(w)={row['kappa_std']:g})"
    for name in ("exact_kappa", "rloo_kappa"):
        if name in row:
            m = f" m={row['samples']}" if "samples" in row else ""
            return f"κ={row[name]:.3f} (κ·std(w)={row['kappa_std']:g}){m}"
    return " ".join(f"{key}={row[key]}" for key in ("tau_s", "tau_g", "emdr_per") if key in row)
