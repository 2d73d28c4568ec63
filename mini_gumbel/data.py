"""A built-in multi-hop QA benchmark: small typed worlds, one per example, in the style of HotpotQA.

Dimension letters: S examples in a split, N candidates per question, K kept documents, Lq question
tokens, Ld document tokens, L = Lq + 1 + Ld tokens per FiD encoder sequence, T answer tokens, V vocabulary.

Every example draws its own little world: eight entities of each type (person, city, country, company,
university, language) with names drawn from a shared pool of name tokens, and functional typed relations
(``born_in: person -> city``, ``located_in: city -> country``, ...). Because names are re-drawn for every
example, no answer can be memorised into a reader's parameters: the reader has to read.

Documents are facts ``subject relation object`` written with *document* relation words (``born_in``).
Questions use *different* words (a paraphrase vocabulary), and different words again for the outer and the
inner relation of a two-hop question:

    single-hop   "q_birthplace Kari"              = born_in(Kari)
                 gold: "Kari born_in Tovel"        (contains the answer: directly relevant)
    two-hop      "o_country i_birthplace Kari"    = located_in(born_in(Kari))
                 gold 1: "Kari born_in Tovel"      (names the bridge Tovel, not the answer: *indirectly* relevant)
                 gold 2: "Tovel located_in Mesa"   (links the bridge to the answer; shares no token with q)

So a lexical (token-overlap) reranker can only match entity names, never relations: relation matching
has to be learned.

The question's decomposition comes with every example (``hop_words``, ``entity``, ``bridge``), as a
decomposing reader (DecompRC-style) would predict it: the single-hop word of each read (``q_birthplace``
then ``q_country`` for the two-hop question above), the question entity E1 and, for training only, the
bridge B. **The two-pass reader is given the decomposition; the reranker still sees only the question**
(``question``, ``docs``), so everything it learns about relations it has to learn from the reader's signal. Each question comes with N shuffled candidates; besides the gold documents they are

    subject    other facts that mention the question entity E1 (the first one, when the world allows,
               has an object of the answer's type: a plausible wrong answer, e.g. "Kari citizen_of Pell")
    target     facts with the target relation (r, or the outer r2) about other entities: for any
               pointwise scorer they look exactly like gold document 2 of a bridge question
    bridge     facts about the bridge entity B with other relations (two-hop only)
    unrelated  everything else (never with the question's relations)

No distractor contains the answer, none mentions E1 with the question's (inner) relation, and relations
are functional, so the answer is uniquely determined by the gold documents and no second chain exists.

DATA CARD (defaults: N=10, K=5, two_hop_share=0.5, 8 entities per type, 100 names, 15 relations,
43 two-hop paths, vocabulary 165; per question 2 subject, 4 target, 1 bridge (two-hop) distractors, the
rest unrelated). Measured by ``python tools/data_card.py`` on 4000 test questions, seed 0; ties broken at
random (20 draws); Recall@5 of each gold document type, MRR in brackets:

    scorer                                  single gold   bridge gold 1      bridge gold 2     two-hop
                                                          (indirect)         (has the answer)  all-gold@5
    random                                  0.50          0.50 (0.29)        0.50 (0.29)       0.22
    lexical overlap (matches names only)    1.00          1.00 (0.61)        0.29 (0.16)       0.29
    oracle pointwise (knows the relations)  1.00          1.00 (1.00)        0.80 (0.29)       0.80
    pointwise, answer's relation only       1.00          0.00 (0.14)        1.00 (0.46)       0.00
    oracle joint (also reads B in gold 1)   1.00          1.00 (1.00)        1.00 (0.50)       1.00

    ("oracle pointwise" = 4*[subject is E1 and relation is r / inner r1] + 2*[relation is outer r2]
     + 1*[E1 in d]; "answer's relation only" = 2*[relation is r / r2] + 1*[E1 in d], i.e. what a reranker
     learns from a teacher that credits only answer-bearing documents.)

What a pointwise reranker (seeing (q, d_i) alone) can identify, and from what:
  * the single-hop gold and bridge gold 1 carry the question entity E1 *and* the relation that the question
    word asks for (r, or the inner r1): identifiable exactly, once question words are matched to document
    relation words (oracle pointwise: MRR 1.00). Names alone do not do it: lexical overlap ties them with
    the 2 subject distractors (MRR 0.61); at K=5 the 3 documents naming E1 are all kept anyway.
  * bridge gold 2 shares no token with the question (lexical: rank 7 of 10, R@5 0.29). Its only pointwise
    cue is its relation r2, shared with the 4 target distractors: 5 documents tie, so even the oracle
    pointwise scorer keeps it with probability (K-1)/5 = 0.80 when gold 1 takes the first slot.
  * by construction only joint selection can single gold 2 out: it is the r2 fact whose subject is the
    bridge entity B named in gold 1 (the bridge distractor mentions B too, with another relation).
    Joint oracle: 1.00.

Why these defaults: 4 target distractors = K - 1, so the r2 facts alone can fill the top K. A reranker that
learns the outer relation but not "E1 + inner relation" (the answer's-relation-only row) keeps gold 2
every time and loses the indirect gold 1 every time (two-hop all-gold 0.00); keeping both needs the inner
relation, which only a signal that looks at documents together supplies (docs/method.md §1). Random K
candidates hold both gold documents of a bridge question 22% of the time, lexical overlap 29%, the best
pointwise ranking 80%: reranking matters (not trivial) and a pointwise reranker can get most of the way
(not hopeless). Single-hop questions are easy to rank (the lexical top 5 always holds the gold); they keep
the reader honest and the reranker's E1 matching useful. 100 names put the reader's chance level near 1%
EM; 8 entities per type make worlds rich enough that every distractor category can be filled (worlds are
redrawn otherwise, rarely).
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np

from .validate import check_int, check_real, check_seed, check_type, fail

__all__ = [
    "RELATIONS",
    "KINDS",
    "Vocab",
    "DataConfig",
    "Dataset",
    "Splits",
    "make_vocab",
    "make_dataset",
    "two_hop_paths",
    "format_example",
]

# name, subject type, object type, question paraphrase. Document word = name; question words:
# single-hop "q_<para>", outer relation of a two-hop question "o_<para>", inner relation "i_<para>".
RELATIONS: tuple[tuple[str, str, str, str], ...] = (
    ("born_in", "person", "city", "birthplace"),
    ("lives_in", "person", "city", "home"),
    ("works_for", "person", "company", "employer"),
    ("studied_at", "person", "university", "alma_mater"),
    ("citizen_of", "person", "country", "nationality"),
    ("located_in", "city", "country", "country"),
    ("governed_by", "city", "person", "mayor"),
    ("based_in", "company", "city", "headquarters"),
    ("founded_by", "company", "person", "founder"),
    ("campus_in", "university", "city", "campus_city"),
    ("speaks", "country", "language", "language"),
    ("led_by", "country", "person", "head_of_state"),
    ("listed_in", "company", "country", "market"),
    ("funded_by", "university", "company", "sponsor"),
    ("headed_by", "university", "person", "president"),
)
_REL = {r[0]: r for r in RELATIONS}

# candidate kinds (Dataset.kind): what each candidate was drawn as
KINDS = ("gold", "gold_bridge", "subject", "target", "bridge", "unrelated")
GOLD, GOLD_BRIDGE, SUBJECT, TARGET, BRIDGE, UNRELATED = range(6)  # gold = single-hop gold or bridge gold 2

SPECIALS = ("<pad>", "<bos>", "<eos>", "<sep>", "<ent>")  # <ent>: where a read names its entity (see hop_words)


# --------------------------------------------------------------------------------------------- vocab
class Vocab:
    """Token <-> id. ``pad_id=0, bos_id=1, eos_id=2, sep_id=3, ent_id=4``; then document relation words, question
    words (single, outer, inner), then the name pool. The vocabulary depends on the config, not the seed."""

    pad_id, bos_id, eos_id, sep_id, ent_id = 0, 1, 2, 3, 4

    def __init__(self, tokens: Sequence[str], n_names: int):
        self.tokens = list(tokens)
        self._index = {t: i for i, t in enumerate(self.tokens)}
        if len(self._index) != len(self.tokens):
            raise ValueError("Vocab: tokens must be unique")
        self.n_names = int(n_names)
        self.name_offset = len(self.tokens) - self.n_names  # names occupy the last n_names ids

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def size(self) -> int:
        return len(self.tokens)

    def id(self, token: str) -> int:
        try:
            return self._index[token]
        except KeyError:
            raise KeyError(f"Vocab.id: unknown token {token!r}") from None

    def is_name(self, ids) -> np.ndarray:
        ids = np.asarray(ids)
        return ids >= self.name_offset

    def decode(self, ids, *, keep_special: bool = False) -> str:
        """Token ids -> space-separated text; padding (and, unless ``keep_special``, BOS/EOS) dropped."""
        out = []
        for i in np.asarray(ids).reshape(-1).tolist():
            if i == self.pad_id or (not keep_special and i in (self.bos_id, self.eos_id)):
                continue
            out.append(self.tokens[i] if 0 <= i < len(self.tokens) else f"<unk:{i}>")
        return " ".join(out)


def _name_pool(n_names: int) -> list[str]:
    """n_names pronounceable names (consonant-vowel-consonant-vowel), a fixed order independent of any seed."""
    cons, vows = "bdfgklmnprstvz", "aeiou"
    all_names = [(a + b + c + d).capitalize() for a, b, c, d in itertools.product(cons, vows, cons, vows)]
    order = np.random.default_rng(20250211).permutation(len(all_names))  # fixed: part of the vocabulary
    return [all_names[i] for i in order[:n_names]]


def make_vocab(cfg: "DataConfig") -> Vocab:
    rels = [_REL[r] for r in cfg.relations]
    words = [r[0] for r in rels]
    words += [f"q_{r[3]}" for r in rels] + [f"o_{r[3]}" for r in rels] + [f"i_{r[3]}" for r in rels]
    return Vocab(list(SPECIALS) + words + _name_pool(cfg.n_names), cfg.n_names)


# --------------------------------------------------------------------------------------------- config
@dataclass(frozen=True)
class DataConfig:
    """Sizes of the benchmark. Distractor counts are per question; the rest of the N slots are unrelated.

    n_subject: facts mentioning the question entity; n_target: facts with the target relation about other
    entities; n_bridge: facts about the bridge entity (two-hop only; single-hop fills them as unrelated).
    """

    n_train: int = 20000
    n_dev: int = 500
    n_test: int = 1000
    n_candidates: int = 10  # N
    k: int = 5  # K
    two_hop_share: float = 0.5
    n_names: int = 100
    n_per_type: int = 8  # entities of each type in one example's world
    relations: tuple = tuple(r[0] for r in RELATIONS)
    n_subject: int = 2
    n_target: int = 4
    n_bridge: int = 1
    max_tries: int = 200  # worlds redrawn per example until every distractor category can be filled

    def __post_init__(self):
        fn = "DataConfig"
        if isinstance(self.relations, list):  # e.g. from JSON (as_dict writes a list)
            object.__setattr__(self, "relations", tuple(self.relations))
        for name in ("n_train", "n_dev", "n_test", "n_candidates", "k", "n_names", "n_per_type", "max_tries"):
            check_int(fn, name, getattr(self, name), lo=1)
        for name in ("n_subject", "n_target", "n_bridge"):
            check_int(fn, name, getattr(self, name), lo=0)
        check_real(fn, "two_hop_share", self.two_hop_share, lo=0.0, hi=1.0)
        if not isinstance(self.relations, tuple) or len(self.relations) == 0:
            fail(fn, "relations", self.relations, "a non-empty tuple of relation names",
                 TypeError if not isinstance(self.relations, tuple) else ValueError)
        for r in self.relations:
            check_type(fn, "relations", r, str, f"relation names (str), from {tuple(_REL)}")
        if self.k > self.n_candidates:
            fail(fn, "k", self.k, f"an int with 1 <= k <= n_candidates={self.n_candidates}")
        bad = [r for r in self.relations if r not in _REL]
        if bad or len(set(self.relations)) != len(self.relations):
            fail(fn, "relations", self.relations, f"distinct names from {tuple(_REL)}")
        need = 2 + self.n_subject + self.n_target + self.n_bridge  # two gold documents on a bridge question
        if self.n_candidates < need:
            fail(fn, "n_candidates", self.n_candidates, f">= 2 gold + n_subject + n_target + n_bridge = {need}")
        n_types = len({t for r in self.relations for t in _REL[r][1:3]})
        if self.n_names <= n_types * self.n_per_type:
            fail(fn, "n_names", self.n_names, f"> n_types * n_per_type = {n_types} * {self.n_per_type} (every "
                 "entity of a world needs its own name, drawn from the pool without the question entity's)")
        if self.n_per_type < 2 + self.n_target:
            fail(fn, "n_per_type", self.n_per_type, f">= n_target + 2 = {self.n_target + 2} (target facts are "
                 "about other entities of the bridge's type)")
        if self.two_hop_share > 0 and not two_hop_paths(self.relations):
            fail(fn, "relations", self.relations, f"two relations that compose into a two-hop question, since "
                 f"two_hop_share={self.two_hop_share}")

    @property
    def q_len(self) -> int:  # Lq
        return 3 if self.two_hop_share > 0 else 2

    @property
    def doc_len(self) -> int:  # Ld
        return 3

    @property
    def ctx_len(self) -> int:  # L
        return self.q_len + 1 + self.doc_len

    @property
    def ans_len(self) -> int:  # T: one name token + EOS
        return 2

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["relations"] = list(self.relations)
        return d


def two_hop_paths(relations: Sequence[str]) -> list[tuple[str, str]]:
    """All (r1, r2) with object type of r1 == subject type of r2: the question r2(r1(E1))."""
    return [(a, b) for a in relations for b in relations if _REL[a][2] == _REL[b][1]]


# --------------------------------------------------------------------------------------------- arrays
class _DatasetFields(NamedTuple):
    question: np.ndarray  # (S, Lq) int64, padded with pad_id
    docs: np.ndarray  # (S, N, Ld) int64
    ctx: np.ndarray  # (S, N, L) int64: question ⊕ SEP ⊕ doc, padded at the end
    ans_in: np.ndarray  # (S, T) int64: BOS, answer
    ans_out: np.ndarray  # (S, T) int64: answer, EOS
    gold: np.ndarray  # (S, N) bool
    indirect: np.ndarray  # (S, N) bool: gold and not has_answer
    has_answer: np.ndarray  # (S, N) bool: the answer token occurs in the document
    hops: np.ndarray  # (S,) int64 in {1, 2}
    answer: np.ndarray  # (S,) int64: the answer's name token
    kind: np.ndarray  # (S, N) int8: index into KINDS
    # the question's decomposition, as a decomposing reader would predict it (the two-pass reader is given
    # it; the reranker never sees it, only ``question``):
    hop_words: np.ndarray  # (S, 2) int64: single-hop question words of read 1 and read 2: (q_r, pad) for a
    #                        single-hop question, (q_<inner>, q_<outer>) for a two-hop one
    entity: np.ndarray  # (S,) int64: the question entity E1's name token
    bridge: np.ndarray  # (S,) int64: the bridge entity B's name token (pad_id on single-hop questions)


class Dataset(_DatasetFields):
    """One split: a NamedTuple of aligned numpy arrays. ``len(ds)`` is the number of examples."""

    __slots__ = ()

    def __len__(self) -> int:
        return int(self.question.shape[0])

    @classmethod
    def _make(cls, iterable):  # namedtuple's _make checks len(), which we redefine
        return tuple.__new__(cls, tuple(iterable))

    def batch(self, idx) -> "Dataset":
        """The examples ``idx`` (int array, slice or boolean mask) as a new Dataset (copies)."""
        if isinstance(idx, (int, np.integer)):
            idx = [int(idx)]
        return Dataset._make(np.asarray(f[idx]) for f in self)

    @property
    def n_candidates(self) -> int:
        return int(self.docs.shape[1])


class Splits(NamedTuple):
    train: Dataset
    dev: Dataset
    test: Dataset
    vocab: Vocab


# --------------------------------------------------------------------------------------------- generator
class _Layout(NamedTuple):
    """The fixed skeleton of every world of a config: entity e has type e // n; fact f is relation
    rel[f] with subject subj[f]; only the objects are drawn per example (the relations are functional)."""

    rels: list  # relation names; index = relation id
    n: int  # entities per type
    n_ent: int  # E
    subj: np.ndarray  # (F,) subject entity of each fact
    rel: np.ndarray  # (F,) relation id of each fact
    obj_base: np.ndarray  # (F,) first entity id of the object's type
    subj_base: np.ndarray  # (R,) first entity id of each relation's subject type


def _layout(cfg: DataConfig) -> _Layout:
    rels = list(cfg.relations)
    types = sorted({t for r in rels for t in _REL[r][1:3]})
    tix = {t: i for i, t in enumerate(types)}
    n = cfg.n_per_type
    subj = np.concatenate([tix[_REL[r][1]] * n + np.arange(n) for r in rels])  # (F,)
    rel = np.repeat(np.arange(len(rels)), n)  # (F,)
    obj_base = np.repeat([tix[_REL[r][2]] * n for r in rels], n)  # (F,)
    subj_base = np.array([tix[_REL[r][1]] * n for r in rels])  # (R,)
    return _Layout(rels, n, len(types) * n, subj, rel, obj_base, subj_base)


def _choose(rng, mask: np.ndarray, k: int) -> np.ndarray:
    """k distinct True columns of each row of ``mask`` (P, F), uniformly at random -> (P, k) indices."""
    keys = np.where(mask, rng.random(mask.shape), np.inf)  # (P, F)
    return np.argsort(keys, axis=1, kind="stable")[:, :k]  # (P, k)


def _draw_worlds(rng, cfg: DataConfig, lay: _Layout, rid: np.ndarray, hops: int):
    """Worlds and candidate facts for P questions of one hop count, all with valid distractor sets.

    rid (P, hops) relation ids of the path (r) or (r1, r2). Worlds that cannot fill every distractor
    category (or whose bridge answer is the question entity) are redrawn, up to cfg.max_tries times.
    Returns objects O (P, F), question entity e1 (P,), answer entity a (P,), slots (P, N) fact ids and
    kinds (P, N), in the order gold..., subject..., target..., bridge..., unrelated... (shuffled later).
    """
    P, F, n = rid.shape[0], lay.subj.shape[0], lay.n
    S, R = lay.subj[None, :], lay.rel[None, :]  # (1, F)
    n_bridge = cfg.n_bridge if hops == 2 else 0
    n_unrel = cfg.n_candidates - hops - cfg.n_subject - cfg.n_target - n_bridge
    O = np.zeros((P, F), np.int64)
    e1 = np.zeros(P, np.int64)
    a = np.zeros(P, np.int64)
    slots = np.zeros((P, cfg.n_candidates), np.int64)
    pending = np.arange(P)
    for _ in range(cfg.max_tries):
        if pending.size == 0:
            break
        p = pending.size
        r_ = rid[pending]  # (p, hops)
        o = lay.obj_base[None, :] + rng.integers(0, n, size=(p, F))  # (p, F) this world's objects
        e = lay.subj_base[r_[:, 0]] + rng.integers(0, n, size=p)  # (p,)
        g1 = r_[:, 0] * n + e % n  # (p,) fact "E1 r1 B" (or "E1 r A")
        obj1 = np.take_along_axis(o, g1[:, None], 1)[:, 0]  # (p,)
        if hops == 2:
            b = obj1
            g2 = r_[:, 1] * n + b % n  # (p,) fact "B r2 A"
            ans = np.take_along_axis(o, g2[:, None], 1)[:, 0]  # (p,)
            gold = np.stack([g1, g2], 1)  # (p, 2)
        else:
            b = np.full(p, -1)
            ans = obj1
            gold = g1[:, None]  # (p, 1)
        f_idx = np.arange(F)[None, :]  # (1, F)
        is_gold = (f_idx[:, :, None] == gold[:, None, :]).any(-1)  # (p, F)
        out = is_gold | (S == ans[:, None]) | (o == ans[:, None])  # (p, F) only gold 2 may hold the answer
        m_e1 = (S == e[:, None]) | (o == e[:, None])  # (p, F)
        m_b = (S == b[:, None]) | (o == b[:, None])  # (p, F)
        in_path = (R[:, :, None] == r_[:, None, :]).any(-1)  # (p, F)
        last = r_[:, -1:]  # (p, 1)
        ok = ~out & ~m_e1
        subject = ~out & m_e1 & ~in_path & ~m_b  # (p, F) mentions E1, not with the question's relations
        target = ok & (R == last) & ~m_b  # (p, F)
        bridge = ok & (R != last) & m_b  # (p, F)
        unrelated = ok & ~m_b & ~in_path  # (p, F)
        good = ans != e  # (p,)
        for m, k in ((subject, cfg.n_subject), (target, cfg.n_target), (bridge, n_bridge), (unrelated, n_unrel)):
            good &= m.sum(1) >= k
        # the first subject distractor has an object of the answer's type when the world has one
        other = np.where(S == e[:, None], o, S)  # (p, F) the entity next to E1
        typed = subject & (other // n == (ans // n)[:, None])  # (p, F)
        first = _choose(rng, typed, 1)[:, 0]  # (p,)
        has_typed = typed.any(1)  # (p,)
        subject2 = subject & ~((f_idx == first[:, None]) & has_typed[:, None])  # (p, F)
        rest = _choose(rng, subject2, cfg.n_subject)  # (p, n_subject)
        sub = np.where(has_typed[:, None], np.concatenate([first[:, None], rest[:, :-1]], 1), rest) \
            if cfg.n_subject else rest  # (p, n_subject)
        sl = np.concatenate(
            [gold, sub, _choose(rng, target, cfg.n_target), _choose(rng, bridge, n_bridge),
             _choose(rng, unrelated, n_unrel)], 1)  # (p, N)
        acc = pending[good]
        O[acc], e1[acc], a[acc], slots[acc] = o[good], e[good], ans[good], sl[good]
        pending = pending[~good]
    if pending.size:
        raise RuntimeError(
            f"make_dataset: could not draw a world with enough distractors in {cfg.max_tries} tries for "
            f"{pending.size} {hops}-hop question(s); lower n_subject/n_target/n_bridge or raise n_per_type "
            f"(now {cfg.n_per_type})"
        )
    kinds = [GOLD_BRIDGE, GOLD] if hops == 2 else [GOLD]
    kinds += [SUBJECT] * cfg.n_subject + [TARGET] * cfg.n_target + [BRIDGE] * n_bridge + [UNRELATED] * n_unrel
    return O, e1, a, slots, np.broadcast_to(np.array(kinds, np.int8), slots.shape)


def _question_keys(cfg: DataConfig, rng) -> list:
    """Partition the question space (path, question entity name) between train/dev/test so that no
    split shares a question with another. Returns, per hop count, per split, an array (keys, hops + 1)
    of rows (relation ids of the path..., name index)."""
    sizes = np.array([cfg.n_train, cfg.n_dev, cfg.n_test], dtype=np.float64)
    rels = list(cfg.relations)
    paths = {1: [(rels.index(r),) for r in rels],
             2: [(rels.index(x), rels.index(y)) for x, y in two_hop_paths(rels)]}
    out = {}
    for hops, ps in paths.items():
        keys = np.array([(*p, nm) for p in ps for nm in range(cfg.n_names)], np.int64).reshape(-1, hops + 1)
        keys = keys[rng.permutation(len(keys))]
        # proportional to the split sizes, at least one key per split
        cuts = np.floor(np.cumsum(sizes / sizes.sum()) * len(keys)).astype(int)
        cuts = np.minimum(np.maximum(cuts, np.arange(1, 4)), len(keys))
        cuts[-1] = len(keys)
        bounds = [0, *cuts.tolist()]
        out[hops] = [keys[bounds[j]:bounds[j + 1]] for j in range(3)]
    return out


def _build_split(rng, cfg: DataConfig, vocab: Vocab, size: int, keys: dict) -> Dataset:
    lay = _layout(cfg)
    n_two = int(round(cfg.two_hop_share * size))
    hops = rng.permutation(np.array([2] * n_two + [1] * (size - n_two), np.int64))  # (S,)
    N, Lq, Ld, L, T = cfg.n_candidates, cfg.q_len, cfg.doc_len, cfg.ctx_len, cfg.ans_len
    question = np.zeros((size, Lq), np.int64)  # (S, Lq)
    docs = np.zeros((size, N, Ld), np.int64)  # (S, N, Ld)
    ctx = np.zeros((size, N, L), np.int64)  # (S, N, L)
    kind = np.zeros((size, N), np.int8)  # (S, N)
    answer = np.zeros(size, np.int64)  # (S,)
    hop_words = np.zeros((size, 2), np.int64)  # (S, 2)
    entity = np.zeros(size, np.int64)  # (S,)
    bridge = np.zeros(size, np.int64)  # (S,) pad_id = 0 on single-hop rows
    off = vocab.name_offset
    rel_word = np.array([vocab.id(r) for r in lay.rels])  # (R,)
    words = {w: np.array([vocab.id(f"{w}_{_REL[r][3]}") for r in lay.rels]) for w in "qoi"}  # (R,) each
    for h in (1, 2):
        rows = np.flatnonzero(hops == h)
        if rows.size == 0:
            continue
        k = keys[h][rng.integers(0, len(keys[h]), size=rows.size)]  # (P, h + 1)
        rid, qname = k[:, :h], k[:, h]
        O, e1, a, slots, kinds = _draw_worlds(rng, cfg, lay, rid, h)
        P = rows.size
        # names: every entity of a world its own; the question entity gets the split's question name
        names = np.argsort(rng.random((P, cfg.n_names - 1)), axis=1)[:, : lay.n_ent]  # (P, E) distinct
        names = np.where(names >= qname[:, None], names + 1, names)  # (P, E) never the question name
        names[np.arange(P), e1] = qname
        order = np.argsort(rng.random((P, N)), axis=1)  # (P, N) shuffle the candidates
        slots = np.take_along_axis(slots, order, 1)  # (P, N)
        kind[rows] = np.take_along_axis(kinds, order, 1)
        subj_tok = off + np.take_along_axis(names, lay.subj[slots], 1)  # (P, N)
        obj_tok = off + np.take_along_axis(names, np.take_along_axis(O, slots, 1), 1)  # (P, N)
        d = np.stack([subj_tok, rel_word[lay.rel[slots]], obj_tok], -1)  # (P, N, Ld)
        if h == 1:
            q = np.stack([words["q"][rid[:, 0]], off + qname], 1)  # (P, 2)
        else:
            q = np.stack([words["o"][rid[:, 1]], words["i"][rid[:, 0]], off + qname], 1)  # (P, 3)
        question[rows, :h + 1] = q
        entity[rows] = off + qname
        if h == 1:
            hop_words[rows, 0] = words["q"][rid[:, 0]]
        else:
            hop_words[rows] = np.stack([words["q"][rid[:, 0]], words["q"][rid[:, 1]]], 1)  # (inner, outer)
            g1 = np.argmax(kind[rows] == GOLD_BRIDGE, axis=1)  # (P,) gold 1 "E1 r1 B": its object is B
            bridge[rows] = d[np.arange(P), g1, 2]
        docs[rows] = d
        seq = np.concatenate([np.broadcast_to(q[:, None, :], (P, N, h + 1)), np.full((P, N, 1), vocab.sep_id), d],
                             -1)  # (P, N, h + 2 + Ld)
        ctx[rows, :, : seq.shape[-1]] = seq
        answer[rows] = off + np.take_along_axis(names, a[:, None], 1)[:, 0]
    ans_in = np.stack([np.full(size, vocab.bos_id), answer], 1)  # (S, T)
    ans_out = np.stack([answer, np.full(size, vocab.eos_id)], 1)  # (S, T)
    gold = (kind == GOLD) | (kind == GOLD_BRIDGE)  # (S, N)
    has_answer = (docs == answer[:, None, None]).any(-1)  # (S, N)
    indirect = gold & ~has_answer  # (S, N)
    return Dataset(question, docs, ctx, ans_in, ans_out, gold, indirect, has_answer, hops, answer, kind, hop_words,
                   entity, bridge)


def make_dataset(cfg: DataConfig | None = None, seed: int = 0) -> Splits:
    """Generate train/dev/test deterministically from ``seed``. The splits share no question."""
    if cfg is None:
        cfg = DataConfig()
    if not isinstance(cfg, DataConfig):
        raise TypeError(f"make_dataset: cfg of type {type(cfg).__name__!r}; expected DataConfig")
    seed = check_seed("make_dataset", seed)
    vocab = make_vocab(cfg)
    root = np.random.SeedSequence([int(seed), 0x6D67])
    key_seq, *split_seqs = root.spawn(4)
    keys = _question_keys(cfg, np.random.default_rng(key_seq))
    out = []
    for j, size in enumerate((cfg.n_train, cfg.n_dev, cfg.n_test)):
        rng = np.random.default_rng(split_seqs[j])
        out.append(_build_split(rng, cfg, vocab, size, {h: keys[h][j] for h in keys}))
    return Splits(*out, vocab)


def format_example(ds: Dataset, i: int, vocab: Vocab) -> str:
    """A readable rendering of example ``i``: question, answer, candidates with their labels."""
    lines = [f"Q ({int(ds.hops[i])}-hop): {vocab.decode(ds.question[i])}   A: {vocab.decode([ds.answer[i]])}"]
    for j in range(ds.docs.shape[1]):
        tags = [KINDS[int(ds.kind[i, j])]]
        if ds.indirect[i, j]:
            tags.append("indirect")
        if ds.has_answer[i, j]:
            tags.append("has_answer")
        lines.append(f"  [{j}] {vocab.decode(ds.docs[i, j]):<40s} {' '.join(tags)}")
    return "\n".join(lines)
