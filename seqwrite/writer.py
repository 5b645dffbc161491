"""Writer: turns a stream of bytes into a content-addressed object in Swift.

The content is not known in advance, so it cannot be named in advance: the bytes stream into
temporary segments `.tmp/<upload-id>/<seq>` (from the first byte past the small-file
threshold), hashed with blake3 per segment and for the whole file as they pass. `finish()`
then names the content by its blake3 and publishes it under that CAS name:

    1. every segment upload completed and verified: its size, and (with `verify_md5`, the
       default) Swift's md5 ETag of what it stored == the md5 of what we sent;
    2. claim(hash) - the caller records the content in sqlfsn BEFORE anything refers to it
       (the fence against a concurrent garbage collector; see docs/LAYOUT.md);
    3. tag every segment: X-Object-Meta-Bigfile = file hash (+ its own hash and seq);
    4. PUT the SLO manifest at the CAS name with If-None-Match: *; 412 = already stored
       (dedup): our segments are redundant and are deleted.

Files up to `small_threshold` bytes are buffered and PUT as one plain object at their CAS name
(no segment, no manifest); an empty file needs no object at all. The writer never waits on a
server-side copy: consolidating segments into the CAS is ccd's job.
"""

from __future__ import annotations

import enum
import errno
import hashlib
import logging
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import blake3
import trio

from seqwrite.errors import AlreadyExists, SpoolError, StoreError, TooLarge, WriterAborted
from seqwrite.hashing import ChunkHasher
from seqwrite.layout import (
    META_BLAKE3,
    META_SEQ,
    TAG_BIGFILE,
    Layout,
    ManifestEntry,
    manifest_json,
)
from seqwrite.segment import SegmentUpload, StoredSegment
from seqwrite.space import MIN_SPOOL_CHUNK, LocalSpace
from seqwrite.store import SwiftStore

log = logging.getLogger(__name__)

DEFAULT_SEGMENT_SIZE = 5 * 2**30  # Swift's default max_file_size
DEFAULT_SMALL_THRESHOLD = 1 << 20  # files up to 1 MiB are one plain PUT
CHUNK = 4 << 20  # bytes handed to the upload thread at a time (fewer thread hand-offs)
TAG_CONCURRENCY = 4
DISCARD_DEADLINE = 30.0  # seconds an aborted write's segments are tried to be deleted
SPACE_WAIT = 60.0  # seconds a writer waits for the local disk to free room before ENOSPC
EMPTY_HASH = blake3.blake3(b"").hexdigest()


class PublishMode(enum.Enum):
    """How to publish after the claim: CONDITIONAL (If-None-Match: *, dedup on 412) or
    UNCONDITIONAL (overwrite: used when a garbage collector may be deleting the old copy)."""

    CONDITIONAL = "conditional"
    UNCONDITIONAL = "unconditional"


ClaimHook = Callable[[str, int, Sequence[tuple[str, int]]], Awaitable[PublishMode]]


async def _claim_nothing(digest: str, size: int, segs: Sequence[tuple[str, int]]) -> PublishMode:
    return PublishMode.CONDITIONAL


ContentKind = Literal["empty", "object", "manifest"]


@dataclass(frozen=True, slots=True)
class StoredContent:
    """What was stored: the CAS name (blake3 hex) and size, and how.

    kind: "empty" (no object), "object" (plain object at the CAS name) or "manifest"
    (SLO at the CAS name over `segments`). deduplicated: the CAS name already held it."""

    hash: str
    size: int
    kind: ContentKind
    segments: tuple[StoredSegment, ...] = ()
    deduplicated: bool = False


@dataclass(frozen=True, slots=True)
class WriterSettings:
    """How a filesystem's writers store content (one value per filesystem: the mount and ccd's
    settle make their Writers from the same settings)."""

    segment_size: int = DEFAULT_SEGMENT_SIZE
    small_threshold: int = DEFAULT_SMALL_THRESHOLD
    spool_dir: str | None = None
    verify_md5: bool = True
    space: LocalSpace | None = None  # the local disk budget the spools count against

    def writer(self, store: SwiftStore, layout: Layout, nursery: trio.Nursery, *,
               claim: ClaimHook, on_first_segment: Callable[[str], None] | None = None
               ) -> Writer:
        return Writer(store, layout, nursery, segment_size=self.segment_size,
                      small_threshold=self.small_threshold, spool_dir=self.spool_dir,
                      claim=claim, verify_md5=self.verify_md5,
                      on_first_segment=on_first_segment, space=self.space)


class Writer:
    """Streams one file's bytes into Swift. Sequential `write()`s, then `finish()` or `abort()`.

    Every segment is verified by its size (Swift checks size and ETag of each segment when the
    manifest is stored; integrity in transit comes from TCP, or TLS with an https auth URL).
    With `verify_md5` (the default), each segment's md5 is computed as it is sent and compared
    with the ETag Swift returns: an end-to-end check of every byte, at a CPU cost (md5 runs
    at ~500 MiB/s on one core here, beside the sending thread).

    Attributes:
        upload_id: names the temporary segments `.tmp/<upload_id>/<seq>` (the lease key).
        size: bytes written so far.
    """

    upload_id: str
    size: int

    def __init__(
        self,
        store: SwiftStore,
        layout: Layout,
        nursery: trio.Nursery,
        *,
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        small_threshold: int = DEFAULT_SMALL_THRESHOLD,
        spool_dir: str | None = None,
        claim: ClaimHook = _claim_nothing,
        verify_md5: bool = True,
        on_first_segment: Callable[[str], None] | None = None,
        space: LocalSpace | None = None,
    ) -> None:
        if segment_size <= 0 or small_threshold < 0:
            raise ValueError("segment_size must be > 0 and small_threshold >= 0")
        self.store = store
        self.layout = layout
        self.upload_id = uuid.uuid4().hex
        # Never above what Swift accepts as one object.
        self.segment_size = min(segment_size, store.limits.max_file_size)
        self.small_threshold = min(small_threshold, self.segment_size)
        self.spool_dir = spool_dir
        self.space = space
        self.size = 0
        self._nursery = nursery
        self._claim = claim
        self.verify_md5 = verify_md5
        # Called with the upload id before the first temporary segment is created (the mount
        # takes the upload lease there: small files, which have no segment, need none).
        self._on_first_segment = on_first_segment
        self._file_hash = blake3.blake3()
        self._hashing = ChunkHasher()  # updates _file_hash and _current_hash in a helper thread
        self._pending: deque[memoryview] = deque()  # bytes not yet handed to a segment
        self._pending_len = 0
        self._current: SegmentUpload | None = None
        # The blake3 of the segment in flight; None for segment 0, whose bytes are exactly the
        # file's so far (the file hasher answers for it: most files hash every byte once).
        self._current_hash: blake3.blake3 | None = None
        self._segments: list[tuple[SegmentUpload, str]] = []  # finished: (upload, blake3)
        self._closed = False
        self._publish_attempted = False  # the manifest PUT was sent (it may have landed)

    # -- writing -----------------------------------------------------------------------------

    async def write(self, data: bytes | memoryview) -> None:
        """Append `data`. Raises a StoreError if the upload failed for good."""
        if self._closed:
            raise WriterAborted("write after finish/abort")
        if not data:
            return
        if not isinstance(data, bytes):
            data = bytes(data)  # we keep a reference: never to a buffer the caller reuses
        self.size += len(data)
        self._pending.append(memoryview(data))
        self._pending_len += len(data)
        if self._current is None and self.size <= self.small_threshold:
            return  # still a candidate small file
        await self._drain(final=False)

    def _take(self, n: int) -> list[memoryview]:
        """The next `n` pending bytes, as views of the caller's buffers (no copy)."""
        self._pending_len -= n
        parts = []
        while n:
            piece = self._pending[0]
            if len(piece) <= n:
                parts.append(self._pending.popleft())
                n -= len(piece)
            else:
                parts.append(piece[:n])
                self._pending[0] = piece[n:]
                n = 0
        return parts

    async def _drain(self, *, final: bool) -> None:
        """Hand buffered bytes to segments in CHUNK pieces, rolling over at segment_size (or
        earlier, when the local disk has no room to spool more of the segment)."""
        while self._pending_len and (final or self._pending_len >= CHUNK):
            if self._current is None:
                self._start_segment()
            assert self._current is not None
            room = self.segment_size - self._current.size
            n = await self._reserve(min(self._pending_len, CHUNK, room))
            if not n:
                continue  # the segment was ended early, or space was freed: look again
            chunk = self._take(n)
            # Hashed as it goes out (in order, in the hashing thread), so the file hash at a
            # rollover is segment 0's hash.
            await self._hashing.update(chunk, (self._file_hash,) if self._current_hash is None
                                       else (self._file_hash, self._current_hash))
            await self._current.send(chunk, reserved=n if self.space is not None else 0)
            if self._current.size >= self.segment_size:
                await self._end_segment()

    async def _reserve(self, want: int) -> int:
        """Spool room for up to `want` bytes of the current segment: how many bytes it got, or
        0 after making room (ending the segment early, or waiting for uploads to free some).
        SpoolError (ENOSPC) if the local disk stays full."""
        space = self.space
        if space is None:
            return want
        got = space.take_up_to(want, least=min(want, MIN_SPOOL_CHUNK))
        if got:
            return got
        assert self._current is not None
        if self._current.size:
            if len(self._segments) + 1 >= self.store.limits.max_manifest_segments:
                raise SpoolError(errno.ENOSPC, f"the local disk is too full to spool this file "
                                 f"({space.describe()})")
            log.debug("%s: local disk full: segment %d ends early at %d bytes", self.upload_id,
                      self._current.seq, self._current.size)
            await self._end_segment()  # once uploaded, its spool is freed
            return 0
        with trio.move_on_after(SPACE_WAIT):
            await space.wait_freed()
            return 0
        raise SpoolError(errno.ENOSPC, f"the local disk is full ({space.describe()})")

    def _start_segment(self) -> None:
        seq = len(self._segments)
        if seq == 0 and self._on_first_segment is not None:
            self._on_first_segment(self.upload_id)
        name = self.layout.tmp_name(self.upload_id, seq)
        self._current = SegmentUpload(self.store, self.layout.tmp_container, name, seq,
                                      self.spool_dir, verify_md5=self.verify_md5,
                                      space=self.space)
        self._current_hash = None if seq == 0 else blake3.blake3()
        self._nursery.start_soon(self._current.run)

    async def _end_segment(self) -> None:
        assert self._current is not None
        await self._current.end()
        await self._hashing.drained()
        hasher = self._file_hash if self._current_hash is None else self._current_hash
        self._segments.append((self._current, hasher.hexdigest()))
        self._current = None

    # -- finishing ---------------------------------------------------------------------------

    async def finish(self) -> StoredContent:
        """Publish the content under its CAS name and return it (see the module docstring).

        On failure nothing is published, and the error is raised at once: what was uploaded is
        deleted in the background (best effort; ccd cleanup collects the rest)."""
        if self._closed:
            raise WriterAborted("finish after finish/abort")
        self._closed = True
        try:
            if self.size <= self.small_threshold:
                return await self._finish_small()
            return await self._finish_segmented()
        except BaseException:
            self._hashing.close()
            if not self._publish_attempted:
                self._discard_later()
            # else: the manifest PUT may have landed and name our segments: never delete them
            # here (cleanup deletes them if no manifest appeared; ccd retires them otherwise).
            raise

    async def _finish_small(self) -> StoredContent:
        data = b"".join(self._take(self._pending_len))
        self._file_hash.update(data)
        digest = self._file_hash.hexdigest()
        if not data:
            return StoredContent(EMPTY_HASH, 0, "empty")
        mode = await self._claim(digest, len(data), ())
        container, name = self.layout.cas_path(digest)
        md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
        try:
            await self.store.put(container, name, data, etag=md5,
                                 headers={META_BLAKE3: digest},
                                 if_none_match=mode is PublishMode.CONDITIONAL)
        except AlreadyExists:
            return StoredContent(digest, len(data), "object", deduplicated=True)
        return StoredContent(digest, len(data), "object")

    async def _finish_segmented(self) -> StoredContent:
        await self._drain(final=True)
        if self._current is not None:
            await self._end_segment()
        segments: list[StoredSegment] = []
        for upload, seg_hash in self._segments:
            md5 = await upload.wait()
            segments.append(StoredSegment(upload.seq, upload.name, seg_hash, md5, upload.size))
        await self._hashing.drained()
        self._hashing.close()
        if len(segments) > self.store.limits.max_manifest_segments:
            raise TooLarge(
                f"file of {self.size} bytes needs {len(segments)} segments of "
                f"{self.segment_size} bytes; Swift allows {self.store.limits.max_manifest_segments}"
                " per manifest (raise segment_size)")
        digest = self._file_hash.hexdigest()
        mode = await self._claim(digest, self.size, [(s.hash, s.size) for s in segments])
        await self._tag(digest, segments)
        container, name = self.layout.cas_path(digest)
        entries = [ManifestEntry(self.layout.tmp_container, s.tmp_name, s.md5, s.size)
                   for s in segments]
        self._publish_attempted = True
        try:
            await self.store.put(container, name, manifest_json(entries),
                                 headers={META_BLAKE3: digest},
                                 if_none_match=mode is PublishMode.CONDITIONAL,
                                 query="multipart-manifest=put")
        except AlreadyExists:
            if await self._manifest_names_any(container, name, segments):
                # Our own PUT landed and its answer was lost: the retry saw our manifest.
                return StoredContent(digest, self.size, "manifest", tuple(segments))
            # Already stored by another write: our segments are redundant (deleted in the
            # background, best effort; ccd retires tagged segments that no manifest names).
            self._nursery.start_soon(self._delete_segments, segments)
            return StoredContent(digest, self.size, "manifest", tuple(segments), True)
        return StoredContent(digest, self.size, "manifest", tuple(segments))

    async def _manifest_names_any(self, container: str, name: str,
                                  segments: Sequence[StoredSegment]) -> bool:
        """Whether the stored manifest names one of `segments` (True when unsure: keep them)."""
        try:
            stored = await self.store.read_object(container, name)
        except StoreError as exc:
            log.info("cannot read the manifest at %s/%s (%s): keeping our segments",
                     container, name, exc)
            return True
        if not stored.exists:
            return True  # gone meanwhile (a collector?): keep ours, cleanup decides
        if not stored.is_manifest:
            return False  # a plain object (e.g. consolidated): not our manifest
        named = stored.names_in(self.layout.tmp_container)
        return any(s.tmp_name in named for s in segments)

    async def _tag(self, digest: str, segments: list[StoredSegment]) -> None:
        """POST the tag on every segment (POST replaces all user metadata: send the full set)."""
        limiter = trio.CapacityLimiter(TAG_CONCURRENCY)

        async def tag(seg: StoredSegment) -> None:
            async with limiter:
                await self.store.post(self.layout.tmp_container, seg.tmp_name, {
                    TAG_BIGFILE: digest, META_BLAKE3: seg.hash, META_SEQ: str(seg.seq)})

        try:
            async with trio.open_nursery() as nursery:
                for seg in segments:
                    nursery.start_soon(tag, seg)
        except BaseExceptionGroup as group:  # one typed error for the caller, not a group
            store_errors = group.subgroup(StoreError)
            if store_errors is None or store_errors.exceptions != group.exceptions:
                raise
            raise store_errors.exceptions[0] from None

    # -- aborting ----------------------------------------------------------------------------

    def abort(self) -> None:
        """Give up: nothing is published or tagged. Returns at once: the segment uploads stop,
        and what they stored is deleted in the background (best effort, within
        DISCARD_DEADLINE; ccd cleanup collects the rest)."""
        if self._closed:
            return
        self._closed = True
        self._hashing.close()
        self._discard_later()

    def _discard_later(self) -> None:
        uploads = [u for u, _ in self._segments]
        if self._current is not None:
            uploads.append(self._current)
            self._current = None
        self._segments.clear()
        self._pending.clear()
        self._pending_len = 0
        for upload in uploads:
            upload.abort()
        if uploads:
            self._nursery.start_soon(self._delete_uploads, uploads)

    async def _delete_uploads(self, uploads: list[SegmentUpload]) -> None:
        """Once each aborted upload has ended, delete what it stored."""
        with trio.move_on_after(DISCARD_DEADLINE):
            for upload in uploads:
                try:
                    await upload.wait()
                except StoreError:
                    pass
                try:
                    await self.store.delete(self.layout.tmp_container, upload.name)
                except StoreError as exc:
                    log.info("abort: could not delete %s (%s); cleanup will", upload.name, exc)

    async def _delete_segments(self, segments: Sequence[StoredSegment]) -> None:
        with trio.move_on_after(DISCARD_DEADLINE):
            for seg in segments:
                try:
                    await self.store.delete(self.layout.tmp_container, seg.tmp_name)
                except StoreError as exc:
                    log.info("could not retire redundant segment %s (%s)", seg.tmp_name, exc)
