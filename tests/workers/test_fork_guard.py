"""A worker's main process forks its pool processes (at start, and to replace one that
died) while its reaper thread uses the database: a process forked in the middle of the
reaper's write transaction must still be able to write (SQLite's lock bookkeeping is
process memory, which the fork copies)."""

import os
import sqlite3
import threading
import time

from sqlalchemy import update

from service.settings import ReaperSettings
from service.store import Run
from service.store import reaper
from workers import database
from workers.reaping import reap_forever

from .conftest import store_run


def write_in_child(path: str, run_id: int) -> int:
    """Fork; in the child, write to ``path`` (giving up after 2 s) and exit 0 if that
    worked. Returns the child's exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            database.reset_engines()  # as the pool process does (workers.celery_app)
            connection = sqlite3.connect(path, timeout=2, isolation_level=None)
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("UPDATE runs SET name = 'child' WHERE id = ?", (run_id,))
            connection.execute("COMMIT")
            code = 0
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_a_process_forked_during_a_reapers_write_can_write(sessions, sqlite_url, monkeypatch):
    run_id = store_run(sessions)
    inside, stop = threading.Event(), threading.Event()

    def slow_writing_pass(sessions_, *_):
        if inside.is_set():
            stop.set()
            return
        with sessions_() as session:
            session.execute(update(Run).where(Run.id == run_id).values(name="reaper"))
            inside.set()
            time.sleep(0.5)  # the fork below is asked for now, mid-transaction
            session.commit()

    monkeypatch.setattr(reaper, "reap", slow_writing_pass)
    thread = threading.Thread(target=reap_forever, daemon=True,
                              args=(stop, sessions, [].append, ReaperSettings(reap_seconds=0.01)))
    thread.start()
    assert inside.wait(10)
    assert write_in_child(sqlite_url.removeprefix("sqlite:///"), run_id) == 0
    thread.join(10)
    with sessions() as session:
        assert session.get(Run, run_id).name == "child"  # the child wrote after the pass


def test_the_reapers_broker_sends_do_not_hold_off_forks(sessions):
    """A send can take seconds with the broker down; a dead pool process is replaced
    meanwhile."""
    store_run(sessions)  # queued and never sent: the pass sends it
    fork_could_go = []

    def enqueue(_run_id):
        other = threading.Thread(target=lambda: fork_could_go.append(
            database._fork_guard.acquire(timeout=1) and database._fork_guard.release() is None))
        other.start()
        other.join()

    reaper.reap(database.forks_held_off(sessions), enqueue, ReaperSettings(unsent_seconds=0))
    assert fork_could_go == [True]
