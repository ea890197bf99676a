"""Every signed and stored field has a binding, the parser knows no other, and docs/FORMAT.md says the same (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from trainwitness.commit.bindings import (
    KINDS,
    STATEMENT_FIELDS,
    STORE_FIELDS,
    declared_fields,
    statement_field_pattern,
    statement_leaves,
)
from trainwitness.commit.canonical import parse_json
from trainwitness.commit.store import CheckpointRecord, RankShard, ShardedStepRecord, StepRecord

from ...support.statements import DIGEST, statement

FORMAT_MD = Path(__file__).resolve().parents[3] / "docs" / "FORMAT.md"


def _patterns(payload: bytes) -> set[str]:
    return {statement_field_pattern(path) for path, _ in statement_leaves(parse_json(payload, "s"))}


def test_every_field_of_every_kind_of_statement_has_a_binding() -> None:
    seen: set[str] = set()
    for exact in (False, True):
        for packages in (False, True):
            patterns = _patterns(statement(exact=exact, packages=packages, distributed=packages, lineage=exact).to_payload())
            assert patterns <= set(STATEMENT_FIELDS), patterns - set(STATEMENT_FIELDS)
            seen |= patterns
    # ...and the table lists nothing a statement cannot hold (empty lists stand for their items).
    assert set(STATEMENT_FIELDS) - seen <= {"predicate.code.packages", "predicate.code.distributions"}


def test_no_field_is_signed_only_unless_marked_declared() -> None:
    assert {b.kind for b in (*STATEMENT_FIELDS.values(), *STORE_FIELDS.values())} <= set(KINDS)
    assert all(b.how for b in (*STATEMENT_FIELDS.values(), *STORE_FIELDS.values()))


def test_declared_fields_are_the_ones_shown_as_such() -> None:
    declared = dict(declared_fields(parse_json(statement(packages=True).to_payload(), "s")))
    assert declared["predicate.code.source_uri"] == "https://example.org/pkg.git"
    assert declared["predicate.code.git_commit"] == "ab" * 20
    assert declared["predicate.code.distributions[numpy].version"] == "2.4.6"
    assert declared["predicate.environment.platform"] == "Linux"
    assert declared["predicate.data.manifest.sources[fuzz].archive_sha256"] == DIGEST
    assert declared["subject[model.safetensors].name"] == "model.safetensors"
    assert "predicate.code.tree_digest" not in declared and "predicate.hyperparameters.lr" not in declared


def test_every_index_record_field_has_a_binding() -> None:
    step = StepRecord(0, (1,), DIGEST, DIGEST).to_json()
    checkpoint = CheckpointRecord(0, 0, DIGEST, DIGEST).to_json()
    sharded = ShardedStepRecord(0, (RankShard((1,), DIGEST, DIGEST), RankShard((2,), DIGEST, DIGEST))).to_json()
    for kind, record in (("step", step), ("checkpoint", checkpoint), ("step", sharded)):
        for key in set(record) - {"kind", "ranks"}:
            assert f"index.jsonl {kind}.{key}" in STORE_FIELDS
    for key in sharded["ranks"][0]:  # type: ignore[index]
        assert f"index.jsonl step.ranks[].{key}" in STORE_FIELDS


def _doc_rows(section: str) -> dict[str, tuple[str, str]]:
    text = FORMAT_MD.read_text()
    body = text[text.index(section) + len(section) :]
    ends = [i for i in (body.find("\n## "), body.find("\n### ")) if i >= 0]
    body = body[: min(ends)] if ends else body
    rows = {}
    for line in body.splitlines():
        match = re.match(r"^\| `([^`]+)` \| ([a-z]+) \| (.+) \|$", line)
        if match:
            rows[match.group(1)] = (match.group(2), match.group(3))
    return rows


@pytest.mark.parametrize(("section", "table"), [("### Signed fields", STATEMENT_FIELDS), ("### Stored fields", STORE_FIELDS)])
def test_format_md_binding_table_is_the_code_s(section: str, table: dict) -> None:  # type: ignore[type-arg]
    rows = _doc_rows(section)
    assert set(rows) == set(table), (set(rows) ^ set(table))
    for path, binding in table.items():
        assert rows[path] == (binding.kind, binding.how), path
