"""The gradient study: how biased and how noisy each estimator of the true objective's gradient is.

Gumbel Reranking trains on the reader's loss at a *relaxed* mask and infers with a *hard* top-K. What it should
minimise is the expected loss of the hard selection, ``V(w) = E_S[L(1_S)]`` with S = top-K(κ w + G), and at this
project's sizes that is computable exactly (mini_gumbel.estimators): for one question, ``c_S`` = the frozen
reader's answer NLL with the hard mask 1_S, for every one of the C(N, K) subsets in one batched reader call, then
``V`` and ``g* = ∂V/∂w`` in closed form. Against g* this module measures, from R noise draws each,

    max, iterative, st      the relaxed top-K's pathwise gradient (docs/method.md §4-5), over a grid of τ and κ
    max (no noise)          the paper's "without Gumbel" ablation: one deterministic gradient
    reinforce               the score function c_S ∂ log P(S)/∂w, exact ∂ log P(S): unbiased
    reinforce (loo)         the same with a leave-one-out baseline: still unbiased, less noisy

for each: relative bias ``‖E[ĝ] - g*‖ / ‖g*‖`` (with its noise floor at R draws), cosine of E[ĝ] with g*, relative
std and MSE of one draw, the objective gap ``E_G[L(relaxed mask)] - E_S[L(1_S)]`` and whether E[ĝ] pushes the
bridge (indirect gold) document's score the way g* does.

What is studied (choices, so that the numbers are reproducible and comparable with the demo):

* the demo's data (seed 0) and its frozen two-pass reader (from the cache), the reader's own dtype (float32, as in
  training), K = 5;
* the first ``n_single`` single-hop and the first ``n_two_hop`` two-hop questions of the **dev** split;
* the scores of the **untrained** reranker that train_reranker(seed) starts from (lexical initialisation): the
  point where training starts and where the sweep's κ·std(w) rule is defined; κ = κ·std(w) / std(w) with std(w)
  measured as the sweep measures it (0.7361 at seed 0);
* all N = 10 candidates of each question (C(10, 5) = 252 subsets, so no restriction to the reranker's top
  candidates is needed).

    result = run_gradient_study(out=Path("runs/gradient_study"))   # gradient_study.json, .md and two plots
    mini-gumbel gradient-study --out DIR                          # the same from the command line

Dimension letters: N candidates, K kept, S subsets, R noise draws.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from ..atomic import atomic_open, atomic_write_json, atomic_write_text
from ..data import Splits, make_dataset
from ..estimators import (expected_value_and_grad, gradient_error_stats, reinforce_gradient_draws,
                          reinforce_moments, relaxed_gradient_draws, subset_probabilities)
from ..hard_subsets import subset_nll
from ..two_pass_reader import TwoPassBatch
from ..validate import check_bool, check_choice, check_int, check_real, check_type, fail
from .cache import load_or_train_reader
from .configs import default_configs, quick_configs
from .evaluate import check_kappa_grid, score_all
from .flags import directory
from .rankers import RERANKERS, ranker_forward
from .readers import answer_nll, answer_nll_mask_grad, reader_inputs
from .train_reranker import initial_reranker

__all__ = ["ESTIMATORS", "GradientStudyConfig", "repeat_inputs", "subset_losses", "mask_loss_fn",
           "study_example", "check_against_data", "run_gradient_study", "plot_study", "add_arguments",
           "run_from_args"]

# estimator name -> (relaxation, noise) for the relaxed ones; the REINFORCE ones depend on κ only
RELAXED = {"max": ("max", True), "iterative": ("iterative", True), "st": ("st", True),
           "max (no noise)": ("max", False)}
REINFORCE = {"reinforce": "none", "reinforce (loo)": "loo"}
ESTIMATORS = tuple(RELAXED) + tuple(REINFORCE)
METRICS = ("rel_bias", "noise_floor", "norm_ratio", "cosine", "rel_std", "rel_mse")


@dataclass(frozen=True)
class GradientStudyConfig:
    """The size of the study. The default runs in about a minute on 2 cores with the reader cached."""

    n_single: int = 6  # single-hop dev questions
    n_two_hop: int = 10  # two-hop dev questions (the bridge documents live here)
    draws: int = 48  # R, noise draws per relaxed estimator and (τ, κ) point
    reinforce_draws: int = 4096  # R for REINFORCE: it needs no reader call (the c_S are all known)
    taus: tuple = (0.03, 0.1, 0.3, 1.0)  # the sweep's τ grid
    kappa_stds: tuple = (1.0, 2.0, 5.0)  # the sweep's κ·std(w) grid
    seed: int = 0  # reranker initialisation and noise
    data_seed: int = 0  # data set and reader
    quick: bool = False  # the smoke-test reader and data (quick_configs): every code path, numbers meaningless
    reranker: str = "bilinear"  # the model whose starting scores are studied (the listwise one starts identical)

    def __post_init__(self):
        fn = "GradientStudyConfig"
        for name in ("n_single", "n_two_hop"):
            check_int(fn, name, getattr(self, name), lo=0)
        if self.n_single + self.n_two_hop < 1:
            fail(fn, "n_single + n_two_hop", self.n_single + self.n_two_hop, "at least 1 question")
        check_int(fn, "draws", self.draws, lo=2)
        check_int(fn, "reinforce_draws", self.reinforce_draws, lo=2)
        for name in ("taus", "kappa_stds"):
            v = getattr(self, name)
            if isinstance(v, list):
                object.__setattr__(self, name, tuple(v))
                v = tuple(v)
            if not isinstance(v, tuple) or not v:
                fail(fn, name, v, "a non-empty tuple of numbers > 0", TypeError)
            for x in v:
                check_real(fn, name, x, lo=0.0, lo_open=True)
        check_int(fn, "seed", self.seed, lo=0)
        check_int(fn, "data_seed", self.data_seed, lo=0)
        check_bool(fn, "quick", self.quick)
        check_choice(fn, "reranker", self.reranker, RERANKERS)


# ----------------------------------------------------------------------------------------------------------
# the reader as a set function and as a function of the mask


def repeat_inputs(inputs: TwoPassBatch, n: int) -> TwoPassBatch:
    """One example's reader inputs (batch of 1) repeated n times along the batch axis."""
    return TwoPassBatch(*(np.repeat(f, n, axis=0) for f in inputs))


def subset_losses(params, cfg, inputs, subsets, memory=None) -> np.ndarray:
    """c_S (S,) float64: the reader's answer NLL of one example (a batch of 1) with the hard mask 1_S, for every
    row of ``subsets`` (S, K), each read from its K documents only (hard_subsets.subset_nll: a 0/1 mask equals
    dropping the documents, docs/method.md §6). memory: the example's reader_memory_of, or None."""
    return subset_nll(params, cfg, inputs, subsets[None], memory=memory)[0]  # (S,)


def mask_loss_fn(params, cfg, inputs):
    """A function masks (R, N) -> (losses (R,), dmasks (R, N)): the reader's answer NLL of one example under
    each mask row and its mask gradient, the reader frozen (what Gumbel Reranking's step computes)."""
    reps: dict = {}

    def loss_and_mask_grad(M):
        R = M.shape[0]
        if R not in reps:
            reps[R] = repeat_inputs(inputs, R)
        loss, cache = answer_nll(params, cfg, reps[R], np.asarray(M).astype(params["tok_emb"].dtype))
        # the loss is the batch mean, so row r's gradient carries 1/R
        dM = answer_nll_mask_grad(cache, reps[R]) * R  # (R, N)
        return np.asarray(cache.nll, dtype=np.float64), np.asarray(dM, dtype=np.float64)

    return loss_and_mask_grad


def study_example(scores, values, loss_fn, rng, *, k, kappas, taus, draws, reinforce_draws, bridge=None) -> dict:
    """Every estimator against g* for one example: {kappa index: {"value", "g_star", rows}}.

    scores (N,) float64, values c_S (S,) in subset_probabilities' order, loss_fn = mask_loss_fn(...), bridge the
    index of the indirect gold document (or None). Each row: estimator, tau (None for REINFORCE), the
    gradient_error_stats fields, the objective gap (relaxed ones) and the bridge component of E[ĝ] and g*."""
    out = []
    for kappa in kappas:
        value, g = expected_value_and_grad(scores, values, k, kappa=kappa)
        rows = []

        def add(name, tau, d, losses=None, exact_cov=None):
            row = {"estimator": name, "tau": tau, **gradient_error_stats(d, g, exact_cov=exact_cov)}
            if losses is not None:
                row["objective_gap"] = float(losses.mean() - value)
                row["objective_gap_se"] = float(losses.std(ddof=1) / math.sqrt(len(losses))) if len(losses) > 1 else 0.0
            if bridge is not None:
                row["bridge_mean"] = float(d[:, bridge].mean())
            rows.append(row)

        for name, baseline in REINFORCE.items():
            d, _ = reinforce_gradient_draws(scores, k, values, rng, draws=reinforce_draws, kappa=kappa,
                                            baseline=baseline)
            # the exact covariance of one draw: a sample of 4096 draws misses the subsets of probability << 1/R
            # that carry g* when one subset dominates, and then underestimates its own standard error
            _, cov = reinforce_moments(scores, k, values, kappa=kappa, baseline=baseline)
            add(name, None, d, exact_cov=cov)
        for tau in taus:
            for name, (relaxation, noise) in RELAXED.items():
                d, losses = relaxed_gradient_draws(scores, k, loss_fn, rng, draws=draws, tau=tau, kappa=kappa,
                                                   relaxation=relaxation, noise=noise)
                add(name, tau, d, losses)
        out.append({"kappa": kappa, "value": value, "g_star": g.tolist(),
                    "bridge_g_star": None if bridge is None else float(g[bridge]), "rows": rows})
    return out


# ----------------------------------------------------------------------------------------------------------
# the study


def _progress(progress: bool):
    if not progress:
        return lambda it, **kw: it
    try:
        from tqdm.auto import tqdm
    except ImportError:  # no tqdm: no bar, silently
        return lambda it, **kw: it
    return lambda it, **kw: tqdm(it, file=sys.stderr, dynamic_ncols=True, **kw)


def _summary(examples: list, cfg: GradientStudyConfig) -> list:
    """One row per (κ·std, estimator, τ): median (and mean) over the examples of every metric; the objective gap's
    mean; the bridge sign agreement over the two-hop examples; REINFORCE's bias z-scores."""
    rows = []
    for ki, kstd in enumerate(cfg.kappa_stds):
        keyed: dict = {}
        for ex in examples:
            entry = ex["by_kappa"][ki]
            for r in entry["rows"]:
                keyed.setdefault((r["estimator"], r["tau"]), []).append((ex, entry, r))
        for (name, tau), items in keyed.items():
            row = {"kappa_std": kstd, "kappa": items[0][1]["kappa"], "estimator": name, "tau": tau,
                   "n_examples": len(items), "draws": items[0][2]["draws"]}
            for m in METRICS:
                v = np.array([r[m] for _, _, r in items])
                row[m] = float(np.median(v))
                row[m + "_mean"] = float(v.mean())
            if "objective_gap" in items[0][2]:
                row["objective_gap"] = float(np.mean([r["objective_gap"] for _, _, r in items]))
            two = [(e, r) for ex, e, r in items if ex["hops"] == 2]
            if two:
                row["bridge_sign_agreement"] = float(np.mean([np.sign(r["bridge_mean"]) == np.sign(e["bridge_g_star"])
                                                              for e, r in two]))
                row["bridge_pushed_up"] = float(np.mean([r["bridge_mean"] < 0 for e, r in two]))
                # sizes, in units of ‖g*‖: where the bridge document is kept almost surely, g* on it is ~0
                row["bridge_mean_rel"] = float(np.median([r["bridge_mean"] / np.linalg.norm(e["g_star"]) for e, r in two]))
                row["bridge_g_star_rel"] = float(np.median([e["bridge_g_star"] / np.linalg.norm(e["g_star"])
                                                            for e, r in two]))
            z = np.array([r["bias_z"] for _, _, r in items if r["bias_z"] is not None])
            if z.size:  # None: a deterministic estimator has no standard error
                row["max_abs_bias_z"] = float(np.max(np.abs(z)))
                row["share_abs_bias_z_below_3"] = float(np.mean(np.abs(z) < 3))
            rows.append(row)
    return rows


def check_against_data(cfg: GradientStudyConfig, splits=None) -> None:
    """What the config needs of its data set (built here when ``splits`` is None; no reader): at most as many
    single- and two-hop questions as the dev split has, and a usable relaxed top-K at every (τ, κ) of the
    grid (κ = κ·std(w) / std(w)). A ValueError names the field (n_single, n_two_hop, taus, kappa_stds)."""
    check_type("check_against_data", "cfg", cfg, GradientStudyConfig)
    if splits is not None:
        check_type("check_against_data", "splits", splits, Splits, "the Splits of data.make_dataset, or None")
    fn = "GradientStudyConfig"  # the fields' errors name them as fields of the config
    data_cfg, _, _, rerank_cfg = quick_configs() if cfg.quick else default_configs()
    splits = make_dataset(data_cfg, seed=cfg.data_seed) if splits is None else splits
    for name, hops in (("n_single", 1), ("n_two_hop", 2)):
        have = int((splits.dev.hops == hops).sum())
        if getattr(cfg, name) > have:
            fail(fn, name, getattr(cfg, name), f"at most {have}, the {hops}-hop questions of the dev split "
                 f"(data seed {cfg.data_seed})")
    check_kappa_grid(fn, cfg.taus, cfg.kappa_stds,
                     _reranker_and_spread(splits, rerank_cfg.replace(reranker=cfg.reranker), cfg.seed)[1])


def _reranker_and_spread(splits, rerank_cfg, seed):
    """The reranker train_reranker(seed=seed) starts from (the sweep measures std(w) on the same one) and std(w) of
    its scores on the first n_train training questions."""
    rr = initial_reranker(seed, len(splits.vocab), rerank_cfg)
    n = min(rerank_cfg.n_train, len(splits.train))
    return rr, float(np.mean(np.std(score_all(rr, splits.train.batch(np.arange(n))), axis=1)))


def run_gradient_study(cfg: Optional[GradientStudyConfig] = None, *, out: Optional[Path] = None, progress=True,
                       log=print) -> dict:
    """Run the study at ``cfg``'s size; with ``out``, write gradient_study.json, gradient_study.md and the plots
    gradient_study_bias.png, gradient_study_gap.png there (atomically). Returns the result dict."""
    cfg = GradientStudyConfig() if cfg is None else cfg
    if not isinstance(cfg, GradientStudyConfig):
        fail("run_gradient_study", "cfg", cfg, "a GradientStudyConfig", TypeError)
    t0 = time.perf_counter()
    data_cfg, reader_cfg, train_cfg, rerank_cfg = quick_configs() if cfg.quick else default_configs()
    k = rerank_cfg.k
    splits = make_dataset(data_cfg, seed=cfg.data_seed)
    check_against_data(cfg, splits)  # before the reader loads
    params, reader_cfg, _ = load_or_train_reader(data_cfg, reader_cfg, train_cfg, seed=cfg.data_seed,
                                                 splits=splits, progress=progress)
    t_reader = time.perf_counter() - t0
    rr, w_std = _reranker_and_spread(splits, rerank_cfg.replace(reranker=cfg.reranker), cfg.seed)
    kappas = [c / w_std for c in cfg.kappa_stds]
    dev = splits.dev
    single = np.flatnonzero(dev.hops == 1)[: cfg.n_single]
    two = np.flatnonzero(dev.hops == 2)[: cfg.n_two_hop]
    idx = np.concatenate([single, two])
    batch = dev.batch(idx)
    scores, _ = ranker_forward(rr, batch.question, batch.docs, pad_id=reader_cfg.pad_id)  # (E, N) float64
    rng = np.random.default_rng(cfg.seed)
    bar = _progress(progress)
    examples = []
    for e in bar(range(len(idx)), desc="gradient study", unit="question"):
        one = batch.batch([e])
        inputs = reader_inputs(one, reader_cfg)
        w = np.asarray(scores[e], dtype=np.float64)  # (N,)
        subsets, _ = subset_probabilities(w, k)
        values = subset_losses(params, reader_cfg, inputs, subsets)  # (S,)
        bridge = int(np.flatnonzero(one.indirect[0])[0]) if one.indirect[0].any() else None
        by_kappa = study_example(w, values, mask_loss_fn(params, reader_cfg, inputs), rng, k=k, kappas=kappas,
                                 taus=cfg.taus, draws=cfg.draws, reinforce_draws=cfg.reinforce_draws, bridge=bridge)
        examples.append({"dev_index": int(idx[e]), "hops": int(one.hops[0]), "bridge": bridge,
                         "bridge_rank": None if bridge is None else int((w > w[bridge]).sum()) + 1,
                         "scores": w.tolist(), "n_subsets": int(len(subsets)),
                         "subset_loss_min": float(values.min()), "subset_loss_max": float(values.max()),
                         "by_kappa": by_kappa})
    summary = _summary(examples, cfg)
    result = {
        "config": dataclasses.asdict(cfg), "k": k, "n_candidates": int(scores.shape[1]),
        "std_untrained_scores": w_std, "kappas": kappas, "reader_dtype": str(params["tok_emb"].dtype),
        "estimators": list(ESTIMATORS), "summary": summary, "examples": examples,
        "seconds": {"total": time.perf_counter() - t0, "reader_load": t_reader},
        "notes": "relative metrics are medians over the examples (means in *_mean); objective_gap is the mean of "
                 "E_G[L(relaxed mask)] - E_S[L(1_S)]; bridge_* over the two-hop examples; quick=True numbers mean "
                 "nothing",
    }
    if out is not None:
        out = Path(out)
        atomic_write_json(out / "gradient_study.json", result)
        atomic_write_text(out / "gradient_study.md", format_markdown(result))
        try:
            plot_study(result, out)
        except ImportError:
            log('note: matplotlib is not installed, so there are no plots (pip install -e ".[demo]" adds it)')
    result["seconds"]["total"] = time.perf_counter() - t0
    return result


def format_markdown(result: dict) -> str:
    """The summary as markdown tables, one per κ·std(w)."""
    cfg = result["config"]
    lines = ["# The exact gradient of the expected loss, and each estimator against it",
             "",
             f"Dev questions: {cfg['n_single']} single-hop + {cfg['n_two_hop']} two-hop (data seed {cfg['data_seed']}), "
             f"N = {result['n_candidates']}, K = {result['k']}, all C(N, K) subsets; the untrained (lexical) reranker's "
             f"scores, std(w) = {result['std_untrained_scores']:.4f}; the frozen two-pass reader "
             f"({result['reader_dtype']}). Relaxed estimators from R = {cfg['draws']} noise draws, REINFORCE from "
             f"R = {cfg['reinforce_draws']}." + (" **quick: the numbers mean nothing.**" if cfg["quick"] else ""),
             "",
             "Columns: medians over the questions of the relative bias ‖E[ĝ] − g*‖/‖g*‖ (with its noise floor, the "
             "value an unbiased estimator shows on average at R draws), the cosine of E[ĝ] with g*, the relative std "
             "and MSE of one draw; the mean objective gap E_G[L(relaxed mask)] − E_S[L(1_S)]; on the two-hop questions "
             "the share where E[ĝ] and g* agree in sign on the bridge document, and the share where E[ĝ] pushes its "
             "score up (−E[ĝ] > 0: a descent step raises it; the heading says how often g* itself does), and the median "
             "size of E[ĝ]'s bridge component in units of ‖g*‖ (positive: pushes the bridge down; compare the "
             "heading's median for g*: where the bridge is kept almost surely, g* on it is ~0 and the sign columns "
             "compare noise).",
             ""]
    for kstd in cfg["kappa_stds"]:
        rows = [r for r in result["summary"] if r["kappa_std"] == kstd]
        ex2 = [ex for ex in result["examples"] if ex["hops"] == 2]
        ki = list(cfg["kappa_stds"]).index(kstd)
        gup = np.mean([ex["by_kappa"][ki]["bridge_g_star"] < 0 for ex in ex2]) if ex2 else float("nan")
        grel = np.median([ex["by_kappa"][ki]["bridge_g_star"] / np.linalg.norm(ex["by_kappa"][ki]["g_star"])
                          for ex in ex2]) if ex2 else float("nan")
        lines += [f"## κ·std(w) = {kstd:g} (κ = {rows[0]['kappa']:.3f}); g* pushes the bridge up on {gup:.0%} of the "
                  f"two-hop questions, median g* on the bridge {grel:+.2g} ‖g*‖", "",
                  "| estimator | τ | rel. bias | noise floor | ‖E[ĝ]‖/‖g*‖ | cosine | rel. std / draw | rel. MSE / draw | "
                  "objective gap | bridge sign agrees | bridge pushed up | E[ĝ] on bridge / ‖g*‖ |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in rows:
            tau = "–" if r["tau"] is None else f"{r['tau']:g}"
            gap = f"{r['objective_gap']:+.3f}" if "objective_gap" in r else "0 (exact)"
            bs = f"{r['bridge_sign_agreement']:.0%}" if "bridge_sign_agreement" in r else "–"
            bu = f"{r['bridge_pushed_up']:.0%}" if "bridge_pushed_up" in r else "–"
            bm = f"{r['bridge_mean_rel']:+.2g}" if "bridge_mean_rel" in r else "–"
            lines.append(f"| {r['estimator']} | {tau} | {r['rel_bias']:.3g} | {r['noise_floor']:.3g} | {r['norm_ratio']:.3g} | "
                         f"{r['cosine']:+.3f} | {r['rel_std']:.3g} | {r['rel_mse']:.3g} | {gap} | {bs} | {bu} | {bm} |")
        lines.append("")
    rf = [r for r in result["summary"] if r["estimator"] in REINFORCE]
    if rf:
        lines += ["REINFORCE's bias against its exact standard error (z = <E[ĝ] − g*, g*/‖g*‖> / SE, SE from the exact "
                  "covariance of one draw, reinforce_moments; per question and κ): max |z| = "
                  f"{max(r['max_abs_bias_z'] for r in rf):.2f}; share of |z| < 3: "
                  f"{np.mean([r['share_abs_bias_z_below_3'] for r in rf]):.0%}.", ""]
    lines.append(f"Wall time {result['seconds']['total']:.0f} s (reader from the cache: "
                 f"{result['seconds']['reader_load']:.1f} s).")
    return "\n".join(lines) + "\n"


def plot_study(result: dict, out: Path) -> None:
    """gradient_study_bias.png (relative bias and relative std per draw against τ, one line per estimator, one
    column per κ·std(w); REINFORCE as horizontal lines) and gradient_study_gap.png (the objective gap against τ).
    Legends sit below the panels. ImportError without matplotlib."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfg = result["config"]
    kstds = list(cfg["kappa_stds"])
    taus = list(cfg["taus"])
    fig, axes = plt.subplots(2, len(kstds), figsize=(4.2 * len(kstds), 6.6), constrained_layout=True, squeeze=False)
    styles = {"max": "C0", "iterative": "C1", "st": "C2", "max (no noise)": "C3", "reinforce": "C4",
              "reinforce (loo)": "C5"}
    for c, kstd in enumerate(kstds):
        rows = [r for r in result["summary"] if r["kappa_std"] == kstd]
        for row_i, (metric, label) in enumerate((("rel_bias", "relative bias ‖E[ĝ] − g*‖ / ‖g*‖"),
                                                 ("rel_std", "relative std of one draw"))):
            ax = axes[row_i, c]
            for name in ESTIMATORS:
                sel = [r for r in rows if r["estimator"] == name]
                # st is off any common scale (its gradient at a hard 0 is DMA's e^{logit gap}): the table has it;
                # the no-noise variant has no spread at all
                if not sel or name == "st" or (metric == "rel_std" and name == "max (no noise)"):
                    continue
                if sel[0]["tau"] is None:
                    ax.axhline(max(sel[0][metric], 1e-8), color=styles[name], ls="--", lw=1.2, label=name)
                else:
                    sel = sorted(sel, key=lambda r: r["tau"])
                    ax.plot([r["tau"] for r in sel], [max(r[metric], 1e-8) for r in sel], marker="o", ms=4,
                            color=styles[name], label=name)
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.set_xticks(taus, [f"{t:g}" for t in taus])
            ax.set_xlabel("temperature τ")
            ax.set_ylabel(label + " (median)", fontsize=8)
            ax.set_title(f"κ·std(w) = {kstd:g}", fontsize=9)
            ax.grid(alpha=0.3, which="both")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    fig.suptitle(f"Each estimator against the exact gradient g*, {cfg['n_single']} + {cfg['n_two_hop']} dev questions "
                 f"(medians; REINFORCE dashed: no τ; st is off the scale, 1e11-1e18: see the table)"
                 + ("; quick: numbers mean nothing" if cfg["quick"] else ""), fontsize=9)
    with atomic_open(Path(out) / "gradient_study_bias.png", "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(1, len(kstds), figsize=(4.2 * len(kstds), 3.6), constrained_layout=True, squeeze=False)
    for c, kstd in enumerate(kstds):
        ax = axes[0, c]
        rows = [r for r in result["summary"] if r["kappa_std"] == kstd and "objective_gap" in r]
        for name in RELAXED:
            sel = sorted([r for r in rows if r["estimator"] == name], key=lambda r: r["tau"])
            ax.plot([r["tau"] for r in sel], [r["objective_gap"] for r in sel], marker="o", ms=4,
                    color=styles[name], label=name)
        ax.axhline(0.0, color="k", lw=0.8)
        ax.set_xscale("log")
        ax.set_xticks(taus, [f"{t:g}" for t in taus])
        ax.set_xlabel("temperature τ")
        ax.set_ylabel("E_G[L(relaxed M)] − E_S[L(1_S)]  (nats)", fontsize=8)
        ax.set_title(f"objective gap, κ·std(w) = {kstd:g}", fontsize=9)
        ax.grid(alpha=0.3)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=8)
    with atomic_open(Path(out) / "gradient_study_gap.png", "wb") as f:
        fig.savefig(f, format="png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------
# command line (wired as `mini-gumbel gradient-study` by mini_gumbel.experiment.cli)


def _int_at_least(lo: int):
    def convert(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}")
        return v
    convert.__name__ = f"an integer >= {lo}"
    return convert


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}")
    return v


_positive_float.__name__ = "a finite number > 0"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `mini-gumbel gradient-study`."""
    d = GradientStudyConfig()
    parser.add_argument("--out", type=directory, default=Path("runs/gradient_study"),
                        help="directory for gradient_study.json, gradient_study.md and the plots")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-test size (the quick reader, 1 + 1 questions, few draws); its numbers mean nothing")
    parser.add_argument("--n-single", type=_int_at_least(0), default=None,
                        help=f"single-hop dev questions (default {d.n_single}; --quick: 1)")
    parser.add_argument("--n-two-hop", type=_int_at_least(0), default=None,
                        help=f"two-hop dev questions (default {d.n_two_hop}; --quick: 1)")
    parser.add_argument("--draws", type=_int_at_least(2), default=None,
                        help=f"noise draws per relaxed estimator and (tau, kappa) (default {d.draws}; --quick: 4)")
    parser.add_argument("--reinforce-draws", type=_int_at_least(2), default=None,
                        help=f"draws of the REINFORCE estimators (default {d.reinforce_draws}; --quick: 256)")
    parser.add_argument("--taus", type=_positive_float, nargs="+", default=list(d.taus), metavar="TAU",
                        help="temperatures")
    parser.add_argument("--kappa-stds", type=_positive_float, nargs="+", default=list(d.kappa_stds), metavar="C",
                        help="kappa * std(w) values (std(w) of the untrained scores, as in the sweep)")
    parser.add_argument("--seed", type=_int_at_least(0), default=0, help="reranker initialisation and noise seed")
    parser.add_argument("--data-seed", type=_int_at_least(0), default=0, help="seed of the data set and of the reader")
    parser.add_argument("--reranker", choices=RERANKERS, default="bilinear",
                        help="the model whose starting point is studied (the listwise reranker starts as the bilinear "
                        "one, so the study is the same)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def config_from_args(args, parser: argparse.ArgumentParser) -> GradientStudyConfig:
    """The GradientStudyConfig of parsed flags; a bad combination ends in parser.error naming the flag."""
    quick = bool(getattr(args, "quick", False))
    size = dict(n_single=1, n_two_hop=1, draws=4, reinforce_draws=256) if quick else {}
    d = GradientStudyConfig()
    kw = {}
    for name in ("n_single", "n_two_hop", "draws", "reinforce_draws"):
        v = getattr(args, name, None)
        kw[name] = v if v is not None else size.get(name, getattr(d, name))
    if kw["n_single"] + kw["n_two_hop"] < 1:
        parser.error("argument --n-two-hop: --n-single and --n-two-hop are both 0; expected at least one question")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        parser.error(f"argument --out: {str(out)!r} is an existing file; expected a directory")
    cfg = GradientStudyConfig(taus=tuple(args.taus), kappa_stds=tuple(args.kappa_stds), seed=args.seed,
                              data_seed=args.data_seed, quick=quick, reranker=getattr(args, "reranker", "bilinear"),
                              **kw)
    try:  # against the data set (a second or two, no reader): a bad value is a flag's error, before any work
        check_against_data(cfg)
    except ValueError as e:
        name = str(e).split(": ", 1)[1].split("=", 1)[0]
        flag = {"n_single": "--n-single", "n_two_hop": "--n-two-hop", "taus": "--taus",
                "kappa_stds": "--kappa-stds"}.get(name)
        if flag is None:
            raise
        parser.error(f"argument {flag}: {str(e).split(': ', 1)[1]}")
    return cfg


def run_from_args(args, parser: Optional[argparse.ArgumentParser] = None) -> int:
    """Run `mini-gumbel gradient-study` from parsed flags; prints where the files are and the headline rows."""
    parser = parser if parser is not None else getattr(args, "_parser", None)
    if parser is None:
        parser = argparse.ArgumentParser(prog="mini-gumbel gradient-study")
        add_arguments(parser)
    cfg = config_from_args(args, parser)
    res = run_gradient_study(cfg, out=args.out, progress=getattr(args, "progress", True))
    print(f"gradient study: {cfg.n_single} + {cfg.n_two_hop} dev questions in {res['seconds']['total']:.0f} s; "
          f"wrote {Path(args.out) / 'gradient_study.json'}, gradient_study.md, gradient_study_bias.png, "
          "gradient_study_gap.png")
    for r in res["summary"]:
        if r["estimator"] in ("max", "reinforce (loo)") and r["tau"] in (None, 0.1, 0.3):
            print(f"  κ·std(w)={r['kappa_std']:g} {r['estimator']:16s} τ={r['tau']}: rel. bias {r['rel_bias']:.3f} "
                  f"(noise floor {r['noise_floor']:.3f}), cosine {r['cosine']:+.3f}, rel. std/draw {r['rel_std']:.3f}")
    return 0
