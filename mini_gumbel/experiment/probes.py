"""Two probes of what a set-aware reranker learned about links between documents (docs/method.md §14), on the
two-hop questions of a data split. Both rewrite document tokens only; the question, the gold labels and the
reader's answer are unchanged, and the rankers are scored on the rewritten candidates.

    cut_link(data, vocab, rng)    the bridge entity B in the bridge document (gold 1, "E1 r1 B") renamed to a name
                                  that occurs nowhere else in the example: the answer document ("B r2 A") no longer
                                  shares an entity with any candidate that names the question entity
    fake_link(data)               one target distractor ("X r2 Y", the answer document's look-alike) rewritten to
                                  "B r2 Y": it now shares the bridge entity with the bridge document, as the
                                  answer document does; returns the index of the rewritten candidate per question

A pointwise reranker scores each document alone, so the bridge entity's name means nothing to it and both probes
change its scores only through the renamed token's own embedding. A reranker that learned the link lifts the
answer document because of the bridge document; cutting the link should take that lift away, and faking one should
lift the impostor.

Dimension letters: S questions, N candidates, Ld document tokens.
"""
from __future__ import annotations

import numpy as np

from ..data import GOLD_BRIDGE, TARGET, Dataset, Vocab
from ..validate import check_type, fail

__all__ = ["two_hop", "cut_link", "fake_link"]


def two_hop(data: Dataset) -> Dataset:
    """The two-hop questions of ``data``."""
    check_type("two_hop", "data", data, Dataset)
    return data.batch(np.flatnonzero(data.hops == 2))


def _check_two_hop(fn: str, data) -> None:
    check_type(fn, "data", data, Dataset)
    if len(data) == 0 or not np.all(data.hops == 2):
        fail(fn, "data.hops", data.hops, "two-hop questions only (probes.two_hop(data) selects them)")


def cut_link(data: Dataset, vocab: Vocab, rng: np.random.Generator) -> Dataset:
    """``data`` with the bridge entity B renamed, in the bridge document only, to a name token absent from the
    example's question and documents (drawn with ``rng``)."""
    fn = "cut_link"
    _check_two_hop(fn, data)
    check_type(fn, "vocab", vocab, Vocab)
    docs = data.docs.copy()  # (S, N, Ld)
    names = np.arange(vocab.name_offset, len(vocab))  # (n_names,)
    for s in range(len(data)):
        bridge_doc = int(np.flatnonzero(data.kind[s] == GOLD_BRIDGE)[0])
        used = np.union1d(data.docs[s].ravel(), data.question[s])
        fresh = np.setdiff1d(names, used)  # names nobody in this example carries
        where = docs[s, bridge_doc] == data.bridge[s]  # (Ld,)
        if not where.any():
            fail(fn, f"data.docs[{s}]", data.docs[s, bridge_doc], f"a bridge document naming B={data.bridge[s]}")
        docs[s, bridge_doc, where] = rng.choice(fresh)
    return _with_docs(data, docs)


def fake_link(data: Dataset):
    """(data with one target distractor per question rewritten to have the bridge entity B as its subject,
    the index (S,) of that candidate). The first target distractor is taken; its other tokens stay."""
    fn = "fake_link"
    _check_two_hop(fn, data)
    docs = data.docs.copy()  # (S, N, Ld)
    picked = np.empty(len(data), dtype=np.int64)  # (S,)
    for s in range(len(data)):
        targets = np.flatnonzero(data.kind[s] == TARGET)
        if targets.size == 0:
            fail(fn, f"data.kind[{s}]", data.kind[s], "a target distractor in every question")
        picked[s] = targets[0]
        docs[s, picked[s], 0] = data.bridge[s]  # "X r2 Y" -> "B r2 Y"
    return _with_docs(data, docs), picked


def _with_docs(data: Dataset, docs) -> Dataset:
    """``data`` with new documents and the FiD sequences ``question ⊕ SEP ⊕ doc`` rebuilt from them (the question's
    tokens are left-packed, so each row's document starts after its own question length and SEP)."""
    ctx = data.ctx.copy()  # (S, N, L)
    n_q = (data.question != Vocab.pad_id).sum(1)  # (S,)
    Ld = docs.shape[2]
    for s in range(len(data)):
        ctx[s, :, n_q[s] + 1:n_q[s] + 1 + Ld] = docs[s]
    return data._replace(docs=docs, ctx=ctx)
