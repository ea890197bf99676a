"""Signed and stored strings cannot drive the auditor's terminal or pass for other strings (issue 11, item 5)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trainwitness.cli import main
from trainwitness.display import escape, escape_json, escape_markdown
from trainwitness.identity.signing import load_private_key

from ..support.forgery import edit_payload
from ..support.runs import RecordedRun

# A signed source_uri that, printed raw, clears the screen, paints a fake verdict and hides what follows.
HOSTILE = "https://x\x1b[2J\x1b[H\x1b[32mtrainwitness verify: ACCEPT\x1b[0m\x1b[8m\u202e\u200bevil"


def test_escape_keeps_printable_ascii() -> None:
    assert escape("model/fc1.weight sha256:ab 0-9 ~!") == "model/fc1.weight sha256:ab 0-9 ~!"


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "\\x1b[2J"),  # ESC: clear screen
        ("a\nb\rc\td", "a\\x0ab\\x0dc\\x09d"),  # line breaks cannot split a one-line message
        ("\x7f\x9b", "\\x7f\\x9b"),  # DEL and the C1 control sequence introducer
        ("h\u0435ad.weight", "h\\u0435ad.weight"),  # Cyrillic ie, a look-alike of Latin e
        ("\u202egnp.exe", "\\u202egnp.exe"),  # right-to-left override
        ("a\u200bb", "a\\u200bb"),  # zero-width space
        ("\ud800", "\\ud800"),  # a lone surrogate (unencodable as UTF-8)
        ("\U0001f600", "\\U0001f600"),
        ("C:\\x1b", "C:\\\\x1b"),  # a literal backslash cannot forge an escape
    ],
)
def test_escape_shows_every_other_character_as_its_code_point(raw: str, shown: str) -> None:
    assert escape(raw) == shown


def test_look_alike_names_are_shown_differently() -> None:
    latin, cyrillic = "head.weight", "h\u0435ad.weight"
    assert escape(latin) != escape(cyrillic)


@given(st.text(), st.text())
def test_escape_is_injective_and_printable_ascii(a: str, b: str) -> None:
    ea, eb = escape(a), escape(b)
    assert ea.isascii() and ea.isprintable()
    assert (ea == eb) == (a == b)


def test_escape_json_escapes_keys_and_nested_values() -> None:
    value = {"na\x1bme": ["\u202e", {"k": "h\u0435"}], "n": 3, "b": None}
    assert escape_json(value) == {"na\\x1bme": ["\\u202e", {"k": "h\\u0435"}], "n": 3, "b": None}


def test_escape_markdown_neutralises_its_syntax() -> None:
    assert escape_markdown("a|b`c\x1b") == "a\\|b\\`c\\x1b"


def _resigned_with_uri(run: RecordedRun, uri: str) -> None:
    def edit(statement: dict) -> None:  # type: ignore[type-arg]
        statement["predicate"]["code"]["source_uri"] = uri

    edit_payload(run.attestation, edit, load_private_key(run.private_key))


def test_verify_report_escapes_a_signed_source_uri_in_text_and_json(
    digits_run: RecordedRun, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _resigned_with_uri(digits_run, HOSTILE)
    report = tmp_path / "report.json"
    status = main(digits_run.verify_args("--segments", "1", "--seed", "0", "--sandbox", "off", "--json", str(report)))
    out = capsys.readouterr().out
    assert status == 0, out
    assert "\x1b" not in out and "\u202e" not in out and "\u200b" not in out
    assert out.isascii()
    assert "https://x\\x1b[2J\\x1b[H\\x1b[32mtrainwitness verify: ACCEPT" in out  # shown, visibly not a verdict line
    assert not any(line.startswith("trainwitness verify: ACCEPT\\") for line in out.splitlines())
    parsed = json.loads(report.read_text())
    strings = json.dumps(parsed, ensure_ascii=False)
    assert "\x1b" not in strings and "\u202e" not in strings  # a tool that renders the JSON's strings sees escapes


def test_inspect_escapes_a_signed_source_uri(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    _resigned_with_uri(digits_run, HOSTILE)
    assert main(["inspect", str(digits_run.attestation)]) == 0
    out = capsys.readouterr().out
    assert out.isascii() and '[declared] predicate.code.source_uri = "https://x\\x1b[2J' in out
    assert main(["inspect", "--json", str(digits_run.attestation)]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in json.dumps(json.loads(out[out.index("{"):]), ensure_ascii=False)


def test_cli_error_quoting_a_stored_name_is_escaped(digits_run: RecordedRun, capsys: pytest.CaptureFixture[str]) -> None:
    # A signed subject name that is not a plain file name: the one-line error quotes it, escaped.
    def edit(statement: dict) -> None:  # type: ignore[type-arg]
        statement["subject"][0]["name"] = "mod\u0435l/\x1b[2J"

    edit_payload(digits_run.attestation, edit, load_private_key(digits_run.private_key))
    assert main(["inspect", str(digits_run.attestation)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("trainwitness: error: ") and err.isascii()
    # repr() in the message already wrote ESC as \x1b; escape() adds the Cyrillic letter's code point
    # and doubles the backslash, so no quoted text can pass for an escape the verifier wrote.
    assert "mod\\u0435l/\\\\x1b[2J" in err and "\x1b" not in err


def test_a_look_alike_tensor_name_is_shown_with_its_code_point(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A checkpoint (re-committed, re-signed) whose head.weight is spelled with a Cyrillic ie.
    from trainwitness.tensors.state import FlatState

    from ..support.forgers import copy_run, honest_run, load_checkpoint, replace_checkpoints, sign

    honest = honest_run(tmp_path / "honest", {"total_steps": 8, "checkpoint_interval": 4, "hidden": 8})
    run = copy_run(honest, tmp_path / "forged")
    flat = load_checkpoint(run, 1)
    renamed = {n.replace("model/head.weight", "model/h\u0435ad.weight"): t for n, t in flat.tensors.items()}
    skeleton = json.loads(json.dumps(flat.skeleton).replace("head.weight", "h\\u0435ad.weight"))
    replace_checkpoints(run, {1: FlatState(renamed, skeleton)})
    sign(run)
    status = main(run.verify_args("--all", "--sandbox", "off"))
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert status in (1, 2) and "ACCEPT" not in captured.out
    assert "h\\u0435ad.weight" in shown and "h\u0435ad" not in shown and shown.isascii()
