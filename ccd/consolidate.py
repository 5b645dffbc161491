"""Consolidation: move the bytes of published files from temporary segments to CAS names.

For each file content H that has tagged temporary segments (grouped by H: one manifest
rewrite per file, not per segment), in steps that are each idempotent, so that a crash between
any two leaves a state the next pass completes:

  0. leave alone the segments of live upload leases (the writer may still publish), untagged
     segments (unfinished writes: cleanup's business) and contents no file references
     (cleanup's business too);
  1. claim H in sqlfsn: it protects H and its segments from the garbage collector while we
     work (a refused claim means the GC is deleting it: skip H);
  2. copy every segment that H's manifest names at `.tmp` to its own CAS name (server-side
     copy; skipped when the CAS name already holds a plain object with the same md5 and size);
  3. rewrite H's manifest to name those CAS objects (Swift validates every entry again). A
     single-segment file needs no rewrite: step 2 overwrote its one-entry manifest with a
     plain object holding the same bytes, the consolidated end state;
  4. mark every tagged segment of H that the manifest no longer names as retired (one POST:
     full tag + X-Object-Meta-Retired-At) and delete the marked ones whose mark is older than
     the retire grace, after re-checking (segments.retire_due).

Readers never see wrong bytes: until step 3 the manifest names the `.tmp` segments, which are
intact; after it, CAS copies whose md5 and size Swift checked at the PUT; a reader that fetched
the old manifest still finds the `.tmp` segments for the retire grace. No SQL transaction spans
a Swift request: every sqlfsn call here is one short transaction or read.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from ccd.context import Context, for_each
from ccd.crash import CrashInjected, CrashPoints
from ccd.report import Report
from ccd.segments import (
    Tag,
    TmpSegment,
    list_tmp,
    mark_retired,
    parse_tag,
    read_cas,
    retire_due,
)
from seqwrite import Layout, ManifestEntry, StoreError
from seqwrite.layout import META_BLAKE3, is_digest, is_slo, manifest_json

log = logging.getLogger(__name__)

DEFAULT_RETIRE_GRACE = 3600.0
UNTAGGED_RECHECK = 600.0
# Where a pass can be told to crash (tests, and CCD_CRASH_AFTER for the CLI).
CRASH_POINTS = ("copy", "rewrite", "mark")


@dataclass(frozen=True, slots=True)
class Member:
    """A tagged temporary segment of the content being consolidated."""

    seg: TmpSegment
    tag: Tag


class Consolidator(CrashPoints):
    """Runs consolidation passes; `ccd run` keeps one across passes.

    Attributes:
        ctx: namespace, store, layout, grace (the lease liveness threshold).
        retire_grace: seconds between marking a segment retired and deleting it.
        crash_after: a CRASH_POINTS entry: stop the pass dead right after that step.
    """

    ctx: Context
    retire_grace: float
    crash_after: str | None

    def __init__(self, ctx: Context, *, retire_grace: float = DEFAULT_RETIRE_GRACE,
                 crash_after: str | None = None) -> None:
        self.ctx = ctx
        self.retire_grace = retire_grace
        self._crash_after(crash_after, CRASH_POINTS)
        # Tags of tagged segments seen so far: a tag never changes once set (only our own
        # retire mark is added), so a segment is HEADed once, not once per pass.
        self._tags: dict[str, Tag] = {}
        # Untagged segments of dead leases (cleanup's business), with when they were seen:
        # HEADed again only every UNTAGGED_RECHECK seconds.
        self._untagged: dict[str, float] = {}
        self._scope: trio.CancelScope | None = None
        self._crashed: str | None = None

    async def run_pass(self, report: Report | None = None, *, dry_run: bool = False) -> Report:
        """One pass over the temporary segments, counted in `report` (a new one if None).
        Raises StoreError if they cannot be listed (nothing was changed then); failures of
        single contents are counted in the report. `dry_run`: only list and read tags, and
        count the files that would be consolidated."""
        ctx = self.ctx
        report = Report("consolidation", dry_run=dry_run) if report is None else report
        alive = ctx.ns.uploads_alive(ctx.since_ns(time.time()))
        listing = await list_tmp(ctx)
        listed = {seg.name for seg in listing}
        self._tags = {name: tag for name, tag in self._tags.items() if name in listed}
        now = time.time()
        self._untagged = {name: seen for name, seen in self._untagged.items()
                          if name in listed and now - seen < UNTAGGED_RECHECK}
        candidates = []
        for seg in listing:
            if seg.upload in alive:
                report.add("skipped_alive")
            else:
                candidates.append(seg)

        groups: dict[str, list[Member]] = {}

        async def read_tag(seg: TmpSegment) -> None:
            if seg.name in self._untagged:
                report.add("skipped_untagged")
                return
            tag = self._tags.get(seg.name)
            if tag is None:
                try:
                    headers = await ctx.store.head(ctx.layout.tmp_container, seg.name)
                except StoreError as exc:
                    report.error(f"reading the tag of {seg.name}: {exc}")
                    return
                if headers is None:
                    return  # deleted since the listing
                tag = parse_tag(headers)
                if tag is None:
                    self._untagged[seg.name] = time.time()
                    report.add("skipped_untagged")
                    return
                self._tags[seg.name] = tag
            groups.setdefault(tag.file_hash, []).append(Member(seg, tag))

        await for_each(ctx, candidates, read_tag, label="reading segment tags")

        if dry_run:
            for file_hash, members in sorted(groups.items()):
                if any(m.tag.retired_at is None for m in members):
                    referenced = is_digest(file_hash) and ctx.ns.is_referenced(file_hash)
                    report.add("contents_consolidated" if referenced else "skipped_unreferenced")
            return report

        async def group(file_hash: str) -> None:
            await self._group(file_hash, groups[file_hash], alive, report)

        self._crashed = None
        with trio.CancelScope() as scope:
            self._scope = scope
            await for_each(ctx, sorted(groups), group, label="consolidating")
        self._scope = None
        if self._crashed:
            raise CrashInjected(self._crashed)
        return report

    async def _group(self, file_hash: str, members: list[Member], alive: set[str],
                     report: Report) -> None:
        ctx = self.ctx
        if not is_digest(file_hash):
            report.error(f"segments tagged {file_hash!r}, not a CAS name: kept", n=len(members))
            return
        pending = [m for m in members if m.tag.retired_at is None]
        marked = [m for m in members if m.tag.retired_at is not None]
        if pending:
            named = await self._consolidate(file_hash, members, len(pending), alive, report)
            if named is not None:
                when = time.time()
                newly: list[Member] = []

                async def mark(m: Member) -> None:
                    try:
                        tag = await mark_retired(ctx, m.seg, m.tag, when)
                    except StoreError as exc:
                        report.error(f"marking {m.seg.name} retired: {exc}")
                        return
                    self._tags[m.seg.name] = tag
                    newly.append(Member(m.seg, tag))
                    report.add("segments_marked")

                await for_each(ctx, [m for m in pending if m.seg.name not in named], mark)
                if newly:
                    marked.extend(newly)
                    await self._crash("mark")
        now = time.time()
        due = [(m.seg, m.tag) for m in marked
               if m.tag.retired_at is not None and now - m.tag.retired_at >= self.retire_grace]
        if len(marked) > len(due):
            report.add("waiting_retire", n=len(marked) - len(due))
        await retire_due(ctx, file_hash, due, report)
        for seg, _ in due:
            self._tags.pop(seg.name, None)

    async def _consolidate(self, file_hash: str, members: Sequence[Member], npending: int,
                           alive: set[str], report: Report) -> set[str] | None:
        """Steps 1-3 for one content. Returns the `.tmp` names its manifest still names
        (empty when consolidated), or None when it was skipped (nothing to mark)."""
        ctx = self.ctx
        ns = ctx.ns
        if not ns.is_referenced(file_hash):
            report.add("skipped_unreferenced", n=npending)
            return None
        info = ns.content_info(file_hash)
        if info is None or info.state != "live":
            report.add("skipped_refused", n=npending)
            return None
        rows = ns.content_segments(file_hash)
        if not ns.claim_content(file_hash, info.size, rows).ok:
            report.add("skipped_refused", n=npending)
            return None
        try:
            cas = await read_cas(ctx, file_hash)
            if not cas.exists:
                report.error(f"content {file_hash} is referenced but missing from Swift; its "
                             "temporary segments are kept", n=npending)
                return None
            if not cas.is_manifest or not cas.names_in(ctx.layout.tmp_container):
                return set()  # already consolidated: the rest is retiring
            tags = {m.seg.name: m.tag for m in members}
            plan = await self._plan(file_hash, cas.entries, tags, rows, alive, report)
            if plan is None:
                return None
            copies: dict[str, ManifestEntry] = {}
            for entry, own in plan:
                if entry.container == ctx.layout.tmp_container:
                    copies.setdefault(own, entry)

            async def copy(item: tuple[str, ManifestEntry]) -> None:
                # CAS(H) of a single-segment file is the manifest we just read: copy over it.
                known = cas.headers if item[0] == file_hash else None
                await self._copy(item[1], item[0], report, known)

            await for_each(ctx, list(copies.items()), copy)
            await self._crash("copy")
            if not (len(plan) == 1 and plan[0][1] == file_hash):
                new = [ManifestEntry(*ctx.layout.cas_path(own), e.etag, e.size)
                       for e, own in plan]
                await ctx.store.put(*ctx.layout.cas_path(file_hash), manifest_json(new),
                                    headers={META_BLAKE3: file_hash},
                                    query="multipart-manifest=put")
                report.add("manifests_rewritten")
                await self._crash("rewrite")
            report.add("contents_consolidated")
            return set()
        except StoreError as exc:
            report.error(f"consolidating {file_hash}: {exc}; retried next pass", n=npending)
            return None

    async def _plan(self, file_hash: str, entries: Sequence[ManifestEntry],
                    tags: dict[str, Tag], rows: list[tuple[str, int]], alive: set[str],
                    report: Report) -> list[tuple[ManifestEntry, str]] | None:
        """Each manifest entry with the CAS name of its bytes, checked against the registry
        (the GC keeps exactly the segments sqlfsn lists). None: skip this content."""
        layout = self.ctx.layout
        plan: list[tuple[ManifestEntry, str]] = []
        for e in entries:
            if e.container != layout.tmp_container:
                if not (is_digest(e.name) and e.container == layout.cas_container(e.name)):
                    report.error(f"the manifest of {file_hash} names {e.path}, neither a "
                                 "temporary segment nor a CAS object; skipped")
                    return None
                plan.append((e, e.name))
                continue
            upload = Layout.upload_of(e.name)
            if upload is None or upload in alive:
                report.add("skipped_alive")
                return None
            tag = tags.get(e.name) or self._tags.get(e.name)
            if tag is None:
                headers = await self.ctx.store.head(layout.tmp_container, e.name)
                tag = parse_tag(headers) if headers is not None else None
            if tag is None or tag.file_hash != file_hash or not is_digest(tag.own_hash):
                report.error(f"the manifest of {file_hash} names {e.path}, which is missing "
                             "or not tagged for it; skipped")
                return None
            plan.append((e, tag.own_hash))
        ours = [(own, e.size) for e, own in plan]
        single = len(plan) == 1 and plan[0][1] == file_hash
        if ours != [tuple(r) for r in rows] and not single:
            log.warning("content %s: its manifest's segments %s differ from the registry's %s;"
                        " not consolidated (it stays readable from its temporary segments)",
                        file_hash, ours, rows)
            report.add("skipped_mismatch")
            return None
        return plan

    async def _copy(self, entry: ManifestEntry, own: str, report: Report,
                    known: dict[str, str] | None = None) -> None:
        """Server-side copy of one temporary segment to its CAS name, unless already there
        (`known`: the destination's headers, when just read)."""
        store, layout = self.ctx.store, self.ctx.layout
        dst = known if known is not None else await store.head(*layout.cas_path(own))
        if (dst is not None and not is_slo(dst)
                and dst.get("etag", "").strip('"') == entry.etag
                and dst.get("content-length") == str(entry.size)):
            report.add("copies_skipped")
            return
        # If-Match applies to the source: copy exactly the bytes the manifest validated.
        await store.copy(layout.tmp_container, entry.name, *layout.cas_path(own), headers={
            "X-Fresh-Metadata": "true", META_BLAKE3: own, "If-Match": entry.etag})
        report.add("segments_copied", entry.size)
