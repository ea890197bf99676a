"""What the report says is what happened: data and checkpoint bytes, segments replayed, how they were
chosen, and where a failure lies; and the report reaches its reader whole (JSON on stdout, a closed pipe)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trainwitness.cli import main
from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.hashing import format_digest
from trainwitness.commit.merkle import merkle_root
from trainwitness.commit.statement import TreeCommitment
from trainwitness.commit.store import INDEX_FILE
from trainwitness.identity.signing import load_private_key, seal_envelope
from trainwitness.tensors.state import FlatState
from trainwitness.verifier import VerifyOptions, verify_run
from trainwitness.verifier.bounded import segment_distance
from trainwitness.workloads.digits import digits_csv_path

from ...support.forgery import index_records, payload_of
from ...support.runs import RecordedRun


def _report(path: Path) -> dict:  # type: ignore[type-arg]
    return json.loads(path.read_text())


def test_data_read_by_two_workers_counts_each_sample_once(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    one, two = tmp_path / "one.json", tmp_path / "two.json"
    assert main(digits_run.verify_args("--all", "--sandbox", "off", "--json", str(one))) == 0
    assert main(digits_run.verify_args("--all", "--sandbox", "off", "--workers", "2", "--json", str(two))) == 0
    out = capsys.readouterr().out
    assert _report(two)["data"] == _report(one)["data"]  # the shares overlap in samples; the union is what was read
    data = _report(two)["data"]
    assert data["bytes_read"] <= data["total_bytes"]
    assert f"data read: {data['bytes_read']} of {data['total_bytes']} bytes ({data['bytes_read'] / data['total_bytes']:.1%})" in out


def _swap_in_a_nan(run: RecordedRun, step: int) -> None:
    from ...support.forgery import load_checkpoint, write_checkpoint

    flat = load_checkpoint(run.store, step)
    tensors = dict(flat.tensors)
    tensors["model/fc1.bias"] = torch.full_like(tensors["model/fc1.bias"], float("nan"))
    write_checkpoint(run.store, step, FlatState(tensors, flat.skeleton))  # well-formed, but not what was committed


def test_a_reject_after_replayed_segments_counts_the_checkpoint_bytes_it_read(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    _swap_in_a_nan(digits_run, 60)  # checkpoint 3: segments 0, 1, 2 replay before its file is found tampered
    report = tmp_path / "r.json"
    assert main(digits_run.verify_args("--all", "--sandbox", "off", "--json", str(report))) == 1
    out = capsys.readouterr().out
    assert "replayed 3 of 6 segments (every segment, none drawn)" in out
    assert _report(report)["checkpoint_bytes_read"] > 0
    assert "checkpoint bytes read: 0" not in out


def test_progress_counts_the_segments_workers_replayed_not_their_shares(digits_run: RecordedRun) -> None:
    _swap_in_a_nan(digits_run, 80)  # checkpoint 4: worker 2 of 2 (segments 3, 4, 5) stops after segment 3
    seen: list[tuple[int, int]] = []
    report = verify_run(
        digits_run.attestation, digits_run.store, digits_run.weights, digits_run.public_key,
        VerifyOptions(segments=None, sandbox="off", workers=2), lambda done, total: seen.append((done, total)),
    )
    assert not report.accepted
    assert max(done for done, _ in seen) == len(report.segments) == 4


def test_every_segment_replayed_draws_no_seed_and_says_so(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    report = tmp_path / "r.json"
    assert main(digits_run.verify_args("--all", "--json", str(report))) == 0  # sandboxed: it used to draw a seed
    out = capsys.readouterr().out
    assert "replayed 6 of 6 segments (every segment, none drawn)" in out
    assert "OS randomness" not in out
    assert _report(report)["segments"]["sample_seed"] is None


def test_a_failed_data_check_does_not_claim_each_sample_proven(digits_run: RecordedRun, tmp_path: Path, capsys) -> None:
    lines = gzip.decompress(digits_csv_path().read_bytes()).split(b"\n")
    from trainwitness.run.sampler import ShuffledEpochSampler

    changed = ShuffledEpochSampler(num_samples=1797, batch_size=32, seed=1).batch_ids(0)[0]
    lines[changed] = lines[changed].replace(b"0,", b"1,", 1)
    copy = tmp_path / "changed.csv"
    copy.write_bytes(b"\n".join(lines))
    assert main(digits_run.verify_args("--all", "--data", f"uci-digits={copy}", "--sandbox", "off")) == 1
    out = capsys.readouterr().out
    assert f"differ from the manifest: sample ids {changed} (line {changed + 1} of changed.csv)" in out
    assert "each proven against the manifest" not in out
    assert "not all proven against the manifest" in out


def test_a_misplaced_checkpoint_is_named_with_the_step_it_should_be_at(digits_run: RecordedRun, capsys) -> None:
    # A forger with the key moves checkpoint 2 (step 40) one step later and signs the index it made.
    records = index_records(digits_run.store)
    at = next(n for n, r in enumerate(records) if r["kind"] == "checkpoint" and r["index"] == 2)
    records[at], records[at + 1] = records[at + 1], records[at]
    records[at + 1]["step"] = 41
    (digits_run.store / INDEX_FILE).write_bytes(b"".join(canonical_json(r) + b"\n" for r in records))
    leaves = [canonical_json({**{k: v for k, v in r.items() if k != "kind"}, "type": "checkpoint"})
              for r in records if r["kind"] == "checkpoint"]
    statement = payload_of(digits_run.attestation)
    statement["predicate"]["commitments"]["checkpoints"] = TreeCommitment(format_digest(merkle_root(leaves)), len(leaves)).to_json()
    digits_run.attestation.write_bytes(seal_envelope(canonical_json(statement), load_private_key(digits_run.private_key)))
    assert main(digits_run.verify_args("--all", "--sandbox", "off")) == 1
    out = capsys.readouterr().out
    assert "[FAIL] commitments: checkpoint 2 is at step 41; 120 steps at interval 20 put it at step 40" in out


def test_bounded_distance_ignores_a_nan_both_hold_and_refuses_one_only_the_checkpoint_holds() -> None:
    start = FlatState({"model/w": torch.tensor([0.0, 0.0, 0.0])}, None)
    replayed = FlatState({"model/w": torch.tensor([1.0, float("nan"), 2.0])}, None)
    honest = FlatState({"model/w": torch.tensor([1.0 + 1e-7, float("nan"), 2.0])}, None)
    assert 0 < segment_distance(start, replayed, honest).overall < 1e-6
    forged = FlatState({"model/w": torch.tensor([1.0, float("nan"), float("nan")])}, None)
    with pytest.raises(Exception, match="differs from the checkpoint in non-finite values"):
        segment_distance(start, replayed, forged)


def test_json_dash_writes_the_report_to_stdout_and_the_text_to_stderr(digits_run: RecordedRun, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(digits_run.verify_args("--segments", "1", "--sandbox", "off", "--json", "-")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["verdict"] == "ACCEPT"
    assert "trainwitness verify: ACCEPT" in err
    assert not (tmp_path / "-").exists()


def test_a_reader_that_goes_away_ends_the_output_quietly_with_the_verdict_kept(digits_run: RecordedRun) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    read, write = os.pipe()
    os.close(read)  # `verify ... | head` once head has exited: every write is EPIPE
    try:
        result = subprocess.run(
            [sys.executable, "-m", "trainwitness", *digits_run.verify_args("--segments", "1", "--sandbox", "off")],
            stdout=write, stderr=subprocess.PIPE, env=env, text=True, timeout=600,
        )
    finally:
        os.close(write)
    assert "Broken pipe" not in result.stderr and "Traceback" not in result.stderr and "error" not in result.stderr
    assert result.returncode == 0


def test_an_empty_attestation_is_named(digits_run: RecordedRun, capsys) -> None:
    digits_run.attestation.write_bytes(b"")
    assert main(digits_run.verify_args()) == 2
    assert capsys.readouterr().err.strip() == f"trainwitness: error: DSSE envelope {digits_run.attestation}: the file is empty"
