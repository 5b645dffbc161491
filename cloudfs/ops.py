"""The FUSE Operations class: a thin adapter between pyfuse3 and the domain.

Each handler translates arguments (inode numbers, bytes names), calls sqlfsn (namespace) or
Files (content), and translates the result into pyfuse3's types. Errors are mapped in one
place, `fuse_errors` + cloudfs.errors.ERRNO_TABLE; nothing else raises FUSEError. Lookup
counts (the kernel's references to inodes) are kept here, because deleting an unlinked inode
must wait until the kernel forgets it (see pyfuse3's gotchas).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import stat
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from itertools import repeat, takewhile
from typing import Any, ParamSpec, TypeVar

import pyfuse3
import trio

from cloudfs.attrs import BLKSIZE, fill, prepared, shown_items
from cloudfs.errors import errno_of
from cloudfs.files import Files
from cloudfs.knowndir import KnownDir
from cloudfs.listing import Listing
from cloudfs.readonly import ReadOnlyGuard
from sqlfsn import NAME_MAX, Attr, Namespace
from sqlfsn.errors import Exists, NameTooLong
from wiring.metrics import READ_SECONDS

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

VIRTUAL_FREE = 1 << 50  # statfs: bytes reported free (Swift has no fixed capacity)
RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
#: FUSE requests answered, by handler, and errors answered, by errno (`cloudfs stats`,
#: `cloudfs status`, the metrics). One mount per process (pyfuse3 is a process-wide
#: singleton), so one counter per process.
REQUESTS: Counter[str] = Counter()
ERRORS: Counter[int] = Counter()


def fuse_errors_by_errno() -> dict[str, int]:
    """Errors answered so far, by errno name (ENOENT, EIO, ...)."""
    return {errno.errorcode.get(err, str(err)): n for err, n in ERRORS.items()}


def fuse_errors(fn: Callable[P, Coroutine[Any, Any, R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """Map every exception of a handler to FUSEError (see cloudfs.errors)."""

    name = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        REQUESTS[name] += 1
        try:
            return await fn(*args, **kwargs)
        except pyfuse3.FUSEError as exc:
            ERRORS[exc.errno] += 1
            raise
        except Exception as exc:
            err, level = errno_of(exc)
            ERRORS[err] += 1
            if level < 0:
                log.exception("%s: unexpected error, answering EIO", fn.__name__)
            else:
                log.log(level, "%s: %s (%s)", fn.__name__, exc, errno.errorcode.get(err, err))
            raise pyfuse3.FUSEError(err) from None

    return wrapper


def check_name(name: bytes) -> bytes:
    if len(name) > NAME_MAX:
        raise NameTooLong(f"name of {len(name)} bytes (the limit is {NAME_MAX})")
    return name


class Operations(pyfuse3.Operations):
    """cloudfs as pyfuse3 sees it."""

    supports_dot_lookup = False
    enable_writeback_cache = False  # the writer streams: it needs writes in order
    enable_acl = False

    def __init__(self, ns: Namespace, files: Files, nursery: trio.Nursery | None = None) -> None:
        super().__init__()
        self.ns = ns
        self.files = files
        self.guard = ReadOnlyGuard(ns)  # read-only snapshots: EROFS (cloudfs/readonly.py)
        self.lookups: Counter[int] = Counter()
        self._dir_handles: dict[int, Listing] = {}
        self._next_dh = 1
        self._shown: dict[int, int] = {}  # inode -> version of the attributes last answered
        self._nursery = nursery  # where listings fetch ahead (none: they do not)
        files.holds.droppable = self._droppable
        self._known = KnownDir(ns)  # the directory the last create or unlink changed

    # -- helpers -----------------------------------------------------------------------------

    def _entry(self, attr: Attr) -> pyfuse3.EntryAttributes:
        e = pyfuse3.EntryAttributes()
        size, mtime_ns = self._as_shown(attr.inode, attr.mode, attr.size, attr.mtime_ns)
        fill(e, attr.inode, attr.mode, attr.nlink, attr.uid, attr.gid, attr.rdev, size,
              attr.atime_ns, mtime_ns, attr.ctime_ns)
        if self.ns.shared:
            self._shown[attr.inode] = attr.version
        return e

    def _as_shown(self, inode: int, mode: int, size: int, mtime_ns: int) -> tuple[int, int]:
        """The size and mtime to show: a file being written shows what its writer sees, one
        with a version waiting for its upload (write-back) that version's."""
        if stat.S_ISREG(mode) and self.files.writing:
            return self.files.shown(inode, size, mtime_ns)
        return size, mtime_ns

    def _looked_up(self, attr: Attr) -> pyfuse3.EntryAttributes:
        self.lookups[attr.inode] += 1
        return self._entry(attr)

    def _droppable(self, inode: int) -> bool:
        """Whether nothing of the kernel or this mount refers to `inode` any more."""
        return self.lookups.get(inode, 0) <= 0 and not self.files.open_count(inode)

    def _maybe_drop(self, inode: int) -> None:
        if self.lookups[inode] <= 0 and not self.files.open_count(inode):
            self.lookups.pop(inode, None)
            self.files.holds.drop(inode)  # batched on PostgreSQL (cloudfs/holds.py)

    # -- namespace ---------------------------------------------------------------------------

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        if name == b".":
            return self._looked_up(self.ns.getattr(parent_inode))
        return self._looked_up(self.ns.lookup(parent_inode, check_name(name)))

    @fuse_errors
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        return self._entry(self._known.get(inode) or self.ns.getattr(inode))

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.guard.inodes(inode)
        if fields.update_size:
            await self.files.truncate(inode, attr.st_size)
        kw: dict[str, int] = {}
        if fields.update_mode:
            kw["mode"] = stat.S_IMODE(attr.st_mode)
        if fields.update_uid:
            kw["uid"] = attr.st_uid
        if fields.update_gid:
            kw["gid"] = attr.st_gid
        if fields.update_atime:
            kw["atime_ns"] = attr.st_atime_ns
        if fields.update_mtime:
            kw["mtime_ns"] = attr.st_mtime_ns
            await self.files.set_mtime(inode, attr.st_mtime_ns)
        if getattr(fields, "update_ctime", False):
            kw["ctime_ns"] = attr.st_ctime_ns
        if not kw:
            return self._entry(self.ns.getattr(inode))
        with self.ns.lazily():  # durable at the next barrier (cloudfs/durability.py)
            return self._entry(self.ns.setattr(inode, **kw))

    @fuse_errors
    async def readlink(self, inode: int, ctx: pyfuse3.RequestContext) -> bytes:
        return self.ns.readlink(inode)

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.guard.inodes(parent_inode)
        with self.ns.lazily():
            attr = self.ns.mkdir(parent_inode, check_name(name), stat.S_IMODE(mode), ctx.uid,
                                 ctx.gid)
        self._known.note()
        return self._looked_up(attr)

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.guard.entry(parent_inode, name)
        with self.ns.lazily():
            self.ns.rmdir(parent_inode, check_name(name))

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.guard.inodes(parent_inode)
        with self.ns.lazily():
            attr = self.ns.unlink(parent_inode, check_name(name))
            self._known.note()
            if attr.nlink == 0:
                self._maybe_drop(attr.inode)

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.guard.inodes(parent_inode)
        with self.ns.lazily():
            return self._looked_up(self.ns.symlink(parent_inode, check_name(name), target,
                                                   ctx.uid, ctx.gid))

    @fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.guard.inodes(parent_inode)
        with self.ns.lazily():
            return self._looked_up(self.ns.mknod(parent_inode, check_name(name), mode, rdev,
                                                 ctx.uid, ctx.gid))

    @fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        self.guard.inodes(inode, new_parent_inode)
        with self.ns.lazily():
            return self._looked_up(self.ns.link(inode, new_parent_inode,
                                                check_name(new_name)))

    @fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        self.guard.entry(parent_inode_old, name_old)
        self.guard.entry(parent_inode_new, name_new)
        with self.ns.lazily():
            replaced = self.ns.rename(parent_inode_old, check_name(name_old),
                                      parent_inode_new, check_name(name_new),
                                      noreplace=bool(flags & RENAME_NOREPLACE),
                                      exchange=bool(flags & RENAME_EXCHANGE))
            if replaced is not None:
                self._maybe_drop(replaced)

    @fuse_errors
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        if not stat.S_ISDIR(self.ns.getattr(inode).mode):
            raise NotADirectoryError(errno.ENOTDIR, "not a directory")
        dh = self._next_dh
        self._next_dh += 1
        self._dir_handles[dh] = Listing(self.ns, inode, prepared)
        return dh

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        """READDIRPLUS: entries with their attributes (the kernel links each one: a lookup),
        from the handle's listing (cloudfs/listing.py): the entries it keeps, prepared ahead,
        until the reply is full or none is kept (one query when none is). The copies into the
        reply run in C (map over pyfuse3.readdir_reply), no Python code per entry."""
        listing = self._dir_handles[fh]
        got = listing.take(start_id)
        if not got.offsets:  # the end of the directory
            listing.last_sent = 0
            return
        items = shown_items(got, self.files) if self.files.writing else got.items
        # readdir_reply answers False for the first entry without room: that one is not in
        # the reply, not linked (not a lookup), and the next request starts from it.
        sent = sum(takewhile(bool, map(pyfuse3.readdir_reply, repeat(token), got.names, items,
                                       got.offsets)))
        self.lookups.update(got.inodes[:sent] if sent < len(got.inodes) else got.inodes)
        listing.consumed(sent)
        listing.last_sent = sent
        if sent < len(got.offsets):
            listing.room = sent
        if self._nursery is not None and listing.wants_prefetch():
            # The next request's entries, prepared while the kernel digests this reply.
            self._nursery.start_soon(self._prefetch, listing)

    @staticmethod
    async def _prefetch(listing: Listing) -> None:
        try:
            listing.prefetch()
        except Exception as exc:  # the next request fetches (and answers any error) itself
            log.debug("readdir of inode %d: no prefetch (%s)", listing.inode, exc)

    @fuse_errors
    async def releasedir(self, fh: int) -> None:
        self._dir_handles.pop(fh, None)

    async def forget(self, inode_list: Sequence[tuple[int, int]]) -> None:
        for inode, nlookup in inode_list:
            self.lookups[inode] -= nlookup
            if self.lookups[inode] <= 0:
                self._shown.pop(inode, None)
            try:
                self._maybe_drop(inode)
            except Exception:  # forget cannot answer an error; never let it escape
                log.exception("forget(%d) failed", inode)

    @fuse_errors
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        inodes, used = self.ns.statfs()
        s = pyfuse3.StatvfsData()
        s.f_bsize = BLKSIZE
        s.f_frsize = 4096
        s.f_blocks = (used + VIRTUAL_FREE) // s.f_frsize
        s.f_bfree = s.f_bavail = VIRTUAL_FREE // s.f_frsize
        s.f_files = inodes + (1 << 32)
        s.f_ffree = s.f_favail = 1 << 32
        s.f_namemax = NAME_MAX
        return s

    # -- extended attributes -----------------------------------------------------------------

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> bytes:
        return self.ns.getxattr(inode, name)

    @fuse_errors
    async def setxattr(self, inode: int, name: bytes, value: bytes,
                       ctx: pyfuse3.RequestContext) -> None:
        self.guard.inodes(inode)
        with self.ns.lazily():
            self.ns.setxattr(inode, name, value)

    @fuse_errors
    async def listxattr(self, inode: int, ctx: pyfuse3.RequestContext) -> Sequence[bytes]:
        return self.ns.listxattr(inode)

    @fuse_errors
    async def removexattr(self, inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        self.guard.inodes(inode)
        with self.ns.lazily():
            self.ns.removexattr(inode, name)

    # -- file content ------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        self.guard.open(inode, flags)
        fh = self.files.open(inode, flags)
        self._revalidate(inode, self.files.handles.get(fh).open_version)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False)

    def _revalidate(self, inode: int, version: int) -> None:
        """Close-to-open across mounts: an open that finds a version other than the one whose
        attributes the kernel may still cache (another mount committed it, and its
        notification may not have arrived) drops them, so the kernel reads the new size
        before reading (keep_cache=False drops the pages)."""
        if self.ns.shared and self._shown.get(inode, version) != version:
            self._shown[inode] = version
            with contextlib.suppress(OSError):
                pyfuse3.invalidate_inode(inode, attr_only=True)

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext
                     ) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        name = check_name(name)
        self.guard.inodes(parent_inode)
        self.files.check_may_write()
        held = self.files.mount_id is not None  # the hold, in the create's transaction
        try:  # the kernel looked the name up and found nothing: create first
            with self.ns.lazily():  # durable with the content's commit at close, at the latest
                attr = self.ns.create(parent_inode, name, stat.S_IMODE(mode), ctx.uid,
                                      ctx.gid, hold_for=self.files.mount_id)
            self._known.note()
        except Exists:  # raced with another creator: open it (a file write never answers
            if flags & os.O_EXCL:  # EEXIST)
                raise FileExistsError(errno.EEXIST, "exists") from None
            attr = self.ns.lookup(parent_inode, name)
            if stat.S_ISDIR(attr.mode):
                raise IsADirectoryError(errno.EISDIR, "is a directory") from None
            held = False
        fh = self.files.open(attr.inode, flags, attr, held=held)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False), self._looked_up(attr)

    # pyfuse3 replies from any buffer; its stub says bytes, a view of a block spares a copy.
    @fuse_errors
    async def read(self, fh: int, off: int, size: int  # type: ignore[override]
                   ) -> bytes | memoryview:
        with READ_SECONDS.time():
            return await self.files.read(fh, off, size)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.files.write(fh, off, buf)

    @fuse_errors
    async def flush(self, fh: int) -> None:
        await self.files.flush(fh)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.files.fsync(fh)

    @fuse_errors
    async def release(self, fh: int) -> None:
        inode = self.files.inode_of(fh)
        await self.files.release(fh)
        if inode is not None:
            self._maybe_drop(inode)

    @fuse_errors
    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        # Every namespace change before it is durable when it returns; in write-back mode
        # an fsync of a directory also waits until every file closed before it is in Swift
        # (syncfs(2) and `sync -f` are not forwarded by the kernel to a FUSE filesystem: this
        # is the POSIX way to ask, for any user of the mount).
        await self.files.sync()
