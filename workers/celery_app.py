"""The workers' Celery app: the settings, read from the environment once here and passed
down; the function that sends a run's task; the process set-up around the pool's fork."""

from celery import Celery
from celery.signals import worker_init, worker_process_init, worker_ready, worker_shutdown

from service.queue import TRAIN_RUN, celery_config
from service.settings import Settings

settings = Settings.from_env()
app = Celery("descent", include=["workers.tasks"])
app.conf.update(celery_config(settings.broker_url))
# When a pool process dies mid-task, billiard waits this long for a result it might still
# have sent before rejecting (and so redelivering) the task; the default is 10 s. Run state
# lives in the database and results are ignored, so there is nothing worth waiting for.
app.conf.worker_lost_wait = 1.0

# The signal handlers import what they need when they run: `celery inspect` and friends
# load this module too, and need neither the kernels nor the database.


def send_run(run_id: int) -> None:
    """Send train_run(run_id) through this app (the reaper's sends and a sweep's next
    runs; the API side sends through service.queue.QueueClient)."""
    app.send_task(TRAIN_RUN, args=[run_id])


def limit_threads(threads: int) -> None:
    """``threads`` BLAS threads per worker process (settings.worker_threads, default one):
    N workers on N cores must not oversubscribe."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)


_warm_rest = None


@worker_init.connect
def _warm_up(**_):
    """In the main process, before the pool forks: load the float64 training kernels from
    the kernel cache, so each forked child starts with them ready, and compile the rest in
    the background (workers.warmup); then cap threads. With them not cached yet, compile
    everything in the background instead: the pool starts at once, and a run that arrives
    meanwhile trains interpreted or waits for the compile (workers.engines)."""
    global _warm_rest
    from kernels import compilestate
    from workers.warmup import start_warm_rest, start_warm_up, warm_first

    cached = compilestate.training_kernels_cached() and not compilestate.first_compile_running()
    if not cached:
        _warm_rest = start_warm_up()
    if cached or (_warm_rest is None and not compilestate.first_compile_running()):
        # (no lock file to be had: compile here, before the fork, as runs cannot wait on one)
        warm_first()
        _warm_rest = start_warm_rest()
    limit_threads(settings.worker_threads)  # after the warm-up, which loads every BLAS


@worker_process_init.connect
def _after_fork(**_):
    # Engines must not be shared across fork: each process opens its own connections.
    from workers import database

    database.reset_engines()
    limit_threads(settings.worker_threads)


_reaper_stop = None


@worker_ready.connect
def _start_reaper(**_):
    """In the main process, once the pool is up: reap lost runs periodically (and resend
    queued runs whose messages a broker that lost its data lost: BrokerMarker)."""
    global _reaper_stop
    from service.queue import BrokerMarker
    from workers import database
    from workers.reaping import start_reaper

    sessions = database.sessions(settings.database_url, settings.reaper.stale_seconds)
    _reaper_stop = start_reaper(sessions, send_run, settings.reaper, BrokerMarker(app).since)


@worker_shutdown.connect
def _stop_reaper(**_):
    if _reaper_stop is not None:
        _reaper_stop.set()
    if _warm_rest is not None and _warm_rest.poll() is None:
        _warm_rest.terminate()
