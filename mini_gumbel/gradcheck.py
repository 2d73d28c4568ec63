"""Finite-difference gradient checks, used by the tests and the notebooks.

Two checks, both with central differences in float64:

* ``directional_check`` -- autograd's trick: probe one random direction ``v`` in the space of *all*
  inputs at once. The directional derivative ``(f(x + eps v) - f(x - eps v)) / 2 eps`` must equal
  ``<grad, v>``. Two extra forward calls whatever the size, so it scales to a whole model.
* ``jacobian_check`` -- the full Jacobian, one column per input entry, against the vector-Jacobian
  product applied to every output basis vector. Only for tiny shapes; it finds *which* entry is wrong.

and one helper that tests and notebooks call for every forward/backward pair:

* ``check_grads`` -- in the spirit of autograd's ``check_grads``: the directional check above, autograd of
  the *same* forward as a second oracle, and a built-in mutation (the hand gradient scaled by 1.01) that
  both checks must reject, so a passing check is known to be able to fail.

Both checks return a relative error ``|a - b| / max(|a|, |b|)``. With eps = 1e-6 in float64 a correct gradient
of a smooth function gives ~1e-9; a gradient off by 1% gives ~1e-2, so a tolerance of 1e-6 separates them
by four orders of magnitude.

To check an op ``y = op(x)`` with output array ``y``, turn it into a scalar with a fixed random
projection: ``loss = sum(y * R)`` with ``R = probe(y.shape, rng)``, whose gradient with respect to ``y``
is exactly ``R`` -- feed ``R`` as ``dout`` to the backward.
"""
from __future__ import annotations

from collections import abc
from typing import Callable, Mapping, NamedTuple

import numpy as np

from .backend import get_xp, is_traced, to_numpy
from .validate import check_bool, check_real, check_type, fail

__all__ = ["rel_error", "probe", "directional_check", "jacobian_check", "numerical_gradient", "CheckResult",
           "check_grads", "GradReport"]


class CheckResult(NamedTuple):
    rel_error: float  # |numeric - analytic| / max(|numeric|, |analytic|)
    numeric: float  # finite-difference directional derivative
    analytic: float  # <grad, v>


def rel_error(a, b) -> float:
    """Norm-wise relative error ``||a - b|| / max(||a||, ||b||)`` (0 when both are 0)."""
    a = np.asarray(to_numpy(a), dtype=np.float64)
    b = np.asarray(to_numpy(b), dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"rel_error: shapes differ, a.shape={a.shape} and b.shape={b.shape}")
    den = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if den == 0.0 else float(np.linalg.norm(a - b) / den)


def probe(shape, rng: np.random.Generator) -> np.ndarray:
    """A random float64 array to project an output onto: ``loss = sum(y * probe)``."""
    return rng.standard_normal(shape)


def _check_float64(name: str, x: np.ndarray) -> None:
    if np.asarray(x).dtype != np.float64:
        raise TypeError(f"gradcheck: input {name!r} has dtype {np.asarray(x).dtype}; finite differences need float64")


def directional_check(
    f: Callable[[Mapping[str, np.ndarray]], float],
    inputs: Mapping[str, np.ndarray],
    grads: Mapping[str, np.ndarray],
    *,
    eps: float = 1e-6,
    rng: np.random.Generator | None = None,
    mask: Mapping[str, np.ndarray] | None = None,
) -> CheckResult:
    """Compare ``grads`` with a central difference of ``f`` along one random direction.

    f       -- takes a dict like ``inputs`` and returns a scalar.
    inputs  -- float64 arrays; only the keys present in ``grads`` are perturbed.
    grads   -- the hand-written gradients, same shapes as the inputs.
    mask    -- optional 0/1 arrays per key: perturb only where mask is 1 (e.g. skip padded entries
               whose value is -inf).
    """
    if rng is None:
        rng = np.random.default_rng(0)
    if not grads:
        raise ValueError("directional_check: grads is empty; expected at least one gradient to check")
    direction = {}
    check_real("directional_check", "eps", eps, lo=0.0, lo_open=True)
    for k, g in grads.items():
        if k not in inputs:
            raise ValueError(f"directional_check: grads={sorted(grads)}; expected the names of inputs "
                             f"(no input {k!r})")
        x = inputs[k]
        _check_float64(k, x)
        if np.shape(g) != np.shape(x):
            raise ValueError(f"directional_check: grad {k!r} has shape {np.shape(g)}, input has {np.shape(x)}")
        v = rng.standard_normal(np.shape(x))
        if mask is not None and k in mask:
            v = v * mask[k]
        direction[k] = v

    def shifted(s: float):
        out = dict(inputs)
        for k, v in direction.items():
            out[k] = inputs[k] + s * eps * v
        return out

    numeric = (float(f(shifted(+1.0))) - float(f(shifted(-1.0)))) / (2.0 * eps)
    analytic = float(sum(np.sum(np.asarray(to_numpy(grads[k])) * v) for k, v in direction.items()))
    den = max(abs(numeric), abs(analytic))
    err = 0.0 if den == 0.0 else abs(numeric - analytic) / den
    return CheckResult(err, numeric, analytic)


def numerical_gradient(f: Callable[[np.ndarray], float], x: np.ndarray, *, eps: float = 1e-6) -> np.ndarray:
    """Full central-difference gradient of a scalar ``f`` at ``x`` (2 calls per entry: tiny shapes only)."""
    check_real("numerical_gradient", "eps", eps, lo=0.0, lo_open=True)
    _check_float64("x", x)
    g = np.zeros_like(x)
    flat = x.reshape(-1)
    for i in range(flat.size):
        xp_, xm_ = flat.copy(), flat.copy()
        xp_[i] += eps
        xm_[i] -= eps
        g.reshape(-1)[i] = (float(f(xp_.reshape(x.shape))) - float(f(xm_.reshape(x.shape)))) / (2 * eps)
    return g


def jacobian_check(
    f: Callable[[np.ndarray], np.ndarray],
    x: np.ndarray,
    vjp: Callable[[np.ndarray], np.ndarray],
    *,
    eps: float = 1e-6,
) -> float:
    """Full Jacobian of ``f`` at ``x`` by central differences against ``vjp`` on every output basis vector.

    Returns the norm-wise relative error of the two Jacobians. Cost: 2 * x.size forward calls plus
    y.size backward calls, so keep both small.
    """
    check_real("jacobian_check", "eps", eps, lo=0.0, lo_open=True)
    _check_float64("x", x)
    y0 = np.asarray(f(x))
    J_num = np.zeros((y0.size, x.size))  # (out, in)
    flat = x.reshape(-1)
    for j in range(x.size):
        xp_, xm_ = flat.copy(), flat.copy()
        xp_[j] += eps
        xm_[j] -= eps
        J_num[:, j] = (np.asarray(f(xp_.reshape(x.shape))) - np.asarray(f(xm_.reshape(x.shape)))).reshape(-1) / (2 * eps)
    J_ana = np.zeros_like(J_num)
    for i in range(y0.size):
        e = np.zeros(y0.size)
        e[i] = 1.0
        J_ana[i] = np.asarray(vjp(e.reshape(y0.shape))).reshape(-1)
    return rel_error(J_num, J_ana)


class GradReport(NamedTuple):
    """What ``check_grads`` measured (every field is also asserted against its tolerance)."""

    fd_rel_error: float  # directional finite differences vs the hand gradient
    autograd_rel_error: dict  # per input: ||autograd - hand|| / max(||hand||, floor)
    mutated_fd_rel_error: float  # the same FD check on the hand gradient scaled by ``mutation``
    mutated_autograd_rel_error: dict  # per input, the autograd comparison of the scaled gradient
    fd_numeric: float = float("nan")  # the finite-difference directional derivative of step 1
    fd_analytic: float = float("nan")  # <grad, v> for the same direction (0 when the probe does not move the loss)


def check_grads(
    forward: Callable,
    backward: Callable,
    inputs: Mapping[str, np.ndarray],
    *,
    rng: np.random.Generator | None = None,
    tol: float = 1e-6,
    autograd_tol: float = 1e-10,
    floor: float = 1e-4,
    mask: Mapping[str, np.ndarray] | None = None,
    use_autograd: bool = True,
    mutation: float = 1.01,
    eps: float = 1e-6,
    fd_forward: Callable | None = None,
) -> GradReport:
    """Check a hand-written backward three ways; raise ``AssertionError`` naming what failed.

    forward(inputs) -> (out, cache)      the code under test, written so autograd can trace it
    backward(dout, cache) -> {name: grad} gradients for some (or all) of the inputs, same shapes
    inputs                                float64 arrays; only the keys in the returned grads are checked

    The output is turned into a scalar with a fixed random projection ``loss = sum(out * R)``, so
    ``backward`` is called with ``dout = R``. Then:

    1. directional finite differences (one random direction over every checked input): rel error < tol;
    2. autograd of the same forward, per input: ||g_autograd - g|| <= autograd_tol * max(||g||, floor)
       (the floor covers gradients that are exactly 0);
    3. the mutation: the hand gradient scaled by ``mutation`` (1% off by default) must fail both (1) and
       (2) for every input whose gradient is not 0. A check that cannot fail raises too.

    eps          the finite-difference step of (1); a smaller one for functions that vary on a small scale
                 (e.g. scores divided by a temperature of 0.01)
    fd_forward   the forward whose finite differences (1) takes, when it is not ``forward`` itself: for a
                 straight-through estimator, whose forward is piecewise constant (finite differences see 0),
                 the smooth surrogate whose gradient the backward returns. Autograd (2) still traces
                 ``forward``, whose traced graph must carry the surrogate's gradient.
    """
    fn = "check_grads"
    for name, f in (("forward", forward), ("backward", backward), ("fd_forward", fd_forward)):
        if not callable(f) and not (name == "fd_forward" and f is None):
            fail(fn, name, f, "a callable" + (" or None" if name == "fd_forward" else ""), TypeError)
    check_type(fn, "inputs", inputs, abc.Mapping, "a dict {name: float64 array}")
    if not inputs:
        fail(fn, "inputs", inputs, "at least one input")
    if mask is not None:
        check_type(fn, "mask", mask, abc.Mapping, "a dict {name: 0/1 array} or None")
    for name, v, lo_open in (("tol", tol, True), ("autograd_tol", autograd_tol, True), ("floor", floor, False),
                             ("eps", eps, True), ("mutation", mutation, True)):
        check_real(fn, name, v, lo=0.0, lo_open=lo_open)
    check_bool(fn, "use_autograd", use_autograd)
    if rng is None:
        rng = np.random.default_rng(0)
    check_type(fn, "rng", rng, np.random.Generator, "a numpy.random.Generator or None")
    out, cache = forward(dict(inputs))
    R = probe(np.shape(out), rng)
    grads = backward(R, cache)
    if not isinstance(grads, Mapping) or not grads:
        raise TypeError("check_grads: backward must return a non-empty dict {input name: gradient}")
    unknown = [k for k in grads if k not in inputs]
    if unknown:
        fail(fn, "backward", backward, f"gradients of inputs only (it returned {unknown[0]!r}, not one of "
             f"{sorted(inputs)[:8]})")
    grads = {k: np.asarray(to_numpy(g), dtype=np.float64) for k, g in grads.items()}

    def projected(fwd):
        def loss(d):
            o = fwd(d)[0]
            if is_traced(o):
                return get_xp(o).sum(o * R)
            return float(np.sum(np.asarray(to_numpy(o)) * R))

        return loss

    loss = projected(forward)
    fd_loss = loss if fd_forward is None else projected(fd_forward)
    seed = int(rng.integers(2**31))
    fd = directional_check(fd_loss, inputs, grads, eps=eps, rng=np.random.default_rng(seed), mask=mask)
    mutated = {k: g * mutation for k, g in grads.items()}
    fd_bad = directional_check(fd_loss, inputs, mutated, eps=eps, rng=np.random.default_rng(seed), mask=mask)
    if not fd.rel_error < tol:
        raise AssertionError(f"check_grads: finite differences disagree: rel error {fd.rel_error:.3g} >= tol {tol:g} "
                             f"(numeric {fd.numeric:.12g}, analytic {fd.analytic:.12g})")
    if fd.analytic != 0.0 and not fd_bad.rel_error >= tol:
        raise AssertionError(f"check_grads: a gradient scaled by {mutation} still passes finite differences "
                             f"(rel error {fd_bad.rel_error:.3g} < tol {tol:g}): the check cannot fail")
    ag, ag_bad = {}, {}
    if use_autograd:
        try:
            from autograd import grad as _grad  # the oracle; in the demo and test extras, not a core dependency
        except ImportError as e:
            raise ImportError("check_grads: the autograd oracle needs autograd, which the core install does not "
                              "bring: pip install -e \".[demo]\" (or .[test]); use_autograd=False checks by finite "
                              "differences alone") from e

        for k, g in grads.items():
            def f(x, k=k):
                d = dict(inputs)
                d[k] = x
                return loss(d)

            ga = np.asarray(_grad(f)(np.asarray(inputs[k], dtype=np.float64)))
            den = max(float(np.linalg.norm(g)), floor)
            ag[k] = float(np.linalg.norm(ga - g) / den)
            ag_bad[k] = float(np.linalg.norm(ga - mutated[k]) / den)
            if not ag[k] <= autograd_tol:
                raise AssertionError(f"check_grads: autograd disagrees on {k!r}: rel error {ag[k]:.3g} > "
                                     f"autograd_tol {autograd_tol:g}")
            if np.linalg.norm(g) > floor * autograd_tol and not ag_bad[k] > autograd_tol:
                raise AssertionError(f"check_grads: {k!r} scaled by {mutation} still passes the autograd "
                                     f"comparison ({ag_bad[k]:.3g} <= {autograd_tol:g}): the check cannot fail")
    return GradReport(fd.rel_error, ag, fd_bad.rel_error, ag_bad, fd.numeric, fd.analytic)

