"""The notebooks: each one executes top to bottom at the small size, and the committed copies are executed.

Every notebook runs in a fresh kernel with nbclient at ``MINI_GUMBEL_NB_SIZE=small`` (their CI size), in a
temporary working directory, with a temporary ``MINI_GUMBEL_CACHE`` shared by the series (notebook 6 trains the
smoke-sized reader that notebooks 7 and 8, and notebook 8's ``run_demo(quick=True)``, then load). Nothing is
written back to ``notebooks/``. A cell that raises (every cell ends in a print with its expected value, an
assertion or a plot) fails the test with the cell's traceback.
"""
import os
import re
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

NB_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NB_DIR.glob("[0-9][0-9]_*.ipynb"))
CELL_TIMEOUT_S = 240
N_NOTEBOOKS = 10
METHOD_DOC = NB_DIR.parent / "docs" / "method.md"


def test_the_series_is_numbered_one_to_ten():
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
