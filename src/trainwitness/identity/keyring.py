"""The keys an auditor trusts, each with a name: ``verify --key PATH`` (repeatable) and ``--keyring FILE``.

A chain is usually signed by several people (an upstream, a fine-tuner), so the verifier holds a set
of trusted Ed25519 public keys and reports, for each link, which of them signed it. A keyring file
is TOML with one table, ``keys``, mapping a name to a public key: a path to a PEM file (relative to
the keyring file's directory) or the PEM text itself::

    [keys]
    upstream = "keys/upstream.pub"
    finetuner = \"\"\"
    -----BEGIN PUBLIC KEY-----
    MCowBQYDK2VwAyEA...
    -----END PUBLIC KEY-----
    \"\"\"

Names are 1 to 64 characters of ``A-Z a-z 0-9 _ . @ -``; a key given twice (under two names, or
by ``--key`` and the keyring) is refused, so that every link's signer has one name. Keys given with
``--key PATH`` are named by the path as given. The envelope's ``keyid`` is a hint only: every trusted
key is tried, and trust comes from the one whose signature verifies.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from trainwitness.commit.safe_open import read_untrusted
from trainwitness.commit.strict_toml import parse_toml
from trainwitness.errors import MalformedInputError, SignatureError
from trainwitness.identity.signing import (
    PAYLOAD_TYPE,
    envelope_key_ids,
    key_id,
    load_public_key,
    open_envelope,
    public_key_from_pem,
)

__all__ = ["TrustedKey", "Keyring", "load_keyring"]

_NAME_RE = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_MAX_KEYRING_BYTES = 1 << 20
_MAX_KEYS = 1024


@dataclass(frozen=True)
class TrustedKey:
    name: str
    key: Ed25519PublicKey

    @property
    def key_id(self) -> str:
        return key_id(self.key)

    def describe(self) -> str:
        return f"{self.name} ({self.key_id})"


@dataclass(frozen=True)
class Keyring:
    """Trusted public keys, in the order given; at least one."""

    keys: tuple[TrustedKey, ...]

    def __post_init__(self) -> None:
        if not self.keys:
            raise MalformedInputError("no trusted key: give --key PATH (one per signer) or --keyring FILE")
        ids = [k.key_id for k in self.keys]
        for i, k in enumerate(self.keys):
            if ids.index(k.key_id) != i:
                raise MalformedInputError(f"key {k.key_id} is given twice, as {self.keys[ids.index(k.key_id)].name} and as {k.name}")
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise MalformedInputError(f"two trusted keys share a name: {sorted(n for n in names if names.count(n) > 1)[0]}")

    @classmethod
    def from_sources(cls, key_paths: Sequence[Path] = (), keyring: Path | None = None) -> Keyring:
        """``--key`` files (each named by its path as given) followed by a keyring file's keys."""
        keys = [TrustedKey(str(path), load_public_key(path)) for path in key_paths]
        if keyring is not None:
            keys.extend(load_keyring(keyring))
        return cls(tuple(keys))

    def describe(self) -> str:
        return ", ".join(k.name for k in self.keys)

    def open(self, envelope: bytes, payload_type: str = PAYLOAD_TYPE, where: str = "DSSE envelope") -> tuple[bytes, TrustedKey]:
        """The payload and the trusted key whose signature over it verifies; ``SignatureError`` if none does.

        ``where`` names the envelope (its file) in every error it cannot be read for.
        """
        for trusted in self.keys:
            try:
                return open_envelope(envelope, trusted.key, payload_type, where), trusted
            except SignatureError:
                continue
        hints = envelope_key_ids(envelope)
        signed = f"it names key id {', '.join(hints)}" if hints else "it names no key id"
        trusted_keys = f"the key {self.keys[0].describe()}" if len(self.keys) == 1 else f"any trusted key ({self.describe()})"
        raise SignatureError(f"no signature in the envelope verifies under {trusted_keys}; {signed}")


def load_keyring(path: Path) -> list[TrustedKey]:
    """The keys of a keyring file (format in the module doc), in file order."""
    data = read_untrusted(path, f"keyring {path}", _MAX_KEYRING_BYTES)
    document = parse_toml(data, f"keyring {path}", _MAX_KEYRING_BYTES)
    if set(document) != {"keys"} or not isinstance(document["keys"], dict):
        raise MalformedInputError(f"keyring {path} must hold exactly one table, [keys]")
    entries = document["keys"]
    if not 1 <= len(entries) <= _MAX_KEYS:
        raise MalformedInputError(f"keyring {path}: [keys] must name 1 to {_MAX_KEYS} keys")
    keys = []
    for name, value in entries.items():
        if not _NAME_RE.match(name):
            raise MalformedInputError(f"keyring {path}: key name {name[:80]!r} is not 1 to 64 of A-Z a-z 0-9 _ . @ -")
        if not isinstance(value, str):
            raise MalformedInputError(f"keyring {path}: key {name} must be a PEM file path or PEM text")
        if value.lstrip().startswith("-----BEGIN"):
            keys.append(TrustedKey(name, public_key_from_pem(value.strip().encode("ascii", "replace"), f"keyring {path}: key {name}")))
        else:
            keys.append(TrustedKey(name, load_public_key(path.parent / value)))
    return keys
