"""The prover's side of lineage: read the parent and the frozen inputs a run declares, for recording.

The parent's attestation is read without checking its signature (the prover names it by digest; the
verifier checks the signature against its keyring), but its files are checked against it: the
weights (fine-tune) or the last checkpoint (continued training) must be the ones its statement
names, so a run is never recorded from files its declared parent does not vouch for.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from trainwitness.commit.canonical import JSONValue
from trainwitness.commit.link import LinkFiles
from trainwitness.commit.safe_open import read_untrusted
from trainwitness.commit.statement import (
    START_MODES,
    FrozenInput,
    ParentLink,
    Statement,
    is_input_name,
    statement_digest,
)
from trainwitness.errors import MalformedInputError
from trainwitness.identity.signing import MAX_ENVELOPE_BYTES, unverified_payload
from trainwitness.run.inputs import read_input_weights
from trainwitness.run.parent import ParentStart, StartRecord, read_parent_state, read_parent_weights
from trainwitness.tensors.state import weights_digest

__all__ = ["ParentSource", "read_parent", "read_inputs", "parent_declaration"]


@dataclass(frozen=True)
class ParentSource:
    """The parent as read for recording: its statement's digest and claim, and the start it gives."""

    digest: str
    statement: Statement
    start: ParentStart


def _statement(files: LinkFiles) -> tuple[str, Statement]:
    payload = unverified_payload(read_untrusted(files.attestation, f"attestation {files.attestation}", MAX_ENVELOPE_BYTES), f"DSSE envelope {files.attestation}")
    return statement_digest(payload), Statement.from_payload(payload)


def read_parent(directory: Path, mode: str) -> ParentSource:
    """The parent in link directory ``directory`` (``LinkFiles``), for a ``mode`` start (finetune | continue)."""
    if mode not in START_MODES:
        raise MalformedInputError(f"--parent-mode must be one of {', '.join(START_MODES)}, not {mode!r}")
    files = LinkFiles.at(directory)
    digest, statement = _statement(files)
    claim = statement.claim
    if mode == "finetune":
        start = ParentStart("finetune", weights=read_parent_weights(files.weights, claim.final_weights_digest))
    else:
        start = ParentStart("continue", state=read_parent_state(files.store, claim.final_state_digest))
    return ParentSource(digest=digest, statement=statement, start=start)


def parent_declaration(parent: ParentSource, record: StartRecord | None) -> dict[str, JSONValue]:
    """The statement's ``parent`` field for a run started from ``parent`` (``record``: what the start did)."""
    if record is None or record.mode != parent.start.mode:
        raise ValueError("the run was not started from this parent")
    claim = parent.statement.claim
    link = ParentLink(
        mode=parent.start.mode,
        attestation=parent.digest,
        weights_digest=claim.final_weights_digest,
        state_digest=claim.final_state_digest if parent.start.mode == "continue" else None,
        reinitialised=record.reinitialised,
        dropped=record.dropped,
    )
    return link.to_json()


def read_inputs(paths: Mapping[str, Path]) -> tuple[dict[str, dict[str, torch.Tensor]], dict[str, FrozenInput]]:
    """Each frozen input from a weights file, or from a link directory (then its attestation is named too)."""
    weights: dict[str, dict[str, torch.Tensor]] = {}
    declared: dict[str, FrozenInput] = {}
    for name, path in sorted(paths.items()):
        if not is_input_name(name):
            raise MalformedInputError(f"--input {name!r}: a name is 1 to 64 of A-Z a-z 0-9 _ . - (not starting with . or -)")
        if path.is_dir():
            files = LinkFiles.at(path)
            digest, statement = _statement(files)
            weights[name] = read_input_weights(name, files.weights, statement.claim.final_weights_digest)
            declared[name] = FrozenInput(weights_digest=statement.claim.final_weights_digest, attestation=digest)
        else:
            weights[name] = read_input_weights(name, path)
            declared[name] = FrozenInput(weights_digest=weights_digest(weights[name]))
    return weights, declared
