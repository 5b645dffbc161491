"""Benchmark: cp and cat of a big file through a cloudfs mount vs raw Swift, same run.

Starts its own dev Swift on free ports, makes a fresh filesystem and mounts it, then for each
round runs, interleaved: raw upload (python-swiftclient streaming PUT of the file), cp into
the mount (timed until close returns), raw download (streamed GET), cat from the mount (cold:
a fresh open drops the file's page cache). Prints medians, ratios (min/max) and the mount
daemon's peak RSS, then unmounts and stops everything. Not a test: a measurement.

    .venv/bin/python bench/mount_bench.py --size 1G --rounds 3
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

CHUNK = 1 << 20


def raw_client(env: dict[str, str]):
    import swiftclient

    return swiftclient.Connection(env["ST_AUTH"], env["ST_USER"], env["ST_KEY"], retries=0,
                                  timeout=120)


def raw_upload(conn, path: Path, name: str) -> float:
    def chunks():
        with open(path, "rb", buffering=0) as f:
            while data := f.read(CHUNK):
                yield data

    started = time.perf_counter()
    conn.put_object("rawbench", name, chunks())
    return time.perf_counter() - started


def raw_download(conn, name: str) -> float:
    started = time.perf_counter()
    _, body = conn.get_object("rawbench", name, resp_chunk_size=CHUNK)
    for _ in body:
        pass
    return time.perf_counter() - started


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", default="1G")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args()
    size = parse_size(args.size)
    with dev_mount("mbench") as m:
        work, mnt, env, daemon = m.work, m.mnt, m.env, m.daemon
        data = work / "data"
        with open(data, "wb") as f:
            for _ in range(0, size, CHUNK):
                f.write(os.urandom(CHUNK))
        conn = raw_client(env)
        conn.put_container("rawbench")
        rows: dict[str, list[float]] = {"raw_up": [], "cp": [], "raw_down": [], "cat": []}
        for r in range(args.rounds):
            rows["raw_up"].append(raw_upload(conn, data, f"f{r}"))
            rows["cp"].append(timed(["cp", str(data), str(mnt / f"f{r}")]))
            rows["raw_down"].append(raw_download(conn, f"f{r}"))
            rows["cat"].append(timed(["sh", "-c", f"cat '{mnt / f'f{r}'}' > /dev/null"]))
            mib = {k: size / v[-1] / 2**20 for k, v in rows.items()}
            print(f"round {r + 1}: raw up {mib['raw_up']:.0f}  cp {mib['cp']:.0f}  "
                  f"raw down {mib['raw_down']:.0f}  cat {mib['cat']:.0f} MiB/s", flush=True)
        speed = {k: [size / s / 2**20 for s in v] for k, v in rows.items()}
        up = [c / r for c, r in zip(speed["cp"], speed["raw_up"], strict=True)]
        down = [c / r for c, r in zip(speed["cat"], speed["raw_down"], strict=True)]
        result = {
            "size": size, "rounds": args.rounds,
            **{f"{k}_mib_s_median": statistics.median(v) for k, v in speed.items()},
            "cp_ratio_median": statistics.median(up), "cp_ratio_min": min(up),
            "cp_ratio_max": max(up),
            "cat_ratio_median": statistics.median(down), "cat_ratio_min": min(down),
            "cat_ratio_max": max(down),
            "daemon_peak_rss_mib": peak_rss(daemon.pid) / 2**20,
        }
        print(json.dumps(result, indent=2))
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
