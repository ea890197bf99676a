"""A distribution's answer: the Debian ML-Policy class of the weights, from what was verified.

Debian's Machine Learning Policy (https://salsa.debian.org/deeplearning-team/ml-policy, Mo Zhou)
sorts models into a *Free Model* (free licence on the model, free and obtainable training data and
software, reproducible), a *ToxicCandy* model (free licence on the model, but training data that is
unknown, not obtainable or not free) and a *Non-free* model (the model's own licence is not free).
"Free" is judged by the licence policy the auditor chose (``--policy``).

The class is computed from the audit, never from the declarations alone: a Free Model needs every
check of the audit to have passed (signature, commitments, final weights, code identity, the seeded
start, the data proven against the signed manifest, and the sampled segments replayed), so the
weights are known to come from the declared data; if the claim was not verified, the data behind the
weights is unknown, which is ToxicCandy at best.
"""

from __future__ import annotations

from typing import Any

from trainwitness.data.manifest import ManifestSummary
from trainwitness.verifier.report import Report

__all__ = ["ML_POLICY", "FREE_MODEL", "TOXIC_CANDY", "NON_FREE", "ml_policy_class"]

ML_POLICY = "Debian ML-Policy"
FREE_MODEL, TOXIC_CANDY, NON_FREE = "Free Model", "ToxicCandy", "Non-free"


def _is_local(uri: str) -> bool:
    return uri.startswith(("/", "~", "\\")) or uri.lower().startswith("file:") or (len(uri) > 2 and uri[1] == ":" and uri[2] in "\\/")


def ml_policy_class(report: Report, manifest: ManifestSummary | None) -> dict[str, Any]:
    """{"policy", "licence_policy", "class", "reason"} for an audit whose ``report.licences`` are filled."""
    rows = report.licences
    licence_policy = rows[0]["policy"] if rows else ""
    out = {"policy": ML_POLICY, "licence_policy": licence_policy}
    weights = next((r for r in rows if r["what"] == "weights"), None)
    if weights is None or not weights["passes"]:
        why = weights["reason"] if weights is not None else "the attestation could not be read"
        return {**out, "class": NON_FREE, "reason": f"the weights' own licence is not free under {licence_policy}: {why}"}
    failed = [c for c in report.checks if not c.passed and c.name != "policy"]
    if failed or not report.checks:
        first = failed[0] if failed else None
        detail = f"{first.name} failed: {first.detail}" if first is not None else "nothing was verified"
        return {**out, "class": TOXIC_CANDY,
                "reason": f"the weights' licence {weights['expression']} is free, but the training claim was not verified ({detail}), so the data behind the weights is unknown"}
    bad = [r for r in rows if r["what"] != "weights" and not r["passes"]]
    if bad:
        return {**out, "class": TOXIC_CANDY,
                "reason": f"the weights' licence is free, but training data is not: {bad[0]['reason']}"}
    sources = manifest.sources if manifest is not None else ()
    hidden = [s.name for s in sources if s.format != "tensors" and (s.uri is None or _is_local(s.uri))]
    if hidden:
        return {**out, "class": TOXIC_CANDY,
                "reason": f"the weights and data licences are free, but data source {', '.join(hidden)} declares no public place to obtain it"}
    replayed = len(report.segments)
    return {**out, "class": FREE_MODEL, "reason": (
        f"the weights ({weights['expression']}) and every training data source are under licences {licence_policy} accepts, "
        f"every source declares where to obtain it, and the training was verified: {replayed} of {report.segment_count} "
        f"segments replayed from the recomputed seeded start on data proven against the signed manifest. "
        "The training program's own licence is not attested: check it (its source tree digest was verified)"
    )}
