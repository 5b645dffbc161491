"""tree.py - the directory tree: names, links, renames and listing (``inode`` + ``dentry``).

Every operation validates its names first (NameTooLong, InvalidName), then checks the
inodes in the order they are named, and changes nothing when it raises. Times: a new inode
gets atime = mtime = ctime = now; a change to a directory's entries sets the directory's
mtime and ctime; a new or removed name of an inode sets the inode's ctime.

Removing the last name of an inode (unlink, rmdir, rename over it) does not delete the row:
the inode becomes an orphan (nlink 0), still readable through its number, until the mount
calls ``drop_if_orphan`` (when the kernel forgets it) or ``purge_orphans``.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable, Iterator
from typing import Any

from . import errors
from .core import ATTR_COLUMNS, Core, check_count, check_name
from .database import Database
from .types import ROOT_INODE, TARGET_MAX, Attr, DirEntry, DirRow

log = logging.getLogger(__name__)

#: Entries fetched per query by readdir; the listing is resumable between batches.
READDIR_BATCH = 128

# File types mknod may create (S_IFDIR and S_IFLNK have their own operations).
_MKNOD_TYPES = frozenset({stat.S_IFREG, stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK})

_ATTR_I = ", ".join(f"i.{col}" for col in ATTR_COLUMNS.split(", "))
# readdir_rows: a DirRow per entry (no version: a listing does not need it, and each column
# is a Python object per row, the largest cost of listing a big directory).
_DIR_ROWS = (
    "SELECT d.id, d.name, i.id, i.mode, i.nlink, i.uid, i.gid, i.rdev, i.size, i.atime_ns,"
    " i.mtime_ns, i.ctime_ns FROM dentry d JOIN inode i ON i.id = d.inode"
    " WHERE d.parent = ? AND d.id > ? ORDER BY d.id LIMIT ?")


class TreeOps(Core):
    """Operations on names; mixed into Namespace."""

    def getattr(self, inode: int) -> Attr:
        """The attributes of ``inode`` (orphans included); NotFound."""
        return self._attr(inode)

    def lookup(self, parent: int, name: bytes) -> Attr:
        """The inode named ``name`` in directory ``parent``; NotFound, NotADirectory.

        b'.' and b'..' are InvalidName here: the FUSE layer answers those itself.
        """
        check_name(name)
        # One statement, found or not (a kernel's LOOKUP before each create finds nothing:
        # one round trip to PostgreSQL instead of two): the parent's row, and the entry's.
        row = self._db.execute(
            f"SELECT p.mode, {_ATTR_I} FROM inode p LEFT JOIN dentry d"
            " ON d.parent = p.id AND d.name = ? LEFT JOIN inode i ON i.id = d.inode"
            " WHERE p.id = ?",
            (name, parent),
        ).fetchone()
        if row is None:
            raise errors.NotFound(f"directory {parent}")
        if row[1] is None:
            if not stat.S_ISDIR(row[0]):
                raise errors.NotADirectory(f"inode {parent}")
            raise errors.NotFound(f"{name!r} in directory {parent}")
        return Attr(*row[1:])

    # -- creating ---------------------------------------------------------------------

    def mkdir(self, parent: int, name: bytes, mode: int, uid: int, gid: int) -> Attr:
        """New directory; ``mode`` gives the permission bits. Parent nlink + 1; Exists."""
        return self._make(parent, name, stat.S_IFDIR | (mode & 0o7777), uid, gid)

    def create(self, parent: int, name: bytes, mode: int, uid: int, gid: int, *,
               hold_for: int | None = None) -> Attr:
        """New empty regular file; ``mode`` gives the permission bits; Exists.

        ``hold_for``: a mount id; the new file is held open by that mount (``hold_open``,
        mounts.py) in the create's own transaction, where holds are recorded (PostgreSQL).
        The file and its hold commit together or not at all, so no instant exists where the
        file is visible to other mounts, open here, and unheld. MountLost (after the
        commit: the file exists, unheld and not open) if the mount's row is gone."""
        return self._make(parent, name, stat.S_IFREG | (mode & 0o7777), uid, gid,
                          hold_for=hold_for)

    def mknod(self, parent: int, name: bytes, mode: int, rdev: int, uid: int, gid: int) -> Attr:
        """New regular file, FIFO, socket or device; ``mode`` includes the file type.

        A type of 0 means a regular file (as mknod(2)); S_IFDIR, S_IFLNK and unknown types
        are InvalidArgument. ``rdev`` is kept for devices only (0 otherwise).
        """
        kind = stat.S_IFMT(mode) or stat.S_IFREG
        if kind not in _MKNOD_TYPES:
            raise errors.InvalidArgument(f"mknod cannot create file type {kind:#o}")
        if kind not in (stat.S_IFCHR, stat.S_IFBLK):
            rdev = 0
        return self._make(parent, name, kind | (mode & 0o7777), uid, gid, rdev=rdev)

    def symlink(self, parent: int, name: bytes, target: bytes, uid: int, gid: int) -> Attr:
        """New symlink to ``target`` (mode S_IFLNK | 0o777, size len(target)); Exists."""
        if not isinstance(target, bytes):
            raise TypeError(f"symlink targets are bytes, not {type(target).__name__}")
        if len(target) > TARGET_MAX:
            raise errors.NameTooLong(f"symlink target of {len(target)} bytes > {TARGET_MAX}")
        if not target or b"\0" in target:
            raise errors.InvalidArgument(f"bad symlink target {target[:32]!r}")
        return self._make(parent, name, stat.S_IFLNK | 0o777, uid, gid, target=target)

    def _make(
        self,
        parent: int,
        name: bytes,
        mode: int,
        uid: int,
        gid: int,
        *,
        rdev: int = 0,
        target: bytes | None = None,
        hold_for: int | None = None,
    ) -> Attr:
        check_name(name)
        check_count("uid", uid)
        check_count("gid", gid)
        is_dir = stat.S_ISDIR(mode)
        nlink = 2 if is_dir else 1
        size = 0 if target is None else len(target)
        now = self._clock()

        def work(db: Database) -> Callable[[], tuple[int, Any, Attr | None]]:
            # The parent's row lock: no other entry of this name, no rmdir of the parent.
            if self._dir_entry(parent, name, live=True) is not None:
                raise errors.Exists(f"{name!r} in directory {parent}")
            new = db.execute(
                "INSERT INTO inode (mode, uid, gid, rdev, nlink, size, atime_ns, mtime_ns,"
                " ctime_ns, version, target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 0, ?)"
                " RETURNING id",
                (mode, uid, gid, rdev, nlink, size, now, now, now, target),
            )
            db.execute(  # names the inode just inserted: no need to wait for its number
                f"INSERT INTO dentry (parent, name, inode) VALUES (?, ?, {db.dialect.last_inode})",
                (parent, name),
            )
            touched = self._touch_dir_returning(parent, now, 1 if is_dir else 0)
            got = db.fetch_later(new)
            if hold is None:
                return lambda: (got()[0], True, touched())
            # The mount's row locked FOR KEY SHARE by the INSERT's own SELECT: a reaper
            # deleting it is waited for, and a row it deleted is skipped (READ COMMITTED
            # rechecks a locked row), so the hold is inserted only while the mount lives,
            # and nothing is returned otherwise. The inode is ours alone until the COMMIT.
            # Sent with the rest: no round trip.
            registered = db.fetch_later(db.execute(
                f"INSERT INTO mount_open (inode, mount) SELECT {db.dialect.last_inode}, m.id"
                " FROM mount m WHERE m.id = ? FOR KEY SHARE RETURNING mount", (hold,)))
            return lambda: (got()[0], registered(), touched())

        hold = hold_for if hold_for is not None and self.shared else None
        if hold is not None:
            check_count("mount id", hold, minimum=1)
        inode, registered, touched = self._write(work)()
        self.touched_dir = None if touched is None else (touched, self.commits)
        if hold is not None and registered is None:
            raise errors.MountLost(f"mount {hold}")
        return Attr(inode, mode, nlink, uid, gid, rdev, size, now, now, now, 0)

    def readlink(self, inode: int) -> bytes:
        """The target of symlink ``inode``; NotFound, InvalidArgument if not a symlink."""
        row = self._db.execute("SELECT target FROM inode WHERE id = ?", (inode,)).fetchone()
        if row is None:
            raise errors.NotFound(f"inode {inode}")
        if row[0] is None:
            raise errors.InvalidArgument(f"inode {inode} is not a symlink")
        target: bytes = row[0]
        return target

    def link(self, inode: int, new_parent: int, new_name: bytes) -> Attr:
        """A new name for ``inode`` (hard link): nlink + 1, ctime = now.

        NotPermitted for directories; NotFound if the inode is missing or an orphan.
        """
        check_name(new_name)
        now = self._clock()

        def work(db: Database) -> Callable[[], Attr]:
            # The new parent's lock (as in _make), then the inode's: its nlink is tested.
            db.lock_inodes(new_parent)
            attr = self._attr(inode, lock=True)
            if stat.S_ISDIR(attr.mode):
                raise errors.NotPermitted(f"hard link to directory {inode}")
            if attr.nlink == 0:
                raise errors.NotFound(f"inode {inode} has no name left")
            self._dir(new_parent)
            if self._entry(new_parent, new_name) is not None:
                raise errors.Exists(f"{new_name!r} in directory {new_parent}")
            db.execute(
                "INSERT INTO dentry (parent, name, inode) VALUES (?, ?, ?)",
                (new_parent, new_name, inode),
            )
            self._touch_dir(new_parent, now)
            return self._link_delta(inode, 1, now)

        return self._write(work)()

    # -- removing ---------------------------------------------------------------------

    def unlink(self, parent: int, name: bytes) -> Attr:
        """Remove a non-directory name; returns the inode's new Attr (nlink 0 = orphan).

        NotFound, NotADirectory (parent), IsADirectory (the entry).
        """
        check_name(name)
        now = self._clock()

        def work(db: Database) -> Callable[[], tuple[Attr, Attr | None]]:
            # The parent's lock keeps the entry; the inode's nlink - 1 is one statement (its
            # row lock orders it with a link, which tests nlink under that lock).
            entry = self._dir_entry(parent, name, live=False)
            if entry is None:
                raise errors.NotFound(f"{name!r} in directory {parent}")
            dentry_id, inode, mode = entry
            if stat.S_ISDIR(mode):
                raise errors.IsADirectory(f"{name!r} in directory {parent}")
            db.execute("DELETE FROM dentry WHERE id = ?", (dentry_id,))
            touched = self._touch_dir_returning(parent, now)
            changed = self._link_delta(inode, -1, now)
            return lambda: (changed(), touched())

        attr, touched = self._write(work)()
        self.touched_dir = None if touched is None else (touched, self.commits)
        return attr

    def rmdir(self, parent: int, name: bytes) -> Attr:
        """Remove an empty directory; returns its Attr, now an orphan (nlink 0).

        NotFound, NotADirectory (parent or entry), NotEmpty. Parent nlink - 1.
        """
        check_name(name)
        now = self._clock()

        def work(db: Database) -> Callable[[], Any]:
            # The parent's lock keeps the entry; the directory's own lock keeps it empty: a
            # create in it waits for us, then finds it removed (nlink 0: NotFound).
            entry = self._dir_entry(parent, name, live=False)
            if entry is None:
                raise errors.NotFound(f"{name!r} in directory {parent}")
            dentry_id, inode, mode = entry
            if not stat.S_ISDIR(mode):
                raise errors.NotADirectory(f"{name!r} in directory {parent}")
            db.lock_inodes(inode)
            self._require_empty(inode)
            db.execute("DELETE FROM dentry WHERE id = ?", (dentry_id,))
            self._touch_dir(parent, now, -1)
            return db.fetch_later(db.execute(
                f"UPDATE inode SET nlink = 0, ctime_ns = ? WHERE id = ? RETURNING {ATTR_COLUMNS}",
                (now, inode),
            ))

        return Attr(*self._write(work)())

    def _require_empty(self, directory: int) -> None:
        row = self._db.execute(
            "SELECT 1 FROM dentry WHERE parent = ? LIMIT 1", (directory,)
        ).fetchone()
        if row is not None:
            raise errors.NotEmpty(f"directory {directory}")

    # -- rename -----------------------------------------------------------------------

    def rename(
        self,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        *,
        noreplace: bool = False,
        exchange: bool = False,
    ) -> int | None:
        """Move entry old_parent/old_name to new_parent/new_name, atomically.

        An existing target is replaced (file over file, directory over empty directory) and
        its inode number returned: it lost a name and may now be an orphan. Otherwise None.
        ``exchange`` swaps two existing entries. Errors, in the order checked: NameTooLong /
        InvalidName; InvalidArgument (noreplace with exchange); NotFound / NotADirectory
        (old_parent, then new_parent); NotFound (source; target with exchange); Exists
        (noreplace); then, if both names are the same inode, nothing happens (POSIX);
        InvalidMove (a directory into its own subtree); NotADirectory (directory over
        non-directory), IsADirectory (non-directory over directory), NotEmpty.

        The moved entry keeps its dentry id (readdir offset). Both parents get mtime and
        ctime = now, the moved inode(s) ctime = now, and directory parents' nlink follow.
        """
        check_name(old_name)
        check_name(new_name)
        if noreplace and exchange:
            raise errors.InvalidArgument("rename: noreplace and exchange together")
        now = self._clock()

        def work(db: Database) -> int | None:
            if old_parent != new_parent:
                # Only a rename between two directories can change which directory lies
                # below which: these take the filesystem's rename lock first (before any
                # row lock), so their subtree checks see each other's moves.
                db.lock_renames()
            # Both parents' locks (one statement, in inode order) keep the two entries, and
            # the new parent alive. Both entries are read in the same round trip, by the next
            # statement: the server runs it once the locks are held.
            locked = db.execute(
                f"SELECT {ATTR_COLUMNS} FROM inode WHERE id IN (?, ?) ORDER BY id"
                f"{db.dialect.for_update}",
                (old_parent, new_parent),
            )
            entries = db.execute(
                "SELECT d.parent, d.name, d.id, d.inode, i.mode FROM dentry d"
                " JOIN inode i ON i.id = d.inode"
                " WHERE (d.parent = ? AND d.name = ?) OR (d.parent = ? AND d.name = ?)",
                (old_parent, old_name, new_parent, new_name),
            )
            parents = {row[0]: Attr(*row) for row in locked.fetchall()}
            self._as_dir(old_parent, parents.get(old_parent), live=False)
            self._as_dir(new_parent, parents.get(new_parent), live=True)
            found = {(parent, bytes(name)): (dentry, inode, mode)
                     for parent, name, dentry, inode, mode in entries.fetchall()}
            return self._rename(old_parent, old_name, new_parent, new_name, noreplace,
                                exchange, now, found)

        return self._write(work)

    def _rename(
        self,
        old_parent: int,
        old_name: bytes,
        new_parent: int,
        new_name: bytes,
        noreplace: bool,
        exchange: bool,
        now: int,
        found: dict[tuple[int, bytes], tuple[int, int, int]],
    ) -> int | None:
        """rename() inside its transaction, the locks taken, the parents checked and the
        entries ``found`` ((parent, name) -> (dentry id, inode, mode))."""
        db = self._db
        source = found.get((old_parent, old_name))
        if source is None:
            raise errors.NotFound(f"{old_name!r} in directory {old_parent}")
        target = found.get((new_parent, new_name))
        if target is None and exchange:
            raise errors.NotFound(f"{new_name!r} in directory {new_parent}")
        if target is not None and noreplace:
            raise errors.Exists(f"{new_name!r} in directory {new_parent}")
        if target is not None and target[1] == source[1]:
            return None
        src_id, src_inode, src_mode = source
        src_dir = stat.S_ISDIR(src_mode)
        if src_dir and self._in_subtree(new_parent, src_inode):
            raise errors.InvalidMove(f"directory {src_inode} into {new_parent}")
        if exchange:
            assert target is not None
            self._exchange(source, target, old_parent, new_parent, now)
            return None
        replaced: int | None = None
        if target is not None:
            tgt_id, replaced, tgt_mode = target
            tgt_dir = stat.S_ISDIR(tgt_mode)
            if src_dir and not tgt_dir:
                raise errors.NotADirectory(f"{new_name!r} in directory {new_parent}")
            if tgt_dir and not src_dir:
                raise errors.IsADirectory(f"{new_name!r} in directory {new_parent}")
            if tgt_dir:
                db.lock_inodes(replaced)  # keeps it empty, as in rmdir
                self._require_empty(replaced)
            db.execute("DELETE FROM dentry WHERE id = ?", (tgt_id,))
            db.execute(
                "UPDATE inode SET nlink = CASE WHEN ? THEN 0 ELSE nlink - 1 END,"
                " ctime_ns = ? WHERE id = ?",
                (tgt_dir, now, replaced),
            )
            if tgt_dir:
                self._touch_dir(new_parent, now, -1)
        db.execute(
            "UPDATE dentry SET parent = ?, name = ? WHERE id = ?",
            (new_parent, new_name, src_id),
        )
        db.execute("UPDATE inode SET ctime_ns = ? WHERE id = ?", (now, src_inode))
        self._touch_dirs(old_parent, new_parent, now, 1 if src_dir else 0)
        return replaced

    def _exchange(
        self,
        source: tuple[int, int, int],
        target: tuple[int, int, int],
        old_parent: int,
        new_parent: int,
        now: int,
    ) -> None:
        """rename(exchange=True) after the common checks: swap what the two names point to."""
        (src_id, src_inode, src_mode), (tgt_id, tgt_inode, tgt_mode) = source, target
        if stat.S_ISDIR(tgt_mode) and self._in_subtree(old_parent, tgt_inode):
            raise errors.InvalidMove(f"directory {tgt_inode} into {old_parent}")
        db = self._db
        db.execute("UPDATE dentry SET inode = ? WHERE id = ?", (tgt_inode, src_id))
        db.execute("UPDATE dentry SET inode = ? WHERE id = ?", (src_inode, tgt_id))
        db.execute("UPDATE inode SET ctime_ns = ? WHERE id IN (?, ?)", (now, src_inode, tgt_inode))
        # A directory that changes parent moves one nlink from its old parent to its new one.
        shift = int(stat.S_ISDIR(src_mode)) - int(stat.S_ISDIR(tgt_mode))
        self._touch_dirs(old_parent, new_parent, now, shift)

    def _in_subtree(self, node: int, directory: int) -> bool:
        """Whether directory ``node`` is ``directory`` or lies below it (walks up names)."""
        row = self._db.execute(
            "WITH RECURSIVE up (id) AS (SELECT CAST(? AS BIGINT) UNION"
            " SELECT d.parent FROM dentry d JOIN up ON d.inode = up.id)"
            " SELECT 1 FROM up WHERE id = ? LIMIT 1",
            (node, directory),
        ).fetchone()
        return row is not None

    def path_of(self, inode: int) -> bytes | None:
        """A path of ``inode`` from the root, e.g. b'/a/b' (for messages; a file with several
        names gets one of them), b'/' for the root, or None if it has no name (an orphan)."""
        if inode == ROOT_INODE:
            return b"/"

        def work(c: Database) -> bytes | None:
            names: list[bytes] = []
            node = inode
            while node != ROOT_INODE:
                row = c.execute(
                    "SELECT parent, name FROM dentry WHERE inode = ? ORDER BY id LIMIT 1",
                    (node,),
                ).fetchone()
                if row is None or len(names) > 4096:
                    return None
                node, name = row
                names.append(bytes(name))
            return b"/" + b"/".join(reversed(names))

        return self._read(work)

    def parent_and_name(self, inode: int) -> tuple[int, bytes] | None:
        """One (parent directory, name) of ``inode``: None for the root or an orphan."""
        row = self._db.execute(
            "SELECT parent, name FROM dentry WHERE inode = ? ORDER BY id LIMIT 1", (inode,)
        ).fetchone()
        return None if row is None else (int(row[0]), bytes(row[1]))

    # -- listing ----------------------------------------------------------------------

    def readdir(self, inode: int, offset: int = 0) -> Iterator[DirEntry]:
        """The entries of directory ``inode`` whose offset is > ``offset``, in offset order.

        Offsets are dentry ids: never reused, so a listing resumed from any ``next_offset``
        skips nothing that stayed and repeats nothing. No b'.' / b'..'. Entries are read in
        batches, so the iterator holds no transaction open between items: an entry added
        while listing may or may not appear (POSIX allows both). NotFound and NotADirectory
        are raised by this call, not by the first ``next()``.
        """
        self._dir(inode, live=False)
        return self._readdir(inode, offset)

    def _readdir(self, inode: int, offset: int) -> Iterator[DirEntry]:
        while True:
            rows = self._db.execute(
                f"SELECT d.id, d.name, {_ATTR_I} FROM dentry d JOIN inode i ON i.id = d.inode"
                " WHERE d.parent = ? AND d.id > ? ORDER BY d.id LIMIT ?",
                (inode, offset, READDIR_BATCH),
            ).fetchall()
            for dentry_id, name, *attr in rows:
                yield DirEntry(name, Attr(*attr), dentry_id)
            if len(rows) < READDIR_BATCH:
                return
            offset = rows[-1][0]

    def readdir_rows(self, inode: int, offset: int, limit: int) -> list[DirRow]:
        """Up to ``limit`` entries of directory ``inode`` after ``offset``, in offset order, as
        plain rows (see DirRow) from one query: the same listing as ``readdir`` for callers
        that list a great many entries (the mount), to whom an Attr and a DirEntry per entry
        would cost more than the query itself. NotFound, NotADirectory."""
        self._dir(inode, live=False)
        return self._db.execute(_DIR_ROWS, (inode, offset, limit)).fetchall()
