"""The readers and the Gumbel Reranking step written the way a PyTorch user would: eager ops, torch.autograd.

Imported by sec_reader.py and sec_step.py only when torch is installed; nothing in the package, the tests or
CI needs it. The same math as mini_gumbel.reader / two_pass_reader / reranker / gumbel ("max") on the same
parameters and inputs (the bench checks the loss to ~1e-10 in float64 before timing), one thread, no
torch.compile:

    FiD reader   pre-LN encoder per sequence (B·N, L, C), decoder with causal self-attention and DMA
                 cross-attention a_u = M_doc(u) e_u / Σ_v M_doc(v) e_v over all N·L states, LM head, CE
    two-pass     read 1 (flags1), p1 = softmax(logits¹[:, 0]), read 2 on the two-hop rows with
                 flags2 = p1[ctx2] on document tokens
    step         reranker scores -> relaxed top-K "max" mask -> frozen reader -> dscores -> reranker grads;
                 with ``memory``: the mask-independent keys/values computed once (no_grad), as ours

Dimension letters as in mini_gumbel.reader.
"""
from __future__ import annotations

import math

import numpy as np
import torch

READ_PREFIX = 3  # mini_gumbel.two_pass_reader.READ_PREFIX


def tensors(d: dict, requires_grad=False) -> dict:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).requires_grad_(requires_grad) for k, v in d.items()}


def _ln(x, P, p):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), P[p + "g"], P[p + "b"], eps=1e-5)


def _gelu(x):
    return torch.nn.functional.gelu(x, approximate="tanh")


def _mlp(x, P, p):
    return _gelu(x @ P[p + "W1"] + P[p + "b1"]) @ P[p + "W2"] + P[p + "b2"]


def _heads(x, H):  # (M, L, C) -> (M, H, L, Dh)
    M, L, C = x.shape
    return x.view(M, L, H, C // H).transpose(1, 2)


def _merge(x):  # (M, H, L, Dh) -> (M, L, C)
    M, H, L, Dh = x.shape
    return x.transpose(1, 2).reshape(M, L, H * Dh)


def _self_attn(x, P, p, H, key_pad=None, causal=False):
    M, L, C = x.shape
    q, k, v = (x @ P[p + "Wqkv"] + P[p + "bqkv"]).split(C, dim=-1)
    s = _heads(q, H) @ _heads(k, H).transpose(-1, -2) / math.sqrt(C // H)  # (M, H, L, L)
    if key_pad is not None:
        s = s.masked_fill(key_pad[:, None, None, :], -math.inf)
    if causal:
        s = s.masked_fill(~torch.ones(L, L, dtype=torch.bool).tril(), -math.inf)
    return _merge(torch.softmax(s, dim=-1) @ _heads(v, H)) @ P[p + "Wo"] + P[p + "bo"]


def encoder(P, cfg, ctx, flags=None):
    """Encoder states (B, S, C) of ctx (B, N, L) int64 (and flags (B, N, L))."""
    B, N, L = ctx.shape
    ids = ctx.reshape(B * N, L)
    key_pad = ids == cfg.pad_id
    x = P["tok_emb"][ids] + P["enc_pos"][:L]
    if flags is not None:
        x = x + flags.reshape(B * N, L, 1) * P["em_vec"]
    for l in range(cfg.n_enc_layers):
        p = f"enc.{l}."
        x = x + _self_attn(_ln(x, P, p + "ln1."), P, p + "attn.", cfg.n_heads, key_pad=key_pad)
        x = x + _mlp(_ln(x, P, p + "ln2."), P, p + "mlp.")
    return _ln(x, P, "enc.lnf.").reshape(B, N * L, cfg.d_model)


def memory(P, cfg, ctx, flags=None):
    """Per decoder layer (k, v) (B, H, S, Dh) of the encoder states: what no mask touches."""
    mem = encoder(P, cfg, ctx, flags)
    out = []
    for l in range(cfg.n_dec_layers):
        p = f"dec.{l}.cross."
        k, v = (mem @ P[p + "Wkv"] + P[p + "bkv"]).split(cfg.d_model, dim=-1)
        out.append((_heads(k, cfg.n_heads), _heads(v, cfg.n_heads)))
    return out


def _dma(q, k, v, key_pad, mask):
    """DMA attention: a_u = M_doc(u) exp(s_u) / Σ_v M_doc(v) exp(s_v), max over keys that carry weight."""
    B, H, T, Dh = q.shape
    S = k.shape[2]
    s = q @ k.transpose(-1, -2) / math.sqrt(Dh)  # (B, H, T, S)
    s = s.masked_fill(key_pad[:, None, None, :], -math.inf)
    if mask is None:
        return torch.softmax(s, dim=-1) @ v
    tok = mask.repeat_interleave(S // mask.shape[1], dim=1)[:, None, None, :]  # (B, 1, 1, S)
    zmax = torch.where(tok > 0, s, -math.inf).amax(dim=-1, keepdim=True).detach()
    cap = 0.5 * math.log(torch.finfo(q.dtype).max)
    w = torch.exp(torch.clamp(s - zmax, max=cap)) * tok
    return (w / w.sum(dim=-1, keepdim=True)) @ v


def decoder_logits(P, cfg, kvs, key_pad, mask, ans_in):
    T = ans_in.shape[1]
    y = P["tok_emb"][ans_in] + P["dec_pos"][:T]
    for l in range(cfg.n_dec_layers):
        p = f"dec.{l}."
        y = y + _self_attn(_ln(y, P, p + "ln1."), P, p + "self.", cfg.n_heads, causal=True)
        q = _heads(_ln(y, P, p + "ln2.") @ P[p + "cross.Wq"] + P[p + "cross.bq"], cfg.n_heads)
        y = y + _merge(_dma(q, kvs[l][0], kvs[l][1], key_pad, mask)) @ P[p + "cross.Wo"] + P[p + "cross.bo"]
        y = y + _mlp(_ln(y, P, p + "ln3."), P, p + "mlp.")
    return _ln(y, P, "dec.lnf.") @ P["lm.W"] + P["lm.b"]  # (B, T, V)


def nll(logits, ans_out, pad_id):
    """Per-example mean token NLL over non-pad targets (B,)."""
    lp = torch.log_softmax(logits, dim=-1).gather(-1, ans_out[..., None])[..., 0]  # (B, T)
    valid = (ans_out != pad_id).to(logits.dtype)
    return -(lp * valid).sum(-1) / valid.sum(-1).clamp(min=1.0)


def reader_loss(P, cfg, ctx, ans_in, ans_out, mask=None, flags=None, kvs=None, need_logits=False):
    B, N, L = ctx.shape
    if kvs is None:
        kvs = memory(P, cfg, ctx, flags)
    logits = decoder_logits(P, cfg, kvs, ctx.reshape(B, N * L) == cfg.pad_id, mask, ans_in)
    per = nll(logits, ans_out, cfg.pad_id)
    return (per, logits) if need_logits else per.mean()


def two_pass_loss(P, cfg, b, mask=None, kvs1=None):
    """b: a dict of tensors with the TwoPassBatch fields."""
    per1, logits1 = reader_loss(P, cfg, b["ctx1"], b["ans1_in"], b["ans1_out"], mask, b["flags1"], kvs1,
                                need_logits=True)
    p1 = torch.softmax(logits1[:, 0], dim=-1)  # (B, V)
    one = (b["hops"] == 1).to(per1.dtype)
    total = (one * per1).sum()
    two = torch.nonzero(b["hops"] == 2)[:, 0]
    if two.numel():
        c2 = b["ctx2"][two]
        keep = (torch.arange(c2.shape[-1]) >= READ_PREFIX) & (c2 != cfg.pad_id)
        flags2 = p1[two][torch.arange(len(two))[:, None, None], c2] * keep
        per2 = reader_loss(P, cfg, c2, b["ans_in"][two], b["ans_out"][two], None if mask is None else mask[two],
                           flags2, need_logits=True)[0]
        total = total + per2.sum()
    return total / per1.shape[0]


def relaxed_max(w, G, tau, kappa):
    """The "max" relaxed top-K: M = max_j softmax((κ w + G^(j)) / τ)   w (B, N), G (B, K, N)."""
    return torch.softmax((kappa * w[:, None, :] + G) / tau, dim=-1).amax(dim=-2)


def reranker_scores(R, bow_q, bow_d):
    """w_i = φ(q)ᵀ W φ(d_i), φ = bag of words @ E (all candidates valid)."""
    u = (bow_q @ R["E"]) @ R["W"]  # (B, D)
    return ((bow_d @ R["E"]) @ u[:, :, None])[:, :, 0]  # (B, N)


def gumbel_step(R, P, cfg, bow_q, bow_d, G, batch, *, tau, kappa, two_pass, kvs=None):
    """One Gumbel Reranking step: the frozen reader's loss under the relaxed mask, gradients into the
    reranker only. Returns (loss, {name: grad})."""
    Rg = {k: v.detach().requires_grad_(True) for k, v in R.items()}
    M = relaxed_max(reranker_scores(Rg, bow_q, bow_d), G, tau, kappa).to(P["tok_emb"].dtype)
    if two_pass:
        loss = two_pass_loss(P, cfg, batch, M, kvs)
    else:
        loss = reader_loss(P, cfg, batch["ctx"], batch["ans_in"], batch["ans_out"], M, kvs=kvs)
    grads = torch.autograd.grad(loss, list(Rg.values()))
    return loss, dict(zip(Rg, grads))
