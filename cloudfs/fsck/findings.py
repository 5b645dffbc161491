"""What one fsck run found: problems (each naming its object and the files it harms, by path),
notes (what is normal but worth knowing), what was checked, and the exit status.

A *problem* is a fact that makes the filesystem wrong or at risk: a content missing from Swift,
a damaged one, a segment the garbage collector would delete, a namespace inconsistency, a stale
upload lease, or something that could not be checked. A *note* is a count of things that are
normal and have an owner: garbage waiting for `ccd cleanup`, segments waiting for ccd's
consolidation, damaged files an earlier fsck already moved to /lost+found.

The exit status is the sum of these bits, as fsck(8)'s:

    0  clean: no problem found
    1  problems were found and all repaired (--repair)
    4  problems left: found without --repair, or not repairable (see the report)
    8  incomplete: something could not be checked (a Swift request failed for good)

32 when it was interrupted (SIGINT, Ctrl-C: "checking canceled by user request", as fsck(8)),
and, as for every cloudfs command, 2 when fsck cannot start (configuration, database, Swift
unreachable) or --repair is refused (the filesystem is mounted, or cannot be told unmounted).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field

EXIT_CLEAN = 0
EXIT_REPAIRED = 1
EXIT_CANNOT_START = 2
EXIT_PROBLEMS_LEFT = 4
EXIT_INCOMPLETE = 8
EXIT_INTERRUPTED = 32

# kind -> the word starting its line in the human report.
KINDS: dict[str, str] = {
    "namespace": "NAMESPACE",  # a violation of sqlfsn's check()
    "missing": "MISSING",  # a content's object is not in Swift (404)
    "damaged": "DAMAGED",  # it is there but wrong (size, manifest, segment)
    "unprotected": "UNPROTECTED",  # a manifest names a CAS segment the registry does not list
    "stale_lease": "STALE LEASE",  # an upload lease nobody heartbeats
    "unchecked": "UNCHECKED",  # a request failed for good: absence could not be decided
}

# note -> its label in the human report.
NOTES: dict[str, str] = {
    "unreferenced_objects": "CAS objects no file references (left to `ccd cleanup`)",
    "foreign_objects": "objects with a non-CAS name in CAS containers (ignored)",
    "segments_leftover": "temporary segments no lease or manifest explains (left to "
                         "`ccd cleanup`)",
    "segments_pending": "temporary segments named by manifests (ccd consolidates them)",
    "segments_retired": "retired temporary segments (deleted after the retire grace)",
    "segments_in_progress": "temporary segments of writes in progress",
    "contents_mismatched": "contents whose manifest and registry list different segments "
                           "(readable; ccd leaves them unconsolidated)",
    "damaged_in_lost_found": "damaged files already in /lost+found",
    "damaged_orphans": "damaged contents used only by deleted files still open",
}
# Notes that carry bytes too.
NOTE_BYTES = ("unreferenced_objects", "segments_leftover")


def show_path(path: bytes) -> str:
    """A path for the report: the bytes as the filesystem's names (undecodable bytes kept as
    Python's surrogate escapes, U+DC80..U+DCFF: `os.fsencode` gives the bytes back)."""
    return os.fsdecode(path)


def printable(text: str) -> str:
    """`text` safe on one line of a terminal or a log, in any locale: a byte that is not UTF-8
    (a surrogate escape) written `\\xNN`, a character that does not print (a newline, an
    escape sequence's ESC) `\\uNNNN`, and a backslash doubled, so that every
    name reads back unambiguously."""
    out = []
    for c in text:
        n = ord(c)
        if 0xDC80 <= n <= 0xDCFF:
            out.append(f"\\x{n - 0xDC00:02x}")
        elif c == "\\":
            out.append("\\\\")
        elif not c.isprintable():
            out.append(f"\\u{n:04x}")
        else:
            out.append(c)
    return "".join(out)


@dataclass
class FileRef:
    """A file harmed by a problem: its inode and every path naming it ([] for a deleted file
    still open)."""

    inode: int
    paths: list[str]

    def describe(self) -> str:
        return ", ".join(self.paths) if self.paths else f"inode {self.inode} (deleted, open)"


@dataclass
class Problem:
    """One problem.

    Attributes:
        kind: a KINDS key.
        detail: one line saying what is wrong, naming the object concerned.
        object: `container/name` of the object concerned, if one is.
        content: the content (CAS name) concerned, if one is.
        subject: what the problem is about when no file is (an upload lease, a check).
        lease: the upload lease concerned, if one is.
        files: the files it harms (a content used by many files lists them all).
        repaired: what --repair did about it; None if nothing.
    """

    kind: str
    detail: str
    object: str | None = None
    content: str | None = None
    subject: str | None = None
    lease: str | None = None
    files: list[FileRef] = field(default_factory=list)
    repaired: str | None = None

    def who(self, most: int = 5) -> str:
        """The files by path (the first `most`), or the subject."""
        if not self.files:
            return self.subject or ""
        shown = [f.describe() for f in self.files[:most]]
        more = len(self.files) - most
        return ", ".join(shown) + (f" and {more} more files" if more > 0 else "")


@dataclass
class Checked:
    """How much was checked, with what, in how long."""

    files: int = 0  # regular files in the namespace (orphans included)
    stored_files: int = 0  # those with bytes in Swift
    contents: int = 0  # contents the files use
    objects: int = 0  # distinct objects HEADed (contents and their segments)
    listed: int = 0  # objects seen in container listings
    requests: dict[str, int] = field(default_factory=dict)  # Swift requests by method
    seconds: float = 0.0

    @property
    def total_requests(self) -> int:
        return sum(n for method, n in self.requests.items() if method != "AUTH")

    def rates(self) -> tuple[float, float]:
        """(files/s, Swift requests/s) over the whole run."""
        seconds = max(self.seconds, 1e-6)
        return self.files / seconds, self.total_requests / seconds


@dataclass
class Result:
    """The outcome of one run (see the module docstring)."""

    problems: list[Problem] = field(default_factory=list)
    notes: dict[str, int] = field(default_factory=dict)
    note_bytes: dict[str, int] = field(default_factory=dict)
    checked: Checked = field(default_factory=Checked)
    repair: bool = False  # run with --repair
    database: str = ""
    container: str = ""

    def add(self, problem: Problem) -> Problem:
        self.problems.append(problem)
        return problem

    def note(self, name: str, n: int = 1, nbytes: int = 0) -> None:
        if name not in NOTES:
            raise ValueError(f"unknown fsck note {name!r}")
        self.notes[name] = self.notes.get(name, 0) + n
        if nbytes:
            self.note_bytes[name] = self.note_bytes.get(name, 0) + nbytes

    @property
    def left(self) -> list[Problem]:
        return [p for p in self.problems if p.repaired is None and p.kind != "unchecked"]

    @property
    def unchecked(self) -> list[Problem]:
        return [p for p in self.problems if p.kind == "unchecked"]

    def exit_status(self) -> int:
        status = EXIT_CLEAN
        if any(p.repaired is not None for p in self.problems):
            status |= EXIT_REPAIRED
        if self.left:
            status |= EXIT_PROBLEMS_LEFT
        if self.unchecked:
            status |= EXIT_INCOMPLETE
        return status

    def outcome(self) -> str:
        """clean, repaired, problems or incomplete (the highest bit of the status)."""
        status = self.exit_status()
        for bit, word in ((EXIT_INCOMPLETE, "incomplete"), (EXIT_PROBLEMS_LEFT, "problems"),
                          (EXIT_REPAIRED, "repaired")):
            if status & bit:
                return word
        return "clean"

    def as_json(self) -> str:
        files_per_s, requests_per_s = self.checked.rates()
        doc = {
            "result": self.outcome(),
            "exit_status": self.exit_status(),
            "repair": self.repair,
            "database": self.database,
            "container": self.container,
            "problems": [asdict(p) for p in self.problems],
            "notes": {name: {"count": n, **({"bytes": self.note_bytes[name]}
                                             if name in self.note_bytes else {})}
                      for name, n in self.notes.items() if n},
            "checked": {**asdict(self.checked), "files_per_second": round(files_per_s, 1),
                        "requests_per_second": round(requests_per_s, 1)},
        }
        return json.dumps(doc, indent=2, sort_keys=True)
