"""The mount's side of `cloudfs cp --reflink` and `cloudfs snapshot`: the control channel's
"clone" request.

The command line sends paths relative to the mount's root (already resolved through the
kernel: no symlink inside them except a source's own last component, copied as a symlink,
like `cp -a`); the daemon resolves them in the namespace, runs each source's copy as ONE
namespace transaction (sqlfsn/clone.py: new inodes sharing the stored content, no Swift
request), then tells the kernel that the destination's directory changed (its cached entry
"does not exist" and its attributes). The copy runs on the trio thread, like every namespace
call of the mount: the mount answers no other request while it runs (0.1 s for a file of
2,560 pieces, 3 s for 10,000 entries on this loaded machine; docs/BENCHMARKS.md).

    request: {"op": "clone", "sources": ["a/b", ...], "dest": "c/d",
              "snapshot": false, "read_only": false}

`dest` names the copy, or (cp) an existing directory to copy the sources into under their own
names; with several sources it must be an existing directory. A snapshot's `dest` must not
exist. A name that exists is refused (EEXIST), never replaced. Only the mount's owner and root
may ask (the copy keeps every owner and mode, as `cp -a` run by root).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from typing import Any

import pyfuse3

from cloudfs.errors import errno_of
from cloudfs.readonly import ReadOnlyGuard
from sqlfsn import ROOT_INODE, Attr, CloneResult, Namespace
from sqlfsn.errors import NamespaceError, NotFound
from wiring.control import ControlError, Operation, Peer

log = logging.getLogger(__name__)


class CloneService:
    """Answers "clone" requests for one mount."""

    def __init__(self, ns: Namespace, guard: ReadOnlyGuard) -> None:
        self.ns = ns
        self.guard = guard

    def operations(self) -> dict[str, Operation]:
        return {"clone": Operation(self.clone), "release": Operation(self.release)}

    async def release(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """{"op": "release", "path": "a/snap"}: make a read-only snapshot writable again."""
        path = request.get("path")
        if not isinstance(path, str):
            raise ControlError(errno.EINVAL, "release: path")
        try:
            inode = self._resolve(os.fsencode(path)).inode
            if not self.ns.release_read_only(inode):
                raise ControlError(errno.EINVAL, f"{path or '/'} is not the root of a "
                                   "read-only snapshot")
        except NamespaceError as exc:
            raise ControlError(errno_of(exc)[0], str(exc)) from None
        self.guard.remove(inode)
        log.info("read-only snapshot /%s made writable", path)
        return {"path": path, "inode": inode}

    async def clone(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        sources = request.get("sources")
        dest = request.get("dest")
        if (not isinstance(sources, list) or not sources or not isinstance(dest, str)
                or not all(isinstance(s, str) for s in sources)):
            raise ControlError(errno.EINVAL, "clone: sources (a list of paths) and dest")
        snapshot = bool(request.get("snapshot"))
        read_only = bool(request.get("read_only"))
        if snapshot and len(sources) != 1:
            raise ControlError(errno.EINVAL, "a snapshot has one source directory")
        try:
            made = self._clone_all([os.fsencode(s) for s in sources], os.fsencode(dest),
                                   snapshot, read_only)
        except NamespaceError as exc:
            err, _ = errno_of(exc)
            log.info("clone of %s to %s refused: %s", sources, dest, exc)
            raise ControlError(err, str(exc)) from None
        return {
            "copies": [{"source": os.fsdecode(src), "dest": os.fsdecode(path),
                        "inode": r.inode, "inodes": r.inodes, "names": r.names,
                        "files": r.files, "bytes": r.bytes, "pieces": r.pieces,
                        "xattrs": r.xattrs, "read_only": r.read_only,
                        "seconds": round(seconds, 6)}
                       for src, path, r, seconds in made],
        }

    def _clone_all(self, sources: list[bytes], dest: bytes, snapshot: bool,
                   read_only: bool) -> list[tuple[bytes, bytes, CloneResult, float]]:
        target = self._resolve_or_none(dest)
        into = target is not None and stat.S_ISDIR(target.mode) and not snapshot
        if len(sources) > 1 and not into:
            raise ControlError(errno.ENOTDIR, f"copying several sources: {os.fsdecode(dest)} "
                               "is not an existing directory")
        if target is not None and not into:
            raise ControlError(errno.EEXIST, f"{os.fsdecode(dest)} exists (a copy never "
                               "replaces anything)")
        made = []
        for src in sources:
            node = self._resolve(src)
            if snapshot and not stat.S_ISDIR(node.mode):
                raise ControlError(errno.ENOTDIR, f"a snapshot is of a directory, "
                                   f"{os.fsdecode(src)} is not one")
            if into:
                assert target is not None
                parent, name = target.inode, _basename(src)
                path = dest.rstrip(b"/") + b"/" + name if dest else name
            else:
                head, _, name = dest.rpartition(b"/")
                parent, path = self._resolve(head).inode, dest
            self.guard.inodes(parent)
            started = time.perf_counter()
            result = self.ns.clone(node.inode, parent, name, read_only=read_only)
            seconds = time.perf_counter() - started
            if result.read_only:
                self.guard.add(result.inode)
            _forget_entry(parent, name)
            log.info("cloned /%s to /%s: %d inodes, %d files, %d bytes shared",
                     os.fsdecode(src), os.fsdecode(path), result.inodes, result.files,
                     result.bytes)
            made.append((src, path, result, seconds))
        return made

    def _resolve_or_none(self, path: bytes) -> Attr | None:
        try:
            return self._resolve(path)
        except NotFound:
            return None

    def _resolve(self, path: bytes) -> Attr:
        """The inode at ``path`` (relative to the root, no symlink followed)."""
        attr = self.ns.getattr(ROOT_INODE)
        for part in path.split(b"/"):
            if part:
                attr = self.ns.lookup(attr.inode, part)
        return attr


def _basename(path: bytes) -> bytes:
    name = path.rstrip(b"/").rpartition(b"/")[2]
    if not name:
        raise ControlError(errno.EINVAL, "the mount's root has no name to copy it under")
    return name


def _forget_entry(parent: int, name: bytes) -> None:
    """The kernel may cache "name does not exist" in parent, and parent's old attributes."""
    try:
        pyfuse3.invalidate_entry_async(parent, name, ignore_enoent=True)
        pyfuse3.invalidate_inode(parent, attr_only=True)
    except OSError as exc:  # ENOENT: the kernel does not know the directory
        log.debug("invalidating %d/%r: %s", parent, name, exc)
