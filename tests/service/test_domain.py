"""The use cases called directly, outside any request (they know nothing of HTTP), on SQLite
and PostgreSQL: the one enqueue-or-undo behind runs and sweeps, and the status each domain
error is answered with."""

import logging

import pytest
from sqlalchemy import func, select

from service import errors
from service.api.errors import status_of
from service.queue import QueueUnavailable
from service.runs import submit_run
from service.runspec import RunSpecSchema
from service.settings import Limits
from service.store import Run
from service.store.models import Sweep, SweepCell
from service.sweeps import create_sweep

SPEC = {"dataset": "xor", "layers": [2, 4, 1], "epochs": 5}
SWEEP = {"base": {"dataset": "xor", "layers": [2, 2, 1], "epochs": 2},
         "grid": {"learning_rate": [0.1, 0.2, 0.3]}, "max_concurrency": 2, "metric": "error"}
BROKER = "redis://default:S3cret@broker:6379/0"


class RecordingQueue:
    """A queue that keeps what it is sent."""

    def __init__(self):
        self.sent = []

    def enqueue_runs(self, run_ids) -> None:
        self.sent.append(list(run_ids))


class DownQueue:
    """A queue whose broker is unreachable (its error quotes the broker's URL)."""

    def enqueue_runs(self, run_ids) -> None:
        raise QueueUnavailable(f"cannot connect to {BROKER}")


def count(session, model) -> int:
    return session.scalar(select(func.count()).select_from(model))


def test_a_run_is_stored_sent_and_marked(sessions):
    queue = RecordingQueue()
    with sessions() as session:
        run = submit_run(session, queue, Limits(), "alice", RunSpecSchema().load(SPEC))
        assert queue.sent == [[run.id]]
    with sessions() as session:
        stored = session.get(Run, run.id)
        assert stored.owner == "alice" and stored.status == "queued"
        assert stored.enqueued_at is not None


def test_a_run_the_broker_cannot_take_is_undone(sessions, caplog):
    caplog.set_level(logging.WARNING)
    with sessions() as session:
        with pytest.raises(errors.QueueDown) as raised:
            submit_run(session, DownQueue(), Limits(), "alice", RunSpecSchema().load(SPEC))
    assert raised.value.message == "the broker is unreachable; nothing was queued"
    with sessions() as session:
        assert count(session, Run) == 0
    assert "not queued, the broker is unreachable" in caplog.text
    assert "S3cret" not in caplog.text


def test_a_sweep_sends_its_first_cells_and_marks_them(sessions):
    queue = RecordingQueue()
    with sessions() as session:
        sweep = create_sweep(session, queue, Limits(), "alice", SWEEP)
    [sent] = queue.sent
    assert len(sent) == 2  # max_concurrency
    with sessions() as session:
        assert count(session, SweepCell) == 3
        assert all(session.get(Run, run_id).enqueued_at is not None for run_id in sent)
        assert session.get(Sweep, sweep.id).owner == "alice"


def test_a_sweep_the_broker_cannot_take_is_undone(sessions, caplog):
    caplog.set_level(logging.WARNING)
    with sessions() as session:
        with pytest.raises(errors.QueueDown):
            create_sweep(session, DownQueue(), Limits(), "alice", SWEEP)
    with sessions() as session:
        assert (count(session, Sweep), count(session, SweepCell), count(session, Run)) \
            == (0, 0, 0)
    assert "S3cret" not in caplog.text


def test_invalid_names_every_bad_field():
    error = errors.Invalid({"layers": "too wide", "epochs": "too many"})
    assert (error.code, error.message) == ("validation_error", "invalid epochs, layers")
    assert error.fields == {"layers": "too wide", "epochs": "too many"}


@pytest.mark.parametrize("error, status, code", [
    (errors.Invalid({"x": "bad"}), 422, "validation_error"),
    (errors.NotFound("run 1 does not exist"), 404, "not_found"),
    (errors.NotReady("run 1 has no final parameters yet"), 409, "not_ready"),
    (errors.Conflict("run 1 is succeeded", code="already_finished"), 409, "already_finished"),
    (errors.QueueDown(), 503, "queue_unavailable"),
])
def test_each_domain_error_has_its_status(error, status, code):
    assert (status_of(error), error.code) == (status, code)


def test_field_messages_name_nested_fields_and_list_items():
    messages = {"layers": {1: ["Must be at least 1."]}, "tags": {"k": {"value": ["Too long."]}},
                "dataset": ["Missing data.", "Bad."]}
    assert errors.field_messages(messages) == {
        "layers[1]": "Must be at least 1.", "tags.k.value": "Too long.",
        "dataset": "Missing data.; Bad."}
    assert errors.field_messages(["whole"]) == {"_schema": "whole"}
    assert errors.field_messages({}) == {}
