"""The README's CPU example runs and prints exactly what the README says it prints, with what the README's first
command installs (the core and the `demo` extra) and nothing the `test` extra adds."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
# what `pip install -e ".[test]"` adds beyond `pip install -e ".[demo]"` (pyproject.toml): hidden from the example
TEST_ONLY = ("pytest", "hypothesis", "scipy", "nbclient", "nbformat", "ipykernel")
HIDE = """
import importlib.abc, sys
class _Hide(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {hidden!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (hidden: the demo's install does not bring it)")
sys.meta_path.insert(0, _Hide())
"""


def _example():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The relaxed mask and its gradient, on the CPU"):]
    code, printed = re.findall(r"```(?:python)?\n(.*?)```", section, flags=re.S)[:2]
    return code, printed


def _run(code: str):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_readme_example_prints_its_output():
    code, printed = _example()
    res = _run(code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == printed.strip()


def test_readme_example_needs_only_the_demo_install():
    """The same block with every package of the test extra that the demo extra lacks made unimportable."""
    code, printed = _example()
    res = _run(HIDE.format(hidden=set(TEST_ONLY)) + code)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == printed.strip()
    # and the hiding works: the same preamble makes an import of a hidden package fail
    probe = _run(HIDE.format(hidden=set(TEST_ONLY)) + "import scipy")
    assert probe.returncode != 0 and "hidden" in probe.stderr


def test_demo_extra_brings_what_the_example_imports():
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    demo = {re.split(r"[<>=!~ ]", d)[0] for d in extras["demo"]}
    assert "autograd" in demo  # gradcheck.check_grads' second oracle
    test = {re.split(r"[<>=!~ ]", d)[0] for d in extras["test"]}
    assert set(TEST_ONLY) <= test | {"ipykernel"}, set(TEST_ONLY) - test


def test_check_grads_without_autograd_says_which_extra_and_how_to_do_without():
    """The core install (NumPy alone): check_grads names the extra in one line, and use_autograd=False works."""
    code = HIDE.format(hidden={"autograd"}) + """
import numpy as np
from mini_gumbel.gradcheck import check_grads
f = lambda x: (x["a"] ** 2, x["a"])
b = lambda d, a: {"a": 2 * d * a}
x = {"a": np.arange(1.0, 4.0)}
r = check_grads(f, b, x, use_autograd=False)
print("fd only", r.fd_rel_error < 1e-6)
try:
    check_grads(f, b, x)
except ImportError as e:
    print(str(e))
"""
    res = _run(code)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert lines[0] == "fd only True"
    assert len(lines) == 2 and 'pip install -e ".[demo]"' in lines[1] and "use_autograd=False" in lines[1]
