"""Every bad input is a 4xx, never a 500 (issue 12), on SQLite and PostgreSQL.

Fuzzing with hypothesis: arbitrary JSON text (deep nesting, integer literals beyond int()'s
4300 digits, lone surrogates, NUL, huge and non-finite floats, NaN-like strings, `$...$`),
whole or as one field of a valid body, posted to every endpoint of the app's url_map that
takes a body; generated query strings (where= expressions among them) sent to every GET
endpoint; generated forms posted to the dashboard's forms, logged in and with a valid CSRF
token. The endpoints are read from the url_map, so new ones are fuzzed without touching this
file. Each case must be answered below 500. Then the cases the issue lists, one by one.

The fuzzing is derandomized (the same examples every run) and bounded: about 150 requests a
group, a few seconds each on SQLite.
"""

import json
import re
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .conftest import API, submit, train_run
from .test_dashboard import csrf_of, log_in

FUZZ = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))

# Valid bodies, per rule: mutated one field at a time, they reach the code behind the schema.
SPEC = {"dataset": "xor", "layers": [2, 2, 1], "epochs": 2}
TEMPLATES = {
    f"{API}/runs": SPEC,
    f"{API}/sweeps": {"base": SPEC, "grid": {"learning_rate": [0.1, 0.2]}, "name": "s"},
    f"{API}/sweeps/preview": {"base": SPEC, "random": {"learning_rate": {
        "distribution": "log_uniform", "low": 0.01, "high": 1}}, "trials": 2},
    f"{API}/datasets": {"name": "fuzzed", "X": [[0, 0], [1, 1]], "y": [0, 1]},
    f"{API}/runs/<int:run_id>/predict": {"inputs": [[0, 1]]},
    f"{API}/trace": {"layers": [2, 2, 1], "x": [0.5, 0.1], "y": [1.0], "learning_rate": 0.5},
    "/submit": {"dataset": "xor", "layers": "2, 2, 1", "activation": "sigmoid", "loss": "mse",
                "learning_rate": "0.5", "batch_mode": "full", "batch_size": "4",
                "epochs": "2", "seed": "1", "name": "n"},
}
# Rules never fuzzed: logging out would end the fuzzing session.
SKIPPED = {"/logout"}

# ---------------------------------------------------------------------- JSON text

CHARS = st.one_of(st.characters(), st.characters(codec=None, categories=["Cs"]),
                  st.sampled_from("\x00$\\\"'()[]{},.=<>^_%&+#\n"))
TEXT = st.text(CHARS, max_size=12)
# Names a body or query string may use (so generated members meet real fields).
NAMES = ["dataset", "layers", "activation", "output_activation", "loss", "learning_rate",
         "batch_mode", "batch_size", "epochs", "seed", "shuffle", "init", "dtype",
         "validation_split", "name", "tags", "base", "grid", "random", "trials",
         "max_concurrency", "early_stopping", "min_epochs", "reduction_factor", "metric", "X",
         "y", "x", "inputs", "params", "W1", "B1", "distribution", "low", "high", "values"]
TRICKY = ["NaN", "-Infinity", "1e999", "-1e999", "1e-999", "-0", "0.5e+400000", "9" * 5000,
          "-" + "9" * 4400, "1" + "0" * 400, "9223372036854775808", "2147483648", "-1",
          '"NaN"', '"Infinity"', '"1e999"', '"\\ud800"', '"a\\udfff\\ud800"', '"\\u0000"',
          '"$x^$"', '"$\\\\frac{$"', '""', '" "', '"xor"', '"relu"', "[]", "{}"]


def _array(items: list[str]) -> str:
    return "[" + ",".join(items) + "]"


def _object(members: list[tuple[str, str]]) -> str:
    return "{" + ",".join(f"{json.dumps(key)}:{value}" for key, value in members) + "}"


LEAVES = st.one_of(st.none().map(lambda _: "null"), st.booleans().map(json.dumps),
                   st.integers().map(str), st.floats().map(json.dumps),
                   TEXT.map(json.dumps), st.sampled_from(TRICKY))
KEYS = st.one_of(st.sampled_from(NAMES), TEXT)
TREES = st.recursive(LEAVES, lambda children: st.one_of(
    st.lists(children, max_size=4).map(_array),
    st.lists(st.tuples(KEYS, children), max_size=5).map(_object)), max_leaves=12)


def _nested(levels: int, opener: str, inner: str) -> str:
    closer = "]" if opener == "[" else "}"
    return opener * levels + inner + closer * levels


DEEP = st.builds(_nested, st.integers(1, 100_000),
                 st.sampled_from(["[", '{"tags":', '{"a":']), TREES)
VALUES = st.one_of(TREES, DEEP)


def _with(template, path: tuple, value: str) -> str:
    """JSON text of ``template`` with the member at ``path`` replaced by (or, when missing,
    added as) the JSON text ``value``."""
    if not path:
        return value
    head, rest = path[0], path[1:]
    members = [(k, _with(v, rest, value) if k == head else json.dumps(v))
               for k, v in template.items()]
    if head not in template:
        members.append((head, _with({}, rest, value)))
    return _object(members)


@st.composite
def bodies(draw, template: dict):
    """JSON text: anything, or ``template`` with one member (maybe nested) replaced."""
    if not template or draw(st.integers(0, 3)) == 0:
        return draw(VALUES)
    path, node = [], template
    while isinstance(node, dict) and node:
        key = draw(st.one_of(st.sampled_from(sorted(node)), KEYS))
        path.append(key)
        node = node.get(key)
        if draw(st.booleans()):
            break
    return _with(template, tuple(path), draw(VALUES))


# -------------------------------------------------------------------- query strings

WHERE_TOKENS = ["status", "dataset", "name", "id", "seed", "learning_rate", "created_at",
                "tag.a", "tag.ключ", 'tag."a b"', "=", "!=", "<", ">=", "in", "not", "and",
                "or", "(", ")", ",", "null", "1", "-2.5", "1e999", "9" * 400, "'x'",
                '"2026-11-01"', '"ключ"', "succeeded", "xor", "\x00", '"', "$"]
WHERES = st.one_of(st.lists(st.sampled_from(WHERE_TOKENS), max_size=25).map(" ".join),
                   st.integers(1, 200).map(lambda n: "(" * n + "id = 1" + ")" * n),
                   st.integers(1, 2000).map(
                       lambda n: "tag.a in (" + ",".join(["1"] * n) + ")"))
PARAMS = ["status", "dataset", "sweep_id", "where", "order_by", "limit", "cursor", "metric",
          "log", "which", "max_points", "order", "direction", "next", "tag.a", "tag.ключ",
          "learning_rate_min", "final_error_max", "format", "inputs"]
PARAM_VALUES = st.one_of(TEXT, WHERES, st.sampled_from(TRICKY),
                         st.integers().map(str), st.sampled_from(["-tag.a", "tag.ключ", "-id"]))


def _encode(pairs) -> str:
    """A query string or form body of (name, value) pairs; lone surrogates are sent as the
    invalid UTF-8 a careless client would send."""
    return "&".join(quote(name, safe="", errors="surrogatepass") + "="
                    + quote(value, safe="", errors="surrogatepass") for name, value in pairs)


QUERIES = st.lists(st.tuples(st.one_of(st.sampled_from(PARAMS), TEXT), PARAM_VALUES),
                   max_size=4).map(_encode)
PATH_VALUES = {"int": st.one_of(st.sampled_from([1, 2, 3]), st.integers(0, 2**70)).map(str),
               "default": st.one_of(TEXT.filter(lambda t: "/" not in t),
                                    st.sampled_from(["xor", "and-gate", "1", "9" * 5000]))}


@st.composite
def urls(draw, rules):
    """(rule, path) of one of ``rules`` with each variable filled in."""
    rule = draw(st.sampled_from(rules))
    path = rule.rule
    for converter, name in re.findall(r"<(?:(\w+):)?(\w+)>", rule.rule):
        value = draw(PATH_VALUES.get(converter, PATH_VALUES["default"]))
        encoded = quote(value, safe="", errors="surrogatepass")
        path = re.sub(rf"<(?:\w+:)?{name}>", lambda _: encoded, path, count=1)
    return rule.rule, path


# ----------------------------------------------------------------------------- setup


@pytest.fixture
def seeded(client, sessions):
    """The test's client after storing a trained run (id 1), a queued one, a sweep and an
    uploaded dataset, so that ids 1 and 2 lead somewhere."""
    run = submit(client, epochs=5, name="$x^$ seeded", tags={"ключ": "значение", "a": "1"})
    train_run(sessions, run["id"])
    submit(client, epochs=5)
    response = client.post(f"{API}/sweeps", json={
        "base": {"dataset": "xor", "layers": [2, 2, 1], "epochs": 2}, "name": "$\\frac{$",
        "grid": {"learning_rate": [0.1, 0.2]}})
    assert response.status_code == 202, response.get_json()
    response = client.post(f"{API}/datasets", json={
        "name": "and-gate", "X": [[0, 0], [0, 1], [1, 0], [1, 1]], "y": [0, 0, 0, 1]})
    assert response.status_code == 201, response.get_json()
    return client


def rules_of(app, method: str, dashboard: bool) -> list:
    """The url_map's rules answering ``method``, of the dashboard or not."""
    return sorted((rule for rule in app.url_map.iter_rules()
                   if method in rule.methods and rule.rule not in SKIPPED
                   and rule.endpoint.startswith("dashboard.") == dashboard),
                  key=lambda rule: rule.rule)


def below_500(response, what):
    assert response.status_code < 500, (what, response.status_code, response.get_data(True))


# ------------------------------------------------------------------------------- fuzzing


@pytest.mark.slow
def test_no_json_body_is_a_server_error(app, seeded):
    client = seeded
    rules = rules_of(app, "POST", dashboard=False)
    assert {f"{API}/runs", f"{API}/sweeps", f"{API}/datasets", f"{API}/trace"} \
        <= {rule.rule for rule in rules}

    @FUZZ
    @given(data=st.data())
    def post(data):
        rule, path = data.draw(urls(rules))
        body = data.draw(bodies(TEMPLATES.get(rule, {})))
        below_500(client.post(path, data=body.encode("utf-8", "surrogatepass"),
                              content_type="application/json"), (path, body[:300]))

    post()


@pytest.mark.slow
def test_no_query_string_is_a_server_error(app, seeded):
    client = seeded
    rules = rules_of(app, "GET", dashboard=False)
    assert f"{API}/runs" in {rule.rule for rule in rules}

    @FUZZ
    @given(data=st.data())
    def get(data):
        _rule, path = data.draw(urls(rules))
        query = data.draw(QUERIES)
        below_500(client.get(path, query_string=query), (path, query[:300]))

    get()


@pytest.mark.slow
def test_no_dashboard_request_is_a_server_error(app, seeded, token):
    browser = app.test_client()
    log_in(browser, token)
    csrf = csrf_of(browser.get("/submit").text)
    gets, posts = rules_of(app, "GET", dashboard=True), rules_of(app, "POST", dashboard=True)
    assert {"/", "/submit"} <= {rule.rule for rule in gets} | {rule.rule for rule in posts}
    form_fields = sorted({*TEMPLATES["/submit"], "token", "next"})

    @FUZZ
    @given(data=st.data())
    def request(data):
        if data.draw(st.booleans()):
            _rule, path = data.draw(urls(gets))
            query = data.draw(QUERIES)
            below_500(browser.get(path, query_string=query), (path, query[:300]))
            return
        rule, path = data.draw(urls(posts))
        fields = {**TEMPLATES.get(rule, {}), **dict(data.draw(st.lists(
            st.tuples(st.sampled_from(form_fields), PARAM_VALUES), max_size=4)))}
        form = _encode([*fields.items(), ("csrf_token", csrf)])
        below_500(browser.post(path, data=form,
                               content_type="application/x-www-form-urlencoded"),
                  (path, form[:300]))

    request()


@pytest.mark.parametrize("value", ["9" * 5000, "0", "-1", "²", "9" * 30])
def test_no_path_value_is_a_server_error(app, seeded, token, value):
    """Each GET rule with every variable set to ``value``, API and dashboard; the fuzzer
    found a 5000-digit dataset ref (over int()'s 4300 digits) only by chance."""
    browser = app.test_client()
    log_in(browser, token)
    for rule in rules_of(app, "GET", dashboard=False) + rules_of(app, "GET", dashboard=True):
        if "<" not in rule.rule:
            continue
        path = re.sub(r"<(?:\w+:)?\w+>", quote(value, safe=""), rule.rule)
        client = browser if rule.endpoint.startswith("dashboard.") else seeded
        below_500(client.get(path), path[:200])
