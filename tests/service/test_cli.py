"""The `descent` command line: help texts, `db upgrade`, the client commands against a real
API server (`descent api` in a subprocess), and `descent up` end to end with its shutdown."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import click
import pytest
import requests
from click.testing import CliRunner

from service.cli import cli

from ..conftest import make_token
from ..eventually import eventually

ROOT = Path(__file__).resolve().parents[2]
XOR_SPEC = ROOT / "examples" / "xor.json"
FINAL = {"succeeded", "failed", "diverged", "cancelled", "stopped_early"}


def subcommand(group: click.Group, name: str) -> click.Command:
    """A group's command by name (the top-level group imports its commands on demand)."""
    with click.Context(group) as ctx:
        command = group.get_command(ctx, name)
    assert command is not None, f"no command {name}"
    return command


def command_paths(group=cli, prefix=()):
    """Every command of the CLI as a tuple of names, groups included."""
    paths = []
    with click.Context(group) as ctx:
        names = group.list_commands(ctx)
    for name in names:
        command = subcommand(group, name)
        paths.append((*prefix, name))
        if isinstance(command, click.Group):
            paths += command_paths(command, (*prefix, name))
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# {base URL: API token} of the `descent api` servers the tests started (see start_api).
TOKENS: dict[str, str] = {}


def auth(base_url: str) -> dict:
    """Headers carrying the token of the API at ``base_url``."""
    return {"Authorization": f"Bearer {TOKENS[base_url]}"}


def invoke(args, env=None, input=None):
    """Run the CLI in-process; COLUMNS keeps rich tables whole. Talking to an API that
    start_api started (DESCENT_API_URL or --api-url), it sends that API's token."""
    env = {"COLUMNS": "250", **(env or {})}
    urls = [env.get("DESCENT_API_URL")] + [args[i + 1] for i, arg in enumerate(args[:-1])
                                          if arg == "--api-url"]
    token = next((TOKENS[url] for url in urls if url in TOKENS), None)
    if token is not None and "DESCENT_TOKEN" not in env:
        env["DESCENT_TOKEN"] = token
    return CliRunner().invoke(cli, args, env=env, input=input)


def descent_argv():
    """The installed console script if there is one beside this Python, else -m."""
    script = Path(sys.executable).parent / "descent"
    return [str(script)] if script.exists() else [sys.executable, "-m", "service.cli"]


def clean_env(**extra) -> dict:
    """This environment without any DESCENT_* setting (embedded defaults), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def wait_for_health(base_url: str, process: subprocess.Popen, log: Path, timeout: float):
    """The health body of the API at ``base_url`` once it answers; fails with the log if
    ``process`` exits first or nothing answers within ``timeout`` seconds."""
    def health():
        if process.poll() is not None:
            pytest.fail(f"exited with {process.returncode}:\n{log.read_text()}")
        try:
            return requests.get(f"{base_url}/api/v1/health", timeout=1).json()
        except requests.RequestException:
            return None

    return eventually(health, timeout=timeout, interval=0.1,
                      message=lambda: f"no answer at {base_url}:\n{log.read_text()}")


def final_run(base_url: str, run_id: int, headers: dict, log: Path, timeout: float) -> dict:
    """Run ``run_id`` once it has ended (a cold numba cache compiles first); fails with the
    log after ``timeout`` seconds."""
    def ended():
        run = requests.get(f"{base_url}/api/v1/runs/{run_id}", timeout=10,
                           headers=headers).json()
        return run if run["status"] in FINAL else None

    return eventually(ended, timeout=timeout, interval=0.2,
                      message=lambda: f"run {run_id} did not end:\n{log.read_text()}")


def descendants(pid: int) -> dict[int, str]:
    """{pid: command line} of every live process below ``pid`` (from /proc)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = {}, [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            try:
                found[child] = (Path(f"/proc/{child}/cmdline").read_bytes()
                                .replace(b"\0", b" ").decode())
            except OSError:
                continue
            todo.append(child)
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live (not zombie) process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


# --- help texts -------------------------------------------------------------------------

@pytest.mark.parametrize("path", command_paths(), ids=" ".join)
def test_every_command_has_help(path):
    result = invoke([*path, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: descent {' '.join(path)}" in result.output
    command = cli
    for name in path:
        command = subcommand(command, name)
    assert (command.help or "").strip(), f"descent {' '.join(path)} has no help text"


def test_top_level_help_lists_the_commands_of_api_md():
    result = invoke(["--help"])
    assert result.exit_code == 0
    names = {" ".join(path) for path in command_paths()}
    assert {"up", "api", "worker", "db upgrade", "submit", "runs", "show"} <= names
    for name in ("up", "api", "worker", "db", "submit", "runs", "show"):
        assert f"  {name} " in result.output


def test_help_documents_the_main_options():
    assert "--workers" in invoke(["up", "--help"]).output
    assert "--port" in invoke(["up", "--help"]).output
    assert "--wait" in invoke(["submit", "--help"]).output
    assert "--concurrency" in invoke(["worker", "--help"]).output
    runs_help = invoke(["runs", "--help"]).output
    for option in ("--status", "--dataset", "--sweep", "--tag", "--order-by", "--limit", "--all"):
        assert option in runs_help


# --- db upgrade -------------------------------------------------------------------------

def test_db_upgrade_creates_the_tables(tmp_path):
    from sqlalchemy import create_engine, inspect

    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    result = invoke(["db", "upgrade"], env={"DESCENT_DATABASE_URL": url})
    assert result.exit_code == 0, result.output
    assert "revision" in result.output and str(tmp_path) in result.output
    engine = create_engine(url)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert {"runs", "epochs", "params", "datasets", "alembic_version"} <= tables
    again = invoke(["db", "upgrade"], env={"DESCENT_DATABASE_URL": url})
    assert again.exit_code == 0 and again.output == result.output


def test_db_upgrade_reports_an_unreachable_database():
    url = f"postgresql+psycopg://descent:secret@127.0.0.1:{free_port()}/descent"
    result = invoke(["db", "upgrade"], env={"DESCENT_DATABASE_URL": url})
    assert result.exit_code == 1
    assert "cannot reach the database" in result.output
    assert "secret" not in result.output


# --- client commands without a server ---------------------------------------------------

def test_submit_reports_an_unreachable_api():
    result = invoke(["submit", str(XOR_SPEC)],
                    env={"DESCENT_API_URL": f"http://127.0.0.1:{free_port()}"})
    assert result.exit_code == 1
    assert "cannot reach the Descent API" in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("args", [["runs"], ["show", "1"], ["cancel", "1"], ["health"]])
def test_client_commands_report_an_unreachable_api(args):
    result = invoke([*args, "--api-url", f"http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1
    assert "cannot reach the Descent API" in result.output


def test_submit_rejects_a_file_that_is_not_a_spec(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    result = invoke(["submit", str(broken)])
    assert result.exit_code == 2 and "not valid JSON" in result.output
    listed = tmp_path / "list.json"
    listed.write_text("[1, 2]")
    result = invoke(["submit", str(listed)])
    assert result.exit_code == 2 and "JSON object" in result.output


def test_the_example_spec_is_valid():
    from service.runspec import RunSpecSchema

    RunSpecSchema().load(json.loads(XOR_SPEC.read_text()))


# --- client commands against `descent api` ----------------------------------------------

def start_api(folder: Path, **env) -> tuple[subprocess.Popen, str, Path]:
    """`descent api` as a real subprocess in ``folder``: (process, base URL, log file)."""
    port = free_port()
    log = folder / "api.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen([*descent_argv(), "api", "--port", str(port)], cwd=folder,
                                   env=clean_env(**env), stdout=log_file,
                                   stderr=subprocess.STDOUT)
    base_url = f"http://127.0.0.1:{port}"
    wait_for_health(base_url, process, log, timeout=45)
    TOKENS[base_url] = make_token(env["DESCENT_DATABASE_URL"], "alice")
    return process, base_url, log


def stop(process: subprocess.Popen, log: Path, within: float = 20) -> None:
    """SIGTERM ``process``; it must exit 0 within ``within`` seconds."""
    process.send_signal(signal.SIGTERM)
    try:
        code = process.wait(within)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"still running {within} s after SIGTERM:\n{log.read_text()}")
    assert code == 0, log.read_text()


def service_env(folder: Path) -> dict:
    """A migrated SQLite file and a queue folder of their own, in ``folder``."""
    import migrations

    database_url = f"sqlite:///{folder / 'descent.db'}"
    migrations.upgrade(database_url)
    return {"DESCENT_DATABASE_URL": database_url,
            "DESCENT_BROKER_URL": f"filesystem://{folder / 'queue'}"}


@pytest.fixture(scope="module")
def live_api(tmp_path_factory):
    """`descent api` on a migrated SQLite file and a queue folder, with no worker: runs
    stay queued."""
    folder = tmp_path_factory.mktemp("live-api")
    process, base_url, log = start_api(folder, **service_env(folder))
    try:
        yield base_url
    finally:
        stop(process, log, within=15)
    assert "listening on http://127.0.0.1" in log.read_text()


def submit_ok(base_url, *args) -> int:
    result = invoke(["submit", *args], env={"DESCENT_API_URL": base_url})
    assert result.exit_code == 0, result.output
    assert result.output.startswith("submitted run ")
    return int(result.output.split()[2])


@pytest.mark.slow
def test_submit_prints_the_run_id(live_api):
    run_id = submit_ok(live_api, str(XOR_SPEC))
    run = requests.get(f"{live_api}/api/v1/runs/{run_id}", headers=auth(live_api)).json()
    assert run["status"] == "queued"
    assert run["spec"]["layers"] == [2, 8, 1] and run["name"] == "xor 2-8-1"


@pytest.mark.slow
def test_submit_overrides_fields_and_reads_stdin(live_api):
    run_id = submit_ok(live_api, str(XOR_SPEC), "-s", "epochs=7", "--set", "layers=[2, 3, 1]",
                       "-s", "name=tiny", "-s", "activation=tanh")
    spec = requests.get(f"{live_api}/api/v1/runs/{run_id}",
                        headers=auth(live_api)).json()["spec"]
    assert (spec["epochs"], spec["layers"], spec["name"], spec["activation"]) == \
        (7, [2, 3, 1], "tiny", "tanh")
    result = invoke(["submit", "-", "--api-url", live_api],
                    input=json.dumps({"dataset": "xor", "layers": [2, 2, 1]}))
    assert result.exit_code == 0 and "submitted run" in result.output


@pytest.mark.slow
def test_submit_names_each_bad_field_and_exits_2(live_api, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"dataset": "xor", "layers": [2, 1], "learning_rate": -1,
                               "bogus": 1}))
    result = invoke(["submit", str(bad)], env={"DESCENT_API_URL": live_api})
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert any(line.strip().startswith("learning_rate:") for line in lines), result.output
    assert any(line.strip().startswith("bogus:") for line in lines), result.output
    assert "Traceback" not in result.output

    wrong_width = tmp_path / "wide.json"
    wrong_width.write_text(json.dumps({"dataset": "xor", "layers": [3, 1]}))
    result = invoke(["submit", str(wrong_width), "--wait"], env={"DESCENT_API_URL": live_api})
    assert result.exit_code == 2
    assert any(line.strip().startswith("layers:") and "features" in line
               for line in result.output.splitlines()), result.output


@pytest.mark.slow
def test_runs_table_and_filters(live_api):
    group = uuid.uuid4().hex[:8]
    first = submit_ok(live_api, str(XOR_SPEC), "-s", f"tags={json.dumps({'group': group})}",
                      "-s", "name=first-of-group")
    second = submit_ok(live_api, str(XOR_SPEC), "-s",
                       f"tags={json.dumps({'group': group, 'n': '2'})}", "-s", "learning_rate=0.25")
    env = {"DESCENT_API_URL": live_api}

    table = invoke(["runs", "--tag", f"group={group}"], env=env)
    assert table.exit_code == 0, table.output
    header = table.output.splitlines()[0]
    for column in ("id", "name", "status", "dataset", "layers", "lr", "batch", "epochs",
                   "final error", "best error", "created"):
        assert column in header
    rows = [line.split() for line in table.output.splitlines()[2:] if line.strip()]
    assert [int(row[0]) for row in rows] == [second, first]  # newest first
    assert "first-of-group" in table.output and "queued" in table.output
    assert "2-8-1" in table.output and "0.25" in table.output and "0/3000" in table.output

    def ids(*args):
        result = invoke(["runs", "--json", "--tag", f"group={group}", *args], env=env)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.output.splitlines()]

    assert ids("--tag", "n=2") == [second]
    assert ids("--order-by", "id") == [first, second]
    assert ids("--order-by", "learning_rate") == [second, first]
    assert ids("--status", "queued", "--dataset", "xor") == [second, first]
    assert ids("--status", "succeeded,failed") == []
    assert ids("--dataset", "moons") == []
    assert ids("--filter", "learning_rate_max=1") == [second]
    assert ids("--sweep", "12345") == []
    assert invoke(["runs", "--status", "succeeded", "--tag", f"group={group}"],
                  env=env).output.strip() == "No runs match."

    bad = invoke(["runs", "--status", "bogus"], env=env)
    assert bad.exit_code == 2 and "status" in bad.output
    bad = invoke(["runs", "--tag", "nonsense"], env=env)
    assert bad.exit_code == 2 and "KEY=VALUE" in bad.output


@pytest.mark.slow
def test_runs_limit_and_all(live_api):
    group = uuid.uuid4().hex[:8]
    submitted = [submit_ok(live_api, str(XOR_SPEC), "-s",
                           f"tags={json.dumps({'page': group})}") for _ in range(3)]
    env = {"DESCENT_API_URL": live_api}
    limited = invoke(["runs", "--tag", f"page={group}", "--limit", "2"], env=env)
    assert limited.exit_code == 0
    assert "more may match" in limited.output
    limited_json = invoke(["runs", "--json", "--tag", f"page={group}", "--limit", "2"], env=env)
    assert [json.loads(line)["id"] for line in limited_json.output.splitlines()] == \
        submitted[::-1][:2]
    everything = invoke(["runs", "--json", "--all", "--limit", "1", "--tag", f"page={group}"],
                        env=env)
    assert sorted(json.loads(line)["id"] for line in everything.output.splitlines()) == submitted


@pytest.mark.slow
def test_runs_where_and_order_by_any_field(live_api):
    group = uuid.uuid4().hex[:8]
    tags = f"tags={json.dumps({'w': group})}"
    slow = submit_ok(live_api, str(XOR_SPEC), "-s", tags, "-s", "learning_rate=0.01")
    fast = submit_ok(live_api, str(XOR_SPEC), "-s", tags, "-s", "learning_rate=2")
    other = submit_ok(live_api, str(XOR_SPEC), "-s", tags, "-s", "learning_rate=0.5",
                      "-s", "seed=7")
    env = {"DESCENT_API_URL": live_api}

    def ids(*args):
        result = invoke(["runs", "--json", "--tag", f"w={group}", *args], env=env)
        assert result.exit_code == 0, result.output
        return [json.loads(line)["id"] for line in result.output.splitlines()]

    assert ids("--where", "learning_rate < 0.1 or learning_rate > 1") == [fast, slow]
    assert ids("--where", "not (learning_rate < 0.1 or learning_rate > 1)") == [other]
    assert ids("--where", f'tag.w = "{group}" and seed = 7') == [other]
    assert ids("--order-by", "-seed") == [other, fast, slow]
    assert ids("--order-by", "learning_rate", "--where", "status = queued") == [
        slow, other, fast]
    bad = invoke(["runs", "--where", "learning_rate >> 1"], env=env)
    assert bad.exit_code == 2
    assert "where" in bad.output and "at character 15" in bad.output, bad.output
    bad = invoke(["runs", "--order-by", "colour"], env=env)
    assert bad.exit_code == 2 and "order_by" in bad.output, bad.output


@pytest.mark.slow
def test_show_a_run_and_a_missing_one(live_api):
    run_id = submit_ok(live_api, str(XOR_SPEC))
    result = invoke(["show", str(run_id)], env={"DESCENT_API_URL": live_api})
    assert result.exit_code == 0, result.output
    for text in ("queued", "xor", "2-8-1", '"learning_rate": 2.0',
                 '"layers": [2, 8, 1]', "No history yet."):
        assert text in result.output
    assert result.output.split()[:2] == ["run", str(run_id)]
    assert re.search(r"^optimizer +sgd *$", result.output, re.MULTILINE), result.output
    as_json = json.loads(invoke(["show", str(run_id), "--json"],
                                env={"DESCENT_API_URL": live_api}).output)
    assert as_json["id"] == run_id and as_json["history"] == []

    missing = invoke(["show", "987654"], env={"DESCENT_API_URL": live_api})
    assert missing.exit_code == 1
    assert "run 987654 does not exist" in missing.output


@pytest.mark.slow
def test_cancel_and_health(live_api):
    run_id = submit_ok(live_api, str(XOR_SPEC))
    result = invoke(["cancel", str(run_id), "--api-url", live_api])
    assert result.exit_code == 0, result.output
    run = requests.get(f"{live_api}/api/v1/runs/{run_id}", headers=auth(live_api)).json()
    assert run["status"] == "cancelled"
    again = invoke(["cancel", str(run_id), "--api-url", live_api])
    assert again.exit_code == 1 and "cancelled" in again.output
    health = invoke(["health", "--api-url", live_api])
    assert health.exit_code == 0, health.output
    assert "database  ok" in health.output and "broker    ok" in health.output


# --- descent worker ---------------------------------------------------------------------

@pytest.mark.slow
def test_worker_trains_what_the_api_queues_and_stops_on_sigterm(tmp_path):
    """`descent api` and `descent worker` as separate processes (the scale-out layout): the
    worker replaces the command (exec: Celery's worker, started by workers.start), trains a
    queued run and exits 0 on SIGTERM."""
    env = service_env(tmp_path)
    api_process, base_url, api_log = start_api(tmp_path, **env)
    worker_log = tmp_path / "worker.log"
    try:
        run_id = submit_ok(base_url, str(XOR_SPEC), "-s", "epochs=40")
        with open(worker_log, "w") as log_file:
            worker = subprocess.Popen([*descent_argv(), "worker", "--concurrency", "1",
                                       "--loglevel", "warning"], cwd=tmp_path,
                                      env=clean_env(**env), stdout=log_file,
                                      stderr=subprocess.STDOUT)
        try:
            run = final_run(base_url, run_id, auth(base_url), worker_log, timeout=150)
            assert run["status"] == "succeeded", (run, worker_log.read_text())
            assert run["epochs_done"] == 40
            cmdline = Path(f"/proc/{worker.pid}/cmdline").read_bytes().split(b"\0")
            assert b"workers.start" in cmdline  # exec'd, same pid
        finally:
            stop(worker, worker_log, within=30)
    finally:
        stop(api_process, api_log, within=15)


# --- descent up -------------------------------------------------------------------------

@pytest.mark.slow
def test_up_refuses_a_port_in_use(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([*descent_argv(), "up", "--port", str(port)], cwd=tmp_path,
                                env=clean_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "in use" in result.stderr
    assert not (tmp_path / "descent.db").exists()  # refused before starting anything


@pytest.mark.slow
def test_up_trains_runs_and_stops_cleanly_on_sigterm(tmp_path):
    """`descent up --workers 1` on embedded defaults in an empty folder: it creates the
    SQLite file and the queue folder there, trains over HTTP, and SIGTERM stops the API and
    the worker (pool processes included) with exit code 0."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    log = tmp_path / "up.log"
    with open(log, "w") as log_file:
        process = subprocess.Popen([*descent_argv(), "up", "--workers", "1", "--port", str(port)],
                                   cwd=tmp_path, env=clean_env(), stdout=log_file,
                                   stderr=subprocess.STDOUT)
    token_file = tmp_path / ".descent" / "token"
    try:
        health = wait_for_health(base_url, process, log, timeout=45)
        assert health["database"] and health["broker"]
        assert (tmp_path / "descent.db").exists() and (tmp_path / "descent-queue").is_dir()
        # The local token, written before the API answers, for this folder's clients only.
        token = token_file.read_text().strip()
        assert token.startswith("dsc_") and token_file.stat().st_mode & 0o777 == 0o600
        headers = {"Authorization": f"Bearer {token}"}
        assert requests.get(f"{base_url}/api/v1/runs", timeout=10).status_code == 401

        response = requests.post(f"{base_url}/api/v1/runs", timeout=10, headers=headers, json={
            "dataset": "xor", "layers": [2, 4, 1], "epochs": 50, "learning_rate": 1.0})
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        # A worker compiles the kernels at its first start on a cold numba cache (~20-45 s
        # here); with a warm cache the run is done in well under a second.
        run = final_run(base_url, run_id, headers, log, timeout=150)
        assert run["status"] == "succeeded", (run, log.read_text())
        history = requests.get(f"{base_url}/api/v1/runs/{run_id}/history", timeout=10,
                               headers=headers).json()
        assert [row["epoch"] for row in history["history"]] == list(range(51))

        # Without a token, a clear message; with none set, clients in the folder of
        # `descent up` use its token file (here named by DESCENT_TOKEN_FILE, as this
        # process runs elsewhere).
        refused = invoke(["runs"], env={"DESCENT_API_URL": base_url,
                                        "DESCENT_TOKEN_FILE": str(tmp_path / "none")})
        assert refused.exit_code == 1
        assert "no token: run `descent token create --user NAME` and set DESCENT_TOKEN" \
            in " ".join(refused.output.split())
        # The client side of the same service: submit --wait exits 0 on success, 1 otherwise.
        env = {"DESCENT_API_URL": base_url, "DESCENT_TOKEN_FILE": str(token_file)}
        waited = invoke(["submit", str(XOR_SPEC), "--wait", "-s", "epochs=300"], env=env)
        assert waited.exit_code == 0, waited.output
        assert "succeeded, 300/300 epochs" in waited.output
        diverging = invoke(["submit", "-", "--wait"], env=env, input=json.dumps(
            {"dataset": "xor", "layers": [2, 1], "output_activation": "linear",
             "learning_rate": 1000.0, "epochs": 50, "batch_mode": "full"}))
        assert diverging.exit_code == 1, diverging.output
        assert "diverged" in diverging.output

        children = descendants(process.pid)
        commands = " | ".join(children.values())
        assert "workers.start" in commands and " api " in commands, commands
        assert len(children) >= 3, commands  # API, celery main process, one pool process
    finally:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(20)
        except subprocess.TimeoutExpired:
            for pid in descendants(process.pid):
                os.kill(pid, signal.SIGKILL)
            process.kill()
            pytest.fail(f"`descent up` still running 20 s after SIGTERM:\n{log.read_text()}")
    output = log.read_text()
    assert code == 0, output
    assert time.monotonic() - started < 20
    left = [pid for pid in children if alive(pid)]
    assert not left, f"processes left behind: {[children[pid] for pid in left]}"
    assert "Descent is up" in output and f"http://127.0.0.1:{port}/api/v1" in output
    assert "Descent stopped." in output
    assert not (tmp_path / "control").exists()  # broker tables stay in the queue folder
    assert "token     .descent/token (user local, created now;" in output
    assert token not in output  # the token is never printed (terminal output ends up in logs)
    assert "dashboard http://127.0.0.1:" in output

    # A restart reuses the token file: the same token still works.
    with open(log, "w") as log_file:
        process = subprocess.Popen([*descent_argv(), "up", "--workers", "1", "--port", str(port)],
                                   cwd=tmp_path, env=clean_env(), stdout=log_file,
                                   stderr=subprocess.STDOUT)
    try:
        wait_for_health(base_url, process, log, timeout=45)
        eventually(lambda: "Press Ctrl-C" in log.read_text(), timeout=10, interval=0.1,
                   message=lambda: log.read_text())
        assert token_file.read_text().strip() == token
        assert requests.get(f"{base_url}/api/v1/runs/{run_id}", timeout=10,
                            headers=headers).status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    output = log.read_text()
    assert code == 0, output
    assert "token     .descent/token (user local;" in output


def test_a_worker_starts_without_celerys_command_line_unless_celery_options_follow():
    from service.cli.supervisor import celery_worker_argv
    from workers.start import parse

    argv = celery_worker_argv(2, "info", "w1@host", quiet=True)
    assert argv[1:] == ["-m", "workers.start", "--concurrency", "2", "--loglevel", "info",
                        "--hostname", "w1@host", "--quiet"]
    args = parse(argv[3:])
    assert (args.concurrency, args.loglevel, args.hostname, args.quiet) == \
        (2, "info", "w1@host", True)
    raw = celery_worker_argv(2, "info", extra=("--max-tasks-per-child", "10"))
    assert raw[1:5] == ["-m", "celery", "-A", "workers.celery_app"]
    assert "--without-mingle" in raw and raw[-2:] == ["--max-tasks-per-child", "10"]
