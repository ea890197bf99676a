"""The command line: exit status 2 with one clean line for unreadable evidence; inspect; keygen; verify --json."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import trainwitness
from trainwitness.cli import main
from trainwitness.identity.signing import load_private_key
from trainwitness.run.loop import weights_of
from trainwitness.tensors.checkpoint import decode_checkpoint, encode_checkpoint, encode_weights

from ..support.forgery import edit_payload
from ..support.runs import RecordedRun

CHECKPOINT_40 = "checkpoints/0000000040.safetensors.zst"


def assert_could_not_verify(args: list[str], capsys: pytest.CaptureFixture[str], *causes: str) -> str:
    """Exit 2, and stderr is exactly one line starting ``trainwitness: error:`` that names a cause."""
    status = main(args)
    err = capsys.readouterr().err
    assert status == 2, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("trainwitness: error: "), err
    assert any(cause in lines[0] for cause in causes), err
    return lines[0]


# -- exit 2: the evidence cannot be read ----------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 100, 60_000])
def test_verify_cannot_decide_on_a_truncated_checkpoint(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], keep: int
) -> None:
    path = digits_run.store / CHECKPOINT_40
    path.write_bytes(path.read_bytes()[:keep])
    line = assert_could_not_verify(digits_run.verify_args("--all"), capsys, "truncated")
    assert CHECKPOINT_40 in line


def test_verify_cannot_decide_on_a_truncated_uncompressed_checkpoint(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    compressed = digits_run.store / CHECKPOINT_40
    raw_path = compressed.with_suffix("")  # .safetensors: the prover's --no-compress layout
    raw = encode_checkpoint(decode_checkpoint(compressed.read_bytes(), "c"))
    compressed.unlink()
    raw_path.write_bytes(raw[: len(raw) // 2])
    assert_could_not_verify(digits_run.verify_args("--all"), capsys, "truncated or corrupt", "not a valid safetensors")


def test_verify_cannot_decide_on_a_missing_checkpoint(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    (digits_run.store / CHECKPOINT_40).unlink()
    assert_could_not_verify(digits_run.verify_args("--all"), capsys, "the checkpoint for step 40 is missing")


def test_verify_cannot_decide_without_the_store(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(digits_run.store)
    assert_could_not_verify(digits_run.verify_args(), capsys, f"store {digits_run.store} does not exist")


def test_verify_cannot_decide_on_an_attestation_that_is_not_json(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    digits_run.attestation.write_bytes(b"this is not an attestation\n")
    assert_could_not_verify(digits_run.verify_args(), capsys, f"DSSE envelope {digits_run.attestation}: not valid JSON")


def test_verify_cannot_decide_on_an_envelope_missing_fields(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    envelope = json.loads(digits_run.attestation.read_bytes())
    del envelope["signatures"]
    digits_run.attestation.write_text(json.dumps(envelope))
    assert_could_not_verify(digits_run.verify_args(), capsys, "needs payload, payloadType and signatures")


def test_verify_cannot_decide_on_a_signed_statement_missing_fields(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]
) -> None:
    def drop_final(statement: dict) -> None:  # type: ignore[type-arg]
        del statement["predicate"]["final"]

    edit_payload(digits_run.attestation, drop_final, load_private_key(digits_run.private_key))
    assert_could_not_verify(digits_run.verify_args(), capsys, "attestation: predicate.final is missing")


def test_verify_cannot_decide_without_the_attestation(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    digits_run.attestation.unlink()
    assert_could_not_verify(digits_run.verify_args(), capsys, "does not exist")


def test_verify_cannot_decide_without_the_weights_file(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    digits_run.weights.unlink()
    assert_could_not_verify(digits_run.verify_args(), capsys, f"weights file {digits_run.weights} does not exist")


def test_verify_cannot_decide_without_the_key_file(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    digits_run.public_key.unlink()
    assert_could_not_verify(digits_run.verify_args(), capsys, f"key file {digits_run.public_key} does not exist")


def test_verify_cannot_decide_with_a_key_file_that_is_not_a_key(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    digits_run.public_key.write_text("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n")
    assert_could_not_verify(digits_run.verify_args(), capsys, "is not a PEM public key")


@pytest.mark.parametrize("target", [CHECKPOINT_40, "index.jsonl", "checkpoints"])
def test_verify_refuses_a_symlink_in_the_store_pointing_outside(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path, target: str
) -> None:
    inside = digits_run.store / target
    outside = tmp_path / "outside" / Path(target).name
    outside.parent.mkdir()
    inside.rename(outside)  # the very same bytes, only reached through a link
    inside.symlink_to(outside)
    assert_could_not_verify(digits_run.verify_args("--all"), capsys, "cannot be opened safely")


def test_unreadable_input_gives_one_line_and_no_traceback_from_the_real_process(
    digits_run: RecordedRun, tmp_path: Path
) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(trainwitness.__file__).parents[1]))
    result = subprocess.run(
        [sys.executable, "-m", "trainwitness", *digits_run.verify_args()[:3], str(tmp_path / "no-store"), *digits_run.verify_args()[4:]],
        env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("trainwitness: error: store ")
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr


# -- verify, inspect, keygen ------------------------------------------------------------------------


def test_verify_writes_a_json_report_for_a_sampled_audit(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    report_path = tmp_path / "report.json"
    assert main(digits_run.verify_args("--segments", "2", "--seed", "7", "--json", str(report_path))) == 0
    out = capsys.readouterr().out
    assert "replayed 3 of 6 segments (the last, always, and 2 drawn from the auditor's seed 7)" in out
    report = json.loads(report_path.read_text())
    assert report["verdict"] == "ACCEPT"
    assert report["segments"]["sample_seed"] == 7 and len(report["segments"]["sampled"]) == 3
    assert report["segments"]["sampled"][-1] == 5  # the last segment, on every draw
    assert set(report["detection_probability"]) == {"1%", "5%", "10%"}


def test_inspect_prints_the_claims_and_says_unverified(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", "--json", str(digits_run.attestation)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("UNVERIFIED")
    claims = json.loads(out[out.index("{") :])
    assert claims["predicate"]["hyperparameters"]["lr"] == 0.05
    assert claims["predicate"]["code"]["entry_point"] == "trainwitness.workloads.digits:digits"
    assert claims["subject"][0]["name"] == "model.safetensors"


def test_inspect_marks_each_field_with_what_binds_it(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["inspect", str(digits_run.attestation)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("UNVERIFIED")
    assert "  [declared] predicate.code.source_uri = null" in lines
    assert "  [declared] predicate.code.git_commit = null" in lines or any(
        line.startswith("  [declared] predicate.code.git_commit = \"") for line in lines
    )
    assert "  [replay] predicate.hyperparameters.lr = 0.05" in lines
    assert any(line.startswith("  [auditor] predicate.code.tree_digest = \"sha256:") for line in lines)
    assert any(line.startswith("  [declared] predicate.environment.platform = ") for line in lines)


def test_inspect_cannot_read_a_malformed_attestation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.json").write_text("{")
    assert_could_not_verify(["inspect", str(tmp_path / "a.json")], capsys, "not valid JSON")
    assert_could_not_verify(["inspect", str(tmp_path / "absent.json")], capsys, "does not exist")


def test_keygen_writes_a_pair_and_never_overwrites(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--out", str(tmp_path), "--name", "me"]) == 0
    assert "key id      sha256:" in capsys.readouterr().out
    assert (tmp_path / "me.key").is_file() and (tmp_path / "me.pub").is_file()
    before = (tmp_path / "me.key").read_bytes()
    assert_could_not_verify(["keygen", "--out", str(tmp_path), "--name", "me"], capsys, "already exists")
    assert (tmp_path / "me.key").read_bytes() == before


def test_attest_refuses_weights_that_are_not_the_last_checkpoint(
    digits_run: RecordedRun, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    start = decode_checkpoint((digits_run.store / "checkpoints" / "0000000000.safetensors.zst").read_bytes(), "c")
    digits_run.weights.write_bytes(encode_weights(weights_of(start)))  # a real weights file, the wrong one
    args = ["attest", "--store", str(digits_run.store), "--weights", str(digits_run.weights), "--key", str(digits_run.private_key),
            "--out", str(tmp_path / "a.json")]
    assert_could_not_verify(args, capsys, "is not the final checkpoint's weights")


@pytest.mark.parametrize(
    "args",
    [
        ["verify", "a.json", "--store", "s", "--weights", "w", "--key", "k", "--segments", "0"],
        ["verify", "a.json", "--store", "s", "--weights", "w", "--key", "k", "--segments", "-3"],
        ["train", "m:f", "--store", "s", "--weights", "w", "--threads", "0"],
    ],
)
def test_counts_below_one_are_usage_errors_not_tracebacks(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as raised:
        main(args)
    assert raised.value.code == 2
    err = capsys.readouterr().err
    assert "is not a positive integer" in err and "Traceback" not in err


def test_a_draw_without_an_auditor_seed_is_reported_as_os_randomness(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(digits_run.verify_args("--segments", "2")) == 0
    out = capsys.readouterr().out
    assert "(the last, always, and 2 drawn from OS randomness" in out
    assert "auditor's seed" not in out
