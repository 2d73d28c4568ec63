"""The objective file (mini_gumbel.objective): the exact expected loss of a hard top-K set and its REINFORCE-LOO
estimate, as training steps for both readers; the subset-loss table and its cache; the method registry."""
import math

import numpy as np
import pytest

from mini_gumbel.data import make_dataset
from mini_gumbel.estimators import expected_value_and_grad, subset_log_prob_grads, subsets_of
from mini_gumbel.experiment.cache import load_or_compute_table
from mini_gumbel.experiment.configs import METHODS, RerankConfig, default_reader_config
from mini_gumbel.experiment.readers import answer_nll, reader_inputs
from mini_gumbel.experiment.train_reranker import REGISTRY, compute_teachers, method_loss, train_reranker
from mini_gumbel.gradcheck import check_grads
from mini_gumbel.gumbel_reranking import reader_memory_of
from mini_gumbel.objective import (exact_objective_loss, objective_step, rloo_objective_loss, subset_loss_table)
from mini_gumbel.estimators import sample_subsets
from mini_gumbel.reader import init_reader
from mini_gumbel.reranker import init_reranker, reranker_forward
from reader_batches import tiny_world

DATA = tiny_world(n_train=40, n_dev=5, n_test=5, k=3)
K = 3


@pytest.fixture(scope="module")
def world():
    splits = make_dataset(DATA, 0)
    b = splits.train.batch(np.arange(6))
    assert set(b.hops.tolist()) == {1, 2}  # both kinds of question
    return splits, b


def _reader(reader):
    cfg = default_reader_config(DATA, reader, d_model=16, d_ff=32, n_enc_layers=1, n_dec_layers=1)
    return init_reader(cfg, 1), cfg


@pytest.mark.parametrize("reader", ["two_pass", "fid"])
def test_subset_loss_table_is_the_masked_reader_on_every_subset(world, reader):
    """table[b, S] equals the reader's per-example NLL with the 0/1 mask of S over all N documents."""
    _, b = world
    params, cfg = _reader(reader)
    x = reader_inputs(b, cfg)
    table = subset_loss_table(params, cfg, x, K)
    subs = subsets_of(DATA.n_candidates, K)  # (S, K)
    assert table.shape == (len(b), math.comb(DATA.n_candidates, K))
    for s in (0, 7, len(subs) - 1):
        mask = np.zeros((len(b), DATA.n_candidates))
        mask[:, subs[s]] = 1.0
        _, cache = answer_nll(params, cfg, x, mask)
        np.testing.assert_allclose(table[:, s], cache.nll, rtol=1e-12, atol=1e-12)
    # the losses vary with the subset (a table that ignored S would pass the columns above only by accident)
    assert np.ptp(table, axis=1).min() > 1e-6


def test_exact_objective_loss_gradient_checked_three_ways(rng):
    """mean_b V_b and its gradient: finite differences, autograd of the same forward, and a 1% mutation."""
    B, N = 3, 6
    table = rng.uniform(0.0, 3.0, size=(B, math.comb(N, K)))
    scores = rng.standard_normal((B, N))

    def forward(x):
        from mini_gumbel.estimators import expected_value_forward
        V, cache = expected_value_forward(x["w"], table, K, kappa=1.7)
        return V, cache

    def backward(dV, cache):
        from mini_gumbel.estimators import expected_value_backward
        return {"w": expected_value_backward(dV, cache)[0]}

    rep = check_grads(forward, backward, {"w": scores}, rng=np.random.default_rng(2))
    assert rep.mutated_fd_rel_error > 3e-3
    # the loss the training step uses is the batch mean of the per-row V, with the per-row exact gradient / B
    loss, dscores = exact_objective_loss(scores, table, k=K, kappa=1.7)
    rows = [expected_value_and_grad(scores[b], table[b], K, kappa=1.7) for b in range(B)]
    assert loss == pytest.approx(np.mean([v for v, _ in rows]), rel=1e-12)
    np.testing.assert_allclose(dscores, np.stack([g for _, g in rows]) / B, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("reader", ["two_pass", "fid"])
@pytest.mark.parametrize("score", ["set", "ordering"])
def test_rloo_step_is_the_leave_one_out_formula_on_the_sets_it_drew(world, reader, score):
    """The RLOO gradient, rebuilt independently from the same draws: the sets drawn with the same generator,
    their losses from the masked reader, ∇ log P(S) from the per-row enumeration (score="set") or the
    Plackett-Luce ordering (score="ordering", by finite differences of its log-probability)."""
    _, b = world
    params, cfg = _reader(reader)
    x = reader_inputs(b, cfg)
    B, N, m, kappa = len(b), DATA.n_candidates, 5, 1.3
    scores = np.random.default_rng(4).standard_normal((B, N))
    loss, dscores = rloo_objective_loss(scores, x, params, cfg, np.random.default_rng(9), k=K, kappa=kappa, samples=m,
                                        score=score)
    subsets, orders = sample_subsets(scores, K, np.random.default_rng(9), samples=m, kappa=kappa)  # (B, m, K)
    want = np.zeros((B, N))
    all_losses = []
    for bi in range(B):
        masks = np.zeros((m, N))
        for s in range(m):
            masks[s, subsets[bi, s]] = 1.0
        xb = reader_inputs(b.batch(np.full(m, bi)), cfg)
        _, cache = answer_nll(params, cfg, xb, masks)
        c = np.asarray(cache.nll)  # (m,)
        all_losses.append(c)
        base = (c.sum() - c) / (m - 1)  # (m,)
        if score == "set":
            subs, _, dlogp = subset_log_prob_grads(scores[bi], K, kappa=kappa)
            rows = [int(np.flatnonzero((subs == subsets[bi, s]).all(1))[0]) for s in range(m)]
            g = dlogp[rows]  # (m, N)
        else:
            def logp(w, order):
                z = kappa * w
                out = 0.0
                left = np.ones(N, bool)
                for i in order:
                    out += z[i] - np.log(np.exp(z[left]).sum())
                    left[i] = False
                return out
            eps = 1e-6
            g = np.array([[(logp(scores[bi] + eps * e, orders[bi, s]) - logp(scores[bi] - eps * e, orders[bi, s]))
                           / (2 * eps) for e in np.eye(N)] for s in range(m)])
        want[bi] = ((c - base)[:, None] * g).mean(0) / B
    np.testing.assert_allclose(dscores, want, rtol=1e-6 if score == "ordering" else 1e-10, atol=1e-12)
    assert loss == pytest.approx(np.mean(all_losses), rel=1e-12)


def test_rloo_gradient_is_unbiased_for_the_exact_gradient(world):
    """Averaged over many draws, RLOO's gradient is the exact ∇ mean_b V_b (within 4 standard errors per entry
    over 400 independent steps), on the tiny reader's real subset-loss table."""
    _, b = world
    params, cfg = _reader("two_pass")
    x = reader_inputs(b.batch(np.arange(2)), cfg)
    scores = np.random.default_rng(5).standard_normal((2, DATA.n_candidates))
    table = subset_loss_table(params, cfg, x, K)
    _, g_true = exact_objective_loss(scores, table, k=K, kappa=1.0)
    memory = reader_memory_of(params, cfg, x)
    rng = np.random.default_rng(6)
    draws = np.stack([rloo_objective_loss(scores, x, params, cfg, rng, k=K, samples=4, memory=memory)[1]
                      for _ in range(400)])  # (R, B, N)
    se = draws.std(0, ddof=1) / np.sqrt(len(draws))
    z = np.abs(draws.mean(0) - g_true) / np.maximum(se, 1e-15)
    assert z.max() < 4.0, z
    # and the check can fail: a gradient 20% too large is far outside
    z_bad = np.abs(1.2 * draws.mean(0) - g_true) / np.maximum(se, 1e-15)
    assert z_bad.max() > 4.0


@pytest.mark.parametrize("estimator", ["exact", "rloo"])
def test_objective_step_reranker_gradient(world, estimator):
    """objective_step's reranker gradients are the score gradient backpropagated through the reranker: for
    exact the gradient of the loss it returns (finite differences); for rloo, at fixed draws, the gradient of
    the leave-one-out surrogate Σ (c_s - b_s) log P(S_s) / (m B), checked the same way through the scores."""
    splits, b = world
    params, cfg = _reader("two_pass")
    x = reader_inputs(b, cfg)
    ranker = init_reranker(len(splits.vocab), 8, 2, init="random")
    table = subset_loss_table(params, cfg, x, K)
    if estimator == "exact":
        def forward(p):
            return objective_step(p, b.question, b.docs, params, cfg, x, None, k=K, kappa=1.2, estimator="exact",
                                  table=table)

        rep = check_grads(forward, lambda d, g: {k: d * v for k, v in g.items()}, ranker,
                          rng=np.random.default_rng(5), use_autograd=False)
        assert rep.mutated_fd_rel_error > 3e-3
    else:
        loss, grads = objective_step(ranker, b.question, b.docs, params, cfg, x, np.random.default_rng(3), k=K,
                                     kappa=1.2, estimator="rloo", samples=4)
        scores, cache = reranker_forward(ranker, b.question, b.docs, pad_id=cfg.pad_id)
        _, dscores = rloo_objective_loss(scores, x, params, cfg, np.random.default_rng(3), k=K, kappa=1.2, samples=4)
        from mini_gumbel.reranker import reranker_backward
        want = reranker_backward(dscores, cache)
        for name in want:
            np.testing.assert_array_equal(grads[name], want[name])
        assert np.isfinite(loss)


def test_registry_has_one_entry_per_method():
    assert set(REGISTRY) == set(METHODS)
    for name, spec in REGISTRY.items():
        assert callable(spec.precompute) and callable(spec.loss) and spec.summary, name


@pytest.mark.parametrize("method", ["exact", "rloo"])
def test_train_reranker_runs_the_objective_methods_and_improves_V(world, method, tmp_path, monkeypatch):
    """Training with either estimator lowers the exact objective on its own training examples."""
    monkeypatch.setenv("MINI_GUMBEL_CACHE", str(tmp_path))
    splits, _ = world
    params, rcfg = _reader("two_pass")
    cfg = RerankConfig(steps=12, batch_size=8, eval_every=6, n_train=16, dim=8, k=K, lr=5e-2, exact_kappa=1.5, rloo_kappa=1.5,
                       samples=4)
    run = train_reranker(method, params, rcfg, splits.train, splits.dev, cfg, seed=0, vocab_size=len(splits.vocab))
    assert [h["step"] for h in run.history] == [0, 6, 12]
    train = splits.train.batch(np.arange(16))
    table = compute_teachers("exact", params, rcfg, train, cfg)["table"]

    def V(p):
        s, _ = reranker_forward(p, train.question, train.docs, pad_id=rcfg.pad_id)
        return exact_objective_loss(s, table, k=K, kappa=1.5)[0]

    assert V(run.params) < V(run.init_params)


def test_exact_method_loss_gradient_matches_finite_differences(world):
    """method_loss("exact", ...) with a batch's table rows: dscores is the gradient of the loss it returns."""
    _, b = world
    table = np.random.default_rng(1).uniform(0, 2, size=(len(b), math.comb(DATA.n_candidates, K)))
    cfg = RerankConfig(k=K, exact_kappa=0.8)
    scores = np.random.default_rng(2).standard_normal((len(b), DATA.n_candidates))
    check_grads(lambda inp: method_loss("exact", inp["s"], b, None, cfg, table=table),
                lambda d, ds: {"s": d * ds}, {"s": scores}, rng=np.random.default_rng(3), use_autograd=False)


def test_table_is_cached_reused_and_recomputed_when_unreadable(world, tmp_path):
    splits, _ = world
    params, rcfg = _reader("fid")
    data = splits.train.batch(np.arange(5))
    said = []
    a = load_or_compute_table(params, rcfg, data, K, cache_dir=tmp_path, log=said.append)
    assert "computing" in said[0] and len(list(tmp_path.glob("subset-table-*.npy"))) == 1
    b = load_or_compute_table(params, rcfg, data, K, cache_dir=tmp_path, log=said.append)
    assert "reused" in said[-1]
    np.testing.assert_array_equal(a, b)
    path = next(tmp_path.glob("subset-table-*.npy"))
    path.write_bytes(b"not a table")
    c = load_or_compute_table(params, rcfg, data, K, cache_dir=tmp_path, log=said.append)
    np.testing.assert_array_equal(a, c)
    # another reader (other parameters) is another table
    other = init_reader(rcfg, 2)
    load_or_compute_table(other, rcfg, data, K, cache_dir=tmp_path, log=said.append)
    assert len(list(tmp_path.glob("subset-table-*.npy"))) == 2


def test_table_too_large_names_n_and_k(world, tmp_path):
    splits, _ = world
    params, rcfg = _reader("fid")
    big = splits.train.batch(np.arange(2))
    wide = big._replace(docs=np.concatenate([big.docs] * 3, axis=1), ctx=np.concatenate([big.ctx] * 3, axis=1))
    with pytest.raises(ValueError, match=r"N=18, k=9"):
        load_or_compute_table(params, rcfg, wide, 9, cache_dir=tmp_path, log=None)
