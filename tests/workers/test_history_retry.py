"""A history write that loses its database connection (docs/reliability.md, faults across
the network; tests/multihost/test_partitions.py loses the link itself): the writer keeps
its rows and writes them with the next batch, and a write whose COMMIT took effect although
its answer was lost is replaced, never duplicated. Past the retry window it raises, as
before (the run has been taken back by then)."""

from contextlib import contextmanager

import pytest
from sqlalchemy.exc import OperationalError

from service.store import runs as store_runs
from workers.history import HistoryWriter

from .conftest import store_run


def lose_next_commit(sessions, landed: bool):
    """A session factory like ``sessions`` whose next session's COMMIT raises a lost
    connection, after it took effect (``landed``) or without it."""
    pending = [True]

    @contextmanager
    def make():
        with sessions() as session:
            if pending:
                pending.clear()
                commit = session.commit

                def lost():
                    if landed:
                        commit()
                    else:
                        session.rollback()
                    raise OperationalError("COMMIT", {}, Exception("connection lost"))

                session.commit = lost
            yield session
    return make


def epochs(sessions, run_id) -> list[int]:
    with sessions() as session:
        return [row.epoch for row in store_runs.history(session, run_id)]


def writer_of(sessions, run_id, retry_seconds=60.0) -> HistoryWriter:
    with sessions() as session:
        attempt = store_runs.claim_run(session, run_id, "w1:1").attempts
    return HistoryWriter(sessions, run_id, attempt, epochs=9, retry_seconds=retry_seconds)


@pytest.mark.parametrize("landed", [False, True], ids=["commit-lost", "answer-lost"])
def test_a_lost_history_write_is_written_with_the_next(db_sessions, landed):
    run_id = store_run(db_sessions, epochs=9)
    writer = writer_of(db_sessions, run_id)
    for epoch in range(4):
        writer.add(epoch, 1.0 / (epoch + 1))
    writer.sessions = lose_next_commit(db_sessions, landed)
    writer.flush()  # lost: kept
    assert epochs(db_sessions, run_id) == ([0, 1, 2, 3] if landed else [])
    for epoch in range(4, 7):
        writer.add(epoch, 1.0 / (epoch + 1))
    writer.flush()
    assert epochs(db_sessions, run_id) == list(range(7))
    for epoch in range(7, 10):
        writer.add(epoch, 1.0 / (epoch + 1))
    writer.epochs_done = 9  # (kernels.train's callback says so)
    writer.finish("succeeded")
    assert epochs(db_sessions, run_id) == list(range(10))
    with db_sessions() as session:
        run = store_runs.get_run(session, run_id)
        assert run.status == "succeeded" and run.epochs_done == 9 and run.final_error == 0.1


def test_a_final_write_after_a_lost_one_replaces_its_rows(db_sessions):
    run_id = store_run(db_sessions, epochs=5)
    writer = writer_of(db_sessions, run_id)
    for epoch in range(3):
        writer.add(epoch, 1.0)
    writer.sessions = lose_next_commit(db_sessions, landed=True)
    writer.flush()
    for epoch in range(3, 6):
        writer.add(epoch, 0.5)
    writer.finish("succeeded")
    assert epochs(db_sessions, run_id) == list(range(6))


def test_past_the_retry_window_a_lost_write_raises(db_sessions):
    run_id = store_run(db_sessions, epochs=5)
    writer = writer_of(db_sessions, run_id, retry_seconds=0.0)
    writer.add(0, 1.0)
    writer.sessions = lose_next_commit(db_sessions, landed=False)
    with pytest.raises(OperationalError):
        writer.flush()
