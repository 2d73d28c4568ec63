"""The notebooks: each one executes top to bottom at the small size, and the committed copies are executed.

Every notebook runs in a fresh kernel with nbclient at ``MINI_GUMBEL_NB_SIZE=small`` (their CI size), in a
temporary working directory, with a temporary ``MINI_GUMBEL_CACHE`` shared by the series (notebook 6 trains the
smoke-sized reader that notebooks 7 and 8, and notebook 8's ``run_demo(quick=True)``, then load). Nothing is
written back to ``notebooks/``. A cell that raises (every cell ends in a print with its expected value, an
assertion or a plot) fails the test with the cell's traceback.
"""
import ast
import os
import re
import sys
from datetime import datetime
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 240
N_NOTEBOOKS = 12
METHOD_DOC = NB_DIR.parent / "docs" / "method.md"
BLAS_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
SILENT_CELL_S = 15  # a committed cell that ran longer than this must have shown progress


def test_the_series_is_numbered_one_to_twelve():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, N_NOTEBOOKS + 1)], [p.name for p in NOTEBOOKS]
    readme = (NB_DIR / "README.md").read_text()
    for p in NOTEBOOKS:
        assert p.name in readme, f"notebooks/README.md does not list {p.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_method_citations_name_sections_of_docs_method_md(path):
    """Every section a notebook cites is "docs/method.md §N" (or §N.M, §N-M, §N–M), and it exists there."""
    doc = METHOD_DOC.read_text()
    sections = set(re.findall(r"^## (\d+)\.", doc, re.M)) | set(re.findall(r"\*\*(\d+\.\d+) ", doc))
    nb = nbformat.read(path, as_version=4)
    text = "\n".join(c.source for c in nb.cells)
    other = re.findall(r"\S*(?<!docs/method\.md) §\d[\d.]*", text)
    assert not other, f"{path.name} cites sections of something other than docs/method.md: {other}"
    for cited in re.findall(r"docs/method\.md §([\d.]+(?:[-–][\d.]+)?)", text):
        for part in re.split(r"[-–]", cited):
            assert part.rstrip(".") in sections, f"{path.name} cites docs/method.md §{cited}, which does not exist"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_copy_is_executed_without_errors(path):
    """Committed with outputs (readable online), no error output, every code cell ends in something checkable."""
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{path.name}: no code cell"
    for j, cell in enumerate(code):
        kinds = [o.get("output_type") for o in cell.get("outputs", [])]
        assert "error" not in kinds, f"{path.name}: code cell {j} was committed with an error output"
        assert kinds or "assert" in cell.source, f"{path.name}: code cell {j} has no output and no assertion"
        assert cell.get("execution_count") is not None, f"{path.name}: code cell {j} was not executed"
    assert any("image/png" in o.get("data", {}) for c in code for o in c.get("outputs", [])), \
        f"{path.name}: no plot in the committed outputs"


def _setdefault_one(node):
    """(whether ``node`` is ``os.environ.setdefault(X, "1")``, X: the string, or the name of the loop variable)."""
    call = node.value if isinstance(node, ast.Expr) else None
    if not (isinstance(call, ast.Call) and ast.unparse(call.func) == "os.environ.setdefault" and len(call.args) == 2
            and isinstance(call.args[1], ast.Constant) and call.args[1].value == "1"):
        return False, None
    arg = call.args[0]
    return True, (arg.value if isinstance(arg, ast.Constant) else arg.id if isinstance(arg, ast.Name) else None)


def blas_vars_set_before_numpy(source: str) -> tuple[set, str | None]:
    """The BLAS variables the cell sets to 1 with os.environ.setdefault (directly, or in a for loop over a tuple of
    names) before its first import of a module outside the standard library (NumPy, or anything that loads it:
    mini_gumbel, matplotlib, scipy, autograd, IPython), and that import's module (None: no such import)."""
    done = set()
    for node in ast.parse(source).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            outside = [n for n in names if n.split(".")[0] not in sys.stdlib_module_names]
            if outside:
                return done, outside[0]
        elif isinstance(node, ast.Expr):
            ok, name = _setdefault_one(node)
            if ok and name:
                done.add(name)
        elif (isinstance(node, ast.For) and isinstance(node.target, ast.Name) and isinstance(node.iter, ast.Tuple)
              and all(isinstance(e, ast.Constant) for e in node.iter.elts)):
            for stmt in node.body:
                ok, name = _setdefault_one(stmt)
                if ok and name == node.target.id:
                    done |= {e.value for e in node.iter.elts}
    return done, None


def test_blas_check_reads_the_order_of_the_first_cell():
    """The parser behind the next test: an import of NumPy (or of mini_gumbel) before the setting makes it too late."""
    good = 'import os\n\nfor v in ("A", "B"):\n    os.environ.setdefault(v, "1")\n\nimport math\nimport numpy as np\n'
    assert blas_vars_set_before_numpy(good) == ({"A", "B"}, "numpy")
    late = 'import os\nfrom mini_gumbel import ops\nos.environ.setdefault("A", "1")\n'
    assert blas_vars_set_before_numpy(late) == (set(), "mini_gumbel")
    wrong = 'import os\nos.environ.setdefault("A", "4")\nos.environ["B"] = "1"\nimport numpy\n'
    assert blas_vars_set_before_numpy(wrong) == (set(), "numpy")  # not one thread; and an override, not a default


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_first_cell_sets_one_blas_thread_before_numpy_loads(path):
    """BLAS reads its thread count once, when NumPy loads it: the first code cell sets every variable to 1 with
    setdefault (so that a value set outside wins) before anything imports NumPy, in every notebook."""
    nb = nbformat.read(path, as_version=4)
    first = next(c for c in nb.cells if c.cell_type == "code")
    done, first_import = blas_vars_set_before_numpy(first.source)
    assert set(BLAS_VARS) <= done, (f"{path.name}: the first code cell sets {sorted(done)} with os.environ.setdefault"
                                    f"(..., '1') before importing {first_import}; expected all of {BLAS_VARS}")
    assert first_import is not None, f"{path.name}: the first code cell imports nothing outside the standard library"


def test_a_fresh_kernel_has_not_loaded_numpy():
    """The premise of the previous test: ipykernel itself does not import NumPy, so the first cell is in time."""
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell('import sys\nprint("numpy" in sys.modules)')]
    nbclient.NotebookClient(nb, timeout=60, kernel_name="python3").execute()
    assert nb.cells[0].outputs[0]["text"].strip() == "False"


def _seconds(cell) -> float | None:
    """How long a committed cell ran (nbclient's execution timestamps), or None where they were not recorded."""
    e = cell.get("metadata", {}).get("execution", {})
    if "iopub.execute_input" not in e or "shell.execute_reply" not in e:
        return None
    t = [datetime.fromisoformat(e[k].replace("Z", "+00:00")) for k in ("iopub.execute_input", "shell.execute_reply")]
    return (t[1] - t[0]).total_seconds()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_long_committed_cells_show_progress_and_say_how_long(path):
    """A committed cell that ran longer than SILENT_CELL_S showed a progress bar (tqdm's "| n/total [" on stderr) or
    printed as it went, and its source or the markdown just above it says how long it takes ("N s", "minute")."""
    nb = nbformat.read(path, as_version=4)
    for j, cell in enumerate(nb.cells):
        s = _seconds(cell) if cell.cell_type == "code" else None
        if s is None or s <= SILENT_CELL_S:
            continue
        err = "".join(o.get("text", "") for o in cell.outputs if o.get("name") == "stderr")
        out = [o for o in cell.outputs if o.get("name") == "stdout"]
        assert re.search(r"\| *\d+/\d+ \[\d", err) or len(out) > 1, \
            f"{path.name}: cell {j} ran {s:.0f} s with no progress bar and no output along the way"
        above = nb.cells[j - 1].source if j and nb.cells[j - 1].cell_type == "markdown" else ""
        said = re.search(r"\d+\s*(s\b|seconds?\b|min)|minutes?\b", cell.source + "\n" + above)
        assert said, f"{path.name}: cell {j} ran {s:.0f} s and neither it nor the markdown above says how long it takes"


@pytest.fixture(scope="module")
def small_env(tmp_path_factory):
    """MINI_GUMBEL_NB_SIZE=small and a fresh reader cache for the kernels (they inherit os.environ)."""
    env = {
        "MINI_GUMBEL_NB_SIZE": "small",
        "MINI_GUMBEL_CACHE": str(tmp_path_factory.mktemp("mini_gumbel_cache")),
    }
    # The models' matrices are tiny: one BLAS thread is faster, and on a busy 2-core machine a multi-threaded
    # BLAS can make them ~100x slower. Respect a setting made by the caller.
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        if var not in os.environ:
            env[var] = "1"
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_executes_at_small_size(path, small_env, tmp_path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:  # run from scratch: nothing of the committed outputs can leak into the check
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    client = nbclient.NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError (with the failing cell and its traceback) on the first error
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "size=small" in printed, f"{path.name} did not pick up MINI_GUMBEL_NB_SIZE=small"
