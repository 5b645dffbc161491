"""xattrs.py - extended attributes of inodes (the ``xattr`` table)."""

from __future__ import annotations

import logging

from . import errors
from .core import Core
from .database import Database
from .types import NAME_MAX

log = logging.getLogger(__name__)


#: xattr namespaces the kernel or a security module interprets (POSIX ACLs, SELinux labels,
#: file capabilities). cloudfs enforces neither, so storing them would pretend a protection
#: that does not exist: requests for them are Unsupported (EOPNOTSUPP). Tools cache that
#: answer per filesystem (`ls -l` asks once, not twice per entry), which a "no such
#: attribute" answer would not allow.
UNSUPPORTED_XATTR_PREFIXES = (b"system.", b"security.")


def _check_xattr_name(name: bytes) -> None:
    if not isinstance(name, bytes):
        raise TypeError(f"xattr names are bytes, not {type(name).__name__}")
    if len(name) > NAME_MAX:
        raise errors.NameTooLong(f"xattr name of {len(name)} bytes")
    if not name or b"\0" in name:
        raise errors.InvalidName(f"xattr name {name!r}")
    if name.startswith(UNSUPPORTED_XATTR_PREFIXES):
        raise errors.Unsupported(f"xattr namespace of {name!r}")


class XattrOps(Core):
    """Extended attributes; mixed into Namespace."""

    def getxattr(self, inode: int, name: bytes) -> bytes:
        """The value of xattr ``name``; NotFound (inode), NoSuchAttr."""
        _check_xattr_name(name)
        row = self._db.execute(
            "SELECT value FROM xattr WHERE inode = ? AND name = ?", (inode, name)
        ).fetchone()
        if row is None:
            self._attr(inode)
            raise errors.NoSuchAttr(f"{name!r} of inode {inode}")
        value: bytes = row[0]
        return value

    def setxattr(
        self,
        inode: int,
        name: bytes,
        value: bytes,
        *,
        create: bool = False,
        replace: bool = False,
    ) -> None:
        """Set xattr ``name``; ctime = now. ``create``: Exists if present (XATTR_CREATE);
        ``replace``: NoSuchAttr if absent (XATTR_REPLACE); both: InvalidArgument."""
        _check_xattr_name(name)
        if not isinstance(value, bytes):
            raise TypeError(f"xattr values are bytes, not {type(value).__name__}")
        if create and replace:
            raise errors.InvalidArgument("setxattr: create and replace together")
        now = self._clock()

        def work(c: Database) -> None:
            self._attr(inode, lock=True)  # its lock: XATTR_CREATE / REPLACE decide on it
            exists = c.execute(
                "SELECT 1 FROM xattr WHERE inode = ? AND name = ?", (inode, name)
            ).fetchone()
            if create and exists:
                raise errors.Exists(f"xattr {name!r} of inode {inode}")
            if replace and not exists:
                raise errors.NoSuchAttr(f"{name!r} of inode {inode}")
            c.execute(
                "INSERT INTO xattr (inode, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (inode, name) DO UPDATE SET value = excluded.value",
                (inode, name, value),
            )
            c.execute("UPDATE inode SET ctime_ns = ? WHERE id = ?", (now, inode))

        self._write(work)

    def listxattr(self, inode: int) -> list[bytes]:
        """The xattr names of ``inode``, sorted; NotFound."""

        def work(c: Database) -> list[bytes]:
            self._attr(inode)
            rows = c.execute(
                "SELECT name FROM xattr WHERE inode = ? ORDER BY name", (inode,)
            ).fetchall()
            return [row[0] for row in rows]

        return self._read(work)

    def removexattr(self, inode: int, name: bytes) -> None:
        """Remove xattr ``name``; ctime = now. NotFound (inode), NoSuchAttr."""
        _check_xattr_name(name)
        now = self._clock()

        def work(c: Database) -> None:
            # One DELETE decides; nothing else to keep.
            self._attr(inode)
            cur = c.execute("DELETE FROM xattr WHERE inode = ? AND name = ?", (inode, name))
            if cur.rowcount == 0:
                raise errors.NoSuchAttr(f"{name!r} of inode {inode}")
            c.execute("UPDATE inode SET ctime_ns = ? WHERE id = ?", (now, inode))

        self._write(work)
