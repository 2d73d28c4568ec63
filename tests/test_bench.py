"""The benchmark suite at its tiny size (JSON structure, no time asserted) and mini_gumbel.timing itself."""
import importlib.util
import json
import os
import subprocess
import sys
import time

import pytest

from mini_gumbel import timing

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RELAXATIONS = {"max", "iterative", "st"}


def _run_suite(out, *extra):
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--tiny", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.json") as f:
        return json.load(f), (out / "results.md").read_text()


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return _run_suite(tmp_path_factory.mktemp("bench"))


# ---------------------------------------------------------------------------------------------------------
# the suite


def test_environment_is_recorded(results):
    env = results[0]["environment"]
    assert env["backend"] == "numpy" and env["device"].startswith("CPU")
    assert {"numpy", "python", "autograd"} <= set(env["versions"])
    assert env["threads"]["OPENBLAS_NUM_THREADS"] == "1"
    assert env["size"] == "tiny"
    for k in ("blas", "malloc", "platform", "load_average_at_start", "load_average_at_end", "wall_s",
              "minor_page_faults", "command", "timer"):
        assert k in env, k


def test_every_section_is_present_and_tagged(results):
    sec = results[0]["sections"]
    assert set(sec) == {"topk", "reader", "peak", "growth", "cupy", "step"}
    for name in ("topk", "reader", "peak", "growth", "step"):
        rows = sec[name]["results"]
        assert rows, name
        for r in rows:
            assert r["backend"] and r["device"] and r["dtype"] in ("float32", "float64") and r["shapes"], (name, r)
    for r in sec["topk"]["results"] + sec["reader"]["results"] + sec["growth"]["results"]:
        assert "numpy" in r["versions"]


def test_topk_covers_every_relaxation_and_gradients_agree(results):
    rows = results[0]["sections"]["topk"]["results"]
    assert {r["method"] for r in rows} == RELAXATIONS  # the field keeps its name in results.json
    for r in rows:
        assert r["hand_median_s"] > 0 and r["autograd_median_s"] > 0 and r["forward_median_s"] > 0
        assert r["bound_autograd_over_forward"] > 0
        assert r["ratio_autograd_over_hand"] == pytest.approx(r["autograd_median_s"] / r["hand_median_s"])
        assert r["grad_max_rel_diff"] < 1e-8
        assert len(r["hand_times_s"]) == len(r["autograd_times_s"]) == results[0]["sizes"]["repeats_topk"]
        assert {"hand", "autograd", "forward"} <= set(r["calls_per_repeat"]) <= {"hand", "autograd", "forward",
                                                                                "torch"}


def test_reader_rows_have_both_steps_and_the_bound(results):
    for r in results[0]["sections"]["reader"]["results"]:
        for k in ("hand_full_s", "autograd_full_s", "hand_frozen_s", "autograd_frozen_s", "forward_s",
                  "ratio_full", "ratio_frozen", "bound_full", "bound_frozen"):
            assert r[k] > 0, k
        for k in ("hand_full_all_s", "autograd_full_all_s", "hand_frozen_all_s", "autograd_frozen_all_s"):
            assert len(r[k]) == results[0]["sizes"]["repeats_reader"], k
        assert r["max_rel_diff_params"] < 1e-8 and r["rel_diff_mask"] < 1e-8
        assert r["flops"]["train_step"] == 3 * r["flops"]["forward"]
        if results[0]["sections"]["reader"]["torch_skipped"] is None:  # torch installed: checked against ours
            assert r["torch_loss_rel_diff"] < 1e-10 and r["torch_max_rel_diff_params"] < 1e-8
            assert r["vs_torch_full"] == pytest.approx(r["torch_full_s"] / r["hand_full_s"])
            assert r["vs_torch_frozen"] == pytest.approx(r["torch_frozen_s"] / r["hand_frozen_s"])


def test_torch_comparisons_run_or_say_why_not(results):
    res, md = results
    for name in ("reader", "step"):
        sec = res["sections"][name]
        if importlib.util.find_spec("torch") is None:
            assert sec["torch_skipped"].startswith("skipped: torch is not installed")
            assert sec["torch_skipped"] in md
        else:
            assert sec["torch_skipped"] is None
    if importlib.util.find_spec("torch") is None:
        assert all(t["met"] is None for t in res["targets"] if t["target"].startswith("reader_"))


def test_step_rows_reuse_and_agree(results):
    """The whole Gumbel step: both readers, reuse and no reuse bit-identical, the memory's size recorded."""
    rows = results[0]["sections"]["step"]["results"]
    assert {r["reader"] for r in rows} == {"two_pass", "fid"}
    for r in rows:
        assert r["bit_identical"] and r["memory_bytes_per_example"] > 0
        assert r["reuse_speedup"] == pytest.approx(r["no_reuse_s"] / r["reuse_s"])
        if "torch_reuse_s" in r:
            assert r["torch_loss_rel_diff"] < 1e-10 and r["torch_grad_rel_diff"] < 1e-8


def test_peak_and_growth_structure(results):
    sec = results[0]["sections"]
    assert set(sec["peak"]["peak"]) == {"float32", "float64"}
    for r in sec["peak"]["results"]:
        assert 0 < r["fraction_of_peak"] and r["achieved_flop_per_s"] > 0
    axes = {(r["op"], r["axis"]) for r in sec["growth"]["results"]}
    assert {("reader/train_step", a) for a in "NLB"} <= axes
    assert {(f"topk/{m}", a) for m in RELAXATIONS for a in "NK"} <= axes
    for r in sec["growth"]["results"]:
        assert len(r["median_s"]) == len(r["values"]) and isinstance(r["exponent"], float)


def test_cupy_section_runs_or_says_why_not(results):
    cu = results[0]["sections"]["cupy"]
    if cu["skipped"]:
        assert cu["reason"].startswith("skipped:")
    else:
        assert cu["results"] and all(r["speedup"] > 0 for r in cu["results"])


def test_targets_and_markdown(results):
    res, md = results
    names = [t["target"] for t in res["targets"]]
    # reader and step targets first, then whatever the top-K section reports, then peak, growth, cupy
    assert names[:3] == ["reader_train_vs_torch", "reader_frozen_vs_torch", "step_reuse_speedup"]
    assert names[-3:] == ["medium_peak_fraction", "growth_exponent_N", "cupy_speedup"]
    assert names[3:-3] and all(n.startswith("topk") for n in names[3:-3])
    for t in res["targets"]:
        assert t["met"] in (True, False, None) and t["detail"]
    for head in ("## Targets", "## 1.", "## 2.", "## 3.", "## 4.", "## 5.", "## 6."):
        assert head in md


def test_threads_and_only_are_honoured(tmp_path):
    res, md = _run_suite(tmp_path, "--only", "growth", "--threads", "2", "--malloc", "default")
    assert set(res["sections"]) == {"growth"}
    assert set(res["environment"]["threads"].values()) == {"2"}
    assert res["environment"]["malloc"]["applied"] is False
    assert [t["target"] for t in res["targets"]] == ["growth_exponent_N"] and "## 1." not in md


# ---------------------------------------------------------------------------------------------------------
# mini_gumbel.timing


def _work(n):
    def run():
        return sum(i * i for i in range(n))
    return run


def test_time_interleaved_sees_twice_the_work():
    t = timing.time_interleaved({"once": _work(20_000), "twice": _work(40_000)}, repeats=5, target_s=0.01)
    assert set(t) == {"once", "twice"} and all(v > 0 for v in t.values())
    assert t["twice"] > 1.3 * t["once"]  # about 2x; loose, the machine is shared
    assert all(len(t.samples[k]) == 5 for k in t) and all(t.calls[k] >= 1 for k in t)


def test_time_interleaved_calibrates_loops_and_interleaves():
    order = []
    fast = lambda: order.append("fast")  # noqa: E731
    slow = lambda: (order.append("slow"), time.sleep(0.003))  # noqa: E731
    t = timing.time_interleaved({"fast": fast, "slow": slow}, repeats=3, target_s=0.002, warmup=1)
    assert t.calls["fast"] > 1 and t.calls["slow"] == 1  # a call longer than target_s is timed alone
    timed = order[-3 * (t.calls["fast"] + 1):]  # the three repeats: one loop of each, in turn
    assert timed == (["fast"] * t.calls["fast"] + ["slow"]) * 3


def test_time_interleaved_rejects_bad_arguments():
    with pytest.raises(TypeError, match="time_interleaved: fns="):
        timing.time_interleaved({})
    with pytest.raises(ValueError, match="time_interleaved: repeats=0"):
        timing.time_interleaved({"a": lambda: None}, repeats=0)


def test_environment_keys():
    env = timing.environment()
    assert set(env) == {"versions", "cpu", "cpu_count", "blas", "blas_threads", "load_average", "platform"}
    assert {"python", "numpy"} <= set(env["versions"])
    assert set(env["blas_threads"]) == set(timing.BLAS_THREAD_VARS)
    json.dumps(env)


def test_set_blas_threads():
    environ = {}
    assert timing.set_blas_threads(3, environ) == {k: "3" for k in timing.BLAS_THREAD_VARS} == environ
    for bad in (0, -1, "x", 1.5, True):
        with pytest.raises(ValueError, match="set_blas_threads: n="):
            timing.set_blas_threads(bad, {})


def test_timing_imports_no_numpy_so_threads_can_be_set_first():
    code = "import sys, mini_gumbel.timing; assert 'numpy' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT, timeout=60)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_gpu_time_without_cupy_raises():
    with pytest.raises(ImportError, match="gpu_time: CuPy is not importable"):
        timing.gpu_time(lambda: None)


def test_keep_freed_memory_reports():
    r = timing.keep_freed_memory()
    assert isinstance(r["applied"], bool)


def test_stopwatch_measures_wall_and_cpu_seconds_of_a_run():
    """timing.stopwatch / elapsed, the tools' one-off clock: wall and CPU seconds, both counting a busy loop."""
    from mini_gumbel.timing import elapsed, stopwatch

    t = stopwatch()
    x = 0
    while elapsed(t)[1] < 0.05:  # CPU time advances while the loop runs
        x += 1
    wall, cpu = elapsed(t)
    assert cpu >= 0.05 and wall >= cpu - 0.02 and x > 0
