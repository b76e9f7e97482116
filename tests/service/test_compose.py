"""docker-compose.yml and the Dockerfile, checked without a Docker engine: every `descent`
command they run exists in the CLI with those options, every DESCENT_* variable they set is
one service.settings reads, and the services depend on each other as the README says."""

import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest
import yaml
from click.testing import CliRunner

from service.cli import cli
from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def as_argv(command) -> list[str]:
    """A compose command or healthcheck test (string or list) as an argv."""
    if command is None:
        return []
    if isinstance(command, str):
        return shlex.split(command)
    if command and command[0] in ("CMD", "CMD-SHELL"):
        return shlex.split(command[1]) if command[0] == "CMD-SHELL" else list(command[1:])
    return list(command)


def descent_commands() -> list[tuple[str, list[str]]]:
    """(where, argv after `descent`) for every descent command the compose file runs."""
    found = []
    for name, service in SERVICES.items():
        for where, command in (("command", service.get("command")),
                               ("entrypoint", service.get("entrypoint")),
                               ("healthcheck", (service.get("healthcheck") or {}).get("test"))):
            argv = as_argv(command)
            if argv and argv[0] == "descent":
                found.append((f"{name} {where}", argv[1:]))
    return found


def environment(service: dict) -> dict:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def descent_variables() -> list[tuple[str, str, str]]:
    return [(name, key, value) for name, service in SERVICES.items()
            for key, value in environment(service).items() if key.startswith("DESCENT_")]


# ${NAME:?message}: compose takes the value from the environment or .env, and refuses to
# start without it.
REQUIRED = re.compile(r"\$\{(\w+):\?[^}]+\}")


def interpolated(value: str, sample: str = "s3cret-sample-key") -> str:
    """``value`` as compose would pass it with every required variable set to ``sample``."""
    return REQUIRED.sub(sample, value)


def resolve(args: list[str]):
    """(command, remaining args, name path) for `descent ARGS`."""
    command, path = cli, []
    while isinstance(command, click.Group):
        with click.Context(command) as ctx:
            found = command.get_command(ctx, args[0]) if args else None
        assert found is not None, f"no command {args[:1]} in {path}"
        path.append(args[0])
        command, args = found, args[1:]
    return command, args, path


def test_the_compose_file_runs_the_whole_service():
    assert {"redis", "postgres", "migrate", "api"} <= set(SERVICES)
    workers = [name for name, service in SERVICES.items()
               if as_argv(service.get("command"))[:2] == ["descent", "worker"]]
    assert len(workers) >= 2, workers
    assert as_argv(SERVICES["migrate"]["command"]) == ["descent", "db", "upgrade"]
    assert as_argv(SERVICES["api"]["command"])[:2] == ["descent", "api"]
    assert "0.0.0.0" in as_argv(SERVICES["api"]["command"])


@pytest.mark.parametrize("where,args", descent_commands(),
                         ids=[where for where, _ in descent_commands()])
def test_every_descent_command_exists_with_its_options(where, args):
    command, rest, path = resolve(list(args))
    # Parsing the arguments checks every option and value without running the command.
    command.make_context(" ".join(["descent", *path]), list(rest))
    result = CliRunner().invoke(cli, [*path, "--help"])
    assert result.exit_code == 0, f"{where}: {result.output}"


def test_the_check_itself_catches_a_wrong_command():
    with pytest.raises(AssertionError):
        resolve(["db", "migrate"])
    command, rest, _ = resolve(["api", "--listen", "0.0.0.0"])
    with pytest.raises(click.UsageError):
        command.make_context("descent api", rest)


SETTING_OF = {"DESCENT_DATABASE_URL": "database_url", "DESCENT_BROKER_URL": "broker_url",
              "DESCENT_API_URL": "api_url", "DESCENT_SECRET_KEY": "secret_key"}
INT_SETTING_OF = {"DESCENT_TRUSTED_PROXIES": "trusted_proxies"}


@pytest.mark.parametrize("service,key,value", descent_variables(),
                         ids=[f"{service}-{key}" for service, key, _ in descent_variables()])
def test_every_descent_variable_is_read_by_the_settings(service, key, value):
    value = interpolated(value)
    settings = Settings.from_env({key: value})
    if key in SETTING_OF:
        assert getattr(settings, SETTING_OF[key]) == value
    elif key in INT_SETTING_OF:
        assert getattr(settings, INT_SETTING_OF[key]) == int(value)
    else:
        match = re.fullmatch(r"DESCENT_(MAX_\w+)", key)
        assert match, f"{service}: {key} is not a setting service.settings reads"
        assert getattr(settings.limits, match.group(1).lower()) == int(value)
    assert settings != Settings.from_env({}), f"{service}: {key}={value} changed nothing"


def test_the_stack_uses_postgresql_and_redis():
    for name in ("migrate", "api", *[n for n in SERVICES if n.startswith("worker")]):
        env = environment(SERVICES[name])
        assert env["DESCENT_DATABASE_URL"].startswith("postgresql+psycopg://"), name
        assert env["DESCENT_BROKER_URL"] == "redis://redis:6379/0", name
        settings = Settings.from_env(env)
        assert "@postgres:5432/" in settings.database_url


def test_migrations_run_once_before_the_api_and_the_workers():
    for name, service in SERVICES.items():
        # flower needs the broker only; the proxy waits for a healthy API instead
        if name in ("redis", "postgres", "migrate", "flower", "proxy"):
            continue
        depends = service.get("depends_on") or {}
        assert depends.get("migrate", {}).get("condition") == \
            "service_completed_successfully", name
        for server in ("redis", "postgres"):
            assert depends.get(server, {}).get("condition") == "service_healthy", (name, server)
    assert SERVICES["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert SERVICES["migrate"].get("restart") == "no"


def test_servers_and_long_running_services_have_healthchecks():
    for name in ("redis", "postgres", "api", "proxy",
                 *[n for n in SERVICES if n.startswith("worker")]):
        test = as_argv(SERVICES[name].get("healthcheck", {}).get("test"))
        assert test, f"{name} has no healthcheck"
    worker_check = as_argv(SERVICES["worker-1"]["healthcheck"]["test"])
    assert worker_check[:3] == ["celery", "-A", "workers.celery_app"]
    # The app the healthcheck names (found, not imported: importing configures a broker).
    spec = importlib.util.find_spec("workers.celery_app")
    assert spec is not None and "app = Celery(" in Path(spec.origin).read_text()


def test_the_dockerfile_copies_what_exists_and_installs_the_project():
    dockerfile = (ROOT / "Dockerfile").read_text()
    copies = re.findall(r"^COPY\s+(.+)$", dockerfile, flags=re.MULTILINE)
    assert copies
    for line in copies:
        *sources, _target = line.split()
        for source in sources:
            assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"
    assert re.search(r"pip install /src", dockerfile)
    packaged = {"kernels", "service", "workers", "migrations"}
    copied = {Path(source).name for line in copies for source in line.split()[:-1]}
    assert packaged <= copied, packaged - copied
    assert "build" in (SERVICES["api"]) or "image" in SERVICES["api"]


def test_flower_watches_the_workers_on_their_broker():
    flower = SERVICES["flower"]
    argv = as_argv(flower["command"])
    assert argv[0] == "celery" and "flower" in argv
    broker = environment(SERVICES["worker-1"])["DESCENT_BROKER_URL"]
    assert f"--broker={broker}" in argv[:argv.index("flower")]  # a celery option, before it
    assert "--port=5555" in argv
    assert "127.0.0.1:5555:5555" in flower["ports"]
    assert flower["depends_on"]["redis"]["condition"] == "service_healthy"
    assert "5555/healthcheck" in " ".join(as_argv(flower["healthcheck"]["test"]))
    assert flower["image"].startswith("mher/flower:")


# ------------------------------------------------------------- several API servers, one key


def test_api_replicas_share_a_secret_key_from_the_environment():
    """Two or more API replicas, all signing cookies with one DESCENT_SECRET_KEY that comes
    from the environment (.env), never written in the file: compose refuses to start
    without it, rather than let each replica generate a key of its own."""
    api = SERVICES["api"]
    assert api["deploy"]["replicas"] >= 2
    value = environment(api)["DESCENT_SECRET_KEY"]
    match = REQUIRED.fullmatch(value)
    assert match and match.group(1) == "DESCENT_SECRET_KEY", value
    assert Settings.from_env({"DESCENT_SECRET_KEY": interpolated(value)}).secret_key
    for name, service in SERVICES.items():  # nothing else carries a key of its own
        if name != "api":
            assert "DESCENT_SECRET_KEY" not in environment(service), name
    assert "ports" not in api  # replicas are reached through the proxy only
    assert REQUIRED.fullmatch(interpolated(value)) is None


def test_the_proxy_fronts_every_replica_and_the_api_trusts_it_once():
    proxy = SERVICES["proxy"]
    assert "127.0.0.1:8000:8000" in proxy["ports"]
    assert proxy["depends_on"]["api"]["condition"] == "service_healthy"
    source, target, *_ = proxy["volumes"][0].split(":")
    config = (ROOT / source).read_text()
    assert target == "/etc/nginx/conf.d/default.conf"
    assert re.search(r"server\s+api:8000\b", config)  # every replica behind one name
    assert "listen 8000;" in config
    assert "X-Forwarded-For $proxy_add_x_forwarded_for" in config
    # One proxy appends one X-Forwarded-For entry: the API must trust exactly one.
    assert Settings.from_env(environment(SERVICES["api"])).trusted_proxies == 1
    # Bodies: nginx refuses what Descent would refuse, no more, no less.
    limits = Settings().limits
    assert f"client_max_body_size {limits.max_json_bytes // 2**20}m;" in config
    assert f"client_max_body_size {limits.max_upload_bytes // 2**20}m;" in config
    assert "/api/v1/health" in " ".join(as_argv(proxy["healthcheck"]["test"]))


def test_the_api_is_healthy_only_when_it_can_take_runs():
    """The API's healthcheck runs `descent health`, which exits 1 unless GET /api/v1/health
    says the database and the broker are reachable (tests/integration/test_health.py), so
    the proxy starts, and compose routes, only to replicas that can take runs."""
    test = as_argv(SERVICES["api"]["healthcheck"]["test"])
    assert test[:2] == ["descent", "health"]
    assert test[test.index("--api-url") + 1] == "http://127.0.0.1:8000"
    port = as_argv(SERVICES["api"]["command"])
    assert port[port.index("--port") + 1] == "8000"


def test_workers_start_once_their_servers_are_healthy_and_migrated():
    workers = [n for n in SERVICES if n.startswith("worker")]
    assert workers
    for name in workers:
        depends = SERVICES[name]["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully"
        assert depends["redis"]["condition"] == "service_healthy"
        assert depends["postgres"]["condition"] == "service_healthy"
        # a deploy's SIGTERM lets running runs finish first
        assert int(str(SERVICES[name]["stop_grace_period"]).rstrip("s")) >= 30


def test_redis_keeps_the_queue_on_a_volume():
    redis = SERVICES["redis"]
    assert as_argv(redis["command"])[-2:] == ["--appendonly", "yes"]
    assert any(volume.endswith(":/data") for volume in redis["volumes"])
