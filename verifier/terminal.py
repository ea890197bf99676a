"""The verdict and progress on a terminal: rich's tables and progress bars, plain text otherwise.

``rich`` is used only when the stream is a terminal and the ``terminal`` extra is installed; piped
or captured output is exactly ``Report.to_text()`` (stable for scripts and tests) and progress is one
final line per phase on stderr. Strings from the attestation or store are shown through
``display.escape`` (every non-printable or non-ASCII character as its code point) and as rich ``Text`` (never parsed
as markup).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import IO, Any

from trainwitness.display import escape
from trainwitness.verifier.render import replay_cost
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
    head = Text.assemble((f"{report.verdict}", f"bold {colour}"), "  ", escape(report.subject), "\n", "entry point ", escape(report.entry_point))
    if report.signer:
        head.append("\nsigned by " + escape(f"{report.signer} ({report.signer_key_id})"))
    if report.parent is not None:
        head.append("\nstarts from " + escape(f"{report.parent['mode']} of attestation {report.parent['attestation']}"))
    for name, frozen in sorted(report.inputs.items()):
        head.append("\nreads " + escape(f"frozen input {name}: weights {frozen['weights_digest']}"))
    console.print(Panel(head, title="trainwitness verify", border_style=colour))
    table = Table(show_header=True, header_style="bold", expand=True)
    table.add_column("", width=4)
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    for c in report.checks:
        table.add_row(Text("ok", style="green") if c.passed else Text("FAIL", style="bold red"), Text(escape(c.name)), Text(escape(c.detail)))
    console.print(table)
    # The same lines as the plain text (replay, bounds, data, detection, notes, the declared fields),
    # so that nothing the text report says is missing on a terminal.
    for line in report.summary_lines():
        console.print(Text(line.strip()))
    cost = replay_cost(report)
    if cost is not None:
        console.print(Text(
            f"reproduce: whole run ~{cost['estimate_seconds']:.1f} s of replay here; "
            + (f"training declared {report.declared_training_seconds:.1f} s (not verified)" if report.declared_training_seconds is not None else "training time not declared")
        ))


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
                tasks[url] = bars.add_task(escape(url.rsplit("/", 1)[-1])[:40], total=total, amount="")
            amount = f"{got / 2**20:.1f} MiB" + (f" of {total / 2**20:.1f} MiB" if total else "")
            bars.update(tasks[url], completed=got, total=total, amount=amount)

        yield segments, downloads
