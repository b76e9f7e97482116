"""A real worker on a PostgreSQL URL and a Redis URL that both carry a password: it trains a
run submitted with an API token, and nothing it prints (the startup banner included) quotes
either password or the token."""

import pytest
from sqlalchemy.engine import make_url

from service.settings import Settings
from tests.eventually import eventually

from ..conftest import make_token
from .conftest import Backend, WorkerPool

pytestmark = [pytest.mark.slow, pytest.mark.redis, pytest.mark.postgres]

PG_PASSWORD = "pg-Worker-S3cret"
REDIS_PASSWORD = "redis-Worker-S3cret"  # Redis's passwordless default user takes any


def test_the_worker_prints_no_password_and_no_token(postgres_url, redis_url, tmp_path,
                                                      monkeypatch):
    from service.app import create_app

    monkeypatch.chdir(tmp_path)
    database_url = make_url(postgres_url).set(password=PG_PASSWORD) \
        .render_as_string(hide_password=False)
    broker_url = redis_url.replace("redis://", f"redis://default:{REDIS_PASSWORD}@", 1)
    settings = Settings(database_url=database_url, broker_url=broker_url)
    backend = Backend("redis-postgres", settings, {"DESCENT_DATABASE_URL": database_url,
                                                   "DESCENT_BROKER_URL": broker_url},
                      tmp_path)
    token = make_token(database_url, "alice")
    app = create_app({"SETTINGS": settings, "TESTING": True})
    api = app.test_client()
    api.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
    workers = WorkerPool(backend)
    try:
        workers.start(1)
        response = api.post("/api/v1/runs", json={"dataset": "xor", "layers": [2, 4, 1],
                                                  "epochs": 20})
        assert response.status_code == 202, response.get_json()
        run_id = response.get_json()["id"]

        def succeeded() -> bool:
            if api.get(f"/api/v1/runs/{run_id}").get_json()["status"] == "succeeded":
                return True
            workers.assert_alive()
            return False

        eventually(succeeded, 60, interval=0.05, message=lambda: str(
            (api.get(f"/api/v1/runs/{run_id}").get_json(), workers.workers[0].log())))
    finally:
        workers.stop()
        app.extensions["descent"]["engine"].dispose()
    output = "\n".join(workers.workers[0].lines)
    assert "transport:" in output and "ready." in output  # the banner and the work are there
    assert "Task workers.tasks.train_run[" in output
    for secret in (PG_PASSWORD, REDIS_PASSWORD, token):
        assert secret not in output, secret
