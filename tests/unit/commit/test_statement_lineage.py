"""The statement's lineage fields (predicate.parent, predicate.inputs): golden bytes, and what the parser refuses."""

from __future__ import annotations

from typing import Any

import pytest

from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.statement import FrozenInput, ParentLink, Statement, statement_digest
from trainwitness.errors import MalformedInputError

from ...support.forgery import payload_of
from ...support.runs import RecordedRun

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64


def test_parent_and_input_golden_bytes() -> None:
    parent = ParentLink(mode="finetune", attestation=A, weights_digest=B, reinitialised=("head.bias", "head.weight"))
    assert canonical_json(parent.to_json()) == (
        b'{"attestation":"' + A.encode() + b'","dropped":[],"mode":"finetune","reinitialised":["head.bias","head.weight"],'
        b'"state_digest":null,"weights_digest":"' + B.encode() + b'"}'
    )
    assert canonical_json(FrozenInput(weights_digest=C).to_json()) == b'{"attestation":null,"weights_digest":"' + C.encode() + b'"}'


def test_statement_digest_is_domain_separated_over_the_payload() -> None:
    import hashlib

    expected = hashlib.sha256(b"trainwitness:statement:v1\x00" + (2).to_bytes(8, "big") + b"{}").hexdigest()
    assert statement_digest(b"{}") == "sha256:" + expected


def _with(digits_run: RecordedRun, **predicate: Any) -> dict[str, Any]:
    statement = payload_of(digits_run.attestation)
    statement["predicate"].update(predicate)
    return statement


def test_a_statement_with_parent_and_inputs_round_trips(digits_run: RecordedRun) -> None:
    parent = {"attestation": A, "dropped": [], "mode": "continue", "reinitialised": [], "state_digest": C, "weights_digest": B}
    payload = canonical_json(_with(digits_run, parent=parent, inputs={"teacher": {"attestation": None, "weights_digest": C}}))
    statement = Statement.from_payload(payload)
    assert statement.claim.parent == ParentLink("continue", A, B, C)
    assert statement.claim.inputs == {"teacher": FrozenInput(C)}
    assert statement.to_payload() == payload


def test_a_seeded_statement_has_no_lineage_fields(digits_run: RecordedRun) -> None:
    predicate = payload_of(digits_run.attestation)["predicate"]
    assert "parent" not in predicate and "inputs" not in predicate


FINETUNE = {"attestation": A, "dropped": [], "mode": "finetune", "reinitialised": [], "state_digest": None, "weights_digest": B}


@pytest.mark.parametrize(
    ("parent", "cause"),
    [
        ({**FINETUNE, "mode": "distil"}, "mode must be one of finetune, continue"),
        ({**FINETUNE, "extra": 1}, "must hold exactly"),
        ({**FINETUNE, "state_digest": C}, "state_digest must be null"),
        ({**FINETUNE, "mode": "continue"}, "continued training names the parent's state digest"),
        ({**FINETUNE, "mode": "continue", "state_digest": C, "reinitialised": ["head"]}, "re-initialises and drops nothing"),
        ({**FINETUNE, "reinitialised": ["b", "a"]}, "must be sorted"),
        ({**FINETUNE, "reinitialised": ["a", "a"]}, "must be sorted and without repeats"),
        ({**FINETUNE, "reinitialised": ["a"], "dropped": ["a"]}, "both re-initialised and dropped"),
        ({**FINETUNE, "attestation": "sha256:xyz"}, "predicate.parent.attestation"),
        ({**FINETUNE, "reinitialised": [""]}, "non-empty tensor names"),
    ],
)
def test_malformed_parents_are_refused(digits_run: RecordedRun, parent: dict[str, Any], cause: str) -> None:
    with pytest.raises(MalformedInputError, match="^attestation") as raised:
        Statement.from_payload(canonical_json(_with(digits_run, parent=parent)))
    assert cause in str(raised.value)


@pytest.mark.parametrize(
    ("inputs", "cause"),
    [
        ({}, "must name 1 to 64 inputs"),
        ({"../x": {"attestation": None, "weights_digest": C}}, "is not a valid input name"),
        ({"t": {"weights_digest": C}}, "must hold exactly attestation and weights_digest"),
        ({"t": {"attestation": None, "weights_digest": "md5:1"}}, "predicate.inputs.t.weights_digest"),
    ],
)
def test_malformed_inputs_are_refused(digits_run: RecordedRun, inputs: dict[str, Any], cause: str) -> None:
    with pytest.raises(MalformedInputError, match="^attestation") as raised:
        Statement.from_payload(canonical_json(_with(digits_run, inputs=inputs)))
    assert cause in str(raised.value)
