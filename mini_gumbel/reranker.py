"""The bilinear reranker: a bag-of-embeddings question/document scorer.

    φ(x) = mean of the token embeddings E[x_l] over the non-pad tokens of x        (D,)
    w_i  = φ(q)ᵀ W φ(d_i)                                                         score of candidate i

Dimension letters: B batch, N candidates, Lq question tokens, Ld document tokens, V vocabulary,
D embedding width.

φ is linear in E through the normalised bag of words ``bow(x)_v = count_v(x) / |x|`` (pad excluded):
``φ(x) = bow(x) @ E``. The backward therefore needs no scatter: ``dE = bowᵀ @ dφ`` is the one-hot matmul
the house style asks for (no ``np.add.at``).

Initialisation (the "pretrained prior"; METHOD.md §7 says starting from a sensible reranker helps):

* ``init="lexical"`` (default): E's rows are the standard basis vectors when ``dim >= vocab_size``
  (exactly one-hot: ``E = I[:V, :D]``) and otherwise random unit vectors, nearly orthogonal when D is
  large (``e_a·e_b ~ N(0, 1/D)``). ``W = scale · I``. With one-hot rows
  ``φ(q)·φ(d) = Σ_v count_v(q) count_v(d) / (|q| |d|)``, i.e. the number of shared words divided by the
  product of the lengths, so the untrained reranker is a length-normalised word-overlap scorer.
  The default ``scale = 10`` is set for the built-in data (mini_gumbel.data: questions of ~2-3 tokens,
  documents of ~3): one shared word is then worth 10/(|q||d|) ≈ 1.1-1.7 score units and std(w) within a
  10-candidate set is ≈ 0.65, so κ·std(w) lands in the 1-5 range the Gumbel sweep wants for κ ≈ 1.5-8
  (METHOD.md §7) without saturating the softmaxes; for longer texts scale it with the typical |q|·|d|.
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

from .backend import get_xp, is_traced

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
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 2:
        raise ValueError(f"init_reranker: vocab_size={vocab_size!r}; expected an int >= 2")
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or dim < 1:
        raise ValueError(f"init_reranker: dim={dim!r}; expected an int >= 1")
    if not isinstance(pad_id, (int, np.integer)) or not 0 <= pad_id < vocab_size:
        raise ValueError(f"init_reranker: pad_id={pad_id!r}; expected an int in [0, vocab_size={vocab_size})")
    if init not in ("lexical", "random"):
        raise ValueError(f"init_reranker: init={init!r}; expected 'lexical' or 'random'")
    if not (isinstance(scale, (int, float, np.floating)) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"init_reranker: scale={scale!r}; expected a finite float > 0")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"init_reranker: dtype={dtype}; expected a floating dtype (float64 or float32)")
    rng = np.random.default_rng(seed)
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


def _raw(a):
    """The value under an autograd box (for validation only; never used in the differentiated path)."""
    while is_traced(a):
        a = a._value
    return a


def _check_tokens(name: str, x, ndim: int, V: int) -> None:
    if not hasattr(x, "dtype") or np.dtype(x.dtype).kind not in "iu":
        raise TypeError(f"reranker_forward: {name} has dtype {getattr(x, 'dtype', type(x).__name__)}; expected integer token ids")
    if x.ndim != ndim:
        raise ValueError(f"reranker_forward: {name}.shape={tuple(x.shape)}; expected {ndim} dimensions")
    if x.size and (bool((x < 0).any()) or bool((x >= V).any())):
        raise ValueError(
            f"reranker_forward: {name} has token ids in [{int(x.min())}, {int(x.max())}]; expected ids in [0, V={V})"
        )


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
    try:  # a dict, or autograd's DictBox while tracing
        E, W = params["E"], params["W"]
    except (KeyError, TypeError, IndexError):
        raise ValueError(
            f"reranker_forward: params of type {type(params).__name__} lacks 'E' or 'W'; expected "
            "{'E': (V, D), 'W': (D, D)}"
        ) from None
    if E.ndim != 2 or W.ndim != 2 or W.shape != (E.shape[1], E.shape[1]):
        raise ValueError(
            f"reranker_forward: params E.shape={tuple(E.shape)}, W.shape={tuple(W.shape)}; expected E (V, D) and W (D, D)"
        )
    V = E.shape[0]
    qr, dr = _raw(question), _raw(docs)
    _check_tokens("question", qr, 2, V)
    _check_tokens("docs", dr, 3, V)
    B, N = dr.shape[0], dr.shape[1]
    if qr.shape[0] != B:
        raise ValueError(f"reranker_forward: question.shape={tuple(qr.shape)} and docs.shape={tuple(dr.shape)}; batch sizes differ")
    if not isinstance(pad_id, (int, np.integer)) or not 0 <= pad_id < V:
        raise ValueError(f"reranker_forward: pad_id={pad_id!r}; expected an int in [0, V={V})")
    xp = get_xp(E, W, qr, dr)
    if valid is None:
        valid = xp.ones((B, N), dtype=bool)  # (B, N)
    else:
        valid = _raw(valid)
        if getattr(valid, "dtype", None) != np.bool_ or tuple(valid.shape) != (B, N):
            raise ValueError(
                f"reranker_forward: valid has shape {tuple(getattr(valid, 'shape', ()))} and dtype "
                f"{getattr(valid, 'dtype', type(valid).__name__)}; expected a ({B}, {N}) bool array"
            )
    if bool(((qr != pad_id).sum(axis=-1) == 0).any()):
        raise ValueError("reranker_forward: question has a row with only pad tokens; expected at least one token per question")
    if bool((((dr != pad_id).sum(axis=-1) == 0) & valid).any()):
        raise ValueError(
            "reranker_forward: docs has a valid candidate with only pad tokens; mark it invalid with valid=False"
        )

    dtype = _raw(E).dtype
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

    Invalid (-inf) candidates get no gradient: whatever ``dscores`` holds there (even NaN) is ignored.
    """
    B, N = cache.valid.shape
    if tuple(dscores.shape) != (B, N):
        raise ValueError(f"reranker_backward: dscores.shape={tuple(dscores.shape)}; expected ({B}, {N}) like the scores")
    xp = get_xp(dscores, cache.W)
    V, D = cache.bow_q.shape[1], cache.W.shape[0]
    ds = xp.where(cache.valid, dscores, 0.0)  # (B, N)   scores = where(valid, raw, -inf)
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
