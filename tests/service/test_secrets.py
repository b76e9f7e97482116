"""Secret hygiene: task messages are JSON holding only the run id; database and broker
passwords and API tokens never appear in error bodies or log lines."""

import base64
import dataclasses
import json
import logging

import pytest
import redis
from sqlalchemy.engine import make_url

from service.app import create_app
from service.queue import celery_config
from service.settings import Settings, redact_urls

from ..conftest import make_token
from .conftest import API, error_of

PG_PASSWORD = "pg-S3cret-pw"
REDIS_PASSWORD = "redis-S3cret-pw"


def with_password(url: str, password: str, username=None) -> str:
    parsed = make_url(url).set(password=password)
    if username is not None:
        parsed = parsed.set(username=username)
    return parsed.render_as_string(hide_password=False)


def test_celery_takes_and_sends_json_only():
    for broker in ("redis://127.0.0.1:6379/0", "filesystem://queue-folder"):
        config = celery_config(broker)
        assert config["task_serializer"] == "json"
        assert config["accept_content"] == ["json"]
        assert config["result_serializer"] == "json"


def test_redact_urls_hides_every_password():
    text = ("cannot connect to redis://default:p%40ss@h:6379/0 or "
            "postgresql+psycopg://descent:secret@db:5432/descent; sqlite:///x.db is fine")
    assert redact_urls(text) == ("cannot connect to redis://default:***@h:6379/0 or "
                                 "postgresql+psycopg://descent:***@db:5432/descent; "
                                 "sqlite:///x.db is fine")
    assert redact_urls("redis://h:6379/0") == "redis://h:6379/0"


def test_the_cli_describes_urls_without_passwords():
    from service.cli.output import describe_broker, describe_database

    assert PG_PASSWORD not in describe_database(
        f"postgresql+psycopg://u:{PG_PASSWORD}@db:5432/d")
    assert REDIS_PASSWORD not in describe_broker(f"redis://default:{REDIS_PASSWORD}@r:6379/0")


@pytest.mark.redis
def test_a_task_message_on_redis_is_json_holding_only_the_run_id(sqlite_url, redis_url):
    app = create_app({"SETTINGS": Settings(database_url=sqlite_url, broker_url=redis_url),
                      "TESTING": True})
    token = make_token(sqlite_url, "alice")
    try:
        response = app.test_client().post(
            f"{API}/runs", json={"dataset": "xor", "layers": [2, 4, 1], "tags": {"k": "v"},
                                 "name": "a name"},
            headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 202, response.get_json()
        run_id = response.get_json()["id"]
    finally:
        app.extensions["descent"]["engine"].dispose()
    client = redis.Redis.from_url(redis_url)
    # The last one sent (another test process may share this Redis database).
    raw = client.lindex("celery", 0)  # LPUSHed: the newest is first
    assert raw is not None
    message = json.loads(raw)  # the envelope is JSON...
    assert message["content-type"] == "application/json"
    assert message["content-encoding"] == "utf-8"
    assert message["headers"]["task"] == "workers.tasks.train_run"
    args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))  # ...and the body
    assert args == [run_id] and kwargs == {}
    text = raw.decode()
    for secret in (token, "alice", "a name", '"k"', "xor"):
        assert secret not in text, secret


@pytest.mark.postgres
def test_no_password_or_token_in_error_bodies_or_logs(postgres_url, caplog):
    """The API on a PostgreSQL URL with a password (a real connection) and a Redis URL with
    a password on a closed port: the submit is a 503, health says the broker is down, and
    neither the answers nor the log lines quote a password or the token."""
    database_url = with_password(postgres_url, PG_PASSWORD)
    broker_url = f"redis://default:{REDIS_PASSWORD}@127.0.0.1:1/0"
    token = make_token(database_url, "alice")
    headers = {"Authorization": f"Bearer {token}"}
    bodies = []
    caplog.set_level(logging.DEBUG)
    settings = Settings(database_url=database_url, broker_url=broker_url)
    app = create_app({"SETTINGS": settings})
    down = create_app({"SETTINGS": dataclasses.replace(
        settings, database_url=with_password(
            "postgresql+psycopg://postgres@127.0.0.1:1/none", PG_PASSWORD))})
    try:
        client = app.test_client()
        response = client.post(f"{API}/runs", json={"dataset": "xor", "layers": [2, 1]},
                               headers=headers)
        error = error_of(response, 503)
        assert error == {"code": "queue_unavailable", "fields": {},
                         "message": "the broker is unreachable; nothing was queued"}
        bodies.append(response.get_data(as_text=True))
        response = client.post(f"{API}/sweeps", headers=headers, json={
            "base": {"dataset": "xor", "layers": [2, 1]}, "grid": {"epochs": [1, 2]}})
        assert error_of(response, 503)["code"] == "queue_unavailable"
        bodies.append(response.get_data(as_text=True))
        response = client.get(f"{API}/health")
        assert response.status_code == 503 and response.get_json()["broker"] is False
        bodies.append(response.get_data(as_text=True))
        # The database down: a 500 (the token cannot be checked) and a degraded health.
        response = down.test_client().get(f"{API}/runs", headers=headers)
        assert error_of(response, 500)["code"] == "internal_server_error"
        bodies.append(response.get_data(as_text=True))
        response = down.test_client().get(f"{API}/health")
        assert response.status_code == 503 and response.get_json()["database"] is False
        bodies.append(response.get_data(as_text=True))
    finally:
        app.extensions["descent"]["engine"].dispose()
        down.extensions["descent"]["engine"].dispose()
    logged = "\n".join(f"{record.getMessage()} {record.exc_text or ''}"
                       for record in caplog.records)
    assert "broker is unreachable" in logged  # the cause is logged, redacted
    for secret in (PG_PASSWORD, REDIS_PASSWORD, token):
        for body in bodies:
            assert secret not in body
        assert secret not in logged
        assert secret not in caplog.text
