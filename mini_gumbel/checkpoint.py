"""Checkpoints: parameters + config (+ optional JSON extra and extra arrays) in one atomic .npz.

Layout of the archive (``allow_pickle=False`` throughout):

    __meta__        0-d unicode array holding JSON: {"format": "mini_gumbel.checkpoint", "version": 1,
                    "config": {...}, "extra": {...} | null, "params": {name: [shape, dtype]},
                    "arrays": {name: [shape, dtype]}}
    param/<name>    one array per parameter
    array/<name>    one array per extra array (e.g. optimizer state, see optim.state_to_arrays)

Writing goes to a temporary file in the destination directory, is fsync'ed, then ``os.replace``d over the
target, so a reader never sees a half-written checkpoint. Loading reads and checks everything before
returning anything: a truncated or corrupt file, a file that is not an .npz archive (a bare .npy array under
the name), a metadata record missing a key or of the wrong type, a missing key, a shape or dtype that differs
from the recorded one (or from ``like``), a config that differs from ``expect_config`` or an unknown format
version raise ``CheckpointError`` (a ``ValueError``), so that a caller can retrain on any unusable file.
A missing file stays ``FileNotFoundError``; a ``path`` that is not a str or path is a ``TypeError``.
"""
from __future__ import annotations

import json
import os
import zipfile
from typing import Optional

import numpy as np

from .atomic import atomic_open
from .backend import to_numpy

__all__ = ["save_checkpoint", "load_checkpoint", "CheckpointError", "FORMAT", "VERSION"]

FORMAT = "mini_gumbel.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked (corrupt, incomplete or mismatched)."""


def _jsonable(name, obj):
    try:
        return json.loads(json.dumps(obj, sort_keys=True, allow_nan=False))
    except (TypeError, ValueError) as e:
        raise TypeError(f"save_checkpoint: {name} is not JSON-serialisable ({e}); expected a dict of plain "
                        "numbers, strings, lists and dicts") from None


def _check_arrays(name, d):
    if not isinstance(d, dict):
        raise TypeError(f"save_checkpoint: {name} has type {type(d).__name__}; expected dict[str, array]")
    out = {}
    for k, v in d.items():
        if not isinstance(k, str) or not k:
            raise ValueError(f"save_checkpoint: {name} key {k!r}; expected a non-empty str")
        a = np.asarray(to_numpy(v))
        if a.dtype == object:
            raise TypeError(f"save_checkpoint: {name}[{k!r}] has dtype object; expected a numeric array")
        out[k] = a
    return out


def save_checkpoint(path, params: dict, config: dict, *, extra: Optional[dict] = None,
                    arrays: Optional[dict] = None) -> None:
    """Write params, config (a JSON-able dict, e.g. dataclasses.asdict(cfg)), an optional JSON-able
    ``extra`` dict and optional extra ``arrays`` to ``path`` (.npz) atomically."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"save_checkpoint: path={path!r} (a {type(path).__name__}); expected a str or os.PathLike")
    params = _check_arrays("params", params)
    arrays = _check_arrays("arrays", arrays or {})
    if not isinstance(config, dict):
        raise TypeError(f"save_checkpoint: config has type {type(config).__name__}; expected a dict "
                        "(dataclasses.asdict(cfg))")
    if extra is not None and not isinstance(extra, dict):
        raise TypeError(f"save_checkpoint: extra has type {type(extra).__name__}; expected a dict or None")
    meta = {"format": FORMAT, "version": VERSION, "config": _jsonable("config", config),
            "extra": None if extra is None else _jsonable("extra", extra),
            "params": {k: [list(a.shape), a.dtype.str] for k, a in params.items()},
            "arrays": {k: [list(a.shape), a.dtype.str] for k, a in arrays.items()}}
    payload = {"__meta__": np.array(json.dumps(meta, sort_keys=True))}
    payload.update({f"param/{k}": a for k, a in params.items()})
    payload.update({f"array/{k}": a for k, a in arrays.items()})
    with atomic_open(path, "wb") as f:
        np.savez(f, **payload)


def _read_all(path):
    """Every entry of the archive, fully read (CRC-checked by zipfile), or CheckpointError."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"load_checkpoint: {path!r} is not a readable checkpoint (truncated or corrupt: "
                              f"{type(e).__name__}: {e})") from e
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # e.g. a bare .npy array saved under the .npz name
        raise CheckpointError(f"load_checkpoint: {path!r} holds a single {type(loaded).__name__}, not an .npz "
                              "archive; expected a file written by save_checkpoint")
    try:
        with loaded as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as e:
        raise CheckpointError(f"load_checkpoint: {path!r} is not a readable checkpoint (truncated or corrupt: "
                              f"{type(e).__name__}: {e})") from e


def _check_meta(path, meta) -> None:
    """The metadata's schema: every key present with its type, every [shape, dtype] well formed."""
    def bad(what):
        raise CheckpointError(f"load_checkpoint: {path!r} has a malformed '__meta__' ({what}); expected a file "
                              "written by save_checkpoint")

    for key in ("config", "extra", "params", "arrays"):
        if key not in meta:
            bad(f"no {key!r} key")
    if not isinstance(meta["config"], dict):
        bad(f"'config' is a {type(meta['config']).__name__}, not a dict")
    if meta["extra"] is not None and not isinstance(meta["extra"], dict):
        bad(f"'extra' is a {type(meta['extra']).__name__}, not a dict or null")
    for group in ("params", "arrays"):
        d = meta[group]
        if not isinstance(d, dict):
            bad(f"{group!r} is a {type(d).__name__}, not a dict of name -> [shape, dtype]")
        for k, spec in d.items():
            ok = (isinstance(spec, list) and len(spec) == 2 and isinstance(spec[0], list)
                  and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in spec[0])
                  and isinstance(spec[1], str))
            if ok:
                try:
                    ok = np.dtype(spec[1]).kind in "biufc"
                except TypeError:
                    ok = False
            if not ok:
                bad(f"{group}[{k!r}]={spec!r}, not [shape, numeric dtype]")


def load_checkpoint(path, *, expect_config: Optional[dict] = None, like: Optional[dict] = None,
                    with_arrays: bool = False):
    """Returns (params, config, extra), or (params, config, extra, arrays) with with_arrays=True.

    expect_config: the stored config must equal it (after a JSON round trip), key by key.
    like: a params dict whose keys, shapes and dtypes the stored params must match exactly.
    """
    if isinstance(path, bool) or not isinstance(path, (str, bytes, os.PathLike)):
        raise TypeError(f"load_checkpoint: path={path!r} (a {type(path).__name__}); expected a str or os.PathLike")
    if expect_config is not None and not isinstance(expect_config, dict):
        raise TypeError(f"load_checkpoint: expect_config has type {type(expect_config).__name__}; expected a "
                        "dict or None")
    if like is not None and not isinstance(like, dict):
        raise TypeError(f"load_checkpoint: like has type {type(like).__name__}; expected a dict or None")
    path = os.fspath(path)
    entries = _read_all(path)
    if "__meta__" not in entries:
        raise CheckpointError(f"load_checkpoint: {path!r} has no '__meta__' entry; expected a file written by "
                              "save_checkpoint")
    raw = entries["__meta__"]
    if raw.ndim != 0 or raw.dtype.kind != "U":
        raise CheckpointError(f"load_checkpoint: {path!r} has a '__meta__' of shape {raw.shape} dtype {raw.dtype}; "
                              "expected a 0-d unicode array holding JSON")
    try:
        meta = json.loads(str(raw))
    except ValueError as e:
        raise CheckpointError(f"load_checkpoint: {path!r} has an unreadable '__meta__' ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"load_checkpoint: {path!r} has format {meta.get('format') if isinstance(meta, dict) else None!r}; "
                              f"expected {FORMAT!r}")
    if meta.get("version") != VERSION:
        raise CheckpointError(f"load_checkpoint: {path!r} has format version {meta.get('version')!r}; "
                              f"expected {VERSION}")
    _check_meta(path, meta)
    out = {}
    for group, prefix in (("params", "param/"), ("arrays", "array/")):
        out[group] = {}
        for k, (shape, dtype) in meta[group].items():
            key = prefix + k
            if key not in entries:
                raise CheckpointError(f"load_checkpoint: {path!r} is missing key {key!r} listed in its metadata")
            a = entries[key]
            if list(a.shape) != list(shape) or a.dtype.str != dtype:
                raise CheckpointError(f"load_checkpoint: {path!r} entry {key!r} has shape {a.shape} dtype {a.dtype}; "
                                      f"expected shape {tuple(shape)} dtype {np.dtype(dtype)} (from its metadata)")
            out[group][k] = a
        stray = [k for k in entries if k.startswith(prefix) and k[len(prefix):] not in meta[group]]
        if stray:
            raise CheckpointError(f"load_checkpoint: {path!r} has entries {stray[:5]} not in its metadata")
    params = out["params"]
    if like is not None:
        missing = sorted(set(like) - set(params))
        unexpected = sorted(set(params) - set(like))
        if missing or unexpected:
            raise CheckpointError(f"load_checkpoint: {path!r} params differ from `like`: missing key(s) "
                                  f"{missing[:5]}, unexpected key(s) {unexpected[:5]}")
        for k, ref in like.items():
            ref = np.asarray(to_numpy(ref))
            if params[k].shape != ref.shape or params[k].dtype != ref.dtype:
                raise CheckpointError(f"load_checkpoint: {path!r} param {k!r} has shape {params[k].shape} dtype "
                                      f"{params[k].dtype}; expected shape {ref.shape} dtype {ref.dtype} (like)")
    config = meta["config"]
    if expect_config is not None:
        want = json.loads(json.dumps(expect_config, sort_keys=True))
        diff = sorted(k for k in set(want) | set(config) if want.get(k, "<absent>") != config.get(k, "<absent>"))
        if diff:
            shown = ", ".join(f"{k}: stored {config.get(k, '<absent>')!r} vs expected {want.get(k, '<absent>')!r}"
                              for k in diff[:5])
            raise CheckpointError(f"load_checkpoint: {path!r} config mismatch ({shown})")
    extra = meta["extra"]
    if with_arrays:
        return params, config, extra, out["arrays"]
    return params, config, extra
