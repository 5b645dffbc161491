"""Temporary segments as ccd sees them: listing, tags, the state of a CAS name, retirement.

Shared by consolidation and cleanup. A listing carries no user metadata, so a segment's tag
(`X-Object-Meta-Bigfile`/`-Blake3`/`-Seq`, docs/LAYOUT.md) is read with a HEAD. ccd adds one
header of its own to a tagged segment:

    X-Object-Meta-Retired-At: <unix time>

meaning "since then, the manifest of my file no longer names me". It is set with one POST that
carries the whole tag too (a POST replaces all user metadata). A retired segment is deleted
once the retire grace has passed since the mark (readers that fetched the old manifest before
the rewrite may still be reading it), and only after checking afresh that the file's manifest
does not name it and that its bytes live at a CAS name.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from ccd.context import Context, for_each
from ccd.report import Report
from seqwrite import Layout, StoreError
from seqwrite.layout import (
    META_BLAKE3,
    META_RETIRED_AT,
    META_SEQ,
    TAG_BIGFILE,
    TMP_PREFIX,
    StoredObject,
    is_digest,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class TmpSegment:
    """One temporary segment, from the listing."""

    name: str  # .tmp/<upload>/<seq>
    upload: str
    size: int
    etag: str
    modified: float  # unix time (listing's last_modified)


@dataclass(frozen=True, slots=True)
class Tag:
    """The metadata of a tagged segment."""

    file_hash: str  # X-Object-Meta-Bigfile: the file it belongs to
    own_hash: str  # X-Object-Meta-Blake3: its own CAS name
    seq: int  # X-Object-Meta-Seq
    retired_at: float | None = None  # X-Object-Meta-Retired-At

    def headers(self, retired_at: float | None = None) -> dict[str, str]:
        """The full metadata set for a POST (tag, plus the retire mark if given)."""
        hdrs = {TAG_BIGFILE: self.file_hash, META_BLAKE3: self.own_hash, META_SEQ: str(self.seq)}
        if retired_at is not None:
            hdrs[META_RETIRED_AT] = f"{retired_at:.3f}"
        return hdrs


def parse_tag(headers: Mapping[str, str]) -> Tag | None:
    """The tag in a HEAD answer, or None for an untagged segment."""
    h = {k.lower(): v for k, v in headers.items()}
    file_hash = h.get(TAG_BIGFILE.lower())
    if not file_hash:
        return None
    try:
        seq = int(h.get(META_SEQ.lower(), "-1"))
    except ValueError:
        seq = -1
    retired: float | None
    try:
        retired = float(h[META_RETIRED_AT.lower()])
    except (KeyError, ValueError):
        retired = None
    return Tag(file_hash, h.get(META_BLAKE3.lower(), ""), seq, retired)


def parse_time(text: str) -> float:
    """A listing's last_modified (UTC, no zone suffix) as unix time."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


async def list_tmp(ctx: Context) -> list[TmpSegment]:
    """Every temporary segment (raises StoreError if the listing fails)."""
    items = await ctx.store.list(ctx.layout.tmp_container, prefix=TMP_PREFIX)
    out = []
    for item in items:
        name = item.get("name", "")
        upload = Layout.upload_of(name)
        if not upload:
            continue
        out.append(TmpSegment(name, upload, int(item.get("bytes", 0)), item.get("hash", ""),
                              parse_time(item["last_modified"])))
    return out


async def read_cas(ctx: Context, digest: str) -> StoredObject:
    """What CAS name `digest` holds now (and a manifest's entries). StoreError on failure."""
    return await ctx.store.read_object(*ctx.layout.cas_path(digest))


async def mark_retired(ctx: Context, seg: TmpSegment, tag: Tag, when: float) -> Tag:
    """POST the retire mark (with the full tag: a POST replaces all user metadata)."""
    await ctx.store.post(ctx.layout.tmp_container, seg.name, tag.headers(retired_at=when))
    return replace(tag, retired_at=when)


async def delete_tmp(ctx: Context, seg: TmpSegment, report: Report, event: str, *,
                     dry_run: bool = False) -> bool:
    """Delete one temporary segment and count it under `event`; False if it failed."""
    if not dry_run:
        try:
            existed = await ctx.store.delete(ctx.layout.tmp_container, seg.name)
        except StoreError as exc:
            report.error(f"could not delete {seg.name}: {exc}; kept")
            return False
        if not existed:
            return True
    report.add(event, seg.size)
    return True


async def retire_due(ctx: Context, file_hash: str, due: Sequence[tuple[TmpSegment, Tag]],
                     report: Report, *, dry_run: bool = False) -> None:
    """Delete retired segments of `file_hash` whose retire grace has passed, after checking
    afresh that its manifest does not name them and that a CAS object holds their bytes."""
    if not due:
        return
    try:
        cas = await read_cas(ctx, file_hash)
    except StoreError as exc:
        report.error(f"reading the manifest of {file_hash}: {exc}; its retired segments are "
                     "kept", n=len(due))
        return
    named = cas.names_in(ctx.layout.tmp_container)

    async def one(item: tuple[TmpSegment, Tag]) -> None:
        seg, tag = item
        if seg.name in named:
            report.error(f"{seg.name} is marked retired but the manifest of {file_hash} names "
                         "it; kept")
            return
        own = None
        if tag.own_hash == file_hash:
            own = cas.headers  # a single-segment file: its CAS object was just read
        elif is_digest(tag.own_hash):
            try:
                own = await ctx.store.head(*ctx.layout.cas_path(tag.own_hash))
            except StoreError as exc:
                report.error(f"checking the CAS copy of {seg.name}: {exc}; kept")
                return
        if own is None and not cas.exists:
            report.error(f"{seg.name} is retired but neither its own CAS object nor its "
                         f"file's ({file_hash}) exists; kept")
            return
        if own is None:
            log.debug("%s: redundant segment (the manifest of %s holds the bytes elsewhere)",
                      seg.name, file_hash)
        await delete_tmp(ctx, seg, report, "segments_retired", dry_run=dry_run)

    await for_each(ctx, list(due), one)
