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
from .validate import check_int, check_real, fail

__all__ = ["adam_init", "adam_step", "global_norm", "state_to_arrays", "state_from_arrays"]


def _check_arrays(fn: str, name: str, d) -> None:
    if not isinstance(d, dict):
        fail(fn, name, d, "a dict[str, array]", TypeError)
    for k, a in d.items():
        if not (hasattr(a, "shape") and hasattr(a, "dtype")):
            fail(fn, f"{name}[{k!r}]", a, "an array", TypeError)


def adam_init(params: dict) -> dict:
    """{"t": 0, "m": zeros like params, "v": zeros like params}."""
    _check_arrays("adam_init", "params", params)
    if not params:
        raise ValueError(f"adam_init: params={params!r}; expected a non-empty dict[str, array]")
    return {"t": 0,
            "m": {k: get_xp(p).zeros_like(p) for k, p in params.items()},
            "v": {k: get_xp(p).zeros_like(p) for k, p in params.items()}}


def global_norm(grads: dict) -> float:
    """sqrt(Σ_k ‖g_k‖²) over every array of the dict; summed where the arrays are, so a device copies one number
    to the host, not one per array."""
    _check_arrays("global_norm", "grads", grads)
    return math.sqrt(float(sum(get_xp(g).sum(g.astype(np.float64) ** 2) for g in grads.values())))


def adam_step(params: dict, grads: dict, state: dict, *, lr: float, betas=(0.9, 0.999), eps: float = 1e-8,
              weight_decay: float = 0.0, clip_norm: Optional[float] = None,
              decay_filter: Optional[Callable[[str], bool]] = None):
    """One Adam step (AdamW when weight_decay > 0: decoupled decay p ← p − lr·wd·p).

    Gradients are first scaled by min(1, clip_norm / ‖g‖) with ‖g‖ the global norm over all keys.
    decay_filter(name) -> bool picks the parameters that decay (default: all of them).
    Returns (new_params, new_state, grad_norm) where grad_norm is the norm before clipping.
    """
    fn = "adam_step"
    _check_arrays(fn, "params", params)
    _check_arrays(fn, "grads", grads)
    if not isinstance(state, dict) or not {"t", "m", "v"} <= set(state):
        fail(fn, "state", state, "the dict {'t', 'm', 'v'} from adam_init or a previous adam_step", TypeError)
    check_int(fn, "state['t']", state["t"], lo=0)
    if set(params) != set(grads):
        raise ValueError(f"adam_step: grads keys differ from params keys: missing {sorted(set(params) - set(grads))[:5]}"
                         f", extra {sorted(set(grads) - set(params))[:5]}")
    if not (isinstance(state["m"], dict) and isinstance(state["v"], dict)
            and set(state["m"]) == set(params) == set(state["v"])):
        raise ValueError("adam_step: state does not match params (keys of state['m'], state['v']); expected "
                         "adam_init(params)")
    lr = check_real(fn, "lr", lr, lo=0.0, lo_open=True)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        fail(fn, "betas", betas, "a pair (beta1, beta2), each in [0, 1)", TypeError)
    b1, b2 = (check_real(fn, f"betas[{i}]", b, lo=0.0) for i, b in enumerate(betas))
    if not (b1 < 1 and b2 < 1):
        fail(fn, "betas", betas, "a pair (beta1, beta2), each in [0, 1)")
    eps = check_real(fn, "eps", eps, lo=0.0)
    weight_decay = check_real(fn, "weight_decay", weight_decay, lo=0.0)
    if clip_norm is not None:
        clip_norm = check_real(fn, "clip_norm", clip_norm, lo=0.0, lo_open=True)
    if decay_filter is not None and not callable(decay_filter):
        fail(fn, "decay_filter", decay_filter, "a callable name -> bool, or None", TypeError)
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
    """Inverse of state_to_arrays. Entries other than 't', 'm/<name>' and 'v/<name>' are a ValueError."""
    fn = "state_from_arrays"
    if not isinstance(arrays, dict):
        fail(fn, "arrays", arrays, "a dict[str, array] (the output of state_to_arrays)", TypeError)
    if "t" not in arrays:
        raise ValueError("state_from_arrays: no 't' entry; expected the output of state_to_arrays")
    t = np.asarray(arrays["t"])
    if t.shape != () or t.dtype.kind not in "iu" or int(t) < 0:
        fail(fn, "arrays['t']", arrays["t"], "a 0-d integer array >= 0 (the step count)")
    state = {"t": int(t), "m": {}, "v": {}}
    for name, a in arrays.items():
        if name != "t":
            part, sep, k = str(name).partition("/")
            if part not in ("m", "v") or not sep or not k:
                fail(fn, "arrays", sorted(arrays)[:5], f"keys 't', 'm/<name>' and 'v/<name>' (found {name!r})")
            state[part][k] = a
    if set(state["m"]) != set(state["v"]):
        raise ValueError("state_from_arrays: the 'm' and 'v' entries name different parameters")
    return state
