"""Gumbel Reranking in one screen: the training step of Huang et al. (ACL 2025), docs/method.md §1.

A reranker scores each of N candidate documents on its own. Training needs no relevance label: sample a
relaxed top-K mask of the scores with the Gumbel trick, let a *frozen* reader read all N documents with the
mask inside its cross-attention (Differentiable Masked Attention), and backpropagate the reader's answer
loss through the reader, through the mask, into the scores and the reranker. At inference: the hard top-K
of the scores, no noise. Every line below is a forward/backward pair you can open and check:

    noise                     gumbel.gumbel_noise                  G = -log(-log U)
    relaxed top-K mask        gumbel.relaxed_topk_forward          M_i = max_j softmax((κ w + G^(j)) / τ)_i
    frozen reader with DMA    two_pass_reader.two_pass_forward     a_u ∝ M_doc(u) exp(s_u), in both reads
                              (or reader.reader_forward, the one-pass FiD control)
    mask gradient             two_pass_reader.two_pass_backward(param_grads=False)
    score gradient            gumbel.relaxed_topk_backward
    reranker gradient         reranker.reranker_backward

Dimension letters: B batch, N candidates, K kept documents.

    loss, grads = gumbel_reranking_step(reranker_params, question, docs, reader_params, reader_cfg, batch, rng,
                                        k=5, tau=0.1)
    reranker_params, adam_state, _ = adam_step(reranker_params, grads, adam_state, lr=1e-2)

The frozen reader's encoder states that the mask cannot reach (the FiD reader's whole encoder, the two-pass
reader's read 1) depend on the example only: ``reader_memory_of`` computes them once per training example
and ``memory=`` hands a batch's rows to the step, which then skips that work with bit-identical results:

    memory = reader_memory_of(reader_params, reader_cfg, batch)          # once, for the training set
    loss, grads = gumbel_reranking_step(..., batch, rng, k=5, tau=0.1, memory=memory.take(idx))
"""
from __future__ import annotations

import numpy as np

from .backend import get_xp
from .gumbel import RELAXATIONS, gumbel_noise, relaxed_topk_backward, relaxed_topk_forward, topk_mask
from .reader import (ReaderConfig, _check_answer, _check_ctx, _check_memory, _check_params, reader_backward,
                     reader_forward, reader_memory)
from .reranker import reranker_backward, reranker_forward
from .two_pass_reader import TwoPassBatch, _check_forward, two_pass_backward, two_pass_forward, two_pass_memory
from .validate import check_array, check_bool, check_choice, check_int, check_real, check_scores, check_type, fail

__all__ = ["gumbel_reranking_loss", "gumbel_reranking_step", "rerank", "reader_memory_of"]


def reader_memory_of(reader_params, reader_cfg, batch):
    """The frozen reader's mask-independent states of ``batch`` (a ReaderMemory): read 1's for a
    TwoPassBatch, the whole encoder's for the FiD reader."""
    if isinstance(batch, TwoPassBatch):
        return two_pass_memory(reader_params, reader_cfg, batch)
    return reader_memory(reader_params, reader_cfg, batch.ctx)


def gumbel_reranking_loss(scores, batch, reader_params, reader_cfg, rng, *, k, tau, kappa=1.0,
                          relaxation="max", noise=True, memory=None):
    """(loss, dscores (B, N)): the frozen reader's answer NLL under a relaxed top-K mask of ``scores``.

    batch: the reader's inputs, a two_pass_reader.TwoPassBatch, or for the one-pass FiD reader anything
    with .ctx (B, N, L), .ans_in and .ans_out (B, T); rng: a numpy Generator (fresh noise per call);
    memory: reader_memory_of(reader_params, reader_cfg, batch) (or rows of it), or None to compute it here.
    Every argument is checked first, by the name it has here (1 <= k <= N: no silent clamping).
    """
    _check_loss_args("gumbel_reranking_loss", scores, batch, reader_params, reader_cfg, rng, k, tau, kappa,
                     relaxation, noise, memory)
    B, N = scores.shape
    # 1. Gumbel noise, drawn outside the differentiable code: K rows per example for "max", one otherwise
    # (drawn on the host, so every backend sees the same noise, then put where the scores are)
    G = (gumbel_noise((B, k, N) if relaxation == "max" else (B, N), rng, xp=get_xp(scores), dtype=scores.dtype)
         if noise else None)
    # 2. the relaxed top-K mask (B, N)
    M, topk_cache = relaxed_topk_forward(scores, G, k, tau=tau, kappa=kappa, relaxation=relaxation)
    # 3. the frozen reader reads every candidate, each document's attention weight scaled by its M, and
    # 4. back through the reader to the mask only: its parameters stay frozen
    M = M.astype(reader_params["tok_emb"].dtype)
    if isinstance(batch, TwoPassBatch):  # both reads see the same mask; dM sums both reads and the soft flags
        loss, reader_cache = two_pass_forward(reader_params, reader_cfg, batch, M, memory1=memory)
        _, dM = two_pass_backward(1.0, reader_cache, param_grads=False)  # (B, N)
    else:  # the one-pass FiD reader: no encoder backward at all (the mask only enters the decoder)
        loss, reader_cache = reader_forward(reader_params, reader_cfg, batch.ctx, batch.ans_in, batch.ans_out, M,
                                            memory=memory)
        _, dM = reader_backward(1.0, reader_cache, param_grads=False)  # (B, N)
    # 5. back through the relaxed top-K to the scores
    dscores = relaxed_topk_backward(dM.astype(scores.dtype), topk_cache)  # (B, N)
    return loss, dscores


def gumbel_reranking_step(reranker_params, question, docs, reader_params, reader_cfg, batch, rng, *, k, tau,
                          kappa=1.0, relaxation="max", noise=True, memory=None):
    """(loss, reranker gradients): scores = reranker(question (B, Lq), docs (B, N, Ld)), then
    gumbel_reranking_loss on the reader's inputs ``batch`` (and ``memory``), then back into the reranker."""
    check_type("gumbel_reranking_step", "reader_cfg", reader_cfg, ReaderConfig)
    scores, cache = reranker_forward(reranker_params, question, docs, pad_id=reader_cfg.pad_id)
    loss, dscores = gumbel_reranking_loss(scores, batch, reader_params, reader_cfg, rng, k=k, tau=tau,
                                          kappa=kappa, relaxation=relaxation, noise=noise, memory=memory)
    return loss, reranker_backward(dscores, cache)


def rerank(reranker_params, question, docs, k, *, pad_id=0):
    """Inference: the hard top-K mask (B, N) of the reranker's scores, no noise and no relaxation; 1 <= k <= N."""
    scores, _ = reranker_forward(reranker_params, question, docs, pad_id=pad_id)
    check_int("rerank", "k", k, lo=1, hi=scores.shape[1])
    return topk_mask(scores, k)


def _check_loss_args(fn, scores, batch, reader_params, reader_cfg, rng, k, tau, kappa, relaxation, noise, memory):
    """Every argument of gumbel_reranking_loss, named as it is passed there, before any noise is drawn."""
    check_array(fn, "scores", scores, ndim=2)  # (B, N) float
    check_scores(fn, scores, k)  # finite or -inf (padding), 1 <= k <= N finite scores in every row
    check_choice(fn, "relaxation", relaxation, RELAXATIONS)
    check_real(fn, "tau", tau, lo=0.0, lo_open=True)
    check_real(fn, "kappa", kappa, lo=0.0, lo_open=True)
    if check_bool(fn, "noise", noise) or rng is not None:  # without noise no rng is needed
        check_type(fn, "rng", rng, np.random.Generator, "a numpy.random.Generator (numpy.random.default_rng(seed))")
    names = ("reader_params", "reader_cfg", "memory")
    if isinstance(batch, TwoPassBatch):
        _check_forward(reader_params, reader_cfg, batch, None, memory, fn, names)
        ctx_name, ctx = "batch.ctx1", batch.ctx1
    else:  # the one-pass FiD reader
        if not all(hasattr(batch, a) for a in ("ctx", "ans_in", "ans_out")):
            fail(fn, "batch", batch, "a TwoPassBatch, or for the FiD reader a batch with .ctx (B, N, L), .ans_in "
                 "and .ans_out (B, T)", TypeError)
        dtype = _check_params(reader_params, reader_cfg, fn, *names[:2])
        ctx_name, ctx = "batch.ctx", batch.ctx
        _check_ctx(ctx, reader_cfg, fn, ctx_name)
        _check_answer("batch.ans_in", batch.ans_in, ctx.shape[0], reader_cfg, fn)
        _check_answer("batch.ans_out", batch.ans_out, ctx.shape[0], reader_cfg, fn)
        if batch.ans_out.shape != batch.ans_in.shape:
            fail(fn, "batch.ans_out.shape", batch.ans_out.shape, f"batch.ans_in.shape={batch.ans_in.shape}")
        if memory is not None:
            _check_memory(memory, reader_cfg, ctx, dtype, fn, names[2], ctx_name)
    if tuple(ctx.shape[:2]) != tuple(scores.shape):
        B, N = scores.shape
        fail(fn, f"{ctx_name}.shape", tuple(ctx.shape), f"(B={B}, N={N}, L) like scores.shape={(B, N)}")
