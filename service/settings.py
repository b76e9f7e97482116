"""Descent's settings: one ``Settings`` read from the environment once (DESCENT_* variables,
with embedded defaults that need no server) and passed down."""

import os
import re
from dataclasses import dataclass, field

DEFAULT_DATABASE_URL = "sqlite:///descent.db"
DEFAULT_BROKER_URL = "filesystem://descent-queue"
DEFAULT_API_URL = "http://127.0.0.1:8000"
# Where `descent up` keeps its API token (and, without a SQLite file, the dashboard's key).
DEFAULT_TOKEN_FILE = ".descent/token"


@dataclass(frozen=True)
class Limits:
    """Largest jobs the API accepts (each one an environment variable, DESCENT_MAX_...)."""

    max_layers: int = 16
    max_width: int = 4096
    max_params: int = 20_000_000
    max_epochs: int = 1_000_000
    max_samples: int = 1_000_000  # rows of a dataset
    max_features: int = 4096  # columns of X
    # What one run costs: parameters x samples x epochs (about a sixth of its FLOPs).
    max_work: int = 1_000_000_000_000
    # Parameters one run stores (initial and final, 8 bytes each).
    max_param_bytes: int = 64 * 1024 * 1024
    # What one predict request costs: rows x parameters.
    max_predict_work: int = 2_000_000_000
    max_upload_bytes: int = 256 * 1024 * 1024  # a dataset upload (multipart or JSON)
    max_json_bytes: int = 16 * 1024 * 1024  # any other request body
    # Per-user quotas: runs queued or running at once, and bytes stored (datasets, and the
    # parameters and history of every run; service.store.usage).
    max_active_runs: int = 2000
    max_user_bytes: int = 2 * 1024 * 1024 * 1024
    # Threads one run may ask for (its spec's ``threads``); workers cap runs at it too.
    max_threads: int = field(default_factory=lambda: os.cpu_count() or 1)


@dataclass(frozen=True)
class ReaperSettings:
    """How workers prove they are alive and how lost runs are taken back (each one an
    environment variable, DESCENT_..._SECONDS or DESCENT_MAX_ATTEMPTS)."""

    # A training process refreshes its run's heartbeat this often (a thread, whatever the
    # length of an epoch).
    heartbeat_seconds: float = 5.0
    # A running run whose heartbeat is older than this has lost its worker.
    stale_seconds: float = 60.0
    # Claims of one run before it is given up ("worker lost (N attempts)").
    max_attempts: int = 3
    # How often each worker reaps.
    reap_seconds: float = 15.0
    # A queued run not sent within this long after it was stored (or requeued) was never sent.
    unsent_seconds: float = 30.0
    # A queued run sent this long ago that no worker has claimed since is sent again: its
    # message may have been lost as Redis handed it to a worker whose connection dropped.
    resend_seconds: float = 3600.0

    @classmethod
    def from_env(cls, env) -> "ReaperSettings":
        """The fields set in ``env``; the others keep their defaults."""
        values = {}
        for name, kind in (("heartbeat_seconds", float), ("stale_seconds", float),
                           ("max_attempts", int), ("reap_seconds", float),
                           ("unsent_seconds", float), ("resend_seconds", float)):
            key = f"DESCENT_{name.upper()}"
            if key in env:
                values[name] = kind(env[key])
        return cls(**values)


@dataclass(frozen=True)
class Settings:
    """Where runs are stored and queued, and how the CLI reaches the API."""

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    api_url: str = DEFAULT_API_URL
    limits: Limits = field(default_factory=Limits)
    # Requests per token, in Flask-Limiter's notation ("600/minute"); None: no limit.
    rate_limit: str | None = None
    # Failed authentications per client address, in the same notation; None: no limit.
    auth_failure_limit: str | None = "30/minute"
    # Where the counts live; None: the broker's Redis when the broker is Redis, else memory.
    ratelimit_storage_url: str | None = None
    reaper: ReaperSettings = field(default_factory=ReaperSettings)
    # BLAS threads of each worker process: N workers on N cores must not oversubscribe.
    worker_threads: int = 1
    token_file: str = DEFAULT_TOKEN_FILE
    # The key that signs the dashboard's cookies; None: generated once and kept in a file.
    secret_key: str | None = None
    # Send the dashboard's cookies with the Secure flag (set it behind HTTPS).
    secure_cookies: bool = False
    # Reverse proxies in front of the API whose X-Forwarded-For/-Proto to believe; 0: none.
    trusted_proxies: int = 0

    @classmethod
    def from_env(cls, env=None) -> "Settings":
        """Settings from DESCENT_* variables; anything unset takes its embedded default."""
        env = os.environ if env is None else env
        limits = Limits(**{
            name: int(env[f"DESCENT_{name.upper()}"])
            for name in Limits.__dataclass_fields__
            if f"DESCENT_{name.upper()}" in env
        })
        return cls(
            database_url=env.get("DESCENT_DATABASE_URL", DEFAULT_DATABASE_URL),
            broker_url=env.get("DESCENT_BROKER_URL", DEFAULT_BROKER_URL),
            api_url=env.get("DESCENT_API_URL", DEFAULT_API_URL),
            limits=limits,
            rate_limit=env.get("DESCENT_RATE_LIMIT") or None,
            auth_failure_limit=env.get("DESCENT_AUTH_FAILURE_LIMIT", "30/minute") or None,
            ratelimit_storage_url=env.get("DESCENT_RATELIMIT_STORAGE_URL") or None,
            reaper=ReaperSettings.from_env(env),
            worker_threads=int(env.get("DESCENT_WORKER_THREADS", "1")),
            token_file=env.get("DESCENT_TOKEN_FILE") or DEFAULT_TOKEN_FILE,
            secret_key=env.get("DESCENT_SECRET_KEY") or None,
            secure_cookies=_flag(env.get("DESCENT_SECURE_COOKIES", "")),
            trusted_proxies=int(env.get("DESCENT_TRUSTED_PROXIES") or 0),
        )


def _flag(value: str) -> bool:
    """An environment variable read as a yes/no flag (1, true, yes, on)."""
    return value.strip().lower() in ("1", "true", "yes", "on")


# The password of a URL's userinfo (scheme://user:PASSWORD@host), wherever it appears in text.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]*(?=@)")


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (error messages of
    drivers and brokers may quote the URL they were given)."""
    return _URL_PASSWORD.sub(r"\g<head>***", text)
