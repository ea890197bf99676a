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


@pytest.mark.parametrize(
    ("document", "why"),
    [
        (b"1" * 4301, "an integer of 4301 digits"),
        (b"-" + b"1" * 4301, "an integer of 4301 digits"),
        (b'{"lr": 1e400}', "the number 1e400 overflows a float"),
        (b"[-1e999]", "the number -1e999 overflows a float"),
        (b'["\\ud800"]', "a string holds a lone surrogate"),
        (b'{"\\udc00": 1}', "a string holds a lone surrogate"),
        (b'{"a": ["x", {"b": "\\ud83d"}]}', "a string holds a lone surrogate"),
    ],
    ids=["huge-int", "huge-negative-int", "1e400", "-1e999", "high-surrogate", "low-surrogate-key", "nested"],
)
def test_parse_json_refuses_values_that_cannot_round_trip(document: bytes, why: str) -> None:
    with pytest.raises(MalformedInputError, match=f"^doc: {why}"):
        parse_json(document, "doc")


def test_parse_json_keeps_what_is_representable() -> None:
    assert parse_json(b"1" * 4300, "doc") == int("1" * 4300)
    assert parse_json(b'["\\ud83d\\ude00", 1e308, 1e-400]', "doc") == ["\U0001f600", 1e308, 0.0]


def test_the_integer_limit_holds_whatever_the_interpreter_allows() -> None:
    import sys

    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)  # PYTHONINTMAXSTRDIGITS=0: no limit of the interpreter's own
    try:
        with pytest.raises(MalformedInputError, match="an integer of 10000 digits"):
            parse_json(b"1" * 10_000, "doc")
    finally:
        sys.set_int_max_str_digits(previous)
