"""Adam / AdamW over parameter dicts, with global gradient-norm clipping.

Pure functions: ``adam_step`` returns fresh parameter and state dicts and never writes into the caller's
arrays, so a step can be replayed, checkpointed or compared against a reference.

    state = adam_init(params)
    params, state, gnorm = adam_step(params, grads, state, lr=1e-3, clip_norm=1.0)
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import numpy as np

from .backend import get_xp

__all__ = ["adam_init", "adam_step", "global_norm", "state_to_arrays", "state_from_arrays"]


def adam_init(params: dict) -> dict:
    """{"t": 0, "m": zeros like params, "v": zeros like params}."""
    if not isinstance(params, dict) or not params:
        raise ValueError(f"adam_init: params={type(params).__name__}; expected a non-empty dict[str, array]")
    return {"t": 0,
            "m": {k: get_xp(p).zeros_like(p) for k, p in params.items()},
            "v": {k: get_xp(p).zeros_like(p) for k, p in params.items()}}


def global_norm(grads: dict) -> float:
    """sqrt(Σ_k ‖g_k‖²) over every array of the dict."""
    return math.sqrt(sum(float(get_xp(g).sum(g.astype(np.float64) ** 2)) for g in grads.values()))


def adam_step(params: dict, grads: dict, state: dict, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0, clip_norm: Optional[float] = None,
              decay_filter: Optional[Callable[[str], bool]] = None):
    """One Adam step (AdamW when weight_decay > 0: decoupled decay p ← p − lr·wd·p).

    Gradients are first scaled by min(1, clip_norm / ‖g‖) with ‖g‖ the global norm over all keys.
    decay_filter(name) -> bool picks the parameters that decay (default: all of them).
    Returns (new_params, new_state, grad_norm) where grad_norm is the norm before clipping.
    """
    if set(params) != set(grads):
        raise ValueError(f"adam_step: grads keys differ from params keys: missing {sorted(set(params) - set(grads))[:5]}"
                         f", extra {sorted(set(grads) - set(params))[:5]}")
    if set(state.get("m", {})) != set(params):
        raise ValueError("adam_step: state does not match params (keys of state['m']); expected adam_init(params)")
    if not lr > 0:
        raise ValueError(f"adam_step: lr={lr}; expected lr > 0")
    b1, b2 = betas
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"adam_step: betas={betas}; expected both in [0, 1)")
    if clip_norm is not None and not clip_norm > 0:
        raise ValueError(f"adam_step: clip_norm={clip_norm}; expected None or > 0")
    for k, g in grads.items():
        if g.shape != params[k].shape:
            raise ValueError(f"adam_step: grads[{k!r}].shape={g.shape}; expected {params[k].shape} like params")
    gnorm = global_norm(grads)
    if not math.isfinite(gnorm):
        raise ValueError(f"adam_step: gradient norm is {gnorm}; expected finite gradients")
    scale = 1.0
    if clip_norm is not None and gnorm > clip_norm:
        scale = clip_norm / gnorm
    t = state["t"] + 1
    c1, c2 = 1.0 - b1 ** t, 1.0 - b2 ** t
    new_p, new_m, new_v = {}, {}, {}
    for k, p in params.items():
        g = grads[k] * scale if scale != 1.0 else grads[k]
        m = b1 * state["m"][k] + (1.0 - b1) * g
        v = b2 * state["v"][k] + (1.0 - b2) * (g * g)
        upd = (m / c1) / (get_xp(v).sqrt(v / c2) + eps)
        if weight_decay and (decay_filter is None or decay_filter(k)):
            upd = upd + weight_decay * p
        new_p[k] = (p - lr * upd).astype(p.dtype, copy=False)
        new_m[k], new_v[k] = m.astype(p.dtype, copy=False), v.astype(p.dtype, copy=False)
    return new_p, {"t": t, "m": new_m, "v": new_v}, gnorm


def state_to_arrays(state: dict) -> dict:
    """Flatten an Adam state to name -> array (for save_checkpoint(..., arrays=...))."""
    out = {"t": np.asarray(state["t"], dtype=np.int64)}
    for part in ("m", "v"):
        for k, a in state[part].items():
            out[f"{part}/{k}"] = a
    return out


def state_from_arrays(arrays: dict) -> dict:
    """Inverse of state_to_arrays."""
    if "t" not in arrays:
        raise ValueError("state_from_arrays: no 't' entry; expected the output of state_to_arrays")
    state = {"t": int(arrays["t"]), "m": {}, "v": {}}
    for name, a in arrays.items():
        if name != "t":
            part, k = name.split("/", 1)
            state[part][k] = a
    if set(state["m"]) != set(state["v"]):
        raise ValueError("state_from_arrays: the 'm' and 'v' entries name different parameters")
    return state
