"""The method in one screen (mini_gumbel.gumbel_reranking): the whole training step's reranker gradient, for
both readers, against finite differences of the step's own loss at fixed noise; and inference."""
import numpy as np
import pytest

from mini_gumbel.data import make_dataset
from mini_gumbel.experiment.configs import default_reader_config
from mini_gumbel.experiment.readers import reader_inputs
from mini_gumbel.gradcheck import check_grads
from mini_gumbel.gumbel import topk_mask
from mini_gumbel.gumbel_reranking import gumbel_reranking_step, reader_memory_of, rerank
from mini_gumbel.reader import init_reader
from mini_gumbel.reranker import init_reranker, reranker_forward
from reader_batches import tiny_world

DATA = tiny_world(n_train=40, n_dev=5, n_test=5, k=3)

@pytest.fixture(scope="module")
def batch():
    splits = make_dataset(DATA, 0)
    b = splits.train.batch(np.arange(6))
    assert set(b.hops.tolist()) == {1, 2}  # both kinds of question
    return b, len(splits.vocab)

@pytest.mark.parametrize("reader", ["two_pass", "fid"])
@pytest.mark.parametrize("relaxation", ["max", "iterative"])
def test_step_gradient_is_the_gradient_of_its_loss(batch, reader, relaxation):
    """gumbel_reranking_step's reranker gradient against central differences of the loss it returns, with
    the noise fixed (the same Generator seed on every call). Autograd cannot trace the step: it runs the
    frozen reader's hand-written backward inside (the chain's autograd check is in test_train_reranker)."""
    b, V = batch
    cfg = default_reader_config(DATA, reader, d_model=16, d_ff=32, n_enc_layers=1, n_dec_layers=1)
    reader_params = init_reader(cfg, 1)
    x = reader_inputs(b, cfg)
    ranker = init_reranker(V, 8, 2, init="random")

    def forward(p):
        loss, grads = gumbel_reranking_step(p, b.question, b.docs, reader_params, cfg, x,
                                            np.random.default_rng(7), k=3, tau=0.5, kappa=1.3,
                                            relaxation=relaxation)
        return loss, grads

    rep = check_grads(forward, lambda dloss, g: {k: dloss * v for k, v in g.items()}, ranker,
                      rng=np.random.default_rng(5), use_autograd=False)
    assert rep.mutated_fd_rel_error > 3e-3  # a 1% error is rejected by a wide margin

def test_rerank_is_the_hard_top_k_of_the_scores(batch):
    b, V = batch
    ranker = init_reranker(V, 8, 2)
    keep = rerank(ranker, b.question, b.docs, 3)
    scores, _ = reranker_forward(ranker, b.question, b.docs)
    np.testing.assert_array_equal(keep, topk_mask(scores, 3))
    assert (keep.sum(1) == 3).all()


@pytest.mark.parametrize("reader", ["two_pass", "fid"])
def test_step_with_reused_memory_is_the_full_step(batch, reader):
    """The step given rows of the reader's memory (computed once on more examples) returns exactly the loss
    and reranker gradients of the step that runs the whole reader."""
    b, V = batch
    cfg = default_reader_config(DATA, reader, d_model=16, d_ff=32, n_enc_layers=1, n_dec_layers=2)
    reader_params = init_reader(cfg, 1)
    ranker = init_reranker(V, 8, 2, init="random")
    x = reader_inputs(b, cfg)
    memory = reader_memory_of(reader_params, cfg, x)
    idx = np.array([5, 1, 2, 0])
    sub = b.batch(idx)
    kw = dict(k=3, tau=0.5, kappa=1.3)
    loss, g = gumbel_reranking_step(ranker, sub.question, sub.docs, reader_params, cfg, reader_inputs(sub, cfg),
                                    np.random.default_rng(3), **kw)
    loss_m, g_m = gumbel_reranking_step(ranker, sub.question, sub.docs, reader_params, cfg,
                                        reader_inputs(sub, cfg), np.random.default_rng(3), memory=memory.take(idx),
                                        **kw)
    assert loss_m == loss
    for k in g:
        np.testing.assert_array_equal(g_m[k], g[k])
