"""Where the verifier gets the store's files: a local directory, or a URL read through ``fetch``.

One narrow interface for both (``StoreReader``): the verifier asks for the store's index files as a
local directory (``index_dir``), then, once it has drawn the segments, for the checkpoints those
segments need (``stage_checkpoints``). A local store *is* that directory: every file is opened by
``commit.store``'s readers, which refuse symlinks, special files and oversize files, exactly as
before. A remote store is mirrored into a private staging directory holding only what was asked
for, so the same readers (and a sandboxed worker, which has no network) read it like a local one.

Nothing unverified is kept. A fetched checkpoint is decoded and its state digest checked against
its inclusion-proven leaf (every link of a delta chain against its own) before it enters the
cache; a fetched manifest is checked against the signed summary and root first; the weights file
against the subject's SHA-256. The cache (``VerifiedCache``) is keyed by those digests, so an entry
can only be found by the digest it was checked against, and it is checked again on every use.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from trainwitness.commit.atomic import atomic_write, move_into_place, temporary_path
from trainwitness.commit.hashing import parse_digest
from trainwitness.commit.hints import HINTS_FILE, MAX_HINTS_BYTES
from trainwitness.commit.run_declaration import MAX_RUN_FILE_BYTES
from trainwitness.commit.safe_open import read_untrusted
from trainwitness.commit.statement import TrainingClaim
from trainwitness.commit.store import (
    INDEX_FILE,
    MANIFEST_FILE,
    MAX_INDEX_BYTES,
    RUN_FILE,
    checkpoint_relpath,
    delta_relpath,
    find_checkpoint,
)
from trainwitness.data.manifest import read_manifest
from trainwitness.errors import FetchError, MalformedInputError, MissingInputError
from trainwitness.tensors.checkpoint import MAX_CHECKPOINT_BYTES
from trainwitness.tensors.checkpoint_reader import delta_base
from trainwitness.tensors.delta import MAX_DELTA_CHAIN
from trainwitness.verifier.evidence import Evidence
from trainwitness.verifier.fetch import Fetcher, is_url

__all__ = ["StoreReader", "LocalStore", "RemoteStore", "VerifiedCache", "open_store", "default_cache_dir"]


MAX_MANIFEST_BYTES = 64 * 1024**3


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/trainwitness`` (``~/.cache/trainwitness`` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "trainwitness"


def _hex(digest: str) -> str:
    return parse_digest(digest, "cache key").hex()


@dataclass(frozen=True)
class VerifiedCache:
    """Files that passed a check, stored under the digest they were checked against.

    ``root/checkpoints/<state hex>.<kind>`` (a full checkpoint file), ``root/checkpoints/<state
    hex>.after.<previous state hex>.delta.safetensors.zst`` (a delta depends on its base as well),
    ``root/manifests/<root hex>.jsonl``, ``root/weights/<sha256 hex>.safetensors``. Entries are
    written whole (temporary name, then rename) and only by ``put``, after the caller's check.
    """

    root: Path

    def path(self, kind: str, name: str) -> Path:
        return self.root / kind / name

    def get(self, kind: str, name: str) -> Path | None:
        path = self.path(kind, name)
        return path if path.is_file() and not path.is_symlink() else None

    def put(self, kind: str, name: str, verified: Path) -> None:
        """Keep a copy of the checked file ``verified`` (a hard link where the filesystem allows)."""
        target = self.path(kind, name)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = temporary_path(target)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        try:
            os.link(verified, tmp)
        except OSError:
            shutil.copyfile(verified, tmp)
        move_into_place(tmp, target)

    def put_bytes(self, kind: str, name: str, data: bytes) -> None:
        target = self.path(kind, name)
        if not target.exists():
            atomic_write(target, data)

    def stage_into(self, cached: Path, dest: Path) -> None:
        """Place a cached file in a staging directory (hard link, else copy): never a symlink the readers refuse."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(cached, dest)
        except OSError:
            shutil.copyfile(cached, dest)


class StoreReader:
    """The store as the verifier sees it: a local directory of the index files, then the checkpoints it asks for."""

    location: str

    def index_dir(self, claim: TrainingClaim) -> Path:
        """A local directory holding run.json (if any), index.jsonl, manifest.jsonl and (exact mode) hints.jsonl."""
        raise NotImplementedError

    def stage_checkpoints(self, evidence: Evidence, indices: Iterable[int]) -> None:
        """Make checkpoints ``indices`` readable in ``index_dir``, each already checked against its leaf."""
        raise NotImplementedError

    def close(self) -> None:
        """Remove anything staged (a remote store's private directory)."""

    @property
    def checkpoint_bytes_fetched(self) -> int:
        return 0

    @property
    def index_bytes_fetched(self) -> int:
        return 0


@dataclass
class LocalStore(StoreReader):
    """A store directory on this machine: read in place by ``commit.store``'s safe readers."""

    path: Path

    def __post_init__(self) -> None:
        self.location = str(self.path)

    def index_dir(self, claim: TrainingClaim) -> Path:
        return self.path

    def stage_checkpoints(self, evidence: Evidence, indices: Iterable[int]) -> None:
        return None  # each checkpoint is checked against its leaf when it is read, as always


@dataclass
class RemoteStore(StoreReader):
    """A store at a URL (``http(s)://`` or ``s3://``), mirrored on demand into a private staging directory."""

    url: str
    fetcher: Fetcher
    cache: VerifiedCache | None
    staging_parent: Path | None = None
    _staging: Path | None = None
    _verified: set[int] = field(default_factory=set)
    _checkpoint_bytes: int = 0
    _index_bytes: int = 0

    def __post_init__(self) -> None:
        self.location = self.url
        self.url = self.url.rstrip("/")

    @property
    def staging(self) -> Path:
        if self._staging is None:
            parent = self.staging_parent or (self.cache.root / "staging" if self.cache is not None else None)
            if parent is not None:
                parent.mkdir(parents=True, exist_ok=True)
            self._staging = Path(tempfile.mkdtemp(prefix="store-", dir=parent))
        return self._staging

    def close(self) -> None:
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None

    @property
    def checkpoint_bytes_fetched(self) -> int:
        return self._checkpoint_bytes

    @property
    def index_bytes_fetched(self) -> int:
        return self._index_bytes

    def _download(self, relpath: str, max_bytes: int, what: str) -> int:
        dest = self.staging / relpath
        dest.parent.mkdir(parents=True, exist_ok=True)
        return self.fetcher.download(f"{self.url}/{relpath}", dest, max_bytes, what)

    def index_dir(self, claim: TrainingClaim) -> Path:
        # run.json is optional (its code file list only names differing files); the rest is required.
        try:
            self._index_bytes += self._download(RUN_FILE, MAX_RUN_FILE_BYTES, "store file")
        except FetchError as e:
            if not getattr(e, "not_found", False):
                raise
        self._index_bytes += self._download(INDEX_FILE, MAX_INDEX_BYTES, "store index")
        if claim.exact is not None:
            self._index_bytes += self._download(HINTS_FILE, MAX_HINTS_BYTES, "store hints file")
        self._stage_manifest(claim)
        return self.staging

    def _stage_manifest(self, claim: TrainingClaim) -> None:
        """The manifest from the cache (by signed root) or fetched, checked against the signed summary either way."""
        name = f"{_hex(claim.manifest.root)}.jsonl"
        dest = self.staging / MANIFEST_FILE
        cached = self.cache.get("manifests", name) if self.cache is not None else None
        if cached is not None:
            self.cache.stage_into(cached, dest)  # type: ignore[union-attr]
        else:
            self._index_bytes += self._download(MANIFEST_FILE, MAX_MANIFEST_BYTES, "store manifest")
        read_manifest(dest, claim.manifest)  # raises on a manifest that is not the signed one
        if cached is None and self.cache is not None:
            self.cache.put("manifests", name, dest)

    def _cache_name(self, evidence: Evidence, j: int, relpath: str) -> str:
        state = _hex(evidence.checkpoint(j).state_digest)
        if relpath.endswith(".delta.safetensors.zst"):
            before = _hex(evidence.checkpoint(j - 1).state_digest) if j > 0 else "none"
            return f"{state}.after.{before}.delta.safetensors.zst"
        return state + (".safetensors.zst" if relpath.endswith(".zst") else ".safetensors")

    def _stage_file(self, evidence: Evidence, j: int, as_base: bool) -> str:
        """Checkpoint j's file in the staging directory (from the cache or the server); its relative path.

        ``as_base``: j is the base of a delta being reconstructed, and a delta chain runs through delta
        files only (``checkpoint_reader.read_checkpoint``), so only j's delta file will do.
        """
        step = evidence.index.checkpoints[j].step
        candidates: tuple[str, ...] = (delta_relpath(step), checkpoint_relpath(step, True), checkpoint_relpath(step, False))
        if as_base:
            candidates = candidates[:1]
        if self.cache is not None:
            for relpath in candidates[1:] + candidates[:1]:  # a cached full file needs no base
                cached = self.cache.get("checkpoints", self._cache_name(evidence, j, relpath))
                if cached is not None:
                    self.cache.stage_into(cached, self.staging / relpath)
                    return relpath
        for relpath in candidates:
            url = f"{self.url}/{relpath}"
            if self.fetcher.exists(url, "checkpoint"):
                self._checkpoint_bytes += self._download(relpath, MAX_CHECKPOINT_BYTES, "checkpoint")
                return relpath
        tried = ", ".join(f"{self.url}/{c}" for c in candidates)
        raise FetchError(f"store {self.url}: the checkpoint for step {step} is missing (not found at {tried})")

    def stage_checkpoints(self, evidence: Evidence, indices: Iterable[int]) -> None:
        for i in sorted(set(indices)):
            if i in self._verified:
                continue
            chain = []  # i, then the bases its delta files name, back to a keyframe or a file already here
            j: int | None = i
            while j is not None:
                if j in self._verified and j != i and (self.staging / delta_relpath(evidence.index.checkpoints[j].step)).is_file():
                    break  # its delta file is staged and checked: the chain reads on from there
                relpath = self._stage_file(evidence, j, as_base=j != i)
                chain.append((j, relpath))
                if relpath != delta_relpath(evidence.index.checkpoints[j].step):
                    break
                base = delta_base(self.staging, relpath)
                if base is not None and base != j - 1:
                    raise MalformedInputError(f"{self.url}/{relpath}: a delta must be against the previous checkpoint ({j - 1}), not {base}")
                if len(chain) > MAX_DELTA_CHAIN:
                    raise MalformedInputError(f"{self.url}/{relpath}: more than {MAX_DELTA_CHAIN} delta files lie between it and a keyframe")
                j = base
            # The check: every state along the chain against its own committed digest (ReplayMismatchError
            # names a tampered file); the bytes counted as read are not this pre-check's.
            read = evidence.checkpoint_bytes_read
            evidence.load_checkpoint(i)
            evidence.checkpoint_bytes_read = read
            for j, relpath in chain:
                self._verified.add(j)
                if self.cache is not None:
                    self.cache.put("checkpoints", self._cache_name(evidence, j, relpath), self.staging / find_checkpoint(self.staging, evidence.index.checkpoints[j].step))

    def weights(self, url: str, subject_sha256: str, max_bytes: int) -> bytes:
        return fetch_weights(self.fetcher, self.cache, url, subject_sha256, max_bytes)


def fetch_weights(fetcher: Fetcher, cache: VerifiedCache | None, url: str, subject_sha256: str, max_bytes: int) -> bytes:
    """The weights file at ``url``: from the cache when the subject's digest is there, else fetched.

    Only bytes whose SHA-256 is the subject's are cached; the caller checks the digest again.
    """
    name = f"{subject_sha256}.safetensors"
    cached = cache.get("weights", name) if cache is not None else None
    if cached is not None:
        try:
            data = read_untrusted(cached, f"cached weights {cached}", max_bytes)
        except (MissingInputError, MalformedInputError):
            data = b""  # unusable: fetched again
        if hashlib.sha256(data).hexdigest() == subject_sha256:
            return data
    data = fetcher.read(url, max_bytes, "weights file")
    if cache is not None and hashlib.sha256(data).hexdigest() == subject_sha256:
        cache.put_bytes("weights", name, data)
    return data


def open_store(location: str | Path, fetcher: Fetcher | None, cache: VerifiedCache | None) -> StoreReader:
    """A ``RemoteStore`` for a URL, else a ``LocalStore``."""
    if is_url(str(location)):
        if fetcher is None:
            raise ValueError("a remote store needs a Fetcher")
        return RemoteStore(str(location), fetcher, cache)
    return LocalStore(Path(location))
