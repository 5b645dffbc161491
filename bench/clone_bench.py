"""Benchmark: instant copies (`cloudfs cp --reflink`) against `cp -a` through the mount and a
raw python-swiftclient server-side COPY of every object.

    .venv/bin/python bench/clone_bench.py [--files 10000] [--cp-files 1000] [--raw-objects 200]
        [--big-gib 10] [--rounds 3] [--json results.json]

A fresh dev Swift, filesystem and mount (bench/devmount.py). The source tree is made directly
in the namespace (FUSE creation of 10,000 files takes minutes on this machine): `--files`
files in directories of 100, each the same 4 KiB content written once through the mount; the
big file is `--big-gib` GiB made of one 4 MiB content (written through the mount) repeated.
Per round: a clone of the tree and a clone of the big file (`cloudfs cp --reflink`, wall time
of the command), with the daemon's Swift requests before and after (`cloudfs stats`) and the
namespace's growth (rows, and database bytes); `cp -a` of the first `--cp-files` files
through the mount (scaled to the tree linearly: a smaller tree, for time); a raw baseline,
python-swiftclient's server-side COPY of `--raw-objects` objects, one request each (what a
Swift tool must do to copy a tree; scaled). Medians over rounds; ratios against the clone.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.devmount import DevMount, dev_mount  # noqa: E402
from sqlfsn import ROOT_INODE, Namespace  # noqa: E402

CLI = [sys.executable, "-m", "cloudfs"]
PER_DIR = 100
TABLES = ("inode", "dentry", "file_piece", "xattr")


def swift_requests(mnt: Path) -> int:
    out = subprocess.run([*CLI, "stats", str(mnt)], check=True, capture_output=True, text=True)
    return sum(json.loads(out.stdout)["swift_requests"].values())


def namespace_size(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        sizes = {t: c.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES}
        pages = c.execute("PRAGMA page_count").fetchone()[0]
        size = c.execute("PRAGMA page_size").fetchone()[0]
    sizes["bytes"] = pages * size
    return sizes


def build(m: DevMount, files: int, big_gib: int) -> None:
    (m.mnt / "seed4k").write_bytes(os.urandom(4096))
    (m.mnt / "seed4m").write_bytes(os.urandom(4 << 20))
    ns = Namespace.open(m.work / "ns.db")
    try:
        small = ns.pieces(ns.lookup(ROOT_INODE, b"seed4k").inode)
        large = ns.pieces(ns.lookup(ROOT_INODE, b"seed4m").inode)
        tree = ns.mkdir(ROOT_INODE, b"tree", 0o755, 0, 0).inode
        d = tree
        for i in range(files):
            if i % PER_DIR == 0:
                d = ns.mkdir(tree, b"d%04d" % (i // PER_DIR), 0o755, 0, 0).inode
            f = ns.create(d, b"f%06d" % i, 0o644, 0, 0)
            ns.set_content(f.inode, small, 4096)
        big = ns.create(ROOT_INODE, b"big", 0o644, 0, 0)
        count = (big_gib << 30) // (4 << 20)
        ns.set_content(big.inode, large * count, count * (4 << 20))
    finally:
        ns.close()


def measure(m: DevMount, cmd: list[str]) -> dict[str, Any]:
    """Wall time of ``cmd``, and for a clone (--json) the daemon's own time of the copy (the
    namespace transaction; the rest of the wall time is the command's Python start)."""
    before, rows = swift_requests(m.mnt), namespace_size(m.work / "ns.db")
    started = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    after, grown = swift_requests(m.mnt), namespace_size(m.work / "ns.db")
    daemon = sum(c["seconds"] for c in json.loads(out.stdout)["copies"]) \
        if "--json" in cmd else seconds
    return {"seconds": seconds, "daemon_seconds": daemon, "swift_requests": after - before,
            "growth": {k: grown[k] - rows[k] for k in grown}}


def raw_copy(m: DevMount, objects: int) -> float:
    import swiftclient

    conn = swiftclient.Connection(m.env["ST_AUTH"], m.env["ST_USER"], m.env["ST_KEY"],
                                  retries=0, timeout=120)
    conn.put_container("rawcopy")
    data = os.urandom(4096)
    for i in range(objects):
        conn.put_object("rawcopy", f"src/{i}", data)
    started = time.perf_counter()
    for i in range(objects):
        conn.copy_object("rawcopy", f"src/{i}", f"/rawcopy/dst/{i}")
    seconds = time.perf_counter() - started
    for i in range(objects):
        for prefix in ("src", "dst"):
            conn.delete_object("rawcopy", f"{prefix}/{i}")
    conn.close()
    return seconds


def median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--cp-files", type=int, default=1_000)
    p.add_argument("--raw-objects", type=int, default=200)
    p.add_argument("--big-gib", type=int, default=10)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    results: dict[str, Any] = {"args": vars(args) | {"json": str(args.json)},
                               "load": os.getloadavg()}
    with dev_mount("clonebench") as m:
        started = time.perf_counter()
        build(m, args.files, args.big_gib)
        print(f"tree of {args.files} files and a {args.big_gib} GiB file made in the "
              f"namespace in {time.perf_counter() - started:.1f} s", flush=True)
        cp_dirs = [str(m.mnt / "tree" / f"d{i:04d}")
                   for i in range((args.cp_files + PER_DIR - 1) // PER_DIR)]
        tree, big, cpa = [], [], []
        for r in range(args.rounds):
            tree.append(measure(m, [*CLI, "cp", "--reflink", "--json", str(m.mnt / "tree"),
                                    str(m.mnt / f"clone{r}")]))
            big.append(measure(m, [*CLI, "cp", "--reflink", "--json", str(m.mnt / "big"),
                                   str(m.mnt / f"big{r}")]))
            (m.mnt / f"cpa{r}").mkdir()
            cpa.append(measure(m, ["cp", "-a", *cp_dirs, str(m.mnt / f"cpa{r}")]))
            print(f"round {r + 1}: clone tree {tree[-1]}\n  clone big {big[-1]}\n"
                  f"  cp -a {args.cp_files} files {cpa[-1]}", flush=True)
        raw = [raw_copy(m, args.raw_objects) for _ in range(args.rounds)]
        start = [measure(m, [*CLI, "--help"])["seconds"] for _ in range(args.rounds)]
        results.update(tree=tree, big=big, cp_a=cpa, raw_copy_seconds=raw,
                       cli_start_seconds=start)
    scale_cp = args.files / args.cp_files
    scale_raw = args.files / args.raw_objects
    t_clone = median(tree, "seconds")
    t_daemon = median(tree, "daemon_seconds")
    t_cp = median(cpa, "seconds") * scale_cp
    t_raw = statistics.median(raw) * scale_raw
    print(f"\nmachine load {results['load']}; medians of {args.rounds} rounds")
    print(f"`cloudfs --help` (the command's Python start): {statistics.median(start):.2f} s")
    print(f"clone of {args.files} files: {t_clone:.2f} s (in the daemon {t_daemon:.3f} s), "
          f"{median(tree, 'swift_requests'):.0f} Swift requests, namespace "
          f"+{tree[0]['growth']}")
    print(f"clone of a {args.big_gib} GiB file: {median(big, 'seconds'):.3f} s (in the "
          f"daemon {median(big, 'daemon_seconds'):.3f} s), "
          f"{median(big, 'swift_requests'):.0f} Swift requests, +{big[0]['growth']}")
    print(f"cp -a of {args.cp_files} files: {median(cpa, 'seconds'):.2f} s, "
          f"{median(cpa, 'swift_requests'):.0f} Swift requests; scaled to {args.files}: "
          f"{t_cp:.1f} s = {t_cp / t_clone:.0f}x the clone command, "
          f"{t_cp / t_daemon:.0f}x its transaction")
    print(f"raw swiftclient COPY of {args.raw_objects} objects: {statistics.median(raw):.2f} "
          f"s; scaled to {args.files}: {t_raw:.1f} s = {t_raw / t_clone:.0f}x the clone command, "
          f"{t_raw / t_daemon:.0f}x its transaction")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
