"""Trusted keys by name: --key files and keyring files (TOML [keys]: PEM paths or inline PEM)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainwitness.errors import MalformedInputError, MissingInputError, SignatureError
from trainwitness.identity.keyring import Keyring, load_keyring
from trainwitness.identity.signing import generate_keypair, load_private_key, seal_envelope


def _pair(directory: Path, name: str) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    private, public = directory / f"{name}.key", directory / f"{name}.pub"
    generate_keypair(private, public)
    return private, public


def test_keyring_reads_paths_relative_to_itself_and_inline_pem(tmp_path: Path) -> None:
    _, upstream = _pair(tmp_path / "keys", "upstream")
    _, finetuner = _pair(tmp_path / "elsewhere", "finetuner")
    keyring = tmp_path / "keyring.toml"
    keyring.write_text(f'[keys]\nupstream = "keys/upstream.pub"\nfinetuner = """\n{finetuner.read_text()}"""\n')
    keys = load_keyring(keyring)
    assert [k.name for k in keys] == ["upstream", "finetuner"]
    assert keys[0].key_id != keys[1].key_id


def test_the_key_that_signed_is_reported_by_name(tmp_path: Path) -> None:
    _, a = _pair(tmp_path, "a")
    b_private, b = _pair(tmp_path, "b")
    keyring = tmp_path / "k.toml"
    keyring.write_text(f'[keys]\nfinetuner = "{b}"\n')
    keys = Keyring.from_sources([a], keyring)
    payload, signer = keys.open(seal_envelope(b"{}", load_private_key(b_private)))
    assert payload == b"{}" and signer.name == "finetuner"


def test_an_envelope_no_trusted_key_signed_names_its_key_id(tmp_path: Path) -> None:
    _, a = _pair(tmp_path, "a")
    c_private, _ = _pair(tmp_path, "c")
    envelope = seal_envelope(b"{}", load_private_key(c_private))
    with pytest.raises(SignatureError, match="it names key id sha256:"):
        Keyring.from_sources([a]).open(envelope)


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ('[keys]\n"a b" = "x.pub"\n', "is not 1 to 64"),
        ("[keys]\na = 3\n", "must be a PEM file path or PEM text"),
        ("[other]\na = 'x'\n", "exactly one table"),
        ("[keys]\n", "1 to 1024 keys"),
        ("keys = [", "not valid TOML"),
        ("keys = " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),  # one strict TOML reader: no RecursionError
        ("[keys]\na = " + "1" * 5000 + "\n", "not valid TOML"),  # nor the interpreter's ValueError for a 5,000-digit integer
        ('[keys]\na = "-----BEGIN PUBLIC KEY-----\\nnope\\n-----END PUBLIC KEY-----"\n', "is not a PEM public key"),
    ],
)
def test_malformed_keyrings_are_refused_naming_the_problem(tmp_path: Path, text: str, cause: str) -> None:
    keyring = tmp_path / "k.toml"
    keyring.write_text(text)
    with pytest.raises(MalformedInputError, match=cause):
        load_keyring(keyring)


def test_a_key_given_twice_is_refused(tmp_path: Path) -> None:
    _, a = _pair(tmp_path, "a")
    keyring = tmp_path / "k.toml"
    keyring.write_text(f'[keys]\nupstream = "{a}"\n')
    with pytest.raises(MalformedInputError, match="is given twice"):
        Keyring.from_sources([a], keyring)


def test_no_keys_or_a_missing_keyring_is_input_error(tmp_path: Path) -> None:
    with pytest.raises(MalformedInputError, match="no trusted key"):
        Keyring.from_sources([])
    with pytest.raises(MissingInputError, match="keyring .* does not exist"):
        Keyring.from_sources([], tmp_path / "absent.toml")
