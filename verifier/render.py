"""The report people read: one self-contained HTML file (``verify --report r.html``) or Markdown (``r.md``).

The HTML opens with no network: the style is inline and every plot is an SVG drawn by matplotlib's
SVG backend (text as paths, so no font is needed) and inlined. Every string that came from signed
or stored input (subject, entry point, licences, source names, check details, notes) is shown
through ``shown``: ``display.escape`` (every control, bidi, invisible or non-ASCII character as its
code point), then HTML-escaped, so a hostile attestation can neither inject markup nor reorder what is read.

Sections, in order: verdict and checks; the run's timeline with the replayed segments marked; the
loss curve the store records (or "not recorded"); each replayed segment (and its distance against
the bound in bounded mode); detection probability against the number of segments replayed, for
1 %, 5 % and 10 % forged; data read against the dataset; licences against the policy, and the
distribution verdict; lineage; the cost to reproduce the whole run, estimated from the timed
replays, beside the training time the attestation declares (not verified).
"""

from __future__ import annotations

import html
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainwitness.commit.atomic import atomic_write
from trainwitness.display import escape, escape_markdown, value_text
from trainwitness.errors import MalformedInputError
from trainwitness.verifier.draw import detection_probability
from trainwitness.verifier.report import FORGED_FRACTIONS, Report

__all__ = ["shown", "render_html", "render_markdown", "write_report", "replay_cost"]

def shown(text: object) -> str:
    """``text`` for display in HTML: ``display.escape`` (code points for every control, bidi, invisible or
    non-ASCII character), then HTML-escaped, quotes included."""
    return html.escape(escape(text), quote=True)


# -- numbers ----------------------------------------------------------------------------------------


def replay_cost(report: Report) -> dict[str, float] | None:
    """The whole run's replay time on this machine, estimated from the timed replays (seconds per step x steps)."""
    steps = sum(s.last_step - s.first_step for s in report.segments)
    if not steps or not report.total_steps:
        return None
    seconds = sum(s.seconds for s in report.segments)
    per_step = seconds / steps
    return {"replayed_steps": steps, "replayed_seconds": seconds, "seconds_per_step": per_step, "estimate_seconds": per_step * report.total_steps}


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} B"


# -- plots (matplotlib, SVG backend, no global state) ----------------------------------------------


def _svg(draw: Callable[[Any], None], width: float = 7.0, height: float = 2.2) -> str:
    """A figure drawn by ``draw(axes)`` as inline SVG markup (no XML prolog), or a note if matplotlib is missing."""
    try:
        import matplotlib
        from matplotlib.figure import Figure
    except ImportError:
        return "<p class=note>(plot not drawn: matplotlib is not installed; pip install 'trainwitness[report]')</p>"
    with matplotlib.rc_context({"svg.fonttype": "path", "svg.hashsalt": "trainwitness", "font.size": 9}):
        figure = Figure(figsize=(width, height), layout="constrained")
        draw(figure.subplots())
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _timeline(report: Report) -> str:
    steps, sampled = report.checkpoint_steps, set(report.sampled)
    replayed = {s.index for s in report.segments}

    def draw(ax: Any) -> None:
        for i in range(len(steps) - 1):
            colour = "#2e7d32" if i in replayed else "#f9a825" if i in sampled else "#cfd8dc"
            ax.barh(0, steps[i + 1] - steps[i], left=steps[i], height=0.6, color=colour, edgecolor="white", linewidth=0.5)
        ax.scatter(steps, [0] * len(steps), marker="|", s=200, color="#37474f", zorder=3)
        ax.set_yticks([])
        ax.set_ylim(-0.45, 1.1)
        ax.set_xlabel("step (| = checkpoint)")
        ax.set_xlim(0, max(steps[-1], 1))
        from matplotlib.patches import Patch

        ax.legend(
            handles=[Patch(color="#2e7d32", label="replayed, matched"), Patch(color="#f9a825", label="drawn, not confirmed"),
                     Patch(color="#cfd8dc", label="not drawn")],
            loc="upper center", ncol=3, frameon=False, fontsize=8,
        )

    return _svg(draw, height=1.9)


def _loss_plot(losses: list[tuple[int, float]], report: Report) -> str:
    def draw(ax: Any) -> None:
        ax.plot([s for s, _ in losses], [v for _, v in losses], color="#1565c0", linewidth=1)
        for s in report.segments:
            ax.axvspan(s.first_step, s.last_step, color="#2e7d32", alpha=0.15, linewidth=0)
        ax.set_xlabel("step (shaded: replayed segments)")
        ax.set_ylabel("loss")

    return _svg(draw, height=2.4)


def _detection_plot(report: Report) -> str:
    m = report.segment_count

    def draw(ax: Any) -> None:
        ns = list(range(1, m + 1))
        for f, colour in zip(FORGED_FRACTIONS, ("#c62828", "#ef6c00", "#2e7d32"), strict=True):
            ax.plot(ns, [detection_probability(m, n, f) for n in ns], label=f"{f:.0%} of segments forged", color=colour)
        ax.axvline(len(report.segments), color="#37474f", linestyle="--", linewidth=1, label=f"this audit: N = {len(report.segments)}")
        ax.set_xlabel(f"N, segments replayed (of {m})")
        ax.set_ylabel("P(forgery caught)")
        ax.set_ylim(0, 1.02)
        ax.legend(loc="lower right", fontsize=8)

    return _svg(draw, height=2.6)


def _data_plot(report: Report) -> str:
    def draw(ax: Any) -> None:
        total, read = report.data_total_bytes, report.data_bytes_read
        ax.barh([1], [total], color="#cfd8dc", label="dataset (manifest)")
        ax.barh([0], [read], color="#1565c0", label="read and proven")
        ax.set_yticks([0, 1], ["read", "dataset"])
        ax.set_xlabel("bytes")
        ax.set_xlim(0, max(total, read, 1))

    return _svg(draw, height=1.4)


# -- HTML -------------------------------------------------------------------------------------------

_STYLE = """
body{font-family:system-ui,sans-serif;max-width:60em;margin:1.5em auto;padding:0 1em;color:#212121;line-height:1.4}
h1{margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.15em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#f5f5f5}.ok{color:#2e7d32;font-weight:bold}.fail{color:#c62828;font-weight:bold}
.verdict{font-size:1.6em;font-weight:bold;padding:.3em .6em;display:inline-block;border-radius:4px}
.ACCEPT{background:#e8f5e9;color:#1b5e20}.REJECT{background:#ffebee;color:#b71c1c}
.note{color:#616161}.declared{color:#6d4c41;font-style:italic}code{background:#f5f5f5;padding:0 .2em;word-break:break-all}
svg{max-width:100%;height:auto}
"""


def _rows(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _section(anchor: str, title: str, body: str) -> str:
    return f'<section id="{anchor}"><h2>{title}</h2>{body}</section>'


def render_html(report: Report, verdict: str | None = None) -> str:
    """The whole report as one HTML document (str); opens with no network.

    ``verdict``: a chain's verdict (ACCEPT only when every link is), when the report is its published link's.
    """
    verdict = verdict or report.verdict
    parts = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>trainwitness: {verdict} {shown(report.subject.split(' ')[0])}</title><style>{_STYLE}</style></head><body>",
        "<h1>trainwitness audit</h1>",
        f'<p><span class="verdict {verdict}">{verdict}</span></p>',
        f"<p>subject <code>{shown(report.subject)}</code><br>entry point <code>{shown(report.entry_point)}</code><br>"
        f"attestation <code>{shown(report.attestation)}</code></p>",
    ]
    checks = [[f'<span class="{"ok" if c.passed else "fail"}">{"ok" if c.passed else "FAIL"}</span>', shown(c.name), shown(c.detail)] for c in report.checks]
    parts.append(_section("checks", "Checks", _rows(["", "check", "detail"], checks)))

    # Timeline.
    if report.checkpoint_steps:
        body = _timeline(report) + (
            f"<p>{report.total_steps} steps, {len(report.checkpoint_steps)} checkpoints, {report.segment_count} segments; "
            f"drawn: {', '.join(str(i) for i in report.sampled) or 'none'} ({_draw_source(report)}).</p>"
        )
    else:
        body = "<p class=note>The attestation was not read far enough to know the run's shape.</p>"
    parts.append(_section("timeline", "Timeline of the run", body))

    # Loss curve.
    if report.losses:
        body = _loss_plot(report.losses, report) + (
            "<p>Each step's loss as committed in its batch leaf (proven against the signed root); in the replayed "
            "segments each loss was recomputed and compared, elsewhere it is the prover's.</p>")
    else:
        body = "<p>Loss: not recorded (the store's step records hold no per-step loss).</p>"
    parts.append(_section("loss", "Loss curve", body))

    # Segments.
    rows = []
    for s in report.segments:
        result = '<span class="ok">bitwise equal</span>' if s.distance is None else (
            f'<span class="ok">within bound</span>: distance {s.distance.overall:.3g} &le; bound {report.bound:.3g}'
            f" (worst tensor <code>{shown(s.distance.worst_tensor)}</code>: {s.distance.worst:.3g})"
        )
        rows.append([str(s.index), f"{s.first_step} &rarr; {s.last_step}", f"{s.seconds:.2f} s", result])
    failed_replay = [c for c in report.checks if c.name in ("replay", "initial-state") and not c.passed]
    body = _rows(["segment", "steps", "replay time", "result"], rows) if rows else "<p class=note>No segment was replayed.</p>"
    if failed_replay:
        body += f'<p class="fail">{shown(failed_replay[0].detail)}</p>'
    body += f"<p>Replay mode: {report.replay_mode}.</p>"
    if report.bound is not None:
        b = report.bounded_summary()
        body += (f'<p class="fail">Bounded mode is weaker than exact mode: a forger keeps up to {b["bound"]:.3g} of each '
                 f"segment's update as steering room ({b['steering_room']:.3g} over the run).</p>")
    parts.append(_section("segments", "Replayed segments", body))

    # Detection probability.
    if report.segment_count and report.segments:
        detection = report.detection()
        table = _rows(["forged fraction", "P(caught) by this audit"], [[k, f"{v:.1%}"] for k, v in detection.items()]) if detection else (
            "<p class=note>Not stated: the audit did not accept.</p>")
        body = _detection_plot(report) + table
    else:
        body = "<p class=note>No segment was replayed.</p>"
    parts.append(_section("detection", "Detection probability", body))

    # Data.
    if report.data_total_bytes:
        share = report.data_bytes_read / report.data_total_bytes
        body = _data_plot(report) + (
            f"<p>{_bytes(report.data_bytes_read)} of {_bytes(report.data_total_bytes)} ({share:.1%}) read, "
            f"{report.data_samples_read} samples, "
            + ("each proven against the signed manifest root.</p>" if report.data_proven() else "not all proven against the signed manifest root (see the checks).</p>")
        )
    else:
        body = "<p class=note>No data was read.</p>"
    if report.data_bytes_fetched:
        body += f"<p>Data fetched from URLs: {_bytes(report.data_bytes_fetched)} (against a dataset of {_bytes(report.data_total_bytes)}).</p>"
    if report.fetched:
        body += f"<p>Fetched from the network in all: {_bytes(report.fetched_bytes)} in {report.fetch_requests} requests.</p>"
    parts.append(_section("data", "Data read", body))

    # Licences and the distribution verdict.
    parts.append(_section("licences", "Licences against the policy", _licences_html(report)))

    # Lineage (issue 15 adds parent runs; this section lists them when the report has any).
    if report.lineage:
        body = _rows(["run", "relation", "verified"], [[shown(p.get("subject", "")), shown(p.get("relation", "")), shown(p.get("verified", ""))] for p in report.lineage])
    else:
        body = "<p>No parent run: the attestation starts from a seeded initialisation (recomputed and checked above).</p>"
    parts.append(_section("lineage", "Lineage", body))

    # Cost to reproduce.
    parts.append(_section("cost", "Cost to reproduce", _cost_html(report)))

    if report.notes:
        parts.append(_section("notes", "Notes", "<ul>" + "".join(f"<li>{shown(n)}</li>" for n in report.notes) + "</ul>"))
    if report.declared:
        rows = [[f"<code>{shown(path)}</code>", shown(value_text(value))] for path, value in report.declared]
        parts.append(_section(
            "declared", "Declared, not verified",
            '<p class="declared">Signed by the key holder; nothing in this audit checks them.</p>' + _rows(["field", "value"], rows),
        ))
    parts.append("<p class=note>Written by trainwitness verify. Declared values are the prover's and are marked as such; everything else was checked.</p>")
    parts.append("</body></html>\n")
    return "".join(parts)


def _draw_source(report: Report) -> str:
    if report.sample_seed is None:
        return "drawn from OS randomness"
    if report.seed_from_os:
        return f"drawn from OS randomness, seed {report.sample_seed} to repeat the audit"
    return f"the auditor's seed {report.sample_seed}"


def _licences_html(report: Report) -> str:
    if not report.licences:
        return "<p class=note>No licence policy was given (<code>--policy</code>).</p>"
    rows = [
        [shown(r["what"]), f"<code>{shown(r['expression'])}</code>", shown(r.get("osi", "")), shown(r.get("fsf_libre", "")),
         f'<span class="{"ok" if r["passes"] else "fail"}">{"passes" if r["passes"] else "fails"}</span> {shown(r.get("reason", ""))}']
        for r in report.licences
    ]
    body = _rows(["", "licence (SPDX)", "OSI approved", "FSF libre", "policy"], rows)
    if report.distribution is not None:
        d = report.distribution
        body += f"<p><b>{shown(d['policy'])}: {shown(d['class'])}</b> &mdash; {shown(d['reason'])}</p>"
    return body


def _cost_html(report: Report) -> str:
    cost = replay_cost(report)
    rows = []
    if cost is not None:
        rows.append([
            "whole run replayed on this machine (estimate)", _duration(cost["estimate_seconds"]),
            f"{cost['seconds_per_step'] * 1000:.1f} ms per step over the {cost['replayed_steps']} steps replayed &times; {report.total_steps} steps",
        ])
    declared = report.declared_training_seconds
    rows.append([
        "training, as the attestation declares it", _duration(declared) if declared is not None else "not declared",
        '<span class="declared">declared by the prover, not verified</span>',
    ])
    return _rows(["", "time", "how"], rows)


# -- Markdown ---------------------------------------------------------------------------------------


def render_markdown(report: Report, verdict: str | None = None) -> str:
    """The report as Markdown for a bug tracker: the same sections, tables instead of plots."""
    lines = [f"# trainwitness audit: **{verdict or report.verdict}**", "", f"- subject: {escape_markdown(report.subject)}", f"- entry point: {escape_markdown(report.entry_point)}", ""]
    lines += ["## Checks", "", "| | check | detail |", "|---|---|---|"]
    lines += [f"| {'ok' if c.passed else '**FAIL**'} | {escape_markdown(c.name)} | {escape_markdown(c.detail)} |" for c in report.checks]
    lines += ["", "## Timeline of the run", ""]
    if report.checkpoint_steps:
        marks = "".join("#" if i in {s.index for s in report.segments} else "?" if i in report.sampled else "." for i in range(report.segment_count))
        lines += [f"{report.total_steps} steps, {report.segment_count} segments; replayed `#`, drawn but not confirmed `?`, not drawn `.`:", "", f"`{marks}`"]
    lines += ["", "## Loss curve", "", "recorded: " + (f"{len(report.losses)} steps, last {report.losses[-1][1]:.4g}" if report.losses else "not recorded")]
    lines += ["", "## Replayed segments", "", "| segment | steps | seconds | result |", "|---|---|---|---|"]
    for s in report.segments:
        result = "bitwise equal" if s.distance is None else f"distance {s.distance.overall:.3g} <= bound {report.bound:.3g}"
        lines.append(f"| {s.index} | {s.first_step}-{s.last_step} | {s.seconds:.2f} | {result} |")
    lines += ["", "## Detection probability", ""]
    detection = report.detection()
    lines += [f"- {k} forged: caught with probability {v:.1%}" for k, v in detection.items()] or ["not stated (the audit did not accept)"]
    lines += ["", "## Data read", ""]
    if report.data_total_bytes:
        lines.append(f"{report.data_bytes_read} of {report.data_total_bytes} bytes ({report.data_bytes_read / report.data_total_bytes:.1%}), {report.data_samples_read} samples, " + ("each proven" if report.data_proven() else "not all proven (see the checks)"))
    if report.fetched:
        lines.append(f"fetched from the network: {report.fetched_bytes} bytes in {report.fetch_requests} requests")
    lines += ["", "## Licences against the policy", ""]
    if report.licences:
        lines += ["| | licence | OSI | FSF libre | policy |", "|---|---|---|---|---|"]
        lines += [f"| {escape_markdown(r['what'])} | {escape_markdown(r['expression'])} | {escape_markdown(r.get('osi', ''))} | {escape_markdown(r.get('fsf_libre', ''))} | {'passes' if r['passes'] else 'fails'} {escape_markdown(r.get('reason', ''))} |" for r in report.licences]
        if report.distribution is not None:
            d = report.distribution
            lines += ["", f"**{escape_markdown(d['policy'])}: {escape_markdown(d['class'])}**: {escape_markdown(d['reason'])}"]
    else:
        lines.append("no licence policy was given")
    lines += ["", "## Lineage", "", "no parent run" if not report.lineage else "; ".join(escape_markdown(p.get("subject", "")) for p in report.lineage)]
    lines += ["", "## Cost to reproduce", ""]
    cost = replay_cost(report)
    if cost is not None:
        lines.append(f"- whole run replayed on this machine (estimate): {_duration(cost['estimate_seconds'])}")
    declared = report.declared_training_seconds
    lines.append(f"- training, as declared by the prover (not verified): {_duration(declared) if declared is not None else 'not declared'}")
    if report.notes:
        lines += ["", "## Notes", ""] + [f"- {escape_markdown(n)}" for n in report.notes]
    if report.declared:
        lines += ["", "## Declared, not verified", "", "Signed by the key holder; nothing in this audit checks them.", ""]
        lines += [f"- {escape_markdown(path)} = {escape_markdown(value_text(value))}" for path, value in report.declared]
    return "\n".join(lines) + "\n"


def write_report(report: Report, path: Path, verdict: str | None = None) -> None:
    """Write ``path`` as HTML (``.html``/``.htm``) or Markdown (``.md``), chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        text = render_html(report, verdict)
    elif suffix in (".md", ".markdown"):
        text = render_markdown(report, verdict)
    else:
        raise MalformedInputError(f"--report {path}: the name must end in .html or .md")
    atomic_write(path, text.encode("utf-8"))
