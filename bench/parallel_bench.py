"""Benchmark: many writers at once and the metadata around each file (issue 16, part 2).

Own dev Swift, fresh filesystem, real mount (the default mode: close returns once the content is
in Swift). Each round, interleaved with its raw python-swiftclient baseline on the same Swift:

- parallel: --writers threads each write --per-writer files of --size bytes (open, write,
  close) into the mount; baseline: as many threads each PUTting the same number of objects of
  the same size, one connection each. Target >= 0.9x.
- cp -a: `cp -a` of a tree of real-world small files (bench/writeback_bench.py's tree: the first
  --tree-files regular files of /usr/share/doc and /usr/lib/python3*); baseline: one sequential
  PUT per file. Target >= 0.9x.
- creators: --empty empty files created (os.open O_CREAT|O_EXCL + close) by one thread, then by
  --writers threads (each its own directory); target: the parallel rate >= 4x one creator's.
- CPU per file: the mount daemon's CPU ms per file (utime + stime) against the raw client's
  (this process's CPU during its baseline, for cp -a including the reading of the files),
  reported (the ratio that decides the speed when the client machine is the limit).
- big beside small: `cp` of a --big file alone, then again while --writers threads write small
  files beside it; target: the second rate >= the first (reported as a ratio).

    .venv/bin/python bench/parallel_bench.py [--rounds 3] [--json out.json] [--only parallel,cp]

``--profile DIR`` runs `py-spy record` on the mount daemon during each cloudfs phase of the
first round (py-spy must be installed), writing DIR/<phase>.txt (collapsed stacks of on-CPU
samples; with PYSPY_IDLE=1 in the environment, idle samples too).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from cputime import own_cpu, process_cpu  # noqa: E402
from devmount import dev_mount  # noqa: E402
from mount_bench import raw_client  # noqa: E402
from writeback_bench import make_tree, raw_puts  # noqa: E402

RAW = "rawbench"


def parallel(n: int, fn: Callable[[int], None]) -> float:
    """Seconds for fn(0..n-1), each in its own thread, all started together."""
    start = threading.Barrier(n + 1)

    def one(i: int) -> None:
        start.wait()
        fn(i)

    with ThreadPoolExecutor(n) as pool:
        futures = [pool.submit(one, i) for i in range(n)]
        start.wait()
        began = time.perf_counter()
        for f in futures:
            f.result()
    return time.perf_counter() - began


class Profiler:
    """py-spy on the daemon during one phase (no-op without --profile)."""

    def __init__(self, out: Path | None, pid: int) -> None:
        self.out, self.pid, self.proc = out, pid, None

    def start(self, phase: str) -> None:
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            self.proc = subprocess.Popen(
                [str(Path(sys.executable).parent / "py-spy"), "record", "-p", str(self.pid),
                 "--threads", *(["--idle"] if os.environ.get("PYSPY_IDLE") else []),
                 "-f", "raw", "-r", "200", "-o",
                 str(self.out / f"{phase}.txt")], stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL)
            time.sleep(1.0)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(2)
            self.proc.wait(60)
            self.proc = None


# -- one round of each measurement (also the harness's, bench/scenarios16.py) ------------------


def writers_round(root: Path, conns: list, pid: int, r: int, per_writer: int, size: int,
                  prof: Profiler) -> dict[str, float]:
    """len(conns) threads PUT per_writer objects of `size` bytes each (one connection each),
    then as many threads write as many files into root/par<r>: files/s and CPU ms per file of
    the raw client (this process) and of the mount daemon `pid`."""
    w = len(conns)
    blobs = [[os.urandom(size) for _ in range(per_writer)] for _ in range(w)]

    def raw_writer(i: int) -> None:
        for j, data in enumerate(blobs[i]):
            conns[i].put_object(RAW, f"p{r}/{i}/{j}", data)

    d = root / f"par{r}"
    d.mkdir()

    def fs_writer(i: int) -> None:
        for j, data in enumerate(blobs[i]):
            with open(d / f"{i}-{j}", "wb") as f:
                f.write(data[:-1] + b"x")  # new content: no dedup with the raw run

    n = w * per_writer
    out: dict[str, float] = {}
    cpu = own_cpu()
    out["raw_parallel"] = n / parallel(w, raw_writer)
    out["cpu_ms_raw_parallel"] = (own_cpu() - cpu) * 1000 / n
    prof.start("parallel")
    cpu = process_cpu(pid)
    out["fs_parallel"] = n / parallel(w, fs_writer)
    out["cpu_ms_fs_parallel"] = (process_cpu(pid) - cpu) * 1000 / n
    prof.stop()
    return out


def cp_round(root: Path, conn, pid: int, tree: Path, files: int, r: int,
             prof: Profiler) -> dict[str, float]:
    """Raw sequential PUTs of `tree`'s files, then `cp -a tree root/cp<r>`: files/s and CPU ms
    per file (the raw client's including the reading of the files)."""
    out: dict[str, float] = {}
    cpu = own_cpu()
    out["raw_seq"] = files / raw_puts(conn, tree, r)
    out["cpu_ms_raw_seq"] = (own_cpu() - cpu) * 1000 / files
    prof.start("cp")
    cpu = process_cpu(pid)
    began = time.perf_counter()
    subprocess.run(["cp", "-a", str(tree), str(root / f"cp{r}")], check=True)
    out["fs_cp"] = files / (time.perf_counter() - began)
    out["cpu_ms_fs_cp"] = (process_cpu(pid) - cpu) * 1000 / files
    prof.stop()
    return out


def creators_round(root: Path, writers: int, empty: int, r: int,
                   prof: Profiler) -> dict[str, float]:
    """`empty` empty files created by one thread, then by `writers` threads (each its own
    directory under root): files/s of each."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL

    def creator(i: int, k: int = 1) -> None:
        d = root / f"empty{r}-{k}-{i}"
        d.mkdir()
        for j in range(empty // k):
            os.close(os.open(d / str(j), flags, 0o644))

    one = empty / parallel(1, creator)
    prof.start("creators")
    many = empty / parallel(writers, lambda i: creator(i, writers))
    prof.stop()
    return {"create_one": one, "create_par": many}


def big_round(root: Path, big_src: Path, writers: int, size: int, r: int) -> dict[str, float]:
    """cp of big_src into root alone, then again (new content) while `writers` threads write
    files of `size` bytes beside it: MiB/s of each, and how many small files were written."""
    mib = big_src.stat().st_size / 2**20
    began = time.perf_counter()
    shutil.copyfile(big_src, root / f"big{r}a")
    out = {"big_alone": mib / (time.perf_counter() - began)}
    stop = threading.Event()
    small_done = [0]

    def small_beside(i: int) -> None:
        d = root / f"beside{r}-{i}"
        d.mkdir()
        j = 0
        while not stop.is_set():
            with open(d / str(j), "wb") as f:
                f.write(os.urandom(size))
            j += 1
        small_done[0] += j

    with ThreadPoolExecutor(writers) as pool:
        futures = [pool.submit(small_beside, i) for i in range(writers)]
        time.sleep(0.5)
        with open(big_src, "r+b") as f:  # new content: no dedup with the copy alone
            f.write(os.urandom(16))
        began = time.perf_counter()
        try:
            shutil.copyfile(big_src, root / f"big{r}b")
        finally:
            stop.set()
        out["big_beside"] = mib / (time.perf_counter() - began)
        for future in futures:
            future.result()
    out["small_files"] = small_done[0]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--writers", type=int, default=8)
    p.add_argument("--per-writer", type=int, default=40)
    p.add_argument("--size", type=int, default=64 * 1024)
    p.add_argument("--tree-files", type=int, default=500)
    p.add_argument("--empty", type=int, default=2000)
    p.add_argument("--big", type=int, default=256 * 2**20)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--only", default="parallel,cp,creators,big")
    p.add_argument("--profile", type=Path)
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    only = set(args.only.split(","))
    w = args.writers
    res: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        res.setdefault(key, []).append(value)

    with dev_mount("parbench") as m:
        prof = Profiler(args.profile, m.daemon.pid)
        conns = [raw_client(m.env) for _ in range(w)]
        conns[0].put_container(RAW)
        tree = m.work / "src"
        if "cp" in only:
            files, size = make_tree(tree, args.tree_files)
            print(f"tree: {files} files, {size / 2**20:.1f} MiB", flush=True)
        big_src = m.work / "big"
        if "big" in only:
            with open(big_src, "wb") as f:
                for _ in range(args.big // 2**20):
                    f.write(os.urandom(2**20))
        for r in range(args.rounds):
            ph = prof if r == 0 else Profiler(None, 0)
            if "parallel" in only:
                for key, value in writers_round(m.mnt, conns, m.daemon.pid, r,
                                                args.per_writer, args.size, ph).items():
                    add(key, value)
                print(f"round {r}: {w} writers of {args.size} B: raw "
                      f"{res['raw_parallel'][-1]:.0f}, cloudfs {res['fs_parallel'][-1]:.0f}"
                      " files/s", flush=True)
            if "cp" in only:
                for key, value in cp_round(m.mnt, conns[0], m.daemon.pid, tree, files, r,
                                           ph).items():
                    add(key, value)
                print(f"round {r}: cp -a of {files} files: raw {res['raw_seq'][-1]:.1f}, "
                      f"cloudfs {res['fs_cp'][-1]:.1f} files/s", flush=True)
            if "creators" in only:
                for key, value in creators_round(m.mnt, w, args.empty, r, ph).items():
                    add(key, value)
                print(f"round {r}: empty files: one creator {res['create_one'][-1]:.0f}/s, "
                      f"{w} creators {res['create_par'][-1]:.0f}/s", flush=True)
            if "big" in only:
                got = big_round(m.mnt, big_src, w, args.size, r)
                add("big_alone", got["big_alone"])
                add("big_beside", got["big_beside"])
                print(f"round {r}: cp {args.big / 2**20:.0f} MiB alone "
                      f"{res['big_alone'][-1]:.0f} MiB/s, beside {w} small writers "
                      f"{res['big_beside'][-1]:.0f} MiB/s ({got['small_files']:.0f} small "
                      "files meanwhile)", flush=True)
    load = os.getloadavg()
    summary: dict[str, object] = {"args": vars(args) | {"profile": str(args.profile),
                                                        "json": str(args.json)},
                                  "load_after": load, "samples": res}

    def ratio(key: str, num: str, den: str, target: float) -> None:
        ratios = [a / b for a, b in zip(res[num], res[den], strict=True)]
        summary[key] = {"median": statistics.median(ratios), "min": min(ratios),
                        "max": max(ratios), "target": target,
                        num: statistics.median(res[num]), den: statistics.median(res[den])}
        print(f"{key}: {statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f}), "
              f"{num} {statistics.median(res[num]):.1f} vs {den} "
              f"{statistics.median(res[den]):.1f}; target {target}x")

    if "parallel" in only:
        ratio("parallel_writers_vs_raw", "fs_parallel", "raw_parallel", 0.9)
        ratio("cpu_per_file_parallel_daemon_vs_raw_client", "cpu_ms_fs_parallel",
              "cpu_ms_raw_parallel", 0)
    if "cp" in only:
        ratio("cp_a_vs_raw_sequential", "fs_cp", "raw_seq", 0.9)
        ratio("cpu_per_file_cp_daemon_vs_raw_client", "cpu_ms_fs_cp", "cpu_ms_raw_seq", 0)
    if "creators" in only:
        ratio("parallel_creators_vs_one", "create_par", "create_one", 4.0)
    if "big" in only:
        ratio("big_beside_small_vs_alone", "big_beside", "big_alone", 1.0)
    print(f"load average after: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
