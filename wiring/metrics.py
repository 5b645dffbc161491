"""Prometheus metrics of a daemon (the mount, ccd), with prometheus-client.

Off by default. `metrics = PORT` or `HOST:PORT` serves them over HTTP (`/metrics`; the host
defaults to 127.0.0.1: metrics name files' counts and sizes, not for the world), and
`metrics = /path/name.prom` writes them into a node_exporter textfile instead (every
REFRESH seconds and at exit: the right choice for `ccd cleanup`, which runs and exits).

The daemons' state lives on their trio thread, and prometheus-client serves from a thread of
its own: so the values are gathered on the trio thread into a snapshot every REFRESH seconds
(`Exporter.refresh`), and a scrape reads the last snapshot. Latency histograms are
prometheus-client Histograms (thread-safe), observed where the events happen.

Names follow Prometheus' conventions: `cloudfs_` prefix, `_total` for counters, `_seconds`
and `_bytes` for units.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import trio
from prometheus_client import CollectorRegistry, Histogram, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from seqwrite.stats import StoreStats
from wiring.errors import ConfigError

log = logging.getLogger(__name__)

REFRESH = 5.0  # seconds between snapshots (and textfile writes)

#: Every metric of this process: one registry, so a test can read it without HTTP.
REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
COMMIT_SECONDS = Histogram(
    "cloudfs_commit_seconds", "Time a close or fsync took to publish and commit a write",
    buckets=_LATENCY, registry=REGISTRY)
READ_SECONDS = Histogram(
    "cloudfs_read_seconds", "Time a FUSE read request took to answer", buckets=_LATENCY,
    registry=REGISTRY)
PASS_SECONDS = Histogram(
    "cloudfs_ccd_pass_seconds", "Time a ccd pass took", ["kind"], buckets=_LATENCY,
    registry=REGISTRY)


@dataclass(frozen=True, slots=True)
class Target:
    """Where metrics go: an HTTP listener or a textfile."""

    host: str = "127.0.0.1"
    port: int = 0
    textfile: str = ""

    @classmethod
    def parse(cls, text: str, key: str = "metrics") -> Target | None:
        """`off`/empty, PORT, HOST:PORT or /path/file.prom; ConfigError otherwise."""
        text = text.strip()
        if text in ("", "off", "0"):
            return None
        if text.startswith("/"):
            if not text.endswith(".prom"):
                raise ConfigError(f"{key}: a textfile must end in .prom (got {text!r})")
            return cls(textfile=text)
        host, _, port = text.rpartition(":")
        try:
            number = int(port)
        except ValueError:
            number = -1
        if not 0 < number < 65536:
            raise ConfigError(f"{key}: {text!r} is not off, a port, host:port or /path.prom")
        return cls(host=host or "127.0.0.1", port=number)


def swift_families(stats: StoreStats) -> Iterator[Metric]:
    """The Swift store's counters (both daemons have one)."""
    requests = CounterMetricFamily("cloudfs_swift_requests", "Swift requests answered, by "
                                   "method and outcome (2xx, an HTTP status, or error)",
                                   labels=["method", "outcome"])
    for (method, outcome), n in sorted(stats.outcomes.items()):
        requests.add_metric([method, outcome], n)
    yield requests
    yield CounterMetricFamily("cloudfs_swift_retries", "Swift attempts repeated after a "
                              "transient failure", value=stats.retries)
    yield CounterMetricFamily("cloudfs_swift_failures", "Swift operations that failed for "
                              "good", value=stats.failures)
    yield CounterMetricFamily("cloudfs_swift_sent_bytes", "Bytes sent to Swift (uploads)",
                              value=stats.bytes_sent)
    yield CounterMetricFamily("cloudfs_swift_received_bytes", "Bytes received from Swift",
                              value=stats.bytes_received)


def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


class _Snapshot(Collector):
    def __init__(self) -> None:
        self.families: list[Metric] = []

    def collect(self) -> Iterable[Metric]:
        return list(self.families)  # the reference is swapped whole by `refresh`


class Exporter:
    """Serves or writes this process's metrics; `gather` builds the snapshot's families."""

    def __init__(self, target: Target, gather: Callable[[], Iterable[Metric]]) -> None:
        self.target = target
        self.gather = gather
        self._snapshot = _Snapshot()
        REGISTRY.register(self._snapshot)

    def start(self) -> None:
        """Open the HTTP listener (if that is the target); one line naming a failure."""
        self.update()
        if not self.target.textfile:
            try:
                start_http_server(self.target.port, addr=self.target.host, registry=REGISTRY)
            except OSError as exc:
                raise ConfigError(f"metrics: cannot listen on {self.target.host}:"
                                  f"{self.target.port} ({exc.strerror})") from None
            log.info("metrics on http://%s:%d/metrics", self.target.host, self.target.port)

    def update(self) -> None:
        """Gather a new snapshot (on the trio thread), and write the textfile if that is the
        target (atomically: node_exporter never reads half a file)."""
        self._snapshot.families = list(self.gather())
        if self.target.textfile:
            try:
                write_to_textfile(self.target.textfile, REGISTRY)
                os.chmod(self.target.textfile, 0o644)
            except OSError as exc:
                log.warning("cannot write metrics to %s: %s", self.target.textfile, exc)

    async def refresh(self, interval: float = REFRESH) -> None:
        """Keep the snapshot fresh, forever (a task of the daemon)."""
        while True:
            await trio.sleep(interval)
            self.update()
