"""Large directories for the benchmarks (bench/bigdir_bench.py, the harness's issue-16 rows):
directories of N empty files in a cloudfs namespace (filled through the namespace API, while
nothing has it open) and on the local disk, and a timed listing that checks every entry came."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from sqlfsn import ROOT_INODE, Namespace


def fill_namespace(db: Path | str, sizes: list[int]) -> None:
    """Directories d<N> of N empty files each, through the namespace API (an SQLite file, or
    a PostgreSQL URL)."""
    sqlite = not str(db).startswith("postgresql")
    ns = Namespace.open(db)
    try:
        if sqlite:
            ns._db.execute("PRAGMA synchronous = OFF")  # throwaway data: no fsync per create
        uid, gid = os.getuid(), os.getgid()
        for n in sizes:
            d = ns.mkdir(ROOT_INODE, f"d{n}".encode(), 0o755, uid, gid)
            for i in range(n):
                ns.create(d.inode, f"entry{i:06d}".encode(), 0o644, uid, gid)
        if sqlite:
            ns._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        ns.close()


def fill_local(root: Path, sizes: list[int]) -> None:
    for n in sizes:
        d = root / f"d{n}"
        d.mkdir(parents=True)
        for i in range(n):
            os.close(os.open(d / f"entry{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))


def timed(cmd: list[str], path: Path, expect: int) -> float:
    """Seconds of `cmd path`, output to a pipe (read, counted: every entry listed)."""
    started = time.perf_counter()
    out = subprocess.run([*cmd, str(path)], check=True, capture_output=True).stdout
    seconds = time.perf_counter() - started
    lines = out.count(b"\n")
    if lines != expect + 1:  # ls -l: the "total" line; find: the directory itself
        raise RuntimeError(f"{' '.join(cmd)} {path}: {lines - 1} entries of {expect}")
    return seconds
