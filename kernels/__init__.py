"""Descent's training core: pure numerics (numpy + numba), no I/O.

``train`` runs gradient descent as API.md section 1 defines, with the optimizers, schedules,
clipping and plateau stopping of section 1b (``learning_rate_at`` gives a schedule's rates);
``predict`` and ``gradients`` apply given parameters; ``trace_step`` shows one SGD step of one sample layer by layer;
``load_dataset`` returns the built-in datasets.
"""

from .datasets import BUILTIN_DATASETS, dataset_info, load_dataset
from .inference import gradients, predict
from .init import init_params
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
from .trace import TraceStep, layer_symbols, trace_step
from .training import Progress, TrainResult, train

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
    "dataset_info",
    "default_output_activation",
    "gradients",
    "init_params",
    "layer_symbols",
    "learning_rate_at",
    "load_dataset",
    "predict",
    "trace_step",
    "train",
]
