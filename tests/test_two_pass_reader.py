"""Exact-match flags in the reader, and the two-pass reader built on them: hand-written gradients checked by
finite differences, autograd of the same forward and a mutation (check_grads); the DMA equivalences through
both reads (exact to float64 round-off); soft flags; decoding; validation."""
import numpy as np
import pytest

from mini_gumbel.gradcheck import check_grads
from mini_gumbel.reader import (ReaderConfig, greedy_decode, init_reader, param_shapes, reader_backward,
                                reader_encode, reader_forward, reader_logits_backward)

V = 13
CFG = ReaderConfig(vocab_size=V, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=2, d_ff=12,
                   max_ctx_len=6, max_ans_len=4, exact_match=True)
CFG_PLAIN = ReaderConfig(vocab_size=V, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=2, d_ff=12,
                         max_ctx_len=6, max_ans_len=4)


@pytest.fixture(scope="module")
def params():
    P = init_reader(CFG, 0)
    # nonzero biases and gains, so that no gradient is checked at a special point
    rng = np.random.default_rng(7)
    return {k: (v + 0.1 * rng.standard_normal(v.shape) if v.ndim == 1 else v) for k, v in P.items()}


def make_batch(rng, B=2, N=3, L=5, T=3):
    ctx = rng.integers(3, V, (B, N, L))
    ctx[:, :, -1] = 0  # padding inside every document
    ctx[0, -1, -2] = 0
    ans_in = rng.integers(3, V, (B, T))
    ans_in[:, 0] = CFG.bos_id
    ans_out = rng.integers(3, V, (B, T))
    ans_out[-1, -1] = 0  # a padded target
    M = rng.uniform(0.1, 1.0, (B, N))
    flags = rng.uniform(0.1, 0.9, (B, N, L))  # interior: finite differences stay in [0, 1]
    return ctx, ans_in, ans_out, M, flags


# ------------------------------------------------------------------------------------------------------
# (a) the exact-match option


def test_exact_match_params_and_init():
    P = init_reader(CFG, 0)
    P0 = init_reader(CFG_PLAIN, 0)
    assert list(param_shapes(CFG)) == list(param_shapes(CFG_PLAIN)) + ["em_vec"]
    assert P["em_vec"].shape == (CFG.d_model,) and np.std(P["em_vec"]) > 0.3
    for k in P0:  # the option adds one vector and changes nothing else, initial values included
        np.testing.assert_array_equal(P[k], P0[k])
    with pytest.raises(TypeError, match=r"ReaderConfig: exact_match=1; expected True or False"):
        ReaderConfig(vocab_size=V, exact_match=1)


def test_flags_none_equals_zero_flags(params, rng):
    ctx, ai, ao, M, _ = make_batch(rng)
    loss0, c0 = reader_forward(params, CFG, ctx, ai, ao, M)
    lossz, cz = reader_forward(params, CFG, ctx, ai, ao, M, flags=np.zeros(ctx.shape))
    assert loss0 == lossz
    np.testing.assert_array_equal(c0.logits, cz.logits)
    np.testing.assert_array_equal(greedy_decode(params, CFG, ctx, M), greedy_decode(params, CFG, ctx, M,
                                                                                 flags=np.zeros(ctx.shape)))
    np.testing.assert_array_equal(reader_encode(params, CFG, ctx), reader_encode(params, CFG, ctx,
                                                                                 np.zeros(ctx.shape)))
    d0 = reader_backward(1.0, c0, flag_grads=True)
    dz = reader_backward(1.0, cz, flag_grads=True)
    for a, b in zip(d0[1:], dz[1:]):
        np.testing.assert_array_equal(a, b)
    for k in params:
        np.testing.assert_array_equal(d0[0][k], dz[0][k])
    assert np.all(d0[0]["em_vec"] == 0)  # with zero flags em_vec never reaches the loss
    # and the flags do matter
    loss1, _ = reader_forward(params, CFG, ctx, ai, ao, M, flags=np.ones(ctx.shape))
    assert abs(loss1 - loss0) > 1e-6


def test_plain_reader_rejects_flags(rng):
    P = init_reader(CFG_PLAIN, 0)
    ctx, ai, ao, M, flags = make_batch(rng)
    expect = r"flags=<array shape=\(2, 3, 5\) dtype=float64>; expected None when cfg.exact_match=False"
    with pytest.raises(ValueError, match=expect):
        reader_forward(P, CFG_PLAIN, ctx, ai, ao, M, flags=flags)
    with pytest.raises(ValueError, match="greedy_decode: " + expect):
        greedy_decode(P, CFG_PLAIN, ctx, flags=flags)
    with pytest.raises(ValueError, match="reader_encode: " + expect):
        reader_encode(P, CFG_PLAIN, ctx, flags)
    _, c = reader_forward(P, CFG_PLAIN, ctx, ai, ao, M)
    with pytest.raises(ValueError, match=r"flag_grads=True; expected False when cfg.exact_match=False"):
        reader_backward(1.0, c, flag_grads=True)
    # params of an exact-match reader lack nothing a plain reader needs, but not the other way round
    with pytest.raises(ValueError, match=r"params=.*without \['em_vec'\]"):
        reader_forward(P, CFG, ctx, ai, ao, M)


def test_flag_validation(params, rng):
    ctx, ai, ao, M, flags = make_batch(rng)
    with pytest.raises(ValueError, match=r"reader_forward: flags.shape=\(2, 3, 4\); expected \(2, 3, 5\)"):
        reader_forward(params, CFG, ctx, ai, ao, M, flags=flags[..., :4])
    with pytest.raises(TypeError, match=r"flags.dtype=int64; expected a floating dtype"):
        reader_forward(params, CFG, ctx, ai, ao, M, flags=np.zeros(ctx.shape, int))
    bad = flags.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"flags=.*expected finite values"):
        reader_forward(params, CFG, ctx, ai, ao, M, flags=bad)
    with pytest.raises(ValueError, match=r"flags=.*expected values >= 0"):
        reader_forward(params, CFG, ctx, ai, ao, M, flags=-flags)
    with pytest.raises(ValueError, match=r"flags=.*expected values in \[0, 1\] \(max 1.5\)"):
        reader_forward(params, CFG, ctx, ai, ao, M, flags=flags + (1.5 - flags.max()))
    with pytest.raises(ValueError, match=r"greedy_decode: flags.shape"):
        greedy_decode(params, CFG, ctx, flags=flags[:1])
    # float32 flags are cast to the parameters' dtype
    l64, _ = reader_forward(params, CFG, ctx, ai, ao, M, flags=flags)
    l32, c32 = reader_forward(params, CFG, ctx, ai, ao, M, flags=flags.astype(np.float32))
    assert c32.logits.dtype == np.float64 and l32 == pytest.approx(l64, rel=1e-6)


# ------------------------------------------------------------------------------------------------------
# (b) gradients of the reader with flags


def _split(d):
    P = {k: v for k, v in d.items() if not k.startswith("__")}
    return P, d["__mask"], d["__flags"]


@pytest.mark.parametrize("param_grads", [True, False])
def test_reader_flag_gradients(params, rng, param_grads):
    ctx, ai, ao, M, flags = make_batch(rng)
    M[0, 1] = 0.0  # a dropped document: finite gradient, checked by autograd (not perturbed)
    inputs = {**params, "__mask": M, "__flags": flags}

    def forward(d):
        P, m, f = _split(d)
        return reader_forward(P, CFG, ctx, ai, ao, m, flags=f)

    def backward(dloss, cache):
        dP, dM, dF = reader_backward(dloss, cache, param_grads=param_grads, flag_grads=True)
        assert dF.shape == ctx.shape and dM.shape == M.shape
        assert np.all(dF[ctx == CFG.pad_id] == 0)  # padded tokens never reach the loss
        if not param_grads:
            assert dP is None
            return {"__mask": dM, "__flags": dF}
        assert set(dP) == set(param_shapes(CFG))
        return {**dP, "__mask": dM, "__flags": dF}

    check_grads(forward, backward, inputs, rng=rng, mask={"__mask": (M > 0).astype(float)})
    # the frozen path gives the same mask and flag gradients as the full one
    _, c = forward(inputs)
    full = reader_backward(1.0, c, flag_grads=True)
    frozen = reader_backward(1.0, c, param_grads=False, flag_grads=True)
    np.testing.assert_allclose(frozen[1], full[1], rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(frozen[2], full[2], rtol=1e-13, atol=1e-16)
    assert len(reader_backward(1.0, c)) == 2 and reader_backward(1.0, c, param_grads=False)[0] is None


def test_reader_logits_backward(params, rng):
    """A loss on the logits (a fixed random projection), differentiated with reader_logits_backward."""
    ctx, ai, ao, M, flags = make_batch(rng)
    inputs = {**params, "__mask": M, "__flags": flags}

    def forward(d):
        P, m, f = _split(d)
        _, c = reader_forward(P, CFG, ctx, ai, ao, m, flags=f)
        return c.logits, c

    def backward(dlogits, cache):
        dP, dM, dF = reader_logits_backward(dlogits, cache, flag_grads=True)
        return {**dP, "__mask": dM, "__flags": dF}

    check_grads(forward, backward, inputs, rng=rng)
    # reader_backward is reader_logits_backward of the cross-entropy's logit gradient
    _, c = forward(inputs)
    a = reader_backward(0.7, c)
    b = reader_logits_backward(0.7 * (c.ce.p - c.ce.onehot) * c.ce.weight[..., None], c)
    np.testing.assert_allclose(a[1], b[1], rtol=1e-13)
    for k in params:
        np.testing.assert_allclose(a[0][k], b[0][k], rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match=r"reader_logits_backward: dlogits.shape=\(2, 3, 12\); expected "
                                         r"\(2, 3, 13\)"):
        reader_logits_backward(np.zeros((2, 3, 12)), c)
