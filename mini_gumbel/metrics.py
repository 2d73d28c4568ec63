"""Ranking and answer metrics (docs/method.md §9), computed on the host with NumPy.

Dimension letters: S questions, N candidates, K kept documents.

Ranking: the hard top-K of the scores, no noise. Ties are broken by the lower index (a stable sort of
``-scores``, the rule of ``mini_gumbel.gumbel.topk_mask``); ``-inf`` (padding) ranks last. Per question,
with G its gold documents and rank(i) = 1 for the best-scored candidate:

    recall@K    |G ∩ topK| / |G|
    all_gold@K  1 if G ⊆ topK else 0
    mrr         1 / min_{i ∈ G} rank(i)                          (over the full ranking, not cut at K)
    ndcg@K      DCG / IDCG,  DCG = Σ_{i ∈ G, rank(i) <= K} 1 / log2(rank(i) + 1),
                IDCG = Σ_{r=1}^{min(K, |G|)} 1 / log2(r + 1)      (binary gains)

each averaged over the questions that have at least one gold document (``n_questions``; the others are
counted in ``n_no_gold``). With ``indirect`` (gold documents that do not contain the answer) the same
recall@K and all_gold@K are computed with G replaced by the indirect gold documents, averaged over the
questions that have at least one (``n_indirect_questions``). An average over no question is NaN.

Answers: exact match and SQuAD-style token F1 on token-id sequences, after cutting each sequence at its
first EOS and dropping pad tokens. F1 counts common tokens as a multiset; two empty answers score 1.
"""
from __future__ import annotations

import math
from collections import Counter
from typing import Sequence

import numpy as np

from .backend import to_numpy
from .validate import check_int, fail

__all__ = ["ranking_metrics", "exact_match", "token_f1", "mean_exact_match", "mean_token_f1"]


def _host_array(fn: str, name: str, x) -> np.ndarray:
    """``x`` as a host NumPy array; a scalar, a string or a ragged/object sequence is a TypeError."""
    if isinstance(x, (str, bytes)) or np.isscalar(x) or x is None:
        fail(fn, name, x, "an array", TypeError)
    try:
        a = np.asarray(to_numpy(x))
    except (TypeError, ValueError):  # ragged nested sequences
        fail(fn, name, x, "an array (a rectangular sequence of numbers)", TypeError)
    if a.dtype.kind not in "biuf":
        fail(fn, f"{name}.dtype", a.dtype, "a numeric or bool dtype", TypeError)
    return a


def _check_mask(fn: str, name: str, x, shape) -> np.ndarray:
    m = _host_array(fn, name, x)
    if m.dtype != np.bool_:
        fail(fn, f"{name}.dtype", m.dtype, "bool", TypeError)
    if m.shape != shape:
        fail(fn, f"{name}.shape", m.shape, f"{shape} like scores")
    return m


def _mean(x: np.ndarray) -> float:
    return float(x.mean()) if x.size else math.nan


def ranking_metrics(scores, gold, k: int, *, indirect=None) -> dict:
    """recall@k, all_gold@k, mrr, ndcg@k (and indirect_recall@k, indirect_all_gold@k) -> dict of floats.

    scores (S, N) float (-inf = padding), gold (S, N) bool, indirect (S, N) bool or None (must be a
    subset of gold). Keys carry the value of k: ``f"recall@{k}"`` etc.; counts are ints.
    """
    fn = "ranking_metrics"
    s = _host_array(fn, "scores", scores)
    if s.dtype.kind not in "fiu":
        fail(fn, "scores.dtype", s.dtype, "a real dtype", TypeError)
    if s.ndim != 2:
        fail(fn, "scores.shape", s.shape, "(S, N)")
    s = s.astype(np.float64)
    if np.isnan(s).any():
        fail(fn, "scores", s, "real scores, no NaN (-inf marks padding)")
    S, N = s.shape
    g = _check_mask(fn, "gold", gold, (S, N))
    k = check_int(fn, "k", k, lo=1, hi=N)

    order = np.argsort(-s, axis=1, kind="stable")  # (S, N) best first, ties -> lower index
    rank = np.argsort(order, axis=1, kind="stable")  # (S, N) 0-based rank of each candidate
    top = rank < k  # (S, N)
    n_gold = g.sum(axis=1)  # (S,)
    has = n_gold > 0  # (S,)

    hits = (g & top).sum(axis=1)  # (S,)
    recall = hits[has] / n_gold[has]  # (S',)
    all_gold = (hits == n_gold)[has].astype(np.float64)  # (S',)
    first = np.where(g, rank, N).min(axis=1)  # (S,) 0-based rank of the best gold
    mrr = 1.0 / (first[has] + 1.0)  # (S',)
    disc = 1.0 / np.log2(np.arange(N) + 2.0)  # (N,) discount of 0-based rank r: 1 / log2(r + 2)
    dcg = np.where(g & top, disc[rank], 0.0).sum(axis=1)  # (S,)
    idcg = np.cumsum(disc)[np.minimum(n_gold, k) - 1]  # (S,) garbage where n_gold = 0, never used
    ndcg = dcg[has] / idcg[has]  # (S',)

    out = {
        f"recall@{k}": _mean(recall),
        f"all_gold@{k}": _mean(all_gold),
        "mrr": _mean(mrr),
        f"ndcg@{k}": _mean(ndcg),
        "n_questions": int(has.sum()),
        "n_no_gold": int((~has).sum()),
    }
    if indirect is not None:
        ind = _check_mask(fn, "indirect", indirect, (S, N))
        if (ind & ~g).any():
            fail(fn, "indirect", ind, "a subset of gold (it marks a document that is not gold)")
        n_ind = ind.sum(axis=1)  # (S,)
        has_ind = n_ind > 0  # (S,)
        hits_ind = (ind & top).sum(axis=1)  # (S,)
        out[f"indirect_recall@{k}"] = _mean(hits_ind[has_ind] / n_ind[has_ind])
        out[f"indirect_all_gold@{k}"] = _mean((hits_ind == n_ind)[has_ind].astype(np.float64))
        out["n_indirect_questions"] = int(has_ind.sum())
    return out


def _strip(seq, pad_id: int, eos_id: int, name: str) -> list:
    fn, arg = name.split(": ")
    a = _host_array(fn, arg, seq)
    if a.size and a.dtype.kind not in "iu":
        fail(fn, f"{arg}.dtype", a.dtype, "integer token ids", TypeError)
    if a.ndim != 1:
        fail(fn, f"{arg}.shape", a.shape, "a 1-D sequence of token ids")
    check_int(fn, "pad_id", pad_id)
    check_int(fn, "eos_id", eos_id)
    out = []
    for t in a.tolist():
        if t == eos_id:
            break
        if t != pad_id:
            out.append(t)
    return out


def exact_match(pred, gold, *, pad_id: int = 0, eos_id: int = 2) -> float:
    """1.0 if the two token sequences are equal after cutting at EOS and dropping pads, else 0.0."""
    return float(_strip(pred, pad_id, eos_id, "exact_match: pred") == _strip(gold, pad_id, eos_id, "exact_match: gold"))


def token_f1(pred, gold, *, pad_id: int = 0, eos_id: int = 2) -> float:
    """SQuAD token F1: harmonic mean of precision and recall of the common token multiset."""
    p = _strip(pred, pad_id, eos_id, "token_f1: pred")
    g = _strip(gold, pad_id, eos_id, "token_f1: gold")
    if not p or not g:
        return float(p == g)  # both empty: 1; one empty: 0
    same = sum((Counter(p) & Counter(g)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(p), same / len(g)
    return 2 * precision * recall / (precision + recall)


def _pairs(preds, golds, fn: str):
    for name, x in (("preds", preds), ("golds", golds)):
        if (isinstance(x, (str, bytes)) or not hasattr(x, "__len__")
                or (isinstance(x, np.ndarray) and x.ndim == 0)):
            fail(fn, name, x, "a sequence of token-id sequences (an (S, T) array or a list of lists)", TypeError)
    if len(preds) != len(golds):
        raise ValueError(f"{fn}: {len(preds)} predictions and {len(golds)} gold answers; expected as many")
    if len(preds) == 0:
        raise ValueError(f"{fn}: no predictions; expected at least one")
    return zip(preds, golds)


def mean_exact_match(preds: Sequence, golds: Sequence, *, pad_id: int = 0, eos_id: int = 2) -> float:
    """Mean exact match over rows: preds (S, T') and golds (S, T) arrays or sequences of sequences."""
    return float(np.mean([exact_match(p, g, pad_id=pad_id, eos_id=eos_id) for p, g in _pairs(preds, golds, "mean_exact_match")]))


def mean_token_f1(preds: Sequence, golds: Sequence, *, pad_id: int = 0, eos_id: int = 2) -> float:
    """Mean token F1 over rows: preds (S, T') and golds (S, T) arrays or sequences of sequences."""
    return float(np.mean([token_f1(p, g, pad_id=pad_id, eos_id=eos_id) for p, g in _pairs(preds, golds, "mean_token_f1")]))
