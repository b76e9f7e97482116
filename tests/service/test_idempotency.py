"""Idempotency-Key on POST /runs and POST /sweeps, on SQLite and PostgreSQL: a retry gets the
original resource and queues nothing; another body is a 422; concurrent requests with one key
make exactly one resource; a failed request does not use its key up."""

import threading
import time

import pytest
from sqlalchemy import func, select

from service.store import Run
from service.store.models import IdempotencyKey, Sweep

from .conftest import API, error_of, queued_run_ids

SPEC = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 10}
SWEEP = {"base": {"dataset": "xor", "layers": [2, 2, 1], "epochs": 2},
         "grid": {"learning_rate": [0.1, 0.2, 0.3]}}


def key(value):
    return {"Idempotency-Key": value}


def count(sessions, model) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(model))


def test_a_retried_run_returns_the_original_and_queues_nothing(client, sessions, queue_dir):
    first = client.post(f"{API}/runs", json=SPEC, headers=key("run-1"))
    assert first.status_code == 202, first.get_json()
    # the same body in another key order and spacing is the same request
    retry = client.post(f"{API}/runs", headers={**key("run-1"),
                                                "Content-Type": "application/json"},
                        data='{"epochs": 10,  "layers": [2, 4, 1], "dataset": "xor"}')
    assert retry.status_code == 202, retry.get_json()
    assert retry.get_json() == first.get_json()
    assert count(sessions, Run) == 1
    assert queued_run_ids(queue_dir) == [first.get_json()["id"]]
    # another key is another run
    other = client.post(f"{API}/runs", json=SPEC, headers=key("run-2"))
    assert other.status_code == 202
    assert other.get_json()["id"] != first.get_json()["id"]
    assert count(sessions, Run) == 2
    # without the header every POST is a new run
    assert client.post(f"{API}/runs", json=SPEC).status_code == 202
    assert count(sessions, Run) == 3


def test_a_retry_shows_the_run_as_it_is_now(client):
    run = client.post(f"{API}/runs", json=SPEC, headers=key("k")).get_json()
    assert client.post(f"{API}/runs/{run['id']}/cancel").status_code == 202
    retry = client.post(f"{API}/runs", json=SPEC, headers=key("k"))
    assert retry.status_code == 202
    assert retry.get_json()["id"] == run["id"]
    assert retry.get_json()["status"] == "cancelled"


def test_the_same_key_with_another_body_is_a_422(client, sessions, queue_dir):
    run = client.post(f"{API}/runs", json=SPEC, headers=key("k")).get_json()
    error = error_of(client.post(f"{API}/runs", json={**SPEC, "epochs": 11},
                                 headers=key("k")), 422)
    assert set(error["fields"]) == {"Idempotency-Key"}
    assert count(sessions, Run) == 1
    assert queued_run_ids(queue_dir) == [run["id"]]


def test_keys_are_per_user_and_per_endpoint(client, client_of, sessions):
    mine = client.post(f"{API}/runs", json=SPEC, headers=key("shared")).get_json()
    theirs = client_of("bob").post(f"{API}/runs", json=SPEC, headers=key("shared"))
    assert theirs.status_code == 202
    assert theirs.get_json()["id"] != mine["id"]
    sweep = client.post(f"{API}/sweeps", json=SWEEP, headers=key("shared"))
    assert sweep.status_code == 202, sweep.get_json()
    assert count(sessions, Run) == 2 + 3


@pytest.mark.parametrize("value, message", [
    ("", "must not be empty"),
    ("x" * 256, "at most 255"),
    ("has space", "visible ASCII"),
])
def test_a_bad_key_is_a_422_naming_the_header(client, sessions, value, message):
    for path, body in ((f"{API}/runs", SPEC), (f"{API}/sweeps", SWEEP)):
        error = error_of(client.post(path, json=body, headers=key(value)), 422)
        assert set(error["fields"]) == {"Idempotency-Key"}
        assert message in error["fields"]["Idempotency-Key"]
    assert count(sessions, Run) == 0
    assert count(sessions, IdempotencyKey) == 0


def test_a_key_of_255_characters_is_fine(client):
    assert client.post(f"{API}/runs", json=SPEC, headers=key("k" * 255)).status_code == 202


def test_a_failed_request_does_not_use_its_key_up(client, sessions):
    error = error_of(client.post(f"{API}/runs", json={**SPEC, "dataset": "nope"},
                                 headers=key("k")), 422)
    assert set(error["fields"]) == {"dataset"}
    assert count(sessions, IdempotencyKey) == 0
    # the retry with a fixed body (a different body) goes through with the same key
    assert client.post(f"{API}/runs", json=SPEC, headers=key("k")).status_code == 202
    assert count(sessions, Run) == 1


def test_a_503_does_not_use_its_key_up(new_token, make_client, client, sessions):
    down = make_client(broker_url="redis://127.0.0.1:1/0")
    down.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {new_token('alice')}"
    assert error_of(down.post(f"{API}/runs", json=SPEC, headers=key("k")), 503)
    assert error_of(down.post(f"{API}/sweeps", json=SWEEP, headers=key("s")), 503)
    assert count(sessions, IdempotencyKey) == 0
    assert count(sessions, Run) == 0
    # once the broker is back, the same keys work
    assert client.post(f"{API}/runs", json=SPEC, headers=key("k")).status_code == 202
    assert client.post(f"{API}/sweeps", json=SWEEP, headers=key("s")).status_code == 202


def test_a_retried_sweep_returns_the_original_and_queues_nothing(client, sessions, queue_dir):
    first = client.post(f"{API}/sweeps", json=SWEEP, headers=key("sweep-1"))
    assert first.status_code == 202, first.get_json()
    queued = queued_run_ids(queue_dir)
    assert len(queued) == 3
    retry = client.post(f"{API}/sweeps", json=SWEEP, headers=key("sweep-1"))
    assert retry.status_code == 202
    assert retry.get_json()["id"] == first.get_json()["id"]
    assert [r["id"] for r in retry.get_json()["runs"]] == \
        [r["id"] for r in first.get_json()["runs"]]
    assert count(sessions, Sweep) == 1
    assert count(sessions, Run) == 3
    assert queued_run_ids(queue_dir) == queued
    error = error_of(client.post(f"{API}/sweeps", json={**SWEEP, "name": "other"},
                                 headers=key("sweep-1")), 422)
    assert set(error["fields"]) == {"Idempotency-Key"}


def test_a_sweep_preview_does_not_use_its_key_up(client, sessions):
    preview = client.post(f"{API}/sweeps", json={**SWEEP, "preview": True},
                          headers=key("k"))
    assert preview.status_code == 200
    assert count(sessions, IdempotencyKey) == 0


class SlowQueue:
    """The app's real queue client, slowed down so concurrent requests overlap: runs and
    sweeps alike send through ``enqueue_runs``. Counts the sends."""

    def __init__(self, queue, delay: float):
        self.queue, self.delay, self.sends = queue, delay, 0

    def enqueue_runs(self, run_ids) -> None:
        self.sends += 1
        time.sleep(self.delay)  # a slow broker, not a wait for something
        self.queue.enqueue_runs(run_ids)

    def __getattr__(self, name):
        return getattr(self.queue, name)


def post_concurrently(app, token, path, body, n: int):
    barrier = threading.Barrier(n)
    responses = [None] * n

    def post(i):
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        barrier.wait()
        responses[i] = client.post(path, json=body, headers=key("race"))

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return responses


# A real database: the requests run in threads of their own, each with its own connection,
# which is what the test is about.
@pytest.mark.real_database
@pytest.mark.parametrize("delay", [0.0, 0.5])
@pytest.mark.parametrize("path, body, model, runs", [
    (f"{API}/runs", SPEC, Run, 1),
    (f"{API}/sweeps", SWEEP, Sweep, 3),
])
def test_concurrent_requests_with_one_key_make_one_resource(settings, token, queue_dir,
                                                            delay, path, body, model, runs):
    from service.app import create_app
    from service.queue import QueueClient

    queue = SlowQueue(QueueClient(settings.broker_url), delay)
    app = create_app({"SETTINGS": settings, "TESTING": True, "QUEUE": queue})
    try:
        responses = post_concurrently(app, token, path, body, n=4)
        sessions = app.extensions["descent"]["sessions"]
        assert [r.status_code for r in responses] == [202] * 4, \
            [r.get_json() for r in responses]
        assert len({r.get_json()["id"] for r in responses}) == 1
        assert count(sessions, model) == 1
        assert count(sessions, Run) == runs
        assert len(queued_run_ids(queue_dir)) == runs
        assert queue.sends == 1  # the others waited for the first, however slow its send
    finally:
        app.extensions["descent"]["engine"].dispose()


def test_the_header_is_in_the_openapi_document(client):
    spec = client.get(f"{API}/openapi.json").get_json()
    for path in (f"{API}/runs", f"{API}/sweeps"):
        operation = spec["paths"][path]["post"]
        [header] = [p for p in operation["parameters"] if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and not header["required"]
        assert header["schema"]["pattern"] == "^[!-~]{1,255}$"
        assert {"202", "409", "422"} <= set(operation["responses"])
