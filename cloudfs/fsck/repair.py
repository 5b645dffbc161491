"""`cloudfs fsck --repair`: what it changes. Only the namespace, never Swift, never a byte of
data, and only on an unmounted filesystem (command.py makes sure):

- **A file whose content is missing or damaged is moved to /lost+found**, its content map
  untouched. Each of its names becomes `/lost+found/<its path with '%' written %25 and '/'
  written %2F>` (`~<inode>` added when that name is taken or too long), and the xattr
  `user.cloudfs.fsck` records where it was, when, and what is wrong with which object. The
  file keeps referencing its content, so the garbage collector keeps every object and
  segment of it that still exists; reading it fails with EIO (as it did where it was) until
  the object is back (restored from a backup, or a Swift replica that returns), and then it
  reads again: `mv` it home. Deleting it from /lost+found is the operator's decision.
  /lost+found is created if missing (mode 0700, owned by the root directory's owner).
- **A stale upload lease is ended**: its writer is gone; `ccd cleanup` then deletes the
  upload's temporary segments once they are older than the grace, as for any interrupted write.

Not repaired (reported; exit status 4): namespace inconsistencies (sqlfsn's check), segments
the registry does not list (unprotected), damaged contents that only deleted-but-open files
use (the next mount purges those files), and whatever could not be checked.
"""

from __future__ import annotations

import datetime
import logging
import os
import stat
import time

from cloudfs.fsck.checks import LOST_FOUND, Fsck
from cloudfs.fsck.findings import Problem, Result, printable
from sqlfsn import ROOT_INODE, Namespace, errors

log = logging.getLogger(__name__)

#: The xattr saying why fsck moved a file, and from where.
XATTR = b"user.cloudfs.fsck"
NAME_MAX = 255


class CannotRepair(Exception):
    """This problem cannot be repaired (the message says why)."""


def lost_found_name(path: bytes, inode: int, *, taken: bool = False) -> bytes:
    """The name of a file moved from `path`: the path without its first '/', '%' written %25
    and '/' written %2F (so it reads back), `~<inode>` added when `taken` or too long."""
    name = path.lstrip(b"/").replace(b"%", b"%25").replace(b"/", b"%2F")
    if not taken and len(name) <= NAME_MAX:
        return name
    suffix = b"~%d" % inode
    return name[:NAME_MAX - len(suffix)] + suffix


class Repairer:
    """Repairs the problems of one Result (see the module docstring)."""

    def __init__(self, ns: Namespace, fsck: Fsck) -> None:
        self.ns = ns
        self.fsck = fsck
        self._lost_found: int | None = None
        self._when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

    def repair(self, result: Result) -> None:
        for problem in result.problems:
            try:
                if problem.kind in ("missing", "damaged"):
                    self.move_to_lost_found(problem)
                elif problem.kind == "stale_lease":
                    self.end_lease(problem)
            except CannotRepair as exc:
                problem.detail += f" (not repaired: {exc})"
        known = {p.detail for p in result.problems if p.kind == "namespace"}
        for line in self.ns.check():  # a repair must not make the namespace inconsistent
            if line not in known:
                result.add(Problem("namespace", f"after the repairs: {line}"))

    def lost_found(self) -> int:
        """The inode of /lost+found, created if missing."""
        if self._lost_found is None:
            try:
                attr = self.ns.lookup(ROOT_INODE, LOST_FOUND)
            except errors.NotFound:
                root = self.ns.getattr(ROOT_INODE)
                attr = self.ns.mkdir(ROOT_INODE, LOST_FOUND, 0o700, root.uid, root.gid)
                log.info("created /lost+found")
            if not stat.S_ISDIR(attr.mode):
                raise CannotRepair("/lost+found exists and is not a directory")
            self._lost_found = attr.inode
        return self._lost_found

    def move_to_lost_found(self, problem: Problem) -> None:
        """Every name of every file the problem harms, outside /lost+found, moved into it (a
        file harmed by several problems moves with the first)."""
        homes: list[str] = []
        for f in problem.files:
            names = self.ns.names_of(f.inode)
            if not names:
                continue  # deleted, open by a process of a mount that is gone: purged at mount
            lost_found = self.lost_found()
            paths = self.fsck.paths(f.inode)
            moving = [(parent, name, path) for (parent, name), path
                      in zip(names, paths, strict=True) if parent != lost_found]
            for parent, name, path in moving:
                self._move(parent, name, lost_found, os.fsencode(path), f.inode)
            if moving:
                note = (f"cloudfs fsck {self._when}: moved from "
                        f"{', '.join(p for _, _, p in moving)}: {problem.detail}")
                self.ns.setxattr(f.inode, XATTR, note.encode(errors="surrogateescape"))
                log.info("%s moved to /lost+found: %s",
                         printable(", ".join(p for _, _, p in moving)), printable(problem.detail))
            homes += self.fsck.paths(f.inode)
        if homes:
            problem.repaired = "in /lost+found: " + ", ".join(homes)

    def _move(self, parent: int, name: bytes, lost_found: int, path: bytes,
              inode: int) -> bytes:
        for taken in (False, True):
            new = lost_found_name(path, inode, taken=taken)
            try:
                self.ns.rename(parent, name, lost_found, new, noreplace=True)
                return new
            except errors.Exists:
                continue
        raise CannotRepair(f"/lost+found already holds {os.fsdecode(new)}")

    def end_lease(self, problem: Problem) -> None:
        lease = problem.lease
        assert lease is not None
        current = {u.id: u for u in self.ns.uploads()}.get(lease)
        if current is not None and (time.time_ns() - current.heartbeat_ns) / 1e9 \
                <= self.fsck.settings.lease_timeout:
            raise CannotRepair("its heartbeat came back")
        self.ns.upload_end(lease)
        problem.repaired = ("lease ended: `ccd cleanup` deletes its temporary segments once "
                            "they are older than the grace")

