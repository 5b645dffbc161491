"""Garbage collection of CAS objects no file references, following sqlfsn's GC fence.

One pass:
  1. list every CAS container (a container whose listing fails is skipped entirely);
  2. T0 = now; kept = ns.referenced_hashes(claimed_since_ns=T0 - grace), computed AFTER the
     listing, so a claim made while listing is seen;
  3. candidates: listed objects not kept whose last_modified is older than the grace; rows
     already 'deleting' (a previous pass died or failed between condemning and deleting);
     'live' rows not kept whose object was not listed (a writer that died before publishing,
     or a listing lag: a HEAD decides);
  4. for each candidate: ns.condemn(X, claimed_before_ns=T0 - grace) (one transaction that
     re-checks both conditions; False = claimed again meanwhile: kept), then a plain DELETE
     (never ?multipart-manifest=delete: segments may be shared), then ns.content_deleted(X).
     A failed DELETE leaves the row 'deleting': the claim of a writer is refused meanwhile,
     and the next pass retries.

Order: a candidate that some other content row still lists as a segment waits until that
content is gone (later in the same pass, or a later pass): otherwise a writer could claim
the content and dedup against a manifest naming a deleted segment.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from ccd.context import Context, for_each
from ccd.report import Report
from ccd.segments import parse_time
from seqwrite import StoreError
from seqwrite.layout import is_digest, is_slo

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A CAS object (or registry row) the pass may delete."""

    hash: str
    nbytes: int  # bytes it frees (0 for a manifest: its segments are objects of their own)
    listed: bool  # seen in the listing (else a registry row: a HEAD checks its age first)


async def _list(ctx: Context, report: Report) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """name -> listing item over all CAS containers, and the containers that failed."""
    listed: dict[str, dict[str, Any]] = {}
    failed: set[str] = set()

    async def one(container: str) -> None:
        try:
            items = await ctx.store.list(container)
        except StoreError as exc:
            report.error(f"listing {container}: {exc}; nothing in it is deleted this pass")
            failed.add(container)
            return
        for item in items:
            listed[item["name"]] = item

    await for_each(ctx, ctx.layout.cas_containers(), one, label="listing CAS containers")
    return listed, failed


async def collect(ctx: Context, report: Report, *, dry_run: bool = False) -> None:
    """One garbage collection pass (see the module docstring)."""
    ns, layout = ctx.ns, ctx.layout
    listed, failed = await _list(ctx, report)
    t0 = time.time()
    since = ctx.since_ns(t0)
    kept = ns.referenced_hashes(claimed_since_ns=since)
    candidates: dict[str, Candidate] = {}
    for name, item in listed.items():
        if not is_digest(name):
            report.add("cas_foreign")
            continue
        if name in kept or parse_time(item["last_modified"]) >= t0 - ctx.grace:
            continue
        nbytes = 0 if "slo_etag" in item else int(item.get("bytes", 0))
        candidates[name] = Candidate(name, nbytes, True)
    for row in ns.contents("deleting"):
        if row.hash not in candidates and layout.cas_container(row.hash) not in failed:
            found = listed.get(row.hash)
            nbytes = int(found.get("bytes", 0)) if found and "slo_etag" not in found else 0
            candidates[row.hash] = Candidate(row.hash, nbytes, True)
    for digest in ns.unkept_contents(claimed_since_ns=since):
        if (digest not in candidates and digest not in listed
                and layout.cas_container(digest) not in failed):
            candidates[digest] = Candidate(digest, 0, False)

    async def one(c: Candidate) -> None:
        await _collect_one(ctx, c, since, t0, report, dry_run=dry_run)

    pending = sorted(candidates)
    while pending:
        # Manifests before their segments; in a dry run, as if the candidates were gone.
        gone = set(candidates) if dry_run else set()
        ready: list[str] = []
        deferred: list[str] = []
        for digest in pending:
            parents = set(ns.segment_parents(digest)) - gone
            (deferred if parents else ready).append(digest)
        if not ready:
            break
        await for_each(ctx, [candidates[d] for d in ready], one, label="collecting")
        pending = deferred
    if pending:
        log.info("%d CAS objects wait for the contents listing them as segments to go first",
                 len(pending))
        report.add("cas_deferred", n=len(pending))


async def _collect_one(ctx: Context, c: Candidate, since: int, t0: float, report: Report, *,
                       dry_run: bool) -> None:
    where = ctx.layout.cas_path(c.hash)
    nbytes = c.nbytes
    if not c.listed:
        try:
            headers = await ctx.store.head(*where)
        except StoreError as exc:
            report.error(f"checking CAS object {c.hash}: {exc}; kept")
            return
        if headers is not None:
            modified = _header_time(headers)
            if modified is None or modified >= t0 - ctx.grace:
                return  # young or of unknown age: a later pass sees it listed
            nbytes = 0 if is_slo(headers) else int(headers.get("content-length", 0))
    if dry_run:
        report.add("cas_deleted", nbytes)
        return
    if not ctx.ns.condemn(c.hash, claimed_before_ns=since):
        report.add("cas_rescued")
        return
    try:
        existed = await ctx.store.delete(*where)  # plain DELETE: never the segments
    except StoreError as exc:
        report.error(f"deleting CAS object {c.hash}: {exc}; kept (marked deleting, retried "
                     "next pass)")
        return
    ctx.ns.content_deleted(c.hash)
    if existed:
        report.add("cas_deleted", nbytes)
    else:
        report.add("cas_rows_removed")


def _header_time(headers: dict[str, str]) -> float | None:
    try:
        return float(headers["x-timestamp"])
    except (KeyError, ValueError):
        return None
