"""The verdict: every check with its outcome, the segments replayed, and how sure the sample makes us."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .replay import SegmentResult
from .sampling import detection_probability

__all__ = ["Check", "Report", "FORGED_FRACTIONS"]

FORGED_FRACTIONS = (0.01, 0.05, 0.10)


@dataclass(frozen=True)
class Check:
    name: str
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
    notes: list[str] = field(default_factory=list)
    checkpoint_bytes_read: int = 0
    data_bytes_read: int = 0  # bytes of sample records read from the auditor's copy and proven
    data_samples_read: int = 0
    data_total_bytes: int = 0  # the whole dataset, as the manifest declares it

    @property
    def accepted(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "ACCEPT" if self.accepted else "REJECT"

    def passed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, True, detail))

    def failed(self, name: str, detail: str) -> None:
        self.checks.append(Check(name, False, detail))

    def detection(self) -> dict[str, float]:
        """Only meaningful for an accepted run: P(a forgery of fraction f would have been caught)."""
        if not self.accepted or not self.segments:
            return {}
        return {f"{f:.0%}": detection_probability(self.segment_count, len(self.segments), f) for f in FORGED_FRACTIONS}

    def to_json(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "attestation": self.attestation,
            "subject": self.subject,
            "entry_point": self.entry_point,
            "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks],
            "segments": {
                "total": self.segment_count,
                "sampled": self.sampled,
                "sample_seed": self.sample_seed,
                "replayed": [
                    {"index": s.index, "steps": [s.first_step, s.last_step], "seconds": round(s.seconds, 4)}
                    for s in self.segments
                ],
            },
            "detection_probability": self.detection(),
            "checkpoint_bytes_read": self.checkpoint_bytes_read,
            "data": {
                "bytes_read": self.data_bytes_read,
                "samples_read": self.data_samples_read,
                "total_bytes": self.data_total_bytes,
            },
            "notes": self.notes,
        }

    def to_text(self) -> str:
        lines = [f"trainwitness verify: {self.verdict}", f"  subject      {self.subject}", f"  entry point  {self.entry_point}"]
        for c in self.checks:
            lines.append(f"  [{'ok' if c.passed else 'FAIL'}] {c.name}: {c.detail}")
        if self.segment_count:
            how = "OS randomness" if self.sample_seed is None else f"seed {self.sample_seed}"
            lines.append(
                f"  replayed {len(self.segments)} of {self.segment_count} segments (drawn from {how}), "
                f"bitwise equal: {len(self.segments)}; checkpoint bytes read: {self.checkpoint_bytes_read}"
            )
        if self.data_total_bytes:
            share = self.data_bytes_read / self.data_total_bytes
            lines.append(
                f"  data read: {self.data_bytes_read} of {self.data_total_bytes} bytes ({share:.1%}), "
                f"{self.data_samples_read} samples, each proven against the manifest"
            )
        detection = self.detection()
        if detection:
            lines.append(
                "  a run with this fraction of forged segments would have been caught with probability: "
                + ", ".join(f"{k}: {v:.1%}" for k, v in detection.items())
            )
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)
