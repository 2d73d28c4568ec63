"""Train the FiD reader on the built-in multi-hop data (``mini-gumbel train-reader``).

The reader is trained normally, teacher-forced on the answer, before any reranker sees it (docs/method.md §7.1).
Each training example shows it one of the document sets in ``configs.MODES``, applied as a hard 0/1
document mask through the reader's DMA argument (which equals dropping the documents, docs/method.md §6):

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

Checkpoints hold parameters, the Adam state, the step and the training Generator's state, so a resumed run
reaches bit-identical parameters to an uninterrupted one with the same seed.
"""
from __future__ import annotations

import dataclasses
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple, Optional

import numpy as np

from ..checkpoint import load_checkpoint, save_checkpoint
from ..data import TARGET, DataConfig, Splits, make_dataset
from ..optim import adam_init, adam_step, state_from_arrays, state_to_arrays
from ..reader import ReaderConfig, init_reader, reader_backward, reader_forward
from ..two_pass_reader import READ_PREFIX, entity_flags, soft_flags, two_pass_first_hop
from ..validate import check_int, check_type, fail
from .configs import MODES, TrainReaderConfig, default_reader_config
from .evaluate import evaluate_reader
from .readers import two_pass_inputs

__all__ = ["FORMAT_VERSION", "TrainState", "document_masks", "one_read_each", "lr_at", "train_reader"]

FORMAT_VERSION = 2  # bump when training changes so that cached readers are retrained


class TrainState(NamedTuple):
    """Everything a resume needs, replaced in one assignment once a step is complete, so that an interrupt
    (KeyboardInterrupt can land between any two lines) always saves a consistent state."""

    params: dict
    adam: object  # optim.AdamState
    step: int  # completed steps
    rng_state: dict  # the training Generator's bit_generator.state after `step` steps
    curve: list  # [[step, mean loss over the last log_every steps], ...]
    run_loss: float  # the loss-curve bucket in progress: sum and count
    n_run: int


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


def one_read_each(params, cfg: ReaderConfig, b, mask, rng: np.random.Generator, train_cfg: TrainReaderConfig):
    """The two-pass reader's pretraining batch: ONE teacher-forced read per example -> (ctx, flags, ans_in,
    ans_out), each (B, N, L) or (B, T).

    single-hop  read (q_r, flags on E1) -> A
    two-hop     with probability hop1_share read 1: (q_inner, flags on E1) -> B; otherwise read 2:
                (q_outer, flags) -> A with the flags hard on B, all zero (the reader must then find the r2
                fact on its own), or soft from the current model's own read 1 on the same documents (no
                gradient: what read 2 sees at inference), with probabilities flag_probs.
    """
    x = two_pass_inputs(b)
    B = len(b)
    two = b.hops == 2  # (B,)
    hop1 = ~two | (rng.random(B) < train_cfg.hop1_share)  # (B,) rows that train read 1
    kind = rng.choice(3, size=B, p=np.asarray(train_cfg.flag_probs, np.float64))  # (B,) hard / zero / soft
    dtype = params["tok_emb"].dtype
    flags2 = np.where((kind == 0)[:, None, None], entity_flags(x.ctx2, b.bridge), 0.0)  # (B, N, L)
    soft = ~hop1 & (kind == 2)  # (B,)
    if soft.any():
        p1 = two_pass_first_hop(params, cfg, x.ctx1[soft], x.flags1[soft].astype(dtype), mask[soft])  # (b, V)
        flags2[soft] = soft_flags(x.ctx2[soft], np.asarray(p1))
    h = hop1[:, None, None]  # (B, 1, 1)
    ctx = np.where(h, x.ctx1, x.ctx2)  # (B, N, L)
    flags = np.where(h, x.flags1, flags2).astype(dtype)  # (B, N, L)
    ans_in = np.where(hop1[:, None], x.ans1_in, x.ans_in)  # (B, T)
    ans_out = np.where(hop1[:, None], x.ans1_out, x.ans_out)  # (B, T)
    return ctx, flags, ans_in, ans_out


# ----------------------------------------------------------------------------------------- training
def _ckpt_config(data_cfg, reader_cfg, train_cfg, seed) -> dict:
    return {"what": "mini_gumbel.experiment.train_reader state", "format_version": FORMAT_VERSION, "seed": int(seed),
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
    fn = "train_reader"
    data_cfg = DataConfig() if data_cfg is None else data_cfg
    train_cfg = TrainReaderConfig() if train_cfg is None else train_cfg
    reader_cfg = default_reader_config(data_cfg, train_cfg.reader) if reader_cfg is None else reader_cfg
    check_type(fn, "data_cfg", data_cfg, DataConfig)
    check_type(fn, "reader_cfg", reader_cfg, ReaderConfig)
    check_type(fn, "train_cfg", train_cfg, TrainReaderConfig)
    if reader_cfg.exact_match != (train_cfg.reader == "two_pass"):
        fail(fn, "reader_cfg.exact_match", reader_cfg.exact_match,
             f"{train_cfg.reader == 'two_pass'} for train_cfg.reader={train_cfg.reader!r}")
    check_int(fn, "seed", seed, lo=0)
    if max_steps_this_call is not None:
        check_int(fn, "max_steps_this_call", max_steps_this_call, lo=0)
    splits = make_dataset(data_cfg, seed) if splits is None else splits
    ds = splits.train
    if len(splits.vocab) != reader_cfg.vocab_size:
        fail(fn, "reader_cfg.vocab_size", reader_cfg.vocab_size, f"the data's vocabulary size {len(splits.vocab)}")
    L = READ_PREFIX + ds.docs.shape[2] if train_cfg.reader == "two_pass" else ds.ctx.shape[2]
    if L > reader_cfg.max_ctx_len or ds.ans_in.shape[1] > reader_cfg.max_ans_len:
        fail(fn, "reader_cfg.max_ctx_len, max_ans_len", (reader_cfg.max_ctx_len, reader_cfg.max_ans_len),
             f">= the reader's L={L}, T={ds.ans_in.shape[1]}")
    dtype = np.dtype(train_cfg.dtype)
    config = _ckpt_config(data_cfg, reader_cfg, train_cfg, seed)
    ckpt = None if out_dir is None else Path(out_dir) / "train_state.npz"

    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7261]))  # batches and masks
    params = init_reader(reader_cfg, seed, dtype=dtype)
    st = TrainState(params, adam_init(params), 0, rng.bit_generator.state, [], 0.0, 0)
    train_seconds = 0.0
    if ckpt is not None and resume and ckpt.exists():
        params, _, extra, arrays = load_checkpoint(ckpt, expect_config=config, like=params, with_arrays=True)
        st = TrainState(params, state_from_arrays(arrays), int(extra["step"]), extra["rng"],
                        [list(x) for x in extra["curve"]], float(extra["run_loss"]), int(extra["n_run"]))
        train_seconds = float(extra["seconds"])
        rng.bit_generator.state = st.rng_state

    def save(st: TrainState):
        if ckpt is None:
            return
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        extra = {"step": st.step, "curve": st.curve, "seconds": train_seconds, "rng": st.rng_state,
                 "run_loss": st.run_loss, "n_run": st.n_run}
        save_checkpoint(ckpt, st.params, config, extra=extra, arrays=state_to_arrays(st.adam))

    end = train_cfg.steps if max_steps_this_call is None else min(train_cfg.steps, st.step + max_steps_this_call)
    bar = None
    if progress and st.step < end:
        from tqdm.auto import tqdm  # the `demo` extra; progress=False needs no tqdm

        bar = tqdm(total=train_cfg.steps, initial=st.step, desc="train reader", unit="step", leave=False,
                   file=sys.stderr, dynamic_ncols=True)
    probs = np.asarray(train_cfg.mode_probs, np.float64)
    ema = None
    t0 = time.perf_counter()
    try:
        while st.step < end:
            idx = rng.integers(0, len(ds), size=train_cfg.batch_size)  # (B,)
            b = ds.batch(idx)
            modes = rng.choice(len(MODES), size=len(idx), p=probs)  # (B,)
            mask = document_masks(b.gold, modes, rng, dtype, targets=b.kind == TARGET)  # (B, N)
            if train_cfg.reader == "two_pass":
                ctx, flags, ans_in, ans_out = one_read_each(st.params, reader_cfg, b, mask, rng, train_cfg)
            else:
                ctx, flags, ans_in, ans_out = b.ctx, None, b.ans_in, b.ans_out
            loss, cache = reader_forward(st.params, reader_cfg, ctx, ans_in, ans_out, mask, flags=flags)
            grads, _ = reader_backward(1.0, cache)
            new_params, new_adam, _ = adam_step(st.params, grads, st.adam, lr=lr_at(st.step, train_cfg),
                                                weight_decay=train_cfg.weight_decay, clip_norm=train_cfg.clip_norm)
            loss = float(loss)
            if not math.isfinite(loss):
                raise FloatingPointError(f"train_reader: loss became {loss} at step {st.step}")
            rl, nr, cv = st.run_loss + loss, st.n_run + 1, st.curve
            if (st.step + 1) % train_cfg.log_every == 0 or st.step + 1 == train_cfg.steps:
                cv, rl, nr = st.curve + [[st.step + 1, round(rl / nr, 5)]], 0.0, 0
            st = TrainState(new_params, new_adam, st.step + 1, rng.bit_generator.state, cv, rl, nr)  # committed
            ema = loss if ema is None else 0.98 * ema + 0.02 * loss
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{ema:.3f}", refresh=False)
            if st.step % train_cfg.checkpoint_every == 0 and st.step < end:
                train_seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                save(st)
    except KeyboardInterrupt:
        train_seconds += time.perf_counter() - t0
        save(st)
        raise
    finally:
        if bar is not None:
            bar.close()
    train_seconds += time.perf_counter() - t0
    save(st)
    params, step, curve = st.params, st.step, st.curve
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
