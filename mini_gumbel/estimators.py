"""The exact objective of Gumbel-top-k subset sampling, its exact gradient, and estimators of that gradient.

Dimensions: N candidates, K kept, S = C(n, K) subsets of the n real (non-padded) candidates, P = K! orderings
of one subset, R noise draws.

Gumbel-top-k (docs/method.md §3.3): the top-K of ``κ w + G`` is an ordered sample without replacement from
``p = softmax(κ w)`` (Plackett-Luce). The probability of the *set* S sums that over the K! orderings π of S:

    P(S; w) = Σ_π Π_{j=1..K} p_{π_j} / (1 - Σ_{l<j} p_{π_l})
            = Σ_π exp( Σ_j [ z_{π_j} - log D_j(π) ] ),    z = κ w,
      D_j(π) = Σ_{i ∉ {π_1..π_{j-1}}} e^{z_i} = Σ_{i ∈ C} e^{z_i} + Σ_{l >= j} e^{z_{π_l}},   C = complement of S

The second form is computed in log space: every D_j is a sum of positive terms (the complement's mass plus a
suffix of the ordering), so nothing cancels, unlike ``1 - Σ p``. With values c_S of the subsets (e.g. the
reader's answer NLL with the hard mask 1_S) the *true* objective and its gradient are

    V(w) = E_S[c_S] = Σ_S P(S; w) c_S,        g* = ∂V/∂w = Σ_S c_S P(S) ∂log P(S)/∂w

    ∂log P(S)/∂z_i = Σ_π (P_π / P_S) ( [i ∈ S] - Σ_j [i ∈ rem_j(π)] e^{z_i} / D_j(π) ),   ∂/∂w = κ ∂/∂z

with rem_j(π) = C ∪ {π_j..π_K} the items still in the race at step j. Everything is enumerated at once, (S, P, K)
arrays: at most 924 subsets x 720 orderings (N = 12, K = 6).

Public functions:

    subsets, probs = subset_probabilities(scores, k, kappa=1.0)          rows sorted, lexicographic order
    value, dscores = expected_value_and_grad(scores, values, k, kappa=1.0)
    subsets, logp, dlogp = subset_log_prob_grads(scores, k, kappa=1.0)   ∂ log P(S)/∂w for every S, (S, N)
    value, cache = expected_value_forward(scores, values, k, kappa=1.0)  the forward/backward pair behind it
    dscores, dvalues = expected_value_backward(dvalue, cache)

and estimators of g* from R noise draws (each returns per-draw gradients (R, N) and per-draw losses (R,)):

    relaxed_gradient_draws(scores, k, loss_and_mask_grad, rng, draws=R, tau=, kappa=, relaxation=, noise=)
        the pathwise gradient through gumbel.relaxed_topk_forward/backward ("max", "iterative", "st", or
        noise=False: the no-noise variant, one deterministic draw)
    reinforce_gradient_draws(scores, k, values, rng, draws=R, kappa=, baseline="none" | "loo")
        the score function (c_S - b) ∂ log P(S)/∂w with S = top-K(κ w + G) and the exact ∂ log P(S) from above;
        "loo": b = the mean of the other R - 1 draws' values (independent of the draw, so still unbiased)
    reinforce_moments(scores, k, values, kappa=, baseline=)   the exact mean and covariance of one REINFORCE draw
    gradient_error_stats(draws, g_true)   relative bias, its noise floor, cosine, relative std and MSE per draw

Padding: a ``-inf`` score is a padded candidate; it belongs to no subset and gets ``dscores = 0`` exactly.

Devices: the enumeration is host work (float64 NumPy). Given CuPy arrays, every function copies them to the host
once and returns its arrays on their device (``backend.on_host``); relaxed_gradient_draws runs on the scores'
backend throughout, its relaxed top-K and ``loss_and_mask_grad`` included.
"""
from __future__ import annotations

import itertools
import math
from typing import Any, Callable, NamedTuple

import numpy as np

from .backend import get_xp, on_host, unbox
from .gumbel import RELAXATIONS, gumbel_noise, relaxed_topk_backward, relaxed_topk_forward, topk_mask
from .ops import logsumexp
from .validate import check_array, check_bool, check_choice, check_int, check_real, check_scores, fail

__all__ = ["MAX_PAIRS", "BASELINES", "subset_probabilities", "subset_log_prob_grads", "expected_value_forward",
           "expected_value_backward", "expected_value_and_grad", "subset_index", "relaxed_gradient_draws",
           "reinforce_gradient_draws", "reinforce_moments", "gradient_error_stats"]

# the largest enumeration: C(12, 6) subsets x 6! orderings (N = 12, K = 6)
MAX_PAIRS = math.comb(12, 6) * math.factorial(6)
BASELINES = ("none", "loo")


# ----------------------------------------------------------------------------------------------------------
# enumeration


def _check(fn: str, scores, k, kappa):
    raw, k = check_scores(fn, scores, k)
    if raw.ndim != 1:
        fail(fn, "scores.shape", tuple(raw.shape), "one score vector (N,)")
    kappa = check_real(fn, "kappa", kappa, lo=0.0, lo_open=True)
    real = np.flatnonzero(np.isfinite(np.asarray(raw)))  # (n,) the non-padded candidates
    pairs = math.comb(real.size, k) * math.factorial(k)
    if pairs > MAX_PAIRS:
        fail(fn, "k", k, f"C(n, k) * k! <= {MAX_PAIRS} (the enumeration of N=12, K=6); n={real.size} real "
             f"candidates and k={k} give {pairs}")
    return raw, k, kappa, real


def _subsets(real: np.ndarray, k: int) -> np.ndarray:
    """(S, k) int64: every k-subset of ``real`` (sorted), rows sorted ascending, in lexicographic order."""
    return np.array(list(itertools.combinations(real.tolist(), k)), dtype=np.int64).reshape(-1, k)


def _orderings(k: int) -> np.ndarray:
    """(P, k) int64: every permutation of range(k); row π lists which subset slot is drawn at each step."""
    return np.array(list(itertools.permutations(range(k))), dtype=np.int64).reshape(-1, k)


@on_host
def subset_index(subsets, masks) -> np.ndarray:
    """Row of ``subsets`` (S, k) for each 0/1 (or bool) mask in ``masks`` (R, N): (R,) int64.

    A subset is coded as the integer Σ_{i ∈ S} 2^i; a mask that is not one of the rows is a ValueError."""
    fn = "subset_index"
    sub = check_array(fn, "subsets", subsets, ndim=2, kind="iu")
    m = unbox(masks)
    if not isinstance(m, np.ndarray) or m.ndim != 2:
        fail(fn, "masks", masks, "a 0/1 array (R, N)", TypeError)
    if sub.size and int(sub.max()) >= m.shape[1]:
        fail(fn, "masks.shape", m.shape, f"N > {int(sub.max())} (the largest candidate in subsets)")
    weights = 2 ** np.arange(m.shape[1], dtype=np.int64)  # (N,)
    codes = np.sum(weights[sub], axis=1)  # (S,) one integer per subset, searched in sorted order below
    order = np.argsort(codes)
    want = (np.asarray(m) != 0).astype(np.int64) @ weights  # (R,)
    pos = np.clip(np.searchsorted(codes[order], want), 0, codes.size - 1)  # (R,)
    if not np.all(codes[order][pos] == want):
        bad = int(np.flatnonzero(codes[order][pos] != want)[0])
        fail(fn, f"masks[{bad}]", np.asarray(m[bad]), f"one of the {sub.shape[0]} subsets (a mask with exactly "
             f"{sub.shape[1]} ones on real candidates)")
    return order[pos]


class SubsetCache(NamedTuple):
    """What the backward needs: the enumeration and its log-space quantities (float64)."""

    n: int  # N, the length of the score vector
    k: int
    kappa: float
    real: np.ndarray  # (n,) indices of the non-padded candidates
    subsets: np.ndarray  # (S, k)
    perms: np.ndarray  # (P, k)
    z: np.ndarray  # (N,) κ w (-inf on padding)
    zs: np.ndarray  # (S, P, k) z of the item drawn at step j
    logD: np.ndarray  # (S, P, k) log D_j
    lse_c: np.ndarray  # (S,) log Σ_{i ∈ C} e^{z_i} (-inf when C is empty)
    logp_order: np.ndarray  # (S, P) log P(π)
    logp: np.ndarray  # (S,) log P(S)
    values: Any = None  # (S,) c_S (expected_value_forward only)
    probs: Any = None  # (S,) P(S)


def _forward(scores, k: int, kappa: float, real: np.ndarray):
    """log P(S) (S,) for every subset, written with xp so that autograd can trace it; and the cache."""
    xp = get_xp(scores)
    n = scores.shape[0]
    subsets, perms = _subsets(real, k), _orderings(k)  # (S, k), (P, k)
    finite = np.isin(np.arange(n), real)  # (N,) bool
    # one-hot matmuls, not fancy indexing, pick the entries (padding is swapped for 0 first: 0 * -inf = NaN)
    z = kappa * xp.where(finite, scores, 0.0)  # (N,) κ w, 0 on padding
    zr = xp.matmul((real[:, None] == np.arange(n)[None, :]).astype(np.float64), z)  # (n,) finite
    inside = (real[None, :] == subsets[:, :, None]).any(axis=1)  # (S, n) bool: real candidate in S
    # log Σ_{i ∈ C} e^{z_i}: the complement's mass, in log space, shifted by the complement's own maximum
    if k < real.size:
        # an explicit (S, n) copy: autograd's where() does not reduce a broadcast gradient
        zc = xp.where(inside, -np.inf, np.ones((inside.shape[0], 1)) * zr)  # (S, n) -inf on the members of S
        mc = np.max(unbox(zc), axis=1)  # (S,) finite: C is not empty; a constant to the tracer
        lse_c = xp.log(xp.sum(xp.exp(zc - mc[:, None]), axis=1)) + mc  # (S,)
    else:
        lse_c = np.full(subsets.shape[0], -np.inf)  # (S,) no complement
    slot = (subsets[:, :, None] == np.arange(n)[None, None, :]).astype(np.float64)  # (S, k, N) one-hot
    zsub = xp.einsum("skn,n->sk", slot, z)  # (S, k) z of each slot of S
    step = (perms[:, :, None] == np.arange(k)[None, None, :]).astype(np.float64)  # (P, k, k): step t draws slot
    zs = xp.einsum("ptk,sk->spt", step, zsub)  # (S, P, k): z of the item drawn at step j of ordering π
    # suffix sums of the ordering, from the last step back: log Σ_{l >= j} e^{z_{π_l}}
    suffix = [zs[:, :, k - 1]]
    for j in range(k - 2, -1, -1):
        suffix.append(xp.logaddexp(zs[:, :, j], suffix[-1]))
    suffix = xp.stack(suffix[::-1], axis=-1)  # (S, P, k)
    logD = xp.logaddexp(xp.reshape(lse_c, (-1, 1, 1)), suffix) if k < real.size else suffix  # (S, P, k)
    logp_order = xp.sum(zs - logD, axis=-1)  # (S, P)
    logp = logsumexp(logp_order, axis=1)  # (S,)
    if k == real.size:  # one subset, P = 1 exactly (its orderings' sum is 1 up to rounding); x - x keeps the graph
        logp = logp - logp  # (1,)
    z_cache = np.where(finite, unbox(z), -np.inf)  # (N,) -inf on padding again
    cache = SubsetCache(n, k, kappa, real, subsets, perms, z_cache, unbox(zs), unbox(logD), unbox(lse_c),
                        unbox(logp_order), unbox(logp))
    return logp, cache


def _dlogp(cache: SubsetCache) -> np.ndarray:
    """∂ log P(S)/∂z (S, N) for every subset (padding columns 0), from the cache of _forward.

    ∂log P(S)/∂z_i = Σ_π r_π ([i ∈ S] - Σ_j [i ∈ rem_j] e^{z_i - log D_j}),  r_π = P_π / P_S (weights summing to 1).
    Every exponent is <= 0 (an item in the race is part of D_j), so nothing overflows.
    """
    S, P, k = cache.zs.shape
    if k == cache.real.size:  # log P(S) = 0 whatever the scores
        return np.zeros((S, cache.n))
    r = np.exp(cache.logp_order - cache.logp[:, None])  # (S, P) Σ_π r = 1
    # items of S: the one drawn at step t is in the race at steps j <= t: 1 - Σ_{j<=t} e^{zs_t - log D_j}
    own = np.zeros((S, P, k))  # (S, P, k) indexed by step t
    for j in range(k):
        own[:, :, j:] += np.exp(cache.zs[:, :, j:] - cache.logD[:, :, j:j + 1])
    own = 1.0 - own  # (S, P, k)
    # back from steps to subset slots: slot perms[π, t] was drawn at step t
    inv = np.argsort(cache.perms, axis=1)  # (P, k): the step at which each slot is drawn
    by_slot = np.take_along_axis(own, np.broadcast_to(inv[None], (S, P, k)), axis=2)  # (S, P, k)
    slot_grad = np.einsum("sp,spk->sk", r, by_slot)  # (S, k)
    onehot = (cache.subsets[:, :, None] == np.arange(cache.n)[None, None, :]).astype(np.float64)  # (S, k, N)
    d = np.einsum("sk,skn->sn", slot_grad, onehot)  # (S, N)
    if k < cache.real.size:
        # items of C are in the race at every step: -e^{z_i - lse_c} Σ_j e^{lse_c - log D_j}
        race = np.einsum("sp,sp->s", r, np.sum(np.exp(cache.lse_c[:, None, None] - cache.logD), axis=2))  # (S,)
        out = np.ones((S, cache.n), dtype=bool)  # (S, N) in C
        out[:, np.setdiff1d(np.arange(cache.n), cache.real)] = False  # padding is in no race
        out &= onehot.sum(axis=1) == 0
        zr = np.where(out, cache.z[None, :], 0.0)  # (S, N) finite stand-ins outside C
        d = d - np.where(out, np.exp(zr - cache.lse_c[:, None]), 0.0) * race[:, None]  # (S, N)
    return d


# ----------------------------------------------------------------------------------------------------------
# public: probabilities, log-probability gradients, the expected value and its gradient


@on_host
def subset_probabilities(scores, k, *, kappa=1.0):
    """(subsets (S, k) int64, probs (S,)): every k-subset of the real candidates and its exact probability of
    being the top-k of ``κ w + G`` (Gumbel-top-k: Plackett-Luce without replacement, summed over orderings).

    Rows are sorted ascending and listed in lexicographic order (``itertools.combinations`` of the real
    candidates); padded candidates (-inf) are in no subset. probs sum to 1. N <= 12, K <= 6 or any size
    with C(n, k) * k! <= MAX_PAIRS."""
    raw, k, kappa, real = _check("subset_probabilities", scores, k, kappa)
    logp, cache = _forward(np.asarray(raw, dtype=np.float64), k, kappa, real)
    return cache.subsets, np.exp(logp)


@on_host
def subset_log_prob_grads(scores, k, *, kappa=1.0):
    """(subsets (S, k), logp (S,), dlogp (S, N)): log P(S) and its gradient with respect to the scores, for
    every subset (the score function of REINFORCE). dlogp is 0 on padded candidates; each row sums to 0."""
    raw, k, kappa, real = _check("subset_log_prob_grads", scores, k, kappa)
    logp, cache = _forward(np.asarray(raw, dtype=np.float64), k, kappa, real)
    return cache.subsets, logp, kappa * _dlogp(cache)


@on_host
def expected_value_forward(scores, values, k, *, kappa=1.0):
    """(V, cache): V = Σ_S P(S; w) c_S with ``values`` c_S (S,) in the order of subset_probabilities.

    Written so that autograd can trace it (scores and values may be autograd boxes)."""
    fn = "expected_value_forward"
    raw, k, kappa, real = _check(fn, scores, k, kappa)
    n_sub = math.comb(real.size, k)
    check_array(fn, "values", values, shape=(n_sub,), finite=True)
    logp, cache = _forward(scores, k, kappa, real)
    xp = get_xp(scores, values)
    probs = xp.exp(logp)  # (S,)
    value = xp.sum(probs * values)  # ()
    return value, cache._replace(values=np.asarray(unbox(values), dtype=np.float64), probs=unbox(probs))


@on_host
def expected_value_backward(dvalue, cache):
    """(dscores (N,), dvalues (S,)) of V = Σ_S P_S c_S:  ∂V/∂w = κ Σ_S c_S P_S ∂log P_S/∂z,  ∂V/∂c_S = P_S."""
    fn = "expected_value_backward"
    if not isinstance(cache, SubsetCache) or cache.values is None:
        fail(fn, "cache", cache, "the cache of expected_value_forward", TypeError)
    if np.ndim(unbox(dvalue)) != 0:
        fail(fn, "dvalue", dvalue, "a scalar (the gradient of the loss with respect to V)")
    dvalue = check_real(fn, "dvalue", float(np.asarray(unbox(dvalue))))
    dz = (dvalue * cache.values * cache.probs) @ _dlogp(cache)  # (N,)
    return cache.kappa * dz, dvalue * cache.probs


@on_host
def expected_value_and_grad(scores, values, k, *, kappa=1.0):
    """(value, dscores): the exact E_S[c_S] under Gumbel-top-k of ``κ w + G`` and its gradient (N,) with
    respect to ``scores``; ``values`` (S,) in the order of ``subset_probabilities``. dscores is 0 on padding."""
    raw, _ = check_scores("expected_value_and_grad", scores)
    value, cache = expected_value_forward(np.asarray(raw, dtype=np.float64), values, k, kappa=kappa)
    dscores, _ = expected_value_backward(1.0, cache)
    return float(value), dscores


# ----------------------------------------------------------------------------------------------------------
# estimators of g* from R noise draws


def _check_draw_args(fn, scores, k, rng, draws):
    raw, k = check_scores(fn, scores, k)
    if raw.ndim != 1:
        fail(fn, "scores.shape", tuple(raw.shape), "one score vector (N,)")
    if raw.dtype != np.float64:
        fail(fn, "scores.dtype", raw.dtype, "float64 (the estimators are compared in float64)", TypeError)
    if not callable(getattr(rng, "random", None)):
        fail(fn, "rng", rng, "a numpy.random.Generator", TypeError)
    draws = check_int(fn, "draws", draws, lo=1)
    return raw, k, draws


def relaxed_gradient_draws(scores, k, loss_and_mask_grad: Callable, rng, *, draws, tau, kappa=1.0,
                           relaxation="max", noise=True):
    """(dscores (R, N), losses (R,)): the relaxed top-K's pathwise gradient from R independent noise draws.

    Each draw r: M_r = relaxed_topk_forward(w, G_r, k, tau, kappa, relaxation) (docs/method.md §4-5),
    (L_r, dM_r) = loss_and_mask_grad(M (R, N)) row by row, dscores_r = relaxed_topk_backward(dM_r).
    ``loss_and_mask_grad`` maps masks (R, N) to per-row losses (R,) and their mask gradients (R, N).
    noise=False: the no-noise variant; it is deterministic, so R = 1 whatever ``draws`` says."""
    fn = "relaxed_gradient_draws"
    raw, k, draws = _check_draw_args(fn, scores, k, rng, draws)
    if not callable(loss_and_mask_grad):
        fail(fn, "loss_and_mask_grad", loss_and_mask_grad, "a function masks (R, N) -> (losses (R,), dmasks (R, N))",
             TypeError)
    check_choice(fn, "relaxation", relaxation, RELAXATIONS)
    tau = check_real(fn, "tau", tau, lo=0.0, lo_open=True)
    kappa = check_real(fn, "kappa", kappa, lo=0.0, lo_open=True)
    noise = check_bool(fn, "noise", noise)
    R, N = (draws if noise else 1), raw.shape[0]
    xp = get_xp(raw)
    w = xp.broadcast_to(raw, (R, N)).copy()  # (R, N)
    G = None
    if noise:  # drawn on the host (the same noise on every backend), put where the scores are
        G = gumbel_noise((R, k, N) if relaxation == "max" else (R, N), rng, xp=xp)  # (R, K, N) or (R, N)
    M, cache = relaxed_topk_forward(w, G, k, tau=tau, kappa=kappa, relaxation=relaxation)  # (R, N)
    out = loss_and_mask_grad(M)
    if not (isinstance(out, tuple) and len(out) == 2):
        fail(fn, "loss_and_mask_grad(M)", out, "a pair (losses (R,), dmasks (R, N))", TypeError)
    losses = check_array(fn, "losses", xp.asarray(out[0], dtype=np.float64), shape=(R,), finite=True)
    dM = check_array(fn, "dmasks", xp.asarray(out[1], dtype=np.float64), shape=(R, N), finite=True)
    return relaxed_topk_backward(dM, cache), losses


@on_host
def reinforce_gradient_draws(scores, k, values, rng, *, draws, kappa=1.0, baseline="none"):
    """(dscores (R, N), losses (R,)): the score-function estimator from R independent subset draws.

    S_r = top-k(κ w + G_r) (an exact sample of P(S; w)), c_r = values[S_r],
    dscores_r = (c_r - b_r) ∂ log P(S_r)/∂w  with the exact ∂ log P from subset_log_prob_grads.
    baseline "none": b = 0; "loo": b_r = mean of the other draws' values (needs R >= 2; b_r does not depend
    on draw r, so E[dscores] = g* still)."""
    fn = "reinforce_gradient_draws"
    raw, k, draws = _check_draw_args(fn, scores, k, rng, draws)
    check_choice(fn, "baseline", baseline, BASELINES)
    if baseline == "loo" and draws < 2:
        fail(fn, "draws", draws, "at least 2 for baseline='loo'")
    kappa = check_real(fn, "kappa", kappa, lo=0.0, lo_open=True)
    subsets, _, dlogp = subset_log_prob_grads(raw, k, kappa=kappa)  # (S, k), (S,), (S, N)
    c = check_array(fn, "values", values, shape=(subsets.shape[0],), finite=True)
    c = np.asarray(c, dtype=np.float64)
    N = raw.shape[0]
    G = gumbel_noise((draws, N), rng)  # (R, N)
    hard = topk_mask(kappa * np.broadcast_to(raw, (draws, N)) + G, k)  # (R, N); padding stays -inf, never kept
    idx = subset_index(subsets, hard)  # (R,)
    cr = c[idx]  # (R,)
    b = (cr.sum() - cr) / (draws - 1) if baseline == "loo" else 0.0  # (R,) or 0
    return (cr - b)[:, None] * dlogp[idx], cr


@on_host
def reinforce_moments(scores, k, values, *, kappa=1.0, baseline="none"):
    """(mean (N,), cov (N, N)): the exact mean and covariance of one REINFORCE draw, by enumeration.

    One draw is ĝ_S = (c_S - b) ∂ log P(S)/∂w with probability P(S); mean = Σ_S P_S ĝ_S (= g* for any constant b,
    since Σ_S P_S ∂ log P(S) = 0), cov = Σ_S P_S ĝ_S ĝ_Sᵀ - mean meanᵀ. baseline "loo" is taken at its large-R
    limit b = E_S[c_S] (the leave-one-out mean of R - 1 other draws adds O(1/R) to the variance). The standard
    error of a sample mean over R draws then needs no sample of the rare subsets: a sample estimate of it misses
    every subset of probability << 1/R."""
    fn = "reinforce_moments"
    check_choice(fn, "baseline", baseline, BASELINES)
    subsets, logp, dlogp = subset_log_prob_grads(scores, k, kappa=kappa)  # (S, k), (S,), (S, N)
    c = np.asarray(check_array(fn, "values", values, shape=(subsets.shape[0],), finite=True), dtype=np.float64)
    p = np.exp(logp)  # (S,)
    b = float(p @ c) if baseline == "loo" else 0.0
    g = (c - b)[:, None] * dlogp  # (S, N) the draw when S comes up
    mean = p @ g  # (N,)
    cov = (g * p[:, None]).T @ g - np.outer(mean, mean)  # (N, N)
    return mean, cov


@on_host
def gradient_error_stats(draws, g_true, *, exact_cov=None) -> dict:
    """How far R per-draw gradient estimates (R, N) are from the exact g* (N,), as plain floats:

    rel_bias     ||mean_r ĝ_r - g*|| / ||g*||
    noise_floor  sqrt(Σ_i var_i / R) / ||g*||: the rel_bias an unbiased estimator shows on average with R draws
    bias_z       <mean - g*, u> / SE along u = g*/||g*||: about N(0, 1) for an unbiased estimator (None when the
                 draws do not vary along u, e.g. the deterministic no-noise variant: no standard error to judge by)
    norm_ratio   ||mean|| / ||g*|| (a rel_bias near 1 with a norm_ratio near 0: the estimate is just small)
    cosine       cos(mean_r ĝ_r, g*)
    rel_std      sqrt(mean_r ||ĝ_r - mean||²) / ||g*||: the spread of one draw
    rel_mse      mean_r ||ĝ_r - g*||² / ||g*||²: the error of one draw (≈ rel_bias² + rel_std²)

    ``exact_cov`` (N, N), when the covariance of one draw is known (reinforce_moments): noise_floor, bias_z and
    rel_std use it instead of the sample's.
    """
    fn = "gradient_error_stats"
    d = np.asarray(check_array(fn, "draws", draws, ndim=2, finite=True), dtype=np.float64)
    g = np.asarray(check_array(fn, "g_true", g_true, shape=(d.shape[1],), finite=True), dtype=np.float64)
    gn = float(np.linalg.norm(g))
    if gn == 0.0:
        fail(fn, "g_true", g_true, "a non-zero gradient (every statistic is relative to ||g*||)")
    R, N = d.shape
    mean = d.mean(axis=0)  # (N,)
    dev = d - mean  # (R, N)
    u = g / gn
    if exact_cov is None:
        cov = dev.T @ dev / max(R - 1, 1)  # (N, N) sample covariance of one draw
    else:
        cov = np.asarray(check_array(fn, "exact_cov", exact_cov, shape=(N, N), finite=True), dtype=np.float64)
    se = float(np.sqrt(max(float(u @ cov @ u), 0.0) / R))
    off = float((mean - g) @ u)
    bias_z = float(off / se) if se > 0 else (0.0 if off == 0.0 else None)
    mn = float(np.linalg.norm(mean))
    tr = max(float(np.trace(cov)), 0.0)
    return {
        "draws": R,
        "rel_bias": float(np.linalg.norm(mean - g) / gn),
        "noise_floor": float(np.sqrt(tr / R) / gn),
        "bias_z": bias_z,
        "norm_ratio": mn / gn,
        "cosine": float(mean @ g / (mn * gn)) if mn > 0 else 0.0,
        "rel_std": float(np.sqrt(tr) / gn) if exact_cov is not None else float(np.sqrt((dev ** 2).sum(axis=1).mean()) / gn),
        "rel_mse": float(((d - g) ** 2).sum(axis=1).mean() / gn ** 2),
    }
