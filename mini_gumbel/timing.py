"""Timing and the machine record shared by bench/, tools/ and the notebooks (being filled in)."""
from __future__ import annotations

__all__ = ["keep_freed_memory"]


def keep_freed_memory() -> dict:
    """Tell glibc malloc to keep freed memory: no mmap per large array, no trimming of the heap top.

    NumPy frees and re-allocates the same multi-MB temporaries every training step; by default glibc
    hands them back to the kernel and every reuse page-faults them in again (1.3-1.7x slower reader steps,
    measured by ``python bench/compare_rev.py --alloc-ab``). Process-wide; a no-op without glibc.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError as e:
        return {"applied": False, "reason": f"no glibc: {e}"}
    M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4
    ok = bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 1 << 30))
    return {"applied": ok, "settings": "mallopt(M_MMAP_MAX, 0), mallopt(M_TRIM_THRESHOLD, 1 GiB)"}
