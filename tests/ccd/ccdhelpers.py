"""Helpers of the ccd tests: a filesystem under test (namespace + store + layout) and writes
done the way the mount does them (lease, claim hook, finish, set_content)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import blake3
import trio
from swiftraw import SwiftRaw

import seqwrite.writer
from ccd import Context
from seqwrite import Layout, PublishMode, RetryPolicy, StoredContent, SwiftAuth, SwiftStore, Writer
from seqwrite.layout import META_BLAKE3, META_SEQ, TAG_BIGFILE
from sqlfsn import ROOT_INODE, Namespace, Piece, errors

KiB = 1024
MiB = 1024 * KiB
SEG = 256 * KiB
SMALL_THRESHOLD = KiB
PIECE = 256 * KiB  # bytes per write() call


def make_store(auth_url: str, dev_swift, **kw) -> SwiftStore:
    kw.setdefault("timeout", 5.0)
    kw.setdefault("policy", RetryPolicy(deadline=20.0, first_backoff=0.05, max_backoff=1.0))
    return SwiftStore(SwiftAuth(auth_url, dev_swift.user, dev_swift.key), **kw)


@dataclass
class Fs:
    """A filesystem under test: namespace, store, layout, the raw oracle client."""

    ns: Namespace
    store: SwiftStore
    layout: Layout
    raw: SwiftRaw

    def ctx(self, grace: float = 3600.0, store: SwiftStore | None = None) -> Context:
        return Context(self.ns, store or self.store, self.layout, grace, concurrency=4)

    # -- writing, as the mount does -------------------------------------------------------

    async def _claim(self, digest: str, size: int, segments: object) -> PublishMode:
        claim = self.ns.claim_content(digest, size, segments)  # type: ignore[arg-type]
        assert claim.ok, f"claim of {digest} refused"
        return PublishMode.CONDITIONAL

    async def publish(self, data: bytes, *,
                      segment_size: int = SEG) -> tuple[StoredContent, str]:
        """Store `data` as a content, as a mount's writer does (lease, claim, publish), without
        committing it to a file. Returns (content, upload id); the lease is left taken."""
        async with trio.open_nursery() as nursery:
            w = Writer(self.store, self.layout, nursery, segment_size=segment_size,
                       small_threshold=SMALL_THRESHOLD, claim=self._claim)
            self.ns.upload_begin(w.upload_id)
            for off in range(0, len(data), PIECE):
                await w.write(data[off:off + PIECE])
            content = await w.finish()
        return content, w.upload_id

    async def write(self, name: bytes, data: bytes, *, segment_size: int = SEG,
                    commit: bool = True) -> tuple[int, StoredContent, str]:
        """Create (or replace) file `name` with `data`. Returns (inode, content, upload id).
        With commit=False the content is published but the file not pointed at it (a mount
        that died between publishing and committing; its lease is left behind)."""
        try:
            inode = self.ns.lookup(ROOT_INODE, name).inode
        except errors.NotFound:
            inode = self.ns.create(ROOT_INODE, name, 0o644, 0, 0).inode
        content, upload_id = await self.publish(data, segment_size=segment_size)
        if commit:
            self.ns.set_content(inode, [Piece(content.hash, 0, content.size)], content.size,
                                upload_id=upload_id)
        return inode, content, upload_id

    async def append(self, inode: int, data: bytes, *, base_version: int | None = None,
                     segment_size: int = SEG) -> StoredContent:
        """Append `data` to file `inode` as the mount does: a content of its own, then a
        commit of (the pieces current at commit) + the new piece, compare-and-swap on the
        version the append started from (`base_version`, default: the current one)."""
        version = self.ns.getattr(inode).version if base_version is None else base_version
        content, upload_id = await self.publish(data, segment_size=segment_size)
        pieces = self.ns.pieces(inode)
        size = sum(p.length for p in pieces)
        self.ns.set_content(inode, [*pieces, Piece(content.hash, 0, content.size)],
                            size + content.size, expect_version=version, upload_id=upload_id)
        return content

    async def write_interrupted(self, *, segment_size: int = SEG) -> str:
        """A write that never finishes (the mount died): the segments it completed are stored,
        untagged; the segment in flight and the bytes still buffered are lost; its lease is
        left behind. Returns the upload id."""
        async with trio.open_nursery() as nursery:
            w = Writer(self.store, self.layout, nursery, segment_size=segment_size,
                       small_threshold=SMALL_THRESHOLD, claim=self._claim)
            self.ns.upload_begin(w.upload_id)
            # Enough to complete at least two segments whatever the writer buffers.
            await w.write(os.urandom(seqwrite.writer.CHUNK + 2 * segment_size))
            for upload, _ in w._segments:  # the completed segments (test-only peek)
                await upload.wait()
            if w._current is not None:  # the one in flight dies with the mount
                w._current.abort()
        return w.upload_id

    def put_tagged_leftover(self, data: bytes, file_hash: str, *, seq: int = 0) -> str:
        """A tagged segment of `file_hash` under a fresh upload id, as a writer that died after
        tagging (or a redundant dedup writer) leaves it. Returns its name."""
        name = self.layout.tmp_name(uuid.uuid4().hex, seq)
        status, _ = self.raw.put_object(self.layout.tmp_container, name, data, headers={
            TAG_BIGFILE: file_hash, META_BLAKE3: blake3.blake3(data).hexdigest(),
            META_SEQ: str(seq)})
        assert status == 201
        return name

    # -- oracles ----------------------------------------------------------------------------

    def file_bytes(self, inode: int) -> bytes:
        """What file `inode` reads as: its pieces fetched with raw ranged GETs (holes: zeros)."""
        out = []
        for p in self.ns.pieces(inode):
            if p.hash is None:
                out.append(bytes(p.length))
                continue
            status, _, body = self.raw.get_object(*self.layout.cas_path(p.hash), headers={
                "Range": f"bytes={p.obj_offset}-{p.obj_offset + p.length - 1}"})
            assert status in (200, 206) and len(body) == p.length, (p, status, len(body))
            out.append(body)
        return b"".join(out)

    def cas_bytes(self, digest: str) -> bytes:
        status, _, body = self.raw.get_object(*self.layout.cas_path(digest))
        assert status == 200, f"GET CAS {digest}: {status}"
        return body

    def cas_head(self, digest: str) -> tuple[int, dict[str, str]]:
        return self.raw.head_object(*self.layout.cas_path(digest))

    def stored_manifest(self, digest: str) -> list[dict]:
        status, _, body = self.raw.get_object(*self.layout.cas_path(digest),
                                              query="multipart-manifest=get")
        assert status == 200
        return json.loads(body)

    def tmp_names(self) -> list[str]:
        return [o["name"] for o in self.raw.list_container(self.layout.tmp_container,
                                                           prefix=".tmp/")]

    def tmp_tags(self) -> dict[str, dict[str, str]]:
        """name -> its x-object-meta-* headers, for every temporary segment."""
        out = {}
        for name in self.tmp_names():
            status, headers = self.raw.head_object(self.layout.tmp_container, name)
            if status == 200:
                out[name] = {k: v for k, v in headers.items() if k.startswith("x-object-meta-")}
        return out

    def cas_names(self) -> set[str]:
        names: set[str] = set()
        for container in self.layout.cas_containers():
            names |= {o["name"] for o in self.raw.list_container(container)}
        return names

    def assert_consolidated(self, files: Sequence[tuple[StoredContent, bytes]]) -> None:
        """No tagged temporary segment; every manifest names CAS objects only; every file's
        CAS object reads back its bytes; single-segment files are plain objects."""
        tags = self.tmp_tags()
        tagged = [n for n, h in tags.items() if "x-object-meta-bigfile" in h]
        assert tagged == [], f"tagged temporary segments left: {tagged}"
        for content, data in files:
            assert self.cas_bytes(content.hash) == data
            status, headers = self.cas_head(content.hash)
            is_manifest = headers.get("x-static-large-object", "").lower() == "true"
            if content.kind == "manifest" and len(content.segments) > 1:
                assert is_manifest
                for entry in self.stored_manifest(content.hash):
                    container, _, obj = entry["name"].lstrip("/").partition("/")
                    assert container == self.layout.cas_container(obj), entry
                    assert self.raw.head_object(container, obj)[0] == 200
            else:
                assert not is_manifest, f"{content.hash} is still a manifest"


def mutations(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """Requests that change something, sent between two store.statistics()."""
    return {m: after.get(m, 0) - before.get(m, 0) for m in ("PUT", "POST", "DELETE")
            if after.get(m, 0) != before.get(m, 0)}
