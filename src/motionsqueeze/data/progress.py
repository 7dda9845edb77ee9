"""Progress of long loops, for a terminal and for batch jobs alike.

On an interactive terminal a tqdm bar; otherwise (a batch job's log, a pipe) one plain line
every ``interval`` seconds and at the end, e.g.
``extracting: 1200/5000 videos (24%), 12.3 videos/s, about 5m09s left``, logged to the
``motionsqueeze.progress`` logger (the command line shows it on stderr).
"""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["progress", "LineProgress", "format_eta"]

_log = logging.getLogger("motionsqueeze.progress")

INTERVAL = 30.0
"""Seconds between progress lines when stderr is not a terminal."""


def format_eta(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


class LineProgress:
    """A tqdm-like counter that logs a line every ``interval`` seconds (``update``/``close``)."""

    def __init__(self, total: int, desc: str, unit: str, interval: float | None = None):
        self.total, self.desc, self.unit = total, desc, unit
        self.interval = INTERVAL if interval is None else interval
        self.n = 0
        self.start = self.last = time.monotonic()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last >= self.interval and self.n < self.total:
            self.last = now
            self._line(now)

    def close(self) -> None:
        if self.n:
            self._line(time.monotonic(), done=True)

    def _line(self, now: float, done: bool = False) -> None:
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        units = self.unit + ("es" if self.unit.endswith(("s", "sh", "ch", "x")) else "s")
        text = f"{self.desc}: {self.n}/{self.total} {units}"
        if self.total:
            text += f" ({100 * self.n / self.total:.0f}%)"
        text += f", {rate:.3g} {units}/s"
        if done:
            text += f", took {format_eta(elapsed)}"
        elif rate > 0:
            text += f", about {format_eta((self.total - self.n) / rate)} left"
        _log.info(text)


def progress(total: int, desc: str, unit: str = "item", enabled: bool = True, interval: float | None = None):
    """A tqdm bar on a terminal, :class:`LineProgress` otherwise, or ``None`` when disabled."""
    if not enabled:
        return None
    if sys.stderr.isatty():
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False)
    return LineProgress(total, desc, unit, interval)
