"""Open files: the read path and the write path of the mount.

Owns the open-handle table, one write session per inode, and the rules of when content
becomes visible:

- A write session streams through seqwrite from the first byte when it starts at offset 0 (new
  content; with O_TRUNC or on a new file it replaces everything, otherwise the old bytes past
  the written range are kept) or at the current end of the file (append: the new version is the
  old pieces plus the new one, nothing is re-uploaded or read back).
- Anything else (a write at another offset, reading back through the writing descriptor, a
  truncate while writing) switches the session to the local write cache (cloudfs/rwcache.py):
  what was streamed so far is published and becomes the base, later writes land in the cache.
- The content is published and the namespace committed at flush (close) or fsync; a failure
  there answers EIO and the path keeps its previous content. Readers see the previous version
  until the commit.
- A reader reads the version that was current when it opened the file (immutable pieces), so it
  never mixes two versions.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import trio

from cloudfs.errors import FsError
from cloudfs.reader import BlockBudget, FileReader, ObjectMap
from cloudfs.rwcache import CacheBudget, RandomSession, slice_pieces
from seqwrite import Layout, PublishMode, StoredContent, SwiftStore, Writer, WriterSettings
from sqlfsn import Namespace, Piece
from sqlfsn.errors import Conflict
from wiring.filesystem import STALE_DELETION_NS
from wiring.leases import Leases

log = logging.getLogger(__name__)

CLAIM_WAIT = 60.0  # seconds a writer waits for the garbage collector to finish a deletion


@dataclass(eq=False, slots=True)
class WriteSession:
    """The one write in progress on an inode."""

    inode: int
    writer: Writer | None  # streaming; None once the session uses the write cache
    start: int  # file offset of the writer's first byte
    base_version: int  # the version the write started from (compare-and-swap on commit)
    replace_all: bool  # O_TRUNC / new file: bytes past the written range are dropped
    owner: int  # the file handle that started it
    random: RandomSession | None = None  # the write cache, once writes are not sequential
    leases: list[str] = field(default_factory=list)  # upload leases taken by its writers
    # Serializes writes and commits: the kernel does not order FLUSH against WRITE or FSYNC
    # (dup'd descriptors, threads), and a second flush must not finish the writer twice.
    lock: trio.Lock = field(default_factory=trio.Lock)

    @property
    def end(self) -> int:
        """Where the next sequential write goes (the size, for a write-cache session)."""
        if self.random is not None:
            return self.random.size
        assert self.writer is not None
        return self.start + self.writer.size


@dataclass(eq=False, slots=True)
class Handle:
    """One open file description."""

    fh: int
    inode: int
    writable: bool
    truncate: bool  # opened with O_TRUNC: the content is replaced when this handle commits
    pieces: list[Piece] = field(default_factory=list)  # the version this handle reads
    size: int = 0
    open_version: int = 0  # the file's version at open (a pending O_TRUNC applies to it only)
    reader: FileReader | None = None
    error: str | None = None  # a write or commit failed: flush/fsync answer EIO until close


class Files:
    """The open-file table and the content paths (read, write, commit)."""

    def __init__(self, ns: Namespace, store: SwiftStore, layout: Layout, nursery: trio.Nursery,
                 *, writers: WriterSettings, read_budget: BlockBudget,
                 stale_deletion_ns: int = STALE_DELETION_NS,
                 cache_budget: CacheBudget | None = None) -> None:
        self.ns = ns
        self.store = store
        self.layout = layout
        self.writers = writers
        self.spool_dir = writers.spool_dir
        self.leases = Leases(ns)
        self.stale_deletion_ns = stale_deletion_ns
        self._nursery = nursery
        self._budget = read_budget
        self._objects = ObjectMap(store, layout)
        self._cache_budget = cache_budget or CacheBudget(10 << 30)
        self._handles: dict[int, Handle] = {}
        self._sessions: dict[int, WriteSession] = {}
        self._next_fh = 1

    # -- opening -----------------------------------------------------------------------------

    def open(self, inode: int, flags: int) -> int:
        attr = self.ns.getattr(inode)
        accmode = flags & os.O_ACCMODE
        writable = accmode in (os.O_WRONLY, os.O_RDWR)
        truncate = writable and bool(flags & os.O_TRUNC)
        if truncate and inode in self._sessions:
            raise FsError(errno.EBUSY, f"inode {inode} is being written by another handle; "
                          "cloudfs allows one writer per file at a time")
        fh = self._next_fh
        self._next_fh += 1
        pieces = self.ns.pieces(inode) if attr.size else []
        self._handles[fh] = Handle(fh, inode, writable, truncate, pieces, attr.size,
                                   open_version=attr.version)
        return fh

    def inode_of(self, fh: int) -> int | None:
        h = self._handles.get(fh)
        return None if h is None else h.inode

    def open_count(self, inode: int) -> int:
        return sum(1 for h in self._handles.values() if h.inode == inode)

    def writing_size(self, inode: int) -> int | None:
        """The size the writer sees while a write is in progress (getattr shows it)."""
        session = self._sessions.get(inode)
        if session is not None:
            if session.random is not None:
                return session.random.size
            return max(session.end, 0 if session.replace_all else self._committed_size(inode))
        return None  # a pending O_TRUNC shows at close, like the rest of a write

    def _committed_size(self, inode: int) -> int:
        return self.ns.getattr(inode).size

    # -- reading -----------------------------------------------------------------------------

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        h = self._handle(fh)
        session = self._sessions.get(h.inode)
        if session is not None and session.owner == fh:
            async with session.lock:  # reading back what this descriptor wrote
                self._check_sticky(h)
                rw = await self._to_random(session, h)
                return await rw.read(off, size, self._base_reader(rw))
        if h.truncate:
            return b""
        if h.reader is None:
            h.reader = FileReader(self._objects, h.pieces, h.size, self._nursery, self._budget)
        return await h.reader.read_view(off, size)

    # -- writing -----------------------------------------------------------------------------

    async def write(self, fh: int, off: int, data: bytes) -> int:
        h = self._handle(fh)
        self._check_sticky(h)
        session = self._sessions.get(h.inode)
        if session is None:
            session = self._start_session(h, off)
        elif session.owner != fh:
            # Sticky: this descriptor's close and fsync fail too, so a program that does not
            # check write() still learns, where it must look, that its bytes were not stored.
            h.error = "another descriptor was writing the file (EBUSY)"
            raise FsError(errno.EBUSY, f"inode {h.inode} is being written by another handle; "
                          "cloudfs allows one writer per file at a time")
        async with session.lock:
            self._check_sticky(h)
            if self._sessions.get(h.inode) is not session:
                raise FsError(errno.EIO, f"inode {h.inode}: the write was already committed "
                              "or failed")
            try:
                if session.random is None and off != session.end:
                    log.info("inode %d: write at %d (streaming at %d): using the write cache",
                             h.inode, off, session.end)
                    await self._to_random(session, h)
                if session.random is not None:
                    session.random.write(off, data)
                else:
                    assert session.writer is not None
                    await session.writer.write(data)
            except FsError as exc:
                if exc.errno == errno.ENOSPC:
                    raise  # the cache is full: this write failed, the session is intact
                h.error = str(exc)
                await self._discard(session)
                raise
            except BaseException as exc:
                h.error = f"{type(exc).__name__}: {exc}"
                await self._discard(session)
                raise
        return len(data)

    @staticmethod
    def _check_sticky(h: Handle) -> None:
        if h.error is not None:
            raise FsError(errno.EIO, f"inode {h.inode}: an earlier write failed ({h.error}); "
                          "nothing after it was stored")

    def _start_session(self, h: Handle, off: int) -> WriteSession:
        attr = self.ns.getattr(h.inode)
        current = 0 if h.truncate else attr.size
        replace_all = h.truncate or attr.size == 0
        session = WriteSession(h.inode, None, off, attr.version, replace_all, owner=h.fh)
        if off in (0, current):
            session.writer = self._new_writer(session)
        else:  # not sequential from the start: straight to the write cache
            base = [] if h.truncate else self.ns.pieces(h.inode)
            session.random = RandomSession(h.inode, base, current, self.spool_dir,
                                           self._cache_budget)
        self._sessions[h.inode] = session
        h.truncate = False  # the session carries the truncation: it commits or fails with it
        return session

    def _new_writer(self, session: WriteSession) -> Writer:
        def take_lease(upload_id: str) -> None:
            self.leases.take(upload_id)
            session.leases.append(upload_id)

        return self.writers.writer(self.store, self.layout, self._nursery, claim=self._claim,
                                   on_first_segment=take_lease)

    async def _to_random(self, session: WriteSession, h: Handle) -> RandomSession:
        """Switch `session` to the write cache (under its lock): what was streamed so far is
        published and becomes part of the base the cache sits on."""
        if session.random is not None:
            return session.random
        writer, session.writer = session.writer, None
        assert writer is not None
        if session.replace_all:
            base, size = [], 0
        else:
            base = self.ns.pieces(session.inode)
            size = sum(p.length for p in base)
        if writer.size:
            try:
                content = await writer.finish()
            except BaseException as exc:
                h.error = f"{type(exc).__name__}: {exc}"
                await self._discard(session)
                raise
            base, size = self._compose(session, content, base, size)
        else:
            await writer.abort()
        session.random = RandomSession(session.inode, base, size, self.spool_dir,
                                       self._cache_budget)
        return session.random

    def _base_reader(self, rw: RandomSession):  # noqa: ANN202 - a ReadBase
        """Reads of the session's (immutable) base, through one block-cached FileReader."""
        if rw.base_reader is None:
            size = sum(p.length for p in rw.base)
            rw.base_reader = FileReader(self._objects, rw.base, size, self._nursery,
                                        self._budget)

        async def read_base(start: int, length: int) -> bytes:
            assert rw.base_reader is not None
            return await rw.base_reader.read(start, length)

        return read_base

    async def _claim(self, digest: str, size: int, segments: object) -> PublishMode:
        """Record the content in sqlfsn before anything relies on it (the GC fence)."""
        give_up = trio.current_time() + CLAIM_WAIT
        waited = False
        while True:
            stale = time.time_ns() - self.stale_deletion_ns
            claim = self.ns.claim_content(digest, size, segments,  # type: ignore[arg-type]
                                          takeover_deleting_older_than_ns=stale)
            if claim.ok:
                if waited or claim.deleting_since_ns is not None:
                    # The collector deleted (or was deleting) the stored copy: a replica may
                    # still answer 412 for it, so publish ours unconditionally.
                    return PublishMode.UNCONDITIONAL
                return PublishMode.CONDITIONAL
            waited = True
            if trio.current_time() > give_up:
                raise FsError(errno.EIO, f"content {digest} is being deleted by the garbage "
                              "collector; the write failed, try again later")
            await trio.sleep(1.0)

    # -- committing --------------------------------------------------------------------------

    async def flush(self, fh: int) -> None:
        """close(2): publish and commit what this handle wrote (errors reach the caller)."""
        h = self._handles.get(fh)
        if h is None:
            return
        self._check_sticky(h)
        session = self._sessions.get(h.inode)
        if session is not None and session.owner == fh:
            await self._commit(session, h)
        elif h.truncate:
            self._truncate_now(h)  # opened with O_TRUNC and never written

    async def fsync(self, fh: int) -> None:
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)
        if h is None:
            return
        if h.reader is not None:
            h.reader.close()
        session = self._sessions.get(h.inode)
        try:
            if session is not None and session.owner == fh:
                await self._commit(session, h)  # written after the last flush (e.g. mmap)
            elif h.truncate and h.error is None:
                self._truncate_now(h)
        except Exception as exc:
            log.error("inode %d: changes after the last close are lost: %s", h.inode, exc)

    def _truncate_now(self, h: Handle) -> None:
        """Apply a pending O_TRUNC, unless another writer committed since this open."""
        h.truncate = False
        attr = self.ns.getattr(h.inode)
        if attr.size == 0 or attr.version != h.open_version:
            return  # already empty (e.g. just created), or a newer version was committed
        try:
            self.ns.set_content(h.inode, [], 0, expect_version=h.open_version)
        except Conflict:
            log.debug("inode %d: O_TRUNC skipped, a newer version was committed", h.inode)
            return
        self._refresh_readers(h.inode)

    async def _commit(self, session: WriteSession, h: Handle) -> None:
        async with session.lock:
            if self._sessions.get(session.inode) is not session:
                return  # a concurrent flush (a dup'd descriptor) committed it already
            try:
                if session.random is not None:
                    pieces = await session.random.commit(self._uploader(session),
                                                         self._base_reader(session.random))
                    size = session.random.size
                else:
                    assert session.writer is not None
                    content = await session.writer.finish()
                    base = [] if session.replace_all else self.ns.pieces(session.inode)
                    pieces, size = self._compose(session, content, base,
                                                 sum(p.length for p in base))
            except BaseException as exc:
                h.error = f"{type(exc).__name__}: {exc}"
                await self._discard(session)
                raise
            del self._sessions[session.inode]
            try:
                self.ns.set_content(session.inode, pieces, size,
                                    expect_version=None if session.replace_all
                                    and session.random is None else session.base_version)
            except BaseException as exc:
                h.error = f"{type(exc).__name__}: {exc}"
                raise
            finally:
                self._end_session(session)
        h.truncate = False
        h.open_version = self.ns.getattr(h.inode).version
        self._refresh_readers(h.inode)

    def _refresh_readers(self, inode: int) -> None:
        """After this mount changed the file: every open handle reads the new version (the
        kernel already shows them its new size)."""
        pieces = self.ns.pieces(inode)
        size = sum(p.length for p in pieces)
        for h in self._handles.values():
            if h.inode == inode:
                h.pieces, h.size = pieces, size
                if h.reader is not None:
                    h.reader.close()
                    h.reader = None

    @staticmethod
    def _compose(session: WriteSession, content: StoredContent, base: list[Piece],
                 base_size: int) -> tuple[list[Piece], int]:
        """The version after a streamed write: the base before the writer's start, the new
        content, and (unless the write replaces everything) the base past its end."""
        new = [] if content.kind == "empty" else [Piece(content.hash, 0, content.size)]
        end = session.start + content.size
        pieces = slice_pieces(base, 0, session.start) + new
        if base_size > end:
            pieces += slice_pieces(base, end, base_size)
        return pieces, max(end, base_size)

    def _uploader(self, session: WriteSession):  # noqa: ANN202 - a rwcache.Upload
        async def upload(chunks: AsyncIterator[bytes]) -> tuple[str, int]:
            writer = self._new_writer(session)
            try:
                async for chunk in chunks:
                    await writer.write(chunk)
            except BaseException:
                await writer.abort()
                raise
            content = await writer.finish()
            return content.hash, content.size

        return upload

    def _end_session(self, session: WriteSession) -> None:
        """Release what a session holds: its write cache and its upload leases."""
        if session.random is not None:
            session.random.close()
        self.leases.end(session.leases)
        session.leases.clear()

    async def _discard(self, session: WriteSession) -> None:
        self._sessions.pop(session.inode, None)
        if session.writer is not None:
            with trio.CancelScope(shield=True):
                await session.writer.abort()
        self._end_session(session)

    # -- truncate ----------------------------------------------------------------------------

    async def truncate(self, inode: int, size: int) -> None:
        for h in list(self._handles.values()):
            if h.inode == inode and h.truncate:
                self._truncate_now(h)  # a pending O_TRUNC comes first
        session = self._sessions.get(inode)
        if session is None:
            self.ns.setattr(inode, size=size)
            self._refresh_readers(inode)
            return
        owner = self._handles.get(session.owner)
        async with session.lock:
            if session.random is None and size == session.end:
                return
            if owner is None:
                raise FsError(errno.EBUSY, f"inode {inode} is being written")
            rw = await self._to_random(session, owner)
            rw.truncate(size)

    def statistics(self) -> dict[str, object]:
        """Counters for `cloudfs stats` and the benchmarks: Swift requests by method, open
        files, writes in progress."""
        return {"swift_requests": self.store.statistics(), "open_files": len(self._handles),
                "writes_in_progress": len(self._sessions)}

    # -- background --------------------------------------------------------------------------

    async def close_all(self) -> None:
        """At unmount: commit what is pending (loudly on failure)."""
        for fh in list(self._handles):
            try:
                await self.flush(fh)
            except Exception as exc:
                log.error("unmount: a pending write failed: %s", exc)
            await self.release(fh)

    def _handle(self, fh: int) -> Handle:
        try:
            return self._handles[fh]
        except KeyError:
            raise FsError(errno.EBADF, f"unknown file handle {fh}") from None
