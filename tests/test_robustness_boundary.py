"""The public boundary under bad input and extreme numbers: every error named, nothing NaN.

Configs: every field of RerankConfig, TrainReaderConfig and DataConfig, given a wrong type, NaN, ±inf or a
value out of range, raises a TypeError (wrong type) or ValueError (wrong value) that starts with
``<Class>: <field>=``. Seeds: an int >= 0, never None. Backwards: a wrong cache is a TypeError naming the
forward, a NaN upstream gradient a ValueError. Losses (docs/method.md §8): finite loss and gradients at any
offset of the scores in float32 and float64 (shift invariance of the softmaxes), and at any scale either
finite or a ValueError that names the overflow, never NaN or inf.
"""
import dataclasses
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from mini_gumbel.data import DataConfig, make_dataset
from mini_gumbel.experiment.configs import RerankConfig, TrainReaderConfig
from mini_gumbel.losses import (emdr_backward, emdr_forward, kl_distill_backward, kl_distill_forward,
                                supervised_backward, supervised_forward)
from mini_gumbel.metrics import exact_match, mean_exact_match, mean_token_f1, ranking_metrics, token_f1
from mini_gumbel.optim import adam_init, adam_step
from mini_gumbel.reranker import init_reranker, reranker_backward, reranker_forward
from mini_gumbel.validate import check_cache, check_dloss, check_seed

NAN, INF = float("nan"), float("inf")

# ------------------------------------------------------------------------------------------ configs
# kind of every field: ("int", lo) | ("real", lo, hi, lo_open) | ("real?", ...) (None allowed) | ("choice",)
# | ("bool",) | ("probs", n) | ("relations",)

FIELDS = {
    RerankConfig: {
        "steps": ("int", 0), "batch_size": ("int", 1), "lr": ("real", 0.0, None, True),
        "clip_norm": ("real?", 0.0, None, True), "dim": ("int", 1), "init": ("choice",), "k": ("int", 1),
        "eval_every": ("int", 1), "n_train": ("int", 1), "tau": ("real", 0.0, None, True),
        "kappa": ("real", 0.0, None, True), "relaxation": ("choice",), "noise": ("bool",),
        "tau_schedule": ("choice",), "tau_start": ("real", 0.0, None, True), "tau_s": ("real", 0.0, None, True),
        "tau_g": ("real", 0.0, None, True), "kl_reduction": ("choice",), "emdr_per": ("choice",),
        "adist_mode": ("choice",), "supervised_form": ("choice",), "reranker": ("choice",),
        "exact_kappa": ("real", 0.0, None, True), "rloo_kappa": ("real", 0.0, None, True), "samples": ("int", 2),
        "rloo_score": ("choice",),
    },
    TrainReaderConfig: {
        "reader": ("choice",), "steps": ("int", 1), "batch_size": ("int", 1), "lr": ("real", 0.0, None, True),
        "warmup": ("int", 0), "min_lr_ratio": ("real", 0.0, 1.0, False), "clip_norm": ("real?", 0.0, None, True),
        "weight_decay": ("real", 0.0, None, False), "mode_probs": ("probs", 6),
        "hop1_share": ("real", 0.0, 1.0, False), "flag_probs": ("probs", 3), "checkpoint_every": ("int", 1),
        "dtype": ("choice",), "log_every": ("int", 1),
    },
    DataConfig: {
        "n_train": ("int", 1), "n_dev": ("int", 1), "n_test": ("int", 1), "n_candidates": ("int", 1),
        "k": ("int", 1), "two_hop_share": ("real", 0.0, 1.0, False), "n_names": ("int", 1),
        "n_per_type": ("int", 1), "relations": ("relations",), "n_subject": ("int", 0), "n_target": ("int", 0),
        "n_bridge": ("int", 0), "max_tries": ("int", 1),
    },
}

CASES = [(cls, name) for cls, fields in FIELDS.items() for name in fields]

ANY_JUNK = st.sampled_from([None, [1], {"a": 1}, (), b"1", 1j, object()])


def _bad_values(kind):
    """(strategy of wrong-type values, strategy of wrong values) for a field kind."""
    k = kind[0]
    if k == "int":
        lo = kind[1]
        return (st.one_of(ANY_JUNK, st.booleans(),
                          st.floats(allow_nan=True), st.text(max_size=3), st.just(np.float64(2.0))),
                st.integers(max_value=lo - 1))
    if k in ("real", "real?"):
        _, lo, hi, lo_open = kind
        below = st.floats(max_value=lo if lo_open else float(np.nextafter(lo, -np.inf)))
        above = st.floats(min_value=hi, exclude_min=True) if hi is not None else st.nothing()
        junk = ANY_JUNK.filter(lambda v: v is not None) if k == "real?" else ANY_JUNK
        return (st.one_of(junk, st.booleans(), st.text(max_size=3), st.just(np.bool_(True))),
                st.one_of(st.sampled_from([NAN, INF, -INF]), below, above))
    if k == "choice":
        return (st.one_of(ANY_JUNK, st.booleans(), st.integers()),
                st.text(max_size=5).map(lambda t: f"x{t}?"))  # never one of the choices
    if k == "bool":
        return st.one_of(ANY_JUNK, st.integers(0, 1), st.text(max_size=3), st.floats()), st.nothing()
    if k == "probs":
        n = kind[1]
        ok = [1.0 / n] * n
        typed = st.one_of(st.sampled_from([None, "abc", 3, 1.0, {"a": 1}]),
                          st.tuples(st.integers(0, n - 1), st.one_of(st.text(max_size=2), st.booleans(),
                                                                       st.none(), st.just([0.5])))
                          .map(lambda iv: tuple(iv[1] if j == iv[0] else x for j, x in enumerate(ok))))
        valued = st.one_of(
            st.tuples(st.integers(0, n - 1), st.sampled_from([NAN, INF, -INF, -0.5, 1.5]))
            .map(lambda iv: tuple(iv[1] if j == iv[0] else x for j, x in enumerate(ok))),
            st.integers(0, 8).filter(lambda m: m != n).map(lambda m: (1.0 / max(m, 1),) * m),
            st.floats(0.0, 1.0).filter(lambda v: abs(v * n - 1.0) > 1e-6).map(lambda v: (v,) * n))
        return typed, valued
    if k == "relations":
        return (st.one_of(st.sampled_from([None, 3, "born_in", {"born_in": 1}]),
                          st.tuples(st.just("born_in"), st.one_of(st.integers(), st.none(), st.booleans()))),
                st.one_of(st.just(()), st.tuples(st.just("born_in"), st.text(max_size=5))
                          .filter(lambda t: t[1] not in ("lives_in", "works_for"))))
    raise AssertionError(kind)


def test_every_config_field_has_a_kind():
    for cls, fields in FIELDS.items():
        assert set(fields) == {f.name for f in dataclasses.fields(cls)}, cls.__name__


@pytest.mark.parametrize("cls,name", CASES, ids=[f"{c.__name__}.{n}" for c, n in CASES])
@given(data=st.data())
@settings(max_examples=30)
def test_every_config_field_rejects_bad_values_by_name(cls, name, data):
    typed, valued = _bad_values(FIELDS[cls][name])
    wrong_type = data.draw(st.booleans())
    value = data.draw(typed if wrong_type else valued)
    if cls is TrainReaderConfig and isinstance(value, list) and FIELDS[cls][name][0] == "probs":
        assume(False)  # a list is JSON's spelling of the tuple and accepted
    expect = TypeError if wrong_type else ValueError
    with pytest.raises(expect, match=rf"^{cls.__name__}: {re.escape(name)}(\[\d+\])?="):
        cls(**{name: value})


@pytest.mark.parametrize("cls", list(FIELDS))
def test_defaults_and_json_lists_are_accepted(cls):
    cfg = cls()
    d = dataclasses.asdict(cfg)
    d = {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}  # as they come back from JSON
    assert dataclasses.astuple(cls(**d)) == dataclasses.astuple(cfg)
    if cls is not DataConfig:
        assert cls(clip_norm=None).clip_norm is None


# ------------------------------------------------------------------------------------------ seeds

BAD_SEEDS = st.one_of(st.integers(max_value=-1), st.floats(), st.text(max_size=3), st.booleans(),
                      st.none(), st.just(np.float64(1.0)), st.just([1]))


@given(seed=BAD_SEEDS)
@settings(max_examples=40)
def test_bad_seeds_are_named(seed):
    expect = ValueError if isinstance(seed, int) and not isinstance(seed, bool) else TypeError
    for fn, call in (("init_reranker", lambda: init_reranker(8, 4, seed)),
                     ("make_dataset", lambda: make_dataset(DataConfig(n_train=5, n_dev=2, n_test=2), seed))):
        with pytest.raises(expect, match=rf"^{fn}: seed="):
            call()


def test_seed_none_is_not_silently_random():
    with pytest.raises(TypeError, match=r"init_reranker: seed=None; expected an int >= 0 \(None would draw"):
        init_reranker(8, 4, None, init="random")
    assert check_seed("f", np.int64(3)) == 3


# ------------------------------------------------------------------------------------------ reranker ids, caches


def _reranker_batch():
    params = init_reranker(8, 4, 0)
    q = np.array([[1, 2], [3, 0]])  # (B=2, Lq=2)
    d = np.array([[[1, 2], [4, 5], [6, 0]], [[3, 3], [7, 1], [2, 0]]])  # (2, N=3, Ld=2)
    valid = np.array([[True, True, False], [True, True, True]])
    return params, q, d, valid


@given(where=st.sampled_from(["question", "docs"]), bad=st.one_of(st.integers(-2**62, -1), st.integers(8, 2**62)))
def test_reranker_rejects_token_ids_out_of_range(where, bad):
    params, q, d, valid = _reranker_batch()
    q, d = q.copy(), d.copy()
    (q if where == "question" else d).flat[1] = bad
    with pytest.raises(ValueError, match=rf"reranker_forward: {where}=.*token ids in \[0, 8\)"):
        reranker_forward(params, q, d, valid=valid)


def _caches():
    s = np.array([[0.3, -0.2, 0.5], [0.1, 0.0, -0.4]])
    gold = np.array([[True, False, False], [False, True, True]])
    lp = -np.abs(np.random.default_rng(0).standard_normal((2, 3, 2)))
    tm = np.ones((2, 2), dtype=bool)
    params, q, d, valid = _reranker_batch()
    return {
        ("supervised_backward", "SupervisedCache", "supervised_forward"): supervised_forward(s, gold)[1],
        ("kl_distill_backward", "KLCache", "kl_distill_forward"): kl_distill_forward(s, s[::-1].copy())[1],
        ("emdr_backward", "EMDRCache", "emdr_forward"): emdr_forward(s, lp, tm)[1],
        ("reranker_backward", "RerankerCache", "reranker_forward"): reranker_forward(params, q, d, valid=valid)[1],
    }


BACKWARDS = {"supervised_backward": supervised_backward, "kl_distill_backward": kl_distill_backward,
             "emdr_backward": emdr_backward, "reranker_backward": lambda g, c: reranker_backward(g, c)}


def test_every_backward_names_a_wrong_cache():
    caches = _caches()
    for (fn, cls, fwd), own in caches.items():
        others = [c for key, c in caches.items() if key[0] != fn]
        up = np.zeros((2, 3)) if fn == "reranker_backward" else 1.0
        for bad in [None, {}, (1, 2), own._asdict(), *others]:
            with pytest.raises(TypeError, match=rf"^{fn}: cache=.*; expected the {cls} returned by {fwd}$"):
                BACKWARDS[fn](up, bad)
        assert np.isfinite(BACKWARDS[fn](up, own)["E"] if fn == "reranker_backward"
                           else BACKWARDS[fn](up, own)).all()


@pytest.mark.parametrize("bad,exc", [(NAN, ValueError), (INF, ValueError), (-INF, ValueError),
                                     (np.float32("nan"), ValueError), (np.array(NAN), ValueError),
                                     (np.ones(2), ValueError), ("1", TypeError), (None, TypeError),
                                     (True, TypeError)])
def test_loss_backwards_name_a_bad_dloss(bad, exc):
    for (fn, _, _), cache in _caches().items():
        if fn == "reranker_backward":
            continue
        with pytest.raises(exc, match=rf"^{fn}: dloss"):
            BACKWARDS[fn](bad, cache)


def test_reranker_backward_names_nan_dscores_on_valid_candidates_only():
    cache = _caches()[("reranker_backward", "RerankerCache", "reranker_forward")]
    ds = np.zeros((2, 3))
    ds[0, 2] = NAN  # a padded candidate: ignored
    g = reranker_backward(ds, cache)
    assert all(np.isfinite(v).all() for v in g.values())
    for bad in (NAN, INF):
        ds = np.zeros((2, 3))
        ds[1, 0] = bad
        with pytest.raises(ValueError, match=r"^reranker_backward: dscores=.*finite values on every valid"):
            reranker_backward(ds, cache)


def test_validate_helpers_for_other_backwards():
    class C(tuple):
        pass

    assert check_cache("f_backward", C(), C) is not None
    with pytest.raises(TypeError, match=r"^f_backward: cache=<a dict>; expected the C returned by f_forward$"):
        check_cache("f_backward", {}, C, forward="f_forward")
    with pytest.raises(TypeError, match=r"^f: cache=None; expected the C or int$"):
        check_cache("f", None, (C, int))
    assert check_dloss("f", np.float32(2.0)) == 2.0
    with pytest.raises(ValueError, match=r"^f: dloss.shape=\(2,\); expected \(\)"):
        check_dloss("f", np.ones(2))


# ------------------------------------------------------------------------------------------ metrics, optimizer


@pytest.mark.parametrize("call,match", [
    (lambda: mean_exact_match(5, 5), r"^mean_exact_match: preds=5; expected a sequence"),
    (lambda: mean_token_f1("ab", "cd"), r"^mean_token_f1: preds='ab'; expected a sequence"),
    (lambda: mean_exact_match([[1]], None), r"^mean_exact_match: golds=None; expected a sequence"),
    (lambda: mean_exact_match(np.array(3), [[1]]), r"^mean_exact_match: preds=.*expected a sequence"),
    (lambda: exact_match(5, [1]), r"^exact_match: pred=5; expected an array"),
    (lambda: exact_match([1.5], [1]), r"^exact_match: pred.dtype=float64; expected integer"),
    (lambda: token_f1([1], "x"), r"^token_f1: gold='x'; expected an array"),
    (lambda: exact_match([1], [1], pad_id=None), r"^exact_match: pad_id=None"),
    (lambda: ranking_metrics(np.zeros((2, 3)), np.zeros((2, 3), bool), True), r"^ranking_metrics: k=True"),
    (lambda: ranking_metrics(np.zeros((2, 3)), np.zeros((2, 3), int), 1), r"^ranking_metrics: gold.dtype=int64"),
    (lambda: ranking_metrics("abc", np.zeros((2, 3), bool), 1), r"^ranking_metrics: scores='abc'"),
])
def test_metrics_name_wrong_types(call, match):
    with pytest.raises(TypeError, match=match):
        call()


@pytest.mark.parametrize("kw,exc,name", [
    ({"lr": INF}, ValueError, "lr"), ({"lr": NAN}, ValueError, "lr"), ({"lr": True}, TypeError, "lr"),
    ({"lr": "a"}, TypeError, "lr"), ({"lr": -1.0}, ValueError, "lr"),
    ({"weight_decay": INF}, ValueError, "weight_decay"), ({"weight_decay": "a"}, TypeError, "weight_decay"),
    ({"clip_norm": -1.0}, ValueError, "clip_norm"), ({"clip_norm": "a"}, TypeError, "clip_norm"),
    ({"eps": NAN}, ValueError, "eps"), ({"betas": (1.0, 0.9)}, ValueError, "betas"),
    ({"betas": ("a", 0.9)}, TypeError, r"betas\[0\]"), ({"betas": 0.9}, TypeError, "betas"),
    ({"decay_filter": "W"}, TypeError, "decay_filter"),
])
def test_adam_step_names_every_bad_argument(kw, exc, name):
    params = {"a": np.ones(3)}
    args = {"lr": 0.1, **kw}
    with pytest.raises(exc, match=rf"^adam_step: {name}="):
        adam_step(params, {"a": np.ones(3)}, adam_init(params), **args)


def test_adam_step_names_a_bad_state_and_grads():
    params = {"a": np.ones(3)}
    with pytest.raises(TypeError, match=r"^adam_step: state="):
        adam_step(params, {"a": np.ones(3)}, None, lr=0.1)
    with pytest.raises(TypeError, match=r"^adam_step: grads\['a'\]="):
        adam_step(params, {"a": [1.0, 2.0, 3.0]}, adam_init(params), lr=0.1)
    with pytest.raises(TypeError, match=r"^adam_step: state\['t'\]="):
        adam_step(params, {"a": np.ones(3)}, {**adam_init(params), "t": 1.5}, lr=0.1)


# ------------------------------------------------------------------------------------------ losses at any scale

DTYPES = {"float32": np.float32, "float64": np.float64}
LOSSES = ["supervised/each", "supervised/any", "kl/T||R/mean", "kl/R||T/batchmean", "kl/T||R/sum",
          "emdr/token", "emdr/sequence"]


def _run(name, scores, teacher, tau_s, tau_g):
    """(loss, dscores) of one loss; its inputs are a (B, N) scores/teacher pair of one dtype."""
    B, N = scores.shape
    kind, *opt = name.split("/")
    if kind == "supervised":
        gold = np.zeros((B, N), dtype=bool)
        gold[np.arange(B), np.argmin(np.where(np.isfinite(scores), teacher, np.inf), axis=1)] = True
        loss, cache = supervised_forward(scores, gold, tau_s=tau_s, form=opt[0])
        return loss, supervised_backward(1.0, cache)
    if kind == "kl":
        loss, cache = kl_distill_forward(scores, teacher, tau_s=tau_s, tau_g=tau_g, direction=opt[0],
                                         reduction=opt[1])
        return loss, kl_distill_backward(1.0, cache)
    lp = -np.abs(np.tanh(teacher[:, :, None] * np.array([1.0, -0.5], dtype=teacher.dtype))) * 3  # (B, N, 2)
    loss, cache = emdr_forward(scores, lp.astype(scores.dtype), np.ones((B, 2), dtype=bool), tau_s=tau_s,
                               per=opt[0])
    return loss, emdr_backward(1.0, cache)


def _rows(dt, x, offset, spread):
    with np.errstate(over="ignore"):
        return (np.float64(offset) + np.asarray(x, dtype=np.float64) * spread).astype(dt)  # (B, N)


unit = st.floats(-1.0, 1.0)


@given(dtype=st.sampled_from(sorted(DTYPES)), name=st.sampled_from(LOSSES),
       x=st.lists(st.lists(unit, min_size=4, max_size=4), min_size=1, max_size=3),
       gx=st.lists(unit, min_size=4, max_size=4),
       off_exp=st.floats(0.0, 1.0), near_top=st.integers(0, 64), top=st.booleans(), off_sign=st.sampled_from([-1.0, 1.0]), g_exp=st.floats(0.0, 1.0),
       shrink=st.integers(4, 80), tau_s=st.sampled_from([1e-3, 0.01, 0.3, 1.0, 7.0]),
       tau_g=st.sampled_from([0.01, 1.0, 5.0]))
@settings(max_examples=150)
def test_losses_are_finite_and_shift_invariant_at_any_offset(dtype, name, x, gx, off_exp, near_top, top, off_sign,
                                                               g_exp, shrink, tau_s, tau_g):
    """Scores = offset + spread·x with |offset| up to finfo.max / 2 and spread/τ_s well inside the range (and
    the teacher's likewise):
    loss and gradient are finite and equal those of the same scores centred on their row maximum."""
    dt = DTYPES[dtype]
    big = float(np.finfo(dt).max)
    # |offset| log-uniform in 1 .. finfo.max / 2, or near the top of the range, (finfo.max / 2) / 2**near_top,
    # where w / τ_s itself overflows
    offset = off_sign * (big / 2 * 2.0 ** -near_top if top else 10.0 ** (off_exp * np.log10(big / 2)))
    spread = min(tau_s, 1.0) * big * 2.0 ** -shrink
    s = _rows(dt, x, offset, spread)  # (B, 4)
    # the teacher's log-probabilities enter the R||T gradient divided by τ_s: keep (spread_g/τ_g)/τ_s in range
    g = _rows(dt, [gx] * len(x), -offset * g_exp, min(tau_g, 1.0) * min(tau_s, 1.0) * big * 2.0 ** -shrink)
    loss, ds = _run(name, s, g, tau_s, tau_g)
    assert np.isfinite(loss) and np.isfinite(ds).all() and ds.dtype == dt
    with np.errstate(over="ignore"):
        c = s - s.max(axis=1, keepdims=True)  # (B, 4) the same scores, centred
        # the teacher too for KL (p_T is shift invariant); elsewhere it only picks the gold and token log-probs
        gc = g - g.max(axis=1, keepdims=True) if name.startswith("kl") else g
    loss_c, ds_c = _run(name, c, gc, tau_s, tau_g)
    rtol = 1e-3 if dt is np.float32 else 1e-9
    z = float(np.abs(c).max()) / tau_s + 1.0  # the scale of the scaled scores
    assert abs(float(loss) - float(loss_c)) <= rtol * z
    np.testing.assert_allclose(ds, ds_c, rtol=rtol, atol=rtol * float(np.abs(ds_c).max() + 1e-30))


@given(dtype=st.sampled_from(sorted(DTYPES)), name=st.sampled_from(LOSSES), data=st.data(),
       tau_s=st.floats(3e-39, 100.0), tau_g=st.floats(3e-39, 100.0), pad=st.booleans())
@settings(max_examples=200)
def test_losses_at_any_scale_are_finite_or_a_named_overflow(dtype, name, data, tau_s, tau_g, pad):
    """Any finite scores and teacher of the dtype, any τ: a finite loss and gradient, or a ValueError that
    says the loss (or the gradient) is beyond the dtype's range; never NaN, inf or another error."""
    dt = DTYPES[dtype]
    width = 32 if dt is np.float32 else 64
    vals = st.floats(allow_nan=False, allow_infinity=False, width=width)
    B = data.draw(st.integers(1, 3))
    s = np.array(data.draw(st.lists(st.lists(vals, min_size=4, max_size=4), min_size=B, max_size=B)), dtype=dt)
    g = np.array(data.draw(st.lists(st.lists(vals, min_size=4, max_size=4), min_size=B, max_size=B)), dtype=dt)
    if pad:
        s[:, -1] = -np.inf
    try:
        loss, ds = _run(name, s, g, tau_s, tau_g)
    except ValueError as e:
        assert re.search(r"(scores=.*keeps the loss within|dloss=.*a gradient within) " + dtype, str(e)), str(e)
        return
    assert np.isfinite(loss) and np.isfinite(ds).all()
    if pad:
        assert (ds[:, -1] == 0).all()


@pytest.mark.parametrize("dtype,scale", [("float32", 1e37), ("float32", 3e38), ("float64", 1e306),
                                         ("float64", -1e306), ("float64", 1.7e308)])
def test_the_audits_extremes_are_finite(dtype, scale):
    """The audit's reproductions: scores near 1e37 (float32) and ±1e306 (float64), of both signs in a row,
    with Atlas's τ = 0.01. The teacher ranks like the student here, so the true KL is representable (~0)
    and must come out finite; the gold (supervised) is the student's top document."""
    dt = DTYPES[dtype]
    s = np.array([[1.0, 0.999, -0.998, -0.5], [0.9, 1.0, -0.2, 0.95]]) * scale
    s = s.astype(dt)
    for name in LOSSES:
        loss, ds = _run(name, s, s if "kl" in name else -s, 0.01, 0.01)
        assert np.isfinite(loss) and np.isfinite(ds).all(), name


@pytest.mark.parametrize("dtype,tau", [("float32", 1e-39), ("float32", 2.2e-308), ("float64", 5e-324),
                                       ("float64", 5e-309)])
def test_a_tau_too_small_for_the_dtype_is_named(dtype, tau):
    """1/τ must be a number of the scores' dtype: 5e-324 is 0 in float32 and 1/5e-324 overflows float64."""
    s = np.array([[0.0, 0.0, 1.0]], dtype=DTYPES[dtype])
    for kw in ({"tau_s": tau}, {"tau_g": tau}):
        name = next(iter(kw))
        with pytest.raises(ValueError, match=rf"^kl_distill_forward: {name}=.*; expected a finite number >= "):
            kl_distill_forward(s, s, **kw)
    with pytest.raises(ValueError, match=r"^supervised_forward: tau_s="):
        supervised_forward(s, s > 0, tau_s=tau)
    with pytest.raises(ValueError, match=r"^emdr_forward: tau_s="):
        emdr_forward(s, -np.ones((1, 3, 1), dtype=s.dtype), np.ones((1, 1), dtype=bool), tau_s=tau)


def test_reranker_names_non_finite_parameters():
    params, q, d, valid = _reranker_batch()
    for key in ("E", "W"):
        bad = {**params, key: params[key].copy()}
        bad[key][1, 0] = NAN
        with pytest.raises(ValueError, match=rf"^reranker_forward: params\['{key}'\]=.*finite values"):
            reranker_forward(bad, q, d, valid=valid)
