"""Open files: the read path and the write path of the mount.

Owns the write sessions (cloudfs/session.py: one per inode, in explicit states) over the
open-file table (cloudfs/handles.py), and the rules of when content becomes visible:

- A write session streams through seqwrite from the first byte when it starts at offset 0 (new
  content; with O_TRUNC or on a new file it replaces everything, otherwise the old bytes past
  the written range are kept) or at the current end of the file (append: the new version is the
  old pieces plus the new one, nothing is re-uploaded or read back).
- Anything else (a write at another offset, reading back through the writing descriptor, a
  truncate while writing) moves the session to the local write cache (cloudfs/rwcache.py):
  what was streamed so far is published (not committed) and becomes the base, later writes
  land in the cache.
- The content is published and the namespace committed at flush (close) or fsync; a failure
  there answers EIO and the path keeps its previous content. Readers see the previous version
  until the commit.
- A reader reads the version that was current when it opened the file (immutable pieces), so it
  never mixes two versions.
- Stopping the mount (`stop`) never commits what the application has not closed: see
  `session.ON_STOP`.
"""

from __future__ import annotations

import errno
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import trio

from cloudfs.errors import FsError
from cloudfs.handles import Handle, HandleTable
from cloudfs.journal import Journal, JournalFile, Record
from cloudfs.reader import BlockBudget, FileReader, ObjectMap
from cloudfs.rwcache import RandomSession, ReadBase, Upload
from cloudfs.session import (
    ON_STOP,
    Cached,
    Committing,
    Failed,
    Journaling,
    State,
    StopAction,
    Streaming,
    WriteSession,
    compose,
)
from cloudfs.writeback import WriteBack
from seqwrite import Layout, PublishMode, SwiftStore, Writer, WriterSettings
from sqlfsn import Attr, Namespace, Piece
from sqlfsn.errors import Conflict
from wiring.filesystem import STALE_DELETION_NS
from wiring.leases import Leases
from wiring.metrics import COMMIT_SECONDS

log = logging.getLogger(__name__)

CLAIM_WAIT = 60.0  # seconds a writer waits for the garbage collector to finish a deletion


class Files:
    """The open files of a mount and the content paths (read, write, commit, stop).

    Attributes:
        handles: the open-file table.
        leases: the upload leases of this mount's writes (refreshed by `leases.keep_alive`).
        stopping: the mount is stopping: no new opens for writing (EROFS).
        on_commit: called with the inode after each commit of this mount (the FUSE layer
            drops the kernel's cached attributes there).
    """

    def __init__(self, ns: Namespace, store: SwiftStore, layout: Layout, nursery: trio.Nursery,
                 *, writers: WriterSettings, read_budget: BlockBudget,
                 stale_deletion_ns: int = STALE_DELETION_NS,
                 on_commit: Callable[[int], None] | None = None,
                 journal: Journal | None = None, write_back_max: int = 0) -> None:
        self.ns = ns
        self.store = store
        self.layout = layout
        self.writers = writers
        self.leases = Leases(ns)
        self.handles = HandleTable()
        self.stopping = False
        self.on_commit = on_commit
        self.stale_deletion_ns = stale_deletion_ns
        self._nursery = nursery
        self._budget = read_budget
        if writers.space is None:
            raise ValueError("the mount's writers need a LocalSpace (the write cache uses it)")
        self.space = writers.space
        # Write-back mode (a journal given): closed files are uploaded in the background.
        self.writeback = None if journal is None else WriteBack(
            journal, ns, self.space, self.leases, self._new_writer, nursery)
        self.write_back_max = write_back_max
        self._objects = ObjectMap(store, layout,
                                  None if self.writeback is None else self.writeback.local)
        self._sessions: dict[int, WriteSession] = {}
        self._session_ended = trio.Event()  # set (and renewed) whenever a session ends
        self._cache_logged: set[int] = set()  # inodes whose move to the cache was logged

    # -- opening -----------------------------------------------------------------------------

    def check_may_write(self) -> None:
        """EROFS once the mount is stopping: it takes no new writes."""
        if self.stopping:
            raise FsError(errno.EROFS, "the mount is stopping: no new files are opened for "
                          "writing")

    def open(self, inode: int, flags: int) -> int:
        attr = self.ns.getattr(inode)
        writable = (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)
        if writable:
            self.check_may_write()
        truncate = writable and bool(flags & os.O_TRUNC)
        if truncate and inode in self._sessions:
            raise FsError(errno.EBUSY, f"inode {inode} is being written by another handle; "
                          "cloudfs allows one writer per file at a time")
        version, size, pieces = self._current(inode, attr)
        return self.handles.add(inode, writable=writable, truncate=truncate, pieces=pieces,
                                size=size, version=version).fh

    def _current(self, inode: int, attr: Attr | None = None) -> tuple[int, int, list[Piece]]:
        """The version, size and pieces this mount shows of a file: its newest pending version
        in write-back mode, else the committed one (`attr`, if already read)."""
        pending = None if self.writeback is None else self.writeback.view(inode)
        if pending is not None:
            return pending.version, pending.size, pending.pieces
        attr = attr or self.ns.getattr(inode)
        return attr.version, attr.size, self.ns.pieces(inode) if attr.size else []

    def shown(self, inode: int, size: int, mtime_ns: int) -> tuple[int, int]:
        """(size, mtime) as this mount shows them (getattr): a write in progress or a pending
        version over the committed (`size`, `mtime_ns`)."""
        pending = None if self.writeback is None else self.writeback.view(inode)
        if pending is not None:
            size, mtime_ns = pending.size, pending.mtime_ns
        writing = self._writing_size(inode, size)
        return (size if writing is None else writing), mtime_ns

    def inode_of(self, fh: int) -> int | None:
        h = self.handles.find(fh)
        return None if h is None else h.inode

    def open_count(self, inode: int) -> int:
        return self.handles.count(inode)

    def _writing_size(self, inode: int, current: int) -> int | None:
        """The size the writer sees while a write is in progress over a file of `current`
        bytes. A pending O_TRUNC shows at close, like the rest of a write."""
        session = self._sessions.get(inode)
        if session is None:
            return None
        size = session.size
        if size is None:
            return None
        if (isinstance(session.state, Journaling | Streaming | Committing)
                and not session.replace_all):
            return max(size, current)  # a write inside the old content
        return size

    # -- reading -----------------------------------------------------------------------------

    async def read(self, fh: int, off: int, size: int) -> bytes | memoryview:
        h = self.handles.get(fh)
        session = self._sessions.get(h.inode)
        if session is not None and session.owner == fh:
            async with session.lock:  # reading back what this descriptor wrote
                h.check_error()
                if self._sessions.get(h.inode) is session:  # else committed meanwhile
                    cache = await self._to_cached(session, h)
                    return await cache.read(off, size, self._base_reader(cache))
        if h.pending_truncate:
            return b""
        if h.reader is None:
            h.reader = FileReader(self._objects, h.pieces, h.size, self._nursery, self._budget)
        return await h.reader.read_view(off, size)

    # -- writing -----------------------------------------------------------------------------

    async def write(self, fh: int, off: int, data: bytes) -> int:
        h = self.handles.get(fh)
        h.check_error()
        session = self._sessions.get(h.inode)
        if session is None:
            session = await self._start_session(h, off)
        if session.owner != fh:
            # Sticky: this descriptor's close and fsync fail too, so a program that does not
            # check write() still learns, where it must look, that its bytes were not stored.
            h.error = "another descriptor was writing the file (EBUSY)"
            raise FsError(errno.EBUSY, f"inode {h.inode} is being written by another handle; "
                          "cloudfs allows one writer per file at a time")
        async with session.lock:
            h.check_error()
            if self._sessions.get(h.inode) is not session:
                raise FsError(errno.EIO, f"inode {h.inode}: the write was already committed "
                              "or failed")
            session.mtime_ns = None  # a write after utimens: the commit stamps "now" again
            try:
                await self._write_locked(session, h, off, data)
            except FsError as exc:
                if exc.errno == errno.ENOSPC:
                    raise  # the cache is full: this write failed, the session is intact
                self._fail(session, h, exc)
            except BaseException as exc:
                self._fail(session, h, exc)
        return len(data)

    async def _write_locked(self, session: WriteSession, h: Handle, off: int,
                            data: bytes) -> None:
        state = session.state
        if isinstance(state, Journaling) and off == state.end:
            if self._journal_write(state, data):
                return
            state = await self._to_streaming(session)  # too big for the journal, or no room
        if isinstance(state, Streaming) and off == state.end:
            await state.writer.write(data)
        else:
            cache = await self._to_cached(session, h)
            cache.write(off, data)

    async def _start_session(self, h: Handle, off: int) -> WriteSession:
        """The inode's write session, started by this write at `off` (or another handle's,
        started meanwhile: the caller then refuses this handle)."""
        version, size, pieces = self._current(h.inode)
        current = 0 if h.pending_truncate else size
        sequential = off in (0, current)
        journal_file = None
        if sequential and self.writeback is not None and self.write_back_max > 0:
            journal_file = await self.writeback.journal.take()
            if (other := self._sessions.get(h.inode)) is not None:  # started while we waited
                self.writeback.journal.give_back(journal_file)
                return other
        replace_all = h.pending_truncate or size == 0
        leases: list[str] = []
        state: Journaling | Streaming | Cached
        if journal_file is not None:
            state = Journaling(journal_file, off)
        elif sequential:
            state = Streaming(self._new_writer(leases), off)
        else:  # not sequential from the start: straight to the write cache
            base = [] if h.pending_truncate else pieces
            state = Cached(RandomSession(h.inode, base, current, self.writers.spool_dir,
                                         self.space))
        session = WriteSession(h.inode, h.fh, version, replace_all, state, leases)
        self._sessions[h.inode] = session
        h.pending_truncate = False  # the session carries the truncation: commits or fails with it
        return session

    def _journal_write(self, state: Journaling, data: bytes) -> bool:
        """Write-back: add `data` to the session's journal file, if it stays within
        write_back_max and the local disk has room; whether it did."""
        n = len(data)
        if (state.file.written + n > self.write_back_max
                or not self.space.try_take(n, keep=self.space.headroom)):
            return False
        state.reserved += n
        Journal.write(state.file, data)
        state.hasher.update(data)
        return True

    async def _to_streaming(self, session: WriteSession) -> Streaming:
        """Move a journaling session to streaming (a big file, or no local room): its bytes so
        far are fed from the journal file to a Writer, which then takes the rest."""
        state = session.state
        assert isinstance(state, Journaling) and self.writeback is not None
        writer = self._new_writer(session.leases)
        streaming = Streaming(writer, state.start)
        for chunk in Journal.chunks(state.file):
            await writer.write(chunk)
        session.become(streaming)
        self._release_journal(state)
        return streaming

    def _release_journal(self, state: Journaling) -> None:
        """A journal file the session no longer needs (moved on, aborted) goes back."""
        assert self.writeback is not None
        self.space.give(state.reserved)
        state.reserved = 0
        self.writeback.journal.give_back(state.file)

    def _new_writer(self, leases: list[str]) -> Writer:
        """A Writer whose upload lease (taken at its first segment) goes into `leases`."""

        def take_lease(upload_id: str) -> None:
            self.leases.take(upload_id)
            leases.append(upload_id)

        return self.writers.writer(self.store, self.layout, self._nursery, claim=self._claim,
                                   on_first_segment=take_lease)

    async def _to_cached(self, session: WriteSession, h: Handle) -> RandomSession:
        """The session's write cache, moving a streaming session there first (under its lock):
        what was streamed so far is published and becomes part of the base."""
        state = session.state
        if isinstance(state, Cached):
            return state.cache
        if isinstance(state, Journaling):
            state = await self._to_streaming(session)
        assert isinstance(state, Streaming)
        if session.inode not in self._cache_logged:  # once per file: SQLite's journal would
            self._cache_logged.add(session.inode)  # otherwise log one line per transaction
            log.info("inode %d: write at an offset other than %d: using the write cache",
                     session.inode, state.end)
        base = [] if session.replace_all else self._current(session.inode)[2]
        size = sum(p.length for p in base)
        if state.writer.size:
            try:
                content = await state.writer.finish()
            except BaseException as exc:
                self._fail(session, h, exc)
            base, size = compose(state.start, content, base, size)
        else:
            state.writer.abort()
        cache = RandomSession(session.inode, base, size, self.writers.spool_dir,
                              self.space)
        session.become(Cached(cache))
        return cache

    def _base_reader(self, cache: RandomSession) -> ReadBase:
        """Reads of the cache's (immutable) base, through one block-cached FileReader."""
        if cache.base_reader is None:
            size = sum(p.length for p in cache.base)
            cache.base_reader = FileReader(self._objects, cache.base, size, self._nursery,
                                           self._budget)

        async def read_base(start: int, length: int) -> bytes:
            reader: FileReader = cache.base_reader
            return await reader.read(start, length)

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

    # -- the one failure path ----------------------------------------------------------------

    def _fail(self, session: WriteSession, h: Handle | None, exc: BaseException) -> NoReturn:
        """A write or commit of `session` failed: nothing of it is ever published. The
        handle's error sticks, the session leaves the table, what it uploaded or cached is
        dropped in the background; `exc` is raised (the application gets its error now)."""
        reason = str(exc) or type(exc).__name__
        if h is not None and h.error is None:
            h.error = reason
        if not isinstance(session.state, Failed):
            self._drop(session, session.become(Failed(reason)))
        raise exc

    def _drop(self, session: WriteSession, previous: State) -> None:
        """Forget `session` (in state `previous`) and release what it holds; its uploads are
        deleted in the background, best effort (ccd cleanup collects the rest)."""
        if isinstance(previous, Committing):
            previous = previous.of
        if isinstance(previous, Journaling):
            self._release_journal(previous)
        elif isinstance(previous, Streaming):
            previous.writer.abort()
        elif isinstance(previous, Cached):
            previous.cache.close()
        self._forget(session)

    def _forget(self, session: WriteSession) -> None:
        """The session leaves the table; its upload leases end."""
        if self._sessions.get(session.inode) is session:
            del self._sessions[session.inode]
        self.leases.end(session.leases)
        session.leases.clear()
        self._session_ended.set()
        self._session_ended = trio.Event()

    # -- committing --------------------------------------------------------------------------

    async def flush(self, fh: int) -> None:
        """close(2): publish and commit what this handle wrote (errors reach the caller)."""
        h = self.handles.find(fh)
        if h is None:
            return
        h.check_error()
        session = self._sessions.get(h.inode)
        if session is not None and session.owner == fh:
            await self._commit(session, h)
        elif h.pending_truncate:
            await self._truncate_now(h)  # opened with O_TRUNC and never written

    async def fsync(self, fh: int) -> None:
        """fsync(2): commit what this handle wrote; in write-back mode also wait until the
        file's closed versions are in Swift and committed."""
        await self.flush(fh)
        h = self.handles.find(fh)
        if h is not None and self.writeback is not None:
            await self.writeback.drain(h.inode)

    async def sync(self) -> int:
        """`cloudfs sync`: until every version closed before now is in Swift and committed;
        how many there were (0 unless in write-back mode)."""
        return 0 if self.writeback is None else await self.writeback.drain_all()

    def replay(self, files: list[JournalFile]) -> None:
        """At mount start: the journal's closed versions become pending again."""
        if files:
            assert self.writeback is not None
            self.writeback.replay(files)

    async def upload_closed(self, stall: float) -> None:
        """Stopping: until every closed version in the write-back journal is in Swift and
        committed, as long as uploads progress (Swift takes bytes or commits happen at least
        every `stall` seconds). What is left stays in the journal for the next mount."""
        wb = self.writeback
        if wb is None or not wb.pending_files():
            return
        log.info("uploading %d closed files (%d bytes) from the write-back journal before "
                 "the mount ends", wb.pending_files(), wb.pending_bytes())
        try:
            while wb.pending_files():
                progress = (wb.committed, self.store.stats.bytes_sent)
                with trio.move_on_after(stall):
                    await wb.drain_all()
                if (wb.committed, self.store.stats.bytes_sent) == progress:
                    break  # no progress for `stall` seconds: Swift is unreachable
        finally:
            if wb.pending_files():
                log.warning("%d closed files (%d bytes) are not in Swift yet: they stay in "
                            "the write-back journal %s and are uploaded at the next mount",
                            wb.pending_files(), wb.pending_bytes(), wb.journal.directory)

    async def release(self, fh: int) -> None:
        h = self.handles.remove(fh)
        if h is None:
            return
        session = self._sessions.get(h.inode)
        try:
            if session is not None and session.owner == fh:
                await self._commit(session, h)  # written after the last flush (e.g. mmap)
            elif h.pending_truncate and h.error is None:
                await self._truncate_now(h)
        except Exception as exc:
            log.error("inode %d: changes after the last close are lost: %s", h.inode, exc)

    async def set_mtime(self, inode: int, mtime_ns: int) -> None:
        """utimens while a write is pending (the open file's times, as `cp -a`, `tar x` set
        them before close), or after a close whose version is pending in write-back mode (as
        rsync sets them): the commit keeps this time instead of stamping its own."""
        session = self._sessions.get(inode)
        if session is not None:
            session.mtime_ns = mtime_ns
        elif self.writeback is not None:
            await self.writeback.set_mtime(inode, mtime_ns)
        for h in self.handles.of_inode(inode):
            if h.pending_truncate:
                h.pending_mtime_ns = mtime_ns

    async def _truncate_now(self, h: Handle) -> None:
        """Apply a pending O_TRUNC, unless another writer committed since this open."""
        h.pending_truncate = False
        if self.writeback is not None:
            await self.writeback.drain(h.inode)  # its pending versions come first
        attr = self.ns.getattr(h.inode)
        if attr.size == 0 or attr.version != h.open_version:
            return  # already empty (e.g. just created), or a newer version was committed
        try:
            self.ns.set_content(h.inode, [], 0, expect_version=h.open_version,
                                mtime_ns=h.pending_mtime_ns)
        except Conflict:
            log.debug("inode %d: O_TRUNC skipped, a newer version was committed", h.inode)
            return
        self._committed(h.inode)

    async def _commit(self, session: WriteSession, h: Handle) -> None:
        with COMMIT_SECONDS.time():
            await self._commit_locked(session, h)

    async def _commit_locked(self, session: WriteSession, h: Handle) -> None:
        async with session.lock:
            if self._sessions.get(session.inode) is not session:
                return  # a concurrent flush (a dup'd descriptor) committed it already
            written = session.state
            if isinstance(written, Journaling):
                await self._close_into_journal(session, written, h)
                return
            assert isinstance(written, Streaming | Cached)
            if self.writeback is not None:
                await self.writeback.drain(session.inode)  # its pending versions come first
            session.become(Committing(written))
            try:
                pieces, size = await self._publish(session, written)
                # Compare-and-swap on the version the session started from, unless it
                # replaces the whole file from a stream: its result does not depend on the old
                # content, so a version committed meanwhile (another mount, a truncate) is
                # simply replaced, as by a later write. Every other session composed its new
                # version from the base pieces it read at the start: committing it over a
                # newer version would silently drop that version's bytes (ESTALE instead).
                keeps_base = not (session.replace_all and isinstance(written, Streaming))
                self.ns.set_content(session.inode, pieces, size,
                                    expect_version=session.base_version if keeps_base else None,
                                    mtime_ns=session.mtime_ns)
            except BaseException as exc:
                self._fail(session, h, exc)
            self._drop(session, written)  # done: the finished writer or the cache is released
        h.pending_truncate = False
        h.open_version = self._current(h.inode)[0]
        self._committed(h.inode)

    async def _close_into_journal(self, session: WriteSession, written: Journaling,
                                  h: Handle) -> None:
        """Write-back close: seal the journal file (one fsync) and hand it to the write-back,
        which uploads and commits it later; the mount shows the new version from now on."""
        assert self.writeback is not None
        session.become(Committing(written))
        try:
            path = self.ns.path_of(session.inode)
            record = Record(seq=self.writeback.journal.next_seq(), inode=session.inode,
                            base_version=session.base_version, replace_all=session.replace_all,
                            start=written.start, hash=written.hasher.hexdigest(),
                            size=written.file.written,
                            mtime_ns=session.mtime_ns or time.time_ns(),
                            path=os.fsdecode(path) if path else f"inode {session.inode}")
            await self.writeback.journal.seal(written.file, record)
        except BaseException as exc:
            self._fail(session, h, exc)
        _, base_size, base = self._current(session.inode)
        self.writeback.add(written.file, base, base_size)
        written.reserved = 0  # the write-back gives the space back once the file is in Swift
        self._forget(session)
        h.pending_truncate = False
        h.open_version = self._current(h.inode)[0]
        self._committed(h.inode)

    async def _publish(self, session: WriteSession, written: Streaming | Cached
                       ) -> tuple[list[Piece], int]:
        """Store what `written` holds; the new version's pieces and size."""
        if isinstance(written, Cached):
            cache = written.cache
            return await cache.commit(self._uploader(session), self._base_reader(cache)), \
                cache.size
        content = await written.writer.finish()
        base = [] if session.replace_all else self.ns.pieces(session.inode)
        return compose(written.start, content, base, sum(p.length for p in base))

    def _committed(self, inode: int) -> None:
        """After this mount changed the file: every open handle reads the new version (the
        kernel already shows them its new size), and the kernel's cached attributes go."""
        _, size, pieces = self._current(inode)
        for h in self.handles.of_inode(inode):
            h.show(pieces, size)
        if self.on_commit is not None:
            self.on_commit(inode)

    def _uploader(self, session: WriteSession) -> Upload:
        async def upload(chunks: AsyncIterator[bytes]) -> tuple[str, int]:
            writer = self._new_writer(session.leases)
            try:
                async for chunk in chunks:
                    await writer.write(chunk)
            except BaseException:
                writer.abort()
                raise
            content = await writer.finish()
            return content.hash, content.size

        return upload

    # -- truncate ----------------------------------------------------------------------------

    async def truncate(self, inode: int, size: int) -> None:
        for h in self.handles.of_inode(inode):
            if h.pending_truncate:
                await self._truncate_now(h)  # a pending O_TRUNC comes first
        while (session := self._sessions.get(inode)) is not None:
            async with session.lock:
                if self._sessions.get(inode) is not session:
                    continue  # committed or failed meanwhile: truncate what is there now
                state = session.state
                if isinstance(state, Streaming) and size == state.end:
                    return
                owner = self.handles.find(session.owner)
                if owner is None:
                    raise FsError(errno.EBUSY, f"inode {inode} is being written")
                cache = await self._to_cached(session, owner)
                cache.truncate(size)
                return
        if self.writeback is not None:
            await self.writeback.drain(inode)  # its pending versions come first
        self.ns.setattr(inode, size=size)
        self._committed(inode)

    # -- stopping ----------------------------------------------------------------------------

    async def wait_writers_closed(self, grace: float) -> None:
        """Stopping: until no file is open for writing, or `grace` seconds."""
        self.stopping = True
        if self.handles.writable:
            log.info("stopping: waiting up to %.0f s for %d files open for writing to close",
                     grace, self.handles.writable)
            with trio.move_on_after(grace):
                await self.handles.wait_no_writers()

    def abort_unclosed(self) -> None:
        """Apply ON_STOP to every session: abort what the application has not closed."""
        for session in list(self._sessions.values()):
            if ON_STOP[type(session.state)] is not StopAction.ABORT:
                continue
            path = self.ns.path_of(session.inode)
            shown = path.decode(errors="replace") if path else f"inode {session.inode}"
            log.warning("%s: not closed when the mount stopped: its write was aborted and "
                        "the file keeps its previous content", shown)
            owner = self.handles.find(session.owner)
            if owner is not None and owner.error is None:
                owner.error = "the mount stopped before the file was closed"
            self._drop(session, session.become(Failed("the mount stopped")))

    async def wait_commits(self) -> None:
        """Until no session is committing (the application closed them: they complete)."""
        while any(isinstance(s.state, Committing) for s in self._sessions.values()):
            await self._session_ended.wait()

    def writes(self) -> list[WriteSession]:
        """The write sessions in progress."""
        return list(self._sessions.values())

    def statistics(self) -> dict[str, object]:
        """Counters for `cloudfs stats` and the benchmarks: Swift requests by method, open
        files, writes in progress, namespace transactions committed."""
        return {"swift_requests": self.store.statistics(), "open_files": len(self.handles),
                "writes_in_progress": len(self._sessions),
                "namespace_commits": self.ns.commits,
                "write_back": None if self.writeback is None else self.writeback.backlog()}
