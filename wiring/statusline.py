"""A status line on a terminal: one line of stderr rewritten in place (`\\r`), redrawn at most
five times a second, and nothing at all when the stream is not a terminal (a log file, a pipe,
the journal). ccd's passes and `cloudfs fsck` show their progress with it.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

#: Seconds between two redraws.
REDRAW = 0.2


class StatusLine:
    """One line, rewritten in place.

    Attributes:
        enabled: whether anything is drawn (the stream is a terminal, unless told otherwise).
    """

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None) -> None:
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty() if enabled is None else enabled
        self._drawn = 0.0
        self._width = 0

    def due(self, *, force: bool = False) -> bool:
        """Whether to draw now (enabled, and forced or not drawn for REDRAW seconds)."""
        if not self.enabled:
            return False
        now = time.monotonic()
        if not force and now - self._drawn < REDRAW:
            return False
        self._drawn = now
        return True

    def draw(self, text: str) -> None:
        """Replace the line by `text` (call when `due()`)."""
        self._stream.write("\r" + text.ljust(self._width))
        self._stream.flush()
        self._width = max(self._width, len(text))

    def clear(self) -> None:
        """Erase the line (before a report is printed)."""
        if self.enabled and self._width:
            self._stream.write("\r" + " " * self._width + "\r")
            self._stream.flush()
            self._width = 0
