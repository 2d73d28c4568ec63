"""Analytic FLOP counts for the reader (and the relaxed top-K), used to turn times into FLOP/s.

Convention: a matrix product (m, k) @ (k, n) costs 2·m·k·n FLOPs (one multiply and one add per term).
Only matrix products are counted -- the work a GPU or BLAS runs near peak. Element-wise work (layer norm,
GELU, softmax, residual adds, bias adds, cross-entropy) is left out: it is O(tokens·C) against O(tokens·C²)
for the products and runs far below peak anyway, so leaving it out makes the FLOP/s fraction a *lower*
bound on how well the step uses the machine's arithmetic. Two products of the implementation are not
counted either, because they are an implementation choice rather than work the model needs:

* ``embedding_backward`` builds dW = onehot(ids)ᵀ @ dout, 2·M·V·C FLOPs for M tokens (a scatter-add
  would need none); it is reported separately as ``embedding_onehot``;
* the cross-entropy one-hot (a gather in disguise).

Backward of a product Y = X W: dX = dY Wᵀ and dW = Xᵀ dY, two products of the forward's size. Hence a
full train step = 3 x forward products. Attention products (q kᵀ, a v) get both operand gradients, so
they also count 3x.

Dimension letters: B batch, N documents, L tokens per encoder sequence, S = N·L, T answer tokens,
C width, H heads, F feed-forward width, V vocabulary.
"""
from __future__ import annotations


def mm(m: int, k: int, n: int) -> int:
    """FLOPs of (m, k) @ (k, n)."""
    return 2 * m * k * n


def reader_forward_flops(cfg, B: int, N: int, L: int, T: int) -> dict:
    """Matrix-product FLOPs of one reader forward, by part. ``cfg`` is a ReaderConfig (or anything with
    d_model, d_ff, vocab_size, n_enc_layers, n_dec_layers)."""
    C, F, V = cfg.d_model, cfg.d_ff, cfg.vocab_size
    Me = B * N * L  # encoder tokens
    Md = B * T  # decoder tokens
    S = N * L  # cross-attention keys per example
    enc_layer = (
        mm(Me, C, 3 * C)  # fused q, k, v projection
        + 2 * B * N * mm(L, C, L)  # scores q kᵀ and a v, per sequence (all heads: Dh·H = C)
        + mm(Me, C, C)  # output projection
        + mm(Me, C, F) + mm(Me, F, C)  # MLP
    )
    dec_layer = (
        mm(Md, C, 3 * C) + 2 * B * mm(T, C, T) + mm(Md, C, C)  # causal self-attention
        + mm(Md, C, C)  # cross-attention query
        + mm(B * S, C, 2 * C)  # cross-attention keys and values of the encoder memory
        + 2 * B * mm(T, C, S)  # cross-attention scores and a v
        + mm(Md, C, C)  # cross-attention output projection
        + mm(Md, C, F) + mm(Md, F, C)  # MLP
    )
    parts = {
        "encoder": cfg.n_enc_layers * enc_layer,
        "decoder": cfg.n_dec_layers * dec_layer,
        "lm_head": mm(Md, C, V),
    }
    parts["total"] = sum(parts.values())
    return parts


def reader_step_flops(cfg, B: int, N: int, L: int, T: int) -> dict:
    """FLOPs of forward + full backward (every parameter gradient): 3 x the forward's products.

    Also returns the forward alone and the uncounted one-hot embedding-gradient products."""
    f = reader_forward_flops(cfg, B, N, L, T)
    C, V = cfg.d_model, cfg.vocab_size
    return {
        "forward": f["total"],
        "train_step": 3 * f["total"],
        "forward_parts": f,
        "embedding_onehot": mm(V, B * N * L, C) + mm(V, B * T, C),  # not counted in train_step
    }

