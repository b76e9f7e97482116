"""Where the compiled kernels live on disk: one folder per user, named after the content of
the engine's source (see kernels._jitcache, which puts numba's cache there). Plain Python, no
numba, so the API can look at the cache (kernels.compilestate) without loading the engine.

    $NUMBA_CACHE_DIR/descent-<module>-<hash>/        when NUMBA_CACHE_DIR is set
    $XDG_CACHE_HOME/descent/numba/<module>-<hash>/   otherwise (~/.cache when XDG_CACHE_HOME is unset)
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    """The folder under which the kernels' cache folders live (see the module docstring)."""
    configured = os.environ.get("NUMBA_CACHE_DIR")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "descent" / "numba"


def source_digest(py_file: str, also: tuple[str, ...] = ()) -> str:
    """sha256 of ``py_file``'s bytes, then of each file named in ``also`` (beside it)."""
    digest = hashlib.sha256()
    for path in (py_file, *(os.path.join(os.path.dirname(py_file), name) for name in also)):
        with open(path, "rb") as f:
            digest.update(f.read())
    return digest.hexdigest()


def cache_path(name: str) -> Path:
    """``name`` under cache_root(), prefixed "descent-" in a NUMBA_CACHE_DIR shared with
    other projects."""
    return cache_root() / (f"descent-{name}" if os.environ.get("NUMBA_CACHE_DIR") else name)


def cache_folder(py_file: str, also: tuple[str, ...] = ()) -> Path:
    """The folder of the kernels compiled from ``py_file`` (named after its content and that
    of the files in ``also``, whose values it compiles in)."""
    return cache_path(f"{Path(py_file).stem.lstrip('_')}-{source_digest(py_file, also)[:16]}")


# The engine (kernels/_engine.py) compiles in the constants of kernels/codes.py.
ENGINE_FILE = str(Path(__file__).with_name("_engine.py"))
ENGINE_KEY_FILES = ("codes.py",)


def engine_cache_folder() -> Path:
    """The cache folder of the engine's kernels."""
    return cache_folder(ENGINE_FILE, ENGINE_KEY_FILES)
