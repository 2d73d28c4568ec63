"""Exact-match flags in the reader, and the two-pass reader built on them: hand-written gradients checked by
finite differences, autograd of the same forward and a mutation (check_grads); the DMA equivalences through
both reads (exact to float64 round-off); soft flags; decoding; validation."""
import numpy as np
import pytest
import reader_batches

from mini_gumbel.gradcheck import check_grads
from mini_gumbel.reader import (ReaderConfig, greedy_decode, init_reader, param_shapes, reader_backward,
                                reader_encode, reader_forward, reader_logits_backward)
from mini_gumbel.two_pass_reader import (READ_PREFIX, TwoPassBatch, entity_flags, read_ctx, soft_flags,
                                         soft_flags_backward, two_pass_backward, two_pass_decode, two_pass_first_hop,
                                         two_pass_forward, two_pass_memory)

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
    ctx, ans_in, ans_out, M = reader_batches.make_batch(rng, V, CFG.bos_id, B=B, N=N, L=L, T=T)
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


# ------------------------------------------------------------------------------------------------------
# the two-pass reader

ENT, SEP = 3, 4  # 0 pad, 1 BOS, 2 EOS, 5.. words, entities and relations


def make_two_pass(rng, hops=(1, 2, 2, 1), N=3, Ld=3, T=3):
    """A random batch with single- and two-hop rows, padded document tokens and a padded target."""
    hops = np.array(hops)
    B = len(hops)
    docs = rng.integers(5, V, (B, N, Ld))
    docs[:, -1, -1] = 0  # padding inside documents
    docs[1, 0, 1:] = 0
    e1 = docs[:, 0, 0].copy()  # the question's entity occurs in document 0
    ctx1 = read_ctx(docs, rng.integers(5, V, B), ent_id=ENT, sep_id=SEP)
    ctx2 = read_ctx(docs, rng.integers(5, V, B), ent_id=ENT, sep_id=SEP)
    flags1 = entity_flags(ctx1, e1)

    def answer():
        a_in = rng.integers(5, V, (B, T))
        a_in[:, 0] = CFG.bos_id
        a_out = rng.integers(5, V, (B, T))
        a_out[0, -1] = 0
        return a_in, a_out

    a1_in, a1_out = answer()
    a_in, a_out = answer()
    M = rng.uniform(0.1, 1.0, (B, N))
    return TwoPassBatch(ctx1, flags1, a1_in, a1_out, ctx2, a_in, a_out, hops), M


def _select(batch, keep):
    """The batch on the documents keep (B, K) only."""
    def take(a):
        return np.take_along_axis(a, keep[:, :, None], axis=1)
    return batch._replace(ctx1=take(batch.ctx1), flags1=take(batch.flags1), ctx2=take(batch.ctx2))


def test_read_ctx_and_entity_flags():
    docs = np.array([[[7, 8, 9], [9, 7, 0]]])  # (1, 2, 3)
    ctx = read_ctx(docs, np.array([5]), ent_id=ENT, sep_id=SEP)
    np.testing.assert_array_equal(ctx, [[[5, 3, 4, 7, 8, 9], [5, 3, 4, 9, 7, 0]]])
    assert READ_PREFIX == 3 and ctx.dtype == docs.dtype
    np.testing.assert_array_equal(entity_flags(ctx, np.array([7])), [[[0, 0, 0, 1, 0, 0], [0, 0, 0, 0, 1, 0]]])
    # the prefix never counts, even when it holds the entity's id
    np.testing.assert_array_equal(entity_flags(ctx, np.array([5])), np.zeros((1, 2, 6)))
    assert entity_flags(ctx, np.array([7])).dtype == np.float64
    with pytest.raises(ValueError, match=r"read_ctx: words.shape=\(2,\); expected \(1,\)"):
        read_ctx(docs, np.array([5, 6]), ent_id=ENT, sep_id=SEP)
    with pytest.raises(TypeError, match=r"read_ctx: docs.dtype=float64; expected an integer dtype"):
        read_ctx(docs.astype(float), np.array([5]), ent_id=ENT, sep_id=SEP)
    with pytest.raises(ValueError, match=r"entity_flags: entity.shape=\(2,\); expected \(1,\)"):
        entity_flags(ctx, np.array([7, 8]))


def test_soft_flags_hand_example_and_gradient(rng):
    ctx = np.array([[[5, 3, 4, 7, 8, 0], [6, 3, 4, 8, 8, 7]]])  # (1, 2, 6)
    p = np.zeros((1, V))
    p[0, [0, 5, 6, 7, 8]] = [0.05, 0.3, 0.1, 0.4, 0.15]
    np.testing.assert_array_equal(soft_flags(ctx, p), [[[0, 0, 0, 0.4, 0.15, 0], [0, 0, 0, 0.15, 0.15, 0.4]]])
    d = np.arange(12.0).reshape(1, 2, 6)
    dp = soft_flags_backward(d, ctx, V)
    want = np.zeros((1, V))
    want[0, 7] = 3 + 11
    want[0, 8] = 4 + 9 + 10  # padding (id 0) and the prefix (ids 5, 6) get nothing
    np.testing.assert_array_equal(dp, want)
    # finite differences, autograd and the mutation, on a batch with padding
    ctx = read_ctx(rng.integers(0, V, (3, 4, 3)), rng.integers(5, V, 3), ent_id=ENT, sep_id=SEP)
    check_grads(lambda d: (soft_flags(ctx, d["p"]), None),
                lambda R, _: {"p": soft_flags_backward(R, ctx, V)},
                {"p": rng.uniform(0.1, 1.0, (3, V))}, rng=rng)
    with pytest.raises(ValueError, match=r"soft_flags: p.shape=\(2, 13\); expected \(B=3, V\)"):
        soft_flags(ctx, np.ones((2, V)) / V)
    with pytest.raises(ValueError, match=r"soft_flags: ctx=.*expected token ids in \[0, 5\)"):
        soft_flags(ctx, np.ones((3, 5)) / 5)
    with pytest.raises(ValueError, match=r"soft_flags: p=.*expected values >= 0"):
        soft_flags(ctx, -np.ones((3, V)))


def test_two_pass_loss_is_per_row_read(params, rng):
    batch, M = make_two_pass(rng)
    loss, c = two_pass_forward(params, CFG, batch, M)
    B = len(batch.hops)
    two = np.flatnonzero(batch.hops == 2)
    # read 1 on every row, exactly as reader_forward
    _, r1 = reader_forward(params, CFG, batch.ctx1, batch.ans1_in, batch.ans1_out, M, flags=batch.flags1)
    np.testing.assert_array_equal(c.read1.logits, r1.logits)
    p1 = np.exp(r1.logits[:, 0]) / np.exp(r1.logits[:, 0]).sum(-1, keepdims=True)
    np.testing.assert_allclose(c.p1, p1, rtol=1e-13)
    # read 2 on the two-hop rows with soft flags from p1
    f2 = soft_flags(batch.ctx2[two], p1[two])
    _, r2 = reader_forward(params, CFG, batch.ctx2[two], batch.ans_in[two], batch.ans_out[two], M[two], flags=f2)
    want = r1.nll.copy()
    want[two] = r2.nll
    np.testing.assert_allclose(c.nll, want, rtol=1e-13)
    assert loss == pytest.approx(want.mean(), rel=1e-13) and c.nll.shape == (B,)
    lp = r1.logprobs.copy()
    lp[two] = r2.logprobs
    np.testing.assert_allclose(c.logprobs, lp, rtol=1e-13)
    # p1 is read 1's first-position distribution, whatever the later teacher-forced tokens
    np.testing.assert_allclose(two_pass_first_hop(params, CFG, batch.ctx1, batch.flags1, M), c.p1, rtol=1e-12)
    # the bridge marked softly does change read 2 (the flags path is live)
    _, r2z = reader_forward(params, CFG, batch.ctx2[two], batch.ans_in[two], batch.ans_out[two], M[two])
    assert np.abs(r2z.nll - r2.nll).max() > 1e-6


@pytest.mark.parametrize("hops", [(1, 2, 2, 1), (1, 1), (2, 2)])
def test_two_pass_mask_gradient(params, rng, hops):
    batch, M = make_two_pass(rng, hops=hops)
    M[0, 1] = 0.0  # a dropped document: finite gradient, checked by autograd (not perturbed)

    def forward(d):
        return two_pass_forward(params, CFG, batch, d["__mask"])

    def backward(dloss, cache):
        dP, dM = two_pass_backward(dloss, cache)
        assert dP is None and np.all(np.isfinite(dM))
        return {"__mask": dM}

    check_grads(forward, backward, {"__mask": M}, rng=rng, mask={"__mask": (M > 0).astype(float)})


def test_two_pass_param_gradients(params, rng):
    batch, M = make_two_pass(rng)
    inputs = {**params, "__mask": M}

    def forward(d):
        P = {k: v for k, v in d.items() if k != "__mask"}
        return two_pass_forward(P, CFG, batch, d["__mask"])

    def backward(dloss, cache):
        dP, dM = two_pass_backward(dloss, cache, param_grads=True)
        assert set(dP) == set(param_shapes(CFG))
        return {**dP, "__mask": dM}

    check_grads(forward, backward, inputs, rng=rng)
    # the frozen path gives the same mask gradient
    _, c = forward(inputs)
    np.testing.assert_allclose(two_pass_backward(1.0, c)[1], two_pass_backward(1.0, c, param_grads=True)[1],
                               rtol=1e-12, atol=1e-16)


def test_two_pass_binary_mask_equals_selected_documents(params, rng):
    batch, _ = make_two_pass(rng, N=4)
    M = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    keep = np.stack([np.flatnonzero(row) for row in M])  # (B, 2)
    loss, c = two_pass_forward(params, CFG, batch, M)
    loss_sub, c_sub = two_pass_forward(params, CFG, _select(batch, keep))
    assert loss == pytest.approx(loss_sub, rel=1e-12)
    np.testing.assert_allclose(c.nll, c_sub.nll, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c.logprobs, c_sub.logprobs, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(c.p1, c_sub.p1, rtol=1e-12, atol=1e-15)
    assert abs(loss - two_pass_forward(params, CFG, batch)[0]) > 1e-6  # the mask is not a no-op
    # and the same on the decoded answers
    args = (batch.ctx1, batch.flags1, batch.ctx2, batch.hops)
    sub = _select(batch, keep)
    np.testing.assert_array_equal(two_pass_decode(params, CFG, *args, M),
                                  two_pass_decode(params, CFG, sub.ctx1, sub.flags1, sub.ctx2, sub.hops))


def test_two_pass_all_ones_and_scaled_mask(params, rng):
    batch, M = make_two_pass(rng)
    loss0, c0 = two_pass_forward(params, CFG, batch)
    loss1, c1 = two_pass_forward(params, CFG, batch, np.ones(M.shape))
    assert loss1 == pytest.approx(loss0, rel=1e-13)
    np.testing.assert_allclose(c1.nll, c0.nll, rtol=1e-12)
    # mask=None: the gradient at M = 1
    np.testing.assert_allclose(two_pass_backward(1.0, c0)[1], two_pass_backward(1.0, c1)[1], rtol=1e-10,
                               atol=1e-15)
    lossM, cM = two_pass_forward(params, CFG, batch, M)
    lossS, cS = two_pass_forward(params, CFG, batch, 7.3 * M)
    assert lossS == pytest.approx(lossM, rel=1e-13)
    np.testing.assert_allclose(cS.nll, cM.nll, rtol=1e-12)
    dM = two_pass_backward(1.0, cM)[1]
    dMS = two_pass_backward(1.0, cS)[1]
    assert abs(np.sum(dM * M)) < 1e-12 * np.abs(dM).sum()  # scale invariance: <dM, M> = 0
    np.testing.assert_allclose(dMS, dM / 7.3, rtol=1e-10)


def test_two_pass_mask_gradient_at_zero(params, rng):
    batch, M = make_two_pass(rng)
    M[1, 2] = 0.0  # a two-hop row
    M[0, 1] = 0.0  # a single-hop row
    _, c = two_pass_forward(params, CFG, batch, M)
    dM = two_pass_backward(1.0, c)[1]
    assert np.all(np.isfinite(dM))
    for b, i in [(1, 2), (0, 1)]:
        assert dM[b, i] != 0

        def f(h):
            Mh = M.copy()
            Mh[b, i] = h
            return two_pass_forward(params, CFG, batch, Mh)[0]

        h = 1e-5
        fd = (-3 * f(0.0) + 4 * f(h) - f(2 * h)) / (2 * h)  # second-order one-sided difference
        assert abs(fd - dM[b, i]) / abs(dM[b, i]) < 1e-6


def test_two_pass_decode(params, rng):
    batch, M = make_two_pass(rng)
    out = two_pass_decode(params, CFG, batch.ctx1, batch.flags1, batch.ctx2, batch.hops, M)
    B = len(batch.hops)
    assert out.shape[0] == B and 1 <= out.shape[1] <= CFG.max_ans_len

    def padded(a):
        return np.concatenate([a, np.zeros((a.shape[0], CFG.max_ans_len - a.shape[1]), a.dtype)], axis=1)

    one, two = np.flatnonzero(batch.hops == 1), np.flatnonzero(batch.hops == 2)
    # single-hop rows: greedy decoding of read 1
    g1 = greedy_decode(params, CFG, batch.ctx1, M, flags=batch.flags1)
    np.testing.assert_array_equal(padded(out)[one], padded(g1)[one])
    # two-hop rows: greedy decoding of read 2 with the soft flags of read 1's first-position distribution
    p1 = two_pass_first_hop(params, CFG, batch.ctx1, batch.flags1, M)
    g2 = greedy_decode(params, CFG, batch.ctx2, M, flags=soft_flags(batch.ctx2, p1))
    np.testing.assert_array_equal(padded(out)[two], padded(g2)[two])
    # only single-hop rows: exactly greedy_decode of read 1
    np.testing.assert_array_equal(
        two_pass_decode(params, CFG, batch.ctx1, batch.flags1, batch.ctx2, np.ones(B, int), M, max_len=2),
        greedy_decode(params, CFG, batch.ctx1, M, flags=batch.flags1, max_len=2))


def test_two_pass_validation(params, rng):
    batch, M = make_two_pass(rng)
    with pytest.raises(ValueError, match=r"two_pass_forward: cfg.exact_match=False; expected True"):
        two_pass_forward(init_reader(CFG_PLAIN, 0), CFG_PLAIN, batch, M)
    with pytest.raises(TypeError, match=r"two_pass_forward: batch='<a tuple>'; expected a TwoPassBatch"):
        two_pass_forward(params, CFG, tuple(batch), M)
    with pytest.raises(ValueError, match=r"two_pass_forward: hops\[1\]=3; expected 1 or 2"):
        two_pass_forward(params, CFG, batch._replace(hops=np.array([1, 3, 2, 1])), M)
    with pytest.raises(ValueError, match=r"two_pass_forward: hops.shape=\(3,\); expected \(4,\)"):
        two_pass_forward(params, CFG, batch._replace(hops=np.array([1, 2, 2])), M)
    with pytest.raises(ValueError, match=r"two_pass_forward: batch.ctx2.shape=\(4, 2, 6\); expected "
                                         r"batch.ctx1.shape=\(4, 3, 6\)"):
        two_pass_forward(params, CFG, batch._replace(ctx2=batch.ctx2[:, :2]), M)
    with pytest.raises(ValueError, match=r"two_pass_forward: batch.flags1=.*expected values in \[0, 1\]"):
        two_pass_forward(params, CFG, batch._replace(flags1=2.0 * batch.flags1), M)
    with pytest.raises(ValueError, match=r"two_pass_forward: mask\[1\].max\(\)=0.0; expected a row maximum"):
        two_pass_forward(params, CFG, batch, M * np.array([[1], [0], [1], [1]]))
    with pytest.raises(ValueError, match=r"two_pass_decode: hops\[0\]=0; expected 1 or 2"):
        two_pass_decode(params, CFG, batch.ctx1, batch.flags1, batch.ctx2, np.zeros(4, int))
    with pytest.raises(ValueError, match=r"two_pass_decode: ctx2.shape=\(4, 3, 5\); expected ctx1.shape"):
        two_pass_decode(params, CFG, batch.ctx1, batch.flags1, batch.ctx2[..., :5], batch.hops)


# ------------------------------------------------------------------------------------------------------
# read 1's mask-independent memory (two_pass_memory), reused under every mask


def test_two_pass_memory_is_bit_identical(params, rng):
    """Rows of read 1's memory, computed on the whole batch, give exactly the loss, per-row NLL, p1, read 2's
    flags and the frozen mask gradient of the full two-pass reader on a reordered sub-batch."""
    batch, M = make_two_pass(rng, hops=(1, 2, 2, 1, 2))
    memory = two_pass_memory(params, CFG, batch)
    idx = np.array([4, 0, 2])
    sub = TwoPassBatch(*(a[idx] for a in batch))
    loss, c = two_pass_forward(params, CFG, sub, M[idx])
    loss_m, c_m = two_pass_forward(params, CFG, sub, M[idx], memory1=memory.take(idx))
    assert c_m.read1.enc is None and c.read1.enc is not None
    assert loss_m == loss
    for a, b in ((c_m.nll, c.nll), (c_m.p1, c.p1), (c_m.flags2, c.flags2), (c_m.logprobs, c.logprobs)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(two_pass_backward(1.0, c_m)[1], two_pass_backward(1.0, c)[1])
    with pytest.raises(ValueError, match=r"two_pass_backward: param_grads=True; expected False for a forward "
                                         r"given memory1="):
        two_pass_backward(1.0, c_m, param_grads=True)


def test_two_pass_memory_mask_gradient(params, rng):
    """The frozen mask gradient with read 1 from its memory (read 2's flags path still live): check_grads."""
    batch, M = make_two_pass(rng)
    memory = two_pass_memory(params, CFG, batch)

    def forward(d):
        return two_pass_forward(params, CFG, batch, d["__mask"], memory1=memory)

    def backward(dloss, cache):
        return {"__mask": two_pass_backward(dloss, cache)[1]}

    rep = check_grads(forward, backward, {"__mask": M}, rng=rng)
    assert rep.mutated_fd_rel_error > 3e-3
