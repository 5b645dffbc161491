"""Benchmark harness: every cloudfs performance target in one run, against raw Swift.

Starts its own dev Swift on free ports, makes a fresh filesystem, mounts it, runs every scenario
(see bench/scenarios.py), unmounts, stops Swift, prints a table and writes JSON. Throughput is
always paired with a raw python-swiftclient baseline in the same run, interleaved (baseline,
cloudfs, baseline, cloudfs, ...), reported as the median ratio with min and max. The Swift
requests of each scenario are the difference of the mount daemon's counters (`cloudfs stats`,
through its control channel) before and after it. Cleans up on failure and Ctrl-C: unmount
(lazy and kill as a last resort), stop Swift, delete the work directory (unless --keep).

    .venv/bin/python bench/harness.py [--quick] [--json results.json]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import ctypes
import datetime
import json
import os
import platform
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import scenarios  # noqa: E402
import scenarios16  # noqa: E402
from scenarios import Row  # noqa: E402
from units import parse_size  # noqa: E402

from devtools import postgres as devpostgres  # noqa: E402
from devtools import swift as devswift  # noqa: E402
from seqwrite import Layout  # noqa: E402
from wiring import control  # noqa: E402

MiB = 1 << 20
CONTAINER = "bench"  # the filesystem's base container name
PR_SET_PDEATHSIG = 1
# cloudfs and ccd subprocesses run the code of the tree this file is in (not an installed copy).
CHILD_ENV = {**os.environ, "PYTHONPATH": os.pathsep.join(
    [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}

DEFAULTS = {"size_big": "1G", "size_rss": "4G", "small_files": 1000, "dir_entries": 10000,
            "empty_files": 10000, "rounds": 3, **scenarios16.DEFAULTS}
QUICK = {"size_big": "256M", "size_rss": "512M", "small_files": 200, "dir_entries": 2000,
         "empty_files": 2000, "rounds": 1, **scenarios16.QUICK}


# -- results -----------------------------------------------------------------------------------


def fmt_value(value: float | None, unit: str) -> str:
    if value is None:
        return ""
    if unit in ("MiB/s", "files/s", "ops/s", "MiB"):
        return f"{value:.0f} {unit}"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "s/GiB":
        return f"{value:.2f} s/GiB"
    if unit == "ms":
        return f"{value:.1f} ms"
    if unit == "B":
        return f"{value:+,.0f} B"
    return f"{value:g} {unit}"


def fmt_swift(deltas: list[dict[str, int]] | None) -> str:
    """Requests per round: `PUT 2 POST 1`, a range when rounds differ, `none` when zero, `n/a`
    when not measured (ccd runs in a process of its own)."""
    if deltas is None:
        return "n/a"
    methods = sorted({m for d in deltas for m in d})
    parts = []
    for m in methods:
        values = [d.get(m, 0) for d in deltas]
        lo, hi = min(values), max(values)
        parts.append(f"{m} {lo}" if lo == hi else f"{m} {lo}-{hi}")
    return " ".join(parts) or "none"


def fmt_ratio(row: Row) -> str:
    if not row.ratios:
        return ""
    return f"{row.ratio_median:.2f} ({min(row.ratios):.2f}-{max(row.ratios):.2f})"


def fmt_result(row: Row) -> str:
    return {True: "PASS", False: "FAIL", None: "-"}[row.passed]


TABLE_HEAD = ("scenario", "cloudfs", "baseline", "ratio median (min-max)", "target", "result",
              "Swift requests / round")


def table_cells(rows: list[Row]) -> list[tuple[str, ...]]:
    return [(r.label, fmt_value(r.value, r.unit), fmt_value(r.baseline, r.unit), fmt_ratio(r),
             r.target, fmt_result(r), fmt_swift(r.swift)) for r in rows]


def text_table(rows: list[Row]) -> str:
    cells = [TABLE_HEAD, *table_cells(rows)]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE_HEAD))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cell, widths, strict=True)).rstrip()
             for cell in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown_table(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
    for cell in table_cells(rows):
        bold = [f"**{c}**" if c == "FAIL" else c for c in cell]
        lines.append("| " + " | ".join(bold) + " |")
    return "\n".join(lines)


# -- the bench: Swift, filesystem, mount -------------------------------------------------------


def _die_with_parent() -> None:
    """In the mount daemon: SIGTERM (a clean unmount) if the harness dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def in_mount_table(path: Path) -> bool:
    target = os.fsencode(os.path.abspath(path))
    with open("/proc/mounts", "rb") as f:
        return any(line.split()[1] == target for line in f)


class Bench:
    """The harness's own dev Swift, filesystem and mount, and what the scenarios need of them."""

    def __init__(self, work: Path, verbose: bool = True, keystone_tls: bool = False,
                 backend: str = "sqlite") -> None:
        self.work = work
        self.keystone_tls = keystone_tls  # Keystone auth, everything over https
        self.backend = backend  # the namespace: "sqlite" (a file) or "postgresql"
        self.mnt = work / "mnt"
        self.conf = work / "cloudfs.conf"
        self.db: Path | str = work / "ns.db"  # PostgreSQL: its URL (start_postgres)
        self.pg: devpostgres.DevPostgres | None = None
        self.log = work / "mount.log"
        self.verbose = verbose
        self.swift: devswift.DevSwift | None = None
        self.daemon: subprocess.Popen[bytes] | None = None
        self.daemon_exits: list[int] = []
        self._conn: Any = None
        self.hurry = False  # a second Ctrl-C during cleanup: stop waiting, kill
        self.src_big = work / "big.src"  # the big file's local source (scenarios)
        self.ccd_reports: list[tuple[str, str]] = []  # (what, ccd's report) in run order
        self.mount_options: list[str] = []  # cloudfs mount -o ... (e.g. write_back)

    def say(self, text: str) -> None:
        if self.verbose:
            print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)

    # Swift ---------------------------------------------------------------------------------

    def start_swift(self) -> None:
        auth = "keystone" if self.keystone_tls else "tempauth"
        port = devswift.find_free_port_range(auth)
        self.say(f"starting dev Swift ({auth}{', https' if self.keystone_tls else ''}) on "
                 f"ports from {port}")
        self.swift = devswift.start(self.work / "swift", port, die_with_parent=True, auth=auth,
                                    tls_on=self.keystone_tls)

    def start_postgres(self) -> None:
        """A dev PostgreSQL of the harness's own (fsync on, as a user's), reached over its
        Unix socket; the filesystem's database in it."""
        self.say("starting a dev PostgreSQL (fsync on)")
        self.work.chmod(0o711)  # the server runs as the postgres user: it must get through
        self.pg = devpostgres.start_throwaway(fast=False, die_with_parent=True,
                                              parent=self.work)
        self.db = devpostgres.create_database(self.pg, "bench", socket=True)

    @property
    def env(self) -> dict[str, str]:
        """The environment of cloudfs and ccd: with Keystone, the credentials are the OS_*
        variables (application credential, OS_CACERT), as an operator gives them."""
        assert self.swift is not None
        return {**CHILD_ENV, **self.swift.env()} if self.keystone_tls else CHILD_ENV

    def new_conn(self) -> Any:
        """A raw python-swiftclient connection: v1 auth, or with Keystone a keystoneauth
        session (application credential; https verified against the dev CA)."""
        import swiftclient

        swift = self.swift
        assert swift is not None
        if swift.keystone is None:
            return swiftclient.Connection(swift.auth_url, swift.user, swift.key, retries=0,
                                          timeout=120)
        from keystoneauth1 import session
        from keystoneauth1.identity import v3

        acct = swift.keystone
        sess = session.Session(auth=v3.ApplicationCredential(
            auth_url=acct.auth_url, application_credential_id=acct.application_credential_id,
            application_credential_secret=acct.application_credential_secret),
            verify=acct.cacert)
        return swiftclient.Connection(session=sess, cacert=acct.cacert, retries=0, timeout=120)

    @property
    def conn(self) -> Any:
        """One raw python-swiftclient connection (the baselines and the byte counts)."""
        if self._conn is None:
            self._conn = self.new_conn()
        return self._conn

    def store_bytes(self) -> tuple[int, int]:
        """(bytes, objects) in the filesystem's containers, from a HEAD of each container (the
        account's totals need the container updater, which the dev Swift does not run; the
        object server updates the container before it answers a PUT or DELETE)."""
        local = threading.local()

        def head(name: str) -> tuple[int, int]:
            if not hasattr(local, "conn"):
                local.conn = self.new_conn()
            headers = local.conn.head_container(name)
            return (int(headers.get("x-container-bytes-used", 0)),
                    int(headers.get("x-container-object-count", 0)))

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            counts = list(pool.map(head, Layout(CONTAINER, 2).all_containers()))
        return sum(c[0] for c in counts), sum(c[1] for c in counts)

    # filesystem and mount ------------------------------------------------------------------

    def mkfs(self) -> None:
        assert self.swift is not None
        creds = "" if self.keystone_tls else (
            f"auth_url = {self.swift.auth_url}\nuser = {self.swift.user}\n"
            f"key = {self.swift.key}\n")
        self.conf.write_text(
            f"[swift]\n{creds}container = {CONTAINER}\n"
            f"[cloudfs]\ndatabase = {self.db}\ncache_dir = {self.work / 'cache'}\n"
            "[ccd]\ngrace = 3600\nretire_grace = 0\ninterval = 60\n")
        self.conf.chmod(0o600)
        subprocess.run([sys.executable, "-m", "cloudfs", "mkfs", "--config", str(self.conf)],
                       check=True, capture_output=True, cwd=ROOT, env=self.env)
        self.mnt.mkdir(exist_ok=True)

    def mount(self, timeout: float = 60.0) -> None:
        cmd = [sys.executable, "-m", "cloudfs", "mount", "--foreground", "--config",
               str(self.conf), str(self.mnt)]
        if self.mount_options:
            cmd[4:4] = ["-o", ",".join(self.mount_options)]
        with open(self.log, "ab") as logf:
            # Own session: a Ctrl-C reaches the harness only, which unmounts in order.
            self.daemon = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=logf,
                                           stderr=logf, start_new_session=True,
                                           preexec_fn=_die_with_parent, cwd=ROOT,
                                           env=self.env)
        deadline = time.monotonic() + timeout
        while not os.path.ismount(self.mnt):
            if self.daemon.poll() is not None:
                raise RuntimeError(f"mount daemon exited with {self.daemon.returncode}:\n"
                                   f"{self.log_tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mount not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)
        while True:  # the control channel opens just after INIT: the counters need it
            try:
                self.stats()
                return
            except (OSError, control.ControlError):
                if time.monotonic() > deadline:
                    raise RuntimeError(f"no control channel after {timeout:.0f} s:\n"
                                       f"{self.log_tail()}") from None
                time.sleep(0.05)

    def unmount(self, timeout: float = 120.0) -> int:
        """fusermount3 -u and wait for the daemon; kill and lazy-unmount as a last resort."""
        proc, self.daemon = self.daemon, None
        if proc is not None and proc.poll() is None:
            deadline = time.monotonic() + timeout
            # fusermount3 -u again each second while the mount stays: its EBUSY is transient
            # (a killed writer's files are still being released)
            retry = 0.0
            while proc.poll() is None and time.monotonic() < deadline and not self.hurry:
                if time.monotonic() > retry and in_mount_table(self.mnt):
                    subprocess.run(["fusermount3", "-u", str(self.mnt)], capture_output=True,
                                   check=False)
                    retry = time.monotonic() + 1.0
                time.sleep(0.05)
            if proc.poll() is None:
                print(f"mount daemon {proc.pid} still running: killing it", file=sys.stderr)
                proc.kill()
                proc.wait(30)
        code = proc.returncode if proc is not None else 0
        if proc is not None:
            self.daemon_exits.append(code)
        deadline = time.monotonic() + 10
        while in_mount_table(self.mnt) and time.monotonic() < deadline and not self.hurry:
            time.sleep(0.05)  # auto_unmount removes a dead daemon's mount
        if in_mount_table(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True,
                           check=False)
        return code

    def remount(self, drop_db_cache: bool = True) -> None:
        code = self.unmount()
        if code != 0:
            raise RuntimeError(f"mount daemon exited with {code} at unmount:\n{self.log_tail()}")
        if drop_db_cache and self.backend == "sqlite":  # cold: the namespace out of the
            # page cache too (PostgreSQL keeps its shared buffers: not dropped)
            for suffix in ("", "-wal", "-shm"):
                with contextlib.suppress(OSError):
                    fd = os.open(str(self.db) + suffix, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                    finally:
                        os.close(fd)
        self.mount()

    @property
    def pid(self) -> int:
        assert self.daemon is not None
        return self.daemon.pid

    def requests(self) -> dict[str, int]:
        """The daemon's Swift request counters (by method) since it mounted."""
        if self.daemon is None or self.daemon.poll() is not None:
            code = None if self.daemon is None else self.daemon.returncode
            raise RuntimeError(f"the mount daemon is not running (exit code {code}):\n"
                               f"{self.log_tail()}")
        return {k: int(v) for k, v in self.stats()["swift_requests"].items()}

    def stats(self) -> dict[str, Any]:
        """The daemon's counters (`cloudfs stats`, through its control channel)."""
        return control.request(self.mnt, "stats", timeout=30)  # type: ignore[no-any-return]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def ccd(self, *args: str) -> tuple[float, str]:
        """Runs `python -m ccd.cli --config F ARGS`; (seconds, its report)."""
        cmd = [sys.executable, "-m", "ccd.cli", "--config", str(self.conf), "--log-level",
               "WARNING", *args]
        started = time.perf_counter()
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=self.env)
        seconds = time.perf_counter() - started
        if out.returncode != 0:
            raise RuntimeError(f"{shlex.join(cmd)} failed ({out.returncode}):\n"
                               f"{out.stdout}{out.stderr}")
        return seconds, out.stdout.strip()

    def close(self) -> None:
        """Unmount, stop Swift. Safe to call in any state; never raises."""
        if self.daemon is not None or in_mount_table(self.mnt):
            self.say("unmounting")
            try:
                self.unmount()
            except Exception as exc:
                print(f"unmount failed: {exc}", file=sys.stderr)
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)],
                               capture_output=True, check=False)
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
        if self.pg is not None:
            self.say("stopping the dev PostgreSQL")
            try:
                devpostgres.remove(self.pg.dir)
            except Exception as exc:
                print(f"stopping the dev PostgreSQL failed: {exc}", file=sys.stderr)
            self.pg = None
        if (self.work / "swift").is_dir():  # idempotent; also after a half-done start
            self.say("stopping dev Swift")
            try:
                devswift.stop(self.work / "swift")
            except Exception as exc:
                print(f"stopping the dev Swift failed: {exc}", file=sys.stderr)


# -- main --------------------------------------------------------------------------------------


def git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                             capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return rev + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def exact_command() -> str:
    try:
        argv = Path("/proc/self/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
        return shlex.join(a.decode() for a in argv)
    except OSError:
        return shlex.join([sys.executable, *sys.argv])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        epilog="Defaults take ~25 min on a quiet 2-core machine (~40 loaded); --quick ~3 min.")
    p.add_argument("--quick", action="store_true",
                   help="small sizes, one round (" + ", ".join(
                       f"{k.replace('_', '-')} {v}" for k, v in QUICK.items()) + ")")
    p.add_argument("--size-big", help="big file of the cp/cat/mv/dedup scenarios (default 1G)")
    p.add_argument("--size-rss", help="file of the peak-RSS scenario (default 4G)")
    p.add_argument("--small-files", type=int, help="4 KiB files copied with cp -r (1000)")
    p.add_argument("--dir-entries", type=int, help="entries of the ls -l directory (10000)")
    p.add_argument("--empty-files", type=int, help="empty files created/stat/unlinked (10000)")
    p.add_argument("--rounds", type=int, help="rounds of each paired measurement (3)")
    scenarios16.add_arguments(p)
    p.add_argument("--json", metavar="FILE", help="write the results here")
    p.add_argument("--keep", action="store_true",
                   help="keep the work directory (Swift data, database, logs)")
    p.add_argument("--keystone-tls", action="store_true",
                   help="the dev Swift behind a real Keystone, everything over https; the "
                   "mount and ccd get the credentials as OS_* variables, the baselines use a "
                   "keystoneauth session over https as well")
    p.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                   help="the namespace: an SQLite file (default) or a database on a dev "
                   "PostgreSQL of the harness's own (fsync on, Unix socket)")
    p.add_argument("--only", metavar="SCENARIOS",
                   help="comma-separated scenarios to run, of: " + ", ".join(
                       (*scenarios.ALL, *scenarios16.ALL)))
    args = p.parse_args(argv)
    base = QUICK if args.quick else DEFAULTS
    for key, value in base.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    try:
        args.size_big = parse_size(args.size_big)
        args.size_rss = parse_size(args.size_rss)
        scenarios16.finish_args(args)
    except (ValueError, IndexError):
        p.error("sizes are a number with an optional K, M or G suffix")
    if args.rounds < 1 or args.wb_rounds < 1:
        p.error("--rounds and --wb-rounds must be at least 1")
    if args.only and (unknown := set(args.only.split(",")) - {*scenarios.ALL,
                                                                *scenarios16.ALL}):
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.time()
    meta: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "command": exact_command(),
        "revision": git_revision(),
        "host": platform.node(), "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "settings": {k: getattr(args, k) for k in (*DEFAULTS, "quick", "keystone_tls",
                                                     "backend", "only")},
    }
    work = Path(tempfile.mkdtemp(prefix="cloudfs-harness-"))
    bench = Bench(work, keystone_tls=args.keystone_tls, backend=args.backend)
    bench.say(f"work directory {work}")

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_term)
    rows: list[Row] = []
    error: BaseException | None = None
    try:
        bench.start_swift()
        if args.backend == "postgresql":
            bench.start_postgres()
        bench.mkfs()
        bench.mount()
        bench.say(f"mounted at {bench.mnt} (daemon pid {bench.pid})")
        only = args.only.split(",") if args.only else None
        for module in (scenarios, scenarios16):
            mine = None if only is None else [s for s in only if s in module.ALL]
            if mine != []:
                module.run_all(bench, args, rows, mine)
        code = bench.unmount()
        if code != 0:
            raise RuntimeError(f"mount daemon exited with {code} at unmount")
    except BaseException as exc:
        error = exc
        if isinstance(exc, KeyboardInterrupt):
            print("\ninterrupted: cleaning up (Ctrl-C again to stop waiting)", file=sys.stderr)
    finally:

        def hurry(signum: int, frame: Any) -> None:
            bench.hurry = True

        signal.signal(signal.SIGINT, hurry)
        signal.signal(signal.SIGTERM, hurry)
        bench.close()
        errors = [line for line in bench.log_tail(100000).splitlines()
                  if line.startswith(("ERROR ", "CRITICAL ")) or "Traceback" in line]
        meta["mount_log_errors"] = errors[:50]
        meta["daemon_exit_codes"] = bench.daemon_exits
        if in_mount_table(bench.mnt):
            print(f"WARNING: {bench.mnt} is still mounted; work directory kept",
                  file=sys.stderr)
        elif args.keep:
            print(f"work directory kept: {work}", file=sys.stderr)
        elif error is not None and not isinstance(error, KeyboardInterrupt):
            for bulky in ("swift/srv", "cache", "small", "big.src", "rss.src"):
                path = work / bulky
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            print(f"logs, config and database kept for a look: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    meta["seconds"] = round(time.time() - started, 1)
    meta["loadavg_end"] = os.getloadavg()
    print()
    print(f"{meta['date']}  {meta['command']}  ({args.backend} namespace, revision "
          f"{meta['revision']}, "
          f"{meta['seconds']:.0f} s, load {meta['loadavg_start'][0]:.1f} -> "
          f"{meta['loadavg_end'][0]:.1f})")
    print(text_table(rows))
    for row in rows:
        if row.notes:
            print(f"  {row.label}: {row.notes}")
    failed = [r.label for r in rows if r.passed is False]
    checked = [r for r in rows if r.passed is not None]
    print(f"targets: {len(checked) - len(failed)} of {len(checked)} pass"
          + (f"; FAIL: {', '.join(failed)}" if failed else ""))
    if meta["mount_log_errors"]:
        print(f"mount daemon logged {len(meta['mount_log_errors'])} error line(s); first: "
              f"{meta['mount_log_errors'][0]}")
    result = {**meta, "complete": error is None,
              "error": None if error is None else f"{type(error).__name__}: {error}",
              "ccd_reports": [{"what": w, "report": r} for w, r in bench.ccd_reports],
              "results": [{**asdict(r), "ratio_median": r.ratio_median} for r in rows],
              "markdown": markdown_table(rows)}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        print(f"results written to {args.json}")
    if error is not None:
        if isinstance(error, KeyboardInterrupt):
            return 130
        raise error
    return 0


if __name__ == "__main__":
    sys.exit(main())
