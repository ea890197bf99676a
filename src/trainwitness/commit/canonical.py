"""Canonical JSON: the one byte encoding of every metadata object that is hashed or signed.

Keys sorted by code point, no insignificant whitespace, UTF-8, integers as integers, floats in
Python's shortest round-trip repr, NaN and infinities refused. Parsing is strict: duplicate keys,
non-finite numbers and oversized documents are rejected, never silently resolved.
"""

from __future__ import annotations

import json
import math
from typing import Any

from trainwitness.errors import MalformedInputError

__all__ = ["JSONValue", "canonical_json", "parse_json", "MAX_JSON_BYTES"]

JSONValue = Any  # None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]

MAX_JSON_BYTES = 64 * 1024 * 1024


def canonical_json(value: JSONValue) -> bytes:
    """Encode ``value`` canonically; raises ``ValueError`` for anything not plain JSON."""
    _check_plain(value)
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False
    ).encode("utf-8")


def _check_plain(value: JSONValue) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"non-finite float {value!r} has no canonical JSON form")
        return
    if isinstance(value, list):
        for item in value:
            _check_plain(item)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"JSON object key {key!r} is not a string")
            _check_plain(item)
        return
    raise ValueError(f"{type(value).__name__} is not a JSON value")


def _reject_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise MalformedInputError(f"duplicate JSON key {key!r}")
        result[key] = value
    return result


def _reject_constant(name: str) -> None:
    raise MalformedInputError(f"non-finite number {name} in JSON")


def parse_json(data: bytes, what: str, max_bytes: int = MAX_JSON_BYTES) -> JSONValue:
    """Parse untrusted JSON strictly; every failure is a ``MalformedInputError`` naming ``what``."""
    if len(data) > max_bytes:
        raise MalformedInputError(f"{what}: {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        text = data.decode("utf-8")
        return json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant
        )
    except MalformedInputError as e:
        raise MalformedInputError(f"{what}: {e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MalformedInputError(f"{what}: not valid JSON ({e})") from e
