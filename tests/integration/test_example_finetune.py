"""examples/finetune/run.py: the upstream -> fine-tuner hand-over, end to end, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from trainwitness.cli import main

from ..support.forgery import load_checkpoint, payload_of

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "finetune"


@pytest.fixture(scope="module")
def handed_over(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finetune") / "out"
    done = subprocess.run([sys.executable, str(EXAMPLE / "run.py"), "--out", str(out)], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "ACCEPT (a chain of 2 links)" in done.stdout
    return out


def test_the_example_leaves_both_links(handed_over: Path) -> None:
    for link in ("parent", "child"):
        for name in ("attestation.json", "store", "model.safetensors", "trainwitness.pub"):
            assert (handed_over / link / name).exists(), f"{link}/{name}"
        assert not list((handed_over / link).glob("*.key"))  # private keys are not handed over


def test_the_handed_over_chain_verifies_by_hand_with_two_named_keys(
    handed_over: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLE))  # the fine-tuner's spec, by entry point
    child, report = handed_over / "child", tmp_path / "report.json"
    args = [
        "verify", str(child / "attestation.json"), "--store", str(child / "store"), "--weights", str(child / "model.safetensors"),
        "--parent", str(handed_over / "parent"), "--keyring", str(handed_over / "keyring.toml"),
        "--data", f"mirrored-digits={handed_over / 'data' / 'mirrored-digits.csv'}", "--segments", "1", "--sandbox", "off",
        "--json", str(report),
    ]
    assert main(args) == 0
    lineage = json.loads(report.read_text())["lineage"]
    assert [link["signer"]["name"] for link in lineage["links"]] == ["upstream", "finetuner"]
    parent_link, child_link = lineage["links"]
    assert parent_link["parent"] is None and child_link["parent"]["mode"] == "finetune"
    # A re-initialised output layer, a new data source, a new optimizer (Adam's state, not SGD's momentum).
    assert child_link["parent"]["reinitialised"] == ["head.bias", "head.weight"]
    sources = {link: [s["name"] for s in payload_of(handed_over / link / "attestation.json")["predicate"]["data"]["manifest"]["sources"]]
               for link in ("parent", "child")}
    assert sources == {"parent": ["uci-digits"], "child": ["mirrored-digits"]}
    parent_state = load_checkpoint(handed_over / "parent" / "store", 120).tensors
    child_state = load_checkpoint(child / "store", 60).tensors
    assert any(n.endswith("momentum_buffer") for n in parent_state) and not any(n.endswith("exp_avg") for n in parent_state)
    assert any(n.endswith("exp_avg") for n in child_state)
    assert "ACCEPT (a chain of 2 links)" in capsys.readouterr().out
