"""Benchmark of `cloudfs fsck` on a clean filesystem of many small files, against raw Swift.

Starts its own dev Swift on free ports, makes a fresh filesystem (`cloudfs mkfs`, SQLite
namespace, the default 256 CAS containers) and fills it WITHOUT a mount: N files of distinct
small contents (64..1024 bytes each, one plain CAS object per file), written the way the mount
writes a small file (seqwrite's Writer: claim in the namespace, PUT, then set_content), 32 at
a time, in directories of 100 files. Then, for each round, interleaved:

- baseline: python-swiftclient lists every CAS container and HEADs every object, with as many
  threads as the filesystem's max_connections (the least any check of every object costs);
- cloudfs: `cloudfs fsck --json` as a user runs it (a process of its own), which must exit 0.

Prints the medians and the ratio cloudfs/baseline (time), and fsck's files/s. Everything is
stopped and deleted on exit (unless --keep).

    .venv/bin/python bench/fsck_bench.py [--files 10000] [--rounds 3] [--json out.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import swiftclient  # noqa: E402
import trio  # noqa: E402

from devtools import swift as devswift  # noqa: E402
from seqwrite import Layout, PublishMode, SwiftAuth, SwiftStore, Writer  # noqa: E402
from sqlfsn import ROOT_INODE, Namespace, Piece  # noqa: E402

CONTAINER = "fsckbench"
PER_DIRECTORY = 100
WRITERS = 32
CHILD_ENV = {**{k: v for k, v in os.environ.items() if not k.startswith(("OS_", "ST_"))},
             "PYTHONPATH": str(ROOT)}


async def populate(ns: Namespace, store: SwiftStore, layout: Layout, files: int) -> None:
    """`files` files of distinct small contents, as the mount writes them."""
    await store.open()
    limiter = trio.CapacityLimiter(WRITERS)
    directories: dict[int, int] = {}
    done = 0

    async def claim(digest: str, size: int, segments: object) -> PublishMode:
        assert ns.claim_content(digest, size, segments).ok  # type: ignore[arg-type]
        return PublishMode.CONDITIONAL

    async def one(i: int) -> None:
        nonlocal done
        data = f"file {i}\n".encode() + os.urandom(64 + i % 960)
        async with limiter, trio.open_nursery() as nursery:
            w = Writer(store, layout, nursery, claim=claim)
            await w.write(data)
            content = await w.finish()
        d = i // PER_DIRECTORY
        if d not in directories:
            directories[d] = ns.mkdir(ROOT_INODE, b"d%03d" % d, 0o755, 0, 0).inode
        inode = ns.create(directories[d], b"f%05d" % i, 0o644, 0, 0).inode
        ns.set_content(inode, [Piece(content.hash, 0, content.size)], content.size)
        done += 1
        if done % 1000 == 0:
            print(f"  {done} files written", file=sys.stderr, flush=True)

    try:
        async with trio.open_nursery() as nursery:
            for i in range(files):
                nursery.start_soon(one, i)
    finally:
        await store.aclose()


def baseline(env: dict[str, str], layout: Layout, threads: int) -> tuple[float, int]:
    """Seconds to list every CAS container and HEAD every object with python-swiftclient;
    the objects HEADed."""
    local = __import__("threading").local()

    def conn() -> swiftclient.Connection:
        if not hasattr(local, "c"):
            local.c = swiftclient.Connection(authurl=env["ST_AUTH"], user=env["ST_USER"],
                                             key=env["ST_KEY"], retries=0)
        return local.c

    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        listings = list(pool.map(lambda c: (c, conn().get_container(c, full_listing=True)[1]),
                                 layout.cas_containers()))
        names = [(c, o["name"]) for c, objects in listings for o in objects]
        for _ in pool.map(lambda cn: conn().head_object(*cn), names):
            pass
    return time.monotonic() - started, len(names)


def fsck(config: Path) -> tuple[float, dict[str, object]]:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "cloudfs", "fsck", "--json", "--config",
                           str(config)], capture_output=True, text=True, env=CHILD_ENV)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"fsck exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return seconds, json.loads(proc.stdout)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cloudfs-fsckbench-"))
    swift = devswift.start(work / "swift", devswift.find_free_port_range(), die_with_parent=True)
    try:
        env = swift.env()
        config = work / "cloudfs.conf"
        config.write_text(f"[swift]\nauth_url = {env['ST_AUTH']}\nuser = {env['ST_USER']}\n"
                          f"key = {env['ST_KEY']}\ncontainer = {CONTAINER}\n[cloudfs]\n"
                          f"database = {work / 'ns.db'}\ncache_dir = {work / 'cache'}\n")
        config.chmod(0o600)
        subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config", str(config)],
                       check=True, capture_output=True, env=CHILD_ENV)
        layout = Layout(CONTAINER, 2)
        store = SwiftStore(SwiftAuth(env["ST_AUTH"], env["ST_USER"], env["ST_KEY"]),
                           max_connections=WRITERS)
        started = time.monotonic()
        with Namespace.open(str(work / "ns.db")) as ns:
            trio.run(populate, ns, store, layout, args.files)
        print(f"populated {args.files} files in {time.monotonic() - started:.0f} s",
              file=sys.stderr)
        threads = 16  # the default [swift] max_connections, which fsck uses
        rows: list[dict[str, object]] = []
        for r in range(args.rounds):
            raw_s, heads = baseline(env, layout, threads)
            fsck_s, doc = fsck(config)
            checked = doc["checked"]
            assert isinstance(checked, dict)
            row = {"round": r + 1, "baseline_s": round(raw_s, 2), "baseline_heads": heads,
                   "fsck_s": round(fsck_s, 2), "fsck_files": checked["files"],
                   "fsck_files_per_s": checked["files_per_second"],
                   "fsck_requests": checked["requests"], "ratio": round(fsck_s / raw_s, 2)}
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        med = {k: statistics.median(float(r[k]) for r in rows)  # type: ignore[arg-type]
               for k in ("baseline_s", "fsck_s", "fsck_files_per_s", "ratio")}
        print(f"fsck of a clean filesystem of {args.files} files (distinct small contents), "
              f"{args.rounds} rounds, medians:")
        print(f"  baseline (swiftclient: list + HEAD every object, {threads} threads): "
              f"{med['baseline_s']:.1f} s, {args.files / med['baseline_s']:.0f} objects/s")
        print(f"  cloudfs fsck (whole command, exit 0):  {med['fsck_s']:.1f} s, "
              f"{med['fsck_files_per_s']:.0f} files/s as fsck reports it")
        print(f"  ratio fsck/baseline (time): {med['ratio']:.2f} "
              f"(min {min(float(r['ratio']) for r in rows):.2f}, "  # type: ignore[arg-type]
              f"max {max(float(r['ratio']) for r in rows):.2f})")  # type: ignore[arg-type]
        if args.json:
            args.json.write_text(json.dumps({"files": args.files, "rounds": rows,
                                             "medians": med}, indent=2))
        return 0
    finally:
        devswift.stop(work / "swift")
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
