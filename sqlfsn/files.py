"""files.py - inode attributes, file content maps (``file_piece``) and orphans.

A regular file's content is a list of pieces (see the file_piece table): ranges of stored
content objects, or holes. ``set_content`` replaces the whole list in one transaction (the
commit point of a write); ``setattr(size=...)`` truncates or extends it without moving data.
``unsettled_files`` and ``settle`` serve ccd's settle pass, which re-stores a file made of
many pieces as one whole content and swaps it in without changing what the file is.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable, Sequence
from typing import Any

from . import errors
from .core import Core, check_count, check_hash, check_time
from .database import Database, Isolation
from .types import ROOT_INODE, Attr, Piece, UnsettledFile

log = logging.getLogger(__name__)


def _normalized(pieces: Sequence[Piece], size: int) -> list[Piece]:
    """``pieces`` checked and without zero-length pieces; InvalidArgument."""
    check_count("size", size)
    out = []
    for piece in pieces:
        if not isinstance(piece, Piece):
            raise errors.InvalidArgument(f"not a Piece: {piece!r}")
        check_count("piece length", piece.length)
        check_count("piece obj_offset", piece.obj_offset)
        if piece.hash is None:
            if piece.obj_offset != 0:
                raise errors.InvalidArgument(f"hole with obj_offset: {piece!r}")
        else:
            check_hash(piece.hash)
        if piece.length:
            out.append(piece)
    total = sum(p.length for p in out)
    if total != size:
        raise errors.InvalidArgument(f"pieces sum to {total} bytes, size is {size}")
    return out


class FileOps(Core):
    """Attributes, content maps, orphans and statfs; mixed into Namespace."""

    def setattr(
        self,
        inode: int,
        *,
        mode: int | None = None,
        uid: int | None = None,
        gid: int | None = None,
        atime_ns: int | None = None,
        mtime_ns: int | None = None,
        ctime_ns: int | None = None,
        size: int | None = None,
    ) -> Attr:
        """Change the given attributes; returns the new Attr.

        ``mode`` sets the permission bits (the file type is kept). ``size`` truncates or
        extends a regular file (IsADirectory for a directory, InvalidArgument for other
        types): shrinking trims and drops pieces, growing appends a hole; if the size
        changes, the version is bumped and mtime set to now unless ``mtime_ns`` is given.
        Any change sets ctime to now unless ``ctime_ns`` is given. NotFound.
        """
        for what, value in (("uid", uid), ("gid", gid), ("size", size), ("mode", mode)):
            if value is not None:
                check_count(what, value)
        for what, value in (("atime_ns", atime_ns), ("mtime_ns", mtime_ns), ("ctime_ns", ctime_ns)):
            check_time(what, value)
        now = self._clock()

        def work(c: Database) -> Attr:
            # The inode's lock: the new attributes are computed from the old ones.
            old = self._attr(inode, lock=True)
            if size is not None and not stat.S_ISREG(old.mode):
                if stat.S_ISDIR(old.mode):
                    raise errors.IsADirectory(f"cannot truncate directory {inode}")
                raise errors.InvalidArgument(f"cannot truncate non-regular inode {inode}")
            given = (mode, uid, gid, atime_ns, mtime_ns, ctime_ns, size)
            if all(value is None for value in given):
                return old
            version, new_mtime = old.version, mtime_ns
            if size is not None and size != old.size:
                self._resize(inode, old.size, size)
                version += 1
                if new_mtime is None:
                    new_mtime = now
            new = Attr(
                inode=inode,
                mode=old.mode if mode is None else stat.S_IFMT(old.mode) | (mode & 0o7777),
                nlink=old.nlink,
                uid=old.uid if uid is None else uid,
                gid=old.gid if gid is None else gid,
                rdev=old.rdev,
                size=old.size if size is None else size,
                atime_ns=old.atime_ns if atime_ns is None else atime_ns,
                mtime_ns=old.mtime_ns if new_mtime is None else new_mtime,
                ctime_ns=now if ctime_ns is None else ctime_ns,
                version=version,
            )
            c.execute(
                "UPDATE inode SET mode = ?, uid = ?, gid = ?, size = ?, atime_ns = ?,"
                " mtime_ns = ?, ctime_ns = ?, version = ? WHERE id = ?",
                (
                    new.mode,
                    new.uid,
                    new.gid,
                    new.size,
                    new.atime_ns,
                    new.mtime_ns,
                    new.ctime_ns,
                    new.version,
                    inode,
                ),
            )
            return new

        return self._write(work)

    def _resize(self, inode: int, old_size: int, new_size: int) -> None:
        """Trim the pieces to ``new_size`` bytes, or append a hole (extending a final hole)."""
        c = self._db
        if new_size < old_size:
            pos = 0
            rows = c.execute(
                "SELECT idx, length FROM file_piece WHERE inode = ? ORDER BY idx", (inode,)
            ).fetchall()
            for idx, length in rows:
                if pos + length >= new_size:
                    keep = new_size - pos
                    if keep:
                        c.execute(
                            "UPDATE file_piece SET length = ? WHERE inode = ? AND idx = ?",
                            (keep, inode, idx),
                        )
                    first_dropped = idx + 1 if keep else idx
                    c.execute(
                        "DELETE FROM file_piece WHERE inode = ? AND idx >= ?",
                        (inode, first_dropped),
                    )
                    return
                pos += length
            return
        last = c.execute(
            "SELECT idx, hash FROM file_piece WHERE inode = ? ORDER BY idx DESC LIMIT 1",
            (inode,),
        ).fetchone()
        if last is not None and last[1] is None:
            c.execute(
                "UPDATE file_piece SET length = length + ? WHERE inode = ? AND idx = ?",
                (new_size - old_size, inode, last[0]),
            )
        else:
            c.execute(
                "INSERT INTO file_piece (inode, idx, hash, obj_offset, length)"
                " VALUES (?, ?, NULL, 0, ?)",
                (inode, 0 if last is None else last[0] + 1, new_size - old_size),
            )

    def pieces(self, inode: int) -> list[Piece]:
        """The content map of ``inode`` in order (empty for non-regular inodes); NotFound."""

        def work(c: Database) -> list[Piece]:
            rows = c.execute(
                "SELECT hash, obj_offset, length FROM file_piece WHERE inode = ? ORDER BY idx",
                (inode,),
            ).fetchall()
            if not rows:
                self._attr(inode)
            return [Piece(*row) for row in rows]

        return self._read(work)

    def set_content(
        self,
        inode: int,
        pieces: Sequence[Piece],
        size: int,
        *,
        expect_version: int | None = None,
        upload_id: str | None = None,
        mtime_ns: int | None = None,
    ) -> Attr:
        """Commit a write: replace the pieces and size of regular file ``inode``.

        One transaction: pieces and size replaced, mtime = ``mtime_ns`` or now, ctime =
        now, version + 1, and the lease ``upload_id`` (if given) deleted. Zero-length
        pieces are dropped. Checked in this order, nothing changed on error:
        InvalidArgument (malformed pieces, sum of lengths != size); NotFound; IsADirectory /
        InvalidArgument (not a regular file); Conflict (``expect_version`` given and not
        the current version); InvalidArgument("unclaimed content") if a piece's hash has
        no live content row, or the piece reaches past the content's size. Orphans may be
        written (an unlinked file can still be open).
        """
        pieces = _normalized(pieces, size)
        check_time("mtime_ns", mtime_ns)
        now = self._clock()

        def work(c: Database) -> Attr:
            old = self._attr(inode, lock=True)  # as every change of the inode's content
            if not stat.S_ISREG(old.mode):
                if stat.S_ISDIR(old.mode):
                    raise errors.IsADirectory(f"directory {inode} has no content")
                raise errors.InvalidArgument(f"inode {inode} is not a regular file")
            if expect_version is not None and expect_version != old.version:
                raise errors.Conflict(
                    f"inode {inode} is at version {old.version}, not {expect_version}"
                )
            ends: dict[str, int] = {}
            for p in pieces:
                if p.hash is not None:
                    ends[p.hash] = max(ends.get(p.hash, 0), p.obj_offset + p.length)
            for content_hash, end in ends.items():
                row = c.execute(
                    "SELECT size FROM content WHERE hash = ? AND state = 'live'", (content_hash,)
                ).fetchone()
                if row is None:
                    raise errors.InvalidArgument(f"unclaimed content {content_hash}")
                if end > row[0]:
                    raise errors.InvalidArgument(
                        f"piece ends at {end}, content {content_hash} has {row[0]} bytes"
                    )
            c.execute("DELETE FROM file_piece WHERE inode = ?", (inode,))
            c.executemany(
                "INSERT INTO file_piece (inode, idx, hash, obj_offset, length)"
                " VALUES (?, ?, ?, ?, ?)",
                [(inode, i, p.hash, p.obj_offset, p.length) for i, p in enumerate(pieces)],
            )
            if upload_id is not None:
                c.execute("DELETE FROM upload WHERE id = ?", (upload_id,))
            new_mtime = now if mtime_ns is None else mtime_ns
            c.execute(
                "UPDATE inode SET size = ?, mtime_ns = ?, ctime_ns = ?, version = version + 1"
                " WHERE id = ?",
                (size, new_mtime, now, inode),
            )
            return self._attr(inode)

        # SERIALIZABLE: the pieces may only name content that is live, and the collector's
        # condemn (also SERIALIZABLE) proves that no piece names it; one of two such
        # transactions racing is refused and run again. The compare-and-swap on the version
        # needs nothing more: of two commits from the same version, the second's UPDATE of the
        # inode row fails to serialize, and run again it sees the new version (Conflict).
        return self._write(work, isolation=Isolation.SERIALIZABLE)

    # -- settling (ccd) ---------------------------------------------------------------

    def versioned_pieces(self, inode: int) -> tuple[Attr, list[Piece]]:
        """The attributes and the content map of ``inode`` read in one snapshot, so the
        pieces are exactly those of ``attr.version``; NotFound."""

        def work(c: Database) -> tuple[Attr, list[Piece]]:
            attr = self._attr(inode)
            rows = c.execute(
                "SELECT hash, obj_offset, length FROM file_piece WHERE inode = ? ORDER BY idx",
                (inode,),
            ).fetchall()
            return attr, [Piece(*row) for row in rows]

        return self._read(work)

    def unsettled_files(self) -> list[UnsettledFile]:
        """The regular files with a name (nlink > 0) and at least one piece whose content is
        not one whole stored content, i.e. not the single piece (H, 0, size of H): several
        pieces, a hole, or part of a content. Ordered by inode. One scan of the files."""
        rows = self._db.execute(
            "SELECT i.id, i.version, i.size, i.ctime_ns,"
            "  (SELECT count(*) FROM file_piece q WHERE q.inode = i.id)"
            " FROM file_piece p JOIN inode i ON i.id = p.inode"
            " LEFT JOIN content c ON c.hash = p.hash"
            " WHERE p.idx = 0 AND i.nlink > 0 AND NOT (p.hash IS NOT NULL"
            "  AND p.obj_offset = 0 AND p.length = i.size AND c.size = i.size)"
            " ORDER BY i.id"
        ).fetchall()
        return [UnsettledFile(*row) for row in rows]

    def settle(
        self,
        inode: int,
        hash: str,
        size: int,
        *,
        expect_version: int,
        upload_id: str | None = None,
    ) -> Attr:
        """Make regular file ``inode`` the one piece (``hash``, 0, ``size``), if it is still
        at ``expect_version`` (ccd's settle; the caller stored the file's bytes of that
        version under ``hash``).

        Not a modification: size, times and version stay as they are, because the bytes
        do. Writers that read the old version and commit later with ``expect_version``
        still succeed, and what they commit is right (their pieces are positions in the
        same bytes; old pieces stay valid, see below). One transaction: the pieces are
        replaced, the lease ``upload_id`` (if given) deleted, and every content the old
        pieces used is claimed again (claimed_ns = now), so the garbage collector keeps it
        for its grace period after the settle, for readers that opened the old version.
        Checked in this order, nothing changed on error: InvalidArgument (malformed);
        NotFound; InvalidArgument (not a regular file); Conflict (not at
        ``expect_version``); InvalidArgument (``size`` is not the file's size, or
        "unclaimed content": ``hash`` has no live row of ``size`` bytes).
        """
        check_hash(hash)
        check_count("size", size, minimum=1)
        check_count("expect_version", expect_version)
        now = self._clock()

        def work(c: Database) -> Attr:
            old = self._attr(inode, lock=True)  # as every change of the inode's content
            if not stat.S_ISREG(old.mode):
                raise errors.InvalidArgument(f"inode {inode} is not a regular file")
            if expect_version != old.version:
                raise errors.Conflict(
                    f"inode {inode} is at version {old.version}, not {expect_version}"
                )
            if size != old.size:
                raise errors.InvalidArgument(f"inode {inode} has {old.size} bytes, not {size}")
            row = c.execute(
                "SELECT size FROM content WHERE hash = ? AND state = 'live'", (hash,)
            ).fetchone()
            if row is None or row[0] != size:
                raise errors.InvalidArgument(f"unclaimed content {hash} of {size} bytes")
            c.execute(
                "UPDATE content SET claimed_ns = ? WHERE state = 'live' AND hash IN"
                " (SELECT hash FROM file_piece WHERE inode = ? AND hash IS NOT NULL)",
                (now, inode),
            )
            c.execute("DELETE FROM file_piece WHERE inode = ?", (inode,))
            c.execute(
                "INSERT INTO file_piece (inode, idx, hash, obj_offset, length)"
                " VALUES (?, 0, ?, 0, ?)",
                (inode, hash, size),
            )
            if upload_id is not None:
                c.execute("DELETE FROM upload WHERE id = ?", (upload_id,))
            return old

        # SERIALIZABLE, as set_content: it adds a reference (and re-claims the old ones).
        return self._write(work, isolation=Isolation.SERIALIZABLE)

    # -- orphans and statistics -------------------------------------------------------

    def drop_if_orphan(self, inode: int) -> bool:
        """Delete ``inode`` (with its pieces and xattrs) if its nlink is 0 and no mount holds
        it open (mounts.py); whether it did. Not synced on its own (one fsync less per
        unlink): if a power failure loses it, the orphan is purged later (purge_orphans)."""
        if inode == ROOT_INODE:
            return False

        def work(c: Database) -> Callable[[], Any]:
            # The orphan's row is locked first (a hold being taken is waited for), then the
            # DELETE, a new statement, sees every hold (READ COMMITTED); nlink 0 stays 0:
            # nothing names the inode. Sent together: one round trip with the COMMIT.
            c.execute(f"SELECT 1 FROM inode WHERE id = ? AND nlink = 0{c.dialect.for_update}",
                      (inode,))
            return c.fetch_later(c.execute(
                "DELETE FROM inode WHERE id = ? AND nlink = 0 AND NOT EXISTS"
                " (SELECT 1 FROM mount_open h WHERE h.inode = ?) RETURNING id", (inode, inode)
            ))

        return self._write(work, durable=False)() is not None

    def statfs(self) -> tuple[int, int]:
        """(number of inodes, orphans included; total bytes of regular files)."""
        count, total = self._db.execute(
            "SELECT count(*), CAST(coalesce(sum(CASE WHEN (mode & 61440) = 32768 THEN size END),"
            " 0) AS BIGINT) FROM inode"
        ).fetchone()
        return count, total
