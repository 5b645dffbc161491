"""The checks of `cloudfs fsck`, one invariant per method, in the order they run (S3QL's
fsck.s3ql is the model):

 1. check_namespace           sqlfsn's own consistency check (sqlfsn/check.py);
 2. check_contents            every content a file uses is in Swift as the namespace says
                              (objects.py); a content found wrong is read again, with the
                              namespace's view of it at that moment, before it is reported: a
                              live mount or ccd may have changed both meanwhile;
 3. check_cas_objects         every CAS container listed: objects no file references (garbage
                              for `ccd cleanup`: a note, not a problem);
 4. check_temporary_segments  every `.tmp/` segment accounted for: a write in progress (live
                              lease), the manifest of a content files use naming it (ccd
                              consolidates it), a retire mark (deleted after the retire grace),
                              or a leftover (cleanup's: also the segments of a manifest no file
                              uses);
 5. check_leases              upload leases nobody heartbeats any more (problems).

Nothing here changes anything, in Swift or in the namespace: fsck without --repair is safe
beside a live mount. Repairs are repair.py's. Swift requests run `parallel` at a time; every
namespace call is a short read from the trio thread, between them.

A request that fails for good (past the store's retries: `[swift] retry_deadline`) never makes
anything "missing": what it was about is *unchecked*. When `parallel` requests in a row fail
with no answer between them, Swift is taken as down (`Outage`): the checks not made yet are
skipped, reported as one UNCHECKED line with their count, instead of each waiting out its own
retry deadline (with 256 CAS containers and thousands of contents that would take hours).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import trio

from cloudfs.fsck.findings import FileRef, Problem, Result, show_path
from cloudfs.fsck.objects import ContentVerifier, Verdict
from cloudfs.fsck.progress import Progress, parallel
from cloudfs.status import _ago
from seqwrite import Layout, StoreError, SwiftStore
from seqwrite.layout import META_RETIRED_AT, TAG_BIGFILE, TMP_PREFIX, header, is_digest
from sqlfsn import Namespace
from sqlfsn.fsck_queries import ContentUse
from wiring.leases import HEARTBEAT_INTERVAL

log = logging.getLogger(__name__)

NS_PER_S = 1_000_000_000
#: A lease whose heartbeat is older than this is stale: every writer (the mount, ccd's settle)
#: renews its leases every HEARTBEAT_INTERVAL.
LEASE_TIMEOUT = 5 * HEARTBEAT_INTERVAL
LOST_FOUND = b"lost+found"


class Outage:
    """Failed Swift requests in a row; `limit` of them with no answer between them means Swift
    is down (see the module docstring)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(1, limit)
        self.streak = 0
        self.last_error = ""

    def failed(self, error: str) -> None:
        self.streak += 1
        self.last_error = error

    def answered(self) -> None:
        if not self.down:
            self.streak = 0

    @property
    def down(self) -> bool:
        return self.streak >= self.limit

    def why(self) -> str:
        return (f"not checked: Swift stopped answering ({self.streak} requests in a row failed "
                f"past their retries; the last: {self.last_error})")


@dataclass(frozen=True, slots=True)
class Settings:
    """How a run checks.

    Attributes:
        grace: seconds; a CAS object claimed more recently is a write in flight, not garbage
            (the cleanup's `[ccd] grace`).
        lease_timeout: seconds without a heartbeat after which a lease is stale.
        parallel: contents (and listings, segments) checked at a time.
    """

    grace: float = 86400.0
    lease_timeout: float = LEASE_TIMEOUT
    parallel: int = 16


class Fsck:
    """One run of the checks over one filesystem; `await run()` returns the Result."""

    def __init__(self, ns: Namespace, store: SwiftStore, layout: Layout, settings: Settings,
                 progress: Progress | None = None) -> None:
        self.ns = ns
        self.store = store
        self.layout = layout
        self.settings = settings
        self.progress = progress or Progress(enabled=False)
        self.result = Result(database=ns.database, container=layout.base)
        self.verifier = ContentVerifier(store, layout)
        # content -> the temporary segments its manifest names (contents files use, and those
        # whose tagged segments check 4 met)
        self._manifests: dict[str, frozenset[str] | None] = {}
        self._used: set[str] = set()  # the contents files use
        self._reading: dict[str, trio.Event] = {}
        self._listed_objects = 0
        self.outage = Outage(settings.parallel)
        self._skipped: set[str] = set()  # contents not checked: Swift was down

    async def run(self) -> Result:
        started = time.monotonic()
        before = Counter(self.store.statistics())
        checked = self.result.checked
        checked.files, checked.stored_files = self.ns.file_counts()
        self.check_namespace()
        await self.check_contents()
        await self.check_cas_objects()
        await self.check_temporary_segments()
        self.check_leases()
        self.progress.clear()
        checked.objects = self.verifier.objects
        checked.listed = self._listed_objects
        checked.requests = dict(Counter(self.store.statistics()) - before)
        checked.seconds = round(time.monotonic() - started, 3)
        return self.result

    # -- 1 ------------------------------------------------------------------------------------

    def check_namespace(self) -> None:
        for line in self.ns.check():
            self.result.add(Problem("namespace", line))

    # -- 2 ------------------------------------------------------------------------------------

    async def check_contents(self) -> None:
        uses = self.ns.contents_in_use()
        self.result.checked.contents = len(uses)
        self._used = {u.hash for u in uses}
        verdicts = await self._verify(uses, "checking contents")
        suspects = sorted(h for h, v in verdicts.items()  # asked again, unless Swift is down
                          if v.state != "ok" and not (v.state == "unchecked" and self.outage.down))
        if suspects:
            fresh = [u for u in (self.ns.content_use(h) for h in suspects) if u is not None]
            for h in suspects:
                del verdicts[h]  # no longer used by any file: nothing to report
            self.verifier.forget_all()
            verdicts.update(await self._verify(fresh, "checking the suspects again"))
        for h, v in verdicts.items():
            self._manifests[h] = v.tmp_names
            if v.mismatched:
                self.result.note("contents_mismatched")
        self._report({h: v for h, v in verdicts.items() if v.state != "ok"})
        self._report_skipped()

    async def _verify(self, uses: list[ContentUse], label: str) -> dict[str, Verdict]:
        verdicts: dict[str, Verdict] = {}

        async def one(use: ContentUse) -> None:
            if self.outage.down:
                self._skipped.add(use.hash)
                return
            verdict = verdicts[use.hash] = await self.verifier.verify(use)
            if verdict.state == "unchecked":
                self.outage.failed(verdict.detail)
            else:
                self.outage.answered()

        self.progress.phase(label, len(uses))
        await parallel(uses, one, limit=self.settings.parallel, progress=self.progress)
        return verdicts

    def _report(self, bad: dict[str, Verdict]) -> None:
        """A problem per wrong content, naming every file that uses it by path. Contents used
        only by deleted files, or only by files an earlier fsck moved to /lost+found, are
        notes."""
        users = self.ns.files_using(bad)
        in_lost_found = f"/{LOST_FOUND.decode()}/"
        moved: set[int] = set()
        for h, v in sorted(bad.items()):
            files = [FileRef(inode, self.paths(inode)) for inode in users.get(h, [])]
            named = [f for f in files if f.paths]
            if v.state != "unchecked":
                if not named:
                    self.result.note("damaged_orphans")
                    continue
                if all(p.startswith(in_lost_found) for f in named for p in f.paths):
                    moved.update(f.inode for f in named)
                    continue
            self.result.add(Problem(v.state, v.detail, object=v.object, content=h,
                                    files=files))
        if moved:
            self.result.note("damaged_in_lost_found", len(moved))

    def _report_skipped(self) -> None:
        """One problem for the contents not checked because Swift was down."""
        if not self._skipped:
            return
        users = self.ns.files_using(self._skipped)
        files = len({inode for inodes in users.values() for inode in inodes})
        self.result.add(Problem("unchecked", self.outage.why(),
                                subject=f"{len(self._skipped)} contents used by {files} files"))

    def paths(self, inode: int) -> list[str]:
        """Every path naming `inode` ([] for a deleted file)."""
        out = []
        for parent, name in self.ns.names_of(inode):
            directory = self.ns.path_of(parent)
            if directory is None:
                out.append(show_path(b"<directory %d>/%s" % (parent, name)))
            else:
                out.append(show_path(directory.rstrip(b"/") + b"/" + name))
        return out

    # -- 3 ------------------------------------------------------------------------------------

    async def check_cas_objects(self) -> None:
        containers = self.layout.cas_containers()
        listed: dict[str, dict[str, Any]] = {}
        failed: list[str] = []

        async def one(container: str) -> None:
            if self.outage.down:
                failed.append(f"{container}: {self.outage.why()}")
                return
            try:
                items = await self.store.list(container)
            except StoreError as exc:
                failed.append(f"{container}: {exc}")
                self.outage.failed(str(exc))
                return
            self.outage.answered()
            for item in items:
                listed[item["name"]] = item

        self.progress.phase("listing CAS containers", len(containers))
        await parallel(containers, one, limit=self.settings.parallel, progress=self.progress)
        self._listed_objects += len(listed)
        # After the listing, so that an object published while listing is seen as claimed.
        since = int((time.time() - self.settings.grace) * NS_PER_S)
        kept = self.ns.referenced_hashes(claimed_since_ns=since)
        for name, item in listed.items():
            if not is_digest(name):
                self.result.note("foreign_objects")
            elif name not in kept:
                nbytes = 0 if "slo_etag" in item else int(item.get("bytes", 0))
                self.result.note("unreferenced_objects", nbytes=nbytes)
        if failed:
            self.result.add(Problem(
                "unchecked", f"listing {len(failed)} of {len(containers)} CAS containers "
                f"failed ({failed[0]}): their unreferenced objects are not counted",
                subject="CAS containers"))

    # -- 4 ------------------------------------------------------------------------------------

    async def check_temporary_segments(self) -> None:
        tmp = self.layout.tmp_container
        if self.outage.down:
            self.result.add(Problem("unchecked", f"listing {tmp}: {self.outage.why()}",
                                    subject="temporary segments"))
            return
        try:
            listing = await self.store.list(tmp, prefix=TMP_PREFIX)
        except StoreError as exc:
            self.outage.failed(str(exc))
            self.result.add(Problem("unchecked", f"listing {tmp}: {exc}",
                                    subject="temporary segments"))
            return
        self.outage.answered()
        self._listed_objects += len(listing)
        since = int((time.time() - self.settings.lease_timeout) * NS_PER_S)
        alive = self.ns.uploads_alive(since)  # after the listing: a new write is alive
        others = []
        for item in listing:
            upload = Layout.upload_of(item["name"])
            if upload in alive:
                self.result.note("segments_in_progress")
            elif upload is not None:
                others.append(item)
        failed: list[str] = []

        async def one(item: dict[str, Any]) -> None:
            name = item["name"]
            if self.outage.down:
                failed.append(f"{name}: {self.outage.why()}")
                return
            try:
                self.verifier.objects += 1
                headers = await self.store.head(tmp, name)
                if headers is None:
                    return  # deleted since the listing (ccd, cleanup)
                owner = header(headers, TAG_BIGFILE)
                named = await self._manifest_names(owner) if owner else frozenset()
            except StoreError as exc:
                failed.append(f"{name}: {exc}")
                self.outage.failed(str(exc))
                return
            self.outage.answered()
            if named and name in named and owner in self._used:
                self.result.note("segments_pending")
            elif owner and header(headers, META_RETIRED_AT):
                self.result.note("segments_retired")
            else:
                self.result.note("segments_leftover", nbytes=int(item.get("bytes", 0)))

        self.progress.phase("checking temporary segments", len(others))
        await parallel(others, one, limit=self.settings.parallel, progress=self.progress)
        if failed:
            self.result.add(Problem(
                "unchecked", f"{len(failed)} temporary segments could not be read "
                f"({failed[0]})", subject="temporary segments"))

    async def _manifest_names(self, owner: str) -> frozenset[str] | None:
        """The temporary segments content `owner`'s manifest names (once per content)."""
        if not is_digest(owner):
            return None
        while owner not in self._manifests:
            busy = self._reading.get(owner)
            if busy is not None:
                await busy.wait()
                continue
            done = self._reading[owner] = trio.Event()
            try:
                stored = await self.store.read_object(*self.layout.cas_path(owner))
                self.verifier.objects += 1
                self._manifests[owner] = frozenset(stored.names_in(self.layout.tmp_container))
            finally:
                del self._reading[owner]
                done.set()
        return self._manifests[owner]

    # -- 5 ------------------------------------------------------------------------------------

    def check_leases(self) -> None:
        now = time.time_ns()
        for lease in self.ns.uploads():
            idle = (now - lease.heartbeat_ns) / NS_PER_S
            if idle > self.settings.lease_timeout:
                self.result.add(Problem(
                    "stale_lease", f"no heartbeat for {_ago(idle)} (taken "
                    f"{_ago((now - lease.started_ns) / NS_PER_S)} ago): its writer is gone",
                    subject=f"upload lease {lease.id}", lease=lease.id))

