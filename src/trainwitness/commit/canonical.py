"""Canonical JSON: the one byte encoding of every metadata object that is hashed or signed.

Keys sorted by code point, no insignificant whitespace, UTF-8, integers as integers, floats in
Python's shortest round-trip repr, NaN and infinities refused. Parsing (``parse_json``) is the one
strict reader of every JSON document and JSON line the system reads: duplicate keys, non-finite
constants, numbers that overflow (``1e400``, integers of more than ``MAX_INT_DIGITS`` digits),
strings holding a lone surrogate (``"\\ud800"``, which no UTF-8 output can print), invalid UTF-8,
nesting deeper than the parser's recursion allows and oversized documents are each refused as
one ``MalformedInputError`` naming the document, never silently resolved and never a traceback.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from trainwitness.errors import MalformedInputError

__all__ = ["JSONValue", "canonical_json", "parse_json", "MAX_JSON_BYTES", "MAX_INT_DIGITS"]

JSONValue = Any  # None | bool | int | float | str | list[JSONValue] | dict[str, JSONValue]

MAX_JSON_BYTES = 64 * 1024 * 1024
# Python's own default limit for int <-> str (CVE-2020-10735), fixed here whatever the environment
# sets (PYTHONINTMAXSTRDIGITS=0 would otherwise make a long integer cost quadratic time); no
# document of this system holds an integer of more than 20 digits.
MAX_INT_DIGITS = 4300
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")


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


def _parse_int(text: str) -> int:
    digits = len(text) - text.startswith("-")
    if digits > MAX_INT_DIGITS:
        raise MalformedInputError(f"an integer of {digits} digits (more than {MAX_INT_DIGITS})")
    return int(text)


def _parse_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 is read as infinity, which no canonical document holds
        raise MalformedInputError(f"the number {text[:40]} overflows a float")
    return value


def _check_no_lone_surrogate(value: JSONValue) -> None:
    """A ``\\udXXX`` escape that is not half of a pair decodes to a string no UTF-8 output can hold."""
    pending = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if _SURROGATE.search(item):
                raise MalformedInputError(f"a string holds a lone surrogate ({item[:40]!r})")
        elif isinstance(item, list):
            pending.extend(item)
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())


def parse_json(data: bytes, what: str, max_bytes: int = MAX_JSON_BYTES) -> JSONValue:
    """Parse untrusted JSON strictly (see the module docstring for what is refused).

    ``data`` is the document's bytes (UTF-8); ``what`` names it in every error (a file, or a file
    and line). Raises ``MalformedInputError``, one line, for every malformed input; nothing else.
    """
    if len(data) > max_bytes:
        raise MalformedInputError(f"{what}: {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant,
            parse_int=_parse_int, parse_float=_parse_float,
        )
        if _SURROGATE_ESCAPE.search(text):  # rare: only then is the walk worth its time
            _check_no_lone_surrogate(value)
        return value
    except MalformedInputError as e:
        raise MalformedInputError(f"{what}: {e}") from e
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise MalformedInputError(f"{what}: not valid JSON ({_one_line(str(e))})") from e
    except ValueError as e:  # e.g. an integer conversion refused by the interpreter's own limit
        raise MalformedInputError(f"{what}: not valid JSON ({_one_line(str(e))})") from e


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."
