"""How wide the engine's loops vectorise: 512-bit vectors on x86 cores with AVX-512.

LLVM tunes recent Intel cores with "prefer-256-bit": AVX-512 instructions on 256-bit
registers, a guard against the clock drop that 512-bit instructions cost the first AVX-512
cores. The engine's BLAS runs 512-bit kernels anyway, so the guard saves its elementwise
loops nothing and costs them speed: float64 tanh took 1.82 ns an element with it and 1.32
without, 64-64-10 training at batch 128 8-10 % longer in float64 (bench/README.md, "Measured
2026-12-06"). Without it no bit changes: each element goes through the same IEEE operations
either way, and without fast-math LLVM does not reorder a sum.
"""

from __future__ import annotations

from typing import Optional

WIDE_VECTORS = "-prefer-256-bit"


def wide_vector_features(host_features: str) -> Optional[str]:
    """numba's CPU features (LLVM's "+name,-name" list) for 512-bit vectors on a host with
    ``host_features``, or None where AVX-512 is missing (nothing to change)."""
    if "+avx512f" not in host_features.split(","):
        return None
    return f"{host_features},{WIDE_VECTORS}"


def prefer_wide_vectors() -> bool:
    """Make numba compile with wide_vector_features of this host; returns whether it did.

    Must run before numba's CPU target is set up (at the first ``njit`` decoration in the
    process: kernels._jitcache calls it on import). It changes nothing when that has happened
    already, or when NUMBA_CPU_NAME or NUMBA_CPU_FEATURES chose the target. The features are
    part of numba's cache key, so kernels cached under the other setting compile again."""
    from numba.core import codegen, config
    from numba.core.registry import cpu_target

    if config.CPU_NAME is not None or config.CPU_FEATURES is not None:
        return False
    if "_toplevel_target_context" in vars(cpu_target):  # numba's lazily made target
        return False
    features = wide_vector_features(codegen.get_host_cpu_features())
    if features is None:
        return False
    config.CPU_FEATURES = features
    return True
