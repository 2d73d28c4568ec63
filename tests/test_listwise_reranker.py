"""The set-aware reranker: the pointwise reranker bit for bit at initialisation, one interaction round by hand,
gradients by gradcheck.check_grads (finite differences, autograd, a 1% mutation that must fail), padded candidates
out of every context, permutation equivariance, float32, and every bad argument named."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mini_gumbel.backend import get_xp
from mini_gumbel.gradcheck import check_grads
from mini_gumbel.listwise_reranker import (init_listwise_reranker, listwise_reranker_backward,
                                           listwise_reranker_forward)
from mini_gumbel.reranker import init_reranker, reranker_backward, reranker_forward

KEYS = ("E", "W", "X", "U", "a")
V_, D_ = 15, 6


def _problem(seed=0, B=4, N=5, Lq=5, Ld=7):
    """Random tokens with pad inside documents, a padded (all-pad) candidate, a real document marked invalid,
    and a row with a single valid candidate (empty context)."""
    rng = np.random.default_rng(seed)
    q = rng.integers(0, V_, size=(B, Lq))  # (B, Lq)
    q[:, 0] = rng.integers(1, V_, size=B)  # never fully padded
    d = rng.integers(0, V_, size=(B, N, Ld))  # (B, N, Ld) ~1/15 of the tokens are pad
    d[:, :, 0] = rng.integers(1, V_, size=(B, N))
    d[:, :, -2:] = 0  # trailing padding in every document
    valid = np.ones((B, N), dtype=bool)
    d[0, 1] = 0  # an all-pad candidate
    valid[0, 1] = valid[1, -1] = False  # and a real document marked invalid
    valid[-1, 1:] = False  # the last row: one candidate, nobody to look at
    return q, d, valid, rng


def _random_params(rng, seed=0, dtype=np.float64):
    """A non-zero point: U and a random, X away from E."""
    p = init_listwise_reranker(V_, D_, seed, init="random")
    p["E"] = p["E"] + 0.1 * rng.standard_normal((V_, D_))
    p["W"] = p["W"] / 5.0
    p["X"] = p["X"] + 0.3 * rng.standard_normal((V_, D_))
    p["U"] = rng.standard_normal((D_, D_))
    p["a"] = 0.5 * rng.standard_normal(D_)
    return {k: v.astype(dtype) for k, v in p.items()}


def _check(params, q, d, valid, rng, beta=1.0):
    """check_grads on the valid candidates' scores (the invalid ones are -inf: projected out as 0)."""
    def forward(p):
        out, cache = listwise_reranker_forward(p, q, d, valid=valid, beta=beta)
        return get_xp(out).where(valid, out, 0.0), cache

    def backward(R, cache):
        dscores = np.array(R)
        dscores[~valid] = np.nan  # must be ignored
        grads = listwise_reranker_backward(dscores, cache)
        assert set(grads) == set(KEYS) and all(np.isfinite(g).all() for g in grads.values())
        assert all(grads[k].shape == params[k].shape for k in KEYS)
        return grads

    return check_grads(forward, backward, params, rng=rng)


@pytest.mark.parametrize("init", ["lexical", "random"])
def test_init_is_the_pointwise_reranker_bit_for_bit(init):
    q, d, valid, rng = _problem(seed=1)
    p = init_listwise_reranker(V_, D_, 5, init=init, scale=3.0)
    p0 = init_reranker(V_, D_, 5, init=init, scale=3.0)
    assert set(p) == set(KEYS)
    for k in ("E", "W"):
        np.testing.assert_array_equal(p[k], p0[k])
    np.testing.assert_array_equal(p["X"], p["E"])
    assert not np.shares_memory(p["X"], p["E"]) and not p["U"].any() and not p["a"].any()
    assert p["U"].shape == (D_, D_) and p["a"].shape == (D_,)

    s, cache = listwise_reranker_forward(p, q, d, valid=valid, beta=1.7)
    s0, cache0 = reranker_forward(p0, q, d, valid=valid)
    assert s.tobytes() == s0.tobytes()
    ds = rng.standard_normal(s.shape)
    g, g0 = listwise_reranker_backward(ds, cache), reranker_backward(ds, cache0)
    for k in ("E", "W"):
        np.testing.assert_array_equal(g[k], g0[k])
    # U = 0 and a = 0: w is flat in X and a to first order, not in U (dw_i/dU = g ψ_i c_iᵀ)
    assert not g["X"].any() and not g["a"].any() and np.abs(g["U"]).max() > 1e-3


def test_gradients_at_initialisation_by_finite_differences():
    pytest.importorskip("autograd")
    q, d, valid, rng = _problem(seed=2)
    p = init_listwise_reranker(V_, D_, 2, init="random", scale=3.0)
    rep = _check(p, q, d, valid, rng)
    assert rep.mutated_fd_rel_error > 1e-4


@pytest.mark.parametrize("seed, beta", [(0, 1.0), (3, 2.5)])
def test_check_grads_at_a_random_point(seed, beta):
    pytest.importorskip("autograd")
    q, d, valid, rng = _problem(seed=seed)
    params = _random_params(rng, seed)
    s, cache = listwise_reranker_forward(params, q, d, valid=valid, beta=beta)
    assert np.abs(cache.t[valid]).max() > 0.1  # the interaction is really on
    rep = _check(params, q, d, valid, rng, beta=beta)  # each input alone 1% off fails against autograd
    assert rep.mutated_fd_rel_error > 1e-4


def test_one_round_by_hand():
    """One-hot E = X (dim >= V), W = I, U = u·I, a = 0: w_i = w⁰_i + u Σ_j p_ij ψ_i·ψ_j."""
    q = np.array([[1, 2, 0]])  # (1, 3)
    d = np.array([[[1, 3], [3, 4], [5, 0]]])  # (1, 3, 2) doc 0 shares 1 with q and 3 with doc 1
    p = init_listwise_reranker(6, 6, 0, scale=1.0)
    p["U"] = 2.0 * np.eye(6)
    w0 = np.array([1 / 4, 0.0, 0.0])  # |q| = 2, |d_0| = 2, one shared word
    beta = 3.0
    s, cache = listwise_reranker_forward(p, q, d, beta=beta)
    e = np.exp(beta * w0)
    P = np.array([[0, e[1], e[2]], [e[0], 0, e[2]], [e[0], e[1], 0]])
    P /= P.sum(axis=1, keepdims=True)
    overlap = np.array([[0, 1 / 4, 0], [1 / 4, 0, 0], [0, 0, 0]])  # ψ_i·ψ_j: word 3 in docs 0 and 1
    np.testing.assert_allclose(cache.p[0], P, rtol=1e-14)
    np.testing.assert_allclose(s[0], w0 + 2.0 * (P * overlap).sum(axis=1), rtol=1e-14)
    p["a"] = np.eye(6)[2] * 2.0  # φ(q)·a = 1/2 · 2 = 1: the gate doubles the interaction
    s2, _ = listwise_reranker_forward(p, q, d, beta=beta)
    np.testing.assert_allclose(s2[0] - w0, 2 * (s[0] - w0), rtol=1e-14)


def test_padded_candidates_are_out_of_every_context():
    q, d, valid, rng = _problem(seed=4)
    params = _random_params(rng, 4)
    s, cache = listwise_reranker_forward(params, q, d, valid=valid)
    assert np.isneginf(s[~valid]).all() and np.isfinite(s[valid]).all()
    P = cache.p
    assert not P[np.broadcast_to(~valid[:, None, :], P.shape)].any()  # nobody looks at a padded one
    assert not P[np.broadcast_to(~valid[:, :, None], P.shape)].any()  # and it looks at nobody
    assert not np.diagonal(P, axis1=1, axis2=2).any()
    n_ctx = valid.sum(axis=1, keepdims=True) - 1  # (B, 1)
    np.testing.assert_allclose(P.sum(axis=2), np.where(valid & (n_ctx > 0), 1.0, 0.0), atol=1e-15)
    w0, _ = reranker_forward(params, q, d, valid=valid)
    assert s[-1, 0] == w0[-1, 0]  # a lone candidate keeps its pointwise score
    # other tokens in the invalid documents change nothing: scores and every gradient bit-identical
    d2 = d.copy()
    d2[~valid] = rng.integers(1, V_, size=d2[~valid].shape)
    s2, cache2 = listwise_reranker_forward(params, q, d2, valid=valid)
    np.testing.assert_array_equal(s2, s)
    ds = np.where(valid, rng.standard_normal(s.shape), np.nan)  # NaN where invalid: ignored
    g, g2 = listwise_reranker_backward(ds, cache), listwise_reranker_backward(ds, cache2)
    for k in KEYS:
        assert np.isfinite(g[k]).all()
        np.testing.assert_array_equal(g2[k], g[k])
    assert not g["E"][0].any() and not g["X"][0].any()  # the pad row is never read


def test_permuting_the_candidates_permutes_the_scores():
    q, d, valid, rng = _problem(seed=5)
    params = _random_params(rng, 5)
    s, cache = listwise_reranker_forward(params, q, d, valid=valid, beta=1.3)
    ds = np.where(valid, rng.standard_normal(s.shape), 0.0)
    g = listwise_reranker_backward(ds, cache)
    perm = np.array([3, 0, 4, 1, 2])
    sp, cp = listwise_reranker_forward(params, q, d[:, perm], valid=valid[:, perm], beta=1.3)
    np.testing.assert_array_equal(np.isneginf(sp), np.isneginf(s[:, perm]))
    np.testing.assert_allclose(sp[valid[:, perm]], s[:, perm][valid[:, perm]], rtol=1e-12)
    assert not np.allclose(s[valid], reranker_forward(params, q, d, valid=valid)[0][valid])  # not just w⁰
    gp = listwise_reranker_backward(ds[:, perm], cp)
    for k in KEYS:
        np.testing.assert_allclose(gp[k], g[k], rtol=1e-11, atol=1e-13)


def test_float32():
    q, d, valid, rng = _problem(seed=6)
    p64 = _random_params(rng, 6)
    p32 = {k: v.astype(np.float32) for k, v in p64.items()}
    assert all(v.dtype == np.float32 for v in init_listwise_reranker(V_, D_, 0, dtype=np.float32).values())
    s32, c32 = listwise_reranker_forward(p32, q, d, valid=valid)
    s64, c64 = listwise_reranker_forward(p64, q, d, valid=valid)
    assert s32.dtype == np.float32
    np.testing.assert_allclose(s32[valid], s64[valid], rtol=1e-4, atol=1e-5)
    ds = rng.standard_normal(s32.shape)
    g32 = listwise_reranker_backward(ds.astype(np.float32), c32)
    g64 = listwise_reranker_backward(ds, c64)
    for k in KEYS:
        assert g32[k].dtype == np.float32
        np.testing.assert_allclose(g32[k], g64[k], rtol=1e-3, atol=1e-4 * np.abs(g64[k]).max())


# ------------------------------------------------------------------------------------------ bad arguments

Q0, D0, VALID0, _ = _problem(seed=7)
P0 = init_listwise_reranker(V_, D_, 0)
FWD = "listwise_reranker_forward"
JUNK = st.sampled_from([None, [1], "x", 1.5, object()])


def _call(params=P0, question=Q0, docs=D0, **kw):
    kw.setdefault("valid", VALID0)
    return listwise_reranker_forward(params, question, docs, **kw)


@given(key=st.sampled_from(KEYS), junk=JUNK)
def test_bad_params_are_named(key, junk):
    missing = {k: v for k, v in P0.items() if k != key}
    with pytest.raises(ValueError, match=rf"^{FWD}: params\.keys\(\)=\(.*\); expected \('E', 'W', 'X', 'U', 'a'\) "
                                         rf"from init_listwise_reranker \(missing \['{key}'\]\)"):
        _call(missing)
    with pytest.raises(TypeError, match=rf"^{FWD}: params\['{key}'\]"):
        _call({**P0, key: junk})  # not an array
    with pytest.raises(TypeError, match=rf"^{FWD}: params=.*expected a dict with keys"):
        _call(junk)


@given(key=st.sampled_from(KEYS), bad=st.sampled_from([np.nan, np.inf, -np.inf]), at=st.integers(0, 35))
def test_nan_or_inf_params_are_named(key, bad, at):
    p = {k: v.copy() for k, v in P0.items()}
    p[key].reshape(-1)[at % p[key].size] = bad
    with pytest.raises(ValueError, match=rf"^{FWD}: params\['{key}'\]=.*expected finite values"):
        _call(p)


@given(key=st.sampled_from(KEYS), cut=st.sampled_from([(slice(1, None),), (Ellipsis, slice(1, None)), (None,)]))
def test_params_of_the_wrong_shape_are_named(key, cut):
    p = dict(P0)
    p[key] = P0[key][cut]
    if key == "E" and cut == (slice(1, None),):  # E with fewer rows is a smaller vocabulary: the ids go out of range
        match = rf"^{FWD}: (question|docs)=.*token ids in \[0, {V_ - 1}\)"
    elif key == "E" and cut == (Ellipsis, slice(1, None)):  # a narrower E sets D: W is the first to disagree
        match = rf"^{FWD}: params\['W'\]\.shape=\({D_}, {D_}\); expected \({D_ - 1}, {D_ - 1}\)"
    else:
        match = rf"^{FWD}: params\['{key}'\]\.shape="
    with pytest.raises(ValueError, match=match):
        _call(p)


@given(beta=st.one_of(st.floats(max_value=0.0), st.sampled_from([np.nan, np.inf, -np.inf])))
def test_bad_beta_values_are_named(beta):
    with pytest.raises(ValueError, match=rf"^{FWD}: beta=.*; expected a finite number > 0"):
        _call(beta=beta)


@given(beta=st.one_of(JUNK.filter(lambda v: not isinstance(v, float)), st.booleans()))
def test_bad_beta_types_are_named(beta):
    with pytest.raises(TypeError, match=rf"^{FWD}: beta="):
        _call(beta=beta)


@given(where=st.sampled_from(["question", "docs"]), bad=st.one_of(st.integers(min_value=-2**40, max_value=-1),
                                                                   st.integers(min_value=V_, max_value=2**40)))
def test_token_ids_out_of_range_are_named(where, bad):
    x = (Q0 if where == "question" else D0).copy()
    x.reshape(-1)[3] = bad
    with pytest.raises(ValueError, match=rf"^{FWD}: {where}=.*expected token ids in \[0, {V_}\)"):
        _call(**{where: x})


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(question=Q0.astype(float)), TypeError, r"question\.dtype="),
    (dict(docs=D0.tolist()), TypeError, r"docs=.*expected an array"),
    (dict(question=Q0[:1]), ValueError, r"question\.shape=\(1, 5\); expected \(B=4, Lq\)"),
    (dict(docs=D0[0]), ValueError, r"docs\.shape=\(5, 7\); expected 3 dimensions"),
    (dict(valid=VALID0[:, :2]), ValueError, r"valid\.shape=\(4, 2\); expected \(4, 5\)"),
    (dict(valid=VALID0.astype(int)), TypeError, r"valid\.dtype="),
    (dict(valid=None), ValueError, r"docs=.*every valid candidate"),  # the all-pad candidate, not marked invalid
    (dict(question=np.zeros_like(Q0)), ValueError, r"question=.*at least one non-pad token"),
    (dict(pad_id=V_), ValueError, r"pad_id=15; expected an int in \[0, 14\]"),
    (dict(pad_id=0.0), TypeError, r"pad_id="),
])
def test_bad_inputs_are_named_as_by_reranker_forward(kwargs, exc, match):
    with pytest.raises(exc, match=rf"^{FWD}: {match}") as ours:
        _call(**kwargs)
    with pytest.raises(exc) as theirs:  # the very message of the pointwise reranker, under our name
        reranker_forward(P0, kwargs.get("question", Q0), kwargs.get("docs", D0), valid=kwargs.get("valid", VALID0),
                         **{k: v for k, v in kwargs.items() if k == "pad_id"})
    assert str(ours.value).split(": ", 1)[1] == str(theirs.value).split(": ", 1)[1]


def test_bad_backward_arguments_and_init_are_named():
    s, cache = _call()
    with pytest.raises(TypeError, match=r"^listwise_reranker_backward: cache=<a RerankerCache>; expected the "
                                        r"ListwiseCache returned by listwise_reranker_forward"):
        listwise_reranker_backward(np.zeros(s.shape), reranker_forward(P0, Q0, D0, valid=VALID0)[1])
    with pytest.raises(ValueError, match=r"^listwise_reranker_backward: dscores\.shape=\(4, 4\); expected \(4, 5\)"):
        listwise_reranker_backward(np.zeros((4, 4)), cache)
    ds = np.zeros(s.shape)
    ds[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"^listwise_reranker_backward: dscores=.*finite values on every valid"):
        listwise_reranker_backward(ds, cache)
    for kw, match in ((dict(vocab_size=1, dim=4), "vocab_size"), (dict(vocab_size=5, dim=0), "dim"),
                      (dict(vocab_size=5, dim=4, init="bert"), "init"),
                      (dict(vocab_size=5, dim=4, scale=0.0), "scale")):
        with pytest.raises(ValueError, match=rf"^init_listwise_reranker: {match}="):
            init_listwise_reranker(seed=0, **kw)
    with pytest.raises(TypeError, match=r"^init_listwise_reranker: seed=None"):
        init_listwise_reranker(5, 4, None)
