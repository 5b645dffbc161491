"""Prometheus metrics of the mount and of ccd (docs/OPERATIONS.md, "Metrics"): scraped over
HTTP, and written as a node_exporter textfile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request

import pytest

from devtools.ports import find_free_port_range

pytestmark = [pytest.mark.mount, pytest.mark.swift]

MiB = 1 << 20


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        return resp.read().decode()


def value(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in the metrics"
    return float(match.group(1))


def test_mount_metrics(cloudfs_mount):
    """The mount serves bytes up and down, requests by method and status, retries, errors by
    errno, commit and read latency histograms, local disk bytes, open files and write sessions
    on a localhost port, with Prometheus names."""
    port = find_free_port_range(1)
    cloudfs_mount.configure("cloudfs", metrics=port)
    cloudfs_mount.remount()
    data = os.urandom(3 * MiB)
    (cloudfs_mount.path / "f").write_bytes(data)
    assert (cloudfs_mount.path / "f").read_bytes() == data
    with pytest.raises(FileNotFoundError):
        (cloudfs_mount.path / "missing").read_bytes()
    time.sleep(6)  # one refresh
    text = scrape(port)
    assert value(text, "cloudfs_swift_sent_bytes_total") >= 3 * MiB
    assert value(text, "cloudfs_swift_received_bytes_total") >= 3 * MiB
    assert value(text, "cloudfs_swift_requests_total", '{method="PUT",outcome="2xx"}') >= 4
    assert value(text, "cloudfs_swift_retries_total") == 0
    assert value(text, "cloudfs_fuse_errors_total", '{errno="ENOENT"}') >= 1
    assert value(text, "cloudfs_commit_seconds_count") >= 1
    assert value(text, "cloudfs_read_seconds_count") >= 1
    for gauge in ("cloudfs_local_disk_used_bytes", "cloudfs_local_disk_limit_bytes",
                  "cloudfs_open_files", "cloudfs_write_sessions"):
        value(text, gauge)
    assert value(text, "cloudfs_namespace_commits_total") >= 2


def test_ccd_metrics_textfile_and_port(cloudfs_mount, tmp_path):
    """ccd writes its metrics (passes, events such as the GC's deletions, backlog, Swift
    requests) to a node_exporter textfile at the end of a one-shot pass, and serves them on a
    port while `ccd run` runs."""
    (cloudfs_mount.path / "f").write_bytes(os.urandom(3 * MiB))
    prom = tmp_path / "ccd.prom"
    cloudfs_mount.configure("ccd", ccd_metrics=prom)
    proc = subprocess.run([sys.executable, "-m", "ccd.cli", "--config",
                           str(cloudfs_mount.config), "once"], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = prom.read_text()
    assert value(text, "cloudfs_ccd_events_total", '{event="contents_consolidated"}') == 1
    assert value(text, "cloudfs_ccd_pass_seconds_count", '{kind="consolidation"}') == 1
    value(text, "cloudfs_ccd_backlog", '{event="skipped_alive",kind="consolidation"}')
    assert value(text, "cloudfs_swift_requests_total", '{method="PUT",outcome="2xx"}') >= 1
    port = find_free_port_range(1)
    cloudfs_mount.configure("ccd", ccd_metrics=f"127.0.0.1:{port}", interval=1)
    daemon = subprocess.Popen([sys.executable, "-m", "ccd.cli", "--config",
                               str(cloudfs_mount.config), "run"], stderr=subprocess.PIPE,
                              text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                text = scrape(port)
                if "cloudfs_ccd_last_pass_timestamp_seconds{" in text:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "ccd run never served its metrics"
            time.sleep(0.5)
        assert value(text, "cloudfs_ccd_last_pass_timestamp_seconds",
                     '{kind="consolidation"}') > time.time() - 120
    finally:
        daemon.terminate()
        daemon.wait(30)


def test_bad_metrics_setting_is_one_line(cloudfs_mount):
    cloudfs_mount.stop()
    cloudfs_mount.configure("cloudfs", metrics="everywhere")
    proc = subprocess.run([sys.executable, "-m", "cloudfs", "mount", "--foreground",
                           "--config", str(cloudfs_mount.config), str(cloudfs_mount.path)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "cloudfs mount: metrics: 'everywhere' is not off, a port, host:port or /path.prom"]
    cloudfs_mount.configure("cloudfs", metrics="off")
    cloudfs_mount.start()
