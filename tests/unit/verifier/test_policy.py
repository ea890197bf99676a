"""Licence policies: SPDX expressions judged conservatively; a missing or unknown licence never passes."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from trainwitness.cli import main
from trainwitness.commit.canonical import canonical_json
from trainwitness.errors import PolicyError
from trainwitness.identity.signing import load_private_key
from trainwitness.prover import attest_store
from trainwitness.verifier.policy import evaluate, load_policy, shipped_policies

from ...support.runs import RecordedRun

POLICY = """
[policy]
name = "test"
source = "written for this test"
[[allow]]
id = "MIT"
reason = "fine"
[[allow]]
id = "Apache-2.0"
reason = "fine"
[[allow]]
id = "LLVM-exception"
reason = "fine"
[[deny]]
id = "CC-BY-NC-4.0"
reason = "non-commercial"
"""


@pytest.fixture
def policy(tmp_path: Path):
    path = tmp_path / "p.toml"
    path.write_text(POLICY)
    return load_policy(str(path))


@pytest.mark.parametrize(
    "expression",
    ["MIT", "mit", "MIT AND Apache-2.0", "MIT OR CC-BY-NC-4.0", "Unknown-1.0 OR MIT", "(MIT OR X) AND Apache-2.0", "Apache-2.0 WITH LLVM-exception"],
)
def test_policy_accepts(policy, expression: str) -> None:
    evaluate(policy, expression, "weights")


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("CC-BY-NC-4.0", "CC-BY-NC-4.0 is denied by policy test: non-commercial"),
        ("GPL-3.0-only", "GPL-3.0-only is unknown to policy test"),
        ("MIT AND CC-BY-NC-4.0", "denied"),
        ("MIT AND (GPL-3.0-only OR CC-BY-NC-4.0)", "unknown"),
        ("MIT WITH Classpath-exception-2.0", "Classpath-exception-2.0 is unknown"),
        ("MIT AND", "does not parse"),
        ("(MIT Apache-2.0)", "does not parse"),
        ("(MIT", "does not parse"),
        ("MIT and Apache-2.0", "operators are upper case"),
        ("MIT / Apache", "does not parse"),
        ("LicenseRef-MIT-Bootstrap", "declarer's own"),
    ],
)
def test_policy_rejects(policy, expression: str, message: str) -> None:
    with pytest.raises(PolicyError, match=message):
        evaluate(policy, expression, "weights")


@pytest.mark.parametrize("missing", [None, "", "NOASSERTION", "NONE"])
def test_a_missing_licence_fails_the_policy(policy, missing) -> None:
    with pytest.raises(PolicyError, match="no licence declared"):
        evaluate(policy, missing, "data source s")


def test_shipped_policies_say_where_they_come_from_and_that_they_are_examples() -> None:
    assert shipped_policies() == ["debian-dfsg", "fedora", "fedora-content", "osi"]
    for name in shipped_policies():
        assert load_policy(name).source.startswith("https://")
    for name in ("debian-dfsg", "fedora", "fedora-content"):
        evaluate(load_policy(name), "CC-BY-4.0", "x")
    evaluate(load_policy("fedora-content"), "CC-BY-ND-4.0", "x")  # Fedora allows no-derivatives content
    evaluate(load_policy("fedora"), "CC-BY-ND-4.0", "x")
    with pytest.raises(PolicyError, match="DFSG 3"):
        evaluate(load_policy("debian-dfsg"), "CC-BY-ND-4.0", "x")
    for path in Path(__file__).parents[3].joinpath("verifier/policies").glob("*.toml"):
        assert "EXAMPLE POLICY" in path.read_text().splitlines()[0]
    assert "not packaged" in load_policy("fedora").source  # said honestly: Fedora's own data is not read


@pytest.mark.parametrize(
    ("policy_name", "expression", "passes"),
    [
        ("osi", "MIT", True), ("osi", "Apache-2.0 WITH LLVM-exception", True), ("osi", "CC-BY-4.0", False),
        ("osi", "GPL-2.0+", True),  # a deprecated SPDX id still carries its flags
        ("debian-dfsg", "ODbL-1.0", True), ("debian-dfsg", "CC-BY-SA-4.0 AND MIT", True),
        ("debian-dfsg", "CC-BY-NC-4.0", False), ("debian-dfsg", "GFDL-1.3-invariants-only", False),
        ("debian-dfsg", "Nonesuch-1.0", False), ("debian-dfsg", "LicenseRef-Mine OR MIT", True),
        ("fedora", "CC-BY-NC-4.0", False), ("fedora", "OFL-1.1", True),
    ],
)
def test_shipped_policies_read_the_spdx_list_flags(policy_name: str, expression: str, passes: bool) -> None:
    if passes:
        evaluate(load_policy(policy_name), expression, "x")
    else:
        with pytest.raises(PolicyError):
            evaluate(load_policy(policy_name), expression, "x")


def _resign(run: RecordedRun, weights_license: str | None, source_license: str | None = None) -> None:
    declared = json.loads((run.store / "run.json").read_text())
    declared["weights_license"] = weights_license
    if source_license is not None:  # a thorough forger also rewrites the manifest file's header
        declared["data"]["manifest"]["sources"][0]["license"] = source_license
        manifest = run.store / "manifest.jsonl"
        lines = manifest.read_bytes().split(b"\n")
        lines[0] = canonical_json(declared["data"]["manifest"])
        manifest.write_bytes(b"\n".join(lines))
    (run.store / "run.json").write_text(json.dumps(declared))
    run.attestation.write_bytes(attest_store(run.store, run.weights, load_private_key(run.private_key), replay_check=False))


def test_verify_fails_policy_when_the_weights_declare_no_licence(digits_run: RecordedRun, capsys) -> None:
    assert main(digits_run.verify_args("--segments", "1", "--policy", "fedora-content")) == 1
    assert "[FAIL] policy: weights: no licence declared" in capsys.readouterr().out


def test_verify_passes_both_shipped_policies_for_cc_by_weights_and_data(digits_run: RecordedRun, capsys) -> None:
    _resign(digits_run, "CC-BY-4.0")
    for name in ("fedora-content", "debian-dfsg"):
        assert main(digits_run.verify_args("--segments", "1", "--policy", name)) == 0
        assert f"[ok] policy: policy {name}: weights CC-BY-4.0, uci-digits CC-BY-4.0" in capsys.readouterr().out


def test_verify_rejects_a_data_licence_outside_the_policy(digits_run: RecordedRun, capsys) -> None:
    _resign(digits_run, "CC-BY-4.0", source_license="CC-BY-NC-4.0")
    assert main(digits_run.verify_args("--segments", "1", "--policy", "debian-dfsg")) == 1
    out = capsys.readouterr().out
    assert "[FAIL] policy: data source uci-digits: licence 'CC-BY-NC-4.0' fails policy debian-dfsg" in out


def test_verify_rejects_an_unknown_weights_licence(digits_run: RecordedRun, capsys) -> None:
    _resign(digits_run, "LicenseRef-Proprietary")
    assert main(digits_run.verify_args("--segments", "1", "--policy", "fedora-content")) == 1
    assert "LicenseRef-Proprietary is a licence of the declarer's own (LicenseRef-), not named by policy fedora-content" in capsys.readouterr().out


def test_a_signed_data_licence_that_contradicts_the_code_is_rejected(digits_run: RecordedRun, capsys) -> None:
    _resign(digits_run, "CC-BY-4.0", source_license="CC0-1.0")
    assert main(digits_run.verify_args("--segments", "1")) == 1
    assert "source uci-digits: the attestation declares licence 'CC0-1.0', the training code 'CC-BY-4.0'" in capsys.readouterr().out


def test_an_unknown_policy_name_is_an_input_error(digits_run: RecordedRun, capsys) -> None:
    assert main(digits_run.verify_args("--segments", "1", "--policy", "nonesuch")) == 2
    assert "nonesuch" in capsys.readouterr().err


def test_weights_licence_and_source_uri_given_at_training_are_signed(tmp_path: Path, capsys) -> None:
    root = tmp_path / "cli"
    assert main(["keygen", "--out", str(root)]) == 0
    assert main([
        "train", "trainwitness.workloads.digits:digits", "--store", str(root / "store"), "--weights", str(root / "m.safetensors"),
        "--set", "total_steps=4", "--set", "checkpoint_interval=2", "--weights-license", "CC-BY-4.0",
        "--source-uri", "https://example.org/src.git", "--key", str(root / "trainwitness.key"), "--attestation", str(root / "a.json"),
    ]) == 0
    statement = json.loads(base64.b64decode(json.loads((root / "a.json").read_text())["payload"]))
    assert statement["predicate"]["weights_license"] == "CC-BY-4.0"
    assert statement["predicate"]["code"]["source_uri"] == "https://example.org/src.git"
    verify = ["verify", str(root / "a.json"), "--store", str(root / "store"), "--weights", str(root / "m.safetensors"),
              "--key", str(root / "trainwitness.pub"), "--all", "--policy", "debian-dfsg"]
    assert main(verify) == 0
    assert "[ok] policy: policy debian-dfsg: weights CC-BY-4.0" in capsys.readouterr().out
