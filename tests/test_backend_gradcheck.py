"""The backend dispatch and the gradient checkers themselves (a checker that cannot fail is useless)."""
import numpy as np
import pytest

from mini_gumbel.backend import asarray_on, get_xp, to_numpy, unbox
from mini_gumbel.gradcheck import GradReport, check_grads, directional_check, jacobian_check, numerical_gradient, rel_error


def test_get_xp_numpy_and_scalars():
    assert get_xp(np.ones(3), None, 2.0) is np
    assert get_xp() is np


def test_get_xp_autograd_box_gives_autograd_numpy():
    autograd = pytest.importorskip("autograd")
    import autograd.numpy as anp

    seen = []

    def f(x):
        seen.append(get_xp(x, np.ones(2)))
        return anp.sum(x**2)

    autograd.grad(f)(np.ones(2))
    assert seen == [anp]


def test_get_xp_rejects_non_arrays():
    with pytest.raises(TypeError, match="not an array"):
        get_xp([1.0, 2.0])


def test_to_numpy_and_asarray_on_numpy():
    x = np.arange(3.0)
    assert to_numpy(x) is not None and np.array_equal(to_numpy(x), x)
    y = asarray_on([1, 2], like=x, dtype=np.float32)
    assert isinstance(y, np.ndarray) and y.dtype == np.float32


@pytest.mark.gpu
def test_get_xp_cupy_and_mixed_raises():
    cp = pytest.importorskip("cupy")
    a = cp.ones(3)
    assert get_xp(a) is cp
    with pytest.raises(TypeError, match="mixed NumPy and CuPy"):
        get_xp(a, np.ones(3))
    assert isinstance(asarray_on(np.ones(2), like=a), cp.ndarray)


def test_rel_error():
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(np.array([1.0, 0.0]), np.array([1.01, 0.0])) == pytest.approx(0.01 / 1.01)
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(2), np.zeros(3))


def _cubic(inp):
    return float(np.sum(np.sin(inp["x"]) * inp["y"] ** 3))


def test_directional_check_accepts_right_and_rejects_1pct_wrong(rng):
    x, y = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    g = {"x": np.cos(x) * y**3, "y": 3 * np.sin(x) * y**2}
    ok = directional_check(_cubic, {"x": x, "y": y}, g, rng=rng)
    assert ok.rel_error < 1e-8
    bad = directional_check(_cubic, {"x": x, "y": y}, {"x": g["x"] * 1.01, "y": g["y"] * 1.01}, rng=rng)
    assert bad.rel_error > 5e-3


def test_directional_check_needs_float64(rng):
    with pytest.raises(TypeError, match="float64"):
        directional_check(_cubic, {"x": np.ones(2, np.float32), "y": np.ones(2)}, {"x": np.ones(2)})


def test_jacobian_check_and_numerical_gradient(rng):
    A = rng.standard_normal((3, 4))
    x = rng.standard_normal(4)
    assert jacobian_check(lambda v: np.tanh(A @ v), x, lambda dy: A.T @ (dy * (1 - np.tanh(A @ x) ** 2))) < 1e-8
    assert jacobian_check(lambda v: np.tanh(A @ v), x, lambda dy: 1.01 * A.T @ (dy * (1 - np.tanh(A @ x) ** 2))) > 5e-3
    g = numerical_gradient(lambda v: float(np.sum(v**3)), x)
    assert rel_error(g, 3 * x**2) < 1e-8


# ------------------------------------------------------------------------------------------------------
# check_grads: finite differences, autograd of the same forward, and the built-in mutation


def _smooth_forward(d):
    """out = sin(x) * y**3 elementwise (x, y of one shape), traceable by autograd; cache = (x, y)."""
    xp = get_xp(d["x"], d["y"])
    return xp.sin(d["x"]) * d["y"] ** 3, (d["x"], d["y"])


def _smooth_backward(R, c, *, scale_x=1.0):
    x, y = c
    return {"x": scale_x * R * np.cos(x) * y**3, "y": R * 3 * np.sin(x) * y**2}


def _smooth_inputs(rng):
    return {"x": rng.standard_normal((3, 4)), "y": rng.standard_normal((3, 4))}


def test_check_grads_passes_a_correct_gradient(rng):
    pytest.importorskip("autograd")
    rep = check_grads(_smooth_forward, _smooth_backward, _smooth_inputs(rng), rng=rng)
    assert isinstance(rep, GradReport)
    assert rep.fd_rel_error < 1e-8
    assert set(rep.autograd_rel_error) == {"x", "y"} and max(rep.autograd_rel_error.values()) < 1e-12
    # the built-in 1% mutation was measured, and rejected by both checks
    assert rep.mutated_fd_rel_error > 5e-3
    assert all(v > 5e-3 for v in rep.mutated_autograd_rel_error.values())
    assert rep.fd_analytic != 0.0 and abs(rep.fd_numeric - rep.fd_analytic) <= 1e-8 * abs(rep.fd_analytic)


def test_check_grads_rejects_a_1pct_wrong_gradient(rng):
    pytest.importorskip("autograd")
    with pytest.raises(AssertionError, match="finite differences disagree"):
        check_grads(_smooth_forward, lambda R, c: _smooth_backward(R, c, scale_x=1.01), _smooth_inputs(rng), rng=rng)
    # the same error against autograd alone (use_autograd does not weaken the finite-difference check)
    with pytest.raises(AssertionError, match="finite differences disagree"):
        check_grads(_smooth_forward, lambda R, c: _smooth_backward(R, c, scale_x=1.01), _smooth_inputs(rng), rng=rng,
                    use_autograd=False)


def _half_traced_forward(d):
    """out = x * x, with one factor hidden from autograd (unbox): finite differences see d/dx = 2x, autograd x."""
    x = d["x"]
    return x * unbox(x), x


def test_check_grads_raises_when_finite_differences_and_autograd_disagree(rng):
    pytest.importorskip("autograd")
    inputs = {"x": rng.standard_normal(5)}
    # right for the function (passes finite differences), but autograd of the traced forward says x
    with pytest.raises(AssertionError, match=r"autograd disagrees on 'x'"):
        check_grads(_half_traced_forward, lambda R, x: {"x": 2 * R * x}, inputs, rng=rng)
    check_grads(_half_traced_forward, lambda R, x: {"x": 2 * R * x}, inputs, rng=rng, use_autograd=False)
    # agrees with autograd, not with the function
    with pytest.raises(AssertionError, match="finite differences disagree"):
        check_grads(_half_traced_forward, lambda R, x: {"x": R * x}, inputs, rng=rng)


def test_check_grads_mutation_guard_rejects_a_check_that_cannot_fail(rng):
    pytest.importorskip("autograd")
    inputs = _smooth_inputs(rng)
    with pytest.raises(AssertionError, match=r"scaled by 1.01 still passes finite differences.*cannot fail"):
        check_grads(_smooth_forward, _smooth_backward, inputs, rng=rng, tol=0.5)
    with pytest.raises(AssertionError, match=r"'x' scaled by 1.01 still passes the autograd comparison"):
        check_grads(_smooth_forward, _smooth_backward, inputs, rng=rng, autograd_tol=0.5)
    with pytest.raises(AssertionError, match=r"scaled by 1.0 still passes finite differences"):
        check_grads(_smooth_forward, _smooth_backward, inputs, rng=rng, mutation=1.0)
    # an input whose gradient is exactly 0 is compared with the absolute floor, and cannot be mutated
    rep = check_grads(lambda d: (d["x"] ** 2 + 0.0 * d["y"], d["x"]), lambda R, x: {"x": 2 * R * x, "y": 0 * R},
                      inputs, rng=rng)
    assert rep.autograd_rel_error["y"] == 0.0 and rep.mutated_autograd_rel_error["y"] == 0.0


def test_check_grads_rejects_a_backward_without_gradients(rng):
    with pytest.raises(TypeError, match="non-empty dict"):
        check_grads(_smooth_forward, lambda R, c: {}, _smooth_inputs(rng), rng=rng)


def test_check_grads_eps(rng):
    pytest.importorskip("autograd")
    inputs = _smooth_inputs(rng)
    assert check_grads(_smooth_forward, _smooth_backward, inputs, rng=rng, eps=1e-8).fd_rel_error < 1e-6
    with pytest.raises(AssertionError, match="finite differences disagree"):  # the step is used: too large fails
        check_grads(_smooth_forward, _smooth_backward, inputs, rng=rng, eps=0.1)


def _straight_through(d):
    """Value: the hard sign(x); traced gradient: that of the surrogate tanh(x) (s + (hard - s) with s unboxed)."""
    x = d["x"]
    s = get_xp(x).tanh(x)
    return s + (np.sign(unbox(x)) - unbox(s)), unbox(x)


def test_check_grads_fd_forward_for_a_straight_through_estimator(rng):
    pytest.importorskip("autograd")
    inputs = {"x": rng.standard_normal(6)}

    def backward(R, x):
        return {"x": R * (1 - np.tanh(x) ** 2)}

    out, _ = _straight_through(inputs)
    np.testing.assert_array_equal(out, np.sign(inputs["x"]))
    # finite differences of the piecewise-constant forward see 0
    with pytest.raises(AssertionError, match="finite differences disagree"):
        check_grads(_straight_through, backward, inputs, rng=rng)
    # on the surrogate: passes, and autograd (of the straight-through forward itself) agrees
    rep = check_grads(_straight_through, backward, inputs, rng=rng, fd_forward=lambda d: (np.tanh(d["x"]), None))
    assert rep.fd_rel_error < 1e-8 and rep.autograd_rel_error["x"] < 1e-12
    # a 1% wrong surrogate gradient fails
    with pytest.raises(AssertionError, match="finite differences disagree"):
        check_grads(_straight_through, lambda R, x: {"x": 1.01 * backward(R, x)["x"]}, inputs, rng=rng,
                    fd_forward=lambda d: (np.tanh(d["x"]), None))
