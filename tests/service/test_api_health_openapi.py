"""/api/v1/health and the OpenAPI document (with its browsable page)."""

import openapi_spec_validator
import pytest

from service.app import create_app
from service.settings import Settings

from service.queue.status import BrokerStatus
from tests.eventually import eventually

from ..conftest import make_token
from .conftest import API, error_of

# Every endpoint of API.md section 3 that exists, as (path in the document, method).
ENDPOINTS = [
    ("/api/v1/runs", "post"),
    ("/api/v1/runs", "get"),
    ("/api/v1/runs/{run_id}", "get"),
    ("/api/v1/runs/{run_id}/history", "get"),
    ("/api/v1/runs/{run_id}/params", "get"),
    ("/api/v1/runs/{run_id}/cancel", "post"),
    ("/api/v1/runs/{run_id}/predict", "post"),
    ("/api/v1/datasets", "post"),
    ("/api/v1/datasets", "get"),
    ("/api/v1/datasets/{ref}", "get"),
    ("/api/v1/health", "get"),
]


@pytest.fixture
def sqlite_client(sqlite_url, embedded_broker_url):
    """For what does not depend on the database: a client on SQLite only, sending a token
    of alice (made in that database, or in ``database_url``'s when it is a SQLite file)."""
    clients = []
    token = make_token(sqlite_url, "alice")

    def make(testing=True, **settings):
        settings = {"database_url": sqlite_url, "broker_url": embedded_broker_url, **settings}
        app = create_app({"SETTINGS": Settings(**settings), "TESTING": testing})
        clients.append(app)
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"
        return client

    yield make
    for app in clients:
        app.extensions["descent"]["engine"].dispose()


def test_health_on_the_embedded_broker(client):
    response = client.get(f"{API}/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["api"] is True and body["database"] is True and body["broker"] is True
    assert body["status"] == "ok"
    assert body["workers"] is None  # the filesystem broker cannot broadcast a ping


def test_anonymous_callers_get_the_count_not_the_names(app):
    response = app.test_client().get(f"{API}/health")
    assert response.status_code == 200
    body = response.get_json()
    assert "workers" not in body and body["worker_count"] is None  # embedded: unknown
    assert body["status"] == "ok"
    # a token that is not a live one is no error on health: an anonymous answer
    response = app.test_client().get(f"{API}/health",
                                     headers={"Authorization": "Bearer dsc_made-up"})
    assert response.status_code == 200 and "workers" not in response.get_json()


@pytest.fixture
def redis_health(make_client, redis_url, monkeypatch):
    """(client with alice's token, anonymous client, pings) of an app on the Redis broker
    (no worker running), counting the broadcast pings its real queue client sends, with
    its broker probe on a clock the test moves (``pings.clock.now``)."""
    client = make_client(broker_url=redis_url)
    app = client.application
    queue = app.extensions["descent"]["queue"]
    pings = Pings(queue.worker_names)
    monkeypatch.setattr(queue, "worker_names", pings)
    # (health makes this on first use; made here, with a clock the test controls)
    app.extensions["descent"]["broker_status"] = BrokerStatus(queue, clock=pings.clock)
    return client, app.test_client(), pings


class Pings:
    """Counts the calls of a queue client's worker_names (each one a broadcast ping that
    waits its whole 1 s timeout for replies) and passes them on."""

    def __init__(self, real):
        self.real, self.calls = real, 0
        self.clock = lambda: self.clock.now
        self.clock.now = 0.0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return self.real(*args, **kwargs)


@pytest.mark.redis
def test_health_on_redis_does_not_ping_on_every_call(redis_health):
    """20 health calls used to send 20 broadcast pings, holding an API thread 1 s each."""
    client, anonymous, pings = redis_health
    bodies = [(client if i % 2 else anonymous).get(f"{API}/health") for i in range(20)]
    assert {b.status_code for b in bodies} == {200}
    assert pings.calls == 1
    authenticated, alone = bodies[1].get_json(), bodies[0].get_json()
    assert authenticated["broker"] is True and authenticated["workers"] == []
    assert authenticated["worker_count"] == 0 and authenticated["status"] == "degraded"
    assert "workers" not in alone and alone["worker_count"] == 0
    # Older than its 5 s: answered at once from the last probe, one refresh in the background.
    pings.clock.now = 6.0
    for _ in range(20):
        assert client.get(f"{API}/health").status_code == 200
    eventually(lambda: pings.calls == 2)
    assert pings.calls == 2


def test_health_with_an_unreachable_broker(sqlite_client):
    response = sqlite_client(broker_url="redis://127.0.0.1:1/0").get(f"{API}/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["broker"] is False and body["database"] is True and body["api"] is True
    assert body["status"] == "degraded"


def test_health_with_an_unreachable_database(sqlite_client):
    client = sqlite_client(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")
    response = client.get(f"{API}/health")
    assert response.status_code == 503
    body = response.get_json()
    assert body["database"] is False and body["broker"] is True
    assert "workers" not in body  # the token could not be checked: an anonymous answer
    assert body["status"] == "degraded"


@pytest.fixture
def document(sqlite_client):
    response = sqlite_client().get(f"{API}/openapi.json")
    assert response.status_code == 200 and response.is_json
    return response.get_json()


def test_openapi_document_is_valid(document):
    openapi_spec_validator.validate(document)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "Descent"


def _resolve(document, node):
    while "$ref" in node:
        kind, name = node["$ref"].split("/")[-2:]
        node = document["components"][kind][name]
    return node


def test_openapi_lists_every_endpoint_with_schemas(document):
    paths = document["paths"]
    for path, method in ENDPOINTS:
        assert method in paths.get(path, {}), (path, method)
        operation = paths[path][method]
        assert operation.get("summary"), (path, method)
        responses = operation["responses"]
        success = [code for code in responses if code.startswith("2")]
        assert success, (path, method)
        for code in success:
            content = _resolve(document, responses[code])["content"]
            assert "schema" in content["application/json"], (path, method, code)
        if method == "post" and not path.endswith("/cancel"):
            body = operation["requestBody"]["content"]["application/json"]
            assert body["schema"], (path, method)
        # errors are documented with our error body (a degraded health check is a report);
        # there is no catch-all "default": each operation lists every status it answers
        assert "default" not in responses, (path, method)
        error_codes = [code for code in responses if code[0] in "45"]
        assert ("401" in error_codes) == (path != "/api/v1/health"), (path, method)
        for code in error_codes:
            schema = _resolve(document, responses[code])["content"]["application/json"]["schema"]
            expected = "Health" if (path, code) == ("/api/v1/health", "503") else "Error"
            assert schema == {"$ref": f"#/components/schemas/{expected}"}, (path, method, code)


def test_openapi_documents_every_route_the_app_serves(sqlite_client, document):
    client = sqlite_client()
    served = set()
    for rule in client.application.url_map.iter_rules():
        if not rule.rule.startswith(API) or rule.endpoint.startswith("api-docs"):
            continue
        path = rule.rule
        for argument in rule.arguments:
            path = path.replace(f"<int:{argument}>", f"{{{argument}}}")
            path = path.replace(f"<{argument}>", f"{{{argument}}}")
        for method in rule.methods - {"HEAD", "OPTIONS"}:
            served.add((path, method.lower()))
    documented = {(path, method) for path, operations in document["paths"].items()
                  for method in operations if method != "parameters"}
    assert served == documented
    assert set(ENDPOINTS) <= documented


def test_openapi_schemas_match_the_contract(document):
    schemas = document["components"]["schemas"]
    error = schemas["Error"]
    assert set(error["properties"]) == {"error"}
    detail = _resolve(document, error["properties"]["error"])
    assert set(detail["properties"]) == {"code", "message", "fields"}
    spec = schemas["RunSpec"]
    assert set(spec["required"]) == {"dataset", "layers"}
    assert set(spec["properties"]) == {
        "dataset", "layers", "activation", "output_activation", "loss", "learning_rate",
        "batch_mode", "batch_size", "epochs", "seed", "shuffle", "init", "dtype",
        "validation_split", "name", "tags", "optimizer", "momentum", "beta1", "beta2", "eps",
        "weight_decay", "clip_norm", "lr_schedule", "stop_on_plateau", "eval_every", "threads"}
    assert spec.get("additionalProperties") is False
    assert spec["properties"]["loss"]["enum"] == ["mse", "cross_entropy"]
    runs = document["paths"]["/api/v1/runs"]["get"]
    names = {p["name"] for p in runs["parameters"]}
    assert {"status", "dataset", "sweep_id", "order_by", "limit", "cursor",
            "learning_rate_min", "learning_rate_max", "final_error_min",
            "final_error_max"} <= names
    upload = document["paths"]["/api/v1/datasets"]["post"]["requestBody"]["content"]
    assert set(upload) == {"application/json", "multipart/form-data"}
    history = document["paths"]["/api/v1/runs/{run_id}/history"]["get"]["responses"]["200"]
    assert set(history["content"]) == {"application/json", "text/csv"}
    params = document["paths"]["/api/v1/runs/{run_id}/params"]["get"]["responses"]["200"]
    assert set(params["content"]) == {"application/json", "application/octet-stream"}


def test_docs_page(sqlite_client):
    client = sqlite_client()
    response = client.get(f"{API}/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "swagger" in page.lower() and "openapi.json" in page
    error_of(client.get(f"{API}/docs/nothing"), 404)


def test_unexpected_errors_are_json_500s(sqlite_client, sqlite_url):
    # the runs table is gone: the token is accepted, then the view's query fails
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE runs"))
    engine.dispose()
    client = sqlite_client(testing=False)
    error = error_of(client.get(f"{API}/runs"), 500)
    assert error["code"] == "internal_server_error"
    assert "runs" not in error["message"]  # no SQL or table names leak out
