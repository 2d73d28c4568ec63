"""Files under bad input, kills and concurrency: atomic writes, the file lock and checkpoints.

Atomic writes (mini_gumbel.atomic): new files get mode 0o666 & ~umask like open(); a writer killed
mid-write leaves a temporary file that the next successful write to the same target removes, while a live
writer's temporary file is never touched; two processes writing one target never fail and never leave a
corrupt file; NaN/inf cannot reach a JSON file. Checkpoints: every class of corrupt file is a
CheckpointError (so a cache can retrain), never a bare TypeError/KeyError/AttributeError.
"""
import json
import multiprocessing as mp
import os
import signal
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mini_gumbel.atomic import (atomic_open, atomic_write_bytes, atomic_write_json, atomic_write_text, file_lock,
                                temp_name_pattern)
from mini_gumbel.checkpoint import FORMAT, VERSION, CheckpointError, load_checkpoint, save_checkpoint
from mini_gumbel.optim import adam_init, state_from_arrays, state_to_arrays

ROOT = Path(__file__).resolve().parents[1]


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _temps(d: Path, target: str) -> list:
    pat = temp_name_pattern(d / target)
    return sorted(x.name for x in d.iterdir() if pat.match(x.name))


# ------------------------------------------------------------------------------------------ umask


WRITERS = {
    "bytes": lambda p: atomic_write_bytes(p, b"x"),
    "text": lambda p: atomic_write_text(p, "x"),
    "json": lambda p: atomic_write_json(p, {"x": 1}),
    "open": lambda p: _write_open(p),
    "checkpoint": lambda p: save_checkpoint(p, {"a": np.ones(2)}, {"c": 1}),
}


def _write_open(p):
    with atomic_open(p, "wb") as f:
        f.write(b"png bytes")


@given(umask=st.integers(0, 0o777), kind=st.sampled_from(sorted(WRITERS)))
@settings(max_examples=40)
def test_new_files_get_the_mode_open_would_give_under_any_umask(umask, kind):
    with tempfile.TemporaryDirectory() as d:  # made before the umask changes: mode 0700, writable by us
        old = os.umask(umask)
        try:
            ref = Path(d) / "ref"
            with open(ref, "w"):
                pass
            target = Path(d) / "out.npz"
            WRITERS[kind](target)
            assert _mode(target) == 0o666 & ~umask == _mode(ref)
            WRITERS[kind](target)  # a rewrite (temporary file renamed over an existing file) as well
            assert _mode(target) == 0o666 & ~umask
        finally:
            os.umask(old)


# ------------------------------------------------------------------------------------------ stale temporary files

CHILD = r"""
import sys
import numpy as np
from mini_gumbel.atomic import atomic_open
from mini_gumbel.checkpoint import save_checkpoint
target, kind = sys.argv[1], sys.argv[2]
if kind == "checkpoint":
    real = np.savez
    def slow(f, **kw):  # writes the archive into the temporary file, then waits to be killed or released
        real(f, **kw); f.flush(); print("ready", flush=True); sys.stdin.readline()
    np.savez = slow
    save_checkpoint(target, {"a": np.arange(1000.0)}, {"c": 1})
else:
    with atomic_open(target, "w") as f:
        f.write("from the child " * 1000)
        f.flush()
        print("ready", flush=True)
        sys.stdin.readline()  # killed here, or released by the parent
print("done", flush=True)
"""


def _child(target, kind):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", CHILD, str(target), kind], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "ready"
    return p


@pytest.mark.parametrize("kind", ["text", "checkpoint"])
@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM])
def test_temporary_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path, kind, how):
    target = tmp_path / ("r.npz" if kind == "checkpoint" else "r.txt")
    bystanders = [tmp_path / f".{target.name}.backup", tmp_path / "other.tmp", tmp_path / f".x.{target.name}.tmp"]
    for b in bystanders:
        b.write_text("not ours")
    for _ in range(3):  # three kills leave three temporary files
        p = _child(target, kind)
        p.send_signal(how)
        p.wait()
    left = _temps(tmp_path, target.name)
    assert len(left) == 3 and not target.exists()
    if kind == "checkpoint":
        save_checkpoint(target, {"a": np.zeros(3)}, {"c": 2})
        assert load_checkpoint(target)[1] == {"c": 2}
    else:
        atomic_write_text(target, "new")
        assert target.read_text() == "new"
    assert _temps(tmp_path, target.name) == []
    assert all(b.read_text() == "not ours" for b in bystanders)  # other names are left alone


def test_a_live_writers_temporary_file_is_never_removed(tmp_path):
    target = tmp_path / "r.txt"
    child = _child(target, "text")  # holds its temporary file open (and locked), mid-write
    live = _temps(tmp_path, target.name)
    assert len(live) == 1
    atomic_write_text(target, "parent")  # collects stale files: must skip the child's
    assert _temps(tmp_path, target.name) == live and target.read_text() == "parent"
    out, _ = child.communicate("go\n")
    assert child.returncode == 0 and out.strip() == "done"  # its os.replace found its file
    assert target.read_text() == "from the child " * 1000
    assert _temps(tmp_path, target.name) == []


def test_nested_writes_in_one_process_keep_the_outer_temporary_file(tmp_path):
    target = tmp_path / "r.txt"
    with atomic_open(target, "w") as f:
        f.write("outer")
        atomic_write_text(target, "inner")
        assert target.read_text() == "inner"
    assert target.read_text() == "outer" and _temps(tmp_path, target.name) == []


# ------------------------------------------------------------------------------------------ concurrency


def _hammer(args):
    """Write ``target`` n times as writer w, reading it back after each write; returns the errors seen."""
    target, w, n, kind = args
    errors = []
    for j in range(n):
        try:
            if kind == "json":
                atomic_write_json(target, {"writer": w, "n": j, "payload": [w] * 3000})
                got = json.loads(Path(target).read_text())
                if got["payload"] != [got["writer"]] * 3000:
                    errors.append(f"mixed content {got['writer']}")
            else:
                save_checkpoint(target, {"a": np.full(5000, float(w))}, {"writer": w, "n": j})
                params, cfg, _ = load_checkpoint(target)
                if not (params["a"] == cfg["writer"]).all():
                    errors.append("mixed checkpoint")
        except Exception as e:  # noqa: BLE001 -- any failure is the finding
            errors.append(f"{type(e).__name__}: {e}")
    return errors


@pytest.mark.parametrize("kind,n", [("json", 50), ("checkpoint", 25)])
def test_two_processes_writing_one_target_never_fail_nor_corrupt_it(tmp_path, kind, n):
    target = str(tmp_path / ("r.json" if kind == "json" else "r.npz"))
    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(_hammer, [(target, 0, n, kind), (target, 1, n, kind)])
    assert results == [[], []]
    assert _temps(tmp_path, Path(target).name) == []


def _count_under_lock(args):
    lock, counter, n = args
    for _ in range(n):
        with file_lock(lock):
            v = int(Path(counter).read_text())
            atomic_write_text(counter, str(v + 1))  # read-modify-write: loses updates without the lock
    return True


def test_file_lock_serialises_two_processes(tmp_path):
    lock, counter = tmp_path / ".lock", tmp_path / "count"
    counter.write_text("0")
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_count_under_lock, [(str(lock), str(counter), 50)] * 2) == [True, True]
    assert counter.read_text() == "100" and lock.exists()


def test_file_lock_calls_waiting_once_when_held_and_then_gets_it(tmp_path):
    lock = tmp_path / "sub" / ".lock"
    calls, got = [], threading.Event()

    def other():
        with file_lock(lock, waiting=lambda: calls.append("waiting")):
            got.set()

    with file_lock(lock) as held:
        assert held == lock
        t = threading.Thread(target=other)
        t.start()
        t.join(0.5)  # it cannot get the lock while we hold it
        assert not got.is_set()
    t.join(30)
    assert got.is_set() and calls == ["waiting"]
    with file_lock(lock, waiting=lambda: calls.append("again")):  # free: no wait
        pass
    assert calls == ["waiting"]


def test_file_lock_is_released_when_its_holder_dies(tmp_path):
    lock = tmp_path / ".lock"
    code = ("import sys, time; from mini_gumbel.atomic import file_lock\n"
            f"with file_lock({str(lock)!r}):\n    print('held', flush=True); time.sleep(600)\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=env)
    assert p.stdout.readline().strip() == "held"
    p.kill()
    p.wait()
    with file_lock(lock, waiting=lambda: pytest.fail("a dead holder's lock must be free")):
        pass


@pytest.mark.parametrize("bad", [None, 3, True, 2.5])
def test_atomic_functions_name_a_bad_path(bad):
    for call in (lambda: atomic_write_text(bad, "x"), lambda: atomic_write_json(bad, {}),
                 lambda: file_lock(bad).__enter__()):
        with pytest.raises(TypeError, match=r"path=.*; expected a str or os.PathLike"):
            call()


# ------------------------------------------------------------------------------------------ JSON without NaN

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-10, 10), st.floats(-1e6, 1e6), st.text(max_size=3))
json_like = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                         st.dictionaries(st.text(max_size=3), c, max_size=3)),
                         max_leaves=8)


@given(obj=json_like, bad=st.sampled_from([float("nan"), float("inf"), -float("inf"), np.float32("nan"),
                                           np.array([1.0, np.inf]), np.float64("-inf")]),
       where=st.integers(0, 2))
def test_atomic_write_json_rejects_nan_and_inf_by_name(tmp_path_factory, obj, bad, where):
    d = tmp_path_factory.mktemp("j")
    p = d / "r.json"
    atomic_write_json(p, {"ok": 1})
    payload = [{"k": obj, "x": bad}, [obj, bad], {"deep": {"er": [bad]}}][where]
    with pytest.raises(ValueError, match=r"atomic_write_json: obj\[.*\]=.*(nan|inf).*expected finite numbers"):
        atomic_write_json(p, payload)
    assert json.loads(p.read_text()) == {"ok": 1}  # the old file is intact
    assert sorted(x.name for x in d.iterdir()) == ["r.json"]


# ------------------------------------------------------------------------------------------ corrupt checkpoints


def _meta(**change):
    meta = {"format": FORMAT, "version": VERSION, "config": {"c": 1}, "extra": None,
            "params": {"a": [[2], "<f8"]}, "arrays": {}}
    for k, v in change.items():
        if v is _DROP:
            del meta[k]
        else:
            meta[k] = v
    return meta


_DROP = object()


def _write_archive(path, meta, entries=None):
    entries = {"param/a": np.ones(2)} if entries is None else entries
    raw = meta if isinstance(meta, np.ndarray) else np.array(json.dumps(meta))
    with open(path, "wb") as f:
        np.savez(f, __meta__=raw, **entries)


WRONG = st.one_of(st.none(), st.integers(), st.text(max_size=4), st.lists(st.integers(), max_size=2),
                  st.booleans())

CORRUPT = st.one_of(
    st.tuples(st.just("drop"), st.sampled_from(["params", "arrays", "config", "extra"])),
    st.tuples(st.just("wrong_type"), st.sampled_from(["params", "arrays", "config"]), WRONG),
    st.tuples(st.just("extra_type"), st.one_of(st.integers(), st.text(max_size=3), st.lists(st.integers()))),
    st.tuples(st.just("params_list"), st.just([["a", [2], "<f8"]])),
    st.tuples(st.just("bad_spec"), st.one_of(
        st.just([2, "<f8"]), st.just([[2], "nonsense"]), st.just([[2], "O"]), st.just([[-1], "<f8"]),
        st.just([[2.0], "<f8"]), st.just([[True], "<f8"]), st.just([[2]]), st.just("f8"), WRONG)),
    st.tuples(st.just("meta_not_dict"), st.one_of(st.lists(st.integers(), max_size=2), st.integers(), st.text())),
    st.tuples(st.just("meta_array"), st.sampled_from(["1d", "int", "bytes"])),
    st.tuples(st.just("npy"), st.integers(0, 3)),
    st.tuples(st.just("bytes"), st.binary(max_size=64)),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.999)),
)


@given(case=CORRUPT)
def test_every_corrupt_checkpoint_is_a_checkpoint_error(tmp_path_factory, case):
    p = tmp_path_factory.mktemp("c") / "ck.npz"
    kind = case[0]
    if kind == "drop":
        _write_archive(p, _meta(**{case[1]: _DROP}))
    elif kind == "wrong_type":
        _write_archive(p, _meta(**{case[1]: case[2]}))
    elif kind == "extra_type":
        _write_archive(p, _meta(extra=case[1]))
    elif kind == "params_list":
        _write_archive(p, _meta(params=case[1]))
    elif kind == "bad_spec":
        _write_archive(p, _meta(params={"a": case[1]}))
    elif kind == "meta_not_dict":
        _write_archive(p, case[1])
    elif kind == "meta_array":
        raw = {"1d": np.array([json.dumps(_meta())] * 2), "int": np.array(3),
               "bytes": np.array(json.dumps(_meta()).encode())}[case[1]]
        _write_archive(p, raw)
    elif kind == "npy":  # a bare array saved under the .npz name
        with open(p, "wb") as f:
            np.save(f, np.arange(case[1]))
    elif kind == "bytes":
        p.write_bytes(case[1])
    else:
        save_checkpoint(p, {"a": np.arange(100.0)}, {"c": 1}, extra={"step": 3},
                        arrays=state_to_arrays(adam_init({"a": np.zeros(4)})))
        data = p.read_bytes()
        p.write_bytes(data[: int(case[1] * len(data))])
    with pytest.raises(CheckpointError, match=r"^load_checkpoint: "):
        load_checkpoint(p, with_arrays=True)


def test_the_audits_reproductions_are_checkpoint_errors(tmp_path):
    p = tmp_path / "ck.npz"
    np.save(open(p, "wb"), np.zeros(3))
    with pytest.raises(CheckpointError, match="holds a single ndarray, not an .npz archive"):
        load_checkpoint(p)
    for key in ("params", "arrays", "config", "extra"):
        _write_archive(p, _meta(**{key: _DROP}))
        with pytest.raises(CheckpointError, match=f"malformed '__meta__' \\(no '{key}' key\\)"):
            load_checkpoint(p)
    _write_archive(p, _meta(params=[["a", [2], "<f8"]]))
    with pytest.raises(CheckpointError, match="'params' is a list"):
        load_checkpoint(p)


@pytest.mark.parametrize("bad", [None, 3, 2.5, True, ["a.npz"]])
def test_checkpoint_paths_and_options_are_named(tmp_path, bad):
    with pytest.raises(TypeError, match=r"load_checkpoint: path=.*; expected a str or os.PathLike"):
        load_checkpoint(bad)
    with pytest.raises(TypeError, match=r"save_checkpoint: path=.*; expected a str or os.PathLike"):
        save_checkpoint(bad, {"a": np.ones(1)}, {})
    p = tmp_path / "ck.npz"
    save_checkpoint(p, {"a": np.ones(1)}, {})
    if bad is not None:
        with pytest.raises(TypeError, match="load_checkpoint: expect_config has type"):
            load_checkpoint(p, expect_config=bad)
        with pytest.raises(TypeError, match="load_checkpoint: like has type"):
            load_checkpoint(p, like=bad)


def test_a_missing_checkpoint_stays_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "absent.npz")


@pytest.mark.parametrize("arrays,match", [
    ({"t": np.array(1), "m": np.zeros(2)}, r"found 'm'"),
    ({"t": np.array(1), "x/a": np.zeros(2)}, r"found 'x/a'"),
    ({"t": np.array(1), "m/": np.zeros(2)}, r"found 'm/'"),
    ({"t": np.zeros(3, dtype=np.int64)}, r"arrays\['t'\]=.*0-d integer"),
    ({"t": np.array(1.5)}, r"arrays\['t'\]=.*0-d integer"),
    ({"t": np.array(-1)}, r"arrays\['t'\]=.*0-d integer"),
])
def test_optimizer_state_from_malformed_arrays_is_named(arrays, match):
    with pytest.raises(ValueError, match=f"state_from_arrays: {match}" if match.startswith("arrays") else match):
        state_from_arrays(arrays)
