"""The objective behind Gumbel Reranking, estimated right: the expected loss of a *hard* sampled top-K set.

At inference the reader reads the hard top-K of the scores. The natural objective of a label-free reranker is
therefore the expected answer loss of a hard set drawn by the same Gumbel trick (docs/method.md §12):

    V(w) = E_S[ L(1_S) ],   S = top-K(κ w + G)   (Gumbel-top-k: Plackett-Luce without replacement from softmax(κ w))

with L(1_S) the frozen reader's answer NLL reading only the K documents of S. Gumbel Reranking
(gumbel_reranking.py, the method file beside this one) minimises the loss at a *relaxed* mask instead, which is
not V and whose gradient is not ∇V. Two ways to follow ∇V itself, each a forward/backward pair you can open:

    exact     V = Σ_S P(S; w) c_S over all C(N, K) subsets,    estimators.expected_value_forward / _backward
              c_S = L(1_S) from a table computed once per         (a dynamic programme over the set drawn so
              training example (subset_loss_table)                 far gives log P(S) for every S at once)
    rloo      REINFORCE with a leave-one-out baseline:             estimators.sample_subsets, rloo_forward /
              m hard sets S_1..S_m per example, the reader         _backward
              called on those m sets only, and
              ĝ = (1/m) Σ_s (L(S_s) - mean_{t≠s} L(S_t)) ∇ log P(S_s)   (unbiased for ∇V; no table, any N)

Both read documents by dropping the others (hard_subsets.subset_nll: the K kept documents only, from the
reader's saved mask-independent states), which equals the 0/1 mask over all N (tests hold it).

Dimension letters: B batch, N candidates, K kept, S = C(N, K) subsets, m sampled subsets per example.

    table = subset_loss_table(reader_params, reader_cfg, batch, k=5)          # (B, S), once per example
    loss, grads = objective_step(ranker, question, docs, reader_params, reader_cfg, batch, rng, k=5, kappa=1.4,
                                 estimator="exact", table=table)
    loss, grads = objective_step(..., estimator="rloo", samples=16, memory=memory)   # the reader called live
"""
from __future__ import annotations

from .backend import asarray_on, get_xp, is_cupy
from .estimators import (expected_value_backward, expected_value_forward, rloo_backward, rloo_forward,
                         sample_subsets, subsets_of)
from .hard_subsets import subset_nll
from .reranker import reranker_backward, reranker_forward
from .two_pass_reader import TwoPassBatch
from .validate import check_array, check_choice, check_int, check_real, fail

__all__ = ["ESTIMATORS", "RLOO_SCORES", "subset_loss_table", "exact_objective_loss", "rloo_objective_loss",
           "objective_step"]

ESTIMATORS = ("exact", "rloo")
RLOO_SCORES = ("set", "ordering")  # ∇ log P of the sampled set (from the DP) or of its sampled ordering


def _n_docs(batch) -> int:
    return (batch.ctx1 if isinstance(batch, TwoPassBatch) else batch.ctx).shape[1]


def subset_loss_table(reader_params, reader_cfg, batch, k, *, memory=None, progress=None):
    """c (B, S) float64: the frozen reader's answer NLL of each example reading only S, for every k-subset S
    of its N documents, in estimators.subsets_of(N, k) order. memory: the reader's mask-independent states of
    ``batch`` (gumbel_reranking.reader_memory_of), or None to compute them here."""
    N = _n_docs(batch)
    k = check_int("subset_loss_table", "k", k, lo=1, hi=N)
    ctx = batch.ctx1 if isinstance(batch, TwoPassBatch) else batch.ctx
    subsets = asarray_on(subsets_of(N, k), ctx)  # (S, k) where the documents are: one explicit copy per table
    B = ctx.shape[0]
    every = get_xp(subsets).broadcast_to(subsets, (B,) + subsets.shape)  # (B, S, k) the same for every example
    return subset_nll(reader_params, reader_cfg, batch, every, memory=memory, progress=progress)


def _mean(x):
    """The mean of the losses x as the step reports it: a float on the host; a 0-d array on a device, which
    float() would synchronise with once per step (gumbel_reranking_loss's loss stays there too)."""
    m = get_xp(x).mean(x)
    return m if is_cupy(m) else float(m)


def exact_objective_loss(scores, table, *, k, kappa=1.0):
    """(loss, dscores (B, N)): loss = mean_b V_b, V_b = Σ_S P(S; κ w_b) table[b, S], and its exact gradient.
    loss: a float (a 0-d array for device scores)."""
    fn = "exact_objective_loss"
    B = check_array(fn, "scores", scores, ndim=2).shape[0]
    V, cache = expected_value_forward(scores, table, k, kappa=kappa)  # (B,)
    dscores, _ = expected_value_backward(get_xp(V).full(B, 1.0 / B), cache)  # (B, N)
    return _mean(V), dscores


def rloo_objective_loss(scores, batch, reader_params, reader_cfg, rng, *, k, kappa=1.0, samples=16, memory=None,
                        score="set"):
    """(loss, dscores (B, N)): m = ``samples`` hard sets per example by Gumbel-top-k, the reader's loss on each
    (read only those K documents), and REINFORCE's leave-one-out estimate of ∇ mean_b V_b. ``loss`` is the mean
    of the m·B sampled losses: an unbiased estimate of mean_b V_b (the surrogate's value is not reported): a float
    (a 0-d array for device scores). The noise is drawn on the host from ``rng`` and copied to the device once."""
    fn = "rloo_objective_loss"
    B = check_array(fn, "scores", scores, ndim=2).shape[0]
    check_int(fn, "samples", samples, lo=2)
    check_choice(fn, "score", score, RLOO_SCORES)
    subsets, orders = sample_subsets(scores, k, rng, samples=samples, kappa=kappa)  # (B, m, k) each
    losses = subset_nll(reader_params, reader_cfg, batch, subsets, memory=memory)  # (B, m) constants to w
    _, cache = rloo_forward(scores, losses, subsets if score == "set" else orders, k, kappa=kappa, score=score)
    dscores = rloo_backward(1.0 / B, cache)  # (B, N)
    return _mean(losses), dscores


def objective_step(reranker_params, question, docs, reader_params, reader_cfg, batch, rng, *, k, kappa=1.0,
                   estimator="exact", table=None, samples=16, memory=None, score="set"):
    """(loss, reranker gradients): scores = reranker(question (B, Lq), docs (B, N, Ld)), then the exact
    objective (``table`` (B, S) from subset_loss_table) or its RLOO estimate (the reader's inputs ``batch`` and
    its ``memory`` rows), then back into the reranker."""
    fn = "objective_step"
    check_choice(fn, "estimator", estimator, ESTIMATORS)
    check_real(fn, "kappa", kappa, lo=0.0, lo_open=True)
    scores, cache = reranker_forward(reranker_params, question, docs, pad_id=reader_cfg.pad_id)
    if estimator == "exact":
        if table is None:
            fail(fn, "table", None, "the subset-loss table (B, S) of this batch, from subset_loss_table")
        loss, dscores = exact_objective_loss(scores, table, k=k, kappa=kappa)
    else:
        loss, dscores = rloo_objective_loss(scores, batch, reader_params, reader_cfg, rng, k=k, kappa=kappa,
                                            samples=samples, memory=memory, score=score)
    return loss, reranker_backward(dscores, cache)
