"""Byte-compiling ahead what Descent's processes import at start (service/precompile.py)."""

import importlib.util
import os

import pytest

from service import precompile


def test_sources_are_found_by_name_without_importing(tmp_path):
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("raise SystemExit('imported')\n")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "mod.py").write_text("x = 1\n")
    roots = [tmp_path / "elsewhere", tmp_path]
    assert precompile.source_of("pkg", roots) == tmp_path / "pkg" / "__init__.py"
    assert precompile.source_of("pkg.sub", roots) == tmp_path / "pkg" / "sub" / "__init__.py"
    assert precompile.source_of("pkg.mod", roots) == tmp_path / "pkg" / "mod.py"
    assert precompile.source_of("pkg.missing", roots) is None
    assert precompile.source_of("_extension_module", roots) is None


@pytest.mark.parametrize("workers", [1, 2])
def test_listed_sources_are_compiled_and_bad_ones_counted(tmp_path, workers):
    good = [tmp_path / f"m{i}.py" for i in range(60)]
    for path in good:
        path.write_text(f"VALUE = {path.stem!r}\n")
    bad = tmp_path / "bad.py"
    bad.write_text("def broken(:\n")
    assert precompile.precompile(good + [bad], workers=workers) == 1
    for path in good:
        assert os.path.isfile(importlib.util.cache_from_source(str(path)))
    compiled = importlib.util.cache_from_source(str(good[0]))
    before = os.stat(compiled).st_mtime_ns
    assert precompile.precompile(good, workers=workers) == 0  # up to date: left alone
    assert os.stat(compiled).st_mtime_ns == before


def test_importtime_output_is_read_as_module_names():
    stderr = "\n".join([
        "import time: self [us] | cumulative | imported package",
        "import time:       120 |        120 |   _io",
        "import time:      1500 |       2100 |     sqlalchemy.orm.session",
        "import time:        30 |         30 | flask",
        "[2026-12-03 17:00:00] INFO something else",
    ])
    assert precompile.imported_modules(stderr) == {"_io", "sqlalchemy.orm.session", "flask"}
    assert precompile.installed_only({"flask", "service.app", "os", "no_such_module"}) == \
        ["flask"]


@pytest.mark.slow
def test_the_manifest_lists_what_descent_up_imports():
    """startup_modules.txt covers the installed modules a real `descent up` (the CLI, the
    API, a worker, the example run) imports; after a dependency change, rewrite it with
    `python -m service.precompile --record`. A few modules of slack: what a worker imports
    can depend on timing (e.g. a retry path)."""
    imported = precompile.installed_only(precompile.record_startup())
    listed = set(precompile.listed_modules())
    missing = sorted(set(imported) - listed)
    assert len(imported) > 300
    assert len(missing) <= 5, (f"{len(missing)} modules missing from {precompile.MANIFEST}; "
                               f"run `python -m service.precompile --record`: {missing[:20]}")
