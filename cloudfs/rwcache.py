"""Random writes: a local write cache over an immutable base version.

A file written anywhere but sequentially (O_RDWR with reads back, writes at any offset,
overwrites, truncates, sparse files, mmap writeback) gets a `RandomSession`: the bytes the
application writes go to a sparse local cache file, the rest of the file stays where it is in
Swift (the base version's pieces). Reads see the union: written ranges from the cache, the
base below them, zeros past the base's end. Nothing is fetched that is not read.

At commit (close or fsync) each written range is streamed through seqwrite as its own content
and the new version is the list of pieces: untouched ranges of the base are reused as they
are (no download, no re-upload), written ranges point at their new contents, gaps are holes.
The cache counts against the process's local-disk budget (seqwrite.space.LocalSpace, shared
with the spools): a write that would exceed it fails with ENOSPC instead of filling the disk,
and the budget always leaves the headroom that committing the cache needs.
"""

from __future__ import annotations

import bisect
import errno
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from cloudfs.errors import FsError
from seqwrite.space import LocalSpace
from sqlfsn import Piece
from wiring.pieces import slice_pieces

log = logging.getLogger(__name__)

READ_CHUNK = 4 << 20


class Ranges:
    """A set of disjoint, sorted, non-adjacent half-open byte ranges."""

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []

    def __iter__(self) -> Iterator[tuple[int, int]]:
        return iter(zip(self._starts, self._ends, strict=True))

    def total(self) -> int:
        return sum(e - s for s, e in self)

    def add(self, start: int, end: int) -> None:
        if start >= end:
            return
        i = bisect.bisect_left(self._ends, start)  # first range ending at/after start
        j = bisect.bisect_right(self._starts, end)  # ranges starting at/before end
        if i < j:
            start = min(start, self._starts[i])
            end = max(end, self._ends[j - 1])
        self._starts[i:j] = [start]
        self._ends[i:j] = [end]

    def remove_from(self, cut: int) -> None:
        """Drop everything at or past `cut`."""
        i = bisect.bisect_left(self._ends, cut + 1)
        del self._starts[i + 1:], self._ends[i + 1:]
        if i < len(self._starts):
            if self._starts[i] >= cut:
                del self._starts[i], self._ends[i]
            else:
                self._ends[i] = cut

    def split(self, start: int, end: int) -> Iterator[tuple[int, int, bool]]:
        """[start, end) cut into (lo, hi, inside) runs, in order."""
        pos = start
        for s, e in self:
            if e <= pos:
                continue
            if s >= end:
                break
            if s > pos:
                yield pos, s, False
            lo, hi = max(s, pos), min(e, end)
            yield lo, hi, True
            pos = hi
        if pos < end:
            yield pos, end, False


ReadBase = Callable[[int, int], Awaitable[bytes]]  # (offset, length) of the base version
Upload = Callable[[AsyncIterator[bytes]], Awaitable[tuple[str, int]]]  # chunks -> (hash, size)

# Written ranges closer than this are uploaded as one content, the bytes between them read from
# the base (or zeros): one stream instead of many small uploads and many small pieces.
MERGE_GAP = 1 << 20


class RandomSession:
    """The new version of one file being written at random offsets."""

    def __init__(self, inode: int, base: list[Piece], base_size: int, cache_dir: str | None,
                 space: LocalSpace) -> None:
        self.inode = inode
        self.base = base
        self.base_limit = base_size  # base bytes past this were truncated away: zeros
        self.size = base_size
        self.written = Ranges()
        self._space = space
        self._cached = 0  # bytes of `written` counted against the space
        self._file = tempfile.TemporaryFile(dir=cache_dir, prefix="cloudfs-rw-")  # noqa: SIM115
        self.base_reader: Any = None  # set by the owner: a block-cached reader of `base`

    def write(self, off: int, data: bytes) -> None:
        end = off + len(data)
        new = sum(hi - lo for lo, hi, inside in self.written.split(off, end) if not inside)
        if new:
            # ENOSPC before touching anything; the headroom is for committing this cache
            if not self._space.try_take(new, keep=self._space.headroom):
                raise FsError(errno.ENOSPC, f"inode {self.inode}: the write cache is full "
                              f"({self._space.describe()}; raise cache_size, free the disk "
                              "or close files)")
            self._cached += new
        view = memoryview(data)
        pos = off
        while view:
            n = os.pwrite(self._file.fileno(), view, pos)
            view, pos = view[n:], pos + n
        self.written.add(off, end)
        self.size = max(self.size, end)

    def truncate(self, size: int) -> None:
        before = self.written.total()
        self.written.remove_from(size)
        freed = before - self.written.total()
        self._space.give(freed)
        self._cached -= freed
        self.base_limit = min(self.base_limit, size)
        self.size = size
        os.ftruncate(self._file.fileno(), size)

    async def read(self, off: int, length: int, read_base: ReadBase) -> bytes:
        end = min(self.size, off + length)
        parts = []
        for lo, hi, cached in self.written.split(off, end) if off < end else ():
            if cached:
                parts.append(os.pread(self._file.fileno(), hi - lo, lo))
            else:
                parts.append(await self._read_under(lo, hi, read_base))
        return b"".join(parts)

    async def _read_under(self, lo: int, hi: int, read_base: ReadBase) -> bytes:
        """Bytes not written in this session: the base, zeros past its (truncated) end."""
        base_hi = min(hi, self.base_limit)
        data = await read_base(lo, base_hi - lo) if lo < base_hi else b""
        return data + bytes(hi - max(lo, base_hi))

    async def commit(self, upload: Upload, read_base: ReadBase) -> list[Piece]:
        """Upload the written ranges (merged across small gaps); the new version's pieces:
        the base where nothing was written, holes past its end."""
        pieces: list[Piece] = []
        pos = 0
        for lo, hi in self._extents():
            pieces += self._unwritten(pos, lo)
            digest, size = await upload(self._extent_chunks(lo, hi, read_base))
            pieces.append(Piece(digest, 0, size))
            pos = hi
        pieces += self._unwritten(pos, self.size)
        return [p for p in pieces if p.length]

    def _extents(self) -> Iterator[tuple[int, int]]:
        """Written ranges within the file, merged when the gap between them is small."""
        current: list[int] | None = None
        for lo, hi in self.written:
            lo, hi = min(lo, self.size), min(hi, self.size)
            if lo >= hi:
                continue
            if current is not None and lo - current[1] <= MERGE_GAP:
                current[1] = hi
                continue
            if current is not None:
                yield current[0], current[1]
            current = [lo, hi]
        if current is not None:
            yield current[0], current[1]

    def _unwritten(self, lo: int, hi: int) -> list[Piece]:
        """Pieces of [lo, hi) where nothing was written: the base, then a hole."""
        out: list[Piece] = []
        base_hi = min(hi, self.base_limit)
        if lo < base_hi:
            out += slice_pieces(self.base, lo, base_hi)
        if max(lo, base_hi) < hi:
            out.append(Piece(None, 0, hi - max(lo, base_hi)))
        return out

    async def _extent_chunks(self, lo: int, hi: int, read_base: ReadBase
                             ) -> AsyncIterator[bytes]:
        fd = self._file.fileno()
        for a, b, cached in self.written.split(lo, hi):
            while a < b:
                n = min(READ_CHUNK, b - a)
                if cached:
                    chunk = os.pread(fd, n, a)
                    if len(chunk) != n:
                        raise OSError(errno.EIO, "write cache shorter than expected")
                else:
                    chunk = await self._read_under(a, a + n, read_base)
                yield chunk
                a += n

    def close(self) -> None:
        if self.base_reader is not None:
            self.base_reader.close()
            self.base_reader = None
        self._space.give(self._cached)
        self._cached = 0
        self._file.close()
