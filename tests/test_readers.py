"""Both readers behind one interface (mini_gumbel.experiment.readers), as the baselines' teachers and the
evaluation use them: each teacher input equals the reader run on exactly the documents it names (a 0/1 DMA
mask is dropping documents, exact to float64 round-off), and predictions equal the readers' own decoders."""
import numpy as np
import pytest

from mini_gumbel.data import make_dataset
from mini_gumbel.experiment.configs import default_reader_config
from mini_gumbel.experiment.evaluate import exact_match_rows
from mini_gumbel.experiment.readers import answer_nll, final_read_attention, one_doc_logprobs, predict, reader_inputs
from mini_gumbel.gumbel_reranking import reader_memory_of
from mini_gumbel.metrics import exact_match
from mini_gumbel.experiment.train_reranker import _leave_one_out_nll
from mini_gumbel.reader import greedy_decode, init_reader, reader_forward
from mini_gumbel.two_pass_reader import soft_flags, two_pass_decode, two_pass_first_hop
from reader_batches import tiny_world

DATA = tiny_world(n_train=30, n_dev=5, n_test=5, k=3)


@pytest.fixture(scope="module", params=["two_pass", "fid"])
def setup(request):
    b = make_dataset(DATA, 0).train.batch(np.arange(6))
    assert set(b.hops.tolist()) == {1, 2}
    cfg = default_reader_config(DATA, request.param, d_model=16, d_ff=32, n_enc_layers=1, n_dec_layers=1)
    return b, cfg, init_reader(cfg, 3), reader_inputs(b, cfg)


def test_one_doc_logprobs_is_the_reader_on_that_document_alone(setup):
    b, cfg, params, x = setup
    lp = one_doc_logprobs(params, cfg, x)  # (B, N, T)
    B, N = b.gold.shape
    for i in range(N):
        only_i = np.eye(N)[i][None].repeat(B, 0)  # (B, N) keep document i only
        _, cache = answer_nll(params, cfg, x, only_i)
        np.testing.assert_allclose(lp[:, i], np.asarray(cache.logprobs), rtol=1e-10, atol=1e-12)


def test_leave_one_out_is_the_reader_without_that_document(setup):
    b, cfg, params, x = setup
    B, N = b.gold.shape
    g = _leave_one_out_nll(params, cfg, x, B, N)  # (B, N)
    for i in (0, N - 1):
        _, cache = answer_nll(params, cfg, x, 1.0 - np.eye(N)[i][None].repeat(B, 0))
        np.testing.assert_allclose(g[:, i], np.asarray(cache.nll), rtol=1e-10)
    assert not np.allclose(g[:, 0], g[:, 1])  # different documents left out give different losses


def test_predict_is_the_readers_own_decoder(setup):
    b, cfg, params, x = setup
    m = (np.arange(b.gold.shape[1]) < 4)[None].repeat(len(b), 0).astype(np.float64)
    got = predict(params, cfg, x, m, max_len=2)
    if cfg.exact_match:
        want = two_pass_decode(params, cfg, x.ctx1, x.flags1, x.ctx2, x.hops, m, max_len=2)
    else:
        want = greedy_decode(params, cfg, b.ctx, m, max_len=2)
    np.testing.assert_array_equal(got, want)
    # the same answers from the reader's memory, computed once for several masks (evaluate_reader does that)
    memory = reader_memory_of(params, cfg, x)
    for mask in (m, 1.0 - 0.5 * m, None):
        np.testing.assert_array_equal(predict(params, cfg, x, mask, max_len=2, memory=memory),
                                      predict(params, cfg, x, mask, max_len=2))


def test_exact_match_rows_is_exact_match_of_every_row():
    """The batched exact match equals metrics.exact_match row by row: pads anywhere, EOS early or missing,
    prediction and gold of different lengths."""
    rng = np.random.default_rng(0)
    for t_pred, t_gold in ((3, 3), (2, 4), (5, 2)):
        pred = rng.integers(0, 5, (400, t_pred))  # 0 pad, 2 EOS, few tokens: many equal rows
        gold = rng.integers(0, 5, (400, t_gold))
        want = [exact_match(p, g, pad_id=0, eos_id=2) for p, g in zip(pred, gold)]
        got = exact_match_rows(pred, gold, pad_id=0, eos_id=2)
        np.testing.assert_array_equal(got, want)
        assert 0 < got.mean() < 1


def test_final_read_attention_is_the_answering_read(setup):
    b, cfg, params, x = setup
    xattn, key_pad = final_read_attention(params, cfg, x)
    if not cfg.exact_match:
        _, c = reader_forward(params, cfg, b.ctx, b.ans_in, b.ans_out, need_attn=True)
        np.testing.assert_array_equal(xattn[0].probs, c.xattn[0].probs)
        return
    one = b.hops == 1  # single-hop rows: read 1 answers, with its hard entity flags
    _, c1 = reader_forward(params, cfg, x.ctx1[one], b.ans_in[one], b.ans_out[one], flags=x.flags1[one],
                           need_attn=True)
    np.testing.assert_allclose(xattn[0].probs[one], c1.xattn[0].probs, rtol=1e-12, atol=1e-15)
    two = ~one  # two-hop rows: read 2 on the outer question, its flags soft from read 1's bridge distribution
    p1 = two_pass_first_hop(params, cfg, x.ctx1[two], x.flags1[two])
    _, c2 = reader_forward(params, cfg, x.ctx2[two], b.ans_in[two], b.ans_out[two],
                           flags=soft_flags(x.ctx2[two], p1), need_attn=True)
    np.testing.assert_allclose(xattn[0].probs[two], c2.xattn[0].probs, rtol=1e-12, atol=1e-15)
    _, c1_two = reader_forward(params, cfg, x.ctx1[two], b.ans_in[two], b.ans_out[two], flags=x.flags1[two],
                               need_attn=True)
    assert not np.allclose(xattn[0].probs[two], c1_two.xattn[0].probs)  # and not read 1's
