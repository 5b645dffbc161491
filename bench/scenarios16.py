"""The issue-16 scenarios of bench/harness.py: trees of small files (default and write-back
mode), many writers at once, a big file beside small writers, a directory of 100,000 entries.

They run after bench/scenarios.py's, on the same mount, in the order of ALL, and reuse the
measurements of the stand-alone benches (bench/parallel_bench.py's rounds, bench/
writeback_bench.py's tree and raw PUTs, bench/bigdirs.py's fills and listings). Each round runs
the baseline right before the cloudfs side (a raw python-swiftclient baseline; for the big file
and the creators the same cloudfs operation alone or by one thread; for the listing the local
disk). Their files go under MOUNT/issue16; the write-back scenario remounts with `-o
write_back` and back; the listing unmounts to fill the namespace (SQLite allows one opener).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bigdirs import fill_local, fill_namespace, timed
from parallel_bench import RAW, Profiler, big_round, cp_round, creators_round, writers_round
from scenarios import Row, human_size, make_file, measured, no_requests, ratio_row, run
from units import parse_size
from writeback_bench import make_tree, raw_puts

if TYPE_CHECKING:
    from harness import Bench

WRITERS = 8
SMALL = 64 * 1024  # bytes of each parallel writer's files
NO_PROFILE = Profiler(None, 0)

ALL = ("writers", "cp-a", "creators", "big-beside", "wb-tree", "bigdir")
DEFAULTS: dict[str, Any] = {"per_writer": 40, "tree_files": 1000, "creators_files": 2000,
                            "beside_size": "256M", "wb_files": 10000, "wb_rounds": 1,
                            "bigdir_entries": 100000}
QUICK: dict[str, Any] = {"per_writer": 10, "tree_files": 200, "creators_files": 800,
                         "beside_size": "64M", "wb_files": 300, "wb_rounds": 1,
                         "bigdir_entries": 10000}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--per-writer", type=int,
                   help=f"64 KiB files each of the {WRITERS} parallel writers writes (40)")
    p.add_argument("--tree-files", type=int,
                   help="real files in the default-mode cp -a tree (1000)")
    p.add_argument("--creators-files", type=int,
                   help="empty files made by 1 creator, then by 8 (2000)")
    p.add_argument("--beside-size", help="big file copied alone and beside small writers (256M)")
    p.add_argument("--wb-files", type=int,
                   help="real files of the write-back cp -a tree (10000; /usr/share/doc and "
                   "/usr/lib/python3* may hold fewer)")
    p.add_argument("--wb-rounds", type=int, help="rounds of the write-back tree scenario (1)")
    p.add_argument("--bigdir-entries", type=int,
                   help="entries of the big directory listed cold (100000)")


def finish_args(args: argparse.Namespace) -> None:
    args.beside_size = parse_size(args.beside_size)


def issue_dir(bench: Bench) -> Path:
    root = bench.mnt / "issue16"
    root.mkdir(exist_ok=True)
    return root


def rounds(bench: Bench, n: int, what: str, fn: Callable[[int], dict[str, float]]
           ) -> tuple[dict[str, list[float]], list[dict[str, int]]]:
    """fn(round) for each round: its values by key, and the daemon's Swift requests of each
    round (the raw baselines use connections of their own: not counted)."""
    values: dict[str, list[float]] = {}
    swift: list[dict[str, int]] = []
    for r in range(n):
        got: dict[str, float] = {}

        def one(r: int = r, got: dict[str, float] = got) -> None:
            got.update(fn(r))

        _, delta = measured(bench, one)
        for key, value in got.items():
            values.setdefault(key, []).append(value)
        swift.append(delta)
        bench.say(f"{what} round {r + 1}/{n}: " + ", ".join(
            f"{k} {v:.1f}" for k, v in got.items()))
    return values, swift


def stamp_tree(tree: Path, tag: str) -> None:
    """Append `tag` to every non-empty file of `tree`: content the store has not seen, so that
    no copy is a run of conditional PUTs answered 412 (already there) by an earlier copy."""
    data = f"\n{tag}\n".encode()
    for path in tree.rglob("*"):
        if path.is_file() and not path.is_symlink() and path.stat().st_size:
            with open(path, "ab") as f:
                f.write(data)


def tree_text(files: int, size: int) -> str:
    return (f"tree of {files} files, {size / 2**20:.1f} MiB, the first regular files of "
            "/usr/share/doc and /usr/lib/python3*, each copy's content new (a tag appended)")


def cpu_ms_row(key: str, label: str, daemon: list[float], raw: list[float]) -> Row:
    return Row(key, label, "ms", statistics.median(daemon), daemon, statistics.median(raw), raw,
               [d / r for d, r in zip(daemon, raw, strict=True) if r > 0],
               notes="CPU ms per file, daemon (utime + stime) / raw client (this process, "
                     "during its baseline); lower is better; no target")


def writers(bench: Bench, args: Any, rows: list[Row]) -> None:
    """8 threads writing 64 KiB files into the mount vs 8 threads PUTting as many objects."""
    root = issue_dir(bench)
    conns = [bench.new_conn() for _ in range(WRITERS)]
    conns[0].put_container(RAW)
    n = WRITERS * args.per_writer
    res, swift = rounds(bench, args.rounds, f"{WRITERS} writers", lambda r: writers_round(
        root, conns, bench.pid, r, args.per_writer, SMALL, NO_PROFILE))
    for conn in conns:
        conn.close()
    rows.append(ratio_row("writers", f"{WRITERS} writers, {n} files of 64 KiB", "files/s",
                          res["fs_parallel"], res["raw_parallel"], 0.90, swift))
    rows[-1].notes = f"baseline: {WRITERS} threads of swiftclient PUTs, one connection each"
    rows.append(cpu_ms_row("cpu_file_writers", "CPU ms per 64 KiB file, 8 writers: daemon vs "
                           "raw client", res["cpu_ms_fs_parallel"], res["cpu_ms_raw_parallel"]))


def cp_a(bench: Bench, args: Any, rows: list[Row]) -> None:
    """cp -a of a tree of real files (default mode) vs one sequential raw PUT per file."""
    tree = bench.work / "tree16"
    files, size = make_tree(tree, args.tree_files)
    root = issue_dir(bench)

    def one(r: int) -> dict[str, float]:
        stamp_tree(tree, f"cp-a round {r}")
        return cp_round(root, bench.conn, bench.pid, tree, files, r, NO_PROFILE)

    res, swift = rounds(bench, args.rounds, f"cp -a of {files} files", one)
    shutil.rmtree(tree)
    rows.append(ratio_row("cp_a", f"cp -a of {files} real files, default mode", "files/s",
                          res["fs_cp"], res["raw_seq"], 0.90, swift))
    rows[-1].notes = (f"{tree_text(files, size)}; baseline: one swiftclient PUT per file in "
                      "turn, bytes read beforehand")
    rows.append(cpu_ms_row("cpu_file_cp_a", "CPU ms per file, cp -a: daemon vs raw client",
                           res["cpu_ms_fs_cp"], res["cpu_ms_raw_seq"]))


def creators(bench: Bench, args: Any, rows: list[Row]) -> None:
    """Empty files made by 8 threads (each its own directory) vs by one."""
    root = issue_dir(bench)
    res, swift = rounds(bench, args.rounds, "creators", lambda r: creators_round(
        root, WRITERS, args.creators_files, r, NO_PROFILE))
    rows.append(ratio_row("creators", f"{args.creators_files} empty files, {WRITERS} creators",
                          "files/s", res["create_par"], res["create_one"], 4.00, swift))
    rows[-1].notes = "baseline: the same number of empty files made by one creator, same round"


def big_beside(bench: Bench, args: Any, rows: list[Row]) -> None:
    """cp of a big file while 8 threads write 64 KiB files beside it vs the cp alone."""
    src = bench.work / "beside.src"
    make_file(src, args.beside_size, b"beside")
    root = issue_dir(bench)
    res, swift = rounds(bench, args.rounds, "big beside small", lambda r: big_round(
        root, src, WRITERS, SMALL, r))
    src.unlink()
    rows.append(ratio_row("big_beside", f"cp {human_size(args.beside_size)} beside {WRITERS} "
                          "small writers", "MiB/s", res["big_beside"], res["big_alone"], 1.00,
                          swift))
    rows[-1].notes = (f"baseline: the same cp alone, same round; small files written beside: "
                      f"median {statistics.median(res['small_files']):.0f} per round")


def set_write_back(bench: Bench, on: bool) -> None:
    # stop_timeout: a killed harness takes its Swift with it; the daemon then stops waiting
    # for uploads after 10 s without progress (not 60; the journal keeps what is left)
    bench.mount_options = ["write_back", "stop_timeout=10"] if on else []
    bench.remount(drop_db_cache=False)


def wb_tree(bench: Bench, args: Any, rows: list[Row]) -> None:
    """cp -a of a tree of real files in write-back mode, then `cloudfs sync`, vs one sequential
    raw PUT per file; the default mode's cp -a of the same tree beside it."""
    tree = bench.work / "wbtree"
    files, size = make_tree(tree, args.wb_files)
    root = issue_dir(bench)
    raw: list[float] = []
    default: list[float] = []
    wb_cp: list[float] = []
    wb_all: list[float] = []
    syncs: list[float] = []
    sw_default: list[dict[str, int]] = []
    sw_wb: list[dict[str, int]] = []
    sync = [sys.executable, "-m", "cloudfs", "sync", str(bench.mnt)]
    for r in range(args.wb_rounds):
        stamp_tree(tree, f"default round {r}")
        raw.append(files / raw_puts(bench.conn, tree, 100 + r))
        seconds, delta = measured(bench, run("cp", "-a", tree, root / f"wbdefault{r}"))
        default.append(files / seconds)
        sw_default.append(delta)
        stamp_tree(tree, f"write-back round {r}")
        set_write_back(bench, True)  # (on an error the harness unmounts whatever is mounted)
        marks: list[float] = []

        def cp_then_sync(r: int = r, marks: list[float] = marks) -> None:
            marks.append(time.perf_counter())
            subprocess.run(["cp", "-a", str(tree), str(root / f"wb{r}")], check=True)
            marks.append(time.perf_counter())
            subprocess.run(sync, check=True, env=bench.env, stdout=subprocess.DEVNULL)
            marks.append(time.perf_counter())

        seconds, delta = measured(bench, cp_then_sync)
        set_write_back(bench, False)
        wb_cp.append(files / (marks[1] - marks[0]))
        wb_all.append(files / (marks[2] - marks[0]))
        syncs.append(marks[2] - marks[1])
        sw_wb.append(delta)
        bench.say(f"write-back tree round {r + 1}/{args.wb_rounds}: raw {raw[-1]:.1f}, default "
                  f"{default[-1]:.1f}, write-back cp {wb_cp[-1]:.1f}, with sync "
                  f"{wb_all[-1]:.1f} files/s")
    shutil.rmtree(tree)
    what = f"cp -a of {files} real files"
    rows.append(ratio_row("wb_tree", f"{what}, write-back, + cloudfs sync", "files/s", wb_all,
                          raw, 10.0, sw_wb))
    rows[-1].notes = (f"{tree_text(files, size)}; baseline: one swiftclient PUT per file in "
                      "turn, bytes read beforehand, of the default mode's content (right before "
                      "its cp); timed until `cloudfs sync` returned (sync median "
                      f"{statistics.median(syncs):.1f} s)")
    rows.append(ratio_row("wb_tree_cp", f"{what}, write-back, until cp returns", "files/s",
                          wb_cp, raw, 10.0, sw_wb))
    rows[-1].target, rows[-1].passed = "report", None
    rows.append(ratio_row("wb_tree_default", f"{what}, default mode (same tree)", "files/s",
                          default, raw, 0.90, sw_default))
    rows[-1].notes = "the cp -a scenario's target, on the write-back scenario's tree"


def bigdir(bench: Bench, args: Any, rows: list[Row]) -> None:
    """ls -l (and find) of a directory of N empty files right after a remount (cold) vs the
    same listing on the local disk (warm); filled through the namespace API while unmounted."""
    n = args.bigdir_entries
    code = bench.unmount()
    if code != 0:
        raise RuntimeError(f"mount daemon exited with {code} at unmount:\n{bench.log_tail()}")
    started = time.perf_counter()
    fill_namespace(bench.db, [n])
    fill_local(bench.work / "local16", [n])
    bench.say(f"big directory: {n} entries filled in {time.perf_counter() - started:.0f} s")
    bench.mount()
    local_dir, mount_dir = bench.work / "local16" / f"d{n}", bench.mnt / f"d{n}"
    for key, cmd in (("bigdir_ls", ["ls", "-l"]), ("bigdir_find", ["find"])):
        local: list[float] = []
        cold: list[float] = []
        swift: list[dict[str, int]] = []
        for r in range(args.rounds):
            timed(cmd, local_dir, n)  # the warm one counts, as in bench/bigdir_bench.py
            local.append(timed(cmd, local_dir, n))
            bench.remount()
            got: list[float] = []

            def listing(cmd: list[str] = cmd, got: list[float] = got) -> None:
                got.append(timed(cmd, mount_dir, n))

            _, delta = measured(bench, listing)
            cold.append(got[0])
            swift.append(delta)
            bench.say(f"{' '.join(cmd)} of {n} entries round {r + 1}/{args.rounds}: local "
                      f"{local[-1]:.3f} s, cloudfs cold {cold[-1]:.3f} s")
        value = statistics.median(cold)
        ls = key == "bigdir_ls"
        rows.append(Row(key, f"{' '.join(cmd)} of {n} entries, cold (after remount)", "s",
                        value, cold, statistics.median(local), local,
                        [c / b for c, b in zip(cold, local, strict=True)],
                        target="< 1 s, no Swift request" if ls else "report",
                        passed=value < 1.0 and no_requests(swift) if ls else None, swift=swift,
                        notes="baseline: the same listing on the local disk, warm; ratio: "
                              "cloudfs time / local time (lower is better); " + (
                                  "namespace database dropped from the page cache"
                                  if bench.backend == "sqlite" else
                                  "PostgreSQL's own cache (shared buffers) kept")))
    shutil.rmtree(bench.work / "local16")


def run_all(bench: Bench, args: Any, rows: list[Row], only: list[str] | None = None) -> None:
    """Every scenario in order, or those named in `only`."""
    wanted = set(ALL if only is None else only)
    for name, fn in (("writers", writers), ("cp-a", cp_a), ("creators", creators),
                     ("big-beside", big_beside), ("wb-tree", wb_tree), ("bigdir", bigdir)):
        if name in wanted:
            fn(bench, args, rows)
