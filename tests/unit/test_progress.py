"""The training progress line: rate, ETA and loss; plain lines every few seconds when stderr is a log file."""

from __future__ import annotations

import io

from trainwitness.progress import StepProgress


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_log_file_gets_a_plain_line_every_few_seconds_and_one_at_the_end() -> None:
    clock, log = _Clock(), io.StringIO()
    progress = StepProgress(total=100, stream=log, every=5.0, clock=clock)
    for step in range(1, 101):
        clock.now += 0.25  # 4 steps per second
        progress.update(step, lambda s=step: 2.0 / s)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and "\033" not in log.getvalue()
    assert lines[0] == "step 1/100  loss 2"  # the first step: no rate yet
    assert lines[-1].startswith("step 100/100  4 steps/s  ETA 0:00  loss 0.02")
    assert 5 <= len(lines) <= 7  # 25 s of training: one line per 5 s, and the last
    assert any(line.startswith("step 41/100  4 steps/s  ETA 0:14  loss 0.048") for line in lines)


def test_the_loss_is_read_only_when_a_line_is_shown() -> None:
    clock, reads = _Clock(), []
    progress = StepProgress(total=1000, stream=io.StringIO(), every=5.0, clock=clock)

    def loss() -> float:
        reads.append(1)
        return 0.5

    for step in range(1, 1001):
        clock.now += 0.01
        progress.update(step, loss)
    assert len(reads) == 3  # the first line, one 5 s later, the last: a device loss is synchronised that rarely


def test_slow_steps_show_seconds_per_step_and_a_long_eta() -> None:
    clock, log = _Clock(), io.StringIO()
    progress = StepProgress(total=10_000, stream=log, clock=clock)
    progress.update(1, "nan")
    clock.now += 20.0
    progress.update(11, 1.5)
    assert log.getvalue().splitlines()[-1] == "step 11/10000  2 s/step  ETA 5:32:58  loss 1.5"
