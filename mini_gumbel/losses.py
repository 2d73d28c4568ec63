"""The baselines' training losses over the reranker scores, and the teachers they distil from.

Dimension letters: B batch, N candidates, T answer tokens, H heads, L tokens per FiD encoder sequence.

Every loss is a forward/backward pair over the scores ``w (B, N)`` only: ``x_forward(scores, ...) ->
(loss, cache)`` and ``x_backward(dloss, cache) -> dscores (B, N)``. Teacher signals come from the frozen
reader, are computed elsewhere without gradient and enter as plain arrays. A score of ``-inf`` marks a
padded candidate: it has probability 0 under the student, its teacher value is ignored (any value, even
NaN), and it gets a zero gradient.

Student: ``p_R = softmax(w / τ_s)``. Defaults follow Atlas (Izacard et al. 2023), docs/method.md §8:
``τ_s = τ_g = 0.01``, ``KL(p_T || p_R)`` with reduction "mean" over batch × documents (PyTorch
``KLDivLoss()``'s default, which Atlas calls). Both conventions that differ silently between codebases
are named arguments here: ``direction`` ("T||R" = KL(p_T || p_R), the default, or "R||T") and
``reduction`` ("mean", "batchmean", "sum").

    supervised   L = -log Σ_{i ∈ gold} softmax(w / τ_s)_i, mean over the rows that have a gold document
                 (rows without one are excluded and counted in the cache; no gold at all is an error)
    KL distil    L = KL(p_T || p_R), p_T = softmax(g / τ_g)        PDist, LOOP and ADist, teacher g (B, N)
    EMDR         per="token"   : L = -(1/T) Σ_t log Σ_i p_R(i) p(a_t | a_<t, q, d_i)   (Atlas, EMDR² code)
                 per="sequence": L = -log Σ_i p_R(i) p(a | q, d_i)                    (EMDR² paper)
                 mean over the batch; T counts each example's non-pad answer tokens. τ_s defaults to
                 Atlas's 0.01 here too (Atlas divides the student scores by its temperature_score for
                 EMDR as for the KL losses); the reader's token log-probabilities enter at temperature 1.

Gradients (z = w / τ_s, p = p_R):
    supervised   dz = p - p(· | gold)
    T||R         dz = p - p_T                         (per row, before the reduction's factor)
    R||T         dz = p ⊙ (a - Σ_i p_i a_i),  a = log p - log p_T
    EMDR         dz = p - r,  r = posterior over documents given the answer (per token: averaged over t)

Numerics at any scale. Softmaxes do not depend on a shift, so every row of scores (and of teacher values) is
centred on its maximum *before* the division by τ: ``z = (w - max w) / τ <= 0``. An offset of any size is then
harmless (float32 scores near 1e37, float64 near ±1e306), and a log-probability below the float range rounds
to -inf with probability exactly 0 (0 · log 0 counts as 0). What is left is a loss whose true value is beyond
the dtype's range (a teacher, gold document or answer putting mass where the student's log-probability is
below -finfo.max): that is a ValueError naming the scores and τ_s, never an inf or NaN. A backward whose
gradient would overflow (a τ_s near the smallest float) is a ValueError too; otherwise outputs and gradients
are finite.
"""
from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

from .backend import get_xp, unbox
from .validate import (check_array, check_cache, check_choice, check_dloss, check_int, check_real, check_scores,
                       check_type, fail)
from .ops import log_softmax_forward, logsumexp

__all__ = [
    "REDUCTIONS",
    "DIRECTIONS",
    "SUPERVISED_FORMS",
    "supervised_forward",
    "supervised_backward",
    "kl_distill_forward",
    "kl_distill_backward",
    "emdr_forward",
    "emdr_backward",
    "pdist_teacher",
    "loop_teacher",
    "adist_teacher",
]

REDUCTIONS = ("mean", "batchmean", "sum")
DIRECTIONS = ("T||R", "R||T")


# ----------------------------------------------------------------------------------------------------------
# validation and small numerics


def _check_tau(fn: str, name: str, tau, dtype) -> float:
    """τ > 0, and >= 1 / finfo(dtype).max so that 1/τ is a number of the dtype (a smaller τ rounds to 0 or
    overflows there: 5e-324 is 0 in float32)."""
    v = check_real(fn, name, tau, lo=0.0, lo_open=True)
    lo = 1.0 / float(np.finfo(dtype).max)
    if v < lo:
        fail(fn, name, tau, f"a finite number >= {lo:.3g} (1 / the largest {np.dtype(dtype).name}: a smaller "
             "tau is not a usable divisor in that dtype)")
    return v


def _check_scores(fn: str, scores):
    """(B, N) float scores, no NaN or +inf, at least one finite entry per row. Returns the valid mask (B, N)."""
    s, _ = check_scores(fn, scores, 1)
    if s.ndim != 2:
        fail(fn, "scores.shape", tuple(s.shape), "(B, N)")
    return s > -np.inf  # (B, N)


def _check_like(fn: str, name: str, x, shape, kind="f"):
    return check_array(fn, name, x, shape=tuple(shape), kind="b" if kind == "b" else "fiu")


def _check_reduction(fn: str, reduction: str) -> None:
    check_choice(fn, "reduction", reduction, REDUCTIONS)


def _log_softmax(z, xp):
    """log softmax over the last axis (mini_gumbel.ops.log_softmax_forward); -inf (padding) stays -inf."""
    return log_softmax_forward(z)[0]  # (..., N)


def _centred_over_tau(x, tau: float, valid, xp):
    """``(x - max_valid x) / τ`` per row, -inf on padding: <= 0, with 0 at the row's maximum.

    The shift is a constant (no gradient flows through the max). The difference is taken first (exact for
    nearby values, so no precision is lost to a large offset); it overflows to -inf only where the true
    difference is below -finfo.max, and for τ <= 1 the quotient is then below it too. For τ > 1 those
    entries are recomputed as x/τ - m/τ, which rounds to -inf only if the true value is beyond the range."""
    raw = unbox(x)
    m = xp.max(xp.where(valid, raw, -xp.inf), axis=-1, keepdims=True)  # (B, 1) finite: a real entry per row
    with np.errstate(over="ignore", invalid="ignore"):
        d = x - m  # (B, N) <= 0; -inf on padding, or where the true difference is below -finfo.max
        z = d / tau  # (B, N)
        if tau > 1.0:
            z = xp.where(xp.isfinite(unbox(d)) | ~valid, z, x / tau - m / tau)  # (B, N)
        return xp.where(valid, z, -xp.inf)  # (B, N)


def _finite_or_zero(x, xp):
    """x where finite, else 0 (a constant mask: no gradient flows into the replaced entries)."""
    return xp.where(xp.isfinite(unbox(x)), x, 0.0)


def _overflow(fn: str, scores, tau_s: float, what: str):
    dt = np.dtype(unbox(scores).dtype)
    fail(fn, "scores", scores, f"scores whose spread divided by tau_s={tau_s:g} keeps the loss within {dt.name} "
         f"(|loss| > {np.finfo(dt).max:.3g}: {what}); rescale the scores, raise tau_s or use float64")


def _check_grad(fn: str, dscores, dloss, tau_s: float, xp):
    if not bool(xp.isfinite(unbox(dscores)).all()):
        fail(fn, "dloss", dloss, f"a gradient within {unbox(dscores).dtype} (dscores overflow with "
             f"tau_s={tau_s:g}); raise tau_s or use float64")
    return dscores


# ----------------------------------------------------------------------------------------------------------
# supervised (labels: the labelled reference, not a ceiling)


class SupervisedCache(NamedTuple):
    p: Any  # (B, N) softmax(w / τ_s), 0 at padding
    q: Any  # (B, N) "any": softmax restricted to gold; "each": uniform on gold; 0 elsewhere and on excluded rows
    row_weight: Any  # (B,) 1 / n_rows on rows with gold, 0 on excluded rows
    tau_s: float
    n_rows: int  # rows that entered the mean
    n_excluded: int  # rows without a gold document


SUPERVISED_FORMS = ("each", "any")


def supervised_forward(scores, gold, *, tau_s: float = 1.0, form: str = "each"):
    """Supervised reranking with the gold labels, mean over the rows that have gold:

        form "each" (default)  L = -(1/|G|) Σ_{g ∈ G} log softmax(w / τ_s)_g   every gold document pushed up
        form "any"             L = -log Σ_{g ∈ G} softmax(w / τ_s)_g           multi-positive

    "any" is satisfied by ONE gold document on top, so it does not ask for every gold document in the top K;
    "each" does (docs/method.md §8.1). Both have dz = p - q with z = w / τ_s: q is softmax
    restricted to the gold for "any" and uniform on the gold for "each".

    scores (B, N) float (-inf = padding); gold (B, N) bool. A gold flag on a padded candidate is an error;
    rows with no gold are excluded from the mean (``cache.n_excluded``); a batch without any gold is an
    error. τ_s = 1 by default: the formula of docs/method.md §8 (labels need no teacher temperature).
    """
    fn = "supervised_forward"
    valid = _check_scores(fn, scores)
    tau_s = _check_tau(fn, "tau_s", tau_s, unbox(scores).dtype)
    check_choice(fn, "form", form, SUPERVISED_FORMS)
    gold = _check_like(fn, "gold", gold, valid.shape, kind="b")
    if bool((gold & ~valid).any()):
        fail(fn, "gold", gold, "True only on real candidates (it marks a padded -inf one)")
    xp = get_xp(scores)
    has = gold.any(axis=-1)  # (B,)
    n_rows = int(has.sum())
    if n_rows == 0:
        fail(fn, "gold", gold, f"a True entry in at least one of the {gold.shape[0]} rows")
    logp = _log_softmax(_centred_over_tau(scores, tau_s, valid, xp), xp)  # (B, N) -inf at padding
    row_weight = has.astype(unbox(scores).dtype) / n_rows  # (B,)
    if form == "each":
        if bool((gold & ~xp.isfinite(unbox(logp))).any()):
            _overflow(fn, scores, tau_s, "a gold document's log-probability is below the float range")
        q = (gold / xp.maximum(xp.sum(gold, axis=-1, keepdims=True), 1)).astype(logp.dtype)  # (B, N) uniform on gold
        lg = xp.sum(xp.where(gold, _finite_or_zero(logp, xp), 0.0) * q, axis=-1)  # (B,) mean log p over gold
        with np.errstate(over="ignore"):
            loss = -xp.sum(row_weight * lg)
        if not bool(xp.isfinite(unbox(loss))):
            _overflow(fn, scores, tau_s, "the mean gold log-probability")
        return loss, SupervisedCache(xp.exp(logp), q, row_weight, tau_s, n_rows,
                                     int((~has).sum()))
    # rows without gold take their full logp as a finite stand-in; their weight is 0
    use = gold | ~has[:, None]  # (B, N)
    lg = xp.where(use, logp, -xp.inf)  # (B, N)
    if not bool(xp.isfinite(unbox(lg)).any(axis=-1).all()):
        _overflow(fn, scores, tau_s, "every gold document's log-probability is below the float range")
    lse = logsumexp(lg, axis=-1, keepdims=True)  # (B, 1) log p(gold)
    loss = -xp.sum(row_weight * lse[:, 0])
    q = xp.where(gold, xp.exp(lg - lse), 0.0)  # (B, N)
    return loss, SupervisedCache(xp.exp(logp), q, row_weight, tau_s, n_rows, int((~has).sum()))


def supervised_backward(dloss, cache: SupervisedCache):
    """dscores (B, N) = dloss · row_weight · (p - q) / τ_s."""
    fn = "supervised_backward"
    check_cache(fn, cache, SupervisedCache, forward="supervised_forward")
    check_dloss(fn, dloss)
    xp = get_xp(cache.p)
    with np.errstate(over="ignore", invalid="ignore"):
        ds = dloss * cache.row_weight[:, None] * (cache.p - cache.q) / cache.tau_s  # (B, N)
    return _check_grad(fn, ds, dloss, cache.tau_s, xp)


# ----------------------------------------------------------------------------------------------------------
# KL distillation (PDist, LOOP, ADist)


class KLCache(NamedTuple):
    p_R: Any  # (B, N) student, 0 at padding
    p_T: Any  # (B, N) teacher, 0 at padding
    log_ratio: Any  # (B, N) log p_R - log p_T where the weighting probability (p_T, or p_R for R||T) is > 0, else 0
    factor: float  # the reduction's divisor inverted: 1/(#valid), 1/B or 1
    tau_s: float
    direction: str


def kl_distill_forward(
    scores, teacher, *, tau_s: float = 0.01, tau_g: float = 0.01, reduction: str = "mean", direction: str = "T||R"
):
    """``KL(p_T || p_R)`` (direction "T||R", default) or ``KL(p_R || p_T)`` ("R||T").

    p_R = softmax(w / τ_s), p_T = softmax(g / τ_g) over the real (finite-score) candidates.
    reduction: "mean" -- sum over batch × documents divided by the number of real (b, i) pairs (Atlas,
    PyTorch KLDivLoss default; B·N without padding); "batchmean" -- divided by B (the true mean KL per
    question); "sum". teacher (B, N): finite on real candidates, ignored on padded ones.
    """
    fn = "kl_distill_forward"
    valid = _check_scores(fn, scores)
    tau_s = _check_tau(fn, "tau_s", tau_s, unbox(scores).dtype)
    _check_reduction(fn, reduction)
    check_choice(fn, "direction", direction, DIRECTIONS)  # 'T||R' is KL(p_T || p_R), Atlas's
    g = _check_like(fn, "teacher", teacher, valid.shape)
    tau_g = _check_tau(fn, "tau_g", tau_g, np.result_type(g.dtype, np.float32))  # the teacher's float dtype
    xp = get_xp(scores)
    g = xp.where(valid, g, 0.0)  # (B, N) padded teacher values are never looked at
    if not bool(xp.isfinite(g).all()):
        fail(fn, "teacher", teacher, "finite values on every real candidate")
    dtype = unbox(scores).dtype
    with np.errstate(over="ignore"):  # a float64 teacher log-probability below float32's range -> -inf, p 0
        log_pT = _log_softmax(_centred_over_tau(g, tau_g, valid, xp), xp).astype(dtype)  # (B, N)
    log_pR = _log_softmax(_centred_over_tau(scores, tau_s, valid, xp), xp)  # (B, N)
    p_T, p_R = xp.exp(log_pT), xp.exp(log_pR)  # (B, N) 0 at padding and below the float range
    weight = p_T if direction == "T||R" else unbox(p_R)  # (B, N) the expectation's probability
    other = unbox(log_pR) if direction == "T||R" else log_pT  # (B, N) must be finite wherever weight > 0
    if bool(((weight > 0) & ~xp.isfinite(other)).any()):
        _overflow(fn, scores, tau_s, "one distribution has mass where the other's log-probability is below "
                  "the float range")
    with np.errstate(over="ignore", invalid="ignore"):
        log_ratio = xp.where(weight > 0, _finite_or_zero(log_pR, xp) - _finite_or_zero(log_pT, xp), 0.0)  # (B, N)
        B = valid.shape[0]
        factor = {"mean": 1.0 / int(valid.sum()), "batchmean": 1.0 / B, "sum": 1.0}[reduction]
        if direction == "T||R":
            total = -xp.sum(p_T * log_ratio * factor)  # Σ p_T (log p_T - log p_R)
        else:
            total = xp.sum(p_R * log_ratio * factor)  # Σ p_R (log p_R - log p_T)
    if not (bool(xp.isfinite(unbox(log_ratio)).all()) and bool(xp.isfinite(unbox(total)))):
        _overflow(fn, scores, tau_s, "the sum of the log-ratios")
    return total, KLCache(p_R, p_T, log_ratio, factor, tau_s, direction)


def kl_distill_backward(dloss, cache: KLCache):
    """dscores (B, N); see the module docstring for dz."""
    fn = "kl_distill_backward"
    check_cache(fn, cache, KLCache, forward="kl_distill_forward")
    check_dloss(fn, dloss)
    xp = get_xp(cache.p_R)
    with np.errstate(over="ignore", invalid="ignore"):
        if cache.direction == "T||R":
            dz = cache.p_R - cache.p_T  # (B, N)
        else:
            a = cache.log_ratio  # (B, N)
            dz = cache.p_R * (a - (cache.p_R * a).sum(axis=-1, keepdims=True))  # (B, N)
        ds = dloss * cache.factor * dz / cache.tau_s  # (B, N)
    return _check_grad(fn, ds, dloss, cache.tau_s, xp)


# ----------------------------------------------------------------------------------------------------------
# EMDR (marginal likelihood over documents)


class EMDRCache(NamedTuple):
    p_R: Any  # (B, N)
    r: Any  # (B, N) posterior over documents (per token: averaged over the example's answer tokens)
    tau_s: float
    per: str


def _check_token_inputs(fn: str, token_logprobs, token_mask, valid):
    B, N = valid.shape
    lp = check_array(fn, "token_logprobs", token_logprobs, shape=(B, N, None))
    T = lp.shape[2]
    tm = _check_like(fn, "token_mask", token_mask, (B, T), kind="b")
    if not bool(tm.any(axis=-1).all()):
        fail(fn, "token_mask", token_mask, "at least one True (answer token) in every row")
    xp = get_xp(lp, tm)
    use = valid[:, :, None] & tm[:, None, :]  # (B, N, T)
    lp = xp.where(use, lp, 0.0)  # (B, N, T) entries outside the mask are ignored
    if not bool(xp.isfinite(lp).all()):
        fail(fn, "token_logprobs", token_logprobs, "finite values on every real document's answer tokens")
    if bool((lp > 1e-9).any()):
        fail(fn, "token_logprobs", token_logprobs, f"log-probabilities <= 0, not NLLs (max {float(lp.max())})")
    return lp, tm


def emdr_forward(scores, token_logprobs, token_mask, *, tau_s: float = 0.01, per: str = "token"):
    """EMDR: ``-log`` of the answer's probability marginalised over ``p_R``, per token (default) or sequence.

    token_logprobs (B, N, T): log p(a_t | a_<t, q, d_i) from the reader run on document i alone;
    token_mask (B, T) bool: the answer's real tokens. Mean over the batch.
    """
    fn = "emdr_forward"
    valid = _check_scores(fn, scores)
    tau_s = _check_tau(fn, "tau_s", tau_s, unbox(scores).dtype)
    check_choice(fn, "per", per, ("token", "sequence"))  # Atlas and the EMDR² code; the EMDR² paper
    lp, tm = _check_token_inputs(fn, token_logprobs, token_mask, valid)
    xp = get_xp(scores)
    dtype = unbox(scores).dtype
    lp = lp.astype(dtype)
    B = valid.shape[0]
    log_pR = _log_softmax(_centred_over_tau(scores, tau_s, valid, xp), xp)  # (B, N) -inf: padding or p = 0
    live = valid & xp.isfinite(unbox(log_pR))  # (B, N) documents with a representable probability
    log_pR_safe = _finite_or_zero(log_pR, xp)  # (B, N)
    with np.errstate(over="ignore", invalid="ignore"):
        if per == "token":
            joint = xp.where(live[:, :, None], log_pR_safe[:, :, None] + lp, -xp.inf)  # (B, N, T)
            ok = xp.isfinite(unbox(joint)).any(axis=1)  # (B, T)
        else:
            seq = lp.sum(axis=-1)  # (B, N) log p(a | q, d_i)
            joint = xp.where(live, log_pR_safe + seq, -xp.inf)  # (B, N)
            ok = xp.isfinite(unbox(joint)).any(axis=-1)  # (B,)
    if not bool(ok.all()):
        _overflow(fn, scores, tau_s, "the answer's log-probability under every document is below the float range")
    if per == "token":
        lse = logsumexp(joint, axis=1, keepdims=True)  # (B, 1, T) log Σ_i p_R(i) p(a_t | ., d_i)
        tw = tm.astype(dtype) / tm.sum(axis=-1, keepdims=True).astype(dtype)  # (B, T) 1/T_b on real tokens
        loss = -xp.sum(tw * lse[:, 0, :] / B)  # each term >= -finfo.max / B: the sum cannot overflow
        r = xp.sum(xp.exp(joint - lse) * tw[:, None, :], axis=-1)  # (B, N)
    else:
        lse = logsumexp(joint, axis=-1, keepdims=True)  # (B, 1)
        loss = -xp.sum(lse / B)
        r = xp.exp(joint - lse)  # (B, N)
    return loss, EMDRCache(xp.exp(log_pR), r, tau_s, per)


def emdr_backward(dloss, cache: EMDRCache):
    """dscores (B, N) = dloss · (p_R - r) / (B τ_s)."""
    fn = "emdr_backward"
    check_cache(fn, cache, EMDRCache, forward="emdr_forward")
    check_dloss(fn, dloss)
    xp = get_xp(cache.p_R)
    B = cache.p_R.shape[0]
    with np.errstate(over="ignore", invalid="ignore"):
        ds = dloss * (cache.p_R - cache.r) / B / cache.tau_s  # (B, N)
    return _check_grad(fn, ds, dloss, cache.tau_s, xp)


# ----------------------------------------------------------------------------------------------------------
# teachers (from the frozen reader, no gradient)


def pdist_teacher(token_logprobs, token_mask):
    """PDist: ``g_i = (1/T) Σ_t log p(a_t | a_<t, q, d_i)`` over the real answer tokens. -> (B, N)

    token_logprobs (B, N, T) from the reader run one document at a time; token_mask (B, T) bool.
    """
    fn = "pdist_teacher"
    lp = check_array(fn, "token_logprobs", token_logprobs, ndim=3)
    B, N, T = lp.shape
    tm = _check_like(fn, "token_mask", token_mask, (B, T), kind="b")
    if not bool(tm.any(axis=-1).all()):
        fail(fn, "token_mask", token_mask, "at least one True (answer token) in every row")
    xp = get_xp(lp, tm)
    lp = xp.where(tm[:, None, :], lp, 0.0)  # (B, N, T)
    if not bool(xp.isfinite(lp).all()):
        fail(fn, "token_logprobs", token_logprobs, "finite log-probabilities on every answer token")
    return lp.sum(axis=-1) / tm.sum(axis=-1)[:, None].astype(lp.dtype)  # (B, N)


def loop_teacher(nll_without):
    """LOOP: ``g_i`` = the reader's mean answer NLL on all documents but ``d_i``. -> (B, N)

    The identity on its input (removing a useful document raises the NLL, so a high g means useful);
    it exists to name the convention and validate the array: (B, N), finite.
    """
    x = check_array("loop_teacher", "nll_without", nll_without, ndim=2, finite=True)
    return x.copy()  # (B, N)


def adist_teacher(xattn: Sequence[Any], key_pad, token_mask, n_docs: int, *, mode: str = "atlas"):
    """ADist: cross-attention evidence per document from the reader's decoder. -> (B, N)

    xattn     list over decoder layers of objects with ``.probs (B, H, T, N·L)`` (post-softmax),
              ``.scores (B, H, T, N·L)`` (pre-softmax logits) and ``.value_norms (B, H, N·L)``
    key_pad   (B, N·L) bool, True on padded encoder tokens
    token_mask (B, T) bool, the real answer tokens
    mode "atlas": g_i = Σ_layers Σ_heads Σ_{t real} Σ_{u ∈ d_i, not pad} probs[t, u] · value_norms[u]
    mode "fid":   g_i = mean over layers, heads and the non-pad tokens u ∈ d_i of scores[t=0, u]
                  (pre-softmax logits of the first answer token; Izacard & Grave 2021)
    """
    fn = "adist_teacher"
    check_choice(fn, "mode", mode, ("atlas", "fid"))  # Σ prob × value norm; first-token logits
    check_type(fn, "xattn", xattn, (list, tuple), "a list of ops.AttnRecord, one per decoder layer")
    if len(xattn) == 0:
        fail(fn, "xattn", xattn, "one entry per decoder layer")
    for j, layer in enumerate(xattn):
        for attr in ("probs", "scores", "value_norms"):
            if not hasattr(layer, attr):
                fail(fn, f"xattn[{j}]", layer, f"an ops.AttnRecord (no .{attr})", TypeError)
    p0 = check_array(fn, "xattn[0].probs", xattn[0].probs, ndim=4)
    B, H, T, NL = p0.shape
    n_docs = check_int(fn, "n_docs", n_docs, lo=1)
    if NL % n_docs:
        fail(fn, "n_docs", n_docs, f"a divisor of the key length N*L={NL}")
    N, L = n_docs, NL // n_docs
    for j, layer in enumerate(xattn):
        for attr, shape in (("probs", (B, H, T, NL)), ("scores", (B, H, T, NL)), ("value_norms", (B, H, NL))):
            check_array(fn, f"xattn[{j}].{attr}", getattr(layer, attr), shape=shape)
    kp = _check_like(fn, "key_pad", key_pad, (B, NL), kind="b")
    tm = _check_like(fn, "token_mask", token_mask, (B, T), kind="b")
    xp = get_xp(p0, kp, tm)
    keep = (~kp).reshape(B, N, L)  # (B, N, L)
    dtype = p0.dtype

    if mode == "atlas":
        acc = xp.zeros((B, NL), dtype=dtype)  # (B, N*L)
        for layer in xattn:
            probs = xp.where(tm[:, None, :, None], unbox(layer.probs), 0.0)  # (B, H, T, N*L)
            acc = acc + (probs.sum(axis=2) * unbox(layer.value_norms)).sum(axis=1)  # (B, N*L)
        acc = xp.where(kp, 0.0, acc)  # (B, N*L)
        g = acc.reshape(B, N, L).sum(axis=-1)  # (B, N)
    else:
        if not bool(tm[:, 0].all()):
            fail(fn, "token_mask", token_mask, "a first answer token in every row (mode 'fid' reads t = 0)")
        n_keep = keep.sum(axis=-1)  # (B, N)
        if bool((n_keep == 0).any()):
            fail(fn, "key_pad", key_pad, "at least one real token per document (mode 'fid' averages over them)")
        acc = xp.zeros((B, NL), dtype=dtype)  # (B, N*L)
        for layer in xattn:
            acc = acc + unbox(layer.scores)[:, :, 0, :].mean(axis=1)  # (B, N*L) first answer token, head mean
        acc = xp.where(kp, 0.0, acc / len(xattn))  # (B, N*L) layer mean; pad keys (maybe -inf) dropped
        g = acc.reshape(B, N, L).sum(axis=-1) / n_keep.astype(dtype)  # (B, N)
    if not bool(xp.isfinite(g).all()):
        fail(fn, "xattn", xattn, "finite probs, scores and value norms (the teacher came out non-finite)")
    return g  # (B, N)
