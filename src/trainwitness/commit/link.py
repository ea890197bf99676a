"""A link directory: one attested run's files side by side, as ``train --parent DIR`` and ``verify --parent DIR`` read them.

    DIR/attestation.json    the DSSE envelope over the run's statement
    DIR/store/              the run's store (docs/FORMAT.md section 5)
    DIR/model.safetensors   the final weights, the statement's subject
    DIR/trainwitness.pub    conventionally, the signer's public key; never trusted for being here
                            (the verifier trusts only the keys it is given: --key, --keyring)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from trainwitness.commit.store import read_store_file
from trainwitness.errors import MissingInputError

__all__ = ["LinkFiles", "read_file", "ATTESTATION_FILE", "STORE_DIR", "WEIGHTS_FILE", "PUBLIC_KEY_FILE"]

ATTESTATION_FILE = "attestation.json"
STORE_DIR = "store"
WEIGHTS_FILE = "model.safetensors"
PUBLIC_KEY_FILE = "trainwitness.pub"


@dataclass(frozen=True)
class LinkFiles:
    """Where one link's attestation, store and final weights are."""

    attestation: Path
    store: Path
    weights: Path

    @classmethod
    def at(cls, directory: Path) -> LinkFiles:
        """The files of the link directory ``directory`` (nothing is read or checked here)."""
        return cls(attestation=directory / ATTESTATION_FILE, store=directory / STORE_DIR, weights=directory / WEIGHTS_FILE)


def read_file(path: Path, what: str, max_bytes: int) -> bytes:
    """A regular file's bytes, opened without following a symlink (``store.read_store_file``), size-capped.

    Raises ``MissingInputError`` naming ``what`` when it does not exist, ``MalformedInputError`` when
    it is a special file, a symlink or over ``max_bytes``.
    """
    try:
        return read_store_file(path.parent, path.name, max_bytes)
    except MissingInputError as e:
        raise MissingInputError(f"{what} {path} does not exist") from e
