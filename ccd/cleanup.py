"""Cleanup (`ccd cleanup`): what interrupted writes left, stale leases, unreferenced content.

A pass runs, in this order:
  1. the garbage collection of CAS objects (gc.py);
  2. temporary segments: every `.tmp/<upload>/<seq>` older than the grace (listing's
     last_modified) whose upload lease is not alive is HEADed, then
       - untagged -> deleted (a write that never finished);
       - tagged for H, and HEAD of CAS(H) answers 404, and H is neither referenced nor
         recently claimed -> deleted (the writer died before publishing, or the file's
         content was collected by step 1, which is why step 1 runs first);
       - retired (X-Object-Meta-Retired-At older than the retire grace) -> deleted after the
         re-checks of segments.retire_due;
       - else kept: consolidation's business;
  3. upload leases whose heartbeat is older than the grace are removed;
  4. mounts found dead (sqlfsn/mounts.py: no heartbeat for the mount timeout, or their
     session ended) are unregistered, releasing their holds and write leases, and the
     unlinked files no live mount holds open are deleted (their content is then the next
     pass's garbage).
Any listing or HEAD error means "keep": nothing is deleted because it seemed absent from a
listing. With `dry_run` nothing is changed, in Swift or in sqlfsn; the report says what would
have been.
"""

from __future__ import annotations

import logging
import time

from ccd.consolidate import DEFAULT_RETIRE_GRACE
from ccd.context import Context, for_each
from ccd.gc import collect
from ccd.report import Report
from ccd.segments import Tag, TmpSegment, delete_tmp, list_tmp, parse_tag, retire_due
from seqwrite import StoreError
from seqwrite.layout import is_digest

log = logging.getLogger(__name__)


async def cleanup_pass(ctx: Context, *, retire_grace: float = DEFAULT_RETIRE_GRACE,
                       dry_run: bool = False) -> Report:
    """One cleanup pass (see the module docstring); failures are counted as kept_error."""
    report = Report("cleanup", dry_run=dry_run)
    await collect(ctx, report, dry_run=dry_run)
    await clean_tmp(ctx, report, retire_grace=retire_grace, dry_run=dry_run)
    remove_stale_leases(ctx, report, dry_run=dry_run)
    reap_mounts(ctx, report, dry_run=dry_run)
    return report


def reap_mounts(ctx: Context, report: Report, *, dry_run: bool = False) -> None:
    """Unregister the dead mounts of a shared (PostgreSQL) namespace (see step 4)."""
    if not ctx.ns.shared:
        return  # SQLite: the next mount forgets a dead one (only one can exist)
    if dry_run:
        for mount in ctx.ns.mounts():
            if not mount.alive:
                log.info("dead %s (would be unregistered)", mount.describe())
                report.add("mounts_reaped")
        return
    reaped, purged = ctx.ns.reap_mounts()
    report.add("mounts_reaped", n=len(reaped))
    report.add("orphans_purged", n=purged)


async def clean_tmp(ctx: Context, report: Report, *, retire_grace: float,
                    dry_run: bool = False) -> None:
    now = time.time()
    since = ctx.since_ns(now)
    alive = ctx.ns.uploads_alive(since)
    try:
        listing = await list_tmp(ctx)
    except StoreError as exc:
        report.error(f"listing the temporary segments: {exc}; none is deleted this pass")
        return
    old = [s for s in listing if s.upload not in alive and s.modified < now - ctx.grace]
    retired: dict[str, list[tuple[TmpSegment, Tag]]] = {}

    async def one(seg: TmpSegment) -> None:
        try:
            headers = await ctx.store.head(ctx.layout.tmp_container, seg.name)
        except StoreError as exc:
            report.error(f"checking {seg.name}: {exc}; kept")
            return
        if headers is None:
            return  # gone since the listing
        tag = parse_tag(headers)
        if tag is None:
            await delete_tmp(ctx, seg, report, "tmp_untagged", dry_run=dry_run)
            return
        if not is_digest(tag.file_hash):
            report.error(f"{seg.name} is tagged {tag.file_hash!r}, not a CAS name; kept")
            return
        try:
            published = await ctx.store.head(*ctx.layout.cas_path(tag.file_hash))
        except StoreError as exc:
            report.error(f"checking the manifest of {seg.name}: {exc}; kept")
            return
        if published is None and not ctx.ns.is_kept(tag.file_hash, claimed_since_ns=since):
            await delete_tmp(ctx, seg, report, "tmp_unpublished", dry_run=dry_run)
        elif tag.retired_at is not None and now - tag.retired_at >= retire_grace:
            retired.setdefault(tag.file_hash, []).append((seg, tag))
        else:
            report.add("tmp_pending")

    await for_each(ctx, old, one, label="checking temporary segments")

    async def retire(file_hash: str) -> None:
        await retire_due(ctx, file_hash, retired[file_hash], report, dry_run=dry_run)

    await for_each(ctx, sorted(retired), retire, label="retiring segments")


def remove_stale_leases(ctx: Context, report: Report, *, dry_run: bool = False) -> None:
    """Drop the leases whose heartbeat is older than the grace (their mount is gone)."""
    since = ctx.since_ns(time.time())
    for lease in ctx.ns.uploads():
        if lease.heartbeat_ns < since:
            if not dry_run:
                ctx.ns.upload_end(lease.id)
            log.info("upload lease %s: no heartbeat for more than %.0f s%s", lease.id,
                     ctx.grace, " (would be removed)" if dry_run else ", removed")
            report.add("leases_removed")
