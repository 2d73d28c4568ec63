"""Evaluation and tables: the reader's exact match under document conditions, the reranker's ranking
metrics of its hard top-K (and the reader's answer from those K), and the markdown tables of both.

Dimension letters: S examples, N candidates, K kept, L tokens per encoder sequence, T answer tokens.
"""
from __future__ import annotations

import numpy as np

from .. import metrics
from ..data import GOLD_BRIDGE, TARGET, Dataset
from ..gumbel import tau_kappa_issue, topk_mask
from ..reader import ReaderConfig
from .rankers import ranker_forward
from ..validate import check_int, check_real, check_type, fail
from ..gumbel_reranking import reader_memory_of
from .readers import no_doc_batch, predict, reader_inputs

__all__ = ["CONDITIONS", "TABLE_METRICS", "evaluate_reader", "format_em_table", "batches",
           "score_all", "evaluate_ranker", "mean_std", "format_table", "exact_match_rows", "check_kappa_grid"]

CONDITIONS = ("all_candidates", "gold_in_k", "gold_only", "without_bridge_doc", "answer_doc_alone", "random_k",
              "no_docs", "distractors_only")

# (key in the metrics dict, column title); the key's @k suffix is filled in with K.
TABLE_METRICS = (
    ("recall@{k}", "Recall@{k}"),
    ("all_gold@{k}", "all-gold@{k}"),
    ("mrr", "MRR"),
    ("ndcg@{k}", "NDCG@{k}"),
    ("indirect_recall@{k}", "indirect Recall@{k}"),
    ("em", "EM"),
    ("em_two_hop", "two-hop EM"),
)


# ----------------------------------------------------------------------------------------- the reader
def exact_match_rows(pred, gold, *, pad_id: int, eos_id: int) -> np.ndarray:
    """metrics.exact_match of every row at once, (S,) float: each sequence cut at its first EOS, its pad
    tokens dropped (anywhere), then compared. pred (S, T'), gold (S, T) int."""
    def canon(a, T):
        a = np.asarray(a)
        after = np.cumsum(a == eos_id, axis=1) > 0  # (S, t) at or after the first EOS
        keep = ~after & (a != pad_id)  # (S, t)
        order = np.argsort(~keep, axis=1, kind="stable")  # kept tokens first, in order
        packed = np.where(np.take_along_axis(keep, order, 1), np.take_along_axis(a, order, 1), -1)  # (S, t)
        return np.concatenate([packed, np.full((a.shape[0], T - a.shape[1]), -1, a.dtype)], axis=1)

    pred, gold = np.asarray(pred), np.asarray(gold)
    T = max(pred.shape[1], gold.shape[1])
    return (canon(pred, T) == canon(gold, T)).all(axis=1).astype(np.float64)


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
    """Greedy-decoding exact match on ``dataset`` under the document conditions of CONDITIONS, per
    question type.

    all_candidates: all N; gold_in_k: the gold documents plus random distractors up to K (what a perfect
    reranker hands over); gold_only: the gold documents alone; without_bridge_doc: all N but gold document 1
    (two-hop: the bridge is gone, so a reader that uses it drops to guessing among the r2 facts);
    answer_doc_alone: gold document 2 plus only documents without the outer relation (gold 1 and the target
    distractors removed: can the reader find the answer without the bridge's help, when nothing competes?);
    random_k: K uniformly random candidates; no_docs: the question alone (chance); distractors_only: every
    non-gold candidate. Returns {condition: {"all": em, "single_hop": em, "two_hop": em}} plus "n"
    (question counts), "k" and "random_k_has_all_gold" (the share of random-K sets holding every gold one).
    """
    check_type("evaluate_reader", "dataset", dataset, Dataset)
    S, N, _ = dataset.ctx.shape
    check_int("evaluate_reader", "k", k, lo=1, hi=N)
    dtype = params["tok_emb"].dtype
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6576]))
    bridge_doc = dataset.kind == GOLD_BRIDGE  # (S, N)
    masks = {
        "all_candidates": np.ones((S, N), dtype),
        "gold_in_k": _gold_in_k(dataset.gold, k, rng, dtype),
        "gold_only": dataset.gold.astype(dtype),
        "without_bridge_doc": (~bridge_doc).astype(dtype),
        "answer_doc_alone": (~bridge_doc & (dataset.kind != TARGET)).astype(dtype),
        "random_k": _random_k(S, N, k, rng, dtype),
        "distractors_only": (~dataset.gold).astype(dtype),
    }
    T = dataset.ans_out.shape[1]
    em = {cond: np.zeros(S) for cond in CONDITIONS}
    for lo in range(0, S, batch_size):
        sl = slice(lo, min(lo + batch_size, S))
        b = dataset.batch(sl)
        x = reader_inputs(b, reader_cfg)
        memory = reader_memory_of(params, reader_cfg, x)  # the encoder states no mask reaches: once per chunk
        for cond in CONDITIONS:
            if cond == "no_docs":
                pred = predict(params, reader_cfg, no_doc_batch(b, reader_cfg), None, max_len=T)  # (b, T')
            else:
                pred = predict(params, reader_cfg, x, masks[cond][sl], max_len=T, memory=memory)  # (b, T')
            em[cond][sl] = exact_match_rows(np.asarray(pred), dataset.ans_out[sl], pad_id=reader_cfg.pad_id,
                                            eos_id=reader_cfg.eos_id)
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
    """A markdown table of evaluate_reader's output: exact match in percent (question counts in the header)."""
    lines = [f"| documents given to the reader (EM, %) | all ({ev['n']['all']}) | single-hop ({ev['n']['single_hop']}) | "
             f"two-hop ({ev['n']['two_hop']}) |", "|---|---:|---:|---:|"]
    names = {"all_candidates": "all N candidates", "gold_in_k": f"gold + random to K={ev['k']}",
             "gold_only": "gold only", "without_bridge_doc": "all but the bridge document (gold 1)",
             "answer_doc_alone": "gold 2, no other outer-relation document, no gold 1",
             "random_k": f"K={ev['k']} random", "no_docs": "none (question only)",
             "distractors_only": "distractors only"}
    fmt = lambda x: "-" if x is None else f"{100 * x:.1f}"  # noqa: E731
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
        s, _ = ranker_forward(params, b.question, b.docs, pad_id=pad_id)
        out.append(np.asarray(s))
    return np.concatenate(out, axis=0)


def check_kappa_grid(fn: str, taus, kappa_stds, w_std: float) -> None:
    """Every point (τ, κ = c / std(w)) of a τ × κ·std(w) grid must be usable by the relaxed top-K on the
    reranker's float64 scores (gumbel.check_tau_kappa); else a ValueError naming ``taus`` or ``kappa_stds``
    and the value, checked before any training."""
    w_std = check_real(fn, "w_std", w_std, lo=0.0, lo_open=True)
    for name, values in (("taus", taus), ("kappa_stds", kappa_stds)):
        check_type(fn, name, values, (list, tuple), "a non-empty list of numbers > 0")
        if not values:
            fail(fn, name, values, "a non-empty list of numbers > 0")
        for v in values:
            check_real(fn, name, v, lo=0.0, lo_open=True)
    for c in kappa_stds:
        for t in taus:
            issue = tau_kappa_issue(float(t), float(c) / w_std)
            if issue is not None:
                name, value = ("kappa_stds", c) if issue[0] == "kappa" else ("taus", t)
                fail(fn, name, value, f"a value with which tau={t:g} and kappa = {c:g}/std(w) = {c / w_std:.3g} "
                     f"(std(w) = {w_std:.4g}) are usable: {issue[1]}")


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
            preds.append(predict(reader_params, reader_cfg, reader_inputs(b, reader_cfg), keep,
                                 max_len=b.ans_out.shape[1]))
        pred = np.concatenate([np.asarray(p) for p in preds], axis=0)
        ids = dict(pad_id=reader_cfg.pad_id, eos_id=reader_cfg.eos_id)
        out["em"] = float(exact_match_rows(pred, data.ans_out, **ids).mean())
        out["f1"] = metrics.mean_token_f1(pred, data.ans_out, **ids)  # = EM here: every answer is one token
        two = data.hops == 2
        if two.any():
            out["em_two_hop"] = float(exact_match_rows(pred[two], data.ans_out[two], **ids).mean())
    return out


def mean_std(recs: list) -> dict:
    keys = [k for k in recs[0] if isinstance(recs[0][k], (int, float)) and not isinstance(recs[0][k], bool)]
    out = {}
    for key in keys:
        vals = np.array([r[key] for r in recs], dtype=np.float64)
        finite = vals[np.isfinite(vals)]  # a seed whose value is not finite is left out of both
        out[key] = {"mean": float(finite.mean()) if len(finite) else None,  # None: JSON has no NaN
                    "std": float(finite.std()) if len(finite) > 1 else (0.0 if len(finite) else None),
                    "n": len(vals)}
    return out


def format_table(summary: dict, k: int, seeds, *, reader: str = "two_pass", quick: bool = False) -> str:
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
            if mean is None:  # no finite value over the seeds
                cells.append("–")
                continue
            cells.append(f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if n > 1 else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    spread = f"mean ± std over reranker seeds {list(seeds)}" if len(seeds) > 1 else f"reranker seed {seeds[0]}"
    lines.append(f"Test split, percent; hard top-{k} of the reranker's scores, the {reader.replace('_', '-')} reader "
                 f"answering from those {k}; {spread} (the oracle is deterministic).")
    if quick:
        lines.append("--quick: a smoke test of every code path; its numbers mean nothing.")
    return "\n".join(lines)
