"""Several mounts of one filesystem: this mount's registration and what other mounts changed.

On PostgreSQL any number of mounts (hosts) serve one namespace (sqlfsn/mounts.py). This module
keeps this mount's part of that alive:

- `Registration`: the mount's row (registered at start, deleted at a clean unmount), its
  heartbeat every `Liveness.heartbeat_s` (a tenth of the namespace's mount timeout, read
  again at each heartbeat), and, at
  each heartbeat, the reaping of mounts found dead (their holds and write leases released,
  the orphans nobody holds deleted). A registration found gone (this mount was declared dead,
  e.g. after a long network partition) is made again, and the open files are held again.
- `ChangeListener`: a thread reading the change notifications of the other mounts
  (sqlfsn/listen.py) and telling the kernel to forget what they changed: an attribute or a
  content change invalidates the inode (its page cache too, for content), a name removed or
  renamed away invalidates that directory entry. Its connection also holds the mount's session
  lock, which tells the other mounts at once that this process died. A notification missed
  (the connection broke) is covered by the kernel's attribute and entry timeouts
  (attrs.ATTR_TIMEOUT, 1 s): they bound how long any change can stay unseen.

SQLite has one mount (the exclusive lock of sqlfsn/local.py): the row is registered, and
there is nothing to listen to.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import pyfuse3
import trio

from cloudfs import knowndir
from cloudfs.files import Files
from sqlfsn import MountInfo, Namespace
from sqlfsn.errors import NamespaceError
from sqlfsn.mounts import CRASH_HEARTBEATS, HEARTBEATS_PER_TIMEOUT

log = logging.getLogger(__name__)


class Registration:
    """This mount's row among the mounts of the namespace, kept alive by `keep_alive()`."""

    def __init__(self, ns: Namespace, info: MountInfo, files: Files) -> None:
        self.ns = ns
        self.info = info
        self.files = files
        self.mount_id = ns.register_mount(info)
        files.mount_id = self.mount_id
        self.listener: ChangeListener | None = None
        self.session_id = ns.session_id

    async def keep_alive(self) -> None:
        """Heartbeats, and the reaping of dead mounts, until cancelled. After heartbeats
        failed (the database was unreachable: every mount's heartbeats stopped alike), this
        mount reaps nobody until CRASH_HEARTBEATS heartbeats in a row succeeded again, so
        that the other live mounts have beaten (and taken their session locks) again first."""
        if not self.ns.shared:
            return
        timeout = self.ns.liveness().timeout_s
        failing = False
        good = CRASH_HEARTBEATS
        while True:
            await trio.sleep(timeout / HEARTBEATS_PER_TIMEOUT)
            try:
                self.beat(reap=good >= CRASH_HEARTBEATS)
                # `cloudfs tune --mount-timeout` reaches running mounts at their next beat
                now = self.ns.reload_liveness().timeout_s
            except NamespaceError as exc:
                if not failing:
                    log.warning("mount %d: heartbeat failed (%s); trying again every %.1f s",
                                self.mount_id, exc, timeout / HEARTBEATS_PER_TIMEOUT)
                failing, good = True, 0
                continue
            good += 1
            if failing:
                log.info("mount %d: heartbeats work again", self.mount_id)
                failing = False
            if now != timeout:
                log.info("mount timeout now %g s (heartbeats every %g s)", now,
                         now / HEARTBEATS_PER_TIMEOUT)
                timeout = now

    def beat(self, *, reap: bool = True) -> None:
        """One heartbeat (re-registering if this mount was declared dead), then the reaping
        of the mounts found dead (unless `reap` is False)."""
        if not self.ns.mount_heartbeat(self.mount_id):
            old = self.mount_id
            self.mount_id = self.ns.register_mount(self.info)
            self.files.mount_id = self.mount_id
            self.files.hold_all_open()
            if self.listener is not None:
                self.listener.lock_mount(self.mount_id)
            log.error("mount %d was declared dead by another mount (heartbeats late): "
                      "registered again as mount %d; writes in progress may fail",
                      old, self.mount_id)
        self.session_id = self.ns.session_id
        if reap:
            self.ns.reap_mounts()

    def close(self) -> None:
        """A clean unmount: the row goes (with its holds and leases)."""
        try:
            self.ns.unregister_mount(self.mount_id)
        except NamespaceError as exc:
            log.warning("mount %d: could not unregister (%s): another mount or ccd will "
                        "reap it after the mount timeout", self.mount_id, exc)


class ChangeListener:
    """A thread that applies other mounts' changes to the kernel's caches (see the module
    docstring). `start()` once pyfuse3 is initialised; `stop()` before it closes."""

    def __init__(self, spec: str, registration: Registration) -> None:
        from sqlfsn.listen import Listener  # PostgreSQL only: psycopg

        self._listener = Listener(spec)
        self._files = registration.files
        self._token = trio.lowlevel.current_trio_token()
        self._registration = registration
        self._stopping = threading.Event()
        self._lock_to: int | None = registration.mount_id
        self._guard = threading.Lock()
        self._thread = threading.Thread(target=self._run, name="cloudfs-changes", daemon=True)
        registration.listener = self

    def lock_mount(self, mount_id: int) -> None:
        with self._guard:
            self._lock_to = mount_id

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        self._thread.join(5.0)
        if self._thread.is_alive():
            log.info("the change listener did not stop within 5 s; leaving it")

    def _run(self) -> None:
        failing = False
        while not self._stopping.is_set():
            with self._guard:
                lock_to, self._lock_to = self._lock_to, None
            if lock_to is not None:
                self._listener.lock_mount(lock_to)
            try:
                got = self._listener.wait(0.5)
            except NamespaceError as exc:
                if not failing:
                    log.warning("not hearing other mounts' changes (%s): they show within "
                                "the kernel's cache timeouts; retrying", exc)
                failing = True
                self._stopping.wait(1.0)
                continue
            if failing:
                log.info("hearing other mounts' changes again")
                failing = False
            own = self._registration.session_id
            if any(change.sender != own for change in got.changes):
                knowndir.heard[0] += 1  # before the kernel hears: its getattr must not hit
            for change in got.changes:
                if change.sender == own or self._stopping.is_set():
                    continue  # this mount's own changes: its caches are already right
                if change.kind == "content":
                    self._show_latest(change.inode)
                self._apply(change.kind, change.inode, change.name)
        self._listener.close()

    def _show_latest(self, inode: int) -> None:
        """A new version committed elsewhere: this mount's open descriptors read it from now
        on, as after a commit of this mount (files._committed), so what they read agrees with
        the size the kernel is about to fetch."""
        if not self._files.handles.count(inode):
            return
        try:
            trio.from_thread.run_sync(self._files.show_latest, inode, trio_token=self._token)
        except (trio.RunFinishedError, trio.Cancelled):
            pass  # the mount is ending
        except NamespaceError as exc:  # the kernel's attribute timeout still bounds it
            log.warning("inode %d: could not read the version another mount committed: %s",
                        inode, exc)

    @staticmethod
    def _apply(kind: str, inode: int, name: bytes | None) -> None:
        # ENOENT: the kernel does not know the inode or name, nothing to forget.
        with contextlib.suppress(OSError):
            if kind == "entry" and name is not None:
                pyfuse3.invalidate_entry(inode, name)
            else:
                pyfuse3.invalidate_inode(inode, attr_only=kind == "attr")
