"""fsck_queries.py - the read queries of ``cloudfs fsck``: what the namespace expects Swift to
hold, and who to name when it does not.

fsck cross-checks the namespace against the store. It needs, in one snapshot, every content
that a file references with what the registry says of it (size, state, segments) and how far
into it the files read; then, for the few contents found missing or damaged, the files that use
them and their names. Only reads: the repairs use the ordinary operations (mkdir, rename,
setxattr, upload_end). The SQL is the same on both engines (dialect.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from .core import Core, check_hash
from .database import Database

#: Rows of ``IN (...)`` per statement when looking up many hashes.
_BATCH = 500


class ContentUse(NamedTuple):
    """A content that at least one file references (orphans included), as the namespace sees
    it: the object Swift must hold at its CAS name."""

    hash: str
    size: int | None  # the registry's size; None when the content has no registry row
    state: str | None  # the registry's state ('live', 'deleting'); None without a row
    end: int  # the furthest byte a piece reads: obj_offset + length, at most
    files: int  # how many inodes reference it
    segments: tuple[tuple[str, int], ...]  # (segment_hash, size) in order; () for one object


class FileCounts(NamedTuple):
    """How many regular files there are (orphans included), and how many hold bytes stored
    in Swift (at least one piece that is not a hole)."""

    files: int
    stored: int


class FsckOps(Core):
    """The read queries of fsck; mixed into Namespace."""

    def contents_in_use(self) -> list[ContentUse]:
        """Every content referenced by a file piece, ordered by hash, in one snapshot."""

        def work(c: Database) -> list[ContentUse]:
            rows = c.execute(
                "SELECT p.hash, k.size, k.state, CAST(max(p.obj_offset + p.length) AS BIGINT),"
                " count(DISTINCT p.inode) FROM file_piece p"
                " LEFT JOIN content k ON k.hash = p.hash WHERE p.hash IS NOT NULL"
                " GROUP BY p.hash, k.size, k.state ORDER BY p.hash"
            ).fetchall()
            segments: dict[str, list[tuple[str, int]]] = {}
            for h, segment, size in c.execute(
                "SELECT s.content_hash, s.segment_hash, s.size FROM content_segment s"
                " WHERE EXISTS (SELECT 1 FROM file_piece p WHERE p.hash = s.content_hash)"
                " ORDER BY s.content_hash, s.seq"
            ):
                segments.setdefault(h, []).append((segment, size))
            return [ContentUse(h, size, state, end, files, tuple(segments.get(h, ())))
                    for h, size, state, end, files in rows]

        return self._read(work)

    def content_use(self, hash: str) -> ContentUse | None:
        """What ``contents_in_use`` says of ``hash`` now, or None if no file references it
        any more."""
        check_hash(hash)

        def work(c: Database) -> ContentUse | None:
            row = c.execute(
                "SELECT CAST(max(p.obj_offset + p.length) AS BIGINT), count(DISTINCT p.inode)"
                " FROM file_piece p WHERE p.hash = ?", (hash,)
            ).fetchone()
            if row is None or not row[1]:
                return None
            info = c.execute("SELECT size, state FROM content WHERE hash = ?",
                             (hash,)).fetchone()
            segments = c.execute(
                "SELECT segment_hash, size FROM content_segment WHERE content_hash = ?"
                " ORDER BY seq", (hash,)
            ).fetchall()
            size, state = (None, None) if info is None else info
            return ContentUse(hash, size, state, row[0], row[1],
                              tuple((h, s) for h, s in segments))

        return self._read(work)

    def files_using(self, hashes: Iterable[str]) -> dict[str, list[int]]:
        """The inodes whose pieces reference each of ``hashes`` (ordered; absent: none)."""
        wanted = sorted({check_hash(h) for h in hashes})
        out: dict[str, list[int]] = {}
        for start in range(0, len(wanted), _BATCH):
            batch = wanted[start:start + _BATCH]
            marks = ", ".join("?" * len(batch))
            rows = self._db.execute(
                f"SELECT DISTINCT hash, inode FROM file_piece WHERE hash IN ({marks})"
                " ORDER BY hash, inode", batch
            ).fetchall()
            for h, inode in rows:
                out.setdefault(h, []).append(inode)
        return out

    def names_of(self, inode: int) -> list[tuple[int, bytes]]:
        """Every (parent directory, name) of ``inode``, oldest first; [] for an orphan."""
        rows = self._db.execute(
            "SELECT parent, name FROM dentry WHERE inode = ? ORDER BY id", (inode,)
        ).fetchall()
        return [(parent, bytes(name)) for parent, name in rows]

    def file_counts(self) -> FileCounts:
        """The regular files, and those with bytes in Swift (see FileCounts)."""
        row = self._db.execute(
            "SELECT count(*), count(CASE WHEN EXISTS (SELECT 1 FROM file_piece p"
            "  WHERE p.inode = i.id AND p.hash IS NOT NULL) THEN 1 END)"
            " FROM inode i WHERE (i.mode & 61440) = 32768"
        ).fetchone()
        return FileCounts(row[0], row[1])
