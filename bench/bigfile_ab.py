"""Before/after on the big-file path: two cloudfs source trees mounted side by side on ONE dev
Swift, interleaved with the raw python-swiftclient baselines, round by round.

On a loaded machine two separate harness runs minutes apart see different loads; here every
round runs raw PUT, cp through tree A, cp through tree B, raw GET from 8 MiB, cold cat through A
and through B back to back (A first in even rounds, B first in odd ones), so the two trees
are compared under the same load.

    .venv/bin/python bench/bigfile_ab.py --before ../before-tree [--size 1G] [--rounds 3]

`--before` is another checkout of cloudfs (e.g. `git archive main | tar -x -C DIR`); this
file's own tree is "after". Prints, per tree, the median (min-max) of the ratios to the raw
baseline of the same round, and the daemons' CPU seconds per GiB.
"""

from __future__ import annotations

import argparse
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
sys.path.insert(0, str(ROOT / "bench"))

import swiftclient  # noqa: E402
from cputime import own_cpu, process_cpu  # noqa: E402
from devmount import wait_mounted  # noqa: E402
from scenarios import (  # noqa: E402
    RAW,
    SKIP_MD5_OFFSET,
    drop_cache,
    make_file,
    raw_download,
    raw_upload,
    restamp,
)
from units import parse_size  # noqa: E402

from devtools import swift as devswift  # noqa: E402

MiB = 1 << 20


def mount(tree: Path, work: Path, name: str,
          env: dict[str, str]) -> tuple[Path, subprocess.Popen[bytes]]:
    """mkfs and mount a filesystem (container `name`) with the code of `tree`."""
    conf, mnt = work / f"{name}.conf", work / f"{name}.mnt"
    conf.write_text(f"[swift]\nauth_url = {env['ST_AUTH']}\nuser = {env['ST_USER']}\n"
                    f"key = {env['ST_KEY']}\ncontainer = {name}\n[cloudfs]\n"
                    f"database = {work / name}.db\ncache_dir = {work / name}.cache\n")
    conf.chmod(0o600)
    mnt.mkdir()
    child_env = {**os.environ, "PYTHONPATH": str(tree)}
    cli = [sys.executable, "-m", "cloudfs"]
    subprocess.run([*cli, "mkfs", "--config", str(conf)], check=True, capture_output=True,
                   cwd=tree, env=child_env)
    daemon = subprocess.Popen([*cli, "mount", "--foreground", "--config", str(conf), str(mnt)],
                              cwd=tree, env=child_env, stdin=subprocess.DEVNULL,
                              stderr=open(work / f"{name}.log", "wb"))  # noqa: SIM115
    wait_mounted(mnt, daemon, work / f"{name}.log")
    return mnt, daemon


def timed(cmd: list[str | Path]) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


def summary(label: str, mine: list[float], raw: list[float]) -> str:
    ratios = [m / r for m, r in zip(mine, raw, strict=True)]
    return (f"{label:34s} {statistics.median(mine):7.1f}  raw {statistics.median(raw):7.1f}  "
            f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--before", required=True, type=Path, help="the other cloudfs tree")
    p.add_argument("--size", default="1G")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    size, gib = parse_size(args.size), parse_size(args.size) / (1 << 30)
    trees = {"before": args.before.resolve(), "after": ROOT}
    work = Path(tempfile.mkdtemp(prefix="cloudfs-ab-"))
    swift = devswift.start(work / "swift", devswift.find_free_port_range(), die_with_parent=True)
    daemons: dict[str, tuple[Path, subprocess.Popen[bytes]]] = {}
    rates: dict[str, list[float]] = {k: [] for k in
                                     ("up", "down8", "cp before", "cp after", "cat before",
                                      "cat after")}
    cpu: dict[str, list[float]] = {k: [] for k in
                                   ("up", "down8", "cp before", "cp after", "cat before",
                                    "cat after")}
    load0 = os.getloadavg()[0]
    started = time.time()
    try:
        env = swift.env()
        for name, tree in trees.items():
            daemons[name] = mount(tree, work, name, env)
        conn = swiftclient.Connection(env["ST_AUTH"], env["ST_USER"], env["ST_KEY"], retries=0,
                                      timeout=120)
        conn.put_container(RAW)
        src = work / "big.src"
        make_file(src, size, b"big-file")
        for r in range(args.rounds):
            restamp(src, r)
            c0 = own_cpu()
            rates["up"].append(size / raw_upload(conn, src, f"big{r}") / MiB)
            cpu["up"].append((own_cpu() - c0) / gib)
            order = list(daemons.items())[::1 if r % 2 == 0 else -1]  # neither always first
            for name, (mnt, daemon) in order:
                c0 = process_cpu(daemon.pid)
                rates[f"cp {name}"].append(size / timed(["cp", src, mnt / f"r{r}"]) / MiB)
                cpu[f"cp {name}"].append((process_cpu(daemon.pid) - c0) / gib)
            c0 = own_cpu()
            rates["down8"].append((size - SKIP_MD5_OFFSET)
                                  / raw_download(conn, f"big{r}", SKIP_MD5_OFFSET) / MiB)
            cpu["down8"].append((own_cpu() - c0) / gib)
            for name, (mnt, daemon) in order:
                drop_cache(mnt / f"r{r}")
                c0 = process_cpu(daemon.pid)
                rates[f"cat {name}"].append(size / timed(["cat", mnt / f"r{r}"]) / MiB)
                cpu[f"cat {name}"].append((process_cpu(daemon.pid) - c0) / gib)
            conn.delete_object(RAW, f"big{r}")
            print(f"round {r + 1}: " + ", ".join(f"{k} {v[-1]:.0f}" for k, v in rates.items())
                  + " MiB/s", flush=True)
    finally:
        for mnt, daemon in daemons.values():
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False, capture_output=True)
            try:
                daemon.wait(120)
            except subprocess.TimeoutExpired:
                daemon.kill()
        devswift.stop(work / "swift")
        shutil.rmtree(work, ignore_errors=True)
    print(f"\n{args.rounds} rounds of {args.size}, {time.time() - started:.0f} s, load average "
          f"{load0:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (MiB/s)")
    for name in trees:
        print(summary(f"cp, {name}", rates[f"cp {name}"], rates["up"]))
        print(summary(f"cold cat vs GET from 8 MiB, {name}", rates[f"cat {name}"],
                      rates["down8"]))
    for name in trees:
        for what, raw in (("cp", "up"), ("cat", "down8")):
            print(f"CPU s/GiB {what}, {name}: daemon {statistics.median(cpu[f'{what} {name}']):.2f}"
                  f" ({min(cpu[f'{what} {name}']):.2f}-{max(cpu[f'{what} {name}']):.2f}), "
                  f"raw client {statistics.median(cpu[raw]):.2f}")


if __name__ == "__main__":
    main()
