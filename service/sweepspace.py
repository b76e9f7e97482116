"""Search spaces of sweeps: a grid (every combination), seeded random draws, or a space a
sampler searches (``tpe``, ``cmaes``: see service.store.search).

Pure functions, no Flask and no database: ``configurations`` turns a sweep body into the
list of varied fields of each configuration; ``probes`` gives the configurations that
check a model-based space's every bound and choice; ``config_hash`` is the key that makes a
configuration unique within its sweep."""

import itertools
import math

import numpy as np

from service.store.sweeps import MODEL_BASED, config_hash

DISTRIBUTIONS = ("choice", "uniform", "loguniform", "int")
# A sweep expands to at most this many configurations.
MAX_CONFIGURATIONS = 1000
# A random sweep redraws a configuration it already has at most this many times per trial.
REDRAWS = 20


class SpaceError(ValueError):
    """A bad search space; ``fields`` maps a path such as ``grid.learning_rate[2]`` to what
    is wrong there."""

    def __init__(self, fields: dict):
        super().__init__("; ".join(f"{k}: {v}" for k, v in fields.items()))
        self.fields = fields


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def grid_configurations(grid: dict) -> list[dict]:
    """Every combination of the grid's values; fields in name order, the first varying
    slowest."""
    problems = {}
    if not isinstance(grid, dict) or not grid:
        raise SpaceError({"grid": "expected an object of field: [values]"})
    for name, values in grid.items():
        if not isinstance(values, list) or not values:
            problems[f"grid.{name}"] = "expected a non-empty list of values"
    if problems:
        raise SpaceError(problems)
    total = math.prod(len(values) for values in grid.values())
    if total > MAX_CONFIGURATIONS:
        raise SpaceError({"grid": f"{total} configurations; at most {MAX_CONFIGURATIONS}"})
    names = sorted(grid)  # JSON objects have no order: fields vary in name order
    return [dict(zip(names, combo))
            for combo in itertools.product(*(grid[name] for name in names))]


def _check_distribution(path: str, dist) -> str:
    if not isinstance(dist, dict) or len(dist) != 1 or next(iter(dist)) not in DISTRIBUTIONS:
        return f"expected one of {{{', '.join(f'{d!r}: ...' for d in DISTRIBUTIONS)}}}"
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        if not isinstance(args, list) or not args:
            return "choice: expected a non-empty list of values"
        return ""
    if not isinstance(args, list) or len(args) != 2 or not all(map(_is_number, args)):
        return f"{kind}: expected [low, high] numbers"
    low, high = args
    if low > high:
        return f"{kind}: low must not exceed high"
    if kind == "loguniform" and low <= 0:
        return "loguniform: low must be positive"
    if kind == "int" and not all(isinstance(a, int) for a in args):
        return "int: expected [low, high] integers"
    return ""


def _draw(rng: np.random.Generator, dist: dict):
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        return args[int(rng.integers(len(args)))]
    if kind == "uniform":
        return float(rng.uniform(args[0], args[1]))
    if kind == "loguniform":
        return float(math.exp(rng.uniform(math.log(args[0]), math.log(args[1]))))
    return int(rng.integers(args[0], args[1], endpoint=True))


def _space_problems(key: str, space, trials, seed) -> dict:
    """{path: message} of a space in random's syntax with its trials and seed."""
    if not isinstance(space, dict) or not space:
        return {key: "expected an object of field: distribution"}
    problems = {}
    for name, dist in space.items():
        message = _check_distribution(f"{key}.{name}", dist)
        if message:
            problems[f"{key}.{name}"] = message
    if isinstance(trials, bool) or not isinstance(trials, int) or not \
            1 <= trials <= MAX_CONFIGURATIONS:
        problems["trials"] = f"expected an integer from 1 to {MAX_CONFIGURATIONS}"
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        problems["seed"] = "expected a non-negative integer"
    return problems


def check_space(key: str, space: dict, trials, seed) -> None:
    """SpaceError naming ``key.field``, ``trials`` or ``seed`` unless ``space`` is a
    non-empty object of distributions, trials within bounds and seed a non-negative
    integer; or naming ``key`` when every field has a single value (nothing to search)."""
    problems = _space_problems(key, space, trials, seed)
    if "seed" not in problems and seed >= 2**32:
        # Optuna's samplers seed numpy's RandomState, which takes 32 bits.
        problems["seed"] = f"expected an integer from 0 to {2**32 - 1} for a model-based search"
    if problems:
        raise SpaceError(problems)
    if all(_fixed(dist) for dist in space.values()):
        raise SpaceError({key: "nothing to search: every field has a single value"})


def _fixed(dist: dict) -> bool:
    """Whether a (valid) distribution has one value only."""
    kind, args = next(iter(dist.items()))
    return len(args) == 1 if kind == "choice" else args[0] == args[1]


def _values(dist: dict) -> list:
    """What probes try of a distribution: each choice, or its low and high."""
    kind, args = next(iter(dist.items()))
    if kind == "choice":
        return list(args)
    if kind == "int":
        return sorted({args[0], args[1]})
    return sorted({float(args[0]), float(args[1])})


def probes(space: dict) -> list[dict]:
    """Configurations that try every choice and both bounds of each field, the other fields
    at their first such value: what a model-based sweep validates like runs before it is
    stored (its real configurations are asked one slot at a time)."""
    total = 1 + sum(len(_values(dist)) - 1 for dist in space.values())
    if total > MAX_CONFIGURATIONS:
        raise SpaceError({"space": f"{total} choices and bounds to validate; at most "
                                   f"{MAX_CONFIGURATIONS}"})
    first = {name: _values(space[name])[0] for name in sorted(space)}
    out, seen = [first], {config_hash(first)}
    for name in sorted(space):
        for value in _values(space[name])[1:]:
            config = {**first, name: value}
            if config_hash(config) not in seen:
                seen.add(config_hash(config))
                out.append(config)
    return out


def random_configurations(space: dict, trials, seed) -> list[dict]:
    """``trials`` draws from the space with numpy's default_rng(seed), fields drawn in name
    order. A draw equal to an earlier one is drawn again (up to REDRAWS times), so a
    small discrete space may give fewer configurations than trials."""
    problems = _space_problems("random", space, trials, seed)
    if problems:
        raise SpaceError(problems)
    rng = np.random.default_rng(seed)
    configs, seen = [], set()
    for _ in range(trials):
        for _ in range(REDRAWS):
            config = {name: _draw(rng, space[name]) for name in sorted(space)}
            key = config_hash(config)
            if key not in seen:
                seen.add(key)
                configs.append(config)
                break
    return configs


def configurations(kind: str, space: dict, trials=None, seed=0) -> list[dict]:
    """The configurations (varied fields only) of a grid or random space; of a model-based
    space, its probes."""
    if kind == "grid":
        return grid_configurations(space)
    if kind in MODEL_BASED:
        check_space("space", space, trials, seed)
        return probes(space)
    return random_configurations(space, trials, seed)


def apply_config(base: dict, config: dict) -> dict:
    """The run spec of one configuration: ``base`` with the varied fields set. A dotted
    name (``lr_schedule.gamma``) sets one key of an object field, after any whole object
    the configuration gives that field; an object field missing from the base (or null)
    starts empty."""
    merged = dict(base)
    for name in sorted(config, key=lambda n: ("." in n, n)):
        parent, dot, key = name.partition(".")
        if not dot:
            merged[name] = config[name]
        elif isinstance(merged.get(parent), dict) or merged.get(parent) is None:
            merged[parent] = {**(merged.get(parent) or {}), key: config[name]}
        # else: the base's value is not an object, which validating the spec reports
    return merged


def field_path(kind: str, name: str, config_index: int, space: dict, config: dict) -> str:
    """Where a bad value of a varied field came from: ``grid.learning_rate[2]`` (its index
    in the grid's list) or ``random.learning_rate`` (with the trial in the message)."""
    if kind == "grid":
        values = space[name]
        for i, value in enumerate(values):
            if value == config[name] and type(value) is type(config[name]):
                return f"grid.{name}[{i}]"
        return f"grid.{name}"
    return f"{'space' if kind in MODEL_BASED else 'random'}.{name}"
