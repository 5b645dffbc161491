"""content.py - the content registry (``content``, ``content_segment``) and upload leases.

The registry is the fence between writers and the garbage collector (GC); the protocol:

* A writer calls ``claim_content`` BEFORE it uploads an object or relies on an existing one
  (dedup). A claim refuses a hash the GC has condemned (state 'deleting'), and also a claim
  whose segments include a condemned hash: the writer must then upload the object again
  once the GC is done (``content_deleted``), or take the row over if the condemnation is
  older than ``takeover_deleting_older_than_ns`` (a GC that died mid-delete; the threshold
  must exceed the longest time a GC may take between ``condemn`` and deleting the object).
* ``set_content`` accepts only hashes with a live row. A claim protects its object for the
  GC's grace period; a writer slower than that gets InvalidArgument("unclaimed content")
  from set_content if the GC condemned the object meanwhile, never a dangling file.
* The GC lists the store, computes ``referenced_hashes(claimed_since_ns=start - grace)``,
  and for each unlisted object calls ``condemn(hash, claimed_before_ns=start - grace)``,
  which re-checks the same rules inside its transaction; only on True does it delete the
  object, then calls ``content_deleted``.

Kept (never condemned) are exactly: (1) every hash in file_piece (orphans included) and the
segments of those contents; (2) every live content row with claimed_ns >= the threshold,
and its segments.

Upload leases (``upload``): a writer takes one per write, heartbeats it, and ends it with
``set_content(upload_id=...)`` or ``upload_end``; the cleanup keeps '.tmp/<id>/' of every
lease with a recent heartbeat (``uploads_alive``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence

from . import errors
from .core import Core, check_count, check_hash
from .database import Database, Isolation
from .types import Claim, ContentInfo, ContentState, UploadInfo

log = logging.getLogger(__name__)

# The hashes kept by the GC, given :since (see the module docstring); a query fragment.
_KEPT = """
    WITH kept (hash) AS (
        SELECT hash FROM file_piece WHERE hash IS NOT NULL
        UNION
        SELECT hash FROM content WHERE state = 'live' AND claimed_ns >= :since
    )
    SELECT hash FROM kept
    UNION
    SELECT s.segment_hash FROM content_segment s JOIN kept k ON k.hash = s.content_hash
"""

# Whether :hash is in _KEPT for :since, by index look-ups only (condemn runs once per object).
_IS_KEPT = """
    SELECT EXISTS (SELECT 1 FROM file_piece WHERE hash = :hash)
        OR EXISTS (SELECT 1 FROM content
                   WHERE hash = :hash AND state = 'live' AND claimed_ns >= :since)
        OR EXISTS (SELECT 1 FROM content_segment s WHERE s.segment_hash = :hash AND (
                   EXISTS (SELECT 1 FROM file_piece p WHERE p.hash = s.content_hash)
                   OR EXISTS (SELECT 1 FROM content c WHERE c.hash = s.content_hash
                              AND c.state = 'live' AND c.claimed_ns >= :since)))
"""


# As a claim threshold: later than any claim, so only references keep a hash.
_NO_CLAIM_REACHES = 2**63 - 1


def _check_upload_id(upload_id: object) -> str:
    if not isinstance(upload_id, str) or not upload_id or "/" in upload_id:
        raise errors.InvalidArgument(f"bad upload id {upload_id!r}")
    return upload_id


class ContentOps(Core):
    """Content registry and upload leases; mixed into Namespace."""

    def claim_content(
        self,
        hash: str,
        size: int,
        segments: Sequence[tuple[str, int]] = (),
        *,
        takeover_deleting_older_than_ns: int | None = None,
    ) -> Claim:
        """Claim content ``hash`` of ``size`` bytes before uploading or relying on it.

        ``segments`` ((segment_hash, size) in order) describe a multi-segment content; they
        are recorded if the row has none yet (later claims never change them). If ``hash``
        or a segment hash has a row in state 'deleting' whose deleting_ns is not older than
        the takeover threshold (or no threshold is given): Claim(False, deleting_ns) and
        nothing changes. Otherwise the row becomes live with claimed_ns = now (as do the
        condemned rows taken over): Claim(True, None), or Claim(True, oldest deleting_ns) after a
        takeover: the object may be half deleted, so the writer must publish its own copy
        unconditionally instead of relying on what is stored. InvalidArgument for malformed
        arguments, segments not summing to ``size``, or a live row of another size.

        Committed without a WAL sync of its own: the claim fences the collector, which sees
        it at once, and only a later commit that references the content (synced, and so
        syncing this claim before it) can make anything depend on it. A claim lost in a power
        failure leaves an object nobody references, which is what the collector is for.
        """
        check_hash(hash)
        check_count("size", size)
        segs = [(check_hash(h), check_count("segment size", s, minimum=1)) for h, s in segments]
        if segs and sum(s for _, s in segs) != size:
            raise errors.InvalidArgument(f"segments of {hash} do not sum to {size}")
        now = self._clock()

        def work(c: Database) -> Claim:
            condemned: list[str] = []
            took_over_since: int | None = None  # oldest condemnation taken over
            for h in dict.fromkeys([hash, *(h for h, _ in segs)]):
                row = c.execute(
                    "SELECT deleting_ns FROM content WHERE hash = ? AND state = 'deleting'", (h,)
                ).fetchone()
                if row is None:
                    continue
                threshold = takeover_deleting_older_than_ns
                if threshold is None or row[0] >= threshold:
                    return Claim(False, row[0])
                condemned.append(h)
                took_over_since = row[0] if took_over_since is None else min(took_over_since,
                                                                              row[0])
            row = c.execute(
                "SELECT size FROM content WHERE hash = ? AND state = 'live'", (hash,)
            ).fetchone()
            if row is not None and row[0] != size:
                raise errors.InvalidArgument(f"content {hash} has {row[0]} bytes, not {size}")
            c.execute(
                "INSERT INTO content (hash, size, state, claimed_ns, deleting_ns)"
                " VALUES (?, ?, 'live', ?, NULL) ON CONFLICT (hash) DO UPDATE SET"
                " size = excluded.size, state = 'live', claimed_ns = excluded.claimed_ns,"
                " deleting_ns = NULL",
                (hash, size, now),
            )
            for h in condemned:
                if h != hash:
                    log.info("claim of %s takes over condemned segment %s", hash, h)
                    c.execute(
                        "UPDATE content SET state = 'live', claimed_ns = ?, deleting_ns = NULL,"
                        " size = ? WHERE hash = ?",
                        (now, dict(segs)[h], h),
                    )
                else:
                    log.info("claim takes over condemned content %s", hash)
            has_segments = c.execute(
                "SELECT 1 FROM content_segment WHERE content_hash = ? LIMIT 1", (hash,)
            ).fetchone()
            if segs and not has_segments:
                c.executemany(
                    "INSERT INTO content_segment (content_hash, seq, segment_hash, size)"
                    " VALUES (?, ?, ?, ?)",
                    [(hash, seq, h, s) for seq, (h, s) in enumerate(segs)],
                )
            return Claim(True, took_over_since)

        # SERIALIZABLE: the claim and the collector's condemn decide on the same rows, which
        # may not exist yet (a first claim, an object found without a row); of two racing,
        # one is refused and run again, and then sees the other's outcome.
        return self._write(work, isolation=Isolation.SERIALIZABLE, durable=False)

    def referenced_hashes(self, *, claimed_since_ns: int) -> set[str]:
        """Every hash the GC must keep (the two rules of the module docstring)."""
        rows = self._db.execute(_KEPT, {"since": claimed_since_ns}).fetchall()
        return {row[0] for row in rows}

    def condemn(self, hash: str, *, claimed_before_ns: int) -> bool:
        """Mark ``hash`` 'deleting' if it is not kept for ``claimed_since_ns =
        claimed_before_ns``, as a content or as a segment; whether it did.

        One transaction, so no claim or set_content can slip between the check and the
        mark. A hash without a row gets one (size 0, claimed_ns 0). Condemning a row
        already 'deleting' refreshes its deleting_ns (the GC is working on it now).
        """
        check_hash(hash)
        now = self._clock()

        def work(c: Database) -> bool:
            kept = c.execute(_IS_KEPT, {"since": claimed_before_ns, "hash": hash}).fetchone()
            if kept[0]:
                return False
            c.execute(
                "INSERT INTO content (hash, size, state, claimed_ns, deleting_ns)"
                " VALUES (?, 0, 'deleting', 0, ?) ON CONFLICT (hash) DO UPDATE SET"
                " state = 'deleting', deleting_ns = excluded.deleting_ns",
                (hash, now),
            )
            return True

        # SERIALIZABLE: "no piece and no recent claim references it" is about rows that do
        # not exist; a set_content, settle or claim adding one concurrently (all three
        # SERIALIZABLE) conflicts with this transaction, and one of the two is run again.
        return self._write(work, isolation=Isolation.SERIALIZABLE)

    def content_deleted(self, hash: str) -> bool:
        """The object ``hash`` is gone from the store: forget its row (and segments) if it
        is 'deleting'; whether a row was deleted (False if a claim took it over)."""
        check_hash(hash)

        def work(c: Database) -> bool:
            cur = c.execute("DELETE FROM content WHERE hash = ? AND state = 'deleting'", (hash,))
            return cur.rowcount > 0

        # SERIALIZABLE: against a claim taking the condemned row over at the same time.
        return self._write(work, isolation=Isolation.SERIALIZABLE)

    def contents(self, state: ContentState | None = None) -> list[ContentInfo]:
        """The registry rows (all, or those in ``state``), ordered by hash."""
        if state not in (None, "live", "deleting"):
            raise errors.InvalidArgument(f"no content state {state!r}")
        where, params = ("", ()) if state is None else (" WHERE state = ?", (state,))
        rows = self._db.execute(
            f"SELECT hash, size, state, claimed_ns, deleting_ns FROM content{where}"
            " ORDER BY hash",
            params,
        ).fetchall()
        return [ContentInfo(*row) for row in rows]

    def content_segments(self, hash: str) -> list[tuple[str, int]]:
        """The (segment_hash, size) of content ``hash`` in order; [] for a single object."""
        rows = self._db.execute(
            "SELECT segment_hash, size FROM content_segment WHERE content_hash = ? ORDER BY seq",
            (hash,),
        ).fetchall()
        return [(h, s) for h, s in rows]

    # -- upload leases ----------------------------------------------------------------

    def upload_begin(self, upload_id: str) -> None:
        """Take the lease ``upload_id`` (started = heartbeat = now); Exists if taken."""
        _check_upload_id(upload_id)
        now = self._clock()

        def work(c: Database) -> int:
            # One statement decides (of two takers, the second finds the row).
            return c.execute(
                "INSERT INTO upload VALUES (?, ?, ?) ON CONFLICT (id) DO NOTHING",
                (upload_id, now, now),
            ).rowcount

        if self._write(work) == 0:
            raise errors.Exists(f"upload {upload_id}")

    def upload_heartbeat(self, upload_ids: Iterable[str]) -> set[str]:
        """Renew these leases (heartbeat = now), in one transaction.

        Returns the ids that have no lease any more (ended, or reaped by the cleanup): the
        writer must consider those uploads lost.
        """
        ids = [_check_upload_id(i) for i in upload_ids]
        now = self._clock()

        def work(c: Database) -> set[str]:
            # Each UPDATE decides for its own row.
            lost = set()
            for upload_id in ids:
                cur = c.execute("UPDATE upload SET heartbeat_ns = ? WHERE id = ?", (now, upload_id))
                if cur.rowcount == 0:
                    lost.add(upload_id)
            return lost

        return self._write(work)

    def upload_end(self, upload_id: str) -> bool:
        """Drop the lease (write aborted, or reaped by the cleanup); whether it existed."""
        _check_upload_id(upload_id)

        def work(c: Database) -> bool:
            return c.execute("DELETE FROM upload WHERE id = ?", (upload_id,)).rowcount > 0

        return self._write(work)

    def uploads_alive(self, since_ns: int) -> set[str]:
        """Ids of the leases whose heartbeat is at or after ``since_ns``."""
        rows = self._db.execute(
            "SELECT id FROM upload WHERE heartbeat_ns >= ?", (since_ns,)
        ).fetchall()
        return {row[0] for row in rows}

    def uploads(self) -> list[UploadInfo]:
        """Every lease, ordered by start time."""
        rows = self._db.execute(
            "SELECT id, started_ns, heartbeat_ns FROM upload ORDER BY started_ns, id"
        ).fetchall()
        return [UploadInfo(*row) for row in rows]

    # -- queries of the consolidation daemon and the cleanup (ccd) ----------------------

    def content_info(self, hash: str) -> ContentInfo | None:
        """The registry row of ``hash``, or None."""
        check_hash(hash)
        row = self._db.execute(
            "SELECT hash, size, state, claimed_ns, deleting_ns FROM content WHERE hash = ?",
            (hash,),
        ).fetchone()
        return None if row is None else ContentInfo(*row)

    def is_kept(self, hash: str, *, claimed_since_ns: int) -> bool:
        """Whether the GC keeps ``hash`` for this threshold (the rules of the module
        docstring), by index look-ups."""
        check_hash(hash)
        row = self._db.execute(_IS_KEPT, {"since": claimed_since_ns, "hash": hash}).fetchone()
        return bool(row[0])

    def is_referenced(self, hash: str) -> bool:
        """Whether a file (orphans included) references ``hash``, as a content or as a
        segment of one (rule 1 of the module docstring; claims do not count)."""
        return self.is_kept(hash, claimed_since_ns=_NO_CLAIM_REACHES)

    def segment_parents(self, hash: str) -> list[str]:
        """The contents other than ``hash`` itself that list ``hash`` as a segment (any
        state), ordered. The GC deletes a segment object only when this is empty: while a
        content row lists it, that content's manifest may still name it."""
        check_hash(hash)
        rows = self._db.execute(
            "SELECT DISTINCT content_hash FROM content_segment"
            " WHERE segment_hash = ? AND content_hash != ? ORDER BY content_hash",
            (hash, hash),
        ).fetchall()
        return [row[0] for row in rows]

    def unkept_contents(self, *, claimed_since_ns: int) -> list[str]:
        """The 'live' rows the GC does not keep for this threshold (claimed long ago, never
        referenced or no longer), ordered: contents whose writer died before publishing or
        whose files are gone. The GC removes them even when no listing shows their object."""
        rows = self._db.execute(
            f"SELECT hash FROM content WHERE state = 'live' AND claimed_ns < :since"
            f" AND hash NOT IN ({_KEPT}) ORDER BY hash",
            {"since": claimed_since_ns},
        ).fetchall()
        return [row[0] for row in rows]
