"""What a user waiting on a queued run is told while the workers compile the training kernels
(a worker's first start on a machine, about half a minute): the health endpoint's
``kernels`` object and the one sentence the CLI and the dashboard show from it."""

from __future__ import annotations

from typing import Optional


def kernels_status() -> Optional[dict]:
    """{"compiling": true, "elapsed_seconds", "expected_seconds"} while a worker on this
    host compiles the training kernels, else None (also when the workers run elsewhere:
    the status lives beside this host's kernel cache)."""
    from kernels import compilestate

    state = compilestate.compiling()
    return None if state is None else {"compiling": True, **state}


def compiling_note(status: Optional[dict]) -> Optional[str]:
    """The sentence for a ``kernels_status()`` (or health's ``kernels``), None for None."""
    if not status or not status.get("compiling"):
        return None
    expected = status.get("expected_seconds")
    elapsed = status.get("elapsed_seconds") or 0.0
    if not expected:
        return "compiling the training kernels, first start only"
    if elapsed < expected:
        return (f"compiling the training kernels, first start only, "
                f"~{seconds_left(status)} s")
    return (f"compiling the training kernels, first start only (longer than the "
            f"~{round(expected)} s it took last time)")


def seconds_left(status: dict) -> int:
    """Whole seconds the compile of a ``kernels_status()`` should still take (at least 1)."""
    expected = status.get("expected_seconds") or 0.0
    return max(1, round(expected - (status.get("elapsed_seconds") or 0.0)))
