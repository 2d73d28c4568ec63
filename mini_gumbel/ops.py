"""Transformer primitives as forward/backward pairs (llm.c style), written once for NumPy, CuPy and autograd.

These are building blocks: their callers (the reader, the losses) validate the inputs once, so the
primitives do no argument checking and read as the math they implement.

Temporaries. Every op builds its result from the same sequence of operations whoever calls it, and reuses
the full-size temporaries it made itself (``out=`` into an array it allocated and no longer needs), so an
op makes one or two fresh arrays instead of one per operation. Writing into an array is exact (the same
IEEE operation on the same operands), so the results are bit-identical to the out-of-place expression.
Autograd cannot trace a write, so when any input is traced (``_own(...)`` is False) each such line takes
its out-of-place form instead: the same arithmetic, one line, ``xp.f(a, b, out=a) if own else a op b``.

Every ``x_forward(...)`` returns ``(out, cache)`` with a small NamedTuple cache; every ``x_backward(dout, cache)``
returns fresh gradients and quotes, in a comment, the forward line it inverts (backwards never write into
``dout`` or the cache: a cache may be used twice). Forwards only use functions in the NumPy ∩ CuPy subset
through ``xp = get_xp(...)`` and never write into arrays autograd traces, so ``autograd`` can differentiate
the very same code (the tests use it as an oracle). Backwards that feed a frozen model take
``param_grads=False`` and then skip every parameter gradient (returned as ``None``).

Dimension letters: B batch, N documents, L tokens per document (encoder sequence), S = N*L key tokens,
T query tokens, C width, H heads, Dh = C/H head width, V vocabulary, M any flattened leading dims.

The one non-standard op is cross-attention with a document mask ``M`` (B, N), Differentiable Masked
Attention (docs/method.md §6):  a_u = M_doc(u) exp(s_u) / Σ_v M_doc(v) exp(s_v). It is computed multiplicatively
(never as ``s + log M``) so that the mask gradient

    dL/dM_i = (1/Z) Σ_{u∈d_i} e_u (ḡ_u − Σ_v ḡ_v a_v),   e_u = exp(s_u − max), Z = Σ_v M_doc(v) e_v

is finite at M_i = 0. Key padding is a hard −inf on the logits whatever M is.
"""
from __future__ import annotations

import math
from typing import NamedTuple

from .backend import get_xp, is_traced, unbox

__all__ = [
    "embedding_forward", "embedding_backward", "linear_forward", "linear_backward",
    "layernorm_forward", "layernorm_backward", "gelu_forward", "gelu_backward",
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward", "logsumexp",
    "attention_forward", "attention_backward", "self_attention_forward", "self_attention_backward",
    "cross_kv_forward", "cross_kv_backward", "cross_attention_forward", "cross_attention_backward",
    "mlp_forward", "mlp_backward", "cross_entropy_forward", "cross_entropy_backward",
    "cross_attention_record", "split_heads", "merge_heads", "AttnRecord",
]

_GELU_C = math.sqrt(2.0 / math.pi)
_GELU_A = 0.044715


def _own(*arrays):
    """True when the op may write into the temporaries it makes from ``arrays``: none is traced by autograd
    (a traced forward must build new arrays) and all share one dtype (so a result written ``out=`` into a
    temporary has the dtype the out-of-place expression would have had). None and scalars are ignored."""
    dtypes = set()
    for a in arrays:
        if a is None or isinstance(a, (bool, int, float)):
            continue
        if is_traced(a):
            return False
        dtypes.add(a.dtype)
    return len(dtypes) <= 1


def _token_major(xp, B, H, T, Dh, dtype):
    """An empty (B, H, T, Dh) array laid out as (B, T, H, Dh), for a product over heads to write into: its
    merge_heads is then a view, not a copy (each head's (T, Dh) block is still a plain strided matrix, so
    the product itself is unchanged)."""
    return xp.transpose(xp.empty((B, T, H, Dh), dtype=dtype), (0, 2, 1, 3))


# ---------------------------------------------------------------------------------------------------------
# embedding: out = W[ids]


class EmbeddingCache(NamedTuple):
    ids: object  # (...,) int
    V: int


def embedding_forward(ids, W):
    """out[..., :] = W[ids[...]]   ids (...) int, W (V, C) -> (..., C)."""
    out = W[ids]  # (..., C)
    return out, EmbeddingCache(ids, W.shape[0])


def embedding_backward(dout, cache):
    """dW = onehot(ids)ᵀ @ dout: a matmul instead of a scatter-add (np.add.at is not in the CuPy subset)."""
    xp = get_xp(dout)
    C = dout.shape[-1]
    flat = xp.reshape(xp.asarray(cache.ids), (-1,))  # (M,)
    # out = W[ids]; the one-hot rows are written directly (one write per row, not a compare and a cast
    # over all M·V entries)
    onehot = xp.zeros((flat.shape[0], cache.V), dtype=dout.dtype)  # (M, V)
    onehot[xp.arange(flat.shape[0]), flat] = 1.0
    return onehot.T @ xp.reshape(dout, (-1, C))  # (V, C)


# ---------------------------------------------------------------------------------------------------------
# linear: out = x @ W + b, always as one 2-D GEMM over the flattened leading dims


class LinearCache(NamedTuple):
    x2: object  # (M, Cin)
    W: object  # (Cin, Cout)
    has_b: bool
    lead: tuple


def linear_forward(x, W, b=None):
    """out = x @ W + b   x (..., Cin), W (Cin, Cout), b (Cout,) or None -> (..., Cout)."""
    xp = get_xp(x, W, b)
    lead = tuple(x.shape[:-1])
    x2 = xp.reshape(x, (-1, x.shape[-1]))  # (M, Cin)
    out = x2 @ W  # (M, Cout) fresh
    if b is not None:
        out = xp.add(out, b, out=out) if _own(x, W, b) else out + b  # (M, Cout)
    return xp.reshape(out, lead + (W.shape[1],)), LinearCache(x2, W, b is not None, lead)


def linear_backward(dout, cache, *, param_grads=True, need_dx=True):
    """Returns (dx, dW, db); dW, db are None when param_grads=False (db None also without a bias)."""
    xp = get_xp(dout)
    d2 = xp.reshape(dout, (-1, dout.shape[-1]))  # (M, Cout)
    dx = dW = db = None
    if need_dx:
        # out = x2 @ W
        dx = xp.reshape(d2 @ cache.W.T, cache.lead + (cache.W.shape[0],))  # (..., Cin)
    if param_grads:
        dW = cache.x2.T @ d2  # (Cin, Cout)
        if cache.has_b:
            # out = out + b
            db = xp.sum(d2, axis=0)  # (Cout,)
    return dx, dW, db


# ---------------------------------------------------------------------------------------------------------
# layer norm over the last axis


class LayerNormCache(NamedTuple):
    xhat: object  # (..., C)
    rstd: object  # (..., 1)
    g: object  # (C,)


def layernorm_forward(x, g, b, eps=1e-5):
    """out = (x − mean) / sqrt(var + eps) * g + b over the last axis   x (..., C) -> (..., C)."""
    xp = get_xp(x, g, b)
    own = _own(x, g, b)
    mu = xp.mean(x, axis=-1, keepdims=True)  # (..., 1)
    xc = x - mu  # (..., C) fresh
    sq = xc * xc  # (..., C) fresh
    var = xp.mean(sq, axis=-1, keepdims=True)  # (..., 1)
    rstd = 1.0 / xp.sqrt(var + eps)  # (..., 1)
    xhat = xp.multiply(xc, rstd, out=xc) if own else xc * rstd  # (..., C), in xc
    out = xp.multiply(xhat, g, out=sq) if own else xhat * g  # (..., C), in sq (var is taken)
    out = xp.add(out, b, out=out) if own else out + b  # (..., C)
    return out, LayerNormCache(xhat, rstd, g)


def layernorm_backward(dout, cache, *, param_grads=True):
    """Returns (dx, dg, db)."""
    xp = get_xp(dout)
    xhat, rstd, g = cache
    dg = db = None
    dxhat = dout * g  # (..., C) fresh: becomes dx
    if param_grads:
        C = dout.shape[-1]
        d2 = xp.reshape(dout, (-1, C))  # (M, C)
        # out = xhat * g + b
        tmp = d2 * xp.reshape(xhat, (-1, C))  # (M, C) fresh, reused for dxhat xhat below
        dg = xp.sum(tmp, axis=0)  # (C,)
        db = xp.sum(d2, axis=0)  # (C,)
        prod = xp.multiply(dxhat, xhat, out=xp.reshape(tmp, dout.shape))  # (..., C)
    else:
        prod = dxhat * xhat  # (..., C) fresh
    # xhat = (x − mu) * rstd, mu and rstd functions of x: the usual three-term formula
    #   dx = rstd (dxhat − mean(dxhat) − xhat mean(dxhat xhat)), in the two fresh arrays
    t = xp.multiply(xhat, xp.mean(prod, axis=-1, keepdims=True), out=prod)  # (..., C)
    t += xp.mean(dxhat, axis=-1, keepdims=True)
    dx = xp.subtract(dxhat, t, out=dxhat)  # (..., C)
    dx *= rstd
    return dx, dg, db


# ---------------------------------------------------------------------------------------------------------
# GELU, tanh approximation


class GeluCache(NamedTuple):
    x: object
    s: object  # sigmoid(2u) = 0.5 (1 + tanh(u)),  u = c (x + a x³)


def gelu_forward(x):
    """out = 0.5 x (1 + tanh(u)), u = √(2/π) (x + 0.044715 x³), computed as x · sigmoid(2u).

    0.5 (1 + tanh u) = 1 / (1 + exp(−2u)) exactly; one exp is about 3x cheaper than tanh in float64.
    """
    xp = get_xp(x)
    own = _own(x)
    # exp(−2u) overflows only where sigmoid(2u) is 0 anyway (x < −19 in float64, x < −9 in float32): clip
    # at the dtype's own exp limit to stay warning-free
    top = math.log(xp.finfo(x.dtype).max) - 1.0
    # s built in one fresh array t: −2u = ((−2ca) x² − 2c) x, clipped, exp, 1 + ., 1 / .
    t = x * x  # (...) fresh
    t = xp.multiply(t, -2.0 * _GELU_C * _GELU_A, out=t) if own else (-2.0 * _GELU_C * _GELU_A) * t
    t = xp.subtract(t, 2.0 * _GELU_C, out=t) if own else t - 2.0 * _GELU_C
    t = xp.multiply(t, x, out=t) if own else t * x  # (...)  −2u
    t = xp.minimum(t, top, out=t) if own else xp.minimum(t, top)
    t = xp.exp(t, out=t) if own else xp.exp(t)
    t = xp.add(t, 1.0, out=t) if own else 1.0 + t
    s = xp.divide(1.0, t, out=t) if own else 1.0 / t  # (...)
    return x * s, GeluCache(x, s)


def gelu_backward(dout, cache):
    x, s = cache
    # out = x s,  s = sigmoid(2u)  ->  dx = dout (s + x s (1 − s) 2 u'(x)),  u'(x) = c (1 + 3a x²)
    d = x * x  # (...) fresh, updated in place below
    d *= 6.0 * _GELU_C * _GELU_A
    d += 2.0 * _GELU_C
    d *= x
    q = 1.0 - s  # (...)
    q *= s
    d *= q
    d += s
    d *= dout
    return d


# ---------------------------------------------------------------------------------------------------------
# softmax and log-softmax over the last axis


class SoftmaxCache(NamedTuple):
    y: object  # softmax(x)


def logsumexp(x, axis: int = -1, *, keepdims: bool = False):
    """log Σ exp(x) along ``axis``, stable. The shift by the slice's maximum is a constant (taken from the
    unboxed values, so autograd sees none of it): the result does not depend on it. A slice with no finite
    entry is shifted by 0 instead (all -inf gives -inf, not NaN). Its gradient is the softmax: callers
    differentiate through it with autograd or write the softmax backward themselves."""
    xp = get_xp(x)
    m = xp.max(unbox(x), axis=axis, keepdims=True)  # (.., 1, ..)
    m = xp.where(xp.isfinite(m), m, 0.0)
    out = m + xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True))  # (.., 1, ..)
    return out if keepdims else xp.squeeze(out, axis=axis)


def softmax_forward(x):
    """y = exp(x − max) / Σ exp(x − max) over the last axis; −inf entries get probability 0."""
    xp = get_xp(x)
    own = _own(x)
    e = x - xp.max(unbox(x), axis=-1, keepdims=True)  # (..., V) fresh
    e = xp.exp(e, out=e) if own else xp.exp(e)  # (..., V)
    y = xp.divide(e, xp.sum(e, axis=-1, keepdims=True), out=e) if own else e / xp.sum(e, axis=-1, keepdims=True)
    return y, SoftmaxCache(y)


def softmax_backward(dy, cache):
    xp = get_xp(dy)
    y = cache.y
    # y = e / Σ e  ->  dx = y (dy − Σ dy y), in one fresh array
    t = dy * y  # (..., V)
    t = xp.subtract(dy, xp.sum(t, axis=-1, keepdims=True), out=t)
    t *= y
    return t  # (..., V)


class LogSoftmaxCache(NamedTuple):
    p: object  # softmax(x)


def log_softmax_forward(x):
    """y = x − max − log Σ exp(x − max) over the last axis."""
    xp = get_xp(x)
    own = _own(x)
    z = x - xp.max(unbox(x), axis=-1, keepdims=True)  # (..., V) fresh: becomes y
    e = xp.exp(z)  # (..., V) fresh: becomes p
    s = xp.sum(e, axis=-1, keepdims=True)  # (..., 1)
    y = xp.subtract(z, xp.log(s), out=z) if own else z - xp.log(s)
    return y, LogSoftmaxCache(xp.divide(e, s, out=e) if own else e / s)


def log_softmax_backward(dy, cache):
    xp = get_xp(dy)
    # y = z − log Σ exp z  ->  dx = dy − p Σ dy
    t = cache.p * xp.sum(dy, axis=-1, keepdims=True)  # (..., V) fresh
    return xp.subtract(dy, t, out=t)  # (..., V)


# ---------------------------------------------------------------------------------------------------------
# scaled dot-product attention on split heads, with key padding, causal mask and a DMA document mask


class AttentionCache(NamedTuple):
    q: object  # (B, H, T, Dh), already scaled by 1/√Dh
    k: object  # (B, H, S, Dh)
    v: object  # (B, H, S, Dh)
    a: object  # (B, H, T, S) attention probabilities
    e: object  # (B, H, T, S) exp(s − max), 0 where masked; None without a document mask
    Z: object  # (B, H, T, 1) Σ_v M_doc(v) e_v; None without a document mask
    scale: float
    n_docs: int  # N, 0 without a document mask
    s: object  # (B, H, T, S) pre-softmax logits (key padding not applied)


def attention_forward(q, k, v, *, key_pad=None, causal=False, doc_mask=None, n_docs=None):
    """out = a @ v with a_u ∝ M_doc(u) exp(q·k_u / √Dh) over the unmasked keys u.

    q (B, H, T, Dh); k, v (B, H, S, Dh); key_pad (B, S) bool, True = padding (never attended);
    causal: query t sees keys u ≤ t + S − T; doc_mask (B, N) ≥ 0 with S = N·L, document i owning keys
    i·L .. (i+1)·L − 1. Every query must keep at least one unpadded key with M > 0.
    n_docs: with doc_mask=None, plain attention, but the backward still returns the mask gradient at M = 1
    for N = n_docs documents (there e_u / Z = a_u, so dM_i = Σ_{u∈d_i} Σ_{h,t} a_u (ḡ_u − r)).
    """
    xp = get_xp(q, k, v, doc_mask)
    own = _own(q, k, v, doc_mask)
    B, H, T, Dh = q.shape
    S = k.shape[2]
    scale = 1.0 / math.sqrt(Dh)
    qs = q * scale  # (B, H, T, Dh)
    s = xp.matmul(qs, xp.swapaxes(k, -1, -2))  # (B, H, T, S)
    valid = None
    if key_pad is not None:
        valid = ~xp.reshape(xp.asarray(unbox(key_pad), dtype=bool), (B, 1, 1, S))  # (B, 1, 1, S)
    if causal:
        cm = xp.tril(xp.ones((T, S), dtype=bool), k=S - T)  # (T, S)
        valid = cm if valid is None else valid & cm  # (B, 1, T, S)
    z = s if valid is None else xp.where(valid, s, -xp.inf)  # (B, H, T, S), fresh unless it is s (cached)
    if doc_mask is None:
        # softmax in one array: z's when it is fresh, else a new one
        zm = xp.max(unbox(z), axis=-1, keepdims=True)  # (B, H, T, 1)
        e = xp.subtract(z, zm, out=z) if own and z is not s else z - zm  # (B, H, T, S)
        e = xp.exp(e, out=e) if own else xp.exp(e)
        a = xp.divide(e, xp.sum(e, axis=-1, keepdims=True), out=e) if own else e / xp.sum(e, axis=-1, keepdims=True)
        out = xp.matmul(a, v, out=_token_major(xp, B, H, T, Dh, q.dtype)) if own else xp.matmul(a, v)
        return out, AttentionCache(qs, k, v, a, None, None, scale, int(n_docs or 0), s)
    N = doc_mask.shape[1]
    L = S // N
    tok = xp.reshape(doc_mask[:, :, None] * xp.ones((1, 1, L), dtype=q.dtype), (B, 1, 1, S))  # (B, 1, 1, S)
    # the max over keys that can carry weight (M > 0): any constant works, this one cannot underflow Z.
    # Keys of documents with M = 0 may sit far above it; they carry no weight, but exp would overflow to inf
    # and inf * 0 = NaN, so their exponent is capped at half the dtype's range. That changes nothing where
    # M > 0 (there z - max <= 0) and keeps their mask gradient finite, if enormous.
    # Two fresh arrays: zmax's (a constant, never traced) holds e once its max is taken, w's holds a.
    zmax = xp.where(unbox(tok) > 0, unbox(z), -xp.inf)  # (B, H, T, S)
    cap = 0.5 * math.log(xp.finfo(q.dtype).max)
    zm = xp.max(zmax, axis=-1, keepdims=True)  # (B, H, T, 1)
    e = xp.subtract(z, zm, out=zmax) if own else z - zm  # (B, H, T, S)
    e = xp.minimum(e, cap, out=e) if own else xp.minimum(e, cap)
    e = xp.exp(e, out=e) if own else xp.exp(e)
    w = e * tok  # (B, H, T, S) fresh
    Z = xp.sum(w, axis=-1, keepdims=True)  # (B, H, T, 1)
    a = xp.divide(w, Z, out=w) if own else w / Z  # (B, H, T, S)
    out = xp.matmul(a, v, out=_token_major(xp, B, H, T, Dh, q.dtype)) if own else xp.matmul(a, v)  # (B, H, T, Dh)
    return out, AttentionCache(qs, k, v, a, e, Z, scale, N, s)


def attention_backward(dout, cache, *, need_kv=True, out=None):
    """Returns (dq, dk, dv, ddoc_mask); dk, dv are None when need_kv=False, ddoc_mask None without a mask.

    dq, dk, dv are written into ``out`` = three (B, H, ., Dh) arrays when given (self-attention passes views
    of its fused q/k/v gradient), else into fresh token-major arrays (see _token_major)."""
    xp = get_xp(dout)
    qs, k, v, a, e, Z, scale, N = cache[:8]
    if out is None:
        B, H, T, Dh = qs.shape
        S = k.shape[2]
        dt = xp.result_type(dout, qs)
        out = (_token_major(xp, B, H, T, Dh, dt),
               *((_token_major(xp, B, H, S, Dh, dt) for _ in range(2)) if need_kv else (None, None)))
    # out = a @ v
    da = xp.matmul(dout, xp.swapaxes(v, -1, -2))  # (B, H, T, S)  ḡ
    dv = xp.matmul(xp.swapaxes(a, -1, -2), dout, out=out[2]) if need_kv else None  # (B, H, S, Dh)
    ds = da * a  # (B, H, T, S) fresh: the terms of r, then ds
    r = xp.sum(ds, axis=-1, keepdims=True)  # (B, H, T, 1)  Σ_v ḡ_v a_v
    # a = w / Z with w = M_doc e  ->  dL/dw_u = (ḡ_u − r) / Z ;  e = exp(s − max)  ->  ds = dw · w = a (ḡ − r)
    da -= r  # (B, H, T, S)  ḡ − r, in place: da is ours
    ds = xp.multiply(a, da, out=ds)  # (B, H, T, S); 0 on padded / masked keys since a = 0 there
    ddoc = None
    if N:
        B, S = a.shape[0], a.shape[-1]
        # w = e * tok  ->  dtok_u = Σ_{h,t} e_u (ḡ_u − r) / Z   (finite at M = 0: no division by M)
        if e is None:  # no mask given: M = 1, e / Z = a, so e (ḡ − r) / Z = ds
            da = ds
        else:
            da /= Z
            da *= e
        dtok = xp.sum(xp.reshape(da, (B, -1, S)), axis=1)  # (B, S)
        ddoc = xp.sum(xp.reshape(dtok, (B, N, S // N)), axis=-1)  # (B, N)
    # s = (q * scale) @ kᵀ
    dq = xp.matmul(ds, k, out=out[0])  # (B, H, T, Dh)
    dq *= scale
    dk = xp.matmul(xp.swapaxes(ds, -1, -2), qs, out=out[1]) if need_kv else None  # (B, H, S, Dh)
    return dq, dk, dv, ddoc


def split_heads(x, n_heads):
    """(M, L, C) -> (M, H, L, Dh)."""
    xp = get_xp(x)
    M, L, C = x.shape
    return xp.transpose(xp.reshape(x, (M, L, n_heads, C // n_heads)), (0, 2, 1, 3))


def merge_heads(x):
    """(M, H, L, Dh) -> (M, L, C)."""
    xp = get_xp(x)
    M, H, L, Dh = x.shape
    return xp.reshape(xp.transpose(x, (0, 2, 1, 3)), (M, L, H * Dh))


# ---------------------------------------------------------------------------------------------------------
# multi-head self-attention: params {"Wqkv" (C, 3C), "bqkv" (3C,), "Wo" (C, C), "bo" (C,)}


class SelfAttentionCache(NamedTuple):
    qkv: LinearCache
    att: AttentionCache
    proj: LinearCache
    n_heads: int


def self_attention_forward(x, p, n_heads, *, key_pad=None, causal=False):
    """out = merge(attention(split(x Wq), split(x Wk), split(x Wv))) Wo + bo   x (M, L, C) -> (M, L, C)."""
    xp = get_xp(x, p["Wqkv"])
    M, L, C = x.shape
    Dh = C // n_heads
    qkv, c_qkv = linear_forward(x, p["Wqkv"], p["bqkv"])  # (M, L, 3C)
    qkv5 = xp.transpose(xp.reshape(qkv, (M, L, 3, n_heads, Dh)), (2, 0, 3, 1, 4))  # (3, M, H, L, Dh)
    y, c_att = attention_forward(qkv5[0], qkv5[1], qkv5[2], key_pad=key_pad, causal=causal)  # (M, H, L, Dh)
    out, c_proj = linear_forward(merge_heads(y), p["Wo"], p["bo"])  # (M, L, C)
    return out, SelfAttentionCache(c_qkv, c_att, c_proj, n_heads)


def self_attention_backward(dout, cache, *, param_grads=True):
    """Returns (dx, dp) with dp None when param_grads=False."""
    xp = get_xp(dout)
    M, L, C = dout.shape
    # out = merge(y) @ Wo + bo
    dy, dWo, dbo = linear_backward(dout, cache.proj, param_grads=param_grads)  # (M, L, C)
    # qkv5 = transpose(reshape(qkv, (M, L, 3, H, Dh)), (2, 0, 3, 1, 4)): the attention backward writes dq,
    # dk, dv straight into their places in dqkv (as (M, H, L, Dh) views), with no copy
    dqkv = xp.empty((M, L, 3, cache.n_heads, C // cache.n_heads), dtype=dy.dtype)  # (M, L, 3, H, Dh)
    views = [xp.transpose(dqkv[:, :, i], (0, 2, 1, 3)) for i in range(3)]  # (M, H, L, Dh) each
    attention_backward(split_heads(dy, cache.n_heads), cache.att, out=views)
    dqkv = xp.reshape(dqkv, (M, L, 3 * C))  # (M, L, 3C)
    dx, dWqkv, dbqkv = linear_backward(dqkv, cache.qkv, param_grads=param_grads)  # (M, L, C)
    dp = {"Wqkv": dWqkv, "bqkv": dbqkv, "Wo": dWo, "bo": dbo} if param_grads else None
    return dx, dp


# ---------------------------------------------------------------------------------------------------------
# multi-head cross-attention with DMA. Keys/values of the encoder memory are projected once
# (cross_kv_forward, reused by every decoding step); params {"Wq", "bq", "Wkv" (C, 2C), "bkv", "Wo", "bo"}


class CrossKVCache(NamedTuple):
    kv: LinearCache
    n_heads: int


def cross_kv_forward(mem, p, n_heads):
    """(k, v) = split(mem Wk + bk), split(mem Wv + bv)   mem (B, S, C) -> two (B, H, S, Dh)."""
    xp = get_xp(mem, p["Wkv"])
    B, S, C = mem.shape
    kv, c_kv = linear_forward(mem, p["Wkv"], p["bkv"])  # (B, S, 2C)
    kv5 = xp.transpose(xp.reshape(kv, (B, S, 2, n_heads, C // n_heads)), (2, 0, 3, 1, 4))  # (2, B, H, S, Dh)
    return (kv5[0], kv5[1]), CrossKVCache(c_kv, n_heads)


def cross_kv_backward(dk, dv, cache, *, param_grads=True):
    """Returns (dmem, dp) with dp = {"Wkv", "bkv"} (None when param_grads=False)."""
    xp = get_xp(dk, dv)
    B, H, S, Dh = dk.shape
    # kv5 = transpose(reshape(kv, (B, S, 2, H, Dh)), (2, 0, 3, 1, 4)): one copy each into place
    dkv = xp.empty((B, S, 2, H, Dh), dtype=xp.result_type(dk, dv))  # (B, S, 2, H, Dh)
    dkv[:, :, 0] = xp.transpose(dk, (0, 2, 1, 3))
    dkv[:, :, 1] = xp.transpose(dv, (0, 2, 1, 3))
    dkv = xp.reshape(dkv, (B, S, 2 * H * Dh))  # (B, S, 2C)
    dmem, dW, db = linear_backward(dkv, cache.kv, param_grads=param_grads)  # (B, S, C)
    return dmem, ({"Wkv": dW, "bkv": db} if param_grads else None)


class AttnRecord(NamedTuple):
    """What attention-distillation baselines read from one cross-attention layer."""
    probs: object  # (B, H, T, S) attention probabilities (DMA applied)
    scores: object  # (B, H, T, S) pre-softmax logits q·k/√Dh (key padding and mask not applied)
    value_norms: object  # (B, H, S) ‖v_u‖ per head


class CrossAttentionCache(NamedTuple):
    q: LinearCache
    att: AttentionCache
    proj: LinearCache
    n_heads: int


def cross_attention_forward(x, kv, p, n_heads, *, key_pad=None, doc_mask=None, n_docs=None):
    """out = merge(DMA-attention(split(x Wq + bq), k, v)) Wo + bo   x (B, T, C), kv from cross_kv_forward.

    n_docs (with doc_mask=None): the backward still returns the mask gradient at M = 1.
    """
    q, c_q = linear_forward(x, p["Wq"], p["bq"])  # (B, T, C)
    y, c_att = attention_forward(split_heads(q, n_heads), kv[0], kv[1],
                                 key_pad=key_pad, doc_mask=doc_mask, n_docs=n_docs)  # (B, H, T, Dh)
    out, c_proj = linear_forward(merge_heads(y), p["Wo"], p["bo"])  # (B, T, C)
    return out, CrossAttentionCache(c_q, c_att, c_proj, n_heads)


def cross_attention_record(cache):
    """AttnRecord of a cross-attention forward (no gradient flows through it)."""
    xp = get_xp(cache.att.v)
    v = cache.att.v
    return AttnRecord(cache.att.a, cache.att.s, xp.sqrt(xp.sum(v * v, axis=-1)))


def cross_attention_backward(dout, cache, *, param_grads=True):
    """Returns (dx, dk, dv, dp, ddoc_mask). With param_grads=False: dk = dv = dp = None (frozen reader)."""
    # out = merge(y) @ Wo + bo
    dy, dWo, dbo = linear_backward(dout, cache.proj, param_grads=param_grads)  # (B, T, C)
    dq, dk, dv, ddoc = attention_backward(split_heads(dy, cache.n_heads), cache.att, need_kv=param_grads)
    # q = x @ Wq + bq
    dx, dWq, dbq = linear_backward(merge_heads(dq), cache.q, param_grads=param_grads)  # (B, T, C)
    dp = {"Wq": dWq, "bq": dbq, "Wo": dWo, "bo": dbo} if param_grads else None
    return dx, dk, dv, dp, ddoc


# ---------------------------------------------------------------------------------------------------------
# MLP: params {"W1" (C, F), "b1", "W2" (F, C), "b2"}


class MLPCache(NamedTuple):
    fc: LinearCache
    act: GeluCache
    proj: LinearCache


def mlp_forward(x, p):
    """out = gelu(x W1 + b1) W2 + b2."""
    h, c1 = linear_forward(x, p["W1"], p["b1"])  # (..., F)
    g, c2 = gelu_forward(h)  # (..., F)
    out, c3 = linear_forward(g, p["W2"], p["b2"])  # (..., C)
    return out, MLPCache(c1, c2, c3)


def mlp_backward(dout, cache, *, param_grads=True):
    """Returns (dx, dp)."""
    dg, dW2, db2 = linear_backward(dout, cache.proj, param_grads=param_grads)  # (..., F)
    dh = gelu_backward(dg, cache.act)  # (..., F)
    dx, dW1, db1 = linear_backward(dh, cache.fc, param_grads=param_grads)  # (..., C)
    return dx, ({"W1": dW1, "b1": db1, "W2": dW2, "b2": db2} if param_grads else None)


# ---------------------------------------------------------------------------------------------------------
# cross-entropy over answer tokens with padding


class CrossEntropyCache(NamedTuple):
    logprobs: object  # (B, T) log p(target_t), 0 where the target is padding
    nll: object  # (B,) per-example mean NLL over non-pad targets
    p: object  # (B, T, V) softmax(logits)
    onehot: object  # (B, T, V)
    weight: object  # (B, T) valid_t / (count_b · B): d loss / d(−logprob_t)


def cross_entropy_forward(logits, targets, *, pad_id=0):
    """loss = mean_b [ −(1/|t: y_bt ≠ pad|) Σ_{t: y_bt ≠ pad} log softmax(logits_bt)[y_bt] ]

    logits (B, T, V), targets (B, T) int. Rows with no target at all contribute 0.
    Returns (loss, cache) with cache.logprobs (B, T) and cache.nll (B,).
    """
    xp = get_xp(logits)
    B, T, V = logits.shape
    targets = xp.asarray(unbox(targets))
    lp, c_ls = log_softmax_forward(logits)  # (B, T, V)
    onehot = (targets[..., None] == xp.arange(V)).astype(logits.dtype)  # (B, T, V)
    valid = (targets != pad_id).astype(logits.dtype)  # (B, T)
    tok = xp.sum(lp * onehot, axis=-1) * valid  # (B, T)
    count = xp.maximum(xp.sum(valid, axis=-1), 1.0)  # (B,)
    nll = -xp.sum(tok, axis=-1) / count  # (B,)
    loss = xp.mean(nll)  # ()
    weight = valid / (count[:, None] * B)  # (B, T)
    return loss, CrossEntropyCache(tok, nll, c_ls.p, onehot, weight)


def cross_entropy_backward(dloss, cache):
    """dlogits (B, T, V)."""
    # loss = mean_b nll_b,  nll_b = −Σ_t valid_bt lp[y_bt] / count_b,  lp = log_softmax(logits)
    # (in the logits' dtype: a float64 dloss must not turn a float32 model's gradients into float64)
    w = (dloss * cache.weight).astype(cache.p.dtype, copy=False)[..., None]  # (B, T, 1)
    d = cache.p - cache.onehot  # (B, T, V) fresh
    d *= w
    return d
