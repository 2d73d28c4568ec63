"""The bilinear reranker: a bag-of-embeddings question/document scorer.

    φ(x) = mean of the token embeddings E[x_l] over the non-pad tokens of x        (D,)
    w_i  = φ(q)ᵀ W φ(d_i)                                                         score of candidate i

Dimension letters: B batch, N candidates, Lq question tokens, Ld document tokens, V vocabulary,
D embedding width.

φ is linear in E through the normalised bag of words ``bow(x)_v = count_v(x) / |x|`` (pad excluded):
``φ(x) = bow(x) @ E``. The backward therefore needs no scatter: ``dE = bowᵀ @ dφ`` is the one-hot matmul
the house style asks for (no ``np.add.at``).

Initialisation (the "pretrained prior"; docs/method.md §7.2 says starting from a sensible reranker helps):

* ``init="lexical"`` (default): E's rows are the standard basis vectors when ``dim >= vocab_size``
  (exactly one-hot: ``E = I[:V, :D]``) and otherwise random unit vectors, nearly orthogonal when D is
  large (``e_a·e_b ~ N(0, 1/D)``). ``W = scale · I``. With one-hot rows
  ``φ(q)·φ(d) = Σ_v count_v(q) count_v(d) / (|q| |d|)``, i.e. the number of shared words divided by the
  product of the lengths, so the untrained reranker is a length-normalised word-overlap scorer.
  The default ``scale = 10`` is set for the built-in data (mini_gumbel.data: questions of ~2-3 tokens,
  documents of ~3): one shared word is then worth 10/(|q||d|) ≈ 1.1-1.7 score units and std(w) within a
  10-candidate set is ≈ 0.65, so κ·std(w) lands in the 1-5 range the Gumbel sweep wants for κ ≈ 1.5-8
  (docs/method.md §7) without saturating the softmaxes; for longer texts scale it with the typical |q|·|d|.
  With ``dim < vocab_size`` the overlap is approximate (cross-talk of order 1/sqrt(D) per word
  pair); prefer ``dim >= vocab_size`` for an exact lexical prior.
* ``init="random"`` (ablation: no prior): E's rows are random unit vectors and W has i.i.d.
  ``N(0, (scale/√D)²)`` entries, which gives W the same Frobenius norm as ``scale · I`` but no preference
  for matching words.

The pad row of E is zero in both cases (pad tokens are never averaged in, so it is never read and gets
no gradient).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .backend import get_xp
from .validate import (check_array, check_cache, check_choice, check_float_dtype, check_int, check_real,
                       check_seed, check_token_ids, fail)

__all__ = ["init_reranker", "reranker_forward", "reranker_backward", "RerankerCache"]


class RerankerCache(NamedTuple):
    bow_q: object  # (B, V)    normalised bag of words of the question (constant, no gradient)
    bow_d: object  # (B, N, V) normalised bag of words of each document
    phi_q: object  # (B, D)    φ(q)
    phi_d: object  # (B, N, D) φ(d_i)
    u: object  # (B, D)        φ(q) @ W
    W: object  # (D, D)
    valid: object  # (B, N) bool; False -> score -inf, no gradient


def init_reranker(
    vocab_size: int,
    dim: int,
    seed: int,
    *,
    dtype=np.float64,
    pad_id: int = 0,
    init: str = "lexical",
    scale: float = 10.0,
) -> dict:
    """Parameters ``{"E": (V, D), "W": (D, D)}``; see the module docstring for the two schemes."""
    fn = "init_reranker"
    check_int(fn, "vocab_size", vocab_size, lo=2)
    check_int(fn, "dim", dim, lo=1)
    check_int(fn, "pad_id", pad_id, lo=0, hi=vocab_size - 1)
    check_choice(fn, "init", init, ("lexical", "random"))
    scale = check_real(fn, "scale", scale, lo=0.0, lo_open=True)
    dtype = check_float_dtype(fn, "dtype", dtype)
    rng = np.random.default_rng(check_seed(fn, seed))
    V, D = int(vocab_size), int(dim)

    if init == "lexical" and D >= V:
        E = np.eye(V, D)  # (V, D) exact one-hot rows: φ(q)·φ(d) = overlap / (|q||d|)
    else:
        E = rng.standard_normal((V, D))  # (V, D)
        E /= np.linalg.norm(E, axis=1, keepdims=True)  # unit rows, nearly orthogonal for large D
    E[pad_id] = 0.0  # never read: pad tokens are excluded from the mean

    if init == "lexical":
        W = scale * np.eye(D)  # (D, D)
    else:
        W = rng.standard_normal((D, D)) * (scale / np.sqrt(D))  # (D, D) same Frobenius norm as scale*I
    return {"E": E.astype(dtype), "W": W.astype(dtype)}


def _bag_of_words(xp, tokens, pad_id: int, V: int, dtype):
    """Normalised counts ``count_v / |x|`` over non-pad tokens, via a one-hot sum (no gradient here)."""
    keep = tokens != pad_id  # (..., L)
    onehot = (tokens[..., None] == xp.arange(V)) & keep[..., None]  # (..., L, V)
    counts = onehot.sum(axis=-2).astype(dtype)  # (..., V)
    n = keep.sum(axis=-1, keepdims=True).astype(dtype)  # (..., 1)
    return counts / xp.maximum(n, 1)  # (..., V); all-pad rows are rejected before this


def reranker_forward(params: dict, question, docs, *, pad_id: int = 0, valid=None):
    """Scores ``w_i = φ(q)ᵀ W φ(d_i)`` of every candidate; ``valid == False`` -> ``-inf``.

    params    {"E": (V, D), "W": (D, D)}
    question  (B, Lq) int, at least one non-pad token per row
    docs      (B, N, Ld) int, at least one non-pad token in every valid document
    valid     (B, N) bool or None (all valid)
    Returns (scores (B, N), RerankerCache).
    """
    fn = "reranker_forward"
    try:  # a dict, or autograd's DictBox while tracing
        E, W = params["E"], params["W"]
    except (KeyError, TypeError, IndexError):
        fail(fn, "params", params, "a dict {'E': (V, D), 'W': (D, D)} from init_reranker")
    Er = check_array(fn, "params['E']", E, ndim=2, finite=True)  # NaN parameters would give NaN scores
    check_array(fn, "params['W']", W, shape=(Er.shape[1], Er.shape[1]), finite=True)
    V = Er.shape[0]
    qr = check_token_ids(fn, "question", question, ndim=2, vocab_size=V)
    dr = check_token_ids(fn, "docs", docs, ndim=3, vocab_size=V)
    B, N = dr.shape[0], dr.shape[1]
    if qr.shape[0] != B:
        fail(fn, "question.shape", tuple(qr.shape), f"(B={B}, Lq) with the batch size of docs.shape={tuple(dr.shape)}")
    check_int(fn, "pad_id", pad_id, lo=0, hi=V - 1)
    xp = get_xp(E, W, qr, dr)
    if valid is None:
        valid = xp.ones((B, N), dtype=bool)  # (B, N)
    else:
        valid = check_array(fn, "valid", valid, shape=(B, N), kind="b")
    if bool(((qr != pad_id).sum(axis=-1) == 0).any()):
        fail(fn, "question", question, "at least one non-pad token in every row")
    if bool((((dr != pad_id).sum(axis=-1) == 0) & valid).any()):
        fail(fn, "docs", docs, "at least one non-pad token in every valid candidate (mark the others valid=False)")

    dtype = Er.dtype
    bow_q = _bag_of_words(xp, qr, pad_id, V, dtype)  # (B, V)
    bow_d = _bag_of_words(xp, dr, pad_id, V, dtype)  # (B, N, V)
    phi_q = xp.matmul(bow_q, E)  # (B, D)
    phi_d = xp.matmul(bow_d, E)  # (B, N, D)
    u = xp.matmul(phi_q, W)  # (B, D)
    raw_scores = xp.matmul(phi_d, u[:, :, None])[:, :, 0]  # (B, N)
    scores = xp.where(valid, raw_scores, -xp.inf)  # (B, N)
    return scores, RerankerCache(bow_q, bow_d, phi_q, phi_d, u, W, valid)


def reranker_backward(dscores, cache: RerankerCache) -> dict:
    """Gradients ``{"E": (V, D), "W": (D, D)}`` of the loss from ``dscores (B, N)``.

    Invalid (-inf) candidates get no gradient: whatever ``dscores`` holds there (even NaN) is ignored; on a
    valid candidate it must be finite.
    """
    fn = "reranker_backward"
    check_cache(fn, cache, RerankerCache, forward="reranker_forward")
    B, N = cache.valid.shape
    check_array(fn, "dscores", dscores, shape=(B, N))
    xp = get_xp(dscores, cache.W)
    V, D = cache.bow_q.shape[1], cache.W.shape[0]
    ds = xp.where(cache.valid, dscores, 0.0)  # (B, N)   scores = where(valid, raw, -inf)
    if not bool(xp.isfinite(ds).all()):
        fail(fn, "dscores", dscores, "finite values on every valid candidate (NaN or inf found)")
    # raw_scores[b, n] = φ_d[b, n] · u[b]
    dphi_d = ds[:, :, None] * cache.u[:, None, :]  # (B, N, D)
    du = xp.matmul(ds[:, None, :], cache.phi_d)[:, 0, :]  # (B, D)
    # u = φ_q @ W
    dW = xp.matmul(cache.phi_q.T, du)  # (D, D)
    dphi_q = xp.matmul(du, cache.W.T)  # (B, D)
    # φ = bow @ E for the question and every document: one-hot matmuls, no scatter
    dE = xp.matmul(cache.bow_q.T, dphi_q) + xp.matmul(
        cache.bow_d.reshape(B * N, V).T, dphi_d.reshape(B * N, D)
    )  # (V, D)
    return {"E": dE, "W": dW}
