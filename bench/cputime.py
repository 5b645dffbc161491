"""CPU seconds of a process (the mount daemon) and of this one (the raw client), for the
benchmarks' CPU-per-GiB rows."""

from __future__ import annotations

import os
import time

TICKS = os.sysconf("SC_CLK_TCK")


def process_cpu(pid: int) -> float:
    """utime + stime of `pid` (all its threads), in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # fields 14 and 15 of stat(5)


def own_cpu() -> float:
    """CPU seconds of this process (every thread): the raw python-swiftclient baseline's."""
    return time.process_time()
