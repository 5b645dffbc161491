"""The `ccd` command line: `ccd [--config FILE] [--log-level L] {run,once,cleanup,replay}`.

A pass of `run` and `once` settles files made of many pieces (settle.py), then consolidates
(consolidate.py): the content a settle just published is consolidated in the same pass.

Errors the operator can fix (configuration, database, Swift unreachable at start) print one
line naming the cause and exit 2; a pass that could not do everything (listing failed, objects
kept because of errors) exits 1. Logs go to stderr as `LEVEL logger: message` (journald adds
the time); reports go to stdout. The Swift key is never printed.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sqlite3
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import TypeVar

import trio

from ccd import consolidate, replay, settle
from ccd.cleanup import cleanup_pass
from ccd.consolidate import DEFAULT_RETIRE_GRACE, Consolidator
from ccd.context import CcdError, Context, open_context, sole_error
from ccd.crash import CrashInjected
from ccd.metrics import CcdMetrics
from ccd.report import Progress, Report
from ccd.settle import DEFAULT_SETTLE_GRACE, Settler
from seqwrite import StoreError
from sqlfsn.errors import NamespaceError
from wiring import credentials, logs
from wiring.config import Config, load
from wiring.errors import SetupError
from wiring.filesystem import spool_dir, writer_settings
from wiring.leases import HEARTBEAT_INTERVAL
from wiring.metrics import Exporter, Target
from wiring.sdnotify import notify

log = logging.getLogger("ccd")

# Upload leases are refreshed every HEARTBEAT_INTERVAL: a grace below a few heartbeats could
# take a write in progress for a dead one.
MIN_SAFE_GRACE = 5 * HEARTBEAT_INTERVAL
CRASH_ENV = "CCD_CRASH_AFTER"  # tests: crash a pass after a step (consolidate.py, settle.py)
CRASH_POINTS = consolidate.CRASH_POINTS + settle.CRASH_POINTS
T = TypeVar("T")


def seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if value < 0:
        raise argparse.ArgumentTypeError("must not be negative")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ccd",
        description="cloudfs consolidation daemon and cleanup: moves published files from "
        "temporary segments to content-addressed objects, and deletes what interrupted "
        "writes and deleted files left in Swift (see docs/OPERATIONS.md).",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="the filesystem's INI config file, as given to `cloudfs mount`")
    credentials.add_arguments(parser.add_argument_group(
        "credentials (flags override the environment's OS_*/ST_* variables, which override "
        "the file)"))
    parser.add_argument("--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR"),
                        help="log verbosity (default: log_level of the config file, or INFO)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    retire_help = ("seconds a temporary segment stays after the manifest stopped naming it, "
                   "for readers of the old manifest (default: [ccd] retire_grace of the config, "
                   f"{DEFAULT_RETIRE_GRACE:.0f})")

    settle_help = ("seconds a file made of several pieces (appends, random writes) must stay "
                   "unchanged before it is settled into one whole-file object (default: [ccd] "
                   f"settle_grace of the config, {DEFAULT_SETTLE_GRACE:.0f})")

    p = sub.add_parser("run", help="consolidate forever, one pass every `interval` seconds",
                       description="The consolidation daemon (systemd Type=notify): a "
                       "pass every `interval` seconds until SIGTERM/SIGINT (files are "
                       "settled every settle_grace/2 seconds).")
    p.add_argument("--interval", type=seconds, metavar="SECONDS",
                   help="seconds between passes (default: [ccd] interval of the config, 60)")
    p.add_argument("--retire-grace", type=seconds, metavar="SECONDS", help=retire_help)
    p.add_argument("--settle-grace", type=seconds, metavar="SECONDS", help=settle_help)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("once", help="one pass (settle, then consolidate), then exit",
                       description="One pass: settle the files made of several pieces that "
                       "did not change for settle_grace (re-store each as one whole-file CAS "
                       "object), then consolidate: copy the temporary segments of published "
                       "files to their CAS names, rewrite the manifests, retire the temporary "
                       "segments. Prints what it did.")
    p.add_argument("--retire-grace", type=seconds, metavar="SECONDS", help=retire_help)
    p.add_argument("--settle-grace", type=seconds, metavar="SECONDS", help=settle_help)
    p.add_argument("--dry-run", action="store_true",
                   help="report what would be settled and consolidated; change nothing")
    p.set_defaults(func=cmd_once)

    p = sub.add_parser("cleanup", help="delete leftovers and unreferenced content (cron)",
                       description="One cleanup pass: delete CAS objects no file references, "
                       "temporary segments of interrupted writes, retired segments and stale "
                       "upload leases, all older than the grace. Errors keep things; exit 1.")
    p.add_argument("--grace", type=seconds, metavar="SECONDS",
                   help="keep what is younger, claimed or heartbeated more recently than this "
                   "(default: [ccd] grace of the config, 86400)")
    p.add_argument("--retire-grace", type=seconds, metavar="SECONDS", help=retire_help)
    p.add_argument("--dry-run", action="store_true",
                   help="report what would be deleted; change nothing (Swift or database)")
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print the report only if something failed (for cron)")
    p.set_defaults(func=cmd_cleanup)

    p = sub.add_parser("replay", help="upload what a write-back journal on this host holds",
                       description="Upload and commit the closed files a write-back mount "
                       "left in its journal (<cache_dir>/journal-<fs_uuid>, from this config) "
                       "after a crash or reboot, when the filesystem is not mounted here "
                       "again; what the next mount would do. Refused while a mount on this "
                       "host holds the journal. Exit 1 if files are left (Swift unreachable).")
    p.add_argument("--stall", type=seconds, metavar="SECONDS", default=replay.DEFAULT_STALL,
                   help="give up after this long without upload progress (default "
                   f"{replay.DEFAULT_STALL:.0f}); what is left stays in the journal")
    p.set_defaults(func=cmd_replay)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logs.setup(args.log_level or "INFO")
    try:
        cfg = load(args.config, overrides=credentials.overrides(args))
        if not args.log_level:
            logs.set_level(cfg.log_level)
        return int(args.func(cfg, args))
    except SetupError as exc:
        print(f"ccd {args.command}: {exc}", file=sys.stderr)
        return 2
    except (StoreError, NamespaceError, sqlite3.Error) as exc:
        print(f"ccd {args.command}: {exc}", file=sys.stderr)
        return 1
    except CrashInjected as exc:
        print(f"ccd {args.command}: crash injected after {exc}", file=sys.stderr)
        os._exit(70)
    except KeyboardInterrupt:
        return 130


def _crash_after() -> str | None:
    point = os.environ.get(CRASH_ENV) or None
    if point is not None and point not in CRASH_POINTS:
        raise CcdError(f"{CRASH_ENV}={point!r}: must be one of {', '.join(CRASH_POINTS)}")
    return point


def run_trio(fn: Callable[[], Awaitable[T]]) -> T:
    """trio.run, with a nursery's group of one real error raised as that error."""
    try:
        return trio.run(fn)
    except BaseExceptionGroup as group:
        raise sole_error(group) from None


def _print(report: Report, *, quiet: bool = False) -> int:
    status = 1 if report.kept_errors else 0
    if not quiet or status:
        print(report.summary(), flush=True)
    return status


def _retire_grace(cfg: Config, args: argparse.Namespace) -> float:
    return cfg.retire_grace if args.retire_grace is None else args.retire_grace


def _settler(ctx: Context, cfg: Config, args: argparse.Namespace,
             crash_after: str | None) -> Settler:
    return Settler(ctx, settle_grace=cfg.settle_grace if args.settle_grace is None
                   else args.settle_grace, writers=writer_settings(cfg, spool_dir(cfg)),
                   crash_after=crash_after if crash_after in settle.CRASH_POINTS else None)


def _consolidator(ctx: Context, cfg: Config, args: argparse.Namespace,
                  crash_after: str | None) -> Consolidator:
    return Consolidator(ctx, retire_grace=_retire_grace(cfg, args), crash_after=crash_after
                        if crash_after in consolidate.CRASH_POINTS else None)


async def run_pass(settler: Settler | None, consolidator: Consolidator, *,
                   dry_run: bool = False, metrics: CcdMetrics | None = None) -> Report:
    """Settle (if `settler`), then consolidate, into one report. A settle pass that cannot
    list the files is one error in the report; consolidation runs anyway."""
    started = time.time()
    report = Report("consolidation", dry_run=dry_run)
    if settler is not None:
        try:
            await settler.run_pass(report, dry_run=dry_run)
        except (NamespaceError, sqlite3.Error) as exc:
            report.error(f"settle pass failed: {exc}")
    await consolidator.run_pass(report, dry_run=dry_run)
    record(consolidator.ctx, report, started, metrics)
    return report


def record(ctx: Context, report: Report, started: float, metrics: CcdMetrics | None) -> None:
    """Note the pass in the namespace's meta table, where `cloudfs status` shows it, and in
    the metrics (a dry run changes nothing, so it is not noted). Failing to note it fails
    nothing."""
    if report.dry_run:
        return
    ended = time.time()
    if metrics is not None:
        metrics.passed(report, started, ended)
    note = {"at": ended, "seconds": ended - started,
            "counts": report.as_dict(), "errors": report.kept_errors}
    try:
        ctx.ns.set_meta(f"ccd.{report.title}", json.dumps(note, sort_keys=True))
    except (NamespaceError, sqlite3.Error) as exc:
        log.warning("could not note the pass in the namespace: %s", exc)


@asynccontextmanager
async def exporting(cfg: Config, ctx: Context) -> AsyncIterator[CcdMetrics]:
    """The metrics of this ccd run, exported as `ccd_metrics` says (kept fresh while the run
    lasts; a textfile is written once more at its end)."""
    metrics = CcdMetrics(ctx)
    target = Target.parse(cfg.ccd_metrics, "ccd_metrics")
    if target is None:
        yield metrics
        return
    exporter = Exporter(target, metrics.families)
    exporter.start()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(exporter.refresh)
            yield metrics
            nursery.cancel_scope.cancel()
    finally:
        exporter.update()


# -- once ---------------------------------------------------------------------------------------

def cmd_once(cfg: Config, args: argparse.Namespace) -> int:
    crash_after = _crash_after()

    async def once() -> Report:
        async with open_context(cfg, progress=Progress()) as ctx, \
                exporting(cfg, ctx) as metrics:
            settler = _settler(ctx, cfg, args, crash_after)
            consolidator = _consolidator(ctx, cfg, args, crash_after)
            return await run_pass(settler, consolidator, dry_run=args.dry_run,
                                  metrics=metrics)

    return _print(run_trio(once))


# -- cleanup ------------------------------------------------------------------------------------

def cmd_cleanup(cfg: Config, args: argparse.Namespace) -> int:
    grace = cfg.grace if args.grace is None else args.grace
    if grace < MIN_SAFE_GRACE:
        log.warning("grace %.0f s is below %.0f s: a write in progress (its lease is renewed "
                    "every 60 s) or a fresh claim could be taken for garbage", grace,
                    MIN_SAFE_GRACE)

    async def cleanup() -> Report:
        async with open_context(cfg, grace=grace, progress=Progress()) as ctx, \
                exporting(cfg, ctx) as metrics:
            started = time.time()
            report = await cleanup_pass(ctx, retire_grace=_retire_grace(cfg, args),
                                        dry_run=args.dry_run)
            record(ctx, report, started, metrics)
            return report

    return _print(run_trio(cleanup), quiet=args.quiet)


# -- replay -------------------------------------------------------------------------------------

def cmd_replay(cfg: Config, args: argparse.Namespace) -> int:
    async def run_replay() -> Report:
        async with open_context(cfg) as ctx:
            return await replay.replay(ctx, cfg, stall=args.stall)

    return _print(run_trio(run_replay))


# -- run ----------------------------------------------------------------------------------------

def cmd_run(cfg: Config, args: argparse.Namespace) -> int:
    interval = cfg.interval if args.interval is None else args.interval
    crash_after = _crash_after()

    async def daemon() -> None:
        async with open_context(cfg) as ctx, exporting(cfg, ctx) as metrics:
            consolidator = _consolidator(ctx, cfg, args, crash_after)
            settler = _settler(ctx, cfg, args, crash_after)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as nursery:

                    async def stop_on_signal() -> None:
                        async for signum in signals:
                            log.info("%s: stopping", signal.Signals(signum).name)
                            notify("STOPPING=1")
                            nursery.cancel_scope.cancel()
                            return

                    nursery.start_soon(stop_on_signal)
                    notify("READY=1")
                    log.info("consolidating %s every %.0f s, settling every %.0f s",
                             ctx.layout.base, interval, max(interval, settler.settle_grace / 2))
                    await _loop(ctx, settler, consolidator, interval, metrics)

    run_trio(daemon)
    log.info("stopped")
    return 0


async def _loop(ctx: Context, settler: Settler, consolidator: Consolidator,
                interval: float, metrics: CcdMetrics) -> None:
    while True:
        try:
            report = await run_pass(settler if settler.scan_due() else None, consolidator,
                                    metrics=metrics)
        except (StoreError, NamespaceError, sqlite3.Error) as exc:
            log.warning("consolidation pass failed: %s; next try in %.0f s", exc, interval)
            notify(f"STATUS=last pass failed: {str(exc)[:200]}")
        else:
            line = "; ".join(report.summary().splitlines()[1:]).replace("  ", "")
            level = logging.INFO if report.changed or report.kept_errors else logging.DEBUG
            log.log(level, "pass: %s", line)
            notify(f"STATUS=last pass: {line[:200]}")
        await trio.sleep(interval)


if __name__ == "__main__":
    sys.exit(main())
