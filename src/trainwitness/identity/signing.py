"""Ed25519 keys and DSSE envelopes (https://github.com/secure-systems-lab/dsse, protocol v1).

The signature covers PAE(payloadType, payload) =
``"DSSEv1" SP len(type) SP type SP len(payload) SP payload``, so the payload type is signed too.
``open_envelope`` returns the payload only after a signature by the given key verifies: there is
no way to get at an unverified payload except ``_unverified_payload``, named for what it is.
``payload`` and ``sig`` are read in either base64 alphabet, standard or URL-safe (RFC 4648
sections 4 and 5), padded or not, as the DSSE envelope specification allows; envelopes are written
in the standard alphabet, padded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trainwitness.commit.atomic import atomic_create, atomic_write
from trainwitness.commit.canonical import canonical_json, parse_json
from trainwitness.commit.safe_open import read_untrusted
from trainwitness.errors import MalformedInputError, SignatureError

__all__ = [
    "PAYLOAD_TYPE",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "public_key_from_pem",
    "envelope_key_ids",
    "key_id",
    "seal_envelope",
    "open_envelope",
    "unverified_payload",
]

PAYLOAD_TYPE = "application/vnd.in-toto+json"
MAX_ENVELOPE_BYTES = 16 * 1024 * 1024


def _pae(payload_type: str, payload: bytes) -> bytes:
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(t), t, len(payload), payload)


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def generate_keypair(private_path: Path, public_path: Path) -> Ed25519PublicKey:
    """Write a new key pair as PEM; the private key file is created 0600 and never overwritten.

    Each file is created whole or not at all (``commit.atomic``); raises ``FileExistsError`` when
    the private key exists, ``OutputError`` when a file cannot be written.
    """
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    atomic_create(private_path, private_pem, 0o600)  # FileExistsError: never overwritten
    atomic_write(public_path, public_pem)
    return key.public_key()


def _read_key_file(path: Path) -> bytes:
    return read_untrusted(path, f"key file {path}", 64 * 1024, follow_symlinks=True)  # a path the user named


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(_read_key_file(path), password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:  # UnsupportedAlgorithm: an algorithm OID it does not know
        raise MalformedInputError(f"{path} is not an unencrypted PEM private key ({_one_line(e)})") from e
    if not isinstance(key, Ed25519PrivateKey):
        raise MalformedInputError(f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    return public_key_from_pem(_read_key_file(path), str(path))


MAX_KEY_BYTES = 64 * 1024  # a PEM public key is a few hundred bytes


def public_key_from_pem(pem: bytes, what: str) -> Ed25519PublicKey:
    """An Ed25519 public key from PEM (SubjectPublicKeyInfo); ``MalformedInputError`` naming ``what`` otherwise."""
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:  # UnsupportedAlgorithm: an algorithm OID it does not know
        raise MalformedInputError(f"{what} is not a PEM public key ({_one_line(e)})") from e
    if not isinstance(key, Ed25519PublicKey):
        raise MalformedInputError(f"{what} is not an Ed25519 public key")
    return key


def envelope_key_ids(envelope_bytes: bytes) -> list[str]:
    """The ``keyid`` hints of an envelope's signatures (unverified; for naming a signer nobody trusts)."""
    envelope = parse_json(envelope_bytes, "DSSE envelope", MAX_ENVELOPE_BYTES)
    signatures = envelope.get("signatures") if isinstance(envelope, dict) else None
    if not isinstance(signatures, list):
        return []
    return [e["keyid"][:80] for e in signatures if isinstance(e, dict) and isinstance(e.get("keyid"), str)]


def seal_envelope(payload: bytes, key: Ed25519PrivateKey, payload_type: str = PAYLOAD_TYPE) -> bytes:
    signature = key.sign(_pae(payload_type, payload))
    envelope = {
        "payload": base64.b64encode(payload).decode("ascii"),
        "payloadType": payload_type,
        "signatures": [{"keyid": key_id(key.public_key()), "sig": base64.b64encode(signature).decode("ascii")}],
    }
    return canonical_json(envelope) + b"\n"


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split())[:200]


_STANDARD = re.compile(r"[A-Za-z0-9+/]*={0,2}")
_URL_SAFE = re.compile(r"[A-Za-z0-9_-]*={0,2}")


def _b64(value: object, what: str, where: str) -> bytes:
    """Base64 in one alphabet, standard or URL-safe, padded or not (DSSE envelope.md allows both)."""
    if not isinstance(value, str):
        raise MalformedInputError(f"{where}: {what} is not a string")
    standard, url_safe = _STANDARD.fullmatch(value), _URL_SAFE.fullmatch(value)
    if not (standard or url_safe):
        raise MalformedInputError(f"{where}: {what} is not valid base64 (one alphabet, standard or URL-safe)")
    unpadded = value.rstrip("=")
    if len(unpadded) % 4 == 1 or (value != unpadded and len(value) % 4):
        raise MalformedInputError(f"{where}: {what} is not valid base64 (its length or padding is wrong)")
    try:
        return base64.b64decode(unpadded + "=" * (-len(unpadded) % 4), altchars=None if standard else b"-_", validate=True)
    except (binascii.Error, ValueError) as e:
        raise MalformedInputError(f"{where}: {what} is not valid base64") from e


@dataclass(frozen=True)
class _Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[bytes, ...]
    key_ids: tuple[str, ...]  # the keyid of each signature that names one: a hint, never trusted


def _parse_envelope(envelope_bytes: bytes, where: str) -> _Envelope:
    if not envelope_bytes.strip():
        raise MalformedInputError(f"{where}: the file is empty")
    envelope = parse_json(envelope_bytes, where, MAX_ENVELOPE_BYTES)
    if not isinstance(envelope, dict) or not {"payload", "payloadType", "signatures"} <= set(envelope):
        raise MalformedInputError(f"{where}: needs payload, payloadType and signatures")
    payload_type = envelope["payloadType"]
    if not isinstance(payload_type, str):
        raise MalformedInputError(f"{where}: payloadType is not a string")
    signatures = envelope["signatures"]
    if not isinstance(signatures, list) or not 1 <= len(signatures) <= 16:
        raise MalformedInputError(f"{where}: signatures must be a list of 1 to 16 entries")
    sigs, key_ids = [], []
    for entry in signatures:
        if not isinstance(entry, dict) or "sig" not in entry:
            raise MalformedInputError(f"{where}: a signature entry has no 'sig'")
        sigs.append(_b64(entry["sig"], "sig", where))
        if isinstance(entry.get("keyid"), str) and entry["keyid"]:
            key_ids.append(entry["keyid"])
    return _Envelope(payload_type, _b64(envelope["payload"], "payload", where), tuple(sigs), tuple(key_ids))


def _unverified_payload(envelope_bytes: bytes, where: str = "DSSE envelope") -> tuple[str, bytes, list[bytes]]:
    envelope = _parse_envelope(envelope_bytes, where)
    return envelope.payload_type, envelope.payload, list(envelope.signatures)


def unverified_payload(envelope_bytes: bytes, where: str = "DSSE envelope") -> bytes:
    """The payload of an envelope WITHOUT checking any signature: for showing a claim, or for naming it.

    ``inspect`` shows a claim with it; ``train --parent`` names the parent's statement by digest with
    it (the verifier checks the parent's signature later). Never a basis for believing the payload.
    ``where`` names the envelope (its file) in every error.
    """
    return _unverified_payload(envelope_bytes, where)[1]


def _shown_key_id(key_id: str) -> str:
    """A key id from the envelope, as printed: the prover wrote it, so it is shown escaped and cut short."""
    return key_id if re.fullmatch(r"[A-Za-z0-9:._-]{1,100}", key_id) else repr(key_id[:100])


def open_envelope(
    envelope_bytes: bytes, public_key: Ed25519PublicKey, payload_type: str = PAYLOAD_TYPE, where: str = "DSSE envelope"
) -> bytes:
    """The payload, once one signature over it verifies under ``public_key``.

    ``where`` names the envelope (its file) in every error. Raises ``MalformedInputError`` for an
    envelope that cannot be read, ``SignatureError`` (naming the key ids the envelope carries) when
    no signature verifies.
    """
    envelope = _parse_envelope(envelope_bytes, where)
    if envelope.payload_type != payload_type:
        raise MalformedInputError(f"{where}: payloadType {envelope.payload_type[:100]!r}, expected {payload_type!r}")
    for signature in envelope.signatures:
        try:
            public_key.verify(signature, _pae(envelope.payload_type, envelope.payload))
            return envelope.payload
        except InvalidSignature:
            continue
    given = key_id(public_key)
    if envelope.key_ids and given not in envelope.key_ids:
        carried = ", ".join(_shown_key_id(k) for k in envelope.key_ids[:4])
        raise SignatureError(f"{where}: signed by key {carried}, not by the given key {given} (--key)")
    raise SignatureError(f"{where}: no signature in the envelope verifies under the key {given} (--key)")
