"""Reranker training: the whole Gumbel chain's gradient, and every method's training step (gradcheck.check_grads)."""
import numpy as np
import pytest

from mini_gumbel.gradcheck import check_grads
from mini_gumbel.gumbel import gumbel_noise, relaxed_topk_backward, relaxed_topk_forward
from mini_gumbel.reader import ReaderConfig, init_reader, reader_backward, reader_forward
from mini_gumbel.experiment.configs import METHODS, RerankConfig
from mini_gumbel.experiment.train_reranker import method_loss, train_reranker
from mini_gumbel.reranker import init_reranker, reranker_backward, reranker_forward
from reader_batches import tiny_world


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    V, B, N, Lq, Ld, T = 17, 2, 4, 3, 4, 3
    cfg = ReaderConfig(vocab_size=V, d_model=16, n_heads=2, n_enc_layers=1, n_dec_layers=2, d_ff=32,
                       max_ctx_len=Lq + 1 + Ld, max_ans_len=T)
    reader = init_reader(cfg, seed=1)
    question = rng.integers(4, V, size=(B, Lq))
    docs = rng.integers(4, V, size=(B, N, Ld))
    docs[0, 1, -1] = 0  # some padding inside a document
    ctx = np.concatenate([np.repeat(question[:, None], N, 1), np.full((B, N, 1), 3), docs], axis=2)  # (B, N, L)
    ans_in = np.array([[1, 5, 6], [1, 7, 0]])
    ans_out = np.array([[5, 6, 2], [7, 2, 0]])
    ranker = init_reranker(V, 8, seed=2, init="random")
    return dict(cfg=cfg, reader=reader, question=question, docs=docs, ctx=ctx, ans_in=ans_in, ans_out=ans_out,
                ranker=ranker, N=N, B=B)


@pytest.mark.parametrize("relaxation", ["max", "iterative", "st"])
def test_end_to_end_gradient_reranker_params_through_mask_and_reader(tiny, relaxation):
    """reranker params -> scores -> relaxed top-K mask -> DMA reader -> answer loss, checked by check_grads
    (finite differences and autograd of the whole chain) on the reranker's parameters at fixed noise. The st
    forward is piecewise constant and its gradient is not that of any function of the scores (the reader sees
    the hard mask), so for it we check the iterative surrogate it backpropagates; see test_gumbel_limits."""
    t = tiny
    k, tau, kappa = 2, 0.7, 1.5
    rng = np.random.default_rng(3)
    method = "iterative" if relaxation == "st" else relaxation
    noise = gumbel_noise((t["B"], k, t["N"]) if method == "max" else (t["B"], t["N"]), rng)

    def forward(p):
        scores, rc = reranker_forward(p, t["question"], t["docs"])
        mask, tc = relaxed_topk_forward(scores, noise, k, tau=tau, kappa=kappa, relaxation=method)
        loss, cache = reader_forward(t["reader"], t["cfg"], t["ctx"], t["ans_in"], t["ans_out"], mask)
        return loss, (rc, tc, cache)

    def backward(dloss, caches):
        rc, tc, cache = caches
        _, dmask = reader_backward(dloss, cache, param_grads=False)
        return reranker_backward(relaxed_topk_backward(dmask, tc), rc)

    rep = check_grads(forward, backward, t["ranker"], rng=np.random.default_rng(4))
    # the same check rejects a gradient that is 1% off, by a wide margin
    assert rep.mutated_fd_rel_error > 3e-3


@pytest.mark.parametrize("method", [m for m in METHODS if m not in ("exact", "rloo")])
def test_method_loss_gradient_matches_finite_differences(tiny, method):
    """Every method's (loss, dscores) on a batch: dscores is the gradient of the loss that the step returns.
    (exact: tests/test_objective.py, with its table; rloo returns REINFORCE's estimate of the gradient of the
    expected loss, not the gradient of the sampled loss it reports: tests/test_objective.py checks it.)"""
    t = tiny
    cfg = RerankConfig(k=2, tau=0.7, kappa=1.5, tau_s=0.5, tau_g=0.5)

    class Batch:
        question, docs, ctx, ans_in, ans_out = t["question"], t["docs"], t["ctx"], t["ans_in"], t["ans_out"]
        gold = np.array([[1, 0, 1, 0], [0, 0, 0, 1]], bool)

    rng0 = np.random.default_rng(7)
    teacher = {"emdr": np.log(rng0.uniform(0.05, 0.9, size=(t["B"], t["N"], 3))),
               "pdist": rng0.standard_normal((t["B"], t["N"])),
               "loop": rng0.standard_normal((t["B"], t["N"])),
               "adist": rng0.standard_normal((t["B"], t["N"]))}.get(method)
    scores, _ = reranker_forward(t["ranker"], t["question"], t["docs"])

    def forward(inp):  # (loss, dscores): the gradient at dloss = 1 is the cache
        return method_loss(method, inp["s"], Batch, teacher, cfg, reader_params=t["reader"], reader_cfg=t["cfg"],
                           rng=np.random.default_rng(11))  # the same noise on every call

    # autograd cannot trace the "gumbel" step: it runs the reader's hand-written backward inside, which writes
    # into NumPy arrays (out=); the same chain is checked against autograd end to end in the test above
    check_grads(forward, lambda dloss, ds: {"s": dloss * ds}, {"s": scores}, rng=np.random.default_rng(5),
                use_autograd=method != "gumbel")


@pytest.mark.parametrize("reader", ["two_pass", "fid"])
def test_gumbel_training_with_reused_memory_is_bit_identical(reader):
    """Gumbel Reranking trained with the reader's mask-independent states computed once per example (the
    default) and with the whole reader run every step: the same reranker and history, bit for bit."""
    from mini_gumbel.data import make_dataset
    from mini_gumbel.experiment.configs import default_reader_config
    from mini_gumbel.experiment.train_reranker import compute_teachers, train_reranker

    data = tiny_world(n_train=24, n_dev=4, n_test=4, k=3)
    splits = make_dataset(data, 0)
    rcfg = default_reader_config(data, reader, d_model=16, d_ff=32, n_enc_layers=1, n_dec_layers=2)
    reader_params = init_reader(rcfg, 1, dtype=np.float32)
    cfg = RerankConfig(steps=4, batch_size=8, eval_every=2, n_train=20, dim=8, k=3)
    kw = dict(seed=0, vocab_size=len(splits.vocab))
    teachers = compute_teachers("gumbel", reader_params, rcfg, splits.train.batch(np.arange(20)), cfg, chunk=7)
    assert teachers["memory"].shape[0] == 20  # one row per training example, in chunks that are not batches
    a = train_reranker("gumbel", reader_params, rcfg, splits.train, splits.dev, cfg, teachers=teachers, **kw)
    b = train_reranker("gumbel", reader_params, rcfg, splits.train, splits.dev, cfg, reuse_memory=False, **kw)
    assert a.history == b.history
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])


@pytest.mark.parametrize("seed", [-1, 1.5, "a", None, True])
def test_train_reranker_names_a_bad_seed(seed):
    with pytest.raises((TypeError, ValueError), match=r"train_reranker: seed="):
        train_reranker("gumbel", None, None, None, None, RerankConfig(), seed=seed, vocab_size=10)


def test_every_method_trains_the_listwise_reranker_from_the_pointwise_one():
    """reranker="listwise": the same seed starts from exactly the bilinear reranker's scores (U = 0, a = 0), and a
    method trains its interaction parameters too (the losses consume score gradients only)."""
    from mini_gumbel.data import make_dataset
    from mini_gumbel.experiment.configs import default_reader_config
    from mini_gumbel.experiment.evaluate import score_all
    from mini_gumbel.experiment.train_reranker import initial_reranker

    data = tiny_world(n_train=24, n_dev=4, n_test=4, k=3)
    splits = make_dataset(data, 0)
    rcfg = default_reader_config(data, "two_pass", d_model=16, d_ff=32, n_enc_layers=1, n_dec_layers=1)
    reader_params = init_reader(rcfg, 1)
    cfg = RerankConfig(steps=3, batch_size=8, eval_every=3, n_train=16, dim=8, k=3, lr=5e-2)
    V = len(splits.vocab)
    pw, lw = initial_reranker(0, V, cfg), initial_reranker(0, V, cfg.replace(reranker="listwise"))
    assert set(lw) == {"E", "W", "X", "U", "a"} and set(pw) == {"E", "W"}
    np.testing.assert_array_equal(score_all(pw, splits.dev), score_all(lw, splits.dev))
    for method in ("supervised", "rloo", "gumbel"):
        run = train_reranker(method, reader_params, rcfg, splits.train, splits.dev, cfg.replace(reranker="listwise"),
                             seed=0, vocab_size=V)
        assert set(run.params) == set(lw) and np.abs(run.params["U"]).max() > 0, method


def test_demo_rows_of_the_listwise_reranker_use_its_own_tuned_values():
    from mini_gumbel.experiment.configs import TUNED_BY_RERANKER
    from mini_gumbel.experiment.demo import demo_variants

    cfg = RerankConfig(reranker="listwise")
    rows = demo_variants(("gumbel", "loop"), cfg)
    assert [label for label, _, _ in rows] == ["gumbel", "loop (tuned)"]  # no iterative row: not swept for it
    assert rows[1][2] == cfg.replace(**TUNED_BY_RERANKER["listwise"]["loop"])
    both = demo_variants(("gumbel", "loop"), RerankConfig(), atlas_defaults=True)
    assert [label for label, _, _ in both] == ["gumbel", "gumbel (relaxation=iterative)", "loop", "loop (tuned)"]
