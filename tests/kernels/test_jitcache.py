"""The kernel cache (kernels._jitcache): one folder per user under NUMBA_CACHE_DIR or
~/.cache/descent/numba, named after the source's content, so that a new clone of the same
source loads what an earlier one compiled; a folder that cannot be written falls back to
numba's own place. Each case runs fresh Python processes on a small module of its own."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODULE = '''
from kernels._jitcache import njit

@njit(cache=True)
def twice(x):
    return 2 * x
'''
CALL = '''
import json, mod
assert mod.twice(21) in (42, 63)
stats = mod.twice.stats
print(json.dumps({"hits": sum(stats.cache_hits.values()),
                  "misses": sum(stats.cache_misses.values()),
                  "path": mod.twice._cache.cache_path}))
'''


def call(folder: Path, **env) -> dict:
    """Import ``mod`` from ``folder`` in a fresh process and call its kernel once."""
    environment = {k: v for k, v in os.environ.items()
                   if k not in ("NUMBA_CACHE_DIR", "XDG_CACHE_HOME")}
    environment.update(env, PYTHONPATH=os.pathsep.join([str(folder), str(ROOT)]))
    done = subprocess.run([sys.executable, "-c", CALL], cwd=folder, env=environment,
                          capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def clone(tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    (folder / "mod.py").write_text(MODULE)
    return folder


def test_a_new_clone_loads_what_another_compiled(tmp_path):
    cache = tmp_path / "cache"
    first = call(clone(tmp_path, "one"), NUMBA_CACHE_DIR=str(cache))
    assert first["misses"] == 1 and first["hits"] == 0
    assert Path(first["path"]).parent == cache
    assert Path(first["path"]).name.startswith("descent-mod-")
    # Another folder, another modification time, the same source: loaded, not compiled.
    second = call(clone(tmp_path, "two"), NUMBA_CACHE_DIR=str(cache))
    assert second == {**first, "hits": 1, "misses": 0}


def test_a_changed_source_has_a_folder_of_its_own(tmp_path):
    cache = tmp_path / "cache"
    first = call(clone(tmp_path, "one"), NUMBA_CACHE_DIR=str(cache))
    changed = clone(tmp_path, "two")
    (changed / "mod.py").write_text(MODULE.replace("2 * x", "x + x"))
    second = call(changed, NUMBA_CACHE_DIR=str(cache))
    assert second["misses"] == 1 and second["path"] != first["path"]


def test_without_numba_cache_dir_the_cache_is_the_users(tmp_path):
    result = call(clone(tmp_path, "one"), XDG_CACHE_HOME=str(tmp_path / "xdg"))
    assert Path(result["path"]).parent == tmp_path / "xdg" / "descent" / "numba"
    assert Path(result["path"]).name.startswith("mod-")
    home = tmp_path / "home"
    result = call(clone(tmp_path, "two"), HOME=str(home))
    assert Path(result["path"]).parent == home / ".cache" / "descent" / "numba"


def test_an_unwritable_cache_falls_back_to_numbas_own_place(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    folder = clone(tmp_path, "one")
    result = call(folder, XDG_CACHE_HOME=str(blocker))
    assert Path(result["path"]) == folder / "__pycache__"
    assert result["misses"] == 1
    shutil.rmtree(folder / "__pycache__")


KEYED_MODULE = '''
from kernels._jitcache import njit
from consts import FACTOR

CACHE_KEY_FILES = ("consts.py",)

@njit(cache=True)
def twice(x):
    return FACTOR * x
'''


def test_files_a_module_compiles_in_are_part_of_the_key(tmp_path):
    # The engine compiles in the constants of kernels/codes.py: a change there must not load
    # kernels compiled with the old values.
    cache = tmp_path / "cache"
    folders = []
    for name, factor in (("one", 2), ("two", 2), ("three", 3)):
        folder = clone(tmp_path, name)
        (folder / "mod.py").write_text(KEYED_MODULE)
        (folder / "consts.py").write_text(f"FACTOR = {factor}\n")
        folders.append(folder)
    first = call(folders[0], NUMBA_CACHE_DIR=str(cache))
    same = call(folders[1], NUMBA_CACHE_DIR=str(cache))
    assert same == {**first, "hits": 1, "misses": 0}
    changed = call(folders[2], NUMBA_CACHE_DIR=str(cache))
    assert changed["misses"] == 1 and changed["path"] != first["path"]


def test_the_engine_cache_folder_covers_the_codes(tmp_path):
    from kernels import cachepaths

    assert cachepaths.ENGINE_KEY_FILES == ("codes.py",)
    engine = cachepaths.engine_cache_folder()
    assert engine.name.startswith("engine-") or engine.name.startswith("descent-engine-")
    assert engine != cachepaths.cache_folder(cachepaths.ENGINE_FILE)
