"""What the interpreter may load for a run: classification, refusals, no bytecode (issue 11, item 4)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import py_compile
import sys
from pathlib import Path

import pytest

from trainwitness.errors import MalformedInputError
from trainwitness.identity.code import source_files
from trainwitness.identity.imports import (
    ImportMonitor,
    RefusedImport,
    attested_imports,
    classify_origin,
    scan_modules,
    source_only_imports,
)

_names = iter(range(10**6))


def _fresh_name(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{next(_names)}"


@pytest.fixture
def path_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A directory on sys.path for this test only; modules imported from it are forgotten afterwards."""
    monkeypatch.syspath_prepend(str(tmp_path))
    before = set(sys.modules)
    yield tmp_path
    for name in set(sys.modules) - before:
        del sys.modules[name]


def test_modules_are_classified_by_where_they_come_from(path_entry: Path) -> None:
    import torch

    assert classify_origin("json", json.__file__) == "installed"
    assert classify_origin("torch", torch.__file__) == "installed"
    assert classify_origin("trainwitness.cli", importlib.import_module("trainwitness.cli").__file__) == "framework"
    assert classify_origin("sys", "built-in") == "builtin"
    local = path_entry / "m.py"
    local.write_text("")
    assert classify_origin("m", str(local)) == "local"


# -- source trees ------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["helper.pyc", "old.pyo", "fast.so", "fast.cpython-311-x86_64-linux-gnu.so", "win.pyd"])
def test_a_tree_holding_code_python_runs_without_source_is_refused(tmp_path: Path, name: str) -> None:
    (tmp_path / "a.py").write_text("a = 1\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / name).write_bytes(b"\0")
    with pytest.raises(MalformedInputError, match=f"sub/{name} is compiled code"):
        source_files(tmp_path)


def test_a_symlink_of_any_kind_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "evil.py").write_text("x = 1\n")
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a.py").write_text("a = 1\n")
    (tree / "linked").symlink_to(outside, target_is_directory=True)  # os.walk would silently skip it
    with pytest.raises(MalformedInputError, match="linked is a symbolic link"):
        source_files(tree)
    (tree / "linked").unlink()
    (tree / "f.py").symlink_to(outside / "evil.py")
    with pytest.raises(MalformedInputError, match="f.py is a symbolic link"):
        source_files(tree)
    (tree / "f.py").unlink()
    (tmp_path / "alias").symlink_to(tree, target_is_directory=True)
    with pytest.raises(MalformedInputError, match="is a symbolic link"):
        source_files(tmp_path / "alias")
    assert [f.path for f in source_files(tree)] == ["a.py"]


# -- bytecode ----------------------------------------------------------------------------------------

def _package_with_planted_bytecode(root: Path) -> str:
    """A package whose spec.py says X = 1 and whose __pycache__ holds unchecked-hash bytecode saying X = 2."""
    name = _fresh_name("planted")
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "mod.py").write_text("X = 2\n")
    saved, sys.pycache_prefix = sys.pycache_prefix, None
    try:
        py_compile.compile(str(package / "mod.py"), cfile=importlib.util.cache_from_source(str(package / "mod.py")),
                           invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH, doraise=True)
    finally:
        sys.pycache_prefix = saved
    (package / "mod.py").write_text("X = 1\n")
    return name


def test_planted_unchecked_hash_bytecode_is_what_python_runs_by_default(path_entry: Path) -> None:
    # The control: without the protection, Python runs the bytecode, not the source.
    name = _package_with_planted_bytecode(path_entry)
    saved, sys.pycache_prefix = sys.pycache_prefix, None
    try:
        assert importlib.import_module(f"{name}.mod").X == 2
    finally:
        sys.pycache_prefix = saved


def test_local_code_is_imported_from_source_only(path_entry: Path) -> None:
    name = _package_with_planted_bytecode(path_entry)
    pycache = path_entry / name / "__pycache__"
    before = sorted(pycache.iterdir())
    with source_only_imports():
        assert importlib.import_module(f"{name}.mod").X == 1
    assert sorted(pycache.iterdir()) == before  # nothing written either (no __init__ bytecode)


def test_installed_modules_keep_their_bytecode_caches(path_entry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Only local code is recompiled: the installation is trusted, and recompiling it costs seconds.
    monkeypatch.delitem(sys.modules, "colorsys", raising=False)
    with source_only_imports():
        installed = importlib.import_module("colorsys")
        (path_entry / "localmod_x.py").write_text("")
        local = importlib.import_module("localmod_x")
    assert type(installed.__spec__.loader).__name__ == "SourceFileLoader"
    assert type(local.__spec__.loader).__name__ == "_SourceOnlyLoader"


def test_attested_imports_reimport_a_module_the_process_loaded_from_bytecode(path_entry: Path) -> None:
    name = _package_with_planted_bytecode(path_entry)
    saved, sys.pycache_prefix = sys.pycache_prefix, None
    try:
        stale = importlib.import_module(f"{name}.mod")
    finally:
        sys.pycache_prefix = saved
    assert stale.X == 2
    with attested_imports([path_entry / name]):
        assert importlib.import_module(f"{name}.mod").X == 1  # the checked source, imported afresh
    assert sys.modules[f"{name}.mod"].X == 1  # the checked module stays; the stale one is not put back over it
    unrelated = _fresh_name("unrelated")
    (path_entry / f"{unrelated}.py").write_text("")
    kept = importlib.import_module(unrelated)
    with attested_imports([path_entry / name]):
        assert unrelated not in sys.modules  # set aside while the upstream code runs...
    assert sys.modules[unrelated] is kept  # ...and given back when nothing replaced it


# -- the import finder -------------------------------------------------------------------------------

def test_local_code_outside_the_attested_trees_is_refused_before_it_runs(path_entry: Path) -> None:
    attested, other = _fresh_name("attested"), _fresh_name("other")
    (path_entry / attested).mkdir()
    (path_entry / attested / "__init__.py").write_text(f"try:\n    import {other}\nexcept ImportError:\n    pass\n")
    marker = path_entry / "ran"
    (path_entry / f"{other}.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    with pytest.raises(RefusedImport, match=f"module {other} .* lies outside every attested source tree"):
        with attested_imports([path_entry / attested]):
            importlib.import_module(attested)  # the code swallows the ImportError: refused all the same
    assert not marker.exists()


def test_a_sourceless_module_is_refused(path_entry: Path) -> None:
    attested = _fresh_name("attested")
    package = path_entry / attested
    package.mkdir()
    (package / "__init__.py").write_text("")
    source = path_entry / "compiled_from.py"
    source.write_text("X = 3\n")
    py_compile.compile(str(source), cfile=str(package / "hidden.pyc"), doraise=True)  # importable as attested.hidden
    with pytest.raises(RefusedImport, match="compiled bytecode without its source"):
        with attested_imports([package]):
            importlib.import_module(f"{attested}.hidden")


def test_the_monitor_records_local_packages_and_refuses_sourceless_ones(path_entry: Path) -> None:
    name = _fresh_name("sibling")
    (path_entry / f"{name}.py").write_text("Y = 1\n")
    monitor = ImportMonitor()
    importlib.import_module(name)
    import trainwitness.workloads.digits  # noqa: F401  (the framework: never recorded)

    monitor.scan()
    assert name in monitor.found.local and not any(k.startswith("trainwitness") for k in monitor.found.local)
    hidden = _fresh_name("hidden")
    py_compile.compile(str(path_entry / f"{name}.py"), cfile=str(path_entry / f"{hidden}.pyc"), doraise=True)
    module = importlib.import_module(hidden)
    with pytest.raises(MalformedInputError, match="compiled bytecode without its source"):
        scan_modules({hidden: module})


# -- files read at import ----------------------------------------------------------------------------

def _reader_package(root: Path, outside: Path) -> str:
    """A package whose __init__ reads a data file inside it and, in ``mod``, one outside every tree."""
    name = _fresh_name("reader")
    package = root / name
    package.mkdir()
    (package / "table.txt").write_text("inside\n")
    (package / "__init__.py").write_text("import pathlib\nINSIDE = (pathlib.Path(__file__).parent / 'table.txt').read_text()\n")
    (package / "mod.py").write_text(f"with open({str(outside)!r}) as f:\n    OUTSIDE = f.read()\n")
    return name


def test_a_file_read_at_import_outside_the_attested_trees_is_refused(path_entry: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "config.txt"
    outside.write_text("not covered by any digest\n")
    name = _reader_package(path_entry, outside)
    with attested_imports([path_entry / name]):
        assert importlib.import_module(name).INSIDE == "inside\n"  # inside its tree: covered by the digest
    with pytest.raises(RefusedImport, match=f"module {name}.mod reads {outside}"):
        with attested_imports([path_entry / name]):
            importlib.import_module(f"{name}.mod")


def test_the_prover_refuses_a_module_that_reads_a_file_outside_its_tree(path_entry: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "config.txt"
    outside.write_text("x\n")
    name = _reader_package(path_entry, outside)
    with source_only_imports() as refused:
        monitor = ImportMonitor(refused)
        importlib.import_module(name)
        monitor.scan()  # reading its own table.txt is fine
        importlib.import_module(f"{name}.mod")
        with pytest.raises(MalformedInputError, match=f"reads {outside} while it is imported"):
            monitor.scan()


def test_importing_installed_code_is_not_a_local_read(path_entry: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The import system reads the installed modules' files (and their bytecode): not the module's reads.
    for module in [m for m in sys.modules if m == "xml.dom" or m.startswith("xml.dom.")]:
        monkeypatch.delitem(sys.modules, module)
    name = _fresh_name("user")
    (path_entry / f"{name}.py").write_text("import xml.dom.minidom\nimport trainwitness.workloads.digits\n")
    with attested_imports([path_entry / f"{name}.py"]):
        importlib.import_module(name)


def test_a_read_through_a_library_call_is_the_module_s_read(path_entry: Path, tmp_path_factory: pytest.TempPathFactory) -> None:
    outside = tmp_path_factory.mktemp("elsewhere") / "weights.txt"
    outside.write_text("1 2 3\n")
    name = _fresh_name("via")
    (path_entry / f"{name}.py").write_text(f"import pathlib\nTEXT = pathlib.Path({str(outside)!r}).read_text()\n")
    with pytest.raises(RefusedImport, match=f"reads {outside}"):
        with attested_imports([path_entry / f"{name}.py"]):
            importlib.import_module(name)
