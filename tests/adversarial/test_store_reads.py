"""Regression tests for the store reader: names it opens cannot be redirected out of the store or made to hang."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from trainwitness.commit.store import read_index, read_store_file
from trainwitness.errors import InputError, MalformedInputError


def test_read_refuses_a_checkpoint_directory_symlinked_out_of_the_store(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "0000000000.safetensors").write_bytes(b"not the store's")
    store = tmp_path / "store"
    store.mkdir()
    (store / "checkpoints").symlink_to(outside)
    with pytest.raises(MalformedInputError, match="symlink"):
        read_store_file(store, "checkpoints/0000000000.safetensors", 1 << 20)


def test_read_refuses_a_symlinked_file(tmp_path: Path) -> None:
    (tmp_path / "secret").write_bytes(b"secret")
    store = tmp_path / "store"
    store.mkdir()
    (store / "index.jsonl").symlink_to(tmp_path / "secret")
    with pytest.raises(MalformedInputError):
        read_index(store)


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_read_of_a_fifo_fails_instead_of_hanging(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "index.jsonl")
    with pytest.raises(MalformedInputError, match="not a regular file"):
        read_index(tmp_path)


def test_read_refuses_a_directory_in_place_of_the_index(tmp_path: Path) -> None:
    (tmp_path / "index.jsonl").mkdir()
    with pytest.raises(InputError):
        read_index(tmp_path)


def test_read_refuses_an_oversized_file(tmp_path: Path) -> None:
    (tmp_path / "run.json").write_bytes(b"x" * 101)
    with pytest.raises(MalformedInputError, match="over the limit"):
        read_store_file(tmp_path, "run.json", 100)


# -- the store's manifest ----------------------------------------------------------------------------

def _signed_summary(run_store: Path):  # type: ignore[no-untyped-def]
    from trainwitness.commit.canonical import parse_json
    from trainwitness.data.manifest import ManifestSummary

    declared = parse_json((run_store / "run.json").read_bytes(), "run.json")
    return ManifestSummary.from_json(declared["data"]["manifest"], "run.json")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this OS")
def test_read_manifest_of_a_fifo_fails_instead_of_hanging(digits_run) -> None:  # type: ignore[no-untyped-def]
    from trainwitness.data.manifest import read_manifest

    signed = _signed_summary(digits_run.store)
    (digits_run.store / "manifest.jsonl").unlink()
    os.mkfifo(digits_run.store / "manifest.jsonl")
    with pytest.raises(MalformedInputError, match="not a regular file"):
        read_manifest(digits_run.store / "manifest.jsonl", signed)


def test_read_manifest_of_a_directory_is_refused(digits_run) -> None:  # type: ignore[no-untyped-def]
    from trainwitness.data.manifest import read_manifest

    signed = _signed_summary(digits_run.store)
    (digits_run.store / "manifest.jsonl").unlink()
    (digits_run.store / "manifest.jsonl").mkdir()
    with pytest.raises(MalformedInputError, match="not a regular file"):
        read_manifest(digits_run.store / "manifest.jsonl", signed)


def test_read_manifest_refuses_an_endless_line_without_reading_it_whole(digits_run) -> None:  # type: ignore[no-untyped-def]
    from trainwitness.data.manifest import read_manifest

    signed = _signed_summary(digits_run.store)
    (digits_run.store / "manifest.jsonl").write_bytes(b"{" + b" " * (4 << 20) + b"}\n")
    with pytest.raises(MalformedInputError, match="longer than"):
        read_manifest(digits_run.store / "manifest.jsonl", signed)
