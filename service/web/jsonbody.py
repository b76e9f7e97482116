"""JSON request bodies decoded within bounds, so that no body makes the decoder (or anything
after it) fail with a server error:

- a body nested deeper than MAX_DEPTH is refused: json.loads raises RecursionError near 1000
  levels (a clean exception: the C decoder counts its own recursion), and a value nested
  under that is measured before anything else recurses into it;
- an integer literal longer than int() accepts (Python's 4300-digit limit) and text no store
  can keep (NUL, lone surrogates: ``service.text``) are reported by the path of the value
  holding them, as our error format names fields (``tags.a``, ``X[0][1]``).

Each check walks the decoded value once at most, without recursion: on rows of numbers it
adds about a tenth to json.loads' own time, on millions of tiny containers about as much
again as json.loads (docs/reliability.md has the numbers). ``decode`` is a bounded
json.loads (the app's JSON provider uses it, so ``request.get_json`` is bounded too);
``decode_body`` also checks the values, for the API's request parser.
"""

import json
import re

from flask.json.provider import DefaultJSONProvider

from service.text import shown, text_problem

MAX_DEPTH = 64
_CONTAINERS = frozenset((list, dict))  # what json.loads makes of arrays and objects
# At most this many bad values are named in one answer.
MAX_PROBLEMS = 20

# Escapes that decode to text no store keeps (NUL, a UTF-16 surrogate): only bodies holding
# one are walked for them. (A literal prefix: the search runs at memchr speed.)
_SUSPECT = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")


class TooDeep(ValueError):
    """The body nests arrays and objects deeper than MAX_DEPTH."""

    def __init__(self):
        super().__init__(f"nested deeper than {MAX_DEPTH} levels")


class BadValues(ValueError):
    """Values of the body no field can take; ``fields``: {path: message}."""

    def __init__(self, fields: dict):
        super().__init__("; ".join(f"{path}: {message}" for path, message in fields.items()))
        self.fields = fields


class _TooLong:
    """What an integer literal beyond int()'s digit limit decodes to, to be named."""

    def __init__(self, digits: int):
        self.digits = digits


def nesting_depth(value, limit: int = MAX_DEPTH) -> int:
    """How deeply a decoded JSON ``value`` nests arrays and objects (a scalar: 0), counting
    no further than ``limit`` + 1. Level by level, without recursion."""
    level = [value] if type(value) in _CONTAINERS else []
    depth = 0
    while level and depth <= limit:
        depth += 1
        deeper = []
        for container in level:
            items = container.values() if type(container) is dict else container
            if items and not _CONTAINERS.isdisjoint(map(type, items)):  # (C speed)
                deeper.extend(item for item in items if type(item) in _CONTAINERS)
        level = deeper
    return depth


def decode(data: bytes | str):
    """json.loads of UTF-8 ``data``, refusing (TooDeep) a body nested deeper than MAX_DEPTH.
    Otherwise raises what json.loads raises (JSONDecodeError, UnicodeDecodeError; ValueError
    for an integer over int()'s digit limit)."""
    return _decode(data)[1]


def _decode(data: bytes | str) -> tuple[str, object]:
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        value = json.loads(text)
    except RecursionError:
        raise TooDeep() from None
    if nesting_depth(value) > MAX_DEPTH:
        raise TooDeep()
    return text, value


def decode_body(data: bytes | str):
    """A request body's JSON value: ``decode``, then BadValues naming each integer literal
    too long to convert and each string (or key) no store can keep."""
    try:
        text, value = _decode(data)
    except (json.JSONDecodeError, UnicodeDecodeError, TooDeep):
        raise
    except ValueError:  # an integer literal over int()'s limit: decode again to name it
        try:
            value = json.loads(data, parse_int=_int_or_too_long)
        except RecursionError:
            raise TooDeep() from None
        raise BadValues(value_problems(value)
                        or {"body": "holds an integer too large to convert"}) from None
    if _SUSPECT.search(text) or (isinstance(data, str) and text_problem(text)):
        problems = value_problems(value)
        if problems:
            raise BadValues(problems)
    return value


def _int_or_too_long(literal: str):
    try:
        return int(literal)
    except ValueError:
        return _TooLong(len(literal.lstrip("-")))


def value_problems(value) -> dict:
    """{path: message} for the first MAX_PROBLEMS unusable values in ``value`` (a decoded
    body): text no store keeps, in keys or strings, and integers too long to convert. The
    body itself is "body"; members are dotted, items [i]."""
    problems = {}
    stack = [("", value)]
    while stack and len(problems) < MAX_PROBLEMS:
        path, item = stack.pop()
        if isinstance(item, dict):
            for key, member in reversed(item.items()):
                member_path = f"{path}.{shown(key)}" if path else shown(key)
                problem = text_problem(key)
                if problem:
                    problems[member_path] = f"the key {problem}"
                else:
                    stack.append((member_path, member))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", member)
                         for index, member in reversed(list(enumerate(item))))
        elif isinstance(item, str):
            problem = text_problem(item)
            if problem:
                problems[path or "body"] = problem
        elif isinstance(item, _TooLong):
            problems[path or "body"] = (f"an integer of {item.digits} digits, too large for "
                                        "any field")
    return problems


class BoundedJSONProvider(DefaultJSONProvider):
    """Flask's JSON provider, decoding with ``decode`` (``request.get_json`` cannot recurse
    without bound)."""

    def loads(self, s, **kwargs):
        """``decode`` (keyword arguments are not supported, and not used by Flask)."""
        return decode(s)
