"""The human report of `cloudfs fsck`: a line per problem (its kind, the files by path, what is
wrong with which object, what --repair did), the notes, what was checked at what rate, and the
result with the exit status. Paths and details are written with `printable` (a name's bytes that
are not UTF-8 as \\xNN, characters that do not print as \\uNNNN): one line per problem, in any
locale. The JSON report is `Result.as_json()`.
"""

from __future__ import annotations

from cloudfs.fsck.findings import (
    EXIT_INCOMPLETE,
    EXIT_PROBLEMS_LEFT,
    KINDS,
    NOTE_BYTES,
    NOTES,
    Problem,
    Result,
    printable,
)
from cloudfs.status import _size

WIDTH = max(len(word) for word in KINDS.values())


def problem_line(p: Problem) -> str:
    who = printable(p.who())
    text = f"{KINDS[p.kind]:<{WIDTH}}  {who + ': ' if who else ''}{printable(p.detail)}"
    if p.repaired:
        text += f"\n{'':<{WIDTH}}  repaired: {printable(p.repaired)}"
    return text


def checked_line(result: Result) -> str:
    c = result.checked
    files_per_s, requests_per_s = c.rates()
    methods = ", ".join(f"{n} {m}" for m, n in sorted(c.requests.items()) if m != "AUTH" and n)
    return (f"checked {c.files} files ({c.stored_files} with bytes in Swift), {c.contents} "
            f"contents, {c.objects} objects and {c.listed} listed, in {c.seconds:.1f} s: "
            f"{files_per_s:.0f} files/s, {requests_per_s:.0f} Swift requests/s "
            f"({methods or 'no request'})")


def result_line(result: Result) -> str:
    status = result.exit_status()
    repaired = sum(1 for p in result.problems if p.repaired is not None)
    left, unchecked = len(result.left), len(result.unchecked)
    parts = []
    if repaired:
        parts.append(f"{repaired} repaired")
    if left:
        parts.append(f"{left} left")
    if unchecked:
        parts.append(f"{unchecked} could not be checked")
    text = f"result: {result.outcome()}" + (f" ({', '.join(parts)})" if parts else "")
    text += f", exit status {status}"
    if status & EXIT_PROBLEMS_LEFT and not result.repair:
        kinds = {p.kind for p in result.left}
        would = ((["move the damaged files to /lost+found"] if kinds & {"missing", "damaged"}
                  else []) + (["end the stale leases"] if "stale_lease" in kinds else []))
        if would:
            text += (f"\n  `cloudfs fsck --repair` on the unmounted filesystem would "
                     f"{' and '.join(would)}")
    if status & EXIT_INCOMPLETE:
        text += "\n  run fsck again once Swift answers: what could not be checked is not known"
    return text


def render(result: Result) -> str:
    lines = [f"cloudfs fsck{' --repair' if result.repair else ''}: namespace "
             f"{result.database}, Swift containers {result.container}"]
    lines += [problem_line(p) for p in result.problems]
    notes = []
    for name, label in NOTES.items():
        n = result.notes.get(name, 0)
        if n:
            extra = f" ({_size(result.note_bytes.get(name, 0))})" if name in NOTE_BYTES else ""
            notes.append(f"  {label}: {n}{extra}")
    if notes:
        lines += ["notes:", *notes]
    lines += [checked_line(result), result_line(result)]
    return "\n".join(lines)
