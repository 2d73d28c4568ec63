"""The "max" backward row by row where the Gumbel-softmaxes saturate (issue 21, item 9).

A whole dscores tensor can look right while single rows are wrong: where a draw's softmax is within
rounding of one-hot, the summed form g_l M_l - Σ_j t_j S^(j)_l subtracts two O(|g|) numbers to leave one of
size 1 - M_l ~ e^(-gap/τ), and every small term of the row vanishes in the rounding. These tests compare
every row, relative to its own size, with a reference computed in exact-enough decimal arithmetic from the
same float64 inputs: the dense Jacobian sum of docs/method.md §4.3, with no rearrangement at all.
"""
import decimal
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mini_gumbel.gumbel import gumbel_noise, relaxed_topk_backward, relaxed_topk_forward

# 340 significant digits: 1 - S^(j)_l is computed without cancellation down to 1e-330, below float64's range,
# so every row whose gradient float64 can represent (>= 1e-290 below) is exact to far more than 1e-9.
PREC = 340
ROW_RTOL = 1e-9  # the target: per row, relative to the row's largest |dscores|
FLOOR = 1e-290  # rows whose exact gradient is smaller than this are compared absolutely


def reference_dscores(w, G, g, tau, kappa):
    """dscores (B, N) of "max" at float64 inputs w (B, N), G (B, K, N), dmask g (B, N), in decimal:
    dw_l = (κ/τ) Σ_i g_i S^(j*(i))_i (δ_il - S^(j*(i))_l), j*(i) the draw with the largest S_i (lowest j
    on an exact tie)."""
    ctx = decimal.Context(prec=PREC, Emin=-10**9, Emax=10**9)
    B, K, N = G.shape
    out = np.zeros((B, N))
    with decimal.localcontext(ctx):
        kap, ta = Decimal(float(kappa)), Decimal(float(tau))
        for b in range(B):
            S = []
            for j in range(K):
                z = [(kap * Decimal(float(w[b, i])) + Decimal(float(G[b, j, i]))) / ta for i in range(N)]
                top = max(z)
                e = [(zi - top).exp() for zi in z]
                tot = sum(e)
                S.append([ei / tot for ei in e])
            win = [max(range(K), key=lambda j: (S[j][i], -j)) for i in range(N)]
            for l in range(N):
                acc = Decimal(0)
                for i in range(N):
                    Si = S[win[i]]
                    acc += Decimal(float(g[b, i])) * Si[i] * ((1 if i == l else 0) - Si[l])
                out[b, l] = float(kap / ta * acc)
    return out


def assert_rows_close(d, ref):
    scale = np.max(np.abs(ref), axis=-1)  # (B,)
    err = np.max(np.abs(d - ref), axis=-1)  # (B,)
    bad = err > ROW_RTOL * scale + FLOOR
    assert not bad.any(), (f"{int(bad.sum())} of {len(bad)} rows off by more than {ROW_RTOL:g} of their size; "
                           f"worst relative error {float(np.max(err / np.maximum(scale, FLOOR))):.3g}")


def max_dscores(w, G, g, tau, kappa):
    _, cache = relaxed_topk_forward(w, G, G.shape[-2], tau=tau, kappa=kappa, relaxation="max")
    return relaxed_topk_backward(g, cache)


def test_closed_form_of_two_saturated_draws():
    # Two items, two draws, each draw saturated toward its own item: z^(1) = (50, 0), z^(2) = (0, 40).
    # dscores = (κ/τ)(e^-50 - e^-40) (1, -1) to first order (the summed form gave exactly 0).
    w, G = np.zeros((1, 2)), np.array([[[0.5, 0.0], [0.0, 0.4]]])
    d = max_dscores(w, G, np.ones((1, 2)), 0.01, 1.0)
    exact = 100.0 * (np.exp(-50.0) - np.exp(-40.0))  # the next order is e^-80 smaller
    np.testing.assert_allclose(d, [[exact, -exact]], rtol=1e-12)
    assert_rows_close(d, reference_dscores(w, G, np.ones((1, 2)), 0.01, 1.0))


@pytest.mark.parametrize("tau", [0.3, 0.1])
def test_every_row_at_the_demos_kappa(tau):
    # the demo's kappa = 6.88 (configs.py): the summed form got 14 (tau=0.3) and 35 (tau=0.1) of these
    # 64 rows wrong by more than 1e-9 of their size
    rng = np.random.default_rng(0)
    B, N, K = 64, 8, 3
    w, G, g = rng.standard_normal((B, N)), gumbel_noise((B, K, N), rng), rng.standard_normal((B, N))
    assert_rows_close(max_dscores(w, G, g, tau, 6.88), reference_dscores(w, G, g, tau, 6.88))


@st.composite
def saturating_case(draw):
    """Scores of any spread, Gumbel noise, tau in [0.01, 1] and kappa in [1, 30] (log-uniform), and sometimes
    repeated noise rows, so that several draws round to the same one-hot and tie exactly."""
    seed = draw(st.integers(0, 2**32 - 1))
    B, N = draw(st.integers(1, 3)), draw(st.integers(2, 6))
    K = draw(st.integers(1, min(4, N)))
    tau = float(10.0 ** draw(st.floats(-2.0, 0.0)))
    kappa = float(10.0 ** draw(st.floats(0.0, np.log10(30.0))))
    spread = draw(st.sampled_from([0.1, 1.0, 3.0]))
    rng = np.random.default_rng(seed)
    w = spread * rng.standard_normal((B, N))
    G = gumbel_noise((B, K, N), rng)
    if K > 1 and draw(st.booleans()):
        G[:, 1:] = G[:, :1] + draw(st.sampled_from([0.0, 1e-3]))  # identical (or shifted) draws
    return w, G, rng.standard_normal((B, N)), tau, kappa


@given(saturating_case())
def test_every_row_matches_the_decimal_reference(case):
    w, G, g, tau, kappa = case
    assert_rows_close(max_dscores(w, G, g, tau, kappa), reference_dscores(w, G, g, tau, kappa))


def test_float32_saturated_rows_are_not_lost():
    # the closed-form example in float32, where both draws round to exactly one-hot: the row keeps its sign
    # and size (the summed form gave 0), as accurate as float32's S themselves (eps * |z| ~ 6e-6)
    w, G = np.zeros((1, 2), np.float32), np.array([[[0.5, 0.0], [0.0, 0.4]]], np.float32)
    d = max_dscores(w, G, np.ones((1, 2), np.float32), 0.01, 1.0)
    exact = 100.0 * (np.exp(-50.0) - np.exp(-40.0))
    np.testing.assert_allclose(d, [[exact, -exact]], rtol=1e-4)
