"""The link probes (mini_gumbel.experiment.probes): they rewrite exactly the tokens they say, keep the FiD
sequences consistent with the documents, and refuse data they cannot probe."""
import numpy as np
import pytest

from mini_gumbel.data import GOLD, GOLD_BRIDGE, TARGET, DataConfig, make_dataset
from mini_gumbel.experiment.probes import cut_link, fake_link, two_hop


@pytest.fixture(scope="module")
def world():
    splits = make_dataset(DataConfig(n_train=20, n_dev=5, n_test=60), 0)
    return two_hop(splits.test), splits.vocab


def _ctx_matches(d):
    n_q = (d.question != 0).sum(1)
    for s in range(len(d)):
        np.testing.assert_array_equal(d.ctx[s, :, n_q[s] + 1:n_q[s] + 1 + d.docs.shape[2]], d.docs[s])


def test_cut_link_renames_the_bridge_in_the_bridge_document_only(world):
    d, vocab = world
    assert len(d) > 10
    _ctx_matches(d)  # the helper's premise holds on the data itself
    cut = cut_link(d, vocab, np.random.default_rng(0))
    changed = cut.docs != d.docs  # (S, N, Ld)
    for s in range(len(d)):
        g1 = int(np.flatnonzero(d.kind[s] == GOLD_BRIDGE)[0])
        assert changed[s].sum() == 1 and changed[s, g1, 2]  # "E1 r1 B": only the object B
        new = cut.docs[s, g1, 2]
        assert vocab.is_name(new) and new not in d.docs[s] and new not in d.question[s]
        g2 = int(np.flatnonzero(d.kind[s] == GOLD)[0])
        assert d.docs[s, g2, 0] == d.bridge[s]  # the answer document still names B: the link is what is cut
    _ctx_matches(cut)
    for f in ("question", "gold", "answer", "kind", "bridge", "hops"):
        np.testing.assert_array_equal(getattr(cut, f), getattr(d, f))


def test_fake_link_gives_one_target_distractor_the_bridge_as_subject(world):
    d, _ = world
    fake, picked = fake_link(d)
    changed = fake.docs != d.docs
    for s in range(len(d)):
        assert d.kind[s, picked[s]] == TARGET
        assert fake.docs[s, picked[s], 0] == d.bridge[s]
        assert changed[s].sum() <= 1 and (changed[s].sum() == 0) == (d.docs[s, picked[s], 0] == d.bridge[s])
    _ctx_matches(fake)


def test_probes_refuse_single_hop_questions(world):
    _, vocab = world
    single = make_dataset(DataConfig(n_train=20, n_dev=5, n_test=20), 0).test
    with pytest.raises(ValueError, match=r"cut_link: data.hops=.*two-hop questions only"):
        cut_link(single, vocab, np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"fake_link: data.hops="):
        fake_link(single)
    with pytest.raises(TypeError, match=r"cut_link: data="):
        cut_link(None, vocab, np.random.default_rng(0))
