"""The pure parts of fsck: exit statuses, the report's wording, the progress line, the bounded
parallelism."""

from __future__ import annotations

import io
import json
import os

import trio

from cloudfs.fsck.findings import FileRef, Problem, Result, printable, show_path
from cloudfs.fsck.progress import Progress, parallel
from cloudfs.fsck.render import render


def test_exit_status_sums_like_fsck8() -> None:
    result = Result()
    assert (result.exit_status(), result.outcome()) == (0, "clean")
    result.note("unreferenced_objects", 3, 100)  # garbage has an owner: still clean
    assert result.exit_status() == 0
    lease = result.add(Problem("stale_lease", "no heartbeat", lease="u"))
    assert (result.exit_status(), result.outcome()) == (4, "problems")
    lease.repaired = "ended"
    assert (result.exit_status(), result.outcome()) == (1, "repaired")
    result.add(Problem("namespace", "inode 5: nlink 2 but 1 name(s)"))
    assert result.exit_status() == 5
    result.add(Problem("unchecked", "HEAD failed"))
    assert (result.exit_status(), result.outcome()) == (13, "incomplete")


def test_the_report_names_files_by_path() -> None:
    result = Result(database="/var/lib/cloudfs/main.db", container="main")
    files = [FileRef(i, [f"/f{i}"]) for i in range(7)] + [FileRef(99, [])]
    result.add(Problem("missing", "main.cas.a/abc is missing from Swift (404)", files=files))
    text = render(result)
    assert "MISSING      /f0, /f1, /f2, /f3, /f4 and 3 more files: main.cas.a/abc" in text
    assert text.endswith("would move the damaged files to /lost+found")
    assert FileRef(99, []).describe() == "inode 99 (deleted, open)"


def test_names_that_are_not_utf8_or_do_not_print_are_escaped() -> None:
    """A name's bytes that are not UTF-8, a newline, an ESC: one line, printable in any
    locale, and unambiguous (a raw byte is \\xNN, a character \\uNNNN, a backslash doubled)."""
    assert printable(show_path(b"/caf\xe9/a\nb\x1b[31m\\c\xc2\x81.txt")) == \
        "/caf\\xe9/a\\u000ab\\u001b[31m\\\\c\\u0081.txt"
    assert printable("/d\u00e9j\u00e0 vu/\u65e5\u672c") == "/d\u00e9j\u00e0 vu/\u65e5\u672c"
    result = Result()
    result.add(Problem("missing", "x/y is missing", files=[
        FileRef(2, [show_path(b"/caf\xe9.txt"), show_path(b"/two\nlines")])]))
    line = render(result).splitlines()[1]
    assert line == "MISSING      /caf\\xe9.txt, /two\\u000alines: x/y is missing"
    line.encode("ascii")  # printable whatever the terminal's encoding
    doc = json.loads(result.as_json())  # JSON keeps the bytes (surrogate escapes)
    assert [os.fsencode(p) for p in doc["problems"][0]["files"][0]["paths"]] == \
        [b"/caf\xe9.txt", b"/two\nlines"]


def test_the_progress_line() -> None:
    stream = io.StringIO()
    requests = [0]
    quiet = Progress(stream, requests=lambda: requests[0])  # not a terminal: nothing drawn
    quiet.phase("checking contents", 10)
    quiet.advance()
    assert stream.getvalue() == ""
    shown = Progress(stream, enabled=True, requests=lambda: requests[0])
    shown.phase("checking contents", 10)
    shown.advance(4)
    requests[0] = 8
    line = shown.line()
    assert line.startswith("fsck: checking contents 4/10 (40 %), ")
    assert "/s, Swift " in line and "requests/s" in line
    shown.clear()
    assert stream.getvalue().startswith("\rfsck: checking contents 0/10 (0 %)")
    assert stream.getvalue().endswith("\r")


async def test_parallel_is_bounded_and_complete() -> None:
    running = peak = 0
    seen = []

    async def fn(item: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(0.001 * (item % 3))
        seen.append(item)
        running -= 1

    progress = Progress(enabled=False)
    progress.phase("x", 100)
    await parallel(range(100), fn, limit=7, progress=progress)
    assert sorted(seen) == list(range(100)) and peak == 7
