"""A thin queue client: enqueues worker tasks by name, never importing ``workers``."""

from celery import Celery

from .config import celery_config

TRAIN_RUN = "workers.tasks.train_run"


class QueueUnavailable(Exception):
    """The broker could not take the message."""


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
