"""`descent token create | list | revoke` straight on the database, the local token of
`descent up` (created once, then reused), and how the client finds its token."""

import json
import stat

import pytest

from service.cli.client import Client
from service.cli.clientcommand import client_for
from service.cli.credentials import client_token, ensure_local_token, write_token_file
from service.settings import Settings
from service.store import make_engine, make_sessionmaker
from service.store.tokens import hash_token, user_of_token

from .test_cli import invoke, live_api  # noqa: F401  (a `descent api` subprocess)


def users_of(url, *tokens):
    engine = make_engine(url)
    try:
        with make_sessionmaker(engine)() as session:
            return [user_of_token(session, token) for token in tokens]
    finally:
        engine.dispose()


def test_create_list_and_revoke(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"  # not migrated yet: the command does it
    env = {"DESCENT_DATABASE_URL": url}
    created = invoke(["token", "create", "--user", "bob", "--label", "laptop"], env=env)
    assert created.exit_code == 0, created.output
    token = created.stdout.strip()
    assert created.stdout == token + "\n"  # only the token: TOKEN=$(descent token create ...)
    assert token.startswith("dsc_")
    other = invoke(["token", "create", "--user", "carol"], env=env).stdout.strip()
    assert users_of(url, token, other) == ["bob", "carol"]

    listed = invoke(["token", "list"], env=env)
    assert listed.exit_code == 0, listed.output
    assert "bob" in listed.output and "laptop" in listed.output and "carol" in listed.output
    assert token not in listed.output and hash_token(token) not in listed.output
    assert token[:12] in listed.output  # the prefix tells tokens apart
    rows = [json.loads(line) for line in
            invoke(["token", "list", "--json"], env=env).stdout.splitlines()]
    assert [(r["id"], r["user"], r["label"], r["revoked_at"]) for r in rows] == \
        [(1, "bob", "laptop", None), (2, "carol", None, None)]
    assert set(rows[0]) == {"id", "user", "label", "prefix", "created_at", "last_used_at",
                            "revoked_at"}
    assert rows[0]["created_at"].endswith("+00:00")
    only_carol = invoke(["token", "list", "--json", "--user", "carol"], env=env).stdout
    assert [json.loads(line)["user"] for line in only_carol.splitlines()] == ["carol"]

    revoked = invoke(["token", "revoke", "1"], env=env)
    assert revoked.exit_code == 0 and "revoked token 1" in revoked.output
    assert users_of(url, token, other) == [None, "carol"]
    again = invoke(["token", "revoke", "1"], env=env)
    assert again.exit_code == 1 and "no live token with id 1" in again.output
    assert invoke(["token", "revoke", "99"], env=env).exit_code == 1
    rows = [json.loads(line) for line in
            invoke(["token", "list", "--json"], env=env).stdout.splitlines()]
    assert rows[0]["revoked_at"] is not None and rows[1]["revoked_at"] is None


def test_create_refuses_a_bad_user_name(tmp_path):
    env = {"DESCENT_DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}
    for name in ("", "two words", "-dash", "x" * 201):
        result = invoke(["token", "create", "--user", name], env=env)
        assert result.exit_code == 2, (name, result.output)
        assert result.stdout == ""


def test_the_local_token_is_created_once_and_reused(tmp_path, sqlite_url):
    path = tmp_path / "state" / ".descent" / "token"
    token, created = ensure_local_token(sqlite_url, path)
    assert created and path.read_text().strip() == token
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert users_of(sqlite_url, token) == ["local"]
    assert ensure_local_token(sqlite_url, path) == (token, False)
    # A token file the database does not know (another database, or revoked): a new one.
    write_token_file(path, "dsc_unknown")
    renewed, created = ensure_local_token(sqlite_url, path)
    assert created and renewed != token and path.read_text().strip() == renewed


def test_the_client_sends_the_env_token_else_the_files(tmp_path, monkeypatch):
    path = tmp_path / "token"
    write_token_file(path, "dsc_from_file")
    assert client_token(path, {}) == "dsc_from_file"
    assert client_token(path, {"DESCENT_API_TOKEN": "dsc_api"}) == "dsc_api"
    assert client_token(path, {"DESCENT_TOKEN": "dsc_env", "DESCENT_API_TOKEN": "x"}) \
        == "dsc_env"
    assert client_token(tmp_path / "none", {}) is None
    monkeypatch.delenv("DESCENT_TOKEN", raising=False)
    monkeypatch.delenv("DESCENT_API_TOKEN", raising=False)
    monkeypatch.setenv("DESCENT_TOKEN_FILE", str(path))
    settings = Settings.from_env()
    assert client_for(settings, "http://127.0.0.1:1").http.headers["Authorization"] == \
        "Bearer dsc_from_file"
    monkeypatch.setenv("DESCENT_TOKEN", "dsc_env")
    assert client_for(settings, "http://127.0.0.1:1").http.headers["Authorization"] == \
        "Bearer dsc_env"
    assert "Authorization" not in Client("http://127.0.0.1:1", token="").http.headers
    assert "Authorization" not in Client("http://127.0.0.1:1").http.headers


@pytest.mark.slow
def test_a_refused_token_says_what_to_do(live_api):  # noqa: F811
    env = {"DESCENT_API_URL": live_api, "DESCENT_TOKEN": "dsc_revoked-or-unknown"}
    result = invoke(["runs"], env=env)
    assert result.exit_code == 1
    assert "the API refused the token" in result.output
    assert "descent token create --user NAME" in " ".join(result.output.split())
    assert "dsc_revoked-or-unknown" not in result.output
