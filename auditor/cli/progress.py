"""Progress of the draws: a live bar on a terminal, plain lines in a CI log.

A CI log (stderr not a terminal) cannot redraw a bar, so it gets one line every `every_draws` draws
or `every_seconds` seconds, whichever comes first, and one at the last draw: draws done, each task's
running p̂ and the ETA.
"""

from __future__ import annotations

import time
from typing import IO, Any


def _clock(seconds: float) -> str:
    seconds = max(int(round(seconds)), 0)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class LineProgress:
    """Plain progress lines for non-terminal output."""

    def __init__(self, stream: IO[str], every_seconds: float = 30.0, every_draws: int | None = None) -> None:
        self.stream = stream
        self.every_seconds = every_seconds
        self.every_draws = every_draws
        self.total = 0
        self.done = 0
        self._started = 0.0
        self._last_time = 0.0
        self._last_done = 0

    def start(self, total: int, label: str) -> None:
        self.total = total
        self._started = self._last_time = time.monotonic()
        self.stream.write(f"{label}: up to {total} draws; a progress line every {self.every_seconds:g} s\n")
        self.stream.flush()

    def draw(self, draw: int, means: dict[str, float]) -> None:
        self.done += 1
        now = time.monotonic()
        every = self.every_draws or max(1, self.total // 10)
        last = draw + 1 >= self.total
        if not (last or self.done - self._last_done >= every or now - self._last_time >= self.every_seconds):
            return
        self._last_time, self._last_done = now, self.done
        elapsed = now - self._started
        left = max(self.total - (draw + 1), 0)
        eta = elapsed / self.done * left
        scores = "  ".join(f"{name} p̂={value:.3f}" for name, value in means.items())
        self.stream.write(f"draws {draw + 1}/{self.total}  {scores}  elapsed {_clock(elapsed)}  ETA {_clock(eta)}\n")
        self.stream.flush()


def rich_bar(console: Any) -> Any:
    """The terminal bar: draws, running p̂ per task, elapsed and ETA."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]draws"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[scores]}"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console,
    )
