"""Canonical JSON: one byte encoding per value, and a strict parser for untrusted input."""

from __future__ import annotations

import pytest

from trainwitness.commit.canonical import canonical_json, parse_json
from trainwitness.errors import MalformedInputError


def test_canonical_encoding_is_pinned() -> None:
    value = {"b": [1, 2.5, "é"], "a": None, "c": {"z": True, "y": -0.1}}
    assert canonical_json(value) == b'{"a":null,"b":[1,2.5,"\xc3\xa9"],"c":{"y":-0.1,"z":true}}'


def test_canonical_encoding_is_independent_of_key_order() -> None:
    assert canonical_json({"x": 1, "y": {"b": 2, "a": 3}}) == canonical_json({"y": {"a": 3, "b": 2}, "x": 1})


def test_integers_and_floats_keep_their_form() -> None:
    assert canonical_json([1, 1.0, 10**20, 1e-7]) == b"[1,1.0,100000000000000000000,1e-07]"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {1: "x"}, {"k": b"bytes"}, (1, 2)])
def test_values_without_a_canonical_form_are_refused(value: object) -> None:
    with pytest.raises(ValueError):
        canonical_json(value)


def test_round_trip_through_the_strict_parser() -> None:
    value = {"a": [1, 2.5, "é", None, True], "b": {"c": -3}}
    assert parse_json(canonical_json(value), "test") == value


@pytest.mark.parametrize(
    ("data", "cause"),
    [
        (b'{"a":1,"a":2}', "duplicate JSON key 'a'"),
        (b'{"a":NaN}', "non-finite number NaN"),
        (b'[Infinity]', "non-finite number Infinity"),
        (b'{"a":', "not valid JSON"),
        (b"\xff\xfe", "not valid JSON"),
    ],
)
def test_strict_parser_names_what_is_wrong(data: bytes, cause: str) -> None:
    with pytest.raises(MalformedInputError, match="^thing: ") as raised:
        parse_json(data, "thing")
    assert cause in str(raised.value)


def test_oversized_document_is_refused_before_parsing() -> None:
    with pytest.raises(MalformedInputError, match="exceeds the limit of 4"):
        parse_json(b"[1,2,3]", "thing", max_bytes=4)
