"""Import directions and engine options that the design depends on (DESIGN.md)."""

import ast
import pathlib
import sys

import numba.core.registry

import kernels._engine as engine

ROOT = pathlib.Path(__file__).resolve().parent.parent


def top_level_imports(package: str) -> set[str]:
    """First components of every absolute import in a package's modules."""
    names = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return names


def test_kernels_import_only_numerics_and_the_standard_library():
    allowed = {"numpy", "numba", "llvmlite"} | set(sys.stdlib_module_names)
    assert top_level_imports("kernels") <= allowed


def test_engine_kernels_are_cached_and_never_fastmath_or_parallel():
    dispatchers = [obj for obj in vars(engine).values()
                   if isinstance(obj, numba.core.registry.CPUDispatcher)]
    assert len(dispatchers) > 10
    for dispatcher in dispatchers:
        options = dispatcher.targetoptions
        assert type(dispatcher._cache).__name__ == "FunctionCache", dispatcher.__name__
        assert not options.get("fastmath"), dispatcher.__name__
        assert not options.get("parallel"), dispatcher.__name__
