"""The two rerankers behind one interface, as the training and evaluation code calls them.

    bilinear  mini_gumbel.reranker: each document scored on its own, w_i = φ(q)ᵀ W φ(d_i) (the paper's kind)
    listwise  mini_gumbel.listwise_reranker: the same first pass, then one interaction round in which each
              document's score gains a term from the others (docs/method.md §14); exactly the bilinear
              reranker at initialisation

A reranker's parameters say which it is (the listwise one has an interaction matrix "U"), so evaluation and
training dispatch on them and every method trains either model: the losses consume score gradients only.
"""
from __future__ import annotations

import numpy as np

from ..listwise_reranker import (ListwiseCache, init_listwise_reranker, listwise_reranker_backward,
                                 listwise_reranker_forward)
from ..reranker import init_reranker, reranker_backward, reranker_forward
from ..validate import check_choice

__all__ = ["RERANKERS", "ranker_kind", "init_ranker", "ranker_forward", "ranker_backward"]

RERANKERS = ("bilinear", "listwise")


def ranker_kind(params: dict) -> str:
    return "listwise" if isinstance(params, dict) and "U" in params else "bilinear"


def init_ranker(kind: str, vocab_size: int, dim: int, seed: int, *, dtype=np.float64, init: str = "lexical") -> dict:
    check_choice("init_ranker", "kind", kind, RERANKERS)
    make = init_listwise_reranker if kind == "listwise" else init_reranker
    return make(vocab_size, dim, seed, dtype=dtype, init=init)


def ranker_forward(params: dict, question, docs, *, pad_id: int = 0):
    """(scores (B, N), cache) of whichever reranker ``params`` are."""
    if ranker_kind(params) == "listwise":
        return listwise_reranker_forward(params, question, docs, pad_id=pad_id)
    return reranker_forward(params, question, docs, pad_id=pad_id)


def ranker_backward(dscores, cache) -> dict:
    """The parameter gradients of ranker_forward's scores."""
    if isinstance(cache, ListwiseCache):
        return listwise_reranker_backward(dscores, cache)
    return reranker_backward(dscores, cache)
