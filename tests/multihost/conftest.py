"""Fixtures for tests across hosts: ``network`` (test hosts in network namespaces, see
tests/multihost/netns.py) and ``cluster`` (Descent's workers and API on those hosts, on a
fresh PostgreSQL database and Redis database of the test's own, reached over the hosts'
links, never loopback).

Tests here are marked ``multihost``; they skip with the reason where namespaces cannot be
made (not root, no iproute2), and fail instead under DESCENT_REQUIRE_SERVICES=1 (CI).
"""

import atexit
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import POSTGRES_ADMIN_URL, REDIS_URL, REQUIRE_SERVICES, make_token
from tests.integration.conftest import READY_TIMEOUT, _clean_env

from .netns import Host, Network, Process, unavailable

ROOT = Path(__file__).resolve().parents[2]
# The single-host fault tests' timings (tests/integration/test_faults.py): beats every
# 0.2 s, reapers every 0.5 s take back runs silent for 2 s.
FAST_REAPER = {"DESCENT_HEARTBEAT_SECONDS": "0.2", "DESCENT_STALE_SECONDS": "2",
               "DESCENT_REAP_SECONDS": "0.5", "DESCENT_UNSENT_SECONDS": "2"}


def _address(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname or "127.0.0.1", parts.port or default_port


SERVICES = {"postgres": _address(POSTGRES_ADMIN_URL, 5432), "redis": _address(REDIS_URL, 6379)}


def pytest_collection_modifyitems(items):
    for item in items:
        if Path(item.path).is_relative_to(Path(__file__).parent):
            item.add_marker(pytest.mark.multihost)


@pytest.fixture(scope="session")
def netns_available():
    """Skip (fail under DESCENT_REQUIRE_SERVICES=1) where namespaces cannot be made."""
    reason = unavailable()
    if reason:
        message = f"test hosts cannot be made: {reason}"
        if REQUIRE_SERVICES:
            pytest.fail(message + " (DESCENT_REQUIRE_SERVICES=1)", pytrace=False)
        pytest.skip(message)


@pytest.fixture
def network(netns_available):
    """A Network of the test's own: ``network.add_host(name)`` makes a host. Everything is
    removed after the test, whatever its outcome (and at exit, should the session be
    interrupted; a later session removes what a killed one left)."""
    net = Network(SERVICES)
    atexit.register(net.close)
    try:
        yield net
    finally:
        net.close()
        atexit.unregister(net.close)


class Fleet:
    """The worker processes of a cluster, as tests.integration's wait_for expects them."""

    def __init__(self):
        self.workers: list[Process] = []

    def dead(self) -> list[Process]:
        return [w for w in self.workers if not w.alive()]

    def assert_alive(self) -> None:
        dead = self.dead()
        if dead:
            pytest.fail("; ".join(f"worker {w.name} on {w.host.name} died (exit "
                                  f"{w.popen.returncode}):\n{w.log()}" for w in dead),
                        pytrace=False)

    def on(self, host: Host) -> Process:
        return next(w for w in self.workers if w.host is host)


class HttpApi:
    """requests against a real API server, answering as Flask's test client does (the
    ``get_json()`` the integration helpers read)."""

    def __init__(self, base: str, token: str):
        import requests

        self.base = base
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def _wrap(self, response):
        response.get_json = response.json
        return response

    def get(self, path, **kwargs):
        return self._wrap(self.session.get(self.base + path, timeout=30, **kwargs))

    def post(self, path, **kwargs):
        return self._wrap(self.session.post(self.base + path, timeout=30, **kwargs))

    def close(self) -> None:
        self.session.close()


class Cluster:
    """Descent on test hosts: PostgreSQL and Redis on the main host, workers (and an API
    server, if asked for) on hosts of ``network``, each reaching them at its own addresses.

    ``client`` is a Flask test client of the API in this process (the main host), as
    alice; ``fleet`` the workers started so far."""

    def __init__(self, network: Network, postgres_url: str, redis_url: str, folder: Path):
        from service.app import create_app
        from service.settings import Settings

        self.network, self.postgres_url, self.redis_url = network, postgres_url, redis_url
        self.folder = folder
        self.knobs = dict(FAST_REAPER)
        self.fleet = Fleet()
        self.token = make_token(postgres_url, "alice")
        self.app = create_app({"SETTINGS": Settings(database_url=postgres_url,
                                                    broker_url=redis_url), "TESTING": True})
        self.client = self.app.test_client()
        self.client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {self.token}"
        self.apis: list[HttpApi] = []

    def env(self, host: Host, **knobs) -> dict:
        """The environment of a Descent process on ``host``: the database and broker at
        the host's addresses for them, the cluster's DESCENT_* knobs, then ``knobs``."""
        return {**_clean_env(), "DESCENT_DATABASE_URL": host.url(self.postgres_url),
                "DESCENT_BROKER_URL": host.url(self.redis_url), **self.knobs,
                **{k: str(v) for k, v in knobs.items()}}

    def start_worker(self, host: Host, wait: bool = True, **knobs) -> Process:
        """`descent worker` (one training process) on ``host``, ready unless ``wait`` is
        False."""
        name = f"w-{uuid.uuid4().hex[:6]}@{host.name}"
        process = host.start([sys.executable, "-m", "service.cli", "worker", "--name", name,
                              "--", "--without-mingle", "--without-gossip"],
                             name=name, env=self.env(host, **knobs), cwd=self.folder)
        self.fleet.workers.append(process)
        if wait:
            process.wait_for(" ready.", READY_TIMEOUT)
        return process

    def start_workers(self, hosts, **knobs) -> list[Process]:
        """A worker on each of ``hosts``, started together, once all are ready."""
        started = [self.start_worker(host, wait=False, **knobs) for host in hosts]
        for process in started:
            process.wait_for(" ready.", READY_TIMEOUT)
        return started

    def start_api(self, host: Host, port: int = 8000, **knobs) -> HttpApi:
        """`descent api` on ``host`` listening on its address; a client of it as alice."""
        process = host.start([sys.executable, "-m", "service.cli", "api", "--host",
                              host.address, "--port", str(port), "--threads", "4"],
                             name="api", env=self.env(host, **knobs), cwd=self.folder)
        process.wait_for("Descent API listening", READY_TIMEOUT)
        api = HttpApi(f"http://{host.address}:{port}", self.token)
        self.apis.append(api)
        return api

    def close(self) -> None:
        for api in self.apis:
            api.close()
        for process in self.fleet.workers:
            process.stop(grace=1.0)
        self.app.extensions["descent"]["engine"].dispose()


@pytest.fixture
def cluster(network, postgres_url, redis_url, tmp_path, monkeypatch):
    """A Cluster on ``network`` with a fresh PostgreSQL database and Redis database."""
    monkeypatch.chdir(tmp_path)
    cluster = Cluster(network, postgres_url, redis_url, tmp_path)
    try:
        yield cluster
    finally:
        cluster.close()

