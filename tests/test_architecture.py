"""DESIGN.md's import table, checked: which package may import which and what from outside
the project, no cycle between packages nor between the modules of one; and the engine options.
The graph is built with ``ast`` over kernels/, service/, workers/ and migrations/ (relative
imports resolved, imports inside functions included). ``python -m tests.test_architecture``
prints the package graph (``-v``: the imports behind each edge)."""

import ast
import pathlib
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from functools import cache

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("kernels", "service", "workers", "migrations")
STDLIB = frozenset(sys.stdlib_module_names)

# The table's rows. A subpackage (or module) of service/ named here is that row; every other
# top-level module of service/ is a domain module; another subpackage has no row yet.
LAYERS = ("kernels", "service.store", "domain", "service.queue", "service.api",
          "service.dashboard", "web", "service.cli", "service.settings", "service.app",
          "workers", "migrations")
SERVICE_ROWS = {"store": "service.store", "queue": "service.queue", "api": "service.api",
                "dashboard": "service.dashboard", "web": "web", "cli": "service.cli",
                "settings": "service.settings", "app": "service.app"}
HTTP_SIDE = {"domain", "web", "service.store", "service.queue", "service.settings", "kernels"}
# Which rows each row may import (besides itself). Where DESIGN.md's table is silent, read in
# its spirit: api and dashboard also use kernels' names and the queue client the app factory
# hands them; the CLI, an entry point like the app factory, also serves the app (service.app),
# migrates (migrations), manages tokens (service.store) and checks the broker (service.queue),
# but reaches api and dashboard only through the app factory.
MAY_IMPORT = {
    "kernels": set(),
    "service.store": set(),
    "domain": {"service.store", "service.queue", "kernels", "service.settings"},
    "service.queue": {"service.settings"},
    "service.api": HTTP_SIDE,
    "service.dashboard": HTTP_SIDE,
    "web": HTTP_SIDE - {"web"},
    "service.cli": {"domain", "web", "service.settings", "service.app", "service.store",
                    "service.queue", "migrations"},
    "service.settings": set(),
    "service.app": HTTP_SIDE | {"service.api", "service.dashboard"},
    "workers": {"kernels", "service.store", "service.queue", "service.settings"},
    "migrations": {"service.store"},
}
HTTP_LIBRARIES = {"flask", "werkzeug", "webargs", "wtforms", "apispec"}
# Imports the module named by argv[1] in a fresh interpreter and prints, for flask, celery or
# workers if they get loaded, the project's import chain that loaded them.
IMPORT_SPY = """
import importlib, os, sys, traceback
class Spy:
    def find_spec(self, name, path=None, target=None):
        if name in ("flask", "celery", "workers"):
            chain = [f"{os.path.relpath(f.filename)}:{f.lineno}" for f in traceback.extract_stack()
                     if f.filename.startswith(os.getcwd()) and ".venv" not in f.filename]
            print(name, "imported at", " <- ".join(reversed(chain)))
sys.meta_path.insert(0, Spy())
importlib.import_module(sys.argv[1])
"""


@dataclass(frozen=True)
class Import:
    """One imported name. ``target``: the module of the tree it loads, else the dotted name
    written; ``missing``: the name written, when the tree has no such module or name."""

    importer: str
    target: str
    path: str
    line: int
    missing: str = ""

    @property
    def top(self) -> str:
        return self.target.split(".")[0]

    @property
    def internal(self) -> bool:
        return self.top in PACKAGES

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.missing or self.target}"


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, pathlib.Path]:
    """Every module of the four packages by dotted name (a package by its own name)."""
    return {_module_name(path): path for package in PACKAGES
            for path in sorted((ROOT / package).rglob("*.py"))}


@cache
def _bound_names(module: str) -> frozenset[str] | None:
    """Names a module binds at its top level (None when it cannot be told: ``import *`` or
    a module ``__getattr__``)."""
    names = set()
    body = list(ast.parse(modules()[module].read_text()).body)
    while body:
        node = body.pop()
        if isinstance(node, (ast.If, ast.Try, ast.With)):
            body += node.body + getattr(node, "orelse", []) + getattr(node, "finalbody", [])
            body += [n for h in getattr(node, "handlers", []) for n in h.body]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            if any(alias.name == "*" for alias in node.names):
                return None
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
    return None if "__getattr__" in names else frozenset(names)


def _resolve(importer: str, path: str, line: int, base: str, name: str | None) -> Import:
    """``import base`` (name None) or ``from base import name``, as an Import."""
    if base.split(".")[0] not in PACKAGES:
        return Import(importer, base, path, line)
    if name is not None and f"{base}.{name}" in modules():
        return Import(importer, f"{base}.{name}", path, line)
    if base in modules():
        bound = _bound_names(base) if name is not None else frozenset()
        missing = "" if bound is None or name is None or name in bound else f"{base}.{name}"
        return Import(importer, base, path, line, missing)
    return Import(importer, base, path, line, base)  # no such module: placed by its name


@cache
def imports() -> tuple[Import, ...]:
    """Every import statement of the four packages, one Import per imported name."""
    found = []
    for module, file in modules().items():
        path = str(file.relative_to(ROOT))
        package = module if file.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(file.read_text(), filename=path)):
            if isinstance(node, ast.Import):
                found += [_resolve(module, path, node.lineno, a.name, None) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module
                if node.level:
                    parts = package.split(".")
                    parts = parts[:len(parts) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                found += [_resolve(module, path, node.lineno, base, a.name) for a in node.names]
    return tuple(dict.fromkeys(found))  # one per module imported on a line


def layer_of(module: str) -> str | None:
    """The table row of a module of the tree (None: a subpackage of service/ with no row)."""
    parts = module.split(".")
    if parts[0] != "service":
        return parts[0]
    if len(parts) == 1:
        return "domain"
    if parts[1] in SERVICE_ROWS:
        return SERVICE_ROWS[parts[1]]
    return None if (ROOT / "service" / parts[1]).is_dir() else "domain"


def _target_layer(imp: Import) -> str | None:
    return layer_of(imp.target) if imp.internal else None


def offences(layer: str, bad) -> list[str]:
    """The imports of the modules of ``layer`` for which ``bad(import)`` is true."""
    return [str(imp) for imp in imports() if layer_of(imp.importer) == layer and bad(imp)]


def beyond(layer: str, rows=None, libraries=None) -> list[str]:
    """Imports of ``layer`` of other rows than ``rows``, and of libraries outside the project
    that are neither stdlib nor in ``libraries`` (None: that side unchecked)."""
    def bad(imp):
        if imp.internal:
            return rows is not None and _target_layer(imp) not in (layer, *rows)
        return libraries is not None and imp.top not in STDLIB and imp.top not in libraries
    return offences(layer, bad)


def layer_graph() -> dict[str, dict[str, list[Import]]]:
    """{importer row: {imported row: the imports behind that edge}}, rows' own edges left out."""
    graph = defaultdict(lambda: defaultdict(list))
    for imp in imports():
        source, target = layer_of(imp.importer), _target_layer(imp)
        if source and target and source != target:
            graph[source][target].append(imp)
    return graph


def cycles(graph: dict) -> list[list[str]]:
    """One shortest cycle (first node repeated last) per strongly connected group of nodes
    (Tarjan's algorithm, then a breadth-first search inside the group)."""
    index, low, stack, groups = {}, {}, [], []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = stack[stack.index(node):]
            del stack[stack.index(node):]
            if len(group) > 1:
                groups.append(set(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    found = []
    for group in groups:
        start = min(group)
        parents, queue = {start: None}, [start]
        for node in queue:
            if start in graph.get(node, ()):
                path = [node]
                while parents[path[-1]] is not None:
                    path.append(parents[path[-1]])
                found.append(path[::-1] + [start])
                break
            for nxt in sorted(set(graph.get(node, ())) & group - parents.keys()):
                parents[nxt] = node
                queue.append(nxt)
    return found


def package_cycles() -> list[str]:
    """The cycles between rows of the table, each with one import behind every step."""
    graph = layer_graph()
    return [" -> ".join(cycle) + "  (" + "; ".join(str(graph[a][b][0]) for a, b in
                                                  zip(cycle, cycle[1:])) + ")"
            for cycle in cycles({a: set(b) for a, b in graph.items()})]


def module_cycles() -> dict[str, list[str]]:
    """{row: its cycles between modules, each with the imports that close it}."""
    edges = defaultdict(lambda: defaultdict(list))
    for imp in imports():
        if imp.internal and imp.target != imp.importer and \
                layer_of(imp.importer) == _target_layer(imp):
            edges[imp.importer][imp.target].append(imp)
    found = defaultdict(list)
    for cycle in cycles(edges):
        steps = "; ".join(str(edges[a][b][0]) for a, b in zip(cycle, cycle[1:]))
        found[layer_of(cycle[0])].append(f"{' -> '.join(cycle)}  ({steps})")
    return found


def describe(verbose: bool = False) -> str:
    """The package graph as text: each row's outgoing edges, then its cycles or none."""
    graph = layer_graph()
    lines = ["package import graph (importer -> imported), tests/test_architecture.py:"]
    for layer in LAYERS:
        targets = [t for t in LAYERS if t in graph.get(layer, {})]
        lines.append(f"  {layer:<17} -> {', '.join(targets) or '(nothing of the project)'}")
        if verbose:
            lines += [f"      {imp}" for t in targets for imp in graph[layer][t]]
    unplaced = sorted({m for m in modules() if layer_of(m) is None})
    if unplaced:
        lines.append(f"  not in the table: {', '.join(unplaced)}")
    lines += [f"cycle between packages: {c}" for c in package_cycles()] or \
        ["no cycles between packages"]
    within = module_cycles()
    lines += [f"cycle inside {layer}: {c}" for layer in sorted(within) for c in within[layer]] \
        or ["no cycles between the modules of a package"]
    return "\n".join(lines)


def _fail(header: str, found: list[str]) -> str:
    return header + ":\n  " + "\n  ".join(found)


def test_every_module_has_a_row_in_the_table():
    unplaced = sorted(m for m in modules() if layer_of(m) is None)
    assert not unplaced, _fail("subpackages of service/ with no row in the table (add them to "
                               "SERVICE_ROWS here and to DESIGN.md)", unplaced)


def test_imports_of_the_project_name_modules_and_names_that_exist():
    missing = [str(imp) for imp in imports() if imp.missing]
    assert not missing, _fail("imports of modules or names the tree does not have", missing)


def test_kernels_import_only_numerics_and_the_standard_library():
    found = beyond("kernels", libraries={"numpy", "numba", "llvmlite"})
    assert not found, _fail("kernels import beyond numpy, numba, llvmlite and stdlib", found)


def test_kernels_import_nothing_of_service_or_workers():
    found = beyond("kernels", rows=())
    assert not found, _fail("kernels import the service or the workers", found)


PARALLEL_ENTRY_POINTS = {"train_epochs_parts", "evaluate_parts"}


def test_engine_kernels_are_cached_and_never_fastmath_or_parallel():
    import numba.core.registry
    from numba.core.caching import FunctionCache

    import kernels._engine as engine
    from kernels._jitcache import KernelCache

    dispatchers = [obj for obj in vars(engine).values()
                   if isinstance(obj, numba.core.registry.CPUDispatcher)]
    assert len(dispatchers) > 10
    for dispatcher in dispatchers:
        options = dispatcher.targetoptions
        # numba's on-disk cache, in the per-user folder keyed by the source (_jitcache).
        assert isinstance(dispatcher._cache, FunctionCache), dispatcher.__name__
        assert type(dispatcher._cache) is KernelCache, dispatcher.__name__
        assert not options.get("fastmath"), dispatcher.__name__
        # Parallel only where batches are split in parts, whose sums run in a fixed order
        # (the same bits on any number of cores: tests/kernels/test_parts.py).
        assert not options.get("parallel") or dispatcher.__name__ in PARALLEL_ENTRY_POINTS, \
            dispatcher.__name__


def test_importing_the_store_loads_no_flask_celery_or_workers():
    result = subprocess.run([sys.executable, "-c", IMPORT_SPY, "service.store"], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    assert not result.stdout, f"import service.store loads:\n{result.stdout}"


def test_store_imports_only_itself_sqlalchemy_numpy_and_the_standard_library():
    # optuna: service.store.search rebuilds a model-based sweep's study from the store's rows
    # in the transaction that fills its slots, which both the API and the workers run.
    found = beyond("service.store", (), {"sqlalchemy", "numpy", "optuna"})
    assert not found, _fail("service.store imports beyond itself, sqlalchemy, numpy, optuna "
                            "and stdlib", found)


def test_nothing_in_service_imports_workers():
    found = [str(i) for i in imports() if i.importer.startswith("service") and i.top == "workers"]
    assert not found, _fail("service imports workers", found)


def test_api_and_dashboard_never_import_each_other():
    found = offences("service.api", lambda imp: _target_layer(imp) == "service.dashboard")
    found += offences("service.dashboard", lambda imp: _target_layer(imp) == "service.api")
    assert not found, _fail("service.api and service.dashboard import each other", found)


def test_domain_modules_know_nothing_of_http_the_cli_or_workers():
    banned = {"service.api", "service.dashboard", "service.cli", "service.app", "web",
              "workers", "migrations"}
    found = offences("domain", lambda imp: _target_layer(imp) in banned
                     or imp.top in HTTP_LIBRARIES or imp.top.startswith("flask_")
                     or imp.top in ("celery", "kombu"))
    assert not found, _fail("domain modules import HTTP, the CLI, the app, Celery or workers "
                            "(they may import store, queue, kernels and settings)", found)


def test_queue_imports_only_settings_celery_kombu_and_the_standard_library():
    found = beyond("service.queue", {"service.settings"}, {"celery", "kombu"})
    assert not found, _fail("service.queue imports beyond settings, celery, kombu and stdlib",
                            found)


def test_settings_import_only_the_standard_library():
    found = beyond("service.settings", (), ())
    assert not found, _fail("service.settings imports beyond the standard library", found)


def test_the_cli_never_imports_workers():
    found = offences("service.cli", lambda imp: imp.top == "workers")
    assert not found, _fail("service.cli imports workers (start celery by module name)", found)


def test_every_package_imports_only_the_rows_the_table_allows():
    found = [str(imp) + f"  ({layer_of(imp.importer)} may not import {_target_layer(imp)})"
             for imp in imports() if imp.internal and layer_of(imp.importer)
             and _target_layer(imp) not in (layer_of(imp.importer), None,
                                            *MAY_IMPORT[layer_of(imp.importer)])]
    assert not found, _fail("imports the table does not allow", found)


def test_workers_import_only_kernels_store_queue_and_settings_of_the_project():
    found = beyond("workers", MAY_IMPORT["workers"])
    assert not found, _fail("workers import service.api, dashboard, cli, app or domain "
                            "modules", found)


def test_migrations_import_only_the_store_alembic_and_sqlalchemy():
    found = beyond("migrations", {"service.store"}, {"alembic", "sqlalchemy"})
    assert not found, _fail("migrations import beyond service.store, alembic, sqlalchemy "
                            "and stdlib", found)


def test_no_cycle_between_packages():
    found = package_cycles()
    assert not found, _fail("cycles between packages", found)


def test_no_cycle_between_the_modules_of_a_package():
    found = [f"{layer}: {cycle}" for layer, found in module_cycles().items() for cycle in found]
    assert not found, _fail("cycles between the modules of a package", found)


if __name__ == "__main__":
    print(describe(verbose="-v" in sys.argv[1:]))


# What a process needs to start must not pull in the heavy libraries only some requests use
# (about a second each on two cores): the API serves without numba (the engine loads on the
# first /predict or /trace, or by the delayed warm-up) and without optuna (a model-based
# sweep's first fill); `descent up` needs neither matplotlib nor optuna.
STARTUP_PROBE = """
import sys
{setup}
print(" ".join(sorted(m for m in ("numba", "scipy", "optuna", "matplotlib") if m in sys.modules)))
"""
STARTUPS = {
    "api": ("from service.app import create_app\n"
            "from service.settings import Settings\n"
            "create_app({'SETTINGS': Settings.from_env({'DESCENT_DATABASE_URL': "
            "'sqlite://'})})", set()),
    "descent up": ("from service.cli import cli\nimport click\n"
                   "cli.get_command(click.Context(cli), 'up')\n"
                   "cli.get_command(click.Context(cli), 'api')", set()),
    "kernels names": ("import kernels, kernels.validation, kernels.compilestate\n"
                      "kernels.DEFAULTS, kernels.DTYPES", set()),
}


def test_starting_the_api_or_descent_up_loads_no_numba_optuna_or_matplotlib():
    for name, (setup, allowed) in STARTUPS.items():
        result = subprocess.run([sys.executable, "-c", STARTUP_PROBE.format(setup=setup)],
                                cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        loaded = set(result.stdout.split()) - allowed
        assert not loaded, f"{name} loads {sorted(loaded)}"
