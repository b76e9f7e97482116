"""A worker's background warm-up of the kernels a first run does not need is skipped once an
earlier one cached them all for this engine and toolchain."""

import json

from kernels import compilestate
from workers import warmup


def test_the_cache_is_marked_complete_for_one_toolchain(tmp_path, monkeypatch):
    marker = tmp_path / "engine" / "rest-cached.json"
    monkeypatch.setattr(compilestate, "_rest_marker", lambda: marker)
    assert not compilestate.rest_kernels_cached()
    compilestate.record_rest_cached()
    assert compilestate.rest_kernels_cached()
    marker.write_text(json.dumps({**compilestate._toolchain(), "numba": "0.1.0"}))
    assert not compilestate.rest_kernels_cached()  # another numba: warm again
    marker.write_text("{not json")
    assert not compilestate.rest_kernels_cached()


def test_warm_rest_marks_the_cache_and_a_later_start_spawns_nothing(tmp_path, monkeypatch):
    marker = tmp_path / "rest-cached.json"
    monkeypatch.setattr(compilestate, "_rest_marker", lambda: marker)
    process = warmup.start_warm_rest()  # not marked yet: the background process starts
    try:
        assert process is not None and process.args[-1] == "--rest"
    finally:
        process.terminate()
        process.wait(30)
    warmup.warm_rest()  # in this process: from the session's warm cache
    assert compilestate.rest_kernels_cached()
    assert warmup.start_warm_rest() is None


HOLDER = """
import sys, time
from pathlib import Path
from kernels import compilestate
with compilestate.first_compile_lock():
    Path(sys.argv[1]).write_text("held")
    time.sleep(1.0)
    Path(sys.argv[2]).write_text("released")
"""


def test_warm_first_waits_for_another_process_compiling_then_only_loads(tmp_path,
                                                                         monkeypatch):
    """While another process holds the first-compile lock (make up's early warm-up
    compiling), a worker's warm_first waits for it, then loads what it compiled: it
    finishes after the lock's release and records no compile time of its own."""
    import subprocess
    import sys
    import time

    held, released = tmp_path / "held", tmp_path / "released"
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(held), str(released)])
    try:
        deadline = time.monotonic() + 60
        while not held.exists():
            assert holder.poll() is None and time.monotonic() < deadline
            time.sleep(0.02)
        answers = iter([False, True])  # cold when it starts; cached once it got the lock
        monkeypatch.setattr(compilestate, "training_kernels_cached", lambda: next(answers))
        recorded = []
        monkeypatch.setattr(compilestate, "record_compile_seconds", recorded.append)
        monkeypatch.setattr(compilestate, "publish", lambda *args: None)
        warmup.warm_first()
        assert released.exists()  # it returned only after the holder let go
        assert recorded == []  # it loaded: no compile time to remember
    finally:
        holder.wait(60)
