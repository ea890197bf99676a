"""Tools for the forgeries the tests attempt: edit the store or the attestation, re-sign with the prover's key."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.store import INDEX_FILE, find_checkpoint
from trainwitness.identity.signing import load_private_key, seal_envelope
from trainwitness.prover import attest_store
from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint
from trainwitness.tensors.state import FlatState

from .runs import RecordedRun


def load_checkpoint(store: Path, step: int) -> FlatState:
    path = store / find_checkpoint(store, step)
    return decode_checkpoint(path.read_bytes(), str(path))


def write_checkpoint(store: Path, step: int, flat: FlatState) -> None:
    """Write ``flat`` where the checkpoint for ``step`` lives, zstd-compressed as the prover writes it."""
    path = store / find_checkpoint(store, step)
    path.write_bytes(encode_checkpoint(flat, 3 if path.suffix == ".zst" else None))


def index_records(store: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (store / INDEX_FILE).read_bytes().splitlines()]


def write_index(store: Path, records: list[dict[str, Any]]) -> None:
    (store / INDEX_FILE).write_bytes(b"".join(canonical_json(r) + b"\n" for r in records))


def step_record(records: list[dict[str, Any]], step: int) -> dict[str, Any]:
    return next(r for r in records if r["kind"] == "step" and r["step"] == step)


def checkpoint_record(records: list[dict[str, Any]], index: int) -> dict[str, Any]:
    return next(r for r in records if r["kind"] == "checkpoint" and r["index"] == index)


def resign(run: RecordedRun, key: Ed25519PrivateKey | None = None) -> None:
    """The forger's last move: a fresh attestation over the edited store, by default with the prover's key."""
    signing_key = key if key is not None else load_private_key(run.private_key)
    run.attestation.write_bytes(attest_store(run.store, run.weights, signing_key, replay_check=False))


def payload_of(attestation: Path) -> dict[str, Any]:
    envelope = json.loads(attestation.read_bytes())
    return json.loads(base64.b64decode(envelope["payload"]))  # type: ignore[no-any-return]


def edit_payload(
    attestation: Path, edit: Callable[[dict[str, Any]], None], key: Ed25519PrivateKey | None = None
) -> None:
    """Edit the statement; keep the old signatures (``key=None``) or seal it anew with ``key``."""
    statement = payload_of(attestation)
    edit(statement)
    payload = canonical_json(statement)
    if key is not None:
        attestation.write_bytes(seal_envelope(payload, key))
        return
    envelope = json.loads(attestation.read_bytes())
    envelope["payload"] = base64.b64encode(payload).decode("ascii")
    attestation.write_bytes(canonical_json(envelope) + b"\n")
