"""The gradient study end to end at its smoke-test size (--quick: the quick reader, one question of each kind; ~5 s):
it runs, writes its files, and what it writes is internally consistent. Its numbers mean nothing here."""
import argparse
import json
import math

import numpy as np
import pytest

from mini_gumbel.estimators import expected_value_and_grad, subset_probabilities
from mini_gumbel.experiment import gradient_study as gs


def _parser():
    p = argparse.ArgumentParser(prog="mini-gumbel gradient-study")
    gs.add_arguments(p)
    return p


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("gradient_study")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINI_GUMBEL_CACHE", str(tmp_path_factory.mktemp("cache")))
    p = _parser()
    args = p.parse_args(["--quick", "--out", str(out), "--no-progress", "--taus", "0.1", "1.0",
                         "--kappa-stds", "1", "5"])
    assert gs.run_from_args(args, p) == 0
    yield out, json.loads((out / "gradient_study.json").read_text())
    mp.undo()


def test_writes_json_markdown_and_plots(study):
    out, res = study
    for name in ("gradient_study.json", "gradient_study.md"):
        assert (out / name).stat().st_size > 0
    for name in ("gradient_study_bias.png", "gradient_study_gap.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "gradient_study.md").read_text()
    assert md.count("## κ·std(w) =") == 2 and "quick" in md
    assert {"config", "k", "n_candidates", "kappas", "summary", "examples", "seconds", "std_untrained_scores"} <= set(res)


def test_summary_has_every_estimator_at_every_grid_point(study):
    _, res = study
    cfg = res["config"]
    assert cfg["quick"] and cfg["taus"] == [0.1, 1.0] and cfg["kappa_stds"] == [1.0, 5.0]
    assert res["kappas"] == pytest.approx([c / res["std_untrained_scores"] for c in cfg["kappa_stds"]])
    keys = {(r["kappa_std"], r["estimator"], r["tau"]) for r in res["summary"]}
    want = {(c, e, t) for c in (1.0, 5.0) for e in gs.RELAXED for t in (0.1, 1.0)}
    want |= {(c, e, None) for c in (1.0, 5.0) for e in gs.REINFORCE}
    assert keys == want and len(res["summary"]) == len(want)
    for r in res["summary"]:
        assert r["rel_bias"] >= 0 and r["rel_std"] >= 0 and -1 - 1e-9 <= r["cosine"] <= 1 + 1e-9, r
        assert r["rel_mse"] >= 0 and r["n_examples"] == 2
        assert ("objective_gap" in r) == (r["estimator"] in gs.RELAXED)
        assert r["draws"] == (1 if r["estimator"] == "max (no noise)" else
                              cfg["reinforce_draws"] if r["estimator"] in gs.REINFORCE else cfg["draws"])
        assert 0 <= r["bridge_sign_agreement"] <= 1  # one two-hop question: it has a bridge document


def test_examples_hold_the_exact_objective_of_their_scores(study):
    """Each question's g* is expected_value_and_grad of its scores and subset losses: recomputing it from the
    stored scores and a fresh reader call gives the same numbers."""
    _, res = study
    assert [ex["hops"] for ex in res["examples"]] == [1, 2]
    two = res["examples"][1]
    assert two["bridge"] is not None and two["n_subsets"] == math.comb(res["n_candidates"], res["k"])
    w = np.array(two["scores"])
    subsets, probs = subset_probabilities(w, res["k"])
    assert len(subsets) == two["n_subsets"]
    for entry, kappa in zip(two["by_kappa"], res["kappas"]):
        assert entry["kappa"] == pytest.approx(kappa)
        g = np.array(entry["g_star"])
        assert g.shape == (res["n_candidates"],) and abs(g.sum()) < 1e-9 * max(1.0, np.abs(g).max())
        assert two["subset_loss_min"] <= entry["value"] <= two["subset_loss_max"]
        assert entry["bridge_g_star"] == g[two["bridge"]]
    rows = [r for r in two["by_kappa"][0]["rows"] if r["estimator"] == "st"]
    assert all(abs(r["objective_gap"]) < 10 for r in rows)  # st's forward is hard: its losses are subset losses


def test_subset_losses_are_one_batched_call_of_hard_masks():
    """A synthetic stand-in for the reader: subset_losses builds the 0/1 masks of the subsets in their order."""
    subsets, _ = subset_probabilities(np.zeros(5), 2)
    masks = (subsets[:, :, None] == np.arange(5)).any(axis=1)
    assert masks.sum(axis=1).tolist() == [2] * 10 and masks[0].tolist() == [True, True, False, False, False]
    value, g = expected_value_and_grad(np.zeros(5), masks[:, 0].astype(float), 2)
    assert value == pytest.approx(0.4)  # P(candidate 0 kept) = K/N for equal scores


@pytest.mark.parametrize("argv,flag", [
    (["--draws", "1"], "--draws"),
    (["--draws", "x"], "--draws"),
    (["--taus", "0"], "--taus"),
    (["--taus", "nan"], "--taus"),
    (["--kappa-stds", "-1"], "--kappa-stds"),
    (["--n-single", "-1"], "--n-single"),
    (["--reinforce-draws", "1.5"], "--reinforce-draws"),
    (["--seed", "-3"], "--seed"),
])
def test_bad_flags_end_in_one_line_naming_the_flag(argv, flag, capsys):
    with pytest.raises(SystemExit) as e:
        _parser().parse_args(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}" in err


def test_no_question_and_a_file_as_out_are_flag_errors(tmp_path, capsys):
    p = _parser()
    with pytest.raises(SystemExit):
        gs.run_from_args(p.parse_args(["--n-single", "0", "--n-two-hop", "0", "--out", str(tmp_path)]), p)
    assert "--n-two-hop" in capsys.readouterr().err
    f = tmp_path / "a_file"
    f.write_text("x")
    with pytest.raises(SystemExit):
        gs.run_from_args(p.parse_args(["--out", str(f)]), p)
    assert "argument --out" in capsys.readouterr().err


def test_config_rejects_bad_values_by_name():
    with pytest.raises(ValueError, match="draws"):
        gs.GradientStudyConfig(draws=1)
    with pytest.raises(ValueError, match="taus"):
        gs.GradientStudyConfig(taus=(0.1, -1.0))
    with pytest.raises(TypeError, match="quick"):
        gs.GradientStudyConfig(quick="yes")
    with pytest.raises(ValueError, match="n_single"):
        gs.GradientStudyConfig(n_single=0, n_two_hop=0)
