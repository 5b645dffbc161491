"""Benchmark: `ls -l` and `find` of large directories through a cloudfs mount vs the local disk.

Starts its own dev Swift (the mount needs one; a listing sends it no request), makes a fresh
filesystem, and fills directories of N empty files (default 10,000 and 100,000) DIRECTLY through
the namespace API (`Namespace.create`, on a connection with `synchronous = OFF`: the bench's
throwaway database; creating 100,000 files through FUSE takes many minutes and is measured
elsewhere). The local baseline is the same N empty files in a directory of the work directory
(a disk, ext4 here), created with os.open.

Per round and N, interleaved: local `ls -l` and `find` (warm: the kernel's dentry cache is not
dropped, which would flush every other user's caches too); cloudfs cold (remount, the namespace
database dropped from the page cache) then warm (the same command again on that mount) for
`ls -l`, then the same for `find`. With --compare DIR (another checkout of cloudfs, e.g. a `git
worktree` of an older revision), each cloudfs measurement is also made with the daemon of DIR's
code, right after this tree's, on the same filesystem (before/after, back to back). Prints
medians, ratios to the local disk (min-max), the daemon's CPU seconds during the cold listing,
and the daemon's Swift requests during the listings (must be none).

    .venv/bin/python bench/bigdir_bench.py [--entries 10000,100000] [--rounds 3] [--json F]
        [--compare DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import harness  # noqa: E402
from bigdirs import fill_local, fill_namespace, timed  # noqa: E402
from harness import Bench  # noqa: E402

from wiring.control import ControlError  # noqa: E402

COMMANDS = {"ls -l": ["ls", "-l"], "find": ["find"]}


def requests(bench: Bench) -> dict[str, int] | None:
    """The daemon's Swift request counters, or None when its control channel does not answer
    (on this shared machine another daemon's exit may unlink a socket of the same device)."""
    try:
        return bench.requests()
    except (OSError, ControlError) as exc:
        bench.say(f"no request counters: {exc}")
        return None


def use_code(root: Path) -> None:
    """The next mount daemons run the code of `root` (a checkout of cloudfs)."""
    harness.ROOT = root
    harness.CHILD_ENV = {**os.environ, "PYTHONPATH": str(root)}


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def ratio_text(values: list[float], base: list[float]) -> str:
    ratios = [v / b for v, b in zip(values, base, strict=True)]
    return f"{statistics.median(ratios):.1f}x ({min(ratios):.1f}-{max(ratios):.1f})"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--entries", default="10000,100000", help="directory sizes (comma-separated)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--compare", metavar="DIR", type=Path,
                   help="also measure the daemon of this checkout's code (before/after)")
    args = p.parse_args()
    sizes = [int(s) for s in args.entries.split(",")]
    codes = {"": ROOT}
    if args.compare is not None:
        codes[f" [{args.compare.name}]"] = args.compare.resolve()
    work = Path(tempfile.mkdtemp(prefix="cloudfs-bigdir-"))
    bench = Bench(work)
    results: dict[str, dict[str, list[float]]] = {}
    swift: list[dict[str, int]] = []
    load = [os.getloadavg()[0]]
    try:
        bench.start_swift()
        bench.mkfs()
        started = time.perf_counter()
        fill_namespace(bench.db, sizes)
        bench.say(f"namespace filled ({'+'.join(map(str, sizes))} entries) in "
                  f"{time.perf_counter() - started:.0f} s")
        fill_local(work / "local", sizes)
        bench.mount()
        for r in range(args.rounds):
            for n in sizes:
                for what, cmd in COMMANDS.items():
                    res = results.setdefault(f"{what} {n}", {})
                    local = timed(cmd, work / "local" / f"d{n}", n)
                    timed(cmd, work / "local" / f"d{n}", n)  # the warm one counts
                    local = min(local, timed(cmd, work / "local" / f"d{n}", n))
                    res.setdefault("local", []).append(local)
                    text = f"round {r + 1}: {what} {n}: local {local:.3f} s"
                    for label, code in codes.items():
                        use_code(code)
                        bench.remount()
                        before = requests(bench)
                        cpu = cpu_seconds(bench.pid)
                        cold = timed(cmd, bench.mnt / f"d{n}", n)
                        cpu = cpu_seconds(bench.pid) - cpu
                        warm = timed(cmd, bench.mnt / f"d{n}", n)
                        after = requests(bench)
                        swift.append({"unmeasured": 1} if before is None or after is None else
                                     {k: after[k] - before.get(k, 0) for k in after
                                      if after[k] != before.get(k, 0)})
                        for key, value in (("cold", cold), ("warm", warm), ("cpu", cpu)):
                            res.setdefault(key + label, []).append(value)
                        text += (f"; cloudfs{label} cold {cold:.3f} s (daemon CPU {cpu:.2f} s), "
                                 f"warm {warm:.3f} s")
                    bench.say(text)
        load.append(os.getloadavg()[0])
    finally:
        use_code(ROOT)
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"\nload {load[0]:.1f} -> {load[-1]:.1f}; rounds {args.rounds}; Swift requests "
          f"during the listings: {swift if any(swift) else 'none'}")
    print(f"{'listing':<24} {'local':>8} {'cold':>8} {'warm':>8}  {'cold/local':<18} "
          f"{'warm/local':<18} {'cold us/entry':>13} {'daemon CPU cold':>15}")
    for key, res in results.items():
        n = int(key.split()[-1])
        med: Callable[[str], float] = lambda k, res=res: statistics.median(res[k])  # noqa: E731
        for label in codes:
            print(f"{key + label:<24} {med('local'):>7.3f}s {med('cold' + label):>7.3f}s "
                  f"{med('warm' + label):>7.3f}s  "
                  f"{ratio_text(res['cold' + label], res['local']):<18} "
                  f"{ratio_text(res['warm' + label], res['local']):<18} "
                  f"{med('cold' + label) / n * 1e6:>13.1f} {med('cpu' + label):>14.2f}s")
            print(f"{'':<24} min-max local {min(res['local']):.3f}-{max(res['local']):.3f} s, "
                  f"cold {min(res['cold' + label]):.3f}-{max(res['cold' + label]):.3f} s, "
                  f"warm {min(res['warm' + label]):.3f}-{max(res['warm' + label]):.3f} s")
    if args.json:
        out: dict[str, Any] = {"results": results, "swift": swift, "load": load,
                               "command": " ".join(sys.argv)}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    return 0 if not any(d and "unmeasured" not in d for d in swift) else 1


if __name__ == "__main__":
    sys.exit(main())
