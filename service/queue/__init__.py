"""The queue between the API side and the workers: the Celery configuration both use, the
one task name, the client that sends tasks, and the embedded filesystem transport
(``service.queue.fstransport``), and the marker that tells when the broker lost its data.
Nothing here imports ``workers``."""

import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional
from urllib.parse import urlparse

from celery import Celery

# The task that trains one stored run, by id; the workers register their task under it.
TRAIN_RUN = "workers.tasks.train_run"
# The key of BrokerMarker in the broker's Redis (its database, beside the queue).
BROKER_MARKER = "descent:broker-since"

log = logging.getLogger(__name__)


class QueueUnavailable(Exception):
    """The broker could not take the message."""


def celery_config(broker_url: str) -> dict:
    """Celery settings shared by the API's queue client and the workers.

    ``filesystem://FOLDER`` (the embedded default) is kombu's filesystem transport in FOLDER
    (relative to the working directory), polled every 20 ms; anything else (``redis://...``)
    is handed to kombu as it is.
    """
    config = {
        "broker_url": broker_url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,  # run state lives in the database
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        # Task messages carry only ids, as JSON: never pickle (nothing executable on the wire).
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
    }
    parsed = urlparse(broker_url)
    if parsed.scheme == "filesystem":
        folder = Path((parsed.netloc + parsed.path) or "descent-queue").resolve()
        # Created for the owner only (an existing folder keeps its mode).
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(mode=0o700, exist_ok=True)
        config["broker_url"] = "filesystem://localhost/"  # a host, or kombu warns of none
        # kombu's own filesystem transport can lose a message a producer is still writing.
        config["broker_transport"] = "service.queue.fstransport:Transport"
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Broadcast (pidbox) tables; kombu's default is ./control in the working directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.02,
        }
    elif parsed.scheme in ("redis", "rediss"):
        # A delivered task not acknowledged within this time is delivered again.
        config["broker_transport_options"] = {"visibility_timeout": 3600}
    return config


class BrokerMarker:
    """When the broker's present data began: a key in the broker's Redis database, set with
    SET NX to the time it was first missed. A Redis that loses its data (restarted without
    persistence, its volume lost, flushed) loses the key with its queue, so the next
    ``since`` sets it again to that moment (by Redis's clock; the runs' send times are the
    database's, so the two servers' clocks must agree, the hosts' need not): every message
    sent before it may be gone. Every worker, on any host, reads the same key, so they all
    agree. The key goes through the app's own broker connections (its URL, TLS and
    transport options, key prefix). The filesystem broker keeps its messages in files and cannot lose them this way: no marker
    (``since`` is None)."""

    def __init__(self, celery: Celery):
        self.celery = celery
        with celery.connection_for_write() as connection:  # not connected: names the transport
            self.enabled = connection.transport.driver_type == "redis"

    def since(self) -> Optional[datetime]:
        """The time (UTC) the broker's data began, set to now if the marker is missing; None
        when the broker cannot lose its data this way. One round trip on a pooled
        connection (three when the marker is missing); raises when the broker is unreachable."""
        if not self.enabled:
            return None
        with self.celery.pool.acquire(block=True) as connection:
            return self.since_on(connection.default_channel)

    def since_on(self, channel) -> Optional[datetime]:
        """``since`` through ``channel``, an open channel of the broker (a producer's)."""
        if not self.enabled:
            return None
        with channel.conn_or_acquire() as client:
            value = client.get(BROKER_MARKER)
            if value is None:
                # Redis's own clock, not this host's: a host whose clock is off must not
                # move the moment every reaper compares the runs' send times with.
                seconds, micros = client.time()
                now = datetime.fromtimestamp(seconds + micros / 1e6, timezone.utc).isoformat()
                with client.pipeline(transaction=True) as pipe:
                    created, value = (pipe.set(BROKER_MARKER, now, nx=True)
                                      .get(BROKER_MARKER).execute())
                if created:
                    log.warning("the broker's Redis held no %s key (a new Redis, or one that "
                                "lost its data): runs queued before %s are sent again",
                                BROKER_MARKER, now)
        return datetime.fromisoformat(value.decode() if isinstance(value, bytes) else value)


class QueueClient:
    """Sends tasks to the workers through the configured broker."""

    def __init__(self, broker_url: str):
        self.broker_url = broker_url
        self.celery = Celery("descent-client", set_as_current=False)
        self.celery.conf.update(celery_config(broker_url))
        if broker_url.startswith(("redis:", "rediss:")):
            # An unreachable or hung Redis answers 503 within seconds, not minutes.
            self.celery.conf.broker_transport_options = {
                **self.celery.conf.broker_transport_options,
                "socket_connect_timeout": 2, "socket_timeout": 5}
        self.marker = BrokerMarker(self.celery)

    def enqueue_run(self, run_id: int) -> None:
        """Queue ``train_run(run_id)``; QueueUnavailable when the broker is down."""
        self.enqueue_runs([run_id])

    def enqueue_runs(self, run_ids) -> None:
        """Queue ``train_run`` for each of ``run_ids`` in order, through one producer (a
        sweep's cells); QueueUnavailable when the broker is down (the runs before the
        failing one are queued)."""
        try:
            with self.celery.producer_or_acquire() as producer:
                # The marker exists before the messages do: a reaper never takes a run
                # sent into this Redis for one sent before it lost its data.
                self.marker.since_on(producer.channel)
                for run_id in run_ids:
                    self.celery.send_task(
                        TRAIN_RUN, args=[run_id], producer=producer, retry=True,
                        retry_policy={"max_retries": 2, "interval_start": 0.1,
                                      "interval_step": 0.2},
                    )
        except Exception as exc:  # kombu raises OperationalError and friends
            raise QueueUnavailable(str(exc)) from exc

    def broker_reachable(self) -> bool:
        """Whether a connection to the broker can be made now."""
        try:
            with self.celery.connection_for_write() as connection:
                connection.ensure_connection(max_retries=0, timeout=2)
            return True
        except Exception:
            return False

    def worker_names(self, timeout: float = 1.0):
        """Names of workers answering a ping, or None where the transport cannot broadcast
        (the embedded filesystem broker)."""
        if self.celery.conf.broker_url.startswith("filesystem"):
            return None
        try:
            replies = self.celery.control.ping(timeout=timeout) or []
        except Exception:
            return []
        return sorted(name for reply in replies for name in reply)
