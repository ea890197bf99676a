"""Progress on stderr: a one-line display on a terminal, plain lines every few seconds in a log file."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["progress_line", "StepProgress"]


def progress_line(label: str) -> Callable[[int, int], None]:
    def show(done: int, total: int) -> None:
        if sys.stderr.isatty():
            end = "\n" if done >= total else ""
            print(f"\r{label}: {done}/{total}", end=end, file=sys.stderr, flush=True)
        elif done >= total:
            print(f"{label}: {done}/{total}", file=sys.stderr, flush=True)

    return show


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else f"{seconds // 60}:{seconds % 60:02d}"


class StepProgress:
    """``step 120/560  4.1 steps/s  ETA 1:47  loss 0.4123`` for training.

    On a terminal the line is redrawn at most ``refresh`` seconds apart; otherwise (a log file,
    a pipe) a plain line is written every ``every`` seconds, and one at the end. The rate counts
    the steps of this process only (a resumed run starts counting at its resume point).
    """

    def __init__(
        self, total: int, label: str = "step", stream: TextIO | None = None, every: float = 5.0, refresh: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total, self.label = total, label
        self._stream = stream if stream is not None else sys.stderr
        self._tty = bool(getattr(self._stream, "isatty", lambda: False)())
        self._every = refresh if self._tty else every
        self._clock = clock
        self._started: tuple[float, int] | None = None
        self._shown = float("-inf")

    def line(self, done: int, loss: float | str | None) -> str:
        now = self._clock()
        if self._started is None:
            self._started = (now, done)
        elapsed, counted = now - self._started[0], done - self._started[1]
        rate = counted / elapsed if elapsed > 0 and counted > 0 else None
        parts = [f"{self.label} {done}/{self.total}"]
        if rate is not None:
            parts.append(f"{rate:.3g} steps/s" if rate >= 1 else f"{1 / rate:.3g} s/step")
            parts.append(f"ETA {_duration((self.total - done) / rate)}")
        if isinstance(loss, float):
            parts.append(f"loss {loss:.4g}")
        elif loss is not None:
            parts.append(f"loss {loss}")
        return "  ".join(parts)

    def update(self, done: int, loss: Callable[[], float | str | None] | float | str | None = None) -> None:
        """``done`` steps finished; ``loss`` the last one's (a callable is only called when a line is shown)."""
        now = self._clock()
        if self._started is None:
            self._started = (now, done)
        final = done >= self.total
        if not final and now - self._shown < self._every:
            return
        self._shown = now
        text = self.line(done, loss() if callable(loss) else loss)
        if self._tty:
            print(f"\r{text}\033[K", end="\n" if final else "", file=self._stream, flush=True)
        else:
            print(text, file=self._stream, flush=True)
