"""Time to a first finished run: `make up` on a fresh clone, and `descent up` in a new folder.

Run by hand:  .venv/bin/python bench/startup.py [--target a|b|both] [--cache cold|user]
                                                [--wait-quiet S] [--source REPO]

(a) clones --source (default: this checkout's committed HEAD) into a new temporary folder and
    runs `make up PORT=...` there: a new .venv (packages from pip's cache or local indexes, no
    download), then `descent up --submit examples/xor.json`. The clock runs from `make up` to
    the moment the example run is shown finished. Target: <= 15 s.
(b) runs `descent up --submit XOR` of this checkout's .venv in a new, empty temporary folder
    (a new SQLite database and queue folder). Target: <= 3 s. It first brings the checkout to
    the state `make up` leaves it in (`python -m service.precompile`, the bytecode `make up`
    writes) and runs one priming `descent up` the same way, so that the kernel cache is warm.

--cache cold sets NUMBA_CACHE_DIR to a new, empty folder for (a): a newcomer's first start,
compiling every kernel it needs. --cache user (the default) leaves the environment alone: the
kernel cache is wherever this checkout puts it (docs: README, "Compiled kernels"), in whatever
state earlier runs left it. (b) always uses the caller's cache, warmed by its priming run.

Each line of the child's output is time-stamped as it arrives; the phases are read from it:
the venv (`pip install ... -e .` or "Installing Descent" echoed by make), the install (`descent up` echoed), the API
answering ("Descent is up"), and the run shown finished ("$ descent show"). Then Ctrl-C
(SIGINT to the process group) stops the service. `bg` is how many cores other processes kept
busy in the second before the measurement started (the machine has os.cpu_count() cores).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGETS = {"a": 15.0, "b": 3.0}
# Phases: (name, pattern of the first output line that ends it).
PHASES_A = [("venv", re.compile(r"pip install .*-e \.|Installing Descent")),
            ("install", re.compile(r"bin/descent up ")),
            ("api up", re.compile(r"Descent is up")),
            ("run done", re.compile(r"^\$ descent show \d+"))]
PHASES_B = PHASES_A[2:]


def busy_cores():
    """Busy CPU seconds of the whole machine so far (user, nice, system, irq, steal)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def background(window: float = 1.0):
    """Cores busy with other processes over the next ``window`` seconds."""
    a = busy_cores()
    time.sleep(window)
    b = busy_cores()
    return None if a is None or b is None else (b - a) / window


def wait_quiet(seconds: float) -> None:
    """Up to ``seconds`` for other processes to use < 0.3 cores."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        bg = background(0.5)
        if bg is None or bg < 0.3:
            return


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_until_done(argv, cwd, env, phases, timeout: float, log_path: str):
    """Run ``argv`` in a process group of its own; return ({phase: seconds}, finished) once
    the last phase's line appears (or the child exits, or ``timeout``), then stop it with
    SIGINT (SIGKILL after 20 s). Every line goes to ``log_path`` with its time."""
    seen, lines = {}, []
    done = threading.Event()
    started = time.monotonic()
    process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)

    def read():
        for line in process.stdout:
            t = time.monotonic() - started
            lines.append(f"{t:7.2f}  {line.rstrip()}")
            for name, pattern in phases:
                if name not in seen and pattern.search(line):
                    seen[name] = t
            if phases[-1][0] in seen:
                done.set()
        done.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    done.wait(timeout)
    try:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        pass
    reader.join(5)
    with open(log_path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return seen, phases[-1][0] in seen


def report(label: str, seen: dict, finished: bool, phases, target: float, bg, log_path: str):
    """Print one measurement: its phases (cumulative and each), total and verdict."""
    parts, last = [], 0.0
    for name, _ in phases:
        if name in seen:
            parts.append(f"{name} {seen[name]:.1f}s (+{seen[name] - last:.1f})")
            last = seen[name]
        else:
            parts.append(f"{name} -")
    total = seen.get(phases[-1][0])
    verdict = ("PASS" if total <= target else "FAIL") if finished else "FAIL (no finished run)"
    bg_text = "?" if bg is None else f"{bg:.2f}"
    print(f"{label}: {'; '.join(parts)}")
    print(f"{label}: total {total if total is None else f'{total:.1f}'} s, target <= "
          f"{target:g} s: {verdict}   bg {bg_text} cores   log {log_path}")
    sys.stdout.flush()
    return total


def target_a(args, logs: str):
    """`make up` on a fresh clone; returns the seconds to the finished example run."""
    clone = tempfile.mkdtemp(prefix="descent-startup-a-")
    env = dict(os.environ)
    cache = None
    if args.cache == "cold":
        cache = tempfile.mkdtemp(prefix="descent-startup-numba-")
        env["NUMBA_CACHE_DIR"] = cache
    try:
        subprocess.run(["git", "clone", "-q", args.source, clone], check=True)
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        bg = background()
        log_path = os.path.join(logs, "a.log")
        seen, finished = timed_until_done(["make", "up", f"PORT={free_port()}"], clone, env,
                                          PHASES_A, args.timeout, log_path)
        return report(f"(a) make up, fresh clone, {args.cache} kernel cache", seen, finished,
                      PHASES_A, TARGETS["a"], bg, log_path)
    finally:
        shutil.rmtree(clone, ignore_errors=True)
        if cache:
            shutil.rmtree(cache, ignore_errors=True)


def target_b(args, logs: str):
    """`descent up` in a new folder with a warm kernel cache; the seconds to the finished run."""
    descent = os.path.join(ROOT, ".venv", "bin", "descent")
    xor = os.path.join(ROOT, "examples", "xor.json")
    # What `make up` does before `descent up` (the Makefile's bytecode target): without it, on
    # a machine with PYTHONDONTWRITEBYTECODE set every process compiles Descent's modules.
    subprocess.run([os.path.join(ROOT, ".venv", "bin", "python"), "-m", "service.precompile"],
                   cwd=ROOT, check=True)
    total = None
    for attempt in ("priming", "measured"):
        folder = tempfile.mkdtemp(prefix="descent-startup-b-")
        try:
            if attempt == "measured" and args.wait_quiet:
                wait_quiet(args.wait_quiet)
            bg = background() if attempt == "measured" else None
            log_path = os.path.join(logs, f"b-{attempt}.log")
            env = {k: v for k, v in os.environ.items() if not k.startswith("DESCENT_")}
            seen, finished = timed_until_done(
                [descent, "up", "--port", str(free_port()), "--submit", xor], folder, env,
                PHASES_B, args.timeout, log_path)
            if attempt == "measured":
                total = report("(b) descent up, new folder, warm kernel cache", seen,
                               finished, PHASES_B, TARGETS["b"], bg, log_path)
        finally:
            shutil.rmtree(folder, ignore_errors=True)
    return total


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--target", choices=["a", "b", "both"], default="both")
    ap.add_argument("--cache", choices=["cold", "user"], default="user",
                    help="(a) only: a new, empty NUMBA_CACHE_DIR, or the caller's cache")
    ap.add_argument("--source", default=ROOT, help="the repository (a) clones (HEAD)")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="S",
                    help="wait up to S seconds for the machine to be quiet before each "
                         "measurement")
    ap.add_argument("--timeout", type=float, default=300.0,
                    help="seconds to wait for the finished run")
    ap.add_argument("--logs", default=None, help="folder for the time-stamped output")
    args = ap.parse_args()
    logs = args.logs or tempfile.mkdtemp(prefix="descent-startup-logs-")
    os.makedirs(logs, exist_ok=True)
    print(f"cpus {os.cpu_count()}  load average {os.getloadavg()[0]:.2f}  "
          f"NUMBA_CACHE_DIR={os.environ.get('NUMBA_CACHE_DIR', '(unset)')}  "
          f"source {args.source}")
    results = {}
    if args.target in ("a", "both"):
        results["a"] = target_a(args, logs)
    if args.target in ("b", "both"):
        results["b"] = target_b(args, logs)
    missed = [k for k, v in results.items() if v is None or v > TARGETS[k]]
    print("PASS" if not missed else f"FAIL: target {', '.join(missed)} missed")
    sys.exit(1 if missed else 0)


if __name__ == "__main__":
    main()
