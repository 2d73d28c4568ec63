"""Argument checks shared by every public function, with one message format and one convention.

    fn: name=value; expected ...

``TypeError`` when the argument has the wrong type (a float where an int is needed, a bool anywhere a number
is, an int array where floats are), ``ValueError`` when the type is right and the value is not (k > N, τ <= 0,
NaN scores, a wrong shape). A public forward calls these once at its top and then reads as math; the
transformer primitives in ``ops`` are building blocks whose callers validate.

Every check reads values only (autograd boxes are unboxed first), so validating never builds graph nodes.
"""
from __future__ import annotations

import math
import numbers
from typing import Any, Sequence

import numpy as np

from .backend import get_xp, is_cupy, unbox

__all__ = ["ABSENT", "fail", "check_type", "check_int", "check_real", "check_choice", "check_bool", "check_array",
           "check_token_ids", "check_scores", "check_finite_output", "check_float_dtype", "check_cache", "check_dloss", "check_seed", "show"]


def show(value: Any) -> str:
    """A short repr for messages: arrays by shape and dtype, classes by name (``numpy.float16``), everything
    else by repr (cut at 60 chars). Never raises: it runs while an error is being raised, on anything."""
    try:
        return _show(value)
    except Exception:  # a repr that raises, a broken __array__ ...: name the type and go on
        return f"<a {type(value).__name__}>"


def _show(value: Any) -> str:
    v = unbox(value)
    if isinstance(v, np.dtype):
        return str(v)
    if isinstance(v, type):  # a class (np.float16, int): its class attributes are descriptors, not values
        return v.__name__ if v.__module__ == "builtins" else f"{v.__module__.split('.')[0]}.{v.__qualname__}"
    ndim = getattr(v, "ndim", 0)
    if hasattr(v, "shape") and hasattr(v, "dtype") and isinstance(ndim, numbers.Integral) and ndim > 0:
        return f"<array shape={tuple(v.shape)} dtype={v.dtype}>"
    r = repr(v)
    r = r if len(r) <= 60 else r[:57] + "..."
    if not isinstance(v, (numbers.Number, str, tuple, type(None), np.generic)):
        r = f"{r} (a {type(v).__name__})"  # e.g. a list where an array is expected
    return r


def fail(fn: str, name: str, value: Any, expected: str, exc: type = ValueError):
    """Raise ``exc`` with the house message ``fn: name=value; expected ...``."""
    raise exc(f"{fn}: {name}={show(value)}; expected {expected}")


def check_type(fn: str, name: str, value: Any, types, expected: str | None = None):
    """``value`` itself when ``isinstance(value, types)``, else TypeError."""
    if not isinstance(value, types):
        names = " or ".join(getattr(t, "__name__", str(t)) for t in (types if isinstance(types, tuple) else (types,)))
        fail(fn, name, value, expected or f"a {names} (got {type(value).__name__})", TypeError)
    return value


def check_int(fn: str, name: str, value: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """An integer (not a bool) in [lo, hi]; returns it as a Python int."""
    rng = _range_text(lo, hi)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        fail(fn, name, value, f"an int{rng}", TypeError)
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        fail(fn, name, value, f"an int{rng}")
    return v


def check_seed(fn: str, seed: Any, name: str = "seed") -> int:
    """A seed: an int >= 0 (not a bool). None is an error, not fresh OS entropy: every entry point is
    reproducible from its arguments."""
    if seed is None:
        fail(fn, name, seed, "an int >= 0 (None would draw unreproducible random values)", TypeError)
    return check_int(fn, name, seed, lo=0)


def check_real(fn: str, name: str, value: Any, *, lo: float | None = None, hi: float | None = None,
               lo_open: bool = False, finite: bool = True) -> float:
    """A real number (not a bool), finite unless ``finite=False``, in [lo, hi] ((lo, hi] with lo_open)."""
    parts = (["a finite number"] if finite else ["a number"])
    if lo is not None:
        parts.append(f"{'>' if lo_open else '>='} {lo:g}")
    if hi is not None:
        parts.append(f"<= {hi:g}")
    expected = " ".join(parts[:1]) + (" " + " and ".join(parts[1:]) if parts[1:] else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(fn, name, value, expected, TypeError)
    v = float(value)
    if math.isnan(v) or (finite and not math.isfinite(v)):
        fail(fn, name, value, expected)
    if lo is not None and (v <= lo if lo_open else v < lo):
        fail(fn, name, value, expected)
    if hi is not None and v > hi:
        fail(fn, name, value, expected)
    return v


def check_choice(fn: str, name: str, value: Any, choices: Sequence) -> Any:
    """One of ``choices`` (compared by equality; a non-string where strings are expected is a TypeError)."""
    if all(isinstance(c, str) for c in choices) and not isinstance(value, str):
        fail(fn, name, value, f"one of {tuple(choices)}", TypeError)
    if value not in choices:
        fail(fn, name, value, f"one of {tuple(choices)}")
    return value


def check_bool(fn: str, name: str, value: Any) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        fail(fn, name, value, "True or False", TypeError)
    return bool(value)


def check_cache(fn: str, cache: Any, cls, *, forward: str | None = None):
    """``cache`` itself when it is an instance of ``cls`` (a class or a tuple of classes), else TypeError.

    For hand-written backwards: a wrong ``cache`` (None, a dict, the cache of another forward) is named
    here instead of surfacing as a bare ``AttributeError`` deep in the backward. ``forward`` names the
    function whose cache is expected, for the message."""
    if not isinstance(cache, cls):
        names = cls.__name__ if isinstance(cls, type) else " or ".join(c.__name__ for c in cls)
        src = f" returned by {forward}" if forward else ""
        shown = "None" if cache is None else f"<a {type(cache).__name__}>"  # a cache's repr is pages long
        raise TypeError(f"{fn}: cache={shown}; expected the {names}{src}")
    return cache


def check_dloss(fn: str, dloss: Any, name: str = "dloss"):
    """The upstream gradient of a scalar loss: a finite real number (not a bool) or a 0-d real array.
    Returns it unchanged (a 0-d device array stays on its device)."""
    d = unbox(dloss)
    if isinstance(d, np.ndarray) or is_cupy(d):
        if d.shape != ():
            fail(fn, f"{name}.shape", tuple(d.shape), "() (the gradient of the scalar loss)")
        if d.dtype.kind not in "fiu":
            fail(fn, f"{name}.dtype", d.dtype, "a real dtype", TypeError)
        v = float(d)
    elif isinstance(d, numbers.Real) and not isinstance(d, (bool, np.bool_)):
        v = float(d)
    else:
        fail(fn, name, dloss, "a finite real number (the gradient of the scalar loss)", TypeError)
    if not math.isfinite(v):
        fail(fn, name, dloss, "a finite real number")
    return dloss


def check_float_dtype(fn: str, name: str, dtype, allowed=(np.float32, np.float64)) -> np.dtype:
    """One of the ``allowed`` dtypes, given as anything numpy.dtype() reads except None (which it would read
    as float64)."""
    try:
        if dtype is None:
            raise TypeError
        dt = np.dtype(dtype)
    except (TypeError, ValueError):  # ValueError: np.dtype((int, -1)) and other malformed specifications
        fail(fn, name, dtype, "a floating dtype (numpy.float32 or numpy.float64)", TypeError)
    if dt not in [np.dtype(a) for a in allowed]:
        fail(fn, name, dtype, f"one of {[np.dtype(a).name for a in allowed]}", TypeError)
    return dt


def _range_text(lo, hi) -> str:
    if lo is not None and hi is not None:
        return f" in [{lo}, {hi}]"
    if lo is not None:
        return f" >= {lo}"
    if hi is not None:
        return f" <= {hi}"
    return ""


def check_array(fn: str, name: str, a: Any, *, ndim: int | None = None, shape: tuple | None = None,
                kind: str = "f", finite: bool = False, nonneg: bool = False):
    """An array (NumPy, CuPy or an autograd box of one) of the given dtype kind ('f' float, 'b' bool,
    'iu' integer), number of dimensions or exact shape (None entries in ``shape`` match any size);
    optionally all finite and all >= 0. Returns the unboxed array."""
    raw = unbox(a)
    if not (isinstance(raw, np.ndarray) or is_cupy(raw)):
        fail(fn, name, a, f"an array{'' if shape is None else f' of shape {shape}'}", TypeError)
    kinds = {"f": "a floating", "b": "a bool", "iu": "an integer"}
    if raw.dtype.kind not in kind:
        fail(fn, f"{name}.dtype", raw.dtype, f"{kinds.get(kind, kind)} dtype", TypeError)
    if ndim is not None and raw.ndim != ndim:
        fail(fn, f"{name}.shape", tuple(raw.shape), f"{ndim} dimensions")
    if shape is not None and (raw.ndim != len(shape)
                              or any(s is not None and s != r for s, r in zip(shape, raw.shape))):
        fail(fn, f"{name}.shape", tuple(raw.shape), f"{tuple('*' if s is None else s for s in shape)}")
    if raw.size and (finite or nonneg):
        xp = get_xp(raw)
        if finite and not bool(xp.all(xp.isfinite(raw))):
            fail(fn, name, a, "finite values (no NaN or inf)")
        if nonneg and not bool(xp.all(raw >= 0)):  # a NaN is not >= 0 either
            fail(fn, name, a, f"values >= 0 (min {float(raw.min())})")
    return raw


def check_token_ids(fn: str, name: str, ids: Any, *, ndim: int, vocab_size: int):
    """Integer token ids of ``ndim`` dims in [0, vocab_size): an out-of-range id (e.g. -1) would silently
    wrap around in an embedding lookup."""
    raw = check_array(fn, name, ids, ndim=ndim, kind="iu")
    if raw.size:
        lo, hi = int(raw.min()), int(raw.max())
        if lo < 0 or hi >= vocab_size:
            fail(fn, name, ids, f"token ids in [0, {vocab_size}) (found ids in [{lo}, {hi}])")
    return raw


class _Absent:
    """The default of an argument that is checked only when given: None itself is a value (and an error)."""

    def __repr__(self) -> str:
        return "<not given>"


ABSENT = _Absent()


def check_scores(fn: str, scores: Any, k: Any = ABSENT):
    """Scores (..., N) of a float dtype: finite, or -inf for padded candidates; NaN and +inf are errors.
    With ``k`` (any value passed, None included): an int in [1, N] and every row with at least k finite
    entries. Returns (raw scores, k), k None when it was not given."""
    raw = unbox(scores)
    if isinstance(raw, np.generic):
        raw = np.asarray(raw)
    if not (isinstance(raw, np.ndarray) or is_cupy(raw)):
        fail(fn, "scores", scores, "a float numpy/cupy array of shape (..., N)", TypeError)
    if raw.ndim < 1:
        fail(fn, "scores.shape", tuple(raw.shape), "at least one axis (..., N)")
    if raw.dtype.kind != "f":
        fail(fn, "scores.dtype", raw.dtype, "a floating dtype (float64 or float32)", TypeError)
    n = raw.shape[-1]
    if k is ABSENT:
        k = None
    else:
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            fail(fn, "k", k, f"an int with 1 <= k <= N={n}", TypeError)
        if not 1 <= int(k) <= n:
            fail(fn, "k", k, f"an int with 1 <= k <= N={n} (the size of the last axis)")
        k = int(k)
    if raw.size:
        xp = get_xp(raw)
        for bad, what in ((xp.isnan(raw), "NaN"), (raw == xp.inf, "+inf")):
            if bool(xp.any(bad)):
                fail(fn, "scores", scores, f"finite values, or -inf for padded candidates (found {what})")
        if k is not None:
            n_finite = int(xp.min(xp.sum(xp.isfinite(raw), axis=-1)))
            if n_finite < k:
                fail(fn, "scores", scores, f"at least k={k} finite (non-padded) candidates in every row "
                     f"(a row has {n_finite})")
    return raw, k


def check_finite_output(fn: str, out: Any, params: dict, name: str = "loss"):
    """Nothing when ``out`` (a loss, logits) is all finite. Otherwise the first parameter of ``params`` (a dict
    of arrays) that is not finite is named, or, when they all are, ``out`` itself.

    For models whose parameters are too many to scan on every call: the output is scanned instead (one value
    for a loss), and only a non-finite output pays for the scan. A NaN parameter that reaches no output
    changes nothing; one that does is this error instead of a NaN loss."""
    o = unbox(out)
    xp = get_xp(o)
    if bool(xp.all(xp.isfinite(o))):
        return
    for k, v in unbox(params).items():
        check_array(fn, f"params[{k!r}]", v, finite=True)
    fail(fn, name, out, f"a finite {name} (every parameter is finite)")
