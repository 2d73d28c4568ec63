"""Every primitive in mini_gumbel.ops, checked by gradcheck.check_grads (directional finite differences of
loss = sum(out * R) in float64, autograd of the same forward, and a 1% mutation that must fail), and the DMA
properties of docs/method.md §6."""
import numpy as np
import pytest
from autograd import grad

from mini_gumbel import ops
from mini_gumbel.gradcheck import check_grads, jacobian_check, probe

TOL = 1e-6


SHAPES = [(1, 1, 4), (1, 3, 5), (2, 3, 6)]


@pytest.mark.parametrize("shape", SHAPES)
def test_linear(shape, rng):
    C, F = shape[-1], 7
    inp = {"x": rng.standard_normal(shape), "W": rng.standard_normal((C, F)), "b": rng.standard_normal(F)}

    def bwd(R, c):
        dx, dW, db = ops.linear_backward(R, c)
        return {"x": dx, "W": dW, "b": db}

    check_grads(lambda d: ops.linear_forward(d["x"], d["W"], d["b"]), bwd, inp, rng=rng)
    # no bias, frozen: only dx
    out, c = ops.linear_forward(inp["x"], inp["W"])
    dx, dW, db = ops.linear_backward(np.ones_like(out), c, param_grads=False)
    assert dW is None and db is None and dx.shape == shape


@pytest.mark.parametrize("shape", SHAPES)
def test_layernorm(shape, rng):
    C = shape[-1]
    inp = {"x": rng.standard_normal(shape) * 3 + 1, "g": rng.standard_normal(C), "b": rng.standard_normal(C)}

    def bwd(R, c):
        dx, dg, db = ops.layernorm_backward(R, c)
        return {"x": dx, "g": dg, "b": db}

    check_grads(lambda d: ops.layernorm_forward(d["x"], d["g"], d["b"]), bwd, inp, rng=rng)


@pytest.mark.parametrize("shape", SHAPES)
def test_gelu(shape, rng):
    inp = {"x": rng.standard_normal(shape) * 2}
    check_grads(lambda d: ops.gelu_forward(d["x"]), lambda R, c: {"x": ops.gelu_backward(R, c)}, inp, rng=rng)
    # the tanh approximation, at a few known points
    y, _ = ops.gelu_forward(np.array([0.0, 1.0, -1.0]))
    np.testing.assert_allclose(y, [0.0, 0.8411919906082768, -0.15880800939172324], rtol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_and_log_softmax(shape, rng):
    inp = {"x": rng.standard_normal(shape) * 3}
    check_grads(lambda d: ops.softmax_forward(d["x"]), lambda R, c: {"x": ops.softmax_backward(R, c)}, inp,
                rng=rng)
    check_grads(lambda d: ops.log_softmax_forward(d["x"]), lambda R, c: {"x": ops.log_softmax_backward(R, c)},
                inp, rng=rng)
    y, _ = ops.softmax_forward(inp["x"])
    ly, _ = ops.log_softmax_forward(inp["x"])
    np.testing.assert_allclose(np.exp(ly), y, rtol=1e-13)
    # large logits do not overflow
    y, _ = ops.softmax_forward(np.array([1000.0, 0.0]))
    assert np.all(np.isfinite(y)) and y[0] == 1.0


def test_softmax_jacobian(rng):
    x = rng.standard_normal(5)
    assert jacobian_check(lambda z: ops.softmax_forward(z)[0], x,
                          lambda g: ops.softmax_backward(g, ops.softmax_forward(x)[1])) < TOL


@pytest.mark.parametrize("shape", [(1,), (1, 3), (2, 4)])
def test_embedding(shape, rng):
    V, C = 6, 5
    ids = rng.integers(0, V, size=shape)
    inp = {"W": rng.standard_normal((V, C))}
    check_grads(lambda d: ops.embedding_forward(ids, d["W"]), lambda R, c: {"W": ops.embedding_backward(R, c)},
                inp, rng=rng)


def test_embedding_repeated_ids_accumulate():
    W = np.arange(6.0).reshape(3, 2)
    out, c = ops.embedding_forward(np.array([[1, 1, 2]]), W)
    dW = ops.embedding_backward(np.ones_like(out), c)
    np.testing.assert_array_equal(dW, [[0, 0], [2, 2], [1, 1]])


@pytest.mark.parametrize("B,H,T,S,causal", [(1, 1, 1, 1, False), (1, 2, 3, 3, True), (2, 2, 3, 5, False),
                                            (2, 1, 2, 5, True)])
def test_attention_core(B, H, T, S, causal, rng):
    Dh = 3
    inp = {"q": rng.standard_normal((B, H, T, Dh)), "k": rng.standard_normal((B, H, S, Dh)),
           "v": rng.standard_normal((B, H, S, Dh))}
    key_pad = np.zeros((B, S), bool)
    if S > 2 and not causal:
        key_pad[:, -1] = True

    def fwd(d):
        return ops.attention_forward(d["q"], d["k"], d["v"], key_pad=key_pad, causal=causal)

    def bwd(R, c):
        dq, dk, dv, dm = ops.attention_backward(R, c)
        assert dm is None
        return {"q": dq, "k": dk, "v": dv}

    check_grads(fwd, bwd, inp, rng=rng)
    if causal:  # query t never sees a later key
        out, c = fwd(inp)
        assert np.all(np.triu(c.a[0, 0], k=S - T + 1) == 0)


@pytest.mark.parametrize("B,N,L", [(1, 1, 2), (1, 3, 2), (2, 3, 4)])
def test_attention_doc_mask(B, N, L, rng):
    H, T, Dh = 2, 3, 4
    S = N * L
    inp = {"q": rng.standard_normal((B, H, T, Dh)), "k": rng.standard_normal((B, H, S, Dh)),
           "v": rng.standard_normal((B, H, S, Dh)), "M": rng.uniform(0.1, 1.0, (B, N))}
    key_pad = np.zeros((B, S), bool)
    if L > 1:
        key_pad[:, L - 1] = True  # last token of document 0 is padding

    def fwd(d):
        return ops.attention_forward(d["q"], d["k"], d["v"], key_pad=key_pad, doc_mask=d["M"])

    def bwd(R, c):
        dq, dk, dv, dM = ops.attention_backward(R, c)
        return {"q": dq, "k": dk, "v": dv, "M": dM}

    check_grads(fwd, bwd, inp, rng=rng)


def _mha_inputs(rng, B, N, L, T, C):
    p = {"Wq": rng.standard_normal((C, C)) / np.sqrt(C), "bq": rng.standard_normal(C),
         "Wkv": rng.standard_normal((C, 2 * C)) / np.sqrt(C), "bkv": rng.standard_normal(2 * C),
         "Wo": rng.standard_normal((C, C)) / np.sqrt(C), "bo": rng.standard_normal(C)}
    inp = {"x": rng.standard_normal((B, T, C)), "mem": rng.standard_normal((B, N * L, C)),
           "M": rng.uniform(0.05, 1.0, (B, N)), **p}
    return inp, list(p)


def _cross(d, key_pad, n_heads=2):
    kv, ckv = ops.cross_kv_forward(d["mem"], d, n_heads)
    out, c = ops.cross_attention_forward(d["x"], kv, d, n_heads, key_pad=key_pad, doc_mask=d["M"])
    return out, (ckv, c)


def _cross_bwd(R, caches, *, param_grads=True):
    ckv, c = caches
    dx, dk, dv, dp, dM = ops.cross_attention_backward(R, c, param_grads=param_grads)
    g = {"x": dx, "M": dM}
    if param_grads:
        dmem, dpkv = ops.cross_kv_backward(dk, dv, ckv)
        g.update(mem=dmem, **dp, **dpkv)
    return g


@pytest.mark.parametrize("B,N,L,T", [(1, 1, 2, 1), (1, 3, 3, 2), (2, 3, 4, 3)])
def test_cross_attention_mha(B, N, L, T, rng):
    inp, _ = _mha_inputs(rng, B, N, L, T, C=4)
    key_pad = np.zeros((B, N * L), bool)
    key_pad[:, L - 1::L] = L > 1  # the last token of every document is padding
    check_grads(lambda d: _cross(d, key_pad), _cross_bwd, inp, rng=rng)
    # frozen path: same dx and dM, no parameter or memory gradients
    out, caches = _cross(inp, key_pad)
    R = probe(out.shape, rng)
    full, frozen = _cross_bwd(R, caches), _cross_bwd(R, caches, param_grads=False)
    assert set(frozen) == {"x", "M"}
    np.testing.assert_array_equal(frozen["M"], full["M"])
    np.testing.assert_array_equal(frozen["x"], full["x"])
    assert full["M"].shape == (B, N)


@pytest.mark.parametrize("M,causal,key_pad", [(1, False, False), (2, True, False), (3, False, True)])
def test_self_attention_mha(M, causal, key_pad, rng):
    L, C, H = 4, 6, 3
    p = {"Wqkv": rng.standard_normal((C, 3 * C)) / np.sqrt(C), "bqkv": rng.standard_normal(3 * C),
         "Wo": rng.standard_normal((C, C)) / np.sqrt(C), "bo": rng.standard_normal(C)}
    inp = {"x": rng.standard_normal((M, L, C)), **p}
    kp = None
    if key_pad:
        kp = np.zeros((M, L), bool)
        kp[:, -2:] = True

    def bwd(R, c):
        dx, dp = ops.self_attention_backward(R, c)
        return {"x": dx, **dp}

    check_grads(lambda d: ops.self_attention_forward(d["x"], d, H, key_pad=kp, causal=causal), bwd, inp,
                rng=rng)


def test_mlp(rng):
    C, F = 4, 9
    inp = {"x": rng.standard_normal((2, 3, C)), "W1": rng.standard_normal((C, F)), "b1": rng.standard_normal(F),
           "W2": rng.standard_normal((F, C)), "b2": rng.standard_normal(C)}

    def bwd(R, c):
        dx, dp = ops.mlp_backward(R, c)
        return {"x": dx, **dp}

    check_grads(lambda d: ops.mlp_forward(d["x"], d), bwd, inp, rng=rng)


@pytest.mark.parametrize("B,T", [(1, 1), (1, 3), (3, 4)])
def test_cross_entropy(B, T, rng):
    V = 7
    targets = rng.integers(1, V, size=(B, T))
    if T > 1:
        targets[0, -1] = 0  # padding
    logits = rng.standard_normal((B, T, V)) * 2
    check_grads(lambda d: ops.cross_entropy_forward(d["z"], targets, pad_id=0),
                lambda R, c: {"z": ops.cross_entropy_backward(R, c)}, {"z": logits}, rng=rng)
    loss, c = ops.cross_entropy_forward(logits, targets, pad_id=0)
    dlogits = ops.cross_entropy_backward(1.0, c)
    # against a plain loop
    lp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    nll = []
    for b in range(B):
        ts = [t for t in range(T) if targets[b, t] != 0]
        nll.append(-np.mean([lp[b, t, targets[b, t]] for t in ts]))
        for t in range(T):
            want = lp[b, t, targets[b, t]] if targets[b, t] != 0 else 0.0
            assert c.logprobs[b, t] == pytest.approx(want, rel=1e-12, abs=0)
    np.testing.assert_allclose(c.nll, nll, rtol=1e-12)
    assert loss == pytest.approx(np.mean(nll), rel=1e-12)
    if T > 1:  # padded target: no gradient at all
        assert np.all(dlogits[0, -1] == 0)


# ------------------------------------------------------------------------------------------------------
# DMA properties at the op level


def _dma(M, q, k, v, key_pad):
    return ops.attention_forward(q, k, v, key_pad=key_pad, doc_mask=M)


def test_dma_mask_gradient_finite_at_zero(rng):
    B, H, T, N, L, Dh = 2, 2, 3, 4, 3, 4
    q, k, v = (rng.standard_normal((B, H, n, Dh)) for n in (T, N * L, N * L))
    key_pad = np.zeros((B, N * L), bool)
    M = rng.uniform(0.2, 1.0, (B, N))
    M[0, 1] = 0.0
    M[1, 3] = 0.0
    out, c = _dma(M, q, k, v, key_pad)
    R = probe(out.shape, rng)
    dM = ops.attention_backward(R, c)[3]
    assert np.all(np.isfinite(dM))
    assert np.any(dM[0, 1] != 0)
    # one-sided derivative at the boundary M = 0 (forward differences, second order)
    for b, i in [(0, 1), (1, 3)]:
        def f(h):
            Mh = M.copy()
            Mh[b, i] += h
            return np.sum(_dma(Mh, q, k, v, key_pad)[0] * R)
        h = 1e-5
        fd = (-3 * f(0.0) + 4 * f(h) - f(2 * h)) / (2 * h)
        assert abs(fd - dM[b, i]) / abs(dM[b, i]) < 1e-6
    # the log-mask form (logits s + log M_doc) gives the same forward but a non-finite gradient at M = 0
    import autograd.numpy as anp

    def logform(Mx):
        s = anp.matmul(q, np.swapaxes(k, -1, -2)) / np.sqrt(Dh) + anp.log(anp.repeat(Mx, L, axis=1))[:, None, None]
        a = anp.exp(s - anp.max(s, axis=-1, keepdims=True))
        return anp.sum(anp.matmul(a / anp.sum(a, axis=-1, keepdims=True), v) * R)

    with np.errstate(divide="ignore", invalid="ignore"):
        assert logform(M) == pytest.approx(np.sum(out * R), rel=1e-12)
        assert not np.all(np.isfinite(grad(logform)(M)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dma_masked_document_far_above_kept_ones_stays_finite(dtype, rng):
    """A document with M = 0 whose logits sit far above the kept ones (here +120, past float32's exp range)
    must not turn the forward or the mask gradient into NaN/inf: it carries no weight."""
    B, H, T, N, L, Dh = 1, 1, 2, 3, 2, 2
    q = np.ones((B, H, T, Dh), dtype)
    k = np.zeros((B, H, N * L, Dh), dtype)
    k[0, 0, :L] = 120.0  # document 0: logits q.k/sqrt(Dh) = 120 * sqrt(2), far above the others (0)
    v = rng.standard_normal((B, H, N * L, Dh)).astype(dtype)
    M = np.array([[0.0, 0.5, 1.0]], dtype)
    with np.errstate(over="raise", invalid="raise"):
        out, c = ops.attention_forward(q, k, v, key_pad=np.zeros((B, N * L), bool), doc_mask=M)
        dM = ops.attention_backward(np.ones_like(out), c)[3]
    assert np.all(np.isfinite(out)) and np.all(np.isfinite(dM))
    # the kept documents' attention is exactly what it is without document 0
    ref, _ = ops.attention_forward(q, k[:, :, L:], v[:, :, L:], key_pad=np.zeros((B, (N - 1) * L), bool),
                                   doc_mask=M[:, 1:])
    np.testing.assert_allclose(out, ref, rtol=1e-6 if dtype == np.float32 else 1e-14)


def test_dma_invariances(rng):
    B, H, T, N, L, Dh = 2, 2, 3, 4, 3, 4
    q, k, v = (rng.standard_normal((B, H, n, Dh)) for n in (T, N * L, N * L))
    key_pad = np.zeros((B, N * L), bool)
    key_pad[:, 2::L] = True  # last token of each document is padding
    M = rng.uniform(0.2, 1.0, (B, N))
    out, c = _dma(M, q, k, v, key_pad)
    # scaling M changes nothing
    np.testing.assert_allclose(_dma(3.7 * M, q, k, v, key_pad)[0], out, rtol=1e-13, atol=1e-14)
    # all-ones mask == plain attention
    np.testing.assert_allclose(_dma(np.ones((B, N)), q, k, v, key_pad)[0],
                               ops.attention_forward(q, k, v, key_pad=key_pad)[0], rtol=1e-13, atol=1e-14)
    # padded keys: probability exactly 0 and their k, v do not matter, whatever M
    assert np.all(c.a[..., key_pad[0]][0] == 0) and np.all(c.a[1][..., key_pad[1]] == 0)
    k2, v2 = k.copy(), v.copy()
    k2[:, :, key_pad[0]] = 1e3 * rng.standard_normal(k2[:, :, key_pad[0]].shape)
    v2[:, :, key_pad[0]] = 1e3
    np.testing.assert_array_equal(_dma(M, q, k2, v2, key_pad)[0], out)
    # a 0/1 mask == attention over the kept documents only
    M01 = np.array([[1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0]])
    full = _dma(M01, q, k, v, key_pad)[0]
    for b in range(B):
        keep = np.repeat(M01[b] > 0, L)
        sub = ops.attention_forward(q[b:b + 1], k[b:b + 1][:, :, keep], v[b:b + 1][:, :, keep],
                                    key_pad=key_pad[b:b + 1, keep])[0]
        np.testing.assert_allclose(full[b:b + 1], sub, rtol=1e-13, atol=1e-14)


def test_plain_attention_reports_mask_gradient_at_ones(rng):
    B, H, T, N, L, Dh = 2, 2, 3, 3, 2, 4
    q, k, v = (rng.standard_normal((B, H, n, Dh)) for n in (T, N * L, N * L))
    key_pad = np.zeros((B, N * L), bool)
    key_pad[:, 1] = True
    R = probe((B, H, T, Dh), rng)
    out0, c0 = ops.attention_forward(q, k, v, key_pad=key_pad, n_docs=N)
    out1, c1 = ops.attention_forward(q, k, v, key_pad=key_pad, doc_mask=np.ones((B, N)))
    np.testing.assert_allclose(out0, out1, rtol=1e-13)
    g0, g1 = ops.attention_backward(R, c0), ops.attention_backward(R, c1)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-15)
    assert ops.attention_backward(R, ops.attention_forward(q, k, v)[1])[3] is None


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_far_negative_inputs_are_zero_without_overflow(dtype):
    """exp(-2u) overflows for very negative x (about x < -9 in float32); GELU is 0 there, with no warning."""
    x = np.array([-1e4, -300.0, -60.0, -20.0, 0.0, 3.0], dtype)
    with np.errstate(over="raise", invalid="raise"):
        y, c = ops.gelu_forward(x)
        dx = ops.gelu_backward(np.ones_like(x), c)
    assert y.dtype == dtype and np.all(np.isfinite(y)) and np.all(np.isfinite(dx))
    assert np.all(np.abs(y[:3]) < 1e-20) and np.all(np.abs(dx[:3]) < 1e-20)  # both ~ 0 there
    assert y[-1] == pytest.approx(3.0 * 0.5 * (1 + np.tanh(np.sqrt(2 / np.pi) * (3.0 + 0.044715 * 27.0))), rel=1e-6)


# ------------------------------------------------------------------------------------------------------
# temporaries: ops write only into arrays they made themselves


def _leaves(obj):
    """Every ndarray reachable from a cache (nested NamedTuples, tuples, lists)."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, (tuple, list)):
        return [a for o in obj for a in _leaves(o)]
    return []


def _op_cases(rng, dtype):
    """(name, forward thunk, backward(dout, cache), inputs) for every op that reuses its temporaries."""
    B, H, T, N, L, Dh, C = 2, 2, 3, 3, 2, 4, 4
    S = N * L
    x = rng.standard_normal((2, 3, C)).astype(dtype)
    g, b, W, b5 = (rng.standard_normal(s).astype(dtype) for s in ((C,), (C,), (C, 5), (5,)))
    q, k, v = (rng.standard_normal((B, H, n, Dh)).astype(dtype) for n in (T, S, S))
    M = rng.uniform(0.1, 1.0, (B, N)).astype(dtype)
    M[0, 1] = 0.0
    key_pad = np.zeros((B, S), bool)
    key_pad[:, L - 1] = True
    logits = rng.standard_normal((B, T, 7)).astype(dtype)
    targets = rng.integers(0, 7, (B, T))
    ids = rng.integers(0, 6, (2, 3))
    E = rng.standard_normal((6, C)).astype(dtype)
    att = lambda R, c: ops.attention_backward(R, c)  # noqa: E731
    return [
        ("linear", lambda: ops.linear_forward(x, W, b5), ops.linear_backward, (x, W, b5)),
        ("layernorm", lambda: ops.layernorm_forward(x, g, b), ops.layernorm_backward, (x, g, b)),
        ("layernorm frozen", lambda: ops.layernorm_forward(x, g, b),
         lambda R, c: ops.layernorm_backward(R, c, param_grads=False), (x, g, b)),
        ("gelu", lambda: ops.gelu_forward(x), ops.gelu_backward, (x,)),
        ("softmax", lambda: ops.softmax_forward(x), ops.softmax_backward, (x,)),
        ("log_softmax", lambda: ops.log_softmax_forward(x), ops.log_softmax_backward, (x,)),
        ("attention", lambda: ops.attention_forward(q, k, v), att, (q, k, v)),
        ("attention key_pad causal", lambda: ops.attention_forward(q, k[:, :, :T], v[:, :, :T], causal=True,
                                                                    key_pad=key_pad[:, :T]), att, (q, k, v)),
        ("attention DMA", lambda: ops.attention_forward(q, k, v, key_pad=key_pad, doc_mask=M), att, (q, k, v, M)),
        ("attention DMA frozen", lambda: ops.attention_forward(q, k, v, key_pad=key_pad, doc_mask=M),
         lambda R, c: ops.attention_backward(R, c, need_kv=False), (q, k, v, M)),
        ("cross_entropy", lambda: ops.cross_entropy_forward(logits, targets), ops.cross_entropy_backward,
         (logits, targets)),
        ("embedding", lambda: ops.embedding_forward(ids, E), ops.embedding_backward, (ids, E)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_ops_never_write_into_inputs_dout_or_cache(dtype, rng):
    """The forwards reuse only the temporaries they allocate, the backwards never touch dout or the cache:
    inputs, the output and the cache are unchanged by a backward, and a second backward on the same cache
    gives the same gradients bit for bit."""
    for name, fwd, bwd, inputs in _op_cases(rng, dtype):
        before = [a.copy() for a in inputs]
        out, cache = fwd()
        for a, a0 in zip(inputs, before):
            np.testing.assert_array_equal(a, a0, err_msg=f"{name}: the forward wrote into an input")
        leaves = _leaves(cache)
        leaves0 = [a.copy() for a in leaves]
        out0 = np.array(out, copy=True)
        R = 1.0 if np.ndim(out) == 0 else probe(np.shape(out), rng).astype(dtype)
        R0 = np.array(R, copy=True)
        g1 = _leaves(bwd(R, cache))
        g2 = _leaves(bwd(R, cache))
        np.testing.assert_array_equal(R, R0, err_msg=f"{name}: the backward wrote into dout")
        np.testing.assert_array_equal(out, out0, err_msg=f"{name}: the backward wrote into the output")
        for a, a0 in zip(leaves, leaves0):
            np.testing.assert_array_equal(a, a0, err_msg=f"{name}: the backward wrote into the cache")
        assert len(g1) == len(g2) and g1, name
        for a, a2 in zip(g1, g2):
            assert a.dtype == dtype, f"{name}: gradient dtype {a.dtype}, expected {np.dtype(dtype)}"
            np.testing.assert_array_equal(a, a2, err_msg=f"{name}: a second backward differs")


def test_own_allows_writes_only_untraced_and_of_one_dtype():
    from autograd.tracer import new_box

    x32, x64 = np.ones(3, np.float32), np.ones(3)
    assert ops._own(x64, x64, None, 2.0)
    assert not ops._own(x32, x64)  # the out-of-place result would be float64
    assert not ops._own(x64, new_box(x64, 0, None))  # autograd is tracing


def test_attention_backward_writes_into_out(rng):
    """attention_backward(out=...) fills the given (B, H, ., Dh) views, with the same values as without."""
    B, H, T, S, Dh = 2, 2, 3, 4, 3
    q, k, v = (rng.standard_normal((B, H, n, Dh)) for n in (T, S, S))
    out, c = ops.attention_forward(q, k, v)
    R = probe(out.shape, rng)
    ref = ops.attention_backward(R, c)[:3]
    views = [np.zeros((B, n, H, Dh)).transpose(0, 2, 1, 3) for n in (T, S, S)]
    got = ops.attention_backward(R, c, out=views)[:3]
    for g, w, r in zip(got, views, ref):
        assert g is w
        np.testing.assert_array_equal(w, r)


def test_cross_entropy_backward_keeps_the_logits_dtype(rng):
    """A float64 dloss (a NumPy scalar) must not turn a float32 model's gradient into float64."""
    logits = rng.standard_normal((2, 3, 5)).astype(np.float32)
    _, c = ops.cross_entropy_forward(logits, rng.integers(1, 5, (2, 3)))
    for dloss in (1.0, np.float64(0.5), np.float32(2.0)):
        d = ops.cross_entropy_backward(dloss, c)
        assert d.dtype == np.float32
        np.testing.assert_allclose(d, float(dloss) * ops.cross_entropy_backward(1.0, c), rtol=1e-6)


def test_logsumexp_matches_its_closed_form_at_every_scale():
    """scipy's logsumexp on ordinary, huge and padded rows; a row of -inf gives -inf, not NaN; keepdims; and its
    autograd gradient is the softmax (the one identity its callers rely on)."""
    from scipy.special import logsumexp as ref

    from mini_gumbel.ops import logsumexp

    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5)) * np.array([[1.0], [1e300], [30.0]])
    x[2, 1] = -np.inf
    for axis in (0, 1, -1):
        np.testing.assert_allclose(logsumexp(x, axis=axis), ref(x, axis=axis), rtol=1e-15)
    assert logsumexp(x, axis=1, keepdims=True).shape == (3, 1)
    pad = np.full((2, 4), -np.inf)
    with np.errstate(divide="ignore"):
        assert np.all(logsumexp(pad, axis=1) == -np.inf)
    import autograd

    y = rng.standard_normal((2, 6))
    g = autograd.grad(lambda v: (logsumexp(v, axis=1) * np.array([1.0, 2.0])).sum())(y)
    sm = np.exp(y - ref(y, axis=1, keepdims=True))
    np.testing.assert_allclose(g, sm * np.array([[1.0], [2.0]]), rtol=1e-13)
