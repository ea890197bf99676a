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

__all__ = ["LinkFiles", "ATTESTATION_FILE", "STORE_DIR", "WEIGHTS_FILE", "PUBLIC_KEY_FILE"]

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
