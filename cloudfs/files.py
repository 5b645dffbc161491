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

`Files` is assembled from parts named for what they own: this module (reading, writing, the
write sessions' states and the one failure path), cloudfs/opening.py (new handles and what the
mount shows of a file), cloudfs/committing.py (close, fsync and the commit),
cloudfs/journaling.py (write-back: the journal side of a session and the backlog),
cloudfs/stopping.py (the stop sequence).
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from typing import NoReturn

import trio

from cloudfs.committing import Commits
from cloudfs.durability import Barrier
from cloudfs.errors import FsError
from cloudfs.handles import Handle, HandleTable
from cloudfs.holds import Holds
from cloudfs.journaling import JournalingPaths
from cloudfs.opening import Opening
from cloudfs.reader import BlockBudget, FileReader, ObjectMap
from cloudfs.rwcache import RandomSession, ReadBase
from cloudfs.session import (
    Cached,
    Committing,
    Failed,
    Journaling,
    State,
    Streaming,
    WriteSession,
)
from cloudfs.stopping import Stopping
from seqwrite import Layout, PublishMode, SwiftStore, Writer, WriterSettings
from sqlfsn import Namespace
from sqlfsn.errors import NamespaceError
from wiring.filesystem import STALE_DELETION_NS
from wiring.journal import Journal
from wiring.leases import Leases
from wiring.pieces import compose
from wiring.writeback import WriteBack

log = logging.getLogger(__name__)

CLAIM_WAIT = 60.0  # seconds a writer waits for the garbage collector to finish a deletion


class Files(Opening, Commits, JournalingPaths, Stopping):
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
                 on_commit: Callable[[int], None] | None = None,
                 journal: Journal | None = None, write_back_max: int = 0) -> None:
        self.ns = ns
        self.store = store
        self.layout = layout
        self.writers = writers
        self.leases = Leases(ns)
        self.barrier = Barrier(ns)  # durable barriers of lazy commits (cloudfs/durability.py)
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
            journal, ns, self.space, self.leases, self._new_writer, nursery,
            barrier=self.barrier.wait if self.barrier.beside_loop else None)
        self.write_back_max = write_back_max
        self._objects = ObjectMap(store, layout,
                                  None if self.writeback is None else self.writeback.local)
        self._sessions: dict[int, WriteSession] = {}
        self._session_ended = trio.Event()  # set (and renewed) whenever a session ends
        self._cache_logged: set[int] = set()  # inodes whose move to the cache was logged
        self.holds = Holds(ns)  # releases of holds and drops of orphans, batched

    @property
    def mount_id(self) -> int | None:
        return self.holds.mount_id

    @mount_id.setter
    def mount_id(self, mount_id: int | None) -> None:
        if mount_id != self.holds.mount_id:
            self.holds.forget_releases()  # the old row's holds went with it
        self.holds.mount_id = mount_id

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
            session = await self._start_session(h, None if h.append else off)
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
            if h.append:  # at the end, whatever the kernel's (maybe stale) size said
                state = session.state
                if isinstance(state, Journaling | Streaming):
                    off = state.end
                elif isinstance(state, Cached):
                    off = state.cache.size
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

    async def _start_session(self, h: Handle, off: int | None) -> WriteSession:
        """The inode's write session, started by this write at `off` (None: at the end), or
        another handle's, started meanwhile (the caller then refuses this handle)."""
        if self.mount_id is not None:
            holder = self.ns.take_writer(self.mount_id, h.inode)
            if holder is not None:
                h.error = "another mount was writing the file (EBUSY)"  # sticky, as below
                raise FsError(errno.EBUSY, f"inode {h.inode} is being written by "
                              f"{holder.describe()}; one writer per file at a time")
        try:
            return await self._new_session(h, off)
        except BaseException:
            if h.inode not in self._sessions:
                self._release_writer(h.inode)
            raise

    def _release_writer(self, inode: int) -> None:
        if self.mount_id is not None:
            try:
                self.ns.release_writer(self.mount_id, inode)
            except NamespaceError as exc:  # released with the mount's row at the latest
                log.warning("inode %d: could not release the write lease: %s", inode, exc)

    async def _new_session(self, h: Handle, off: int | None) -> WriteSession:
        version, size, pieces = self._current(h.inode)
        current = 0 if h.pending_truncate else size
        if off is None:
            off = current
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
        self._release_writer(session.inode)
        self._session_ended.set()
        self._session_ended = trio.Event()

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

    # -- state -------------------------------------------------------------------------------

    def writes(self) -> list[WriteSession]:
        """The write sessions in progress."""
        return list(self._sessions.values())

    def statistics(self) -> dict[str, object]:
        """Counters for `cloudfs stats` and the benchmarks: Swift requests by method, open
        files, writes in progress, namespace transactions committed."""
        return {"swift_requests": self.store.statistics(), "open_files": len(self.handles),
                "writes_in_progress": len(self._sessions),
                "namespace_commits": self.ns.commits,
                "namespace_lazy_commits": self.ns.lazy_commits,
                "namespace_syncs": self.ns.syncs,
                "namespace_unsynced": self.ns.commits - self.ns.synced,
                "write_back": None if self.writeback is None else self.writeback.backlog()}
