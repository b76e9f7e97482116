"""The engine compiles one specialisation of each jitted function per dtype.

numba compiles a callee once per literal argument it is called with (a constant 0 beside a
run-time int, a literal True beside a run-time bool): each such duplicate of a large function
costs seconds of a cold compile, the newcomer's first start. Every training mode, the
optimizers, clipping, plateaus, validation, predict and gradients must share them.
"""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import numpy as np
    from numba.core.registry import CPUDispatcher

    import kernels
    from kernels import _engine

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, 3)), rng.integers(0, 2, 40)
    for optimizer, clip, decay in (("sgd", None, 0.0), ("sgd", 1.0, 0.0), ("adam", None, 0.01),
                                   ("momentum", 0.5, 0.0)):
        for batch_mode, shuffle in (("sgd", True), ("minibatch", True), ("full", False),
                                    ("full", True)):
            result = kernels.train(
                X, y, layers=[3, 4, 2], output_activation="softmax", loss="cross_entropy",
                batch_mode=batch_mode, batch_size=8, shuffle=shuffle, epochs=3,
                optimizer=optimizer, clip_norm=clip, weight_decay=decay, eval_every=2,
                validation=(X[:10], y[:10]),
                stop_on_plateau={"metric": "error", "patience": 1, "min_delta": 0.0,
                                 "restore_best": True})
    kernels.predict(result.params, X, output_activation="softmax")
    kernels.gradients(X, y, result.params, output_activation="softmax", loss="cross_entropy")
    counts = {name: len(value.signatures) for name, value in vars(_engine).items()
              if isinstance(value, CPUDispatcher) and value.signatures}
    print(counts)
    assert counts and all(n == 1 for n in counts.values()), counts
""")


@pytest.mark.slow
def test_every_engine_function_has_one_float64_specialisation(tmp_path):
    # A process of its own, on an empty kernel cache: functions loaded from the cache do not
    # list their callees' specialisations (about 12 s of compiling).
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
