"""The loss of a hard set of documents read from those documents only (hard_subsets.subset_nll), for both readers:
equal to the 0/1-masked reader over all N documents (float64 round-off; float32 to 1e-5), with or without the
precomputed memory, in any chunking and any order within a set; ReaderMemory.select and
two_pass_reader.select_docs, and every argument's bad values named."""
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import reader_batches
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mini_gumbel.experiment import gradient_study
from mini_gumbel.gumbel_reranking import reader_memory_of
from mini_gumbel.hard_subsets import subset_nll
from mini_gumbel.reader import ReaderConfig, init_reader, reader_forward, reader_memory
from mini_gumbel.two_pass_reader import (TwoPassBatch, entity_flags, read_ctx, select_docs, two_pass_forward,
                                         two_pass_memory)

V, N, K = 13, 5, 3
ENT, SEP = 3, 4
SIZES = dict(vocab_size=V, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=2, d_ff=12, max_ctx_len=6,
             max_ans_len=4)
CFGS = {"fid": ReaderConfig(**SIZES), "two_pass": ReaderConfig(**SIZES, exact_match=True)}


def _params(cfg, dtype=np.float64):
    P = init_reader(cfg, 0)
    rng = np.random.default_rng(7)  # nonzero biases: no special point
    return {k: (v + 0.1 * rng.standard_normal(v.shape) if v.ndim == 1 else v).astype(dtype) for k, v in P.items()}


PARAMS = {kind: _params(cfg) for kind, cfg in CFGS.items()}


def _batch(kind, seed=0, B=4):
    """A random batch of B examples with N documents for the reader ``kind`` (padding inside documents)."""
    rng = np.random.default_rng(seed)
    if kind == "fid":
        ctx, ans_in, ans_out, _ = reader_batches.make_batch(rng, V, CFGS[kind].bos_id, B=B, N=N, L=6, T=3)
        return SimpleNamespace(ctx=ctx, ans_in=ans_in, ans_out=ans_out)
    docs = rng.integers(5, V, (B, N, 3))  # (B, N, Ld)
    docs[:, -1, -1] = 0
    docs[1, 0, 1:] = 0
    ctx1 = read_ctx(docs, rng.integers(5, V, B), ent_id=ENT, sep_id=SEP)  # (B, N, 6)
    ctx2 = read_ctx(docs, rng.integers(5, V, B), ent_id=ENT, sep_id=SEP)
    flags1 = entity_flags(ctx1, docs[:, 0, 0])

    def answer():
        a_in = rng.integers(5, V, (B, 3))
        a_in[:, 0] = CFGS[kind].bos_id
        a_out = rng.integers(5, V, (B, 3))
        a_out[0, -1] = 0
        return a_in, a_out

    hops = np.array([1, 2, 2, 1, 2, 1][:B])
    return TwoPassBatch(ctx1, flags1, *answer(), ctx2, *answer(), hops)


def _subsets(B, seed=0):
    """Every K-set of N for every example (B, C(N, K), K), in a different random order per example."""
    rng = np.random.default_rng(seed)
    combos = np.array(list(itertools.combinations(range(N), K)))  # (R, K)
    return np.stack([combos[rng.permutation(len(combos))] for _ in range(B)])  # (B, R, K)


def _masked_nll(params, cfg, batch, subsets):
    """The reference: every example R times, the 0/1 mask of its set over all N documents (B, R)."""
    B, R, _ = subsets.shape
    masks = (subsets[:, :, :, None] == np.arange(N)).any(axis=2).reshape(B * R, N)  # (B·R, N)
    masks = masks.astype(params["tok_emb"].dtype)
    if isinstance(batch, TwoPassBatch):
        _, c = two_pass_forward(params, cfg, TwoPassBatch(*(np.repeat(a, R, axis=0) for a in batch)), masks)
    else:
        rep = [np.repeat(a, R, axis=0) for a in (batch.ctx, batch.ans_in, batch.ans_out)]
        _, c = reader_forward(params, cfg, *rep, masks)
    return np.asarray(c.nll, dtype=np.float64).reshape(B, R)


# ------------------------------------------------------------------------------------------------------
# subset_nll against the masked reader


@pytest.mark.parametrize("kind", ["fid", "two_pass"])
@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_subset_nll_equals_the_masked_reader(kind, dtype, tol):
    cfg, batch = CFGS[kind], _batch(kind)
    params = _params(cfg, dtype)
    subsets = _subsets(4)
    c = subset_nll(params, cfg, batch, subsets)
    assert c.shape == subsets.shape[:2] and c.dtype == np.float64
    np.testing.assert_allclose(c, _masked_nll(params, cfg, batch, subsets), rtol=tol, atol=tol)
    # the sets matter (so the equality above is not between two constants), and K documents are not all N
    assert np.ptp(c, axis=1).min() > 1e-3
    if isinstance(batch, TwoPassBatch):
        full = two_pass_forward(params, cfg, batch)[1].nll
    else:
        full = reader_forward(params, cfg, batch.ctx, batch.ans_in, batch.ans_out)[1].nll
    assert np.abs(c - np.asarray(full, np.float64)[:, None]).min() > 1e-6


@pytest.mark.parametrize("kind", ["fid", "two_pass"])
def test_memory_chunks_order_and_progress(kind):
    cfg, params, batch = CFGS[kind], PARAMS[kind], _batch(kind)
    subsets = _subsets(4, seed=1)
    c = subset_nll(params, cfg, batch, subsets)
    # the memory computed before (here of a larger batch, its rows taken) gives the same numbers, bit for bit
    big = _batch(kind, B=6)
    idx = np.array([5, 0, 3, 1])
    rows = (TwoPassBatch(*(a[idx] for a in big)) if kind == "two_pass"
            else SimpleNamespace(ctx=big.ctx[idx], ans_in=big.ans_in[idx], ans_out=big.ans_out[idx]))
    np.testing.assert_array_equal(subset_nll(params, cfg, rows, subsets, memory=reader_memory_of(params, cfg, big)
                                             .take(idx)), subset_nll(params, cfg, rows, subsets))
    # any chunking: one row per call, a group split over two calls, two examples per call
    for chunk in (1, 7, 25):
        np.testing.assert_allclose(subset_nll(params, cfg, batch, subsets, chunk=chunk), c, rtol=1e-13, atol=1e-14)
    # any order of the documents within a set: a set function, up to round-off
    rng = np.random.default_rng(2)
    shuffled = np.take_along_axis(subsets, rng.permuted(np.broadcast_to(np.arange(K), subsets.shape), axis=2), 2)
    assert (shuffled != subsets).any()
    np.testing.assert_allclose(subset_nll(params, cfg, batch, shuffled), c, rtol=1e-12, atol=1e-13)
    # progress wraps the groups of examples: chunk 20 holds two examples of 10 sets
    seen = []

    def progress(it):
        seen.append(len(it))
        return it

    np.testing.assert_allclose(subset_nll(params, cfg, batch, subsets, chunk=20, progress=progress), c,
                               rtol=1e-13, atol=1e-14)
    assert seen == [2]


@pytest.mark.parametrize("kind", ["fid", "two_pass"])
def test_gradient_study_subset_losses(kind):
    """gradient_study.subset_losses (one example, S sets) is subset_nll: the masked numbers, memory or not."""
    cfg, params = CFGS[kind], PARAMS[kind]
    b = _batch(kind)
    one = (TwoPassBatch(*(a[2:3] for a in b)) if kind == "two_pass"
           else SimpleNamespace(ctx=b.ctx[2:3], ans_in=b.ans_in[2:3], ans_out=b.ans_out[2:3]))
    subsets = _subsets(1)[0]  # (S, K)
    c = gradient_study.subset_losses(params, cfg, one, subsets)
    assert c.shape == (len(subsets),) and c.dtype == np.float64
    np.testing.assert_allclose(c, _masked_nll(params, cfg, one, subsets[None])[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(gradient_study.subset_losses(params, cfg, one, subsets,
                                                               memory=reader_memory_of(params, cfg, one)), c)


# ------------------------------------------------------------------------------------------------------
# ReaderMemory.select and select_docs


@pytest.mark.parametrize("kind", ["fid", "two_pass"])
def test_select_all_in_order_is_the_memory_and_a_subset_is_its_own_memory(kind):
    cfg, params, batch = CFGS[kind], PARAMS[kind], _batch(kind)
    mem = reader_memory_of(params, cfg, batch)
    same = mem.select(np.tile(np.arange(N), (4, 1)))
    assert same.shape == mem.shape and same.n_heads == mem.n_heads
    np.testing.assert_array_equal(same.key_pad, mem.key_pad)
    for a, b in zip(same.kv, mem.kv):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    docs = np.array([[4, 0, 2], [1, 3, 0], [2, 1, 4], [0, 4, 3]])  # (B, K), any order
    sel = mem.select(docs)
    assert sel.shape == (4, K, 6) and sel.kv[0].shape == (4, K * 6, 2 * cfg.d_model)
    if kind == "two_pass":
        sub = select_docs(batch, docs)
        for f in ("ans1_in", "ans1_out", "ans_in", "ans_out", "hops"):
            assert getattr(sub, f) is getattr(batch, f)
        for f in ("ctx1", "flags1", "ctx2"):
            np.testing.assert_array_equal(getattr(sub, f), np.take_along_axis(getattr(batch, f), docs[:, :, None], 1))
        direct = two_pass_memory(params, cfg, sub)
    else:
        direct = reader_memory(params, cfg, np.take_along_axis(batch.ctx, docs[:, :, None], 1))
    np.testing.assert_array_equal(sel.key_pad, direct.key_pad)
    for a, b in zip(sel.kv, direct.kv):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-14)


def test_select_rows_is_take_then_select():
    mem = reader_memory_of(PARAMS["fid"], CFGS["fid"], _batch("fid"))
    rows = np.array([3, 0, 3, 1, 2])
    docs = np.array([[4, 0], [1, 3], [2, 4], [0, 1], [3, 2]])
    one, two = mem.select(docs, rows=rows), mem.take(rows).select(docs)
    assert one.shape == two.shape == (5, 2, 6)
    np.testing.assert_array_equal(one.key_pad, two.key_pad)
    for a, b in zip(one.kv, two.kv):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(TypeError, match=r"^ReaderMemory.select: rows.dtype=float64; expected an integer dtype"):
        mem.select(docs, rows=rows.astype(float))
    with pytest.raises(ValueError, match=r"^ReaderMemory.select: rows=.*expected example indices in \[0, B=4\) "
                                         r"\(found \[0, 4\]\)"):
        mem.select(docs, rows=rows + (rows == 3))
    with pytest.raises(ValueError, match=r"^ReaderMemory.select: docs.shape=\(5, 2\); expected \(len\(rows\)=4, K\)$"):
        mem.select(docs, rows=rows[:4])


MEM = reader_memory_of(PARAMS["two_pass"], CFGS["two_pass"], _batch("two_pass"))
BATCH = _batch("two_pass")


def _call(which, docs):
    if which == "ReaderMemory.select":
        return MEM.select(docs)
    if which == "select_docs":
        return select_docs(BATCH, docs)
    return subset_nll(PARAMS["two_pass"], CFGS["two_pass"], BATCH, docs[:, None, :])


@pytest.mark.parametrize("which,name", [("ReaderMemory.select", "docs"), ("select_docs", "docs"),
                                        ("subset_nll", "subsets")])
def test_doc_index_errors_are_named(which, name):
    fn = f"{which}: {name}"
    with pytest.raises(TypeError, match=rf"^{fn}.dtype=float64; expected an integer dtype"):
        _call(which, np.zeros((4, K)))
    with pytest.raises(ValueError, match=rf"^{fn}.shape=\(3, {'1, ' if which == 'subset_nll' else ''}3\); "
                                         rf"expected \(B=4, {'R, ' if which == 'subset_nll' else ''}K\)$"):
        _call(which, np.zeros((3, K), int))
    with pytest.raises(ValueError, match=rf"^{fn}.shape=.*expected at least one document per row \(K >= 1\)"):
        _call(which, np.zeros((4, 0), int))
    bad = np.tile(np.arange(K), (4, 1))
    bad[2, 1] = N
    with pytest.raises(ValueError, match=rf"^{fn}=.*expected document indices in \[0, N=5\) \(found indices in "
                                         r"\[0, 5\]\)"):
        _call(which, bad)
    bad[2, 1] = -1
    with pytest.raises(ValueError, match=rf"^{fn}=.*expected document indices in \[0, N=5\)"):
        _call(which, bad)
    bad[2] = [3, 1, 3]
    at = "2, 0" if which == "subset_nll" else "2"
    with pytest.raises(ValueError, match=rf"^{which}: {name}\[{at}\]=\(3, 1, 3\); expected distinct document "
                                         r"indices \(a document read twice\)"):
        _call(which, bad)
    with pytest.raises(TypeError, match=rf"^{fn}=\[\[0, 1, 2\]\] \(a list\); expected an array"):
        _call(which, [[0, 1, 2]]) if which != "subset_nll" else subset_nll(
            PARAMS["two_pass"], CFGS["two_pass"], BATCH, [[0, 1, 2]])


def test_select_docs_and_subset_nll_other_arguments():
    P, cfg = PARAMS["two_pass"], CFGS["two_pass"]
    docs = np.tile(np.arange(K), (4, 1))
    with pytest.raises(TypeError, match=r"^select_docs: batch='<a tuple>'; expected a TwoPassBatch"):
        select_docs(tuple(BATCH), docs)
    with pytest.raises(ValueError, match=r"^select_docs: batch.ctx2.shape=\(4, 5, 5\); expected batch.ctx1.shape="):
        select_docs(BATCH._replace(ctx2=BATCH.ctx2[..., :5]), docs)
    subsets = docs[:, None, :]
    with pytest.raises(TypeError, match=r"^subset_nll: batch='<a dict>'; expected a TwoPassBatch, or for the FiD "
                                        r"reader anything with .ctx, .ans_in and .ans_out"):
        subset_nll(P, cfg, {"ctx": BATCH.ctx1}, subsets)
    with pytest.raises(ValueError, match=r"^subset_nll: subsets.shape=\(4, 0, 3\); expected at least one set per "
                                         r"example \(R >= 1\)"):
        subset_nll(P, cfg, BATCH, subsets[:, :0])
    with pytest.raises(ValueError, match=r"^subset_nll: chunk=0; expected an int >= 1"):
        subset_nll(P, cfg, BATCH, subsets, chunk=0)
    with pytest.raises(TypeError, match=r"^subset_nll: chunk=2.0; expected an int >= 1"):
        subset_nll(P, cfg, BATCH, subsets, chunk=2.0)
    with pytest.raises(TypeError, match=r"^subset_nll: progress=3; expected None or a callable"):
        subset_nll(P, cfg, BATCH, subsets, progress=3)
    with pytest.raises(TypeError, match=r"^subset_nll: memory=.*expected a ReaderMemory"):
        subset_nll(P, cfg, BATCH, subsets, memory=MEM.kv)
    with pytest.raises(ValueError, match=r"^subset_nll: memory.shape=\(2, 5, 6\); expected \(B, N, L\)=\(4, 5, 6\)"):
        subset_nll(P, cfg, BATCH, subsets, memory=MEM.take(np.arange(2)))
    with pytest.raises(ValueError, match=r"^ReaderMemory.select: docs.shape=\(4, 3\); expected \(B=2, K\)$"):
        MEM.take(np.arange(2)).select(docs)


@given(hnp.arrays(np.int64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=6),
                  elements=st.integers(-1, N)))
def test_select_any_index_array(docs):
    """Any integer array: a named ValueError unless it is (B, K) of distinct indices in [0, N), K >= 1, and then
    select and select_docs are the gathers of those documents; subset_nll rejects the same arrays."""
    valid = (docs.shape[0] == 4 and docs.shape[1] >= 1 and docs.min() >= 0 and docs.max() < N
             and all(len(set(r)) == len(r) for r in docs))
    if not valid:
        for which, name in (("ReaderMemory.select", "docs"), ("select_docs", "docs"), ("subset_nll", "subsets")):
            with pytest.raises(ValueError, match=rf"^{which}: {name}"):
                _call(which, docs)
        return
    sel, sub = MEM.select(docs), select_docs(BATCH, docs)
    for a, b in zip(sel.kv, MEM.kv):
        want = np.take_along_axis(b.reshape(4, N, 6, -1), docs[:, :, None, None], 1).reshape(4, -1, b.shape[-1])
        np.testing.assert_array_equal(a, want)
    np.testing.assert_array_equal(sub.ctx1, np.take_along_axis(BATCH.ctx1, docs[:, :, None], 1))
