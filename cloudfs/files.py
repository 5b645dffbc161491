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

import contextlib
import errno
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import NoReturn

import trio

from cloudfs.errors import FsError
from cloudfs.handles import Handle, HandleTable
from cloudfs.reader import BlockBudget, FileReader, ObjectMap
from cloudfs.rwcache import RandomSession, ReadBase, Upload
from cloudfs.session import (
    ON_STOP,
    Cached,
    Committing,
    Failed,
    State,
    StopAction,
    Streaming,
    WriteSession,
    compose,
)
from seqwrite import Layout, PublishMode, SwiftStore, Writer, WriterSettings
from sqlfsn import Namespace, Piece
from sqlfsn.errors import Conflict, NamespaceError, NotFound
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
        mount_id: this mount's id among the mounts of the namespace (cloudfs/shared.py); on
            PostgreSQL it holds every open file (an unlink elsewhere keeps it) and takes a
            file's write lease for each write session (a writer on another mount: EBUSY).
    """

    def __init__(self, ns: Namespace, store: SwiftStore, layout: Layout, nursery: trio.Nursery,
                 *, writers: WriterSettings, read_budget: BlockBudget,
                 stale_deletion_ns: int = STALE_DELETION_NS,
                 on_commit: Callable[[int], None] | None = None) -> None:
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
        self._objects = ObjectMap(store, layout)
        if writers.space is None:
            raise ValueError("the mount's writers need a LocalSpace (the write cache uses it)")
        self.space = writers.space
        self._sessions: dict[int, WriteSession] = {}
        self._session_ended = trio.Event()  # set (and renewed) whenever a session ends
        self._cache_logged: set[int] = set()  # inodes whose move to the cache was logged
        self.mount_id: int | None = None

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
        if self.mount_id is not None and not self.handles.count(inode):
            self.ns.hold_open(self.mount_id, inode)  # before reading: kept from now on
        pieces = self.ns.pieces(inode) if attr.size else []
        h = self.handles.add(inode, writable=writable, truncate=truncate, pieces=pieces,
                             size=attr.size, version=attr.version)
        h.append = writable and bool(flags & os.O_APPEND)
        return h.fh

    def hold_all_open(self) -> None:
        """Hold every open file again (this mount registered anew, see shared.py)."""
        if self.mount_id is not None:
            for inode in {h.inode for h in self.handles}:
                with contextlib.suppress(NotFound):  # deleted meanwhile: reads still work
                    self.ns.hold_open(self.mount_id, inode)

    def inode_of(self, fh: int) -> int | None:
        h = self.handles.find(fh)
        return None if h is None else h.inode

    def open_count(self, inode: int) -> int:
        return self.handles.count(inode)

    @property
    def writing(self) -> bool:
        """Whether any write is in progress (else no file has a writing size)."""
        return bool(self._sessions)

    def writing_size(self, inode: int) -> int | None:
        """The size the writer sees while a write is in progress (getattr shows it). A pending
        O_TRUNC shows at close, like the rest of a write."""
        session = self._sessions.get(inode)
        if session is None:
            return None
        size = session.size
        if size is None:
            return None
        if isinstance(session.state, Streaming | Committing) and not session.replace_all:
            return max(size, self.ns.getattr(inode).size)  # a write inside the old content
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
            session = self._start_session(h, None if h.append else off)
        elif session.owner != fh:
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
                state = session.state
                if h.append:  # at the end, whatever the kernel's (maybe stale) size said
                    if isinstance(state, Streaming):
                        off = state.end
                    elif isinstance(state, Cached):
                        off = state.cache.size
                if isinstance(state, Streaming) and off == state.end:
                    await state.writer.write(data)
                else:
                    cache = await self._to_cached(session, h)
                    cache.write(off, data)
            except FsError as exc:
                if exc.errno == errno.ENOSPC:
                    raise  # the cache is full: this write failed, the session is intact
                self._fail(session, h, exc)
            except BaseException as exc:
                self._fail(session, h, exc)
        return len(data)

    def _start_session(self, h: Handle, off: int | None) -> WriteSession:
        if self.mount_id is not None:
            holder = self.ns.take_writer(self.mount_id, h.inode)
            if holder is not None:
                h.error = "another mount was writing the file (EBUSY)"  # sticky, as below
                raise FsError(errno.EBUSY, f"inode {h.inode} is being written by "
                              f"{holder.describe()}; one writer per file at a time")
        try:
            return self._new_session(h, off)
        except BaseException:
            self._release_writer(h.inode)
            raise

    def _release_writer(self, inode: int) -> None:
        if self.mount_id is not None:
            try:
                self.ns.release_writer(self.mount_id, inode)
            except NamespaceError as exc:  # released with the mount's row at the latest
                log.warning("inode %d: could not release the write lease: %s", inode, exc)

    def _new_session(self, h: Handle, off: int | None) -> WriteSession:
        """A session of `h` whose first write is at `off` (None: at the end)."""
        attr = self.ns.getattr(h.inode)
        current = 0 if h.pending_truncate else attr.size
        if off is None:
            off = current
        replace_all = h.pending_truncate or attr.size == 0
        leases: list[str] = []
        state: Streaming | Cached
        if off in (0, current):
            state = Streaming(self._new_writer(leases), off)
        else:  # not sequential from the start: straight to the write cache
            base = [] if h.pending_truncate else self.ns.pieces(h.inode)
            state = Cached(RandomSession(h.inode, base, current, self.writers.spool_dir,
                                         self.space))
        session = WriteSession(h.inode, h.fh, attr.version, replace_all, state, leases)
        self._sessions[h.inode] = session
        h.pending_truncate = False  # the session carries the truncation: commits or fails with it
        return session

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
        assert isinstance(state, Streaming)
        if session.inode not in self._cache_logged:  # once per file: SQLite's journal would
            self._cache_logged.add(session.inode)  # otherwise log one line per transaction
            log.info("inode %d: write at an offset other than %d: using the write cache",
                     session.inode, state.end)
        base = [] if session.replace_all else self.ns.pieces(session.inode)
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
        if self._sessions.get(session.inode) is session:
            del self._sessions[session.inode]
        if isinstance(previous, Committing):
            previous = previous.of
        if isinstance(previous, Streaming):
            previous.writer.abort()
        elif isinstance(previous, Cached):
            previous.cache.close()
        self.leases.end(session.leases)
        session.leases.clear()
        self._release_writer(session.inode)
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
            self._truncate_now(h)  # opened with O_TRUNC and never written

    async def fsync(self, fh: int) -> None:
        await self.flush(fh)

    async def release(self, fh: int) -> None:
        h = self.handles.remove(fh)
        if h is None:
            return
        session = self._sessions.get(h.inode)
        try:
            if session is not None and session.owner == fh:
                await self._commit(session, h)  # written after the last flush (e.g. mmap)
            elif h.pending_truncate and h.error is None:
                self._truncate_now(h)
        except Exception as exc:
            log.error("inode %d: changes after the last close are lost: %s", h.inode, exc)
        finally:
            if self.mount_id is not None and not self.handles.count(h.inode):
                try:
                    self.ns.release_open(self.mount_id, h.inode)
                except NamespaceError as exc:  # released with the mount's row at the latest
                    log.warning("inode %d: could not release the hold: %s", h.inode, exc)

    def set_mtime(self, inode: int, mtime_ns: int) -> None:
        """utimens while a write is pending (the open file's times, as `cp -a`, `tar x` set
        them before close): the commit keeps this time instead of stamping its own."""
        session = self._sessions.get(inode)
        if session is not None:
            session.mtime_ns = mtime_ns
        for h in self.handles.of_inode(inode):
            if h.pending_truncate:
                h.pending_mtime_ns = mtime_ns

    def _truncate_now(self, h: Handle) -> None:
        """Apply a pending O_TRUNC, unless another writer committed since this open."""
        h.pending_truncate = False
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
            assert isinstance(written, Streaming | Cached)
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
        h.open_version = self.ns.getattr(h.inode).version
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
        self.show_latest(inode)
        if self.on_commit is not None:
            self.on_commit(inode)

    def show_latest(self, inode: int) -> None:
        """Another mount committed a new version: open handles read it (as `_committed`)."""
        with contextlib.suppress(NotFound):
            pieces = self.ns.pieces(inode)
            size = sum(p.length for p in pieces)
            for h in self.handles.of_inode(inode):
                h.show(pieces, size)

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
                self._truncate_now(h)  # a pending O_TRUNC comes first
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
                "namespace_commits": self.ns.commits}
