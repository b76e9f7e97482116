"""Per-epoch learning rates of a learning-rate schedule (API.md section 1b)."""

import math

import numpy as np

from .validation import check_schedule


def _rate(lr: float, schedule: dict, epoch: int, epochs: int) -> float:
    """The formula of a validated schedule, in float64 (docs/kernels.md)."""
    kind = schedule["kind"]
    if kind == "step":
        return lr * schedule["gamma"] ** ((epoch - 1) // schedule["step_size"])
    if kind == "exponential":
        return lr * schedule["gamma"] ** (epoch - 1)
    if kind == "cosine":
        lr_min = schedule["lr_min"]
        return lr_min + (lr - lr_min) * (1.0 + math.cos(math.pi * (epoch - 1) / epochs)) / 2.0
    return lr


def learning_rate_at(lr: float, schedule, epoch: int, epochs: int) -> float:
    """The float64 learning rate of 1-based ``epoch`` of ``epochs`` under ``schedule`` (a
    dict as in the run spec, None for constant), before any cast to the network's dtype."""
    return _rate(float(lr), check_schedule(schedule, float(lr)), int(epoch), int(epochs))


def learning_rates(lr: float, schedule: dict, epochs: int) -> np.ndarray:
    """float64 array whose entry e (1..epochs) is epoch e's learning rate; entry 0 unused.
    Computed epoch by epoch with Python's math (C's pow and cos), so each entry has the bits
    of ``learning_rate_at``."""
    rates = np.full(epochs + 1, lr, dtype=np.float64)
    if schedule["kind"] != "constant":
        for epoch in range(1, epochs + 1):
            rates[epoch] = _rate(lr, schedule, epoch, epochs)
    return rates
