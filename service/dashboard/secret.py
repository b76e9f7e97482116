"""The key that signs the dashboard's session cookie."""

import os
import secrets
from pathlib import Path

from sqlalchemy.engine import make_url


def key_file(database_url: str, token_file: str) -> Path | None:
    """Where a generated key is kept: beside a SQLite database file
    (``descent.db.secret-key``), else in the folder of ``descent up``'s token file
    (``.descent/secret-key``); None for an in-memory database."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if not url.database or url.database == ":memory:":
            return None
        return Path(url.database + ".secret-key").resolve()
    return (Path(token_file).parent / "secret-key").resolve()


def secret_key(settings) -> str:
    """``settings.secret_key`` (DESCENT_SECRET_KEY), else a key generated once and stored in
    ``key_file`` (readable by its owner only). Several API servers on one database need the
    same key: give them all DESCENT_SECRET_KEY (or the same file)."""
    if settings.secret_key:
        return settings.secret_key
    path = key_file(settings.database_url, settings.token_file)
    if path is None:
        return secrets.token_hex(32)
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    temp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key + "\n")
    try:
        # A hard link appears whole or not at all: when two servers start at once, the
        # first one's key is everyone's.
        os.link(temp, path)
    except FileExistsError:
        key = path.read_text().strip()
    finally:
        temp.unlink()
    return key
