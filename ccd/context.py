"""The resources every pass works with: the namespace, the Swift store, the layout, the grace.

`open_context(cfg)` opens them from the configuration (wiring.filesystem), which turns every
way that can fail at start (missing setting, no database, Swift unreachable, containers
missing) into one `SetupError` line, printed by the CLI with exit status 2.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

import trio

from ccd.report import Progress
from seqwrite import Layout, SwiftStore
from sqlfsn import Namespace
from wiring.config import Config
from wiring.errors import SetupError
from wiring.filesystem import open_filesystem

log = logging.getLogger(__name__)

# How long `open_context` retries a Swift that does not answer before giving up: a daemon
# started while Swift is down should say so quickly (systemd restarts it), not after the
# full retry deadline of a request.
OPEN_DEADLINE = 30.0
NS_PER_S = 1_000_000_000
T = TypeVar("T")


class CcdError(SetupError):
    """ccd cannot start as asked: a one-line message naming the cause (exit status 2)."""


@dataclass
class Context:
    """What a pass needs.

    Attributes:
        ns: the namespace (sqlfsn); only short synchronous calls, from the trio thread.
        store: the Swift store (already opened).
        layout: where the filesystem's objects live.
        grace: seconds; what is younger (or claimed / heartbeated more recently) is kept.
        concurrency: Swift requests a pass keeps in flight.
        progress: the TTY progress line (disabled when not on a terminal).
    """

    ns: Namespace
    store: SwiftStore
    layout: Layout
    grace: float = 86400.0
    concurrency: int = 8
    progress: Progress = field(default_factory=lambda: Progress(enabled=False))

    def since_ns(self, now: float, seconds: float | None = None) -> int:
        """`now - seconds` (default: the grace) in integer nanoseconds, as sqlfsn wants."""
        return int((now - (self.grace if seconds is None else seconds)) * NS_PER_S)


@asynccontextmanager
async def open_context(cfg: Config, *, grace: float | None = None,
                       progress: Progress | None = None) -> AsyncIterator[Context]:
    """Open the filesystem named by `cfg` (wiring.filesystem: one SetupError line for every
    way that can fail); close it at exit."""
    async with open_filesystem(cfg, open_deadline=min(OPEN_DEADLINE, cfg.retry_deadline)) as fs:
        yield Context(fs.ns, fs.store, fs.layout, cfg.grace if grace is None else grace,
                      concurrency=max(1, cfg.max_connections // 2),
                      progress=progress or Progress(enabled=False))


async def for_each(ctx: Context, items: Sequence[T], fn: Callable[[T], Awaitable[None]], *,
                   label: str | None = None, limit: int | None = None) -> None:
    """Run `fn(item)` for every item, `limit` (default: ctx.concurrency) at a time, showing
    progress on a terminal as `label: done/total`."""
    limiter = trio.CapacityLimiter(limit or ctx.concurrency)
    done = 0

    async def one(item: T) -> None:
        nonlocal done
        async with limiter:
            await fn(item)
        done += 1
        if label:
            ctx.progress.show(label, done, len(items))

    try:
        async with trio.open_nursery() as nursery:
            for item in items:
                nursery.start_soon(one, item)
    except BaseExceptionGroup as group:
        raise sole_error(group) from None
    if label:
        ctx.progress.show(label, done, len(items), force=True)
        ctx.progress.clear()


def sole_error(group: BaseExceptionGroup) -> BaseException:
    """The one real exception in a nursery's group (siblings cancelled because of it are
    dropped), so callers catch StoreError & co. as such; the group itself if there are
    several, or only cancellations."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for sub in exc.exceptions:
                walk(sub)
        elif not isinstance(exc, trio.Cancelled):
            leaves.append(exc)

    walk(group)
    return leaves[0] if len(leaves) == 1 else group
