"""A tiny Fusion-in-Decoder (FiD) reader with Differentiable Masked Attention (docs/method.md §6).

Encoder: each of the B·N sequences ``question ⊕ SEP ⊕ document`` (L tokens, shared position ids 0..L−1) is
read on its own by a pre-LN transformer, batched as (B·N, L, C). Decoder: teacher-forced on ``ans_in`` with
causal self-attention, then cross-attention over all N·L encoder states of its example in every layer, with the
document mask M (B, N) applied as DMA in every layer and head; a final LN and an LM head.

Choices (ours): the token embedding is shared by encoder and decoder inputs; the LM head is a separate
(C, V) matrix plus bias, *not* tied to the embedding, so that the pad token's embedding provably never
matters (its gradient is exactly 0). Layer norm eps 1e-5, GELU (tanh), no dropout.

Exact-match flags (``cfg.exact_match=True``, ours after DrQA's exact-match feature, made soft): the encoder
input gains ``flags[..., None] * em_vec`` with flags (B, N, L) in [0, 1] and one learned vector em_vec (C,):

    x = tok_emb[ids] + enc_pos[:L] + flags[..., None] * em_vec          (B·N, L, C)

flags=None means all zeros (the term is skipped, so the result is bit-identical). The gradient reaches flags
through the encoder only: dflags = Σ_c dx[..., c] em_vec[c].

Dimension letters: B batch, N documents, L tokens per encoder sequence, S = N·L, T answer tokens,
C width, H heads, F feed-forward width, V vocabulary.

    params = init_reader(cfg, seed)
    loss, cache = reader_forward(params, cfg, ctx, ans_in, ans_out, mask)
    dparams, dmask = reader_backward(1.0, cache)                     # training the reader
    _, dmask = reader_backward(1.0, cache, param_grads=False)        # frozen reader: encoder skipped
    loss, cache = reader_forward(params, cfg, ctx, ans_in, ans_out, mask, flags=flags)   # cfg.exact_match
    _, dmask, dflags = reader_backward(1.0, cache, param_grads=False, flag_grads=True)
    dparams, dmask = reader_logits_backward(dlogits, cache)          # from a loss on cache.logits
    memory = reader_memory(params, cfg, ctx)                         # mask-independent: compute once, reuse
    loss, cache = reader_forward(params, cfg, ctx, ans_in, ans_out, mask, memory=memory.take(idx)) # frozen only
    memory_S = memory.select(docs)                                   # docs (B, K): read only ctx[b, docs[b]]

The document mask. M (B, N) weighs each document's keys in every cross-attention (DMA); only the ratios
within a row matter (a_u = M_doc(u) e_u / Σ_v M_doc(v) e_v is unchanged when a row is scaled). It is cast to
the parameters' dtype first and checked after the cast: finite, >= 0, and each row's largest weight in
[√tiny, 1/√tiny] of that dtype (float32 [1.1e-19, 9.2e18], float64 [1.5e-154, 6.7e153]). A row below that
range -- all zero, or underflowing in the cast, e.g. float64 1e-300 under float32 parameters -- keeps no
document the dtype can weigh: its mask gradient grows like 1/M and would overflow, so it is a named error,
never a NaN loss. A row above it (e.g. [1e300, 1, 1, 1], which overflows to inf in float32) is rejected the
same way. Rescale such a row instead (it changes nothing else). ``mask_range(dtype)`` gives the bounds.
Entries may exceed 1 (the "iterative" relaxed top-K sums to K, and its entries can pass 1), and entries
below the range next to a larger one are kept as they are (they weigh their keys by that amount).

What the mask cannot reach. The encoder reads every sequence on its own and the mask enters only the
decoder's cross-attention, so the encoder states and each decoder layer's cross-attention keys and values
(``ReaderMemory``) are the same under every mask. ``reader_memory`` computes them once; a forward given
``memory=`` skips the encoder and the key/value projections and gives bit-identical outputs, and its cache
supports the frozen backward only (param_grads=False, no flag gradients), which is all a reranker's
training step needs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Optional

import numpy as np

from . import ops
from .backend import get_xp, is_traced, to_numpy, unbox
from .validate import (check_array, check_bool, check_cache, check_dloss, check_finite_output, check_float_dtype,
                       check_int, check_seed,
                       check_token_ids, check_type, fail)

__all__ = ["ReaderConfig", "ReaderCache", "ReaderMemory", "init_reader", "reader_forward", "reader_backward",
           "reader_logits_backward", "greedy_decode", "reader_encode", "reader_memory", "param_shapes",
           "mask_range", "check_doc_indices"]


@dataclass(frozen=True)
class ReaderConfig:
    vocab_size: int
    d_model: int = 64
    n_heads: int = 4
    n_enc_layers: int = 2
    n_dec_layers: int = 2
    d_ff: int = 256
    max_ctx_len: int = 32  # L positions
    max_ans_len: int = 8  # T positions
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    exact_match: bool = False  # encoder input + flags * em_vec (module docstring)

    def __post_init__(self):
        fn = "ReaderConfig"
        for name in ("vocab_size", "d_model", "n_heads", "d_ff", "max_ctx_len", "max_ans_len"):
            check_int(fn, name, getattr(self, name), lo=1)
        check_int(fn, "n_enc_layers", self.n_enc_layers, lo=0)
        check_int(fn, "n_dec_layers", self.n_dec_layers, lo=1)
        if self.d_model % self.n_heads:
            fail(fn, "d_model", self.d_model, f"a multiple of n_heads={self.n_heads}")
        for name in ("pad_id", "bos_id", "eos_id"):
            check_int(fn, name, getattr(self, name), lo=0, hi=self.vocab_size - 1)
        if len({self.pad_id, self.bos_id, self.eos_id}) < 3:
            fail(fn, "(pad_id, bos_id, eos_id)", (self.pad_id, self.bos_id, self.eos_id), "three different ids")
        check_bool(fn, "exact_match", self.exact_match)


# ---------------------------------------------------------------------------------------------------------
# parameters


def param_shapes(cfg: ReaderConfig) -> dict:
    """Name -> shape of every parameter, in a fixed order (``em_vec`` last and only with cfg.exact_match, so
    the other parameters, their initial values and existing checkpoints are unchanged)."""
    C, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    shapes = {"tok_emb": (V, C), "enc_pos": (cfg.max_ctx_len, C), "dec_pos": (cfg.max_ans_len, C)}

    def ln(prefix):
        shapes[prefix + "g"] = (C,)
        shapes[prefix + "b"] = (C,)

    def mlp(prefix):
        shapes.update({prefix + "W1": (C, F), prefix + "b1": (F,), prefix + "W2": (F, C), prefix + "b2": (C,)})

    def self_attn(prefix):
        shapes.update({prefix + "Wqkv": (C, 3 * C), prefix + "bqkv": (3 * C,), prefix + "Wo": (C, C),
                       prefix + "bo": (C,)})

    for l in range(cfg.n_enc_layers):
        p = f"enc.{l}."
        ln(p + "ln1.")
        self_attn(p + "attn.")
        ln(p + "ln2.")
        mlp(p + "mlp.")
    ln("enc.lnf.")
    for l in range(cfg.n_dec_layers):
        p = f"dec.{l}."
        ln(p + "ln1.")
        self_attn(p + "self.")
        ln(p + "ln2.")
        shapes.update({p + "cross.Wq": (C, C), p + "cross.bq": (C,), p + "cross.Wkv": (C, 2 * C),
                       p + "cross.bkv": (2 * C,), p + "cross.Wo": (C, C), p + "cross.bo": (C,)})
        ln(p + "ln3.")
        mlp(p + "mlp.")
    ln("dec.lnf.")
    shapes.update({"lm.W": (C, V), "lm.b": (V,)})
    if cfg.exact_match:
        shapes["em_vec"] = (C,)
    return shapes


def init_reader(cfg: ReaderConfig, seed: int, *, dtype=np.float64) -> dict:
    """Parameters as a dict name -> array. Weights ~ N(0, 1/fan_in); the projections that write into the
    residual stream (attention Wo, MLP W2) are further scaled by 1/√(2·layers); LN g = 1, biases 0;
    embeddings N(0, 1) so that a token is a unit-scale vector before the first layer norm; em_vec N(0, 1)
    like a token embedding."""
    check_type("init_reader", "cfg", cfg, ReaderConfig)
    dtype = check_float_dtype("init_reader", "dtype", dtype)
    rng = np.random.default_rng(check_seed("init_reader", seed))
    n_res = 2 * max(cfg.n_enc_layers + cfg.n_dec_layers, 1)
    params = {}
    for name, shape in param_shapes(cfg).items():
        leaf = name.rsplit(".", 1)[-1]
        if name in ("tok_emb", "enc_pos", "dec_pos", "em_vec"):
            w = rng.standard_normal(shape) * (0.3 if name.endswith("pos") else 1.0)
        elif leaf == "g":
            w = np.ones(shape)
        elif len(shape) == 1:
            w = np.zeros(shape)
        else:
            w = rng.standard_normal(shape) / np.sqrt(shape[0])
            if leaf in ("Wo", "W2"):
                w = w / np.sqrt(n_res)
        params[name] = w.astype(dtype)
    return params


def _sub(params, prefix):
    n = len(prefix)
    return {k[n:]: v for k, v in params.items() if k.startswith(prefix)}


def _put(grads, prefix, sub):
    for k, v in sub.items():
        grads[prefix + k] = v


# ---------------------------------------------------------------------------------------------------------
# validation (shared checks in mini_gumbel.validate; these know the reader's shapes)


def _check_params(params, cfg, fn, name="params", cfg_name="cfg"):
    check_type(fn, cfg_name, cfg, ReaderConfig)
    params = check_type(fn, name, unbox(params), dict, "a dict[str, array] from init_reader")  # autograd
    # wraps a traced dict in a box
    shapes = param_shapes(cfg)
    missing = [k for k in shapes if k not in params]
    if missing:
        fail(fn, name, f"<dict without {missing[:5]}>", "every key of param_shapes(cfg)")
    tok = check_array(fn, f"{name}['tok_emb']", params["tok_emb"])
    dtype = check_float_dtype(fn, f"{name}['tok_emb'].dtype", tok.dtype)
    for k, shape in shapes.items():
        a = check_array(fn, f"{name}[{k!r}]", params[k], shape=shape)
        if a.dtype != dtype:
            fail(fn, f"{name}[{k!r}].dtype", a.dtype, f"{dtype} like {name}['tok_emb']", TypeError)
    return dtype


def _check_ctx(ctx, cfg, fn, name="ctx"):
    check_token_ids(fn, name, ctx, ndim=3, vocab_size=cfg.vocab_size)
    B, N, L = ctx.shape
    if B < 1 or N < 1 or not 1 <= L <= cfg.max_ctx_len:
        fail(fn, f"{name}.shape", ctx.shape, f"(B, N, L) with B, N >= 1 and 1 <= L <= max_ctx_len={cfg.max_ctx_len}")
    empty = np.asarray(to_numpy((ctx == cfg.pad_id).all(axis=-1)))  # (B, N)
    if empty.any():
        b, n = np.argwhere(empty)[0]
        fail(fn, f"{name}[{b}, {n}]", "<all padding>", f"a question in every sequence (pad_id={cfg.pad_id})")


def _check_answer(name, a, B, cfg, fn):
    check_token_ids(fn, name, a, ndim=2, vocab_size=cfg.vocab_size)
    if a.shape[0] != B or not 1 <= a.shape[1] <= cfg.max_ans_len:
        fail(fn, f"{name}.shape", a.shape, f"(B={B}, T) with 1 <= T <= max_ans_len={cfg.max_ans_len}")


def mask_range(dtype) -> tuple:
    """(lo, hi): the range a document-mask row's largest weight must lie in, for parameters of ``dtype``
    (√tiny and 1/√tiny: the mask gradient, of order 1/M, and Σ M e stay finite; module docstring)."""
    r = math.sqrt(float(np.finfo(dtype).tiny))
    return r, 1.0 / r


def _check_mask(mask, B, N, dtype, fn):
    """The mask cast to the parameters' dtype, checked after the cast (module docstring)."""
    if mask is None:
        return None
    check_array(fn, "mask", mask, shape=(B, N))
    if unbox(mask).dtype != dtype and not is_traced(mask):
        with np.errstate(over="ignore"):  # an overflow in the cast is reported below, by name
            mask = mask.astype(dtype)
    m = unbox(mask)
    xp = get_xp(m)
    if not bool(xp.all(xp.isfinite(m))):
        fail(fn, "mask", mask, f"finite values in {np.dtype(dtype).name}, the parameters' dtype")
    if bool(xp.any(m < 0)):
        fail(fn, "mask", mask, f"values >= 0 (min {float(m.min())})")
    lo, hi = mask_range(dtype)
    top = xp.max(m, axis=-1)  # (B,)
    bad = (top < lo) | (top > hi)  # (B,)
    if bool(xp.any(bad)):
        b = int(xp.argmax(bad))
        fail(fn, f"mask[{b}].max()", float(top[b]),
             f"a row maximum in [{lo:.2g}, {hi:.2g}] in {np.dtype(dtype).name} (the parameters' dtype; a row "
             "below it keeps no document the dtype can weigh; DMA only sees ratios, so rescale the row)")
    return mask


def _check_flags(flags, cfg, shape, dtype, fn, name="flags"):
    if flags is None:
        return None
    if not cfg.exact_match:
        fail(fn, name, flags, "None when cfg.exact_match=False (ReaderConfig(exact_match=True) adds em_vec)")
    f = check_array(fn, name, flags, shape=shape, finite=True, nonneg=True)
    if f.size and float(f.max()) > 1.0:
        fail(fn, name, flags, f"values in [0, 1] (max {float(f.max())})")
    if f.dtype != dtype and not is_traced(flags):
        flags = flags.astype(dtype)
    return flags


# ---------------------------------------------------------------------------------------------------------
# encoder


class EncoderCache(NamedTuple):
    emb: ops.EmbeddingCache
    layers: list  # per layer (ln1, attn, ln2, mlp) caches
    lnf: ops.LayerNormCache
    BN_L: tuple  # (B, N, L)
    flags: object  # (B·N, L) exact-match flags, None when not given (all zeros)
    em_vec: object  # (C,) params["em_vec"], None without cfg.exact_match


def _encoder_forward(params, cfg, ctx, flags=None):
    B, N, L = ctx.shape
    xp = get_xp(params["tok_emb"], flags)
    ids = ctx.reshape(B * N, L)  # (B·N, L)
    key_pad = ids == cfg.pad_id  # (B·N, L)
    x, c_emb = ops.embedding_forward(ids, params["tok_emb"])  # (B·N, L, C)
    x = x + params["enc_pos"][:L]  # (B·N, L, C)
    em_vec = params["em_vec"] if cfg.exact_match else None
    if flags is not None:
        flags = xp.reshape(flags, (B * N, L))  # (B·N, L)
        x = x + flags[:, :, None] * em_vec  # (B·N, L, C)
    layers = []
    for l in range(cfg.n_enc_layers):
        p = f"enc.{l}."
        h, c1 = ops.layernorm_forward(x, params[p + "ln1.g"], params[p + "ln1.b"])  # (B·N, L, C)
        h, c2 = ops.self_attention_forward(h, _sub(params, p + "attn."), cfg.n_heads, key_pad=key_pad)
        x = x + h  # (B·N, L, C)
        h, c3 = ops.layernorm_forward(x, params[p + "ln2.g"], params[p + "ln2.b"])  # (B·N, L, C)
        h, c4 = ops.mlp_forward(h, _sub(params, p + "mlp."))  # (B·N, L, C)
        x = x + h  # (B·N, L, C)
        layers.append((c1, c2, c3, c4))
    x, c_f = ops.layernorm_forward(x, params["enc.lnf.g"], params["enc.lnf.b"])  # (B·N, L, C)
    return x, EncoderCache(c_emb, layers, c_f, (B, N, L), flags, em_vec)


def _residual_backward(dx, sub_backward, c_sub, c_ln, grads, sub_prefix, ln_prefix):
    """x = x + sub(ln(x)) -> dx + d sub(ln(x))/dx; the sublayer's and the LN's gradients go into ``grads``
    under ``sub_prefix`` / ``ln_prefix`` (grads None: a frozen model, input gradient only)."""
    pg = grads is not None
    dh, dp = sub_backward(dx, c_sub, param_grads=pg)
    dh, dg, db = ops.layernorm_backward(dh, c_ln, param_grads=pg)
    if pg:
        _put(grads, sub_prefix, dp)
        grads[ln_prefix + "g"], grads[ln_prefix + "b"] = dg, db
    return dx + dh


def _encoder_backward(dx, cache, cfg, grads):
    """dx (B·N, L, C) at the encoder output -> (dtok_emb (V, C) or None, dflags (B, N, L) or None).

    grads None: no parameter gradient, only the input gradient (the flags'). With grads, dflags is None
    unless cfg.exact_match.
    """
    B, N, L = cache.BN_L
    pg = grads is not None
    dx, dg, db = ops.layernorm_backward(dx, cache.lnf, param_grads=pg)  # (B·N, L, C)
    if pg:
        grads["enc.lnf.g"], grads["enc.lnf.b"] = dg, db
    for l in reversed(range(cfg.n_enc_layers)):
        p = f"enc.{l}."
        c1, c2, c3, c4 = cache.layers[l]
        # x = x + mlp(ln2(x))
        dx = _residual_backward(dx, ops.mlp_backward, c4, c3, grads, p + "mlp.", p + "ln2.")  # (B·N, L, C)
        # x = x + attn(ln1(x))
        dx = _residual_backward(dx, ops.self_attention_backward, c2, c1, grads, p + "attn.", p + "ln1.")
    xp = get_xp(dx)
    dflags = None
    if cache.em_vec is not None:
        # x = x + flags[:, :, None] * em_vec
        dflags = xp.reshape(dx @ cache.em_vec, (B, N, L))  # (B, N, L)
        if pg:
            C = dx.shape[-1]
            # flags=None skipped the term, i.e. flags = 0
            grads["em_vec"] = (xp.zeros(C, dx.dtype) if cache.flags is None
                               else xp.reshape(cache.flags, (-1,)) @ xp.reshape(dx, (-1, C)))  # (C,)
    if not pg:
        return None, dflags
    # x = tok_emb[ids] + enc_pos[:L]
    dpos_L = xp.sum(dx, axis=0)  # (L, C)
    if L < cfg.max_ctx_len:
        dpos_L = xp.concatenate([dpos_L, xp.zeros((cfg.max_ctx_len - L, dx.shape[-1]), dx.dtype)])
    grads["enc_pos"] = dpos_L  # (max_ctx_len, C)
    return ops.embedding_backward(dx, cache.emb), dflags  # (V, C), (B, N, L)


def reader_encode(params, cfg, ctx, flags=None):
    """Encoder states (B, N, L, C) of ``ctx`` (B, N, L) (and exact-match ``flags`` (B, N, L) with
    cfg.exact_match); independent of the document mask."""
    dtype = _check_params(params, cfg, "reader_encode")
    _check_ctx(ctx, cfg, "reader_encode")
    flags = _check_flags(flags, cfg, ctx.shape, dtype, "reader_encode")
    B, N, L = ctx.shape
    x, _ = _encoder_forward(params, cfg, ctx, flags)
    return get_xp(x).reshape(x, (B, N, L, cfg.d_model))


# ---------------------------------------------------------------------------------------------------------
# decoder


class DecoderCache(NamedTuple):
    layers: list  # per layer (ln1, self, ln2, cross, ln3, mlp) caches
    lnf: ops.LayerNormCache
    head: ops.LinearCache
    emb: ops.EmbeddingCache
    T: int


def _cross_kv(params, cfg, mem):
    """Per decoder layer (k, v) of the encoder memory (B, S, C), and their caches."""
    kvs, caches = [], []
    for l in range(cfg.n_dec_layers):
        kv, c = ops.cross_kv_forward(mem, _sub(params, f"dec.{l}.cross."), cfg.n_heads)
        kvs.append(kv)
        caches.append(c)
    return kvs, caches


def check_doc_indices(fn, name, docs, n_docs, *, B, dims=("B", "K")):
    """``docs`` of len(dims) axes (their names, for the message), the first of size B: an integer array whose
    every row (last axis, K >= 1) holds distinct document indices in [0, n_docs). Returns the raw array.
    Shared by ReaderMemory.select, two_pass_reader.select_docs and hard_subsets.subset_nll."""
    d = check_array(fn, name, docs, kind="iu")
    if d.ndim != len(dims) or d.shape[0] != B:
        fail(fn, f"{name}.shape", tuple(d.shape), f"({', '.join([f'{dims[0]}={B}', *dims[1:]])})")
    if d.shape[-1] < 1:
        fail(fn, f"{name}.shape", tuple(d.shape), "at least one document per row (K >= 1)")
    if not d.size:
        return d
    xp = get_xp(d)
    lo, hi = int(d.min()), int(d.max())
    if lo < 0 or hi >= n_docs:
        fail(fn, name, docs, f"document indices in [0, N={n_docs}) (found indices in [{lo}, {hi}])")
    srt = xp.sort(d, axis=-1)  # (..., K)
    repeated = xp.any(srt[..., 1:] == srt[..., :-1], axis=-1)  # (...)
    if bool(xp.any(repeated)):
        at = tuple(int(i) for i in to_numpy(xp.argwhere(repeated)[0]))
        row = tuple(int(i) for i in to_numpy(d[at]))
        fail(fn, f"{name}[{', '.join(map(str, at))}]", row, "distinct document indices (a document read twice)")
    return d


class ReaderMemory(NamedTuple):
    """What the decoder reads of the encoder, which no document mask touches (module docstring)."""
    kv: tuple  # per decoder layer the (B, S, 2C) projection [k | v] of the encoder states, as cross_kv_forward
    # makes it (so the split heads are views with the same strides: bit-identical attention)
    key_pad: object  # (B, S) bool, True where the key token is padding
    shape: tuple  # (B, N, L) of the ctx it was computed from
    n_heads: int

    def take(self, idx) -> "ReaderMemory":
        """The rows ``idx`` (an int array) of every example-indexed array, in that order."""
        B, N, L = self.shape
        return ReaderMemory(tuple(a[idx] for a in self.kv), self.key_pad[idx], (len(idx), N, L), self.n_heads)

    def select(self, docs, *, rows=None) -> "ReaderMemory":
        """Only the documents ``docs`` (B', K) int of every example, in that order (distinct indices in [0, N)):
        kv[l] (B', K·L, 2C), key_pad (B', K·L), shape (B', K, L). It is exactly the memory of the K documents
        read on their own (ctx[b, docs[b]]): the encoder reads each document by itself at the same positions,
        so dropping a document's rows changes no other row. rows (B',) int: the example of each output row
        (default: all B in order, B' = B); ``select(docs, rows=r)`` is ``take(r).select(docs)`` in one gather,
        without the copy of all N documents of every row in between."""
        fn = "ReaderMemory.select"
        B, N, L = self.shape
        if rows is not None:
            r = check_array(fn, "rows", rows, ndim=1, kind="iu")
            if r.size and (int(r.min()) < 0 or int(r.max()) >= B):
                fail(fn, "rows", rows, f"example indices in [0, B={B}) (found [{int(r.min())}, {int(r.max())}])")
        docs = check_doc_indices(fn, "docs", docs, N, B=B if rows is None else rows.shape[0],
                                 dims=("B", "K") if rows is None else ("len(rows)", "K"))
        xp = get_xp(self.key_pad, docs, rows)
        rows = xp.arange(B) if rows is None else rows  # (B',)
        Bo, K = docs.shape
        flat = xp.reshape(rows[:, None] * N + docs, (-1,))  # (B'·K,) rows of the (B·N, L·2C) view
        kv = tuple(xp.reshape(xp.reshape(a, (B * N, L * a.shape[-1]))[flat], (Bo, K * L, a.shape[-1]))
                   for a in self.kv)  # per layer (B', K·L, 2C)
        key_pad = xp.reshape(xp.reshape(self.key_pad, (B * N, L))[flat], (Bo, K * L))  # (B', K·L)
        return ReaderMemory(kv, key_pad, (Bo, K, L), self.n_heads)

    @staticmethod
    def concat(parts) -> "ReaderMemory":
        """The memories of consecutive chunks of examples as one."""
        xp = get_xp(parts[0].key_pad)
        kv = tuple(xp.concatenate([p.kv[l] for p in parts]) for l in range(len(parts[0].kv)))
        _, N, L = parts[0].shape
        return ReaderMemory(kv, xp.concatenate([p.key_pad for p in parts]), (sum(p.shape[0] for p in parts), N, L),
                            parts[0].n_heads)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.kv) + self.key_pad.nbytes)

    def split(self):
        """Per decoder layer (k, v), each (B, H, S, Dh): cross_kv_forward's split of the stored projection."""
        out = []
        for kv in self.kv:
            B, S, C2 = kv.shape
            kv5 = get_xp(kv).transpose(kv.reshape(B, S, 2, self.n_heads, C2 // (2 * self.n_heads)), (2, 0, 3, 1, 4))
            out.append((kv5[0], kv5[1]))  # (B, H, S, Dh) each
        return out


def _memory(params, cfg, ctx, flags):
    """ReaderMemory of ctx (B, N, L) and flags (or None); the inputs are validated by the caller."""
    B, N, L = ctx.shape
    xp = get_xp(params["tok_emb"])
    enc_out, _ = _encoder_forward(params, cfg, ctx, flags)  # (B·N, L, C)
    mem = xp.reshape(enc_out, (B, N * L, cfg.d_model))  # (B, S, C)
    kv = tuple(ops.linear_forward(mem, params[f"dec.{l}.cross.Wkv"], params[f"dec.{l}.cross.bkv"])[0]
               for l in range(cfg.n_dec_layers))  # per layer (B, S, 2C), exactly cross_kv_forward's product
    return ReaderMemory(kv, ctx.reshape(B, N * L) == cfg.pad_id, (B, N, L), cfg.n_heads)


def reader_memory(params, cfg, ctx, flags=None) -> ReaderMemory:
    """The mask-independent part of reader_forward for ``ctx`` (B, N, L) (and exact-match ``flags``): every
    decoder layer's cross-attention keys and values of the encoder states. Costs
    n_dec_layers · B · N · L · 2C values of the parameters' dtype plus B · N · L bools."""
    fn = "reader_memory"
    dtype = _check_params(params, cfg, fn)
    _check_ctx(ctx, cfg, fn)
    flags = _check_flags(flags, cfg, ctx.shape, dtype, fn)
    return _memory(unbox(params), cfg, ctx, flags)


def _check_memory(memory, cfg, ctx, dtype, fn, name="memory", ctx_name="ctx"):
    check_type(fn, name, memory, ReaderMemory, "a ReaderMemory from reader_memory")
    if tuple(memory.shape) != tuple(ctx.shape) or len(memory.kv) != cfg.n_dec_layers:
        fail(fn, f"{name}.shape", tuple(memory.shape), f"{ctx_name}.shape={tuple(ctx.shape)} with "
             f"n_dec_layers={cfg.n_dec_layers} layers (memory.take(idx) picks a batch's rows)")
    B, N, L = ctx.shape
    for l, kv in enumerate(memory.kv):
        a = check_array(fn, f"{name}.kv[{l}]", kv, shape=(B, N * L, 2 * cfg.d_model))
        if a.dtype != dtype:
            fail(fn, f"{name}.kv[{l}].dtype", a.dtype, f"{dtype}, the parameters' dtype", TypeError)
    key_pad = ctx.reshape(B, N * L) == cfg.pad_id  # (B, S)
    if not bool(get_xp(key_pad).array_equal(memory.key_pad, key_pad)):
        fail(fn, f"{name}.key_pad", memory.key_pad, f"the padding of {ctx_name} (a memory computed from it)")


def _decoder_forward(params, cfg, kvs, key_pad, mask, ans_in, n_docs=None):
    T = ans_in.shape[1]
    y, c_emb = ops.embedding_forward(ans_in, params["tok_emb"])  # (B, T, C)
    y = y + params["dec_pos"][:T]  # (B, T, C)
    layers = []
    for l in range(cfg.n_dec_layers):
        p = f"dec.{l}."
        h, c1 = ops.layernorm_forward(y, params[p + "ln1.g"], params[p + "ln1.b"])  # (B, T, C)
        h, c2 = ops.self_attention_forward(h, _sub(params, p + "self."), cfg.n_heads, causal=True)  # (B, T, C)
        y = y + h  # (B, T, C)
        h, c3 = ops.layernorm_forward(y, params[p + "ln2.g"], params[p + "ln2.b"])  # (B, T, C)
        h, c4 = ops.cross_attention_forward(h, kvs[l], _sub(params, p + "cross."), cfg.n_heads,
                                            key_pad=key_pad, doc_mask=mask, n_docs=n_docs)  # (B, T, C)
        y = y + h  # (B, T, C)
        h, c5 = ops.layernorm_forward(y, params[p + "ln3.g"], params[p + "ln3.b"])  # (B, T, C)
        h, c6 = ops.mlp_forward(h, _sub(params, p + "mlp."))  # (B, T, C)
        y = y + h  # (B, T, C)
        layers.append((c1, c2, c3, c4, c5, c6))
    y, c_f = ops.layernorm_forward(y, params["dec.lnf.g"], params["dec.lnf.b"])  # (B, T, C)
    logits, c_head = ops.linear_forward(y, params["lm.W"], params["lm.b"])  # (B, T, V)
    return logits, DecoderCache(layers, c_f, c_head, c_emb, T)


# ---------------------------------------------------------------------------------------------------------
# the model


class ReaderCache(NamedTuple):
    logprobs: object  # (B, T) log p(ans_out_t | ...), 0 where ans_out is padding
    nll: object  # (B,) per-example mean token NLL
    logits: object  # (B, T, V)
    xattn: Optional[list]  # need_attn: per decoder layer ops.AttnRecord(probs, scores, value_norms)
    key_pad: object  # (B, S) bool, True where the key token is padding
    mask: object  # (B, N) the document mask used (None: all ones)
    enc: Optional[EncoderCache]  # None for a forward given memory=
    dec: DecoderCache
    kv: Optional[list]  # per decoder layer CrossKVCache; None for a forward given memory=
    ce: ops.CrossEntropyCache
    cfg: ReaderConfig
    shape: tuple  # (B, N, L, T)


def reader_forward(params, cfg, ctx, ans_in, ans_out, mask=None, *, flags=None, need_attn=False, memory=None):
    """Teacher-forced loss of the answer given N documents under the document mask M.

    ctx (B, N, L) int; ans_in (B, T) int (BOS, a_1..a_{T−1}); ans_out (B, T) int (a_1..a_T, pad_id where
    padded); mask (B, N) float >= 0 or None (all ones); flags (B, N, L) float in [0, 1] or None (all zeros;
    the only legal value unless cfg.exact_match). Returns (loss, cache): loss is the batch mean of the
    per-example mean token NLL; cache.logprobs (B, T), cache.nll (B,), cache.logits (B, T, V) and with
    need_attn cache.xattn (per layer AttnRecord) and cache.key_pad (B, N·L).
    memory: reader_memory(params, cfg, ctx, flags) (or rows of one, .take(idx)); the encoder and the key/value
    projections are skipped (flags must then be None: they are in the memory), and the cache supports the
    frozen backward only.
    """
    fn = "reader_forward"
    dtype = _check_params(params, cfg, fn)
    _check_ctx(ctx, cfg, fn)
    B, N, L = ctx.shape
    _check_answer("ans_in", ans_in, B, cfg, fn)
    _check_answer("ans_out", ans_out, B, cfg, fn)
    if ans_in.shape != ans_out.shape:
        fail(fn, "ans_out.shape", ans_out.shape, f"ans_in.shape={ans_in.shape}")
    mask = _check_mask(mask, B, N, dtype, fn)
    flags = _check_flags(flags, cfg, (B, N, L), dtype, fn)
    if memory is not None:
        if flags is not None:
            fail(fn, "flags", flags, "None with memory= (the flags are part of the memory)")
        _check_memory(memory, cfg, ctx, dtype, fn)
    loss, cache = _forward(params, cfg, ctx, ans_in, ans_out, mask, flags, need_attn, memory)
    check_finite_output(fn, loss, params)
    return loss, cache


def _forward(params, cfg, ctx, ans_in, ans_out, mask, flags, need_attn, memory):
    """reader_forward after validation (mask and flags already cast to the parameters' dtype)."""
    B, N, L = ctx.shape
    xp = get_xp(params["tok_emb"], mask, flags)
    T = ans_in.shape[1]

    if memory is not None:  # the mask-independent part, computed once by reader_memory
        kvs, key_pad, c_enc, c_kv = memory.split(), memory.key_pad, None, None
    else:
        enc_out, c_enc = _encoder_forward(params, cfg, ctx, flags)  # (B·N, L, C)
        mem = xp.reshape(enc_out, (B, N * L, cfg.d_model))  # (B, S, C)
        key_pad = ctx.reshape(B, N * L) == cfg.pad_id  # (B, S)
        kvs, c_kv = _cross_kv(params, cfg, mem)
    logits, c_dec = _decoder_forward(params, cfg, kvs, key_pad, mask, ans_in, n_docs=N)  # (B, T, V)
    loss, c_ce = ops.cross_entropy_forward(logits, ans_out, pad_id=cfg.pad_id)
    xattn = [ops.cross_attention_record(c[3]) for c in c_dec.layers] if need_attn else None
    cache = ReaderCache(c_ce.logprobs, c_ce.nll, logits, xattn, key_pad, mask, c_enc, c_dec, c_kv, c_ce, cfg,
                        (B, N, L, T))
    return loss, cache


def reader_backward(dloss, cache, *, param_grads=True, flag_grads=False):
    """Returns (dparams, dmask (B, N)), and dflags (B, N, L) last with flag_grads=True; with mask=None in the
    forward, dmask is the gradient at M = 1 (with flags=None, dflags is the gradient at flags = 0).

    param_grads=False: no parameter gradient and no encoder backward at all (the mask only enters the
    decoder's cross-attention), i.e. exactly what a frozen reader needs to pass a gradient to M.
    flag_grads=True (needs cfg.exact_match): the backward also runs through the encoder, to its input, and
    returns dflags; with param_grads=False it still computes no parameter gradient.
    """
    fn = "reader_backward"
    check_cache(fn, cache, ReaderCache, forward="reader_forward")
    dloss = check_dloss(fn, dloss)
    _check_backward_flags(fn, cache, param_grads, flag_grads)
    # loss = cross_entropy(logits, ans_out)
    dlogits = ops.cross_entropy_backward(dloss, cache.ce)  # (B, T, V)
    return _logits_backward(dlogits, cache, param_grads, flag_grads)


def _check_backward_flags(fn, cache, param_grads, flag_grads):
    param_grads = check_bool(fn, "param_grads", param_grads)
    flag_grads = check_bool(fn, "flag_grads", flag_grads)
    if flag_grads and not cache.cfg.exact_match:
        fail(fn, "flag_grads", True, "False when cfg.exact_match=False (no flags)")
    if cache.enc is None and (param_grads or flag_grads):
        name = "param_grads" if param_grads else "flag_grads"
        fail(fn, name, True, "False for a forward given memory= (the encoder's cache is not kept; "
             "run reader_forward without memory for parameter or flag gradients)")


def _cross_attention_backward(dy, c, *, param_grads, need_kv):
    """ops.cross_attention_backward, with dk, dv also when the parameters are frozen (need_kv): the
    gradient to the encoder memory that flag_grads needs."""
    if param_grads or not need_kv:
        return ops.cross_attention_backward(dy, c, param_grads=param_grads)
    # out = merge(y) @ Wo + bo
    dyh = ops.linear_backward(dy, c.proj, param_grads=False)[0]  # (B, T, C)
    dq, dk, dv, ddoc = ops.attention_backward(ops.split_heads(dyh, c.n_heads), c.att, need_kv=True)
    # q = x @ Wq + bq
    dx = ops.linear_backward(ops.merge_heads(dq), c.q, param_grads=False)[0]  # (B, T, C)
    return dx, dk, dv, None, ddoc


def reader_logits_backward(dlogits, cache, *, param_grads=True, flag_grads=False):
    """reader_backward from a gradient on the logits, dlogits (B, T, V) = dL/d cache.logits, for a loss
    built on the logits rather than on cache.nll. Returns what reader_backward returns."""
    fn = "reader_logits_backward"
    check_cache(fn, cache, ReaderCache, forward="reader_forward")
    _check_backward_flags(fn, cache, param_grads, flag_grads)
    B, N, L, T = cache.shape
    check_array(fn, "dlogits", dlogits, shape=(B, T, cache.cfg.vocab_size), finite=True)
    return _logits_backward(dlogits, cache, param_grads, flag_grads)


def _logits_backward(dlogits, cache, param_grads, flag_grads):
    """reader_logits_backward after validation."""
    cfg = cache.cfg
    B, N, L, T = cache.shape
    xp = get_xp(cache.logits)
    grads = {} if param_grads else None
    need_mem = param_grads or flag_grads  # the backward goes on into the encoder
    dec = cache.dec
    # logits = y @ lm.W + lm.b
    dy, dW, db = ops.linear_backward(dlogits, dec.head, param_grads=param_grads)  # (B, T, C)
    dy, dg, dbn = ops.layernorm_backward(dy, dec.lnf, param_grads=param_grads)  # (B, T, C)
    if param_grads:
        grads.update({"lm.W": dW, "lm.b": db, "dec.lnf.g": dg, "dec.lnf.b": dbn})
    dmask = None
    dmem = None  # (B, S, C)
    for l in reversed(range(cfg.n_dec_layers)):
        p = f"dec.{l}."
        c1, c2, c3, c4, c5, c6 = dec.layers[l]
        # y = y + mlp(ln3(y))
        dy = _residual_backward(dy, ops.mlp_backward, c6, c5, grads, p + "mlp.", p + "ln3.")  # (B, T, C)
        # y = y + cross(ln2(y), kv(mem), M)
        dh, dk, dv, dp, dM = _cross_attention_backward(dy, c4, param_grads=param_grads, need_kv=need_mem)
        if dM is not None:
            dmask = dM if dmask is None else dmask + dM  # (B, N)
        dh, dg, dbn = ops.layernorm_backward(dh, c3, param_grads=param_grads)
        if param_grads:
            _put(grads, p + "cross.", dp)
            grads[p + "ln2.g"], grads[p + "ln2.b"] = dg, dbn
        if need_mem:
            # (k, v) = kv(mem)
            dm, dpkv = ops.cross_kv_backward(dk, dv, cache.kv[l], param_grads=param_grads)  # (B, S, C)
            if param_grads:
                _put(grads, p + "cross.", dpkv)
            dmem = dm if dmem is None else dmem + dm
        dy = dy + dh  # (B, T, C)
        # y = y + self(ln1(y))
        dy = _residual_backward(dy, ops.self_attention_backward, c2, c1, grads, p + "self.", p + "ln1.")
    C = cfg.d_model
    if not param_grads:
        if not flag_grads:
            return None, dmask
        # mem = reshape(encoder(ctx, flags), (B, S, C)): input gradient only
        _, dflags = _encoder_backward(xp.reshape(dmem, (B * N, L, C)), cache.enc, cfg, None)
        return None, dmask, dflags
    # y = tok_emb[ans_in] + dec_pos[:T]
    dpos = xp.sum(dy, axis=0)  # (T, C)
    if T < cfg.max_ans_len:
        dpos = xp.concatenate([dpos, xp.zeros((cfg.max_ans_len - T, C), dy.dtype)])
    grads["dec_pos"] = dpos  # (max_ans_len, C)
    demb = ops.embedding_backward(dy, dec.emb)  # (V, C)
    # mem = reshape(encoder(ctx, flags), (B, S, C))
    denc, dflags = _encoder_backward(xp.reshape(dmem, (B * N, L, C)), cache.enc, cfg, grads)
    grads["tok_emb"] = demb + denc  # (V, C)
    dparams = {k: grads[k] for k in param_shapes(cfg)}
    return (dparams, dmask, dflags) if flag_grads else (dparams, dmask)


def greedy_decode(params, cfg, ctx, mask=None, *, max_len=None, flags=None, memory=None):
    """Greedy answer (B, T') under the document mask (and exact-match flags): tokens up to and including EOS,
    then pad_id.

    The encoder and the cross-attention keys/values run once (or come from ``memory``, see reader_forward);
    the decoder re-runs on the growing prefix. Stops early once every row has produced EOS. Logits that are
    not finite (NaN parameters, say) are an error: argmax would silently answer token 0.
    """
    fn = "greedy_decode"
    dtype = _check_params(params, cfg, fn)
    _check_ctx(ctx, cfg, fn)
    B, N, L = ctx.shape
    max_len = cfg.max_ans_len if max_len is None else check_int(fn, "max_len", max_len, lo=1, hi=cfg.max_ans_len)
    mask = _check_mask(mask, B, N, dtype, fn)
    flags = _check_flags(flags, cfg, (B, N, L), dtype, fn)
    xp = get_xp(params["tok_emb"])
    if memory is None:
        memory = _memory(params, cfg, ctx, flags)
    else:
        if flags is not None:
            fail(fn, "flags", flags, "None with memory= (the flags are part of the memory)")
        _check_memory(memory, cfg, ctx, dtype, fn)
    kvs, key_pad = memory.split(), memory.key_pad
    prefix = xp.full((B, 1), cfg.bos_id, dtype=ctx.dtype)  # (B, 1)
    done = xp.zeros(B, dtype=bool)  # (B,)
    out = []
    for _ in range(max_len):
        logits, _ = _decoder_forward(params, cfg, kvs, key_pad, mask, prefix)  # (B, t, V)
        last = logits[:, -1]  # (B, V)
        if not bool(xp.all(xp.isfinite(last))):
            b = int(xp.argmin(xp.all(xp.isfinite(last), axis=-1)))
            fail(fn, f"logits[{b}]", "<not finite>", "finite logits (are the parameters finite?)")
        nxt = xp.argmax(last, axis=-1).astype(ctx.dtype)  # (B,)
        nxt = xp.where(done, cfg.pad_id, nxt)  # (B,)
        out.append(nxt)
        done = done | (nxt == cfg.eos_id)
        if bool(done.all()):
            break
        prefix = xp.concatenate([prefix, nxt[:, None]], axis=1)  # (B, t + 1)
    return xp.stack(out, axis=1)  # (B, T')
