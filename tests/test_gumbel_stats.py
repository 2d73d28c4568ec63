"""Monte Carlo checks of mini_gumbel.gumbel against exact distributions (docs/method.md §3-4).

Every test uses a fixed seed, so it is deterministic; the level quoted for each test is the probability
that a *correct* implementation would fail it with a randomly chosen seed (its false-alarm rate). Each
test also shows that it has power: the nearest wrong answer is rejected by the same statistic.
"""
import itertools
import math

import numpy as np
import pytest
from scipy import stats
from scipy.special import softmax

from mini_gumbel.gumbel import gumbel_noise, relaxed_topk_forward, topk_mask

EULER_GAMMA = 0.5772156649015329
Z = 5.0  # two-sided normal z-test at |z| < 5: false alarm 5.7e-7 per statistic
ALPHA = 1e-4  # chi-square tests: false alarm 1e-4 per test


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_noise_mean_is_euler_gamma_and_variance_is_pi2_over_6(dtype):
    n = 400_000
    g = gumbel_noise((n,), np.random.default_rng(2024), dtype=dtype).astype(np.float64)
    assert np.all(np.isfinite(g))
    var = math.pi**2 / 6.0
    # mean: std of the sample mean is sqrt(var / n)
    z_mean = (g.mean() - EULER_GAMMA) / math.sqrt(var / n)
    # variance: Var(s²) = σ⁴ (2/(n-1) + excess kurtosis / n), Gumbel excess kurtosis = 12/5
    z_var = (g.var(ddof=1) - var) / (var * math.sqrt(2.0 / (n - 1) + 2.4 / n))
    assert abs(z_mean) < Z, z_mean
    assert abs(z_var) < Z, z_var
    # power: a 2% error in the mean, or a 3% error in the variance, is already rejected
    assert abs((g.mean() - 1.02 * EULER_GAMMA) / math.sqrt(var / n)) > Z
    assert abs((g.var(ddof=1) - 1.03 * var) / (var * math.sqrt(2.0 / (n - 1) + 2.4 / n))) > Z


def test_gumbel_max_samples_softmax():
    """argmax_i (κ w_i + G_i) ~ softmax(κ w): chi-square goodness of fit, level 1e-4."""
    w = np.array([0.3, -1.0, 1.2, 0.0, -0.4])  # (N,)
    kappa, n = 1.5, 60_000
    g = gumbel_noise((n, w.size), np.random.default_rng(7))  # (n, N)
    counts = np.bincount(np.argmax(kappa * w + g, axis=-1), minlength=w.size)  # (N,)
    p = softmax(kappa * w)
    assert stats.chisquare(counts, n * p).pvalue > ALPHA
    # power: without κ (softmax(w)) the same counts are rejected
    assert stats.chisquare(counts, n * softmax(w)).pvalue < ALPHA


def ordered_topk_probabilities(p, k):
    """Exact P(i_1, ..., i_k) = Π_j p_ij / (1 - Σ_{l<j} p_il) for every ordered k-tuple (Kool et al. 2019)."""
    out = {}
    for tup in itertools.permutations(range(p.size), k):
        prob, used = 1.0, 0.0
        for i in tup:
            prob *= p[i] / (1.0 - used)
            used += p[i]
        out[tup] = prob
    return out


@pytest.mark.parametrize("k", [2, 3, 4])
def test_gumbel_topk_is_sampling_without_replacement(k):
    """Ordered top-k of κw + G has the exact without-replacement law: chi-square over all N!/(N-k)! orders.

    Level 1e-4 per k (3e-4 for the three together, Bonferroni).
    """
    w, kappa, n = np.array([1.0, 0.2, -0.5, 0.6]), 1.2, 60_000
    g = gumbel_noise((n, w.size), np.random.default_rng(100 + k))  # (n, N)
    order = np.argsort(-(kappa * w + g), axis=-1)[:, :k]  # (n, k) ordered sample
    exact = ordered_topk_probabilities(softmax(kappa * w), k)
    tuples = list(exact)
    index = {t: j for j, t in enumerate(tuples)}
    counts = np.bincount([index[tuple(r)] for r in order.tolist()], minlength=len(tuples))
    expected = n * np.array([exact[t] for t in tuples])
    assert expected.sum() == pytest.approx(n)
    assert stats.chisquare(counts, expected).pvalue > ALPHA
    # power: drawing each position independently from p (with replacement, conditioned on distinctness)
    # is a different law, and the same counts reject it
    p = softmax(kappa * w)
    naive = np.array([np.prod(p[list(t)]) for t in tuples])
    assert stats.chisquare(counts, n * naive / naive.sum()).pvalue < ALPHA
    # the unordered set is what topk_mask selects
    sets = topk_mask(kappa * w + g, k)  # (n, N)
    np.testing.assert_array_equal(np.sort(order, axis=-1), np.nonzero(sets)[1].reshape(n, k))


def test_max_mask_mean_is_union_probability_of_k_draws_with_replacement():
    """"max" at τ -> 0: E[M_i] = P(i in K draws with replacement) = 1 - (1 - p_i)^K, p = softmax(κw).

    M_i ∈ [0, 1] with mean q_i has variance <= q_i (1 - q_i), so the binomial std bounds the std of the
    mean of n masks; tolerance Z = 5 stds per entry with Bonferroni over N = 5 entries: false alarm
    <= 5 * 5.7e-7 = 2.9e-6. τ = 1e-4 leaves a bias of order τ (the chance that two keys of a draw are
    within a few τ of each other), ~1e-4, far below the tolerance (~0.017).
    """
    w, kappa, k, n = np.array([1.0, 0.4, 0.0, -0.3, -1.0]), 1.0, 3, 20_000
    noise = gumbel_noise((n, k, w.size), np.random.default_rng(55))  # (n, K, N)
    M, _ = relaxed_topk_forward(np.broadcast_to(w, (n, w.size)).copy(), noise, k, tau=1e-4, kappa=kappa)
    p = softmax(kappa * w)
    q = 1.0 - (1.0 - p) ** k  # (N,)
    tol = Z * np.sqrt(q * (1.0 - q) / n)  # (N,)
    assert np.all(np.abs(M.mean(0) - q) < tol), (M.mean(0), q, tol)
    # power: the inclusion probabilities of an exact top-K (without replacement) differ by many tolerances
    incl = np.zeros(w.size)
    for t, prob in ordered_topk_probabilities(p, k).items():
        incl[list(t)] += prob
    assert np.max(np.abs(incl - q) / tol) > 3.0
