"""Byte-compile ahead of the first start the modules that Descent's processes import when
they start (its own and its dependencies'), on every core.

uv installs no bytecode, and where PYTHONDONTWRITEBYTECODE is set (as on this project's
machines) no import writes any: `descent up`, the API and each worker would then compile every
module they import from source, at every start. Compiling all installed modules takes about
28 s of CPU; the few hundred those processes import are listed in ``startup_modules.txt``,
which ``python -m service.precompile --record`` writes from a real `descent up` (run it when
dependencies change; tests/service/test_precompile.py checks that the list is current).

    python -m service.precompile            # compile Descent and the listed modules
    python -m service.precompile --record   # rewrite startup_modules.txt
"""

from __future__ import annotations

import argparse
import compileall
import multiprocessing
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OWN_PACKAGES = ("kernels", "service", "workers")
MANIFEST = Path(__file__).with_name("startup_modules.txt")
# `python -X importtime` lines: "import time: <self us> | <cumulative us> | <indented name>".
IMPORT_LINE = re.compile(r"^import time:\s+\d+ \|\s+\d+ \| +(\S+)\s*$")


def listed_modules(manifest: Path = MANIFEST) -> list[str]:
    """The module names in the manifest (one per line; # starts a comment)."""
    if not manifest.exists():
        return []
    names = (line.split("#", 1)[0].strip() for line in manifest.read_text().splitlines())
    return [name for name in names if name]


def source_of(module: str, roots: list[Path]) -> Path | None:
    """The source file of ``module`` under one of ``roots``, found without importing it."""
    parts = module.split(".")
    for root in roots:
        for candidate in (root.joinpath(*parts).with_suffix(".py"),
                          root.joinpath(*parts, "__init__.py")):
            if candidate.is_file():
                return candidate
    return None


def site_roots() -> list[Path]:
    """The folders installed packages live in (this interpreter's purelib and platlib)."""
    paths = sysconfig.get_paths()
    return list(dict.fromkeys(Path(paths[key]) for key in ("purelib", "platlib")))


def own_sources() -> list[Path]:
    """Descent's own modules."""
    return sorted(path for package in OWN_PACKAGES for path in (ROOT / package).rglob("*.py"))


def _compile(paths: list[str]) -> int:
    """Compile ``paths`` (up-to-date bytecode is left alone); the number that failed."""
    return sum(not compileall.compile_file(path, quiet=2) for path in paths)


def precompile(paths: list[Path], workers: int | None = None) -> int:
    """Byte-compile ``paths`` in ``workers`` processes (default: one per core); returns how
    many failed (a module with a syntax error for this Python is simply left to import)."""
    workers = workers or os.cpu_count() or 1
    names = [str(path) for path in paths]
    if workers == 1 or len(names) < 50:
        return _compile(names)
    chunks = [names[i::workers * 4] for i in range(workers * 4)]  # interleaved: even sizes
    # Spawned, not forked: a caller with threads (a test runner, say) forks badly.
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return sum(pool.map(_compile, chunks))


def startup_sources() -> list[Path]:
    """Descent's own modules and the listed ones found installed."""
    roots = site_roots()
    listed = (source_of(module, roots) for module in listed_modules())
    return own_sources() + sorted({path for path in listed if path is not None})


def imported_modules(stderr: str) -> set[str]:
    """The modules named in ``-X importtime`` output."""
    return {match.group(1) for match in map(IMPORT_LINE.match, stderr.splitlines()) if match}


def installed_only(modules: set[str]) -> list[str]:
    """Those of ``modules`` whose source is an installed package's (not the standard
    library's, which comes compiled, nor Descent's own)."""
    roots = site_roots()
    return sorted(module for module in modules
                  if module.split(".")[0] not in OWN_PACKAGES and source_of(module, roots))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def record_startup(timeout: float = 180.0) -> set[str]:
    """Run `descent up --submit examples/xor.json` in a new folder with ``-X importtime`` in
    every process, stop it once the run is shown finished, and return what they imported."""
    with tempfile.TemporaryDirectory(prefix="descent-record-") as folder:
        env = {**os.environ, "PYTHONPROFILEIMPORTTIME": "1", "PYTHONUNBUFFERED": "1"}
        for name in [n for n in env if n.startswith("DESCENT_")]:
            del env[name]  # embedded defaults, as a newcomer's
        descent = Path(sys.executable).with_name("descent")
        argv = [str(descent), "up", "--port", str(free_port()), "--submit",
                str(ROOT / "examples" / "xor.json")]
        errors = Path(folder) / "stderr.txt"
        with open(errors, "w") as stderr:
            process = subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE,
                                       stderr=stderr, text=True, start_new_session=True)
            # A start that hangs silently is killed, which ends the read below.
            guard = threading.Timer(timeout, os.killpg, (process.pid, signal.SIGKILL))
            guard.start()
            try:
                for line in process.stdout:
                    if line.startswith("$ descent show"):
                        break
                else:
                    stderr.flush()
                    raise RuntimeError("`descent up` ended or timed out:\n"
                                       + errors.read_text()[-3000:])
            finally:
                guard.cancel()
                try:
                    os.killpg(process.pid, signal.SIGINT)
                except ProcessLookupError:
                    pass
                try:
                    process.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
        return imported_modules(errors.read_text())


def write_manifest(modules: list[str], manifest: Path = MANIFEST) -> None:
    header = ("# Installed modules that `descent up`, the API and the workers import when they\n"
              "# start, byte-compiled at install (service/precompile.py). Rewritten by\n"
              "# `python -m service.precompile --record`; do not edit by hand.\n")
    manifest.write_text(header + "".join(f"{module}\n" for module in modules))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.precompile",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--record", action="store_true",
                        help="rewrite startup_modules.txt from a real `descent up`")
    parser.add_argument("--workers", type=int, default=None,
                        help="compiling processes (default: one per core)")
    args = parser.parse_args(argv)
    if args.record:
        modules = installed_only(record_startup())
        write_manifest(modules)
        print(f"{len(modules)} modules written to {MANIFEST}")
        return 0
    precompile(startup_sources(), args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
