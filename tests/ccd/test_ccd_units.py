"""Pure logic of ccd, no Swift: tags, listing times, reports, progress, sd_notify."""

from __future__ import annotations

import io
import socket
from pathlib import Path

import pytest

from ccd import Consolidator, Context, Report, Settler
from ccd.report import Progress, human_bytes
from ccd.segments import Tag, parse_tag, parse_time
from seqwrite import Layout
from sqlfsn import Namespace
from wiring.sdnotify import notify

H, S = "a" * 64, "b" * 64


def test_tag_round_trip_and_retire_mark():
    tag = Tag(H, S, 3)
    headers = tag.headers()
    assert headers == {"X-Object-Meta-Bigfile": H, "X-Object-Meta-Blake3": S,
                       "X-Object-Meta-Seq": "3"}
    assert parse_tag({k.lower(): v for k, v in headers.items()}) == tag
    marked = tag.headers(retired_at=1700000000.25)
    assert marked["X-Object-Meta-Retired-At"] == "1700000000.250"
    assert parse_tag(marked) == Tag(H, S, 3, 1700000000.25)
    assert parse_tag({"content-length": "5"}) is None
    assert parse_tag({"x-object-meta-bigfile": H, "x-object-meta-seq": "x",
                      "x-object-meta-retired-at": "soon"}) == Tag(H, "", -1, None)


def test_listing_time_is_utc():
    assert parse_time("1970-01-01T00:00:01.500000") == 1.5
    assert parse_time("2026-11-21T20:47:41.026350") == pytest.approx(1795294061.02635)


def test_report_summary_and_dry_run_wording():
    report = Report("cleanup")
    assert "nothing to do" in report.summary() and not report.changed
    report.add("cas_deleted", 3 * 1024 * 1024, n=2)
    report.add("tmp_untagged", 1024)
    report.error("listing x failed")
    text = report.summary()
    assert "unreferenced CAS objects deleted: 2 (3.0 MiB)" in text
    assert "kept because of errors: 1" in text and "bytes freed: 3.0 MiB" in text
    assert report.changed and report.kept_errors == 1 and report.errors == ["listing x failed"]
    dry = Report("cleanup", dry_run=True)
    dry.add("cas_deleted", 10)
    assert "unreferenced CAS objects to delete: 1 (10 B)" in dry.summary()
    assert "bytes would be freed" in dry.summary()
    with pytest.raises(ValueError):
        report.add("no such event")
    assert human_bytes(0) == "0 B" and human_bytes(5 * 2**40) == "5.0 TiB"


def test_progress_only_on_a_terminal():
    stream = io.StringIO()
    quiet = Progress(stream)  # StringIO is not a TTY
    quiet.show("x", 1, 2, force=True)
    assert stream.getvalue() == ""
    shown = Progress(stream, enabled=True)
    shown.show("checking", 5, 10, force=True)
    shown.clear()
    assert stream.getvalue().startswith("\rchecking: 5/10") and stream.getvalue().endswith("\r")


def test_crash_points_are_checked():
    with pytest.raises(ValueError):
        Consolidator(None, crash_after="nowhere")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        Settler(None, crash_after="nowhere")  # type: ignore[arg-type]


async def test_the_daemon_scans_for_settling_every_half_settle_grace():
    with Namespace.open(":memory:", create=True) as ns:
        ctx = Context(ns, None, Layout("b", 1))  # type: ignore[arg-type] - no file: no Swift
        slow, eager = Settler(ctx, settle_grace=100), Settler(ctx, settle_grace=0)
        assert slow.scan_due() and eager.scan_due()
        for settler in (slow, eager):
            report = Report("consolidation")
            await settler.run_pass(report)
            assert report.as_dict() == {}
        assert not slow.scan_due() and eager.scan_due()


def test_settle_report_wording():
    report = Report("consolidation")
    report.add("files_settled", 3 * 1024, n=2)
    report.add("settle_young")
    assert "files settled into one whole-file content: 2 (3.0 KiB)" in report.summary()
    assert report.changed
    young = Report("consolidation")
    young.add("settle_young")
    young.add("settle_changed")
    assert not young.changed, "skips change nothing"
    dry = Report("consolidation", dry_run=True)
    dry.add("files_settled", 10)
    dry.add("contents_consolidated")
    assert "files to settle into one whole-file content: 1 (10 B)" in dry.summary()
    assert "files to consolidate: 1" in dry.summary()


def test_sd_notify(tmp_path: Path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify("READY=1") is False
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert notify("READY=1") is True
        assert sock.recv(100) == b"READY=1"
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone"))
    assert notify("READY=1") is False
