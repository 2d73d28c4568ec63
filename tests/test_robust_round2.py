"""Robustness, round two (issue 21): every bad value of the functions audited there is a TypeError (wrong type)
or a ValueError (wrong value) whose message starts ``fn: name=`` with the argument's name as the caller passed
it; nothing fails deep inside, nothing is silently accepted or clamped.

One section per class of the issue; each property test draws the bad values of its class.
"""
import argparse
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mini_gumbel.data import make_dataset
from mini_gumbel.experiment.configs import RerankConfig, default_reader_config
from mini_gumbel.experiment.evaluate import check_kappa_grid
from mini_gumbel.experiment.flags import directory
from mini_gumbel.experiment.gradient_study import GradientStudyConfig, check_against_data
from mini_gumbel.experiment.readers import reader_inputs
from mini_gumbel.experiment.train_reranker import untrained_score_std
from mini_gumbel.gradcheck import check_grads, jacobian_check, numerical_gradient
from mini_gumbel.gumbel import (RELAXATIONS, check_tau_kappa, gumbel_noise, relaxed_topk_forward, tau_kappa_issue,
                                topk_mask)
from mini_gumbel.gumbel_reranking import gumbel_reranking_loss, reader_memory_of, rerank
from mini_gumbel.losses import adist_teacher
from mini_gumbel.reader import ReaderConfig, init_reader, reader_forward
from mini_gumbel.reranker import init_reranker
from mini_gumbel.timing import time_interleaved
from mini_gumbel.two_pass_reader import TwoPassBatch, soft_flags_backward, two_pass_forward
from mini_gumbel.validate import check_array, check_finite_output, show
from reader_batches import tiny_world

NAN, INF = float("nan"), float("inf")

# a value of the wrong type for an int argument, and one of the right type but out of range
NOT_AN_INT = st.one_of(st.none(), st.booleans(), st.floats(), st.text(max_size=3), st.just(np.float64(2.0)),
                       st.just([2]), st.just(np.array(2)), st.just(2 + 0j), st.just(np.bool_(True)))
NOT_A_BOOL = st.one_of(st.none(), st.integers(0, 1), st.floats(), st.text(max_size=3), st.just([True]))


def _raises(exc, fn, name):
    return pytest.raises(exc, match=rf"^{re.escape(fn)}: {re.escape(name)}=")


# ---------------------------------------------------------------------------------------------------------
# 1. k: None (and every other non-int) is an error, not "no k"


def _k_calls(k):
    w = np.random.default_rng(0).standard_normal((2, 6))
    G = gumbel_noise((2, 3, 6), np.random.default_rng(1))
    calls = [("topk_mask", lambda: topk_mask(w, k))]
    for r in RELAXATIONS:
        calls.append(("relaxed_topk_forward",
                      lambda r=r: relaxed_topk_forward(w, G if r == "max" else None, k, tau=0.5, relaxation=r)))
    return calls


@given(k=st.one_of(NOT_AN_INT, st.integers(max_value=0), st.integers(min_value=7)))
@settings(max_examples=40)
def test_every_bad_k_is_named(k):
    exc = ValueError if isinstance(k, int) and not isinstance(k, bool) else TypeError
    for fn, call in _k_calls(k):
        with _raises(exc, fn, "k"):
            call()


def test_k_none_is_not_no_k():
    with pytest.raises(TypeError, match=r"^topk_mask: k=None; expected an int with 1 <= k <= N=6$"):
        topk_mask(np.zeros((2, 6)), None)
    with pytest.raises(TypeError, match=r"^relaxed_topk_forward: k=None; expected an int"):
        relaxed_topk_forward(np.zeros((2, 6)), None, None, tau=0.5, relaxation="max")


# ---------------------------------------------------------------------------------------------------------
# 2. validate.show never raises, whatever it is shown


class _BadRepr:
    def __repr__(self):
        raise RuntimeError("no repr")


class _Descriptors:  # a class whose shape/dtype/ndim are class attributes that are not numbers
    shape = property(lambda self: (1,))
    dtype = "f8"
    ndim = "x"


ODD = st.sampled_from([np.float16, np.float64, int, float, np.ndarray, np.dtype, type, _BadRepr(), _BadRepr,
                       _Descriptors, _Descriptors(), np.generic, np.random.Generator, object(), "x" * 1000,
                       np.array(1.0), np.zeros((0, 3)), np.float32(1.5), slice(1, 2), Ellipsis])


@given(value=ODD)
def test_show_never_raises(value):
    s = show(value)
    assert isinstance(s, str) and 0 < len(s) <= 100


@given(dtype=st.sampled_from([np.float16, np.int64, np.bool_, int, "float16", np.longdouble, np.complex128,
                              object, list, None, "no-such-dtype", (int, -1)]))
def test_a_dtype_of_any_kind_is_named(dtype):
    with _raises(TypeError, "init_reader", "dtype"):
        init_reader(ReaderConfig(vocab_size=20), 0, dtype=dtype)


def test_show_names_numpy_types():
    assert show(np.float16) == "numpy.float16" and show(int) == "int"
    with pytest.raises(TypeError, match=r"^init_reader: dtype=numpy.float16; expected one of \['float32', "
                                        r"'float64'\]$"):
        init_reader(ReaderConfig(vocab_size=20), 0, dtype=np.float16)


# ---------------------------------------------------------------------------------------------------------
# 3. the method file checks every argument, by its own name, before it draws noise

DATA = tiny_world(n_train=12, n_dev=2, n_test=2, k=2)


@pytest.fixture(scope="module")
def method_case():
    splits = make_dataset(DATA, 0)
    b = splits.train.batch(np.arange(3))
    out = {}
    for reader in ("two_pass", "fid"):
        cfg = default_reader_config(DATA, reader, d_model=8, d_ff=8, n_heads=2, n_enc_layers=1, n_dec_layers=1)
        out[reader] = (cfg, init_reader(cfg, 0), reader_inputs(b, cfg))
    return b, out


def _loss_kwargs(method_case, reader):
    b, readers = method_case
    cfg, params, x = readers[reader]
    scores = np.random.default_rng(0).standard_normal(b.gold.shape)  # (3, 6)
    return dict(scores=scores, batch=x, reader_params=params, reader_cfg=cfg, rng=np.random.default_rng(0), k=2,
                tau=0.5, kappa=1.0, relaxation="max", noise=True, memory=None)


def _call(kw):
    kw = dict(kw)
    return gumbel_reranking_loss(kw.pop("scores"), kw.pop("batch"), kw.pop("reader_params"), kw.pop("reader_cfg"),
                                 kw.pop("rng"), **kw)


def _method_bad(kw):
    """(argument, bad value, exception, name in the message) for every argument of gumbel_reranking_loss."""
    s, x = kw["scores"], kw["batch"]
    fid = not isinstance(x, TwoPassBatch)
    ctx_name = "batch.ctx" if fid else "batch.ctx1"
    swap = (lambda b, **f: b._replace(**f)) if not fid else (lambda b, **f: _Fid(**{**_fid_fields(b), **f}))
    return [
        ("scores", s.tolist(), TypeError, "scores"), ("scores", s.astype(int), TypeError, "scores.dtype"),
        ("scores", s > 0, TypeError, "scores.dtype"), ("scores", s[0], ValueError, "scores.shape"),
        ("scores", s[None], ValueError, "scores.shape"), ("scores", np.where(s > 0, NAN, s), ValueError, "scores"),
        ("scores", s[:2], ValueError, f"{ctx_name}.shape"), ("scores", s[:, :5], ValueError, f"{ctx_name}.shape"),
        ("k", 2.0, TypeError, "k"), ("k", None, TypeError, "k"), ("k", True, TypeError, "k"),
        ("k", 7, ValueError, "k"), ("k", 0, ValueError, "k"),
        ("tau", 0.0, ValueError, "tau"), ("tau", "0.5", TypeError, "tau"), ("tau", NAN, ValueError, "tau"),
        ("kappa", -1.0, ValueError, "kappa"), ("kappa", None, TypeError, "kappa"),
        ("relaxation", "soft", ValueError, "relaxation"), ("relaxation", 1, TypeError, "relaxation"),
        ("noise", "no", TypeError, "noise"), ("noise", 0, TypeError, "noise"), ("noise", None, TypeError, "noise"),
        ("rng", 0, TypeError, "rng"), ("rng", None, TypeError, "rng"),
        ("batch", None, TypeError, "batch"), ("batch", (1, 2), TypeError, "batch"),
        ("reader_params", {}, ValueError, "reader_params"), ("reader_params", [1], TypeError, "reader_params"),
        ("reader_params", None, TypeError, "reader_params"),
        ("reader_cfg", None, TypeError, "reader_cfg"), ("memory", "m", TypeError, "memory"),
        ("batch", _rows(x, 2), ValueError, f"{ctx_name}.shape"),  # a batch of 2 rows for 3 rows of scores
        ("batch", swap(x, ans_in=x.ans_in[:2]), ValueError, "batch.ans_in.shape"),
        ("batch", swap(x, ans_out=x.ans_out.astype(float)), TypeError, "batch.ans_out.dtype"),
    ]


class _Fid:
    def __init__(self, **f):
        self.__dict__.update(f)


def _rows(x, n):
    return _Fid(**{k: v[:n] for k, v in _fid_fields(x).items()}) if not isinstance(x, TwoPassBatch) else \
        TwoPassBatch(*(a[:n] for a in x))


def _fid_fields(b):
    return {"ctx": b.ctx, "ans_in": b.ans_in, "ans_out": b.ans_out}


@pytest.mark.parametrize("reader", ["two_pass", "fid"])
@given(data=st.data())
@settings(max_examples=30)
def test_the_method_names_every_bad_argument(method_case, reader, data):
    kw = _loss_kwargs(method_case, reader)
    arg, bad, exc, name = data.draw(st.sampled_from(_method_bad(kw)))
    rng = kw["rng"]
    before = rng.bit_generator.state
    with _raises(exc, "gumbel_reranking_loss", name):
        _call({**kw, arg: bad})
    assert rng.bit_generator.state == before  # nothing drawn before the check


def test_the_method_still_runs_and_rerank_checks_k(method_case):
    loss, dscores = _call(_loss_kwargs(method_case, "two_pass"))
    assert np.isfinite(loss) and dscores.shape == (3, 6)
    b, readers = method_case
    cfg, params, x = readers["two_pass"]
    mem = reader_memory_of(params, cfg, x)
    with _raises(ValueError, "gumbel_reranking_loss", "memory.shape"):
        _call({**_loss_kwargs(method_case, "two_pass"), "memory": mem.take(np.array([0, 1]))})
    ranker = init_reranker(200, 4, 0)
    for k, exc in ((7, ValueError), (0, ValueError), (2.0, TypeError), (None, TypeError)):
        with _raises(exc, "rerank", "k"):
            rerank(ranker, b.question, b.docs, k)


# ---------------------------------------------------------------------------------------------------------
# 4. two_pass_forward checks its inputs before it uses them; 5. soft_flags_backward checks its own

V = 13
CFG2 = ReaderConfig(vocab_size=V, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=8, max_ctx_len=6,
                    max_ans_len=4, exact_match=True)


def _two_pass_batch(B=3, N=2, L=5, T=3):
    rng = np.random.default_rng(0)
    ctx1, ctx2 = rng.integers(3, V, (B, N, L)), rng.integers(3, V, (B, N, L))
    a = [rng.integers(3, V, (B, T)) for _ in range(4)]
    for x in a[0], a[2]:
        x[:, 0] = CFG2.bos_id
    return TwoPassBatch(ctx1, (ctx1 == ctx1[:, :1, :1]).astype(float), a[0], a[1], ctx2, a[2], a[3],
                        np.array([1, 2, 2])[:B])


@given(data=st.data())
@settings(max_examples=40)
def test_two_pass_forward_names_every_bad_input_before_using_it(data):
    P = init_reader(CFG2, 0)
    b = _two_pass_batch()
    nan = dict(P)
    nan["enc.0.attn.Wqkv"] = P["enc.0.attn.Wqkv"] * NAN
    cases = [
        (list(P.values()), b, TypeError, "params"), ({}, b, ValueError, "params"), (None, b, TypeError, "params"),
        (nan, b, ValueError, "params['enc.0.attn.Wqkv']"),
        (P, b._replace(ans_in=b.ans_in[:2]), ValueError, "batch.ans_in.shape"),
        (P, b._replace(ans_out=b.ans_out[:, :2]), ValueError, "batch.ans_out.shape"),
        (P, b._replace(ans1_in=b.ans1_in[:2]), ValueError, "batch.ans1_in.shape"),
        (P, b._replace(ans_in=b.ans_in + V), ValueError, "batch.ans_in"),
        (P, b._replace(flags1=b.flags1[:, :1]), ValueError, "batch.flags1.shape"),
        (P, b._replace(ctx2=b.ctx2.astype(float)), TypeError, "batch.ctx2.dtype"),
        (P, b._replace(hops=None), TypeError, "hops"),
    ]
    params, batch, exc, name = data.draw(st.sampled_from(cases))
    with _raises(exc, "two_pass_forward", name):
        two_pass_forward(params, CFG2, batch)


def test_nan_parameters_are_named_not_a_nan_loss():
    P = init_reader(CFG2, 0)
    b = _two_pass_batch()
    loss, _ = two_pass_forward(P, CFG2, b)
    assert np.isfinite(loss)
    for key in ("lm.W", "enc.0.attn.Wqkv", "dec.0.cross.Wkv"):
        bad = {**P, key: P[key].copy()}
        bad[key].flat[0] = NAN
        with pytest.raises(ValueError, match=rf"^two_pass_forward: params\['{re.escape(key)}'\]=.*finite values"):
            two_pass_forward(bad, CFG2, b)
        plain = ReaderConfig(vocab_size=V, d_model=8, n_heads=2, n_enc_layers=1, n_dec_layers=1, d_ff=8,
                             max_ctx_len=6, max_ans_len=4)
        with pytest.raises(ValueError, match=rf"^reader_forward: params\['{re.escape(key)}'\]=.*finite values"):
            reader_forward({k: v for k, v in bad.items() if k != "em_vec"}, plain, b.ctx1, b.ans_in, b.ans_out)


@given(data=st.data())
@settings(max_examples=60)
def test_soft_flags_backward_names_every_bad_input(data):
    rng = np.random.default_rng(0)
    ctx = rng.integers(0, 20, (2, 4, 6))
    d = rng.standard_normal((2, 4, 6))
    cases = [
        (d, ctx, 10, ValueError, "ctx"),  # ids up to 19 with V=10: was a silent (2, 10) result
        (d, ctx.astype(float), 20, TypeError, "ctx.dtype"), (d, ctx, 0, ValueError, "V"),
        (d, ctx, 2.5, TypeError, "V"), (d, ctx, True, TypeError, "V"), (d, ctx, None, TypeError, "V"),
        (d * NAN, ctx, 20, ValueError, "dflags"), (d[:, :3], ctx, 20, ValueError, "dflags.shape"),
        (d.astype(int), ctx, 20, TypeError, "dflags.dtype"), (d.tolist(), ctx, 20, TypeError, "dflags"),
        (d, ctx[0], 20, ValueError, "ctx.shape"),
    ]
    dflags, c, Vb, exc, name = data.draw(st.sampled_from(cases))
    with _raises(exc, "soft_flags_backward", name):
        soft_flags_backward(dflags, c, Vb)
    pad, exc = data.draw(st.sampled_from([(-1, ValueError), (0.5, TypeError), (None, TypeError)]))
    with _raises(exc, "soft_flags_backward", "pad_id"):
        soft_flags_backward(d, ctx, 20, pad_id=pad)
    assert soft_flags_backward(np.ones((2, 4, 6)), ctx, 20).shape == (2, 20)


# ---------------------------------------------------------------------------------------------------------
# 7. odds and ends


@given(where=st.integers(0, 5), bad=st.sampled_from([NAN, -1e-300, -INF]))
def test_nonneg_rejects_nan_and_negatives(where, bad):
    a = np.arange(6, dtype=float)
    a[where] = bad
    with _raises(ValueError, "f", "x"):
        check_array("f", "x", a, nonneg=True)
    assert check_array("f", "x", np.abs(a) if not np.isnan(bad) else np.arange(6.0), nonneg=True) is not None


@given(xattn=st.sampled_from([None, "abc", 3, {"probs": 1}, np.zeros((2, 3))]))
def test_adist_teacher_names_a_non_list(xattn):
    with _raises(TypeError, "adist_teacher", "xattn"):
        adist_teacher(xattn, np.zeros((1, 4), bool), np.ones((1, 2), bool), 2)


def _fw(d):
    return d["x"] ** 2, d["x"]


def _bw(g, c):
    return {"x": 2 * c * g}


@given(data=st.data())
@settings(max_examples=40)
def test_check_grads_names_every_bad_argument(data):
    x = {"x": np.array([0.3, -1.2])}
    cases = [
        (dict(forward=None), TypeError, "forward"), (dict(backward="b"), TypeError, "backward"),
        (dict(inputs=None), TypeError, "inputs"), (dict(inputs={}), ValueError, "inputs"),
        (dict(eps=0.0), ValueError, "eps"), (dict(eps=-1e-6), ValueError, "eps"), (dict(eps=NAN), ValueError, "eps"),
        (dict(eps="x"), TypeError, "eps"), (dict(tol=0.0), ValueError, "tol"), (dict(tol=None), TypeError, "tol"),
        (dict(autograd_tol=INF), ValueError, "autograd_tol"), (dict(floor=-1.0), ValueError, "floor"),
        (dict(mutation=True), TypeError, "mutation"), (dict(rng=3), TypeError, "rng"),
        (dict(use_autograd="yes"), TypeError, "use_autograd"), (dict(mask=[1]), TypeError, "mask"),
        (dict(backward=lambda g, c: {"y": c}), ValueError, "backward"),  # a gradient of no input
        (dict(fd_forward=1), TypeError, "fd_forward"),
    ]
    kw, exc, name = data.draw(st.sampled_from(cases))
    args = {"forward": _fw, "backward": _bw, "inputs": x, **kw}
    with _raises(exc, "check_grads", name):
        check_grads(args.pop("forward"), args.pop("backward"), args.pop("inputs"), **args)
    for f in (lambda: numerical_gradient(lambda v: float(v.sum()), np.ones(2), eps=0.0),
              lambda: jacobian_check(lambda v: v, np.ones(2), lambda g: g, eps=0.0)):
        with pytest.raises(ValueError, match=r": eps=0.0; expected"):
            f()


@given(kw=st.sampled_from([({"target_s": "x"}, TypeError, "target_s"), ({"target_s": -1.0}, ValueError, "target_s"),
                           ({"target_s": NAN}, ValueError, "target_s"), ({"repeats": 1.5}, TypeError, "repeats"),
                           ({"repeats": 0}, ValueError, "repeats"), ({"warmup": None}, TypeError, "warmup"),
                           ({"warmup": -1}, ValueError, "warmup")]))
def test_time_interleaved_names_every_bad_argument(kw):
    args, exc, name = kw
    with _raises(exc, "time_interleaved", name):
        time_interleaved({"a": lambda: None}, **args)


# ---------------------------------------------------------------------------------------------------------
# the public functions this round added, each over its arguments' bad values


@given(tau=st.one_of(st.floats(allow_nan=True), st.sampled_from([5e-324, 1e-320, 2e-308, 0.3])),
       kappa=st.one_of(st.floats(allow_nan=True), st.sampled_from([1e308, 4.4e307, 1.0, 6.88])))
@settings(max_examples=150)
def test_check_tau_kappa_agrees_with_the_relaxation(tau, kappa):
    """check_tau_kappa accepts exactly what relaxed_topk_forward accepts, and names the one to change."""
    w, G = np.zeros((1, 3)), np.zeros((1, 2, 3))
    try:
        relaxed_topk_forward(w, G, 2, tau=tau, kappa=kappa)
        works = None
    except ValueError as e:
        works = re.match(r"relaxed_topk_forward: (tau|kappa)=", str(e)).group(1)
    issue = None if works is None else works
    if works is None:
        assert check_tau_kappa("f", tau, kappa) == (float(tau), float(kappa))
        assert tau_kappa_issue(float(tau), float(kappa)) is None
    else:
        with _raises(ValueError, "f", {"tau": "T", "kappa": "K"}[issue]):
            check_tau_kappa("f", tau, kappa, names=("T", "K"))


@given(bad=st.sampled_from([("tau", None), ("tau", "0.3"), ("tau", True), ("kappa", [1.0]), ("kappa", np.bool_(1))]))
def test_check_tau_kappa_wrong_types(bad):
    name, v = bad
    kw = {"tau": 0.3, "kappa": 1.0, name: v}
    with _raises(TypeError, "f", name):
        check_tau_kappa("f", kw["tau"], kw["kappa"])


@given(data=st.data())
@settings(max_examples=40)
def test_check_kappa_grid_names_every_bad_argument(data):
    cases = [
        (([0.1], [1.0], 0.0), ValueError, "w_std"), (([0.1], [1.0], NAN), ValueError, "w_std"),
        (([0.1], [1.0], "1"), TypeError, "w_std"), (((), [1.0], 1.0), ValueError, "taus"),
        ((0.1, [1.0], 1.0), TypeError, "taus"), (([0.1], ["a"], 1.0), TypeError, "kappa_stds"),
        (([0.1, -1.0], [1.0], 1.0), ValueError, "taus"), (([1e-320], [1.0], 1.0), ValueError, "taus"),
        (([0.3], [2.0, 1e308], 0.7), ValueError, "kappa_stds"), (([0.3], [1.0], 1e-310), ValueError, "kappa_stds"),
    ]
    (taus, kstds, w_std), exc, name = data.draw(st.sampled_from(cases))
    with _raises(exc, "g", name):
        check_kappa_grid("g", taus, kstds, w_std)
    check_kappa_grid("g", [0.03, 1.0], [1.0, 5.0], 0.7267)  # the sweep's grid


@given(where=st.integers(0, 2), bad=st.sampled_from([NAN, INF, -INF]), name=st.sampled_from(["a", "b", "lm.W"]),
       out_bad=st.sampled_from([NAN, INF, -INF]))
def test_check_finite_output_names_the_parameter_or_the_output(where, bad, name, out_bad):
    P = {"a": np.ones(3), "b": np.ones((2, 3)), "lm.W": np.zeros(3)}
    check_finite_output("f", np.float64(1.0), P)  # a finite output: no scan, no error
    out = np.ones(3)
    out[where] = out_bad
    with _raises(ValueError, "f", "loss"):  # every parameter finite: the output itself is named
        check_finite_output("f", out, P)
    P[name] = P[name].copy()
    P[name].flat[where] = bad
    with _raises(ValueError, "f", f"params[{name!r}]"):
        check_finite_output("f", np.float64(out_bad), P)
    with _raises(TypeError, "f", "params['x']"):
        check_finite_output("f", np.float64(NAN), {"x": [1.0]})


@pytest.fixture(scope="module")
def splits():
    return make_dataset(DATA, 0)


@given(bad=st.sampled_from([("splits", None, TypeError), ("splits", [1], TypeError), ("cfg", {}, TypeError),
                            ("seed", -1, ValueError), ("seed", None, TypeError), ("seed", 1.5, TypeError)]))
def test_untrained_score_std_names_every_bad_argument(splits, bad):
    name, v, exc = bad
    kw = {"splits": splits, "cfg": RerankConfig(n_train=8, dim=8), "seed": 0, name: v}
    with _raises(exc, "untrained_score_std", name):
        untrained_score_std(kw["splits"], kw["cfg"], kw["seed"])
    assert untrained_score_std(splits, RerankConfig(n_train=8, dim=8)) > 0


@given(bad=st.sampled_from([("cfg", None, TypeError, "check_against_data"), ("cfg", {}, TypeError, "check_against_data"),
                            ("splits", "s", TypeError, "check_against_data"),
                            ("n_single", 10**6, ValueError, "GradientStudyConfig"),
                            ("n_two_hop", 10**6, ValueError, "GradientStudyConfig"),
                            ("taus", (1e-320,), ValueError, "GradientStudyConfig"),
                            ("kappa_stds", (1e308,), ValueError, "GradientStudyConfig")]))
@settings(max_examples=20)
def test_check_against_data_names_every_bad_argument(bad):
    name, v, exc, fn = bad
    if name in ("cfg", "splits"):
        args = {"cfg": GradientStudyConfig(quick=True), "splits": None, name: v}
        with _raises(exc, fn, name):
            check_against_data(args["cfg"], args["splits"])
    else:
        with _raises(exc, fn, name):
            check_against_data(GradientStudyConfig(quick=True, **{name: v}))


@given(text=st.text(alphabet=" \t\n", max_size=3))
def test_directory_refuses_empty_text(text):
    with pytest.raises(argparse.ArgumentTypeError, match="expected a directory"):
        directory(text)
    assert directory("a/b") == Path("a/b")
