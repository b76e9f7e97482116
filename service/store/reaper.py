"""The reaper's queries: runs whose worker stopped beating, runs never sent to the broker,
runs whose message a broker that lost its data lost with it, sweeps left in a state their
runs contradict.

Every worker runs ``reap`` periodically (and ``descent reap`` runs it once). Any number of
reapers may run at once: each change is a conditional UPDATE that re-checks what the scan
saw (state, attempt, heartbeat), so exactly one reaper wins each run, and a task sent
twice is harmless because ``runs.claim_run`` fences attempts.

Ages are judged in SQL on the database's clock, the clock that wrote the heartbeats
(service.store.clock): a reaper whose host clock is off judges exactly as the others do.
"""

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable, Optional, Protocol

from sqlalchemy import and_, exists, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from .clock import db_ago, db_now
from .models import Epoch, Run, Sweep, SweepCell
from .runs import mark_enqueued, worker_lost_message
from .sweeps import run_ended
from .usage import HISTORY_ROW_BYTES

log = logging.getLogger(__name__)


class Timings(Protocol):
    """What a reap reads of the reaper's settings (a service.settings.ReaperSettings, passed
    in by the caller: the store reads no environment)."""

    stale_seconds: float  # a running run whose heartbeat is older than this is lost
    max_attempts: int  # claims of one run before it is given up ("worker lost")
    unsent_seconds: float  # a queued run not sent within this long was never sent
    resend_seconds: float  # a queued run sent this long ago and never claimed is sent again


# Runs handled per scan (the next reap takes the rest).
BATCH = 200


@dataclass
class Reaped:
    """What one ``reap`` did, by run id."""

    requeued: list = field(default_factory=list)
    resent: list = field(default_factory=list)  # queued runs whose message the broker lost
    failed: list = field(default_factory=list)
    cancelled: list = field(default_factory=list)
    sent: list = field(default_factory=list)
    unsent: list = field(default_factory=list)  # sends that failed (tried again next time)
    sweeps: list = field(default_factory=list)  # sweeps whose state was fixed

    def __bool__(self) -> bool:
        return any((self.requeued, self.resent, self.failed, self.cancelled, self.sent,
                    self.unsent, self.sweeps))


def stale_runs(session: Session, stale_seconds: float) -> list[tuple]:
    """(id, attempts) of running runs whose heartbeat is older than ``stale_seconds``."""
    cutoff = db_ago(stale_seconds)
    return list(session.execute(
        select(Run.id, Run.attempts).where(
            Run.status == "running", or_(Run.heartbeat_at < cutoff, Run.heartbeat_at.is_(None)))
        .order_by(Run.id).limit(BATCH)))


def take_back(session: Session, run_id: int, attempts: int, stale_seconds: float,
              max_attempts: int) -> tuple[Optional[str], list[int]]:
    """End or requeue one stale running run, if it is still as the scan saw it: "cancelled"
    (its cancel was requested), "failed" (``max_attempts`` claims reached: worker lost) or
    "queued" (to send again); None when another reaper or a worker got there first. A
    sweep's run that ends frees its slot in the same transaction: the second item is the
    runs that dispatched, to send. Commits."""
    now, cutoff = db_now(), db_ago(stale_seconds)
    seen = and_(Run.id == run_id, Run.status == "running", Run.attempts == attempts,
                or_(Run.heartbeat_at < cutoff, Run.heartbeat_at.is_(None)))
    # A run that ends here stored its history so far and no parameters (written when a
    # worker completes it): its reservation settles to that, nothing if it never started.
    stored = (select(func.count()).select_from(Epoch).where(Epoch.run_id == Run.id)
              .scalar_subquery() * HISTORY_ROW_BYTES)
    choices = (
        ("cancelled", Run.cancel_requested.is_(True),
         dict(status="cancelled", finished_at=now, stored_bytes=stored)),
        ("failed", and_(Run.cancel_requested.is_(False), Run.attempts >= max_attempts),
         dict(status="failed", finished_at=now, error_message=worker_lost_message(),
              stored_bytes=stored)),
        ("queued", and_(Run.cancel_requested.is_(False), Run.attempts < max_attempts),
         # heartbeat_at: when it was requeued, so the unsent scan gives the send its grace.
         dict(status="queued", enqueued_at=None, heartbeat_at=now)),
    )
    for outcome, condition, values in choices:
        sweep_id = session.execute(
            update(Run).where(seen, condition).values(**values).returning(Run.sweep_id)
        ).first()
        if sweep_id is not None:
            to_send = []
            if outcome != "queued" and sweep_id[0] is not None:
                to_send = run_ended(session, sweep_id[0])
            session.commit()
            return outcome, to_send
    session.rollback()
    return None, []


def unsent_runs(session: Session, unsent_seconds: float) -> list[int]:
    """Ids of queued runs whose task was never sent (``enqueued_at`` NULL) although they
    were stored or requeued more than ``unsent_seconds`` ago, except sweep cells still
    waiting for a slot."""
    cutoff = db_ago(unsent_seconds)
    waiting = exists().where(SweepCell.run_id == Run.id, SweepCell.dispatched.is_(False))
    return list(session.scalars(
        select(Run.id).where(
            Run.status == "queued", Run.enqueued_at.is_(None),
            Run.cancel_requested.is_(False),
            func.coalesce(Run.heartbeat_at, Run.created_at) < cutoff, ~waiting)
        .order_by(Run.id).limit(BATCH)))


def lost_messages(session: Session, broker_since) -> list[int]:
    """Ids of queued runs whose message was sent before ``broker_since``, when the broker's
    present data began: a broker that lost its data lost their messages. (Also used with
    ``db_ago(resend_seconds)``: messages sent that long ago that no worker claimed.)"""
    return list(session.scalars(
        select(Run.id).where(Run.status == "queued", Run.enqueued_at < broker_since,
                             Run.cancel_requested.is_(False))
        .order_by(Run.id).limit(BATCH)))


def unsend(session: Session, run_ids: list[int], broker_since) -> list[int]:
    """Mark as unsent those of ``run_ids`` that are still queued with a message older than
    ``broker_since`` (one conditional UPDATE: of concurrent reapers, one wins each run), to
    send again; should the send never happen, the unsent scan sends them after its grace.
    Returns the ids this call won. Commits."""
    if not run_ids:
        return []
    won = session.scalars(
        update(Run).where(Run.id.in_(run_ids), Run.status == "queued",
                          Run.enqueued_at < broker_since, Run.cancel_requested.is_(False))
        # heartbeat_at: when it was marked unsent, as take_back does, for the unsent grace.
        .values(enqueued_at=None, heartbeat_at=db_now())
        .returning(Run.id)).all()
    session.commit()
    return sorted(won)


def unsettled_sweeps(session: Session) -> list[int]:
    """Ids of sweeps not in a final state (the reaper re-derives their state and fills
    their free slots, which heals a run that ended without doing so)."""
    return list(session.scalars(
        select(Sweep.id).where(Sweep.status.not_in(("succeeded", "failed", "cancelled")))
        .order_by(Sweep.id).limit(BATCH)))


def settle_sweep(session: Session, sweep_id: int) -> tuple[list[int], bool]:
    """(runs to send, whether the sweep's state changed): dispatch the waiting cells its
    free slots allow and store its state as its runs say. Commits."""
    before = session.scalar(select(Sweep.status).where(Sweep.id == sweep_id))
    to_send = run_ended(session, sweep_id)
    after = session.scalar(select(Sweep.status).where(Sweep.id == sweep_id))
    session.commit()
    return to_send, before != after


def send(sessions: sessionmaker, run_ids, enqueue: Callable[[int], None],
         reaped: Reaped) -> None:
    """Send each run's task, then record it as sent; a failed send is left for later."""
    sent = []
    for run_id in run_ids:
        try:
            enqueue(run_id)
        except Exception as exc:  # the broker is down: the next reap tries again
            log.warning("run %s could not be sent to the broker: %s", run_id, exc)
            reaped.unsent.append(run_id)
        else:
            sent.append(run_id)
    if sent:
        with sessions() as session:
            mark_enqueued(session, sent)
        reaped.sent.extend(sent)


def probe(broker_since: Optional[Callable[[], Optional[datetime]]]) -> Optional[datetime]:
    """What ``broker_since()`` says, or None when there is no probe, the broker cannot lose
    its data, or the broker is unreachable (nothing is resent then)."""
    if broker_since is None:
        return None
    try:
        return broker_since()
    except Exception as exc:
        log.warning("the broker could not be asked whether it lost its data: %s", exc)
        return None


def reap(sessions: sessionmaker, enqueue: Callable[[int], None], timings: Timings,
         broker_since: Optional[Callable[[], Optional[datetime]]] = None) -> Reaped:
    """One pass: take back runs whose worker stopped beating for ``timings.stale_seconds``
    (requeue, or fail past ``timings.max_attempts``), settle sweeps, send again queued runs
    whose message was sent before ``broker_since()`` (when the broker's present data began,
    e.g. service.queue.BrokerMarker.since; None: the broker cannot lose its data) or more
    than ``timings.resend_seconds`` ago without a claim since, send runs never sent within
    ``timings.unsent_seconds``. ``enqueue(run_id)`` sends a run's task
    (raising when the broker is down). Returns what was done."""
    stale_seconds, max_attempts = timings.stale_seconds, timings.max_attempts
    reaped = Reaped()
    since = probe(broker_since)
    to_send = []
    with sessions() as session:
        for run_id, attempts in stale_runs(session, stale_seconds):
            outcome, dispatched = take_back(session, run_id, attempts, stale_seconds,
                                            max_attempts)
            to_send += dispatched
            if outcome == "queued":
                reaped.requeued.append(run_id)
                to_send.append(run_id)
            elif outcome is not None:
                getattr(reaped, outcome).append(run_id)
        for sweep_id in unsettled_sweeps(session):
            dispatched, changed = settle_sweep(session, sweep_id)
            to_send += dispatched
            if changed:
                reaped.sweeps.append(sweep_id)
        if since is not None:
            reaped.resent = unsend(session, lost_messages(session, since), since)
        # A message Redis handed to a worker over a connection that dropped before the
        # reply arrived is gone (kombu records it as unacknowledged only on arrival): a run
        # queued that long without a claim is sent again; a duplicate is harmless.
        sent_before = db_ago(timings.resend_seconds)
        reaped.resent += [i for i in unsend(session, lost_messages(session, sent_before),
                                            sent_before) if i not in reaped.resent]
        to_send += [i for i in reaped.resent if i not in to_send]
        unsent = unsent_runs(session, timings.unsent_seconds)
        to_send += [i for i in unsent if i not in to_send]
        session.commit()
    send(sessions, to_send, enqueue, reaped)
    if reaped:
        log.warning("reaper: %s", {k: v for k, v in vars(reaped).items() if v})
    return reaped


__all__ = ["Reaped", "Timings", "lost_messages", "probe", "reap", "settle_sweep",
           "stale_runs", "take_back", "unsend", "unsent_runs", "unsettled_sweeps"]
