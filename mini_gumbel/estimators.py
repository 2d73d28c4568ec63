"""The exact objective of Gumbel-top-k subset sampling, its exact gradient, and estimators of that gradient.

Dimensions: B rows (score vectors), N candidates, K kept, S = C(N, K) subsets, S_j = C(N, j) sets of size j,
m samples per row, R noise draws of one row.

**The distribution.** The top-K of ``κ w + G`` (Gumbel-top-k, docs/method.md §3.3) is an ordered sample
without replacement from ``p = softmax(z)``, ``z = κ w`` (Plackett-Luce): an ordering π has probability
``Π_j p_{π_j} / (1 - p({π_1..π_{j-1}}))``, and the *set* S sums that over its K! orderings.

**The dynamic programme.** The factor of step j depends on the items drawn so far only through their *set*
T, so the sum over orderings folds into a recursion over sets (docs/method.md §12): with f(∅) = 1,

    f(U) = Σ_{i ∈ U} f(U \\ {i}) · e^{z_i} / D(U \\ {i}),     D(T) = Σ_{l ∉ T} e^{z_l},     P(S) = f(S), |S| = K.

It is computed as written, level by level (sets of size j -> j + 1), with three choices that make it exact,
shift-invariant and fast:

* *log space*: ``log f(U) = logsumexp_{i ∈ U} [log f(U \\ {i}) + z_i - log D(U \\ {i})]``. A probability of
  1e-400 is still a finite log, and ``log D(T)`` is a logsumexp over the complement of T, a sum of positive
  terms: the ``1 - p(T)`` of the product form cancels to 0 (or below) once T holds nearly all the mass.
* *centred*: z = κ (w - max w) per row, before anything else. P depends on differences only, but a log-space
  term ``z_i - log D(T)`` adds an O(1) log of a count to z: at z ~ 1e16 that O(1) is below z's rounding, every
  factor becomes 1, and the probabilities of a constant row summed to C(4, 2)·2! = 12 instead of 1. Centred,
  the largest z is exactly 0 and every term lives on the scale of the differences. κ w itself overflows for
  κ = 1e308; κ (w - max w) fits whenever κ·(max w - min w) does, and a row where it does not is a ValueError
  naming kappa (as is a gradient κ ∂/∂z that does not fit the dtype): never inf or NaN.
* *gather-only*: every set U of size j + 1 reads its j + 1 predecessors' terms through a precomputed index
  (``into``), so a level is one fancy-index read and one logsumexp, batched over B rows; nothing is
  scattered (no ``np.add.at``, no duplicate-index assignment, nothing written in place: the NumPy ∩ CuPy
  subset, and autograd can trace the forward). The backward reads the same transitions the other way round
  through inverse indices (``out_of``, ``by_item``): every transition (T, l ∉ T) is read once per pass. The
  index structures depend on (N, K) only and are built once (``functools.lru_cache``), and copied once to each
  device that asks for them.

Cost: the DP has ``Σ_{j<K} C(N, j) (N - j)`` transitions (one per set and next item), each read once by the
forward and once by the backward; summing over orderings has ``C(N, K) · K!`` terms of K factors each. For
N = 10, K = 5: 2,560 transitions against 30,240 orderings (151,200 factors); tools/bench_estimators.py times
both. The largest level has ``C(N, K) · K`` entries per row; it must be <= ``MAX_TERMS`` (N = 20, K = 5:
77,520). ``subset_log_prob_grads`` (∂log P(S) for every S at once) runs forward mode through the same
recursion, N times the DP's cost, within ``MAX_JACOBIAN_TERMS`` (C(N, K)·K·N).

The DP's Σ_S P(S) is 1 up to rounding; log P is normalised by it (one logsumexp over S), so the sum is 1 to
the last bits and a row with exactly K real candidates gets P = 1 exactly, with dscores exactly 0.

**The objective.** With values c_S of the subsets (e.g. the reader's loss at the hard mask 1_S),

    V(w) = E_S[c_S] = Σ_S P(S) c_S,      ∂V/∂w = κ Σ_S c_S P(S) ∂log P(S)/∂z,

so V's backward is the DP's backward fed with ``dlogp = dV · P(S) · c_S``.

**Estimators** of ∂V from samples (docs/method.md §12): REINFORCE with a leave-one-out baseline (RLOO), whose score
function is log P(S) from the DP (C(N, K) small) or the sampled *ordering*'s Plackett-Luce log-probability
(no enumeration, any N), and the relaxed top-K's pathwise gradient (mini_gumbel.gumbel), all measured against
the exact ∂V in the gradient study.

Public functions (scores are one row (N,) or a batch (B, N); -inf marks a padded candidate):

    subsets_of(n, k) -> (S, k)                                   itertools.combinations(range(n), k) order
    logp, cache = subset_log_probs_forward(scores, k, kappa=)   log P(S) (S,) or (B, S)      the core pair
    dscores = subset_log_probs_backward(dlogp, cache)
    value, cache = expected_value_forward(scores, values, k, kappa=)       V () or (B,)
    dscores, dvalues = expected_value_backward(dvalue, cache)
    value, dscores = expected_value_and_grad(scores, values, k, kappa=)
    subsets, probs = subset_probabilities(scores, k, kappa=)
    subsets, logp, dlogp = subset_log_prob_grads(scores, k, kappa=)        ∂log P(S)/∂w for every S, (S, N)
    subsets, orders = sample_subsets(scores, k, rng, samples=m, kappa=)    Gumbel-top-k draws
    logp, cache = plackett_luce_log_prob_forward(scores, orders, kappa=)  log P(ordering), any N
    dscores = plackett_luce_log_prob_backward(dlogp, cache)
    surrogate, cache = rloo_forward(scores, losses, subsets_or_orders, k, kappa=, score="set" | "ordering")
    dscores = rloo_backward(dsurrogate, cache)                             the RLOO estimate of ∂V
    relaxed_gradient_draws, reinforce_gradient_draws, reinforce_moments, gradient_error_stats, subset_index

Padding. A (N,) row's subsets are those of its n real (finite) candidates, ``real[subsets_of(n, k)]``, as the
gradient study indexes its subset-loss tables. A (B, N) batch's subsets are ``subsets_of(N, k)`` for every row:
a subset holding a padded candidate has probability exactly 0, and a padded candidate gets dscores exactly 0.
Every row needs at least K real candidates.

On a device (CuPy arrays in, CuPy arrays out). Everything but two functions runs there: the DP's index
structures are copied to each device once (then cached, like the host ones), a (N,) row's real candidates are
found without a data-dependent shape, and validation is a fixed number of bool()/int() syncs at the boundary
whatever B and N. The Gumbel noise of the samplers is drawn on the host from the Generator and copied once per
call (the same draws on every backend). ``subset_index`` and ``gradient_error_stats`` are host analysis
(``backend.on_host``: device arguments copied to the host once each, arrays back).

``_log_probs_by_orderings`` keeps the sum over the K! orderings of every subset: the tests' independent
oracle and the bench's per-example path (tools/bench_estimators.py).
"""
from __future__ import annotations

import functools
import itertools
import math
import numbers
from typing import Any, Callable, NamedTuple

import numpy as np

from .backend import get_xp, is_cupy, on_host, unbox
from .gumbel import RELAXATIONS, gumbel_noise, relaxed_topk_backward, relaxed_topk_forward
from .ops import logsumexp
from .validate import (check_array, check_bool, check_cache, check_choice, check_dloss, check_int, check_real,
                       check_scores, fail)

__all__ = ["MAX_TERMS", "MAX_JACOBIAN_TERMS", "BASELINES", "SCORES", "subsets_of", "subset_log_probs_forward",
           "subset_log_probs_backward", "subset_probabilities", "subset_log_prob_grads", "expected_value_forward",
           "expected_value_backward", "expected_value_and_grad", "sample_subsets", "plackett_luce_log_prob_forward",
           "plackett_luce_log_prob_backward", "rloo_forward", "rloo_backward", "subset_index",
           "relaxed_gradient_draws", "reinforce_gradient_draws", "reinforce_moments", "gradient_error_stats",
           "SubsetCache", "ExpectedValueCache", "PlackettLuceCache", "RlooCache"]

# the DP's largest level, C(N, K) · K entries per row (N = 20, K = 5: 77,520; the arrays are B times that)
MAX_TERMS = 1 << 20
# ∂log P(S)/∂w for every subset at once (subset_log_prob_grads): C(N, K) · K · N entries per row
MAX_JACOBIAN_TERMS = 1 << 24
BASELINES = ("none", "loo")
SCORES = ("set", "ordering")


# ----------------------------------------------------------------------------------------------------------
# argument checks (one call at each public boundary)


def _check_k(fn: str, k):
    if k is None or isinstance(k, bool) or not isinstance(k, numbers.Integral):
        fail(fn, "k", k, "an int with 1 <= k <= N", TypeError)


def _check_size(fn: str, n: int, k: int, *, jacobian: bool = False):
    terms = math.comb(n, k) * k * (n if jacobian else 1)
    limit = MAX_JACOBIAN_TERMS if jacobian else MAX_TERMS
    if terms > limit:
        what = "C(N, k)·k·N" if jacobian else "C(N, k)·k"
        name = "MAX_JACOBIAN_TERMS" if jacobian else "MAX_TERMS"
        fail(fn, "k", k, f"{what} <= {name}={limit} for the exact subset DP; N={n} (real) candidates and k={k} "
             f"give {terms} (score='ordering' needs no enumeration)")


def _check_score_rows(fn: str, scores):
    """Scores (N,) or (B, N) with B >= 1: finite or -inf (check_scores), without k."""
    raw, _ = check_scores(fn, scores)
    if raw.ndim > 2 or (raw.ndim == 2 and raw.shape[0] == 0):
        fail(fn, "scores.shape", tuple(raw.shape), "one row (N,) or a batch (B, N) with B >= 1")
    return raw


def _check_rows(fn: str, scores, k, kappa, *, limit: bool = True, jacobian: bool = False, spread: bool = True):
    """(raw scores, k, kappa, n): scores (N,) or (B, N), k, kappa > 0 with κ·(each row's spread) finite (unless
    ``spread=False``: the relaxations scale their keys themselves); n is the number of candidates the subsets
    range over (a row's real ones for (N,), N for a batch).

    On device arrays this is a fixed number of synchronisations whatever B and N (check_scores' two bool(), one
    int() of the fewest real candidates of a row, which is also a (N,) row's n, and one bool() of the spread)."""
    _check_k(fn, k)
    raw = _check_score_rows(fn, scores)
    N = raw.shape[-1]
    if not 1 <= int(k) <= N:  # check_scores(fn, scores, k)'s checks, without its NaN and +inf checks again
        fail(fn, "k", k, f"an int with 1 <= k <= N={N} (the size of the last axis)")
    k = int(k)
    xp = get_xp(raw)
    fin = xp.isfinite(raw)  # (..., N)
    n_finite = int(xp.min(xp.sum(fin, axis=-1)))  # the fewest real candidates of a row (a (N,) row's own count)
    if n_finite < k:
        fail(fn, "scores", scores, f"at least k={k} finite (non-padded) candidates in every row (a row has "
             f"{n_finite})")
    kappa = check_real(fn, "kappa", kappa, lo=0.0, lo_open=True)
    n = n_finite if raw.ndim == 1 else N
    if limit:
        _check_size(fn, n, k)
        if jacobian:
            _check_size(fn, n, k, jacobian=True)
    if not spread:
        return raw, k, kappa, n
    big = float(np.finfo(raw.dtype).max)
    with np.errstate(over="ignore", invalid="ignore"):
        hi = xp.max(xp.where(fin, raw, -xp.inf), axis=-1).astype(np.float64)  # (...,) finite: >= k real per row
        lo = xp.min(xp.where(fin, raw, xp.inf), axis=-1).astype(np.float64)  # (...,)
        width = xp.max(hi - lo)  # () on the scores' device
        fits = bool((width <= big) & (kappa * width <= big))  # one synchronisation for both checks
    if not fits:  # the error path: read the spread for the message
        width = float(width)
        if not width <= big:
            fail(fn, "scores", scores, "rows whose max - min is finite (the scores are centred on each row's "
                 "maximum)")
        fail(fn, "kappa", kappa, f"kappa * (max - min of a row's scores) <= {big:.4g} (the row's spread is "
             f"{width:.4g}: the differences of κ·w overflow)")
    return raw, k, kappa, n


def _check_grad(fn: str, d, kappa: float):
    """d itself when finite; else the ValueError that names kappa: ∂/∂w = κ ∂/∂z (times the upstream gradient)
    does not fit the dtype, and no finite number would be the derivative."""
    xp = get_xp(d)
    if not bool(xp.all(xp.isfinite(d))):
        fail(fn, "kappa", kappa, f"a gradient that fits {d.dtype}: κ ∂/∂z (times the upstream gradient) "
             "overflows at this kappa")
    return d


def _other_backend(a, raw) -> bool:
    """True when ``a`` (or an array of the tuple ``a``, a callback's result) is a NumPy array beside device scores
    ``raw`` or a device array beside NumPy ones. Lists and numbers are left to the conversion that follows."""
    parts = [unbox(x) for x in (a if isinstance(a, tuple) else (a,))]
    return any(is_cupy(x) != is_cupy(raw) for x in parts if isinstance(x, np.ndarray) or is_cupy(x))


def _check_backend(fn: str, name: str, a, raw):
    """A TypeError for an argument on the other backend than the scores (_other_backend): never a hidden copy."""
    if _other_backend(a, raw):
        where = "the device" if is_cupy(raw) else "NumPy"
        fail(fn, name, a, f"arrays where the scores are ({where}; move them with backend.asarray_on)", TypeError)


def _check_rng(fn: str, rng):
    if not callable(getattr(rng, "random", None)):
        fail(fn, "rng", rng, "a numpy.random.Generator", TypeError)


def _check_draws(fn: str, name: str, ix, raw, *, k: int | None = None):
    """Sampled subsets or orderings (m, k) for a row (N,), (B, m, k) for a batch (B, N): distinct real
    candidates within each draw. Returns the raw int array."""
    lead = () if raw.ndim == 1 else (raw.shape[0],)
    a = check_array(fn, name, ix, kind="iu", shape=lead + (None, None))
    if k is not None and a.shape[-1] != k:
        fail(fn, f"{name}.shape", tuple(a.shape), f"(..., m, k) with k={k}")
    if a.shape[-1] < 1 or a.shape[-2] < 1:
        fail(fn, f"{name}.shape", tuple(a.shape), "(..., m, k) with m >= 1 draws of k >= 1 candidates")
    xp = get_xp(a)
    N = raw.shape[-1]
    if bool(xp.any((a < 0) | (a >= N))):  # one synchronisation for both ends
        fail(fn, name, ix, f"candidate indices in [0, N={N})")
    s = xp.sort(a, axis=-1)  # (..., m, k)
    if bool(xp.any(s[..., 1:] == s[..., :-1])):
        fail(fn, name, ix, "distinct candidates within each draw")
    rows = raw[None] if raw.ndim == 1 else raw  # (B, N)
    n_real = int(xp.min(xp.sum(xp.isfinite(rows), axis=-1)))
    if n_real < a.shape[-1]:
        fail(fn, "scores", raw, f"at least k={a.shape[-1]} finite (non-padded) candidates in every row (a row has "
             f"{n_real})")
    a2 = a[None] if raw.ndim == 1 else a  # (B, m, k)
    picked = rows[xp.arange(rows.shape[0])[:, None, None], a2]  # (B, m, k)
    if not bool(xp.all(xp.isfinite(picked))):
        fail(fn, name, ix, "real candidates only (a draw holds a padded, -inf, candidate)")
    return a


# ----------------------------------------------------------------------------------------------------------
# the index structures of the DP, per (N, K)


class _Level(NamedTuple):
    """The transitions from the sets T of size j to the sets U of size j + 1 (flat index t = T·(N-j) + c:
    T gains its c-th complement item, comp[T, c])."""

    comp: np.ndarray  # (S_j, N-j) the items outside T, ascending
    into: np.ndarray  # (S_{j+1}, j+1) the transition from U \ {U_t} that adds U_t
    pred: np.ndarray  # (S_{j+1}, j+1) the row of U \ {U_t} among the sets of size j
    out_of: np.ndarray  # (S_j·(N-j),) inverse of into: the flat (U, t) position of every transition
    by_item: np.ndarray  # (N, C(N-1, j)) the transitions that add item l, one per T not holding l


class _Plan(NamedTuple):
    n: int
    k: int
    sets: tuple  # [j] (S_j, j) the sets of size j in lexicographic order, j = 0..K
    member: tuple  # [j] (S_j, N) bool: l ∈ T
    slot: tuple  # [j] (S_j, N) the position of l within T (0 where l ∉ T)
    levels: tuple  # [j] _Level, j = 0..K-1
    comb: np.ndarray  # (n+1, k+2) C(a, b), what _rank reads (_draw_rank ranks sampled subsets with it)


def _combinations(n: int, j: int) -> np.ndarray:
    out = np.array(list(itertools.combinations(range(n), j)), dtype=np.int64)  # (C(n, j), j); (1, 0) for j = 0
    return out.reshape(math.comb(n, j), j)


def _rank(sets: np.ndarray, n: int, comb: np.ndarray) -> np.ndarray:
    """Lexicographic row of each ascending j-set (..., j) among the j-subsets of range(n):
    C(n, j) - 1 - Σ_t C(n - 1 - c_t, j - t)  (the combinatorial number system, counted from the end)."""
    j = sets.shape[-1]
    return comb[n, j] - 1 - comb[n - 1 - sets, j - get_xp(sets).arange(j)].sum(axis=-1)  # (...,) on sets' device


def _readonly(*arrays):
    for a in arrays:
        a.setflags(write=False)
    return arrays


@functools.lru_cache(maxsize=32)
def _comb_table(n: int, k: int) -> np.ndarray:
    """(n+1, k+2) int64: C(a, b) for a <= n, b <= k + 1 (what _rank reads)."""
    return _readonly(np.array([[math.comb(a, b) for b in range(k + 2)] for a in range(n + 1)], dtype=np.int64))[0]


@functools.lru_cache(maxsize=32)
def _plan(n: int, k: int) -> _Plan:
    """Every index the DP reads, for N = n, K = k (built once; the arrays are read-only)."""
    comb = _comb_table(n, k)  # (n+1, k+2)
    sets = [_combinations(n, j) for j in range(k + 1)]  # [j] (S_j, j)
    member = [(s[:, :, None] == np.arange(n)).any(axis=1) for s in sets]  # [j] (S_j, n)
    slot = [np.maximum(np.cumsum(m, axis=1) - 1, 0) for m in member]  # [j] (S_j, n)
    levels = []
    for j in range(k):
        U = sets[j + 1]  # (S_{j+1}, j+1)
        comp = np.nonzero(~member[j])[1].reshape(-1, n - j)  # (S_j, n-j) row-major: ascending per set
        keep = np.array([[u for u in range(j + 1) if u != t] for t in range(j + 1)], dtype=np.int64)  # (j+1, j)
        pred = _rank(U[:, keep], n, comb)  # (S_{j+1}, j+1): U without its t-th item
        # U_t has t smaller items, all in U \ {U_t}: it is the (U_t - t)-th item of that set's complement
        into = pred * (n - j) + (U - np.arange(j + 1))  # (S_{j+1}, j+1)
        out_of = np.empty(into.size, dtype=np.int64)  # (S_j·(n-j),)
        out_of[into.ravel()] = np.arange(into.size)  # a permutation: each transition enters one (U, t)
        base = _combinations(n - 1, j)  # (C(n-1, j), j) the j-sets of the n - 1 other items, relabelled below
        items = np.arange(n)[:, None, None]  # (n, 1, 1)
        T = base[None] + (base[None] >= items)  # (n, C(n-1, j), j) the sets not holding l
        by_item = _rank(T, n, comb) * (n - j) + (items[:, :, 0] - (T < items).sum(axis=-1))  # (n, C(n-1, j))
        levels.append(_Level(*_readonly(comp, into, pred, out_of, by_item)))
    return _Plan(n, k, _readonly(*sets), _readonly(*member), _readonly(*slot), tuple(levels), comb)


def _plan_on(like, n: int, k: int) -> _Plan:
    """The plan where the array ``like`` lives: NumPy's own (NumPy, autograd), or the copy on its CuPy device,
    made once per (N, K, device): a DP call on the device copies no index to it."""
    if not is_cupy(like):
        return _plan(n, k)
    return _device_plan(get_xp(like), n, k, like.device.id)


@functools.lru_cache(maxsize=32)
def _device_plan(xp, n: int, k: int, device: int) -> _Plan:
    """_plan(n, k) copied to the device, once (the only host->device copy of the DP's indices). CuPy arrays have
    no read-only flag: every use of these is a read (a gather or a copy), never a write."""
    p = _plan(n, k)
    with xp.cuda.Device(device):
        to = xp.asarray
        return _Plan(n, k, tuple(map(to, p.sets)), tuple(map(to, p.member)), tuple(map(to, p.slot)),
                     tuple(_Level(*map(to, lv)) for lv in p.levels), to(p.comb))


def subsets_of(n, k) -> np.ndarray:
    """(S, k) int64: every k-subset of range(n), rows ascending, in ``itertools.combinations`` order (the order
    of every log P(S) and value table here). C(n, k)·k must be <= MAX_TERMS."""
    fn = "subsets_of"
    n = check_int(fn, "n", n, lo=1)
    _check_k(fn, k)
    k = check_int(fn, "k", k, lo=1, hi=n)
    _check_size(fn, n, k)
    return np.array(_plan(n, k).sets[k])  # (S, k) a fresh, writable copy


# ----------------------------------------------------------------------------------------------------------
# the DP: forward, backward and the Jacobian of every log P(S)


class SubsetCache(NamedTuple):
    """subset_log_probs_forward's cache: the centred logits and every level's log-space quantities, batch last."""

    n_scores: int  # N, the length of a score row
    k: int
    kappa: float
    real: Any  # (n,) the real candidates of a (N,) row whose DP runs over them only; None otherwise
    squeeze: bool  # scores were one row (N,)
    z: Any  # (n, B) κ (w - max w), -inf on padding
    logf: tuple  # [j] (S_j, B) log f of the sets of size j, j = 0..K (unnormalised)
    logD: tuple  # [j] (S_j, B) log D(T), j = 0..K-1
    into_terms: tuple  # [j] (S_{j+1}, j+1, B) the terms log f(T) + z_i - log D(T) that U's logsumexp reads
    logp: Any  # (S, B) log P(S), normalised
    subsets: Any  # (S, k) in the scores' indices


def _rows(scores, raw, n: int):
    """(B, n) rows for the DP and the real candidates of a padded (N,) row (None when none are dropped); n: the
    row's number of real candidates (_check_rows), so that no shape here depends on the data."""
    xp, xb = get_xp(scores), get_xp(raw)
    N = raw.shape[-1]
    if raw.ndim == 2 or n == N:
        return (scores if raw.ndim == 2 else xp.reshape(scores, (1, -1))), None
    at = xb.arange(N)  # (N,)
    # the real candidates in ascending order: padded ones sort after every real one (distinct keys: any sort)
    real = xb.argsort(xb.where(xb.isfinite(raw), at, at + N))[:n]  # (n,)
    return xp.reshape(scores[real], (1, -1)), real


def _centred(w, kappa: float):
    """z = κ (w - max w) per row: the max is a constant (P depends on differences only)."""
    xp = get_xp(w)
    return kappa * (w - xp.max(unbox(w), axis=-1, keepdims=True))  # (B, n), <= 0, -inf on padding


def _subset_log_probs(scores, raw, k: int, kappa: float, n: int):
    """log P(S) (B, S) for every subset by the DP, written with xp so that autograd can trace it; and the cache.

    Inside, the batch is the *last* axis: a gather then moves whole contiguous rows of B numbers (2-5x faster
    per gather than batch-first at B = 32, N = 20; about 10% of the whole gradient). n: as _check_rows returns it."""
    xp = get_xp(scores)
    w, real = _rows(scores, raw, n)  # (B, n)
    z = xp.transpose(_centred(w, kappa))  # (n, B)
    n, B = unbox(z).shape
    plan = _plan_on(unbox(z), n, k)
    logf = [xp.zeros((1, B), dtype=unbox(z).dtype)]  # f(∅) = 1
    logD, terms = [], []
    # log 0 = -inf: a set holding a padded candidate has f = 0; a sum of logs below -1.8e308 rounds to -inf,
    # where f = 0 is the value it underflows to anyway
    with np.errstate(divide="ignore", over="ignore"):
        for j, lv in enumerate(plan.levels):
            zc = z[lv.comp]  # (S_j, n-j, B) the items outside each T
            lD = logsumexp(zc, axis=1)  # (S_j, B) finite: T leaves >= k - j > 0 real items out
            # reshape, not [:, None]: autograd cannot accumulate the gradient of a None-indexed read
            A = xp.reshape(logf[j], (-1, 1, B)) + zc - xp.reshape(lD, (-1, 1, B))  # (S_j, n-j, B) log f(T) p_l/(1-p(T))
            into = xp.reshape(A, (-1, B))[lv.into]  # (S_{j+1}, j+1, B) U's j+1 predecessors' terms
            logD.append(lD)
            terms.append(into)
            logf.append(logsumexp(into, axis=1))  # (S_{j+1}, B)
        logp = logf[k] - logsumexp(logf[k], axis=0, keepdims=True)  # (S, B)
    subsets = plan.sets[k] if real is None else real[plan.sets[k]]  # (S, k)
    cache = SubsetCache(int(raw.shape[-1]), k, kappa, real, raw.ndim == 1, unbox(z),
                        tuple(unbox(a) for a in logf), tuple(unbox(a) for a in logD),
                        tuple(unbox(a) for a in terms), unbox(logp), subsets)
    return xp.transpose(logp), cache  # (B, S)


def _safe(x, xp):
    return xp.where(xp.isfinite(x), x, 0.0)  # a -inf log f (a set of probability 0) as 0: its terms are -inf too


def _subset_log_probs_grad(dlogp, cache: SubsetCache):
    """dscores (N,) or (B, N) from dlogp (B, S): reverse mode through the DP, every read a gather.

    Forward lines and their adjoints (g_j = ∂L/∂log f at level j, W = the softmax weights of U's logsumexp):
      logp = logf_K - lse_S(logf_K)           -> g_K = dlogp - P Σ_S dlogp
      logf_{j+1}[U] = lse_t into[U, t]        -> dA[T, c] = g_{j+1}[U] W[U, t]   for the (U, t) that reads (T, c)
      A[T, c] = logf_j[T] + z_{comp[T,c]} - log D(T)
                                              -> g_j[T] = Σ_c dA[T, c];  ∂z_comp += dA - g_j[T] q[T, c]
      log D(T) = lse_c z_{comp[T,c]}          -> q[T, c] = e^{z_comp - log D(T)} = p_l / (1 - p(T))
    """
    xp = get_xp(dlogp)
    z = cache.z  # (n, B)
    n, B = z.shape
    plan = _plan_on(z, n, cache.k)
    g = xp.transpose(dlogp)  # (S, B)
    g = g - xp.exp(cache.logp) * xp.sum(g, axis=0, keepdims=True)  # (S, B)
    dz = xp.zeros_like(z)  # (n, B)
    for j in range(cache.k - 1, -1, -1):
        lv = plan.levels[j]
        W = xp.exp(cache.into_terms[j] - _safe(cache.logf[j + 1], xp)[:, None, :])  # (S_{j+1}, j+1, B)
        dA = xp.take(xp.reshape(W * g[:, None, :], (-1, B)), lv.out_of, axis=0)  # (S_j·(n-j), B) transition order
        dA = xp.reshape(dA, (-1, n - j, B))  # (S_j, n-j, B)
        g = xp.sum(dA, axis=1)  # (S_j, B)
        q = xp.exp(xp.take(z, lv.comp, axis=0) - cache.logD[j][:, None, :])  # (S_j, n-j, B)
        dzc = xp.reshape(dA - g[:, None, :] * q, (-1, B))  # (S_j·(n-j), B)
        dz = dz + xp.sum(xp.take(dzc, lv.by_item, axis=0), axis=1)  # (n, B) each item's transitions
    with np.errstate(over="ignore"):  # ∂/∂w = κ ∂/∂z may not fit the dtype: _check_grad names it
        return _expand(cache.kappa * xp.transpose(dz), cache, xp)


def _expand(dz, cache: SubsetCache, xp):
    """(B, n) gradients back to the scores' shape: zeros on the dropped padding of a (N,) row."""
    if cache.real is None:
        return dz[0] if cache.squeeze else xp.ascontiguousarray(dz)  # (N,) or (B, N)
    out = xp.zeros(cache.n_scores, dtype=dz.dtype)  # (N,) fresh
    out[cache.real] = dz[0]  # distinct indices
    return out


def _log_prob_jacobian(cache: SubsetCache):
    """∂log P(S)/∂w for every subset at once, (S, N) or (B, S, N): forward mode through the DP (N times its cost,
    against S times for one reverse pass per subset). J_j[T] = ∂log f(T)/∂z:

      J_{j+1}[U] = Σ_t W[U, t] (J_j[U ∖ U_t] + e_{U_t} - Q[U ∖ U_t]),   Q[T, l] = [l ∉ T] e^{z_l - log D(T)}
    """
    xp = get_xp(cache.z)
    z = cache.z  # (n, B)
    n, B = z.shape
    plan = _plan_on(z, n, cache.k)
    J = xp.zeros((1, n, B), dtype=z.dtype)  # (1, n, B) log f(∅) = 0
    for j, lv in enumerate(plan.levels):
        outside = xp.where(plan.member[j][:, :, None], -xp.inf, z[None])  # (S_j, n, B) -inf on T's items
        H = J - xp.exp(outside - cache.logD[j][:, None, :])  # (S_j, n, B) J - Q
        W = xp.exp(cache.into_terms[j] - _safe(cache.logf[j + 1], xp)[:, None, :])  # (S_{j+1}, j+1, B)
        slot = plan.slot[j + 1]  # (S_{j+1}, n)
        own = xp.where(plan.member[j + 1][:, :, None],
                       W[xp.arange(slot.shape[0])[:, None], slot], 0.0)  # (S_{j+1}, n, B) Σ_t W[U, t] e_{U_t}
        J = xp.einsum("stb,stnb->snb", W, H[lv.pred]) + own  # (S_{j+1}, n, B)
    J = J - xp.einsum("sb,snb->nb", xp.exp(cache.logp), J)[None]  # (S, n, B) the normalisation's term
    with np.errstate(over="ignore"):  # named by _check_grad
        J = cache.kappa * xp.transpose(J, (2, 0, 1))  # (B, S, n)
    if cache.real is None:
        return J[0] if cache.squeeze else J  # (S, N) or (B, S, N)
    out = xp.zeros((J.shape[1], cache.n_scores), dtype=J.dtype)  # (S, N)
    out[:, cache.real] = J[0]
    return out


# ----------------------------------------------------------------------------------------------------------
# public: log-probabilities, probabilities, the expected value and their gradients


def subset_log_probs_forward(scores, k, *, kappa=1.0):
    """(logp, cache): log P(S) of every k-subset under Gumbel-top-k of κ w + G, by the DP over drawn sets.

    scores (N,): logp (S,) over the subsets of its real candidates (``cache.subsets``); (B, N): logp (B, S) over
    ``subsets_of(N, k)``, -inf for a subset holding a padded candidate. Shift-invariant per row; written with
    xp so that autograd can trace it."""
    raw, k, kappa, n = _check_rows("subset_log_probs_forward", scores, k, kappa)
    logp, cache = _subset_log_probs(scores, raw, k, kappa, n)
    return (logp[0] if cache.squeeze else logp), cache


def subset_log_probs_backward(dlogp, cache):
    """dscores (the shape of the scores) from dlogp (the shape of logp): reverse mode through the DP."""
    fn = "subset_log_probs_backward"
    check_cache(fn, cache, SubsetCache, forward="subset_log_probs_forward")
    S, B = cache.logp.shape
    d = check_array(fn, "dlogp", dlogp, shape=(S,) if cache.squeeze else (B, S), finite=True)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named by _check_grad, not warned about
        ds = _subset_log_probs_grad(d[None] if cache.squeeze else d, cache)
    return _check_grad(fn, ds, cache.kappa)


def subset_probabilities(scores, k, *, kappa=1.0):
    """(subsets (S, k) int64, probs): every k-subset and its exact probability of being the top-k of κ w + G.

    (N,): probs (S,) over the subsets of the real candidates, rows ascending in lexicographic order
    (``itertools.combinations`` of the real candidates), computed in float64. (B, N): probs (B, S) over
    ``subsets_of(N, k)``, exactly 0 for a subset with a padded candidate. Each row of probs sums to 1."""
    raw, k, kappa, n = _check_rows("subset_probabilities", scores, k, kappa)
    raw = raw.astype(np.float64)
    logp, cache = _subset_log_probs(raw, raw, k, kappa, n)
    xp = get_xp(raw)
    return xp.array(cache.subsets), xp.exp(logp[0] if cache.squeeze else logp)  # a copy: the plan's is cached


def subset_log_prob_grads(scores, k, *, kappa=1.0):
    """(subsets (S, k), logp, dlogp): log P(S) and its gradient with respect to the scores for every subset (the
    score function of REINFORCE), in float64. (N,): logp (S,), dlogp (S, N); (B, N): (B, S) and (B, S, N).
    dlogp is 0 on padded candidates; each of its rows sums to 0. C(N, k)·k·N <= MAX_JACOBIAN_TERMS."""
    raw, k, kappa, n = _check_rows("subset_log_prob_grads", scores, k, kappa, jacobian=True)
    raw = raw.astype(np.float64)
    logp, cache = _subset_log_probs(raw, raw, k, kappa, n)
    subsets = get_xp(raw).array(cache.subsets)  # (S, k) a copy: the plan's is cached
    return subsets, (logp[0] if cache.squeeze else logp), _check_grad("subset_log_prob_grads",
                                                                      _log_prob_jacobian(cache), kappa)


class ExpectedValueCache(NamedTuple):
    subset: SubsetCache
    values: Any  # (B, S) c_S
    probs: Any  # (B, S) P(S)


def expected_value_forward(scores, values, k, *, kappa=1.0):
    """(V, cache): V = Σ_S P(S) c_S, the exact expected value of the top-k subset of κ w + G.

    scores (N,) with values (S,) in the order of subset_probabilities: V a scalar (0-d); (B, N) with values (B, S)
    in subsets_of(N, k) order: V (B,) (values of subsets with a padded candidate are multiplied by P = 0).
    Written so that autograd can trace it (scores and values may be autograd boxes)."""
    return _expected_value_forward("expected_value_forward", scores, values, k, kappa)


def _expected_value_forward(fn, scores, values, k, kappa):
    raw, k, kappa, n = _check_rows(fn, scores, k, kappa)
    S = math.comb(n, k)
    vals = check_array(fn, "values", values, shape=(S,) if raw.ndim == 1 else (raw.shape[0], S), finite=True)
    logp, cache = _subset_log_probs(scores, raw, k, kappa, n)  # (B, S)
    xp = get_xp(scores, values)
    c = xp.reshape(values, (1, -1)) if raw.ndim == 1 else values  # (B, S)
    probs = xp.exp(logp)  # (B, S)
    value = xp.sum(probs * c, axis=-1)  # (B,)
    return (value[0] if cache.squeeze else value), ExpectedValueCache(cache, unbox(vals).reshape(unbox(probs).shape),
                                                                       unbox(probs))


def expected_value_backward(dvalue, cache):
    """(dscores, dvalues) of V = Σ_S P(S) c_S:  ∂V/∂c_S = P(S);  ∂V/∂w = the DP's backward of dlogp = dV P(S) c_S.
    dvalue: a real number for a (N,) row, (B,) floats for a batch."""
    return _expected_value_backward("expected_value_backward", dvalue, cache)


def _expected_value_backward(fn, dvalue, cache):
    check_cache(fn, cache, ExpectedValueCache, forward="expected_value_forward")
    xp = get_xp(cache.probs)
    if cache.subset.squeeze:
        d = unbox(check_dloss(fn, dvalue, "dvalue"))
        # a number is filled in on the device (xp.asarray of it would be a host->device copy); an array is cast
        d = (xp.full((1,), d, dtype=cache.probs.dtype) if isinstance(d, numbers.Number)
             else xp.asarray(d, dtype=cache.probs.dtype).reshape(1))  # (1,)
    else:
        d = check_array(fn, "dvalue", dvalue, shape=(cache.probs.shape[0],), finite=True)  # (B,)
    dvalues = d[:, None] * cache.probs  # (B, S)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named by _check_grad, not warned about
        dscores = _subset_log_probs_grad(dvalues * cache.values, cache.subset)
    dscores = _check_grad(fn, dscores, cache.subset.kappa)
    return dscores, (dvalues[0] if cache.subset.squeeze else dvalues)


def expected_value_and_grad(scores, values, k, *, kappa=1.0):
    """(value, dscores): the exact E_S[c_S] under Gumbel-top-k of κ w + G and its gradient with respect to the
    scores, in float64. (N,): value a float, values (S,) in subset_probabilities' order; (B, N): value (B,),
    values (B, S) in subsets_of(N, k) order. dscores is 0 on padding."""
    fn = "expected_value_and_grad"
    raw, _ = check_scores(fn, scores)
    value, cache = _expected_value_forward(fn, raw.astype(np.float64), values, k, kappa)
    dv = 1.0 if cache.subset.squeeze else get_xp(raw).ones(raw.shape[0])
    dscores, _ = _expected_value_backward(fn, dv, cache)
    return (float(value) if cache.subset.squeeze else value), dscores


# ----------------------------------------------------------------------------------------------------------
# sampling and the Plackett-Luce log-probability of a sampled ordering


def sample_subsets(scores, k, rng, *, samples, kappa=1.0):
    """(subsets, orders) int64: ``samples`` = m independent Gumbel-top-k draws per row.

    orders: the top-k of κ (w - max w) + G in descending key order (the draw order), G fresh from
    gumbel.gumbel_noise; subsets: the same candidates sorted ascending. (N,) -> (m, k) each; (B, N) -> (B, m, k).
    Padded candidates are never drawn. Any N (no enumeration)."""
    fn = "sample_subsets"
    raw, k, kappa, _ = _check_rows(fn, scores, k, kappa, limit=False)
    _check_rng(fn, rng)
    m = check_int(fn, "samples", samples, lo=1)
    xp = get_xp(raw)
    w = raw[None] if raw.ndim == 1 else raw  # (B, N)
    B, N = w.shape
    G = gumbel_noise((B, m, N), rng, xp=xp, dtype=raw.dtype)  # (B, m, N)
    keys = _centred(w, kappa)[:, None, :] + G  # (B, m, N); padding stays -inf
    orders = xp.argsort(-keys, axis=-1)[..., :k].astype(np.int64)  # (B, m, k)
    subsets = xp.sort(orders, axis=-1)  # (B, m, k)
    return (subsets[0], orders[0]) if raw.ndim == 1 else (subsets, orders)


class PlackettLuceCache(NamedTuple):
    kappa: float
    squeeze: bool
    z: Any  # (B, N) centred logits
    onehot: Any  # (B, m, k, N) bool: the item drawn at each step
    zo: Any  # (B, m, k) z of the item drawn at step j
    zrest: Any  # (B, m, N) z of the items never drawn, -inf on the drawn ones
    lse_c: Any  # (B, m) log Σ of e^z over the items never drawn (-inf when none is left)
    logD: Any  # (B, m, k) log D_j, the mass still in the race at step j


def _pl_forward(scores, raw, orders, kappa: float):
    """log P(ordering) (B, m): Σ_j z_{o_j} - log D_j, D_j = Σ_{never drawn} e^z + Σ_{l >= j} e^{z_{o_l}}
    (a sum of positive terms, no 1 - Σ p); traceable by autograd."""
    xp = get_xp(scores)
    w = xp.reshape(scores, (1, -1)) if raw.ndim == 1 else scores  # (B, N)
    o = orders[None] if raw.ndim == 1 else orders  # (B, m, k)
    z = _centred(w, kappa)  # (B, N)
    B, N = unbox(z).shape
    k = o.shape[-1]
    onehot = o[..., None] == xp.arange(N)  # (B, m, k, N)
    drawn = xp.any(onehot, axis=2)  # (B, m, N)
    # one-hot matmul, not fancy indexing, picks the drawn items (padding, never drawn, is swapped for 0 first:
    # 0 · -inf = NaN)
    zo = xp.einsum("bmkn,bn->bmk", onehot.astype(unbox(z).dtype), xp.where(xp.isfinite(unbox(z)), z, 0.0))  # (B,m,k)
    # an explicit (B, m, N) copy: autograd's where() does not reduce a broadcast gradient
    ones = get_xp(unbox(z)).ones((1, o.shape[1], 1), unbox(z).dtype)  # (1, m, 1) on z's device
    zrest = xp.where(drawn, -xp.inf, xp.reshape(z, (B, 1, N)) * ones)  # (B, m, N)
    # every real candidate drawn: the rest has mass 0 (log 0 = -inf); a log-probability below -1.8e308 is -inf
    with np.errstate(divide="ignore", over="ignore"):
        lse_c = logsumexp(zrest, axis=-1)  # (B, m)
        suffix = [zo[..., k - 1]]  # log Σ_{l >= j} e^{z_{o_l}}, from the last step back
        for j in range(k - 2, -1, -1):
            suffix.append(xp.logaddexp(zo[..., j], suffix[-1]))
        logD = xp.logaddexp(xp.reshape(lse_c, (B, -1, 1)), xp.stack(suffix[::-1], axis=-1))  # (B, m, k)
        logp = xp.sum(zo - logD, axis=-1)  # (B, m)
    cache = PlackettLuceCache(kappa, raw.ndim == 1, unbox(z), onehot, unbox(zo), unbox(zrest), unbox(lse_c),
                              unbox(logD))
    return logp, cache


def _pl_backward(dlogp, cache: PlackettLuceCache):
    """dscores from dlogp (B, m). log P = Σ_j z_{o_j} - Σ_j log D_j, and ∂log D_j/∂z_i = e^{z_i - log D_j} for every
    i still in the race at step j: the drawn item o_l for j <= l, the never-drawn items at every step. Every
    exponent below is <= 0 (the item is part of that D_j)."""
    xp = get_xp(dlogp)
    k = cache.zo.shape[-1]
    early = xp.arange(k)[:, None] <= xp.arange(k)[None, :]  # (k_j, k_l) step j <= l, made on the device
    with np.errstate(over="ignore"):
        steps = xp.where(early, cache.zo[..., None, :] - cache.logD[..., :, None], -xp.inf)  # (B,m,k,k)
    dzo = dlogp[..., None] * (1.0 - xp.sum(xp.exp(steps), axis=-2))  # (B, m, k)
    race = xp.sum(xp.exp(cache.lse_c[..., None] - cache.logD), axis=-1)  # (B, m) Σ_j e^{lse_c - log D_j}
    rest = xp.exp(cache.zrest - _safe(cache.lse_c, xp)[..., None])  # (B, m, N) 0 on drawn and padded items
    dz = xp.einsum("bmkn,bmk->bn", cache.onehot.astype(dzo.dtype), dzo) - xp.einsum("bmn,bm->bn", rest,
                                                                                    dlogp * race)  # (B, N)
    with np.errstate(over="ignore"):  # named by _check_grad
        dz = cache.kappa * dz  # (B, N)
    return dz[0] if cache.squeeze else dz


def plackett_luce_log_prob_forward(scores, orders, *, kappa=1.0):
    """(logp, cache): the log-probability of each sampled ordering under Plackett-Luce of softmax(κ w), i.e. of
    drawing exactly that sequence as the top-k of κ w + G. scores (N,) with orders (m, k): logp (m,); (B, N) with
    (B, m, k): (B, m). Any N (no enumeration); shift-invariant."""
    fn = "plackett_luce_log_prob_forward"
    raw = _check_score_rows(fn, scores)
    o = _check_draws(fn, "orders", orders, raw)
    raw, _, kappa, _ = _check_rows(fn, scores, o.shape[-1], kappa, limit=False)
    logp, cache = _pl_forward(scores, raw, o, kappa)
    return (logp[0] if cache.squeeze else logp), cache


def plackett_luce_log_prob_backward(dlogp, cache):
    """dscores (the shape of the scores) from dlogp (the shape of logp)."""
    fn = "plackett_luce_log_prob_backward"
    check_cache(fn, cache, PlackettLuceCache, forward="plackett_luce_log_prob_forward")
    shape = cache.zo.shape[:-1]  # (B, m)
    d = check_array(fn, "dlogp", dlogp, shape=shape[1:] if cache.squeeze else shape, finite=True)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named by _check_grad, not warned about
        ds = _pl_backward(d[None] if cache.squeeze else d, cache)
    return _check_grad(fn, ds, cache.kappa)


# ----------------------------------------------------------------------------------------------------------
# REINFORCE with a leave-one-out baseline


class RlooCache(NamedTuple):
    score: str
    inner: Any  # SubsetCache ("set") or PlackettLuceCache ("ordering")
    advantages: Any  # (B, m) L_s - mean_{t != s} L_t
    index: Any  # (B, m) each draw's row among the subsets ("set"), None for "ordering"
    mean_loss: Any  # () or (B,): the plain mean of the losses, an unbiased estimate of V per row
    squeeze: bool


def rloo_forward(scores, losses, subsets_or_orders, k, *, kappa=1.0, score="set"):
    """(surrogate, cache): REINFORCE with a leave-one-out baseline from m >= 2 sampled subsets per row.

        surrogate = Σ_b (1/m) Σ_s (L_s - mean_{t≠s} L_t) log P(S_s)

    Its *value* is a surrogate, not an estimate of anything: its gradient with the losses held constant
    (rloo_backward) is the RLOO estimate of ∂V, unbiased because each draw's baseline is independent of that
    draw. ``cache.mean_loss`` (() or (B,)) is the plain mean of the losses, an unbiased estimate of V.
    score="set": log P(S) from the DP (needs C(N, k)·k <= MAX_TERMS); subsets_or_orders may list each draw's
    candidates in any order. score="ordering": the log-probability of the sampled ordering (sample_subsets'
    orders, in draw order), any N; also unbiased, since the losses depend on the set only.
    scores (N,) with losses (m,) and draws (m, k), or (B, N) with (B, m) and (B, m, k)."""
    fn = "rloo_forward"
    check_choice(fn, "score", score, SCORES)
    raw, k, kappa, n = _check_rows(fn, scores, k, kappa, limit=score == "set")
    ix = _check_draws(fn, "subsets_or_orders", subsets_or_orders, raw, k=k)
    m = ix.shape[-2]
    if m < 2:
        fail(fn, "subsets_or_orders.shape", tuple(ix.shape), "at least m=2 draws per row (the leave-one-out "
             "baseline of a draw is the mean of the other m - 1)")
    L = check_array(fn, "losses", losses, shape=tuple(ix.shape[:-1]), finite=True)
    xp = get_xp(scores)
    L2 = L[None] if raw.ndim == 1 else L  # (B, m)
    mean = xp.mean(L2, axis=-1)  # (B,)
    adv = (L2 - mean[:, None]) * (m / (m - 1))  # (B, m) = L_s - (Σ L - L_s) / (m - 1)
    ix2 = ix[None] if raw.ndim == 1 else ix  # (B, m, k)
    if score == "set":
        logp_all, inner = _subset_log_probs(scores, raw, k, kappa, n)  # (B, S)
        index = _draw_rank(ix2, inner, raw.shape[-1], k)  # (B, m)
        logp = logp_all[xp.arange(logp_all.shape[0])[:, None], index]  # (B, m)
    else:
        logp, inner = _pl_forward(scores, raw, ix, kappa)  # (B, m)
        index = None
    surrogate = xp.sum(adv * logp) / m  # ()
    return surrogate, RlooCache(score, inner, adv, index, mean[0] if raw.ndim == 1 else mean, raw.ndim == 1)


def _draw_rank(ix, cache: SubsetCache, N: int, k: int):
    """Row of each drawn subset (B, m, k) (its candidates in any order) among the DP's subsets: (B, m)."""
    xb = get_xp(ix)
    n = cache.z.shape[0]
    sub = xb.sort(ix, axis=-1)  # (B, m, k)
    if cache.real is not None:  # a padded (N,) row: its DP runs over the real candidates only
        pos = xb.full(N, -1, dtype=np.int64)  # (N,)
        pos[cache.real] = xb.arange(n)  # distinct indices
        sub = pos[sub]  # (B, m, k) an increasing map: rows stay ascending
    return _rank(sub, n, _plan_on(sub, n, k).comb)  # (B, m) with the table on sub's device


def rloo_backward(dsurrogate, cache):
    """dscores (the shape of the scores): the gradient of the surrogate with the losses held constant; with
    dsurrogate = 1, row b's is that row's RLOO estimate (1/m) Σ_s (L_s - mean_{t≠s} L_t) ∂log P(S_s)/∂w."""
    fn = "rloo_backward"
    check_cache(fn, cache, RlooCache, forward="rloo_forward")
    d = unbox(check_dloss(fn, dsurrogate, "dsurrogate"))
    d = d.astype(np.float64) if is_cupy(d) else float(d)  # a 0-d device array stays there: float() would sync
    B, m = cache.advantages.shape
    g = (d / m) * cache.advantages  # (B, m) ∂surrogate/∂log P of each draw
    if cache.score == "ordering":
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named by _check_grad
            ds = _pl_backward(g, cache.inner)
        return _check_grad(fn, ds, cache.inner.kappa)
    xp = get_xp(g)
    S = cache.inner.logp.shape[0]
    flat = (xp.arange(B)[:, None] * S + cache.index).ravel()  # (B·m,) a subset may be drawn twice: summed
    dlogp = xp.bincount(flat, weights=g.ravel(), minlength=B * S).reshape(B, S)  # (B, S)
    with np.errstate(over="ignore", invalid="ignore"):  # an overflow is named by _check_grad
        ds = _subset_log_probs_grad(dlogp, cache.inner)
    return _check_grad(fn, ds, cache.inner.kappa)


# ----------------------------------------------------------------------------------------------------------
# subset lookup


@on_host  # host analysis: integer codes searched in a sorted host table; device arguments copied once each
def subset_index(subsets, masks) -> np.ndarray:
    """Row of ``subsets`` (S, k) for each 0/1 (or bool) mask in ``masks`` (R, N): (R,) int64.

    A subset is coded as the integer Σ_{i ∈ S} 2^i; a mask that is not one of the rows, or holds a value other
    than 0 and 1 (NaN included), is a ValueError."""
    fn = "subset_index"
    sub = check_array(fn, "subsets", subsets, ndim=2, kind="iu")
    m = unbox(masks)
    if not isinstance(m, np.ndarray) or m.ndim != 2:
        fail(fn, "masks", masks, "a 0/1 array (R, N)", TypeError)
    if m.dtype.kind not in "biuf":
        fail(fn, "masks.dtype", m.dtype, "bool or a real dtype (0/1 values)", TypeError)
    if m.size and not np.all((m == 0) | (m == 1)):
        fail(fn, "masks", masks, "0/1 values only (found " + ("NaN" if np.isnan(m).any() else "another value") + ")")
    if m.shape[1] > 62:
        fail(fn, "masks.shape", m.shape, "N <= 62 (a subset is coded as an int64 bit mask)")
    if sub.size and int(sub.max()) >= m.shape[1]:
        fail(fn, "masks.shape", m.shape, f"N > {int(sub.max())} (the largest candidate in subsets)")
    weights = 2 ** np.arange(m.shape[1], dtype=np.int64)  # (N,)
    codes = np.sum(weights[sub], axis=1)  # (S,) one integer per subset, searched in sorted order below
    order = np.argsort(codes)
    want = (m != 0).astype(np.int64) @ weights  # (R,)
    pos = np.clip(np.searchsorted(codes[order], want), 0, codes.size - 1)  # (R,)
    if not np.all(codes[order][pos] == want):
        bad = int(np.flatnonzero(codes[order][pos] != want)[0])
        fail(fn, f"masks[{bad}]", np.asarray(m[bad]), f"one of the {sub.shape[0]} subsets (a mask with exactly "
             f"{sub.shape[1]} ones on real candidates)")
    return order[pos]


# ----------------------------------------------------------------------------------------------------------
# estimators of g* from R noise draws of one row


def _check_draw_args(fn, scores, k, rng, draws, kappa, *, exact: bool):
    raw, k, kappa, n = _check_rows(fn, scores, k, kappa, limit=exact, jacobian=exact, spread=exact)
    if raw.ndim != 1:
        fail(fn, "scores.shape", tuple(raw.shape), "one score vector (N,)")
    if raw.dtype != np.float64:
        fail(fn, "scores.dtype", raw.dtype, "float64 (the estimators are compared in float64)", TypeError)
    _check_rng(fn, rng)
    draws = check_int(fn, "draws", draws, lo=1)
    return raw, k, kappa, draws, n


def relaxed_gradient_draws(scores, k, loss_and_mask_grad: Callable, rng, *, draws, tau, kappa=1.0,
                           relaxation="max", noise=True):
    """(dscores (R, N), losses (R,)): the relaxed top-K's pathwise gradient from R independent noise draws.

    Each draw r: M_r = relaxed_topk_forward(w, G_r, k, tau, kappa, relaxation) (docs/method.md §4-5),
    (L_r, dM_r) = loss_and_mask_grad(M (R, N)) row by row, dscores_r = relaxed_topk_backward(dM_r).
    ``loss_and_mask_grad`` maps masks (R, N) to per-row losses (R,) and their mask gradients (R, N).
    noise=False: the no-noise variant; it is deterministic, so R = 1 whatever ``draws`` says."""
    fn = "relaxed_gradient_draws"
    raw, k, kappa, draws, _ = _check_draw_args(fn, scores, k, rng, draws, kappa, exact=False)
    if not callable(loss_and_mask_grad):
        fail(fn, "loss_and_mask_grad", loss_and_mask_grad, "a function masks (R, N) -> (losses (R,), dmasks (R, N))",
             TypeError)
    check_choice(fn, "relaxation", relaxation, RELAXATIONS)
    tau = check_real(fn, "tau", tau, lo=0.0, lo_open=True)
    noise = check_bool(fn, "noise", noise)
    R, N = (draws if noise else 1), raw.shape[0]
    xp = get_xp(raw)
    w = xp.broadcast_to(raw, (R, N)).copy()  # (R, N)
    G = None
    if noise:  # drawn on the host from rng (the same noise on every backend), copied to the scores' device once
        G = gumbel_noise((R, k, N) if relaxation == "max" else (R, N), rng, xp=xp)  # (R, K, N) or (R, N)
    M, cache = relaxed_topk_forward(w, G, k, tau=tau, kappa=kappa, relaxation=relaxation)  # (R, N)
    out = loss_and_mask_grad(M)
    if not (isinstance(out, tuple) and len(out) == 2):
        fail(fn, "loss_and_mask_grad(M)", out, "a pair (losses (R,), dmasks (R, N))", TypeError)
    _check_backend(fn, "loss_and_mask_grad(M)", out, raw)
    losses = check_array(fn, "losses", xp.asarray(out[0], dtype=np.float64), shape=(R,), finite=True)
    dM = check_array(fn, "dmasks", xp.asarray(out[1], dtype=np.float64), shape=(R, N), finite=True)
    return relaxed_topk_backward(dM, cache), losses


def reinforce_gradient_draws(scores, k, values, rng, *, draws, kappa=1.0, baseline="none"):
    """(dscores (R, N), losses (R,)): the score-function estimator from R independent subset draws.

    S_r = top-k(κ w + G_r) (an exact sample of P(S; w), sample_subsets), c_r its value,
    dscores_r = (c_r - b_r) ∂ log P(S_r)/∂w  with the exact ∂ log P from subset_log_prob_grads.
    ``values``: a table c_S (S,) in subset_probabilities' order, or a function mapping the drawn subsets
    (R, k) int64 (ascending rows) to their losses (R,). baseline "none": b = 0; "loo": b_r = mean of the other
    draws' values (needs R >= 2; b_r does not depend on draw r, so E[dscores] = g* still)."""
    fn = "reinforce_gradient_draws"
    raw, k, kappa, draws, n = _check_draw_args(fn, scores, k, rng, draws, kappa, exact=True)
    check_choice(fn, "baseline", baseline, BASELINES)
    if baseline == "loo" and draws < 2:
        fail(fn, "draws", draws, "at least 2 for baseline='loo'")
    S = math.comb(n, k)
    xp = get_xp(raw)
    if not callable(values):
        c = check_array(fn, "values", values, shape=(S,), finite=True)
        _check_backend(fn, "values", c, raw)
        c = xp.asarray(c, dtype=np.float64)  # (S,)
    _, cache = _subset_log_probs(raw, raw, k, kappa, n)
    dlogp = _check_grad(fn, _log_prob_jacobian(cache), kappa)  # (S, N)
    drawn, _ = sample_subsets(raw, k, rng, samples=draws, kappa=kappa)  # (R, k) the noise of (R, N), as before
    idx = _draw_rank(drawn[None], cache, raw.shape[0], k)[0]  # (R,)
    if callable(values):
        try:
            cr = values(drawn)
            mixed = _other_backend(cr, raw)  # a host result for device scores: refused below, never copied
            cr = cr if mixed else xp.asarray(cr, dtype=np.float64)  # (R,)
        except (TypeError, ValueError) as e:
            fail(fn, "values(subsets)", values, f"losses (R,) as floats ({type(e).__name__}: {e})", TypeError)
        _check_backend(fn, "values(subsets)", cr, raw)
        cr = check_array(fn, "values(subsets)", cr, shape=(draws,), finite=True)
    else:
        cr = c[idx]  # (R,)
    b = (cr.sum() - cr) / (draws - 1) if baseline == "loo" else 0.0  # (R,) or 0
    with np.errstate(over="ignore", invalid="ignore"):  # named by _check_grad
        d = (cr - b)[:, None] * dlogp[idx]  # (R, N)
    return _check_grad(fn, d, kappa), cr


def reinforce_moments(scores, k, values, *, kappa=1.0, baseline="none"):
    """(mean (N,), cov (N, N)): the exact mean and covariance of one REINFORCE draw, by enumeration.

    One draw is ĝ_S = (c_S - b) ∂ log P(S)/∂w with probability P(S); mean = Σ_S P_S ĝ_S (= g* for any constant b,
    since Σ_S P_S ∂ log P(S) = 0), cov = Σ_S P_S ĝ_S ĝ_Sᵀ - mean meanᵀ. baseline "loo" is taken at its large-R
    limit b = E_S[c_S] (the leave-one-out mean of R - 1 other draws adds O(1/R) to the variance). The standard
    error of a sample mean over R draws then needs no sample of the rare subsets: a sample estimate of it misses
    every subset of probability << 1/R."""
    fn = "reinforce_moments"
    check_choice(fn, "baseline", baseline, BASELINES)
    raw, k, kappa, _ = _check_rows(fn, scores, k, kappa, jacobian=True)
    if raw.ndim != 1:
        fail(fn, "scores.shape", tuple(raw.shape), "one score vector (N,)")
    subsets, logp, dlogp = subset_log_prob_grads(raw, k, kappa=kappa)  # (S, k), (S,), (S, N)
    c = check_array(fn, "values", values, shape=(subsets.shape[0],), finite=True)
    _check_backend(fn, "values", c, raw)
    xp = get_xp(raw)
    c = xp.asarray(c, dtype=np.float64)  # (S,)
    p = xp.exp(logp)  # (S,)
    b = p @ c if baseline == "loo" else 0.0  # () on the scores' device
    g = (c - b)[:, None] * dlogp  # (S, N) the draw when S comes up
    mean = p @ g  # (N,)
    cov = (g * p[:, None]).T @ g - xp.outer(mean, mean)  # (N, N)
    return mean, cov


@on_host  # plain floats out: the (R, N) draws and g* (and cov) copied to the host once, not a sync per number
def gradient_error_stats(draws, g_true, *, exact_cov=None) -> dict:
    """How far R >= 1 per-draw gradient estimates (R, N) are from the exact g* (N,), as plain floats:

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
    if d.shape[0] == 0:
        fail(fn, "draws.shape", d.shape, "(R, N) with at least R=1 draw")
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


# ----------------------------------------------------------------------------------------------------------
# the reference: the sum over the K! orderings of every subset (tests' oracle, bench's per-example path)


class _OrderingsCache(NamedTuple):
    n: int  # N, the length of the score vector
    k: int
    kappa: float
    real: np.ndarray  # (n,) indices of the non-padded candidates
    subsets: np.ndarray  # (S, k)
    perms: np.ndarray  # (P, k)
    z: np.ndarray  # (N,) κ (w - max w) (-inf on padding)
    zs: np.ndarray  # (S, P, k) z of the item drawn at step j
    logD: np.ndarray  # (S, P, k) log D_j
    lse_c: np.ndarray  # (S,) log Σ_{i ∈ C} e^{z_i} (-inf when C is empty)
    logp_order: np.ndarray  # (S, P) log P(π)
    logp: np.ndarray  # (S,) log P(S)


def _log_probs_by_orderings(scores, k: int, *, kappa: float = 1.0):
    """(subsets (S, k), log P(S) (S,), cache) of a (N,) row by summing over the K! orderings of every subset of
    its real candidates, (S, K!, K) arrays, no DP and no validation (the reference the DP is tested against):

        P(S) = Σ_π exp(Σ_j [z_{π_j} - log D_j(π)]),  D_j(π) = Σ_{i ∈ C} e^{z_i} + Σ_{l >= j} e^{z_{π_l}},  C = ∁S
    """
    xp = get_xp(scores)
    n = scores.shape[0]
    real = np.flatnonzero(np.isfinite(np.asarray(unbox(scores))))  # (n,)
    subsets = real[_combinations(real.size, k)]  # (S, k)
    perms = np.array(list(itertools.permutations(range(k))), dtype=np.int64).reshape(-1, k)  # (P, k)
    finite = np.isin(np.arange(n), real)  # (N,) bool
    # one-hot matmuls, not fancy indexing, pick the entries (padding is swapped for 0 first: 0 * -inf = NaN)
    w0 = xp.where(finite, scores, 0.0)  # (N,)
    z = kappa * (w0 - np.max(unbox(w0)[finite]))  # (N,) centred, 0 on padding
    zr = xp.matmul((real[:, None] == np.arange(n)[None, :]).astype(np.float64), z)  # (n,) finite
    inside = (real[None, :] == subsets[:, :, None]).any(axis=1)  # (S, n) bool: real candidate in S
    if k < real.size:
        zc = xp.where(inside, -np.inf, np.ones((inside.shape[0], 1)) * zr)  # (S, n) -inf on the members of S
        mc = np.max(unbox(zc), axis=1)  # (S,) finite: C is not empty; a constant to the tracer
        lse_c = xp.log(xp.sum(xp.exp(zc - mc[:, None]), axis=1)) + mc  # (S,)
    else:
        lse_c = np.full(subsets.shape[0], -np.inf)  # (S,) no complement
    slot = (subsets[:, :, None] == np.arange(n)[None, None, :]).astype(np.float64)  # (S, k, N) one-hot
    zsub = xp.einsum("skn,n->sk", slot, z)  # (S, k) z of each slot of S
    step = (perms[:, :, None] == np.arange(k)[None, None, :]).astype(np.float64)  # (P, k, k): step t draws slot
    zs = xp.einsum("ptk,sk->spt", step, zsub)  # (S, P, k)
    suffix = [zs[:, :, k - 1]]
    for j in range(k - 2, -1, -1):
        suffix.append(xp.logaddexp(zs[:, :, j], suffix[-1]))
    suffix = xp.stack(suffix[::-1], axis=-1)  # (S, P, k)
    logD = xp.logaddexp(xp.reshape(lse_c, (-1, 1, 1)), suffix) if k < real.size else suffix  # (S, P, k)
    logp_order = xp.sum(zs - logD, axis=-1)  # (S, P)
    logp = logsumexp(logp_order, axis=1)  # (S,)
    z_cache = np.where(finite, unbox(z), -np.inf)  # (N,)
    cache = _OrderingsCache(n, k, kappa, real, subsets, perms, z_cache, unbox(zs), unbox(logD), unbox(lse_c),
                            unbox(logp_order), unbox(logp))
    return subsets, logp, cache


def _dlogp_by_orderings(cache: _OrderingsCache) -> np.ndarray:
    """∂ log P(S)/∂w (S, N) for every subset from _log_probs_by_orderings' cache (padding columns 0):
    κ Σ_π r_π ([i ∈ S] - Σ_j [i ∈ rem_j] e^{z_i - log D_j}),  r_π = P_π / P_S, rem_j(π) = C ∪ {π_j..π_K}."""
    S, P, k = cache.zs.shape
    if k == cache.real.size:
        return np.zeros((S, cache.n))
    r = np.exp(cache.logp_order - cache.logp[:, None])  # (S, P)
    own = np.zeros((S, P, k))  # (S, P, k) indexed by step t
    for j in range(k):
        own[:, :, j:] += np.exp(cache.zs[:, :, j:] - cache.logD[:, :, j:j + 1])
    own = 1.0 - own  # (S, P, k)
    inv = np.argsort(cache.perms, axis=1)  # (P, k): the step at which each slot is drawn
    by_slot = np.take_along_axis(own, np.broadcast_to(inv[None], (S, P, k)), axis=2)  # (S, P, k)
    slot_grad = np.einsum("sp,spk->sk", r, by_slot)  # (S, k)
    onehot = (cache.subsets[:, :, None] == np.arange(cache.n)[None, None, :]).astype(np.float64)  # (S, k, N)
    d = np.einsum("sk,skn->sn", slot_grad, onehot)  # (S, N)
    race = np.einsum("sp,sp->s", r, np.sum(np.exp(cache.lse_c[:, None, None] - cache.logD), axis=2))  # (S,)
    out = np.isfinite(cache.z)[None, :] & (onehot.sum(axis=1) == 0)  # (S, N) in C
    zr = np.where(out, cache.z[None, :], 0.0)  # (S, N)
    d = d - np.where(out, np.exp(zr - cache.lse_c[:, None]), 0.0) * race[:, None]  # (S, N)
    return cache.kappa * d


def _expected_value_and_grad_by_orderings(scores, values, k: int, *, kappa: float = 1.0):
    """(V, dscores (N,)) of one (N,) row through the orderings enumeration: the per-example reference path."""
    _, logp, cache = _log_probs_by_orderings(scores, k, kappa=kappa)
    p = np.exp(logp)  # (S,)
    return float(p @ values), (values * p) @ _dlogp_by_orderings(cache)
