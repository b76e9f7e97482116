"""Where a run trains: the software, BLAS and CPU of this worker process, recorded with each
run (its ``environment``) so that a rerun can tell whether it ran in the same place.

What does not change within a process is read once per process (per pid: a forked pool
child reads its own, after its thread limits are set); the per-run part (dtype, dataset) is
added by ``run_environment``."""

import os
import platform
from importlib import metadata
from pathlib import Path
from typing import Optional

# CPU flags that change which instructions numba's and BLAS's code may use.
CPU_FLAGS = ("avx", "avx2", "fma", "avx512f")
# Bounds on what is read from files a host controls.
MAX_FILE_BYTES = 1 << 20
MAX_TEXT = 200
CHECKOUT = Path(__file__).resolve().parent.parent

_process: dict = {}  # pid -> this process's environment


def process_environment() -> dict:
    """The environment of this process (computed on the first call in each process)."""
    pid = os.getpid()
    if pid not in _process:
        _process.clear()
        _process[pid] = _read_process_environment()
    return _process[pid]


def run_environment(dtype: str, dataset_id: int, dataset_name: str, content_hash: str,
                    threads: Optional[int] = None,
                    blas_threads: Optional[int] = None) -> dict:
    """The environment recorded with one run: this process's, its dtype and its dataset
    (``content_hash``: SHA-256 over the shapes, dtypes and bytes of the X and y it trains
    on, as ``service.store.arrays.content_hash``), the threads it trains with (``threads``)
    and its BLAS's threads (``blas.num_threads``: ``blas_threads``, by default ``threads``;
    one when its batches are split in parts; None for both: the process's own limit)."""
    environment = {**process_environment(), "dtype": dtype,
                   "dataset": {"id": dataset_id, "name": dataset_name,
                               "content_hash": content_hash}}
    if threads is not None:
        environment["threads"] = threads
    if blas_threads is None:
        blas_threads = threads
    if blas_threads is not None and environment.get("blas"):
        environment["blas"] = {**environment["blas"], "num_threads": blas_threads}
    return environment


def _read_process_environment() -> dict:
    return {
        "descent": {"version": _version("descent"), "commit": git_commit(CHECKOUT)},
        "python": platform.python_version(),
        "numpy": _version("numpy"),
        "numba": _version("numba"),
        "llvmlite": _version("llvmlite"),
        "scipy": _version("scipy"),
        "blas": kernel_blas(),
        "cpu": cpu_info(),
    }


def _version(distribution: str) -> Optional[str]:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def _read_text(path: Path) -> Optional[str]:
    try:
        with open(path, "rb") as file:
            return file.read(MAX_FILE_BYTES).decode("utf-8", "replace")
    except OSError:
        return None


def git_commit(root: Path) -> Optional[str]:
    """The commit checked out at ``root`` when it is a git checkout (or worktree), read from
    the files under .git without running git; None otherwise. Says nothing of uncommitted
    changes (seeing them would mean running git)."""
    dot_git = root / ".git"
    if dot_git.is_file():  # a worktree or submodule: "gitdir: PATH"
        text = _read_text(dot_git) or ""
        if not text.startswith("gitdir:"):
            return None
        git_dir = (root / text[len("gitdir:"):].strip()).resolve()
    elif dot_git.is_dir():
        git_dir = dot_git
    else:
        return None
    head = (_read_text(git_dir / "HEAD") or "").strip()
    if not head.startswith("ref:"):
        return _sha(head)
    ref = head[len("ref:"):].strip()
    common = git_dir
    commondir = _read_text(git_dir / "commondir")
    if commondir:
        common = (git_dir / commondir.strip()).resolve()
    for base in (git_dir, common):
        sha = _sha((_read_text(base / ref) or "").strip())
        if sha:
            return sha
    for line in (_read_text(common / "packed-refs") or "").splitlines():
        sha, _, name = line.partition(" ")
        if name.strip() == ref:
            return _sha(sha)
    return None


def _sha(text: str) -> Optional[str]:
    text = text.strip().lower()
    return text if len(text) in (40, 64) and all(c in "0123456789abcdef" for c in text) else None


def kernel_blas() -> Optional[dict]:
    """The BLAS numba's kernels call (SciPy's, through cython_blas: see kernels/_engine.py's
    ensure_blas; NumPy's wheel brings a BLAS of its own, with a similar name) as
    threadpoolctl sees it now: library, version, core type and threads; None when there is
    none."""
    import scipy
    from threadpoolctl import threadpool_info

    import kernels

    kernels.load_engine()  # (loads that BLAS, as a worker has)

    blas = [info for info in threadpool_info() if info.get("user_api") == "blas"]
    if not blas:
        return None
    info = next((i for i in blas if _inside(i.get("filepath"), scipy.__file__)), None)
    if info is None:  # one BLAS shared by NumPy and SciPy (a distribution's build)
        import numpy

        info = next((i for i in blas if not _inside(i.get("filepath"), numpy.__file__)),
                    blas[0])
    return {"internal_api": info.get("internal_api"), "version": info.get("version"),
            "architecture": info.get("architecture"),
            "threading_layer": info.get("threading_layer"),
            "num_threads": info.get("num_threads"),
            "library": os.path.basename(info.get("filepath") or "") or None}


def _inside(library: Optional[str], package_init: str) -> bool:
    """Whether ``library`` belongs to the package of ``package_init``: in its folder, or in
    the PACKAGE.libs folder beside it where wheels keep bundled libraries."""
    if not library:
        return False
    folder = Path(package_init).resolve().parent
    path = Path(library).resolve()
    return any(base == path.parent or base in path.parents
               for base in (folder, folder.with_name(folder.name + ".libs")))


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> dict:
    """The CPU's model, architecture and the flags of CPU_FLAGS (from /proc/cpuinfo where
    there is one; flags None where they cannot be read)."""
    model, flags = None, None
    text = _read_text(cpuinfo)
    if text:
        for line in text.splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "Model", "cpu model") and model is None:
                model = value.strip()[:MAX_TEXT]
            elif key in ("flags", "Features") and flags is None:
                flags = set(value.split())
            if model is not None and flags is not None:
                break
    return {"model": model or platform.processor()[:MAX_TEXT] or None,
            "machine": platform.machine() or None,
            "flags": None if flags is None else {flag: flag in flags for flag in CPU_FLAGS}}
