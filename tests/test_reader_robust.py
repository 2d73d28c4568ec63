"""The readers at their public boundary under bad input and extreme numbers (property tests).

Each class of input either gives a finite, defined result or a named error (``fn: name=value; expected ...``),
never a NaN loss, an inf gradient, a bare AttributeError or a silently wrong answer:

* document masks, checked after the cast to the parameters' dtype: finite, >= 0, every row's largest weight in
  [√tiny, 1/√tiny] of that dtype (DMA only sees ratios within a row; reader module docstring), for float32
  and float64 parameters and float32/float64 masks at every scale;
* every ReaderConfig field; every backward's cache and dloss (and dlogits); greedy decoding's max_len and its
  logits; token ids wherever ids enter the reader.
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mini_gumbel.reader import (ReaderConfig, greedy_decode, init_reader, reader_backward, reader_forward,
                                reader_logits_backward)
from mini_gumbel.two_pass_reader import TwoPassBatch, entity_flags, read_ctx, two_pass_backward, two_pass_forward

V = 13
CFG = ReaderConfig(vocab_size=V, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=12,
                   max_ctx_len=6, max_ans_len=4)
CFG2 = ReaderConfig(vocab_size=V, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=12,
                    max_ctx_len=6, max_ans_len=4, exact_match=True)
PARAMS = {np.float32: init_reader(CFG, 0, dtype=np.float32), np.float64: init_reader(CFG, 0)}
DTYPES = st.sampled_from([np.float32, np.float64])
SETTINGS = settings(max_examples=40, deadline=None)


def batch(B=2, N=4, L=5, T=3, seed=0):
    rng = np.random.default_rng(seed)
    ctx = rng.integers(3, V, (B, N, L))
    ctx[:, :, -1] = CFG.pad_id
    ans_in = rng.integers(3, V, (B, T))
    ans_in[:, 0] = CFG.bos_id
    ans_out = rng.integers(3, V, (B, T))
    return ctx, ans_in, ans_out


def bounds(dtype):
    """The documented range of a mask row's largest weight: [√tiny, 1/√tiny] of the parameters' dtype."""
    r = math.sqrt(float(np.finfo(dtype).tiny))
    return r, 1.0 / r


# a mask entry at any scale a float64 can hold, exact zeros included
ENTRY = st.one_of(st.just(0.0), st.builds(lambda m, e: m * 10.0 ** e, st.floats(0.1, 1.0), st.integers(-323, 307)),
                  st.sampled_from([5e-324, 1e-300, 1e-45, 1e-40, 1e-38, 1e-20, 1.0, 1e20, 1e39, 1e300]))


def _run(P, mask):
    ctx, ai, ao = batch(N=mask.shape[1])
    loss, cache = reader_forward(P, CFG, ctx, ai, ao, mask)
    dP, dM = reader_backward(1.0, cache)
    return loss, dP, dM, greedy_decode(P, CFG, ctx, mask)


@SETTINGS
@given(dtype=DTYPES, mask_dtype=DTYPES, entries=st.lists(ENTRY, min_size=8, max_size=8))
def test_mask_at_any_scale_is_finite_or_a_named_error(dtype, mask_dtype, entries):
    """A mask is judged in the parameters' dtype: inside the documented range the loss, every gradient and
    the decoded answer are finite and defined; outside it, a ValueError that names the mask row."""
    with np.errstate(over="ignore"):
        mask = np.array(entries, dtype=np.float64).reshape(2, 4).astype(mask_dtype)
    with np.errstate(over="ignore"):
        cast = mask.astype(dtype)
    lo, hi = bounds(dtype)
    top = cast.max(axis=1)
    if np.all(np.isfinite(cast)) and np.all((top >= lo) & (top <= hi)):
        loss, dP, dM, pred = _run(PARAMS[dtype], mask)
        assert np.isfinite(loss) and np.all(np.isfinite(dM)) and dM.dtype == dtype
        assert all(np.all(np.isfinite(g)) for g in dP.values())
        assert pred.shape[0] == 2
    else:
        with pytest.raises(ValueError, match=r"reader_forward: mask(\[\d\]\.max\(\))?=.*; expected"):
            _run(PARAMS[dtype], mask)
        ctx = batch(N=4)[0]
        with pytest.raises(ValueError, match=r"greedy_decode: mask(\[\d\]\.max\(\))?=.*; expected"):
            greedy_decode(PARAMS[dtype], CFG, ctx, mask)


@SETTINGS
@given(dtype=DTYPES, x=st.sampled_from([5e-324, 1e-320, 1e-300, 1e-160, 1e-45, 1e-40, 1e-39, 1e-30, 1e-19,
                                        1e-10, 0.5, 1.0, 3.0, 1e10, 1e18, 1e19, 1e40, 1e200, 1e300]))
def test_a_uniform_mask_row_means_all_ones_or_is_rejected(dtype, x):
    """All documents weighted alike is the all-ones mask (DMA sees ratios only) wherever x is in range in the
    parameters' dtype; an all-underflowing row (float32 1e-40, float64 5e-324) is a named error, never NaN
    or an inf gradient."""
    P = PARAMS[dtype]
    ctx, ai, ao = batch()
    mask = np.full((2, 4), x)
    lo, hi = bounds(dtype)
    with np.errstate(over="ignore"):
        xc = float(np.array(x).astype(dtype))
    if lo <= xc <= hi:
        l1, c1 = reader_forward(P, CFG, ctx, ai, ao, np.ones((2, 4), dtype))
        lx, cx = reader_forward(P, CFG, ctx, ai, ao, mask)
        tol = 1e-5 if dtype == np.float32 else 1e-12
        assert np.isfinite(lx) and lx == pytest.approx(l1, rel=tol)
        dM = reader_backward(1.0, cx, param_grads=False)[1]
        assert np.all(np.isfinite(dM))
        np.testing.assert_array_equal(greedy_decode(P, CFG, ctx, mask), greedy_decode(P, CFG, ctx))
    else:
        with pytest.raises(ValueError, match=r"reader_forward: mask(\[0\]\.max\(\))?=.*; expected"):
            reader_forward(P, CFG, ctx, ai, ao, mask)


@SETTINGS
@given(dtype=DTYPES, bad=st.sampled_from([np.nan, np.inf, -np.inf]), where=st.sampled_from(["tok_emb", "lm.b"]))
def test_greedy_decode_never_answers_silently_from_nan(dtype, bad, where):
    P = {k: v.copy() for k, v in PARAMS[dtype].items()}
    P[where][...] = bad
    with np.errstate(invalid="ignore", over="ignore"), \
            pytest.raises(ValueError, match=r"greedy_decode: logits\[\d\]=.*; expected finite logits"):
        greedy_decode(P, CFG, batch()[0])


# ---------------------------------------------------------------------------------------------------------
# ReaderConfig: every field

INT_FIELDS = ("vocab_size", "d_model", "n_heads", "n_enc_layers", "n_dec_layers", "d_ff", "max_ctx_len",
              "max_ans_len", "pad_id", "bos_id", "eos_id")
NOT_INT = st.one_of(st.floats(allow_nan=True).filter(lambda f: f != int(f) if math.isfinite(f) else True),
                    st.booleans(), st.text(max_size=3), st.just(None), st.just(2.0), st.just([1]))


@SETTINGS
@given(field=st.sampled_from(INT_FIELDS), value=NOT_INT)
def test_reader_config_int_fields_reject_non_ints(field, value):
    with pytest.raises(TypeError, match=rf"ReaderConfig: {field}=.*; expected an int"):
        ReaderConfig(**{"vocab_size": 20, field: value})


@SETTINGS
@given(field=st.sampled_from(INT_FIELDS), value=st.integers(-5, 0))
def test_reader_config_int_fields_reject_out_of_range(field, value):
    kw = {"vocab_size": 20, field: value}
    if field in ("pad_id", "bos_id", "eos_id", "n_enc_layers"):
        kw[field] = value - 1  # 0 is legal for these
    with pytest.raises(ValueError, match=rf"ReaderConfig: {field}=.*; expected"):
        ReaderConfig(**kw)


@SETTINGS
@given(ids=st.tuples(st.integers(0, 4), st.integers(0, 4), st.integers(0, 4)), value=st.integers(5, 9))
def test_reader_config_special_ids(ids, value):
    """pad, BOS and EOS are three different ids of the vocabulary; exact_match is a bool."""
    kw = dict(vocab_size=5, pad_id=ids[0], bos_id=ids[1], eos_id=ids[2])
    if len(set(ids)) < 3:
        with pytest.raises(ValueError, match=r"ReaderConfig: \(pad_id, bos_id, eos_id\)=.*; expected three different"):
            ReaderConfig(**kw)
    else:
        assert ReaderConfig(**kw).pad_id == ids[0]
    with pytest.raises(ValueError, match=r"ReaderConfig: pad_id=.*; expected an int in \[0, 4\]"):
        ReaderConfig(vocab_size=5, pad_id=value)
    with pytest.raises(TypeError, match=r"ReaderConfig: exact_match=.*; expected True or False"):
        ReaderConfig(vocab_size=5, exact_match=value)


# ---------------------------------------------------------------------------------------------------------
# backwards: cache, dloss, dlogits


def _two_pass():
    P = init_reader(CFG2, 0)
    rng = np.random.default_rng(1)
    docs = rng.integers(5, V, (2, 3, 3))
    ctx1 = read_ctx(docs, np.array([5, 6]), ent_id=3, sep_id=4)
    ctx2 = read_ctx(docs, np.array([7, 8]), ent_id=3, sep_id=4)
    a_in, a_out = np.array([[1, 9], [1, 10]]), np.array([[9, 2], [10, 2]])
    b = TwoPassBatch(ctx1, entity_flags(ctx1, docs[:, 0, 0]), a_in, a_out, ctx2, a_in, a_out, np.array([1, 2]))
    return P, b


WRONG_CACHE = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.dictionaries(st.text(max_size=2),
                                                                                      st.integers(), max_size=2),
                        st.tuples(st.integers()), st.sampled_from(["reader", "two_pass"]))


@SETTINGS
@given(cache=WRONG_CACHE)
def test_backwards_name_a_wrong_cache(cache):
    P, b = _two_pass()
    _, c_reader = reader_forward(PARAMS[np.float64], CFG, *batch())
    _, c_two = two_pass_forward(P, CFG2, b)
    # a cache of the other reader is as wrong as None
    for fn, call in (("reader_backward", lambda c: reader_backward(1.0, c)),
                     ("reader_logits_backward", lambda c: reader_logits_backward(np.zeros((2, 3, V)), c)),
                     ("two_pass_backward", lambda c: two_pass_backward(1.0, c))):
        other = cache
        if isinstance(cache, str) and cache in ("reader", "two_pass"):  # the other model's cache
            other = c_reader if fn == "two_pass_backward" else c_two
        with pytest.raises(TypeError, match=rf"(?s){fn}: cache=.*; expected the \w+Cache returned by"):
            call(other)


@SETTINGS
@given(dloss=st.one_of(st.sampled_from([np.nan, np.inf, -np.inf]), st.just(np.array(np.nan)),
                       st.just(np.float32(np.inf))))
def test_backwards_reject_a_non_finite_dloss(dloss):
    P, b = _two_pass()
    _, c_reader = reader_forward(PARAMS[np.float64], CFG, *batch())
    _, c_two = two_pass_forward(P, CFG2, b)
    with pytest.raises(ValueError, match=r"reader_backward: dloss=.*; expected a finite"):
        reader_backward(dloss, c_reader)
    with pytest.raises(ValueError, match=r"two_pass_backward: dloss=.*; expected a finite"):
        two_pass_backward(dloss, c_two)
    d = np.zeros((2, 3, V))
    d[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"reader_logits_backward: dlogits=.*; expected finite"):
        reader_logits_backward(d, c_reader)


@SETTINGS
@given(shape=st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
def test_reader_backward_rejects_a_dloss_that_is_not_a_scalar(shape):
    _, c = reader_forward(PARAMS[np.float64], CFG, *batch())
    with pytest.raises(ValueError, match=r"reader_backward: dloss.shape=.*; expected \(\)"):
        reader_backward(np.ones(shape), c)
    for bad in ("1", None, True, [1.0]):
        with pytest.raises(TypeError, match=r"reader_backward: dloss=.*; expected a finite real number"):
            reader_backward(bad, c)


@SETTINGS
@given(max_len=st.one_of(st.booleans(), st.floats(allow_nan=False), st.text(max_size=2)))
def test_greedy_decode_max_len_is_an_int(max_len):
    with pytest.raises(TypeError, match=r"greedy_decode: max_len=.*; expected an int"):
        greedy_decode(PARAMS[np.float64], CFG, batch()[0], max_len=max_len)


# ---------------------------------------------------------------------------------------------------------
# token ids wherever they enter the reader


@SETTINGS
@given(where=st.sampled_from(["ctx", "ans_in", "ans_out"]), bad=st.one_of(st.integers(-10**6, -1),
                                                                            st.integers(V, 10**6)))
def test_token_ids_out_of_range_are_rejected(where, bad):
    ctx, ai, ao = batch()
    arrays = {"ctx": ctx, "ans_in": ai, "ans_out": ao}
    arrays[where] = arrays[where].copy()
    arrays[where].reshape(-1)[1] = bad
    with pytest.raises(ValueError, match=rf"reader_forward: {where}=.*; expected token ids in \[0, {V}\)"):
        reader_forward(PARAMS[np.float64], CFG, arrays["ctx"], arrays["ans_in"], arrays["ans_out"])
    if where == "ctx":
        with pytest.raises(ValueError, match=rf"greedy_decode: ctx=.*; expected token ids in \[0, {V}\)"):
            greedy_decode(PARAMS[np.float64], CFG, arrays["ctx"])
        P, b = _two_pass()
        c1 = b.ctx1.copy()
        c1[0, 0, 0] = bad
        with pytest.raises(ValueError, match=rf"two_pass_forward: batch.ctx1=.*; expected token ids in \[0, {V}\)"):
            two_pass_forward(P, CFG2, b._replace(ctx1=c1))


@pytest.mark.parametrize("seed", [-1, 1.5, "a", None, True])
def test_init_reader_names_a_bad_seed(seed):
    """A seed NumPy would reject without naming it, or (None, True) silently accept, is named."""
    with pytest.raises((TypeError, ValueError), match=r"init_reader: seed="):
        init_reader(ReaderConfig(vocab_size=20), seed)
