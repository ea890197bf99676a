"""The attestation's wire format: what a real run's statement carries, and what ``from_payload`` refuses."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from trainwitness.commit.canonical import canonical_json
from trainwitness.commit.statement import PREDICATE_TYPE, STATEMENT_TYPE, Statement
from trainwitness.errors import MalformedInputError

from ...support.forgery import payload_of
from ...support.runs import RecordedRun


def test_statement_of_a_real_run_carries_every_claim(digits_run: RecordedRun) -> None:
    payload = payload_of(digits_run.attestation)
    assert payload["_type"] == STATEMENT_TYPE and payload["predicateType"] == PREDICATE_TYPE
    assert payload["subject"][0]["name"] == "model.safetensors"
    predicate = payload["predicate"]
    assert predicate["code"]["entry_point"] == "trainwitness.workloads.digits:digits"
    assert predicate["code"]["tree_digest"].startswith("sha256:")
    for key in ("python", "torch", "numpy", "platform", "device", "torch_threads", "deterministic_algorithms"):
        assert key in predicate["environment"], key
    assert predicate["hyperparameters"]["lr"] == 0.05
    assert predicate["hyperparameters"]["total_steps"] == 120
    assert predicate["data"]["sampler"] == {"batch_size": 32, "name": "shuffled-epochs/v1", "num_samples": 1797, "seed": 1}
    assert {k: v["size"] for k, v in predicate["commitments"].items()} == {"checkpoints": 7, "batches": 120, "rng": 120}
    assert set(predicate["final"]) == {"state_digest", "weights_digest"}


def test_statement_round_trips_byte_for_byte(digits_run: RecordedRun) -> None:
    payload = canonical_json(payload_of(digits_run.attestation))
    assert Statement.from_payload(payload).to_payload() == payload


def _drop(path: tuple[str, ...]):  # type: ignore[no-untyped-def]
    def edit(statement: dict[str, Any]) -> None:
        node = statement
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]

    return edit


def _both(*edits: Any):  # type: ignore[no-untyped-def]
    def edit(statement: dict[str, Any]) -> None:
        for one in edits:
            one(statement)

    return edit


def _set(path: tuple[str, ...], value: object):  # type: ignore[no-untyped-def]
    def edit(statement: dict[str, Any]) -> None:
        node = statement
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


@pytest.mark.parametrize(
    ("edit", "cause"),
    [
        (_set(("_type",), "https://in-toto.io/Statement/v0.1"), "_type is not"),
        (_set(("predicateType",), "other"), "predicateType is not"),
        (_set(("subject",), []), "exactly one subject"),
        (_set(("subject", 0, "digest", "sha256"), "abc"), "subject digest"),
        (_drop(("predicate", "code", "tree_digest")), "predicate.code.tree_digest is missing"),
        (_drop(("predicate", "hyperparameters", "seed")), "predicate.hyperparameters.seed is missing"),
        (_set(("predicate", "hyperparameters", "total_steps"), True), "total_steps has the wrong type"),
        (_set(("predicate", "hyperparameters", "batch_size"), 0), "'batch_size' is 0, outside [1, 2**20]"),
        (_set(("predicate", "hyperparameters", "seed"), 2**32), "'seed' is 4294967296, outside [0, 2**32)"),
        (_set(("predicate", "hyperparameters", "data_seed"), 2**63), "'data_seed' is 9223372036854775808, outside [0, 2**63)"),
        (_both(_set(("predicate", "hyperparameters", "batch_size"), 1798), _set(("predicate", "data", "sampler", "batch_size"), 1798)),
         "'batch_size' is 1798, larger than the dataset (1797 samples)"),
        (_set(("predicate", "hyperparameters", "total_steps"), 10**9 + 1), "'total_steps' is 1000000001, outside [1, 1000000000]"),
        (_set(("predicate", "environment", "torch_threads"), 0), "torch_threads out of range"),
        (_set(("predicate", "data", "sampler", "seed"), 99), "sampler.seed contradicts the hyperparameters"),
        (_drop(("predicate", "commitments", "rng")), "must name exactly"),
        (_set(("predicate", "commitments", "batches", "size"), 119), "the batches tree has 119 leaves"),
        (_set(("predicate", "commitments", "checkpoints", "size"), 6), "the checkpoints tree has 6 leaves"),
        (_set(("predicate", "final", "state_digest"), "sha256:xyz"), "predicate.final.state_digest"),
    ],
)
def test_malformed_statements_are_refused_naming_the_field(digits_run: RecordedRun, edit: Any, cause: str) -> None:
    statement = copy.deepcopy(payload_of(digits_run.attestation))
    edit(statement)
    with pytest.raises(MalformedInputError, match="^attestation") as raised:
        Statement.from_payload(canonical_json(statement))
    assert cause in str(raised.value)
