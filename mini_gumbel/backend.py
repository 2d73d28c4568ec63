"""The array backend: the only module that knows CuPy and autograd exist.

Every differentiable function in mini_gumbel asks ``xp = get_xp(*arrays)`` and then writes ``xp.exp``,
``xp.matmul`` and so on, so the same source runs on

* ``numpy``            -- plain CPU arrays (the default),
* ``cupy``             -- GPU arrays, when the inputs already live on a CUDA device,
* ``autograd.numpy``   -- when autograd is tracing the forward to check our hand-written backward.

Nothing here imports CuPy or autograd: a CuPy array can only exist if CuPy was imported by the caller,
and an autograd box only if autograd was, so we look for them in ``sys.modules``. Mixing NumPy and CuPy
inputs is a ``TypeError`` rather than a silent host<->device copy.
"""
from __future__ import annotations

import functools
import sys
from typing import Any

import numpy as np

__all__ = ["get_xp", "to_numpy", "asarray_on", "on_host", "is_cupy", "is_traced", "unbox"]


def _cupy_ndarray():
    cp = sys.modules.get("cupy")
    return None if cp is None else cp.ndarray


def _autograd_box():
    tracer = sys.modules.get("autograd.tracer")
    return None if tracer is None else tracer.Box


def is_cupy(a: Any) -> bool:
    """True when ``a`` is a CuPy array (without importing CuPy)."""
    nd = _cupy_ndarray()
    return nd is not None and isinstance(a, nd)


def is_traced(a: Any) -> bool:
    """True when ``a`` is an autograd box, i.e. autograd is differentiating through it."""
    box = _autograd_box()
    return box is not None and isinstance(a, box)


def unbox(a: Any) -> Any:
    """The value under any autograd boxes (``a`` itself when untraced), without copying.

    Validation and constants read values, never build graph nodes: e.g. the max subtracted before ``exp``
    is a constant to the tracer (exact, since the result does not depend on it).
    """
    while is_traced(a):
        a = a._value
    return a


def get_xp(*arrays: Any):
    """Return the array module for ``arrays``: ``numpy``, ``cupy`` or ``autograd.numpy``.

    ``None`` and Python scalars are ignored. Raises ``TypeError`` when NumPy and CuPy arrays are mixed
    (that would be a hidden device transfer). Autograd boxes win over NumPy arrays: a traced forward
    must build its graph with ``autograd.numpy``.
    """
    has_cupy = has_numpy = has_box = False
    for a in arrays:
        if a is None or isinstance(a, (bool, int, float, complex)):
            continue
        if is_cupy(a):
            has_cupy = True
        elif is_traced(a):
            has_box = True
        elif isinstance(a, (np.ndarray, np.generic)):
            has_numpy = True
        else:
            raise TypeError(
                f"get_xp: argument of type {type(a).__name__!r} is not an array; "
                "expected numpy.ndarray, cupy.ndarray or an autograd box"
            )
    if has_cupy and (has_numpy or has_box):
        raise TypeError(
            "get_xp: mixed NumPy and CuPy arrays; move every input to one device first "
            "(mini_gumbel.backend.asarray_on)"
        )
    if has_cupy:
        return sys.modules["cupy"]
    if has_box:
        return sys.modules["autograd.numpy"] if "autograd.numpy" in sys.modules else _import_anp()
    return np


def _import_anp():
    import autograd.numpy as anp  # noqa: PLC0415 -- only reached while autograd is already tracing

    return anp


def to_numpy(a: Any) -> np.ndarray:
    """Copy ``a`` to a NumPy array on the host (CuPy ``.get()``, autograd boxes unwrapped)."""
    if is_cupy(a):
        return a.get()
    if is_traced(a):
        return np.asarray(a._value)  # the value under the tracer; the graph is not needed here
    return np.asarray(a)


def asarray_on(a: Any, like: Any, dtype=None):
    """Return ``a`` as an array on the same backend (and device) as ``like``.

    This is the one explicit host->device entry point: the caller says where data should go.
    """
    if is_cupy(like):
        cp = sys.modules["cupy"]
        with cp.cuda.Device(like.device.id):
            return cp.asarray(a, dtype=dtype)
    return np.asarray(to_numpy(a), dtype=dtype)


def _map_arrays(tree: Any, fn, kind):
    """``tree`` with ``fn`` applied to each leaf ``kind(leaf)`` is true of, through tuples (named ones too),
    lists and dicts."""
    if kind(tree):
        return fn(tree)
    if isinstance(tree, tuple):
        vals = [_map_arrays(v, fn, kind) for v in tree]
        return type(tree)(*vals) if hasattr(tree, "_fields") else tuple(vals)
    if isinstance(tree, list):
        return [_map_arrays(v, fn, kind) for v in tree]
    if isinstance(tree, dict):
        return {k: _map_arrays(v, fn, kind) for k, v in tree.items()}
    return tree


def _first_cupy(tree: Any):
    found = []
    _map_arrays(tree, found.append, lambda a: is_cupy(a) and not found)
    return found[0] if found else None


def on_host(fn):
    """Decorator for host-bound functions (``mini_gumbel.estimators`` enumerates subsets in float64 NumPy):
    with a CuPy array among the arguments (or inside a tuple, list or dict argument, e.g. a cache), every CuPy
    array is copied to the host once, ``fn`` runs on NumPy, and every NumPy array and scalar of its result is
    copied back to the device of the first CuPy argument. Python numbers in the result stay Python numbers.
    Without a CuPy argument ``fn`` is called as it is (NumPy and autograd inputs are untouched)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        like = _first_cupy((args, kwargs))
        if like is None:
            return fn(*args, **kwargs)
        args, kwargs = _map_arrays((args, kwargs), to_numpy, is_cupy)
        out = fn(*args, **kwargs)
        return _map_arrays(out, lambda a: asarray_on(a, like), lambda a: isinstance(a, (np.ndarray, np.generic)))

    return wrapper
