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
    (lambda: E.subset_probabilities(np.zeros((2, 3)), 2), ValueError, "scores.shape"),
    (lambda: E.subset_probabilities(np.arange(4), 2), TypeError, "scores.dtype"),
    (lambda: E.subset_probabilities([0.0, 1.0], 1), TypeError, "scores"),
    (lambda: E.subset_probabilities(np.zeros(4), 0), ValueError, "k="),
    (lambda: E.subset_probabilities(np.zeros(4), 5), ValueError, "k="),
    (lambda: E.subset_probabilities(np.zeros(4), 2.0), TypeError, "k="),
    (lambda: E.subset_probabilities(np.array([0.0, -np.inf, -np.inf]), 2), ValueError, "scores"),
    (lambda: E.subset_probabilities(np.zeros(4), 2, kappa=0.0), ValueError, "kappa"),
    (lambda: E.subset_probabilities(np.zeros(4), 2, kappa=np.inf), ValueError, "kappa"),
    (lambda: E.subset_probabilities(np.zeros(14), 7), ValueError, "k=7"),
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
