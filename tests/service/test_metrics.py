"""GET /metrics: Prometheus' text format, parsed with prometheus_client's own parser, with
runs by state, queue depth, epochs trained, throughput and request latencies."""

from datetime import timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from service.store import RUN_STATES, Epoch, Run
from service.store.models import utcnow

from .conftest import API, submit, train_run


def scrape(client) -> dict:
    """{metric family name: family} of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.headers["Content-Type"].startswith("text/plain; version=")
    return {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}


def value(families, name, **labels) -> float:
    matches = [s.value for s in families[name].samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())]
    assert len(matches) == 1, (name, labels, families[name].samples)
    return matches[0]


def test_runs_by_state_queue_depth_and_epochs_trained(client, sessions):
    families = scrape(client)
    assert {value(families, "descent_runs", state=s) for s in RUN_STATES} == {0}
    assert value(families, "descent_queue_depth") == 0
    assert "descent_broker_queue_length" not in families  # the embedded broker
    runs = [submit(client, epochs=e) for e in (3, 4, 5, 6)]
    train_run(sessions, runs[0]["id"])
    train_run(sessions, runs[1]["id"], status="diverged")
    client.post(f"{API}/runs/{runs[2]['id']}/cancel")
    families = scrape(client)
    assert value(families, "descent_runs", state="queued") == 1
    assert value(families, "descent_runs", state="succeeded") == 1
    assert value(families, "descent_runs", state="diverged") == 1
    assert value(families, "descent_runs", state="cancelled") == 1
    assert value(families, "descent_runs", state="running") == 0
    assert value(families, "descent_queue_depth") == 1
    assert value(families, "descent_epochs_trained") == 3 + 4


def test_samples_per_second_counts_the_last_minute_of_recent_runs(client, sessions):
    families = scrape(client)
    assert value(families, "descent_training_samples_per_second") == 0
    run = submit(client, epochs=10)  # xor: 4 rows
    train_run(sessions, run["id"])
    with sessions() as session:
        # 10 epochs over 2 seconds of training
        session.execute(update(Epoch).where(Epoch.run_id == run["id"])
                        .values(seconds=Epoch.epoch * 0.2))
        session.commit()
    families = scrape(client)
    assert value(families, "descent_training_samples_per_second") == pytest.approx(10 * 4 / 2.0)
    assert "last 60 s" in families["descent_training_samples_per_second"].documentation
    with sessions() as session:  # finished long ago: no longer counted
        session.execute(update(Run).where(Run.id == run["id"])
                        .values(finished_at=utcnow() - timedelta(minutes=5)))
        session.commit()
    assert value(scrape(client), "descent_training_samples_per_second") == 0


def test_request_latencies_by_endpoint_and_status(client):
    submit(client)
    client.get(f"{API}/runs/999999")
    client.get(f"{API}/runs/999998")
    families = scrape(client)
    latency = families["descent_request_seconds"]
    assert latency.type == "histogram"
    counts = {(s.labels["endpoint"], s.labels["method"], s.labels["status"]): s.value
              for s in latency.samples if s.name == "descent_request_seconds_count"}
    assert counts[("/api/v1/runs", "POST", "202")] == 1
    assert counts[("/api/v1/runs/<int:run_id>", "GET", "404")] == 2
    assert all(s.value >= 0 for s in latency.samples if s.name.endswith("_sum"))


@pytest.mark.redis
def test_the_redis_broker_queue_length(make_client, redis_url):
    client = make_client(broker_url=redis_url)
    families = scrape(client)
    assert value(families, "descent_broker_queue_length") == 0
    submit(client)
    submit(client)
    families = scrape(client)
    assert value(families, "descent_broker_queue_length") == 2
    assert value(families, "descent_queue_depth") == 2


def test_metrics_needs_a_token(app):
    assert app.test_client().get("/metrics").status_code == 401


def request_series(client) -> set:
    """The label sets of descent_request_seconds in one scrape."""
    return {tuple(sorted(s.labels.items())) for s in scrape(client)["descent_request_seconds"]
            .samples if s.name == "descent_request_seconds_count"}


@pytest.mark.parametrize("with_token", [True, False])
def test_made_up_methods_and_paths_add_no_series(make_client, with_token):
    """50 made-up methods on made-up paths (and on a real one): one "other" method and one
    "unmatched" endpoint, so the number of series stays put (each was a new one before).
    (No failed-authentication limit: its 429s would be one more status, once.)"""
    client = make_client(auth_failure_limit=None)
    sender = client if with_token else client.application.test_client()
    sender.open("/warm-up", method="PWN")
    sender.open(f"{API}/runs", method="PWN")
    request_series(client)  # the scrape's own series
    before = request_series(client)
    for i in range(50):
        sender.open(f"/made-up/{i}", method=f"PWN{i}")
        sender.open(f"{API}/runs", method=f"X-{i}")
    after = request_series(client)
    assert after == before
    methods = {dict(labels)["method"] for labels in after}
    assert methods <= {"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS", "other"}
    assert "other" in methods
    assert {dict(labels)["endpoint"] for labels in after
            if dict(labels)["method"] == "other"} == {"unmatched"}
