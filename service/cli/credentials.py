"""The API token the command line sends (DESCENT_TOKEN, else the token file) and the local
token that ``descent up`` keeps in the token file.

The token file (``Settings.token_file``: DESCENT_TOKEN_FILE, default ``.descent/token`` in
the working directory, beside the embedded database ``descent.db``) is written by
``descent up`` on its first start with a token of user "local", readable by its owner only
(0600).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

# API.md's name for the variable; DESCENT_TOKEN wins when both are set.
TOKEN_VARIABLES = ("DESCENT_TOKEN", "DESCENT_API_TOKEN")
LOCAL_USER = "local"


def read_token_file(path: Path) -> Optional[str]:
    """The token stored at ``path``, or None when there is none (or it is unreadable)."""
    try:
        token = Path(path).read_text().strip()
    except OSError:
        return None
    return token or None


def client_token(token_file: Path | str, env=None) -> Optional[str]:
    """The token a client sends: DESCENT_TOKEN (or DESCENT_API_TOKEN), else the one in
    ``token_file``, else None."""
    env = os.environ if env is None else env
    for name in TOKEN_VARIABLES:
        if env.get(name, "").strip():
            return env[name].strip()
    return read_token_file(Path(token_file))


def write_token_file(path: Path, token: str) -> None:
    """Store ``token`` at ``path``, readable and writable by its owner only (its folder
    created 0700 if missing)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode through os.open


def ensure_local_token(database_url: str, path: Path) -> tuple[str, bool]:
    """(token, created): the live token in the token file ``path``, or a new token of user
    "local" written there (0600) when the file is missing or its token unknown or revoked.
    The database must be migrated."""
    from service.store import make_engine, make_sessionmaker
    from service.store.tokens import create_token, user_of_token

    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            token = read_token_file(path)
            if token is not None and user_of_token(session, token) is not None:
                return token, False
            token = create_token(session, LOCAL_USER, label="descent up")
            session.commit()
    finally:
        engine.dispose()
    write_token_file(path, token)
    return token, True
