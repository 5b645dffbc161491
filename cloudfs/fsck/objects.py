"""Whether Swift holds a content as the namespace describes it (docs/LAYOUT.md).

For a content H that files use, `ContentVerifier.verify` reads what the CAS name H holds (a HEAD,
and for an SLO manifest a GET of its stored form) and checks, in order:

- it exists (a 404 is *missing*);
- its `X-Object-Meta-Blake3`, when set, is H (else it holds other bytes);
- its size is the registry's size, and covers every byte the files' pieces read
  (a piece may name part of a content: obj_offset + length within its size);
- a manifest: at least one entry; every entry names a temporary segment of the filesystem
  (`.tmp/<upload>/<seq>` in the base container) or a CAS object (consolidated by ccd); every
  segment exists with the size and ETag the manifest records; and against the registry's
  segment list (`content_segment`): when the sizes line up, each segment's own hash (its CAS
  name, or a temporary segment's `X-Object-Meta-Blake3`) is the registry's at that position
  (else the manifest names other bytes); a CAS segment the registry does not list is
  *unprotected*: the garbage collector keeps exactly the segments the registry lists, so it
  would delete it one day.

A failed request (past the store's retries) makes the verdict *unchecked*: nothing is said
missing on an error. The HEADs of segments are remembered for the run (a segment shared by
several contents is asked once) until `forget_all`, before a re-check.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import trio

from seqwrite import Corrupted, Layout, ManifestEntry, StoreError, SwiftStore
from seqwrite.layout import META_BLAKE3, StoredObject, header, is_digest, is_slo
from sqlfsn.fsck_queries import ContentUse

State = Literal["ok", "missing", "damaged", "unprotected", "unchecked"]
# Segments of one manifest HEADed at a time (all of them queue on the store's limit anyway).
SEGMENTS_IN_FLIGHT = 8


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a content's check found: `state`, the object concerned (`container/name`) and one
    line of detail; `tmp_names`: the temporary segments its manifest names (all verdicts)."""

    state: State
    object: str
    detail: str = ""
    tmp_names: frozenset[str] = frozenset()
    mismatched: bool = False  # manifest and registry list different segments (readable)


def _size_of(headers: Mapping[str, str]) -> int | None:
    try:
        return int(header(headers, "content-length") or "")
    except ValueError:
        return None


def _etag(headers: Mapping[str, str]) -> str:
    return (header(headers, "etag") or "").strip('"')


class ContentVerifier:
    """Checks contents against Swift (see the module docstring).

    Attributes:
        objects: distinct objects asked about so far (contents and segments).
    """

    def __init__(self, store: SwiftStore, layout: Layout) -> None:
        self.store = store
        self.layout = layout
        self.objects = 0
        self._heads: dict[tuple[str, str], dict[str, str] | None] = {}

    def forget_all(self) -> None:
        """Ask again about every segment (before a re-check)."""
        self._heads.clear()

    async def _head(self, container: str, name: str) -> dict[str, str] | None:
        key = (container, name)
        if key not in self._heads:
            self.objects += 1
            self._heads[key] = await self.store.head(container, name)
        return self._heads[key]

    async def verify(self, use: ContentUse) -> Verdict:
        container, name = self.layout.cas_path(use.hash)
        where = f"{container}/{name}"
        self.objects += 1
        try:
            stored = await self.store.read_object(container, name)
        except Corrupted:
            return Verdict("damaged", where, f"{where} is a manifest that does not parse")
        except StoreError as exc:
            return Verdict("unchecked", where, f"reading {where}: {exc}")
        if stored.headers is None:
            return Verdict("missing", where, f"{where} is missing from Swift (404)")
        own = header(stored.headers, META_BLAKE3)
        if own and own != use.hash:
            return Verdict("damaged", where, f"{where} says it holds content {own}")
        size = (sum(e.size for e in stored.entries) if stored.is_manifest
                else _size_of(stored.headers))
        if size is None or (use.size is not None and size != use.size):
            return Verdict("damaged", where, f"{where} holds {size} bytes, the registry says "
                           f"{use.size}")
        if use.end > size:
            return Verdict("damaged", where, f"{where} holds {size} bytes, files read up to "
                           f"byte {use.end}")
        if stored.is_manifest:
            return await self._verify_manifest(use, stored, where)
        return Verdict("ok", where)

    async def _verify_manifest(self, use: ContentUse, stored: StoredObject,
                               where: str) -> Verdict:
        entries = stored.entries
        tmp = frozenset(stored.names_in(self.layout.tmp_container))
        if not entries:
            return Verdict("damaged", where, f"{where} is a manifest without segments", tmp)
        owns: list[str | None] = [None] * len(entries)
        bad: list[tuple[int, Verdict]] = []
        limiter = trio.CapacityLimiter(SEGMENTS_IN_FLIGHT)

        async def one(i: int, e: ManifestEntry) -> None:
            async with limiter:
                found = await self._segment(i, e, where, tmp)
            if isinstance(found, Verdict):
                bad.append((i, found))
            else:
                owns[i] = found

        async with trio.open_nursery() as nursery:
            for i, e in enumerate(entries):
                nursery.start_soon(one, i, e)
        if bad:  # the first wrong segment in manifest order; one not checked only if no other
            return min(bad, key=lambda b: (b[1].state == "unchecked", b[0]))[1]
        return self._against_registry(use, entries, owns, where, tmp)

    async def _segment(self, i: int, e: ManifestEntry, where: str,
                       tmp: frozenset[str]) -> str | None | Verdict:
        """Segment `i` checked: its own hash (None if unknown) or a Verdict of what is wrong."""
        path = f"{e.container}/{e.name}"
        is_tmp = e.container == self.layout.tmp_container and Layout.upload_of(e.name)
        is_cas = is_digest(e.name) and e.container == self.layout.cas_container(e.name)
        if not (is_tmp or is_cas):
            return Verdict("damaged", path, f"segment {i} of {where} is {path}, neither a "
                           "temporary segment nor a CAS object of this filesystem", tmp)
        try:
            headers = await self._head(e.container, e.name)
        except StoreError as exc:
            return Verdict("unchecked", path, f"reading segment {i} of {where}: {exc}", tmp)
        if headers is None:
            return Verdict("damaged", path, f"segment {i} of {where}, {path}, is missing from "
                           "Swift (404)", tmp)
        size = _size_of(headers)
        if size != e.size:
            return Verdict("damaged", path, f"segment {i} of {where}, {path}, holds {size} "
                           f"bytes, the manifest says {e.size}", tmp)
        if not is_slo(headers) and _etag(headers) != e.etag:
            return Verdict("damaged", path, f"segment {i} of {where}, {path}, has ETag "
                           f"{_etag(headers)}, the manifest says {e.etag}", tmp)
        return e.name if is_cas else header(headers, META_BLAKE3)

    def _against_registry(self, use: ContentUse, entries: tuple[ManifestEntry, ...],
                          owns: list[str | None], where: str, tmp: frozenset[str]) -> Verdict:
        rows = use.segments
        if rows and [e.size for e in entries] == [size for _, size in rows]:
            for i, (own, (registered, _)) in enumerate(zip(owns, rows, strict=True)):
                if own is not None and own != registered:
                    path = entries[i].path.lstrip("/")
                    return Verdict("damaged", path, f"segment {i} of {where}, {path}, holds "
                                   f"{own}, the registry says {registered}", tmp)
            return Verdict("ok", where, tmp_names=tmp)
        listed = {h for h, _ in rows}
        for i, e in enumerate(entries):
            if e.container != self.layout.tmp_container and e.name not in listed:
                return Verdict("unprotected", f"{e.container}/{e.name}",
                               f"segment {i} of {where}, {e.container}/{e.name}, is not in "
                               "the registry's segments of the content: the garbage "
                               "collector may delete it", tmp)
        return Verdict("ok", where, tmp_names=tmp, mismatched=bool(rows))
