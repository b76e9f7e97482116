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


def test_the_background_warm_up_holds_the_first_compile_lock_until_its_first_stage_ends():
    process = warmup.start_warm_up()  # the session's cache is warm: it loads, then lets go
    assert process is not None
    try:
        assert process.args[-2] == "--first-holding"
        assert warmup.start_warm_up() is None  # held by that process (it had it at its start)
        compilestate.wait_first_compile()
        assert compilestate.training_kernels_cached()
        assert not compilestate.first_compile_running()
    finally:
        process.terminate()
        process.wait(30)
