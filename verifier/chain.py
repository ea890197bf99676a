"""Verifying a chain: the published link, its declared parents back to a seeded origin, and its frozen inputs.

Weights are handed from person to person: an upstream trains from a seed, a fine-tuner starts from
the upstream's final weights, someone else continues from there. Each link is an attested run of its
own, signed by its own key; a child names its parent by the digest of the parent's statement.

Plan of ``verify_chain``:
(1) name every link the auditor gave (the published one, each ``--parent DIR``, each ``--input
    NAME=DIR``) by the digest of its statement payload, read without trusting it yet;
(2) resolve each chain by the declared parent digests, back to a link with a seeded start. A
    declared parent that no directory holds is missing input (exit 2, naming the link and the parent);
    a directory no chain uses, or a declared frozen input not given, likewise;
(3) verify every link, origins first, with ``verify_run``: its own signature against the trusted keys
    (the report names the key that matched), its own draw and replay, and its checkpoint 0 recomputed
    from its parent's files and its seed; the statement each link's signature covers must be the one
    named in (1);
(4) a frozen input given with its attestation (a link directory) is verified the same way, with its
    own chain; one given as a bare weights file is bound by its digest only: "declared, not verified";
(5) ACCEPT only when every link and every verified input is accepted; a REJECT names each link that failed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from trainwitness.commit.link import LinkFiles
from trainwitness.commit.safe_open import read_untrusted
from trainwitness.commit.statement import Statement, statement_digest
from trainwitness.display import escape, escape_json
from trainwitness.errors import MalformedInputError, MissingInputError
from trainwitness.identity.keyring import Keyring
from trainwitness.identity.signing import MAX_ENVELOPE_BYTES, unverified_payload
from trainwitness.verifier.report import Check, Report
from trainwitness.verifier.verify import ParentEvidence, Progress, VerifyOptions, verify_run

__all__ = ["ChainLink", "InputResult", "ChainReport", "verify_chain", "read_links", "MAX_CHAIN_LINKS"]

MAX_CHAIN_LINKS = 1000


@dataclass(frozen=True)
class _Named:
    """A link as read in (1): its files, the digest that names it, and its (not yet verified) statement."""

    files: LinkFiles
    digest: str
    statement: Statement


@dataclass
class ChainLink:
    files: LinkFiles
    digest: str
    report: Report

    @property
    def directory(self) -> str:
        return str(self.files.attestation.parent)

    def start(self) -> str:
        parent = self.report.parent
        if parent is None:
            return "seeded start"
        return f"{'fine-tuned from' if parent['mode'] == 'finetune' else 'continues'} {parent['attestation'][:19]}..."


@dataclass
class InputResult:
    """A frozen input of one link, with its own verdict."""

    link: int  # the position (1-based, origin first) of the link that reads it, in that link's chain
    reader: str  # that link's directory
    name: str
    weights_digest: str
    attestation: str | None  # declared by the reader's statement
    links: list[ChainLink] = field(default_factory=list)  # the input's own chain, when its attestation was given

    @property
    def status(self) -> str:
        if not self.links:
            return "declared, not verified"
        return "verified" if all(link.report.accepted for link in self.links) else "REJECTED"


@dataclass
class ChainReport:
    links: list[ChainLink]  # origin first; the published link last
    inputs: list[InputResult] = field(default_factory=list)

    @property
    def published(self) -> Report:
        return self.links[-1].report

    @property
    def pending_shards(self) -> int | None:
        """``--shard-requests`` (one link only): requests written, no verdict yet."""
        return self.published.pending_shards

    @property
    def checks(self) -> list[Check]:
        """Every check of every link and verified input (a chain with a failed check is not accepted)."""
        return [c for link in self.links for c in link.report.checks] + [
            c for r in self.inputs for link in r.links for c in link.report.checks
        ]

    @property
    def accepted(self) -> bool:
        return all(link.report.accepted for link in self.links) and all(r.status != "REJECTED" for r in self.inputs)

    @property
    def verdict(self) -> str:
        return "ACCEPT" if self.accepted else "REJECT"

    def failed_links(self) -> list[str]:
        """One line per link (of the chain, or of an input's chain) whose verification failed, naming its checks."""
        failed = []
        for k, link in enumerate(self.links, 1):
            if not link.report.accepted:
                failed.append(f"link {k} of {len(self.links)} ({link.directory}): {_failed_checks(link.report)}")
        for result in self.inputs:
            for k, link in enumerate(result.links, 1):
                if not link.report.accepted:
                    failed.append(f"frozen input {result.name}, link {k} of {len(result.links)} ({link.directory}): {_failed_checks(link.report)}")
        return failed

    def lineage_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "links": [_link_json(k, link) for k, link in enumerate(self.links, 1)],
            "inputs": [
                {
                    "link": r.link, "reader": r.reader, "name": r.name, "weights_digest": r.weights_digest,
                    "attestation": r.attestation, "status": r.status,
                    "links": [_link_json(k, link) for k, link in enumerate(r.links, 1)],
                }
                for r in self.inputs
            ],
            "failed": self.failed_links(),
        }

    def to_json(self) -> dict[str, Any]:
        """The published link's report, with the chain's verdict, and the whole chain under ``lineage``."""
        return {**self.published.to_json(), "verdict": self.verdict, "lineage": self.lineage_json()}

    def to_display_json(self) -> dict[str, Any]:
        """``to_json`` with every string escaped (display.escape): the ``--json`` report."""
        return escape_json(self.to_json())  # type: ignore[no-any-return]

    def to_text(self) -> str:
        """The chain, then each link's own report; every line escaped once (display.escape)."""
        if len(self.links) == 1 and not self.inputs:
            return self.published.to_text()
        lines = [f"trainwitness verify: {self.verdict} (a chain of {len(self.links)} link{'s' if len(self.links) > 1 else ''})"]
        lines.append("  lineage, from the origin to the published weights:")
        for k, link in enumerate(self.links, 1):
            lines.append(f"    {k}. {_link_line(link)}")
        if self.inputs:
            lines.append("  frozen inputs:")
            for r in self.inputs:
                how = r.status
                if r.links:
                    how += f" (signed by {r.links[-1].report.signer or 'no trusted key'}; a chain of {len(r.links)})"
                elif r.attestation is not None:
                    how += f" (its attestation {r.attestation} was not given)"
                lines.append(f"    {r.name} (read by {r.reader}): weights {r.weights_digest}: {how}")
        for failure in self.failed_links():
            lines.append(f"  REJECTED {failure}")
        sections = [(f"link {k} of {len(self.links)}{' (published)' if k == len(self.links) else ''}", link) for k, link in enumerate(self.links, 1)]
        sections += [(f"frozen input {r.name}, link {k} of {len(r.links)}", link) for r in self.inputs for k, link in enumerate(r.links, 1)]
        lines = [escape(line) for line in lines]  # subjects, input names and failure details quote stored strings
        for title, link in sections:
            lines.append("\n" + escape(f"== {title}: {link.files.attestation}"))
            lines.append(link.report.to_text())  # escaped already
        return "\n".join(lines)


def _failed_checks(report: Report) -> str:
    failed = [f"{c.name}: {c.detail}" for c in report.checks if not c.passed]
    return "; ".join(failed) if failed else "no check passed"


def _link_line(link: ChainLink) -> str:
    report = link.report
    signer = f"signed by {report.signer} ({report.signer_key_id})" if report.signer else "signed by no trusted key"
    replay = f", {len(report.segments)} of {report.segment_count} segments replayed" if report.segment_count else ""
    detection = report.detection()
    caught = f", a 10% forgery caught with probability {detection['10%']:.1%}" if "10%" in detection else ""
    return f"{link.directory}: {report.subject or link.files.weights.name}; {link.start()}; {signer}; {report.verdict}{replay}{caught}"


def _link_json(position: int, link: ChainLink) -> dict[str, Any]:
    report = link.report
    return {
        "position": position,
        "directory": link.directory,
        "attestation": str(link.files.attestation),
        "statement_digest": link.digest,
        "subject": report.subject,
        "signer": {"name": report.signer, "key_id": report.signer_key_id} if report.signer else None,
        "parent": report.parent,
        "inputs": report.inputs,
        "verdict": report.verdict,
        "detection_probability": report.detection(),
        "report": report.to_json(),
    }


def read_links(directories: Sequence[Path]) -> dict[str, _Named]:
    """(1) for link directories: each named by its statement digest (unverified); two holding one statement refused."""
    named: dict[str, _Named] = {}
    for directory in directories:
        link = _read_link(LinkFiles.at(directory))
        if link.digest in named and named[link.digest].files != link.files:
            raise MalformedInputError(f"{directory} and {named[link.digest].files.attestation.parent} hold the same attestation {link.digest}")
        named[link.digest] = link
    return named


def _read_link(files: LinkFiles) -> _Named:
    payload = unverified_payload(read_untrusted(files.attestation, f"attestation {files.attestation}", MAX_ENVELOPE_BYTES), f"DSSE envelope {files.attestation}")
    return _Named(files=files, digest=statement_digest(payload), statement=Statement.from_payload(payload))


def _chain(tip: _Named, pool: Mapping[str, _Named]) -> list[_Named]:
    """(2) the links from the origin (a seeded start) to ``tip``, each parent taken from ``pool`` by digest."""
    chain = [tip]
    while (declared := chain[-1].statement.claim.parent) is not None:
        if len(chain) >= MAX_CHAIN_LINKS:
            raise MalformedInputError(f"the chain ending at {tip.files.attestation} is longer than {MAX_CHAIN_LINKS} links")
        if declared.attestation not in pool:
            raise MissingInputError(
                f"{chain[-1].files.attestation} declares a parent ({declared.mode} of attestation {declared.attestation}, "
                f"weights {declared.weights_digest}) that no --parent DIR holds; pass the parent's link directory "
                "(attestation.json, store/, model.safetensors) with --parent DIR"
            )
        chain.append(pool[declared.attestation])
    return chain[::-1]


def _code_is_for(code: Path, entry_point: str) -> bool:
    """Whether the auditor's ``--code`` copy is the source tree of ``entry_point`` (its root's name, as code identity finds it)."""
    name = code.stem if code.is_file() else code.name
    root = "workloads" if entry_point.startswith("trainwitness.workloads.") else entry_point.partition(":")[0].split(".")[0]
    return name == root


def _options_for(link: _Named, options: VerifyOptions, links: int) -> VerifyOptions:
    """The auditor's options as they apply to one link: --data for its sources, --code for its program.

    With one link, ``--code`` applies as given (``verify_run`` checks it); in a chain, to the links
    whose program it is the source tree of (``verify_chain`` refuses a copy that is no link's).
    """
    sources = {s.name for s in link.statement.claim.manifest.sources}
    code = options.code
    if code is not None and links > 1 and not _code_is_for(code, link.statement.claim.entry_point):
        code = None
    return replace(options, data={name: path for name, path in options.data.items() if name in sources}, code=code)


def verify_chain(
    published: LinkFiles,
    keys: Keyring,
    options: VerifyOptions | None = None,
    parents: Sequence[Path] = (),
    inputs: Mapping[str, Path] | None = None,
    progress: Progress | None = None,
) -> ChainReport:
    """Verify ``published`` and every link it descends from (``parents``: link directories), and its frozen inputs.

    ``inputs``: frozen input name -> a weights file ("declared, not verified") or a link directory
    (verified as a chain of its own). A name applies to every link that declares it. Raises
    ``InputError`` for a missing or unused parent, input or data source (nothing was decided);
    every verification failure is recorded in the link's report.
    """
    options = options if options is not None else VerifyOptions()
    inputs = dict(inputs or {})
    # (1): every link the auditor gave, named by its statement digest.
    tip = _read_link(published)
    pool = read_links(parents)
    input_links = {name: _read_link(LinkFiles.at(path)) for name, path in inputs.items() if path.is_dir()}
    for link in input_links.values():
        pool.setdefault(link.digest, link)
    pool.setdefault(tip.digest, tip)

    # (2): resolve the chain, and the chain of every input given with its attestation, before verifying anything.
    chains: dict[str, list[_Named]] = {}

    def resolve(link: _Named) -> list[_Named]:
        if link.digest not in chains:
            chains[link.digest] = _chain(link, pool)
            for member in chains[link.digest]:
                for name, frozen in member.statement.claim.inputs.items():
                    if name not in inputs:
                        raise MissingInputError(
                            f"{member.files.attestation} declares frozen input {name} (weights {frozen.weights_digest}); "
                            f"pass --input {name}=PATH (its weights file, or its link directory to verify it too)"
                        )
                    given = input_links.get(name)
                    if given is not None:
                        if frozen.attestation is not None and given.digest != frozen.attestation:
                            raise MalformedInputError(
                                f"--input {name}={inputs[name]} holds attestation {given.digest}; "
                                f"{member.files.attestation} declares {frozen.attestation}"
                            )
                        resolve(given)
        return chains[link.digest]

    main_chain = resolve(tip)
    used = {link.digest for chain in chains.values() for link in chain}
    unused = [link.files.attestation.parent for digest, link in pool.items() if digest not in used]
    if unused:
        raise MalformedInputError(f"--parent {unused[0]} is no link of the declared lineage (its attestation is named by no child)")
    declared_inputs = {name for chain in chains.values() for link in chain for name in link.statement.claim.inputs}
    extra = sorted(set(inputs) - declared_inputs)
    if extra:
        raise MalformedInputError(f"--input names {', '.join(extra)}, which no link of the lineage declares")
    if (options.code is not None and len(used) > 1
            and not any(_code_is_for(options.code, pool[digest].statement.claim.entry_point) for digest in used)):
        raise MalformedInputError(f"--code {options.code} is the source tree of no link of the lineage")
    all_sources = {s.name for chain in chains.values() for link in chain for s in link.statement.claim.manifest.sources}
    unknown = sorted(set(options.data) - all_sources)
    if unknown:
        raise MalformedInputError(f"--data names {', '.join(unknown)}, which no link of the lineage declares")

    if (options.shard_requests is not None or options.shard_answers is not None) and len(used) > 1:
        raise MalformedInputError(
            "--shard-requests and --shard-answers audit one link at a time: verify each link of this lineage on its own "
            "(its parent's link first), or replay the chain with --workers or --cluster"
        )

    # (3), (4): every link verified once, origins first; a child's start is checked against its parent's files.
    verified: dict[str, ChainLink] = {}

    def verify(chain: list[_Named]) -> list[ChainLink]:
        for k, link in enumerate(chain):
            if link.digest in verified:
                continue
            parent = None if k == 0 else chain[k - 1]
            weights = {
                name: input_links[name].files.weights if name in input_links else inputs[name] for name in link.statement.claim.inputs
            }
            for name in link.statement.claim.inputs:
                if name in input_links:
                    verify(chains[input_links[name].digest])
            report = verify_run(
                link.files.attestation, link.files.store, link.files.weights, keys, _options_for(link, options, len(used)), progress,
                parent=None if parent is None else ParentEvidence(parent.digest, parent.statement.claim, parent.files),
                inputs=weights,
            )
            if report.statement_digest and report.statement_digest != link.digest:
                raise MalformedInputError(f"{link.files.attestation} changed while it was verified")
            verified[link.digest] = ChainLink(link.files, link.digest, report)
        return [verified[link.digest] for link in chain]

    links = verify(main_chain)
    results = []
    listed: set[tuple[str, str]] = set()  # (reader's digest, input name): a link shared by two chains lists its inputs once
    for chain in chains.values():
        for position, link in enumerate(chain, 1):
            for name, frozen in link.statement.claim.inputs.items():
                if (link.digest, name) in listed:
                    continue
                listed.add((link.digest, name))
                results.append(
                    InputResult(
                        link=position, reader=str(link.files.attestation.parent), name=name, weights_digest=frozen.weights_digest,
                        attestation=frozen.attestation,
                        links=verify(chains[input_links[name].digest]) if name in input_links else [],
                    )
                )
    return ChainReport(links=links, inputs=results)
