"""The two readers behind one interface, as the training and evaluation code calls them.

    two_pass  mini_gumbel.two_pass_reader: read 1 answers the inner single-hop question, read 2 the outer
              one with the bridge marked softly in the documents; the default (docs/method.md §6.6)
    fid       mini_gumbel.reader on ``question ⊕ SEP ⊕ doc``: the one-pass control, which cannot use a
              bridge document

Everything here turns a ``data.Dataset`` batch into the reader's inputs and dispatches: the answer NLL
under a document mask and its mask gradient (Gumbel Reranking, LOOP), one-document-at-a-time token
log-probs (PDist, EMDR), the final read's cross-attention (ADist), and greedy answers (evaluation).

Dimension letters: B batch, N candidates, L tokens per encoder sequence, T answer tokens, V vocabulary.
"""
from __future__ import annotations

import numpy as np

from ..data import Dataset, Vocab
from ..reader import ReaderConfig, greedy_decode, reader_backward, reader_forward
from ..two_pass_reader import (TwoPassBatch, entity_flags, read_ctx, soft_flags, two_pass_backward,
                               two_pass_decode, two_pass_first_hop, two_pass_forward)

__all__ = ["reader_kind", "reader_inputs", "answer_nll", "answer_nll_mask_grad", "predict",
           "one_doc_logprobs", "final_read_attention", "no_doc_batch"]


def reader_kind(cfg: ReaderConfig) -> str:
    return "two_pass" if cfg.exact_match else "fid"


def two_pass_inputs(b: Dataset) -> TwoPassBatch:
    """A Dataset batch as the two-pass reader's inputs: read 1 asks hop_words[:, 0] about E1 (flags hard on
    E1) and is trained on the answer (single-hop) or the bridge B (two-hop); read 2 asks hop_words[:, 1]."""
    two = b.hops == 2  # (B,)
    ctx1 = read_ctx(b.docs, b.hop_words[:, 0], ent_id=Vocab.ent_id, sep_id=Vocab.sep_id)  # (B, N, L)
    flags1 = entity_flags(ctx1, b.entity)  # (B, N, L)
    B = len(b)
    ans1_in = np.where(two[:, None], np.stack([np.full(B, Vocab.bos_id), b.bridge], 1), b.ans_in)  # (B, T)
    ans1_out = np.where(two[:, None], np.stack([b.bridge, np.full(B, Vocab.eos_id)], 1), b.ans_out)  # (B, T)
    w2 = np.where(two, b.hop_words[:, 1], b.hop_words[:, 0])  # (B,) single-hop rows: read 2 is ignored
    ctx2 = read_ctx(b.docs, w2, ent_id=Vocab.ent_id, sep_id=Vocab.sep_id)  # (B, N, L)
    return TwoPassBatch(ctx1, flags1, ans1_in, ans1_out, ctx2, b.ans_in, b.ans_out, b.hops)


def reader_inputs(b: Dataset, cfg: ReaderConfig):
    """What the reader of ``cfg`` reads: a TwoPassBatch, or the Dataset batch itself (FiD reads b.ctx)."""
    return two_pass_inputs(b) if cfg.exact_match else b


def answer_nll(params, cfg: ReaderConfig, inputs, mask=None, *, memory=None):
    """(loss, cache): the batch mean answer NLL under the document mask; cache.nll (B,) per example.
    memory: gumbel_reranking.reader_memory_of(params, cfg, inputs) (or its rows, one per example): the same
    result, bit for bit, without recomputing the mask-independent states; the cache then serves the frozen backward only."""
    if isinstance(inputs, TwoPassBatch):
        return two_pass_forward(params, cfg, inputs, mask, memory1=memory)
    return reader_forward(params, cfg, inputs.ctx, inputs.ans_in, inputs.ans_out, mask, memory=memory)


def answer_nll_mask_grad(cache, inputs) -> np.ndarray:
    """dloss/dmask (B, N) of answer_nll's loss, the reader frozen (no parameter gradient)."""
    if isinstance(inputs, TwoPassBatch):
        return two_pass_backward(1.0, cache, param_grads=False)[1]
    return reader_backward(1.0, cache, param_grads=False)[1]


def predict(params, cfg: ReaderConfig, inputs, mask=None, *, max_len=None, memory=None):
    """Greedy answers (B, T') from the documents the mask keeps; memory: the reader's mask-independent states,
    gumbel_reranking.reader_memory_of(params, cfg, inputs)."""
    if isinstance(inputs, TwoPassBatch):
        return two_pass_decode(params, cfg, inputs.ctx1, inputs.flags1, inputs.ctx2, inputs.hops, mask,
                               max_len=max_len, memory1=memory)
    return greedy_decode(params, cfg, inputs.ctx, mask, max_len=max_len, memory=memory)


def _one_doc_each(inputs: TwoPassBatch) -> TwoPassBatch:
    """Every document as its own example: (B, N, L) -> (B·N, 1, L), the per-example arrays repeated N times."""
    B, N = inputs.ctx1.shape[:2]

    def docs(a):
        return a.reshape((B * N, 1) + a.shape[2:])

    def rep(a):
        return np.repeat(a, N, axis=0)

    return TwoPassBatch(docs(inputs.ctx1), docs(inputs.flags1), rep(inputs.ans1_in), rep(inputs.ans1_out),
                        docs(inputs.ctx2), rep(inputs.ans_in), rep(inputs.ans_out), rep(inputs.hops))


def one_doc_logprobs(params, cfg: ReaderConfig, inputs) -> np.ndarray:
    """Token log-probs of the answer with the reader given ONE document at a time: (B, N, T)."""
    if isinstance(inputs, TwoPassBatch):
        B, N = inputs.ctx1.shape[:2]
        _, cache = two_pass_forward(params, cfg, _one_doc_each(inputs))
        return np.asarray(cache.logprobs).reshape(B, N, -1)
    B, N, L = inputs.ctx.shape
    _, cache = reader_forward(params, cfg, inputs.ctx.reshape(B * N, 1, L), np.repeat(inputs.ans_in, N, axis=0),
                              np.repeat(inputs.ans_out, N, axis=0))
    return np.asarray(cache.logprobs).reshape(B, N, -1)


def final_read_attention(params, cfg: ReaderConfig, inputs):
    """(xattn, key_pad) of the read that produces the answer: the FiD reader's only read; for the two-pass
    reader read 2 on two-hop rows (its flags soft from read 1) and read 1 on single-hop rows."""
    if not isinstance(inputs, TwoPassBatch):
        _, cache = reader_forward(params, cfg, inputs.ctx, inputs.ans_in, inputs.ans_out, need_attn=True)
        return cache.xattn, cache.key_pad
    p1 = two_pass_first_hop(params, cfg, inputs.ctx1, inputs.flags1)  # (B, V)
    two = (inputs.hops == 2)[:, None, None]  # (B, 1, 1)
    ctx = np.where(two, inputs.ctx2, inputs.ctx1)  # (B, N, L)
    flags = np.where(two, soft_flags(inputs.ctx2, p1), inputs.flags1).astype(params["tok_emb"].dtype)
    _, cache = reader_forward(params, cfg, ctx, inputs.ans_in, inputs.ans_out, flags=flags, need_attn=True)
    return cache.xattn, cache.key_pad


def no_doc_batch(b: Dataset, cfg: ReaderConfig):
    """The reader's inputs with no document at all: one sequence per read holding only the question part
    (``question ⊕ SEP`` for FiD, ``[w, ENT, SEP]`` for each two-pass read), so the reader can only guess."""
    if cfg.exact_match:
        empty = np.full((len(b), 1, b.docs.shape[2]), Vocab.pad_id, b.docs.dtype)  # (B, 1, Ld)
        return two_pass_inputs(b._replace(docs=empty))
    S, N, L = b.ctx.shape
    q = b.question
    n_q = (q != Vocab.pad_id).sum(1)  # (S,)
    pos = np.arange(L)[None, :]  # (1, L)
    qpad = np.concatenate([q, np.full((S, max(L - q.shape[1], 0)), Vocab.pad_id, q.dtype)], 1)[:, :L]  # (S, L)
    out = np.where(pos < n_q[:, None], qpad, Vocab.pad_id)  # (S, L) question tokens are left-packed
    out = np.where(pos == n_q[:, None], Vocab.sep_id, out)  # (S, L)
    return b._replace(ctx=out[:, None, :])

