"""Train a reranker (the bilinear one, or the set-aware listwise one: experiment.rankers) against a frozen reader: Gumbel Reranking, the objective it relaxes (estimated
exactly and by REINFORCE), and the five baselines.

Every method trains the same reranker (same init, same Adam, same steps, same batches for a given seed)
against the same frozen reader (either reader: mini_gumbel.experiment.readers); only the loss differs
(docs/method.md §7-8). Gumbel Reranking's step is mini_gumbel.gumbel_reranking:

    gumbel      scores -> relaxed top-K mask (Gumbel noise) -> DMA reader -> answer NLL, backprop to scores
    exact       V(w) = E_S[L(1_S)], S = top-K(κ w + G): the exact expected loss of a hard set and its gradient,
                from the reader's loss on every K-subset (a table computed once, mini_gumbel.objective)
    rloo        the same V, its gradient estimated by REINFORCE with a leave-one-out baseline over m sampled
                hard sets, the reader called on those sets only
    supervised  -mean_{g in gold} log softmax(w)_g                (uses labels: the labelled reference)
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
the same way, as compute_teachers("gumbel", ...)["memory"] (RLOO reuses it for its sampled sets), and every
step takes its batch's rows. The
results are bit-identical to running the whole reader every step; the memory costs
n_dec_layers · N · L · 2C values of the reader's dtype per example (ReaderMemory.nbytes).

Each method is one entry of REGISTRY: what it precomputes once per training example and its loss on a
batch (scores -> (loss, dscores)); train_reranker, compute_teachers and method_loss only dispatch.

Dimension letters: B batch, N candidates, K kept, L tokens per encoder sequence, T answer tokens.
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import numpy as np

from .. import losses
from ..gumbel_reranking import gumbel_reranking_loss, reader_memory_of
from ..objective import exact_objective_loss, rloo_objective_loss
from ..reader import ReaderMemory
from ..optim import adam_init, adam_step
from ..data import Splits
from ..validate import check_bool, check_choice, check_seed, check_type
from .configs import METHODS, RerankConfig
from .evaluate import batches, evaluate_ranker, score_all
from .rankers import init_ranker, ranker_backward, ranker_forward
from .readers import answer_nll, final_read_attention, one_doc_logprobs, reader_inputs

__all__ = ["RerankRun", "Method", "REGISTRY", "StepInputs", "compute_teachers", "method_loss", "initial_reranker",
           "untrained_score_std", "train_reranker"]


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


def _gumbel_memory(reader_params, reader_cfg, data, cfg, *, chunk, progress, desc="gumbel reader memory"):
    """{"memory": the frozen reader's mask-independent states of every example of ``data``, a ReaderMemory},
    filled chunk by chunk into arrays of the final size: no second copy at the end."""
    it = list(batches(len(data), chunk))
    memory = None
    for idx in (progress(it, desc=desc) if progress else it):
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


def _teacher(method):
    """The precompute of a distillation baseline: {"teacher": (S, N) or, for EMDR, token log-probs (S, N, T)}."""

    def precompute(reader_params, reader_cfg, data, cfg, *, chunk, progress):
        out = []
        it = list(batches(len(data), chunk))
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

    return precompute


def _exact_table(reader_params, reader_cfg, data, cfg, *, chunk, progress, cache_dir=None, log=None):
    """{"table": (S, C(N, K)) the frozen reader's loss on every hard subset of every example}: computed once
    and cached on disk under a hash of the reader's parameters and the examples (cache.load_or_compute_table)."""
    from .cache import load_or_compute_table  # the cache module imports configs only; no cycle at import time

    return {"table": load_or_compute_table(reader_params, reader_cfg, data, cfg.k, progress=progress,
                                           cache_dir=cache_dir, log=log)}


def _nothing(reader_params, reader_cfg, data, cfg, *, chunk, progress):
    return {}


class StepInputs(NamedTuple):
    """What a method's loss may read besides the scores: the batch, its rows of the precomputed signals, the
    frozen reader, the noise generator and the step (for a τ schedule)."""

    batch: object  # the data.Dataset rows of this step
    pre: dict  # this batch's rows of Method.precompute's output ({"teacher"|"memory"|"table": rows})
    reader_params: dict
    reader_cfg: object
    rng: Optional[np.random.Generator]
    step: int


def _gumbel_loss(scores, x: StepInputs, cfg: RerankConfig):
    return gumbel_reranking_loss(scores, reader_inputs(x.batch, x.reader_cfg), x.reader_params, x.reader_cfg, x.rng,
                                 k=cfg.k, tau=cfg.tau_at(x.step), kappa=cfg.kappa, relaxation=cfg.relaxation,
                                 noise=cfg.noise, memory=x.pre.get("memory"))


def _exact_loss(scores, x: StepInputs, cfg: RerankConfig):
    return exact_objective_loss(scores, x.pre["table"], k=cfg.k, kappa=cfg.exact_kappa)


def _rloo_loss(scores, x: StepInputs, cfg: RerankConfig):
    return rloo_objective_loss(scores, reader_inputs(x.batch, x.reader_cfg), x.reader_params, x.reader_cfg, x.rng,
                               k=cfg.k, kappa=cfg.rloo_kappa, samples=cfg.samples, memory=x.pre.get("memory"),
                               score=cfg.rloo_score)


def _supervised_loss(scores, x: StepInputs, cfg: RerankConfig):
    loss, cache = losses.supervised_forward(scores, x.batch.gold, form=cfg.supervised_form)
    return loss, losses.supervised_backward(1.0, cache)


def _emdr_loss(scores, x: StepInputs, cfg: RerankConfig):
    tmask = x.batch.ans_out != x.reader_cfg.pad_id  # (B, T)
    loss, cache = losses.emdr_forward(scores, x.pre["teacher"], tmask, tau_s=cfg.tau_s, per=cfg.emdr_per)
    return loss, losses.emdr_backward(1.0, cache)


def _kl_loss(scores, x: StepInputs, cfg: RerankConfig):
    loss, cache = losses.kl_distill_forward(scores, x.pre["teacher"], tau_s=cfg.tau_s, tau_g=cfg.tau_g,
                                            reduction=cfg.kl_reduction)
    return loss, losses.kl_distill_backward(1.0, cache)


class Method(NamedTuple):
    """One way to train the reranker: one entry of REGISTRY."""

    precompute: Callable  # (reader_params, reader_cfg, data, cfg, *, chunk, progress) -> dict of per-example rows
    loss: Callable  # (scores (B, N), StepInputs, cfg) -> (loss, dscores (B, N))
    needs_reader_each_step: bool  # the reader runs inside the step (its mask or subsets depend on the scores)
    summary: str


REGISTRY: dict = {
    "gumbel": Method(_gumbel_memory, _gumbel_loss, True,
                     "Gumbel Reranking: the reader's loss at a relaxed top-K mask, backpropagated (the paper)"),
    "exact": Method(_exact_table, _exact_loss, False,
                    "the expected loss of a hard top-K set, V = E_S[L(1_S)], and its exact gradient"),
    "rloo": Method(functools.partial(_gumbel_memory, desc="rloo reader memory"), _rloo_loss, True,
                   "V estimated by REINFORCE with a leave-one-out baseline over sampled hard sets"),
    "supervised": Method(_nothing, _supervised_loss, False, "gold labels: every gold document pushed up"),
    "pdist": Method(_teacher("pdist"), _kl_loss, False, "perplexity distillation, one document at a time"),
    "emdr": Method(_teacher("emdr"), _emdr_loss, False, "EMDR², marginal likelihood over documents"),
    "loop": Method(_teacher("loop"), _kl_loss, False, "leave-one-out distillation"),
    "adist": Method(_teacher("adist"), _kl_loss, False, "attention distillation"),
}
assert set(REGISTRY) == set(METHODS), "every method in configs.METHODS has exactly one registry entry"


def compute_teachers(method: str, reader_params, reader_cfg, data, cfg: RerankConfig, *, chunk: int = 64,
                     progress: Callable | None = None) -> dict:
    """What ``method`` precomputes for every example of ``data`` (arrays with a leading example axis):

    pdist, loop, adist: {"teacher": g (S, N)}; emdr: {"teacher": token log-probs (S, N, T)}; gumbel and rloo:
    {"memory": the frozen reader's mask-independent states of every example, a ReaderMemory}; exact:
    {"table": the reader's loss on every hard K-subset (S, C(N, K)), cached on disk}; supervised: {}.
    """
    check_choice("compute_teachers", "method", method, METHODS)
    return REGISTRY[method].precompute(reader_params, reader_cfg, data, cfg, chunk=chunk, progress=progress)


def _rows(pre: dict, idx) -> dict:
    """A batch's rows of every precomputed signal."""
    return {name: (v.take(idx) if isinstance(v, ReaderMemory) else v[idx]) for name, v in pre.items()}


# ----------------------------------------------------------------------------------------------------------
# one training step's loss for each method: (loss, dscores)


def method_loss(method: str, scores, batch, teacher, cfg: RerankConfig, *, reader_params=None, reader_cfg=None,
                rng: np.random.Generator | None = None, step: int = 0, memory=None, table=None):
    """The loss of ``method`` on one batch and its gradient with respect to the reranker scores (B, N).
    teacher (distillation baselines), memory (gumbel, rloo), table (exact): this batch's rows of
    compute_teachers(method, ...)'s output, or None."""
    check_choice("method_loss", "method", method, METHODS)
    pre = {name: v for name, v in (("teacher", teacher), ("memory", memory), ("table", table)) if v is not None}
    return REGISTRY[method].loss(scores, StepInputs(batch, pre, reader_params, reader_cfg, rng, step), cfg)


# ----------------------------------------------------------------------------------------------------------
# training


def _seeds(seed: int):
    """(init, batch order, noise) seeds of a training run: derived from its one seed."""
    init_seed, batch_seed, noise_seed = np.random.default_rng(seed).integers(0, 2**31 - 1, size=3)
    return int(init_seed), int(batch_seed), int(noise_seed)


def initial_reranker(seed: int, vocab_size: int, cfg: RerankConfig, *, dtype=np.float64) -> dict:
    """The reranker train_reranker(seed=seed) starts from (the same for every method): where the sweep
    measures std(w) for its κ grid."""
    return init_ranker(cfg.reranker, vocab_size, cfg.dim, _seeds(check_seed("initial_reranker", seed))[0],
                       dtype=dtype, init=cfg.init)


def untrained_score_std(splits, cfg: RerankConfig, seed: int = 0) -> float:
    """std(w), the unit of the sweep's κ·std(w) grid: the spread among one question's candidates of the scores
    of initial_reranker(seed), averaged over the first n_train training questions. Needs the data only, not
    the reader, so a grid can be checked before any work."""
    fn = "untrained_score_std"
    check_type(fn, "splits", splits, Splits, "the Splits of data.make_dataset")
    check_type(fn, "cfg", cfg, RerankConfig)
    init = initial_reranker(check_seed(fn, seed), len(splits.vocab), cfg)
    n = min(cfg.n_train, len(splits.train))
    return float(np.mean(np.std(score_all(init, splits.train.batch(np.arange(n))), axis=1)))


def train_reranker(method: str, reader_params, reader_cfg, train, dev, cfg: RerankConfig, *, seed: int,
                   vocab_size: int, teachers: dict | None = None, progress: Callable | None = None,
                   dtype=np.float64, reuse_memory: bool = True, on_eval: Callable | None = None) -> RerankRun:
    """Train a fresh reranker with ``method``. Same seed -> same init, batches and noise for every method.

    teachers: compute_teachers(method, ...) on the first n_train examples (computed here when None).
    reuse_memory=False (gumbel, rloo): run the whole reader every step instead of reusing its mask-independent
    states; the results are the same, bit for bit (tested), only slower.
    on_eval(step, params): called at step 0 and at every evaluation step with the reranker of that step (e.g. to
    measure its gradient against the exact one along a run); it must not change ``params``."""
    check_choice("train_reranker", "method", method, METHODS)
    init_seed, batch_seed, noise_seed = _seeds(check_seed("train_reranker", seed))
    params = init_ranker(cfg.reranker, vocab_size, cfg.dim, init_seed, dtype=dtype, init=cfg.init)
    init_params = {k: v.copy() for k, v in params.items()}
    n = min(cfg.n_train, len(train))
    train = train.batch(np.arange(n))
    reuse_memory = check_bool("train_reranker", "reuse_memory", reuse_memory)
    if teachers is None and (reuse_memory or not REGISTRY[method].needs_reader_each_step):
        teachers = compute_teachers(method, reader_params, reader_cfg, train, cfg, progress=progress)
    pre = dict(teachers or {})
    if not reuse_memory:
        pre.pop("memory", None)
    state = adam_init(params)
    batch_rng, noise_rng = np.random.default_rng(int(batch_seed)), np.random.default_rng(int(noise_seed))
    order = batch_rng.permutation(n)
    history = [{"step": 0, "loss": None, "dev": evaluate_ranker(params, dev, cfg.k)}]
    if on_eval is not None:
        on_eval(0, params)
    steps = range(1, cfg.steps + 1)
    bar = progress(steps, desc=f"train {method}", leave=False) if progress else steps
    pos = 0
    spec = REGISTRY[method]
    for step in bar:
        if pos + cfg.batch_size > n:  # a new epoch: reshuffle
            order, pos = batch_rng.permutation(n), 0
        idx = order[pos:pos + cfg.batch_size]
        pos += cfg.batch_size
        b = train.batch(idx)
        scores, rcache = ranker_forward(params, b.question, b.docs, pad_id=reader_cfg.pad_id)
        loss, dscores = spec.loss(scores, StepInputs(b, _rows(pre, idx), reader_params, reader_cfg, noise_rng, step),
                                  cfg)
        grads = ranker_backward(dscores, rcache)
        params, state, _ = adam_step(params, grads, state, lr=cfg.lr, clip_norm=cfg.clip_norm)
        if step % cfg.eval_every == 0 or step == cfg.steps:
            history.append({"step": step, "loss": float(loss), "dev": evaluate_ranker(params, dev, cfg.k)})
            if on_eval is not None:
                on_eval(step, params)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(loss):.3f}", dev_recall=f"{history[-1]['dev'][f'recall@{cfg.k}']:.3f}")
    return RerankRun(method, params, history, init_params)
