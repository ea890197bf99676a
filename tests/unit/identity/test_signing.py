"""DSSE envelopes over Ed25519: pinned PAE bytes, signatures that bind payload and type, strict parsing."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trainwitness.errors import MalformedInputError, MissingInputError, SignatureError
from trainwitness.identity.signing import (
    PAYLOAD_TYPE,
    _pae,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    open_envelope,
    seal_envelope,
)

# A fixed key, so that the envelope bytes can be pinned (Ed25519 signatures are deterministic).
FIXED_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))


def test_pae_bytes_are_pinned() -> None:
    assert _pae(PAYLOAD_TYPE, b"hello") == b"DSSEv1 28 application/vnd.in-toto+json 5 hello"
    # The example from the DSSE protocol specification.
    assert _pae("http://example.com/HelloWorld", b"hello world") == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"


def test_envelope_with_a_fixed_key_is_pinned() -> None:
    assert seal_envelope(b'{"x":1}', FIXED_KEY) == (
        b'{"payload":"eyJ4IjoxfQ==","payloadType":"application/vnd.in-toto+json","signatures":[{"keyid":'
        b'"sha256:56475aa75463474c0285df5dbf2bcab73da651358839e9b77481b2eab107708c","sig":'
        b'"hnalmQjGRMHXvdsMZg67GttKL+arnzxsBWsznsMD83FCBN1eE1p84DjERxJzhuGBkqnsGmyzxS7FmnxWa0jaDA=="}]}\n'
    )
    envelope = json.loads(seal_envelope(b'{"x":1}', FIXED_KEY))
    signature = base64.b64decode(envelope["signatures"][0]["sig"])
    # The signature is over PAE(type, payload), not over the payload alone.
    FIXED_KEY.public_key().verify(signature, b'DSSEv1 28 application/vnd.in-toto+json 7 {"x":1}')


def test_sealed_payload_opens_under_its_key() -> None:
    assert open_envelope(seal_envelope(b"payload", FIXED_KEY), FIXED_KEY.public_key()) == b"payload"


def test_envelope_signed_by_another_key_is_rejected_naming_the_key_id_it_carries() -> None:
    other = Ed25519PrivateKey.generate()
    with pytest.raises(SignatureError) as caught:
        open_envelope(seal_envelope(b"payload", other), FIXED_KEY.public_key())
    message = str(caught.value)
    assert f"signed by key {key_id(other.public_key())}, not by the given key {key_id(FIXED_KEY.public_key())}" in message


def test_envelope_without_key_ids_signed_by_another_key_is_rejected() -> None:
    envelope = json.loads(seal_envelope(b"payload", Ed25519PrivateKey.generate()))
    del envelope["signatures"][0]["keyid"]  # DSSE: keyid is optional
    with pytest.raises(SignatureError, match="no signature in the envelope verifies under the key"):
        open_envelope(json.dumps(envelope).encode(), FIXED_KEY.public_key())


def test_changed_payload_with_the_old_signature_is_rejected() -> None:
    envelope = json.loads(seal_envelope(b"payload", FIXED_KEY))
    envelope["payload"] = base64.b64encode(b"pAyload").decode()
    with pytest.raises(SignatureError):
        open_envelope(json.dumps(envelope).encode(), FIXED_KEY.public_key())


def test_changed_payload_type_is_refused() -> None:
    envelope = json.loads(seal_envelope(b"payload", FIXED_KEY))
    envelope["payloadType"] = "text/plain"
    with pytest.raises(MalformedInputError, match="payloadType"):
        open_envelope(json.dumps(envelope).encode(), FIXED_KEY.public_key())
    # And the type is inside what is signed: the same signature does not verify under another type.
    with pytest.raises(SignatureError):
        open_envelope(json.dumps(envelope).encode(), FIXED_KEY.public_key(), payload_type="text/plain")


@pytest.mark.parametrize(
    ("envelope", "cause"),
    [
        (b"not json", "not valid JSON"),
        (b'{"payload":"", "payloadType":"x"}', "needs payload, payloadType and signatures"),
        (b'{"payload":"", "payloadType":"x", "signatures":[]}', "1 to 16"),
        (b'{"payload":"", "payloadType":"x", "signatures":[{}]}', "has no 'sig'"),
        (b'{"payload":"!!", "payloadType":"x", "signatures":[{"sig":""}]}', "payload is not valid base64"),
    ],
)
def test_malformed_envelopes_are_refused_with_their_cause(envelope: bytes, cause: str) -> None:
    with pytest.raises(MalformedInputError, match=cause):
        open_envelope(envelope, FIXED_KEY.public_key(), payload_type="x")


def test_keypair_round_trips_and_is_never_overwritten(tmp_path: Path) -> None:
    public = generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    assert (tmp_path / "k.key").stat().st_mode & 0o777 == 0o600
    assert key_id(load_private_key(tmp_path / "k.key").public_key()) == key_id(public)
    assert key_id(load_public_key(tmp_path / "k.pub")) == key_id(public)
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "k.key", tmp_path / "other.pub")


def test_unreadable_keys_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(MissingInputError, match="does not exist"):
        load_public_key(tmp_path / "absent.pub")
    (tmp_path / "junk.pub").write_text("not a key")
    with pytest.raises(MalformedInputError, match="not a PEM public key"):
        load_public_key(tmp_path / "junk.pub")
    generate_keypair(tmp_path / "k.key", tmp_path / "k.pub")
    with pytest.raises(MalformedInputError):
        load_private_key(tmp_path / "k.pub")


def _envelope_in(alphabet: str, padded: bool) -> bytes:
    envelope = json.loads(seal_envelope(b"payload\xff\xfe>>>??", FIXED_KEY))
    for field in (envelope, envelope["signatures"][0]):
        key = "payload" if "payload" in field else "sig"
        raw = base64.b64decode(field[key])
        text = (base64.urlsafe_b64encode(raw) if alphabet == "url-safe" else base64.b64encode(raw)).decode()
        field[key] = text if padded else text.rstrip("=")
    return json.dumps(envelope).encode()


@pytest.mark.parametrize("padded", [True, False], ids=["padded", "unpadded"])
@pytest.mark.parametrize("alphabet", ["standard", "url-safe"])
def test_envelopes_in_either_base64_alphabet_verify(alphabet: str, padded: bool) -> None:
    # DSSE envelope.md: "Either standard or URL-safe encoding is allowed."
    envelope = _envelope_in(alphabet, padded)
    if alphabet == "url-safe":
        assert b"-" in envelope or b"_" in envelope  # the payload was chosen so the alphabets differ
    assert open_envelope(envelope, FIXED_KEY.public_key()) == b"payload\xff\xfe>>>??"


def test_an_envelope_mixing_the_two_alphabets_in_one_field_is_refused() -> None:
    envelope = json.loads(_envelope_in("url-safe", True))
    envelope["payload"] = envelope["payload"].replace("-", "+", 1).replace("_", "/", 1) + "-"
    with pytest.raises(MalformedInputError, match="payload is not valid base64"):
        open_envelope(json.dumps(envelope).encode(), FIXED_KEY.public_key())
