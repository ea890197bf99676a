"""``STORE/run.json``: what the prover declared when the run began (docs/FORMAT.md section 5).

Written once by ``trainwitness train`` as canonical JSON, before the first step, and never changed:
a resumed run must declare the same thing again. ``attest`` builds the statement from it; the
verifier reads it only to name a store of another run and to list differing source files (its
``code_files``, trusted only when they hash to the signed tree digest). Both sides build it through
``RunDeclaration.from_json``, which checks every field's type and refuses missing and unknown ones,
so a damaged file is one ``MalformedInputError`` (exit 2) naming it, never a traceback.

Fields (every one present unless marked optional):

| field | value |
|---|---|
| ``format`` | ``trainwitness-store/v2`` |
| ``code`` | the entry point's tree: ``entry_point``, ``source_root``, ``tree_digest``, ``file_count``, ``git_commit``, ``source_uri`` |
| ``code_files`` | ``[{"path", "sha256", "executable"}]``: that tree's files |
| ``environment`` | what the run executed under (``statement.ENVIRONMENT_FIELDS``) |
| ``hyperparameters`` | the resolved hyperparameters (the core ones in their ranges) |
| ``data`` | ``{"dataset", "manifest", "num_samples", "sampler"}``: the dataset manifest's summary |
| ``compression`` | the zstd level of checkpoint files, or null |
| ``weights_license`` | an SPDX expression, or null |
| ``delta_keyframe_every`` | optional: delta checkpoints, a keyframe every N (docs/STORAGE.md) |
| ``distributed`` | optional: a data-parallel run's declaration (section 9) |
| ``parent``, ``inputs`` | optional: lineage (section 7) |
| ``exact`` | optional: exact mode's grid (docs/EXACT.md) |
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainwitness.commit.canonical import JSONValue, canonical_json, parse_json
from trainwitness.commit.distributed import DataParallelRun
from trainwitness.commit.hashing import parse_digest
from trainwitness.commit.hints import ExactMode
from trainwitness.commit.json_fields import is_kind
from trainwitness.commit.statement import (
    ENVIRONMENT_FIELDS,
    FrozenInput,
    ParentLink,
    check_core_hyperparameters,
    is_input_name,
)
from trainwitness.commit.store import RUN_FILE, read_store_file
from trainwitness.data.manifest import ManifestSummary
from trainwitness.errors import MalformedInputError, MissingInputError

__all__ = ["STORE_FORMAT", "MAX_RUN_FILE_BYTES", "RunDeclaration", "read_run_declaration"]

STORE_FORMAT = "trainwitness-store/v2"  # docs/FORMAT.md, version 2
MAX_RUN_FILE_BYTES = 1 << 26
_REQUIRED = ("format", "code", "code_files", "environment", "hyperparameters", "data", "compression", "weights_license")
_OPTIONAL = ("delta_keyframe_every", "distributed", "parent", "inputs", "exact")
_CODE_FIELDS = ("entry_point", "source_root", "tree_digest", "file_count", "git_commit", "source_uri")
_MAX_INPUTS = 64


@dataclass(frozen=True)
class RunDeclaration:
    """The store's ``run.json``, every field checked. ``to_json`` gives back the object ``from_json`` read."""

    code: dict[str, JSONValue]  # the entry point's tree identity (identity/code.py ``code_identity``)
    code_files: list[dict[str, JSONValue]]  # {"path", "sha256", "executable"} of each file of that tree
    environment: dict[str, JSONValue]
    hyperparameters: dict[str, JSONValue]
    data: dict[str, JSONValue]  # {"dataset", "manifest", "num_samples", "sampler"}
    compression: int | None = None  # zstd level of checkpoint files; None: stored uncompressed
    weights_license: str | None = None  # SPDX expression
    delta_keyframe_every: int | None = None
    distributed: DataParallelRun | None = None
    parent: ParentLink | None = None
    inputs: Mapping[str, FrozenInput] = field(default_factory=dict)
    exact: ExactMode | None = None

    @property
    def manifest(self) -> ManifestSummary:
        return ManifestSummary.from_json(self.data["manifest"], "run.json data.manifest")

    @property
    def entry_point(self) -> str:
        return str(self.code["entry_point"])

    def to_json(self) -> dict[str, JSONValue]:
        optional: dict[str, JSONValue] = {}
        if self.delta_keyframe_every is not None:
            optional["delta_keyframe_every"] = self.delta_keyframe_every
        if self.distributed is not None:
            optional["distributed"] = self.distributed.to_json()
        if self.parent is not None:
            optional["parent"] = self.parent.to_json()
        if self.inputs:
            optional["inputs"] = {name: frozen.to_json() for name, frozen in self.inputs.items()}
        if self.exact is not None:
            optional["exact"] = self.exact.to_json()
        return {
            **optional,
            "format": STORE_FORMAT,
            "code": self.code,
            "code_files": list(self.code_files),
            "environment": self.environment,
            "hyperparameters": self.hyperparameters,
            "data": self.data,
            "compression": self.compression,
            "weights_license": self.weights_license,
        }

    def to_bytes(self) -> bytes:
        """The file's bytes: canonical JSON and a newline."""
        return canonical_json(self.to_json()) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> RunDeclaration:
        return cls.from_json(parse_json(data, where), where)

    @classmethod
    def from_json(cls, obj: Any, where: str) -> RunDeclaration:
        """``run.json`` from untrusted JSON; ``where`` names the file. Raises ``MalformedInputError``
        naming it and the field for a field that is missing, unknown, of the wrong type or out of range."""
        r = _Reader(where)
        r.fields(obj, "", _REQUIRED, _OPTIONAL)
        if obj["format"] != STORE_FORMAT:
            raise r.error(f"format is {str(obj['format'])[:60]!r}, not {STORE_FORMAT}")
        code = r.fields(obj["code"], "code", _CODE_FIELDS)
        for key in ("entry_point", "source_root", "tree_digest"):
            r.get(code, key, str, "code")
        r.sub(parse_digest, code["tree_digest"], "code.tree_digest")
        if r.get(code, "file_count", int, "code") < 1:
            raise r.error("code.file_count must be at least 1")
        r.get(code, "git_commit", (str, type(None)), "code")
        r.get(code, "source_uri", (str, type(None)), "code")
        files = r.get(obj, "code_files", list, "")
        for k, entry in enumerate(files):
            r.fields(entry, f"code_files[{k}]", ("path", "sha256", "executable"))
            r.get(entry, "path", str, f"code_files[{k}]")
            r.get(entry, "sha256", str, f"code_files[{k}]")
            r.get(entry, "executable", bool, f"code_files[{k}]")
        environment = r.fields(obj["environment"], "environment", tuple(ENVIRONMENT_FIELDS))
        for key, kind in ENVIRONMENT_FIELDS.items():
            r.get(environment, key, kind, "environment")
        if not 1 <= environment["torch_threads"] <= 1024:
            raise r.error("environment.torch_threads is out of range")
        hp = r.get(obj, "hyperparameters", dict, "")
        data = r.fields(obj["data"], "data", ("dataset", "manifest", "num_samples", "sampler"))
        r.get(data, "dataset", str, "data")
        r.sub(ManifestSummary.from_json, r.get(data, "manifest", dict, "data"), "data.manifest")
        r.get(data, "num_samples", int, "data")  # its agreement with the manifest is the statement parser's check
        sampler = r.fields(data["sampler"], "data.sampler", ("name", "batch_size", "seed", "num_samples"))
        r.get(sampler, "name", str, "data.sampler")
        for key in ("batch_size", "seed", "num_samples"):
            r.get(sampler, key, int, "data.sampler")
        r.sub(check_core_hyperparameters, hp, "hyperparameters")
        compression = r.get(obj, "compression", (int, type(None)), "")
        weights_license = r.get(obj, "weights_license", (str, type(None)), "")
        keyframes = r.get(obj, "delta_keyframe_every", int, "") if "delta_keyframe_every" in obj else None
        if keyframes is not None and keyframes < 1:
            raise r.error("delta_keyframe_every must be at least 1")
        inputs: dict[str, FrozenInput] = {}
        if "inputs" in obj:
            raw = r.get(obj, "inputs", dict, "")
            if not 1 <= len(raw) <= _MAX_INPUTS or not all(is_input_name(name) for name in raw):
                raise r.error(f"inputs must name 1 to {_MAX_INPUTS} inputs by valid names")
            inputs = {name: r.sub(FrozenInput.from_json, raw[name], f"inputs.{name}") for name in sorted(raw)}
        return cls(
            code=code, code_files=files, environment=environment, hyperparameters=hp, data=data,
            compression=compression, weights_license=weights_license, delta_keyframe_every=keyframes,
            distributed=r.sub(DataParallelRun.from_json, obj["distributed"], "distributed") if "distributed" in obj else None,
            parent=r.sub(ParentLink.from_json, obj["parent"], "parent") if "parent" in obj else None,
            inputs=inputs,
            exact=r.sub(ExactMode.from_json, obj["exact"], "exact") if "exact" in obj else None,
        )


class _Reader:
    """Field checks whose every error names the file (``where``) and the field."""

    def __init__(self, where: str) -> None:
        self.where = where

    def error(self, what: str) -> MalformedInputError:
        return MalformedInputError(f"{self.where}: {what}")

    def fields(self, obj: Any, path: str, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, Any]:
        name = path or "the file"
        if not isinstance(obj, dict):
            raise self.error(f"{name} is not a JSON object")
        unknown = sorted(str(k) for k in set(obj) - set(required) - set(optional))
        if unknown:
            raise self.error(f"{name} holds unknown fields {', '.join(repr(k[:40]) for k in unknown[:5])}")
        missing = [k for k in required if k not in obj]
        if missing:
            raise self.error(f"{path + '.' if path else ''}{missing[0]} is missing")
        return obj

    def get(self, obj: dict[str, Any], key: str, kind: type | tuple[type, ...], path: str) -> Any:
        name = f"{path}.{key}" if path else key
        if key not in obj:
            raise self.error(f"{name} is missing")
        value = obj[key]
        if not is_kind(value, kind):  # the project's one type rule for untrusted JSON (a bool is no int)
            raise self.error(f"{name} has the wrong type ({type(value).__name__})")
        return value

    def sub(self, parse: Any, value: Any, path: str, **kwargs: Any) -> Any:
        """A nested format's own parser, its error re-worded to name this file and field."""
        try:
            return parse(value, path, **kwargs)
        except MalformedInputError as e:
            message = str(e).removeprefix("attestation: ")
            raise self.error(message if message.startswith(path) else f"{path}: {message}") from e


def read_run_declaration(store: Path) -> RunDeclaration | None:
    """``STORE/run.json``, checked; None where the store has none. Raises ``MalformedInputError``
    naming the file when it is not a regular file, is over ``MAX_RUN_FILE_BYTES``, or is malformed."""
    where = f"{store}/{RUN_FILE}"
    try:
        data = read_store_file(store, RUN_FILE, MAX_RUN_FILE_BYTES)
    except MissingInputError:
        return None
    return RunDeclaration.from_bytes(data, where)
