"""Descent's training core: pure numerics (numpy + numba), no I/O.

``train`` runs gradient descent as API.md section 1 defines, with the optimizers, schedules,
clipping and plateau stopping of section 1b (``learning_rate_at`` gives a schedule's rates);
``predict`` and ``gradients`` apply given parameters; ``trace_step`` shows one SGD step of one sample layer by layer;
``load_dataset`` returns the built-in datasets; ``blas_threads_for`` the BLAS threads to set
around ``train(threads=...)``.

The jitted engine (numba, and SciPy's BLAS that its products call) loads on the first use of
``train``, ``predict``, ``gradients`` or ``trace_step``, or on ``load_engine()``: the names,
defaults and validation of a run spec do not need it. The BLAS library it calls is loaded at
import (kernels.blaslib), so thread limits (threadpoolctl) set after ``import kernels``
reach it.
"""

from .blaslib import load_engine_blas
from .datasets import BUILTIN_DATASETS, dataset_info, load_dataset
from .init import init_params
from .parallel import blas_threads_for
from .names import (
    BATCH_MODES,
    DEFAULTS,
    DTYPES,
    HIDDEN_ACTIVATIONS,
    INITS,
    LOSSES,
    LR_SCHEDULES,
    OPTIMIZERS,
    OUTPUT_ACTIVATIONS,
    default_output_activation,
)
from .schedule import learning_rate_at

load_engine_blas()

# What runs the jitted engine is imported on first use (PEP 562): importing numba and SciPy
# and loading the compiled kernels takes about a second, which a process that only validates
# specs (the API) need not pay.
_ENGINE_BACKED = {
    "gradients": "inference", "predict": "inference",
    "TraceStep": "trace", "layer_symbols": "trace", "trace_step": "trace",
    "Progress": "training", "TrainResult": "training", "train": "training",
}


def load_engine() -> None:
    """Load the jitted engine and the BLAS it calls now (the compiled kernels themselves load
    on their first call)."""
    from . import inference, trace, training  # noqa: F401


def __getattr__(name):
    module = _ENGINE_BACKED.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "BATCH_MODES",
    "BUILTIN_DATASETS",
    "DEFAULTS",
    "DTYPES",
    "HIDDEN_ACTIVATIONS",
    "INITS",
    "LOSSES",
    "LR_SCHEDULES",
    "OPTIMIZERS",
    "OUTPUT_ACTIVATIONS",
    "Progress",
    "TraceStep",
    "TrainResult",
    "blas_threads_for",
    "dataset_info",
    "default_output_activation",
    "gradients",
    "init_params",
    "layer_symbols",
    "learning_rate_at",
    "load_dataset",
    "load_engine",
    "predict",
    "trace_step",
    "train",
]
