"""Reading a file version from Swift: blocks, read-ahead over one streamed GET, memory bounded.

A file version is a list of pieces (byte ranges of CAS objects, or holes). Reads are served
from fixed-size blocks of the file. A block that is read on demand is one ranged GET. A
sequential reader gets the next `ahead` blocks fetched in the background while it consumes
the current one, and those come, in order, from one streamed GET per stored object
(`SequentialStream`): on this Swift a request costs the proxy and object server several ms of
CPU, so one GET for a whole segment instead of one per 8 MiB block is what lets a big
sequential read reach raw download speed. A stream that fails falls back to ranged GETs,
which carry the retry after a segment retired by ccd. Blocks are buffers counted against one
process-wide budget (`BlockBudget`), so memory stays bounded however many files are open:
read-ahead is skipped when the budget is spent, demand reads then go uncached.
"""

from __future__ import annotations

import logging
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from seqwrite import Layout, ObjectNotFound, StoreError, SwiftStore
from sqlfsn import Piece

log = logging.getLogger(__name__)

BLOCK = 8 << 20
AHEAD = 3


class BlockBudget:
    """The process-wide number of block buffers that may exist at once, and a free list of
    the buffers streamed blocks are received into (reused: a new buffer would be zero-filled
    first, ~10% of the daemon's CPU on a sequential read)."""

    def __init__(self, blocks: int) -> None:
        self._sem = trio.Semaphore(blocks)
        self._free: list[bytearray] = []
        self.blocks = blocks

    def try_acquire(self) -> bool:
        try:
            self._sem.acquire_nowait()
        except trio.WouldBlock:
            return False
        return True

    def release(self) -> None:
        self._sem.release()

    def take_buffer(self, size: int) -> bytearray:
        """A buffer of `size` bytes, reused if one is free (its old content is overwritten)."""
        while self._free:
            buf = self._free.pop()
            if len(buf) == size:
                return buf
        return bytearray(size)

    def give_buffer(self, buf: bytearray) -> None:
        """Only once nothing refers to its bytes any more: a view handed to a FUSE reply is
        consumed before the handler yields, so a block's buffer is free when it is evicted."""
        if len(self._free) < self.blocks:
            self._free.append(buf)


@dataclass(slots=True)
class _Block:
    done: trio.Event
    data: bytes | bytearray = b""  # a bytearray comes from the budget's free list
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class Extent:
    """Bytes [offset, offset+size) of a CAS object are the object `container/name`."""

    offset: int
    size: int
    container: str
    name: str


class LocalSource(Protocol):
    """Contents held on the local disk (the write-back journal) before they are in Swift; a
    content hash names the same bytes wherever they are, so reads may come from here."""

    def read(self, digest: str, offset: int, length: int) -> bytes | None: ...

    def span(self, digest: str, start: int, end: int) -> _Span | None: ...


class ObjectMap:
    """Where the bytes of CAS objects are: the local journal (`local`), the object itself, or,
    for an SLO manifest, its segments. Reading segments directly spares Swift's proxy from
    resolving the manifest on every ranged GET (measured here: 8 MiB range GETs, 3 in
    parallel, 209 MiB/s through the manifest, 352 MiB/s direct). A segment that ccd retired
    after consolidation answers 404: the manifest is read again and the read retried once."""

    MAX_ENTRIES = 1024

    def __init__(self, store: SwiftStore, layout: Layout,
                 local: LocalSource | None = None) -> None:
        self.store = store
        self.layout = layout
        self.local = local
        self._extents: OrderedDict[str, list[Extent]] = OrderedDict()
        self._resolving: dict[str, trio.Event] = {}  # one lookup per content at a time

    async def extents(self, digest: str, size_hint: int) -> list[Extent]:
        container, name = self.layout.cas_path(digest)
        whole = [Extent(0, 1 << 62, container, name)]  # the object itself, any size
        if size_hint <= BLOCK:
            return whole  # one ranged GET either way: not worth a HEAD
        while True:
            cached = self._extents.get(digest)
            if cached is not None:
                self._extents.move_to_end(digest)
                return cached
            busy = self._resolving.get(digest)
            if busy is None:
                break
            await busy.wait()  # another read is looking it up; use its answer
        done = self._resolving[digest] = trio.Event()
        try:
            return await self._resolve(digest, container, name, whole)
        finally:
            del self._resolving[digest]
            done.set()

    async def _resolve(self, digest: str, container: str, name: str,
                       whole: list[Extent]) -> list[Extent]:
        stored = await self.store.read_object(container, name)
        if not stored.exists:
            raise StoreError(f"content {digest} is missing from Swift")
        if stored.is_manifest:
            out, pos = [], 0
            for entry in stored.entries:
                out.append(Extent(pos, entry.size, entry.container, entry.name))
                pos += entry.size
        else:
            out = whole
        self._extents[digest] = out
        if len(self._extents) > self.MAX_ENTRIES:
            self._extents.popitem(last=False)
        return out

    async def read(self, digest: str, offset: int, length: int, *, size_hint: int) -> bytes:
        """`length` bytes of CAS object `digest` from `offset`."""
        if self.local is not None:
            data = self.local.read(digest, offset, length)
            if data is not None:
                return data
        for attempt in (1, 2):
            extents = await self.extents(digest, size_hint)
            try:
                data = await self._read(extents, offset, length)
            except ObjectNotFound:
                if attempt == 2 or len(extents) == 1 and extents[0].offset == 0 \
                        and extents[0].name == digest:
                    raise  # the content itself is missing
                if self._extents.get(digest) is extents:
                    del self._extents[digest]  # a segment retired by ccd: read the manifest again
                continue
            if len(data) != length:
                raise StoreError(f"short read of {digest}: {len(data)} of {length} bytes")
            return data
        raise AssertionError("unreachable")

    async def _read(self, extents: list[Extent], offset: int, length: int) -> bytes:
        parts = []
        end = offset + length
        for e in extents:
            lo, hi = max(offset, e.offset), min(end, e.offset + e.size)
            if lo < hi:
                parts.append(await self.store.get(e.container, e.name, offset=lo - e.offset,
                                                  length=hi - lo))
        return b"".join(parts) if len(parts) != 1 else parts[0]


async def read_pieces(objects: ObjectMap, pieces: Sequence[Piece], start: int,
                      length: int) -> bytes:
    """Bytes [start, start+length) of the file made of `pieces`, from Swift (holes: zeros)."""
    parts: list[bytes] = []
    pos = 0
    for piece in pieces:
        p_start, p_end = pos, pos + piece.length
        pos = p_end
        lo, hi = max(start, p_start), min(start + length, p_end)
        if lo >= hi:
            continue
        if piece.hash is None:
            parts.append(bytes(hi - lo))
            continue
        parts.append(await objects.read(piece.hash, piece.obj_offset + lo - p_start, hi - lo,
                                        size_hint=piece.obj_offset + piece.length))
    return b"".join(parts)


class _Span(Protocol):
    async def readinto(self, buf: memoryview) -> int: ...
    def close(self) -> None: ...


class _Zeros:
    """A hole, read as a stream."""

    def __init__(self, n: int) -> None:
        self.left = n

    async def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), self.left)
        buf[:n] = bytes(n)
        self.left -= n
        return n

    def close(self) -> None:
        self.left = 0


class SequentialStream:
    """The bytes of a file version from `start` on, in order: one streamed GET per stored
    object the pieces name (each opened when the read reaches it), zeros for holes."""

    def __init__(self, objects: ObjectMap, pieces: Sequence[Piece], start: int,
                 size: int) -> None:
        self.objects = objects
        self.pieces = pieces
        self.pos = start
        self.size = size
        self._spans: deque[_Span] = deque()
        self._next_piece = 0  # index of the first piece not yet turned into spans
        self._next_start = 0  # file offset where that piece starts
        self.closed = False

    async def readinto(self, buf: memoryview) -> int:
        """Fill `buf` with the next bytes (fewer only at the end: returns how many)."""
        n = min(len(buf), self.size - self.pos)
        got = 0
        while got < n:
            if not self._spans:
                await self._open_next_piece()
            k = await self._spans[0].readinto(buf[got:n])
            if not k:
                self._spans.popleft()
                continue
            got += k
            self.pos += k
        return got

    async def _open_next_piece(self) -> None:
        while True:  # skip the pieces that end before the position
            if self._next_piece >= len(self.pieces):
                raise StoreError(f"file version ends before byte {self.pos}")
            piece = self.pieces[self._next_piece]
            p_start = self._next_start
            self._next_piece += 1
            self._next_start += piece.length
            if self._next_start > self.pos:
                break
        lo = piece.obj_offset + self.pos - p_start  # this piece's range of its content
        hi = piece.obj_offset + piece.length
        if piece.hash is None:
            self._spans.append(_Zeros(hi - lo))
            return
        local = self.objects.local
        span = None if local is None else local.span(piece.hash, lo, hi)
        if span is not None:
            self._spans.append(span)
            return
        for e in await self.objects.extents(piece.hash, hi):
            a, b = max(lo, e.offset), min(hi, e.offset + e.size)
            if a < b:
                self._spans.append(self.objects.store.open_read(
                    e.container, e.name, a - e.offset, b - e.offset))

    def close(self) -> None:
        self.closed = True
        while self._spans:
            self._spans.popleft().close()


class FileReader:
    """Reads one immutable file version. Not shared between versions: a new version (after a
    write commits) gets a new reader, so a reader never mixes bytes of two versions."""

    def __init__(self, objects: ObjectMap, pieces: Sequence[Piece], size: int,
                 nursery: trio.Nursery, budget: BlockBudget, *, block: int = BLOCK,
                 ahead: int = AHEAD) -> None:
        self.objects = objects
        self.pieces = list(pieces)
        self.size = size
        self.block = block
        self.ahead = ahead
        self._nursery = nursery
        self._budget = budget
        self._blocks: dict[int, _Block] = {}
        self._last_block = -1  # highest block read so far
        self._closed = False
        # Read-ahead blocks are queued, in order, to the task that reads them from one stream.
        self._stream_to: trio.MemorySendChannel[tuple[int, _Block]] | None = None
        self._stream_next = -1  # the block the stream will produce next

    async def read(self, off: int, size: int) -> bytes:
        data = await self.read_view(off, size)
        return data if isinstance(data, bytes) else bytes(data)

    async def read_view(self, off: int, size: int) -> bytes | memoryview:
        """Like read(), but a range inside one block comes as a view of the block's buffer
        (the FUSE reply is copied from it: no copy of our own)."""
        if off >= self.size or size <= 0:
            return b""
        end = min(self.size, off + size)
        first, last = off // self.block, (end - 1) // self.block
        # The kernel sends read-ahead requests concurrently, so they arrive slightly out of
        # order: "sequential" means not going back before the last block read.
        sequential = first >= self._last_block - 1
        self._last_block = max(self._last_block, last)
        if sequential:
            for idx in range(last + 1, last + 1 + self.ahead):
                if idx * self.block >= self.size:
                    break
                if idx in self._blocks:
                    continue
                if not self._budget.try_acquire():
                    break  # keep the stream in order: demand reads fill any gap
                self._start_ahead(idx)
        out: list[bytes | memoryview] = []
        for idx in range(first, last + 1):
            base = idx * self.block
            lo, hi = max(off, base), min(end, base + self.block)
            blk = self._blocks.get(idx)
            if blk is None:
                if not self._budget.try_acquire():
                    # Every buffer is held (read-ahead of other readers): read just this range,
                    # uncached, rather than wait for buffers that may never be freed.
                    out.append(await self.read_range(lo, hi - lo))
                    continue
                blk = self._start(idx)
            await blk.done.wait()
            if blk.error is not None:
                self._forget(idx)
                raise blk.error
            out.append(memoryview(blk.data)[lo - base:hi - base])
        self._evict_before(first)
        return b"".join(out) if len(out) > 1 else out[0]

    def _start(self, idx: int) -> _Block:
        blk = _Block(trio.Event())
        self._blocks[idx] = blk
        self._nursery.start_soon(self._fetch, idx, blk)
        return blk

    def _start_ahead(self, idx: int) -> None:
        """Fetch block idx in the background, from the stream if it is positioned there."""
        blk = _Block(trio.Event())
        self._blocks[idx] = blk
        if self._stream_to is None or idx != self._stream_next:
            if self._stream_to is not None:
                self._stream_to.close()  # its task finishes what is queued, then stops
            # A block is queued only once it holds a buffer of the budget: never more waiting
            # than the budget's blocks.
            send, receive = trio.open_memory_channel[tuple[int, _Block]](self._budget.blocks)
            stream = SequentialStream(self.objects, self.pieces, idx * self.block, self.size)
            self._nursery.start_soon(self._stream_blocks, stream, receive)
            self._stream_to = send
        self._stream_to.send_nowait((idx, blk))
        self._stream_next = idx + 1

    async def _stream_blocks(self, stream: SequentialStream,
                             queue: trio.MemoryReceiveChannel[tuple[int, _Block]]) -> None:
        """Fill queued blocks from the stream; once it fails, with ranged GETs."""
        try:
            async with queue:
                async for idx, blk in queue:
                    start = idx * self.block
                    length = min(self.size, start + self.block) - start
                    if self._closed:
                        blk.error = StoreError("reader closed")
                        blk.done.set()
                        continue
                    if not stream.closed and stream.pos == start:
                        buf = self._budget.take_buffer(self.block)
                        try:
                            await stream.readinto(memoryview(buf)[:length])
                        except Exception as exc:
                            log.info("streamed read at %d failed (%s); ranged reads instead",
                                     start, exc)
                            stream.close()
                            self._budget.give_buffer(buf)
                        else:
                            blk.data = buf
                            blk.done.set()
                            continue
                    await self._fetch(idx, blk)
        finally:
            stream.close()

    async def _fetch(self, idx: int, blk: _Block) -> None:
        start = idx * self.block
        end = min(self.size, start + self.block)
        try:
            blk.data = await self.read_range(start, end - start)
        except StoreError as exc:
            blk.error = exc
        except Exception as exc:  # surfaced to the reader as EIO
            log.exception("reading block %d failed", idx)
            blk.error = exc
        finally:
            blk.done.set()

    async def read_range(self, start: int, length: int) -> bytes:
        """Bytes [start, start+length) of the version, straight from Swift (holes are zeros)."""
        return await read_pieces(self.objects, self.pieces, start, length)

    def _forget(self, idx: int) -> None:
        blk = self._blocks.pop(idx, None)
        if blk is not None:
            if isinstance(blk.data, bytearray):
                self._budget.give_buffer(blk.data)
            self._budget.release()

    def _evict_before(self, idx: int) -> None:
        for old in [i for i in self._blocks if i < idx]:
            if self._blocks[old].done.is_set():
                self._forget(old)

    def close(self) -> None:
        """Free every block (fetches in flight free theirs when they finish)."""
        self._closed = True
        if self._stream_to is not None:
            self._stream_to.close()
            self._stream_to = None
        for idx in list(self._blocks):
            blk = self._blocks[idx]
            if blk.done.is_set():
                self._forget(idx)
            else:
                self._nursery.start_soon(self._free_when_done, idx, blk)

    async def _free_when_done(self, idx: int, blk: _Block) -> None:
        await blk.done.wait()
        self._forget(idx)
