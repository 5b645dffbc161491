"""Benchmark: the cost of an append to a 1 KiB file vs to a 1 GiB file, and random-write
throughput through the write cache. Own dev Swift, fresh filesystem, real mount.

    .venv/bin/python bench/append_bench.py [--big 1G] [--appends 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devmount import dev_mount  # noqa: E402
from units import parse_size  # noqa: E402

MiB = 1 << 20


def append_ms(path: Path, n: int) -> list[float]:
    out = []
    for i in range(n):
        t = time.perf_counter()
        with open(path, "ab") as f:
            f.write(f"appended line {i}\n".encode())
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--big", default="1G")
    p.add_argument("--appends", type=int, default=5)
    p.add_argument("--random-mib", type=int, default=64, help="random-write volume")
    args = p.parse_args()
    with dev_mount("abench") as m:
        mnt = m.mnt
        small, big = mnt / "small", mnt / "big"
        small.write_bytes(os.urandom(1024))
        with open(big, "wb") as f:
            for _ in range(parse_size(args.big) // MiB):
                f.write(os.urandom(MiB))
        small_ms = append_ms(small, args.appends)
        big_ms = append_ms(big, args.appends)
        # random writes: 64 KiB writes at random offsets of a 256 MiB file, then close
        target = mnt / "random"
        with open(target, "wb") as f:
            f.truncate(256 * MiB)
        rng = os.urandom(args.random_mib * 16 * 4)
        t = time.perf_counter()
        fd = os.open(target, os.O_RDWR)
        for i in range(args.random_mib * 16):
            off = int.from_bytes(rng[4 * i:4 * i + 4], "little") % (256 * MiB - 65536)
            os.pwrite(fd, os.urandom(65536), off)
        written = time.perf_counter() - t
        os.close(fd)
        total = time.perf_counter() - t
        result = {
            "append_1KiB_file_ms_median": statistics.median(small_ms),
            f"append_{args.big}_file_ms_median": statistics.median(big_ms),
            "append_ms_all": {"small": small_ms, "big": big_ms},
            "random_write_mib_s_until_close": args.random_mib / total,
            "random_write_mib_s_writes_only": args.random_mib / written,
        }
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
