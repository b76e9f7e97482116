"""Load the BLAS library the engine's products call (SciPy's own OpenBLAS, which numba reaches
through scipy.linalg.cython_blas) at ``import kernels``, without numba or SciPy's modules.

The engine itself loads on first use (kernels/__init__.py), but a thread limit set after
``import kernels`` (threadpoolctl: one BLAS thread to reproduce a worker's run) must reach the
BLAS it will call: threadpoolctl only sees libraries loaded when the limit is set, and the
limit then stays on that library when SciPy opens the same file later.
"""

from __future__ import annotations

import ctypes
import glob
import importlib.util
import os


def load_engine_blas() -> None:
    """dlopen SciPy's bundled OpenBLAS (a few milliseconds); where SciPy bundles none (a
    distribution's build linked to a system BLAS), let numba load it as the engine would."""
    spec = importlib.util.find_spec("scipy")
    if spec is None or spec.origin is None:
        return
    libs = os.path.join(os.path.dirname(os.path.dirname(spec.origin)), "scipy.libs")
    found = sorted(glob.glob(os.path.join(libs, "libscipy_openblas*.so*")))
    if found:
        try:
            ctypes.CDLL(found[0], mode=ctypes.RTLD_GLOBAL)
            return
        except OSError:
            pass
    from numba.np.linalg import ensure_blas

    ensure_blas()
