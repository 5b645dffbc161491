"""The blake3 of a file being written, computed in a helper thread beside the event loop.

A writer hashes every byte it hands to a segment (the file's hash, and the segment's own for
segments after the first). Done on the trio thread, blake3 held up the next FUSE write for its
whole duration; here each chunk is hashed in one thread of its own, in order, while the trio
thread receives the next chunk. blake3 releases the GIL on large inputs, so the two overlap.
Memory stays bounded: at most MAX_PENDING chunks wait for the thread (the caller's buffers,
never copied), and `update` waits, without blocking the event loop, while more do.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import blake3
import trio

MAX_PENDING = 2  # chunks queued to the hashing thread at most


class ChunkHasher:
    """Ordered blake3 updates of several hashers by one helper thread (started on first use).

    `update()` queues a chunk for every hasher given; `await drained()` before reading a
    digest. `close()` stops the thread (idempotent; pending updates finish first)."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._pending: deque[Future[None]] = deque()

    async def update(self, chunk: Sequence[memoryview],
                     hashers: Sequence[blake3.blake3]) -> None:
        while len(self._pending) >= MAX_PENDING:
            await self._wait_oldest()
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="cloudfs-blake3")
        self._pending.append(self._pool.submit(_hash, chunk, tuple(hashers)))

    async def drained(self) -> None:
        """Every queued update is done (their hashers' digests are now final for them)."""
        while self._pending:
            await self._wait_oldest()

    async def _wait_oldest(self) -> None:
        """Wait for the oldest queued update (cancellable: it stays queued, and the thread
        applies it anyway)."""
        future = self._pending[0]
        if not future.done():
            done = trio.Event()
            token = trio.lowlevel.current_trio_token()

            def wake(_: Future[None]) -> None:
                with contextlib.suppress(trio.RunFinishedError):
                    token.run_sync_soon(done.set)

            future.add_done_callback(wake)
            await done.wait()
        if self._pending and self._pending[0] is future:
            self._pending.popleft()
        future.result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._pending.clear()


def _hash(chunk: Sequence[memoryview], hashers: Sequence[blake3.blake3]) -> None:
    for view in chunk:
        for hasher in hashers:
            hasher.update(view)
