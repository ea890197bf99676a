"""Build the signed attestation from a complete store and the final weights file."""

from __future__ import annotations

import re
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainwitness.commit.canonical import JSONValue, parse_json
from trainwitness.commit.hashing import file_sha256, format_digest
from trainwitness.commit.hints import hints_leaves, read_hints
from trainwitness.commit.merkle import merkle_root
from trainwitness.commit.run_declaration import read_run_declaration
from trainwitness.commit.statement import Statement, TrainingClaim, TreeCommitment
from trainwitness.commit.store import IMPORTS_FILE, RUN_FILE, checkpoint_steps, read_index, read_store_file
from trainwitness.data.manifest import ManifestSummary
from trainwitness.errors import MalformedInputError, MissingInputError
from trainwitness.identity.code import files_from_json
from trainwitness.identity.signing import seal_envelope
from trainwitness.prover.selfcheck import check_replay
from trainwitness.tensors.checkpoint import decode_weights
from trainwitness.tensors.state import weights_digest

__all__ = ["attest_store", "local_uri_sources"]

_WINDOWS_DRIVE = re.compile(r"^[A-Za-z]:[\\/]")


def _is_local_path(uri: str) -> bool:
    """A uri that names a place on the signer's own disk: an absolute path, ``~``, or ``file:``."""
    return uri.startswith(("/", "~", "\\")) or uri.lower().startswith("file:") or bool(_WINDOWS_DRIVE.match(uri))


def local_uri_sources(manifest: ManifestSummary) -> list[tuple[str, str]]:
    """(source name, uri) of every declared source whose uri is a path on the prover's machine."""
    return [(s.name, s.uri) for s in manifest.sources if s.uri is not None and _is_local_path(s.uri)]


def _read_imports(store: Path) -> dict[str, JSONValue]:
    """The store's ``imports.json`` as the statement signs it (file lists dropped), checked for shape."""
    record = parse_json(read_store_file(store, IMPORTS_FILE, 1 << 26), f"{store}/{IMPORTS_FILE}")
    if not isinstance(record, dict) or set(record) != {"distributions", "packages"}:
        raise MalformedInputError(f"store {store}: {IMPORTS_FILE} is not a record of imports")
    packages = []
    for p in record["packages"]:  # type: ignore[union-attr]
        files_from_json(p["files"], f"{store}/{IMPORTS_FILE} {p['name']}")  # type: ignore[index]
        packages.append({k: p[k] for k in ("name", "tree_digest", "file_count")})  # type: ignore[index]
    return {"distributions": record["distributions"], "packages": packages}


def attest_store(
    store: Path, weights_path: Path, key: Ed25519PrivateKey, *, replay_check: bool = True, allow_local_uri: bool = False,
) -> bytes:
    """A DSSE envelope over the run's Statement; refuses an incomplete store, foreign weights, and a run that does not replay.

    ``replay_check``: first replay the first recorded segment and one drawn from OS randomness in
    this process (``selfcheck.check_replay``; it runs the store's entry point) and refuse to sign
    with ``NotReplayableError`` when one does not land bitwise. Turn it off only for a store whose
    replay was checked already (the check's cost is two segments of training).

    Also refuses (``MalformedInputError``) to sign a data source whose ``uri`` is a path on this
    machine (``/home/...``, ``file:...``): a recipient cannot obtain the data there, and the path
    leaks the signer's disk layout. ``allow_local_uri`` signs it anyway (a private audit).
    """
    declared = read_run_declaration(store)
    if declared is None:
        raise MissingInputError(f"store {store}: {RUN_FILE} is missing (a store is created by `trainwitness train`)")
    hp = declared.hyperparameters
    total_steps, interval = int(hp["total_steps"]), int(hp["checkpoint_interval"])  # checked integers (RunDeclaration)
    if not allow_local_uri:
        local = local_uri_sources(declared.manifest)
        if local:
            named = "; ".join(f"{name}: {uri}" for name, uri in local)
            raise MalformedInputError(
                f"data source uri is a path on this machine, which a recipient cannot use ({named}); declare where the "
                "data can be obtained (DataSource(uri=...) in the spec, or `data manifest --uri NAME=URL`), "
                "or sign it anyway with --allow-local-uri"
            )
    index = read_index(store)
    expected = checkpoint_steps(total_steps, interval)
    if len(index.steps) != total_steps or [c.step for c in index.checkpoints] != expected:
        raise MalformedInputError(
            f"store {store} is incomplete: {len(index.steps)} of {total_steps} steps, "
            f"{len(index.checkpoints)} of {len(expected)} checkpoints; resume training first"
        )
    exact, distributed = declared.exact, declared.distributed
    hints = {} if exact is None else {
        "hints": TreeCommitment(format_digest(merkle_root(hints_leaves(read_hints(store, total_steps)))), total_steps)
    }
    final = index.checkpoints[-1]
    if replay_check:
        check_replay(store)
    weights = decode_weights(weights_path.read_bytes(), str(weights_path))
    if weights_digest(weights) != final.weights_digest:
        raise MalformedInputError(f"{weights_path} is not the final checkpoint's weights")
    seconds = None
    if (store / "timing.json").is_file():
        timing = parse_json(read_store_file(store, "timing.json", 1 << 16), f"{store}/timing.json")
        if isinstance(timing, dict) and isinstance(timing.get("training_wall_seconds"), (int, float)):
            seconds = float(timing["training_wall_seconds"])
    claim = TrainingClaim(
        code={**declared.code, **_read_imports(store)},  # the entry point's tree, then what else the run imported
        environment=declared.environment,
        hyperparameters=hp,
        data=declared.data,
        commitments={
            "checkpoints": TreeCommitment(format_digest(merkle_root(index.checkpoint_leaves())), len(index.checkpoints)),
            "batches": TreeCommitment(format_digest(merkle_root(index.batch_leaves())), len(index.steps)),
            "rng": TreeCommitment(format_digest(merkle_root(index.rng_leaves())), len(index.steps)),
            **hints,
        },
        final_state_digest=final.state_digest,
        final_weights_digest=final.weights_digest,
        weights_license=declared.weights_license,
        parent=declared.parent,
        inputs=dict(declared.inputs),
        exact=exact,
        declared_training_seconds=seconds,
        distributed=distributed,
    )
    statement = Statement(subject_name=weights_path.name, subject_sha256=file_sha256(str(weights_path)).hex(), claim=claim)
    return seal_envelope(statement.to_payload(), key)
