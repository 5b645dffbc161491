"""The scenarios of bench/harness.py, in the order they run, and the table row they produce.

Each scenario appends `Row`s. Order matters: the peak-RSS scenario runs first on the fresh
mount (VmHWM is a peak over the daemon's life); the ls -l scenario runs last (it remounts).
Swift requests are the difference of the daemon's counters around the cloudfs operation only
(never around a baseline, which uses its own connection).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cputime import own_cpu, process_cpu

from wiring.control import ControlError

if TYPE_CHECKING:
    from harness import Bench

MiB = 1 << 20
CHUNK = 1 << 20
RANDOM_BLOCK = 64 * MiB  # source files repeat one random block, each MiB stamped unique
SMALL_SIZE = 4096
RSS_LIMIT = 150 * MiB
RAW = "rawbench"  # scratch container of the raw baselines


@dataclass
class Row:
    """One line of the table.

    value/baseline are medians (in `unit`); ratios are per-round cloudfs/baseline; swift is the
    per-round difference of the daemon's request counters (None: not measurable, e.g. ccd runs
    in a process of its own)."""

    key: str
    label: str
    unit: str
    value: float
    samples: list[float] = field(default_factory=list)
    baseline: float | None = None
    baseline_samples: list[float] = field(default_factory=list)
    ratios: list[float] = field(default_factory=list)
    target: str = "report"
    passed: bool | None = None
    swift: list[dict[str, int]] | None = None
    notes: str = ""

    @property
    def ratio_median(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None


def human_size(n: int) -> str:
    for unit, div in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div} {unit}"
    return f"{n} B"


def diff_requests(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {m: after.get(m, 0) - before.get(m, 0) for m in sorted(set(before) | set(after))
            if after.get(m, 0) != before.get(m, 0)}


def measured(bench: Bench, fn: Callable[[], Any]) -> tuple[float, dict[str, int]]:
    """(seconds of fn, Swift requests the daemon made meanwhile; {"unmeasured": 1} when its
    control channel did not answer: on this shared machine another daemon stopping may
    unlink a socket of the same device number)."""
    try:
        before: dict[str, int] | None = bench.requests()
    except (OSError, ControlError) as exc:
        bench.say(f"no request counters: {exc}")
        before = None
    started = time.perf_counter()
    fn()
    seconds = time.perf_counter() - started
    try:
        after = bench.requests()
    except (OSError, ControlError) as exc:
        bench.say(f"no request counters: {exc}")
        before, after = None, {}
    return seconds, {"unmeasured": 1} if before is None else diff_requests(before, after)


def run(*cmd: str | Path) -> Callable[[], None]:
    def call() -> None:
        subprocess.run([str(c) for c in cmd], check=True, stdout=subprocess.DEVNULL)

    return call


def no_requests(deltas: list[dict[str, int]]) -> bool:
    return not any(deltas)


def ratio_row(key: str, label: str, unit: str, cloudfs: list[float], baseline: list[float],
              minimum: float, swift: list[dict[str, int]]) -> Row:
    ratios = [c / b for c, b in zip(cloudfs, baseline, strict=True)]
    median = statistics.median(ratios)
    return Row(key, label, unit, statistics.median(cloudfs), cloudfs,
               statistics.median(baseline), baseline, ratios, f">= {minimum:.2f}x",
               median >= minimum, swift)


def cpu_row(key: str, label: str, cloudfs: list[float], baseline: list[float]) -> Row:
    """CPU seconds per GiB of the mount daemon (utime + stime, all threads) against the raw
    python-swiftclient's (this process's CPU time during the raw transfer); no target."""
    ratios = [c / b for c, b in zip(cloudfs, baseline, strict=True) if b > 0]
    return Row(key, label, "s/GiB", statistics.median(cloudfs), cloudfs,
               statistics.median(baseline), baseline, ratios,
               notes="ratio: daemon CPU / raw client CPU (lower is better); the cp and cat "
                     "processes' own CPU (their side of the FUSE copies) is not counted")


# -- local data --------------------------------------------------------------------------------


def make_file(path: Path, size: int, tag: bytes) -> None:
    """`size` bytes: one random block repeated, every MiB stamped with `tag` and its offset (so
    no two MiB are equal, within a file or across files), flushed to disk."""
    block = os.urandom(min(size, RANDOM_BLOCK))
    with open(path, "wb", buffering=0) as f:
        for off in range(0, size, CHUNK):
            n = min(CHUNK, size - off)
            start = off % len(block)
            stamp = (tag + off.to_bytes(8, "big"))[:n]
            f.write(stamp + block[start + len(stamp):start + n])
        os.fsync(f.fileno())


def restamp(path: Path, round_no: int) -> None:
    """Make the file's content (and blake3) different for each round: rewrite its first bytes."""
    with open(path, "r+b", buffering=0) as f:
        f.write(f"round{round_no:06d}".encode())


SKIP_MD5_OFFSET = 8 * MiB


def drop_cache(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def raw_upload(conn: Any, path: Path, name: str) -> float:
    def chunks():
        with open(path, "rb", buffering=0) as f:
            while data := f.read(CHUNK):
                yield data

    started = time.perf_counter()
    conn.put_object(RAW, name, chunks())
    return time.perf_counter() - started


def raw_download(conn: Any, name: str, offset: int = 0) -> float:
    """Seconds to stream the object from `offset` on. Swift's object server computes the md5 of
    any read that starts at byte 0 (to quarantine bit rot), so a GET from 0 costs it more CPU
    than one that starts further in."""
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    started = time.perf_counter()
    _, body = conn.get_object(RAW, name, resp_chunk_size=CHUNK, headers=headers)
    for _ in body:
        pass
    return time.perf_counter() - started


# -- scenarios ---------------------------------------------------------------------------------


def rss_big_cp(bench: Bench, args: Any, rows: list[Row]) -> None:
    """cp of a --size-rss file on the fresh mount: the daemon's peak RSS (VmHWM)."""
    size = args.size_rss
    src = bench.work / "rss.src"
    bench.say(f"peak RSS: writing a {human_size(size)} source file")
    make_file(src, size, b"rss-file")
    (bench.mnt / "rss").mkdir()
    before = bench_hwm(bench)
    bench.say(f"peak RSS: cp {human_size(size)} into the mount (VmHWM so far "
              f"{before / MiB:.0f} MiB)")
    seconds, swift = measured(bench, run("cp", src, bench.mnt / "rss" / "big"))
    peak = bench_hwm(bench)
    rows.append(Row("rss_cp_big", f"cp {human_size(size)}: daemon peak RSS", "MiB", peak / MiB,
                    [peak / MiB], target=f"< {RSS_LIMIT // MiB} MiB", passed=peak < RSS_LIMIT,
                    swift=[swift],
                    notes=f"VmHWM {before / MiB:.0f} MiB after mount, {peak / MiB:.0f} MiB "
                          f"after the cp; cp ran at {size / seconds / MiB:.0f} MiB/s"))
    os.unlink(bench.mnt / "rss" / "big")
    src.unlink()


def bench_hwm(bench: Bench) -> int:
    """The mount daemon's peak RSS so far (VmHWM), in bytes."""
    for line in Path(f"/proc/{bench.pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmHWM in /proc/{bench.pid}/status")


def big_cp_cat(bench: Bench, args: Any, rows: list[Row]) -> Path:
    """cp into the mount vs raw streaming PUT; cold cat vs raw streamed GET; interleaved.
    Returns the one big file kept in the mount (its content is the source's current one)."""
    size, rounds = args.size_big, args.rounds
    src = bench.src_big
    bench.say(f"cp/cat: writing a {human_size(size)} source file")
    make_file(src, size, b"big-file")
    bench.conn.put_container(RAW)
    (bench.mnt / "big").mkdir()
    up: list[float] = []
    cp: list[float] = []
    down: list[float] = []
    down_skip: list[float] = []  # the same from 8 MiB on: no object-server md5
    cat: list[float] = []
    cp_swift: list[dict[str, int]] = []
    cat_swift: list[dict[str, int]] = []
    cpu: dict[str, list[float]] = {k: [] for k in ("up", "cp", "down", "cat")}  # s per GiB
    gib = size / (1 << 30)
    for r in range(rounds):
        restamp(src, r)
        dst = bench.mnt / "big" / f"r{r}"
        c0 = own_cpu()
        up.append(size / raw_upload(bench.conn, src, f"big{r}") / MiB)
        cpu["up"].append((own_cpu() - c0) / gib)
        c0 = process_cpu(bench.pid)
        seconds, swift = measured(bench, run("cp", src, dst))
        cpu["cp"].append((process_cpu(bench.pid) - c0) / gib)
        cp.append(size / seconds / MiB)
        cp_swift.append(swift)
        c0 = own_cpu()
        down.append(size / raw_download(bench.conn, f"big{r}") / MiB)
        cpu["down"].append((own_cpu() - c0) / gib)
        skip = min(SKIP_MD5_OFFSET, size // 2)
        down_skip.append((size - skip) / raw_download(bench.conn, f"big{r}", skip) / MiB)
        drop_cache(dst)
        c0 = process_cpu(bench.pid)
        seconds, swift = measured(bench, run("cat", dst))
        cpu["cat"].append((process_cpu(bench.pid) - c0) / gib)
        cat.append(size / seconds / MiB)
        cat_swift.append(swift)
        bench.conn.delete_object(RAW, f"big{r}")
        bench.say(f"cp/cat round {r + 1}/{rounds}: raw up {up[-1]:.0f}, cp {cp[-1]:.0f}, "
                  f"raw down {down[-1]:.0f}, cat {cat[-1]:.0f} MiB/s")
    name = human_size(size)
    rows.append(ratio_row("cp_big", f"cp {name} into the mount", "MiB/s", cp, up, 0.90,
                          cp_swift))
    rows[-1].notes = "baseline: swiftclient streaming PUT, 1 MiB generator chunks"
    rows.append(ratio_row("cat_big", f"cat {name}, cold", "MiB/s", cat, down, 0.90, cat_swift))
    rows[-1].notes = "baseline: swiftclient GET, resp_chunk_size 1 MiB"
    rows.append(ratio_row("cat_big_nomd5", f"cat {name}, cold, vs a GET from 8 MiB", "MiB/s",
                          cat, down_skip, 0.90, cat_swift))
    rows[-1].target = "report"
    rows[-1].passed = None
    rows[-1].notes = ("baseline: swiftclient GET of bytes 8 MiB..end, which like cloudfs's "
                      "streamed read-ahead spares Swift's object server its whole-object md5")
    for key, label, mine, raw in (("cpu_cp", "write", "cp", "up"),
                                  ("cpu_cat", "read", "cat", "down")):
        rows.append(cpu_row(key, f"CPU s per GiB {label}: daemon vs raw client", cpu[mine],
                            cpu[raw]))
    for r in range(rounds - 1):
        os.unlink(bench.mnt / "big" / f"r{r}")
    return bench.mnt / "big" / f"r{rounds - 1}"


def mv_big(bench: Bench, args: Any, rows: list[Row], path: Path) -> Path:
    """mv of the big file to another directory (and os.rename back): metadata only."""
    other = bench.mnt / "moved"
    other.mkdir()
    mv: list[float] = []
    renames: list[float] = []
    swift: list[dict[str, int]] = []
    for _ in range(args.rounds):
        dst = other / "big"
        seconds, delta = measured(bench, run("mv", path, dst))
        mv.append(seconds * 1000)
        swift.append(delta)
        seconds, delta = measured(bench, lambda d=dst: os.rename(d, path))
        renames.append(seconds * 1000)
        swift.append(delta)
    seconds, delta = measured(bench, run("mv", path, other / "big"))
    mv.append(seconds * 1000)
    swift.append(delta)
    value = statistics.median(mv)
    rows.append(Row("mv_big", f"mv {human_size(args.size_big)} file to another directory", "ms",
                    value, mv, target="< 50 ms, no Swift request",
                    passed=value < 50 and no_requests(swift), swift=swift,
                    notes=f"`mv` command, process start included (max {max(mv):.1f} ms); "
                          f"os.rename alone: median {statistics.median(renames):.2f} ms"))
    return other / "big"


def ccd_big_and_dedup(bench: Bench, args: Any, rows: list[Row], path: Path) -> None:
    """ccd once over one big file; then cp of the same content under a second name: bytes the
    store gains once ccd and the cleanup have run."""
    name = human_size(args.size_big)
    cleanup = ("cleanup", "--grace", "0", "--retire-grace", "0")
    once = ("once", "--retire-grace", "0")
    ccd_logged(bench, "cleanup of what the scenarios above deleted", *cleanup)
    seconds, report = ccd_logged(bench, f"once over one {name} file", *once)
    rows.append(Row("ccd_once_big", f"ccd once, one {name} file", "s", seconds, [seconds],
                    notes=one_line(report)))
    ccd_logged(bench, "cleanup after consolidation", *cleanup)
    before, objects = bench.store_bytes()
    bench.say(f"dedup: store holds {before:,} bytes in {objects} objects; cp the same content")
    (bench.mnt / "dup").mkdir()
    copy = bench.mnt / "dup" / "copy"
    hwm_before = bench_hwm(bench)
    seconds, swift = measured(bench, run("cp", bench.src_big, copy))
    hwm_after = bench_hwm(bench)
    middle, _ = bench.store_bytes()
    ccd_logged(bench, "once after the second copy", *once)
    ccd_logged(bench, "cleanup after the second copy", *cleanup)
    after, objects_after = bench.store_bytes()
    same = same_ends(bench.src_big, copy) and same_ends(bench.src_big, path)
    added = after - before
    rows.append(Row("dedup", f"cp same {name} content under a 2nd name: bytes added", "B",
                    added, [added], target="~0 (< 1 MiB)", passed=abs(added) < MiB and same,
                    swift=[swift],
                    notes=f"store {before:,} -> {middle:,} B right after the cp -> {after:,} B "
                          f"after ccd once + cleanup ({objects} -> {objects_after} objects); "
                          f"cp at {args.size_big / seconds / MiB:.0f} MiB/s; "
                          f"content check {'ok' if same else 'MISMATCH'}; daemon VmHWM "
                          f"{hwm_before / MiB:.0f} -> {hwm_after / MiB:.0f} MiB over the cp"))


def ccd_logged(bench: Bench, what: str, *args: str) -> tuple[float, str]:
    """Runs ccd (see Bench.ccd), keeps and prints its report."""
    seconds, report = bench.ccd(*args)
    bench.ccd_reports.append((what, report))
    bench.say(f"ccd {what} ({seconds:.2f} s): {one_line(report)}")
    return seconds, report


def same_ends(src: Path, copy: Path) -> bool:
    """First and last MiB equal (cheap sanity check that the mount serves the bytes)."""
    with open(src, "rb") as a, open(copy, "rb") as b:
        size = os.fstat(a.fileno()).st_size
        if os.fstat(b.fileno()).st_size != size:
            return False
        for off in (0, max(0, size - CHUNK)):
            a.seek(off)
            b.seek(off)
            if a.read(CHUNK) != b.read(CHUNK):
                return False
    return True


def one_line(report: str) -> str:
    return "; ".join(line.strip() for line in report.splitlines() if line.strip())


def small_files(bench: Bench, args: Any, rows: list[Row]) -> None:
    """cp -r of N files of 4 KiB vs raw sequential PUTs of the same objects (one connection).
    Every round has new random content (no dedup across rounds)."""
    n, rounds = args.small_files, args.rounds
    (bench.mnt / "small").mkdir()
    raw: list[float] = []
    cp: list[float] = []
    swift: list[dict[str, int]] = []
    for r in range(rounds):
        src = bench.work / "small" / f"r{r}"
        src.mkdir(parents=True)
        names = [f"f{i:05d}" for i in range(n)]
        for name in names:
            (src / name).write_bytes(os.urandom(SMALL_SIZE))
        started = time.perf_counter()
        for name in names:
            bench.conn.put_object(RAW, f"small{r}/{name}", (src / name).read_bytes())
        raw.append(n / (time.perf_counter() - started))
        seconds, delta = measured(bench, run("cp", "-r", src, bench.mnt / "small" / f"r{r}"))
        cp.append(n / seconds)
        swift.append(delta)
        bench.say(f"small files round {r + 1}/{rounds}: raw {raw[-1]:.0f}, cp -r {cp[-1]:.0f} "
                  "files/s")
    rows.append(ratio_row("small_cp", f"cp -r {n} files of 4 KiB", "files/s", cp, raw, 0.80,
                          swift))
    rows[-1].notes = "baseline: swiftclient PUT of each object in turn, one connection"
    seconds, report = ccd_logged(bench, f"once over {n * rounds} small files", "once",
                                 "--retire-grace", "0")
    rows.append(Row("ccd_once_small", f"ccd once, {n * rounds} files of 4 KiB", "s", seconds,
                    [seconds], notes=one_line(report)))


def empty_files(bench: Bench, args: Any, rows: list[Row]) -> None:
    """N empty files created by one process (os.open + os.close), then os.stat, then
    os.unlink: operations per second of each phase."""
    n, rounds = args.empty_files, args.rounds
    phases: dict[str, list[float]] = {"create": [], "stat": [], "unlink": []}
    swift: dict[str, list[dict[str, int]]] = {k: [] for k in phases}
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL

    def create(paths: list[str]) -> None:
        for p in paths:
            os.close(os.open(p, flags, 0o644))

    def stat(paths: list[str]) -> None:
        for p in paths:
            os.stat(p)

    def unlink(paths: list[str]) -> None:
        for p in paths:
            os.unlink(p)

    for r in range(rounds):
        d = bench.mnt / f"empty{r}"
        d.mkdir()
        paths = [str(d / f"e{i:05d}") for i in range(n)]
        for phase, fn in (("create", create), ("stat", stat), ("unlink", unlink)):
            seconds, delta = measured(bench, lambda fn=fn, paths=paths: fn(paths))
            phases[phase].append(n / seconds)
            swift[phase].append(delta)
        d.rmdir()
        bench.say(f"empty files round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]:.0f}/s" for k, v in phases.items()))
    for phase, values in phases.items():
        rows.append(Row(f"empty_{phase}", f"{n} empty files: {phase}", "ops/s",
                        statistics.median(values), values, swift=swift[phase]))


def ls_cold(bench: Bench, args: Any, rows: list[Row]) -> None:
    """ls -l of a directory of N entries right after a remount (and the namespace database
    out of the page cache): seconds, and no Swift request."""
    n = args.dir_entries
    d = bench.mnt / "dir"
    d.mkdir()
    bench.say(f"ls -l: creating {n} entries")
    for i in range(n):
        os.close(os.open(d / f"entry{i:06d}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
    peak = bench_hwm(bench)
    rows.append(Row("rss_run", "daemon peak RSS over all scenarios above", "MiB", peak / MiB,
                    [peak / MiB], notes="VmHWM of the first mount daemon before the remounts"))
    times: list[float] = []
    swift: list[dict[str, int]] = []
    listing: list[bytes] = []

    def ls() -> None:
        out = subprocess.run(["ls", "-l", str(d)], check=True, capture_output=True)
        listing[:] = out.stdout.splitlines()

    for r in range(args.rounds):
        bench.remount()
        seconds, delta = measured(bench, ls)
        if len(listing) != n + 1:  # + the "total" line
            raise RuntimeError(f"ls -l listed {len(listing) - 1} entries of {n}")
        times.append(seconds)
        swift.append(delta)
        bench.say(f"ls -l round {r + 1}/{args.rounds}: {seconds:.3f} s")
    value = statistics.median(times)
    rows.append(Row("ls_cold", f"ls -l of {n} entries, cold (after remount)", "s", value, times,
                    target="< 1 s, no Swift request",
                    passed=value < 1.0 and no_requests(swift), swift=swift,
                    notes=f"max {max(times):.3f} s; remounted before each ls, " + (
                        "namespace database dropped from the page cache"
                        if bench.backend == "sqlite" else
                        "PostgreSQL's own cache (shared buffers) kept")))


ALL = ("rss", "cp-cat", "mv", "ccd-dedup", "small", "empty", "ls")


def run_all(bench: Bench, args: Any, rows: list[Row], only: list[str] | None = None) -> None:
    """Every scenario in order, or those named in `only` (mv and ccd-dedup need cp-cat)."""
    wanted = set(only or ALL)
    if unknown := wanted - set(ALL):
        raise ValueError(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if "rss" in wanted:
        rss_big_cp(bench, args, rows)
    if wanted & {"cp-cat", "mv", "ccd-dedup"}:
        path = big_cp_cat(bench, args, rows)
        if wanted & {"mv", "ccd-dedup"}:
            path = mv_big(bench, args, rows, path)
        if "ccd-dedup" in wanted:
            ccd_big_and_dedup(bench, args, rows, path)
    if "small" in wanted:
        small_files(bench, args, rows)
    if "empty" in wanted:
        empty_files(bench, args, rows)
    if "ls" in wanted:
        ls_cold(bench, args, rows)
