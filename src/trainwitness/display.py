"""Showing untrusted text: every string from a signed or stored input is escaped before it is displayed.

A signed ``source_uri``, a tensor name in a checkpoint, a file name in a source tree or a licence
in a manifest is written by the party being checked. Printed raw, ``ESC[2J`` clears an auditor's
terminal and can paint a fake ``ACCEPT``; a right-to-left override reorders what follows it; a
Cyrillic e (U+0435) in ``head.weight`` looks exactly like the Latin one. ``escape`` makes
every such character visible as its code point, so that what is shown is unambiguous:

* printable ASCII (U+0020..U+007E) is kept as it is, except the backslash, which becomes ``\\\\``
  (so the escaped form of a string can never be mistaken for the escaped form of another);
* every other code point (control characters, ESC, DEL, C1 controls, bidi overrides and isolates,
  zero-width characters, lone surrogates, and all non-ASCII letters, look-alikes or not) is written
  as ``\\xNN`` (below U+0100), ``\\uNNNN`` (below U+10000) or ``\\UNNNNNNNN``, as Python's
  ``ascii()`` writes it.

The result is pure printable ASCII: safe on a terminal, and inside Markdown once its own syntax is
escaped too (``escape_markdown``: the Markdown report and the benchmarks' tables), and in HTML once
HTML-escaped (``verifier/render.py``). ``escape_json`` applies ``escape`` to every string of a JSON value (keys too), for
reports that other tools render. Used at every output boundary: the verify report (text and
JSON), ``inspect``, and the command line's one-line errors, which quote stored names.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["escape", "escape_json", "escape_markdown", "value_text"]


def _code_point(c: str) -> str:
    n = ord(c)
    if n < 0x100:
        return f"\\x{n:02x}"
    if n < 0x10000:
        return f"\\u{n:04x}"
    return f"\\U{n:08x}"


def escape(text: object) -> str:
    """``text`` (``str()`` of it when not a string) as printable ASCII; see the module docstring.

    Injective: two different strings never escape to the same result.
    """
    s = text if isinstance(text, str) else str(text)
    if s.isascii() and s.isprintable() and "\\" not in s:  # the common case: nothing to do
        return s
    return "".join(
        "\\\\" if c == "\\" else c if " " <= c <= "~" else _code_point(c)
        for c in s
    )


def value_text(value: Any) -> str:
    """A JSON value written for a one-line display, NOT yet escaped: a string in double quotes, anything else as JSON.

    Pass the line it ends up in through ``escape``.
    """
    if isinstance(value, str):
        return f'"{value}"'
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def escape_json(value: Any) -> Any:
    """A copy of a JSON value (dicts, lists, scalars) with every string, keys included, escaped."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {escape(k): escape_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [escape_json(v) for v in value]
    return value


def escape_markdown(text: object) -> str:
    """``escape`` for a Markdown table cell or inline text: also ``|``, `` ` ``, ``*``, ``_``, ``~``, ``<``, ``[`` escaped."""
    out = escape(text)
    for c in "|`*_~<>[]":
        out = out.replace(c, "\\" + c)
    return out
