"""A one-line progress bar on standard error, for the long commands (consent import, scrub)."""

from __future__ import annotations

import time
from typing import TextIO

WIDTH = 30


class Progress:
    """Redrawn at most four times a second, and only when standard error is a terminal, so that
    logs and pipes get the summary alone."""

    def __init__(self, err: TextIO) -> None:
        self._err = err
        self._tty = err.isatty()
        self._start = time.monotonic()
        self._shown = 0.0

    def elapsed(self) -> float:
        return time.monotonic() - self._start

    def show(self, done: int, what: str, share: float | None = None, extra: str = "") -> None:
        """`done` items of `what` so far; `share` of the whole when it is known, else the bar just moves."""
        now = time.monotonic()
        if not self._tty or now - self._shown < 0.25:
            return
        self._shown = now
        rate = done / max(now - self._start, 1e-6)
        if share is None:
            bar, percent = "#" * (int(now - self._start) % (WIDTH + 1)), ""
        else:
            share = min(max(share, 0.0), 1.0)
            bar, percent = "#" * int(share * WIDTH), f"{share:4.0%} "
        self._err.write(f"\r[{bar:<{WIDTH}}] {percent}{done:>11,} {what}{extra} {rate:>9,.0f}/s")
        self._err.flush()

    def done(self) -> None:
        if self._tty and self._shown:
            self._err.write("\n")
            self._err.flush()
