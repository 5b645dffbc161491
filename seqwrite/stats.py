"""What a SwiftStore did since it was made: requests by method and outcome, retries, failures,
bytes each way. Plain counters, read by `cloudfs status`, `cloudfs stats` and the metrics
exporter (wiring/metrics.py); seqwrite itself knows nothing of how they are shown."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


def outcome_of(exc: BaseException | None) -> str:
    """The outcome label of a request: "2xx", its HTTP status, or "error" (no answer)."""
    if exc is None:
        return "2xx"
    status = getattr(exc, "http_status", None)
    return str(status) if status else "error"


@dataclass
class StoreStats:
    """Counters of one store (all updated from the trio thread)."""

    outcomes: Counter[tuple[str, str]] = field(default_factory=Counter)  # (method, outcome)
    retries: int = 0  # attempts repeated after a transient failure
    failures: int = 0  # operations that failed for good (their caller got a StoreError)
    bytes_sent: int = 0  # request bodies (PUT), failed attempts included
    bytes_received: int = 0  # response bodies (GET)

    def answered(self, method: str, exc: BaseException | None = None) -> None:
        self.outcomes[(method, outcome_of(exc))] += 1

    def by_method(self) -> dict[str, int]:
        out: Counter[str] = Counter()
        for (method, _), n in self.outcomes.items():
            out[method] += n
        return dict(out)

    def as_dict(self) -> dict[str, object]:
        return {"answered": self.by_method(),
                "outcomes": {f"{m} {o}": n for (m, o), n in sorted(self.outcomes.items())},
                "retries": self.retries, "failures": self.failures,
                "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received}
