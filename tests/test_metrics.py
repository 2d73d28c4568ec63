"""Ranking and answer metrics on hand-made rankings, values worked out by hand."""
import math

import numpy as np
import pytest

from mini_gumbel.gumbel import topk_mask
from mini_gumbel.metrics import exact_match, mean_exact_match, mean_token_f1, ranking_metrics, token_f1

NEG = -np.inf
SCORES = np.array(
    [
        [0.9, 0.1, 0.5, 0.3, 0.7],  # ranking 0, 4, 2, 3, 1
        [1.0, 1.0, 1.0, 0.0, NEG],  # ties: 0, 1, 2 (lower index first), 3, 4 (padding last)
        [0.3, 0.2, 0.1, 0.0, -0.1],  # no gold: excluded
        [0.2, 0.8, NEG, 0.5, 0.4],  # ranking 1, 3, 4, 0, 2
    ]
)
GOLD = np.array(
    [
        [False, True, True, False, False],  # gold at ranks 5 and 3
        [False, False, True, False, False],  # gold at rank 3 (only because ties go to the lower index)
        [False, False, False, False, False],
        [False, True, False, True, True],  # gold at ranks 1, 2, 3
    ]
)
INDIRECT = np.array(
    [
        [False, True, False, False, False],  # the indirect gold doc is ranked 5th
        [False, False, False, False, False],  # no indirect doc: excluded from the indirect averages
        [False, False, False, False, False],
        [False, False, False, False, True],  # ranked 3rd
    ]
)


def test_ranking_metrics_at_3_by_hand():
    m = ranking_metrics(SCORES, GOLD, 3, indirect=INDIRECT)
    # recall@3: q0 1/2 (doc 2 in, doc 1 out), q1 1/1, q3 3/3
    assert m["recall@3"] == pytest.approx((0.5 + 1.0 + 1.0) / 3, rel=1e-14)  # 0.8333
    assert m["all_gold@3"] == pytest.approx((0.0 + 1.0 + 1.0) / 3, rel=1e-14)  # 0.6667
    # first gold at ranks 3, 3, 1
    assert m["mrr"] == pytest.approx((1 / 3 + 1 / 3 + 1.0) / 3, rel=1e-14)  # 0.5556
    # q0: DCG = 1/log2(3+1) = 0.5, IDCG(2 gold) = 1/log2(2) + 1/log2(3); q1: 0.5 / 1; q3: 1
    nd0 = 0.5 / (1.0 + 1.0 / math.log2(3.0))  # 0.306574
    assert m["ndcg@3"] == pytest.approx((nd0 + 0.5 + 1.0) / 3, rel=1e-13)  # 0.602191
    assert m["n_questions"] == 3 and m["n_no_gold"] == 1
    # indirect: q0 0/1, q3 1/1, q1 excluded
    assert m["indirect_recall@3"] == pytest.approx(0.5, rel=1e-14)
    assert m["indirect_all_gold@3"] == pytest.approx(0.5, rel=1e-14)
    assert m["n_indirect_questions"] == 2


def test_ranking_metrics_at_1_by_hand():
    m = ranking_metrics(SCORES, GOLD, 1)
    # top-1 = doc 0, doc 0, doc 1: only q3 hits, 1 of its 3 gold
    assert m["recall@1"] == pytest.approx((0.0 + 0.0 + 1 / 3) / 3, rel=1e-14)
    assert m["all_gold@1"] == 0.0
    assert m["ndcg@1"] == pytest.approx((0.0 + 0.0 + 1.0) / 3, rel=1e-14)  # IDCG@1 = 1 for any gold count
    assert m["mrr"] == pytest.approx((1 / 3 + 1 / 3 + 1.0) / 3, rel=1e-14)  # not cut at k
    assert "indirect_recall@1" not in m
    # k = N: everything retrieved
    m5 = ranking_metrics(SCORES, GOLD, 5)
    assert m5["recall@5"] == 1.0 and m5["all_gold@5"] == 1.0


def test_ndcg_partial_ranking_by_hand():
    # gold at ranks 2 and 4 of 4, k = 4: DCG = 1/log2(3) + 1/log2(5); IDCG = 1 + 1/log2(3)
    s = np.array([[4.0, 3.0, 2.0, 1.0]])
    g = np.array([[False, True, False, True]])
    m = ranking_metrics(s, g, 4)
    assert m["ndcg@4"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3)), rel=1e-14)
    assert m["mrr"] == 0.5


def test_top_k_matches_gumbel_topk_mask_with_ties():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 3, size=(50, 6)).astype(float)  # many ties
    for k in (1, 2, 4):
        keep = topk_mask(s, k) > 0  # (50, 6)
        for i in range(s.shape[0]):
            gold_one = np.eye(6, dtype=bool)[rng.integers(0, 6)]  # one gold doc: recall@k = "is it kept"
            m = ranking_metrics(s[i : i + 1], gold_one[None], k)
            assert m[f"recall@{k}"] == float(keep[i][gold_one].item())


def test_no_gold_anywhere_gives_nan_and_validation():
    m = ranking_metrics(SCORES, np.zeros_like(GOLD), 2)
    assert math.isnan(m["recall@2"]) and m["n_questions"] == 0
    with pytest.raises(ValueError, match="k=6"):
        ranking_metrics(SCORES, GOLD, 6)
    with pytest.raises(ValueError, match="k=0"):
        ranking_metrics(SCORES, GOLD, 0)
    with pytest.raises(ValueError, match="gold.shape"):
        ranking_metrics(SCORES, GOLD[:, :3], 2)
    with pytest.raises(ValueError, match="scores=.*no NaN"):
        ranking_metrics(np.where(GOLD, np.nan, SCORES), GOLD, 2)
    with pytest.raises(ValueError, match="indirect=.*subset of gold"):
        ranking_metrics(SCORES, GOLD, 2, indirect=~GOLD)


def test_exact_match_and_f1_by_hand():
    eos, pad = 2, 0
    assert exact_match([5, 6, 7, eos, pad], [5, 6, 7, eos]) == 1.0
    assert exact_match([5, 6, eos, 7], [5, 6, 7, eos, pad]) == 0.0  # tokens after EOS are cut
    # pred (5, 6) vs gold (5, 6, 7): 2 common, P = 1, R = 2/3, F1 = 2 * 1 * 2/3 / (5/3) = 0.8
    assert token_f1([5, 6, eos, 9], [5, 6, 7, eos, pad]) == pytest.approx(0.8, rel=1e-14)
    # multisets: (5, 5, 6) vs (5, 6, 6): common {5, 6} = 2, P = R = 2/3
    assert token_f1([5, 5, 6], [5, 6, 6]) == pytest.approx(2 / 3, rel=1e-14)
    assert token_f1([eos, 5], [pad, eos]) == 1.0  # both empty
    assert token_f1([5], [eos]) == 0.0  # one empty
    assert token_f1([5, 8], [6, 7]) == 0.0
    # other special ids: with pad_id=1 and eos_id=0 both strip to (3,) -- pads dropped, cut at the first 0
    assert exact_match(np.array([3, 1, 1]), np.array([3, 0, 4]), pad_id=1, eos_id=0) == 1.0


def test_batched_means():
    preds = np.array([[5, 6, 7, 2], [5, 6, 2, 0], [9, 2, 0, 0]])  # (3, 4)
    golds = np.array([[5, 6, 7, 2, 0], [5, 6, 7, 2, 0], [8, 2, 0, 0, 0]])  # (3, 5)
    assert mean_exact_match(preds, golds) == pytest.approx(1 / 3, rel=1e-14)
    assert mean_token_f1(preds, golds) == pytest.approx((1.0 + 0.8 + 0.0) / 3, rel=1e-14)
    with pytest.raises(ValueError, match="3 predictions and 2 gold"):
        mean_token_f1(preds, golds[:2])
