"""Benchmark: reading a file made of many appends, before and after ccd settles it, and the
time `ccd once` takes to settle it. Own dev Swift, fresh filesystem, real mount.

    .venv/bin/python bench/settle_bench.py [--appends 1000] [--append-size 1K] [--big 256M]

The small file is `--appends` appends of `--append-size` random bytes (each: open O_APPEND,
write, close: one piece each). With `--big`, a second file is `--big` bytes written in one go
plus `--big-appends` appends of `--append-size`. Reads are cold: a fresh open (the mount drops
the page cache at open), the whole file to memory, median of `--rounds`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devmount import dev_mount  # noqa: E402
from units import parse_size  # noqa: E402

MiB = 1 << 20


def append(path: Path, n: int, size: int) -> float:
    """Seconds per append (median)."""
    times = []
    for _ in range(n):
        data = os.urandom(size)
        t = time.perf_counter()
        with open(path, "ab") as f:
            f.write(data)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def cold_read(path: Path, rounds: int) -> tuple[float, bytes]:
    """(median MiB/s, the bytes) of reading the whole file after a fresh open."""
    rates, data = [], b""
    for _ in range(rounds):
        t = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            chunks = []
            while chunk := f.read(MiB):
                chunks.append(chunk)
        dt = time.perf_counter() - t
        data = b"".join(chunks)
        rates.append(len(data) / MiB / dt)
    return statistics.median(rates), data


def ccd_once(config: Path) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "ccd.cli", "--config", str(config), "once",
                          "--settle-grace", "0", "--retire-grace", "0"],
                         capture_output=True, text=True, env={**os.environ,
                                                              "PYTHONPATH": str(ROOT)})
    dt = time.perf_counter() - t
    if out.returncode != 0:
        raise SystemExit(f"ccd once failed:\n{out.stdout}{out.stderr}")
    return dt, out.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--appends", type=int, default=1000)
    p.add_argument("--append-size", default="1K")
    p.add_argument("--big", default="0", help="also a file of this size plus small appends")
    p.add_argument("--big-appends", type=int, default=100)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    size = parse_size(args.append_size)
    big = parse_size(args.big)
    with dev_mount("sbench") as m:
        files = {"appended": m.mnt / "appended"}
        result: dict[str, object] = {
            "append_ms_median": append(files["appended"], args.appends, size) * 1000}
        if big:
            files["big"] = m.mnt / "big"
            with open(files["big"], "wb") as f:
                for _ in range(big // MiB):
                    f.write(os.urandom(MiB))
            append(files["big"], args.big_appends, size)
        before = {name: cold_read(path, args.rounds) for name, path in files.items()}
        settle_s, report = ccd_once(m.config)
        idle_s, _ = ccd_once(m.config)  # a pass with nothing to do: process start + listing
        after = {name: cold_read(path, args.rounds) for name, path in files.items()}
        for name in files:
            if before[name][1] != after[name][1]:
                raise SystemExit(f"{name}: the bytes changed across the settle")
            result[name] = {
                "bytes": len(after[name][1]),
                "read_mib_s_before": round(before[name][0], 2),
                "read_mib_s_after": round(after[name][0], 2),
                "read_ratio_after_before": round(after[name][0] / before[name][0], 1),
            }
        result["ccd_once_settle_s"] = round(settle_s, 2)
        result["ccd_once_nothing_to_do_s"] = round(idle_s, 2)
        result["ccd_report"] = report.strip().splitlines()
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
