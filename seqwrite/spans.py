"""Streaming a sequence of byte ranges of Swift objects, in order, with bounded memory.

`stream_spans` reads the ranges with ranged GETs through `SwiftStore.get` (so every request
has the store's pool, limiter, retries and deadline), keeps up to `ahead` chunks of at most
`chunk` bytes and `budget` bytes in all in flight or waiting, and hands the bytes to a sink
strictly in order. Many small ranges (a file appended 1000 times) thus cost about
1000 / `ahead` round trips, and one big range streams at several GETs in parallel. Holes
(spans without an object) become zeros without a request. A GET that answers fewer bytes
than asked fails the stream: a span must name bytes that exist.

Used by ccd to re-store a file made of many pieces as one content (ccd/settle.py); it lives
here because seqwrite is the only package that talks to Swift.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass

import trio

from seqwrite.errors import StoreError
from seqwrite.store import SwiftStore

log = logging.getLogger(__name__)

CHUNK = 4 << 20  # bytes per GET at most (the Writer's chunk: its hand-offs stay whole)
AHEAD = 16  # chunks in flight or waiting for the sink (small ranges: latency-bound)
BUDGET = 24 << 20  # bytes in flight or waiting: memory <= BUDGET + CHUNK (the one in the sink)


@dataclass(frozen=True, slots=True)
class Span:
    """`length` bytes of object `container/name` from `offset`; `container` None: a hole of
    `length` zero bytes."""

    container: str | None
    name: str
    offset: int
    length: int


@dataclass(slots=True)
class _Part:
    span: Span
    done: trio.Event
    data: bytes = b""
    error: BaseException | None = None


def _chunks(spans: Sequence[Span], chunk: int) -> Iterator[Span]:
    for span in spans:
        for off in range(0, span.length, chunk):
            yield Span(span.container, span.name, span.offset + off,
                       min(chunk, span.length - off))


class _Window:
    """Admission of chunks: at most `count` outstanding, and at most `budget` bytes unless
    nothing is outstanding (one chunk always fits). One producer waits; the consumer frees."""

    def __init__(self, count: int, budget: int) -> None:
        self.count, self.budget = count, budget
        self.outstanding = self.nbytes = 0
        self._freed = trio.Event()

    async def admit(self, n: int) -> None:
        while self.outstanding >= self.count or (
                self.outstanding and self.nbytes + n > self.budget):
            await self._freed.wait()
        self.outstanding += 1
        self.nbytes += n

    def free(self, n: int) -> None:
        self.outstanding -= 1
        self.nbytes -= n
        self._freed.set()
        self._freed = trio.Event()


async def stream_spans(store: SwiftStore, spans: Sequence[Span],
                       sink: Callable[[bytes], Awaitable[None]], *, chunk: int = CHUNK,
                       ahead: int = AHEAD, budget: int = BUDGET) -> int:
    """Call `sink` with the bytes of `spans`, in order (one call per chunk); returns the
    number of bytes. Raises the first StoreError (or the sink's exception); nothing more
    is handed to the sink after a failure."""
    if chunk <= 0 or ahead <= 0 or budget <= 0:
        raise ValueError("chunk, ahead and budget must be positive")
    for span in spans:
        if span.length < 0 or span.offset < 0:
            raise ValueError(f"bad span {span!r}")
    window = _Window(ahead, budget)
    send, recv = trio.open_memory_channel[_Part](ahead)
    total = 0
    failure: BaseException | None = None

    async def fetch(part: _Part) -> None:
        span = part.span
        try:
            if span.container is None:
                part.data = bytes(span.length)
            else:
                part.data = await store.get(span.container, span.name, offset=span.offset,
                                            length=span.length)
                if len(part.data) != span.length:
                    raise StoreError(f"short read of {span.container}/{span.name}: "
                                     f"{len(part.data)} of {span.length} bytes at "
                                     f"{span.offset}")
        except Exception as exc:
            part.error = exc
        finally:
            part.done.set()

    async def produce(nursery: trio.Nursery) -> None:
        async with send:
            for piece in _chunks(spans, chunk):
                await window.admit(piece.length)
                part = _Part(piece, trio.Event())
                nursery.start_soon(fetch, part)
                await send.send(part)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(produce, nursery)
        try:
            async with recv:
                async for part in recv:
                    await part.done.wait()
                    if part.error is not None:
                        raise part.error
                    data, part.data = part.data, b""
                    window.free(part.span.length)
                    total += len(data)
                    await sink(data)
        except Exception as exc:
            failure = exc
            nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure
    return total
