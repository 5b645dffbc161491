"""What a running mount is doing: the answers of its control channel (`cloudfs status`,
`cloudfs stats`) and how `cloudfs status` shows them.

The status is gathered on the trio thread from the mount's own state (write sessions, open
files, the local-disk budget, the Swift store's counters), the namespace (backend, mounts,
and what the last ccd passes recorded in its meta table), never from Swift: asking is cheap.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric

from cloudfs.files import Files
from cloudfs.ops import REQUESTS, fuse_errors_by_errno
from sqlfsn import Namespace
from sqlfsn.database import describe, is_postgres
from sqlfsn.mounts import HEARTBEATS_PER_TIMEOUT
from wiring.control import Operation, Peer
from wiring.metrics import gauge, swift_families

#: Keys of the namespace's meta table where ccd records its last passes (ccd/cli.py).
CCD_META = ("ccd.consolidation", "ccd.cleanup")


@dataclass
class MountStatus:
    """The mount's parts the status reads."""

    files: Files
    ns: Namespace
    mountpoint: str
    database: str
    started: float

    def families(self) -> Iterator[Metric]:
        """The mount's Prometheus metrics (wiring/metrics.py)."""
        files, space = self.files, self.files.space
        yield from swift_families(files.store.stats)
        requests = CounterMetricFamily("cloudfs_fuse_requests", "FUSE requests answered, by "
                                       "operation", labels=["operation"])
        for name, n in sorted(REQUESTS.items()):
            requests.add_metric([name], n)
        yield requests
        errors = CounterMetricFamily("cloudfs_fuse_errors", "FUSE requests answered with an "
                                     "error, by errno", labels=["errno"])
        for name, n in sorted(fuse_errors_by_errno().items()):
            errors.add_metric([name], n)
        yield errors
        writes = files.writes()
        yield gauge("cloudfs_open_files", "Open files", len(files.handles))
        yield gauge("cloudfs_open_files_for_writing", "Files open for writing",
                    files.handles.writable)
        yield gauge("cloudfs_write_sessions", "Writes in progress (not committed)", len(writes))
        yield gauge("cloudfs_uncommitted_bytes", "Bytes written and not yet committed",
                    sum(w.written for w in writes))
        yield gauge("cloudfs_local_disk_used_bytes", "Local disk used by the spool and the "
                    "write cache", space.used)
        yield gauge("cloudfs_local_disk_limit_bytes", "cache_size", space.limit)
        yield gauge("cloudfs_local_disk_free_bytes", "Free space on the local disk above its "
                    "reserve", max(0, space.free_on_disk()))
        backlog = files.writeback.backlog() if files.writeback is not None else None
        if backlog is not None:
            yield gauge("cloudfs_write_back_files", "Closed files in the write-back journal, "
                        "not yet in Swift", backlog["files"])
            yield gauge("cloudfs_write_back_bytes", "Bytes in the write-back journal, not yet "
                        "in Swift", backlog["bytes"])
            yield gauge("cloudfs_write_back_oldest_seconds", "Age of the oldest closed file "
                        "not yet in Swift", backlog["oldest"])
            yield gauge("cloudfs_write_back_failing", "Write-back uploads waiting to be "
                        "retried after a failure", backlog["failing"])
            yield CounterMetricFamily("cloudfs_write_back_committed", "Closed files uploaded "
                                      "and committed from the write-back journal",
                                      value=backlog["committed"])
        yield CounterMetricFamily("cloudfs_namespace_commits", "Namespace transactions "
                                  "committed", value=self.ns.commits)

    def operations(self) -> dict[str, Operation]:
        return {"status": Operation(self.status), "stats": Operation(self.stats),
                "sync": Operation(self.sync, owner_only=False)}

    async def sync(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """`cloudfs sync`: answers once every file closed before the request is in Swift
        and committed (at once without write-back). Any user may ask: it only waits."""
        return {"uploaded": await self.files.sync()}

    async def stats(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        """The counters `cloudfs stats` prints."""
        return {**self.files.statistics(), "fuse_requests": dict(REQUESTS)}

    async def status(self, request: dict[str, Any], peer: Peer) -> dict[str, Any]:
        now = time.time()
        files, space = self.files, self.files.space
        writes = files.writes()
        store = files.store.stats
        return {
            "mountpoint": self.mountpoint,
            "pid": os.getpid(),
            "started": self.started,
            "uptime": now - self.started,
            "namespace": {"backend": "postgresql" if is_postgres(self.database) else "sqlite",
                          "database": describe(self.database), "commits": self.ns.commits,
                          "mount_timeout": self.ns.liveness().timeout_s},
            "mounts": self.mounts(),
            "uploads": {"files": len(writes), "bytes": sum(w.written for w in writes),
                        "oldest": max((now - w.started for w in writes), default=0.0),
                        "stopping": files.stopping},
            "write_back": None if files.writeback is None else {
                "enabled": files.write_back_max > 0, **files.writeback.backlog()},
            "open_files": {"all": len(files.handles), "for_writing": files.handles.writable},
            "local_disk": {"used": space.used, "limit": space.limit,
                           "free": max(0, space.free_on_disk()), "reserve": space.reserve,
                           "directory": space.directory},
            "swift": {"requests": files.store.statistics(), **store.as_dict()},
            "fuse": {"requests": sum(REQUESTS.values()), "errors": fuse_errors_by_errno()},
            "ccd": {key.split(".", 1)[1]: _meta_json(self.ns, key) for key in CCD_META},
        }

    def mounts(self) -> list[dict[str, Any]]:
        """Every registered mount of the filesystem (this one included, `this`), alive or
        dead by the mount timeout, with the files it has open and the write leases it holds;
        the heartbeat's age by the database's clock."""
        files = self.files
        now_ns, usage = self.ns.mount_usage()
        listed = []
        for m in self.ns.mounts():
            this = m.id == files.mount_id
            if this and not self.ns.shared:  # SQLite records neither: this mount's own
                held = (len({h.inode for h in files.handles}), len(files.writes()))
            else:
                held = usage.get(m.id, (0, 0))
            listed.append({"id": m.id, "host": m.host, "pid": m.pid,
                           "mountpoint": m.mountpoint, "started": m.started_ns / 1e9,
                           "heartbeat": m.heartbeat_ns / 1e9,
                           "heartbeat_age": max(0.0, (now_ns - m.heartbeat_ns) / 1e9),
                           "alive": m.alive, "this": this, "open_files": held[0],
                           "write_leases": held[1]})
        return listed


def _meta_json(ns: Namespace, key: str) -> Any:
    raw = ns.get_meta(key)
    try:
        return None if raw is None else json.loads(raw)
    except ValueError:
        return None


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _write_back_line(wb: dict[str, Any] | None) -> str:
    if wb is None or not (wb["enabled"] or wb["files"]):
        return "write-back   off"
    line = f"write-back   {'on' if wb['enabled'] else 'off'}: {wb['files']} closed files, " \
        f"{_size(wb['bytes'])} not yet in Swift"
    if wb["files"]:
        line += f", oldest {_ago(wb['oldest'])}"
    if wb["failing"]:
        line += f", {wb['failing']} failing (retried)"
    return line


def _mount_lines(mounts: list[dict[str, Any]]) -> list[str]:
    """One line per registered mount: which, since when, its heartbeat, what it holds."""
    lines = []
    for m in mounts:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m["started"]))
        # dead: heartbeat older than the timeout, or (PostgreSQL) its session is gone too
        state = "alive" if m["alive"] else "DEAD (a live mount or ccd cleanup reaps it)"
        lines.append(
            f"  mount {m['id']:<5} {m['host']} pid {m['pid']} {m['mountpoint']}"
            f"{' (this one)' if m['this'] else ''}: since {started} UTC, heartbeat "
            f"{m['heartbeat_age']:.1f} s ago, {state}; {m['open_files']} open files, "
            f"{m['write_leases']} write leases")
    return lines


def render(st: dict[str, Any]) -> str:
    """The human table of `cloudfs status`."""
    up, ns, disk, swift = st["uploads"], st["namespace"], st["local_disk"], st["swift"]
    lines = [
        f"mount        {st['mountpoint']} (pid {st['pid']}, up {_ago(st['uptime'])})"
        + ("  STOPPING" if up["stopping"] else ""),
        f"namespace    {ns['backend']} {ns['database']}, "
        f"{sum(m['alive'] for m in st['mounts'])} mount(s) alive, {ns['commits']} commits",
        f"mount timeout {ns['mount_timeout']:g} s (heartbeats every "
        f"{ns['mount_timeout'] / HEARTBEATS_PER_TIMEOUT:g} s)",
        *_mount_lines(st["mounts"]),
        f"uploads      {up['files']} files, {_size(up['bytes'])} not yet committed"
        + (f", oldest {_ago(up['oldest'])}" if up["files"] else ""),
        _write_back_line(st.get("write_back")),
        f"open files   {st['open_files']['all']} ({st['open_files']['for_writing']} for "
        "writing)",
        f"local disk   {_size(disk['used'])} of {_size(disk['limit'])} (spool and write "
        f"cache), {_size(disk['free'])} free above the reserve on {disk['directory']}",
        "swift        " + ", ".join(f"{n} {m}" for m, n in sorted(swift["requests"].items()))
        + f"; {swift['retries']} retries, {swift['failures']} failures; "
        f"{_size(swift['bytes_sent'])} up, {_size(swift['bytes_received'])} down",
        f"fuse         {st['fuse']['requests']} requests"
        + "".join(f", {n} {e}" for e, n in sorted(st["fuse"]["errors"].items())),
    ]
    for kind, last in st["ccd"].items():
        if last is None:
            lines.append(f"ccd          {kind}: no pass recorded")
            continue
        did = ", ".join(f"{n} {k}" for k, n in sorted(last.get("counts", {}).items())) \
            or "nothing to do"
        lines.append(f"ccd          {kind}: last pass {_ago(time.time() - last['at'])} ago "
                     f"({last['seconds']:.1f} s): {did}")
    return "\n".join(lines)
