"""The workers' Celery app, configured from the environment (service.settings)."""

import os

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from service.queue import celery_config
from service.settings import Settings

settings = Settings.from_env()
app = Celery("descent", include=["workers.tasks"])
app.conf.update(celery_config(settings.broker_url))
# When a pool process dies mid-task, billiard waits this long for a result it might still
# have sent before rejecting (and so redelivering) the task; the default is 10 s. Run state
# lives in the database and results are ignored, so there is nothing worth waiting for.
app.conf.worker_lost_wait = 1.0


def limit_threads() -> None:
    """One BLAS thread per worker process: N workers on N cores must not oversubscribe."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(int(os.environ.get("DESCENT_WORKER_THREADS", "1")))


@worker_init.connect
def _warm_up(**_):
    """In the main process, before the pool forks: cap threads and compile (or load from
    numba's cache) every kernel, so each forked child starts with them ready."""
    from workers.warmup import warm_kernels

    warm_kernels()
    limit_threads()  # after the warm-up, which loads every BLAS library the kernels use


@worker_process_init.connect
def _after_fork(**_):
    # Engines must not be shared across fork: each process opens its own connections.
    from workers import recorder

    recorder.reset_engine()
    limit_threads()


_reaper_stop = None


@worker_ready.connect
def _start_reaper(**_):
    """In the main process, once the pool is up: reap lost runs periodically."""
    global _reaper_stop
    from workers.reaping import start_reaper

    _reaper_stop = start_reaper()


@worker_shutdown.connect
def _stop_reaper(**_):
    if _reaper_stop is not None:
        _reaper_stop.set()
