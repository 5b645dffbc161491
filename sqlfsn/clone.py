"""clone.py - instant copies: a file or a directory tree copied as new inodes that share the
source's stored content (``clone``), and the read-only marks of snapshots.

A clone copies rows, never bytes: every inode of the source tree gets a new inode with the same
mode, owner, rdev, size, atime, mtime and symlink target (ctime = now, version 0), every name a
new name, every xattr a new xattr, and every regular file the same ``file_piece`` rows (the
same content hashes, offsets and lengths). Hard links inside the tree stay hard links in the
copy (one new inode per source inode, named as often as inside the tree); a name outside the
tree is not copied, so a copied file's nlink counts its names inside the copy.

The garbage collector keeps every hash some ``file_piece`` row names (content.py, rule 1): the
copy's pieces are such rows, so deleting the source never frees what the copy uses, and no
other counter exists to keep up to date. The whole copy is ONE transaction, SERIALIZABLE like
every transaction adding references (core.py): it copies one committed state of the tree (a
file being written is copied at its last committed version: uncommitted bytes have no pieces
yet), and a collector condemning a hash whose last other reference goes away at the same time
conflicts with it (one of the two runs again).

Read-only snapshots: ``clone(read_only=True)`` records the copy's root inode in the meta table
(key ``readonly.<inode>``) in the same transaction. An inode is read-only when one of its
ancestors (through any of its names) or itself is such a root: ``read_only_roots`` and
``in_read_only``; ``release_read_only`` deletes the mark (the snapshot becomes writable).
sqlfsn does not refuse changes itself (ccd's settle must keep working on
snapshot files: it changes no byte); the FUSE layer asks before every change (cloudfs/ops.py).
Why a mark on the root, found by ancestry, is right for renames: nothing can leave or enter a
read-only tree without changing one of its directories' entries, which is refused; so the set
of inodes below a root only changes when the root itself is renamed (refused too), and the
ancestry is always the tree that was copied.
"""

from __future__ import annotations

import logging
import stat
from dataclasses import dataclass

from . import errors
from .core import check_name
from .database import Database, Isolation
from .tree import TreeOps
from .types import ROOT_INODE

log = logging.getLogger(__name__)

#: Prefix of the meta keys marking read-only snapshot roots: ``readonly.<inode>`` = '1'.
READONLY_KEY = "readonly."

_INODE_COLUMNS = "id, mode, uid, gid, rdev, size, atime_ns, mtime_ns, target"


@dataclass(frozen=True, slots=True)
class CloneResult:
    """What ``clone`` made: the copy's root inode and counts of what it copied."""

    inode: int
    inodes: int  # new inodes (hard links counted once)
    names: int  # new directory entries, the copy's own name included
    files: int  # regular files among the new inodes
    bytes: int  # sum of the sizes of those files (shared, not stored again)
    pieces: int  # file_piece rows copied (new references to stored content)
    xattrs: int
    read_only: bool


class CloneOps(TreeOps):
    """Clones and read-only snapshot marks; mixed into Namespace."""

    def clone(self, source: int, dst_parent: int, dst_name: bytes, *,
              read_only: bool = False) -> CloneResult:
        """Copy inode ``source`` (a file of any type, or a directory with its whole tree) to
        the new name ``dst_name`` in directory ``dst_parent``, like ``cp -a``, sharing the
        stored content (see the module docstring). One transaction.

        Errors, nothing changed: NameTooLong / InvalidName; NotFound (source, or it is an
        orphan; dst_parent); NotADirectory (dst_parent); Exists (dst_name); InvalidMove
        (dst_parent is the source directory or lies below it); InvalidArgument (``read_only``
        for a non-directory, or the root as source).
        """
        check_name(dst_name)
        now = self._clock()

        def work(db: Database) -> CloneResult:
            src = db.execute(f"SELECT {_INODE_COLUMNS}, nlink FROM inode WHERE id = ?",
                             (source,)).fetchone()
            if src is None or (src[-1] == 0 and source != ROOT_INODE):
                raise errors.NotFound(f"inode {source}")
            is_dir = stat.S_ISDIR(src[1])
            if read_only and not is_dir:
                raise errors.InvalidArgument("a read-only snapshot is of a directory")
            if is_dir:
                # As a rename between directories: which directory lies below which only
                # changes under this lock, so the subtree test holds until the COMMIT.
                db.lock_renames()
            if self._dir_entry(dst_parent, dst_name, live=True) is not None:
                raise errors.Exists(f"{dst_name!r} in directory {dst_parent}")
            if is_dir and self._in_subtree(dst_parent, source):
                raise errors.InvalidMove(f"a copy of directory {source} inside itself")
            result = self._copy(db, src, is_dir, dst_parent, dst_name, now)
            if read_only:
                db.execute("INSERT INTO meta (key, value) VALUES (?, '1')",
                           (f"{READONLY_KEY}{result.inode}",))
            return _with_ro(result, read_only)

        result = self._write(work, isolation=Isolation.SERIALIZABLE)
        log.debug("cloned inode %d to %r in %d: %s", source, dst_name, dst_parent, result)
        return result

    def _copy(self, db: Database, src: tuple[object, ...], is_dir: bool, dst_parent: int,
              dst_name: bytes, now: int) -> CloneResult:
        """The copy itself, inside clone's transaction, the checks done."""
        source = int(src[0])  # type: ignore[call-overload]
        # Every name below the source, parents before children (dentry ids increase, but a
        # rename can put an old entry into a newer directory: order by depth, then id).
        entries: list[tuple[int, bytes, int]] = []
        if is_dir:
            entries = [(p, bytes(n), i) for p, n, i in db.execute(
                "WITH RECURSIVE t (id, parent, name, inode, depth) AS ("
                " SELECT d.id, d.parent, d.name, d.inode, 1 FROM dentry d WHERE d.parent = ?"
                " UNION ALL"
                " SELECT d.id, d.parent, d.name, d.inode, t.depth + 1 FROM dentry d"
                " JOIN t ON d.parent = t.inode JOIN inode i ON i.id = t.inode"
                " WHERE (i.mode & 61440) = 16384)"
                " SELECT parent, name, inode FROM t ORDER BY depth, id",
                (source,),
            ).fetchall()]
        olds = list(dict.fromkeys([source, *(inode for _, _, inode in entries)]))
        rows = {}
        for start in range(0, len(olds), 500):
            chunk = olds[start:start + 500]
            marks = ", ".join("?" * len(chunk))
            for row in db.execute(f"SELECT {_INODE_COLUMNS} FROM inode WHERE id IN ({marks})",
                                  chunk).fetchall():
                rows[row[0]] = row
        names_of: dict[int, int] = {}
        subdirs: dict[int, int] = {}
        for parent, _, inode in entries:
            names_of[inode] = names_of.get(inode, 0) + 1
            if stat.S_ISDIR(rows[inode][1]):
                subdirs[parent] = subdirs.get(parent, 0) + 1
        pending = []  # PostgreSQL: every INSERT queued, then all ids read in one round trip
        files = size = 0
        for old in olds:
            _, mode, uid, gid, rdev, fsize, atime, mtime, target = rows[old]
            if stat.S_ISDIR(mode):
                nlink = 2 + subdirs.get(old, 0)
            else:
                nlink = 1 if old == source else names_of[old]
            if stat.S_ISREG(mode):
                files += 1
                size += fsize
            pending.append(db.fetch_later(db.execute(
                "INSERT INTO inode (mode, uid, gid, rdev, nlink, size, atime_ns, mtime_ns,"
                " ctime_ns, version, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
                " RETURNING id",
                (mode, uid, gid, rdev, nlink, fsize, atime, mtime, now, target),
            )))
        new = {old: int(fetch()[0]) for old, fetch in zip(olds, pending, strict=True)}
        db.executemany(
            "INSERT INTO dentry (parent, name, inode) VALUES (?, ?, ?)",
            [(dst_parent, dst_name, new[source])]
            + [(new[parent], name, new[inode]) for parent, name, inode in entries],
        )
        pairs = [(new[old], old) for old in olds]
        pieces = xattrs = 0
        for start in range(0, len(pairs), 500):
            chunk = pairs[start:start + 500]
            # (VALUES ...) names its columns column1, column2 on both engines; an INSERT
            # starting with WITH would hide its rowcount from Python's sqlite3.
            values = ", ".join("(CAST(? AS BIGINT), CAST(? AS BIGINT))" for _ in chunk)
            flat = [n for pair in chunk for n in pair]
            pieces += db.execute(
                "INSERT INTO file_piece (inode, idx, hash, obj_offset, length)"
                " SELECT m.column1, p.idx, p.hash, p.obj_offset, p.length"
                f" FROM (VALUES {values}) AS m JOIN file_piece p ON p.inode = m.column2",
                flat,
            ).rowcount
            xattrs += db.execute(
                "INSERT INTO xattr (inode, name, value) SELECT m.column1, x.name, x.value"
                f" FROM (VALUES {values}) AS m JOIN xattr x ON x.inode = m.column2",
                flat,
            ).rowcount
        self._touch_dir(dst_parent, now, 1 if is_dir else 0)
        return CloneResult(new[source], len(olds), len(entries) + 1, files, size, pieces,
                           xattrs, False)

    # -- read-only snapshots ------------------------------------------------------------

    def read_only_roots(self) -> frozenset[int]:
        """The root inodes of the read-only snapshots."""
        rows = self._db.execute(
            "SELECT key FROM meta WHERE key LIKE ?", (f"{READONLY_KEY}%",)
        ).fetchall()
        return frozenset(int(row[0][len(READONLY_KEY):]) for row in rows)

    def release_read_only(self, root: int) -> bool:
        """Make the read-only snapshot at ``root`` writable again (its mark is deleted);
        whether ``root`` was one."""

        def work(db: Database) -> bool:
            cur = db.execute("DELETE FROM meta WHERE key = ?", (f"{READONLY_KEY}{root}",))
            return cur.rowcount > 0

        return self._write(work)

    def in_read_only(self, inode: int, roots: frozenset[int]) -> bool:
        """Whether ``inode`` is one of ``roots`` or lies below one, through any of its
        names (one query walking up; none when ``roots`` is empty)."""
        if not roots:
            return False
        if inode in roots:
            return True
        rows = self._db.execute(
            "WITH RECURSIVE up (id) AS (SELECT CAST(? AS BIGINT) UNION"
            " SELECT d.parent FROM dentry d JOIN up ON d.inode = up.id)"
            " SELECT id FROM up",
            (inode,),
        ).fetchall()
        return any(row[0] in roots for row in rows)


def _with_ro(result: CloneResult, read_only: bool) -> CloneResult:
    return CloneResult(result.inode, result.inodes, result.names, result.files, result.bytes,
                       result.pieces, result.xattrs, read_only)
