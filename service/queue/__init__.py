"""The queue between the API side and the workers: the Celery configuration both use, the
one task name, the client that sends tasks, and the embedded filesystem transport
(``service.queue.fstransport``). Nothing here imports ``workers``."""

from pathlib import Path
from urllib.parse import urlparse

from celery import Celery

# The task that trains one stored run, by id; the workers register their task under it.
TRAIN_RUN = "workers.tasks.train_run"


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
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
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

    def enqueue_run(self, run_id: int) -> None:
        """Queue ``train_run(run_id)``; QueueUnavailable when the broker is down."""
        self.enqueue_runs([run_id])

    def enqueue_runs(self, run_ids) -> None:
        """Queue ``train_run`` for each of ``run_ids`` in order, through one producer (a
        sweep's cells); QueueUnavailable when the broker is down (the runs before the
        failing one are queued)."""
        try:
            with self.celery.producer_or_acquire() as producer:
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
