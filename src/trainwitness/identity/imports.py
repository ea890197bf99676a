"""What the interpreter loads for a run's build and steps, outside the Python installation.

The code identity (``identity/code.py``) names source trees; this module finds which ones a run
needs and keeps the interpreter to them. Every module in ``sys.modules`` is one of:

* **built in** (``sys.builtin_module_names``, frozen modules, namespace portions without a file,
  and modules other code made in memory, whose origin is no file);
* **framework**: ``trainwitness`` itself, identified by its version in the recorded environment
  (its built-in workloads are also a source root of their own, see ``code.locate_source_root``);
* **installed**: a file under the Python installation (the standard library, ``site-packages``:
  ``sysconfig``'s ``stdlib``, ``platstdlib``, ``purelib``, ``platlib`` and ``site``'s directories).
  Those that belong to an installed distribution are recorded by distribution name and version
  (``importlib.metadata.packages_distributions``) and compared by the verifier with its own;
* **local**: anything else, e.g. a shared ``models/`` package on ``PYTHONPATH`` or the training
  program itself. A local module must be Python source (``.py``): a sourceless ``.pyc``, an
  extension module or any other loader is refused, since no source digest could cover it. Local
  modules are grouped by top-level name; each top-level package (or single-file module) is one
  source tree, hashed like the entry point's (``code.source_files``), and listed in the identity.

The prover records the local trees and distributions its run imported (``ImportMonitor``: the
modules that appear in ``sys.modules`` from just before the entry point is imported to the end of
training, and every top-level name an ``import`` statement executes meanwhile), and imports local
code from source only (``source_only_imports``). The verifier runs
the upstream code inside ``attested_imports``: local modules already imported by the calling
process are set aside so that they are imported afresh, and an import finder, first on
``sys.meta_path``, refuses before it runs any local module outside the attested trees and any
local module that is not source, and loads the rest from their ``.py`` files alone: a
``__pycache__`` file is never read. While a local module's top level runs, an audit hook (PEP 578)
refuses any file it opens for reading (itself, or through a library call such as ``numpy.load``)
outside the attested trees, the installation and the machine's own directories (``/etc``,
``/usr``, ``/dev``, ``/proc``, ``/sys``). Elsewhere (installed modules keep their bytecode caches: the installation
(installed modules keep their bytecode caches: the installation is trusted, and recompiling
torch's lazily imported modules would cost seconds per process). Files that imported code reads by itself (data
files) are covered only when they lie inside an attested tree.
"""

from __future__ import annotations

import builtins
import contextlib
import importlib.abc
import importlib.machinery
import importlib.metadata
import importlib.util
import os
import site
import sys
import sysconfig
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import CodeType, FrameType, ModuleType
from typing import Any, Literal

from trainwitness.errors import MalformedInputError

__all__ = [
    "ModuleKind",
    "ImportedCode",
    "ImportMonitor",
    "RefusedImport",
    "classify_origin",
    "installed_distributions",
    "source_only_imports",
    "attested_imports",
]

ModuleKind = Literal["builtin", "framework", "installed", "local"]
_FRAMEWORK = "trainwitness"
_MAIN_NAMES = ("__main__", "__mp_main__")


@lru_cache(maxsize=1)
def _installation_dirs() -> tuple[str, ...]:
    """The Python installation's own directories, resolved, each ending in a separator."""
    paths = sysconfig.get_paths()
    dirs = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib") if key in paths}
    dirs.update(site.getsitepackages() if hasattr(site, "getsitepackages") else [])
    if site.ENABLE_USER_SITE:
        dirs.add(site.getusersitepackages())
    return tuple(sorted({os.path.join(os.path.realpath(d), "") for d in dirs}))


def _inside(path: str, directory: str) -> bool:
    return path.startswith(directory)


def _is_framework(name: str) -> bool:
    return name == _FRAMEWORK or name.startswith(_FRAMEWORK + ".")


def classify_origin(name: str, origin: str | None) -> ModuleKind:
    """Where a module named ``name`` loaded from file ``origin`` (None: no file) comes from."""
    if _is_framework(name):
        return "framework"
    if origin is None or origin in ("built-in", "frozen") or name in sys.builtin_module_names:
        return "builtin"
    if not os.path.isabs(origin) or not os.path.exists(origin):
        return "builtin"  # made in memory by code that is itself covered (torch names one "torch-git"): no file to load
    real = os.path.realpath(origin)
    if any(_inside(real, d) for d in _installation_dirs()):
        return "installed"
    return "local"


def _origin(module: ModuleType) -> str | None:
    spec = getattr(module, "__spec__", None)
    origin = getattr(spec, "origin", None) if spec is not None else None
    if origin is None and spec is not None and spec.submodule_search_locations is None:
        return None
    if origin is None:  # a namespace package: its portion's directory, if there is exactly one
        locations = list(getattr(spec, "submodule_search_locations", None) or [])
        return locations[0] if len(locations) == 1 else None
    return str(origin)


def _is_source(origin: str) -> bool:
    return origin.endswith(tuple(importlib.machinery.SOURCE_SUFFIXES)) or os.path.isdir(origin)


def refusal(name: str, origin: str) -> str | None:
    """Why a local module loaded from ``origin`` cannot be attested, or None when it is source."""
    if _is_source(origin):
        return None
    if origin.endswith(tuple(importlib.machinery.BYTECODE_SUFFIXES) + (".pyo",)):
        what = "compiled bytecode without its source"
    elif origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES) + (".pyd",)):
        what = "an extension module (machine code)"
    else:
        what = "not a Python source file"
    return f"module {name} is loaded from {origin}, {what}: no source digest can cover it"


@lru_cache(maxsize=1)
def _distributions_by_module() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def installed_distributions(top_level: str) -> dict[str, str]:
    """The installed distributions (name -> version) that provide top-level import name ``top_level``."""
    found = {}
    for dist in _distributions_by_module().get(top_level, []):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            found[dist] = importlib.metadata.version(dist)
    return found


@dataclass
class ImportedCode:
    """What a run imported beyond the framework and the standard library."""

    local: dict[str, str] = field(default_factory=dict)  # top-level name -> one module file under it (where it was found)
    distributions: dict[str, str] = field(default_factory=dict)  # distribution name -> version

    def merge(self, other: ImportedCode) -> bool:
        """Add ``other``'s findings; True when anything was new."""
        before = (len(self.local), len(self.distributions))
        for name, origin in other.local.items():
            self.local.setdefault(name, origin)
        for dist, version in other.distributions.items():
            self.distributions.setdefault(dist, version)
        return (len(self.local), len(self.distributions)) != before


def scan_modules(modules: Mapping[str, ModuleType | None]) -> ImportedCode:
    """Classify ``modules``; raises MalformedInputError naming a local module that is not source."""
    found = ImportedCode()
    for name, module in sorted(modules.items()):
        if module is None or name in _MAIN_NAMES:
            continue
        origin = _origin(module)
        kind = classify_origin(name, origin)
        top = name.partition(".")[0]
        if kind == "installed":
            found.distributions.update(installed_distributions(top))
        elif kind == "local" and origin is not None:
            why = refusal(name, origin)
            if why is not None:
                raise MalformedInputError(why)
            found.local.setdefault(top, origin)
    return found


class ImportMonitor:
    """The code a run imports: the modules that appear in ``sys.modules`` after the monitor starts, and
    every top-level name an ``import`` statement executed meanwhile names (a module the process had
    imported already, such as a sibling package a script imported at its top, still counts).

    Start it before the entry point is imported (``start``, which wraps ``builtins.__import__``;
    ``stop`` unwraps it); ``scan()`` after the build and again before each checkpoint (cheap: only
    names not seen before are classified).
    """

    def __init__(self, refused: list[str] | None = None) -> None:
        self._seen = set(sys.modules)
        self._named: set[str] = set()  # top-level names that import statements named since start()
        self._classified: set[str] = set()
        self.found = ImportedCode()
        self._refused = refused if refused is not None else []  # from source_only_imports: files read at import
        self._original: Any = None

    def start(self) -> None:
        if self._original is not None:
            return
        original = builtins.__import__
        named = self._named

        def watched(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
            top = name.partition(".")[0]
            if level:  # a relative import: of the importing package's own top level
                top = str((globals or {}).get("__package__") or "").partition(".")[0]
            if top:
                named.add(top)
            return original(name, globals, locals, fromlist, level)

        self._original = original
        builtins.__import__ = watched

    def stop(self) -> None:
        if self._original is not None:
            builtins.__import__ = self._original
            self._original = None

    def scan(self) -> bool:
        """Classify the code imported since the last scan; True when the imported code grew.

        Raises MalformedInputError for a local module that is not source, or that read a file
        outside its own tree while it was imported.
        """
        if self._refused:
            raise MalformedInputError(self._refused[0])
        modules = dict(sys.modules)
        new = {name for name in modules if name not in self._seen}
        self._seen.update(new)
        tops = ({name.partition(".")[0] for name in new} | self._named) - self._classified
        self._classified |= tops
        checked = {name: m for name, m in modules.items() if name in new or name.partition(".")[0] in tops}
        return self.found.merge(scan_modules(checked))


class RefusedImport(MalformedInputError, ImportError):
    """An import the attested code identity does not cover (exit 2: the verifier cannot run what was attested)."""


def _within(origin: str, roots: Sequence[Path]) -> bool:
    real = Path(os.path.realpath(origin))
    return any(real == root or root in real.parents for root in roots)


# Files a local module opens while it is imported: checked by an audit hook (PEP 578) against the
# trees the identity covers. A stack per thread: (module, allowed roots, where refusals go).
_importing = threading.local()
_hook_installed = False


@lru_cache(maxsize=1)
def _framework_dirs() -> tuple[str, ...]:
    """Where trainwitness itself lives (its source may sit outside the installation: an editable install)."""
    dirs: set[str] = set()
    for name in (_FRAMEWORK, f"{_FRAMEWORK}.prover", f"{_FRAMEWORK}.verifier"):
        module = sys.modules.get(name)
        dirs.update(os.path.join(os.path.realpath(d), "") for d in getattr(module, "__path__", []) or [])
    return tuple(sorted(dirs))


def _is_reading(mode: object, flags: object) -> bool:
    if isinstance(mode, str):
        return not any(c in mode for c in "wax+")
    return isinstance(flags, int) and flags & os.O_ACCMODE == os.O_RDONLY


def _opener_is_local(frame: FrameType | None) -> bool:
    """Whether local code asked for the open: the innermost frame outside the installation and trainwitness.

    Library frames in between are looked through (``pathlib.Path.read_text``, ``numpy.load`` called
    from local code are local reads); the import system's own frames stop the search (it reading a
    module's code is not the module reading a file).
    """
    own = _installation_dirs() + _framework_dirs()
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith("<frozen importlib"):
            return False
        if not filename.startswith("<") and not os.path.realpath(filename).startswith(own):
            return classify_origin("", filename) == "local"
        frame = frame.f_back
    return False


# The machine's own files (devices, kernel interfaces, system configuration and data): like the
# installation, part of the auditor's machine, not of the program.
_SYSTEM_DIRS = ("/dev/", "/proc/", "/sys/", "/etc/", "/usr/")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event != "open":
        return
    stack = getattr(_importing, "stack", None)
    if not stack or len(args) < 3 or not isinstance(args[0], (str, bytes, os.PathLike)) or not _is_reading(args[1], args[2]):
        return
    if not _opener_is_local(sys._getframe(1)):
        return  # the import system, or installed code on its own account (an import of torch, say)
    name, roots, refused = stack[-1]
    path = os.path.realpath(os.fsdecode(args[0]))
    if path.startswith(_installation_dirs() + _SYSTEM_DIRS) or _within(path, roots):
        return
    refused.append(
        f"module {name} reads {path} while it is imported, outside every attested source tree: "
        "no digest covers that file (move it into the package, or read it as declared data)"
    )


def _watch_imports() -> None:
    global _hook_installed
    if not _hook_installed:  # an audit hook cannot be removed: one for the process, idle outside an import
        sys.addaudithook(_audit)
        _hook_installed = True


class _SourceOnlyLoader(importlib.machinery.SourceFileLoader):
    """Loads a module from its ``.py`` file alone: no cached bytecode is read, none is written.

    ``SourceLoader.get_code`` would first look for ``__pycache__/<name>.<tag>.pyc`` and use it when
    its header matches (an unchecked-hash ``.pyc`` always does): this compiles the source instead.
    While the module's top level runs, every file it opens for reading must lie in ``roots`` (or the
    installation); others are added to ``refused``.
    """

    def __init__(self, fullname: str, path: str, roots: Sequence[Path], refused: list[str]) -> None:
        super().__init__(fullname, path)
        self.roots, self.refused = roots, refused

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)  # type: ignore[arg-type]

    def exec_module(self, module: ModuleType) -> None:
        stack = _importing.__dict__.setdefault("stack", [])
        stack.append((module.__name__, self.roots, self.refused))
        try:
            super().exec_module(module)
        finally:
            stack.pop()


def _own_root(fullname: str, origin: str) -> Path:
    """The source tree a local module belongs to: its top-level package's directory, or its own file."""
    top = fullname.partition(".")[0]
    parent = sys.modules.get(top)
    locations = list(getattr(getattr(parent, "__spec__", None), "submodule_search_locations", None) or [])
    if top != fullname and len(locations) == 1:
        return Path(os.path.realpath(locations[0]))
    path = Path(os.path.realpath(origin))
    return path.parent if path.name == "__init__.py" else path


class _LocalCodeFinder(importlib.abc.MetaPathFinder):
    """First on ``sys.meta_path``: finds a module with the finders after it; local modules are then
    loaded from source only (``_SourceOnlyLoader``). With ``roots``, local code outside them, or
    local code that is not source, is refused before any of it runs."""

    def __init__(self, roots: Sequence[Path] | None) -> None:
        self.roots = None if roots is None else [Path(os.path.realpath(r)) for r in roots]
        self.refused: list[str] = []

    def find_spec(self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None) -> importlib.machinery.ModuleSpec | None:
        for finder in sys.meta_path:
            if finder is self or isinstance(finder, _LocalCodeFinder) or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        origin = spec.origin if spec.origin is not None else _namespace_origin(spec)
        if origin is None or classify_origin(fullname, origin) != "local":
            return spec
        why = refusal(fullname, origin)
        if why is None and self.roots is not None and not _within(origin, self.roots):
            why = (
                f"module {fullname} ({origin}) is imported by the training code but lies outside every attested "
                "source tree (the entry point's package and code.packages): the verifier runs only attested code"
            )
        if why is not None:
            if self.roots is None:
                return spec  # recording: the monitor's scan names it and refuses the run
            self.refused.append(why)
            raise RefusedImport(why)
        if spec.origin is None or not spec.origin.endswith(tuple(importlib.machinery.SOURCE_SUFFIXES)):
            return spec  # a namespace package: no code of its own
        roots = self.roots if self.roots is not None else [_own_root(fullname, spec.origin)]
        return importlib.util.spec_from_file_location(
            fullname, spec.origin, loader=_SourceOnlyLoader(fullname, spec.origin, roots, self.refused),
            submodule_search_locations=spec.submodule_search_locations,
        )


@contextlib.contextmanager
def source_only_imports() -> Iterator[list[str]]:
    """Local modules imported inside are compiled from their source, never from bytecode (the prover's side).

    A ``__pycache__`` file next to a local source (even one compiled with the unchecked-hash
    invalidation mode, which Python would use without looking at the source) is never consulted;
    installed modules keep their caches (the installation is trusted, and recompiling it is slow).
    Yields the list of refusals (a local module reading, at import, a file outside its own tree):
    the caller refuses the run when it is not empty.
    """
    _watch_imports()
    finder = _LocalCodeFinder(None)
    sys.meta_path.insert(0, finder)
    try:
        yield finder.refused
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)


def _namespace_origin(spec: importlib.machinery.ModuleSpec) -> str | None:
    locations = list(spec.submodule_search_locations or [])
    return locations[0] if len(locations) == 1 else None


def _set_aside(name: str, module: ModuleType, top_levels: set[str]) -> bool:
    """Whether an already imported module must be imported afresh inside ``attested_imports``."""
    if name in _MAIN_NAMES or _is_framework(name):
        return False
    return name.partition(".")[0] in top_levels or classify_origin(name, _origin(module)) == "local"


@contextlib.contextmanager
def attested_imports(roots: Sequence[Path]) -> Iterator[None]:
    """Run upstream code that may import only the attested source trees ``roots`` (and the installation).

    Inside: every local module already imported in this process, and every module of the attested
    top-level names wherever it came from, is set aside (restored on exit), so that whatever the
    code imports is imported afresh; every import of local code is checked before it runs and
    loaded from source only (``_LocalCodeFinder``). Raises ``RefusedImport`` (exit 2) naming the
    first refused module, even when the code caught the ImportError it saw. Modules imported inside
    stay imported (they are the checked ones); a set-aside module is restored where nothing of its
    name was imported again.
    """
    real_roots = [Path(os.path.realpath(r)) for r in roots]
    top_levels = {r.name.removesuffix(".py") for r in real_roots}
    set_aside = {name: m for name, m in list(sys.modules.items()) if m is not None and _set_aside(name, m, top_levels)}
    for name in set_aside:
        del sys.modules[name]
    _watch_imports()
    finder = _LocalCodeFinder(real_roots)
    sys.meta_path.insert(0, finder)
    importlib.invalidate_caches()
    try:
        try:
            yield
        finally:
            if finder.refused:
                raise RefusedImport(finder.refused[0])
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        for name, module in set_aside.items():
            sys.modules.setdefault(name, module)
        importlib.invalidate_caches()
