"""Configuration from the environment, with embedded defaults that need no server."""

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

DEFAULT_DATABASE_URL = "sqlite:///descent.db"
DEFAULT_BROKER_URL = "filesystem://descent-queue"
DEFAULT_API_URL = "http://127.0.0.1:8000"


@dataclass(frozen=True)
class Limits:
    """Largest jobs the API accepts (each one an environment variable, DESCENT_MAX_...)."""

    max_layers: int = 16
    max_width: int = 4096
    max_params: int = 20_000_000
    max_epochs: int = 1_000_000
    max_samples: int = 1_000_000  # rows of a dataset
    max_features: int = 4096  # columns of X
    max_work: int = 10_000_000_000  # epochs x samples of one run
    max_upload_bytes: int = 256 * 1024 * 1024  # a dataset upload (multipart or JSON)
    max_json_bytes: int = 16 * 1024 * 1024  # any other request body


@dataclass(frozen=True)
class Settings:
    """Where runs are stored and queued, and how the CLI reaches the API."""

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str = DEFAULT_BROKER_URL
    api_url: str = DEFAULT_API_URL
    limits: Limits = field(default_factory=Limits)
    # Requests per token, in Flask-Limiter's notation ("600/minute"); None: no limit.
    rate_limit: str | None = None
    # Where the counts live; None: the broker's Redis when the broker is Redis, else memory.
    ratelimit_storage_url: str | None = None

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
            ratelimit_storage_url=env.get("DESCENT_RATELIMIT_STORAGE_URL") or None,
        )


# The password of a URL's userinfo (scheme://user:PASSWORD@host), wherever it appears in text.
_URL_PASSWORD = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^\s:/@]*:)[^\s@/]*(?=@)")


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***`` (error messages of
    drivers and brokers may quote the URL they were given)."""
    return _URL_PASSWORD.sub(r"\g<head>***", text)


def celery_config(broker_url: str) -> dict:
    """Celery settings shared by the API's queue client and the workers.

    ``filesystem://FOLDER`` (the embedded default) is kombu's filesystem transport in FOLDER
    (relative to the working directory), polled every 20 ms; anything else (``redis://...``)
    is handed to kombu as it is.
    """
    config = {
        "broker_url": broker_url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_ignore_result": True,  # run state lives in the database
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
        # Task messages carry only ids, as JSON: never pickle (nothing executable on the wire).
        "task_serializer": "json",
        "accept_content": ["json"],
        "result_serializer": "json",
    }
    parsed = urlparse(broker_url)
    if parsed.scheme == "filesystem":
        folder = Path((parsed.netloc + parsed.path) or "descent-queue").resolve()
        for sub in ("queue", "processed", "control"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        config["broker_url"] = "filesystem://localhost/"  # a host, or kombu warns of none
        # kombu's own filesystem transport can lose a message a producer is still writing.
        config["broker_transport"] = "service.fstransport:Transport"
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "queue"),
            "data_folder_out": str(folder / "queue"),
            "processed_folder": str(folder / "processed"),
            # Broadcast (pidbox) tables; kombu's default is ./control in the working directory.
            "control_folder": str(folder / "control"),
            "store_processed": False,
            "polling_interval": 0.02,
        }
    elif parsed.scheme in ("redis", "rediss"):
        # A delivered task not acknowledged within this time is delivered again.
        config["broker_transport_options"] = {"visibility_timeout": 3600}
    return config
