"""What the sections share: the timed workloads, built once so that every section times the same code.

A section compares two paths (hand vs autograd, NumPy vs CuPy, small vs large) and the comparison is only
fair if both run on identical inputs: the builders below draw everything from one seeded Generator, in a
fixed order, on the host, and move it to the device only at the end. They return closures with no
arguments, the form ``mini_gumbel.timing`` times.

Dimension letters: B batch, N candidates, K kept, L tokens per encoder sequence, T answer tokens.
"""
from __future__ import annotations

import sys

import numpy as np

from mini_gumbel.gumbel import gumbel_noise, relaxed_topk_backward, relaxed_topk_forward
from mini_gumbel.reader import init_reader, reader_backward, reader_forward

TAU, KAPPA = 0.5, 1.0  # the relaxed top-K's temperature and score scale in every top-K timing


def topk_inputs(relaxation, B, N, K, dtype, *, seed=0, xp=np):
    """Scores w (B, N), Gumbel noise ((B, K, N) for "max", else (B, N)) and a probe R (B, N)."""
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((B, N)).astype(dtype)  # (B, N)
    noise = gumbel_noise((B, K, N) if relaxation == "max" else (B, N), rng, dtype=dtype)
    R = rng.standard_normal((B, N)).astype(dtype)  # (B, N): loss = sum(M * R)
    return tuple(a if xp is np else xp.asarray(a) for a in (w, noise, R))


def topk_step(relaxation, B, N, K, dtype, *, seed=0, xp=np):
    """The hand path: relaxed_topk_forward + relaxed_topk_backward(R)."""
    w, noise, R = topk_inputs(relaxation, B, N, K, dtype, seed=seed, xp=xp)

    def run():
        _, cache = relaxed_topk_forward(w, noise, K, tau=TAU, kappa=KAPPA, relaxation=relaxation)
        return relaxed_topk_backward(R, cache)

    return run


def reader_inputs(cfg, B, N, L, T, seed=0):
    """Token ids ctx (B, N, L) with the last quarter padded, answer in/out (B, T), a mask (B, N) in [0, 1)."""
    rng = np.random.default_rng(seed)
    ctx = rng.integers(4, cfg.vocab_size, (B, N, L))
    ctx[:, :, 0] = 3
    ctx[:, :, L - L // 4:] = cfg.pad_id  # the last quarter of every sequence is padding
    ans_in = rng.integers(4, cfg.vocab_size, (B, T))
    ans_in[:, 0] = cfg.bos_id
    ans_out = rng.integers(4, cfg.vocab_size, (B, T))
    ans_out[:, -1] = cfg.eos_id
    mask = rng.uniform(0.0, 1.0, (B, N))
    return ctx, ans_in, ans_out, mask


def reader_step(cfg, B, N, L, T, dtype, *, frozen=False, xp=np):
    """The hand reader step: full (every parameter gradient, mask=None) or frozen (the mask gradient only)."""
    params = init_reader(cfg, 0, dtype=dtype)
    ctx, ai, ao, mask = reader_inputs(cfg, B, N, L, T)
    mask = mask.astype(dtype)
    if xp is not np:
        params = {k: xp.asarray(v) for k, v in params.items()}
        ctx, ai, ao, mask = (xp.asarray(a) for a in (ctx, ai, ao, mask))
    one = np.dtype(dtype).type(1.0)

    def run():
        _, c = reader_forward(params, cfg, ctx, ai, ao, mask if frozen else None)
        return reader_backward(one, c, param_grads=not frozen)

    return run


def tag(env, **fields) -> dict:
    """A result row with the fields every row carries: backend, device, library versions."""
    out = {"backend": env["backend"], "device": env["device"], "versions": env["versions"]}
    out.update(fields)
    return out


def ms(seconds) -> str:
    """Milliseconds for the tables: three decimals below 10 ms, one above."""
    return f"{1e3 * seconds:.3f}" if seconds < 0.01 else f"{1e3 * seconds:.1f}"


def log(msg):
    print(msg, file=sys.stderr, flush=True)
