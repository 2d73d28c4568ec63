"""Shared test configuration: hypothesis profiles, and what the `gpu` marker runs on (CuPy on a GPU, else the
strict NumPy stand-in tests/device_standin.py, so the CuPy path is exercised on every run)."""
import importlib.util
import os
import sys

# One BLAS thread: the test models are tiny and several threads on 2 shared cores run them ~5x slower.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import numpy as np  # noqa: E402
import pytest
from hypothesis import HealthCheck, settings

import device_standin

# CI: no deadline (shared 2-core machines have noisy clocks) and enough examples to mean something.
settings.register_profile(
    "ci", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
)
settings.register_profile("dev", max_examples=25, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def _have_gpu() -> bool:
    """True when CuPy imports and sees a CUDA device (CuPy is imported only where it is installed)."""
    if importlib.util.find_spec("cupy") is None:
        return False
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # noqa: BLE001 -- CuPy without a driver or a device
        return False


def pytest_addoption(parser):
    parser.addoption("--gpu-backend", choices=("auto", "cupy", "standin"), default="auto",
                     help="what the `gpu` tests run on: auto (default) = CuPy where a CUDA device exists, else the "
                          "NumPy stand-in tests/device_standin.py; cupy = CuPy or an error; standin = always the stand-in")


def pytest_configure(config):
    choice = config.getoption("--gpu-backend")
    gpu = choice != "standin" and _have_gpu()
    if choice == "cupy" and not gpu:
        raise pytest.UsageError("--gpu-backend=cupy: CuPy with a CUDA device is not available on this machine")
    config._mini_gumbel_gpu_backend = "cupy" if gpu else "standin"


def pytest_report_header(config):
    return f"gpu tests run on: {config._mini_gumbel_gpu_backend}"


@pytest.fixture(autouse=True)
def _device_backend(request):
    """For a `gpu` test without a real GPU: the stand-in is sys.modules["cupy"] for that test only, and whatever was
    there before (nothing, or a CuPy without a device) comes back after it. backend.get_xp looks CuPy up in
    sys.modules on every call, so nothing is cached across the swap."""
    if request.node.get_closest_marker("gpu") is None or request.config._mini_gumbel_gpu_backend == "cupy":
        yield
        return
    saved = device_standin.install()
    try:
        yield
    finally:
        device_standin.uninstall(saved)


@pytest.fixture
def cp(request, _device_backend):
    """The array module of a `gpu` test: CuPy on a GPU, else the stand-in."""
    if request.node.get_closest_marker("gpu") is None:
        pytest.fail("the cp fixture is for tests marked gpu")
    return sys.modules["cupy"]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)
