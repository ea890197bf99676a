"""What the fuzz tests share: input strategies, the property every parser keeps, and the two test sizes.

Every parser of untrusted input either returns or raises one of the two error families, with the
exit status of its kind (``InputError``: 2, the input could not be read; ``VerificationError``: 1,
it contradicts the claim) and a printable message. Anything else (a traceback from json, tomllib,
safetensors, zstd, cryptography or torch) fails the test; at the command line, the output is one
line (``trainwitness: error: ...``) or one ``[FAIL]`` line.

Each property runs twice: ``QUICK`` examples in the default run, ``THOROUGH`` (at least 200) in the
run that includes ``-m slow``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trainwitness.commit.canonical import canonical_json, parse_json
from trainwitness.errors import InputError, TrainwitnessError, VerificationError

QUICK = 25
THOROUGH = 250

OURS = (InputError, VerificationError)
T = TypeVar("T")


def expect_ours(function: Callable[..., T], *args: Any, statuses: Collection[int] = (2,), **kwargs: Any) -> T | None:
    """``function(*args)``, or None when it raised one of ours, of an allowed exit status, in one line."""
    try:
        return function(*args, **kwargs)
    except OURS as e:
        check_error(e, statuses)
        return None


def check_error(error: TrainwitnessError, statuses: Collection[int]) -> None:
    """The error's kind and message. A message may quote an untrusted name holding a newline (a key
    file named in a keyring, say): the command line prints every error on one line whatever it holds,
    which the command-line fuzz tests below assert on the real output."""
    assert error.exit_status in statuses, f"exit {error.exit_status} for {type(error).__name__}: {error}"
    message = str(error)
    assert message.strip(), repr(message)
    message.encode("utf-8")  # printable: no lone surrogate reaches the terminal


def fuzz(**strategies: st.SearchStrategy[Any]) -> Callable[[Callable[..., None]], tuple[Callable[..., None], Callable[..., None]]]:
    """The property as two tests: ``(quick, thorough)``; assign them to two ``test_`` names."""

    def make(check: Callable[..., None]) -> tuple[Callable[..., None], Callable[..., None]]:
        def sized(examples: int) -> Callable[..., None]:
            return settings(max_examples=examples, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])(given(**strategies)(check))

        return sized(QUICK), pytest.mark.slow(sized(THOROUGH))

    return make


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` after one to four random edits."""
    data = bytearray(valid)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "splice", "set", "number"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "truncate":
            del data[at:]
        elif op == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "delete":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "splice":
            start = draw(st.integers(0, max(len(data) - 1, 0)))
            data[at:at] = data[start : start + draw(st.integers(1, 64))]
        elif op == "set" and data:
            data[at] = draw(st.sampled_from(b'"{}[],:0-e.\\\x00\xff'))
        elif op == "number":  # the values parsers used to let through: huge, overflowing, unpaired
            data[at:at] = draw(st.sampled_from([b"1" * 5000, b"1e400", b"-1e999", b'"\\ud800"', b"\\udfff", b"\xc3\xa9"]))
    return bytes(data)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=12,
)


@st.composite
def json_subtree_swapped(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` JSON with one value somewhere inside replaced by arbitrary JSON (or a key removed)."""
    obj = parse_json(valid, "seed")
    node = obj
    while True:
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = draw(st.sampled_from(keys))
        child = node[key]
        if isinstance(child, (dict, list)) and child and draw(st.booleans()):
            node = child
            continue
        if isinstance(node, dict) and draw(st.integers(0, 4)) == 0:
            del node[key]
        else:
            node[key] = draw(json_values)
        break
    return canonical_json(obj)


def bytes_for(valid: bytes) -> st.SearchStrategy[bytes]:
    return st.one_of(st.binary(max_size=512), mutated(valid))
