"""Train the bilinear reranker against a frozen reader: Gumbel Reranking and its five baselines.

Every method trains the same reranker (same init, same Adam, same steps, same batches for a given seed)
against the same frozen reader; only the loss differs (METHOD.md §7-8):

    gumbel      scores -> relaxed top-K mask (Gumbel noise) -> DMA reader -> answer NLL, backprop to scores
    supervised  -log sum_{gold} softmax(w)                                        (uses labels: upper bound)
    pdist       KL(p_T || p_R), p_T = softmax(mean token log p(a | q, d_i) / tau_g), one document at a time
    emdr        -(1/T) sum_t log sum_i p_R(i) p(a_t | a_<t, q, d_i), one document at a time
    loop        KL(p_T || p_R), p_T = softmax(NLL without d_i / tau_g), N leave-one-out reader passes
    adist       KL(p_T || p_R), p_T = softmax(cross-attention mass on d_i / tau_g)

The teachers of the four distillation baselines depend on the frozen reader and the example only, never on
the reranker, so they are computed once per training example before the loop (exactly what the per-step
computation would give, without paying for it every step). Gumbel Reranking runs the reader every step,
because its mask depends on the current scores.

Dimension letters: B batch, N candidates, K kept, L tokens per encoder sequence, T answer tokens.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable, NamedTuple

import numpy as np

from . import losses, metrics
from .gumbel import gumbel_noise, relaxed_topk_backward, relaxed_topk_forward, topk_mask
from .optim import adam_init, adam_step
from .reader import greedy_decode, reader_backward, reader_forward
from .reranker import init_reranker, reranker_backward, reranker_forward

__all__ = ["METHODS", "RerankConfig", "RerankRun", "compute_teachers", "train_reranker", "evaluate_ranker",
           "method_loss"]

METHODS = ("gumbel", "supervised", "pdist", "emdr", "loop", "adist")
RELAXATIONS = ("max", "iterative", "st")


@dataclass(frozen=True)
class RerankConfig:
    """Reranker training. One config serves every method; fields a method does not use are ignored by it."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-2
    clip_norm: float = 1.0
    dim: int = 64  # reranker embedding width D
    init: str = "lexical"  # "lexical" (the sensible prior) or "random"
    k: int = 5  # documents kept at inference (and in the relaxed mask)
    eval_every: int = 25  # dev metrics for the learning curves
    n_train: int = 4000  # training examples the reranker sees (teachers are precomputed for these)
    # Gumbel Reranking: chosen by `mini-gumbel sweep` (best dev Recall@K over tau in {0.1, 0.3, 0.5, 1.0} and
    # kappa * std(w) in {1, 2, 5}, std(w) = 0.735 for the untrained scores within a question; seed 0)
    tau: float = 1.0
    kappa: float = 1.36
    relaxation: str = "max"
    noise: bool = True
    tau_schedule: str = "constant"  # "constant" or "linear": tau_start -> tau over the run
    tau_start: float = 1.0
    # distillation baselines (Atlas defaults, METHOD.md §8)
    tau_s: float = 0.01
    tau_g: float = 0.01
    kl_reduction: str = "mean"
    emdr_per: str = "token"
    adist_mode: str = "atlas"

    def __post_init__(self):
        def need(cond, name, expected):
            if not cond:
                raise ValueError(f"RerankConfig: {name}={getattr(self, name)!r}; expected {expected}")

        need(isinstance(self.steps, int) and self.steps >= 0, "steps", "an integer >= 0")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(self.lr > 0, "lr", "> 0")
        need(isinstance(self.k, int) and self.k >= 1, "k", "an integer >= 1")
        need(self.tau > 0 and np.isfinite(self.tau), "tau", "a finite value > 0")
        need(self.kappa > 0 and np.isfinite(self.kappa), "kappa", "a finite value > 0")
        need(self.relaxation in RELAXATIONS, "relaxation", f"one of {RELAXATIONS}")
        need(self.tau_schedule in ("constant", "linear"), "tau_schedule", "'constant' or 'linear'")
        need(self.tau_start > 0, "tau_start", "> 0")
        need(self.init in ("lexical", "random"), "init", "'lexical' or 'random'")
        need(self.emdr_per in ("token", "sequence"), "emdr_per", "'token' or 'sequence'")
        need(self.adist_mode in ("atlas", "fid"), "adist_mode", "'atlas' or 'fid'")
        need(isinstance(self.eval_every, int) and self.eval_every >= 1, "eval_every", "an integer >= 1")
        need(isinstance(self.n_train, int) and self.n_train >= 1, "n_train", "an integer >= 1")

    def tau_at(self, step: int) -> float:
        if self.tau_schedule == "constant" or self.steps <= 1:
            return self.tau
        frac = min(step / (self.steps - 1), 1.0)
        return self.tau_start + frac * (self.tau - self.tau_start)

    def replace(self, **kw) -> "RerankConfig":
        return dataclasses.replace(self, **kw)


class RerankRun(NamedTuple):
    method: str
    params: dict  # the trained reranker
    history: list  # [{"step": s, "loss": ..., "dev": {metric: value}}]
    init_params: dict  # the untrained reranker (same seed): the "untrained" row of the table


# ----------------------------------------------------------------------------------------------------------
# teachers of the distillation baselines (no gradient: the reader is frozen and the teacher is a constant)


def _batches(n: int, size: int):
    for s in range(0, n, size):
        yield np.arange(s, min(s + size, n))


def _one_doc_logprobs(reader_params, reader_cfg, ctx, ans_in, ans_out):
    """Token log-probs with the reader given ONE document at a time: (B, N, T)."""
    B, N, L = ctx.shape
    T = ans_in.shape[1]
    _, cache = reader_forward(
        reader_params, reader_cfg, ctx.reshape(B * N, 1, L),  # (B*N, 1, L): each document alone
        np.repeat(ans_in, N, axis=0), np.repeat(ans_out, N, axis=0),  # (B*N, T)
    )
    return np.asarray(cache.logprobs).reshape(B, N, T)  # (B, N, T)


def _leave_one_out_nll(reader_params, reader_cfg, ctx, ans_in, ans_out):
    """Mean answer NLL with all documents but d_i, for every i: (B, N). Masking d_i to 0 with DMA is exactly
    dropping it (tested in the reader), so each row is one reader pass over N documents."""
    B, N, L = ctx.shape
    drop = 1.0 - np.eye(N)  # (N, N): row i keeps every document but i
    _, cache = reader_forward(
        reader_params, reader_cfg, np.repeat(ctx, N, axis=0),  # (B*N, N, L)
        np.repeat(ans_in, N, axis=0), np.repeat(ans_out, N, axis=0),
        mask=np.tile(drop, (B, 1)).astype(reader_params_dtype(reader_params)),  # (B*N, N)
    )
    return np.asarray(cache.nll).reshape(B, N)  # (B, N)


def reader_params_dtype(reader_params):
    return next(iter(reader_params.values())).dtype


def compute_teachers(method: str, reader_params, reader_cfg, data, cfg: RerankConfig, *, chunk: int = 64,
                     progress: Callable | None = None) -> dict:
    """Teacher signals for every example of ``data`` (arrays with a leading example axis).

    pdist: g (S, N); emdr: token log-probs (S, N, T); loop: g (S, N); adist: g (S, N). Others: {}.
    """
    if method not in ("pdist", "emdr", "loop", "adist"):
        return {}
    out = []
    it = list(_batches(len(data), chunk))
    for idx in (progress(it, desc=f"{method} teacher") if progress else it):
        b = data.batch(idx)
        tmask = b.ans_out != reader_cfg.pad_id  # (B, T)
        if method in ("pdist", "emdr"):
            lp = _one_doc_logprobs(reader_params, reader_cfg, b.ctx, b.ans_in, b.ans_out)  # (B, N, T)
            out.append(lp if method == "emdr" else losses.pdist_teacher(lp, tmask))
        elif method == "loop":
            out.append(losses.loop_teacher(_leave_one_out_nll(reader_params, reader_cfg, b.ctx, b.ans_in, b.ans_out)))
        else:  # adist: one full pass with the attention exposed
            _, cache = reader_forward(reader_params, reader_cfg, b.ctx, b.ans_in, b.ans_out, need_attn=True)
            out.append(losses.adist_teacher(cache.xattn, cache.key_pad, tmask, b.ctx.shape[1], mode=cfg.adist_mode))
    return {"teacher": np.concatenate(out, axis=0)}


# ----------------------------------------------------------------------------------------------------------
# one training step's loss for each method: (loss, dscores)


def method_loss(method: str, scores, batch, teacher, cfg: RerankConfig, *, reader_params=None, reader_cfg=None,
                rng: np.random.Generator | None = None, step: int = 0):
    """The loss of ``method`` on one batch and its gradient with respect to the reranker scores (B, N)."""
    if method == "gumbel":
        return gumbel_loss(scores, batch, reader_params, reader_cfg, cfg, rng, tau=cfg.tau_at(step))
    if method == "supervised":
        loss, cache = losses.supervised_forward(scores, batch.gold)
        return loss, losses.supervised_backward(1.0, cache)
    if method == "emdr":
        tmask = batch.ans_out != reader_cfg.pad_id  # (B, T)
        loss, cache = losses.emdr_forward(scores, teacher, tmask, tau_s=cfg.tau_s, per=cfg.emdr_per)
        return loss, losses.emdr_backward(1.0, cache)
    if method in ("pdist", "loop", "adist"):
        loss, cache = losses.kl_distill_forward(scores, teacher, tau_s=cfg.tau_s, tau_g=cfg.tau_g,
                                                reduction=cfg.kl_reduction)
        return loss, losses.kl_distill_backward(1.0, cache)
    raise ValueError(f"method={method!r}; expected one of {METHODS}")


def gumbel_loss(scores, batch, reader_params, reader_cfg, cfg: RerankConfig, rng, *, tau: float):
    """Gumbel Reranking (METHOD.md §1): relaxed top-K mask -> DMA in the frozen reader -> answer NLL."""
    B, N = scores.shape
    k = min(cfg.k, N)
    noise = None
    if cfg.noise:  # one fresh set of noise per example per step
        shape = (B, k, N) if cfg.relaxation == "max" else (B, N)
        noise = gumbel_noise(shape, rng, dtype=scores.dtype)
    mask, tcache = relaxed_topk_forward(scores, noise, k, tau=tau, kappa=cfg.kappa, method=cfg.relaxation)  # (B, N)
    loss, rcache = reader_forward(reader_params, reader_cfg, batch.ctx, batch.ans_in, batch.ans_out,
                                  mask.astype(reader_params_dtype(reader_params)))
    _, dmask = reader_backward(1.0, rcache, param_grads=False)  # frozen reader: only dL/dM
    dscores = relaxed_topk_backward(dmask.astype(scores.dtype), tcache)  # (B, N)
    return loss, dscores


# ----------------------------------------------------------------------------------------------------------
# evaluation


def score_all(params, data, *, chunk: int = 256, pad_id: int = 0):
    """Reranker scores for every example: (S, N)."""
    out = []
    for idx in _batches(len(data), chunk):
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
        for idx in _batches(len(data), chunk):
            b = data.batch(idx)
            keep = topk_mask(scores[idx], k) if reader_mask is None else reader_mask[idx]  # (B, N) hard, no noise
            keep = keep.astype(reader_params_dtype(reader_params))
            preds.append(greedy_decode(reader_params, reader_cfg, b.ctx, keep, max_len=b.ans_out.shape[1]))
        pred = np.concatenate([np.asarray(p) for p in preds], axis=0)
        out["em"] = metrics.mean_exact_match(pred, data.ans_out, pad_id=reader_cfg.pad_id, eos_id=reader_cfg.eos_id)
        out["f1"] = metrics.mean_token_f1(pred, data.ans_out, pad_id=reader_cfg.pad_id, eos_id=reader_cfg.eos_id)
    return out


# ----------------------------------------------------------------------------------------------------------
# training


def train_reranker(method: str, reader_params, reader_cfg, train, dev, cfg: RerankConfig, *, seed: int,
                   vocab_size: int, teachers: dict | None = None, progress: Callable | None = None,
                   dtype=np.float64) -> RerankRun:
    """Train a fresh reranker with ``method``. Same seed -> same init, batches and noise for every method."""
    if method not in METHODS:
        raise ValueError(f"method={method!r}; expected one of {METHODS}")
    rng = np.random.default_rng(seed)
    init_seed, batch_seed, noise_seed = rng.integers(0, 2**31 - 1, size=3)
    params = init_reranker(vocab_size, cfg.dim, int(init_seed), dtype=dtype, init=cfg.init)
    init_params = {k: v.copy() for k, v in params.items()}
    n = min(cfg.n_train, len(train))
    train = train.batch(np.arange(n))
    if teachers is None:
        teachers = compute_teachers(method, reader_params, reader_cfg, train, cfg, progress=progress)
    teacher_all = teachers.get("teacher")
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
                                    reader_params=reader_params, reader_cfg=reader_cfg, rng=noise_rng, step=step)
        grads = reranker_backward(dscores, rcache)
        params, state, _ = adam_step(params, grads, state, lr=cfg.lr, clip_norm=cfg.clip_norm)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            history.append({"step": step, "loss": float(loss), "dev": evaluate_ranker(params, dev, cfg.k)})
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(loss):.3f}", dev_recall=f"{history[-1]['dev'][f'recall@{cfg.k}']:.3f}")
    return RerankRun(method, params, history, init_params)
