"""The backend dispatch and the gradient checkers themselves (a checker that cannot fail is useless)."""
import numpy as np
import pytest

from mini_gumbel.backend import asarray_on, get_xp, to_numpy
from mini_gumbel.gradcheck import directional_check, jacobian_check, numerical_gradient, rel_error


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
