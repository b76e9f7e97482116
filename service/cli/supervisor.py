"""The child processes of ``descent up``: the command lines of the API and of a Celery
worker, and the Supervisor that starts, watches and stops them (no orphans)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time


def api_argv(host: str, port: int, threads: int, loglevel: str) -> list[str]:
    """The command line of one API server (`descent api`) under this Python."""
    return [sys.executable, "-m", "service.cli", "api", "--host", host, "--port", str(port),
            "--threads", str(threads), "--loglevel", loglevel]


def celery_worker_argv(concurrency: int, loglevel: str, name: str | None = None,
                       quiet: bool = False, extra=()) -> list[str]:
    """The command line of one Celery worker of the Descent app (prefork pool, no mingle, no
    gossip): ``python -m workers.start``, which skips Celery's command line; with raw Celery
    options (``extra``), Celery's own."""
    if not extra:
        argv = [sys.executable, "-m", "workers.start", "--concurrency", str(concurrency),
                "--loglevel", loglevel]
        return argv + (["--hostname", name] if name else []) + (["--quiet"] if quiet else [])
    argv = [sys.executable, "-m", "celery", "-A", "workers.celery_app"]
    if quiet:
        argv.append("--quiet")  # no banner
    # No mingle (at start, a worker on Redis waits a second for others to send their revoked
    # task ids: Descent revokes nothing, runs are cancelled in the database) and no gossip
    # (events between workers that nothing here listens to).
    argv += ["worker", "--concurrency", str(concurrency), "--loglevel", loglevel.upper(),
             "--without-mingle", "--without-gossip"]
    if name:
        argv += ["--hostname", name]
    return argv + list(extra)


class StopRequested(Exception):
    """SIGINT, SIGTERM or SIGHUP reached `descent up`."""


class UpFailed(Exception):
    """A part of `descent up` failed on its own."""


class ChildExited(UpFailed):
    """A child of `descent up` exited while it should have been running."""

    def __init__(self, name: str, code: int):
        super().__init__(f"the {name} exited unexpectedly (exit code {code})")
        self.name, self.code = name, code


class Supervisor:
    """Starts child processes, watches them, and stops them all (no orphans).

    Each child leads a process group of its own, so a Ctrl-C at the terminal reaches only
    `descent up`, which then stops the children in order; on Linux each child also gets
    SIGTERM should `descent up` itself die (PR_SET_PDEATHSIG)."""

    def __init__(self, out):
        self.out = out
        self.children: list[tuple[str, subprocess.Popen]] = []
        self.signals = 0
        self.interruptible = False
        self._libc = None
        if sys.platform.startswith("linux"):
            try:
                import ctypes

                self._libc = ctypes.CDLL(None, use_errno=True)
            except OSError:
                self._libc = None

    def install_signal_handlers(self) -> None:
        """Count SIGINT, SIGTERM and SIGHUP (raising StopRequested once interruptible)."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum, _frame):
        self.signals += 1
        if self.interruptible:
            self.interruptible = False
            raise StopRequested(signum)

    def _child_setup(self):
        libc, parent = self._libc, os.getpid()

        def setup():
            if libc is not None:
                libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # PR_SET_PDEATHSIG
            if os.getppid() != parent:  # the parent died before prctl took effect
                os._exit(1)
        return setup

    def spawn(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        """Start ``argv`` as a watched child called ``name``, in a process group of its
        own."""
        process = subprocess.Popen(argv, env=env, process_group=0,
                                   preexec_fn=self._child_setup())
        self.children.append((name, process))
        return process

    def check(self) -> None:
        """ChildExited if any child has exited."""
        for name, process in self.children:
            code = process.poll()
            if code is not None:
                raise ChildExited(name, code)

    def sleep(self, seconds: float) -> None:
        """Sleep, watching the children; StopRequested on a signal."""
        if self.signals:
            raise StopRequested()
        time.sleep(seconds)
        self.check()

    def alive(self):
        """(name, process) of the children still running."""
        return [(name, p) for name, p in self.children if p.poll() is None]

    def _wait(self, seconds: float, hurry_at: int) -> None:
        deadline = time.monotonic() + seconds
        while self.alive() and time.monotonic() < deadline and self.signals < hurry_at:
            time.sleep(0.05)

    def stop(self, grace: float, busy=lambda: 0) -> None:
        """SIGTERM everything (workers: warm shutdown, running runs may finish); after
        ``grace`` seconds (or at a second Ctrl-C) SIGQUIT the workers (cold shutdown: their
        runs go back on the queue); after 10 s more, SIGKILL whole process groups.
        ``busy()`` counts the runs still training here, for the message."""
        self.interruptible = False
        hurry_at = self.signals + 1
        for _name, process in self.alive():
            process.send_signal(signal.SIGTERM)
        running = busy() if any(n.startswith("worker") for n, _ in self.alive()) else 0
        if running:
            self.out.print(f"{running} run{'s' if running > 1 else ''} still training: waiting "
                           f"up to {grace:g} s (Ctrl-C again to stop now; unfinished runs go "
                           "back on the queue and start over next time).", soft_wrap=True)
        self._wait(grace, hurry_at)
        for name, process in self.alive():
            process.send_signal(signal.SIGQUIT if name.startswith("worker") else signal.SIGKILL)
        self._wait(10.0, 10**9)
        for _name, process in self.children:
            if process.poll() is None:
                self._killpg(process)
                process.wait()
            self._killpg(process)  # any grandchild left in the group (pool processes)

    @staticmethod
    def _killpg(process) -> None:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

