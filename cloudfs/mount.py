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
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyfuse3
import trio

from cloudfs import fuselog
from cloudfs.clones import CloneService
from cloudfs.errors import UsageError
from cloudfs.files import Files
from cloudfs.ops import Operations
from cloudfs.reader import BlockBudget
from cloudfs.shared import ChangeListener, Registration
from cloudfs.status import MountStatus
from seqwrite import Layout
from sqlfsn import MountInfo, Namespace, mount_holder
from sqlfsn.errors import MountBusy
from wiring import logs, sdnotify
from wiring.config import Config
from wiring.control import ControlServer, mount_device, own_runtime_dir, socket_name
from wiring.errors import SetupError
from wiring.filesystem import (
    cache_dir,
    journal_dir,
    open_filesystem,
    open_namespace,
    private_dir,
    spool_dir,
    stale_deletion_ns,
    writer_settings,
)
from wiring.journal import Journal, JournalBusy
from wiring.metrics import Exporter, Target

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


def raise_read_ahead(device: str) -> None:
    """Best effort: bigger kernel read requests on the mount of `device` ("major:minor")."""
    try:
        Path(f"/sys/class/bdi/{device}/read_ahead_kb").write_text(str(READ_AHEAD_KB))
    except OSError as exc:
        log.debug("could not raise read-ahead: %s", exc)


async def serve(cfg: Config, opts: MountOptions, on_ready: Callable[[], None]) -> None:
    """Mount, serve until unmounted or signalled, tear down."""
    metrics = Target.parse(cfg.metrics)
    fuselog.install()
    async with contextlib.AsyncExitStack() as stack:
        fs = await stack.enter_async_context(open_filesystem(cfg))
        ns, store, layout = fs.ns, fs.store, fs.layout
        stack.callback(_last_sync, ns)  # the lazy commits are durable before the mount ends
        journal = Journal(journal_dir(cfg, ns))  # opened once this mount is registered
        stack.callback(journal.close)  # once the nursery is done with it
        nursery = await stack.enter_async_context(trio.open_nursery())
        files = Files(ns, store, layout, nursery,
                      writers=writer_settings(cfg, spool_dir(cfg)),
                      read_budget=BlockBudget(READ_BUDGET_BLOCKS),
                      stale_deletion_ns=stale_deletion_ns(cfg),
                      on_commit=_forget_cached_attributes, journal=journal,
                      write_back_max=cfg.write_back_max if cfg.write_back else 0)
        registration = register(ns, opts.mountpoint, files)
        stack.callback(registration.close)  # after the unmount (the stack unwinds backwards)
        if ns.shared:
            registration.beat()  # reap the mounts that died, before purging what they held
        # Only once registered: no other mount of SQLite has them open; on PostgreSQL only
        # the orphans no live mount holds.
        purged = ns.purge_orphans()
        if purged:
            log.info("removed %d files that were unlinked while open at the last unmount", purged)
        # The journal is opened whether write-back is on or not: what an earlier write-back
        # mount closed and did not upload is uploaded now, before anything else is served.
        try:
            replay = journal.open()
        except JournalBusy as exc:
            raise SetupError(str(exc)) from None
        nursery.start_soon(registration.keep_alive)
        files.replay(replay)
        ops = Operations(ns, files, nursery)
        pyfuse3.init(ops, opts.mountpoint, fuse_options(opts, layout))
        stack.callback(pyfuse3.close, unmount=True)
        if ns.shared:
            listener = ChangeListener(cfg.database, registration)
            listener.start()
            stack.callback(listener.stop)  # before pyfuse3.close: it calls into the session
        nursery.start_soon(files.leases.keep_alive)
        nursery.start_soon(files.barrier.flush_every)
        nursery.start_soon(files.holds.flush_every)
        patience = Patience()
        nursery.start_soon(_stop_on_signals, files, cfg.stop_timeout, patience)
        status = MountStatus(files, ns, os.path.abspath(opts.mountpoint), cfg.database,
                             time.time())
        control = {**status.operations(), **CloneService(ns, ops.guard).operations()}
        nursery.start_soon(_after_init, opts.mountpoint, ControlServer(control))
        if metrics is not None:
            exporter = Exporter(metrics, status.families)
            exporter.start()
            stack.callback(exporter.update)  # a textfile's last values
            nursery.start_soon(exporter.refresh)
        log.info("mounted %s (Swift container %s, database %s)", opts.mountpoint,
                 layout.base, cfg.database)
        on_ready()
        try:
            await pyfuse3.main()
        finally:
            log.info("unmounting %s", opts.mountpoint)
            # Unmounted or the connection went away: what is still open was not closed by
            # its application, so it is aborted, never committed (session.ON_STOP).
            files.abort_unclosed()
            with patience.scope():
                await files.upload_closed(cfg.stop_timeout)
            nursery.cancel_scope.cancel()


def register(ns: Namespace, mountpoint: str, files: Files) -> Registration:
    """Register this mount with the namespace: refused (one line naming the holder) if
    another process has an SQLite namespace mounted; any number of PostgreSQL mounts."""
    info = MountInfo(socket.gethostname(), os.getpid(), os.path.abspath(mountpoint),
                     time.time_ns())
    try:
        return Registration(ns, info, files)
    except MountBusy as exc:
        raise SetupError(f"the filesystem is already mounted ({exc.detail}); unmount it "
                         "first: one mount per SQLite namespace") from None


def _last_sync(ns: Namespace) -> None:
    try:
        ns.sync()
    except Exception as exc:  # the engine's own log still has every commit (not synced)
        log.warning("the last namespace barrier failed: %s", exc)


def _forget_cached_attributes(inode: int) -> None:
    """After a commit: the kernel's cached attributes (times, size) are stale."""
    with contextlib.suppress(OSError):  # ENOENT: the kernel does not know the inode
        pyfuse3.invalidate_inode(inode, attr_only=True)


class Patience:
    """How long a stopping mount waits (for open writers, for closed files' uploads): until a
    second SIGTERM or SIGINT, which cancels the wait in progress and every later one."""

    def __init__(self) -> None:
        self._current: trio.CancelScope | None = None
        self.over = False

    def scope(self) -> trio.CancelScope:
        self._current = trio.CancelScope()
        if self.over:
            self._current.cancel()
        return self._current

    def end(self) -> None:
        self.over = True
        if self._current is not None:
            self._current.cancel()


async def _stop_on_signals(files: Files, grace: float, patience: Patience) -> None:
    """SIGTERM or SIGINT: stop (see Files and session.ON_STOP): new opens for writing get
    EROFS, open writers get `grace` seconds to close, what is still open is aborted, commits
    in progress complete, closed files still in the write-back journal are uploaded (while
    uploads progress), then the mount ends. A second signal ends the waiting at once (what
    the journal holds is uploaded by the next mount)."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            async for signum in signals:
                name = signal.Signals(signum).name
                if files.stopping:
                    log.info("%s again: not waiting any more", name)
                    patience.end()
                    continue
                log.info("%s: stopping", name)
                sdnotify.notify("STOPPING=1")
                files.stopping = True
                nursery.start_soon(_stop, files, grace, patience)


async def _stop(files: Files, grace: float, patience: Patience) -> None:
    with patience.scope():
        await files.wait_writers_closed(grace)
    files.abort_unclosed()
    await files.wait_commits()
    with patience.scope():
        await files.upload_closed(grace)
    pyfuse3.terminate()


async def _after_init(mountpoint: str, control: ControlServer) -> None:
    """Once the kernel's FUSE INIT is answered (a stat from a worker thread returns once the
    main loop serves requests): raise the read-ahead (INIT resets it), then open the control
    channel, named by the mount's device number."""
    try:
        # A stat has no side effect: abandoned if the mount ends first (a stat stuck on an
        # INIT that will never come must not hold the teardown).
        await trio.to_thread.run_sync(os.stat, mountpoint, abandon_on_cancel=True)
    except OSError:
        return
    device = mount_device(mountpoint)
    if device is None:  # unmounted already (a stop right after the start): nothing to serve
        log.info("%s is not in the mount table: no control channel (cloudfs status)",
                 mountpoint)
        return
    raise_read_ahead(device)
    try:
        path = own_runtime_dir() / socket_name(device)
    except OSError as exc:
        log.warning("no control channel (cloudfs status): %s", exc)
        return
    await control.serve(path)


async def _main(cfg: Config, opts: MountOptions, report: int | None) -> None:
    def on_ready() -> None:
        sdnotify.notify("READY=1")
        if report is not None:
            os.write(report, b"ok\n")
            os.close(report)

    try:
        await serve(cfg, opts, on_ready)
    except BaseExceptionGroup as group:
        # A SetupError raised once the mount's nursery is open (the journal in use) comes
        # wrapped: the user gets its one line, not a traceback.
        setup, rest = group.split(SetupError)
        if setup is None or rest is not None:
            raise
        leaf: BaseException = setup
        while isinstance(leaf, BaseExceptionGroup):
            leaf = leaf.exceptions[0]
        raise leaf from None


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
    ns = open_namespace(cfg)  # fail fast, in the foreground, on a bad database
    try:
        holder = mount_holder(Path(cfg.database))
    finally:
        ns.close()
    if holder is not None:
        raise SetupError(f"the filesystem is already mounted ({holder.describe()}); unmount "
                         "it first: one mount per SQLite namespace")
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
        kind, _, message = verdict.partition(":")
        print(f"cloudfs mount: {message.strip() or 'the mount process died'}", file=sys.stderr)
        return 2 if kind == "setup" else 1
    os.close(rfd)
    os.setsid()
    _detach_stdio(cfg)
    try:
        trio.run(_main, cfg, opts, wfd)
    except SetupError as exc:
        _report(wfd, f"setup: {exc}")
        os._exit(2)
    except BaseException as exc:
        log.exception("mount failed")
        _report(wfd, f"error: {type(exc).__name__}: {exc}")
        os._exit(1)
    os._exit(0)


def _report(fd: int, message: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, message.encode() + b"\n")


def _detach_stdio(cfg: Config) -> None:
    """The background daemon logs to <cache_dir>/mount.log (rotated, private: the daemon's
    files are its owner's only, so is every rotated copy); stdout and stderr go there too
    (a last traceback is never lost)."""
    os.umask(0o077)
    log_path = private_dir(cache_dir(cfg)) / "mount.log"
    logs.to_file(log_path)
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    os.close(null)
