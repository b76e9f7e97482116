"""GET /runs queries: the where= filter language (every operator, precedence, tags, times,
nulls, malformed input, injection-looking input), sorting on every orderable field both ways
with cursor walks, NULLs, ties and runs arriving in between, the SQL a sorted page emits, and
GET /runs/{id}/history?max_points=N. Each runs on SQLite and PostgreSQL."""

import csv
import io
import random
import re
from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import event, inspect

from service.store import Dataset, Epoch, Run
from service.store.models import Sweep
from service.store import runs as store_runs

from .conftest import API, error_of

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)
NUMERIC = ("learning_rate", "batch_size", "epochs", "seed", "epochs_done", "final_error",
           "best_error", "best_epoch", "final_accuracy", "final_val_error", "sweep_id")
TIMES = ("created_at", "started_at", "finished_at")


def _dataset(session, name: str) -> int:
    dataset = Dataset(name=name, n_samples=2, n_features=2, target_kind="values",
                      n_targets=1, n_classes=None, content_hash="0" * 64, data=b"")
    session.add(dataset)
    session.flush()
    return dataset.id


def insert_runs(session, rows: list[dict]) -> list[int]:
    """Store runs straight through the store (no queue): one dict of column values each,
    with ``dataset_id`` or the defaults below (alice's, the ``client``'s user). Returns
    their ids in order."""
    made = []
    for row in rows:
        values = {"owner": "alice", "spec": {}, "tags": {}, "status": "queued",
                  "learning_rate": 0.1,
                  "batch_mode": "minibatch", "batch_size": 8, "epochs": 10, "seed": 0,
                  "epochs_done": 0, **row}
        run = Run(**values)
        session.add(run)
        made.append(run)
    session.flush()
    ids = [run.id for run in made]
    session.commit()
    return ids


def _sweeps(session) -> None:
    """Sweeps 1 and 2 (of alice), which the varied runs belong to."""
    made = [Sweep(owner="alice", base={}, space={}, kind="grid") for _ in range(2)]
    session.add_all(made)
    session.commit()
    assert [sweep.id for sweep in made] == [1, 2]


def _row(i: int, rng: random.Random, datasets: list[int]) -> dict:
    """A varied run: ties on most columns, NULLs on the optional ones."""
    status = ["queued", "running", "succeeded", "failed", "diverged", "cancelled",
              "stopped_early"][i % 7]
    finished = status not in ("queued", "running")
    errors = None if status in ("queued",) or i % 5 == 0 else round(rng.choice(
        [0.01, 0.02, 0.04, 0.05, 0.1, 0.3]), 4)
    return {
        "name": None if i % 4 == 0 else f"run-{i % 6}",
        "dataset_id": datasets[i % len(datasets)],
        "sweep_id": None if i % 3 == 0 else i % 3,
        "status": status,
        "learning_rate": [0.01, 0.05, 0.1, 0.2, 0.5, 1.0][i % 6],
        "batch_mode": ["sgd", "minibatch", "full"][i % 3],
        "optimizer": ["sgd", "momentum", "nesterov", "adam", "adamw"][i % 5],
        "stop_reason": "plateau" if i % 4 == 1 and finished else None,
        "batch_size": [1, 8, 32][i % 3],
        "epochs": [10, 100, 1000][i % 3],
        "seed": (i * 7) % 5,
        "epochs_done": (i * 3) % 11,
        "final_error": errors,
        "best_error": None if errors is None else errors / 2,
        "best_epoch": None if errors is None else i % 4,
        "final_accuracy": None if i % 2 else (i % 10) / 10,
        "final_val_error": None,
        "created_at": T0 + timedelta(days=i // 2, hours=i % 2),  # ties: none; days repeat
        "started_at": None if status == "queued" else T0 + timedelta(days=i % 5),
        "finished_at": T0 + timedelta(days=i % 4, minutes=1) if finished else None,
        "tags": {k: v for k, v in (("team", ["vision", "nlp", "audio"][i % 3]),
                                   ("k.dot", "yes" if i % 2 else None),
                                   ("odd", "it's \"quoted\"" if i == 5 else None)) if v},
    }


@pytest.fixture
def runs(client, sessions):
    """30 varied runs on datasets alpha and beta. Returns {id: values, plus "dataset"}."""
    rng = random.Random(4)
    with sessions() as session:
        alpha, beta = _dataset(session, "alpha"), _dataset(session, "beta")
        session.commit()
        _sweeps(session)
        rows = [_row(i, rng, [alpha, beta]) for i in range(30)]
        ids = insert_runs(session, rows)
    names = {alpha: "alpha", beta: "beta"}
    return {i: {**row, "id": i, "dataset": names[row["dataset_id"]]}
            for i, row in zip(ids, rows)}


def get_ids(client, **params) -> list[int]:
    """Every matching run id, in order, walking pages of 500."""
    found, cursor = [], None
    while True:
        query = {"limit": 500, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"{API}/runs", query_string=query)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        found += [run["id"] for run in body["runs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return found


def matching(client, expression: str, **params) -> set:
    return set(get_ids(client, where=expression, **params))


def _cmp(a, op, b):
    if a is None:
        return None
    return {"=": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b,
            ">=": a >= b}[op]


def test_every_operator_on_numbers(client, runs):
    for field in NUMERIC:
        values = sorted({r[field] for r in runs.values() if r[field] is not None})
        if not values:
            assert matching(client, f"{field} = 1") == set()
            continue
        pivot = values[len(values) // 2]
        for op in ("=", "!=", "<", "<=", ">", ">="):
            expected = {i for i, r in runs.items() if _cmp(r[field], op, pivot)}
            assert matching(client, f"{field} {op} {pivot!r}") == expected, (field, op)
            # the same with no spaces, and negated (SQL's NULL logic: missing stays out)
            assert matching(client, f"{field}{op}{pivot!r}") == expected, (field, op)
            negated = {i for i, r in runs.items() if _cmp(r[field], op, pivot) is False}
            assert matching(client, f"not {field} {op} {pivot!r}") == negated, (field, op)
        chosen = values[:2]
        inside = {i for i, r in runs.items() if r[field] in chosen}
        outside = {i for i, r in runs.items() if r[field] is not None
                   and r[field] not in chosen}
        listed = ", ".join(map(repr, chosen))
        assert matching(client, f"{field} in ({listed})") == inside, field
        assert matching(client, f"{field} not in ({listed})") == outside, field
        assert matching(client, f"{field} = null") == {
            i for i, r in runs.items() if r[field] is None}, field
        assert matching(client, f"{field} != null") == {
            i for i, r in runs.items() if r[field] is not None}, field
    # numbers in other spellings; the id field
    some = sorted(runs)[3]
    assert matching(client, f"id = {some}") == {some}
    assert matching(client, "learning_rate >= 1e-1") == {
        i for i, r in runs.items() if r["learning_rate"] >= 0.1}
    assert matching(client, "learning_rate < .05") == {
        i for i, r in runs.items() if r["learning_rate"] < 0.05}
    assert matching(client, "seed > -1") == set(runs)
    assert matching(client, f"seed < {2**70}") == set(runs)  # beyond any integer column


def test_strings_status_dataset_and_names(client, runs):
    def ids(predicate):
        return {i for i, r in runs.items() if predicate(r)}

    assert matching(client, "status in (succeeded, diverged)") == ids(
        lambda r: r["status"] in ("succeeded", "diverged"))
    assert matching(client, "status = 'queued' or status = \"running\"") == ids(
        lambda r: r["status"] in ("queued", "running"))
    assert matching(client, "status != queued") == ids(lambda r: r["status"] != "queued")
    assert matching(client, "status not in (queued, running, stopped_early)") == ids(
        lambda r: r["status"] not in ("queued", "running", "stopped_early"))
    assert matching(client, "dataset = alpha") == ids(lambda r: r["dataset"] == "alpha")
    assert matching(client, "dataset != alpha") == ids(lambda r: r["dataset"] != "alpha")
    assert matching(client, "dataset in (alpha, beta)") == set(runs)
    assert matching(client, "dataset = nothing") == set()
    alpha_id = next(r["dataset_id"] for r in runs.values() if r["dataset"] == "alpha")
    assert matching(client, f"dataset = {alpha_id}") == ids(lambda r: r["dataset"] == "alpha")
    assert matching(client, "name = 'run-1'") == ids(lambda r: r["name"] == "run-1")
    assert matching(client, "name > 'run-3'") == ids(lambda r: r["name"] is not None
                                                     and r["name"] > "run-3")
    assert matching(client, "name = null") == ids(lambda r: r["name"] is None)
    assert matching(client, "batch_mode = full and batch_size = 32") == ids(
        lambda r: r["batch_mode"] == "full")
    assert matching(client, "sweep_id = 1") == ids(lambda r: r["sweep_id"] == 1)
    assert matching(client, "sweep_id = null") == ids(lambda r: r["sweep_id"] is None)
    # keywords in any case
    assert matching(client, "status IN (succeeded) And Not learning_rate > 0.1") == ids(
        lambda r: r["status"] == "succeeded" and r["learning_rate"] <= 0.1)


def test_and_binds_tighter_than_or_and_parentheses_change_it(client, runs):
    def ids(predicate):
        return {i for i, r in runs.items() if predicate(r)}

    a = lambda r: r["status"] == "succeeded"  # noqa: E731
    b = lambda r: r["learning_rate"] >= 0.5  # noqa: E731
    c = lambda r: r["batch_mode"] == "sgd"  # noqa: E731
    A, B, C = "status = succeeded", "learning_rate >= 0.5", "batch_mode = sgd"
    assert matching(client, f"{A} or {B} and {C}") == ids(lambda r: a(r) or (b(r) and c(r)))
    assert matching(client, f"{A} and {B} or {C}") == ids(lambda r: (a(r) and b(r)) or c(r))
    assert matching(client, f"({A} or {B}) and {C}") == ids(lambda r: (a(r) or b(r)) and c(r))
    assert matching(client, f"{A} and ({B} or {C})") == ids(lambda r: a(r) and (b(r) or c(r)))
    assert matching(client, f"not ({A} or {B})") == ids(lambda r: not a(r) and not b(r))
    assert matching(client, f"not {A} or {B}") == ids(lambda r: not a(r) or b(r))
    assert matching(client, f"not not {A}") == ids(a)
    assert matching(client, f"((({A})))") == ids(a)
    assert (matching(client, f"{A} or {B} or {C}")
            == ids(lambda r: a(r) or b(r) or c(r)))
    # the example of the issue
    expression = ('status in (succeeded, diverged) and (learning_rate >= 0.1 or '
                  'tag.team = "vision") and final_error < 0.05 and created_at >= "2026-11-01"')
    assert matching(client, expression) == ids(
        lambda r: r["status"] in ("succeeded", "diverged")
        and (r["learning_rate"] >= 0.1 or r["tags"].get("team") == "vision")
        and r["final_error"] is not None and r["final_error"] < 0.05)


def test_where_is_anded_with_the_simple_parameters(client, runs):
    def ids(predicate):
        return {i for i, r in runs.items() if predicate(r)}

    assert matching(client, "learning_rate >= 0.1 or batch_mode = sgd", status="succeeded",
                    dataset="beta") == ids(
        lambda r: r["status"] == "succeeded" and r["dataset"] == "beta"
        and (r["learning_rate"] >= 0.1 or r["batch_mode"] == "sgd"))
    assert matching(client, "status = queued", **{"tag.team": "nlp",
                                                  "learning_rate_max": 0.2}) == ids(
        lambda r: r["status"] == "queued" and r["tags"].get("team") == "nlp"
        and r["learning_rate"] <= 0.2)


def test_tags(client, runs):
    def ids(predicate):
        return {i for i, r in runs.items() if predicate(r)}

    assert matching(client, 'tag.team = "vision"') == ids(
        lambda r: r["tags"].get("team") == "vision")
    assert matching(client, "tag.team in (nlp, audio)") == ids(
        lambda r: r["tags"].get("team") in ("nlp", "audio"))
    assert matching(client, "tag.team != vision") == ids(
        lambda r: r["tags"].get("team") != "vision")
    assert matching(client, "tag.k.dot = yes") == ids(lambda r: "k.dot" in r["tags"])
    assert matching(client, 'tag."k.dot" = "yes"') == ids(lambda r: "k.dot" in r["tags"])
    assert matching(client, "tag.k.dot = null") == ids(lambda r: "k.dot" not in r["tags"])
    assert matching(client, "tag.missing = x") == set()
    assert matching(client, "tag.odd = 'it\\'s \"quoted\"'") == ids(lambda r: "odd" in r["tags"])
    assert matching(client, 'tag.team = "vision" and tag.k.dot = null') == ids(
        lambda r: r["tags"].get("team") == "vision" and "k.dot" not in r["tags"])
    # a run without the tag has a tag equal to nothing (unlike SQL's NULL logic)
    assert matching(client, "not tag.k.dot = yes") == ids(lambda r: "k.dot" not in r["tags"])
    assert matching(client, "tag.k.dot != yes") == ids(lambda r: "k.dot" not in r["tags"])
    assert matching(client, "tag.k.dot not in (yes, no)") == ids(
        lambda r: "k.dot" not in r["tags"])
    assert matching(client, "tag.k.dot in (yes, no)") == ids(lambda r: "k.dot" in r["tags"])
    assert matching(client, "tag.k.dot > a") == ids(lambda r: "k.dot" in r["tags"])
    assert matching(client, "not tag.k.dot > a") == ids(lambda r: "k.dot" not in r["tags"])
    assert matching(client, "tag.team < nlp") == ids(lambda r: r["tags"]["team"] < "nlp")
    assert matching(client, "tag.team >= nlp") == ids(lambda r: r["tags"]["team"] >= "nlp")


def test_time_ranges(client, runs):
    def ids(predicate):
        return {i for i, r in runs.items() if predicate(r)}

    assert matching(client, 'created_at >= "2026-11-05"') == ids(
        lambda r: r["created_at"] >= T0 + timedelta(days=4))
    assert matching(client, 'created_at >= "2026-11-03" and created_at < "2026-11-06"') == ids(
        lambda r: T0 + timedelta(days=2) <= r["created_at"] < T0 + timedelta(days=5))
    moment = T0 + timedelta(days=3, hours=1)
    for text in ("2026-11-04T01:00:00", "2026-11-04T01:00:00Z", "2026-11-04T02:00:00+01:00",
                 "2026-11-04 01:00:00+00:00"):
        assert matching(client, f'created_at = "{text}"') == ids(
            lambda r: r["created_at"] == moment), text
        assert matching(client, f'created_at > "{text}"') == ids(
            lambda r: r["created_at"] > moment), text
    assert matching(client, 'finished_at <= "2026-11-02T00:01:00Z"') == ids(
        lambda r: r["finished_at"] is not None
        and r["finished_at"] <= T0 + timedelta(days=1, minutes=1))
    assert matching(client, "started_at = null") == ids(lambda r: r["started_at"] is None)
    assert matching(client, 'started_at in ("2026-11-01", "2026-11-03")') == ids(
        lambda r: r["started_at"] in (T0, T0 + timedelta(days=2)))


@pytest.mark.parametrize("expression, offset, expected", [
    ("status =", 8, "expected a value"),
    ("status = succeeded and", 22, "expected a field name"),
    ("status in (succeeded", 20, "expected ',' or ')'"),
    ("status in succeeded", 10, "expected '('"),
    ("(learning_rate > 0.1", 20, "expected ')'"),
    ("learning_rate > 0.1)", 19, "expected 'and', 'or'"),
    ("learning_rate >= fast", 17, "expected a number"),
    ("learning_rate 0.1", 14, "expected an operator"),
    ("learning_rat > 0.1", 0, "unknown field 'learning_rat'"),
    ("status = done", 9, "unknown state 'done'"),
    ('created_at > 2026', 13, "expected a quoted date"),
    ('created_at > "yesterday"', 13, "ISO 8601"),
    ('name = "open', 7, "unterminated string"),
    ("final_error < 0.1 && epochs > 3", 18, "unexpected character '&'"),
    ("final_error < 0.1 or or epochs > 3", 21, "expected a field name"),
    ("final_error < null", 14, "null only goes with"),
    ("not", 3, "expected a field name"),
    ("   ", 0, "found nothing"),
    ("tag. = x", 5, "a tag key"),
    ("status not = queued", 11, "expected 'in' after 'not'"),
    ("()", 1, "expected a field name"),
])
def test_malformed_expressions_say_where(client, runs, expression, offset, expected):
    error = error_of(client.get(f"{API}/runs", query_string={"where": expression}), 422)
    assert error["code"] == "validation_error"
    assert set(error["fields"]) == {"where"}, error
    message = error["fields"]["where"]
    assert message.startswith(f"at character {offset}:"), (expression, message)
    assert expected in message, (expression, message)


def test_too_long_or_too_deep_is_422(client, runs):
    error = error_of(client.get(f"{API}/runs", query_string={
        "where": "(" * 200 + "epochs > 1" + ")" * 200}), 422)
    assert "nested deeper" in error["fields"]["where"]
    error = error_of(client.get(f"{API}/runs", query_string={
        "where": " or ".join(["epochs > 1"] * 1000)}), 422)
    assert "longer than" in error["fields"]["where"]
    error = error_of(client.get(f"{API}/runs", query_string={
        "where": "not " * 100 + "epochs > 1"}), 422)
    assert "nested deeper" in error["fields"]["where"]


def test_nesting_up_to_the_limit_is_fine_and_one_more_is_named(client, runs):
    # (the message said "deeper than 50" at exactly 50 levels)
    from service.store.where import MAX_DEPTH

    above = {i for i, r in runs.items() if r["epochs"] > 10}
    assert matching(client, "(" * MAX_DEPTH + "epochs > 10" + ")" * MAX_DEPTH) == above
    half = MAX_DEPTH // 2  # 'not (' is two levels; an odd count of nots
    assert matching(client, "not (" * half + "epochs > 10" + ")" * half) == set(runs) - above
    for expression, offset in (
            ("(" * (MAX_DEPTH + 1) + "epochs > 10" + ")" * (MAX_DEPTH + 1), MAX_DEPTH),
            ("not (" * half + "not epochs > 10" + ")" * half, 5 * half)):
        error = error_of(client.get(f"{API}/runs", query_string={"where": expression}), 422)
        assert error["fields"] == {
            "where": f"at character {offset}: nested deeper than {MAX_DEPTH} levels"}


def test_a_tag_in_list_of_the_most_values_allowed(client, runs):
    # SQLite refused 1000 ORed comparisons (its expression depth limit): a 500
    from service.store.where import MAX_IN_VALUES

    team = {i for i, r in runs.items() if r["tags"].get("team") in ("vision", "nlp")}
    values = ["x"] * (MAX_IN_VALUES - 2) + ["vision", "nlp"]
    assert matching(client, f"tag.team in ({','.join(values)})") == team
    assert matching(client, f"tag.team not in ({','.join(values)})") == set(runs) - team
    error = error_of(client.get(f"{API}/runs", query_string={
        "where": f"tag.team in ({','.join(values + ['y'])})"}), 422)
    assert f"more than {MAX_IN_VALUES} values" in error["fields"]["where"]


def test_the_longest_or_chain_is_fine(client, runs):
    from service.store.where import MAX_LENGTH

    last = ' or tag.team="vision"'
    expression = " or ".join(["id=1"] * ((MAX_LENGTH - len(last) + 4) // 8)) + last
    assert MAX_LENGTH - 8 < len(expression) <= MAX_LENGTH
    assert matching(client, expression) == {1} | {
        i for i, r in runs.items() if r["tags"].get("team") == "vision"}


def test_non_ascii_tag_keys_match_however_the_json_was_written(client, sessions,
                                                              database_backend):
    # SQLite compared the key with its text as stored (json.dumps: "\u043a..."): no match
    from sqlalchemy import text

    with sessions() as session:
        dataset = _dataset(session, "alpha")
        ids = insert_runs(session, [{"dataset_id": dataset, "tags": tags} for tags in (
            {"ключ": "значение", "naïve": "ja"}, {"ключ": "другое"}, {}, {})])
        raw = '{"ключ": "значение", "naïve": "ja", "😀": "ok"}'  # JSON written unescaped
        cast = "CAST(:tags AS JSONB)" if database_backend == "postgres" else ":tags"
        session.execute(text(f"UPDATE runs SET tags = {cast} WHERE id = :id"),
                        {"tags": raw, "id": ids[3]})
        if database_backend == "sqlite":
            stored = session.scalar(text("SELECT tags FROM runs WHERE id = :id"),
                                    {"id": ids[0]})
            assert "\\u043a" in stored  # the existing rows: escaped
        session.commit()
    first, other, _none, unescaped = ids
    assert matching(client, 'tag."ключ" = "значение"') == {first, unescaped}
    assert matching(client, 'tag."ключ" in ("значение", "другое")') == {first, other,
                                                                        unescaped}
    assert matching(client, 'tag."naïve" = ja and tag."ключ" != "другое"') == {first,
                                                                              unescaped}
    assert matching(client, 'tag."😀" = ok') == {unescaped}
    assert set(get_ids(client, **{"tag.ключ": "значение"})) == {first, unescaped}
    assert get_ids(client, order_by="tag.ключ")[:3] == [other, first, unescaped]


def test_injection_looking_input_is_only_data(client, runs, sessions):
    nasty = ["x'; DROP TABLE runs; --", "' OR '1'='1", '" OR 1=1 --', "run-1' --",
             "%", "_", "\\", "'); DELETE FROM runs; --"]
    with sessions() as session:
        dataset_id = next(iter(runs.values()))["dataset_id"]
        ids = insert_runs(session, [{"name": text, "dataset_id": dataset_id,
                                     "tags": {text: text}} for text in nasty])
    for text, run_id in zip(nasty, ids):
        quoted = '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
        assert matching(client, f"name = {quoted}") == {run_id}, text
        assert matching(client, f"tag.{quoted} = {quoted}") == {run_id}, text
    assert matching(client, "name = \"' OR 1=1\"") == set()
    assert matching(client, "dataset = \"alpha' OR '1'='1\"") == set()
    for text in ("name = x; DROP TABLE runs", "1=1", "name = x -- comment",
                 "name = x /* */", "epochs > 1 union select 1"):
        error_of(client.get(f"{API}/runs", query_string={"where": text}), 422)
    # the simple tag parameter takes any key too
    assert set(get_ids(client, **{f"tag.{nasty[2]}": nasty[2]})) == {ids[2]}
    assert len(get_ids(client)) == len(runs) + len(nasty)  # nothing dropped or deleted


# ------------------------------------------------------------------------------ sorting


def _expected(runs: dict, field: str, descending: bool) -> list[int]:
    present = [r for r in runs.values() if r[field] is not None]
    missing = [r for r in runs.values() if r[field] is None]
    present.sort(key=lambda r: (r[field], r["id"]), reverse=descending)
    missing.sort(key=lambda r: r["id"], reverse=descending)
    return [r["id"] for r in present + missing]


def _walk(client, limit: int, **params) -> list[int]:
    seen, cursor = [], None
    for _ in range(1000):
        query = {"limit": limit, **params, **({"cursor": cursor} if cursor else {})}
        response = client.get(f"{API}/runs", query_string=query)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        assert len(body["runs"]) <= limit
        seen += [run["id"] for run in body["runs"]]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("too many pages")


def test_sort_on_every_field_both_ways_with_cursor_walks(client, runs):
    fields = store_runs.ORDERABLE
    assert set(NUMERIC + TIMES) <= set(fields)
    for field in fields:
        for descending in (False, True):
            order_by = ("-" if descending else "") + field
            expected = _expected(runs, field, descending)
            assert get_ids(client, order_by=order_by) == expected, order_by
            for limit in (1, 7):
                assert _walk(client, limit, order_by=order_by) == expected, (order_by, limit)
            # with a filter
            subset = {i: r for i, r in runs.items() if r["status"] != "queued"}
            assert _walk(client, 4, order_by=order_by, where="status != queued") == \
                _expected(subset, field, descending), order_by


def test_sort_on_a_tag_both_ways_with_cursor_walks(client, runs):
    with_tag = {i: {**r, "tag.team": r["tags"].get("team"), "tag.k.dot": r["tags"].get("k.dot")}
                for i, r in runs.items()}
    for field in ("tag.team", "tag.k.dot", "tag.absent"):
        for descending in (False, True):
            order_by = ("-" if descending else "") + field
            expected = _expected({i: {**r, field: r.get(field)} for i, r in with_tag.items()},
                                 field, descending)
            for limit in (1, 7, 500):
                assert _walk(client, limit, order_by=order_by) == expected, (order_by, limit)


@pytest.mark.parametrize("order_by", ["nope", "-tags", "tag.", "-tag." + "k" * 101, "--id"])
def test_an_unknown_sort_field_is_a_422_naming_order_by(client, order_by):
    response = client.get(f"{API}/runs", query_string={"order_by": order_by})
    assert "order_by" in error_of(response, 422)["fields"]


def test_pages_stay_stable_while_runs_arrive(client, runs, sessions):
    dataset_id = next(iter(runs.values()))["dataset_id"]
    rng = random.Random(9)
    for field in ("final_error", "learning_rate", "created_at", "finished_at", "best_epoch",
                  "batch_mode", "sweep_id", "name", "dataset", "status"):
        for descending in (False, True):
            order_by = ("-" if descending else "") + field
            old = _expected(runs, field, descending)
            seen, cursor, pages = [], None, 0
            while True:
                query = {"limit": 4, "order_by": order_by,
                         **({"cursor": cursor} if cursor else {})}
                body = client.get(f"{API}/runs", query_string=query).get_json()
                seen += [run["id"] for run in body["runs"]]
                cursor, pages = body["next_cursor"], pages + 1
                if cursor is None:
                    break
                if pages in (2, 5):  # new runs, some sorting before the cursor, some after
                    with sessions() as session:
                        insert_runs(session, [_row(rng.randrange(30), rng, [dataset_id])
                                              for _ in range(3)])
            assert len(seen) == len(set(seen)), order_by  # no run twice
            assert [i for i in seen if i in runs] == old, order_by  # no old run skipped


READS_HISTORY = re.compile(r'\b(from|join)\s+"?epochs\b', re.IGNORECASE)


def test_sorted_pages_never_touch_the_history(client, runs, app, sessions):
    engine = app.extensions["descent"]["engine"]
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        statements.append(statement)

    some = next(iter(runs))
    with sessions() as session:
        session.add(Epoch(run_id=some, epoch=0, error=0.5, seconds=0.0))
        session.commit()
    event.listen(engine, "before_cursor_execute", record)
    try:
        # the check sees a statement that reads the history (as its streamed body is read)
        client.get(f"{API}/runs/{some}/history").get_data()
        assert any(READS_HISTORY.search(s) for s in statements), statements
        for order_by in ("final_error", "-best_error", "best_epoch", "-created_at"):
            statements.clear()
            first = client.get(f"{API}/runs", query_string={
                "limit": 5, "order_by": order_by, "where": "final_error < 1"}).get_json()
            client.get(f"{API}/runs", query_string={
                "limit": 5, "order_by": order_by, "cursor": first["next_cursor"]})
            assert any("FROM runs" in s for s in statements), order_by
            assert not any(READS_HISTORY.search(s) for s in statements), statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


def test_the_query_indexes_exist(app):
    engine = app.extensions["descent"]["engine"]
    names = {index["name"] for index in inspect(engine).get_indexes("runs")}
    for column in ("status", "dataset_id", "created_at", "final_error", "best_error",
                   "learning_rate"):
        assert any(name.startswith(f"ix_runs_{column}") for name in names), (column, names)


# ------------------------------------------------------------------------- downsampling


@pytest.fixture
def long_run(runs, sessions):
    """A run with 1000 epochs whose best error is at epoch 617. Returns its id."""
    dataset_id = next(iter(runs.values()))["dataset_id"]
    with sessions() as session:
        [run_id] = insert_runs(session, [{"dataset_id": dataset_id, "status": "succeeded",
                                          "epochs": 999, "epochs_done": 999}])
        rows = [{"run_id": run_id, "epoch": e, "error": 1.0 / (e + 1) + (0.5 if e > 617 else 0),
                 "accuracy": None, "val_error": None, "val_accuracy": None,
                 "seconds": 0.001 * e} for e in range(1000)]
        rows[617]["error"] = 0.0001
        session.execute(Epoch.__table__.insert(), rows)
        session.commit()
    return run_id


def _history(client, run_id, **params):
    response = client.get(f"{API}/runs/{run_id}/history", query_string=params)
    assert response.status_code == 200, response.get_data(as_text=True)
    return response


def test_history_downsampling(client, long_run):
    full = _history(client, long_run).get_json()["history"]
    assert len(full) == 1000
    for n in (3, 4, 10, 57, 999):
        rows = _history(client, long_run, max_points=n).get_json()["history"]
        epochs = [row["epoch"] for row in rows]
        assert len(epochs) <= n and len(epochs) >= n - 1, n
        assert epochs == sorted(set(epochs))
        assert {0, 999, 617} <= set(epochs), n
        assert all(row == full[row["epoch"]] for row in rows)
        if n >= 10:  # evenly spread: no gap much wider than the even one
            gaps = [b - a for a, b in zip(epochs, epochs[1:])]
            assert max(gaps) <= 2 * 999 / (n - 2) + 1, (n, max(gaps))
    assert len(_history(client, long_run, max_points=1000).get_json()["history"]) == 1000
    assert len(_history(client, long_run, max_points=5000).get_json()["history"]) == 1000
    text = _history(client, long_run, max_points=10, format="csv").get_data(as_text=True)
    table = list(csv.DictReader(io.StringIO(text)))
    assert len(table) <= 10 and {"0", "617", "999"} <= {row["epoch"] for row in table}


def test_history_downsampling_of_short_and_empty_histories(client, runs, sessions):
    dataset_id = next(iter(runs.values()))["dataset_id"]
    with sessions() as session:
        empty, short = insert_runs(session, [{"dataset_id": dataset_id}] * 2)
        session.execute(Epoch.__table__.insert(), [
            {"run_id": short, "epoch": e, "error": [3.0, None, 1.0, 2.0][e], "seconds": 0.0}
            for e in range(4)])
        session.commit()
    assert _history(client, empty, max_points=3).get_json()["history"] == []
    rows = _history(client, short, max_points=3).get_json()["history"]
    assert [row["epoch"] for row in rows] == [0, 2, 3]  # first, best, last


def test_history_max_points_must_be_an_integer_of_at_least_3(client, long_run):
    for bad in (2, 0, -5, "abc", "5.5", "", "1e3"):
        error = error_of(client.get(f"{API}/runs/{long_run}/history",
                                    query_string={"max_points": bad}), 422)
        assert set(error["fields"]) == {"max_points"}, (bad, error)
