"""`cloudfs cp --reflink SRC... DST` and `cloudfs snapshot SRC DST [--read-only]`: instant
copies inside one mounted cloudfs, made by the mount's daemon (cloudfs/clones.py) through its
control channel: new inodes sharing the stored content, no byte read or written, no Swift
request.

The paths are resolved here, through the kernel, to paths relative to the mount's root: the
sources' directories and the destination (an existing destination is followed if it is a
symlink to a directory, like cp) are resolved, a source's last component is not (a symlink
is copied as a symlink, `cp -a`). Refused with one line and exit status 2: a path that is not
inside a mounted cloudfs, sources and destination on two filesystems, a directory copied into
itself, a destination that exists (a copy never replaces: cp would overwrite), a daemon that
does not answer.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import sys
import threading
import time
from typing import Any

from cloudfs.errors import UsageError
from wiring import control

log = logging.getLogger(__name__)

#: Seconds a copy may take before the command gives up waiting (the daemon finishes it).
TIMEOUT = 3600.0
#: A TTY shows progress once a copy has taken this long.
PROGRESS_AFTER = 0.5


def _source_path(path: str) -> str:
    """Absolute path of a source: its directory resolved, its last component kept."""
    norm = os.path.abspath(path)
    head, tail = os.path.split(norm)
    if tail in ("", ".", "..") or path.endswith("/"):
        return os.path.realpath(norm)
    return os.path.join(os.path.realpath(head), tail)


def _dest_path(path: str) -> str:
    norm = os.path.abspath(path)
    if os.path.isdir(norm):
        return os.path.realpath(norm)
    head, tail = os.path.split(norm)
    return os.path.join(os.path.realpath(head), tail)


def _mount(path: str, what: str) -> tuple[str, str]:
    found = control.mount_of(path)
    if found is None:
        raise UsageError(f"{what} {path} is not inside a mounted cloudfs")
    return found


def _relative(path: str, mountpoint: str) -> str:
    rel = os.path.relpath(path, mountpoint)
    return "" if rel == "." else rel


def plan(sources: list[str], dest: str) -> tuple[str, list[str], str]:
    """(mount point, sources and destination relative to its root); UsageError."""
    dst = _dest_path(dest)
    if not os.path.lexists(dst) and not os.path.isdir(os.path.dirname(dst)):
        raise UsageError(f"destination directory {os.path.dirname(dst)} does not exist")
    mountpoint, device = _mount(dst, "destination")
    rel = []
    for source in sources:
        src = _source_path(source)
        if not os.path.lexists(src):
            raise UsageError(f"source {source}: {os.strerror(errno.ENOENT)}")
        src_mount, src_device = _mount(src, "source")
        if src_device != device:
            raise UsageError(f"source {source} and destination {dest} are on two different "
                             f"filesystems ({src_mount}, {mountpoint}): "
                             f"{os.strerror(errno.EXDEV)}")
        if dst == src or dst.startswith(src.rstrip("/") + "/"):
            raise UsageError(f"cannot copy {source} into itself ({dest})")
        rel.append(_relative(src, mountpoint))
    return mountpoint, rel, _relative(dst, mountpoint)


class _Progress:
    """On a TTY: the elapsed time of a copy that takes a while, on one line of stderr."""

    def __init__(self, label: str, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self.done = threading.Event()
        self.shown = False
        self.thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> _Progress:
        if self.enabled:
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        if self.enabled:
            self.thread.join()
            if self.shown:
                sys.stderr.write("\r\033[K")
                sys.stderr.flush()

    def _run(self) -> None:
        start = time.monotonic()
        while not self.done.wait(PROGRESS_AFTER if not self.shown else 0.2):
            self.shown = True
            sys.stderr.write(f"\r{self.label}: {time.monotonic() - start:.1f} s")
            sys.stderr.flush()


def run_clone(args: argparse.Namespace, sources: list[str], dest: str, *, snapshot: bool,
              read_only: bool) -> int:
    mountpoint, rel_sources, rel_dest = plan(sources, dest)
    started = time.monotonic()
    show = sys.stderr.isatty() and not args.json
    label = f"cloning {len(sources)} source(s) to {dest}"
    try:
        with _Progress(label, show):
            result: dict[str, Any] = control.request(
                mountpoint, "clone", timeout=TIMEOUT, sources=rel_sources, dest=rel_dest,
                snapshot=snapshot, read_only=read_only)
    except control.ControlError as exc:
        raise UsageError(f"{exc} ({errno.errorcode.get(exc.errno, exc.errno)})") from None
    result["seconds"] = round(time.monotonic() - started, 6)
    if args.json:
        print(json.dumps(result, indent=2, sort_keys=True))
    elif args.verbose or show:
        for c in result["copies"]:
            print(f"{c['source'] or '/'} -> {c['dest']}: {c['inodes']} inodes, {c['files']} "
                  f"files, {c['bytes']} bytes shared" + (", read-only" if c["read_only"]
                                                         else ""))
    return 0


def reflink_argv(argv: list[str]) -> list[str]:
    """cp spells the option ``--reflink[=WHEN]``; argparse cannot take an optional value
    only after '=': ``--reflink=always`` (and ``=auto``) become the flag here, any other WHEN
    stays and is refused by cmd_cp."""
    if not argv or argv[0] != "cp":
        return argv
    return [a if a not in ("--reflink=always", "--reflink=auto") else "--reflink" for a in argv]


def cmd_cp(args: argparse.Namespace) -> int:
    if args.reflink_when is not None:
        raise UsageError(f"--reflink={args.reflink_when}: cloudfs cp only makes reflink "
                         "copies (use cp for a copy of the bytes)")
    if len(args.paths) < 2:
        raise UsageError("give SRC... DST")
    return run_clone(args, args.paths[:-1], args.paths[-1], snapshot=False, read_only=False)


def cmd_snapshot(args: argparse.Namespace) -> int:
    return run_clone(args, [args.source], args.dest, snapshot=True, read_only=args.read_only)


def cmd_release(args: argparse.Namespace) -> int:
    path = _dest_path(args.path)
    mountpoint, _ = _mount(path, "snapshot")
    try:
        control.request(mountpoint, "release", path=_relative(path, mountpoint))
    except control.ControlError as exc:
        raise UsageError(f"{exc} ({errno.errorcode.get(exc.errno, exc.errno)})") from None
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("cp", help="copy files or trees instantly, sharing their stored content",
                       description="Copy SRC to DST (or SRC... into the directory DST) inside "
                       "one mounted cloudfs, as `cp -a` would (modes, owners, times, xattrs, "
                       "symlinks, hard links inside a tree, special files), without reading or "
                       "writing a byte: the copy shares the stored content, and later writes "
                       "to either side leave the other unchanged. Each source is copied in one "
                       "namespace transaction (one committed state). Never replaces an existing "
                       "name. Asks the mount's daemon (its owner and root only).")
    p.add_argument("--reflink", action="store_true",
                   help="--reflink[=always|auto], as cp spells it: every copy is one")
    p.add_argument("--reflink=never", dest="reflink_when", action="store_const", const="never",
                   help=argparse.SUPPRESS)
    p.add_argument("-a", "--archive", action="store_true",
                   help="accepted for cp's sake: every copy keeps what cp -a keeps")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("-v", "--verbose", action="store_true", help="print one line per source")
    p.add_argument("paths", nargs="+", metavar="SRC... DST")
    p.set_defaults(func=cmd_cp)

    p = sub.add_parser("snapshot", help="snapshot a directory tree (optionally read-only)",
                       description="Copy the directory SRC to DST (which must not exist) as "
                       "`cloudfs cp` does; with --read-only, every change inside DST is then "
                       "refused with EROFS.")
    p.add_argument("source", metavar="SRC")
    p.add_argument("dest", metavar="DST")
    p.add_argument("--read-only", action="store_true",
                   help="refuse every change inside the snapshot (EROFS)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    p.add_argument("-v", "--verbose", action="store_true", help="print a summary line")
    p.set_defaults(func=cmd_snapshot)

    p = sub.add_parser("release-snapshot", help="make a read-only snapshot writable again",
                       description="Make the read-only snapshot PATH (its root, as given to "
                       "`cloudfs snapshot --read-only`) writable again, e.g. to remove it with "
                       "rm -rf. Asks the mount's daemon (its owner and root only).")
    p.add_argument("path", metavar="PATH")
    p.set_defaults(func=cmd_release)
