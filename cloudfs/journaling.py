# Methods of Files kept in their own module: `self` is the whole Files (mypy's "misc" check
# wants an explicit self type to be a supertype of the mixin, which Files is not).
# mypy: disable-error-code="misc"
"""Write-back's side of the open files (a part of `cloudfs.files.Files`): a sequential write
session fills a journal file (wiring/journal.py) while it stays within write_back_max and the
local disk has room, else it moves to streaming; its close seals the journal file (one fsync)
and hands it to the write-back (wiring/writeback.py), which uploads and commits it later.
Also `cloudfs sync`, the replay of the journal at mount start, and the upload of the backlog
when the mount stops."""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING

from cloudfs.handles import Handle
from cloudfs.session import (
    Committing,
    Journaling,
    Streaming,
    WriteSession,
)
from wiring.journal import Journal, JournalFile, Record

if TYPE_CHECKING:
    from cloudfs.files import Files

log = logging.getLogger("cloudfs.files")


class JournalingPaths:
    """Files' write-back paths (mixed into Files; methods take the whole Files as self)."""

    def _journal_write(self: Files, state: Journaling, data: bytes) -> bool:
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

    async def _to_streaming(self: Files, session: WriteSession) -> Streaming:
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

    def _release_journal(self: Files, state: Journaling) -> None:
        """A journal file the session no longer needs (moved on, aborted) goes back."""
        assert self.writeback is not None
        self.space.give(state.reserved)
        state.reserved = 0
        self.writeback.journal.give_back(state.file)

    async def _close_into_journal(self: Files, session: WriteSession, written: Journaling,
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
            # The file's name and attributes (committed lazily) are durable before the
            # record that says it was closed: a replay after a power failure finds its inode.
            await self.barrier.wait()
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

    async def sync(self: Files) -> int:
        """`cloudfs sync`: until every version closed before now is in Swift and committed,
        and every namespace change before now is durable;
        how many there were (0 unless in write-back mode)."""
        uploaded = 0 if self.writeback is None else await self.writeback.drain_all()
        await self.barrier.wait()  # and every namespace change before it is durable
        return uploaded

    def replay(self: Files, files: list[JournalFile]) -> None:
        """At mount start: the journal's closed versions become pending again."""
        if files:
            assert self.writeback is not None
            self.writeback.replay(files)

    async def upload_closed(self: Files, stall: float) -> None:
        """Stopping: until every closed version in the write-back journal is in Swift and
        committed, as long as uploads progress (Swift takes bytes or commits happen at least
        every `stall` seconds). What is left stays in the journal for the next mount."""
        wb = self.writeback
        if wb is None or not wb.pending_files():
            return
        log.info("uploading %d closed files (%d bytes) from the write-back journal before "
                 "the mount ends", wb.pending_files(), wb.pending_bytes())
        try:
            await wb.upload_backlog(stall, lambda: self.store.stats.bytes_sent)
        finally:
            if wb.pending_files():
                log.warning("%d closed files (%d bytes) are not in Swift yet: they stay in "
                            "the write-back journal %s and are uploaded at the next mount",
                            wb.pending_files(), wb.pending_bytes(), wb.journal.directory)
