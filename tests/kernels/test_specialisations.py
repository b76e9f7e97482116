"""The engine compiles one specialisation of each jitted function per dtype, and the functions
that skip numba's reference counts return no array.

numba compiles a callee once per literal argument it is called with (a constant 0 beside a
run-time int, a literal True beside a run-time bool): each such duplicate of a large function
costs seconds of a cold compile, the newcomer's first start. Every training mode, the
optimizers, clipping, plateaus, validation, predict and gradients must share them.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent("""
    import json

    import numpy as np
    from numba.core import types
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
    dispatchers = {name: value for name, value in vars(_engine).items()
                   if isinstance(value, CPUDispatcher) and value.signatures}

    def holds_array(t):
        return isinstance(t, types.Array) or (
            isinstance(t, types.BaseTuple) and any(holds_array(x) for x in t.types))

    leaves = {name: [o.signature.return_type for o in value.overloads.values()]
              for name, value in dispatchers.items() if value.targetoptions.get("_nrt") is False}
    arrays = {name: [str(t) for t in returned if holds_array(t)]
              for name, returned in leaves.items() if any(map(holds_array, returned))}
    print(json.dumps({"counts": {name: len(value.signatures)
                                 for name, value in dispatchers.items()},
                      "leaves": sorted(leaves), "leaves_returning_arrays": arrays}))
""")


@pytest.fixture(scope="module")
def compiled_engine(tmp_path_factory) -> dict:
    """What a process of its own on an empty kernel cache compiled (functions loaded from
    the cache do not list their callees' specialisations; about 12 s of compiling): each
    engine function's number of specialisations, and the return types of those compiled
    without reference counts."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp("kernel-cache"))}
    done = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_every_engine_function_has_one_float64_specialisation(compiled_engine):
    counts = compiled_engine["counts"]
    assert counts and all(n == 1 for n in counts.values()), counts


@pytest.mark.slow
def test_functions_without_reference_counts_return_no_array(compiled_engine):
    """A function compiled with _nrt=False that returned an array would hand its caller a
    reference it never took: the caller would free the array while it is still in use."""
    assert len(compiled_engine["leaves"]) >= 20, compiled_engine["leaves"]
    assert compiled_engine["leaves_returning_arrays"] == {}
