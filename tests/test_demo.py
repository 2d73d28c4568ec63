"""`mini-gumbel demo --quick` end to end: the structure of what it prints and writes, and resuming."""
import json

import pytest

from mini_gumbel.experiment.cli import main
from mini_gumbel.experiment.configs import DEMO_METHODS, TUNED


@pytest.fixture(scope="module")
def demo_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    cache = tmp_path_factory.mktemp("cache")
    mp = pytest.MonkeyPatch()
    mp.setenv("MINI_GUMBEL_CACHE", str(cache))
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--seeds", "0", "1"]) == 0
    yield out
    mp.undo()


def test_demo_writes_results_table_and_plot(demo_out, capsys):
    res = json.loads((demo_out / "results.json").read_text())
    k = res["k"]
    rows = set(res["table"])
    # the default rows: every method but exact, each baseline at its tuned values only, and the iterative relaxation
    want = {m for m in DEMO_METHODS if m not in TUNED} | {f"{m} (tuned)" for m in TUNED}
    assert rows == {"untrained", "oracle (gold docs)", "gumbel (relaxation=iterative)", *want}
    for name, row in res["table"].items():
        for key in (f"recall@{k}", f"all_gold@{k}", "mrr", f"ndcg@{k}", f"indirect_recall@{k}", "em", "f1", "em_two_hop"):
            assert 0.0 <= row[key]["mean"] <= 1.0, (name, key)
        assert row[f"recall@{k}"]["n"] == (1 if name.startswith("oracle") else 2)
    # the oracle puts every gold document in the top K
    assert res["table"]["oracle (gold docs)"][f"recall@{k}"]["mean"] == 1.0
    for m in want:
        assert len(res["curves"][m]) == 2 and res["curves"][m][0][0]["step"] == 0
    md = (demo_out / "results.md").read_text()
    assert md.count("\n| ") >= len(rows) and "gumbel" in md and "±" in md
    assert (demo_out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (demo_out / "methods.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_resumes_finished_runs(demo_out, capsys):
    before = json.loads((demo_out / "results.json").read_text())["table"]
    assert main(["demo", "--quick", "--out", str(demo_out), "--no-progress", "--seeds", "0", "1"]) == 0
    printed = capsys.readouterr().out
    assert printed.count("reused the finished run") == 2 * (len(DEMO_METHODS) + 1)
    assert json.loads((demo_out / "results.json").read_text())["table"] == before


def test_cli_help_lists_subcommands(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "demo" in out and "train-reader" in out and "sweep" in out


def test_demo_overrides_reach_the_gumbel_config(tmp_path, monkeypatch):
    monkeypatch.setenv("MINI_GUMBEL_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "o"
    assert main(["demo", "--quick", "--out", str(out), "--no-progress", "--methods", "gumbel", "--steps", "5",
                 "--tau", "0.3", "--kappa", "2.5", "--relaxation", "iterative", "--no-noise"]) == 0
    res = json.loads((out / "results.json").read_text())
    cfg = res["configs"]["rerank"]
    for part in ("steps=5", "tau=0.3", "kappa=2.5", "relaxation='iterative'", "noise=False"):
        assert part in cfg, (part, cfg)
    label = "gumbel (kappa=2.5, noise=False, relaxation=iterative, tau=0.3)"  # the overrides, not --steps
    assert set(res["table"]) == {"untrained", label, "oracle (gold docs)"}
    assert res["curves"][label][0][-1]["step"] == 5


@pytest.mark.parametrize("content", ["", '{"method": "gumbel", "te', "[]", '{"config_hash": 3}', "\xff\xfe"])
def test_unreadable_run_file_is_recomputed_with_a_warning(demo_out, tmp_path, capsys, content):
    """A truncated, empty or foreign run file is a warning and a recomputation, never a crash."""
    out = tmp_path / "d"
    out.mkdir()
    (out / "runs").mkdir()
    src = next((demo_out / "runs").glob("gumbel-seed0-*.json"))
    (out / "runs" / src.name).write_bytes(content.encode("latin-1"))
    args = ["demo", "--quick", "--out", str(out), "--no-progress", "--seeds", "0", "--methods", "gumbel", "--no-tuned"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"ignoring the unreadable run file {out / 'runs' / src.name}" in printed and "recomputing it" in printed
    rec = json.loads((out / "runs" / src.name).read_text())
    assert rec["test"] == json.loads(src.read_text())["test"]  # recomputed, and the same run as before


def test_mean_std_of_no_finite_value_is_none_and_prints_a_dash():
    """A metric with no finite value over the seeds is null in results.json (JSON has no NaN), '–' in the table."""
    from mini_gumbel.experiment.evaluate import format_table, mean_std

    summary = {"gumbel": mean_std([{"recall@5": 0.5, "em": float("nan")}, {"recall@5": 0.7, "em": float("nan")}])}
    assert summary["gumbel"]["em"]["mean"] is None and abs(summary["gumbel"]["recall@5"]["mean"] - 0.6) < 1e-12
    json.dumps(summary, allow_nan=False)  # what atomic_write_json requires
    row = next(line for line in format_table(summary, 5, [0, 1]).splitlines() if line.startswith("| gumbel |"))
    assert "60.0 ± 10.0" in row and "–" in row
