"""The filter expressions of GET /runs (``where=``), parsed into SQLAlchemy expressions.

A small recursive-descent parser. Every value becomes a bound parameter; nothing of the
expression is ever pasted into SQL text. Grammar (keywords are case-insensitive)::

    expr       := and_expr ("or" and_expr)*
    and_expr   := not_expr ("and" not_expr)*
    not_expr   := "not" not_expr | "(" expr ")" | comparison
    comparison := field op value | field ["not"] "in" "(" value ("," value)* ")"
    op         := "=" | "==" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    field      := status | dataset | sweep_id | name | batch_mode | optimizer | stop_reason
                | tag.KEY | tag."KEY"
                | learning_rate | batch_size | epochs | seed | epochs_done | final_error
                | best_error | best_epoch | final_accuracy | final_val_error
                | created_at | started_at | finished_at | id
    value      := number | "string" | 'string' | bare_word | null

Times are quoted ISO 8601 dates or datetimes (UTC unless an offset is given). ``= null`` and
``!= null`` test for a missing value. As in SQL, a comparison with a missing value is
neither true nor false, so ``final_error < 0.1`` and ``not final_error < 0.1`` both leave out
runs without a final error; tags are the exception: a run without tag KEY has a tag that
equals nothing, so ``tag.KEY != v``, ``not tag.KEY = v`` and ``tag.KEY not in (...)`` include
it (and ``tag.KEY < v`` etc. leave it out).
"""

import json
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Optional

from sqlalchemy import Boolean, and_, bindparam, false, func, not_, or_, select
from sqlalchemy.dialects.postgresql import JSONB

from .models import OPTIMIZERS, RUN_STATES, STOP_REASONS, Dataset, Run

MAX_LENGTH = 4000
MAX_DEPTH = 50
MAX_IN_VALUES = 1000

NUMERIC_FIELDS = ("id", "learning_rate", "batch_size", "epochs", "seed", "epochs_done",
                  "final_error", "best_error", "best_epoch", "final_accuracy",
                  "final_val_error", "sweep_id")
TIME_FIELDS = ("created_at", "started_at", "finished_at")
STRING_FIELDS = ("status", "name", "batch_mode", "optimizer", "stop_reason", "dataset")
# String fields whose values are names from a list: anything else is a typo, told at once.
NAMED_VALUES = {"status": RUN_STATES, "optimizer": OPTIMIZERS, "stop_reason": STOP_REASONS}
FIELDS = NUMERIC_FIELDS + TIME_FIELDS + STRING_FIELDS

OPERATORS = {"=": "=", "==": "=", "!=": "!=", "<>": "!=", "<": "<", "<=": "<=", ">": ">",
             ">=": ">="}
KEYWORDS = ("and", "or", "not", "in", "null")

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<number>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_]))
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*')
  | (?P<word>[A-Za-z_][A-Za-z0-9_\-:]*)
  | (?P<op>==|!=|<>|<=|>=|=|<|>)
  | (?P<punct>[(),.])
""", re.VERBOSE)


# NUL and lone surrogates (what service.text refuses).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


class WhereError(ValueError):
    """A malformed or meaningless expression; ``offset`` is the 0-based character where."""

    def __init__(self, offset: int, message: str):
        super().__init__(f"at character {offset}: {message}")
        self.offset = offset
        self.detail = message


@dataclass
class Token:
    kind: str  # number, string, word, op, punct, end
    text: str
    offset: int
    value: object = None


def tokenize(text: str) -> list[Token]:
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None:
            if text[position] in "\"'":
                raise WhereError(position, "unterminated string; expected a closing "
                                           f"{text[position]}")
            raise WhereError(position, f"unexpected character {text[position]!r}")
        kind = match.lastgroup
        chunk = match.group()
        if kind != "space":
            token = Token(kind, chunk, position)
            if kind == "string":
                token.value = re.sub(r"\\(.)", r"\1", chunk[1:-1], flags=re.S)
            elif kind == "number":
                token.value = float(chunk) if any(c in chunk for c in ".eE") else int(chunk)
            tokens.append(token)
        position = match.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _describe(token: Token) -> str:
    return "the end of the expression" if token.kind == "end" else repr(token.text)


class _Parser:
    def __init__(self, text: str, dialect: str):
        self.tokens = tokenize(text)
        self.index = 0
        self.dialect = dialect
        self.depth = 0

    # -- helpers
    @property
    def token(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def is_keyword(self, word: str) -> bool:
        return self.token.kind == "word" and self.token.text.lower() == word

    def fail(self, expected: str, token: Optional[Token] = None):
        token = token or self.token
        raise WhereError(token.offset, f"expected {expected}, found {_describe(token)}")

    def expect_punct(self, char: str, expected: str) -> Token:
        if self.token.kind == "punct" and self.token.text == char:
            return self.advance()
        self.fail(expected)

    # -- grammar
    def parse(self):
        clause = self.expr()
        if self.token.kind != "end":
            self.fail("'and', 'or' or the end of the expression")
        return clause

    def nest(self) -> None:
        """Enter one more level of parentheses or 'not' (at the token that opens it)."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise WhereError(self.token.offset, f"nested deeper than {MAX_DEPTH} levels")

    def expr(self):
        parts = [self.and_expr()]
        while self.is_keyword("or"):
            self.advance()
            parts.append(self.and_expr())
        return parts[0] if len(parts) == 1 else or_(*parts)

    def and_expr(self):
        parts = [self.not_expr()]
        while self.is_keyword("and"):
            self.advance()
            parts.append(self.not_expr())
        return parts[0] if len(parts) == 1 else and_(*parts)

    def not_expr(self):
        if self.is_keyword("not"):
            self.nest()
            self.advance()
            clause = not_(self.not_expr())
            self.depth -= 1
            return clause
        if self.token.kind == "punct" and self.token.text == "(":
            self.nest()
            self.advance()
            clause = self.expr()
            self.expect_punct(")", "')' or an operator ('and', 'or')")
            self.depth -= 1
            return clause
        return self.comparison()

    def field(self):
        """(kind, name, column expression, start token) of the field at the cursor."""
        token = self.token
        if token.kind != "word" or token.text.lower() in KEYWORDS:
            self.fail("a field name, 'not' or '('")
        self.advance()
        name = token.text
        if name == "tag":
            self.expect_punct(".", "'.' and a tag key after 'tag'")
            key_token = self.token
            if key_token.kind == "string":
                key = key_token.value
            elif key_token.kind in ("word", "number"):
                # bare keys may contain dots: tag.k.dot
                key = key_token.text
                self.advance()
                while self.token.kind == "punct" and self.token.text == "." \
                        and self.tokens[self.index + 1].kind in ("word", "number") \
                        and self.tokens[self.index + 1].offset == self.token.offset + 1 \
                        and self.token.offset == key_token.offset + len(key):
                    self.advance()
                    key += "." + self.advance().text
                return "tag", f"tag.{key}", self.tag_column(key), token
            else:
                self.fail("a tag key (a word or a quoted string)")
            if not key:
                self.fail("a non-empty tag key", key_token)
            self.advance()
            return "tag", f"tag.{key}", self.tag_column(key), token
        if name not in FIELDS:
            raise WhereError(token.offset, f"unknown field {name!r}; expected one of "
                                           f"{', '.join(FIELDS)} or tag.KEY")
        kind = ("number" if name in NUMERIC_FIELDS else "time" if name in TIME_FIELDS
                else "dataset" if name == "dataset" else "string")
        column = None if name == "dataset" else getattr(Run, name)
        return kind, name, column, token

    def tag_column(self, key: str):
        return tag_column(key, self.dialect)

    def value(self, kind: str, name: str, allow_null: bool):
        token = self.token
        if token.kind == "word" and token.text.lower() == "null":
            if not allow_null:
                self.fail("a value (null only goes with = and !=)")
            self.advance()
            return None
        if kind == "number":
            if token.kind != "number":
                self.fail(f"a number for {name}")
            self.advance()
            value = token.value
            if isinstance(value, int) and abs(value) > 2**62:
                # beyond the integer columns, a float compares the same (beyond floats: inf)
                value = float(value) if abs(value) < 2**1023 else float("inf")
            if value != value or value in (float("inf"), float("-inf")):
                self.fail(f"a finite number for {name}", token)
            return value
        if kind == "time":
            if token.kind != "string":
                self.fail(f'a quoted date or time for {name}, e.g. "2026-11-01" or '
                          f'"2026-11-01T12:00:00Z"')
            try:
                moment = datetime.fromisoformat(token.value.replace("Z", "+00:00")
                                                if token.value.endswith("Z") else token.value)
            except ValueError:
                self.fail(f"an ISO 8601 date or time for {name}")
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=timezone.utc)
            self.advance()
            moment = moment.astimezone(timezone.utc)
            if self.dialect == "sqlite":
                moment = moment.replace(tzinfo=None)  # stored as naive UTC text
            return moment
        # strings: quoted, a bare word, or a number taken as its text
        if token.kind == "string":
            value = token.value
        elif token.kind == "word" and token.text.lower() not in KEYWORDS:
            value = token.text
        elif token.kind == "number":
            value = token.text
        else:
            self.fail(f"a value for {name} (a word or a quoted string)")
        if name in NAMED_VALUES and value not in NAMED_VALUES[name]:
            raise WhereError(token.offset, f"unknown {'state' if name == 'status' else name} "
                                           f"{value!r}; expected one of "
                                           f"{', '.join(NAMED_VALUES[name])}")
        self.advance()
        return value

    def comparison(self):
        kind, name, column, start = self.field()
        negate = False
        if self.is_keyword("not"):
            self.advance()
            if not self.is_keyword("in"):
                self.fail("'in' after 'not'")
            negate = True
        if self.is_keyword("in"):
            self.advance()
            self.expect_punct("(", "'(' after 'in'")
            values = [self.value(kind, name, allow_null=False)]
            while self.token.kind == "punct" and self.token.text == ",":
                self.advance()
                values.append(self.value(kind, name, allow_null=False))
                if len(values) > MAX_IN_VALUES:
                    raise WhereError(self.token.offset, f"more than {MAX_IN_VALUES} values")
            self.expect_punct(")", "',' or ')' in the value list")
            if kind == "dataset":
                clause = self.dataset_in(values)
            elif kind == "tag":
                clause = tag_in(name[4:], values, self.dialect)
            else:
                clause = column.in_(values)
            return not_(clause) if negate else clause
        if self.token.kind != "op":
            self.fail(f"an operator after {name} (=, !=, <, <=, >, >=, in, not in)")
        op = OPERATORS[self.advance().text]
        value = self.value(kind, name, allow_null=True)
        if value is None:
            if op not in ("=", "!="):
                raise WhereError(self.tokens[self.index - 1].offset,
                                 "null only goes with = and !=")
            target = Run.dataset_id if kind == "dataset" else column
            return target.is_(None) if op == "=" else target.is_not(None)
        if kind == "tag":
            key = name[4:]
            if op == "=":
                return tag_equals(key, value, self.dialect)
            if op == "!=":
                return not_(tag_equals(key, value, self.dialect))
            return func.coalesce(_compare(column, op, value), false())
        if kind == "dataset":
            if op == "=":
                return self.dataset_in([value])
            if op == "!=":
                return not_(self.dataset_in([value]))
            return Run.dataset_id.in_(select(Dataset.id).where(
                _compare(Dataset.name, op, value)))
        return _compare(column, op, value)

    def dataset_in(self, values: list):
        names = [v for v in values]
        ids = [int(v) for v in values
               if isinstance(v, str) and v.isascii() and v.isdigit() and len(v) < 10]
        subquery = select(Dataset.id).where(Dataset.name.in_(names))
        if ids:
            return or_(Run.dataset_id.in_(subquery), Run.dataset_id.in_(ids))
        return Run.dataset_id.in_(subquery)


def tag_column(key: str, dialect: str):
    """The SQL expression of a run's tag ``key`` as text (NULL when the run has none); the
    key is a bound parameter."""
    if dialect == "sqlite":
        # SQLite matches a path label against the key's text as stored, escapes and all.
        if json.dumps(key, ensure_ascii=False)[1:-1] != key:
            # '"', '\\' or a control character: no label can name it; json_each's keys
            # are decoded.
            each = func.json_each(Run.tags).table_valued("key", "value")
            return select(each.c.value).where(each.c.key == key).scalar_subquery()
        column = func.json_extract(Run.tags, f'$."{key}"')
        stored = json.dumps(key)[1:-1]
        if stored != key:
            # Non-ASCII: tags are stored by json.dumps, as \uXXXX escapes; the raw form
            # too, for JSON written otherwise.
            column = func.coalesce(column, func.json_extract(Run.tags, f'$."{stored}"'))
        return column
    return Run.tags[key].as_string()


def tag_equals(key: str, value: str, dialect: str):
    """Whether a run's tag ``key`` is ``value``: false (never NULL) for runs without it, so
    ``not``, ``!=`` and ``not in`` include them. Containment (@>) on PostgreSQL's JSONB,
    which the planner estimates from the column's statistics."""
    if dialect == "postgresql":
        return Run.tags.op("@>", return_type=Boolean)(
            bindparam(None, {key: value}, type_=JSONB()))
    return func.coalesce(tag_column(key, dialect) == value, false())


def tag_in(key: str, values: list, dialect: str):
    """Whether a run's tag ``key`` is one of ``values``, false for runs without it. One
    containment per value on PostgreSQL (as ``tag_equals``); an IN list on SQLite, whose
    expression depth (1000) a chain of ORs would exceed."""
    if dialect == "postgresql":
        return or_(*(tag_equals(key, value, dialect) for value in values))
    return func.coalesce(tag_column(key, dialect).in_(values), false())


def _compare(column, op: str, value):
    if op == "=":
        return column == value
    if op == "!=":
        return column != value
    if op == "<":
        return column < value
    if op == "<=":
        return column <= value
    if op == ">":
        return column > value
    return column >= value


def compile_where(text: str, dialect: str):
    """The SQLAlchemy clause of a filter expression, with every value bound; WhereError
    (with the character offset) when it is malformed. ``dialect``: "sqlite" or
    "postgresql" (tags are JSON, read differently by each)."""
    if len(text) > MAX_LENGTH:
        raise WhereError(MAX_LENGTH, f"longer than {MAX_LENGTH} characters")
    if not text.strip():
        raise WhereError(0, "expected a filter expression, found nothing")
    unstorable = _UNSTORABLE.search(text)
    if unstorable:  # no database takes it as a value (PostgreSQL fails on NUL)
        raise WhereError(unstorable.start(), f"unexpected character {unstorable.group()!r}")
    return _Parser(text, dialect).parse()


__all__ = ["FIELDS", "WhereError", "compile_where", "tag_column", "tag_equals"]
