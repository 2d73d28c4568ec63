"""The FiD reader: hand-written gradients checked by gradcheck.check_grads (a directional finite difference
of the whole model, autograd of the same forward, a 1% mutation that must fail), the DMA equivalences of
docs/method.md §6 (exact to float64 round-off), validation, greedy decoding, and a copy task the reader must
learn."""
import numpy as np
import pytest
import reader_batches

from mini_gumbel.gradcheck import check_grads, rel_error
from mini_gumbel.optim import adam_init, adam_step
from mini_gumbel.reader import (ReaderConfig, greedy_decode, init_reader, param_shapes, reader_backward,
                                reader_encode, reader_forward, reader_memory)

V = 13
CFG = ReaderConfig(vocab_size=V, d_model=8, n_heads=2, n_enc_layers=2, n_dec_layers=2, d_ff=12,
                   max_ctx_len=6, max_ans_len=4)


def make_batch(rng, B=2, N=3, L=5, T=3):
    return reader_batches.make_batch(rng, V, CFG.bos_id, B=B, N=N, L=L, T=T)


@pytest.fixture(scope="module")
def params():
    return init_reader(CFG, 0)


def _loss(P, ctx, ai, ao, M=None, **kw):
    return reader_forward(P, CFG, ctx, ai, ao, M, **kw)[0]


def _forward(ctx, ai, ao):
    """check_grads' forward over {**params, "__mask": M}: (loss, cache)."""
    def forward(d):
        return reader_forward({k: v for k, v in d.items() if k != "__mask"}, CFG, ctx, ai, ao, d["__mask"])

    return forward


def _backward(dloss, cache):
    dP, dM = reader_backward(dloss, cache)
    shapes = param_shapes(CFG)
    assert set(dP) == set(shapes)
    for k, g in dP.items():
        assert g.shape == tuple(shapes[k]) and g.dtype == np.float64, k
    assert np.all(np.isfinite(dM))
    return {**dP, "__mask": dM}


# ------------------------------------------------------------------------------------------------------
# gradients


@pytest.mark.parametrize("B,N,T", [(1, 1, 1), (2, 3, 3)])
def test_gradients_match_autograd(params, B, N, T, rng):
    ctx, ai, ao, M = make_batch(rng, B=B, N=N, T=T)
    if N > 1:
        M[0, -1] = 0.0  # a dropped document: its gradient must still be right (and finite)
    assert set(params) == set(param_shapes(CFG))
    # every parameter and the mask: finite differences (not across the dropped document's M = 0, where
    # M - eps would be invalid; its one-sided derivative is tested below), autograd per input (relative,
    # with check_grads' absolute floor: with N = 1 the mask gradient is exactly 0 up to round-off)
    check_grads(_forward(ctx, ai, ao), _backward, {**params, "__mask": M}, rng=rng,
                mask={"__mask": (M > 0).astype(float)})
    _, cache = reader_forward(params, CFG, ctx, ai, ao, M)
    dP, dM = reader_backward(1.0, cache)
    # the frozen path: identical mask gradient, no parameter gradient
    dP0, dM0 = reader_backward(1.0, cache, param_grads=False)
    assert dP0 is None
    np.testing.assert_array_equal(dM0, dM)
    # dloss scales linearly
    np.testing.assert_allclose(reader_backward(2.5, cache)[0]["lm.W"], 2.5 * dP["lm.W"], rtol=1e-14)


def test_directional_whole_reader(params, rng):
    ctx, ai, ao, M = make_batch(rng)  # every M > 0: one direction over every parameter and the whole mask
    check_grads(_forward(ctx, ai, ao), _backward, {**params, "__mask": M}, rng=rng)


def test_no_mask_gradient_is_gradient_at_ones(params, rng):
    ctx, ai, ao, _ = make_batch(rng)
    _, cache = reader_forward(params, CFG, ctx, ai, ao)  # plain cross-attention
    dP, dM = reader_backward(1.0, cache)
    ones = np.ones((2, 3))
    _, cache1 = reader_forward(params, CFG, ctx, ai, ao, ones)  # DMA with M = 1
    dP1, dM1 = reader_backward(1.0, cache1)
    np.testing.assert_allclose(dM, dM1, rtol=1e-10, atol=1e-15)
    # the mask=None backward's dM (its cache, not the forward's) is the gradient of the DMA loss at M = 1
    check_grads(lambda d: reader_forward(params, CFG, ctx, ai, ao, d["__mask"]),
                lambda dloss, _: {"__mask": reader_backward(dloss, cache, param_grads=False)[1]},
                {"__mask": ones}, rng=rng)
    assert max(rel_error(dP[k], dP1[k]) for k in params) < 1e-12


# ------------------------------------------------------------------------------------------------------
# DMA equivalences (float64 round-off)


def test_binary_mask_equals_selected_documents(params, rng):
    ctx, ai, ao, _ = make_batch(rng, B=2, N=4)
    M = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 1.0]])
    loss, c = reader_forward(params, CFG, ctx, ai, ao, M)
    sel = np.stack([np.flatnonzero(row) for row in M])  # (B, K)
    sub = np.take_along_axis(ctx, sel[:, :, None], axis=1)  # (B, K, L)
    loss_sub, c_sub = reader_forward(params, CFG, sub, ai, ao)
    assert loss == pytest.approx(loss_sub, rel=1e-12)
    np.testing.assert_allclose(c.logits, c_sub.logits, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(c.logprobs, c_sub.logprobs, rtol=1e-12, atol=1e-12)
    # and the loss differs from using every document (the mask is not a no-op)
    assert abs(loss - _loss(params, ctx, ai, ao)) > 1e-6


def test_all_ones_and_scaled_mask(params, rng):
    ctx, ai, ao, M = make_batch(rng)
    loss0, c0 = reader_forward(params, CFG, ctx, ai, ao)
    loss1, c1 = reader_forward(params, CFG, ctx, ai, ao, np.ones(M.shape))
    assert loss1 == pytest.approx(loss0, rel=1e-13)
    np.testing.assert_allclose(c1.logits, c0.logits, rtol=1e-12, atol=1e-13)
    lossM, cM = reader_forward(params, CFG, ctx, ai, ao, M)
    lossS, cS = reader_forward(params, CFG, ctx, ai, ao, 7.3 * M)
    assert lossS == pytest.approx(lossM, rel=1e-13)
    np.testing.assert_allclose(cS.logits, cM.logits, rtol=1e-12, atol=1e-13)
    # scale invariance in the gradient: <dM, M> = 0 and dM(cM) = dM(M) / c
    dM = reader_backward(1.0, cM, param_grads=False)[1]
    dMS = reader_backward(1.0, cS, param_grads=False)[1]
    assert abs(np.sum(dM * M)) < 1e-12 * np.abs(dM).sum()
    np.testing.assert_allclose(dMS, dM / 7.3, rtol=1e-10)


def test_mask_gradient_at_zero_is_one_sided_derivative(params, rng):
    ctx, ai, ao, M = make_batch(rng)
    M[0, 1] = 0.0
    M[1, 0] = 0.0
    _, cache = reader_forward(params, CFG, ctx, ai, ao, M)
    dM = reader_backward(1.0, cache, param_grads=False)[1]
    assert np.all(np.isfinite(dM)) and dM[0, 1] != 0
    for b, i in [(0, 1), (1, 0)]:
        def f(h):
            Mh = M.copy()
            Mh[b, i] = h
            return _loss(params, ctx, ai, ao, Mh)
        h = 1e-5
        fd = (-3 * f(0.0) + 4 * f(h) - f(2 * h)) / (2 * h)  # second-order one-sided difference
        assert abs(fd - dM[b, i]) / abs(dM[b, i]) < 1e-6


def test_key_padding_never_attended(params, rng):
    ctx, ai, ao, M = make_batch(rng)
    for mask in (None, M, np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])):
        loss, c = reader_forward(params, CFG, ctx, ai, ao, mask, need_attn=True)
        assert c.key_pad.shape == (2, 15) and c.key_pad.sum() == (ctx == 0).sum()
        for rec in c.xattn:
            assert np.all(rec.probs.transpose(0, 3, 1, 2)[c.key_pad] == 0)  # (B, S, H, T)[key_pad]
        # the pad token's embedding never reaches the loss: changing it changes nothing, gradient exactly 0
        P2 = dict(params)
        P2["tok_emb"] = params["tok_emb"].copy()
        P2["tok_emb"][CFG.pad_id] = 50.0 * rng.standard_normal(CFG.d_model)
        assert _loss(P2, ctx, ai, ao, mask) == loss
        dP, _ = reader_backward(1.0, c)
        assert np.all(dP["tok_emb"][CFG.pad_id] == 0)


def test_permuting_documents_with_mask(params, rng):
    ctx, ai, ao, M = make_batch(rng, N=4)
    perm = np.array([2, 0, 3, 1])
    loss, c = reader_forward(params, CFG, ctx, ai, ao, M)
    loss_p, c_p = reader_forward(params, CFG, ctx[:, perm], ai, ao, M[:, perm])
    assert loss_p == pytest.approx(loss, rel=1e-12)
    dM = reader_backward(1.0, c, param_grads=False)[1]
    dM_p = reader_backward(1.0, c_p, param_grads=False)[1]
    np.testing.assert_allclose(dM_p, dM[:, perm], rtol=1e-10, atol=1e-14)


def test_need_attn_records(params, rng):
    ctx, ai, ao, M = make_batch(rng)
    B, N, L = ctx.shape
    T, H = ai.shape[1], CFG.n_heads
    _, c = reader_forward(params, CFG, ctx, ai, ao, M, need_attn=True)
    assert len(c.xattn) == CFG.n_dec_layers
    for rec in c.xattn:
        assert rec.probs.shape == rec.scores.shape == (B, H, T, N * L)
        assert rec.value_norms.shape == (B, H, N * L) and np.all(rec.value_norms >= 0)
        np.testing.assert_allclose(rec.probs.sum(-1), 1.0, rtol=1e-13)
        # DMA: probs ∝ M_doc exp(scores) over unpadded keys
        w = np.where(c.key_pad[:, None, None], 0.0, np.exp(rec.scores)) * np.repeat(M, L, axis=1)[:, None, None]
        np.testing.assert_allclose(rec.probs, w / w.sum(-1, keepdims=True), rtol=1e-12, atol=1e-15)
    assert reader_forward(params, CFG, ctx, ai, ao, M)[1].xattn is None


def test_encoder_is_per_document(params, rng):
    ctx, ai, ao, M = make_batch(rng)
    enc = reader_encode(params, CFG, ctx)
    assert enc.shape == ctx.shape + (CFG.d_model,)
    ctx2 = ctx.copy()
    ctx2[:, 0, :2] = 5  # change document 0 only
    enc2 = reader_encode(params, CFG, ctx2)
    np.testing.assert_array_equal(enc2[:, 1:], enc[:, 1:])
    assert not np.allclose(enc2[:, 0], enc[:, 0])


# ------------------------------------------------------------------------------------------------------
# validation


def test_validation_messages(params, rng):
    ctx, ai, ao, M = make_batch(rng)
    Mz = M.copy()
    Mz[1] = 0.0
    with pytest.raises(ValueError, match=r"mask\[1\].max\(\)=0.0; expected a row maximum in \[1.5e-154, "):
        reader_forward(params, CFG, ctx, ai, ao, Mz)
    with pytest.raises(ValueError, match=r"mask\[1\].max\(\)=0.0; expected a row maximum in"):
        greedy_decode(params, CFG, ctx, Mz)
    with pytest.raises(ValueError, match=r"mask=.*expected values >= 0"):
        reader_forward(params, CFG, ctx, ai, ao, -M)
    with pytest.raises(ValueError, match=r"mask.shape=\(3, 2\); expected \(2, 3\)"):
        reader_forward(params, CFG, ctx, ai, ao, M.T)
    with pytest.raises(ValueError, match=r"mask=.*expected finite values"):
        reader_forward(params, CFG, ctx, ai, ao, M * np.nan)
    long = np.ones((2, 3, 7), int)
    with pytest.raises(ValueError, match=r"ctx.shape=\(2, 3, 7\); expected .*1 <= L <= max_ctx_len=6"):
        reader_forward(params, CFG, long, ai, ao)
    bad = ctx.copy()
    bad[0, 0, 0] = V
    with pytest.raises(ValueError, match=r"ctx=.*expected token ids in \[0, 13\) \(found ids in \[0, 13\]\)"):
        reader_forward(params, CFG, bad, ai, ao)
    with pytest.raises(TypeError, match=r"ctx.dtype=float64; expected an integer dtype"):
        reader_forward(params, CFG, ctx.astype(float), ai, ao)
    with pytest.raises(ValueError, match=r"ans_in.shape=\(2, 5\); expected \(B=2, T\) with 1 <= T <= max_ans_len=4"):
        reader_forward(params, CFG, ctx, np.ones((2, 5), int), np.ones((2, 5), int))
    with pytest.raises(ValueError, match=r"ans_out.shape=\(2, 2\); expected ans_in.shape=\(2, 3\)"):
        reader_forward(params, CFG, ctx, ai, ao[:, :2])
    empty = ctx.copy()
    empty[1, 2] = 0
    with pytest.raises(ValueError, match=r"ctx\[1, 2\]='<all padding>'; expected a question in every sequence"):
        reader_forward(params, CFG, empty, ai, ao)
    P32 = dict(params)
    P32["lm.b"] = params["lm.b"].astype(np.float32)
    with pytest.raises(TypeError, match=r"params\['lm.b'\].dtype=float32; expected float64"):
        reader_forward(P32, CFG, ctx, ai, ao)
    with pytest.raises(ValueError, match=r"params=.*without \['tok_emb'\]"):
        reader_forward({k: v for k, v in params.items() if k != "tok_emb"}, CFG, ctx, ai, ao)
    with pytest.raises(ValueError, match=r"max_len=9; expected an int in \[1, 4\]"):
        greedy_decode(params, CFG, ctx, max_len=9)
    with pytest.raises(ValueError, match=r"d_model=8; expected a multiple of n_heads=3"):
        ReaderConfig(vocab_size=V, d_model=8, n_heads=3)


# ------------------------------------------------------------------------------------------------------
# float32, greedy decoding, training


def test_float32(rng):
    P64 = init_reader(CFG, 3)
    P32 = init_reader(CFG, 3, dtype=np.float32)
    for k in P64:
        np.testing.assert_array_equal(P32[k], P64[k].astype(np.float32))
    ctx, ai, ao, M = make_batch(rng)
    l64, c64 = reader_forward(P64, CFG, ctx, ai, ao, M)
    l32, c32 = reader_forward(P32, CFG, ctx, ai, ao, M)  # a float64 mask is cast to the params' dtype
    assert c32.logits.dtype == np.float32 and l32 == pytest.approx(l64, rel=1e-5)
    dP32, dM32 = reader_backward(np.float32(1.0), c32)
    dP64, dM64 = reader_backward(1.0, c64)
    assert dM32.dtype == np.float32 and all(g.dtype == np.float32 for g in dP32.values())
    assert rel_error(dM32, dM64) < 1e-4 and rel_error(dP32["lm.W"], dP64["lm.W"]) < 1e-4


def copy_task(rng, S, N=3, L=6, V=16):
    """The answer is the token after the marker (4) in one of N documents; 3 = SEP, 5.. = content."""
    ctx = rng.integers(5, V, (S, N, L))
    ctx[:, :, 0] = 3
    gold = rng.integers(0, N, S)
    pos = rng.integers(1, L - 1, S)
    ans = rng.integers(5, V, S)
    ctx[np.arange(S), gold, pos] = 4
    ctx[np.arange(S), gold, pos + 1] = ans
    ans_in = np.stack([np.ones(S, int), ans], 1)
    ans_out = np.stack([ans, np.full(S, 2)], 1)
    return ctx, ans_in, ans_out, gold


def test_greedy_decode_matches_teacher_forcing(params, rng):
    ctx, ai, ao, M = make_batch(rng)
    out = greedy_decode(params, CFG, ctx, M)
    assert out.shape[0] == 2 and 1 <= out.shape[1] <= CFG.max_ans_len
    # feeding the decoded prefix back, the argmax of the logits reproduces every decoded token
    T = out.shape[1]
    ans_in = np.concatenate([np.full((2, 1), CFG.bos_id), out[:, :-1]], axis=1)
    _, c = reader_forward(params, CFG, ctx, ans_in, np.maximum(out, 1), M)
    for b in range(2):
        stop = list(out[b]).index(CFG.eos_id) + 1 if CFG.eos_id in out[b] else T
        np.testing.assert_array_equal(c.logits[b, :stop].argmax(-1), out[b, :stop])
        assert np.all(out[b, stop:] == CFG.pad_id)


def test_reader_learns_copy_task():
    """Full-batch Adam on 64 examples; every other step a random 0/1 document mask that keeps the gold
    document (docs/method.md §7: the reader must read whatever subset it is given)."""
    rng = np.random.default_rng(0)
    ctx, ai, ao, gold = copy_task(rng, 64)
    cfg = ReaderConfig(vocab_size=16, d_model=32, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=64,
                       max_ctx_len=6, max_ans_len=2)
    only_gold = np.eye(3)[gold]  # (S, N)
    P = init_reader(cfg, 0)
    state = adam_init(P)
    acc0 = (greedy_decode(P, cfg, ctx) == ao).all(1).mean()
    for step in range(300):
        M = np.maximum(only_gold, rng.random(only_gold.shape) < 0.5) if step % 2 else None
        loss, c = reader_forward(P, cfg, ctx, ai, ao, M)
        g, _ = reader_backward(1.0, c)
        P, state, _ = adam_step(P, g, state, lr=1e-2, clip_norm=1.0)
        if step % 10 == 9 and (greedy_decode(P, cfg, ctx) == ao).all() and \
                (greedy_decode(P, cfg, ctx, only_gold) == ao).all():
            break
    assert acc0 < 0.2
    assert (greedy_decode(P, cfg, ctx) == ao).all(), (step, float(loss))
    # DMA on the trained reader: the gold document alone suffices; without it the answer is mostly lost
    assert (greedy_decode(P, cfg, ctx, only_gold) == ao).all()
    assert (greedy_decode(P, cfg, ctx, 1.0 - only_gold)[:, 0] == ao[:, 0]).mean() < 0.5


# ------------------------------------------------------------------------------------------------------
# the mask-independent memory (reader_memory): computed once, reused under every mask


def test_memory_forward_is_bit_identical(params, rng):
    """A forward given rows of a memory computed on a larger, differently ordered batch gives exactly the
    loss, logits, NLL and frozen mask gradient of the whole reader; greedy decoding too."""
    ctx, ai, ao, M = make_batch(rng, B=5)
    memory = reader_memory(params, CFG, ctx)
    assert memory.nbytes == CFG.n_dec_layers * 5 * 3 * 5 * 2 * CFG.d_model * 8 + 5 * 3 * 5
    idx = np.array([3, 0, 4])
    loss, cache = reader_forward(params, CFG, ctx[idx], ai[idx], ao[idx], M[idx])
    loss_m, cache_m = reader_forward(params, CFG, ctx[idx], ai[idx], ao[idx], M[idx], memory=memory.take(idx))
    assert cache_m.enc is None and cache_m.kv is None  # no encoder ran
    assert loss_m == loss
    np.testing.assert_array_equal(cache_m.logits, cache.logits)
    np.testing.assert_array_equal(cache_m.nll, cache.nll)
    np.testing.assert_array_equal(reader_backward(1.0, cache_m, param_grads=False)[1],
                                  reader_backward(1.0, cache, param_grads=False)[1])
    np.testing.assert_array_equal(greedy_decode(params, CFG, ctx[idx], M[idx], memory=memory.take(idx)),
                                  greedy_decode(params, CFG, ctx[idx], M[idx]))
    # the memory is the states reader_encode exposes, projected by each layer's Wkv (nothing else in it)
    enc = reader_encode(params, CFG, ctx).reshape(5, 15, CFG.d_model)
    np.testing.assert_array_equal(memory.kv[1], enc @ params["dec.1.cross.Wkv"] + params["dec.1.cross.bkv"])
    both = memory.concat([memory.take(np.arange(2)), memory.take(np.arange(2, 5))])
    for a, b in zip(both.kv, memory.kv):
        np.testing.assert_array_equal(a, b)


def test_memory_backward_gradients(params, rng):
    """The frozen backward of a forward given a memory: the mask gradient against finite differences and
    autograd of that same forward (check_grads, with its 1% mutation)."""
    ctx, ai, ao, M = make_batch(rng)
    memory = reader_memory(params, CFG, ctx)

    def forward(d):
        return reader_forward(params, CFG, ctx, ai, ao, d["__mask"], memory=memory)

    def backward(dloss, cache):
        dP, dM = reader_backward(dloss, cache, param_grads=False)
        assert dP is None
        return {"__mask": dM}

    rep = check_grads(forward, backward, {"__mask": M}, rng=rng)
    assert rep.mutated_fd_rel_error > 3e-3


def test_memory_validation(params, rng):
    ctx, ai, ao, M = make_batch(rng, B=3)
    memory = reader_memory(params, CFG, ctx)
    _, cache = reader_forward(params, CFG, ctx, ai, ao, M, memory=memory)
    with pytest.raises(ValueError, match=r"reader_backward: param_grads=True; expected False for a forward given "
                                         r"memory="):
        reader_backward(1.0, cache)
    with pytest.raises(ValueError, match=r"memory.shape=\(2, 3, 5\); expected ctx.shape=\(3, 3, 5\)"):
        reader_forward(params, CFG, ctx, ai, ao, M, memory=memory.take(np.arange(2)))
    other = ctx.copy()
    other[0, 0, 1] = 0  # different padding: not this ctx's memory
    with pytest.raises(ValueError, match=r"memory.key_pad=.*expected the padding of ctx"):
        reader_forward(params, CFG, other, ai, ao, M, memory=memory)
    with pytest.raises(TypeError, match=r"reader_forward: memory=.*expected a ReaderMemory"):
        reader_forward(params, CFG, ctx, ai, ao, M, memory=memory.kv)
    P32 = init_reader(CFG, 0, dtype=np.float32)
    with pytest.raises(TypeError, match=r"memory.kv\[0\].dtype=float64; expected float32"):
        reader_forward(P32, CFG, ctx, ai, ao, M, memory=memory)
