"""Atomic writes leave the old file intact when writing fails."""
import json

import numpy as np
import pytest

from mini_gumbel.atomic import atomic_open, atomic_write_json, atomic_write_text


def test_atomic_write_json_roundtrip_with_numpy(tmp_path):
    p = tmp_path / "sub" / "r.json"
    atomic_write_json(p, {"a": np.float64(1.5), "b": np.arange(3)})
    assert json.loads(p.read_text()) == {"a": 1.5, "b": [0, 1, 2]}


def test_failed_write_keeps_old_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "r.txt"
    atomic_write_text(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_open(p, "w") as f:
            f.write("new, half written")
            raise RuntimeError("crash mid-write")
    assert p.read_text() == "old"
    assert [x.name for x in tmp_path.iterdir()] == ["r.txt"]


def test_bad_mode():
    with pytest.raises(ValueError, match="mode='a'"):
        with atomic_open("x", "a"):
            pass
