"""Benchmark: `cp -a` of a tree of small files with real-world sizes into cloudfs, write-back
mode against the default mode, against raw sequential python-swiftclient PUTs of the same
files in the same run (issue 16, part 1: write-back `cp -a` at least 10x the raw sequential
PUT rate, with everything in Swift when `cloudfs sync` returns).

The tree is a copy of the first --files regular files of /usr/share/doc and /usr/lib/python3*
(their real sizes and directory shapes). Own dev Swift, fresh filesystem, real mount; each
round copies the tree to a new directory in each mode, and PUTs every file once raw (one
request per file, its bytes in memory: the fastest a sequential client can go).

    .venv/bin/python bench/writeback_bench.py [--files 10000] [--rounds 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cputime import own_cpu, process_cpu  # noqa: E402
from devmount import dev_mount, wait_mounted  # noqa: E402
from mount_bench import raw_client  # noqa: E402

SOURCES = [Path("/usr/share/doc"), *sorted(Path("/usr/lib").glob("python3*"))]
CLI = [sys.executable, "-m", "cloudfs"]


def make_tree(dest: Path, count: int) -> tuple[int, int]:
    """Copy the first `count` regular files of SOURCES under `dest`; (files, bytes)."""
    files = size = 0
    for source in SOURCES:
        for dirpath, dirnames, filenames in os.walk(source):
            dirnames.sort()
            for name in sorted(filenames):
                src = Path(dirpath) / name
                if files >= count:
                    return files, size
                if src.is_symlink() or not src.is_file():
                    continue
                target = dest / source.name / src.relative_to(source)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copy2(src, target)
                except OSError:
                    continue
                files += 1
                size += target.stat().st_size
    return files, size


def raw_puts(conn, tree: Path, round_no: int) -> float:
    """Seconds for one sequential PUT per file of `tree` (bytes read beforehand)."""
    conn.put_container("rawbench")
    paths = sorted(p for p in tree.rglob("*") if p.is_file())
    payloads = [(f"r{round_no}/{p.relative_to(tree)}", p.read_bytes()) for p in paths]
    started = time.perf_counter()
    for name, data in payloads:
        conn.put_object("rawbench", name, data)
    return time.perf_counter() - started


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - started


def mount(config: Path, mnt: Path, log: Path) -> subprocess.Popen:
    daemon = subprocess.Popen([*CLI, "mount", "--foreground", "--config", str(config), str(mnt)],
                              stderr=open(log, "ab"))  # noqa: SIM115
    wait_mounted(mnt, daemon, log)
    return daemon


def unmount(daemon: subprocess.Popen, mnt: Path) -> None:
    subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    daemon.wait(600)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=10_000)
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    with dev_mount("wbbench") as m:
        tree = m.work / "src"
        files, size = make_tree(tree, args.files)
        sizes = [p.stat().st_size for p in tree.rglob("*") if p.is_file()]
        print(f"tree: {files} files, {size / 2**20:.1f} MiB (median {statistics.median(sizes)} B)",
              flush=True)
        conn = raw_client(m.env)
        results: dict[str, list[float]] = {"raw": [], "default": [], "wb_cp": [], "wb_sync": []}
        # CPU ms per file: the raw client's (this process) and the daemon's (utime + stime)
        cpu: dict[str, list[float]] = {"raw": [], "default": [], "wb": []}
        # the default mode: the mount dev_mount started
        for r in range(args.rounds):
            began = own_cpu()
            results["raw"].append(raw_puts(conn, tree, 2 * r))
            cpu["raw"].append((own_cpu() - began) * 1000 / files)
            began = process_cpu(m.daemon.pid)
            results["default"].append(timed(["cp", "-a", str(tree), str(m.mnt / f"default{r}")]))
            cpu["default"].append((process_cpu(m.daemon.pid) - began) * 1000 / files)
            print(f"round {r}: raw {results['raw'][-1]:.1f} s, default cp "
                  f"{results['default'][-1]:.1f} s", flush=True)
        unmount(m.daemon, m.mnt)
        with open(m.config, "a") as f:
            f.write("write_back = true\n")  # the [cloudfs] section is the file's last
        daemon = mount(m.config, m.mnt, m.work / "mount.log")
        try:
            for r in range(args.rounds):
                began = own_cpu()
                results["raw"].append(raw_puts(conn, tree, 2 * r + 1))
                cpu["raw"].append((own_cpu() - began) * 1000 / files)
                began = process_cpu(daemon.pid)
                results["wb_cp"].append(timed(["cp", "-a", str(tree), str(m.mnt / f"wb{r}")]))
                results["wb_sync"].append(timed([*CLI, "sync", str(m.mnt)]))
                cpu["wb"].append((process_cpu(daemon.pid) - began) * 1000 / files)
                print(f"round {r}: raw {results['raw'][-1]:.1f} s, write-back cp "
                      f"{results['wb_cp'][-1]:.1f} s, then sync "
                      f"{results['wb_sync'][-1]:.1f} s", flush=True)
        finally:
            unmount(daemon, m.mnt)
    raw = statistics.median(results["raw"])
    rate = {k: files / statistics.median(v) for k, v in results.items() if v}
    wb_total = statistics.median(c + s for c, s in zip(results["wb_cp"], results["wb_sync"],
                                                       strict=True))
    summary = {
        "files": files, "bytes": size, "rounds": args.rounds, "seconds": results,
        "raw_sequential_put_files_per_s": files / raw,
        "default_cp_files_per_s": rate["default"],
        "write_back_cp_files_per_s": rate["wb_cp"],
        "write_back_cp_plus_sync_files_per_s": files / wb_total,
        "ratio_default_cp_vs_raw": rate["default"] / (files / raw),
        "ratio_write_back_cp_vs_raw": rate["wb_cp"] / (files / raw),
        "ratio_write_back_cp_plus_sync_vs_raw": (files / wb_total) / (files / raw),
        "cpu_ms_per_file": cpu,  # raw client; daemon in cp -a (default); cp -a + sync (wb)
        "load_after": os.getloadavg(),
    }
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
