"""Adam/AdamW against a plain reference, and checkpoint round trips and failure modes."""
import dataclasses
import json
import os

import numpy as np
import pytest

from mini_gumbel.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from mini_gumbel.optim import adam_init, adam_step, global_norm, state_from_arrays, state_to_arrays
from mini_gumbel.reader import ReaderConfig, init_reader


def _ref_adam(p, gs, lr, b1, b2, eps, wd):
    """Textbook AdamW on one array over a list of gradients."""
    m = np.zeros_like(p)
    v = np.zeros_like(p)
    for t, g in enumerate(gs, start=1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        p = p - lr * ((m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * p)
    return p


def test_adam_matches_reference_and_does_not_mutate(rng):
    params = {"a": rng.standard_normal((3, 4)), "b": rng.standard_normal(5)}
    grads_seq = [{k: rng.standard_normal(v.shape) for k, v in params.items()} for _ in range(4)]
    orig = {k: v.copy() for k, v in params.items()}
    state = adam_init(params)
    p = params
    for g in grads_seq:
        g_copy = {k: v.copy() for k, v in g.items()}
        p_in, p_before = p, {k: v.copy() for k, v in p.items()}
        m_in = {k: v.copy() for k, v in state["m"].items()}
        state_in = state
        p, state, _ = adam_step(p, g, state, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1)
        for k in g:  # the caller's arrays are untouched
            np.testing.assert_array_equal(g[k], g_copy[k])
            np.testing.assert_array_equal(p_in[k], p_before[k])
            np.testing.assert_array_equal(state_in["m"][k], m_in[k])
            assert p[k] is not p_in[k]
    for k in params:
        np.testing.assert_array_equal(params[k], orig[k])
        want = _ref_adam(orig[k], [g[k] for g in grads_seq], 0.01, 0.8, 0.99, 1e-8, 0.1)
        np.testing.assert_allclose(p[k], want, rtol=1e-14, atol=1e-15)
    assert state["t"] == 4


def test_adam_clipping_and_decay_filter(rng):
    params = {"w": rng.standard_normal(4), "g": np.ones(3)}
    grads = {"w": np.array([3.0, 0.0, 0.0, 0.0]), "g": np.array([0.0, 4.0, 0.0])}
    assert global_norm(grads) == pytest.approx(5.0, rel=1e-15)
    state = adam_init(params)
    new, st, gn = adam_step(params, grads, state, lr=0.1, clip_norm=1.0)
    assert gn == pytest.approx(5.0, rel=1e-15)  # the norm before clipping
    np.testing.assert_allclose(st["m"]["w"], 0.1 * grads["w"] / 5.0, rtol=1e-15)
    _, st2, _ = adam_step(params, grads, state, lr=0.1, clip_norm=10.0)  # under the threshold: unclipped
    np.testing.assert_allclose(st2["m"]["w"], 0.1 * grads["w"], rtol=1e-15)
    # decoupled weight decay only where decay_filter says so
    zero = {k: np.zeros_like(v) for k, v in params.items()}
    new, _, _ = adam_step(params, zero, state, lr=0.1, weight_decay=0.5, decay_filter=lambda k: k == "w")
    np.testing.assert_allclose(new["w"], params["w"] * (1 - 0.05), rtol=1e-15)
    np.testing.assert_array_equal(new["g"], params["g"])


def test_adam_minimises_a_quadratic():
    params = {"x": np.array([5.0, -3.0])}
    state = adam_init(params)
    for _ in range(500):
        params, state, _ = adam_step(params, {"x": 2 * params["x"]}, state, lr=0.05)
    assert np.abs(params["x"]).max() < 1e-2


def test_adam_errors(rng):
    params = {"a": np.zeros(3)}
    state = adam_init(params)
    with pytest.raises(ValueError, match=r"grads keys differ from params keys: missing \['a'\]"):
        adam_step(params, {"b": np.zeros(3)}, state, lr=0.1)
    with pytest.raises(ValueError, match=r"grads\['a'\].shape=\(2,\); expected \(3,\)"):
        adam_step(params, {"a": np.zeros(2)}, state, lr=0.1)
    with pytest.raises(ValueError, match=r"adam_step: lr=0; expected a finite number > 0"):
        adam_step(params, {"a": np.zeros(3)}, state, lr=0)
    with pytest.raises(ValueError, match=r"gradient norm is nan"):
        adam_step(params, {"a": np.full(3, np.nan)}, state, lr=0.1)


# ------------------------------------------------------------------------------------------------------
# checkpoints

CFG = ReaderConfig(vocab_size=11, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=12, max_ctx_len=5,
                   max_ans_len=3)


@pytest.fixture
def saved(tmp_path, rng):
    params = init_reader(CFG, 0)
    params["lm.b"] = rng.standard_normal(params["lm.b"].shape)
    state = adam_init(params)
    params2, state, _ = adam_step(params, {k: rng.standard_normal(v.shape) for k, v in params.items()}, state,
                                  lr=1e-3)
    path = tmp_path / "ckpt.npz"
    extra = {"step": 7, "history": [1.5, 0.25], "note": "dev"}
    save_checkpoint(path, params2, dataclasses.asdict(CFG), extra=extra, arrays=state_to_arrays(state))
    return path, params2, state, extra


def _rewrite(src, dst, edit):
    with np.load(src) as z:
        entries = {k: z[k] for k in z.files}
    edit(entries)
    with open(dst, "wb") as f:
        np.savez(f, **entries)


def test_round_trip_is_bit_exact(saved, tmp_path):
    path, params, state, extra = saved
    p, cfg, ex, arrays = load_checkpoint(path, expect_config=dataclasses.asdict(CFG), like=params, with_arrays=True)
    assert set(p) == set(params)
    for k in params:
        assert p[k].dtype == params[k].dtype and p[k].tobytes() == params[k].tobytes()
    assert ReaderConfig(**cfg) == CFG and ex == extra
    st = state_from_arrays(arrays)
    assert st["t"] == state["t"]
    for part in ("m", "v"):
        for k in params:
            assert st[part][k].tobytes() == state[part][k].tobytes()
    assert len(load_checkpoint(path)) == 3
    # float32 and overwriting in place; no temporary file left behind
    p32 = {k: v.astype(np.float32) for k, v in params.items()}
    save_checkpoint(path, p32, cfg)
    q, _, ex2 = load_checkpoint(path)
    assert ex2 is None and all(q[k].dtype == np.float32 and q[k].tobytes() == p32[k].tobytes() for k in p32)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.npz"]


def test_truncated_and_corrupt(saved, tmp_path):
    path, *_ = saved
    raw = path.read_bytes()
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match=r"not a readable checkpoint \(truncated or corrupt"):
        load_checkpoint(trunc)
    # flip bytes inside the stored data of one array: the zip CRC catches it
    bad = bytearray(raw)
    i = raw.index(b"param/lm.b.npy")
    j = raw.index(b"\x93NUMPY", i) + 200
    bad[j:j + 8] = bytes(b ^ 0xFF for b in bad[j:j + 8])
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(bytes(bad))
    with pytest.raises(CheckpointError, match=r"truncated or corrupt"):
        load_checkpoint(corrupt)
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match=r"truncated or corrupt"):
        load_checkpoint(junk)


def test_missing_key_shape_version_config(saved, tmp_path):
    path, params, *_ = saved
    dst = tmp_path / "edited.npz"
    _rewrite(path, dst, lambda e: e.pop("param/dec.0.cross.Wq"))
    with pytest.raises(CheckpointError, match=r"missing key 'param/dec.0.cross.Wq'"):
        load_checkpoint(dst)

    def reshape(e):
        e["param/lm.W"] = e["param/lm.W"].T.copy()
    _rewrite(path, dst, reshape)
    with pytest.raises(CheckpointError, match=r"'param/lm.W' has shape \(11, 8\).*expected shape \(8, 11\)"):
        load_checkpoint(dst)

    def version(e):
        meta = json.loads(str(e["__meta__"]))
        meta["version"] = 99
        e["__meta__"] = np.array(json.dumps(meta))
    _rewrite(path, dst, version)
    with pytest.raises(CheckpointError, match=r"format version 99; expected 1"):
        load_checkpoint(dst)
    _rewrite(path, dst, lambda e: e.pop("__meta__"))
    with pytest.raises(CheckpointError, match=r"no '__meta__' entry"):
        load_checkpoint(dst)

    other = dataclasses.asdict(dataclasses.replace(CFG, d_model=16))
    with pytest.raises(CheckpointError, match=r"config mismatch \(d_model: stored 8 vs expected 16\)"):
        load_checkpoint(path, expect_config=other)
    like = init_reader(dataclasses.replace(CFG, d_ff=16), 0)
    with pytest.raises(CheckpointError, match=r"param 'enc.0.mlp.W1' has shape \(8, 12\).*expected shape \(8, 16\)"):
        load_checkpoint(path, like=like)
    with pytest.raises(CheckpointError, match=r"missing key\(s\) \['extra.W'\]"):
        load_checkpoint(path, like={**params, "extra.W": np.zeros(2)})


def test_save_validation(tmp_path):
    with pytest.raises(TypeError, match=r"extra is not JSON-serialisable"):
        save_checkpoint(tmp_path / "x.npz", {"a": np.zeros(2)}, {}, extra={"f": object()})
    with pytest.raises(TypeError, match=r"config has type ReaderConfig; expected a dict"):
        save_checkpoint(tmp_path / "x.npz", {"a": np.zeros(2)}, CFG)
    assert os.listdir(tmp_path) == []
