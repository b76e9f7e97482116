"""/metrics: the service in Prometheus' text format.

Runs by state, the queue's depth, epochs trained and training throughput are read from the
database at scrape time (so every API replica reports the same, whole-fleet numbers); request
latencies are this API process's own, observed around every request. Each app has its own
registry, so several apps in one process (tests) do not collide.
"""

import time
from datetime import timedelta

from flask import Blueprint, Response, current_app, g, request
from sqlalchemy import func, or_, select

from service.store import RUN_STATES, Dataset, Epoch, Run
from service.store.models import utcnow

# Throughput is measured over this much of the most recent training.
WINDOW_SECONDS = 60.0
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# The method label's values: any other method a client makes up is "other", and every path
# no route matches is "unmatched", so no request can add a series of its own.
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})

blp = Blueprint("metrics", __name__)


class StoreCollector:
    """Gauges computed from the store (and the Redis broker's queue) when scraped."""

    def __init__(self, sessions, broker_url: str):
        self.sessions, self.broker_url = sessions, broker_url

    def collect(self):
        from prometheus_client.core import GaugeMetricFamily

        with self.sessions() as session:
            counts = dict(session.execute(
                select(Run.status, func.count()).group_by(Run.status)).all())
            epochs = session.scalar(select(func.coalesce(func.sum(Run.epochs_done), 0)))
            rate = samples_per_second(session)
        runs = GaugeMetricFamily("descent_runs", "Runs in the store by state.",
                                 labels=["state"])
        for state in RUN_STATES:
            runs.add_metric([state], counts.get(state, 0))
        yield runs
        yield GaugeMetricFamily("descent_queue_depth",
                                "Runs waiting to be trained (queued in the store).",
                                value=counts.get("queued", 0))
        length = broker_queue_length(self.broker_url)
        if length is not None:
            yield GaugeMetricFamily("descent_broker_queue_length",
                                    "Task messages waiting in the Redis broker's queue.",
                                    value=length)
        yield GaugeMetricFamily("descent_epochs_trained",
                                "Epochs trained, summed over the stored runs (epochs_done).",
                                value=int(epochs or 0))
        yield GaugeMetricFamily(
            "descent_training_samples_per_second",
            f"Training rows processed per second: for each run that recorded progress or "
            f"finished in the last {WINDOW_SECONDS:g} s, the epochs it recorded in its own "
            f"last {WINDOW_SECONDS:g} s of training times its training rows (dataset rows "
            f"minus the validation split), divided by those seconds; summed over the runs.",
            value=rate)


def samples_per_second(session) -> float:
    """The training throughput described in the descent_training_samples_per_second help."""
    since = utcnow() - timedelta(seconds=WINDOW_SECONDS)
    active = session.execute(
        select(Run.id, Run.spec, Dataset.n_samples).join(Dataset, Run.dataset_id == Dataset.id)
        .where(or_(Run.finished_at >= since,
                   (Run.status == "running") & (Run.heartbeat_at >= since)))).all()
    total = 0.0
    for run_id, spec, n_samples in active:
        last = session.scalar(select(func.max(Epoch.seconds)).where(Epoch.run_id == run_id))
        if not last or last <= 0:
            continue
        recent = session.scalar(select(func.count()).select_from(Epoch).where(
            Epoch.run_id == run_id, Epoch.epoch >= 1,
            Epoch.seconds > last - WINDOW_SECONDS))
        rows = n_samples * (1.0 - float((spec or {}).get("validation_split") or 0.0))
        total += recent * rows / min(WINDOW_SECONDS, last)
    return total


def broker_queue_length(broker_url: str):
    """LLEN of the default Celery queue when the broker is Redis; None otherwise or when
    Redis does not answer."""
    if not broker_url.startswith(("redis:", "rediss:")):
        return None
    import redis

    try:
        client = redis.Redis.from_url(broker_url, socket_connect_timeout=1, socket_timeout=2)
        try:
            return int(client.llen("celery"))
        finally:
            client.close()
    except redis.RedisError:
        return None


def endpoint_label() -> str:
    """The route's pattern (/runs/<int:run_id>, not one series per id), or "unmatched"."""
    return request.url_rule.rule if request.url_rule else "unmatched"


def method_label() -> str:
    """The request's method when it is a standard one, else "other"."""
    return request.method if request.method in METHODS else "other"


@blp.route("/metrics")
def metrics():
    """The Prometheus exposition of this app's registry."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    registry = current_app.extensions["descent"]["metrics"]["registry"]
    return Response(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def init_app(app) -> None:
    """Register /metrics, the store collector and the request-latency hooks on ``app``."""
    from prometheus_client import CollectorRegistry, Histogram

    state = app.extensions["descent"]
    registry = CollectorRegistry()
    latency = Histogram("descent_request_seconds", "API request latency by endpoint (the "
                        "route's pattern), method and status.",
                        ["endpoint", "method", "status"], buckets=LATENCY_BUCKETS,
                        registry=registry)
    registry.register(StoreCollector(state["sessions"], state["settings"].broker_url))
    state["metrics"] = {"registry": registry, "latency": latency}

    @app.before_request
    def _start_timer():
        g.metrics_started = time.perf_counter()

    def observe(status: int) -> None:
        started = g.pop("metrics_started", None)
        if started is not None:
            latency.labels(endpoint_label(), method_label(), str(status)).observe(
                time.perf_counter() - started)

    @app.after_request
    def _observe(response):
        observe(response.status_code)
        return response

    @app.teardown_request
    def _observe_crash(exc):
        if exc is not None:  # an unhandled exception skips after_request: Flask answers 500
            observe(500)

    app.register_blueprint(blp)
