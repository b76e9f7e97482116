"""Whether the training kernels are being compiled on this host: a small status file per
warming process beside the kernel cache (``cachepaths.cache_path("status")``), which the API
reads to tell a waiting user why a queued run has not started.

A process that warms the kernels ``publish``es "compiling" (or "loading", from the cache)
with how long a compile took last time on this machine, then "ready"; ``compiling()``
returns the live ones of this host that still compile. Files of processes that no longer
exist are removed on reading. Everything here is best effort: a status that cannot be written
or read is simply not shown.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
import time
from pathlib import Path
from typing import Optional

from .cachepaths import cache_path, engine_cache_folder

# Seconds a cold compile of the float64 training kernels is expected to take when this
# machine never measured one (two cores: 8 s on a fast one, about twice that on a slow one).
DEFAULT_COMPILE_SECONDS = 15.0
# A "compiling" status older than this is not believed.
STALE_SECONDS = 1800.0


def _status_dir() -> Path:
    return cache_path("status")


def _last_compile_file() -> Path:
    return cache_path("compile-seconds.json")


def training_kernels_cached() -> bool:
    """Whether the disk cache already holds compiled training kernels of this engine (then a
    warm-up loads them in about a second instead of compiling them)."""
    try:
        return any(engine_cache_folder().glob("*train_epochs*.nbi"))
    except OSError:
        return False


def _rest_marker() -> Path:
    return engine_cache_folder() / "rest-cached.json"


def _toolchain() -> dict:
    """What else a cached kernel depends on (numba's index checks it entry by entry)."""
    import platform

    import numba

    return {"numba": numba.__version__, "python": platform.python_version(),
            "machine": platform.machine()}


def _first_compile_lock_file() -> Path:
    return engine_cache_folder() / "first-compile.lock"


def lock_first_compile() -> Optional[int]:
    """An exclusive lock on this engine's first-compile lock file, as an inheritable file
    descriptor: a worker passes it to the background process that compiles the float64
    training kernels (workers.warmup), which holds it until they are cached, so a run that
    needs them can wait for them (``wait_first_compile``). None when the lock cannot be had
    at once (another process compiles) or the file cannot be opened."""
    try:
        folder = engine_cache_folder()
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(_first_compile_lock_file(), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    os.set_inheritable(fd, True)
    return fd


def first_compile_running() -> bool:
    """Whether a process holds the first-compile lock now (see ``lock_first_compile``)."""
    return _first_compile_lock(fcntl.LOCK_EX | fcntl.LOCK_NB) is False


def wait_first_compile() -> None:
    """Return once no process holds the first-compile lock (at once when none does; a
    holder that dies releases it)."""
    _first_compile_lock(fcntl.LOCK_EX)


def _first_compile_lock(operation: int) -> Optional[bool]:
    """Take and release the first-compile lock: True if taken, False if held elsewhere
    (non-blocking), None when the file cannot be opened."""
    try:
        fd = os.open(_first_compile_lock_file(), os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, operation)
        return True
    except BlockingIOError:
        return False
    except OSError:
        return None
    finally:
        os.close(fd)  # closing releases the lock


def rest_kernels_cached() -> bool:
    """Whether a warm-up of every specialisation (workers.warmup.warm_rest) already filled
    the disk cache of this engine with this toolchain: then there is nothing to warm."""
    try:
        with open(_rest_marker()) as f:
            return json.load(f) == _toolchain()
    except (OSError, ValueError):
        return False


def record_rest_cached() -> None:
    """Remember that every specialisation of this engine is in the disk cache."""
    _write_json(_rest_marker(), _toolchain())


def expected_compile_seconds() -> float:
    """How long the last cold compile of the training kernels took here, or the default."""
    try:
        with open(_last_compile_file()) as f:
            return float(json.load(f)["seconds"])
    except (OSError, ValueError, KeyError, TypeError):
        return DEFAULT_COMPILE_SECONDS


def record_compile_seconds(seconds: float) -> None:
    """Remember a cold compile's duration as the next expectation."""
    _write_json(_last_compile_file(), {"seconds": round(seconds, 1)})


def publish(state: str, expected_seconds: Optional[float] = None) -> None:
    """Say what this process is doing with the kernels: "compiling", "loading" or "ready"."""
    _write_json(_status_dir() / f"{socket.gethostname()}-{os.getpid()}.json",
                {"state": state, "pid": os.getpid(), "started": time.time(),
                 "expected_seconds": expected_seconds})


def compiling() -> Optional[dict]:
    """{"elapsed_seconds", "expected_seconds"} of the longest-running compile of this host's
    live processes, or None when none is compiling."""
    prefix = socket.gethostname() + "-"
    found = None
    try:
        paths = [p for p in _status_dir().glob("*.json") if p.name.startswith(prefix)]
    except OSError:
        return None
    for path in paths:
        try:
            with open(path) as f:
                status = json.load(f)
            pid = int(status["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if not _alive(pid):
            path.unlink(missing_ok=True)
            continue
        if status.get("state") != "compiling":
            continue
        elapsed = max(0.0, time.time() - float(status["started"]))
        if elapsed > STALE_SECONDS:  # a process that died mid-compile, its pid reused
            continue
        if found is None or elapsed > found["elapsed_seconds"]:
            found = {"elapsed_seconds": round(elapsed, 1),
                     "expected_seconds": status.get("expected_seconds")}
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _write_json(path: Path, body: dict) -> None:
    """Write ``body`` to ``path`` atomically; silently nothing when the folder is not
    writable."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        with os.fdopen(fd, "w") as f:
            json.dump(body, f)
        os.replace(tmp, path)
    except OSError:
        pass
