"""Every configuration of the experiment harness, the one quick (smoke-test) size, and the one config hash.

    cfg = default_configs()            # ExperimentConfig(data, reader, reader_train, rerank): the demo's
    cfg = quick_configs()              # the same at smoke-test size (seconds; numbers mean nothing)
    key = config_hash({...})           # 16 hex digits of SHA-256 over sorted JSON: cache and run-file keys

The reader's and the reranker's training configs live here, below everything that uses them, so that the
training, evaluation, cache and CLI modules import configurations from one place and never each other's.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from typing import NamedTuple

from ..data import DataConfig, make_vocab
from ..gumbel import RELAXATIONS, check_tau_kappa
from ..reader import ReaderConfig
from ..two_pass_reader import READ_PREFIX
from ..validate import check_bool, check_choice, check_int, check_real, fail
from .rankers import RERANKERS

__all__ = ["MODES", "METHODS", "DEMO_METHODS", "OWN_FIELDS", "GUMBEL_ITERATIVE", "RLOO_SCORES", "READERS",
           "FID_MODE_PROBS", "TUNED", "LISTWISE_DEFAULTS", "TUNED_LISTWISE", "RERANKER_DEFAULTS",
           "TUNED_BY_RERANKER", "RERANKERS", "TrainReaderConfig", "RerankConfig", "ExperimentConfig", "fid_train_config",
           "default_reader_config", "default_configs", "quick_configs", "config_hash"]

# the document sets the reader is trained on (mini_gumbel.experiment.train_reader.document_masks)
MODES = ("full", "subset", "gold_plus", "gold_only", "distractors", "gold_targets")
# the ways to train the reranker (mini_gumbel.experiment.train_reranker.REGISTRY): Gumbel Reranking, the
# objective it relaxes estimated exactly and by REINFORCE-LOO (mini_gumbel.objective), the labelled reference
# and the four distillation baselines
METHODS = ("gumbel", "exact", "rloo", "supervised", "pdist", "emdr", "loop", "adist")
RLOO_SCORES = ("set", "ordering")
# the largest κ of the objective's hard-set sampler: at 1e6 softmax(κ w) is already a hard top-K for any score gap
# above 1e-4, and far larger values make κ·w overflow for ordinary score rows
MAX_OBJECTIVE_KAPPA = 1e6
# the demo's default methods: every one but exact, whose subset-loss table (1,008,000 reads of K documents for
# the demo's 4000 training examples) takes longer than the rest of the demo; `--methods ... exact` adds it
DEMO_METHODS = tuple(m for m in METHODS if m != "exact")
# the RerankConfig fields that only one method reads: overriding them changes that method's row label only
OWN_FIELDS = {"gumbel": ("tau", "kappa", "relaxation", "noise", "tau_schedule", "tau_start"),
              "exact": ("exact_kappa",), "rloo": ("rloo_kappa", "samples", "rloo_score")}
# the readers: the two-pass ("decompose, then read twice") reader, the default, which can use a bridge
# document; and the one-pass FiD reader, the control that cannot (docs/method.md §6.6)
READERS = ("two_pass", "fid")
FID_MODE_PROBS = (0.2, 0.2, 0.35, 0.15, 0.1, 0.0)  # the one-pass reader's document sets (gold_targets off:
# at 2000 steps it did not speed up entity matching)


def _check_probs(fn: str, name: str, p, n: int, what: str) -> None:
    """A tuple of ``n`` finite numbers >= 0 (no bools, no strings) that sum to 1."""
    if not isinstance(p, tuple) or len(p) != n:
        fail(fn, name, p, f"a tuple of {n} probabilities, for {what}", TypeError if not isinstance(p, tuple)
             else ValueError)
    for i, x in enumerate(p):
        check_real(fn, f"{name}[{i}]", x, lo=0.0, hi=1.0)
    if abs(sum(float(x) for x in p) - 1.0) > 1e-9:
        fail(fn, name, p, f"{n} non-negative numbers summing to 1, for {what}")


@dataclass(frozen=True)
class TrainReaderConfig:
    """How the reader is trained. ``mode_probs`` are the probabilities of the document sets in ``MODES``."""

    reader: str = "two_pass"  # which reader is trained, from READERS
    steps: int = 2400  # 1200 left the fallback (answer_doc_alone) at 0.15-0.66; the one-pass control: 4000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100  # linear warm-up steps, then cosine decay to lr * min_lr_ratio at the last step
    min_lr_ratio: float = 0.05
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    mode_probs: tuple = (0.2, 0.15, 0.25, 0.1, 0.05, 0.25)  # full, subset, gold_plus, gold_only, distractors,
    # gold_targets: the same-relation targets teach read 2 to pick the r2 fact about the flagged entity
    # two-pass only: a two-hop example trains read 1 (inner question -> B) with probability hop1_share, else
    # read 2 (outer question -> A) with its entity flags hard on B, all zero, or soft from the model's own
    # read 1 on the same documents (no gradient), with probabilities flag_probs
    hop1_share: float = 0.5
    flag_probs: tuple = (0.5, 0.15, 0.35)
    checkpoint_every: int = 500  # steps between checkpoints when an out_dir is given
    dtype: str = "float32"  # training precision (float32 is ~1.6x faster here; evaluation uses the same)
    log_every: int = 50  # loss curve resolution in the report

    def __post_init__(self):
        fn = "TrainReaderConfig"
        for name in ("mode_probs", "flag_probs"):
            if isinstance(getattr(self, name), list):  # e.g. from JSON
                object.__setattr__(self, name, tuple(getattr(self, name)))
        check_choice(fn, "reader", self.reader, READERS)
        check_real(fn, "hop1_share", self.hop1_share, lo=0.0, hi=1.0)
        _check_probs(fn, "flag_probs", self.flag_probs, 3, "the flags (hard, zero, soft)")
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            check_int(fn, name, getattr(self, name), lo=1)
        check_int(fn, "warmup", self.warmup, lo=0)
        check_real(fn, "lr", self.lr, lo=0.0, lo_open=True)
        check_real(fn, "min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0)
        if self.clip_norm is not None:
            check_real(fn, "clip_norm", self.clip_norm, lo=0.0, lo_open=True)
        check_real(fn, "weight_decay", self.weight_decay, lo=0.0)
        _check_probs(fn, "mode_probs", self.mode_probs, len(MODES), f"the document sets {MODES}")
        check_choice(fn, "dtype", self.dtype, ("float32", "float64"))

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mode_probs"] = list(self.mode_probs)
        d["flag_probs"] = list(self.flag_probs)
        return d


@dataclass(frozen=True)
class RerankConfig:
    """Reranker training. One config serves every method; fields a method does not use are ignored by it."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-2
    clip_norm: float = 1.0
    dim: int = 64  # reranker embedding width D
    reranker: str = "bilinear"  # which model trains, from RERANKERS: the bilinear one or the set-aware listwise one
    init: str = "lexical"  # "lexical" (the sensible prior) or "random"
    k: int = 5  # documents kept at inference (and in the relaxed mask)
    eval_every: int = 25  # dev metrics for the learning curves
    n_train: int = 4000  # training examples the reranker sees (teachers are precomputed for these)
    # Gumbel Reranking: chosen by `mini-gumbel sweep` (best dev Recall@K over tau in {0.03, 0.1, 0.3, 1.0} and
    # kappa * std(w) in {1, 2, 5}, std(w) = 0.7361 for the scores of the reranker training starts from, within a
    # question; reranker seed 0, data seed 0, the two-pass reader): tau = 0.1, kappa * std(w) = 1 (dev Recall@5
    # 84.3; tau = 0.3, kappa * std(w) = 5, the earlier choice, 84.1: docs/results/sweep-gumbel.md)
    tau: float = 0.1
    kappa: float = 1.358
    relaxation: str = "max"
    noise: bool = True
    # the paper's objective V = E_S[L(1_S)]: each estimator's κ of the hard-set sampler softmax(κ w), and RLOO's
    # m sets per example and score function. Chosen by `mini-gumbel sweep --method exact|rloo` (best dev Recall@K,
    # ties by dev indirect Recall@K; reranker seed 0, data seed 0, two-pass reader; std(w) = 0.7361 for the scores
    # training starts from): exact κ·std(w) = 0.5 of {0.5, 1, 2, 5}; rloo κ·std(w) = 2, m = 16 of that × {4, 16}
    exact_kappa: float = 0.679
    rloo_kappa: float = 2.717
    samples: int = 16
    rloo_score: str = "set"
    tau_schedule: str = "constant"  # "constant" or "linear": tau_start -> tau over the run
    tau_start: float = 1.0
    # distillation baselines (Atlas defaults, docs/method.md §8)
    tau_s: float = 0.01
    tau_g: float = 0.01
    kl_reduction: str = "mean"
    emdr_per: str = "token"
    adist_mode: str = "atlas"
    supervised_form: str = "each"  # every gold document pushed up (not a ceiling: tuned LOOP and the exact
    # objective match it here); "any": multi-positive

    def __post_init__(self):
        fn = "RerankConfig"
        check_int(fn, "steps", self.steps, lo=0)
        for name in ("batch_size", "k", "eval_every", "n_train", "dim"):
            check_int(fn, name, getattr(self, name), lo=1)
        check_int(fn, "samples", self.samples, lo=2)
        check_choice(fn, "rloo_score", self.rloo_score, RLOO_SCORES)
        for name in ("exact_kappa", "rloo_kappa"):  # κ·w must not overflow for any score row: κ <= MAX_OBJECTIVE_KAPPA
            check_real(fn, name, getattr(self, name), lo=0.0, lo_open=True, hi=MAX_OBJECTIVE_KAPPA)
        for name in ("lr", "tau", "kappa", "tau_start", "tau_s", "tau_g"):
            check_real(fn, name, getattr(self, name), lo=0.0, lo_open=True)
        # values the relaxed top-K can use on the reranker's float64 scores (a τ of 1e-320 would pass the above
        # and fail only in the first training step)
        check_tau_kappa(fn, self.tau, self.kappa)
        check_tau_kappa(fn, self.tau_start, self.kappa, names=("tau_start", "kappa"))
        if self.clip_norm is not None:
            check_real(fn, "clip_norm", self.clip_norm, lo=0.0, lo_open=True)
        check_choice(fn, "relaxation", self.relaxation, RELAXATIONS)
        check_choice(fn, "tau_schedule", self.tau_schedule, ("constant", "linear"))
        check_choice(fn, "init", self.init, ("lexical", "random"))
        check_choice(fn, "reranker", self.reranker, RERANKERS)
        check_choice(fn, "emdr_per", self.emdr_per, ("token", "sequence"))
        check_choice(fn, "adist_mode", self.adist_mode, ("atlas", "fid"))
        check_choice(fn, "supervised_form", self.supervised_form, ("each", "any"))
        check_choice(fn, "kl_reduction", self.kl_reduction, ("mean", "batchmean", "sum"))
        check_bool(fn, "noise", self.noise)

    def tau_at(self, step: int) -> float:
        if self.tau_schedule == "constant" or self.steps <= 1:
            return self.tau
        frac = min(step / (self.steps - 1), 1.0)
        return self.tau_start + frac * (self.tau - self.tau_start)

    def replace(self, **kw) -> "RerankConfig":
        return dataclasses.replace(self, **kw)


# The baselines' values chosen by `mini-gumbel sweep --method M` on the dev split (the same budget and rule as
# Gumbel Reranking's tau/kappa: best dev Recall@5, ties by dev indirect Recall@5; reranker seed 0, data seed 0,
# the two-pass reader; docs/results/sweep-*.md). The demo reports each baseline with these ("<method> (tuned)"),
# and with --atlas-defaults also at Atlas's defaults. For EMDR and ADist the sweep chose Atlas's defaults
# themselves, so their tuned rows equal the default ones.
TUNED: dict = {
    'pdist': {'tau_g': 1.0, 'tau_s': 0.01},
    'emdr': {'emdr_per': 'token', 'tau_s': 0.01},
    'loop': {'tau_g': 1.0, 'tau_s': 1.0},
    'adist': {'tau_g': 0.01, 'tau_s': 0.01},
}

# Gumbel Reranking with the relaxation that draws its K samples without replacement (so Σ M = K and it cannot
# collapse onto one document as the paper's max can), at the values its own 12-point sweep chose
# (`mini-gumbel sweep --method gumbel --relaxation iterative`, the same budget and rule: tau = 0.1,
# kappa * std(w) = 1, dev Recall@5 83.6).
GUMBEL_ITERATIVE: dict = {"relaxation": "iterative", "tau": 0.1, "kappa": 1.358}


# The set-aware (listwise) reranker's values, chosen by the same sweeps run with `--reranker listwise` (the same rule;
# κ·std(w) ∈ {0.5, 1, 2} for exact and rloo; docs/results/sweep-*-listwise.md): Gumbel Reranking tau = 0.1,
# kappa * std(w) = 1 (dev Recall@5 85.6); exact kappa * std(w) = 0.5 (98.2); rloo kappa * std(w) = 0.5, m = 16 (97.5).
LISTWISE_DEFAULTS: dict = {"reranker": "listwise", "tau": 0.1, "kappa": 1.358, "exact_kappa": 0.679,
                           "rloo_kappa": 0.679, "samples": 16}
TUNED_LISTWISE: dict = {
    'pdist': {'tau_g': 1.0, 'tau_s': 0.01},
    'emdr': {'emdr_per': 'sequence', 'tau_s': 0.01},
    'loop': {'tau_g': 1.0, 'tau_s': 1.0},
    'adist': {'tau_g': 0.01, 'tau_s': 0.1},
}
# per reranker: the RerankConfig values its methods train with, and its baselines' tuned values
RERANKER_DEFAULTS: dict = {"bilinear": {}, "listwise": LISTWISE_DEFAULTS}
TUNED_BY_RERANKER: dict = {"bilinear": TUNED, "listwise": TUNED_LISTWISE}


class ExperimentConfig(NamedTuple):
    data: DataConfig
    reader: ReaderConfig
    reader_train: TrainReaderConfig
    rerank: RerankConfig


def fid_train_config(**overrides) -> TrainReaderConfig:
    """The one-pass FiD control's training: 4000 steps (it starts matching entities between steps 2000 and
    3000, varying between runs) on FID_MODE_PROBS."""
    return dataclasses.replace(TrainReaderConfig(reader="fid", steps=4000, mode_probs=FID_MODE_PROBS), **overrides)


def default_reader_config(data_cfg: DataConfig, reader: str = "two_pass", **overrides) -> ReaderConfig:
    """The reader this benchmark uses: vocabulary and lengths from the data, a small width.

    d=64, 2 heads of width 32 (~25% faster a step here than 4 of 16), d_ff 128, 2 + 2 layers, for both
    readers. The two-pass reader reads ``[w, ENT, SEP, doc]`` (READ_PREFIX + doc_len tokens) with the
    exact-match flag vector; the one-pass FiD reader reads ``question ⊕ SEP ⊕ doc``. None of many one-pass
    variants measured (learning rate, 3 decoder layers, width 128, more same-relation training sets, fewer
    names, up to 10000 steps) learned to follow a bridge across two documents: docs/method.md §6.6."""
    check_choice("default_reader_config", "reader", reader, READERS)
    if not isinstance(data_cfg, DataConfig):
        fail("default_reader_config", "data_cfg", data_cfg, "a DataConfig", TypeError)
    v = make_vocab(data_cfg)
    kw = dict(vocab_size=len(v), d_model=64, n_heads=2, n_enc_layers=2, n_dec_layers=2, d_ff=128,
              max_ctx_len=data_cfg.ctx_len, max_ans_len=data_cfg.ans_len, pad_id=v.pad_id, bos_id=v.bos_id,
              eos_id=v.eos_id)
    if reader == "two_pass":
        kw.update(exact_match=True, max_ctx_len=READ_PREFIX + data_cfg.doc_len)
    kw.update(overrides)
    return ReaderConfig(**kw)


def default_configs(reader: str = "two_pass") -> ExperimentConfig:
    """The demo's configuration for ``reader``: the data set's and the reader's defaults, RerankConfig()."""
    data = DataConfig()
    train = TrainReaderConfig() if reader == "two_pass" else fid_train_config()
    return ExperimentConfig(data, default_reader_config(data, reader), train, RerankConfig())


def quick_configs(reader: str = "two_pass") -> ExperimentConfig:
    """The smoke-test size of every command (--quick; CI): every code path in seconds. Its numbers mean
    nothing: the reader is far too small and too briefly trained to answer."""
    data = DataConfig(n_train=2000, n_dev=50, n_test=200)
    reader_train = TrainReaderConfig(reader=reader, steps=150, batch_size=16, warmup=20, checkpoint_every=50,
                                     mode_probs=(0.1, 0.1, 0.2, 0.4, 0.05, 0.15))
    reader_cfg = default_reader_config(data, reader, d_model=32, d_ff=64, n_enc_layers=1, n_dec_layers=2)
    rerank = RerankConfig(steps=20, batch_size=16, eval_every=10, n_train=128, dim=32)
    return ExperimentConfig(data, reader_cfg, reader_train, rerank)


def config_hash(obj) -> str:
    """16 hex digits of SHA-256 over ``obj`` as sorted JSON (non-JSON values by str): the one key of the
    reader cache and of the demo's per-run files."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
