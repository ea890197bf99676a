"""Typed fields of untrusted JSON: the one reader every parser of a signed or stored object uses.

JSON read from an attestation, a store or a manifest is untrusted until checked. ``get_field``
returns one field, refusing a missing field or one of another type; ``only_fields`` refuses an
object holding a field the caller does not know (a field the verifier does not know would be signed
but checked by nothing) or lacking a required one. A JSON ``true`` is never an integer or a number
here, though Python's ``bool`` is an ``int``. Errors are one line, ``MalformedInputError``, naming
the field by its path: ``{where}.{key} is missing``, ``{where}.{key} has the wrong type``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any, TypeGuard

from trainwitness.errors import MalformedInputError

__all__ = ["get_field", "only_fields", "is_kind", "is_int"]

Kind = type | tuple[type, ...]


def is_kind(value: object, kind: Kind) -> bool:
    """``isinstance(value, kind)``, except that a bool is not an int or float unless ``kind`` names bool."""
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    return isinstance(value, kinds)


def is_int(value: object) -> TypeGuard[int]:
    """A JSON integer: an ``int`` that is not a ``bool``."""
    return is_kind(value, int)


def get_field(obj: Any, key: str, kind: Kind, where: str, *, optional: bool = False) -> Any:
    """``obj[key]``, which must be present and of ``kind`` (``is_kind``); None too when ``optional``.

    ``where`` is the path of ``obj`` in its document (``"attestation: predicate.code"``). Raises
    ``MalformedInputError``: ``{where}.{key} is missing`` (``obj`` is no object or lacks ``key``),
    ``{where}.{key} has the wrong type``.
    """
    if not isinstance(obj, dict) or key not in obj:
        raise MalformedInputError(f"{where}.{key} is missing")
    value = obj[key]
    if optional and value is None:
        return None
    if not is_kind(value, kind):
        raise MalformedInputError(f"{where}.{key} has the wrong type")
    return value


def only_fields(obj: Any, where: str, required: Collection[str], optional: Collection[str] = ()) -> dict[str, Any]:
    """``obj`` as an object holding every ``required`` field, and nothing beyond the ``optional`` ones.

    Raises ``MalformedInputError``: ``{where} is not an object``, ``{where} holds fields this
    verifier does not know: [...]`` (refused: nothing would check them), ``{where}.{key} is missing``.
    """
    if not isinstance(obj, dict):
        raise MalformedInputError(f"{where} is not an object")
    unknown = sorted(set(obj) - set(required) - set(optional))
    if unknown:
        raise MalformedInputError(f"{where} holds fields this verifier does not know: {unknown[:5]} (refused: nothing would check them)")
    missing = sorted(set(required) - set(obj))
    if missing:
        raise MalformedInputError(f"{where}.{missing[0]} is missing")
    return obj
