"""The frozen reader's loss of a hard set of documents, read from those documents only (docs/method.md §12).

The objective behind Gumbel Reranking is the expected loss of a *hard* top-K set, V = E_S[L(1_S)]; its exact
value sums over all C(N, K) sets and REINFORCE needs L at m sampled sets per example. Both need the table

    c[b, r] = L_b(1_{S_br}),      S_br = subsets[b, r] ⊂ {0, ..., N−1},  |S_br| = K          (B, R)

the frozen reader's per-example answer NLL of example b under the 0/1 mask of S_br. With a 0/1 mask DMA is
exactly dropping the other documents (every document is encoded on its own, at the same positions, §6), so
c[b, r] is computed by reading only the K documents of S_br: each cross-attention runs over K·L keys, not
N·L, and the keys and values of the mask-independent states (reader.ReaderMemory: the FiD reader's whole
encoder, the two-pass reader's read 1) are computed once per example and gathered per set
(``ReaderMemory.select``). The two-pass reader's read 2 depends on read 1's output and so on the set: its
encoder runs on the K documents of each set.

The losses are constants to the reranker (the reader is frozen): no cache, no gradient.

    c = subset_nll(reader_params, reader_cfg, batch, subsets)                     # (B, R) float64
    c = subset_nll(reader_params, reader_cfg, batch, subsets, memory=memory)     # states computed before

Dimension letters: B examples, R sets per example, N documents, K documents per set, L tokens per sequence.
"""
from __future__ import annotations

from typing import NamedTuple

from .backend import get_xp
from .gumbel_reranking import reader_memory_of
from .reader import ReaderMemory, check_doc_indices, reader_forward
from .two_pass_reader import TwoPassBatch, select_docs, two_pass_forward
from .validate import check_array, check_int, check_type, fail

__all__ = ["subset_nll"]


class _FiDInputs(NamedTuple):
    """The three arrays the FiD reader reads (a data.Dataset batch carries more)."""
    ctx: object  # (B, N, L)
    ans_in: object  # (B, T)
    ans_out: object  # (B, T)


def _rows(batch, idx):
    """The examples ``idx`` of the reader's inputs (every field of a TwoPassBatch; FiD's three arrays)."""
    if isinstance(batch, TwoPassBatch):
        return TwoPassBatch(*(a[idx] for a in batch))
    return _FiDInputs(batch.ctx[idx], batch.ans_in[idx], batch.ans_out[idx])


def _read(reader_params, reader_cfg, inputs, memory, docs):
    """Answer NLL (rows,) of ``inputs`` (rows examples) reading only the documents docs (rows, K); memory: the
    mask-independent states of exactly those documents (ReaderMemory.select)."""
    if isinstance(inputs, TwoPassBatch):
        _, cache = two_pass_forward(reader_params, reader_cfg, select_docs(inputs, docs), memory1=memory)
    else:
        at = get_xp(docs).arange(docs.shape[0])[:, None]  # (rows, 1)
        _, cache = reader_forward(reader_params, reader_cfg, inputs.ctx[at, docs], inputs.ans_in, inputs.ans_out,
                                  memory=memory)
    return cache.nll  # (rows,)


def subset_nll(reader_params, reader_cfg, batch, subsets, *, memory=None, chunk=512, progress=None):
    """c (B, R) float64: the frozen reader's answer NLL of example b reading only the documents subsets[b, r].

    batch: the reader's inputs, a two_pass_reader.TwoPassBatch or, for the FiD reader, anything with .ctx
    (B, N, L), .ans_in and .ans_out (B, T). subsets (B, R, K) int, every row K distinct indices in [0, N) (any
    order: the loss is a set function, up to round-off). memory: the reader's mask-independent states of
    ``batch`` (gumbel_reranking.reader_memory_of, or rows of it), or None to compute them here, once per example.
    chunk: example-set rows per reader call (the activations of one chunk are all that is held). progress: a
    tqdm-like callable wrapping an iterable (of groups of examples), for long tables.
    """
    fn = "subset_nll"
    two_pass = isinstance(batch, TwoPassBatch)
    if not two_pass and not all(hasattr(batch, a) for a in ("ctx", "ans_in", "ans_out")):
        fail(fn, "batch", f"<a {type(batch).__name__}>", "a TwoPassBatch, or for the FiD reader anything with "
             ".ctx, .ans_in and .ans_out", TypeError)
    ctx = check_array(fn, "batch.ctx1" if two_pass else "batch.ctx", batch.ctx1 if two_pass else batch.ctx,
                      ndim=3, kind="iu")
    B, N, L = ctx.shape
    subsets = check_doc_indices(fn, "subsets", subsets, N, B=B, dims=("B", "R", "K"))
    R, K = subsets.shape[1:]
    if R < 1:
        fail(fn, "subsets.shape", tuple(subsets.shape), "at least one set per example (R >= 1)")
    chunk = check_int(fn, "chunk", chunk, lo=1)
    if progress is not None and not callable(progress):
        fail(fn, "progress", progress, "None or a callable wrapping an iterable (e.g. tqdm)", TypeError)
    if memory is not None:
        check_type(fn, "memory", memory, ReaderMemory, "a ReaderMemory from gumbel_reranking.reader_memory_of")
        if tuple(memory.shape) != (B, N, L):
            fail(fn, "memory.shape", tuple(memory.shape), f"(B, N, L)={(B, N, L)} of the batch's documents")
    xp = get_xp(reader_params["tok_emb"], subsets)
    G = max(1, chunk // R)  # examples per group: their memory is computed once, when not given
    groups = range(0, B, G)
    out = []
    for b0 in (groups if progress is None else progress(groups)):
        part = _rows(batch, xp.arange(b0, min(b0 + G, B)))  # the group's examples
        mem, at = (reader_memory_of(reader_params, reader_cfg, part), 0) if memory is None else (memory, b0)
        flat = xp.reshape(subsets[b0:b0 + G], (-1, K))  # (G·R, K) example-set rows
        for s in range(0, flat.shape[0], chunk):
            r = xp.arange(s, min(s + chunk, flat.shape[0])) // R  # (rows,) each row's example in the group
            docs = flat[s:s + chunk]  # (rows, K)
            out.append(_read(reader_params, reader_cfg, _rows(part, r), mem.select(docs, rows=at + r), docs))
    return xp.reshape(xp.concatenate(out), (B, R)).astype(xp.float64)  # (B, R)
