"""The CuPy path, on every run: the whole differentiable path on device arrays against the same code on NumPy.

Every test here is marked ``gpu``. On a machine with a CUDA device it runs on CuPy; everywhere else on the strict
stand-in ``tests/device_standin.py`` (conftest installs it as ``cupy`` around each of these tests), which refuses
what CuPy refuses (implicit conversion to NumPy, NumPy arrays mixed into device expressions) and NumPy calls on
device arrays, and counts every device->host synchronisation and host->device copy.

Each case runs a function on NumPy inputs and on device copies of them, and checks that

* every array it returns is a device array (0-d ones included: reductions stay on the device),
* each equals the NumPy result: norm-wise relative error <= 1e-12 in float64 (``TOL``), integers exactly,
  same shapes and dtypes (on the stand-in the arithmetic is NumPy's own, so the results are bit-identical;
  on a GPU this is where CUDA kernels' round-off would show),
* it makes no hidden transfer: no host->device copy (its inputs are already on the device; the one exception,
  the Gumbel noise drawn on the host by design, is counted and asserted), and, for the transformer primitives
  in ``ops``, no device->host synchronisation at all. The models validate their inputs at the boundary (a few
  ``bool(xp.all(...))``, one each); the number of those synchronisations must not grow with the batch, the
  number of documents, the sequence length or the number of layers (``test_syncs_do_not_grow_with_the_sizes``).

The bench's CuPy section and notebook 11's CuPy cells also run here at a tiny size; on the stand-in their
"GPU times" are host clock readings of NumPy code and mean nothing. Speed, and CUDA kernels' round-off, only a
real GPU can tell: ``tools/gpu_check.sh``.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import math
import sys
from collections import namedtuple
from pathlib import Path

import numpy as np
import pytest

import reader_batches
from mini_gumbel import (estimators, gumbel, gumbel_reranking, hard_subsets, listwise_reranker, losses, objective, ops,
                         optim, reader, reranker, two_pass_reader)
from mini_gumbel.backend import asarray_on, get_xp, is_cupy
from mini_gumbel.data import make_dataset
from mini_gumbel.experiment.configs import default_reader_config
from mini_gumbel.experiment.readers import reader_inputs
from mini_gumbel.gradcheck import rel_error
from reader_batches import tiny_world

gpu = pytest.mark.gpu
TOL = 1e-12
ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------------
# helpers: trees of arrays to and from the device, comparison, transfer counting


def leaves(tree, path="out"):
    """(path, leaf) for every leaf of nested tuples (named ones by field), lists and dicts."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from leaves(v, f"{path}[{k!r}]")
    elif isinstance(tree, tuple) and hasattr(tree, "_fields"):
        for k, v in zip(tree._fields, tree):
            yield from leaves(v, f"{path}.{k}")
    elif isinstance(tree, (tuple, list)):
        for i, v in enumerate(tree):
            yield from leaves(v, f"{path}[{i}]")
    else:
        yield path, tree


def tmap(fn, tree):
    if isinstance(tree, dict):
        return {k: tmap(fn, v) for k, v in tree.items()}
    if isinstance(tree, tuple) and hasattr(tree, "_fields"):
        return type(tree)(*(tmap(fn, v) for v in tree))
    if isinstance(tree, (tuple, list)):
        return type(tree)(tmap(fn, v) for v in tree)
    return fn(tree)


def dev(cp, tree):
    """NumPy arrays (and NumPy scalars) of ``tree`` copied to the device; everything else as it is."""
    return tmap(lambda a: cp.asarray(a) if isinstance(a, np.ndarray) else a, tree)


def host(tree):
    return tmap(lambda a: a.get() if is_cupy(a) else a, tree)


def assert_parity(out_dev, out_np, tol=TOL):
    """Every array of out_dev is a device array and equals out_np's (norm-wise <= tol; integers and bools exactly);
    everything else is equal."""
    d_leaves, n_leaves = list(leaves(out_dev)), list(leaves(out_np))
    assert [p for p, _ in d_leaves] == [p for p, _ in n_leaves], "the device and NumPy results differ in structure"
    for (path, d), (_, n) in zip(d_leaves, n_leaves):
        if isinstance(n, (np.ndarray, np.generic)):
            assert is_cupy(d), f"{path}: a {type(d).__module__}.{type(d).__name__} where a device array was expected"
            h = d.get()
            assert h.shape == np.shape(n) and h.dtype == n.dtype, (path, h.shape, h.dtype, np.shape(n), n.dtype)
            if n.dtype.kind in "fc":
                fin = np.isfinite(n)
                np.testing.assert_array_equal(np.isfinite(h), fin, err_msg=path)
                np.testing.assert_array_equal(h[~fin], n[~fin], err_msg=path)  # the same infinities
                err = rel_error(np.where(fin, h, 0.0), np.where(fin, n, 0.0))
                assert err <= tol, f"{path}: relative error {err:.2e} > {tol:g}"
            else:
                np.testing.assert_array_equal(h, n, err_msg=path)
        else:
            assert not is_cupy(d), f"{path}: a device array where NumPy returns {type(n).__name__}"
            if isinstance(n, float) and math.isnan(n):
                assert math.isnan(d), path
            else:
                assert d == n or (isinstance(n, float) and abs(d - n) <= tol * abs(n)), (path, d, n)


def on_standin(cp) -> bool:
    return getattr(cp, "IS_STANDIN", False)


@contextlib.contextmanager
def transfers(cp):
    """The stand-in's transfer counter over the block (None on real CuPy, which cannot count)."""
    if not on_standin(cp):
        yield None
        return
    with cp.count_transfers() as t:
        yield t


def check(cp, fn, *args, h2d=0, d2h=None):
    """fn(*args) on NumPy and fn(*device copies of args): parity, and the transfers fn made (the copies are made
    before counting). d2h: the exact number of device->host synchronisations allowed, or None (not checked
    here). Returns (device result, NumPy result, transfers or None)."""
    out_np = fn(*args)
    dargs = dev(cp, args)
    with transfers(cp) as t:
        out_dev = fn(*dargs)
    assert_parity(out_dev, out_np)
    if t is not None:
        if h2d is not None:
            assert t.h2d == h2d, f"{t.h2d} host->device copies, {h2d} expected:\n{t.report()}"
        if d2h is not None:
            assert t.d2h == d2h, f"{t.d2h} device->host synchronisations, {d2h} expected:\n{t.report()}"
    return out_dev, out_np, t


def rows(rng, *shape):
    return rng.standard_normal(shape)


# ---------------------------------------------------------------------------------------------------------
# the backend, the stand-in itself


@gpu
def test_backend_dispatch_and_refusals(cp):
    a = cp.ones(3)
    assert get_xp(a) is cp and get_xp(a, 2.0, None) is cp
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
        get_xp(a, np.ones(3))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(a)
    with pytest.raises(TypeError):
        a + np.ones(3)  # a NumPy array in a device expression
    b = a * np.float64(2.0) + 1  # NumPy and Python scalars are fine
    assert is_cupy(b) and b.get().tolist() == [3.0, 3.0, 3.0]
    if on_standin(cp):  # the stand-in is stricter than CuPy: no NumPy call on a device array
        with pytest.raises(TypeError, match="numpy.exp called on a device array"):
            np.exp(a)
        with pytest.raises(TypeError, match="numpy.concatenate called on a device array"):
            np.concatenate([a, a])


@gpu
def test_on_host_moves_device_arguments_and_results(cp):
    from mini_gumbel.backend import on_host

    seen = []

    @on_host
    def f(a, pair, *, d):
        seen.append([type(x) for x in (a, pair[0], d["x"])])
        return a + d["x"], {"s": np.float64(2.0) * pair[0], "n": 3}, 1.5

    a, b, x = (cp.asarray([v]) for v in (1.0, 2.0, 3.0))
    with transfers(cp) as t:
        out = f(a, (b, "tag"), d={"x": x})
    assert seen[-1] == [np.ndarray] * 3  # the function itself only ever sees NumPy
    assert is_cupy(out[0]) and is_cupy(out[1]["s"]) and out[1]["n"] == 3 and out[2] == 1.5
    assert out[0].get().tolist() == [4.0] and out[1]["s"].get().tolist() == [4.0]
    if t is not None:
        assert t.kinds == {"d2h:get": 3, "h2d:asarray": 2}, t.report()
    host_out = f(np.ones(1), (np.ones(1), None), d={"x": np.ones(1)})  # no device argument: nothing moves
    assert isinstance(host_out[0], np.ndarray)


@gpu
def test_standin_counts_what_syncs(cp):
    if not on_standin(cp):
        pytest.skip("counting transfers needs the stand-in; on CuPy the other tests check the results only")
    x = cp.asarray(np.arange(6.0))
    with cp.count_transfers() as t:
        float(cp.sum(x)), bool(cp.all(x >= 0)), int(cp.count_nonzero(x)), x.get(), x[1].item()
        cp.flatnonzero(x > 2), x[x > 2], x[np.array([0, 1])], cp.asarray(np.ones(2))
    assert t.kinds == {"d2h:float": 1, "d2h:bool": 1, "d2h:int": 1, "d2h:get": 1, "d2h:item": 1,
                       "d2h:flatnonzero": 1, "d2h:mask-index": 1, "h2d:index": 1, "h2d:asarray": 1}
    assert all("test_device.py" in ev.where for ev in t.log)


# ---------------------------------------------------------------------------------------------------------
# gumbel: noise, the exact top-K, every relaxation (more in test_gumbel_limits: padding, no noise)


@gpu
@pytest.mark.parametrize("relaxation", gumbel.RELAXATIONS)
def test_relaxed_topk_on_device(cp, relaxation):
    rng = np.random.default_rng(3)
    B, N, K = 4, 9, 3
    w, R = rows(rng, B, N), rows(rng, B, N)
    w[1, :2] = -np.inf
    G = gumbel.gumbel_noise((B, K, N) if relaxation == "max" else (B, N), np.random.default_rng(4))
    Gd = gumbel.gumbel_noise(G.shape, np.random.default_rng(4), xp=cp)
    assert is_cupy(Gd) and np.array_equal(Gd.get(), G)

    def run(w, G, R):
        M, c = gumbel.relaxed_topk_forward(w, G, K, tau=0.3, kappa=1.7, relaxation=relaxation)
        return M, gumbel.relaxed_topk_backward(R, c), gumbel.topk_mask(w, K)

    # forward and backward validate the scores and dscores (a few syncs each); no host array is involved
    check(cp, run, w, G, R)


@gpu
def test_max_backward_saturated_rows_on_device(cp):
    """The rows the max backward redoes (draws within rounding of one-hot, ties among them included) on device
    arrays: the same numbers as on NumPy, and a sync count that does not depend on how many rows are redone."""
    rng = np.random.default_rng(0)
    B, N, K = 6, 8, 3
    w, R = rows(rng, B, N), rows(rng, B, N)
    G = gumbel.gumbel_noise((B, K, N), np.random.default_rng(1))
    G[0, 1:] = G[0, :1]  # three identical draws: exact ties at every item
    w[1] = 0.0
    G[1, :, :2] = [[0.5, 0.0], [0.0, 0.4], [0.1, 0.3]]  # two draws saturated toward different items

    def run(w, G, R, tau):
        _, c = gumbel.relaxed_topk_forward(w, G, K, tau=tau, kappa=6.88)
        return gumbel.relaxed_topk_backward(R, c)

    syncs = [check(cp, run, w, G, R, tau)[2] for tau in (1.0, 0.01)]  # no row redone, most rows redone
    if syncs[0] is not None:
        assert syncs[1].d2h <= syncs[0].d2h + 4, (syncs[0].report(), syncs[1].report())


# ---------------------------------------------------------------------------------------------------------
# ops: every forward/backward pair; the primitives validate nothing, so they make no transfer at all

B_, H_, T_, N_, L_, C_, V_ = 2, 2, 3, 3, 4, 8, 11
S_ = N_ * L_


def _attn_inputs(rng):
    q, k, v = rows(rng, B_, H_, T_, C_ // H_), rows(rng, B_, H_, S_, C_ // H_), rows(rng, B_, H_, S_, C_ // H_)
    pad = np.zeros((B_, S_), bool)
    pad[:, L_ - 1::L_] = True  # the last token of every document
    return q, k, v, pad, rng.uniform(0.1, 1.0, (B_, N_)), rows(rng, B_, H_, T_, C_ // H_)


def _lin(rng, cin, cout, prefix=""):
    return {prefix + "W": rows(rng, cin, cout) / np.sqrt(cin), prefix + "b": 0.1 * rows(rng, cout)}


def _op_embedding(ids, W, dout):
    out, c = ops.embedding_forward(ids, W)
    return out, ops.embedding_backward(dout, c)


def _op_linear(x, W, b, dout):
    out, c = ops.linear_forward(x, W, b)
    out0, c0 = ops.linear_forward(x, W)  # no bias
    return out, ops.linear_backward(dout, c), out0, ops.linear_backward(dout, c0, param_grads=False)


def _op_layernorm(x, g, b, dout):
    out, c = ops.layernorm_forward(x, g, b)
    return out, ops.layernorm_backward(dout, c), ops.layernorm_backward(dout, c, param_grads=False)


def _op_gelu(x, dout):
    out, c = ops.gelu_forward(x)
    return out, ops.gelu_backward(dout, c)


def _op_softmax(x, dout):
    y, c = ops.softmax_forward(x)
    ly, lc = ops.log_softmax_forward(x)
    return (y, ops.softmax_backward(dout, c), ly, ops.log_softmax_backward(dout, lc), ops.logsumexp(x),
            ops.logsumexp(x, axis=0, keepdims=True))


def _op_attention(q, k, v, pad, M, dout):
    outs = []
    for kw in ({}, {"key_pad": pad, "causal": True}, {"key_pad": pad, "doc_mask": M}, {"n_docs": N_}):
        out, c = ops.attention_forward(q, k, v, **kw)
        outs.append((out, ops.attention_backward(dout, c), ops.attention_backward(dout, c, need_kv=False)))
    return outs


def _op_self_attention(x, p, pad, dout):
    out, c = ops.self_attention_forward(x, p, H_, key_pad=pad)
    outc, cc = ops.self_attention_forward(x, p, H_, causal=True)
    return (out, ops.self_attention_backward(dout, c), outc, ops.self_attention_backward(dout, cc, param_grads=False),
            ops.merge_heads(ops.split_heads(x, H_)))


def _op_cross_attention(x, mem, p, pad, M, dout):
    kv, ckv = ops.cross_kv_forward(mem, p, H_)
    out, c = ops.cross_attention_forward(x, kv, p, H_, key_pad=pad, doc_mask=M)
    dx, dk, dv, dp, dM = ops.cross_attention_backward(dout, c)
    frozen = ops.cross_attention_backward(dout, c, param_grads=False)
    return (kv, out, (dx, dk, dv, dp, dM), frozen, ops.cross_kv_backward(dk, dv, ckv),
            ops.cross_kv_backward(dk, dv, ckv, param_grads=False), ops.cross_attention_record(c))


def _op_mlp(x, p, dout):
    out, c = ops.mlp_forward(x, p)
    return out, ops.mlp_backward(dout, c), ops.mlp_backward(dout, c, param_grads=False)


def _op_cross_entropy(logits, targets):
    loss, c = ops.cross_entropy_forward(logits, targets, pad_id=0)
    return loss, c.logprobs, c.nll, ops.cross_entropy_backward(1.0, c), ops.cross_entropy_backward(0.5, c)


def _targets(rng):
    t = rng.integers(1, V_, (B_, T_))
    t[0, -1] = 0  # a padded target
    return t


OP_CASES = {  # name -> (function, inputs from a Generator, the public ops it calls)
    "embedding": (_op_embedding, lambda r: (r.integers(0, V_, (B_, T_)), rows(r, V_, C_), rows(r, B_, T_, C_)),
                  ("embedding_forward", "embedding_backward")),
    "linear": (_op_linear, lambda r: (rows(r, B_, T_, C_), rows(r, C_, 5), rows(r, 5), rows(r, B_, T_, 5)),
               ("linear_forward", "linear_backward")),
    "layernorm": (_op_layernorm, lambda r: (rows(r, B_, T_, C_), 1 + 0.1 * rows(r, C_), 0.1 * rows(r, C_),
                                            rows(r, B_, T_, C_)), ("layernorm_forward", "layernorm_backward")),
    "gelu": (_op_gelu, lambda r: (3 * rows(r, B_, T_, C_), rows(r, B_, T_, C_)), ("gelu_forward", "gelu_backward")),
    "softmax": (_op_softmax, lambda r: (rows(r, B_, T_, V_), rows(r, B_, T_, V_)),
                ("softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward", "logsumexp")),
    "attention": (_op_attention, _attn_inputs, ("attention_forward", "attention_backward")),
    "self_attention": (_op_self_attention, lambda r: (rows(r, B_, L_, C_), {**_lin(r, C_, 3 * C_, "qkv."), **_lin(
        r, C_, C_, "o.")}, np.arange(L_)[None, :].repeat(B_, 0) == L_ - 1, rows(r, B_, L_, C_)),
        ("self_attention_forward", "self_attention_backward", "split_heads", "merge_heads")),
    "cross_attention": (_op_cross_attention, lambda r: (
        rows(r, B_, T_, C_), rows(r, B_, S_, C_), {**_lin(r, C_, C_, "q"), **_lin(r, C_, 2 * C_, "kv"),
                                                  **_lin(r, C_, C_, "o")}, _attn_inputs(r)[3],
        r.uniform(0.1, 1.0, (B_, N_)), rows(r, B_, T_, C_)),
        ("cross_kv_forward", "cross_kv_backward", "cross_attention_forward", "cross_attention_backward",
         "cross_attention_record")),
    "mlp": (_op_mlp, lambda r: (rows(r, B_, T_, C_), {**_lin(r, C_, 16, "1"), **_lin(r, 16, C_, "2")},
                                rows(r, B_, T_, C_)), ("mlp_forward", "mlp_backward")),
    "cross_entropy": (_op_cross_entropy, lambda r: (rows(r, B_, T_, V_), _targets(r)),
                      ("cross_entropy_forward", "cross_entropy_backward")),
}


def _rename(p):
    """The parameter names ops expects, from the short ones the cases draw."""
    names = {"qkv.W": "Wqkv", "qkv.b": "bqkv", "o.W": "Wo", "o.b": "bo", "qW": "Wq", "qb": "bq", "kvW": "Wkv",
             "kvb": "bkv", "oW": "Wo", "ob": "bo", "1W": "W1", "1b": "b1", "2W": "W2", "2b": "b2"}
    return {names[k]: v for k, v in p.items()} if isinstance(p, dict) else p


@gpu
@pytest.mark.parametrize("name", OP_CASES)
def test_op_on_device_makes_no_transfer(cp, name):
    fn, make, _ = OP_CASES[name]
    args = tuple(_rename(a) for a in make(np.random.default_rng(11)))
    check(cp, fn, *args, d2h=0)


# ---------------------------------------------------------------------------------------------------------
# the FiD reader

RV = 13
RCFG = reader.ReaderConfig(vocab_size=RV, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=2, d_ff=12, max_ctx_len=6,
                           max_ans_len=4)
RCFG_EM = RCFG.__class__(**{**RCFG.__dict__, "exact_match": True})


def _reader_params(cfg, seed=0):
    P = reader.init_reader(cfg, seed)
    rng = np.random.default_rng(7)  # nonzero biases and gains
    return {k: (v + 0.1 * rng.standard_normal(v.shape) if v.ndim == 1 else v) for k, v in P.items()}


def _reader_batch(seed=5, B=2, N=3, L=5, T=3):
    return reader_batches.make_batch(np.random.default_rng(seed), RV, RCFG.bos_id, B=B, N=N, L=L, T=T)


def _reader_train(P, ctx, ai, ao, M):
    loss, c = reader.reader_forward(P, RCFG, ctx, ai, ao, M)
    loss1, c1 = reader.reader_forward(P, RCFG, ctx, ai, ao)  # mask None: the gradient at M = 1
    dlogits = c.logits * 0.01
    return (loss, c.logprobs, c.nll, c.logits, reader.reader_backward(1.0, c), reader.reader_backward(0.5, c,
            param_grads=False), loss1, reader.reader_backward(1.0, c1), reader.reader_logits_backward(dlogits, c),
            reader.reader_logits_backward(dlogits, c, param_grads=False))


def _reader_flags(P, ctx, ai, ao, M, flags):
    loss, c = reader.reader_forward(P, RCFG_EM, ctx, ai, ao, M, flags=flags, need_attn=True)
    return (loss, reader.reader_backward(1.0, c, flag_grads=True), reader.reader_backward(1.0, c, param_grads=False,
            flag_grads=True), c.xattn, c.key_pad, reader.reader_encode(P, RCFG_EM, ctx, flags))


def _reader_memory(P, ctx, ai, ao, M, idx):
    mem = reader.reader_memory(P, RCFG, ctx)
    sub = mem.take(idx)
    loss, c = reader.reader_forward(P, RCFG, ctx[idx], ai[idx], ao[idx], M[idx], memory=sub)
    both = reader.ReaderMemory.concat([mem.take(idx[:1]), mem.take(idx[1:])])
    return (mem.kv, mem.key_pad, sub.split(), loss, c.nll, reader.reader_backward(1.0, c, param_grads=False),
            both.kv, both.key_pad, both.nbytes)


def _reader_decode(P, ctx, M):
    mem = reader.reader_memory(P, RCFG, ctx)
    return (reader.greedy_decode(P, RCFG, ctx, M), reader.greedy_decode(P, RCFG, ctx, M, max_len=2, memory=mem),
            reader.greedy_decode(P, RCFG, ctx))


@gpu
def test_reader_forward_backward_on_device(cp):
    ctx, ai, ao, M = _reader_batch()
    check(cp, _reader_train, _reader_params(RCFG), ctx, ai, ao, M)


@gpu
def test_reader_exact_match_flags_and_attention_records_on_device(cp):
    ctx, ai, ao, M = _reader_batch(seed=6)
    flags = np.random.default_rng(1).uniform(0.1, 0.9, ctx.shape)
    check(cp, _reader_flags, _reader_params(RCFG_EM), ctx, ai, ao, M, flags)


@gpu
def test_reader_memory_on_device(cp):
    ctx, ai, ao, M = _reader_batch(seed=8, B=4)
    check(cp, _reader_memory, _reader_params(RCFG), ctx, ai, ao, M, np.array([3, 0, 2]))


@gpu
def test_greedy_decode_on_device(cp):
    ctx, _, _, M = _reader_batch(seed=9, B=3)
    check(cp, _reader_decode, _reader_params(RCFG), ctx, M)


# ---------------------------------------------------------------------------------------------------------
# the two-pass reader

ENT, SEP = 3, 4


def _two_pass_batch(seed=12, hops=(1, 2, 2, 1), N=3, Ld=3, T=3):
    rng = np.random.default_rng(seed)
    hops = np.array(hops)
    B = len(hops)
    docs = rng.integers(5, RV, (B, N, Ld))
    docs[:, -1, -1] = 0
    words1, words2, e1 = rng.integers(5, RV, B), rng.integers(5, RV, B), docs[:, 0, 0].copy()

    def answer():
        a_in, a_out = rng.integers(5, RV, (B, T)), rng.integers(5, RV, (B, T))
        a_in[:, 0] = RCFG.bos_id
        a_out[0, -1] = 0
        return a_in, a_out

    return docs, words1, words2, e1, answer(), answer(), rng.uniform(0.1, 1.0, (B, N))


def _make_two_pass(docs, w1, w2, e1, a1, a2, hops):
    tp = two_pass_reader
    ctx1 = tp.read_ctx(docs, w1, ent_id=ENT, sep_id=SEP)
    ctx2 = tp.read_ctx(docs, w2, ent_id=ENT, sep_id=SEP)
    return tp.TwoPassBatch(ctx1, tp.entity_flags(ctx1, e1), a1[0], a1[1], ctx2, a2[0], a2[1], hops)


def _two_pass_run(P, docs, w1, w2, e1, a1, a2, hops, M, idx):
    tp = two_pass_reader
    batch = _make_two_pass(docs, w1, w2, e1, a1, a2, hops)
    loss, c = tp.two_pass_forward(P, RCFG_EM, batch, M)
    mem = tp.two_pass_memory(P, RCFG_EM, batch)
    sub = tp.TwoPassBatch(*(a[idx] for a in batch))
    loss_m, c_m = tp.two_pass_forward(P, RCFG_EM, sub, M[idx], memory1=mem.take(idx))
    p1 = tp.two_pass_first_hop(P, RCFG_EM, batch.ctx1, batch.flags1, M)
    soft = tp.soft_flags(batch.ctx2, p1, pad_id=0)
    return (batch, loss, c.logprobs, c.nll, c.p1, c.flags2, tp.two_pass_backward(1.0, c),
            tp.two_pass_backward(1.0, c, param_grads=True), loss_m, tp.two_pass_backward(1.0, c_m), p1, soft,
            tp.soft_flags_backward(soft * 0.5 + 0.1, batch.ctx2, RV, pad_id=0))


def _two_pass_decode(P, docs, w1, w2, e1, a1, a2, hops, M):
    tp = two_pass_reader
    batch = _make_two_pass(docs, w1, w2, e1, a1, a2, hops)
    mem = tp.two_pass_memory(P, RCFG_EM, batch)
    return (tp.two_pass_decode(P, RCFG_EM, batch.ctx1, batch.flags1, batch.ctx2, hops, M),
            tp.two_pass_decode(P, RCFG_EM, batch.ctx1, None, batch.ctx2, hops, M, max_len=2, memory1=mem))


@gpu
def test_two_pass_forward_backward_on_device(cp):
    docs, w1, w2, e1, a1, a2, M = _two_pass_batch()
    check(cp, _two_pass_run, _reader_params(RCFG_EM), docs, w1, w2, e1, a1, a2, np.array([1, 2, 2, 1]), M,
          np.array([2, 0, 3]))


@gpu
@pytest.mark.parametrize("hops", [(1, 2, 2, 1), (1, 1, 1, 1), (2, 2, 2, 2)], ids=["mixed", "one-hop", "two-hop"])
def test_two_pass_decode_on_device(cp, hops):
    docs, w1, w2, e1, a1, a2, M = _two_pass_batch(seed=13)
    check(cp, _two_pass_decode, _reader_params(RCFG_EM), docs, w1, w2, e1, a1, a2, np.array(hops), M)


# ---------------------------------------------------------------------------------------------------------
# the reranker and the whole Gumbel Reranking step

DATA = tiny_world(n_train=40, n_dev=5, n_test=5, k=3)
FidInputs = namedtuple("FidInputs", "ctx ans_in ans_out")


@pytest.fixture(scope="module")
def dataset():
    return make_dataset(DATA, 0)


def _step_setup(dataset, reader_kind, n=6, layers=1):
    b = dataset.train.batch(np.arange(n))
    cfg = default_reader_config(DATA, reader_kind, d_model=16, d_ff=32, n_enc_layers=layers, n_dec_layers=layers)
    x = reader_inputs(b, cfg)
    if reader_kind == "fid":  # the Dataset batch carries more than the reader reads
        x = FidInputs(x.ctx, x.ans_in, x.ans_out)
    return b, cfg, reader.init_reader(cfg, 1), x, reranker.init_reranker(len(dataset.vocab), 8, 2, init="random")


@gpu
def test_reranker_on_device(cp, dataset):
    b = dataset.train.batch(np.arange(5))
    valid = np.ones(b.docs.shape[:2], bool)
    valid[1, -2:] = False

    def run(P, q, docs, valid, dscores):
        s, c = reranker.reranker_forward(P, q, docs, valid=valid)
        return s, reranker.reranker_backward(dscores, c), gumbel_reranking.rerank(P, q, docs, 3)

    P = reranker.init_reranker(len(dataset.vocab), 8, 2, init="random")
    check(cp, run, P, b.question, b.docs, valid, rows(np.random.default_rng(2), *valid.shape))


@gpu
def test_listwise_reranker_on_device(cp, dataset):
    """The set-aware reranker away from its initialisation (U, a != 0), with padded candidates."""
    b = dataset.train.batch(np.arange(5))
    valid = np.ones(b.docs.shape[:2], bool)
    valid[1, -2:] = valid[3, 1:] = False  # row 3: one candidate, no context
    rng = np.random.default_rng(5)
    P = listwise_reranker.init_listwise_reranker(len(dataset.vocab), 8, 2, init="random")
    P["U"], P["a"] = rows(rng, 8, 8), 0.5 * rows(rng, 8)

    def run(P, q, docs, valid, dscores):
        s, c = listwise_reranker.listwise_reranker_forward(P, q, docs, valid=valid, beta=1.5)
        return s, listwise_reranker.listwise_reranker_backward(dscores, c)

    check(cp, run, P, b.question, b.docs, valid, rows(rng, *valid.shape))


@gpu
@pytest.mark.parametrize("relaxation", gumbel.RELAXATIONS)
@pytest.mark.parametrize("reader_kind", ["two_pass", "fid"])
@pytest.mark.parametrize("use_memory", [False, True], ids=["memory=None", "memory"])
def test_gumbel_reranking_step_on_device(cp, dataset, reader_kind, relaxation, use_memory):
    """The whole training step on device arrays; its one host->device copy is the Gumbel noise, drawn on the
    host from the seeded Generator by design (the same noise on every backend)."""
    b, cfg, rp, x, ranker = _step_setup(dataset, reader_kind)

    def step(ranker, q, docs, rp, x, memory):
        return gumbel_reranking.gumbel_reranking_step(ranker, q, docs, rp, cfg, x, np.random.default_rng(7), k=3,
                                                      tau=0.5, kappa=1.3, relaxation=relaxation, memory=memory)

    memory = None
    if use_memory:  # computed once per example, outside the step
        memory = gumbel_reranking.reader_memory_of(rp, cfg, x)
        memory_dev = gumbel_reranking.reader_memory_of(dev(cp, rp), cfg, dev(cp, x))
        assert_parity(memory_dev, memory)
    check(cp, step, ranker, b.question, b.docs, rp, x, memory, h2d=1)


@gpu
def test_gumbel_reranking_loss_without_noise_makes_no_copy(cp, dataset):
    b, cfg, rp, x, ranker = _step_setup(dataset, "fid")
    scores, _ = reranker.reranker_forward(ranker, b.question, b.docs)

    def loss(scores, rp, x):
        return gumbel_reranking.gumbel_reranking_loss(scores, x, rp, cfg, None, k=3, tau=0.5, noise=False)

    check(cp, loss, scores, rp, x, h2d=0)


def _step_syncs(cp, dataset, reader_kind, n, layers):
    b, cfg, rp, x, ranker = _step_setup(dataset, reader_kind, n=n, layers=layers)
    args = dev(cp, (ranker, b.question, b.docs, rp, cfg, x))
    with cp.count_transfers() as t:
        gumbel_reranking.gumbel_reranking_step(*args, np.random.default_rng(7), k=3, tau=0.5)
    return t


@gpu
@pytest.mark.parametrize("reader_kind", ["two_pass", "fid"])
def test_syncs_do_not_grow_with_the_sizes(cp, dataset, reader_kind):
    """One training step's device->host synchronisations are its input validation, a fixed number: the same for a
    batch of 6 in a one-layer reader and a batch of 16 in a three-layer one, both with single- and two-hop
    questions (a sync per row, per layer or per document would show here); and a single host->device copy, the
    noise."""
    if not on_standin(cp):
        pytest.skip("counting transfers needs the stand-in")
    small, big = _step_syncs(cp, dataset, reader_kind, 6, 1), _step_syncs(cp, dataset, reader_kind, 16, 3)
    assert small.kinds == big.kinds, f"small step:\n{small.report()}\nbig step:\n{big.report()}"
    assert small.h2d == 1 and small.kinds["h2d:asarray"] == 1
    assert small.d2h <= 60, small.report()  # 22 (FiD) and 49 (two-pass) when this was written


# ---------------------------------------------------------------------------------------------------------
# the baselines' losses and teachers


def _loss_inputs(seed=21, B=3, N=5, T=4):
    rng = np.random.default_rng(seed)
    s = 3 * rows(rng, B, N)
    s[1, -1] = -np.inf  # a padded candidate
    gold = np.zeros((B, N), bool)
    gold[0, [0, 2]], gold[2, 1] = True, True  # row 1 has no gold: excluded from the mean
    lp = -rng.uniform(0.05, 3.0, (B, N, T))
    tm = np.ones((B, T), bool)
    tm[0, -1] = False
    return s, gold, rows(rng, B, N), lp, tm


def _losses(s, gold, teacher, lp, tm):
    L = losses
    out = []
    for form in ("each", "any"):
        loss, c = L.supervised_forward(s, gold, tau_s=0.7, form=form)
        out.append((loss, L.supervised_backward(1.0, c), L.supervised_backward(0.3, c)))
    for direction in L.DIRECTIONS:
        for reduction in L.REDUCTIONS:
            loss, c = L.kl_distill_forward(s, teacher, tau_s=0.5, tau_g=0.8, reduction=reduction, direction=direction)
            out.append((loss, L.kl_distill_backward(1.0, c)))
    for per in ("token", "sequence"):
        loss, c = L.emdr_forward(s, lp, tm, tau_s=0.6, per=per)
        out.append((loss, L.emdr_backward(1.0, c)))
    out.append((L.pdist_teacher(lp, tm), L.loop_teacher(-teacher)))
    return out


@gpu
def test_losses_on_device(cp):
    check(cp, _losses, *_loss_inputs())


def _adist(P, ctx, ai, ao, M, tm):
    _, c = reader.reader_forward(P, RCFG, ctx, ai, ao, M, need_attn=True)
    return tuple(losses.adist_teacher(c.xattn, c.key_pad, tm, ctx.shape[1], mode=m) for m in ("atlas", "fid"))


@gpu
def test_adist_teacher_on_device(cp):
    ctx, ai, ao, M = _reader_batch(seed=22)
    check(cp, _adist, _reader_params(RCFG), ctx, ai, ao, M, ao != RCFG.pad_id)


# ---------------------------------------------------------------------------------------------------------
# the exact objective and the REINFORCE machinery: one line per public function of estimators, on a (N,) row with
# a padded candidate and, for the core, on (B, N) rows with a padded row

EST_K, EST_KAPPA = 3, 1.3
EST_ROW = np.array([0.3, -1.2, 0.8, 0.0, 1.5, -np.inf, 0.4])  # one padded candidate: n = 6 real ones
ON_HOST = {"subset_index", "gradient_error_stats"}  # estimators' functions behind backend.on_host
# the float() syncs a test here accepts: check_dloss reading a device 0-d upstream gradient (validate.py), and
# expected_value_and_grad's value of one (N,) row, a Python float by its contract
FLOAT_OK = ("validate.py", "in check_dloss"), ("estimators.py", "in expected_value_and_grad")


def _subset_values(n):
    return np.random.default_rng(31).uniform(0.5, 2.0, math.comb(n, EST_K))  # c_S, one per subset


def _mask_loss(M):
    """A loss of the relaxed masks (R, N) on their own backend, and its mask gradient: L = Σ_i M_i r_i per row."""
    xp = get_xp(M)
    r = xp.linspace(-1.0, 1.0, M.shape[1])  # (N,) made where M is
    return xp.sum(M * r, axis=1), xp.broadcast_to(r, M.shape) * 1.0


def _up(like, n, lo=-1.0, hi=1.0):
    """An upstream gradient of n entries made on ``like``'s device (no copy)."""
    return get_xp(like).linspace(lo, hi, n)


def _slp(s, c):
    logp, cache = estimators.subset_log_probs_forward(s, EST_K, kappa=EST_KAPPA)
    return logp, cache.subsets, estimators.subset_log_probs_backward(c * 0.5 - 0.2, cache)


def _evf(s, c):
    v, cache = estimators.expected_value_forward(s, c, EST_K, kappa=EST_KAPPA)
    dv = 1.0 if s.ndim == 1 else _up(s, s.shape[0], 0.5, 1.5)
    out = v, estimators.expected_value_backward(dv, cache)
    if s.ndim == 1:  # a 0-d device upstream gradient too
        out += (estimators.expected_value_backward(v * 0 + 2.0, cache),)
    return out


def _subsets_of(s, c):
    """The host table, copied explicitly, and the device DP's own subsets of a (B, N) batch: the same rows."""
    s2 = s if s.ndim == 2 else s[None]
    _, cache = estimators.subset_log_probs_forward(s2, EST_K, kappa=EST_KAPPA)
    return asarray_on(estimators.subsets_of(s.shape[-1], EST_K), s), cache.subsets


def _draws(s, seed=6, m=5):
    return estimators.sample_subsets(s, EST_K, np.random.default_rng(seed), samples=m, kappa=EST_KAPPA)


def _pl(s, c):
    subsets, orders = _draws(s)
    logp, cache = estimators.plackett_luce_log_prob_forward(s, orders, kappa=EST_KAPPA)
    return subsets, orders, logp, estimators.plackett_luce_log_prob_backward(0.5 - 0.25 * logp, cache)


def _rloo(s, c, score="set"):
    subsets, orders = _draws(s)
    xp = get_xp(s)
    losses = xp.reshape(xp.linspace(0.2, 1.9, subsets[..., 0].size), subsets.shape[:-1])  # (m,) or (B, m)
    sur, cache = estimators.rloo_forward(s, losses, subsets if score == "set" else orders, EST_K, kappa=EST_KAPPA,
                                         score=score)
    return sur, cache.mean_loss, cache.advantages, cache.index, estimators.rloo_backward(0.7, cache)


def _rloo_ordering(s, c):
    return _rloo(s, c, "ordering")


def _rloo_both(s, c):
    return _rloo(s, c, "set"), _rloo(s, c, "ordering")


ESTIMATOR_CASES = {  # name -> f(scores (N,) or (B, N), values (S,) or (B, S)); a line per public function
    # native, the DP: its index tables go to the device once per (N, K) and stay (subsets_of's host table is
    # what they are made of; a user copies it explicitly); its syncs are the validation's bool()/int()
    "subsets_of": _subsets_of,
    "subset_log_probs_forward": _slp,
    "subset_log_probs_backward": _slp,
    # native, built on the DP: the probabilities, the Jacobian, V and its gradient (one float(): the value of
    # one (N,) row, a Python float by its contract)
    "subset_probabilities": lambda s, c: estimators.subset_probabilities(s, EST_K, kappa=EST_KAPPA),
    "subset_log_prob_grads": lambda s, c: estimators.subset_log_prob_grads(s, EST_K, kappa=EST_KAPPA),
    "expected_value_forward": _evf,
    "expected_value_backward": _evf,
    "expected_value_and_grad": lambda s, c: estimators.expected_value_and_grad(s, c, EST_K, kappa=EST_KAPPA),
    # native, sampling and its score functions: the noise drawn on the host from the Generator, copied once a call
    "sample_subsets": lambda s, c: _draws(s),
    "plackett_luce_log_prob_forward": _pl,
    "plackett_luce_log_prob_backward": _pl,
    "rloo_forward": _rloo_both,
    "rloo_backward": _rloo_both,
    # native, the gradient study's estimators, made of the functions above (arrays in, arrays out)
    "relaxed_gradient_draws": lambda s, c: estimators.relaxed_gradient_draws(
        s, EST_K, _mask_loss, np.random.default_rng(4), draws=5, tau=0.5, kappa=EST_KAPPA),
    "reinforce_gradient_draws": lambda s, c: estimators.reinforce_gradient_draws(
        s, EST_K, c, np.random.default_rng(4), draws=6, kappa=EST_KAPPA, baseline="loo"),
    "reinforce_moments": lambda s, c: estimators.reinforce_moments(s, EST_K, c, kappa=EST_KAPPA, baseline="loo"),
    # on_host (ON_HOST), host analysis: integer codes searched in a sorted host table, and plain floats out;
    # device arguments copied to the host once each, arrays back
    "subset_index": lambda s, c: estimators.subset_index(estimators.subset_probabilities(s, EST_K)[0],
                                                         gumbel.topk_mask(s + gumbel.gumbel_noise(
                                                             (4, s.shape[0]), np.random.default_rng(5), xp=get_xp(s)),
                                                             EST_K)),
    "gradient_error_stats": lambda s, c: estimators.gradient_error_stats(
        estimators.reinforce_gradient_draws(s, EST_K, c, np.random.default_rng(4), draws=6)[0],
        estimators.expected_value_and_grad(s, c, EST_K)[1]),
}
# host->device copies a case makes, all explicit: the noise drawn on the host (one per sampling call), subsets_of's
# table (copied by the case), subset_index's result (on_host); none for the DP's indices, cached on the device
EST_H2D = {"subsets_of": 1, "sample_subsets": 1, "plackett_luce_log_prob_forward": 1,
           "plackett_luce_log_prob_backward": 1, "rloo_forward": 2, "rloo_backward": 2, "subset_index": 2,
           "relaxed_gradient_draws": 1, "reinforce_gradient_draws": 1, "gradient_error_stats": 1}
# the core pair and the sampling estimators on a batch (B, N) with a padded row
BATCHED = ("subsets_of", "subset_log_probs_forward", "subset_probabilities", "subset_log_prob_grads",
           "expected_value_forward", "expected_value_and_grad", "sample_subsets", "plackett_luce_log_prob_forward",
           "rloo_forward")


def _est_batch(B, seed=8, N=7):
    s = rows(np.random.default_rng(seed), B, N)
    s[1, -2:] = -np.inf  # a padded row: 5 real candidates
    return s, np.random.default_rng(seed + 1).uniform(0.5, 2.0, (B, math.comb(N, EST_K)))


def _syncs_are_validation(t):
    """Every device->host synchronisation is an explicit copy (.get()), a bool()/int() of the validation, or one of
    the accepted float()s (FLOAT_OK): no per-row float(), .item() or data-dependent shape."""
    bad = [ev for ev in t.log if ev.direction == "d2h" and ev.kind not in ("get", "bool", "int")
           and not (ev.kind == "float" and any(f in ev.where and w in ev.where for f, w in FLOAT_OK))]
    assert not bad, t.report()


def _run_estimator(cp, name, s, c):
    """check() of the case, after one device call that may copy the DP's index tables to the device (the only
    copy of them: check()'s call finds them cached and makes only the copies EST_H2D lists)."""
    fn = ESTIMATOR_CASES[name]
    with transfers(cp) as first:
        fn(*dev(cp, (s, c)))
    if first is not None:
        assert all(ev.kind == "asarray" for ev in first.log if ev.direction == "h2d"), first.report()
    _, _, t = check(cp, fn, s, c, h2d=EST_H2D.get(name, 0))
    if t is not None:
        _syncs_are_validation(t)
        assert t.kinds["h2d:asarray"] == t.h2d, t.report()  # explicit copies only: no host index into the device


@gpu
@pytest.mark.parametrize("name", ESTIMATOR_CASES)
def test_estimator_on_device(cp, name):
    """Every public function of estimators on a (N,) row with a padded candidate, on device arrays."""
    _run_estimator(cp, name, EST_ROW, _subset_values(6))


@gpu
@pytest.mark.parametrize("name", BATCHED)
def test_estimator_batch_on_device(cp, name):
    """The core pair and the sampling estimators on (B, N) rows, one of them padded: the DP runs over subsets_of(N,
    K) for every row, the padded row's subsets with probability exactly 0."""
    _run_estimator(cp, name, *_est_batch(3))


@gpu
def test_device_plan_is_copied_once(cp):
    """The DP's index tables go to the device on the first call for an (N, K) and are read from there afterwards:
    a second forward+backward copies nothing to the device."""
    if not on_standin(cp):
        pytest.skip("counting transfers needs the stand-in")
    s, c = dev(cp, _est_batch(2, N=8))  # (N, K) = (8, 3): a plan no other test here builds first
    counts = []
    for _ in range(2):
        with cp.count_transfers() as t:
            _evf(s, c)
        counts.append(t.h2d)
    assert counts[0] > 0 and counts[1] == 0, counts
    sub, _ = _subsets_of(s, c)
    np.testing.assert_array_equal(sub.get(), estimators.subsets_of(8, EST_K))


def _estimator_step_syncs(cp, B):
    s, c = dev(cp, _est_batch(B))
    _evf(s, c), _rloo_both(s, c)  # the plan is on the device
    out = {}
    for name, fn in (("expected value", _evf), ("rloo step", _rloo), ("rloo step, ordering", _rloo_ordering)):
        with cp.count_transfers() as t:
            fn(s, c)
        out[name] = t
    return out


@gpu
def test_estimator_syncs_do_not_grow_with_the_batch(cp):
    """One batched expected_value_forward + backward, and one RLOO step (sample_subsets, rloo_forward, rloo_backward),
    make the same synchronisations for B = 3 and B = 24: their validation, a fixed number (a sync per row would
    show here); the RLOO step's one host->device copy is its noise."""
    if not on_standin(cp):
        pytest.skip("counting transfers needs the stand-in")
    small, big = _estimator_step_syncs(cp, 3), _estimator_step_syncs(cp, 24)
    for name in small:
        msg = f"{name}, B=3:\n{small[name].report()}\nB=24:\n{big[name].report()}"
        assert small[name].kinds == big[name].kinds, msg
        _syncs_are_validation(small[name])
    assert small["expected value"].h2d == 0 and small["expected value"].d2h <= 8, small["expected value"].report()
    for name in ("rloo step", "rloo step, ordering"):
        assert small[name].kinds["h2d:asarray"] == small[name].h2d == 1, small[name].report()
        assert small[name].d2h <= 14, small[name].report()  # 7 (V) and 14 (each RLOO step) when this was written


def _objective_step_syncs(cp, dataset, reader_kind, n, estimator):
    b, cfg, rp, x, ranker = _step_setup(dataset, reader_kind, n=n)
    table = np.random.default_rng(3).uniform(0.5, 2.0, (n, math.comb(b.docs.shape[1], 3)))
    args = dev(cp, (ranker, b.question, b.docs, rp, x, table))

    def step():
        return objective.objective_step(*args[:4], cfg, args[4], np.random.default_rng(7), k=3, kappa=1.3,
                                        estimator=estimator, table=args[5], samples=4)

    step()  # the DP's plan goes to the device on the first call
    with cp.count_transfers() as t:
        step()
    return t


@gpu
@pytest.mark.parametrize("estimator", objective.ESTIMATORS)
@pytest.mark.parametrize("reader_kind", ["two_pass", "fid"])
def test_objective_step_syncs_do_not_grow_with_the_batch(cp, dataset, reader_kind, estimator):
    """A whole objective step (the reranker, then the exact V or the RLOO estimate with the reader called on the
    sampled sets, then back into the reranker): the same synchronisations for a batch of 6 and of 16."""
    if not on_standin(cp):
        pytest.skip("counting transfers needs the stand-in")
    small, big = (_objective_step_syncs(cp, dataset, reader_kind, n, estimator) for n in (6, 16))
    assert small.kinds == big.kinds, f"small step:\n{small.report()}\nbig step:\n{big.report()}"
    assert small.h2d == (estimator == "rloo"), small.report()  # the noise of the sampled sets
    assert small.d2h <= 80, small.report()  # 16 (exact), 39 (FiD) and 62 (two-pass) rloo when this was written


@gpu
def test_planted_sync_per_row_fails_the_estimator_test(cp, monkeypatch):
    """A bool() per row in the DP's backward is a kind of sync the validation makes too: only the count, growing
    with B, gives it away."""
    if not on_standin(cp):
        pytest.skip("counting transfers needs the stand-in")
    _plant(monkeypatch, estimators, "_subset_log_probs_grad", lambda d: [bool(get_xp(d).all(r == r)) for r in d])
    with pytest.raises(AssertionError, match="B=24"):
        test_estimator_syncs_do_not_grow_with_the_batch(cp)


def test_every_public_estimator_has_a_device_case():
    """Adding a function to estimators.__all__ needs one line in ESTIMATOR_CASES (the caches are classes)."""
    public = {n for n in estimators.__all__ if callable(getattr(estimators, n))
              and not isinstance(getattr(estimators, n), type)}
    missing = public - set(ESTIMATOR_CASES)
    assert not missing, f"estimators functions without a device test (add a line to ESTIMATOR_CASES): {missing}"
    assert set(ESTIMATOR_CASES) <= public and set(BATCHED) <= public and ON_HOST <= public
    for name in public:  # on_host is a decision, taken once per function and listed in ON_HOST
        assert hasattr(getattr(estimators, name), "__wrapped__") == (name in ON_HOST), name


# ---------------------------------------------------------------------------------------------------------
# the objective (mini_gumbel.objective) and the hard subsets' reader loss (hard_subsets.subset_nll)


def _as_array(loss):
    """A loss as an array: the objective returns a float on NumPy and a 0-d array on a device (no sync)."""
    return loss if is_cupy(loss) else np.asarray(loss)


def _obj_setup(dataset, reader_kind):
    b, cfg, rp, x, ranker = _step_setup(dataset, reader_kind)
    scores, _ = reranker.reranker_forward(ranker, b.question, b.docs)
    return b, cfg, rp, x, ranker, scores


@gpu
def test_exact_objective_on_device(cp, dataset):
    b, cfg, rp, x, ranker, scores = _obj_setup(dataset, "fid")
    table = np.random.default_rng(3).uniform(0.5, 2.0, (scores.shape[0], math.comb(scores.shape[1], 3)))

    def run(scores, table, ranker, q, docs):
        loss, ds = objective.exact_objective_loss(scores, table, k=3, kappa=1.3)
        step_loss, grads = objective.objective_step(ranker, q, docs, None, cfg, None, None, k=3, kappa=1.3,
                                                    table=table)
        return _as_array(loss), ds, _as_array(step_loss), grads

    check(cp, run, scores, table, ranker, b.question, b.docs)
    loss, _ = objective.exact_objective_loss(scores, table, k=3, kappa=1.3)
    assert type(loss) is float  # NumPy: a float, as before


@gpu
@pytest.mark.parametrize("score", objective.RLOO_SCORES)
@pytest.mark.parametrize("reader_kind", ["two_pass", "fid"])
@pytest.mark.parametrize("use_memory", [False, True], ids=["memory=None", "memory"])
def test_rloo_objective_on_device(cp, dataset, reader_kind, score, use_memory):
    """The noise is drawn on the host from the seeded Generator and copied once: the same sets on both backends,
    read by the reader on the device."""
    b, cfg, rp, x, ranker, scores = _obj_setup(dataset, reader_kind)

    def run(scores, rp, x, memory):
        loss, ds = objective.rloo_objective_loss(scores, x, rp, cfg, np.random.default_rng(7), k=3, kappa=1.3,
                                                 samples=4, memory=memory, score=score)
        return _as_array(loss), ds

    memory = gumbel_reranking.reader_memory_of(rp, cfg, x) if use_memory else None
    check(cp, run, scores, rp, x, memory, h2d=1)


@gpu
def test_objective_step_rloo_on_device(cp, dataset):
    b, cfg, rp, x, ranker, _ = _obj_setup(dataset, "two_pass")

    def run(ranker, q, docs, rp, x):
        loss, grads = objective.objective_step(ranker, q, docs, rp, cfg, x, np.random.default_rng(9), k=3, kappa=1.1,
                                               estimator="rloo", samples=3)
        return _as_array(loss), grads

    check(cp, run, ranker, b.question, b.docs, rp, x, h2d=1)


@gpu
@pytest.mark.parametrize("reader_kind", ["two_pass", "fid"])
@pytest.mark.parametrize("use_memory", [False, True], ids=["memory=None", "memory"])
def test_subset_nll_on_device(cp, dataset, reader_kind, use_memory):
    """hard_subsets.subset_nll reads only the kept documents, in chunks; subset_loss_table every subset: the one
    host->device copy is subsets_of's table, made explicitly."""
    b, cfg, rp, x, _, _ = _obj_setup(dataset, reader_kind)
    B, N = b.docs.shape[:2]
    rng = np.random.default_rng(12)
    subsets = np.stack([np.stack([rng.permutation(N)[:3] for _ in range(4)]) for _ in range(B)])  # (B, R, K)
    memory = gumbel_reranking.reader_memory_of(rp, cfg, x) if use_memory else None

    def run(rp, x, subsets, memory):
        return (hard_subsets.subset_nll(rp, cfg, x, subsets, memory=memory, chunk=7),
                hard_subsets.subset_nll(rp, cfg, x, subsets[:, :1], memory=memory))

    check(cp, run, rp, x, subsets, memory, h2d=0)
    check(cp, lambda rp, x, memory: objective.subset_loss_table(rp, cfg, x, 3, memory=memory), rp, x, memory, h2d=1)


@gpu
def test_reader_memory_select_and_select_docs_on_device(cp, dataset):
    """The gathers behind subset_nll: ReaderMemory.select (with and without rows=), check_doc_indices and
    two_pass_reader.select_docs, device indices into device arrays (no host->device copy)."""
    b, cfg, rp, x, _, _ = _obj_setup(dataset, "two_pass")
    docs = np.array([[2, 0, 5], [1, 4, 3], [0, 1, 2], [5, 3, 1], [4, 2, 0], [3, 5, 4]])  # (B, K)

    def run(rp, x, docs):
        mem = two_pass_reader.two_pass_memory(rp, cfg, x)
        rows_ = get_xp(docs).arange(docs.shape[0])[::-1] % 4
        return (mem.select(docs), mem.select(docs[:4], rows=rows_[:4]), two_pass_reader.select_docs(x, docs),
                reader.check_doc_indices("t", "docs", docs, 6, B=docs.shape[0]))

    check(cp, run, rp, x, docs, h2d=0)


# ---------------------------------------------------------------------------------------------------------
# Adam on device parameters (the other half of a training step)


@gpu
def test_adam_step_on_device(cp):
    rng = np.random.default_rng(41)
    P = {"E": rows(rng, 5, 3), "W": rows(rng, 3, 3)}
    G = {"E": rows(rng, 5, 3), "W": 10 * rows(rng, 3, 3)}

    def run(P, G):
        state = optim.adam_init(P)
        P1, state, n1 = optim.adam_step(P, G, state, lr=0.1, clip_norm=1.0, weight_decay=0.01)
        P2, state, n2 = optim.adam_step(P1, G, state, lr=0.1)
        return P1, P2, state["m"], state["v"], n1, n2, optim.global_norm(G)

    _, _, t = check(cp, run, P, G)
    if t is not None:  # the global norm: one synchronisation per call, not one per parameter
        assert t.kinds == {"d2h:float": 3}, t.report()


# ---------------------------------------------------------------------------------------------------------
# every public differentiable function is called on device arrays by a test above

COVERED = {
    "gumbel": {"gumbel_noise", "topk_mask", "relaxed_topk_forward", "relaxed_topk_backward"},
    "ops": {f for _, _, fs in OP_CASES.values() for f in fs},
    "reader": {"reader_forward", "reader_backward", "reader_logits_backward", "greedy_decode", "reader_encode",
               "reader_memory", "check_doc_indices"},
    "two_pass_reader": {"read_ctx", "entity_flags", "soft_flags", "soft_flags_backward", "two_pass_forward",
                        "two_pass_backward", "two_pass_decode", "two_pass_first_hop", "two_pass_memory",
                        "select_docs"},
    "reranker": {"reranker_forward", "reranker_backward"},
    "listwise_reranker": {"listwise_reranker_forward", "listwise_reranker_backward"},
    "losses": {"supervised_forward", "supervised_backward", "kl_distill_forward", "kl_distill_backward",
               "emdr_forward", "emdr_backward", "pdist_teacher", "loop_teacher", "adist_teacher"},
    "gumbel_reranking": {"gumbel_reranking_loss", "gumbel_reranking_step", "rerank", "reader_memory_of"},
    "estimators": set(ESTIMATOR_CASES),
    "objective": {"subset_loss_table", "exact_objective_loss", "rloo_objective_loss", "objective_step"},
    "hard_subsets": {"subset_nll"},
    "optim": {"adam_init", "adam_step", "global_norm"},
}
NOT_ON_DEVICE = {  # public functions of these modules that take no arrays to compute on
    "reader": {"param_shapes", "mask_range", "init_reader"},  # parameters are made on the host, then copied
    "reranker": {"init_reranker"},
    "gumbel": {"check_tau_kappa", "tau_kappa_issue"},  # checks of two numbers
    "listwise_reranker": {"init_listwise_reranker"},
    "optim": {"state_to_arrays", "state_from_arrays"},  # checkpoint plumbing (host files)
}


@pytest.mark.parametrize("module", sorted(COVERED))
def test_every_public_function_is_called_on_device_arrays(module):
    mod = importlib.import_module(f"mini_gumbel.{module}")
    public = {n for n in mod.__all__ if callable(getattr(mod, n)) and not isinstance(getattr(mod, n), type)}
    missing = public - COVERED[module] - NOT_ON_DEVICE.get(module, set())
    assert not missing, f"mini_gumbel.{module}: no device test calls {sorted(missing)}"
    assert COVERED[module] <= public, COVERED[module] - public


# ---------------------------------------------------------------------------------------------------------
# the check that the checks work: a planted bug in a hot function fails the tests above


def _plant(monkeypatch, module, name, bug):
    orig = getattr(module, name)

    def planted(*args, **kwargs):
        bug(args[0])
        return orig(*args, **kwargs)

    monkeypatch.setattr(module, name, planted)


@gpu
@pytest.mark.parametrize("where, test", [
    ((ops, "layernorm_forward"), lambda cp: test_reader_forward_backward_on_device(cp)),
    ((ops, "attention_backward"), lambda cp: test_two_pass_forward_backward_on_device(cp)),
    ((gumbel, "_softmax"), lambda cp: test_relaxed_topk_on_device(cp, "max")),
], ids=["ops.layernorm_forward", "ops.attention_backward", "gumbel._softmax"])
def test_planted_np_asarray_fails_a_device_test(cp, monkeypatch, where, test):
    """A hidden ``np.asarray`` in a hot function: harmless on NumPy (the NumPy half of the test still runs),
    a TypeError on the device, as on CuPy."""
    if not on_standin(cp):
        pytest.skip("the planted bugs are checked on the stand-in")
    _plant(monkeypatch, *where, lambda x: np.asarray(x) * 1.0)
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        test(cp)


@gpu
def test_planted_numpy_constant_fails_a_device_test(cp, monkeypatch):
    """A NumPy constant mixed into a device expression (x * np.ones(C))."""
    if not on_standin(cp):
        pytest.skip("the planted bugs are checked on the stand-in")
    _plant(monkeypatch, ops, "gelu_forward", lambda x: x * np.ones(x.shape[-1]))
    with pytest.raises(TypeError, match="Unsupported type <class 'numpy.ndarray'>"):
        test_op_on_device_makes_no_transfer(cp, "mlp")


@gpu
def test_planted_sync_in_a_loop_fails_a_device_test(cp, monkeypatch, dataset):
    """A float() of a device scalar in every decoder layer: the step still computes the right thing, but its
    synchronisations now grow with the number of layers."""
    if not on_standin(cp):
        pytest.skip("counting transfers needs the stand-in")
    _plant(monkeypatch, ops, "cross_attention_forward", lambda x: float(get_xp(x).sum(x)))
    with pytest.raises(AssertionError, match="big step"):
        test_syncs_do_not_grow_with_the_sizes(cp, dataset, "fid")


# ---------------------------------------------------------------------------------------------------------
# the bench's CuPy section and notebook 11's CuPy cells, at a tiny size (their timings here mean nothing)


@gpu
def test_bench_cupy_section_runs(cp, monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    bench_modules = ("sec_cupy", "common", "flops", "sizes")
    for name in bench_modules:  # fresh imports, under this test's cupy, and gone afterwards
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        sec_cupy, sizes = importlib.import_module("sec_cupy"), importlib.import_module("sizes")
        from mini_gumbel.timing import environment

        env = {"device": "CPU (test)", "versions": environment()["versions"]}
        sec = sec_cupy.run(env, sizes.sizes("tiny"))
    finally:
        for name in bench_modules:
            sys.modules.pop(name, None)
    assert sec["skipped"] is False, sec
    items = {(r["item"], r["dtype"]) for r in sec["results"]}
    expected = {(f"topk/{m}", d) for m in gumbel.RELAXATIONS for d in ("float32", "float64")}
    expected |= {(f"reader/{s}", d) for s in ("train_step", "frozen_step") for d in ("float32", "float64")}
    assert items == expected | {("matmul_peak", "float32"), ("matmul_peak", "float64")}
    assert all(r["speedup"] > 0 for r in sec["results"])
    (tg,) = sec_cupy.targets(sec)
    assert tg["target"] == "cupy_speedup" and tg["met"] in (True, False)
    assert "## 5. NumPy vs CuPy" in "\n".join(sec_cupy.markdown(sec, env))


NB11 = ROOT / "notebooks" / "11_backends_and_timing.ipynb"


@gpu
def test_notebook_10_cupy_cells_run(cp, tmp_path, monkeypatch):
    """The notebook's set-up cell and every cell that reads HAVE_GPU, in a fresh kernel whose ``cupy`` is the
    stand-in (or CuPy on a GPU), at the small size; the autograd timing cells, which have no CuPy branch, are
    run by test_notebooks.py."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    nb = nbformat.read(NB11, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    keep = [code[0]] + [c for c in code[1:] if "HAVE_GPU" in c.source]
    assert len(keep) >= 4, "notebook 11 has fewer CuPy cells than this test expects"
    cells = keep
    if on_standin(cp):
        boot = ("import sys; sys.path.insert(0, %r); import device_standin; device_standin.install()\n"
                "print('cupy is the NumPy stand-in: its GPU timings mean nothing')" % str(Path(__file__).parent))
        cells = [nbformat.v4.new_code_cell(boot)] + keep
    for c in cells:
        c.outputs, c.execution_count = [], None
    nb.cells = cells
    for k, v in {"MINI_GUMBEL_NB_SIZE": "small", "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}.items():
        monkeypatch.setenv(k, v)  # the kernel inherits the environment
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(o.get("text", "") for c in nb.cells for o in c.get("outputs", []))
    assert "running NumPy and CuPy" in printed and "size=small" in printed, printed
    assert "CuPy vs NumPy: mask" in printed and "NumPy/CuPy time ratio" in printed, printed


@gpu
def test_readme_gpu_example_runs(cp):
    """The python block of the README's "Using a GPU" section, as a user would paste it."""
    text = (ROOT / "README.md").read_text()
    section = text.split("## Using a GPU", 1)[1]
    block = section.split("```python", 1)[1].split("```", 1)[0]
    ns = {}
    exec(compile(block, "README.md (Using a GPU)", "exec"), ns)
    arrays = [v for v in ns.values() if is_cupy(v)]
    assert arrays and all(np.isfinite(a.get()).all() for a in arrays)


def test_no_standin_outside_the_gpu_tests():
    """After the gpu tests above, a test without the marker sees no stand-in: no ``cupy`` at all on a machine
    without CuPy (so backend never finds one, and timing.gpu_time says CuPy is not importable), or the real one."""
    import device_standin

    for name in ("cupy", "cupyx", "cupyx.profiler"):
        assert not getattr(sys.modules.get(name), "IS_STANDIN", False), name
    assert sys.modules.get("cupyx.profiler") is not device_standin.cupyx.profiler
    x = device_standin.asarray(np.ones(2))
    with pytest.raises(TypeError, match="is not an array"):
        get_xp(x)  # a stand-in array is nobody's array once the stand-in is gone
    if importlib.util.find_spec("cupy") is None:
        from mini_gumbel import timing

        assert "cupy" not in sys.modules
        with pytest.raises(ImportError, match="CuPy is not importable"):
            timing.gpu_time(lambda: None)
