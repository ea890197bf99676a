"""A one-line progress display on stderr for long steps (silent when stderr is not a terminal)."""

from __future__ import annotations

import sys
from collections.abc import Callable

__all__ = ["progress_line"]


def progress_line(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if sys.stderr.isatty():
            end = "\n" if done >= total else ""
            print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)
        elif done >= total:
            print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)

    return show
