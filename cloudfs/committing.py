# Methods of Files kept in their own module: `self` is the whole Files (mypy's "misc" check
# wants an explicit self type to be a supertype of the mixin, which Files is not).
# mypy: disable-error-code="misc"
"""Closing and committing (a part of `cloudfs.files.Files`): flush (close), fsync, release,
utimens while a write is pending, a pending O_TRUNC, and the commit of a session: publish what
it wrote, compare-and-swap the namespace, show the new version to every open handle. A failed
commit answers EIO and leaves the previous content (`Files._fail`)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from cloudfs.handles import Handle
from cloudfs.rwcache import Upload
from cloudfs.session import (
    Cached,
    Committing,
    Journaling,
    Streaming,
    WriteSession,
)
from sqlfsn import Piece
from sqlfsn.errors import Conflict, NotFound
from wiring.metrics import COMMIT_SECONDS
from wiring.pieces import compose

if TYPE_CHECKING:
    from cloudfs.files import Files

log = logging.getLogger("cloudfs.files")


class Commits:
    """Files' commit path (mixed into Files; methods take the whole Files as self)."""

    async def flush(self: Files, fh: int) -> None:
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

    async def fsync(self: Files, fh: int) -> None:
        """fsync(2): commit what this handle wrote; in write-back mode also wait until the
        file's closed versions are in Swift and committed."""
        await self.flush(fh)
        h = self.handles.find(fh)
        if h is not None and self.writeback is not None:
            await self.writeback.drain(h.inode)
        await self.barrier.wait()  # and every namespace change before it is durable

    async def release(self: Files, fh: int) -> None:
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
        finally:
            if self.mount_id is not None and not self.handles.count(h.inode):
                self.holds.release(h.inode)  # batched (cloudfs/holds.py says why it may be)

    async def set_mtime(self: Files, inode: int, mtime_ns: int) -> None:
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

    async def _truncate_now(self: Files, h: Handle) -> None:
        """Apply a pending O_TRUNC, unless another writer committed since this open."""
        h.pending_truncate = False
        if self.writeback is not None:
            await self.writeback.drain(h.inode)  # its pending versions come first
        attr = self.ns.getattr(h.inode)
        if attr.size == 0 or attr.version != h.open_version:
            return  # already empty (e.g. just created), or a newer version was committed
        try:
            await self.barrier.durably(lambda: self.ns.set_content(
                h.inode, [], 0, expect_version=h.open_version, mtime_ns=h.pending_mtime_ns))
        except Conflict:
            log.debug("inode %d: O_TRUNC skipped, a newer version was committed", h.inode)
            return
        self._committed(h.inode)

    async def _commit(self: Files, session: WriteSession, h: Handle) -> None:
        with COMMIT_SECONDS.time():
            await self._commit_locked(session, h)

    async def _commit_locked(self: Files, session: WriteSession, h: Handle) -> None:
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
                # Durable before close returns, with every namespace change before it
                # (the create, chmod, utimes...): one barrier shared with concurrent closes.
                attr = await self.barrier.durably(lambda: self.ns.set_content(
                    session.inode, pieces, size,
                    expect_version=session.base_version if keeps_base else None,
                    mtime_ns=session.mtime_ns))
            except BaseException as exc:
                self._fail(session, h, exc)
            self._drop(session, written)  # done: the finished writer or the cache is released
        h.pending_truncate = False
        # What the mount shows now: this version, unless write-back has newer ones pending.
        current = (attr.version, size, pieces) if self.writeback is None else None
        h.open_version = current[0] if current else self._current(h.inode)[0]
        self._committed(h.inode, current)

    async def _publish(self: Files, session: WriteSession, written: Streaming | Cached
                       ) -> tuple[list[Piece], int]:
        """Store what `written` holds; the new version's pieces and size."""
        if isinstance(written, Cached):
            cache = written.cache
            return await cache.commit(self._uploader(session), self._base_reader(cache)), \
                cache.size
        content = await written.writer.finish()
        base = [] if session.replace_all else self.ns.pieces(session.inode)
        return compose(written.start, content, base, sum(p.length for p in base))

    def _committed(self: Files, inode: int,
                   current: tuple[int, int, list[Piece]] | None = None) -> None:
        """After this mount changed the file: every open handle reads the new version (the
        kernel already shows them its new size), and the kernel's cached attributes go.
        `current`: the (version, size, pieces) the mount shows now, if known."""
        self.show_latest(inode, current)
        if self.on_commit is not None:
            self.on_commit(inode)

    def show_latest(self: Files, inode: int,
                    current: tuple[int, int, list[Piece]] | None = None) -> None:
        """Open handles read the newest version (as `_committed`; also called when another
        mount committed one)."""
        with contextlib.suppress(NotFound):
            _, size, pieces = current or self._current(inode)
            for h in self.handles.of_inode(inode):
                h.show(pieces, size)

    def _uploader(self: Files, session: WriteSession) -> Upload:
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
