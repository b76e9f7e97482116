"""Which engine trains a run: the compiled kernels, or, while a machine's first compile of
them is still running, the interpreted engine (kernels.interpreted, the same bits) for a run
small enough to finish in a few seconds that way; a larger run waits for the compile."""

import logging

from kernels import compilestate

log = logging.getLogger(__name__)

# Interpreted work a run may have, in row-parameter visits: (rows trained and evaluated per
# epoch) x epochs x (parameters + units). About 2 microseconds each in Python: 1.5e6 is a
# few seconds, against a 8-20 s compile (examples/xor.json: about 0.5e6, under a second).
INTERPRETED_BUDGET = 1.5e6

_compiled_ready = False  # once true in a process, it stays true


def interpreted_work(spec: dict, n_train: int, n_validation: int) -> float:
    """The interpreted cost of a run, in row-parameter visits (see INTERPRETED_BUDGET)."""
    layers = spec["layers"]
    params = sum((a + 1) * b for a, b in zip(layers, layers[1:]))
    every = max(1, int(spec.get("eval_every", 1)))
    rows = n_train * (1 + 1 / every) + n_validation / every
    return float(spec["epochs"]) * rows * (params + sum(layers))


def choose_engine(spec: dict, n_train: int, n_validation: int, run_id=None) -> str:
    """"jit" once the compiled float64 training kernels are cached (waiting, for a run too
    large to interpret, until the process compiling them is done), or "python" for a small
    float64 run while they are still compiling."""
    global _compiled_ready
    if _compiled_ready:
        return "jit"
    if compilestate.training_kernels_cached() and not compilestate.first_compile_running():
        _compiled_ready = True
        return "jit"
    if (spec.get("dtype", "float64") == "float64"
            and interpreted_work(spec, n_train, n_validation) <= INTERPRETED_BUDGET):
        log.info("run %s: the kernels are still compiling; training it interpreted "
                 "(the same results)", run_id)
        return "python"
    log.info("run %s: waiting for the kernels' first compile", run_id)
    compilestate.wait_first_compile()
    _compiled_ready = True  # (if that compile failed, this process compiles them itself)
    return "jit"
