"""Reader training: document sets, determinism, exact resume, the reader-must-read test, reports, cache, CLI."""
import dataclasses
import json

import numpy as np
import pytest

from mini_gumbel.checkpoint import CheckpointError
from mini_gumbel.data import TARGET, DataConfig, make_dataset
from mini_gumbel.experiment import cache as reader_cache
from mini_gumbel.experiment import train_reader as tr
from mini_gumbel.experiment.cache import load_or_train_reader
from mini_gumbel.experiment.configs import MODES, TrainReaderConfig, default_reader_config
from mini_gumbel.experiment.evaluate import CONDITIONS, evaluate_reader, format_em_table
from mini_gumbel.experiment.readers import no_doc_batch
from mini_gumbel.experiment.train_reader import document_masks, lr_at, train_reader
from reader_batches import tiny_world

# A tiny world: 3 types, 6 relations, 6 candidates, 40 names (chance EM ~ 1/40).
TINY_DATA = tiny_world(n_train=600, n_dev=10, n_test=200, k=3)
TINY_TRAIN = TrainReaderConfig(steps=8, batch_size=8, lr=3e-3, warmup=2, checkpoint_every=3, log_every=2,
                               dtype="float64")


def tiny_reader(data_cfg=TINY_DATA, reader="two_pass", **kw):
    base = dict(d_model=16, d_ff=32, n_heads=2, n_enc_layers=1, n_dec_layers=1)
    base.update(kw)
    return default_reader_config(data_cfg, reader, **base)


@pytest.fixture(scope="module")
def tiny_splits():
    return make_dataset(TINY_DATA, 0)


def test_document_masks_modes(rng, tiny_splits):
    gold = tiny_splits.train.gold[:400]  # (B, N)
    targets = tiny_splits.train.kind[:400] == TARGET
    B, N = gold.shape
    for i, mode in enumerate(MODES):
        m = document_masks(gold, np.full(B, i), rng, targets=targets)
        assert m.shape == (B, N) and set(np.unique(m)) <= {0.0, 1.0}
        on = m > 0
        assert on.any(1).all(), mode  # never an empty document set
        if mode == "full":
            assert on.all()
        elif mode == "gold_only":
            np.testing.assert_array_equal(on, gold)
        elif mode == "gold_plus":
            assert (on | ~gold).all() and (on & ~gold).any() and not (on & ~gold).any(1).all()
        elif mode == "distractors":
            assert not (on & gold).any()
            assert len(np.unique(on.sum(1))) > 2  # random sizes
        elif mode == "gold_targets":
            np.testing.assert_array_equal(on, gold | targets)
        elif mode == "subset":
            sizes = on.sum(1)
            assert sizes.min() == 1 and sizes.max() == N
            assert (on & gold).any() and not (on | ~gold).all()  # gold sometimes in, sometimes not
    mixed = document_masks(gold, rng.integers(0, len(MODES), B), rng, np.float32)
    assert mixed.dtype == np.float32


def test_lr_schedule():
    cfg = TrainReaderConfig(steps=100, lr=1e-3, warmup=10, min_lr_ratio=0.1)
    assert lr_at(0, cfg) == pytest.approx(1e-4) and lr_at(9, cfg) == pytest.approx(1e-3)
    assert lr_at(10, cfg) == pytest.approx(1e-3) and lr_at(100, cfg) == pytest.approx(1e-4)
    lrs = [lr_at(s, cfg) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def _same(p, q):
    return set(p) == set(q) and all(np.array_equal(p[k], q[k]) for k in p)


def test_deterministic_given_seed(tiny_splits):
    r = tiny_reader()
    kw = dict(progress=False, evaluate=False, splits=tiny_splits)
    p1, rep1 = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, **kw)
    p2, rep2 = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, **kw)
    p3, _ = train_reader(TINY_DATA, r, TINY_TRAIN, seed=1, **kw)
    assert _same(p1, p2) and rep1["loss_curve"] == rep2["loss_curve"]
    assert not _same(p1, p3)


def test_resume_is_bit_exact(tmp_path, tiny_splits):
    r = tiny_reader()
    kw = dict(progress=False, evaluate=False, splits=tiny_splits)
    full, rep_full = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path / "a", **kw)
    # interrupted after 4 steps (not on a checkpoint boundary, nor a log boundary), then resumed twice
    part, rep_part = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path / "b",
                                  max_steps_this_call=5, **kw)
    assert rep_part["steps_done"] == 5 and not rep_part["finished"] and not _same(part, full)
    _, rep_mid = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path / "b", max_steps_this_call=1, **kw)
    assert rep_mid["steps_done"] == 6
    resumed, rep_res = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path / "b", **kw)
    assert rep_res["steps_done"] == TINY_TRAIN.steps and rep_res["finished"]
    assert _same(resumed, full)
    assert rep_res["loss_curve"] == rep_full["loss_curve"]
    # resume=False starts over and ignores the finished state
    again, rep_again = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path / "b", resume=False,
                                    max_steps_this_call=2, **kw)
    assert rep_again["steps_done"] == 2


def test_resume_refuses_a_mismatched_checkpoint(tmp_path, tiny_splits):
    r = tiny_reader()
    kw = dict(progress=False, evaluate=False, splits=tiny_splits)
    train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path, max_steps_this_call=3, **kw)
    with pytest.raises(CheckpointError, match="lr"):
        train_reader(TINY_DATA, r, dataclasses.replace(TINY_TRAIN, lr=1e-3), seed=0, out_dir=tmp_path, **kw)
    with pytest.raises(CheckpointError, match="seed"):
        train_reader(TINY_DATA, r, TINY_TRAIN, seed=5, out_dir=tmp_path, **kw)


def test_reader_must_read():
    """Trained for a few seconds: far above chance with the gold documents, at chance without them."""
    data = dataclasses.replace(TINY_DATA, n_train=2000)
    splits = make_dataset(data, 0)
    r = tiny_reader(data, "fid", d_model=32, d_ff=64, n_dec_layers=2)
    # mostly gold-only and gold-plus sets: the quickest way to a reader that reads (full sets come later)
    train = TrainReaderConfig(reader="fid", steps=250, batch_size=16, lr=3e-3, warmup=10, dtype="float64",
                              mode_probs=(0.0, 0.0, 0.2, 0.7, 0.1, 0.0))
    params, report = train_reader(data, r, train, seed=0, progress=False, splits=splits)
    ev = report["test"]
    chance = 1 / data.n_names
    assert ev["gold_only"]["all"] > 0.4 > 15 * chance  # 0.5-0.9 across seeds 0-2
    for hops in ("single_hop", "two_hop"):
        assert ev["gold_only"][hops] > 0.3
    assert ev["no_docs"]["all"] <= 0.08 and ev["distractors_only"]["all"] <= 0.08
    assert ev["distractors_only"]["all"] == 0.0  # the answer is in no distractor: it cannot be read


def test_report_structure(tiny_splits):
    r = tiny_reader()
    params, rep = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, progress=False, splits=tiny_splits)
    for key in ("format_version", "seed", "data_config", "reader_config", "train_config", "steps_done",
                "finished", "train_seconds", "final_loss", "loss_curve", "chance_em", "test"):
        assert key in rep
    assert rep["loss_curve"][-1][0] == TINY_TRAIN.steps and len(rep["loss_curve"]) == TINY_TRAIN.steps // 2
    ev = rep["test"]
    for cond in CONDITIONS:
        assert set(ev[cond]) == {"all", "single_hop", "two_hop"}
        assert all(0.0 <= v <= 1.0 for v in ev[cond].values())
    assert ev["n"]["all"] == TINY_DATA.n_test == ev["n"]["single_hop"] + ev["n"]["two_hop"]
    assert ev["k"] == TINY_DATA.k and 0 < ev["random_k_has_all_gold"] < 1
    json.dumps(rep)  # JSON-serialisable as is
    table = format_em_table(ev)
    assert "gold only" in table and table.count("\n") == len(CONDITIONS) + 1
    row = next(line for line in table.splitlines() if line.startswith("| gold only |"))  # percent, one decimal
    assert row.split(" | ")[1] == f"{100 * ev['gold_only']['all']:.1f}"


def test_evaluate_reader_is_deterministic_and_validates(tiny_splits):
    r = tiny_reader()
    from mini_gumbel.reader import init_reader

    p = init_reader(r, 0)
    ds = tiny_splits.test.batch(np.arange(40))
    a, b = evaluate_reader(p, r, ds, 3, seed=1), evaluate_reader(p, r, ds, 3, seed=1)
    assert a == b
    with pytest.raises(ValueError, match="k=9"):
        evaluate_reader(p, r, ds, 9)
    with pytest.raises(TypeError, match="dataset"):
        evaluate_reader(p, r, ds.ctx, 3)


def test_no_doc_batch(tiny_splits):
    ds = tiny_splits.test
    c = no_doc_batch(ds, tiny_reader(reader="fid")).ctx
    assert c.shape == (len(ds), 1, ds.ctx.shape[2])
    for i in range(len(ds)):
        q = [t for t in ds.question[i] if t != 0]
        assert c[i, 0].tolist() == q + [3] + [0] * (ds.ctx.shape[2] - len(q) - 1)


def test_config_validation():
    for kw, match in (({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"mode_probs": (1.0, 0.0)}, "mode_probs"),
                      ({"mode_probs": (0.5, 0.5, 0.5, 0.0, -0.5, 0.0)}, "mode_probs"), ({"dtype": "float16"}, "dtype"),
                      ({"clip_norm": 0.0}, "clip_norm"), ({"batch_size": 0}, "batch_size")):
        with pytest.raises(ValueError, match=match):
            TrainReaderConfig(**kw)
    with pytest.raises(ValueError, match="vocab_size"):
        train_reader(TINY_DATA, default_reader_config(DataConfig()), TINY_TRAIN, seed=0, progress=False)
    with pytest.raises(ValueError, match="seed"):
        train_reader(TINY_DATA, tiny_reader(), TINY_TRAIN, seed=-2, progress=False)


def test_load_or_train_reader_caches(tmp_path, monkeypatch, tiny_splits):
    monkeypatch.setenv("MINI_GUMBEL_CACHE", str(tmp_path))
    r = tiny_reader()
    p1, cfg1, rep1 = load_or_train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, progress=False, splits=tiny_splits)
    (folder,) = list(tmp_path.iterdir())
    assert (folder / "reader.npz").exists() and (folder / "reader_report.json").exists()
    assert not (folder / "train_state.npz").exists()

    def boom(*a, **k):
        raise AssertionError("trained again instead of loading the cache")

    monkeypatch.setattr(reader_cache, "train_reader", boom)
    p2, cfg2, rep2 = load_or_train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, progress=False)
    assert cfg2 == cfg1 and _same(p1, p2) and rep2["test"] == rep1["test"]
    # another seed or config is another key
    assert reader_cache.cache_key(TINY_DATA, r, TINY_TRAIN, 0) != reader_cache.cache_key(TINY_DATA, r, TINY_TRAIN, 1)
    assert reader_cache.cache_key(TINY_DATA, r, TINY_TRAIN, 0) != reader_cache.cache_key(
        TINY_DATA, r, dataclasses.replace(TINY_TRAIN, steps=9), 0)
    assert reader_cache.cache_key(TINY_DATA, r, TINY_TRAIN, 0) == reader_cache.cache_key(
        TINY_DATA, r, dataclasses.replace(TINY_TRAIN, checkpoint_every=7), 0)


def test_cli_train_reader(tmp_path, capsys, monkeypatch):
    from mini_gumbel.experiment.cli import main

    monkeypatch.setenv("MINI_GUMBEL_CACHE", str(tmp_path / "cache"))  # a fresh cache: the reader is trained
    out = tmp_path / "run"
    assert main(["train-reader", "--quick", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "reader.npz" in text and str(out) in text  # says where the reader went
    rep = json.loads((out / "reader_report.json").read_text())
    assert rep["steps_done"] == 3 and rep["train_config"]["steps"] == 3
    params, cfg, extra = reader_cache.load_reader(out / "reader.npz")
    assert cfg.vocab_size == rep["reader_config"]["vocab_size"] and extra["steps_done"] == 3
    # --resume (default) with a finished state: nothing left to train, same parameters
    assert main(["train-reader", "--quick", "--steps", "3", "--out", str(out), "--no-progress"]) == 0
    params2, _, _ = reader_cache.load_reader(out / "reader.npz")
    assert _same(params, params2)


def test_interrupt_saves_a_consistent_state(tmp_path, monkeypatch, tiny_splits):
    """Ctrl-C in the middle of a step: the checkpoint holds the last completed step; resuming is exact."""
    r = tiny_reader()
    kw = dict(progress=False, evaluate=False, splits=tiny_splits)
    full, _ = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, **kw)
    real = tr.reader_backward
    calls = []

    def interrupted(*a, **k):
        calls.append(1)
        if len(calls) == 5:  # during the 5th step, after its batch and masks were drawn
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(tr, "reader_backward", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path, **kw)
    monkeypatch.setattr(tr, "reader_backward", real)
    _, rep = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path, max_steps_this_call=0, **kw)
    assert rep["steps_done"] == 4
    resumed, _ = train_reader(TINY_DATA, r, TINY_TRAIN, seed=0, out_dir=tmp_path, **kw)
    assert _same(resumed, full)


def test_no_doc_batch_two_pass(tiny_splits):
    """The two-pass reader without documents reads [w, ENT, SEP] alone, and no entity flag is set."""
    ds = tiny_splits.test
    x = no_doc_batch(ds, tiny_reader())
    assert x.ctx1.shape == (len(ds), 1, 3 + ds.docs.shape[2]) and (x.ctx1[:, 0, 3:] == 0).all()
    assert (x.ctx1[:, 0, 0] == ds.hop_words[:, 0]).all() and (x.ctx1[:, 0, 1:3] == [4, 3]).all()
    assert (x.flags1 == 0).all()


def test_one_read_each_builds_the_reads_the_docstring_names(tiny_splits):
    """hop1_share=1: every row is read 1 (the answer for single-hop rows, the bridge B for two-hop ones);
    hop1_share=0 with flags hard / zero / soft: two-hop rows are read 2 with flags on B, no flags, or read 1's
    own bridge distribution."""
    from mini_gumbel.experiment.readers import two_pass_inputs
    from mini_gumbel.experiment.train_reader import one_read_each
    from mini_gumbel.reader import init_reader
    from mini_gumbel.two_pass_reader import entity_flags, soft_flags, two_pass_first_hop

    b = tiny_splits.train.batch(np.arange(12))
    two = b.hops == 2
    assert two.any() and (~two).any()
    r = tiny_reader()
    p = init_reader(r, 0)
    x = two_pass_inputs(b)
    mask = np.ones(b.gold.shape)
    rng = np.random.default_rng(0)
    ctx, flags, ai, ao = one_read_each(p, r, b, mask, rng, dataclasses.replace(TINY_TRAIN, hop1_share=1.0))
    np.testing.assert_array_equal(ctx, x.ctx1)
    np.testing.assert_array_equal(flags, x.flags1)
    np.testing.assert_array_equal(ao, x.ans1_out)
    assert (ao[two, 0] == b.bridge[two]).all() and (ao[~two, 0] == b.answer[~two]).all()
    want = {(1.0, 0.0, 0.0): entity_flags(x.ctx2, b.bridge), (0.0, 1.0, 0.0): np.zeros_like(x.flags1),
            (0.0, 0.0, 1.0): soft_flags(x.ctx2, two_pass_first_hop(p, r, x.ctx1, x.flags1, mask))}
    for probs, w in want.items():
        cfg = dataclasses.replace(TINY_TRAIN, hop1_share=0.0, flag_probs=probs)
        ctx, flags, ai, ao = one_read_each(p, r, b, mask, rng, cfg)
        np.testing.assert_array_equal(ctx[two], x.ctx2[two])
        np.testing.assert_array_equal(ao[two], b.ans_out[two])
        np.testing.assert_allclose(flags[two], w[two], rtol=1e-12, atol=1e-15)
        np.testing.assert_array_equal(ctx[~two], x.ctx1[~two])  # single-hop rows always read once
