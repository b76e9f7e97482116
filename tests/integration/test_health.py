"""/api/v1/health in front of real ``celery worker`` processes: the workers answering a ping
are named only to callers with a token (anyone gets their count). On the embedded broker
neither is known (it cannot broadcast a ping)."""

import pytest

from tests.eventually import eventually

pytestmark = pytest.mark.slow


def test_worker_names_only_with_a_token(backend, workers, api):
    pool = workers.start(1)
    anonymous = api.application.test_client()

    def health(client):
        response = client.get("/api/v1/health")
        assert response.status_code == 200, response.get_json()
        return response.get_json()

    if backend.name == "embedded":
        assert health(api)["workers"] is None and health(api)["worker_count"] is None
        assert "workers" not in health(anonymous)
        return
    # The probe is cached for a few seconds: the worker shows once a probe has seen it.
    names = eventually(lambda: health(api)["workers"], timeout=30)
    assert names == [pool.workers[0].name.replace("%h", names[0].split("@", 1)[1])]
    body = health(anonymous)
    assert body["worker_count"] == 1 and body["status"] == "ok"
    assert "workers" not in body and names[0] not in str(body)
