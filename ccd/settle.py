"""Settling: re-store a file made of many pieces as one whole-file CAS content, in the background.

An append adds a piece; a random write commits each written range as a content of its own; a
truncation keeps part of a content or adds a hole. Such a file reads correctly, but every read
crosses many small objects and the file has no whole-file CAS name. A settle pass, for every
file whose content is not the single piece (H, 0, size of H) and whose version has not changed
for `settle_grace` seconds:

  1. reads its version and pieces in one snapshot (sqlfsn `versioned_pieces`);
  2. streams its bytes from Swift (pieces in order, holes as zeros: seqwrite `stream_spans`)
     into a seqwrite `Writer`, exactly as the mount writes a new file: upload lease taken at
     the first segment and heartbeated, content claimed before publishing (the GC fence),
     published at the blake3 of the whole file (412 = already stored: dedup);
  3. commits with a compare-and-swap (sqlfsn `settle`): the file becomes the one piece
     (H, 0, size) only if its version is still the one read in 1. Size, times and version
     are unchanged (the bytes are the same); the contents of the old pieces are claimed
     again, so the GC keeps them one grace more for readers of the old version.

Why nothing is lost (docs/LAYOUT.md, "Settling appended and patched files"): until 3 the file
still names its old pieces, which the file references (the GC keeps them); 3 is one
transaction that fails if any write committed since 1, so a settle never overwrites newer
bytes; a writer that read the old version and commits after 3 still succeeds and is right,
because its pieces are positions in the same bytes. Whatever a failed or refused settle
published is referenced by nothing and is collected by the cleanup after its grace. An error
means keep: the file is left as it was and the next pass tries again.

`settle_grace` is not what makes this safe (the compare-and-swap is); it keeps ccd from
re-uploading a file that is still being appended to.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence

import trio

from ccd.context import Context, for_each, sole_error
from ccd.crash import CrashInjected, CrashPoints
from ccd.report import Report
from seqwrite import PublishMode, Span, StoredContent, StoreError, WriterSettings, stream_spans
from sqlfsn import Piece, UnsettledFile
from sqlfsn.errors import Conflict, NamespaceError, NotFound
from wiring.leases import Leases

log = logging.getLogger(__name__)

DEFAULT_SETTLE_GRACE = 600.0
# Files settled at once. Each holds at most seqwrite.spans.BUDGET + one chunk read from Swift
# plus the writer's buffers (about 40 MiB); one big file keeps both cores of a small host busy.
CONCURRENCY = 2
SPARSE_RATIO = 0.5  # a file whose holes exceed this share of its size is left as it is

BeforeCommit = Callable[[int], Awaitable[None]]
# Where a pass can be told to crash: after a settle published its content, or committed it.
CRASH_POINTS = ("publish", "settle")


class ClaimRefused(Exception):
    """The garbage collector is deleting this content right now: try again next pass."""


class Settler(CrashPoints):
    """Runs settle passes; `ccd run` keeps one across passes.

    Attributes:
        ctx: namespace, store, layout (the grace is the cleanup's business, not used here).
        settle_grace: seconds a file's version must have been unchanged (its ctime).
        writers: the Writers' settings, as the mount's.
        leases: the upload leases of settles in progress (one per file, taken at its first
            segment), refreshed while streaming.
        crash_after: "publish" (content published, not committed) or "settle" (committed):
            stop the pass dead there (tests, CCD_CRASH_AFTER).
        before_commit: awaited with the inode right before the commit (tests: races).
    """

    ctx: Context
    settle_grace: float
    crash_after: str | None

    def __init__(self, ctx: Context, *, settle_grace: float = DEFAULT_SETTLE_GRACE,
                 writers: WriterSettings | None = None, crash_after: str | None = None,
                 before_commit: BeforeCommit | None = None) -> None:
        self.ctx = ctx
        self.settle_grace = settle_grace
        self.writers = writers or WriterSettings()
        self._crash_after(crash_after, CRASH_POINTS)
        self.leases = Leases(ctx.ns)
        self.before_commit = before_commit
        self._last_scan: float | None = None
        self._scope: trio.CancelScope | None = None
        self._crashed: str | None = None

    # -- the pass ----------------------------------------------------------------------------

    def scan_due(self) -> bool:
        """Whether `ccd run` should settle in this pass. The scan reads every file's first
        piece (about 2 s per million files here), so the daemon runs it every
        settle_grace / 2 seconds, not every pass: a file is settled between settle_grace and
        1.5 settle_grace after its last change."""
        return (self._last_scan is None
                or time.monotonic() - self._last_scan >= self.settle_grace / 2)

    async def run_pass(self, report: Report, *, dry_run: bool = False) -> None:
        """One settle pass, counted in `report`. Raises NamespaceError / sqlite3.Error if the
        files cannot be listed (nothing was changed then); failures of single files are
        counted as errors in the report and leave those files as they were."""
        self._last_scan = time.monotonic()
        cutoff = self.ctx.since_ns(time.time(), self.settle_grace)
        due: list[UnsettledFile] = []
        for f in self.ctx.ns.unsettled_files():
            if f.ctime_ns > cutoff:
                report.add("settle_young")
            else:
                due.append(f)

        async def one(f: UnsettledFile) -> None:
            await self._one(f, report, dry_run=dry_run)

        self._crashed = None
        with trio.CancelScope() as scope:
            self._scope = scope
            try:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self.leases.keep_alive)
                    await for_each(self.ctx, due, one, label="settling", limit=CONCURRENCY)
                    nursery.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                raise sole_error(group) from None
        self._scope = None
        if self._crashed:
            raise CrashInjected(self._crashed)

    # -- one file ----------------------------------------------------------------------------

    async def _one(self, f: UnsettledFile, report: Report, *, dry_run: bool) -> None:
        ns = self.ctx.ns
        try:
            attr, pieces = ns.versioned_pieces(f.inode)
        except NotFound:
            return  # deleted since the scan
        if attr.version != f.version or attr.ctime_ns != f.ctime_ns:
            report.add("settle_young")  # changed since the scan: a later pass sees it
            return
        holes = sum(p.length for p in pieces if p.hash is None)
        if holes > attr.size * SPARSE_RATIO:
            report.add("settle_sparse")  # settling would store the zeros of the holes
            return
        limits = self.ctx.store.limits
        segment = min(self.writers.segment_size, limits.max_file_size)
        if (attr.size > self.writers.small_threshold
                and attr.size > segment * limits.max_manifest_segments):
            report.add("settle_too_large")
            return
        if dry_run:
            report.add("files_settled", attr.size)
            return
        leases: list[str] = []  # the Writer's upload lease (one, taken at its first segment)
        try:
            content = await self._store(self._spans(pieces), attr.size, leases)
        except ClaimRefused:
            self.leases.end(leases)
            report.add("settle_refused")
            return
        except (StoreError, OSError, NamespaceError, sqlite3.Error) as exc:
            self.leases.end(leases)
            if self._changed(f.inode, attr.version):
                report.add("settle_changed")  # e.g. rewritten and its old pieces collected
            else:
                report.error(f"settling inode {f.inode}: {exc}; left as it was")
            return
        await self._crash("publish")
        if self.before_commit is not None:
            await self.before_commit(f.inode)
        try:
            ns.settle(f.inode, content.hash, content.size, expect_version=attr.version,
                      upload_id=leases[0] if leases else None)
            self.leases.forget(leases)
        except (Conflict, NotFound):
            # Written (or deleted) since step 1: the new content is referenced by nothing
            # and goes with the cleanup after its grace.
            self.leases.end(leases)
            report.add("settle_changed")
            return
        except (NamespaceError, sqlite3.Error) as exc:
            self.leases.end(leases)
            report.error(f"settling inode {f.inode}: {exc}; left as it was")
            return
        log.debug("inode %d settled: %d pieces -> %s", f.inode, len(pieces), content.hash)
        report.add("files_settled", content.size)
        if content.deduplicated:
            report.add("settle_dedup")
        await self._crash("settle")

    def _spans(self, pieces: Sequence[Piece]) -> list[Span]:
        layout = self.ctx.layout
        return [Span(None, "", 0, p.length) if p.hash is None
                else Span(*layout.cas_path(p.hash), p.obj_offset, p.length) for p in pieces]

    def _changed(self, inode: int, version: int) -> bool:
        try:
            return self.ctx.ns.getattr(inode).version != version
        except NotFound:
            return True

    async def _store(self, spans: list[Span], size: int, leases: list[str]) -> StoredContent:
        """Stream the spans into a Writer and publish them as one content (module docstring,
        step 2). Takes the upload lease at the first segment (into `leases`; the pass keeps
        it alive); on failure the Writer deletes what it uploaded (best effort)."""
        ctx = self.ctx

        def take_lease(upload_id: str) -> None:
            self.leases.take(upload_id)
            leases.append(upload_id)

        try:
            async with trio.open_nursery() as nursery:
                writer = self.writers.writer(ctx.store, ctx.layout, nursery, claim=self._claim,
                                             on_first_segment=take_lease)
                try:
                    read = await stream_spans(ctx.store, spans, writer.write)
                    if read != size or writer.size != size:
                        raise StoreError(f"read {read} bytes of a {size}-byte file")
                    content = await writer.finish()
                except BaseException:
                    writer.abort()  # nothing if finish() already cleaned up
                    raise
        except BaseExceptionGroup as group:
            raise sole_error(group) from None
        return content

    async def _claim(self, digest: str, size: int,
                     segments: Sequence[tuple[str, int]]) -> PublishMode:
        """The Writer's claim hook: record the content before anything relies on it. A
        content being deleted is not waited for (the mount waits; ccd simply comes back)."""
        if not self.ctx.ns.claim_content(digest, size, segments).ok:
            raise ClaimRefused(f"content {digest} is being deleted by the garbage collector")
        return PublishMode.CONDITIONAL
