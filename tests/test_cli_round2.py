"""The command line's edge values (issue 21, item 8): a value that passes its flag's type but that the work
cannot use is still one argparse line naming the flag (exit 2) before any work, and --out, --seeds and a
second demo on one folder do what a user expects."""
import contextlib
import io
import json
import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import SCRIPT, assert_one_line_error, run_script

from mini_gumbel.experiment.cli import main

pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the mini-gumbel console script is not installed")

EDGE = [  # the reproductions: each used to end in a traceback (exit 1) after the reader had loaded
    (["demo", "--tau", "1e-320"], "--tau"),
    (["demo", "--kappa", "1e308"], "--kappa"),
    (["sweep", "--taus", "0.1", "1e-320"], "--taus"),
    (["sweep", "--kappa-stds", "1e308"], "--kappa-stds"),
    (["gradient-study", "--taus", "1e-320"], "--taus"),
    (["gradient-study", "--kappa-stds", "1e308"], "--kappa-stds"),
    (["gradient-study", "--n-single", "1000"], "--n-single"),
    (["gradient-study", "--n-two-hop", "1000"], "--n-two-hop"),
    (["demo", "--seeds", "0", "0"], "--seeds"),
    (["demo", "--seeds", "3", "1", "3"], "--seeds"),
] + [([cmd, "--out", ""], "--out") for cmd in ("demo", "sweep", "train-reader", "gradient-study")]


@pytest.mark.parametrize("args,flag", EDGE, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_edge_values_are_one_line_naming_the_flag_before_any_work(tmp_path, args, flag):
    res = run_script(args, tmp_path)
    assert_one_line_error(res, flag)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "work started: something was written"


def _main_error(argv, cwd):
    """(exit status, stderr) of the in-process command line run in ``cwd``, with its own reader cache."""
    err = io.StringIO()
    here, cache = os.getcwd(), os.environ.get("MINI_GUMBEL_CACHE")
    os.chdir(cwd)
    os.environ["MINI_GUMBEL_CACHE"] = str(Path(cwd) / "cache")
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                return main(argv), err.getvalue()
            except SystemExit as e:
                return e.code, err.getvalue()
    finally:
        os.chdir(here)
        if cache is None:
            os.environ.pop("MINI_GUMBEL_CACHE")
        else:
            os.environ["MINI_GUMBEL_CACHE"] = cache


# below 4/finfo.max no kappa makes tau usable (u >= 4); above finfo.max/4 no tau makes kappa usable
@given(tau=st.floats(min_value=0.0, max_value=2e-308, exclude_min=True),
       kappa=st.floats(min_value=4.5e307, allow_infinity=False))
@settings(max_examples=30)
def test_demo_tau_and_kappa_the_relaxation_cannot_use(tmp_path_factory, tau, kappa):
    cwd = tmp_path_factory.mktemp("demo")
    small = ["--quick", "--methods", "gumbel", "--no-tuned", "--steps", "1", "--no-progress"]  # should it run
    for argv, flag in ((["demo", "--tau", repr(tau), *small], "--tau"),
                       (["demo", "--kappa", repr(kappa), *small], "--kappa")):
        code, err = _main_error(argv, cwd)
        assert code == 2 and err.startswith(f"mini-gumbel demo: error: argument {flag}: "), err
    assert list(cwd.iterdir()) == []


def test_out_below_a_file_says_so(tmp_path):
    (tmp_path / "taken").write_text("x")
    for cmd in ("demo", "sweep", "gradient-study"):
        res = run_script([cmd, "--out", "taken/sub"], tmp_path)
        assert_one_line_error(res, "--out")
        assert "'taken' is a file" in res.stderr and "permission" not in res.stderr


def test_quick_demo_never_replaces_a_full_runs_table(tmp_path):
    full = tmp_path / "demo"
    full.mkdir()
    (full / "results.json").write_text(json.dumps({"quick": False, "table": {"gumbel": {}}}))
    res = run_script(["demo", "--quick", "--out", "demo"], tmp_path)
    assert_one_line_error(res, "--out")
    assert "full run" in res.stderr
    assert json.loads((full / "results.json").read_text())["quick"] is False
    assert sorted(p.name for p in full.iterdir()) == ["results.json"]


def test_unknown_flag_points_at_the_subcommands_help(tmp_path):
    res = run_script(["demo", "--no-such-flag"], tmp_path)
    assert_one_line_error(res, "--no-such-flag")
    assert "`mini-gumbel demo --help` lists every flag" in res.stderr
    assert "--steps" in run_script(["demo", "--help"], tmp_path).stdout  # where the demo's flags are listed
