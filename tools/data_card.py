"""Measure the data card of mini_gumbel.data: what a pointwise reranker can and cannot identify.

For each scorer, the Recall@K of each gold document type on the test split (ties broken at random,
averaged over several tie-breaks), the mean rank and MRR, and all-gold@K on bridge questions:

    random            all scores equal (random order)
    lexical           |question tokens ∩ document tokens|: can only match entity names
    oracle_pointwise  knows which document relation each question word asks for, sees (q, d_i) alone:
                      4*[subject = E1 and relation = r (single) / r1 (inner)] + 2*[relation = r2 (outer)]
                      + 1*[E1 in d_i]  -- the best any pointwise scorer can do on this data
    answer_relation_only  pointwise, knows only the relation of the document holding the answer (r, or
                      the outer r2) plus E1 matching: 2*[relation = r / r2] + 1*[E1 in d_i] -- what a
                      reranker learns from signals that credit answer-bearing documents alone
    oracle_joint      oracle_pointwise, plus: the r2 document whose subject is the bridge named in the
                      top document (selection that looks at two documents together)

    python tools/data_card.py [--seed 0] [--n-test 4000] [--out data_card.json]

Prints a markdown table; with --out writes the numbers as JSON (atomically).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from mini_gumbel.atomic import atomic_write_json
from mini_gumbel.data import GOLD, GOLD_BRIDGE, KINDS, RELATIONS, DataConfig, make_dataset
from mini_gumbel.timing import environment


def oracle_scores(ds, vocab, *, joint=False, answer_relation_only=False):
    """Pointwise (or joint) oracle scores (S, N) computed from the token ids, as described above."""
    para2rel = {}
    for tok in vocab.tokens:
        for w in ("q", "o", "i"):
            if tok.startswith(w + "_"):
                para2rel[vocab.id(tok)] = None  # filled below
    for name, _, _, para in RELATIONS:
        for w in ("q", "o", "i"):
            if f"{w}_{para}" in vocab._index:
                para2rel[vocab.id(f"{w}_{para}")] = vocab.id(name)
    S, N, _ = ds.docs.shape
    q = ds.question
    two = ds.hops == 2  # (S,)
    e1 = np.where(two, q[:, 2], q[:, 1])  # (S,)
    first = np.array([para2rel[t] for t in np.where(two, q[:, 1], q[:, 0])])  # (S,) r or inner r1
    outer = np.array([para2rel[t] if h == 2 else -1 for t, h in zip(q[:, 0], ds.hops)])  # (S,)
    subj, rel, obj = ds.docs[..., 0], ds.docs[..., 1], ds.docs[..., 2]  # (S, N) each
    if answer_relation_only:  # knows only the relation of the document holding the answer (r or r2)
        last = np.where(two, outer, first)  # (S,)
        return 2.0 * (rel == last[:, None]) + 1.0 * ((subj == e1[:, None]) | (obj == e1[:, None]))
    s = 4.0 * ((subj == e1[:, None]) & (rel == first[:, None]))
    s += 2.0 * (rel == outer[:, None])
    s += 1.0 * ((subj == e1[:, None]) | (obj == e1[:, None]))
    if joint:
        top = np.argmax(s, axis=1)  # (S,) the document naming E1 with the asked relation (unique: 4 + 1)
        bridge = obj[np.arange(S), top]  # (S,)
        s += 2.5 * (two[:, None] & (subj == bridge[:, None]) & (rel == outer[:, None]))
    return s  # (S, N)


def lexical_scores(ds, vocab):
    q, d = ds.question, ds.docs
    hit = (d[:, :, :, None] == q[:, None, None, :]) & (q[:, None, None, :] != vocab.pad_id)  # (S, N, Ld, Lq)
    return hit.any(-1).sum(-1).astype(np.float64)  # (S, N) distinct-ish overlap (docs hold names once)


def rank_stats(scores, ds, k, rng, n_draws=20):
    """Expected Recall@k / rank / MRR per gold type over random tie-breaks."""
    kinds = ds.kind
    single = (ds.hops == 1)[:, None] & (kinds == GOLD)
    g1 = kinds == GOLD_BRIDGE
    g2 = (ds.hops == 2)[:, None] & (kinds == GOLD)
    acc = {name: {"recall": 0.0, "rank": 0.0, "mrr": 0.0} for name in ("single_gold", "bridge_gold1", "bridge_gold2")}
    allgold = 0.0
    for _ in range(n_draws):
        noisy = scores + 1e-3 * rng.random(scores.shape)  # ties -> random order
        order = np.argsort(-noisy, axis=1)
        rank = np.empty_like(order)
        np.put_along_axis(rank, order, np.arange(scores.shape[1])[None, :].repeat(len(order), 0), axis=1)
        rank = rank + 1  # (S, N) 1 = best
        for name, m in (("single_gold", single), ("bridge_gold1", g1), ("bridge_gold2", g2)):
            r = rank[m]
            acc[name]["recall"] += np.mean(r <= k) / n_draws
            acc[name]["rank"] += np.mean(r) / n_draws
            acc[name]["mrr"] += np.mean(1.0 / r) / n_draws
        two = ds.hops == 2
        allgold += np.mean(((rank <= k) | ~ds.gold)[two].all(1)) / n_draws
    out = {f"{n}_{m}": round(float(v), 4) for n, d in acc.items() for m, v in d.items()}
    out["two_hop_all_gold"] = round(float(allgold), 4)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-test", type=int, default=4000, help="test questions to measure on")
    ap.add_argument("--out", default=None, help="write the numbers here as JSON")
    args = ap.parse_args(argv)
    cfg = DataConfig(n_train=1, n_dev=1, n_test=args.n_test)
    defaults = DataConfig()
    splits = make_dataset(cfg, args.seed)
    ds, vocab = splits.test, splits.vocab
    rng = np.random.default_rng(args.seed)
    results = {
        "random": rank_stats(np.zeros(ds.gold.shape), ds, cfg.k, rng),
        "lexical": rank_stats(lexical_scores(ds, vocab), ds, cfg.k, rng),
        "oracle_pointwise": rank_stats(oracle_scores(ds, vocab), ds, cfg.k, rng),
        "answer_relation_only": rank_stats(oracle_scores(ds, vocab, answer_relation_only=True), ds, cfg.k, rng),
        "oracle_joint": rank_stats(oracle_scores(ds, vocab, joint=True), ds, cfg.k, rng),
    }
    counts = {KINDS[i]: int(c) for i, c in enumerate(np.bincount(ds.kind.ravel(), minlength=len(KINDS)))}
    record = {
        "config": {**defaults.as_dict(), "n_test": args.n_test},
        "seed": args.seed,
        "k": cfg.k,
        "candidate_kind_counts": counts,
        "two_hop_share": float(np.mean(ds.hops == 2)),
        "vocab_size": len(vocab),
        "results": results,
        "versions": environment()["versions"],
    }
    k = cfg.k
    print(f"data card: N={cfg.n_candidates} K={k} test questions={len(ds)} (two-hop share "
          f"{record['two_hop_share']:.2f}), vocabulary {len(vocab)}\n")
    print(f"| scorer | single gold R@{k} | bridge gold 1 (indirect) R@{k} | bridge gold 2 R@{k} | "
          f"two-hop all-gold@{k} | MRR gold 1 | MRR gold 2 | mean rank gold 2 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['single_gold_recall']:.2f} | {r['bridge_gold1_recall']:.2f} | "
              f"{r['bridge_gold2_recall']:.2f} | {r['two_hop_all_gold']:.2f} | {r['bridge_gold1_mrr']:.2f} | "
              f"{r['bridge_gold2_mrr']:.2f} | {r['bridge_gold2_rank']:.2f} |")
    if args.out:
        atomic_write_json(args.out, record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
