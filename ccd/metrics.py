"""ccd's Prometheus metrics (wiring/metrics.py): what its passes did since it started, the
backlog the last pass left, and its Swift requests."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ccd.context import Context
from ccd.report import Report
from wiring.metrics import PASS_SECONDS, swift_families

#: Events of a pass that are work left for later passes (the backlog).
BACKLOG = ("settle_young", "settle_changed", "skipped_alive", "skipped_untagged",
           "waiting_retire", "tmp_pending", "cas_deferred", "kept_error")


class CcdMetrics:
    """Counts every pass's events; `families` is the exporter's gather function."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.events: Counter[str] = Counter()
        self.last: dict[str, tuple[float, Report]] = {}

    def passed(self, report: Report, started: float, ended: float) -> None:
        if report.dry_run:
            return
        self.events.update(report.counts)
        self.last[report.title] = (ended, report)
        PASS_SECONDS.labels(report.title).observe(ended - started)

    def families(self) -> Iterator[Metric]:
        yield from swift_families(self.ctx.store.stats)
        events = CounterMetricFamily("cloudfs_ccd_events", "What ccd's passes did, by event "
                                     "(e.g. files_settled, cas_deleted: the GC's deletions)",
                                     labels=["event"])
        for event, n in sorted(self.events.items()):
            events.add_metric([event], n)
        yield events
        last = GaugeMetricFamily("cloudfs_ccd_last_pass_timestamp_seconds", "When the last "
                                 "pass of each kind ended", labels=["kind"])
        backlog = GaugeMetricFamily("cloudfs_ccd_backlog", "Work the last pass left for "
                                    "later, by kind of pass and event", labels=["kind", "event"])
        for kind, (ended, report) in sorted(self.last.items()):
            last.add_metric([kind], ended)
            for event in BACKLOG:
                backlog.add_metric([kind, event], report.counts.get(event, 0))
        yield last
        yield backlog
