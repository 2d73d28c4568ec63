"""Gumbel noise and relaxed top-K masks: the differentiable selection at the heart of Gumbel Reranking.

Dimensions: B batch (any number of leading axes ``...``), N candidates, K kept documents.
Scores ``w`` are (..., N); a score of ``-inf`` marks a padded candidate (never selected, zero gradient).

Noise.  ``G = -log(-log U)``, ``U ~ Uniform[tiny, 1)``: a standard Gumbel, mean γ ≈ 0.5772, variance π²/6.
``argmax_i (κ w_i + G_i)`` is a sample from ``p = softmax(κ w)`` (Gumbel-max), and the top-K of
``κ w + G`` is an ordered sample of K items without replacement, ``P(i_1..i_K) = Π_j p_ij / (1 - Σ_{l<j} p_il)``.

Three relaxed top-K masks ``M ∈ R^N`` behind one interface (``relaxed_topk_forward/backward``):

* ``"max"`` (the paper's, L2X):  K independent noise rows G^(j) (..., K, N),
      S^(j) = softmax((κ w + G^(j)) / τ),   M_i = max_j S^(j)_i.
  0 < M_i < 1 and 1 ≤ Σ M ≤ K. As τ → 0, M → indicator of the union of K draws *with* replacement
  (E[M_i] → 1 - (1 - p_i)^K); κ → ∞ collapses it to top-1. It never becomes an exact top-K.
  Gradient: the max routes to the winning draw j*(i) (ties to the lowest j),
      dw_l = (κ/τ) Σ_i g_i S^(j*)_i (δ_il - S^(j*)_l).
* ``"iterative"`` (Xie & Ermon 2019): one noise row, α = κ w + G; for j = 1..K
      a^(j) = softmax(α / τ),   α ← α + log(1 - a^(j));   M = Σ_j a^(j).
  Σ M = K exactly, entries may exceed 1, and τ → 0 gives the exact K-hot of top-K(κ w + G).
  log(1 - a) is computed as log1mexp(log_softmax(α/τ)), so an item whose a^(j) rounds to 1 gets α = -inf
  (excluded for good) instead of a clamped, finite penalty that large score gaps overcome.
  Caveat of the relaxation itself: the update lowers the winner's key by about gap/τ, so for τ > 1 the
  exact iteration re-selects a clear winner (scores (40, 0, -1), K=2, τ=2 give M ≈ (2, 0, 0)); once a^(j)
  rounds to 1 (gap/τ >~ 37 in float64, ~17 in float32) the -inf rule excludes it instead. Use τ <= 1.
* ``"st"`` (straight-through): forward is the exact hard top-K of κ w + G; backward is the gradient of
  the iterative relaxation at the same noise, τ and κ.

``noise=None`` switches the noise off: "max" becomes softmax(κ w / τ) (all K draws coincide),
"iterative" and "st" run on α = κ w.

Which mask to use: "max" stays in (0, 1) but sums to anything in [1, K]; "iterative" sums to exactly K but
entries can exceed 1; "st" is exactly K-hot in the forward but its gradient is a surrogate's.
"""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from .backend import get_xp, is_traced, to_numpy, unbox
from .validate import check_array, check_choice, check_real, check_scores, check_type, fail

__all__ = [
    "RELAXATIONS",
    "RelaxedTopKCache",
    "gumbel_noise",
    "topk_mask",
    "relaxed_topk_forward",
    "relaxed_topk_backward",
]

RELAXATIONS = ("max", "iterative", "st")
_LOG_HALF = -math.log(2.0)


# ----------------------------------------------------------------------------------------------------------
# noise


def gumbel_noise(shape, rng, *, xp=None, dtype=np.float64):
    """Standard Gumbel noise ``G = -log(-log U)`` with ``U ~ Uniform[tiny(dtype), 1)``, always finite.

    ``rng`` is a ``numpy.random.Generator`` (the draw happens on the host in float64, so NumPy and CuPy
    runs see identical noise); ``xp=cupy`` moves the result to the current device. The whole computation
    is in float64 and cast at the end: casting U first would round U = 1 - 2**-53 to 1.0 in float32 and
    give G = -log(0) = inf.
    """
    dt = np.dtype(dtype)
    if not np.issubdtype(dt, np.floating):
        raise TypeError(f"gumbel_noise: dtype={dt} is not a floating dtype; expected e.g. numpy.float64 or numpy.float32")
    if not callable(getattr(rng, "random", None)):
        raise TypeError(
            f"gumbel_noise: rng of type {type(rng).__name__!r} has no random(); expected a numpy.random.Generator "
            "(numpy.random.default_rng(seed))"
        )
    try:
        shape = tuple(int(s) for s in (shape if isinstance(shape, (tuple, list)) else (shape,)))
    except (TypeError, ValueError):
        raise TypeError(f"gumbel_noise: shape={shape!r} is not a tuple of ints") from None
    if any(s < 0 for s in shape):
        raise ValueError(f"gumbel_noise: shape={shape} has a negative size; expected sizes >= 0")
    u = np.asarray(rng.random(shape), dtype=np.float64)  # (*shape,) in [0, 1)
    # Keep U in [tiny(dtype), 1): U = 0 would give -log(0) = inf. The upper end is 1 - 2**-53, the largest
    # float64 below 1, where -log(-log U) = 36.7, far inside every float range.
    u = np.clip(u, np.finfo(dt).tiny, np.nextafter(1.0, 0.0))  # (*shape,)
    g = (-np.log(-np.log(u))).astype(dt)  # (*shape,) in [-6.6, 36.8] for float64, [-4.5, 36.8] for float32
    if xp is None or xp is np:
        return g
    if not callable(getattr(xp, "asarray", None)):
        raise TypeError(f"gumbel_noise: xp={xp!r} is not an array module; expected numpy, cupy or None")
    return xp.asarray(g)


# ----------------------------------------------------------------------------------------------------------
# validation (the shared checks live in mini_gumbel.validate)


def _typename(a) -> str:
    return f"{type(a).__module__.split('.')[0]}.{type(a).__name__}"


def _check_noise(noise, raw_scores, k: int, relaxation: str, fn: str):
    if noise is None:
        return
    try:
        get_xp(raw_scores, noise)
    except TypeError as e:
        fail(fn, "noise", noise, f"an array on the scores' backend and device ({_typename(raw_scores)}; {e})",
             TypeError)
    raw = check_array(fn, "noise", noise, finite=True)
    want = raw_scores.shape[:-1] + (k, raw_scores.shape[-1]) if relaxation == "max" else raw_scores.shape
    if tuple(raw.shape) != tuple(want):
        layout = "(..., K, N)" if relaxation == "max" else "(..., N)"
        fail(fn, "noise.shape", tuple(raw.shape), f"{tuple(want)} = {layout} for relaxation={relaxation!r}")
    if raw.dtype != raw_scores.dtype:
        fail(fn, "noise.dtype", raw.dtype, f"the scores' dtype {raw_scores.dtype}", TypeError)


# ----------------------------------------------------------------------------------------------------------
# exact top-K


def topk_mask(scores, k):
    """Exact top-k 0/1 mask over the last axis: ``m_i = 1[rank(w_i) < k]``, same shape and dtype as scores.

    Ties go to the lower index (a stable sort of -scores). Padding (-inf) is never selected: each row
    needs at least k finite scores. Not differentiable (a piecewise-constant function of the scores).
    """
    raw, k = check_scores("topk_mask", scores, k)
    return _topk_mask(raw, k, get_xp(raw))


def _topk_mask(w, k: int, xp):
    """topk_mask without validation: threshold at the k-th largest value, ties at it by lowest index."""
    kth = -xp.partition(-w, k - 1, axis=-1)[..., k - 1 : k]  # (..., 1) the k-th largest score
    above = w > kth  # (..., N) surely selected, fewer than k of them
    at = w == kth  # (..., N) ties at the threshold: take the first k - #above by index
    need = k - xp.sum(above, axis=-1, keepdims=True)  # (..., 1) >= 1
    return (above | (at & (xp.cumsum(at, axis=-1) <= need))).astype(w.dtype)  # (..., N)


# ----------------------------------------------------------------------------------------------------------
# relaxed top-K: forward


class RelaxedTopKCache(NamedTuple):
    """What the backward of ``relaxed_topk_forward`` needs (only the fields of the relaxation are set)."""

    relaxation: str
    k: int
    tau: float
    kappa: float
    shape: tuple  # scores.shape (..., N)
    S: Any = None  # "max": (..., K, N) the K Gumbel-softmax draws
    M: Any = None  # "max": (..., N) the mask, max_j S^(j)
    a: Any = None  # "iterative"/"st": (K, ..., N) the per-step softmaxes a^(j)
    log1m_a: Any = None  # "iterative"/"st": (K-1, ..., N) log(1 - a^(j)) for j < K (-inf where a^(j) == 1)


def _softmax(z, xp, *, need_log=False):
    """p = softmax(z) over the last axis, one exp, and with ``need_log`` also log p; -inf entries get
    p = 0, log p = -inf.

    ``z`` is always a fresh temporary of the caller's, so when autograd is not tracing, its buffer is
    reused for the result: the one place in this module that writes in place (measured 1.7x (float32) and
    2.2x (float64) on the ``max`` forward at B=64, N=100, K=5, where allocation dominates).
    """
    zmax = xp.max(z, axis=-1, keepdims=True)  # (..., 1), finite: every row has a finite entry
    own = not is_traced(z)
    zs = xp.subtract(z, zmax, out=z) if own else z - zmax  # (..., N) <= 0
    e = xp.exp(zs)  # (..., N) in [0, 1], 1 at the row max
    s = xp.sum(e, axis=-1, keepdims=True)  # (..., 1) in [1, N]
    p = xp.divide(e, s, out=e) if own else e / s  # (..., N)
    if not need_log:
        return p, None
    logs = xp.log(s)  # (..., 1)
    return p, (xp.subtract(zs, logs, out=zs) if own else zs - logs)  # (..., N), (..., N)


def _log1m(p, logp, xp):
    """log(1 - p) given p = softmax(.) and logp = log p (log1mexp, Maechler 2012), -inf where p == 1.

    Far from p = 1 (logp <= -log 2) log1p(-p) is accurate. Near it, 1 - p cancels and log(-expm1(logp)) is
    the accurate form; since the p of a row sum to 1, only the row's largest entry can be near, so that
    branch is evaluated on one value per row. No log(0) is ever evaluated: an entry with logp == 0
    (p rounds to 1) gets -inf directly, and where() only ever sees finite stand-ins.
    """
    near = logp > _LOG_HALF  # (..., N) at most one True per row
    far = xp.log1p(-xp.where(near, 0.0, p))  # (..., N) exact for the far entries
    lmax = xp.max(logp, axis=-1, keepdims=True)  # (..., 1) the only entry that can be near
    at_one = lmax == 0.0  # (..., 1) p rounds to exactly 1
    lsafe = xp.where(at_one | (lmax <= _LOG_HALF), -1.0, lmax)  # (..., 1) in (-log 2, 0)
    near_val = xp.where(at_one, -xp.inf, xp.log(-xp.expm1(lsafe)))  # (..., 1)
    # broadcast_to, not implicit broadcasting: autograd's where() does not reduce a broadcast gradient
    return xp.where(near, xp.broadcast_to(near_val, far.shape), far)  # (..., N)


def _max_forward(z, xp):
    """z (..., K, N) = (κw + G^(j))/τ. S^(j) = softmax(z^(j)), M = max_j S^(j)."""
    S, _ = _softmax(z, xp)  # (..., K, N) each row sums to 1
    M = xp.max(S, axis=-2)  # (..., N)
    return M, S


def _iterative_forward(alpha, k, tau, xp):
    """alpha (..., N) = κw + G. a^(j) = softmax(α/τ), α ← α + log(1 - a^(j)), M = Σ_j a^(j)."""
    a_steps, l1m_steps = [], []
    M = None
    inv_tau = 1.0 / tau
    for j in range(k):
        a, logp = _softmax(alpha * inv_tau, xp, need_log=True)  # (..., N) a^(j), (..., N) log a^(j)
        a_steps.append(a)
        M = a if M is None else M + a  # (..., N)
        if j < k - 1:  # the last update of α is never used
            l1m = _log1m(a, logp, xp)  # (..., N) log(1 - a^(j)); -inf excludes an item whose a^(j) == 1
            l1m_steps.append(l1m)
            alpha = alpha + l1m  # (..., N)
    return M, a_steps, l1m_steps


def relaxed_topk_forward(scores, noise, k, *, tau, kappa=1.0, relaxation="max"):
    """Relaxed top-k mask M (..., N) of ``scores`` (..., N) under Gumbel ``noise``; returns (M, cache).

    relaxation "max":       M = max_j softmax((κ w + G^(j)) / τ), noise (..., K, N) or None.
    relaxation "iterative": M = Σ_j a^(j), a^(j) = softmax(α/τ), α ← α + log(1 - a^(j)), α₀ = κw + G,
                            noise (..., N).
    relaxation "st":        M = topk_mask(κ w + G, k) (hard); the backward is the "iterative" one.
    Padded candidates (score -inf) get M = 0 exactly; every row needs at least k finite scores.
    """
    fn = "relaxed_topk_forward"
    check_choice(fn, "relaxation", relaxation, RELAXATIONS)
    raw, k = check_scores(fn, scores, k)
    tau = check_real(fn, "tau", tau, lo=0.0, lo_open=True)
    kappa = check_real(fn, "kappa", kappa, lo=0.0, lo_open=True)
    _check_noise(noise, raw, k, relaxation, fn)
    xp = get_xp(scores, noise)
    shape = tuple(raw.shape)

    if relaxation == "max":
        z = (kappa / tau) * scores[..., None, :]  # (..., 1, N): without noise the K draws coincide
        if noise is not None:
            z = z + noise * (1.0 / tau)  # (..., K, N)
        M, S = _max_forward(z, xp)  # (..., N), (..., K|1, N)
        return M, RelaxedTopKCache(relaxation, k, tau, kappa, shape, S=unbox(S), M=unbox(M))

    alpha = kappa * scores if noise is None else kappa * scores + noise  # (..., N)
    hard = _topk_mask(unbox(alpha), k, get_xp(raw)) if relaxation == "st" else None  # (..., N) exact K-hot of κw + G
    M, a_steps, l1m_steps = _iterative_forward(alpha, k, tau, xp)  # (..., N), K x (..., N), (K-1) x (..., N)
    rxp = get_xp(raw)
    a_raw = rxp.stack([unbox(a) for a in a_steps])  # (K, ..., N)
    l1m_raw = rxp.stack([unbox(x) for x in l1m_steps]) if l1m_steps else None  # (K-1, ..., N)
    cache = RelaxedTopKCache(relaxation, k, tau, kappa, shape, a=a_raw, log1m_a=l1m_raw)
    if relaxation == "iterative":
        return M, cache
    if is_traced(M):
        # Straight-through for the autograd oracle: the value is `hard` exactly (x - x == 0 in floating
        # point), the derivative is the relaxation's.
        return hard + (M - to_numpy(M)), cache
    return hard, cache


# ----------------------------------------------------------------------------------------------------------
# relaxed top-K: backward


def _check_dmask(dmask, cache, fn: str):
    check_type(fn, "cache", cache, RelaxedTopKCache, "the RelaxedTopKCache from relaxed_topk_forward")
    ref = cache.S if cache.relaxation == "max" else cache.a
    try:
        get_xp(dmask, ref)
    except TypeError:
        fail(fn, "dmask", dmask, f"an array on the forward's backend ({type(ref).__name__})", TypeError)
    check_array(fn, "dmask", dmask, shape=cache.shape, finite=True)


def relaxed_topk_backward(dmask, cache):
    """dscores (..., N) from dmask = dL/dM (..., N); padded candidates get exactly 0.

    "max":  dw = (κ/τ) (g ⊙ M - Σ_j t_j S^(j)),  t_j = Σ_i [j = j*(i)] g_i M_i   (docs/method.md §4.3, summed over i);
    "iterative"/"st": reverse mode through the K steps of the iterative relaxation.
    """
    fn = "relaxed_topk_backward"
    _check_dmask(dmask, cache, fn)
    xp = get_xp(dmask)
    if cache.relaxation == "max":
        S = cache.S  # (..., K, N)
        # M = xp.max(S, axis=-2): item i's gradient goes to its winning draw j*(i) only (lowest j on ties,
        # which is what argmax returns)
        jstar = xp.argmax(S, axis=-2)  # (..., N)
        win = (xp.arange(S.shape[-2])[:, None] == jstar[..., None, :]).astype(S.dtype)  # (..., K, N) one-hot in j
        # S, _ = _softmax(z): dz^(j) = S^(j) ⊙ (dS^(j) - <dS^(j), S^(j)>) with dS^(j)_i = win_ji g_i.
        # The winner's S is M, so <dS^(j), S^(j)> = Σ_i win_ji g_i M_i = t_j, and summed over the draws
        # Σ_j dz^(j)_i = g_i M_i - Σ_j t_j S^(j)_i: two small matmuls, no (..., K, N) softmax backward.
        gM = dmask * cache.M  # (..., N)
        t = xp.matmul(win, gM[..., :, None])  # (..., K, 1)
        dz = gM - xp.matmul(xp.swapaxes(t, -1, -2), S)[..., 0, :]  # (..., N)
        # z = (kappa / tau) * scores[..., None, :] + noise * (1 / tau)
        return (cache.kappa / cache.tau) * dz  # (..., N)

    a, l1m = cache.a, cache.log1m_a  # (K, ..., N), (K-1, ..., N)
    inv_tau = 1.0 / cache.tau
    dalpha = None  # dL/dα after step j (α after the last step is never used)
    for j in range(cache.k - 1, -1, -1):
        aj = a[j]  # (..., N)
        # M = M + a, with a = exp(logp):  dlogp = g ⊙ a
        dlogp = dmask * aj  # (..., N)
        if dalpha is not None:
            # alpha = alpha + l1m, l1m = _log1m(a, logp) = log(1 - exp(logp)):  dl1m/dlogp = -a / (1 - a),
            # written -expm1(-l1m), which stays accurate where 1 - a cancels.
            # Where a == 1 the forward set l1m = -inf (α = -inf): the item's later softmax weights are exactly
            # 0, so dalpha is exactly 0 there and its coefficient is set to 0 (not 0 * inf = NaN).
            lj = l1m[j]  # (..., N)
            coef = -xp.expm1(-xp.where(lj == -xp.inf, 0.0, lj))  # (..., N)
            dlogp = dlogp + coef * dalpha  # (..., N)
        # a, logp = _softmax(alpha * inv_tau):  dz = dlogp - a Σ dlogp  (log-softmax backward)
        dz = dlogp - aj * xp.sum(dlogp, axis=-1, keepdims=True)  # (..., N)
        # the same alpha also carries on unchanged into step j + 1 (the identity path in dalpha)
        dalpha = dz * inv_tau if dalpha is None else dalpha + dz * inv_tau  # (..., N)
    # alpha = kappa * scores + noise
    return cache.kappa * dalpha  # (..., N)
