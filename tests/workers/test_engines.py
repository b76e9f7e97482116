"""Which engine trains a run while a machine's first compile of the kernels runs
(workers.engines), and the first-compile lock it waits on (kernels.compilestate)."""

import os
import subprocess
import sys
import time

import pytest

from kernels import compilestate
from workers import engines

XOR = {"layers": [2, 8, 1], "epochs": 3000, "dtype": "float64"}


@pytest.fixture
def cold(tmp_path, monkeypatch):
    """An empty kernel cache folder of this engine, and a fresh process's view of it."""
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(engines, "_compiled_ready", False)
    return tmp_path


def hold_lock(seconds: float) -> subprocess.Popen:
    """A process that takes the first-compile lock, says so, and keeps it ``seconds``."""
    code = ("import os, sys, time; from kernels import compilestate as c; "
            "fd = c.lock_first_compile(); print(fd is not None, flush=True); "
            f"time.sleep({seconds})")
    process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "True"
    return process


def test_the_example_run_is_within_the_interpreted_budget():
    assert engines.interpreted_work(XOR, 4, 0) <= engines.INTERPRETED_BUDGET
    digits = {"layers": [64, 32, 10], "epochs": 100}
    assert engines.interpreted_work(digits, 1437, 360) > engines.INTERPRETED_BUDGET


def test_cached_kernels_are_used_compiled(monkeypatch):
    monkeypatch.setattr(engines, "_compiled_ready", False)
    monkeypatch.setattr(compilestate, "training_kernels_cached", lambda: True)
    assert engines.choose_engine({**XOR, "epochs": 10 ** 6}, 4, 0) == "jit"
    assert engines.choose_engine(XOR, 4, 0) == "jit"  # remembered


def test_while_compiling_a_tiny_run_trains_interpreted_and_a_large_one_waits(cold):
    holder = hold_lock(1.5)
    try:
        assert compilestate.first_compile_running()
        assert engines.choose_engine(XOR, 4, 0) == "python"
        started = time.monotonic()
        assert engines.choose_engine({**XOR, "dtype": "float32"}, 4, 0) == "jit"
        assert time.monotonic() - started > 0.5  # it waited for the holder's end
    finally:
        holder.kill()
        holder.wait()
    assert not compilestate.first_compile_running()
    assert engines.choose_engine(XOR, 4, 0) == "jit"


def test_a_large_run_waits_for_the_compile(cold):
    holder = hold_lock(1.0)
    try:
        started = time.monotonic()
        assert engines.choose_engine({**XOR, "epochs": 10 ** 6}, 4, 0) == "jit"
        assert time.monotonic() - started > 0.5
    finally:
        holder.kill()
        holder.wait()


def test_only_one_process_holds_the_lock(cold):
    holder = hold_lock(30)
    try:
        assert compilestate.lock_first_compile() is None
    finally:
        holder.kill()
        holder.wait()
    fd = compilestate.lock_first_compile()  # a killed holder released it
    assert fd is not None
    try:
        assert compilestate.first_compile_running()
    finally:
        os.close(fd)
    assert not compilestate.first_compile_running()
