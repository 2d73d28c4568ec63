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

import numpy as np

from ..data import DataConfig, make_vocab
from ..gumbel import RELAXATIONS
from ..reader import ReaderConfig
from ..validate import check_choice, check_int, check_real, fail

__all__ = ["MODES", "METHODS", "TrainReaderConfig", "RerankConfig", "ExperimentConfig", "default_reader_config",
           "default_configs", "quick_configs", "config_hash"]

# the document sets the reader is trained on (mini_gumbel.experiment.train_reader.document_masks)
MODES = ("full", "subset", "gold_plus", "gold_only", "distractors", "gold_targets")
# the ways to train the reranker (mini_gumbel.experiment.train_reranker)
METHODS = ("gumbel", "supervised", "pdist", "emdr", "loop", "adist")


@dataclass(frozen=True)
class TrainReaderConfig:
    """How the reader is trained. ``mode_probs`` are the probabilities of the document sets in ``MODES``."""

    steps: int = 4000
    batch_size: int = 32
    lr: float = 2e-3
    warmup: int = 100  # linear warm-up steps, then cosine decay to lr * min_lr_ratio at the last step
    min_lr_ratio: float = 0.05
    clip_norm: float = 1.0
    weight_decay: float = 0.0
    mode_probs: tuple = (0.2, 0.2, 0.35, 0.15, 0.1, 0.0)  # full, subset, gold_plus, gold_only, distractors,
    # gold_targets (off by default: at 2000 steps it did not speed up entity matching)
    checkpoint_every: int = 500  # steps between checkpoints when an out_dir is given
    dtype: str = "float32"  # training precision (float32 is ~1.6x faster here; evaluation uses the same)
    log_every: int = 50  # loss curve resolution in the report

    def __post_init__(self):
        fn = "TrainReaderConfig"
        if isinstance(self.mode_probs, list):  # e.g. from JSON
            object.__setattr__(self, "mode_probs", tuple(self.mode_probs))
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            check_int(fn, name, getattr(self, name), lo=1)
        check_int(fn, "warmup", self.warmup, lo=0)
        check_real(fn, "lr", self.lr, lo=0.0, lo_open=True)
        check_real(fn, "min_lr_ratio", self.min_lr_ratio, lo=0.0, hi=1.0)
        if self.clip_norm is not None:
            check_real(fn, "clip_norm", self.clip_norm, lo=0.0, lo_open=True)
        check_real(fn, "weight_decay", self.weight_decay, lo=0.0)
        p = self.mode_probs
        if (not isinstance(p, tuple) or len(p) != len(MODES) or any(not x >= 0 for x in p)
                or abs(sum(p) - 1.0) > 1e-9):
            fail(fn, "mode_probs", p, f"{len(MODES)} non-negative numbers summing to 1, for {MODES}")
        check_choice(fn, "dtype", self.dtype, ("float32", "float64"))

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mode_probs"] = list(self.mode_probs)
        return d


@dataclass(frozen=True)
class RerankConfig:
    """Reranker training. One config serves every method; fields a method does not use are ignored by it."""

    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-2
    clip_norm: float = 1.0
    dim: int = 64  # reranker embedding width D
    init: str = "lexical"  # "lexical" (the sensible prior) or "random"
    k: int = 5  # documents kept at inference (and in the relaxed mask)
    eval_every: int = 25  # dev metrics for the learning curves
    n_train: int = 4000  # training examples the reranker sees (teachers are precomputed for these)
    # Gumbel Reranking: chosen by `mini-gumbel sweep` (best dev Recall@K over tau in {0.1, 0.3, 0.5, 1.0} and
    # kappa * std(w) in {1, 2, 5}, std(w) = 0.735 for the untrained scores within a question; seed 0)
    tau: float = 1.0
    kappa: float = 1.36
    relaxation: str = "max"
    noise: bool = True
    tau_schedule: str = "constant"  # "constant" or "linear": tau_start -> tau over the run
    tau_start: float = 1.0
    # distillation baselines (Atlas defaults, docs/method.md §8)
    tau_s: float = 0.01
    tau_g: float = 0.01
    kl_reduction: str = "mean"
    emdr_per: str = "token"
    adist_mode: str = "atlas"

    def __post_init__(self):
        fn = "RerankConfig"
        check_int(fn, "steps", self.steps, lo=0)
        for name in ("batch_size", "k", "eval_every", "n_train", "dim"):
            check_int(fn, name, getattr(self, name), lo=1)
        for name in ("lr", "tau", "kappa", "tau_start", "tau_s", "tau_g"):
            check_real(fn, name, getattr(self, name), lo=0.0, lo_open=True)
        if self.clip_norm is not None:
            check_real(fn, "clip_norm", self.clip_norm, lo=0.0, lo_open=True)
        check_choice(fn, "relaxation", self.relaxation, RELAXATIONS)
        check_choice(fn, "tau_schedule", self.tau_schedule, ("constant", "linear"))
        check_choice(fn, "init", self.init, ("lexical", "random"))
        check_choice(fn, "emdr_per", self.emdr_per, ("token", "sequence"))
        check_choice(fn, "adist_mode", self.adist_mode, ("atlas", "fid"))
        check_choice(fn, "kl_reduction", self.kl_reduction, ("mean", "batchmean", "sum"))
        if not isinstance(self.noise, (bool, np.bool_)):
            fail(fn, "noise", self.noise, "True or False", TypeError)

    def tau_at(self, step: int) -> float:
        if self.tau_schedule == "constant" or self.steps <= 1:
            return self.tau
        frac = min(step / (self.steps - 1), 1.0)
        return self.tau_start + frac * (self.tau - self.tau_start)

    def replace(self, **kw) -> "RerankConfig":
        return dataclasses.replace(self, **kw)


class ExperimentConfig(NamedTuple):
    data: DataConfig
    reader: ReaderConfig
    reader_train: TrainReaderConfig
    rerank: RerankConfig


def default_reader_config(data_cfg: DataConfig, **overrides) -> ReaderConfig:
    """The reader this benchmark uses: vocabulary and lengths from the data, a small width (chosen so the
    default training fits in a few minutes on 2 cores; see tools/bench_train_reader.py).

    Two heads of width 32 rather than four of 16: ~25% faster a step here, and the only change among those
    measured (learning rate, 3 decoder layers, width 128, more same-relation training sets, fewer names,
    up to 5000 steps) that made the reader match the question entity among distractors reliably
    (single-hop EM with all N candidates 0.85-0.95 at 2500 steps, 1.00 by 4000; the step at which it starts
    matching varies between runs, 2000-3000, so the default trains 4000 steps). None of them taught it
    to follow a bridge across two documents within the budget: see the data card in mini_gumbel.data."""
    v = make_vocab(data_cfg)
    kw = dict(vocab_size=len(v), d_model=64, n_heads=2, n_enc_layers=2, n_dec_layers=2, d_ff=128,
              max_ctx_len=data_cfg.ctx_len, max_ans_len=data_cfg.ans_len, pad_id=v.pad_id, bos_id=v.bos_id,
              eos_id=v.eos_id)
    kw.update(overrides)
    return ReaderConfig(**kw)


def default_configs() -> ExperimentConfig:
    """The demo's configuration: the data set's and the reader's defaults, and RerankConfig()."""
    data = DataConfig()
    return ExperimentConfig(data, default_reader_config(data), TrainReaderConfig(), RerankConfig())


def quick_configs() -> ExperimentConfig:
    """The smoke-test size of every command (--quick; CI): every code path in seconds. Its numbers mean
    nothing: the reader is far too small and too briefly trained to answer."""
    data = DataConfig(n_train=2000, n_dev=50, n_test=200)
    reader_train = TrainReaderConfig(steps=150, batch_size=16, warmup=20, checkpoint_every=50,
                                     mode_probs=(0.1, 0.1, 0.2, 0.4, 0.05, 0.15))
    reader = default_reader_config(data, d_model=32, d_ff=64, n_enc_layers=1, n_dec_layers=2)
    rerank = RerankConfig(steps=20, batch_size=16, eval_every=10, n_train=128, dim=32)
    return ExperimentConfig(data, reader, reader_train, rerank)


def config_hash(obj) -> str:
    """16 hex digits of SHA-256 over ``obj`` as sorted JSON (non-JSON values by str): the one key of the
    reader cache and of the demo's per-run files."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
