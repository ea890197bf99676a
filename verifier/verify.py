"""``trainwitness verify``: the verifier, in the order its checks depend on each other."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import os
import secrets
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from trainwitness.commit.bindings import declared_fields
from trainwitness.commit.canonical import parse_json
from trainwitness.commit.distributed import split_batch
from trainwitness.commit.link import LinkFiles
from trainwitness.commit.run_declaration import RunDeclaration, read_run_declaration
from trainwitness.commit.safe_open import read_untrusted
from trainwitness.commit.statement import Statement, TrainingClaim, statement_digest
from trainwitness.commit.store import IMPORTS_FILE, MANIFEST_FILE, RUN_FILE, read_store_file
from trainwitness.data.datasets import SourceDataset, use_record_access
from trainwitness.data.manifest import ManifestIndex, read_manifest
from trainwitness.errors import (
    CheckName,
    CodeMismatchError,
    CommitmentError,
    DataMismatchError,
    IncompleteAuditError,
    InitialStateError,
    InputError,
    LineageError,
    MalformedInputError,
    MissingInputError,
    ParentMismatchError,
    Rejected,
    TrainingCodeError,
    TrainwitnessError,
    VerificationError,
    WeightsMismatchError,
)
from trainwitness.identity.code import (
    SourceFile,
    diff_files,
    files_from_json,
    locate_package,
    locate_source_root,
    source_files,
    tree_digest,
)
from trainwitness.identity.imports import attested_imports
from trainwitness.identity.keyring import Keyring, TrustedKey
from trainwitness.identity.signing import MAX_ENVELOPE_BYTES, MAX_KEY_BYTES, load_public_key, public_key_from_pem
from trainwitness.run.device import device_kind, parse_device
from trainwitness.run.distributed import DataParallel
from trainwitness.run.environment import apply_execution_settings, environment_differences
from trainwitness.run.inputs import read_input_weights
from trainwitness.run.loop import TrainingRun
from trainwitness.run.parent import ParentStart, read_parent_state, read_parent_weights
from trainwitness.run.rng import device_generator_state
from trainwitness.run.sampler import ShuffledEpochSampler
from trainwitness.run.spec import load_entry_point, resolve_hyperparameters
from trainwitness.tensors.checkpoint import decode_weights
from trainwitness.tensors.state import state_digest, tensor_digest, weights_digest
from trainwitness.verifier.bounded import BOUND, BOUND_PROVENANCE
from trainwitness.verifier.cluster import LostTask, replay_on_cluster
from trainwitness.verifier.data_access import (
    BUNDLE_MARKER,
    CheckedRecords,
    check_code_built_samples,
    describe_ids,
    prefetch,
)
from trainwitness.verifier.distribution import ml_policy_class
from trainwitness.verifier.draw import choose_segments
from trainwitness.verifier.evidence import Evidence
from trainwitness.verifier.fetch import Fetcher, FetchProgress, FetchSettings, is_url
from trainwitness.verifier.policy import Policy, licence_rows, load_policy
from trainwitness.verifier.ranks import replay_ranks_locally
from trainwitness.verifier.remote_data import fetch_remote_sources
from trainwitness.verifier.replay import replay_segment
from trainwitness.verifier.report import Report
from trainwitness.verifier.sandbox import (
    SANDBOX_MODES,
    Isolation,
    SandboxError,
    SandboxLimits,
    StartFiles,
    WorkerAnswer,
    WorkerRequest,
    address_space_budget,
    choose_isolation,
    merge_worker_reports,
    replay_in_workers,
    split_shares,
    worker_threads,
)
from trainwitness.verifier.shards import read_answers, read_plan, write_requests
from trainwitness.verifier.store_reader import LocalStore, StoreReader, VerifiedCache, fetch_weights, open_store

__all__ = ["VerifyOptions", "ParentEvidence", "StartFiles", "verify", "verify_run", "replay_drawn"]

MAX_WEIGHTS_BYTES = 64 * 1024**3
_NO_START = StartFiles()  # a seeded start without frozen inputs

# (segments done, segments to do) -> None
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class VerifyOptions:
    segments: int | None = 10  # None: replay every segment
    seed: int | None = None  # None: draw from the operating system's randomness
    data: Mapping[str, Path | str] = field(default_factory=dict)  # source name -> the auditor's copy (--data): a path or URL
    code: Path | None = None  # the auditor's copy of the training program's source tree (--code)
    policy: str | None = None  # a licence policy: a shipped name or a TOML file (--policy)
    sandbox: str = "auto"  # auto | off | required: where the upstream's code runs (see sandbox/)
    threads: int | None = None  # None: the recorded torch thread count; else this machine's choice
    bounded: bool = False  # accept replays within bounded.BOUND (runs without exact mode; weaker)
    workers: int = 1  # replay the drawn segments in this many worker processes at once, each on a share
    device: str = "cpu"  # where replay runs (--device): cpu, cuda, cuda:N, mps
    ranks: str = "auto"  # a data-parallel run: auto | local (one process per rank, gloo) | single (one process)
    cluster: str | None = None  # replay each share as a task on this Dask scheduler (verifier/cluster.py)
    shard_requests: Path | None = None  # write one request per share here and stop: no verdict (verifier/shards.py)
    shard_answers: Path | None = None  # merge the answers to the requests written here
    cache: Path | None = None  # keep verified downloads (checkpoints, manifest, weights) here, by digest; None: keep none
    fetch: FetchSettings = field(default_factory=FetchSettings)  # timeouts and retries for URLs

    @property
    def remote(self) -> bool:
        """The shares are replayed by another machine's workers (a cluster, a batch system)."""
        return self.cluster is not None or self.shard_requests is not None or self.shard_answers is not None


RANK_REPLAYS = ("auto", "local", "single")


@dataclass(frozen=True)
class ParentEvidence:
    """The parent of the link being verified: its statement's digest and claim, and its files.

    ``verify_chain`` verifies the parent as a link of its own (signature, replay); ``verify_run``
    checks only that the child's declared parent is this statement and that the parent's attested
    final digests are the ones the child starts from, and recomputes checkpoint 0 from its files.
    """

    digest: str  # statement_digest of the parent's payload
    claim: TrainingClaim
    files: LinkFiles


def _read(path: Path, what: str, max_bytes: int) -> bytes:
    return read_untrusted(path, f"{what} {path}", max_bytes, follow_symlinks=True)  # a path the auditor named


def _input_bytes(location: str | Path, what: str, max_bytes: int, fetcher: Fetcher) -> bytes:
    """A local file's bytes (regular file, size-capped) or a URL's body (``fetch``, size-capped)."""
    if is_url(str(location)):
        return fetcher.read(str(location), max_bytes, what)
    return _read(Path(location), what, max_bytes)


# -- what can be checked before any of the upstream's code runs -----------------------------------

def _check_replay_settings(claim: TrainingClaim, options: VerifyOptions) -> None:
    """The auditor's own settings must be able to reproduce the run: else exit 2, naming the fix.

    Without exact mode, bitwise replay needs the recorded torch thread count (on CPU the last bits
    of a reduction depend on it); replaying with another could only ever REJECT an honest run.
    """
    recorded = claim.torch_threads
    if claim.exact is None and not options.bounded and options.threads is not None and options.threads != recorded:
        raise MalformedInputError(
            f"--threads {options.threads}: bitwise replay needs the recorded {recorded} thread{'s' * (recorded != 1)}: "
            f"use --threads {recorded}, --bounded, or a run recorded with --exact"
        )


def _check_data_options(claim: TrainingClaim, data: Mapping[str, Path | str]) -> None:
    """Every ``--data NAME=PATH``: a declared source, and a path of the kind its declared format reads."""
    declared = {s.name: s for s in claim.manifest.sources}
    for name, given in data.items():
        source = declared.get(name)
        if source is None:
            raise MalformedInputError(
                f"--data {name}={given}: the attestation declares no source {name!r} (it declares {', '.join(sorted(declared))})"
            )
        if source.format == "tensors":
            raise MalformedInputError(f"--data {name}={given}: source {name} is built in code by the training spec; it has no files to give")
        if is_url(str(given)):
            continue  # fetched later, only the records the draw needs; a fetch failure is named then
        path = Path(given)
        if not os.path.lexists(path):
            raise MissingInputError(f"--data {name}={path}: {path} does not exist")
        if path.is_dir() and (path / BUNDLE_MARKER).is_file():
            continue  # records this verifier fetched by URL and staged (remote_data.py); each is proven when read
        if source.format == "files" and not path.is_dir():
            raise MalformedInputError(f"--data {name}={path}: source {name} is a directory of files (declared format 'files'); {path} is not a directory")
        if source.format != "files" and not path.is_file():
            kind = "a directory" if path.is_dir() else "not a regular file"
            named = Path(source.uri or "").name
            hint = f" (did you mean --data {name}={path / named}?)" if named and path.is_dir() and (path / named).is_file() else ""
            raise MalformedInputError(
                f"--data {name}={path}: source {name} is one file (declared format {source.format!r}); {path} is {kind}{hint}"
            )


def _code_root_name(entry_point: str) -> str:
    """The name the auditor's --code directory (or module file) must have: the attested source root's."""
    if entry_point.startswith("trainwitness.workloads."):
        return "workloads"
    return entry_point.partition(":")[0].split(".")[0]


def _check_code_option(code: Path, entry_point: str) -> None:
    """--code names the attested source root itself, not the directory above it or another package."""
    if not os.path.lexists(code):
        raise MissingInputError(f"--code {code} does not exist")
    expected = _code_root_name(entry_point)
    name = code.stem if code.is_file() else code.name
    if name == expected:
        return
    for candidate in (code / expected, code / f"{expected}.py"):
        if code.is_dir() and os.path.lexists(candidate):
            raise MalformedInputError(
                f"--code {code}: the entry point {entry_point} lives in {expected!r}, not {name!r}: did you mean --code {candidate}?"
            )
    raise MalformedInputError(f"--code {code}: the entry point {entry_point} lives in {expected!r}, not {name!r}")


_ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.xz", ".tar.zst", ".tar.bz2", ".zip")
_ARCHIVE_MAGIC = (b"\x1f\x8b", b"\x28\xb5\x2f\xfd", b"PK\x03\x04", b"BZh", b"\xfd7zXZ")


def _check_store_option(store: Path) -> None:
    """--store is a directory: a file (an archive, most likely) is named as such."""
    if store.is_dir():
        return
    if not os.path.lexists(store):
        raise MissingInputError(f"store {store} does not exist (--store)")
    if not store.is_file():
        raise MalformedInputError(f"store {store} is not a directory (--store)")
    try:
        with open(store, "rb") as f:
            start = f.read(512)
    except OSError:
        start = b""
    archive = store.name.lower().endswith(_ARCHIVE_SUFFIXES) or start.startswith(_ARCHIVE_MAGIC) or start[257:262] == b"ustar"
    hint = ": it looks like an archive; unpack it and give the store directory it holds" if archive else ""
    raise MalformedInputError(f"store {store} is a file, not a store directory (--store){hint}")


def _store_declaration(store: Path) -> RunDeclaration | None:
    """The store's run.json (what the prover declared at the start), checked; None where the store has none.

    A damaged one is exit 2 naming it (``MalformedInputError``): nothing of it is used unchecked.
    """
    return read_run_declaration(store)


def _other_run(declared: RunDeclaration | None, claim: TrainingClaim) -> list[str]:
    """How the store's run.json differs from the attested run (empty: it declares this run).

    The attestation copies the store's declaration, so an honest pair agrees on these fields. This
    is asked only once the store's index has failed to match the signed roots (or is short): it
    turns that puzzling mismatch into what it is, the store of another run (exit 2). A store whose
    index matches the signed roots is this run's, whatever its run.json says.
    """
    if declared is None:
        return []
    differences: list[str] = []
    hp = declared.hyperparameters
    if hp != claim.hyperparameters:
        keys = sorted(k for k in set(hp) | set(claim.hyperparameters) if hp.get(k) != claim.hyperparameters.get(k))
        differences.extend(f"{k} {_shown(hp.get(k))} (attested {_shown(claim.hyperparameters.get(k))})" for k in keys[:3])
    if not _same_code(declared, claim):
        differences.append("another source tree")
    if declared.manifest.root != claim.manifest.root:
        differences.append("another dataset manifest")
    if (declared.exact is not None) != (claim.exact is not None):
        differences.append("exact mode " + ("on" if declared.exact is not None else "off"))
    return differences


def _same_code(declared: RunDeclaration, claim: TrainingClaim) -> bool:
    return bool(declared.code["tree_digest"] == claim.code.get("tree_digest"))


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _attested_files(store: Path, declared: RunDeclaration | None, claim: TrainingClaim) -> list[SourceFile] | None:
    """The store's per-file list, trusted only because it hashes to the signed tree digest.

    None where the store has none, or where its run.json declares another source tree (the store
    of another run: named as such at step (4), not as a forged list here).
    """
    claim_digest = str(claim.code["tree_digest"])
    if declared is None or not _same_code(declared, claim):
        return None
    files = files_from_json(declared.code_files, f"{store}/{RUN_FILE} code_files")
    if tree_digest(files) != claim_digest:
        raise CommitmentError(f"{store}/{RUN_FILE}: its code file list does not hash to the signed tree digest")
    return files


def _attested_package_files(store: Path, name: str, claim_digest: str) -> list[SourceFile] | None:
    """A package's per-file list from the store's imports.json, used only when it hashes to the signed digest."""
    try:
        record = parse_json(read_store_file(store, IMPORTS_FILE, 1 << 26), f"{store}/{IMPORTS_FILE}")
        packages = record.get("packages") if isinstance(record, dict) else None
        entry = next(p for p in packages if isinstance(p, dict) and p.get("name") == name)  # type: ignore[union-attr]
        files = files_from_json(entry.get("files"), f"{store}/{IMPORTS_FILE} {name}")
    except (InputError, StopIteration, TypeError):
        return None  # diagnostics only: without the list, the mismatch is still reported
    return files if tree_digest(files) == claim_digest else None


def _check_tree(root: Path, attested_digest: str, attested: list[SourceFile] | None, attested_count: int, what: str = "source tree") -> None:
    local = source_files(root)
    digest = tree_digest(local)
    if digest != attested_digest:
        detail = diff_files(attested, local).describe() if attested is not None else "the store lists no files"
        raise CodeMismatchError(f"{what} {root} has digest {digest}, the attestation names {attested_digest}; {detail}")
    if len(local) != attested_count:  # the digest binds the count: a different count is a false claim
        raise CodeMismatchError(f"{what} {root} has {len(local)} files, the attestation claims {attested_count}")


def _check_code(
    claim: TrainingClaim, store: Path, declared: RunDeclaration | None, options: VerifyOptions, report: Report
) -> list[Path]:
    """(3): every attested source tree against the auditor's copy, and the installed distributions.

    Returns the roots the replay may import local code from. Missing code is exit 2 naming it; code
    that differs is a failed ``code`` check naming the files; a distribution installed here at
    another version is noted.
    """
    code = claim.code
    attested_files = _attested_files(store, declared, claim)
    if options.code is not None:
        _check_tree(options.code, str(code["tree_digest"]), attested_files, int(code["file_count"]))  # type: ignore[call-overload]
        _import_from(options.code, claim.entry_point)
    root = locate_source_root(claim.entry_point)
    _check_tree(root, str(code["tree_digest"]), attested_files, int(code["file_count"]))  # type: ignore[call-overload]
    if root.name != code["source_root"]:
        raise CodeMismatchError(f"the entry point's source tree here is {root.name!r}, the attestation names {code['source_root']!r}")
    roots = [root]
    for package in code["packages"]:  # type: ignore[union-attr]
        name, digest = str(package["name"]), str(package["tree_digest"])  # type: ignore[index]
        try:
            package_root = locate_package(name)
        except MalformedInputError as e:
            raise MissingInputError(
                f"the attested run imported the local package {name} (tree digest {digest}), which is not importable here ({e}); "
                "put the directory that holds it on PYTHONPATH"
            ) from e
        _check_tree(package_root, digest, _attested_package_files(store, name, digest), int(package["file_count"]),  # type: ignore[index]
                    what=f"local package {name}:")
        roots.append(package_root)
    for distribution in code["distributions"]:  # type: ignore[union-attr]
        name, recorded = str(distribution["name"]), str(distribution["version"])  # type: ignore[index]
        try:
            here = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError as e:
            raise MissingInputError(f"the attested run imported the installed distribution {name} {recorded}, which is not installed here: pip install '{name}=={recorded}'") from e
        if here != recorded:
            report.notes.append(f"installed distribution differs: {name} recorded {recorded}, here {here}")
    packages = f" and {len(roots) - 1} local packages" if len(roots) > 1 else ""
    where = " (source_uri declared, not verified)" if code.get("source_uri") else ""
    report.passed(CheckName.CODE, f"source tree {root.name} matches {code['tree_digest']}{packages}{where}")
    return roots


def _import_from(code: Path, entry_point: str) -> None:
    """Make the entry point's top-level package import from the auditor's copy ``code``."""
    top_level = entry_point.partition(":")[0].split(".")[0]
    if entry_point.startswith("trainwitness.workloads."):
        return  # built in: the installed copy runs, and is checked separately
    name = code.stem if code.is_file() else code.name
    if name != top_level:
        raise MalformedInputError(f"--code {code}: the entry point's package is {top_level!r}, not {name!r}")
    loaded = sys.modules.get(top_level)
    expected = code.resolve() if code.is_file() else code.resolve() / "__init__.py"
    if loaded is not None and Path(getattr(loaded, "__file__", "") or "").resolve() != expected:
        raise MalformedInputError(f"--code {code}: {top_level} is already imported from {loaded.__file__}")
    sys.path.insert(0, str(code.resolve().parent))
    importlib.invalidate_caches()


def _read_start(claim: TrainingClaim, start: StartFiles) -> tuple[ParentStart | None, dict[str, dict[str, torch.Tensor]]]:
    """The parent's weights or state and the frozen inputs, each accepted only if it hashes to its signed digest."""
    declared = claim.parent
    parent_start = None
    if declared is not None and declared.mode == "finetune":
        if start.parent_weights is None:
            raise MissingInputError("the run fine-tunes a parent, but no parent weights file was given")
        parent_start = ParentStart("finetune", weights=read_parent_weights(start.parent_weights, declared.weights_digest))
    elif declared is not None:
        if start.parent_store is None or declared.state_digest is None:
            raise MissingInputError("the run continues a parent, but no parent store was given")
        parent_start = ParentStart("continue", state=read_parent_state(start.parent_store, declared.state_digest))
    inputs = {}
    for name, frozen in claim.inputs.items():
        if name not in start.inputs:
            raise MissingInputError(f"frozen input {name} was not given")
        inputs[name] = read_input_weights(name, start.inputs[name], frozen.weights_digest)
    return parent_start, inputs


def _check_start(claim: TrainingClaim, run: TrainingRun, evidence: Evidence, seed: int, parent: ParentStart | None) -> str:
    """Checkpoint 0 against the start recomputed here (seeded, or from the parent); the check's detail.

    With a parent, what the detail says is checked too: a fine-tune's loaded tensors are the parent's,
    bit for bit, and its re-initialised and dropped tensors the declared ones; a continued run's
    checkpoint 0 is the parent's final state itself.
    """
    declared = claim.parent
    record = run.start_record
    if declared is not None and declared.mode == "finetune" and record is not None:
        if (record.reinitialised, record.dropped) != (declared.reinitialised, declared.dropped):
            raise InitialStateError(
                f"the spec re-initialises {list(record.reinitialised)} and drops {list(record.dropped)} of the parent's tensors; "
                f"the attestation declares {list(declared.reinitialised)} and {list(declared.dropped)}"
            )
        model = run.spec.model.state_dict()
        weights = parent.weights if parent is not None and parent.weights is not None else {}
        changed = [  # compared bitwise (a NaN equals itself), by tensor digest
            name for name in record.loaded if name not in weights or tensor_digest(name, model[name]) != tensor_digest(name, weights[name])
        ]
        if changed:
            raise InitialStateError(f"the spec's model changed the parent's tensors {_names(tuple(changed))} while they were loaded")
    if declared is not None and declared.mode == "continue" and evidence.checkpoint(0).state_digest != declared.state_digest:
        raise InitialStateError(f"checkpoint 0 is not the parent's final state {declared.state_digest} that continued training starts from")
    if state_digest(run.capture_on_host()) != evidence.checkpoint(0).state_digest:
        if declared is None:
            raise InitialStateError("the state built from the declared seed is not checkpoint 0")
        raise InitialStateError(
            f"checkpoint 0 is not the state formed from the parent's {'final state' if declared.mode == 'continue' else 'final weights'} "
            f"({declared.mode} of attestation {declared.attestation}) and seed {seed}: the run started from something else"
        )
    if declared is None:
        return f"checkpoint 0 is the state seeded from seed {seed}"
    if declared.mode == "continue":
        return f"checkpoint 0 is the parent's final state {declared.state_digest} (model, optimizer, scheduler, RNG)"
    fresh = f"; {len(declared.reinitialised)} re-initialised from seed {seed}: {_names(declared.reinitialised)}" if declared.reinitialised else ""
    dropped = f"; parent tensors dropped: {_names(declared.dropped)}" if declared.dropped else ""
    loaded = len(record.loaded) if record is not None else 0
    return (
        f"checkpoint 0 is the parent's final weights {declared.weights_digest} ({loaded} tensors){fresh}{dropped}, "
        f"the optimizer and scheduler as the spec builds them from seed {seed}"
    )


def _names(names: tuple[str, ...], limit: int = 6) -> str:
    return ", ".join(names[:limit]) + (f" and {len(names) - limit} more" if len(names) > limit else "")


def _check_committed_batches(evidence: Evidence, run: TrainingRun) -> None:
    """Every committed step's sample ids, against the sampler (a pure function of the signed seed): no data needed.

    A data-parallel run commits each rank's shard: there must be one per rank of the signed world
    size, and they must be the declared split of the sampler's batch.
    """
    n = len(run.spec.dataset)
    world = evidence.claim.world_size
    for record in evidence.index.steps:
        if len(record.shards) != world:
            raise CommitmentError(f"step {record.step}: {len(record.shards)} ranks committed, the attestation declares {world}")
        ids = run.sampler.batch_ids(record.step)
        where = f"step {record.step}"
        if world > 1:
            shards = [list(shard.sample_ids) for shard in record.shards]
            expected = split_batch(ids, world)
            differing = [r for r in range(world) if shards[r] != expected[r]]
            if not differing:
                continue
            if [i for shard in shards for i in shard] == ids:
                raise DataMismatchError(
                    f"{where}: the ranks' shards ({', '.join(str(len(x)) for x in shards)} samples) are not the "
                    f"declared split of the batch over {world} ranks"
                )
            where = f"step {record.step}, rank {differing[0]}"
            committed, ids = shards[differing[0]], expected[differing[0]]
        else:
            committed = list(record.sample_ids)
        if committed != ids:
            outside = [i for i in committed if i >= n]
            if outside:
                raise DataMismatchError(
                    f"{where}: the committed batch holds sample ids {describe_ids(outside)} from outside the dataset of {n}"
                )
            if sorted(committed) == sorted(ids):
                raise DataMismatchError(
                    f"{where}: the committed batch reorders sample ids {describe_ids(committed)}; the sampler gives {describe_ids(ids)}"
                )
            wrong = [i for i in committed if i not in set(ids)]
            raise DataMismatchError(
                f"{where}: the committed batch holds sample ids {describe_ids(wrong)} that the declared sampler does not draw"
                + (" for this rank" if world > 1 else "")
            )


def _needed_samples(claim: TrainingClaim, drawn: list[int]) -> list[int]:
    """The distinct sample ids the drawn segments' steps read: a pure function of signed values."""
    sampler = ShuffledEpochSampler(claim.manifest.num_samples, int(claim.hyperparameters["batch_size"]), int(claim.hyperparameters["data_seed"]))
    steps = claim.checkpoint_steps
    return sorted({i for seg in drawn for step in range(steps[seg], steps[seg + 1]) for i in sampler.batch_ids(step)})


def verify_run(
    attestation: str | Path,
    store: str | Path,
    weights: str | Path,
    public_key: str | Path | Keyring,
    options: VerifyOptions = VerifyOptions(),
    progress: Progress | None = None,
    fetch_progress: FetchProgress | None = None,
    *,
    parent: ParentEvidence | None = None,
    inputs: Mapping[str, Path] | None = None,
) -> Report:
    """Verify a training run's attestation against its store and final weights.

    Plan: (1) signature, by any trusted key (``public_key``: one key file or URL, or a ``Keyring``; the
    report names the one that signed), (2) statement, the auditor's settings and every signed value
    and option that can be checked without running code, (2c) lineage: the declared
    parent is ``parent`` and its attested final digests are the ones this run starts from, and each
    declared frozen input's file (``inputs``: name -> weights file) holds its declared weights,
    (3) code identity, (4) the store is complete and its index matches the signed roots (three; four
    in exact mode; a store of another run is named so), (5) final weights, (6) manifest, the start
    (seeded, or recomputed from the parent's files and the seed), and every step's sample ids
    against the sampler, (7) draw segments (the last always) and prove the samples they use,
    (8) replay each bitwise (or within the calibrated bound, with --bounded), (9) with a licence
    policy, judge every licence and derive the Debian ML-Policy class from (1)-(8).
    The parent's own signature and replay are not checked here: ``verifier.chain.verify_chain``
    verifies every link of a chain, each with this function.
    (1)-(5), the manifest and the draw are this process's own; (6)-(8) run the upstream's code,
    here or in worker processes (one per share of the draw, ``options.workers``) whose JSON answers
    are merged here. A failed check ends the run of checks that depend on it and is recorded in the
    report; unreadable input, or input of this machine that cannot reproduce the run (an option, a
    missing file, memory), raises ``InputError`` (nothing was decided).

    Any of the four inputs, and a ``--data`` source, may be a URL (``http(s)://``, ``s3://``, read
    with ``fetch``): a remote store is read through ``store_reader`` (its index files, then only the
    checkpoints the drawn segments need, each checked against its leaf before use); a URL that cannot
    be fetched whole raises ``FetchError`` (exit 2) naming it.
    """
    if options.workers < 1:
        raise MalformedInputError(f"--workers must be at least 1, not {options.workers}")
    if options.ranks not in RANK_REPLAYS:
        raise MalformedInputError(f"--ranks must be one of {', '.join(RANK_REPLAYS)}, not {options.ranks!r}")
    if options.remote and (is_url(str(store)) or any(is_url(str(p)) for p in options.data.values())):
        raise MalformedInputError(
            "a store or data source given by URL is mirrored on this machine only: it cannot be shared with "
            "--cluster or --shard-requests/--shard-answers; download it where the workers can read it"
        )
    fetcher = Fetcher(options.fetch, fetch_progress)
    cache = VerifiedCache(options.cache) if options.cache is not None else None
    reader = open_store(store, fetcher, cache)
    scratch: list[Path] = []

    def scratch_dir() -> Path:  # made on first use, removed when the audit ends
        if not scratch:
            scratch.append(Path(tempfile.mkdtemp(prefix="trainwitness-verify-")))
        return scratch[0]

    try:
        return _verify(attestation, reader, weights, public_key, options, progress, fetcher, cache, scratch_dir, parent, inputs)
    finally:
        reader.close()
        for directory in scratch:
            shutil.rmtree(directory, ignore_errors=True)


def _verify(
    attestation: str | Path, reader: StoreReader, weights: str | Path, public_key: str | Path | Keyring, options: VerifyOptions,
    progress: Progress | None, fetcher: Fetcher, cache: VerifiedCache | None, scratch: Callable[[], Path],
    parent: ParentEvidence | None, inputs: Mapping[str, Path] | None,
) -> Report:
    report = Report(attestation=str(attestation))
    policy = load_policy(options.policy) if options.policy is not None else None  # an unknown policy: exit 2 before any work
    envelope = _input_bytes(attestation, "attestation", MAX_ENVELOPE_BYTES, fetcher)
    if isinstance(public_key, Keyring):
        keys = public_key
    elif is_url(str(public_key)):
        pem = fetcher.read(str(public_key), MAX_KEY_BYTES, "key file")
        keys = Keyring((TrustedKey(str(public_key), public_key_from_pem(pem, str(public_key))),))
        report.notes.append(
            f"the public key was fetched from {public_key}: it proves only that whoever controls that URL signed; "
            "compare its key id with one published elsewhere"
        )
    else:
        keys = Keyring((TrustedKey(str(public_key), load_public_key(Path(public_key))),))
    claim: TrainingClaim | None = None
    try:
        # (1): the signature, before any field of the payload is believed; every trusted key is tried.
        payload, signer = keys.open(envelope, where=f"DSSE envelope {attestation}")
        report.signer, report.signer_key_id = signer.name, signer.key_id
        report.statement_digest = statement_digest(payload)
        report.passed(CheckName.SIGNATURE, f"DSSE envelope signed by {signer.describe()}")

        # (2): the statement, parsed and invariant-checked; then what this machine's settings and
        # inputs must be for replay to decide anything, checked before any code runs (exit 2).
        statement = Statement.from_payload(payload)
        claim = statement.claim
        report.subject = f"{statement.subject_name} sha256:{statement.subject_sha256}"
        report.entry_point = claim.entry_point
        report.declared = declared_fields(parse_json(payload, "attestation statement"))  # shown as such, never as checked
        _check_replay_settings(claim, options)
        _check_data_options(claim, options.data)
        if options.code is not None:
            _check_code_option(options.code, claim.entry_point)
        if isinstance(reader, LocalStore):
            _check_store_option(reader.path)
        report.statement = statement
        report.total_steps, report.checkpoint_steps = claim.total_steps, claim.checkpoint_steps
        report.declared_training_seconds = claim.declared_training_seconds

        # (2c): lineage: the parent this run declares, and its frozen inputs, bound by digest.
        report.parent = None if claim.parent is None else claim.parent.to_json()
        report.inputs = {name: frozen.to_json() for name, frozen in claim.inputs.items()}
        start = _check_lineage(report, claim, parent, inputs or {})

        # (3): the code we are about to run is the code that was attested, checked before importing it:
        # the entry point's tree, every other local package the run imported, installed distributions.
        # A remote store's index files are fetched here (nothing else of it yet); a local one is read in place.
        store = reader.index_dir(claim)
        declared = _store_declaration(store)
        _check_code(claim, store, declared, options, report)

        # (4): the store's index against the signed roots; no checkpoint is read for this. A store
        # that does not match, or is short, and whose run.json declares another run is named so.
        try:
            evidence = Evidence.open(store, claim)
        except (CommitmentError, MissingInputError) as e:
            other = _other_run(declared, claim)
            if other:
                raise MalformedInputError(
                    f"store {store} holds another run than the attestation's: its {RUN_FILE} declares {'; '.join(other)} (--store)"
                ) from e
            raise
        report.losses = _recorded_losses(evidence)
        report.passed(
            CheckName.COMMITMENTS,
            f"{claim.total_steps} steps and {len(claim.checkpoint_steps)} checkpoints match the {len(claim.trees)} roots",
        )

        # (5): the final weights file is the subject, and its weights digest is the weights component
        # of the last checkpoint's state digest (derived from it, docs/FORMAT.md section 2), which the
        # replay of the last segment, chosen on every audit (7), must reach: so the published weights
        # are the replayed ones. One read: the bytes whose SHA-256 is checked are the bytes decoded below.
        if is_url(str(weights)):
            weights_bytes = fetch_weights(fetcher, cache, str(weights), statement.subject_sha256, MAX_WEIGHTS_BYTES)
        else:
            weights_bytes = _read(Path(weights), "weights file", MAX_WEIGHTS_BYTES)
        if hashlib.sha256(weights_bytes).hexdigest() != statement.subject_sha256:
            raise WeightsMismatchError(f"{weights} is not the attested subject (sha256 differs)")
        last = evidence.checkpoint(len(claim.checkpoint_steps) - 1)
        if weights_digest(decode_weights(weights_bytes, str(weights))) != last.weights_digest:
            raise WeightsMismatchError(f"{weights} does not hold the last checkpoint's weights")
        del weights_bytes  # peak memory: half a state that replay does not need
        if (last.weights_digest, last.state_digest) != (claim.final_weights_digest, claim.final_state_digest):
            raise WeightsMismatchError("the attested final digests are not the last checkpoint's")
        report.passed(
            CheckName.FINAL_WEIGHTS,
            f"{_basename(weights)} is the subject and the weights component of the state at step {last.step} (the last segment's end, always replayed)",
        )

        # (6a): the store's manifest, read here against the signed summary before any worker reads it.
        manifest = read_manifest(store / MANIFEST_FILE, claim.manifest)

        # A data-parallel run: how its ranks are replayed is decided here, from the signed declaration
        # and the auditor's options (exit 2 where bitwise replay cannot reproduce its reduction).
        if options.shard_answers is not None:  # the draw and the settings are the plan's, checked against this statement
            plan = read_plan(options.shard_answers, payload, len(claim.checkpoint_steps) - 1)
            if options.seed is not None and options.seed != plan.seed:
                raise MalformedInputError(f"--seed {options.seed}: the shard plan in {options.shard_answers} drew with seed {plan.seed}")
            settings = plan.options
            options = replace(
                options, seed=plan.seed, segments=plan.segments, workers=len(plan.shares), bounded=settings.get("bounded") is True,
                threads=settings.get("threads"), ranks=str(settings.get("ranks", "auto")), sandbox=str(settings.get("sandbox", "auto")),
                device=str(settings.get("device", "cpu")),
            )
        options = replace(options, ranks=rank_replay(claim, options))
        # (5b): the replay device. Bitwise replay holds on the recorded kind of device only; exact mode
        # and bounded mode are made for another one. Decided here, before any of the upstream's code runs.
        _check_device(claim, options)
        # (6)-(8) run the upstream's code: in confined worker processes unless the sandbox is off and
        # there is one worker. The verifier alone chooses which segments to replay (7): the last one
        # always, the others drawn here, before any of that code runs; each worker is handed a share.
        if options.remote:  # each machine that replays says what isolation it had
            if options.sandbox not in SANDBOX_MODES:
                raise MalformedInputError(f"--sandbox must be one of {', '.join(SANDBOX_MODES)}, not {options.sandbox!r}")
            isolation = Isolation(options.sandbox, process=True, namespaces=False, limits=SandboxLimits())
        else:
            isolation = choose_isolation(options.sandbox, workers=options.workers)
            report.notes.append(isolation.describe())
        if options.ranks == "local":
            isolation = replace(isolation, loopback=True)
        segment_count = len(claim.checkpoint_steps) - 1
        every = options.segments is None or options.segments >= segment_count - 1  # N drawn among the others, and the last
        seed = options.seed if not every else None  # nothing is drawn when every segment is replayed
        if seed is None and isolation.process and not every:  # from the OS too, but reported, so the audit can be repeated
            seed = secrets.randbelow(2**63)
            report.seed_from_os = True
        drawn = choose_segments(segment_count, options.segments, seed)
        # A remote store: fetch only the checkpoints the drawn segments start and end at, each checked
        # against its leaf here (a tampered one rejects), before any worker (which has no network) runs.
        reader.stage_checkpoints(evidence, [j for i in drawn for j in (i, i + 1)])
        # Sources given by URL: only the records the drawn segments use, each proven here, then read
        # by replay from a private local copy (a sandboxed worker has no network).
        options = _fetch_remote_data(report, claim, evidence, options, drawn, fetcher, scratch)
        if isolation.process:
            _replay_in_workers(report, isolation, payload, claim, store, options, drawn, seed, progress, manifest, start)
        else:
            with address_space_budget() as budget:
                if budget is not None:
                    report.notes.append(f"in-process replay ran under an address-space budget of {budget / 2**30:.1f} GiB (memory available here)")
                _replay_in_process(claim, evidence, options, drawn, report, progress, manifest, payload, start)
            report.sample_seed = seed
        _rank_replay_note(report, claim, options)
    except VerificationError as e:
        report.failed(e.check, str(e))
    finally:
        report.fetched_bytes, report.fetch_requests = fetcher.bytes_fetched, fetcher.requests
        report.fetched = dict(fetcher.fetched)
    # (9): licences, when the auditor brings a policy, judged last so that the distribution's class
    # (ML-Policy) rests on everything the audit verified; a missing or unknown licence fails it.
    if policy is not None and claim is not None and report.pending_shards is None:
        _judge_licences(report, policy, claim)
    return report


def _judge_licences(report: Report, policy: Policy, claim: TrainingClaim) -> None:
    report.licences = licence_rows(policy, claim.weights_license, claim.manifest.sources)
    failures = [r["reason"] for r in report.licences if not r["passes"]]
    if failures:
        report.failed(CheckName.POLICY, "; ".join(failures))
    else:
        report.passed(CheckName.POLICY, f"policy {policy.name}: " + ", ".join(
            f"{'weights' if r['what'] == 'weights' else r['what'].removeprefix('data source ')} {r['expression']}" for r in report.licences
        ))
    report.distribution = ml_policy_class(report, claim.manifest)


def _fetch_remote_data(
    report: Report, claim: TrainingClaim, evidence: Evidence, options: VerifyOptions, drawn: list[int], fetcher: Fetcher,
    scratch: Callable[[], Path],
) -> VerifyOptions:
    urls = {name: str(location) for name, location in options.data.items() if is_url(str(location))}
    if not urls:
        return options
    unknown = sorted(set(urls) - {s.name for s in claim.manifest.sources})
    if unknown:
        raise MalformedInputError(f"--data names {', '.join(unknown)}, which the attestation does not declare")
    manifest = read_manifest(evidence.store / MANIFEST_FILE, claim.manifest)
    steps = claim.checkpoint_steps
    needed = [i for seg in drawn for s in range(steps[seg], steps[seg + 1]) for i in evidence.step(s).sample_ids]
    local, stats = fetch_remote_sources(fetcher, manifest, urls, needed, scratch())
    report.data_bytes_fetched += stats.bytes_fetched
    report.notes.extend(stats.notes)
    return replace(options, data={**options.data, **local})


def _recorded_losses(evidence: Evidence) -> list[tuple[int, float]] | None:
    """Per-step losses from the store's step records, where the prover recorded them (else None)."""
    losses = [(r.step, getattr(r, "loss", None)) for r in evidence.index.steps]
    shown = [(step, float(loss)) for step, loss in losses if isinstance(loss, (int, float)) and not isinstance(loss, bool)]
    return shown or None


def _basename(location: str | Path) -> str:
    return str(location).rstrip("/").rsplit("/", 1)[-1]


def _check_device(claim: TrainingClaim, options: VerifyOptions) -> torch.device:
    """The auditor's replay device; exit 2 where bitwise replay on it cannot reproduce the recorded kind of device."""
    device = parse_device(options.device)
    recorded = device_kind(claim.environment.get("device"))
    if recorded != device.type and claim.exact is None and not options.bounded:
        raise MalformedInputError(
            f"the run was recorded on {recorded} without exact mode and this replay runs on {device.type}: "
            "cannot verify bitwise on another device: use exact mode or --bounded"
        )
    return device


def verify(
    attestation: str | Path,
    store: str | Path,
    weights: str | Path,
    public_key: str | Path | Keyring,
    options: VerifyOptions = VerifyOptions(),
    progress: Progress | None = None,
) -> Report:
    """``verify_run`` whose verdict cannot be ignored: returns the report only when every check passed.

    Raises ``Rejected`` (a ``VerificationError``; ``.report`` holds every check, ``.check`` names the
    first that failed) when the evidence contradicts the claim, and ``InputError`` when an input
    could not be read or cannot reproduce the run (nothing was decided).
    """
    report = verify_run(attestation, store, weights, public_key, options, progress)
    if report.pending_shards is not None and all(c.passed for c in report.checks):
        return report  # --shard-requests: requests written, no verdict yet
    if not report.accepted:
        raise Rejected(report)
    return report


def _replay_in_process(
    claim: TrainingClaim, evidence: Evidence, options: VerifyOptions, drawn: list[int], report: Report,
    progress: Progress | None, manifest: ManifestIndex, payload: bytes, start: StartFiles,
) -> None:
    """(6)-(8) in this process (``--sandbox off``): the training code's own failure is a failed check, as from a worker."""
    try:
        replay_drawn(claim, evidence, options, drawn, report, progress, manifest=manifest, payload=payload, start=start)
    except (TrainwitnessError, KeyboardInterrupt):
        raise
    except Exception as e:  # noqa: BLE001 - the upstream's code raised: named, never a traceback
        raise TrainingCodeError(f"the training code failed: {type(e).__name__}: {_one_line(str(e))}") from e


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def rank_replay(claim: TrainingClaim, options: VerifyOptions) -> str:
    """How a data-parallel run's ranks are replayed: ``local`` (W processes over gloo) or ``single`` (one process).

    ``single`` sums the ranks' gradients in its own order, which matches DDP's reduction only up to
    rounding: it needs exact mode (whose gradient rounding absorbs the order) or ``--bounded``.
    ``local`` is bitwise for a run recorded over gloo on CPUs. Raises ``MalformedInputError`` (exit
    2: the auditor's setting cannot reproduce the run, nothing was decided) where neither fits.
    A run of one rank returns ``options.ranks`` unchanged (there is nothing to choose).
    """
    if claim.distributed is None:
        return options.ranks
    world, backend = claim.distributed.world_size, claim.distributed.backend
    device = str(claim.environment.get("device"))
    tolerant = claim.exact is not None or options.bounded
    if options.ranks == "single" and not tolerant:
        raise MalformedInputError(
            f"--ranks single: one process sums the {world} ranks' gradients in its own order, which reproduces DDP's "
            f"{backend} reduction only up to rounding; bitwise replay of this run needs --ranks local "
            "(or a run recorded in exact mode, or --bounded)"
        )
    if options.ranks == "local" or not tolerant:
        if not tolerant and (backend != "gloo" or device != "cpu"):
            raise MalformedInputError(
                f"the {world}-rank run was recorded over {backend} on {device}: its reduction cannot be reproduced "
                "bitwise here (gloo on this machine's CPU sums in another order); verify with --bounded, or record "
                "the run in exact mode"
            )
        return "local"
    return "single"


def _rank_replay_note(report: Report, claim: TrainingClaim, options: VerifyOptions) -> None:
    """Say how a data-parallel run's ranks were replayed (decided by the parent, never by a worker's answer)."""
    if claim.distributed is None:
        return
    world, backend = claim.distributed.world_size, claim.distributed.backend
    if options.ranks == "local":
        report.rank_replay = f"{world} local processes, one per rank, over gloo (the recorded {backend} reduction)"
    else:
        absorbed = "exact mode's gradient rounding absorbs the summation order" if claim.exact is not None else "within the bound"
        report.rank_replay = f"one process computing each of the {world} ranks' gradients on its shard and averaging them ({absorbed})"
    report.notes.append(f"{world}-rank data-parallel run replayed in {report.rank_replay}")


def _check_lineage(
    report: Report, claim: TrainingClaim, parent: ParentEvidence | None, inputs: Mapping[str, Path]
) -> StartFiles:
    """(2c): the declared parent is ``parent`` and connects; every declared input is given and holds its weights.

    A parent or input that is declared but not given is missing input (exit 2), one that is given but
    not declared is a usage error; a parent whose attested final digests are not the ones this run
    declares, or an input file that holds other weights, contradicts the claim.
    """
    declared = claim.parent
    if declared is None and parent is not None:
        raise MalformedInputError("a parent was given, but the attestation declares a seeded start (no parent)")
    if declared is not None:
        if parent is None:
            raise MissingInputError(
                f"the attestation declares a parent ({declared.mode} of attestation {declared.attestation}, "
                f"weights {declared.weights_digest}); pass its link directory with --parent DIR "
                "(attestation.json, store/, model.safetensors)"
            )
        if parent.digest != declared.attestation:
            raise MalformedInputError(
                f"the parent given ({parent.files.attestation}) is attestation {parent.digest}; this run declares {declared.attestation}"
            )
        if declared.weights_digest != parent.claim.final_weights_digest:
            raise LineageError(
                f"the declared parent weights {declared.weights_digest} are not the parent's attested final weights "
                f"{parent.claim.final_weights_digest}"
            )
        if declared.mode == "continue" and declared.state_digest != parent.claim.final_state_digest:
            raise LineageError(
                f"the declared parent state {declared.state_digest} is not the parent's attested final state {parent.claim.final_state_digest}"
            )
        what = "final state" if declared.mode == "continue" else "final weights"
        report.passed(CheckName.LINEAGE, f"{declared.mode} of attestation {declared.attestation}: starts from its attested {what}")
    unknown = sorted(set(inputs) - set(claim.inputs))
    if unknown:
        raise MalformedInputError(f"--input names {', '.join(unknown)}, which the attestation does not declare")
    for name, frozen in claim.inputs.items():
        if name not in inputs:
            raise MissingInputError(
                f"the attestation declares frozen input {name} (weights {frozen.weights_digest}); pass --input {name}=PATH"
            )
        read_input_weights(name, inputs[name], frozen.weights_digest)  # FrozenInputError if it holds other weights
    if claim.inputs:
        report.passed(CheckName.INPUTS, f"{', '.join(sorted(claim.inputs))}: each file holds the declared weights")
    return StartFiles(
        parent_weights=None if declared is None or declared.mode != "finetune" or parent is None else parent.files.weights,
        parent_store=None if declared is None or declared.mode != "continue" or parent is None else parent.files.store,
        inputs={name: inputs[name] for name in claim.inputs},
    )


def _replay_mode(report: Report, claim: TrainingClaim, options: VerifyOptions) -> None:
    """Bitwise, exact or bounded: decided by the claim and the auditor, never by a worker's answer."""
    if claim.exact is not None:
        report.exact = claim.exact.to_json()
        note = "the run was recorded in exact mode: replayed bitwise, --bounded is not needed"
        if options.bounded and note not in report.notes:
            report.notes.append(note)
    elif options.bounded:
        report.bound, report.bound_provenance = BOUND, BOUND_PROVENANCE


def _replay_in_workers(
    report: Report, isolation: Isolation, payload: bytes, claim: TrainingClaim, store: Path, options: VerifyOptions,
    drawn: list[int], seed: int | None, progress: Progress | None, manifest: ManifestIndex, start: StartFiles,
) -> None:
    """(6)-(8) in worker processes, all at once, each on its share of ``drawn``; their answers merged here."""
    shares = split_shares(drawn, options.workers)
    # On a cluster each share has a machine to itself: the one-worker thread count.
    threads = worker_threads(claim.torch_threads, claim.exact is not None, options.threads, 1 if options.remote else len(shares))
    if len(shares) > 1 and not options.remote:
        each = f"{threads} torch threads" if threads is not None else f"the recorded {claim.torch_threads} torch threads"
        report.notes.append(f"replay split over {len(shares)} worker processes run at once, {each} each")
    requests = [_worker_request(payload, store, options, share, threads, start) for share in shares]
    report.segment_count, report.sampled, report.sample_seed = len(claim.checkpoint_steps) - 1, drawn, seed
    done = 0

    def finished(k: int, outcome: WorkerAnswer | SandboxError | LostTask) -> None:
        nonlocal done
        if progress is not None and isinstance(outcome, WorkerAnswer):  # not yet checked: progress only, of what it says it replayed
            done += min(len(shares[k]), _replayed_count(outcome))
            progress(done, len(drawn))

    outcomes: list[WorkerAnswer | SandboxError | LostTask]
    if options.shard_requests is not None:
        settings = {"bounded": options.bounded, "ranks": options.ranks, "threads": options.threads, "sandbox": options.sandbox, "device": options.device}
        write_requests(
            options.shard_requests, payload, requests, shares, drawn, report.segment_count, options.segments, int(seed or 0),
            settings, isolation.loopback,
        )
        report.pending_shards = len(shares)
        report.notes.append(
            f"NO VERDICT YET: {len(shares)} shard requests written to {options.shard_requests}; answer each with "
            f"`trainwitness replay-shard DIR/request-KKK.json --out DIR/answer-KKK.json`, then merge with the same "
            "verify command and --shard-answers DIR"
        )
        return
    if options.shard_answers is not None:
        outcomes = read_answers(options.shard_answers, read_plan(options.shard_answers, payload, report.segment_count), report.notes)
        how = f"the answers in {options.shard_answers}"
    elif options.cluster is not None:
        report.notes.append(f"replay split into {len(shares)} tasks on the Dask cluster at {options.cluster}")
        outcomes = replay_on_cluster(options.cluster, options.sandbox, isolation.loopback, requests, report.notes, finished)
        how = f"the Dask cluster at {options.cluster}"
    else:
        outcomes = list(replay_in_workers(isolation, requests, finished))
        how = "its worker"
    lost = [k for k, outcome in enumerate(outcomes) if isinstance(outcome, LostTask)]
    answered = [k for k in range(len(shares)) if k not in lost]
    if answered:
        merge_worker_reports(report, [shares[k] for k in answered], [outcomes[k] for k in answered])  # type: ignore[misc]
        _count_data_read(report, claim, [i for k in answered for i in shares[k]], manifest)
    _replay_mode(report, claim, options)
    if lost:
        missing = [i for k in lost for i in shares[k]]
        why = "; ".join(f"share {k + 1} (segments {', '.join(map(str, shares[k]))}): {outcomes[k].why}" for k in lost)  # type: ignore[union-attr]
        if report.checks and not report.accepted:  # the evidence already contradicts the claim: rejected all the same
            report.notes.append(f"replay shares lost on {how}, never checked: {why}")
            return
        raise IncompleteAuditError(
            f"the replay of segments {', '.join(map(str, missing))} was lost on {how} ({why}); nothing was accepted: "
            "run the audit again"
        )


def _count_data_read(report: Report, claim: TrainingClaim, replayed: list[int], manifest: ManifestIndex) -> None:
    """Data read, counted here: the workers' shares overlap in the samples they read (one sample
    serves many steps), so the distinct samples are counted from the signed sampler and the manifest."""
    needed = _needed_samples(claim, replayed)
    distinct_bytes = manifest.total_size(needed)
    report.data_total_bytes = manifest.summary.total_bytes
    if any(c.name == CheckName.DATA for c in report.checks) and all(c.passed for c in report.checks if c.name == CheckName.DATA):
        report.data_bytes_read, report.data_samples_read = distinct_bytes, len(needed)
    else:  # a worker stopped early: what they say they read, never more than the draw needs
        report.data_bytes_read = min(report.data_bytes_read, distinct_bytes)
        report.data_samples_read = min(report.data_samples_read, len(needed))


def _replayed_count(outcome: WorkerAnswer) -> int:
    return 0 if outcome.report is None else len(outcome.report.segments)


def _worker_request(
    payload: bytes, store: Path, options: VerifyOptions, share: list[int], threads: int | None, start: StartFiles,
) -> WorkerRequest:
    """A worker's request for ``share`` (sandbox/protocol.py): what the parent verified and the auditor's settings."""
    return WorkerRequest.for_share(
        payload, store, options.data, options.code, share, threads, bounded=options.bounded, device=options.device,
        ranks=options.ranks, start=start,
    )


def _missing_file(e: OSError) -> MissingInputError:
    return MissingInputError(
        f"the training code reads {e.filename!r}, which cannot be read here ({e.strerror}): declared data sources "
        "are given with --data NAME=PATH and the source tree with --code DIR; any other file must exist where the code looks"
    )


def _is_allocation_failure(e: BaseException) -> bool:
    """torch raises RuntimeError (an OutOfMemoryError on devices) when an allocation is refused."""
    text = str(e)
    return isinstance(e, MemoryError) or "can't allocate memory" in text or "out of memory" in text or "size calculation overflowed" in text


def replay_drawn(
    claim: TrainingClaim, evidence: Evidence, options: VerifyOptions, drawn: list[int], report: Report,
    progress: Progress | None = None, *, rank: int | None = None, payload: bytes | None = None,
    manifest: ManifestIndex | None = None, start: StartFiles = _NO_START,
) -> None:
    """(6)-(8) for the segments ``drawn``: in the verifier's own process, or in a worker on its share.

    Raises the ``VerificationError`` of the first failed check. A worker starts here, from the
    statement the parent verified; it reads the store again (the index against the signed roots,
    for the inclusion proofs below, and the manifest unless given), but not the weights, and it
    checks no signature. What this machine lacks is an ``InputError``, not a verdict: a file the
    training code reads that is absent here, or memory the signed hyperparameters need that this
    machine (or the sandbox's limit) cannot give.
    A data-parallel run replays with ``options.ranks``: ``single`` here, every rank's share;
    ``local`` in one process per rank (``ranks.replay_ranks_locally``, which needs the verified
    ``payload`` to hand on), each of which comes back here with its ``rank``.
    """
    # The upstream code runs from source only, and may import local code only from the attested trees
    # (identity/imports.py): located again here, as a worker starts from the statement alone.
    roots = [locate_source_root(claim.entry_point), *(locate_package(str(p["name"])) for p in claim.code["packages"])]  # type: ignore[index, union-attr]
    try:
        with attested_imports(roots):
            _replay_drawn(claim, evidence, options, drawn, report, progress, rank, payload, manifest, start)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        raise _missing_file(e) from e
    except (MemoryError, RuntimeError) as e:
        if not _is_allocation_failure(e):
            raise
        raise MalformedInputError(
            f"the training code could not allocate the memory its signed hyperparameters ask for on this machine "
            f"({_one_line(str(e), 200)})"
        ) from e
    finally:
        if evidence.checkpoint_bytes_read:  # a rejected audit still says what it read
            report.checkpoint_bytes_read = evidence.checkpoint_bytes_read


def _replay_drawn(
    claim: TrainingClaim, evidence: Evidence, options: VerifyOptions, drawn: list[int], report: Report,
    progress: Progress | None, rank: int | None, payload: bytes | None, manifest: ManifestIndex | None, start: StartFiles,
) -> None:
    store = evidence.store
    if claim.distributed is not None and options.ranks == "local" and rank is None:
        if payload is None:
            raise ValueError("replaying the ranks in local processes needs the verified statement's payload")
        replay_ranks_locally(claim, _worker_request(payload, store, options, drawn, options.threads, start), report)
        report.segment_count, report.sampled, report.sample_seed = len(claim.checkpoint_steps) - 1, list(drawn), options.seed
        _replay_mode(report, claim, options)
        return
    # (6): the manifest, checked against the signed summary; then the run rebuilt from its declared
    # seed (the start is recomputed, never trusted), reading data only through proven records.
    if manifest is None:
        manifest = read_manifest(store / MANIFEST_FILE, claim.manifest)
    _check_data_options(claim, options.data)
    report.passed(CheckName.MANIFEST, f"{len(manifest)} samples in {len(claim.manifest.sources)} sources match the signed root")
    threads = claim.torch_threads if options.threads is None else options.threads
    apply_execution_settings(threads)
    _replay_mode(report, claim, options)
    device = _check_device(claim, options)
    for name, (recorded, here) in environment_differences(claim.environment, device).items():
        report.notes.append(f"environment differs: {name} recorded {recorded!r}, here {here!r}")
    function = load_entry_point(claim.entry_point)
    unstated = sorted(set(function.defaults) - set(claim.hyperparameters))
    if unstated:  # a default filled in here would be a value nobody signed
        raise CodeMismatchError(f"the attestation does not state the hyperparameters {unstated} that the spec reads")
    unknown = sorted(set(claim.hyperparameters) - set(function.defaults))
    if unknown:
        raise CodeMismatchError(f"the attestation states hyperparameters {unknown} that the spec does not read")
    hp = resolve_hyperparameters(function.defaults, claim.hyperparameters)
    parent_start, input_weights = _read_start(claim, start)
    access = CheckedRecords(manifest, options.data)
    parallel = None
    if claim.distributed is not None:
        parallel = DataParallel(claim.distributed.world_size, rank, claim.distributed.backend)
    try:
        with use_record_access(access):
            run = TrainingRun.start(function, hp, parallel, parent=parent_start, inputs=input_weights, device=device)
    except ParentMismatchError as e:  # the statement says the start was formed so: the code and parent contradict it
        raise InitialStateError(f"checkpoint 0 cannot be formed from the parent as declared: {e}") from e
    if isinstance(run.spec.dataset, SourceDataset) and run.spec.dataset.access is not access:
        run.spec.dataset.bind(access)  # built outside the spec call (e.g. at import): still read only proven records
    if run.spec.dataset.name != claim.data["dataset"]:
        raise DataMismatchError(f"the spec builds dataset {run.spec.dataset.name!r}, the attestation names {claim.data['dataset']!r}")
    if len(run.spec.dataset) != manifest.summary.num_samples or run.sampler.num_samples != manifest.summary.num_samples:
        raise DataMismatchError(f"dataset {run.spec.dataset.name} has {len(run.spec.dataset)} samples, the manifest {len(manifest)}")
    # Replay uses the sampler the spec builds, whatever the claim says: so the claim must say exactly that.
    if claim.data["sampler"] != run.sampler.describe():
        raise DataMismatchError("the attested sampler is not the one the spec builds for this dataset")
    _check_committed_batches(evidence, run)
    report.passed(CheckName.BATCHES, f"every step's sample ids are the declared sampler's (seed {hp['data_seed']})")
    if device_kind(claim.environment.get("device")) not in ("cpu", device.type):
        # The recorded accelerator's freshly seeded generator cannot be recomputed on this kind of device;
        # it is carried from checkpoint 0 (inert unless a step draws from it, which replay_segment detects).
        run.carried = device_generator_state(evidence.load_checkpoint(0))
        note = f"the recorded {claim.environment.get('device')} generator at checkpoint 0 is taken from the store (declared, not recomputed here)"
        if note not in report.notes:
            report.notes.append(note)
    unread = sorted(set(claim.inputs) - run.inputs_read)
    if unread:
        report.notes.append(f"the training spec did not read the declared frozen inputs {', '.join(unread)}")
    report.passed(CheckName.INITIAL_STATE, _check_start(claim, run, evidence, int(hp["seed"]), parent_start))
    # Every checkpoint's layout follows from the state just built: a file declaring another is refused
    # before anything is allocated for it (docs/FORMAT.md, "Checkpoint files").
    evidence.expect_layout(run.capture(), run.spec.optimizer)

    # (7): the segments the verifier drew; the samples they use are fetched from the auditor's copy
    # and each proven against the manifest root before any step runs.
    report.segment_count = len(claim.checkpoint_steps) - 1
    report.sample_seed = options.seed
    report.sampled = list(drawn)
    # (a rank process reads only its own shards)
    needed = [
        i
        for seg in report.sampled
        for step in range(claim.checkpoint_steps[seg], claim.checkpoint_steps[seg + 1])
        for i in (run.sampler.batch_ids(step) if rank is None else run.parallel.shard(run.sampler.batch_ids(step)))  # type: ignore[union-attr]
    ]
    report.data_total_bytes = manifest.summary.total_bytes
    if isinstance(run.spec.dataset, SourceDataset):
        try:
            prefetch(run.spec.dataset, access, needed)
        finally:  # a rejected audit still reports what it read
            report.data_bytes_read, report.data_samples_read = access.bytes_read, access.samples_read
    else:
        report.data_bytes_read = check_code_built_samples(run.spec.dataset, manifest, needed)
        report.data_samples_read = len(set(needed))
    report.passed(
        CheckName.DATA,
        f"{report.data_samples_read} samples proven against the manifest; "
        f"{report.data_bytes_read} of {report.data_total_bytes} bytes of data read",
    )

    # (8): replay each sampled segment and compare bitwise.
    for done, i in enumerate(report.sampled):
        report.segments.append(replay_segment(run, evidence, i, report.bound))
        report.checkpoint_bytes_read = evidence.checkpoint_bytes_read
        if progress is not None:
            progress(done + 1, len(report.sampled))
    if report.bound is None:
        how = "bitwise" if claim.exact is None else "bitwise in exact mode (committed hints applied)"
        report.passed(CheckName.REPLAY, f"{len(report.segments)} sampled segments replay {how} onto their next checkpoint")
    else:
        report.passed(CheckName.REPLAY, f"{len(report.segments)} sampled segments replay within the bound {report.bound:.3g}")
