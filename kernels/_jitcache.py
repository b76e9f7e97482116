"""Where numba keeps the compiled kernels: one folder per user, keyed by the engine's source.

numba's own ``cache=True`` writes beside the source (``__pycache__``) or, with
NUMBA_CACHE_DIR, in a subfolder named after the source's absolute path: a new clone, a moved
checkout or a new virtualenv finds nothing there and compiles every kernel again (20-45 s on
two cores). Here the folder is named after a hash of the source file's bytes, so
any checkout of the same engine finds the kernels any earlier one compiled:

    $NUMBA_CACHE_DIR/descent-<module>-<hash>/        when NUMBA_CACHE_DIR is set
    $XDG_CACHE_HOME/descent/numba/<module>-<hash>/   otherwise (~/.cache when XDG_CACHE_HOME is unset)

Each file name also carries the Python version and each entry the numba version and the CPU,
so one folder serves several of them. A folder that cannot be created or written falls back
to numba's own locations. Deleting the folder is always safe: the kernels compile again.
"""

from __future__ import annotations

import os

import numba
from numba.core.caching import CompileResultCacheImpl, FunctionCache, _CacheLocator

from .cachepaths import cache_folder, source_digest
from .vectorwidth import prefer_wide_vectors

# Before any kernel is decorated: the first decoration sets up numba's CPU target.
prefer_wide_vectors()

# A module whose jitted functions compile in values from other files beside it names them
# in this global; their content is then part of the cache key too.
KEY_FILES_GLOBAL = "CACHE_KEY_FILES"


class ContentKeyedLocator(_CacheLocator):
    """A numba cache locator: ``cache_folder`` of the function's source file (and of the
    files its module names in CACHE_KEY_FILES), with their content hash as its freshness
    stamp (not the modification time, which a new clone changes)."""

    def __init__(self, py_func, py_file):
        also = tuple(py_func.__globals__.get(KEY_FILES_GLOBAL, ()))
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._stamp = source_digest(py_file, also)
        self._cache_path = str(cache_folder(py_file, also))

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return self._stamp

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if not os.path.isfile(py_file):
            return None
        locator = cls(py_func, py_file)
        try:
            locator.ensure_cache_path()
        except OSError:  # not creatable or not writable: numba's own locations
            return None
        return locator


class _KernelCacheImpl(CompileResultCacheImpl):
    _locator_classes = [ContentKeyedLocator, *CompileResultCacheImpl._locator_classes]


class KernelCache(FunctionCache):
    """numba's per-function cache, located by ContentKeyedLocator."""

    _impl_class = _KernelCacheImpl


def njit(*, cache: bool = False, **options):
    """``numba.njit(**options)`` as a decorator factory; ``cache=True`` caches the compiled
    function on disk where ContentKeyedLocator says instead of where numba would."""
    decorate = numba.njit(**options)

    def wrap(py_func):
        dispatcher = decorate(py_func)
        if cache:
            # What Dispatcher.enable_caching does, with this cache class.
            dispatcher._cache = KernelCache(dispatcher.py_func)
        return dispatcher

    return wrap
