"""Write-back: files closed into the journal, uploaded and committed in the background.

In write-back mode a sequential write goes into a journal file (wiring/journal.py) and close
returns once that file is sealed (one fsync): the new version is then *pending*. This module
owns what pending versions mean to the mount:

- `Pending`: per inode, the versions closed and not committed yet, in order, and the view
  the mount shows of the file meanwhile (size, mtime, pieces): readers on this mount see the
  new content at once. Other mounts see the committed version until the upload is done.
- `LocalContents`: the journal files' data by content hash, for reads (a hash names the same
  bytes wherever they are: served from the journal while it holds them).
- `WriteBack`: one task per inode with pending versions uploads them in order (a Writer fed
  from the journal file, claims and publishes as any write does), then commits each with a
  compare-and-swap on the version it was written over; `drain` waits for an inode or for all.

Nothing pending is ever lost: a failed upload is retried (with a growing pause) until it
succeeds; a crash leaves the sealed journal files, which the next mount replays
(`WriteBack.replay`), or `ccd replay` (ccd/replay.py: the same class, without a mount). A
commit whose base version moved (another mount wrote the file) keeps the closed bytes as a
conflict copy beside the file, never drops them.

No FUSE here (the mount's side is cloudfs/journaling.py): this module serves both daemons.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import trio

from seqwrite import StoredContent, StoreError, Writer
from seqwrite.space import LocalSpace
from sqlfsn import ROOT_INODE, Namespace, Piece
from sqlfsn.errors import Conflict, NamespaceError, NotFound
from wiring.journal import READ_CHUNK, Journal, JournalFile, Record
from wiring.leases import Leases
from wiring.pieces import compose

log = logging.getLogger(__name__)

UPLOADS = 8  # versions uploaded at once
RETRY_FIRST, RETRY_MAX = 5.0, 300.0  # pause after a failed upload, doubling up to this


@dataclass(eq=False, slots=True)
class Pending:
    """The versions of one inode closed into the journal and not committed yet.

    Attributes:
        files: their journal files, oldest first (each holds one sealed record).
        size, mtime_ns, pieces: the newest pending version, as the mount shows it.
        version: the version the inode will have once every pending record is committed.
        done: set once none is left.
    """

    files: deque[JournalFile]
    size: int
    mtime_ns: int
    pieces: list[Piece]
    version: int
    done: trio.Event = field(default_factory=trio.Event)


class _LocalSpan:
    """A journal file's bytes [start, end), read in order (a SequentialStream span). Reads run
    in worker threads: the file is held (`Journal.read_from`) until the span ends or closes,
    so it is never emptied and reused for another record under a read."""

    def __init__(self, journal: Journal, jf: JournalFile, start: int, end: int) -> None:
        self.journal, self.jf, self.pos, self.end = journal, jf, start, end
        self._held = True
        journal.read_from(jf)

    async def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), self.end - self.pos)
        if n <= 0:
            self.close()
            return 0
        got = await trio.to_thread.run_sync(os.preadv, self.jf.fd, [buf[:n]], self.pos)
        if not got:
            raise OSError(f"journal file {self.jf.path} is shorter than its record")
        self.pos += got
        return got

    def close(self) -> None:
        self.pos = self.end
        if self._held:
            self._held = False
            self.journal.unread(self.jf)


class LocalContents:
    """Contents still in the journal, by hash (the reader's LocalSource)."""

    def __init__(self, journal: Journal) -> None:
        self._journal = journal
        self._files: dict[str, list[JournalFile]] = {}

    def add(self, digest: str, jf: JournalFile) -> None:
        self._files.setdefault(digest, []).append(jf)

    def remove(self, digest: str, jf: JournalFile) -> None:
        files = self._files.get(digest, [])
        if jf in files:
            files.remove(jf)
        if not files:
            self._files.pop(digest, None)

    def read(self, digest: str, offset: int, length: int) -> bytes | None:
        """Blocking (on the trio thread, which also removes files: never under a reuse)."""
        files = self._files.get(digest)
        if not files:
            return None
        return os.pread(files[0].fd, length, offset)

    def span(self, digest: str, start: int, end: int) -> _LocalSpan | None:
        files = self._files.get(digest)
        return None if not files else _LocalSpan(self._journal, files[0], start, end)


NewWriter = Callable[[list[str]], Writer]  # (leases list) -> a Writer taking its lease there


class WriteBack:
    """Pending versions and their uploads (see the module docstring)."""

    def __init__(self, journal: Journal, ns: Namespace, space: LocalSpace, leases: Leases,
                 new_writer: NewWriter, nursery: trio.Nursery, *,
                 sole_writer: bool | None = None,
                 barrier: Callable[[], Awaitable[None]] | None = None) -> None:
        self.journal = journal
        # A shared durable barrier (the mount's, cloudfs/durability.py): the upload's commit
        # is then made lazily and made durable by it, off the event loop and shared with the
        # other uploads and closes, before the journal file goes. None: a durable commit.
        self._barrier = barrier
        self.ns = ns
        self.space = space
        self.leases = leases
        self.local = LocalContents(journal)
        self._new_writer = new_writer
        self._nursery = nursery
        self._pending: dict[int, Pending] = {}
        self._uploads = trio.CapacityLimiter(UPLOADS)
        self.failures = 0  # uploads that failed and wait to be retried
        self.committed = 0
        self.conflicts = 0  # versions kept as conflict copies
        self.dropped = 0  # records replay found with nothing left to do (committed, deleted)
        # Whether the namespace's content versions change only through us (an SQLite
        # namespace's one mount): see _committed_already. ccd's replay is never the sole
        # writer (a mount may run beside it).
        self.sole_writer = not ns.shared if sole_writer is None else sole_writer

    # -- what the mount shows ----------------------------------------------------------------

    def view(self, inode: int) -> Pending | None:
        """The inode's pending versions, if any (their newest is what the mount shows)."""
        return self._pending.get(inode)

    def any_pending(self) -> bool:
        """Whether some inode has a pending version (cheap: asked per listed entry)."""
        return bool(self._pending)

    def pending_files(self) -> int:
        return sum(len(p.files) for p in self._pending.values())

    def pending_bytes(self) -> int:
        return sum(jf.written for p in self._pending.values() for jf in p.files)

    def backlog(self) -> dict[str, float]:
        """The journal's backlog for `cloudfs status` and the metrics: closed versions not
        committed yet (files, bytes, age of the oldest in seconds), uploads waiting for a
        retry after a failure, versions committed since the mount."""
        files = [jf for p in self._pending.values() for jf in p.files]
        now = time.time()
        oldest = min((jf.sealed for jf in files if jf.sealed), default=now)
        return {"files": len(files), "bytes": sum(jf.written for jf in files),
                "oldest": now - oldest, "failing": self.failures,
                "committed": self.committed}

    # -- adding ------------------------------------------------------------------------------

    def add(self, jf: JournalFile, base: list[Piece], base_size: int) -> Pending:
        """A sealed record: the inode's newest pending version, uploaded in its turn."""
        record = jf.record
        assert record is not None
        new = StoredContent(record.hash, record.size, "object" if record.size else "empty")
        pieces, size = compose(record.start, new, [] if record.replace_all else base,
                               0 if record.replace_all else base_size)
        if record.size:
            self.local.add(record.hash, jf)
        pending = self._pending.get(record.inode)
        if pending is None:
            pending = self._pending[record.inode] = Pending(
                deque(), size, record.mtime_ns, pieces, record.base_version + 1)
            self._nursery.start_soon(self._upload_all, record.inode, pending)
        else:
            pending.size, pending.mtime_ns, pending.pieces = size, record.mtime_ns, pieces
            pending.version = record.base_version + 1
        pending.files.append(jf)
        return pending

    async def set_mtime(self, inode: int, mtime_ns: int) -> bool:
        """utimens after close: the newest pending version commits with this time (the
        journal record is amended, so a crash keeps it). Whether there was one."""
        pending = self._pending.get(inode)
        if pending is None or not pending.files:
            return False
        await self.journal.amend(pending.files[-1], mtime_ns=mtime_ns)
        pending.mtime_ns = mtime_ns
        return True

    def replay(self, files: list[JournalFile]) -> None:
        """Pending versions of the journal at mount start: their base is the committed version
        (or the previous record's), rebuilt in order; records already committed are done."""
        for jf in files:
            record = jf.record
            assert record is not None
            pending = self._pending.get(record.inode)
            if pending is None:
                try:
                    attr, base = self.ns.versioned_pieces(record.inode)
                except NotFound:
                    log.info("%s: deleted since it was closed; its journal record is dropped",
                             record.path)
                    self.dropped += 1
                    self.journal.retire_now(jf)
                    continue
                if self._committed_already(record, attr.version, base):
                    self.dropped += 1
                    self.journal.retire_now(jf)
                    continue
                base_size = attr.size
            else:
                base, base_size = pending.pieces, pending.size
            self.space.used += jf.written  # counted again, given back when done
            self.add(jf, base, base_size)

    def _committed_already(self, record: Record, version: int, pieces: list[Piece]) -> bool:
        """Whether `record` was committed before a crash ended the mount (its journal file
        was not emptied yet). Content versions of an SQLite namespace change only through its
        one mount, whose pending records commit in order: a version past the record's base is
        the record's. With several mounts (PostgreSQL), or replayed by ccd (a mount may have
        written the file since), another writer may have moved it: the record counts as
        committed only if the file still holds its content; otherwise it is kept (a conflict
        copy at worst), never guessed away."""
        if version <= record.base_version:
            return False
        if self.sole_writer:
            return True
        return record.size == 0 or any(p.hash == record.hash for p in pieces)

    # -- waiting -----------------------------------------------------------------------------

    async def drain(self, inode: int) -> None:
        """Until the inode's pending versions are committed."""
        pending = self._pending.get(inode)
        if pending is not None:
            await pending.done.wait()

    async def drain_all(self) -> int:
        """Until every version pending now is committed; how many there were."""
        waiting = list(self._pending.values())
        count = sum(len(p.files) for p in waiting)
        for pending in waiting:
            await pending.done.wait()
        return count

    async def upload_backlog(self, stall: float, sent: Callable[[], int]) -> None:
        """Until every pending version is committed, as long as uploads progress: Swift takes
        bytes (`sent()`, the store's bytes sent so far, grows) or commits happen at least
        every `stall` seconds. What is left then stays in the journal."""
        while self.pending_files():
            progress = (self.committed, sent())
            with trio.move_on_after(stall):
                await self.drain_all()
            if (self.committed, sent()) == progress:
                return  # no progress for `stall` seconds: Swift is unreachable

    # -- uploading ---------------------------------------------------------------------------

    async def _upload_all(self, inode: int, pending: Pending) -> None:
        """The inode's task: its records in order, each retried until it is committed."""
        pause = RETRY_FIRST
        try:
            while pending.files:
                jf = pending.files[0]
                try:
                    async with self._uploads:
                        await self._upload_one(jf)
                    if self._barrier is not None:  # durable before the journal file goes
                        await self._barrier()  # (outside the slot: the next upload starts)
                except (StoreError, NamespaceError, OSError) as exc:
                    self.failures += 1
                    record = jf.record
                    log.warning("%s: upload of the closed version failed (%s); retried in "
                                "%.0f s, kept in the journal meanwhile",
                                record.path if record else inode, exc, pause)
                    await trio.sleep(pause)
                    self.failures -= 1
                    pause = min(RETRY_MAX, 2 * pause)
                    continue
                pause = RETRY_FIRST
                pending.files.popleft()
                await self._done(jf)
        finally:
            if self._pending.get(inode) is pending and not pending.files:
                del self._pending[inode]
                pending.done.set()

    async def _done(self, jf: JournalFile) -> None:
        record = jf.record
        assert record is not None
        self.local.remove(record.hash, jf)
        self.space.give(jf.written)
        self.committed += 1
        await self.journal.retire(jf)

    async def _upload_one(self, jf: JournalFile) -> None:
        record = jf.record
        assert record is not None
        try:
            attr, base = self.ns.versioned_pieces(record.inode)
        except NotFound:
            return  # deleted meanwhile: nothing to commit
        if attr.version > record.base_version and self._committed_already(
                record, attr.version, base):
            return  # committed before a crash (its journal file survived)
        leases: list[str] = []
        try:
            content = await self._store(jf, leases)
            if self._barrier is None:
                self._commit(record, content, base, attr.size)
            else:
                with self.ns.lazily():  # made durable by the barrier in _upload_all
                    self._commit(record, content, base, attr.size)
        finally:
            self.leases.end(leases)

    async def _store(self, jf: JournalFile, leases: list[str]) -> StoredContent:
        record = jf.record
        assert record is not None
        if not record.size:
            return StoredContent(record.hash, 0, "empty")
        writer = self._new_writer(leases)
        try:
            async for chunk in _chunks(jf, record.size):
                await writer.write(chunk)
            content = await writer.finish()
        except BaseException:
            writer.abort()
            raise
        if content.hash != record.hash:
            raise StoreError(f"journal file {jf.path} changed: {content.hash} is not "
                             f"{record.hash}")
        return content

    def _commit(self, record: Record, content: StoredContent, base: list[Piece],
                base_size: int) -> None:
        replace_all = record.replace_all
        pieces, size = compose(record.start, content, [] if replace_all else base,
                               0 if replace_all else base_size)
        try:
            self.ns.set_content(record.inode, pieces, size, expect_version=record.base_version,
                                mtime_ns=record.mtime_ns)
        except NotFound:
            log.debug("%s: deleted before its closed version was committed", record.path)
        except Conflict:
            self._keep_as_conflict(record, content)

    def _keep_as_conflict(self, record: Record, content: StoredContent) -> None:
        """The file moved on without us (another mount wrote it): the closed bytes are kept
        as a new file beside it (in the root if it has no name left), never dropped."""
        attr = self.ns.getattr(record.inode)
        where = self.ns.parent_and_name(record.inode)
        directory, name = where if where is not None else (ROOT_INODE, b"orphan")
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(record.mtime_ns / 1e9))
        copy = name[:200] + f".cloudfs-conflict-{stamp}-{record.seq}".encode()
        new = self.ns.create(directory, copy, attr.mode, attr.uid, attr.gid)
        pieces = [] if content.kind == "empty" else [Piece(content.hash, 0, content.size)]
        self.ns.set_content(new.inode, pieces, content.size, mtime_ns=record.mtime_ns)
        self.conflicts += 1
        log.error("%s: changed elsewhere (version %d, not %d) before this mount's closed "
                  "version was committed; that version is kept as %r beside it", record.path,
                  attr.version, record.base_version, os.fsdecode(copy))


async def _chunks(jf: JournalFile, size: int) -> AsyncIterator[bytes]:
    pos = 0
    while pos < size:
        data = await trio.to_thread.run_sync(os.pread, jf.fd, min(READ_CHUNK, size - pos), pos)
        if not data:
            raise OSError(f"journal file {jf.path} is shorter than its record")
        pos += len(data)
        yield data
