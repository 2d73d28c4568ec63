"""Train the bilinear reranker against a frozen reader: Gumbel Reranking and its five baselines.

Every method trains the same reranker (same init, same Adam, same steps, same batches for a given seed)
against the same frozen reader (either reader: mini_gumbel.experiment.readers); only the loss differs
(docs/method.md §7-8). Gumbel Reranking's step is mini_gumbel.gumbel_reranking:

    gumbel      scores -> relaxed top-K mask (Gumbel noise) -> DMA reader -> answer NLL, backprop to scores
    supervised  -mean_{g in gold} log softmax(w)_g                (uses labels: the pointwise upper bound)
    pdist       KL(p_T || p_R), p_T = softmax(mean token log p(a | q, d_i) / tau_g), one document at a time
    emdr        -(1/T) sum_t log sum_i p_R(i) p(a_t | a_<t, q, d_i), one document at a time
    loop        KL(p_T || p_R), p_T = softmax(NLL without d_i / tau_g), N leave-one-out reader passes
    adist       KL(p_T || p_R), p_T = softmax(cross-attention mass on d_i / tau_g)

The teachers of the four distillation baselines depend on the frozen reader and the example only, never on
the reranker, so they are computed once per training example before the loop (exactly what the per-step
computation would give, without paying for it every step). Gumbel Reranking runs the reader every step,
because its mask depends on the current scores -- but only the part of the reader the mask reaches: the
encoder states it cannot reach (the FiD reader's whole encoder, the two-pass reader's read 1, each decoder
layer's keys and values of them; gumbel_reranking.reader_memory_of) are computed once per training example
the same way, as compute_teachers("gumbel", ...)["memory"], and every step takes its batch's rows. The
results are bit-identical to running the whole reader every step; the memory costs
n_dec_layers · N · L · 2C values of the reader's dtype per example (ReaderMemory.nbytes).

Dimension letters: B batch, N candidates, K kept, L tokens per encoder sequence, T answer tokens.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

from .. import losses
from ..gumbel_reranking import gumbel_reranking_loss, reader_memory_of
from ..reader import ReaderMemory
from ..optim import adam_init, adam_step
from ..reranker import init_reranker, reranker_backward, reranker_forward
from ..validate import check_bool, check_choice, check_seed
from .configs import METHODS, RerankConfig
from .evaluate import batches, evaluate_ranker
from .readers import answer_nll, final_read_attention, one_doc_logprobs, reader_inputs

__all__ = ["RerankRun", "compute_teachers", "method_loss", "train_reranker"]


class RerankRun(NamedTuple):
    method: str
    params: dict  # the trained reranker
    history: list  # [{"step": s, "loss": ..., "dev": {metric: value}}]
    init_params: dict  # the untrained reranker (same seed): the "untrained" row of the table


# ----------------------------------------------------------------------------------------------------------
# teachers of the distillation baselines (no gradient: the reader is frozen and the teacher is a constant)


def _leave_one_out_nll(reader_params, reader_cfg, inputs, B: int, N: int):
    """Mean answer NLL with all documents but d_i, for every i: (B, N). Masking d_i to 0 with DMA is exactly
    dropping it (tested for both readers), so each row is one reader pass over N documents."""
    drop = 1.0 - np.eye(N)  # (N, N): row i keeps every document but i
    rep = type(inputs)._make(np.repeat(f, N, axis=0) for f in inputs)  # every example N times
    # the mask-independent states once per example, not once per dropped document (bit-identical)
    memory = reader_memory_of(reader_params, reader_cfg, inputs).take(np.repeat(np.arange(B), N))
    _, cache = answer_nll(reader_params, reader_cfg, rep, np.tile(drop, (B, 1)).astype(reader_params["tok_emb"].dtype),
                          memory=memory)
    return np.asarray(cache.nll).reshape(B, N)  # (B, N)


def compute_teachers(method: str, reader_params, reader_cfg, data, cfg: RerankConfig, *, chunk: int = 64,
                     progress: Callable | None = None) -> dict:
    """Teacher signals for every example of ``data`` (arrays with a leading example axis).

    pdist: g (S, N); emdr: token log-probs (S, N, T); loop: g (S, N); adist: g (S, N); gumbel: {"memory":
    the frozen reader's mask-independent states of every example, a ReaderMemory}. Others: {}.
    """
    it = list(batches(len(data), chunk))
    if method == "gumbel":  # filled chunk by chunk into arrays of the final size: no second copy at the end
        memory = None
        for idx in (progress(it, desc="gumbel reader memory") if progress else it):
            part = reader_memory_of(reader_params, reader_cfg, reader_inputs(data.batch(idx), reader_cfg))
            if memory is None:
                n = len(data)
                memory = ReaderMemory(tuple(np.empty((n,) + a.shape[1:], a.dtype) for a in part.kv),
                                      np.empty((n,) + part.key_pad.shape[1:], bool), (n,) + part.shape[1:],
                                      part.n_heads)
            for whole, a in zip(memory.kv, part.kv):
                whole[idx] = a
            memory.key_pad[idx] = part.key_pad
        return {"memory": memory}
    if method not in ("pdist", "emdr", "loop", "adist"):
        return {}
    out = []
    for idx in (progress(it, desc=f"{method} teacher") if progress else it):
        b = data.batch(idx)
        x = reader_inputs(b, reader_cfg)
        B, N = b.gold.shape
        tmask = b.ans_out != reader_cfg.pad_id  # (B, T)
        if method in ("pdist", "emdr"):
            lp = one_doc_logprobs(reader_params, reader_cfg, x)  # (B, N, T)
            out.append(lp if method == "emdr" else losses.pdist_teacher(lp, tmask))
        elif method == "loop":
            out.append(losses.loop_teacher(_leave_one_out_nll(reader_params, reader_cfg, x, B, N)))
        else:  # adist: one full pass with the attention of the answering read exposed
            xattn, key_pad = final_read_attention(reader_params, reader_cfg, x)
            out.append(losses.adist_teacher(xattn, key_pad, tmask, N, mode=cfg.adist_mode))
    return {"teacher": np.concatenate(out, axis=0)}


# ----------------------------------------------------------------------------------------------------------
# one training step's loss for each method: (loss, dscores)


def method_loss(method: str, scores, batch, teacher, cfg: RerankConfig, *, reader_params=None, reader_cfg=None,
                rng: np.random.Generator | None = None, step: int = 0, memory=None):
    """The loss of ``method`` on one batch and its gradient with respect to the reranker scores (B, N).
    memory (gumbel): the batch's rows of compute_teachers("gumbel", ...)["memory"], or None."""
    check_choice("method_loss", "method", method, METHODS)
    if method == "gumbel":
        return gumbel_reranking_loss(scores, reader_inputs(batch, reader_cfg), reader_params, reader_cfg, rng,
                                     k=cfg.k, tau=cfg.tau_at(step), kappa=cfg.kappa, relaxation=cfg.relaxation,
                                     noise=cfg.noise, memory=memory)
    if method == "supervised":
        loss, cache = losses.supervised_forward(scores, batch.gold, form=cfg.supervised_form)
        return loss, losses.supervised_backward(1.0, cache)
    if method == "emdr":
        tmask = batch.ans_out != reader_cfg.pad_id  # (B, T)
        loss, cache = losses.emdr_forward(scores, teacher, tmask, tau_s=cfg.tau_s, per=cfg.emdr_per)
        return loss, losses.emdr_backward(1.0, cache)
    if method in ("pdist", "loop", "adist"):
        loss, cache = losses.kl_distill_forward(scores, teacher, tau_s=cfg.tau_s, tau_g=cfg.tau_g,
                                                reduction=cfg.kl_reduction)
        return loss, losses.kl_distill_backward(1.0, cache)
    raise AssertionError(method)  # unreachable: checked above


# ----------------------------------------------------------------------------------------------------------
# training


def train_reranker(method: str, reader_params, reader_cfg, train, dev, cfg: RerankConfig, *, seed: int,
                   vocab_size: int, teachers: dict | None = None, progress: Callable | None = None,
                   dtype=np.float64, reuse_memory: bool = True) -> RerankRun:
    """Train a fresh reranker with ``method``. Same seed -> same init, batches and noise for every method.

    teachers: compute_teachers(method, ...) on the first n_train examples (computed here when None).
    reuse_memory=False (gumbel): run the whole reader every step instead of reusing its mask-independent
    states; the results are the same, bit for bit (tested), only slower."""
    check_choice("train_reranker", "method", method, METHODS)
    rng = np.random.default_rng(check_seed("train_reranker", seed))
    init_seed, batch_seed, noise_seed = rng.integers(0, 2**31 - 1, size=3)
    params = init_reranker(vocab_size, cfg.dim, int(init_seed), dtype=dtype, init=cfg.init)
    init_params = {k: v.copy() for k, v in params.items()}
    n = min(cfg.n_train, len(train))
    train = train.batch(np.arange(n))
    reuse_memory = check_bool("train_reranker", "reuse_memory", reuse_memory)
    if teachers is None and (method != "gumbel" or reuse_memory):
        teachers = compute_teachers(method, reader_params, reader_cfg, train, cfg, progress=progress)
    teachers = teachers or {}
    teacher_all = teachers.get("teacher")
    memory_all = teachers.get("memory") if reuse_memory else None
    state = adam_init(params)
    batch_rng, noise_rng = np.random.default_rng(int(batch_seed)), np.random.default_rng(int(noise_seed))
    order = batch_rng.permutation(n)
    history = [{"step": 0, "loss": None, "dev": evaluate_ranker(params, dev, cfg.k)}]
    steps = range(1, cfg.steps + 1)
    bar = progress(steps, desc=f"train {method}", leave=False) if progress else steps
    pos = 0
    for step in bar:
        if pos + cfg.batch_size > n:  # a new epoch: reshuffle
            order, pos = batch_rng.permutation(n), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        b = train.batch(idx)
        scores, rcache = reranker_forward(params, b.question, b.docs, pad_id=reader_cfg.pad_id)
        loss, dscores = method_loss(method, scores, b, None if teacher_all is None else teacher_all[idx], cfg,
                                    reader_params=reader_params, reader_cfg=reader_cfg, rng=noise_rng, step=step,
                                    memory=None if memory_all is None else memory_all.take(idx))
        grads = reranker_backward(dscores, rcache)
        params, state, _ = adam_step(params, grads, state, lr=cfg.lr, clip_norm=cfg.clip_norm)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            history.append({"step": step, "loss": float(loss), "dev": evaluate_ranker(params, dev, cfg.k)})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(loss):.3f}", dev_recall=f"{history[-1]['dev'][f'recall@{cfg.k}']:.3f}")
    return RerankRun(method, params, history, init_params)
