"""The identity of the training program: digests of its source trees.

The source root is the top-level package of the entry point's module (or the module file when it
is not in a package), found without importing it. The one exception is trainwitness's own built-in
workloads, whose root is ``trainwitness/workloads``: the framework around them is identified by
its version in the recorded environment. Every other local top-level package (or module) the run
imports, found by ``identity/imports.py``, is a source tree of its own, listed in
``code.packages`` with its digest and file count; installed distributions the run imports are
listed in ``code.distributions`` by name and version.

Files counted: every regular file below a root except ``__pycache__`` directories and names
starting with ``.``. Refused (the tree cannot be attested): a symbolic link of any kind (file or
directory, the root included), a compiled module outside ``__pycache__`` (``*.pyc``, ``*.pyo``:
Python imports a sourceless ``.pyc`` as readily as source) and an extension module (``*.so``,
``*.pyd``: machine code no source digest covers). ``__pycache__`` is skipped because neither the
prover nor the verifier loads local code from bytecode (``identity/imports.py``). Paths are relative,
``/``-separated, sorted by their UTF-8 bytes. Content is hashed as stored (no line-ending
normalisation: the bytes are what runs); the executable bit is recorded. Tree digest: Merkle root
over leaves ``{"executable","path","sha256","type":"file"}``.

The per-file list is kept in the store (``run.json``, ``code_files``; ``imports.json`` for the
packages); it is trusted only after it hashes to the signed tree digest, and then tells an auditor
exactly which files differ (``diff_files``). Where the prover names where the source can be
obtained (``train --source-uri``), that URI is signed with the digest (``code.source_uri``,
declared, not verified).
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import importlib.util
import os
import stat
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from trainwitness.commit.canonical import JSONValue, canonical_json
from trainwitness.commit.hashing import format_digest
from trainwitness.commit.merkle import merkle_root
from trainwitness.commit.safe_open import open_untrusted
from trainwitness.errors import MalformedInputError

__all__ = [
    "SourceFile",
    "FileDiff",
    "locate_source_root",
    "locate_package",
    "package_identity",
    "source_files",
    "tree_digest",
    "files_from_json",
    "diff_files",
    "git_commit",
    "code_identity",
]


@dataclass(frozen=True)
class SourceFile:
    path: str
    sha256: str
    executable: bool

    def leaf(self) -> bytes:
        return canonical_json({"executable": self.executable, "path": self.path, "sha256": self.sha256, "type": "file"})


def locate_source_root(entry_point: str) -> Path:
    """The directory (or single file) whose digest identifies the program, found without importing it."""
    module = entry_point.partition(":")[0]
    if module.startswith("trainwitness.workloads."):
        return Path(__file__).resolve().parents[1] / "workloads"
    return locate_package(module.split(".")[0], f"entry point {entry_point!r}")


def locate_package(top_level: str, what: str | None = None) -> Path:
    """The directory (or single file) of top-level package or module ``top_level``, found without importing it.

    Raises MalformedInputError when it is not importable here, is a namespace package spread over
    several directories, or has no source file.
    """
    what = what or f"package {top_level!r}"
    if not top_level.isidentifier():  # "../x", "/abs/path.py" or "": find_spec raises ValueError on some
        raise MalformedInputError(f"{what} does not name a Python package")
    try:
        spec = _find_spec_on_path(top_level)
    except (ImportError, ValueError) as e:
        raise MalformedInputError(f"{what}: package {top_level!r} cannot be located ({e})") from e
    if spec is None:
        raise MalformedInputError(f"{what}: package {top_level!r} is not importable")
    if spec.submodule_search_locations:
        locations = list(spec.submodule_search_locations)
        if len(locations) != 1:
            raise MalformedInputError(f"{top_level} is a namespace package spread over {len(locations)} directories")
        return Path(locations[0])
    if spec.origin is None:
        raise MalformedInputError(f"{top_level} has no source file")
    return Path(spec.origin)


def _find_spec_on_path(top_level: str) -> importlib.machinery.ModuleSpec | None:
    """``importlib.util.find_spec`` without its ``sys.modules`` shortcut: where an import would find the
    package now, not where a module of that name was loaded from earlier in this process."""
    for finder in sys.meta_path:
        find_spec = getattr(finder, "find_spec", None)
        if find_spec is not None and (spec := find_spec(top_level, None)) is not None:
            return spec  # type: ignore[no-any-return]
    return None


def _skipped(name: str) -> bool:
    return name.startswith(".") or name == "__pycache__"


# Files Python would load as code without their source: refused wherever they sit in a tree.
_UNATTESTABLE = (".pyc", ".pyo", ".pyd", *importlib.machinery.EXTENSION_SUFFIXES)


def _refuse(root: Path, rel: str, why: str) -> None:
    raise MalformedInputError(f"source tree {root}: {rel} {why}; it cannot be attested")


def source_files(root: Path) -> list[SourceFile]:
    """Every file of the tree at ``root`` (a directory or one file), hashed; refuses what cannot be attested.

    Raises MalformedInputError for a symbolic link (file, directory or the root itself), a compiled
    module or an extension module anywhere outside ``__pycache__``, or a special file.
    """
    if root.is_symlink():
        _refuse(root, root.name, "is a symbolic link")
    if root.is_file():
        candidates = [(root.name, root)]
    else:
        candidates = []
        for directory, dirnames, filenames in os.walk(root, followlinks=False):
            for d in dirnames:  # os.walk lists a symlinked directory but does not enter it: refuse it instead
                if not _skipped(d) and (Path(directory) / d).is_symlink():
                    _refuse(root, (Path(directory) / d).relative_to(root).as_posix(), "is a symbolic link")
            dirnames[:] = sorted(d for d in dirnames if not _skipped(d))
            for name in filenames:
                if not _skipped(name):
                    full = Path(directory) / name
                    candidates.append((full.relative_to(root).as_posix(), full))
    files = []
    for rel, full in candidates:
        info = full.lstat()
        if stat.S_ISLNK(info.st_mode):
            _refuse(root, rel, "is a symbolic link")
        if not stat.S_ISREG(info.st_mode):
            raise MalformedInputError(f"source tree {root}: {rel} is not a regular file")
        if rel.endswith(_UNATTESTABLE):
            _refuse(root, rel, "is compiled code (bytecode or an extension module) that Python could import without source")
        digest = _file_sha256(full, f"source tree {root}: {rel}")
        files.append(SourceFile(rel, "sha256:" + digest, bool(info.st_mode & stat.S_IXUSR)))
    files.sort(key=lambda f: f.path.encode("utf-8"))
    return files


def _file_sha256(path: Path, name: str) -> str:
    """The hex SHA-256 of a source file, read by the one safe open (the file hashed is the one checked)."""
    h = hashlib.sha256()
    with open_untrusted(path, name, None) as (f, _):
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def tree_digest(files: list[SourceFile]) -> str:
    return format_digest(merkle_root([f.leaf() for f in files]))


def files_from_json(value: object, where: str) -> list[SourceFile]:
    """A per-file list read from untrusted JSON (check it against a signed tree digest before use)."""
    if not isinstance(value, list):
        raise MalformedInputError(f"{where}: the file list is not a list")
    files = []
    for item in value:
        if (
            not isinstance(item, dict)
            or set(item) != {"path", "sha256", "executable"}
            or not isinstance(item["path"], str)
            or not isinstance(item["sha256"], str)
            or not isinstance(item["executable"], bool)
        ):
            raise MalformedInputError(f"{where}: each file is {{path, sha256, executable}}")
        files.append(SourceFile(item["path"], item["sha256"], item["executable"]))
    return files


@dataclass(frozen=True)
class FileDiff:
    added: tuple[str, ...]  # here, not attested
    removed: tuple[str, ...]  # attested, not here
    changed: tuple[str, ...]  # content or executable bit differs

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.changed)

    def describe(self, limit: int = 10) -> str:
        parts = []
        for label, paths in (("added", self.added), ("removed", self.removed), ("changed", self.changed)):
            if paths:
                more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
                parts.append(f"{label}: {', '.join(paths[:limit])}{more}")
        return "; ".join(parts) or "no file differs"


def diff_files(attested: list[SourceFile], local: list[SourceFile]) -> FileDiff:
    theirs = {f.path: f for f in attested}
    ours = {f.path: f for f in local}
    return FileDiff(
        added=tuple(sorted(set(ours) - set(theirs))),
        removed=tuple(sorted(set(theirs) - set(ours))),
        changed=tuple(sorted(p for p in set(ours) & set(theirs) if ours[p] != theirs[p])),
    )


def git_commit(root: Path) -> str | None:
    """HEAD of the git work tree holding ``root``, or None (no git, not a work tree, or dirty)."""
    where = root if root.is_dir() else root.parent
    try:
        head = subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run(
            ["git", "-C", str(where), "status", "--porcelain", "--", "."], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if head.returncode != 0 or dirty.returncode != 0 or dirty.stdout.strip():
        return None
    return head.stdout.strip()


def code_identity(entry_point: str, root: Path | None = None) -> tuple[dict[str, JSONValue], list[SourceFile]]:
    """The entry point's own tree: ``entry_point``, ``source_root``, ``tree_digest``, ``file_count``, ``git_commit``."""
    root = root or locate_source_root(entry_point)
    files = source_files(root)
    identity: dict[str, JSONValue] = {
        "entry_point": entry_point,
        "source_root": root.name,
        "tree_digest": tree_digest(files),
        "file_count": len(files),
        "git_commit": git_commit(root),
    }
    return identity, files


def package_identity(top_level: str) -> tuple[dict[str, JSONValue], list[SourceFile]]:
    """One ``code.packages`` entry: a local top-level package's ``name``, ``tree_digest``, ``file_count``."""
    files = source_files(locate_package(top_level))
    return {"name": top_level, "tree_digest": tree_digest(files), "file_count": len(files)}, files
