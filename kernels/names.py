"""The names users write in a run spec, and the integer codes the engine takes."""

from . import codes as E

HIDDEN_ACTIVATIONS = {
    "sigmoid": E.SIGMOID,
    "tanh": E.TANH,
    "relu": E.RELU,
    "leaky_relu": E.LEAKY_RELU,
    "linear": E.LINEAR,
}
OUTPUT_ACTIVATIONS = {**HIDDEN_ACTIVATIONS, "softmax": E.SOFTMAX}
LOSSES = {"mse": E.MSE, "cross_entropy": E.CROSS_ENTROPY}
# Output activations that cross_entropy is defined for (softmax: categorical; sigmoid: binary).
CROSS_ENTROPY_OUTPUTS = ("softmax", "sigmoid")
BATCH_MODES = ("sgd", "minibatch", "full")
INITS = ("uniform", "normal", "xavier", "he")
DTYPES = ("float64", "float32")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adam", "adamw")
OPTIMIZER_CODES = dict(zip(OPTIMIZERS, (E.OPT_SGD, E.OPT_MOMENTUM, E.OPT_NESTEROV, E.OPT_ADAM,
                                        E.OPT_ADAMW)))
LR_SCHEDULES = ("constant", "step", "exponential", "cosine")
# The keys of each schedule: (required, {optional: default}).
SCHEDULE_KEYS = {
    "constant": ((), {}),
    "step": (("step_size",), {"gamma": 0.1}),
    "exponential": (("gamma",), {}),
    "cosine": ((), {"lr_min": 0.0}),
}
PLATEAU_METRICS = {"val_error": E.PLATEAU_VAL_ERROR, "error": E.PLATEAU_ERROR}
PLATEAU_DEFAULTS = {"metric": "val_error", "patience": 10, "min_delta": 0.0,
                    "restore_best": True}

DEFAULTS = {
    "activation": "sigmoid",
    "output_activation": None,
    "loss": "mse",
    "learning_rate": 0.1,
    "batch_mode": "minibatch",
    "batch_size": 32,
    "epochs": 100,
    "seed": 0,
    "shuffle": True,
    "init": "uniform",
    "dtype": "float64",
}


def default_output_activation(loss: str, n_outputs: int) -> str:
    """The output activation used when the spec leaves it out."""
    if loss == "cross_entropy" and n_outputs > 1:
        return "softmax"
    return "sigmoid"
