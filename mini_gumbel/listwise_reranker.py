"""A set-aware reranker: the bilinear reranker plus one round of interaction between the candidates (METHOD.md §13).

    w⁰_i = φ(q)ᵀ W φ(d_i)                      the pointwise score (mini_gumbel.reranker, params E and W)
    ψ_i  = bow(d_i) @ X                         the document in its own embedding table X (initialised to E)
    p_ij = softmax_{j ∈ C_i}(β w⁰_j)            C_i: the other real candidates (j ≠ i, padded ones excluded)
    c_i  = Σ_j p_ij ψ_j                         what candidate i sees of the rest, weighted by their scores
    w_i  = w⁰_i + g ψ_iᵀ U c_i,   g = 1 + φ(q)ᵀ a

Why: a two-hop question's answer document shares nothing with the question, only the bridge entity with the
bridge document; a pointwise scorer cannot see that link, one round of context can. U = 0 and a = 0 at
initialisation, so training starts from the pointwise reranker exactly (bit for bit).

Backward, with δ = dL/dw on the real candidates (0 elsewhere) and h_i = U c_i, t_i = ψ_iᵀ h_i:

    dg = Σ_i δ_i t_i,   dt = g δ,   dU = Σ_i dt_i ψ_i c_iᵀ,   dc_i = dt_i Uᵀ ψ_i
    dψ_i = dt_i h_i + Σ_k p_ki dc_k       (ψ_i is read by its own score and by every context it is in)
    dp_ij = dc_i · ψ_j,  dz_ij = p_ij (dp_ij − Σ_k p_ik dp_ik)  (z_ij = β w⁰_j),  dw⁰_j = δ_j + β Σ_i dz_ij
    dX = bow_dᵀ dψ,  da = Σ_b dg φ(q),  dE += bow_qᵀ (dg a);  dw⁰ goes back through reranker_backward.

A candidate with no context (the only real one in its row) has p_i· = 0, c_i = 0 and w_i = w⁰_i.

Dimension letters: B batch, N candidates, Lq question tokens, Ld document tokens, V vocabulary, D embedding width.
"""
from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np

from .backend import get_xp, unbox
from .reranker import RerankerCache, init_reranker, reranker_backward, reranker_forward
from .validate import check_array, check_cache, check_real, fail

__all__ = ["init_listwise_reranker", "listwise_reranker_forward", "listwise_reranker_backward", "ListwiseCache"]

KEYS = ("E", "W", "X", "U", "a")


class ListwiseCache(NamedTuple):
    base: RerankerCache  # the pointwise pass: bags of words, φ(q), φ(d), valid
    psi: object  # (B, N, D) ψ_i
    p: object  # (B, N, N)   context weights, 0 outside C_i
    c: object  # (B, N, D)   c_i
    h: object  # (B, N, D)   U c_i
    t: object  # (B, N)      ψ_iᵀ U c_i
    g: object  # (B,)        1 + φ(q)ᵀ a
    U: object  # (D, D)
    a: object  # (D,)
    beta: float


@contextlib.contextmanager
def _as(fn: str, inner: str):
    """The pointwise reranker's argument errors, raised under this module's function name."""
    try:
        yield
    except (TypeError, ValueError) as e:
        if not str(e).startswith(inner + ": "):
            raise
        raise type(e)(fn + str(e)[len(inner):]) from None


def init_listwise_reranker(vocab_size: int, dim: int, seed: int, *, dtype=np.float64, init: str = "lexical",
                           scale: float = 10.0) -> dict:
    """``{"E", "W"}`` of ``init_reranker`` for the same arguments, ``X = E``, ``U = 0``, ``a = 0``."""
    with _as("init_listwise_reranker", "init_reranker"):
        p = init_reranker(vocab_size, dim, seed, dtype=dtype, init=init, scale=scale)
    D = p["W"].shape[0]
    return {**p, "X": p["E"].copy(), "U": np.zeros((D, D), p["E"].dtype), "a": np.zeros(D, p["E"].dtype)}


def listwise_reranker_forward(params: dict, question, docs, *, pad_id: int = 0, valid=None, beta: float = 1.0):
    """Scores ``w_i`` (module docstring) of every candidate; ``valid == False`` -> ``-inf``, in nobody's context.

    params  {"E": (V, D), "W": (D, D), "X": (V, D), "U": (D, D), "a": (D,)}; question (B, Lq), docs (B, N, Ld),
    valid (B, N) as for reranker_forward; beta > 0 the sharpness of the context weights.
    Returns (scores (B, N), ListwiseCache).
    """
    fn = "listwise_reranker_forward"
    try:  # a dict, or autograd's DictBox while tracing
        E, W, X, U, a = [params[k] for k in KEYS]
    except (KeyError, TypeError, IndexError):
        if not isinstance(params, Mapping):
            fail(fn, "params", params, f"a dict with keys {KEYS} from init_listwise_reranker", TypeError)
        fail(fn, "params.keys()", tuple(params), f"{KEYS} from init_listwise_reranker (missing "
             f"{[k for k in KEYS if k not in params]})")
    beta = check_real(fn, "beta", beta, lo=0.0, lo_open=True)
    with _as(fn, "reranker_forward"):  # checks E, W, question, docs, pad_id and valid
        s0, base = reranker_forward({"E": E, "W": W}, question, docs, pad_id=pad_id, valid=valid)
    V, D = unbox(E).shape
    check_array(fn, "params['X']", X, shape=(V, D), finite=True)
    check_array(fn, "params['U']", U, shape=(D, D), finite=True)
    check_array(fn, "params['a']", a, shape=(D,), finite=True)
    xp = get_xp(s0, X, U, a)
    valid, N = base.valid, base.valid.shape[1]

    w0 = xp.where(valid, s0, 0.0)  # (B, N) finite: no inf reaches the arithmetic below
    ctx = valid[:, None, :] & valid[:, :, None] & ~xp.eye(N, dtype=bool)  # (B, N, N) j ∈ C_i
    z = beta * w0  # (B, N)
    zmax = xp.max(xp.where(ctx, unbox(z)[:, None, :], -xp.inf), axis=-1, keepdims=True)  # (B, N, 1) a constant
    zmax = xp.where(xp.isfinite(zmax), zmax, 0.0)  # (B, N, 1) empty C_i: any shift will do
    e = xp.exp(xp.where(ctx, z[:, None, :] - zmax, -xp.inf))  # (B, N, N) 0 outside C_i, never overflows
    Z = xp.sum(e, axis=-1, keepdims=True)  # (B, N, 1) >= 1 where C_i is not empty
    p = e / xp.where(unbox(Z) > 0, Z, 1.0)  # (B, N, N)
    psi = xp.matmul(base.bow_d, X)  # (B, N, D)
    c = xp.matmul(p, psi)  # (B, N, D)
    h = xp.matmul(c, U.T)  # (B, N, D)
    t = xp.sum(psi * h, axis=-1)  # (B, N)
    g = 1.0 + xp.matmul(base.phi_q, a)  # (B,)
    scores = xp.where(valid, w0 + g[:, None] * t, -xp.inf)  # (B, N)
    return scores, ListwiseCache(base, psi, p, c, h, t, g, U, a, beta)


def listwise_reranker_backward(dscores, cache: ListwiseCache) -> dict:
    """Gradients ``{"E", "W", "X", "U", "a"}`` from ``dscores (B, N)``; entries of invalid candidates are ignored
    (even NaN), those of valid ones must be finite."""
    fn = "listwise_reranker_backward"
    check_cache(fn, cache, ListwiseCache, forward="listwise_reranker_forward")
    base = cache.base
    B, N = base.valid.shape
    check_array(fn, "dscores", dscores, shape=(B, N))
    xp = get_xp(dscores, cache.U)
    V, D = base.bow_q.shape[1], cache.U.shape[0]
    ds = xp.where(base.valid, dscores, 0.0)  # (B, N)
    if not bool(xp.isfinite(ds).all()):
        fail(fn, "dscores", dscores, "finite values on every valid candidate (NaN or inf found)")
    # w = w0 + g t
    dg = xp.sum(ds * cache.t, axis=-1)  # (B,)
    dt = ds * cache.g[:, None]  # (B, N)
    # t = Σ_d ψ h,  h = c Uᵀ
    dh = dt[:, :, None] * cache.psi  # (B, N, D)
    dU = xp.matmul(dh.reshape(B * N, D).T, cache.c.reshape(B * N, D))  # (D, D)
    dc = xp.matmul(dh, cache.U)  # (B, N, D)
    # c = p ψ
    dp = xp.matmul(dc, cache.psi.transpose(0, 2, 1))  # (B, N, N)
    dpsi = dt[:, :, None] * cache.h + xp.matmul(cache.p.transpose(0, 2, 1), dc)  # (B, N, D)
    # p = softmax over C_i of z = β w0; z_j enters every row i
    dz = cache.p * (dp - xp.sum(cache.p * dp, axis=-1, keepdims=True))  # (B, N, N)
    dw0 = ds + cache.beta * xp.sum(dz, axis=1)  # (B, N)
    # g = 1 + φ(q)·a; ψ = bow_d X: one-hot matmuls, no scatter
    grads = reranker_backward(dw0, base)  # dE, dW through w0
    dE = grads["E"] + xp.matmul(base.bow_q.T, dg[:, None] * cache.a)  # (V, D)
    dX = xp.matmul(base.bow_d.reshape(B * N, V).T, dpsi.reshape(B * N, D))  # (V, D)
    return {"E": dE, "W": grads["W"], "X": dX, "U": dU, "a": xp.matmul(dg, base.phi_q)}
