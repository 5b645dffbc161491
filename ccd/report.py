"""What a pass did (or, in a dry run, would do): counts and bytes per event, and TTY progress.

A `Report` is a bag of named events; every module adds to it, the CLI prints `summary()`. The
labels below are the vocabulary (and the order) of that summary.
"""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass, field

from wiring.statusline import StatusLine

log = logging.getLogger(__name__)

# event -> label. Events counting deletions carry bytes; "freed" sums those.
LABELS: dict[str, str] = {
    # settle (runs first in a pass)
    "files_settled": "files settled into one whole-file content",
    "settle_dedup": "settled files whose whole content was already stored",
    "settle_young": "unsettled files changed within settle_grace (settled later)",
    "settle_changed": "settles dropped: the file changed meanwhile (retried later)",
    "settle_sparse": "sparse files left unsettled (more holes than data)",
    "settle_too_large": "files left unsettled: too large for one manifest",
    "settle_refused": "settles skipped: the content is being deleted by the garbage collector",
    # consolidation
    "contents_consolidated": "files consolidated",
    "segments_copied": "segments copied to their CAS names",
    "copies_skipped": "copies skipped (the CAS name already held the bytes)",
    "manifests_rewritten": "manifests rewritten",
    "segments_marked": "temporary segments marked retired",
    "waiting_retire": "retired segments waiting for the retire grace",
    "skipped_alive": "segments of writes in progress left alone",
    "skipped_untagged": "untagged segments left alone (write unfinished or interrupted)",
    "skipped_unreferenced": "segments of contents no file references (left to cleanup)",
    "skipped_refused": "contents skipped: being deleted by the garbage collector",
    "skipped_mismatch": "contents skipped: manifest and registry disagree (see the log)",
    # cleanup of temporary segments
    "tmp_untagged": "untagged segments of interrupted writes deleted",
    "tmp_unpublished": "tagged segments of never-published contents deleted",
    "segments_retired": "retired temporary segments deleted",
    "tmp_pending": "tagged segments kept (waiting for consolidation)",
    "leases_removed": "stale upload leases removed",
    "mounts_reaped": "dead mounts unregistered (their holds and write leases released)",
    "orphans_purged": "unlinked files no live mount had open deleted",
    # garbage collection of CAS objects
    "cas_deleted": "unreferenced CAS objects deleted",
    "cas_rows_removed": "registry rows of absent objects removed",
    "cas_rescued": "CAS objects claimed again while the pass ran (kept)",
    "cas_deferred": "CAS objects deferred (a segment of a content still stored)",
    "cas_foreign": "objects in CAS containers with a non-CAS name (ignored)",
    # replay of a write-back journal
    "journal_committed": "closed files uploaded and committed from the write-back journal",
    "journal_conflicts": "closed versions kept as conflict copies (the file changed elsewhere)",
    "journal_dropped": "journal records with nothing left to do (committed before the crash, "
                       "or the file deleted since)",
    # failures
    "kept_error": "kept because of errors",
}
DELETIONS = ("tmp_untagged", "tmp_unpublished", "segments_retired", "cas_deleted")
# The labels of a dry run, where " deleted" -> " to delete" does not say it.
DRY_LABELS: dict[str, str] = {
    "files_settled": "files to settle into one whole-file content",
    "contents_consolidated": "files to consolidate",
}


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


@dataclass
class Report:
    """Counts and bytes of the events of one pass.

    Attributes:
        title: "consolidation" (a pass of `once`/`run`: settle, then consolidation) or
            "cleanup".
        dry_run: nothing was changed; the counts say what would have been.
        counts: event -> number of times.
        nbytes: event -> bytes (deletions and copies).
        errors: the first error messages (all are logged).
    """

    title: str
    dry_run: bool = False
    counts: Counter[str] = field(default_factory=Counter)
    nbytes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def add(self, event: str, nbytes: int = 0, n: int = 1) -> None:
        if event not in LABELS:
            raise ValueError(f"unknown report event {event!r}")
        self.counts[event] += n
        self.nbytes[event] += nbytes

    def error(self, message: str, n: int = 1) -> None:
        """Something was kept because of an error (listing, HEAD, DELETE ...)."""
        log.warning("%s", message)
        self.counts["kept_error"] += n
        if len(self.errors) < 20:
            self.errors.append(message)

    @property
    def kept_errors(self) -> int:
        return self.counts["kept_error"]

    @property
    def freed(self) -> int:
        return sum(self.nbytes[e] for e in DELETIONS)

    @property
    def changed(self) -> bool:
        """Whether the pass changed (or would change) anything."""
        quiet = {"waiting_retire", "skipped_alive", "skipped_untagged", "skipped_unreferenced",
                 "tmp_pending", "cas_deferred", "cas_foreign", "kept_error", "cas_rescued",
                 "skipped_refused", "skipped_mismatch", "copies_skipped", "settle_dedup",
                 "settle_young", "settle_changed", "settle_sparse", "settle_too_large",
                 "settle_refused"}
        return any(n for e, n in self.counts.items() if e not in quiet)

    def as_dict(self) -> dict[str, int]:
        return {e: n for e, n in self.counts.items() if n}

    def summary(self) -> str:
        head = f"ccd {self.title}" + (" (dry run: nothing was changed)" if self.dry_run else "")
        would = "would be " if self.dry_run else ""
        lines = [head]
        for event, label in LABELS.items():
            n = self.counts[event]
            if not n:
                continue
            if self.dry_run:
                label = DRY_LABELS.get(event) or label.replace(
                    " deleted", " to delete").replace(" removed", " to remove")
            extra = f" ({human_bytes(self.nbytes[event])})" if self.nbytes[event] else ""
            lines.append(f"  {label}: {n}{extra}")
        if len(lines) == 1:
            lines.append("  nothing to do")
        if self.freed or self.title == "cleanup":
            lines.append(f"  bytes {would}freed: {human_bytes(self.freed)}")
        return "\n".join(lines)


class Progress(StatusLine):
    """A `\\r` counter on stderr for long passes, only on a terminal."""

    def show(self, label: str, done: int, total: int | None = None, *, force: bool = False) -> None:
        if self.due(force=force):
            self.draw(f"{label}: {done}" + (f"/{total}" if total is not None else ""))
