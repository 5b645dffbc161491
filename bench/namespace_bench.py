"""Benchmark: namespace metadata rates, SQLite vs PostgreSQL, at the sqlfsn level (no FUSE).

    .venv/bin/python bench/namespace_bench.py [--files 2000] [--entries 10000] [--rounds 3]
        [--json results.json]

Backends, all with their default durability (every commit waits for the disk, as a user's
would): `sqlite`, a WAL file with synchronous=FULL; `pg-tcp` and `pg-socket`, a local
PostgreSQL cluster of its own (`devtools.postgres`, fsync on, synchronous_commit on) reached
over TCP on 127.0.0.1 and over its Unix socket. Each backend gets a fresh database in the same
directory (`--dir`, default /var/tmp: a disk, not tmpfs). Per round and backend, in this order:
`--files` creates (ns.create), stats (ns.lookup: what a stat(2) costs the mount), renames into
another directory (ns.rename: the cross-directory kind, which on PostgreSQL takes the rename
lock), unlinks (ns.unlink + ns.drop_if_orphan: an rm as the mount does it), then a listing of a
directory of `--entries` entries (all of ns.readdir, made before the timing). Backends are
interleaved per round (sqlite, pg-tcp, pg-socket, sqlite, ...) because this machine is shared;
the table gives medians over rounds, and each PostgreSQL rate as a ratio of SQLite's
(per-round ratios' median, with min and max). It also counts the round trips of one
PostgreSQL operation (BEGIN and COMMIT included).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools import postgres as devpostgres  # noqa: E402
from sqlfsn import ROOT_INODE, Namespace  # noqa: E402

PHASES = ("create", "stat", "rename", "unlink", "readdir")


def run_round(ns: Namespace, files: int, entries: int, tag: str) -> dict[str, float]:
    """Rates (ops/s) of each phase; readdir in entries/s."""
    src = ns.mkdir(ROOT_INODE, f"src-{tag}".encode(), 0o755, 0, 0).inode
    dst = ns.mkdir(ROOT_INODE, f"dst-{tag}".encode(), 0o755, 0, 0).inode
    names = [b"file-%06d" % i for i in range(files)]
    rates: dict[str, float] = {}

    def timed(phase: str, count: int, action: Callable[[], None]) -> None:
        started = time.perf_counter()
        action()
        rates[phase] = count / (time.perf_counter() - started)

    timed("create", files, lambda: [ns.create(src, n, 0o644, 0, 0) for n in names])
    timed("stat", files, lambda: [ns.lookup(src, n) for n in names])
    timed("rename", files, lambda: [ns.rename(src, n, dst, n) for n in names])

    def unlink_all() -> None:
        for n in names:
            ns.drop_if_orphan(ns.unlink(dst, n).inode)

    timed("unlink", files, unlink_all)
    big = ns.mkdir(ROOT_INODE, f"big-{tag}".encode(), 0o755, 0, 0).inode
    for i in range(entries):
        ns.create(big, b"entry-%06d" % i, 0o644, 0, 0)
    timed("readdir", entries, lambda: None if sum(1 for _ in ns.readdir(big)) == entries
          else sys.exit("readdir lost entries"))
    return rates


def statements_per_op(ns: Namespace) -> dict[str, int]:
    """Round trips one operation makes to PostgreSQL (BEGIN and COMMIT included: client
    messages followed by the server's answer, in libpq's protocol trace), once its statements
    are prepared (psycopg prepares a statement
    on its 5th use, which costs one more round trip that time only)."""
    counts = {}
    d = ns.mkdir(ROOT_INODE, b"count", 0o755, 0, 0).inode
    e = ns.mkdir(ROOT_INODE, b"count2", 0o755, 0, 0).inode
    ops: dict[str, Callable[[], Any]] = {
        "create": lambda: ns.create(d, b"x", 0o644, 0, 0),
        "stat": lambda: ns.lookup(d, b"x"),
        "rename": lambda: ns.rename(d, b"x", e, b"x"),
        "unlink": lambda: ns.drop_if_orphan(ns.unlink(e, b"x").inode),
    }
    for _ in range(6):
        for op in ops.values():
            op()
    pgconn = ns._db._conn.pgconn  # type: ignore[attr-defined]
    for name, op in ops.items():
        with tempfile.TemporaryFile("w+") as trace:
            pgconn.trace(trace.fileno())
            op()
            pgconn.untrace()
            trace.seek(0)
            # A round trip: the client's messages, then the server's answer.
            sides = re.findall(r"^[^\t\n]*\t([FB])\t", trace.read(), re.MULTILINE)
            counts[name] = sum(1 for a, b in itertools.pairwise(sides) if (a, b) == ("F", "B"))
    return counts


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=2000, help="files per phase per round")
    p.add_argument("--entries", type=int, default=10_000, help="entries of the listed directory")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--dir", default="/var/tmp", help="where the databases live (a disk)")
    p.add_argument("--json", help="write every sample here")
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudfs-nsbench-", dir=args.dir))
    work.chmod(0o755)
    started = time.time()
    load_before = os.getloadavg()
    pg = devpostgres.start_throwaway(fast=False, parent=work)
    try:
        urls = {"pg-tcp": devpostgres.create_database(pg, "bench_tcp"),
                "pg-socket": devpostgres.create_database(pg, "bench_socket", socket=True)}
        spaces = {"sqlite": Namespace.open(work / "ns.db", create=True),
                  **{k: Namespace.open(u, create=True) for k, u in urls.items()}}
        trips = statements_per_op(spaces["pg-socket"])
        samples: dict[str, list[dict[str, float]]] = {k: [] for k in spaces}
        for r in range(args.rounds):
            for name, ns in spaces.items():
                samples[name].append(run_round(ns, args.files, args.entries, f"{r}"))
                print(f"round {r + 1} {name}: " + ", ".join(
                    f"{ph} {samples[name][-1][ph]:,.0f}/s" for ph in PHASES), flush=True)
        for ns in spaces.values():
            assert ns.check() == [], "check() after the benchmark"
            ns.close()
    finally:
        devpostgres.remove(pg.dir)
        shutil.rmtree(work, ignore_errors=True)

    def median(name: str, phase: str) -> float:
        return statistics.median(s[phase] for s in samples[name])

    print(f"\n{args.rounds} rounds, {args.files} files per phase, readdir of {args.entries} "
          f"entries; load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}, "
          f"{time.time() - started:.0f} s")
    print("| operation | sqlite /s | pg-tcp /s | ratio pg-tcp/sqlite | pg-socket /s | "
          "ratio pg-socket/sqlite | round trips per op (pg) |")
    print("|---|---|---|---|---|---|---|")
    for phase in PHASES:
        cells = [f"{median('sqlite', phase):,.0f}"]
        for pgname in ("pg-tcp", "pg-socket"):
            ratios = [b[phase] / a[phase] for a, b in zip(samples["sqlite"], samples[pgname],
                                                          strict=True)]
            cells += [f"{median(pgname, phase):,.0f}",
                      f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"]
        unit = " (entries/s)" if phase == "readdir" else ""
        print(f"| {phase}{unit} | " + " | ".join(cells) + f" | {trips.get(phase, '-')} |")
    if args.json:
        Path(args.json).write_text(json.dumps(
            {"args": vars(args), "samples": samples, "statements": trips,
             "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "command": sys.argv}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
