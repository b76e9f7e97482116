"""The API token the command line sends: DESCENT_TOKEN, else the token file.

The token file (DESCENT_TOKEN_FILE, default ``.descent/token`` in the working directory,
beside the embedded database ``descent.db``) is written by ``descent up`` on its first start
with a token of user "local", readable by its owner only (0600).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

DEFAULT_TOKEN_FILE = ".descent/token"
# API.md's name for the variable; DESCENT_TOKEN wins when both are set.
TOKEN_VARIABLES = ("DESCENT_TOKEN", "DESCENT_API_TOKEN")


def token_file(env=None) -> Path:
    """Where ``descent up`` keeps its token and clients look for one."""
    env = os.environ if env is None else env
    return Path(env.get("DESCENT_TOKEN_FILE") or DEFAULT_TOKEN_FILE)


def read_token_file(path: Path) -> Optional[str]:
    """The token stored at ``path``, or None when there is none (or it is unreadable)."""
    try:
        token = path.read_text().strip()
    except OSError:
        return None
    return token or None


def client_token(env=None) -> Optional[str]:
    """The token a client sends: DESCENT_TOKEN (or DESCENT_API_TOKEN), else the token
    file's, else None."""
    env = os.environ if env is None else env
    for name in TOKEN_VARIABLES:
        if env.get(name, "").strip():
            return env[name].strip()
    return read_token_file(token_file(env))


def write_token_file(path: Path, token: str) -> None:
    """Store ``token`` at ``path``, readable and writable by its owner only (its folder
    created 0700 if missing)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    os.chmod(path, 0o600)  # an existing file keeps its mode through os.open
