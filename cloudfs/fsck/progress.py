"""Running fsck's requests in parallel, and the progress line an operator watches on a TTY.

`parallel(items, fn, limit=...)` runs `fn(item)` for every item with `limit` workers pulling
from one iterator: at most `limit` items in flight, no task per item (a filesystem has millions
of files). Each worker's Swift requests then queue on the store's own connection limit, so
nested parallelism (the segments of one manifest) never exceeds what the store allows.

`Progress` is a status line on stderr (wiring.statusline: only on a terminal):

    fsck: checking contents 4512/10002 (45 %), 812/s, Swift 830 requests/s, ETA 7 s
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable
from typing import TextIO, TypeVar

import trio

from cloudfs.status import _ago
from wiring.statusline import StatusLine

T = TypeVar("T")


class Progress(StatusLine):
    """The progress line of one fsck run (nothing when stderr is not a terminal)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool | None = None,
                 requests: Callable[[], int] = lambda: 0) -> None:
        super().__init__(stream, enabled=enabled)
        self._requests = requests  # Swift requests sent so far
        self._label = ""
        self._total: int | None = None
        self._done = 0
        self._started = 0.0
        self._requests_at_start = 0

    def phase(self, label: str, total: int | None = None) -> None:
        """Start counting a new step (`total` items, if known)."""
        self._label, self._total, self._done = label, total, 0
        self._started = time.monotonic()
        self._requests_at_start = self._requests()
        if self.due(force=True):
            self.draw(self.line())

    def advance(self, n: int = 1) -> None:
        self._done += n
        if self.due():
            self.draw(self.line())

    def line(self) -> str:
        """The text of the line now."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        text = f"fsck: {self._label} {self._done}"
        if self._total:
            text += f"/{self._total} ({100 * self._done // self._total} %)"
        rate = self._done / elapsed
        requests = (self._requests() - self._requests_at_start) / elapsed
        text += f", {rate:.0f}/s, Swift {requests:.0f} requests/s"
        if self._total and rate > 0 and elapsed > 1:
            text += f", ETA {_ago((self._total - self._done) / rate)}"
        return text


async def parallel(items: Iterable[T], fn: Callable[[T], Awaitable[None]], *, limit: int,
                   progress: Progress | None = None) -> None:
    """`fn(item)` for every item, `limit` at a time (`fn` handles its own expected errors:
    anything it raises cancels the rest and propagates)."""
    pending = iter(items)

    async def worker() -> None:
        for item in pending:  # shared: next() runs between checkpoints, so never twice
            await fn(item)
            if progress is not None:
                progress.advance()

    async with trio.open_nursery() as nursery:
        for _ in range(max(1, limit)):
            nursery.start_soon(worker)
