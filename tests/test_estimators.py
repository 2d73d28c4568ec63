"""mini_gumbel.estimators: exact Gumbel-top-k subset probabilities, the exact gradient of E_S[c_S], and the
estimators of that gradient, first on synthetic set functions (no reader)."""
import itertools
import math
import re

import numpy as np
import pytest
from scipy import stats

from mini_gumbel import estimators as E
from mini_gumbel.gradcheck import check_grads, jacobian_check
from mini_gumbel.gumbel import gumbel_noise, topk_mask

CHI2_LEVEL = 1e-3  # the Monte Carlo test rejects at p < 0.1%


def brute_force(scores, k, kappa):
    """{subset: P(S)} from the product form P(i_1..i_k) = Π_j p_ij / (1 - Σ_{l<j} p_il) over every ordering."""
    real = [i for i, s in enumerate(scores) if np.isfinite(s)]
    z = kappa * np.asarray(scores)[real]
    p = np.exp(z - z.max())
    p = dict(zip(real, p / p.sum()))
    out = {}
    for perm in itertools.permutations(real, k):
        pr, used = 1.0, 0.0
        for i in perm:
            pr *= p[i] / (1.0 - used)
            used += p[i]
        key = tuple(sorted(perm))
        out[key] = out.get(key, 0.0) + pr
    return out


def quadratic(n, rng):
    """A smooth loss of the mask, L(M) = a·M + Mᵀ B M, and its set function c_S = L(1_S) (interactions: the value
    of a document depends on which others are kept, as for a bridge document)."""
    a = rng.standard_normal(n)
    B = 0.5 * rng.standard_normal((n, n))

    def loss_and_grad(M):
        return M @ a + np.sum((M @ B) * M, axis=1), a + M @ (B + B.T)

    return loss_and_grad


def set_values(loss_and_grad, subsets, n):
    masks = (subsets[:, :, None] == np.arange(n)).any(axis=1).astype(np.float64)  # (S, N)
    return loss_and_grad(masks)[0]


def fwd_bwd(k, kappa):
    def forward(d):
        return E.expected_value_forward(d["scores"], d["values"], k, kappa=kappa)

    def backward(dout, cache):
        ds, dv = E.expected_value_backward(dout, cache)
        return {"scores": ds, "values": dv}

    return forward, backward


# ---------------------------------------------------------------------------------------------- probabilities


@pytest.mark.parametrize("n,k,kappa", [(4, 2, 1.0), (6, 3, 2.5), (10, 5, 6.88), (12, 6, 1.0), (12, 1, 3.0),
                                       (8, 8, 1.0), (9, 4, 40.0)])
def test_probabilities_sum_to_one_and_rows_are_sorted_lexicographic(n, k, kappa):
    w = np.random.default_rng(n * 10 + k).standard_normal(n)
    subsets, probs = E.subset_probabilities(w, k, kappa=kappa)
    assert subsets.dtype == np.int64 and subsets.shape == (math.comb(n, k), k)
    assert subsets.tolist() == [list(c) for c in itertools.combinations(range(n), k)]
    assert np.all(np.diff(subsets, axis=1) > 0)
    assert abs(probs.sum() - 1.0) <= 1e-12
    assert np.all(probs >= 0)


@pytest.mark.parametrize("n,k,kappa", [(5, 2, 1.0), (5, 3, 0.7), (6, 4, 2.0), (4, 4, 1.0)])
def test_probabilities_match_the_product_form(n, k, kappa):
    w = np.random.default_rng(7).standard_normal(n)
    subsets, probs = E.subset_probabilities(w, k, kappa=kappa)
    bf = brute_force(w, k, kappa)
    assert len(bf) == len(probs)
    np.testing.assert_allclose(probs, [bf[tuple(s)] for s in subsets.tolist()], rtol=1e-12, atol=1e-15)


def test_k1_is_the_softmax_and_k_equal_n_is_one_subset():
    w = np.array([0.3, -1.2, 2.0, 0.0, 0.7])
    subsets, probs = E.subset_probabilities(w, 1, kappa=1.7)
    p = np.exp(1.7 * w) / np.exp(1.7 * w).sum()
    assert subsets[:, 0].tolist() == list(range(5))
    np.testing.assert_allclose(probs, p, rtol=1e-13)
    subsets, probs = E.subset_probabilities(w, 5, kappa=3.0)
    assert subsets.tolist() == [[0, 1, 2, 3, 4]] and probs.tolist() == [1.0]
    value, dscores = E.expected_value_and_grad(w, np.array([2.5]), 5, kappa=3.0)
    assert value == 2.5 and np.all(dscores == 0.0)


def test_large_score_gaps_stay_finite_and_normalised():
    # κ·gap = 700: 1 - Σ p would cancel to 0; the log-space form keeps every subset's probability finite
    w = np.array([10.0, 0.0, -5.0, 3.0, -20.0, 7.0])
    subsets, probs = E.subset_probabilities(w, 3, kappa=70.0)
    assert np.all(np.isfinite(probs)) and abs(probs.sum() - 1.0) <= 1e-12
    assert subsets[np.argmax(probs)].tolist() == [0, 3, 5] and probs.max() > 1 - 1e-12
    _, logp, dlogp = E.subset_log_prob_grads(w, 3, kappa=70.0)
    assert np.all(np.isfinite(logp)) and np.all(np.isfinite(dlogp))


def test_probabilities_agree_with_monte_carlo_top_k_frequencies():
    """Chi-square goodness of fit of the frequencies of topk_mask(κw + G) against the exact probabilities, rejected
    at p < CHI2_LEVEL (seeded, 200000 draws); the same test rejects the probabilities of a 5% different κ."""
    rng = np.random.default_rng(20261202)
    w = np.array([0.4, -0.3, 1.1, 0.0, -1.0, 0.6])
    k, kappa, R = 3, 1.3, 200_000
    subsets, probs = E.subset_probabilities(w, k, kappa=kappa)
    hard = topk_mask(kappa * w + gumbel_noise((R, w.size), rng), k)  # (R, N)
    counts = np.bincount(E.subset_index(subsets, hard), minlength=len(probs))
    assert counts.sum() == R and probs.min() * R > 5  # every cell large enough for the chi-square approximation
    p_value = stats.chisquare(counts, R * probs).pvalue
    assert p_value >= CHI2_LEVEL, p_value
    _, wrong = E.subset_probabilities(w, k, kappa=kappa * 1.05)
    assert stats.chisquare(counts, R * wrong / wrong.sum()).pvalue < CHI2_LEVEL


# ---------------------------------------------------------------------------------------------- gradients


@pytest.mark.parametrize("n,k,kappa", [(6, 3, 1.5), (6, 1, 0.8), (5, 4, 2.0), (10, 5, 6.88), (8, 2, 3.0)])
def test_expected_value_gradient_fd_autograd_and_mutation(n, k, kappa):
    rng = np.random.default_rng(n + 100 * k)
    w = rng.standard_normal(n)
    values = rng.standard_normal(math.comb(n, k))
    forward, backward = fwd_bwd(k, kappa)
    rep = check_grads(forward, backward, {"scores": w, "values": values}, rng=rng, tol=1e-8, autograd_tol=1e-10)
    assert rep.fd_rel_error <= 1e-8 and all(v <= 1e-10 for v in rep.autograd_rel_error.values())
    assert rep.mutated_fd_rel_error > 1e-3  # a 1% error in the backward is seen


def test_expected_value_and_grad_is_the_forward_backward_pair():
    rng = np.random.default_rng(3)
    w, values = rng.standard_normal(7), rng.standard_normal(35)
    value, dscores = E.expected_value_and_grad(w, values, 3, kappa=2.0)
    _, probs = E.subset_probabilities(w, 3, kappa=2.0)
    assert value == pytest.approx(float(probs @ values), rel=1e-13)
    f = lambda x: E.expected_value_and_grad(x, values, 3, kappa=2.0)[0]  # noqa: E731
    assert jacobian_check(lambda x: np.array([f(x)]), w, lambda e: e[0] * dscores) < 1e-8


def test_log_prob_gradients_against_finite_differences():
    rng = np.random.default_rng(5)
    w = rng.standard_normal(6)
    subsets, logp, dlogp = E.subset_log_prob_grads(w, 3, kappa=1.7)
    assert dlogp.shape == (20, 6)
    np.testing.assert_allclose(dlogp.sum(axis=1), 0.0, atol=1e-12)  # shifting every score changes nothing
    err = jacobian_check(lambda x: E.subset_log_prob_grads(x, 3, kappa=1.7)[1], w, lambda e: e @ dlogp)
    assert err < 1e-8
    bad = jacobian_check(lambda x: E.subset_log_prob_grads(x, 3, kappa=1.7)[1], w, lambda e: 1.01 * (e @ dlogp))
    assert bad > 1e-3


def test_padding_is_excluded_and_gets_zero_gradient():
    rng = np.random.default_rng(11)
    w = rng.standard_normal(5)
    wp = np.array([w[0], -np.inf, w[1], w[2], -np.inf, w[3], w[4]])
    real = np.array([0, 2, 3, 5, 6])
    subsets, probs = E.subset_probabilities(wp, 2, kappa=1.2)
    sub0, probs0 = E.subset_probabilities(w, 2, kappa=1.2)
    assert subsets.tolist() == real[sub0].tolist() and not np.isin(subsets, [1, 4]).any()
    np.testing.assert_allclose(probs, probs0, rtol=1e-14)
    values = rng.standard_normal(len(probs))
    forward, backward = fwd_bwd(2, 1.2)
    mask = {"scores": np.isfinite(wp).astype(np.float64)}
    check_grads(forward, backward, {"scores": wp, "values": values}, rng=rng, tol=1e-8, mask=mask)
    _, ds = E.expected_value_and_grad(wp, values, 2, kappa=1.2)
    _, ds0 = E.expected_value_and_grad(w, values, 2, kappa=1.2)
    assert ds[1] == 0.0 and ds[4] == 0.0
    np.testing.assert_allclose(ds[real], ds0, rtol=1e-12, atol=1e-15)
    _, _, dlogp = E.subset_log_prob_grads(wp, 5, kappa=1.2)  # k = the real candidates: one subset, P = 1
    assert np.all(dlogp == 0.0)


# ---------------------------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("call,exc,named", [
    (lambda: E.subset_probabilities(np.array([0.0, np.nan, 1.0]), 2), ValueError, "scores"),
    (lambda: E.subset_probabilities(np.zeros((2, 3, 4)), 2), ValueError, "scores.shape"),
    (lambda: E.subset_probabilities(np.arange(4), 2), TypeError, "scores.dtype"),
    (lambda: E.subset_probabilities([0.0, 1.0], 1), TypeError, "scores"),
    (lambda: E.subset_probabilities(np.zeros(4), 0), ValueError, "k="),
    (lambda: E.subset_probabilities(np.zeros(4), 5), ValueError, "k="),
    (lambda: E.subset_probabilities(np.zeros(4), 2.0), TypeError, "k="),
    (lambda: E.subset_probabilities(np.array([0.0, -np.inf, -np.inf]), 2), ValueError, "scores"),
    (lambda: E.subset_probabilities(np.zeros(4), 2, kappa=0.0), ValueError, "kappa"),
    (lambda: E.subset_probabilities(np.zeros(4), 2, kappa=np.inf), ValueError, "kappa"),
    (lambda: E.subset_probabilities(np.zeros(40), 20), ValueError, "N=40 (real) candidates and k=20"),
    (lambda: E.expected_value_and_grad(np.zeros(4), np.zeros(5), 2), ValueError, "values.shape"),
    (lambda: E.expected_value_and_grad(np.zeros(4), np.full(6, np.nan), 2), ValueError, "values"),
    (lambda: E.expected_value_and_grad(np.zeros(4), np.zeros(6, dtype=int), 2), TypeError, "values.dtype"),
    (lambda: E.expected_value_backward(1.0, None), TypeError, "cache"),
    (lambda: E.reinforce_gradient_draws(np.zeros(4), 2, np.zeros(6), 0, draws=4), TypeError, "rng"),
    (lambda: E.reinforce_gradient_draws(np.zeros(4), 2, np.zeros(6), np.random.default_rng(0), draws=0),
     ValueError, "draws"),
    (lambda: E.reinforce_gradient_draws(np.zeros(4), 2, np.zeros(6), np.random.default_rng(0), draws=4,
                                        baseline="mean"), ValueError, "baseline"),
    (lambda: E.reinforce_gradient_draws(np.zeros(4), 2, np.zeros(6), np.random.default_rng(0), draws=1,
                                        baseline="loo"), ValueError, "draws"),
    (lambda: E.reinforce_gradient_draws(np.zeros(4), 2, np.zeros(5), np.random.default_rng(0), draws=4),
     ValueError, "values.shape"),
    (lambda: E.relaxed_gradient_draws(np.zeros(4), 2, None, np.random.default_rng(0), draws=4, tau=1.0),
     TypeError, "loss_and_mask_grad"),
    (lambda: E.relaxed_gradient_draws(np.zeros(4), 2, lambda M: (M.sum(1), M), np.random.default_rng(0), draws=4,
                                      tau=-1.0), ValueError, "tau"),
    (lambda: E.relaxed_gradient_draws(np.zeros(4), 2, lambda M: (M.sum(1), M), np.random.default_rng(0), draws=4,
                                      tau=1.0, relaxation="top"), ValueError, "relaxation"),
    (lambda: E.relaxed_gradient_draws(np.zeros(4), 2, lambda M: (M.sum(1), M[:, :2]), np.random.default_rng(0),
                                      draws=4, tau=1.0), ValueError, "dmasks.shape"),
    (lambda: E.relaxed_gradient_draws(np.zeros(4, dtype=np.float32), 2, lambda M: (M.sum(1), M),
                                      np.random.default_rng(0), draws=4, tau=1.0), TypeError, "scores.dtype"),
    (lambda: E.gradient_error_stats(np.zeros((3, 4)), np.zeros(4)), ValueError, "g_true"),
    (lambda: E.gradient_error_stats(np.zeros((3, 4)), np.ones(5)), ValueError, "g_true.shape"),
    (lambda: E.subset_index(np.array([[0, 1], [0, 2]]), np.array([[1, 1, 1]])), ValueError, "masks[0]"),
])
def test_bad_input_is_rejected_by_name(call, exc, named):
    with pytest.raises(exc, match=re.escape(named)):
        call()


# ---------------------------------------------------------------------------------------------- estimators


def _reinforce_setup():
    rng = np.random.default_rng(42)
    n, k, kappa = 6, 3, 1.4
    w = rng.standard_normal(n)
    f = quadratic(n, rng)
    subsets, _ = E.subset_probabilities(w, k)
    values = set_values(f, subsets, n)
    value, g = E.expected_value_and_grad(w, values, k, kappa=kappa)
    return rng, n, k, kappa, w, f, subsets, values, value, g


@pytest.mark.parametrize("baseline", ["none", "loo"])
def test_reinforce_bias_is_consistent_with_zero(baseline):
    """Within 3 standard errors along g* and along 5 fixed random directions, with the exact covariance of one
    draw (reinforce_moments) and with the sample's; and the relative bias within 3 noise floors."""
    rng, n, k, kappa, w, f, subsets, values, value, g = _reinforce_setup()
    R = 40_000
    d, cr = E.reinforce_gradient_draws(w, k, values, rng, draws=R, kappa=kappa, baseline=baseline)
    assert d.shape == (R, n) and set(np.round(cr, 12)) <= set(np.round(values, 12))
    _, cov = E.reinforce_moments(w, k, values, kappa=kappa, baseline=baseline)
    for exact in (cov, None):
        st = E.gradient_error_stats(d, g, exact_cov=exact)
        assert abs(st["bias_z"]) < 3, st
        assert st["rel_bias"] < 3 * st["noise_floor"], st
    dirs = np.random.default_rng(0).standard_normal((5, n))
    z = (d.mean(0) - g) @ dirs.T / np.sqrt(np.einsum("ij,jk,ik->i", dirs, cov, dirs) / R)
    assert np.all(np.abs(z) < 3), z


def test_the_reinforce_check_rejects_a_biased_score_function():
    """The same draws with the score function of K independent draws (Σ_{i∈S} ∂ log p_i, ignoring that they are
    drawn without replacement) are biased, and the 3-standard-error check says so."""
    rng, n, k, kappa, w, f, subsets, values, value, g = _reinforce_setup()
    R = 40_000
    d, cr = E.reinforce_gradient_draws(w, k, values, rng, draws=R, kappa=kappa)
    p = np.exp(kappa * w - np.max(kappa * w))
    p /= p.sum()
    hard = topk_mask(kappa * w + gumbel_noise((R, n), np.random.default_rng(42)), k)
    wrong = cr[:, None] * kappa * (hard - k * p)  # (R, N)
    st = E.gradient_error_stats(wrong, g)
    assert abs(st["bias_z"]) > 3 or st["rel_bias"] > 3 * st["noise_floor"], st


def test_loo_baseline_reduces_the_variance_of_one_draw():
    rng, n, k, kappa, w, f, subsets, values, value, g = _reinforce_setup()
    values = values + 10.0  # a constant offset: no change to g*, a large one to plain REINFORCE's variance
    _, cov0 = E.reinforce_moments(w, k, values, kappa=kappa, baseline="none")
    _, cov1 = E.reinforce_moments(w, k, values, kappa=kappa, baseline="loo")
    assert np.trace(cov1) < 0.2 * np.trace(cov0)


def test_st_losses_are_the_set_function_and_its_objective_is_exact():
    """st's forward is the hard top-K of κw + G: every draw's loss is c_S of its subset, so E_G[L] = E_S[c_S]."""
    rng, n, k, kappa, w, f, subsets, values, value, g = _reinforce_setup()
    d, losses = E.relaxed_gradient_draws(w, k, f, rng, draws=20_000, tau=0.5, kappa=kappa, relaxation="st")
    assert set(np.round(losses, 10)) <= set(np.round(values, 10))
    se = losses.std() / math.sqrt(len(losses))
    assert abs(losses.mean() - value) < 3 * se


def test_iterative_objective_gap_vanishes_as_tau_goes_to_zero():
    """As τ → 0 the iterative mask tends to the exact K-hot of top-K(κw + G) (docs/method.md §5.1), so
    E_G[L(M)] → E_S[L(1_S)]; at τ = 1 the gap is many standard errors away from 0."""
    rng, n, k, kappa, w, f, subsets, values, value, g = _reinforce_setup()
    for tau, near in ((1e-3, True), (1.0, False)):
        _, losses = E.relaxed_gradient_draws(w, k, f, rng, draws=20_000, tau=tau, kappa=kappa, relaxation="iterative")
        gap, se = losses.mean() - value, losses.std() / math.sqrt(len(losses))
        assert (abs(gap) < 3 * se) if near else (abs(gap) > 10 * se), (tau, gap, se)


def test_max_objective_tends_to_the_union_of_k_draws_with_replacement():
    """As τ → 0 the max mask tends to the indicator of the union of K Gumbel-max draws *with* replacement
    (docs/method.md §4.2), so E_G[L(M)] tends to E[L(1_union)], computed exactly over the N^K draws, not E_S[c_S]."""
    rng, n, k, kappa, w, f, subsets, values, value, g = _reinforce_setup()
    p = np.exp(kappa * w - np.max(kappa * w))
    p /= p.sum()
    union = 0.0
    for draw in itertools.product(range(n), repeat=k):
        m = np.zeros((1, n))
        m[0, list(draw)] = 1.0
        union += np.prod(p[list(draw)]) * f(m)[0][0]
    _, losses = E.relaxed_gradient_draws(w, k, f, rng, draws=20_000, tau=1e-3, kappa=kappa, relaxation="max")
    se = losses.std() / math.sqrt(len(losses))
    assert abs(losses.mean() - union) < 3 * se
    assert abs(union - value) > 10 * se


def test_relaxed_gradients_vanish_per_draw_as_tau_goes_to_zero():
    """For a fixed noise draw the pathwise gradient of a saturated softmax is O(exp(-gap/τ)/τ): at τ = 1e-3 it is
    tiny against τ = 1 (the same noise, same seed), for both noisy relaxations."""
    _, n, k, kappa, w, f, *_ = _reinforce_setup()
    for relaxation in ("max", "iterative"):
        big, _ = E.relaxed_gradient_draws(w, k, f, np.random.default_rng(9), draws=16, tau=1.0, kappa=kappa,
                                          relaxation=relaxation)
        small, _ = E.relaxed_gradient_draws(w, k, f, np.random.default_rng(9), draws=16, tau=1e-3, kappa=kappa,
                                            relaxation=relaxation)
        ratio = np.linalg.norm(small, axis=1) / np.linalg.norm(big, axis=1)
        assert np.median(ratio) < 1e-6, (relaxation, ratio)


def test_no_noise_is_one_deterministic_draw():
    _, n, k, kappa, w, f, *_ = _reinforce_setup()
    d1, l1 = E.relaxed_gradient_draws(w, k, f, np.random.default_rng(1), draws=50, tau=0.3, kappa=kappa, noise=False)
    d2, l2 = E.relaxed_gradient_draws(w, k, f, np.random.default_rng(2), draws=5, tau=0.3, kappa=kappa, noise=False)
    assert d1.shape == (1, n) and np.array_equal(d1, d2) and np.array_equal(l1, l2)
    st = E.gradient_error_stats(np.repeat(d1, 3, axis=0), d1[0])
    assert st["rel_bias"] < 1e-15 and st["rel_std"] < 1e-15 and st["cosine"] == pytest.approx(1.0)


def test_subset_index_round_trips():
    subsets, _ = E.subset_probabilities(np.zeros(7), 3)
    masks = (subsets[:, :, None] == np.arange(7)).any(axis=1)
    perm = np.random.default_rng(0).permutation(len(subsets))
    assert E.subset_index(subsets, masks[perm]).tolist() == perm.tolist()


# ============================================================================================== the subset DP
# The DP over drawn sets (estimators' docstring) against the independent enumeration of every subset's K!
# orderings (E._log_probs_by_orderings), on single rows and on padded batches.


def orderings_batch(W, k, kappa):
    """log P(S) (B, C(N, k)) in subsets_of(N, k) order from the orderings enumeration, row by row; -inf for the
    subsets that hold a padded candidate (the enumeration runs over each row's real candidates only)."""
    pos = {c: i for i, c in enumerate(itertools.combinations(range(W.shape[1]), k))}
    out = np.full((W.shape[0], len(pos)), -np.inf)
    for b, row in enumerate(W):
        subs, logp, _ = E._log_probs_by_orderings(row, k, kappa=kappa)
        out[b, [pos[tuple(s)] for s in subs.tolist()]] = logp
    return out


def padded_batch(rng, B, N, k):
    """(B, N) scores with a different number of padded candidates per row (row 0 none, every row >= k real)."""
    W = rng.standard_normal((B, N))
    for b in range(1, B):
        W[b, rng.choice(N, size=min(b, N - k), replace=False)] = -np.inf
    return W


def test_subsets_of_is_itertools_order():
    for n, k in ((1, 1), (5, 2), (7, 7), (9, 4)):
        s = E.subsets_of(n, k)
        assert s.dtype == np.int64 and s.tolist() == [list(c) for c in itertools.combinations(range(n), k)]
    s[0, 0] = 5  # a fresh copy: the cached plan is not written through it
    assert E.subsets_of(9, 4)[0, 0] == 0


@pytest.mark.parametrize("n,k,kappa,pad", [(6, 3, 1.3, ()), (7, 1, 2.0, ()), (7, 7, 1.0, ()), (8, 4, 40.0, ()),
                                           (9, 3, 0.5, (2, 7)), (10, 5, 6.88, (0,))])
def test_dp_equals_the_orderings_enumeration_on_a_row(n, k, kappa, pad):
    w = np.random.default_rng(n * 7 + k).standard_normal(n)
    w[list(pad)] = -np.inf
    subs, ref, _ = E._log_probs_by_orderings(w, k, kappa=kappa)
    logp, cache = E.subset_log_probs_forward(w, k, kappa=kappa)
    assert logp.shape == (math.comb(n - len(pad), k),) and cache.subsets.tolist() == subs.tolist()
    np.testing.assert_allclose(logp, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.exp(logp), np.exp(ref), rtol=1e-12, atol=1e-15)
    assert abs(np.exp(logp).sum() - 1.0) <= 1e-13


@pytest.mark.parametrize("B,N,k,kappa", [(5, 6, 3, 1.3), (4, 8, 2, 3.0), (3, 7, 5, 0.9), (4, 6, 1, 1.0)])
def test_dp_equals_the_orderings_enumeration_on_a_padded_batch(B, N, k, kappa):
    W = padded_batch(np.random.default_rng(B * N + k), B, N, k)
    ref = orderings_batch(W, k, kappa)
    logp, cache = E.subset_log_probs_forward(W, k, kappa=kappa)
    assert logp.shape == (B, math.comb(N, k)) and cache.subsets.tolist() == E.subsets_of(N, k).tolist()
    assert np.array_equal(np.isneginf(logp), np.isneginf(ref))  # padded subsets: probability exactly 0
    fin = np.isfinite(ref)
    np.testing.assert_allclose(logp[fin], ref[fin], rtol=1e-12, atol=1e-12)
    subsets, probs = E.subset_probabilities(W, k, kappa=kappa)
    assert np.all(probs[~fin] == 0.0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-13)


def test_a_row_with_exactly_k_real_candidates_has_one_subset_of_probability_one():
    W = np.array([[0.3, -np.inf, 2.0, -np.inf], [0.1, 0.2, 0.3, 0.4]])
    _, probs = E.subset_probabilities(W, 2, kappa=3.0)
    assert probs[0].tolist() == [0.0, 1.0, 0.0, 0.0, 0.0, 0.0]  # exactly, thanks to the normalisation
    values = np.arange(12.0).reshape(2, 6)
    value, ds = E.expected_value_and_grad(W, values, 2, kappa=3.0)
    assert value[0] == 1.0 and np.all(ds[0] == 0.0) and np.any(ds[1] != 0.0)


# ---------------------------------------------------------------------------------------------- shift invariance


@pytest.mark.parametrize("offset", [0.0, 1.0, -3.5e5, 1e16, 1e100, -1e200, 1e300, 1.7e308])
def test_probabilities_depend_on_differences_only(offset):
    """w = offset + u·d with d small integers and u = the spacing of the offset, so that w - max w = u (d - max d)
    exactly; with κ = κ0/u the probabilities must be those of (d, κ0) whatever the offset (the old code, which
    multiplied by κ before centring, gave NaN or wrong sums at large offsets)."""
    rng = np.random.default_rng(3)
    d = rng.permutation(7).astype(np.float64) - 3.0  # (N,) distinct integers in [-3, 3]
    u = float(np.spacing(abs(offset))) if offset else 1.0
    w = offset + u * d
    assert np.array_equal(w - w.max(), u * (d - d.max()))
    _, ref = E.subset_probabilities(d, 3, kappa=0.8)
    _, probs = E.subset_probabilities(w, 3, kappa=0.8 / u)
    np.testing.assert_allclose(probs, ref, rtol=1e-12, atol=1e-15)
    vals = rng.standard_normal(35)
    v0, g0 = E.expected_value_and_grad(d, vals, 3, kappa=0.8)
    v1, g1 = E.expected_value_and_grad(w, vals, 3, kappa=0.8 / u)
    assert v1 == pytest.approx(v0, rel=1e-12) and np.all(np.isfinite(g1))
    np.testing.assert_allclose(g1 * u, g0, rtol=1e-10, atol=1e-14)  # ∂/∂w = (1/u) ∂/∂d
    # the same rows at different offsets in one batch: each row is centred on its own maximum
    W = np.stack([d, w, -w])
    _, P = E.subset_probabilities(W, 3, kappa=0.8 / u)
    np.testing.assert_allclose(P[1], ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(P.sum(axis=1), 1.0, atol=1e-13)


@pytest.mark.parametrize("c", [1e16, 1e300, -1e308, 5e-324])
def test_a_constant_row_is_uniform_at_any_magnitude(c):
    subsets, probs = E.subset_probabilities(np.full(4, c), 2)  # the old code: sums to 12 at 1e16, NaN at 1e300
    np.testing.assert_allclose(probs, 1 / 6, rtol=1e-14)
    assert abs(probs.sum() - 1.0) <= 1e-15
    value, ds = E.expected_value_and_grad(np.full(4, c * 10 if abs(c) < 1e300 else c), np.arange(6.0), 2)
    assert value == pytest.approx(2.5, rel=1e-14) and 0.0 <= value <= 5.0 and np.all(np.isfinite(ds))


def test_huge_kappa_is_handled_when_the_differences_fit_and_named_when_they_do_not():
    _, probs = E.subset_probabilities(np.zeros(4), 2, kappa=1e308)  # κ·w = 0: uniform
    np.testing.assert_allclose(probs, 1 / 6, rtol=1e-14)
    _, probs = E.subset_probabilities(np.array([0.0, 1.0, 1.5, 0.5]), 2, kappa=1e308)  # gaps of 5e307: one subset
    assert probs.tolist() == [0, 0, 0, 1.0, 0, 0]  # {1, 2}, the two largest
    with pytest.raises(ValueError, match=r"subset_probabilities: kappa=1e\+308"):
        E.subset_probabilities(np.array([0.0, 2.0, -1.0, 0.5]), 2, kappa=1e308)
    with pytest.raises(ValueError, match="reinforce_gradient_draws: kappa="):  # the old code: NaN, unnamed
        E.reinforce_gradient_draws(np.array([0.0, 2.0, -1.0, 0.5]), 2, np.zeros(6), np.random.default_rng(0),
                                   draws=8, kappa=1e308)
    d, c = E.reinforce_gradient_draws(np.zeros(4), 2, np.arange(6.0), np.random.default_rng(0), draws=8, kappa=1e300)
    assert np.all(np.isfinite(d)) and np.all(np.isfinite(c))
    # κ·w = 0 fits, but ∂/∂w = κ ∂/∂z does not: named, not inf
    with pytest.raises(ValueError, match="reinforce_gradient_draws: kappa=1e\\+308; expected a gradient that fits"):
        E.reinforce_gradient_draws(np.zeros(4), 2, np.arange(6.0), np.random.default_rng(0), draws=8, kappa=1e308)
    value, cache = E.expected_value_forward(np.zeros(4), np.arange(6.0), 2, kappa=1e308)
    assert value == pytest.approx(2.5)
    with pytest.raises(ValueError, match="expected_value_backward: kappa="):
        E.expected_value_backward(10.0, cache)
    with pytest.raises(ValueError, match="expected_value_and_grad: kappa="):
        E.expected_value_and_grad(np.zeros(4), 10 * np.arange(6.0), 2, kappa=1e308)  # 10 κ ∂V/∂z = 8.75e308 > max
    with pytest.raises(ValueError, match="subset_probabilities: scores="):  # max - min itself overflows
        E.subset_probabilities(np.array([-1e308, 1e308, 0.0]), 2)


# ---------------------------------------------------------------------------------------------- gradients


def logp_pair(k, kappa):
    def forward(d):
        return E.subset_log_probs_forward(d["scores"], k, kappa=kappa)

    def backward(dout, cache):
        return {"scores": E.subset_log_probs_backward(dout, cache)}

    return forward, backward


@pytest.mark.parametrize("shape,k,kappa", [((6,), 3, 1.7), ((5,), 1, 0.8), ((5,), 5, 2.0), ((3, 7), 3, 1.3),
                                           ((4, 8), 6, 3.0), ((1, 6), 2, 0.5)])
def test_log_prob_backward_fd_autograd_and_mutation(shape, k, kappa):
    rng = np.random.default_rng(sum(shape) + k)
    forward, backward = logp_pair(k, kappa)
    rep = check_grads(forward, backward, {"scores": rng.standard_normal(shape)}, rng=rng, tol=1e-8,
                      autograd_tol=1e-10)
    assert rep.fd_rel_error <= 1e-8 and rep.autograd_rel_error["scores"] <= 1e-10
    if k < shape[-1]:
        assert rep.mutated_fd_rel_error > 1e-3


def test_batched_expected_value_gradient_fd_autograd_and_mutation():
    rng = np.random.default_rng(8)
    W, values = rng.standard_normal((4, 8)), rng.standard_normal((4, 56))
    forward, backward = fwd_bwd(3, 2.2)
    rep = check_grads(forward, backward, {"scores": W, "values": values}, rng=rng, tol=1e-8, autograd_tol=1e-10)
    assert rep.mutated_fd_rel_error > 1e-3 and max(rep.autograd_rel_error.values()) <= 1e-10
    value, ds = E.expected_value_and_grad(W, values, 3, kappa=2.2)
    for b in range(4):  # row by row through the (N,) path and the orderings enumeration
        v, g = E.expected_value_and_grad(W[b], values[b], 3, kappa=2.2)
        v2, g2 = E._expected_value_and_grad_by_orderings(W[b], values[b], 3, kappa=2.2)
        assert value[b] == pytest.approx(v, rel=1e-13) == pytest.approx(v2, rel=1e-12)
        np.testing.assert_allclose(ds[b], g, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(ds[b], g2, rtol=1e-10, atol=1e-13)


def test_padded_batch_gradient_fd_and_equal_to_each_rows_compressed_path():
    """A padded batch row gives the gradient of the same row as (N,), whose DP runs over its real candidates only
    (autograd-checked above), and exactly 0 on its padding. (Autograd itself cannot follow a -inf row: the
    gradient of log Σ over all -inf entries is 0/0.)"""
    rng = np.random.default_rng(21)
    W = padded_batch(rng, 4, 7, 3)
    values = rng.standard_normal((4, 35))
    forward, backward = fwd_bwd(3, 1.1)
    mask = {"scores": np.isfinite(W).astype(np.float64)}
    rep = check_grads(forward, backward, {"scores": W, "values": values}, rng=rng, tol=1e-7, mask=mask,
                      use_autograd=False)
    assert rep.mutated_fd_rel_error > 1e-3
    value, ds = E.expected_value_and_grad(W, values, 3, kappa=1.1)
    assert np.all(ds[~np.isfinite(W)] == 0.0)
    full = E.subsets_of(7, 3)
    for b in range(4):
        subs, _ = E.subset_probabilities(W[b], 3)
        rows = [full.tolist().index(s) for s in subs.tolist()]
        v, g = E.expected_value_and_grad(W[b], values[b, rows], 3, kappa=1.1)
        assert value[b] == pytest.approx(v, rel=1e-13)
        np.testing.assert_allclose(ds[b], g, rtol=1e-12, atol=1e-15)


def test_jacobian_of_every_log_prob_equals_the_backward_and_the_orderings():
    """subset_log_prob_grads (forward mode) row by row against subset_log_probs_backward of one-hot dlogp (reverse
    mode) and against the orderings enumeration's own gradient."""
    rng = np.random.default_rng(4)
    W = padded_batch(rng, 3, 7, 3)
    subsets, logp, J = E.subset_log_prob_grads(W, 3, kappa=1.6)
    assert J.shape == (3, 35, 7)
    _, cache = E.subset_log_probs_forward(W, 3, kappa=1.6)
    for s in range(0, 35, 3):
        e = np.zeros((3, 35))
        e[:, s] = 1.0
        np.testing.assert_allclose(J[:, s], E.subset_log_probs_backward(e, cache), rtol=1e-12, atol=1e-14)
    for b in range(3):
        subs, _, oc = E._log_probs_by_orderings(W[b], 3, kappa=1.6)
        rows = [subsets.tolist().index(x) for x in subs.tolist()]
        np.testing.assert_allclose(J[b, rows], E._dlogp_by_orderings(oc), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(J.sum(axis=2), 0.0, atol=1e-12)  # a common shift changes nothing
    assert np.all(J[:, :, ~np.isfinite(W[1])][1] == 0.0)


# ---------------------------------------------------------------------------------------------- Plackett-Luce


def product_form(w, order, kappa):
    p = np.exp(kappa * (w - w.max()))
    p = p / p.sum()
    out, used = 1.0, 0.0
    for i in order:
        out *= p[i] / (1.0 - used)
        used += p[i]
    return out


def all_orderings(n_real, k):
    return np.array([o for c in itertools.combinations(range(n_real), k) for o in itertools.permutations(c)])


def test_ordering_log_probs_sum_over_each_set_to_the_dp():
    """exp(log P(ordering)) summed over a set's K! orderings is P(S) from the DP; each equals the product form."""
    w = np.random.default_rng(6).standard_normal(6)
    orders = all_orderings(6, 3)  # (120, 3)
    logp, _ = E.plackett_luce_log_prob_forward(w, orders, kappa=1.4)
    assert logp.shape == (120,)
    np.testing.assert_allclose(np.exp(logp[:7]), [product_form(w, o, 1.4) for o in orders[:7]], rtol=1e-12)
    per_set = np.exp(logp).reshape(20, 6).sum(axis=1)  # (S,) orderings of one set are adjacent
    _, probs = E.subset_probabilities(w, 3, kappa=1.4)
    np.testing.assert_allclose(per_set, probs, rtol=1e-12)
    # batched, with padding and a huge common offset: the same numbers
    W = np.stack([w, 1e300 + 0 * w])
    W[1, 4] = -np.inf
    ords = np.stack([orders[:10], np.array([[0, 1, 2], [5, 3, 1]] * 5)])
    lp, _ = E.plackett_luce_log_prob_forward(W, ords, kappa=1.4)
    np.testing.assert_allclose(lp[0], logp[:10], rtol=1e-14)
    np.testing.assert_allclose(lp[1], np.log(1 / (5 * 4 * 3)), rtol=1e-14)  # 5 tied real candidates


@pytest.mark.parametrize("shape,m,k", [((6,), 5, 3), ((3, 7), 4, 2), ((2, 9), 3, 9 - 3)])
def test_ordering_backward_fd_autograd_and_mutation(shape, m, k):
    rng = np.random.default_rng(m * k)
    W = rng.standard_normal(shape)
    if len(shape) == 2:
        W[1, 0] = -np.inf  # padding, never drawn
    _, orders = E.sample_subsets(W, k, rng, samples=m, kappa=1.2)

    def forward(d):
        return E.plackett_luce_log_prob_forward(d["scores"], orders, kappa=1.2)

    def backward(dout, cache):
        return {"scores": E.plackett_luce_log_prob_backward(dout, cache)}

    mask = {"scores": np.isfinite(W).astype(np.float64)}
    rep = check_grads(forward, backward, {"scores": W}, rng=rng, tol=1e-8, mask=mask)
    assert rep.mutated_fd_rel_error > 1e-3 and rep.autograd_rel_error["scores"] <= 1e-10
    ds = backward(np.ones(np.shape(forward({"scores": W})[0])), forward({"scores": W})[1])["scores"]
    assert np.all(ds[~np.isfinite(W)] == 0.0)


# ---------------------------------------------------------------------------------------------- sampling


def test_sample_subsets_shapes_and_draw_order():
    rng = np.random.default_rng(0)
    W = padded_batch(rng, 3, 8, 3)
    subsets, orders = E.sample_subsets(W, 3, np.random.default_rng(5), samples=50, kappa=2.0)
    assert subsets.shape == orders.shape == (3, 50, 3) and subsets.dtype == orders.dtype == np.int64
    assert np.all(np.diff(subsets, axis=-1) > 0) and np.array_equal(np.sort(orders, axis=-1), subsets)
    assert np.all(np.isfinite(np.take_along_axis(W[:, None, :], subsets.reshape(3, -1)[:, None, :], 2)))
    # orders: the top-k of κ(w - max w) + G in descending key order, with G the next gumbel_noise draw
    G = gumbel_noise((3, 50, 8), np.random.default_rng(5))
    keys = 2.0 * (W - W.max(axis=1, keepdims=True))[:, None, :] + G
    assert np.array_equal(orders, np.argsort(-keys, axis=-1)[..., :3])
    s1, o1 = E.sample_subsets(W[0], 3, np.random.default_rng(5), samples=50, kappa=2.0)
    assert s1.shape == (50, 3) and np.array_equal(o1, orders[0])


def test_sampled_subset_and_ordering_frequencies_match_the_exact_probabilities():
    """Chi-square goodness of fit (p >= CHI2_LEVEL, seeded) of sample_subsets' set frequencies against
    subset_probabilities on a padded batch, and of its ordering frequencies against exp(Plackett-Luce); the same
    counts reject the probabilities of a 5% different κ."""
    rng = np.random.default_rng(20261203)
    W = np.array([[0.4, -0.3, 1.1, 0.0, -1.0], [0.2, -np.inf, 0.9, -0.5, 0.3]])
    k, kappa, R = 2, 1.3, 100_000
    subsets, orders = E.sample_subsets(W, k, rng, samples=R, kappa=kappa)
    full = E.subsets_of(5, k)
    _, probs = E.subset_probabilities(W, k, kappa=kappa)
    _, wrong = E.subset_probabilities(W, k, kappa=kappa * 1.05)
    rank = {tuple(s): i for i, s in enumerate(full.tolist())}
    for b in range(2):
        counts = np.bincount([rank[tuple(s)] for s in subsets[b].tolist()], minlength=len(full))
        live = probs[b] > 0
        assert np.all(counts[~live] == 0)
        assert stats.chisquare(counts[live], R * probs[b, live]).pvalue >= CHI2_LEVEL
        assert stats.chisquare(counts[live], R * wrong[b, live]).pvalue < CHI2_LEVEL
    ords = all_orderings(5, k)  # (20, 2)
    code = {tuple(o): i for i, o in enumerate(ords.tolist())}
    counts = np.bincount([code[tuple(o)] for o in orders[0].tolist()], minlength=len(ords))
    lp, _ = E.plackett_luce_log_prob_forward(W[0], ords, kappa=kappa)
    assert abs(np.exp(lp).sum() - 1.0) < 1e-13
    assert stats.chisquare(counts, R * np.exp(lp)).pvalue >= CHI2_LEVEL
    lp_wrong, _ = E.plackett_luce_log_prob_forward(W[0], ords, kappa=kappa * 1.05)
    assert stats.chisquare(counts, R * np.exp(lp_wrong)).pvalue < CHI2_LEVEL


# ---------------------------------------------------------------------------------------------- RLOO


def rloo_setup():
    rng = np.random.default_rng(77)
    n, k, kappa = 6, 3, 1.1
    w = rng.standard_normal(n)
    f = quadratic(n, rng)
    table = set_values(f, E.subsets_of(n, k), n)  # (S,) c_S
    value, g = E.expected_value_and_grad(w, table, k, kappa=kappa)
    rank = {tuple(s): i for i, s in enumerate(E.subsets_of(n, k).tolist())}

    def losses_of(draws):  # (..., m, k) candidates in any order -> (..., m)
        flat = np.sort(draws.reshape(-1, k), axis=1)
        return table[[rank[tuple(s)] for s in flat.tolist()]].reshape(draws.shape[:-1])

    return rng, n, k, kappa, w, table, value, g, losses_of


def rloo_grads(W, losses, draws, k, kappa, score):
    surrogate, cache = E.rloo_forward(W, losses, draws, k, kappa=kappa, score=score)
    return E.rloo_backward(1.0, cache), cache


@pytest.mark.parametrize("score", ["set", "ordering"])
def test_rloo_with_two_draws_is_exactly_unbiased_by_enumeration(score):
    """m = 2: every ordered pair of draws (sets, or orderings) as one row of a batch, weighted by its probability:
    the weighted mean of the per-row RLOO estimates is ∂V to rounding. Its weighted covariance is the exact
    covariance of one m = 2 estimate, which the Monte Carlo test below uses."""
    rng, n, k, kappa, w, table, value, g, losses_of = rloo_setup()
    if score == "set":
        items = E.subsets_of(n, k)  # (20, 3)
        logq = E.subset_probabilities(w, k, kappa=kappa)[1]
    else:
        items = all_orderings(n, k)  # (120, 3)
        logq = np.exp(E.plackett_luce_log_prob_forward(w, items, kappa=kappa)[0])
    i1, i2 = np.meshgrid(np.arange(len(items)), np.arange(len(items)), indexing="ij")
    draws = np.stack([items[i1.ravel()], items[i2.ravel()]], axis=1)  # (P², 2, k)
    weight = logq[i1.ravel()] * logq[i2.ravel()]  # (P²,)
    W = np.broadcast_to(w, (len(weight), n)).copy()
    d, cache = rloo_grads(W, losses_of(draws), draws, k, kappa, score)
    np.testing.assert_allclose(weight @ d, g, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(weight @ cache.mean_loss, value, rtol=1e-12)
    assert weight.sum() == pytest.approx(1.0, rel=1e-12)  # every ordered pair, once


@pytest.mark.parametrize("score", ["set", "ordering"])
def test_rloo_mean_over_many_draws_is_within_three_standard_errors(score):
    """Q = 6000 independent RLOO estimates (m = 2, one batch row each) from sample_subsets; their mean against ∂V
    along ∂V and 5 fixed directions, in standard errors of the exact covariance (the enumeration of the test
    above). The same draws with the baseline that includes the draw itself ((m-1)/m of ∂V) are rejected."""
    rng, n, k, kappa, w, table, value, g, losses_of = rloo_setup()
    if score == "set":
        items, q = E.subsets_of(n, k), E.subset_probabilities(w, k, kappa=kappa)[1]
    else:
        items = all_orderings(n, k)
        q = np.exp(E.plackett_luce_log_prob_forward(w, items, kappa=kappa)[0])
    i1, i2 = np.meshgrid(np.arange(len(items)), np.arange(len(items)), indexing="ij")
    pairs = np.stack([items[i1.ravel()], items[i2.ravel()]], axis=1)
    weight = q[i1.ravel()] * q[i2.ravel()]
    dp, _ = rloo_grads(np.broadcast_to(w, (len(weight), n)).copy(), losses_of(pairs), pairs, k, kappa, score)
    cov = (dp * weight[:, None]).T @ dp - np.outer(g, g)  # (N, N) exact covariance of one estimate
    Q = 6000
    W = np.broadcast_to(w, (Q, n)).copy()
    subsets, orders = E.sample_subsets(W, k, rng, samples=2, kappa=kappa)
    draws = subsets if score == "set" else orders
    d, cache = rloo_grads(W, losses_of(draws), draws, k, kappa, score)
    st = E.gradient_error_stats(d, g, exact_cov=cov)
    assert abs(st["bias_z"]) < 3 and st["rel_bias"] < 3 * st["noise_floor"], st
    dirs = np.random.default_rng(0).standard_normal((5, n))
    z = (d.mean(0) - g) @ dirs.T / np.sqrt(np.einsum("ij,jk,ik->i", dirs, cov, dirs) / Q)
    assert np.all(np.abs(z) < 3), z
    assert abs(cache.mean_loss.mean() - value) < 3 * cache.mean_loss.std() / math.sqrt(Q)
    bad = E.gradient_error_stats(0.5 * d, g, exact_cov=0.25 * cov)  # m = 2: (m - 1)/m = 1/2
    assert abs(bad["bias_z"]) > 3, bad


@pytest.mark.parametrize("score", ["set", "ordering"])
def test_rloo_surrogate_gradient_fd_autograd_and_mutation(score):
    rng, n, k, kappa, w, table, value, g, losses_of = rloo_setup()
    W = np.stack([w, rng.standard_normal(n)])
    subsets, orders = E.sample_subsets(W, k, rng, samples=5, kappa=kappa)
    draws = subsets if score == "set" else orders
    losses = losses_of(draws)

    def forward(d):
        return E.rloo_forward(d["scores"], losses, draws, k, kappa=kappa, score=score)

    def backward(dout, cache):
        return {"scores": E.rloo_backward(dout, cache)}

    rep = check_grads(forward, backward, {"scores": W}, rng=rng, tol=1e-8)
    assert rep.mutated_fd_rel_error > 1e-3
    # one row as (N,) with padding: draws index the padded row's candidates
    wp = np.insert(w, 2, -np.inf)
    dp = np.where(draws[0] >= 2, draws[0] + 1, draws[0])

    def forward1(d):
        return E.rloo_forward(d["scores"], losses[0], dp, k, kappa=kappa, score=score)

    rep = check_grads(forward1, backward, {"scores": wp}, rng=rng, tol=1e-8,
                      mask={"scores": np.isfinite(wp).astype(np.float64)})
    surrogate, cache = forward1({"scores": wp})
    ds = E.rloo_backward(1.0, cache)
    assert ds[2] == 0.0 and cache.mean_loss == pytest.approx(losses[0].mean())
    _, c2 = forward({"scores": W})
    np.testing.assert_allclose(np.delete(ds, 2), E.rloo_backward(1.0, c2)[0], rtol=1e-12, atol=1e-15)


# ---------------------------------------------------------------------------------------------- N = 20, K = 5


def test_n20_k5_runs_sums_to_one_and_its_gradient_checks():
    rng = np.random.default_rng(2020)
    W = rng.standard_normal((2, 20))
    W[1, [3, 17]] = -np.inf
    subsets, probs = E.subset_probabilities(W, 5, kappa=1.5)
    assert probs.shape == (2, 15504) and subsets.shape == (15504, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-12)
    for s in rng.choice(15504, size=4, replace=False):  # against the product form over the 120 orderings
        ref = sum(product_form(W[0], o, 1.5) for o in itertools.permutations(subsets[s]))
        assert probs[0, s] == pytest.approx(ref, rel=1e-11)
    forward, backward = fwd_bwd(5, 1.5)
    check_grads(forward, backward, {"scores": W[:1], "values": rng.standard_normal((1, 15504))}, rng=rng, tol=1e-8)
    draws, orders = E.sample_subsets(W, 5, rng, samples=4, kappa=1.5)
    losses = rng.standard_normal((2, 4))
    for score, dr in (("set", draws), ("ordering", orders)):
        _, cache = E.rloo_forward(W, losses, dr, 5, kappa=1.5, score=score)
        ds = E.rloo_backward(1.0, cache)
        assert ds.shape == (2, 20) and np.all(np.isfinite(ds)) and ds[1, 3] == ds[1, 17] == 0.0


def test_size_limit_names_n_and_k():
    for call in (lambda: E.subsets_of(40, 20), lambda: E.subset_probabilities(np.zeros((2, 40)), 20),
                 lambda: E.rloo_forward(np.zeros(40), np.zeros(2), np.array([[0] * 20, [1] * 20]), 20)):
        with pytest.raises(ValueError, match=r"k=20; expected C\(N, k\)·k <= MAX_TERMS=\d+ .*N=40 .*k=20"):
            call()
    _, orders = E.sample_subsets(np.zeros(40), 20, np.random.default_rng(0), samples=2)  # any N: no limit
    _, cache = E.rloo_forward(np.zeros(40), np.array([1.0, 0.0]), orders, 20, score="ordering")
    assert E.rloo_backward(1.0, cache).shape == (40,)


# ---------------------------------------------------------------------------------------------- named errors (issue 21)


@pytest.mark.parametrize("call,exc,named", [
    (lambda: E.subset_probabilities(np.zeros(4), None), TypeError, "subset_probabilities: k=None"),
    (lambda: E.expected_value_and_grad(np.zeros(4), np.zeros(6), None), TypeError,
     "expected_value_and_grad: k=None"),
    (lambda: E.subset_log_prob_grads(np.zeros(4), None), TypeError, "subset_log_prob_grads: k=None"),
    (lambda: E.reinforce_moments(np.zeros(4), None, np.zeros(6)), TypeError, "reinforce_moments: k=None"),
    (lambda: E.reinforce_gradient_draws(np.zeros(4), None, np.zeros(6), np.random.default_rng(0), draws=4),
     TypeError, "reinforce_gradient_draws: k=None"),
    (lambda: E.expected_value_backward("1", E.expected_value_forward(np.zeros(4), np.zeros(6), 2)[1]), TypeError,
     "expected_value_backward: dvalue='1'"),
    (lambda: E.expected_value_backward(True, E.expected_value_forward(np.zeros(4), np.zeros(6), 2)[1]), TypeError,
     "expected_value_backward: dvalue=True"),
    (lambda: E.expected_value_backward(np.nan, E.expected_value_forward(np.zeros(4), np.zeros(6), 2)[1]), ValueError,
     "expected_value_backward: dvalue=nan"),
    (lambda: E.subset_index(np.array([[0, 1], [0, 2]]), np.array([[1.0, np.nan, 0.0]])), ValueError,
     "subset_index: masks="),
    (lambda: E.subset_index(np.array([[0, 1], [0, 2]]), np.array([[1.0, 0.5, 0.5]])), ValueError,
     "subset_index: masks="),
    (lambda: E.gradient_error_stats(np.zeros((0, 6)), np.ones(6)), ValueError, "gradient_error_stats: draws.shape"),
])
def test_bad_values_are_named_not_crashes(call, exc, named):
    with pytest.raises(exc) as e:
        call()
    assert str(e.value).startswith(named), str(e.value)


def test_reinforce_values_may_be_a_function_of_the_drawn_subsets():
    rng, n, k, kappa, w, table, value, g, losses_of = rloo_setup()
    seen = []

    def values(sub):
        seen.append(sub.copy())
        return losses_of(sub)

    for baseline in E.BASELINES:
        d1, c1 = E.reinforce_gradient_draws(w, k, table, np.random.default_rng(9), draws=64, kappa=kappa,
                                            baseline=baseline)
        d2, c2 = E.reinforce_gradient_draws(w, k, values, np.random.default_rng(9), draws=64, kappa=kappa,
                                            baseline=baseline)
        assert np.array_equal(d1, d2) and np.array_equal(c1, c2)
    assert seen[0].shape == (64, k) and seen[0].dtype == np.int64 and np.all(np.diff(seen[0], axis=1) > 0)
    with pytest.raises(ValueError, match=r"reinforce_gradient_draws: values\(subsets\)\.shape"):
        E.reinforce_gradient_draws(w, k, lambda s: np.zeros(3), np.random.default_rng(0), draws=8)
    with pytest.raises(ValueError, match=r"reinforce_gradient_draws: values\(subsets\)="):
        E.reinforce_gradient_draws(w, k, lambda s: np.full(len(s), np.nan), np.random.default_rng(0), draws=8)
