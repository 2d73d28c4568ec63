"""mini_gumbel.estimators under bad input and at the edges of the number range.

Every bad argument of every public function of the subset DP, the sampler, Plackett-Luce and RLOO is a
TypeError (wrong type) or ValueError (wrong value) whose message names it in the house format
``fn: name=value; expected ...``; and any finite scores whose κ·spread fits give finite probabilities that
sum to 1, an expected value inside the range of the values and finite gradients (or a ValueError naming kappa
when the derivative itself does not fit): never NaN.
"""
import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from mini_gumbel import estimators as E

NAN, INF = float("nan"), float("inf")


@st.composite
def valid(draw, batch=None):
    """A valid problem: scores (N,) or (B, N) with padding leaving >= k real candidates per row, k, kappa, and
    m >= 2 sampled draws (subsets and orders) with their losses."""
    n = draw(st.integers(2, 6))
    k = draw(st.integers(1, n - 1))
    batched = draw(st.booleans()) if batch is None else batch
    B = draw(st.integers(1, 3))
    rng = np.random.default_rng(draw(st.integers(0, 2**31)))
    W = rng.standard_normal((B, n))
    for b in range(B):
        W[b, rng.choice(n, size=draw(st.integers(0, n - k)), replace=False)] = -np.inf
    scores = W if batched else W[0]
    m = draw(st.integers(2, 4))
    subsets, orders = E.sample_subsets(scores, k, rng, samples=m)
    losses = rng.standard_normal(subsets.shape[:-1])
    return {"scores": scores, "k": k, "kappa": float(draw(st.floats(0.1, 5.0))), "subsets": subsets,
            "orders": orders, "losses": losses, "rng": rng}


def named(call, exc, fn, name):
    with pytest.raises(exc) as e:
        call()
    msg = str(e.value)
    assert msg.startswith(f"{fn}: {name}") and "; expected " in msg, msg


# bad values with the exception they must raise, by kind of argument (scores-, k- and shape-dependent ones are
# built from the valid problem)
BAD_KAPPA = [(0.0, ValueError), (-1.0, ValueError), (NAN, ValueError), (INF, ValueError), (-INF, ValueError),
             ("1", TypeError), (True, TypeError), (None, TypeError), (1j, TypeError), (np.array([1.0]), TypeError)]
BAD_INT_TYPE = [None, 2.0, True, "2", np.float64(2.0), [2]]
BAD_DLOSS = [("1", TypeError), (True, TypeError), (None, TypeError), (NAN, ValueError), (INF, ValueError),
             (np.zeros(2), ValueError)]


def bad_scores(p):
    """(value, exception) pairs for the scores argument of a problem p."""
    s = p["scores"]
    nan, pinf, pad, wide = s.copy(), s.copy(), s.copy(), s.copy()
    nan[..., 0] = np.nan
    pinf[..., -1] = np.inf
    pad[..., :] = -np.inf
    wide[..., 0], wide[..., 1] = -1e308, 1e308  # max - min overflows
    return [(s.tolist(), TypeError), (None, TypeError), ("scores", TypeError), (3.0, TypeError),
            (np.zeros(s.shape, dtype=np.int64), TypeError), (np.array(1.0), ValueError),
            (np.zeros((2, 2, s.shape[-1])), ValueError),
            (nan, ValueError), (pinf, ValueError), (pad, ValueError), (np.zeros((0, s.shape[-1])), ValueError),
            (wide, ValueError)]


def bad_k(p):
    n = p["scores"].shape[-1]
    return [(v, TypeError) for v in BAD_INT_TYPE] + [(0, ValueError), (-1, ValueError), (n + 1, ValueError)]


def bad_array(shape, *, ints=False):
    """(value, exception) pairs for an array argument of the given shape (floats unless ints)."""
    good = np.zeros(shape, dtype=np.int64 if ints else np.float64)
    out = [(None, TypeError), (good.tolist(), TypeError), (np.zeros(shape + (1,), dtype=good.dtype), ValueError),
           (np.zeros((7,) + shape, dtype=good.dtype), ValueError)]
    if ints:
        out += [(good.astype(np.float64), TypeError), (good.astype(bool), TypeError)]
    else:
        nan, inf = good.copy(), good.copy()
        nan.flat[0], inf.flat[-1] = np.nan, np.inf
        out += [(nan, ValueError), (inf, ValueError), (good.astype(np.int64), TypeError)]
    return out


def bad_draws(p, key):
    """Bad sampled subsets/orders for problem p: wrong dtype, range, duplicates, padded candidates, shapes."""
    d = p[key]
    n = p["scores"].shape[-1]
    out = [(d.astype(np.float64), TypeError), (d.tolist(), TypeError), (None, TypeError)]
    hi, neg = d.copy(), d.copy()
    hi[..., 0, 0], neg[..., 0, 0] = n, -1
    out += [(hi, ValueError), (neg, ValueError), (d[..., 0], ValueError), (d[None], ValueError)]
    if d.shape[-1] >= 2:
        dup = d.copy()
        dup[..., 0, 1] = dup[..., 0, 0]
        out.append((dup, ValueError))
    pad = np.flatnonzero(~np.isfinite(p["scores"].reshape(-1, n)[0]))
    if pad.size:
        bad = d.copy()
        bad.reshape(-1, d.shape[-2], d.shape[-1])[0, 0, 0] = pad[0]
        out.append((bad, ValueError))
    return out


def pick(data, options):
    return options[data.draw(st.integers(0, len(options) - 1))]


# ---------------------------------------------------------------------------------------------- forwards


@given(p=valid(), data=st.data())
def test_subset_log_probs_forward_names_every_bad_argument(p, data):
    fn = "subset_log_probs_forward"
    arg = data.draw(st.sampled_from(["scores", "k", "kappa"]))
    value, exc = pick(data, {"scores": bad_scores(p), "k": bad_k(p), "kappa": BAD_KAPPA}[arg])
    args = {"scores": p["scores"], "k": p["k"], "kappa": p["kappa"], arg: value}
    named(lambda: E.subset_log_probs_forward(args["scores"], args["k"], kappa=args["kappa"]), exc, fn, arg)
    # the legacy entry points share the checks
    for other in ("subset_probabilities", "subset_log_prob_grads"):
        named(lambda: getattr(E, other)(args["scores"], args["k"], kappa=args["kappa"]), exc, other, arg)


@given(p=valid(), data=st.data())
def test_expected_value_forward_names_every_bad_argument(p, data):
    fn = "expected_value_forward"
    n_sub = E.subset_log_probs_forward(p["scores"], p["k"])[0].shape
    arg = data.draw(st.sampled_from(["scores", "values", "k", "kappa"]))
    options = {"scores": bad_scores(p), "values": bad_array(n_sub), "k": bad_k(p), "kappa": BAD_KAPPA}[arg]
    value, exc = pick(data, options)
    if arg == "k" and exc is ValueError:
        assume(value != p["k"])
    args = {"scores": p["scores"], "values": np.zeros(n_sub), "k": p["k"], "kappa": p["kappa"], arg: value}
    named(lambda: E.expected_value_forward(args["scores"], args["values"], args["k"], kappa=args["kappa"]),
          exc, fn, arg)


@given(p=valid(), data=st.data())
def test_sample_subsets_names_every_bad_argument(p, data):
    fn = "sample_subsets"
    arg = data.draw(st.sampled_from(["scores", "k", "kappa", "rng", "samples"]))
    options = {"scores": bad_scores(p), "k": bad_k(p), "kappa": BAD_KAPPA,
               "rng": [(None, TypeError), (0, TypeError), ("rng", TypeError)],
               "samples": [(0, ValueError), (-2, ValueError), (1.5, TypeError), (True, TypeError), (None, TypeError),
                           ("3", TypeError)]}[arg]
    value, exc = pick(data, options)
    args = {"scores": p["scores"], "k": p["k"], "kappa": p["kappa"], "rng": p["rng"], "samples": 3, arg: value}
    named(lambda: E.sample_subsets(args["scores"], args["k"], args["rng"], samples=args["samples"],
                                   kappa=args["kappa"]), exc, fn, arg)


@given(p=valid(), data=st.data())
def test_plackett_luce_forward_names_every_bad_argument(p, data):
    fn = "plackett_luce_log_prob_forward"
    arg = data.draw(st.sampled_from(["scores", "orders", "kappa"]))
    options = {"scores": bad_scores(p), "orders": bad_draws(p, "orders"), "kappa": BAD_KAPPA}[arg]
    value, exc = pick(data, options)
    args = {"scores": p["scores"], "orders": p["orders"], "kappa": p["kappa"], arg: value}
    named(lambda: E.plackett_luce_log_prob_forward(args["scores"], args["orders"], kappa=args["kappa"]), exc, fn, arg)


@given(p=valid(), data=st.data())
def test_rloo_forward_names_every_bad_argument(p, data):
    fn = "rloo_forward"
    score = data.draw(st.sampled_from(E.SCORES))
    key = "subsets" if score == "set" else "orders"
    arg = data.draw(st.sampled_from(["losses", "subsets_or_orders", "k", "kappa", "score"]))
    one = p[key][..., :1, :]  # m = 1: no leave-one-out baseline
    options = {"losses": bad_array(p["losses"].shape), "k": bad_k(p), "kappa": BAD_KAPPA,
               "subsets_or_orders": bad_draws(p, key) + [(one, ValueError)],
               "score": [("sets", ValueError), (1, TypeError), (None, TypeError)]}[arg]
    value, exc = pick(data, options)
    if arg == "k" and exc is ValueError:
        assume(value != p["k"])
    args = {"losses": p["losses"], "subsets_or_orders": p[key], "k": p["k"], "kappa": p["kappa"], "score": score,
            arg: value}
    named(lambda: E.rloo_forward(p["scores"], args["losses"], args["subsets_or_orders"], args["k"],
                                 kappa=args["kappa"], score=args["score"]), exc, fn, arg)


@given(n=st.one_of(st.none(), st.floats(1, 5), st.booleans(), st.integers(-3, 0), st.text(max_size=2)),
       k=st.one_of(st.none(), st.floats(1, 5), st.booleans(), st.integers(-3, 9)))
def test_subsets_of_names_bad_n_and_k(n, k):
    n_ok = isinstance(n, int) and not isinstance(n, bool) and n >= 1
    k_ok = isinstance(k, int) and not isinstance(k, bool) and n_ok and 1 <= k <= n
    if n_ok and k_ok:
        assert E.subsets_of(n, k).shape == (math.comb(n, k), k)
        return
    with pytest.raises((TypeError, ValueError)) as e:
        E.subsets_of(n, k)
    assert str(e.value).startswith("subsets_of: n=" if not n_ok else "subsets_of: k="), str(e.value)
    wrong_type = (lambda v: v is None or isinstance(v, (bool, float, str)))(n if not n_ok else k)
    assert isinstance(e.value, TypeError if wrong_type else ValueError)


# ---------------------------------------------------------------------------------------------- backwards


def caches(p):
    """Every forward's cache for problem p, with the shape of the gradient its backward takes."""
    s, k, kappa = p["scores"], p["k"], p["kappa"]
    logp, c_lp = E.subset_log_probs_forward(s, k, kappa=kappa)
    value, c_ev = E.expected_value_forward(s, np.zeros(logp.shape), k, kappa=kappa)
    lpo, c_pl = E.plackett_luce_log_prob_forward(s, p["orders"], kappa=kappa)
    _, c_rl = E.rloo_forward(s, p["losses"], p["subsets"], k, kappa=kappa)
    return {"subset_log_probs_backward": (c_lp, "dlogp", logp.shape),
            "expected_value_backward": (c_ev, "dvalue", np.shape(value)),
            "plackett_luce_log_prob_backward": (c_pl, "dlogp", lpo.shape),
            "rloo_backward": (c_rl, "dsurrogate", ())}


@given(p=valid(), data=st.data())
def test_backwards_name_a_bad_gradient_or_cache(p, data):
    cs = caches(p)
    fn = data.draw(st.sampled_from(sorted(cs)))
    cache, name, shape = cs[fn]
    other = cs["rloo_backward" if fn != "rloo_backward" else "subset_log_probs_backward"][0]
    if data.draw(st.booleans()):
        value = data.draw(st.sampled_from([None, {}, (1, 2), other]))
        named(lambda: getattr(E, fn)(np.zeros(shape) if shape else 1.0, value), TypeError, fn, "cache")
        return
    value, exc = pick(data, BAD_DLOSS if shape == () else bad_array(shape) + [(1.0, TypeError), (True, TypeError)])
    named(lambda: getattr(E, fn)(value, cache), exc, fn, name)
    good = np.ones(shape) if shape else 1.0
    out = getattr(E, fn)(good, cache)
    ds = out[0] if isinstance(out, tuple) else out
    assert ds.shape == p["scores"].shape and np.all(np.isfinite(ds))
    assert np.all(ds[~np.isfinite(p["scores"])] == 0.0)  # padding gets exactly 0


@given(p=valid(batch=False), data=st.data())
def test_reinforce_gradient_draws_names_bad_values_and_a_bad_loss_function(p, data):
    fn = "reinforce_gradient_draws"
    s, k = p["scores"], p["k"]
    S = E.subset_log_probs_forward(s, k)[0].shape
    options = bad_array(S) + [
        (lambda sub: np.zeros(len(sub) + 1), ValueError), (lambda sub: np.full(len(sub), np.nan), ValueError),
        (lambda sub: ["a"] * len(sub), TypeError), (lambda sub: None, ValueError)]
    value, exc = pick(data, options)
    name = "values(subsets)" if callable(value) else "values"
    named(lambda: E.reinforce_gradient_draws(s, k, value, p["rng"], draws=4), exc, fn, name)


# ---------------------------------------------------------------------------------------------- every scale


@st.composite
def extreme(draw):
    """Scores whose magnitudes and offsets span float64 (10^-300 .. 10^300, both signs, ties, padding), any κ."""
    n = draw(st.integers(2, 6))
    k = draw(st.integers(1, n))
    B = draw(st.integers(1, 3))
    entry = st.builds(lambda sgn, m, e: sgn * m * 10.0 ** e, st.sampled_from([-1.0, 1.0]), st.floats(1.0, 9.99),
                      st.integers(-300, 300)) | st.sampled_from([0.0, 1.0, -1.0, 5e-324])
    W = np.array([[draw(entry) for _ in range(n)] for _ in range(B)])
    if draw(st.booleans()):
        W = W + draw(st.sampled_from([1e16, -1e100, 1e300]))  # a common offset
    if draw(st.booleans()):
        W[0] = W[0, 0]  # a row of ties
    if n > k and draw(st.booleans()):
        W[:, : draw(st.integers(1, n - k))] = -np.inf
    return W, k, 10.0 ** draw(st.floats(-6, 6))


@given(case=extreme(), seed=st.integers(0, 2**31))
def test_any_scale_gives_finite_normalised_probabilities_and_finite_or_named_gradients(case, seed):
    W, k, kappa = case
    try:
        subsets, probs = E.subset_probabilities(W, k, kappa=kappa)
    except ValueError as e:  # κ·spread (or the spread itself) does not fit float64: named, nothing else
        assert str(e).startswith(("subset_probabilities: kappa=", "subset_probabilities: scores=")), str(e)
        return
    assert np.all(np.isfinite(probs)) and np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=0, atol=1e-12)
    assert np.all(probs[np.any(~np.isfinite(W)[:, subsets], axis=2)] == 0.0)  # (B, S): a padded subset has P = 0
    rng = np.random.default_rng(seed)
    values = rng.standard_normal(probs.shape)
    try:
        value, ds = E.expected_value_and_grad(W, values, k, kappa=kappa)
    except ValueError as e:  # the derivative κ ∂V/∂z itself does not fit
        assert str(e).startswith("expected_value_and_grad: kappa="), str(e)
    else:
        lo, hi = values.min(axis=1), values.max(axis=1)
        assert np.all(value >= lo - 1e-12 * np.abs(lo)) and np.all(value <= hi + 1e-12 * np.abs(hi))
        assert np.all(np.isfinite(ds)) and np.all(ds[~np.isfinite(W)] == 0.0)
    subs, orders = E.sample_subsets(W, k, rng, samples=3, kappa=kappa)
    assert np.all(np.isfinite(np.take_along_axis(W, subs.reshape(W.shape[0], -1), axis=1)))
    logp, _ = E.plackett_luce_log_prob_forward(W, orders, kappa=kappa)
    assert not np.any(np.isnan(logp)) and np.all(logp <= 1e-12)
