"""The command line as a user meets it, through the real ``mini-gumbel`` console script: a misused flag is one
argparse-style line naming the flag (exit 2) before any work starts, Ctrl-C is one line that says what was
saved, and a core-only install still prints its table."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mini_gumbel.experiment.cli import main

SCRIPT = Path(sys.executable).with_name("mini-gumbel")
pytestmark = pytest.mark.skipif(not SCRIPT.exists(), reason="the mini-gumbel console script is not installed")


def run_script(args, cwd, **env):
    full_env = {**os.environ, "MINI_GUMBEL_CACHE": str(Path(cwd) / "cache"), **env}
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=120)


MISUSE = [  # (arguments, the flag the error must name)
    (["demo", "--tau", "0"], "--tau"),
    (["demo", "--tau", "-1"], "--tau"),
    (["demo", "--tau", "inf"], "--tau"),
    (["demo", "--tau", "abc"], "--tau"),
    (["demo", "--kappa", "nan"], "--kappa"),
    (["demo", "--steps", "-3"], "--steps"),
    (["demo", "--steps", "0"], "--steps"),
    (["demo", "--steps", "1.5"], "--steps"),
    (["demo", "--seeds", "0", "-1"], "--seeds"),
    (["demo", "--data-seed", "-1"], "--data-seed"),
    (["demo", "--methods", "gumbel", "nope"], "--methods"),
    (["demo", "--relaxation", "soft"], "--relaxation"),
    (["sweep", "--taus", "0"], "--taus"),
    (["sweep", "--kappa-stds", "-1"], "--kappa-stds"),
    (["sweep", "--seed", "-2"], "--seed"),
    (["train-reader", "--steps", "0"], "--steps"),
    (["train-reader", "--seed", "-1"], "--seed"),
    (["gradient-study", "--draws", "1"], "--draws"),
    (["gradient-study", "--taus", "0"], "--taus"),
    # the objective's methods: values their flags' types pass that the work cannot use
    (["demo", "--samples", "1"], "--samples"),
    (["demo", "--rloo-kappa", "1e308"], "--rloo-kappa"),
    (["demo", "--exact-kappa", "2e6"], "--exact-kappa"),
    (["demo", "--reranker", "deep"], "--reranker"),
    (["sweep", "--method", "rloo", "--samples", "1"], "--samples"),
    (["sweep", "--method", "exact", "--objective-kappa-stds", "1e308"], "--objective-kappa-stds"),
    (["sweep", "--method", "exact", "--reranker", "deep"], "--reranker"),
]


def assert_one_line_error(res, flag):
    assert res.returncode == 2, (res.returncode, res.stderr)
    assert "Traceback" not in res.stderr and "Traceback" not in res.stdout
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 2 and "--help" in lines[1], res.stderr  # the error, then where to look
    assert "error:" in lines[0] and flag in lines[0], res.stderr


@pytest.mark.parametrize("args,flag", MISUSE, ids=lambda x: " ".join(x) if isinstance(x, list) else x)
def test_misused_flag_is_one_line_naming_it_before_any_work(tmp_path, args, flag):
    res = run_script(args, tmp_path)
    assert_one_line_error(res, flag)
    assert sorted(p.name for p in tmp_path.iterdir()) == [], "work started: something was written"


def test_out_that_is_a_file_is_named(tmp_path):
    (tmp_path / "taken").write_text("x")
    for cmd in ("demo", "train-reader", "sweep", "gradient-study"):
        res = run_script([cmd, "--quick", "--out", "taken"], tmp_path)
        assert_one_line_error(res, "--out")
        assert "existing file" in res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root may write anywhere")
def test_out_that_cannot_be_written_is_named(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        res = run_script(["demo", "--quick", "--out", "locked/demo"], tmp_path)
        assert_one_line_error(res, "--out")
        assert "cannot be written" in res.stderr
    finally:
        locked.chmod(0o700)


def test_out_below_a_file_is_named(tmp_path):
    (tmp_path / "taken").write_text("x")
    res = run_script(["demo", "--quick", "--out", "taken/demo"], tmp_path)
    assert_one_line_error(res, "--out")
    assert "cannot be created: 'taken' is a file" in res.stderr  # not "no write permission"


def test_version_and_python_dash_m(tmp_path):
    res = run_script(["--version"], tmp_path)
    assert res.returncode == 0 and res.stdout.startswith("mini-gumbel ")
    res2 = subprocess.run([sys.executable, "-m", "mini_gumbel", "--version"], capture_output=True, text=True,
                          cwd=tmp_path, timeout=60)
    assert res2.returncode == 0 and res2.stdout == res.stdout


@pytest.mark.slow
def test_ctrl_c_says_what_was_saved_and_the_rerun_resumes(tmp_path):
    """SIGINT while the reader trains: one line (no traceback) naming the saved state; the rerun resumes it."""
    env = {**os.environ, "MINI_GUMBEL_CACHE": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}
    args = [str(SCRIPT), "train-reader", "--quick", "--no-progress", "--steps", "1000"]
    # SIGINT's default disposition in the child: a test run started in the background by a shell without job control
    # inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler (the child would finish, exit 0)
    proc = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    for line in proc.stdout:  # wait until the training has started
        if line.startswith("reader: training"):
            break
    state = next((tmp_path / "cache").glob("reader-*")) / "train_state.npz"
    deadline = time.monotonic() + 60
    while not state.exists() and time.monotonic() < deadline:  # a checkpoint written: well inside the loop
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "interrupted" in last and "training state is saved in" in last and "again to resume" in last
    res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    assert "reader: resuming its training from step" in res.stdout
    res = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert "reader: reused the cached reader" in res.stdout


def test_core_install_runs_without_tqdm_and_matplotlib(tmp_path, monkeypatch, capsys):
    """No extras: no bars and no plot, each said once, and the table is still printed and written."""
    monkeypatch.setenv("MINI_GUMBEL_CACHE", str(tmp_path / "cache"))
    for name in ("tqdm", "tqdm.auto", "matplotlib", "matplotlib.pyplot"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    out = tmp_path / "demo"
    assert main(["demo", "--quick", "--methods", "gumbel", "--no-tuned", "--steps", "3", "--out", str(out)]) == 0
    cap = capsys.readouterr()
    assert "tqdm is not installed" in cap.err and "matplotlib is not installed" in cap.out
    assert "| gumbel |" in cap.out and (out / "results.md").exists() and not (out / "curves.png").exists()


def test_ablation_gets_its_own_folder_and_label(tmp_path, monkeypatch):
    """A Gumbel override never overwrites the main table: its own default --out and its own row label."""
    monkeypatch.setenv("MINI_GUMBEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    assert main(["demo", "--quick", "--methods", "gumbel", "--no-tuned", "--steps", "3", "--relaxation", "st",
                 "--no-progress"]) == 0
    res = json.loads((tmp_path / "runs" / "demo-quick-relaxation-st-steps-3" / "results.json").read_text())
    assert set(res["table"]) == {"untrained", "gumbel (relaxation=st)", "oracle (gold docs)"}
    assert not (tmp_path / "runs" / "demo-quick").exists()


@pytest.mark.slow
def test_two_processes_share_one_reader_cache_and_one_out(tmp_path):
    """Two demos at once on the same --out and the same cache: both finish, the reader is trained once (the
    other waits for it and reuses it), and every file they wrote is complete."""
    env = {**os.environ, "MINI_GUMBEL_CACHE": str(tmp_path / "cache")}
    args = [str(SCRIPT), "demo", "--quick", "--methods", "gumbel", "--no-tuned", "--steps", "3", "--no-progress",
            "--out", "same"]
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    printed = [out for out, _ in outs]
    assert sum("reader: training it" in out for out in printed) == 1, printed
    assert sum("reader: reused the cached reader" in out for out in printed) == 1, printed
    # and the reranker run is trained once too: the second demo waits for the first's and reuses it
    assert sum("gumbel seed 0: test Recall@" in out for out in printed) == 1, printed
    assert sum("gumbel seed 0: reused the finished run" in out for out in printed) == 1, printed
    res = json.loads((tmp_path / "same" / "results.json").read_text())
    assert set(res["table"]) == {"untrained", "gumbel", "gumbel (relaxation=iterative)", "oracle (gold docs)"}
    assert not list((tmp_path / "same").rglob(".*.tmp"))  # no temporary file left behind
