"""Benchmark: metadata rates through real mounts, SQLite vs PostgreSQL, one and two mounts.

Starts its own dev Swift and dev PostgreSQL (fsync on, as a user's), makes two filesystems
(one on SQLite, one on PostgreSQL over its Unix socket) and mounts the SQLite one once and the
PostgreSQL one twice (two daemons standing for two hosts). Per round, in this order:
  raw        python-swiftclient PUT, HEAD, DELETE of as many empty objects (the baseline);
  sqlite     one mount: create (open O_CREAT + close), stat, unlink of --files files;
  pg         the same on one PostgreSQL mount, the second mount idle (it hears the changes);
  pg-2       the same from both PostgreSQL mounts at once, each in its own directory
             (aggregate rate: twice the files in the wall time of both).
Prints medians over rounds and ratios (median, min-max over rounds). Not a test.

    .venv/bin/python bench/multi_mount_bench.py --files 500 --rounds 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devmount import wait_mounted  # noqa: E402

from devtools import postgres as devpostgres  # noqa: E402
from devtools import swift as devswift  # noqa: E402

PHASES = ("create", "stat", "unlink")


def meta_round(dirs: list[Path], files: int) -> dict[str, float]:
    """Rates (files per second, all dirs together) of the three phases, each dir by its own
    thread, the phases one after another."""
    rates = {}
    for phase in PHASES:
        def work(d: Path, phase: str = phase) -> None:
            for i in range(files):
                p = d / f"f{i}"
                if phase == "create":
                    os.close(os.open(p, os.O_CREAT | os.O_WRONLY, 0o644))
                elif phase == "stat":
                    os.stat(p)
                else:
                    os.unlink(p)

        threads = [threading.Thread(target=work, args=(d,)) for d in dirs]
        started = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rates[phase] = files * len(dirs) / (time.perf_counter() - started)
    return rates


def raw_round(env: dict[str, str], files: int, tag: str) -> dict[str, float]:
    import swiftclient

    conn = swiftclient.Connection(env["ST_AUTH"], env["ST_USER"], env["ST_KEY"], retries=0)
    conn.put_container("rawmeta")
    rates = {}
    calls = {"create": lambda n: conn.put_object("rawmeta", n, b""),
             "stat": lambda n: conn.head_object("rawmeta", n),
             "unlink": lambda n: conn.delete_object("rawmeta", n)}
    for phase in PHASES:
        started = time.perf_counter()
        for i in range(files):
            calls[phase](f"{tag}-{i}")
        rates[phase] = files / (time.perf_counter() - started)
    conn.close()
    return rates


def mount(work: Path, name: str, conf: Path) -> tuple[Path, subprocess.Popen]:
    mnt = work / f"mnt-{name}"
    mnt.mkdir()
    daemon = subprocess.Popen([sys.executable, "-m", "cloudfs", "mount", "--foreground",
                               "--config", str(conf), str(mnt)],
                              stderr=open(work / f"{name}.log", "wb"))  # noqa: SIM115
    wait_mounted(mnt, daemon, work / f"{name}.log")
    return mnt, daemon


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--files", type=int, default=500, help="files per phase per mount")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudfs-mmbench-", dir="/var/tmp"))
    work.chmod(0o755)
    load_before = os.getloadavg()
    started = time.time()
    swift = devswift.start(work / "swift", devswift.find_free_port_range(),
                           die_with_parent=True)
    pg = devpostgres.start_throwaway(fast=False, parent=work)
    daemons: list[tuple[Path, subprocess.Popen]] = []
    samples: dict[str, list[dict[str, float]]] = {k: [] for k in ("raw", "sqlite", "pg",
                                                                    "pg-2")}
    try:
        env = swift.env()
        confs = {}
        for name, database in (("sqlite", str(work / "ns.db")),
                               ("pg", devpostgres.create_database(pg, "mm", socket=True))):
            for host in ("a", "b"):
                conf = work / f"{name}-{host}.conf"
                conf.write_text(
                    f"[swift]\nauth_url = {env['ST_AUTH']}\nuser = {env['ST_USER']}\n"
                    f"key = {env['ST_KEY']}\ncontainer = mm{name}\n[cloudfs]\n"
                    f"database = {database}\ncache_dir = {work / f'cache-{name}-{host}'}\n")
                conf.chmod(0o600)
                confs[name, host] = conf
            subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config",
                            str(confs[name, "a"])], check=True, capture_output=True)
        sq = mount(work, "sqlite-a", confs["sqlite", "a"])
        pa = mount(work, "pg-a", confs["pg", "a"])
        pb = mount(work, "pg-b", confs["pg", "b"])
        daemons += [sq, pa, pb]
        for r in range(args.rounds):
            samples["raw"].append(raw_round(env, args.files, f"r{r}"))
            for name, dirs in (("sqlite", [sq[0] / f"s{r}"]), ("pg", [pa[0] / f"p{r}"]),
                               ("pg-2", [pa[0] / f"a{r}", pb[0] / f"b{r}"])):
                for d in dirs:
                    d.mkdir()
                samples[name].append(meta_round(dirs, args.files))
            print(f"round {r + 1}: " + "; ".join(
                f"{k} " + ", ".join(f"{ph} {v[-1][ph]:,.0f}/s" for ph in PHASES)
                for k, v in samples.items()), flush=True)
    finally:
        for mnt, daemon in daemons:
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
            try:
                daemon.wait(60)
            except subprocess.TimeoutExpired:
                daemon.kill()
                subprocess.run(["fusermount3", "-u", "-z", str(mnt)], check=False)
        devpostgres.remove(pg.dir)
        devswift.stop(work / "swift")
        shutil.rmtree(work, ignore_errors=True)

    def med(name: str, phase: str) -> float:
        return statistics.median(s[phase] for s in samples[name])

    def ratio(num: str, den: str, phase: str) -> str:
        rs = [b[phase] / a[phase] for a, b in zip(samples[den], samples[num], strict=True)]
        return f"{statistics.median(rs):.2f} ({min(rs):.2f}-{max(rs):.2f})"

    print(f"\n{args.rounds} rounds, {args.files} files per phase and mount; load average "
          f"{load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}, {time.time() - started:.0f} s")
    print("| operation | raw Swift /s | sqlite /s | pg /s | pg-2 (both mounts) /s | "
          "sqlite/raw | pg/sqlite | pg-2/pg |")
    print("|---|---|---|---|---|---|---|---|")
    for ph in PHASES:
        print(f"| {ph} | {med('raw', ph):,.0f} | {med('sqlite', ph):,.0f} | "
              f"{med('pg', ph):,.0f} | {med('pg-2', ph):,.0f} | {ratio('sqlite', 'raw', ph)} | "
              f"{ratio('pg', 'sqlite', ph)} | {ratio('pg-2', 'pg', ph)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
