"""The one strict reader of the TOML files the verifier is given (licence policies, keyrings).

TOML 1.0 (https://toml.io/en/v1.0.0) through the standard library's ``tomllib``, with every way an
untrusted file can fail turned into one ``MalformedInputError`` naming the file: more than
``max_bytes``, not UTF-8, not TOML, nested deeper than the parser's recursion, an integer longer
than the interpreter converts. Never a traceback; the caller checks the document's own schema.
"""

from __future__ import annotations

import tomllib
from typing import Any

from trainwitness.errors import MalformedInputError

__all__ = ["MAX_TOML_BYTES", "parse_toml"]

MAX_TOML_BYTES = 1 << 20  # a policy or a keyring lists ids and keys: the shipped ones are a few KiB


def parse_toml(data: bytes, where: str, max_bytes: int = MAX_TOML_BYTES) -> dict[str, Any]:
    """The TOML document ``data`` (bytes of the file ``where``) as a table; ``MalformedInputError`` otherwise."""
    if len(data) > max_bytes:
        raise MalformedInputError(f"{where}: {len(data)} bytes, over the limit of {max_bytes}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedInputError(f"{where}: not UTF-8 text (byte {e.start}); TOML is UTF-8") from e
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise MalformedInputError(f"{where}: not valid TOML ({e})") from e
    except RecursionError as e:
        raise MalformedInputError(f"{where}: not valid TOML (nested too deeply)") from e
    except ValueError as e:  # e.g. an integer longer than the interpreter converts
        raise MalformedInputError(f"{where}: not valid TOML ({' '.join(str(e).split())[:200]})") from e
