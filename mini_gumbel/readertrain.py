"""Train the FiD reader on the built-in multi-hop data, evaluate it, cache it (``mini-gumbel train-reader``).

The reader is trained normally, teacher-forced on the answer, before any reranker sees it (METHOD.md §7).
Each training example shows it one of five document sets, applied as a hard 0/1 document mask through the
reader's DMA argument (which equals dropping the documents, METHOD.md §6):

    full          all N candidates
    subset        a random subset of random size 1..N (gold documents in it or not)
    gold_plus     every gold document plus a random number of random distractors
    gold_only     the gold documents alone
    distractors   a random non-empty subset of the distractors only (the answer is nowhere)
    gold_targets  the gold documents plus the target distractors (the question's relation, other entities):
                  only matching the entity (E1, or the bridge B named in gold 1) tells them apart

so that it reads whatever it is given and does not assume that the gold is present. The answer is always
the true one; when it is nowhere in the documents the best the reader can do is guess, which keeps it at
chance (the reader-must-read test).

Dimension letters: B batch, N candidates, K kept, L tokens per encoder sequence, T answer tokens.

    params, report = train_reader(DataConfig(), None, TrainReaderConfig(), seed=0, out_dir="runs/reader")
    table = evaluate_reader(params, reader_cfg, splits.test, k=5, seed=0)
    params, reader_cfg, report = load_or_train_reader(DataConfig(), seed=0)     # cached by config hash

Checkpoints hold parameters, the Adam state, the step and the training Generator's state, so a resumed run
reaches bit-identical parameters to an uninterrupted one with the same seed.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from .atomic import atomic_write_json
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .data import TARGET, DataConfig, Dataset, Splits, make_dataset
from .metrics import exact_match
from .optim import adam_init, adam_step, state_from_arrays, state_to_arrays
from .reader import ReaderConfig, greedy_decode, init_reader, reader_backward, reader_forward

__all__ = [
    "TrainReaderConfig",
    "MODES",
    "FORMAT_VERSION",
    "default_reader_config",
    "quick_configs",
    "document_masks",
    "lr_at",
    "train_reader",
    "evaluate_reader",
    "no_doc_ctx",
    "save_reader",
    "load_reader",
    "cache_key",
    "default_cache_dir",
    "load_or_train_reader",
    "format_em_table",
    "add_arguments",
    "run",
]

FORMAT_VERSION = 1  # bump when training changes so that cached readers are retrained
MODES = ("full", "subset", "gold_plus", "gold_only", "distractors", "gold_targets")
CONDITIONS = ("gold_only", "gold_in_k", "all_candidates", "random_k", "no_docs", "distractors_only")


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
        if isinstance(self.mode_probs, list):  # e.g. from JSON
            object.__setattr__(self, "mode_probs", tuple(self.mode_probs))
        for name in ("steps", "batch_size", "checkpoint_every", "log_every"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"TrainReaderConfig.{name}={v!r}: expected an int >= 1")
        if not isinstance(self.warmup, (int, np.integer)) or self.warmup < 0:
            raise ValueError(f"TrainReaderConfig.warmup={self.warmup!r}: expected an int >= 0")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"TrainReaderConfig.lr={self.lr!r}: expected a finite number > 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainReaderConfig.min_lr_ratio={self.min_lr_ratio!r}: expected a number in [0, 1]")
        if self.clip_norm is not None and not self.clip_norm > 0:
            raise ValueError(f"TrainReaderConfig.clip_norm={self.clip_norm!r}: expected None or a number > 0")
        if not self.weight_decay >= 0:
            raise ValueError(f"TrainReaderConfig.weight_decay={self.weight_decay!r}: expected >= 0")
        p = self.mode_probs
        if (not isinstance(p, tuple) or len(p) != len(MODES) or any(not x >= 0 for x in p)
                or abs(sum(p) - 1.0) > 1e-9):
            raise ValueError(f"TrainReaderConfig.mode_probs={p!r}: expected {len(MODES)} non-negative numbers "
                             f"summing to 1, for {MODES}")
        if self.dtype not in ("float32", "float64"):
            raise ValueError(f"TrainReaderConfig.dtype={self.dtype!r}: expected 'float32' or 'float64'")

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["mode_probs"] = list(self.mode_probs)
        return d


def default_reader_config(data_cfg: DataConfig, **overrides) -> ReaderConfig:
    """The reader this benchmark uses: vocabulary and lengths from the data, a small width (chosen so the
    default training fits in ~3 minutes on 2 cores; see bench/bench_train_reader.py).

    Two heads of width 32 rather than four of 16: ~25% faster a step here, and the only change among those
    measured (learning rate, 3 decoder layers, width 128, more same-relation training sets, fewer names,
    up to 5000 steps) that made the reader match the question entity among distractors reliably
    (single-hop EM with all N candidates 0.85-0.95 at 2500 steps, 1.00 by 4000; the step at which it starts
    matching varies between runs, 2000-3000, so the default trains 4000 steps). None of them taught it
    to follow a bridge across two documents within the budget: see the data card in mini_gumbel.data."""
    from .data import make_vocab

    v = make_vocab(data_cfg)
    kw = dict(vocab_size=len(v), d_model=64, n_heads=2, n_enc_layers=2, n_dec_layers=2, d_ff=128,
              max_ctx_len=data_cfg.ctx_len, max_ans_len=data_cfg.ans_len, pad_id=v.pad_id, bos_id=v.bos_id,
              eos_id=v.eos_id)
    kw.update(overrides)
    return ReaderConfig(**kw)


def quick_configs() -> tuple:
    """A smoke-test size (seconds): (DataConfig, TrainReaderConfig, reader overrides)."""
    return (DataConfig(n_train=2000, n_dev=50, n_test=200),
            TrainReaderConfig(steps=150, batch_size=16, warmup=20, checkpoint_every=50,
                              mode_probs=(0.1, 0.1, 0.2, 0.4, 0.05, 0.15)),
            dict(d_model=32, d_ff=64, n_enc_layers=1, n_dec_layers=2))


# ----------------------------------------------------------------------------------------- document sets
def document_masks(gold: np.ndarray, modes: np.ndarray, rng: np.random.Generator, dtype=np.float64, *,
                   targets: Optional[np.ndarray] = None) -> np.ndarray:
    """Hard 0/1 document masks (B, N) for the training modes (indices into MODES), at least one 1 per row.

    gold (B, N) bool; targets (B, N) bool marks the target distractors (Dataset.kind == TARGET; None: none).
    A row without distractors (all gold) falls back to the gold in the distractors mode.
    """
    B, N = gold.shape
    u = rng.random((B, N))  # (B, N) random priorities
    size = rng.integers(1, N + 1, size=B)  # (B,) subset sizes
    rank = np.argsort(np.argsort(u, axis=1), axis=1)  # (B, N) random permutation ranks
    subset = rank < size[:, None]  # (B, N) a random subset of `size` documents
    n_dis = (~gold).sum(1)  # (B,)
    # gold plus a uniform number 0..n_dis of random distractors: rank distractors only
    u_dis = np.where(gold, np.inf, u)  # (B, N)
    rank_dis = np.argsort(np.argsort(u_dis, axis=1), axis=1)  # (B, N) distractors first, random order
    take = (rng.random(B) * (n_dis + 1)).astype(np.int64)  # (B,) in 0..n_dis
    gold_plus = gold | (rank_dis < take[:, None])  # (B, N)
    take_d = 1 + (rng.random(B) * np.maximum(n_dis, 1)).astype(np.int64)  # (B,) in 1..n_dis
    distractors = ~gold & (rank_dis < take_d[:, None])  # (B, N)
    distractors = np.where((n_dis == 0)[:, None], gold, distractors)
    m = np.select(
        [modes[:, None] == i for i in range(len(MODES))],
        [np.ones((B, N), bool), subset, gold_plus, gold, distractors,
         gold if targets is None else gold | targets],
    )  # (B, N)
    return m.astype(dtype)


def lr_at(step: int, cfg: TrainReaderConfig) -> float:
    """Linear warm-up over cfg.warmup steps, then cosine decay to lr * min_lr_ratio at the last step."""
    if cfg.warmup and step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    span = max(cfg.steps - cfg.warmup, 1)
    frac = min(max(step - cfg.warmup, 0) / span, 1.0)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))


# ----------------------------------------------------------------------------------------- training
def _ckpt_config(data_cfg, reader_cfg, train_cfg, seed) -> dict:
    return {"what": "mini_gumbel.readertrain state", "format_version": FORMAT_VERSION, "seed": int(seed),
            "data": data_cfg.as_dict(), "reader": dataclasses.asdict(reader_cfg), "train": train_cfg.as_dict()}


def train_reader(data_cfg: Optional[DataConfig] = None, reader_cfg: Optional[ReaderConfig] = None,
                 train_cfg: Optional[TrainReaderConfig] = None, *, seed: int = 0, out_dir=None,
                 resume: bool = True, progress: bool = True, splits: Optional[Splits] = None,
                 max_steps_this_call: Optional[int] = None, evaluate: bool = True):
    """Train a reader; returns (params, report).

    data_cfg / reader_cfg / train_cfg default to DataConfig(), default_reader_config(data_cfg) and
    TrainReaderConfig(). The data is make_dataset(data_cfg, seed) unless ``splits`` (made from the same
    config) is given. With ``out_dir``, a checkpoint ``train_state.npz`` is written atomically every
    ``checkpoint_every`` steps, at the end, and on KeyboardInterrupt; with ``resume`` an existing one (of
    the same configs and seed, else CheckpointError) is continued. ``max_steps_this_call`` stops early
    after that many steps (checkpointed): the run can be continued later. With ``evaluate`` the report
    holds evaluate_reader on the test split (K = data_cfg.k).
    """
    data_cfg = DataConfig() if data_cfg is None else data_cfg
    train_cfg = TrainReaderConfig() if train_cfg is None else train_cfg
    reader_cfg = default_reader_config(data_cfg) if reader_cfg is None else reader_cfg
    for name, v, typ in (("data_cfg", data_cfg, DataConfig), ("reader_cfg", reader_cfg, ReaderConfig),
                         ("train_cfg", train_cfg, TrainReaderConfig)):
        if not isinstance(v, typ):
            raise TypeError(f"train_reader: {name} has type {type(v).__name__}; expected {typ.__name__}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"train_reader: seed={seed!r}; expected an int >= 0")
    if max_steps_this_call is not None and max_steps_this_call < 0:
        raise ValueError(f"train_reader: max_steps_this_call={max_steps_this_call!r}; expected None or >= 0")
    if splits is None:
        splits = make_dataset(data_cfg, seed)
    ds = splits.train
    if len(splits.vocab) != reader_cfg.vocab_size:
        raise ValueError(f"train_reader: reader_cfg.vocab_size={reader_cfg.vocab_size}; expected the data's "
                         f"vocabulary size {len(splits.vocab)}")
    if ds.ctx.shape[2] > reader_cfg.max_ctx_len or ds.ans_in.shape[1] > reader_cfg.max_ans_len:
        raise ValueError(f"train_reader: reader_cfg max_ctx_len={reader_cfg.max_ctx_len}, max_ans_len="
                         f"{reader_cfg.max_ans_len}; expected >= the data's L={ds.ctx.shape[2]}, T={ds.ans_in.shape[1]}")
    dtype = np.dtype(train_cfg.dtype)
    config = _ckpt_config(data_cfg, reader_cfg, train_cfg, seed)
    ckpt = None if out_dir is None else Path(out_dir) / "train_state.npz"

    params = init_reader(reader_cfg, seed, dtype=dtype)
    state = adam_init(params)
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7261]))  # batches and masks
    step, curve, train_seconds = 0, [], 0.0
    run_loss, n_run = 0.0, 0  # the loss-curve bucket in progress
    if ckpt is not None and resume and ckpt.exists():
        params, _, extra, arrays = load_checkpoint(ckpt, expect_config=config, like=params, with_arrays=True)
        state = state_from_arrays(arrays)
        step, curve, train_seconds = int(extra["step"]), [list(x) for x in extra["curve"]], float(extra["seconds"])
        rng.bit_generator.state = extra["rng"]
        run_loss, n_run = float(extra["run_loss"]), int(extra["n_run"])

    def save(snap):
        if ckpt is None:
            return
        p, st, k, rng_state, cv, rl, nr = snap
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        extra = {"step": k, "curve": cv, "seconds": train_seconds, "rng": rng_state, "run_loss": rl, "n_run": nr}
        save_checkpoint(ckpt, p, config, extra=extra, arrays=state_to_arrays(st))

    end = train_cfg.steps if max_steps_this_call is None else min(train_cfg.steps, step + max_steps_this_call)
    bar = None
    if progress and step < end:
        from tqdm.auto import tqdm

        bar = tqdm(total=train_cfg.steps, initial=step, desc="train reader", unit="step", leave=False,
                   file=sys.stderr, dynamic_ncols=True)
    probs = np.asarray(train_cfg.mode_probs, np.float64)
    ema = None
    # Everything a resume needs, replaced in one assignment once a step is complete, so that an interrupt
    # (KeyboardInterrupt can land between any two lines) always saves a consistent state.
    committed = (params, state, step, rng.bit_generator.state, curve, run_loss, n_run)
    t0 = time.perf_counter()
    try:
        while step < end:
            idx = rng.integers(0, len(ds), size=train_cfg.batch_size)  # (B,)
            b = ds.batch(idx)
            modes = rng.choice(len(MODES), size=len(idx), p=probs)  # (B,)
            mask = document_masks(b.gold, modes, rng, dtype, targets=b.kind == TARGET)  # (B, N)
            loss, cache = reader_forward(params, reader_cfg, b.ctx, b.ans_in, b.ans_out, mask)
            grads, _ = reader_backward(1.0, cache)
            new_params, new_state, _ = adam_step(params, grads, state, lr=lr_at(step, train_cfg),
                                                 weight_decay=train_cfg.weight_decay, clip_norm=train_cfg.clip_norm)
            loss = float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"train_reader: loss became {loss} at step {step}")
            rl, nr, cv = run_loss + loss, n_run + 1, curve
            if (step + 1) % train_cfg.log_every == 0 or step + 1 == train_cfg.steps:
                cv, rl, nr = curve + [[step + 1, round(rl / nr, 5)]], 0.0, 0
            committed = (new_params, new_state, step + 1, rng.bit_generator.state, cv, rl, nr)
            params, state, step, _, curve, run_loss, n_run = committed
            ema = loss if ema is None else 0.98 * ema + 0.02 * loss
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
            if step % train_cfg.checkpoint_every == 0 and step < end:
                train_seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                save(committed)
    except KeyboardInterrupt:
        train_seconds += time.perf_counter() - t0
        save(committed)
        raise
    finally:
        if bar is not None:
            bar.close()
    train_seconds += time.perf_counter() - t0
    save(committed)
    report = {
        "format_version": FORMAT_VERSION,
        "seed": int(seed),
        "data_config": data_cfg.as_dict(),
        "reader_config": dataclasses.asdict(reader_cfg),
        "train_config": train_cfg.as_dict(),
        "steps_done": step,
        "finished": step >= train_cfg.steps,
        "train_seconds": round(train_seconds, 2),
        "final_loss": curve[-1][1] if curve else None,
        "loss_curve": curve,
        "chance_em": 1.0 / data_cfg.n_names,
    }
    if evaluate:
        t1 = time.perf_counter()
        report["test"] = evaluate_reader(params, reader_cfg, splits.test, data_cfg.k, seed)
        report["eval_seconds"] = round(time.perf_counter() - t1, 2)
    return params, report


# ----------------------------------------------------------------------------------------- evaluation
def no_doc_ctx(ds: Dataset, pad_id: int = 0, sep_id: int = 3) -> np.ndarray:
    """The question alone as the only encoder sequence: (S, 1, L) = question ⊕ SEP, padded."""
    S, N, L = ds.ctx.shape
    q = ds.question
    n_q = (q != pad_id).sum(1)  # (S,)
    pos = np.arange(L)[None, :]  # (1, L)
    qpad = np.concatenate([q, np.full((S, max(L - q.shape[1], 0)), pad_id, q.dtype)], 1)[:, :L]  # (S, L)
    out = np.where(pos < n_q[:, None], qpad, pad_id)  # (S, L) question tokens are left-packed
    out = np.where(pos == n_q[:, None], sep_id, out)  # (S, L)
    return out[:, None, :]  # (S, 1, L)


def _random_k(S, N, k, rng, dtype):
    u = rng.random((S, N))
    rank = np.argsort(np.argsort(u, axis=1), axis=1)
    return (rank < k).astype(dtype)  # (S, N)


def _gold_in_k(gold, k, rng, dtype):
    S, N = gold.shape
    u = np.where(gold, -1.0, rng.random((S, N)))  # gold first, then distractors in random order
    rank = np.argsort(np.argsort(u, axis=1), axis=1)
    return ((rank < k) | gold).astype(dtype)  # (S, N) every gold document, K in all when K >= #gold


def evaluate_reader(params: dict, reader_cfg: ReaderConfig, dataset: Dataset, k: int, seed: int = 0, *,
                    batch_size: int = 250) -> dict:
    """Greedy-decoding exact match on ``dataset`` under five document conditions, per question type.

    gold_only: the gold documents alone; gold_in_k: the gold documents plus random distractors up to K (what
    a perfect reranker hands over); all_candidates: all N; random_k: K uniformly random candidates;
    no_docs: the question alone as the only sequence (chance); distractors_only: every non-gold candidate.
    Returns {condition: {"all": em, "single_hop": em, "two_hop": em}} plus "n" (question counts),
    "k" and "random_k_has_all_gold" (the share of random-K sets that hold every gold document).
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"evaluate_reader: dataset has type {type(dataset).__name__}; expected data.Dataset")
    S, N, _ = dataset.ctx.shape
    if not isinstance(k, (int, np.integer)) or not 1 <= k <= N:
        raise ValueError(f"evaluate_reader: k={k!r}; expected an int in [1, N={N}]")
    dtype = params["tok_emb"].dtype
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x6576]))
    masks = {
        "gold_only": dataset.gold.astype(dtype),
        "all_candidates": np.ones((S, N), dtype),
        "random_k": _random_k(S, N, k, rng, dtype),
        "gold_in_k": _gold_in_k(dataset.gold, k, rng, dtype),
        "distractors_only": (~dataset.gold).astype(dtype),
    }
    T = dataset.ans_out.shape[1]
    em = {}
    for cond in CONDITIONS:
        hits = np.zeros(S)
        for lo in range(0, S, batch_size):
            sl = slice(lo, min(lo + batch_size, S))
            if cond == "no_docs":
                ctx, m = no_doc_ctx(dataset.batch(sl), reader_cfg.pad_id), None
            else:
                ctx, m = dataset.ctx[sl], masks[cond][sl]
            pred = greedy_decode(params, reader_cfg, ctx, m, max_len=T)  # (b, T')
            hits[sl] = [exact_match(p, g, pad_id=reader_cfg.pad_id, eos_id=reader_cfg.eos_id)
                        for p, g in zip(np.asarray(pred), dataset.ans_out[sl])]
        em[cond] = hits
    one, two = dataset.hops == 1, dataset.hops == 2
    out = {}
    for cond, h in em.items():
        out[cond] = {"all": float(h.mean()),
                     "single_hop": float(h[one].mean()) if one.any() else None,
                     "two_hop": float(h[two].mean()) if two.any() else None}
    out["n"] = {"all": int(S), "single_hop": int(one.sum()), "two_hop": int(two.sum())}
    out["k"] = int(k)
    out["random_k_has_all_gold"] = float(((masks["random_k"] > 0) | ~dataset.gold).all(1).mean())
    return out


def format_em_table(ev: dict) -> str:
    """A markdown table of evaluate_reader's output."""
    lines = [f"| documents given to the reader | all ({ev['n']['all']}) | single-hop ({ev['n']['single_hop']}) | "
             f"two-hop ({ev['n']['two_hop']}) |", "|---|---:|---:|---:|"]
    names = {"gold_only": "gold only", "gold_in_k": f"gold + random to K={ev['k']}", "all_candidates": "all N candidates", "random_k": f"K={ev['k']} random",
             "no_docs": "none (question only)", "distractors_only": "distractors only"}
    fmt = lambda x: "-" if x is None else f"{x:.3f}"  # noqa: E731
    for cond in CONDITIONS:
        r = ev[cond]
        lines.append(f"| {names[cond]} | {fmt(r['all'])} | {fmt(r['single_hop'])} | {fmt(r['two_hop'])} |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------- files and cache
def save_reader(path, params: dict, reader_cfg: ReaderConfig, report: Optional[dict] = None) -> None:
    """The trained reader as one atomic checkpoint (params + reader config; the report as extra)."""
    save_checkpoint(path, params, dataclasses.asdict(reader_cfg), extra=report)


def load_reader(path, *, expect_config: Optional[ReaderConfig] = None):
    """(params, ReaderConfig, report) from save_reader's file; CheckpointError if corrupt or mismatched."""
    want = None if expect_config is None else dataclasses.asdict(expect_config)
    params, config, extra = load_checkpoint(path, expect_config=want)
    try:
        cfg = ReaderConfig(**config)
    except TypeError as e:
        raise CheckpointError(f"load_reader: {os.fspath(path)!r} holds no reader config ({e})") from e
    return params, cfg, extra


def cache_key(data_cfg: DataConfig, reader_cfg: ReaderConfig, train_cfg: TrainReaderConfig, seed: int) -> str:
    """A hash of everything that determines the trained reader (checkpoint_every and log_every excluded)."""
    t = train_cfg.as_dict()
    t.pop("checkpoint_every")
    blob = json.dumps({"data": data_cfg.as_dict(), "reader": dataclasses.asdict(reader_cfg), "train": t,
                       "seed": int(seed), "format_version": FORMAT_VERSION}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def default_cache_dir() -> Path:
    """$MINI_GUMBEL_CACHE, else ~/.cache/mini_gumbel."""
    env = os.environ.get("MINI_GUMBEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mini_gumbel"


def load_or_train_reader(data_cfg: Optional[DataConfig] = None, reader_cfg: Optional[ReaderConfig] = None,
                         train_cfg: Optional[TrainReaderConfig] = None, *, seed: int = 0, cache_dir=None,
                         progress: bool = True, splits: Optional[Splits] = None):
    """(params, reader_cfg, report): from the cache <cache_dir>/reader-<hash>/reader.npz when present,
    else trained (resuming an interrupted training in the same folder) and stored there."""
    data_cfg = DataConfig() if data_cfg is None else data_cfg
    train_cfg = TrainReaderConfig() if train_cfg is None else train_cfg
    reader_cfg = default_reader_config(data_cfg) if reader_cfg is None else reader_cfg
    folder = Path(cache_dir if cache_dir is not None else default_cache_dir()) / \
        f"reader-{cache_key(data_cfg, reader_cfg, train_cfg, seed)}"
    path = folder / "reader.npz"
    if path.exists():
        try:
            params, cfg, report = load_reader(path, expect_config=reader_cfg)
            return params, cfg, report
        except CheckpointError as e:
            print(f"load_or_train_reader: ignoring unreadable cache entry ({e}); retraining", file=sys.stderr)
    params, report = train_reader(data_cfg, reader_cfg, train_cfg, seed=seed, out_dir=folder, resume=True,
                                  progress=progress, splits=splits)
    save_reader(path, params, reader_cfg, report)
    atomic_write_json(folder / "reader_report.json", report)
    try:
        (folder / "train_state.npz").unlink()  # the finished reader replaces the training state
    except FileNotFoundError:
        pass
    return params, reader_cfg, report


# ----------------------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the data set, the initialisation and the batch/mask order")
    parser.add_argument("--steps", type=int, default=argparse.SUPPRESS,
                        help=f"training steps (default: {TrainReaderConfig.steps}; {quick_configs()[1].steps} "
                             "with --quick)")
    parser.add_argument("--out", default="runs/reader",
                        help="folder for reader.npz, reader_report.json and the resumable train_state.npz")
    parser.add_argument("--resume", action=argparse.BooleanOptionalAction, default=True,
                        help="continue from <out>/train_state.npz when it exists (it must match the "
                             "configuration); --no-resume starts over")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test size: a small data set and reader, a few seconds; far from the EM targets")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS,
                        help="no progress bar")


def run(args) -> int:
    if args.quick:
        data_cfg, train_cfg, overrides = quick_configs()
    else:
        data_cfg, train_cfg, overrides = DataConfig(), TrainReaderConfig(), {}
    if getattr(args, "steps", None) is not None:
        if args.steps < 1:
            raise SystemExit(f"train-reader: --steps={args.steps}; expected >= 1")
        train_cfg = dataclasses.replace(train_cfg, steps=args.steps,
                                        warmup=min(train_cfg.warmup, max(args.steps // 10, 0)))
    reader_cfg = default_reader_config(data_cfg, **overrides)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    params, report = train_reader(data_cfg, reader_cfg, train_cfg, seed=args.seed, out_dir=out,
                                  resume=args.resume, progress=getattr(args, "progress", True))
    report["total_seconds_this_call"] = round(time.perf_counter() - t0, 2)
    save_reader(out / "reader.npz", params, reader_cfg, report)
    atomic_write_json(out / "reader_report.json", report)
    ev = report["test"]
    print(f"reader trained for {report['steps_done']} steps in {report['train_seconds']:.1f} s "
          f"(final loss {report['final_loss']}); test split, K={ev['k']}, chance EM ~{report['chance_em']:.3f}")
    print(format_em_table(ev))
    print(f"random K sets holding every gold document: {ev['random_k_has_all_gold']:.3f}")
    print(f"wrote {out / 'reader.npz'} and {out / 'reader_report.json'}")
    return 0
