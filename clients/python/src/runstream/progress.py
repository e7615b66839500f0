"""A small progress bar on stderr, for the flush at exit and for sync."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO


def quiet() -> bool:
    """Whether the user asked for no progress output (``RUNSTREAM_QUIET=1``)."""
    return os.environ.get("RUNSTREAM_QUIET", "").lower() in ("1", "true", "yes")


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


class ProgressBar:
    """``label [#####.....]  45%  1.2 MB of 2.6 MB``, redrawn in place at most ten times a second.

    On a terminal the bar is redrawn as work is done; elsewhere (logs, CI) only the final line is
    written, so log files do not fill with carriage returns.
    """

    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self.label = label
        self.total = max(total, 0)
        self.stream = stream if stream is not None else sys.stderr
        self.done = 0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = 0.0
        self._shown = False
        self._start = time.monotonic()

    def update(self, done: int) -> None:
        self.done = min(max(done, 0), self.total) if self.total else done
        now = time.monotonic()
        if self._tty and now - self._last >= 0.1:
            self._last = now
            self._draw("\r")

    def _line(self) -> str:
        width = 30
        frac = self.done / self.total if self.total else 1.0
        filled = int(frac * width)
        return (
            f"{self.label} [{'#' * filled}{'.' * (width - filled)}] {frac * 100:3.0f}%  "
            f"{human_bytes(self.done)} of {human_bytes(self.total)}  "
            f"{time.monotonic() - self._start:.1f}s"
        )

    def _draw(self, prefix: str) -> None:
        try:
            self.stream.write(prefix + self._line())
            self.stream.flush()
            self._shown = True
        except (OSError, ValueError):  # stderr closed: progress is not worth an error
            pass

    def close(self) -> None:
        self._draw("\r" if self._tty else "")
        try:
            self.stream.write("\n")
            self.stream.flush()
        except (OSError, ValueError):
            pass
