"""The bilinear reranker: lexical prior by hand, gradients checked by gradcheck.check_grads (finite differences,
autograd, a 1% mutation that must fail) and a full Jacobian."""
import numpy as np
import pytest

from mini_gumbel.backend import get_xp
from mini_gumbel.gradcheck import check_grads, jacobian_check
from mini_gumbel.reranker import init_reranker, reranker_backward, reranker_forward

Q = np.array([[3, 4, 5, 0], [6, 6, 7, 0]])  # (2, 4) question tokens, pad 0
D = np.array(
    [
        [[3, 4, 0, 0], [6, 7, 8, 0], [5, 9, 9, 9]],  # shares {3, 4}, nothing, {5}
        [[6, 0, 0, 0], [7, 8, 0, 0], [1, 2, 0, 0]],  # shares 6 (twice in q), 7, nothing
    ]
)  # (2, 3, 4)


def test_lexical_init_is_scaled_word_overlap_by_hand():
    p = init_reranker(10, 12, seed=0, init="lexical", scale=100.0)
    np.testing.assert_array_equal(p["E"][1:], np.eye(10, 12)[1:])  # exact one-hot rows (dim >= V)
    assert not p["E"][0].any()  # pad row unused
    np.testing.assert_array_equal(p["W"], 100.0 * np.eye(12))
    s, _ = reranker_forward(p, Q, D)
    # w = 100 * Σ_v count_v(q) count_v(d) / (|q| |d|)
    expected = np.array(
        [
            [100 * 2 / (3 * 2), 0.0, 100 * 1 / (3 * 4)],  # 33.33, 0, 8.33
            [100 * 2 / (3 * 1), 100 * 1 / (3 * 2), 0.0],  # q has 6 twice: 66.67; 16.67; 0
        ]
    )
    np.testing.assert_allclose(s, expected, rtol=1e-14)


def test_lexical_init_small_dim_random_unit_rows_and_random_init():
    V, Dm = 200, 32
    p = init_reranker(V, Dm, seed=1, init="lexical")
    norms = np.linalg.norm(p["E"], axis=1)
    np.testing.assert_allclose(norms[1:], 1.0, rtol=1e-12)
    assert norms[0] == 0.0
    np.testing.assert_array_equal(p["W"], 10.0 * np.eye(Dm))  # default scale
    r = init_reranker(V, Dm, seed=1, init="random")
    off = r["W"] - np.diag(np.diag(r["W"]))
    assert np.linalg.norm(off) > 0.5 * np.linalg.norm(r["W"])  # no identity structure
    assert abs(np.linalg.norm(r["W"]) / np.linalg.norm(10.0 * np.eye(Dm)) - 1) < 0.1  # same Frobenius norm
    # deterministic in the seed, float32 respected
    np.testing.assert_array_equal(init_reranker(V, Dm, seed=1)["E"], p["E"])
    p32 = init_reranker(V, Dm, seed=1, dtype=np.float32)
    assert p32["E"].dtype == np.float32 and p32["W"].dtype == np.float32
    s32, _ = reranker_forward(p32, Q, D)
    assert s32.dtype == np.float32


def test_lexical_small_dim_still_prefers_overlap():
    # random unit rows: cross-talk is noise, overlap is signal; averaged over many docs the signal wins
    V, Dm = 300, 128
    p = init_reranker(V, Dm, seed=2)
    rng = np.random.default_rng(0)
    q = rng.integers(1, V, size=(200, 6))  # (200, 6)
    d_hit = np.concatenate([q[:, :3], rng.integers(1, V, size=(200, 9))], axis=1)  # 3 shared words
    d_miss = rng.integers(1, V, size=(200, 12))
    s, _ = reranker_forward(p, q, np.stack([d_hit, d_miss], axis=1))
    assert np.mean(s[:, 0] > s[:, 1]) > 0.9


def _random_problem(seed=0, B=3, N=4, V=15, Dm=6):
    rng = np.random.default_rng(seed)
    params = init_reranker(V, Dm, seed=seed, init="random")
    params["E"] = params["E"] + 0.1 * rng.standard_normal(params["E"].shape)
    params["W"] = params["W"] / 50.0
    q = rng.integers(0, V, size=(B, 5))  # (B, Lq)
    q[:, 0] = rng.integers(1, V, size=B)  # never fully padded
    d = rng.integers(0, V, size=(B, N, 7))  # (B, N, Ld)
    d[:, :, 0] = rng.integers(1, V, size=(B, N))
    valid = np.ones((B, N), dtype=bool)
    valid[0, 1] = valid[-1, -1] = False
    return params, q, d, valid, rng


def _check_reranker(params, q, d, valid, rng):
    """check_grads on the scores of the valid candidates (the invalid ones are -inf: projected out as 0)."""
    def forward(p):
        out, cache = reranker_forward(p, q, d, valid=valid)
        return get_xp(out).where(valid, out, 0.0), cache

    def backward(R, cache):
        dscores = np.array(R)
        dscores[~valid] = np.nan  # must be ignored
        grads = reranker_backward(dscores, cache)
        assert set(grads) == {"E", "W"} and all(np.isfinite(g).all() for g in grads.values())
        return grads

    return check_grads(forward, backward, params, rng=rng)


@pytest.mark.parametrize("seed", [0, 3])
def test_backward_check_grads_and_invalid_entries_ignored(seed):
    pytest.importorskip("autograd")
    params, q, d, valid, rng = _random_problem(seed=seed)
    s, cache = reranker_forward(params, q, d, valid=valid)
    assert np.isneginf(s[~valid]).all() and np.isfinite(s[valid]).all()
    rep = _check_reranker(params, q, d, valid, rng)  # also: E alone or W alone 1% off fails against autograd
    assert rep.mutated_fd_rel_error > 1e-4
    # the pad row gets no gradient; so does a token that only occurs in invalid docs
    grads = reranker_backward(np.where(valid, rng.standard_normal(s.shape), np.nan), cache)
    assert not grads["E"][0].any()


def test_jacobian_wrt_W_tiny():
    params, q, d, valid, _ = _random_problem(seed=4, B=1, N=3, V=6, Dm=2)

    def f(W):
        return np.where(valid, reranker_forward({"E": params["E"], "W": W}, q, d, valid=valid)[0], 0.0)

    _, cache = reranker_forward(params, q, d, valid=valid)
    assert jacobian_check(f, params["W"], lambda g: reranker_backward(g, cache)["W"]) < 1e-6


def test_nonzero_pad_id():
    p = init_reranker(10, 10, seed=0, pad_id=9)
    q = np.array([[3, 4, 9]])
    d = np.array([[[3, 9, 9], [0, 4, 5]]])  # token 0 is a word here
    s, _ = reranker_forward(p, q, d, pad_id=9)
    np.testing.assert_allclose(s, [[10 * 1 / (2 * 1), 10 * 1 / (2 * 3)]], rtol=1e-14)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(vocab_size=1, dim=4), "vocab_size"),
        (dict(vocab_size=5, dim=0), "dim"),
        (dict(vocab_size=5, dim=4, init="bert"), "init"),
        (dict(vocab_size=5, dim=4, pad_id=5), "pad_id"),
        (dict(vocab_size=5, dim=4, scale=-1.0), "scale"),
    ],
)
def test_init_validation(kwargs, match):
    with pytest.raises(ValueError, match=match + "="):
        init_reranker(seed=0, **kwargs)


def test_forward_validation():
    p = init_reranker(10, 10, seed=0)
    with pytest.raises(ValueError, match=r"docs=.*expected token ids in \[0, 10\) \(found ids in \[5, 14\]\)"):
        reranker_forward(p, Q, D + 5)
    with pytest.raises(TypeError, match="question"):
        reranker_forward(p, Q.astype(float), D)
    with pytest.raises(ValueError, match=r"question.shape=\(1, 4\); expected \(B=2, Lq\)"):
        reranker_forward(p, Q[:1], D)
    with pytest.raises(ValueError, match=r"valid.shape=\(2, 2\); expected \(2, 3\)"):
        reranker_forward(p, Q, D, valid=np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match=r"question=.*expected at least one non-pad token in every row"):
        reranker_forward(p, np.zeros_like(Q), D)
    d = D.copy()
    d[1, 2] = 0
    with pytest.raises(ValueError, match=r"docs=.*every valid candidate \(mark the others valid=False\)"):
        reranker_forward(p, Q, d)
    valid = np.ones((2, 3), dtype=bool)
    valid[1, 2] = False
    s, cache = reranker_forward(p, Q, d, valid=valid)  # fine once marked invalid
    assert np.isneginf(s[1, 2])
    with pytest.raises(ValueError, match=r"dscores.shape=\(2, 2\); expected \(2, 3\)"):
        reranker_backward(np.zeros((2, 2)), cache)
