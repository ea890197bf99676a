"""Licence policies: which SPDX licences an auditor accepts for the weights and for every data source.

A policy is a TOML file (docs/DATA.md)::

    [policy]
    name = "..."
    source = "where the list comes from"
    [[allow]]
    id = "CC-BY-4.0"
    reason = "why"
    [[deny]]
    id = "CC-BY-NC-4.0"
    reason = "why"

Expressions are evaluated conservatively: an id passes only if the policy allows it and does not deny
it (ids compare case-insensitively, ``+`` and ``LicenseRef-`` ids only as listed); ``A AND B`` needs
both; ``A OR B`` needs at least one (the recipient may choose); ``A WITH E`` needs both the licence and
the exception allowed. A missing licence (empty, ``NOASSERTION``, ``NONE``), an unknown id or an
expression that does not parse fails the check: it never passes.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from trainwitness.commit.strict_toml import MAX_TOML_BYTES, parse_toml
from trainwitness.data.manifest import SourceDeclaration
from trainwitness.errors import MalformedInputError, MissingInputError, PolicyError

__all__ = ["Policy", "MAX_POLICY_BYTES", "parse_policy_toml", "load_policy", "evaluate", "check_licences", "shipped_policies"]

_TOKEN_RE = re.compile(r"\s*(\(|\)|[A-Za-z0-9.+:-]+)")
_MISSING = {"", "NOASSERTION", "NONE"}


@dataclass(frozen=True)
class Policy:
    name: str
    source: str
    allowed: dict[str, str]  # lower-case id -> reason
    denied: dict[str, str]

    def judge(self, identifier: str) -> str | None:
        """None if allowed; else why not."""
        key = identifier.lower()
        if key in self.denied:
            return f"{identifier} is denied by policy {self.name}: {self.denied[key]}"
        if key in self.allowed:
            return None
        return f"{identifier} is unknown to policy {self.name} (not on its allowed list)"


def shipped_policies() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("trainwitness.verifier.policies").iterdir() if p.name.endswith(".toml"))


MAX_POLICY_BYTES = MAX_TOML_BYTES  # a policy lists licence ids; the shipped ones are a few KiB
_POLICY_KEYS = {"policy", "allow", "deny"}
_HEADER_KEYS = {"name", "source"}
_ENTRY_KEYS = {"id", "reason"}


def parse_policy_toml(data: bytes, where: str) -> Policy:
    """The one strict reader of a policy file: every failure is one ``MalformedInputError`` naming ``where``.

    ``data`` must be UTF-8 TOML (https://toml.io/en/v1.0.0) of at most ``MAX_POLICY_BYTES``, holding
    only ``[policy]`` (``name``, ``source``: strings) and ``[[allow]]``/``[[deny]]`` entries (``id``,
    ``reason``: strings). Nesting too deep for the parser, integers over the interpreter's digit
    limit, a key of the wrong type or an unknown key are refused, never a traceback.
    """
    table = parse_toml(data, where, MAX_POLICY_BYTES)
    unknown = sorted(set(table) - _POLICY_KEYS)
    if unknown:
        raise MalformedInputError(f"{where}: unknown keys {unknown}; a policy holds only [policy], [[allow]] and [[deny]]")
    header = table.get("policy", {})
    if not isinstance(header, dict) or set(header) - _HEADER_KEYS or not all(isinstance(v, str) for v in header.values()):
        raise MalformedInputError(f"{where}: [policy] must be a table of the strings name and source")
    allowed, denied = _entries(table, "allow", where), _entries(table, "deny", where)
    both = sorted(set(allowed) & set(denied))
    if both:
        raise MalformedInputError(f"{where}: {', '.join(both)} both allowed and denied")
    return Policy(name=header.get("name", where), source=header.get("source", ""), allowed=allowed, denied=denied)


def _entries(table: dict[str, Any], key: str, where: str) -> dict[str, str]:
    items = table.get(key, [])
    if not isinstance(items, list):
        raise MalformedInputError(f"{where}: [[{key}]] must be an array of tables")
    out = {}
    for item in items:
        if not isinstance(item, dict) or set(item) != _ENTRY_KEYS or not all(isinstance(v, str) for v in item.values()):
            raise MalformedInputError(f"{where}: every [[{key}]] entry holds exactly an id and a reason (strings)")
        out[item["id"].lower()] = item["reason"]
    return out


def load_policy(name_or_path: str) -> Policy:
    """A shipped policy by name (``fedora-content``, ``debian-dfsg``) or a TOML file (``parse_policy_toml``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            with open(path, "rb") as f:  # what is read is bounded: the limit, plus one byte to see it is passed
                data = f.read(MAX_POLICY_BYTES + 1)
        except FileNotFoundError as e:
            raise MissingInputError(f"policy {path} does not exist (--policy)") from e
        except OSError as e:
            raise MissingInputError(f"policy {path} cannot be read ({e.strerror})") from e
        return parse_policy_toml(data, str(path))
    if name_or_path in shipped_policies():
        data = resources.files("trainwitness.verifier.policies").joinpath(f"{name_or_path}.toml").read_bytes()
        return parse_policy_toml(data, f"policy {name_or_path}")
    raise MissingInputError(f"policy {name_or_path!r} is neither a file nor one of {', '.join(shipped_policies())}")


class _Parser:
    """SPDX license-expression grammar (annex D), precedence WITH > AND > OR, parentheses."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = self._tokenise(expression)
        self.position = 0

    def _tokenise(self, expression: str) -> list[str]:
        tokens, at = [], 0
        while at < len(expression):
            match = _TOKEN_RE.match(expression, at)
            if match is None:
                if expression[at:].strip() == "":
                    break
                raise PolicyError(f"licence expression {expression!r} does not parse (at {expression[at:]!r})")
            tokens.append(match.group(1))
            at = match.end()
        return tokens

    def _peek(self) -> str | None:
        return self.tokens[self.position] if self.position < len(self.tokens) else None

    def _take(self) -> str:
        token = self._peek()
        if token is None:
            raise PolicyError(f"licence expression {self.expression!r} ends early")
        self.position += 1
        return token

    def parse(self) -> Any:
        tree = self._or()
        if self._peek() is not None:
            raise PolicyError(f"licence expression {self.expression!r} has trailing {self._peek()!r}")
        return tree

    def _or(self) -> Any:
        node = self._and()
        while self._peek() == "OR":
            self._take()
            node = ("OR", node, self._and())
        return node

    def _and(self) -> Any:
        node = self._with()
        while self._peek() == "AND":
            self._take()
            node = ("AND", node, self._with())
        return node

    def _with(self) -> Any:
        node = self._atom()
        if self._peek() == "WITH":
            self._take()
            exception = self._take()
            if exception in ("(", ")", "AND", "OR", "WITH"):
                raise PolicyError(f"licence expression {self.expression!r}: WITH needs an exception id")
            node = ("WITH", node, ("ID", exception))
        return node

    def _atom(self) -> Any:
        token = self._take()
        if token == "(":
            node = self._or()
            if self._take() != ")":
                raise PolicyError(f"licence expression {self.expression!r}: unbalanced parentheses")
            return node
        if token in (")", "AND", "OR", "WITH"):
            raise PolicyError(f"licence expression {self.expression!r}: unexpected {token!r}")
        return ("ID", token)


def _failures(policy: Policy, node: Any) -> list[str]:
    """Why ``node`` does not pass the policy; an empty list means it passes."""
    kind = node[0]
    if kind == "ID":
        if node[1].upper() in _MISSING:
            return [f"{node[1]} is not a licence"]
        reason = policy.judge(node[1])
        return [] if reason is None else [reason]
    left, right = _failures(policy, node[1]), _failures(policy, node[2])
    if kind == "OR":
        return [] if not left or not right else left + right
    return left + right  # AND, WITH: every part must pass


def evaluate(policy: Policy, expression: str | None, what: str) -> None:
    """Raise ``PolicyError`` naming ``what`` and the licence unless ``expression`` passes ``policy``."""
    if expression is None or expression.strip().upper() in _MISSING:
        raise PolicyError(f"{what}: no licence declared ({expression!r}); a missing licence fails policy {policy.name}")
    failures = _failures(policy, _Parser(expression).parse())
    if failures:
        raise PolicyError(f"{what}: licence {expression!r} fails policy {policy.name}: " + "; ".join(failures))


def check_licences(policy: Policy, weights_license: str | None, sources: Iterable[SourceDeclaration]) -> str:
    """Check the weights' licence and every source's; returns a one-line summary of what passed."""
    evaluate(policy, weights_license, "weights")
    checked = [f"weights {weights_license}"]
    for source in sources:
        evaluate(policy, source.license, f"data source {source.name}")
        checked.append(f"{source.name} {source.license}")
    return f"policy {policy.name}: " + ", ".join(checked)
