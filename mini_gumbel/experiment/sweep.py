"""``mini-gumbel sweep``: choose Gumbel Reranking's temperature τ and score scale κ on the dev split.

docs/method.md §7.5: sweep τ ∈ {0.1, 0.3, 0.5, 1.0} and κ so that κ·std(w) is 1–5, where w are the untrained
reranker's scores on training questions. Each (τ, κ) trains the reranker with the same seed and steps as the
demo; the choice is the best dev Recall@K (ties: the higher dev indirect Recall@K). The test split is never
looked at. The distillation baselines keep Atlas's published defaults (τ_s = τ_g = 0.01) and are not swept:
the README says so next to the table.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_json, atomic_write_text
from ..data import make_dataset
from ..reranker import init_reranker
from .cache import load_or_train_reader
from .configs import default_configs, quick_configs
from .demo import progress_bar
from .evaluate import score_all
from .train_reranker import train_reranker

__all__ = ["run_sweep", "TAUS", "KAPPA_STDS"]

TAUS = (0.1, 0.3, 0.5, 1.0)
KAPPA_STDS = (1.0, 2.0, 5.0)  # κ·std(w) targets


def run_sweep(*, out: Path, quick=False, seed=0, data_seed=0, taus=TAUS, kappa_stds=KAPPA_STDS, progress=True,
              log=print) -> dict:
    t0 = time.perf_counter()
    data_cfg, reader_cfg, train_cfg, rerank_cfg = quick_configs() if quick else default_configs()
    splits = make_dataset(data_cfg, seed=data_seed)
    reader_params, reader_cfg, _ = load_or_train_reader(data_cfg, reader_cfg, train_cfg, seed=data_seed, splits=splits,
                                            progress=progress)
    k = rerank_cfg.k
    # the scale of the untrained scores, measured on the questions the reranker trains on
    init = init_reranker(len(splits.vocab), rerank_cfg.dim, 0, init=rerank_cfg.init)
    w = score_all(init, splits.train.batch(np.arange(min(rerank_cfg.n_train, len(splits.train)))))
    w_std = float(np.mean(np.std(w, axis=1)))  # spread among one question's candidates
    bar = progress_bar() if progress else None
    rows = []
    for tau in taus:
        for target in kappa_stds:
            kappa = target / w_std
            cfg = rerank_cfg.replace(tau=tau, kappa=kappa)
            runr = train_reranker("gumbel", reader_params, reader_cfg, splits.train, splits.dev, cfg, seed=seed,
                                  vocab_size=len(splits.vocab), progress=bar)
            dev = runr.history[-1]["dev"]
            rows.append({"tau": tau, "kappa": kappa, "kappa_std": target, f"dev_recall@{k}": dev[f"recall@{k}"],
                         f"dev_indirect_recall@{k}": dev[f"indirect_recall@{k}"]})
            log(f"tau={tau:<4} kappa={kappa:7.3f} (kappa*std(w)={target:g}): dev Recall@{k} "
                f"{dev[f'recall@{k}']:.3f}  indirect {dev[f'indirect_recall@{k}']:.3f}")
    best = max(rows, key=lambda r: (r[f"dev_recall@{k}"], r[f"dev_indirect_recall@{k}"]))
    result = {"k": k, "seed": seed, "data_seed": data_seed, "std_untrained_scores": w_std, "rows": rows,
              "best": best, "seconds": time.perf_counter() - t0}
    md = [f"| τ | κ | κ·std(w) | dev Recall@{k} | dev indirect Recall@{k} |", "|---:|---:|---:|---:|---:|"]
    for r in rows:
        mark = " **(chosen)**" if r is best else ""
        md.append(f"| {r['tau']} | {r['kappa']:.3f} | {r['kappa_std']:g} | {100 * r[f'dev_recall@{k}']:.1f}{mark} | "
                  f"{100 * r[f'dev_indirect_recall@{k}']:.1f} |")
    md.append(f"\nstd of the untrained scores within a question: {w_std:.4f}; chosen by dev Recall@{k} "
              f"(ties: dev indirect Recall@{k}); seed {seed}.")
    out = Path(out)
    atomic_write_json(out / "sweep.json", result)
    atomic_write_text(out / "sweep.md", "\n".join(md) + "\n")
    log("\n" + "\n".join(md))
    log(f"\nwrote {out / 'sweep.json'} and {out / 'sweep.md'} ({result['seconds']:.0f}s)")
    return result
