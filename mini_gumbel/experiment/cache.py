"""The reader cache: a trained reader stored once under a hash of everything that determines it, so that
the demo, the sweep and the notebooks train it once and reuse it.

    params, reader_cfg, report = load_or_train_reader(data_cfg, reader_cfg, train_cfg, seed=0)

The folder is ``$MINI_GUMBEL_CACHE`` or ``~/.cache/mini_gumbel``, one ``reader-<hash>/`` per reader, with the
finished ``reader.npz`` and ``reader_report.json`` (and ``train_state.npz`` while training, so that an
interrupted training resumes). The exact objective's subset-loss table of a reader and a training set is
cached beside them as ``subset-table-<hash>.npy`` (load_or_compute_table).
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np

from ..atomic import atomic_open, atomic_write_json, file_lock
from ..checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from ..data import DataConfig, Splits
from ..reader import ReaderConfig
from .configs import TrainReaderConfig, config_hash, default_reader_config
from .train_reader import FORMAT_VERSION, train_reader

__all__ = ["save_reader", "load_reader", "cache_key", "default_cache_dir", "reader_folder", "load_or_train_reader",
           "table_key", "load_or_compute_table", "MAX_TABLE_SUBSETS"]


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
    return config_hash({"data": data_cfg.as_dict(), "reader": dataclasses.asdict(reader_cfg), "train": t,
                        "seed": int(seed), "format_version": FORMAT_VERSION})


def default_cache_dir() -> Path:
    """$MINI_GUMBEL_CACHE, else ~/.cache/mini_gumbel."""
    env = os.environ.get("MINI_GUMBEL_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mini_gumbel"


def reader_folder(data_cfg: DataConfig, reader_cfg: ReaderConfig, train_cfg: TrainReaderConfig, seed: int,
                  cache_dir=None) -> Path:
    """Where the reader of these configs is cached: <cache_dir or default_cache_dir()>/reader-<cache_key>."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"reader-{cache_key(data_cfg, reader_cfg, train_cfg, seed)}"


def shown(path) -> str:
    """A path for messages, with the home directory written as ~."""
    path, home = Path(path), Path.home()
    try:
        return str(Path("~") / path.relative_to(home))
    except ValueError:
        return str(path)


def load_or_train_reader(data_cfg: Optional[DataConfig] = None, reader_cfg: Optional[ReaderConfig] = None,
                         train_cfg: Optional[TrainReaderConfig] = None, *, seed: int = 0, cache_dir=None,
                         progress: bool = True, splits: Optional[Splits] = None, resume: bool = True, log=print):
    """(params, reader_cfg, report): from the cache <cache_dir>/reader-<hash>/reader.npz when present,
    else trained (resuming an interrupted training in the same folder) and stored there.

    ``log`` says where the reader came from (reused, resumed from step n, or trained) and where it is cached;
    pass ``log=None`` for silence. ``resume=False`` trains it again from step 0 and replaces the cached one.
    Two processes that need the same reader take turns (a lock in its folder): one trains, the other reuses.
    """
    say = log if log is not None else (lambda *_: None)
    data_cfg = DataConfig() if data_cfg is None else data_cfg
    train_cfg = TrainReaderConfig() if train_cfg is None else train_cfg
    reader_cfg = default_reader_config(data_cfg) if reader_cfg is None else reader_cfg
    folder = reader_folder(data_cfg, reader_cfg, train_cfg, seed, cache_dir)
    path, state = folder / "reader.npz", folder / "train_state.npz"
    folder.mkdir(parents=True, exist_ok=True)
    with file_lock(folder / ".lock", waiting=lambda: say(f"reader: waiting for another process that is training "
                                                          f"it in {shown(folder)}")):
        if resume and path.exists():
            try:
                params, cfg, report = load_reader(path, expect_config=reader_cfg)
                say(f"reader: reused the cached reader in {shown(folder)}")
                return params, cfg, report
            except CheckpointError as e:
                print(f"load_or_train_reader: ignoring unreadable cache entry ({e}); retraining", file=sys.stderr)
        step = _state_step(state) if resume and state.exists() else None
        if step is not None:
            say(f"reader: resuming its training from step {step} of {train_cfg.steps} in {shown(folder)}")
        else:
            say(f"reader: training it ({train_cfg.steps} steps) into the cache {shown(folder)} "
                f"(MINI_GUMBEL_CACHE moves the cache)")
        params, report = train_reader(data_cfg, reader_cfg, train_cfg, seed=seed, out_dir=folder,
                                      resume=step is not None, progress=progress, splits=splits)
        save_reader(path, params, reader_cfg, report)
        atomic_write_json(folder / "reader_report.json", report)
        try:
            state.unlink()  # the finished reader replaces the training state
        except FileNotFoundError:
            pass
        say(f"reader: trained in {report['train_seconds']:.0f} s and cached in {shown(folder)}")
    return params, reader_cfg, report


def _state_step(state: Path) -> Optional[int]:
    """The step an interrupted training reached, or None when its state cannot be read (it then restarts)."""
    try:
        _, _, extra = load_checkpoint(state)
        return int(extra["step"])
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None


# ----------------------------------------------------------------------------------------------------------
# the subset-loss table of the exact objective


TABLE_FORMAT = 1
# the largest table the exact objective builds: C(16, 8) = 12,870 subsets an example
MAX_TABLE_SUBSETS = math.comb(16, 8)


def _digest(*arrays) -> str:
    """SHA-256 over the arrays' dtypes, shapes and bytes (a dict: its values in sorted key order)."""
    h = hashlib.sha256()
    for a in arrays:
        items = sorted(a.items()) if isinstance(a, dict) else [("", a)]
        for name, x in items:
            x = np.ascontiguousarray(x)
            h.update(f"{name}|{x.dtype.str}|{x.shape}|".encode())
            h.update(x.tobytes())
    return h.hexdigest()[:16]


def table_key(reader_params: dict, reader_cfg: ReaderConfig, data, k: int) -> str:
    """A hash of everything the table depends on: the reader (its parameters and config), the examples (their
    every field: documents, questions, answers...) and K."""
    return config_hash({"reader": _digest(reader_params), "reader_cfg": dataclasses.asdict(reader_cfg),
                        "data": _digest(dict(data._asdict())),
                        "k": int(k), "format": TABLE_FORMAT})


def load_or_compute_table(reader_params: dict, reader_cfg: ReaderConfig, data, k: int, *, cache_dir=None,
                          progress=None, chunk: int = 32, log=print) -> np.ndarray:
    """(S, C(N, K)) float64: the frozen reader's answer NLL of every example of ``data`` reading only S, for
    every K-subset S of its N documents (mini_gumbel.objective.subset_loss_table), from
    <cache_dir>/subset-table-<table_key>.npy when present, else computed (chunk examples at a time) and stored
    there atomically. Two processes take turns, as for the reader. ``log`` says which happened and the cost."""
    from ..gumbel_reranking import reader_memory_of
    from ..objective import subset_loss_table
    from .evaluate import batches
    from .readers import reader_inputs

    say = log if log is not None else (lambda *_: None)
    n, N = data.docs.shape[:2]
    n_sub = math.comb(N, k) if 1 <= k <= N else 0
    if n_sub == 0 or n_sub > MAX_TABLE_SUBSETS:
        raise ValueError(f"load_or_compute_table: N={N}, k={k}; expected C(N, k) <= {MAX_TABLE_SUBSETS} subsets an "
                         f"example (the exact objective enumerates every K-subset; N={N}, k={k} gives "
                         f"{n_sub}): use the rloo method, which samples subsets instead")
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    key = table_key(reader_params, reader_cfg, data, k)
    path = root / f"subset-table-{key}.npy"
    with file_lock(root / f".subset-table-{key}.lock",
                   waiting=lambda: say(f"exact: waiting for another process that is computing {shown(path)}")):
        if path.exists():
            try:
                table = np.load(path, allow_pickle=False)
                if table.shape == (n, n_sub) and table.dtype == np.float64 and np.isfinite(table).all():
                    say(f"exact: reused the subset-loss table {shown(path)} ({n} examples x {n_sub} subsets)")
                    return table
                raise ValueError(f"shape {table.shape}, dtype {table.dtype}")
            except (OSError, ValueError) as e:
                print(f"load_or_compute_table: ignoring the unreadable table {path} ({e}); recomputing it",
                      file=sys.stderr)
        say(f"exact: computing the reader's loss on every hard subset: {n} examples x {n_sub} subsets of K={k} "
            f"of N={N} documents, {n * n_sub:,} reads of {k} documents (cached in {shown(path)})")
        t0 = time.perf_counter()
        parts = []
        it = list(batches(n, chunk))
        for idx in (progress(it, desc="exact subset-loss table") if progress else it):
            x = reader_inputs(data.batch(idx), reader_cfg)
            parts.append(subset_loss_table(reader_params, reader_cfg, x, k,
                                           memory=reader_memory_of(reader_params, reader_cfg, x)))
        table = np.concatenate(parts, axis=0)  # (S, C(N, K))
        with atomic_open(path, "wb") as f:
            np.save(f, table, allow_pickle=False)
        say(f"exact: the table took {time.perf_counter() - t0:.0f} s; cached in {shown(path)}")
    return table
