"""Evaluation and tables: the reader's exact match under document conditions, the reranker's ranking
metrics of its hard top-K (and the reader's answer from those K), and the markdown tables of both.

Dimension letters: S examples, N candidates, K kept, L tokens per encoder sequence, T answer tokens.
"""
from __future__ import annotations

import numpy as np

from .. import metrics
from ..data import Dataset
from ..gumbel import topk_mask
from ..metrics import exact_match
from ..reader import ReaderConfig, greedy_decode
from ..reranker import reranker_forward
from ..validate import check_int, check_type

__all__ = ["CONDITIONS", "TABLE_METRICS", "no_doc_ctx", "evaluate_reader", "format_em_table", "batches",
           "score_all", "evaluate_ranker", "mean_std", "format_table"]

CONDITIONS = ("gold_only", "gold_in_k", "all_candidates", "random_k", "no_docs", "distractors_only")

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


# ----------------------------------------------------------------------------------------- the reader
def no_doc_ctx(ds: Dataset, pad_id: int = 0, sep_id: int = 3) -> np.ndarray:
    """The question alone as the only encoder sequence: (S, 1, L) = question ⊕ SEP, padded."""
    S, N, L = ds.ctx.shape
    q = ds.question
    n_q = (q != pad_id).sum(1)  # (S,)
    pos = np.arange(L)[None, :]  # (1, L)
    qpad = np.concatenate([q, np.full((S, max(L - q.shape[1], 0)), pad_id, q.dtype)], 1)[:, :L]  # (S, L)
    out = np.where(pos < n_q[:, None], qpad, pad_id)  # (S, L) question tokens are left-packed
    out = np.where(pos == n_q[:, None], sep_id, out)  # (S, L)
    return out[:, None, :]  # (S, 1, L)


def _random_k(S, N, k, rng, dtype):
    u = rng.random((S, N))
    rank = np.argsort(np.argsort(u, axis=1), axis=1)
    return (rank < k).astype(dtype)  # (S, N)


def _gold_in_k(gold, k, rng, dtype):
    S, N = gold.shape
    u = np.where(gold, -1.0, rng.random((S, N)))  # gold first, then distractors in random order
    rank = np.argsort(np.argsort(u, axis=1), axis=1)
    return ((rank < k) | gold).astype(dtype)  # (S, N) every gold document, K in all when K >= #gold


def evaluate_reader(params: dict, reader_cfg: ReaderConfig, dataset: Dataset, k: int, seed: int = 0, *,
                    batch_size: int = 250) -> dict:
    """Greedy-decoding exact match on ``dataset`` under five document conditions, per question type.

    gold_only: the gold documents alone; gold_in_k: the gold documents plus random distractors up to K (what
    a perfect reranker hands over); all_candidates: all N; random_k: K uniformly random candidates;
    no_docs: the question alone as the only sequence (chance); distractors_only: every non-gold candidate.
    Returns {condition: {"all": em, "single_hop": em, "two_hop": em}} plus "n" (question counts),
    "k" and "random_k_has_all_gold" (the share of random-K sets that hold every gold document).
    """
    check_type("evaluate_reader", "dataset", dataset, Dataset)
    S, N, _ = dataset.ctx.shape
    check_int("evaluate_reader", "k", k, lo=1, hi=N)
    dtype = params["tok_emb"].dtype
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6576]))
    masks = {
        "gold_only": dataset.gold.astype(dtype),
        "all_candidates": np.ones((S, N), dtype),
        "random_k": _random_k(S, N, k, rng, dtype),
        "gold_in_k": _gold_in_k(dataset.gold, k, rng, dtype),
        "distractors_only": (~dataset.gold).astype(dtype),
    }
    T = dataset.ans_out.shape[1]
    em = {}
    for cond in CONDITIONS:
        hits = np.zeros(S)
        for lo in range(0, S, batch_size):
            sl = slice(lo, min(lo + batch_size, S))
            if cond == "no_docs":
                ctx, m = no_doc_ctx(dataset.batch(sl), reader_cfg.pad_id), None
            else:
                ctx, m = dataset.ctx[sl], masks[cond][sl]
            pred = greedy_decode(params, reader_cfg, ctx, m, max_len=T)  # (b, T')
            hits[sl] = [exact_match(p, g, pad_id=reader_cfg.pad_id, eos_id=reader_cfg.eos_id)
                        for p, g in zip(np.asarray(pred), dataset.ans_out[sl])]
        em[cond] = hits
    one, two = dataset.hops == 1, dataset.hops == 2
    out = {}
    for cond, h in em.items():
        out[cond] = {"all": float(h.mean()),
                     "single_hop": float(h[one].mean()) if one.any() else None,
                     "two_hop": float(h[two].mean()) if two.any() else None}
    out["n"] = {"all": int(S), "single_hop": int(one.sum()), "two_hop": int(two.sum())}
    out["k"] = int(k)
    out["random_k_has_all_gold"] = float(((masks["random_k"] > 0) | ~dataset.gold).all(1).mean())
    return out


def format_em_table(ev: dict) -> str:
    """A markdown table of evaluate_reader's output."""
    lines = [f"| documents given to the reader | all ({ev['n']['all']}) | single-hop ({ev['n']['single_hop']}) | "
             f"two-hop ({ev['n']['two_hop']}) |", "|---|---:|---:|---:|"]
    names = {"gold_only": "gold only", "gold_in_k": f"gold + random to K={ev['k']}", "all_candidates": "all N candidates", "random_k": f"K={ev['k']} random",
             "no_docs": "none (question only)", "distractors_only": "distractors only"}
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for cond in CONDITIONS:
        r = ev[cond]
        lines.append(f"| {names[cond]} | {fmt(r['all'])} | {fmt(r['single_hop'])} | {fmt(r['two_hop'])} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- the reranker


def batches(n: int, size: int):
    """Index arrays of consecutive chunks of ``size`` covering range(n)."""
    for s in range(0, n, size):
        yield np.arange(s, min(s + size, n))


def score_all(params, data, *, chunk: int = 256, pad_id: int = 0):
    """Reranker scores for every example: (S, N)."""
    out = []
    for idx in batches(len(data), chunk):
        b = data.batch(idx)
        s, _ = reranker_forward(params, b.question, b.docs, pad_id=pad_id)
        out.append(np.asarray(s))
    return np.concatenate(out, axis=0)


def evaluate_ranker(params, data, k: int, *, reader_params=None, reader_cfg=None, scores=None,
                    reader_mask=None, chunk: int = 128) -> dict:
    """Ranking metrics of hard top-K on ``data`` (overall and on indirect gold) and, given a reader, the EM/F1
    of its greedy answer from the top-K documents only. ``scores`` overrides the reranker (e.g. an oracle);
    ``reader_mask`` (S, N) overrides which documents the reader gets (e.g. exactly the gold ones)."""
    if scores is None:
        scores = score_all(params, data)
    out = dict(metrics.ranking_metrics(scores, data.gold, k, indirect=data.indirect))
    if reader_params is not None:
        preds = []
        for idx in batches(len(data), chunk):
            b = data.batch(idx)
            keep = topk_mask(scores[idx], k) if reader_mask is None else reader_mask[idx]  # (B, N) hard, no noise
            keep = keep.astype(reader_params["tok_emb"].dtype)
            preds.append(greedy_decode(reader_params, reader_cfg, b.ctx, keep, max_len=b.ans_out.shape[1]))
        pred = np.concatenate([np.asarray(p) for p in preds], axis=0)
        out["em"] = metrics.mean_exact_match(pred, data.ans_out, pad_id=reader_cfg.pad_id, eos_id=reader_cfg.eos_id)
        out["f1"] = metrics.mean_token_f1(pred, data.ans_out, pad_id=reader_cfg.pad_id, eos_id=reader_cfg.eos_id)
    return out


def mean_std(recs: list) -> dict:
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
