"""Benchmark: streaming a file through seqwrite vs python-swiftclient's raw streaming upload.

Starts its own dev Swift on free ports, writes the same bytes both ways to the same Swift,
interleaved (raw, seqwrite, raw, seqwrite, ...), each trial in a fresh child process so its
peak RSS is its own, and prints medians and the ratio. Not a test: a measurement.

    .venv/bin/python bench/seqwrite_bench.py --size 1G --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from units import parse_size

CHUNK = 1 << 20


def chunks(path: str):
    with open(path, "rb", buffering=0) as f:
        while data := f.read(CHUNK):
            yield data


def child_raw(env: dict[str, str], path: str, container: str) -> float:
    import swiftclient

    conn = swiftclient.Connection(env["ST_AUTH"], env["ST_USER"], env["ST_KEY"], retries=0,
                                  timeout=60)
    conn.put_container(container)
    started = time.perf_counter()
    conn.put_object(container, f"raw-{time.time_ns()}", chunks(path))
    return time.perf_counter() - started


def child_seqwrite(env: dict[str, str], path: str, container: str, segment: int) -> float:
    import trio

    from seqwrite import Layout, SwiftAuth, SwiftStore, Writer

    async def run() -> float:
        store = SwiftStore(SwiftAuth(env["ST_AUTH"], env["ST_USER"], env["ST_KEY"]))
        await store.open()
        layout = Layout(container, 0)
        for c in layout.all_containers():
            await store.put_container(c)
        with tempfile.TemporaryDirectory(prefix="bench-spool-",
                                         dir=os.environ.get("BENCH_SPOOL_DIR")) as spool:
            started = time.perf_counter()
            async with trio.open_nursery() as nursery:
                writer = Writer(store, layout, nursery, segment_size=segment, spool_dir=spool)
                for data in chunks(path):
                    await writer.write(data)
                await writer.finish()
            return time.perf_counter() - started

    return trio.run(run)


def run_child(kind: str, env: dict[str, str], path: str, container: str, segment: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", kind, "--file", path, "--container", container,
         "--segment", str(segment)],
        env={**os.environ, **env}, capture_output=True, text=True, check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1G", help="file size (default 1G)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--segment", default="5G", help="seqwrite segment size (default 5G)")
    p.add_argument("--child", choices=("raw", "seqwrite"), help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--container", help=argparse.SUPPRESS)
    args = p.parse_args()
    segment = parse_size(args.segment)
    if args.child:
        env = dict(os.environ)
        fn = child_raw if args.child == "raw" else child_seqwrite
        extra = () if args.child == "raw" else (segment,)
        seconds = fn(env, args.file, args.container, *extra)  # type: ignore[operator]
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"seconds": seconds, "max_rss": rss}))
        return 0

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from devtools import swift as devswift

    size = parse_size(args.size)
    work = Path(tempfile.mkdtemp(prefix="cloudfs-bench-"))
    port = devswift.find_free_port_range()
    swift = devswift.start(work / "swift", port, die_with_parent=True)
    try:
        env = swift.env()
        data = work / "data"
        with open(data, "wb") as f:
            for _ in range(0, size, CHUNK):
                f.write(os.urandom(CHUNK))
        results: dict[str, list[dict]] = {"raw": [], "seqwrite": []}
        for r in range(args.rounds):
            for kind in ("raw", "seqwrite"):
                res = run_child(kind, env, str(data), f"bench{r}", segment)
                results[kind].append(res)
                print(f"round {r + 1} {kind:9s} {size / res['seconds'] / 2**20:7.1f} MiB/s "
                      f"rss {res['max_rss'] / 2**20:6.1f} MiB", flush=True)
        mib = {k: [size / x["seconds"] / 2**20 for x in v] for k, v in results.items()}
        ratios = [s / r for s, r in zip(mib["seqwrite"], mib["raw"], strict=True)]
        summary = {
            "size": size, "rounds": args.rounds, "segment": segment,
            "raw_mib_s_median": statistics.median(mib["raw"]),
            "seqwrite_mib_s_median": statistics.median(mib["seqwrite"]),
            "ratio_median": statistics.median(ratios), "ratio_min": min(ratios),
            "ratio_max": max(ratios),
            "seqwrite_max_rss_mib": max(x["max_rss"] for x in results["seqwrite"]) / 2**20,
        }
        print(json.dumps(summary, indent=2))
    finally:
        devswift.stop(work / "swift")
    return 0


if __name__ == "__main__":
    sys.exit(main())
