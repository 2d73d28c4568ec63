"""mini_gumbel benchmark suite: hand-written code vs PyTorch eager and autograd, FLOP/s vs the matmul peak, growth,
NumPy vs CuPy, and the whole Gumbel training step.

    python bench/run.py                      # the full suite (about 10-15 minutes on 2 CPU cores)
    python bench/run.py --quick              # smaller sweeps, fewer repeats (a couple of minutes)
    python bench/run.py --tiny               # seconds: the CI smoke size (numbers mean nothing)
    python bench/run.py --only topk reader   # some sections: topk reader peak growth cupy step

Sections, one module each (bench/README.md explains them):
  topk    sec_topk.py    relaxed top-K forward + backward, every relaxation, hand vs autograd
  reader  sec_reader.py  reader full train step and frozen (mask-gradient-only) step, hand vs torch eager
                         and vs autograd
  peak    sec_peak.py    float32 / float64 matmul FLOP/s of this machine, and the train step's fraction of it
  growth  sec_growth.py  hand-path time against N, K, L and batch size, with fitted log-log exponents
  cupy    sec_cupy.py    NumPy vs CuPy for topk, reader steps and the matmul peak at large sizes;
                         skipped, with the reason, when CuPy or a CUDA device is missing
  step    sec_step.py    the whole Gumbel Reranking step, reader memory reused vs not, and vs torch eager
Every torch comparison (torch_topk.py, torch_reader.py) is skipped with a line saying so when torch is not
installed; torch is never a dependency of the package, its tests or CI.
Shapes and repeats of each size are in sizes.py; the shared workloads in common.py; FLOPs in flops.py.

Writes results.json and results.md to --out (default bench/out/). Every result records backend, dtype,
shapes, device and library versions. Times come from mini_gumbel.timing: CPU medians of interleaved
repeats, GPU times from CUDA events; on a shared machine read the ratios, not the absolute times. BLAS
runs on --threads threads (default 1, set before NumPy is imported), and glibc malloc is told to keep
freed memory (--malloc keep, the default; see README) -- both are recorded.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import resource
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # the package, also when it is not installed

from mini_gumbel.atomic import atomic_write_json, atomic_write_text  # noqa: E402 -- neither loads NumPy
from mini_gumbel.timing import environment, keep_freed_memory, set_blas_threads  # noqa: E402

SECTIONS = ("topk", "reader", "peak", "growth", "cupy", "step")
TARGET_ORDER = ("reader", "step", "topk", "peak", "growth", "cupy")  # the order of results.json's "targets";
# each section's targets() says which targets it has, and all of them are reported


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_const", const="quick", dest="size", help="smaller sweeps, fewer repeats")
    g.add_argument("--tiny", action="store_const", const="tiny", dest="size", help="CI smoke size (seconds)")
    ap.set_defaults(size="full")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    ap.add_argument("--out", default=os.path.join(HERE, "out"), help="output folder (default bench/out/)")
    ap.add_argument("--threads", default="1", help="BLAS threads (default 1; set before NumPy loads)")
    ap.add_argument("--malloc", choices=["keep", "default"], default="keep",
                    help="keep: glibc keeps freed memory (no page faults on reuse); default: leave malloc alone")
    return ap


def run_record(args, malloc) -> dict:
    """results.json's "environment": the machine (mini_gumbel.timing.environment) and this run."""
    e = environment()
    return {
        "backend": "numpy",
        "device": f"CPU {e['cpu']} ({e['cpu_count']} logical cores)",
        "versions": e["versions"],
        "blas": e["blas"],
        "threads": e["blas_threads"],
        "malloc": malloc,
        "platform": e["platform"],
        "load_average_at_start": e["load_average"],
        "size": args.size,
        "command": " ".join(["python bench/run.py"] + sys.argv[1:]),
        "timer": "time.perf_counter; medians over repeats, compared paths interleaved (CPU); "
                 "cupyx.profiler.benchmark gpu_times (GPU)",
    }


def header(env, tg) -> list:
    L = [f"# mini_gumbel benchmarks ({env['size']})", "",
         f"`{env['command']}` -- {env['device']}; numpy {env['versions']['numpy']} ({env['blas']}), autograd "
         f"{env['versions'].get('autograd')}, python {env['versions']['python']}; BLAS threads "
         f"{env['threads']['OPENBLAS_NUM_THREADS']}; malloc {'keep' if env['malloc'].get('applied') else 'default'}; "
         f"load average at start {env['load_average_at_start']}. CPU times are medians of interleaved repeats "
         "on a shared machine: read the ratios.", ""]
    if tg:
        L += ["## Targets", "", "| target | threshold | measured | met | detail |", "|---|---:|---:|---|---|"]
        for t in tg:
            m = "n/a" if t["measured"] is None else f"{t['measured']:.3g}"
            met = "skipped" if t["met"] is None else ("yes" if t["met"] else "**no**")
            L.append(f"| {t['target']} | {t['threshold']} | {m} | {met} | {t['detail']} |")
        L.append("")
    return L


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    set_blas_threads(args.threads)  # BLAS reads it once, when NumPy loads: the sections below import NumPy
    needs_autograd = sorted(set(args.only) & {"topk", "reader", "peak", "growth"})
    if needs_autograd and importlib.util.find_spec("autograd") is None:
        build_parser().error(f"--only {' '.join(needs_autograd)}: these sections time autograd as the baseline, "
                             f"and autograd is not installed (pip install -e \".[bench]\")")
    import sec_cupy
    import sec_growth
    import sec_peak
    import sec_reader
    import sec_step
    import sec_topk
    from sizes import sizes

    modules = {"topk": sec_topk, "reader": sec_reader, "peak": sec_peak, "growth": sec_growth, "cupy": sec_cupy,
               "step": sec_step}
    malloc = keep_freed_memory() if args.malloc == "keep" else {"applied": False, "settings": "glibc defaults"}
    env = run_record(args, malloc)
    sz = sizes(args.size)
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    res = {}
    if "topk" in args.only:
        res["topk"] = sec_topk.run(env, sz)
    if "reader" in args.only or "peak" in args.only:  # peak reports the reader's train step against it
        rd = sec_reader.run(env, sz)
        if "reader" in args.only:
            res["reader"] = rd
        if "peak" in args.only:
            res["peak"] = sec_peak.run(env, sz, rd)
    if "growth" in args.only:
        res["growth"] = sec_growth.run(env, sz)
    if "cupy" in args.only:
        res["cupy"] = sec_cupy.run(env, sz)
    if "step" in args.only:
        res["step"] = sec_step.run(env, sz)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    env["wall_s"] = time.perf_counter() - t0
    env["minor_page_faults"] = r1.ru_minflt - r0.ru_minflt
    env["load_average_at_end"] = environment()["load_average"]
    tg = [t for name in TARGET_ORDER if name in res for t in modules[name].targets(res[name])]
    md = "\n".join(header(env, tg) + [line for name in SECTIONS if name in res
                                      for line in modules[name].markdown(res[name], env)])
    os.makedirs(args.out, exist_ok=True)
    atomic_write_json(os.path.join(args.out, "results.json"), {"environment": env, "sizes": sz, "targets": tg,
                                                               "sections": res})
    atomic_write_text(os.path.join(args.out, "results.md"), md + "\n")
    print(md)
    print(f"\nwrote {os.path.join(args.out, 'results.json')} and {os.path.join(args.out, 'results.md')} "
          f"({env['wall_s']:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
