"""A two-pass reader: decompose a bridge question, read once for the bridge entity, read again for the answer.

A single-pass tiny FiD reader does not learn two-hop bridge questions ("what is the r₂ of the r₁ of E1?") on
mini_gumbel's data (docs/method.md §6.6). This reader runs the same FiD reader (``mini_gumbel.reader``, with
``ReaderConfig(exact_match=True)``) twice over the same N documents and the same document mask M (ours; after
question decomposition, DecompRC, iterative readers, GoldEn Retriever, and DrQA's exact-match feature).

Every read's encoder sequence is ``[w, ENT, SEP, s, r, o]`` (READ_PREFIX = 3 tokens, then the document):
w a single-hop question word (one per relation), ENT a placeholder token, SEP, then the document's tokens.
Which entity the question is about is not a token of the sequence: it is marked in the documents by the
reader's exact-match flags (encoder input + flags · em_vec).

Read 1 (every row): w = the single-hop word of the question (single-hop rows) or of its inner relation r₁
(two-hop rows); flags1 = 1 on the document tokens equal to E1. Its logits at answer position 0 (after BOS,
so independent of the teacher-forced tokens) give the distribution over the bridge entity

    p1 = softmax(logits¹[:, 0])                                                  (B, V)

Read 2 (two-hop rows): w = the outer relation's word r₂; the bridge entity is marked *softly*, every
document token v weighted by read 1's probability of it:

    flags2[b, n, l] = p1[b, ctx2[b, n, l]] · [l >= READ_PREFIX] · [ctx2[b, n, l] != pad]     (B, N, L)

The per-example loss is read 1's answer NLL on single-hop rows and read 2's on two-hop rows:

    nll_b = [hops_b = 1] nll¹_b + [hops_b = 2] nll²_b,        loss = mean_b nll_b

Both reads use the same mask M. Each read is a FiD reader with DMA, so a 0/1 mask equals running both reads
on the selected documents only, and the mask gradient (finite at M_i = 0) sums over both reads:

    dL/dM = ∂L/∂M (read 2, direct)  +  ∂L/∂M (read 1: its own NLL on single-hop rows, and on two-hop rows
            the chain  ∂L/∂flags2 -> ∂L/∂p1 -> ∂L/∂logits¹[:, 0] = p1 ⊙ (dp1 − <dp1, p1>) -> M)

with ∂flags2/∂p1 a one-hot matmul: dp1[b, v] = Σ_{n,l: ctx2[b,n,l] = v} keep[b,n,l] · dflags2[b,n,l].

Read 2 runs on the two-hop rows only (``sel`` (B, B₂) the one-hot map from them back to the batch), so a
batch without two-hop rows costs one read.

    batch = TwoPassBatch(ctx1, flags1, ans1_in, ans1_out, ctx2, ans_in, ans_out, hops)
    loss, cache = two_pass_forward(params, cfg, batch, mask)
    _, dmask = two_pass_backward(1.0, cache)                          # frozen reader: the reranker's signal
    dparams, dmask = two_pass_backward(1.0, cache, param_grads=True)  # every parameter, both reads
    answers = two_pass_decode(params, cfg, ctx1, flags1, ctx2, hops, mask)

What the mask cannot reach (the frozen reader's training step reuses it): read 1's encoder states and its
cross-attention keys and values (``two_pass_memory``: ctx1 and flags1 are fixed per example), and, in both
reads, the decoder's first self-attention block (answer tokens only, B·T of the step's B·N·L + B·T tokens:
not kept). Everything
from read 1's first cross-attention on depends on M, and so do p1, read 2's flags and hence read 2's
encoder, which therefore runs every step.

    memory1 = two_pass_memory(params, cfg, batch)                      # once per example
    loss, cache = two_pass_forward(params, cfg, batch, mask, memory1=memory1.take(idx))   # bit-identical

Dimension letters as in mini_gumbel.reader: B batch, N documents, L = READ_PREFIX + Ld tokens per read
sequence, Ld tokens per document, T answer tokens, V vocabulary, B₂ two-hop rows.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np

from . import ops
from .backend import get_xp, unbox
from .reader import (ReaderCache, ReaderConfig, ReaderMemory, _check_answer, _check_ctx, _check_flags, _check_mask,
                     _check_memory, _check_params, _forward, check_doc_indices, greedy_decode, reader_backward,
                     reader_forward, reader_logits_backward, reader_memory)
from .validate import (check_array, check_bool, check_cache, check_dloss, check_finite_output, check_int,
                       check_token_ids, check_type, fail)

__all__ = ["READ_PREFIX", "read_ctx", "entity_flags", "soft_flags", "soft_flags_backward", "TwoPassBatch",
           "TwoPassCache", "two_pass_forward", "two_pass_backward", "two_pass_decode", "two_pass_first_hop",
           "two_pass_memory", "select_docs"]

READ_PREFIX = 3  # [w, ENT, SEP] before the document's tokens


# ---------------------------------------------------------------------------------------------------------
# read sequences and flags


def read_ctx(docs, words, *, ent_id, sep_id):
    """[w_b, ENT, SEP, docs[b, n, :]] for every document: docs (B, N, Ld) int, words (B,) int -> (B, N, 3 + Ld)."""
    fn = "read_ctx"
    d = check_array(fn, "docs", docs, ndim=3, kind="iu")
    B, N, Ld = d.shape
    w = check_array(fn, "words", words, shape=(B,), kind="iu")
    ent_id = check_int(fn, "ent_id", ent_id, lo=0)
    sep_id = check_int(fn, "sep_id", sep_id, lo=0)
    xp = get_xp(d)
    prefix = xp.stack([w, xp.full(B, ent_id, dtype=w.dtype), xp.full(B, sep_id, dtype=w.dtype)], axis=1)  # (B, 3)
    prefix = xp.broadcast_to(prefix[:, None, :], (B, N, READ_PREFIX)).astype(d.dtype)  # (B, N, 3)
    return xp.concatenate([prefix, d], axis=2)  # (B, N, 3 + Ld)


def _keep(ctx, pad_id):
    """1.0 on document tokens (positions >= READ_PREFIX) that are not padding, else 0   (B, N, L) bool."""
    xp = get_xp(ctx)
    return (xp.arange(ctx.shape[-1]) >= READ_PREFIX) & (ctx != pad_id)  # (B, N, L)


def entity_flags(ctx, entity, *, pad_id=0):
    """Hard exact-match flags (B, N, L) float64: 1.0 where a document token equals entity[b], else 0
    (0 on w, ENT, SEP and padding). ctx (B, N, L) int, entity (B,) int."""
    fn = "entity_flags"
    c = check_array(fn, "ctx", ctx, ndim=3, kind="iu")
    e = check_array(fn, "entity", entity, shape=(c.shape[0],), kind="iu")
    pad_id = check_int(fn, "pad_id", pad_id, lo=0)
    return ((c == e[:, None, None]) & _keep(c, pad_id)).astype(np.float64)  # (B, N, L)


def soft_flags(ctx, p, *, pad_id=0):
    """flags[b, n, l] = p[b, ctx[b, n, l]] on document tokens, 0 on the prefix and on padding.

    ctx (B, N, L) int, p (B, V) a distribution over the vocabulary (finite, >= 0) -> (B, N, L), p's dtype.
    """
    fn = "soft_flags"
    c = check_array(fn, "ctx", ctx, ndim=3, kind="iu")
    B = c.shape[0]
    pr = check_array(fn, "p", p, ndim=2, finite=True, nonneg=True)
    if pr.shape[0] != B:
        fail(fn, "p.shape", pr.shape, f"(B={B}, V) like ctx.shape={c.shape}")
    check_token_ids(fn, "ctx", c, ndim=3, vocab_size=pr.shape[1])
    pad_id = check_int(fn, "pad_id", pad_id, lo=0)
    return _soft_flags(c, p, pad_id)


def _soft_flags(ctx, p, pad_id):
    """soft_flags without validation."""
    xp = get_xp(p)
    picked = p[xp.arange(ctx.shape[0])[:, None, None], ctx]  # (B, N, L)
    return picked * _keep(ctx, pad_id).astype(unbox(p).dtype)  # (B, N, L)


def soft_flags_backward(dflags, ctx, V, *, pad_id=0):
    """dp (B, V) of soft_flags as a one-hot matmul (no scatter-add):
    dp[b] = Σ_s keep[b, s] dflags[b, s] onehot(ctx[b, s]).

    dflags (B, N, L) float, finite; ctx (B, N, L) int token ids in [0, V); V the vocabulary size (an int >= 1)."""
    fn = "soft_flags_backward"
    V = check_int(fn, "V", V, lo=1)
    c = check_token_ids(fn, "ctx", ctx, ndim=3, vocab_size=V)
    check_array(fn, "dflags", dflags, shape=tuple(c.shape), finite=True)
    pad_id = check_int(fn, "pad_id", pad_id, lo=0)
    return _soft_flags_backward(dflags, c, V, pad_id)


def _soft_flags_backward(dflags, ctx, V, pad_id):
    """soft_flags_backward without validation."""
    xp = get_xp(dflags)
    B, N, L = ctx.shape
    # flags = p[b, ctx] * keep
    w = xp.reshape(dflags * _keep(ctx, pad_id), (B, 1, N * L))  # (B, 1, S)
    onehot = (xp.reshape(ctx, (B, N * L, 1)) == xp.arange(V)).astype(dflags.dtype)  # (B, S, V)
    return xp.matmul(w, onehot)[:, 0]  # (B, V)


# ---------------------------------------------------------------------------------------------------------
# the model


class TwoPassBatch(NamedTuple):
    ctx1: object  # (B, N, L) read-1 sequences: w = the single-hop word, or the inner relation's (two-hop)
    flags1: object  # (B, N, L) hard entity flags of E1 (entity_flags)
    ans1_in: object  # (B, T) read 1's teacher-forced input (BOS, ...)
    ans1_out: object  # (B, T) read 1's target: the answer (single-hop), the bridge entity then EOS (two-hop)
    ctx2: object  # (B, N, L) read-2 sequences: w = the outer relation's word (any valid word on single-hop rows)
    ans_in: object  # (B, T) the question's answer, teacher-forced input
    ans_out: object  # (B, T) the question's answer, target
    hops: object  # (B,) int in {1, 2}


class TwoPassCache(NamedTuple):
    logprobs: object  # (B, T) log p(answer token) of the final read (read 1 or 2 by row), 0 on padding
    nll: object  # (B,) per-example answer NLL of the final read
    p1: object  # (B, V) read 1's distribution over the bridge entity (answer position 0)
    flags2: object  # (B₂, N, L) read 2's soft flags; None without two-hop rows
    read1: ReaderCache  # read 1 on every row (read1.nll: its NLL of ans1_out, bridge rows included)
    read2: Optional[ReaderCache]  # read 2 on the two-hop rows; None without any
    two_hop: object  # (B₂,) int, the two-hop rows
    sel: object  # (B, B₂) one-hot: sel[b, j] = [two_hop[j] = b]
    one_hop: object  # (B,) float, 1.0 on single-hop rows
    ctx2: object  # (B₂, N, L) read 2's sequences
    cfg: ReaderConfig


def _check_hops(hops, B, fn):
    h = check_array(fn, "hops", hops, shape=(B,), kind="iu")
    bad = (h != 1) & (h != 2)
    if bool(bad.any()):
        b = int(get_xp(h).argmax(bad))
        fail(fn, f"hops[{b}]", int(h[b]), "1 or 2")
    return h


def _check_two_pass(cfg, fn):
    check_type(fn, "cfg", cfg, ReaderConfig)
    if not cfg.exact_match:
        fail(fn, "cfg.exact_match", False, "True (the second read marks the bridge entity with flags)")


def _pad_cols(a, T, value):
    """(R, t) -> (R, T) padded on the right with ``value``."""
    xp = get_xp(a)
    if a.shape[1] == T:
        return a
    return xp.concatenate([a, xp.full((a.shape[0], T - a.shape[1]), value, dtype=a.dtype)], axis=1)


def _check_batch(batch, fn):
    if not isinstance(batch, TwoPassBatch):
        fail(fn, "batch", f"<a {type(batch).__name__}>", "a TwoPassBatch(ctx1, flags1, ans1_in, ans1_out, ctx2, "
             "ans_in, ans_out, hops)", TypeError)


def _check_forward(params, cfg, batch, mask, memory1, fn, names=("params", "cfg", "memory1")):
    """Every input of two_pass_forward, each named as the caller passed it (batch.ctx2, batch.ans_in, ...;
    ``names``: the caller's names of params, cfg and memory1): (dtype, hops, mask and flags1 cast to the
    parameters' dtype)."""
    check_type(fn, names[1], cfg, ReaderConfig)
    if not cfg.exact_match:
        fail(fn, f"{names[1]}.exact_match", False, "True (the second read marks the bridge entity with flags)")
    dtype = _check_params(params, cfg, fn, names[0], names[1])
    _check_batch(batch, fn)
    _check_ctx(batch.ctx1, cfg, fn, "batch.ctx1")
    _check_ctx(batch.ctx2, cfg, fn, "batch.ctx2")
    if batch.ctx2.shape != batch.ctx1.shape:
        fail(fn, "batch.ctx2.shape", batch.ctx2.shape, f"batch.ctx1.shape={batch.ctx1.shape}")
    B, N, L = batch.ctx1.shape
    for a, b in (("ans1_in", "ans1_out"), ("ans_in", "ans_out")):
        _check_answer(f"batch.{a}", getattr(batch, a), B, cfg, fn)
        _check_answer(f"batch.{b}", getattr(batch, b), B, cfg, fn)
        if getattr(batch, b).shape != getattr(batch, a).shape:
            fail(fn, f"batch.{b}.shape", getattr(batch, b).shape, f"batch.{a}.shape={getattr(batch, a).shape}")
    hops = _check_hops(batch.hops, B, fn)
    mask = _check_mask(mask, B, N, dtype, fn)
    flags1 = _check_flags(batch.flags1, cfg, (B, N, L), dtype, fn, "batch.flags1")
    if memory1 is not None:
        _check_memory(memory1, cfg, batch.ctx1, dtype, fn, names[2], "batch.ctx1")
    return dtype, hops, mask, flags1


def select_docs(batch, docs) -> TwoPassBatch:
    """The batch on the documents ``docs`` (B, K) int only, in that order (distinct indices in [0, N)): ctx1,
    flags1 and ctx2 gathered to (B, K, L); the answers and hops unchanged. Both reads encode every document on
    its own at the same positions, so this batch's loss is the loss of the 0/1 mask of ``docs`` over all N
    (read 1's memory of it: ``two_pass_memory(...).select(docs)``)."""
    fn = "select_docs"
    _check_batch(batch, fn)
    B, N = check_array(fn, "batch.ctx1", batch.ctx1, ndim=3, kind="iu").shape[:2]
    docs = check_doc_indices(fn, "docs", docs, N, B=B)
    for name in ("flags1", "ctx2"):
        a = check_array(fn, f"batch.{name}", getattr(batch, name), kind="f" if name == "flags1" else "iu")
        if tuple(a.shape) != tuple(batch.ctx1.shape):
            fail(fn, f"batch.{name}.shape", tuple(a.shape), f"batch.ctx1.shape={tuple(batch.ctx1.shape)}")
    rows = get_xp(batch.ctx1, docs).arange(B)[:, None]  # (B, 1)
    return batch._replace(ctx1=batch.ctx1[rows, docs], flags1=batch.flags1[rows, docs],
                          ctx2=batch.ctx2[rows, docs])  # (B, K, L) each


def two_pass_memory(params, cfg, batch) -> ReaderMemory:
    """Read 1's mask-independent states (reader.reader_memory of ctx1 and flags1), for two_pass_forward's
    memory1: compute once per example, pass rows of it (``.take(idx)``) every step."""
    fn = "two_pass_memory"
    _check_two_pass(cfg, fn)
    _check_batch(batch, fn)
    return reader_memory(params, cfg, batch.ctx1, batch.flags1)


def two_pass_forward(params, cfg, batch, mask=None, *, memory1=None):
    """Loss (mean over the batch of the final read's answer NLL) and a TwoPassCache; mask (B, N) float >= 0
    or None (all ones), the same for both reads. Needs cfg.exact_match. Every input is validated here, once,
    and named as passed (``batch.ctx2``, ``batch.ans_in``, ``memory1``); parameters that are not finite are
    named when they reach the loss. memory1: two_pass_memory of this batch (or its rows): read 1 skips its
    encoder, with bit-identical outputs; the cache then supports the frozen backward only."""
    fn = "two_pass_forward"
    dtype, hops, mask, flags1 = _check_forward(params, cfg, batch, mask, memory1, fn)
    ctx1, ctx2 = batch.ctx1, batch.ctx2
    B = ctx1.shape[0]
    xp = get_xp(unbox(params["tok_emb"]))
    two_hop = xp.flatnonzero(hops == 2)  # (B₂,)
    sel = (xp.arange(B)[:, None] == two_hop[None, :]).astype(dtype)  # (B, B₂)
    one_hop = (hops == 1).astype(dtype)  # (B,)

    # read 1: the single-hop answer, or the bridge entity (from memory1: its encoder states computed once,
    # its flags included)
    _, c1 = _forward(params, cfg, ctx1, batch.ans1_in, batch.ans1_out, mask, None if memory1 is not None else flags1,
                     False, memory1)
    p1, _ = ops.softmax_forward(c1.logits[:, 0])  # (B, V)
    nll = one_hop * c1.nll  # (B,)
    logprobs = one_hop[:, None] * c1.logprobs  # (B, T1)
    c2 = flags2 = None
    sub2 = ctx2[two_hop]  # (B₂, N, L)
    if two_hop.size:
        # read 2 on the two-hop rows: the bridge entity marked softly by p1
        flags2 = _soft_flags(sub2, p1[two_hop], cfg.pad_id)  # (B₂, N, L)
        m2 = None if mask is None else mask[two_hop]  # (B₂, N)
        _, c2 = _forward(params, cfg, sub2, batch.ans_in[two_hop], batch.ans_out[two_hop], m2, flags2, False, None)
        nll = nll + sel @ c2.nll  # (B,)
        T = max(logprobs.shape[1], c2.logprobs.shape[1])
        logprobs = _pad_cols(logprobs, T, 0.0) + sel @ _pad_cols(c2.logprobs, T, 0.0)  # (B, T)
    loss = get_xp(nll).mean(nll)  # ()
    check_finite_output(fn, loss, params)
    cache = TwoPassCache(logprobs, nll, p1, flags2, c1, c2, two_hop, sel, one_hop, sub2, cfg)
    return loss, cache


def two_pass_backward(dloss, cache, *, param_grads=False):
    """(dparams or None, dmask (B, N)) of two_pass_forward's loss. param_grads=False (the frozen reader):
    no parameter gradient, read 2's encoder runs backward to its flags only and read 1's encoder not at all.
    param_grads=True: the gradient of every parameter, summed over both reads (not for a forward given
    memory1: read 1's encoder cache is not kept)."""
    fn = "two_pass_backward"
    check_cache(fn, cache, TwoPassCache, forward="two_pass_forward")
    dloss = check_dloss(fn, dloss)
    if check_bool(fn, "param_grads", param_grads) and cache.read1.enc is None:
        fail(fn, "param_grads", True, "False for a forward given memory1= (read 1's encoder cache is not kept)")
    cfg = cache.cfg
    c1, c2 = cache.read1, cache.read2
    B = c1.logits.shape[0]
    # nll = one_hop * nll¹ + sel @ nll²,  loss = mean(nll);  read 1's CE backward carries 1/B per row already
    dlogits1 = ops.cross_entropy_backward(dloss, c1.ce) * cache.one_hop[:, None, None]  # (B, T1, V)
    dP2 = dM2 = None
    if c2 is not None:
        B2 = c2.logits.shape[0]
        # read 2's CE backward carries 1/B₂ per row: scale to 1/B
        dP2, dM2, dF2 = reader_backward(dloss * (B2 / B), c2, param_grads=param_grads, flag_grads=True)
        # flags2 = soft_flags(ctx2[two_hop], p1[two_hop])
        dp1 = _soft_flags_backward(dF2, cache.ctx2, cfg.vocab_size, cfg.pad_id)  # (B₂, V)
        # p1 = softmax(logits¹[:, 0])
        dz = ops.softmax_backward(dp1, ops.SoftmaxCache(cache.p1[cache.two_hop]))  # (B₂, V)
        dlogits1[:, 0] += cache.sel @ dz  # (B, V)
    dP1, dM = reader_logits_backward(dlogits1, c1, param_grads=param_grads)
    if dM2 is not None:
        dM = dM + cache.sel @ dM2  # (B, N)
    if not param_grads:
        return None, dM
    if dP2 is not None:
        dP1 = {k: g + dP2[k] for k, g in dP1.items()}
    return dP1, dM


# ---------------------------------------------------------------------------------------------------------
# inference


def two_pass_first_hop(params, cfg, ctx1, flags1, mask=None, *, memory1=None):
    """p1 (B, V): read 1's distribution over its first answer token (the bridge entity on two-hop rows).
    memory1: read 1's memory of these rows (flags1 is then not read)."""
    fn = "two_pass_first_hop"
    _check_two_pass(cfg, fn)
    c = check_token_ids(fn, "ctx1", ctx1, ndim=3, vocab_size=cfg.vocab_size)
    xp = get_xp(c)
    bos = xp.full((c.shape[0], 1), cfg.bos_id, dtype=c.dtype)  # (B, 1)
    eos = xp.full((c.shape[0], 1), cfg.eos_id, dtype=c.dtype)  # (B, 1), any target: only the logits are used
    if memory1 is None:
        _, cache = reader_forward(params, cfg, ctx1, bos, eos, mask, flags=flags1)
    else:
        _, cache = reader_forward(params, cfg, ctx1, bos, eos, mask, memory=memory1)
    return ops.softmax_forward(cache.logits[:, 0])[0]  # (B, V)


def two_pass_decode(params, cfg, ctx1, flags1, ctx2, hops, mask=None, *, max_len=None, memory1=None):
    """Greedy answers (B, T'): read 1 decoded on single-hop rows; on two-hop rows read 2 decoded with the
    soft flags of read 1's p1 (the bridge entity is never decoded). Tokens up to EOS, then pad_id.
    memory1: two_pass_memory of these rows (read 1 then skips its encoder; bit-identical answers)."""
    fn = "two_pass_decode"
    _check_two_pass(cfg, fn)
    c1 = check_token_ids(fn, "ctx1", ctx1, ndim=3, vocab_size=cfg.vocab_size)
    c2 = check_token_ids(fn, "ctx2", ctx2, ndim=3, vocab_size=cfg.vocab_size)
    if c2.shape != c1.shape:
        fail(fn, "ctx2.shape", c2.shape, f"ctx1.shape={c1.shape}")
    B = c1.shape[0]
    h = _check_hops(hops, B, fn)
    xp = get_xp(c1)
    rows = [xp.flatnonzero(h == 1), xp.flatnonzero(h == 2)]
    outs = []
    for hop, r in zip((1, 2), rows):
        if not r.size:
            outs.append(None)
            continue
        m = None if mask is None else mask[r]
        f1 = None if flags1 is None else flags1[r]
        mem = None if memory1 is None else memory1.take(r)
        if hop == 1:
            if mem is None:
                outs.append(greedy_decode(params, cfg, c1[r], m, max_len=max_len, flags=f1))
            else:
                outs.append(greedy_decode(params, cfg, c1[r], m, max_len=max_len, memory=mem))
        else:
            p1 = two_pass_first_hop(params, cfg, c1[r], f1, m, memory1=mem)  # (B₂, V)
            f2 = soft_flags(c2[r], p1, pad_id=cfg.pad_id)  # (B₂, N, L)
            outs.append(greedy_decode(params, cfg, c2[r], m, max_len=max_len, flags=f2))
    T = max(o.shape[1] for o in outs if o is not None)
    out = xp.full((B, T), cfg.pad_id, dtype=c1.dtype)  # (B, T')
    for r, o in zip(rows, outs):
        if o is not None:
            out[r] = _pad_cols(o, T, cfg.pad_id)
    return out
