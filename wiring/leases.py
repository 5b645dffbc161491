"""Upload leases: what keeps the cleanup away from the temporary segments of a write.

A writer takes a lease (sqlfsn `upload_begin`) before its first temporary segment, and the
cleanup never deletes `.tmp/<id>/` while the lease's heartbeat is younger than its grace. One
`Leases` per process holds the ids it took and refreshes them all every HEARTBEAT_INTERVAL;
a write ends its lease when it commits (sqlfsn `set_content(upload_id=...)` or `settle`) or
aborts (`end`).
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterable

import trio

from sqlfsn import Namespace
from sqlfsn.errors import NamespaceError

log = logging.getLogger(__name__)

#: Seconds between heartbeats. The cleanup's grace must be several of these (ccd warns below
#: MIN_SAFE_GRACE).
HEARTBEAT_INTERVAL = 60.0


class Leases:
    """The upload leases this process holds, kept alive by `keep_alive()` (one task)."""

    def __init__(self, ns: Namespace) -> None:
        self.ns = ns
        self._held: set[str] = set()

    def __len__(self) -> int:
        return len(self._held)

    def take(self, upload_id: str) -> None:
        """Take lease `upload_id` (before the write's first temporary segment)."""
        self.ns.upload_begin(upload_id)
        self._held.add(upload_id)

    def forget(self, upload_ids: Iterable[str]) -> None:
        """Stop refreshing these leases: their commit ended them."""
        self._held.difference_update(upload_ids)

    def end(self, upload_ids: Iterable[str]) -> None:
        """End these leases (the write is over; what it left is the cleanup's from now on).
        A lease that cannot be ended only delays the cleanup: logged, not raised."""
        for upload_id in list(upload_ids):
            self._held.discard(upload_id)
            try:
                self.ns.upload_end(upload_id)
            except (NamespaceError, sqlite3.Error) as exc:
                log.warning("could not end upload lease %s: %s", upload_id, exc)

    async def keep_alive(self, interval: float = HEARTBEAT_INTERVAL) -> None:
        """Refresh every held lease each `interval` seconds, forever. A failed refresh is
        logged and retried next time; a lease found gone (reaped by a cleanup that thought the
        writer dead) is logged: that write will fail at its commit."""
        while True:
            await trio.sleep(interval)
            if not self._held:
                continue
            try:
                lost = self.ns.upload_heartbeat(sorted(self._held))
            except (NamespaceError, sqlite3.Error) as exc:
                log.error("could not refresh upload leases: %s", exc)
                continue
            for upload_id in sorted(lost):
                log.error("upload lease %s was lost: the cleanup may delete its segments; "
                          "its write will fail", upload_id)
