"""Mount lifecycle: wiring, readiness, signals, clean teardown.

`run()` is the whole life of a mount process: open the namespace and Swift, `pyfuse3.init`,
serve until `fusermount3 -u`, SIGTERM or SIGINT, then commit what is pending (or say loudly
that it failed), unmount and close. Teardown runs in reverse order of setup (AsyncExitStack).
Without --foreground the command forks: the parent returns once the child reports the mount
ready (or exits non-zero with the child's reason).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from cloudfs.errors import UsageError
from cloudfs.files import Files
from cloudfs.ops import Operations
from cloudfs.reader import BlockBudget
from cloudfs.rwcache import CacheBudget
from seqwrite import Layout
from wiring import sdnotify
from wiring.config import Config
from wiring.errors import SetupError
from wiring.filesystem import (
    cache_dir,
    open_filesystem,
    open_namespace,
    private_dir,
    spool_dir,
    stale_deletion_ns,
    writer_settings,
)

log = logging.getLogger(__name__)

READ_AHEAD_KB = 1024  # kernel read-ahead on the mount: 1 MiB read requests instead of 128 KiB
READ_BUDGET_BLOCKS = 12  # process-wide read buffers (8 MiB each): at most 96 MiB


@dataclass(frozen=True, slots=True)
class MountOptions:
    mountpoint: str
    foreground: bool = False
    allow_other: bool = False
    fuse_options: tuple[str, ...] = ()


def fuse_options(opts: MountOptions, layout: Layout) -> set[str]:
    options = set(pyfuse3.default_options)  # default_permissions: the kernel checks modes
    options |= {f"fsname=cloudfs:{layout.base}", "subtype=cloudfs", "auto_unmount", "noatime"}
    if opts.allow_other:
        options.add("allow_other")
    for extra in opts.fuse_options:
        options |= {o.strip() for o in extra.split(",") if o.strip()}
    return options


def raise_read_ahead(mountpoint: str) -> None:
    """Best effort: bigger kernel read requests. Reads /proc (never the mount itself)."""
    target = os.path.abspath(mountpoint)  # never realpath: it would stat the mount itself
    try:
        with open("/proc/self/mountinfo") as f:
            for line in f:
                parts = line.split()
                if parts[4] == target:
                    bdi = Path(f"/sys/class/bdi/{parts[2]}/read_ahead_kb")
                    bdi.write_text(str(READ_AHEAD_KB))
    except OSError as exc:
        log.debug("could not raise read-ahead: %s", exc)


async def serve(cfg: Config, opts: MountOptions, on_ready: Callable[[], None]) -> None:
    """Mount, serve until unmounted or signalled, tear down."""
    async with contextlib.AsyncExitStack() as stack:
        fs = await stack.enter_async_context(open_filesystem(cfg))
        ns, store, layout = fs.ns, fs.store, fs.layout
        purged = ns.purge_orphans()
        if purged:
            log.info("removed %d files that were unlinked while open at the last unmount", purged)
        nursery = await stack.enter_async_context(trio.open_nursery())
        files = Files(ns, store, layout, nursery,
                      writers=writer_settings(cfg, spool_dir(cfg)),
                      read_budget=BlockBudget(READ_BUDGET_BLOCKS),
                      stale_deletion_ns=stale_deletion_ns(cfg),
                      cache_budget=CacheBudget(cfg.cache_size))
        ops = Operations(ns, files)
        pyfuse3.init(ops, opts.mountpoint, fuse_options(opts, layout))
        stack.callback(pyfuse3.close, unmount=True)
        nursery.start_soon(files.leases.keep_alive)
        nursery.start_soon(_terminate_on_signals)
        nursery.start_soon(_tune_read_ahead, opts.mountpoint)
        log.info("mounted %s (Swift container %s, database %s)", opts.mountpoint,
                 layout.base, cfg.database)
        on_ready()
        try:
            await pyfuse3.main()
        finally:
            log.info("unmounting %s", opts.mountpoint)
            with trio.CancelScope(shield=True):
                await files.close_all()  # pending uploads finish, or fail loudly
            nursery.cancel_scope.cancel()


async def _tune_read_ahead(mountpoint: str) -> None:
    """After the kernel's FUSE INIT (which resets read-ahead): a stat from a worker thread
    returns once INIT is answered and the main loop serves requests."""
    try:
        await trio.to_thread.run_sync(os.stat, mountpoint)
    except OSError:
        return
    raise_read_ahead(mountpoint)


async def _terminate_on_signals() -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("%s: unmounting", signal.Signals(signum).name)
            sdnotify.notify("STOPPING=1")
            pyfuse3.terminate()


async def _main(cfg: Config, opts: MountOptions, report: int | None) -> None:
    def on_ready() -> None:
        sdnotify.notify("READY=1")
        if report is not None:
            os.write(report, b"ok\n")
            os.close(report)

    await serve(cfg, opts, on_ready)


def run(cfg: Config, opts: MountOptions) -> int:
    """The `cloudfs mount` command."""
    mnt = Path(opts.mountpoint)
    try:
        mnt.stat()
    except OSError as exc:
        if exc.errno == errno.ENOTCONN:
            raise UsageError(f"{mnt} is a dead mount (its daemon died): "
                             f"run `fusermount3 -u -z {mnt}` first") from None
        raise UsageError(f"mount point {mnt}: {exc.strerror}") from None
    if not mnt.is_dir():
        raise UsageError(f"mount point {mnt} is not a directory")
    if os.path.ismount(mnt):
        raise UsageError(f"{mnt} is already a mount point")
    open_namespace(cfg).close()  # fail fast, in the foreground, on a bad database
    if opts.foreground:
        trio.run(_main, cfg, opts, None)
        return 0
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid:  # parent: wait for the child's verdict
        os.close(wfd)
        with os.fdopen(rfd) as r:
            verdict = r.read().strip()
        if verdict == "ok":
            print(f"cloudfs mounted at {mnt} (pid {pid}); unmount with: fusermount3 -u {mnt}")
            return 0
        print(f"cloudfs mount: {verdict or 'the mount process died'}", file=sys.stderr)
        return 1
    os.close(rfd)
    os.setsid()
    _detach_stdio(cfg)
    try:
        trio.run(_main, cfg, opts, wfd)
    except SetupError as exc:
        _report(wfd, str(exc))
        os._exit(1)
    except BaseException as exc:
        log.exception("mount failed")
        _report(wfd, f"{type(exc).__name__}: {exc}")
        os._exit(1)
    os._exit(0)


def _report(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, message.encode() + b"\n")


def _detach_stdio(cfg: Config) -> None:
    """The background daemon logs to <cache_dir>/mount.log."""
    logdir = private_dir(cache_dir(cfg))
    fd = os.open(logdir / "mount.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
