"""Baseline losses: hand-computed three-document examples, and gradcheck.check_grads (finite differences,
autograd, a 1% mutation that must fail) on every backward."""
import math
from typing import NamedTuple

import numpy as np
import pytest

from mini_gumbel.gradcheck import check_grads
from mini_gumbel.losses import (
    adist_teacher,
    emdr_backward,
    emdr_forward,
    kl_distill_backward,
    kl_distill_forward,
    loop_teacher,
    pdist_teacher,
    supervised_backward,
    supervised_forward,
)

TAU = 0.01  # Atlas's τ_s = τ_g


def _scores_for(probs, tau=TAU):
    """Scores whose student softmax(w / τ) is exactly ``probs``: w = τ log p."""
    return np.array([[tau * math.log(p) for p in probs]])  # (1, 3)


# ----------------------------------------------------------------------------------------------------------
# hand-computed three-document examples


def test_supervised_by_hand():
    # w = (1, 2, 0.5), gold = {0, 2}, τ_s = 1:  L = -log((e^1 + e^0.5) / (e^1 + e^2 + e^0.5))
    w = np.array([[1.0, 2.0, 0.5]])
    gold = np.array([[True, False, True]])
    Z = math.exp(1.0) + math.exp(2.0) + math.exp(0.5)  # 11.7561
    G = math.exp(1.0) + math.exp(0.5)  # 4.3670
    expected = -math.log(G / Z)  # 0.990292
    loss, cache = supervised_forward(w, gold, form="any")
    assert loss == pytest.approx(expected, rel=1e-13)
    assert expected == pytest.approx(0.990291799927838, rel=1e-12)
    # dL/dw_i = p_i - p(i | gold)
    dw = [math.exp(1.0) / Z - math.exp(1.0) / G, math.exp(2.0) / Z, math.exp(0.5) / Z - math.exp(0.5) / G]
    np.testing.assert_allclose(supervised_backward(1.0, cache), [dw], rtol=1e-12)


def test_supervised_each_by_hand():
    # form "each" (the default): L = -(log p_0 + log p_2) / 2 with p = softmax(1, 2, 0.5); dL/dw = p - (1/2, 0, 1/2)
    w = np.array([[1.0, 2.0, 0.5]])
    gold = np.array([[True, False, True]])
    Z = math.exp(1.0) + math.exp(2.0) + math.exp(0.5)
    p = [math.exp(1.0) / Z, math.exp(2.0) / Z, math.exp(0.5) / Z]
    expected = -(math.log(p[0]) + math.log(p[2])) / 2  # 1.71437
    loss, cache = supervised_forward(w, gold)
    assert loss == pytest.approx(expected, rel=1e-13)
    assert expected == pytest.approx(1.7143687841079447, rel=1e-12)
    np.testing.assert_allclose(supervised_backward(1.0, cache), [[p[0] - 0.5, p[1], p[2] - 0.5]], rtol=1e-12)
    # unlike "any", it is not satisfied by one gold document on top: a second gold one still pulls
    w2 = np.array([[30.0, 0.0, 0.0]])
    l_any, _ = supervised_forward(w2, gold, form="any")
    l_each, _ = supervised_forward(w2, gold)
    assert float(l_any) < 1e-12 and float(l_each) > 14.0


def test_supervised_excludes_rows_without_gold_and_padding():
    w = np.array([[1.0, 2.0, 0.5, -np.inf], [0.3, -1.0, 0.0, 2.0]])  # row 0 padded at 3
    gold = np.array([[True, False, True, False], [False, False, False, False]])
    loss, cache = supervised_forward(w, gold, form="any")
    assert loss == pytest.approx(0.990291799927838, rel=1e-12)  # row 1 excluded: only row 0's loss
    assert cache.n_rows == 1 and cache.n_excluded == 1
    d = supervised_backward(1.0, cache)
    assert not d[1].any() and d[0, 3] == 0.0
    with pytest.raises(ValueError, match=r"gold=.*expected a True entry in at least one of the 2 rows"):
        supervised_forward(w, np.zeros_like(gold))
    with pytest.raises(ValueError, match=r"gold=.*True only on real candidates"):
        supervised_forward(w, np.array([[False, False, False, True], [True, False, False, False]]))
    # τ_s divides the scores: τ_s = 2 on w equals τ_s = 1 on w / 2
    l2, _ = supervised_forward(w, gold, tau_s=2.0)
    l1, _ = supervised_forward(w / 2.0, gold)
    assert l2 == pytest.approx(float(l1), rel=1e-14)


def test_kl_distill_by_hand_both_directions():
    # p_R = (0.5, 0.3, 0.2), p_T = (0.6, 0.3, 0.1), both via w = τ log p, g = τ log p_T
    w = _scores_for([0.5, 0.3, 0.2])
    g = _scores_for([0.6, 0.3, 0.1])
    kl_tr = 0.6 * math.log(0.6 / 0.5) + 0.3 * math.log(0.3 / 0.3) + 0.1 * math.log(0.1 / 0.2)  # 0.0400782
    kl_rt = 0.5 * math.log(0.5 / 0.6) + 0.3 * math.log(0.3 / 0.3) + 0.2 * math.log(0.2 / 0.1)  # 0.0474687
    loss_tr, c_tr = kl_distill_forward(w, g, reduction="sum")
    loss_rt, c_rt = kl_distill_forward(w, g, reduction="sum", direction="R||T")
    assert loss_tr == pytest.approx(kl_tr, rel=1e-12) and kl_tr == pytest.approx(0.04007821602037823, rel=1e-12)
    assert loss_rt == pytest.approx(kl_rt, rel=1e-12) and kl_rt == pytest.approx(0.047468657715011756, rel=1e-12)
    assert abs(kl_tr - kl_rt) > 5e-3  # the direction matters on this example
    # Atlas default: reduction "mean" over B x N = 1 x 3 documents
    loss_mean, _ = kl_distill_forward(w, g)
    assert loss_mean == pytest.approx(kl_tr / 3, rel=1e-12)
    # T||R: dL/dw = (p_R - p_T) / τ_s
    np.testing.assert_allclose(
        kl_distill_backward(1.0, c_tr), [[(0.5 - 0.6) / TAU, (0.3 - 0.3) / TAU, (0.2 - 0.1) / TAU]], atol=1e-10
    )
    # R||T: dL/dw_j = p_j (a_j - Σ_i p_i a_i) / τ_s, a = log(p_R / p_T)
    a = [math.log(0.5 / 0.6), 0.0, math.log(0.2 / 0.1)]
    mean_a = 0.5 * a[0] + 0.3 * a[1] + 0.2 * a[2]
    expected = [[p * (ai - mean_a) / TAU for p, ai in zip([0.5, 0.3, 0.2], a)]]
    np.testing.assert_allclose(kl_distill_backward(1.0, c_rt), expected, rtol=1e-10)


def test_kl_teacher_temperature_by_hand():
    # raw teacher g = (-1, -2, -4) with τ_g = 1 and w = (2, 1, -1) with τ_s = 1, through the exponentials
    w = np.array([[2.0, 1.0, -1.0]])
    g = np.array([[-1.0, -2.0, -4.0]])
    zr = math.exp(2) + math.exp(1) + math.exp(-1)
    zt = math.exp(-1) + math.exp(-2) + math.exp(-4)
    pr = [math.exp(2) / zr, math.exp(1) / zr, math.exp(-1) / zr]
    pt = [math.exp(-1) / zt, math.exp(-2) / zt, math.exp(-4) / zt]
    expected = sum(t * math.log(t / r) for t, r in zip(pt, pr))  # 0.248864
    loss, _ = kl_distill_forward(w, g, tau_s=1.0, tau_g=1.0, reduction="batchmean")
    assert loss == pytest.approx(expected, rel=1e-12)
    # τ_g = 2 halves the teacher's logits
    pt2 = [math.exp(-0.5), math.exp(-1.0), math.exp(-2.0)]
    pt2 = [x / sum(pt2) for x in pt2]
    loss2, _ = kl_distill_forward(w, g, tau_s=1.0, tau_g=2.0, reduction="batchmean")
    assert loss2 == pytest.approx(sum(t * math.log(t / r) for t, r in zip(pt2, pr)), rel=1e-12)


def test_kl_reduction_switch():
    w = np.concatenate([_scores_for([0.5, 0.3, 0.2]), _scores_for([0.2, 0.3, 0.5])])  # (2, 3)
    g = np.concatenate([_scores_for([0.6, 0.3, 0.1]), _scores_for([0.2, 0.3, 0.5])])  # second row: KL = 0
    kl0 = 0.6 * math.log(0.6 / 0.5) + 0.1 * math.log(0.1 / 0.2)
    s, cs = kl_distill_forward(w, g, reduction="sum")
    bm, cb = kl_distill_forward(w, g, reduction="batchmean")
    m, cm = kl_distill_forward(w, g, reduction="mean")
    assert float(s) == pytest.approx(kl0, rel=1e-10)
    assert float(bm) == pytest.approx(kl0 / 2, rel=1e-10)
    assert float(m) == pytest.approx(kl0 / 6, rel=1e-10)
    np.testing.assert_allclose(kl_distill_backward(1.0, cb), kl_distill_backward(1.0, cs) / 2, rtol=1e-12)
    np.testing.assert_allclose(kl_distill_backward(1.0, cm), kl_distill_backward(1.0, cs) / 6, rtol=1e-12)
    with pytest.raises(ValueError, match="reduction='none'"):
        kl_distill_forward(w, g, reduction="none")
    with pytest.raises(ValueError, match="direction"):
        kl_distill_forward(w, g, direction="forward")


def test_emdr_by_hand_token_and_sequence():
    # p_R = (0.5, 0.3, 0.2); p(a_t | ., d_i) for two real answer tokens and one padded position
    w = _scores_for([0.5, 0.3, 0.2])
    probs = [[0.9, 0.8], [0.5, 0.1], [0.2, 0.3]]
    lp = np.array([[[math.log(a), math.log(b), -123.0] for a, b in probs]])  # (1, 3, 3), t=2 is padding
    tm = np.array([[True, True, False]])
    # per token: marginals 0.5*.9 + .3*.5 + .2*.2 = 0.64 and 0.5*.8 + .3*.1 + .2*.3 = 0.49
    m1, m2 = 0.5 * 0.9 + 0.3 * 0.5 + 0.2 * 0.2, 0.5 * 0.8 + 0.3 * 0.1 + 0.2 * 0.3
    tok = -(math.log(m1) + math.log(m2)) / 2  # = -log 0.56 = 0.579818
    loss, cache = emdr_forward(w, lp, tm)
    assert loss == pytest.approx(tok, rel=1e-12) and tok == pytest.approx(-math.log(0.56), rel=1e-12)
    # gradient: (p_R - r) / τ_s with r the posterior averaged over the two tokens
    r = [(0.5 * 0.9 / m1 + 0.5 * 0.8 / m2) / 2, (0.3 * 0.5 / m1 + 0.3 * 0.1 / m2) / 2, (0.2 * 0.2 / m1 + 0.2 * 0.3 / m2) / 2]
    np.testing.assert_allclose(emdr_backward(1.0, cache), [[(p - ri) / TAU for p, ri in zip([0.5, 0.3, 0.2], r)]], rtol=1e-10)
    # per sequence: p(a | d_i) = (0.72, 0.05, 0.06); marginal 0.36 + 0.015 + 0.012 = 0.387
    seq = -math.log(0.5 * 0.9 * 0.8 + 0.3 * 0.5 * 0.1 + 0.2 * 0.2 * 0.3)  # 0.949331
    loss_s, cache_s = emdr_forward(w, lp, tm, per="sequence")
    assert loss_s == pytest.approx(seq, rel=1e-12) and seq == pytest.approx(-math.log(0.387), rel=1e-12)
    rs = [0.36 / 0.387, 0.015 / 0.387, 0.012 / 0.387]
    np.testing.assert_allclose(emdr_backward(1.0, cache_s), [[(p - ri) / TAU for p, ri in zip([0.5, 0.3, 0.2], rs)]], rtol=1e-10)


def test_emdr_mean_over_batch_and_tau():
    w = np.concatenate([_scores_for([0.5, 0.3, 0.2], tau=1.0), _scores_for([0.2, 0.3, 0.5], tau=1.0)])
    lp = np.log(np.array([[[0.9, 0.8], [0.5, 0.1], [0.2, 0.3]], [[0.9, 0.8], [0.5, 0.1], [0.2, 0.3]]]))
    tm = np.array([[True, True], [True, False]])  # second example: one token only
    row0 = -math.log(0.56)
    row1 = -math.log(0.2 * 0.9 + 0.3 * 0.5 + 0.5 * 0.2)  # -log 0.43
    loss, _ = emdr_forward(w, lp, tm, tau_s=1.0)
    assert loss == pytest.approx((row0 + row1) / 2, rel=1e-12)


# ----------------------------------------------------------------------------------------------------------
# padding (-inf scores)


def test_padding_changes_nothing_and_gets_no_gradient():
    w3 = _scores_for([0.5, 0.3, 0.2])
    w4 = np.concatenate([w3, [[-np.inf]]], axis=1)  # (1, 4) a padded fourth candidate
    g3 = _scores_for([0.6, 0.3, 0.1])
    g4 = np.concatenate([g3, [[np.nan]]], axis=1)  # padded teacher value is never read
    for direction in ("T||R", "R||T"):
        for red in ("sum", "batchmean", "mean"):
            l3, _ = kl_distill_forward(w3, g3, reduction=red, direction=direction)
            l4, c4 = kl_distill_forward(w4, g4, reduction=red, direction=direction)
            assert float(l4) == pytest.approx(float(l3), rel=1e-13)  # "mean" counts real documents only
            d = kl_distill_backward(1.0, c4)
            assert d[0, 3] == 0.0 and np.isfinite(d).all()
    lp3 = np.log(np.array([[[0.9, 0.8], [0.5, 0.1], [0.2, 0.3]]]))
    lp4 = np.concatenate([lp3, [[[np.nan, 5.0]]]], axis=1)  # garbage on the padded document
    tm = np.ones((1, 2), dtype=bool)
    for per in ("token", "sequence"):
        l3, _ = emdr_forward(w3, lp3, tm, per=per)
        l4, c4 = emdr_forward(w4, lp4, tm, per=per)
        assert float(l4) == pytest.approx(float(l3), rel=1e-13)
        assert emdr_backward(1.0, c4)[0, 3] == 0.0
    ls, cs = supervised_forward(w4, np.array([[True, False, False, False]]), tau_s=TAU)
    assert float(ls) == pytest.approx(-math.log(0.5), rel=1e-12)
    assert supervised_backward(1.0, cs)[0, 3] == 0.0


# ----------------------------------------------------------------------------------------------------------
# finite differences and autograd on every backward


def _problem(seed=0, B=3, N=5, T=4):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((B, N)) * 0.02  # (B, N) spread comparable to τ_s = 0.01
    w[0, 4] = w[2, 1] = -np.inf
    gold = rng.random((B, N)) < 0.4
    gold[:, 0] = True
    gold[0, 4] = gold[2, 1] = False
    teacher = rng.standard_normal((B, N)) * 0.02
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, N, T)))  # (B, N, T)
    tm = np.ones((B, T), dtype=bool)
    tm[1, 3] = tm[2, 2:] = False
    return w, gold, teacher, lp, tm, rng


CASES = [
    ("supervised", dict()),
    ("supervised", dict(tau_s=0.05)),
    ("supervised", dict(form="any")),
    ("kl", dict()),
    ("kl", dict(reduction="batchmean", direction="R||T")),
    ("kl", dict(reduction="sum", tau_s=0.03, tau_g=0.02)),
    ("emdr", dict()),
    ("emdr", dict(per="sequence", tau_s=0.02)),
]


def _fwd_bwd(kind, kwargs, w, gold, teacher, lp, tm):
    if kind == "supervised":
        return (lambda s: supervised_forward(s, gold, **kwargs)), supervised_backward
    if kind == "kl":
        return (lambda s: kl_distill_forward(s, teacher, **kwargs)), kl_distill_backward
    return (lambda s: emdr_forward(s, lp, tm, **kwargs)), emdr_backward


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("kind, kwargs", CASES)
def test_backward_check_grads(kind, kwargs, seed):
    pytest.importorskip("autograd")
    w, gold, teacher, lp, tm, rng = _problem(seed=seed)
    fwd, bwd = _fwd_bwd(kind, kwargs, w, gold, teacher, lp, tm)
    loss, cache = fwd(w)
    dw = bwd(1.7, cache)
    assert np.isfinite(dw).all() and (dw[np.isneginf(w)] == 0).all()
    # eps = 1e-8: the scores (spread ~0.02) are divided by τ_s ~ 0.01; finite differences perturb only the
    # real candidates (padding stays -inf), autograd compares every entry
    rep = check_grads(lambda d: fwd(d["scores"]), lambda dloss, c: {"scores": bwd(dloss, c)}, {"scores": w},
                      rng=rng, eps=1e-8, mask={"scores": np.isfinite(w).astype(float)})
    assert rep.mutated_fd_rel_error > 1e-4


# ----------------------------------------------------------------------------------------------------------
# teachers


def test_pdist_teacher_by_hand():
    lp = np.array([[[math.log(0.9), math.log(0.8), 7.0], [math.log(0.5), math.log(0.1), 7.0], [math.log(0.2), math.log(0.3), 7.0]]])
    tm = np.array([[True, True, False]])
    g = pdist_teacher(lp, tm)
    expected = [[(math.log(0.9) + math.log(0.8)) / 2, (math.log(0.5) + math.log(0.1)) / 2, (math.log(0.2) + math.log(0.3)) / 2]]
    np.testing.assert_allclose(g, expected, rtol=1e-14)  # (-0.164, -1.498, -1.407)
    with pytest.raises(ValueError, match=r"token_mask=.*at least one True \(answer token\) in every row"):
        pdist_teacher(lp, np.zeros((1, 3), dtype=bool))


def test_loop_teacher_identity_and_validation():
    nll = np.array([[2.5, 1.0, 1.2]])  # removing document 0 hurts most -> highest teacher score
    g = loop_teacher(nll)
    np.testing.assert_array_equal(g, nll)
    assert g is not nll
    with pytest.raises(ValueError, match="nll_without"):
        loop_teacher(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="nll_without"):
        loop_teacher(np.array([[1.0, np.inf]]))


class XAttn(NamedTuple):  # the reader's per-layer cross-attention record
    probs: np.ndarray  # (B, H, T, N*L)
    scores: np.ndarray  # (B, H, T, N*L)
    value_norms: np.ndarray  # (B, H, N*L)


def test_adist_teacher_by_hand():
    # B=1, H=1, T=2 (second token padded), N=3 documents of L=2 key tokens; the last key of doc 2 is padding
    probs = np.array([[[[0.1, 0.2, 0.3, 0.1, 0.3, 0.0], [0.9, 0.0, 0.0, 0.0, 0.0, 0.1]]]])  # (1, 1, 2, 6)
    scores = np.array([[[[1.0, 3.0, 2.0, 0.0, 5.0, -np.inf], [9.0, 9.0, 9.0, 9.0, 9.0, 9.0]]]])
    norms = np.array([[[2.0, 1.0, 1.0, 4.0, 1.0, 5.0]]])  # (1, 1, 6)
    layer2 = XAttn(probs * 0.5, scores - 1.0, norms * 2.0)
    xattn = [XAttn(probs, scores, norms), layer2]
    key_pad = np.array([[False, False, False, False, False, True]])
    tm = np.array([[True, False]])
    g = adist_teacher(xattn, key_pad, tm, 3, mode="atlas")
    # Σ layers of Σ_u prob·norm on the first (only real) answer token; layer 2 has prob/2 and norm*2: same sum
    d0 = 0.1 * 2.0 + 0.2 * 1.0
    d1 = 0.3 * 1.0 + 0.1 * 4.0
    d2 = 0.3 * 1.0  # padded key dropped
    np.testing.assert_allclose(g, [[2 * d0, 2 * d1, 2 * d2]], rtol=1e-14)  # (0.8, 1.4, 0.6)
    g = adist_teacher(xattn, key_pad, tm, 3, mode="fid")
    # first answer token's logits, mean over layers (s and s - 1) and over the document's real keys
    f0 = ((1.0 + 0.0) / 2 + (3.0 + 2.0) / 2) / 2
    f1 = ((2.0 + 1.0) / 2 + (0.0 - 1.0) / 2) / 2
    f2 = (5.0 + 4.0) / 2
    np.testing.assert_allclose(g, [[f0, f1, f2]], rtol=1e-14)  # (1.5, 0.5, 4.5)


def test_adist_teacher_matches_loops():
    rng = np.random.default_rng(5)
    B, H, T, N, L, n_layers = 2, 3, 4, 3, 5, 2
    key_pad = rng.random((B, N * L)) < 0.3
    key_pad[:, ::L] = False  # every document keeps a token
    tm = np.ones((B, T), dtype=bool)
    tm[1, 2:] = False
    xattn = []
    for _ in range(n_layers):
        logits = rng.standard_normal((B, H, T, N * L))
        logits = np.where(key_pad[:, None, None, :], -np.inf, logits)
        e = np.exp(logits)
        xattn.append(XAttn(e / e.sum(-1, keepdims=True), logits, rng.uniform(0.5, 2.0, size=(B, H, N * L))))
    atlas = np.zeros((B, N))
    fid = np.zeros((B, N))
    for b in range(B):
        for i in range(N):
            keys = [u for u in range(i * L, (i + 1) * L) if not key_pad[b, u]]
            for x in xattn:
                for h in range(H):
                    for u in keys:
                        atlas[b, i] += sum(x.probs[b, h, t, u] for t in range(T) if tm[b, t]) * x.value_norms[b, h, u]
                        fid[b, i] += x.scores[b, h, 0, u] / (n_layers * H * len(keys))
    np.testing.assert_allclose(adist_teacher(xattn, key_pad, tm, N), atlas, rtol=1e-12)
    np.testing.assert_allclose(adist_teacher(xattn, key_pad, tm, N, mode="fid"), fid, rtol=1e-12)
    with pytest.raises(ValueError, match="n_docs"):
        adist_teacher(xattn, key_pad, tm, 4)
    with pytest.raises(ValueError, match="mode"):
        adist_teacher(xattn, key_pad, tm, N, mode="mean")
    with pytest.raises(TypeError, match=r"xattn\[0\]=.*expected an ops.AttnRecord \(no .probs\)"):
        adist_teacher([(1, 2)], key_pad, tm, N)


# ----------------------------------------------------------------------------------------------------------
# validation


def test_validation_messages_name_the_argument():
    w = _scores_for([0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match=r"scores=.*found NaN"):
        kl_distill_forward(np.array([[np.nan, 0.0, 1.0]]), w)
    with pytest.raises(ValueError, match=r"scores=.*at least k=1 finite"):
        supervised_forward(np.full((1, 3), -np.inf), np.ones((1, 3), dtype=bool))
    with pytest.raises(ValueError, match="tau_s=0"):
        kl_distill_forward(w, w, tau_s=0)
    with pytest.raises(ValueError, match="tau_g=-1"):
        kl_distill_forward(w, w, tau_g=-1.0)
    with pytest.raises(ValueError, match="teacher.shape"):
        kl_distill_forward(w, w[:, :2])
    with pytest.raises(ValueError, match=r"teacher=.*finite values on every real candidate"):
        kl_distill_forward(w, np.array([[0.0, np.nan, 0.0]]))
    with pytest.raises(TypeError, match="gold"):
        supervised_forward(w, np.ones((1, 3)))
    lp = np.full((1, 3, 2), -0.5)
    tm = np.ones((1, 2), dtype=bool)
    with pytest.raises(ValueError, match="not NLLs"):
        emdr_forward(w, -lp, tm)
    with pytest.raises(ValueError, match="per="):
        emdr_forward(w, lp, tm, per="doc")
    with pytest.raises(ValueError, match="token_logprobs.shape"):
        emdr_forward(w, lp[:, :2], tm)
    with pytest.raises(ValueError, match="token_mask.shape"):
        emdr_forward(w, lp, tm[:, :1])
