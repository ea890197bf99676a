"""verify reads a published run from a URL: only the index and the drawn checkpoints, each checked before use.

The servers start inside each test on 127.0.0.1 and stop with it: a static HTTP server
(``tests/support/servers.py``) and, for ``s3://``, moto's S3-compatible server.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from trainwitness.cli import main
from trainwitness.commit.store import find_checkpoint
from trainwitness.errors import FetchError, MalformedInputError
from trainwitness.prover import attest_store
from trainwitness.prover.publish import publish_run
from trainwitness.verifier import VerifyOptions, verify_run
from trainwitness.verifier.draw import choose_segments
from trainwitness.verifier.fetch import FetchSettings

from ..support.forgery import load_checkpoint, write_checkpoint
from ..support.runs import RecordedRun
from ..support.servers import Faults, static_server

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

QUICK = FetchSettings(timeout=1.0, attempts=2, backoff=0.05)
INDEX_FILES = ["attestation.json", "k.pub", "model.safetensors", "store/run.json", "store/index.jsonl", "store/manifest.jsonl"]


@pytest.fixture
def published(digits_run: RecordedRun, tmp_path: Path) -> Path:
    return publish_run(digits_run.root, tmp_path / "pub").out


def _verify(url: str, tmp_path: Path, segments: int | None = 2, seed: int = 1, cache: bool = True, **options: object):  # type: ignore[no-untyped-def]
    return verify_run(
        f"{url}/attestation.json", f"{url}/store", f"{url}/model.safetensors", f"{url}/k.pub",
        VerifyOptions(segments=segments, seed=seed, sandbox="off", cache=tmp_path / "cache" if cache else None, fetch=QUICK, **options),  # type: ignore[arg-type]
    )


def _checkpoint_files(pub: Path, indices: set[int]) -> list[str]:
    steps = [0, 20, 40, 60, 80, 100, 120]
    return [f"store/{find_checkpoint(pub / 'store', steps[j])}" for j in sorted(indices)]


def test_publish_lays_out_every_file_a_verifier_fetches_and_no_private_key(published: Path) -> None:
    names = {str(p.relative_to(published)) for p in published.rglob("*") if p.is_file()}
    assert set(INDEX_FILES) | {"index.html", "SHA256SUMS"} <= names
    assert len([n for n in names if n.startswith("store/checkpoints/")]) == 7
    assert not any(n.endswith(".key") for n in names)
    assert "trainwitness verify" in (published / "index.html").read_text()


def test_publish_refuses_an_attestation_that_does_not_verify_under_the_key(digits_run: RecordedRun, tmp_path: Path) -> None:
    data = bytearray(digits_run.attestation.read_bytes())
    data[40] ^= 1
    digits_run.attestation.write_bytes(bytes(data))
    with pytest.raises(Exception) as e:
        publish_run(digits_run.root, tmp_path / "pub")
    assert not (tmp_path / "pub").exists() or not any((tmp_path / "pub").iterdir())
    assert "signature" in str(e.value).lower() or "attestation" in str(e.value).lower()


def test_verify_over_http_fetches_the_index_and_only_the_drawn_checkpoints(published: Path, tmp_path: Path) -> None:
    with static_server(published) as (url, log):
        report = _verify(url, tmp_path)
    assert report.accepted, report.to_text()
    drawn = choose_segments(6, 2, 1)
    needed = {j for i in drawn for j in (i, i + 1)}
    assert len(needed) < 7  # the draw leaves checkpoints out, so "only" means something
    expected = INDEX_FILES + _checkpoint_files(published, needed)
    assert report.fetched_bytes == sum(os.path.getsize(published / p) for p in expected)
    got = {p.lstrip("/") for p in log.paths("GET") if log.bytes_sent[p]}
    assert got == set(expected)


def test_a_second_audit_reads_verified_checkpoints_from_the_cache(published: Path, tmp_path: Path) -> None:
    with static_server(published) as (url, log):
        assert _verify(url, tmp_path).accepted
        first = dict(log.bytes_sent)
        log.bytes_sent.clear()
        assert _verify(url, tmp_path).accepted
    assert not any(p.startswith("/store/checkpoints/") for p, n in log.bytes_sent.items() if n)
    assert "/model.safetensors" not in log.bytes_sent and "/store/manifest.jsonl" not in log.bytes_sent
    assert any(p.startswith("/store/checkpoints/") for p in first)


def test_a_tampered_remote_checkpoint_is_rejected_and_not_cached(published: Path, tmp_path: Path) -> None:
    flat = load_checkpoint(published / "store", 60)
    weight = flat.tensors["model/fc1.weight"].clone()
    weight.view(-1)[3] = torch.nextafter(weight.view(-1)[3], torch.tensor(1.0))
    write_checkpoint(published / "store", 60, type(flat)({**flat.tensors, "model/fc1.weight": weight}, flat.skeleton))
    with static_server(published) as (url, _):
        report = _verify(url, tmp_path, segments=None)
    assert not report.accepted
    failed = [c for c in report.checks if not c.passed]
    assert failed[0].name == "replay" and "does not hash to its committed state digest" in failed[0].detail
    cached = {p.name for p in (tmp_path / "cache" / "checkpoints").glob("*")} if (tmp_path / "cache" / "checkpoints").exists() else set()
    assert len(cached) == 3  # checkpoints 0, 1, 2 were checked before 3 failed; 3 was not kept


def test_wrong_bytes_in_the_remote_index_reject_the_run(published: Path, tmp_path: Path) -> None:
    index = (published / "store" / "index.jsonl").read_bytes()
    at = index.index(b'"batch_digest":"sha256:') + len(b'"batch_digest":"sha256:')
    wrong = index[:at] + (b"0" if index[at : at + 1] != b"0" else b"1") + index[at + 1 :]
    with static_server(published, Faults({"/store/index.jsonl": wrong})) as (url, _):
        report = _verify(url, tmp_path)
    assert not report.accepted
    assert [c.name for c in report.checks if not c.passed] == ["commitments"]


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("status:404", "the checkpoint for step 0 is missing (not found at"),
        ("status:500", "could not be fetched after 2 tries: HTTP 500"),
        ("truncate", "could not be fetched after 2 tries: the body ended early (truncated)"),
        ("stall", "could not be fetched after 2 tries: no progress for 1 s (timed out)"),
    ],
)
def test_a_checkpoint_that_cannot_be_fetched_whole_is_exit_2_naming_the_url(
    published: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], fault: str, says: str
) -> None:
    target = "/" + _checkpoint_files(published, {0})[0]
    with static_server(published, Faults({target: fault}, stall_seconds=3.0)) as (url, log):
        status = main([
            "verify", f"{url}/attestation.json", "--store", f"{url}/store", "--weights", f"{url}/model.safetensors",
            "--key", f"{url}/k.pub", "--all", "--sandbox", "off", "--cache", str(tmp_path / "cache"),
            "--fetch-timeout", "1", "--fetch-attempts", "2",
        ])
    err = capsys.readouterr().err
    assert status == 2, err
    assert f"{url}{target}" in err and says in err
    assert len(err.strip().splitlines()) == 1
    if fault != "status:404":
        assert log.paths("GET").count(target) == 2  # bounded: exactly the tries allowed
    assert not (tmp_path / "cache" / "checkpoints").exists() or not any((tmp_path / "cache" / "checkpoints").iterdir())


def test_a_missing_remote_attestation_is_exit_2(published: Path, tmp_path: Path) -> None:
    with static_server(published) as (url, _), pytest.raises(FetchError, match="attestation .*nothing.json does not exist"):
        verify_run(f"{url}/nothing.json", f"{url}/store", f"{url}/model.safetensors", f"{url}/k.pub",
                   VerifyOptions(segments=1, seed=1, sandbox="off", fetch=QUICK))


def test_verify_reads_a_published_run_from_an_s3_compatible_server(
    published: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moto_server = pytest.importorskip("moto.server")
    boto3 = pytest.importorskip("boto3")
    pytest.importorskip("s3fs")
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        for name, value in {
            "AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            monkeypatch.setenv(name, value)
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket="models")
        for path in published.rglob("*"):
            if path.is_file():
                s3.upload_file(str(path), "models", f"digits/{path.relative_to(published)}")
        report = _verify("s3://models/digits", tmp_path)
        assert report.accepted, report.to_text()
        drawn = choose_segments(6, 2, 1)
        needed = {j for i in drawn for j in (i, i + 1)}
        expected = INDEX_FILES + _checkpoint_files(published, needed)
        assert report.fetched_bytes == sum(os.path.getsize(published / p) for p in expected)
    finally:
        server.stop()


def test_the_prover_refuses_to_sign_a_data_uri_that_is_a_local_path(digits_run: RecordedRun, tmp_path: Path) -> None:
    import json

    from trainwitness.identity.signing import load_private_key

    run_file = digits_run.store / "run.json"
    declared = json.loads(run_file.read_bytes())
    declared["data"]["manifest"]["sources"][0]["uri"] = "/home/upstream/data/digits.csv.gz"
    run_file.write_text(json.dumps(declared))
    key = load_private_key(digits_run.private_key)
    with pytest.raises(MalformedInputError, match="uci-digits: /home/upstream/data/digits.csv.gz.*--allow-local-uri"):
        attest_store(digits_run.store, digits_run.weights, key)
    assert attest_store(digits_run.store, digits_run.weights, key, allow_local_uri=True)


def test_a_cached_full_copy_of_a_base_checkpoint_does_not_break_a_remote_delta_chain(tmp_path: Path) -> None:
    from trainwitness.commit.hashing import parse_digest
    from trainwitness.commit.store import read_index
    from trainwitness.tensors.checkpoint import encode_checkpoint
    from trainwitness.tensors.checkpoint_reader import read_checkpoint

    from ..support.runs import record_and_sign

    run = record_and_sign(tmp_path / "run", overrides={"total_steps": 120, "checkpoint_interval": 20}, delta_every=3)
    site = publish_run(run.root, tmp_path / "pub").out
    index = read_index(run.store)
    steps = [c.step for c in index.checkpoints]
    # The cache holds checkpoint 1 as a full file (from another copy of the same run, say); segment 1 needs
    # checkpoint 2, a delta against 1: the chain must be read through 1's delta file, not stop at the full copy.
    flat, _ = read_checkpoint(run.store, steps, 1)
    cached = tmp_path / "cache" / "checkpoints" / f"{parse_digest(index.checkpoints[1].state_digest, 'x').hex()}.safetensors.zst"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(encode_checkpoint(flat, 3))
    seed = next(s for s in range(1000) if choose_segments(6, 1, s) == [1, 5])  # segment 1, and the last
    with static_server(site) as (url, _):
        report = _verify(url, tmp_path, segments=1, seed=seed)
    assert report.accepted, report.to_text()
