"""Atomic file writes: results and checkpoints are never left half-written.

Write to a temporary file in the destination's directory, flush and fsync it, then ``os.replace`` it over
the destination (atomic on POSIX and Windows), then fsync the directory so the rename is durable too. A crash
leaves either the old file or the new one. This is the one writer: results, run files, checkpoints and plots
(``atomic_open(path, 'wb')`` takes ``fig.savefig(f, format='png')``) all go through it.

Temporary files. Each write gets its own name, ``.<target name>.<8 random characters>.tmp`` next to the
target, created with ``O_EXCL``, so two processes writing the same file never share one and neither can
fail at ``os.replace``; the last rename wins and the file is always one writer's complete content. It is
created with mode ``0o666`` filtered by the process umask, as ``open()`` would create the target, and the
writer holds an advisory lock (``fcntl.flock``) on it until it has been renamed. A writer killed mid-write
leaves its temporary file behind; the next successful write to the same target removes every temporary
file of that target whose lock it can take (its writer is gone: the kernel drops a dead process's locks),
never one a live writer still holds.

``file_lock(path)`` is the lock for work that must not interleave between processes (two trainings of the
same cached reader, two demos filling one output folder): an exclusive ``flock`` on ``path``, held for the
``with`` block and released when the block ends or the process dies.
"""
from __future__ import annotations

import errno
import json
import math
import os
import re
import secrets
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, Union

try:  # POSIX; elsewhere writes stay atomic but stale temporary files are not collected and file_lock fails
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["atomic_open", "atomic_write_bytes", "atomic_write_text", "atomic_write_json", "file_lock",
           "temp_name_pattern"]

_RANDOM_CHARS = 8  # 8 hex characters: 32 random bits a name; O_EXCL catches a collision and draws again


def _check_path(fn: str, path: Any) -> Path:
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{fn}: path={path!r} (a {type(path).__name__}); expected a str or os.PathLike")
    return Path(path)


def temp_name_pattern(path: PathLike) -> "re.Pattern[str]":
    """The names of ``path``'s temporary files (``.<name>.<8 chars>.tmp``) as a compiled regex."""
    return re.compile(rf"\.{re.escape(Path(path).name)}\.[a-z0-9_]{{{_RANDOM_CHARS}}}\.tmp\Z")


def _create_temp(path: Path) -> tuple[int, Path]:
    """A fresh temporary file next to ``path``, open for writing and locked: (fd, its path).

    ``os.open(..., 0o666)`` lets the kernel apply the umask exactly as ``open()`` does (``mkstemp`` would
    force 0600). The lock is taken right after creation; a collector that unlinked the file in between
    (it took the lock first) is detected by comparing inodes, and the name is drawn again.
    """
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(_RANDOM_CHARS)[:_RANDOM_CHARS]}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        if fcntl is None:
            return fd, tmp
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # only ever contended by a collector for a moment
            if os.stat(tmp).st_ino == os.fstat(fd).st_ino:
                return fd, tmp
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # a collector removed it before we locked it: draw another name


def _remove_stale(path: Path, keep: Optional[Path] = None) -> list:
    """Remove the temporary files of ``path`` that no live writer holds; returns the removed paths."""
    if fcntl is None:
        return []
    pattern = temp_name_pattern(path)
    removed = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return removed
    for name in names:
        cand = path.parent / name
        if not pattern.match(name) or (keep is not None and cand == keep):
            continue
        try:
            fd = os.open(cand, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
        except OSError:  # gone already, or not ours to open
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as e:  # a live writer holds it
                if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    continue
                raise
            if os.stat(cand).st_ino == os.fstat(fd).st_ino:
                os.unlink(cand)
                removed.append(cand)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


@contextmanager
def atomic_open(path: PathLike, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary file next to ``path``; on success it replaces ``path``, on error it is removed.

    After the replacement, temporary files of ``path`` left by killed writers are removed (see the module
    docstring). The new file has mode ``0o666 & ~umask``."""
    path = _check_path("atomic_open", path)
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_open: mode={mode!r}; expected 'wb' or 'w'")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _create_temp(path)
    try:
        # closefd=False: the lock lives on ``fd``, which stays open (and locked) until the rename is done
        with os.fdopen(fd, mode, closefd=False, **({} if "b" in mode else {"encoding": "utf-8"})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    finally:
        os.close(fd)  # releases the lock
    _fsync_dir(path.parent)  # make the rename itself durable
    _remove_stale(path)


def _fsync_dir(d: Path) -> None:
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # e.g. a platform that cannot open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"atomic_write_bytes: data is a {type(data).__name__}; expected bytes")
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: PathLike, text: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"atomic_write_text: text is a {type(text).__name__}; expected a str")
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: PathLike, obj: Any) -> None:
    """``obj`` as standard JSON (indent 2, sorted keys). NaN and ±inf have no JSON spelling: they are a
    ValueError that names where they are (write None for a missing number)."""
    _check_path("atomic_write_json", path)
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default, allow_nan=False)
    except ValueError:
        where = _non_finite_at(obj)
        if where is None:
            raise
        at, value = where
        raise ValueError(f"atomic_write_json: obj{at}={value!r}; expected finite numbers (JSON has no NaN or "
                         "inf; write None for a missing value)") from None
    atomic_write_text(path, text + "\n")


def _non_finite_at(obj: Any, at: str = "") -> Optional[tuple]:
    """(where, value) of the first NaN/inf in a JSON-like object, or None."""
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):
        obj = obj.tolist()
    if isinstance(obj, float):
        return None if math.isfinite(obj) else (at, obj)
    if isinstance(obj, dict):
        for k in sorted(obj, key=str):
            hit = _non_finite_at(obj[k], f"{at}[{k!r}]")
            if hit is not None:
                return hit
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            hit = _non_finite_at(v, f"{at}[{i}]")
            if hit is not None:
                return hit
    return None


def _json_default(o: Any):
    # NumPy scalars and arrays appear in results; write them as plain JSON numbers and lists.
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"atomic_write_json: cannot serialise object of type {type(o).__name__}")


@contextmanager
def file_lock(path: PathLike, *, waiting: Optional[Callable[[], Any]] = None) -> Iterator[Path]:
    """An exclusive advisory lock (``fcntl.flock``) on the file ``path``, held for the ``with`` block.

    For a section two processes must not run at once on the same files, e.g.::

        with file_lock(folder / ".lock"):
            ...  # check the cache, train, save: one process at a time per folder

    ``path`` is created if missing (mode ``0o666 & ~umask``) and left in place afterwards: deleting a lock
    file while another process waits on it would let a third one lock a new file of the same name. When
    another process holds the lock, ``waiting()`` (if given) is called once, then the call blocks until the
    lock is free. The kernel releases the lock when the block ends, on an exception, or if the process
    dies, so a killed holder never leaves it locked. Advisory: it only excludes other ``file_lock`` users.
    Yields the lock file's path.
    """
    path = _check_path("file_lock", path)
    if waiting is not None and not callable(waiting):
        raise TypeError(f"file_lock: waiting={waiting!r}; expected a callable or None")
    if fcntl is None:  # pragma: no cover - Windows
        raise OSError("file_lock: fcntl.flock is not available on this platform")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            if waiting is not None:
                waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock
