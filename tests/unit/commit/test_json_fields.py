"""The one typed-field reader for untrusted JSON (commit/json_fields.py)."""

from __future__ import annotations

import pytest

from trainwitness.commit.json_fields import get_field, is_int, is_kind, only_fields
from trainwitness.errors import MalformedInputError


def test_get_field_returns_a_field_of_its_kind() -> None:
    assert get_field({"n": 3, "s": "x"}, "n", int, "doc") == 3
    assert get_field({"n": 3, "s": "x"}, "s", str, "doc") == "x"
    assert get_field({"x": 1.5}, "x", (int, float), "doc") == 1.5


@pytest.mark.parametrize("obj", [{}, [], None, "n", {"m": 1}])
def test_get_field_names_a_missing_field_by_its_path(obj: object) -> None:
    with pytest.raises(MalformedInputError, match=r"^attestation: predicate\.n is missing$"):
        get_field(obj, "n", int, "attestation: predicate")


@pytest.mark.parametrize(("value", "kind"), [(True, int), (False, (int, float)), ("3", int), (3, str), (None, int), (1.0, int)])
def test_get_field_refuses_another_type_and_bool_is_no_number(value: object, kind: type | tuple[type, ...]) -> None:
    with pytest.raises(MalformedInputError, match=r"^doc\.n has the wrong type$"):
        get_field({"n": value}, "n", kind, "doc")


def test_bool_is_accepted_where_bool_is_asked_for() -> None:
    assert get_field({"b": True}, "b", bool, "doc") is True
    assert is_kind(True, (int, bool)) and not is_kind(True, (int, float)) and not is_int(False) and is_int(0)


def test_optional_fields_may_be_null_but_not_absent() -> None:
    assert get_field({"u": None}, "u", str, "doc", optional=True) is None
    with pytest.raises(MalformedInputError, match="doc.u is missing"):
        get_field({}, "u", str, "doc", optional=True)
    with pytest.raises(MalformedInputError, match="doc.u has the wrong type"):
        get_field({"u": None}, "u", str, "doc")


def test_only_fields_refuses_unknown_and_missing_fields() -> None:
    assert only_fields({"a": 1, "b": 2}, "doc", ("a",), ("b",)) == {"a": 1, "b": 2}
    with pytest.raises(MalformedInputError, match=r"^doc holds fields this verifier does not know: \['z'\] \(refused: nothing would check them\)$"):
        only_fields({"a": 1, "z": 0}, "doc", ("a",))
    with pytest.raises(MalformedInputError, match=r"^doc\.a is missing$"):
        only_fields({"b": 1}, "doc", ("a",), ("b",))
    with pytest.raises(MalformedInputError, match=r"^doc is not an object$"):
        only_fields([1], "doc", ("a",))
