"""mini_gumbel.gumbel at the edges of the number range and under bad input: never NaN, every error named.

The module docstring of mini_gumbel.gumbel ("Numerics") states the contract checked here: any finite scores,
noise and κ give a finite mask and, unless the derivative itself does not fit the dtype, finite dscores;
a τ whose keys' scale overflows is rejected by name, and so is a dscores that would overflow.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mini_gumbel.gumbel import (
    RELAXATIONS,
    RelaxedTopKCache,
    gumbel_noise,
    relaxed_topk_backward,
    relaxed_topk_forward,
)

DTYPES = (np.float64, np.float32)


def noise_for(relaxation, shape, k, rng, dtype):
    return gumbel_noise(shape[:-1] + (k, shape[-1]) if relaxation == "max" else shape, rng, dtype=dtype)


def check_mask(M, relaxation, k, dtype, pad):
    """What every mask must satisfy whatever the scale (docs/method.md §4.2, §5.1, §5.2)."""
    assert M.dtype == dtype and np.all(np.isfinite(M))
    assert np.all(M[pad] == 0.0)
    eps = float(np.finfo(dtype).eps)
    n = M.shape[-1]
    s = M.sum(-1)
    if relaxation == "max":
        assert np.all((M >= 0.0) & (M <= 1.0))
        assert np.all(s >= 1.0 - 4 * n * eps) and np.all(s <= k * (1.0 + 4 * n * eps))
    elif relaxation == "iterative":
        assert np.all((M >= 0.0) & (M <= k * (1.0 + 4 * n * eps)))
        np.testing.assert_allclose(s, k, rtol=8 * n * k * eps, atol=0)
    else:
        assert set(np.unique(M)) <= {0.0, 1.0} and np.all(s == k)


# ---------------------------------------------------------------------------------------------------------
# every scale, every relaxation, with and without noise


@st.composite
def extreme_case(draw):
    """Scores whose magnitudes span the whole dtype (10^-e .. 10^e, both signs, ties, ±max, padding), any κ
    and τ in wide ranges, and noise that is Gumbel, absent, or itself huge."""
    dtype = draw(st.sampled_from(DTYPES))
    relaxation = draw(st.sampled_from(RELAXATIONS))
    fi = np.finfo(dtype)
    top = int(math.log10(float(fi.max)))  # 308 or 38
    n = draw(st.integers(2, 8))
    rows = draw(st.integers(1, 3))
    k = draw(st.integers(1, n))
    exps = st.integers(-top, top)
    entry = st.one_of(
        st.builds(lambda sgn, m, e: sgn * min(m * 10.0 ** e, float(fi.max)), st.sampled_from([-1.0, 1.0]),
                  st.floats(1.0, 9.99), exps),
        st.sampled_from([0.0, 1.0, -1.0, float(fi.max), -float(fi.max), float(fi.tiny)]),
    )
    w = np.array([[draw(entry) for _ in range(n)] for _ in range(rows)]).astype(dtype)
    if draw(st.booleans()):  # a row of ties
        w[0] = w[0, 0]
    if draw(st.booleans()) and n > k:  # padding, keeping k finite candidates per row
        w[:, : draw(st.integers(1, n - k))] = -np.inf
    kappa = 10.0 ** draw(st.floats(-6, 6))
    tau = 10.0 ** draw(st.floats(-6, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["gumbel", "none", "huge"]))
    noise = None if kind == "none" else noise_for(relaxation, w.shape, k, rng, dtype)
    if kind == "huge":  # finite noise of any size: the keys must still not overflow
        with np.errstate(over="ignore"):
            noise = (noise * dtype(10.0) ** draw(st.integers(0, top))).astype(dtype)
        assume(np.all(np.isfinite(noise)))
    return dict(w=w, noise=noise, k=k, tau=tau, kappa=kappa, relaxation=relaxation, dtype=dtype, rng=rng)


@given(extreme_case())
def test_any_finite_scale_gives_a_valid_mask_and_finite_or_named_gradients(case):
    w, noise, k, tau, kappa, relaxation, dtype = (case[x] for x in ("w", "noise", "k", "tau", "kappa", "relaxation",
                                                                    "dtype"))
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # no overflow, NaN or log(0) may escape as a warning either
        M, cache = relaxed_topk_forward(w, noise, k, tau=tau, kappa=kappa, relaxation=relaxation)
        check_mask(M, relaxation, k, dtype, np.isneginf(w))
        R = case["rng"].standard_normal(w.shape).astype(dtype)
        try:
            dw = relaxed_topk_backward(R, cache)
        except ValueError as e:
            # only the near-tie growth of iterative/st in float32 may overflow in these ranges (τ^-K κ with
            # τ >= 1e-6, K <= 8, κ <= 1e6 stays below float64's range), and then by name
            assert relaxation != "max" and dtype == np.float32, e
            assert "tau=" in str(e) and "overflowed" in str(e)
            # the derivative really is beyond float32: in float64 the same inputs give |dscores| > 1e30
            n64 = None if noise is None else noise.astype(np.float64)
            _, c64 = relaxed_topk_forward(w.astype(np.float64), n64, k, tau=tau, kappa=kappa, relaxation=relaxation)
            assert float(np.max(np.abs(relaxed_topk_backward(R.astype(np.float64), c64)))) > 1e30
            return
    assert dw.dtype == dtype and np.all(np.isfinite(dw))
    assert np.all(dw[np.isneginf(w)] == 0.0)


# ---------------------------------------------------------------------------------------------------------
# the reproductions, with the answer they must give


@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_huge_score_gaps_give_the_hard_answer(relaxation):
    """κ|w|/τ ~ 1e309 overflowed to NaN; every gap here is astronomically larger than τ, so the mask is hard:
    max -> each draw's best (without noise all draws are the top score), iterative/st -> the exact top-2."""
    w = np.array([[1e300, -1e300, 0.0, 1.0]])
    M, cache = relaxed_topk_forward(w, None, 2, tau=1e-3, kappa=1e6, relaxation=relaxation)
    expect = [[1.0, 0.0, 0.0, 0.0]] if relaxation == "max" else [[1.0, 0.0, 0.0, 1.0]]
    np.testing.assert_array_equal(M, expect)
    dw = relaxed_topk_backward(np.array([[0.3, -1.0, 2.0, 0.5]]), cache)
    np.testing.assert_array_equal(dw, np.zeros_like(w))  # fully saturated: the relaxation is flat here


@pytest.mark.parametrize("use_noise", [False, True], ids=["no-noise", "noise"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
@pytest.mark.parametrize("w,k,tau,kappa,dtype", [
    ([[-1e300] * 4], 2, 1e-3, 1e6, np.float64),  # all scores -1e300: a tie, not a row of zeros
    ([[3e38, 0.0, 1.0, 2.0]], 2, 1.0, 2.0, np.float32),  # κ w overflows float32
    ([[3e38, -3e38, 1.0, 2.0]], 2, 1e-3, 1.0, np.float32),
    ([[1e30, -1e30, 1.0, 2.0]], 2, 1e-6, 1e3, np.float32),
    ([[1.7e308, -1.7e308, 0.0, 1.0]], 3, 0.5, 1.0, np.float64),  # w - max w itself overflows
], ids=["all-minus-1e300", "f32-3e38-kappa2", "f32-pm3e38", "f32-pm1e30", "f64-pm1.7e308"])
def test_reported_overflows_are_finite(relaxation, use_noise, w, k, tau, kappa, dtype):
    w = np.array(w, dtype=dtype)
    rng = np.random.default_rng(0)
    noise = noise_for(relaxation, w.shape, k, rng, dtype) if use_noise else None
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        M, cache = relaxed_topk_forward(w, noise, k, tau=tau, kappa=kappa, relaxation=relaxation)
        check_mask(M, relaxation, k, dtype, np.isneginf(w))
        dw = relaxed_topk_backward(rng.standard_normal(w.shape).astype(dtype), cache)
    assert np.all(np.isfinite(dw))


def test_a_row_of_equal_extreme_scores_is_a_uniform_draw():
    """All scores -1e300: the best key is every key, so the mask is that of all-equal scores."""
    for relaxation in RELAXATIONS:
        M, _ = relaxed_topk_forward(np.full((1, 4), -1e300), None, 2, tau=1e-3, kappa=1e6, relaxation=relaxation)
        M0, _ = relaxed_topk_forward(np.zeros((1, 4)), None, 2, tau=1e-3, kappa=1e6, relaxation=relaxation)
        np.testing.assert_array_equal(M, M0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_tau_whose_scale_overflows_is_rejected_by_name(relaxation, dtype):
    w = np.array([[1.0, 2.0, 3.0, 4.0]], dtype=dtype)
    big = float(np.finfo(dtype).max)
    for tau in (5e-324, 1.0 / big):  # 1/τ = inf; 1/τ finite but 4/τ is not
        with pytest.raises(ValueError, match=r"relaxed_topk_forward: tau=.*; expected tau >= "):
            relaxed_topk_forward(w, None, 2, tau=tau, relaxation=relaxation)
    # the smallest accepted τ: u = 4 for κ <= 1, so τ = 4/max works and gives finite values
    M, cache = relaxed_topk_forward(w, None, 2, tau=4.0 / big * (1 + 1e-6), relaxation=relaxation)
    check_mask(M, relaxation, 2, dtype, np.isneginf(w))
    assert np.all(np.isfinite(relaxed_topk_backward(np.ones_like(w) * dtype(0.5), cache)))


# ---------------------------------------------------------------------------------------------------------
# iterative / st at exact ties: the derivative grows like τ^-K


@pytest.mark.parametrize("relaxation", ["iterative", "st"])
def test_tied_keys_at_tiny_tau_give_the_huge_derivative_or_a_named_error(relaxation):
    """zeros (1, 8), K = 8, τ = 1e-6: the true derivative is ~1e41. float64 holds it (finite, huge);
    float32 cannot, and says so by naming tau instead of returning inf."""
    R = np.random.default_rng(0).standard_normal((1, 8))
    _, c64 = relaxed_topk_forward(np.zeros((1, 8)), None, 8, tau=1e-6, relaxation=relaxation)
    d64 = relaxed_topk_backward(R, c64)
    assert np.all(np.isfinite(d64)) and 1e38 < np.max(np.abs(d64)) < 1e44
    _, c32 = relaxed_topk_forward(np.zeros((1, 8), np.float32), None, 8, tau=1e-6, relaxation=relaxation)
    with pytest.raises(ValueError, match=r"relaxed_topk_backward: tau=1e-06; expected a tau at which dscores fits "
                                         r"float32 \(it overflowed"):
        relaxed_topk_backward(R.astype(np.float32), c32)
    # a τ at which the derivative fits float32 works in float32 and agrees with float64
    _, c32 = relaxed_topk_forward(np.zeros((1, 8), np.float32), None, 8, tau=1e-3, relaxation=relaxation)
    _, c64 = relaxed_topk_forward(np.zeros((1, 8)), None, 8, tau=1e-3, relaxation=relaxation)
    d32, d64 = relaxed_topk_backward(R.astype(np.float32), c32), relaxed_topk_backward(R, c64)
    assert np.all(np.isfinite(d32))
    np.testing.assert_allclose(d32, d64, rtol=1e-3, atol=1e-3 * float(np.max(np.abs(d64))))


# ---------------------------------------------------------------------------------------------------------
# the public boundary: every bad argument named


@pytest.mark.parametrize("shape", [(2.5, 3), True, "3", (2, True), (np.float64(2.0),), None])
def test_gumbel_noise_rejects_shapes_that_are_not_ints(shape):
    with pytest.raises(TypeError, match=r"gumbel_noise: shape=.*; expected an int or a tuple of ints"):
        gumbel_noise(shape, np.random.default_rng(0))


def test_gumbel_noise_takes_numpy_ints():
    assert gumbel_noise(np.int64(3), np.random.default_rng(0)).shape == (3,)
    assert gumbel_noise([2, np.int32(3)], np.random.default_rng(0)).shape == (2, 3)
    with pytest.raises(ValueError, match=r"gumbel_noise: shape=\(2, -3\); expected sizes >= 0"):
        gumbel_noise((2, -3), np.random.default_rng(0))


def _caches():
    w = np.array([[0.5, -1.0, 2.0, -np.inf]])
    out = {}
    for relaxation in RELAXATIONS:
        g = noise_for(relaxation, w.shape, 2, np.random.default_rng(0), np.float64)
        out[relaxation] = relaxed_topk_forward(w, g, 2, tau=0.5, relaxation=relaxation)[1]
    return out


@pytest.mark.parametrize("bad", [None, (1, 2), {"S": 1}, "cache", "missing-arrays", "other-forward"])
def test_backward_names_a_wrong_cache(bad):
    c = _caches()["max"]
    from mini_gumbel.losses import kl_distill_forward  # another forward's cache
    if bad == "missing-arrays":
        cache = c._replace(S=None)
    elif bad == "other-forward":
        cache = kl_distill_forward(np.zeros((1, 4)), np.zeros((1, 4)))[1]
    else:
        cache = bad
    with pytest.raises(TypeError, match=r"relaxed_topk_backward: cache=.*; expected the RelaxedTopKCache"):
        relaxed_topk_backward(np.ones((1, 4)), cache)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("where", [0, 3], ids=["real", "padded"])
@pytest.mark.parametrize("relaxation", RELAXATIONS)
def test_backward_names_a_non_finite_dmask(relaxation, where, value):
    """Even at a padded candidate, where the weight is 0 and the NaN could hide."""
    g = np.ones((1, 4))
    g[0, where] = value
    with pytest.raises(ValueError, match=r"relaxed_topk_backward: dmask=.*; expected finite values"):
        relaxed_topk_backward(g, _caches()[relaxation])


def test_cache_type_is_still_the_named_tuple():
    assert all(isinstance(c, RelaxedTopKCache) for c in _caches().values())
