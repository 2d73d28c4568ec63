"""The three relaxed top-K masks written the way a PyTorch user would: eager ops, torch.autograd for dscores.

Imported by sec_topk.py only when torch is installed; nothing in the package, the tests or CI needs it.
Same math as mini_gumbel.gumbel on the same inputs (docs/method.md §4-5), one thread, no torch.compile:

    max        S^(j) = softmax((κ w + G^(j)) / τ),  M = max_j S^(j)
    iterative  a^(j) = softmax(α / τ),  α ← α + log(1 - a^(j)),  M = Σ_j a^(j),  α₀ = κ w + G
    st         M = hard top-K of κ w + G in the forward, the iterative gradient in the backward

log(1 - a) is log1mexp(log a) in both branches (log(-expm1) near a = 1, log1p(-a) elsewhere), the stable
form of the reference code's clamp, so the two implementations agree to rounding.
"""
from __future__ import annotations

import math

import torch

_LOG_HALF = -math.log(2.0)


def _log1mexp(logp):
    return torch.where(logp > _LOG_HALF, torch.log(-torch.expm1(logp)), torch.log1p(-torch.exp(logp)))


def _iterative(alpha, k, tau):
    M = None
    for j in range(k):
        logp = torch.log_softmax(alpha / tau, dim=-1)
        a = torch.exp(logp)
        M = a if M is None else M + a
        if j < k - 1:
            alpha = alpha + _log1mexp(logp)
    return M


def forward(relaxation, w, noise, k, tau, kappa):
    """The mask M (B, N) of scores w (B, N, requires_grad) under noise ((B, K, N) for "max", else (B, N))."""
    if relaxation == "max":
        S = torch.softmax((kappa * w[:, None, :] + noise) / tau, dim=-1)  # (B, K, N)
        return S.max(dim=-2).values  # (B, N)
    alpha = kappa * w + noise  # (B, N)
    soft = _iterative(alpha, k, tau)
    if relaxation == "iterative":
        return soft
    idx = torch.topk(alpha.detach(), k, dim=-1).indices  # (B, K)
    hard = torch.zeros_like(soft).scatter_(-1, idx, 1.0)  # (B, N)
    return hard + (soft - soft.detach())  # straight-through


def step(relaxation, w, noise, R, k, tau, kappa, *, threads=1):
    """(run, check): run() is forward + torch.autograd.grad of sum(M * R) w.r.t. w (the timed closure),
    check() the same returning dscores as a float64 NumPy array. torch runs on ``threads`` threads."""
    torch.set_num_threads(threads)
    tw, tg, tR = torch.from_numpy(w), torch.from_numpy(noise), torch.from_numpy(R)

    def run():
        x = tw.detach().requires_grad_(True)
        M = forward(relaxation, x, tg, k, tau, kappa)
        (dw,) = torch.autograd.grad(M, x, grad_outputs=tR)
        return dw

    def check():
        return run().numpy().astype("float64")

    return run, check


def version() -> str:
    return torch.__version__
