"""One temporary segment upload: a chunked PUT fed while the file is being written, replayable.

The bytes of the segment in flight are spooled to an unlinked local file as they are sent, so
a transient failure in the middle of a segment (dropped connection, 5xx, timeout) is healed by
replaying the spool into a fresh PUT and continuing with the live bytes: the application never
resends anything and never sees the failure. Memory stays bounded (a few chunks in a channel);
disk use is at most one segment per writer, freed as soon as the segment is verified.

Threading: the PUT runs in a worker thread and pulls chunks from a trio channel
(`trio.from_thread.run(receive)`); spool writes and md5 happen in two helper threads beside
it (one each, in order). A chunk is a list of views of the application's buffers, never copied
on the way.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import trio

from seqwrite.errors import Corrupted, SpoolError, StoreError, WriterAborted
from seqwrite.retry import retrying
from seqwrite.space import LocalSpace
from seqwrite.store import SwiftStore, describe, is_transient, translate

log = logging.getLogger(__name__)

SPOOL_READ = 1 << 20  # replay reads from the spool in 1 MiB chunks
CHANNEL_CHUNKS = 2  # chunks buffered between the writer and the upload thread


class _Aborted(Exception):
    """Raised inside the body generator to break the HTTP request on abort (never stored)."""


@dataclass(frozen=True, slots=True)
class StoredSegment:
    """A verified temporary segment: where it is, its blake3, its md5 ETag and size."""

    seq: int
    tmp_name: str
    hash: str
    md5: str
    size: int


class SegmentUpload:
    """Uploads one `.tmp` segment; `send()` chunks, `end()`, then `wait()` for the result."""

    def __init__(
        self, store: SwiftStore, container: str, name: str, seq: int, spool_dir: str | None,
        *, verify_md5: bool = True, space: LocalSpace | None = None,
    ) -> None:
        self.store = store
        self.container = container
        self.name = name
        self.seq = seq
        self.size = 0  # bytes sent so far (trio side)
        self._send, self._recv = trio.open_memory_channel[Sequence[memoryview]](CHANNEL_CHUNKS)
        # Closed by run() when the upload ends, whatever happens (lives across many calls).
        self._spool = tempfile.TemporaryFile(dir=spool_dir, prefix="cloudfs-spool-")  # noqa: SIM115
        self._spooled = 0  # bytes in the spool (thread side)
        self._ended = False  # the thread saw the end of the channel
        self._aborted = False
        self._attempt_md5 = ""
        self._spooled_before = 0  # _spooled when the last failure was seen
        self.verify_md5 = verify_md5
        self._digester: _Digester | None = None
        self._done = trio.Event()
        self.etag: str | None = None
        self.error: StoreError | None = None
        self._space = space
        self._reserved = 0  # bytes of `space` this segment's spool holds; -1 once given back
        if space is not None:
            space.track(self)

    # -- trio side ---------------------------------------------------------------------------

    async def run(self) -> None:
        """The upload task: attempts until verified, a permanent error, or the deadline."""
        try:
            self.etag = await retrying(
                f"upload segment {self.name}",
                self._attempt,
                policy=self.store.policy,
                is_transient=lambda e: not self._aborted and not isinstance(e, SpoolError)
                and (is_transient(e) or isinstance(e, Corrupted)),
                describe=describe,
                progressed=self._progressed,
                on_retry=self.store.count_retry,
            )
        except _Aborted:
            self.error = WriterAborted(f"segment {self.name}: aborted")
        except StoreError as exc:
            self.error = exc
            self.store.stats.failures += 1
        except Exception as exc:
            self.error = translate(exc, f"upload segment {self.name}")
            self.store.stats.failures += 1
        except BaseException:  # cancelled: the writer is going away
            self.error = WriterAborted(f"segment {self.name}: cancelled")
            raise
        finally:
            if self.error is not None:
                self._recv.close()  # a blocked send() raises BrokenResourceError
            if self._digester is not None:
                self._digester.shutdown()
            self._spool.close()
            if self._space is not None:
                self._space.untrack(self)
                self._space.give(self._reserved)
            self._reserved = -1  # given back: later reservations are returned at once
            self._done.set()

    def _progressed(self) -> bool:
        """Whether the failed attempt received new bytes (then the retry deadline restarts)."""
        grown = self._spooled > self._spooled_before
        self._spooled_before = self._spooled
        return grown

    async def _attempt(self) -> str:
        body = self._body()
        try:
            etag = await self.store.put_stream(self.container, self.name, body)
        finally:
            body.close()  # a failed attempt's generator: its digest thread stops now
        etag = etag.strip('"')
        if self.verify_md5 and etag != self._attempt_md5:
            raise Corrupted(f"segment {self.name}: Swift stored md5 {etag}, "
                            f"sent {self._attempt_md5}")
        return etag

    async def send(self, chunk: Sequence[memoryview], *, reserved: int = 0) -> None:
        """Queue a (non-empty) chunk, views the caller must not change; waits while the upload
        is behind (backpressure). `reserved`: bytes of the local space the caller took for
        spooling it, given back when this upload ends (whatever happens to the chunk)."""
        if self._reserved < 0:  # ended: the spool will not hold these bytes
            if self._space is not None:
                self._space.give(reserved)
        else:
            self._reserved += reserved
        try:
            await self._send.send(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            await self._done.wait()
            raise self.error or WriterAborted(f"segment {self.name}: upload ended") from None
        self.size += sum(len(view) for view in chunk)

    async def end(self) -> None:
        """No more bytes: the PUT completes once the thread drains the channel."""
        await self._send.aclose()

    def abort(self) -> None:
        """Stop: a blocked `send` fails, the thread drops the request at its next chunk."""
        self._aborted = True
        self._send.close()

    def unwritten(self) -> int:
        """Bytes counted for the spool that the helper thread has not written yet."""
        return max(0, self._reserved - self._spooled)

    async def wait(self) -> str:
        """Wait until the segment is stored and verified; its md5 ETag, or raise."""
        await self._done.wait()
        if self.error is not None:
            raise self.error
        assert self.etag is not None
        return self.etag

    # -- thread side -------------------------------------------------------------------------

    def _body(self) -> Generator[bytes | memoryview, None, None]:
        """The request body of one attempt: replay the spool, then live chunks."""
        if self._digester is not None:
            self._digester.finish()  # the failed attempt's spool writes are all done
        digester = self._digester = _Digester(md5=self.verify_md5)
        try:
            fd = self._spool.fileno()
            pos = 0
            while pos < self._spooled:
                if self._aborted:
                    raise _Aborted()
                chunk = os.pread(fd, min(SPOOL_READ, self._spooled - pos), pos)
                if not chunk:
                    raise OSError(f"spool of {self.name} shorter than expected")
                pos += len(chunk)
                digester.add((chunk,))
                yield chunk
            while not self._ended:
                try:
                    views = trio.from_thread.run(self._recv.receive)
                except trio.EndOfChannel:
                    self._ended = True
                    break
                digester.add(views, self._spool_write)
                yield from views
            if self._aborted:
                raise _Aborted()
            self._attempt_md5 = digester.finish()
        finally:
            digester.shutdown()

    def _spool_write(self, views: Sequence[memoryview]) -> None:
        """In the digest thread, in order: append a live chunk to the spool (all of it: a
        short write would leave a hole that a replay would send as zeros)."""
        try:
            for view in views:
                while view:
                    written = os.pwrite(self._spool.fileno(), view, self._spooled)
                    self._spooled += written
                    view = view[written:]
        except OSError as exc:
            raise SpoolError(exc.errno, f"local spool of {self.name}: {exc.strerror}") from exc


class _Digester:
    """The md5 of one attempt and the spool writes, each in a helper thread of its own beside
    the sending thread: hashlib and pwrite release the GIL, so hashing, spooling and sending a
    chunk run at the same time instead of adding up (the md5 is the largest single cost of a
    write; with the spool in the same thread, that thread was the slowest of the pipeline).
    Each thread keeps the chunks in order. At most two chunks wait, so memory stays bounded."""

    def __init__(self, *, md5: bool = True) -> None:
        self._md5 = hashlib.md5(usedforsecurity=False) if md5 else None
        self._hash_pool = ThreadPoolExecutor(1, thread_name_prefix="cloudfs-md5")
        self._spool_pool = ThreadPoolExecutor(1, thread_name_prefix="cloudfs-spool")
        self._pending: deque[Future[None]] = deque()

    def add(self, chunk: Sequence[bytes | memoryview],
            before: Callable[[Sequence[memoryview]], None] | None = None) -> None:
        """Queue `chunk` for the md5, and `before(chunk)` (the spool write) beside it."""
        while len(self._pending) >= 4:
            self._pending.popleft().result()
        if before is not None:
            self._pending.append(self._spool_pool.submit(before, chunk))  # type: ignore[arg-type]
        if self._md5 is not None:
            self._pending.append(self._hash_pool.submit(self._update, chunk))

    def _update(self, chunk: Sequence[bytes | memoryview]) -> None:
        assert self._md5 is not None
        for part in chunk:
            self._md5.update(part)

    def finish(self) -> str:
        """Wait for every queued chunk (errors surface here); the md5 so far."""
        while self._pending:
            self._pending.popleft().result()
        return "" if self._md5 is None else self._md5.hexdigest()

    def shutdown(self) -> None:
        self._hash_pool.shutdown(wait=True)
        self._spool_pool.shutdown(wait=True)
