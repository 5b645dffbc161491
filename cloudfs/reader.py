"""Reading a file version from Swift: ranged GETs in blocks, with read-ahead, memory bounded.

A file version is a list of pieces (byte ranges of CAS objects, or holes). Reads are served
from fixed-size blocks of the file; a sequential reader gets the next `ahead` blocks fetched in
the background while it consumes the current one, so a big sequential read keeps several
GETs in flight and approaches raw Swift download speed. Blocks are buffers counted against
one process-wide budget (`BlockBudget`), so memory stays bounded however many files are open:
read-ahead is skipped when the budget is spent, demand reads wait for it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from seqwrite import Layout, StoreError, SwiftStore
from sqlfsn import Piece

log = logging.getLogger(__name__)

BLOCK = 8 << 20
AHEAD = 3


class BlockBudget:
    """The process-wide number of block buffers that may exist at once."""

    def __init__(self, blocks: int) -> None:
        self._sem = trio.Semaphore(blocks)

    async def acquire(self) -> None:
        await self._sem.acquire()

    def try_acquire(self) -> bool:
        try:
            self._sem.acquire_nowait()
        except trio.WouldBlock:
            return False
        return True

    def release(self) -> None:
        self._sem.release()


@dataclass(slots=True)
class _Block:
    done: trio.Event
    data: bytes = b""
    error: BaseException | None = None


class FileReader:
    """Reads one immutable file version. Not shared between versions: a new version (after a
    write commits) gets a new reader, so a reader never mixes bytes of two versions."""

    def __init__(self, store: SwiftStore, layout: Layout, pieces: Sequence[Piece], size: int,
                 nursery: trio.Nursery, budget: BlockBudget, *, block: int = BLOCK,
                 ahead: int = AHEAD) -> None:
        self.store = store
        self.layout = layout
        self.pieces = list(pieces)
        self.size = size
        self.block = block
        self.ahead = ahead
        self._nursery = nursery
        self._budget = budget
        self._blocks: dict[int, _Block] = {}
        self._last_block = -1  # highest block read so far
        self._closed = False

    async def read(self, off: int, size: int) -> bytes:
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
                if idx not in self._blocks and self._budget.try_acquire():
                    self._start(idx)
        out = []
        for idx in range(first, last + 1):
            blk = self._blocks.get(idx)
            if blk is None:
                await self._budget.acquire()
                blk = self._blocks.get(idx)  # another task may have started it meanwhile
                if blk is None:
                    blk = self._start(idx)
                else:
                    self._budget.release()
            await blk.done.wait()
            if blk.error is not None:
                self._forget(idx)
                raise blk.error
            base = idx * self.block
            out.append(blk.data[max(off, base) - base: min(end, base + len(blk.data)) - base])
        self._evict_before(first)
        return b"".join(out) if len(out) > 1 else out[0]

    def _start(self, idx: int) -> _Block:
        blk = _Block(trio.Event())
        self._blocks[idx] = blk
        self._nursery.start_soon(self._fetch, idx, blk)
        return blk

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
        parts: list[bytes] = []
        pos = 0
        for piece in self.pieces:
            p_start, p_end = pos, pos + piece.length
            pos = p_end
            lo, hi = max(start, p_start), min(start + length, p_end)
            if lo >= hi:
                continue
            if piece.hash is None:
                parts.append(bytes(hi - lo))
                continue
            container, name = self.layout.cas_path(piece.hash)
            data = await self.store.get(container, name, offset=piece.obj_offset + lo - p_start,
                                        length=hi - lo)
            if len(data) != hi - lo:
                raise StoreError(f"short read of {name}: {len(data)} of {hi - lo} bytes")
            parts.append(data)
        return b"".join(parts)

    def _forget(self, idx: int) -> None:
        if self._blocks.pop(idx, None) is not None:
            self._budget.release()

    def _evict_before(self, idx: int) -> None:
        for old in [i for i in self._blocks if i < idx]:
            if self._blocks[old].done.is_set():
                self._forget(old)

    def close(self) -> None:
        """Free every block (fetches in flight free theirs when they finish)."""
        self._closed = True
        for idx in list(self._blocks):
            blk = self._blocks[idx]
            if blk.done.is_set():
                self._forget(idx)
            else:
                self._nursery.start_soon(self._free_when_done, idx, blk)

    async def _free_when_done(self, idx: int, blk: _Block) -> None:
        await blk.done.wait()
        self._forget(idx)
