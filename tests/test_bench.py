"""Smoke test of the benchmark suite: bench/run.py at its tiny size, JSON structure only (no time is asserted)."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "run.py"), "--tiny", "--out", str(out)],
                          capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.json") as f:
        res = json.load(f)
    return res, (out / "results.md").read_text()


def test_environment_is_recorded(results):
    env = results[0]["environment"]
    assert env["backend"] == "numpy" and env["device"].startswith("CPU")
    assert {"numpy", "python", "autograd"} <= set(env["versions"])
    assert env["threads"]["OPENBLAS_NUM_THREADS"] == "1"
    assert env["size"] == "tiny"


def test_every_section_is_present_and_tagged(results):
    sec = results[0]["sections"]
    assert set(sec) == {"topk", "reader", "peak", "growth", "cupy"}
    for name in ("topk", "reader", "peak", "growth"):
        rows = sec[name]["results"]
        assert rows, name
        for r in rows:
            assert r["backend"] and r["device"] and r["dtype"] in ("float32", "float64") and r["shapes"], (name, r)
    for r in sec["topk"]["results"] + sec["reader"]["results"] + sec["growth"]["results"]:
        assert "numpy" in r["versions"]


def test_topk_covers_every_method_and_gradients_agree(results):
    rows = results[0]["sections"]["topk"]["results"]
    assert {r["method"] for r in rows} == {"max", "iterative", "st"}
    for r in rows:
        assert r["hand_median_s"] > 0 and r["autograd_median_s"] > 0 and r["forward_median_s"] > 0
        assert r["bound_autograd_over_forward"] > 0
        assert r["ratio_autograd_over_hand"] == pytest.approx(r["autograd_median_s"] / r["hand_median_s"])
        assert r["grad_max_rel_diff"] < 1e-8


def test_reader_rows_have_both_steps_and_the_bound(results):
    for r in results[0]["sections"]["reader"]["results"]:
        for k in ("hand_full_s", "autograd_full_s", "hand_frozen_s", "autograd_frozen_s", "forward_s",
                  "ratio_full", "ratio_frozen", "bound_full", "bound_frozen"):
            assert r[k] > 0, k
        assert r["max_rel_diff_params"] < 1e-8 and r["rel_diff_mask"] < 1e-8
        assert r["flops"]["train_step"] == 3 * r["flops"]["forward"]


def test_peak_and_growth_structure(results):
    sec = results[0]["sections"]
    assert set(sec["peak"]["peak"]) == {"float32", "float64"}
    for r in sec["peak"]["results"]:
        assert 0 < r["fraction_of_peak"] and r["achieved_flop_per_s"] > 0
    axes = {(r["op"], r["axis"]) for r in sec["growth"]["results"]}
    assert {("reader/train_step", a) for a in "NLB"} <= axes
    assert {(f"topk/{m}", a) for m in ("max", "iterative", "st") for a in "NK"} <= axes
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
    names = {t["target"] for t in res["targets"]}
    assert names == {"reader_train_speedup", "topk_speedup", "medium_peak_fraction", "growth_exponent_N",
                     "cupy_speedup"}
    for head in ("## Targets", "## 1.", "## 2.", "## 3.", "## 4.", "## 5."):
        assert head in md
