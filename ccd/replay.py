"""`ccd replay`: upload and commit what a write-back journal on this host still holds, without
a mount.

A mount in write-back mode keeps closed files in `<cache_dir>/journal-<fs_uuid>/` until they
are in Swift and committed (wiring/journal.py). After a crash or a reboot the next mount on
this host replays the journal; when the filesystem is not mounted here again (it is mounted
on another host, or not at all), `ccd replay` does the same with the same code
(wiring/writeback.py `WriteBack`): each record is uploaded from the journal as any write is
(upload lease, segments, claim, publish) and committed with a compare-and-swap on the version
it was written over; a file changed elsewhere meanwhile keeps the closed bytes as a conflict
copy beside it, a file deleted since commits nothing. Records are never taken for committed
on a version number alone: a mount may have written the file since the crash (`sole_writer`
is off).

The journal's lock is held for the whole replay: a mount of the filesystem on this host with
the same cache_dir is refused meanwhile, and `ccd replay` refuses while one runs (that mount
uploads the journal itself).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import trio

from ccd.context import CcdError, Context, sole_error
from ccd.report import Report
from seqwrite import PublishMode, StoreError, Writer
from wiring.config import Config
from wiring.filesystem import (
    cache_dir,
    journal_dir,
    spool_dir,
    stale_deletion_ns,
    writer_settings,
)
from wiring.journal import Journal, JournalBusy, JournalFile
from wiring.leases import Leases
from wiring.writeback import WriteBack

log = logging.getLogger(__name__)

DEFAULT_STALL = 60.0  # seconds without upload progress after which the replay gives up


async def replay(ctx: Context, cfg: Config, *, stall: float = DEFAULT_STALL) -> Report:
    """Replay the filesystem's journal under `cfg`'s cache_dir (see the module docstring).
    Records that could not be uploaded (no progress for `stall` seconds) stay in the journal
    and are counted as errors. CcdError if a mount on this host holds the journal."""
    report = Report("replay")
    if not cache_dir(cfg).is_dir():  # (journal_dir would make it)
        log.info("no cache directory %s: no write-back journal to replay", cache_dir(cfg))
        return report
    directory = journal_dir(cfg, ctx.ns)
    if not directory.is_dir():
        log.info("no write-back journal at %s: nothing to replay", directory)
        return report
    journal = Journal(directory)
    try:
        files = journal.open()
    except JournalBusy as exc:
        raise CcdError(f"{exc}; a mount uploads its own journal: nothing to replay while it "
                       "runs (unmount it first, or let it upload)") from None
    try:
        if files:
            await _upload(ctx, cfg, journal, files, stall, report)
    finally:
        journal.close()
    return report


async def _upload(ctx: Context, cfg: Config, journal: Journal, files: list[JournalFile],
                  stall: float, report: Report) -> None:
    writers = writer_settings(cfg, spool_dir(cfg))
    assert writers.space is not None
    leases = Leases(ctx.ns)
    stale = stale_deletion_ns(cfg)

    async def claim(digest: str, size: int, segments: Sequence[tuple[str, int]]
                    ) -> PublishMode:
        """The uploads' claim: record the content before anything relies on it. A content
        being deleted by the collector fails this attempt (the write-back retries it)."""
        result = ctx.ns.claim_content(digest, size, segments,
                                      takeover_deleting_older_than_ns=time.time_ns() - stale)
        if not result.ok:
            raise StoreError(f"content {digest} is being deleted by the garbage collector")
        if result.deleting_since_ns is not None:
            return PublishMode.UNCONDITIONAL  # a replica may still answer 412 for it
        return PublishMode.CONDITIONAL

    try:
        async with trio.open_nursery() as nursery:

            def new_writer(held: list[str]) -> Writer:
                def take_lease(upload_id: str) -> None:
                    leases.take(upload_id)
                    held.append(upload_id)

                return writers.writer(ctx.store, ctx.layout, nursery, claim=claim,
                                      on_first_segment=take_lease)

            wb = WriteBack(journal, ctx.ns, writers.space, leases, new_writer, nursery,
                           sole_writer=False)
            wb.replay(files)
            nursery.start_soon(leases.keep_alive)
            if wb.pending_files():
                log.info("uploading %d closed files (%d bytes) from the write-back journal %s",
                         wb.pending_files(), wb.pending_bytes(), journal.directory)
            await wb.upload_backlog(stall, lambda: ctx.store.stats.bytes_sent)
            left, left_bytes = wb.pending_files(), wb.pending_bytes()
            nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise sole_error(group) from None
    report.add("journal_committed", n=wb.committed - wb.conflicts)
    report.add("journal_conflicts", n=wb.conflicts)
    report.add("journal_dropped", n=wb.dropped)
    if left:
        report.error(f"{left} closed files ({left_bytes} bytes) are not in Swift yet (no "
                     f"upload progress for {stall:.0f} s): they stay in the journal "
                     f"{journal.directory}; run `ccd replay` again, or mount", n=left)
