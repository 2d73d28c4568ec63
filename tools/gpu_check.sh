#!/usr/bin/env bash
# The real-GPU check, in one command, for the day a CUDA machine is available:
#
#     bash tools/gpu_check.sh                 # from the repository root, on a machine with an NVIDIA GPU
#
# 1. installs the package with the `gpu13` extra (CuPy for CUDA 13; GPU_EXTRA=gpu12 for CUDA 12; SKIP_INSTALL=1
#    where CuPy is already installed, e.g. a machine without network access),
# 2. runs the `gpu` tests on CuPy (`pytest -m gpu --gpu-backend=cupy`: NumPy-vs-CuPy parity of the whole
#    differentiable path, <= 1e-12 in float64),
# 3. runs the bench's CuPy section at full size (`bench/run.py --only cupy --threads $(nproc)`: NumPy on every
#    core, BENCH_THREADS to change it), the >= 20x speed-up target,
# 4. executes notebook 11 (NumPy vs CuPy, timings) at full size, into the output folder (the committed copy is
#    not touched),
# 5. prints a summary: the device, the versions, the tests, every speed-up and the target.
#
# Sized for <= 8 minutes on one H200: each step has a time limit (install 90 s, tests 120 s, bench 210 s,
# notebook 60 s: 8 minutes together). Expected: the tests ~1-2 min (CuPy compiles each kernel on first use), the
# bench ~2-3 min (mostly its NumPy side: a float64 medium reader train step took 12 s on one core of the
# development VM), the notebook ~20 s. Everything it writes goes to GPU_CHECK_OUT (default
# bench/out/gpu_check, git-ignored): the test log, results.json/results.md, the executed notebook. The exit status
# is 0 when every step ran and passed; the speed-up target is reported, met or not, in the summary.
#
# DRY_RUN=standin runs the same steps on this machine's CPU with the NumPy stand-in tests/device_standin.py as
# `cupy` (no install, tiny bench, small notebook): it checks the script, and its timings mean nothing.
set -u -o pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${GPU_CHECK_OUT:-bench/out/gpu_check}
DRY=${DRY_RUN:-}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
status=0
step() { echo; echo "== $*"; }

if [ -n "$DRY" ] && [ "$DRY" != standin ]; then echo "DRY_RUN=$DRY: expected DRY_RUN=standin or unset" >&2; exit 2; fi
if [ -z "$DRY" ]; then
  step "device"
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  if [ "${SKIP_INSTALL:-0}" != 1 ]; then
    step "install: pip install -e .[${GPU_EXTRA:-gpu13},test,bench]"
    timeout 90 "$PY" -m pip install -q -e ".[${GPU_EXTRA:-gpu13},test,bench]" || { echo "install failed" >&2; exit 1; }
  fi
  "$PY" - <<'EOF' || exit 1
import cupy
n = cupy.cuda.runtime.getDeviceCount()
assert n > 0, "CuPy sees no CUDA device"
name = cupy.cuda.runtime.getDeviceProperties(0)["name"]
print(f"CuPy {cupy.__version__}: {n} device(s), device 0 = {name.decode() if isinstance(name, bytes) else name}, "
      f"CUDA runtime {cupy.cuda.runtime.runtimeGetVersion()}, driver {cupy.cuda.runtime.driverGetVersion()}")
EOF
  BACKEND=cupy SIZE=full NB_SIZE=full BENCH_SIZE=()
else
  BACKEND=standin SIZE=tiny NB_SIZE=small BENCH_SIZE=(--tiny)
  echo "DRY_RUN=standin: CPU only, cupy = the NumPy stand-in; no timing below means anything"
fi

step "tests: pytest -m gpu --gpu-backend=$BACKEND"
timeout 120 "$PY" -m pytest -q -m gpu --gpu-backend="$BACKEND" -p no:cacheprovider 2>&1 | tee "$OUT/pytest_gpu.log"
tests_rc=$?
[ $tests_rc -eq 0 ] || status=1

step "bench: bench/run.py --only cupy ($SIZE size)"
if [ -z "$DRY" ]; then
  # NumPy gets every core (bench/README.md, "BLAS threads": the fair NumPy side of the comparison)
  timeout 210 "$PY" bench/run.py --only cupy --threads "${BENCH_THREADS:-$(nproc)}" --out "$OUT/bench"
else
  timeout 240 "$PY" -W ignore::RuntimeWarning -c 'import runpy, sys; sys.path[:0] = ["bench", "tests"]; import device_standin; device_standin.install()
sys.argv = ["bench/run.py", *sys.argv[1:]]; runpy.run_path("bench/run.py", run_name="__main__")' \
    --only cupy ${BENCH_SIZE[@]+"${BENCH_SIZE[@]}"} --out "$OUT/bench"
fi
bench_rc=$?
[ $bench_rc -eq 0 ] || status=1

step "notebook 11 ($NB_SIZE size)"
MINI_GUMBEL_NB_SIZE=$NB_SIZE DRY="$DRY" OUT="$OUT" timeout 60 "$PY" - <<'EOF'
import os, sys
import nbclient, nbformat
nb = nbformat.read("notebooks/11_backends_and_timing.ipynb", as_version=4)
if os.environ["DRY"]:
    boot = f"import sys; sys.path.insert(0, {os.path.abspath('tests')!r}); import device_standin; device_standin.install()"
    nb.cells.insert(0, nbformat.v4.new_code_cell(boot))
nbclient.NotebookClient(nb, timeout=55, kernel_name="python3", resources={"metadata": {"path": "notebooks"}}).execute()
out = os.path.join(os.environ["OUT"], "11_backends_and_timing.executed.ipynb")
nbformat.write(nb, out)
text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
for line in text.splitlines():
    if "CuPy" in line or "NumPy/CuPy" in line:
        print("  " + line)
print(f"executed copy: {out}")
EOF
nb_rc=$?
[ $nb_rc -eq 0 ] || status=1

step "summary"
TESTS_RC=$tests_rc BENCH_RC=$bench_rc NB_RC=$nb_rc OUT="$OUT" "$PY" - <<'EOF'
import json, os, re
out = os.environ["OUT"]
log = open(os.path.join(out, "pytest_gpu.log")).read() if os.path.exists(os.path.join(out, "pytest_gpu.log")) else ""
last = [l for l in log.splitlines() if re.search(r"\d+ (passed|failed|error)", l)]
print(f"gpu tests:  {'ok' if os.environ['TESTS_RC'] == '0' else 'FAILED'}  ({last[-1].strip('= ') if last else 'no result'})")
path = os.path.join(out, "bench", "results.json")
if os.path.exists(path) and os.environ["BENCH_RC"] == "0":
    res = json.load(open(path))
    env, cu = res["environment"], res["sections"]["cupy"]
    print(f"device:     {cu.get('device', cu.get('reason'))}")
    print("versions:   " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    print(f"host:       {env['device']}, BLAS {env['blas']}, threads {env['threads']['OPENBLAS_NUM_THREADS']}")
    for r in cu.get("results", []):
        print(f"  {r['item']:22s} {r['dtype']:8s} x{r['speedup']:8.1f}" + (
            f"   {100 * r['cupy_fraction_of_peak']:.0f}% of the GPU's matmul peak" if "cupy_fraction_of_peak" in r else ""))
    for t in res["targets"]:
        if t["target"] == "cupy_speedup":
            met = {True: "met", False: "NOT met", None: "not measured"}[t["met"]]
            m = "n/a" if t["measured"] is None else f"x{t['measured']:.1f}"
            print(f"target:     CuPy >= {t['threshold']:g}x NumPy on every large config: worst {m}, {met}")
else:
    print(f"bench:      FAILED (see the output above; {path})")
print(f"notebook:   {'ok' if os.environ['NB_RC'] == '0' else 'FAILED'}")
EOF
[ -n "$DRY" ] && echo "(DRY_RUN=standin: the stand-in's 'GPU' times are NumPy on the CPU; the speed-ups mean nothing)"
exit $status
