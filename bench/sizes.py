"""The suite's three sizes: full (the numbers bench/README.md reports), quick, and tiny (the CI smoke size).

Every section reads its shapes, dtypes and repeats from one of these dicts, and results.json stores the
dict it ran with, so a result can always be traced back to the sizes that made it.
"""
from __future__ import annotations

NAMES = ("full", "quick", "tiny")

DEFAULT_CFG = dict(vocab_size=300)  # the default ReaderConfig (C=64)
MEDIUM_CFG = dict(vocab_size=300, d_model=256, d_ff=1024, max_ctx_len=64)
TINY_CFG = dict(vocab_size=50, d_model=16, n_heads=2, d_ff=32, max_ctx_len=8, max_ans_len=4)

FULL = {
    # 1. topk: hand vs autograd over a grid of (N, K) at one batch size
    "topk_B": 64, "topk_N": [10, 100, 1000], "topk_K": [1, 5, 20], "topk_dtypes": ["float64", "float32"],
    "repeats_topk": 9, "target_s": 0.02,
    # 2. reader: (name, ReaderConfig fields, B, N, L, T)
    "reader_setups": [("default", DEFAULT_CFG, 32, 10, 24, 4), ("medium", MEDIUM_CFG, 8, 10, 64, 4)],
    "reader_dtypes": ["float64", "float32"], "repeats_reader": 5,
    # 3. peak: square matmul sizes
    "peak_n": [1024, 2048], "repeats_peak": 3,
    # 4. growth: one axis swept, the others fixed
    "growth_topk_B": 64, "growth_N": [100, 300, 1000, 3000, 10000], "growth_K_fixed": 5,
    "growth_K": [1, 2, 5, 10, 20, 50], "growth_N_fixed": 1000, "repeats_growth": 7,
    "growth_reader_cfg": DEFAULT_CFG, "growth_reader_base": {"B": 8, "N": 10, "L": 24, "T": 4},
    "growth_reader_N": [5, 10, 20, 40], "growth_reader_L": [8, 16, 24, 32], "growth_reader_B": [4, 8, 16, 32],
    "repeats_growth_reader": 5,
    # 5. cupy: (B, N, K), (ReaderConfig fields, B, N, L, T), (NumPy n, CuPy n) of the matmul peak
    "cupy_topk": (256, 10000, 20), "cupy_reader": (MEDIUM_CFG, 32, 10, 64, 4), "cupy_peak_n": (2048, 8192),
    "cupy_repeat": 20, "cupy_np_repeat": 3,
    # 6. step: the whole Gumbel step at the demo's reader (default_reader_config overrides) and batch
    "step_setups": [("two_pass", 32), ("fid", 32)], "step_dtypes": ["float32", "float64"], "step_data": {},
    "step_reader": {}, "repeats_step": 7,
}

QUICK = dict(FULL, repeats_topk=5, target_s=0.01, reader_dtypes=["float64", "float32"],
             repeats_reader=3, peak_n=[1024], growth_N=[100, 1000, 10000], growth_K=[1, 5, 20],
             repeats_growth=5, growth_reader_N=[5, 10, 20], growth_reader_L=[8, 16, 32],
             growth_reader_B=[4, 8, 16], repeats_growth_reader=3, cupy_reader=(MEDIUM_CFG, 16, 10, 64, 4),
             repeats_step=5)

TINY = dict(FULL, topk_B=4, topk_N=[10], topk_K=[1, 3], topk_dtypes=["float64"], repeats_topk=2, target_s=0.001,
            reader_setups=[("tiny", TINY_CFG, 2, 3, 8, 4)], reader_dtypes=["float64"], repeats_reader=1,
            peak_n=[64, 128], repeats_peak=2, growth_topk_B=4, growth_N=[10, 20, 40], growth_K_fixed=2,
            growth_K=[1, 2, 4], growth_N_fixed=40, repeats_growth=2, growth_reader_cfg=TINY_CFG,
            growth_reader_base={"B": 2, "N": 2, "L": 4, "T": 2}, growth_reader_N=[2, 4],
            growth_reader_L=[4, 8], growth_reader_B=[1, 2], repeats_growth_reader=2,
            cupy_topk=(4, 50, 3), cupy_reader=(TINY_CFG, 2, 3, 8, 4), cupy_peak_n=(64, 128),
            cupy_repeat=3, cupy_np_repeat=1, step_setups=[("two_pass", 4), ("fid", 4)], step_dtypes=["float64"],
            step_reader=dict(d_model=16, d_ff=32), repeats_step=1)


def sizes(name: str) -> dict:
    """A fresh copy of the named size's dict."""
    if name not in NAMES:
        raise ValueError(f"sizes: name={name!r}; expected one of {NAMES}")
    return dict({"full": FULL, "quick": QUICK, "tiny": TINY}[name])
