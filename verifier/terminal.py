"""The verdict and progress on a terminal: rich's tables and progress bars, plain text otherwise.

``rich`` is used only when the stream is a terminal and the ``terminal`` extra is installed; piped
or captured output is exactly ``Report.to_text()`` (stable for scripts and tests) and progress is one
final line per phase on stderr. Strings from the attestation or store are shown through
``render.shown_plain`` (control and bidi characters as code points) and as rich ``Text`` (never parsed
as markup).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from trainwitness.verifier.render import replay_cost, shown_plain
from trainwitness.verifier.report import Report

__all__ = ["print_report", "progress_displays"]


def _rich_console(stream: IO[str]) -> Any | None:
    if not stream.isatty():
        return None
    try:
        from rich.console import Console
    except ImportError:
        return None
    return Console(file=stream, highlight=False)


def print_report(report: Report, stream: IO[str] | None = None) -> None:
    """The verdict: a rich summary on a terminal, ``report.to_text()`` otherwise."""
    stream = stream if stream is not None else sys.stdout
    console = _rich_console(stream)
    if console is None:
        print(report.to_text(), file=stream)
        return
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    colour = "green" if report.accepted else "red"
    head = Text.assemble((f"{report.verdict}", f"bold {colour}"), "  ", shown_plain(report.subject), "\n", "entry point ", shown_plain(report.entry_point))
    console.print(Panel(head, title="trainwitness verify", border_style=colour))
    table = Table(show_header=True, header_style="bold", expand=True)
    table.add_column("", width=4)
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for c in report.checks:
        table.add_row(Text("ok", style="green") if c.passed else Text("FAIL", style="bold red"), Text(shown_plain(c.name)), Text(shown_plain(c.detail)))
    console.print(table)
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column(overflow="fold")
    if report.segment_count:
        facts.add_row("segments", f"{len(report.segments)} of {report.segment_count} replayed ({report.replay_mode})")
    detection = report.detection()
    if detection:
        facts.add_row("detection", ", ".join(f"{k} forged: {v:.1%}" for k, v in detection.items()))
    if report.data_total_bytes:
        facts.add_row("data read", f"{report.data_bytes_read} of {report.data_total_bytes} bytes ({report.data_bytes_read / report.data_total_bytes:.1%})")
    if report.fetched:
        facts.add_row("fetched", f"{report.fetched_bytes} bytes in {report.fetch_requests} requests")
    cost = replay_cost(report)
    if cost is not None:
        facts.add_row("reproduce", f"whole run ~{cost['estimate_seconds']:.1f} s of replay here; "
                      + (f"training declared {report.declared_training_seconds:.1f} s (not verified)" if report.declared_training_seconds is not None else "training time not declared"))
    if report.distribution is not None:
        d = report.distribution
        facts.add_row(shown_plain(d["policy"]), Text(f"{d['class']}: {shown_plain(d['reason'])}"))
    for note in report.notes:
        facts.add_row("note", Text(shown_plain(note)))
    console.print(facts)


@contextlib.contextmanager
def progress_displays(stream: IO[str] | None = None) -> Iterator[tuple[Callable[[int, int], None], Callable[[str, int, int | None], None]]]:
    """(segments progress, download progress) callbacks: rich bars on a terminal, else one line per phase when done."""
    stream = stream if stream is not None else sys.stderr
    console = _rich_console(stream)
    if console is None:
        fetched: dict[str, int] = {}

        def segments(done: int, total: int) -> None:
            if done >= total:
                print(f"segments: {done}/{total}", file=stream, flush=True)

        def downloads(url: str, got: int, total: int | None) -> None:
            fetched[url] = got

        yield segments, downloads
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[amount]}"), TimeElapsedColumn(),
                  console=console) as bars:
        tasks: dict[str, Any] = {}

        def segments(done: int, total: int) -> None:
            if "segments" not in tasks:
                tasks["segments"] = bars.add_task("replaying segments", total=total, amount="")
            bars.update(tasks["segments"], completed=done, total=total, amount=f"{done}/{total}")

        def downloads(url: str, got: int, total: int | None) -> None:
            if url not in tasks:
                tasks[url] = bars.add_task(shown_plain(url.rsplit("/", 1)[-1])[:40], total=total, amount="")
            amount = f"{got / 2**20:.1f} MiB" + (f" of {total / 2**20:.1f} MiB" if total else "")
            bars.update(tasks[url], completed=got, total=total, amount=amount)

        yield segments, downloads
