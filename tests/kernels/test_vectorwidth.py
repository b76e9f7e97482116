"""The engine's loops vectorise with 512-bit vectors on AVX-512 hosts (kernels.vectorwidth),
which changes their speed, not their bits."""

import os
import subprocess
import sys
import textwrap

import pytest

from kernels.vectorwidth import WIDE_VECTORS, wide_vector_features

FEATURES = textwrap.dedent("""
    import llvmlite.binding as ll
    import kernels
    from numba.core.registry import cpu_target

    kernels.load_engine()
    print(ll.get_host_cpu_features().flatten())
    print(cpu_target.target_context.codegen()._tm_features)
""")

BITS = textwrap.dedent("""
    import hashlib

    import numpy as np

    import kernels

    X, y = kernels.load_dataset("digits")
    digest = hashlib.sha256()
    for dtype in ("float64", "float32"):
        for activation in ("tanh", "sigmoid", "relu"):
            result = kernels.train(
                X[:600], y[:600], layers=[64, 24, 10], activation=activation,
                output_activation="softmax", loss="cross_entropy", learning_rate=0.1,
                batch_mode="minibatch", batch_size=32, epochs=3, seed=2, dtype=dtype,
                optimizer="adam", validation=(X[600:700], y[600:700]))
            for array in [result.errors, result.val_errors, *result.params["weights"],
                          *result.params["biases"]]:
                digest.update(np.ascontiguousarray(array).tobytes())
    print(digest.hexdigest())
""")


def _run(script: str, **env) -> list[str]:
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env={**os.environ, **env})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.split()


def test_wide_vectors_only_where_there_is_avx512():
    assert wide_vector_features("+avx2,+avx512f,+fma") == f"+avx2,+avx512f,+fma,{WIDE_VECTORS}"
    assert wide_vector_features("+avx2,-avx512f,+fma") is None
    assert wide_vector_features("+neon,+fp-armv8") is None


def test_the_engine_compiles_with_wide_vectors_on_avx512_hosts():
    host, used = _run(FEATURES)
    if "+avx512f" in host.split(","):
        assert used.split(",")[-1] == WIDE_VECTORS
    else:
        assert WIDE_VECTORS not in used


def test_a_chosen_cpu_target_is_left_as_it_is():
    host, used = _run(FEATURES, NUMBA_CPU_FEATURES="+sse2")
    assert used == "+sse2"


@pytest.mark.slow
def test_the_vector_width_changes_no_bits(tmp_path):
    """The same runs compiled with numba's own tuning (256-bit vectors on AVX-512 hosts; an
    empty kernel cache, about 15 s of compiling) give the same bits."""
    host = _run(FEATURES)[0]
    wide = _run(BITS)
    narrow = _run(BITS, NUMBA_CPU_FEATURES=host, NUMBA_CACHE_DIR=str(tmp_path))
    assert wide == narrow
