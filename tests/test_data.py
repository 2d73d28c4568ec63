"""The built-in multi-hop benchmark: determinism, disjoint splits, labels that agree with the text."""
import dataclasses

import numpy as np
import pytest

from mini_gumbel.data import (
    BRIDGE, GOLD, GOLD_BRIDGE, RELATIONS, SUBJECT, TARGET, UNRELATED, DataConfig, Dataset, make_dataset,
    make_vocab, two_hop_paths, format_example,
)

SMALL = DataConfig(n_train=300, n_dev=60, n_test=200)
REL = {name: (st, ot, para) for name, st, ot, para in RELATIONS}


@pytest.fixture(scope="module")
def splits():
    return make_dataset(SMALL, seed=7)


def _parse(splits, ds, i):
    """Question relations and entity from the text: (hops, [relation names inner->outer], E1 token)."""
    v = splits.vocab
    words = [v.tokens[t] for t in ds.question[i] if t != v.pad_id]
    by_para = {para: name for name, (_, _, para) in REL.items()}
    if ds.hops[i] == 1:
        assert words[0].startswith("q_")
        return [by_para[words[0][2:]]], v.id(words[1])
    assert words[0].startswith("o_") and words[1].startswith("i_")
    return [by_para[words[1][2:]], by_para[words[0][2:]]], v.id(words[2])


def test_shapes_dtypes(splits):
    cfg, v = SMALL, splits.vocab
    for ds, S in ((splits.train, cfg.n_train), (splits.dev, cfg.n_dev), (splits.test, cfg.n_test)):
        assert isinstance(ds, Dataset) and len(ds) == S
        N, Lq, Ld, L, T = cfg.n_candidates, cfg.q_len, cfg.doc_len, cfg.ctx_len, cfg.ans_len
        assert ds.question.shape == (S, Lq) and ds.docs.shape == (S, N, Ld) and ds.ctx.shape == (S, N, L)
        assert ds.ans_in.shape == (S, T) and ds.ans_out.shape == (S, T)
        for name in ("gold", "indirect", "has_answer"):
            assert getattr(ds, name).shape == (S, N) and getattr(ds, name).dtype == np.bool_
        assert ds.hops.shape == (S,) and set(np.unique(ds.hops)) <= {1, 2}
        for name in ("question", "docs", "ctx", "ans_in", "ans_out", "hops", "answer"):
            assert np.issubdtype(getattr(ds, name).dtype, np.integer)
        assert ds.ctx.min() >= 0 and ds.ctx.max() < len(v)
        assert (ds.ctx != v.pad_id).any(-1).all()  # no fully padded sequence
        assert (ds.ans_in[:, 0] == v.bos_id).all() and (ds.ans_out[:, -1] == v.eos_id).all()
        assert (ds.ans_in[:, 1] == ds.answer).all() and (ds.ans_out[:, 0] == ds.answer).all()
    assert abs(np.mean(splits.test.hops == 2) - SMALL.two_hop_share) < 0.01
    assert (v.pad_id, v.bos_id, v.eos_id, v.sep_id) == (0, 1, 2, 3)


def test_ctx_is_question_sep_doc(splits):
    ds, v = splits.test, splits.vocab
    for i in range(len(ds)):
        q = [t for t in ds.question[i] if t != v.pad_id]
        for j in range(ds.docs.shape[1]):
            seq = [t for t in ds.ctx[i, j] if t != v.pad_id]
            assert seq == q + [v.sep_id] + ds.docs[i, j].tolist()
            assert (ds.ctx[i, j, len(seq):] == v.pad_id).all()  # padded at the end only


def test_deterministic_from_seed():
    a, b, c = make_dataset(SMALL, 3), make_dataset(SMALL, 3), make_dataset(SMALL, 4)
    for name in ("train", "dev", "test"):
        for x, y, z in zip(getattr(a, name), getattr(b, name), getattr(c, name)):
            np.testing.assert_array_equal(x, y)
        assert not np.array_equal(getattr(a, name).ctx, getattr(c, name).ctx)
    assert a.vocab.tokens == c.vocab.tokens  # the vocabulary depends on the config only


def test_splits_share_no_question(splits):
    def qs(ds):
        return {tuple(r) for r in ds.question.tolist()}

    tr, dv, te = qs(splits.train), qs(splits.dev), qs(splits.test)
    assert not (tr & dv) and not (tr & te) and not (dv & te)
    assert len(te) > 50  # not vacuous


def test_labels_consistent_with_text(splits):
    v = splits.vocab
    for ds in (splits.train, splits.test):
        for i in range(len(ds)):
            rels, e1 = _parse(splits, ds, i)
            a = int(ds.answer[i])
            docs = ds.docs[i]
            subj, rel, obj = docs[:, 0], docs[:, 1], docs[:, 2]
            has = (docs == a).any(1)
            np.testing.assert_array_equal(ds.has_answer[i], has)
            np.testing.assert_array_equal(ds.indirect[i], ds.gold[i] & ~has)
            assert v.is_name(a) and a != e1 and a not in ds.question[i]
            g = np.flatnonzero(ds.gold[i])
            if ds.hops[i] == 1:
                assert len(g) == 1 and not ds.indirect[i].any()
                (j,) = g
                assert (subj[j], rel[j], obj[j]) == (e1, v.id(rels[0]), a)
            else:
                assert len(g) == 2 and ds.indirect[i].sum() == 1
                j1, j2 = np.flatnonzero(ds.indirect[i])[0], np.flatnonzero(ds.gold[i] & has)[0]
                b = obj[j1]
                assert (subj[j1], rel[j1]) == (e1, v.id(rels[0])) and b != a  # gold 1 names E1 -> B only
                assert (subj[j2], rel[j2], obj[j2]) == (b, v.id(rels[1]), a)  # gold 2: B -> A
                assert e1 not in docs[j2]  # gold 2 shares no name with the question
            assert ds.has_answer[i].sum() == 1  # only the answer document holds the answer
            assert not has[~ds.gold[i]].any()  # distractors never contain the answer


def test_answer_unique_from_gold_and_no_second_chain(splits):
    """Answer by following the chain in the gold documents alone; no distractor completes a chain."""
    v = splits.vocab
    for ds in (splits.train, splits.test):
        for i in range(len(ds)):
            rels, e1 = _parse(splits, ds, i)
            docs = ds.docs[i]

            def follow(rows, ent, r):
                hits = [d[2] for d in rows if d[0] == ent and d[1] == v.id(r)]
                return hits

            gold_rows = docs[ds.gold[i]]
            all_rows = docs
            ent = [e1]
            for r in rels:  # through the gold documents
                nxt = [o for e in ent for o in follow(gold_rows, e, r)]
                assert len(nxt) == 1
                ent = nxt
            assert ent[0] == ds.answer[i]
            ent = [e1]
            for r in rels:  # through all candidates: the same unique chain
                ent = [o for e in ent for o in follow(all_rows, e, r)]
                assert len(ent) == 1
            assert ent[0] == ds.answer[i]


def test_distractor_mix(splits):
    cfg = SMALL
    for ds in (splits.train, splits.test):
        for h, n_gold, n_bridge in ((1, 1, 0), (2, 2, cfg.n_bridge)):
            k = ds.kind[ds.hops == h]
            assert ((k == GOLD) | (k == GOLD_BRIDGE)).sum(1).tolist() == [n_gold] * len(k)
            assert ((k == SUBJECT).sum(1) == cfg.n_subject).all()
            assert ((k == TARGET).sum(1) == cfg.n_target).all()
            assert ((k == BRIDGE).sum(1) == n_bridge).all()
            assert ((k == UNRELATED).sum(1) == cfg.n_candidates - n_gold - cfg.n_subject - cfg.n_target - n_bridge).all()
    # the categories mean what they say, in the text
    ds, v = splits.test, splits.vocab
    for i in range(len(ds)):
        rels, e1 = _parse(splits, ds, i)
        d = ds.docs[i]
        last = v.id(rels[-1])
        k = ds.kind[i]
        assert (d[k == SUBJECT] == e1).any(1).all()
        assert (d[k == TARGET][:, 1] == last).all() and not (d[k == TARGET] == e1).any()
        assert not (d[(k == UNRELATED) | (k == BRIDGE)] == e1).any()
        if ds.hops[i] == 2:
            b = d[k == GOLD_BRIDGE][0, 2]
            assert (d[k == BRIDGE] == b).any(1).all() and (d[k == BRIDGE][:, 1] != last).all()
            assert not (d[(k == TARGET) | (k == UNRELATED) | (k == SUBJECT)] == b).any()
        assert not np.isin(d[k == UNRELATED][:, 1], [v.id(r) for r in rels]).any()
    # plausible wrong answers: a subject fact whose other entity has the answer's type is preferred when the
    # world has one (0.46 of questions here; 0.28 when subject facts are drawn without that preference)
    typ = {v.id(name): ot for name, (st, ot, _) in REL.items()}
    typ_s = {v.id(name): st for name, (st, ot, _) in REL.items()}
    share = []
    for i in range(len(ds)):
        rels, e1 = _parse(splits, ds, i)
        ans_type = REL[rels[-1]][1]
        sub = ds.docs[i][ds.kind[i] == SUBJECT]
        share.append(any((typ[r] if s == e1 else typ_s[r]) == ans_type for s, r, o in sub))
    assert np.mean(share) > 0.4


def test_every_path_occurs_and_candidates_shuffled():
    splits = make_dataset(DataConfig(n_train=3000, n_dev=10, n_test=10), seed=0)
    ds, v = splits.train, splits.vocab
    paths = {tuple(q[:h]) for q, h in zip(ds.question.tolist(), ds.hops)}
    n_paths = len(two_hop_paths(SMALL.relations)) + len(SMALL.relations)
    assert len(paths) == n_paths == 15 + 43  # every single-hop relation and two-hop path is asked
    pos = np.argmax(ds.has_answer, axis=1)
    counts = np.bincount(pos, minlength=ds.docs.shape[1])
    assert counts.min() > 0.6 * counts.mean()  # the answer document is not in a fixed slot


def test_batch_and_len(splits):
    ds = splits.test
    b = ds.batch(np.array([3, 1, 4]))
    assert isinstance(b, Dataset) and len(b) == 3
    np.testing.assert_array_equal(b.ctx, ds.ctx[[3, 1, 4]])
    np.testing.assert_array_equal(b.hops, ds.hops[[3, 1, 4]])
    assert len(ds.batch(slice(0, 5))) == 5 and len(ds.batch(2)) == 1
    r = ds._replace(hops=ds.hops.copy())  # NamedTuple helpers still work with our __len__
    assert len(r) == len(ds)


def test_decode_and_format(splits):
    v = splits.vocab
    ds = splits.test
    i = int(np.flatnonzero(ds.hops == 2)[0])
    text = format_example(ds, i, v)
    assert "gold_bridge indirect" in text and "has_answer" in text
    assert v.decode(ds.ans_out[i]) == v.tokens[ds.answer[i]]
    assert v.decode([v.bos_id, 5, v.eos_id, 0], keep_special=True).split()[0] == "<bos>"
    assert v.id(v.tokens[17]) == 17
    with pytest.raises(KeyError, match="nope"):
        v.id("nope")


def test_vocab_layout():
    v = make_vocab(SMALL)
    assert len(v) == 5 + 4 * len(SMALL.relations) + SMALL.n_names  # 5 specials, 4 words per relation
    assert v.is_name(len(v) - 1) and not v.is_name(v.id("born_in"))
    assert len(set(v.tokens[v.name_offset:])) == SMALL.n_names


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("n_train", 0, "n_train"),
        ("n_candidates", 5, "n_candidates"),
        ("k", 11, "k=11"),
        ("k", 0, "k=0"),
        ("two_hop_share", 1.5, "two_hop_share"),
        ("n_names", 20, "n_names"),
        ("n_per_type", 3, "n_per_type"),
        ("relations", ("born_in", "nope"), "relations"),
        ("relations", ("born_in",), "relations=.*compose"),
        ("n_subject", -1, "n_subject"),
        ("n_test", 2.5, "n_test"),
        ("two_hop_share", True, "two_hop_share"),
        ("two_hop_share", "0.5", "two_hop_share"),
    ],
)
def test_config_validation(field, value, match):
    # the house rule: a wrong type (a float or bool where an int or a number is needed) is a TypeError
    wrong_type = isinstance(value, (bool, str)) or (field == "n_test")
    with pytest.raises(TypeError if wrong_type else ValueError, match=f"DataConfig: {match}"):
        dataclasses.replace(DataConfig(), **{field: value})


def test_make_dataset_argument_errors():
    with pytest.raises(TypeError, match="cfg"):
        make_dataset({"n_train": 3}, 0)
    with pytest.raises(ValueError, match="seed"):
        make_dataset(SMALL, -1)


def test_single_hop_only_and_small_worlds():
    cfg = DataConfig(n_train=50, n_dev=5, n_test=20, two_hop_share=0.0, relations=("born_in", "lives_in", "citizen_of"),
                     n_candidates=7, n_bridge=0, n_subject=1, n_target=3)
    sp = make_dataset(cfg, 1)
    assert (sp.train.hops == 1).all() and sp.train.question.shape[1] == 2
    assert sp.train.ctx.shape == (50, 7, cfg.ctx_len)
    assert (sp.test.gold.sum(1) == 1).all()


def test_decomposition_fields_match_the_question_and_the_gold_documents(splits):
    """hop_words, entity and bridge are what a decomposing reader would predict from the question alone
    (the words) plus, for training, the bridge named in gold document 1."""
    v = splits.vocab
    for ds in (splits.train, splits.test):
        for i in range(0, len(ds), 7):
            q = [v.tokens[t] for t in ds.question[i] if t != v.pad_id]
            w = [v.tokens[t] for t in ds.hop_words[i] if t != v.pad_id]
            assert v.tokens[ds.entity[i]] == q[-1]  # E1 is the question's last token
            if ds.hops[i] == 1:
                assert w == [q[0]] and ds.bridge[i] == v.pad_id  # q_r itself
            else:
                assert w == ["q_" + q[1][2:], "q_" + q[0][2:]]  # (inner i_x -> q_x, outer o_y -> q_y)
                g1 = np.flatnonzero(ds.kind[i] == 1)[0]  # gold_bridge: "E1 r1 B"
                g2 = np.flatnonzero(ds.kind[i] == 0)[0]  # gold 2: "B r2 A"
                assert ds.docs[i, g1, 0] == ds.entity[i] and ds.docs[i, g1, 2] == ds.bridge[i]
                assert ds.docs[i, g2, 0] == ds.bridge[i] and ds.docs[i, g2, 2] == ds.answer[i]
