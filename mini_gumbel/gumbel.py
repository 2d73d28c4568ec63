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
      dw_l = (κ/τ) Σ_i g_i S^(j*)_i (δ_il - S^(j*)_l),
  accurate row by row also where a draw saturates (its 1 - S_l kept as Σ_{i≠l} S_i; docs/method.md §4.3).
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

Numerics: any finite scores, noise and κ, float32 or float64 (docs/method.md §5.6).  The keys are kept in
units of ``u``, the power of 2 in (2 max(κ, 1), 4 max(κ, 1)]: ``x = (κ/u) w + G/u``. ``κ w`` itself would
overflow for large κ·|w|; with κ/u < 1/2 and 1/u < 1/2 neither the keys nor their differences can, and a
power of 2 scales exactly, so the keys keep the order and ties of ``κ w + G``. Every softmax subtracts its
row's largest key *before* it multiplies by ``u/τ``, so ``exp`` only sees [-inf, 0] and exactly 0 at the
best key: the row sum is >= 1 (no row can underflow to all zeros, no 0/0), and a key too far below its row's
best gets a weight of exactly 0, the value it underflows to (mask 0, gradient 0, as for padding). When the
keys of a whole row are that far apart the mask is hard: "max" puts 1 on each draw's best key, "iterative"
gives the exact K-hot of the top K keys, one per step. The only bound is that the scale ``u/τ`` be finite
in the dtype (``tau=5e-324`` is rejected by name); the gradient is proportional to it. The gradient of
"max" is at most ``(K + 1) κ/τ`` times ``max|dmask|``; that of "iterative"/"st" grows like ``κ τ^-K`` at
near-tied keys, the true derivative of the relaxation there. Where ``dscores`` does not fit the dtype,
``relaxed_topk_backward`` raises a ValueError that names ``tau`` rather than return inf or NaN: no finite
number would be the derivative.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

import numpy as np

from .backend import get_xp, is_cupy, is_traced, to_numpy, unbox
from .validate import check_array, check_cache, check_choice, check_real, check_scores, fail

__all__ = [
    "RELAXATIONS",
    "check_tau_kappa",
    "tau_kappa_issue",
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
    dims = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    # ints only: int(2.5), int(True) and int('3') would all "work" and silently draw a shape nobody asked for
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) for s in dims):
        fail("gumbel_noise", "shape", shape, "an int or a tuple of ints (sizes >= 0)", TypeError)
    if any(s < 0 for s in dims):
        fail("gumbel_noise", "shape", shape, "sizes >= 0")
    shape = tuple(int(s) for s in dims)
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


def _check_scores(fn: str, scores, k):
    """(raw scores, k) after the checks of validate.check_scores that read no values (array, float dtype,
    at least one axis, 1 <= k <= N). The values are checked through the keys (``_check_values``)."""
    raw = unbox(scores)
    if ((isinstance(raw, np.ndarray) or is_cupy(raw)) and raw.ndim >= 1 and raw.dtype.kind == "f"
            and isinstance(k, numbers.Integral) and not isinstance(k, bool) and 1 <= k <= raw.shape[-1]):
        return raw, int(k)
    return check_scores(fn, scores, k)  # raises, naming the problem


def _check_values(fn: str, x, scores, k: int, noise, xp):
    """The values of scores and noise, in one scan of the keys x = (κ/u) w + G/u in the common case: x is
    all finite exactly when the scores and the noise are (κ/u, 1/u < 1/2 cannot overflow), and then there is
    no NaN, no +inf and N >= k finite scores in every row. Otherwise (padding, or a bad value) the exact
    checks run: validate.check_scores, and the noise finite."""
    if bool(xp.all(xp.isfinite(unbox(x)))):
        return
    check_scores(fn, scores, k)
    if noise is not None:
        check_array(fn, "noise", noise, finite=True)


def check_tau_kappa(fn: str, tau, kappa, dtype=np.float64, *, names=("tau", "kappa")):
    """(tau, kappa) as floats when the relaxed top-K of scores of ``dtype`` can use them, else a ValueError
    (TypeError for a non-number) naming the one to change, by the caller's ``names``.

    Both must be finite numbers > 0, and the keys' scale u/τ finite in ``dtype``, u the power of 2 in
    (2 max(κ, 1), 4 max(κ, 1)] (module docstring, "Numerics"): τ >= u/finfo.max. When no τ <= 1 can help
    (u itself overflows, κ > finfo.max/4) κ is named, else τ. For configs and command lines that check a
    setting before any work; relaxed_topk_forward checks the same."""
    tau = check_real(fn, names[0], tau, lo=0.0, lo_open=True)
    kappa = check_real(fn, names[1], kappa, lo=0.0, lo_open=True)
    issue = tau_kappa_issue(tau, kappa, dtype)
    if issue is not None:
        which, expected = issue
        fail(fn, names[which == "kappa"], kappa if which == "kappa" else tau, expected)
    return tau, kappa


def tau_kappa_issue(tau: float, kappa: float, dtype=np.float64):
    """None when the relaxed top-K can use the floats τ and κ with scores of ``dtype``, else ("tau" or
    "kappa", what is expected of it): check_tau_kappa without the raising, for callers whose names differ
    (a grid of κ·std(w) values, a command-line flag). An infinite κ is one that is too large."""
    for which, v in (("tau", tau), ("kappa", kappa)):
        if not v > 0.0 or math.isnan(v):
            return which, "a finite number > 0"
    if not math.isfinite(tau):
        return "tau", "a finite number > 0"
    e = math.frexp(max(kappa, 1.0))[1] + 1 if math.isfinite(kappa) else 1 << 30  # u = 2**e, max(κ, 1) = m 2**(e-1)
    big = float(np.finfo(dtype).max)
    try:
        scale = math.ldexp(1.0 / tau, e)  # u/τ; 1/τ may itself be inf
    except OverflowError:
        scale = math.inf
    if scale <= big:
        return None
    name = np.dtype(dtype).name
    if kappa > 1.0 and e >= np.finfo(dtype).maxexp:  # u itself overflows: no tau <= 1 helps
        return "kappa", (f"kappa <= finfo({name}).max/4 = {big / 4:.3g} (the keys are kept in units of u, the "
                         "power of 2 in (2 kappa, 4 kappa], and scaled by u/tau)")
    return "tau", (f"tau >= u/finfo({name}).max = {math.ldexp(1.0 / big, e):.3g} (u = 2**{e}, the power of 2 in "
                   f"(2 max(1, kappa), 4 max(1, kappa)], kappa={kappa:g}): the keys are scaled by u/tau, and the "
                   "gradient with them")


def _key_scales(fn: str, tau: float, kappa: float, dtype):
    """(κ/u, 1/u, u/τ) for the keys x = (κ w + G)/u (module docstring, "Numerics"), u = 2**e the power of 2
    in (2 max(κ, 1), 4 max(κ, 1)]; u/τ must be finite in ``dtype`` (else the ValueError of check_tau_kappa).

    A power of 2 scales exactly: x is κ w + G as computed in floating point, divided by u, so it has the same
    order and the same ties ("st"'s hard mask is that of κ w + G).
    """
    check_tau_kappa(fn, tau, kappa, dtype)
    e = math.frexp(max(kappa, 1.0))[1] + 1
    return math.ldexp(kappa, -e), math.ldexp(1.0, -e), math.ldexp(1.0 / tau, e)


def _check_noise(noise, raw_scores, k: int, relaxation: str, fn: str):
    if noise is None:
        return
    try:
        get_xp(raw_scores, noise)
    except TypeError as e:
        fail(fn, "noise", noise, f"an array on the scores' backend and device ({_typename(raw_scores)}; {e})",
             TypeError)
    raw = check_array(fn, "noise", noise)  # its values: checked through the keys (_check_values)
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
    n = w.shape[-1]
    # the k-th largest score (..., 1): the max for k = 1 (a plain reduction, 5x faster than a selection)
    kth = xp.max(w, axis=-1, keepdims=True) if k == 1 else xp.partition(w, n - k, axis=-1)[..., n - k : n - k + 1]
    above = w > kth  # (..., N) surely selected, fewer than k of them
    at = w == kth  # (..., N) at the threshold
    if int(xp.count_nonzero(at)) != at.size // n:  # ties at the threshold: take the first k - #above by index
        need = k - xp.sum(above, axis=-1, keepdims=True)  # (..., 1) >= 1
        at &= xp.cumsum(at, axis=-1) <= need
    return (above | at).astype(w.dtype)  # (..., N)


# ----------------------------------------------------------------------------------------------------------
# relaxed top-K: forward


class RelaxedTopKCache(NamedTuple):
    """What the backward of ``relaxed_topk_forward`` needs (only the fields of the relaxation are set)."""

    relaxation: str
    k: int
    tau: float
    kappa: float
    shape: tuple  # scores.shape (..., N)
    S: Any = None  # "max": (..., K, N) the K Gumbel-softmax draws ((..., 1, N) without noise)
    M: Any = None  # "max": (..., N) the mask, max_j S^(j)
    a: Any = None  # "iterative"/"st": K arrays (..., N), the per-step softmaxes a^(j)
    log1m_a: Any = None  # "iterative"/"st": K-1 arrays (..., N), log(1 - a^(j)) for j < K (-inf where a^(j) == 1)


def _softmax(x, scale, xp, *, need_log=False):
    """p = softmax(scale * x) over the last axis (one exp), and with ``need_log`` also log p and -log Σ, the
    largest log p of each row (..., 1). -inf entries of x get p = 0, log p = -inf; x itself is not written.

    The row max is subtracted *before* the scale: ``x - max x`` lies in [-inf, 0] with an exact 0 at the best
    key, so exp gives 1 there and the row sum is >= 1 whatever the scale (no overflow, no 0/0, no row of
    zeros), and ``scale * (x - max x)`` can only overflow to -inf, whose exp is the 0 it underflows to anyway.
    (For autograd the max stays on the tape: p and log p do not depend on it, but -log Σ does.)
    Untraced, the temporaries are reused in place (measured 1.7x (float32) and 2.2x (float64) on the ``max``
    forward at B=64, N=100, K=5, where allocation dominates).
    """
    own = not is_traced(x)
    z = x - xp.max(x, axis=-1, keepdims=True)  # (..., N) in [-inf, 0], 0 at the row max
    with np.errstate(over="ignore"):  # a key far below its row's best may overflow to -inf: exp(-inf) = 0
        z = xp.multiply(z, scale, out=z) if own else z * scale  # (..., N) the same, scaled
    e = xp.exp(z, out=z) if own and not need_log else xp.exp(z)  # (..., N) in [0, 1], 1 at the row max
    s = xp.sum(e, axis=-1, keepdims=True)  # (..., 1) in [1, N]
    p = xp.divide(e, s, out=e) if own else e / s  # (..., N)
    if not need_log:
        return p, None, None
    logs = xp.log(s)  # (..., 1)
    # z = 0 at the row max, so that entry's log p is exactly -log s: the row's largest log p, with no max pass
    return p, (xp.subtract(z, logs, out=z) if own else z - logs), -logs  # (..., N), (..., N), (..., 1)


def _log1m(p, logp, lmax, xp):
    """log(1 - p) given p = softmax(.), logp = log p and lmax = max(logp) (..., 1) (log1mexp, Maechler
    2012), -inf where p == 1.

    Far from p = 1 (logp <= -log 2) log1p(-p) is accurate. Near it, 1 - p cancels and log(-expm1(logp)) is
    the accurate form; since the p of a row sum to 1, only the row's largest entry can be near, so that
    branch is evaluated on one value per row. No log(0) is ever evaluated: an entry with logp == 0
    (p rounds to 1) gets -inf directly, and where() only ever sees finite stand-ins.
    """
    near = logp > _LOG_HALF  # (..., N) at most one True per row
    far = xp.log1p(-xp.where(near, 0.0, p))  # (..., N) exact for the far entries
    at_one = lmax == 0.0  # (..., 1) p rounds to exactly 1
    lsafe = xp.where(at_one | (lmax <= _LOG_HALF), -1.0, lmax)  # (..., 1) in (-log 2, 0)
    near_val = xp.where(at_one, -xp.inf, xp.log(-xp.expm1(lsafe)))  # (..., 1)
    # broadcast_to, not implicit broadcasting: autograd's where() does not reduce a broadcast gradient
    return xp.where(near, xp.broadcast_to(near_val, far.shape), far)  # (..., N)


def _iterative_forward(x, k, scale, inv_u, xp):
    """x (..., N) = (κw + G)/u, scale = u/τ. a^(j) = softmax(scale·x), x ← x + log(1 - a^(j))/u, M = Σ_j a^(j).

    With α = u x this is the iteration α ← α + log(1 - a), a = softmax(α/τ), on α = κw + G.
    """
    a_steps, l1m_steps = [], []
    M = None
    for j in range(k):
        last = j == k - 1  # the last update of x is never used, nor its log p
        a, logp, lmax = _softmax(x, scale, xp, need_log=not last)  # (..., N) a^(j), (..., N) log a^(j), (..., 1)
        a_steps.append(a)
        M = a if M is None else M + a  # (..., N)
        if not last:
            l1m = _log1m(a, logp, lmax, xp)  # (..., N) log(1 - a^(j)); -inf excludes an item whose a^(j) == 1
            l1m_steps.append(l1m)
            x = x + l1m * inv_u  # (..., N)
    return M, a_steps, l1m_steps


def relaxed_topk_forward(scores, noise, k, *, tau, kappa=1.0, relaxation="max"):
    """Relaxed top-k mask M (..., N) of ``scores`` (..., N) under Gumbel ``noise``; returns (M, cache).

    relaxation "max":       M = max_j softmax((κ w + G^(j)) / τ), noise (..., K, N) or None.
    relaxation "iterative": M = Σ_j a^(j), a^(j) = softmax(α/τ), α ← α + log(1 - a^(j)), α₀ = κw + G,
                            noise (..., N).
    relaxation "st":        M = topk_mask(κ w + G, k) (hard); the backward is the "iterative" one.
    Padded candidates (score -inf) get M = 0 exactly; every row needs at least k finite scores.
    Any finite scores, noise and κ work; τ needs u/τ finite in the dtype, u <= 4 max(1, κ) (module docstring,
    "Numerics").
    """
    fn = "relaxed_topk_forward"
    check_choice(fn, "relaxation", relaxation, RELAXATIONS)
    raw, k = _check_scores(fn, scores, k)
    tau = check_real(fn, "tau", tau, lo=0.0, lo_open=True)
    kappa = check_real(fn, "kappa", kappa, lo=0.0, lo_open=True)
    kappa_u, inv_u, scale = _key_scales(fn, tau, kappa, raw.dtype)  # κ/u, 1/u, u/τ
    _check_noise(noise, raw, k, relaxation, fn)
    xp, rxp = get_xp(scores, noise), get_xp(raw)
    shape = tuple(raw.shape)
    # keys x = (κ w + G)/u, u a power of 2 > 2 max(κ, 1): κ/u < 1/2 and 1/u < 1/2, so neither they nor
    # their differences can overflow
    own = not (is_traced(scores) or is_traced(noise))

    if relaxation == "max":
        x = kappa_u * scores[..., None, :]  # (..., 1, N): without noise the K draws coincide
        if noise is not None:  # one (..., K, N) buffer: G/u, then the scores added into it
            g = noise * inv_u  # (..., K, N)
            x = xp.add(g, x, out=g) if own else g + x  # (..., K, N)
        _check_values(fn, x, scores, k, noise, rxp)
        S, _, _ = _softmax(x, scale, xp)  # (..., K|1, N) each row sums to 1
        M = xp.max(S, axis=-2)  # (..., N)
        return M, RelaxedTopKCache(relaxation, k, tau, kappa, shape, S=unbox(S), M=unbox(M))

    x = kappa_u * scores if noise is None else kappa_u * scores + noise * inv_u  # (..., N)
    _check_values(fn, x, scores, k, noise, rxp)
    hard = _topk_mask(unbox(x), k, rxp) if relaxation == "st" else None  # (..., N) exact K-hot of κw + G
    M, a_steps, l1m_steps = _iterative_forward(x, k, scale, inv_u, xp)  # (..., N), K and K-1 x (..., N)
    cache = RelaxedTopKCache(relaxation, k, tau, kappa, shape, a=tuple(unbox(a) for a in a_steps),
                             log1m_a=tuple(unbox(l) for l in l1m_steps))
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
    check_cache(fn, cache, RelaxedTopKCache, forward="relaxed_topk_forward")
    if cache.relaxation not in RELAXATIONS or (cache.S if cache.relaxation == "max" else cache.a) is None:
        raise TypeError(f"{fn}: cache=<a RelaxedTopKCache without its arrays>; expected the RelaxedTopKCache "
                        "returned by relaxed_topk_forward")  # check_cache's format
    ref = cache.S if cache.relaxation == "max" else cache.a[0]
    try:
        get_xp(dmask, ref)
    except TypeError:
        fail(fn, "dmask", dmask, f"an array on the forward's backend ({type(ref).__name__})", TypeError)
    check_array(fn, "dmask", dmask, shape=cache.shape)  # its values: checked through dscores


def _check_dscores(fn, dscores, dmask, cache, xp):
    """dscores itself when all finite, else a ValueError naming dmask (NaN or inf in it) or tau (overflow).

    One scan validates both: a NaN or inf anywhere in dmask reaches dscores (each dscores_i has a term
    dmask_i times a finite weight, and 0 * inf is NaN), and a finite dmask with a finite cache can give a
    non-finite dscores only by overflow. The sum is finite when every entry is, unless the sum itself
    overflows (then the exact scan decides).
    """
    if bool(xp.isfinite(xp.sum(dscores))) or bool(xp.all(xp.isfinite(dscores))):
        return dscores
    check_array(fn, "dmask", dmask, finite=True)
    growth = "kappa/tau" if cache.relaxation == "max" else f"kappa/tau^K (K={cache.k}) at near-tied keys"
    fail(fn, "tau", cache.tau, f"a tau at which dscores fits {dscores.dtype} (it overflowed: it grows like "
         f"{growth}, times |dmask| <= {float(xp.max(xp.abs(dmask))):.3g}); use a larger tau or float64")


def relaxed_topk_backward(dmask, cache):
    """dscores (..., N) from dmask = dL/dM (..., N); padded candidates get exactly 0.

    "max":  dw = (κ/τ) (g ⊙ M - Σ_j t_j S^(j)),  t_j = Σ_i [j = j*(i)] g_i M_i   (docs/method.md §4.3, summed over i);
    "iterative"/"st": reverse mode through the K steps of the iterative relaxation.
    A dscores that would not fit the dtype is a ValueError naming tau (module docstring, "Numerics").
    """
    fn = "relaxed_topk_backward"
    _check_dmask(dmask, cache, fn)
    xp = get_xp(dmask)
    backward = _max_backward if cache.relaxation == "max" else _iterative_backward
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named by _check_dscores, not warned about
        return _check_dscores(fn, backward(dmask, cache, xp), dmask, cache, xp)  # (..., N)


def _max_backward(dmask, cache, xp):
    """dscores of "max" (docs/method.md §4.3), accurate row by row also where the softmaxes saturate."""
    S, M = cache.S, cache.M  # (..., K, N), (..., N)
    # M = xp.max(S, axis=-2): item i's gradient goes to its winning draw j*(i) only. M is one of the S^(j)_i
    # exactly, so the winners are where S equals M: one comparison instead of an argmax over the K axis.
    # Only when two draws tie exactly (more winners than items) is the lowest j kept, which is what argmax
    # would return (in the rows redone below, a saturated item's tie is decided by its rests instead).
    tied = S == M[..., None, :]  # (..., K, N) True at the winning draw(s) of each item
    win = tied if int(xp.count_nonzero(tied)) == M.size else _first_along_draws(tied, xp)
    # S, _ = _softmax(z): dz^(j) = S^(j) ⊙ (dS^(j) - <dS^(j), S^(j)>) with dS^(j)_i = win_ji g_i.
    # The winner's S is M, so <dS^(j), S^(j)> = Σ_i win_ji g_i M_i = t_j, and summed over the draws
    # Σ_j dz^(j)_i = g_i M_i - Σ_j t_j S^(j)_i: two small matmuls, no (..., K, N) softmax backward.
    gM = dmask * M  # (..., N)
    t = xp.matmul(win.astype(S.dtype), gM[..., :, None])  # (..., K, 1)
    dz = gM - xp.matmul(xp.swapaxes(t, -1, -2), S)[..., 0, :]  # (..., N)
    # That form's error is a few eps times its largest term, max |g M| (t_j* M_l is about g_l M_l), whatever
    # the size of the row itself, which a saturated draw makes as small as 1 - M ~ e^(-gap/τ): such a row can
    # come out entirely wrong (e.g. 0) although the tensor looks right. A row is redone by
    # _saturated_backward (exact to rounding of the row's own size) when |dz|_2 < 2^-16 sqrt(N) |g M|_2;
    # every other row keeps an error of at most about 2^16 eps of its largest entry (1.5e-11 in float64, 1% in
    # float32, where only such rows lose digits). Squared norms as one batched product each (3x cheaper than
    # abs and max); a row whose g M underflows when squared (|g M| < 1e-154 in float64) is not redone. At the
    # bench's B=64, N=100, K=5, kappa=1 that is no row at tau=0.5, 2% at 0.1 and half of them at 0.01.
    n = M.shape[-1]
    redo = _rowdot(dz, dz, xp)[..., 0] < (2.0**-32 * n) * _rowdot(gM, gM, xp)[..., 0]  # (...,)
    if bool(xp.any(redo)):
        k = S.shape[-2]
        rows = xp.nonzero(redo.reshape(-1))[0]  # (R,) of the flattened batch
        dz = dz.reshape(-1, n)  # (B, N) our own fresh array
        dz[rows] = _saturated_backward(dmask.reshape(-1, n)[rows], S.reshape(-1, k, n)[rows],
                                       M.reshape(-1, n)[rows], tied.reshape(-1, k, n)[rows],
                                       win.reshape(-1, k, n)[rows], xp)  # (R, N)
        dz = dz.reshape(M.shape)  # (..., N)
    # z = (kappa * scores + noise) / tau
    return (cache.kappa / cache.tau) * dz  # (..., N)


def _first_along_draws(win, xp):
    """win (..., K, N) with only the first True of each column kept (the draw argmax would return).

    A loop over the K draws on (..., N) slices: 10x faster than cumsum and 2x faster than argmax over that
    strided axis at B=64, N=100, K=5."""
    out = win.copy()  # (..., K, N)
    seen = win[..., 0, :].copy()  # (..., N) a True in an earlier draw
    for j in range(1, win.shape[-2]):
        out[..., j, :] &= ~seen
        seen |= win[..., j, :]
    return out


def _saturated_backward(g, S, M, tied, win, xp):
    """The same dz = g ⊙ M - Σ_j t_j S^(j) for rows g, M (R, N), S, tied, win (R, K, N), with the entry of
    every saturated item (M_l > 1/2: the top entry of its winning draw) built from its parts.

    For a saturated item l, j = j*(l):  dz_l = g_l M_l - t_j M_l - Σ_{j'≠j} t_j' S^(j')_l
                                             = M_l (g_l rest_j - t~_j) - Σ_{j'≠j} t_j' S^(j')_l
    with rest_j = 1 - M_l = Σ_{i≠l} S^(j)_i and t~_j = Σ_{i≠l} win_ji g_i M_i. The first line subtracts two
    O(|g_l|) numbers to leave one of size 1 - M_l, and the small terms vanish in the rounding; the second
    builds each term on its own, rest_j as a sum of small positives. The other winners of draw j are
    unsaturated (S_l > 1/2 leaves less than 1/2 to them), so t~_j is the t_j of the unsaturated items.
    The rounding also merges draws: S^(j)_l rounds to 1 in every draw whose rest is below eps/2, so several
    can tie at M_l. The winner is the tied draw with the smallest rest (then the lowest j): rounding is
    monotone, so it can merge two S but never reorder them, and the winner is always among the tied draws.
    Indices are flat (one integer array into a raveled array), which NumPy gathers several times faster
    than tuples of index arrays.
    """
    R, K, N = S.shape
    f = xp.nonzero((M > 0.5).reshape(-1))[0]  # (P,) the saturated items, flat into (R, N)
    r, l = f // N, f % N  # (P,) their rows and columns
    P = f.shape[0]
    at = (r * (K * N) + l)[:, None] + xp.arange(K) * N  # (P, K) flat into (R, K, N): entry l of every draw
    qp, qj = xp.nonzero(tied.reshape(-1)[at])  # (Q,) the tied draws of each, Q >= P
    others = S.reshape(R * K, N)[r[qp] * K + qj]  # (Q, N) those draws (a copy)
    others.reshape(-1)[xp.arange(qp.shape[0]) * N + l[qp]] = 0.0  # without the item itself
    rest_pk = xp.full((P, K), xp.inf, dtype=S.dtype)  # (P, K) the rest of each tied draw
    rest_pk.reshape(-1)[qp * K + qj] = xp.sum(others, axis=-1)  # Σ_{i≠l} S^(j)_i
    j = xp.argmin(rest_pk, axis=-1)  # (P,) the smallest rest, then the lowest j
    pj = xp.arange(P) * K + j  # (P,) flat into (P, K)
    if qp.shape[0] != P:  # a tie: each saturated item wins at its j only
        win = win.copy()
        win.reshape(-1)[at] = xp.arange(K) == j[:, None]  # (P, K) one-hot columns
    gM = g * M  # (R, N)
    gM_u = gM.copy()
    gM_u.reshape(-1)[f] = 0.0  # (R, N) g M of the unsaturated items
    t_u = xp.matmul(win.astype(S.dtype), gM_u[..., :, None])[..., 0]  # (R, K) t~_j
    rj = r * K + j  # (P,) flat into (R, K): each saturated item's winning draw (never repeated)
    t = t_u.copy()
    t.reshape(-1)[rj] += gM.reshape(-1)[f]  # (R, K) t_j
    dz = gM - xp.matmul(t[:, None, :], S)[:, 0, :]  # (R, N) the summed form: right for the unsaturated items
    tS = t[r] * S.reshape(-1)[at]  # (P, K) t_j' S^(j')_l
    tS.reshape(-1)[pj] = 0.0  # without the winning draw's
    rest = rest_pk.reshape(-1)[pj]  # (P,) rest_j at the winning draw
    own = M.reshape(-1)[f] * (g.reshape(-1)[f] * rest - t_u.reshape(-1)[rj])  # (P,) M_l (g_l rest_j - t~_j)
    dz.reshape(-1)[f] = own - xp.sum(tS, axis=-1)  # (P,)
    return dz  # (R, N)


def _rowdot(x, y, xp):
    """Σ_i x_i y_i over the last axis (..., 1), as a batched (1, N) x (N, 1) product: 3x faster than the sum
    of the product at N = 100 to 1000, and it never materialises x ⊙ y."""
    return xp.matmul(x[..., None, :], y[..., :, None])[..., 0]  # (..., 1)


def _iterative_backward(dmask, cache, xp):
    """dscores of "iterative" and "st": reverse mode through the K steps (docs/method.md §5.1)."""
    a, l1m = cache.a, cache.log1m_a  # K x (..., N), K-1 x (..., N)
    inv_tau = 1.0 / cache.tau
    # D = τ dL/dα after step j (α after the last step is never used): every step adds its log-softmax backward
    # to it unscaled, and the 1/τ goes into the coefficient of the update and into the final κ/τ
    D = None
    for j in range(cache.k - 1, -1, -1):
        aj = a[j]  # (..., N)
        # M = M + a, with a = exp(logp):  dlogp = g ⊙ a (+ c ⊙ D/τ from the update below, for j < K-1), and
        # a, logp = _softmax(alpha / tau):  τ dL/dα += dlogp - a Σ dlogp  (log-softmax backward).
        # With s = Σ dlogp that is a ⊙ (g - s) (+ c ⊙ D/τ): g ⊙ a is never formed, only its row sum.
        s = _rowdot(dmask, aj, xp)  # (..., 1) Σ_i g_i a_i
        if D is None:
            D = (dmask - s) * aj  # (..., N)
            continue
        # alpha = alpha + l1m, l1m = _log1m(a, logp) = log(1 - exp(logp)):  dl1m/dlogp = -a / (1 - a),
        # written -expm1(-l1m), which stays accurate where 1 - a cancels; dL/dα = D / τ.
        # Where a == 1 the forward set l1m = -inf (α = -inf): the item's later softmax weights are exactly
        # 0, so D is exactly 0 there and its coefficient is set to 0 (not 0 * inf = NaN).
        lj = l1m[j]  # (..., N)
        cD = xp.expm1(-xp.where(lj == -xp.inf, 0.0, lj)) * -inv_tau * D  # (..., N) the update's part of dlogp
        s = s + xp.sum(cD, axis=-1, keepdims=True)  # (..., 1) Σ dlogp
        # the same alpha also carries on unchanged into step j + 1 (the identity path: D itself)
        D = D + cD + (dmask - s) * aj  # (..., N)
    # alpha = kappa * scores + noise
    return (cache.kappa / cache.tau) * D  # (..., N)
