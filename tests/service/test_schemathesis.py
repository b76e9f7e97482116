"""Schemathesis against the API's own OpenAPI document, in process (WSGI, no network).

Every operation the document describes is tested (the schema is iterated, so endpoints added
later are covered without touching this file), as alice with a bearer token, on a database
holding a trained run, a sweep and an uploaded dataset so ids 1 lead somewhere. Each response
must not be a server error, must have a documented status code and content type, and must
match the documented schema.
"""

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from .conftest import API, submit, train_run

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
]


@pytest.fixture
def database_backend():
    """SQLite only: the document and the views are the same on PostgreSQL, and this is slow."""
    return "sqlite"


def load_schema():
    """The OpenAPI document as an app serves it (read from a throwaway app: the document
    does not depend on the database, and schemathesis needs it when tests are collected)."""
    from service.app import create_app
    from service.settings import Settings

    folder = Path(tempfile.mkdtemp(prefix="descent-openapi-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    app = create_app({"SETTINGS": Settings(database_url=f"sqlite:///{folder / 'unused.db'}",
                                           broker_url=f"filesystem://{folder / 'queue'}"),
                      "TESTING": True})
    return schemathesis.openapi.from_wsgi(f"{API}/openapi.json", app)


# (Loaded at collection, not through schemathesis.pytest.from_fixture: that path sets a node
# attribute pytest 9.2 no longer has. Each case is sent to the test's own app instead.)
schema = load_schema()


@pytest.fixture
def seeded_app(app, client, sessions):
    """The test's app, after storing a trained run (id 1), a queued one, a sweep and an
    uploaded dataset, so that ids 1 lead somewhere."""
    run = submit(client, epochs=5)
    train_run(sessions, run["id"])
    submit(client, epochs=5)
    response = client.post(f"{API}/sweeps", json={
        "base": {"dataset": "xor", "layers": [2, 2, 1], "epochs": 2},
        "grid": {"learning_rate": [0.1, 0.2]}})
    assert response.status_code == 202, response.get_json()
    response = client.post(f"{API}/datasets", json={
        "name": "and-gate", "X": [[0, 0], [0, 1], [1, 0], [1, 1]], "y": [0, 0, 0, 1]})
    assert response.status_code == 201, response.get_json()
    return app


@pytest.mark.slow
@schema.parametrize()
@settings(max_examples=25, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
def test_api_conforms_to_its_openapi_document(case, seeded_app, auth_headers):
    case.call_and_validate(app=seeded_app, headers=auth_headers, checks=CHECKS)
