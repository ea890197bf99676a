"""The verdict: every check with its outcome, the segments replayed, and how sure the sample makes us."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainwitness.commit.statement import Statement
from trainwitness.display import escape, escape_json, value_text
from trainwitness.errors import CheckName
from trainwitness.verifier.draw import detection_probability
from trainwitness.verifier.replay import SegmentResult

__all__ = ["Check", "Report", "FORGED_FRACTIONS"]

FORGED_FRACTIONS = (0.01, 0.05, 0.10)


@dataclass(frozen=True)
class Check:
    name: CheckName
    passed: bool
    detail: str


@dataclass
class Report:
    attestation: str
    subject: str = ""
    entry_point: str = ""
    checks: list[Check] = field(default_factory=list)
    segment_count: int = 0
    segments: list[SegmentResult] = field(default_factory=list)
    sampled: list[int] = field(default_factory=list)
    sample_seed: int | None = None
    seed_from_os: bool = False  # the seed above was drawn from OS randomness (sandboxed replay), not chosen
    notes: list[str] = field(default_factory=list)
    checkpoint_bytes_read: int = 0
    data_bytes_read: int = 0  # bytes of sample records read from the auditor's copy and proven
    data_samples_read: int = 0
    data_total_bytes: int = 0  # the whole dataset, as the manifest declares it
    data_bytes_fetched: int = 0  # bytes fetched from data sources given by URL (ranges, or whole files)
    exact: dict[str, Any] | None = None  # exact mode's signed grid, when the run used it
    bound: float | None = None  # bounded mode's bound, when the verifier used it
    bound_provenance: str = ""
    signer: str = ""  # the name of the trusted key whose signature verified (--key path or keyring name)
    signer_key_id: str = ""
    statement_digest: str = ""  # the name of the verified statement (what a child's parent field names)
    parent: dict[str, Any] | None = None  # the statement's declared parent (predicate.parent), if any
    inputs: dict[str, Any] = field(default_factory=dict)  # the statement's declared frozen inputs
    # Signed fields nothing checks (commit/bindings.py, kind "declared"), as (path, value): shown as such.
    declared: list[tuple[str, Any]] = field(default_factory=list)
    pending_shards: int | None = None  # --shard-requests: requests written, no verdict yet
    rank_replay: str | None = None  # a data-parallel run: how its ranks were replayed (docs/DISTRIBUTED.md)
    fetched_bytes: int = 0  # bytes received from URLs (remote inputs), every try counted
    fetch_requests: int = 0
    fetched: dict[str, int] = field(default_factory=dict)  # url -> bytes received
    # For the report people read (render.py): the run's shape and what the attestation declares.
    total_steps: int = 0
    checkpoint_steps: list[int] = field(default_factory=list)
    declared_training_seconds: float | None = None  # declared by the prover, not verified
    losses: list[tuple[int, float]] | None = None  # (step, loss) from the store's step records, when recorded
    licences: list[dict[str, Any]] = field(default_factory=list)  # one row per weights / data source (policy.py)
    distribution: dict[str, Any] | None = None  # the ML-Policy class and its reason, with --policy
    lineage: list[dict[str, Any]] = field(default_factory=list)  # parent runs, when the attestation names any
    statement: Statement | None = field(default=None, repr=False, compare=False)  # the signed statement, once verified

    def bounded_summary(self) -> dict[str, Any]:
        """Bounded mode: the distances seen, the bound, and the steering room it leaves a forger."""
        if self.bound is None:
            return {}
        distances = [s.distance.overall for s in self.segments if s.distance is not None]
        return {
            "bound": self.bound,
            "bound_provenance": self.bound_provenance,
            "max_distance": max(distances, default=0.0),
            "distances": {str(s.index): s.distance.overall for s in self.segments if s.distance is not None},
            # Each segment's checkpoint may sit up to bound x that segment's update from the honest
            # replay, compounding over every segment (replayed or not).
            "steering_room": self.bound * self.segment_count,
            "weaker": "bounded mode accepts checkpoints that are not what the code computes; exact mode does not",
        }

    @property
    def accepted(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks) and self.pending_shards is None

    @property
    def verdict(self) -> str:
        if self.pending_shards is not None and all(c.passed for c in self.checks):
            return "NO VERDICT (shard requests written)"
        return "ACCEPT" if self.accepted else "REJECT"

    def passed(self, name: CheckName, detail: str) -> None:
        self.checks.append(Check(CheckName(name), True, detail))

    def failed(self, name: CheckName, detail: str) -> None:
        # one line: a library's message may span several
        self.checks.append(Check(CheckName(name), False, " ".join(detail.split())))

    def detection(self) -> dict[str, float]:
        """Only meaningful for an accepted run: P(a forgery of fraction f would have been caught).

        The last segment is replayed on every draw (``draw.choose_segments``); the figure is for the
        segments drawn besides it, against a forger who leaves the last one honest.
        """
        if not self.accepted or not self.segments:
            return {}
        drawn = max(0, len(self.segments) - 1)
        return {f"{f:.0%}": detection_probability(self.segment_count, drawn, f) for f in FORGED_FRACTIONS}

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "attestation": self.attestation,
            "subject": self.subject,
            "entry_point": self.entry_point,
            "signer": {"name": self.signer, "key_id": self.signer_key_id} if self.signer else None,
            "statement_digest": self.statement_digest,
            "parent": self.parent,
            "inputs": self.inputs,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
            "segments": {
                "total": self.segment_count,
                "sampled": self.sampled,
                "sample_seed": self.sample_seed,
                "seed_from_os": self.seed_from_os,
                "replayed": [
                    {
                        "index": s.index, "steps": [s.first_step, s.last_step], "seconds": round(s.seconds, 4),
                        **({"distance": vars(s.distance)} if s.distance is not None else {}),
                    }
                    for s in self.segments
                ],
            },
            "detection_probability": self.detection(),
            "checkpoint_bytes_read": self.checkpoint_bytes_read,
            "data": {
                "bytes_read": self.data_bytes_read,
                "samples_read": self.data_samples_read,
                "total_bytes": self.data_total_bytes,
                **({"bytes_fetched": self.data_bytes_fetched} if self.data_bytes_fetched else {}),
            },
            "notes": self.notes,
            "declared_not_verified": {path: value for path, value in self.declared},
            "replay_mode": self.replay_mode,
            **({"licences": self.licences} if self.licences else {}),
            **({"distribution": self.distribution} if self.distribution is not None else {}),
            **({"fetched": {"bytes": self.fetched_bytes, "requests": self.fetch_requests, "by_url": self.fetched}} if self.fetched else {}),
            **({"rank_replay": self.rank_replay} if self.rank_replay is not None else {}),
            **({"exact": self.exact} if self.exact is not None else {}),
            **({"bounded": self.bounded_summary()} if self.bound is not None else {}),
        }

    @property
    def replay_mode(self) -> str:
        return "exact" if self.exact is not None else "bounded" if self.bound is not None else "bitwise"

    def data_proven(self) -> bool:
        """The data check ran and passed everywhere (a worker's failure is a check of the same name)."""
        data = [c for c in self.checks if c.name == CheckName.DATA]
        return bool(data) and all(c.passed for c in data)

    def to_text(self) -> str:
        lines = [f"trainwitness verify: {self.verdict}"]
        # Known only once the signature verified: an unverified statement's claims are never shown.
        lines += [f"  subject      {self.subject}"] if self.subject else []
        lines += [f"  entry point  {self.entry_point}"] if self.entry_point else []
        if self.signer:
            lines.append(f"  signed by    {self.signer} ({self.signer_key_id})")
        if self.parent is not None:
            lines.append(f"  starts from  {self.parent['mode']} of attestation {self.parent['attestation']}")
        for name, frozen in sorted(self.inputs.items()):
            lines.append(f"  reads        frozen input {name}: weights {frozen['weights_digest']}")
        for c in self.checks:
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        lines += self._summary_lines()
        # Details, notes, the subject and the entry point quote signed and stored strings: every line
        # is escaped (display.escape) so that none of them can drive the terminal or pass for another.
        return "\n".join(escape(line) for line in lines)

    def summary_lines(self) -> list[str]:
        """What follows the checks in ``to_text`` (replay, bounds, data, detection, notes, the declared
        fields), each line escaped (display.escape): the terminal summary prints them too."""
        return [escape(line) for line in self._summary_lines()]

    def _summary_lines(self) -> list[str]:
        lines: list[str] = []
        if self.segment_count and self.pending_shards is None:
            if self.sample_seed is None:
                how = "OS randomness"
            elif self.seed_from_os:
                how = f"OS randomness: seed {self.sample_seed}, to repeat this audit"
            else:
                how = f"the auditor's seed {self.sample_seed}"
            if self.sampled and len(self.sampled) >= self.segment_count:
                which = "every segment, none drawn"
            else:
                which = f"the last, always, and {len(self.sampled) - 1} drawn from {how}"
            if self.bound is None:
                lines.append(
                    f"  replayed {len(self.segments)} of {self.segment_count} segments ({which}), "
                    f"bitwise equal: {len(self.segments)}; checkpoint bytes read: {self.checkpoint_bytes_read}"
                )
            else:
                lines.append(f"  replayed {len(self.segments)} of {self.segment_count} segments ({which}) in BOUNDED mode")
        if self.exact is not None:
            lines.append(
                f"  exact mode: gradients rounded to {self.exact['gradients']['mantissa_bits']} mantissa bits before "
                f"every optimizer step and the state to {self.exact['state']['mantissa_bits']} after it, hint margins "
                f"2^-{self.exact['gradients']['margin_log2']} and 2^-{self.exact['state']['margin_log2']} of a cell (signed)"
            )
        if self.bound is not None:
            b = self.bounded_summary()
            for s in self.segments:
                if s.distance is not None:
                    lines.append(
                        f"  segment {s.index}: distance {s.distance.overall:.3g} of its update "
                        f"(worst tensor {s.distance.worst_tensor}: {s.distance.worst:.3g})"
                    )
            lines.append(f"  bound {b['bound']:.3g} ({b['bound_provenance']})")
            lines.append(
                f"  WEAKER THAN EXACT: bounded mode accepts checkpoints up to {b['bound']:.3g} of each segment's update "
                f"away from what the code computes; a forger keeps that steering room in every segment: "
                f"{b['steering_room']:.3g} x (a segment's update) in total over {self.segment_count} segments"
            )
        if self.data_total_bytes:
            share = self.data_bytes_read / self.data_total_bytes
            proven = self.data_proven()
            lines.append(
                f"  data read: {self.data_bytes_read} of {self.data_total_bytes} bytes ({share:.1%}), "
                f"{self.data_samples_read} samples, "
                + ("each proven against the manifest" if proven else "not all proven against the manifest (see the checks)")
                + (f"; {self.data_bytes_fetched} bytes fetched from URLs" if self.data_bytes_fetched else "")
            )
        detection = self.detection()
        if detection:
            lines.append(
                "  a run with this fraction of forged segments, the last one left honest, would have been caught "
                "with probability: " + ", ".join(f"{k}: {v:.1%}" for k, v in detection.items())
                + " (a forged last segment: always)"
            )
        if self.distribution is not None:
            d = self.distribution
            lines.append(f"  {d['policy']} class: {d['class']} ({d['reason']})")
        if self.fetched:
            lines.append(f"  fetched: {self.fetched_bytes} bytes in {self.fetch_requests} requests from {len(self.fetched)} URLs")
        lines.extend(f"  note: {n}" for n in self.notes)
        if self.declared:
            lines.append("  declared, not verified (signed by the key holder; nothing here checks them):")
            lines.extend(f"    {path} = {value_text(value)}" for path, value in self.declared)
        return lines

    def to_display_json(self) -> dict[str, Any]:
        """``to_json`` with every string escaped (display.escape): the ``--json`` report, for tools that render it.

        ``to_json`` itself stays raw: it is the sandbox worker's answer, escaped once by the parent.
        """
        return escape_json(self.to_json())  # type: ignore[no-any-return]
