"""mini_gumbel.gumbel: gradients, closed-form limits (docs/method.md §3-5), input validation, dtypes, CuPy parity.

Monte Carlo statistics of the noise and of the masks are in test_gumbel_stats.py.
"""
import math
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import softmax as scipy_softmax

from mini_gumbel.gradcheck import check_grads, probe, rel_error
from mini_gumbel.gumbel import (
    RELAXATIONS,
    gumbel_noise,
    relaxed_topk_backward,
    relaxed_topk_forward,
    topk_mask,
)

TOL = 1e-6  # directional finite differences, float64 (check_grads' default: a correct gradient gives ~1e-9)


def noise_for(relaxation, scores_shape, k, rng, dtype=np.float64):
    """Noise of the shape each relaxation takes: (..., K, N) for "max", (..., N) otherwise."""
    shape = scores_shape[:-1] + (k, scores_shape[-1]) if relaxation == "max" else scores_shape
    return gumbel_noise(shape, rng, dtype=dtype)


def check_relaxation(relaxation, w, noise, k, tau, kappa, rng, *, mask=None):
    """check_grads on M(w): finite differences, autograd of the same forward, the 1% mutation must fail.

    "st" returns the gradient of the iterative relaxation by definition, so its finite difference is taken
    on that relaxation (its own forward is piecewise constant); autograd traces the st forward itself.
    """
    def forward(rel):
        return lambda d: relaxed_topk_forward(d["w"], noise, k, tau=tau, kappa=kappa, relaxation=rel)

    return check_grads(forward(relaxation), lambda R, c: {"w": relaxed_topk_backward(R, c)}, {"w": w}, rng=rng,
                       mask=mask, fd_forward=forward("iterative") if relaxation == "st" else None)


# ---------------------------------------------------------------------------------------------------------
# gradients

GRAD_CASES = [  # (scores shape, k)
    ((1,), 1),
    ((2,), 1),
    ((2,), 2),
    ((5,), 3),
    ((4, 6), 2),
    ((4, 6), 6),
    ((2, 3, 7), 4),
]


@pytest.mark.parametrize("use_noise", [True, False], ids=["noise", "no-noise"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("shape,k", GRAD_CASES)
def test_backward_matches_directional_finite_difference(relaxation, use_noise, shape, k):
    rng = np.random.default_rng(zlib.crc32(repr((relaxation, use_noise, shape, k)).encode()))
    w = rng.standard_normal(shape)  # (..., N)
    noise = noise_for(relaxation, shape, k, rng) if use_noise else None
    tau, kappa = 0.7, 1.3
    M, cache = relaxed_topk_forward(w, noise, k, tau=tau, kappa=kappa, relaxation=relaxation)
    R = probe(M.shape, rng)  # loss = sum(M * R), so dL/dM = R
    dw = relaxed_topk_backward(R, cache)
    assert dw.shape == w.shape and dw.dtype == w.dtype
    if shape[-1] == 1:  # a single candidate is always fully selected: M = 1, dM/dw = 0 exactly
        assert np.all(M == 1.0) and np.all(dw == 0.0)
        return
    rep = check_relaxation(relaxation, w, noise, k, tau, kappa, rng)
    assert rep.fd_rel_error < TOL, rep
    assert abs(rep.fd_analytic) > 1e-8  # the probe direction actually moves the loss


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_one_percent_wrong_gradient_fails_the_check(relaxation):
    rng = np.random.default_rng(7)
    w, k = rng.standard_normal((3, 6)), 3
    noise = noise_for(relaxation, w.shape, k, rng)
    rep = check_relaxation(relaxation, w, noise, k, 0.7, 1.0, np.random.default_rng(1))  # scales dw by 1.01
    assert rep.fd_rel_error < TOL
    assert rep.mutated_fd_rel_error > 1e-3  # ~1e-2: four orders of magnitude above the tolerance
    assert rep.mutated_autograd_rel_error["w"] > 1e-3  # ~1e-2 against autograd too


@pytest.mark.parametrize("use_noise", [True, False], ids=["noise", "no-noise"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("shape,k", [((7,), 3), ((4, 9), 4), ((2, 3, 5), 5)])
def test_backward_matches_autograd_of_the_same_forward(relaxation, use_noise, shape, k):
    autograd = pytest.importorskip("autograd")
    anp = pytest.importorskip("autograd.numpy")
    rng = np.random.default_rng(11)
    w = 2.0 * rng.standard_normal(shape)  # (..., N)
    noise = noise_for(relaxation, shape, k, rng) if use_noise else None
    check_relaxation(relaxation, w, noise, k, 0.4, 1.7, rng)
    # traced, the forward's value is unchanged (st: the hard mask; only its gradient is the iterative one)
    M, _ = relaxed_topk_forward(w, noise, k, tau=0.4, kappa=1.7, relaxation=relaxation)
    R = probe(M.shape, rng)
    value = autograd.value_and_grad(
        lambda x: anp.sum(relaxed_topk_forward(x, noise, k, tau=0.4, kappa=1.7, relaxation=relaxation)[0] * R))(w)[0]
    assert value == pytest.approx(float(np.sum(M * R)), rel=1e-14, abs=1e-14)


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_padding_gets_zero_mask_zero_gradient_and_passes_gradcheck(relaxation):
    pytest.importorskip("autograd")
    rng = np.random.default_rng(3)
    w = rng.standard_normal((3, 7))
    w[0, [1, 4]] = -np.inf
    w[2, [0, 1, 2, 6]] = -np.inf  # 3 finite entries left = k
    k = 3
    pad = np.isinf(w)
    noise = noise_for(relaxation, w.shape, k, rng)
    M, cache = relaxed_topk_forward(w, noise, k, tau=0.6, relaxation=relaxation)
    R = probe(M.shape, rng)
    dw = relaxed_topk_backward(R, cache)
    assert np.all(np.isfinite(M)) and np.all(np.isfinite(dw))
    assert np.all(M[pad] == 0.0) and np.all(dw[pad] == 0.0)
    # the row with exactly k finite scores: all mass on those k (iterative: sums to k; st: exactly 1 each)
    assert np.all(M[2, ~pad[2]] > 0)
    if relaxation == "iterative":
        assert M[2].sum() == pytest.approx(k, abs=1e-12)
    if relaxation == "st":
        assert np.all(M[2, ~pad[2]] == 1.0)
    # finite differences perturb only the real candidates (w + eps v stays -inf on padding); autograd sees all
    check_relaxation(relaxation, w, noise, k, 0.6, 1.0, rng, mask={"w": (~pad).astype(float)})


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_forward_and_backward_never_write_into_their_inputs(relaxation):
    rng = np.random.default_rng(4)
    w, k = rng.standard_normal((3, 6)), 2
    w[1, 0] = -np.inf
    noise = noise_for(relaxation, w.shape, k, rng)
    R = probe(w.shape, rng)
    copies = [x.copy() for x in (w, noise, R)]
    M, cache = relaxed_topk_forward(w, noise, k, tau=0.5, relaxation=relaxation)
    relaxed_topk_backward(R, cache)
    cached = [np.copy(x) for x in cache if isinstance(x, np.ndarray)]
    relaxed_topk_backward(R, cache)  # a second backward sees the same cache
    for x, c in zip((w, noise, R), copies):
        np.testing.assert_array_equal(x, c)
    for x, c in zip([x for x in cache if isinstance(x, np.ndarray)], cached):
        np.testing.assert_array_equal(x, c)


# ---------------------------------------------------------------------------------------------------------
# hypothesis strategies: unique scores (integers / 8, so every gap is at least 1/8 and there are no ties)


@st.composite
def score_rows(draw, min_n=1, max_n=8, max_rows=3):
    n = draw(st.integers(min_n, max_n))
    rows = draw(st.integers(1, max_rows))
    w = np.array(
        [draw(st.lists(st.integers(-40, 40), min_size=n, max_size=n, unique=True)) for _ in range(rows)], dtype=np.float64
    ) / 8.0  # (B, N)
    k = draw(st.integers(1, n))
    seed = draw(st.integers(0, 2**32 - 1))
    return w, k, np.random.default_rng(seed)


def min_gap(x, axis=-1):
    """Smallest gap between distinct sorted values along ``axis`` (the margin a τ -> 0 limit needs)."""
    s = np.sort(x, axis=axis)
    return float(np.min(np.diff(s, axis=axis))) if x.shape[axis] > 1 else 1.0


# ---------------------------------------------------------------------------------------------------------
# "max" (the paper's operator)


@given(score_rows(min_n=2), st.floats(1.0 / 30.0, 3.0), st.floats(0.3, 2.0))
def test_max_entries_in_open_unit_interval_and_sum_between_1_and_k(case, tau_over_range, kappa):
    """0 < M_i < 1 and 1 <= Σ M <= K. τ is taken relative to the range R of the keys κw + G: with R/τ <= 30
    every 1 - S^(j)_i >= e^-30 / N is representable, so "< 1" is a statement about the math, not rounding."""
    w, k, rng = case
    noise = noise_for("max", w.shape, k, rng)
    keys = kappa * w[:, None, :] + noise  # (B, K, N)
    tau = tau_over_range * float(np.max(keys.max(-1) - keys.min(-1)))
    M, _ = relaxed_topk_forward(w, noise, k, tau=tau, kappa=kappa)
    assert np.all(M > 0.0) and np.all(M < 1.0)
    s = M.sum(-1)
    assert np.all(s >= 1.0 - 1e-12) and np.all(s <= k + 1e-12)


@given(score_rows(min_n=2))
def test_max_tau_to_zero_is_union_of_k_argmax_draws(case):
    """τ -> 0 with fixed noise: M -> indicator of ∪_j {argmax_i (κw + G^(j))_i} (draws *with* replacement)."""
    w, k, rng = case
    noise = noise_for("max", w.shape, k, rng)  # (B, K, N)
    keys = w[:, None, :] + noise  # (B, K, N)
    top2 = -np.sort(-keys, axis=-1)[..., :2]  # (B, K, 2)
    tau = float(np.min(top2[..., 0] - top2[..., 1])) / 50.0  # every draw's winner leads by >= 50 τ
    M, _ = relaxed_topk_forward(w, noise, k, tau=tau)
    union = np.zeros_like(w)
    for b in range(w.shape[0]):
        union[b, np.argmax(keys[b], axis=-1)] = 1.0
    # each draw is one-hot up to N exp(-50) ~ 1e-21
    np.testing.assert_allclose(M, union, rtol=0, atol=1e-12)
    assert np.all(M.sum(-1) <= k + 1e-12)


@given(score_rows(min_n=2))
def test_max_kappa_to_infinity_collapses_to_top1(case):
    """κ -> ∞ (then the noise is negligible): every draw picks argmax w, so M -> one-hot(argmax w), Σ M -> 1."""
    w, k, rng = case
    noise = noise_for("max", w.shape, k, rng)
    g_range = float(noise.max() - noise.min())
    kappa = (g_range + 60.0) / min_gap(w)  # κ·gap beats every noise difference by 60 (τ = 1)
    M, _ = relaxed_topk_forward(w, noise, k, tau=1.0, kappa=kappa)
    onehot = (w == w.max(-1, keepdims=True)).astype(float)
    np.testing.assert_allclose(M, onehot, rtol=0, atol=1e-12)


@given(score_rows(), st.floats(0.05, 20.0), st.floats(0.1, 5.0))
def test_max_without_noise_is_softmax(case, tau, kappa):
    w, k, _ = case
    M, _ = relaxed_topk_forward(w, None, k, tau=tau, kappa=kappa, relaxation="max")
    np.testing.assert_allclose(M, scipy_softmax(kappa * w / tau, axis=-1), rtol=1e-12, atol=1e-300)


@given(score_rows(min_n=2), st.sampled_from([1e3, 1e4, 1e5]))
def test_max_tau_to_infinity_tends_to_uniform_at_rate_one_over_tau(case, tau_over_range):
    """τ -> ∞: M_i = 1/N + (1/(Nτ)) max_j (x^(j)_i - mean_l x^(j)_l) + O(R²/(N τ²)), x^(j) = κw + G^(j).

    From softmax(x/τ)_i = 1/N + (x_i - x̄)/(Nτ) + r, |r| <= R²/(Nτ²) with R the range of x, and max_j
    being 1-Lipschitz. So the test checks the 1/τ rate *and* its coefficient.
    """
    w, k, rng = case
    noise = noise_for("max", w.shape, k, rng)
    x = w[:, None, :] + noise  # (B, K, N)
    R = float(np.max(x.max(-1) - x.min(-1)))
    tau = tau_over_range * R
    n = w.shape[-1]
    M, _ = relaxed_topk_forward(w, noise, k, tau=tau)
    first_order = np.max(x - x.mean(-1, keepdims=True), axis=-2) / n  # (B, N)
    assert np.all(np.abs(M - 1.0 / n) <= np.expm1(R / tau) / n)
    assert np.all(np.abs(tau * (M - 1.0 / n) - first_order) <= R**2 / (n * tau) + 1e-9)


# ---------------------------------------------------------------------------------------------------------
# "iterative" (Xie & Ermon)


@given(score_rows(), st.floats(0.05, 5.0), st.booleans())
def test_iterative_sums_to_exactly_k(case, tau, use_noise):
    w, k, rng = case
    noise = noise_for("iterative", w.shape, k, rng) if use_noise else None
    M, _ = relaxed_topk_forward(w, noise, k, tau=tau, relaxation="iterative")
    np.testing.assert_allclose(M.sum(-1), k, rtol=0, atol=1e-12 * k)
    assert np.all(M >= 0.0)


@given(score_rows(), st.booleans())
def test_iterative_tau_to_zero_is_exact_k_hot_of_topk(case, use_noise):
    """τ -> 0: the K-hot of top-K(κw + G) (a sample without replacement); without noise, top-K(w)."""
    w, k, rng = case
    noise = noise_for("iterative", w.shape, k, rng) if use_noise else None
    keys = w if noise is None else w + noise  # (B, N)
    tau = min(min_gap(keys) / 50.0, 0.1)  # every gap between keys is >= 50 τ
    M, _ = relaxed_topk_forward(w, noise, k, tau=tau, relaxation="iterative")
    expect = np.zeros_like(w)
    np.put_along_axis(expect, np.argsort(-keys, axis=-1)[:, :k], 1.0, axis=-1)
    np.testing.assert_allclose(M, expect, rtol=0, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tau", [0.1, 0.01])
@pytest.mark.parametrize("gap", [100.0, 1000.0])
def test_iterative_large_score_gaps_never_reselect(gap, tau, dtype):
    """The float32-tiny clamp in the reference code caps the exclusion at ~87 and re-selects the top item
    once score gaps exceed it; log1mexp excludes it for good (α = -inf) with finite gradients."""
    rng = np.random.default_rng(5)
    n = 6
    w = np.stack([rng.permutation(n) for _ in range(4)]).astype(dtype) * dtype(gap)  # (4, N), gaps = `gap`
    R = rng.standard_normal(w.shape).astype(dtype)
    for k in range(1, n + 1):
        M, cache = relaxed_topk_forward(w, None, k, tau=tau, relaxation="iterative")
        assert M.dtype == dtype
        np.testing.assert_array_equal(M, topk_mask(w, k))  # exact, no item counted twice
        dw = relaxed_topk_backward(R, cache)
        assert dw.dtype == dtype and np.all(np.isfinite(dw))
        assert np.all(np.abs(dw) <= 1e-30)  # fully saturated: the relaxation is flat here


def test_iterative_method_md_example():
    """docs/method.md §5.1: scores (1, 0), K = 2, τ = 1, no noise -> about (1.23, 0.77).

    Step 1: a = softmax(1, 0) = (p, 1 - p), p = e/(1+e). α ← α + log(1 - a) = (1 + log(1 - p), log p),
    and 1 + log(1/(1+e)) = log(e/(1+e)): both keys are equal, so step 2 gives a = (1/2, 1/2).
    M = (p + 1/2, 3/2 - p) = (1.2311, 0.7689).
    """
    p = math.e / (1.0 + math.e)
    M, _ = relaxed_topk_forward(np.array([1.0, 0.0]), None, 2, tau=1.0, relaxation="iterative")
    np.testing.assert_allclose(M, [p + 0.5, 1.5 - p], rtol=1e-14)
    assert M[0] > 1.0  # entries can exceed 1
    np.testing.assert_allclose(M, [1.2311, 0.7689], atol=1e-4)


# ---------------------------------------------------------------------------------------------------------
# "st" (straight-through)


@given(score_rows(), st.floats(0.1, 3.0), st.floats(0.2, 5.0), st.booleans())
def test_st_forward_is_exact_topk_of_perturbed_scores(case, tau, kappa, use_noise):
    w, k, rng = case
    noise = noise_for("st", w.shape, k, rng) if use_noise else None
    M, _ = relaxed_topk_forward(w, noise, k, tau=tau, kappa=kappa, relaxation="st")
    keys = kappa * w if noise is None else kappa * w + noise
    np.testing.assert_array_equal(M, topk_mask(keys, k))


def test_st_backward_is_the_iterative_gradient():
    rng = np.random.default_rng(9)
    w, k = rng.standard_normal((3, 8)), 3
    noise = noise_for("st", w.shape, k, rng)
    R = probe(w.shape, rng)
    _, c_st = relaxed_topk_forward(w, noise, k, tau=0.5, kappa=2.0, relaxation="st")
    _, c_it = relaxed_topk_forward(w, noise, k, tau=0.5, kappa=2.0, relaxation="iterative")
    np.testing.assert_array_equal(relaxed_topk_backward(R, c_st), relaxed_topk_backward(R, c_it))


# ---------------------------------------------------------------------------------------------------------
# every relaxation: symmetries


@given(score_rows(min_n=2), st.sampled_from(RELAXATIONS), st.booleans(), st.data())
def test_permuting_scores_and_noise_permutes_the_mask(case, relaxation, use_noise, data):
    w, k, rng = case
    noise = noise_for(relaxation, w.shape, k, rng) if use_noise else None
    perm = np.array(data.draw(st.permutations(range(w.shape[-1]))))
    M, _ = relaxed_topk_forward(w, noise, k, tau=0.5, relaxation=relaxation)
    Mp, _ = relaxed_topk_forward(w[..., perm], None if noise is None else noise[..., perm], k, tau=0.5, relaxation=relaxation)
    np.testing.assert_allclose(Mp, M[..., perm], rtol=1e-12, atol=1e-14)


@given(score_rows(), st.sampled_from(RELAXATIONS), st.booleans(), st.floats(-50.0, 50.0))
def test_adding_a_constant_to_the_scores_changes_nothing(case, relaxation, use_noise, c):
    w, k, rng = case
    noise = noise_for(relaxation, w.shape, k, rng) if use_noise else None
    M, _ = relaxed_topk_forward(w, noise, k, tau=0.5, kappa=1.5, relaxation=relaxation)
    Mc, _ = relaxed_topk_forward(w + c, noise, k, tau=0.5, kappa=1.5, relaxation=relaxation)
    np.testing.assert_allclose(Mc, M, rtol=0, atol=1e-10)  # w + c rounds: |Δ(κw/τ)| <~ 1e-13


# ---------------------------------------------------------------------------------------------------------
# topk_mask


@given(score_rows())
def test_topk_mask_selects_the_k_largest(case):
    w, k, _ = case
    m = topk_mask(w, k)
    assert m.dtype == w.dtype and set(np.unique(m)) <= {0.0, 1.0}
    assert np.all(m.sum(-1) == k)
    assert np.all(w[m == 1].reshape(w.shape[0], k).min(-1) > np.where(m == 0, w, -np.inf).max(-1))


def test_topk_mask_ties_go_to_the_lower_index():
    w = np.array([[1.0, 2.0, 2.0, 2.0, 0.0], [3.0, 3.0, 3.0, 3.0, 3.0]])
    np.testing.assert_array_equal(topk_mask(w, 2), [[0, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    np.testing.assert_array_equal(topk_mask(w, 4), [[1, 1, 1, 1, 0], [1, 1, 1, 1, 0]])
    np.testing.assert_array_equal(topk_mask(np.array([0.0, -np.inf, 0.0]), 2), [1, 0, 1])


# ---------------------------------------------------------------------------------------------------------
# gumbel_noise: finite at the generator's extremes


class _ExtremeGenerator:
    """Returns U = 0 and the largest float64 below 1, alternately: the two ends of [0, 1)."""

    def random(self, size):
        u = np.zeros(size)
        u.reshape(-1)[1::2] = 1.0 - 2.0**-53
        return u


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_gumbel_noise_is_finite_at_the_generator_extremes(dtype):
    g = gumbel_noise((3, 4), _ExtremeGenerator(), dtype=dtype)
    assert g.dtype == dtype and np.all(np.isfinite(g))
    low = -math.log(-math.log(float(np.finfo(dtype).tiny)))  # U = tiny(dtype)
    high = -math.log(-math.log1p(-(2.0**-53)))  # U = 1 - 2**-53: 36.74
    np.testing.assert_allclose(g.reshape(-1)[0::2], low, rtol=float(np.finfo(dtype).eps))
    np.testing.assert_allclose(g.reshape(-1)[1::2], high, rtol=float(np.finfo(dtype).eps))


def test_gumbel_noise_same_draw_in_every_dtype():
    g64 = gumbel_noise((50, 7), np.random.default_rng(0))
    g32 = gumbel_noise((50, 7), np.random.default_rng(0), dtype=np.float32)
    assert g64.dtype == np.float64 and g64.shape == (50, 7)
    np.testing.assert_array_equal(g32, g64.astype(np.float32))  # computed in float64, cast once


# ---------------------------------------------------------------------------------------------------------
# validation: every bad input raises, naming the argument

_W = np.array([[0.5, -1.0, 2.0, 0.0]])  # (1, 4)
_G = gumbel_noise((1, 4), np.random.default_rng(0))
_GK = gumbel_noise((1, 2, 4), np.random.default_rng(0))


def _fwd(**kw):
    args = dict(scores=_W, noise=None, k=2, tau=0.5, relaxation="max")
    args.update(kw)
    return relaxed_topk_forward(args.pop("scores"), args.pop("noise"), args.pop("k"), **args)


BAD_INPUTS = [
    (dict(k=0), ValueError, r"k=0"),
    (dict(k=5), ValueError, r"k=5.*N=4"),
    (dict(k=2.0), TypeError, r"k=2\.0"),
    (dict(k=True), TypeError, r"k=True"),
    (dict(tau=0.0), ValueError, r"tau=0\.0"),
    (dict(tau=-1.0), ValueError, r"tau=-1\.0"),
    (dict(tau=float("nan")), ValueError, r"tau=nan"),
    (dict(tau=float("inf")), ValueError, r"tau=inf"),
    (dict(tau="1"), TypeError, r"tau='1'"),
    (dict(kappa=float("inf")), ValueError, r"kappa=inf"),
    (dict(kappa=float("nan")), ValueError, r"kappa=nan"),
    (dict(kappa=0.0), ValueError, r"kappa=0\.0"),
    (dict(kappa=-2.0), ValueError, r"kappa=-2\.0"),
    (dict(scores=np.array([[0.5, np.nan, 2.0, 0.0]])), ValueError, r"scores=.*found NaN"),
    (dict(scores=np.array([[0.5, np.inf, 2.0, 0.0]])), ValueError, r"scores=.*found \+inf"),
    (dict(scores=np.array([[0.5, -np.inf, -np.inf, -np.inf]])), ValueError, r"scores=.*k=2 finite.*a row has 1"),
    (dict(scores=np.array([[1, 2, 3, 4]])), TypeError, r"scores.dtype=int64; expected a floating"),
    (dict(scores=[[0.5, 1.0]]), TypeError, r"scores=\[\[0.5, 1.0\]\] \(a list\)"),
    (dict(scores=np.float64(1.0), k=1), ValueError, r"scores.shape=\(\); expected at least one axis"),
    (dict(relaxation="gumbel"), ValueError, r"relaxation='gumbel'"),
    (dict(noise=_G), ValueError, r"noise.shape=\(1, 4\); expected \(1, 2, 4\)"),
    (dict(noise=_GK, relaxation="iterative"), ValueError, r"noise.shape=\(1, 2, 4\); expected \(1, 4\)"),
    (dict(noise=_G.astype(np.float32), relaxation="st"), TypeError, r"noise.dtype=float32; expected the scores' dtype float64"),
    (dict(noise=_G.tolist(), relaxation="st"), TypeError, r"noise=.*\(a list\); expected an array"),
    (dict(noise=np.where(_G > 0, np.inf, _G), relaxation="st"), ValueError, r"noise=.*expected finite values"),
]


@pytest.mark.parametrize("kwargs,err,match", BAD_INPUTS, ids=[m for _, _, m in BAD_INPUTS])
def test_relaxed_topk_forward_rejects_bad_input(kwargs, err, match):
    with pytest.raises(err, match=match):
        _fwd(**kwargs)


def test_relaxed_topk_backward_rejects_bad_input():
    _, cache = _fwd()
    with pytest.raises(ValueError, match=r"dmask.shape=\(4,\); expected \(1, 4\)"):
        relaxed_topk_backward(np.ones(4), cache)
    with pytest.raises(TypeError, match=r"cache=<a tuple>; expected the RelaxedTopKCache"):
        relaxed_topk_backward(np.ones((1, 4)), (1, 2))
    with pytest.raises(TypeError, match=r"dmask=.*\(a list\); expected an array"):
        relaxed_topk_backward([[1.0, 1.0, 1.0, 1.0]], cache)


@pytest.mark.parametrize(
    "kwargs,err,match",
    [
        (dict(k=0), ValueError, r"k=0"),
        (dict(k=9), ValueError, r"k=9"),
        (dict(scores=np.array([1, 2, 3])), TypeError, r"scores.dtype=int64"),
        (dict(scores=np.array([1.0, np.nan, 3.0])), ValueError, r"scores=.*found NaN"),
        (dict(scores=np.array([1.0, -np.inf, -np.inf]), k=2), ValueError, r"k=2 finite.*a row has 1"),
    ],
)
def test_topk_mask_rejects_bad_input(kwargs, err, match):
    args = dict(scores=np.array([1.0, 2.0, 3.0]), k=2)
    args.update(kwargs)
    with pytest.raises(err, match=match):
        topk_mask(args["scores"], args["k"])


@pytest.mark.parametrize(
    "args,kwargs,err,match",
    [
        (((3,), 0), {}, TypeError, r"rng of type 'int'"),
        (((3,), np.random.default_rng(0)), dict(dtype=np.int32), TypeError, r"dtype=int32"),
        (((-1, 2), np.random.default_rng(0)), {}, ValueError, r"shape=\(-1, 2\)"),
        ((("a",), np.random.default_rng(0)), {}, TypeError, r"shape=\('a',\)"),
        (((3,), np.random.default_rng(0)), dict(xp="numpy"), TypeError, r"xp='numpy'"),
    ],
)
def test_gumbel_noise_rejects_bad_input(args, kwargs, err, match):
    with pytest.raises(err, match=match):
        gumbel_noise(*args, **kwargs)


# ---------------------------------------------------------------------------------------------------------
# float32


@pytest.mark.parametrize("use_noise", [True, False], ids=["noise", "no-noise"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_float32_runs_and_agrees_with_float64(relaxation, use_noise):
    rng = np.random.default_rng(21)
    w64, k = rng.standard_normal((8, 12)), 4
    noise64 = noise_for(relaxation, w64.shape, k, rng) if use_noise else None
    R64 = probe(w64.shape, rng)
    w32, R32 = w64.astype(np.float32), R64.astype(np.float32)
    noise32 = None if noise64 is None else noise64.astype(np.float32)
    M64, c64 = relaxed_topk_forward(w64, noise64, k, tau=0.5, relaxation=relaxation)
    M32, c32 = relaxed_topk_forward(w32, noise32, k, tau=0.5, relaxation=relaxation)
    d64, d32 = relaxed_topk_backward(R64, c64), relaxed_topk_backward(R32, c32)
    assert M32.dtype == np.float32 and d32.dtype == np.float32
    # float32 eps = 1.2e-7; K sequential softmax steps and a 1/τ = 2 scale leave a few hundred ulps at most
    assert rel_error(M32, M64) < 2e-6
    assert rel_error(d32, d64) < 2e-5


# ---------------------------------------------------------------------------------------------------------
# CuPy


@pytest.mark.gpu
@pytest.mark.parametrize("use_noise", [True, False], ids=["noise", "no-noise"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_numpy_and_cupy_agree_on_identical_noise(relaxation, use_noise):
    cp = pytest.importorskip("cupy")
    rng = np.random.default_rng(31)
    w, k = rng.standard_normal((16, 20)), 5
    w[3, :4] = -np.inf
    shape = w.shape[:-1] + (k, w.shape[-1]) if relaxation == "max" else w.shape
    noise = gumbel_noise(shape, np.random.default_rng(2)) if use_noise else None
    noise_gpu = gumbel_noise(shape, np.random.default_rng(2), xp=cp) if use_noise else None
    if use_noise:
        assert isinstance(noise_gpu, cp.ndarray)
        np.testing.assert_array_equal(noise_gpu.get(), noise)
    R = probe(w.shape, rng)
    M, c = relaxed_topk_forward(w, noise, k, tau=0.5, relaxation=relaxation)
    Mg, cg = relaxed_topk_forward(cp.asarray(w), noise_gpu, k, tau=0.5, relaxation=relaxation)
    dw, dwg = relaxed_topk_backward(R, c), relaxed_topk_backward(cp.asarray(R), cg)
    assert isinstance(Mg, cp.ndarray) and isinstance(dwg, cp.ndarray)
    np.testing.assert_allclose(Mg.get(), M, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dwg.get(), dw, rtol=1e-10, atol=1e-13)
    np.testing.assert_array_equal(topk_mask(cp.asarray(w), k).get(), topk_mask(w, k))
    if use_noise:  # host noise with device scores would be a hidden transfer
        with pytest.raises(TypeError, match="noise=.*expected an array on the scores' backend"):
            relaxed_topk_forward(cp.asarray(w), noise, k, tau=0.5, relaxation=relaxation)
