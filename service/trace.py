"""One backpropagation step of one sample, in the tutorial's notation: the numbers come from
kernels.trace_step, i.e. from the kernels training runs on."""

import math
import re

import numpy as np

import kernels
from service.errors import Invalid

PARAM_KEY = re.compile(r"^([WB])([1-9][0-9]*)$")


def _json(array):
    """Nested lists of floats, with non-finite values as null."""
    values = np.asarray(array, dtype=np.float64).tolist()
    if isinstance(values, float):
        return values if math.isfinite(values) else None
    return [_json(v) for v in values] if values and isinstance(values[0], list) \
        else [v if math.isfinite(v) else None for v in values]


def _named(params: dict) -> dict:
    out = {}
    for k, (W, B) in enumerate(zip(params["weights"], params["biases"]), start=1):
        out[f"W{k}"] = _json(W)
        out[f"B{k}"] = _json(B)
    return out


def _all_numbers(value) -> bool:
    """Whether ``value`` is a JSON number or nested lists of them (no strings, booleans)."""
    if isinstance(value, list):
        return all(_all_numbers(v) for v in value)
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def parse_params(given: dict, layers: list[int]) -> dict:
    """{"W1", "B1", ...} (or {"weights", "biases"}) as the kernels' layout; Invalid naming
    ``params.KEY`` for a missing, unknown or misshapen entry."""
    n = len(layers) - 1
    if set(given) == {"weights", "biases"}:
        lists = [key for key in ("weights", "biases") if not isinstance(given[key], list)]
        if lists:
            raise Invalid({f"params.{key}": "expected a list" for key in lists},
                          "invalid params")
        given = {f"{kind}{k + 1}": value for kind, key in (("W", "weights"), ("B", "biases"))
                 for k, value in enumerate(given[key])}
    problems = {}
    for key in given:
        match = PARAM_KEY.match(key)
        if not match or len(match.group(2)) > 4 or int(match.group(2)) > n:
            problems[f"params.{key}"] = f"unknown; expected W1..W{n} and B1..B{n}"
    out = {"weights": [], "biases": []}
    for k in range(1, n + 1):
        for kind, shape in (("W", (layers[k], layers[k - 1])), ("B", (layers[k],))):
            key = f"{kind}{k}"
            if key not in given:
                problems[f"params.{key}"] = "missing"
                continue
            try:
                if not _all_numbers(given[key]):
                    raise TypeError
                value = np.asarray(given[key], dtype=np.float64)
            except (TypeError, ValueError):
                problems[f"params.{key}"] = "expected (nested lists of) numbers"
                continue
            if value.shape != shape:
                problems[f"params.{key}"] = (f"expected shape {list(shape)}, got "
                                             f"{list(value.shape)}")
            elif not np.isfinite(value).all():
                problems[f"params.{key}"] = "must be finite"
            else:
                out["weights" if kind == "W" else "biases"].append(value)
    if problems:
        raise Invalid(problems)
    return out


# Where a kernel argument's ValueError belongs in the request.
KERNEL_FIELDS = {"X": "x", "y": "y", "layers": "layers", "activation": "activation",
                 "output_activation": "output_activation", "loss": "loss",
                 "learning_rate": "learning_rate", "params": "params", "seed": "seed",
                 "init": "init", "dtype": "dtype"}


def trace(body: dict) -> dict:
    """One SGD step of one sample (a request body loaded by the API's TraceRequestSchema),
    named as in the tutorial; Invalid naming the field the kernels reject."""
    layers = body["layers"]
    problems = {}
    if len(body["x"]) != layers[0]:
        problems["x"] = f"expected {layers[0]} values (layers[0]), got {len(body['x'])}"
    if isinstance(body["y"], list) and len(body["y"]) != layers[-1]:
        problems["y"] = f"expected {layers[-1]} values (layers[-1]), got {len(body['y'])}"
    if problems:
        raise Invalid(problems)
    params = parse_params(body["params"], layers) if body.get("params") else None
    spec = {name: body[name] for name in ("layers", "activation", "output_activation", "loss",
                                          "learning_rate", "init", "seed", "dtype")}
    if spec["output_activation"] is None:
        spec["output_activation"] = kernels.default_output_activation(spec["loss"], layers[-1])
    try:
        step = kernels.trace_step(body["x"], body["y"], params=params, **spec)
    except ValueError as exc:
        name, _, message = str(exc).partition(": ")
        field = KERNEL_FIELDS.get(name, "body")
        raise Invalid({field: message or str(exc)}) from None
    symbols = kernels.layer_symbols(len(layers) - 1)
    forward = {"X": _json(step.x)}
    gradients = {}
    described = []
    for k, ((pre, post), z, a) in enumerate(zip(symbols, step.pre_activations,
                                                step.activations), start=1):
        forward[pre] = _json(z)
        forward[post] = _json(a)
        gradients[f"dE/dW{k}"] = _json(step.gradients["weights"][k - 1])
        gradients[f"dE/dB{k}"] = _json(step.gradients["biases"][k - 1])
        described.append({"layer": k, "weights": f"W{k}", "biases": f"B{k}",
                          "pre_activation": pre, "activation": post,
                          "function": step.activations_used[k - 1],
                          "shape": [layers[k], layers[k - 1]]})
    return {"spec": spec, "layers": described, "forward": forward, "y": _json(step.target),
            "E": step.error if math.isfinite(step.error) else None, "gradients": gradients,
            "params": _named(step.params), "updated": _named(step.updated)}
